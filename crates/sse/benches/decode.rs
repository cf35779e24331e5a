//! SSE decoding throughput: a 64 MiB OpenAI-style stream in 8 KiB chunks, one
//! core, next to eventsource-stream and sse-stream in the same run; the typed
//! rate (each event's JSON decoded into a chunk struct) beside it.
//!
//! `cargo bench -p palisade-sse`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_core::Stream;
use http_body::{Body, Frame};
use palisade_sse::{Decoder, EventStream};

const TOTAL: usize = 64 * 1024 * 1024;
const CHUNK: usize = 8 * 1024;

fn stream_bytes() -> Vec<Bytes> {
    let mut all = Vec::with_capacity(TOTAL + 512);
    let mut i = 0u64;
    while all.len() < TOTAL {
        let line = format!(
            "data: {{\"id\":\"chatcmpl-9zXkQ2abcdEFGhijKLmnOPqr\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
        );
        all.extend_from_slice(line.as_bytes());
        i += 1;
    }
    all.extend_from_slice(b"data: [DONE]\n\n");
    all.chunks(CHUNK).map(Bytes::copy_from_slice).collect()
}

struct Chunks(std::vec::IntoIter<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.next().map(|b| Ok(Frame::data(b))))
    }
}

/// Drains an always-ready stream; returns how many items it gave.
fn drain<S: Stream + Unpin>(mut s: S) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let mut n = 0;
    loop {
        match Pin::new(&mut s).poll_next(&mut cx) {
            Poll::Ready(Some(item)) => {
                black_box(item);
                n += 1;
            }
            Poll::Ready(None) => return n,
            Poll::Pending => unreachable!("always ready"),
        }
    }
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct ChatChunk<'a> {
    #[serde(borrow)]
    id: &'a str,
    created: u64,
    #[serde(borrow)]
    model: &'a str,
    choices: Vec<Choice<'a>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Choice<'a> {
    index: u32,
    #[serde(borrow)]
    delta: Delta<'a>,
    finish_reason: Option<&'a str>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<std::borrow::Cow<'a, str>>,
}

fn bench(c: &mut Criterion) {
    let chunks = stream_bytes();
    let bytes: usize = chunks.iter().map(Bytes::len).sum();
    let events = {
        let mut d = Decoder::new();
        let mut n = 0;
        for ch in &chunks {
            d.push(ch.clone());
            while d.next_event().unwrap().is_some() {
                n += 1;
            }
        }
        n
    };

    let mut g = c.benchmark_group("sse_64MiB_8KiB_chunks");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));

    g.bench_function("palisade_decoder", |b| {
        b.iter(|| {
            let mut d = Decoder::new();
            let mut n = 0;
            for ch in &chunks {
                d.push(ch.clone());
                while let Some(ev) = d.next_event().unwrap() {
                    black_box(&ev);
                    n += 1;
                }
            }
            assert_eq!(n, events);
        })
    });
    g.bench_function("palisade_event_stream", |b| {
        b.iter(|| {
            assert_eq!(
                drain(EventStream::new(Chunks(chunks.clone().into_iter()))),
                events
            )
        })
    });
    g.bench_function("palisade_typed_openai_chunks", |b| {
        b.iter(|| {
            let mut d = Decoder::new();
            let mut n = 0;
            for ch in &chunks {
                d.push(ch.clone());
                while let Some(ev) = d.next_event().unwrap() {
                    if ev.data() != "[DONE]" {
                        let chunk: ChatChunk<'_> = serde_json::from_slice(ev.data()).unwrap();
                        black_box(&chunk);
                    }
                    n += 1;
                }
            }
            assert_eq!(n, events);
        })
    });
    g.bench_function("eventsource_stream", |b| {
        use eventsource_stream::Eventsource;
        b.iter(|| {
            let s = futures_util::stream::iter(chunks.clone().into_iter().map(Ok::<_, Infallible>));
            assert_eq!(drain(s.eventsource()), events);
        })
    });
    g.bench_function("sse_stream", |b| {
        b.iter(|| {
            let s = sse_stream::SseStream::new(Chunks(chunks.clone().into_iter()));
            black_box(drain(s));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
