//! Exporting the gateway's spans over OTLP (HTTP/protobuf), configured by
//! the standard `OTEL_*` environment variables.
//!
//! On when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is
//! not `true`); nothing is exported otherwise. The OpenTelemetry SDK reads
//! the rest: `OTEL_EXPORTER_OTLP_HEADERS` (and `_TRACES_HEADERS`),
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME` /
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` (and `_ARG`),
//! `OTEL_BSP_*` for batching (the service name and the headers are checked
//! by `tests/binary.rs` against an OTLP receiver). The exported spans are the GenAI client spans
//! of the upstream stacks (`palisade-trace`), children of each request's
//! `request` span.
//!
//! Decisions, documented where a user meets them (`--help`, README):
//! - Protocol: `http/protobuf` only; `OTEL_EXPORTER_OTLP_PROTOCOL` set to
//!   anything else (`grpc`, `http/json`) is a start-up error naming it.
//! - Endpoints over `http://` only for now: the exporter is built without
//!   TLS (an `https://` endpoint is a start-up error); run a local
//!   collector or agent in front of a TLS endpoint.
//! - Export happens on the SDK's own background thread, in batches: an
//!   unreachable collector costs a log line, never a request's time.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The running exporter; [`Exporter::shutdown`] flushes what is queued.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

/// The `tracing` layer that hands spans to the exporter (from [`from_env`]).
pub type Layer<S> = tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The tracing layer exporting spans, and its exporter, when the
/// environment asks for OTLP; `Ok(None)` when it does not.
///
/// # Errors
///
/// A message naming the variable at fault: an unsupported protocol, an
/// `https://` endpoint, or an endpoint the exporter refuses.
pub fn from_env<S>() -> Result<Option<(Layer<S>, Exporter)>, String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .map(|e| ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| ("OTEL_EXPORTER_OTLP_ENDPOINT", e)));
    let Some((var, endpoint)) = endpoint else {
        return Ok(None);
    };
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(p) = env(name) {
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
    // The exporter reads the endpoint, headers and timeout from the
    // environment itself (with the signal path `/v1/traces` added to the
    // generic endpoint).
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("{var}=`{endpoint}`: cannot build the OTLP exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(
                    env("OTEL_SERVICE_NAME").unwrap_or_else(|| "palisade-gateway".to_owned()),
                )
                .build(),
        )
        .build();
    let tracer = provider.tracer("palisade-gateway");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok(Some((layer, Exporter { provider })))
}

impl Exporter {
    /// Exports what is still queued, then stops.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OTLP exporter: flushing at shutdown failed");
        }
    }
}
