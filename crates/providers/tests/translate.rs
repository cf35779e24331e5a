//! palisade-providers: translation between OpenAI and Anthropic, streams
//! included, checked through the SSE encoders, the decoder and the
//! aggregators.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use http_body_util::Full;
use palisade_mock::MockUpstream;
use palisade_providers::anthropic::{self, StreamEvent};
use palisade_providers::openai;
use palisade_providers::translate::{
    AnthropicToOpenAiStream, OpenAiToAnthropicStream, anthropic_request_to_openai,
    anthropic_response_to_openai, anthropic_sse, openai_request_to_anthropic,
    openai_response_to_anthropic, openai_sse,
};
use palisade_providers::{
    AnthropicAggregator, OpenAiAggregator, OpenAiItem, decode_anthropic, decode_openai,
};
use palisade_sse::{Decoder, EventStream};
use serde_json::{Value, json};
use tower::ServiceExt;

fn openai_req(v: Value) -> openai::ChatRequest {
    serde_json::from_value(v).unwrap()
}

#[test]
fn openai_request_to_anthropic_and_back() {
    let req = openai_req(json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"png\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a picture"},
            {"role": "user", "content": "Thanks"}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up",
                   "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
        "tool_choice": "required",
        "temperature": 1.5,
        "top_p": 0.9,
        "stop": "END",
        "stream": true
    }));
    let a = openai_request_to_anthropic(&req).unwrap();
    assert_eq!(a.system.get().unwrap(), "Be brief.");
    assert_eq!(a.max_tokens, 4096, "Anthropic needs a budget");
    assert_eq!(
        a.temperature.get().unwrap().as_f64(),
        Some(1.0),
        "clamped to 0..1"
    );
    assert_eq!(a.stop_sequences.get().unwrap(), &["END".to_owned()]);
    assert_eq!(a.tool_choice.get().unwrap(), &json!({"type": "any"}));
    assert_eq!(a.extra["top_p"], json!(0.9));
    let tools = a.tools.get().unwrap();
    assert_eq!(tools[0].name, "lookup");
    assert_eq!(tools[0].input_schema.get().unwrap()["type"], "object");
    let roles: Vec<&str> = a.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "user"], "alternating turns");
    let anthropic::MessageContent::Blocks(first) = &a.messages[0].content else {
        panic!("blocks")
    };
    assert_eq!(first[0].text.get().unwrap(), "What is this?");
    assert_eq!(first[1].kind, "image");
    assert_eq!(first[1].extra["source"]["type"], "base64");
    assert_eq!(first[1].extra["source"]["media_type"], "image/png");
    let anthropic::MessageContent::Blocks(call) = &a.messages[1].content else {
        panic!("blocks")
    };
    assert_eq!(call[0].kind, "tool_use");
    assert_eq!(call[0].input.get().unwrap(), &json!({"q": "png"}));
    let anthropic::MessageContent::Blocks(result) = &a.messages[2].content else {
        panic!("blocks")
    };
    assert_eq!(result[0].kind, "tool_result");
    assert_eq!(result[0].tool_use_id.get().unwrap(), "call_1");
    assert_eq!(result[1].text.get().unwrap(), "Thanks");

    // And back: the conversation survives.
    let back = anthropic_request_to_openai(&a);
    let roles: Vec<&str> = back.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
    let call = &back.messages[2].tool_calls.get().unwrap()[0];
    let args: Value =
        serde_json::from_str(call.function.get().unwrap().arguments.get().unwrap()).unwrap();
    assert_eq!(args, json!({"q": "png"}));
    assert_eq!(back.messages[3].tool_call_id.get().unwrap(), "call_1");
    assert_eq!(back.tool_choice.get().unwrap(), &json!("required"));
    assert_eq!(
        back.stream_options.get().unwrap(),
        &json!({"include_usage": true})
    );
    let Some(openai::Content::Parts(parts)) = back.messages[1].content.get() else {
        panic!("parts")
    };
    assert_eq!(
        parts[1].extra["image_url"]["url"],
        "data:image/png;base64,iVBORw0KGgo="
    );
}

#[test]
fn tool_arguments_that_are_not_json_are_an_error() {
    let req = openai_req(json!({"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
          "function": {"name": "f", "arguments": "{not json"}}]}]}));
    let err = openai_request_to_anthropic(&req).unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");
}

#[test]
fn responses_translate_both_ways() {
    let a: anthropic::MessagesResponse = serde_json::from_value(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5}
    }))
    .unwrap();
    let o = anthropic_response_to_openai(&a);
    let c = &o.choices[0];
    assert_eq!(c.finish_reason.get().unwrap(), "tool_calls");
    assert_eq!(c.message.content.get().unwrap().text(), "Let me check.");
    let call = &c.message.tool_calls.get().unwrap()[0];
    assert_eq!(call.id.get().unwrap(), "toolu_1");
    assert_eq!(
        o.usage.get().unwrap().total_tokens,
        palisade_providers::Maybe::Present(15)
    );

    let back = openai_response_to_anthropic(&o).unwrap();
    assert_eq!(back.stop_reason.get().unwrap(), "tool_use");
    assert_eq!(back.content.len(), 2);
    assert_eq!(
        back.content[1].input.get().unwrap(),
        &json!({"city": "Oslo"})
    );
    assert_eq!(back.usage.output_tokens.get(), Some(&5));
}

fn stream_req(path: &str, text: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .body(Full::new(Bytes::from(
            json!({"model": "mock", "stream": true, "max_tokens": 50,
                   "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": text}]})
            .to_string(),
        )))
        .unwrap()
}

fn decode_all(bytes: Bytes) -> Vec<palisade_sse::Event> {
    let mut d = Decoder::new();
    d.push(bytes);
    std::iter::from_fn(|| d.next_event().unwrap()).collect()
}

#[tokio::test]
async fn an_openai_stream_served_as_anthropic_events() {
    let mock = MockUpstream::new();
    let res = mock
        .oneshot(stream_req(
            "/v1/chat/completions",
            "fallback works both ways",
        ))
        .await
        .unwrap();
    let mut tr = OpenAiToAnthropicStream::new();
    let mut wire = Vec::new();
    let mut events = EventStream::new(res.into_body());
    while let Some(ev) = events.next().await {
        for out in tr.push(decode_openai(&ev.unwrap()).unwrap()) {
            wire.extend_from_slice(&anthropic_sse(&out));
        }
    }
    // What an Anthropic client would read:
    let mut agg = AnthropicAggregator::new();
    for ev in decode_all(Bytes::from(wire)) {
        agg.push(decode_anthropic(&ev).unwrap());
    }
    let msg = agg.finish().unwrap();
    assert_eq!(
        msg.content[0].text.get().unwrap(),
        "fallback works both ways"
    );
    assert_eq!(msg.stop_reason.get().unwrap(), "end_turn");
    assert_eq!(msg.usage.output_tokens.get(), Some(&4));
}

#[tokio::test]
async fn an_anthropic_stream_served_as_openai_chunks() {
    let mock = MockUpstream::new();
    let res = mock
        .oneshot(stream_req("/v1/messages", "one two three"))
        .await
        .unwrap();
    let mut tr = AnthropicToOpenAiStream::new(true);
    let mut wire = Vec::new();
    let mut events = EventStream::new(res.into_body());
    while let Some(ev) = events.next().await {
        for out in tr.push(decode_anthropic(&ev.unwrap()).unwrap()) {
            wire.extend_from_slice(&openai_sse(&out));
        }
    }
    let mut agg = OpenAiAggregator::new();
    for ev in decode_all(Bytes::from(wire)) {
        agg.push(decode_openai(&ev).unwrap());
    }
    let done = agg.finish().unwrap();
    assert_eq!(
        done.choices[0].message.content.get().unwrap().text(),
        "one two three"
    );
    assert_eq!(done.choices[0].finish_reason.get().unwrap(), "stop");
    let usage = done.usage.get().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 3));
}

#[test]
fn a_streamed_tool_call_survives_translation_there_and_back() {
    let anthropic_events = [
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-x", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 7, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"location\": \"San Fra"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "ncisco, CA\"}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 30}}),
        json!({"type": "message_stop"}),
    ];
    let mut to_openai = AnthropicToOpenAiStream::new(true);
    let items: Vec<OpenAiItem> = anthropic_events
        .iter()
        .flat_map(|v| to_openai.push(StreamEvent::from_data(v.to_string().as_bytes()).unwrap()))
        .collect();
    let mut agg = OpenAiAggregator::new();
    for i in items.clone() {
        agg.push(i);
    }
    let done = agg.finish().unwrap();
    let call = &done.choices[0].message.tool_calls.get().unwrap()[0];
    assert_eq!(call.id.get().unwrap(), "toolu_9");
    let f = call.function.get().unwrap();
    assert_eq!(f.name.get().unwrap(), "get_weather");
    assert_eq!(
        f.arguments.get().unwrap(),
        "{\"location\": \"San Francisco, CA\"}"
    );
    assert_eq!(done.choices[0].finish_reason.get().unwrap(), "tool_calls");
    assert_eq!(done.usage.get().unwrap().completion_tokens, 30);

    // Back to Anthropic.
    let mut to_anthropic = OpenAiToAnthropicStream::new();
    let mut agg = AnthropicAggregator::new();
    for i in items {
        for ev in to_anthropic.push(i) {
            agg.push(ev);
        }
    }
    let msg = agg.finish().unwrap();
    assert_eq!(msg.stop_reason.get().unwrap(), "tool_use");
    assert_eq!(msg.content[0].text.get().unwrap(), "Checking.");
    assert_eq!(msg.content[1].id.get().unwrap(), "toolu_9");
    assert_eq!(
        msg.content[1].input.get().unwrap(),
        &json!({"location": "San Francisco, CA"})
    );
    assert_eq!(msg.usage.output_tokens.get(), Some(&30));
}

#[test]
fn parallel_tool_calls_false_is_disable_parallel_tool_use_both_ways() {
    let tools =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    // No tool_choice: Anthropic gets `auto` with the flag.
    let req = openai_req(
        json!({"model": "m", "parallel_tool_calls": false, "tools": tools,
        "messages": [{"role": "user", "content": "x"}]}),
    );
    let out = serde_json::to_value(openai_request_to_anthropic(&req).unwrap()).unwrap();
    assert_eq!(
        out["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    assert!(out.get("parallel_tool_calls").is_none(), "{out}");
    // A forced tool keeps its choice and gains the flag.
    let req = openai_req(
        json!({"model": "m", "parallel_tool_calls": false, "tools": tools,
        "tool_choice": "required", "messages": [{"role": "user", "content": "x"}]}),
    );
    let out = serde_json::to_value(openai_request_to_anthropic(&req).unwrap()).unwrap();
    assert_eq!(
        out["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    // true (the default) adds nothing.
    let req = openai_req(
        json!({"model": "m", "parallel_tool_calls": true, "tools": tools,
        "messages": [{"role": "user", "content": "x"}]}),
    );
    let out = serde_json::to_value(openai_request_to_anthropic(&req).unwrap()).unwrap();
    assert!(out.get("tool_choice").is_none(), "{out}");

    // And back.
    let req: anthropic::MessagesRequest = serde_json::from_value(json!({"model": "m",
        "max_tokens": 10, "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "messages": [{"role": "user", "content": "x"}]}))
    .unwrap();
    let out = serde_json::to_value(anthropic_request_to_openai(&req)).unwrap();
    assert_eq!(out["parallel_tool_calls"], false, "{out}");
    assert_eq!(out["tool_choice"], "auto");
}
