//! Error bodies in each provider's format, for a proxy or a server-side
//! layer that answers in place of the upstream: written by
//! [`Api::error_json`](crate::Api::error_json) and
//! [`Api::stream_error_event`](crate::Api::stream_error_event), read by
//! [`parse_error`].
//!
//! OpenAI: `{"error":{"message","type","param","code"}}`; Anthropic:
//! `{"type":"error","error":{"type","message"}}`; and the same as stream
//! error events after the first byte (OpenAI `data: {"error":…}`, Anthropic
//! `event: error`).

use serde_json::Value;

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
    fn both_formats_parse() {
        assert_eq!(
            parse_error(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#
            ),
            Some(("overloaded_error".into(), "busy".into()))
        );
        assert_eq!(
            parse_error(br#"{"error":{"type":"server_error","message":"oops","param":null}}"#),
            Some(("server_error".into(), "oops".into()))
        );
        assert_eq!(parse_error(b"nope"), None);
    }
}
