//! [`Api`]: one description per wire API.
//!
//! Everything palisade needs to know about an API's wire format lives here,
//! asked through methods: its path, its vendor's name in GenAI spans, its
//! stream terminator, its error bodies and stream error events, the status
//! its in-band error types stand for. Layers and the gateway ask it instead
//! of keeping their own copies.
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

/// A wire API palisade speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI chat completions, `POST /chat/completions` (and every
    /// OpenAI-compatible server).
    ChatCompletions,
    /// Anthropic messages, `POST /messages`.
    Messages,
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ChatCompletions => "OpenAI",
            Self::Messages => "Anthropic",
        })
    }
}

impl Api {
    /// Every API, for tests and tables.
    pub const ALL: [Api; 2] = [Api::ChatCompletions, Api::Messages];

    /// The request path under the base URL (`/chat/completions`,
    /// `/messages`).
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Messages => "/messages",
        }
    }

    /// The API a request path is for, by its last segment (`/v1/messages`,
    /// `/chat/completions`); `None` for any other path.
    ///
    /// ```
    /// use palisade_providers::Api;
    /// assert_eq!(Api::from_path("/v1/messages"), Some(Api::Messages));
    /// assert_eq!(Api::from_path("/chat/completions"), Some(Api::ChatCompletions));
    /// assert_eq!(Api::from_path("/v1/embeddings"), None);
    /// ```
    pub fn from_path(path: &str) -> Option<Api> {
        Self::ALL.into_iter().find(|a| path.ends_with(a.path()))
    }

    /// The vendor's name in the GenAI semantic conventions
    /// (`gen_ai.provider.name`): `openai`, `anthropic`.
    pub fn vendor(self) -> &'static str {
        match self {
            Self::ChatCompletions => "openai",
            Self::Messages => "anthropic",
        }
    }

    /// The GenAI operation name (`gen_ai.operation.name`) of a call.
    pub fn operation(self) -> &'static str {
        match self {
            Self::ChatCompletions | Self::Messages => "chat",
        }
    }

    /// The event that ends a complete stream, as it reads on the wire
    /// (`data: [DONE]`, `event: message_stop`), for messages.
    pub fn terminator(self) -> &'static str {
        match self {
            Self::ChatCompletions => "data: [DONE]",
            Self::Messages => "event: message_stop",
        }
    }

    /// True when `ev` is the stream's terminator.
    pub fn is_terminator(self, ev: &Event) -> bool {
        match self {
            Self::ChatCompletions => ev.data().as_ref() == b"[DONE]",
            Self::Messages => ev.is("message_stop"),
        }
    }

    /// The API's error type for `status` (`invalid_request_error`,
    /// `overloaded_error` …).
    pub fn error_type(self, status: StatusCode) -> &'static str {
        let code = status.as_u16();
        match (code, self) {
            (400 | 422, _) => "invalid_request_error",
            (401, _) => "authentication_error",
            (403, _) => "permission_error",
            (404, _) => "not_found_error",
            (429, _) => "rate_limit_error",
            (413, Self::ChatCompletions) => "invalid_request_error",
            (503, Self::ChatCompletions) => "service_unavailable",
            (504, Self::ChatCompletions) => "timeout",
            (_, Self::ChatCompletions) => "server_error",
            (413, Self::Messages) => "request_too_large",
            (503 | 529, Self::Messages) => "overloaded_error",
            (504, Self::Messages) => "timeout_error",
            (_, Self::Messages) => "api_error",
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
            Self::ChatCompletions => json!({
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
    /// `event: error`).
    pub fn stream_error_event(self, status: StatusCode, message: &str) -> Bytes {
        let data = self.error_json(status, message, None).to_string();
        match self {
            Self::ChatCompletions => Bytes::from(format!("data: {data}\n\n")),
            Self::Messages => Bytes::from(format!("event: error\ndata: {data}\n\n")),
        }
    }

    /// The HTTP status an in-band error type stands for
    /// (`overloaded_error` → 529, `rate_limit_error` → 429, `server_error`
    /// → 500 …): both APIs' types are understood, as OpenAI-compatible
    /// servers borrow Anthropic's and the other way round.
    pub fn inband_status(self, kind: &str) -> StatusCode {
        let code = match kind {
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
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
