//! What an attempt's outcome means: retry it? count it against the upstream?
//!
//! The retry layer asks "may I try again?", the circuit breaker asks "was the
//! upstream at fault?". Both ask the same [`ClassifyOutcome`], so a user who
//! replaces the policy replaces it for the whole stack. [`LlmClassifier`] is
//! the default, the policy of the official OpenAI and Anthropic SDKs:
//!
//! | outcome | retry | failure (breaker) | reason label |
//! |---|---|---|---|
//! | 2xx, 3xx | no | no | `success` |
//! | 408 Request Timeout | yes | no | `request_timeout` |
//! | 409 Conflict | only with [`LlmClassifier::retry_conflict`] | no | `conflict` |
//! | 429 Too Many Requests | yes | only with [`LlmClassifier::rate_limit_is_failure`] | `rate_limited` |
//! | 500, 502, 503, 504 | yes | yes | `server_error` |
//! | 529 (Anthropic: overloaded) | yes | yes | `overloaded` |
//! | other 5xx (501, 505 …) | no | yes | `server_error` |
//! | other 4xx (400, 401, 403, 404, 413, 422 …) | no | no | `client_error` |
//! | transport error (refused, reset, TLS …) | yes | yes | its [`TransportKind`] label: `connect_refused`, `protocol`, `tls` … |
//! | a pooled connection the server closed as the request went out ([`TransportKind::StaleConnection`]) | yes | no | `stale_connection` |
//! | connect or first-byte timeout | yes | yes | `timeout` |
//! | idle or total timeout | no | yes | `timeout` |
//! | local rate limit, open circuit, rejected request | no | no | `local_rate_limit`, `circuit_open`, `invalid_request` |
//! | an error palisade does not know | no | yes | `unknown` |
//!
//! An `x-should-retry: true` or `false` header from the upstream overrides the
//! retry column for that response, as the official SDKs do.

use std::error::Error as StdError;

use http::{HeaderMap, StatusCode};

use crate::error::{Budget, Elapsed, ErrorKind, TransportKind, UpstreamStatus, find};

/// The outcome of one attempt, as a classifier sees it.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// The upstream answered (any status).
    Response {
        /// The response status.
        status: StatusCode,
        /// The response headers.
        headers: &'a HeaderMap,
    },
    /// The attempt failed without a response.
    Error(&'a (dyn StdError + 'static)),
}

impl<'a> Outcome<'a> {
    /// The outcome of a response.
    pub fn response<B>(res: &'a http::Response<B>) -> Self {
        Self::Response {
            status: res.status(),
            headers: res.headers(),
        }
    }

    /// The outcome of a call's result.
    pub fn from_result<B, E>(result: &'a Result<http::Response<B>, E>) -> Self
    where
        E: StdError + 'static,
    {
        match result {
            Ok(res) => Self::response(res),
            Err(e) => Self::Error(e),
        }
    }
}

/// Why an outcome was classified the way it was; a stable label for logs and
/// metrics via [`Reason::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// A successful (or redirect) response.
    Success,
    /// An HTTP status (408, 409, 429, 4xx, 5xx, 529).
    Status(StatusCode),
    /// A transport error.
    Transport(TransportKind),
    /// A deadline expired.
    Timeout,
    /// Refused by a local rate limiter.
    RateLimitedLocally,
    /// Refused by an open circuit breaker.
    CircuitOpen,
    /// Rejected before sending.
    InvalidRequest,
    /// A structured output that does not match its schema.
    InvalidOutput,
    /// An error palisade does not know.
    Unknown,
}

impl Reason {
    /// A short, stable label: `"rate_limited"` for 429, `"overloaded"` for 529,
    /// `"server_error"` for other 5xx, the transport kind
    /// (`"connect_refused"`, `"protocol"` …), `"timeout"` …; the same
    /// vocabulary as [`ErrorKind::as_str`](crate::ErrorKind::as_str).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Status(s) => match s.as_u16() {
                408 => "request_timeout",
                409 => "conflict",
                429 => "rate_limited",
                529 => "overloaded",
                500..=599 => "server_error",
                400..=499 => "client_error",
                _ => "success",
            },
            Self::Transport(t) => t.as_str(),
            Self::Timeout => "timeout",
            Self::RateLimitedLocally => "local_rate_limit",
            Self::CircuitOpen => "circuit_open",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidOutput => "invalid_output",
            Self::Unknown => "unknown",
        }
    }

    /// The upstream said it is rate limiting this caller (429).
    pub fn is_rate_limited(self) -> bool {
        self == Self::Status(StatusCode::TOO_MANY_REQUESTS)
    }

    /// The upstream said it is overloaded as a whole (Anthropic's 529), as
    /// opposed to rate limiting this caller.
    pub fn is_overloaded(self) -> bool {
        matches!(self, Self::Status(s) if s.as_u16() == 529)
    }
}

/// What a classifier decided about one outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    retryable: bool,
    failure: bool,
    reason: Reason,
}

impl Classification {
    /// A success: not retried, not a failure.
    pub const fn success() -> Self {
        Self {
            retryable: false,
            failure: false,
            reason: Reason::Success,
        }
    }

    /// A classification with every field given.
    pub const fn new(reason: Reason, retryable: bool, failure: bool) -> Self {
        Self {
            retryable,
            failure,
            reason,
        }
    }

    /// May the attempt be retried?
    pub const fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// Does the outcome count against the upstream's health?
    pub const fn is_failure(&self) -> bool {
        self.failure
    }

    /// Why.
    pub const fn reason(&self) -> Reason {
        self.reason
    }

    /// The same classification with `retryable` replaced.
    #[must_use]
    pub const fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }
}

/// Decides what an attempt's outcome means; see the module docs.
///
/// Implemented by [`LlmClassifier`] and by every
/// `Fn(Outcome<'_>) -> Classification`.
///
/// # Example
///
/// ```
/// use palisade_core::classify::{ClassifyOutcome, Classification, LlmClassifier, Outcome, Reason};
/// use http::StatusCode;
///
/// // Also retry 409s, otherwise the default policy.
/// let default = LlmClassifier::new();
/// let mine = move |o: Outcome<'_>| match o {
///     Outcome::Response { status: StatusCode::CONFLICT, .. } => {
///         Classification::new(Reason::Status(StatusCode::CONFLICT), true, false)
///     }
///     other => default.classify(other),
/// };
/// let headers = http::HeaderMap::new();
/// let c = mine.classify(Outcome::Response { status: StatusCode::CONFLICT, headers: &headers });
/// assert!(c.is_retryable());
/// ```
pub trait ClassifyOutcome {
    /// Classifies one outcome.
    fn classify(&self, outcome: Outcome<'_>) -> Classification;
}

impl<F> ClassifyOutcome for F
where
    F: Fn(Outcome<'_>) -> Classification,
{
    fn classify(&self, outcome: Outcome<'_>) -> Classification {
        self(outcome)
    }
}

/// The default policy for LLM APIs; see the module docs for the table.
#[derive(Clone, Copy, Debug, Default)]
pub struct LlmClassifier {
    retry_conflict: bool,
    rate_limit_is_failure: bool,
    retry_invalid_output: bool,
}

impl LlmClassifier {
    /// The default policy.
    pub const fn new() -> Self {
        Self {
            retry_conflict: false,
            rate_limit_is_failure: false,
            retry_invalid_output: false,
        }
    }

    /// Retry 409 Conflict, for providers that document it as transient
    /// (OpenAI's SDK does). Default: off.
    #[must_use]
    pub const fn retry_conflict(mut self, on: bool) -> Self {
        self.retry_conflict = on;
        self
    }

    /// Count 429 as a failure for the circuit breaker. Default: off, because
    /// a 429 says this caller is over its quota, not that the upstream is sick.
    #[must_use]
    pub const fn rate_limit_is_failure(mut self, on: bool) -> Self {
        self.rate_limit_is_failure = on;
        self
    }

    /// Retry a structured output that does not match its schema
    /// ([`crate::InvalidOutput`], from `palisade-schema`'s output check).
    /// Not an upstream failure for the breaker. Default: off.
    #[must_use]
    pub const fn retry_invalid_output(mut self, on: bool) -> Self {
        self.retry_invalid_output = on;
        self
    }

    #[inline]
    fn classify_status(&self, status: StatusCode, headers: &HeaderMap) -> Classification {
        // The common case, inlined into the layers; the rest is not.
        if status.as_u16() < 400 {
            return Classification::success();
        }
        self.classify_error_status(status, headers)
    }

    fn classify_error_status(&self, status: StatusCode, headers: &HeaderMap) -> Classification {
        let reason = Reason::Status(status);
        let c = match status.as_u16() {
            408 => Classification::new(reason, true, false),
            409 => Classification::new(reason, self.retry_conflict, false),
            429 => Classification::new(reason, true, self.rate_limit_is_failure),
            500 | 502 | 503 | 504 | 529 => Classification::new(reason, true, true),
            500..=599 => Classification::new(reason, false, true),
            _ => Classification::new(reason, false, false),
        };
        match should_retry_header(headers) {
            Some(retry) => c.with_retryable(retry),
            None => c,
        }
    }

    fn classify_error(&self, err: &(dyn StdError + 'static)) -> Classification {
        if find::<crate::InvalidOutput>(err).is_some() {
            return Classification::new(Reason::InvalidOutput, self.retry_invalid_output, false);
        }
        if let Some(s) = find::<UpstreamStatus>(err) {
            return self.classify_status(s.status(), &HeaderMap::new());
        }
        match ErrorKind::of(err) {
            Some(ErrorKind::Timeout) => {
                // Only deadlines that end before a response was handed on are
                // safe to retry; idle and total timeouts surface on a body.
                let retry = find::<Elapsed>(err)
                    .is_none_or(|e| matches!(e.budget(), Budget::Connect | Budget::FirstByte));
                Classification::new(Reason::Timeout, retry, true)
            }
            // The server closed an idle pooled connection as the request
            // went out: it never saw the request, and is not failing.
            Some(ErrorKind::Transport(t @ TransportKind::StaleConnection)) => {
                Classification::new(Reason::Transport(t), true, false)
            }
            Some(ErrorKind::Transport(t)) => Classification::new(Reason::Transport(t), true, true),
            Some(ErrorKind::RateLimited) => {
                Classification::new(Reason::RateLimitedLocally, false, false)
            }
            Some(ErrorKind::CircuitOpen) => Classification::new(Reason::CircuitOpen, false, false),
            Some(ErrorKind::InvalidRequest) => {
                Classification::new(Reason::InvalidRequest, false, false)
            }
            Some(ErrorKind::UpstreamStatus) | None => {
                Classification::new(Reason::Unknown, false, true)
            }
        }
    }
}

impl ClassifyOutcome for LlmClassifier {
    #[inline]
    fn classify(&self, outcome: Outcome<'_>) -> Classification {
        match outcome {
            Outcome::Response { status, headers } => self.classify_status(status, headers),
            Outcome::Error(e) => self.classify_error(e),
        }
    }
}

/// `x-should-retry: true|false`, as the official SDKs honour it.
fn should_retry_header(headers: &HeaderMap) -> Option<bool> {
    let v = headers.get("x-should-retry")?.to_str().ok()?.trim();
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{BoxError, CircuitOpen, RateLimited, Rejected, TransportError};
    use http::HeaderValue;
    use std::time::Duration;

    fn status(code: u16) -> Classification {
        status_with(code, &HeaderMap::new())
    }

    fn status_with(code: u16, headers: &HeaderMap) -> Classification {
        LlmClassifier::new().classify(Outcome::Response {
            status: StatusCode::from_u16(code).unwrap(),
            headers,
        })
    }

    fn error(e: impl Into<BoxError>) -> Classification {
        let e: BoxError = e.into();
        LlmClassifier::new().classify(Outcome::Error(&*e))
    }

    /// The retry and failure table of the classifier docs, row by row.
    #[test]
    fn status_table_matches_the_spec() {
        // (status, retryable, failure, label)
        let table: &[(u16, bool, bool, &str)] = &[
            (200, false, false, "success"),
            (201, false, false, "success"),
            (304, false, false, "success"),
            (400, false, false, "client_error"),
            (401, false, false, "client_error"),
            (403, false, false, "client_error"),
            (404, false, false, "client_error"),
            (408, true, false, "request_timeout"),
            (409, false, false, "conflict"),
            (413, false, false, "client_error"),
            (422, false, false, "client_error"),
            (429, true, false, "rate_limited"),
            (500, true, true, "server_error"),
            (501, false, true, "server_error"),
            (502, true, true, "server_error"),
            (503, true, true, "server_error"),
            (504, true, true, "server_error"),
            (505, false, true, "server_error"),
            (529, true, true, "overloaded"),
        ];
        for &(code, retry, failure, label) in table {
            let c = status(code);
            assert_eq!(c.is_retryable(), retry, "{code} retryable");
            assert_eq!(c.is_failure(), failure, "{code} failure");
            assert_eq!(c.reason().as_str(), label, "{code} label");
        }
    }

    #[test]
    fn rate_limited_and_overloaded_are_told_apart() {
        assert!(status(429).reason().is_rate_limited());
        assert!(!status(429).reason().is_overloaded());
        assert!(status(529).reason().is_overloaded());
        assert!(!status(529).reason().is_rate_limited());
    }

    #[test]
    fn options_change_409_and_429() {
        let c = LlmClassifier::new()
            .retry_conflict(true)
            .rate_limit_is_failure(true);
        let h = HeaderMap::new();
        let out = |code| {
            c.classify(Outcome::Response {
                status: StatusCode::from_u16(code).unwrap(),
                headers: &h,
            })
        };
        assert!(out(409).is_retryable());
        assert!(out(429).is_failure());
    }

    #[test]
    fn x_should_retry_overrides_the_status() {
        let mut h = HeaderMap::new();
        h.insert("x-should-retry", HeaderValue::from_static("false"));
        assert!(!status_with(503, &h).is_retryable());
        assert!(status_with(503, &h).is_failure(), "still a failure");
        h.insert("x-should-retry", HeaderValue::from_static("true"));
        assert!(status_with(400, &h).is_retryable());
        h.insert("x-should-retry", HeaderValue::from_static("maybe"));
        assert!(!status_with(400, &h).is_retryable(), "garbage is ignored");
    }

    /// One vocabulary: an error's `ErrorKind` label and its classification
    /// reason agree, and 429 (`rate_limited`) is never the local limiter.
    #[test]
    fn error_kinds_and_reasons_share_one_vocabulary() {
        use crate::{CircuitOpen, RateLimited};
        let errors: Vec<Box<dyn StdError + Send + Sync>> = vec![
            Box::new(TransportError::new(
                TransportKind::ConnectRefused,
                "refused",
            )),
            Box::new(TransportError::new(TransportKind::Protocol, "reset")),
            Box::new(TransportError::new(
                TransportKind::StaleConnection,
                "closed",
            )),
            Box::new(Elapsed::new(Budget::FirstByte, Duration::from_secs(1))),
            Box::new(RateLimited::new(None)),
            Box::new(CircuitOpen::new(Duration::from_secs(1))),
        ];
        for e in errors {
            let kind = ErrorKind::of(&*e).unwrap().as_str();
            let reason = LlmClassifier::new().classify(Outcome::Error(&*e)).reason();
            assert_eq!(reason.as_str(), kind, "{e}");
        }
        assert_eq!(ErrorKind::RateLimited.as_str(), "local_rate_limit");
        assert_eq!(status(429).reason().as_str(), "rate_limited");
    }

    #[test]
    fn errors_table() {
        let refused = TransportError::new(TransportKind::ConnectRefused, "refused");
        let c = error(refused);
        assert!(c.is_retryable() && c.is_failure());
        assert_eq!(c.reason(), Reason::Transport(TransportKind::ConnectRefused));
        let stale = error(TransportError::new(
            TransportKind::StaleConnection,
            "closed",
        ));
        assert!(stale.is_retryable() && !stale.is_failure());
        assert_eq!(stale.reason().as_str(), "stale_connection");

        let fb = error(Elapsed::new(Budget::FirstByte, Duration::from_secs(1)));
        assert!(fb.is_retryable() && fb.is_failure());
        let idle = error(Elapsed::new(Budget::Idle, Duration::from_secs(1)));
        assert!(!idle.is_retryable() && idle.is_failure());
        let total = error(Elapsed::new(Budget::Total, Duration::from_secs(1)));
        assert!(!total.is_retryable());

        for local in [
            error(RateLimited::new(Some(Duration::from_secs(1)))),
            error(CircuitOpen::new(Duration::from_secs(1))),
            error(Rejected::new(vec![])),
        ] {
            assert!(!local.is_retryable() && !local.is_failure(), "{local:?}");
        }

        let upstream = error(UpstreamStatus::new(StatusCode::SERVICE_UNAVAILABLE, None));
        assert!(upstream.is_retryable() && upstream.is_failure());

        let unknown = error("who knows");
        assert!(!unknown.is_retryable() && unknown.is_failure());
        assert_eq!(unknown.reason().as_str(), "unknown");
    }
}
