//! [`Timeout`]: the service.

use std::task::{Context, Poll};

use http::{Request, Response};
use palisade_core::BoxError;
use tower_service::Service;

use crate::body::TimeoutBody;
use crate::future::ResponseFuture;
use crate::layer::TimeoutLayer;

/// Applies the deadlines of a [`TimeoutLayer`] to an inner service.
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    config: TimeoutLayer,
}

impl<S> Timeout<S> {
    /// Wraps `inner` with the deadlines of `config`.
    pub fn new(inner: S, config: TimeoutLayer) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, by value.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, RB> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<TimeoutBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ResponseFuture::new(self.inner.call(req), self.config)
    }
}
