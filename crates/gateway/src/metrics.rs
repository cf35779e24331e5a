//! The gateway's metrics: Prometheus text on `GET /metrics`, and the same
//! figures over OTLP when a meter is given ([`crate::otel`]).
//!
//! Label values are route models, upstream names, statuses and reasons —
//! never a key or a header value. Every figure is recorded through a method
//! here, which writes both sinks.
//!
//! | Prometheus | OTLP (unit) | attributes |
//! |---|---|---|
//! | `palisade_requests_total` | `palisade.requests` | `route`, `upstream`, `status` |
//! | `palisade_retries_total` | `palisade.retries` | `upstream`, `reason` |
//! | `palisade_breaker_state` | `palisade.breaker.state` (gauge) | `upstream` |
//! | `palisade_ratelimit_rejected_total` | `palisade.ratelimit.rejected` | `upstream` |
//! | `palisade_tokens_total` | `palisade.tokens` (`{token}`) | `upstream`, `kind` |
//! | `palisade_request_duration_seconds` | `palisade.request.duration` (s) | |
//! | `palisade_time_to_first_token_seconds` | `palisade.time_to_first_token` (s) | |
//! | `palisade_overhead_seconds` | `palisade.overhead` (s) | |
//! | `palisade_hedges_total` | `palisade.hedges` | `upstream`, `rival` |
//! | `palisade_redis_errors_total` | `palisade.redis.errors` | `upstream` |
//! | `palisade_caller_requests_total` | `palisade.caller.requests` | `caller` |
//! | `palisade_caller_limited_total` | `palisade.caller.limited` | `caller`, `limit` |
//! | `palisade_member_inflight` | `palisade.member.inflight` (gauge) | `upstream` |
//! | `palisade_member_ttft_ewma_seconds` | `palisade.member.ttft_ewma` (gauge, s) | `upstream` |
//! | `palisade_member_drained_until_seconds` | `palisade.member.drained_until` (gauge, s) | `upstream` |
//! | `palisade_member_picks_total` | `palisade.member.picks` | `upstream` |
//!
//! The `palisade_member_*` figures are the load of each upstream that is a
//! member of a route's tier, read when `/metrics` is scraped or the OTLP
//! exporter collects (observable instruments): calls in flight, the peak-EWMA of its time to first content
//! event, until when (Unix seconds; 0: not drained) its provider's limit
//! drains it, and the calls sent to it. `palisade_hedges_total` counts the
//! calls hedged (`hedge_after`): `upstream` is the member with no content
//! in time, `rival` the member called beside it.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    Counter as OtelCounter, Gauge as OtelGauge, Histogram as OtelHistogram, Meter,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    upstream: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    upstream: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HedgeLabels {
    upstream: String,
    rival: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerLabel {
    caller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitedLabels {
    caller: String,
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    upstream: String,
    kind: String,
}

/// Every metric, plus the registry that encodes them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UntranslatedLabels {
    api: String,
    field: String,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
    breaker_state: Family<UpstreamLabel, Gauge>,
    ratelimit_rejected: Family<UpstreamLabel, Counter>,
    tokens: Family<TokenLabels, Counter>,
    untranslated: Family<UntranslatedLabels, Counter>,
    hedges: Family<HedgeLabels, Counter>,
    redis_errors: Family<UpstreamLabel, Counter>,
    caller_requests: Family<CallerLabel, Counter>,
    caller_limited: Family<LimitedLabels, Counter>,
    duration: Histogram,
    ttft: Histogram,
    overhead: Histogram,
    members: Members,
    otel: Option<Otel>,
}

/// The tier members' load, set from their state at each scrape.
#[derive(Debug, Default)]
struct Members {
    inflight: Family<UpstreamLabel, Gauge>,
    ttft: Family<UpstreamLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    drained_until: Family<UpstreamLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    picks: Family<UpstreamLabel, Counter>,
    /// One scrape sets them at a time (the picks counter is raised by
    /// what it lacks).
    setting: std::sync::Mutex<()>,
}

/// The same figures as OpenTelemetry instruments.
#[derive(Debug)]
struct Otel {
    requests: OtelCounter<u64>,
    retries: OtelCounter<u64>,
    breaker_state: OtelGauge<i64>,
    ratelimit_rejected: OtelCounter<u64>,
    tokens: OtelCounter<u64>,
    untranslated: OtelCounter<u64>,
    hedges: OtelCounter<u64>,
    redis_errors: OtelCounter<u64>,
    caller_requests: OtelCounter<u64>,
    caller_limited: OtelCounter<u64>,
    duration: OtelHistogram<f64>,
    ttft: OtelHistogram<f64>,
    overhead: OtelHistogram<f64>,
}

/// Until when (Unix seconds) a member is drained, as of `now`; 0 when not.
fn drained_until(s: &palisade_balance::MemberStats, now: std::time::SystemTime) -> f64 {
    s.drained_for
        .and_then(|d| now.checked_add(d))
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Upper bounds in seconds: `n` doublings from `start` (the Prometheus
/// histograms' buckets, so both sinks bucket alike).
fn doublings(start: f64, n: u16) -> Vec<f64> {
    exponential_buckets(start, 2.0, n).collect()
}

impl Otel {
    fn new(meter: &Meter) -> Self {
        let seconds = |name: &'static str, what: &'static str, bounds: Vec<f64>| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(what)
                .with_boundaries(bounds)
                .build()
        };
        Self {
            requests: meter
                .u64_counter("palisade.requests")
                .with_unit("{request}")
                .with_description(REQUESTS)
                .build(),
            retries: meter
                .u64_counter("palisade.retries")
                .with_unit("{retry}")
                .with_description(RETRIES)
                .build(),
            breaker_state: meter
                .i64_gauge("palisade.breaker.state")
                .with_description(BREAKER)
                .build(),
            ratelimit_rejected: meter
                .u64_counter("palisade.ratelimit.rejected")
                .with_unit("{request}")
                .with_description(REJECTED)
                .build(),
            tokens: meter
                .u64_counter("palisade.tokens")
                .with_unit("{token}")
                .with_description(TOKENS)
                .build(),
            untranslated: meter
                .u64_counter("palisade.untranslated")
                .with_unit("{field}")
                .with_description(UNTRANSLATED)
                .build(),
            hedges: meter
                .u64_counter("palisade.hedges")
                .with_unit("{call}")
                .with_description(HEDGES)
                .build(),
            redis_errors: meter
                .u64_counter("palisade.redis.errors")
                .with_unit("{error}")
                .with_description(REDIS_ERRORS)
                .build(),
            caller_requests: meter
                .u64_counter("palisade.caller.requests")
                .with_unit("{request}")
                .with_description(CALLER_REQUESTS)
                .build(),
            caller_limited: meter
                .u64_counter("palisade.caller.limited")
                .with_unit("{request}")
                .with_description(CALLER_LIMITED)
                .build(),
            duration: seconds("palisade.request.duration", DURATION, doublings(0.001, 20)),
            ttft: seconds("palisade.time_to_first_token", TTFT, doublings(0.001, 17)),
            overhead: seconds("palisade.overhead", OVERHEAD, doublings(0.000_01, 16)),
        }
    }
}

const REQUESTS: &str = "Requests answered, by route, the upstream that answered and status";
const RETRIES: &str = "Retries, by upstream and reason";
const BREAKER: &str = "Circuit state per upstream: 0 closed, 1 open, 2 half-open";
const REJECTED: &str = "Requests refused by the gateway's own rate limit, by upstream";
const TOKENS: &str = "Tokens reported by upstreams, by upstream and kind (input, output)";
const UNTRANSLATED: &str = "Fields of a request or answer with no counterpart in the API it was translated to, left out; by the API that had them and the field";
const HEDGES: &str = "Calls hedged: no content event from a tier member (upstream) in time, so another (rival) was called too";
const REDIS_ERRORS: &str = "Times Redis could not be asked (unreachable, slow, failing): for an upstream's shared limits (the call then went on unlimited with fail_open, or was refused), or, under upstream \"*\", for the shared provider-limit and circuit state";
const CALLER_REQUESTS: &str = "Requests of callers with limits of their own ([[auth.keys]]), by the caller's name (never its key)";
const CALLER_LIMITED: &str =
    "Requests refused by a caller's own limit, by the caller's name and the limit";
const DURATION: &str = "Time from request to the end of the response headers";
const TTFT: &str =
    "Time from request to the first stream event carrying content (text, a tool call, reasoning)";
const OVERHEAD: &str = "Time spent in the gateway itself (total minus time waiting on upstreams)";

impl Metrics {
    /// The Prometheus registry, and OTel instruments from `meter` if given.
    pub(crate) fn new(meter: Option<&Meter>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let retries = Family::<RetryLabels, Counter>::default();
        let breaker_state = Family::<UpstreamLabel, Gauge>::default();
        let ratelimit_rejected = Family::<UpstreamLabel, Counter>::default();
        let tokens = Family::<TokenLabels, Counter>::default();
        let untranslated = Family::<UntranslatedLabels, Counter>::default();
        let hedges = Family::<HedgeLabels, Counter>::default();
        let redis_errors = Family::<UpstreamLabel, Counter>::default();
        let caller_requests = Family::<CallerLabel, Counter>::default();
        let caller_limited = Family::<LimitedLabels, Counter>::default();
        // 1 ms … ~9 min.
        let duration = Histogram::new(doublings(0.001, 20));
        let ttft = Histogram::new(doublings(0.001, 17));
        // 10 µs … ~0.3 s.
        let overhead = Histogram::new(doublings(0.000_01, 16));
        registry.register("palisade_requests", REQUESTS, requests.clone());
        registry.register("palisade_retries", RETRIES, retries.clone());
        registry.register("palisade_breaker_state", BREAKER, breaker_state.clone());
        registry.register(
            "palisade_ratelimit_rejected",
            REJECTED,
            ratelimit_rejected.clone(),
        );
        registry.register("palisade_tokens", TOKENS, tokens.clone());
        registry.register("palisade_untranslated", UNTRANSLATED, untranslated.clone());
        registry.register("palisade_hedges", HEDGES, hedges.clone());
        registry.register("palisade_redis_errors", REDIS_ERRORS, redis_errors.clone());
        registry.register(
            "palisade_caller_requests",
            CALLER_REQUESTS,
            caller_requests.clone(),
        );
        registry.register(
            "palisade_caller_limited",
            CALLER_LIMITED,
            caller_limited.clone(),
        );
        registry.register(
            "palisade_request_duration_seconds",
            DURATION,
            duration.clone(),
        );
        registry.register("palisade_time_to_first_token_seconds", TTFT, ttft.clone());
        registry.register("palisade_overhead_seconds", OVERHEAD, overhead.clone());
        let members = Members::default();
        registry.register(
            "palisade_member_inflight",
            "Calls in flight to a tier member, until their answers end",
            members.inflight.clone(),
        );
        registry.register(
            "palisade_member_ttft_ewma_seconds",
            "Peak-EWMA of a tier member's time to first content event",
            members.ttft.clone(),
        );
        registry.register(
            "palisade_member_drained_until_seconds",
            "Until when (Unix seconds) a tier member's provider limit drains it; 0: not drained",
            members.drained_until.clone(),
        );
        registry.register(
            "palisade_member_picks",
            "Calls sent to a tier member",
            members.picks.clone(),
        );
        Self {
            registry,
            requests,
            retries,
            breaker_state,
            ratelimit_rejected,
            tokens,
            untranslated,
            hedges,
            redis_errors,
            caller_requests,
            caller_limited,
            duration,
            ttft,
            overhead,
            members,
            otel: meter.map(Otel::new),
        }
    }

    /// Counts an answered request.
    pub(crate) fn request(&self, route: String, upstream: String, status: u16) {
        if let Some(o) = &self.otel {
            o.requests.add(
                1,
                &[
                    KeyValue::new("route", route.clone()),
                    KeyValue::new("upstream", upstream.clone()),
                    KeyValue::new("status", i64::from(status)),
                ],
            );
        }
        self.requests
            .get_or_create(&RequestLabels {
                route,
                upstream,
                status: status.to_string(),
            })
            .inc();
    }

    /// Counts a retry of `upstream` for `reason`.
    pub(crate) fn retry(&self, upstream: &str, reason: &str) {
        if let Some(o) = &self.otel {
            o.retries.add(
                1,
                &[
                    KeyValue::new("upstream", upstream.to_owned()),
                    KeyValue::new("reason", reason.to_owned()),
                ],
            );
        }
        self.retries
            .get_or_create(&RetryLabels {
                upstream: upstream.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a call hedged: `upstream` had no content in time, `rival`
    /// was called too.
    pub(crate) fn hedge(&self, upstream: &str, rival: &str) {
        if let Some(o) = &self.otel {
            o.hedges.add(
                1,
                &[
                    KeyValue::new("upstream", upstream.to_owned()),
                    KeyValue::new("rival", rival.to_owned()),
                ],
            );
        }
        self.hedges
            .get_or_create(&HedgeLabels {
                upstream: upstream.to_owned(),
                rival: rival.to_owned(),
            })
            .inc();
    }

    /// Counts a request of a caller with limits of its own.
    pub(crate) fn caller_request(&self, caller: &str) {
        if let Some(o) = &self.otel {
            o.caller_requests
                .add(1, &[KeyValue::new("caller", caller.to_owned())]);
        }
        self.caller_requests
            .get_or_create(&CallerLabel {
                caller: caller.to_owned(),
            })
            .inc();
    }

    /// Counts a request refused by a caller's own `limit`.
    pub(crate) fn caller_limited(&self, caller: &str, limit: &str) {
        if let Some(o) = &self.otel {
            o.caller_limited.add(
                1,
                &[
                    KeyValue::new("caller", caller.to_owned()),
                    KeyValue::new("limit", limit.to_owned()),
                ],
            );
        }
        self.caller_limited
            .get_or_create(&LimitedLabels {
                caller: caller.to_owned(),
                limit: limit.to_owned(),
            })
            .inc();
    }

    /// Counts a time `upstream`'s shared limits could not ask Redis.
    pub(crate) fn redis_error(&self, upstream: &str) {
        if let Some(o) = &self.otel {
            o.redis_errors
                .add(1, &[KeyValue::new("upstream", upstream.to_owned())]);
        }
        self.redis_errors
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_owned(),
            })
            .inc();
    }

    /// Counts a request `upstream`'s own rate limit refused.
    pub(crate) fn ratelimit_rejected(&self, upstream: &str) {
        if let Some(o) = &self.otel {
            o.ratelimit_rejected
                .add(1, &[KeyValue::new("upstream", upstream.to_owned())]);
        }
        self.ratelimit_rejected
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_owned(),
            })
            .inc();
    }

    /// Records the time to the end of the response headers, and the
    /// gateway's own part of it.
    pub(crate) fn timings(&self, total: Duration, overhead: Duration) {
        if let Some(o) = &self.otel {
            o.duration.record(total.as_secs_f64(), &[]);
            o.overhead.record(overhead.as_secs_f64(), &[]);
        }
        self.duration.observe(total.as_secs_f64());
        self.overhead.observe(overhead.as_secs_f64());
    }

    /// Records a stream's time to its first event.
    pub(crate) fn first_token(&self, after: Duration) {
        if let Some(o) = &self.otel {
            o.ttft.record(after.as_secs_f64(), &[]);
        }
        self.ttft.observe(after.as_secs_f64());
    }

    /// Counts `n` tokens of `kind` for `upstream`.
    pub(crate) fn add_tokens(&self, upstream: &str, kind: &str, n: u64) {
        if n > 0 {
            if let Some(o) = &self.otel {
                o.tokens.add(
                    n,
                    &[
                        KeyValue::new("upstream", upstream.to_owned()),
                        KeyValue::new("kind", kind.to_owned()),
                    ],
                );
            }
            self.tokens
                .get_or_create(&TokenLabels {
                    upstream: upstream.to_owned(),
                    kind: kind.to_owned(),
                })
                .inc_by(n);
        }
    }

    /// Counts a field of an `api` request or answer left out by a
    /// translation. Indices are dropped from the label (`input[3] …` →
    /// `input[] …`), so its values stay few.
    pub(crate) fn untranslated(&self, api: &str, field: &str) {
        let mut label = String::with_capacity(field.len());
        let mut chars = field.chars().peekable();
        while let Some(c) = chars.next() {
            label.push(c);
            if c == '[' {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
            }
        }
        if let Some(o) = &self.otel {
            o.untranslated.add(
                1,
                &[
                    KeyValue::new("api", api.to_owned()),
                    KeyValue::new("field", label.clone()),
                ],
            );
        }
        self.untranslated
            .get_or_create(&UntranslatedLabels {
                api: api.to_owned(),
                field: label,
            })
            .inc();
    }

    /// Sets an upstream's breaker gauge.
    pub(crate) fn set_breaker_state(&self, upstream: &str, state: palisade_breaker::State) {
        let v = match state {
            palisade_breaker::State::Closed => 0,
            palisade_breaker::State::Open => 1,
            _ => 2,
        };
        if let Some(o) = &self.otel {
            o.breaker_state
                .record(v, &[KeyValue::new("upstream", upstream.to_owned())]);
        }
        self.breaker_state
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_owned(),
            })
            .set(v);
    }

    /// Reports the tier members' load over OTLP too: observable
    /// instruments of `meter`, read from `loads` at each collection.
    pub(crate) fn observe_members(meter: &Meter, loads: Vec<palisade_balance::MemberLoad>) {
        if loads.is_empty() {
            return;
        }
        let loads = std::sync::Arc::new(loads);
        let each = |f: fn(&palisade_balance::MemberStats, std::time::SystemTime) -> f64| {
            let loads = std::sync::Arc::clone(&loads);
            move |obs: &dyn opentelemetry::metrics::AsyncInstrument<f64>| {
                let now = std::time::SystemTime::now();
                for l in loads.iter() {
                    let s = l.stats();
                    obs.observe(f(&s, now), &[KeyValue::new("upstream", s.name.to_string())]);
                }
            }
        };
        let _ = meter
            .f64_observable_gauge("palisade.member.inflight")
            .with_unit("{call}")
            .with_description("Calls in flight to a tier member, until their answers end")
            .with_callback(each(|s, _| s.inflight as f64))
            .build();
        let _ = meter
            .f64_observable_gauge("palisade.member.ttft_ewma")
            .with_unit("s")
            .with_description("Peak-EWMA of a tier member's time to first content event")
            .with_callback(each(|s, _| s.ttft_ewma.as_secs_f64()))
            .build();
        let _ = meter
            .f64_observable_gauge("palisade.member.drained_until")
            .with_unit("s")
            .with_description(
                "Until when (Unix seconds) a tier member's provider limit drains it; 0: not drained",
            )
            .with_callback(each(drained_until))
            .build();
        let picks = std::sync::Arc::clone(&loads);
        let _ = meter
            .u64_observable_counter("palisade.member.picks")
            .with_unit("{call}")
            .with_description("Calls sent to a tier member")
            .with_callback(move |obs| {
                for l in picks.iter() {
                    let s = l.stats();
                    obs.observe(s.picks, &[KeyValue::new("upstream", s.name.to_string())]);
                }
            })
            .build();
    }

    /// Sets the tier members' figures from their state now.
    pub(crate) fn members(&self, stats: &[palisade_balance::MemberStats]) {
        let now = std::time::SystemTime::now();
        let _one_at_a_time = self
            .members
            .setting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in stats {
            let label = UpstreamLabel {
                upstream: s.name.to_string(),
            };
            self.members
                .inflight
                .get_or_create(&label)
                .set(i64::try_from(s.inflight).unwrap_or(i64::MAX));
            self.members
                .ttft
                .get_or_create(&label)
                .set(s.ttft_ewma.as_secs_f64());
            self.members
                .drained_until
                .get_or_create(&label)
                .set(drained_until(s, now));
            let picks = self.members.picks.get_or_create(&label);
            // A counter: raised to the member's count (it only grows).
            let seen = picks.get();
            if s.picks > seen {
                picks.inc_by(s.picks - seen);
            }
        }
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
