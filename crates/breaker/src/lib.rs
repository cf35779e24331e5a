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
//! - **Fleet** ([`BreakerBuilder::redis`], feature `redis`, on by
//!   default): processes whose breakers share a Redis key share one
//!   circuit. A trip in one opens it in all (read every 250 ms by one
//!   background task, nothing per call); once the open time is over, one
//!   process takes a probe lease and probes for the fleet while the others
//!   wait for its outcome. Redis unreachable: each circuit acts on its own
//!   calls. See [*Sharing a circuit*](#sharing-a-circuit-through-redis).
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
//! # Sharing a circuit through Redis
//!
//! [`BreakerBuilder::redis`]`(url, key)` keeps four keys under `key`, each
//! written by one atomic script on Redis's clock: `key:open` (lives for the
//! fleet's open time; its value numbers the trip), `key:trips` (the trip
//! counter), `key:probe` (the lease of the one process probing) and
//! `key:closed` (the last trip closed by probes).
//!
//! - A circuit opened by its own calls (or by
//!   [`BreakerHandle::force_open`]) writes `key:open`, in the background.
//! - One background task per circuit reads `key:open` every
//!   [`redis_poll`](BreakerBuilder::redis_poll) (250 ms) while the circuit
//!   is closed, and opens it for what is left of the fleet's open time. It
//!   starts when the layer is built on a tokio runtime, else at the first
//!   call (whose own call is then not held by an open fleet). The
//!   call path reads only the local circuit: nothing per call touches Redis.
//! - Once its open time is over, a shared circuit does not go half-open on
//!   its own: its task asks Redis, and only the process that gets the
//!   probe lease goes half-open and sends its `half_open_calls` probes. The
//!   others stay open (refusing with a short `retry after`) until the
//!   prober's outcome reaches them: closed, or open again. The prober
//!   renews its lease every poll; one that dies is replaced once the lease
//!   ([`probe_lease`](BreakerBuilder::probe_lease), 10 s) runs out, and
//!   one that gets no call to probe with gives the lease up after half of
//!   it, for a process with calls to take.
//! - Redis unreachable or slow (each exchange bounded by
//!   [`redis_timeout`](BreakerBuilder::redis_timeout), 50 ms): calls never
//!   wait on it. A circuit acts on its own calls; one whose open time is
//!   over probes on its own after a grace of two polls plus the timeout.
//!   Each failure is logged and told to
//!   [`on_redis_error`](BreakerBuilder::on_redis_error).
//! - A Redis restarted empty holds no open circuit: it opens nothing and
//!   refuses nothing on its own.
//! - [`BreakerHandle::force_closed`] closes this process's circuit only,
//!   and while the fleet's `key:open` lives, the next poll opens it again.
//!   The growing open time of [`open_backoff`](BreakerBuilder::open_backoff)
//!   counts each process's own trips: a circuit opened from the fleet opens
//!   for what is left of the fleet's time.
//! - Redis slower than its timeout for two polls in a row: each circuit
//!   past its open time probes on its own, as without Redis (so up to
//!   `half_open_calls` probes per process, not per fleet).
//!   Keyed breakers are not shared (building one with `redis` fails).
//!
//! Tested against a real `redis-server` in `tests/redis.rs` (each
//! "process" a circuit of its own in the test process; the gateway's tests
//! run real processes): a trip in one of three opens all, and the fleet sends one probe; a dead
//! prober is replaced; a prober with no calls gives its lease up; a Redis
//! that never answers delays no call; a restarted Redis opens nothing.
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
#[cfg(feature = "redis")]
mod fleet;
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
#[cfg(feature = "redis")]
pub use fleet::{DEFAULT_PROBE_LEASE, DEFAULT_REDIS_POLL, DEFAULT_REDIS_TIMEOUT};
pub use future::ResponseFuture;
pub use keyed::{DEFAULT_MAX_KEYS, KeyedBreaker, KeyedBreakerLayer};
pub use layer::{BreakerHandle, BreakerLayer};
pub use palisade_core::CircuitOpen;
pub use service::Breaker;
