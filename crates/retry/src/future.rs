//! [`ResponseFuture`]: attempt, classify, wait, re-ready, attempt again.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use palisade_core::classify::{Classification, ClassifyOutcome, Outcome, Reason};
use palisade_core::hint::RetryHint;
use palisade_core::{BoxError, TransportKind, UpstreamStatus, find};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::error::BudgetExhausted;
use crate::layer::Policy;
use crate::service::clone_request;

pin_project! {
    /// The future of [`Retry`](crate::Retry)'s `call`.
    ///
    /// Dropping it at any point — mid-attempt or mid-backoff — cancels
    /// everything: it owns its timer and its in-flight call; nothing is
    /// spawned.
    pub struct ResponseFuture<S, B, C>
    where
        S: Service<Request<B>>,
    {
        // What a retry needs, boxed: the future of every call (moved by
        // every layer outside) is smaller by a service and a request for it.
        // `None` when the policy allows one attempt only.
        replay: Option<Box<Replay<S, B>>>,
        policy: Arc<Policy<C>>,
        // The policy's `max_attempts`, or fewer when the request asked so
        // (`MaxAttempts`).
        max_attempts: u32,
        // A rate-limited answer is handed back at once
        // (`palisade_core::PassOnRateLimit`).
        pass_on_rate_limit: bool,
        attempts: u32,
        // Resends after a stale pooled connection (not attempts).
        resends: u32,
        started: Option<Instant>,
        #[pin]
        state: State<S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] fut: F },
        Sleeping { sleep: Pin<Box<Sleep>> },
        // `resend`: the next call resends after a stale connection and is
        // not an attempt.
        Readying { resend: bool },
    }
}

/// In a response's extensions when it took more than one attempt: how many
/// (the first call included; resends after a stale pooled connection are not
/// attempts). Absent means one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempts(pub u32);

/// In a request's extensions: this call may make at most this many attempts
/// (the first included; at least 1), fewer than the layer's `max_attempts`
/// when a caller has spent some already — e.g. a proxy asking again for an
/// answer whose body broke off, within one budget of attempts. More than
/// the layer's `max_attempts` is cut to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxAttempts(pub u32);

/// The service for the next attempts and the request they resend.
pub(crate) struct Replay<S, B> {
    pub(crate) svc: S,
    pub(crate) template: Option<Request<B>>,
}

impl<S, B, C> fmt::Debug for ResponseFuture<S, B, C>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(
        replay: Option<Box<Replay<S, B>>>,
        policy: Arc<Policy<C>>,
        started: Option<Instant>,
        fut: S::Future,
        max_attempts: u32,
        pass_on_rate_limit: bool,
    ) -> Self {
        Self {
            replay,
            policy,
            max_attempts,
            pass_on_rate_limit,
            attempts: 1,
            resends: 0,
            started,
            state: State::Called { fut },
        }
    }
}

const NOTHING_TO_RETRY: &str =
    "palisade-retry: no request left to retry (the future was polled after it completed)";

/// Why a retryable outcome is not retried.
enum GiveUp {
    Attempts,
    Hint(Duration),
    Elapsed,
    Budget,
}

impl<S, B, RB, C> Future for ResponseFuture<S, B, C>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Clone,
    C: ClassifyOutcome,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut out = ready!(self.as_mut().poll_attempts(cx));
        let attempts = *self.as_mut().project().attempts;
        // Only an answer that took more than one attempt says so: no
        // extension is allocated on the common path.
        if let (Ok(res), true) = (&mut out, attempts > 1) {
            res.extensions_mut().insert(Attempts(attempts));
        }
        Poll::Ready(out)
    }
}

impl<S, B, RB, C> ResponseFuture<S, B, C>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Clone,
    C: ClassifyOutcome,
{
    fn poll_attempts(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<RB>, BoxError>> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { fut } => {
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    let class = match &result {
                        Ok(res) => this.policy.classifier.classify(Outcome::response(res)),
                        Err(e) => this.policy.classifier.classify(Outcome::Error(&**e)),
                    };
                    if !class.is_retryable() {
                        return Poll::Ready(result);
                    }
                    if (*this.pass_on_rate_limit || palisade_core::passing_on())
                        && class.reason().is_rate_limited()
                    {
                        tracing::debug!(
                            attempt = *this.attempts,
                            "not retrying: rate limited, and the caller has another member to send it to"
                        );
                        return Poll::Ready(result);
                    }
                    if class.reason() == Reason::Transport(TransportKind::StaleConnection)
                        && *this.resends < this.policy.stale_resends
                        && this.replay.as_ref().is_some_and(|r| r.template.is_some())
                    {
                        *this.resends += 1;
                        tracing::debug!(
                            attempt = *this.attempts,
                            resend = *this.resends,
                            "resending: the pooled connection was closed by the server before it read the request (not an attempt)"
                        );
                        drop(result);
                        this.state.set(State::Readying { resend: true });
                        continue;
                    }
                    let delay = match decide(
                        this.policy,
                        *this.max_attempts,
                        *this.attempts,
                        *this.started,
                        &result,
                    ) {
                        Ok(d) => d,
                        Err(why) => {
                            log_give_up(&why, *this.attempts, class);
                            return Poll::Ready(match (why, result) {
                                (GiveUp::Budget, Err(e)) => {
                                    Err(BudgetExhausted::new(*this.attempts, e).into())
                                }
                                (_, r) => r,
                            });
                        }
                    };
                    if this.replay.as_ref().is_none_or(|r| r.template.is_none()) {
                        return Poll::Ready(result);
                    }
                    tracing::info!(
                        attempt = *this.attempts,
                        next_attempt = *this.attempts + 1,
                        delay_ms = delay.as_millis() as u64,
                        reason = class.reason().as_str(),
                        "retrying"
                    );
                    if let Some(hook) = &this.policy.on_retry {
                        (hook.0)(&crate::layer::RetryEvent {
                            attempt: *this.attempts,
                            delay,
                            reason: class.reason().as_str(),
                        });
                    }
                    // Release the failed response (and its connection) now.
                    drop(result);
                    if delay.is_zero() {
                        this.state.set(State::Readying { resend: false });
                    } else {
                        this.state.set(State::Sleeping {
                            sleep: Box::pin(tokio::time::sleep(delay)),
                        });
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Readying { resend: false });
                }
                StateProj::Readying { resend } => {
                    let resend = *resend;
                    let Some(Replay { svc, template }) = this.replay.as_deref_mut() else {
                        return Poll::Ready(Err(NOTHING_TO_RETRY.into()));
                    };
                    if let Err(e) = ready!(svc.poll_ready(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    if !resend {
                        *this.attempts += 1;
                    }
                    // The last call keeps no copy, unless a stale
                    // connection could still ask for a resend.
                    let last = *this.attempts >= *this.max_attempts
                        && *this.resends >= this.policy.stale_resends;
                    let req = if last {
                        template.take()
                    } else {
                        template.as_ref().map(clone_request)
                    };
                    let Some(req) = req else {
                        return Poll::Ready(Err(NOTHING_TO_RETRY.into()));
                    };
                    let fut = svc.call(req);
                    this.state.set(State::Called { fut });
                }
            }
        }
    }
}

/// How long to wait before the next attempt, or why not to make one.
fn decide<C, RB>(
    policy: &Policy<C>,
    max_attempts: u32,
    attempts: u32,
    started: Option<Instant>,
    result: &Result<Response<RB>, BoxError>,
) -> Result<Duration, GiveUp> {
    if attempts >= max_attempts {
        return Err(GiveUp::Attempts);
    }
    let hint = match result {
        Ok(res) => RetryHint::from_headers(res.headers()).map(|h| h.delay()),
        Err(e) => find::<UpstreamStatus>(&**e).and_then(UpstreamStatus::retry_after),
    };
    let remaining = match (policy.max_elapsed, started) {
        (Some(max), Some(t0)) => Some(max.saturating_sub(t0.elapsed())),
        _ => None,
    };
    if let (Some(h), Some(left)) = (hint, remaining)
        && h > left
    {
        return Err(GiveUp::Hint(h));
    }
    let delay = match hint {
        Some(h) => policy.hinted(h),
        None => policy.backoff(attempts),
    };
    if remaining.is_some_and(|left| delay >= left) {
        return Err(GiveUp::Elapsed);
    }
    if let Some(b) = &policy.budget
        && !b.withdraw()
    {
        return Err(GiveUp::Budget);
    }
    Ok(delay)
}

fn log_give_up(why: &GiveUp, attempts: u32, class: Classification) {
    let reason = class.reason().as_str();
    match why {
        GiveUp::Attempts => {
            tracing::info!(attempts, reason, "not retrying: all attempts used");
        }
        GiveUp::Hint(h) => tracing::info!(
            attempts,
            reason,
            hint_ms = h.as_millis() as u64,
            "not retrying: the upstream asks to wait longer than the time left"
        ),
        GiveUp::Elapsed => {
            tracing::info!(attempts, reason, "not retrying: the time budget is spent");
        }
        GiveUp::Budget => {
            tracing::warn!(attempts, reason, "not retrying: the retry budget is spent");
        }
    }
}
