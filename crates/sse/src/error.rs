//! [`SseError`].

use std::error::Error as StdError;
use std::fmt;

use palisade_core::BoxError;

/// Decoding a stream failed.
#[derive(Debug)]
pub struct SseError {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    TooLarge(usize),
    Body(BoxError),
}

impl SseError {
    pub(crate) fn too_large(limit: usize) -> Self {
        Self {
            kind: Kind::TooLarge(limit),
        }
    }

    pub(crate) fn body(e: BoxError) -> Self {
        Self {
            kind: Kind::Body(e),
        }
    }

    /// True when an event (or a line) grew past the size limit.
    pub fn is_too_large(&self) -> bool {
        matches!(self.kind, Kind::TooLarge(_))
    }

    /// True when the underlying body failed (its error is the source).
    pub fn is_body(&self) -> bool {
        matches!(self.kind, Kind::Body(_))
    }
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::TooLarge(limit) => write!(
                f,
                "server-sent event larger than {limit} bytes (or a line that never ends); \
                 the stream is malformed, or raise the decoder's max_event_bytes"
            ),
            Kind::Body(e) => write!(f, "the event stream's body failed: {e}"),
        }
    }
}

impl StdError for SseError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.kind {
            Kind::TooLarge(_) => None,
            Kind::Body(e) => Some(&**e),
        }
    }
}
