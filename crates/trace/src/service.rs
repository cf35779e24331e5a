//! [`Trace`]: the service, per call: ids, the span, the call.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::Body;
use opentelemetry::KeyValue;
use palisade_core::{BoxError, ParsedBody};
use palisade_providers::Api;
use tower_service::Service;
use tracing::Span;
use tracing::field::Empty;

use crate::body::TraceBody;
use crate::context::TraceContext;
use crate::future::ResponseFuture;
use crate::layer::{Config, Instruments};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The service [`TraceLayer`](crate::TraceLayer) builds.
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
    cfg: Arc<Config>,
}

impl<S> Trace<S> {
    pub(crate) fn new(inner: S, cfg: Arc<Config>) -> Self {
        Self { inner, cfg }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// What the span and the metrics need after the headers.
pub(crate) struct Call {
    /// The API called: where its answer says what it amounted to (`None`:
    /// unnamed, not read).
    pub(crate) api: Option<Api>,
    pub(crate) span: Span,
    pub(crate) started: Instant,
    pub(crate) attrs: Vec<KeyValue>,
    pub(crate) metrics: Option<Instruments>,
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
            return ResponseFuture::new(self.inner.call(req), Span::none(), None, None);
        }
        // The API the request names in its extensions (a service serving
        // several says so per call), else `TraceLayer::api`, else the
        // path's. A path that names none (an OpenAI-compatible server's own
        // route) is traced with no API assumed: no operation or provider
        // name, no usage read.
        let api = req
            .extensions()
            .get::<Api>()
            .copied()
            .or(cfg.api)
            .or_else(|| Api::from_path(req.uri().path()));
        let span = tracing::info_span!(
            "gen_ai",
            otel.name = Empty,
            otel.kind = "client",
            gen_ai.operation.name = api.map(Api::operation),
            gen_ai.provider.name = api.map(Api::vendor),
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
            return ResponseFuture::new(fut, span, None, Some((cfg.header.clone(), id)));
        }
        let mut ctx = TraceContext::from_headers(req.headers());
        let call = if watched {
            // The body parsed once: stored for the layers after this one.
            let model = ParsedBody::get_or_parse(&mut req)
                .ok()
                .and_then(|p| p.model().map(str::to_owned))
                .unwrap_or_default();
            let host = req.uri().host().map(str::to_owned);
            let name = match api {
                Some(api) => format!("{} {model}", api.operation()),
                None => model.clone(),
            };
            span.record("otel.name", name);
            span.record("gen_ai.request.model", model.as_str());
            if let Some(h) = &host {
                span.record("server.address", h.as_str());
            }
            #[cfg(feature = "otel")]
            otel::link(&span, &mut ctx);
            span.record("trace_id", ctx.id());
            let mut attrs = Vec::with_capacity(4);
            if let Some(api) = api {
                attrs.push(KeyValue::new("gen_ai.operation.name", api.operation()));
                attrs.push(KeyValue::new("gen_ai.provider.name", api.vendor()));
            }
            attrs.push(KeyValue::new("gen_ai.request.model", model));
            if let Some(h) = host {
                attrs.push(KeyValue::new("server.address", h));
            }
            Some(Box::new(Call {
                api,
                span: span.clone(),
                started: Instant::now(),
                attrs,
                metrics: cfg.metrics.clone(),
            }))
        } else {
            None
        };
        let h = req.headers_mut();
        let id = HeaderValue::from_str(ctx.id()).ok();
        if let Some(v) = &id {
            h.insert(cfg.header.clone(), v.clone());
        }
        if let Ok(v) = HeaderValue::from_str(&ctx.traceparent()) {
            h.insert(TRACEPARENT, v);
        }
        if let Some(ts) = ctx.tracestate().and_then(|t| HeaderValue::from_str(t).ok()) {
            h.insert(TRACESTATE, ts);
        }
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        ResponseFuture::new(fut, span, call, id.map(|v| (cfg.header.clone(), v)))
    }
}

/// A new trace id (as the `x-trace-id` value) and the `traceparent` naming
/// it with a new span id.
fn fresh_ids() -> (HeaderValue, HeaderValue) {
    use crate::context::write_hex as hex;
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
        if let Some(parent) = ctx.parent_id() {
            let flags = if ctx.is_sampled() {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            let remote = SpanContext::new(
                TraceId::from_bytes(ctx.trace_id().to_bytes()),
                SpanId::from_bytes(parent.to_bytes()),
                flags,
                true,
                TraceState::default(),
            );
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
        let (Some(trace_id), Some(span_id)) = (
            crate::TraceId::from_bytes(own.trace_id().to_bytes()),
            crate::SpanId::from_bytes(own.span_id().to_bytes()),
        ) else {
            return;
        };
        if ctx.parent_id().is_none() {
            ctx.adopt_trace(trace_id);
        }
        if trace_id == ctx.trace_id() {
            ctx.set_span_id(span_id);
        }
    }
}
