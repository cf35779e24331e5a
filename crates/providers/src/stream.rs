//! Typed stream decoding, in-band errors, and aggregation.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;

use http::StatusCode;
use palisade_core::UpstreamStatus;
use palisade_sse::Event;
use serde_json::{Map, Value};

use crate::maybe::Maybe;
use crate::{Api, anthropic, openai};

/// An error the upstream reported inside a stream that had answered 200:
/// OpenAI's `data: {"error":…}`, Anthropic's `event: error`.
///
/// Its source is an [`UpstreamStatus`] with the status the error type stands
/// for (`overloaded_error` → 529, `rate_limit_error` → 429, `api_error` /
/// `server_error` → 500 …), so `palisade_core::ErrorKind` and the outcome
/// classifier treat it like that status: a breaker counts it as a failure.
#[derive(Debug)]
pub struct InbandError {
    provider: Api,
    kind: String,
    message: String,
    status: UpstreamStatus,
}

impl InbandError {
    fn new(provider: Api, kind: String, message: String) -> Self {
        let status = provider.inband_status(&kind);
        Self {
            provider,
            kind,
            message,
            status: UpstreamStatus::new(status, None),
        }
    }

    /// The API of the stream it came in.
    pub fn api(&self) -> Api {
        self.provider
    }

    /// The error type (`overloaded_error`, `server_error` …).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The upstream's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status this error stands for.
    pub fn status(&self) -> StatusCode {
        self.status.status()
    }
}

impl fmt::Display for InbandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} reported an error mid-stream ({}): {}; the answer is incomplete, retry the request",
            self.provider, self.kind, self.message
        )
    }
}

impl StdError for InbandError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.status)
    }
}

/// A stream could not be decoded, or the upstream reported an error in it.
#[derive(Debug)]
pub struct StreamError {
    kind: StreamErrorKind,
}

#[derive(Debug)]
enum StreamErrorKind {
    Inband(InbandError),
    Malformed { provider: Api, what: String },
    Truncated { provider: Api },
}

impl StreamError {
    fn malformed(provider: Api, what: String) -> Self {
        Self {
            kind: StreamErrorKind::Malformed { provider, what },
        }
    }

    pub(crate) fn truncated(provider: Api) -> Self {
        Self {
            kind: StreamErrorKind::Truncated { provider },
        }
    }

    /// The in-band error, when that is what this is.
    pub fn inband(&self) -> Option<&InbandError> {
        match &self.kind {
            StreamErrorKind::Inband(e) => Some(e),
            _ => None,
        }
    }

    /// True when an event was not what the provider's format says.
    pub fn is_malformed(&self) -> bool {
        matches!(self.kind, StreamErrorKind::Malformed { .. })
    }

    /// True when the stream ended without its terminator (`data: [DONE]`,
    /// `message_stop`).
    pub fn is_truncated(&self) -> bool {
        matches!(self.kind, StreamErrorKind::Truncated { .. })
    }
}

impl From<InbandError> for StreamError {
    fn from(e: InbandError) -> Self {
        Self {
            kind: StreamErrorKind::Inband(e),
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            StreamErrorKind::Inband(e) => e.fmt(f),
            StreamErrorKind::Malformed { provider, what } => write!(
                f,
                "malformed {provider} stream event: {what}; the upstream (or a proxy before it) \
                 sent something that is not its stream format"
            ),
            StreamErrorKind::Truncated { provider } => write!(
                f,
                "{provider} stream ended without `{}`: the answer is truncated; retry the request",
                provider.terminator()
            ),
        }
    }
}

impl StdError for StreamError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.kind {
            StreamErrorKind::Inband(e) => Some(e),
            _ => None,
        }
    }
}

fn excerpt(data: &[u8]) -> String {
    let s = String::from_utf8_lossy(&data[..data.len().min(120)]);
    format!("{s:?}")
}

/// One item of an OpenAI stream.
// Nearly every item is a chunk: boxing it would cost an allocation per
// event to save stack space on the rare `Done`.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum OpenAiItem {
    /// A chunk (the usage chunk has no choices and `usage` set).
    Chunk(openai::ChatChunk),
    /// `data: [DONE]`: the stream is complete.
    Done,
}

/// Decodes one event of an OpenAI stream.
///
/// # Errors
///
/// An in-band `{"error":…}` is a [`StreamError`] carrying an
/// [`InbandError`]; data that is neither a chunk nor an error is malformed.
pub fn decode_openai(ev: &Event) -> Result<OpenAiItem, StreamError> {
    let data = ev.data();
    if data.as_ref() == b"[DONE]" {
        return Ok(OpenAiItem::Done);
    }
    match serde_json::from_slice::<openai::ChatChunk>(data) {
        Ok(chunk) => Ok(OpenAiItem::Chunk(chunk)),
        Err(chunk_err) => match serde_json::from_slice::<openai::ErrorBody>(data) {
            Ok(e) => Err(InbandError::new(
                Api::ChatCompletions,
                e.error
                    .kind
                    .into_option()
                    .unwrap_or_else(|| "error".to_owned()),
                e.error.message,
            )
            .into()),
            Err(_) => Err(StreamError::malformed(
                Api::ChatCompletions,
                format!("{chunk_err} in {}", excerpt(data)),
            )),
        },
    }
}

/// Decodes one event of an Anthropic stream. Unknown event types are passed
/// through as [`anthropic::StreamEvent::Unknown`].
///
/// # Errors
///
/// `event: error` is a [`StreamError`] carrying an [`InbandError`]; data that
/// does not fit its event type is malformed.
pub fn decode_anthropic(ev: &Event) -> Result<anthropic::StreamEvent, StreamError> {
    match anthropic::StreamEvent::from_data(ev.data()) {
        Ok(anthropic::StreamEvent::Error(e)) => {
            Err(InbandError::new(Api::Messages, e.error.kind, e.error.message).into())
        }
        Ok(other) => Ok(other),
        Err(e) => Err(StreamError::malformed(
            Api::Messages,
            format!("{e} in {} event {}", ev.event_type(), excerpt(ev.data())),
        )),
    }
}

/// Rebuilds an OpenAI chat completion from its stream.
///
/// # Example
///
/// ```
/// use palisade_providers::{OpenAiAggregator, decode_openai};
/// use palisade_sse::Decoder;
///
/// let mut d = Decoder::new();
/// d.push(bytes::Bytes::from_static(concat!(
///     r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#, "\n\n",
///     r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#, "\n\n",
///     "data: [DONE]\n\n",
/// ).as_bytes()));
/// let mut agg = OpenAiAggregator::new();
/// while let Some(ev) = d.next_event().unwrap() {
///     agg.push(decode_openai(&ev).unwrap());
/// }
/// let done = agg.finish().unwrap();
/// assert_eq!(done.choices[0].message.content.get().unwrap().text(), "Hello");
/// assert_eq!(done.choices[0].finish_reason.get().map(String::as_str), Some("stop"));
/// ```
#[derive(Debug, Default)]
pub struct OpenAiAggregator {
    head: Option<(String, u64, String)>,
    choices: BTreeMap<u32, ChoiceAcc>,
    usage: Option<openai::Usage>,
    extra: Map<String, Value>,
    done: bool,
}

#[derive(Debug, Default)]
struct ChoiceAcc {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tools: BTreeMap<u32, openai::ToolCall>,
    finish: Option<String>,
}

impl OpenAiAggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one stream item.
    pub fn push(&mut self, item: OpenAiItem) {
        let chunk = match item {
            OpenAiItem::Done => {
                self.done = true;
                return;
            }
            OpenAiItem::Chunk(c) => c,
        };
        if self.head.is_none() {
            self.head = Some((chunk.id, chunk.created, chunk.model));
            self.extra = chunk.extra;
        }
        if let Maybe::Present(u) = chunk.usage {
            self.usage = Some(u);
        }
        for c in chunk.choices {
            let acc = self.choices.entry(c.index).or_default();
            let d = c.delta;
            if let Maybe::Present(r) = d.role {
                acc.role = Some(r);
            }
            if let Maybe::Present(t) = d.content {
                acc.content.get_or_insert_with(String::new).push_str(&t);
            }
            if let Maybe::Present(t) = d.refusal {
                acc.refusal.get_or_insert_with(String::new).push_str(&t);
            }
            for tc in d.tool_calls.into_option().unwrap_or_default() {
                let i = tc.index.get().copied().unwrap_or(0);
                let slot = acc.tools.entry(i).or_default();
                if let Maybe::Present(id) = tc.id {
                    slot.id = Maybe::Present(id);
                }
                if let Maybe::Present(k) = tc.kind {
                    slot.kind = Maybe::Present(k);
                }
                if let Maybe::Present(f) = tc.function {
                    let sf = match &mut slot.function {
                        Maybe::Present(sf) => sf,
                        other => {
                            *other = Maybe::Present(openai::FunctionCall::default());
                            match other.get_mut() {
                                Some(sf) => sf,
                                None => continue,
                            }
                        }
                    };
                    if let Maybe::Present(n) = f.name {
                        sf.name = Maybe::Present(n);
                    }
                    if let Maybe::Present(a) = f.arguments {
                        match &mut sf.arguments {
                            Maybe::Present(s) => s.push_str(&a),
                            other => *other = Maybe::Present(a),
                        }
                    }
                }
            }
            if let Maybe::Present(f) = c.finish_reason {
                acc.finish = Some(f);
            }
        }
    }

    /// The completion the stream amounted to.
    ///
    /// # Errors
    ///
    /// A truncated stream (no `data: [DONE]`, or no chunk at all).
    pub fn finish(self) -> Result<openai::ChatCompletion, StreamError> {
        let (Some((id, created, model)), true) = (self.head, self.done) else {
            return Err(StreamError::truncated(Api::ChatCompletions));
        };
        let choices = self
            .choices
            .into_iter()
            .map(|(index, acc)| openai::Choice {
                index,
                message: openai::ChatMessage {
                    role: acc.role.unwrap_or_else(|| "assistant".to_owned()),
                    content: match acc.content {
                        Some(t) => Maybe::Present(openai::Content::Text(t)),
                        None => Maybe::Null,
                    },
                    tool_calls: if acc.tools.is_empty() {
                        Maybe::Absent
                    } else {
                        Maybe::Present(
                            acc.tools
                                .into_values()
                                .map(|mut t| {
                                    t.index = Maybe::Absent;
                                    t
                                })
                                .collect(),
                        )
                    },
                    refusal: acc.refusal.into(),
                    ..Default::default()
                },
                finish_reason: acc.finish.into(),
                extra: Map::new(),
            })
            .collect();
        Ok(openai::ChatCompletion {
            id,
            object: "chat.completion".to_owned(),
            created,
            model,
            choices,
            usage: self.usage.into(),
            extra: self.extra,
        })
    }
}

/// Rebuilds an Anthropic message from its stream.
#[derive(Debug, Default)]
pub struct AnthropicAggregator {
    message: Option<anthropic::MessagesResponse>,
    blocks: BTreeMap<u32, (anthropic::ContentBlock, String)>,
    stopped: bool,
}

impl AnthropicAggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one stream event.
    pub fn push(&mut self, ev: anthropic::StreamEvent) {
        use anthropic::StreamEvent as E;
        match ev {
            E::MessageStart { message: m, .. } => self.message = Some(m),
            E::ContentBlockStart { index, block, .. } => {
                self.blocks.insert(index, (block, String::new()));
            }
            E::ContentBlockDelta { index, delta, .. } => {
                let (block, json) = self
                    .blocks
                    .entry(index)
                    .or_insert_with(|| (anthropic::ContentBlock::default(), String::new()));
                append(&mut block.text, delta.text);
                append(&mut block.thinking, delta.thinking);
                if let Maybe::Present(s) = delta.signature {
                    block.signature = Maybe::Present(s);
                }
                if let Maybe::Present(p) = delta.partial_json {
                    json.push_str(&p);
                }
            }
            E::ContentBlockStop { .. } | E::Ping { .. } | E::Unknown { .. } | E::Error(_) => {}
            E::MessageDelta { delta, usage, .. } => {
                if let Some(m) = &mut self.message {
                    if !delta.stop_reason.is_absent() {
                        m.stop_reason = delta.stop_reason;
                    }
                    if !delta.stop_sequence.is_absent() {
                        m.stop_sequence = delta.stop_sequence;
                    }
                    // message_delta usage is cumulative: it replaces.
                    if !usage.output_tokens.is_absent() {
                        m.usage.output_tokens = usage.output_tokens;
                    }
                    if !usage.input_tokens.is_absent() {
                        m.usage.input_tokens = usage.input_tokens;
                    }
                    m.usage.extra.extend(usage.extra);
                }
            }
            E::MessageStop { .. } => self.stopped = true,
        }
    }

    /// The message the stream amounted to.
    ///
    /// # Errors
    ///
    /// A truncated stream (no `message_start` or no `message_stop`), or a
    /// tool input whose streamed JSON does not parse.
    pub fn finish(self) -> Result<anthropic::MessagesResponse, StreamError> {
        let (Some(mut m), true) = (self.message, self.stopped) else {
            return Err(StreamError::truncated(Api::Messages));
        };
        m.content = Vec::with_capacity(self.blocks.len());
        for (_, (mut block, json)) in self.blocks {
            if !json.is_empty() {
                let input = serde_json::from_str(&json).map_err(|e| {
                    StreamError::malformed(
                        Api::Messages,
                        format!("tool input JSON does not parse: {e}"),
                    )
                })?;
                block.input = Maybe::Present(input);
            }
            m.content.push(block);
        }
        Ok(m)
    }
}

fn append(into: &mut Maybe<String>, more: Maybe<String>) {
    if let Maybe::Present(t) = more {
        match into {
            Maybe::Present(s) => s.push_str(&t),
            other => *other = Maybe::Present(t),
        }
    }
}
