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
//! What has no counterpart is dropped and documented here: OpenAI's
//! `response_format`, `seed`, `logprobs`, `n > 1` (only choice 0 is kept);
//! Anthropic's thinking blocks (not sent to OpenAI) and cache control.
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
use serde_json::{Map, Number, Value, json};

use crate::anthropic::{self, StreamEvent};
use crate::maybe::Maybe;
use crate::openai;
use crate::stream::OpenAiItem;

/// The output budget given to an OpenAI request that sets none.
pub const DEFAULT_ANTHROPIC_MAX_TOKENS: u64 = 4096;

/// A request could not be translated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateError {
    message: String,
}

impl TranslateError {
    fn new(message: impl Into<String>) -> Self {
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

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn text_block(text: String) -> anthropic::ContentBlock {
    anthropic::ContentBlock {
        kind: "text".to_owned(),
        text: Maybe::Present(text),
        ..Default::default()
    }
}

/// A `data:` URL's media type and base64 data.
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

fn openai_part_to_block(part: &openai::ContentPart) -> Option<anthropic::ContentBlock> {
    match part.kind.as_str() {
        "text" => Some(text_block(part.text.get().cloned().unwrap_or_default())),
        "image_url" => {
            let url = part.extra.get("image_url")?.get("url")?.as_str()?;
            let source = match parse_data_url(url) {
                Some((media, data)) => {
                    json!({"type": "base64", "media_type": media, "data": data})
                }
                None => json!({"type": "url", "url": url}),
            };
            let mut block = anthropic::ContentBlock {
                kind: "image".to_owned(),
                ..Default::default()
            };
            block.extra.insert("source".to_owned(), source);
            Some(block)
        }
        _ => None,
    }
}

fn content_text(content: &Maybe<openai::Content>) -> String {
    content.get().map(openai::Content::text).unwrap_or_default()
}

/// An Anthropic `tool_use` block as an OpenAI tool call.
fn tool_use_to_call(b: &anthropic::ContentBlock) -> openai::ToolCall {
    openai::ToolCall {
        id: b.id.clone(),
        kind: Maybe::Present("function".to_owned()),
        function: Maybe::Present(openai::FunctionCall {
            name: b.name.clone(),
            arguments: Maybe::Present(
                b.input
                    .get()
                    .map_or_else(|| "{}".to_owned(), Value::to_string),
            ),
            extra: Map::new(),
        }),
        ..Default::default()
    }
}

/// An OpenAI tool call as an Anthropic `tool_use` block.
fn call_to_tool_use(tc: &openai::ToolCall) -> Result<anthropic::ContentBlock, TranslateError> {
    let f = tc.function.get();
    let args = f.and_then(|f| f.arguments.get()).map_or("", String::as_str);
    let input: Value = if args.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(args).map_err(|e| {
            TranslateError::new(format!(
                "tool call arguments are not JSON ({e}); Anthropic needs an object"
            ))
        })?
    };
    Ok(anthropic::ContentBlock {
        kind: "tool_use".to_owned(),
        id: tc.id.clone(),
        name: f.map(|f| f.name.clone()).unwrap_or_default(),
        input: Maybe::Present(input),
        ..Default::default()
    })
}

/// Appends `block` to the conversation, merging consecutive turns of one
/// role (Anthropic wants user and assistant to alternate).
fn push_block(out: &mut Vec<anthropic::Message>, role: &str, block: anthropic::ContentBlock) {
    if let Some(last) = out.last_mut()
        && last.role == role
    {
        match &mut last.content {
            anthropic::MessageContent::Blocks(b) => b.push(block),
            anthropic::MessageContent::Text(t) => {
                let first = text_block(std::mem::take(t));
                last.content = anthropic::MessageContent::Blocks(vec![first, block]);
            }
        }
        return;
    }
    out.push(anthropic::Message {
        role: role.to_owned(),
        content: anthropic::MessageContent::Blocks(vec![block]),
        extra: Map::new(),
    });
}

/// An OpenAI chat request as an Anthropic messages request.
///
/// # Errors
///
/// A tool call whose `arguments` is not a JSON object (Anthropic's `input`
/// must be one).
pub fn openai_request_to_anthropic(
    req: &openai::ChatRequest,
) -> Result<anthropic::MessagesRequest, TranslateError> {
    let mut system = Vec::new();
    let mut messages: Vec<anthropic::Message> = Vec::new();
    for m in &req.messages {
        match m.role.as_str() {
            "system" | "developer" => system.push(content_text(&m.content)),
            "tool" => {
                let mut block = anthropic::ContentBlock {
                    kind: "tool_result".to_owned(),
                    tool_use_id: m.tool_call_id.clone(),
                    ..Default::default()
                };
                block.extra.insert(
                    "content".to_owned(),
                    Value::String(content_text(&m.content)),
                );
                push_block(&mut messages, "user", block);
            }
            role => {
                let role = if role == "assistant" {
                    "assistant"
                } else {
                    "user"
                };
                match m.content.get() {
                    Some(openai::Content::Text(t)) if !t.is_empty() => {
                        push_block(&mut messages, role, text_block(t.clone()));
                    }
                    Some(openai::Content::Parts(parts)) => {
                        for p in parts {
                            if let Some(b) = openai_part_to_block(p) {
                                push_block(&mut messages, role, b);
                            }
                        }
                    }
                    _ => {}
                }
                for tc in m.tool_calls.get().into_iter().flatten() {
                    push_block(&mut messages, "assistant", call_to_tool_use(tc)?);
                }
            }
        }
    }
    let max_tokens = req
        .max_completion_tokens
        .get()
        .or(req.max_tokens.get())
        .copied()
        .unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS);
    let temperature = match req.temperature.get().and_then(Number::as_f64) {
        Some(t) if t > 1.0 => Maybe::Present(Number::from(1)),
        _ => req.temperature.clone(),
    };
    let stop_sequences = match req.stop.get() {
        Some(Value::String(s)) => Maybe::Present(vec![s.clone()]),
        Some(Value::Array(a)) => Maybe::Present(
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => Maybe::Absent,
    };
    let tools = req.tools.get().map(|tools| {
        tools
            .iter()
            .filter_map(|t| t.function.get())
            .map(|f| anthropic::Tool {
                name: f.name.clone(),
                description: f.description.clone(),
                input_schema: Maybe::Present(
                    f.parameters
                        .get()
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                ),
                extra: Map::new(),
            })
            .collect()
    });
    let tool_choice = match req.tool_choice.get() {
        Some(Value::String(s)) if s == "required" => Maybe::Present(json!({"type": "any"})),
        Some(Value::String(s)) if s == "none" => Maybe::Present(json!({"type": "none"})),
        Some(Value::String(_)) => Maybe::Present(json!({"type": "auto"})),
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Maybe::Present(json!({"type": "tool", "name": name})),
            None => Maybe::Absent,
        },
        None => Maybe::Absent,
    };
    // `parallel_tool_calls: false` is Anthropic's `disable_parallel_tool_use`
    // (which lives in `tool_choice`, so it needs one: `auto` by default).
    let serial = req.extra.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let tool_choice = match tool_choice {
        Maybe::Present(Value::Object(mut c)) if serial && c.get("type") != Some(&json!("none")) => {
            c.insert("disable_parallel_tool_use".to_owned(), Value::Bool(true));
            Maybe::Present(Value::Object(c))
        }
        Maybe::Absent if serial && tools.is_some() => {
            Maybe::Present(json!({"type": "auto", "disable_parallel_tool_use": true}))
        }
        other => other,
    };
    let mut extra = Map::new();
    if let Some(p) = req.top_p.get() {
        extra.insert("top_p".to_owned(), Value::Number(p.clone()));
    }
    Ok(anthropic::MessagesRequest {
        model: req.model.clone(),
        messages,
        max_tokens,
        system: if system.is_empty() {
            Maybe::Absent
        } else {
            Maybe::Present(Value::String(system.join("\n\n")))
        },
        stream: req.stream.clone(),
        temperature,
        stop_sequences,
        tools: tools.into(),
        tool_choice,
        extra,
    })
}

/// An Anthropic messages request as an OpenAI chat request.
pub fn anthropic_request_to_openai(req: &anthropic::MessagesRequest) -> openai::ChatRequest {
    let mut messages = Vec::new();
    match req.system.get() {
        Some(Value::String(s)) => messages.push(openai_text_message("system", s.clone())),
        Some(Value::Array(blocks)) => {
            let text: Vec<&str> = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            messages.push(openai_text_message("system", text.join("\n\n")));
        }
        _ => {}
    }
    for m in &req.messages {
        match &m.content {
            anthropic::MessageContent::Text(t) => {
                messages.push(openai_text_message(&m.role, t.clone()));
            }
            anthropic::MessageContent::Blocks(blocks) => {
                let mut parts = Vec::new();
                let mut calls = Vec::new();
                for b in blocks {
                    match b.kind.as_str() {
                        "text" => parts.push(json!({"type": "text", "text": b.text.get().cloned().unwrap_or_default()})),
                        "image" => {
                            let src = b.extra.get("source");
                            let url = match src.and_then(|s| s.get("type")).and_then(Value::as_str) {
                                Some("base64") => {
                                    let media = src.and_then(|s| s.get("media_type")).and_then(Value::as_str).unwrap_or("image/png");
                                    let data = src.and_then(|s| s.get("data")).and_then(Value::as_str).unwrap_or("");
                                    format!("data:{media};base64,{data}")
                                }
                                _ => src.and_then(|s| s.get("url")).and_then(Value::as_str).unwrap_or("").to_owned(),
                            };
                            parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                        }
                        "tool_use" => calls.push(tool_use_to_call(b)),
                        "tool_result" => {
                            let content = match b.extra.get("content") {
                                Some(Value::String(s)) => s.clone(),
                                Some(Value::Array(a)) => a
                                    .iter()
                                    .filter_map(|c| c.get("text").and_then(Value::as_str))
                                    .collect::<Vec<_>>()
                                    .join(""),
                                _ => String::new(),
                            };
                            let mut msg = openai_text_message("tool", content);
                            msg.tool_call_id = b.tool_use_id.clone();
                            messages.push(msg);
                        }
                        // thinking, redacted_thinking, documents …: no counterpart.
                        _ => {}
                    }
                }
                if parts.is_empty() && calls.is_empty() {
                    continue;
                }
                let content = if parts.is_empty() {
                    Maybe::Null
                } else if parts.iter().all(|p| p["type"] == "text") {
                    Maybe::Present(openai::Content::Text(
                        parts
                            .iter()
                            .filter_map(|p| p["text"].as_str())
                            .collect::<Vec<_>>()
                            .join(""),
                    ))
                } else {
                    match serde_json::from_value(Value::Array(parts)) {
                        Ok(p) => Maybe::Present(openai::Content::Parts(p)),
                        Err(_) => Maybe::Null,
                    }
                };
                messages.push(openai::ChatMessage {
                    role: m.role.clone(),
                    content,
                    tool_calls: if calls.is_empty() {
                        Maybe::Absent
                    } else {
                        Maybe::Present(calls)
                    },
                    ..Default::default()
                });
            }
        }
    }
    let tools = req.tools.get().map(|tools| {
        tools
            .iter()
            .map(|t| openai::Tool {
                kind: "function".to_owned(),
                function: Maybe::Present(openai::FunctionDef {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    parameters: t.input_schema.clone(),
                    extra: Map::new(),
                }),
                extra: Map::new(),
            })
            .collect()
    });
    let tool_choice = match req
        .tool_choice
        .get()
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
    {
        Some("any") => Maybe::Present(json!("required")),
        Some("none") => Maybe::Present(json!("none")),
        Some("tool") => match req.tool_choice.get().and_then(|c| c.get("name")) {
            Some(name) => Maybe::Present(json!({"type": "function", "function": {"name": name}})),
            None => Maybe::Absent,
        },
        Some(_) => Maybe::Present(json!("auto")),
        None => Maybe::Absent,
    };
    let streaming = req.stream.get().copied().unwrap_or(false);
    let mut extra = Map::new();
    if let Some(p) = req.extra.get("top_p") {
        extra.insert("top_p".to_owned(), p.clone());
    }
    // Anthropic's `disable_parallel_tool_use` is OpenAI's
    // `parallel_tool_calls: false` (which OpenAI allows only with tools).
    let serial = req
        .tool_choice
        .get()
        .and_then(|c| c.get("disable_parallel_tool_use"))
        == Some(&Value::Bool(true));
    if serial && tools.is_some() {
        extra.insert("parallel_tool_calls".to_owned(), Value::Bool(false));
    }
    openai::ChatRequest {
        model: req.model.clone(),
        messages,
        stream: req.stream.clone(),
        stream_options: if streaming {
            Maybe::Present(json!({"include_usage": true}))
        } else {
            Maybe::Absent
        },
        max_tokens: Maybe::Present(req.max_tokens),
        max_completion_tokens: Maybe::Absent,
        temperature: req.temperature.clone(),
        top_p: Maybe::Absent,
        stop: req
            .stop_sequences
            .get()
            .map(|s| Value::from(s.clone()))
            .into(),
        tools: tools.into(),
        tool_choice,
        response_format: Maybe::Absent,
        extra,
    }
}

fn openai_text_message(role: &str, text: String) -> openai::ChatMessage {
    openai::ChatMessage {
        role: role.to_owned(),
        content: Maybe::Present(openai::Content::Text(text)),
        ..Default::default()
    }
}

/// Anthropic's stop reason as an OpenAI finish reason.
pub fn finish_reason_to_openai(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's finish reason as an Anthropic stop reason.
pub fn finish_reason_to_anthropic(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// An Anthropic answer as an OpenAI chat completion.
pub fn anthropic_response_to_openai(res: &anthropic::MessagesResponse) -> openai::ChatCompletion {
    let text: String = res
        .content
        .iter()
        .filter(|b| b.kind == "text")
        .filter_map(|b| b.text.get().map(String::as_str))
        .collect();
    let calls: Vec<openai::ToolCall> = res
        .content
        .iter()
        .filter(|b| b.kind == "tool_use")
        .map(tool_use_to_call)
        .collect();
    let input = res.usage.input_tokens.get().copied().unwrap_or(0);
    let output = res.usage.output_tokens.get().copied().unwrap_or(0);
    openai::ChatCompletion {
        id: res.id.clone(),
        object: "chat.completion".to_owned(),
        created: now_secs(),
        model: res.model.clone(),
        choices: vec![openai::Choice {
            index: 0,
            message: openai::ChatMessage {
                role: "assistant".to_owned(),
                content: if text.is_empty() && !calls.is_empty() {
                    Maybe::Null
                } else {
                    Maybe::Present(openai::Content::Text(text))
                },
                tool_calls: if calls.is_empty() {
                    Maybe::Absent
                } else {
                    Maybe::Present(calls)
                },
                ..Default::default()
            },
            finish_reason: Maybe::Present(
                finish_reason_to_openai(res.stop_reason.get().map_or("end_turn", String::as_str))
                    .to_owned(),
            ),
            extra: Map::new(),
        }],
        usage: Maybe::Present(openai::Usage::new(input, output)),
        extra: Map::new(),
    }
}

/// An OpenAI chat completion (its first choice) as an Anthropic answer.
///
/// # Errors
///
/// No choice at all, or tool call arguments that are not JSON.
pub fn openai_response_to_anthropic(
    res: &openai::ChatCompletion,
) -> Result<anthropic::MessagesResponse, TranslateError> {
    let choice = res
        .choices
        .first()
        .ok_or_else(|| TranslateError::new("the completion has no choice"))?;
    let mut content = Vec::new();
    let text = content_text(&choice.message.content);
    if !text.is_empty() {
        content.push(text_block(text));
    }
    for tc in choice.message.tool_calls.get().into_iter().flatten() {
        content.push(call_to_tool_use(tc)?);
    }
    let usage = res.usage.get();
    Ok(anthropic::MessagesResponse {
        id: res.id.clone(),
        kind: "message".to_owned(),
        role: "assistant".to_owned(),
        model: res.model.clone(),
        content,
        stop_reason: Maybe::Present(
            finish_reason_to_anthropic(choice.finish_reason.get().map_or("stop", String::as_str))
                .to_owned(),
        ),
        stop_sequence: Maybe::Null,
        usage: anthropic::Usage {
            input_tokens: Maybe::Present(usage.map_or(0, |u| u.prompt_tokens)),
            output_tokens: Maybe::Present(usage.map_or(0, |u| u.completion_tokens)),
            extra: Map::new(),
        },
        extra: Map::new(),
    })
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
