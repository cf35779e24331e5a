//! The recommended stack, assembled from one config struct.
//!
//! [`StackConfig::openai`] / [`StackConfig::anthropic`] start from the
//! defaults below; each setter changes one; [`StackConfig::build`] returns an
//! [`LlmStack`]: a named, cloneable `tower::Service` to keep in a struct
//! field. The order is `trace → schema → total timeout → retry → rate limit
//! (requests, then tokens) → breaker → per-attempt timeout → decompression
//! → client`; the crate docs say why.
//!
//! Requests ask for `Accept-Encoding: identity` unless they name an
//! encoding; an answer compressed anyway (gzip, deflate, br) is decoded
//! (tower-http's `Decompression`) before any layer looks inside it, and
//! reaches the caller without its `Content-Encoding`. An answer that was
//! not encoded passes as it came.
//!
//! | setting | default |
//! |---|---|
//! | base URL | `https://api.openai.com/v1` / `https://api.anthropic.com/v1` |
//! | key | `$OPENAI_API_KEY` / `$ANTHROPIC_API_KEY` |
//! | trace ids and GenAI span | on |
//! | schema validation | on (the provider's bundled schema) |
//! | total timeout (retries and the streamed body included) | 10 min |
//! | first byte / idle (SSE-aware) / connect | 60 s / 30 s / 10 s |
//! | attempts / base delay / max delay | 3 / 200 ms / 10 s |
//! | requests / tokens per minute, max wait | none, none, 0 (reject) |
//! | breaker | failure rate 0.5 over the last 20 calls, at least 10 calls, open 30 s, 2 half-open probes |
//!
//! ```
//! use palisade::preset::{LlmStack, StackConfig};
//! use palisade::core::RequestBody;
//! use tower::ServiceExt;
//!
//! struct App {
//!     llm: LlmStack,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade::core::BoxError> {
//! let upstream = palisade::mock::MockUpstream::new().serve().await?;
//! let app = App {
//!     llm: StackConfig::openai().base_url(upstream.base_url()).no_key().requests_per_minute(600).build()?,
//! };
//! let req = http::Request::post("/chat/completions")
//!     .body(RequestBody::from(r#"{"model":"mock","messages":[{"role":"user","content":"hi"}]}"#))?;
//! let res = app.llm.clone().oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use http_body_util::Either;
use opentelemetry::metrics::Meter;
use palisade_breaker::{BreakerHandle, BreakerLayer, Transition, Window};
use palisade_client::{Auth, HttpClient, KeySource};
use palisade_core::{BoxError, BoxLlmBody, RequestBody};
use palisade_providers::{Api, KeyStyle};
use palisade_ratelimit::{RateLimitLayer, RedisRateLimitLayer, TokenLimitLayer};
use palisade_retry::{RetryEvent, RetryLayer};
use palisade_schema::SchemaLayer;
use palisade_timeout::TimeoutLayer;
use palisade_trace::TraceLayer;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::decompression::Decompression;

/// The default budget of a whole call, retries and the streamed body
/// included.
pub const DEFAULT_TOTAL: Duration = Duration::from_secs(600);
/// The default wait for an attempt's response headers.
pub const DEFAULT_FIRST_BYTE: Duration = Duration::from_secs(60);
/// The default longest gap between two stream events carrying data.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30);
/// The default TCP (and TLS) connect timeout.
pub const DEFAULT_CONNECT: Duration = Duration::from_secs(10);

/// The response body of an [`LlmStack`] under its older name: the same type
/// as [`BoxLlmBody`], which is the name to use
/// (it lives in `palisade_core` beside `BoxLlmService`). `LlmBody` is kept
/// so that code naming it still compiles.
pub use palisade_core::BoxLlmBody as LlmBody;

type RetryHook = Arc<dyn Fn(&RetryEvent) + Send + Sync>;
type TransitionHook = Arc<dyn Fn(Transition) + Send + Sync>;

/// Everything the preset stack needs; see the module docs for the defaults.
#[derive(Clone)]
pub struct StackConfig {
    api: Api,
    base_url: String,
    key: Option<KeySource>,
    validate: bool,
    trace: bool,
    total: Duration,
    first_byte: Duration,
    idle: Duration,
    connect: Duration,
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    requests_per_minute: Option<u64>,
    tokens_per_minute: Option<u64>,
    max_wait: Duration,
    failure_rate: f64,
    minimum_calls: u32,
    window: usize,
    open_for: Duration,
    half_open_calls: u32,
    classifier: palisade_core::classify::LlmClassifier,
    breaker_name: Option<String>,
    redis: Option<String>,
    redis_fail_closed: bool,
    share_breaker: bool,
    on_redis_error: Option<palisade_ratelimit::ErrorHook>,
    on_retry: Option<RetryHook>,
    on_transition: Option<TransitionHook>,
    meter: Option<Meter>,
}

impl fmt::Debug for StackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackConfig")
            .field("api", &self.api)
            .field("base_url", &self.base_url)
            .field("key", &self.key)
            .field("validate", &self.validate)
            .field("total", &self.total)
            .field("first_byte", &self.first_byte)
            .field("idle", &self.idle)
            .field("max_attempts", &self.max_attempts)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("tokens_per_minute", &self.tokens_per_minute)
            .field("metrics", &self.meter.is_some())
            .finish_non_exhaustive()
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, v: $ty) -> Self {
            self.$name = v;
            self
        }
    };
}

impl StackConfig {
    fn new(api: Api, base_url: &str, key_env: &str) -> Self {
        Self {
            api,
            base_url: base_url.to_owned(),
            key: Some(KeySource::env(key_env)),
            validate: true,
            trace: true,
            total: DEFAULT_TOTAL,
            first_byte: DEFAULT_FIRST_BYTE,
            idle: DEFAULT_IDLE,
            connect: DEFAULT_CONNECT,
            max_attempts: palisade_retry::DEFAULT_MAX_ATTEMPTS,
            base_delay: palisade_retry::DEFAULT_BASE_DELAY,
            max_delay: palisade_retry::DEFAULT_MAX_DELAY,
            requests_per_minute: None,
            tokens_per_minute: None,
            max_wait: Duration::ZERO,
            failure_rate: palisade_breaker::DEFAULT_FAILURE_RATE,
            minimum_calls: palisade_breaker::DEFAULT_MINIMUM_CALLS,
            window: palisade_breaker::DEFAULT_WINDOW_CALLS,
            open_for: palisade_breaker::DEFAULT_OPEN_FOR,
            half_open_calls: palisade_breaker::DEFAULT_HALF_OPEN_CALLS,
            classifier: palisade_core::classify::LlmClassifier::new(),
            breaker_name: None,
            redis: None,
            redis_fail_closed: false,
            share_breaker: false,
            on_redis_error: None,
            on_retry: None,
            on_transition: None,
            meter: None,
        }
    }

    /// OpenAI chat completions (and any OpenAI-compatible server, with
    /// [`base_url`](Self::base_url)); key from `$OPENAI_API_KEY`.
    pub fn openai() -> Self {
        Self::new(
            Api::ChatCompletions,
            "https://api.openai.com/v1",
            "OPENAI_API_KEY",
        )
    }

    /// Anthropic messages; key from `$ANTHROPIC_API_KEY`.
    pub fn anthropic() -> Self {
        Self::new(
            Api::Messages,
            "https://api.anthropic.com/v1",
            "ANTHROPIC_API_KEY",
        )
    }

    /// The API the stack speaks.
    pub fn api(&self) -> Api {
        self.api
    }

    /// The base URL requests are joined under.
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Where the key comes from.
    #[must_use]
    pub fn key(mut self, source: KeySource) -> Self {
        self.key = Some(source);
        self
    }

    /// Sends no key (local servers, the mock).
    #[must_use]
    pub fn no_key(mut self) -> Self {
        self.key = None;
        self
    }

    setter!(
        /// Validates request bodies against the provider's bundled schema
        /// (on by default).
        validate: bool
    );
    setter!(
        /// Propagates trace ids and opens a GenAI span per call
        /// (`palisade-trace`; on by default).
        trace: bool
    );
    setter!(
        /// The whole call's budget, retries and streamed body included.
        total: Duration
    );
    setter!(
        /// Request sent → response headers, per attempt.
        first_byte: Duration
    );
    setter!(
        /// The longest gap between two stream events carrying data.
        idle: Duration
    );
    setter!(
        /// TCP (and TLS) connect.
        connect: Duration
    );
    setter!(
        /// Attempts in all, the first call included.
        max_attempts: u32
    );
    setter!(
        /// The first retry's delay.
        base_delay: Duration
    );
    setter!(
        /// The longest delay between attempts, hints included.
        max_delay: Duration
    );
    setter!(
        /// How long a call may wait for rate-limit capacity (zero: refuse at
        /// once).
        max_wait: Duration
    );
    setter!(
        /// The failure rate over the breaker's window that opens it.
        failure_rate: f64
    );
    setter!(
        /// Calls in the window before the failure rate counts.
        minimum_calls: u32
    );
    setter!(
        /// The breaker's window: this many latest calls.
        window: usize
    );
    setter!(
        /// How long the breaker stays open.
        open_for: Duration
    );
    setter!(
        /// Probes let through when half-open.
        half_open_calls: u32
    );
    setter!(
        /// The one policy that decides what the retry layer retries and
        /// what the breaker counts as a failure (default
        /// [`LlmClassifier::new`](palisade_core::classify::LlmClassifier::new)).
        /// Give the same one to whatever else judges this stack's
        /// outcomes (a fallback, a balancer's failure penalty).
        classifier: palisade_core::classify::LlmClassifier
    );

    /// A requests-per-minute limit (also the burst).
    #[must_use]
    pub fn requests_per_minute(mut self, n: u64) -> Self {
        self.requests_per_minute = Some(n);
        self
    }

    /// A tokens-per-minute limit (also the burst); each call reserves its
    /// estimated prompt + `max_tokens` ([`palisade_core::tokens`]) and is
    /// reconciled with the reported usage when the answer is complete — a
    /// stream at its terminator ([`palisade_ratelimit::TokenLimitLayer`]).
    #[must_use]
    pub fn tokens_per_minute(mut self, n: u64) -> Self {
        self.tokens_per_minute = Some(n);
        self
    }

    /// Keeps the requests-per-minute and tokens-per-minute limits in the
    /// Redis at `url`, shared by every process with the same
    /// [`name`](Self::name) (keys `palisade:{name}:rpm` and
    /// `palisade:{name}:tpm`); fails open when Redis cannot be asked
    /// ([`palisade_ratelimit::RedisRateLimitLayer`],
    /// [`palisade_ratelimit::TokenLimitLayer::redis`]: tokens reserved and
    /// settled there). With both limits set, one script admits a call
    /// against both ([`palisade_ratelimit::TokenLimitLayer::redis_requests`]):
    /// one round trip, and a call either refuses takes from neither.
    #[must_use]
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(url.into());
        self
    }

    /// With [`redis`](Self::redis), shares the breaker too (key
    /// `palisade:{name}:breaker`): a trip in one process opens the circuit
    /// in every process with the same [`name`](Self::name), and once it is
    /// over one process probes for all
    /// ([`palisade_breaker::BreakerBuilder::redis`]). Without `redis`,
    /// nothing.
    #[must_use]
    pub fn share_breaker(mut self, share: bool) -> Self {
        self.share_breaker = share;
        self
    }

    /// Names the breaker (in its `tracing` events).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.breaker_name = Some(name.into());
        self
    }

    /// When the limits' Redis cannot be asked (within 50 ms), refuse calls
    /// ([`palisade_ratelimit::BackendUnavailable`]) instead of letting them
    /// through unlimited (the default: a limiter outage must not become an
    /// LLM outage).
    #[must_use]
    pub fn redis_fail_closed(mut self, closed: bool) -> Self {
        self.redis_fail_closed = closed;
        self
    }

    /// Called each time the limits' (or the shared breaker's) Redis could
    /// not be asked, with the reason (e.g. to count Redis errors).
    #[must_use]
    pub fn on_redis_error(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_redis_error = Some(Arc::new(hook));
        self
    }

    /// Called before every retry (e.g. to count retries).
    #[must_use]
    pub fn on_retry(mut self, hook: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(hook));
        self
    }

    /// Called on every breaker transition.
    #[must_use]
    pub fn on_transition(mut self, hook: impl Fn(Transition) + Send + Sync + 'static) -> Self {
        self.on_transition = Some(Arc::new(hook));
        self
    }

    /// Records the GenAI client metrics (`gen_ai.client.operation.duration`,
    /// `gen_ai.client.token.usage`,
    /// `gen_ai.client.operation.time_to_first_chunk`) with `meter`
    /// ([`palisade_trace::TraceLayer::metrics`]); none by default.
    #[must_use]
    pub fn metrics(mut self, meter: &Meter) -> Self {
        self.meter = Some(meter.clone());
        self
    }

    /// Builds the stack over a pooled [`HttpClient`] for the base URL and key.
    ///
    /// # Errors
    ///
    /// A key that cannot be read, a base URL that is not absolute, or an
    /// out-of-range setting; each names what to fix.
    pub fn build(self) -> Result<LlmStack, BoxError> {
        let mut b = HttpClient::builder()
            .base_url(self.base_url.clone())
            .connect_timeout(Some(self.connect));
        if let Some(source) = self.key.clone() {
            b = b.auth(match self.api.key_style() {
                KeyStyle::Bearer => Auth::openai(source),
                KeyStyle::XApiKey => Auth::anthropic(source),
            });
        }
        let client = b.build()?;
        self.build_over(client)
    }

    /// Builds the stack over `inner` instead of an HTTP client (a mock, a
    /// client configured by hand).
    ///
    /// # Errors
    ///
    /// An out-of-range setting, naming it.
    pub fn build_over<S, B>(self, inner: S) -> Result<LlmStack, BoxError>
    where
        S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.build_over_each([inner])?
            .pop()
            .ok_or_else(|| "palisade: no stack was built (a bug: please report it)".into())
    }

    /// Builds one stack over each of `inners`, all sharing one set of
    /// layers: one breaker, one rate limit and one token limit, one retry
    /// budget, one set of metrics, while each keeps its own inner service.
    /// For a server with one runtime per core, each with its own connection
    /// pool (an [`HttpClient`] per core), whose limits and breaker must stay
    /// process-wide.
    ///
    /// ```
    /// use palisade::core::{ErrorKind, RequestBody};
    /// use palisade::mock::MockUpstream;
    /// use palisade::preset::StackConfig;
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), palisade::core::BoxError> {
    /// let mock = MockUpstream::new();
    /// let stacks = StackConfig::openai()
    ///     .requests_per_minute(1)
    ///     .build_over_each([mock.clone(), mock])?;
    /// let ask = || {
    ///     http::Request::post("/chat/completions")
    ///         .body(RequestBody::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#))
    /// };
    /// stacks[0].clone().oneshot(ask()?).await?;
    /// // The one request of this minute was spent through the other stack.
    /// let refused = stacks[1].clone().oneshot(ask()?).await.unwrap_err();
    /// assert_eq!(ErrorKind::of(&*refused), Some(ErrorKind::RateLimited));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// An out-of-range setting, naming it.
    pub fn build_over_each<S, B>(
        self,
        inners: impl IntoIterator<Item = S>,
    ) -> Result<Vec<LlmStack>, BoxError>
    where
        S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut breaker = BreakerLayer::builder()
            .failure_rate(self.failure_rate)
            .window(Window::Count(self.window))
            .minimum_calls(self.minimum_calls)
            .open_for(self.open_for)
            .half_open_calls(self.half_open_calls);
        if let Some(n) = &self.breaker_name {
            breaker = breaker.name(n.as_str());
        }
        if let Some(h) = self.on_transition.clone() {
            breaker = breaker.on_transition(move |t| h(t));
        }
        if let (Some(url), true) = (&self.redis, self.share_breaker) {
            let key = format!(
                "palisade:{}:breaker",
                self.breaker_name.as_deref().unwrap_or(&self.base_url)
            );
            breaker = breaker.redis(url, key);
            if let Some(hook) = self.on_redis_error.clone() {
                breaker = breaker.on_redis_error(move |reason| hook(reason));
            }
        }
        let breaker = breaker.build()?.classifier(self.classifier);
        let handle = breaker.handle();

        let mut retry = RetryLayer::new()
            .classifier(self.classifier)
            .max_attempts(self.max_attempts)
            .base_delay(self.base_delay)
            .max_delay(self.max_delay)
            .max_elapsed(self.total);
        if let Some(h) = self.on_retry.clone() {
            retry = retry.on_retry(move |e| h(e));
        }
        let limit = |per_minute: Option<u64>| -> Result<_, BoxError> {
            per_minute
                .map(|n| {
                    RateLimitLayer::try_new(n, n as f64 / 60.0).map(|l| {
                        if self.max_wait.is_zero() {
                            l.reject()
                        } else {
                            l.wait(self.max_wait)
                        }
                    })
                })
                .transpose()
                .map_err(Into::into)
        };
        let name = self.breaker_name.as_deref().unwrap_or(&self.base_url);
        // With both limits kept in Redis, the requests limit is joined to
        // the tokens limit: one script admits both.
        let joined = self.redis.is_some() && self.tokens_per_minute.is_some();
        let (rpm, rpm_redis) = match (&self.redis, self.requests_per_minute) {
            (Some(_), Some(_)) if joined => (None, None),
            (Some(url), Some(n)) => {
                let key = format!("palisade:{name}:rpm");
                let mut l = RedisRateLimitLayer::new(url, key, n, n as f64 / 60.0)?;
                l = if self.max_wait.is_zero() {
                    l.reject()
                } else {
                    l.wait(self.max_wait)
                };
                if self.redis_fail_closed {
                    l = l.fail_closed();
                }
                if let Some(hook) = self.on_redis_error.clone() {
                    l = l.on_error(move |reason| hook(reason));
                }
                (None, Some(l))
            }
            _ => (limit(self.requests_per_minute)?, None),
        };
        let tpm = match self.tokens_per_minute {
            None => TokenLimitLayer::off(),
            Some(n) => {
                let mut l = TokenLimitLayer::per_minute(n)?.api(self.api);
                if let Some(url) = &self.redis {
                    l = l.redis(url, format!("palisade:{name}:tpm"))?;
                    if let Some(rpm) = self.requests_per_minute {
                        l = l.redis_requests(rpm, format!("palisade:{name}:rpm"))?;
                    }
                    if self.redis_fail_closed {
                        l = l.fail_closed();
                    }
                    if let Some(hook) = self.on_redis_error.clone() {
                        l = l.on_redis_error(move |reason| hook(reason));
                    }
                }
                if self.max_wait.is_zero() {
                    l.reject()
                } else {
                    l.wait(self.max_wait)
                }
            }
        };
        // Its local limits, read without taking anything: how long until
        // each has room for one more call (one token for the token limit).
        let limited: Limited = {
            let rpm = rpm.clone();
            let tpm = self.tokens_per_minute.is_some().then(|| tpm.clone());
            Arc::new(move || {
                let rpm = rpm.as_ref().and_then(|l| l.bucket().refuses_for(1));
                let tpm = tpm.as_ref().and_then(|l| l.bucket().refuses_for(1));
                rpm.max(tpm)
            })
        };
        let schema = self.validate.then(|| match self.api {
            Api::ChatCompletions => SchemaLayer::openai(),
            Api::Messages => SchemaLayer::anthropic(),
            Api::Responses => SchemaLayer::responses(),
            Api::Embeddings => SchemaLayer::embeddings(),
        });

        let mut trace = TraceLayer::new().api(self.api).enabled(self.trace);
        if let Some(meter) = &self.meter {
            trace = trace.metrics(meter);
        }
        let stack = ServiceBuilder::new()
            .layer(trace)
            .option_layer(schema)
            .layer(TimeoutLayer::new().total(self.total))
            .layer(retry)
            .option_layer(rpm)
            .option_layer(rpm_redis)
            .layer(tpm)
            .layer(breaker)
            .layer(
                TimeoutLayer::new()
                    .first_byte(self.first_byte)
                    .idle(self.idle)
                    .sse_aware(true),
            )
            .map_request(ask_for_identity)
            .map_result(decode_if_encoded::<B>);
        Ok(inners
            .into_iter()
            .map(|inner| {
                let mut s = LlmStack::new(
                    stack.service(inner.map_err(Into::into)),
                    self.api,
                    handle.clone(),
                );
                s.limited = Some(Arc::clone(&limited));
                s
            })
            .collect())
    }
}

/// `Accept-Encoding: identity` unless the caller chose an encoding: a
/// compressed event stream reaches the caller in bursts (the compressor
/// holds events back), and a request that says nothing allows the server
/// any encoding.
fn ask_for_identity(mut req: Request<RequestBody>) -> Request<RequestBody> {
    req.headers_mut()
        .entry(http::header::ACCEPT_ENCODING)
        .or_insert(http::HeaderValue::from_static("identity"));
    req
}

/// An answer as it came when it was not encoded; an encoded one (rare:
/// requests ask for `identity`) decoded by tower-http's `Decompression`,
/// boxed. Only encoded answers pay for decompression: its body type, a
/// 312-byte enum, is not moved by every layer outside with every answer.
fn decode_if_encoded<B>(
    answer: Result<Response<B>, BoxError>,
) -> Result<Response<Either<B, BoxLlmBody>>, BoxError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let res = answer?;
    if !res.headers().contains_key(http::header::CONTENT_ENCODING) {
        return Ok(res.map(Either::Left));
    }
    // Errors boxed first: decompression keeps them, and needs a `Send` type.
    let mut held = Some(res.map(|b| b.map_err(Into::<BoxError>::into)));
    let answer = tower::service_fn(move |_: Request<()>| {
        std::future::ready(held.take().ok_or(std::fmt::Error))
    });
    let mut decoding = std::pin::pin!(Decompression::new(answer).oneshot(Request::new(())));
    // The answer is in hand: the future is ready at its first poll.
    match decoding
        .as_mut()
        .poll(&mut Context::from_waker(std::task::Waker::noop()))
    {
        Poll::Ready(Ok(res)) => Ok(res.map(|b| Either::Right(box_body(b)))),
        Poll::Ready(Err(_)) | Poll::Pending => Err(
            "palisade: the encoded answer could not be handed to decompression (a bug: please report it)"
                .into(),
        ),
    }
}

fn box_body<B>(b: B) -> BoxLlmBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed_unsync()
}

/// The preset stack: a named, cloneable `Service<http::Request<RequestBody>>`
/// answering `http::Response<`[`BoxLlmBody`]`>`. Clones share the breaker,
/// the rate limits and the connection pool.
///
/// It is a [`palisade_core::LlmService`], as every stack is:
///
/// ```
/// fn takes_any_stack(_: impl palisade::core::LlmService) {}
/// # fn main() -> Result<(), palisade::core::BoxError> {
/// takes_any_stack(palisade::preset::StackConfig::openai().no_key().build()?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LlmStack {
    inner: BoxCloneSyncService<Request<RequestBody>, Response<BoxLlmBody>, BoxError>,
    breaker: BreakerHandle,
    api: Api,
    /// Its local limits' wait, when the preset built it.
    limited: Option<Limited>,
}

/// How long until a stack's local limits have room, if they have none now.
type Limited = Arc<dyn Fn() -> Option<Duration> + Send + Sync>;

impl fmt::Debug for LlmStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmStack")
            .field("api", &self.api)
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

impl LlmStack {
    /// Wraps a stack built by hand (your own `ServiceBuilder`) as an
    /// `LlmStack`, so code written for the preset's type takes it too.
    /// `breaker` is the handle of the [`BreakerLayer`] inside it
    /// ([`BreakerLayer::handle`]); `api` is the API it speaks.
    ///
    /// ```
    /// use palisade::breaker::BreakerLayer;
    /// use palisade::preset::LlmStack;
    /// use palisade::providers::Api;
    /// use palisade::retry::RetryLayer;
    /// use tower::ServiceBuilder;
    ///
    /// # fn main() -> Result<(), palisade::core::BoxError> {
    /// let breaker = BreakerLayer::builder().build()?;
    /// let handle = breaker.handle();
    /// let svc = ServiceBuilder::new()
    ///     .layer(RetryLayer::new())
    ///     .layer(breaker)
    ///     .service(palisade::mock::MockUpstream::new());
    /// let stack = LlmStack::new(svc, Api::ChatCompletions, handle);
    /// assert_eq!(stack.breaker().state(), palisade::breaker::State::Closed);
    /// # Ok(()) }
    /// ```
    pub fn new<S, B>(service: S, api: Api, breaker: BreakerHandle) -> Self
    where
        S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let service = service
            .map_response(|res: Response<B>| res.map(box_body))
            .map_err(Into::into);
        Self {
            inner: BoxCloneSyncService::new(service),
            breaker,
            api,
            limited: None,
        }
    }

    /// How long until its own local rate limits (`requests_per_minute`,
    /// and `tokens_per_minute` with room for one token) can take a call,
    /// or `None` when they can now or it has none; nothing is taken. A
    /// limit kept in Redis is not read (that would be a round trip per
    /// pick), nor is a stack built by hand ([`new`](Self::new)). What a
    /// balance gates a member on, so a member at its own limit is passed
    /// over rather than called to wait or refuse.
    pub fn limited_for(&self) -> Option<Duration> {
        self.limited.as_ref().and_then(|f| f())
    }

    /// The breaker's handle: its state, its window, force open/closed.
    pub fn breaker(&self) -> &BreakerHandle {
        &self.breaker
    }

    /// The API this stack speaks.
    pub fn api(&self) -> Api {
        self.api
    }
}

impl Service<Request<RequestBody>> for LlmStack {
    type Response = Response<BoxLlmBody>;
    type Error = BoxError;
    type Future =
        <BoxCloneSyncService<Request<RequestBody>, Response<BoxLlmBody>, BoxError> as Service<
            Request<RequestBody>,
        >>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        self.inner.call(req)
    }
}
