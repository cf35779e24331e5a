//! palisade-providers: documented payloads round-trip exactly; streams decode,
//! aggregate, and report in-band errors and truncation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use http_body_util::Full;
use palisade_core::ErrorKind;
use palisade_core::classify::{ClassifyOutcome, LlmClassifier, Outcome};
use palisade_mock::{Fault, MockUpstream, Reply};
use palisade_providers::anthropic::{self, StreamEvent};
use palisade_providers::openai;
use palisade_providers::{
    AnthropicAggregator, OpenAiAggregator, OpenAiItem, decode_anthropic, decode_openai,
};
use palisade_sse::{Decoder, Event, EventStream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Deserialize, serialize: the same JSON value.
fn round_trip<T: DeserializeOwned + Serialize>(v: Value) {
    let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e} in {v}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(back, v);
}

#[test]
fn openai_documented_payloads_round_trip() {
    round_trip::<openai::ChatRequest>(json!({
        "model": "gpt-4.1",
        "messages": [
            {"role": "developer", "content": "You are a helpful assistant."},
            {"role": "user", "content": [
                {"type": "text", "text": "What's in this image?"},
                {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_abc123", "type": "function",
                 "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Boston, MA\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temperature\": 22}"}
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
            "strict": true
        }}],
        "tool_choice": "auto",
        "temperature": 1,
        "top_p": 0.30000000000000004,
        "max_completion_tokens": 256,
        "stream": true,
        "stream_options": {"include_usage": true},
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
        "seed": 42,
        "logit_bias": {"50256": -100},
        "user": "user-1234",
        "metadata": null
    }));
    round_trip::<openai::ChatCompletion>(json!({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4.1-2025-04-14",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I assist you today?", "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default",
        "system_fingerprint": null
    }));
    round_trip::<openai::ChatChunk>(json!({
        "id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
        "model": "gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]
    }));
    round_trip::<openai::ChatChunk>(json!({
        "id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
        "model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
    }));
    round_trip::<openai::ChatChunk>(json!({
        "id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}]}, "logprobs": null, "finish_reason": null}],
        "usage": null
    }));
    round_trip::<openai::ErrorBody>(json!({
        "error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                  "param": null, "code": "invalid_api_key"}
    }));
}

#[test]
fn anthropic_documented_payloads_round_trip() {
    round_trip::<anthropic::MessagesRequest>(json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": "EqQBCgIYAhIM"},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18 C, cloudy"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
            ]}
        ],
        "tools": [{"name": "get_weather", "description": "Get the weather",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "temperature": 1,
        "stop_sequences": ["\n\nHuman:"],
        "metadata": {"user_id": "u-1"},
        "stream": false
    }));
    round_trip::<anthropic::MessagesResponse>(json!({
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hi! My name is Claude."}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 2095, "output_tokens": 503,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "service_tier": "standard"}
    }));
    round_trip::<anthropic::ErrorBody>(json!({
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"
    }));
}

/// Every Anthropic stream event type, as documented, decoded and encoded
/// back to the same JSON.
#[test]
fn anthropic_stream_events_round_trip_and_decode() {
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-1", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me solve this step by step."}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Okay, let's check."}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"location\": \"San Fra"}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "ncisco, CA\"}"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 89}}),
        json!({"type": "message_stop"}),
    ];
    let mut agg = AnthropicAggregator::new();
    for v in &events {
        let ev = StreamEvent::from_data(v.to_string().as_bytes()).unwrap();
        assert_eq!(&ev.to_value(), v, "{}", ev.kind());
        agg.push(ev);
    }
    let msg = agg.finish().unwrap();
    assert_eq!(msg.stop_reason.get().unwrap(), "tool_use");
    assert_eq!(msg.usage.output_tokens.get(), Some(&89));
    assert_eq!(msg.usage.input_tokens.get(), Some(&25));
    assert_eq!(msg.content.len(), 3);
    assert_eq!(
        msg.content[0].thinking.get().unwrap(),
        "Let me solve this step by step."
    );
    assert!(msg.content[0].signature.get().unwrap().starts_with("EqQB"));
    assert_eq!(msg.content[1].text.get().unwrap(), "Okay, let's check.");
    assert_eq!(
        msg.content[2].input.get().unwrap(),
        &json!({"location": "San Francisco, CA"})
    );

    // Fields this crate does not model, on known events, are kept: a proxy
    // re-encoding the stream loses nothing (Anthropic's `message_delta`
    // carries `context_management` with context editing).
    let with_more = [
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 1, "output_tokens": 1}}, "new_top_level": {"a": 1}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}, "new_top_level": true}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}, "new_top_level": [1]}),
        json!({"type": "content_block_stop", "index": 0, "new_top_level": "x"}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 3}, "context_management": {"applied_edits": []}}),
        json!({"type": "message_stop", "new_top_level": 2}),
        json!({"type": "ping", "new_top_level": null}),
    ];
    for v in &with_more {
        let ev = StreamEvent::from_data(v.to_string().as_bytes()).unwrap();
        assert!(!matches!(ev, StreamEvent::Unknown { .. }), "{v}");
        assert_eq!(&ev.to_value(), v, "{}", ev.kind());
    }

    let unknown = StreamEvent::from_data(br#"{"type":"brand_new_event","x":1}"#).unwrap();
    assert_eq!(unknown.kind(), "brand_new_event");
    assert_eq!(
        unknown.to_value(),
        json!({"type": "brand_new_event", "x": 1})
    );
}

fn events_of(stream: &str) -> Vec<Event> {
    let mut d = Decoder::new();
    d.push(Bytes::from(stream.to_owned()));
    std::iter::from_fn(|| d.next_event().unwrap()).collect()
}

#[test]
fn openai_tool_calls_arrive_in_pieces_and_are_reassembled() {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        )
    };
    let stream = [
        chunk(json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"loc"}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "ation\":\"Paris\"}"}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    let mut agg = OpenAiAggregator::new();
    for ev in events_of(&stream) {
        agg.push(decode_openai(&ev).unwrap());
    }
    let done = agg.finish().unwrap();
    let choice = &done.choices[0];
    assert_eq!(choice.finish_reason.get().unwrap(), "tool_calls");
    let calls = choice.message.tool_calls.get().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].id.get().unwrap(), "call_a");
    let f = calls[0].function.get().unwrap();
    assert_eq!(f.name.get().unwrap(), "get_weather");
    assert_eq!(f.arguments.get().unwrap(), "{\"location\":\"Paris\"}");
    assert_eq!(
        calls[1].function.get().unwrap().name.get().unwrap(),
        "get_time"
    );
    // The aggregate is a valid chat completion.
    let v = serde_json::to_value(&done).unwrap();
    round_trip::<openai::ChatCompletion>(v);
}

fn chat(path: &str, text: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .body(Full::new(Bytes::from(
            json!({"model": "mock", "stream": true, "max_tokens": 50,
                   "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": text}]})
            .to_string(),
        )))
        .unwrap()
}

async fn mock_events(mock: &MockUpstream, path: &str, text: &str) -> Vec<Event> {
    let res = mock.clone().oneshot(chat(path, text)).await.unwrap();
    EventStream::new(res.into_body())
        .map(Result::unwrap)
        .collect()
        .await
}

#[tokio::test]
async fn mock_streams_aggregate_to_the_echo_with_usage() {
    let mock = MockUpstream::new();
    let mut agg = OpenAiAggregator::new();
    for ev in mock_events(&mock, "/v1/chat/completions", "the quick brown fox").await {
        agg.push(decode_openai(&ev).unwrap());
    }
    let done = agg.finish().unwrap();
    assert_eq!(
        done.choices[0].message.content.get().unwrap().text(),
        "the quick brown fox"
    );
    assert_eq!(done.usage.get().unwrap().completion_tokens, 4);

    let mut agg = AnthropicAggregator::new();
    for ev in mock_events(&mock, "/v1/messages", "jumps over the dog").await {
        agg.push(decode_anthropic(&ev).unwrap());
    }
    let msg = agg.finish().unwrap();
    assert_eq!(msg.content[0].text.get().unwrap(), "jumps over the dog");
    assert_eq!(msg.usage.output_tokens.get(), Some(&4));
    assert_eq!(msg.stop_reason.get().unwrap(), "end_turn");
}

#[tokio::test]
async fn inband_errors_are_typed_and_count_as_upstream_failures() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(1, Fault::InbandError));
    mock.push(Reply::echo().fault_after(1, Fault::InbandError));

    let evs = mock_events(&mock, "/v1/messages", "a b").await;
    let err = evs
        .iter()
        .map(decode_anthropic)
        .find_map(Result::err)
        .expect("an in-band error");
    let inband = err.inband().unwrap();
    assert_eq!(inband.kind(), "overloaded_error");
    assert_eq!(inband.status().as_u16(), 529);
    let boxed: palisade_core::BoxError = err.into();
    assert_eq!(ErrorKind::of(&*boxed), Some(ErrorKind::UpstreamStatus));
    let class = LlmClassifier::new().classify(Outcome::Error(&*boxed));
    assert!(class.is_failure() && class.reason().is_overloaded());

    let evs = mock_events(&mock, "/v1/chat/completions", "a b").await;
    let err = evs.iter().map(decode_openai).find_map(Result::err).unwrap();
    assert_eq!(err.inband().unwrap().status().as_u16(), 500);
    assert!(err.to_string().contains("mid-stream"), "{err}");
}

#[tokio::test]
async fn truncated_and_malformed_streams_are_reported() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(1, Fault::Truncate));
    mock.push(Reply::echo().fault_after(1, Fault::Truncate));
    mock.push(Reply::echo().fault_after(1, Fault::MalformedJson));

    let mut agg = OpenAiAggregator::new();
    for ev in mock_events(&mock, "/v1/chat/completions", "a b c").await {
        agg.push(decode_openai(&ev).unwrap());
    }
    assert!(agg.finish().unwrap_err().is_truncated());

    let mut agg = AnthropicAggregator::new();
    for ev in mock_events(&mock, "/v1/messages", "a b c").await {
        agg.push(decode_anthropic(&ev).unwrap());
    }
    let err = agg.finish().unwrap_err();
    assert!(
        err.is_truncated() && err.to_string().contains("message_stop"),
        "{err}"
    );

    let evs = mock_events(&mock, "/v1/chat/completions", "a b c").await;
    let results: Vec<_> = evs.iter().map(decode_openai).collect();
    assert_eq!(
        results
            .iter()
            .filter(|r| r.as_ref().is_err_and(|e| e.is_malformed()))
            .count(),
        1
    );
    assert!(
        matches!(results.last().unwrap(), Ok(OpenAiItem::Done)),
        "decoding went on"
    );
}
