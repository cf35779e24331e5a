//! [`KeyedRateLimitLayer`]: a bucket per key (API key, tenant, model …).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use palisade_core::BoxError;
use palisade_core::keyed::KeyedMap;
use tower_layer::Layer;
use tower_service::Service;

use crate::bucket::Bucket;
use crate::future::ResponseFuture;
use crate::layer::{RateLimitLayer, RequestCost};
use crate::service::admit;

/// The default number of keys kept.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// A limit per key: each key (from a closure over the request) has a bucket
/// of its own, with the capacity and rate of the layer it was made from.
///
/// Memory is bounded (`palisade_core::keyed::KeyedMap`): at most `max_keys`
/// buckets; full buckets (owing nothing) are forgotten first; when none can
/// be, new keys share one overflow bucket — stricter, never looser.
///
/// # Example
///
/// ```
/// use palisade_ratelimit::RateLimitLayer;
///
/// // 60 requests per minute per API key, bursts of 10.
/// let per_key = RateLimitLayer::try_new(10, 1.0).unwrap().keyed(
///     |req: &http::Request<palisade_core::RequestBody>| {
///         req.headers().get("x-tenant").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
///     },
/// );
/// # let _ = per_key;
/// ```
///
/// # Clone
///
/// Every clone and every service built shares the map of buckets.
pub struct KeyedRateLimitLayer<K, KF, F> {
    buckets: Arc<KeyedMap<K, Bucket>>,
    key_fn: KF,
    max_wait: Duration,
    cost: F,
}

impl<K, KF: Clone, F: Clone> Clone for KeyedRateLimitLayer<K, KF, F> {
    fn clone(&self) -> Self {
        Self {
            buckets: self.buckets.clone(),
            key_fn: self.key_fn.clone(),
            max_wait: self.max_wait,
            cost: self.cost.clone(),
        }
    }
}

impl<K, KF, F> fmt::Debug for KeyedRateLimitLayer<K, KF, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("buckets", &self.buckets)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl<F> RateLimitLayer<F> {
    /// One bucket per `key_fn(request)` instead of one for all, at most
    /// [`DEFAULT_MAX_KEYS`] of them.
    pub fn keyed<B, K, KF>(self, key_fn: KF) -> KeyedRateLimitLayer<K, KF, F>
    where
        KF: Fn(&Request<B>) -> K,
    {
        self.keyed_with_max(key_fn, DEFAULT_MAX_KEYS)
    }

    /// As [`keyed`](Self::keyed), keeping at most `max_keys` buckets (at
    /// least 1).
    pub fn keyed_with_max<B, K, KF>(
        self,
        key_fn: KF,
        max_keys: usize,
    ) -> KeyedRateLimitLayer<K, KF, F>
    where
        KF: Fn(&Request<B>) -> K,
    {
        let (capacity, per_second) = (self.capacity, self.per_second);
        KeyedRateLimitLayer {
            buckets: Arc::new(KeyedMap::new(
                max_keys,
                move || Bucket::new(capacity, per_second),
                Bucket::is_full,
            )),
            key_fn,
            max_wait: self.max_wait,
            cost: self.cost,
        }
    }
}

impl<K, KF, F> KeyedRateLimitLayer<K, KF, F> {
    /// How many keys have a bucket of their own.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no key has a bucket yet.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

impl<S, K, KF: Clone, F: Clone> Layer<S> for KeyedRateLimitLayer<K, KF, F> {
    type Service = KeyedRateLimit<S, K, KF, F>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimit {
            inner,
            buckets: self.buckets.clone(),
            key_fn: self.key_fn.clone(),
            max_wait: self.max_wait,
            cost: self.cost.clone(),
        }
    }
}

/// The service of a [`KeyedRateLimitLayer`].
pub struct KeyedRateLimit<S, K, KF, F> {
    inner: S,
    buckets: Arc<KeyedMap<K, Bucket>>,
    key_fn: KF,
    max_wait: Duration,
    cost: F,
}

impl<S: Clone, K, KF: Clone, F: Clone> Clone for KeyedRateLimit<S, K, KF, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            buckets: self.buckets.clone(),
            key_fn: self.key_fn.clone(),
            max_wait: self.max_wait,
            cost: self.cost.clone(),
        }
    }
}

impl<S, K, KF, F> fmt::Debug for KeyedRateLimit<S, K, KF, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit").finish_non_exhaustive()
    }
}

impl<S, K, KF, F> KeyedRateLimit<S, K, KF, F> {
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

impl<S, B, K, KF, F> Service<Request<B>> for KeyedRateLimit<S, K, KF, F>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
    K: Eq + Hash + Clone,
    KF: Fn(&Request<B>) -> K,
    F: RequestCost<B>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let bucket = self.buckets.get(&(self.key_fn)(&req));
        let cost = self.cost.cost(&req);
        admit(&bucket, self.max_wait, cost, &mut self.inner, req)
    }
}
