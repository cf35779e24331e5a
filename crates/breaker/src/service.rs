//! [`Breaker`]: the service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use palisade_core::BoxError;
use palisade_core::classify::ClassifyOutcome;
use tower_service::Service;

use crate::body::BreakerBody;
use crate::circuit::{Circuit, State};
use crate::future::ResponseFuture;

/// Guards an inner service with a shared circuit; see the crate docs.
#[derive(Clone, Debug)]
pub struct Breaker<S, C> {
    inner: S,
    circuit: Arc<Circuit>,
    classifier: C,
}

impl<S, C> Breaker<S, C> {
    pub(crate) fn new(inner: S, circuit: Arc<Circuit>, classifier: C) -> Self {
        Self {
            inner,
            circuit,
            classifier,
        }
    }

    /// The circuit's state now.
    pub fn state(&self) -> State {
        self.circuit.state()
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

impl<S, B, RB, C> Service<Request<B>> for Breaker<S, C>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: http_body::Body,
    C: ClassifyOutcome + Clone,
{
    type Response = Response<BreakerBody<RB, C>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    /// The inner service's readiness: an open circuit does not make the
    /// service unready (that would block callers); it refuses in `call`.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        crate::future::admit(&self.circuit, &mut self.inner, req, &self.classifier)
    }
}
