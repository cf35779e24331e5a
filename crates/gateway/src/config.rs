//! The gateway's configuration file (TOML), its defaults and its
//! validation.
//!
//! Every section but `[[upstreams]]` and `[[routes]]` is optional. Unknown
//! keys are errors (a typo must not silently fall back to a default). An
//! invalid file fails at start with a [`ConfigError`] naming the file, the key
//! and the reason.
//!
//! | key | default |
//! |---|---|
//! | `listen` | `127.0.0.1:8080` |
//! | `max_body_bytes` | 33554432 (32 MiB) |
//! | `max_answer_bytes` | 67108864 (64 MiB): the largest non-streamed upstream answer read (502 naming the upstream above) |
//! | `max_json_values` | 300000: JSON values per request body (413 above; see [`DEFAULT_MAX_JSON_VALUES`]) |
//! | `shutdown_grace` (ms) | 30000: then streams still running end with an error event |
//! | `[server]` | connection limits and timeouts: see [`ServerConfig`] |
//! | `[[upstreams]] kind` | required: `openai` (and every OpenAI-compatible server), `anthropic`, `azure` (Azure OpenAI: OpenAI's format, an `api-key` header), `mock` |
//! | `[[upstreams]] base_url` | required but for `mock`; `anthropic`: with or without `/v1`; `azure`: the deployment's URL (`https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT`) or the v1 API's (`…/openai/v1`) |
//! | `[[upstreams]] api_version` | `azure` only: none; sent as `?api-version=` with every call (deployment URLs need it, e.g. `2024-10-21`) |
//! | `[[upstreams]] http` | `auto`: HTTP/2 where the server offers it over TLS, else HTTP/1.1; `http1`; `http2` (cleartext with prior knowledge, h2c: e.g. vLLM behind a proxy, or the mock) |
//! | `[auth] keys_env` | none: no inbound key is required |
//! | `[[auth.keys]]` `name` / `key_env` (one key, or a group: several comma-separated keys sharing the limits) / `requests_per_minute` / `tokens_per_minute` / `tokens_per_day` | none: callers with limits of their own (each limit off when absent); over one, a 429 naming the caller and the limit, with `Retry-After` |
//! | `[redis] url` / `fail_open` / `share_breaker` | none: limits per process / `true` (Redis unreachable: calls go on unlimited; `false`: 503), failures counted in `palisade_redis_errors_total` / `false` (`true`: a circuit opened in one gateway opens in all, and one gateway probes for all) |
//! | `[upstreams.timeout]` `connect` / `first_byte` / `idle` / `total` (ms) | 10000 / 60000 / 30000 / 600000 |
//! | `[upstreams.retry]` `max_attempts` / `base_delay` / `max_delay` (ms) / `retry_conflict` | 3 / 200 / 10000 / false |
//! | `[upstreams.rate_limit]` | none (no limit); `max_wait` 0 = reject at once |
//! | `[upstreams.breaker]` `failure_rate` / `minimum_calls` / `window` / `open_for` (ms) / `half_open_calls` / `rate_limit_is_failure` | 0.5 / 10 / 20 / 30000 / 2 / false |
//! | `[[upstreams]] weight` | 1: its share in a tier with `balance = "weighted"` |
//! | `[[routes]] balance` | `least_loaded`; `weighted`; `round_robin` (how a tier's members are ordered) |
//! | `[[routes]] affinity` | none: no session affinity; a header name (`x-session-id`) |
//! | `[[routes]] hedge_after` (ms) | none: no hedging |
//!
//! A route's target is an upstream name, or `upstream:model` to send another
//! model name to that upstream (for a fallback to another provider):
//! `targets = ["primary", "claude:claude-haiku-4-5"]`. A list inside
//! `targets` is a tier of members balanced against each other, the next
//! entry its fallback: `targets = [["east", "west"], "backup"]`. Every
//! member of a tier is tried (or skipped without a call when its circuit is
//! open, its provider said its limit is spent (until the reset), or its own
//! local `rate_limit` has no room) before the next entry. A member's 429
//! goes to the tier's next member at once: its retry layer does not wait
//! it out while another member is left. With every member of every tier
//! out, a call waits for the first back up to the largest
//! `rate_limit.max_wait` of the tiers' members, else gets a 429 (503 when
//! every circuit is open) with the earliest `Retry-After`. `balance` orders a tier's members: `least_loaded` (the
//! default: calls in flight × (time to first content + a penalty for recent
//! 429s, 5xx and broken streams)), `weighted` (the upstreams' `weight`,
//! default 1), `round_robin`. `affinity = "x-session-id"` keeps a session
//! (that header, else `prompt_cache_key`, `user` or `metadata.user_id`) on
//! one member of a tier while it can take calls. `hedge_after = 4000`
//! hedges a call to a tier of several members: with no content event (a
//! stream's first token, a JSON answer) after that many milliseconds, the
//! next member of the tier is called too, the first of the two to reach
//! content answers and the other is cancelled (its connection closed); at
//! most a tenth of a tier's calls are hedged, and nothing reaches the
//! caller before the winner is known. It needs a tier of two members at
//! least.
//!
//! `api_keys_env = ["KEY_1", "KEY_2"]` (instead of `api_key_env` /
//! `api_key_file`) gives an upstream a pool of keys: each call takes the
//! next key that can take it; a key answered 401 or 403 is retired (the
//! environment does not change while the gateway runs, so for good), one
//! answered 429 rests for the provider's wait hint (1 s without one); the
//! refused call goes again at once with another key, below the retry layer
//! (no attempt spent, no sleep). Every key is scrubbed from answers.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade::preset;
use palisade_providers::Api;
use serde::Deserialize;

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default request body limit (32 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The default limit on a non-streamed upstream answer (64 MiB).
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The default limit on JSON values in one request body (300,000).
///
/// Why a limit: parsed, a JSON value costs far more memory than it takes to
/// write (a one-word message, 30 bytes, costs ~770 bytes in `serde_json`'s
/// maps), so a body within `max_body_bytes` made of a million tiny messages
/// would cost ~1.7 GiB. The gateway counts values in a first pass that
/// allocates nothing and refuses a body over the limit before parsing it.
///
/// Why this value: Anthropic refuses more than 100,000 messages in one
/// request, and a message is at least three values (the object, its role,
/// its content), so no request Anthropic serves is refused for its message
/// count alone. Real requests hold far fewer (a long agent session with many
/// tools: tens of thousands). Raise it for bodies of many small values you
/// know a provider serves.
pub const DEFAULT_MAX_JSON_VALUES: u64 = 300_000;

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The largest request body accepted (413 above).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// The largest non-streamed answer (or error body) read from an
    /// upstream: above it, the caller gets a 502 naming the upstream (the
    /// upstream's answer, not the caller's request, was too large).
    #[serde(default = "default_max_answer")]
    pub max_answer_bytes: usize,
    /// The most JSON values a request body may hold (413 above); see
    /// [`DEFAULT_MAX_JSON_VALUES`].
    #[serde(default = "default_max_json_values")]
    pub max_json_values: u64,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT
    /// (milliseconds).
    #[serde(default = "default_grace")]
    pub shutdown_grace: u64,
    /// Inbound authentication.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// The upstreams.
    pub upstreams: Vec<UpstreamConfig>,
    /// Which models go where.
    pub routes: Vec<RouteConfig>,
    /// Shared limits across gateway processes: each upstream's
    /// `requests_per_minute` and `tokens_per_minute` live in this Redis
    /// (keys `palisade:{upstream}:rpm` and `:tpm`; tokens reserved from the
    /// estimate and settled with the reported usage there), and tier
    /// members' provider-limit drains and pooled keys' rests are shared
    /// there (`palisade:{upstream}:drained`,
    /// `palisade:{upstream}:key{i}:drained`, read every 250 ms), and with
    /// `share_breaker` so are circuits; failing open (or closed, with
    /// `fail_open = false`) when Redis cannot be asked. Callers' own limits
    /// (`[[auth.keys]]`) are kept there too.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// Limits on the callers' connections.
    #[serde(default)]
    pub server: ServerConfig,
}

/// `[server]`: limits on the callers' connections (times in milliseconds).
///
/// | key | default | what |
/// |---|---|---|
/// | `header_read_timeout` | 30000 | from the moment a connection is ready for a request (accepted, or, HTTP/1.1, its last answer sent) to a complete request head; covers a new connection that sends nothing or part of a head (HTTP/1.1 or HTTP/2), a slow head and an idle HTTP/1.1 keep-alive connection alike |
/// | `body_read_timeout` | 60000 | from the head to the end of the request body (408 after) |
/// | `idle_timeout` | 300000 | a connection (HTTP/1.1 or HTTP/2) with no byte either way for this long is closed gracefully; it must exceed every upstream's `first_byte` and `idle` timeouts, so that a request waiting on its upstream is never taken for idleness |
/// | `max_connections` | half the process's open-file limit, less 64 (each caller connection may hold an upstream one; 1024 when the limit cannot be read) | connections over it get a 503 and are closed; accept errors (the open-file limit) are logged and accepting pauses 100 ms |
/// | `http2_max_concurrent_streams` | 256 | per connection |
/// | `http2_stream_window` / `http2_connection_window` | 1048576 / 4194304 | bytes the caller may send before the gateway reads |
/// | `http2_keep_alive_interval` | 20000 | a PING when a connection is silent this long; no answer within the same time closes it |
/// | `runtime` | `thread_per_core` | how the binary runs: `thread_per_core` — one current-thread tokio runtime per worker thread, each accepting on its own `SO_REUSEPORT` listener and calling upstreams over its own connection pools, so a request stays on one thread from accept to answer; `multi_thread` — one work-stealing tokio runtime, whose workers hand requests to each other. Limits, breakers, metrics and shutdown are process-wide either way (see [`crate::serve_per_core`]). The library's [`crate::serve`] runs on the caller's runtime whatever this says |
/// | `workers` | the number of cores | `thread_per_core`: how many worker threads |
/// | `http2_max_pending_accept_reset_streams` | 20 | streams a caller may open and reset before the gateway accepts them (HTTP/2 rapid reset) |
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// See the table above.
    pub header_read_timeout: u64,
    /// See the table above.
    pub body_read_timeout: u64,
    /// See the table above.
    pub idle_timeout: u64,
    /// See the table above (`None`: derived from the open-file limit).
    pub max_connections: Option<usize>,
    /// See the table above.
    pub http2_max_concurrent_streams: u32,
    /// See the table above.
    pub http2_stream_window: u32,
    /// See the table above.
    pub http2_connection_window: u32,
    /// See the table above.
    pub http2_keep_alive_interval: u64,
    /// See the table above.
    pub http2_max_pending_accept_reset_streams: usize,
    /// See the table above.
    pub runtime: Runtime,
    /// See the table above (`None`: one per core).
    pub workers: Option<usize>,
}

/// `[server] runtime`: how the binary runs the gateway.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// One current-thread runtime per worker thread, each with its own
    /// `SO_REUSEPORT` listener and upstream connection pools.
    #[default]
    ThreadPerCore,
    /// One multi-thread (work-stealing) runtime.
    MultiThread,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: 30_000,
            body_read_timeout: 60_000,
            idle_timeout: 300_000,
            max_connections: None,
            http2_max_concurrent_streams: 256,
            http2_stream_window: 1 << 20,
            http2_connection_window: 4 << 20,
            http2_keep_alive_interval: 20_000,
            http2_max_pending_accept_reset_streams: 20,
            runtime: Runtime::default(),
            workers: None,
        }
    }
}

impl ServerConfig {
    /// The worker threads of `thread_per_core`: `workers`, or one per core
    /// (1 when the core count cannot be read). 1 for `multi_thread`.
    pub fn worker_count(&self) -> usize {
        match self.runtime {
            Runtime::MultiThread => 1,
            Runtime::ThreadPerCore => self.workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            }),
        }
    }

    /// `max_connections`, or its default from the open-file limit.
    pub fn connection_limit(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            #[cfg(unix)]
            {
                rustix::process::getrlimit(rustix::process::Resource::Nofile)
                    .current
                    .map_or(1024, |n| {
                        usize::try_from(n.saturating_sub(64) / 2).unwrap_or(usize::MAX)
                    })
                    .max(16)
            }
            #[cfg(not(unix))]
            {
                1024
            }
        })
    }
}

/// `[auth]`: inbound bearer keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The environment variable holding the accepted keys, comma-separated
    /// (callers without limits of their own).
    #[serde(default)]
    pub keys_env: Option<String>,
    /// `[[auth.keys]]`: callers with limits of their own.
    #[serde(default)]
    pub keys: Vec<CallerConfig>,
}

/// `[[auth.keys]]`: one caller (a tenant, a team) with its own limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// Its label in metrics, logs and errors — never the key.
    pub name: String,
    /// The environment variable holding its key — or several,
    /// comma-separated: a key group, every key sharing the caller's limits
    /// (e.g. to rotate a key: add the new one, then drop the old).
    pub key_env: String,
    /// Its own requests per minute (also the burst).
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Its own tokens per minute (also the burst), reserved from each
    /// call's estimate and settled with the reported usage.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Its token budget per day: refilled continuously over 24 hours (a
    /// call spends from it as it does from `tokens_per_minute`), not reset
    /// at midnight.
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
}

/// `[redis]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port`.
    pub url: String,
    /// When Redis cannot be asked (within 50 ms): let calls through without
    /// the shared limits (`true`, the default: a limiter outage must not
    /// become an LLM outage) or refuse them (`false`: 503). Either way the
    /// failure is logged and counted in `palisade_redis_errors_total`.
    #[serde(default = "yes")]
    pub fail_open: bool,
    /// A circuit opened in one process opens in every process sharing this
    /// Redis (read every 250 ms), and once its open time is over one
    /// process probes for all (`palisade_breaker::BreakerBuilder::redis`,
    /// keys `palisade:{upstream}:breaker:*`). Off by default.
    #[serde(default)]
    pub share_breaker: bool,
}

fn yes() -> bool {
    true
}

/// Which API an upstream speaks.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// OpenAI: chat completions, the Responses API and embeddings (and
    /// every OpenAI-compatible server, called in whichever of those APIs
    /// the caller used).
    Openai,
    /// Anthropic messages.
    Anthropic,
    /// Azure OpenAI: OpenAI's wire format, the key in an `api-key` header,
    /// `base_url` a deployment's URL
    /// (`https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT`,
    /// with `api_version` set, e.g. `2024-10-21`) or the v1 API's
    /// (`https://RESOURCE.openai.azure.com/openai/v1`, no `api_version`;
    /// there the model is the deployment's name: a route target
    /// `"azure-v1:DEPLOYMENT"` sends it).
    Azure,
    /// The built-in mock upstream, in-process (serves every API).
    Mock,
}

impl Kind {
    /// The APIs an upstream of this kind serves, the one translated calls
    /// go to first.
    pub fn apis(self) -> &'static [Api] {
        match self {
            Self::Openai | Self::Azure => &[Api::ChatCompletions, Api::Responses, Api::Embeddings],
            Self::Anthropic => &[Api::Messages],
            Self::Mock => &[
                Api::ChatCompletions,
                Api::Messages,
                Api::Responses,
                Api::Embeddings,
            ],
        }
    }
}

/// `[[upstreams]] http`: the HTTP versions spoken to an upstream.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpVersion {
    /// HTTP/2 where the server offers it over TLS (ALPN), else HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only; over cleartext `http://` with prior knowledge (h2c).
    /// Every stream to the upstream shares one connection, which is what
    /// keeps memory per open stream low (see the `memory` example).
    Http2,
}

impl UpstreamConfig {
    /// The APIs this upstream serves, the one translated calls go to first:
    /// its kind's ([`Kind::apis`]), except an Azure deployment URL (one with
    /// `api_version`), which serves chat completions and embeddings only —
    /// Azure serves the Responses API at its v1 URL
    /// (`…/openai/v1/responses`), not under a deployment.
    pub fn apis(&self) -> &'static [Api] {
        match self.kind {
            Kind::Azure if self.api_version.is_some() => &[Api::ChatCompletions, Api::Embeddings],
            Kind::Openai | Kind::Azure | Kind::Anthropic | Kind::Mock => self.kind.apis(),
        }
    }

    /// The base URL the API paths (`/chat/completions`, `/messages`) are
    /// joined to: `base_url` as written, except that an Anthropic one not
    /// ending in `/v1` gets it (the SDKs' `base_url` leaves it out).
    pub fn api_base_url(&self) -> Option<String> {
        let url = self.base_url.as_deref()?.trim_end_matches('/');
        Some(match self.kind {
            Kind::Anthropic if !url.ends_with("/v1") => format!("{url}/v1"),
            _ => url.to_owned(),
        })
    }
}

/// `[[upstreams]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Its name, used by routes, metrics and error messages.
    pub name: String,
    /// Which API it speaks.
    pub kind: Kind,
    /// The base URL (`https://api.openai.com/v1`); not for `mock`. For
    /// `kind = "anthropic"` both spellings work: with `/v1`
    /// (`https://api.anthropic.com/v1`) or without it, as the Anthropic SDKs
    /// write it (`https://api.anthropic.com`) — see
    /// [`UpstreamConfig::api_base_url`].
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable holding its key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// A file holding its key (re-read when it changes).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// A pool of keys, each from its environment variable, instead of one:
    /// each call takes the next key that can take it; a key answered 401
    /// or 403 is retired, one answered 429 rests for the provider's hint,
    /// and the refused call goes again at once with another key (no retry
    /// attempt spent, no sleep).
    #[serde(default)]
    pub api_keys_env: Vec<String>,
    /// `kind = "azure"` only: the `api-version` query parameter sent with
    /// every call (Azure's deployment URLs require it; its v1 URLs take
    /// none).
    #[serde(default)]
    pub api_version: Option<String>,
    /// The HTTP versions spoken to it.
    #[serde(default)]
    pub http: HttpVersion,
    /// Timeouts.
    #[serde(default)]
    pub timeout: TimeoutConfig,
    /// Retries.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Rate limits.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Circuit breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Its share in a tier balanced by weight (`balance = "weighted"`): a
    /// positive number, 1 by default.
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

/// `[upstreams.timeout]`, milliseconds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    /// TCP (and TLS) connect.
    pub connect: u64,
    /// Request sent → response headers, per attempt.
    pub first_byte: u64,
    /// Longest gap between two stream events carrying data.
    pub idle: u64,
    /// The whole exchange, retries and streamed body included.
    pub total: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        // The preset stack's defaults: one source for both.
        Self {
            connect: ms(preset::DEFAULT_CONNECT),
            first_byte: ms(preset::DEFAULT_FIRST_BYTE),
            idle: ms(preset::DEFAULT_IDLE),
            total: ms(preset::DEFAULT_TOTAL),
        }
    }
}

/// `[upstreams.retry]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first call included.
    pub max_attempts: u32,
    /// The first retry's delay (ms).
    pub base_delay: u64,
    /// The longest delay, upstream hints included (ms).
    pub max_delay: u64,
    /// Retry a 409 Conflict (OpenAI's SDK does); off by default.
    pub retry_conflict: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: palisade::retry::DEFAULT_MAX_ATTEMPTS,
            base_delay: ms(palisade::retry::DEFAULT_BASE_DELAY),
            max_delay: ms(palisade::retry::DEFAULT_MAX_DELAY),
            retry_conflict: false,
        }
    }
}

/// `[upstreams.rate_limit]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per minute (also the burst).
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute (also the burst), estimated from each request.
    pub tokens_per_minute: Option<u64>,
    /// How long a request may wait for capacity (ms); 0 rejects at once.
    pub max_wait: u64,
}

/// `[upstreams.breaker]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failure rate over the window that opens the circuit.
    pub failure_rate: f64,
    /// Calls in the window before the rate counts.
    pub minimum_calls: u32,
    /// The window: this many latest calls.
    pub window: u32,
    /// How long the circuit stays open (ms).
    pub open_for: u64,
    /// Probes let through when half-open.
    pub half_open_calls: u32,
    /// Count a 429 as a failure that trips the breaker; off by default (a
    /// 429 says this caller is over its quota, not that the upstream is
    /// sick; a tier still penalizes a member for it).
    pub rate_limit_is_failure: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: palisade_breaker::DEFAULT_FAILURE_RATE,
            minimum_calls: palisade_breaker::DEFAULT_MINIMUM_CALLS,
            window: palisade_breaker::DEFAULT_WINDOW_CALLS as u32,
            open_for: ms(palisade_breaker::DEFAULT_OPEN_FOR),
            half_open_calls: palisade_breaker::DEFAULT_HALF_OPEN_CALLS,
            rate_limit_is_failure: false,
        }
    }
}

impl UpstreamConfig {
    /// The one policy that decides, for this upstream, what its retry layer
    /// retries, what its breaker counts as a failure, what the gateway
    /// falls back on and what a tier penalizes it for.
    pub fn classifier(&self) -> palisade_core::classify::LlmClassifier {
        palisade_core::classify::LlmClassifier::new()
            .retry_conflict(self.retry.retry_conflict)
            .rate_limit_is_failure(self.breaker.rate_limit_is_failure)
    }
}

/// `[[routes]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The model name clients send.
    pub model: String,
    /// Tried in order: each entry a target (`name` or `name:model`) or a
    /// tier of targets balanced against each other (`["east", "west"]`);
    /// the next entry is the fallback when every member of a tier failed or
    /// could not take the call.
    pub targets: Vec<TargetEntry>,
    /// How a tier's members are ordered for each call.
    #[serde(default)]
    pub balance: BalanceStrategy,
    /// Session affinity in tiers: the request header naming the session
    /// (case-insensitive), else the body's `prompt_cache_key`, `user` or
    /// `metadata.user_id`; off when absent.
    #[serde(default)]
    pub affinity: Option<String>,
    /// Hedging in tiers: milliseconds without a content event before the
    /// tier's next member is called too; off when absent.
    #[serde(default)]
    pub hedge_after: Option<u64>,
}

impl RouteConfig {
    /// The route's tiers, in order: a lone target is a tier of one.
    pub fn tiers(&self) -> Vec<Vec<&str>> {
        self.targets
            .iter()
            .map(|t| match t {
                TargetEntry::One(s) => vec![s.as_str()],
                TargetEntry::Tier(v) => v.iter().map(String::as_str).collect(),
            })
            .collect()
    }
}

/// One entry of a route's `targets`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TargetEntry {
    /// A target: `name` or `name:model`.
    One(String),
    /// A tier of targets balanced against each other.
    Tier(Vec<String>),
}

impl From<&str> for TargetEntry {
    fn from(s: &str) -> Self {
        Self::One(s.to_owned())
    }
}

/// `balance`: how a tier's members are ordered for each call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceStrategy {
    /// The least loaded first: calls in flight × (time to first content +
    /// a penalty for recent failures), by the power of two choices.
    #[default]
    LeastLoaded,
    /// At random in proportion to the members' `weight`.
    Weighted,
    /// Each in turn.
    RoundRobin,
}

/// A target of a route, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The upstream's name.
    pub upstream: String,
    /// The model name sent to it (`None`: the client's).
    pub model: Option<String>,
}

impl Target {
    /// Parses `name` or `name:model`.
    pub fn parse(s: &str) -> Self {
        match s.split_once(':') {
            Some((u, m)) => Self {
                upstream: u.to_owned(),
                model: Some(m.to_owned()),
            },
            None => Self {
                upstream: s.to_owned(),
                model: None,
            },
        }
    }
}

/// Whole milliseconds, as the config writes durations.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_max_answer() -> usize {
    DEFAULT_MAX_ANSWER_BYTES
}
fn default_max_json_values() -> u64 {
    DEFAULT_MAX_JSON_VALUES
}
fn default_grace() -> u64 {
    30_000
}

/// A config that cannot be used: which file, which key, why.
#[derive(Debug)]
pub struct ConfigError {
    file: String,
    key: String,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(file: &str, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The file (or `<built-in>`).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The key, as a path (`upstreams[0].timeout.idle`); empty for the file
    /// as a whole.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "invalid config {}: {}", self.file, self.reason)
        } else {
            write!(
                f,
                "invalid config {}: `{}`: {}",
                self.file, self.key, self.reason
            )
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The built-in configuration: the mock upstream (model `mock`) on
    /// `127.0.0.1:8080`, no keys needed.
    pub fn builtin_mock() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            max_json_values: DEFAULT_MAX_JSON_VALUES,
            shutdown_grace: default_grace(),
            auth: None,
            upstreams: vec![UpstreamConfig {
                name: "mock".to_owned(),
                kind: Kind::Mock,
                base_url: None,
                api_key_env: None,
                api_key_file: None,
                api_keys_env: Vec::new(),
                api_version: None,
                http: HttpVersion::Auto,
                timeout: TimeoutConfig::default(),
                retry: RetryConfig::default(),
                rate_limit: None,
                breaker: BreakerConfig::default(),
                weight: 1.0,
            }],
            routes: vec![RouteConfig {
                model: "mock".to_owned(),
                targets: vec!["mock".into()],
                balance: BalanceStrategy::LeastLoaded,
                affinity: None,
                hedge_after: None,
            }],
            redis: None,
            server: ServerConfig::default(),
        }
    }

    /// Reads and validates the file at `path`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file, the key and the reason.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&file, "", format!("cannot read it: {e}")))?;
        Self::parse(&text, &file)
    }

    /// Parses and validates `text`; `file` names it in errors.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file, the key and the reason.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new(file, "", format!("not valid TOML: {e}")))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let reason = e.into_inner().message().to_owned();
            ConfigError::new(file, if key == "." { String::new() } else { key }, reason)
        })?;
        config.validate(file)?;
        Ok(config)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        self.check()
            .map_err(|Invalid(key, reason)| ConfigError::new(file, key, reason))
    }

    /// Every rule, section by section; the first broken one.
    fn check(&self) -> Result<(), Invalid> {
        if self.max_body_bytes == 0 {
            return Invalid::at("max_body_bytes", "must be at least 1");
        }
        if self.max_answer_bytes == 0 {
            return Invalid::at("max_answer_bytes", "must be at least 1");
        }
        if self.max_json_values == 0 {
            return Invalid::at("max_json_values", "must be at least 1");
        }
        self.server.check()?;
        if let Some(a) = &self.auth {
            if a.keys_env.as_deref().is_some_and(|k| k.trim().is_empty()) {
                return Invalid::at("auth.keys_env", "must name an environment variable");
            }
            if a.keys_env.is_none() && a.keys.is_empty() {
                return Invalid::at(
                    "auth",
                    "give keys_env (accepted keys, comma-separated) or [[auth.keys]] callers, or leave [auth] out",
                );
            }
            let mut names = HashSet::new();
            for (i, c) in a.keys.iter().enumerate() {
                let at = |k: &str| format!("auth.keys[{i}].{k}");
                if c.name.trim().is_empty() {
                    return Invalid::at(at("name"), "must not be empty");
                }
                if !names.insert(c.name.as_str()) {
                    return Invalid::at(at("name"), format!("`{}` is used twice", c.name));
                }
                if c.key_env.trim().is_empty() {
                    return Invalid::at(at("key_env"), "must name an environment variable");
                }
                for (k, v) in [
                    ("requests_per_minute", c.requests_per_minute),
                    ("tokens_per_minute", c.tokens_per_minute),
                    ("tokens_per_day", c.tokens_per_day),
                ] {
                    if v == Some(0) {
                        return Invalid::at(
                            at(k),
                            "must be at least 1 (leave it out for no limit)",
                        );
                    }
                }
            }
        }
        if self.upstreams.is_empty() {
            return Invalid::at("upstreams", "at least one [[upstreams]] is needed");
        }
        let mut names = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let at = |k: &str| format!("upstreams[{i}].{k}");
            if !names.insert(u.name.as_str()) {
                return Invalid::at(at("name"), format!("`{}` is used twice", u.name));
            }
            u.check(self.server.idle_timeout)
                .map_err(|Invalid(k, reason)| Invalid(at(&k), reason))?;
        }
        check_routes(&self.routes, &names)?;
        if let Some(r) = &self.redis {
            if !r.url.starts_with("redis://") {
                // Never the password: what follows the last `@` only.
                let shown = r
                    .url
                    .rsplit_once('@')
                    .map_or(r.url.as_str(), |(_, host)| host);
                return Invalid::at(
                    "redis.url",
                    format!(
                        "`…{shown}` is not a redis:// URL (TLS to Redis, rediss://, is not \
                         built in: reach it through a local TLS tunnel)"
                    ),
                );
            }
        }
        Ok(())
    }

    /// The shutdown grace period.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace)
    }
}

/// A broken rule: the key (`upstreams[0].timeout.idle`) and the reason.
#[derive(Debug)]
struct Invalid(String, String);

impl Invalid {
    fn at(key: impl Into<String>, reason: impl Into<String>) -> Result<(), Self> {
        Err(Self(key.into(), reason.into()))
    }
}

impl ServerConfig {
    fn check(&self) -> Result<(), Invalid> {
        for (key, v) in [
            ("server.header_read_timeout", self.header_read_timeout),
            ("server.body_read_timeout", self.body_read_timeout),
            ("server.idle_timeout", self.idle_timeout),
            (
                "server.http2_keep_alive_interval",
                self.http2_keep_alive_interval,
            ),
            (
                "server.http2_max_concurrent_streams",
                u64::from(self.http2_max_concurrent_streams),
            ),
            (
                "server.max_connections",
                self.max_connections.unwrap_or(1) as u64,
            ),
            ("server.workers", self.workers.unwrap_or(1) as u64),
        ] {
            if v == 0 {
                return Invalid::at(key, "must be at least 1");
            }
        }
        // HTTP/2's own bounds on window sizes.
        for (key, v) in [
            ("server.http2_stream_window", self.http2_stream_window),
            (
                "server.http2_connection_window",
                self.http2_connection_window,
            ),
        ] {
            if !(65_535..=(1 << 31) - 1).contains(&v) {
                return Invalid::at(
                    key,
                    "must be between 65535 and 2147483647 (HTTP/2's bounds)",
                );
            }
        }
        Ok(())
    }
}

impl UpstreamConfig {
    /// This upstream's own rules; keys relative to it (`timeout.idle`).
    /// `idle_timeout` is the server's: an upstream wait must stay below it.
    fn check(&self, idle_timeout: u64) -> Result<(), Invalid> {
        if !(self.weight.is_finite() && self.weight > 0.0) {
            return Invalid::at(
                "weight",
                format!("{}: must be a positive number", self.weight),
            );
        }
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Invalid::at(
                "name",
                format!(
                    "`{}`: use letters, digits, `-`, `_` and `.` only",
                    self.name
                ),
            );
        }
        match (self.kind, &self.base_url) {
            (Kind::Mock, _) => {}
            (Kind::Openai | Kind::Anthropic | Kind::Azure, None) => {
                return Invalid::at("base_url", "is required for this kind");
            }
            (Kind::Openai | Kind::Anthropic | Kind::Azure, Some(url)) => {
                let ok = url
                    .parse::<http::Uri>()
                    .ok()
                    .is_some_and(|u| u.scheme().is_some() && u.authority().is_some());
                if !ok {
                    return Invalid::at(
                        "base_url",
                        format!("`{url}` is not an absolute http(s) URL"),
                    );
                }
            }
        }
        if self.api_key_env.is_some() && self.api_key_file.is_some() {
            return Invalid::at("api_key_env", "set api_key_env or api_key_file, not both");
        }
        if !self.api_keys_env.is_empty()
            && (self.api_key_env.is_some() || self.api_key_file.is_some())
        {
            return Invalid::at(
                "api_keys_env",
                "set api_keys_env (a pool) or api_key_env / api_key_file (one key), not both",
            );
        }
        if self.api_keys_env.iter().any(String::is_empty) {
            return Invalid::at("api_keys_env", "a variable name is empty");
        }
        match (self.kind, &self.api_version) {
            (_, None) | (Kind::Azure, Some(_)) => {}
            (Kind::Openai | Kind::Anthropic | Kind::Mock, Some(_)) => {
                return Invalid::at("api_version", "is for kind = \"azure\" only");
            }
        }
        if self.kind == Kind::Azure
            && self.api_version.is_none()
            && self
                .base_url
                .as_deref()
                .is_some_and(|u| u.contains("/openai/deployments/"))
        {
            return Invalid::at(
                "api_version",
                "is required with an Azure deployment URL (`…/openai/deployments/NAME`), e.g. `2024-10-21`; the v1 URL (`…/openai/v1`) takes none",
            );
        }
        if let Some(v) = &self.api_version {
            // It goes into a query string as written.
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Invalid::at(
                    "api_version",
                    format!("`{v}`: use letters, digits, `-`, `.` and `_` only, e.g. `2024-10-21`"),
                );
            }
        }
        self.timeout.check(idle_timeout)?;
        if self.retry.max_attempts == 0 {
            return Invalid::at(
                "retry.max_attempts",
                "must be at least 1 (it counts the first call)",
            );
        }
        if self.retry.max_delay < self.retry.base_delay {
            return Invalid::at("retry.max_delay", "must be at least retry.base_delay");
        }
        if let Some(r) = &self.rate_limit {
            for (k, v) in [
                ("requests_per_minute", r.requests_per_minute),
                ("tokens_per_minute", r.tokens_per_minute),
            ] {
                if v == Some(0) {
                    return Invalid::at(
                        format!("rate_limit.{k}"),
                        "must be at least 1 (leave it out for no limit)",
                    );
                }
            }
        }
        self.breaker.check()
    }
}

impl TimeoutConfig {
    fn check(&self, idle_timeout: u64) -> Result<(), Invalid> {
        for (k, v) in [
            ("connect", self.connect),
            ("first_byte", self.first_byte),
            ("idle", self.idle),
            ("total", self.total),
        ] {
            if v == 0 {
                return Invalid::at(format!("timeout.{k}"), "must be at least 1 ms");
            }
        }
        for (k, v) in [("first_byte", self.first_byte), ("idle", self.idle)] {
            if v >= idle_timeout {
                return Invalid::at(
                    format!("timeout.{k}"),
                    format!(
                        "{v} ms is not below server.idle_timeout ({idle_timeout} ms): a caller's connection waiting on this upstream would be closed as idle; raise server.idle_timeout"
                    ),
                );
            }
        }
        Ok(())
    }
}

impl BreakerConfig {
    fn check(&self) -> Result<(), Invalid> {
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Invalid::at(
                "breaker.failure_rate",
                format!("{} is not in (0, 1]", self.failure_rate),
            );
        }
        if self.window == 0 {
            return Invalid::at("breaker.window", "must be at least 1");
        }
        if self.half_open_calls == 0 {
            return Invalid::at("breaker.half_open_calls", "must be at least 1");
        }
        if self.open_for == 0 {
            return Invalid::at("breaker.open_for", "must be at least 1 ms");
        }
        Ok(())
    }
}

/// The routes' rules: a model routed once, targets that name upstreams.
fn check_routes(routes: &[RouteConfig], upstreams: &HashSet<&str>) -> Result<(), Invalid> {
    if routes.is_empty() {
        return Invalid::at("routes", "at least one [[routes]] is needed");
    }
    let mut models = HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        if r.model.is_empty() {
            return Invalid::at(format!("routes[{i}].model"), "must not be empty");
        }
        if !models.insert(r.model.as_str()) {
            return Invalid::at(
                format!("routes[{i}].model"),
                format!("`{}` is routed twice", r.model),
            );
        }
        if r.targets.is_empty() {
            return Invalid::at(
                format!("routes[{i}].targets"),
                "at least one target is needed",
            );
        }
        if let Some(h) = &r.affinity
            && http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            return Invalid::at(
                format!("routes[{i}].affinity"),
                format!("`{h}` is not a header name"),
            );
        }
        if let Some(ms) = r.hedge_after {
            if ms == 0 {
                return Invalid::at(
                    format!("routes[{i}].hedge_after"),
                    "0 would hedge every call at once; give the milliseconds to wait for a first token (e.g. 4000), or leave it out",
                );
            }
            if !r
                .targets
                .iter()
                .any(|t| matches!(t, TargetEntry::Tier(ts) if ts.len() > 1))
            {
                return Invalid::at(
                    format!("routes[{i}].hedge_after"),
                    "a hedge goes to another member of the same tier, and this route has no tier of several members; write one as a list inside `targets` (`targets = [[\"east\", \"west\"]]`)",
                );
            }
        }
        for (j, entry) in r.targets.iter().enumerate() {
            let (members, tiered) = match entry {
                TargetEntry::One(t) => (std::slice::from_ref(t), false),
                TargetEntry::Tier(ts) => (ts.as_slice(), true),
            };
            if members.is_empty() {
                return Invalid::at(
                    format!("routes[{i}].targets[{j}]"),
                    "a tier needs at least one target",
                );
            }
            let mut seen = HashSet::new();
            for (k, t) in members.iter().enumerate() {
                let key = if tiered {
                    format!("routes[{i}].targets[{j}][{k}]")
                } else {
                    format!("routes[{i}].targets[{j}]")
                };
                let target = Target::parse(t);
                if !upstreams.contains(target.upstream.as_str()) {
                    return Invalid::at(key, format!("no upstream is named `{}`", target.upstream));
                }
                if target.model.as_deref() == Some("") {
                    return Invalid::at(key, "the model after `:` is empty");
                }
                if !seen.insert(target.upstream) {
                    return Invalid::at(
                        key,
                        "this upstream is already a member of the tier; list it once",
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FULL: &str = r#"
listen = "127.0.0.1:0"
max_body_bytes = 1024
[auth]
keys_env = "PALISADE_KEYS"
[[upstreams]]
name = "primary"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
[upstreams.timeout]
connect = 2000
first_byte = 30000
idle = 15000
total = 300000
[upstreams.retry]
max_attempts = 3
base_delay = 200
max_delay = 10000
[upstreams.rate_limit]
requests_per_minute = 600
tokens_per_minute = 200000
max_wait = 2000
[upstreams.breaker]
failure_rate = 0.5
minimum_calls = 10
window = 20
open_for = 30000
half_open_calls = 2
[[upstreams]]
name = "backup"
kind = "mock"
[[routes]]
model = "gpt-4o-mini"
targets = ["primary", "backup:mock"]
[redis]
url = "redis://127.0.0.1:6379"
"#;

    #[test]
    fn the_spec_example_loads() {
        let c = Config::parse(FULL, "gw.toml").unwrap();
        assert_eq!(c.max_body_bytes, 1024);
        assert_eq!(c.upstreams[0].timeout.idle, 15_000);
        assert_eq!(c.upstreams[1].retry.max_attempts, 3);
        assert_eq!(
            Target::parse(c.routes[0].tiers()[1][0]),
            Target {
                upstream: "backup".into(),
                model: Some("mock".into())
            }
        );
    }

    #[test]
    fn a_rediss_url_is_refused_naming_tls_and_never_the_password() {
        let toml = FULL.replace(
            "url = \"redis://127.0.0.1:6379\"",
            "url = \"rediss://:hunter2@redis.example:6380\"",
        );
        let err = Config::parse(&toml, "gw.toml").unwrap_err().to_string();
        assert!(err.contains("redis.url") && err.contains("TLS"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn the_http_version_is_auto_unless_set() {
        let c = Config::parse(FULL, "gw.toml").unwrap();
        assert_eq!(c.upstreams[0].http, HttpVersion::Auto);
        let with = FULL.replace(
            "api_key_env = \"OPENAI_API_KEY\"",
            "api_key_env = \"OPENAI_API_KEY\"\nhttp = \"http2\"",
        );
        let c = Config::parse(&with, "gw.toml").unwrap();
        assert_eq!(c.upstreams[0].http, HttpVersion::Http2);
        let e = error_of(&with.replace("\"http2\"", "\"h3\""));
        assert_eq!(e.key(), "upstreams[0].http", "{e}");
        assert!(e.reason().contains("http1"), "{e}");
    }

    fn error_of(text: &str) -> ConfigError {
        Config::parse(text, "gw.toml").unwrap_err()
    }

    #[test]
    fn the_readme_config_is_valid() {
        let readme = include_str!("../../../README.md");
        let block = readme
            .split("```toml")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .find(|b| b.contains("[[upstreams]]"))
            .unwrap();
        let c = Config::parse(block, "README.md").unwrap();
        let azure = c.upstreams.iter().find(|u| u.kind == Kind::Azure).unwrap();
        assert_eq!(azure.api_version.as_deref(), Some("2024-10-21"));
        assert_eq!(c.routes[0].targets.len(), 3);
    }

    #[test]
    fn an_anthropic_base_url_works_with_or_without_v1() {
        let api = |kind: &str, url: &str| {
            let c = Config::parse(
                &format!(
                    "[[upstreams]]\nname = \"u\"\nkind = \"{kind}\"\nbase_url = \"{url}\"\n[[routes]]\nmodel = \"m\"\ntargets = [\"u\"]\n"
                ),
                "gw.toml",
            )
            .unwrap();
            c.upstreams[0].api_base_url().unwrap()
        };
        let v1 = "https://api.anthropic.com/v1";
        assert_eq!(api("anthropic", "https://api.anthropic.com"), v1);
        assert_eq!(api("anthropic", "https://api.anthropic.com/"), v1);
        assert_eq!(api("anthropic", v1), v1);
        assert_eq!(api("anthropic", "https://api.anthropic.com/v1/"), v1);
        // Other kinds are taken as written.
        assert_eq!(
            api("openai", "http://127.0.0.1:8000/openai"),
            "http://127.0.0.1:8000/openai"
        );
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let e = error_of(&FULL.replace("idle = 15000", "idle = \"soon\""));
        assert_eq!(e.file(), "gw.toml");
        assert_eq!(e.key(), "upstreams[0].timeout.idle", "{e}");
        assert!(e.reason().contains("string"), "{e}");

        let e = error_of(&FULL.replace("first_byte = 30000", "first_bite = 30000"));
        assert!(e.reason().contains("first_bite"), "{e}");
        assert!(e.key().starts_with("upstreams[0].timeout"), "{e}");

        let e = error_of(&FULL.replace("\"backup:mock\"", "\"secondary\""));
        assert_eq!(e.key(), "routes[0].targets[1]");
        assert!(e.reason().contains("secondary"), "{e}");

        let e = error_of(&FULL.replace("failure_rate = 0.5", "failure_rate = 1.5"));
        assert_eq!(e.key(), "upstreams[0].breaker.failure_rate");

        let e = error_of(&FULL.replace("base_url = \"https://api.openai.com/v1\"\n", ""));
        assert_eq!(e.key(), "upstreams[0].base_url");

        let e = error_of("listen = ");
        assert!(e.reason().starts_with("not valid TOML"), "{e}");
        assert!(e.to_string().contains("gw.toml"), "{e}");
    }

    #[test]
    fn tiers_load_and_their_mistakes_are_named() {
        let tiered = FULL.replace(
            r#"targets = ["primary", "backup:mock"]"#,
            "targets = [[\"primary\", \"backup:mock\"], \"primary\"]\nbalance = \"weighted\"\naffinity = \"x-session-id\"",
        );
        let c = Config::parse(&tiered, "gw.toml").unwrap();
        assert_eq!(
            c.routes[0].tiers(),
            [vec!["primary", "backup:mock"], vec!["primary"]]
        );
        assert_eq!(c.routes[0].balance, BalanceStrategy::Weighted);
        let hedged = Config::parse(
            &tiered.replace("affinity = \"x-session-id\"", "hedge_after = 4000"),
            "gw.toml",
        )
        .unwrap();
        assert_eq!(hedged.routes[0].hedge_after, Some(4000));
        assert_eq!(c.upstreams[0].weight, 1.0);
        for (from, to, key, reason) in [
            (
                "[\"primary\", \"backup:mock\"]",
                "[]",
                "routes[0].targets[0]",
                "at least one target",
            ),
            (
                "\"backup:mock\"]",
                "\"nowhere\"]",
                "routes[0].targets[0][1]",
                "`nowhere`",
            ),
            (
                "\"backup:mock\"]",
                "\"primary:x\"]",
                "routes[0].targets[0][1]",
                "already a member",
            ),
            (
                "balance = \"weighted\"",
                "balance = \"fastest\"",
                "routes[0].balance",
                "fastest",
            ),
            (
                "affinity = \"x-session-id\"",
                "affinity = \"bad header\"",
                "routes[0].affinity",
                "not a header name",
            ),
            (
                "affinity = \"x-session-id\"",
                "hedge_after = 0",
                "routes[0].hedge_after",
                "every call at once",
            ),
            (
                "[[\"primary\", \"backup:mock\"], \"primary\"]",
                "[\"primary\", \"backup:mock\"]\nhedge_after = 4000",
                "routes[0].hedge_after",
                "no tier of several",
            ),
        ] {
            let e = error_of(&tiered.replace(from, to));
            assert!(e.key().starts_with(key), "{from} → {to}: {e}");
            assert!(e.to_string().contains(reason), "{from} → {to}: {e}");
        }
        let e = error_of(&FULL.replace("[upstreams.timeout]", "weight = 0\n[upstreams.timeout]"));
        assert_eq!(e.key(), "upstreams[0].weight", "{e}");
        let e = error_of(&FULL.replace(
            "[upstreams.timeout]",
            "api_keys_env = [\"K1\", \"K2\"]\n[upstreams.timeout]",
        ));
        assert_eq!(e.key(), "upstreams[0].api_keys_env", "{e}");
        assert!(e.reason().contains("not both"), "{e}");
    }
}
