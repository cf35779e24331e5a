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

mod context;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};
use palisade_core::{BoxError, ErrorKind, ParsedBody};
use palisade_providers::Api;
use palisade_providers::observe::{End, ResponseObserver, Summary, Watch, WatchedBody};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;
use tracing::field::Empty;

pub use context::{TRACE_ID_HEADER, TraceContext};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The GenAI client metrics.
#[derive(Clone, Debug)]
struct Instruments {
    duration: Histogram<f64>,
    tokens: Histogram<u64>,
    ttft: Histogram<f64>,
}

struct Config {
    enabled: bool,
    header: HeaderName,
    api: Option<Api>,
    metrics: Option<Instruments>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("header", &self.header)
            .field("api", &self.api)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

/// The trace layer; see the crate docs.
#[derive(Clone, Debug)]
pub struct TraceLayer {
    cfg: Arc<Config>,
}

impl Default for TraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceLayer {
    /// `x-trace-id`, the API inferred from the path ([`Api::from_path`];
    /// chat completions for a path that names none), no metrics.
    pub fn new() -> Self {
        Self {
            cfg: Arc::new(Config {
                enabled: true,
                header: HeaderName::from_static(TRACE_ID_HEADER),
                api: None,
                metrics: None,
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Config)) -> Self {
        let c = &*self.cfg;
        let mut cfg = Config {
            enabled: c.enabled,
            header: c.header.clone(),
            api: c.api,
            metrics: c.metrics.clone(),
        };
        f(&mut cfg);
        Self { cfg: Arc::new(cfg) }
    }

    /// Turns the layer off (`false`): calls pass straight through, nothing
    /// is propagated or recorded. For stacks that decide at run time, with
    /// one service type either way.
    #[must_use]
    pub fn enabled(self, on: bool) -> Self {
        self.with(|c| c.enabled = on)
    }

    /// Uses `name` instead of `x-trace-id`.
    #[must_use]
    pub fn trace_id_header(self, name: HeaderName) -> Self {
        self.with(|c| c.header = name)
    }

    /// Names the API instead of inferring it from the path.
    #[must_use]
    pub fn api(self, api: Api) -> Self {
        self.with(|c| c.api = Some(api))
    }

    /// Records the GenAI client metrics with `meter`.
    #[must_use]
    pub fn metrics(self, meter: &Meter) -> Self {
        let instruments = Instruments {
            duration: meter
                .f64_histogram("gen_ai.client.operation.duration")
                .with_unit("s")
                .with_description("GenAI operation duration")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            tokens: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used")
                .with_boundaries(TOKENS.to_vec())
                .build(),
            ttft: meter
                .f64_histogram("gen_ai.client.operation.time_to_first_chunk")
                .with_unit("s")
                .with_description("Time to receive the first chunk of a streamed response")
                .with_boundaries(SECONDS.to_vec())
                .build(),
        };
        self.with(|c| c.metrics = Some(instruments))
    }
}

/// The bucket boundaries the GenAI semantic conventions advise for the
/// duration histograms (seconds); the SDK's defaults (0, 5, 10, … 10,000)
/// suit milliseconds.
const SECONDS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// The boundaries the GenAI semantic conventions advise for
/// `gen_ai.client.token.usage`.
const TOKENS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            cfg: self.cfg.clone(),
        }
    }
}

/// The service [`TraceLayer`] builds.
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
    cfg: Arc<Config>,
}

/// What the span and the metrics need after the headers.
struct Call {
    span: Span,
    started: Instant,
    attrs: Vec<KeyValue>,
    metrics: Option<Instruments>,
}

impl<S, B, RB> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: AsRef<[u8]>,
    RB: Body<Data = Bytes>,
{
    type Response = Response<TraceBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let cfg = &*self.cfg;
        if !cfg.enabled {
            return ResponseFuture {
                fut: self.inner.call(req),
                span: Span::none(),
                call: None,
                echo: None,
            };
        }
        // A path that names no API (an OpenAI-compatible server's own
        // route) is traced as chat completions; `TraceLayer::api` says
        // otherwise.
        let api = cfg
            .api
            .or_else(|| Api::from_path(req.uri().path()))
            .unwrap_or(Api::ChatCompletions);
        let span = tracing::info_span!(
            "gen_ai",
            otel.name = Empty,
            otel.kind = "client",
            gen_ai.operation.name = api.operation(),
            gen_ai.provider.name = api.vendor(),
            gen_ai.request.model = Empty,
            gen_ai.response.model = Empty,
            gen_ai.response.id = Empty,
            gen_ai.response.request_id = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            gen_ai.response.finish_reasons = Empty,
            gen_ai.response.time_to_first_chunk = Empty,
            server.address = Empty,
            http.response.status_code = Empty,
            error.type = Empty,
            trace_id = Empty,
        );
        let watched = !span.is_disabled() || cfg.metrics.is_some();
        let incoming =
            req.headers().contains_key(&cfg.header) || req.headers().contains_key(TRACEPARENT);
        if !watched && !incoming {
            // Nobody listens and nothing came in: fresh ids, straight into
            // header values (no intermediate strings).
            let (id, traceparent) = fresh_ids();
            let h = req.headers_mut();
            h.insert(cfg.header.clone(), id.clone());
            h.insert(TRACEPARENT, traceparent);
            let fut = self.inner.call(req);
            return ResponseFuture {
                fut,
                span,
                call: None,
                echo: Some((cfg.header.clone(), id)),
            };
        }
        let mut ctx = TraceContext::from_headers(req.headers());
        let call = if watched {
            // The body parsed once: stored for the layers after this one.
            let model = ParsedBody::get_or_parse(&mut req)
                .ok()
                .and_then(|p| p.model().map(str::to_owned))
                .unwrap_or_default();
            let host = req.uri().host().map(str::to_owned);
            span.record("otel.name", format!("{} {model}", api.operation()));
            span.record("gen_ai.request.model", model.as_str());
            if let Some(h) = &host {
                span.record("server.address", h.as_str());
            }
            #[cfg(feature = "otel")]
            otel::link(&span, &mut ctx);
            span.record("trace_id", ctx.id.as_str());
            let mut attrs = vec![
                KeyValue::new("gen_ai.operation.name", api.operation()),
                KeyValue::new("gen_ai.provider.name", api.vendor()),
                KeyValue::new("gen_ai.request.model", model),
            ];
            if let Some(h) = host {
                attrs.push(KeyValue::new("server.address", h));
            }
            Some(Box::new(Call {
                span: span.clone(),
                started: Instant::now(),
                attrs,
                metrics: cfg.metrics.clone(),
            }))
        } else {
            None
        };
        let h = req.headers_mut();
        let id = HeaderValue::from_str(&ctx.id).ok();
        if let Some(v) = &id {
            h.insert(cfg.header.clone(), v.clone());
        }
        if let Ok(v) = HeaderValue::from_str(&ctx.traceparent()) {
            h.insert(TRACEPARENT, v);
        }
        if let Some(ts) = ctx
            .tracestate
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            h.insert(TRACESTATE, ts);
        }
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        ResponseFuture {
            fut,
            span,
            call,
            echo: id.map(|v| (cfg.header.clone(), v)),
        }
    }
}

/// A new trace id (as the `x-trace-id` value) and the `traceparent` naming
/// it with a new span id.
fn fresh_ids() -> (HeaderValue, HeaderValue) {
    use context::write_hex as hex;
    let trace = fastrand::u128(1..);
    let span = fastrand::u64(1..);
    let mut tp = *b"00-00000000000000000000000000000000-0000000000000000-01";
    hex(&mut tp[3..35], trace);
    hex(&mut tp[36..52], u128::from(span));
    // One allocation shared by both values; hex digits and dashes are valid
    // header bytes.
    let all = Bytes::copy_from_slice(&tp);
    let id = HeaderValue::from_maybe_shared(all.slice(3..35));
    let tp = HeaderValue::from_maybe_shared(all);
    match (id, tp) {
        (Ok(id), Ok(tp)) => (id, tp),
        _ => (
            HeaderValue::from_static("00000000000000000000000000000001"),
            HeaderValue::from_static("00-00000000000000000000000000000001-0000000000000001-01"),
        ),
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::TraceContext;

    /// With an incoming `traceparent`, parents `span` on it; without one,
    /// adopts the trace the span starts. Either way the `traceparent` sent
    /// upstream then names the span itself. Does nothing unless a
    /// tracing-opentelemetry layer is installed.
    pub(crate) fn link(span: &tracing::Span, ctx: &mut TraceContext) {
        if let Some(parent) = &ctx.parent_id {
            let (Ok(trace_id), Ok(parent)) =
                (TraceId::from_hex(&ctx.trace_id), SpanId::from_hex(parent))
            else {
                return;
            };
            let flags = if ctx.flags.ends_with('1') {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            let remote = SpanContext::new(trace_id, parent, flags, true, TraceState::default());
            if span
                .set_parent(opentelemetry::Context::new().with_remote_span_context(remote))
                .is_err()
            {
                return;
            }
        }
        let cx = span.context();
        let own = cx.span().span_context().clone();
        if !own.is_valid() {
            return;
        }
        if ctx.parent_id.is_none() {
            ctx.trace_id = own.trace_id().to_string();
            if !ctx.id_from_request {
                ctx.id.clone_from(&ctx.trace_id);
            }
        }
        if own.trace_id().to_string() == ctx.trace_id {
            ctx.span_id = own.span_id().to_string();
        }
    }
}

pin_project! {
    /// The future of [`Trace`].
    pub struct ResponseFuture<F> {
        #[pin]
        fut: F,
        span: Span,
        call: Option<Box<Call>>,
        echo: Option<(HeaderName, HeaderValue)>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// `error.type` of a failed call: palisade's one vocabulary
/// ([`ErrorKind::as_str`]), or OpenTelemetry's `_OTHER` for an error
/// palisade does not know.
fn error_type(err: &BoxError) -> &'static str {
    ErrorKind::of(&**err).map_or("_OTHER", ErrorKind::as_str)
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
    RB: Body<Data = Bytes>,
{
    type Output = Result<Response<TraceBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.enter();
            ready!(this.fut.poll(cx))
        };
        match result {
            Ok(mut res) => {
                if let Some((name, v)) = this.echo.take() {
                    res.headers_mut().insert(name, v);
                }
                let observing = this.call.take().map(|mut call| {
                    let status = res.status();
                    call.span
                        .record("http.response.status_code", i64::from(status.as_u16()));
                    let rid = res
                        .headers()
                        .get("x-request-id")
                        .or_else(|| res.headers().get("request-id"))
                        .and_then(|v| v.to_str().ok());
                    if let Some(rid) = rid {
                        call.span.record("gen_ai.response.request_id", rid);
                    }
                    if status.is_client_error() || status.is_server_error() {
                        let code = status.as_str().to_owned();
                        call.span.record("error.type", code.as_str());
                        call.attrs.push(KeyValue::new("error.type", code));
                    }
                    let ct = res
                        .headers()
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok());
                    let stream = ct.is_some_and(|c| c.starts_with("text/event-stream"));
                    let span = call.span.clone();
                    (
                        ResponseObserver::new(ct),
                        Observing {
                            stream,
                            first_chunk: None,
                            call,
                        },
                        span,
                    )
                });
                Poll::Ready(Ok(res.map(|inner| match observing {
                    Some((observer, watch, span)) => TraceBody {
                        inner: WatchedBody::new(inner, observer, watch),
                        span,
                    },
                    None => TraceBody {
                        inner: WatchedBody::unwatched(inner),
                        span: Span::none(),
                    },
                })))
            }
            Err(e) => {
                let e = e.into();
                if let Some(call) = this.call.take() {
                    let kind = error_type(&e);
                    call.span.record("error.type", kind);
                    tracing::info!(parent: &call.span, error = %e, "LLM call failed");
                    if let Some(m) = &call.metrics {
                        let mut attrs = call.attrs.clone();
                        attrs.push(KeyValue::new("error.type", kind));
                        m.duration
                            .record(call.started.elapsed().as_secs_f64(), &attrs);
                    }
                }
                Poll::Ready(Err(e))
            }
        }
    }
}

/// What the body wrapper reports to: the span and the metrics.
pub struct Observing {
    stream: bool,
    first_chunk: Option<Instant>,
    call: Box<Call>,
}

impl fmt::Debug for Observing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observing")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Watch for Observing {
    fn on_data(&mut self, _data: &Bytes) {
        self.first_chunk.get_or_insert_with(Instant::now);
    }

    fn on_end(&mut self, s: Summary, how: End) {
        let failure = match how {
            End::Complete => None,
            End::Failed => Some("body_error"),
            // The caller went away before the end.
            _ => Some("cancelled"),
        };
        self.finish(s, failure);
    }
}

impl Observing {
    fn finish(&mut self, s: Summary, failure: Option<&str>) {
        let span = &self.call.span;
        let mut attrs = std::mem::take(&mut self.call.attrs);
        if let Some(m) = &s.model {
            span.record("gen_ai.response.model", m.as_str());
            attrs.push(KeyValue::new("gen_ai.response.model", m.clone()));
        }
        if let Some(id) = &s.id {
            span.record("gen_ai.response.id", id.as_str());
        }
        // As i64: OpenTelemetry has no unsigned integers.
        if let Some(n) = s.input_tokens {
            span.record(
                "gen_ai.usage.input_tokens",
                i64::try_from(n).unwrap_or(i64::MAX),
            );
        }
        if let Some(n) = s.output_tokens {
            span.record(
                "gen_ai.usage.output_tokens",
                i64::try_from(n).unwrap_or(i64::MAX),
            );
        }
        if !s.finish_reasons.is_empty() {
            span.record(
                "gen_ai.response.finish_reasons",
                s.finish_reasons.join(",").as_str(),
            );
        }
        let ttft = self
            .first_chunk
            .filter(|_| self.stream)
            .map(|t| t.duration_since(self.call.started).as_secs_f64());
        if let Some(t) = ttft {
            span.record("gen_ai.response.time_to_first_chunk", t);
        }
        let failure = failure.or(s.inband_error.as_deref());
        if let Some(f) = failure {
            span.record("error.type", f);
            attrs.push(KeyValue::new("error.type", f.to_owned()));
        }
        if let Some(m) = &self.call.metrics {
            m.duration
                .record(self.call.started.elapsed().as_secs_f64(), &attrs);
            if let Some(t) = ttft {
                m.ttft.record(t, &attrs);
            }
            for (kind, n) in [("input", s.input_tokens), ("output", s.output_tokens)] {
                if let Some(n) = n {
                    let mut a = attrs.clone();
                    a.push(KeyValue::new("gen_ai.token.type", kind));
                    m.tokens.record(n, &a);
                }
            }
        }
    }
}

pin_project! {
    /// The response body of [`Trace`]: the inner body, watched to its end
    /// (through `palisade_providers::observe`) when anyone listens, polled
    /// inside the call's span.
    pub struct TraceBody<B> {
        #[pin]
        inner: WatchedBody<B, Observing>,
        span: Span,
    }
}

impl<B> fmt::Debug for TraceBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceBody")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<B> Body for TraceBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
