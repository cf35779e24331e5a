//! Per-call overhead of `RetryLayer` on the happy path (an always-ready
//! service answering 200), next to the bare service and `tower::retry` with a
//! no-op policy, in the same run.
//!
//! `cargo bench -p palisade-retry`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use palisade_core::RequestBody;
use palisade_core::test_util::call_now;
use palisade_retry::{RetryBudget, RetryLayer};
use tower::{Layer, Service};

/// A service answering at once.
fn always_ready() -> impl Service<
    Request<RequestBody>,
    Response = Response<()>,
    Error = Infallible,
    Future = Ready<Result<Response<()>, Infallible>>,
> + Clone {
    tower::service_fn(|_: Request<RequestBody>| ready(Ok(Response::new(()))))
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
    black_box(call_now(svc, Request::new(body.clone())).unwrap());
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let body = RequestBody::from(r#"{"model":"m","messages":[]}"#);

    let mut g = c.benchmark_group("retry_per_call");
    let mut bare = always_ready();
    g.bench_function("bare", |b| b.iter(|| one_call(&mut bare, &body)));
    let mut tower_retry = tower::retry::RetryLayer::new(NoRetry).layer(always_ready());
    g.bench_function("tower_retry_noop_policy", |b| {
        b.iter(|| one_call(&mut tower_retry, &body))
    });
    let mut tower_cloning = tower::retry::RetryLayer::new(NoRetryButCloning).layer(always_ready());
    g.bench_function("tower_retry_cloning_policy", |b| {
        b.iter(|| one_call(&mut tower_cloning, &body))
    });
    let mut ours = RetryLayer::new().layer(always_ready());
    g.bench_function("palisade_retry", |b| b.iter(|| one_call(&mut ours, &body)));
    // One attempt keeps a copy of the request for a resend after a stale
    // pooled connection (the default); `stale_resends(0)` keeps none.
    let mut single_no_resend = RetryLayer::new()
        .max_attempts(1)
        .stale_resends(0)
        .layer(always_ready());
    g.bench_function("palisade_retry_one_attempt_no_stale_resend", |b| {
        b.iter(|| one_call(&mut single_no_resend, &body))
    });
    let mut single = RetryLayer::new().max_attempts(1).layer(always_ready());
    g.bench_function("palisade_retry_one_attempt", |b| {
        b.iter(|| one_call(&mut single, &body))
    });
    let mut budgeted = RetryLayer::new()
        .budget(RetryBudget::default())
        .max_elapsed(Duration::from_secs(60))
        .layer(always_ready());
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
