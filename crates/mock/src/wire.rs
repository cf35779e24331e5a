//! The dialects the mock speaks: reading a request, writing replies.

use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use serde_json::{Value, json};

/// Which API a request was addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
    /// OpenAI's Responses API.
    Responses,
}

/// What the mock needs from a chat request.
#[derive(Debug)]
pub(crate) struct ChatRequest {
    pub(crate) model: String,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) max_tokens: Option<usize>,
    pub(crate) words: Vec<String>,
    pub(crate) prompt_tokens: usize,
    /// The tool to call, when the request requires a tool call.
    pub(crate) call: Option<ToolCall>,
}

/// A tool call the mock makes: the tool's name and its arguments (JSON
/// text).
#[derive(Clone, Debug)]
pub(crate) struct ToolCall {
    pub(crate) name: String,
    pub(crate) arguments: String,
}

/// The tool call a request requires, if it requires one: `tool_choice`
/// `"required"` or naming a function (chat completions, the Responses API),
/// `{"type": "any"}` or `{"type": "tool"}` (Anthropic). The named tool, else
/// the first; its arguments fill each string parameter with `text` (the
/// last user message), each number with 1, each boolean with true.
fn required_call(v: &Value, text: &str) -> Option<ToolCall> {
    let choice = v.get("tool_choice")?;
    let named = match choice {
        Value::String(s) if s == "required" => None,
        Value::Object(c) => match c.get("type").and_then(Value::as_str) {
            Some("any") => None,
            Some("tool" | "function") => c
                .get("name")
                .or_else(|| c.get("function").and_then(|f| f.get("name")))
                .and_then(Value::as_str),
            _ => return None,
        },
        _ => return None,
    };
    let tools = v.get("tools")?.as_array()?;
    let name_of = |t: &Value| {
        t.get("name")
            .or_else(|| t.pointer("/function/name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let tool = match named {
        Some(n) => tools.iter().find(|t| name_of(t).as_deref() == Some(n))?,
        None => tools.first()?,
    };
    let schema = tool
        .get("parameters")
        .or_else(|| tool.get("input_schema"))
        .or_else(|| tool.pointer("/function/parameters"));
    let mut args = serde_json::Map::new();
    let props = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    for (k, p) in props.into_iter().flatten() {
        let value = match p.get("type").and_then(Value::as_str) {
            Some("string") => Value::from(text),
            Some("number" | "integer") => Value::from(1),
            Some("boolean") => Value::Bool(true),
            _ => Value::Null,
        };
        args.insert(k.clone(), value);
    }
    Some(ToolCall {
        name: name_of(tool)?,
        arguments: Value::Object(args).to_string(),
    })
}

/// A request body's JSON and its `model`, or why it has none.
fn json_and_model(body: &[u8]) -> Result<(Value, String), String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .ok_or("`model` is required and must be a string")?
        .to_owned();
    Ok((v, model))
}

/// Parses a chat request, or says (in the provider's words) why it is invalid.
pub(crate) fn parse_request(body: &[u8]) -> Result<ChatRequest, String> {
    let (v, model) = json_and_model(body)?;
    let mut prompt_tokens = system_text(&v).split_whitespace().count();
    let mut last_user = String::new();
    let mut read = |m: &Value| {
        let text = content_text(m.get("content"));
        prompt_tokens += text.split_whitespace().count();
        if m.get("role").and_then(Value::as_str) == Some("user") {
            last_user = text;
        }
    };
    match (v.get("messages"), v.get("input")) {
        (Some(Value::Array(messages)), _) => messages.iter().for_each(&mut read),
        // The Responses API: `input` is a string or a list of items.
        (None, Some(Value::String(s))) => read(&json!({"role": "user", "content": s})),
        (None, Some(Value::Array(items))) => items.iter().for_each(&mut read),
        _ => {
            return Err(
                "`messages` (or the Responses API's `input`) is required and must be an array"
                    .into(),
            );
        }
    }
    if let Some(i) = v.get("instructions").and_then(Value::as_str) {
        prompt_tokens += i.split_whitespace().count();
    }
    let call = required_call(&v, &last_user);
    let words = last_user.split_whitespace().map(str::to_owned).collect();
    let max_tokens = v
        .get("max_completion_tokens")
        .or_else(|| v.get("max_tokens"))
        .or_else(|| v.get("max_output_tokens"))
        .and_then(Value::as_u64)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    Ok(ChatRequest {
        model,
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        max_tokens,
        words,
        prompt_tokens: prompt_tokens.max(1),
        call,
    })
}

/// A reply that calls `call`, whole (JSON) or as a stream's events.
pub(crate) fn tool_call_reply(m: &ReplyMeta, call: &ToolCall, stream: bool) -> Bytes {
    let call_id = format!("call_mock_{}", m.id);
    let args: Value = serde_json::from_str(&call.arguments).unwrap_or_default();
    let usage_tokens = 1;
    match (m.dialect, stream) {
        (Dialect::OpenAi, false) => Bytes::from(
            json!({
                "id": m.id, "object": "chat.completion", "created": m.created, "model": m.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null,
                    "tool_calls": [{"id": call_id, "type": "function",
                                    "function": {"name": call.name, "arguments": call.arguments}}]},
                    "logprobs": null, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": m.prompt_tokens, "completion_tokens": usage_tokens,
                          "total_tokens": m.prompt_tokens + usage_tokens},
            })
            .to_string(),
        ),
        (Dialect::OpenAi, true) => {
            let chunk = |delta: Value, finish: Value| {
                sse(None, &json!({"id": m.id, "object": "chat.completion.chunk", "created": m.created,
                    "model": m.model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]}))
            };
            let mut b = BytesMut::new();
            b.put(chunk(json!({"role": "assistant", "content": null}), Value::Null));
            b.put(chunk(
                json!({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                       "function": {"name": call.name, "arguments": ""}}]}),
                Value::Null,
            ));
            b.put(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": call.arguments}}]}),
                Value::Null,
            ));
            b.put(chunk(json!({}), json!("tool_calls")));
            if m.include_usage {
                b.put(sse(None, &json!({"id": m.id, "object": "chat.completion.chunk", "created": m.created,
                    "model": m.model, "choices": [],
                    "usage": {"prompt_tokens": m.prompt_tokens, "completion_tokens": usage_tokens,
                              "total_tokens": m.prompt_tokens + usage_tokens}})));
            }
            b.put_slice(b"data: [DONE]\n\n");
            b.freeze()
        }
        (Dialect::Anthropic, false) => Bytes::from(
            json!({
                "id": m.id, "type": "message", "role": "assistant", "model": m.model,
                "content": [{"type": "tool_use", "id": call_id, "name": call.name, "input": args}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": m.prompt_tokens, "output_tokens": usage_tokens},
            })
            .to_string(),
        ),
        (Dialect::Anthropic, true) => {
            let mut b = BytesMut::new();
            b.put(sse(Some("message_start"), &json!({"type": "message_start", "message": {
                "id": m.id, "type": "message", "role": "assistant", "content": [], "model": m.model,
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": m.prompt_tokens, "output_tokens": 1}}})));
            b.put(sse(Some("content_block_start"), &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}})));
            b.put(sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": call.arguments}})));
            b.put(sse(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": 0})));
            b.put(sse(Some("message_delta"), &json!({"type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": m.prompt_tokens, "output_tokens": usage_tokens}})));
            b.put(sse(Some("message_stop"), &json!({"type": "message_stop"})));
            b.freeze()
        }
        (Dialect::Responses, stream) => {
            let item = |status: &str, arguments: &str| {
                json!({"id": format!("fc_{}", m.id.trim_start_matches("resp_")), "type": "function_call",
                       "status": status, "call_id": call_id, "name": call.name, "arguments": arguments})
            };
            let mut r = responses_object(m, "completed", None);
            r["output"] = json!([item("completed", &call.arguments)]);
            r["usage"] = json!({"input_tokens": m.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": m.prompt_tokens + usage_tokens});
            if !stream {
                return Bytes::from(r.to_string());
            }
            let mut started = responses_object(m, "in_progress", None);
            started["usage"] = Value::Null;
            let item_id = item("", "")["id"].clone();
            let mut b = BytesMut::new();
            b.put(responses_event("response.created", 0, json!({"response": started})));
            b.put(responses_event("response.in_progress", 1, json!({"response": started})));
            b.put(responses_event("response.output_item.added", 2,
                json!({"output_index": 0, "item": item("in_progress", "")})));
            b.put(responses_event("response.function_call_arguments.delta", 3,
                json!({"item_id": item_id, "output_index": 0, "delta": call.arguments})));
            b.put(responses_event("response.function_call_arguments.done", 4,
                json!({"item_id": item_id, "output_index": 0, "name": call.name, "arguments": call.arguments})));
            b.put(responses_event("response.output_item.done", 5,
                json!({"output_index": 0, "item": item("completed", &call.arguments)})));
            b.put(responses_event("response.completed", 6, json!({"response": r})));
            b.freeze()
        }
    }
}

/// What the mock needs from an embeddings request.
#[derive(Debug)]
pub(crate) struct EmbeddingsRequest {
    pub(crate) model: String,
    /// Each input, as text (a token array as its numbers).
    pub(crate) inputs: Vec<String>,
    /// Tokens in all inputs (words, or a token array's length).
    pub(crate) prompt_tokens: usize,
    pub(crate) dimensions: usize,
    pub(crate) base64: bool,
}

/// Parses an embeddings request: `input` a string, a list of strings, a
/// token array or a list of token arrays.
pub(crate) fn parse_embeddings(body: &[u8]) -> Result<EmbeddingsRequest, String> {
    let (v, model) = json_and_model(body)?;
    let one = |x: &Value| -> Option<(String, usize)> {
        match x {
            Value::String(s) => Some((s.clone(), s.split_whitespace().count().max(1))),
            Value::Array(t) if t.iter().all(Value::is_u64) => Some((
                t.iter().map(Value::to_string).collect::<Vec<_>>().join(" "),
                t.len(),
            )),
            _ => None,
        }
    };
    let list: Vec<(String, usize)> = match v.get("input") {
        Some(x @ Value::String(_)) => vec![one(x).unwrap_or_default()],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_u64) => {
            vec![one(&Value::Array(a.clone())).unwrap_or_default()]
        }
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(one)
            .collect::<Option<_>>()
            .ok_or("each `input` must be a string or an array of token ids")?,
        _ => {
            return Err(
                "`input` is required: a string, an array of strings, or token arrays".into(),
            );
        }
    };
    let dimensions = v
        .get("dimensions")
        .and_then(Value::as_u64)
        .map_or(8, |d| usize::try_from(d).unwrap_or(8).clamp(1, 4096));
    Ok(EmbeddingsRequest {
        model,
        prompt_tokens: list.iter().map(|(_, n)| n).sum(),
        inputs: list.into_iter().map(|(s, _)| s).collect(),
        dimensions,
        base64: v.get("encoding_format").and_then(Value::as_str) == Some("base64"),
    })
}

/// A unit vector of `dims` floats, the same for the same text.
fn vector(text: &str, dims: usize) -> Vec<f32> {
    // FNV-1a, then a xorshift walk: deterministic, dependency-free.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            ((h >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// An embeddings answer: one vector per input, floats or base64 of
/// little-endian `f32`s, as OpenAI sends them.
pub(crate) fn embeddings_reply(req: &EmbeddingsRequest) -> Bytes {
    use base64::Engine as _;
    let data: Vec<Value> = req
        .inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let v = vector(text, req.dimensions);
            let embedding = if req.base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::from(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Bytes::from(
        json!({
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": req.prompt_tokens, "total_tokens": req.prompt_tokens},
        })
        .to_string(),
    )
}

fn system_text(v: &Value) -> String {
    content_text(v.get("system"))
}

/// The text of a `content` field: a string, or the `text` of its parts.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The provider's error body for `status`.
pub(crate) fn error_body(dialect: Dialect, status: StatusCode, message: &str) -> Bytes {
    let v = match dialect {
        Dialect::OpenAi | Dialect::Responses => {
            let (kind, code) = match status.as_u16() {
                401 => ("invalid_request_error", Value::from("invalid_api_key")),
                404 => ("invalid_request_error", Value::from("model_not_found")),
                429 => ("requests", Value::from("rate_limit_exceeded")),
                400..=499 => ("invalid_request_error", Value::Null),
                _ => ("server_error", Value::Null),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Dialect::Anthropic => {
            json!({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})
        }
    };
    Bytes::from(v.to_string())
}

fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    }
}

/// The default message for a scripted error status.
pub(crate) fn status_message(status: StatusCode) -> String {
    format!(
        "palisade-mock: scripted {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error")
    )
}

/// How a completed reply ended.
pub(crate) fn finish_reason(dialect: Dialect, truncated: bool) -> &'static str {
    match (dialect, truncated) {
        (Dialect::OpenAi, false) => "stop",
        (Dialect::OpenAi, true) => "length",
        (Dialect::Anthropic, false) => "end_turn",
        (Dialect::Anthropic, true) => "max_tokens",
        (Dialect::Responses, false) => "completed",
        (Dialect::Responses, true) => "incomplete",
    }
}

/// Everything a reply's body is built from.
#[derive(Debug)]
pub(crate) struct ReplyMeta {
    pub(crate) dialect: Dialect,
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) created: u64,
    pub(crate) prompt_tokens: usize,
    pub(crate) completion_tokens: usize,
    pub(crate) truncated: bool,
    pub(crate) include_usage: bool,
}

/// A whole JSON reply.
pub(crate) fn json_reply(meta: &ReplyMeta, text: &str) -> Bytes {
    let m = meta;
    let v = match m.dialect {
        Dialect::OpenAi => json!({
            "id": m.id, "object": "chat.completion", "created": m.created, "model": m.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": finish_reason(m.dialect, m.truncated),
            }],
            "usage": {
                "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens,
                "total_tokens": m.prompt_tokens + m.completion_tokens,
            },
            "system_fingerprint": null,
        }),
        Dialect::Anthropic => json!({
            "id": m.id, "type": "message", "role": "assistant", "model": m.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": finish_reason(m.dialect, m.truncated),
            "stop_sequence": null,
            "usage": {"input_tokens": m.prompt_tokens, "output_tokens": m.completion_tokens},
        }),
        Dialect::Responses => responses_object(m, "", Some(text)),
    };
    Bytes::from(v.to_string())
}

/// The id of the mock's one output message in a Responses answer.
fn message_id(m: &ReplyMeta) -> String {
    format!("msg_{}", m.id.trim_start_matches("resp_"))
}

/// A Responses API response object: `status` from the reply unless given,
/// the output message when its `text` is.
fn responses_object(m: &ReplyMeta, status: &str, text: Option<&str>) -> Value {
    let status = if status.is_empty() {
        finish_reason(m.dialect, m.truncated)
    } else {
        status
    };
    let output: Vec<Value> = text
        .map(|t| {
            json!({"id": message_id(m), "type": "message", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": t, "annotations": []}]})
        })
        .into_iter()
        .collect();
    let done = text.is_some();
    json!({
        "id": m.id, "object": "response", "created_at": m.created, "status": status,
        "error": null,
        "incomplete_details": if done && m.truncated { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "instructions": null, "max_output_tokens": null, "model": m.model,
        "output": output, "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "store": false, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
        "truncation": "disabled",
        "usage": if done { json!({
            "input_tokens": m.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": m.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": m.prompt_tokens + m.completion_tokens,
        }) } else { Value::Null },
        "metadata": {},
    })
}

/// A Responses stream event: `event: {kind}`, `type` and `sequence_number` set.
fn responses_event(kind: &str, seq: usize, mut data: Value) -> Bytes {
    data["type"] = json!(kind);
    data["sequence_number"] = json!(seq);
    sse(Some(kind), &data)
}

/// Events of a Responses stream before its first token.
pub(crate) const RESPONSES_PREAMBLE_EVENTS: usize = 4;

fn sse(event: Option<&str>, data: &Value) -> Bytes {
    let mut b = BytesMut::new();
    if let Some(e) = event {
        b.put_slice(b"event: ");
        b.put_slice(e.as_bytes());
        b.put_u8(b'\n');
    }
    b.put_slice(b"data: ");
    b.put_slice(data.to_string().as_bytes());
    b.put_slice(b"\n\n");
    b.freeze()
}

/// The events before the first token.
pub(crate) fn stream_preamble(m: &ReplyMeta) -> Bytes {
    match m.dialect {
        Dialect::OpenAi => {
            let mut v = json!({
                "id": m.id, "object": "chat.completion.chunk", "created": m.created, "model": m.model,
                "system_fingerprint": null,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}],
            });
            if m.include_usage {
                v["usage"] = Value::Null;
            }
            sse(None, &v)
        }
        Dialect::Anthropic => {
            let mut b = BytesMut::new();
            b.put(sse(
                Some("message_start"),
                &json!({"type": "message_start", "message": {
                    "id": m.id, "type": "message", "role": "assistant", "content": [], "model": m.model,
                    "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": m.prompt_tokens, "output_tokens": 1},
                }}),
            ));
            b.put(sse(
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            b.put(ping());
            b.freeze()
        }
        Dialect::Responses => {
            let r = responses_object(m, "in_progress", None);
            let id = message_id(m);
            let mut b = BytesMut::new();
            b.put(responses_event(
                "response.created",
                0,
                json!({"response": r}),
            ));
            b.put(responses_event(
                "response.in_progress",
                1,
                json!({"response": r}),
            ));
            b.put(responses_event(
                "response.output_item.added",
                2,
                json!({"output_index": 0, "item": {"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
            ));
            b.put(responses_event(
                "response.content_part.added",
                3,
                json!({"item_id": id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            ));
            b.freeze()
        }
    }
}

/// The fixed text before and after a token's JSON string, so that a token
/// event is three copies and no JSON serialization of a whole object. A
/// Responses event also numbers itself: its head ends before the
/// `sequence_number`, which the body writes, then `"delta":`.
pub(crate) fn token_frame(m: &ReplyMeta) -> (Bytes, Bytes) {
    match m.dialect {
        Dialect::Responses => (
            Bytes::from(format!(
                "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"item_id\":{},\"output_index\":0,\"content_index\":0,\"logprobs\":[],\"sequence_number\":",
                Value::from(message_id(m))
            )),
            Bytes::from_static(b"}\n\n"),
        ),
        Dialect::OpenAi => {
            let head = format!(
                "data: {{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"system_fingerprint\":null,\"choices\":[{{\"index\":0,\"delta\":{{\"content\":",
                Value::from(m.id.as_str()),
                m.created,
                Value::from(m.model.as_str()),
            );
            let tail = if m.include_usage {
                "},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"
            } else {
                "},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
            };
            (Bytes::from(head), Bytes::from_static(tail.as_bytes()))
        }
        Dialect::Anthropic => (
            Bytes::from_static(
                b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":",
            ),
            Bytes::from_static(b"}}\n\n"),
        ),
    }
}

/// The events after the last token, terminator included.
pub(crate) fn stream_closing(m: &ReplyMeta, text: &str) -> Bytes {
    let reason = finish_reason(m.dialect, m.truncated);
    let mut b = BytesMut::new();
    match m.dialect {
        Dialect::Responses => {
            let seq = RESPONSES_PREAMBLE_EVENTS + m.completion_tokens;
            let id = message_id(m);
            let at = json!({"item_id": id, "output_index": 0, "content_index": 0});
            let mut done = at.clone();
            done["text"] = json!(text);
            done["logprobs"] = json!([]);
            b.put(responses_event("response.output_text.done", seq, done));
            let mut part = at;
            part["part"] = json!({"type": "output_text", "text": text, "annotations": []});
            b.put(responses_event("response.content_part.done", seq + 1, part));
            let r = responses_object(m, "", Some(text));
            b.put(responses_event(
                "response.output_item.done",
                seq + 2,
                json!({"output_index": 0, "item": r["output"][0].clone()}),
            ));
            let end = if m.truncated {
                "response.incomplete"
            } else {
                "response.completed"
            };
            b.put(responses_event(end, seq + 3, json!({"response": r})));
        }
        Dialect::OpenAi => {
            let mut last = json!({
                "id": m.id, "object": "chat.completion.chunk", "created": m.created, "model": m.model,
                "system_fingerprint": null,
                "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}],
            });
            if m.include_usage {
                last["usage"] = Value::Null;
            }
            b.put(sse(None, &last));
            if m.include_usage {
                b.put(sse(
                    None,
                    &json!({
                        "id": m.id, "object": "chat.completion.chunk", "created": m.created, "model": m.model,
                        "system_fingerprint": null, "choices": [],
                        "usage": {
                            "prompt_tokens": m.prompt_tokens,
                            "completion_tokens": m.completion_tokens,
                            "total_tokens": m.prompt_tokens + m.completion_tokens,
                        },
                    }),
                ));
            }
            b.put_slice(b"data: [DONE]\n\n");
        }
        Dialect::Anthropic => {
            b.put(sse(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": 0}),
            ));
            b.put(sse(
                Some("message_delta"),
                // Cumulative usage, input included, as the API sends it now
                // (LangChain's ChatAnthropic reads usage only here).
                &json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null},
                        "usage": {
                            "input_tokens": m.prompt_tokens,
                            "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": 0,
                            "output_tokens": m.completion_tokens,
                        }}),
            ));
            b.put(sse(Some("message_stop"), &json!({"type": "message_stop"})));
        }
    }
    b.freeze()
}

/// An in-band error event (`seq`: a Responses event's number).
pub(crate) fn inband_error(dialect: Dialect, seq: usize) -> Bytes {
    match dialect {
        Dialect::Responses => responses_event(
            "error",
            seq,
            json!({"code": "server_error", "message": "The server had an error while processing your request.", "param": null}),
        ),
        Dialect::OpenAi => sse(
            None,
            &json!({"error": {"message": "The server had an error while processing your request.",
                              "type": "server_error", "param": null, "code": null}}),
        ),
        Dialect::Anthropic => sse(
            Some("error"),
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    }
}

/// A keep-alive: an SSE comment for OpenAI, a `ping` event for Anthropic.
pub(crate) fn heartbeat(dialect: Dialect) -> Bytes {
    match dialect {
        Dialect::OpenAi | Dialect::Responses => Bytes::from_static(b": keep-alive\n\n"),
        Dialect::Anthropic => ping(),
    }
}

fn ping() -> Bytes {
    Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n")
}

/// A malformed SSE event: invalid UTF-8 in a data line, a line with no colon.
pub(crate) fn malformed_sse() -> Bytes {
    Bytes::from_static(b"data: \xff\xfe\xfd not utf-8\ngarbage line without a colon\n\n")
}

/// An event whose data is not JSON.
pub(crate) fn malformed_json_event(dialect: Dialect) -> Bytes {
    match dialect {
        Dialect::OpenAi => {
            Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"\n\n")
        }
        Dialect::Anthropic => Bytes::from_static(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\n\n",
        ),
        Dialect::Responses => Bytes::from_static(
            b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\n\n",
        ),
    }
}

/// The `GET /v1/models` listing.
pub(crate) fn models_body() -> Bytes {
    Bytes::from(
        json!({"object": "list", "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "palisade"}]})
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_text_comes_from_the_last_user_message() {
        let r = parse_request(
            br#"{"model":"m","messages":[
                {"role":"system","content":"be brief"},
                {"role":"user","content":"first question"},
                {"role":"assistant","content":"an answer"},
                {"role":"user","content":[{"type":"text","text":"hello"},{"type":"text","text":"big world"}]}
            ],"max_tokens":2,"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(r.words, ["hello", "big", "world"]);
        assert_eq!(r.prompt_tokens, 2 + 2 + 2 + 3);
        assert_eq!(r.max_tokens, Some(2));
        assert!(r.stream && r.include_usage);
    }

    #[test]
    fn invalid_requests_are_explained() {
        assert!(parse_request(b"{").unwrap_err().contains("not valid JSON"));
        assert!(
            parse_request(br#"{"model":"m"}"#)
                .unwrap_err()
                .contains("messages")
        );
        assert!(
            parse_request(br#"{"messages":[]}"#)
                .unwrap_err()
                .contains("model")
        );
    }

    #[test]
    fn token_frames_are_valid_sse_json() {
        for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
            let meta = ReplyMeta {
                dialect,
                id: "id\"1".into(),
                model: "mo\"del".into(),
                created: 1,
                prompt_tokens: 1,
                completion_tokens: 1,
                truncated: false,
                include_usage: true,
            };
            let (head, tail) = token_frame(&meta);
            let event = [&head[..], br#"" quoted\n""#, &tail[..]].concat();
            let text = std::str::from_utf8(&event).unwrap();
            let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let v: Value = serde_json::from_str(data).unwrap();
            assert!(v.to_string().contains("quoted"), "{v}");
        }
    }
}
