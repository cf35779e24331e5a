//! The layers composed in the recommended order, against the mock upstream,
//! under paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use palisade::core::{Budget, Elapsed, RequestBody};
use palisade::mock::{Fault, MockUpstream, Reply};
use palisade::retry::RetryLayer;
use palisade::timeout::TimeoutLayer;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn stream_req(path: &str, text: &str) -> Request<RequestBody> {
    let body = serde_json::json!({"model": "mock", "stream": true, "max_tokens": 100,
        "messages": [{"role": "user", "content": text}]});
    Request::post(path).body(RequestBody::json(&body)).unwrap()
}

/// total 60 s → retry (3 attempts, exact delays) → first byte 5 s, idle 10 s (SSE-aware).
fn stack(
    mock: &MockUpstream,
) -> impl tower::Service<
    Request<RequestBody>,
    Response = http::Response<
        palisade::timeout::TimeoutBody<palisade::timeout::TimeoutBody<palisade::mock::MockBody>>,
    >,
    Error = palisade::core::BoxError,
> {
    ServiceBuilder::new()
        .layer(TimeoutLayer::new().total(secs(60)))
        .layer(RetryLayer::new().jitter(false).base_delay(secs(1)))
        .layer(
            TimeoutLayer::new()
                .first_byte(secs(5))
                .idle(secs(10))
                .sse_aware(true),
        )
        .service(mock.clone())
}

fn elapsed_budget(err: &palisade::core::BoxError) -> Budget {
    palisade::core::find::<Elapsed>(&**err)
        .unwrap_or_else(|| panic!("not a timeout: {err:?}"))
        .budget()
}

#[tokio::test(start_paused = true)]
async fn a_stream_stalling_after_its_first_event_fails_on_the_body_and_is_not_retried() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(1, Fault::Stall));
    let res = stack(&mock)
        .oneshot(stream_req("/v1/chat/completions", "a b c"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let err = res.into_body().collect().await.unwrap_err();
    assert_eq!(elapsed_budget(&err), Budget::Idle);
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_first_byte_timeout_fails_one_attempt_and_the_retry_succeeds() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().delay_before_headers(secs(3600)));
    let start = Instant::now();
    let res = stack(&mock)
        .oneshot(stream_req("/v1/messages", "hello again"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        start.elapsed(),
        secs(5 + 1),
        "first-byte deadline, then one backoff"
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("message_stop"));
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_total_deadline_bounds_every_attempt_and_backoff() {
    let mock = MockUpstream::new();
    mock.set_default(Reply::status(503).header("retry-after", "8"));
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new().total(secs(20)))
        .layer(RetryLayer::new().jitter(false).max_attempts(10))
        .service(mock.clone());
    let start = Instant::now();
    let err = svc
        .oneshot(stream_req("/v1/chat/completions", "x"))
        .await
        .unwrap_err();
    assert_eq!(elapsed_budget(&err), Budget::Total);
    assert_eq!(start.elapsed(), secs(20));
    assert_eq!(mock.request_count(), 3, "at 0 s, 8 s and 16 s");
}

#[tokio::test(start_paused = true)]
async fn a_ping_only_stream_is_ended_by_the_sse_aware_idle_deadline() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(2, Fault::Heartbeats(secs(3))));
    let res = stack(&mock)
        .oneshot(stream_req("/v1/messages", "a b c d"))
        .await
        .unwrap();
    let err = res.into_body().collect().await.unwrap_err();
    assert_eq!(elapsed_budget(&err), Budget::Idle);
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_once_the_breaker_inside_them_opens() {
    use palisade::breaker::{BreakerLayer, CircuitOpen, State};
    let mock = MockUpstream::new();
    mock.set_default(Reply::status(503));
    let breaker = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(2)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new().jitter(false).max_attempts(5))
        .layer(breaker)
        .service(mock.clone());
    let err = svc
        .oneshot(stream_req("/v1/chat/completions", "x"))
        .await
        .unwrap_err();
    assert!(
        palisade::core::find::<CircuitOpen>(&*err).is_some(),
        "{err}"
    );
    assert_eq!(handle.state(), State::Open);
    assert_eq!(
        mock.request_count(),
        2,
        "two attempts reached the upstream, not five"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_stalling_after_200_is_a_breaker_failure_via_the_idle_deadline() {
    use palisade::breaker::{BreakerLayer, State};
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(1, Fault::Stall));
    let breaker = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(TimeoutLayer::new().idle(secs(10)))
        .service(mock.clone());
    let res = svc
        .oneshot(stream_req("/v1/messages", "a b c"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(handle.state(), State::Closed, "a 200 is not yet a success");
    let err = res.into_body().collect().await.unwrap_err();
    assert_eq!(elapsed_budget(&err), Budget::Idle);
    assert_eq!(
        handle.state(),
        State::Open,
        "the stall counted as a failure"
    );
}
