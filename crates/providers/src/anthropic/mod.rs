//! Anthropic messages, the whole API in one module: its wire types
//! (request, response, stream events, errors) here, its stream decoding and
//! aggregation ([`decode_anthropic`], [`AnthropicAggregator`]), and its
//! reader and writer of the neutral model ([`dialect::Messages`]). Its
//! description is its arms of [`Api`](crate::Api)'s exhaustive methods.
//!
//! Like the OpenAI types, every type keeps what it does not model in `extra`
//! and optional fields remember absent versus `null` ([`Maybe`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::maybe::Maybe;

pub mod dialect;
mod stream;

pub use stream::{AnthropicAggregator, decode_anthropic};

/// `POST /v1/messages` request body.
///
/// ```
/// use palisade_providers::anthropic::{Message, MessagesRequest};
///
/// let req = MessagesRequest::new("claude-haiku-4-5", 256, vec![Message::user("Hello")]);
/// let json = serde_json::to_value(&req).unwrap();
/// assert_eq!(json["max_tokens"], 256);
/// assert_eq!(json["messages"][0]["content"], "Hello");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    /// The model.
    pub model: String,
    /// The conversation (user and assistant turns).
    pub messages: Vec<Message>,
    /// The output budget (required by the API).
    pub max_tokens: u64,
    /// The system prompt: a string or text blocks.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub system: Maybe<Value>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub stream: Maybe<bool>,
    /// Sampling temperature (kept as written).
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub temperature: Maybe<Number>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub stop_sequences: Maybe<Vec<String>>,
    /// Tools the model may use.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub tools: Maybe<Vec<Tool>>,
    /// `{"type":"auto"|"any"|"tool"|"none", …}`.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub tool_choice: Maybe<Value>,
    /// Everything else (`thinking`, `metadata`, `top_k` …), as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    /// Text, or content blocks.
    pub content: MessageContent,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MessagesRequest {
    /// A request for `model`, at most `max_tokens` of output, with
    /// `messages` and nothing else set.
    pub fn new(model: impl Into<String>, max_tokens: u64, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            max_tokens,
            messages,
            ..Self::default()
        }
    }
}

impl Message {
    /// A message of `role` with text content.
    pub fn text(role: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: MessageContent::Text(text.into()),
            extra: Map::new(),
        }
    }

    /// A `user` message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::text("user", text)
    }

    /// An `assistant` message.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::text("assistant", text)
    }
}

/// A message's content: a string or a list of blocks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Typed blocks.
    Blocks(Vec<ContentBlock>),
}

impl MessageContent {
    /// The text of the content: the string, or the `text` blocks joined.
    pub fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Blocks(b) => b
                .iter()
                .filter_map(|b| b.text.get().map(String::as_str))
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

/// One content block, of any type (`text`, `image`, `tool_use`,
/// `tool_result`, `thinking`, `redacted_thinking`, and types yet to come):
/// the fields of the common types are typed, everything else is in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContentBlock {
    /// The block type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `text`: the text.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub text: Maybe<String>,
    /// `tool_use`: the call's id.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub id: Maybe<String>,
    /// `tool_use`: the tool's name.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub name: Maybe<String>,
    /// `tool_use`: the arguments.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub input: Maybe<Value>,
    /// `tool_result`: the call answered.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub tool_use_id: Maybe<String>,
    /// `thinking`: the reasoning.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub thinking: Maybe<String>,
    /// `thinking`: its signature.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub signature: Maybe<String>,
    /// Everything else (`source`, `content`, `cache_control`, `citations` …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tool definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub description: Maybe<String>,
    /// Its JSON Schema.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub input_schema: Maybe<Value>,
    /// Everything else (`type` of server tools, `cache_control` …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A whole (non-streamed) answer, also the `message` of `message_start`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessagesResponse {
    /// `msg_…`.
    pub id: String,
    /// `message`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `assistant`.
    pub role: String,
    /// The model that answered.
    pub model: String,
    /// The content blocks.
    pub content: Vec<ContentBlock>,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `pause_turn`,
    /// `refusal`.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub stop_reason: Maybe<String>,
    /// The stop sequence that matched.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub stop_sequence: Maybe<String>,
    /// Token counts.
    pub usage: Usage,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Token counts. In `message_delta` only `output_tokens` is required, and it
/// is cumulative.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub input_tokens: Maybe<u64>,
    /// Output tokens.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub output_tokens: Maybe<u64>,
    /// Everything else (cache tokens, server tool use …), as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An error response body, or the data of an in-band `event: error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The error.
    pub error: ApiError,
    /// Everything else (`request_id` …), as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The error object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// `invalid_request_error`, `rate_limit_error`, `overloaded_error`,
    /// `api_error` ….
    #[serde(rename = "type")]
    pub kind: String,
    /// What went wrong.
    pub message: String,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One event of a streamed answer. Each known event keeps the top-level
/// fields this crate does not model in `extra` (Anthropic adds fields to
/// events, e.g. `context_management` on `message_delta`), so
/// [`to_value`](Self::to_value) gives back what [`from_data`](Self::from_data)
/// read.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// The answer starts: its id, model, input usage.
    MessageStart {
        /// The message so far (no content yet).
        message: MessagesResponse,
        /// The event's other fields, as received.
        extra: Map<String, Value>,
    },
    /// A content block starts.
    ContentBlockStart {
        /// The block's position.
        index: u32,
        /// The block, empty but for its type (and id/name for `tool_use`).
        block: ContentBlock,
        /// The event's other fields, as received.
        extra: Map<String, Value>,
    },
    /// A piece of a content block.
    ContentBlockDelta {
        /// The block's position.
        index: u32,
        /// The piece.
        delta: BlockDelta,
        /// The event's other fields, as received.
        extra: Map<String, Value>,
    },
    /// A content block ends.
    ContentBlockStop {
        /// The block's position.
        index: u32,
        /// The event's other fields, as received.
        extra: Map<String, Value>,
    },
    /// The answer's top-level changes: stop reason, cumulative usage.
    MessageDelta {
        /// `stop_reason`, `stop_sequence`.
        delta: MessageDeltaBody,
        /// Cumulative usage.
        usage: Usage,
        /// The event's other fields, as received.
        extra: Map<String, Value>,
    },
    /// The answer is complete.
    MessageStop {
        /// The event's other fields, as received.
        extra: Map<String, Value>,
    },
    /// A keep-alive.
    Ping {
        /// The event's other fields, as received.
        extra: Map<String, Value>,
    },
    /// An in-band error after the 200 (its body keeps its own other fields).
    Error(ErrorBody),
    /// An event type this crate does not know: passed through.
    Unknown {
        /// Its `type`.
        kind: String,
        /// Its data.
        data: Value,
    },
}

/// A piece of a content block.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockDelta {
    /// `text_delta`, `input_json_delta`, `thinking_delta`, `signature_delta`,
    /// `citations_delta` ….
    #[serde(rename = "type")]
    pub kind: String,
    /// `text_delta`: more text.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub text: Maybe<String>,
    /// `input_json_delta`: more of the tool input's JSON.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub partial_json: Maybe<String>,
    /// `thinking_delta`: more reasoning.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub thinking: Maybe<String>,
    /// `signature_delta`: the thinking block's signature.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub signature: Maybe<String>,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `delta` of `message_delta`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    /// Why the answer stopped.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub stop_reason: Maybe<String>,
    /// The stop sequence that matched.
    #[serde(default, skip_serializing_if = "Maybe::is_absent")]
    pub stop_sequence: Maybe<String>,
    /// Everything else, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl StreamEvent {
    /// Decodes one event's JSON `data` (its `type` field says which event).
    ///
    /// # Errors
    ///
    /// When the data is not JSON, has no `type`, or a known type's fields are
    /// wrong.
    pub fn from_data(data: &[u8]) -> Result<Self, serde_json::Error> {
        let v: Value = serde_json::from_slice(data)?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| serde::de::Error::missing_field("type"))?;
        let Value::Object(mut o) = v else {
            // A `type` was found, so it is an object.
            return Err(serde::de::Error::custom("an event is a JSON object"));
        };
        // What is left of `o` once the modelled fields are taken is `extra`.
        let take = |o: &mut Map<String, Value>, k: &str| o.remove(k).unwrap_or(Value::Null);
        let index = |o: &mut Map<String, Value>| -> Result<u32, serde_json::Error> {
            o.remove("index")
                .as_ref()
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| serde::de::Error::missing_field("index"))
        };
        if kind == "error" {
            return Ok(Self::Error(serde_json::from_value(Value::Object(o))?));
        }
        if !matches!(
            kind.as_str(),
            "message_start"
                | "content_block_start"
                | "content_block_delta"
                | "content_block_stop"
                | "message_delta"
                | "message_stop"
                | "ping"
        ) {
            return Ok(Self::Unknown {
                kind,
                data: Value::Object(o),
            });
        }
        o.remove("type");
        Ok(match kind.as_str() {
            "message_start" => Self::MessageStart {
                message: serde_json::from_value(take(&mut o, "message"))?,
                extra: o,
            },
            "content_block_start" => Self::ContentBlockStart {
                index: index(&mut o)?,
                block: serde_json::from_value(take(&mut o, "content_block"))?,
                extra: o,
            },
            "content_block_delta" => Self::ContentBlockDelta {
                index: index(&mut o)?,
                delta: serde_json::from_value(take(&mut o, "delta"))?,
                extra: o,
            },
            "content_block_stop" => Self::ContentBlockStop {
                index: index(&mut o)?,
                extra: o,
            },
            "message_delta" => Self::MessageDelta {
                delta: serde_json::from_value(take(&mut o, "delta"))?,
                usage: serde_json::from_value(take(&mut o, "usage"))?,
                extra: o,
            },
            "message_stop" => Self::MessageStop { extra: o },
            _ => Self::Ping { extra: o },
        })
    }

    /// The event as JSON, the inverse of [`from_data`](Self::from_data).
    pub fn to_value(&self) -> Value {
        let v = |x: &dyn erased::ToValue| x.to_value();
        let event = |kind: &str, fields: Vec<(&str, Value)>, extra: &Map<String, Value>| {
            let mut o = Map::with_capacity(1 + fields.len() + extra.len());
            o.insert("type".to_owned(), Value::from(kind));
            for (k, x) in fields {
                o.insert(k.to_owned(), x);
            }
            for (k, x) in extra {
                o.insert(k.clone(), x.clone());
            }
            Value::Object(o)
        };
        let kind = self.kind();
        match self {
            Self::MessageStart { message, extra } => {
                event(kind, vec![("message", v(message))], extra)
            }
            Self::ContentBlockStart {
                index,
                block,
                extra,
            } => event(
                kind,
                vec![("index", Value::from(*index)), ("content_block", v(block))],
                extra,
            ),
            Self::ContentBlockDelta {
                index,
                delta,
                extra,
            } => event(
                kind,
                vec![("index", Value::from(*index)), ("delta", v(delta))],
                extra,
            ),
            Self::ContentBlockStop { index, extra } => {
                event(kind, vec![("index", Value::from(*index))], extra)
            }
            Self::MessageDelta {
                delta,
                usage,
                extra,
            } => event(kind, vec![("delta", v(delta)), ("usage", v(usage))], extra),
            Self::MessageStop { extra } | Self::Ping { extra } => event(kind, Vec::new(), extra),
            Self::Error(e) => v(e),
            Self::Unknown { data, .. } => data.clone(),
        }
    }

    /// The event's `type`.
    pub fn kind(&self) -> &str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop { .. } => "message_stop",
            Self::Ping { .. } => "ping",
            Self::Error(_) => "error",
            Self::Unknown { kind, .. } => kind,
        }
    }
}

mod erased {
    use serde::Serialize;
    use serde_json::Value;

    /// Serializing our own types to a `Value` cannot fail (string keys only).
    pub(super) trait ToValue {
        fn to_value(&self) -> Value;
    }

    impl<T: Serialize> ToValue for T {
        fn to_value(&self) -> Value {
            serde_json::to_value(self).unwrap_or(Value::Null)
        }
    }
}
