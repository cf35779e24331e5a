#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
//!
//! # Crates
//!
//! Each palisade crate is re-exported here as a module behind a same-named
//! feature (all on by default through `full`):
//!
//! - [`core`]: error kinds, the outcome classifier, retry hints, bodies
//! - `client` (feature `client`): the raw hyper client service
//! - `trace` (feature `trace`): trace-id / W3C traceparent propagation, OpenTelemetry GenAI spans and metrics
//! - `timeout` (feature `timeout`): first-byte, idle (SSE-aware) and total deadlines
//! - `retry` (feature `retry`): backoff that honours provider hints, a retry budget
//! - `ratelimit` (feature `ratelimit`): a GCRA token bucket shared by clones, by requests or weighted cost
//! - `schema` (feature `schema`): JSON Schema validation of request bodies (bundled OpenAI/Anthropic schemas), parse once
//! - `breaker` (feature `breaker`): a circuit breaker that records a stream's outcome when it ends
//! - `sse` (feature `sse`): the WHATWG `text/event-stream` decoder
//! - `providers` (feature `providers`): OpenAI and Anthropic wire types, typed
//!   stream events, aggregators
//! - `mock` (feature `mock`): the scriptable mock LLM upstream
//! - [`preset`] (feature `preset`): the recommended stack from one config
//!   struct, as a named, cloneable service
//!
//! # The recommended stack, and why in that order
//!
//! Outermost first: `trace → schema → total timeout → retry → rate limit →
//! breaker → per-attempt timeout → client`. (The preset adds, right above
//! the client, the decoding of answers compressed without being asked.)
//!
//! - **Total timeout outside retry**: it bounds the call with all its retries
//!   and backoffs. Inside, it would restart with every attempt and a caller
//!   could wait `max_attempts` times as long as configured.
//! - **Per-attempt timeout (first byte, idle) inside retry**: a first-byte
//!   timeout then fails one attempt, which retry classifies as retryable and
//!   tries again. Outside retry it would end the whole call at the first
//!   slow attempt.
//! - **Retry outside the breaker**: every attempt is counted by the breaker,
//!   and once it opens the next attempt fails at once with `CircuitOpen`,
//!   which is not retryable, so retries stop hammering a sick upstream.
//!   Retry *inside* the breaker would hide each failure behind a final
//!   success or failure and let one call send `max_attempts` requests to an
//!   upstream the breaker believes healthy.
//! - **Rate limit inside retry, outside the breaker**: each retry is admitted
//!   like a fresh call (a retry storm cannot exceed the limit), and the time
//!   a call waits for capacity, or a local `RateLimited` refusal, never
//!   counts against the upstream's health (slow calls, failure rate) as it
//!   would inside the breaker.
//! - **Schema outermost (after trace)**: a request that cannot succeed costs
//!   no retry, no rate-limit token and no breaker slot, and the body it parsed
//!   once is handed on for token estimation.
//!
//! [`preset::StackConfig`] assembles exactly this; by hand, with tower:
//!
//! ```
//! use palisade::{breaker::BreakerLayer, mock::MockUpstream, ratelimit::RateLimitLayer, retry::RetryLayer, timeout::TimeoutLayer};
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//!
//! let breaker = BreakerLayer::builder().build().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new().total(Duration::from_secs(300)))
//!     .layer(RetryLayer::new().max_attempts(3))
//!     .layer(RateLimitLayer::try_new(20, 10.0).unwrap().wait(Duration::from_secs(2)))
//!     .layer(breaker)
//!     .layer(TimeoutLayer::new().first_byte(Duration::from_secs(30)).idle(Duration::from_secs(15)).sse_aware(true))
//!     .service(MockUpstream::new());
//! # let _ = svc;
//! ```

#[doc(inline)]
pub use palisade_core as core;

#[cfg(feature = "breaker")]
#[doc(inline)]
pub use palisade_breaker as breaker;

#[cfg(feature = "client")]
#[doc(inline)]
pub use palisade_client as client;

#[cfg(feature = "mock")]
#[doc(inline)]
pub use palisade_mock as mock;

#[cfg(feature = "providers")]
#[doc(inline)]
pub use palisade_providers as providers;

#[cfg(feature = "ratelimit")]
#[doc(inline)]
pub use palisade_ratelimit as ratelimit;

#[cfg(feature = "retry")]
#[doc(inline)]
pub use palisade_retry as retry;

#[cfg(feature = "schema")]
#[doc(inline)]
pub use palisade_schema as schema;

#[cfg(feature = "preset")]
pub mod preset;

#[cfg(feature = "sse")]
#[doc(inline)]
pub use palisade_sse as sse;

#[cfg(feature = "timeout")]
#[doc(inline)]
pub use palisade_timeout as timeout;

#[cfg(feature = "trace")]
#[doc(inline)]
pub use palisade_trace as trace;
