//! Tokens per minute: reservation from the estimate, reconciliation with the
//! reported usage when the answer is complete (paused time: the bucket does not
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

fn prompt(req: &Request<RequestBody>) -> u64 {
    tokens::estimate(&ParsedBody::parse(req.body().as_bytes()).unwrap()).prompt
}

/// An error status reporting no usage is refunded whole; a call cancelled
/// (its body dropped unread, or its future dropped before the answer)
/// keeps only what it can have cost — its prompt — and a body that failed
/// keeps its whole reservation.
#[tokio::test(start_paused = true)]
async fn refunds_for_error_statuses_cancelled_calls_and_none_for_failed_bodies() {
    let layer = TokenLimitLayer::per_minute(1_000).unwrap();
    let mock = MockUpstream::new();
    mock.push(Reply::status(503));
    let svc = layer.layer(mock.clone());
    let res = svc.clone().oneshot(chat(100, false)).await.unwrap();
    assert_eq!(res.status(), 503);
    res.into_body().collect().await.unwrap();
    assert_eq!(layer.bucket().available(), 1_000);

    // A body dropped unread: the output part is refunded.
    let req = chat(100, true);
    let (reserved, prompt_only) = (estimate(&req), prompt(&req));
    assert!(reserved >= prompt_only + 100);
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(layer.bucket().available(), 1_000 - reserved);
    drop(res);
    assert_eq!(layer.bucket().available(), 1_000 - prompt_only);

    // A future dropped before the answer: the same.
    let layer = TokenLimitLayer::per_minute(1_000).unwrap();
    mock.push(Reply::echo().delay_before_headers(std::time::Duration::from_secs(5)));
    let svc = layer.layer(mock.clone());
    let req = chat(100, true);
    let prompt_only = prompt(&req);
    let cut = tokio::time::timeout(
        std::time::Duration::from_millis(1),
        svc.clone().oneshot(req),
    )
    .await;
    assert!(cut.is_err(), "cancelled before the answer");
    assert_eq!(layer.bucket().available(), 1_000 - prompt_only);

    // A stream that breaks: nothing says what it cost; it is kept.
    let layer = TokenLimitLayer::per_minute(1_000).unwrap();
    mock.push(Reply::echo().fault_after(1, palisade_mock::Fault::Reset));
    let svc = layer.layer(mock);
    let req = chat(100, true);
    let reserved = estimate(&req);
    let res = svc.oneshot(req).await.unwrap();
    assert!(res.into_body().collect().await.is_err());
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

fn messages(max_tokens: u64, stream: bool) -> Request<RequestBody> {
    let body = format!(
        r#"{{"model":"mock","max_tokens":{max_tokens},"stream":{stream},"messages":[{{"role":"user","content":"alpha beta gamma"}}]}}"#
    );
    Request::post("/v1/messages")
        .body(RequestBody::from(body))
        .unwrap()
}

/// Reads `body` frame by frame until a frame holds `needle`, then drops it
/// (what most stream handlers do at the terminator). Returns the text read.
async fn read_until<B>(mut body: B, needle: &str) -> String
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut seen = String::new();
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            seen.push_str(&String::from_utf8_lossy(d));
        }
        if seen.contains(needle) {
            return seen;
        }
    }
    panic!("the body ended without {needle:?}: {seen}");
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_stops_at_the_terminator_settles_openai_and_anthropic() {
    for (req, terminator) in [
        (chat(200, true), "data: [DONE]"),
        (messages(200, true), "event: message_stop"),
    ] {
        let layer = TokenLimitLayer::per_minute(1_000).unwrap();
        let svc = layer.layer(MockUpstream::new());
        let reserved = estimate(&req);
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(layer.bucket().available(), 1_000 - reserved);
        let mut body = res.into_body();
        let text = read_until(&mut body, terminator).await;
        // Settled at the terminator, before the body's end was read …
        assert_eq!(layer.bucket().available(), 1_000 - 6, "{text}");
        // … and dropping it afterwards changes nothing.
        drop(body);
        assert_eq!(layer.bucket().available(), 1_000 - 6);
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_without_usage_settles_at_the_prompt_and_what_went_by() {
    let layer = TokenLimitLayer::per_minute(1_000).unwrap();
    let svc = layer.layer(MockUpstream::new());
    // No stream_options.include_usage: the stream reports no usage at all.
    let req = Request::post("/v1/chat/completions")
        .body(RequestBody::from(
            r#"{"model":"mock","max_tokens":500,"stream":true,"messages":[{"role":"user","content":"alpha beta gamma"}]}"#,
        ))
        .unwrap();
    let parsed = tokens::estimate(&ParsedBody::parse(req.body().as_bytes()).unwrap());
    let res = svc.oneshot(req).await.unwrap();
    let text = read_until(res.into_body(), "data: [DONE]").await;
    assert!(!text.contains("\"usage\""), "{text}");
    let events = text.matches("data: ").count() as u64;
    // The prompt estimate plus one token per event: far less than the
    // 500-token output budget that was reserved.
    assert_eq!(layer.bucket().available(), 1_000 - (parsed.prompt + events));
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_mid_stream_keeps_what_it_can_have_cost() {
    let layer = TokenLimitLayer::per_minute(1_000).unwrap();
    let svc = layer.layer(MockUpstream::new());
    let req = chat(200, true);
    let (reserved, prompt_only) = (estimate(&req), prompt(&req));
    let res = svc.oneshot(req).await.unwrap();
    let mut body = res.into_body();
    // One frame (the first event), then the caller is gone: the prompt and
    // that event are kept, the rest of the output budget refunded.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(String::from_utf8_lossy(&first).matches("data: ").count(), 1);
    drop(body);
    assert_eq!(layer.bucket().available(), 1_000 - (prompt_only + 1));
    assert!(prompt_only + 1 < reserved);
}

#[tokio::test(start_paused = true)]
async fn a_request_with_a_large_image_passes_a_30k_limit() {
    let layer = TokenLimitLayer::per_minute(30_000).unwrap();
    let mock = MockUpstream::new();
    let svc = layer.layer(mock.clone());
    let b64 = "iVBORw0KGgo".repeat(100_000); // ~1.1 MB of base64
    let body = format!(
        r#"{{"model":"mock","max_tokens":100,"messages":[{{"role":"user","content":[{{"type":"text","text":"what is this"}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{b64}"}}}}]}}]}}"#
    );
    let res = svc
        .oneshot(
            Request::post("/v1/chat/completions")
                .body(RequestBody::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_output_budget_in_any_number_shape_is_reserved() {
    let layer = TokenLimitLayer::per_minute(100_000).unwrap();
    let mock = MockUpstream::new();
    let svc = layer.layer(mock.clone());
    for max in ["1e300", "1.8e19", "18446744073709551616", "2e5"] {
        let body = format!(
            r#"{{"model":"mock","max_tokens":{max},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        let err = svc
            .clone()
            .oneshot(
                Request::post("/v1/chat/completions")
                    .body(RequestBody::from(body))
                    .unwrap(),
            )
            .await
            .unwrap_err();
        // Over the capacity: refused at once, never forwarded.
        assert_eq!(
            find::<RateLimited>(&*err).unwrap().retry_after(),
            None,
            "{max}"
        );
    }
    assert_eq!(mock.request_count(), 0);
}

/// An Anthropic-compatible server under a path of its own: the path names
/// no API, so without `api` no API is assumed (its usage is not read: the
/// call settles as an answer without usage, at the prompt's estimate plus
/// the answer's bytes / 4); with `api(Api::Messages)`, or the request
/// naming `Api::Messages` in its extensions, its usage is found and settled
/// exactly.
#[tokio::test(start_paused = true)]
async fn an_answer_is_read_as_the_api_set_for_the_layer() {
    use palisade_providers::Api;
    const ANSWER: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"mock","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":9,"output_tokens":4}}"#;
    const BODY: &str =
        r#"{"model":"mock","max_tokens":100,"messages":[{"role":"user","content":"alpha"}]}"#;
    let call = |layer: TokenLimitLayer, named: Option<Api>| async move {
        // An upstream that answers every path (the mock routes by path).
        let upstream = tower::service_fn(|_: Request<RequestBody>| async {
            http::Response::builder()
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    ANSWER.as_bytes(),
                )))
        });
        let mut req = Request::post("/llm").body(RequestBody::from(BODY)).unwrap();
        if let Some(api) = named {
            req.extensions_mut().insert(api);
        }
        let res = layer.layer(upstream).oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
        layer.bucket().available()
    };
    let layer = || TokenLimitLayer::per_minute(1_000).unwrap();
    assert_eq!(call(layer().api(Api::Messages), None).await, 1_000 - 13);
    // The request's own API wins over the layer's.
    let named = call(layer().api(Api::ChatCompletions), Some(Api::Messages)).await;
    assert_eq!(named, 1_000 - 13);
    // Nobody names one: not read, settled as an answer without usage.
    let prompt = tokens::estimate(&ParsedBody::parse(BODY.as_bytes()).unwrap()).prompt;
    let output = (ANSWER.len() as u64).div_ceil(tokens::BYTES_PER_TOKEN);
    assert_eq!(call(layer(), None).await, 1_000 - (prompt + output));
}
