//! The neutral model requests, answers and streams are translated through:
//! each API reads its own request into a [`Request`], its answer into an
//! [`Answer`], its stream into [`Delta`]s, and writes each out again — so N
//! APIs need 2N translators of each kind, not N × (N − 1). Each API's
//! reader and writer is its [`crate::dialect::Dialect`]; the chat
//! completions and Anthropic ones are built on the inherent methods and
//! stream types here ([`FromOpenAiStream`], [`FromAnthropicStream`],
//! [`ToOpenAiStream`], [`ToAnthropicStream`]), which the pairwise
//! functions of [`crate::translate`] compose too.
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

use serde_json::{Map, Number, Value, json};

use crate::anthropic;
use crate::maybe::Maybe;
use crate::openai;
use crate::translate::{DEFAULT_ANTHROPIC_MAX_TOKENS, TranslateError};

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
    fn new(role: Role, part: Part) -> Self {
        Self {
            role,
            parts: vec![part],
        }
    }
}

/// OpenAI request fields the neutral model carries (the rest is reported
/// as untranslated).
const OPENAI_CARRIED: [&str; 2] = ["parallel_tool_calls", "n"];
/// Anthropic request fields the neutral model carries.
const ANTHROPIC_CARRIED: [&str; 1] = ["top_p"];

/// A `data:` URL's media type and base64 data.
pub(crate) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

fn openai_text(content: &Maybe<openai::Content>) -> String {
    content.get().map(openai::Content::text).unwrap_or_default()
}

impl Request {
    /// Reads an OpenAI chat request.
    ///
    /// # Errors
    ///
    /// A tool call whose `arguments` is not JSON.
    pub fn from_openai(req: &openai::ChatRequest) -> Result<Self, TranslateError> {
        if let Some(n) = req
            .extra
            .get("n")
            .and_then(Value::as_u64)
            .filter(|n| *n > 1)
        {
            return Err(TranslateError::new(format!(
                "`n` is {n}: the target's API gives one answer per request; ask an OpenAI target for several, or send `n: 1`"
            )));
        }
        let mut out = Request {
            model: req.model.clone(),
            max_output_tokens: req
                .max_completion_tokens
                .get()
                .or(req.max_tokens.get())
                .copied(),
            temperature: req.temperature.get().cloned(),
            top_p: req.top_p.get().cloned(),
            stream: req.stream.clone(),
            ..Default::default()
        };
        for m in &req.messages {
            match m.role.as_str() {
                "system" | "developer" => out.system.push(openai_text(&m.content)),
                "tool" => out.push(
                    Role::User,
                    Part::ToolResult {
                        call_id: m.tool_call_id.clone(),
                        content: openai_text(&m.content),
                    },
                ),
                role => {
                    let role = if role == "assistant" {
                        Role::Assistant
                    } else {
                        Role::User
                    };
                    match m.content.get() {
                        Some(openai::Content::Text(t)) if !t.is_empty() => {
                            out.push(role, Part::Text(t.clone()));
                        }
                        Some(openai::Content::Parts(parts)) => {
                            for p in parts {
                                match openai_part(p) {
                                    Some(part) => out.push(role, part),
                                    None => {
                                        out.untranslated.push(format!("content part `{}`", p.kind))
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                    for tc in m.tool_calls.get().into_iter().flatten() {
                        out.push(Role::Assistant, openai_call(tc)?);
                    }
                }
            }
        }
        out.stop = match req.stop.get() {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        out.tools = req.tools.get().map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.function.get())
                .map(|f| ToolDef {
                    name: f.name.clone(),
                    description: f.description.clone(),
                    parameters: f.parameters.clone(),
                })
                .collect()
        });
        out.tool_choice = match req.tool_choice.get() {
            Some(Value::String(s)) if s == "required" => Some(ToolChoice::Any),
            Some(Value::String(s)) if s == "none" => Some(ToolChoice::None),
            Some(Value::String(_)) => Some(ToolChoice::Auto),
            Some(v) => v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .map(|n| ToolChoice::Tool(n.to_owned())),
            None => None,
        };
        out.parallel_tool_calls = req
            .extra
            .get("parallel_tool_calls")
            .and_then(Value::as_bool);
        if req.response_format.get().is_some() {
            out.untranslated.push("response_format".to_owned());
        }
        out.untranslated.extend(
            req.extra
                .keys()
                .filter(|k| !OPENAI_CARRIED.contains(&k.as_str()))
                .cloned(),
        );
        Ok(out)
    }

    /// Reads an Anthropic messages request.
    pub fn from_anthropic(req: &anthropic::MessagesRequest) -> Self {
        let mut out = Request {
            model: req.model.clone(),
            max_output_tokens: Some(req.max_tokens),
            temperature: req.temperature.get().cloned(),
            top_p: req.extra.get("top_p").and_then(Value::as_number).cloned(),
            stop: req.stop_sequences.get().cloned().unwrap_or_default(),
            stream: req.stream.clone(),
            ..Default::default()
        };
        match req.system.get() {
            Some(Value::String(s)) => out.system.push(s.clone()),
            Some(Value::Array(blocks)) => {
                let text: Vec<&str> = blocks
                    .iter()
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect();
                out.system.push(text.join("\n\n"));
            }
            _ => {}
        }
        for m in &req.messages {
            let role = if m.role == "assistant" {
                Role::Assistant
            } else {
                Role::User
            };
            let mut turn = Turn {
                role,
                parts: Vec::new(),
            };
            match &m.content {
                anthropic::MessageContent::Text(t) => turn.parts.push(Part::Text(t.clone())),
                anthropic::MessageContent::Blocks(blocks) => {
                    for b in blocks {
                        match anthropic_block(b) {
                            Some(p) => turn.parts.push(p),
                            None => out.untranslated.push(format!("content block `{}`", b.kind)),
                        }
                    }
                }
            }
            out.turns.push(turn);
        }
        out.tools = req.tools.get().map(|tools| {
            tools
                .iter()
                .map(|t| ToolDef {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    parameters: t.input_schema.clone(),
                })
                .collect()
        });
        let choice = req.tool_choice.get();
        out.tool_choice = match choice.and_then(|c| c.get("type")).and_then(Value::as_str) {
            Some("any") => Some(ToolChoice::Any),
            Some("none") => Some(ToolChoice::None),
            Some("tool") => choice
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .map(|n| ToolChoice::Tool(n.to_owned())),
            Some(_) => Some(ToolChoice::Auto),
            None => None,
        };
        if choice.and_then(|c| c.get("disable_parallel_tool_use")) == Some(&Value::Bool(true)) {
            out.parallel_tool_calls = Some(false);
        }
        out.untranslated.extend(
            req.extra
                .keys()
                .filter(|k| !ANTHROPIC_CARRIED.contains(&k.as_str()))
                .cloned(),
        );
        out
    }

    pub(crate) fn push(&mut self, role: Role, part: Part) {
        match self.turns.last_mut() {
            Some(t) if t.role == role => t.parts.push(part),
            _ => self.turns.push(Turn::new(role, part)),
        }
    }

    /// Writes an Anthropic messages request. Without an output budget it
    /// gets [`DEFAULT_ANTHROPIC_MAX_TOKENS`] (Anthropic requires one); a
    /// temperature over 1 is clamped to Anthropic's 0–1; consecutive turns
    /// of one role are merged (Anthropic wants them to alternate).
    pub fn to_anthropic(&self) -> anthropic::MessagesRequest {
        self.to_anthropic_reporting().0
    }

    /// [`to_anthropic`](Self::to_anthropic), with what it left out by name
    /// (reasoning without Anthropic's signature, which Anthropic refuses).
    pub fn to_anthropic_reporting(&self) -> (anthropic::MessagesRequest, Vec<String>) {
        let mut left_out = Vec::new();
        let mut messages: Vec<anthropic::Message> = Vec::new();
        for turn in &self.turns {
            let role = match turn.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            for part in &turn.parts {
                // A tool call is the assistant's, wherever it was written.
                let role = match part {
                    Part::ToolCall { .. } => "assistant",
                    Part::ToolResult { .. } => "user",
                    _ => role,
                };
                if let Some(block) = anthropic_block_of(part, true, &mut left_out) {
                    push_block(&mut messages, role, block);
                }
            }
        }
        let temperature = match self.temperature.as_ref().and_then(Number::as_f64) {
            Some(t) if t > 1.0 => Maybe::Present(Number::from(1)),
            _ => self.temperature.clone().into(),
        };
        let tools: Option<Vec<anthropic::Tool>> = self.tools.as_ref().map(|tools| {
            tools
                .iter()
                .map(|t| anthropic::Tool {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    input_schema: Maybe::Present(
                        t.parameters
                            .get()
                            .cloned()
                            .unwrap_or_else(|| json!({"type": "object"})),
                    ),
                    extra: Map::new(),
                })
                .collect()
        });
        let mut tool_choice = match &self.tool_choice {
            Some(ToolChoice::Any) => Some(json!({"type": "any"})),
            Some(ToolChoice::None) => Some(json!({"type": "none"})),
            Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
            Some(ToolChoice::Tool(name)) => Some(json!({"type": "tool", "name": name})),
            None => None,
        };
        // `parallel_tool_calls: false` is Anthropic's
        // `disable_parallel_tool_use`, which lives in `tool_choice` (so it
        // needs one: `auto` by default).
        if self.parallel_tool_calls == Some(false) {
            match &mut tool_choice {
                Some(Value::Object(c)) if c.get("type") != Some(&json!("none")) => {
                    c.insert("disable_parallel_tool_use".to_owned(), Value::Bool(true));
                }
                None if tools.is_some() => {
                    tool_choice = Some(json!({"type": "auto", "disable_parallel_tool_use": true}));
                }
                _ => {}
            }
        }
        let mut extra = Map::new();
        if let Some(p) = &self.top_p {
            extra.insert("top_p".to_owned(), Value::Number(p.clone()));
        }
        let req = anthropic::MessagesRequest {
            model: self.model.clone(),
            messages,
            max_tokens: self
                .max_output_tokens
                .unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS),
            system: if self.system.is_empty() {
                Maybe::Absent
            } else {
                Maybe::Present(Value::String(self.system.join("\n\n")))
            },
            stream: self.stream.clone(),
            temperature,
            stop_sequences: if self.stop.is_empty() {
                Maybe::Absent
            } else {
                Maybe::Present(self.stop.clone())
            },
            tools: tools.into(),
            tool_choice: tool_choice.into(),
            extra,
        };
        (req, left_out)
    }

    /// Writes an OpenAI chat request. The budget is sent as `max_tokens`,
    /// which every OpenAI-compatible server understands; a stream asks for
    /// `stream_options.include_usage`, so usage can be reported; tool
    /// results become `tool` messages.
    pub fn to_openai(&self) -> openai::ChatRequest {
        self.to_openai_reporting().0
    }

    /// [`to_openai`](Self::to_openai), with what it left out by name
    /// (reasoning, which chat completions take no part of in a request).
    pub fn to_openai_reporting(&self) -> (openai::ChatRequest, Vec<String>) {
        let mut left_out = Vec::new();
        let mut messages = Vec::new();
        for s in &self.system {
            messages.push(openai_text_message("system", s.clone()));
        }
        for turn in &self.turns {
            push_openai_turn(&mut messages, turn, &mut left_out);
        }
        let tools: Option<Vec<openai::Tool>> = self.tools.as_ref().map(|tools| {
            tools
                .iter()
                .map(|t| openai::Tool {
                    kind: "function".to_owned(),
                    function: Maybe::Present(openai::FunctionDef {
                        name: t.name.clone(),
                        description: t.description.clone(),
                        parameters: t.parameters.clone(),
                        extra: Map::new(),
                    }),
                    extra: Map::new(),
                })
                .collect()
        });
        let tool_choice = match &self.tool_choice {
            Some(ToolChoice::Any) => Maybe::Present(json!("required")),
            Some(ToolChoice::None) => Maybe::Present(json!("none")),
            Some(ToolChoice::Auto) => Maybe::Present(json!("auto")),
            Some(ToolChoice::Tool(name)) => {
                Maybe::Present(json!({"type": "function", "function": {"name": name}}))
            }
            None => Maybe::Absent,
        };
        let mut extra = Map::new();
        if let Some(p) = &self.top_p {
            extra.insert("top_p".to_owned(), Value::Number(p.clone()));
        }
        // OpenAI allows `parallel_tool_calls` only with tools.
        if self.parallel_tool_calls == Some(false) && tools.is_some() {
            extra.insert("parallel_tool_calls".to_owned(), Value::Bool(false));
        }
        let streaming = self.stream.get().copied().unwrap_or(false);
        let req = openai::ChatRequest {
            model: self.model.clone(),
            messages,
            stream: self.stream.clone(),
            stream_options: if streaming {
                Maybe::Present(json!({"include_usage": true}))
            } else {
                Maybe::Absent
            },
            max_tokens: self.max_output_tokens.into(),
            max_completion_tokens: Maybe::Absent,
            temperature: self.temperature.clone().into(),
            top_p: Maybe::Absent,
            stop: if self.stop.is_empty() {
                Maybe::Absent
            } else {
                Maybe::Present(Value::from(self.stop.clone()))
            },
            tools: tools.into(),
            tool_choice,
            response_format: Maybe::Absent,
            extra,
        };
        (req, left_out)
    }
}

fn openai_part(part: &openai::ContentPart) -> Option<Part> {
    match part.kind.as_str() {
        "text" => Some(Part::Text(part.text.get().cloned().unwrap_or_default())),
        "image_url" => {
            let url = part.extra.get("image_url")?.get("url")?.as_str()?;
            Some(Part::Image(match parse_data_url(url) {
                Some((media, data)) => Image::Base64 {
                    media_type: media.to_owned(),
                    data: data.to_owned(),
                },
                None => Image::Url(url.to_owned()),
            }))
        }
        _ => None,
    }
}

fn openai_call(tc: &openai::ToolCall) -> Result<Part, TranslateError> {
    let f = tc.function.get();
    let args = f.and_then(|f| f.arguments.get()).map_or("", String::as_str);
    let arguments: Value = if args.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(args).map_err(|e| {
            TranslateError::new(format!(
                "tool call arguments are not JSON ({e}); Anthropic needs an object"
            ))
        })?
    };
    Ok(Part::ToolCall {
        id: tc.id.clone(),
        name: f.map(|f| f.name.clone()).unwrap_or_default(),
        arguments,
    })
}

fn anthropic_block(b: &anthropic::ContentBlock) -> Option<Part> {
    match b.kind.as_str() {
        "text" => Some(Part::Text(b.text.get().cloned().unwrap_or_default())),
        "image" => {
            let src = b.extra.get("source");
            let field = |k: &str| src.and_then(|s| s.get(k)).and_then(Value::as_str);
            Some(Part::Image(match field("type") {
                Some("base64") => Image::Base64 {
                    media_type: field("media_type").unwrap_or("image/png").to_owned(),
                    data: field("data").unwrap_or("").to_owned(),
                },
                _ => Image::Url(field("url").unwrap_or("").to_owned()),
            }))
        }
        "tool_use" => Some(Part::ToolCall {
            id: b.id.clone(),
            name: b.name.clone(),
            arguments: b.input.get().cloned().unwrap_or_else(|| json!({})),
        }),
        "tool_result" => Some(Part::ToolResult {
            call_id: b.tool_use_id.clone(),
            content: match b.extra.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|c| c.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
                _ => String::new(),
            },
        }),
        "thinking" => Some(Part::Reasoning {
            text: b.thinking.get().cloned().unwrap_or_default(),
            signature: b.signature.get().cloned().map(Signature::Anthropic),
        }),
        // redacted_thinking, documents …: no counterpart.
        _ => None,
    }
}

/// `part` as an Anthropic content block; what it cannot be is noted in
/// `left_out`. Reasoning is a `thinking` block with Anthropic's signature;
/// reasoning another provider made has none, so in an answer its block's
/// `signature` is empty, and in a request it is left out (Anthropic
/// refuses a thinking block it did not sign).
fn anthropic_block_of(
    part: &Part,
    in_request: bool,
    left_out: &mut Vec<String>,
) -> Option<anthropic::ContentBlock> {
    Some(match part {
        Part::Text(t) | Part::Refusal(t) => crate::translate::text_block(t.clone()),
        Part::Reasoning { text, signature } => {
            let signature = match signature {
                Some(Signature::Anthropic(sig)) => sig.clone(),
                _ if in_request => {
                    note(left_out, "reasoning without an Anthropic signature");
                    return None;
                }
                Some(Signature::OpenAi(_)) => {
                    note(left_out, "reasoning signature");
                    String::new()
                }
                None => String::new(),
            };
            anthropic::ContentBlock {
                kind: "thinking".to_owned(),
                thinking: Maybe::Present(text.clone()),
                signature: Maybe::Present(signature),
                ..Default::default()
            }
        }
        Part::Image(img) => {
            let source = match img {
                Image::Base64 { media_type, data } => {
                    json!({"type": "base64", "media_type": media_type, "data": data})
                }
                Image::Url(url) => json!({"type": "url", "url": url}),
            };
            let mut block = anthropic::ContentBlock {
                kind: "image".to_owned(),
                ..Default::default()
            };
            block.extra.insert("source".to_owned(), source);
            block
        }
        Part::ToolCall {
            id,
            name,
            arguments,
        } => anthropic::ContentBlock {
            kind: "tool_use".to_owned(),
            id: id.clone(),
            name: name.clone(),
            input: Maybe::Present(arguments.clone()),
            ..Default::default()
        },
        Part::ToolResult { call_id, content } => {
            let mut block = anthropic::ContentBlock {
                kind: "tool_result".to_owned(),
                tool_use_id: call_id.clone(),
                ..Default::default()
            };
            block
                .extra
                .insert("content".to_owned(), Value::String(content.clone()));
            block
        }
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
                let first = crate::translate::text_block(std::mem::take(t));
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

fn openai_text_message(role: &str, text: String) -> openai::ChatMessage {
    openai::ChatMessage {
        role: role.to_owned(),
        content: Maybe::Present(openai::Content::Text(text)),
        ..Default::default()
    }
}

fn openai_tool_call(
    id: &Maybe<String>,
    name: &Maybe<String>,
    arguments: &Value,
) -> openai::ToolCall {
    openai::ToolCall {
        id: id.clone(),
        kind: Maybe::Present("function".to_owned()),
        function: Maybe::Present(openai::FunctionCall {
            name: name.clone(),
            arguments: Maybe::Present(arguments.to_string()),
            extra: Map::new(),
        }),
        ..Default::default()
    }
}

/// One neutral turn as OpenAI messages: its text and images as one message
/// (text alone as a string), its tool calls on it, each tool result as a
/// `tool` message.
fn push_openai_turn(
    messages: &mut Vec<openai::ChatMessage>,
    turn: &Turn,
    left_out: &mut Vec<String>,
) {
    let role = match turn.role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for p in &turn.parts {
        match p {
            Part::Text(t) | Part::Refusal(t) => parts.push(json!({"type": "text", "text": t})),
            Part::Reasoning { .. } => note(left_out, "reasoning"),
            Part::Image(img) => {
                let url = match img {
                    Image::Base64 { media_type, data } => {
                        format!("data:{media_type};base64,{data}")
                    }
                    Image::Url(u) => u.clone(),
                };
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            Part::ToolCall {
                id,
                name,
                arguments,
            } => calls.push(openai_tool_call(id, name, arguments)),
            Part::ToolResult { call_id, content } => {
                let mut msg = openai_text_message("tool", content.clone());
                msg.tool_call_id = call_id.clone();
                messages.push(msg);
            }
        }
    }
    if parts.is_empty() && calls.is_empty() {
        return;
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
        role: role.to_owned(),
        content,
        tool_calls: if calls.is_empty() {
            Maybe::Absent
        } else {
            Maybe::Present(calls)
        },
        ..Default::default()
    });
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

impl Finish {
    /// OpenAI's `finish_reason` (`stop` for one it does not know).
    pub fn from_openai(reason: &str) -> Self {
        match reason {
            "length" => Self::Length,
            "tool_calls" | "function_call" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            _ => Self::Stop,
        }
    }

    /// Anthropic's `stop_reason` (`end_turn` for one it does not know).
    pub fn from_anthropic(reason: &str) -> Self {
        match reason {
            "max_tokens" | "model_context_window_exceeded" => Self::Length,
            "tool_use" => Self::ToolCalls,
            "refusal" => Self::ContentFilter,
            _ => Self::Stop,
        }
    }

    /// As OpenAI's `finish_reason`.
    pub fn to_openai(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
        }
    }

    /// As Anthropic's `stop_reason`.
    pub fn to_anthropic(self) -> &'static str {
        match self {
            Self::Stop => "end_turn",
            Self::Length => "max_tokens",
            Self::ToolCalls => "tool_use",
            Self::ContentFilter => "refusal",
        }
    }
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
}

fn count(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0)
}

impl Usage {
    /// OpenAI's usage object.
    pub fn from_openai(u: &openai::Usage) -> Self {
        Self {
            input: u.prompt_tokens,
            output: u.completion_tokens,
            cached_input: count(
                u.extra
                    .get("prompt_tokens_details")
                    .and_then(|d| d.get("cached_tokens")),
            ),
            cache_write_input: 0,
        }
    }

    /// Anthropic's usage object.
    pub fn from_anthropic(u: &anthropic::Usage) -> Self {
        let read = count(u.extra.get("cache_read_input_tokens"));
        let written = count(u.extra.get("cache_creation_input_tokens"));
        Self {
            input: u.input_tokens.get().copied().unwrap_or(0) + read + written,
            output: u.output_tokens.get().copied().unwrap_or(0),
            cached_input: read,
            cache_write_input: written,
        }
    }

    /// As OpenAI's usage object (cached tokens in `prompt_tokens_details`).
    pub fn to_openai(self) -> openai::Usage {
        let mut u = openai::Usage::new(self.input, self.output);
        if self.cached_input > 0 {
            u.extra.insert(
                "prompt_tokens_details".to_owned(),
                json!({"cached_tokens": self.cached_input}),
            );
        }
        u
    }

    /// As Anthropic's usage object (cache reads and writes apart from
    /// `input_tokens`).
    pub fn to_anthropic(self) -> anthropic::Usage {
        let mut extra = Map::new();
        if self.cached_input > 0 {
            extra.insert(
                "cache_read_input_tokens".to_owned(),
                Value::from(self.cached_input),
            );
        }
        if self.cache_write_input > 0 {
            extra.insert(
                "cache_creation_input_tokens".to_owned(),
                Value::from(self.cache_write_input),
            );
        }
        anthropic::Usage {
            input_tokens: Maybe::Present(
                self.input
                    .saturating_sub(self.cached_input)
                    .saturating_sub(self.cache_write_input),
            ),
            output_tokens: Maybe::Present(self.output),
            extra,
        }
    }
}

/// The reasoning text of an OpenAI-compatible message or delta:
/// `reasoning_content` (DeepSeek, vLLM) or `reasoning` (OpenRouter, newer
/// vLLM).
fn openai_reasoning(extra: &Map<String, Value>) -> Option<&str> {
    extra
        .get("reasoning_content")
        .or_else(|| extra.get("reasoning"))
        .and_then(Value::as_str)
}

/// Notes `name` once.
pub(crate) fn note(list: &mut Vec<String>, name: impl Into<String>) {
    let name = name.into();
    if !list.contains(&name) {
        list.push(name);
    }
}

impl Answer {
    /// Reads an OpenAI chat completion: its first choice (the others are
    /// named in [`untranslated`](Self::untranslated)), text, refusal,
    /// reasoning (`reasoning_content` or `reasoning`, as compatible servers
    /// send it) and tool calls.
    ///
    /// # Errors
    ///
    /// No choice at all, or tool call arguments that are not JSON.
    pub fn from_openai(res: &openai::ChatCompletion) -> Result<Self, TranslateError> {
        let choice = res
            .choices
            .first()
            .ok_or_else(|| TranslateError::new("the completion has no choice"))?;
        let mut untranslated = Vec::new();
        if res.choices.len() > 1 {
            note(&mut untranslated, "choices[1..]");
        }
        let mut parts = Vec::new();
        if let Some(r) = openai_reasoning(&choice.message.extra).filter(|r| !r.is_empty()) {
            parts.push(Part::Reasoning {
                text: r.to_owned(),
                signature: None,
            });
        }
        let text = openai_text(&choice.message.content);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if let Some(r) = choice.message.refusal.get().filter(|r| !r.is_empty()) {
            parts.push(Part::Refusal(r.clone()));
        }
        for tc in choice.message.tool_calls.get().into_iter().flatten() {
            parts.push(openai_call(tc)?);
        }
        let mut finish =
            Finish::from_openai(choice.finish_reason.get().map_or("stop", String::as_str));
        if finish == Finish::Stop && parts.iter().any(|p| matches!(p, Part::Refusal(_))) {
            finish = Finish::ContentFilter;
        }
        Ok(Self {
            id: res.id.clone(),
            model: res.model.clone(),
            parts,
            finish,
            usage: res.usage.get().map(Usage::from_openai).unwrap_or_default(),
            untranslated,
        })
    }

    /// Reads an Anthropic answer: text, tool calls and thinking blocks
    /// (with their signatures); other blocks (`redacted_thinking`, server
    /// tool results …) are named in [`untranslated`](Self::untranslated).
    pub fn from_anthropic(res: &anthropic::MessagesResponse) -> Self {
        let mut untranslated = Vec::new();
        let mut parts = Vec::new();
        for b in &res.content {
            match b.kind.as_str() {
                "text" | "tool_use" | "thinking" => parts.extend(anthropic_block(b)),
                other => note(&mut untranslated, format!("content block `{other}`")),
            }
        }
        Self {
            id: res.id.clone(),
            model: res.model.clone(),
            parts,
            finish: Finish::from_anthropic(
                res.stop_reason.get().map_or("end_turn", String::as_str),
            ),
            usage: Usage::from_anthropic(&res.usage),
            untranslated,
        }
    }

    /// Writes an OpenAI chat completion of one choice (`created`: now):
    /// reasoning as `reasoning_content` (its signature has no place and is
    /// named in `untranslated`), a refusal as `refusal`.
    pub fn to_openai(&self) -> openai::ChatCompletion {
        self.to_openai_reporting().0
    }

    /// [`to_openai`](Self::to_openai), with what it could not carry, by
    /// name.
    pub fn to_openai_reporting(&self) -> (openai::ChatCompletion, Vec<String>) {
        let mut left_out = Vec::new();
        let (mut text, mut reasoning, mut refusal) = (String::new(), String::new(), String::new());
        let mut calls: Vec<openai::ToolCall> = Vec::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => text.push_str(t),
                Part::Refusal(r) => refusal.push_str(r),
                Part::Reasoning { text: r, signature } => {
                    reasoning.push_str(r);
                    if signature.is_some() {
                        note(&mut left_out, "reasoning signature");
                    }
                }
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => calls.push(openai_tool_call(id, name, arguments)),
                Part::Image(_) => note(&mut left_out, "image in an answer"),
                Part::ToolResult { .. } => note(&mut left_out, "tool result in an answer"),
            }
        }
        let mut extra = Map::new();
        if !reasoning.is_empty() {
            extra.insert("reasoning_content".to_owned(), Value::String(reasoning));
        }
        let completion = openai::ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".to_owned(),
            created: crate::translate::now_secs(),
            model: self.model.clone(),
            choices: vec![openai::Choice {
                index: 0,
                message: openai::ChatMessage {
                    role: "assistant".to_owned(),
                    content: if text.is_empty() && (!calls.is_empty() || !refusal.is_empty()) {
                        Maybe::Null
                    } else {
                        Maybe::Present(openai::Content::Text(text))
                    },
                    tool_calls: if calls.is_empty() {
                        Maybe::Absent
                    } else {
                        Maybe::Present(calls)
                    },
                    refusal: if refusal.is_empty() {
                        Maybe::Absent
                    } else {
                        Maybe::Present(refusal)
                    },
                    extra,
                    ..Default::default()
                },
                finish_reason: Maybe::Present(self.finish.to_openai().to_owned()),
                extra: Map::new(),
            }],
            usage: Maybe::Present(self.usage.to_openai()),
            extra: Map::new(),
        };
        (completion, left_out)
    }

    /// Writes an Anthropic answer: reasoning as thinking blocks (with
    /// Anthropic's signature when it made them, else an empty one), a
    /// refusal as text (the stop reason says `refusal`).
    pub fn to_anthropic(&self) -> anthropic::MessagesResponse {
        self.to_anthropic_reporting().0
    }

    /// [`to_anthropic`](Self::to_anthropic), with what it could not carry,
    /// by name.
    pub fn to_anthropic_reporting(&self) -> (anthropic::MessagesResponse, Vec<String>) {
        let mut left_out = Vec::new();
        let content = self
            .parts
            .iter()
            .filter_map(|p| anthropic_block_of(p, false, &mut left_out))
            .collect();
        let answer = anthropic::MessagesResponse {
            id: self.id.clone(),
            kind: "message".to_owned(),
            role: "assistant".to_owned(),
            model: self.model.clone(),
            content,
            stop_reason: Maybe::Present(self.finish.to_anthropic().to_owned()),
            stop_sequence: Maybe::Null,
            usage: self.usage.to_anthropic(),
            extra: Map::new(),
        };
        (answer, left_out)
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

/// Reads an Anthropic stream as [`Delta`]s, event by event.
#[derive(Debug, Default)]
pub struct FromAnthropicStream {
    /// The usage of `message_start` (prompt and cache tokens), for the
    /// final usage.
    start: Option<Usage>,
    /// Anthropic block index → tool call number.
    calls: std::collections::BTreeMap<u32, u32>,
    /// What had no counterpart, by name.
    untranslated: Vec<String>,
}

impl FromAnthropicStream {
    /// What the stream had with no counterpart in the neutral model so far
    /// (e.g. a `server_tool_use` block), by name; taken.
    pub fn take_untranslated(&mut self) -> Vec<String> {
        std::mem::take(&mut self.untranslated)
    }

    /// The deltas of one event (often none or one).
    pub fn push(&mut self, ev: anthropic::StreamEvent) -> Vec<Delta> {
        use anthropic::StreamEvent as E;
        match ev {
            E::MessageStart { message: m, .. } => {
                self.start = m
                    .usage
                    .input_tokens
                    .get()
                    .map(|_| Usage::from_anthropic(&m.usage));
                vec![Delta::Start {
                    id: m.id,
                    model: m.model,
                    input_tokens: self.start.map(|u| u.input),
                }]
            }
            E::ContentBlockStart { index, block, .. } if block.kind == "tool_use" => {
                let call = u32::try_from(self.calls.len()).unwrap_or(u32::MAX);
                self.calls.insert(index, call);
                vec![Delta::ToolCall {
                    call,
                    id: block.id,
                    name: block.name,
                }]
            }
            E::ContentBlockStart { block, .. } => {
                if !matches!(block.kind.as_str(), "text" | "thinking") {
                    note(
                        &mut self.untranslated,
                        format!("content block `{}`", block.kind),
                    );
                }
                Vec::new()
            }
            E::ContentBlockDelta { index, delta, .. } => {
                if let Maybe::Present(text) = delta.text {
                    return vec![Delta::Text(text)];
                }
                if let Maybe::Present(thinking) = delta.thinking {
                    return vec![Delta::Reasoning(thinking)];
                }
                if let Maybe::Present(sig) = delta.signature {
                    return vec![Delta::Signature(Signature::Anthropic(sig))];
                }
                match (delta.partial_json, self.calls.get(&index)) {
                    (Maybe::Present(json), Some(&call)) => vec![Delta::ToolArgs { call, json }],
                    _ => Vec::new(),
                }
            }
            E::MessageDelta { delta, usage, .. } => {
                let finish = Finish::from_anthropic(
                    delta.stop_reason.get().map_or("end_turn", String::as_str),
                );
                let mut u = Usage::from_anthropic(&usage);
                // `message_delta` usually counts only the output; the
                // prompt (and its cache tokens) came with `message_start`.
                if usage.input_tokens.get().is_none()
                    && let Some(start) = self.start
                {
                    u.input = start.input;
                    u.cached_input = start.cached_input;
                    u.cache_write_input = start.cache_write_input;
                }
                vec![Delta::Finish(finish), Delta::Usage(u)]
            }
            E::MessageStop { .. } => vec![Delta::End],
            _ => Vec::new(),
        }
    }
}

/// Reads an OpenAI stream (its first choice: the others are named as
/// untranslated) as [`Delta`]s, item by item.
#[derive(Debug, Default)]
pub struct FromOpenAiStream {
    started: bool,
    /// Tool calls begun so far.
    calls: u32,
    /// What had no counterpart, by name.
    untranslated: Vec<String>,
}

impl FromOpenAiStream {
    /// What the stream had with no counterpart so far (`choices[1..]`), by
    /// name; taken.
    pub fn take_untranslated(&mut self) -> Vec<String> {
        std::mem::take(&mut self.untranslated)
    }

    /// The deltas of one item. A tool call opens at its first chunk
    /// (the one that brings a new `index`), with or without an id.
    pub fn push(&mut self, item: crate::OpenAiItem) -> Vec<Delta> {
        let chunk = match item {
            crate::OpenAiItem::Done => return vec![Delta::End],
            crate::OpenAiItem::Chunk(c) => c,
        };
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(Delta::Start {
                id: chunk.id.clone(),
                model: chunk.model.clone(),
                input_tokens: None,
            });
        }
        if let Maybe::Present(u) = &chunk.usage {
            out.push(Delta::Usage(Usage::from_openai(u)));
        }
        if chunk.choices.iter().any(|c| c.index != 0) {
            note(&mut self.untranslated, "choices[1..]");
        }
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
            return out;
        };
        if let Some(r) = openai_reasoning(&choice.delta.extra).filter(|r| !r.is_empty()) {
            out.push(Delta::Reasoning(r.to_owned()));
        }
        if let Maybe::Present(text) = choice.delta.content
            && !text.is_empty()
        {
            out.push(Delta::Text(text));
        }
        if let Maybe::Present(r) = choice.delta.refusal
            && !r.is_empty()
        {
            out.push(Delta::Refusal(r));
        }
        for tc in choice.delta.tool_calls.into_option().unwrap_or_default() {
            let f = tc.function.into_option().unwrap_or_default();
            let call = match tc.index {
                Maybe::Present(i) => i,
                _ if matches!(tc.id, Maybe::Present(_)) => self.calls,
                _ => self.calls.saturating_sub(1),
            };
            if call >= self.calls {
                self.calls = call + 1;
                out.push(Delta::ToolCall {
                    call,
                    id: tc.id,
                    name: f.name.clone(),
                });
            }
            if let Maybe::Present(json) = f.arguments
                && !json.is_empty()
            {
                out.push(Delta::ToolArgs { call, json });
            }
        }
        if let Maybe::Present(f) = choice.finish_reason {
            out.push(Delta::Finish(Finish::from_openai(&f)));
        }
        out
    }
}

/// Writes [`Delta`]s as an OpenAI stream: reasoning as
/// `reasoning_content` deltas (as compatible servers send it), refusals as
/// `refusal` deltas; a reasoning signature has no place (named as
/// untranslated).
#[derive(Debug, Default)]
pub struct ToOpenAiStream {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    untranslated: Vec<String>,
}

impl ToOpenAiStream {
    /// A writer; `include_usage` adds OpenAI's usage chunk (as the
    /// client's `stream_options.include_usage` asked).
    pub fn new(include_usage: bool) -> Self {
        Self {
            include_usage,
            ..Self::default()
        }
    }

    fn chunk(&self, delta: openai::Delta, finish: Option<&str>) -> crate::OpenAiItem {
        crate::OpenAiItem::Chunk(openai::ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![openai::ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map_or(Maybe::Null, |f| Maybe::Present(f.to_owned())),
                extra: Map::new(),
            }],
            usage: Maybe::Absent,
            extra: Map::new(),
        })
    }

    fn call(
        &self,
        call: u32,
        id: Maybe<String>,
        name: Maybe<String>,
        args: String,
    ) -> crate::OpenAiItem {
        let kind = if matches!(id, Maybe::Present(_)) {
            Maybe::Present("function".to_owned())
        } else {
            Maybe::Absent
        };
        self.chunk(
            openai::Delta {
                tool_calls: Maybe::Present(vec![openai::ToolCall {
                    index: Maybe::Present(call),
                    id,
                    kind,
                    function: Maybe::Present(openai::FunctionCall {
                        name,
                        arguments: Maybe::Present(args),
                        extra: Map::new(),
                    }),
                    extra: Map::new(),
                }]),
                ..Default::default()
            },
            None,
        )
    }

    /// What it could not write so far, by name; taken.
    pub fn take_untranslated(&mut self) -> Vec<String> {
        std::mem::take(&mut self.untranslated)
    }

    /// The OpenAI items for one delta.
    pub fn push(&mut self, delta: Delta) -> Vec<crate::OpenAiItem> {
        match delta {
            Delta::Reasoning(text) => {
                let mut d = openai::Delta::default();
                d.extra
                    .insert("reasoning_content".to_owned(), Value::String(text));
                vec![self.chunk(d, None)]
            }
            Delta::Refusal(text) => vec![self.chunk(
                openai::Delta {
                    refusal: Maybe::Present(text),
                    ..Default::default()
                },
                None,
            )],
            Delta::Signature(_) => {
                note(&mut self.untranslated, "reasoning signature");
                Vec::new()
            }
            Delta::Start { id, model, .. } => {
                self.id = id;
                self.model = model;
                self.created = crate::translate::now_secs();
                let role = openai::Delta {
                    role: Maybe::Present("assistant".to_owned()),
                    content: Maybe::Present(String::new()),
                    ..Default::default()
                };
                vec![self.chunk(role, None)]
            }
            Delta::Text(text) => vec![self.chunk(
                openai::Delta {
                    content: Maybe::Present(text),
                    ..Default::default()
                },
                None,
            )],
            Delta::ToolCall { call, id, name } => vec![self.call(call, id, name, String::new())],
            Delta::ToolArgs { call, json } => {
                vec![self.call(call, Maybe::Absent, Maybe::Absent, json)]
            }
            Delta::Finish(f) => vec![self.chunk(openai::Delta::default(), Some(f.to_openai()))],
            Delta::Usage(u) if self.include_usage => {
                vec![crate::OpenAiItem::Chunk(openai::ChatChunk {
                    id: self.id.clone(),
                    object: "chat.completion.chunk".to_owned(),
                    created: self.created,
                    model: self.model.clone(),
                    choices: Vec::new(),
                    usage: Maybe::Present(u.to_openai()),
                    extra: Map::new(),
                })]
            }
            Delta::Usage(_) => Vec::new(),
            Delta::End => vec![crate::OpenAiItem::Done],
        }
    }
}

/// The kind of the open content block of an Anthropic stream being
/// written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A `tool_use` block, holding this tool call.
    Call(u32),
}

/// Writes [`Delta`]s as an Anthropic stream: reasoning as `thinking`
/// blocks (with `signature_delta` when Anthropic signed it), refusals as
/// text, a tool call opened without an id under a made-up one
/// (`toolu_palisade_N`: Anthropic requires one).
#[derive(Debug, Default)]
pub struct ToAnthropicStream {
    /// The open content block: its index and kind.
    open: Option<(u32, Block)>,
    next_index: u32,
    finish: Option<Finish>,
    usage: Option<Usage>,
    untranslated: Vec<String>,
}

impl ToAnthropicStream {
    fn close(&mut self, out: &mut Vec<anthropic::StreamEvent>) {
        if let Some((index, _)) = self.open.take() {
            out.push(anthropic::StreamEvent::ContentBlockStop {
                index,
                extra: Map::new(),
            });
        }
    }

    fn open(
        &mut self,
        block: anthropic::ContentBlock,
        kind: Block,
        out: &mut Vec<anthropic::StreamEvent>,
    ) -> u32 {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        out.push(anthropic::StreamEvent::ContentBlockStart {
            index,
            block,
            extra: Map::new(),
        });
        index
    }

    /// What it could not write so far, by name; taken.
    pub fn take_untranslated(&mut self) -> Vec<String> {
        std::mem::take(&mut self.untranslated)
    }

    /// The Anthropic events for one delta.
    pub fn push(&mut self, delta: Delta) -> Vec<anthropic::StreamEvent> {
        use anthropic::StreamEvent as E;
        let mut out = Vec::new();
        match delta {
            Delta::Start {
                id,
                model,
                input_tokens,
            } => out.push(E::MessageStart {
                message: anthropic::MessagesResponse {
                    id,
                    kind: "message".to_owned(),
                    role: "assistant".to_owned(),
                    model,
                    content: Vec::new(),
                    stop_reason: Maybe::Null,
                    stop_sequence: Maybe::Null,
                    usage: anthropic::Usage {
                        input_tokens: Maybe::Present(input_tokens.unwrap_or(0)),
                        output_tokens: Maybe::Present(0),
                        extra: Map::new(),
                    },
                    extra: Map::new(),
                },
                extra: Map::new(),
            }),
            Delta::Reasoning(text) => {
                let index = match self.open {
                    Some((i, Block::Thinking)) => i,
                    _ => {
                        let block = anthropic::ContentBlock {
                            kind: "thinking".to_owned(),
                            thinking: Maybe::Present(String::new()),
                            signature: Maybe::Present(String::new()),
                            ..Default::default()
                        };
                        self.open(block, Block::Thinking, &mut out)
                    }
                };
                out.push(E::ContentBlockDelta {
                    index,
                    delta: anthropic::BlockDelta {
                        kind: "thinking_delta".to_owned(),
                        thinking: Maybe::Present(text),
                        ..Default::default()
                    },
                    extra: Map::new(),
                });
            }
            Delta::Signature(sig) => match (self.open, sig) {
                (Some((index, Block::Thinking)), Signature::Anthropic(sig)) => {
                    out.push(E::ContentBlockDelta {
                        index,
                        delta: anthropic::BlockDelta {
                            kind: "signature_delta".to_owned(),
                            signature: Maybe::Present(sig),
                            ..Default::default()
                        },
                        extra: Map::new(),
                    });
                }
                _ => note(&mut self.untranslated, "reasoning signature"),
            },
            Delta::Text(text) | Delta::Refusal(text) => {
                let index = match self.open {
                    Some((i, Block::Text)) => i,
                    _ => self.open(
                        crate::translate::text_block(String::new()),
                        Block::Text,
                        &mut out,
                    ),
                };
                out.push(E::ContentBlockDelta {
                    index,
                    delta: anthropic::BlockDelta {
                        kind: "text_delta".to_owned(),
                        text: Maybe::Present(text),
                        ..Default::default()
                    },
                    extra: Map::new(),
                });
            }
            Delta::ToolCall { call, id, name } => {
                let id = match id {
                    Maybe::Present(id) => id,
                    Maybe::Absent | Maybe::Null => format!("toolu_palisade_{call}"),
                };
                let block = anthropic::ContentBlock {
                    kind: "tool_use".to_owned(),
                    id: Maybe::Present(id),
                    name,
                    input: Maybe::Present(json!({})),
                    ..Default::default()
                };
                self.open(block, Block::Call(call), &mut out);
            }
            Delta::ToolArgs { call, json } => {
                if let Some((index, Block::Call(open))) = self.open
                    && open == call
                {
                    out.push(E::ContentBlockDelta {
                        index,
                        delta: anthropic::BlockDelta {
                            kind: "input_json_delta".to_owned(),
                            partial_json: Maybe::Present(json),
                            ..Default::default()
                        },
                        extra: Map::new(),
                    });
                }
            }
            Delta::Finish(f) => self.finish = Some(f),
            Delta::Usage(u) => self.usage = Some(u),
            Delta::End => {
                self.close(&mut out);
                let usage = self.usage.take();
                let stop = self.finish.unwrap_or_default().to_anthropic();
                out.push(E::MessageDelta {
                    delta: anthropic::MessageDeltaBody {
                        stop_reason: Maybe::Present(stop.to_owned()),
                        stop_sequence: Maybe::Null,
                        extra: Map::new(),
                    },
                    usage: match usage {
                        Some(u) => u.to_anthropic(),
                        None => anthropic::Usage {
                            input_tokens: Maybe::Absent,
                            output_tokens: Maybe::Present(0),
                            extra: Map::new(),
                        },
                    },
                    extra: Map::new(),
                });
                out.push(E::MessageStop { extra: Map::new() });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
