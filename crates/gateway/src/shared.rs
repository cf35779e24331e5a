//! Provider-limit state shared by a fleet through Redis (`[redis]`), per
//! upstream key: when an answer says a provider limit is spent, the process
//! that saw it writes a key with the wait as its TTL (on Redis's clock: the
//! processes' clocks do not matter), and every process reads the keys every
//! [`POLL`] — so one process's 429 spares the others the same refusal.
//! Nothing is read per call.
//!
//! - A tier member's drain (palisade-balance's `MemberLoad`):
//!   `palisade:{upstream}:drained`; the other processes' tiers skip it.
//! - A pooled key's rest (`api_keys_env`; palisade-client's `KeyRests`):
//!   `palisade:{upstream}:key{i}:drained`, the key named by its place in
//!   the pool (never by its value), so the processes of a fleet, which
//!   share one config, name it alike; the other processes' pools pick
//!   another key.
//!
//! With `share_breaker = true`, breakers are shared by palisade-breaker's
//! own Redis sharing (`BreakerBuilder::redis`, through the preset): not
//! here.
//!
//! Redis unreachable: the drains stay local (each process
//! learns them from its own calls, as without Redis); each failure is
//! counted in `palisade_redis_errors_total` and logged, at most once a poll.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use palisade::ratelimit::RedisConnection;
use palisade_balance::MemberLoad;
use palisade_client::KeyRests;
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

/// What a shared key drains here.
enum Drains {
    Member(MemberLoad),
    Key(KeyRests, usize),
}

/// The tier members' drains and the pooled keys' rests, shared through one
/// Redis.
pub(crate) struct SharedDrains {
    redis: RedisConnection,
    /// Each Redis key and what it drains.
    members: Vec<(String, Drains)>,
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

fn pool_key(upstream: &str, i: usize) -> String {
    format!("palisade:{upstream}:key{i}:drained")
}

impl SharedDrains {
    /// Shares `members`' drains and `pools`' rests through the Redis at
    /// `url`; what this process learns is published from now on.
    pub(crate) fn new(
        url: &str,
        members: Vec<(Arc<str>, MemberLoad)>,
        pools: Vec<(Arc<str>, KeyRests)>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let redis = RedisConnection::open(url).map_err(|e| e.to_string())?;
        let mut shared: Vec<(String, Drains)> = Vec::new();
        for (name, load) in &members {
            shared.push((key(name), Drains::Member(load.clone())));
        }
        for (name, rests) in &pools {
            for i in 0..rests.len() {
                shared.push((pool_key(name, i), Drains::Key(rests.clone(), i)));
            }
        }
        let shared = Arc::new(Self {
            redis,
            members: shared,
            metrics,
            publish: redis::Script::new(PUBLISH),
            polling: OnceLock::new(),
        });
        for (name, load) in &members {
            let (this, name) = (Arc::downgrade(&shared), Arc::clone(name));
            load.on_drain(move |wait| {
                if let Some(this) = this.upgrade() {
                    this.send(key(&name), wait);
                }
            });
        }
        for (name, rests) in &pools {
            let (this, name) = (Arc::downgrade(&shared), Arc::clone(name));
            rests.on_rest(move |i, wait| {
                if let Some(this) = this.upgrade() {
                    this.send(pool_key(&name, i), wait);
                }
            });
        }
        Ok(shared)
    }

    /// Starts reading the shared drains every [`POLL`], once, on the
    /// current runtime (the gateway calls it when it starts serving, and
    /// on each request in case it runs on another runtime).
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

    /// Reads every shared drain and applies it.
    async fn read(self: &Arc<Self>) -> Result<(), String> {
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        for (key, _) in &self.members {
            pipe.cmd("PTTL").arg(key);
        }
        let ttls: Vec<i64> = tokio::time::timeout(TIMEOUT, pipe.query_async(&mut conn))
            .await
            .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
            .map_err(|e| format!("reading the shared state failed: {e}"))?;
        for ((_, drains), ttl) in self.members.iter().zip(&ttls) {
            let Some(wait) = u64::try_from(*ttl)
                .ok()
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis)
            else {
                continue;
            };
            match drains {
                Drains::Member(load) => load.drain(wait),
                Drains::Key(rests, i) => rests.rest(*i, wait),
            }
        }
        Ok(())
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
