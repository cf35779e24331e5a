//! OpenAI's Responses API, the whole API in one module: its wire types
//! (request, response, output items, stream events) here, checked against
//! the openai-python SDK's types (`src/openai/types/responses/`); its typed
//! stream events and their decoding ([`Event`], [`decode_responses`]); and
//! its reader and writer of the neutral model ([`dialect::Responses`]). Its
//! description is its arms of [`Api`](crate::Api)'s exhaustive methods.
//!
//! Like the chat completions and Anthropic types, every type keeps what it
//! does not model in `extra` and optional fields remember absent versus
//! `null` ([`Maybe`]): deserializing and serializing gives back the same
//! JSON value. Items and the wire form of events ([`StreamEvent`]) are flat
//! structs with their `type` in `kind` (the API adds item and event types
//! often; an unknown one reads like a known one, its fields in `extra`);
//! [`StreamEvent::typed`] gives an event by kind, [`Event`], with each
//! kind's own fields.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::maybe::Maybe;

pub mod dialect;
mod stream;

pub use stream::{Event, PartOf, ResponseState, TextOf, decode_responses};

/// `POST /v1/responses` request body.
///
/// ```
/// use palisade_providers::responses::{Input, ResponsesRequest};
///
/// let req: ResponsesRequest = serde_json::from_str(
///     r#"{"model":"gpt-4.1","input":"Hello","store":false}"#).unwrap();
/// assert!(matches!(req.input.get(), Some(Input::Text(t)) if t == "Hello"));
/// assert_eq!(req.extra["store"], false);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponsesRequest {
    /// The model (optional with a stored `prompt`).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub model: Maybe<String>,
    /// Text, or a list of input items.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub input: Maybe<Input>,
    /// System instructions: a string, or a list of input items.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub instructions: Maybe<Value>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub stream: Maybe<bool>,
    /// The output budget, reasoning included.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub max_output_tokens: Maybe<u64>,
    /// Tools: functions (`{"type":"function","name",…}`, flat) and
    /// built-in tools (`web_search`, `file_search`, …).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub tools: Maybe<Vec<Value>>,
    /// The response this one continues (stored state).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub previous_response_id: Maybe<String>,
    /// Everything else (`temperature`, `tool_choice`, `reasoning`, `text`,
    /// `store`, `include`, …), as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A request's `input`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Input {
    /// A user message's text.
    Text(String),
    /// Input items: messages, function calls and their outputs, reasoning,
    /// item references, ….
    Items(Vec<Item>),
}

/// An input or output item: a `message`, `function_call`,
/// `function_call_output`, `reasoning`, `item_reference`, a built-in
/// tool's call, …. A message given as `{"role", "content"}` has no
/// `type`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The item type (absent for a message written without one).
    #[serde(rename = "type", default, skip_serializing_if = "Maybe::is_absent")]
    pub kind: Maybe<String>,
    /// The item's id (`msg_…`, `fc_…`, `rs_…`).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub id: Maybe<String>,
    /// `in_progress`, `completed`, `incomplete`.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub status: Maybe<String>,
    /// A message's `user`, `assistant`, `system` or `developer`.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub role: Maybe<String>,
    /// A message's content: text, or parts (`input_text`, `input_image`,
    /// `output_text`, `refusal`, …).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub content: Maybe<Value>,
    /// A function call's id, which its output names.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub call_id: Maybe<String>,
    /// A function call's function.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub name: Maybe<String>,
    /// A function call's arguments (JSON text).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub arguments: Maybe<String>,
    /// A function call output's result: text, or content parts.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub output: Maybe<Value>,
    /// A reasoning item's summaries (`summary_text` parts).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub summary: Maybe<Vec<Value>>,
    /// A reasoning item's encrypted reasoning (with
    /// `include: ["reasoning.encrypted_content"]`).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub encrypted_content: Maybe<String>,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Item {
    /// The item's type: `message` when it has none (a message written as
    /// `{"role", "content"}`).
    pub fn kind(&self) -> &str {
        self.kind.get().map_or("message", String::as_str)
    }
}

/// A response object (`"object": "response"`): the JSON answer, and the
/// `response` of the `response.*` lifecycle events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// `resp_…`.
    pub id: String,
    /// `response`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds (a number, possibly fractional).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub created_at: Maybe<Number>,
    /// `completed`, `failed`, `in_progress`, `cancelled`, `queued`,
    /// `incomplete`.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub status: Maybe<String>,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The output items.
    #[serde(default)]
    pub output: Vec<Item>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub usage: Maybe<Usage>,
    /// Why it failed (`{"code", "message"}`).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub error: Maybe<Value>,
    /// Why it is incomplete (`{"reason": "max_output_tokens" |
    /// "content_filter"}`).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub incomplete_details: Maybe<Value>,
    /// Everything else (`instructions`, `tools`, `reasoning`, `text`, …),
    /// as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A response's token counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens, cached ones included.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens, reasoning included.
    #[serde(default)]
    pub output_tokens: u64,
    /// Their sum.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub total_tokens: Maybe<u64>,
    /// Everything else (`input_tokens_details.cached_tokens`,
    /// `output_tokens_details.reasoning_tokens`), as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Usage {
    /// `input_tokens_details.cached_tokens`, 0 when absent.
    pub fn cached_tokens(&self) -> u64 {
        self.extra
            .get("input_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

/// One stream event: `response.created`, `response.output_item.added`,
/// `response.output_text.delta`, `response.function_call_arguments.delta`,
/// `response.reasoning_summary_text.delta`, `response.completed`,
/// `response.failed`, `error`, …; each numbered by `sequence_number`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// The event type (the same as the SSE `event:` name).
    #[serde(rename = "type")]
    pub kind: String,
    /// The event's place in the stream, from 0.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub sequence_number: Maybe<u64>,
    /// The response, in `response.created`, `.in_progress`, `.completed`,
    /// `.incomplete`, `.failed`.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub response: Maybe<Response>,
    /// The item, in `response.output_item.added` / `.done`.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub item: Maybe<Item>,
    /// The output item the event is about.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub output_index: Maybe<u64>,
    /// Its id.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub item_id: Maybe<String>,
    /// The content part the event is about.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub content_index: Maybe<u64>,
    /// The reasoning summary part the event is about.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub summary_index: Maybe<u64>,
    /// More text, refusal, reasoning or function arguments (`*.delta`).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub delta: Maybe<String>,
    /// An `error` event's message.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub message: Maybe<String>,
    /// An `error` event's code.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub code: Maybe<String>,
    /// Everything else (`part`, `text`, `arguments`, `logprobs`, …), as
    /// received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn round_trip<T: serde::de::DeserializeOwned + Serialize>(v: &Value) -> T {
        let t: T = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(&serde_json::to_value(&t).unwrap(), v);
        t
    }

    /// A response as the API documents it: reasoning, a message with an
    /// annotation, a function call; every field kept.
    #[test]
    fn a_documented_response_round_trips() {
        let v = json!({
            "id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41",
            "object": "response", "created_at": 1741476777, "status": "completed",
            "error": null, "incomplete_details": null, "instructions": null,
            "max_output_tokens": null, "model": "o4-mini-2025-04-16",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Checking."}],
                 "encrypted_content": "gAAAA"},
                {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "It is sunny.",
                              "annotations": [{"type": "url_citation", "start_index": 0, "end_index": 2,
                                               "url": "https://example.com", "title": "x"}]}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
                 "arguments": "{\"city\":\"Oslo\"}", "status": "completed"},
                {"type": "web_search_call", "id": "ws_1", "status": "completed",
                 "action": {"type": "search", "query": "weather"}},
            ],
            "parallel_tool_calls": true, "previous_response_id": null,
            "reasoning": {"effort": "medium", "summary": "auto"}, "store": true,
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "top_p": 1.0, "truncation": "disabled",
            "usage": {"input_tokens": 328, "input_tokens_details": {"cached_tokens": 128},
                      "output_tokens": 52, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 380},
            "user": null, "metadata": {},
        });
        let r: Response = round_trip(&v);
        assert_eq!(r.output.len(), 4);
        assert_eq!(r.output[2].kind(), "function_call");
        assert_eq!(r.output[2].arguments.get().unwrap(), "{\"city\":\"Oslo\"}");
        assert_eq!(r.output[3].extra["action"]["query"], "weather");
        assert_eq!(r.usage.get().unwrap().cached_tokens(), 128);
    }

    /// Requests from the SDK's tests and the API reference.
    #[test]
    fn requests_round_trip() {
        for v in [
            json!({"model": "gpt-4o", "input": "Tell me a three sentence bedtime story about a unicorn."}),
            json!({"model": "gpt-4.1", "instructions": [{"role": "developer", "content": "Be brief."}],
                   "input": [
                       {"role": "user", "content": [
                           {"type": "input_text", "text": "what is in this image?"},
                           {"type": "input_image", "image_url": "https://example.com/a.jpg", "detail": "auto"}]},
                       {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
                       {"type": "function_call_output", "call_id": "call_1", "output": "{\"ok\":true}"},
                       {"type": "item_reference", "id": "msg_1"},
                   ],
                   "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": true},
                             {"type": "web_search_preview"}],
                   "tool_choice": {"type": "function", "name": "f"},
                   "reasoning": {"effort": "low"}, "include": ["reasoning.encrypted_content"],
                   "store": false, "stream": true, "max_output_tokens": 1024,
                   "previous_response_id": null, "prompt_cache_key": "k", "metadata": {"a": "b"}}),
        ] {
            let r: ResponsesRequest = round_trip(&v);
            assert!(r.input.get().is_some());
        }
    }

    /// Stream events of every family the translation reads, and one it does
    /// not know: all kept whole.
    #[test]
    fn stream_events_round_trip() {
        for v in [
            json!({"type": "response.created", "sequence_number": 0,
                   "response": {"id": "resp_1", "object": "response", "created_at": 1.5, "status": "in_progress",
                                "model": "m", "output": [], "usage": null}}),
            json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
                   "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f",
                            "arguments": "", "status": "in_progress"}}),
            json!({"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_1",
                   "output_index": 0, "content_index": 0, "delta": "Hi", "logprobs": [], "obfuscation": "ab"}),
            json!({"type": "response.reasoning_summary_text.delta", "sequence_number": 5, "item_id": "rs_1",
                   "output_index": 0, "summary_index": 0, "delta": "Hm"}),
            json!({"type": "response.function_call_arguments.done", "sequence_number": 6, "item_id": "fc_1",
                   "output_index": 1, "name": "f", "arguments": "{}"}),
            json!({"type": "error", "sequence_number": 7, "code": "server_error", "message": "boom", "param": null}),
            json!({"type": "response.image_generation_call.partial_image", "sequence_number": 8,
                   "output_index": 0, "item_id": "ig_1", "partial_image_index": 0, "partial_image_b64": "AAAA"}),
        ] {
            let e: StreamEvent = round_trip(&v);
            assert_eq!(
                e.sequence_number.get().copied(),
                v["sequence_number"].as_u64()
            );
        }
    }
}
