//! palisade-timeout: every deadline under paused time, with tower-test mocks
//! and the in-process mock upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use palisade_core::{Budget, ErrorKind};
use palisade_mock::{Fault, MockUpstream, Reply};
use palisade_timeout::{Elapsed, Timeout, TimeoutLayer};
use serde_json::json;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready};
use tower::{Layer, ServiceExt};

const SEC: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn chat(path: &str, text: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .body(Full::new(Bytes::from(
            json!({"model": "mock", "stream": true, "max_tokens": 1000,
                   "messages": [{"role": "user", "content": text}]})
            .to_string(),
        )))
        .unwrap()
}

fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn budget_of(err: &palisade_core::BoxError) -> Budget {
    err.downcast_ref::<Elapsed>()
        .unwrap_or_else(|| panic!("not an Elapsed: {err:?}"))
        .budget()
}

/// Reads the body to its end; returns (data frames, the error if any, when it ended).
async fn drain<B>(body: B) -> (usize, Option<palisade_core::BoxError>, Instant)
where
    B: Body<Error = palisade_core::BoxError> + Unpin,
{
    let mut body = body;
    let mut frames = 0;
    let guard = Instant::now() + secs(3600);
    while let Some(f) = tokio::time::timeout_at(guard, body.frame())
        .await
        .expect("the body ended or failed within an hour")
    {
        match f {
            Ok(_) => frames += 1,
            Err(e) => {
                // After the error the body ends.
                assert!(body.frame().await.is_none(), "the body ends after expiring");
                assert!(body.is_end_stream());
                return (frames, Some(e), Instant::now());
            }
        }
    }
    (frames, None, Instant::now())
}

#[tokio::test(start_paused = true)]
async fn first_byte_expires_exactly_at_the_deadline() {
    let (svc, mut handle) = tower_test::mock::spawn_layer::<Request<()>, Response<Full<Bytes>>, _>(
        TimeoutLayer::new().first_byte(secs(30)),
    );
    handle.allow(1);
    let mut svc = svc;
    assert_ready!(svc.poll_ready()).unwrap();
    let mut fut = tokio_test::task::spawn(svc.call(Request::new(())));
    assert_pending!(fut.poll());
    let _req = handle.next_request().await.unwrap();
    tokio::time::advance(secs(30) - Duration::from_millis(1)).await;
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_millis(1)).await;
    let err = assert_ready!(fut.poll()).unwrap_err();
    assert_eq!(budget_of(&err), Budget::FirstByte);
    assert_eq!(err.downcast_ref::<Elapsed>().unwrap().after(), secs(30));
    assert_eq!(ErrorKind::of(&*err), Some(ErrorKind::Timeout));
    assert!(err.to_string().starts_with("first-byte timeout"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_shorter_total_deadline_wins_before_the_headers() {
    let (mut svc, mut handle) =
        tower_test::mock::spawn_layer::<Request<()>, Response<Full<Bytes>>, _>(
            TimeoutLayer::new().first_byte(secs(30)).total(secs(10)),
        );
    handle.allow(1);
    assert_ready!(svc.poll_ready()).unwrap();
    let start = Instant::now();
    let err = svc.call(Request::new(())).await.unwrap_err();
    assert_eq!(budget_of(&err), Budget::Total);
    assert_eq!(start.elapsed(), secs(10));
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_and_readiness_is_the_inner_one() {
    let (mut svc, mut handle) =
        tower_test::mock::spawn_layer::<Request<()>, Response<Full<Bytes>>, _>(
            TimeoutLayer::new().first_byte(secs(30)),
        );
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready!(svc.poll_ready()).unwrap();
    let fut = svc.call(Request::new(()));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("upstream exploded");
    let err = fut.await.unwrap_err();
    assert_eq!(err.to_string(), "upstream exploded");
}

#[tokio::test(start_paused = true)]
async fn first_byte_does_not_cover_the_body() {
    let mock = MockUpstream::new();
    mock.push(
        Reply::echo()
            .delay_before_headers(secs(10))
            .fault_after(1, Fault::Stall),
    );
    let svc = TimeoutLayer::new().first_byte(secs(30)).layer(mock);
    let res = svc
        .oneshot(chat("/v1/chat/completions", "a b"))
        .await
        .unwrap();
    let mut body = Box::pin(res.into_body());
    body.frame().await.unwrap().unwrap();
    body.frame().await.unwrap().unwrap();
    let stalled = tokio::time::timeout(secs(3600), body.frame()).await;
    assert!(stalled.is_err(), "no body deadline was configured");
}

#[tokio::test(start_paused = true)]
async fn idle_expires_that_long_after_the_last_frame() {
    let mock = MockUpstream::new();
    mock.push(
        Reply::echo()
            .delay_per_token(SEC)
            .fault_after(3, Fault::Stall),
    );
    let svc = TimeoutLayer::new().idle(secs(5)).layer(mock);
    let res = svc
        .oneshot(chat("/v1/chat/completions", &words(10)))
        .await
        .unwrap();
    let mut body = Box::pin(res.into_body());
    let mut last = Instant::now();
    let guard = Instant::now() + secs(3600);
    let err = loop {
        let frame = tokio::time::timeout_at(guard, body.frame()).await;
        match frame.expect("expired within an hour").unwrap() {
            Ok(_) => last = Instant::now(),
            Err(e) => break e,
        }
    };
    assert_eq!(budget_of(&err), Budget::Idle);
    assert_eq!(last.elapsed(), secs(5), "exactly idle after the last frame");
}

#[tokio::test(start_paused = true)]
async fn frames_spaced_below_idle_keep_the_stream_alive() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().delay_per_token(secs(4)));
    let svc = TimeoutLayer::new().idle(secs(5)).layer(mock);
    let start = Instant::now();
    let res = svc.oneshot(chat("/v1/messages", &words(10))).await.unwrap();
    let (frames, err, end) = drain(Box::pin(res.into_body())).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(frames, 12, "preamble, 10 tokens, closing");
    assert_eq!(end - start, secs(40));
}

#[tokio::test(start_paused = true)]
async fn total_ends_a_stream_that_is_slow_but_never_idle() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().delay_per_token(SEC));
    let svc = TimeoutLayer::new()
        .idle(secs(5))
        .total(secs(10))
        .layer(mock);
    let start = Instant::now();
    let res = svc
        .oneshot(chat("/v1/chat/completions", &words(100)))
        .await
        .unwrap();
    let (frames, err, end) = drain(Box::pin(res.into_body())).await;
    let err = err.expect("the total deadline expired");
    assert_eq!(budget_of(&err), Budget::Total);
    assert_eq!(end - start, secs(10));
    assert!((9..=11).contains(&frames), "{frames} frames in 10 s");
}

#[tokio::test(start_paused = true)]
async fn sse_aware_idle_ends_a_ping_only_anthropic_stream() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(2, Fault::Heartbeats(secs(5))));
    let svc = TimeoutLayer::new()
        .idle(secs(15))
        .sse_aware(true)
        .layer(mock);
    let res = svc.oneshot(chat("/v1/messages", "a b c")).await.unwrap();
    let mut body = Box::pin(res.into_body());
    let mut last_data = Instant::now();
    let mut pings = 0;
    let guard = Instant::now() + secs(3600);
    let err = loop {
        let frame = tokio::time::timeout_at(guard, body.frame()).await;
        match frame.expect("expired within an hour").unwrap() {
            Ok(f) => {
                let d = f.into_data().unwrap();
                if d.starts_with(b"event: ping") {
                    pings += 1;
                } else {
                    last_data = Instant::now();
                }
            }
            Err(e) => break e,
        }
    };
    assert_eq!(budget_of(&err), Budget::Idle);
    assert_eq!(last_data.elapsed(), secs(15));
    assert!(pings >= 2, "pings flowed ({pings}) and did not count");
}

#[tokio::test(start_paused = true)]
async fn sse_aware_idle_ends_a_comment_only_openai_stream() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(1, Fault::Heartbeats(secs(2))));
    let svc = TimeoutLayer::new()
        .idle(secs(10))
        .sse_aware(true)
        .layer(mock);
    let start = Instant::now();
    let res = svc
        .oneshot(chat("/v1/chat/completions", "a b"))
        .await
        .unwrap();
    let (_, err, end) = drain(Box::pin(res.into_body())).await;
    assert_eq!(budget_of(&err.unwrap()), Budget::Idle);
    assert_eq!(end - start, secs(10));
}

#[tokio::test(start_paused = true)]
async fn without_sse_awareness_heartbeats_keep_a_dead_stream_alive() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(1, Fault::Heartbeats(secs(5))));
    let svc = TimeoutLayer::new().idle(secs(15)).layer(mock);
    let res = svc.oneshot(chat("/v1/messages", "a b")).await.unwrap();
    let mut body = Box::pin(res.into_body());
    let start = Instant::now();
    while start.elapsed() < secs(600) {
        body.frame().await.unwrap().unwrap();
    }
    // The failure mode the SSE-aware mode exists for.
}

#[tokio::test(start_paused = true)]
async fn a_normal_stream_passes_through_unchanged() {
    let mock = MockUpstream::new();
    let plain = mock
        .clone()
        .oneshot(chat("/v1/messages", "same bytes"))
        .await
        .unwrap();
    let expected = plain.into_body().collect().await.unwrap().to_bytes();
    let svc = TimeoutLayer::new()
        .first_byte(secs(1))
        .idle(secs(1))
        .total(secs(5))
        .sse_aware(true)
        .layer(mock);
    let res = svc
        .oneshot(chat("/v1/messages", "same bytes"))
        .await
        .unwrap();
    let got = res.into_body().collect().await.unwrap().to_bytes();
    // Ids differ per request; everything else is identical.
    let norm = |b: &Bytes| String::from_utf8_lossy(b).replace("msg_mock_2", "msg_mock_1");
    assert_eq!(norm(&got), norm(&expected));
}

#[tokio::test]
async fn size_hint_and_end_of_stream_are_forwarded() {
    let svc = Timeout::new(
        tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                b"12345",
            ))))
        }),
        TimeoutLayer::new().idle(secs(1)).total(secs(1)),
    );
    let res = svc.oneshot(Request::new(())).await.unwrap();
    let mut body = Box::pin(res.into_body());
    assert_eq!(body.size_hint().exact(), Some(5));
    assert!(!body.is_end_stream());
    body.frame().await.unwrap().unwrap();
    assert!(body.is_end_stream());
}

#[tokio::test(start_paused = true)]
async fn no_deadline_is_a_pass_through() {
    let (mut svc, mut handle) =
        tower_test::mock::spawn_layer::<Request<()>, Response<Full<Bytes>>, _>(TimeoutLayer::new());
    handle.allow(1);
    assert_ready!(svc.poll_ready()).unwrap();
    let mut fut = tokio_test::task::spawn(svc.call(Request::new(())));
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::advance(secs(1_000_000)).await;
    assert_pending!(fut.poll());
    send.send_response(Response::new(Full::new(Bytes::from_static(b"ok"))));
    let res = assert_ready!(fut.poll()).unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
}

/// A body that hands out its chunks one `gap` apart.
struct Slow {
    chunks: std::collections::VecDeque<Bytes>,
    gap: Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Body for Slow {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.chunks.is_empty() {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(self.sleep.as_mut().poll(cx));
        let next = Instant::now() + self.gap;
        self.sleep.as_mut().reset(next);
        let chunk = self
            .chunks
            .pop_front()
            .map(|c| Ok(http_body::Frame::data(c)));
        std::task::Poll::Ready(chunk)
    }
}

/// With `sse_aware`, only an event stream is held to events: a JSON answer
/// arriving in frames spaced below `idle` progresses with every frame (it
/// has no events to count), and completes.
#[tokio::test(start_paused = true)]
async fn sse_awareness_leaves_a_slow_json_answer_to_its_frames() {
    let svc = TimeoutLayer::new()
        .idle(secs(5))
        .sse_aware(true)
        .layer(tower::service_fn(|_: Request<Full<Bytes>>| async {
            let body = Slow {
                chunks: ["{\"id\":", "\"c1\",", "\"choices\":[]}"]
                    .into_iter()
                    .map(|s: &'static str| Bytes::from_static(s.as_bytes()))
                    .collect(),
                gap: secs(4),
                sleep: Box::pin(tokio::time::sleep(secs(4))),
            };
            let mut res = Response::new(body);
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok::<_, std::convert::Infallible>(res)
        }));
    let res = svc
        .oneshot(chat("/v1/chat/completions", "hi"))
        .await
        .unwrap();
    let (frames, err, _) = drain(Box::pin(res.into_body())).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(frames, 3);
}
