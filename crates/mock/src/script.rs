//! What the mock answers: [`Reply`] scripts and the [`Fault`]s they inject.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

/// A failure the mock injects into a reply.
///
/// Where it strikes is set by [`Reply::fault_after`]: after that many tokens
/// of a stream. On a JSON (non-streamed) reply, `Reset` and `Stall` after `0`
/// tokens strike before the response headers; any other position strikes in
/// the middle of the body (half of it is sent first).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The connection is reset: before the headers, the request fails; after
    /// them, the body ends with an error (over a socket: the connection is
    /// torn down mid-response).
    Reset,
    /// Nothing more is sent, ever, and the connection stays open.
    Stall,
    /// The stream ends cleanly but early: no `[DONE]` / `message_stop`.
    Truncate,
    /// A malformed SSE event: a data line that is not UTF-8 and a line with no
    /// colon, then the stream goes on.
    MalformedSse,
    /// Malformed JSON: a stream event whose data is not JSON (then the stream
    /// goes on), or a JSON reply whose body is cut off mid-object.
    MalformedJson,
    /// An in-band error after a 200: OpenAI's `data: {"error":…}` or
    /// Anthropic's `event: error`, then the stream ends.
    InbandError,
    /// Keep-alives only: from here on an SSE comment (OpenAI) or a `ping`
    /// event (Anthropic) every interval, and no data, forever.
    Heartbeats(Duration),
    /// One `data:` line of this many bytes, generated lazily, then the stream
    /// goes on.
    OversizedEvent(usize),
}

/// One scripted reply of the mock upstream.
///
/// The default reply echoes the last user message word by word, as JSON or as
/// a stream (whichever the request asked for), in the dialect of the endpoint
/// that was called.
///
/// # Example
///
/// ```
/// use palisade_mock::{Fault, MockUpstream, Reply};
/// use std::time::Duration;
///
/// let mock = MockUpstream::new();
/// mock.push(Reply::status(429).header("retry-after", "2"));
/// mock.push(Reply::echo().delay_per_token(Duration::from_millis(5)).fault_after(3, Fault::Reset));
/// // The third request, and every one after it, gets the default echo.
/// ```
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub(crate) status: Option<StatusCode>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Option<Bytes>,
    pub(crate) before_headers: Duration,
    pub(crate) per_token: Duration,
    pub(crate) words: Option<usize>,
    pub(crate) fault: Option<(usize, Fault)>,
}

impl Reply {
    /// The normal reply: echo the last user message.
    pub fn echo() -> Self {
        Self::default()
    }

    /// Reply with `n` generated words instead of the echo (a stream of any
    /// size, generated lazily as the client reads it).
    pub fn words(n: usize) -> Self {
        Self {
            words: Some(n),
            ..Self::default()
        }
    }

    /// Reply with an error status and the provider's error body for it
    /// (`{"error":{…}}` for OpenAI, `{"type":"error",…}` for Anthropic).
    ///
    /// # Panics
    ///
    /// If `code` is not a valid status code (100–999): a bug in the test.
    pub fn status(code: u16) -> Self {
        let status = StatusCode::from_u16(code).unwrap_or_else(|_| panic!("invalid status {code}"));
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    /// Adds a response header.
    ///
    /// # Panics
    ///
    /// If `name` or `value` is not valid in a header: a bug in the test.
    #[must_use]
    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
        self
    }

    /// Adds a response header from typed parts.
    #[must_use]
    pub fn typed_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Replaces the body with these exact bytes (sent as they are).
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Waits this long before sending the response headers.
    #[must_use]
    pub fn delay_before_headers(mut self, d: Duration) -> Self {
        self.before_headers = d;
        self
    }

    /// Waits this long before each token of a stream.
    #[must_use]
    pub fn delay_per_token(mut self, d: Duration) -> Self {
        self.per_token = d;
        self
    }

    /// Injects `fault` after `tokens` tokens (see [`Fault`]).
    #[must_use]
    pub fn fault_after(mut self, tokens: usize, fault: Fault) -> Self {
        self.fault = Some((tokens, fault));
        self
    }

    /// Injects `fault` at once (`fault_after(0, fault)`).
    #[must_use]
    pub fn fault(self, fault: Fault) -> Self {
        self.fault_after(0, fault)
    }
}
