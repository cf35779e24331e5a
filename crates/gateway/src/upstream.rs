//! One upstream: the layer stack assembled from the palisade crates around
//! its client (or the in-process mock).
//!
//! Order, outermost first: total timeout → retry → rate limit (requests,
//! then tokens) → breaker → per-attempt timeout (first byte, SSE-aware idle)
//! → client. The total budget covers retries and the streamed body; retry
//! sits outside the breaker so that every attempt is one breaker call (and an
//! open circuit ends the retries at once); the rate limit sits inside retry
//! so that every attempt pays for itself; the per-attempt timeout sits inside
//! the breaker so that a stalled upstream counts as that upstream's failure.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use palisade_breaker::{BreakerHandle, BreakerLayer, State, Window};
use palisade_client::{Auth, HttpClient, KeySource};
use palisade_core::{BoxError, ParsedBody, RequestBody};
use palisade_mock::MockUpstream;
use palisade_providers::Provider;
use palisade_ratelimit::RateLimitLayer;
use palisade_retry::RetryLayer;
use palisade_timeout::TimeoutLayer;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use crate::config::{Kind, UpstreamConfig};
use crate::metrics::{Metrics, RetryLabels};

/// Every upstream answers with this body.
pub(crate) type ResBody = UnsyncBoxBody<Bytes, BoxError>;

/// An upstream's whole stack, type-erased.
pub(crate) type UpstreamService =
    BoxCloneSyncService<Request<RequestBody>, Response<ResBody>, BoxError>;

/// One configured upstream, ready to call.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) name: Arc<str>,
    /// The API it speaks; `None` for the mock, which speaks both.
    pub(crate) api: Option<Provider>,
    pub(crate) service: UpstreamService,
    pub(crate) breaker: BreakerHandle,
    /// For scrubbing the key out of what the upstream sends back.
    pub(crate) client: Option<HttpClient>,
    /// The mock behind a `kind = "mock"` upstream.
    pub(crate) mock: Option<MockUpstream>,
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

fn boxed<B>(res: Response<B>) -> Response<ResBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    res.map(|b| b.map_err(Into::into).boxed_unsync())
}

impl Upstream {
    /// Builds `cfg`'s stack. `mock` replaces the in-process mock of a
    /// `kind = "mock"` upstream (tests script it).
    pub(crate) fn build(
        cfg: &UpstreamConfig,
        metrics: &Arc<Metrics>,
        mock: Option<MockUpstream>,
    ) -> Result<Self, BuildError> {
        let err = |source: BoxError| BuildError {
            upstream: cfg.name.clone(),
            source,
        };
        let name: Arc<str> = Arc::from(cfg.name.as_str());
        let t = &cfg.timeout;
        let (inner, api, client, mock): (UpstreamService, _, _, _) = match cfg.kind {
            Kind::Mock => {
                let mock = mock.unwrap_or_default();
                let svc = ServiceExt::<Request<RequestBody>>::map_response(mock.clone(), boxed);
                (BoxCloneSyncService::new(svc), None, None, Some(mock))
            }
            kind => {
                let api = if kind == Kind::Anthropic {
                    Provider::Anthropic
                } else {
                    Provider::OpenAi
                };
                let mut b = HttpClient::builder()
                    .base_url(cfg.base_url.clone().unwrap_or_default())
                    .connect_timeout(Some(ms(t.connect)));
                let source = match (&cfg.api_key_env, &cfg.api_key_file) {
                    (Some(var), _) => Some(KeySource::env(var.clone())),
                    (None, Some(path)) => Some(KeySource::file(path.clone())),
                    (None, None) => None,
                };
                if let Some(source) = source {
                    b = b.auth(match api {
                        Provider::Anthropic => Auth::anthropic(source),
                        _ => Auth::openai(source),
                    });
                }
                let client = b.build().map_err(|e| err(e.into()))?;
                let svc = client.clone().map_response(boxed);
                (BoxCloneSyncService::new(svc), Some(api), Some(client), None)
            }
        };

        let bc = &cfg.breaker;
        metrics.set_breaker_state(&cfg.name, State::Closed);
        let hook_metrics = metrics.clone();
        let hook_name = cfg.name.clone();
        let breaker = BreakerLayer::builder()
            .name(name.clone())
            .failure_rate(bc.failure_rate)
            .window(Window::Count(bc.window as usize))
            .minimum_calls(bc.minimum_calls)
            .open_for(ms(bc.open_for))
            .half_open_calls(bc.half_open_calls)
            .on_transition(move |tr| hook_metrics.set_breaker_state(&hook_name, tr.to))
            .build()
            .map_err(|e| err(e.into()))?;
        let handle = breaker.handle();

        let retries = metrics.retries.clone();
        let retry_name = cfg.name.clone();
        let retry = RetryLayer::new()
            .max_attempts(cfg.retry.max_attempts)
            .base_delay(ms(cfg.retry.base_delay))
            .max_delay(ms(cfg.retry.max_delay))
            .max_elapsed(ms(t.total))
            .on_retry(move |ev| {
                retries
                    .get_or_create(&RetryLabels {
                        upstream: retry_name.clone(),
                        reason: ev.reason.to_owned(),
                    })
                    .inc();
            });

        let (rpm, tpm) = match &cfg.rate_limit {
            Some(r) => {
                let wait = |l: RateLimitLayer<_>| {
                    if r.max_wait == 0 {
                        l.reject()
                    } else {
                        l.wait(ms(r.max_wait))
                    }
                };
                let rpm = r
                    .requests_per_minute
                    .map(|n| RateLimitLayer::try_new(n, n as f64 / 60.0))
                    .transpose()
                    .map_err(|e| err(e.into()))?
                    .map(wait);
                let tpm = r
                    .tokens_per_minute
                    .map(|n| RateLimitLayer::try_new(n, n as f64 / 60.0))
                    .transpose()
                    .map_err(|e| err(e.into()))?
                    .map(|l| wait(l).cost(token_cost as fn(&Request<RequestBody>) -> u64));
                (rpm, tpm)
            }
            None => (None, None),
        };

        let stack = ServiceBuilder::new()
            .map_response(boxed)
            .layer(TimeoutLayer::new().total(ms(t.total)))
            .layer(retry)
            .option_layer(rpm)
            .option_layer(tpm)
            .layer(breaker)
            .layer(
                TimeoutLayer::new()
                    .first_byte(ms(t.first_byte))
                    .idle(ms(t.idle))
                    .sse_aware(true),
            )
            .service(inner);
        Ok(Self {
            name,
            api,
            service: BoxCloneSyncService::new(stack),
            breaker: handle,
            client,
            mock,
        })
    }

    /// `text` with this upstream's key scrubbed out.
    pub(crate) fn redact(&self, text: Bytes) -> Bytes {
        match self.client.as_ref().and_then(|c| c.redact(&text)) {
            Some(clean) => Bytes::from(clean),
            None => text,
        }
    }
}

/// A request's token cost for a tokens-per-minute limit, from the body the
/// gateway parsed once (capped to what a bucket can hold: `u32::MAX`).
fn token_cost(req: &Request<RequestBody>) -> u64 {
    ParsedBody::of(req).map_or(1, |p| palisade_core::tokens::estimate(p).total().max(1))
}
