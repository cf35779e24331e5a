//! [`Bucket`]: a token bucket as GCRA, lock-free.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::RateLimited;
use tokio::time::Instant;

/// A token bucket of `capacity` units refilled at `per_second` units per
/// second, kept as GCRA: one atomic "theoretical arrival time", updated by
/// compare-and-swap. No lock, no background task.
///
/// A call costing `n` units fits when the bucket holds `n`; in wait mode it
/// *reserves* its units at once and waits for the moment they are refilled,
/// so waiters are served in the order they arrived (FIFO) without a queue.
pub struct Bucket {
    origin: Instant,
    /// Nanoseconds after `origin`; the bucket is full when this is ≤ now.
    tat: AtomicU64,
    /// Nanoseconds per unit.
    interval: u64,
    /// Nanoseconds a full bucket represents (capacity × interval).
    tolerance: u64,
    capacity: u64,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("capacity", &self.capacity)
            .field("per_second", &(1e9 / self.interval as f64))
            .finish_non_exhaustive()
    }
}

/// A granted request: wait this long, then go. Holds the reservation.
#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) wait: Duration,
    pub(crate) cost: u64,
}

impl Bucket {
    /// A full bucket. `per_second` must be positive and `capacity` at least
    /// 1: checked by the layer's `build`.
    pub(crate) fn new(capacity: u64, per_second: f64) -> Self {
        let interval = (1e9 / per_second).round().max(1.0) as u64;
        Self {
            origin: Instant::now(),
            tat: AtomicU64::new(0),
            interval,
            tolerance: interval.saturating_mul(capacity),
            capacity,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// True when the bucket is full (owes nothing): such a bucket can be
    /// forgotten and made anew.
    pub fn is_full(&self) -> bool {
        self.tat.load(Ordering::Acquire) <= self.now()
    }

    /// The bucket's capacity.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Takes `cost` units now, or reserves them if they come within
    /// `max_wait`; otherwise refuses, saying when they would be available.
    pub(crate) fn acquire(&self, cost: u64, max_wait: Duration) -> Result<Grant, RateLimited> {
        if cost > self.capacity {
            return Err(RateLimited::new(None));
        }
        let need = cost.saturating_mul(self.interval);
        let max_wait = u64::try_from(max_wait.as_nanos()).unwrap_or(u64::MAX);
        let now = self.now();
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let new_tat = tat.max(now).saturating_add(need);
            // When the reservation fits in a full bucket.
            let wait = new_tat.saturating_sub(now).saturating_sub(self.tolerance);
            if wait > max_wait {
                return Err(RateLimited::new(Some(Duration::from_nanos(wait))));
            }
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Ok(Grant {
                        wait: Duration::from_nanos(wait),
                        cost,
                    });
                }
                Err(seen) => tat = seen,
            }
        }
    }

    /// Units available now (0 while the bucket is in debt).
    pub fn available(&self) -> u64 {
        let owed = self.tat.load(Ordering::Acquire).saturating_sub(self.now());
        self.tolerance.saturating_sub(owed) / self.interval
    }

    /// Takes `cost` more units at once, into debt if need be (a call that
    /// turned out dearer than its reservation): later callers wait longer.
    pub(crate) fn charge(&self, cost: u64) {
        let take = cost.saturating_mul(self.interval);
        let now = self.now();
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.max(now).saturating_add(take))
            });
    }

    /// Gives back `cost` units (a cancelled waiter, a smaller actual cost).
    pub(crate) fn refund(&self, cost: u64) {
        let give = cost.saturating_mul(self.interval);
        let now = self.now();
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                // Never below now: a refund cannot overfill the bucket.
                Some(tat.saturating_sub(give).max(now.min(tat)))
            });
    }
}
