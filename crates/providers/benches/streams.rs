//! Stream decoding and translation, per event, one core:
//!
//! - `decode`: 2,000 content events of each API, already split into SSE
//!   events, decoded into the typed events a translation reads — chat
//!   completions chunks (`decode_openai`), Anthropic events
//!   (`decode_anthropic`) and Responses API events, typed
//!   (`decode_responses`), side by side.
//! - `translate messages → chat`: the same Anthropic stream written as a
//!   chat completions stream's SSE bytes, through the pairwise translator
//!   (`AnthropicToOpenAiStream`, what the gateway used before the
//!   translation core) and through the core (`Api::dialect`: the messages
//!   reader, the chat writer, as the gateway's relay does now).
//!
//! `cargo bench -p palisade-providers --bench streams`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_providers::translate::{AnthropicToOpenAiStream, openai_sse};
use palisade_providers::{Api, decode_anthropic, decode_openai, decode_responses};
use palisade_sse::{Decoder, Event};
use serde_json::json;

const N: usize = 2_000;

fn events(wire: String) -> Vec<Event> {
    let mut d = Decoder::new();
    d.push(Bytes::from(wire));
    std::iter::from_fn(|| d.next_event().ok().flatten()).collect()
}

fn chat() -> Vec<Event> {
    let mut w = String::new();
    for i in 0..N {
        w += &format!(
            "data: {{\"id\":\"chatcmpl-9zXkQ2abcdEFGhijKLmnOPqr\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
        );
    }
    events(w)
}

fn responses() -> Vec<Event> {
    let mut w = String::new();
    for i in 0..N {
        w += &format!(
            "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"item_id\":\"msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41\",\"output_index\":0,\"content_index\":0,\"delta\":\" word{i}\",\"logprobs\":[],\"sequence_number\":{}}}\n\n",
            i + 4
        );
    }
    events(w)
}

/// A whole Anthropic stream: `message_start`, `N` text deltas, the end.
fn messages() -> Vec<Event> {
    let sse = |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
    let mut w = sse(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5",
            "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}),
    );
    w += &sse(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    for i in 0..N {
        w += &format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\" word{i}\"}}}}\n\n"
        );
    }
    w += &sse(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    w += &sse(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": N}}),
    );
    w += &sse("message_stop", json!({"type": "message_stop"}));
    events(w)
}

fn bench(c: &mut Criterion) {
    let (chat, responses, messages) = (chat(), responses(), messages());
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("chat completions chunks (decode_openai)", |b| {
        b.iter(|| {
            for e in &chat {
                black_box(decode_openai(e).unwrap());
            }
        });
    });
    g.throughput(Throughput::Elements(messages.len() as u64));
    g.bench_function("Anthropic events (decode_anthropic)", |b| {
        b.iter(|| {
            for e in &messages {
                black_box(decode_anthropic(e).unwrap());
            }
        });
    });
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("Responses API events (decode_responses)", |b| {
        b.iter(|| {
            for e in &responses {
                black_box(decode_responses(e).unwrap());
            }
        });
    });
    g.finish();

    let mut g = c.benchmark_group("translate messages → chat");
    g.throughput(Throughput::Elements(messages.len() as u64));
    g.bench_function("pairwise AnthropicToOpenAiStream (before the core)", |b| {
        b.iter(|| {
            let mut t = AnthropicToOpenAiStream::new(true);
            let mut bytes = 0;
            for e in &messages {
                for item in t.push(decode_anthropic(e).unwrap()) {
                    bytes += openai_sse(&item).len();
                }
            }
            black_box(bytes)
        });
    });
    let caller = json!({"stream": true, "stream_options": {"include_usage": true}});
    g.bench_function("core: messages reader → chat writer", |b| {
        b.iter(|| {
            let mut read = Api::Messages.dialect().unwrap().stream_reader();
            let mut write = Api::ChatCompletions
                .dialect()
                .unwrap()
                .stream_writer(&caller);
            let mut out = Vec::new();
            for e in &messages {
                for d in read.read(e).unwrap() {
                    write.write(d, &mut out);
                }
            }
            black_box(out.iter().map(Bytes::len).sum::<usize>())
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
