//! Run a palisade stack under [async-openai](https://docs.rs/async-openai).
//!
//! async-openai (feature `middleware`) sends every request through any tower
//! service of `HttpRequestFactory → reqwest::Response`, given to
//! `Client::with_http_service`. [`PalisadeService`] is that service around a
//! palisade stack — the preset (`palisade::preset::StackConfig`) or your own
//! `ServiceBuilder` over `palisade_client::HttpClient` — so that calls made
//! with async-openai get timeouts that cover streams, retries that honour
//! the provider's hints, token limits reconciled with usage, a circuit
//! breaker and GenAI spans, with no change to the calls themselves.
//!
//! ```no_run
//! use async_openai::{Client, config::OpenAIConfig};
//! use palisade::preset::StackConfig;
//! use palisade_async_openai::PalisadeService;
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
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use palisade_core::{BoxError, RequestBody};
use sync_wrapper::SyncWrapper;
use tower::Service;

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
            let req = to_http(factory.build().await?)?;
            let res = inner
                .call(req)
                .await
                .map_err(|e| OpenAIError::Boxed(e.into()))?;
            Ok(reqwest::Response::from(
                res.map(|b| reqwest::Body::wrap(SyncBody::new(b))),
            ))
        })
    }
}

/// async-openai's request as the stack's.
fn to_http(req: reqwest::Request) -> Result<http::Request<RequestBody>, OpenAIError> {
    let body = match req.body() {
        None => RequestBody::empty(),
        Some(b) => match b.as_bytes() {
            Some(bytes) => RequestBody::from(Bytes::copy_from_slice(bytes)),
            None => {
                return Err(OpenAIError::InvalidArgument(
                    "palisade-async-openai: this request's body is streamed (a multipart upload?); a palisade stack needs its bytes to retry it — send it without the palisade service".to_owned(),
                ));
            }
        },
    };
    let mut out = http::Request::new(body);
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.url().as_str().parse().map_err(|e| {
        OpenAIError::InvalidArgument(format!(
            "palisade-async-openai: the URL `{}` is not a valid URI: {e}",
            req.url()
        ))
    })?;
    *out.headers_mut() = req.headers().clone();
    Ok(out)
}

/// A body that is `Sync` whatever it wraps (reqwest's body must be; the
/// stack's boxed body is only `Send`): it is only ever polled through
/// `&mut`, so no lock is needed.
struct SyncBody<B> {
    inner: SyncWrapper<Pin<Box<B>>>,
    hint: SizeHint,
    end: bool,
}

impl<B: Body> SyncBody<B> {
    fn new(body: B) -> Self {
        let (hint, end) = (body.size_hint(), body.is_end_stream());
        Self {
            inner: SyncWrapper::new(Box::pin(body)),
            hint,
            end,
        }
    }
}

impl<B> Body for SyncBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = this.inner.get_mut().as_mut().poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.end = true;
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.end
    }

    fn size_hint(&self) -> SizeHint {
        // The hint from before the first frame: exact only when the body
        // was a single known-length chunk, which is what it matters for.
        if self.end {
            SizeHint::with_exact(0)
        } else {
            self.hint
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_keep_method_url_headers_and_body() {
        let mut r = reqwest::Request::new(
            http::Method::POST,
            "http://127.0.0.1:9/v1/chat/completions".parse().unwrap(),
        );
        r.headers_mut()
            .insert("authorization", "Bearer test-key".parse().unwrap());
        *r.body_mut() = Some(reqwest::Body::from(r#"{"model":"m"}"#));
        let h = to_http(r).unwrap();
        assert_eq!(h.method(), http::Method::POST);
        assert_eq!(
            h.uri().to_string(),
            "http://127.0.0.1:9/v1/chat/completions"
        );
        assert_eq!(h.headers()["authorization"], "Bearer test-key");
        assert_eq!(h.body().as_bytes().as_ref(), br#"{"model":"m"}"#);
    }
}
