//! Many deployments of one model behind one tower [`Service`]: regions,
//! Azure resources, vLLM replicas. (Several keys of one account or
//! deployment, each with its own limit state, are palisade-client's
//! `ClientBuilder::key_pool`, below a member's retry layer.)
//!
//! [`Balance`] holds [`Member`]s that are full stacks — each with its own
//! breaker, limits and per-attempt timeout — and sends each call to one of
//! them:
//!
//! - **Least loaded** ([`Strategy::LeastLoaded`], the default): the power
//!   of two choices over a cost that counts a member's calls in flight
//!   (until their bodies end, not their headers), a peak-EWMA of its time to
//!   first *content* event (not to headers: a stream's role-only first
//!   chunk or `message_start` does not count), and a penalty for its recent
//!   429s, 5xx, in-band errors, broken and truncated streams. A member that
//!   fails fast gets no latency sample from its failures, only penalty, so
//!   it does not attract traffic — the trap of latency-only balancers
//!   (tower's own `PeakEwma` counts a fast 503 as a fast answer).
//! - **Weighted** ([`Strategy::Weighted`]): at random in proportion to
//!   [`Member::weight`] (floats).
//! - **Round robin** ([`Strategy::RoundRobin`]).
//!
//! Whatever the strategy, a member that cannot take a call is not picked:
//! its circuit is open ([`Member::breaker`]), the provider said its limit is
//! spent (drained until the reset the provider named, read from every
//! answer by [`provider_drain`]: `x-ratelimit-remaining-*` and
//! `x-ratelimit-reset-*`, `anthropic-ratelimit-*-remaining` / `-reset`, and
//! a 429's or 503's wait hint), or a [`Member::gate`] of the user's says
//! so. When no member can take the call, the call waits up to
//! [`BalanceBuilder::max_wait`] for the first to come back, or fails at once
//! with [`NoMember`], which names each member, why and for how long; its
//! source is a `palisade_core::RateLimited` (or `CircuitOpen` when every
//! circuit is open) carrying the earliest time back, so the gateway answers
//! 429 (or 503) with a `Retry-After`.
//!
//! A member's 429, or its own stack's refusal (an open breaker, a local
//! limit), sends the call to another member that can take it at once — no
//! sleep, no retry attempt spent (a copy of the request is kept for it);
//! with none left, the last refusal is the answer.
//!
//! Each call clones its member's service and awaits its readiness in the
//! call's future, so [`Balance::poll_ready`](tower_service::Service::poll_ready)
//! is always ready and one slow member never holds the others' calls.
//!
//! What `tower::balance` gives and why it is not used as the core: `p2c`
//! keeps members in a `ReadyCache` and picks among those whose `poll_ready`
//! said yes — but our members are ready at once and refuse in `call` (an
//! open breaker, a limiter's wait); its load is read through
//! `tower::load::Load` from the service alone, with no request (so no
//! session affinity); and its `PeakEwma` times the response headers, not
//! the first content event. `tower::discover` is not used: the members
//! are fixed when a balance is built. The bench (`cargo bench -p palisade-balance`)
//! runs `p2c` beside this crate over the same members.
//!
//! **Session affinity** (opt-in, [`BalanceBuilder::affinity`]): calls of
//! one session (a header such as `x-session-id`, else `prompt_cache_key`,
//! `user` or `metadata.user_id`) go to one member, chosen by rendezvous
//! hashing, while it can take them, to keep the provider's prompt cache
//! warm.
//!
//! **Hedging** (opt-in, [`BalanceBuilder::hedge_after`]): a call with no
//! content event after a set time gets a second attempt on another member;
//! the first to reach content is the answer, the other is cancelled, and
//! [`BalanceBuilder::hedge_budget`] bounds hedges to a share of calls
//! (default a tenth). Nothing reaches the caller before the winner is
//! known. Code racing members itself (a gateway's tier) reads an answer
//! ahead to its first content with [`BalancedBody::poll_content`].
//!
//! Member state for metrics: [`Balance::members`] and [`Balance::hedges`].

mod balance;
mod body;
mod error;
mod hedge;
mod member;

pub use balance::{Balance, BalanceBuilder, Order, ResponseFuture, Strategy};
pub use body::{BalancedBody, Reached};
pub use error::{ConfigError, NoMember, Unavailable, Why};
pub use member::{Member, MemberLoad, MemberStats, Tracking};
pub use palisade_core::hint::provider_drain;

#[cfg(doc)]
use tower_service::Service;
