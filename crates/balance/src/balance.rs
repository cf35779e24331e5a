//! The balancing service.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, Request, Response};
use http_body::Body;
use palisade_core::{BoxError, ErrorKind, ParsedBody, RequestBody};
use palisade_providers::Api;
use palisade_providers::observe;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::util::Oneshot;
use tower_service::Service;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::body::{BalancedBody, MemberWatch};
use crate::error::{ConfigError, NoMember, Unavailable, Why};
use crate::limits::provider_drain;
use crate::member::{Gate, InFlight, Load, Member, MemberStats, Tuning};

/// How a [`Balance`] picks among the members that can take a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// Power of two choices over in-flight calls × (time to first content +
    /// failure penalty). The default.
    #[default]
    LeastLoaded,
    /// At random, in proportion to [`Member::weight`].
    Weighted,
    /// Each in turn.
    RoundRobin,
}

/// Builds a [`Balance`]; see the crate docs.
#[derive(Clone, Debug)]
pub struct BalanceBuilder {
    strategy: Strategy,
    max_wait: Duration,
    tuning: Tuning,
    affinity: Option<HeaderName>,
}

impl Default for BalanceBuilder {
    fn default() -> Self {
        Self {
            strategy: Strategy::LeastLoaded,
            max_wait: Duration::ZERO,
            tuning: Tuning {
                default_ttft: Duration::from_millis(500),
                decay: Duration::from_secs(10),
                penalty: Duration::from_secs(2),
            },
            affinity: None,
        }
    }
}

impl BalanceBuilder {
    /// How members are picked (default: [`Strategy::LeastLoaded`]).
    #[must_use]
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// When no member can take a call, wait up to this long for the first
    /// to come back (when it says when); default zero: fail at once with
    /// [`NoMember`].
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// A new member's time to first content before one is measured
    /// (default 500 ms).
    #[must_use]
    pub fn default_ttft(mut self, ttft: Duration) -> Self {
        self.tuning.default_ttft = ttft;
        self
    }

    /// Over how long a measured time to first content and a failure fade
    /// (e^-t/decay; default 10 s).
    #[must_use]
    pub fn decay(mut self, decay: Duration) -> Self {
        self.tuning.decay = decay;
        self
    }

    /// What one recent failure adds to a member's time to first content
    /// when weighing it (default 2 s: a member that just failed weighs like
    /// one four times slower than the default).
    #[must_use]
    pub fn failure_penalty(mut self, penalty: Duration) -> Self {
        self.tuning.penalty = penalty;
        self
    }

    /// Session affinity (off by default): calls of one session go to one
    /// member while it can take them, to keep the provider's prompt cache
    /// warm (agents making 50–150 calls a session lose it under random
    /// balancing). The session is the `header`'s value (e.g.
    /// `x-session-id`), else the body's `prompt_cache_key` or `user`
    /// (OpenAI), else `metadata.user_id` (Anthropic); a call with none is
    /// balanced as usual. Its member is chosen by rendezvous hashing over
    /// the members' names — the same in every process, and members coming
    /// or going move only their own sessions; a home member that cannot
    /// take a call (open, drained, gated) is skipped for that call, and the
    /// session returns when it recovers. The strategy does not apply to a
    /// session's calls.
    #[must_use]
    pub fn affinity(mut self, header: HeaderName) -> Self {
        self.affinity = Some(header);
        self
    }

    /// The balance over `members`.
    ///
    /// # Errors
    ///
    /// No members, two with one name, a weight that is not a positive
    /// finite number, a zero `decay`.
    pub fn build<S>(self, members: Vec<Member<S>>) -> Result<Balance<S>, ConfigError> {
        if members.is_empty() {
            return Err(ConfigError(
                "it has no members; give it at least one".into(),
            ));
        }
        if self.tuning.decay.is_zero() {
            return Err(ConfigError(
                "`decay` is zero; give it a positive duration".into(),
            ));
        }
        let mut names = HashSet::new();
        for m in &members {
            if !names.insert(Arc::clone(&m.name)) {
                return Err(ConfigError(format!(
                    "two members are named `{}`; names must be unique (they label metrics)",
                    m.name
                )));
            }
            if !(m.weight.is_finite() && m.weight > 0.0) {
                return Err(ConfigError(format!(
                    "member `{}` has weight {}; a weight must be a positive finite number",
                    m.name, m.weight
                )));
            }
        }
        let origin = Instant::now();
        let slots = members
            .into_iter()
            .map(|m| Slot {
                seed: xxh3_64(m.name.as_bytes()),
                load: Arc::new(Load::new(Arc::clone(&m.name), origin, self.tuning)),
                service: m.service,
                weight: m.weight,
                gates: m.gates,
            })
            .collect();
        Ok(Balance {
            shared: Arc::new(Shared {
                slots,
                strategy: self.strategy,
                max_wait: self.max_wait,
                turn: AtomicUsize::new(0),
                affinity: self.affinity,
            }),
        })
    }
}

/// Many deployments or keys of one model as one service; see the crate
/// docs.
///
/// ```
/// use palisade_balance::{Balance, Member, Strategy};
/// # let (east, west) = {
/// #     let s = tower::service_fn(|_: http::Request<palisade_core::RequestBody>| async {
/// #         Ok::<_, palisade_core::BoxError>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
/// #     });
/// #     (s.clone(), s)
/// # };
/// let balance = Balance::builder()
///     .strategy(Strategy::LeastLoaded)
///     .build(vec![Member::new("east", east), Member::new("west", west)])
///     .unwrap();
/// assert_eq!(balance.members().len(), 2);
/// ```
pub struct Balance<S> {
    shared: Arc<Shared<S>>,
}

struct Shared<S> {
    slots: Box<[Slot<S>]>,
    strategy: Strategy,
    max_wait: Duration,
    /// Round robin's next turn.
    turn: AtomicUsize,
    /// Where a call's session is named, when affinity is on.
    affinity: Option<HeaderName>,
}

struct Slot<S> {
    /// Its name's hash: the seed of its rendezvous scores.
    seed: u64,
    service: S,
    weight: f64,
    gates: Vec<Gate>,
    load: Arc<Load>,
}

impl<S> Clone for Balance<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> fmt::Debug for Balance<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("strategy", &self.shared.strategy)
            .field(
                "members",
                &self
                    .shared
                    .slots
                    .iter()
                    .map(|s| &s.load.name)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Balance<()> {
    /// A builder, with the defaults.
    pub fn builder() -> BalanceBuilder {
        BalanceBuilder::default()
    }
}

impl<S> Balance<S> {
    /// A least-loaded balance over `members`, with the defaults.
    ///
    /// # Errors
    ///
    /// As [`BalanceBuilder::build`].
    pub fn new(members: Vec<Member<S>>) -> Result<Self, ConfigError> {
        BalanceBuilder::default().build(members)
    }

    /// Each member's state now, for metrics (in-flight calls, time to first
    /// content, penalty, drain, picks, why it cannot take a call).
    pub fn members(&self) -> Vec<MemberStats> {
        let now = Instant::now();
        (0..self.shared.slots.len())
            .map(|i| {
                self.shared.slots[i]
                    .load
                    .stats(now, self.shared.unavailable(i, now))
            })
            .collect()
    }
}

impl<S> Shared<S> {
    /// Why member `i` cannot take a call now, if it cannot.
    fn unavailable(&self, i: usize, now: Instant) -> Option<Unavailable> {
        let slot = &self.slots[i];
        if let Some(left) = slot.load.drained_for(now) {
            return Some(Unavailable::new(Why::Drained, Some(left)));
        }
        slot.gates.iter().find_map(|gate| gate())
    }

    fn available(&self, i: usize, now: Instant) -> bool {
        self.unavailable(i, now).is_none()
    }

    /// The member for the next call.
    fn pick(&self, now: Instant) -> Result<usize, NoMember> {
        let n = self.slots.len();
        match self.strategy {
            Strategy::LeastLoaded if n > 1 => {
                // Two distinct members at random; the cheaper one. Only
                // when both are out is every member looked at.
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                match (self.available(a, now), self.available(b, now)) {
                    (true, true) => Ok(self.cheaper(a, b, now)),
                    (true, false) => Ok(a),
                    (false, true) => Ok(b),
                    (false, false) => {
                        let open: Vec<usize> = (0..n).filter(|&i| self.available(i, now)).collect();
                        match open.len() {
                            0 => Err(self.no_member(now)),
                            1 => Ok(open[0]),
                            k => {
                                let a = fastrand::usize(..k);
                                let mut b = fastrand::usize(..k - 1);
                                if b >= a {
                                    b += 1;
                                }
                                Ok(self.cheaper(open[a], open[b], now))
                            }
                        }
                    }
                }
            }
            Strategy::Weighted => {
                let total: f64 = (0..n)
                    .filter(|&i| self.available(i, now))
                    .map(|i| self.slots[i].weight)
                    .sum();
                if total <= 0.0 {
                    return Err(self.no_member(now));
                }
                let mut left = fastrand::f64() * total;
                let mut last = None;
                for i in (0..n).filter(|&i| self.available(i, now)) {
                    left -= self.slots[i].weight;
                    last = Some(i);
                    if left < 0.0 {
                        return Ok(i);
                    }
                }
                last.ok_or_else(|| self.no_member(now))
            }
            Strategy::LeastLoaded | Strategy::RoundRobin => {
                let start = self.turn.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start.wrapping_add(k)) % n)
                    .find(|&i| self.available(i, now))
                    .ok_or_else(|| self.no_member(now))
            }
        }
    }

    /// The member of `session`: of those that can take a call, the one
    /// with the highest rendezvous score.
    fn pick_home(&self, session: &str, now: Instant) -> Result<usize, NoMember> {
        (0..self.slots.len())
            .filter(|&i| self.available(i, now))
            .max_by_key(|&i| xxh3_64_with_seed(session.as_bytes(), self.slots[i].seed))
            .ok_or_else(|| self.no_member(now))
    }

    fn pick_for(&self, session: Option<&str>, now: Instant) -> Result<usize, NoMember> {
        match session {
            Some(s) => self.pick_home(s, now),
            None => self.pick(now),
        }
    }

    fn cheaper(&self, a: usize, b: usize, now: Instant) -> usize {
        if self.slots[b].load.cost(now) < self.slots[a].load.cost(now) {
            b
        } else {
            a
        }
    }

    fn no_member(&self, now: Instant) -> NoMember {
        NoMember::new(
            (0..self.slots.len())
                .filter_map(|i| {
                    self.unavailable(i, now)
                        .map(|u| (Arc::clone(&self.slots[i].load.name), u))
                })
                .collect(),
        )
    }
}

impl<S, B> Service<Request<RequestBody>> for Balance<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = BoxError> + Clone,
    B: Body<Data = Bytes>,
{
    type Response = Response<BalancedBody<B>>;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    /// Always ready: each call awaits its own member's readiness.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<RequestBody>) -> Self::Future {
        let now = Instant::now();
        let shared = Arc::clone(&self.shared);
        let session = shared
            .affinity
            .as_ref()
            .and_then(|header| session_of(&mut req, header));
        let step = match shared.pick_for(session.as_deref(), now) {
            Ok(i) => Step::calling(&shared, i, req, now),
            Err(none) => match none.retry_after() {
                Some(wait) if !shared.max_wait.is_zero() && wait <= shared.max_wait => {
                    Step::Waiting {
                        sleep: Box::pin(tokio::time::sleep_until(now + wait)),
                        req: Some(req),
                        session,
                    }
                }
                _ => Step::Failed { error: Some(none) },
            },
        };
        ResponseFuture { step, shared }
    }
}

pin_project! {
    /// The future of a balanced call.
    pub struct ResponseFuture<S>
    where
        S: Service<Request<RequestBody>>,
    {
        #[pin]
        step: Step<S>,
        shared: Arc<Shared<S>>,
    }
}

pin_project! {
    #[project = StepProj]
    enum Step<S>
    where
        S: Service<Request<RequestBody>>,
    {
        Calling {
            #[pin]
            call: Oneshot<S, Request<RequestBody>>,
            member: usize,
            started: Instant,
            guard: Option<InFlight>,
            api: Option<Api>,
        },
        // Every member out, the first back within `max_wait`.
        Waiting {
            sleep: Pin<Box<Sleep>>,
            req: Option<Request<RequestBody>>,
            session: Option<String>,
        },
        Failed {
            error: Option<NoMember>,
        },
    }
}

impl<S> Step<S>
where
    S: Service<Request<RequestBody>> + Clone,
{
    fn calling(shared: &Shared<S>, i: usize, req: Request<RequestBody>, now: Instant) -> Self {
        let slot = &shared.slots[i];
        let api = req
            .extensions()
            .get::<Api>()
            .copied()
            .or_else(|| Api::from_path(req.uri().path()));
        Step::Calling {
            guard: Some(slot.load.start()),
            call: Oneshot::new(slot.service.clone(), req),
            member: i,
            started: now,
            api,
        }
    }
}

impl<S> fmt::Debug for ResponseFuture<S>
where
    S: Service<Request<RequestBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B> Future for ResponseFuture<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = BoxError> + Clone,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<BalancedBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.step.as_mut().project() {
                StepProj::Calling {
                    call,
                    member,
                    started,
                    guard,
                    api,
                } => {
                    let answer = ready!(call.poll(cx));
                    let load = &this.shared.slots[*member].load;
                    let now = Instant::now();
                    return Poll::Ready(match answer {
                        Ok(res) => Ok(settle(load, res, *started, now, guard.take(), *api)),
                        Err(e) => {
                            // A refusal of the member's own stack (its
                            // breaker, its limiter) sent nothing: no penalty.
                            let local = matches!(
                                ErrorKind::of(&*e),
                                Some(ErrorKind::CircuitOpen | ErrorKind::RateLimited)
                            );
                            if !local {
                                load.penalize(now);
                            }
                            Err(e)
                        }
                    });
                }
                StepProj::Waiting {
                    sleep,
                    req,
                    session,
                } => {
                    ready!(sleep.as_mut().poll(cx));
                    let Some(req) = req.take() else {
                        return Poll::Ready(Err("balanced call polled after it ended".into()));
                    };
                    let now = Instant::now();
                    let next = match this.shared.pick_for(session.as_deref(), now) {
                        Ok(i) => Step::calling(this.shared, i, req, now),
                        Err(none) => Step::Failed { error: Some(none) },
                    };
                    this.step.set(next);
                }
                StepProj::Failed { error } => {
                    return Poll::Ready(Err(match error.take() {
                        Some(e) => e.into(),
                        None => "balanced call polled after it ended".into(),
                    }));
                }
            }
        }
    }
}

/// A call's session: the `header`'s value, else the body's
/// `prompt_cache_key`, `user` or `metadata.user_id` (parsed once: the body
/// parsed here is left in the request for the layers inside).
fn session_of(req: &mut Request<RequestBody>, header: &HeaderName) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get(header)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        return Some(v.to_owned());
    }
    let parsed = ParsedBody::get_or_parse(req).ok()?;
    let body = parsed.value();
    ["/prompt_cache_key", "/user", "/metadata/user_id"]
        .into_iter()
        .find_map(|at| body.pointer(at).and_then(|v| v.as_str()))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Reads what the answer says about its member (the provider's limits, a
/// failure status, the time to first content of a JSON answer) and watches
/// its body for the rest.
fn settle<B>(
    load: &Arc<Load>,
    res: Response<B>,
    started: Instant,
    now: Instant,
    guard: Option<InFlight>,
    api: Option<Api>,
) -> Response<BalancedBody<B>>
where
    B: Body<Data = Bytes>,
{
    let status = res.status();
    if let Some(wait) = provider_drain(status, res.headers(), SystemTime::now()) {
        load.drain(now, wait);
    }
    let failed = status.as_u16() == 429 || status.is_server_error();
    if failed {
        load.penalize(now);
    }
    let stream = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(palisade_sse::is_event_stream);
    let ok = status.is_success();
    if ok && !stream {
        load.record_ttft(now, now.saturating_duration_since(started));
    }
    let watch = MemberWatch {
        load: Arc::clone(load),
        started,
        guard,
        timing: ok && stream,
        api_known: api.is_some(),
        ok_stream: ok && stream,
    };
    if stream {
        observe::watch(res, api, watch).map(BalancedBody::watched)
    } else {
        res.map(|body| BalancedBody::plain(body, watch))
    }
}
