//! [`TokenLimitLayer`]: tokens per minute, reserved from an estimate and
//! reconciled with the usage the upstream reports.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use palisade_core::{BoxError, ParsedBody, tokens};
use palisade_providers::Api;
use palisade_providers::observe::{self, End, Summary, Watch, WatchedBody};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::bucket::Bucket;
use crate::future::{Reservation, ResponseFuture};
use crate::layer::{ConfigError, validate};
use crate::service::granted;

/// A tokens-per-minute limit for LLM calls.
///
/// Each call reserves its estimate — prompt tokens counted with a real
/// tokenizer plus its `max_tokens` ([`palisade_core::tokens::estimate`]),
/// from the body parsed once ([`ParsedBody`]; stored for the layers after
/// this one) — then, when the response body **ends**, the reservation is
/// reconciled with the `usage` the upstream reported (the JSON answer's, or
/// a stream's final events): the difference is refunded, or charged when
/// the call cost more (later calls then wait longer). A stream settles at
/// its **terminator** (`data: [DONE]`, `message_stop`), so a caller that
/// stops reading there settles too.
///
/// Without usage in the answer (an OpenAI stream without
/// `stream_options.include_usage`, a server that reports none), a complete
/// success settles at the prompt estimate plus what was seen of the output
/// — one token per stream event (providers send about one token per chunk),
/// or a quarter of the bytes of a JSON answer — never more than was
/// reserved. An error status that reports no usage is refunded whole
/// (providers do not bill it). A body that fails before its end (or
/// terminator) keeps its reservation: nothing says what it cost. A call
/// cancelled by its caller — its future dropped before the answer, or its
/// body dropped before its end (a hedged call's loser, a client that went
/// away) — settles at what it can have cost so far: the prompt estimate
/// plus the output seen (one token per stream event), at most what was
/// reserved; the rest of the reservation (the output it never produced)
/// is refunded.
///
/// Waiting, refusal and sharing work as in [`crate::RateLimitLayer`]: one
/// bucket shared by every clone; a call whose estimate exceeds the capacity
/// fails at once.
///
/// ```
/// use palisade_ratelimit::TokenLimitLayer;
/// use std::time::Duration;
///
/// let tpm = TokenLimitLayer::per_minute(200_000).unwrap().wait(Duration::from_secs(2));
/// assert_eq!(tpm.bucket().capacity(), 200_000);
/// ```
#[derive(Clone)]
pub struct TokenLimitLayer {
    bucket: Arc<Bucket>,
    max_wait: Duration,
    enabled: bool,
    /// The API answers are read as; `None`: by the request's path.
    api: Option<Api>,
    /// The bucket's size and rate (for a Redis-kept copy).
    #[cfg(feature = "redis")]
    capacity: u64,
    #[cfg(feature = "redis")]
    per_second: f64,
    /// Kept in Redis instead of `bucket` ([`TokenLimitLayer::redis`]).
    #[cfg(feature = "redis")]
    redis: Option<crate::redis::RedisTokens>,
}

impl fmt::Debug for TokenLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenLimitLayer")
            .field("bucket", &self.bucket)
            .field("max_wait", &self.max_wait)
            .field("enabled", &self.enabled)
            .field("api", &self.api)
            .field("shared", &self.shared())
            .finish()
    }
}

impl TokenLimitLayer {
    /// `tokens` per minute, with a burst of `tokens`; refuses at once.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for 0 tokens.
    pub fn per_minute(tokens: u64) -> Result<Self, ConfigError> {
        Self::try_new(tokens, tokens as f64 / 60.0)
    }

    /// A bucket of `capacity` tokens refilled at `per_second`. Builds the
    /// tokenizer now if nothing has (`palisade_core::tokens::warm_up`,
    /// tens of milliseconds once per process), so the first request does
    /// not wait for it.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a zero capacity or a rate that is not positive.
    pub fn try_new(capacity: u64, per_second: f64) -> Result<Self, ConfigError> {
        validate(capacity, per_second)?;
        // The tokenizer is built now, not on the first request's path.
        palisade_core::tokens::warm_up();
        Ok(Self {
            bucket: Arc::new(Bucket::new(capacity, per_second)),
            max_wait: Duration::ZERO,
            enabled: true,
            api: None,
            #[cfg(feature = "redis")]
            capacity,
            #[cfg(feature = "redis")]
            per_second,
            #[cfg(feature = "redis")]
            redis: None,
        })
    }

    /// Keeps the limit in the Redis at `url` (`redis://host:port/db`)
    /// under `key`, shared by every process using the same key — a fleet
    /// admits the limit once, not once per process (feature `redis`).
    ///
    /// Each call reserves its estimate in one atomic script on Redis's
    /// clock (GCRA, as [`RedisRateLimitLayer`](crate::RedisRateLimitLayer));
    /// its settlement (refund or charge, by the same rules as in process)
    /// is a second script, sent in the background when the answer ends. A
    /// process that dies mid-call never settles: its reservation is spent
    /// capacity that refills at the limit's rate, and the key expires once
    /// the bucket is full again. Redis unreachable or slow: within twice
    /// the timeout (50 ms by default) the call goes without a reservation
    /// (fail open, logged) or fails with
    /// [`BackendUnavailable`](crate::BackendUnavailable)
    /// ([`fail_closed`](Self::fail_closed)). A call cancelled while its
    /// reservation is being asked for keeps what Redis may have reserved
    /// until it refills; one cancelled after (waiting for its turn, or
    /// mid-answer) gives back its unused output as in process. Nothing
    /// connects until the first call.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a URL Redis cannot parse.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, url: &str, key: impl Into<String>) -> Result<Self, ConfigError> {
        self.redis = Some(crate::redis::RedisTokens::new(
            url,
            key.into(),
            self.capacity,
            self.per_second,
        )?);
        Ok(self)
    }

    /// Also admits each call against a requests-per-minute limit kept in
    /// the same Redis under `key` — in the same script as its tokens: one
    /// round trip for both, and a call that either limit refuses takes from
    /// neither. What a [`RedisRateLimitLayer`](crate::RedisRateLimitLayer)
    /// of `per_minute` requests (a burst of as many) in front would do,
    /// without its round trip. It is kept in Redis only: call
    /// [`redis`](Self::redis) first.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] without [`redis`](Self::redis) first, or for a
    /// `per_minute` of 0.
    #[cfg(feature = "redis")]
    pub fn redis_requests(
        mut self,
        per_minute: u64,
        key: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let Some(r) = &mut self.redis else {
            return Err(ConfigError(
                "redis_requests joins a limit kept in Redis: call redis(url, key) first".to_owned(),
            ));
        };
        r.join_requests(key.into(), per_minute, per_minute as f64 / 60.0)?;
        Ok(self)
    }

    /// How long a call may wait for Redis (50 ms by default; a limit kept
    /// in Redis only): connecting and the script each within it, so at
    /// most twice it in all.
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn redis_timeout(mut self, d: Duration) -> Self {
        if let Some(r) = &mut self.redis {
            r.timeout(d);
        }
        self
    }

    /// When Redis cannot be asked, refuse the call with
    /// [`BackendUnavailable`](crate::BackendUnavailable) instead of letting
    /// it through (a limit kept in Redis only).
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn fail_closed(mut self) -> Self {
        if let Some(r) = &mut self.redis {
            r.fail_closed(true);
        }
        self
    }

    /// Tells `hook` of every time the limit's Redis could not be asked or
    /// a settlement could not be sent (with the reason; for a counter),
    /// besides the log line (a limit kept in Redis only; set once).
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn on_redis_error(self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        if let Some(r) = &self.redis {
            r.on_error(Arc::new(hook));
        }
        self
    }

    /// Reserves `cost` units now — in Redis when the limit is kept there
    /// ([`redis`](Self::redis)), else in process — or refuses: for code
    /// admitting calls itself (a gateway's per-caller limits), which then
    /// settles with [`reconcile`](Self::reconcile) or gives back with
    /// [`refund`](Self::refund). `Ok(false)`: nothing was reserved (Redis
    /// could not be asked and the limit fails open): settle nothing.
    ///
    /// # Errors
    ///
    /// [`RateLimited`](palisade_core::RateLimited) with the wait, or
    /// [`BackendUnavailable`](crate::BackendUnavailable) when Redis cannot
    /// be asked and the limit fails closed.
    pub async fn reserve(&self, cost: u64) -> Result<bool, BoxError> {
        #[cfg(feature = "redis")]
        if let Some(r) = &self.redis {
            return match r.ask(cost, Duration::ZERO).await {
                Ok(_) => Ok(true),
                Err(Some(e)) => Err(e),
                Err(None) => Ok(false),
            };
        }
        self.bucket.take(cost).map(|()| true).map_err(Into::into)
    }

    /// Gives back `n` units reserved with [`reserve`](Self::reserve) (in
    /// Redis in the background, when kept there).
    pub fn refund(&self, n: u64) {
        self.ledger().refund(n);
    }

    fn ledger(&self) -> Ledger {
        #[cfg(feature = "redis")]
        if let Some(r) = &self.redis {
            return Ledger::Redis(r.clone());
        }
        Ledger::Local(self.bucket.clone())
    }

    /// Settles a reservation of `reserved` tokens (`prompt` of them the
    /// prompt's estimate) made with [`reserve`](Self::reserve) when `res`'s
    /// body ends, by the rules of the layer (usage read as `api`'s answer;
    /// an error status without usage refunded; a failed body kept; a
    /// cancelled one kept at its prompt and the output seen).
    pub fn reconcile<B>(
        &self,
        res: Response<B>,
        api: Option<Api>,
        reserved: u64,
        prompt: u64,
    ) -> Response<Reconciled<B>>
    where
        B: Body<Data = Bytes>,
    {
        let success = res.status().is_success();
        observe::watch(
            res,
            api,
            Settle {
                settlement: Settlement {
                    api,
                    ledger: self.ledger(),
                    reserved,
                    prompt,
                },
                success,
                bytes: 0,
            },
        )
    }

    /// Whether the limit is kept in Redis.
    pub fn shared(&self) -> bool {
        #[cfg(feature = "redis")]
        {
            self.redis.is_some()
        }
        #[cfg(not(feature = "redis"))]
        {
            false
        }
    }

    /// No limit: calls pass straight through (for stacks that decide at run
    /// time, with one service type either way).
    pub fn off() -> Self {
        Self {
            bucket: Arc::new(Bucket::new(u64::MAX / 2, 1.0)),
            max_wait: Duration::ZERO,
            enabled: false,
            api: None,
            #[cfg(feature = "redis")]
            capacity: u64::MAX / 2,
            #[cfg(feature = "redis")]
            per_second: 1.0,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// Waits up to `max_wait` for tokens (FIFO).
    #[must_use]
    pub fn wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Reads every answer's usage as `api`'s. A request carrying an [`Api`]
    /// in its extensions is read as that one (a service serving several
    /// APIs says so per call); else this one; else the one the request's
    /// path names ([`Api::from_path`]). When none names an API (an
    /// OpenAI-compatible server's own route), no API is assumed: the
    /// answer's usage is not read, and the call is settled as an answer
    /// without usage (the prompt's estimate plus what was seen of the
    /// output), as `palisade_trace::TraceLayer` reads nothing either.
    #[must_use]
    pub fn api(mut self, api: Api) -> Self {
        self.api = Some(api);
        self
    }

    /// Refuses at once when the tokens are not there (the default).
    #[must_use]
    pub fn reject(mut self) -> Self {
        self.max_wait = Duration::ZERO;
        self
    }

    /// The shared bucket.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }
}

impl<S> Layer<S> for TokenLimitLayer {
    type Service = TokenLimit<S>;

    fn layer(&self, inner: S) -> TokenLimit<S> {
        TokenLimit {
            inner,
            bucket: self.bucket.clone(),
            max_wait: self.max_wait,
            enabled: self.enabled,
            api: self.api,
            #[cfg(feature = "redis")]
            redis: self.redis.clone(),
        }
    }
}

/// The service [`TokenLimitLayer`] builds.
#[derive(Clone, Debug)]
pub struct TokenLimit<S> {
    inner: S,
    bucket: Arc<Bucket>,
    max_wait: Duration,
    enabled: bool,
    api: Option<Api>,
    #[cfg(feature = "redis")]
    redis: Option<crate::redis::RedisTokens>,
}

impl<S, B, RB> Service<Request<B>> for TokenLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: AsRef<[u8]>,
    RB: Body<Data = Bytes>,
{
    type Response = Response<Reconciled<RB>>;
    type Error = BoxError;
    type Future = TokenFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if !self.enabled {
            return TokenFuture {
                inner: ResponseFuture::calling(self.inner.call(req)),
                settle: None,
                asking: None,
            };
        }
        let estimate = match ParsedBody::get_or_parse(&mut req) {
            Ok(p) => tokens::estimate(&p),
            Err(_) => tokens::TokenEstimate {
                prompt: (req.body().as_ref().len() as u64).div_ceil(tokens::BYTES_PER_TOKEN),
                max_output: 0,
            },
        };
        let cost = estimate.total().max(1);
        let api = req
            .extensions()
            .get::<Api>()
            .copied()
            .or(self.api)
            .or_else(|| Api::from_path(req.uri().path()));
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            // Asked first; the call waits for the answer.
            let fresh = self.inner.clone();
            let svc = std::mem::replace(&mut self.inner, fresh);
            return TokenFuture {
                inner: ResponseFuture::refused(palisade_core::RateLimited::new(None)),
                settle: None,
                asking: Some(Box::new(Asking {
                    ask: redis.ask(cost, self.max_wait),
                    svc: Some(svc),
                    req: Some(req),
                    // Armed only once Redis said it is reserved.
                    pending: Some(Settlement {
                        api,
                        ledger: Ledger::Redis(redis.clone()),
                        reserved: cost,
                        prompt: estimate.prompt,
                    }),
                })),
            };
        }
        match self.bucket.acquire(cost, self.max_wait) {
            Err(refused) => TokenFuture {
                inner: ResponseFuture::refused(refused),
                settle: None,
                asking: None,
            },
            Ok(grant) => TokenFuture {
                inner: granted(&self.bucket, grant, &mut self.inner, req),
                settle: Some(Settlement {
                    api,
                    ledger: Ledger::Local(self.bucket.clone()),
                    reserved: cost,
                    prompt: estimate.prompt,
                }),
                asking: None,
            },
        }
    }
}

/// Where a reservation was made.
#[derive(Clone, Debug)]
enum Ledger {
    Local(Arc<Bucket>),
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisTokens),
}

impl Ledger {
    fn refund(&self, n: u64) {
        match self {
            Self::Local(b) => b.refund(n),
            #[cfg(feature = "redis")]
            Self::Redis(r) => r.adjust(-i64::try_from(n).unwrap_or(i64::MAX)),
        }
    }

    fn charge(&self, n: u64) {
        match self {
            Self::Local(b) => b.charge(n),
            #[cfg(feature = "redis")]
            Self::Redis(r) => r.adjust(i64::try_from(n).unwrap_or(i64::MAX)),
        }
    }
}

/// A reservation to reconcile.
#[derive(Debug)]
struct Settlement {
    /// The API called: where its answer's usage is (`None`: unnamed, its
    /// usage not read; settled as an answer without usage).
    api: Option<Api>,
    ledger: Ledger,
    reserved: u64,
    /// The prompt part of the estimate (for answers without usage).
    prompt: u64,
}

impl Settlement {
    fn settle(mut self, used: u64) {
        let reserved = std::mem::take(&mut self.reserved);
        if reserved == 0 {
            return;
        }
        if used < reserved {
            self.ledger.refund(reserved - used);
        } else if used > reserved {
            self.ledger.charge(used - reserved);
        }
    }

    /// Kept whole: nothing says what the call cost.
    fn keep(mut self) {
        self.reserved = 0;
    }
}

impl Drop for Settlement {
    /// Dropped unsettled: the call was cancelled before its answer (its
    /// future dropped); it can have cost its prompt, not its output.
    fn drop(&mut self) {
        let reserved = std::mem::take(&mut self.reserved);
        if reserved > self.prompt {
            self.ledger.refund(reserved - self.prompt);
        }
    }
}

pin_project! {
    /// The future of [`TokenLimit`].
    pub struct TokenFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        inner: ResponseFuture<S, B>,
        settle: Option<Settlement>,
        // A limit kept elsewhere (Redis) is asked first; `inner` is set
        // from its answer.
        asking: Option<Box<Asking<S, B>>>,
    }
}

/// A call waiting for a shared limit's answer.
struct Asking<S, B> {
    ask: Pin<Box<dyn Future<Output = Asked> + Send + 'static>>,
    svc: Option<S>,
    req: Option<Request<B>>,
    /// Its settlement, once the reservation is known to be made.
    pending: Option<Settlement>,
}

impl<S, B> Drop for Asking<S, B> {
    /// Cancelled while asking: whether Redis reserved is not known, so
    /// nothing is given back (a reservation made refills at the limit's
    /// rate).
    fn drop(&mut self) {
        if let Some(s) = self.pending.take() {
            s.keep();
        }
    }
}

/// What asking a shared limit came to: the wait before the reservation is
/// ours; a refusal; or `Err(None)`, the limit could not be asked and fails
/// open (the call goes unreserved).
type Asked = Result<Duration, Option<BoxError>>;

impl<S, B> fmt::Debug for TokenFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFuture").finish_non_exhaustive()
    }
}

impl<S, B, RB> Future for TokenFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<Reconciled<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(asking) = this.asking.as_mut() {
            let asked = ready!(asking.ask.as_mut().poll(cx));
            let Some(mut asking) = this.asking.take() else {
                return Poll::Ready(Err(
                    "palisade-ratelimit: future polled after completion".into()
                ));
            };
            let pending = asking.pending.take();
            let (Some(mut svc), Some(req)) = (asking.svc.take(), asking.req.take()) else {
                return Poll::Ready(Err(
                    "palisade-ratelimit: future polled after completion".into()
                ));
            };
            match (&asked, pending) {
                (Ok(_), pending) => *this.settle = pending,
                // Nothing was reserved: nothing to settle.
                (Err(_), Some(s)) => s.keep(),
                (Err(_), None) => {}
            }
            let next = match asked {
                Ok(wait) if wait.is_zero() => ResponseFuture::calling(svc.call(req)),
                // A cancelled waiter keeps its shared reservation until it
                // refills (the settlement still refunds its output part).
                Ok(wait) => ResponseFuture::waiting(svc, req, wait, Reservation::elsewhere()),
                Err(refusal) => match refusal {
                    Some(e) => ResponseFuture::failed(e),
                    None => ResponseFuture::calling(svc.call(req)),
                },
            };
            this.inner.set(next);
        }
        match ready!(this.inner.poll(cx)) {
            Ok(res) => {
                let success = res.status().is_success();
                // Watched through the response's one observation: decoded
                // once, whichever layers watch it.
                Poll::Ready(Ok(match this.settle.take() {
                    Some(settlement) => observe::watch(
                        res,
                        settlement.api,
                        Settle {
                            settlement,
                            success,
                            bytes: 0,
                        },
                    ),
                    None => res.map(WatchedBody::unwatched),
                }))
            }
            Err(e) => {
                // The call never reached the upstream, or failed there
                // before answering: nothing was billed.
                if let Some(s) = this.settle.take() {
                    s.settle(0);
                }
                Poll::Ready(Err(e))
            }
        }
    }
}

/// Settles a reservation when the answer is complete (see
/// [`WatchedBody`]: at a stream's terminator, or the body's end).
#[derive(Debug)]
pub struct Settle {
    settlement: Settlement,
    success: bool,
    /// Body bytes seen (the output guess for a JSON answer without usage).
    bytes: u64,
}

impl Watch for Settle {
    fn on_data(&mut self, data: &Bytes) {
        self.bytes = self.bytes.saturating_add(data.len() as u64);
    }

    fn on_end(&mut self, s: Summary, how: End) {
        // Take the settlement out: it settles once.
        let settlement = Settlement {
            api: self.settlement.api,
            ledger: self.settlement.ledger.clone(),
            reserved: std::mem::take(&mut self.settlement.reserved),
            prompt: self.settlement.prompt,
        };
        match how {
            End::Complete => {}
            // A failed body: nothing says what it cost; the reservation
            // stays.
            End::Failed => return settlement.keep(),
            // Cancelled mid-answer: the prompt and the output seen so far.
            _ => {
                let used = settlement.prompt.saturating_add(s.events);
                let used = used.min(settlement.reserved);
                return settlement.settle(used);
            }
        }
        let used = match (s.input_tokens, s.output_tokens) {
            // A success without usage: the prompt and what was seen of the
            // output, at most what was reserved.
            (None, None) if self.success => {
                let output = if s.events > 0 {
                    s.events
                } else {
                    self.bytes.div_ceil(tokens::BYTES_PER_TOKEN)
                };
                settlement
                    .prompt
                    .saturating_add(output)
                    .min(settlement.reserved)
            }
            // An error status reporting nothing is not billed.
            (None, None) => 0,
            (i, o) => i.unwrap_or(0).saturating_add(o.unwrap_or(0)),
        };
        settlement.settle(used);
    }
}

/// The response body of [`TokenLimit`]: settles the reservation when it
/// ends.
pub type Reconciled<B> = WatchedBody<B, Settle>;
