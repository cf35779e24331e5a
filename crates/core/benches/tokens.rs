//! The token estimate's cost beside the parse it reads from: a 2 KB chat
//! request (a system prompt, eight turns, a tool) and a 100 KB one (a long
//! document pasted into the conversation), each parsed alone and estimated
//! from the parsed value with the `o200k_base` tokenizer.
//!
//! `cargo bench -p palisade-core --bench tokens`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_core::ParsedBody;
use palisade_core::tokens::estimate;
use serde_json::json;

fn request(turns: usize, document_bytes: usize) -> Vec<u8> {
    let turn =
        "Please summarise the quarterly report in three bullet points, keeping the numbers exact.";
    let mut messages = vec![
        json!({"role": "system", "content": "You are a careful financial analyst. Answer briefly and cite figures."}),
    ];
    // English prose with numbers, as a pasted report would be.
    let sentence = "Revenue grew 4.2% to $12.5 million in the third quarter, while operating margin held at 31% despite higher logistics costs. ";
    let document: String = sentence.repeat(document_bytes / sentence.len() + 1);
    if document_bytes > 0 {
        messages.push(json!({"role": "user", "content": &document[..document_bytes]}));
    }
    for i in 0..turns {
        messages.push(json!({"role": "user", "content": format!("{turn} (part {i})")}));
        messages.push(json!({"role": "assistant", "content": format!("Here is part {i}: revenue 12.5, margin 0.31, growth 0.042.")}));
    }
    messages.push(json!({"role": "user", "content": turn}));
    serde_json::to_vec(&json!({
        "model": "gpt-4o-mini",
        "max_completion_tokens": 512,
        "messages": messages,
        "tools": [{"type": "function", "function": {"name": "lookup_figure", "description": "Look up a figure", "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}],
    }))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    for (label, body) in [("2k", request(8, 0)), ("100k", request(8, 98 * 1024))] {
        let mut g = c.benchmark_group(format!("tokens_{label}"));
        eprintln!("{label}: {} bytes", body.len());
        g.bench_function("parse", |b| {
            b.iter(|| ParsedBody::parse(black_box(&body)).unwrap())
        });
        let parsed = ParsedBody::parse(&body).unwrap();
        // Build the tokenizer before measuring (it is built once per process).
        black_box(estimate(&parsed));
        g.bench_function("estimate", |b| b.iter(|| estimate(black_box(&parsed))));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
