//! Per-call overhead of `RetryLayer` on the happy path (an always-ready
//! service answering 200), next to the bare service and `tower::retry` with a
//! no-op policy, in the same run.
//!
//! `cargo bench -p palisade-retry`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use palisade_core::RequestBody;
use palisade_retry::{RetryBudget, RetryLayer};
use tower::{Layer, Service};

#[derive(Clone, Copy)]
struct AlwaysReady;

impl Service<Request<RequestBody>> for AlwaysReady {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<RequestBody>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

#[derive(Clone, Copy)]
struct NoRetry;

impl<E> tower::retry::Policy<Request<RequestBody>, Response<()>, E> for NoRetry {
    type Future = Ready<()>;
    fn retry(
        &mut self,
        _: &mut Request<RequestBody>,
        _: &mut Result<Response<()>, E>,
    ) -> Option<Self::Future> {
        None
    }
    fn clone_request(&mut self, _: &Request<RequestBody>) -> Option<Request<RequestBody>> {
        None
    }
}

/// A policy that never retries but keeps a copy of each request, as any
/// policy able to retry must.
#[derive(Clone, Copy)]
struct NoRetryButCloning;

impl<E> tower::retry::Policy<Request<RequestBody>, Response<()>, E> for NoRetryButCloning {
    type Future = Ready<()>;
    fn retry(
        &mut self,
        _: &mut Request<RequestBody>,
        _: &mut Result<Response<()>, E>,
    ) -> Option<Self::Future> {
        None
    }
    fn clone_request(&mut self, req: &Request<RequestBody>) -> Option<Request<RequestBody>> {
        let mut new = Request::new(req.body().clone());
        *new.method_mut() = req.method().clone();
        *new.uri_mut() = req.uri().clone();
        *new.version_mut() = req.version();
        *new.headers_mut() = req.headers().clone();
        *new.extensions_mut() = req.extensions().clone();
        Some(new)
    }
}

fn one_call<S>(svc: &mut S, body: &RequestBody)
where
    S: Service<Request<RequestBody>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let fut = pin!(svc.call(Request::new(body.clone())));
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
    let body = RequestBody::from(r#"{"model":"m","messages":[]}"#);

    let mut g = c.benchmark_group("retry_per_call");
    let mut bare = AlwaysReady;
    g.bench_function("bare", |b| b.iter(|| one_call(&mut bare, &body)));
    let mut tower_retry = tower::retry::RetryLayer::new(NoRetry).layer(AlwaysReady);
    g.bench_function("tower_retry_noop_policy", |b| {
        b.iter(|| one_call(&mut tower_retry, &body))
    });
    let mut tower_cloning = tower::retry::RetryLayer::new(NoRetryButCloning).layer(AlwaysReady);
    g.bench_function("tower_retry_cloning_policy", |b| {
        b.iter(|| one_call(&mut tower_cloning, &body))
    });
    let mut ours = RetryLayer::new().layer(AlwaysReady);
    g.bench_function("palisade_retry", |b| b.iter(|| one_call(&mut ours, &body)));
    let mut single = RetryLayer::new().max_attempts(1).layer(AlwaysReady);
    g.bench_function("palisade_retry_one_attempt", |b| {
        b.iter(|| one_call(&mut single, &body))
    });
    let mut budgeted = RetryLayer::new()
        .budget(RetryBudget::default())
        .max_elapsed(Duration::from_secs(60))
        .layer(AlwaysReady);
    g.bench_function("palisade_retry_budget_max_elapsed", |b| {
        b.iter(|| one_call(&mut budgeted, &body))
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
