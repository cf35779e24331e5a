//! OpenAI chat completions as a [`Dialect`]: the neutral model's readers
//! and writers for chat requests (`Request::from_openai` /
//! `to_openai`), completions (`Answer::from_openai` / `to_openai`), finish
//! reasons and usage, and its streams ([`FromOpenAiStream`],
//! [`ToOpenAiStream`]).

use bytes::Bytes;
use http::StatusCode;
use palisade_sse::Event;
use serde_json::{Map, Value, json};

use crate::dialect::{Dialect, StreamReader, StreamWriter, Written, WrittenAnswer, bad};
use crate::maybe::Maybe;
use crate::neutral::{
    self, Answer, Delta, Finish, Image, Part, Request, Role, ToolChoice, ToolDef, Turn, Usage,
    count, note, note_fields,
};
use crate::translate::{TranslateError, openai_sse};
use crate::{Api, decode_openai, openai};

/// OpenAI chat completions (and every OpenAI-compatible server).
#[derive(Clone, Copy, Debug, Default)]
pub struct Chat;

impl Dialect for Chat {
    fn api(&self) -> Api {
        Api::ChatCompletions
    }

    fn read_request(&self, body: &Value) -> Result<neutral::Request, TranslateError> {
        let req: openai::ChatRequest =
            serde_json::from_value(body.clone()).map_err(|e| bad(self.api(), e))?;
        neutral::Request::from_openai(&req)
    }

    fn write_request(&self, request: &neutral::Request) -> Result<Written, TranslateError> {
        let (req, left_out) = request.to_openai_reporting();
        Ok(Written {
            body: serde_json::to_value(req).map_err(|e| bad(self.api(), e))?,
            left_out,
        })
    }

    fn read_answer(&self, body: &[u8]) -> Result<neutral::Answer, TranslateError> {
        let res: openai::ChatCompletion =
            serde_json::from_slice(body).map_err(|e| bad(self.api(), e))?;
        neutral::Answer::from_openai(&res)
    }

    fn write_answer(&self, answer: &neutral::Answer) -> Result<WrittenAnswer, TranslateError> {
        let (res, left_out) = answer.to_openai_reporting();
        Ok(WrittenAnswer {
            body: serde_json::to_vec(&res).map_err(|e| bad(self.api(), e))?,
            left_out,
        })
    }

    fn stream_reader(&self) -> Box<dyn StreamReader> {
        Box::new(Reader(FromOpenAiStream::default()))
    }

    fn stream_writer(&self, caller_request: &Value) -> Box<dyn StreamWriter> {
        let include_usage = caller_request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Box::new(Writer(ToOpenAiStream::new(include_usage)))
    }
}

struct Reader(FromOpenAiStream);

impl StreamReader for Reader {
    fn read(&mut self, event: &Event) -> Result<Vec<Delta>, TranslateError> {
        let item = decode_openai(event).map_err(|e| bad(Api::ChatCompletions, e))?;
        Ok(self.0.push(item))
    }

    fn untranslated(&mut self) -> Vec<String> {
        self.0.take_untranslated()
    }
}

struct Writer(ToOpenAiStream);

impl StreamWriter for Writer {
    fn write(&mut self, delta: Delta, out: &mut Vec<Bytes>) {
        out.extend(self.0.push(delta).iter().map(openai_sse));
    }

    fn fail(&mut self, status: StatusCode, message: &str, out: &mut Vec<Bytes>) {
        out.push(Api::ChatCompletions.stream_error_event(status, message));
    }

    fn untranslated(&mut self) -> Vec<String> {
        self.0.take_untranslated()
    }
}

/// OpenAI request fields the neutral model carries (the rest is reported
/// as untranslated).
const OPENAI_CARRIED: [&str; 2] = ["parallel_tool_calls", "n"];

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
            if m.name.get().is_some() {
                note(&mut out.untranslated, "messages[].name");
            }
            // `audio`, the legacy `function_call` …
            for k in m.extra.keys() {
                note(&mut out.untranslated, format!("messages[].{k}"));
            }
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
                                let detail = p.extra.get("image_url").and_then(|i| i.get("detail"));
                                if detail.is_some_and(|d| d != "auto") {
                                    note(&mut out.untranslated, "image_url.detail");
                                }
                                let carried: &[&str] = match p.kind.as_str() {
                                    "image_url" => &["image_url"],
                                    _ => &[],
                                };
                                note_fields(
                                    &mut out.untranslated,
                                    &format!("content part `{}`", p.kind),
                                    &p.extra,
                                    carried,
                                );
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
                    if let Some(r) = m.refusal.get().filter(|r| !r.is_empty()) {
                        out.push(Role::Assistant, Part::Refusal(r.clone()));
                    }
                    for tc in m.tool_calls.get().into_iter().flatten() {
                        note_fields(&mut out.untranslated, "tool_calls[]", &tc.extra, &[]);
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
        if let Some(tools) = req.tools.get() {
            let mut defs = Vec::new();
            for t in tools {
                note_fields(&mut out.untranslated, "tools[]", &t.extra, &[]);
                if let Some(f) = t.function.get() {
                    note_fields(&mut out.untranslated, "tools[].function", &f.extra, &[]);
                }
                match t.function.get() {
                    Some(f) if t.kind == "function" => defs.push(ToolDef {
                        name: f.name.clone(),
                        description: f.description.clone(),
                        parameters: f.parameters.clone(),
                    }),
                    _ => note(
                        &mut out.untranslated,
                        format!("tools[] of type `{}`", t.kind),
                    ),
                }
            }
            out.tools = Some(defs);
        }
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
            Some(Part::Image(Image::from_url(url)))
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
                let url = img.to_url();
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

    /// As OpenAI's `finish_reason`.
    pub fn to_openai(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
        }
    }
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
            reasoning_output: count(
                u.extra
                    .get("completion_tokens_details")
                    .and_then(|d| d.get("reasoning_tokens")),
            ),
        }
    }

    /// As OpenAI's usage object (cached tokens in `prompt_tokens_details`,
    /// reasoning tokens in `completion_tokens_details`).
    pub fn to_openai(self) -> openai::Usage {
        let mut u = openai::Usage::new(self.input, self.output);
        if self.cached_input > 0 {
            u.extra.insert(
                "prompt_tokens_details".to_owned(),
                json!({"cached_tokens": self.cached_input}),
            );
        }
        if self.reasoning_output > 0 {
            u.extra.insert(
                "completion_tokens_details".to_owned(),
                json!({"reasoning_tokens": self.reasoning_output}),
            );
        }
        u
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
        // A tool call that came without an id gets one (the caller sends it
        // back with the result).
        for (n, c) in calls.iter_mut().enumerate() {
            if !matches!(c.id, Maybe::Present(_)) {
                c.id = Maybe::Present(format!("call_palisade_{n}"));
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
