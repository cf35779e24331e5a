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

use http::HeaderMap;

/// The trace identity of one request: read from its headers, generated
/// where missing.
///
/// ```
/// use palisade_trace::TraceContext;
///
/// let mut h = http::HeaderMap::new();
/// h.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// let ctx = TraceContext::from_headers(&h);
/// assert_eq!(ctx.id, "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(ctx.traceparent().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TraceContext {
    /// The `x-trace-id` value (echoed, forwarded, logged).
    pub id: String,
    /// The W3C trace id (32 lowercase hex).
    pub trace_id: String,
    /// This hop's span id (16 lowercase hex): the parent id sent upstream.
    pub span_id: String,
    /// The trace flags (`01` sampled).
    pub flags: String,
    /// The incoming `tracestate`, forwarded untouched.
    pub tracestate: Option<String>,
    /// The incoming parent span id, when a valid `traceparent` came.
    pub parent_id: Option<String>,
    /// Whether `id` came with the request (else it was generated).
    pub id_from_request: bool,
}

/// The default trace-id header.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `bytes` random bytes as lowercase hex, never all zeros (W3C: invalid).
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = [0u8; 32];
    let out = &mut buf[..bytes.min(16) * 2];
    // Never zero: the low `bytes` bytes of a value of at least 1.
    let max = if bytes >= 16 {
        u128::MAX
    } else {
        (1u128 << (bytes * 8)) - 1
    };
    write_hex(out, fastrand::u128(1..=max));
    String::from_utf8_lossy(out).into_owned()
}

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
fn parse_traceparent(v: &str) -> Option<(String, String, String)> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    if !is_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !is_hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
        return None;
    }
    if !is_hex(parent, 16) || parent.bytes().all(|b| b == b'0') || !is_hex(flags, 2) {
        return None;
    }
    Some((trace_id.to_owned(), parent.to_owned(), flags.to_owned()))
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
        let parent_id = parent.as_ref().map(|p| p.1.clone());
        let (trace_id, flags) = match parent {
            Some((t, _, f)) => (t, f),
            None => {
                let seeded = incoming_id
                    .map(str::to_ascii_lowercase)
                    .filter(|s| is_hex(s, 32) && s.bytes().any(|b| b != b'0'));
                (seeded.unwrap_or_else(|| random_hex(16)), "01".to_owned())
            }
        };
        let id = incoming_id.map_or_else(|| trace_id.clone(), str::to_owned);
        Self {
            id,
            trace_id,
            span_id: random_hex(8),
            flags,
            tracestate,
            parent_id,
            id_from_request: incoming_id.is_some(),
        }
    }

    /// The `traceparent` to send upstream (this hop's span as parent).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
        assert_eq!(c.id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(
            c.traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        assert!(
            !c.traceparent().contains("00f067aa0ba902b7"),
            "a new span id"
        );
        assert_eq!(c.tracestate.as_deref(), Some("a=b"));

        let c = ctx(&[("x-trace-id", "req-42"), ("traceparent", tp)]);
        assert_eq!(c.id, "req-42");
        assert_eq!(c.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");

        let c = ctx(&[("x-trace-id", "req-42")]);
        assert_eq!(c.id, "req-42");
        assert!(is_hex(&c.trace_id, 32));

        let c = ctx(&[(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )]);
        assert_ne!(c.trace_id, "00000000000000000000000000000000");
        assert_eq!(c.id, c.trace_id);

        let c = ctx(&[]);
        assert!(is_hex(&c.id, 32) && is_hex(&c.span_id, 16));
    }
}
