//! Closed-state per-call overhead of the breaker around an always-ready
//! service, next to the bare service and tower-resilience's circuit breaker
//! in the same run; single thread and two threads contending; and a circuit
//! shared through a loopback `redis-server` (which must be on the `PATH`).
//!
//! `cargo bench -p palisade-breaker`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{Empty, Full};
use palisade_breaker::{BreakerLayer, Window};
use palisade_core::test_util::{call_now, time_contended};
use tower::{Layer, Service};

type Body = Empty<Bytes>;

/// A service answering at once.
fn always_ready() -> impl Service<
    Request<()>,
    Response = Response<Body>,
    Error = Infallible,
    Future = Ready<Result<Response<Body>, Infallible>>,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|_: Request<()>| ready(Ok(Response::new(Empty::new()))))
}

/// A service answering at once with a small JSON body.
type JsonReply = Ready<Result<Response<Full<Bytes>>, Infallible>>;

fn always_ready_json()
-> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible, Future = JsonReply>
+ Clone
+ Send
+ 'static {
    tower::service_fn(|_: Request<()>| {
        ready(Ok(Response::new(Full::new(Bytes::from_static(
            br#"{"id":"x","choices":[]}"#,
        )))))
    })
}

/// One call and its body read to the end (where the breaker records a
/// success when the body is not known to be empty at once).
fn one_call_with_body<S, B>(svc: &mut S)
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let res = call_now(svc, Request::new(())).unwrap();
    let mut body = res.into_body();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    while let std::task::Poll::Ready(Some(frame)) =
        std::pin::Pin::new(&mut body).poll_frame(&mut cx)
    {
        black_box(frame.unwrap());
    }
}

fn one_call<S>(svc: &mut S)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    black_box(call_now(svc, Request::new(())).unwrap());
}

fn ours() -> BreakerLayer {
    BreakerLayer::builder().build().unwrap()
}

fn ours_time() -> BreakerLayer {
    BreakerLayer::builder()
        .window(Window::Time(Duration::from_secs(10)))
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    let mut g = c.benchmark_group("breaker_closed_per_call");
    let mut bare = always_ready();
    g.bench_function("bare", |b| b.iter(|| one_call(&mut bare)));
    let mut count = ours().layer(always_ready());
    g.bench_function("palisade_count_window", |b| b.iter(|| one_call(&mut count)));
    let mut time = ours_time().layer(always_ready());
    g.bench_function("palisade_time_window", |b| b.iter(|| one_call(&mut time)));
    // Shared with a fleet through a real loopback Redis: its task reads
    // the fleet's state every 250 ms on another thread; the call path
    // reads only the local circuit.
    let redis = palisade_core::test_util::RedisServer::start();
    let fleet_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut shared = {
        let _in_fleet_rt = fleet_rt.enter();
        let mut svc = BreakerLayer::builder()
            .redis(&redis.url(), "bench:breaker")
            .build()
            .unwrap()
            .layer(always_ready());
        // The first call starts the background task on the fleet runtime.
        one_call(&mut svc);
        svc
    };
    g.bench_function("palisade_count_window_shared_redis", |b| {
        b.iter(|| one_call(&mut shared))
    });
    let mut theirs = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(20)
        .build()
        .unwrap()
        .layer(always_ready());
    g.bench_function("tower_resilience", |b| b.iter(|| one_call(&mut theirs)));

    // A body that is not known to be empty: the outcome is recorded when it
    // ends, so the breaker wraps it; the bench reads it to the end.
    let mut bare_json = always_ready_json();
    g.bench_function("bare_json_body", |b| {
        b.iter(|| one_call_with_body(&mut bare_json))
    });
    let mut count_json = ours().layer(always_ready_json());
    g.bench_function("palisade_count_window_json_body", |b| {
        b.iter(|| one_call_with_body(&mut count_json))
    });

    // Two threads sharing one circuit: time per call on this thread while
    // another hammers the same breaker.
    g.bench_function("palisade_count_window_2_threads", |b| {
        b.iter_custom(|iters| {
            let layer = ours();
            let (mut mine, mut other) = (layer.layer(always_ready()), layer.layer(always_ready()));
            time_contended(iters, || one_call(&mut mine), move || one_call(&mut other))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
