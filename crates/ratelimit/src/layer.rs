//! [`RateLimitLayer`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use tower_layer::Layer;

use crate::bucket::Bucket;
use crate::service::RateLimit;

/// How much of the bucket a request takes.
///
/// Implemented by [`PerRequest`] (1 unit: a requests-per-minute limit) and by
/// every `Fn(&Request<B>) -> u64` (e.g. the prompt's token estimate plus
/// `max_tokens`, for a tokens-per-minute limit).
pub trait RequestCost<B> {
    /// The request's cost in units.
    fn cost(&self, req: &Request<B>) -> u64;
}

/// Every request costs one unit.
#[derive(Clone, Copy, Debug, Default)]
pub struct PerRequest;

impl<B> RequestCost<B> for PerRequest {
    fn cost(&self, _: &Request<B>) -> u64 {
        1
    }
}

impl<B, F: Fn(&Request<B>) -> u64> RequestCost<B> for F {
    fn cost(&self, req: &Request<B>) -> u64 {
        self(req)
    }
}

/// A rate limit setting was invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid rate limit: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Limits the calls through the services it wraps to a token bucket.
///
/// # Example
///
/// ```
/// use palisade_ratelimit::RateLimitLayer;
/// use std::time::Duration;
///
/// // 600 requests per minute, bursts of 20, callers wait up to 2 s.
/// let rpm = RateLimitLayer::try_new(20, 10.0).unwrap().wait(Duration::from_secs(2));
/// // 200,000 tokens per minute, cost from a header the caller sets.
/// let tpm = RateLimitLayer::try_new(200_000, 200_000.0 / 60.0)
///     .unwrap()
///     .cost(|req: &http::Request<palisade_core::RequestBody>| {
///         req.headers().get("x-token-estimate")
///             .and_then(|v| v.to_str().ok()?.parse().ok())
///             .unwrap_or(1)
///     });
/// # let _ = (rpm, tpm);
/// ```
///
/// # Clone
///
/// The bucket is built once, in [`try_new`](Self::try_new): every clone of
/// the layer and every service it builds shares it (what
/// `tower::limit::RateLimit`, with its bucket per service, cannot do).
#[derive(Clone)]
pub struct RateLimitLayer<F = PerRequest> {
    pub(crate) bucket: Arc<Bucket>,
    pub(crate) max_wait: Duration,
    pub(crate) cost: F,
    pub(crate) capacity: u64,
    pub(crate) per_second: f64,
}

impl<F> fmt::Debug for RateLimitLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("bucket", &self.bucket)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// A bucket of `capacity` units (the burst), refilled at `per_second`
    /// units per second; calls that find it empty are refused at once (see
    /// [`wait`](Self::wait)).
    ///
    /// # Errors
    ///
    /// A capacity of 0, or a rate that is not a positive number.
    pub fn try_new(capacity: u64, per_second: f64) -> Result<Self, ConfigError> {
        validate(capacity, per_second)?;
        Ok(Self {
            bucket: Arc::new(Bucket::new(capacity, per_second)),
            max_wait: Duration::ZERO,
            cost: PerRequest,
            capacity,
            per_second,
        })
    }
}

/// Checks a bucket's settings (shared by the layers).
pub(crate) fn validate(capacity: u64, per_second: f64) -> Result<(), ConfigError> {
    if capacity == 0 {
        return Err(ConfigError(
            "the capacity is 0: no call could ever pass; use at least 1".to_owned(),
        ));
    }
    if !(per_second.is_finite() && per_second > 0.0) {
        return Err(ConfigError(format!(
            "the refill rate is {per_second} per second; it must be a positive number"
        )));
    }
    Ok(())
}

impl<F> RateLimitLayer<F> {
    /// Lets a call wait up to `max_wait` for capacity (in arrival order)
    /// instead of being refused at once.
    #[must_use]
    pub fn wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Refuses a call at once when the bucket cannot serve it (the default).
    #[must_use]
    pub fn reject(mut self) -> Self {
        self.max_wait = Duration::ZERO;
        self
    }

    /// Sets what a request costs (default: 1).
    pub fn cost<F2>(self, cost: F2) -> RateLimitLayer<F2> {
        RateLimitLayer {
            bucket: self.bucket,
            max_wait: self.max_wait,
            cost,
            capacity: self.capacity,
            per_second: self.per_second,
        }
    }

    /// The shared bucket.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }
}

impl<S, F: Clone> Layer<S> for RateLimitLayer<F> {
    type Service = RateLimit<S, F>;

    fn layer(&self, inner: S) -> RateLimit<S, F> {
        RateLimit::new(inner, self.bucket.clone(), self.max_wait, self.cost.clone())
    }
}
