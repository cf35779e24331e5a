//! [`Bucket`]: a token bucket as GCRA, lock-free.

use crate::sync::{AtomicU64, Ordering};
use std::fmt;
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
        self.acquire_at(self.now(), cost, max_wait)
    }

    /// [`acquire`](Self::acquire) at `now` nanoseconds after the origin.
    pub(crate) fn acquire_at(
        &self,
        now: u64,
        cost: u64,
        max_wait: Duration,
    ) -> Result<Grant, RateLimited> {
        if cost > self.capacity {
            return Err(RateLimited::new(None));
        }
        let need = cost.saturating_mul(self.interval);
        let max_wait = u64::try_from(max_wait.as_nanos()).unwrap_or(u64::MAX);
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

    /// How long until `cost` units are available, or `None` when they are
    /// now (nothing is taken): for a balance to pass over a member at its
    /// own limit without calling it.
    pub fn refuses_for(&self, cost: u64) -> Option<Duration> {
        let now = self.now();
        let need = cost.saturating_mul(self.interval);
        let wait = self
            .tat
            .load(Ordering::Acquire)
            .max(now)
            .saturating_add(need)
            .saturating_sub(now)
            .saturating_sub(self.tolerance);
        (wait > 0).then(|| Duration::from_nanos(wait))
    }

    /// Takes `cost` more units at once, into debt if need be (a call that
    /// turned out dearer than its reservation): later callers wait longer.
    pub fn charge(&self, cost: u64) {
        let take = cost.saturating_mul(self.interval);
        let now = self.now();
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.max(now).saturating_add(take))
            });
    }

    /// Gives back `cost` units (a cancelled waiter, a smaller actual cost).
    /// Takes `cost` units now, or refuses, saying when they would be there
    /// (for code admitting calls itself, e.g. a caller's own limit).
    ///
    /// # Errors
    ///
    /// [`RateLimited`] with the wait, or without one when `cost` exceeds
    /// the capacity.
    pub fn take(&self, cost: u64) -> Result<(), RateLimited> {
        self.acquire(cost, Duration::ZERO).map(|_| ())
    }

    /// Gives `cost` units back (never fuller than full).
    pub fn refund(&self, cost: u64) {
        self.refund_at(self.now(), cost);
    }

    /// [`refund`](Self::refund) at `now` nanoseconds after the origin.
    pub(crate) fn refund_at(&self, now: u64, cost: u64) {
        let give = cost.saturating_mul(self.interval);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                // Never below now: a refund cannot overfill the bucket.
                Some(tat.saturating_sub(give).max(now.min(tat)))
            });
    }
}

/// Loom models of the bucket's compare-and-swap loop (`--cfg palisade_loom`;
/// see `.ci/run`). Time is fixed in each model: the interleavings are the
/// atomics'.
#[cfg(all(test, palisade_loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;

    fn bucket(capacity: u64) -> Arc<Bucket> {
        // 10 units per second: 100 ms per unit.
        Arc::new(Bucket::new(capacity, 10.0))
    }

    #[test]
    fn concurrent_acquires_never_admit_more_than_the_capacity() {
        loom::model(|| {
            let b = bucket(2);
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    let b = b.clone();
                    loom::thread::spawn(move || b.acquire_at(0, 1, Duration::ZERO).is_ok())
                })
                .collect();
            let admitted = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|ok| *ok)
                .count();
            assert_eq!(admitted, 2);
        });
    }

    #[test]
    fn a_refund_racing_an_acquire_loses_no_unit_and_overfills_nothing() {
        loom::model(|| {
            let b = bucket(2);
            // Both units taken; one is given back while another caller asks.
            assert!(b.acquire_at(0, 2, Duration::ZERO).is_ok());
            let refunder = {
                let b = b.clone();
                loom::thread::spawn(move || b.refund_at(0, 1))
            };
            let taker = {
                let b = b.clone();
                loom::thread::spawn(move || b.acquire_at(0, 1, Duration::ZERO).is_ok())
            };
            refunder.join().unwrap();
            let took = taker.join().unwrap();
            // Whatever the order, the bucket ends with 2 - 2 + 1 - took units
            // owed back: one more unit can pass now exactly when the taker
            // did not take the refunded one.
            let more = b.acquire_at(0, 1, Duration::ZERO).is_ok();
            assert_eq!(took as u8 + more as u8, 1);
            assert!(b.acquire_at(0, 1, Duration::ZERO).is_err());
        });
    }

    #[test]
    fn waiters_reserve_in_order_without_losing_time() {
        loom::model(|| {
            let b = bucket(1);
            assert!(b.acquire_at(0, 1, Duration::ZERO).is_ok());
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let b = b.clone();
                    loom::thread::spawn(move || {
                        b.acquire_at(0, 1, Duration::from_secs(1)).unwrap().wait
                    })
                })
                .collect();
            let mut waits: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            waits.sort();
            // One waits one interval, the other two: no slot given twice.
            assert_eq!(
                waits,
                [Duration::from_millis(100), Duration::from_millis(200)]
            );
        });
    }
}
