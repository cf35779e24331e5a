//! Closed-state per-call overhead of the breaker around an always-ready
//! service, next to the bare service and tower-resilience's circuit breaker
//! in the same run; single thread and two threads contending.
//!
//! `cargo bench -p palisade-breaker`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Empty;
use palisade_breaker::{BreakerLayer, Window};
use tower::{Layer, Service};

#[derive(Clone, Copy)]
struct AlwaysReady;

impl Service<Request<()>> for AlwaysReady {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Empty<Bytes>>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<()>) -> Self::Future {
        ready(Ok(Response::new(Empty::new())))
    }
}

/// One call; the futures here are ready at their first poll (or soon after
/// for an uncontended async lock), polled with a no-op waker.
fn one_call<S>(svc: &mut S)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    while svc.poll_ready(&mut cx).is_pending() {}
    let mut fut = pin!(svc.call(Request::new(())));
    loop {
        if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
            black_box(r.unwrap());
            return;
        }
    }
}

fn ours() -> palisade_breaker::Breaker<AlwaysReady, palisade_core::classify::LlmClassifier> {
    BreakerLayer::builder().build().unwrap().layer(AlwaysReady)
}

fn ours_time() -> palisade_breaker::Breaker<AlwaysReady, palisade_core::classify::LlmClassifier> {
    BreakerLayer::builder()
        .window(Window::Time(Duration::from_secs(10)))
        .build()
        .unwrap()
        .layer(AlwaysReady)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    let mut g = c.benchmark_group("breaker_closed_per_call");
    let mut bare = AlwaysReady;
    g.bench_function("bare", |b| b.iter(|| one_call(&mut bare)));
    let mut count = ours();
    g.bench_function("palisade_count_window", |b| b.iter(|| one_call(&mut count)));
    let mut time = ours_time();
    g.bench_function("palisade_time_window", |b| b.iter(|| one_call(&mut time)));
    let mut theirs = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(20)
        .build()
        .unwrap()
        .layer(AlwaysReady);
    g.bench_function("tower_resilience", |b| b.iter(|| one_call(&mut theirs)));

    // Two threads sharing one circuit: time per call on this thread while
    // another hammers the same breaker.
    g.bench_function("palisade_count_window_2_threads", |b| {
        b.iter_custom(|iters| {
            let svc = ours();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let other = {
                let mut svc = svc.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .unwrap();
                    let _g = rt.enter();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        one_call(&mut svc);
                    }
                })
            };
            let mut mine = svc;
            let t0 = Instant::now();
            for _ in 0..iters {
                one_call(&mut mine);
            }
            let took = t0.elapsed();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            other.join().unwrap();
            took
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
