//! Admission cost: palisade's bucket per call (through the layer, around an
//! always-ready service) next to the bare service and governor's `check()`,
//! uncontended and with a second thread hammering the same limiter.
//!
//! `cargo bench -p palisade-ratelimit`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use palisade_ratelimit::RateLimitLayer;
use tower::{Layer, Service};

#[derive(Clone, Copy)]
struct AlwaysReady;

impl Service<Request<()>> for AlwaysReady {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<()>) -> Self::Future {
        ready(Ok(()))
    }
}

fn one_call<S: Service<Request<()>>>(svc: &mut S) {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let fut = pin!(svc.call(Request::new(())));
    black_box(fut.poll(&mut cx).is_ready());
}

/// A limit so high it never refuses: the admission path is what is timed.
const HUGE: u32 = 1_000_000_000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    let mut g = c.benchmark_group("ratelimit_admission");
    let mut bare = AlwaysReady;
    g.bench_function("bare_service", |b| b.iter(|| one_call(&mut bare)));
    let layer = RateLimitLayer::try_new(u64::from(HUGE), f64::from(HUGE)).unwrap();
    let mut ours = layer.layer(AlwaysReady);
    g.bench_function("palisade_layer_per_call", |b| {
        b.iter(|| one_call(&mut ours))
    });
    let quota = governor::Quota::per_second(NonZeroU32::new(HUGE).unwrap());
    let gov = governor::RateLimiter::direct(quota);
    g.bench_function("governor_check", |b| {
        b.iter(|| black_box(gov.check().is_ok()))
    });

    g.bench_function("palisade_layer_per_call_2_threads", |b| {
        b.iter_custom(|iters| {
            let stop = Arc::new(AtomicBool::new(false));
            let other = {
                let (mut svc, stop) = (layer.layer(AlwaysReady), stop.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .unwrap();
                    let _g = rt.enter();
                    while !stop.load(Ordering::Relaxed) {
                        one_call(&mut svc);
                    }
                })
            };
            let t0 = Instant::now();
            for _ in 0..iters {
                one_call(&mut ours);
            }
            let took = t0.elapsed();
            stop.store(true, Ordering::Relaxed);
            other.join().unwrap();
            took
        })
    });
    let gov = Arc::new(governor::RateLimiter::direct(quota));
    g.bench_function("governor_check_2_threads", |b| {
        b.iter_custom(|iters| {
            let stop = Arc::new(AtomicBool::new(false));
            let other = {
                let (gov, stop) = (gov.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        black_box(gov.check().is_ok());
                    }
                })
            };
            let t0 = Instant::now();
            for _ in 0..iters {
                black_box(gov.check().is_ok());
            }
            let took = t0.elapsed();
            stop.store(true, Ordering::Relaxed);
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
