//! Provider-limit state shared by a fleet through Redis (`[redis]`): when
//! an answer says a tier member's provider limit is spent, the process that
//! saw it writes `palisade:{upstream}:drained` with the wait as its TTL (on
//! Redis's clock: the processes' clocks do not matter), and every process
//! reads the members' keys every [`POLL`] — so one process's 429 spares the
//! others the same refusal. Nothing is read per call.
//!
//! With `share_breaker = true`, breakers are shared the same way: a circuit
//! that opens in one process (by its own calls) is written to
//! `palisade:{upstream}:open` with its open time as TTL, and a process whose
//! circuit for that upstream is closed opens it when it reads the key (for
//! its own `open_for`). A circuit opened from Redis is not written back, and
//! a half-open one is left to its probes, so circuits do not keep each
//! other open. Each process probes on its own once its open time is over
//! (probes are not coordinated across the fleet).
//!
//! Redis unreachable: the drains and circuits stay local (each process
//! learns them from its own calls, as without Redis); each failure is
//! counted in `palisade_redis_errors_total` and logged, at most once a poll.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use palisade::ratelimit::RedisConnection;
use palisade_balance::MemberLoad;
use palisade_breaker::{BreakerHandle, State};
use redis::aio::MultiplexedConnection;

use crate::metrics::Metrics;

/// How often every process reads the members' shared drains.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// How long one Redis exchange may take, connecting included.
const TIMEOUT: Duration = Duration::from_millis(50);

/// Sets the key's TTL to `ARGV[1]` ms unless it already lasts longer.
const PUBLISH: &str = r"
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
";

/// The tier members' drains, shared through one Redis.
pub(crate) struct SharedDrains {
    redis: RedisConnection,
    members: Vec<(Arc<str>, MemberLoad)>,
    breakers: Vec<SharedBreaker>,
    metrics: Arc<Metrics>,
    publish: redis::Script,
    polling: OnceLock<()>,
}

impl std::fmt::Debug for SharedDrains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDrains")
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

fn key(upstream: &str) -> String {
    format!("palisade:{upstream}:drained")
}

fn open_key(upstream: &str) -> String {
    format!("palisade:{upstream}:open")
}

/// An upstream's breaker, shared.
pub(crate) struct SharedBreaker {
    pub(crate) name: Arc<str>,
    pub(crate) handle: BreakerHandle,
    /// Its circuit was opened from Redis (not by its own calls): not
    /// written back.
    applied: AtomicBool,
}

impl SharedBreaker {
    pub(crate) fn new(name: Arc<str>, handle: BreakerHandle) -> Self {
        Self {
            name,
            handle,
            applied: AtomicBool::new(false),
        }
    }
}

impl SharedDrains {
    /// Shares `members`' drains through the Redis at `url`; each member's
    /// own drains are published from now on.
    pub(crate) fn new(
        url: &str,
        members: Vec<(Arc<str>, MemberLoad)>,
        breakers: Vec<SharedBreaker>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let redis = RedisConnection::open(url).map_err(|e| e.to_string())?;
        let shared = Arc::new(Self {
            redis,
            members,
            breakers,
            metrics,
            publish: redis::Script::new(PUBLISH),
            polling: OnceLock::new(),
        });
        for (name, load) in &shared.members {
            let (this, name) = (Arc::downgrade(&shared), Arc::clone(name));
            load.on_drain(move |wait| {
                if let Some(this) = this.upgrade() {
                    this.publish(&name, wait);
                }
            });
        }
        Ok(shared)
    }

    /// Starts reading the shared drains every [`POLL`], once, on the
    /// current runtime (the first request's).
    pub(crate) fn ensure_polling(self: &Arc<Self>) {
        if self.polling.get().is_some() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.polling.set(()).is_err() {
            return;
        }
        let this = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = this.upgrade() else { return };
                if let Err(reason) = this.read().await {
                    this.failed(&reason);
                }
            }
        });
    }

    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        self.redis.get(TIMEOUT).await
    }

    fn failed(&self, reason: &str) {
        self.redis.forget();
        tracing::warn!(
            reason,
            "cannot share provider-limit state through Redis; each process keeps its own"
        );
        // Not one upstream's: counted once, under `*`.
        self.metrics.redis_error("*");
    }

    /// Reads every member's shared drain and every shared circuit, and
    /// applies them; writes the circuits this process opened.
    async fn read(self: &Arc<Self>) -> Result<(), String> {
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        for (name, _) in &self.members {
            pipe.cmd("PTTL").arg(key(name));
        }
        for b in &self.breakers {
            pipe.cmd("PTTL").arg(open_key(&b.name));
        }
        let ttls: Vec<i64> = tokio::time::timeout(TIMEOUT, pipe.query_async(&mut conn))
            .await
            .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
            .map_err(|e| format!("reading the shared state failed: {e}"))?;
        let (drains, circuits) = ttls.split_at(self.members.len().min(ttls.len()));
        for ((_, load), ttl) in self.members.iter().zip(drains) {
            if let Ok(ms) = u64::try_from(*ttl)
                && ms > 0
            {
                load.drain(Duration::from_millis(ms));
            }
        }
        for (b, ttl) in self.breakers.iter().zip(circuits) {
            match b.handle.state() {
                State::Closed => {
                    b.applied.store(false, Ordering::Release);
                    if *ttl > 0 {
                        tracing::warn!(upstream = %b.name, "another process opened this upstream's circuit; opening it here too");
                        b.applied.store(true, Ordering::Release);
                        b.handle.force_open();
                    }
                }
                // Its probes decide now: a circuit they open again is its own.
                State::HalfOpen => b.applied.store(false, Ordering::Release),
                State::Open if !b.applied.load(Ordering::Acquire) => {
                    // Opened by this process's own calls: shared for what
                    // is left of its open time.
                    if let Some(left) = b.handle.refuses_for().filter(|d| !d.is_zero()) {
                        self.send(open_key(&b.name), left);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Shares that `upstream` is drained for `wait`, in the background.
    fn publish(self: &Arc<Self>, upstream: &str, wait: Duration) {
        self.send(key(upstream), wait);
    }

    /// Sets `key` for `wait` (unless it lasts longer), in the background.
    fn send(self: &Arc<Self>, key: String, wait: Duration) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = Arc::clone(self);
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        rt.spawn(async move {
            let sent = async {
                let mut conn = this.connection().await?;
                let mut call = this.publish.prepare_invoke();
                call.key(&key).arg(ms);
                tokio::time::timeout(TIMEOUT, call.invoke_async::<i64>(&mut conn))
                    .await
                    .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
                    .map_err(|e| format!("sharing a drain failed: {e}"))
            };
            if let Err(reason) = sent.await {
                this.failed(&reason);
            }
        });
    }
}
