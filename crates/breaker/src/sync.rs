//! The synchronisation primitives of the circuit: std's, or loom's when
//! built with `--cfg palisade_loom` for the model checks in `tests/loom.rs`.

#[cfg(palisade_loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(palisade_loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

#[cfg(not(palisade_loom))]
pub(crate) use std::sync::Mutex;
#[cfg(not(palisade_loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
