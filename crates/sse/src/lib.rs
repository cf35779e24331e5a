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
/// ```
pub fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("text/event-stream")
}
