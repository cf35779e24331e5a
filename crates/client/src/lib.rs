//! The raw hyper client service at the bottom of a palisade stack.
//!
//! palisade composes resilience layers (timeouts, retry, rate limits, circuit
//! breaker, tracing, schema validation) around one service that actually talks
//! to the LLM provider. This crate is that service: [`HttpClient`], a
//! `tower::Service<http::Request<B>>` over hyper-util's pooled client, with
//!
//! - HTTP/1.1 and HTTP/2 (ALPN over TLS, or h2c prior knowledge), a
//!   connection pool, connect timeout, TCP nodelay and keepalive;
//! - TLS by rustls with the `ring` provider and Mozilla's roots, no system
//!   OpenSSL;
//! - a base URL that relative request URIs are joined under;
//! - API keys injected from a [`KeySource`] — literal, environment variable,
//!   or a file re-read for rotation — as `Authorization: Bearer` (OpenAI) or
//!   `x-api-key` + `anthropic-version` (Anthropic), [`secrecy`]-wrapped and
//!   marked sensitive, never logged.
//!
//! The defaults, in one table, are on [`ClientBuilder`].
//!
//! In the recommended stack it sits innermost:
//! `trace → schema → total timeout → retry → rate limit → breaker →
//! per-attempt timeout → client`.
//!
//! # Example
//!
//! ```no_run
//! use palisade_client::{Auth, HttpClient, KeySource};
//! use palisade_core::RequestBody;
//! use tower::{Service, ServiceExt};
//!
//! # async fn run() -> Result<(), palisade_core::BoxError> {
//! let mut client = HttpClient::builder()
//!     .base_url("https://api.anthropic.com/v1")
//!     .auth(Auth::anthropic(KeySource::env("ANTHROPIC_API_KEY")))
//!     .build()?;
//! let req = http::Request::post("/messages").body(RequestBody::from(
//!     r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#,
//! ))?;
//! let res = client.ready().await?.call(req).await?;
//! # let _ = res; Ok(()) }
//! ```
//!
//! # Errors
//!
//! Transport failures are [`palisade_core::TransportError`]s; their kind
//! (refused, connect timeout, TLS, protocol) is what the retry layer and the
//! circuit breaker act on.

mod config;
mod key;
mod pool;
mod reuse;
mod service;

pub use config::{
    ClientBuilder, ConfigError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_IDLE_TIMEOUT,
    DEFAULT_POOL_MAX_IDLE_PER_HOST, DEFAULT_READ_BUFFER, DEFAULT_TCP_KEEPALIVE, HttpVersion,
};
pub use key::{
    ANTHROPIC_VERSION, ApiKey, Auth, AuthStyle, DEFAULT_KEY_REFRESH, KeySource, MAX_KEY_FILE_BYTES,
    MIN_SCRUBBED_KEY_LEN,
};
pub use pool::KeyRests;
pub use service::{HttpClient, ResponseFuture};
