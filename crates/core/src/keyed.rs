//! [`KeyedMap`]: per-key shared state with bounded memory.
//!
//! Keyed layers (a circuit per host, a bucket per API key or tenant) need a
//! map from key to shared state that cannot grow without bound however many
//! keys pass through. This is that map, shared by those layers:
//!
//! - at most `max_keys` entries;
//! - when it is full, entries the layer calls *idle* (a closed circuit, a full
//!   bucket: nothing worth remembering) and that nobody holds are evicted in
//!   one scan; after a scan that freed nothing, the next waits `max_keys`
//!   misses, so fruitless scans cost amortized O(1) per miss;
//! - if none can be evicted, the key is served by one shared *overflow*
//!   entry instead of a new one, which is strict (never more lenient than a
//!   key of its own) and bounded.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// A bounded map from key to shared state; see the module docs.
///
/// # Example
///
/// ```
/// use palisade_core::keyed::KeyedMap;
/// use std::sync::atomic::AtomicU64;
///
/// let map: KeyedMap<String, AtomicU64> = KeyedMap::new(2, || AtomicU64::new(0), |_| true);
/// let a = map.get(&"a".to_owned());
/// let b = map.get(&"a".to_owned());
/// assert!(std::sync::Arc::ptr_eq(&a, &b));
/// ```
pub struct KeyedMap<K, V> {
    map: RwLock<HashMap<K, Arc<V>>>,
    max_keys: usize,
    make: Box<dyn Fn() -> V + Send + Sync>,
    idle: Box<dyn Fn(&V) -> bool + Send + Sync>,
    overflow: Arc<V>,
    /// Misses to wait before the next scan (after a fruitless one).
    scan_in: AtomicUsize,
}

impl<K, V> fmt::Debug for KeyedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedMap")
            .field("max_keys", &self.max_keys)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<K, V> KeyedMap<K, V> {
    /// A map of at most `max_keys` entries (at least 1), each made by
    /// `make`; `idle` says which entries may be forgotten.
    pub fn new(
        max_keys: usize,
        make: impl Fn() -> V + Send + Sync + 'static,
        idle: impl Fn(&V) -> bool + Send + Sync + 'static,
    ) -> Self {
        let overflow = Arc::new(make());
        Self {
            map: RwLock::new(HashMap::new()),
            max_keys: max_keys.max(1),
            make: Box::new(make),
            idle: Box::new(idle),
            overflow,
            scan_in: AtomicUsize::new(0),
        }
    }

    /// How many keys have an entry of their own.
    pub fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when no key has an entry yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry shared by keys that found the map full.
    pub fn overflow(&self) -> &Arc<V> {
        &self.overflow
    }
}

impl<K: Eq + Hash + Clone, V> KeyedMap<K, V> {
    /// The entry of `key`, made if needed (or the overflow entry; see the
    /// module docs).
    pub fn get(&self, key: &K) -> Arc<V> {
        if let Some(v) = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return v.clone();
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = map.get(key) {
            return v.clone();
        }
        if map.len() >= self.max_keys {
            let wait = self.scan_in.load(Ordering::Relaxed);
            if wait == 0 {
                map.retain(|_, v| Arc::strong_count(v) > 1 || !(self.idle)(v));
                if map.len() >= self.max_keys {
                    // Fruitless: do not scan again for a while.
                    self.scan_in.store(self.max_keys, Ordering::Relaxed);
                }
            } else {
                self.scan_in.store(wait - 1, Ordering::Relaxed);
            }
            if map.len() >= self.max_keys {
                return self.overflow.clone();
            }
        }
        let v = Arc::new((self.make)());
        map.insert(key.clone(), v.clone());
        v
    }
}

impl<K: Eq + Hash, V> KeyedMap<K, V> {
    /// The entry of `key`, if it has one of its own.
    pub fn peek(&self, key: &K) -> Option<Arc<V>> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn bounded_with_idle_eviction_and_overflow() {
        let map: KeyedMap<u32, AtomicBool> =
            KeyedMap::new(3, || AtomicBool::new(true), |v| v.load(Ordering::Relaxed));
        for k in 0..1_000u32 {
            let _ = map.get(&k);
        }
        assert!(map.len() <= 3);
        // Busy entries (not idle) are kept; new keys then share the overflow.
        let map: KeyedMap<u32, AtomicBool> =
            KeyedMap::new(2, || AtomicBool::new(false), |v| v.load(Ordering::Relaxed));
        let a = map.get(&1);
        let b = map.get(&2);
        let c = map.get(&3);
        assert!(Arc::ptr_eq(&c, map.overflow()));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(map.len(), 2);
        assert!(map.peek(&3).is_none());
    }
}
