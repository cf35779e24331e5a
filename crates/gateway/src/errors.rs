//! Errors the gateway answers itself, in the caller's provider format.
//!
//! OpenAI: `{"error":{"message","type","param","code"}}`; Anthropic:
//! `{"type":"error","error":{"type","message"}}`. The same for stream error
//! events after the first byte: OpenAI `data: {"error":…}`, Anthropic
//! `event: error`.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use palisade_providers::Provider;
use serde_json::{Value, json};

/// The provider error type for a status.
fn error_type(api: Provider, status: StatusCode) -> &'static str {
    match (api, status.as_u16()) {
        (_, 400) => "invalid_request_error",
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

/// The JSON error body.
pub(crate) fn error_json(
    api: Provider,
    status: StatusCode,
    message: &str,
    param: Option<&str>,
) -> Value {
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

/// An error response the gateway produced.
pub(crate) fn error_response(
    api: Provider,
    status: StatusCode,
    message: &str,
    param: Option<&str>,
    retry_after: Option<Duration>,
) -> Response<Body> {
    let body = error_json(api, status, message, param).to_string();
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(d) = retry_after {
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(d)));
    }
    res
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// A stream error event after the first byte, in the caller's format.
pub(crate) fn stream_error_event(api: Provider, status: StatusCode, message: &str) -> Bytes {
    let data = error_json(api, status, message, None).to_string();
    match api {
        Provider::Anthropic => Bytes::from(format!("event: error\ndata: {data}\n\n")),
        _ => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// The type and message of an upstream error body in either format.
pub(crate) fn parse_upstream_error(body: &[u8]) -> Option<(String, String)> {
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
        let o = error_json(
            Provider::OpenAi,
            StatusCode::BAD_REQUEST,
            "bad",
            Some("/messages"),
        );
        assert_eq!(o["error"]["type"], "invalid_request_error");
        assert_eq!(o["error"]["param"], "/messages");
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
            parse_upstream_error(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#
            ),
            Some(("overloaded_error".into(), "busy".into()))
        );
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
