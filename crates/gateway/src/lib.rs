//! palisade-gateway: an OpenAI- and Anthropic-compatible LLM proxy built from
//! the palisade layers.
//!
//! The binary (`cargo run -p palisade-gateway`) serves the built-in mock
//! upstream on `127.0.0.1:8080` with no arguments, or what a config file
//! (`--config FILE`, see [`config`]) describes. This library is the same
//! server as a value: build a [`Gateway`] from a [`Config`], take its
//! [`router`](Gateway::router) into your own axum app, or [`serve`] it.
//!
//! Endpoints: `POST /v1/chat/completions` (OpenAI), `POST /v1/messages`
//! (Anthropic), `POST /v1/responses` (OpenAI's Responses API) — JSON or
//! streamed —, `POST /v1/embeddings`, `GET /v1/models` (each routed model
//! with the endpoints its route serves), `GET /healthz`, `GET /metrics`
//! (Prometheus text).
//!
//! Any caller's API can be served by any target whose API can be
//! translated: a call goes to a target in the caller's own API when the
//! target serves it (OpenAI upstreams and Azure's v1 URL serve chat
//! completions, the Responses API and embeddings, an Azure deployment URL
//! chat completions and embeddings; Anthropic upstreams messages; the mock
//! all four), else in the target's primary API through
//! `palisade_providers::dialect` (caller's API → neutral model → target's
//! API, answers and streams back the same way). Embeddings are never
//! translated, and fall back only to targets sending the same model name
//! (another model's vectors are not comparable). A Responses request that
//! needs stored state (`previous_response_id`, `conversation`, an
//! `item_reference`) goes only to targets speaking the Responses API;
//! with none on its route it is refused with a 400 that says why. What a
//! translation leaves out is named: request fields in
//! `x-palisade-untranslated`, and every field (the answer's too) in
//! `palisade_untranslated_total{api,field}`, one log line per call and the
//! request span's `palisade.untranslated`.
//!
//! Per upstream the stack is total timeout → retry → rate limit → breaker →
//! per-attempt timeout → decompression → client (see the `upstream` module
//! docs for why);
//! request checks (`palisade-schema`'s bundled schemas, on the body parsed
//! once) and trace ids are handled before it, routing with fallback
//! over a route's targets around it — a tier of targets balanced by
//! palisade-balance (least loaded, weighted or round robin; a member whose
//! circuit is open, whose provider limit is spent or that is at its own
//! local rate limit skipped without a call; a member's 429 sent on to the
//! next member at once; sessions kept on one member with `affinity`; a
//! late first token hedged on the next member with `hedge_after`), the
//! next entry its fallback.
//!
//! Runtime: the binary serves with `[server] runtime = "thread_per_core"`
//! by default ([`serve_per_core`]): one current-thread tokio runtime per
//! worker thread (one per core), each accepting on its own `SO_REUSEPORT`
//! listener and calling upstreams over its own connection pools, so a
//! request is served on one thread from accept to answer (`strace` of the
//! `load` example's gateway: 2 `writev`, 2 `recvfrom` and 2 `epoll_wait`
//! per request and no futex or eventfd wake, where the multi-thread runtime
//! hands each request between its workers). In the same run of
//! `examples/load.rs` it serves about a fifth more requests per second at
//! concurrency 64, with a fifth less CPU per request; at concurrency 1 its
//! added latency is within the run-to-run spread of the multi-thread
//! runtime's (see the README's figures). The trade: a caller's connection
//! (an HTTP/2 connection with all its streams) stays on the worker that
//! accepted it, so a few busy connections can load one core more than the
//! others.
//!
//! What must be one per process stays one: each upstream's per-worker
//! stacks share their breaker, rate and token limits and retry budget
//! (built once, [`palisade::preset::StackConfig::build_over_each`]); the
//! metrics are one registry shared by every worker; `max_connections` is
//! one semaphore; shutdown stops every worker at once and the grace period
//! covers them all. Refused-connection log lines are rate-limited per
//! worker (one a second each). With `[redis]`, each Redis connection (one per
//! limit, shared breaker and the shared drains) is driven by the worker that
//! first used it. [`serve`] and
//! [`serve_with_grace`] run on the caller's runtime instead
//! (`runtime = "multi_thread"` in the binary).
//!
//! Headers the gateway adds to an answer: `x-trace-id`,
//! `x-palisade-overhead-ms` (its own time), `x-should-retry: false` on a
//! failure it already retried, and `x-palisade-untranslated` naming the
//! request fields left out when a target of the other API answered (no
//! counterpart there, e.g. `response_format`, `thinking`).
//!
//! ```no_run
//! use palisade_gateway::{Config, Gateway};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = Gateway::new(Config::builtin_mock())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! palisade_gateway::serve(listener, gateway, std::future::pending()).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use opentelemetry::metrics::Meter;
use palisade_mock::MockUpstream;
use palisade_providers::Api;
use serde_json::json;

mod attempt;
mod callers;
pub mod config;
mod error;
mod inbound;
mod metrics;
pub mod otel;
mod proxy;
mod relay;
mod server;
mod shared;
mod upstream;

pub use config::{Config, ConfigError};
pub use upstream::BuildError;

use config::Target;
use error::GatewayError;
use metrics::Metrics;
use upstream::Upstream;

/// One target of a route, resolved.
#[derive(Debug)]
struct RouteTarget {
    upstream: Arc<Upstream>,
    model: Option<String>,
}

/// A route: its targets, tier by tier.
#[derive(Debug)]
struct Route {
    /// Every target, the tiers' members in order.
    targets: Vec<RouteTarget>,
    tiers: Vec<Tier>,
    /// With every member of every tier out (open, drained, at its limit),
    /// a call waits up to this long for the first back: the largest
    /// `rate_limit.max_wait` of its tiers' members.
    max_wait: Duration,
}

/// A tier of a route: `len` targets from `start`, balanced when several.
#[derive(Debug)]
struct Tier {
    start: usize,
    len: usize,
    balance: Option<palisade_balance::Balance<()>>,
}

/// One target in a call's order, and the hedging of its tier.
#[derive(Clone, Copy, Debug)]
struct Planned<'a> {
    target: &'a RouteTarget,
    /// Its tier's balance when the tier hedges (`hedge_after`).
    hedging: Option<&'a palisade_balance::Balance<()>>,
    /// Which tier of the route it is in.
    tier: usize,
}

impl Route {
    /// The targets to try for one call, in order — each tier's members as
    /// its balance orders them (the session's home first, or the least
    /// loaded …), then the next tier's — and the members skipped without a
    /// call (open circuit, spent provider limit), with why.
    fn order(
        &self,
        headers: &http::HeaderMap,
        body: &serde_json::Value,
    ) -> (
        Vec<Planned<'_>>,
        Vec<(Arc<str>, palisade_balance::Unavailable)>,
    ) {
        let mut order = Vec::with_capacity(self.targets.len());
        let mut skipped = Vec::new();
        for (t, tier) in self.tiers.iter().enumerate() {
            let members = &self.targets[tier.start..tier.start + tier.len];
            let plan = |target| Planned {
                target,
                hedging: tier.balance.as_ref().filter(|b| b.hedge_after().is_some()),
                tier: t,
            };
            match &tier.balance {
                None => order.extend(members.iter().map(plan)),
                Some(b) => {
                    let session = b.session(headers, body);
                    let o = b.order(session.as_deref());
                    order.extend(o.members.iter().filter_map(|&i| members.get(i)).map(plan));
                    skipped.extend(o.unavailable);
                }
            }
        }
        (order, skipped)
    }
}

/// The request schemas (compiled once, shared).
#[derive(Debug)]
struct Schemas {
    openai: palisade_schema::Schema,
    anthropic: palisade_schema::Schema,
    responses: palisade_schema::Schema,
    embeddings: palisade_schema::Schema,
}

/// Everything the handlers share.
#[derive(Debug)]
struct AppState {
    schemas: Schemas,
    routes: HashMap<String, Route>,
    models: Vec<String>,
    upstreams: Vec<Arc<Upstream>>,
    max_body_bytes: usize,
    /// The largest non-streamed upstream answer read (`max_answer_bytes`).
    max_answer_bytes: usize,
    max_json_values: u64,
    /// Limits on the callers' connections.
    server: config::ServerConfig,
    /// Shutdown started (bodies still arriving are refused); the grace
    /// period after it is over (running streams end with an error event).
    signals: server::Signals,
    inbound_keys: Option<callers::InboundKeys>,
    metrics: Arc<Metrics>,
    /// Tier members' provider-limit drains and pooled keys' rests, shared
    /// through `[redis]`.
    drains: Option<Arc<shared::SharedDrains>>,
}

/// The gateway: routes, upstream stacks, metrics.
///
/// Cloning is cheap and shares everything.
#[derive(Clone, Debug)]
pub struct Gateway {
    state: Arc<AppState>,
}

/// Why a gateway could not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration.
    Config(ConfigError),
    /// An upstream could not be built.
    Upstream(BuildError),
    /// The `[auth]` key variable.
    Auth(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Upstream(e) => e.fmt(f),
            Self::Auth(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for StartError {}

impl Gateway {
    /// Builds every upstream stack of `config`.
    ///
    /// # Errors
    ///
    /// An upstream whose key cannot be read, or an `[auth]` variable that is
    /// unset or empty.
    pub fn new(config: Config) -> Result<Self, StartError> {
        Self::with_mocks(config, HashMap::new())
    }

    /// Like [`new`](Self::new), with the given mocks behind the
    /// `kind = "mock"` upstreams of those names (to script them in tests).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_mocks(
        config: Config,
        mocks: HashMap<String, MockUpstream>,
    ) -> Result<Self, StartError> {
        Self::assemble(config, mocks, None)
    }

    /// Like [`new`](Self::new), recording the metrics with `meter` too: the
    /// GenAI client metrics of every upstream stack and the gateway's own
    /// (`palisade.*`, the same figures as `GET /metrics`). The binary passes
    /// the meter of its OTLP exporter ([`otel`]).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_meter(config: Config, meter: &Meter) -> Result<Self, StartError> {
        Self::assemble(config, HashMap::new(), Some(meter))
    }

    fn assemble(
        config: Config,
        mut mocks: HashMap<String, MockUpstream>,
        meter: Option<&Meter>,
    ) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new(meter));
        let mut by_name = HashMap::new();
        let mut upstreams = Vec::new();
        // Upstreams in a tier of several: their load is tracked.
        let tiered: std::collections::HashSet<String> = config
            .routes
            .iter()
            .flat_map(|r| r.tiers())
            .filter(|t| t.len() > 1)
            .flatten()
            .map(|t| Target::parse(t).upstream)
            .collect();
        for u in &config.upstreams {
            let up = Arc::new(
                Upstream::build(
                    u,
                    &metrics,
                    meter,
                    mocks.remove(&u.name),
                    config.redis.as_ref(),
                    config.server.worker_count(),
                    tiered.contains(&u.name),
                )
                .map_err(StartError::Upstream)?,
            );
            by_name.insert(u.name.clone(), up.clone());
            upstreams.push(up);
        }
        if let Some(meter) = meter {
            Metrics::observe_members(
                meter,
                upstreams.iter().filter_map(|u| u.load.clone()).collect(),
            );
        }
        let mut routes = HashMap::new();
        let mut models = Vec::new();
        let weights: HashMap<&str, f64> = config
            .upstreams
            .iter()
            .map(|u| (u.name.as_str(), u.weight))
            .collect();
        for r in &config.routes {
            let mut route = Route {
                targets: Vec::new(),
                tiers: Vec::new(),
                max_wait: Duration::ZERO,
            };
            for tier in r.tiers() {
                let start = route.targets.len();
                route.targets.extend(tier.iter().filter_map(|t| {
                    let t = Target::parse(t);
                    by_name.get(&t.upstream).map(|u| RouteTarget {
                        upstream: u.clone(),
                        model: t.model,
                    })
                }));
                let members = &route.targets[start..];
                let balance = (members.len() > 1)
                    .then(|| tier_balance(r, members, &weights))
                    .transpose()
                    .map_err(|e| {
                        StartError::Config(ConfigError::new(
                            "config",
                            format!("routes.{}", r.model),
                            e.to_string(),
                        ))
                    })?;
                route.tiers.push(Tier {
                    start,
                    len: members.len(),
                    balance,
                });
            }
            route.max_wait = r
                .tiers()
                .iter()
                .filter(|t| t.len() > 1)
                .flatten()
                .filter_map(|t| {
                    let name = Target::parse(t).upstream;
                    config.upstreams.iter().find(|u| u.name == name)
                })
                .filter_map(|u| u.rate_limit.as_ref())
                .map(|r| Duration::from_millis(r.max_wait))
                .max()
                .unwrap_or_default();
            routes.insert(r.model.clone(), route);
            models.push(r.model.clone());
        }
        let tier_members: Vec<_> = upstreams
            .iter()
            .filter_map(|u| u.load.clone().map(|l| (Arc::clone(&u.name), l)))
            .collect();
        let pools: Vec<_> = upstreams
            .iter()
            .filter_map(|u| u.rests.clone().map(|r| (Arc::clone(&u.name), r)))
            .collect();
        let drains = match &config.redis {
            Some(r) if !tier_members.is_empty() || !pools.is_empty() => Some(
                shared::SharedDrains::new(&r.url, tier_members, pools, Arc::clone(&metrics))
                    .map_err(|e| StartError::Config(ConfigError::new("config", "redis.url", e)))?,
            ),
            _ => None,
        };
        let inbound_keys = config
            .auth
            .as_ref()
            .map(|a| callers::InboundKeys::from_config(a, config.redis.as_ref(), &metrics))
            .transpose()?;
        Ok(Self {
            state: Arc::new(AppState {
                schemas: Schemas {
                    openai: palisade_schema::Schema::openai_chat(),
                    anthropic: palisade_schema::Schema::anthropic_messages(),
                    responses: palisade_schema::Schema::openai_responses(),
                    embeddings: palisade_schema::Schema::openai_embeddings(),
                },
                routes,
                models,
                upstreams,
                max_body_bytes: config.max_body_bytes,
                max_answer_bytes: config.max_answer_bytes,
                max_json_values: config.max_json_values,
                server: config.server.clone(),
                signals: server::Signals::default(),
                inbound_keys,
                metrics,
                drains,
            }),
        })
    }

    /// The axum router serving every endpoint.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/messages", post(messages))
            .route("/v1/responses", post(responses))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics_text))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::from_fn(stamp))
            .with_state(self.state.clone())
    }

    /// The mock behind the `kind = "mock"` upstream `name`, if any.
    pub fn mock(&self, name: &str) -> Option<&MockUpstream> {
        self.state
            .upstreams
            .iter()
            .find(|u| &*u.name == name)
            .and_then(|u| u.mock.as_ref())
    }
}

async fn chat_completions(State(state): State<Arc<AppState>>, req: Request) -> Response<Body> {
    proxy::handle(state, Api::ChatCompletions, req).await
}

async fn messages(State(state): State<Arc<AppState>>, req: Request) -> Response<Body> {
    proxy::handle(state, Api::Messages, req).await
}

async fn responses(State(state): State<Arc<AppState>>, req: Request) -> Response<Body> {
    proxy::handle(state, Api::Responses, req).await
}

async fn embeddings(State(state): State<Arc<AppState>>, req: Request) -> Response<Body> {
    proxy::handle(state, Api::Embeddings, req).await
}

/// The balance of a tier of several members: each member's load (shared
/// with its other tiers), weight, breaker and local rate limits (a member
/// at its own `requests_per_minute` or `tokens_per_minute` is skipped, not
/// called to wait or refuse).
fn tier_balance(
    route: &config::RouteConfig,
    members: &[RouteTarget],
    weights: &HashMap<&str, f64>,
) -> Result<palisade_balance::Balance<()>, palisade_balance::ConfigError> {
    let mut builder = palisade_balance::Balance::builder().strategy(match route.balance {
        config::BalanceStrategy::LeastLoaded => palisade_balance::Strategy::LeastLoaded,
        config::BalanceStrategy::Weighted => palisade_balance::Strategy::Weighted,
        config::BalanceStrategy::RoundRobin => palisade_balance::Strategy::RoundRobin,
    });
    if let Some(h) = route
        .affinity
        .as_deref()
        .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
    {
        builder = builder.affinity(h);
    }
    if let Some(ms) = route.hedge_after {
        builder = builder.hedge_after(Duration::from_millis(ms));
    }
    builder.build(
        members
            .iter()
            .map(|t| {
                let up = &t.upstream;
                // Its local limits are shared by its stacks (one per worker).
                let stack = up.service().clone();
                let mut m = palisade_balance::Member::new(Arc::clone(&up.name), ())
                    .weight(weights.get(&*up.name).copied().unwrap_or(1.0))
                    .breaker(up.service().breaker().clone())
                    .gate(move || {
                        stack.limited_for().map(|left| {
                            palisade_balance::Unavailable::new(
                                palisade_balance::Why::Limited,
                                Some(left),
                            )
                        })
                    });
                if let Some(load) = &up.load {
                    m = m.load(load.clone());
                }
                m
            })
            .collect(),
    )
}

/// The endpoints a route serves: each API one of its targets serves
/// itself or through translation (`/v1/embeddings` only with an OpenAI,
/// Azure or mock target).
fn endpoints(targets: &[RouteTarget]) -> Vec<String> {
    Api::ALL
        .into_iter()
        .filter(|api| {
            targets
                .iter()
                .any(|t| t.upstream.target_api(*api).is_some())
        })
        .map(|api| format!("/v1{}", api.path()))
        .collect()
}

/// `GET /v1/models`: the routed models, in Anthropic's format when the
/// caller sends `anthropic-version`, OpenAI's otherwise; each with the
/// endpoints its route serves (`endpoints`, an extra field clients skip).
async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> impl IntoResponse {
    let served = |m: &String| endpoints(state.routes.get(m).map_or(&[], |r| r.targets.as_slice()));
    let body = if headers.contains_key("anthropic-version") {
        let data: Vec<_> = state
            .models
            .iter()
            .map(|m| json!({"type": "model", "id": m, "display_name": m, "created_at": "1970-01-01T00:00:00Z", "endpoints": served(m)}))
            .collect();
        json!({
            "data": data,
            "has_more": false,
            "first_id": state.models.first(),
            "last_id": state.models.last(),
        })
    } else {
        let data: Vec<_> = state
            .models
            .iter()
            .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "palisade", "endpoints": served(m)}))
            .collect();
        json!({"object": "list", "data": data})
    };
    ([(CONTENT_TYPE, "application/json")], body.to_string())
}

async fn healthz() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#)
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response<Body> {
    // The breaker's state is read now (an open circuit turns half-open on
    // the next call, not on a timer).
    for u in &state.upstreams {
        state
            .metrics
            .set_breaker_state(&u.name, u.service().breaker().state());
    }
    let members: Vec<_> = state
        .upstreams
        .iter()
        .filter_map(|u| u.load.as_ref().map(palisade_balance::MemberLoad::stats))
        .collect();
    state.metrics.members(&members);
    let mut res = Response::new(Body::from(state.metrics.encode()));
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// What this gateway serves, for 404 and 405 answers.
const ENDPOINTS: &str = "POST /v1/chat/completions, POST /v1/messages, POST /v1/responses, POST /v1/embeddings, GET /v1/models, GET /healthz, GET /metrics";

/// The API whose error format a request that matched no handler gets.
fn api_of(req: &Request) -> Api {
    if req.headers().contains_key("anthropic-version") {
        return Api::Messages;
    }
    // Any other path: OpenAI's format, which most clients read.
    Api::from_path(req.uri().path()).unwrap_or(Api::ChatCompletions)
}

async fn not_found(req: Request) -> GatewayError {
    GatewayError::new(
        api_of(&req),
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint {} {}; this gateway serves {ENDPOINTS}",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> GatewayError {
    GatewayError::new(
        api_of(&req),
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}; this gateway serves {ENDPOINTS}",
            req.method(),
            req.uri().path()
        ),
    )
}

/// Gives every answer — errors, 404, 405, health and metrics included — an
/// `x-trace-id` and an `x-palisade-overhead-ms`. The trace context is read
/// (or generated) once here and handed to the handlers in the request's
/// extensions; a handler that measured its own overhead (the proxy, which
/// leaves out the time spent waiting on upstreams) keeps its figure.
async fn stamp(mut req: Request, next: axum::middleware::Next) -> Response<Body> {
    let started = std::time::Instant::now();
    let trace = palisade_trace::TraceContext::from_headers(req.headers());
    let id = HeaderValue::from_str(trace.id()).ok();
    req.extensions_mut().insert(trace);
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if let (false, Some(id)) = (h.contains_key(palisade_trace::TRACE_ID_HEADER), id) {
        h.insert(palisade_trace::TRACE_ID_HEADER, id);
    }
    if !h.contains_key(proxy::OVERHEAD_HEADER) {
        h.insert(
            proxy::OVERHEAD_HEADER,
            proxy::overhead_value(started.elapsed()),
        );
    }
    res
}

/// Serves `gateway` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish (see [`serve_with_grace`] for a bound).
///
/// Connections get the limits of the config's `[server]` section (see
/// [`config::ServerConfig`]): header and body timeouts, a connection limit,
/// explicit HTTP/2 settings.
///
/// # Errors
///
/// None today (accept errors are logged and accepting goes on); the
/// `Result` leaves room for errors that end serving.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run(listener, gateway, shutdown, None).await.map(|_| ())
}

/// Serves until `shutdown`, then waits at most `grace` for in-flight
/// requests (streams included) to finish. Returns `true` when they all did;
/// otherwise the streams still running end with an error event in the
/// caller's format ("the gateway is shutting down"), and get two seconds
/// to flush it.
///
/// # Errors
///
/// As [`serve`].
pub async fn serve_with_grace(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<bool> {
    run(listener, gateway, shutdown, Some(grace)).await
}

/// The listening sockets of [`serve_per_core`]: one per worker thread, all
/// bound to one address with `SO_REUSEPORT`, so the kernel spreads new
/// connections over the workers.
#[derive(Debug)]
pub struct PerCoreListeners {
    listeners: Vec<std::net::TcpListener>,
    addr: std::net::SocketAddr,
}

impl PerCoreListeners {
    /// Binds `workers` listening sockets (at least one) to `addr`; with
    /// port 0, the first gets a free port and the others the same one.
    /// They listen when this returns (connections wait in their backlogs
    /// until the workers accept them); no runtime is needed.
    ///
    /// # Errors
    ///
    /// The address is in use (another process listens there, with
    /// `SO_REUSEPORT` or not: these sockets never join it) or not this
    /// machine's; or, on a system without `SO_REUSEPORT`, more than one
    /// worker (set `[server] runtime = "multi_thread"` there).
    pub fn bind(addr: std::net::SocketAddr, workers: usize) -> std::io::Result<Self> {
        let workers = workers.max(1);
        if addr.port() != 0 {
            // `SO_REUSEPORT` would let these sockets join another process
            // of this user already listening there (another gateway), and
            // share its connections without a word: a plain bind first
            // fails with "address in use" as a single-socket server would.
            drop(std::net::TcpListener::bind(addr)?);
        }
        let first = reuse_port_listener(addr, workers)?;
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..workers {
            listeners.push(reuse_port_listener(addr, workers)?);
        }
        Ok(Self { listeners, addr })
    }

    /// The address bound (with the port chosen when `bind` was given 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// How many workers will serve.
    pub fn workers(&self) -> usize {
        self.listeners.len()
    }
}

/// A non-blocking listener on `addr` that others may bind too
/// (`SO_REUSEPORT`), with tokio's own backlog of 1024.
fn reuse_port_listener(
    addr: std::net::SocketAddr,
    workers: usize,
) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    #[cfg(all(
        unix,
        not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
    ))]
    s.set_reuse_port(true)?;
    #[cfg(not(all(
        unix,
        not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
    )))]
    if workers > 1 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "thread_per_core needs SO_REUSEPORT, which this system lacks: set [server] runtime = \"multi_thread\" or workers = 1",
        ));
    }
    let _ = workers;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Serves `gateway` with one worker thread per socket of `listeners`, each
/// running its own current-thread tokio runtime: a connection is accepted,
/// served and answered on one thread, and each worker calls upstreams over
/// connection pools of its own (no request is handed between threads, no
/// upstream connection is shared by two threads). This is what the binary
/// runs with `[server] runtime = "thread_per_core"` (the default).
///
/// Process-wide, whatever the worker: the connection limit
/// (`max_connections`), every upstream's breaker, rate limits, token
/// limits and retry budget (each upstream's per-worker stacks share one set
/// of layers: [`palisade::preset::StackConfig::build_over_each`]), the
/// metrics, and shutdown — once `shutdown` completes every worker stops
/// accepting, and the grace period and the cut of running streams apply to
/// all connections at once. The gateway must have been built with at least
/// as many workers as `listeners` has (`[server] workers`) for each worker
/// to get its own pools; fewer work, sharing pools.
///
/// Call it from any runtime (the binary's runs signals and exporters); it
/// returns when every worker is done: `true` when every connection finished
/// within the grace (`None`: no limit).
///
/// # Errors
///
/// A worker thread that cannot be started, or cannot listen on its socket.
pub async fn serve_per_core(
    listeners: PerCoreListeners,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Option<Duration>,
) -> std::io::Result<bool> {
    let state = gateway.state.clone();
    // The fleet's shared drains are read from the start, not from the
    // first request on.
    if let Some(drains) = &state.drains {
        drains.ensure_polling();
    }
    server::run_per_core(
        listeners.listeners,
        gateway.router(),
        &state.server,
        shutdown,
        grace,
        &state.signals,
    )
    .await
}

async fn run(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Option<Duration>,
) -> std::io::Result<bool> {
    let state = gateway.state.clone();
    // The fleet's shared drains are read from the start, not from the
    // first request on.
    if let Some(drains) = &state.drains {
        drains.ensure_polling();
    }
    server::run(
        listener,
        gateway.router(),
        &state.server,
        shutdown,
        grace,
        &state.signals,
    )
    .await
}
