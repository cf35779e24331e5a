//! The error vocabulary every palisade crate shares.
//!
//! Services in a palisade stack return [`BoxError`]. The leaf errors that more
//! than one crate must recognise live here, so a layer can tell (for example)
//! a first-byte timeout from a transport failure without depending on the
//! crate that produced it: the retry layer retries an [`Elapsed`] raised by the
//! timeout layer, the breaker counts a [`TransportError`] raised by the client.
//! Layer crates re-export the ones they raise (`palisade_timeout::Elapsed` is
//! this crate's [`Elapsed`]), so a downcast works whichever path it is named by.
//!
//! [`ErrorKind::of`] tells the kind of *any* error by walking its source chain,
//! including errors from hyper, hyper-util, `std::io` and `tower::timeout`.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// A type-erased error, as every tower service in a palisade stack returns.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What kind of failure an error is, whatever crate raised it.
///
/// # Example
///
/// ```
/// use palisade_core::{BoxError, ErrorKind, Elapsed, Budget};
/// use std::time::Duration;
///
/// let err: BoxError = Elapsed::new(Budget::FirstByte, Duration::from_secs(30)).into();
/// assert_eq!(ErrorKind::of(&*err), Some(ErrorKind::Timeout));
///
/// let io: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
/// assert!(ErrorKind::of(&*io).is_some_and(|k| k.is_transport()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A deadline expired (connect, first byte, idle or total).
    Timeout,
    /// A local rate limiter refused or could not admit the call in time.
    RateLimited,
    /// A circuit breaker is open and refused the call without sending it.
    CircuitOpen,
    /// The request was rejected before it left the process (bad JSON, schema
    /// violation, body too large).
    InvalidRequest,
    /// The upstream answered with an error status that was turned into an error.
    UpstreamStatus,
    /// The request could not be exchanged with the upstream at all.
    Transport(TransportKind),
}

/// Which part of the transport failed; carried by [`ErrorKind::Transport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// Nothing listens at the upstream's address (TCP connection refused).
    ConnectRefused,
    /// The TCP connection was not established within the connect timeout.
    ConnectTimeout,
    /// Connecting failed for another reason (DNS, unreachable network, …).
    Connect,
    /// The TLS handshake failed (certificate, protocol version, name mismatch).
    Tls,
    /// The connection broke or the peer spoke malformed HTTP (reset, closed
    /// before the response completed, parse error).
    Protocol,
    /// A reused (pooled) connection was found closed by the server before a
    /// response head: the server's keep-alive timeout ended as the request
    /// went out. The server did not process the request; it is safe to send
    /// again, and says nothing about the upstream's health.
    StaleConnection,
    /// Another I/O error.
    Io,
}

impl ErrorKind {
    /// Tells the kind of `err` by walking its source chain; `None` when no
    /// error in the chain is one palisade knows.
    ///
    /// Recognised, first match wins, outermost first: this crate's leaf errors
    /// ([`Elapsed`], [`RateLimited`], [`CircuitOpen`], [`Rejected`],
    /// [`BodyTooLarge`], [`UpstreamStatus`], [`TransportError`]),
    /// `tower::timeout::error::Elapsed` and `tokio::time::error::Elapsed`
    /// (timeouts) and `std::io::Error`. A `hyper::Error` is a protocol error
    /// unless something more specific (an I/O error, a timeout) is found
    /// below it.
    pub fn of(err: &(dyn StdError + 'static)) -> Option<Self> {
        let mut fallback = None;
        for e in chain(err) {
            if let Some(kind) = Self::of_one(e) {
                return Some(kind);
            }
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                if h.is_timeout() {
                    return Some(Self::Timeout);
                }
                fallback.get_or_insert(Self::Transport(TransportKind::Protocol));
            }
        }
        fallback
    }

    fn of_one(e: &(dyn StdError + 'static)) -> Option<Self> {
        if e.is::<Elapsed>()
            || e.is::<tower::timeout::error::Elapsed>()
            || e.is::<tokio::time::error::Elapsed>()
        {
            return Some(Self::Timeout);
        }
        if e.is::<RateLimited>() {
            return Some(Self::RateLimited);
        }
        if e.is::<CircuitOpen>() {
            return Some(Self::CircuitOpen);
        }
        if e.is::<Rejected>() || e.is::<BodyTooLarge>() {
            return Some(Self::InvalidRequest);
        }
        if e.is::<UpstreamStatus>() {
            return Some(Self::UpstreamStatus);
        }
        if let Some(t) = e.downcast_ref::<TransportError>() {
            return Some(Self::Transport(t.kind()));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // An io::Error that merely wraps something more specific (a TLS
            // error, a timeout) defers to what it wraps.
            if io.get_ref().is_some_and(|inner| Self::of(inner).is_some()) {
                return None;
            }
            return Some(match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    Self::Transport(TransportKind::ConnectRefused)
                }
                std::io::ErrorKind::TimedOut => Self::Timeout,
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof => Self::Transport(TransportKind::Protocol),
                _ => Self::Transport(TransportKind::Io),
            });
        }
        None
    }

    /// True for [`ErrorKind::Timeout`] and for a connect timeout.
    pub fn is_timeout(self) -> bool {
        matches!(
            self,
            Self::Timeout | Self::Transport(TransportKind::ConnectTimeout)
        )
    }

    /// True for every [`ErrorKind::Transport`].
    pub fn is_transport(self) -> bool {
        matches!(self, Self::Transport(_))
    }

    /// A short, stable label for metrics and logs (`"timeout"`,
    /// `"local_rate_limit"`, `"connect_refused"`, …).
    ///
    /// One vocabulary across palisade: the same condition has the same
    /// label here, in [`Reason::as_str`](crate::classify::Reason::as_str)
    /// (the retry layer's `reason`, the gateway's
    /// `palisade_retries_total{reason}`) and in the trace layer's
    /// `error.type`. `rate_limited` always means the **upstream** answered
    /// 429; a refusal by a local limiter is `local_rate_limit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::RateLimited => "local_rate_limit",
            Self::CircuitOpen => "circuit_open",
            Self::InvalidRequest => "invalid_request",
            Self::UpstreamStatus => "upstream_status",
            Self::Transport(t) => t.as_str(),
        }
    }
}

/// What a server should answer its own caller when a call through a
/// palisade stack failed with `err`: the status, and how long the caller
/// should wait before trying again, when the error knows it.
///
/// The wait is exact (the `Duration` the error holds, not rounded). A
/// `Retry-After` header takes whole seconds: send
/// [`retry_after_header_secs`]`(wait)`, which rounds up and is at least 1.
///
/// | error | status | wait |
/// |---|---|---|
/// | an open circuit ([`CircuitOpen`]) | 503 | the time left open |
/// | a local rate limit ([`RateLimited`]) | 429 | the limiter's estimate, when it has one |
/// | a deadline ([`Elapsed`]) | 504 | — |
/// | the upstream's error status ([`UpstreamStatus`]) | that status | the upstream's hint |
/// | a body too large ([`BodyTooLarge`]) | 413 | — |
/// | a request refused before sending ([`Rejected`]) | 400 | — |
/// | a transport failure, or anything else | 502 | — |
///
/// The gateway answers with the same mapping. The message of `err` (its
/// `Display`) says what failed and what to do, and is safe to show: keys
/// never appear in palisade's errors.
///
/// ```
/// use palisade_core::{CircuitOpen, RateLimited, caller_status, retry_after_header_secs};
/// use std::time::Duration;
///
/// let (status, wait) = caller_status(&CircuitOpen::new(Duration::from_millis(1500)));
/// assert_eq!((status.as_u16(), wait), (503, Some(Duration::from_millis(1500))));
/// assert_eq!(wait.map(retry_after_header_secs), Some(2)); // `Retry-After: 2`
/// let (status, wait) = caller_status(&RateLimited::new(None));
/// assert_eq!((status.as_u16(), wait), (429, None));
/// ```
pub fn caller_status(err: &(dyn StdError + 'static)) -> (StatusCode, Option<Duration>) {
    if let Some(s) = find::<UpstreamStatus>(err) {
        return (s.status(), s.retry_after());
    }
    if find::<BodyTooLarge>(err).is_some() {
        return (StatusCode::PAYLOAD_TOO_LARGE, None);
    }
    match ErrorKind::of(err) {
        Some(ErrorKind::CircuitOpen) => (
            StatusCode::SERVICE_UNAVAILABLE,
            find::<CircuitOpen>(err).map(CircuitOpen::remaining),
        ),
        Some(ErrorKind::RateLimited) => (
            StatusCode::TOO_MANY_REQUESTS,
            find::<RateLimited>(err).and_then(RateLimited::retry_after),
        ),
        Some(ErrorKind::Timeout) => (StatusCode::GATEWAY_TIMEOUT, None),
        Some(ErrorKind::InvalidRequest) => (StatusCode::BAD_REQUEST, None),
        Some(ErrorKind::UpstreamStatus | ErrorKind::Transport(_)) | None => {
            (StatusCode::BAD_GATEWAY, None)
        }
    }
}

/// The value of a `Retry-After` header for a wait: whole seconds (the
/// header's delay-seconds form), rounded up, and at least 1.
///
/// Rounding up keeps a caller from coming back before the wait is over;
/// at least 1 keeps a wait that has just run out from reading as "retry
/// at once". The wait is typically the one [`caller_status`] returns.
///
/// ```
/// use palisade_core::retry_after_header_secs;
/// use std::time::Duration;
///
/// assert_eq!(retry_after_header_secs(Duration::from_millis(1500)), 2);
/// assert_eq!(retry_after_header_secs(Duration::from_secs(3)), 3);
/// assert_eq!(retry_after_header_secs(Duration::ZERO), 1);
/// assert_eq!(retry_after_header_secs(Duration::MAX), u64::MAX);
///
/// let header = http::HeaderValue::from(retry_after_header_secs(Duration::from_millis(200)));
/// assert_eq!(header, "1");
/// ```
pub fn retry_after_header_secs(wait: Duration) -> u64 {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    secs.max(1)
}

impl TransportKind {
    /// A short, stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connect_refused",
            Self::ConnectTimeout => "connect_timeout",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Protocol => "protocol",
            Self::StaleConnection => "stale_connection",
            Self::Io => "io",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Iterates over `err` and its sources, outermost first.
///
/// Unlike a plain `source()` walk it also descends into the payload of a
/// `std::io::Error` (whose own `source()` skips that payload), which is where
/// TLS and connect-timeout errors hide. Bounded to 64 links.
pub fn chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = Some(err);
    let mut steps = 0usize;
    std::iter::from_fn(move || {
        let cur = next?;
        steps += 1;
        next = if steps >= 64 {
            None
        } else if let Some(io) = cur.downcast_ref::<std::io::Error>() {
            match io.get_ref() {
                Some(inner) => Some(inner as &(dyn StdError + 'static)),
                None => None,
            }
        } else {
            cur.source()
        };
        Some(cur)
    })
}

/// Finds the first error of type `E` in `err`'s chain (see [`chain`]).
pub fn find<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    chain(err).find_map(|e| e.downcast_ref::<E>())
}

// ---------------------------------------------------------------------------
// Leaf errors

/// Which deadline an [`Elapsed`] error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Budget {
    /// Establishing the TCP (and TLS) connection.
    Connect,
    /// From sending the request to receiving the response headers.
    FirstByte,
    /// The gap between two body frames (or two data-carrying SSE events).
    Idle,
    /// The whole exchange, streamed body included.
    Total,
}

impl Budget {
    /// The budget's name as used in configuration (`"first_byte"` …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::FirstByte => "first_byte",
            Self::Idle => "idle",
            Self::Total => "total",
        }
    }
}

/// A deadline expired.
///
/// Raised by the timeout layer; [`Elapsed::budget`] says which deadline and
/// [`Elapsed::after`] how long it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Elapsed {
    budget: Budget,
    after: Duration,
}

impl Elapsed {
    /// An expiry of `budget`, which was `after` long.
    pub fn new(budget: Budget, after: Duration) -> Self {
        Self { budget, after }
    }

    /// Which deadline expired.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// How long the deadline was.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.budget {
            Budget::Connect => "no connection to the upstream",
            Budget::FirstByte => "no response headers from the upstream",
            Budget::Idle => "no data from the upstream's response body",
            Budget::Total => "the exchange with the upstream did not complete",
        };
        write!(
            f,
            "{} timeout: {what} within {:?}; the upstream may be overloaded or stalled \
             (raise the `{}` budget or try another upstream)",
            self.budget.as_str().replace('_', "-"),
            self.after,
            self.budget.as_str()
        )
    }
}

impl StdError for Elapsed {}

/// A local rate limiter refused the call, or could not admit it in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimited {
    retry_after: Option<Duration>,
}

impl RateLimited {
    /// A refusal; `retry_after` is how long until capacity is available, or
    /// `None` when it never will be (the call costs more than the bucket holds).
    pub fn new(retry_after: Option<Duration>) -> Self {
        Self { retry_after }
    }

    /// How long until a call like this one can be admitted; `None` when it
    /// never can.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_after {
            Some(d) => write!(
                f,
                "rate limited locally: capacity for this call in {d:?}; slow down or raise the limit"
            ),
            None => f.write_str(
                "rate limited locally: this call costs more than the limit's capacity and can \
                 never be admitted; raise the capacity or make the call smaller",
            ),
        }
    }
}

impl StdError for RateLimited {}

/// A circuit breaker is open: the call was refused without being sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitOpen {
    remaining: Duration,
}

impl CircuitOpen {
    /// A refusal by a breaker that stays open for another `remaining`.
    pub fn new(remaining: Duration) -> Self {
        Self { remaining }
    }

    /// How long until the breaker lets a probe through.
    pub fn remaining(&self) -> Duration {
        self.remaining
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit open: the upstream has been failing, calls are refused for another {:?}; \
             retry later or use another upstream",
            self.remaining
        )
    }
}

impl StdError for CircuitOpen {}

/// One reason a request was rejected, located by a JSON pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pointer: String,
    message: String,
}

impl Violation {
    /// A violation at `pointer` (RFC 6901, `""` for the whole document).
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }

    /// Where in the request body, as a JSON pointer.
    pub fn pointer(&self) -> &str {
        &self.pointer
    }

    /// What is wrong there.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.pointer, self.message)
        }
    }
}

/// The request was rejected before it left the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    violations: Vec<Violation>,
}

impl Rejected {
    /// A rejection for the given violations.
    pub fn new(violations: Vec<Violation>) -> Self {
        Self { violations }
    }

    /// Every violation found, in document order.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid request, not sent: ")?;
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        if self.violations.is_empty() {
            f.write_str("(no details)")?;
        }
        f.write_str("; fix the request body")
    }
}

impl StdError for Rejected {}

/// The model's structured output does not match the JSON schema the request
/// asked for (`response_format: json_schema`): the answer came, but it is
/// not usable. Retry can be told to try again
/// ([`crate::classify::LlmClassifier::retry_invalid_output`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidOutput {
    violations: Vec<Violation>,
}

impl InvalidOutput {
    /// An invalid output with these violations (pointers into the output).
    pub fn new(violations: Vec<Violation>) -> Self {
        Self { violations }
    }

    /// Every violation found.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }
}

impl fmt::Display for InvalidOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the model's structured output does not match the requested schema: ")?;
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        f.write_str("; retry (the output varies), or relax the schema")
    }
}

impl StdError for InvalidOutput {}

/// A body was larger than the limit it was read under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyTooLarge {
    limit: usize,
}

impl BodyTooLarge {
    /// A body over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "body larger than the {} byte limit; send a smaller body or raise the limit",
            self.limit
        )
    }
}

impl StdError for BodyTooLarge {}

/// The upstream answered with an error status, and a component chose to turn
/// that response into an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamStatus {
    status: StatusCode,
    retry_after: Option<Duration>,
}

impl UpstreamStatus {
    /// An error for `status`, with the upstream's retry hint if it sent one.
    pub fn new(status: StatusCode, retry_after: Option<Duration>) -> Self {
        Self {
            status,
            retry_after,
        }
    }

    /// The upstream's status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The upstream's retry hint (see [`crate::hint`]).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for UpstreamStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream answered {}", self.status)?;
        if let Some(d) = self.retry_after {
            write!(f, "; it asks to retry after {d:?}")?;
        }
        Ok(())
    }
}

impl StdError for UpstreamStatus {}

/// The request could not be exchanged with the upstream.
///
/// Raised by the client service (`palisade-client`); [`TransportError::kind`]
/// tells a refused connection from a TLS failure from a broken exchange, and
/// the source chain holds the underlying hyper or I/O error.
#[derive(Debug)]
pub struct TransportError {
    kind: TransportKind,
    upstream: Option<String>,
    source: BoxError,
}

impl TransportError {
    /// A transport failure of `kind` caused by `source`.
    pub fn new(kind: TransportKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            upstream: None,
            source: source.into(),
        }
    }

    /// Names the upstream (`host:port`) in the message.
    #[must_use]
    pub fn with_upstream(mut self, upstream: impl Into<String>) -> Self {
        self.upstream = Some(upstream.into());
        self
    }

    /// Which part of the transport failed.
    pub fn kind(&self) -> TransportKind {
        self.kind
    }

    /// The upstream's `host:port`, when known.
    pub fn upstream(&self) -> Option<&str> {
        self.upstream.as_deref()
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.upstream.as_deref().unwrap_or("the upstream");
        match self.kind {
            TransportKind::ConnectRefused => write!(
                f,
                "connection refused by {at}: is the upstream running and the base URL right?"
            ),
            TransportKind::ConnectTimeout => write!(
                f,
                "connecting to {at} timed out: check the address and the network, or raise the connect timeout"
            ),
            TransportKind::Connect => write!(
                f,
                "could not connect to {at}: check the host name, port and network"
            ),
            TransportKind::Tls => write!(
                f,
                "TLS handshake with {at} failed: check the URL's scheme and host name and the server's certificate"
            ),
            TransportKind::Protocol => write!(
                f,
                "the HTTP exchange with {at} broke off: the connection was reset or the reply was malformed"
            ),
            TransportKind::StaleConnection => write!(
                f,
                "{at} closed a pooled connection just as the request went out on it (its keep-alive timeout is shorter than the client's pool idle timeout): the request was not processed and may be sent again; lowering the client's pool idle timeout below the server's avoids it"
            ),
            TransportKind::Io => write!(f, "I/O error talking to {at}"),
        }
    }
}

impl StdError for TransportError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap(BoxError);
    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapper")
        }
    }
    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    fn kind(e: impl Into<BoxError>) -> Option<ErrorKind> {
        let e: BoxError = e.into();
        ErrorKind::of(&*e)
    }

    #[test]
    fn caller_status_follows_its_table_through_wrapped_errors() {
        let secs = Duration::from_secs;
        let cases: Vec<(BoxError, u16, Option<Duration>)> = vec![
            (Box::new(CircuitOpen::new(secs(2))), 503, Some(secs(2))),
            (
                Box::new(RateLimited::new(Some(secs(3)))),
                429,
                Some(secs(3)),
            ),
            (Box::new(RateLimited::new(None)), 429, None),
            (Box::new(Elapsed::new(Budget::Total, secs(1))), 504, None),
            (
                Box::new(UpstreamStatus::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(secs(4)),
                )),
                503,
                Some(secs(4)),
            ),
            (Box::new(BodyTooLarge::new(10)), 413, None),
            (
                Box::new(Rejected::new(vec![Violation::new("/x", "bad")])),
                400,
                None,
            ),
            (
                Box::new(TransportError::new(
                    TransportKind::ConnectRefused,
                    "refused",
                )),
                502,
                None,
            ),
            ("something else".into(), 502, None),
        ];
        for (err, status, retry) in cases {
            let wrapped = Wrap(err);
            let (s, r) = caller_status(&wrapped);
            assert_eq!((s.as_u16(), r), (status, retry), "{wrapped}");
        }
    }

    #[test]
    fn leaf_errors_have_their_kind() {
        assert_eq!(
            kind(Elapsed::new(Budget::Idle, Duration::from_secs(1))),
            Some(ErrorKind::Timeout)
        );
        assert_eq!(kind(RateLimited::new(None)), Some(ErrorKind::RateLimited));
        assert_eq!(
            kind(CircuitOpen::new(Duration::ZERO)),
            Some(ErrorKind::CircuitOpen)
        );
        assert_eq!(kind(Rejected::new(vec![])), Some(ErrorKind::InvalidRequest));
        assert_eq!(kind(BodyTooLarge::new(1)), Some(ErrorKind::InvalidRequest));
        assert_eq!(
            kind(UpstreamStatus::new(StatusCode::BAD_GATEWAY, None)),
            Some(ErrorKind::UpstreamStatus)
        );
        assert_eq!(
            kind(TransportError::new(TransportKind::Tls, "x")),
            Some(ErrorKind::Transport(TransportKind::Tls))
        );
        assert_eq!(kind("some string error"), None);
    }

    #[test]
    fn kind_is_found_deep_in_the_chain_and_inside_io_errors() {
        let inner = Wrap(Wrap(RateLimited::new(None).into()).into());
        assert_eq!(kind(inner), Some(ErrorKind::RateLimited));

        // io::Error::source() skips its payload; chain() must not.
        let io = std::io::Error::other(Elapsed::new(Budget::Connect, Duration::from_secs(1)));
        assert_eq!(kind(Wrap(io.into())), Some(ErrorKind::Timeout));

        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            kind(Wrap(refused.into())),
            Some(ErrorKind::Transport(TransportKind::ConnectRefused))
        );
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert!(kind(timed_out).is_some_and(ErrorKind::is_timeout));
    }

    #[test]
    fn chain_is_bounded() {
        let mut e: BoxError = "root".into();
        for _ in 0..1000 {
            e = Wrap(e).into();
        }
        assert_eq!(chain(&*e).count(), 64);
    }

    #[test]
    fn messages_say_what_failed_and_what_to_do() {
        let e = Elapsed::new(Budget::FirstByte, Duration::from_secs(30));
        let s = e.to_string();
        assert!(s.starts_with("first-byte timeout"), "{s}");
        assert!(
            s.contains("30s") && s.contains("raise the `first_byte` budget"),
            "{s}"
        );
        let r = Rejected::new(vec![Violation::new(
            "/messages/0/content",
            "expected string or array",
        )]);
        assert_eq!(
            r.to_string(),
            "invalid request, not sent: /messages/0/content: expected string or array; fix the request body"
        );
        let t = TransportError::new(TransportKind::ConnectRefused, "refused")
            .with_upstream("127.0.0.1:9");
        assert!(t.to_string().contains("127.0.0.1:9"));
        assert!(t.source().is_some());
    }
}
