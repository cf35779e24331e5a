//! What every palisade layer shares: error kinds, outcome classification,
//! retry-hint parsing and body helpers.
//!
//! palisade is a set of tower middleware for calling LLM HTTP APIs. Each
//! resilience concern is its own layer crate; none depends on another. What
//! more than one of them needs lives here:
//!
//! - [`ErrorKind`] tells what any boxed error in a stack is (timeout, rate
//!   limited, circuit open, invalid request, upstream status, transport) by
//!   walking its source chain, and the leaf errors the layers raise
//!   ([`Elapsed`], [`RateLimited`], [`CircuitOpen`], [`Rejected`],
//!   [`TransportError`] …) are defined here so that any layer can recognise them.
//! - [`classify`]: the one policy that says whether an outcome may be retried
//!   and whether it counts against the upstream's health, shared by the retry
//!   layer and the circuit breaker.
//! - [`hint`]: every retry hint the providers send (`Retry-After`,
//!   `retry-after-ms`, OpenAI's and Anthropic's reset headers).
//! - [`keyed`]: the bounded per-key map keyed layers share.
//! - [`body`]: the replayable [`RequestBody`], the request body
//!   [parsed once](ParsedBody) and shared by every layer, bounded reading.
//!
//! # Example
//!
//! ```
//! use palisade_core::classify::{ClassifyOutcome, LlmClassifier, Outcome};
//! use palisade_core::hint::RetryHint;
//!
//! let res = http::Response::builder()
//!     .status(529)
//!     .header("retry-after", "3")
//!     .body(())
//!     .unwrap();
//! let class = LlmClassifier::new().classify(Outcome::response(&res));
//! assert!(class.is_retryable() && class.reason().is_overloaded());
//! let wait = RetryHint::from_headers(res.headers()).map(|h| h.delay());
//! assert_eq!(wait, Some(std::time::Duration::from_secs(3)));
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod classify;
mod error;
pub mod hint;
pub mod keyed;
#[cfg(feature = "redis")]
pub mod redis;
mod service;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod tokens;

pub use body::{ParsedBody, RequestBody, Shape, ShapeError};
pub use error::{
    BodyTooLarge, BoxError, Budget, CircuitOpen, Elapsed, ErrorKind, InvalidOutput, RateLimited,
    Rejected, TransportError, TransportKind, UpstreamStatus, Violation, caller_status, chain, find,
    retry_after_header_secs,
};
pub use service::{BoxLlmBody, BoxLlmService, LlmService};

/// In a request's extensions: a rate-limited answer (a 429, or what the
/// classifier calls rate limited) is handed back at once rather than
/// retried after its wait — the caller has another deployment or key to
/// send the call to without waiting (a balance with another member that
/// can take it). palisade-retry honours it, and [`passing_on`]; the
/// gateway's tiers set it while another member is left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassOnRateLimit;

thread_local! {
    static PASSING_ON: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the call being polled on this thread should hand a
/// rate-limited answer back at once ([`PassOnRateLimit`] without touching
/// the request): set by [`with_passing_on`] around polling a call — what
/// palisade-balance does while another member can take it, with no
/// allocation per call. Only code polled within that poll sees it (a layer
/// that moves the call to another task, like `tower::buffer`, does not,
/// and its retry layer then waits as usual).
#[inline]
pub fn passing_on() -> bool {
    PASSING_ON.with(std::cell::Cell::get)
}

/// Runs `poll` (a call's poll) with [`passing_on`] set to `on`, restoring
/// the previous value after, also when it panics.
#[inline]
pub fn with_passing_on<T>(on: bool, poll: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0;
            PASSING_ON.with(|c| c.set(previous));
        }
    }
    let _restore = Restore(PASSING_ON.with(|c| c.replace(on)));
    poll()
}
