//! Token-bucket rate limiting for LLM calls, shared across clones.
//!
//! [`RateLimitLayer`] keeps one bucket (capacity = burst, refill rate) for
//! every clone of the layer and every service it wraps, as GCRA: a single
//! atomic updated by compare-and-swap, no lock, no background task.
//!
//! - **Reject** (default): a call that finds the bucket short fails at once
//!   with `palisade_core::RateLimited`, which says when capacity returns.
//! - **Wait** up to `max_wait`: the call reserves its units at once and waits
//!   for them, so waiters are served in arrival order (FIFO); a longer wait
//!   is refused at once with the same error. A waiting call that is dropped
//!   gives its reservation back.
//! - **Weighted cost**: a request can cost `n` units ([`RequestCost`]), so
//!   one limiter enforces requests per minute and another tokens per minute.
//!   A request costing more than the capacity fails at once (it could never
//!   pass) with a `RateLimited` whose `retry_after` is `None`.
//!
//! In the recommended stack the limiter sits below retry and above the
//! breaker: each attempt is admitted like a fresh call, and calls the breaker
//! refuses never reach it … nor spend its tokens.
//!
//! - **Keyed** limits ([`KeyedRateLimitLayer`]): a bucket per key (API key,
//!   tenant, model) from a closure over the request, memory bounded.
//!
//! - **Tokens per minute** ([`TokenLimitLayer`]): each call reserves its
//!   estimate (prompt counted with the `o200k_base` tokenizer, binary
//!   payloads at a fixed cost, plus the output budget:
//!   `palisade_core::tokens`), settled with the usage the upstream reports —
//!   for a stream, at its terminator (`data: [DONE]`, `message_stop`), so a
//!   caller that stops reading there settles too.
//! - **Redis** ([`RedisRateLimitLayer`], feature `redis`, on by default): one
//!   limit for a fleet of processes, GCRA in one Lua script on Redis's clock,
//!   failing open or closed within a time budget when Redis is unreachable.
//!
//! # Example
//!
//! ```
//! use palisade_ratelimit::RateLimitLayer;
//! use palisade_core::RateLimited;
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = RateLimitLayer::try_new(2, 1.0).unwrap(); // burst 2, 1 per second
//! let svc = layer.layer(tower::service_fn(|_: http::Request<()>| async {
//!     Ok::<_, std::convert::Infallible>("ok")
//! }));
//! assert!(svc.clone().oneshot(http::Request::new(())).await.is_ok());
//! assert!(svc.clone().oneshot(http::Request::new(())).await.is_ok());
//! let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
//! let limited = err.downcast_ref::<RateLimited>().unwrap();
//! assert_eq!(limited.retry_after(), Some(std::time::Duration::from_secs(1)));
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bucket;
mod future;
mod keyed;
mod layer;
#[cfg(feature = "redis")]
mod redis;
mod service;
mod sync;
mod tokens;

pub use bucket::Bucket;
pub use future::ResponseFuture;
pub use keyed::{DEFAULT_MAX_KEYS, KeyedRateLimit, KeyedRateLimitLayer};
pub use layer::{ConfigError, PerRequest, RateLimitLayer, RequestCost};
pub use palisade_core::RateLimited;
/// The Redis connection the limits use, shared with other state kept in
/// the same Redis (re-exported from palisade-core).
#[cfg(feature = "redis")]
pub use palisade_core::redis::RedisConnection;
#[cfg(feature = "redis")]
pub use redis::{BackendUnavailable, ErrorHook, RedisFuture, RedisRateLimit, RedisRateLimitLayer};
pub use service::RateLimit;
pub use tokens::{Reconciled, TokenFuture, TokenLimit, TokenLimitLayer};
