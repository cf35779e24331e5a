//! The balancing service.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response};
use http_body::Body;
use palisade_core::classify::LlmClassifier;
use palisade_core::{BoxError, ParsedBody, RequestBody};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::util::Oneshot;
use tower_service::Service;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::body::BalancedBody;
use crate::error::{ConfigError, NoMember, Unavailable, Why};
use crate::hedge::{Hedging, Race};
use crate::member::{Gate, Member, MemberLoad, MemberStats, Tracking, Tuning};

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
    hedge_after: Option<Duration>,
    hedge_budget: f64,
}

impl Default for BalanceBuilder {
    fn default() -> Self {
        Self {
            strategy: Strategy::LeastLoaded,
            max_wait: Duration::ZERO,
            tuning: Tuning::default(),
            affinity: None,
            hedge_after: None,
            hedge_budget: 0.1,
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

    /// Over how long a measured time to first content fades back toward
    /// [`default_ttft`](Self::default_ttft) without fresh samples, and a
    /// failure fades away (e^-t/decay; default 10 s).
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

    /// Hedging (off by default): a call whose answer has no content event
    /// after `after` — no first token of a stream, no JSON answer — gets a
    /// second attempt on another member that can take it (of those not
    /// tried yet); the first of the two to reach a content event is the
    /// answer and the other is cancelled (its call or body dropped: its
    /// connection closed; a palisade token limit in its stack refunds the
    /// output it reserved and keeps the prompt; it stops being
    /// in flight, unpenalized). Nothing reaches the caller before a winner
    /// is known, so no token is handed on twice: the winner's frames read
    /// while racing are handed on from its first. One attempt failing (a
    /// 5xx, a transport error, a stream failing before content) leaves the
    /// other to answer. At most one hedge per call, and
    /// [`hedge_budget`](Self::hedge_budget) bounds them. A hedged balance
    /// clones each call's request (for the second attempt) and boxes its
    /// attempts; one without hedging does neither.
    #[must_use]
    pub fn hedge_after(mut self, after: Duration) -> Self {
        self.hedge_after = Some(after);
        self
    }

    /// The share of calls that may be hedged (default 0.1): each call
    /// earns that much of a hedge and each hedge spends one, with at most
    /// ten saved up — so over any run, hedges are at most this share of
    /// calls.
    #[must_use]
    pub fn hedge_budget(mut self, share: f64) -> Self {
        self.hedge_budget = share;
        self
    }

    /// What judges the members' answers and errors for their failure
    /// penalty (default [`LlmClassifier::new`]): give the one their stacks'
    /// retry layer and breaker use. A failure by it, or a 429, is
    /// penalized.
    #[must_use]
    pub fn classifier(mut self, classifier: LlmClassifier) -> Self {
        self.tuning.classifier = classifier;
        self
    }

    /// The balance over `members`.
    ///
    /// # Errors
    ///
    /// No members, two with one name, a weight that is not a positive
    /// finite number, a zero `decay`, a hedge budget outside 0..=1.
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
        if !(0.0..=1.0).contains(&self.hedge_budget) {
            return Err(ConfigError(format!(
                "the hedge budget is {}; give a share of calls from 0 to 1 (0.1: at most one call in ten is hedged)",
                self.hedge_budget
            )));
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
                load: m
                    .load
                    .unwrap_or_else(|| MemberLoad::with(Arc::clone(&m.name), origin, self.tuning)),
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
                classifier: self.tuning.classifier,
                hedging: self
                    .hedge_after
                    .map(|after| Hedging::new(after, self.hedge_budget)),
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

pub(crate) struct Shared<S> {
    slots: Box<[Slot<S>]>,
    strategy: Strategy,
    max_wait: Duration,
    /// Round robin's next turn.
    turn: AtomicUsize,
    /// Where a call's session is named, when affinity is on.
    affinity: Option<HeaderName>,
    /// What judges a hedged call's failed attempt.
    pub(crate) classifier: LlmClassifier,
    pub(crate) hedging: Option<Hedging>,
}

pub(crate) struct Slot<S> {
    /// Its name's hash: the seed of its rendezvous scores.
    seed: u64,
    pub(crate) service: S,
    weight: f64,
    gates: Vec<Gate>,
    pub(crate) load: MemberLoad,
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
                    .map(|s| &s.load.0.name)
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
                    .0
                    .stats(now, self.shared.unavailable(i, now))
            })
            .collect()
    }
}

impl<S> Balance<S> {
    /// The session of a call with these `headers` and JSON `body`, when
    /// affinity is on ([`BalanceBuilder::affinity`]) and the call names
    /// one.
    pub fn session(&self, headers: &HeaderMap, body: &serde_json::Value) -> Option<String> {
        let header = self.shared.affinity.as_ref()?;
        header_session(headers, header).or_else(|| body_session(body))
    }

    /// Every member that can take a call now, in the order to try them —
    /// the one this balance would pick first (the `session`'s home when
    /// given), then the others, cheapest (least loaded), heaviest
    /// (weighted), next in turn (round robin) or next in the session's
    /// rendezvous order first — and those that cannot, with why. For code
    /// that calls the members itself and falls back among them (a gateway's
    /// tier); it reports its calls through [`MemberLoad::start`] on
    /// [`load`](Self::load). Such code hedges with
    /// [`hedge_after`](Self::hedge_after), [`called`](Self::called),
    /// [`take_hedge`](Self::take_hedge) and [`BalancedBody::poll_content`].
    pub fn order(&self, session: Option<&str>) -> Order {
        let now = Instant::now();
        let shared = &self.shared;
        let n = shared.slots.len();
        let mut unavailable = Vec::new();
        let mut open = Vec::with_capacity(n);
        for i in 0..n {
            match shared.unavailable(i, now) {
                Some(u) => unavailable.push((Arc::clone(&shared.slots[i].load.0.name), u)),
                None => open.push(i),
            }
        }
        let first = if open.is_empty() {
            None
        } else {
            shared.pick_for(session, now).ok()
        };
        match session {
            Some(s) => open.sort_by_key(|&i| {
                std::cmp::Reverse(xxh3_64_with_seed(s.as_bytes(), shared.slots[i].seed))
            }),
            None => match shared.strategy {
                Strategy::LeastLoaded => {
                    let costs: Vec<f64> =
                        (0..n).map(|i| shared.slots[i].load.0.cost(now)).collect();
                    open.sort_by(|&a, &b| costs[a].total_cmp(&costs[b]));
                }
                Strategy::Weighted => {
                    open.sort_by(|&a, &b| {
                        shared.slots[b].weight.total_cmp(&shared.slots[a].weight)
                    });
                }
                Strategy::RoundRobin => {
                    if let Some(f) = first {
                        open.sort_by_key(|&i| (i + n - f) % n);
                    }
                }
            },
        }
        if let Some(f) = first
            && let Some(at) = open.iter().position(|&i| i == f)
        {
            open.remove(at);
            open.insert(0, f);
        }
        Order {
            members: open,
            unavailable,
        }
    }

    /// How long a call waits for its first content before it is hedged,
    /// when hedging is on ([`BalanceBuilder::hedge_after`]).
    pub fn hedge_after(&self) -> Option<Duration> {
        self.shared.hedging.as_ref().map(|h| h.after)
    }

    /// A call reached the members (for code calling them itself, once per
    /// call that tries them; the service counts its own): it earns its
    /// share of a hedge ([`BalanceBuilder::hedge_budget`]).
    pub fn called(&self) {
        if let Some(h) = &self.shared.hedging {
            h.deposit();
        }
    }

    /// A hedge from the budget, for code racing members itself: `true`
    /// (and counted in [`hedges`](Self::hedges)) when the budget has one.
    pub fn take_hedge(&self) -> bool {
        self.shared.hedging.as_ref().is_some_and(Hedging::withdraw)
    }

    /// How many calls were hedged (a second attempt started), for metrics.
    pub fn hedges(&self) -> u64 {
        self.shared
            .hedging
            .as_ref()
            .map_or(0, |h| h.hedges.load(Ordering::Relaxed))
    }

    /// Member `i`'s load (its index in the members given to the builder).
    pub fn load(&self, i: usize) -> Option<&MemberLoad> {
        self.shared.slots.get(i).map(|s| &s.load)
    }

    /// How many members it has.
    pub fn len(&self) -> usize {
        self.shared.slots.len()
    }

    /// Whether it has none (never: a balance is built with one at least).
    pub fn is_empty(&self) -> bool {
        self.shared.slots.is_empty()
    }
}

/// The members to try for one call, in order, and those that cannot take
/// it; see [`Balance::order`].
#[derive(Clone, Debug)]
pub struct Order {
    /// Indices of the members that can take the call, the first choice
    /// first.
    pub members: Vec<usize>,
    /// The members that cannot, and why.
    pub unavailable: Vec<(Arc<str>, Unavailable)>,
}

impl Order {
    /// The error when no member can take the call.
    pub fn no_member(self) -> NoMember {
        NoMember::new(self.unavailable)
    }
}

impl<S> Shared<S> {
    pub(crate) fn slot(&self, i: usize) -> &Slot<S> {
        &self.slots[i]
    }

    /// Whether a member other than `i` and those `tried` can take the call
    /// now; if so the call, going to `i`, is marked so that `i`'s retry
    /// layer hands a 429 back at once instead of waiting it out
    /// ([`PassOnRateLimit`]), and unmarked otherwise.
    /// Whether a member other than `i` and those `tried` can take a call
    /// now: if so, a call to `i` is polled with
    /// [`passing_on`](palisade_core::passing_on) set, so `i`'s retry
    /// layer hands a 429 back at once instead of waiting it out.
    pub(crate) fn others(&self, i: usize, tried: u64, now: Instant) -> bool {
        let tried = with(tried, i);
        (0..self.slots.len()).any(|j| !has(tried, j) && self.available(j, now))
    }

    /// Why member `i` cannot take a call now, if it cannot.
    fn unavailable(&self, i: usize, now: Instant) -> Option<Unavailable> {
        let slot = &self.slots[i];
        if let Some(left) = slot.load.0.drained_for(now) {
            return Some(Unavailable::new(Why::Drained, Some(left)));
        }
        slot.gates.iter().find_map(|gate| gate())
    }

    fn available(&self, i: usize, now: Instant) -> bool {
        self.unavailable(i, now).is_none()
    }

    /// The member for the next call.
    fn pick(&self, now: Instant) -> Result<usize, NoMember> {
        self.pick_except(now, 0)
    }

    /// The member for a call, not one of those in `tried` (a bit per
    /// member: those that already refused this call).
    pub(crate) fn pick_except(&self, now: Instant, tried: u64) -> Result<usize, NoMember> {
        let n = self.slots.len();
        let usable = |i: usize| !has(tried, i) && self.available(i, now);
        match self.strategy {
            Strategy::LeastLoaded if n > 1 => {
                // Two distinct members at random, the cheaper one; when
                // either cannot take the call, two among those that can.
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                if usable(a) && usable(b) {
                    return Ok(self.cheaper(a, b, now));
                }
                let open: Vec<usize> = (0..n).filter(|&i| usable(i)).collect();
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
            Strategy::Weighted => {
                let total: f64 = (0..n)
                    .filter(|&i| usable(i))
                    .map(|i| self.slots[i].weight)
                    .sum();
                if total <= 0.0 {
                    return Err(self.no_member(now));
                }
                let mut left = fastrand::f64() * total;
                let mut last = None;
                for i in (0..n).filter(|&i| usable(i)) {
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
                    .find(|&i| usable(i))
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
        if self.slots[b].load.0.cost(now) < self.slots[a].load.0.cost(now) {
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
                        .map(|u| (Arc::clone(&self.slots[i].load.0.name), u))
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
    type Future = ResponseFuture<S, B>;

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
        if let Some(h) = &shared.hedging {
            h.deposit();
        }
        let step = match shared.pick_for(session.as_deref(), now) {
            Ok(i) => Step::calling(&shared, i, req, 0, now),
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
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<RequestBody>>,
        B: Body,
    {
        #[pin]
        step: Step<S, B>,
        shared: Arc<Shared<S>>,
    }
}

pin_project! {
    #[project = StepProj]
    enum Step<S, B>
    where
        S: Service<Request<RequestBody>>,
        B: Body,
    {
        Calling {
            #[pin]
            call: Oneshot<S, Request<RequestBody>>,
            tracking: Option<Tracking>,
            member: usize,
            // The members that refused this call before.
            tried: u64,
            // A copy of the request, for another member if this one
            // refuses it (a 429, its own breaker or limiter).
            spare: Option<Request<RequestBody>>,
        },
        // A hedged call.
        Racing {
            race: Race<S, B>,
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

impl<S, B> Step<S, B>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = BoxError> + Clone,
    B: Body<Data = Bytes>,
{
    fn calling(
        shared: &Shared<S>,
        i: usize,
        req: Request<RequestBody>,
        tried: u64,
        now: Instant,
    ) -> Self {
        if shared.hedging.is_some() {
            return Step::Racing {
                race: Race::new(shared, i, req),
            };
        }
        let slot = &shared.slots[i];
        let others = shared.others(i, tried, now);
        Step::Calling {
            tracking: Some(slot.load.start(&req)),
            spare: others.then(|| req.clone()),
            call: Oneshot::new(slot.service.clone(), req),
            member: i,
            tried,
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<RequestBody>>,
    B: Body,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B> Future for ResponseFuture<S, B>
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
                    tracking,
                    member,
                    tried,
                    spare,
                } => {
                    // Another member can take it: the member's retry layer
                    // hands a 429 back at once (with none, a balance
                    // outside may still have one: its setting stands).
                    let answer = ready!(if spare.is_some() {
                        palisade_core::with_passing_on(true, || call.poll(cx))
                    } else {
                        call.poll(cx)
                    });
                    let Some(tracking) = tracking.take() else {
                        return Poll::Ready(Err("balanced call polled after it ended".into()));
                    };
                    let tried = with(*tried, *member);
                    // Refused by the provider (429) or by the member's own
                    // stack: another member takes it at once — no sleep, no
                    // retry attempt spent — if one can.
                    let (out, refused) = match answer {
                        Ok(res) => {
                            let refused = res.status() == http::StatusCode::TOO_MANY_REQUESTS;
                            (Ok(tracking.answered(res)), refused)
                        }
                        Err(e) => {
                            let local = matches!(
                                palisade_core::ErrorKind::of(&*e),
                                Some(
                                    palisade_core::ErrorKind::CircuitOpen
                                        | palisade_core::ErrorKind::RateLimited
                                )
                            );
                            tracking.failed(&e);
                            (Err(e), local)
                        }
                    };
                    if refused
                        && let Some(req) = spare.take()
                        && let now = Instant::now()
                        && let Ok(next) = this.shared.pick_except(now, tried)
                    {
                        drop(out);
                        this.step
                            .set(Step::calling(this.shared, next, req, tried, now));
                        continue;
                    }
                    return Poll::Ready(out);
                }
                StepProj::Racing { race } => return race.poll(cx, this.shared),
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
                        Ok(i) => Step::calling(this.shared, i, req, 0, now),
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

/// Whether member `i` is in `tried`.
fn has(tried: u64, i: usize) -> bool {
    i < 64 && tried & (1 << i) != 0
}

/// `tried` with member `i` (members past the 64th are not remembered).
pub(crate) fn with(tried: u64, i: usize) -> u64 {
    if i < 64 { tried | (1 << i) } else { tried }
}

/// A call's session: the `header`'s value, else the body's
/// `prompt_cache_key`, `user` or `metadata.user_id` (parsed once: the body
/// parsed here is left in the request for the layers inside).
fn session_of(req: &mut Request<RequestBody>, header: &HeaderName) -> Option<String> {
    if let Some(s) = header_session(req.headers(), header) {
        return Some(s);
    }
    let parsed = ParsedBody::get_or_parse(req).ok()?;
    body_session(parsed.value())
}

fn header_session(headers: &HeaderMap, header: &HeaderName) -> Option<String> {
    headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn body_session(body: &serde_json::Value) -> Option<String> {
    ["/prompt_cache_key", "/user", "/metadata/user_id"]
        .into_iter()
        .find_map(|at| body.pointer(at).and_then(|v| v.as_str()))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}
