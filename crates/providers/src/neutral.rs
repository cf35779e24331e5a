//! The neutral model requests, answers and streams are translated through:
//! each API reads its own request into a [`Request`], its answer into an
//! [`Answer`], its stream into [`Delta`]s, and writes each out again — so N
//! APIs need 2N translators of each kind, not N × (N − 1). Each API's
//! reader and writer is its [`crate::dialect::Dialect`], in that API's
//! module of [`crate::dialect`]: chat completions' and Anthropic's are the
//! `from_openai` / `to_openai` and `from_anthropic` / `to_anthropic`
//! methods of these types and the stream types re-exported here
//! ([`FromOpenAiStream`], [`ToOpenAiStream`] from `dialect::chat`;
//! [`FromAnthropicStream`], [`ToAnthropicStream`] from
//! `dialect::messages`), which the pairwise functions of
//! [`crate::translate`] compose too. This module is the model alone.
//!
//! What is carried: the model, system prompts, user and assistant turns of
//! text, images (URL or base64), tool calls and tool results, reasoning
//! (with the signature of the provider that made it), refusals, tool
//! definitions, tool choice, `parallel_tool_calls` /
//! `disable_parallel_tool_use`, the output budget, temperature, `top_p`,
//! stop sequences, streaming, and usage with cache reads and writes. What
//! an API has that the neutral model has no place for is not dropped
//! silently: it is named in [`Request::untranslated`] or
//! [`Answer::untranslated`] (see [`crate::translate`] for the list), which
//! the gateway logs, counts and reports to the caller.
//!
//! Decision: OpenAI's `reasoning_effort` and Anthropic's `thinking` are
//! reported as untranslated, not mapped onto each other. An effort level
//! has no token count, and Anthropic refuses a thinking budget that is not
//! below `max_tokens` (or comes with a temperature other than 1): a guessed
//! budget would turn requests the caller's provider serves into 400s.

use serde_json::{Number, Value};

use crate::maybe::Maybe;

pub use crate::dialect::chat::{FromOpenAiStream, ToOpenAiStream};
pub use crate::dialect::messages::{FromAnthropicStream, ToAnthropicStream};

/// A chat request, in no API's shape.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Request {
    /// The model.
    pub model: String,
    /// System prompts, in order.
    pub system: Vec<String>,
    /// The conversation.
    pub turns: Vec<Turn>,
    /// The output budget, if the request set one.
    pub max_output_tokens: Option<u64>,
    /// Sampling temperature, as written.
    pub temperature: Option<Number>,
    /// Nucleus sampling, as written.
    pub top_p: Option<Number>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Whether to stream (absent: the API's default, not streaming).
    pub stream: Maybe<bool>,
    /// Tools the model may call (`None`: the request named none).
    pub tools: Option<Vec<ToolDef>>,
    /// How the model may pick a tool.
    pub tool_choice: Option<ToolChoice>,
    /// `false`: at most one tool call per turn.
    pub parallel_tool_calls: Option<bool>,
    /// Fields of the original request with no counterpart here (e.g.
    /// `response_format`, `thinking`), by name.
    pub untranslated: Vec<String>,
}

/// Who speaks a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The user (and tool results).
    User,
    /// The model.
    Assistant,
}

/// One turn of the conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    /// Who speaks.
    pub role: Role,
    /// What was said, in order.
    pub parts: Vec<Part>,
}

/// One piece of a turn.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Part {
    /// Text.
    Text(String),
    /// An image.
    Image(Image),
    /// A tool call the model made; `arguments` is a JSON object.
    ToolCall {
        /// The call's id.
        id: Maybe<String>,
        /// The tool's name.
        name: Maybe<String>,
        /// Its arguments.
        arguments: Value,
    },
    /// The result of a tool call, as text.
    ToolResult {
        /// The id of the call it answers.
        call_id: Maybe<String>,
        /// The result.
        content: String,
    },
    /// The model's reasoning: Anthropic's thinking, OpenAI's reasoning
    /// summaries (the Responses API) or `reasoning_content` (chat
    /// completions of compatible servers).
    Reasoning {
        /// What it thought (may be empty: an encrypted reasoning item).
        text: String,
        /// The provider's proof of it, which only that provider accepts
        /// back.
        signature: Option<Signature>,
    },
    /// A refusal by the model, as text.
    Refusal(String),
}

/// A provider's proof of a piece of reasoning, which only that provider
/// accepts back in a later request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signature {
    /// Anthropic's `signature` of a thinking block.
    Anthropic(String),
    /// OpenAI's `encrypted_content` of a reasoning item.
    OpenAi(String),
}

/// Where an image is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Image {
    /// At a URL.
    Url(String),
    /// Inline, base64-encoded.
    Base64 {
        /// Its media type (`image/png`).
        media_type: String,
        /// The base64 data.
        data: String,
    },
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolDef {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: Maybe<String>,
    /// Its parameters' JSON Schema.
    pub parameters: Maybe<Value>,
}

/// How the model may pick a tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// As it likes.
    Auto,
    /// It must call one.
    Any,
    /// It must not call any.
    None,
    /// It must call this one.
    Tool(String),
}

impl Turn {
    pub(crate) fn new(role: Role, part: Part) -> Self {
        Self {
            role,
            parts: vec![part],
        }
    }
}

impl Image {
    /// The image at `url`: inline when it is a base64 `data:` URL.
    pub fn from_url(url: &str) -> Self {
        match parse_data_url(url) {
            Some((media, data)) => Self::Base64 {
                media_type: media.to_owned(),
                data: data.to_owned(),
            },
            None => Self::Url(url.to_owned()),
        }
    }

    /// The image as a URL: a base64 `data:` URL when inline (OpenAI's
    /// APIs take both in one field).
    pub fn to_url(&self) -> String {
        match self {
            Self::Url(u) => u.clone(),
            Self::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }
}

/// A `data:` URL's media type and base64 data.
pub(crate) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

impl Request {
    /// Adds `part` to the last turn when it is `role`'s, else to a new turn.
    pub(crate) fn push(&mut self, role: Role, part: Part) {
        match self.turns.last_mut() {
            Some(t) if t.role == role => t.parts.push(part),
            _ => self.turns.push(Turn::new(role, part)),
        }
    }
}

/// A complete answer, in no API's shape.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Answer {
    /// The answer's id.
    pub id: String,
    /// The model that answered.
    pub model: String,
    /// What it said: text and tool calls, in order.
    pub parts: Vec<Part>,
    /// Why it stopped.
    pub finish: Finish,
    /// Token counts.
    pub usage: Usage,
    /// What the answer read had, or the answer written could not carry,
    /// with no counterpart (e.g. `choices[1..]`, a `redacted_thinking`
    /// block, a reasoning signature), by name.
    pub untranslated: Vec<String>,
}

/// Why a model stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Finish {
    /// A natural end, or a stop sequence.
    #[default]
    Stop,
    /// The output budget (or the context window) ran out.
    Length,
    /// It called tools.
    ToolCalls,
    /// It refused, or a filter stopped it.
    ContentFilter,
}

/// Token counts. `input` counts every prompt token, cached ones included
/// (OpenAI's `prompt_tokens`; Anthropic's `input_tokens` plus its cache
/// reads and writes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Prompt tokens read from a cache (OpenAI's
    /// `prompt_tokens_details.cached_tokens`, Anthropic's
    /// `cache_read_input_tokens`).
    pub cached_input: u64,
    /// Prompt tokens written to a cache (Anthropic's
    /// `cache_creation_input_tokens`; OpenAI reports none, its caching
    /// being automatic).
    pub cache_write_input: u64,
    /// Output tokens spent reasoning, within `output` (OpenAI's
    /// `completion_tokens_details` / `output_tokens_details`
    /// `reasoning_tokens`; Anthropic gives no such breakdown).
    pub reasoning_output: u64,
}

pub(crate) fn count(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0)
}

/// Notes `name` once.
pub(crate) fn note(list: &mut Vec<String>, name: impl Into<String>) {
    let name = name.into();
    if !list.contains(&name) {
        list.push(name);
    }
}

/// Names, as `{what} field `{key}``, each key of an object whose value
/// carries something (not `null`, not an empty list) and that neither its
/// neutral counterpart carries (`carried`) nor a rule of its own already
/// names (`named`): the keys nested inside what a translation carries,
/// which would otherwise be dropped silently.
pub(crate) fn note_fields<'a>(
    list: &mut Vec<String>,
    what: &str,
    fields: impl IntoIterator<Item = (&'a String, &'a Value)>,
    carried: &[&str],
) {
    for (k, v) in fields {
        let empty = v.is_null() || v.as_array().is_some_and(Vec::is_empty);
        if !empty && !carried.contains(&k.as_str()) {
            note(list, format!("{what} field `{k}`"));
        }
    }
}

/// One step of a streamed answer, in no API's shape. A stream reads as
/// `Start`, then text, tool calls and their arguments in any order, then
/// `Finish` and `Usage` (either first), then `End`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Delta {
    /// The answer begins; the prompt's token count when the API gives it
    /// first (Anthropic).
    Start {
        /// The answer's id.
        id: String,
        /// The model answering.
        model: String,
        /// Prompt tokens, when known at the start.
        input_tokens: Option<u64>,
    },
    /// More text.
    Text(String),
    /// More reasoning.
    Reasoning(String),
    /// The signature of the reasoning just streamed.
    Signature(Signature),
    /// More refusal text.
    Refusal(String),
    /// A tool call begins: the `call`-th of the answer.
    ToolCall {
        /// Its place among the answer's tool calls, from 0.
        call: u32,
        /// The call's id.
        id: Maybe<String>,
        /// The tool's name.
        name: Maybe<String>,
    },
    /// More of the `call`-th tool call's arguments (JSON text, in pieces).
    ToolArgs {
        /// Which call.
        call: u32,
        /// The next piece.
        json: String,
    },
    /// Why the model stopped.
    Finish(Finish),
    /// The token counts (the final ones, or cumulative so far).
    Usage(Usage),
    /// The answer is complete.
    End,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{anthropic, openai};
    use serde_json::json;

    fn openai(v: Value) -> openai::ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    fn anthropic(v: Value) -> anthropic::MessagesRequest {
        serde_json::from_value(v).unwrap()
    }

    /// Each API's request read into the neutral model and written back in
    /// the same API keeps its conversation: the two translators of one API
    /// are inverses on what the model carries.
    #[test]
    fn an_api_round_trips_through_the_neutral_model() {
        let a = anthropic(json!({
            "model": "claude", "max_tokens": 100, "system": "be brief",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "what is in"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t1", "name": "look", "input": {"q": 1}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "a cat"}
                ]}
            ],
            "tools": [{"name": "look", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
        }));
        let n = Request::from_anthropic(&a);
        assert_eq!(n.turns.len(), 3);
        assert_eq!(n.parallel_tool_calls, Some(false));
        assert_eq!(n.tool_choice, Some(ToolChoice::Any));
        assert!(n.untranslated.is_empty(), "{:?}", n.untranslated);
        let back = serde_json::to_value(n.to_anthropic()).unwrap();
        let orig = serde_json::to_value(&a).unwrap();
        assert_eq!(back["messages"], orig["messages"]);
        assert_eq!(back["tool_choice"], orig["tool_choice"]);
        assert_eq!(back["system"], orig["system"]);

        let o = openai(json!({
            "model": "gpt", "max_tokens": 50,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/c.png"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "a cat"}
            ]
        }));
        let n = Request::from_openai(&o).unwrap();
        let back = serde_json::to_value(n.to_openai()).unwrap();
        let orig = serde_json::to_value(&o).unwrap();
        assert_eq!(back["messages"], orig["messages"]);
    }

    /// What has no counterpart is named, never dropped silently.
    #[test]
    fn what_is_left_out_is_named() {
        let a = anthropic(json!({
            "model": "claude", "max_tokens": 100, "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
            ]}]
        }));
        let n = Request::from_anthropic(&a);
        for f in ["top_k", "thinking", "content block `document`"] {
            assert!(
                n.untranslated.iter().any(|u| u == f),
                "{f}: {:?}",
                n.untranslated
            );
        }
        let o = openai(json!({
            "model": "gpt", "seed": 1, "response_format": {"type": "json_object"},
            "parallel_tool_calls": false,
            "messages": [{"role": "user", "content": "hi"}]
        }));
        let n = Request::from_openai(&o).unwrap();
        assert!(n.untranslated.iter().any(|u| u == "seed"));
        assert!(n.untranslated.iter().any(|u| u == "response_format"));
        assert!(!n.untranslated.iter().any(|u| u == "parallel_tool_calls"));
        assert_eq!(n.parallel_tool_calls, Some(false));
    }

    /// Usage crosses with its cached tokens: Anthropic's cache reads and
    /// writes are prompt tokens in OpenAI's count, its reads OpenAI's
    /// `cached_tokens`, and back.
    #[test]
    fn usage_with_cached_tokens_crosses_both_ways() {
        let a: anthropic::MessagesResponse = serde_json::from_value(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 3,
                      "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}
        }))
        .unwrap();
        let o = Answer::from_anthropic(&a).to_openai();
        let u = o.usage.get().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens.clone()),
            (115, 3, Maybe::Present(118))
        );
        assert_eq!(u.extra["prompt_tokens_details"]["cached_tokens"], 100);
        assert_eq!(
            o.choices[0].finish_reason.get().map(String::as_str),
            Some("length")
        );

        let back = Answer::from_openai(&o).unwrap().to_anthropic();
        assert_eq!(back.usage.input_tokens.get(), Some(&15));
        assert_eq!(back.usage.extra["cache_read_input_tokens"], 100);
        assert_eq!(
            back.stop_reason.get().map(String::as_str),
            Some("max_tokens")
        );
    }

    /// A streamed OpenAI answer with text and a tool call whose arguments
    /// come in pieces crosses to Anthropic events and back through the
    /// neutral deltas, and both sides rebuild the same answer.
    #[test]
    fn a_stream_with_streamed_tool_arguments_crosses_both_ways() {
        use crate::OpenAiItem;
        use crate::translate::{AnthropicToOpenAiStream, OpenAiToAnthropicStream};
        let chunk = |v: Value| OpenAiItem::Chunk(serde_json::from_value(v).unwrap());
        let items = vec![
            chunk(
                json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "let me look"}, "finish_reason": null}]}),
            ),
            chunk(
                json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "look", "arguments": ""}}]}, "finish_reason": null}]}),
            ),
            chunk(
                json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\":"}}]}, "finish_reason": null}]}),
            ),
            chunk(
                json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "finish_reason": null}]}),
            ),
            chunk(
                json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            ),
            chunk(
                json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}}),
            ),
            OpenAiItem::Done,
        ];
        let mut to_anthropic = OpenAiToAnthropicStream::new();
        let events: Vec<anthropic::StreamEvent> = items
            .into_iter()
            .flat_map(|i| to_anthropic.push(i))
            .collect();
        let mut agg = crate::AnthropicAggregator::new();
        for e in events.clone() {
            agg.push(e);
        }
        let msg = agg.finish().unwrap();
        assert_eq!(msg.stop_reason.get().map(String::as_str), Some("tool_use"));
        assert_eq!(msg.usage.output_tokens.get(), Some(&4));
        let kinds: Vec<&str> = msg.content.iter().map(|b| b.kind.as_str()).collect();
        assert_eq!(kinds, ["text", "tool_use"]);
        assert_eq!(msg.content[1].input.get(), Some(&json!({"q": 1})));

        let mut to_openai = AnthropicToOpenAiStream::new(true);
        let mut agg = crate::OpenAiAggregator::new();
        for e in events {
            for item in to_openai.push(e) {
                agg.push(item);
            }
        }
        let done = agg.finish().unwrap();
        let m = &done.choices[0].message;
        assert_eq!(
            m.content.get().map(openai::Content::text).as_deref(),
            Some("let me look")
        );
        let call = &m.tool_calls.get().unwrap()[0];
        let f = call.function.get().unwrap();
        assert_eq!(f.arguments.get().map(String::as_str), Some("{\"q\":1}"));
        assert_eq!(
            done.choices[0].finish_reason.get().map(String::as_str),
            Some("tool_calls")
        );
        assert_eq!(done.usage.get().map(|u| u.prompt_tokens), Some(7));
    }

    /// A stream's prompt and cache tokens, given at `message_start`, reach
    /// OpenAI's usage chunk at the end.
    #[test]
    fn a_streams_cached_tokens_reach_the_usage_chunk() {
        use crate::translate::AnthropicToOpenAiStream;
        let ev = |v: Value| anthropic::StreamEvent::from_data(v.to_string().as_bytes()).unwrap();
        let mut t = AnthropicToOpenAiStream::new(true);
        let mut items = Vec::new();
        for e in [
            ev(
                json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
                "model": "claude", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 100}}}),
            ),
            ev(
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 3}}),
            ),
            ev(json!({"type": "message_stop"})),
        ] {
            items.extend(t.push(e));
        }
        let usage = items
            .iter()
            .find_map(|i| match i {
                crate::OpenAiItem::Chunk(c) => c.usage.get().cloned(),
                crate::OpenAiItem::Done => None,
            })
            .unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (110, 3));
        assert_eq!(usage.extra["prompt_tokens_details"]["cached_tokens"], 100);
    }
}
