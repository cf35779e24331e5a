//! Exporting the gateway's spans and metrics over OTLP (HTTP/protobuf),
//! configured by the standard `OTEL_*` environment variables.
//!
//! Each signal is on when its endpoint is set —
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`,
//! or the generic `OTEL_EXPORTER_OTLP_ENDPOINT` for both — unless
//! `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER` /
//! `OTEL_METRICS_EXPORTER` is `none`. Nothing is exported otherwise. The
//! OpenTelemetry SDK reads the rest: `OTEL_EXPORTER_OTLP_HEADERS` (and the
//! per-signal `_HEADERS`), `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`
//! (and `_ARG`), `OTEL_BSP_*` for span batching, and
//! `OTEL_METRIC_EXPORT_INTERVAL` (default 60 s) for metrics. The service
//! name and the headers are checked by `tests/binary.rs` against an OTLP
//! receiver.
//!
//! What is exported:
//! - spans: the GenAI client spans of the upstream stacks
//!   (`palisade-trace`), children of each request's `request` span;
//! - metrics: the GenAI client metrics (`gen_ai.client.operation.duration`,
//!   `gen_ai.client.token.usage`,
//!   `gen_ai.client.operation.time_to_first_chunk`) recorded by the
//!   upstream stacks, and the gateway's own figures under `palisade.*`
//!   (the table in the `metrics` module docs and the README maps them to
//!   the Prometheus names of `GET /metrics`, which stays on). Cumulative
//!   temporality, the SDK's default.
//!
//! Decisions, documented where a user meets them (`--help`, README):
//! - Protocol: `http/protobuf` only; `OTEL_EXPORTER_OTLP_PROTOCOL` (or a
//!   per-signal `_PROTOCOL`) set to anything else (`grpc`, `http/json`) is
//!   a start-up error naming it; so is an `OTEL_*_EXPORTER` list without
//!   `otlp` (other than `none`); other exporters in a list are not built.
//! - Endpoints over `http://` only for now: the exporter is built without
//!   TLS (an `https://` endpoint is a start-up error); run a local
//!   collector or agent in front of a TLS endpoint.
//! - Export happens on the SDK's own background threads: an unreachable
//!   collector costs a log line, never a request's time.

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The running exporters; [`Exporter::shutdown`] flushes what is queued.
#[derive(Debug)]
pub struct Exporter {
    spans: Option<SdkTracerProvider>,
    metrics: Option<SdkMeterProvider>,
}

/// The `tracing` layer that hands spans to the exporter (from [`from_env`]).
pub type Layer<S> = tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>;

/// What [`from_env`] set up: the span layer (when traces are exported) and
/// the exporters, whose [`meter`](Exporter::meter) the gateway records with
/// (when metrics are).
pub struct Otel<S> {
    /// Hands the spans to the exporter; `None` when traces are off.
    pub spans: Option<Layer<S>>,
    /// The exporters.
    pub exporter: Exporter,
}

impl<S> std::fmt::Debug for Otel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otel")
            .field("spans", &self.spans.is_some())
            .field("exporter", &self.exporter)
            .finish()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The endpoint variable that turns `signal` on (`TRACES` or `METRICS`),
/// with its value; `None` when the signal is off.
fn endpoint(signal: &str) -> Result<Option<(String, String)>, String> {
    let exporter = format!("OTEL_{signal}_EXPORTER");
    if let Some(v) = env(&exporter) {
        // A comma-separated list, as the specification allows: `none`
        // alone turns the signal off; otherwise it must name `otlp` (other
        // exporters in the list, e.g. `console`, are not built here).
        let list: Vec<String> = v
            .split(',')
            .map(|x| x.trim().to_ascii_lowercase())
            .filter(|x| !x.is_empty())
            .collect();
        if list == ["none"] {
            return Ok(None);
        }
        if !list.iter().any(|x| x == "otlp") {
            return Err(format!(
                "{exporter}=`{v}`: this gateway exports over OTLP only; set it to `otlp` or `none`, or unset it"
            ));
        }
    }
    let own = format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT");
    let found = env(&own).map(|e| (own.clone(), e)).or_else(|| {
        env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), e))
    });
    let Some((var, endpoint)) = found else {
        return Ok(None);
    };
    for name in [
        format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"),
        "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(),
    ] {
        if let Some(p) = env(&name) {
            if p != "http/protobuf" {
                return Err(format!(
                    "{name}=`{p}`: this gateway exports over `http/protobuf` only; set it to that or unset it"
                ));
            }
        }
    }
    if endpoint
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("https://")
    {
        return Err(format!(
            "{var}=`{endpoint}`: this gateway exports over plain `http://` only (no TLS in its exporter); send to a local collector or agent"
        ));
    }
    Ok(Some((var, endpoint)))
}

/// The span layer and the exporters when the environment asks for OTLP;
/// `Ok(None)` when it asks for neither signal.
///
/// # Errors
///
/// A message naming the variable at fault: an unsupported protocol or
/// exporter, an `https://` endpoint, or an endpoint the exporter refuses.
pub fn from_env<S>() -> Result<Option<Otel<S>>, String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let traces = endpoint("TRACES")?;
    let metrics = endpoint("METRICS")?;
    if traces.is_none() && metrics.is_none() {
        return Ok(None);
    }
    let resource = Resource::builder()
        .with_service_name(
            env("OTEL_SERVICE_NAME").unwrap_or_else(|| "palisade-gateway".to_owned()),
        )
        .build();
    // The exporters read the endpoint, headers and timeout from the
    // environment themselves (adding the signal path, `/v1/traces` or
    // `/v1/metrics`, to the generic endpoint).
    let spans = match traces {
        None => None,
        Some((var, endpoint)) => {
            let exporter = SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()
                .map_err(|e| {
                    format!("{var}=`{endpoint}`: cannot build the OTLP span exporter: {e}")
                })?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource.clone())
                    .build(),
            )
        }
    };
    let meters = match metrics {
        None => None,
        Some((var, endpoint)) => {
            let exporter = MetricExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()
                .map_err(|e| {
                    format!("{var}=`{endpoint}`: cannot build the OTLP metric exporter: {e}")
                })?;
            Some(
                SdkMeterProvider::builder()
                    .with_periodic_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
    };
    let layer = spans
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("palisade-gateway")));
    Ok(Some(Otel {
        spans: layer,
        exporter: Exporter {
            spans,
            metrics: meters,
        },
    }))
}

impl Exporter {
    /// The meter to record the gateway's metrics with
    /// ([`Gateway::with_meter`](crate::Gateway::with_meter)); `None` when
    /// metrics are not exported.
    pub fn meter(&self) -> Option<Meter> {
        self.metrics.as_ref().map(|p| p.meter("palisade-gateway"))
    }

    /// Exports what is still queued, then stops.
    pub fn shutdown(self) {
        if let Some(p) = self.spans {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "OTLP span exporter: flushing at shutdown failed");
            }
        }
        if let Some(p) = self.metrics {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "OTLP metric exporter: flushing at shutdown failed");
            }
        }
    }
}
