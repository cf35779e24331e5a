//! Streamed throughput through the whole preset stack: a 64 MiB in-memory
//! OpenAI stream with `include_usage` (8 KiB frames, ~340-byte chunk events,
//! each with `"usage":null` as OpenAI sends them) answered by an
//! always-ready service, read to its end through every layer (trace with
//! and without metrics, timeouts, retry, rate limits, breaker), beside the
//! bare `palisade_sse` decoder over the same frames, in the same run. The
//! reader drains the body frame by frame, or reads it as events (as the
//! gateway's relay does): decoding it again, or taking the events the stack
//! already decodes (`SharedEvents`).
//!
//! `cargo bench --bench stream`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_core::Stream;
use http::{Request, Response};
use http_body::{Body, Frame};
use palisade::core::RequestBody;
use palisade::core::test_util::call_now;
use palisade::preset::StackConfig;
use palisade::sse::{EventStream, SharedEvents, SharedScan};
use tower::Service;

const TOTAL: usize = 64 * 1024 * 1024;
const CHUNK: usize = 8 * 1024;

fn stream_frames() -> Arc<Vec<Bytes>> {
    let mut all = Vec::with_capacity(TOTAL + 512);
    let mut i = 0u64;
    while all.len() < TOTAL {
        let line = format!(
            "data: {{\"id\":\"chatcmpl-9zXkQ2abcdEFGhijKLmnOPqr\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
        );
        all.extend_from_slice(line.as_bytes());
        i += 1;
    }
    all.extend_from_slice(b"data: {\"id\":\"chatcmpl-9zXkQ2abcdEFGhijKLmnOPqr\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":200000,\"total_tokens\":200012}}\n\ndata: [DONE]\n\n");
    Arc::new(all.chunks(CHUNK).map(Bytes::copy_from_slice).collect())
}

/// The frames of one answer, handed out as they are polled.
struct Frames {
    all: Arc<Vec<Bytes>>,
    next: usize,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let i = self.next;
        self.next += 1;
        Poll::Ready(self.all.get(i).cloned().map(|b| Ok(Frame::data(b))))
    }
}

type Answer = Response<Frames>;

fn upstream(
    all: Arc<Vec<Bytes>>,
) -> impl Service<
    Request<RequestBody>,
    Response = Answer,
    Error = Infallible,
    Future = Ready<Result<Answer, Infallible>>,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |_: Request<RequestBody>| {
        let mut res = Response::new(Frames {
            all: all.clone(),
            next: 0,
        });
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        ready(Ok(res))
    })
}

fn req() -> Request<RequestBody> {
    Request::post("/chat/completions")
        .header("content-type", "application/json")
        .body(RequestBody::from(
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap()
}

/// Reads an always-ready body to its end; returns the bytes it gave.
fn drain_body<B: Body<Data = Bytes> + Unpin>(mut b: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut n = 0;
    loop {
        match Pin::new(&mut b).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    n += d.len();
                }
                black_box(f);
            }
            Poll::Ready(Some(Err(e))) => panic!("{e:?}"),
            Poll::Ready(None) => return n,
            Poll::Pending => unreachable!("always ready"),
        }
    }
}

/// Drains an always-ready stream; returns how many items it gave.
fn drain_stream<S: Stream + Unpin>(mut s: S) -> usize {
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

fn bench(c: &mut Criterion) {
    let all = stream_frames();
    let bytes: usize = all.iter().map(Bytes::len).sum();
    let mut g = c.benchmark_group("stream/64 MiB");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));

    g.bench_function("bare palisade_sse decoder", |b| {
        b.iter(|| {
            let body = Frames {
                all: all.clone(),
                next: 0,
            };
            black_box(drain_stream(EventStream::new(body)))
        })
    });

    let preset = || {
        StackConfig::openai()
            .no_key()
            .validate(false)
            .requests_per_minute(u64::from(u32::MAX))
            .tokens_per_minute(u64::from(u32::MAX))
            .max_wait(Duration::from_secs(1))
    };
    let mut stack = preset().build_over(upstream(all.clone())).unwrap();
    g.bench_function("preset stack (no subscriber, no metrics)", |b| {
        b.iter(|| {
            let res = call_now(&mut stack, req()).unwrap();
            assert_eq!(drain_body(res.into_body()), bytes);
        })
    });
    // A caller that wants events (the gateway's relay): decoding the
    // stack's body again, or taking the events the stack already decodes.
    g.bench_function("preset stack, caller decodes events again", |b| {
        b.iter(|| {
            let res = call_now(&mut stack, req()).unwrap();
            black_box(drain_stream(EventStream::new(res.into_body())))
        })
    });
    g.bench_function(
        "preset stack, caller takes its events (SharedEvents)",
        |b| {
            b.iter(|| {
                let (parts, body) = call_now(&mut stack, req()).unwrap().into_parts();
                let sub = SharedScan::subscribe(&parts.extensions, 1 << 20).expect("subscribed");
                black_box(drain_stream(SharedEvents::new(body, sub)))
            })
        },
    );
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder().build();
    let meter = opentelemetry::metrics::MeterProvider::meter(&provider, "bench");
    let mut with_metrics = preset()
        .metrics(&meter)
        .build_over(upstream(all.clone()))
        .unwrap();
    g.bench_function("preset stack with GenAI metrics", |b| {
        b.iter(|| {
            let res = call_now(&mut with_metrics, req()).unwrap();
            assert_eq!(drain_body(res.into_body()), bytes);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
