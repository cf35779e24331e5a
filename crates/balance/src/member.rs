//! A member of a balance, and the load it carries.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Response};
use http_body::Body;
use palisade_breaker::BreakerHandle;
use palisade_core::classify::{ClassifyOutcome, LlmClassifier, Outcome};
use palisade_core::{BoxError, ErrorKind, RequestBody};
use palisade_providers::Api;
use palisade_providers::observe;
use tokio::time::Instant;

use crate::body::{BalancedBody, MemberWatch};
use crate::error::{Unavailable, Why};
use palisade_core::hint::provider_drain;

/// A check of the user's: `Some` while the member cannot take a call.
pub(crate) type Gate = Arc<dyn Fn() -> Option<Unavailable> + Send + Sync>;

/// One member of a [`Balance`](crate::Balance): a full stack (its own
/// breaker, limits, per-attempt timeout) and what tells whether it can take
/// a call.
///
/// ```
/// use palisade_balance::{Member, Unavailable, Why};
/// # let east = tower::service_fn(|_: http::Request<palisade_core::RequestBody>| async {
/// #     Ok::<_, palisade_core::BoxError>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
/// # });
/// let member = Member::new("east", east)
///     .weight(2.0)
///     .gate(|| None::<Unavailable>);
/// ```
pub struct Member<S> {
    pub(crate) name: Arc<str>,
    pub(crate) service: S,
    pub(crate) weight: f64,
    pub(crate) gates: Vec<Gate>,
    pub(crate) load: Option<MemberLoad>,
}

impl<S> Member<S> {
    /// A member named `name` (in errors and metrics), of weight 1.
    pub fn new(name: impl Into<Arc<str>>, service: S) -> Self {
        Self {
            name: name.into(),
            service,
            weight: 1.0,
            gates: Vec::new(),
            load: None,
        }
    }

    /// Its load is `load`, shared with whatever else tracks calls to the
    /// same deployment (another balance it is a member of, calls made
    /// outside any balance through [`MemberLoad::start`]); its tuning is
    /// then `load`'s, not the balance's. Without it, the balance keeps the
    /// member's load itself.
    #[must_use]
    pub fn load(mut self, load: MemberLoad) -> Self {
        self.load = Some(load);
        self
    }

    /// Its weight for [`Strategy::Weighted`](crate::Strategy::Weighted): a
    /// positive finite number (checked when the balance is built).
    #[must_use]
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Not picked while this breaker (its stack's) would refuse a call:
    /// open, or half-open with every probe out
    /// ([`BreakerHandle::refuses_for`]). Once its `open_for` has passed it is
    /// picked again, so its probe can close it.
    #[must_use]
    pub fn breaker(self, breaker: BreakerHandle) -> Self {
        self.gate(move || {
            breaker
                .refuses_for()
                .map(|left| Unavailable::new(Why::Open, Some(left)))
        })
    }

    /// Not picked while `gate` says `Some` (its own rate limit is reached,
    /// say, with when it has capacity again). Called on every pick, so keep
    /// it cheap: an atomic load, not a lock held long.
    #[must_use]
    pub fn gate(mut self, gate: impl Fn() -> Option<Unavailable> + Send + Sync + 'static) -> Self {
        self.gates.push(Arc::new(gate));
        self
    }
}

impl<S> fmt::Debug for Member<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.name)
            .field("weight", &self.weight)
            .field("gates", &self.gates.len())
            .finish_non_exhaustive()
    }
}

/// A member's state, for metrics ([`Balance::members`](crate::Balance::members)).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MemberStats {
    /// Its name.
    pub name: Arc<str>,
    /// Calls in flight (until their bodies end or are dropped).
    pub inflight: u64,
    /// The peak-EWMA of its time to first content event, decayed to now.
    pub ttft_ewma: Duration,
    /// Its failure penalty (recent failures, each decaying).
    pub penalty: f64,
    /// How much longer the provider's limit drains it.
    pub drained_for: Option<Duration>,
    /// Calls sent to it.
    pub picks: u64,
    /// Why it cannot take a call now, if it cannot.
    pub unavailable: Option<Unavailable>,
}

/// How the load is weighed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    /// A new member's time to first content, before any is measured.
    pub(crate) default_ttft: Duration,
    /// Over how long a measurement fades back to the default, and a
    /// failure away (e^-t/decay).
    pub(crate) decay: Duration,
    /// What one recent failure adds to a member's time to first content.
    pub(crate) penalty: Duration,
    /// What counts as a failure.
    pub(crate) classifier: LlmClassifier,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            default_ttft: Duration::from_millis(500),
            decay: Duration::from_secs(10),
            penalty: Duration::from_secs(2),
            classifier: LlmClassifier::new(),
        }
    }
}

/// One member's load — calls in flight, time to first content, recent
/// failures, the provider's drain — shared by every clone: by the balances
/// that pick it and by the calls that report to it.
///
/// A [`Balance`](crate::Balance) tracks its own calls. Code that calls the
/// member itself (a gateway trying a tier's members in
/// [`Balance::order`](crate::Balance::order)) reports each call with
/// [`start`](Self::start), then [`Tracking::answered`] or
/// [`Tracking::failed`].
#[derive(Clone)]
pub struct MemberLoad(pub(crate) Arc<Load>);

impl MemberLoad {
    /// The load of a member named `name`, with the default tuning
    /// ([`BalanceBuilder`](crate::BalanceBuilder)'s).
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self::with_classifier(name, LlmClassifier::new())
    }

    /// Like [`new`](Self::new), judging answers and errors with
    /// `classifier` — the member's stack's own (its retry layer's and
    /// breaker's), so one policy decides what is retried, what trips the
    /// breaker and what the member is penalized for: a failure by the
    /// classifier, or a 429.
    pub fn with_classifier(name: impl Into<Arc<str>>, classifier: LlmClassifier) -> Self {
        let tuning = Tuning {
            classifier,
            ..Tuning::default()
        };
        Self::with(name.into(), Instant::now(), tuning)
    }

    pub(crate) fn with(name: Arc<str>, origin: Instant, tuning: Tuning) -> Self {
        Self(Arc::new(Load::new(name, origin, tuning)))
    }

    /// Its member's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// A call to the member starts now: in flight until what
    /// [`Tracking::answered`] returns ends (or until the tracking is
    /// dropped, or failed).
    pub fn start(&self, req: &Request<RequestBody>) -> Tracking {
        let api = req
            .extensions()
            .get::<Api>()
            .copied()
            .or_else(|| Api::from_path(req.uri().path()));
        Tracking {
            guard: self.0.start(),
            started: Instant::now(),
            api,
        }
    }

    /// Drains it for `wait` from now (or longer, if already drained longer):
    /// a drain learned elsewhere — another process's answer, shared
    /// through Redis by the gateway.
    pub fn drain(&self, wait: Duration) {
        self.0.drain(Instant::now(), wait);
    }

    /// Tells `hook` each time one of its answers drains it (the provider
    /// said its limit is spent), with for how long — to share the drain
    /// with other processes. Set once: a second hook is ignored.
    pub fn on_drain(&self, hook: impl Fn(Duration) + Send + Sync + 'static) {
        let _ = self.0.on_drain.set(Arc::new(hook));
    }

    /// Its state now (`unavailable` says only whether it is drained: the
    /// gates are a balance's).
    pub fn stats(&self) -> MemberStats {
        let now = Instant::now();
        let drained = self
            .0
            .drained_for(now)
            .map(|left| Unavailable::new(Why::Drained, Some(left)));
        self.0.stats(now, drained)
    }
}

impl fmt::Debug for MemberLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MemberLoad").field(&self.0.name).finish()
    }
}

/// One call to a member, reported to its [`MemberLoad`].
#[derive(Debug)]
pub struct Tracking {
    guard: InFlight,
    started: Instant,
    api: Option<Api>,
}

impl Tracking {
    /// The member answered: what the answer says about it (the provider's
    /// limits, a failure status, the time to first content of a JSON
    /// answer) is taken now, and its body watched for the rest (a stream's
    /// first content event, in-band errors, a broken or cut stream, its
    /// end — the call is in flight until then).
    pub fn answered<B>(self, res: Response<B>) -> Response<BalancedBody<B>>
    where
        B: Body<Data = Bytes>,
    {
        let load = Arc::clone(&self.guard.0);
        let now = Instant::now();
        let status = res.status();
        if let Some(wait) = provider_drain(status, res.headers(), SystemTime::now()) {
            load.drain(now, wait);
            if let Some(hook) = load.on_drain.get() {
                hook(wait);
            }
        }
        let judged = load.tuning.classifier.classify(Outcome::Response {
            status,
            headers: res.headers(),
        });
        if judged.is_failure() || judged.reason().is_rate_limited() {
            load.penalize(now);
        }
        let stream = res
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(palisade_sse::is_event_stream);
        let ok = status.is_success();
        let api_known = self.api.is_some();
        if ok && !stream {
            load.record_ttft(now, now.saturating_duration_since(self.started));
        }
        let watch = MemberWatch {
            load,
            started: self.started,
            guard: Some(self.guard),
            timing: ok && stream,
            api_known,
            ok_stream: ok && stream,
        };
        if stream {
            observe::watch(res, self.api, watch).map(|b| BalancedBody::watched(b, api_known))
        } else {
            res.map(|body| BalancedBody::plain(body, watch))
        }
    }

    /// The call failed before an answer: a failure of the member's —
    /// unless its own stack refused it without sending it (an open
    /// breaker, a local limit), which is no failure of the deployment's.
    pub fn failed(self, error: &BoxError) {
        let local = matches!(
            ErrorKind::of(&**error),
            Some(ErrorKind::CircuitOpen | ErrorKind::RateLimited)
        );
        let judged = self
            .guard
            .0
            .tuning
            .classifier
            .classify(Outcome::Error(&**error));
        if !local && (judged.is_failure() || judged.reason().is_rate_limited()) {
            self.guard.0.penalize(Instant::now());
        }
    }
}

/// What a member carries: calls in flight, time to first content, recent
/// failures, a provider's drain.
pub(crate) struct Load {
    pub(crate) name: Arc<str>,
    inflight: AtomicU64,
    picks: AtomicU64,
    /// Nanoseconds after `origin` until which the provider drains it; 0:
    /// not drained.
    drained_until: AtomicU64,
    origin: Instant,
    timing: Mutex<Timing>,
    tuning: Tuning,
    /// Told when an answer drains the member (to share it).
    on_drain: std::sync::OnceLock<DrainHook>,
}

/// What is told when an answer drains a member: for how long.
type DrainHook = Arc<dyn Fn(Duration) + Send + Sync>;

struct Timing {
    /// Seconds, as of `ttft_at`.
    ttft: f64,
    ttft_at: Instant,
    /// A time to first content was measured (else `ttft` is the default).
    measured: bool,
    /// Failures, as of `penalty_at`.
    penalty: f64,
    penalty_at: Instant,
}

impl Load {
    pub(crate) fn new(name: Arc<str>, origin: Instant, tuning: Tuning) -> Self {
        Self {
            name,
            inflight: AtomicU64::new(0),
            picks: AtomicU64::new(0),
            drained_until: AtomicU64::new(0),
            origin,
            timing: Mutex::new(Timing {
                ttft: tuning.default_ttft.as_secs_f64(),
                ttft_at: origin,
                measured: false,
                penalty: 0.0,
                penalty_at: origin,
            }),
            tuning,
            on_drain: std::sync::OnceLock::new(),
        }
    }

    fn timing(&self) -> std::sync::MutexGuard<'_, Timing> {
        // A panic while holding it leaves numbers that are still usable.
        self.timing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn nanos_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// e^-(elapsed/decay): what is left of a value `elapsed` old.
    fn fade(&self, elapsed: Duration) -> f64 {
        (-elapsed.as_secs_f64() / self.tuning.decay.as_secs_f64()).exp()
    }

    /// How much longer the provider drains it.
    pub(crate) fn drained_for(&self, now: Instant) -> Option<Duration> {
        let until = self.drained_until.load(Ordering::Acquire);
        let at = self.nanos_at(now);
        (until > at).then(|| Duration::from_nanos(until - at))
    }

    /// Drained for `wait` from `now` (or longer, if already drained longer).
    pub(crate) fn drain(&self, now: Instant, wait: Duration) {
        let until = self
            .nanos_at(now)
            .saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
        self.drained_until.fetch_max(until, Ordering::AcqRel);
    }

    /// A call starts: in flight until the guard drops.
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.picks.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// The cost of one more call: (in flight + 1) × (time to first content
    /// + penalty × failures), both faded to `now`.
    pub(crate) fn cost(&self, now: Instant) -> f64 {
        let (ttft, penalty) = self.faded(now);
        let inflight = self.inflight.load(Ordering::Acquire) as f64;
        (inflight + 1.0) * (ttft + penalty * self.tuning.penalty.as_secs_f64())
    }

    /// A time to first content measured: a peak-EWMA (a slower sample is
    /// taken at once, a faster one blended in by how old the estimate is).
    pub(crate) fn record_ttft(&self, now: Instant, sample: Duration) {
        let sample = sample.as_secs_f64();
        let mut t = self.timing();
        // The first sample replaces the default, which measured nothing.
        if !t.measured || sample > t.ttft {
            t.ttft = sample;
            t.measured = true;
        } else {
            let keep = self.fade(now.saturating_duration_since(t.ttft_at));
            t.ttft = t.ttft * keep + sample * (1.0 - keep);
        }
        t.ttft_at = now;
    }

    /// A failure: one more on the penalty, which fades with time.
    pub(crate) fn penalize(&self, now: Instant) {
        let mut t = self.timing();
        t.penalty = t.penalty * self.fade(now.saturating_duration_since(t.penalty_at)) + 1.0;
        t.penalty_at = now;
    }

    /// The time to first content (seconds) and the penalty, faded to `now`.
    /// A measured time to first content with no fresh sample fades back
    /// toward the default, not toward zero as tower's `PeakEwma` does: an
    /// idle slow member is probed again when its estimate is no better than
    /// an unknown member's, not once it looks faster than the members just
    /// measured. A member never measured starts at the default and fades
    /// toward zero (as in tower), so it is tried before long.
    fn faded(&self, now: Instant) -> (f64, f64) {
        let t = self.timing();
        let fade = self.fade(now.saturating_duration_since(t.ttft_at));
        let prior = if t.measured {
            self.tuning.default_ttft.as_secs_f64()
        } else {
            0.0
        };
        (
            prior + (t.ttft - prior) * fade,
            t.penalty * self.fade(now.saturating_duration_since(t.penalty_at)),
        )
    }

    pub(crate) fn stats(&self, now: Instant, unavailable: Option<Unavailable>) -> MemberStats {
        let (ttft, penalty) = self.faded(now);
        MemberStats {
            name: Arc::clone(&self.name),
            inflight: self.inflight.load(Ordering::Acquire),
            ttft_ewma: Duration::try_from_secs_f64(ttft).unwrap_or_default(),
            penalty,
            drained_for: self.drained_for(now),
            picks: self.picks.load(Ordering::Relaxed),
            unavailable,
        }
    }
}

/// A call in flight on a member: counted from the pick until the guard
/// drops (the answer's body ended or was dropped, or the call failed or
/// was cancelled) — exactly once, so the count cannot drift.
pub(crate) struct InFlight(pub(crate) Arc<Load>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("InFlight").field(&self.0.name).finish()
    }
}
