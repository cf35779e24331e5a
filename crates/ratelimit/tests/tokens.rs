//! Tokens per minute: reservation from the estimate, reconciliation with the
//! reported usage when the body ends (paused time: the bucket does not
//! refill while a test looks at it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::Request;
use http_body_util::BodyExt;
use palisade_core::{ParsedBody, RateLimited, RequestBody, find, tokens};
use palisade_mock::{MockUpstream, Reply};
use palisade_ratelimit::TokenLimitLayer;
use tower::{Layer, ServiceExt};

fn chat(max_tokens: u64, stream: bool) -> Request<RequestBody> {
    let body = format!(
        r#"{{"model":"mock","max_tokens":{max_tokens},"stream":{stream},"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"alpha beta gamma"}}]}}"#
    );
    Request::post("/v1/chat/completions")
        .body(RequestBody::from(body))
        .unwrap()
}

fn estimate(req: &Request<RequestBody>) -> u64 {
    tokens::estimate(&ParsedBody::parse(req.body().as_bytes()).unwrap()).total()
}

#[tokio::test(start_paused = true)]
async fn a_cheaper_answer_gives_the_difference_back() {
    let layer = TokenLimitLayer::per_minute(1_000).unwrap();
    let mock = MockUpstream::new();
    let svc = layer.layer(mock);
    let req = chat(500, false);
    let reserved = estimate(&req);
    assert!(reserved > 500);
    let res = svc.oneshot(req).await.unwrap();
    // Reserved while the body is unread.
    assert_eq!(layer.bucket().available(), 1_000 - reserved);
    res.into_body().collect().await.unwrap();
    // The mock reports 3 prompt + 3 completion tokens.
    assert_eq!(layer.bucket().available(), 1_000 - 6);
}

#[tokio::test(start_paused = true)]
async fn a_dearer_answer_is_charged_the_difference() {
    let layer = TokenLimitLayer::per_minute(1_000).unwrap();
    let mock = MockUpstream::new();
    mock.push(Reply::status(200).header("content-type", "application/json").body(
        r#"{"id":"x","object":"chat.completion","model":"mock","choices":[],"usage":{"prompt_tokens":300,"completion_tokens":400}}"#,
    ));
    let svc = layer.layer(mock);
    let res = svc.clone().oneshot(chat(10, false)).await.unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(layer.bucket().available(), 300);
    // The debt is felt by the next call: one reserving about 400 tokens no
    // longer fits in the 300 left and is refused with a wait.
    let err = svc.oneshot(chat(390, false)).await.unwrap_err();
    let limited = find::<RateLimited>(&*err).expect("RateLimited");
    assert!(limited.retry_after().is_some(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_stream_is_reconciled_from_its_final_usage_chunk() {
    let layer = TokenLimitLayer::per_minute(1_000).unwrap();
    let svc = layer.layer(MockUpstream::new());
    let res = svc.oneshot(chat(200, true)).await.unwrap();
    let reserved_left = layer.bucket().available();
    assert!(reserved_left < 800);
    res.into_body().collect().await.unwrap();
    assert_eq!(layer.bucket().available(), 1_000 - 6);
}

#[tokio::test(start_paused = true)]
async fn an_error_status_without_usage_is_refunded_and_a_dropped_body_keeps_its_reservation() {
    let layer = TokenLimitLayer::per_minute(1_000).unwrap();
    let mock = MockUpstream::new();
    mock.push(Reply::status(503));
    let svc = layer.layer(mock);
    let res = svc.clone().oneshot(chat(100, false)).await.unwrap();
    assert_eq!(res.status(), 503);
    res.into_body().collect().await.unwrap();
    assert_eq!(layer.bucket().available(), 1_000);

    let req = chat(100, true);
    let reserved = estimate(&req);
    let res = svc.oneshot(req).await.unwrap();
    drop(res);
    assert_eq!(layer.bucket().available(), 1_000 - reserved);
}

#[tokio::test(start_paused = true)]
async fn an_estimate_over_capacity_fails_at_once() {
    let layer = TokenLimitLayer::per_minute(100).unwrap();
    let mock = MockUpstream::new();
    let err = layer
        .layer(mock.clone())
        .oneshot(chat(1_000, false))
        .await
        .unwrap_err();
    assert_eq!(find::<RateLimited>(&*err).unwrap().retry_after(), None);
    assert_eq!(mock.request_count(), 0);
    assert_eq!(layer.bucket().available(), 100);
}
