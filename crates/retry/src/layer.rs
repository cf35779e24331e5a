//! [`RetryLayer`]: the retry policy, ready to use.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::classify::LlmClassifier;
use tower_layer::Layer;

use crate::budget::RetryBudget;
use crate::service::Retry;

/// The default number of attempts, the first call included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The default base delay of the exponential backoff.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(200);
/// The default cap on any one delay, hints included.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);

/// Retries failed LLM calls with exponential backoff and full jitter,
/// honouring the upstream's retry hints.
///
/// What is retried is decided by a classifier (default
/// [`LlmClassifier`]: transport errors, connect and first-byte timeouts, 408,
/// 429, 500, 502, 503, 504, 529; `x-should-retry` overrides). Between
/// attempts it waits:
///
/// - the upstream's hint from the **latest** attempt when there is one
///   (`retry-after-ms`, `Retry-After`, OpenAI's and Anthropic's reset headers;
///   see `palisade_core::hint`), cut to `max_delay` and jittered upward by up
///   to 10 % (never less than asked);
/// - otherwise `base_delay * 2^(retry - 1)`, capped at `max_delay`, with full
///   jitter (a uniform draw between zero and that).
///
/// A hint longer than what is left of `max_elapsed` gives up at once and
/// returns the upstream's own response (or error). A response, once returned,
/// is never retried: a stream that fails after its headers surfaces on the
/// body.
///
/// # Example
///
/// ```
/// use palisade_retry::{RetryBudget, RetryLayer};
/// use std::time::Duration;
///
/// let layer = RetryLayer::new()
///     .max_attempts(4)
///     .base_delay(Duration::from_millis(250))
///     .max_delay(Duration::from_secs(20))
///     .max_elapsed(Duration::from_secs(60))
///     .budget(RetryBudget::default());
/// # let _ = layer;
/// ```
///
/// # Clone
///
/// Cloning the layer, or the services it builds, shares one budget.
#[derive(Clone, Debug)]
pub struct RetryLayer<C = LlmClassifier> {
    pub(crate) policy: Policy<C>,
}

/// A retry about to happen, as handed to [`RetryLayer::on_retry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryEvent {
    /// The attempt that failed (1 = the first call).
    pub attempt: u32,
    /// How long the layer waits before the next attempt.
    pub delay: Duration,
    /// Why the failed attempt is retryable (`rate_limited`, `server_error`, `timeout`, …; see
    /// [`palisade_core::classify::Reason::as_str`]).
    pub reason: &'static str,
}

/// The user's retry hook.
#[derive(Clone)]
pub(crate) struct Hook(pub(crate) Arc<dyn Fn(&RetryEvent) + Send + Sync>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// Everything a retrying call needs; cloned into each call's future.
#[derive(Clone, Debug)]
pub(crate) struct Policy<C> {
    pub(crate) max_attempts: u32,
    pub(crate) base_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) max_elapsed: Option<Duration>,
    pub(crate) jitter: bool,
    pub(crate) classifier: C,
    pub(crate) budget: Option<Arc<RetryBudget>>,
    pub(crate) on_retry: Option<Hook>,
    /// Resends after a stale pooled connection, beside `max_attempts`.
    pub(crate) stale_resends: u32,
}

/// How many times a call is resent at once, without counting an attempt,
/// when it failed on a pooled connection the server had closed (see
/// [`RetryLayer::stale_resends`]).
pub const DEFAULT_STALE_RESENDS: u32 = 2;

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryLayer {
    /// A layer with the defaults: 3 attempts, 200 ms base delay, 10 s cap, no
    /// elapsed-time cap, full jitter, [`LlmClassifier`], no budget.
    pub fn new() -> Self {
        Self {
            policy: Policy {
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                base_delay: DEFAULT_BASE_DELAY,
                max_delay: DEFAULT_MAX_DELAY,
                max_elapsed: None,
                jitter: true,
                classifier: LlmClassifier::new(),
                budget: None,
                on_retry: None,
                stale_resends: DEFAULT_STALE_RESENDS,
            },
        }
    }
}

impl<C> RetryLayer<C> {
    /// How many attempts in all, the first call included (3 = one call and
    /// two retries). 0 counts as 1.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.policy.max_attempts = n.max(1);
        self
    }

    /// The first retry's delay before jitter; each later one doubles it.
    #[must_use]
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.policy.base_delay = d;
        self
    }

    /// The longest any one delay may be, upstream hints included.
    #[must_use]
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.policy.max_delay = d;
        self
    }

    /// Gives up once this much time has passed since the call started, and
    /// at once when a hint or a delay would take longer than what is left.
    #[must_use]
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.policy.max_elapsed = Some(d);
        self
    }

    /// How many times a call is resent when it failed on a pooled
    /// connection the server had closed as the request went out
    /// ([`TransportKind::StaleConnection`](palisade_core::TransportKind)):
    /// at once, without a delay, without spending the retry budget, and
    /// **without counting an attempt** — the server never saw the request,
    /// so `max_attempts = 1` still means one call the server reads. Default
    /// [`DEFAULT_STALE_RESENDS`] (2); bounded separately so a server that
    /// closes every reused connection cannot loop a call. 0 turns it off
    /// (and, with `max_attempts(1)`, spares the copy of the request kept
    /// for a resend).
    #[must_use]
    pub fn stale_resends(mut self, n: u32) -> Self {
        self.policy.stale_resends = n;
        self
    }

    /// Randomises delays (on by default). Off makes delays exact, for tests.
    #[must_use]
    pub fn jitter(mut self, on: bool) -> Self {
        self.policy.jitter = on;
        self
    }

    /// Shares a retry budget across every service this layer builds.
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.policy.budget = Some(Arc::new(budget));
        self
    }

    /// Calls `hook` before every retry (after the `tracing` event), e.g. to
    /// count retries in a metric. Keep it quick: it runs inside the call's
    /// future.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use palisade_retry::RetryLayer;
    ///
    /// let retries = Arc::new(AtomicU64::new(0));
    /// let counter = retries.clone();
    /// let layer = RetryLayer::new().on_retry(move |ev| {
    ///     counter.fetch_add(1, Ordering::Relaxed);
    ///     eprintln!("retry after attempt {} ({})", ev.attempt, ev.reason);
    /// });
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn on_retry(mut self, hook: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        self.policy.on_retry = Some(Hook(Arc::new(hook)));
        self
    }

    /// Replaces the classifier that decides what is retryable. Every call
    /// shares it (the policy is behind one `Arc`).
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayer<C2> {
        let p = self.policy;
        RetryLayer {
            policy: Policy {
                max_attempts: p.max_attempts,
                base_delay: p.base_delay,
                max_delay: p.max_delay,
                max_elapsed: p.max_elapsed,
                jitter: p.jitter,
                classifier,
                budget: p.budget,
                on_retry: p.on_retry,
                stale_resends: p.stale_resends,
            },
        }
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Retry<S, C> {
        Retry::new(inner, Arc::new(self.policy.clone()))
    }
}

impl<C> Policy<C> {
    /// The delay before retry number `retry` (1-based) with no hint.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let d = self.base_delay.saturating_mul(factor).min(self.max_delay);
        if self.jitter {
            d.mul_f64(fastrand::f64())
        } else {
            d
        }
    }

    /// The delay for an upstream hint: capped, jittered upward.
    pub(crate) fn hinted(&self, hint: Duration) -> Duration {
        let d = hint.min(self.max_delay);
        if self.jitter {
            (d + d.mul_f64(fastrand::f64() * 0.1)).min(self.max_delay.max(d))
        } else {
            d
        }
    }
}
