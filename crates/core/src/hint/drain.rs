//! What an answer's headers say about the provider's limits: how long the
//! deployment (or key) that gave it should get no calls.

use std::time::{Duration, SystemTime};

use super::{RetryHint, parse_go_duration, parse_reset_time};
use http::{HeaderMap, StatusCode};

/// OpenAI's limits: (remaining, reset as a Go duration).
const OPENAI: [(&str, &str); 2] = [
    (
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
];

/// Anthropic's limits: (remaining, reset as an RFC 3339 time).
const ANTHROPIC: [(&str, &str); 4] = [
    (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ),
];

/// How long the member (or key) that gave this answer should get no calls,
/// from what the provider said; `None` when it said nothing that stops the
/// next call.
///
/// - A 429, 503 or 529 with a wait hint (`retry-after-ms`, `retry-after`, or
///   the reset of a spent limit; see `palisade_core::hint`): that wait. One
///   without any hint drains nothing — its failure penalty is enough.
/// - Any answer (a 200 too) saying a limit is spent —
///   `x-ratelimit-remaining-requests: 0` or `-tokens: 0` with its
///   `x-ratelimit-reset-*` (OpenAI, Go durations like `6m0s`), or
///   `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining: 0`
///   with its `-reset` (RFC 3339): until the latest such reset.
///
/// Headers that do not parse are skipped, never fatal.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::{HeaderMap, StatusCode};
/// use palisade_core::hint::provider_drain;
///
/// let mut h = HeaderMap::new();
/// h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
/// h.insert("x-ratelimit-reset-requests", "1m30s".parse().unwrap());
/// assert_eq!(provider_drain(StatusCode::OK, &h, SystemTime::now()), Some(Duration::from_secs(90)));
/// ```
pub fn provider_drain(
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    let refused = matches!(status.as_u16(), 429 | 503 | 529);
    let hinted = refused
        .then(|| RetryHint::from_headers_at(headers, now).map(|h| h.delay()))
        .flatten();
    let spent = |pairs: &[(&str, &str)], parse: &dyn Fn(&str) -> Option<Duration>| {
        pairs
            .iter()
            .filter(|(remaining, _)| {
                header(headers, remaining).and_then(|v| v.trim().parse::<u64>().ok()) == Some(0)
            })
            .filter_map(|(_, reset)| header(headers, reset).and_then(parse))
            .max()
    };
    let openai = spent(&OPENAI, &|v| parse_go_duration(v).ok());
    let anthropic = spent(&ANTHROPIC, &|v| parse_reset_time(v, now).ok());
    [hinted, openai, anthropic]
        .into_iter()
        .flatten()
        .max()
        .filter(|d| !d.is_zero())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn every_way_a_provider_says_its_limit_is_spent() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ok = StatusCode::OK;
        let secs = Duration::from_secs;
        // OpenAI: spent requests and tokens; the later reset wins.
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(provider_drain(ok, &h, now), Some(secs(360)));
        // Headroom left: nothing drains, whatever the resets say.
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "12"),
            ("x-ratelimit-reset-requests", "2s"),
        ]);
        assert_eq!(provider_drain(ok, &h, now), None);
        // Anthropic: RFC 3339 resets, from `now`.
        let h = headers(&[
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2023-11-14T22:13:40Z",
            ),
            ("anthropic-ratelimit-requests-remaining", "5"),
            ("anthropic-ratelimit-requests-reset", "2023-11-14T23:13:20Z"),
        ]);
        assert_eq!(provider_drain(ok, &h, now), Some(secs(20)));
        // A 429 with a hint waits it; without one, nothing drains.
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(
            provider_drain(StatusCode::TOO_MANY_REQUESTS, &h, now),
            Some(secs(7))
        );
        assert_eq!(
            provider_drain(StatusCode::OK, &h, now),
            None,
            "a 200's retry-after is no refusal"
        );
        assert_eq!(
            provider_drain(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), now),
            None
        );
        let h = headers(&[("retry-after-ms", "1500")]);
        assert_eq!(
            provider_drain(StatusCode::from_u16(529).unwrap_or_default(), &h, now),
            Some(Duration::from_millis(1500))
        );
        // Garbage is skipped.
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "soon"),
        ]);
        assert_eq!(provider_drain(ok, &h, now), None);
    }
}
