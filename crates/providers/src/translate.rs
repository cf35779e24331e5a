//! Translation between the OpenAI and Anthropic APIs, streams included.
//!
//! So that a route can fall back from one provider to the other, a request in
//! either dialect can be sent to the other, and the answer — whole or
//! streamed — brought back in the caller's dialect.
//!
//! What is translated: text, images (URL and base64), system prompts, tool
//! definitions, tool choice, tool calls and tool results,
//! `parallel_tool_calls: false` ↔ `tool_choice.disable_parallel_tool_use`,
//! stop sequences, temperature and `top_p`, the output budget, finish
//! reasons and usage.
//! Requests go through the neutral model ([`crate::neutral::Request`]): each
//! API is read into it and written out of it. What has no counterpart is
//! left out and named in [`crate::neutral::Request::untranslated`] (the
//! gateway reports it in `x-palisade-untranslated`): e.g. OpenAI's
//! `response_format`, `seed`, `logprobs`, `n`; Anthropic's `thinking`,
//! `top_k`, `metadata`, document blocks. Whole answers go through
//! [`crate::neutral::Answer`] (only choice 0 of an OpenAI answer is kept;
//! Anthropic's thinking blocks have no place in a chat completion). Streams
//! are still translated pairwise here, and move to the neutral model next.
//!
//! Decisions:
//! - An OpenAI request without an output budget gets
//!   [`DEFAULT_ANTHROPIC_MAX_TOKENS`] (Anthropic requires one).
//! - OpenAI's temperature (0–2) is clamped to Anthropic's 0–1.
//! - Toward OpenAI the budget is sent as `max_tokens`, which every
//!   OpenAI-compatible server understands.
//! - Toward OpenAI a stream asks for `stream_options.include_usage`, so the
//!   Anthropic side can report usage.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, json};

use crate::anthropic::{self, StreamEvent};
use crate::maybe::Maybe;
use crate::stream::OpenAiItem;
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

/// Turns an Anthropic stream into OpenAI stream items, event by event.
#[derive(Debug, Default)]
pub struct AnthropicToOpenAiStream {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    input_tokens: u64,
    /// Anthropic block index → OpenAI tool call index.
    tools: BTreeMap<u32, u32>,
}

impl AnthropicToOpenAiStream {
    /// A translator; `include_usage` adds OpenAI's usage chunk at the end
    /// (as the client's `stream_options.include_usage` asked).
    pub fn new(include_usage: bool) -> Self {
        Self {
            include_usage,
            ..Self::default()
        }
    }

    fn chunk(&self, delta: openai::Delta, finish: Option<String>) -> OpenAiItem {
        OpenAiItem::Chunk(openai::ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![openai::ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map_or(Maybe::Null, Maybe::Present),
                extra: Map::new(),
            }],
            usage: Maybe::Absent,
            extra: Map::new(),
        })
    }

    /// The OpenAI items for one Anthropic event (often none or one).
    pub fn push(&mut self, ev: StreamEvent) -> Vec<OpenAiItem> {
        match ev {
            StreamEvent::MessageStart(m) => {
                self.id = m.id;
                self.model = m.model;
                self.created = now_secs();
                self.input_tokens = m.usage.input_tokens.get().copied().unwrap_or(0);
                vec![self.chunk(
                    openai::Delta {
                        role: Maybe::Present("assistant".to_owned()),
                        content: Maybe::Present(String::new()),
                        ..Default::default()
                    },
                    None,
                )]
            }
            StreamEvent::ContentBlockStart { index, block } if block.kind == "tool_use" => {
                let n = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
                self.tools.insert(index, n);
                vec![self.chunk(
                    openai::Delta {
                        tool_calls: Maybe::Present(vec![openai::ToolCall {
                            index: Maybe::Present(n),
                            id: block.id,
                            kind: Maybe::Present("function".to_owned()),
                            function: Maybe::Present(openai::FunctionCall {
                                name: block.name,
                                arguments: Maybe::Present(String::new()),
                                extra: Map::new(),
                            }),
                            extra: Map::new(),
                        }]),
                        ..Default::default()
                    },
                    None,
                )]
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                if let Maybe::Present(text) = delta.text {
                    return vec![self.chunk(
                        openai::Delta {
                            content: Maybe::Present(text),
                            ..Default::default()
                        },
                        None,
                    )];
                }
                if let (Maybe::Present(json), Some(n)) =
                    (delta.partial_json, self.tools.get(&index).copied())
                {
                    return vec![self.chunk(
                        openai::Delta {
                            tool_calls: Maybe::Present(vec![openai::ToolCall {
                                index: Maybe::Present(n),
                                function: Maybe::Present(openai::FunctionCall {
                                    arguments: Maybe::Present(json),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        },
                        None,
                    )];
                }
                Vec::new()
            }
            StreamEvent::MessageDelta { delta, usage } => {
                let reason = finish_reason_to_openai(
                    delta.stop_reason.get().map_or("end_turn", String::as_str),
                );
                let mut out = vec![self.chunk(openai::Delta::default(), Some(reason.to_owned()))];
                if self.include_usage {
                    let input = usage
                        .input_tokens
                        .get()
                        .copied()
                        .unwrap_or(self.input_tokens);
                    let output = usage.output_tokens.get().copied().unwrap_or(0);
                    out.push(OpenAiItem::Chunk(openai::ChatChunk {
                        id: self.id.clone(),
                        object: "chat.completion.chunk".to_owned(),
                        created: self.created,
                        model: self.model.clone(),
                        choices: Vec::new(),
                        usage: Maybe::Present(openai::Usage::new(input, output)),
                        extra: Map::new(),
                    }));
                }
                out
            }
            StreamEvent::MessageStop => vec![OpenAiItem::Done],
            _ => Vec::new(),
        }
    }
}

/// Turns an OpenAI stream (its first choice) into Anthropic events, item by
/// item.
#[derive(Debug, Default)]
pub struct OpenAiToAnthropicStream {
    started: bool,
    /// The open content block: its index and whether it is text.
    open: Option<(u32, bool)>,
    next_index: u32,
    finish: Option<String>,
    usage: Option<openai::Usage>,
}

impl OpenAiToAnthropicStream {
    /// A translator.
    pub fn new() -> Self {
        Self::default()
    }

    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some((index, _)) = self.open.take() {
            out.push(StreamEvent::ContentBlockStop { index });
        }
    }

    fn open(
        &mut self,
        block: anthropic::ContentBlock,
        is_text: bool,
        out: &mut Vec<StreamEvent>,
    ) -> u32 {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, is_text));
        out.push(StreamEvent::ContentBlockStart { index, block });
        index
    }

    /// The Anthropic events for one OpenAI item.
    pub fn push(&mut self, item: OpenAiItem) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        let chunk = match item {
            OpenAiItem::Done => {
                self.close(&mut out);
                let usage = self.usage.take();
                let stop = finish_reason_to_anthropic(self.finish.as_deref().unwrap_or("stop"));
                out.push(StreamEvent::MessageDelta {
                    delta: anthropic::MessageDeltaBody {
                        stop_reason: Maybe::Present(stop.to_owned()),
                        stop_sequence: Maybe::Null,
                        extra: Map::new(),
                    },
                    usage: anthropic::Usage {
                        input_tokens: usage.as_ref().map(|u| u.prompt_tokens).into(),
                        output_tokens: Maybe::Present(usage.map_or(0, |u| u.completion_tokens)),
                        extra: Map::new(),
                    },
                });
                out.push(StreamEvent::MessageStop);
                return out;
            }
            OpenAiItem::Chunk(c) => c,
        };
        if !self.started {
            self.started = true;
            out.push(StreamEvent::MessageStart(anthropic::MessagesResponse {
                id: chunk.id.clone(),
                kind: "message".to_owned(),
                role: "assistant".to_owned(),
                model: chunk.model.clone(),
                content: Vec::new(),
                stop_reason: Maybe::Null,
                stop_sequence: Maybe::Null,
                usage: anthropic::Usage {
                    input_tokens: Maybe::Present(0),
                    output_tokens: Maybe::Present(0),
                    extra: Map::new(),
                },
                extra: Map::new(),
            }));
        }
        if let Maybe::Present(u) = chunk.usage {
            self.usage = Some(u);
        }
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
            return out;
        };
        if let Maybe::Present(text) = choice.delta.content
            && !text.is_empty()
        {
            let index = match self.open {
                Some((i, true)) => i,
                _ => self.open(text_block(String::new()), true, &mut out),
            };
            out.push(StreamEvent::ContentBlockDelta {
                index,
                delta: anthropic::BlockDelta {
                    kind: "text_delta".to_owned(),
                    text: Maybe::Present(text),
                    ..Default::default()
                },
            });
        }
        for tc in choice.delta.tool_calls.into_option().unwrap_or_default() {
            let f = tc.function.into_option().unwrap_or_default();
            if let Maybe::Present(id) = tc.id {
                let block = anthropic::ContentBlock {
                    kind: "tool_use".to_owned(),
                    id: Maybe::Present(id),
                    name: f.name.clone(),
                    input: Maybe::Present(json!({})),
                    ..Default::default()
                };
                self.open(block, false, &mut out);
            }
            if let (Maybe::Present(args), Some((index, false))) = (f.arguments, self.open)
                && !args.is_empty()
            {
                out.push(StreamEvent::ContentBlockDelta {
                    index,
                    delta: anthropic::BlockDelta {
                        kind: "input_json_delta".to_owned(),
                        partial_json: Maybe::Present(args),
                        ..Default::default()
                    },
                });
            }
        }
        if let Maybe::Present(f) = choice.finish_reason {
            self.finish = Some(f);
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
