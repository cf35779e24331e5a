//! Retries for LLM calls that honour what the provider says.
//!
//! [`RetryLayer`] is a ready-to-use policy — no `tower::retry::Policy` to
//! write — with exponential backoff and full jitter, `max_attempts` and an
//! optional `max_elapsed`. It reads every retry hint the providers send
//! (`retry-after-ms`, `Retry-After` in seconds or as an HTTP-date, OpenAI's
//! `x-ratelimit-reset-*` Go durations, Anthropic's RFC 3339
//! `anthropic-ratelimit-*-reset`) from the latest attempt, cuts it to
//! `max_delay`, and gives up at once with the upstream's own answer when the
//! hint is longer than the time left. An optional [`RetryBudget`], shared by
//! every clone, keeps a failing fleet from multiplying its load.
//!
//! What is retryable is the shared classifier of `palisade-core`
//! (`LlmClassifier` by default, replaceable with
//! [`RetryLayer::classifier`]): the same policy the circuit breaker uses.
//!
//! In the recommended stack retry sits below the total timeout and above the
//! rate limiter and the breaker (`… → total timeout → retry → rate limit →
//! breaker → per-attempt timeout → client`): each attempt is rate limited and
//! counted by the breaker, a breaker that opens stops the retries (an open
//! circuit is not retryable), and the total timeout bounds them all.
//!
//! A request can ask for less: [`MaxAttempts`] in its extensions caps its
//! attempts, and `palisade_core::PassOnRateLimit` (or
//! `palisade_core::passing_on`, set while a balance polls the call) hands
//! a rate-limited answer back at once instead of waiting out its hint (the
//! balance has another member to send it to).
//!
//! Every retry is a `tracing` event (`attempt`, `next_attempt`, `delay_ms`,
//! `reason`); so is every decision not to retry a retryable outcome.
//!
//! # Example
//!
//! ```
//! use palisade_mock::{MockUpstream, Reply};
//! use palisade_retry::RetryLayer;
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let mock = MockUpstream::new();
//! mock.push(Reply::status(503));
//! mock.push(Reply::status(429).header("retry-after", "2"));
//! let svc = RetryLayer::new().layer(mock.clone());
//! let req = http::Request::post("/v1/chat/completions").body(palisade_core::RequestBody::from(
//!     r#"{"model":"mock","messages":[{"role":"user","content":"hi"}]}"#,
//! )).unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(mock.request_count(), 3);
//! # }
//! ```
//!
//! # Errors
//!
//! The last attempt's own error or response is returned when retries end.
//! When the budget refuses a retry of an error, that error is wrapped in
//! [`BudgetExhausted`], which says so.
//!
//! # Differences from `tower::retry`
//!
//! - No policy to write: backoff, jitter, hints, budget and classification
//!   are built in; the classifier is replaceable.
//! - Hints come from the response (`tower::retry` has no notion of them).
//! - The budget is lock-free and follows tokio's clock, so it can be tested
//!   under `tokio::time::pause()`.

mod budget;
mod error;
mod future;
mod layer;
mod service;

pub use budget::RetryBudget;
pub use error::BudgetExhausted;
pub use future::{Attempts, MaxAttempts, ResponseFuture};
pub use layer::{
    DEFAULT_BASE_DELAY, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_DELAY, DEFAULT_STALE_RESENDS, RetryEvent,
    RetryLayer,
};
pub use service::Retry;
