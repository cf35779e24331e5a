#![doc = include_str!("../README.md")]
//!
//! # Crates
//!
//! Each palisade crate is re-exported here as a module behind a same-named
//! feature (all on by default through `full`):
//!
//! - [`core`]: error kinds, the outcome classifier, retry hints, bodies
//! - `client` (feature `client`): the raw hyper client service
//! - `mock` (feature `mock`): the scriptable mock LLM upstream
//!
//! # The recommended stack
//!
//! Outermost first: `trace → schema → total timeout → retry → rate limit →
//! breaker → per-attempt timeout → client`. The layers arrive with their own
//! crates; the order and its reasons are documented here as they land.

pub use palisade_core as core;

#[cfg(feature = "client")]
pub use palisade_client as client;

#[cfg(feature = "mock")]
pub use palisade_mock as mock;
