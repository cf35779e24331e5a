//! The bounded, process-wide cache of token counts: 128-bit key → count.
//!
//! A set-associative table: [`SETS`] sets of [`WAYS`] entries, each set
//! behind its own `std::sync::Mutex` held only to compare four keys or to
//! write one (never while tokenizing). A key picks its set from its low
//! bits; within a set entries are kept most recently used first, and a new
//! key evicts the least recently used one. Memory is fixed when the table
//! is built: `SETS × WAYS` keys and counts (about 0.1 MiB).

use std::fmt;
use std::sync::{Mutex, PoisonError};

/// Sets in the table (a power of two).
const SETS: usize = 1024;

/// Entries per set.
const WAYS: usize = 4;

/// How many counts the table holds at most.
pub(super) const CAPACITY: usize = SETS * WAYS;

/// One set: up to [`WAYS`] keys and their counts, most recently used first.
#[derive(Clone, Copy, Default)]
struct Set {
    keys: [u128; WAYS],
    counts: [u32; WAYS],
    len: usize,
}

/// A fixed-size table of token counts by content hash; see the module docs.
pub(super) struct CountCache {
    sets: Box<[Mutex<Set>]>,
}

impl fmt::Debug for CountCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountCache")
            .field("capacity", &CAPACITY)
            .finish_non_exhaustive()
    }
}

impl CountCache {
    /// An empty table.
    pub(super) fn new() -> Self {
        Self {
            sets: (0..SETS).map(|_| Mutex::new(Set::default())).collect(),
        }
    }

    /// The count stored for `key`, or `count()`'s, stored for next time.
    ///
    /// No lock is held while `count` runs: two threads missing the same key
    /// at once both count it and store the same value.
    pub(super) fn get_or_count(&self, key: u128, count: impl FnOnce() -> u32) -> u32 {
        let set = &self.sets[key as usize % SETS];
        {
            let mut s = set.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = s.keys[..s.len].iter().position(|&k| k == key) {
                let n = s.counts[i];
                // Most recently used first.
                s.keys[..=i].rotate_right(1);
                s.counts[..=i].rotate_right(1);
                return n;
            }
        }
        let n = count();
        let mut s = set.lock().unwrap_or_else(PoisonError::into_inner);
        if !s.keys[..s.len].contains(&key) {
            // The least recently used entry (the last) falls off when full.
            s.len = (s.len + 1).min(WAYS);
            let len = s.len;
            s.keys[..len].rotate_right(1);
            s.counts[..len].rotate_right(1);
            s.keys[0] = key;
            s.counts[0] = n;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_count_is_returned_without_counting() {
        let cache = CountCache::new();
        assert_eq!(cache.get_or_count(7, || 3), 3);
        assert_eq!(cache.get_or_count(7, || unreachable!()), 3);
    }

    #[test]
    fn a_full_set_evicts_its_least_recently_used_key() {
        let cache = CountCache::new();
        // Keys of one set: equal modulo SETS.
        let key = |i: u128| i * SETS as u128 + 5;
        for i in 0..WAYS as u128 {
            cache.get_or_count(key(i), || i as u32);
        }
        // Touch the oldest: now key(1) is the least recently used.
        assert_eq!(cache.get_or_count(key(0), || unreachable!()), 0);
        cache.get_or_count(key(99), || 99);
        let mut recounted = false;
        assert_eq!(
            cache.get_or_count(key(1), || {
                recounted = true;
                1
            }),
            1
        );
        assert!(recounted, "key(1) was evicted");
        for i in [0, 99] {
            assert_eq!(cache.get_or_count(key(i), || unreachable!()), i as u32);
        }
    }

    #[test]
    fn the_module_docs_state_the_capacity() {
        // `tokens`' module docs say 4,096 counts in 1,024 sets of four.
        assert_eq!((CAPACITY, SETS, WAYS), (4096, 1024, 4));
    }

    #[test]
    fn memory_is_bounded_by_the_capacity() {
        let cache = CountCache::new();
        for k in 0..(10 * CAPACITY) as u128 {
            cache.get_or_count(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), || 1);
        }
        let held: usize = cache
            .sets
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len)
            .sum();
        assert_eq!(held, CAPACITY);
    }
}
