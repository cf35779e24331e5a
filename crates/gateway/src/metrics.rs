//! The gateway's Prometheus metrics, served on `GET /metrics`.
//!
//! Label values are route models, upstream names, statuses and reasons —
//! never a key or a header value.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: String,
    pub(crate) upstream: String,
    pub(crate) status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RetryLabels {
    pub(crate) upstream: String,
    pub(crate) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamLabel {
    pub(crate) upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TokenLabels {
    pub(crate) upstream: String,
    pub(crate) kind: String,
}

/// Every metric, plus the registry that encodes them.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) retries: Family<RetryLabels, Counter>,
    pub(crate) breaker_state: Family<UpstreamLabel, Gauge>,
    pub(crate) ratelimit_rejected: Family<UpstreamLabel, Counter>,
    pub(crate) tokens: Family<TokenLabels, Counter>,
    pub(crate) duration: Histogram,
    pub(crate) ttft: Histogram,
    pub(crate) overhead: Histogram,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let retries = Family::<RetryLabels, Counter>::default();
        let breaker_state = Family::<UpstreamLabel, Gauge>::default();
        let ratelimit_rejected = Family::<UpstreamLabel, Counter>::default();
        let tokens = Family::<TokenLabels, Counter>::default();
        // 1 ms … ~9 min.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        let ttft = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        // 10 µs … ~0.3 s.
        let overhead = Histogram::new(exponential_buckets(0.000_01, 2.0, 16));
        registry.register(
            "palisade_requests",
            "Requests answered, by route, the upstream that answered and status",
            requests.clone(),
        );
        registry.register(
            "palisade_retries",
            "Retries, by upstream and reason",
            retries.clone(),
        );
        registry.register(
            "palisade_breaker_state",
            "Circuit state per upstream: 0 closed, 1 open, 2 half-open",
            breaker_state.clone(),
        );
        registry.register(
            "palisade_ratelimit_rejected",
            "Requests refused by the gateway's own rate limit, by upstream",
            ratelimit_rejected.clone(),
        );
        registry.register(
            "palisade_tokens",
            "Tokens reported by upstreams, by upstream and kind (input, output)",
            tokens.clone(),
        );
        registry.register(
            "palisade_request_duration_seconds",
            "Time from request to the end of the response headers",
            duration.clone(),
        );
        registry.register(
            "palisade_time_to_first_token_seconds",
            "Time from request to the first stream event",
            ttft.clone(),
        );
        registry.register(
            "palisade_overhead_seconds",
            "Time spent in the gateway itself (total minus time waiting on upstreams)",
            overhead.clone(),
        );
        Self {
            registry,
            requests,
            retries,
            breaker_state,
            ratelimit_rejected,
            tokens,
            duration,
            ttft,
            overhead,
        }
    }

    /// Counts `n` tokens of `kind` for `upstream`.
    pub(crate) fn add_tokens(&self, upstream: &str, kind: &str, n: u64) {
        if n > 0 {
            self.tokens
                .get_or_create(&TokenLabels {
                    upstream: upstream.to_owned(),
                    kind: kind.to_owned(),
                })
                .inc_by(n);
        }
    }

    /// Sets an upstream's breaker gauge.
    pub(crate) fn set_breaker_state(&self, upstream: &str, state: palisade_breaker::State) {
        let v = match state {
            palisade_breaker::State::Closed => 0,
            palisade_breaker::State::Open => 1,
            _ => 2,
        };
        self.breaker_state
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_owned(),
            })
            .set(v);
    }

    pub(crate) fn observe(h: &Histogram, d: Duration) {
        h.observe(d.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
