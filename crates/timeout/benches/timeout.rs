//! Per-call overhead of `TimeoutLayer` around an always-ready service, next to
//! the bare service and `tower::timeout` in the same run.
//!
//! `cargo bench -p palisade-timeout`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use palisade_core::test_util::call_now;
use palisade_timeout::TimeoutLayer;
use tower::{Layer, Service};

/// A service answering at once.
fn always_ready() -> impl Service<
    Request<()>,
    Response = Response<()>,
    Error = Infallible,
    Future = Ready<Result<Response<()>, Infallible>>,
> + Clone {
    tower::service_fn(|_: Request<()>| ready(Ok(Response::new(()))))
}

fn one_call<S: Service<Request<()>>>(svc: &mut S)
where
    S::Error: std::fmt::Debug,
{
    black_box(call_now(svc, Request::new(())).unwrap());
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let d = Duration::from_secs(30);

    let mut g = c.benchmark_group("timeout_per_call");
    let mut bare = always_ready();
    g.bench_function("bare", |b| b.iter(|| one_call(&mut bare)));
    let mut tower_timeout = tower::timeout::TimeoutLayer::new(d).layer(always_ready());
    g.bench_function("tower_timeout", |b| b.iter(|| one_call(&mut tower_timeout)));
    let mut first_byte = TimeoutLayer::new().first_byte(d).layer(always_ready());
    g.bench_function("palisade_first_byte", |b| {
        b.iter(|| one_call(&mut first_byte))
    });
    let mut all = TimeoutLayer::new()
        .first_byte(d)
        .idle(d)
        .total(d)
        .sse_aware(true)
        .layer(always_ready());
    g.bench_function("palisade_first_byte_idle_total_sse", |b| {
        b.iter(|| one_call(&mut all))
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
