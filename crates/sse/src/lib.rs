//! A WHATWG-conformant `text/event-stream` decoder: zero-copy, bounded, over
//! any `http_body::Body`.
//!
//! For layers that only need to know what kind of events pass by (data,
//! keep-alive, in-band error) without decoding them, [`EventScanner`] watches
//! the bytes with a few bytes of state.
//!
//! Streaming LLM APIs answer in server-sent events. [`EventStream`] turns a
//! response body into a `Stream` of [`Event`]s; [`Decoder`] is the
//! incremental parser underneath, for callers that hold bytes rather than a
//! body.
//!
//! **One pass per response.** Layers that each need the stream keep one
//! [`SharedScan`] in the response's extensions: the innermost layer feeds
//! it, the others read what each frame added. It scans, unless a layer
//! outside [subscribes](SharedScan::subscribe) to the events: then it
//! decodes once and hands every subscriber the events ([`SharedEvents`] is
//! a stream of them over the body), instead of each decoding the bytes
//! again.
//!
//! - **Conformant**: CR, LF and CRLF line ends (a CRLF split between frames
//!   counts once), multi-line `data`, comments, `event`, `id` (ignored if it
//!   contains NUL, persisting across events), `retry` (digits only), one
//!   leading BOM, unknown fields ignored, an unterminated event at the end
//!   discarded — and an event split across any frame boundary.
//! - **Zero-copy where possible**: an event inside one frame is a set of
//!   `Bytes` slices of that frame; lines are found with `memchr`.
//! - **Bounded**: an event (or a line that never ends) larger than
//!   [`DEFAULT_MAX_EVENT_BYTES`] (configurable) is an [`SseError`], not an
//!   allocation without bound; backpressure is by polling only.
//!
//! # Example
//!
//! ```
//! use palisade_sse::Decoder;
//! use bytes::Bytes;
//!
//! let mut d = Decoder::new();
//! d.push(Bytes::from_static(b": keep-alive\r\nevent: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n"));
//! let ev = d.next_event().unwrap().unwrap();
//! assert!(ev.is("ping"));
//! assert_eq!(ev.data(), "{\"type\": \"ping\"}");
//! ```

mod decoder;
mod error;
mod event;
mod scanner;
mod shared;
mod stream;

pub use decoder::{DEFAULT_MAX_EVENT_BYTES, Decoder};
pub use error::SseError;
pub use event::Event;
pub use scanner::{EventScanner, Scanned};
pub use shared::{Drained, ScanView, SharedScan, Subscription};
pub use stream::{EventStream, SharedEvents};

/// Whether a `Content-Type` value names an event stream
/// (`text/event-stream`, any parameters, any case): the one test every
/// layer that treats streams apart uses.
///
/// ```
/// assert!(palisade_sse::is_event_stream("text/event-stream; charset=utf-8"));
/// assert!(palisade_sse::is_event_stream(" Text/Event-Stream"));
/// assert!(!palisade_sse::is_event_stream("application/json"));
/// assert!(!palisade_sse::is_event_stream("text/event-streams"));
/// ```
pub fn is_event_stream(content_type: &str) -> bool {
    names_event_stream(content_type.as_bytes())
}

/// Whether these headers' `Content-Type` names an event stream
/// ([`is_event_stream`]), read as bytes: no UTF-8 check, no copy. What a
/// layer asks of every answer.
///
/// ```
/// let mut h = http::HeaderMap::new();
/// assert!(!palisade_sse::has_event_stream(&h));
/// h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
/// assert!(palisade_sse::has_event_stream(&h));
/// ```
pub fn has_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| names_event_stream(v.as_bytes()))
}

/// The media type before any parameters, around optional whitespace, is
/// `text/event-stream` in any case.
fn names_event_stream(value: &[u8]) -> bool {
    const NAME: &[u8] = b"text/event-stream";
    let value = value.trim_ascii_start();
    value.len() >= NAME.len()
        && value[..NAME.len()].eq_ignore_ascii_case(NAME)
        && matches!(
            value[NAME.len()..].trim_ascii_start().first(),
            None | Some(b';')
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_content_types_name_an_event_stream() {
        for yes in [
            "text/event-stream",
            "TEXT/Event-Stream",
            "text/event-stream; charset=utf-8",
            "text/event-stream;charset=utf-8",
            " \ttext/event-stream \t; x=y",
            "text/event-stream ",
        ] {
            assert!(is_event_stream(yes), "{yes:?}");
        }
        for no in [
            "",
            "text/event",
            "text/event-streams",
            "text/event-stream x",
            "application/json",
            "application/json; text/event-stream",
        ] {
            assert!(!is_event_stream(no), "{no:?}");
        }
        // Header bytes that are not UTF-8, in a parameter: still a stream.
        let mut h = http::HeaderMap::new();
        let v = http::HeaderValue::from_bytes(b"text/event-stream; name=\xe9t\xe9");
        h.insert(
            http::header::CONTENT_TYPE,
            v.unwrap_or(http::HeaderValue::from_static("x")),
        );
        assert!(has_event_stream(&h));
    }
}
