//! Anthropic messages as a [`Dialect`]: the neutral model's readers and
//! writers for messages requests (`Request::from_anthropic` /
//! `to_anthropic`), answers (`Answer::from_anthropic` / `to_anthropic`),
//! stop reasons and usage, and its streams ([`FromAnthropicStream`],
//! [`ToAnthropicStream`]).

use bytes::Bytes;
use http::StatusCode;
use palisade_sse::Event;
use serde_json::{Map, Number, Value, json};

use crate::dialect::{Dialect, StreamReader, StreamWriter, Written, WrittenAnswer, bad};
use crate::maybe::Maybe;
use crate::neutral::{
    self, Answer, Delta, Finish, Image, Part, Request, Role, Signature, ToolChoice, ToolDef, Turn,
    Usage, count, note, note_fields,
};
use crate::translate::{DEFAULT_ANTHROPIC_MAX_TOKENS, TranslateError, anthropic_sse};
use crate::{Api, anthropic, decode_anthropic};

/// Anthropic messages.
#[derive(Clone, Copy, Debug, Default)]
pub struct Messages;

impl Dialect for Messages {
    fn api(&self) -> Api {
        Api::Messages
    }

    fn read_request(&self, body: &Value) -> Result<neutral::Request, TranslateError> {
        let req: anthropic::MessagesRequest =
            serde_json::from_value(body.clone()).map_err(|e| bad(self.api(), e))?;
        Ok(neutral::Request::from_anthropic(&req))
    }

    fn write_request(&self, request: &neutral::Request) -> Result<Written, TranslateError> {
        let (req, left_out) = request.to_anthropic_reporting();
        Ok(Written {
            body: serde_json::to_value(req).map_err(|e| bad(self.api(), e))?,
            left_out,
        })
    }

    fn read_answer(&self, body: &[u8]) -> Result<neutral::Answer, TranslateError> {
        let res: anthropic::MessagesResponse =
            serde_json::from_slice(body).map_err(|e| bad(self.api(), e))?;
        Ok(neutral::Answer::from_anthropic(&res))
    }

    fn write_answer(&self, answer: &neutral::Answer) -> Result<WrittenAnswer, TranslateError> {
        let (res, left_out) = answer.to_anthropic_reporting();
        Ok(WrittenAnswer {
            body: serde_json::to_vec(&res).map_err(|e| bad(self.api(), e))?,
            left_out,
        })
    }

    fn stream_reader(&self) -> Box<dyn StreamReader> {
        Box::new(Reader(FromAnthropicStream::default()))
    }

    fn stream_writer(&self, _caller_request: &Value) -> Box<dyn StreamWriter> {
        Box::new(Writer(ToAnthropicStream::default()))
    }
}

struct Reader(FromAnthropicStream);

impl StreamReader for Reader {
    fn read(&mut self, event: &Event) -> Result<Vec<Delta>, TranslateError> {
        let ev = decode_anthropic(event).map_err(|e| bad(Api::Messages, e))?;
        Ok(self.0.push(ev))
    }

    fn untranslated(&mut self) -> Vec<String> {
        self.0.take_untranslated()
    }
}

struct Writer(ToAnthropicStream);

impl StreamWriter for Writer {
    fn write(&mut self, delta: Delta, out: &mut Vec<Bytes>) {
        out.extend(self.0.push(delta).iter().map(anthropic_sse));
    }

    fn fail(&mut self, status: StatusCode, message: &str, out: &mut Vec<Bytes>) {
        out.push(Api::Messages.stream_error_event(status, message));
    }

    fn untranslated(&mut self) -> Vec<String> {
        self.0.take_untranslated()
    }
}

/// Anthropic request fields the neutral model carries.
const ANTHROPIC_CARRIED: [&str; 1] = ["top_p"];

impl Request {
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
                if blocks.iter().any(|b| b.get("cache_control").is_some()) {
                    note(&mut out.untranslated, "cache_control");
                }
                out.system.push(text.join("\n\n"));
            }
            _ => {}
        }
        for m in &req.messages {
            for k in m.extra.keys() {
                note(&mut out.untranslated, format!("messages[].{k}"));
            }
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
                        block_losses(b, &mut out.untranslated);
                        match anthropic_block(b) {
                            Some(p) => turn.parts.push(p),
                            None => out.untranslated.push(format!("content block `{}`", b.kind)),
                        }
                    }
                }
            }
            out.turns.push(turn);
        }
        if let Some(tools) = req.tools.get() {
            let mut defs = Vec::new();
            for t in tools {
                // Anthropic's own tools (`web_search_20250305`, `bash_…`)
                // carry a `type`; a client tool has none, or `custom`.
                match t.extra.get("type").and_then(Value::as_str) {
                    None | Some("custom") => defs.push(ToolDef {
                        name: t.name.clone(),
                        description: t.description.clone(),
                        parameters: t.input_schema.clone(),
                    }),
                    Some(kind) => note(&mut out.untranslated, format!("tools[] of type `{kind}`")),
                }
                if t.extra.contains_key("cache_control") {
                    note(&mut out.untranslated, "cache_control");
                }
                note_fields(
                    &mut out.untranslated,
                    "tools[]",
                    &t.extra,
                    &["type", "cache_control"],
                );
            }
            out.tools = Some(defs);
        }
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
}

/// Notes what a content block carries that its neutral part does not: a
/// `cache_control` breakpoint, a tool result's `is_error` and the
/// non-text parts of its content (images), citations.
fn block_losses(b: &anthropic::ContentBlock, untranslated: &mut Vec<String>) {
    if b.extra.contains_key("cache_control") {
        note(untranslated, "cache_control");
    }
    if b.extra.contains_key("citations") {
        note(untranslated, "citations");
    }
    let carried: &[&str] = match b.kind.as_str() {
        "image" => &["source"],
        "tool_result" => &["content", "is_error"],
        "text" | "tool_use" | "thinking" => &[],
        // A block with no counterpart is named whole.
        _ => return,
    };
    let named = ["cache_control", "citations"];
    let rest = b.extra.iter().filter(|(k, _)| !named.contains(&k.as_str()));
    note_fields(
        untranslated,
        &format!("content block `{}`", b.kind),
        rest,
        carried,
    );
    if b.kind == "tool_result" {
        if b.extra.get("is_error") == Some(&Value::Bool(true)) {
            note(untranslated, "tool_result is_error");
        }
        let parts = b.extra.get("content").and_then(Value::as_array);
        if parts
            .into_iter()
            .flatten()
            .any(|c| c.get("type").and_then(Value::as_str) != Some("text"))
        {
            note(untranslated, "non-text content of a tool_result");
        }
    }
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
                Some("url") => Image::Url(field("url")?.to_owned()),
                // A `file` source (an id only Anthropic resolves), or one
                // added later: no counterpart, named whole.
                _ => return None,
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

impl Finish {
    /// Anthropic's `stop_reason` (`end_turn` for one it does not know).
    pub fn from_anthropic(reason: &str) -> Self {
        match reason {
            "max_tokens" | "model_context_window_exceeded" => Self::Length,
            "tool_use" => Self::ToolCalls,
            "refusal" => Self::ContentFilter,
            _ => Self::Stop,
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

impl Usage {
    /// Anthropic's usage object.
    pub fn from_anthropic(u: &anthropic::Usage) -> Self {
        let read = count(u.extra.get("cache_read_input_tokens"));
        let written = count(u.extra.get("cache_creation_input_tokens"));
        Self {
            input: u.input_tokens.get().copied().unwrap_or(0) + read + written,
            output: u.output_tokens.get().copied().unwrap_or(0),
            cached_input: read,
            cache_write_input: written,
            reasoning_output: 0,
        }
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

impl Answer {
    /// Reads an Anthropic answer: text, tool calls and thinking blocks
    /// (with their signatures); other blocks (`redacted_thinking`, server
    /// tool results …) are named in [`untranslated`](Self::untranslated).
    pub fn from_anthropic(res: &anthropic::MessagesResponse) -> Self {
        let mut untranslated = Vec::new();
        let mut parts = Vec::new();
        for b in &res.content {
            match b.kind.as_str() {
                "text" | "tool_use" | "thinking" => {
                    block_losses(b, &mut untranslated);
                    parts.extend(anthropic_block(b));
                }
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
        let mut content: Vec<anthropic::ContentBlock> = self
            .parts
            .iter()
            .filter_map(|p| anthropic_block_of(p, false, &mut left_out))
            .collect();
        // A tool call that came without an id gets one (Anthropic's
        // `tool_use` needs it, and the caller sends it back with the result).
        for (n, b) in content
            .iter_mut()
            .filter(|b| b.kind == "tool_use")
            .enumerate()
        {
            if !matches!(b.id, Maybe::Present(_)) {
                b.id = Maybe::Present(format!("toolu_palisade_{n}"));
            }
        }
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
                    // The JSON of a block that is not a client tool call
                    // (a server tool's input: its block was named already).
                    (Maybe::Present(_), None) => Vec::new(),
                    (Maybe::Absent | Maybe::Null, _) => {
                        note(&mut self.untranslated, format!("delta `{}`", delta.kind));
                        Vec::new()
                    }
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
                } else {
                    // Anthropic streams one block at a time: the arguments of
                    // a call after another one began have nowhere to go.
                    note(
                        &mut self.untranslated,
                        "arguments of a tool call interleaved with another",
                    );
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
