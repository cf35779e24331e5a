//! Structured output checked against the request's `response_format`
//! schema; retry told to act on a mismatch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::Request;
use http_body_util::BodyExt;
use palisade_core::classify::LlmClassifier;
use palisade_core::{InvalidOutput, RequestBody, find};
use palisade_mock::{MockUpstream, Reply};
use palisade_retry::RetryLayer;
use palisade_schema::OutputSchemaLayer;
use tower::{Layer, ServiceBuilder, ServiceExt};

const REQUEST: &str = r#"{"model":"mock","messages":[{"role":"user","content":"extract"}],
  "response_format":{"type":"json_schema","json_schema":{"name":"event","strict":true,
  "schema":{"type":"object","properties":{"name":{"type":"string"},"date":{"type":"string"}},
  "required":["name","date"],"additionalProperties":false}}}}"#;

fn answer(content: &str) -> Reply {
    let body = serde_json::json!({
        "id": "c", "object": "chat.completion", "model": "mock",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
    });
    Reply::status(200)
        .header("content-type", "application/json")
        .body(body.to_string())
}

fn req(body: &str) -> Request<RequestBody> {
    Request::post("/v1/chat/completions")
        .body(RequestBody::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn a_mismatching_output_is_a_typed_error_with_pointers() {
    let mock = MockUpstream::new();
    mock.push(answer(r#"{"name":"fair","when":"Friday"}"#));
    let err = OutputSchemaLayer::new()
        .layer(mock.clone())
        .oneshot(req(REQUEST))
        .await
        .unwrap_err();
    let invalid = find::<InvalidOutput>(&*err).expect("InvalidOutput");
    let pointers: Vec<&str> = invalid.violations().iter().map(|v| v.pointer()).collect();
    assert!(
        pointers.contains(&"/choices/0/message/content/date"),
        "{pointers:?}"
    );
    assert!(
        pointers.contains(&"/choices/0/message/content"),
        "additionalProperties: {pointers:?}"
    );

    mock.push(answer("not json at all"));
    let err = OutputSchemaLayer::new()
        .layer(mock)
        .oneshot(req(REQUEST))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");
}

#[tokio::test]
async fn a_matching_output_and_requests_without_a_schema_pass() {
    let mock = MockUpstream::new();
    let good = r#"{"name":"fair","date":"Friday"}"#;
    mock.push(answer(good));
    let res = OutputSchemaLayer::new()
        .layer(mock.clone())
        .oneshot(req(REQUEST))
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("Friday"));
    // No response_format: untouched (the mock's echo is not JSON content).
    let plain = r#"{"model":"mock","messages":[{"role":"user","content":"hello"}]}"#;
    let res = OutputSchemaLayer::new()
        .layer(mock)
        .oneshot(req(plain))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn retry_told_to_retries_a_mismatch_until_the_output_fits() {
    let mock = MockUpstream::new();
    mock.push(answer(r#"{"name":"fair"}"#));
    mock.push(answer(r#"{"name":"fair","date":"Friday"}"#));
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new().classifier(LlmClassifier::new().retry_invalid_output(true)))
        .layer(OutputSchemaLayer::new())
        .service(mock.clone());
    let res = svc.oneshot(req(REQUEST)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(mock.request_count(), 2);

    // By default it is not retried.
    mock.push(answer(r#"{"name":"fair"}"#));
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(OutputSchemaLayer::new())
        .service(mock.clone());
    assert!(svc.oneshot(req(REQUEST)).await.is_err());
    assert_eq!(mock.request_count(), 3);
}
