//! A circuit shared by a fleet through Redis (feature `redis`;
//! [`BreakerBuilder::redis`](crate::BreakerBuilder::redis)).
//!
//! The keys, scripts and protocol are described in the crate docs
//! (*Sharing a circuit through Redis*).

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use palisade_core::redis::RedisConnection;

use crate::circuit::{Circuit, State};

/// What is told when Redis cannot be asked: the reason (never a password).
pub(crate) type ErrorHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The default time between two reads of the fleet's state.
pub const DEFAULT_REDIS_POLL: Duration = Duration::from_millis(250);
/// The default lease of the probing process, renewed every poll while it
/// probes.
pub const DEFAULT_PROBE_LEASE: Duration = Duration::from_secs(10);
/// The default bound on connecting to Redis, and on each script.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);

/// A trip number no `K:closed` reaches: used when this process does not
/// know which trip opened its circuit (its own trip could not be written),
/// so that only its own probes close it.
const UNKNOWN_TRIP: u64 = 1 << 52;

/// `K:open`, `K:probe`, `K:trips`, `K:closed`; `ARGV`: open ms, this
/// process's id. Opens the fleet's circuit (keeping a longer open time),
/// numbers the trip (above every closed one, even if the counter was lost)
/// and gives up this process's probe lease (a failed probe).
const TRIP: &str = r"
local n = redis.call('INCR', KEYS[3])
local closed = tonumber(redis.call('GET', KEYS[4]) or 0)
if n <= closed then
  n = closed + 1
  redis.call('SET', KEYS[3], n)
end
redis.call('PEXPIRE', KEYS[3], 86400000)
local ms = tonumber(ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left > ms then ms = left end
redis.call('SET', KEYS[1], n, 'PX', ms)
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return n
";

/// `K:open`, `K:probe`, `K:trips`, `K:closed`; `ARGV`: this process's id,
/// the trip it probed for (0 when unknown). A prober's probes succeeded:
/// unless a newer trip opened the circuit meanwhile, every trip so far is
/// closed (and the one it probed for, should Redis have lost the counter).
const CLOSE: &str = r"
if redis.call('PTTL', KEYS[1]) > 0 then return 0 end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
local n = math.max(tonumber(redis.call('GET', KEYS[3]) or 0), tonumber(ARGV[2]))
redis.call('SET', KEYS[4], n, 'PX', 86400000)
return 1
";

/// `K:probe`; `ARGV`: this process's id. Gives up the lease if it is this
/// process's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
";

/// `K:open`; the open time left and the trip's number, or `{0, 0}`.
const READ: &str = r"
local left = redis.call('PTTL', KEYS[1])
if left > 0 then return {left, tonumber(redis.call('GET', KEYS[1])) or 0} end
return {0, 0}
";

/// `K:open`, `K:probe`, `K:closed`; `ARGV`: this process's id, lease ms,
/// the trip this process knows of. Returns `{what, ms, trip}`:
/// 1 still open (`ms` left, `trip`), 2 another process probes (`ms` of its
/// lease left), 3 closed by another's probes, 4 the lease is this
/// process's: probe.
const PROBE: &str = r"
local left = redis.call('PTTL', KEYS[1])
if left > 0 then return {1, left, tonumber(redis.call('GET', KEYS[1])) or 0} end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return {2, redis.call('PTTL', KEYS[2]), 0} end
local closed = tonumber(redis.call('GET', KEYS[3]) or -1)
if closed >= tonumber(ARGV[3]) then return {3, 0, closed} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {4, 0, 0}
";

/// `K:probe`; `ARGV`: this process's id, lease ms. Renews the lease if it
/// is this process's.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// The settings of a shared circuit, as the builder holds them.
#[derive(Clone)]
pub(crate) struct FleetConfig {
    pub(crate) url: String,
    pub(crate) key: String,
    pub(crate) poll: Duration,
    pub(crate) lease: Duration,
    pub(crate) timeout: Duration,
    pub(crate) on_error: Option<ErrorHook>,
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetConfig")
            .field("redis", &palisade_core::redis::shown_url(&self.url))
            .field("key", &self.key)
            .field("poll", &self.poll)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// A circuit's link to its fleet.
pub(crate) struct Fleet {
    redis: RedisConnection,
    open: String,
    probe: String,
    trips: String,
    closed: String,
    /// This process's (this circuit's) id in the probe lease.
    id: String,
    poll: Duration,
    lease: Duration,
    timeout: Duration,
    on_error: Option<ErrorHook>,
    /// The number of the trip this circuit's open state belongs to.
    trip: AtomicU64,
    /// When (the circuit's clock, ms) this process got the probe lease;
    /// 0: it has none.
    granted_ms: AtomicU64,
    polling: AtomicBool,
    scripts: Scripts,
}

struct Scripts {
    trip: redis::Script,
    close: redis::Script,
    read: redis::Script,
    probe: redis::Script,
    renew: redis::Script,
    release: redis::Script,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("redis", &self.redis.shown())
            .field("key", &self.open)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    pub(crate) fn new(c: &FleetConfig) -> Result<Self, String> {
        let redis = RedisConnection::open(&c.url).map_err(|e| e.to_string())?;
        let id = std::hash::RandomState::new().build_hasher().finish()
            ^ u64::from(std::process::id()).rotate_left(32);
        Ok(Self {
            redis,
            open: format!("{}:open", c.key),
            probe: format!("{}:probe", c.key),
            trips: format!("{}:trips", c.key),
            closed: format!("{}:closed", c.key),
            id: format!("{id:016x}"),
            poll: c.poll,
            lease: c.lease,
            timeout: c.timeout,
            on_error: c.on_error.clone(),
            trip: AtomicU64::new(UNKNOWN_TRIP),
            granted_ms: AtomicU64::new(0),
            polling: AtomicBool::new(false),
            scripts: Scripts {
                trip: redis::Script::new(TRIP),
                close: redis::Script::new(CLOSE),
                read: redis::Script::new(READ),
                probe: redis::Script::new(PROBE),
                renew: redis::Script::new(RENEW),
                release: redis::Script::new(RELEASE),
            },
        })
    }

    /// How long past its open time a circuit waits for the fleet's word
    /// before it probes on its own.
    pub(crate) fn grace(&self) -> Duration {
        self.poll * 2 + self.timeout
    }

    /// Starts the background task (once, on the current tokio runtime; a
    /// later call retries when there is none yet).
    #[inline]
    pub(crate) fn ensure_polling(&self, circuit: &Arc<Circuit>) {
        if self.polling.load(Ordering::Relaxed) {
            return;
        }
        self.start(circuit);
    }

    #[cold]
    fn start(&self, circuit: &Arc<Circuit>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.polling.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(circuit);
        rt.spawn(poll_loop(weak, self.poll));
    }

    fn failed(&self, what: &str, reason: &str) {
        self.redis.forget();
        tracing::warn!(
            backend = %self.redis.shown(),
            key = %self.open,
            reason,
            "{what}; the circuit acts on its own calls only until Redis answers"
        );
        if let Some(hook) = &self.on_error {
            hook(reason);
        }
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        call: redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let mut conn = self.redis.get(self.timeout).await?;
        tokio::time::timeout(self.timeout, call.invoke_async::<T>(&mut conn))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|e| format!("the script failed: {e}"))
    }

    /// This circuit opened by its own calls (or by `force_open`): tell the
    /// fleet, in the background.
    pub(crate) fn tripped(self: &Arc<Self>, open_for: Duration) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Until Redis numbers it, only this circuit's own probes close it.
        self.trip.store(UNKNOWN_TRIP, Ordering::Release);
        self.granted_ms.store(0, Ordering::Release);
        let this = Arc::clone(self);
        let ms = millis(open_for);
        rt.spawn(async move {
            let mut call = this.scripts.trip.prepare_invoke();
            call.key(&this.open)
                .key(&this.probe)
                .key(&this.trips)
                .key(&this.closed)
                .arg(ms)
                .arg(&this.id);
            match this.invoke::<u64>(call).await {
                Ok(n) => this.trip.store(n, Ordering::Release),
                Err(reason) => this.failed("could not share a trip through Redis", &reason),
            }
        });
    }

    /// This circuit's probes succeeded: tell the fleet, in the background.
    pub(crate) fn closed(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = Arc::clone(self);
        self.granted_ms.store(0, Ordering::Release);
        let trip = match self.trip.load(Ordering::Acquire) {
            UNKNOWN_TRIP => 0,
            n => n,
        };
        rt.spawn(async move {
            let mut call = this.scripts.close.prepare_invoke();
            call.key(&this.open)
                .key(&this.probe)
                .key(&this.trips)
                .key(&this.closed)
                .arg(&this.id)
                .arg(trip);
            if let Err(reason) = this.invoke::<i64>(call).await {
                this.failed("could not share a closed circuit through Redis", &reason);
            }
        });
    }

    /// One poll: learn the fleet's trips while closed, ask for the probe
    /// lease once the open time is over, renew it while probing.
    async fn tick(&self, circuit: &Circuit) -> Result<(), String> {
        match circuit.state() {
            State::Closed => {
                self.granted_ms.store(0, Ordering::Release);
                let mut call = self.scripts.read.prepare_invoke();
                call.key(&self.open);
                let (left, n): (u64, u64) = self.invoke(call).await?;
                if left > 0 {
                    self.trip.store(n, Ordering::Release);
                    circuit.apply_trip(Duration::from_millis(left));
                }
            }
            State::Open if !circuit.remaining().is_zero() => {}
            State::Open => {
                let mut call = self.scripts.probe.prepare_invoke();
                call.key(&self.open)
                    .key(&self.probe)
                    .key(&self.closed)
                    .arg(&self.id)
                    .arg(millis(self.lease))
                    .arg(self.trip.load(Ordering::Acquire));
                let (what, ms, n): (u8, i64, u64) = self.invoke(call).await?;
                let ms = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
                match what {
                    1 => {
                        self.trip.store(n, Ordering::Release);
                        circuit.extend_open(ms);
                    }
                    2 => circuit.hold(self.grace()),
                    3 => circuit.close_from_fleet(),
                    _ => {
                        self.granted_ms
                            .store(circuit.clock_ms().max(1), Ordering::Release);
                        circuit.probe_now();
                    }
                }
            }
            State::HalfOpen => {
                let now = circuit.clock_ms().max(1);
                let granted = self.granted_ms.load(Ordering::Acquire);
                if circuit.probing() && granted != 0 {
                    // A probe is out: the lease is in use from now.
                    self.granted_ms.store(now, Ordering::Release);
                }
                let lease = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
                let idle =
                    granted != 0 && !circuit.probing() && now.saturating_sub(granted) >= lease / 2;
                if idle {
                    // It holds the lease but no probe went out for half of
                    // it: another process, with calls, may probe instead.
                    self.give_up(circuit).await?;
                    return Ok(());
                }
                let mut call = self.scripts.renew.prepare_invoke();
                call.key(&self.probe).arg(&self.id).arg(millis(self.lease));
                let renewed: i64 = self.invoke(call).await?;
                if renewed == 0 && granted != 0 {
                    // The lease is gone (it lapsed, or Redis restarted):
                    // unless a probe is out, wait for the fleet's word.
                    self.give_up(circuit).await?;
                }
            }
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Fleet {
    /// Back to open and waiting, the lease given up (not with a probe out).
    async fn give_up(&self, circuit: &Circuit) -> Result<(), String> {
        if circuit.unprobe(self.grace()) {
            self.granted_ms.store(0, Ordering::Release);
            let mut call = self.scripts.release.prepare_invoke();
            call.key(&self.probe).arg(&self.id);
            self.invoke::<i64>(call).await?;
        }
        Ok(())
    }
}

/// Polls until the circuit is dropped; wakes early when its open time
/// ends, so that probing starts on time.
async fn poll_loop(circuit: Weak<Circuit>, poll: Duration) {
    loop {
        let wait = {
            let Some(c) = circuit.upgrade() else { return };
            let Some(fleet) = c.fleet.clone() else { return };
            if let Err(reason) = fleet.tick(&c).await {
                fleet.failed("could not read the shared circuit in Redis", &reason);
            }
            match c.remaining() {
                left if c.state() == State::Open && !left.is_zero() => left.min(poll),
                _ => poll,
            }
        };
        tokio::time::sleep(wait).await;
    }
}
