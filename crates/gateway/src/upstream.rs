//! One upstream: the preset stack of the `palisade` facade
//! ([`palisade::preset::StackConfig`]) around its client (or the in-process
//! mock), with the gateway's metrics hooked into retry and breaker.
//!
//! Order, outermost first: total timeout → retry → rate limit (requests,
//! then tokens) → breaker → per-attempt timeout (first byte, SSE-aware idle)
//! → decompression → client; the facade's docs say why. (Schema validation happens before
//! routing, against the caller's API.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::{FutureExt, StreamExt};
use palisade::preset::{LlmStack, StackConfig};
use palisade_balance::{MemberLoad, Reached};
use palisade_breaker::State;
use palisade_client::{Auth, AuthStyle, HttpClient, KeyRests, KeySource};
use palisade_core::body::collect_limited;
use palisade_core::classify::LlmClassifier;
use palisade_core::{BoxError, RequestBody};
use palisade_mock::MockUpstream;
use palisade_providers::{Api, KeyStyle};
use palisade_sse::{
    DEFAULT_MAX_EVENT_BYTES, Event, EventStream, SharedEvents, SharedScan, SseError,
};
use tower::ServiceExt;

use crate::config::{HttpVersion, Kind, UpstreamConfig};
use crate::metrics::Metrics;

/// Every upstream answers with this body.
pub(crate) type ResBody = palisade_core::BoxLlmBody;

/// One configured upstream, ready to call.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) name: Arc<str>,
    /// The APIs it serves, its primary (the one a translated call goes
    /// to) first: chat completions, Responses and embeddings for OpenAI
    /// and Azure's v1 URL (chat completions and embeddings for an Azure
    /// deployment URL); messages for Anthropic; every API for the mock
    /// ([`UpstreamConfig::apis`]).
    pub(crate) apis: &'static [Api],
    /// One stack per worker thread (one in all but `thread_per_core`),
    /// each over its own connection pool, all sharing one set of layers
    /// (breaker, limits, retry budget): see [`set_worker`].
    services: Vec<LlmStack>,
    /// Scrubs the key out of what the upstream sends back.
    scrub: Scrub,
    /// The mock behind a `kind = "mock"` upstream.
    pub(crate) mock: Option<MockUpstream>,
    /// Calls per request, the first included (`[upstreams.retry]`).
    pub(crate) max_attempts: u32,
    /// The upstream's one classifier ([`UpstreamConfig::classifier`]): its
    /// retry layer and breaker use it, fallback and `x-should-retry` ask
    /// it, and a tier penalizes the upstream by it: an error status is
    /// fallen back from exactly when the stack would retry it. (An error
    /// with no answer — transport, timeout, an open circuit, a local
    /// limit — is always fallen back from: another target may not share
    /// the cause, though the stack retries only some of them.)
    pub(crate) classifier: LlmClassifier,
    /// `[upstreams.timeout] total`: also how long the caller may take to
    /// read a streamed answer.
    pub(crate) total: Duration,
    /// `[upstreams.timeout] idle`: also how long the caller may leave an
    /// event unread.
    pub(crate) idle: Duration,
    /// The query every call carries (`api-version=…` for Azure), if any.
    query: Option<Box<str>>,
    /// Its load (calls in flight, time to first content, failures, the
    /// provider's drain), tracked when it is a member of a route's tier.
    pub(crate) load: Option<MemberLoad>,
    /// Which of its pooled keys rest (shared by every worker's client).
    pub(crate) rests: Option<KeyRests>,
}

/// Why an upstream could not be built (a key that cannot be read, …).
#[derive(Debug)]
pub struct BuildError {
    upstream: String,
    source: BoxError,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream `{}`: {}", self.upstream, self.source)
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Upstream {
    /// Builds `cfg`'s stack. `mock` replaces the in-process mock of a
    /// `kind = "mock"` upstream (tests script it).
    pub(crate) fn build(
        cfg: &UpstreamConfig,
        metrics: &Arc<Metrics>,
        meter: Option<&opentelemetry::metrics::Meter>,
        mock: Option<MockUpstream>,
        redis: Option<&crate::config::RedisConfig>,
        workers: usize,
        tiered: bool,
    ) -> Result<Self, BuildError> {
        let err = |source: BoxError| BuildError {
            upstream: cfg.name.clone(),
            source,
        };
        let apis = cfg.apis();
        let mut preset = preset(cfg, apis[0], metrics);
        if let Some(r) = redis {
            let (metrics, name) = (Arc::clone(metrics), cfg.name.clone());
            preset = preset
                .redis(r.url.as_str())
                .redis_fail_closed(!r.fail_open)
                .share_breaker(r.share_breaker)
                .on_redis_error(move |_| metrics.redis_error(&name));
        }
        if let Some(meter) = meter {
            preset = preset.metrics(meter);
        }
        let workers = workers.max(1);
        let rests = (!cfg.api_keys_env.is_empty()).then(|| KeyRests::new(cfg.api_keys_env.len()));
        let (services, client, mock) = match cfg.kind {
            Kind::Mock => {
                let mock = mock.unwrap_or_default();
                let stacks = preset
                    .build_over_each(std::iter::repeat_n(mock.clone(), workers))
                    .map_err(err)?;
                (stacks, None, Some(mock))
            }
            Kind::Openai | Kind::Anthropic | Kind::Azure => {
                // A pool per worker: a connection is used by the thread
                // whose runtime drives it.
                let clients = (0..workers)
                    .map(|_| client(cfg, apis[0], rests.as_ref()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?;
                let client = clients[0].clone();
                if client.key_too_short_to_scrub() {
                    tracing::warn!(
                        upstream = %cfg.name,
                        min_len = palisade_client::MIN_SCRUBBED_KEY_LEN,
                        "this upstream's key is too short to be a secret (a local server's `EMPTY` or `x`?): it is not scrubbed out of its answers, as scrubbing it would rewrite them"
                    );
                }
                let stacks = preset.build_over_each(clients).map_err(err)?;
                (stacks, Some(client), None)
            }
        };
        Ok(Self {
            name: Arc::from(cfg.name.as_str()),
            apis,
            services,
            scrub: Scrub(client.map(Arc::new)),
            mock,
            max_attempts: cfg.retry.max_attempts,
            classifier: cfg.classifier(),
            total: ms(cfg.timeout.total),
            idle: ms(cfg.timeout.idle),
            query: cfg
                .api_version
                .as_ref()
                .map(|v| format!("api-version={v}").into_boxed_str()),
            load: tiered.then(|| MemberLoad::with_classifier(cfg.name.as_str(), cfg.classifier())),
            rests,
        })
    }

    /// Calls this upstream's stack. The answer's body can only be read
    /// through [`UpstreamBody`], which scrubs this upstream's key out of
    /// every byte it hands on: no path through the gateway can relay a key
    /// an upstream quoted back (in any JSON-escaped form).
    pub(crate) async fn call(
        &self,
        req: http::Request<RequestBody>,
    ) -> Result<http::Response<UpstreamBody>, BoxError> {
        Ok(self.call_reading(req, false).await?.0)
    }

    /// [`call`](Self::call), and when `to_content` and this upstream is a
    /// tier member, a successful answer read ahead to its first content
    /// event, its end or its failure (what was read is kept and handed on
    /// first): how far, for a hedged call's race. Otherwise `Content`,
    /// nothing read.
    pub(crate) async fn call_reading(
        &self,
        req: http::Request<RequestBody>,
        to_content: bool,
    ) -> Result<(http::Response<UpstreamBody>, Reached), BoxError> {
        use http_body_util::BodyExt;
        let (res, reached) = match &self.load {
            None => (self.service().clone().oneshot(req).await?, Reached::Content),
            Some(load) => {
                // Reported to its tier: in flight until the body ends.
                let tracking = load.start(&req);
                match self.service().clone().oneshot(req).await {
                    Ok(res) => {
                        let res = tracking.answered(res);
                        if to_content && res.status().is_success() {
                            let (parts, body) = res.into_parts();
                            let mut body = Box::pin(body);
                            let reached =
                                std::future::poll_fn(|cx| body.as_mut().poll_content(cx)).await;
                            (
                                http::Response::from_parts(parts, body.boxed_unsync()),
                                reached,
                            )
                        } else {
                            (res.map(BodyExt::boxed_unsync), Reached::Content)
                        }
                    }
                    Err(e) => {
                        tracking.failed(&e);
                        return Err(e);
                    }
                }
            }
        };
        let scrub = self.scrub.clone();
        Ok((res.map(|body| UpstreamBody { body, scrub }), reached))
    }
}

impl Upstream {
    /// The API a call from a `caller` of that API is made in: the caller's
    /// own when this upstream serves it, else this upstream's primary API
    /// when both can be translated, else none (embeddings are never
    /// translated).
    pub(crate) fn target_api(&self, caller: Api) -> Option<Api> {
        if self.apis.contains(&caller) {
            return Some(caller);
        }
        caller.dialect()?;
        self.apis.iter().copied().find(|a| a.dialect().is_some())
    }

    /// The path (and query) of `api`'s endpoint at this upstream, relative
    /// to its base URL: `/chat/completions`, with `?api-version=…` for an
    /// Azure deployment.
    pub(crate) fn path(&self, api: Api) -> std::borrow::Cow<'static, str> {
        match &self.query {
            None => std::borrow::Cow::Borrowed(api.path()),
            Some(q) => std::borrow::Cow::Owned(format!("{}?{q}", api.path())),
        }
    }

    /// The stack of the worker thread this runs on.
    pub(crate) fn service(&self) -> &LlmStack {
        let i = WORKER.with(std::cell::Cell::get);
        // Never empty: `build` makes one stack at least.
        &self.services[i % self.services.len()]
    }
}

thread_local! {
    /// The index of the gateway worker thread this is (0 outside
    /// `thread_per_core`'s workers).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as gateway worker `i`: its calls go through each
/// upstream's stack `i`, over that stack's own connection pool.
pub(crate) fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// The preset stack's settings from `cfg`, the gateway's metrics hooked
/// into its retries and breaker transitions.
fn preset(cfg: &UpstreamConfig, api: Api, metrics: &Arc<Metrics>) -> StackConfig {
    let (t, bc) = (&cfg.timeout, &cfg.breaker);
    metrics.set_breaker_state(&cfg.name, State::Closed);
    let (hook_metrics, hook_name) = (metrics.clone(), cfg.name.clone());
    let (retry_metrics, retry_name) = (metrics.clone(), cfg.name.clone());
    // Built for the upstream's primary API; each call names the API it is
    // made in (an `Api` in its extensions), which the layers read instead.
    let mut preset = match api.key_style() {
        KeyStyle::Bearer => StackConfig::openai(),
        KeyStyle::XApiKey => StackConfig::anthropic(),
    }
    // The gateway validates against the caller's API before routing.
    .validate(false)
    .name(cfg.name.clone())
    .total(ms(t.total))
    .first_byte(ms(t.first_byte))
    .idle(ms(t.idle))
    .max_attempts(cfg.retry.max_attempts)
    .base_delay(ms(cfg.retry.base_delay))
    .max_delay(ms(cfg.retry.max_delay))
    .failure_rate(bc.failure_rate)
    .window(bc.window as usize)
    .minimum_calls(bc.minimum_calls)
    .open_for(ms(bc.open_for))
    .half_open_calls(bc.half_open_calls)
    .classifier(cfg.classifier())
    .on_transition(move |tr| hook_metrics.set_breaker_state(&hook_name, tr.to))
    .on_retry(move |ev| retry_metrics.retry(&retry_name, ev.reason));
    if let Some(r) = &cfg.rate_limit {
        preset = preset.max_wait(ms(r.max_wait));
        if let Some(n) = r.requests_per_minute {
            preset = preset.requests_per_minute(n);
        }
        if let Some(n) = r.tokens_per_minute {
            preset = preset.tokens_per_minute(n);
        }
    }
    preset
}

/// The pooled HTTP client of a provider upstream, its key presented the
/// way `api` wants it.
/// A pool's keys rest in `rests`, shared by every worker's client.
fn client(
    cfg: &UpstreamConfig,
    api: Api,
    rests: Option<&KeyRests>,
) -> Result<HttpClient, BoxError> {
    let mut b = HttpClient::builder()
        .base_url(cfg.api_base_url().unwrap_or_default())
        .connect_timeout(Some(ms(cfg.timeout.connect)))
        .http_version(match cfg.http {
            HttpVersion::Auto => palisade_client::HttpVersion::Auto,
            HttpVersion::Http1 => palisade_client::HttpVersion::Http1Only,
            HttpVersion::Http2 => palisade_client::HttpVersion::Http2Only,
        });
    let auth = |source: KeySource| match cfg.kind {
        // Azure OpenAI takes its key in `api-key`, not as a bearer token.
        Kind::Azure => Auth::new(
            source,
            AuthStyle::Header(http::HeaderName::from_static("api-key")),
        ),
        Kind::Openai | Kind::Anthropic | Kind::Mock => match api.key_style() {
            KeyStyle::Bearer => Auth::openai(source),
            KeyStyle::XApiKey => Auth::anthropic(source),
        },
    };
    let source = match (&cfg.api_key_env, &cfg.api_key_file) {
        (Some(var), _) => Some(KeySource::env(var.clone())),
        (None, Some(path)) => Some(KeySource::file(path.clone())),
        (None, None) => None,
    };
    if let Some(source) = source {
        b = b.auth(auth(source));
    }
    if !cfg.api_keys_env.is_empty() {
        b = b.key_pool(
            cfg.api_keys_env
                .iter()
                .map(|var| auth(KeySource::env(var.clone())))
                .collect(),
        );
        if let Some(rests) = rests {
            b = b.key_rests(rests.clone());
        }
    }
    Ok(b.build()?)
}

/// Scrubs one upstream's key (none for the mock, which has none).
#[derive(Clone, Debug)]
struct Scrub(Option<Arc<HttpClient>>);

impl Scrub {
    fn bytes(&self, text: Bytes) -> Bytes {
        match self.0.as_ref().and_then(|c| c.redact(&text)) {
            Some(clean) => Bytes::from(clean),
            None => text,
        }
    }
}

/// An upstream's answer body, read only with the upstream's key scrubbed
/// out: whole ([`read_all`](Self::read_all)) or as events
/// ([`events`](Self::events)).
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    body: ResBody,
    scrub: Scrub,
}

impl UpstreamBody {
    /// The whole body, up to `limit` bytes, scrubbed. (A named, boxed
    /// future: an `async fn` generic over the body's error trips rustc's
    /// higher-ranked lifetime inference inside axum handlers.)
    pub(crate) fn read_all(
        self,
        limit: usize,
    ) -> Pin<Box<dyn Future<Output = Result<Bytes, BoxError>> + Send>> {
        let scrub = self.scrub;
        Box::pin(collect_limited(self.body, limit).map(move |read| read.map(|b| scrub.bytes(b))))
    }

    /// The body's server-sent events, each one's data scrubbed: taken from
    /// the decoding a layer of the upstream's stack already does (its
    /// shared scan, in the answer's `extensions`), or decoded here when no
    /// layer does.
    pub(crate) fn events(self, extensions: &http::Extensions) -> Events {
        let inner = match SharedScan::subscribe(extensions, DEFAULT_MAX_EVENT_BYTES) {
            Some(sub) => Source::Shared(SharedEvents::new(self.body, sub)),
            None => Source::Own(EventStream::new(self.body)),
        };
        Events {
            inner,
            scrub: self.scrub,
        }
    }
}

/// An upstream's events, each one's data scrubbed.
pub(crate) struct Events {
    inner: Source,
    scrub: Scrub,
}

enum Source {
    Own(EventStream<ResBody>),
    Shared(SharedEvents<ResBody>),
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Stream for Events {
    type Item = Result<Event, SseError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let next = match &mut this.inner {
            Source::Own(s) => s.poll_next_unpin(cx),
            Source::Shared(s) => s.poll_next_unpin(cx),
        };
        Poll::Ready(match ready!(next) {
            Some(Ok(ev)) => {
                let data = this.scrub.bytes(ev.data().clone());
                Some(Ok(if data == ev.data() {
                    ev
                } else {
                    ev.with_data(data)
                }))
            }
            other => other,
        })
    }
}
