//! [`PalisadeService`]: a palisade stack as async-openai's HTTP service.
//!
//! async-openai (feature `middleware`) sends every request through any tower
//! service of `HttpRequestFactory → reqwest::Response`, given to
//! `Client::with_http_service`. This is that service around a palisade
//! stack — the preset (`palisade::preset::StackConfig`) or your own
//! `ServiceBuilder` over `palisade_client::HttpClient` — so that calls made
//! with async-openai get timeouts that cover streams, retries that honour
//! the provider's hints, token limits reconciled with usage, a circuit
//! breaker and GenAI spans, with no change to the calls themselves.
//!
//! ```no_run
//! use async_openai::{Client, config::OpenAIConfig};
//! use palisade::preset::StackConfig;
//! use palisade_reqwest::async_openai::PalisadeService;
//!
//! # fn main() -> Result<(), palisade::core::BoxError> {
//! // async-openai sets the key; the stack adds none of its own.
//! let stack = StackConfig::openai().no_key().build()?;
//! let client = Client::with_config(OpenAIConfig::new()).with_http_service(PalisadeService::new(stack));
//! # Ok(()) }
//! ```
//!
//! How a call goes through:
//! - the factory builds the `reqwest::Request` (async-openai's URL, headers
//!   and JSON body); it becomes an `http::Request<RequestBody>` with the same
//!   method, absolute URL, headers and body bytes, so the stack's client
//!   sends it where async-openai meant it to go (a stack built with a key
//!   sets its own instead);
//! - the stack's answer becomes a `reqwest::Response` whose body is the
//!   stack's body, read as the caller reads: async-openai's JSON and its
//!   `create_stream` SSE reader both work over it, and the stack's timeouts,
//!   breaker and token reconciliation see the stream as it is read;
//! - an error of the stack is `OpenAIError::Boxed`, holding palisade's typed
//!   error: `palisade_core::find::<CircuitOpen>(&*err)`,
//!   `palisade_core::ErrorKind::of(&*err)` and the like work on it.
//!
//! A request whose body reqwest cannot hand over as bytes (a streamed
//! multipart upload) is refused with `OpenAIError::InvalidArgument`: the
//! stack needs a replayable body to retry.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use bytes::Bytes;
use http_body::Body;
use palisade_core::{BoxError, RequestBody};
use tower::Service;

use crate::conv::{to_http, to_reqwest};

/// A palisade stack as async-openai's HTTP service (see the crate docs).
#[derive(Clone, Debug)]
pub struct PalisadeService<S> {
    inner: S,
}

impl<S> PalisadeService<S> {
    /// Wraps `stack`, a service of `http::Request<RequestBody>`.
    pub fn new(stack: S) -> Self {
        Self { inner: stack }
    }

    /// The stack inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<HttpRequestFactory> for PalisadeService<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), OpenAIError>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| OpenAIError::Boxed(e.into()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        // The instance `poll_ready` readied is the one that serves the call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let req = to_http(&factory.build().await?)
                .map_err(|m| OpenAIError::InvalidArgument(format!("palisade-reqwest: {m}")))?;
            let res = inner
                .call(req)
                .await
                .map_err(|e| OpenAIError::Boxed(e.into()))?;
            Ok(to_reqwest(res))
        })
    }
}
