//! Per-call overhead of `TimeoutLayer` around an always-ready service, next to
//! the bare service and `tower::timeout` in the same run.
//!
//! `cargo bench -p palisade-timeout`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use palisade_timeout::TimeoutLayer;
use tower::{Layer, Service};

#[derive(Clone, Copy)]
struct AlwaysReady;

impl Service<Request<()>> for AlwaysReady {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<()>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

/// One call: ready, call, poll the future to completion (it is ready at once).
fn one_call<S>(svc: &mut S)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let fut = pin!(svc.call(Request::new(())));
    match fut.poll(&mut cx) {
        Poll::Ready(r) => {
            black_box(r.unwrap());
        }
        Poll::Pending => unreachable!("always ready"),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let d = Duration::from_secs(30);

    let mut g = c.benchmark_group("timeout_per_call");
    let mut bare = AlwaysReady;
    g.bench_function("bare", |b| b.iter(|| one_call(&mut bare)));
    let mut tower_timeout = tower::timeout::TimeoutLayer::new(d).layer(AlwaysReady);
    g.bench_function("tower_timeout", |b| b.iter(|| one_call(&mut tower_timeout)));
    let mut first_byte = TimeoutLayer::new().first_byte(d).layer(AlwaysReady);
    g.bench_function("palisade_first_byte", |b| {
        b.iter(|| one_call(&mut first_byte))
    });
    let mut all = TimeoutLayer::new()
        .first_byte(d)
        .idle(d)
        .total(d)
        .sse_aware(true)
        .layer(AlwaysReady);
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
