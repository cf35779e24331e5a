//! The atomics of the bucket: std's, or loom's when built with
//! `--cfg palisade_loom` for the model checks in `bucket.rs`.

#[cfg(palisade_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(palisade_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
