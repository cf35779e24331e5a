//! The preset stack from `StackConfig`: its layers are all there, in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::Request;
use palisade::core::{ErrorKind, RateLimited, RequestBody, find};
use palisade::mock::{MockUpstream, Reply};
use palisade::preset::StackConfig;
use tower::ServiceExt;

fn chat(body: &str) -> Request<RequestBody> {
    Request::post("/chat/completions")
        .body(RequestBody::from(body.to_owned()))
        .unwrap()
}

const OK: &str =
    r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hello preset"}]}"#;

#[tokio::test(start_paused = true)]
async fn schema_first_then_retry_over_the_upstream() {
    let mock = MockUpstream::new();
    let stack = StackConfig::openai()
        .no_key()
        .base_delay(Duration::from_millis(10))
        .build_over(mock.clone())
        .unwrap();
    let err = stack
        .clone()
        .oneshot(chat(
            r#"{"model":"m","messages":[{"role":"user","content":7}]}"#,
        ))
        .await
        .unwrap_err();
    assert_eq!(ErrorKind::of(&*err), Some(ErrorKind::InvalidRequest));
    assert_eq!(mock.request_count(), 0, "a bad request is never sent");

    mock.push(Reply::status(503));
    let res = stack.oneshot(chat(OK)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(mock.request_count(), 2, "one retry after the 503");
}

#[tokio::test(start_paused = true)]
async fn tokens_per_minute_reserve_prompt_plus_max_tokens() {
    let mock = MockUpstream::new();
    let stack = StackConfig::openai()
        .no_key()
        .tokens_per_minute(100)
        .build_over(mock.clone())
        .unwrap();
    // About 10 tokens of prompt and framing, plus max_tokens 10: fits.
    assert_eq!(stack.clone().oneshot(chat(OK)).await.unwrap().status(), 200);
    // max_tokens 1000 can never fit a 100-token bucket: refused at once.
    let big = r#"{"model":"m","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    let err = stack.clone().oneshot(chat(big)).await.unwrap_err();
    let limited = find::<RateLimited>(&*err).expect("RateLimited");
    assert_eq!(limited.retry_after(), None, "{err}");
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_handle_sees_the_stacks_circuit() {
    let mock = MockUpstream::new();
    mock.set_default(Reply::status(500));
    let stack = StackConfig::openai()
        .no_key()
        .max_attempts(1)
        .minimum_calls(2)
        .window(2)
        .build_over(mock.clone())
        .unwrap();
    for _ in 0..2 {
        let res = stack.clone().oneshot(chat(OK)).await.unwrap();
        assert_eq!(res.status(), 500);
    }
    assert_eq!(stack.breaker().state(), palisade::breaker::State::Open);
    let err = stack.clone().oneshot(chat(OK)).await.unwrap_err();
    assert_eq!(ErrorKind::of(&*err), Some(ErrorKind::CircuitOpen));
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn the_preset_records_the_genai_metrics_with_a_meter() {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let stack = StackConfig::openai()
        .no_key()
        .metrics(&provider.meter("preset-test"))
        .build_over(MockUpstream::new())
        .unwrap();
    let res = stack.oneshot(chat(OK)).await.unwrap();
    http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap();
    provider.force_flush().unwrap();
    let names: Vec<String> = exporter
        .get_finished_metrics()
        .unwrap()
        .iter()
        .flat_map(|rm| rm.scope_metrics())
        .flat_map(|sm| sm.metrics())
        .map(|m| m.name().to_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n == "gen_ai.client.operation.duration")
            && names.iter().any(|n| n == "gen_ai.client.token.usage"),
        "{names:?}"
    );
}

/// A stack assembled by hand is an `LlmStack` too, and its breaker handle
/// is the one inside it.
#[tokio::test(start_paused = true)]
async fn a_hand_built_stack_wraps_as_an_llm_stack() {
    use palisade::breaker::{BreakerLayer, Window};
    use palisade::preset::LlmStack;
    use palisade::providers::Api;
    let mock = MockUpstream::new();
    mock.set_default(Reply::status(500));
    let breaker = BreakerLayer::builder()
        .window(Window::Count(2))
        .minimum_calls(2)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let svc = tower::ServiceBuilder::new()
        .layer(palisade::trace::TraceLayer::new())
        .layer(breaker)
        .service(mock.clone());
    let stack = LlmStack::new(svc, Api::ChatCompletions, handle);
    for _ in 0..2 {
        assert_eq!(stack.clone().oneshot(chat(OK)).await.unwrap().status(), 500);
    }
    assert_eq!(stack.breaker().state(), palisade::breaker::State::Open);
    let err = stack.clone().oneshot(chat(OK)).await.unwrap_err();
    assert_eq!(ErrorKind::of(&*err), Some(ErrorKind::CircuitOpen));
    assert_eq!(stack.api(), Api::ChatCompletions);
}

/// The breaker counts in-band errors through the event scan it shares with
/// the SSE-aware idle timeout inside it (one scan per response): streams
/// that end in an in-band error open the circuit, ones that do not keep it
/// closed.
#[tokio::test(start_paused = true)]
async fn the_breaker_sees_inband_errors_through_the_shared_scan() {
    use http_body_util::BodyExt;
    use palisade::mock::Fault;
    let stream =
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hello preset"}]}"#;
    let mock = MockUpstream::new();
    let stack = StackConfig::openai()
        .no_key()
        .max_attempts(1)
        .minimum_calls(2)
        .window(2)
        .build_over(mock.clone())
        .unwrap();
    for _ in 0..2 {
        let res = stack.clone().oneshot(chat(stream)).await.unwrap();
        assert_eq!(res.status(), 200);
        let _ = res.into_body().collect().await;
    }
    // A full window of clean streams: closed.
    assert_eq!(stack.breaker().state(), palisade::breaker::State::Closed);
    mock.push(Reply::words(3).fault_after(1, Fault::InbandError));
    let res = stack.clone().oneshot(chat(stream)).await.unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.into_body().collect().await;
    // One in-band error in a window of two reaches the 0.5 failure rate.
    assert_eq!(stack.breaker().state(), palisade::breaker::State::Open);
}

/// A caller of the stack (the gateway's relay) takes the stream's events
/// from the decoding the stack already does, as the token limiter does: the
/// same events as decoding the body again, and the stream gone over once.
#[tokio::test(start_paused = true)]
async fn a_caller_takes_the_events_the_stack_already_decodes() {
    use futures_util::StreamExt;
    use palisade::sse::{EventStream, SharedEvents, SharedScan};
    let stream = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello shared events"}]}"#;
    let stack = StackConfig::openai()
        .no_key()
        .tokens_per_minute(100_000)
        .build_over(MockUpstream::new())
        .unwrap();
    let texts = |data: Vec<bytes::Bytes>| -> (String, Option<bytes::Bytes>) {
        let mut text = String::new();
        for d in &data {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(d)
                && let Some(t) = v
                    .pointer("/choices/0/delta/content")
                    .and_then(|t| t.as_str())
            {
                text.push_str(t);
            }
        }
        (text, data.last().cloned())
    };

    let res = stack.clone().oneshot(chat(stream)).await.unwrap();
    let (parts, body) = res.into_parts();
    let sub = SharedScan::subscribe(&parts.extensions, 1 << 20).expect("the stack decodes it");
    let shared: Vec<_> = SharedEvents::new(body, sub)
        .map(|ev| ev.unwrap().data().clone())
        .collect()
        .await;

    let res = stack.oneshot(chat(stream)).await.unwrap();
    let own: Vec<_> = EventStream::new(res.into_body())
        .map(|ev| ev.unwrap().data().clone())
        .collect()
        .await;
    assert_eq!(shared.len(), own.len());
    let (text, last) = texts(shared);
    assert_eq!(
        (text.as_str(), last.as_deref()),
        ("hello shared events", Some(&b"[DONE]"[..]))
    );
    assert_eq!(texts(own).0, "hello shared events");
}
