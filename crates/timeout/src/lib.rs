//! Deadlines for LLM calls that cover the streamed body: first byte, idle
//! (optionally SSE-aware) and total.
//!
//! An LLM call can fail slowly in three ways: the upstream accepts the request
//! and never answers; it starts a stream and goes silent; or it streams so
//! slowly that the whole exchange takes forever. [`TimeoutLayer`] has one
//! deadline for each:
//!
//! | deadline | counts from | to | error |
//! |---|---|---|---|
//! | first byte | the first poll of the call | the response headers | `Elapsed` with `Budget::FirstByte` |
//! | idle | the last progress in the body | the next progress | `Elapsed` with `Budget::Idle`, on the body |
//! | total | the first poll of the call | the end of the body | `Elapsed` with `Budget::Total`, on the call or the body |
//!
//! With [`TimeoutLayer::sse_aware`], only SSE events that carry data count as
//! progress in a `text/event-stream` answer: a stream that sends nothing but
//! `: keep-alive` comments or `event: ping` is idle, and is ended (any other
//! answer progresses with every frame). The event scan is the response's
//! one [`palisade_sse::SharedScan`], shared with a breaker outside. (Counting every frame, a dead stream
//! kept alive by heartbeats never times out: a known failure of gateways that
//! time out on bytes.)
//!
//! The connect deadline belongs to the client (`palisade-client`).
//!
//! In the recommended stack the layer appears twice: a **total** deadline near
//! the top (`trace → schema → total timeout → retry → …`) bounds the call with
//! all its retries, and a **first-byte + idle** deadline just above the client
//! (`… → breaker → per-attempt timeout → client`) bounds each attempt, so that
//! retry sees a first-byte timeout as a retryable failure and the breaker
//! counts it.
//!
//! # Example
//!
//! ```
//! use palisade_timeout::{TimeoutLayer, Elapsed};
//! use palisade_core::Budget;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // An upstream that never answers.
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new().first_byte(Duration::from_secs(30)))
//!     .service_fn(|_req: http::Request<()>| async {
//!         std::future::pending::<Result<http::Response<String>, std::convert::Infallible>>().await
//!     });
//! let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
//! let elapsed = err.downcast_ref::<Elapsed>().unwrap();
//! assert_eq!(elapsed.budget(), Budget::FirstByte);
//! # }
//! ```
//!
//! # Errors
//!
//! Expiry is [`Elapsed`] (defined in `palisade-core`, re-exported here):
//! [`Elapsed::budget`] says which deadline, [`Elapsed::after`] how long it
//! was, and `palisade_core::ErrorKind::of` says `Timeout`. Errors of the inner
//! service and body are passed on, boxed.
//!
//! # Differences from `tower::timeout` and tower-http's body timeouts
//!
//! - `tower::timeout::Timeout` bounds the response future only: a stream that
//!   stalls after its headers is never caught. This layer wraps the body too.
//! - tower-http's `TimeoutBody` bounds the gap between frames, but any frame
//!   resets it, heartbeats included, and it has no total deadline; its
//!   `Timeout` answers a 408 *response* instead of an error the retry layer
//!   and breaker can classify.
//! - One timer per call, armed only when something is actually pending and
//!   re-armed lazily (no timer reset per frame).

mod body;
mod future;
mod layer;
mod service;

pub use body::TimeoutBody;
pub use future::ResponseFuture;
pub use layer::TimeoutLayer;
pub use palisade_core::{Budget, Elapsed};
pub use service::Timeout;
