//! [`Api`]: one description per wire API.
//!
//! Everything palisade needs to know about an API's wire format lives here,
//! asked through methods: its path, how it takes a key, its vendor's name
//! in GenAI spans, its stream terminator, which stream events carry
//! content, where an answer's usage, finish reasons, model and id live
//! (read by [`observe`](crate::observe)), its error bodies and stream error
//! events, the status its in-band error types stand for. Layers and the
//! gateway ask it instead of keeping their own copies.
//!
//! `Api` is **exhaustive on purpose** (no `#[non_exhaustive]`): a `match`
//! on it anywhere — in this workspace or in your code — lists every
//! variant, so adding an API makes the compiler name every place that must
//! learn it, instead of a `_ =>` arm silently treating it as chat
//! completions. Adding a variant is therefore a breaking change, made in a
//! minor version while palisade is 0.x.

use std::fmt;

use bytes::Bytes;
use http::StatusCode;
use palisade_sse::Event;
use serde_json::{Value, json};

use crate::observe::Summary;

/// A wire API palisade speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI chat completions, `POST /chat/completions` (and every
    /// OpenAI-compatible server).
    ChatCompletions,
    /// Anthropic messages, `POST /messages`.
    Messages,
    /// OpenAI's Responses API, `POST /responses`.
    Responses,
    /// OpenAI embeddings, `POST /embeddings` (JSON only: no stream).
    Embeddings,
}

/// How an API takes a key. Exhaustive, as [`Api`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyStyle {
    /// `Authorization: Bearer KEY` (OpenAI and OpenAI-compatible servers).
    Bearer,
    /// `x-api-key: KEY`, with an `anthropic-version` header (Anthropic).
    XApiKey,
}

impl KeyStyle {
    /// The header a caller puts its key in, as a hint in messages:
    /// `Authorization: Bearer KEY`, `x-api-key: KEY`.
    pub fn hint(self) -> &'static str {
        match self {
            Self::Bearer => "Authorization: Bearer KEY",
            Self::XApiKey => "x-api-key: KEY",
        }
    }
}

/// A Responses status that ends an answer (not `in_progress`, `queued`).
fn finished(status: &str) -> bool {
    !matches!(status, "in_progress" | "queued")
}

/// `null`, `""`, `[]` or `{}`.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ChatCompletions => "OpenAI chat completions",
            Self::Messages => "Anthropic messages",
            Self::Responses => "OpenAI Responses",
            Self::Embeddings => "OpenAI embeddings",
        })
    }
}

impl Api {
    /// Every API, for tests and tables.
    pub const ALL: [Api; 4] = [
        Api::ChatCompletions,
        Api::Messages,
        Api::Responses,
        Api::Embeddings,
    ];

    /// A short, stable name for labels and logs: `chat_completions`,
    /// `messages`, `responses`, `embeddings`.
    pub fn id(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Messages => "messages",
            Self::Responses => "responses",
            Self::Embeddings => "embeddings",
        }
    }

    /// The request path under the base URL (`/chat/completions`,
    /// `/messages`, `/responses`, `/embeddings`).
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Messages => "/messages",
            Self::Responses => "/responses",
            Self::Embeddings => "/embeddings",
        }
    }

    /// The API a request path is for, by its last segment (`/v1/messages`,
    /// `/chat/completions`); `None` for any other path.
    ///
    /// ```
    /// use palisade_providers::Api;
    /// assert_eq!(Api::from_path("/v1/messages"), Some(Api::Messages));
    /// assert_eq!(Api::from_path("/chat/completions"), Some(Api::ChatCompletions));
    /// assert_eq!(Api::from_path("/v1/embeddings"), Some(Api::Embeddings));
    /// assert_eq!(Api::from_path("/v1/completions"), None);
    /// ```
    pub fn from_path(path: &str) -> Option<Api> {
        Self::ALL.into_iter().find(|a| path.ends_with(a.path()))
    }

    /// The vendor's name in the GenAI semantic conventions
    /// (`gen_ai.provider.name`): `openai`, `anthropic`.
    pub fn vendor(self) -> &'static str {
        match self {
            Self::ChatCompletions | Self::Responses | Self::Embeddings => "openai",
            Self::Messages => "anthropic",
        }
    }

    /// The GenAI operation name (`gen_ai.operation.name`) of a call:
    /// `chat` (the Responses API included, as the GenAI conventions name
    /// it), `embeddings`.
    pub fn operation(self) -> &'static str {
        match self {
            Self::ChatCompletions | Self::Messages | Self::Responses => "chat",
            Self::Embeddings => "embeddings",
        }
    }

    /// How a key is presented to this API.
    pub fn key_style(self) -> KeyStyle {
        match self {
            Self::ChatCompletions | Self::Responses | Self::Embeddings => KeyStyle::Bearer,
            Self::Messages => KeyStyle::XApiKey,
        }
    }

    /// Whether answers of this API can stream (`"stream": true`).
    pub fn streams(self) -> bool {
        match self {
            Self::ChatCompletions | Self::Messages | Self::Responses => true,
            Self::Embeddings => false,
        }
    }

    /// How this API's requests, answers and streams are read into and
    /// written out of the neutral model
    /// ([`Dialect`](crate::dialect::Dialect)); `None` for an API that is
    /// not translated (embeddings: vectors are only ever asked of the model
    /// that makes them).
    pub fn dialect(self) -> Option<&'static dyn crate::dialect::Dialect> {
        match self {
            Self::ChatCompletions => Some(&crate::dialect::chat::Chat),
            Self::Messages => Some(&crate::dialect::messages::Messages),
            Self::Responses => Some(&crate::dialect::responses::Responses),
            Self::Embeddings => None,
        }
    }

    /// Whether `ev` is this API's in-band error: chat completions'
    /// `data: {"error":…}`, Anthropic's `event: error`, the Responses API's
    /// `event: error` and `response.failed` — each API accepting the others'
    /// too, as compatible servers borrow them; the same rule as the SSE
    /// scanner's that the circuit breaker counts by
    /// ([`Event::is_inband_error`]). Embeddings do not stream.
    pub fn is_inband_error(self, ev: &Event) -> bool {
        match self {
            Self::ChatCompletions | Self::Messages | Self::Responses => ev.is_inband_error(),
            Self::Embeddings => false,
        }
    }

    /// Whether `ev` is a keep-alive of this API, neither content nor
    /// progress: Anthropic's `event: ping` (SSE comments, which every API
    /// may send, never become events). An observer does not count it as an
    /// event of the answer.
    pub fn is_ping(self, ev: &Event) -> bool {
        match self {
            Self::Messages => ev.is("ping"),
            Self::ChatCompletions | Self::Responses | Self::Embeddings => false,
        }
    }

    /// True when `ev` carries content: text, a tool call or its arguments,
    /// a refusal, reasoning — what "time to first token" waits for. Not
    /// OpenAI's first chunk with only the role, nor Anthropic's
    /// `message_start`, `content_block_start` or `ping`.
    ///
    /// ```
    /// use palisade_providers::Api;
    /// use palisade_sse::Decoder;
    ///
    /// let mut d = Decoder::new();
    /// d.push(bytes::Bytes::from_static(
    ///     b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
    ///       data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
    /// ));
    /// let role_only = d.next_event().unwrap().unwrap();
    /// let text = d.next_event().unwrap().unwrap();
    /// assert!(!Api::ChatCompletions.carries_content(&role_only));
    /// assert!(Api::ChatCompletions.carries_content(&text));
    /// ```
    pub fn carries_content(self, ev: &Event) -> bool {
        match self {
            Self::ChatCompletions => {
                // Parsed only until the first content (a caller's TTFT).
                let Ok(v) = serde_json::from_slice::<Value>(ev.data()) else {
                    return false;
                };
                v.get("choices")
                    .and_then(Value::as_array)
                    .is_some_and(|choices| {
                        choices.iter().any(|c| {
                            c.get("delta")
                                .and_then(Value::as_object)
                                .is_some_and(|d| d.iter().any(|(k, v)| k != "role" && !is_empty(v)))
                        })
                    })
            }
            Self::Messages => ev.is("content_block_delta"),
            Self::Responses => ev.event().is_some_and(|name| {
                name.starts_with("response.") && name.ends_with(".delta") && !ev.data().is_empty()
            }),
            Self::Embeddings => false,
        }
    }

    /// The event that ends a complete stream, as it reads on the wire
    /// (`data: [DONE]`, `event: message_stop`, `event: response.completed`),
    /// for messages; embeddings do not stream.
    pub fn terminator(self) -> &'static str {
        match self {
            Self::ChatCompletions => "data: [DONE]",
            Self::Messages => "event: message_stop",
            Self::Responses => "event: response.completed (or response.incomplete)",
            Self::Embeddings => "none: embeddings do not stream",
        }
    }

    /// True when `ev` is the stream's terminator. A Responses stream ends
    /// with `response.completed`, or `response.incomplete` when the output
    /// budget or a filter cut the answer short: both are complete streams.
    pub fn is_terminator(self, ev: &Event) -> bool {
        match self {
            Self::ChatCompletions => ev.data().as_ref() == b"[DONE]",
            Self::Messages => ev.is("message_stop"),
            Self::Responses => ev.is("response.completed") || ev.is("response.incomplete"),
            Self::Embeddings => false,
        }
    }

    /// Whether a stream event of this API may say what the answer amounted
    /// to, so that an observer parses it (the others are skipped unparsed):
    /// for chat completions, the first chunk (model, id) and every chunk
    /// whose `usage` or `finish_reason` is not `null` (with
    /// `stream_options.include_usage`, OpenAI sends `"usage":null` on every
    /// chunk but the last); for messages, `message_start` (model, id, input
    /// usage) and `message_delta` (stop reason, output usage).
    pub(crate) fn may_summarize(self, ev: &Event, first: bool) -> bool {
        match self {
            Self::ChatCompletions => first || crate::observe::worth_parsing(ev.data()),
            Self::Messages => ev.is("message_start") || ev.is("message_delta"),
            Self::Responses => {
                ev.is("response.created")
                    || ev.is("response.completed")
                    || ev.is("response.incomplete")
                    || ev.is("response.failed")
            }
            Self::Embeddings => false,
        }
    }

    /// Reads the model, id, finish reasons and usage of this API's answer
    /// into `s`, from a whole JSON answer or one stream event. Chat
    /// completions: top-level `model`, `id`, `usage.prompt_tokens` /
    /// `completion_tokens`, each `choices[].finish_reason`. Messages: the
    /// message's `model`, `id`, `stop_reason` and `usage.input_tokens` /
    /// `output_tokens`, the message being nested in `message_start`, and
    /// the stop reason in `delta` of `message_delta`. Token counts only
    /// grow (a later event's count replaces an earlier smaller one).
    pub(crate) fn summarize(self, v: &Value, s: &mut Summary) {
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let usage = |u: Option<&Value>, input: &str, output: &str, s: &mut Summary| {
            let Some(u) = u.filter(|u| u.is_object()) else {
                return;
            };
            let grow = |slot: &mut Option<u64>, k: &str| {
                if let Some(n) = u.get(k).and_then(Value::as_u64) {
                    *slot = Some(slot.map_or(n, |x| x.max(n)));
                }
            };
            grow(&mut s.input_tokens, input);
            grow(&mut s.output_tokens, output);
        };
        let msg = match self {
            Self::ChatCompletions | Self::Embeddings => v,
            Self::Messages => v.get("message").filter(|m| m.is_object()).unwrap_or(v),
            Self::Responses => v.get("response").filter(|m| m.is_object()).unwrap_or(v),
        };
        if s.model.is_none() {
            s.model = text(msg, "model");
        }
        if s.id.is_none() {
            s.id = text(msg, "id");
        }
        match self {
            Self::ChatCompletions => {
                let choices = v.get("choices").and_then(Value::as_array);
                for c in choices.into_iter().flatten() {
                    if let Some(r) = c.get("finish_reason").and_then(Value::as_str) {
                        s.finish_reasons.push(r.to_owned());
                    }
                }
                usage(v.get("usage"), "prompt_tokens", "completion_tokens", s);
            }
            Self::Messages => {
                let stop = msg
                    .get("stop_reason")
                    .or_else(|| v.pointer("/delta/stop_reason"))
                    .and_then(Value::as_str);
                if let Some(r) = stop {
                    s.finish_reasons.push(r.to_owned());
                }
                usage(msg.get("usage"), "input_tokens", "output_tokens", s);
            }
            Self::Responses => {
                if let Some(r) = msg.get("status").and_then(Value::as_str)
                    && finished(r)
                {
                    s.finish_reasons.push(r.to_owned());
                }
                usage(msg.get("usage"), "input_tokens", "output_tokens", s);
            }
            Self::Embeddings => usage(v.get("usage"), "prompt_tokens", "completion_tokens", s),
        }
    }

    /// [`summarize`](Self::summarize) for a whole JSON answer read by
    /// [`skim`](crate::skim): the same fields by the same rules, without
    /// the answer built as a `Value` (tested equal, in `observe`'s tests,
    /// on answers of every shape that parses into a `Value`).
    pub(crate) fn summarize_answer(self, a: &crate::skim::Answer, s: &mut Summary) {
        let grow = |slot: &mut Option<u64>, n: Option<u64>| {
            if let Some(n) = n {
                *slot = Some(slot.map_or(n, |x| x.max(n)));
            }
        };
        let msg = match self {
            Self::ChatCompletions | Self::Embeddings => a,
            Self::Messages => a.message.0.as_deref().unwrap_or(a),
            Self::Responses => a.response.0.as_deref().unwrap_or(a),
        };
        if s.model.is_none() {
            s.model.clone_from(&msg.model.value);
        }
        if s.id.is_none() {
            s.id.clone_from(&msg.id.value);
        }
        match self {
            Self::ChatCompletions => {
                for c in a.choices.0.iter().flatten() {
                    if let Some(r) = c.0.as_ref().and_then(|c| c.finish_reason.value.as_ref()) {
                        s.finish_reasons.push(r.clone());
                    }
                }
                if let Some(u) = &a.usage.0 {
                    grow(&mut s.input_tokens, u.prompt_tokens.0);
                    grow(&mut s.output_tokens, u.completion_tokens.0);
                }
            }
            Self::Messages => {
                // The message's own `stop_reason` when it has the key (of
                // any value), else the delta's.
                let stop = if msg.stop_reason.present {
                    msg.stop_reason.value.as_ref()
                } else {
                    a.delta
                        .0
                        .as_ref()
                        .and_then(|d| d.stop_reason.value.as_ref())
                };
                if let Some(r) = stop {
                    s.finish_reasons.push(r.clone());
                }
                if let Some(u) = &msg.usage.0 {
                    grow(&mut s.input_tokens, u.input_tokens.0);
                    grow(&mut s.output_tokens, u.output_tokens.0);
                }
            }
            Self::Responses => {
                if let Some(r) = msg.status.value.as_ref().filter(|r| finished(r)) {
                    s.finish_reasons.push(r.clone());
                }
                if let Some(u) = &msg.usage.0 {
                    grow(&mut s.input_tokens, u.input_tokens.0);
                    grow(&mut s.output_tokens, u.output_tokens.0);
                }
            }
            Self::Embeddings => {
                if let Some(u) = &a.usage.0 {
                    grow(&mut s.input_tokens, u.prompt_tokens.0);
                    grow(&mut s.output_tokens, u.completion_tokens.0);
                }
            }
        }
    }

    /// The API's error type for `status` (`invalid_request_error`,
    /// `overloaded_error` …). The caller's own mistakes — 400, 408 (its
    /// body arrived too slowly), 413, 415 (not JSON), 422 — are
    /// `invalid_request_error`, except Anthropic's 413, which its API types
    /// `request_too_large`. Each API lists its own statuses: a new API
    /// inherits none.
    ///
    /// ```
    /// use http::StatusCode;
    /// use palisade_providers::Api;
    ///
    /// for api in [Api::ChatCompletions, Api::Messages] {
    ///     for code in [400, 408, 415, 422] {
    ///         let status = StatusCode::from_u16(code).unwrap();
    ///         assert_eq!(api.error_type(status), "invalid_request_error");
    ///     }
    /// }
    /// assert_eq!(Api::ChatCompletions.error_type(StatusCode::PAYLOAD_TOO_LARGE), "invalid_request_error");
    /// assert_eq!(Api::Messages.error_type(StatusCode::PAYLOAD_TOO_LARGE), "request_too_large");
    /// ```
    pub fn error_type(self, status: StatusCode) -> &'static str {
        let code = status.as_u16();
        match self {
            Self::ChatCompletions | Self::Responses | Self::Embeddings => match code {
                400 | 408 | 413 | 415 | 422 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                503 => "service_unavailable",
                504 => "timeout",
                _ => "server_error",
            },
            Self::Messages => match code {
                400 | 408 | 415 | 422 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                503 | 529 => "overloaded_error",
                504 => "timeout_error",
                _ => "api_error",
            },
        }
    }

    /// The JSON error body for `status` in this API's format; `param`
    /// (chat completions only) names the offending field, e.g. a JSON
    /// pointer.
    ///
    /// ```
    /// use http::StatusCode;
    /// use palisade_providers::Api;
    ///
    /// let o = Api::ChatCompletions.error_json(StatusCode::BAD_REQUEST, "bad", Some("/messages"));
    /// assert_eq!(o["error"]["type"], "invalid_request_error");
    /// let a = Api::Messages.error_json(StatusCode::PAYLOAD_TOO_LARGE, "big", None);
    /// assert_eq!(a["error"]["type"], "request_too_large");
    /// ```
    pub fn error_json(self, status: StatusCode, message: &str, param: Option<&str>) -> Value {
        let kind = self.error_type(status);
        match self {
            Self::ChatCompletions | Self::Responses | Self::Embeddings => json!({
                "error": { "message": message, "type": kind, "param": param, "code": Value::Null },
            }),
            Self::Messages => json!({
                "type": "error",
                "error": { "type": kind, "message": message },
            }),
        }
    }

    /// A stream error event in this API's format, to end a stream after its
    /// first byte (chat completions `data: {"error":…}`, messages
    /// `event: error`), for a stream of which nothing is known; the
    /// Responses API's numbered events need
    /// [`StreamPosition::failure`](crate::dialect::StreamPosition::failure),
    /// which this calls with a fresh position.
    pub fn stream_error_event(self, status: StatusCode, message: &str) -> Bytes {
        crate::dialect::StreamPosition::new(self).failure(status, message)
    }

    /// The HTTP status an in-band error type stands for
    /// (`overloaded_error` → 529, `rate_limit_error` → 429, `server_error`
    /// → 500 …): every API's types are understood, as OpenAI-compatible
    /// servers borrow Anthropic's and the other way round.
    pub fn inband_status(self, kind: &str) -> StatusCode {
        // One table for every API, listed: each reads the others' types
        // (compatible servers borrow them), and a new API must say so here.
        let shared = |kind: &str| match kind {
            "overloaded_error" => 529,
            "rate_limit_error" | "rate_limit_exceeded" | "requests" | "tokens" => 429,
            "invalid_request_error" => 400,
            "authentication_error" => 401,
            "permission_error" => 403,
            "not_found_error" => 404,
            "request_too_large" => 413,
            "timeout_error" => 504,
            _ => 500,
        };
        let code = match self {
            Self::ChatCompletions | Self::Messages | Self::Responses | Self::Embeddings => {
                shared(kind)
            }
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` lists every variant: the match below does not compile when a
    /// variant is added, and its position must then be added to `ALL`.
    #[test]
    fn all_lists_every_variant_once() {
        let position = |api: Api| match api {
            Api::ChatCompletions => 0,
            Api::Messages => 1,
            Api::Responses => 2,
            Api::Embeddings => 3,
        };
        for (i, api) in Api::ALL.into_iter().enumerate() {
            assert_eq!(position(api), i, "{api:?}");
        }
        let ids: std::collections::HashSet<_> = Api::ALL.iter().map(|a| a.id()).collect();
        assert_eq!(ids.len(), Api::ALL.len());
    }

    #[test]
    fn paths_round_trip() {
        for api in Api::ALL {
            assert_eq!(Api::from_path(&format!("/v1{}", api.path())), Some(api));
        }
    }

    #[test]
    fn both_formats_and_their_stream_events() {
        let a = Api::Messages.error_json(StatusCode::SERVICE_UNAVAILABLE, "x", None);
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "overloaded_error");
        let ev = Api::Messages.stream_error_event(StatusCode::BAD_GATEWAY, "m");
        assert!(ev.starts_with(b"event: error\ndata: {"));
        let ev = Api::ChatCompletions.stream_error_event(StatusCode::BAD_GATEWAY, "m");
        assert!(ev.starts_with(b"data: {\"error\""));
    }

    fn events(wire: &'static [u8]) -> Vec<Event> {
        let mut d = palisade_sse::Decoder::new();
        d.push(Bytes::from_static(wire));
        std::iter::from_fn(|| d.next_event().ok().flatten()).collect()
    }

    #[test]
    fn terminators() {
        let evs = events(b"data: {}\n\ndata: [DONE]\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        let ends = |api: Api| evs.iter().map(|e| api.is_terminator(e)).collect::<Vec<_>>();
        assert_eq!(ends(Api::ChatCompletions), [false, true, false]);
        assert_eq!(ends(Api::Messages), [false, false, true]);
    }

    #[test]
    fn which_events_carry_content() {
        let openai = events(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
              data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"refusal\":null}}]}\n\n\
              data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n\
              data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hm\"}}]}\n\n\
              data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
              data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
              data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n\
              data: [DONE]\n\n",
        );
        let content = |api: Api, evs: &[Event]| {
            evs.iter()
                .map(|e| api.carries_content(e))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            content(Api::ChatCompletions, &openai),
            [false, false, true, true, true, false, false, false]
        );
        let anthropic = events(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[]}}\n\n\
              event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
              event: ping\ndata: {\"type\":\"ping\"}\n\n\
              event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
              event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n",
        );
        assert_eq!(
            content(Api::Messages, &anthropic),
            [false, false, false, true, false]
        );
        assert_eq!(Api::ChatCompletions.key_style(), KeyStyle::Bearer);
        assert_eq!(Api::Messages.key_style().hint(), "x-api-key: KEY");
    }
}
