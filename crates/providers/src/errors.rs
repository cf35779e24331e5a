//! Error bodies in each provider's format, for a proxy or a server-side
//! layer that answers in place of the upstream.
//!
//! OpenAI: `{"error":{"message","type","param","code"}}`; Anthropic:
//! `{"type":"error","error":{"type","message"}}`; and the same as stream
//! error events after the first byte (OpenAI `data: {"error":…}`, Anthropic
//! `event: error`).

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use crate::Provider;

/// The provider's error type for `status`.
pub fn error_type(api: Provider, status: StatusCode) -> &'static str {
    match (api, status.as_u16()) {
        (_, 400 | 422) => "invalid_request_error",
        (_, 401) => "authentication_error",
        (_, 403) => "permission_error",
        (_, 404) => "not_found_error",
        (Provider::Anthropic, 413) => "request_too_large",
        (_, 413) => "invalid_request_error",
        (_, 429) => "rate_limit_error",
        (Provider::Anthropic, 503 | 529) => "overloaded_error",
        (Provider::Anthropic, 504) => "timeout_error",
        (Provider::Anthropic, _) => "api_error",
        (_, 503) => "service_unavailable",
        (_, 504) => "timeout",
        (_, _) => "server_error",
    }
}

/// The JSON error body for `status` in `api`'s format; `param` (OpenAI only)
/// names the offending field, e.g. a JSON pointer.
///
/// ```
/// use http::StatusCode;
/// use palisade_providers::{Provider, errors::error_json};
///
/// let o = error_json(Provider::OpenAi, StatusCode::BAD_REQUEST, "bad", Some("/messages"));
/// assert_eq!(o["error"]["type"], "invalid_request_error");
/// let a = error_json(Provider::Anthropic, StatusCode::PAYLOAD_TOO_LARGE, "big", None);
/// assert_eq!(a["error"]["type"], "request_too_large");
/// ```
pub fn error_json(api: Provider, status: StatusCode, message: &str, param: Option<&str>) -> Value {
    let kind = error_type(api, status);
    match api {
        Provider::Anthropic => json!({
            "type": "error",
            "error": { "type": kind, "message": message },
        }),
        _ => json!({
            "error": { "message": message, "type": kind, "param": param, "code": Value::Null },
        }),
    }
}

/// A stream error event in `api`'s format, to end a stream after its first
/// byte.
pub fn stream_error_event(api: Provider, status: StatusCode, message: &str) -> Bytes {
    let data = error_json(api, status, message, None).to_string();
    match api {
        Provider::Anthropic => Bytes::from(format!("event: error\ndata: {data}\n\n")),
        _ => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// The type and message of an error body in either format.
pub fn parse_error(body: &[u8]) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let message = e.get("message")?.as_str()?.to_owned();
    let kind = e
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("error")
        .to_owned();
    Some((kind, message))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn both_formats_and_their_stream_events() {
        let a = error_json(
            Provider::Anthropic,
            StatusCode::SERVICE_UNAVAILABLE,
            "x",
            None,
        );
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "overloaded_error");
        let ev = stream_error_event(Provider::Anthropic, StatusCode::BAD_GATEWAY, "m");
        assert!(ev.starts_with(b"event: error\ndata: {"));
        let ev = stream_error_event(Provider::OpenAi, StatusCode::BAD_GATEWAY, "m");
        assert!(ev.starts_with(b"data: {\"error\""));
        assert_eq!(
            parse_error(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#
            ),
            Some(("overloaded_error".into(), "busy".into()))
        );
        assert_eq!(parse_error(b"nope"), None);
    }
}
