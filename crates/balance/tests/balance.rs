//! palisade-balance against the failure modes of the balancers people run:
//! members scripted with `tower::service_fn`, time paused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use palisade_balance::{Balance, Member, NoMember, Strategy, Why};
use palisade_breaker::BreakerLayer;
use palisade_core::{BoxError, ErrorKind, RequestBody};
use serde_json::json;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

type Body = UnsyncBoxBody<Bytes, BoxError>;

fn req() -> Request<RequestBody> {
    Request::post("/v1/chat/completions")
        .body(RequestBody::json(&json!({"model": "m", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]})))
        .unwrap()
}

const CHAT_STREAM: &str = concat!(
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
);

fn full(status: u16, content_type: &str, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(Bytes::from_static(body.as_bytes()))
                .map_err(|e: Infallible| match e {})
                .boxed_unsync(),
        )
        .unwrap()
}

/// How a scripted member answers: after `delay`, with what `answer` makes.
#[derive(Clone)]
struct Scripted {
    hits: Arc<Mutex<Vec<Instant>>>,
    delay: Duration,
    answer: fn() -> Result<Response<Body>, BoxError>,
}

impl Scripted {
    fn new(delay: Duration, answer: fn() -> Result<Response<Body>, BoxError>) -> Self {
        Self {
            hits: Arc::default(),
            delay,
            answer,
        }
    }

    fn count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<RequestBody>,
        Response = Response<Body>,
        Error = BoxError,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static {
        let this = self.clone();
        tower::service_fn(move |_req: Request<RequestBody>| {
            let this = this.clone();
            async move {
                this.hits.lock().unwrap().push(Instant::now());
                tokio::time::sleep(this.delay).await;
                (this.answer)()
            }
        })
    }
}

fn stream_ok() -> Result<Response<Body>, BoxError> {
    Ok(full(200, "text/event-stream", CHAT_STREAM))
}

fn unavailable() -> Result<Response<Body>, BoxError> {
    Ok(full(
        503,
        "application/json",
        r#"{"error":{"message":"down","type":"server_error"}}"#,
    ))
}

/// Calls once and reads the answer to its end: the status.
async fn call<S>(svc: &mut S) -> Result<StatusCode, BoxError>
where
    S: Service<Request<RequestBody>, Error = BoxError>,
    S::Response: Into<Response<palisade_balance::BalancedBody<Body>>>,
{
    let res: Response<_> = svc.ready().await?.call(req()).await?.into();
    let status = res.status();
    res.into_body().collect().await?;
    Ok(status)
}

/// A member that fails fast is the one latency-only balancers flock to
/// (its 503s look like quick answers). Here its failures give it no
/// latency sample, only penalty: it gets a trickle, not the traffic.
#[tokio::test(start_paused = true)]
async fn a_member_failing_fast_with_503_does_not_attract_traffic() {
    let healthy = Scripted::new(Duration::from_millis(200), stream_ok);
    let failing = Scripted::new(Duration::from_millis(1), unavailable);
    // An unmeasured member is taken to be faster than the healthy one: the
    // failing member is tried, and only its penalty keeps it out.
    let mut balance = Balance::builder()
        .default_ttft(Duration::from_millis(50))
        .build(vec![
            Member::new("healthy", healthy.service()),
            Member::new("failing", failing.service()),
        ])
        .unwrap();
    for _ in 0..200 {
        call(&mut balance).await.unwrap();
    }
    assert_eq!(healthy.count() + failing.count(), 200);
    assert!(
        failing.count() <= 10,
        "the failing member got {} of 200",
        failing.count()
    );
    let stats = balance.members();
    assert!(stats[1].penalty > 0.0, "{stats:?}");
    assert_eq!(stats.iter().map(|s| s.inflight).sum::<u64>(), 0);
}

/// A slow member (time to first content 3× the others') gets less of the
/// traffic when calls overlap.
#[tokio::test(start_paused = true)]
async fn a_slow_member_gets_less_of_overlapping_traffic() {
    let fast = Scripted::new(Duration::from_millis(100), stream_ok);
    let slow = Scripted::new(Duration::from_millis(300), stream_ok);
    let balance = Balance::new(vec![
        Member::new("fast", fast.service()),
        Member::new("slow", slow.service()),
    ])
    .unwrap();
    let mut calls = Vec::new();
    for _ in 0..300 {
        let mut b = balance.clone();
        calls.push(tokio::spawn(async move { call(&mut b).await }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert!(
        fast.count() > 2 * slow.count(),
        "fast {} slow {}",
        fast.count(),
        slow.count()
    );
}

fn drained_for_30s() -> Result<Response<Body>, BoxError> {
    let mut res = full(200, "application/json", r#"{"id":"c","choices":[]}"#);
    let h = res.headers_mut();
    h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
    h.insert("x-ratelimit-reset-requests", "30s".parse().unwrap());
    Ok(res)
}

/// A member whose provider says its limit is spent gets no call until the
/// reset the provider named.
#[tokio::test(start_paused = true)]
async fn a_drained_member_gets_nothing_until_its_reset() {
    let spent = Scripted::new(Duration::ZERO, drained_for_30s);
    let other = Scripted::new(Duration::from_millis(10), stream_ok);
    // Both as fast as an unmeasured member: once back, `spent` is picked.
    let mut balance = Balance::builder()
        .default_ttft(Duration::from_millis(5))
        .build(vec![
            Member::new("spent", spent.service()),
            Member::new("other", other.service()),
        ])
        .unwrap();
    for _ in 0..120 {
        call(&mut balance).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let hits = spent.hits.lock().unwrap().clone();
    assert!(hits.len() >= 2, "picked again after its reset: {hits:?}");
    for pair in hits.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_secs(30), "{hits:?}");
    }
    let stats = balance.members();
    assert_eq!(
        stats[0].unavailable.as_ref().map(|u| u.why()),
        stats[0].drained_for.map(|_| Why::Drained)
    );
}

/// With every member drained the call fails at once with the earliest
/// reset (a 429's `Retry-After` in the gateway) — or, within `max_wait`,
/// waits for it and goes through.
#[tokio::test(start_paused = true)]
async fn all_drained_fails_with_the_earliest_reset_or_waits_for_it() {
    let spent = Scripted::new(Duration::ZERO, drained_for_30s);
    let mut balance = Balance::new(vec![Member::new("spent", spent.service())]).unwrap();
    call(&mut balance).await.unwrap();
    let err = call(&mut balance).await.unwrap_err();
    assert_eq!(ErrorKind::of(&*err), Some(ErrorKind::RateLimited));
    let none = err.downcast_ref::<NoMember>().expect("NoMember");
    assert_eq!(none.retry_after(), Some(Duration::from_secs(30)));
    assert!(
        err.to_string()
            .contains("`spent`: the provider's rate limit is spent"),
        "{err}"
    );
    assert_eq!(spent.count(), 1, "a drained member is not called");

    let spent = Scripted::new(Duration::ZERO, drained_for_30s);
    let mut waiting = Balance::builder()
        .max_wait(Duration::from_secs(31))
        .build(vec![Member::new("spent", spent.service())])
        .unwrap();
    call(&mut waiting).await.unwrap();
    let before = Instant::now();
    call(&mut waiting).await.unwrap();
    assert!(Instant::now() - before >= Duration::from_secs(30));
    assert_eq!(spent.count(), 2);
}

/// An open breaker keeps its member out; once `open_for` has passed the
/// member is picked again (its probe closes the circuit).
#[tokio::test(start_paused = true)]
async fn an_open_circuit_keeps_its_member_out_until_open_for_passes() {
    let flaky = Scripted::new(Duration::ZERO, unavailable);
    let other = Scripted::new(Duration::ZERO, stream_ok);
    let breaker = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(1)
        .open_for(Duration::from_secs(5))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut balance = Balance::builder()
        .strategy(Strategy::RoundRobin)
        .build(vec![
            Member::new(
                "flaky",
                BoxCloneSyncService::new(
                    breaker
                        .layer(flaky.service())
                        .map_response(|r: Response<_>| r.map(|b| b.boxed_unsync())),
                ),
            )
            .breaker(handle.clone()),
            Member::new("other", BoxCloneSyncService::new(other.service())),
        ])
        .unwrap();
    assert_eq!(
        call(&mut balance).await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(handle.state(), palisade_breaker::State::Open);
    for _ in 0..10 {
        assert_eq!(call(&mut balance).await.unwrap(), StatusCode::OK);
    }
    assert_eq!(flaky.count(), 1, "an open member is not called");
    tokio::time::advance(Duration::from_secs(5)).await;
    for _ in 0..2 {
        call(&mut balance).await.unwrap();
    }
    assert_eq!(flaky.count(), 2, "its probe goes once open_for has passed");
}

/// Round robin takes each member in turn; weighted follows the weights.
#[tokio::test(start_paused = true)]
async fn round_robin_and_weights_share_as_configured() {
    let members: Vec<Scripted> = (0..3)
        .map(|_| Scripted::new(Duration::ZERO, stream_ok))
        .collect();
    let mut rr = Balance::builder()
        .strategy(Strategy::RoundRobin)
        .build(
            members
                .iter()
                .enumerate()
                .map(|(i, m)| Member::new(format!("m{i}"), m.service()))
                .collect(),
        )
        .unwrap();
    for _ in 0..300 {
        call(&mut rr).await.unwrap();
    }
    assert_eq!(
        members.iter().map(Scripted::count).collect::<Vec<_>>(),
        [100, 100, 100]
    );

    let (heavy, light) = (
        Scripted::new(Duration::ZERO, stream_ok),
        Scripted::new(Duration::ZERO, stream_ok),
    );
    let mut weighted = Balance::builder()
        .strategy(Strategy::Weighted)
        .build(vec![
            Member::new("heavy", heavy.service()).weight(3.0),
            Member::new("light", light.service()).weight(1.0),
        ])
        .unwrap();
    for _ in 0..4000 {
        call(&mut weighted).await.unwrap();
    }
    let share = heavy.count() as f64 / 4000.0;
    assert!((0.70..0.80).contains(&share), "heavy's share {share}");
}

#[test]
fn invalid_balances_are_named() {
    fn err<S>(members: Vec<Member<S>>) -> String {
        Balance::new(members).unwrap_err().to_string()
    }
    let s = Scripted::new(Duration::ZERO, stream_ok);
    let none: Vec<Member<()>> = Vec::new();
    assert!(err(none).contains("no members"));
    assert!(
        err(vec![
            Member::new("a", s.service()),
            Member::new("a", s.service())
        ])
        .contains("two members are named `a`")
    );
    assert!(
        err(vec![Member::new("a", s.service()).weight(-1.0)]).contains("member `a` has weight -1")
    );
    assert!(err(vec![Member::new("a", s.service()).weight(f64::NAN)]).contains("positive finite"));
}

/// What happens to one call, for the property test.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Its future dropped before the member answered.
    Cancelled,
    /// The member's stack failed.
    Failed,
    /// Answered; its body kept to be dropped later, unread.
    Held,
    /// Answered; one frame read, then dropped.
    Partly,
    /// Answered and read to its end.
    Read,
    /// Hedged, and cancelled while both attempts race.
    CancelledRacing,
    /// Hedged, and read to its end.
    Raced,
    /// Cancelled on the second member, after the first refused it (429).
    CancelledFailingOver,
    /// Cancelled while waiting (`max_wait`) for a drained member's reset.
    CancelledWaiting,
}

fn fate() -> impl proptest::strategy::Strategy<Value = Fate> {
    use proptest::prelude::*;
    prop_oneof![
        Just(Fate::Cancelled),
        Just(Fate::Failed),
        Just(Fate::Held),
        Just(Fate::Partly),
        Just(Fate::Read),
        Just(Fate::CancelledRacing),
        Just(Fate::Raced),
        Just(Fate::CancelledFailingOver),
        Just(Fate::CancelledWaiting),
    ]
}

fn framed() -> Result<Response<Body>, BoxError> {
    let frames = CHAT_STREAM
        .split_inclusive("\n\n")
        .map(|f| Ok::<_, BoxError>(Frame::data(Bytes::from(f))));
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
        .unwrap())
}

proptest::proptest! {
    /// In-flight counts cannot drift: whatever becomes of calls — cancelled,
    /// failed, bodies held, half read, read, hedged, cancelled while two
    /// attempts race, cancelled after a 429 sent it to another member or
    /// while waiting for a drained member — every member's count is the
    /// number of its answers still held, never negative, and 0 at the end.
    #[test]
    fn inflight_counts_cannot_drift(fates in proptest::collection::vec((fate(), 0usize..4), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let failing: fn() -> Result<Response<Body>, BoxError> = || Err("reset".into());
            let ok = Scripted::new(Duration::from_millis(5), framed);
            let bad = Scripted::new(Duration::from_millis(5), failing);
            let balance = Balance::new(vec![
                Member::new("ok", ok.service()),
                Member::new("ok2", ok.service()),
            ]).unwrap();
            let failing_balance = Balance::new(vec![Member::new("bad", bad.service())]).unwrap();
            let late = Streaming::new(Duration::from_millis(200));
            let hedged = Balance::builder()
                .hedge_after(Duration::from_millis(100))
                .hedge_budget(1.0)
                .build(vec![
                    Member::new("late", late.service()),
                    Member::new("late2", late.service()),
                ])
                .unwrap();
            let mut held = Vec::new();
            for (fate, drop_held) in fates {
                let mut b = balance.clone();
                match fate {
                    Fate::Cancelled => {
                        let fut = b.call(req());
                        assert!(fut.now_or_never().is_none());
                    }
                    Fate::Failed => {
                        let mut f = failing_balance.clone();
                        assert!(call(&mut f).await.is_err());
                    }
                    Fate::Held => held.push(b.call(req()).await.unwrap()),
                    Fate::Partly => {
                        let mut body = b.call(req()).await.unwrap().into_body();
                        body.frame().await.unwrap().unwrap();
                    }
                    Fate::Read => {
                        call(&mut b).await.unwrap();
                    }
                    Fate::CancelledRacing => {
                        let mut h = hedged.clone();
                        let cut = tokio::time::timeout(Duration::from_millis(150), h.call(req())).await;
                        assert!(cut.is_err(), "cancelled while racing");
                    }
                    Fate::Raced => {
                        let mut h = hedged.clone();
                        assert_eq!(read_all(h.call(req()).await.unwrap()).await.unwrap(), CHAT_STREAM);
                    }
                    Fate::CancelledFailingOver => {
                        let refusing = Scripted::new(Duration::from_millis(5), refused_for_30s);
                        let slow = Scripted::new(Duration::from_millis(50), stream_ok);
                        let mut b = Balance::builder()
                            .strategy(Strategy::RoundRobin)
                            .build(vec![
                                Member::new("refusing", refusing.service()),
                                Member::new("slow", slow.service()),
                            ])
                            .unwrap();
                        let cut = tokio::time::timeout(Duration::from_millis(20), b.call(req())).await;
                        assert!(cut.is_err(), "cancelled on the second member");
                        assert_eq!((refusing.count(), slow.count()), (1, 1));
                        assert!(b.members().iter().all(|m| m.inflight == 0), "{:?}", b.members());
                    }
                    Fate::CancelledWaiting => {
                        let spent = Scripted::new(Duration::ZERO, drained_for_30s);
                        let mut b = Balance::builder()
                            .max_wait(Duration::from_secs(60))
                            .build(vec![Member::new("spent", spent.service())])
                            .unwrap();
                        call(&mut b).await.unwrap();
                        let cut = tokio::time::timeout(Duration::from_millis(10), b.call(req())).await;
                        assert!(cut.is_err(), "cancelled while waiting");
                        assert_eq!(spent.count(), 1);
                        assert_eq!(b.members()[0].inflight, 0);
                    }
                }
                assert!(hedged.members().iter().all(|m| m.inflight == 0));
                for _ in 0..drop_held.min(held.len()) {
                    let i = fastrand::usize(..held.len());
                    drop(held.swap_remove(i));
                }
                let inflight: u64 = balance.members().iter().map(|m| m.inflight).sum();
                assert_eq!(inflight, held.len() as u64);
                assert_eq!(failing_balance.members()[0].inflight, 0);
            }
            held.clear();
            assert!(balance.members().iter().all(|m| m.inflight == 0));
        });
    }
}

fn session_req(header: Option<&str>, body: serde_json::Value) -> Request<RequestBody> {
    let mut b = Request::post("/v1/chat/completions");
    if let Some(h) = header {
        b = b.header("x-session-id", h);
    }
    b.body(RequestBody::json(&body)).unwrap()
}

/// Sessions stick to one member — named by a header, a `prompt_cache_key`,
/// a `user` or Anthropic's `metadata.user_id` — spread over the members,
/// leave a home member that cannot take calls and return when it can.
#[tokio::test(start_paused = true)]
async fn sessions_stick_leave_an_unavailable_home_and_return() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let members: Vec<Scripted> = (0..3)
        .map(|_| Scripted::new(Duration::ZERO, stream_ok))
        .collect();
    let closed: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::default()).collect();
    let mut balance = Balance::builder()
        .affinity(http::HeaderName::from_static("x-session-id"))
        .build(
            members
                .iter()
                .zip(&closed)
                .enumerate()
                .map(|(i, (m, c))| {
                    let c = Arc::clone(c);
                    Member::new(format!("m{i}"), m.service()).gate(move || {
                        c.load(Ordering::Acquire)
                            .then(|| palisade_balance::Unavailable::new(Why::Other, None))
                    })
                })
                .collect(),
        )
        .unwrap();
    let counts = |members: &[Scripted]| members.iter().map(Scripted::count).collect::<Vec<_>>();
    // Which member one call of a session went to.
    async fn home<S>(balance: &mut S, members: &[Scripted], req: Request<RequestBody>) -> usize
    where
        S: Service<Request<RequestBody>, Error = BoxError>,
        S::Response: Into<Response<palisade_balance::BalancedBody<Body>>>,
    {
        let before: Vec<usize> = members.iter().map(Scripted::count).collect();
        let res: Response<_> = balance
            .ready()
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap()
            .into();
        res.into_body().collect().await.unwrap();
        (0..members.len())
            .find(|&i| members[i].count() > before[i])
            .unwrap()
    }
    let chat = |k: &str, v: &str| json!({"model": "m", k: v, "messages": [{"role": "user", "content": "q"}]});
    let mut homes = std::collections::HashSet::new();
    for s in 0..30 {
        let id = format!("session-{s}");
        let by_header = home(
            &mut balance,
            &members,
            session_req(Some(&id), chat("x", "y")),
        )
        .await;
        for _ in 0..5 {
            assert_eq!(
                home(
                    &mut balance,
                    &members,
                    session_req(Some(&id), chat("x", "y"))
                )
                .await,
                by_header
            );
        }
        homes.insert(by_header);
        // The same key in the body lands the same way, whichever field
        // names it.
        let cached = home(
            &mut balance,
            &members,
            session_req(None, chat("prompt_cache_key", &id)),
        )
        .await;
        assert_eq!(
            home(&mut balance, &members, session_req(None, chat("user", &id))).await,
            cached
        );
        let anthropic = json!({"model": "m", "max_tokens": 5, "metadata": {"user_id": id},
                               "messages": [{"role": "user", "content": "q"}]});
        assert_eq!(
            home(&mut balance, &members, session_req(None, anthropic)).await,
            cached
        );
    }
    assert_eq!(
        homes.len(),
        3,
        "30 sessions spread over the members: {:?}",
        counts(&members)
    );
    // Session 0's home closes: its calls go elsewhere, then come back.
    let id = "session-0";
    let at_home = home(
        &mut balance,
        &members,
        session_req(Some(id), chat("x", "y")),
    )
    .await;
    closed[at_home].store(true, Ordering::Release);
    let away = home(
        &mut balance,
        &members,
        session_req(Some(id), chat("x", "y")),
    )
    .await;
    assert_ne!(away, at_home);
    for _ in 0..5 {
        assert_eq!(
            home(
                &mut balance,
                &members,
                session_req(Some(id), chat("x", "y"))
            )
            .await,
            away
        );
    }
    closed[at_home].store(false, Ordering::Release);
    assert_eq!(
        home(
            &mut balance,
            &members,
            session_req(Some(id), chat("x", "y"))
        )
        .await,
        at_home
    );
}

/// For code that calls the members itself: `order` lists who can take a
/// call (the pick first) and who cannot; calls reported through a shared
/// `MemberLoad` drain it and count in flight for every balance using it.
#[tokio::test(start_paused = true)]
async fn order_lists_the_pick_first_and_the_unavailable_apart() {
    use palisade_balance::MemberLoad;
    let loads: Vec<MemberLoad> = (0..3).map(|i| MemberLoad::new(format!("m{i}"))).collect();
    let balance = Balance::builder()
        .strategy(Strategy::RoundRobin)
        .build(
            loads
                .iter()
                .map(|l| Member::new(l.name().to_owned(), ()).load(l.clone()))
                .collect(),
        )
        .unwrap();
    let first = balance.order(None);
    assert_eq!(first.members.len(), 3);
    let second = balance.order(None);
    assert_eq!(
        second.members[0],
        (first.members[0] + 1) % 3,
        "round robin turns"
    );
    assert_eq!(
        second.members,
        [
            second.members[0],
            (second.members[0] + 1) % 3,
            (second.members[0] + 2) % 3
        ]
    );
    // A call to m1, reported: in flight until its body ends; its answer
    // says its limit is spent.
    let tracking = loads[1].start(&req());
    assert_eq!(balance.members()[1].inflight, 1);
    let answer = tracking.answered(drained_for_30s().unwrap());
    let order = balance.order(None);
    assert!(!order.members.contains(&1));
    assert_eq!(&*order.unavailable[0].0, "m1");
    assert_eq!(order.unavailable[0].1.why(), Why::Drained);
    answer.into_body().collect().await.unwrap();
    assert_eq!(balance.members()[1].inflight, 0);
    // A failed call is a failure of the member's; a local refusal is not.
    loads[2]
        .start(&req())
        .failed(&BoxError::from("connection reset"));
    assert!(balance.members()[2].penalty > 0.0);
    loads[0]
        .start(&req())
        .failed(&BoxError::from(palisade_core::CircuitOpen::new(
            Duration::from_secs(1),
        )));
    assert_eq!(balance.members()[0].penalty, 0.0);
}

/// A 429 asking to wait `secs`.
fn refused_for(secs: &'static str) -> Result<Response<Body>, BoxError> {
    let mut res = full(
        429,
        "application/json",
        r#"{"error":{"type":"rate_limit_error"}}"#,
    );
    res.headers_mut()
        .insert("retry-after", http::HeaderValue::from_static(secs));
    Ok(res)
}

fn refused_for_30s() -> Result<Response<Body>, BoxError> {
    refused_for("30")
}

/// A member's 429 goes to another member at once — no sleep, no retry
/// attempt spent — so callers see no 429 while any member has headroom;
/// with none left, the last refusal is the answer.
#[tokio::test(start_paused = true)]
async fn a_429_is_taken_by_another_member_at_once() {
    let refusing = Scripted::new(Duration::ZERO, refused_for_30s);
    let ok = Scripted::new(Duration::ZERO, stream_ok);
    let mut balance = Balance::new(vec![
        Member::new("refusing", refusing.service()),
        Member::new("ok", ok.service()),
    ])
    .unwrap();
    let before = Instant::now();
    for _ in 0..20 {
        assert_eq!(call(&mut balance).await.unwrap(), StatusCode::OK);
    }
    assert_eq!(Instant::now(), before, "no sleep");
    assert!(
        refusing.count() <= 1,
        "drained after its first 429: {}",
        refusing.count()
    );
    assert_eq!(ok.count(), 20);

    let (a, b) = (
        Scripted::new(Duration::ZERO, refused_for_30s),
        Scripted::new(Duration::ZERO, refused_for_30s),
    );
    let mut both = Balance::new(vec![
        Member::new("a", a.service()),
        Member::new("b", b.service()),
    ])
    .unwrap();
    assert_eq!(
        call(&mut both).await.unwrap(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(a.count() + b.count(), 2, "each tried once");
}

fn refused_for_2s() -> Result<Response<Body>, BoxError> {
    refused_for("2")
}

/// A member whose own stack retries (a retry layer that would wait out a
/// 429's hint) hands its 429 back at once while another member can take
/// the call, which then does; the last member left retries as usual.
#[tokio::test(start_paused = true)]
async fn a_members_own_retry_layer_does_not_sleep_on_a_429_another_member_can_take() {
    let refusing = Scripted::new(Duration::ZERO, refused_for_2s);
    let ok = Scripted::new(Duration::ZERO, stream_ok);
    let retrying = palisade_retry::RetryLayer::new().jitter(false);
    let mut balance = Balance::builder()
        .strategy(Strategy::RoundRobin)
        .build(vec![
            Member::new("refusing", retrying.layer(refusing.service())),
            Member::new("ok", retrying.layer(ok.service())),
        ])
        .unwrap();
    let before = Instant::now();
    assert_eq!(call(&mut balance).await.unwrap(), StatusCode::OK);
    assert_eq!(Instant::now(), before, "no sleep");
    assert_eq!((refusing.count(), ok.count()), (1, 1));

    // Alone, a member's retry layer waits out the hint and asks again.
    let mut alone = Balance::new(vec![Member::new(
        "refusing",
        retrying.layer(refusing.service()),
    )])
    .unwrap();
    let before = Instant::now();
    assert_eq!(
        call(&mut alone).await.unwrap(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(Instant::now() - before, Duration::from_secs(4));
    assert_eq!(refusing.count(), 4, "three attempts");
}

/// A streaming member: its headers and role-only first chunk at once, its
/// first content `content_after` later (or a broken stream then, when
/// `breaks`); counts its calls and the bodies dropped before their end.
#[derive(Clone)]
struct Streaming {
    calls: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
    content_after: Duration,
    breaks: bool,
}

/// Counts a body dropped before its end.
struct Cut(Arc<AtomicUsize>, bool);

impl Cut {
    fn ended(&mut self) {
        self.1 = true;
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, AtomicOrdering::SeqCst);
        }
    }
}

impl Streaming {
    fn new(content_after: Duration) -> Self {
        Self {
            calls: Arc::default(),
            cut: Arc::default(),
            content_after,
            breaks: false,
        }
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<RequestBody>,
        Response = Response<Body>,
        Error = BoxError,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static {
        let this = self.clone();
        tower::service_fn(move |_req: Request<RequestBody>| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, AtomicOrdering::SeqCst);
                let frames: Vec<&'static str> = CHAT_STREAM.split_inclusive("\n\n").collect();
                let guard = Cut(Arc::clone(&this.cut), false);
                let body = futures_util::stream::unfold(
                    (0usize, guard, this.clone()),
                    move |(i, mut guard, this)| {
                        let frames = frames.clone();
                        async move {
                            if i == frames.len() {
                                guard.ended();
                                return None;
                            }
                            if i == 1 {
                                tokio::time::sleep(this.content_after).await;
                                if this.breaks {
                                    guard.ended();
                                    return Some((
                                        Err::<Frame<Bytes>, BoxError>("connection reset".into()),
                                        (frames.len(), guard, this),
                                    ));
                                }
                            }
                            Some((
                                Ok(Frame::data(Bytes::from(frames[i]))),
                                (i + 1, guard, this),
                            ))
                        }
                    },
                );
                Ok::<_, BoxError>(
                    Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(StreamBody::new(body).boxed_unsync())
                        .unwrap(),
                )
            }
        })
    }
}

async fn read_all(res: Response<palisade_balance::BalancedBody<Body>>) -> Result<String, BoxError> {
    let bytes = res.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(bytes.to_vec()).unwrap())
}

/// The first attempt's first token is late: a second attempt on another
/// member wins, its stream reaches the caller whole and once, and the loser
/// is cancelled — its body dropped, no longer in flight, unpenalized.
#[tokio::test(start_paused = true)]
async fn a_late_first_token_is_hedged_the_loser_cancelled_nothing_duplicated() {
    let slow = Streaming::new(Duration::from_secs(5));
    let fast = Streaming::new(Duration::from_millis(50));
    let mut balance = Balance::builder()
        .strategy(Strategy::RoundRobin)
        .hedge_after(Duration::from_millis(300))
        .hedge_budget(1.0)
        .build(vec![
            Member::new("slow", slow.service()),
            Member::new("fast", fast.service()),
        ])
        .unwrap();
    let t0 = Instant::now();
    let res = balance.ready().await.unwrap().call(req()).await.unwrap();
    // The winner is known at its first content: 300 ms + 50 ms, not 5 s.
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(read_all(res).await.unwrap(), CHAT_STREAM);
    assert_eq!(balance.hedges(), 1);
    assert_eq!(slow.calls.load(AtomicOrdering::SeqCst), 1);
    assert_eq!(fast.calls.load(AtomicOrdering::SeqCst), 1);
    assert_eq!(
        slow.cut.load(AtomicOrdering::SeqCst),
        1,
        "the loser's body is dropped"
    );
    assert_eq!(fast.cut.load(AtomicOrdering::SeqCst), 0);
    let stats = balance.members();
    assert!(stats.iter().all(|m| m.inflight == 0), "{stats:?}");
    assert_eq!(stats[0].penalty, 0.0, "a cancelled loser is not penalized");
}

/// A first token in time is not hedged; slow calls are hedged no more than
/// the budget allows (a tenth of calls by default).
#[tokio::test(start_paused = true)]
async fn hedges_only_late_calls_and_no_more_than_the_budget() {
    let quick = Streaming::new(Duration::from_millis(50));
    let mut balance = Balance::builder()
        .hedge_after(Duration::from_millis(300))
        .hedge_budget(1.0)
        .build(vec![
            Member::new("a", quick.service()),
            Member::new("b", quick.service()),
        ])
        .unwrap();
    for _ in 0..20 {
        let res = balance.ready().await.unwrap().call(req()).await.unwrap();
        assert_eq!(read_all(res).await.unwrap(), CHAT_STREAM);
    }
    assert_eq!(balance.hedges(), 0);
    assert_eq!(quick.calls.load(AtomicOrdering::SeqCst), 20);

    let slow = Streaming::new(Duration::from_secs(1));
    let mut balance = Balance::builder()
        .hedge_after(Duration::from_millis(100))
        .build(vec![
            Member::new("a", slow.service()),
            Member::new("b", slow.service()),
        ])
        .unwrap();
    for _ in 0..100 {
        let res = balance.ready().await.unwrap().call(req()).await.unwrap();
        assert_eq!(read_all(res).await.unwrap(), CHAT_STREAM);
    }
    assert_eq!(balance.hedges(), 10, "a tenth of 100 calls");
    assert_eq!(slow.calls.load(AtomicOrdering::SeqCst), 110);
    assert_eq!(
        slow.cut.load(AtomicOrdering::SeqCst),
        10,
        "each hedge's loser dropped"
    );
    assert!(balance.members().iter().all(|m| m.inflight == 0));
}

/// An attempt whose stream breaks before its first token leaves the race to
/// its rival; the caller sees only the rival's stream.
#[tokio::test(start_paused = true)]
async fn an_attempt_failing_before_content_leaves_the_rival_to_answer() {
    let mut broken = Streaming::new(Duration::from_millis(500));
    broken.breaks = true;
    let slower = Streaming::new(Duration::from_secs(1));
    let mut balance = Balance::builder()
        .strategy(Strategy::RoundRobin)
        .hedge_after(Duration::from_millis(100))
        .hedge_budget(1.0)
        .build(vec![
            Member::new("broken", broken.service()),
            Member::new("slower", slower.service()),
        ])
        .unwrap();
    let res = balance.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(read_all(res).await.unwrap(), CHAT_STREAM);
    assert_eq!(balance.hedges(), 1);
    let stats = balance.members();
    assert!(
        stats[0].penalty > 0.0,
        "the broken stream is the member's failure"
    );
    assert!(stats.iter().all(|m| m.inflight == 0), "{stats:?}");

    // Without a rival (no budget left for a hedge), the broken stream is the
    // answer: its frames so far, then its error.
    let mut lone = Balance::builder()
        .hedge_after(Duration::from_millis(100))
        .hedge_budget(0.0)
        .build(vec![Member::new("broken", broken.service())])
        .unwrap();
    let res = lone.ready().await.unwrap().call(req()).await.unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"data: {\"id\":\"c\""));
    assert!(body.frame().await.unwrap().is_err());
}
