//! The shared state machine: admission, outcome windows, transitions.

use std::fmt;
use std::sync::{Arc, PoisonError};

use crate::sync::{AtomicU8, AtomicU32, AtomicU64, Mutex, Ordering};
use std::time::Duration;

use palisade_core::CircuitOpen;
use tokio::time::Instant;

use crate::config::{Config, Window};

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are refused until the open time is over.
    Open,
    /// A few probe calls pass; their outcomes decide.
    HalfOpen,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }

    /// `0` closed, `1` open, `2` half-open (the gateway's metric values).
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// A change of state, as passed to the transition hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// How long it stays open (for a transition to `Open`).
    pub open_for: Option<Duration>,
}

/// What one call amounted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    Failure,
}

const EMPTY: u8 = 0;
const OK: u8 = 1;
const FAIL: u8 = 2;

struct Bucket {
    sec: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
}

struct Transit {
    trips: u32,
}

/// The counters every recorded outcome writes, on a cache line of their own
/// so that writing them does not evict the read-mostly fields (state,
/// settings) or the `Arc`'s reference count from other cores' caches.
#[repr(align(64))]
struct Counters {
    /// Outcomes written into the ring so far (its next slot is this modulo
    /// its length).
    calls: AtomicU64,
    /// Failures currently in the ring.
    ring_failures: AtomicU64,
    /// Failures in a row.
    consecutive: AtomicU32,
}

pub(crate) struct Circuit {
    pub(crate) config: Config,
    state: AtomicU8,
    /// Bumped by every transition; probes remember it.
    generation: AtomicU64,
    origin: Instant,
    /// Milliseconds after `origin` when the open state ends.
    open_until_ms: AtomicU64,
    ring: Box<[AtomicU8]>,
    counters: Counters,
    buckets: Box<[Bucket]>,
    probes_left: AtomicU32,
    probe_successes: AtomicU32,
    transit: Mutex<Transit>,
    /// The fleet this circuit is shared with ([`crate::BreakerBuilder::redis`]).
    #[cfg(feature = "redis")]
    pub(crate) fleet: Option<Arc<crate::fleet::Fleet>>,
    /// Milliseconds after `origin` until which an open circuit whose open
    /// time is over stays open, waiting for the fleet's word on who probes
    /// (0: not held).
    #[cfg(feature = "redis")]
    held_until_ms: AtomicU64,
}

impl fmt::Debug for Circuit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Circuit")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// The right to make one call, recorded (or not) when the call ends.
#[derive(Debug)]
pub(crate) struct Permit {
    circuit: Arc<Circuit>,
    /// The half-open generation of a probe; [`NOT_A_PROBE`] otherwise (a
    /// sentinel rather than an `Option`: the permit travels in every future
    /// and body, so it is kept small).
    probe: u64,
}

const NOT_A_PROBE: u64 = u64::MAX;
/// A permit whose outcome was recorded.
const RECORDED: u64 = u64::MAX - 1;

impl Permit {
    #[inline]
    pub(crate) fn record(mut self, verdict: Verdict) {
        let probe = std::mem::replace(&mut self.probe, RECORDED);
        match probe {
            NOT_A_PROBE => self.circuit.record(verdict),
            generation => self.circuit.record_probe(generation, verdict),
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        // A call that ended without an outcome (cancelled, or ignored by the
        // classifier) is not the upstream's doing: nothing is recorded, and
        // a probe's slot goes back for another probe.
        if self.probe < RECORDED {
            self.circuit.release_probe(self.probe);
        }
    }
}

impl Circuit {
    /// A circuit of its own, not shared with a fleet.
    pub(crate) fn new(config: Config) -> Self {
        let ring = match config.window {
            Window::Count(n) => (0..n).map(|_| AtomicU8::new(EMPTY)).collect(),
            Window::Time(_) => Box::default(),
        };
        let buckets = match config.window {
            Window::Time(d) => (0..d.as_secs().max(1))
                .map(|_| Bucket {
                    sec: AtomicU64::new(0),
                    calls: AtomicU32::new(0),
                    failures: AtomicU32::new(0),
                })
                .collect(),
            Window::Count(_) => Box::default(),
        };
        Self {
            config,
            state: AtomicU8::new(State::Closed.as_u8()),
            generation: AtomicU64::new(0),
            origin: Instant::now(),
            open_until_ms: AtomicU64::new(0),
            ring,
            counters: Counters {
                calls: AtomicU64::new(0),
                ring_failures: AtomicU64::new(0),
                consecutive: AtomicU32::new(0),
            },
            buckets,
            probes_left: AtomicU32::new(0),
            probe_successes: AtomicU32::new(0),
            transit: Mutex::new(Transit { trips: 0 }),
            #[cfg(feature = "redis")]
            fleet: None,
            #[cfg(feature = "redis")]
            held_until_ms: AtomicU64::new(0),
        }
    }

    /// A circuit shared with the fleet of `fleet`.
    #[cfg(feature = "redis")]
    pub(crate) fn shared(config: Config, fleet: crate::fleet::Fleet) -> Self {
        Self {
            fleet: Some(Arc::new(fleet)),
            ..Self::new(config)
        }
    }

    /// How long a circuit whose open time is over still waits for the
    /// fleet's word on who probes.
    #[inline]
    fn held(&self) -> Option<Duration> {
        #[cfg(feature = "redis")]
        if self.fleet.is_some() {
            let until = self.held_until_ms.load(Ordering::Acquire);
            let now = self.now_ms();
            if until > now {
                return Some(Duration::from_millis(until - now));
            }
        }
        None
    }

    #[inline]
    pub(crate) fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The circuit's clock (ms after `origin`) `d` from now.
    #[cfg(feature = "redis")]
    fn ms_after(&self, d: Duration) -> u64 {
        self.now_ms()
            .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn remaining(&self) -> Duration {
        let until = self.open_until_ms.load(Ordering::Acquire);
        Duration::from_millis(until.saturating_sub(self.now_ms()))
    }

    /// What [`acquire`](Self::acquire) would refuse for, without acquiring.
    pub(crate) fn refuses_for(&self) -> Option<Duration> {
        match self.state() {
            State::Closed => None,
            State::Open => Some(self.remaining())
                .filter(|left| !left.is_zero())
                .or_else(|| self.held()),
            State::HalfOpen => {
                (self.probes_left.load(Ordering::Acquire) == 0).then_some(Duration::ZERO)
            }
        }
    }

    /// Admits a call, or refuses it with the time left open.
    #[inline]
    pub(crate) fn acquire(self: &Arc<Self>) -> Result<Permit, CircuitOpen> {
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            fleet.ensure_polling(self);
        }
        loop {
            match self.state() {
                State::Closed => {
                    return Ok(Permit {
                        circuit: self.clone(),
                        probe: NOT_A_PROBE,
                    });
                }
                State::Open => {
                    let left = self.remaining();
                    if !left.is_zero() {
                        return Err(CircuitOpen::new(left));
                    }
                    if let Some(wait) = self.held() {
                        // Another process of the fleet may be the one to
                        // probe: wait for its word.
                        return Err(CircuitOpen::new(wait));
                    }
                    self.to_half_open();
                }
                State::HalfOpen => {
                    // The rare path: under the transition lock, so that a
                    // probe slot always belongs to the half-open period it
                    // was taken in.
                    let _t = self.lock();
                    if self.state() != State::HalfOpen {
                        continue;
                    }
                    let left = self.probes_left.load(Ordering::Acquire);
                    if left == 0 {
                        // Every probe is out: refuse until they report.
                        return Err(CircuitOpen::new(Duration::ZERO));
                    }
                    self.probes_left.store(left - 1, Ordering::Release);
                    return Ok(Permit {
                        circuit: self.clone(),
                        probe: self.generation.load(Ordering::Acquire),
                    });
                }
            }
        }
    }

    #[inline]
    fn record(&self, verdict: Verdict) {
        if self.state() != State::Closed {
            // A call admitted before the circuit opened: old news.
            return;
        }
        let failed = verdict == Verdict::Failure;
        if !failed && self.clean() {
            return;
        }
        self.record_slow(failed);
    }

    /// A success changes nothing when the count window is full of successes
    /// and no failure streak runs: writing `ok` over `ok` in the next slot
    /// leaves the ring as it was (every slot is alike, so which one is next
    /// does not matter), and the streak is already zero. The healthy steady
    /// state thus only reads shared memory: three loads of one cache line
    /// that stays shared between cores. A failure, a window not yet full
    /// or a time window take [`Self::record_slow`].
    #[inline]
    fn clean(&self) -> bool {
        let Window::Count(n) = self.config.window else {
            return false;
        };
        self.counters.ring_failures.load(Ordering::Acquire) == 0
            && self.counters.consecutive.load(Ordering::Acquire) == 0
            && self.counters.calls.load(Ordering::Acquire) >= n as u64
    }

    fn record_slow(&self, failed: bool) {
        // Steady state writes as little shared memory as it can: a success
        // leaves an already-zero streak and an already-"ok" slot alone.
        let consecutive = if failed {
            self.counters.consecutive.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            if self.counters.consecutive.load(Ordering::Acquire) != 0 {
                self.counters.consecutive.store(0, Ordering::Release);
            }
            0
        };
        let (calls, failures) = match self.config.window {
            Window::Count(n) => {
                let i = self.counters.calls.fetch_add(1, Ordering::AcqRel);
                let slot = &self.ring[(i % n as u64) as usize];
                let new = if failed { FAIL } else { OK };
                let old = match slot.load(Ordering::Acquire) {
                    same if same == new => same,
                    _ => slot.swap(new, Ordering::AcqRel),
                };
                let f = match (old == FAIL, failed) {
                    (false, true) => self.counters.ring_failures.fetch_add(1, Ordering::AcqRel) + 1,
                    (true, false) => self.counters.ring_failures.fetch_sub(1, Ordering::AcqRel) - 1,
                    _ => self.counters.ring_failures.load(Ordering::Acquire),
                };
                ((i + 1).min(n as u64), f)
            }
            Window::Time(_) => {
                let sec = self.record_bucket(failed);
                if !failed {
                    // Only a failure can trip: the sums wait for one.
                    return;
                }
                self.bucket_sums(sec)
            }
        };
        if !failed {
            return;
        }
        let by_consecutive = self
            .config
            .consecutive_failures
            .is_some_and(|t| consecutive >= t);
        let by_rate = self.config.failure_rate.is_some_and(|rate| {
            calls >= u64::from(self.config.minimum_calls)
                && calls > 0
                && failures as f64 / calls as f64 >= rate
        });
        if by_consecutive || by_rate {
            self.trip(State::Closed);
        }
    }

    /// Counts one outcome in the current second's bucket; returns that
    /// second (1-based, after `origin`).
    fn record_bucket(&self, failed: bool) -> u64 {
        let sec = self.origin.elapsed().as_secs() + 1;
        let n = self.buckets.len() as u64;
        let b = &self.buckets[(sec % n) as usize];
        let seen = b.sec.load(Ordering::Acquire);
        if seen != sec
            && b.sec
                .compare_exchange(seen, sec, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.calls.store(0, Ordering::Release);
            b.failures.store(0, Ordering::Release);
        }
        b.calls.fetch_add(1, Ordering::AcqRel);
        if failed {
            b.failures.fetch_add(1, Ordering::AcqRel);
        }
        sec
    }

    /// The calls and failures of the time window ending at second `sec`.
    fn bucket_sums(&self, sec: u64) -> (u64, u64) {
        let oldest = sec.saturating_sub(self.buckets.len() as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| {
                let at = b.sec.load(Ordering::Acquire);
                at >= oldest && at <= sec
            })
            .fold((0, 0), |(c, f), b| {
                (
                    c + u64::from(b.calls.load(Ordering::Acquire)),
                    f + u64::from(b.failures.load(Ordering::Acquire)),
                )
            })
    }

    fn record_probe(&self, generation: u64, verdict: Verdict) {
        let close = {
            let _t = self.lock();
            if self.generation.load(Ordering::Acquire) != generation {
                return;
            }
            match verdict {
                Verdict::Failure => false,
                Verdict::Success => {
                    let ok = self.probe_successes.load(Ordering::Acquire) + 1;
                    self.probe_successes.store(ok, Ordering::Release);
                    if ok < self.config.half_open_calls {
                        return;
                    }
                    true
                }
            }
        };
        if close {
            if self.close(State::HalfOpen) {
                #[cfg(feature = "redis")]
                if let Some(fleet) = &self.fleet {
                    fleet.closed();
                }
            }
        } else {
            self.trip(State::HalfOpen);
        }
    }

    fn release_probe(&self, generation: u64) {
        let _t = self.lock();
        if self.generation.load(Ordering::Acquire) == generation {
            self.probes_left.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn lock(&self) -> impl std::ops::DerefMut<Target = Transit> + '_ {
        // Every critical section leaves Transit valid: ignore poisoning.
        self.transit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the circuit if it is still `from`.
    pub(crate) fn trip(&self, from: State) {
        let open_for = {
            let mut t = self.lock();
            if self.state() != from {
                return;
            }
            let open_for = self.config.open_duration(t.trips);
            t.trips = t.trips.saturating_add(1);
            let until = self.now_ms().saturating_add(open_for.as_millis() as u64);
            self.open_until_ms.store(until, Ordering::Release);
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.state.store(State::Open.as_u8(), Ordering::Release);
            #[cfg(feature = "redis")]
            self.hold_past(until);
            open_for
        };
        self.announce(from, State::Open, Some(open_for));
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            fleet.tripped(open_for);
        }
    }

    /// Holds the circuit open past `until` (ms after `origin`) for the
    /// fleet's grace.
    #[cfg(feature = "redis")]
    fn hold_past(&self, until: u64) {
        if let Some(fleet) = &self.fleet {
            let grace = u64::try_from(fleet.grace().as_millis()).unwrap_or(u64::MAX);
            self.held_until_ms
                .store(until.saturating_add(grace), Ordering::Release);
        }
    }

    /// The fleet's circuit is open for `left`: a closed circuit opens for
    /// that long (not written back to the fleet).
    #[cfg(feature = "redis")]
    pub(crate) fn apply_trip(&self, left: Duration) {
        {
            let _t = self.lock();
            if self.state() != State::Closed {
                return;
            }
            let until = self.ms_after(left);
            self.open_until_ms.store(until, Ordering::Release);
            self.hold_past(until);
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.state.store(State::Open.as_u8(), Ordering::Release);
        }
        self.announce(State::Closed, State::Open, Some(left));
    }

    /// The fleet's circuit stays open for `left` more: so does this one.
    #[cfg(feature = "redis")]
    pub(crate) fn extend_open(&self, left: Duration) {
        let _t = self.lock();
        if self.state() != State::Open {
            return;
        }
        let until = self.ms_after(left);
        if until > self.open_until_ms.load(Ordering::Acquire) {
            self.open_until_ms.store(until, Ordering::Release);
        }
        self.hold_past(until);
    }

    /// Another process probes: stay open for `d` more (renewed every poll
    /// while it probes).
    #[cfg(feature = "redis")]
    pub(crate) fn hold(&self, d: Duration) {
        let until = self.ms_after(d);
        self.held_until_ms.store(until, Ordering::Release);
    }

    /// This process holds the probe lease: half-open now.
    #[cfg(feature = "redis")]
    pub(crate) fn probe_now(&self) {
        self.held_until_ms.store(0, Ordering::Release);
        self.to_half_open();
    }

    /// Whether this half-open circuit has a probe out now.
    #[cfg(feature = "redis")]
    pub(crate) fn probing(&self) -> bool {
        let _t = self.lock();
        self.state() == State::HalfOpen && self.probes_out() > 0
    }

    /// Probes admitted and not yet reported (a failed one reopens the
    /// circuit; a succeeded one keeps its slot). Under the transition lock.
    #[cfg(feature = "redis")]
    fn probes_out(&self) -> u32 {
        self.config
            .half_open_calls
            .saturating_sub(self.probes_left.load(Ordering::Acquire))
            .saturating_sub(self.probe_successes.load(Ordering::Acquire))
    }

    /// This process holds the probe lease but no call came to probe with
    /// (or it lost the lease): back to open, waiting for the fleet's word
    /// for `hold`, so that a process with calls can probe. Whether it went
    /// back (not with a probe out).
    #[cfg(feature = "redis")]
    pub(crate) fn unprobe(&self, hold: Duration) -> bool {
        {
            let _t = self.lock();
            if self.state() != State::HalfOpen || self.probes_out() > 0 {
                return false;
            }
            let now = self.now_ms();
            self.open_until_ms.store(now, Ordering::Release);
            self.held_until_ms.store(
                now.saturating_add(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX)),
                Ordering::Release,
            );
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.state.store(State::Open.as_u8(), Ordering::Release);
        }
        let name = self.config.name.as_deref().unwrap_or("breaker");
        tracing::info!(
            breaker = name,
            "no call came to probe with: another process of the fleet may probe"
        );
        self.tell(Transition {
            from: State::HalfOpen,
            to: State::Open,
            open_for: Some(Duration::ZERO),
        });
        true
    }

    /// Milliseconds since this circuit was made (its clock).
    #[cfg(feature = "redis")]
    pub(crate) fn clock_ms(&self) -> u64 {
        self.now_ms()
    }

    /// Another process's probes closed the fleet's circuit: so is this one
    /// (not written back).
    #[cfg(feature = "redis")]
    pub(crate) fn close_from_fleet(&self) {
        self.held_until_ms.store(0, Ordering::Release);
        self.close(State::Open);
    }

    fn to_half_open(&self) {
        {
            let _t = self.lock();
            if self.state() != State::Open || !self.remaining().is_zero() {
                return;
            }
            self.probe_successes.store(0, Ordering::Release);
            self.probes_left
                .store(self.config.half_open_calls, Ordering::Release);
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.state.store(State::HalfOpen.as_u8(), Ordering::Release);
        }
        self.announce(State::Open, State::HalfOpen, None);
    }

    /// Closes the circuit if it is still `from`, with a clean window;
    /// whether it did.
    pub(crate) fn close(&self, from: State) -> bool {
        {
            let mut t = self.lock();
            if self.state() != from {
                return false;
            }
            t.trips = 0;
            self.clear_window();
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.state.store(State::Closed.as_u8(), Ordering::Release);
        }
        self.announce(from, State::Closed, None);
        true
    }

    fn clear_window(&self) {
        for s in self.ring.iter() {
            s.store(EMPTY, Ordering::Release);
        }
        self.counters.calls.store(0, Ordering::Release);
        self.counters.ring_failures.store(0, Ordering::Release);
        for b in self.buckets.iter() {
            b.sec.store(0, Ordering::Release);
        }
        self.counters.consecutive.store(0, Ordering::Release);
    }

    /// The calls and failures currently in the window.
    pub(crate) fn window_counts(&self) -> (u64, u64) {
        match self.config.window {
            Window::Count(n) => (
                self.counters.calls.load(Ordering::Acquire).min(n as u64),
                self.counters.ring_failures.load(Ordering::Acquire),
            ),
            Window::Time(_) => self.bucket_sums(self.origin.elapsed().as_secs() + 1),
        }
    }

    fn announce(&self, from: State, to: State, open_for: Option<Duration>) {
        let name = self.config.name.as_deref().unwrap_or("breaker");
        match to {
            State::Open => tracing::warn!(
                breaker = name,
                from = ?from,
                open_for_ms = open_for.map_or(0, |d| d.as_millis() as u64),
                "circuit opened: calls are refused"
            ),
            State::HalfOpen => tracing::info!(breaker = name, "circuit half-open: probing"),
            State::Closed => tracing::info!(breaker = name, from = ?from, "circuit closed"),
        }
        self.tell(Transition { from, to, open_for });
    }

    /// Tells the transition hook, if any.
    fn tell(&self, t: Transition) {
        if let Some(hook) = &self.config.on_transition {
            hook(t);
        }
    }
}
