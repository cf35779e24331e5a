//! Testing your own service that calls an LLM through a palisade stack —
//! with no socket and no key.
//!
//! The service under test is an axum handler (`POST /summary`) that asks the
//! LLM through a stack kept in its state and answers 502 when the LLM
//! fails. Two ways to test it, both shown here:
//!
//! 1. **palisade-mock in process**: `MockUpstream` is itself a tower service,
//!    so the real stack is built over it (`StackConfig::build_over`) instead
//!    of over an HTTP client. Script it — a 429 with a wait hint, a stream
//!    that resets halfway — and check what your handler does: the stack
//!    retries the 429 (your handler never sees it), and a reset after the
//!    first byte reaches your code as an error in the body.
//! 2. **tower-test**: `tower_test::mock::pair()` hands you each request the
//!    stack sends and lets you answer it by hand — to assert on what was
//!    sent (headers, body) and to answer anything, in any order.
//!
//! In your own crate these would be `#[tokio::test]` functions (with
//! `tokio::time::pause()` when timeouts are involved); here `main` runs them
//! so that CI checks them: `cargo run --example testing`.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use palisade::core::{BoxError, RequestBody};
use palisade::mock::{Fault, MockUpstream, Reply};
use palisade::preset::{LlmStack, StackConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The application under test: one handler, the stack in its state.
fn app(llm: LlmStack) -> Router {
    Router::new()
        .route("/summary", post(summary))
        .with_state(llm)
}

/// `POST /summary` with a text body: a one-line summary from the LLM,
/// streamed from it and collected; 502 with the reason when the call fails.
async fn summary(State(llm): State<LlmStack>, text: String) -> (StatusCode, String) {
    let body = json!({
        "model": "mock",
        "stream": true,
        "messages": [{"role": "user", "content": text}],
    });
    let Ok(req) = Request::post("/chat/completions").body(RequestBody::json(&body)) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "request".into());
    };
    let res = match llm.oneshot(req).await {
        Ok(res) => res,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("the LLM failed: {e}")),
    };
    // A failure after the first byte arrives here, as a body error.
    match res.into_body().collect().await {
        Ok(all) => (StatusCode::OK, deltas(&all.to_bytes())),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("the LLM stream broke: {e}"),
        ),
    }
}

/// The text of an OpenAI stream's deltas.
fn deltas(sse: &[u8]) -> String {
    String::from_utf8_lossy(sse)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// Calls the app in process (no socket either): `tower::ServiceExt::oneshot`
/// on the router.
async fn call(app: &Router, text: &str) -> Result<(StatusCode, String), BoxError> {
    let req = Request::post("/summary").body(Body::from(text.to_owned()))?;
    let res = app.clone().oneshot(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The stack the app uses in production, over `inner` (in tests: the mock).
fn stack_over(mock: MockUpstream) -> Result<LlmStack, BoxError> {
    StackConfig::openai()
        .no_key()
        .base_delay(Duration::from_millis(1))
        .build_over(mock)
}

/// 1a. A 429 with a wait hint is retried by the stack: the handler answers.
async fn a_429_is_retried_before_the_handler_sees_it() -> Result<(), BoxError> {
    let mock = MockUpstream::new();
    mock.push(Reply::status(429).header("retry-after-ms", "5"));
    let app = app(stack_over(mock.clone())?);
    let (status, text) = call(&app, "retried once").await?;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "retried once"));
    assert_eq!(mock.request_count(), 2);
    Ok(())
}

/// 1b. A stream that resets after two tokens: the handler's 502, with the
///     reason, and no retry (an answer had begun).
async fn a_stream_reset_midway_is_the_handlers_502() -> Result<(), BoxError> {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(2, Fault::Reset));
    let app = app(stack_over(mock.clone())?);
    let (status, text) = call(&app, "one two three four").await?;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{text}");
    assert!(text.contains("stream broke"), "{text}");
    assert_eq!(mock.request_count(), 1, "nothing is replayed mid-stream");
    Ok(())
}

/// 2. tower-test: see exactly what the stack sends, answer by hand.
async fn what_the_stack_sends_can_be_asserted_with_tower_test() -> Result<(), BoxError> {
    let (service, mut handle) =
        tower_test::mock::pair::<Request<RequestBody>, http::Response<RequestBody>>();
    let llm = StackConfig::openai().no_key().build_over(service)?;
    let app = app(llm);
    let answering = tokio::spawn(async move {
        let (req, reply) = handle.next_request().await.ok_or("no request")?;
        // What went out: the path, the JSON body, the trace header.
        assert_eq!(req.uri().path(), "/chat/completions");
        let sent: Value = serde_json::from_slice(req.body().as_bytes())?;
        assert_eq!(sent["messages"][0]["content"], "by hand");
        assert!(req.headers().contains_key("traceparent"));
        let sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"answered by hand\"}}]}\n\ndata: [DONE]\n\n";
        reply.send_response(
            http::Response::builder()
                .header("content-type", "text/event-stream")
                .body(RequestBody::from(sse))?,
        );
        Ok::<_, BoxError>(())
    });
    let (status, text) = call(&app, "by hand").await?;
    answering.await??;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::OK, "answered by hand")
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    a_429_is_retried_before_the_handler_sees_it().await?;
    println!("ok: a 429 is retried before the handler sees it");
    a_stream_reset_midway_is_the_handlers_502().await?;
    println!("ok: a stream reset midway is the handler's 502");
    what_the_stack_sends_can_be_asserted_with_tower_test().await?;
    println!("ok: what the stack sends, asserted with tower-test");
    Ok(())
}
