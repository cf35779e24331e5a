//! [`RateLimit`].

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use palisade_core::BoxError;
use tower_service::Service;

use crate::bucket::{Bucket, Grant};
use crate::future::{Reservation, ResponseFuture};
use crate::layer::RequestCost;

/// Limits calls to the inner service per its [`RateLimitLayer`](crate::RateLimitLayer).
///
/// `poll_ready` is the inner service's: the cost of a request is known only
/// in `call`, which takes (or reserves) it. A refusal is an error future with
/// [`palisade_core::RateLimited`]; a call that must wait takes the readied
/// inner service with it (a clone takes its place here) and calls it when its
/// reservation matures, re-driving `poll_ready` first.
#[derive(Clone, Debug)]
pub struct RateLimit<S, F> {
    inner: S,
    bucket: Arc<Bucket>,
    max_wait: Duration,
    cost: F,
}

impl<S, F> RateLimit<S, F> {
    pub(crate) fn new(inner: S, bucket: Arc<Bucket>, max_wait: Duration, cost: F) -> Self {
        Self {
            inner,
            bucket,
            max_wait,
            cost,
        }
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

impl<S, B, F> Service<Request<B>> for RateLimit<S, F>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
    F: RequestCost<B>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let cost = self.cost.cost(&req);
        admit(&self.bucket, self.max_wait, cost, &mut self.inner, req)
    }
}

/// Takes (or reserves) `cost` from `bucket` and calls `inner`, or refuses:
/// the `call` of both rate-limit services.
pub(crate) fn admit<S, B>(
    bucket: &Arc<Bucket>,
    max_wait: Duration,
    cost: u64,
    inner: &mut S,
    req: Request<B>,
) -> ResponseFuture<S, B>
where
    S: Service<Request<B>> + Clone,
{
    match bucket.acquire(cost, max_wait) {
        Err(refused) => ResponseFuture::refused(refused),
        Ok(grant) => granted(bucket, grant, inner, req),
    }
}

/// Calls `inner` now, or waits for `grant`'s reservation to mature.
pub(crate) fn granted<S, B>(
    bucket: &Arc<Bucket>,
    grant: Grant,
    inner: &mut S,
    req: Request<B>,
) -> ResponseFuture<S, B>
where
    S: Service<Request<B>> + Clone,
{
    if grant.wait.is_zero() {
        return ResponseFuture::calling(inner.call(req));
    }
    let fresh = inner.clone();
    let svc = std::mem::replace(inner, fresh);
    let reservation = Reservation::new(bucket.clone(), grant.cost);
    ResponseFuture::waiting(svc, req, grant.wait, reservation)
}
