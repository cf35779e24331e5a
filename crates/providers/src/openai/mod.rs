//! OpenAI chat completions, the whole API in one module: its wire types
//! (request, response, stream chunks, errors) here, its stream decoding and
//! aggregation ([`decode_openai`], [`OpenAiAggregator`], [`OpenAiStream`]),
//! and its reader and writer of the neutral model ([`dialect::Chat`]). Its
//! description is its arms of [`Api`](crate::Api)'s exhaustive methods.
//!
//! Every type keeps the fields it does not model in `extra`, and optional
//! fields remember absent versus `null` ([`Maybe`]), so a proxy that
//! deserializes and serializes again sends on exactly what it received.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::maybe::Maybe;

mod chunks;
pub mod dialect;
mod stream;

pub use chunks::OpenAiStream;
pub use stream::{OpenAiAggregator, OpenAiItem, decode_openai};

/// `POST /v1/chat/completions` request body.
///
/// ```
/// use palisade_providers::openai::{ChatMessage, ChatRequest};
///
/// let req = ChatRequest::new("gpt-4o-mini", vec![
///     ChatMessage::system("Answer in one word."),
///     ChatMessage::user("Capital of France?"),
/// ]);
/// let json = serde_json::to_value(&req).unwrap();
/// assert_eq!(json["messages"][1]["content"], "Capital of France?");
/// assert!(json.get("stream").is_none(), "absent fields stay absent");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub stream: Maybe<bool>,
    /// `{"include_usage": true}` adds a usage chunk to a stream.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub stream_options: Maybe<Value>,
    /// The output budget (older name).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub max_tokens: Maybe<u64>,
    /// The output budget.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub max_completion_tokens: Maybe<u64>,
    /// Sampling temperature (kept as written: `1` stays `1`).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub temperature: Maybe<Number>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub top_p: Maybe<Number>,
    /// Stop sequences (a string or an array).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub stop: Maybe<Value>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub tools: Maybe<Vec<Tool>>,
    /// `"auto"`, `"none"`, `"required"` or a named function.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub tool_choice: Maybe<Value>,
    /// `{"type":"json_schema", …}` and friends.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub response_format: Maybe<Value>,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// A request for `model` with `messages` and nothing else set.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            messages,
            ..Self::default()
        }
    }
}

impl ChatMessage {
    /// A message of `role` with text content.
    pub fn text(role: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: Maybe::Present(Content::Text(text.into())),
            ..Self::default()
        }
    }

    /// A `user` message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::text("user", text)
    }

    /// A `system` message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::text("system", text)
    }

    /// An `assistant` message.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::text("assistant", text)
    }
}

/// One message of a conversation (also a response's message).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text, or content parts.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub content: Maybe<Content>,
    /// A participant name.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub name: Maybe<String>,
    /// Tool calls made by the assistant.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub tool_calls: Maybe<Vec<ToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub tool_call_id: Maybe<String>,
    /// A refusal by the model.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub refusal: Maybe<String>,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Message content: a string or a list of parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts (`text`, `image_url`, `input_audio`, `file` …).
    Parts(Vec<ContentPart>),
}

impl Content {
    /// The text of the content: the string, or the `text` parts joined.
    pub fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.get().map(String::as_str))
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

/// One content part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// `text`, `image_url`, `input_audio`, `file` ….
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub text: Maybe<String>,
    /// Everything else (the image URL, the audio …), as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tool definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub function: Maybe<FunctionDef>,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A function the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub description: Maybe<String>,
    /// Its JSON Schema.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub parameters: Maybe<Value>,
    /// Everything else (`strict` …), as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tool call (whole in a message, in pieces in stream deltas).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Position among the calls (stream deltas).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub index: Maybe<u32>,
    /// The call's id.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub id: Maybe<String>,
    /// `function`.
    #[serde(rename = "type", default, skip_serializing_if = "Maybe::is_absent")]
    pub kind: Maybe<String>,
    /// The function called.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub function: Maybe<FunctionCall>,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The function part of a tool call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub name: Maybe<String>,
    /// Its arguments, a JSON document as a string (in pieces in a stream).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub arguments: Maybe<String>,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A whole (non-streamed) chat completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The answers (usually one).
    pub choices: Vec<Choice>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub usage: Maybe<Usage>,
    /// Everything else (`system_fingerprint`, `service_tier` …), as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One answer of a completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Its position.
    pub index: u32,
    /// The message.
    pub message: ChatMessage,
    /// `stop`, `length`, `tool_calls`, `content_filter`.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub finish_reason: Maybe<String>,
    /// Everything else (`logprobs` …), as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Token counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Their sum (some compatible servers leave it out).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub total_tokens: Maybe<u64>,
    /// Everything else (token details …), as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Usage {
    /// Counts with `total_tokens` as their sum.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: Maybe::Present(prompt_tokens + completion_tokens),
            extra: Map::new(),
        }
    }
}

/// One `data:` chunk of a streamed completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// `chatcmpl-…`, the same in every chunk.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model.
    pub model: String,
    /// The deltas (empty in the usage chunk).
    pub choices: Vec<ChunkChoice>,
    /// Token counts: `null` in every chunk but the last one when
    /// `stream_options.include_usage` is set.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub usage: Maybe<Usage>,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatChunk {
    /// The text this chunk adds: its first choice's `delta.content`, or `""`.
    pub fn text(&self) -> &str {
        self.choices
            .first()
            .and_then(|c| c.delta.content.get())
            .map_or("", String::as_str)
    }
}

/// One choice's delta in a chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// The choice's position.
    pub index: u32,
    /// What this chunk adds.
    pub delta: Delta,
    /// Set in the choice's last chunk.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub finish_reason: Maybe<String>,
    /// Everything else (`logprobs` …), as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What a chunk adds to a choice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant`, in the first chunk.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub role: Maybe<String>,
    /// More text.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub content: Maybe<String>,
    /// Pieces of tool calls, by `index`.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub tool_calls: Maybe<Vec<ToolCall>>,
    /// More refusal text.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub refusal: Maybe<String>,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `{"error": {…}}`: an error response body, or an in-band stream error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The error object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub message: String,
    /// `invalid_request_error`, `server_error` ….
    #[serde(rename = "type", default, skip_serializing_if = "Maybe::is_absent")]
    pub kind: Maybe<String>,
    /// The parameter at fault.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub param: Maybe<Value>,
    /// A machine-readable code (string or number).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub code: Maybe<Value>,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
