//! Schema validation of a 2 KB chat request: the parse alone, the parse plus
//! validation against the bundled schema, and the whole layer (parse once,
//! validate, store the parsed body) around an always-ready service.
//!
//! `cargo bench -p palisade-schema`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use palisade_core::test_util::call_now;
use palisade_core::{ParsedBody, RequestBody};
use palisade_schema::{Schema, SchemaLayer};
use serde_json::json;
use tower::{Layer, Service};

/// A realistic ~2 KB chat request: system prompt, a few turns, a tool.
fn request_2k() -> Vec<u8> {
    let turn =
        "Please summarise the quarterly report in three bullet points, keeping the numbers exact.";
    let mut messages = vec![
        json!({"role": "system", "content": "You are a careful financial analyst. Answer briefly and cite figures."}),
    ];
    for i in 0..8 {
        messages.push(json!({"role": "user", "content": format!("{turn} (part {i})")}));
        messages.push(json!({"role": "assistant", "content": format!("Here is part {i}: revenue 12.5, margin 0.31, growth 0.042.")}));
    }
    messages.push(json!({"role": "user", "content": turn}));
    let body = json!({
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "max_completion_tokens": 512,
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": messages,
        "tools": [{"type": "function", "function": {"name": "lookup_figure", "description": "Look up a figure", "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}],
    });
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!((1800..2600).contains(&bytes.len()), "{}", bytes.len());
    bytes
}

fn always_ready() -> impl Service<
    Request<RequestBody>,
    Response = Response<()>,
    Error = Infallible,
    Future = Ready<Result<Response<()>, Infallible>>,
> + Clone {
    tower::service_fn(|_: Request<RequestBody>| ready(Ok(Response::new(()))))
}

fn bench(c: &mut Criterion) {
    let body = request_2k();
    let schema = Schema::openai_chat();
    let mut g = c.benchmark_group(format!("schema/{}B chat request", body.len()));
    g.bench_function("parse alone", |b| {
        b.iter(|| black_box(ParsedBody::parse(black_box(&body)).unwrap()))
    });
    g.bench_function("parse + validate", |b| {
        b.iter(|| {
            let p = ParsedBody::parse(black_box(&body)).unwrap();
            schema.check(p.value()).unwrap();
            black_box(p)
        })
    });
    let parsed = ParsedBody::parse(&body).unwrap();
    g.bench_function("validate alone", |b| {
        b.iter(|| schema.check(black_box(parsed.value())).unwrap())
    });
    let bytes = bytes::Bytes::from(body.clone());
    let mut svc = SchemaLayer::openai().layer(always_ready());
    g.bench_function("SchemaLayer call (parse once + validate + store)", |b| {
        b.iter(|| {
            let req = Request::new(RequestBody::new(bytes.clone()));
            black_box(call_now(&mut svc, req).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
