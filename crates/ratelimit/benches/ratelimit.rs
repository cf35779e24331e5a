//! Admission cost: palisade's bucket per call (through the layer, around an
//! always-ready service) next to the bare service and governor's `check()`,
//! uncontended and with a second thread hammering the same limiter.
//!
//! `cargo bench -p palisade-ratelimit`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use palisade_core::test_util::{call_now, time_contended};
use palisade_ratelimit::RateLimitLayer;
use tower::{Layer, Service};

/// A service answering at once.
fn always_ready()
-> impl Service<Request<()>, Response = (), Error = Infallible, Future = Ready<Result<(), Infallible>>>
+ Clone
+ Send
+ 'static {
    tower::service_fn(|_: Request<()>| ready(Ok(())))
}

fn one_call<S>(svc: &mut S)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    black_box(call_now(svc, Request::new(())).unwrap());
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
    let mut bare = always_ready();
    g.bench_function("bare_service", |b| b.iter(|| one_call(&mut bare)));
    let layer = RateLimitLayer::try_new(u64::from(HUGE), f64::from(HUGE)).unwrap();
    let mut ours = layer.layer(always_ready());
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
            let mut other = layer.layer(always_ready());
            time_contended(iters, || one_call(&mut ours), move || one_call(&mut other))
        })
    });
    let gov = Arc::new(governor::RateLimiter::direct(quota));
    g.bench_function("governor_check_2_threads", |b| {
        b.iter_custom(|iters| {
            let other = gov.clone();
            time_contended(
                iters,
                || {
                    black_box(gov.check().is_ok());
                },
                move || {
                    black_box(other.check().is_ok());
                },
            )
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
