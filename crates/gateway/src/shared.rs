//! Provider-limit state shared by a fleet through Redis (`[redis]`): when
//! an answer says a tier member's provider limit is spent, the process that
//! saw it writes `palisade:{upstream}:drained` with the wait as its TTL (on
//! Redis's clock: the processes' clocks do not matter), and every process
//! reads the members' keys every [`POLL`] — so one process's 429 spares the
//! others the same refusal. Nothing is read per call.
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

impl SharedDrains {
    /// Shares `members`' drains through the Redis at `url`; each member's
    /// own drains are published from now on.
    pub(crate) fn new(
        url: &str,
        members: Vec<(Arc<str>, MemberLoad)>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let redis = RedisConnection::open(url).map_err(|e| e.to_string())?;
        let shared = Arc::new(Self {
            redis,
            members,
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

    /// Reads every member's shared drain and applies it.
    async fn read(self: &Arc<Self>) -> Result<(), String> {
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        for (name, _) in &self.members {
            pipe.cmd("PTTL").arg(key(name));
        }
        let ttls: Vec<i64> = tokio::time::timeout(TIMEOUT, pipe.query_async(&mut conn))
            .await
            .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
            .map_err(|e| format!("reading the shared state failed: {e}"))?;
        for ((_, load), ttl) in self.members.iter().zip(&ttls) {
            if let Ok(ms) = u64::try_from(*ttl)
                && ms > 0
            {
                load.drain(Duration::from_millis(ms));
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
