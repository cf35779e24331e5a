//! [`KeyedBreakerLayer`]: one circuit per key (host, model, tenant …).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use palisade_core::BoxError;
use palisade_core::classify::{ClassifyOutcome, LlmClassifier};
use palisade_core::keyed::KeyedMap;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::BreakerBody;
use crate::circuit::{Circuit, State};
use crate::config::{BreakerBuilder, ConfigError, validate};
use crate::future::ResponseFuture;

/// The default number of keys kept.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// The circuits by key: a bounded map shared with the other keyed layers.
type Keyed<K> = KeyedMap<K, Circuit>;

/// A breaker per key: a failing model or host opens its own circuit and
/// leaves the others alone.
///
/// The key comes from the request, through a closure. At most `max_keys`
/// circuits are kept: when the map is full, closed circuits not in use are
/// forgotten (they hold nothing worth keeping); if every circuit is in use or
/// open, the call is guarded by one shared overflow circuit instead of
/// growing the map.
///
/// # Example
///
/// ```
/// use palisade_breaker::KeyedBreakerLayer;
///
/// // One circuit per model, read from a header the router sets.
/// let layer = KeyedBreakerLayer::builder()
///     .consecutive_failures(5)
///     .keyed(|req: &http::Request<palisade_core::RequestBody>| {
///         req.headers().get("x-model").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
///     })
///     .unwrap();
/// # let _ = layer;
/// ```
///
/// # Clone
///
/// Every clone and every service built shares the map of circuits.
pub struct KeyedBreakerLayer<K, F, C = LlmClassifier> {
    keyed: Arc<Keyed<K>>,
    key_fn: F,
    classifier: C,
}

impl<K, F: Clone, C: Clone> Clone for KeyedBreakerLayer<K, F, C> {
    fn clone(&self) -> Self {
        Self {
            keyed: self.keyed.clone(),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<K, F, C> fmt::Debug for KeyedBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakerLayer")
            .field("circuits", &self.keyed)
            .finish_non_exhaustive()
    }
}

impl KeyedBreakerLayer<(), ()> {
    /// A builder with the defaults (as [`BreakerLayer`](crate::BreakerLayer)).
    pub fn builder() -> BreakerBuilder {
        BreakerBuilder::default()
    }
}

impl BreakerBuilder {
    /// Builds a keyed breaker: one circuit per `key_fn(request)`, at most
    /// [`DEFAULT_MAX_KEYS`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid setting.
    pub fn keyed<B, K, F>(self, key_fn: F) -> Result<KeyedBreakerLayer<K, F>, ConfigError>
    where
        F: Fn(&Request<B>) -> K,
    {
        self.keyed_with_max(key_fn, DEFAULT_MAX_KEYS)
    }

    /// As [`keyed`](Self::keyed), keeping at most `max_keys` circuits.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid setting (`max_keys` of 0 too).
    pub fn keyed_with_max<B, K, F>(
        self,
        key_fn: F,
        max_keys: usize,
    ) -> Result<KeyedBreakerLayer<K, F>, ConfigError>
    where
        F: Fn(&Request<B>) -> K,
    {
        validate(&self.config)?;
        #[cfg(feature = "redis")]
        if self.config.fleet.is_some() {
            return Err(ConfigError(
                "a keyed breaker cannot be shared through Redis: build one BreakerLayer with \
                 `redis(url, key)` per key instead"
                    .to_owned(),
            ));
        }
        if max_keys == 0 {
            return Err(ConfigError(
                "max_keys is 0; keep at least one circuit".to_owned(),
            ));
        }
        let config = self.config;
        Ok(KeyedBreakerLayer {
            keyed: Arc::new(KeyedMap::new(
                max_keys,
                move || Circuit::new(config.clone()),
                // A closed circuit holds nothing worth remembering.
                |c: &Circuit| c.state() == State::Closed,
            )),
            key_fn,
            classifier: LlmClassifier::new(),
        })
    }
}

impl<K, F, C> KeyedBreakerLayer<K, F, C> {
    /// Replaces what counts as a failure.
    pub fn classifier<C2>(self, classifier: C2) -> KeyedBreakerLayer<K, F, C2> {
        KeyedBreakerLayer {
            keyed: self.keyed,
            key_fn: self.key_fn,
            classifier,
        }
    }
}

impl<K: Eq + Hash, F, C> KeyedBreakerLayer<K, F, C> {
    /// The state of `key`'s circuit, if it has one.
    pub fn state(&self, key: &K) -> Option<State> {
        self.keyed.peek(key).map(|c| c.state())
    }

    /// How many circuits are kept.
    pub fn len(&self) -> usize {
        self.keyed.len()
    }

    /// True when no circuit is kept yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<S, K, F: Clone, C: Clone> Layer<S> for KeyedBreakerLayer<K, F, C> {
    type Service = KeyedBreaker<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedBreaker {
            inner,
            keyed: self.keyed.clone(),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The service of a [`KeyedBreakerLayer`].
pub struct KeyedBreaker<S, K, F, C> {
    inner: S,
    keyed: Arc<Keyed<K>>,
    key_fn: F,
    classifier: C,
}

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedBreaker<S, K, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            keyed: self.keyed.clone(),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, K, F, C> fmt::Debug for KeyedBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreaker").finish_non_exhaustive()
    }
}

impl<S, K, F, C> KeyedBreaker<S, K, F, C> {
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

impl<S, B, RB, K, F, C> Service<Request<B>> for KeyedBreaker<S, K, F, C>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: http_body::Body,
    K: Eq + Hash + Clone,
    F: Fn(&Request<B>) -> K,
    C: ClassifyOutcome + Clone,
{
    type Response = Response<BreakerBody<RB, C>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let circuit = self.keyed.get(&(self.key_fn)(&req));
        crate::future::admit(&circuit, &mut self.inner, req, &self.classifier)
    }
}
