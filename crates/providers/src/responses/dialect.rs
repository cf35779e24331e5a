//! OpenAI's Responses API as a [`Dialect`]: requests (`input` items,
//! `instructions`, flat function tools), answers (`output` items) and the
//! typed stream events (`response.created` … `response.completed`, each
//! with its `sequence_number`).
//!
//! Carried both ways: text, images, function calls and their outputs,
//! refusals (as text, finishing as a content filter), `instructions` and
//! `system`/`developer` messages, tools of type `function`, `tool_choice`,
//! `parallel_tool_calls`, `max_output_tokens`, `temperature`, `top_p`,
//! streaming, usage with cached input tokens, and why the answer ended
//! (`incomplete_details.reason`).
//!
//! Named as untranslated when read (no counterpart in the neutral model):
//! every other request field that is set (`text`, `reasoning`, `store`,
//! `include`, `metadata`, `prompt_cache_key`, …), tools of other types
//! (`web_search`, `file_search`, …), input items of other types
//! (`reasoning`, `file_search_call`, …) and content parts of other types
//! (`input_file`). An `item_reference` needs the provider's stored state
//! and cannot be translated at all (an error), as `previous_response_id`
//! and `conversation` cannot, and an explicit `"store": true` asks for what
//! only the Responses API's provider does: [`needs_state`] tells which
//! requests only an OpenAI target can serve.
//!
//! Decisions: a Responses request written for another API's target is
//! written with `store: false` (a translated call must not leave state
//! behind the caller cannot know of); stop sequences have no place in the
//! Responses API and are reported left out.

use std::collections::HashMap;

use bytes::Bytes;
use http::StatusCode;
use palisade_sse::Event;
use serde_json::{Map, Value, json};

use crate::Api;
use crate::dialect::{Dialect, StreamReader, StreamWriter, Written, WrittenAnswer, bad, sse};
use crate::maybe::Maybe;
use crate::neutral::{
    self, Delta, Finish, Image, Part, Role, Signature, ToolChoice, ToolDef, Usage, note,
    note_fields,
};
use crate::responses::{
    Event as Typed, Input, Item, Response, ResponseState, ResponsesRequest, TextOf,
    Usage as ResponsesUsage,
};
use crate::translate::{TranslateError, now_secs};

/// OpenAI's Responses API.
#[derive(Clone, Copy, Debug, Default)]
pub struct Responses;

/// Request fields the neutral model carries.
const CARRIED: [&str; 10] = [
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];

/// What stored state a Responses request needs, if any — state only the
/// provider that stored it has: a `previous_response_id`, a `conversation`,
/// an `item_reference` input item, or an explicit `"store": true` (the
/// caller asks for the answer to be stored, to be read later, e.g. by a
/// `previous_response_id` that only the storing provider knows). Such a
/// request can only go to a target that speaks the Responses API itself
/// (an OpenAI or Azure upstream), never through translation.
///
/// Decision: `store` left out is not such a need, though the API's default
/// is to store — SDKs leave it out on every call, and most callers never
/// read a stored answer back; a translated answer is simply not stored.
/// A caller who will read it later says `"store": true`.
///
/// ```
/// use palisade_providers::dialect::responses::needs_state;
/// use serde_json::json;
///
/// let chained = json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"});
/// assert_eq!(needs_state(&chained), Some("previous_response_id"));
/// let referenced = json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]});
/// assert!(needs_state(&referenced).is_some());
/// assert_eq!(needs_state(&json!({"model": "m", "input": "hi", "store": true})), Some("`store: true`"));
/// assert_eq!(needs_state(&json!({"model": "m", "input": "hi", "store": false})), None);
/// assert_eq!(needs_state(&json!({"model": "m", "input": "hi"})), None);
/// ```
pub fn needs_state(body: &Value) -> Option<&'static str> {
    let set = |k: &str| body.get(k).is_some_and(|v| !v.is_null());
    if set("previous_response_id") {
        return Some("previous_response_id");
    }
    if set("conversation") {
        return Some("conversation");
    }
    if body.get("store").and_then(Value::as_bool) == Some(true) {
        return Some("`store: true`");
    }
    let items = body.get("input").and_then(Value::as_array);
    if items
        .into_iter()
        .flatten()
        .any(|i| i.get("type").and_then(Value::as_str) == Some("item_reference"))
    {
        return Some("an input item of type `item_reference`");
    }
    None
}

fn text_of(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn maybe_text(v: &Value, k: &str) -> Maybe<String> {
    match v.get(k) {
        None => Maybe::Absent,
        Some(Value::String(s)) => Maybe::Present(s.clone()),
        Some(_) => Maybe::Null,
    }
}

/// A function call's `arguments` (JSON text) as the object it encodes.
fn arguments(text: &str) -> Result<Value, TranslateError> {
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(text).map_err(|e| {
        TranslateError::new(format!(
            "function call arguments are not JSON ({e}); the target needs an object"
        ))
    })
}

/// The text of a `function_call_output`'s `output`: a string, or the text
/// of its `input_text` parts.
fn output_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// One content part of an input message, in the neutral model.
fn content_part(p: &Value) -> Option<Part> {
    match p.get("type").and_then(Value::as_str)? {
        "input_text" | "output_text" | "text" => Some(Part::Text(text_of(p, "text")?)),
        "refusal" => Some(Part::Refusal(text_of(p, "refusal")?)),
        "input_image" => {
            let url = p.get("image_url").and_then(Value::as_str)?;
            Some(Part::Image(Image::from_url(url)))
        }
        _ => None,
    }
}

/// A reasoning item as a neutral part: its summaries' (or its content's)
/// text, its `encrypted_content` as OpenAI's signature; `None` for one
/// with neither (only its id, which means something to OpenAI alone).
fn reasoning_part(item: &Item) -> Option<Part> {
    let texts = |parts: Option<&Vec<Value>>| -> String {
        parts
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n\n")
    };
    let mut text = texts(item.summary.get());
    if text.is_empty() {
        text = texts(item.content.get().and_then(Value::as_array));
    }
    let signature = item.encrypted_content.get().cloned().map(Signature::OpenAi);
    if text.is_empty() && signature.is_none() {
        return None;
    }
    Some(Part::Reasoning { text, signature })
}

/// A reasoning output item.
fn reasoning_item(id: &str, text: &str, signature: Option<&Signature>) -> Value {
    let mut item = json!({
        "id": id,
        "type": "reasoning",
        "summary": if text.is_empty() { json!([]) } else { json!([{"type": "summary_text", "text": text}]) },
    });
    if let Some(Signature::OpenAi(enc)) = signature {
        item["encrypted_content"] = json!(enc);
    }
    item
}

/// The neutral parts of a message's content (text, or parts); the parts
/// with no counterpart named in `untranslated` under `at`.
fn message_parts(content: Option<&Value>, at: &str, untranslated: &mut Vec<String>) -> Vec<Part> {
    let mut parts = Vec::new();
    match content {
        Some(Value::String(s)) => parts.push(Part::Text(s.clone())),
        Some(Value::Array(ps)) => {
            for p in ps {
                if p.get("type").and_then(Value::as_str) == Some("input_image")
                    && p.get("detail").is_some_and(|d| d != "auto")
                {
                    note(untranslated, "input_image detail");
                }
                let kind = p.get("type").and_then(Value::as_str).unwrap_or("?");
                let carried: &[&str] = match kind {
                    "input_text" | "output_text" | "text" => &["type", "text"],
                    "refusal" => &["type", "refusal"],
                    "input_image" => &["type", "image_url", "detail"],
                    // A part with no counterpart is named whole.
                    _ => &["type"],
                };
                if let Some(fields) = p.as_object().filter(|_| carried.len() > 1) {
                    note_fields(
                        untranslated,
                        &format!("{at}.content part `{kind}`"),
                        fields,
                        carried,
                    );
                }
                match content_part(p) {
                    Some(part) => parts.push(part),
                    None => note(
                        untranslated,
                        format!(
                            "{at}.content part `{}`",
                            p.get("type").and_then(Value::as_str).unwrap_or("?")
                        ),
                    ),
                }
            }
        }
        _ => {}
    }
    parts
}

/// The text of a system or developer message's parts.
fn system_text(parts: Vec<Part>) -> String {
    parts
        .into_iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn read_item(out: &mut neutral::Request, i: usize, item: &Item) -> Result<(), TranslateError> {
    // An item's own fields beyond what its neutral part carries (the typed
    // ones are read below; `id` and `status`, a replayed item's
    // bookkeeping, are not named).
    if matches!(
        item.kind(),
        "message" | "function_call" | "function_call_output" | "reasoning"
    ) {
        note_fields(
            &mut out.untranslated,
            &format!("input[{i}] of type `{}`", item.kind()),
            &item.extra,
            &[],
        );
    }
    match item.kind() {
        "message" => {
            let at = format!("input[{i}]");
            let parts = message_parts(item.content.get(), &at, &mut out.untranslated);
            match item.role.get().map_or("user", String::as_str) {
                "system" | "developer" => out.system.push(system_text(parts)),
                role => {
                    let role = if role == "assistant" {
                        Role::Assistant
                    } else {
                        Role::User
                    };
                    for p in parts {
                        out.push(role, p);
                    }
                }
            }
        }
        "function_call" => {
            let args = item.arguments.get().map_or("", String::as_str);
            out.push(
                Role::Assistant,
                Part::ToolCall {
                    id: item.call_id.clone(),
                    name: item.name.clone(),
                    arguments: arguments(args)?,
                },
            );
        }
        "function_call_output" => out.push(
            Role::User,
            Part::ToolResult {
                call_id: item.call_id.clone(),
                content: output_text(item.output.get()),
            },
        ),
        "reasoning" => match reasoning_part(item) {
            Some(part) => out.push(Role::Assistant, part),
            None => note(
                &mut out.untranslated,
                format!("input[{i}] of type `reasoning` (an id only)"),
            ),
        },
        "item_reference" => {
            return Err(TranslateError::new(format!(
                "input[{i}] is an `item_reference`, which only the provider that stored the item can resolve"
            )));
        }
        other => note(
            &mut out.untranslated,
            format!("input[{i}] of type `{other}`"),
        ),
    }
    Ok(())
}

fn usage_of(u: Option<&ResponsesUsage>) -> Usage {
    u.map_or_else(Usage::default, |u| Usage {
        input: u.input_tokens,
        output: u.output_tokens,
        cached_input: u.cached_tokens(),
        cache_write_input: 0,
        reasoning_output: u
            .extra
            .get("output_tokens_details")
            .and_then(|d| d.get("reasoning_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cached_input},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_output},
        "total_tokens": u.input + u.output,
    })
}

/// Why a Responses answer ended, in the neutral model.
fn finish_of(response: &Response, called: bool, refused: bool) -> Finish {
    let status = response.status.get().map(String::as_str);
    let reason = response
        .incomplete_details
        .get()
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str);
    match (status, reason) {
        (Some("incomplete"), Some("content_filter")) => Finish::ContentFilter,
        (Some("incomplete"), _) => Finish::Length,
        _ if called => Finish::ToolCalls,
        _ if refused => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

/// A response object (`"object": "response"`) with everything a client
/// reads; `output` and `usage` as given.
fn response_object(
    id: &str,
    model: &str,
    created: u64,
    status: &str,
    output: Vec<Value>,
    usage: Option<Usage>,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage.map(usage_json),
        "metadata": {},
    })
}

/// The response object of a `response.failed` event.
pub(crate) fn failed_response(id: &str, model: &str, code: &str, message: &str) -> Value {
    let mut r = response_object(id, model, now_secs(), "failed", Vec::new(), None);
    r["error"] = json!({"code": code, "message": message});
    r
}

/// Sets the status and `incomplete_details` of a finished response object.
fn finish_response(r: &mut Value, finish: Finish) {
    let (status, reason) = match finish {
        Finish::Length => ("incomplete", Some("max_output_tokens")),
        Finish::ContentFilter => ("incomplete", Some("content_filter")),
        Finish::Stop | Finish::ToolCalls => ("completed", None),
    };
    r["status"] = json!(status);
    if let Some(reason) = reason {
        r["incomplete_details"] = json!({"reason": reason});
    }
}

fn message_item(id: &str, status: &str, text: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

fn call_item(id: &str, status: &str, call_id: &str, name: &str, args: &str) -> Value {
    json!({
        "id": id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": args,
    })
}

impl Dialect for Responses {
    fn api(&self) -> Api {
        Api::Responses
    }

    fn read_request(&self, body: &Value) -> Result<neutral::Request, TranslateError> {
        let obj = body
            .as_object()
            .ok_or_else(|| bad(self.api(), "a request is a JSON object"))?;
        let req: ResponsesRequest =
            serde_json::from_value(body.clone()).map_err(|e| bad(self.api(), e))?;
        let mut out = neutral::Request {
            model: req.model.get().cloned().unwrap_or_default(),
            max_output_tokens: req.max_output_tokens.get().copied(),
            temperature: req
                .extra
                .get("temperature")
                .and_then(Value::as_number)
                .cloned(),
            top_p: req.extra.get("top_p").and_then(Value::as_number).cloned(),
            stream: req.stream.clone(),
            parallel_tool_calls: req
                .extra
                .get("parallel_tool_calls")
                .and_then(Value::as_bool),
            ..Default::default()
        };
        match req.instructions.get() {
            Some(Value::String(i)) => out.system.push(i.clone()),
            // A list of input items: their text, as system prompts.
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("instructions[{i}]");
                    let parts = message_parts(item.get("content"), &at, &mut out.untranslated);
                    out.system.push(system_text(parts));
                }
            }
            _ => {}
        }
        match req.input.get() {
            Some(Input::Text(s)) => out.push(Role::User, Part::Text(s.clone())),
            Some(Input::Items(items)) => {
                for (i, item) in items.iter().enumerate() {
                    read_item(&mut out, i, item)?;
                }
            }
            None => {}
        }
        if let Some(tools) = body.get("tools").and_then(Value::as_array) {
            let mut defs = Vec::new();
            for (i, t) in tools.iter().enumerate() {
                match t.get("type").and_then(Value::as_str) {
                    Some("function") => {
                        if let Some(fields) = t.as_object() {
                            note_fields(
                                &mut out.untranslated,
                                &format!("tools[{i}]"),
                                fields,
                                &["type", "name", "description", "parameters"],
                            );
                        }
                        defs.push(ToolDef {
                            name: text_of(t, "name").unwrap_or_default(),
                            description: maybe_text(t, "description"),
                            parameters: t.get("parameters").cloned().into(),
                        });
                    }
                    other => out
                        .untranslated
                        .push(format!("tools[{i}] of type `{}`", other.unwrap_or("?"))),
                }
            }
            out.tools = Some(defs);
        }
        out.tool_choice = match body.get("tool_choice") {
            Some(Value::String(s)) => match s.as_str() {
                "none" => Some(ToolChoice::None),
                "required" => Some(ToolChoice::Any),
                _ => Some(ToolChoice::Auto),
            },
            Some(c @ Value::Object(_)) => match c.get("type").and_then(Value::as_str) {
                Some("function") => text_of(c, "name").map(ToolChoice::Tool),
                _ => {
                    out.untranslated.push("tool_choice".to_owned());
                    None
                }
            },
            _ => None,
        };
        out.untranslated.extend(
            obj.iter()
                .filter(|(k, v)| !v.is_null() && !CARRIED.contains(&k.as_str()))
                .map(|(k, _)| k.clone()),
        );
        Ok(out)
    }

    fn write_request(&self, request: &neutral::Request) -> Result<Written, TranslateError> {
        let mut left_out = Vec::new();
        let mut input = Vec::new();
        for turn in &request.turns {
            let assistant = turn.role == Role::Assistant;
            let mut content: Vec<Value> = Vec::new();
            let flush = |content: &mut Vec<Value>, input: &mut Vec<Value>| {
                if !content.is_empty() {
                    let role = if assistant { "assistant" } else { "user" };
                    input.push(
                        json!({"type": "message", "role": role, "content": std::mem::take(content)}),
                    );
                }
            };
            for part in &turn.parts {
                match part {
                    Part::Text(t) if assistant => {
                        content.push(json!({"type": "output_text", "text": t}));
                    }
                    Part::Text(t) => content.push(json!({"type": "input_text", "text": t})),
                    Part::Refusal(t) if assistant => {
                        content.push(json!({"type": "refusal", "refusal": t}));
                    }
                    Part::Refusal(t) => content.push(json!({"type": "input_text", "text": t})),
                    // A reasoning input item needs the id OpenAI gave it.
                    Part::Reasoning { .. } => note(&mut left_out, "reasoning"),
                    Part::Image(img) => {
                        content.push(json!({"type": "input_image", "image_url": img.to_url()}));
                    }
                    Part::ToolCall {
                        id,
                        name,
                        arguments,
                    } => {
                        flush(&mut content, &mut input);
                        input.push(json!({
                            "type": "function_call",
                            "call_id": id.get(),
                            "name": name.get(),
                            "arguments": arguments.to_string(),
                        }));
                    }
                    Part::ToolResult {
                        call_id,
                        content: c,
                    } => {
                        flush(&mut content, &mut input);
                        input.push(json!({
                            "type": "function_call_output",
                            "call_id": call_id.get(),
                            "output": c,
                        }));
                    }
                }
            }
            flush(&mut content, &mut input);
        }
        let mut body = Map::new();
        body.insert("model".into(), json!(request.model));
        if !request.system.is_empty() {
            body.insert("instructions".into(), json!(request.system.join("\n\n")));
        }
        body.insert("input".into(), Value::Array(input));
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                body.insert(k.to_owned(), v);
            }
        };
        set(
            "max_output_tokens",
            request.max_output_tokens.map(Value::from),
        );
        set(
            "temperature",
            request.temperature.clone().map(Value::Number),
        );
        set("top_p", request.top_p.clone().map(Value::Number));
        set(
            "stream",
            match &request.stream {
                Maybe::Present(b) => Some(Value::Bool(*b)),
                Maybe::Null | Maybe::Absent => None,
            },
        );
        set(
            "tools",
            request.tools.as_ref().map(|tools| {
                tools
                    .iter()
                    .map(|t| {
                        let mut f = json!({"type": "function", "name": t.name});
                        if let Some(d) = t.description.get() {
                            f["description"] = json!(d);
                        }
                        if let Some(p) = t.parameters.get() {
                            f["parameters"] = p.clone();
                        }
                        f
                    })
                    .collect()
            }),
        );
        set(
            "tool_choice",
            request.tool_choice.as_ref().map(|c| match c {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::Any => json!("required"),
                ToolChoice::None => json!("none"),
                ToolChoice::Tool(name) => json!({"type": "function", "name": name}),
            }),
        );
        set(
            "parallel_tool_calls",
            request.parallel_tool_calls.map(Value::Bool),
        );
        set("store", Some(Value::Bool(false)));
        if !request.stop.is_empty() {
            note(&mut left_out, "stop");
        }
        Ok(Written {
            body: Value::Object(body),
            left_out,
        })
    }

    fn read_answer(&self, body: &[u8]) -> Result<neutral::Answer, TranslateError> {
        let r: Response = serde_json::from_slice(body).map_err(|e| bad(self.api(), e))?;
        let (mut parts, mut called, mut refused) = (Vec::new(), false, false);
        let mut untranslated = Vec::new();
        for item in &r.output {
            match item.kind() {
                "message" => {
                    let content = item.content.get().and_then(Value::as_array);
                    for c in content.into_iter().flatten() {
                        match c.get("type").and_then(Value::as_str) {
                            Some("output_text") => {
                                parts.push(Part::Text(text_of(c, "text").unwrap_or_default()));
                                if c.get("annotations")
                                    .and_then(Value::as_array)
                                    .is_some_and(|a| !a.is_empty())
                                {
                                    note(&mut untranslated, "output_text annotations");
                                }
                            }
                            Some("refusal") => {
                                refused = true;
                                parts
                                    .push(Part::Refusal(text_of(c, "refusal").unwrap_or_default()));
                            }
                            other => note(
                                &mut untranslated,
                                format!("output content `{}`", other.unwrap_or("?")),
                            ),
                        }
                    }
                }
                "reasoning" => match reasoning_part(item) {
                    Some(part) => parts.push(part),
                    None => note(&mut untranslated, "output item `reasoning` (an id only)"),
                },
                "function_call" => {
                    called = true;
                    let args = item.arguments.get().map_or("", String::as_str);
                    parts.push(Part::ToolCall {
                        id: item.call_id.clone(),
                        name: item.name.clone(),
                        arguments: arguments(args)?,
                    });
                }
                other => note(&mut untranslated, format!("output item `{other}`")),
            }
        }
        Ok(neutral::Answer {
            finish: finish_of(&r, called, refused),
            usage: usage_of(r.usage.get()),
            id: r.id,
            model: r.model,
            parts,
            untranslated,
        })
    }

    fn write_answer(&self, answer: &neutral::Answer) -> Result<WrittenAnswer, TranslateError> {
        let mut left_out = Vec::new();
        let mut output = Vec::new();
        let mut text = String::new();
        let flush = |text: &mut String, output: &mut Vec<Value>| {
            if !text.is_empty() {
                let id = format!("msg_{}", output.len());
                output.push(message_item(&id, "completed", &std::mem::take(text)));
            }
        };
        for part in &answer.parts {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Refusal(r) => {
                    flush(&mut text, &mut output);
                    let id = format!("msg_{}", output.len());
                    let mut item = message_item(&id, "completed", "");
                    item["content"] = json!([{"type": "refusal", "refusal": r}]);
                    output.push(item);
                }
                Part::Reasoning { text: r, signature } => {
                    flush(&mut text, &mut output);
                    if matches!(signature, Some(Signature::Anthropic(_))) {
                        note(&mut left_out, "reasoning signature");
                    }
                    let id = format!("rs_{}", output.len());
                    output.push(reasoning_item(&id, r, signature.as_ref()));
                }
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    flush(&mut text, &mut output);
                    let item_id = format!("fc_{}", output.len());
                    let made_up = format!("call_palisade_{}", output.len());
                    output.push(call_item(
                        &item_id,
                        "completed",
                        id.get().map_or(made_up.as_str(), String::as_str),
                        name.get().map_or("", String::as_str),
                        &arguments.to_string(),
                    ));
                }
                Part::Image(_) => note(&mut left_out, "image in an answer"),
                Part::ToolResult { .. } => note(&mut left_out, "tool result in an answer"),
            }
        }
        flush(&mut text, &mut output);
        let mut r = response_object(
            &answer.id,
            &answer.model,
            now_secs(),
            "completed",
            output,
            Some(answer.usage),
        );
        finish_response(&mut r, answer.finish);
        Ok(WrittenAnswer {
            body: serde_json::to_vec(&r).map_err(|e| bad(self.api(), e))?,
            left_out,
        })
    }

    fn stream_reader(&self) -> Box<dyn StreamReader> {
        Box::new(Reader::default())
    }

    fn stream_writer(&self, _caller_request: &Value) -> Box<dyn StreamWriter> {
        Box::new(Writer::default())
    }
}

/// Reads a Responses stream.
#[derive(Default)]
struct Reader {
    started: bool,
    /// `output_index` of a function call item → its call number.
    calls: HashMap<u64, u32>,
    refused: bool,
    untranslated: Vec<String>,
}

impl Reader {
    fn start(&mut self, response: Option<&Response>, out: &mut Vec<Delta>) {
        if !self.started {
            self.started = true;
            out.push(Delta::Start {
                id: response.map(|r| r.id.clone()).unwrap_or_default(),
                model: response.map(|r| r.model.clone()).unwrap_or_default(),
                input_tokens: None,
            });
        }
    }
}

impl StreamReader for Reader {
    fn read(&mut self, event: &Event) -> Result<Vec<Delta>, TranslateError> {
        let ev = Typed::from_data(event.data()).map_err(|e| bad(Api::Responses, e))?;
        let mut out = Vec::new();
        match ev {
            Typed::Response {
                state: ResponseState::Created | ResponseState::InProgress | ResponseState::Queued,
                response,
                ..
            } => self.start(Some(&response), &mut out),
            Typed::Response {
                state: ResponseState::Completed | ResponseState::Incomplete,
                response,
                ..
            } => {
                self.start(Some(&response), &mut out);
                let finish = finish_of(&response, !self.calls.is_empty(), self.refused);
                out.push(Delta::Finish(finish));
                out.push(Delta::Usage(usage_of(response.usage.get())));
                out.push(Delta::End);
            }
            Typed::OutputItem {
                done: false,
                output_index,
                item,
                ..
            } => {
                self.start(None, &mut out);
                match item.kind() {
                    "function_call" => {
                        let call = u32::try_from(self.calls.len()).unwrap_or(u32::MAX);
                        self.calls.insert(output_index, call);
                        out.push(Delta::ToolCall {
                            call,
                            id: item.call_id.clone(),
                            name: item.name.clone(),
                        });
                        if let Some(args) = item.arguments.get().filter(|a| !a.is_empty()) {
                            out.push(Delta::ToolArgs {
                                call,
                                json: args.clone(),
                            });
                        }
                    }
                    "message" | "reasoning" => {}
                    other => note(&mut self.untranslated, format!("output item `{other}`")),
                }
            }
            Typed::OutputItem {
                done: true, item, ..
            } => {
                if let Some(enc) = Some(&item)
                    .filter(|i| i.kind() == "reasoning")
                    .and_then(|i| i.encrypted_content.get())
                {
                    out.push(Delta::Signature(Signature::OpenAi(enc.clone())));
                }
            }
            Typed::Delta {
                of: TextOf::FunctionCallArguments,
                output_index,
                delta,
                ..
            } => {
                if let Some(&call) = self.calls.get(&output_index) {
                    out.push(Delta::ToolArgs { call, json: delta });
                }
            }
            Typed::Delta { of, delta, .. } => {
                self.start(None, &mut out);
                if !delta.is_empty() {
                    out.push(match of {
                        TextOf::OutputText => Delta::Text(delta),
                        TextOf::Refusal => {
                            self.refused = true;
                            Delta::Refusal(delta)
                        }
                        TextOf::ReasoningSummaryText
                        | TextOf::ReasoningText
                        | TextOf::FunctionCallArguments => Delta::Reasoning(delta),
                    });
                }
            }
            Typed::Annotation { .. } => note(&mut self.untranslated, "output_text annotations"),
            // A known event that would carry content but lacks a field its
            // type requires: named, not guessed at.
            Typed::Other(raw)
                if raw.is_known_kind()
                    && (raw.kind == "response.output_item.added"
                        || raw.kind.ends_with(".delta")) =>
            {
                note(
                    &mut self.untranslated,
                    format!("`{}` event missing a field its type requires", raw.kind),
                );
            }
            // The whole texts repeat the deltas; parts carry nothing the
            // deltas do not; `error` and `response.failed` are in-band
            // errors the stack's observation reports; other events (built-in
            // tools' progress) have no counterpart in a stream of text and
            // tool calls.
            Typed::Response {
                state: ResponseState::Failed,
                ..
            }
            | Typed::TextDone { .. }
            | Typed::Part { .. }
            | Typed::Error { .. }
            | Typed::Other(_) => {}
        }
        Ok(out)
    }

    fn untranslated(&mut self) -> Vec<String> {
        std::mem::take(&mut self.untranslated)
    }
}

/// The output item being written.
enum Open {
    Message {
        index: usize,
        id: String,
        text: String,
    },
    Refusal {
        index: usize,
        id: String,
        text: String,
    },
    Reasoning {
        index: usize,
        id: String,
        text: String,
        signature: Option<Signature>,
    },
    Call {
        index: usize,
        call: u32,
        id: String,
        call_id: String,
        name: String,
        args: String,
    },
}

/// Writes a Responses stream, numbering its events.
#[derive(Default)]
struct Writer {
    seq: u64,
    id: String,
    model: String,
    created: u64,
    /// The finished output items.
    items: Vec<Value>,
    open: Option<Open>,
    finish: Option<Finish>,
    usage: Option<Usage>,
    untranslated: Vec<String>,
}

impl Writer {
    fn emit(&mut self, name: &str, mut data: Value, out: &mut Vec<Bytes>) {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push(sse(name, &data));
    }

    fn response(&self, status: &str, usage: Option<Usage>) -> Value {
        response_object(
            &self.id,
            &self.model,
            self.created,
            status,
            self.items.clone(),
            usage,
        )
    }

    fn item_done(&mut self, index: usize, item: Value, out: &mut Vec<Bytes>) {
        self.emit(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
            out,
        );
        self.items.push(item);
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        match self.open.take() {
            None => {}
            Some(Open::Message { index, id, text }) => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = at.clone();
                done["text"] = json!(text);
                done["logprobs"] = json!([]);
                self.emit("response.output_text.done", done, out);
                let mut part_done = at;
                part_done["part"] = part;
                self.emit("response.content_part.done", part_done, out);
                self.item_done(index, message_item(&id, "completed", &text), out);
            }
            Some(Open::Refusal { index, id, text }) => {
                let part = json!({"type": "refusal", "refusal": text});
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = at.clone();
                done["refusal"] = json!(text);
                self.emit("response.refusal.done", done, out);
                let mut part_done = at;
                part_done["part"] = part.clone();
                self.emit("response.content_part.done", part_done, out);
                let mut item = message_item(&id, "completed", "");
                item["content"] = json!([part]);
                self.item_done(index, item, out);
            }
            Some(Open::Reasoning {
                index,
                id,
                text,
                signature,
            }) => {
                let at = json!({"item_id": id, "output_index": index, "summary_index": 0});
                let mut done = at.clone();
                done["text"] = json!(text);
                self.emit("response.reasoning_summary_text.done", done, out);
                let mut part_done = at;
                part_done["part"] = json!({"type": "summary_text", "text": text});
                self.emit("response.reasoning_summary_part.done", part_done, out);
                let item = reasoning_item(&id, &text, signature.as_ref());
                self.item_done(index, item, out);
            }
            Some(Open::Call {
                index,
                id,
                call_id,
                name,
                args,
                ..
            }) => {
                self.emit(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "name": name, "arguments": args}),
                    out,
                );
                let item = call_item(&id, "completed", &call_id, &name, &args);
                self.item_done(index, item, out);
            }
        }
    }

    /// Opens a message item for text or a refusal, with its content part.
    fn open_message(&mut self, refusal: bool, out: &mut Vec<Bytes>) {
        self.close(out);
        let index = self.items.len();
        let id = format!("msg_{index}");
        self.emit(
            "response.output_item.added",
            json!({"output_index": index, "item": {
                "id": id, "type": "message", "status": "in_progress",
                "role": "assistant", "content": [],
            }}),
            out,
        );
        let part = if refusal {
            json!({"type": "refusal", "refusal": ""})
        } else {
            json!({"type": "output_text", "text": "", "annotations": []})
        };
        self.emit(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
            out,
        );
        let text = String::new();
        self.open = Some(if refusal {
            Open::Refusal { index, id, text }
        } else {
            Open::Message { index, id, text }
        });
    }
}

impl StreamWriter for Writer {
    fn write(&mut self, delta: Delta, out: &mut Vec<Bytes>) {
        match delta {
            Delta::Start { id, model, .. } => {
                self.id = id;
                self.model = model;
                self.created = now_secs();
                let r = self.response("in_progress", None);
                self.emit("response.created", json!({"response": r}), out);
                self.emit("response.in_progress", json!({"response": r}), out);
            }
            Delta::Text(piece) => {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    self.open_message(false, out);
                }
                if let Some(Open::Message { index, id, text }) = &mut self.open {
                    text.push_str(&piece);
                    let data = json!({"item_id": id, "output_index": *index, "content_index": 0,
                                      "delta": piece, "logprobs": []});
                    self.emit("response.output_text.delta", data, out);
                }
            }
            Delta::Refusal(piece) => {
                if !matches!(self.open, Some(Open::Refusal { .. })) {
                    self.open_message(true, out);
                }
                if let Some(Open::Refusal { index, id, text }) = &mut self.open {
                    text.push_str(&piece);
                    let data = json!({"item_id": id, "output_index": *index, "content_index": 0,
                                      "delta": piece});
                    self.emit("response.refusal.delta", data, out);
                }
            }
            Delta::Reasoning(piece) => {
                if !matches!(self.open, Some(Open::Reasoning { .. })) {
                    self.close(out);
                    let index = self.items.len();
                    let id = format!("rs_{index}");
                    self.emit(
                        "response.output_item.added",
                        json!({"output_index": index,
                               "item": {"id": id, "type": "reasoning", "summary": []}}),
                        out,
                    );
                    self.emit(
                        "response.reasoning_summary_part.added",
                        json!({"item_id": id, "output_index": index, "summary_index": 0,
                               "part": {"type": "summary_text", "text": ""}}),
                        out,
                    );
                    self.open = Some(Open::Reasoning {
                        index,
                        id,
                        text: String::new(),
                        signature: None,
                    });
                }
                if let Some(Open::Reasoning {
                    index, id, text, ..
                }) = &mut self.open
                {
                    text.push_str(&piece);
                    let data = json!({"item_id": id, "output_index": *index, "summary_index": 0,
                                      "delta": piece});
                    self.emit("response.reasoning_summary_text.delta", data, out);
                }
            }
            Delta::Signature(sig) => match (&mut self.open, sig) {
                (Some(Open::Reasoning { signature, .. }), sig @ Signature::OpenAi(_)) => {
                    *signature = Some(sig);
                }
                _ => note(&mut self.untranslated, "reasoning signature"),
            },
            Delta::ToolCall { call, id, name } => {
                self.close(out);
                let index = self.items.len();
                let item_id = format!("fc_{index}");
                let call_id = id
                    .into_option()
                    .unwrap_or_else(|| format!("call_palisade_{call}"));
                let name = name.into_option().unwrap_or_default();
                let item = call_item(&item_id, "in_progress", &call_id, &name, "");
                self.emit(
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                    out,
                );
                self.open = Some(Open::Call {
                    index,
                    call,
                    id: item_id,
                    call_id,
                    name,
                    args: String::new(),
                });
            }
            Delta::ToolArgs { call, json } => {
                if let Some(Open::Call {
                    index,
                    call: open,
                    id,
                    args,
                    ..
                }) = &mut self.open
                    && *open == call
                {
                    args.push_str(&json);
                    let data = json!({"item_id": id, "output_index": *index, "delta": json});
                    self.emit("response.function_call_arguments.delta", data, out);
                } else {
                    note(
                        &mut self.untranslated,
                        "arguments of a tool call interleaved with another",
                    );
                }
            }
            Delta::Finish(f) => self.finish = Some(f),
            Delta::Usage(u) => self.usage = Some(u),
            Delta::End => {
                self.close(out);
                let finish = self.finish.unwrap_or_default();
                let mut r = self.response("completed", Some(self.usage.unwrap_or_default()));
                finish_response(&mut r, finish);
                let name = if r["status"] == "incomplete" {
                    "response.incomplete"
                } else {
                    "response.completed"
                };
                self.emit(name, json!({"response": r}), out);
            }
        }
    }

    fn fail(&mut self, status: StatusCode, message: &str, out: &mut Vec<Bytes>) {
        let code = Api::Responses.error_type(status);
        let mut r = self.response("failed", self.usage);
        r["error"] = json!({"code": code, "message": message});
        self.emit("response.failed", json!({"response": r}), out);
        self.emit(
            "error",
            json!({"code": code, "message": message, "param": null}),
            out,
        );
    }

    fn untranslated(&mut self) -> Vec<String> {
        std::mem::take(&mut self.untranslated)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn events(bytes: &[Bytes]) -> Vec<Event> {
        let mut d = palisade_sse::Decoder::new();
        for b in bytes {
            d.push(b.clone());
        }
        std::iter::from_fn(|| d.next_event().ok().flatten()).collect()
    }

    #[test]
    fn a_content_event_missing_a_required_field_is_named_not_guessed_at() {
        let mut reader = Responses.stream_reader();
        let wire = [
            sse(
                "response.output_item.added",
                &json!({"type": "response.output_item.added",
                "item": {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""}}),
            ),
            sse(
                "response.output_text.delta",
                &json!({"type": "response.output_text.delta",
                "item_id": "m", "output_index": 0, "delta": "x"}),
            ),
            sse(
                "response.web_search_call.searching",
                &json!({
                "type": "response.web_search_call.searching", "item_id": "ws", "output_index": 1}),
            ),
        ];
        for ev in events(&wire) {
            assert_eq!(reader.read(&ev).unwrap(), Vec::new());
        }
        assert_eq!(
            reader.untranslated(),
            [
                "`response.output_item.added` event missing a field its type requires",
                "`response.output_text.delta` event missing a field its type requires",
            ]
        );
    }

    #[test]
    fn a_request_reads_with_items_tools_and_what_is_left_out() {
        let body = json!({
            "model": "gpt-4.1",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Use tools."},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "What is in this image?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                    {"type": "input_file", "file_id": "file-1"},
                ]},
                {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{\"x\":1}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
            ],
            "tools": [
                {"type": "function", "name": "look", "parameters": {"type": "object"}},
                {"type": "web_search"},
            ],
            "tool_choice": "required",
            "max_output_tokens": 200,
            "text": {"format": {"type": "text"}},
            "store": true,
            "user": null,
        });
        let r = Responses.read_request(&body).unwrap();
        assert_eq!(r.system, ["Be brief.", "Use tools."]);
        assert_eq!(r.max_output_tokens, Some(200));
        assert_eq!(r.tool_choice, Some(ToolChoice::Any));
        assert_eq!(r.tools.as_ref().unwrap().len(), 1);
        assert_eq!(r.turns.len(), 3, "{:?}", r.turns);
        assert!(
            matches!(&r.turns[0].parts[1], Part::Image(Image::Base64 { media_type, .. }) if media_type == "image/png")
        );
        assert!(
            matches!(&r.turns[1].parts[0], Part::ToolCall { arguments, .. } if arguments["x"] == 1)
        );
        assert!(
            matches!(&r.turns[2].parts[0], Part::ToolResult { content, .. } if content == "a cat")
        );
        for named in [
            "input[1].content part `input_file`",
            "input[4] of type `reasoning` (an id only)",
            "tools[1] of type `web_search`",
            "text",
            "store",
        ] {
            assert!(
                r.untranslated.iter().any(|u| u == named),
                "{named}: {:?}",
                r.untranslated
            );
        }
        assert!(
            !r.untranslated.iter().any(|u| u == "user"),
            "null fields are not named"
        );
    }

    #[test]
    fn state_cannot_be_translated() {
        let body = json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]});
        assert!(Responses.read_request(&body).is_err());
        assert_eq!(
            needs_state(&body),
            Some("an input item of type `item_reference`")
        );
    }

    #[test]
    fn a_request_round_trips_through_the_neutral_model() {
        let body = json!({
            "model": "m",
            "instructions": "sys",
            "input": [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\":1}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ],
            "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "parallel_tool_calls": false,
            "max_output_tokens": 10,
            "temperature": 0.5,
            "stream": true,
        });
        let n = Responses.read_request(&body).unwrap();
        let w = Responses.write_request(&n).unwrap();
        assert!(w.left_out.is_empty());
        let mut expected = body;
        expected["store"] = json!(false);
        expected["input"][2]["arguments"] = json!("{\"a\":1}");
        assert_eq!(w.body, expected);
    }

    #[test]
    fn an_answer_round_trips_with_calls_usage_and_finish() {
        let answer = json!({
            "id": "resp_1", "object": "response", "model": "m", "status": "completed",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "look",
                 "arguments": "{\"q\":\"cats\"}", "status": "completed"},
            ],
            "usage": {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 10},
                      "output_tokens": 5, "total_tokens": 35},
        });
        let a = Responses
            .read_answer(answer.to_string().as_bytes())
            .unwrap();
        assert_eq!(a.finish, Finish::ToolCalls);
        assert_eq!(
            a.usage,
            Usage {
                input: 30,
                output: 5,
                cached_input: 10,
                cache_write_input: 0,
                reasoning_output: 0
            }
        );
        let back: Value =
            serde_json::from_slice(&Responses.write_answer(&a).unwrap().body).unwrap();
        assert_eq!(back["output"][0]["content"][0]["text"], "Let me look.");
        assert_eq!(back["output"][1]["call_id"], "call_1");
        assert_eq!(back["output"][1]["arguments"], "{\"q\":\"cats\"}");
        assert_eq!(back["usage"]["input_tokens_details"]["cached_tokens"], 10);
        assert_eq!(back["status"], "completed");
        let cut = json!({"id": "r", "model": "m", "status": "incomplete",
                         "incomplete_details": {"reason": "max_output_tokens"}, "output": []});
        let a = Responses.read_answer(cut.to_string().as_bytes()).unwrap();
        assert_eq!(a.finish, Finish::Length);
        let back: Value =
            serde_json::from_slice(&Responses.write_answer(&a).unwrap().body).unwrap();
        assert_eq!(back["status"], "incomplete");
        assert_eq!(back["incomplete_details"]["reason"], "max_output_tokens");
    }

    #[test]
    fn a_written_stream_is_numbered_and_reads_back() {
        let mut w = Writer::default();
        let mut out = Vec::new();
        for d in [
            Delta::Start {
                id: "resp_1".into(),
                model: "m".into(),
                input_tokens: None,
            },
            Delta::Text("Hel".into()),
            Delta::Text("lo".into()),
            Delta::ToolCall {
                call: 0,
                id: Maybe::Present("call_1".into()),
                name: Maybe::Present("f".into()),
            },
            Delta::ToolArgs {
                call: 0,
                json: "{\"a\":".into(),
            },
            Delta::ToolArgs {
                call: 0,
                json: "1}".into(),
            },
            Delta::Finish(Finish::ToolCalls),
            Delta::Usage(Usage {
                input: 3,
                output: 4,
                cached_input: 1,
                cache_write_input: 0,
                reasoning_output: 0,
            }),
            Delta::End,
        ] {
            w.write(d, &mut out);
        }
        let evs = events(&out);
        for (i, ev) in evs.iter().enumerate() {
            let v: Value = serde_json::from_slice(ev.data()).unwrap();
            assert_eq!(v["sequence_number"], i as u64, "{v}");
            assert_eq!(Some(v["type"].as_str().unwrap()), ev.event());
        }
        let last: Value = serde_json::from_slice(evs.last().unwrap().data()).unwrap();
        assert!(evs.last().unwrap().is("response.completed"));
        assert_eq!(last["response"]["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(last["response"]["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(last["response"]["usage"]["total_tokens"], 7);
        assert!(evs.iter().any(|e| Api::Responses.carries_content(e)));
        assert!(Api::Responses.is_terminator(evs.last().unwrap()));
        // Read back, the same deltas.
        let mut r = Reader::default();
        let deltas: Vec<Delta> = evs.iter().flat_map(|e| r.read(e).unwrap()).collect();
        assert!(deltas.contains(&Delta::Text("Hel".into())));
        assert!(deltas.contains(&Delta::ToolArgs {
            call: 0,
            json: "1}".into()
        }));
        assert!(deltas.contains(&Delta::Finish(Finish::ToolCalls)));
        assert!(deltas.contains(&Delta::Usage(Usage {
            input: 3,
            output: 4,
            cached_input: 1,
            cache_write_input: 0,
            reasoning_output: 0
        })));
        assert_eq!(deltas.last(), Some(&Delta::End));
        // A failure continues the numbering.
        let mut out = Vec::new();
        w.fail(StatusCode::BAD_GATEWAY, "gone", &mut out);
        let evs2 = events(&out);
        let f: Value = serde_json::from_slice(evs2[0].data()).unwrap();
        assert_eq!(f["sequence_number"], evs.len() as u64);
        assert!(
            Api::Responses.is_inband_error(&evs2[0]) && Api::Responses.is_inband_error(&evs2[1])
        );
    }
}
