//! palisade-trace: trace-id and W3C trace-context propagation, with one
//! OpenTelemetry GenAI span and the GenAI client metrics per LLM call.
//!
//! [`TraceLayer`] is the outermost layer of a palisade stack. Per call it:
//!
//! - reads `x-trace-id` (name configurable) and `traceparent`/`tracestate`
//!   from the request, generates what is missing ([`TraceContext`]), and
//!   sends both upstream; the response carries `x-trace-id` back;
//! - opens a `tracing` span `gen_ai` at INFO whose OpenTelemetry name is
//!   `{operation} {model}` (`otel.name`) with the GenAI semantic-convention
//!   attributes: `gen_ai.operation.name`, `gen_ai.provider.name`,
//!   `gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.response.id`,
//!   `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
//!   `gen_ai.response.finish_reasons`, `gen_ai.response.time_to_first_chunk`
//!   (streams), `server.address`, `http.response.status_code`, `error.type`,
//!   the provider's request id (`gen_ai.response.request_id`, from
//!   `x-request-id` / `request-id`), and `trace_id` (so every log line inside
//!   the call carries it). Usage, finish reasons and the response model are
//!   recorded when the body **ends** — for streams, from the final events —
//!   through `palisade_providers::observe`;
//! - with [`TraceLayer::metrics`], records `gen_ai.client.operation.duration`,
//!   `gen_ai.client.token.usage` and `gen_ai.client.operation.time_to_first_chunk`
//!   through the `opentelemetry` metrics API.
//!
//! With the `otel` feature (default) and a `tracing-opentelemetry` layer
//! installed, the span's parent is the incoming `traceparent` and the
//! `traceparent` sent upstream names the span itself, so the exported trace
//! is continuous. Spans export over OTLP when you install an exporter; this
//! crate installs nothing.
//!
//! No header value is recorded except the provider's request id: keys
//! (`authorization`, `x-api-key`, `api-key`, cookies) never reach a span.
//!
//! Cheap when nobody listens: without a subscriber for the span and without
//! metrics, a call costs the id propagation (two header inserts) and nothing
//! else — no body parse, no body wrapper work.
//!
//! ```
//! use palisade_trace::TraceLayer;
//! use tower::ServiceBuilder;
//! # let client = tower::service_fn(|_: http::Request<palisade_core::RequestBody>| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//! # });
//! let meter = opentelemetry::global::meter("my-app");
//! let stack = ServiceBuilder::new()
//!     .layer(TraceLayer::new().metrics(&meter))
//!     .service(client);
//! # let _ = stack;
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod context;
mod future;
mod layer;
mod service;

pub use body::TraceBody;
pub use context::{SpanId, TRACE_ID_HEADER, TraceContext, TraceId};
pub use future::ResponseFuture;
pub use layer::TraceLayer;
pub use service::Trace;
