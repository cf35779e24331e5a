//! [`Retry`]: the service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use palisade_core::BoxError;
use palisade_core::classify::ClassifyOutcome;
use tokio::time::Instant;
use tower_service::Service;

use crate::future::{Replay, ResponseFuture};
use crate::layer::Policy;

/// Retries calls to the inner service per its [`RetryLayer`](crate::RetryLayer).
///
/// The readied inner service makes the first attempt; a clone takes its place
/// here (the `mem::replace` pattern), and each retry re-drives `poll_ready`
/// on the future's own service before calling it. Requests are replayed from
/// a clone of the original: with `palisade_core::RequestBody` that is a
/// reference count, not a copy of the body.
#[derive(Clone, Debug)]
pub struct Retry<S, C> {
    inner: S,
    // Shared with every call's future: one reference count per call, not a
    // copy of the policy (and of its classifier, budget and hook).
    policy: Arc<Policy<C>>,
}

impl<S, C> Retry<S, C> {
    pub(crate) fn new(inner: S, policy: Arc<Policy<C>>) -> Self {
        Self { inner, policy }
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

/// A copy of `req` sharing its body (for `RequestBody`, a reference count).
pub(crate) fn clone_request<B: Clone>(req: &Request<B>) -> Request<B> {
    let mut new = Request::new(req.body().clone());
    *new.method_mut() = req.method().clone();
    *new.uri_mut() = req.uri().clone();
    *new.version_mut() = req.version();
    *new.headers_mut() = req.headers().clone();
    *new.extensions_mut() = req.extensions().clone();
    new
}

impl<S, B, RB, C> Service<Request<B>> for Retry<S, C>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
    C: ClassifyOutcome + Clone,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let fresh = self.inner.clone();
        let mut svc = std::mem::replace(&mut self.inner, fresh);
        // One clock read serves the budget and the elapsed-time cap.
        let now =
            (self.policy.budget.is_some() || self.policy.max_elapsed.is_some()).then(Instant::now);
        if let (Some(b), Some(now)) = (&self.policy.budget, now) {
            b.deposit_at(now);
        }
        let max_attempts = req
            .extensions()
            .get::<crate::future::MaxAttempts>()
            .map_or(self.policy.max_attempts, |m| {
                m.0.clamp(1, self.policy.max_attempts)
            });
        let pass_on_rate_limit = req
            .extensions()
            .get::<palisade_core::PassOnRateLimit>()
            .is_some();
        let template =
            (max_attempts > 1 || self.policy.stale_resends > 0).then(|| clone_request(&req));
        let started = self.policy.max_elapsed.and(now);
        let fut = svc.call(req);
        let replay = template.map(|t| {
            Box::new(Replay {
                svc,
                template: Some(t),
            })
        });
        ResponseFuture::new(
            replay,
            self.policy.clone(),
            started,
            fut,
            max_attempts,
            pass_on_rate_limit,
        )
    }
}
