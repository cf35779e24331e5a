//! Translation between the OpenAI chat completions and Anthropic messages
//! APIs, streams included: the pairwise conveniences of the translation
//! core.
//!
//! The core is [`crate::dialect`]: each API (the Responses API too) reads
//! into and writes out of the neutral model ([`crate::neutral`]), and any
//! API is translated to any other as `from.read_* → neutral → to.write_*`
//! (the gateway does only that). The functions and stream types here are
//! those compositions for the two chat APIs, kept for library users.
//!
//! What is translated: text, images (URL and base64), system prompts, tool
//! definitions, tool choice, tool calls and tool results,
//! `parallel_tool_calls: false` ↔ `tool_choice.disable_parallel_tool_use`,
//! stop sequences, temperature and `top_p`, the output budget, finish
//! reasons, usage with cache reads and writes, reasoning (Anthropic's
//! thinking blocks and signatures ↔ chat completions' `reasoning_content`
//! ↔ Responses reasoning items) and refusals.
//!
//! What has no counterpart is left out and named, never dropped silently:
//! a request's fields in [`crate::neutral::Request::untranslated`] (e.g.
//! OpenAI's `response_format`, `seed`, `logprobs`; Anthropic's `thinking`,
//! `top_k`, `metadata`, document blocks; the Responses API's `text`,
//! `reasoning`, `store`, built-in tools) and in
//! [`crate::dialect::Written::left_out`] (reasoning toward chat
//! completions; unsigned reasoning toward Anthropic; stop sequences toward
//! the Responses API); an answer's in [`crate::neutral::Answer::untranslated`]
//! and [`crate::dialect::WrittenAnswer::left_out`] (a chat completion's
//! choices after the first, `redacted_thinking` and server-tool blocks,
//! built-in tool items, a reasoning signature the caller's API cannot
//! carry); a stream's through [`crate::dialect::StreamReader::untranslated`]
//! and [`crate::dialect::StreamWriter::untranslated`]. A chat request with
//! `n` > 1 cannot be translated at all (one answer per request elsewhere).
//! Named too: a message's `name` and other message-level fields
//! (`messages[].audio` …), non-function tools (chat completions' `custom`,
//! Anthropic's server tools), `cache_control`, citations, a tool result's
//! `is_error` and non-text content, an image's `detail`, Responses output
//! annotations, the arguments of a streamed tool call interleaved with
//! another's (toward APIs that stream one block at a time), and the keys
//! nested inside what is carried that carry something (not `null`, not
//! `[]`): a content part's or block's own fields, a tool definition's
//! (`strict` …), a tool call's, an input item's (`{what} field `{key}``;
//! a replayed item's `id` and `status` are bookkeeping, not named); an
//! Anthropic image whose `source` is neither `base64` nor `url` (a `file`)
//! is named whole. Carried by making one up: the id of a
//! tool call that came without one (`call_palisade_N`,
//! `toolu_palisade_N`). The gateway reports all that is named:
//! `x-palisade-untranslated` (request fields),
//! `palisade_untranslated_total{api,field}`, a log line and a span
//! attribute per call.
//!
//! Decisions:
//! - An OpenAI request without an output budget gets
//!   [`DEFAULT_ANTHROPIC_MAX_TOKENS`] (Anthropic requires one).
//! - OpenAI's temperature (0–2) is clamped to Anthropic's 0–1.
//! - Toward OpenAI the budget is sent as `max_tokens`, which every
//!   OpenAI-compatible server understands.
//! - Toward OpenAI a stream asks for `stream_options.include_usage`, so the
//!   Anthropic side can report usage.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use crate::anthropic::{self, StreamEvent};
use crate::maybe::Maybe;
use crate::openai::OpenAiItem;
use crate::{neutral, openai};

/// The output budget given to an OpenAI request that sets none.
pub const DEFAULT_ANTHROPIC_MAX_TOKENS: u64 = 4096;

/// A request could not be translated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateError {
    message: String,
}

impl TranslateError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot translate the request: {}", self.message)
    }
}

impl std::error::Error for TranslateError {}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn text_block(text: String) -> anthropic::ContentBlock {
    anthropic::ContentBlock {
        kind: "text".to_owned(),
        text: Maybe::Present(text),
        ..Default::default()
    }
}

/// An OpenAI chat request as an Anthropic messages request, through the
/// neutral model ([`crate::neutral::Request`]; its docs say what is
/// carried and what is reported as untranslated).
///
/// # Errors
///
/// A tool call whose `arguments` is not a JSON object (Anthropic's `input`
/// must be one).
pub fn openai_request_to_anthropic(
    req: &openai::ChatRequest,
) -> Result<anthropic::MessagesRequest, TranslateError> {
    Ok(neutral::Request::from_openai(req)?.to_anthropic())
}

/// An Anthropic messages request as an OpenAI chat request, through the
/// neutral model ([`crate::neutral::Request`]).
pub fn anthropic_request_to_openai(req: &anthropic::MessagesRequest) -> openai::ChatRequest {
    neutral::Request::from_anthropic(req).to_openai()
}

/// Anthropic's stop reason as an OpenAI finish reason
/// ([`neutral::Finish`]).
pub fn finish_reason_to_openai(stop_reason: &str) -> &'static str {
    neutral::Finish::from_anthropic(stop_reason).to_openai()
}

/// OpenAI's finish reason as an Anthropic stop reason
/// ([`neutral::Finish`]).
pub fn finish_reason_to_anthropic(finish_reason: &str) -> &'static str {
    neutral::Finish::from_openai(finish_reason).to_anthropic()
}

/// An Anthropic answer as an OpenAI chat completion, through the neutral
/// model ([`neutral::Answer`]; usage with cached tokens carried).
pub fn anthropic_response_to_openai(res: &anthropic::MessagesResponse) -> openai::ChatCompletion {
    neutral::Answer::from_anthropic(res).to_openai()
}

/// An OpenAI chat completion (its first choice) as an Anthropic answer,
/// through the neutral model ([`neutral::Answer`]).
///
/// # Errors
///
/// No choice at all, or tool call arguments that are not JSON.
pub fn openai_response_to_anthropic(
    res: &openai::ChatCompletion,
) -> Result<anthropic::MessagesResponse, TranslateError> {
    Ok(neutral::Answer::from_openai(res)?.to_anthropic())
}

/// Turns an Anthropic stream into OpenAI stream items, event by event,
/// through the neutral stream model ([`neutral::Delta`]).
#[derive(Debug, Default)]
pub struct AnthropicToOpenAiStream {
    read: neutral::FromAnthropicStream,
    write: neutral::ToOpenAiStream,
}

impl AnthropicToOpenAiStream {
    /// A translator; `include_usage` adds OpenAI's usage chunk at the end
    /// (as the client's `stream_options.include_usage` asked).
    pub fn new(include_usage: bool) -> Self {
        Self {
            read: neutral::FromAnthropicStream::default(),
            write: neutral::ToOpenAiStream::new(include_usage),
        }
    }

    /// The OpenAI items for one Anthropic event (often none or one).
    pub fn push(&mut self, ev: StreamEvent) -> Vec<OpenAiItem> {
        let mut out = Vec::new();
        for d in self.read.push(ev) {
            out.extend(self.write.push(d));
        }
        out
    }
}

/// Turns an OpenAI stream (its first choice) into Anthropic events, item by
/// item, through the neutral stream model ([`neutral::Delta`]).
#[derive(Debug, Default)]
pub struct OpenAiToAnthropicStream {
    read: neutral::FromOpenAiStream,
    write: neutral::ToAnthropicStream,
}

impl OpenAiToAnthropicStream {
    /// A translator.
    pub fn new() -> Self {
        Self::default()
    }

    /// The Anthropic events for one OpenAI item.
    pub fn push(&mut self, item: OpenAiItem) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        for d in self.read.push(item) {
            out.extend(self.write.push(d));
        }
        out
    }
}

/// An OpenAI stream item as SSE bytes (`data: …\n\n`).
pub fn openai_sse(item: &OpenAiItem) -> Bytes {
    match item {
        OpenAiItem::Done => Bytes::from_static(b"data: [DONE]\n\n"),
        OpenAiItem::Chunk(c) => {
            let mut b = BytesMut::from(&b"data: "[..]);
            b.put_slice(serde_json::to_string(c).unwrap_or_default().as_bytes());
            b.put_slice(b"\n\n");
            b.freeze()
        }
    }
}

/// An Anthropic stream event as SSE bytes (`event: …\ndata: …\n\n`).
pub fn anthropic_sse(ev: &StreamEvent) -> Bytes {
    let mut b = BytesMut::from(&b"event: "[..]);
    b.put_slice(ev.kind().as_bytes());
    b.put_slice(b"\ndata: ");
    b.put_slice(ev.to_value().to_string().as_bytes());
    b.put_slice(b"\n\n");
    b.freeze()
}
