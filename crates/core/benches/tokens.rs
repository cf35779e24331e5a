//! The token estimate's cost beside the parse it reads from: a 2 KB chat
//! request (a system prompt, eight turns, a tool) and a 100 KB one (a long
//! document pasted into the conversation), each parsed alone and estimated
//! from the parsed value with the `o200k_base` tokenizer; and the cases the
//! count cache is for.
//!
//! - `parse`: `ParsedBody::parse` of the request.
//! - `estimate`: the same parsed request estimated again and again (every
//!   count cached after the first call).
//! - `estimate_first_call`: a request never seen before (every string in it
//!   new on each iteration, so nothing is cached).
//! - `estimate_plus_new_message`: the request, already estimated once,
//!   resent with one new 200-byte message (new on each iteration).
//! - `conversation_50_turns/estimate_plus_new_message`: a 50-turn, ~100 KB
//!   conversation, already estimated once, resent with one new 200-byte
//!   message (new on each iteration).
//! - `tokenizer_*`: tiktoken-rs's `count_ordinary` and bpe-openai's `count`
//!   on the same text (the 2 KB request's strings joined), no cache.
//!
//! `cargo bench -p palisade-core --bench tokens`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use palisade_core::ParsedBody;
use palisade_core::tokens::estimate;
use serde_json::{Value, json};

// The `iter_batched_ref` rows make their request in the setup and drop it
// after the measurement: neither the parse nor the drop is timed. Each
// request is made just before its estimate (`PerIteration`), as in a stack,
// where the estimate reads the body parsed once just before: made in
// batches, a 100 KB request is out of the CPU's caches by its turn, and the
// 50-turn row measured about 10 µs instead of 3 µs on the same machine.

/// A number new on every call: what makes a request's strings unseen.
fn nonce() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The chat request; every string carries `tag` (empty: the old rows'
/// request, unchanged).
fn request_value(turns: usize, document_bytes: usize, tag: &str) -> Value {
    let turn =
        "Please summarise the quarterly report in three bullet points, keeping the numbers exact.";
    let mut messages = vec![
        json!({"role": "system", "content": format!("{tag}You are a careful financial analyst. Answer briefly and cite figures.")}),
    ];
    // English prose with numbers, as a pasted report would be.
    let sentence = "Revenue grew 4.2% to $12.5 million in the third quarter, while operating margin held at 31% despite higher logistics costs. ";
    let document: String = sentence.repeat(document_bytes / sentence.len() + 1);
    if document_bytes > 0 {
        messages.push(
            json!({"role": "user", "content": format!("{tag}{}", &document[..document_bytes])}),
        );
    }
    for i in 0..turns {
        messages.push(json!({"role": "user", "content": format!("{tag}{turn} (part {i})")}));
        messages.push(json!({"role": "assistant", "content": format!("{tag}Here is part {i}: revenue 12.5, margin 0.31, growth 0.042.")}));
    }
    messages.push(json!({"role": "user", "content": format!("{tag}{turn}")}));
    json!({
        "model": "gpt-4o-mini",
        "max_completion_tokens": 512,
        "messages": messages,
        "tools": [{"type": "function", "function": {"name": "lookup_figure", "description": format!("{tag}Look up a figure"), "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}],
    })
}

fn request(turns: usize, document_bytes: usize) -> Vec<u8> {
    serde_json::to_vec(&request_value(turns, document_bytes, "")).unwrap()
}

/// A 50-turn agent conversation of about 100 KB: each turn a ~1 KB
/// question and a ~1 KB answer, all different.
fn conversation() -> Value {
    let question = "Given the figures above, which region's margin moved most, and why? Quote the lines you rely on and keep every number exact. ";
    let answer = "The northern region moved most: its margin rose from 28.1% to 31.4% on lower freight costs (lines 12 and 40), while revenue grew 4.2%. ";
    let mut messages = vec![
        json!({"role": "system", "content": "You are a careful financial analyst. Answer briefly and cite figures."}),
    ];
    for i in 0..50 {
        messages
            .push(json!({"role": "user", "content": format!("Turn {i}. {}", question.repeat(8))}));
        messages.push(
            json!({"role": "assistant", "content": format!("Turn {i}. {}", answer.repeat(7))}),
        );
    }
    json!({"model": "gpt-4o-mini", "max_completion_tokens": 512, "messages": messages})
}

/// `body` with one new user message of 200 bytes appended.
fn plus_new_message(body: &Value) -> ParsedBody {
    let mut body = body.clone();
    let mut text = format!("New question {}: ", nonce());
    while text.len() < 200 {
        text.push_str("what changed since the last quarter? ");
    }
    text.truncate(200);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "user", "content": text}));
    ParsedBody::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
}

/// Every string of a JSON value, joined by line breaks (about the text the
/// estimate counts).
fn strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn bench(c: &mut Criterion) {
    for (label, turns, document) in [("2k", 8, 0), ("100k", 8, 98 * 1024)] {
        let body = request(turns, document);
        let mut g = c.benchmark_group(format!("tokens_{label}"));
        eprintln!("{label}: {} bytes", body.len());
        g.bench_function("parse", |b| {
            b.iter(|| ParsedBody::parse(black_box(&body)).unwrap())
        });
        let parsed = ParsedBody::parse(&body).unwrap();
        // Build the tokenizer before measuring (it is built once per process).
        black_box(estimate(&parsed));
        g.bench_function("estimate", |b| b.iter(|| estimate(black_box(&parsed))));
        g.bench_function("estimate_first_call", |b| {
            b.iter_batched_ref(
                || {
                    let tag = format!("[{}] ", nonce());
                    let v = request_value(turns, document, &tag);
                    ParsedBody::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
                },
                |p| estimate(p),
                BatchSize::PerIteration,
            )
        });
        let value = request_value(turns, document, "");
        g.bench_function("estimate_plus_new_message", |b| {
            b.iter_batched_ref(
                || plus_new_message(&value),
                |p| estimate(p),
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }

    let conv = conversation();
    let first = ParsedBody::parse(&serde_json::to_vec(&conv).unwrap()).unwrap();
    eprintln!("conversation: {} bytes", first.len());
    let mut g = c.benchmark_group("conversation_50_turns");
    // Its first call, before measuring: what the cache then holds.
    black_box(estimate(&first));
    g.bench_function("estimate_plus_new_message", |b| {
        b.iter_batched_ref(
            || plus_new_message(&conv),
            |p| estimate(p),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let mut text = String::new();
    strings(&request_value(8, 0, ""), &mut text);
    eprintln!("tokenizer text: {} bytes", text.len());
    let tiktoken = tiktoken_rs::o200k_base().unwrap();
    let bpe = bpe_openai::o200k_base();
    assert_eq!(tiktoken.count_ordinary(&text), bpe.count(text.as_str()));
    let mut g = c.benchmark_group("tokenizer_2k");
    g.bench_function("tiktoken_rs", |b| {
        b.iter(|| tiktoken.count_ordinary(black_box(&text)))
    });
    g.bench_function("bpe_openai", |b| {
        b.iter(|| bpe.count(black_box(text.as_str())))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
