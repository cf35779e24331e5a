//! The whole preset stack around an always-ready service, per call: trace →
//! total timeout → retry → rate limit → breaker → per-attempt timeout (the
//! SPEC §9 "whole stack" row; schema validation is measured on its own in
//! `palisade-schema`'s bench, as it is a parse, not overhead), next to the
//! bare service, in the same run; no subscriber.
//!
//! `cargo bench --bench stack`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use palisade::core::RequestBody;
use palisade::core::test_util::call_now;
use palisade::preset::StackConfig;
use tower::Service;

type Answer = Response<Full<Bytes>>;

fn always_ready() -> impl Service<
    Request<RequestBody>,
    Response = Answer,
    Error = Infallible,
    Future = Ready<Result<Answer, Infallible>>,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|_: Request<RequestBody>| {
        let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        ready(Ok(res))
    })
}

fn req() -> Request<RequestBody> {
    Request::post("/chat/completions")
        .header("content-type", "application/json")
        .body(RequestBody::from(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("stack/per call");
    let mut bare = always_ready();
    g.bench_function("bare service", |b| {
        b.iter(|| black_box(call_now(&mut bare, req()).unwrap()))
    });
    let full = || {
        StackConfig::openai()
            .no_key()
            .validate(false)
            .requests_per_minute(u64::from(u32::MAX))
            .max_wait(Duration::from_secs(1))
    };
    let mut stack = full().build_over(always_ready()).unwrap();
    g.bench_function("preset: trace, timeouts, retry, rate limit, breaker", |b| {
        b.iter(|| black_box(call_now(&mut stack, req()).unwrap()))
    });
    let mut no_trace = full().trace(false).build_over(always_ready()).unwrap();
    g.bench_function("preset without trace", |b| {
        b.iter(|| black_box(call_now(&mut no_trace, req()).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
