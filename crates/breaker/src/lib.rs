//! A circuit breaker for LLM calls that understands streams.
//!
//! [`BreakerLayer`] stops calling an upstream that keeps failing, lets a few
//! probes through after a while, and closes again when they succeed:
//! `Closed → Open → Half-open → Closed`.
//!
//! - **Trip policies**: a failure rate over a **count** window (a ring buffer
//!   of the last *n* outcomes: O(1) per call, old outcomes evicted one by
//!   one) or a **time** window (one-second buckets), both with
//!   `minimum_calls`; and/or a number of consecutive failures. Calls slower
//!   than a threshold can count as failures.
//! - **Streams**: a successful response's outcome is recorded when its body
//!   **ends**: a 200 whose stream then errors, stalls (with a timeout layer
//!   inside) or carries an in-band error event (`event: error`,
//!   `data: {"error":…}`) is a failure. A stream the caller drops is not
//!   recorded: the upstream did nothing wrong.
//! - **Half-open**: `half_open_calls` probes pass; all must succeed to close,
//!   one failure reopens (for longer, with [`BreakerBuilder::open_backoff`]).
//!   A dropped probe gives its slot back, so a cancelled probe never wedges
//!   the breaker half-open.
//! - **Refusal**: an open circuit answers at once with
//!   `palisade_core::CircuitOpen` carrying the time left; it is an error
//!   *future* from `call`, and `poll_ready` only reflects the inner service,
//!   so it never blocks.
//! - **What counts as a failure** is the shared classifier
//!   (`LlmClassifier`: transport errors, timeouts, 5xx and 529; 429 only if
//!   configured; other 4xx never), replaceable with
//!   [`BreakerLayer::classifier`].
//! - The closed fast path takes no lock: one atomic load to admit; a
//!   success into a count window full of successes only reads (writing `ok`
//!   over `ok` would not change the ring, so it is skipped), and anything
//!   else is a few atomic updates. The counters written per outcome sit on
//!   their own cache line. Transitions are `tracing` events and go to an
//!   optional hook; [`BreakerHandle`] reads the state and forces it.
//! - The state machine is model-checked with loom (`tests/loom.rs`: a trip
//!   happens once however failures race, concurrent probes close it once, a
//!   dropped probe never wedges half-open).
//! - **Keyed** breakers ([`KeyedBreakerLayer`]): one circuit per key (host,
//!   model, tenant) from a closure over the request, memory bounded.
//!
//! | setting | default |
//! |---|---|
//! | failure rate | 0.5 over a count window of 20 calls, `minimum_calls` 10 |
//! | consecutive failures | off |
//! | slow call | off |
//! | open for | 30 s (× `open_backoff` multiplier per trip in a row, capped; default × 1) |
//! | half-open probes | 2 |
//!
//! In the recommended stack the breaker sits below retry and the rate
//! limiter and above the per-attempt timeout: every attempt is counted,
//! timeouts are failures, and an open circuit stops the retries.
//!
//! # Example
//!
//! ```
//! use palisade_breaker::{BreakerLayer, State, Window};
//! use palisade_mock::{MockUpstream, Reply};
//! use std::time::Duration;
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = BreakerLayer::builder()
//!     .consecutive_failures(3)
//!     .open_for(Duration::from_secs(10))
//!     .build()
//!     .unwrap();
//! let mock = MockUpstream::new();
//! mock.set_default(Reply::status(503));
//! let svc = layer.layer(mock.clone());
//! let req = || http::Request::post("/v1/chat/completions")
//!     .body(palisade_core::RequestBody::from(r#"{"model":"m","messages":[]}"#)).unwrap();
//! for _ in 0..3 {
//!     let _ = svc.clone().oneshot(req()).await;
//! }
//! assert_eq!(layer.handle().state(), State::Open);
//! let err = svc.oneshot(req()).await.unwrap_err();
//! assert!(err.is::<palisade_core::CircuitOpen>());
//! assert_eq!(mock.request_count(), 3, "the fourth call never left");
//! # }
//! ```

mod body;
mod circuit;
mod config;
mod future;
mod keyed;
mod layer;
mod service;
mod sync;

pub use body::BreakerBody;
pub use circuit::{State, Transition};
pub use config::{
    BreakerBuilder, ConfigError, DEFAULT_FAILURE_RATE, DEFAULT_HALF_OPEN_CALLS,
    DEFAULT_MINIMUM_CALLS, DEFAULT_OPEN_FOR, DEFAULT_WINDOW_CALLS, Window,
};
pub use future::ResponseFuture;
pub use keyed::{DEFAULT_MAX_KEYS, KeyedBreaker, KeyedBreakerLayer};
pub use layer::{BreakerHandle, BreakerLayer};
pub use palisade_core::CircuitOpen;
pub use service::Breaker;
