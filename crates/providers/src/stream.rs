//! What every API's stream decoding shares: in-band errors and stream errors.

use std::error::Error as StdError;
use std::fmt;

use http::StatusCode;
use palisade_core::UpstreamStatus;

use crate::Api;
use crate::maybe::Maybe;

/// An error the upstream reported inside a stream that had answered 200:
/// OpenAI's `data: {"error":…}`, Anthropic's `event: error`.
///
/// Its source is an [`UpstreamStatus`] with the status the error type stands
/// for (`overloaded_error` → 529, `rate_limit_error` → 429, `api_error` /
/// `server_error` → 500 …), so `palisade_core::ErrorKind` and the outcome
/// classifier treat it like that status: a breaker counts it as a failure.
#[derive(Debug)]
pub struct InbandError {
    provider: Api,
    kind: String,
    message: String,
    status: UpstreamStatus,
}

impl InbandError {
    pub(crate) fn new(provider: Api, kind: String, message: String) -> Self {
        let status = provider.inband_status(&kind);
        Self {
            provider,
            kind,
            message,
            status: UpstreamStatus::new(status, None),
        }
    }

    /// The API of the stream it came in.
    pub fn api(&self) -> Api {
        self.provider
    }

    /// The error type (`overloaded_error`, `server_error` …).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The upstream's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status this error stands for.
    pub fn status(&self) -> StatusCode {
        self.status.status()
    }
}

impl fmt::Display for InbandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} reported an error mid-stream ({}): {}; the answer is incomplete, retry the request",
            self.provider, self.kind, self.message
        )
    }
}

impl StdError for InbandError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.status)
    }
}

/// A stream could not be decoded, or the upstream reported an error in it.
#[derive(Debug)]
pub struct StreamError {
    kind: StreamErrorKind,
}

#[derive(Debug)]
enum StreamErrorKind {
    Inband(InbandError),
    Malformed { provider: Api, what: String },
    Truncated { provider: Api },
}

impl StreamError {
    pub(crate) fn malformed(provider: Api, what: String) -> Self {
        Self {
            kind: StreamErrorKind::Malformed { provider, what },
        }
    }

    pub(crate) fn truncated(provider: Api) -> Self {
        Self {
            kind: StreamErrorKind::Truncated { provider },
        }
    }

    /// The in-band error, when that is what this is.
    pub fn inband(&self) -> Option<&InbandError> {
        match &self.kind {
            StreamErrorKind::Inband(e) => Some(e),
            _ => None,
        }
    }

    /// True when an event was not what the provider's format says.
    pub fn is_malformed(&self) -> bool {
        matches!(self.kind, StreamErrorKind::Malformed { .. })
    }

    /// True when the stream ended without its terminator (`data: [DONE]`,
    /// `message_stop`).
    pub fn is_truncated(&self) -> bool {
        matches!(self.kind, StreamErrorKind::Truncated { .. })
    }
}

impl From<InbandError> for StreamError {
    fn from(e: InbandError) -> Self {
        Self {
            kind: StreamErrorKind::Inband(e),
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            StreamErrorKind::Inband(e) => e.fmt(f),
            StreamErrorKind::Malformed { provider, what } => write!(
                f,
                "malformed {provider} stream event: {what}; the upstream (or a proxy before it) \
                 sent something that is not its stream format"
            ),
            StreamErrorKind::Truncated { provider } => write!(
                f,
                "{provider} stream ended without `{}`: the answer is truncated; retry the request",
                provider.terminator()
            ),
        }
    }
}

impl StdError for StreamError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.kind {
            StreamErrorKind::Inband(e) => Some(e),
            _ => None,
        }
    }
}

pub(crate) fn excerpt(data: &[u8]) -> String {
    let s = String::from_utf8_lossy(&data[..data.len().min(120)]);
    format!("{s:?}")
}

pub(crate) fn append(into: &mut Maybe<String>, more: Maybe<String>) {
    if let Maybe::Present(t) = more {
        match into {
            Maybe::Present(s) => s.push_str(&t),
            other => *other = Maybe::Present(t),
        }
    }
}
