//! [`PalisadeMiddleware`]: a palisade stack inside a reqwest-middleware
//! chain.
//!
//! The stack is built once, over [`Forward`] instead of a client: each call
//! through the middleware hands the stack the request, and every time the
//! stack sends it on (the first attempt, a retry), `Forward` passes it to the
//! rest of the chain (`next`) and hands the answer back. Breaker, rate
//! limits and retry budget live in the stack, so every call shares them.
//!
//! ```no_run
//! use palisade::preset::StackConfig;
//! use palisade_reqwest::middleware::{Forward, PalisadeMiddleware};
//!
//! # fn main() -> Result<(), palisade::core::BoxError> {
//! // The rest of the chain (reqwest) sends it: no key of the stack's own.
//! let stack = StackConfig::openai().no_key().build_over(Forward::new())?;
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(PalisadeMiddleware::new(stack))
//!     .build();
//! # let _ = client; Ok(()) }
//! ```
//!
//! Errors of the stack come back as `reqwest_middleware::Error::Middleware`
//! holding a [`StackError`], whose source is palisade's typed error:
//! `palisade_core::find::<CircuitOpen>(err.as_ref())` on the
//! `anyhow::Error` finds it. The
//! middlewares after this one see a copy of the request's extensions (one
//! per attempt); what they add does not travel back up.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Extensions;
use http_body::Body;
use palisade_core::{BoxError, RequestBody};
use reqwest_middleware::{Middleware, Next};
use tokio::sync::{mpsc, oneshot};
use tower::{Service, ServiceExt};

use crate::conv::{to_http, to_reqwest};

/// One attempt the stack wants sent, and where its answer goes.
type Attempt = (
    http::Request<RequestBody>,
    oneshot::Sender<Result<reqwest::Response, reqwest_middleware::Error>>,
);

/// The current call's way down the chain, in the request's extensions.
#[derive(Clone, Debug)]
struct Downstream(mpsc::Sender<Attempt>);

/// The innermost service of a stack used by [`PalisadeMiddleware`]: it sends
/// each request down the rest of the reqwest-middleware chain.
#[derive(Clone, Copy, Debug, Default)]
pub struct Forward {
    _private: (),
}

impl Forward {
    /// The forwarding service.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Why [`Forward`] could not send a request on.
#[derive(Debug)]
pub struct NotInMiddleware;

impl std::fmt::Display for NotInMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "palisade-reqwest: Forward was called outside PalisadeMiddleware (or after its call ended); build the stack over Forward and use it only through PalisadeMiddleware",
        )
    }
}

impl std::error::Error for NotInMiddleware {}

impl Service<http::Request<RequestBody>> for Forward {
    type Response = http::Response<reqwest::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<RequestBody>) -> Self::Future {
        let down = req.extensions().get::<Downstream>().cloned();
        Box::pin(async move {
            let down = down.ok_or(NotInMiddleware)?;
            let (tx, rx) = oneshot::channel();
            down.0.send((req, tx)).await.map_err(|_| NotInMiddleware)?;
            let res = rx.await.map_err(|_| NotInMiddleware)??;
            Ok(http::Response::from(res))
        })
    }
}

/// An error of the stack, inside `reqwest_middleware::Error::Middleware`:
/// its source is palisade's typed error, so `palisade_core::find` on the
/// `anyhow::Error` (`find::<CircuitOpen>(err.as_ref())`) and
/// `palisade_core::ErrorKind::of` reach it.
#[derive(Debug)]
pub struct StackError(BoxError);

impl StackError {
    /// The stack's error.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl std::fmt::Display for StackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "palisade stack: {}", self.0)
    }
}

impl std::error::Error for StackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A palisade stack, built over [`Forward`], as a reqwest-middleware
/// `Middleware` (see the module docs).
#[derive(Clone, Debug)]
pub struct PalisadeMiddleware<S> {
    stack: S,
}

impl<S> PalisadeMiddleware<S> {
    /// Wraps `stack`, built over [`Forward`].
    pub fn new(stack: S) -> Self {
        Self { stack }
    }
}

#[async_trait::async_trait]
impl<S, B> Middleware for PalisadeMiddleware<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let mut http_req = to_http(&req).map_err(|m| {
            reqwest_middleware::Error::Middleware(anyhow::anyhow!("palisade-reqwest: {m}"))
        })?;
        let (tx, mut rx) = mpsc::channel::<Attempt>(1);
        http_req.extensions_mut().insert(Downstream(tx));
        let call = self.stack.clone().oneshot(http_req);
        tokio::pin!(call);
        // Serve the stack's attempts while it runs; an attempt in flight is
        // dropped (cancelled) if the stack gives up on it first.
        let mut in_flight: Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = None;
        loop {
            tokio::select! {
                res = &mut call => {
                    return res
                        .map(to_reqwest)
                        .map_err(|e| reqwest_middleware::Error::Middleware(anyhow::Error::new(StackError(e.into()))));
                }
                Some((attempt, reply)) = rx.recv(), if in_flight.is_none() => {
                    let next = next.clone();
                    let mut ext = extensions.clone();
                    in_flight = Some(Box::pin(async move {
                        let out = match to_reqwest_request(attempt) {
                            Ok(r) => next.run(r, &mut ext).await,
                            Err(e) => Err(e),
                        };
                        let _ = reply.send(out);
                    }));
                }
                () = async { if let Some(f) = in_flight.as_mut() { f.await } }, if in_flight.is_some() => {
                    in_flight = None;
                }
            }
        }
    }
}

/// The stack's attempt as a reqwest request.
fn to_reqwest_request(
    req: http::Request<RequestBody>,
) -> Result<reqwest::Request, reqwest_middleware::Error> {
    let (parts, body) = req.into_parts();
    let req = http::Request::from_parts(parts, reqwest::Body::from(body.into_bytes()));
    reqwest::Request::try_from(req).map_err(reqwest_middleware::Error::Reqwest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn forward_outside_the_middleware_is_a_clear_error() {
        let req = http::Request::post("http://127.0.0.1:9/v1/chat/completions")
            .body(RequestBody::from("{}"))
            .unwrap();
        let err = Forward::new().oneshot(req).await.unwrap_err();
        assert!(err.is::<NotInMiddleware>(), "{err}");
        assert!(err.to_string().contains("PalisadeMiddleware"), "{err}");
    }
}
