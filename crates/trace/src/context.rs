//! [`TraceContext`]: `x-trace-id` and W3C `traceparent`/`tracestate` for
//! one request.
//!
//! - A valid incoming `traceparent` is the parent: its trace id is kept and
//!   a new span id (the gateway's) is sent upstream.
//! - An incoming `x-trace-id` (1–128 visible ASCII characters) is kept as
//!   is; when it is 32 hex digits and no `traceparent` came, it also seeds
//!   the W3C trace id.
//! - When only a `traceparent` arrives, its trace id becomes the `x-trace-id`.
//! - Otherwise both are generated.

use std::fmt;

use http::HeaderMap;

/// A W3C trace id: 16 bytes, never all zeros; displays as 32 lowercase hex
/// digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceId(u128);

/// A W3C span id: 8 bytes, never all zeros; displays as 16 lowercase hex
/// digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanId(u64);

impl TraceId {
    /// The id's 16 bytes, most significant first.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The id of these bytes; `None` for all zeros (invalid in W3C).
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        Some(u128::from_be_bytes(bytes))
            .filter(|v| *v != 0)
            .map(Self)
    }

    fn random() -> Self {
        Self(fastrand::u128(1..))
    }

    fn parse(hex: &str) -> Option<Self> {
        parse_hex(hex, 32).map(Self)
    }
}

impl SpanId {
    /// The id's 8 bytes, most significant first.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// The id of these bytes; `None` for all zeros (invalid in W3C).
    pub fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        Some(u64::from_be_bytes(bytes))
            .filter(|v| *v != 0)
            .map(Self)
    }

    fn random() -> Self {
        Self(fastrand::u64(1..))
    }

    fn parse(hex: &str) -> Option<Self> {
        parse_hex(hex, 16)
            .and_then(|v| u64::try_from(v).ok())
            .map(Self)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// `len` lowercase hex digits, not all zeros.
fn parse_hex(s: &str, len: usize) -> Option<u128> {
    if s.len() != len || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(s, 16).ok().filter(|v| *v != 0)
}

/// The trace identity of one request: read from its headers, generated
/// where missing.
///
/// ```
/// use palisade_trace::TraceContext;
///
/// let mut h = http::HeaderMap::new();
/// h.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// let ctx = TraceContext::from_headers(&h);
/// assert_eq!(ctx.id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(ctx.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(ctx.is_sampled());
/// assert!(ctx.traceparent().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
/// ```
#[derive(Clone, Debug)]
pub struct TraceContext {
    id: String,
    trace_id: TraceId,
    span_id: SpanId,
    flags: u8,
    tracestate: Option<String>,
    parent_id: Option<SpanId>,
    id_from_request: bool,
}

/// The default trace-id header.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// `x` as lowercase hex filling `out` (its low `out.len()` nibbles).
pub(crate) fn write_hex(out: &mut [u8], mut x: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = HEX[(x & 0xf) as usize];
        x >>= 4;
    }
}

/// `version-traceid-parentid-flags`, version 00 (or a future version with
/// the same first four fields, as W3C asks).
fn parse_traceparent(v: &str) -> Option<(TraceId, SpanId, u8)> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    if parse_hex_byte(version).is_none()
        || version == "ff"
        || (version == "00" && parts.next().is_some())
    {
        return None;
    }
    Some((
        TraceId::parse(trace_id)?,
        SpanId::parse(parent)?,
        parse_hex_byte(flags)?,
    ))
}

/// Two lowercase hex digits (`00` allowed).
fn parse_hex_byte(s: &str) -> Option<u8> {
    if s.len() != 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u8::from_str_radix(s, 16).ok()
}

impl TraceContext {
    /// Reads the incoming headers, generating what is missing.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let incoming_id = headers
            .get(TRACE_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()));
        let parent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let tracestate = parent.as_ref().and_then(|_| {
            headers
                .get("tracestate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        let (trace_id, parent_id, flags) = match parent {
            Some((t, p, f)) => (t, Some(p), f),
            None => {
                let seeded = incoming_id.and_then(|s| TraceId::parse(&s.to_ascii_lowercase()));
                (seeded.unwrap_or_else(TraceId::random), None, 1)
            }
        };
        let id = incoming_id.map_or_else(|| trace_id.to_string(), str::to_owned);
        Self {
            id,
            trace_id,
            span_id: SpanId::random(),
            flags,
            tracestate,
            parent_id,
            id_from_request: incoming_id.is_some(),
        }
    }

    /// The `x-trace-id` value (echoed, forwarded, logged): the caller's,
    /// or the W3C trace id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether [`id`](Self::id) came with the request (else it was
    /// generated).
    pub fn id_from_request(&self) -> bool {
        self.id_from_request
    }

    /// The W3C trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This hop's span id: the parent id sent upstream.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The incoming parent span id, when a valid `traceparent` came.
    pub fn parent_id(&self) -> Option<SpanId> {
        self.parent_id
    }

    /// The trace flags (`0x01`: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the trace is sampled (flag `0x01`).
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The incoming `tracestate`, forwarded untouched (only with a valid
    /// `traceparent`).
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The `traceparent` to send upstream (this hop's span as parent).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags)
    }

    /// Adopts the trace an exporter's span started (no incoming parent):
    /// its trace id, and as the `x-trace-id` unless the caller sent one.
    #[cfg(feature = "otel")]
    pub(crate) fn adopt_trace(&mut self, trace_id: TraceId) {
        self.trace_id = trace_id;
        if !self.id_from_request {
            self.id = trace_id.to_string();
        }
    }

    /// Names the exporter's span as this hop's span.
    #[cfg(feature = "otel")]
    pub(crate) fn set_span_id(&mut self, span_id: SpanId) {
        self.span_id = span_id;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn is_hex(s: &str, len: usize) -> bool {
        parse_hex(s, len).is_some()
    }

    fn ctx(pairs: &[(&'static str, &str)]) -> TraceContext {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        TraceContext::from_headers(&h)
    }

    #[test]
    fn propagation_rules() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = ctx(&[("traceparent", tp), ("tracestate", "a=b")]);
        assert_eq!(c.id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(
            c.traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        assert!(
            !c.traceparent().contains("00f067aa0ba902b7"),
            "a new span id"
        );
        assert_eq!(c.tracestate(), Some("a=b"));
        assert_eq!(
            c.parent_id().map(|p| p.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );

        let c = ctx(&[("x-trace-id", "req-42"), ("traceparent", tp)]);
        assert_eq!(c.id(), "req-42");
        assert_eq!(c.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");

        let c = ctx(&[("x-trace-id", "req-42")]);
        assert_eq!(c.id(), "req-42");
        assert!(is_hex(&c.trace_id().to_string(), 32));
        assert_eq!(c.tracestate(), None);

        // A 32-hex x-trace-id seeds the W3C trace id.
        let c = ctx(&[("x-trace-id", "4BF92F3577B34DA6A3CE929D0E0E4736")]);
        assert_eq!(c.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.id(), "4BF92F3577B34DA6A3CE929D0E0E4736");

        // Unsampled flags are kept.
        let c = ctx(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )]);
        assert!(!c.is_sampled());
        assert!(c.traceparent().ends_with("-00"));

        let c = ctx(&[(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )]);
        assert_ne!(c.trace_id().to_string(), "00000000000000000000000000000000");
        assert_eq!(c.id(), c.trace_id().to_string());
        assert_eq!(c.parent_id(), None);

        let c = ctx(&[]);
        assert!(is_hex(c.id(), 32) && is_hex(&c.span_id().to_string(), 16));
    }
}
