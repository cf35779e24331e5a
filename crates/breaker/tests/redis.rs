//! A circuit shared by a fleet through a real `redis-server` on 127.0.0.1
//! (started here on a free port; CI installs it with apt-get). Each
//! "process" is a breaker layer of its own over an upstream of its own; only
//! Redis is shared. Time is real (Redis's clock), so waits are bounded
//! polls for a condition, never sleeps standing in for one.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use palisade_breaker::{BreakerHandle, BreakerLayer, CircuitOpen, State};
use palisade_core::test_util::RedisServer;
use palisade_core::{BoxError, RequestBody, find};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};

/// One process's upstream: fails while `fail` is set; otherwise answers
/// 200 once `gate` gives it a permit.
#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicU64>,
    fail: Arc<AtomicBool>,
    gate: Arc<Semaphore>,
}

impl Upstream {
    fn new(fail: &Arc<AtomicBool>, gate: &Arc<Semaphore>) -> Self {
        Self {
            calls: Arc::new(AtomicU64::new(0)),
            fail: Arc::clone(fail),
            gate: Arc::clone(gate),
        }
    }

    fn service(&self) -> Svc {
        serve(self.clone())
    }
}

type Svc = tower::util::BoxCloneSyncService<
    Request<RequestBody>,
    Response<Empty<Bytes>>,
    std::convert::Infallible,
>;

fn serve(this: Upstream) -> Svc {
    tower::util::BoxCloneSyncService::new(serve_fn(this))
}

fn serve_fn(
    this: Upstream,
) -> impl Service<
    Request<RequestBody>,
    Response = Response<Empty<Bytes>>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<Response<Empty<Bytes>>, std::convert::Infallible>>
             + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |_req: Request<RequestBody>| {
        let this = this.clone();
        async move {
            this.calls.fetch_add(1, Ordering::SeqCst);
            let status = if this.fail.load(Ordering::SeqCst) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                this.gate.acquire().await.unwrap().forget();
                StatusCode::OK
            };
            let mut res = Response::new(Empty::new());
            *res.status_mut() = status;
            Ok(res)
        }
    })
}

fn req() -> Request<RequestBody> {
    Request::post("/v1/chat/completions")
        .body(RequestBody::from(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap()
}

/// One call, its body read to the end.
async fn call<S>(svc: S) -> Result<StatusCode, BoxError>
where
    S: Service<Request<RequestBody>, Error = BoxError>,
    S::Response: Into<
        Response<
            palisade_breaker::BreakerBody<Empty<Bytes>, palisade_core::classify::LlmClassifier>,
        >,
    >,
{
    let res: Response<_> = svc.oneshot(req()).await?.into();
    let status = res.status();
    res.into_body().collect().await?;
    Ok(status)
}

fn builder(url: &str, key: &str) -> palisade_breaker::BreakerBuilder {
    BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(1)
        .open_for(Duration::from_millis(400))
        .half_open_calls(1)
        .redis(url, key)
        .redis_poll(Duration::from_millis(20))
        .probe_lease(Duration::from_secs(1))
        .redis_timeout(Duration::from_millis(200))
}

/// Waits (at most 10 s) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not within 10 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Process {
    layer: BreakerLayer,
    upstream: Upstream,
}

impl Process {
    fn handle(&self) -> BreakerHandle {
        self.layer.handle()
    }

    fn calls(&self) -> u64 {
        self.upstream.calls.load(Ordering::SeqCst)
    }

    /// One call through this process's breaker.
    async fn call(&self) -> Result<StatusCode, BoxError> {
        call(self.layer.layer(self.upstream.service())).await
    }
}

fn fleet(url: &str, key: &str, n: usize) -> (Vec<Process>, Arc<AtomicBool>, Arc<Semaphore>) {
    let fail = Arc::new(AtomicBool::new(true));
    let gate = Arc::new(Semaphore::new(0));
    let ps = (0..n)
        .map(|_| Process {
            layer: builder(url, key).build().unwrap(),
            upstream: Upstream::new(&fail, &gate),
        })
        .collect();
    (ps, fail, gate)
}

/// Every process makes a call (its circuit reads Redis from then on);
/// then one failure trips process 0, and the fleet's circuits all open
/// from Redis. The upstream answers again afterwards (once the gate lets
/// it).
async fn trip_fleet(ps: &[Process], fail: &AtomicBool, gate: &Semaphore) {
    fail.store(false, Ordering::SeqCst);
    gate.add_permits(ps.len());
    for p in ps {
        assert_eq!(p.call().await.unwrap(), StatusCode::OK);
    }
    fail.store(true, Ordering::SeqCst);
    assert_eq!(
        ps[0].call().await.unwrap(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(ps[0].handle().state(), State::Open);
    until("every process's circuit opened", || {
        ps.iter().all(|p| p.handle().state() == State::Open)
    })
    .await;
    fail.store(false, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_in_one_opens_all_and_one_probe_goes_out_for_the_whole_fleet() {
    let redis = RedisServer::start();
    let (ps, fail, gate) = fleet(&redis.url(), "test:fleet", 3);
    // One failure trips process 0, and the others open from Redis,
    // without a call of their own.
    trip_fleet(&ps, &fail, &gate).await;
    let before: Vec<u64> = ps.iter().map(Process::calls).collect();
    let err = ps[1].call().await.unwrap_err();
    assert!(find::<CircuitOpen>(&*err).is_some(), "{err}");
    assert_eq!(ps[1].calls(), before[1], "an open circuit calls nobody");

    // The upstream is back, but answers only when the gate opens: the
    // probe is held while every process keeps trying.
    let started = Instant::now();
    let mut probes = Vec::new();
    let total = |ps: &[Process]| ps.iter().map(Process::calls).sum::<u64>();
    let base = total(&ps);
    // Try for a second past the open time (400 ms): long enough for every
    // process to have probed on its own, were probes not coordinated.
    while started.elapsed() < Duration::from_millis(1400) {
        for p in &ps {
            let svc = p.layer.layer(p.upstream.service());
            let mut svc = svc;
            let ready = ServiceExt::<Request<RequestBody>>::ready(&mut svc)
                .await
                .unwrap();
            let fut = ready.call(req());
            probes.push(tokio::spawn(async move {
                match fut.await {
                    Ok(res) => {
                        let status = res.status();
                        res.into_body().collect().await.map(|_| status)
                    }
                    Err(e) => Err(e),
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        total(&ps) - base,
        1,
        "one probe for the fleet, not one per process"
    );
    let probing: Vec<_> = ps
        .iter()
        .filter(|p| p.handle().state() == State::HalfOpen)
        .collect();
    assert_eq!(probing.len(), 1, "one process probes");

    // The probe succeeds: the prober closes, and so does everyone else.
    gate.add_permits(1000);
    until("every process's circuit closed after the probe", || {
        ps.iter().all(|p| p.handle().state() == State::Closed)
    })
    .await;
    for p in &ps {
        assert_eq!(p.call().await.unwrap(), StatusCode::OK);
    }
    for t in probes {
        let _ = t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prober_that_dies_is_replaced_after_its_lease() {
    let redis = RedisServer::start();
    let (mut ps, fail, gate) = fleet(&redis.url(), "test:lease", 2);
    trip_fleet(&ps, &fail, &gate).await;

    // Both try until one probes (held at the gate).
    let mut held = Vec::new();
    let prober = loop {
        if let Some(i) = ps
            .iter()
            .position(|p| p.handle().state() == State::HalfOpen)
        {
            break i;
        }
        for p in &ps {
            let mut svc = p.layer.layer(p.upstream.service());
            let ready = ServiceExt::<Request<RequestBody>>::ready(&mut svc)
                .await
                .unwrap();
            let fut = ready.call(req());
            held.push(tokio::spawn(async move {
                let _ = fut.await;
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The prober's process dies: its calls and its breaker are gone, and
    // nothing renews its lease.
    for t in &held {
        t.abort();
    }
    for t in held {
        let _ = t.await;
    }
    let dead = ps.remove(prober);
    drop(dead);
    let survivor = &ps[0];
    assert_eq!(
        survivor.handle().state(),
        State::Open,
        "it waits for the prober"
    );
    // Within the lease (1 s) and a few polls, the survivor probes.
    gate.add_permits(1000);
    let start = Instant::now();
    loop {
        if let Ok(StatusCode::OK) = survivor.call().await {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the survivor never probed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(survivor.handle().state(), State::Closed);
}

/// The process that got the probe lease has no call to probe with (its
/// callers went elsewhere): it gives the lease up, and a process with calls
/// probes instead — the fleet's circuit does not stay open for want of a
/// probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prober_with_no_calls_gives_the_lease_up() {
    let redis = RedisServer::start();
    let (ps, fail, gate) = fleet(&redis.url(), "test:idle", 2);
    trip_fleet(&ps, &fail, &gate).await;
    gate.add_permits(1000);
    // Once the open time is over, one of them takes the lease by itself,
    // with no call.
    until("one took the probe lease", || {
        ps.iter().any(|p| p.handle().state() == State::HalfOpen)
    })
    .await;
    let idle = ps
        .iter()
        .position(|p| p.handle().state() == State::HalfOpen)
        .unwrap();
    let busy = &ps[1 - idle];
    let idle_calls = ps[idle].calls();
    // Only the other one has calls: within half the lease (500 ms) and a
    // few polls, it probes and closes.
    let start = Instant::now();
    loop {
        if let Ok(StatusCode::OK) = busy.call().await {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the process with calls never probed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(busy.handle().state(), State::Closed);
    assert_eq!(ps[idle].calls(), idle_calls, "the idle one sent nothing");
    until("the idle one closed too", || {
        ps[idle].handle().state() == State::Closed
    })
    .await;
}

/// With two probes to send, a prober whose first probe succeeded and then
/// gets no more calls gives the lease up too: the fleet is not held open
/// waiting for its second probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prober_left_halfway_gives_the_lease_up() {
    let redis = RedisServer::start();
    let fail = Arc::new(AtomicBool::new(true));
    let gate = Arc::new(Semaphore::new(0));
    let ps: Vec<Process> = (0..2)
        .map(|_| Process {
            layer: builder(&redis.url(), "test:halfway")
                .half_open_calls(2)
                .build()
                .unwrap(),
            upstream: Upstream::new(&fail, &gate),
        })
        .collect();
    trip_fleet(&ps, &fail, &gate).await;
    gate.add_permits(1000);
    until("one took the probe lease", || {
        ps.iter().any(|p| p.handle().state() == State::HalfOpen)
    })
    .await;
    let first = ps
        .iter()
        .position(|p| p.handle().state() == State::HalfOpen)
        .unwrap();
    // One probe succeeds there; its second never comes.
    assert_eq!(ps[first].call().await.unwrap(), StatusCode::OK);
    assert_eq!(ps[first].handle().state(), State::HalfOpen);
    // The other process, with calls, gets to probe and closes.
    let other = &ps[1 - first];
    let start = Instant::now();
    while other.handle().state() != State::Closed {
        let _ = other.call().await;
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the other process never probed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    until("the first closed too", || {
        ps[first].handle().state() == State::Closed
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_delays_no_call_and_circuits_act_alone() {
    // A "Redis" that accepts connections and never answers: the slowest.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", hole.local_addr().unwrap());
    let errors = Arc::new(AtomicU64::new(0));
    let e = Arc::clone(&errors);
    let layer = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(1)
        .open_for(Duration::from_millis(200))
        .half_open_calls(1)
        .redis(&url, "test:hole")
        .redis_poll(Duration::from_millis(20))
        .redis_timeout(Duration::from_millis(30))
        .on_redis_error(move |reason| {
            assert!(!reason.is_empty());
            e.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Semaphore::new(1000));
    let up = Upstream::new(&fail, &gate);
    let p = Process {
        layer,
        upstream: up,
    };
    // Calls never wait on Redis.
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(p.call().await.unwrap(), StatusCode::OK);
    }
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "20 calls took {:?}: a call waited on Redis",
        start.elapsed()
    );
    until("Redis errors counted", || errors.load(Ordering::SeqCst) > 0).await;
    // Its own failure opens it; with no word from the fleet it probes on
    // its own after its open time and the grace.
    fail.store(true, Ordering::SeqCst);
    p.call().await.unwrap();
    assert_eq!(p.handle().state(), State::Open);
    fail.store(false, Ordering::SeqCst);
    let start = Instant::now();
    loop {
        if let Ok(StatusCode::OK) = p.call().await {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never probed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.handle().state(), State::Closed);
    drop(hole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_opens_nothing_and_trips_are_shared_again() {
    let mut redis = RedisServer::start();
    let (ps, fail, gate) = fleet(&redis.url(), "test:restart", 2);
    fail.store(false, Ordering::SeqCst);
    gate.add_permits(1000);
    for p in &ps {
        p.call().await.unwrap();
    }
    redis.restart();
    // Some polls against the empty Redis: nothing opens, calls pass.
    for _ in 0..20 {
        for p in &ps {
            assert_eq!(p.call().await.unwrap(), StatusCode::OK);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(ps.iter().all(|p| p.handle().state() == State::Closed));
    // The connection is made anew: a trip reaches the other process.
    fail.store(true, Ordering::SeqCst);
    ps[0].call().await.unwrap();
    until("the other process opened after the restart", || {
        ps[1].handle().state() == State::Open
    })
    .await;
}

#[test]
fn a_keyed_breaker_is_not_shared() {
    let err = BreakerLayer::builder()
        .redis("redis://127.0.0.1:1", "k")
        .keyed(|r: &Request<()>| r.uri().host().map(str::to_owned))
        .unwrap_err();
    assert!(err.to_string().contains("keyed"), "{err}");
}

#[test]
fn a_lease_shorter_than_two_polls_and_their_timeouts_is_refused() {
    let err = BreakerLayer::builder()
        .redis("redis://127.0.0.1:1", "k")
        .redis_poll(Duration::from_millis(200))
        .probe_lease(Duration::from_millis(300))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("probe_lease"), "{err}");
}
