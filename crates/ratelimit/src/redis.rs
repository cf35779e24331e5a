//! [`RedisRateLimitLayer`]: one limit shared by a fleet of processes, kept in
//! Redis (feature `redis`).
//!
//! The bucket is GCRA in one atomic Lua script: Redis's own clock (`TIME`,
//! so the processes' clocks do not matter), one key per limit holding the
//! theoretical arrival time, written with a TTL of the time until the bucket
//! is full again (plus a second) — no immortal keys. Calls go in batches
//! on a multiplexed connection shared by every clone: a lone call is one
//! `EVALSHA` round trip; calls arriving while one is on its way share the
//! next script, each admitted or refused in turn.
//!
//! Redis unreachable or slow: after `timeout` (50 ms by default) for
//! connecting and as much for the script — at most twice it in all — the
//! call either passes without a limit (`fail_open`, the
//! default: a limiter outage must not become an LLM outage) or fails with
//! [`BackendUnavailable`] (`fail_closed`); never a hang. A failed connection
//! is dropped and made anew on a later call.
//!
//! Differences from the in-process bucket: a waiter that is cancelled keeps
//! its reservation (giving it back would need another round trip from a
//! `Drop`), and waiting is FIFO only per process.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use palisade_core::redis::RedisConnection;
use palisade_core::{BoxError, RateLimited};
use redis::aio::MultiplexedConnection;
use tower_layer::Layer;
use tower_service::Service;

use crate::layer::{ConfigError, PerRequest, RequestCost, validate};

/// GCRA over one or two limits, for a batch of calls in turn: `KEYS` the
/// limits' keys; `ARGV` per key its interval and tolerance (µs), then per
/// call its cost (units of the first limit; one of the second) and the
/// longest wait it allows. A call that one limit refuses takes from
/// neither; one they admit takes from each and waits the longer of their
/// waits. Returns `{admitted, wait}` per call, in order.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nk = #KEYS
local interval, tolerance, tat = {}, {}, {}
for i = 1, nk do
  interval[i] = tonumber(ARGV[2 * i - 1])
  tolerance[i] = tonumber(ARGV[2 * i])
  local v = tonumber(redis.call('GET', KEYS[i]) or now)
  if v < now then v = now end
  tat[i] = v
end
local out = {}
local changed = false
for j = 2 * nk + 1, #ARGV, 2 do
  local cost = tonumber(ARGV[j])
  local max_wait = tonumber(ARGV[j + 1])
  local worst = 0
  local new = {}
  for i = 1, nk do
    local units = cost
    if i > 1 then units = 1 end
    new[i] = tat[i] + units * interval[i]
    local wait = new[i] - now - tolerance[i]
    if wait > worst then worst = wait end
  end
  if worst > max_wait then
    out[#out + 1] = 0
  else
    for i = 1, nk do tat[i] = new[i] end
    changed = true
    out[#out + 1] = 1
  end
  out[#out + 1] = worst
end
if changed then
  for i = 1, nk do
    redis.call('SET', KEYS[i], string.format('%.0f', tat[i]), 'PX', math.ceil((tat[i] - now) / 1000) + 1000)
  end
end
return out
";

/// Gives back (`ARGV[2]` < 0) or charges (> 0) units on Redis's clock: a
/// refund never leaves the bucket fuller than full (the time never goes
/// below now), a charge puts it into debt.
const ADJUST: &str = r"
local interval = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local new_tat
if delta >= 0 then
  new_tat = math.max(tat, now) + delta * interval
else
  new_tat = math.max(tat + delta * interval, math.min(now, tat))
end
if new_tat <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 1
";

/// What to do when Redis cannot be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailMode {
    Open,
    Closed,
}

/// The limit's Redis could not be reached in time and the limit fails
/// closed.
#[derive(Debug)]
pub struct BackendUnavailable {
    backend: String,
    reason: String,
}

impl fmt::Display for BackendUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the rate limit's Redis at {} is unavailable ({}); the call is refused because the \
             limit fails closed: check Redis, or build the layer with `fail_open()`",
            self.backend, self.reason
        )
    }
}

impl std::error::Error for BackendUnavailable {}

pub(crate) struct Shared {
    redis: RedisConnection,
    shown: String,
    key: String,
    capacity: u64,
    /// Microseconds per unit, fractional (a rate of millions of tokens a
    /// minute is a fraction of a microsecond per token).
    interval_us: f64,
    script: redis::Script,
    adjust: redis::Script,
    /// Told of every time Redis could not be asked (for a counter).
    on_error: std::sync::OnceLock<ErrorHook>,
    /// Settlements not yet sent: their sum goes in one script.
    pending: AtomicI64,
    /// A task is sending settlements.
    settling: AtomicBool,
    /// A requests limit admitted in the same script
    /// ([`TokenLimitLayer::redis_requests`](crate::TokenLimitLayer::redis_requests)).
    joined: std::sync::OnceLock<Joined>,
    /// The calls waiting for the next batch, and whether someone is asking
    /// (under one lock: a call either queues for someone asking, or asks).
    batch: std::sync::Mutex<Batch>,
}

#[derive(Default)]
struct Batch {
    queue: Vec<Ask>,
    asking: bool,
}

/// The batches' task: when dropped before its end (its runtime shutting
/// down), the calls still queued are told, and the next call asks.
struct Asking<'a> {
    shared: &'a Arc<Shared>,
    /// It ended as it should (nobody asking any more, or another caller
    /// asking by now: not this task's to touch).
    done: bool,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut batch = self.shared.lock_batch();
        if batch.asking {
            batch.asking = false;
            for ask in batch.queue.drain(..) {
                let _ = ask
                    .answer
                    .send(Err("the task asking Redis was stopped".to_owned()));
            }
        }
    }
}

/// The call asking Redis alone: when it is done (or dropped), the calls
/// that queued meanwhile are handed on.
struct Lead<'a> {
    shared: &'a Arc<Shared>,
    timeout: Duration,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.shared.hand_on(self.timeout);
    }
}

/// One call's request for a reservation, waiting for its batch.
struct Ask {
    cost: u64,
    max_wait_us: u64,
    answer: tokio::sync::oneshot::Sender<Result<(bool, u64), String>>,
}

/// What is told when Redis cannot be asked: the reason (never a password).
pub type ErrorHook = Arc<dyn Fn(&str) + Send + Sync>;

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("redis", &self.shown)
            .field("key", &self.key)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

pub(crate) enum Refusal {
    Limited(Option<Duration>),
    Backend(String),
}

impl Shared {
    fn new(url: &str, key: String, capacity: u64, per_second: f64) -> Result<Self, ConfigError> {
        validate(capacity, per_second)?;
        let redis = RedisConnection::open(url).map_err(|e| ConfigError(e.to_string()))?;
        Ok(Self {
            shown: redis.shown().to_owned(),
            redis,
            key,
            capacity,
            interval_us: 1e6 / per_second,
            script: redis::Script::new(GCRA),
            adjust: redis::Script::new(ADJUST),
            on_error: std::sync::OnceLock::new(),
            pending: AtomicI64::new(0),
            settling: AtomicBool::new(false),
            joined: std::sync::OnceLock::new(),
            batch: std::sync::Mutex::new(Batch::default()),
        })
    }

    /// Redis could not be asked: logged, and told to the hook.
    fn report(&self, reason: &str, what: &str) {
        tracing::warn!(backend = %self.shown, reason, "{what}");
        if let Some(hook) = self.on_error.get() {
            hook(reason);
        }
    }

    /// Gives back (`delta` < 0) or charges (> 0) units.
    async fn adjust(&self, delta: i64, timeout: Duration) -> Result<(), String> {
        let mut conn = self.connection(timeout).await?;
        let mut call = self.adjust.prepare_invoke();
        call.key(&self.key).arg(self.interval_us).arg(delta);
        match tokio::time::timeout(timeout, call.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                self.forget_connection();
                Err(format!("the script failed: {e}"))
            }
            Err(_) => {
                self.forget_connection();
                Err(format!("no answer within {timeout:?}"))
            }
        }
    }

    async fn connection(&self, timeout: Duration) -> Result<MultiplexedConnection, String> {
        self.redis.get(timeout).await
    }

    fn forget_connection(&self) {
        self.redis.forget();
    }

    /// The wait before `cost` units are ours, or why not.
    /// Reserves `cost` units (and one of the joined limit's), waiting up
    /// to `max_wait` for them. A call that finds nobody asking asks at
    /// once, itself; the calls arriving while one asks queue, and go
    /// together in the next script (each admitted or refused in turn,
    /// atomically), sent by a task.
    async fn acquire(
        self: &Arc<Self>,
        cost: u64,
        max_wait: Duration,
        timeout: Duration,
    ) -> Result<Duration, Refusal> {
        if cost > self.capacity {
            return Err(Refusal::Limited(None));
        }
        let max_wait_us = u64::try_from(max_wait.as_micros()).unwrap_or(u64::MAX);
        let queued = {
            let mut batch = self.lock_batch();
            if batch.asking {
                let (tx, rx) = tokio::sync::oneshot::channel();
                batch.queue.push(Ask {
                    cost,
                    max_wait_us,
                    answer: tx,
                });
                Some(rx)
            } else {
                batch.asking = true;
                None
            }
        };
        let answer = if let Some(rx) = queued {
            // The script on its way and this call's own batch, together
            // within the bound (a healthy Redis answers in well under a
            // millisecond). A call that gives up is skipped, or refunded
            // if its batch was already sent.
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err("the batch was dropped".to_owned()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            }
        } else {
            // Nobody asking: this call asks, alone; whatever queued
            // meanwhile is handed to a task when it is done (or dropped).
            let _lead = Lead {
                shared: self,
                timeout,
            };
            match self.ask(&[(cost, max_wait_us)], timeout).await {
                Ok(answers) => answers
                    .first()
                    .copied()
                    .ok_or_else(|| "the script answered nothing".to_owned()),
                Err(reason) => {
                    self.forget_connection();
                    Err(reason)
                }
            }
        };
        match answer {
            Ok((true, wait)) => Ok(Duration::from_micros(wait)),
            Ok((false, wait)) => Err(Refusal::Limited(Some(Duration::from_micros(wait)))),
            Err(reason) => Err(Refusal::Backend(reason)),
        }
    }

    fn lock_batch(&self) -> std::sync::MutexGuard<'_, Batch> {
        self.batch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The asking is over: the calls queued meanwhile go in a task (the
    /// asking goes on), or nobody asks any more.
    fn hand_on(self: &Arc<Self>, timeout: Duration) {
        let mut batch = self.lock_batch();
        if batch.queue.is_empty() {
            batch.asking = false;
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                drop(batch);
                rt.spawn(Arc::clone(self).ask_batches(timeout));
            }
            Err(_) => {
                // No runtime to send them from: they are told at once.
                batch.asking = false;
                for ask in batch.queue.drain(..) {
                    let _ = ask
                        .answer
                        .send(Err("no tokio runtime to ask Redis from".to_owned()));
                }
            }
        }
    }

    /// Sends the queued calls, a batch at a time, until none is left; if
    /// the task is dropped (its runtime shutting down), the calls still
    /// queued are told, and the next call asks.
    async fn ask_batches(self: Arc<Self>, timeout: Duration) {
        let mut guard = Asking {
            shared: &self,
            done: false,
        };
        loop {
            let batch: Vec<Ask> = {
                let mut batch = self.lock_batch();
                // A caller that gave up is not asked for.
                batch.queue.retain(|a| !a.answer.is_closed());
                if batch.queue.is_empty() {
                    batch.asking = false;
                    guard.done = true;
                    return;
                }
                std::mem::take(&mut batch.queue)
            };
            let items: Vec<(u64, u64)> = batch.iter().map(|a| (a.cost, a.max_wait_us)).collect();
            match self.ask(&items, timeout).await {
                Ok(answers) => {
                    let mut unclaimed = 0i64;
                    for (ask, answer) in batch.into_iter().zip(answers) {
                        let cost = ask.cost;
                        if ask.answer.send(Ok(answer)).is_err() && answer.0 {
                            // Reserved for a caller that gave up meanwhile.
                            unclaimed = unclaimed.saturating_sub_unsigned(cost);
                        }
                    }
                    if unclaimed != 0
                        && let Err(reason) = self.adjust(unclaimed, timeout).await
                    {
                        self.report(
                            &reason,
                            "could not give back a reservation its caller gave up on; it refills at the limit's rate",
                        );
                    }
                }
                Err(reason) => {
                    self.forget_connection();
                    for ask in batch {
                        let _ = ask.answer.send(Err(reason.clone()));
                    }
                }
            }
        }
    }

    /// One script for `batch`, each call's `(cost, longest wait µs)`:
    /// each call's `(admitted, wait µs)`.
    async fn ask(
        &self,
        batch: &[(u64, u64)],
        timeout: Duration,
    ) -> Result<Vec<(bool, u64)>, String> {
        let mut conn = self.connection(timeout).await?;
        let mut call = self.script.prepare_invoke();
        call.key(&self.key)
            .arg(self.interval_us)
            .arg(self.interval_us * self.capacity as f64);
        if let Some(j) = self.joined.get() {
            call.key(&j.key)
                .arg(j.interval_us)
                .arg(j.interval_us * j.capacity as f64);
        }
        for (cost, max_wait_us) in batch {
            call.arg(*cost).arg(*max_wait_us);
        }
        let flat: Vec<i64> = tokio::time::timeout(timeout, call.invoke_async(&mut conn))
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
            .map_err(|e| format!("the script failed: {e}"))?;
        if flat.len() != batch.len() * 2 {
            return Err(format!(
                "the script answered {} values for {} calls",
                flat.len(),
                batch.len()
            ));
        }
        Ok(flat
            .chunks(2)
            .map(|c| (c[0] == 1, c[1].max(0).unsigned_abs()))
            .collect())
    }
}

/// A rate limit kept in Redis and shared by every process using the same
/// `key`; see the module docs.
///
/// ```no_run
/// use palisade_ratelimit::RedisRateLimitLayer;
/// use std::time::Duration;
///
/// // 600 requests per minute across the fleet; wait up to 2 s.
/// let layer = RedisRateLimitLayer::new("redis://127.0.0.1:6379", "palisade:openai:rpm", 600, 10.0)
///     .unwrap()
///     .wait(Duration::from_secs(2));
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct RedisRateLimitLayer<F = PerRequest> {
    shared: Arc<Shared>,
    max_wait: Duration,
    timeout: Duration,
    fail: FailMode,
    cost: F,
}

impl RedisRateLimitLayer {
    /// A limit of `capacity` units refilled at `per_second`, kept under `key`
    /// in the Redis at `url` (`redis://host:port/db`). Nothing connects
    /// until the first call.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a URL Redis cannot parse, a zero capacity or a rate
    /// that is not positive.
    pub fn new(
        url: &str,
        key: impl Into<String>,
        capacity: u64,
        per_second: f64,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            shared: Arc::new(Shared::new(url, key.into(), capacity, per_second)?),
            max_wait: Duration::ZERO,
            timeout: Duration::from_millis(50),
            fail: FailMode::Open,
            cost: PerRequest,
        })
    }
}

impl<F> RedisRateLimitLayer<F> {
    /// Waits up to `max_wait` for capacity.
    #[must_use]
    pub fn wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Refuses at once when there is no capacity (the default).
    #[must_use]
    pub fn reject(mut self) -> Self {
        self.max_wait = Duration::ZERO;
        self
    }

    /// How long a call may wait for Redis (50 ms by default): connecting
    /// and the script each within it, so at most twice it in all.
    #[must_use]
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// When Redis cannot be asked, let the call through (the default).
    #[must_use]
    pub fn fail_open(mut self) -> Self {
        self.fail = FailMode::Open;
        self
    }

    /// When Redis cannot be asked, refuse the call with
    /// [`BackendUnavailable`].
    #[must_use]
    pub fn fail_closed(mut self) -> Self {
        self.fail = FailMode::Closed;
        self
    }

    /// Tells `hook` of every time Redis could not be asked (with the
    /// reason; for a counter), besides the log line. Set once: a second
    /// hook is ignored.
    #[must_use]
    pub fn on_error(self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        let _ = self.shared.on_error.set(Arc::new(hook));
        self
    }

    /// Sets what a request costs (default: 1).
    pub fn cost<F2>(self, cost: F2) -> RedisRateLimitLayer<F2> {
        RedisRateLimitLayer {
            shared: self.shared,
            max_wait: self.max_wait,
            timeout: self.timeout,
            fail: self.fail,
            cost,
        }
    }
}

impl<S, F: Clone> Layer<S> for RedisRateLimitLayer<F> {
    type Service = RedisRateLimit<S, F>;

    fn layer(&self, inner: S) -> RedisRateLimit<S, F> {
        RedisRateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RedisRateLimitLayer`] builds.
#[derive(Clone, Debug)]
pub struct RedisRateLimit<S, F> {
    inner: S,
    layer: RedisRateLimitLayer<F>,
}

/// The boxed future of [`RedisRateLimit`] (a network round trip, shared
/// with the calls asking at the same time).
pub type RedisFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'static>>;

impl<S, B, F> Service<Request<B>> for RedisRateLimit<S, F>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    F: RequestCost<B>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = RedisFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let cost = self.layer.cost.cost(&req);
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let shared = self.layer.shared.clone();
        let (max_wait, timeout, fail) = (self.layer.max_wait, self.layer.timeout, self.layer.fail);
        Box::pin(async move {
            match shared.acquire(cost, max_wait, timeout).await {
                Ok(wait) if wait.is_zero() => {}
                Ok(wait) => {
                    tokio::time::sleep(wait).await;
                    std::future::poll_fn(|cx| inner.poll_ready(cx))
                        .await
                        .map_err(Into::into)?;
                }
                Err(Refusal::Limited(after)) => return Err(RateLimited::new(after).into()),
                Err(Refusal::Backend(reason)) => match fail {
                    FailMode::Open => {
                        shared.report(&reason, FAILED_OPEN);
                    }
                    FailMode::Closed => {
                        shared.report(&reason, FAILED_CLOSED);
                        return Err(BackendUnavailable {
                            backend: shared.shown.clone(),
                            reason,
                        }
                        .into());
                    }
                },
            }
            inner.call(req).await.map_err(Into::into)
        })
    }
}

/// A tokens-per-minute limit kept in Redis: what
/// [`TokenLimitLayer::redis`](crate::TokenLimitLayer::redis) adds.
#[derive(Clone, Debug)]
pub(crate) struct RedisTokens {
    shared: Arc<Shared>,
    timeout: Duration,
    fail: FailMode,
}

/// A limit of one unit per call kept beside another in the same script.
#[derive(Debug)]
pub(crate) struct Joined {
    key: String,
    capacity: u64,
    interval_us: f64,
}

/// What asking Redis for a reservation came to: the wait before it is
/// ours, or the refusal (a limit's, or a backend that is down and fails
/// closed), or `Err(None)`: Redis could not be asked and the limit fails
/// open — the call goes without a reservation.
pub(crate) type Asked = Result<Duration, Option<BoxError>>;

impl RedisTokens {
    pub(crate) fn new(
        url: &str,
        key: String,
        capacity: u64,
        per_second: f64,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            shared: Arc::new(Shared::new(url, key, capacity, per_second)?),
            timeout: Duration::from_millis(50),
            fail: FailMode::Open,
        })
    }

    /// Also admits one request per call against `capacity` requests
    /// refilled at `per_second`, kept under `key`, in the same script.
    pub(crate) fn join_requests(
        &mut self,
        key: String,
        capacity: u64,
        per_second: f64,
    ) -> Result<(), ConfigError> {
        validate(capacity, per_second)?;
        self.shared
            .joined
            .set(Joined {
                key,
                capacity,
                interval_us: 1e6 / per_second,
            })
            .map_err(|_| ConfigError("a requests limit is joined already".to_owned()))
    }

    pub(crate) fn timeout(&mut self, d: Duration) {
        self.timeout = d;
    }

    pub(crate) fn on_error(&self, hook: ErrorHook) {
        let _ = self.shared.on_error.set(hook);
    }

    pub(crate) fn fail_closed(&mut self, closed: bool) {
        self.fail = if closed {
            FailMode::Closed
        } else {
            FailMode::Open
        };
    }

    /// Reserves `cost` tokens, waiting up to `max_wait` for them.
    pub(crate) fn ask(
        &self,
        cost: u64,
        max_wait: Duration,
    ) -> Pin<Box<dyn Future<Output = Asked> + Send + 'static>> {
        let this = self.clone();
        Box::pin(async move {
            match this.shared.acquire(cost, max_wait, this.timeout).await {
                Ok(wait) => Ok(wait),
                Err(Refusal::Limited(after)) => Err(Some(RateLimited::new(after).into())),
                Err(Refusal::Backend(reason)) => match this.fail {
                    FailMode::Open => {
                        this.shared.report(&reason, FAILED_OPEN);
                        Err(None)
                    }
                    FailMode::Closed => {
                        this.shared.report(&reason, FAILED_CLOSED);
                        Err(Some(
                            BackendUnavailable {
                                backend: this.shared.shown.clone(),
                                reason,
                            }
                            .into(),
                        ))
                    }
                },
            }
        })
    }

    /// Gives back (`delta` < 0) or charges (> 0) tokens, in the
    /// background (a settlement happens where nothing can wait: a body's
    /// end or drop). Settlements are summed over [`SETTLE_EVERY`] and
    /// while one is on its way, and the sum goes in the next script: at
    /// most one settlement script per limit is in flight, however many
    /// calls end. A failure is logged, and the
    /// reservation then refills at the limit's rate as a spent one would.
    pub(crate) fn adjust(&self, delta: i64) {
        if delta == 0 {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                backend = %self.shared.shown,
                delta,
                "a token settlement outside a tokio runtime was dropped; the reservation refills at the limit's rate"
            );
            return;
        };
        self.shared.pending.fetch_add(delta, Ordering::AcqRel);
        if self.shared.settling.swap(true, Ordering::AcqRel) {
            // The task on its way sends this one too.
            return;
        }
        let this = self.clone();
        rt.spawn(async move {
            // Stopped before its end (its runtime shutting down): the next
            // settlement starts a task again.
            let mut guard = Settling {
                shared: &this.shared,
                done: false,
            };
            loop {
                // The settlements of calls ending meanwhile join this one.
                tokio::time::sleep(SETTLE_EVERY).await;
                let sum = this.shared.pending.swap(0, Ordering::AcqRel);
                if sum != 0
                    && let Err(reason) = this.shared.adjust(sum, this.timeout).await
                {
                    this.shared.report(
                        &reason,
                        "could not settle tokens in Redis; the reservation refills at the limit's rate",
                    );
                }
                this.shared.settling.store(false, Ordering::Release);
                // One added after the swap, whose caller saw this task
                // still settling, is this task's to send.
                if this.shared.pending.load(Ordering::Acquire) == 0
                    || this.shared.settling.swap(true, Ordering::AcqRel)
                {
                    guard.done = true;
                    return;
                }
            }
        });
    }
}

/// The settlements' task: if it is dropped before its end, the next
/// settlement starts one again.
struct Settling<'a> {
    shared: &'a Shared,
    done: bool,
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.settling.store(false, Ordering::Release);
        }
    }
}

/// How long a settlement waits for others to join it (summed into one
/// script): a refund reaches the fleet this much later, and a busy limit
/// sends one settlement script per this time instead of one per call.
const SETTLE_EVERY: Duration = Duration::from_millis(2);

const FAILED_OPEN: &str = "rate limit's Redis unavailable; letting the call through (fail open)";
const FAILED_CLOSED: &str = "rate limit's Redis unavailable; refusing the call (fail closed)";
