//! Per-call overhead of the trace layer around an always-ready service: no
//! subscriber (ids propagated, nothing recorded), with an OpenTelemetry
//! pipeline (tracing-opentelemetry into an SDK tracer provider without an
//! exporter), next to tower-http's `TraceLayer` with no subscriber, in the
//! same run.
//!
//! `cargo bench -p palisade-trace`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Empty;
use opentelemetry::trace::TracerProvider;
use palisade_core::RequestBody;
use palisade_core::test_util::call_now;
use tower::{Layer, Service};
use tracing_subscriber::layer::SubscriberExt;

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;

type Answer = Response<Empty<Bytes>>;

fn always_ready() -> impl Service<
    Request<RequestBody>,
    Response = Answer,
    Error = Infallible,
    Future = Ready<Result<Answer, Infallible>>,
> + Clone {
    // Like every LLM answer, it carries headers (so the echoed `x-trace-id`
    // goes into an allocated map, as in real use).
    tower::service_fn(|_: Request<RequestBody>| {
        let mut res = Response::new(Empty::new());
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        ready(Ok(res))
    })
}

fn req(body: &Bytes) -> Request<RequestBody> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(RequestBody::new(body.clone()))
        .unwrap()
}

fn one<S>(svc: &mut S, body: &Bytes)
where
    S: Service<Request<RequestBody>>,
    S::Error: std::fmt::Debug,
{
    black_box(call_now(svc, req(body)).unwrap());
}

fn bench(c: &mut Criterion) {
    let body = Bytes::from_static(BODY.as_bytes());
    let mut g = c.benchmark_group("trace/per call");
    let mut bare = always_ready();
    g.bench_function("bare service", |b| b.iter(|| one(&mut bare, &body)));
    let mut ours = palisade_trace::TraceLayer::new().layer(always_ready());
    g.bench_function("palisade TraceLayer, no subscriber", |b| {
        b.iter(|| one(&mut ours, &body))
    });
    let mut tower_http = tower_http::trace::TraceLayer::new_for_http().layer(always_ready());
    g.bench_function("tower-http TraceLayer, no subscriber", |b| {
        b.iter(|| one(&mut tower_http, &body))
    });
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
    tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        let mut ours = palisade_trace::TraceLayer::new().layer(always_ready());
        g.bench_function("palisade TraceLayer, OpenTelemetry pipeline", |b| {
            b.iter(|| one(&mut ours, &body))
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
