//! Parsing of every retry hint an LLM provider sends.
//!
//! A provider that refuses a call usually says when to come back, in one of
//! several dialects:
//!
//! | header | format | example | sent by |
//! |---|---|---|---|
//! | `retry-after-ms` | milliseconds, may be fractional | `1500` | OpenAI, Azure |
//! | `retry-after` | delay-seconds or HTTP-date (RFC 9110) | `2`, `Wed, 21 Oct 2015 07:28:00 GMT` | everyone |
//! | `x-ratelimit-reset-requests` / `-tokens` | Go duration | `12ms`, `1s`, `6m0s`, `1h2m3.5s` | OpenAI |
//! | `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset` | RFC 3339 time | `2024-06-01T12:00:03Z` | Anthropic |
//!
//! [`RetryHint::from_headers`] reads them in that order of precedence (an
//! invalid header is skipped, never fatal). For the reset headers it prefers the
//! limit whose `…-remaining` header says `0`; when none says so it takes the
//! earliest reset. A time in the past is a delay of zero. The retry layer caps
//! the hint (see [`RetryHint::capped`]) and jitters it.
//!
//! The single-value parsers are public for users with other headers.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::HeaderMap;

mod drain;

pub use drain::provider_drain;

/// A header's value was not a valid retry hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidHint {
    value: String,
    expected: &'static str,
}

impl InvalidHint {
    fn new(value: &str, expected: &'static str) -> Self {
        // The value came from the network: keep a bounded, escaped excerpt.
        let value: String = value.chars().take(64).collect();
        Self { value, expected }
    }

    /// What the value should have looked like.
    pub fn expected(&self) -> &'static str {
        self.expected
    }
}

impl fmt::Display for InvalidHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid retry hint {:?}: expected {}; the hint is ignored",
            self.value, self.expected
        )
    }
}

impl std::error::Error for InvalidHint {}

/// Which header a [`RetryHint`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HintSource {
    /// `retry-after-ms`.
    RetryAfterMs,
    /// `retry-after`.
    RetryAfter,
    /// OpenAI's `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens`.
    OpenAiReset,
    /// Anthropic's `anthropic-ratelimit-*-reset`.
    AnthropicReset,
}

impl HintSource {
    /// The header (family) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetryAfterMs => "retry-after-ms",
            Self::RetryAfter => "retry-after",
            Self::OpenAiReset => "x-ratelimit-reset-*",
            Self::AnthropicReset => "anthropic-ratelimit-*-reset",
        }
    }
}

/// How long an upstream asked the caller to wait before trying again.
///
/// # Example
///
/// ```
/// use http::HeaderMap;
/// use palisade_core::hint::{RetryHint, HintSource};
/// use std::time::Duration;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "2".parse().unwrap());
/// headers.insert("x-ratelimit-reset-requests", "6m0s".parse().unwrap());
/// let hint = RetryHint::from_headers(&headers).unwrap();
/// assert_eq!(hint.delay(), Duration::from_secs(2));
/// assert_eq!(hint.source(), HintSource::RetryAfter);
/// assert_eq!(hint.capped(Duration::from_secs(1)), Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryHint {
    delay: Duration,
    source: HintSource,
}

const OPENAI_RESETS: [(&str, &str); 2] = [
    (
        "x-ratelimit-reset-requests",
        "x-ratelimit-remaining-requests",
    ),
    ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
];

const ANTHROPIC_RESETS: [(&str, &str); 4] = [
    (
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-requests-remaining",
    ),
    (
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-tokens-remaining",
    ),
    (
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-input-tokens-remaining",
    ),
    (
        "anthropic-ratelimit-output-tokens-reset",
        "anthropic-ratelimit-output-tokens-remaining",
    ),
];

impl RetryHint {
    /// A hint of `delay` from `source`.
    pub fn new(delay: Duration, source: HintSource) -> Self {
        Self { delay, source }
    }

    /// Reads the hint from response headers, with the wall clock as "now".
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        Self::from_headers_at(headers, SystemTime::now())
    }

    /// Reads the hint from response headers, with `now` as the time absolute
    /// dates are measured from.
    pub fn from_headers_at(headers: &HeaderMap, now: SystemTime) -> Option<Self> {
        if let Some(d) =
            header_str(headers, "retry-after-ms").and_then(|v| parse_retry_after_ms(v).ok())
        {
            return Some(Self::new(d, HintSource::RetryAfterMs));
        }
        if let Some(d) =
            header_str(headers, "retry-after").and_then(|v| parse_retry_after(v, now).ok())
        {
            return Some(Self::new(d, HintSource::RetryAfter));
        }
        if let Some(d) = pick_reset(headers, &OPENAI_RESETS, parse_go_duration) {
            return Some(Self::new(d, HintSource::OpenAiReset));
        }
        if let Some(d) = pick_reset(headers, &ANTHROPIC_RESETS, |v| parse_reset_time(v, now)) {
            return Some(Self::new(d, HintSource::AnthropicReset));
        }
        None
    }

    /// The requested delay, uncapped.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Which header it came from.
    pub fn source(&self) -> HintSource {
        self.source
    }

    /// The delay, at most `max`.
    pub fn capped(&self, max: Duration) -> Duration {
        self.delay.min(max)
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn pick_reset(
    headers: &HeaderMap,
    family: &[(&str, &str)],
    parse: impl Fn(&str) -> Result<Duration, InvalidHint>,
) -> Option<Duration> {
    let mut exhausted: Option<Duration> = None;
    let mut earliest: Option<Duration> = None;
    for (reset, remaining) in family {
        let Some(d) = header_str(headers, reset).and_then(|v| parse(v).ok()) else {
            continue;
        };
        let is_exhausted = header_str(headers, remaining)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n == 0);
        if is_exhausted {
            exhausted = Some(exhausted.map_or(d, |e| e.max(d)));
        }
        earliest = Some(earliest.map_or(d, |e| e.min(d)));
    }
    exhausted.or(earliest)
}

/// Parses a `Retry-After` value: delay-seconds (`"120"`, leniently `"1.5"`) or
/// an HTTP-date, which is measured from `now` (a past date is zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Result<Duration, InvalidHint> {
    const EXPECTED: &str = "delay-seconds (e.g. `2`) or an HTTP-date";
    let v = value.trim();
    if v.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return parse_decimal(v, NANOS_PER_SEC).ok_or_else(|| InvalidHint::new(value, EXPECTED));
    }
    let at = httpdate::parse_http_date(v).map_err(|_| InvalidHint::new(value, EXPECTED))?;
    Ok(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses a `retry-after-ms` value: milliseconds, possibly fractional.
pub fn parse_retry_after_ms(value: &str) -> Result<Duration, InvalidHint> {
    parse_decimal(value.trim(), NANOS_PER_MS)
        .ok_or_else(|| InvalidHint::new(value, "milliseconds (e.g. `1500`)"))
}

/// Parses a Go duration as OpenAI sends in `x-ratelimit-reset-*`: `"12ms"`,
/// `"1s"`, `"6m0s"`, `"1h2m3.5s"`, `"0"`. Units: `ns`, `us`/`µs`, `ms`, `s`,
/// `m`, `h`. Negative durations are rejected; huge ones saturate.
pub fn parse_go_duration(value: &str) -> Result<Duration, InvalidHint> {
    const EXPECTED: &str = "a Go duration (e.g. `6m0s`, `1.5s`, `12ms`)";
    let err = || InvalidHint::new(value, EXPECTED);
    let mut s = value.trim();
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (num, rest) = s.split_at(num_end);
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_end);
        let unit_nanos = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => NANOS_PER_MS,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            _ => return Err(err()),
        };
        let nanos = decimal_nanos(num, unit_nanos).ok_or_else(err)?;
        total = total.saturating_add(nanos);
        s = rest;
    }
    Ok(nanos_to_duration(total))
}

/// Parses an RFC 3339 time (Anthropic's `anthropic-ratelimit-*-reset`) into
/// the delay from `now` until then (a past time is zero).
pub fn parse_reset_time(value: &str, now: SystemTime) -> Result<Duration, InvalidHint> {
    let ts: jiff::Timestamp = value
        .trim()
        .parse()
        .map_err(|_| InvalidHint::new(value, "an RFC 3339 time (e.g. `2024-06-01T12:00:03Z`)"))?;
    let now_nanos = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    };
    let ahead = ts.as_nanosecond().saturating_sub(now_nanos);
    Ok(nanos_to_duration(u128::try_from(ahead).unwrap_or(0)))
}

const NANOS_PER_MS: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// `digits[.digits]` (or `.digits`) in units of `unit_nanos`, saturating.
fn parse_decimal(s: &str, unit_nanos: u128) -> Option<Duration> {
    decimal_nanos(s, unit_nanos).map(nanos_to_duration)
}

fn decimal_nanos(s: &str, unit_nanos: u128) -> Option<u128> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut whole: u128 = 0;
    for b in int.bytes() {
        whole = whole
            .saturating_mul(10)
            .saturating_add(u128::from(b - b'0'));
    }
    // Eighteen fractional digits are far below a nanosecond for every unit.
    let frac = &frac[..frac.len().min(18)];
    let mut f: u128 = 0;
    for b in frac.bytes() {
        f = f * 10 + u128::from(b - b'0');
    }
    let frac_nanos = f * unit_nanos / 10u128.pow(frac.len() as u32);
    Some(whole.saturating_mul(unit_nanos).saturating_add(frac_nanos))
}

fn nanos_to_duration(nanos: u128) -> Duration {
    let secs = nanos / NANOS_PER_SEC;
    match u64::try_from(secs) {
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn retry_after_table() {
        // 2015-10-21T07:28:00Z = 1445412480
        let now = at(1_445_412_480);
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("2", ms(2_000)),
            ("120", ms(120_000)),
            (" 30 ", ms(30_000)),
            ("1.5", ms(1_500)),
            ("Wed, 21 Oct 2015 07:28:00 GMT", Duration::ZERO),
            ("Wed, 21 Oct 2015 07:28:10 GMT", ms(10_000)),
            ("Wed, 21 Oct 2015 07:27:00 GMT", Duration::ZERO), // past
            ("Wednesday, 21-Oct-15 07:28:05 GMT", ms(5_000)),  // RFC 850
            ("Wed Oct 21 07:28:07 2015", ms(7_000)),           // asctime
        ];
        for (v, want) in cases {
            assert_eq!(parse_retry_after(v, now), Ok(*want), "{v:?}");
        }
        for bad in [
            "",
            "-1",
            "soon",
            "2s",
            "1e3",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "1.2.3",
        ] {
            assert!(parse_retry_after(bad, now).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn retry_after_ms_table() {
        assert_eq!(parse_retry_after_ms("1500"), Ok(ms(1_500)));
        assert_eq!(parse_retry_after_ms("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_retry_after_ms("20.5"),
            Ok(Duration::from_micros(20_500))
        );
        for bad in ["", "abc", "-5", "5ms", "1,000"] {
            assert!(parse_retry_after_ms(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn go_duration_table() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("12ms", ms(12)),
            ("1s", ms(1_000)),
            ("6m0s", ms(360_000)),
            ("1h2m3.5s", ms(3_723_500)),
            ("20ms", ms(20)),
            ("8.64s", ms(8_640)),
            ("17.9s", ms(17_900)),
            ("1m30.5s", ms(90_500)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("100ns", Duration::from_nanos(100)),
            (".5s", ms(500)),
            ("+2s", ms(2_000)),
            ("2h", Duration::from_secs(7_200)),
        ];
        for (v, want) in cases {
            assert_eq!(parse_go_duration(v), Ok(*want), "{v:?}");
        }
        for bad in ["", "s", "12", "-1s", "1x", "1.s.", "ms", "1s 2s", "1d"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_go_duration("99999999999999999999999999999999h"),
            Ok(Duration::MAX)
        );
    }

    #[test]
    fn rfc3339_table() {
        // 2024-06-01T12:00:00Z = 1717243200
        let now = at(1_717_243_200);
        assert_eq!(parse_reset_time("2024-06-01T12:00:03Z", now), Ok(ms(3_000)));
        assert_eq!(
            parse_reset_time("2024-06-01T12:00:00.250Z", now),
            Ok(ms(250))
        );
        assert_eq!(
            parse_reset_time("2024-06-01T14:00:05+02:00", now),
            Ok(ms(5_000))
        );
        assert_eq!(
            parse_reset_time("2024-06-01T11:59:00Z", now),
            Ok(Duration::ZERO)
        );
        for bad in ["", "tomorrow", "2024-13-01T00:00:00Z", "1717243200"] {
            assert!(parse_reset_time(bad, now).is_err(), "{bad:?} accepted");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn precedence_and_fallbacks() {
        let now = at(1_717_243_200);
        let hint = |pairs| RetryHint::from_headers_at(&headers(pairs), now);

        let h = hint(&[("retry-after-ms", "250"), ("retry-after", "9")]).unwrap();
        assert_eq!((h.delay(), h.source()), (ms(250), HintSource::RetryAfterMs));

        // An invalid header is skipped, the next one used.
        let h = hint(&[("retry-after-ms", "soon"), ("retry-after", "9")]).unwrap();
        assert_eq!((h.delay(), h.source()), (ms(9_000), HintSource::RetryAfter));

        // OpenAI: the exhausted limit's reset wins over an earlier one.
        let h = hint(&[
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("x-ratelimit-remaining-tokens", "0"),
        ])
        .unwrap();
        assert_eq!(
            (h.delay(), h.source()),
            (ms(360_000), HintSource::OpenAiReset)
        );

        // Nothing says exhausted: the earliest reset.
        let h = hint(&[
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ])
        .unwrap();
        assert_eq!(h.delay(), ms(1_000));

        let h = hint(&[
            ("anthropic-ratelimit-requests-reset", "2024-06-01T12:00:01Z"),
            ("anthropic-ratelimit-requests-remaining", "10"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2024-06-01T12:00:20Z",
            ),
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
        ])
        .unwrap();
        assert_eq!(
            (h.delay(), h.source()),
            (ms(20_000), HintSource::AnthropicReset)
        );

        assert_eq!(hint(&[("retry-after", "later")]), None);
        assert_eq!(hint(&[]), None);
    }

    #[test]
    fn error_message_is_bounded_and_names_the_format() {
        let long = "x".repeat(10_000);
        let e = parse_go_duration(&long).unwrap_err();
        let s = e.to_string();
        assert!(s.len() < 200, "{s}");
        assert!(s.contains("Go duration"), "{s}");
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let now = SystemTime::now();
            let _ = parse_retry_after(&s, now);
            let _ = parse_retry_after_ms(&s);
            let _ = parse_go_duration(&s);
            let _ = parse_reset_time(&s, now);
        }

        #[test]
        fn go_duration_segments_add_up(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000, frac in 0u32..1000) {
            let v = format!("{h}h{m}m{s}.{frac:03}s");
            let want = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_millis(u64::from(frac));
            prop_assert_eq!(parse_go_duration(&v), Ok(want));
        }

        #[test]
        fn seconds_round_trip_and_cap(secs in any::<u64>(), cap_ms in 0u64..100_000) {
            let d = parse_retry_after(&secs.to_string(), SystemTime::now()).unwrap();
            prop_assert_eq!(d, Duration::from_secs(secs));
            let mut h = HeaderMap::new();
            h.insert("retry-after", HeaderValue::from_str(&secs.to_string()).unwrap());
            let hint = RetryHint::from_headers(&h).unwrap();
            prop_assert!(hint.capped(ms(cap_ms)) <= ms(cap_ms));
        }

        #[test]
        fn dates_never_give_negative_or_wrong_delays(now_s in 0u64..4_000_000_000, offset in -100_000i64..100_000) {
            let now = at(now_s);
            let target = now_s as i64 + offset;
            prop_assume!(target >= 0);
            let date = httpdate::fmt_http_date(at(target as u64));
            let d = parse_retry_after(&date, now).unwrap();
            prop_assert_eq!(d, Duration::from_secs(offset.max(0) as u64));
        }
    }
}
