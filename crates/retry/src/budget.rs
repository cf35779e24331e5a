//! [`RetryBudget`]: a cap on retries as a share of recent requests.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Allows retries only while they stay below a share of the requests seen in
/// a sliding window (plus a small floor), so that a fleet whose upstream is
/// failing does not multiply its own load.
///
/// With the defaults (10 s window, 20 %, 10 retries per second floor), 1,000
/// requests in the last 10 s allow 100 + 200 = 300 retries in that window.
///
/// Counts live in one slot per second; the window slides a second at a time.
/// Lock-free: a request is one atomic add, a retry a scan of the slots. Counts
/// racing with a slot's rotation may be lost, which only makes the budget
/// approximate, never unbounded.
///
/// # Clone
///
/// Put it in the layer once ([`crate::RetryLayer::budget`]); every service the
/// layer builds, and every clone, shares it.
pub struct RetryBudget {
    slots: Box<[Slot]>,
    origin: Instant,
    /// Retries allowed per request, in thousandths.
    ratio_milli: u64,
    /// Retries allowed per window regardless of traffic.
    floor: u64,
}

#[derive(Default)]
struct Slot {
    sec: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("window_secs", &self.slots.len())
            .field("ratio", &(self.ratio_milli as f64 / 1000.0))
            .field("floor", &self.floor)
            .finish()
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 0.2, 10)
    }
}

impl RetryBudget {
    /// Retries up to `ratio` of the requests seen in the last `window`
    /// (rounded up to whole seconds, at least one), plus `min_per_sec`
    /// retries per second of window whatever the traffic. A negative or NaN
    /// ratio counts as 0.
    pub fn new(window: Duration, ratio: f64, min_per_sec: u32) -> Self {
        let secs = window.as_secs() + u64::from(window.subsec_nanos() > 0);
        let secs = secs.clamp(1, 3600);
        let ratio = if ratio.is_finite() && ratio > 0.0 {
            ratio
        } else {
            0.0
        };
        Self {
            slots: (0..secs).map(|_| Slot::default()).collect(),
            origin: Instant::now(),
            ratio_milli: (ratio * 1000.0).round() as u64,
            floor: u64::from(min_per_sec) * secs,
        }
    }

    fn sec_at(&self, now: Instant) -> u64 {
        // Seconds are counted from 1 so that a fresh slot (sec 0) is stale.
        now.saturating_duration_since(self.origin).as_secs() + 1
    }

    fn slot(&self, sec: u64) -> &Slot {
        let slot = &self.slots[(sec % self.slots.len() as u64) as usize];
        let seen = slot.sec.load(Ordering::Acquire);
        if seen != sec
            && slot
                .sec
                .compare_exchange(seen, sec, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Release);
            slot.retries.store(0, Ordering::Release);
        }
        slot
    }

    /// Records a request.
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Records a request made at `now` (saves a clock read for a caller that
    /// has one).
    pub fn deposit_at(&self, now: Instant) {
        let sec = self.sec_at(now);
        self.slot(sec).requests.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        let sec = self.sec_at(Instant::now());
        let oldest = sec.saturating_sub(self.slots.len() as u64 - 1);
        let (mut requests, mut retries) = (0u64, 0u64);
        for s in self.slots.iter() {
            let at = s.sec.load(Ordering::Acquire);
            if at >= oldest && at <= sec {
                requests += s.requests.load(Ordering::Acquire);
                retries += s.retries.load(Ordering::Acquire);
            }
        }
        let allowed = self.floor + requests.saturating_mul(self.ratio_milli) / 1000;
        if retries >= allowed {
            return false;
        }
        self.slot(sec).retries.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.slots.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ratio_and_floor_bound_retries_in_the_window() {
        let b = RetryBudget::new(Duration::from_secs(10), 0.2, 1);
        for _ in 0..100 {
            b.deposit();
        }
        // floor 1/s * 10 s + 20% of 100 = 30
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 30);
        // Ten seconds later the window has slid past all of it: floor only.
        tokio::time::advance(Duration::from_secs(10)).await;
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_budget_refuses_everything() {
        let b = RetryBudget::new(Duration::from_secs(1), 0.0, 0);
        for _ in 0..1000 {
            b.deposit();
        }
        assert!(!b.withdraw());
        let weird = RetryBudget::new(Duration::ZERO, f64::NAN, 0);
        assert_eq!(weird.window(), Duration::from_secs(1));
        assert!(!weird.withdraw());
    }
}
