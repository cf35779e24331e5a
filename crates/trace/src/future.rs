//! [`ResponseFuture`]: the span around the inner call, the outcome at the
//! response head.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http::header::{HeaderName, HeaderValue};
use http_body::Body;
use opentelemetry::KeyValue;
use palisade_core::{BoxError, ErrorKind};
use palisade_providers::observe::{self, WatchedBody};
use pin_project_lite::pin_project;
use tracing::Span;

use crate::body::{Observing, TraceBody};
use crate::service::Call;

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

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        fut: F,
        span: Span,
        call: Option<Box<Call>>,
        echo: Option<(HeaderName, HeaderValue)>,
    ) -> Self {
        Self {
            fut,
            span,
            call,
            echo,
        }
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
                    let stream = palisade_sse::has_event_stream(res.headers());
                    let span = call.span.clone();
                    let api = call.api;
                    (
                        Observing {
                            stream,
                            first_chunk: None,
                            call,
                        },
                        span,
                        api,
                    )
                });
                // Watched through the response's one observation
                // (`palisade_providers::observe::watch`): decoded once,
                // whichever layers watch it.
                Poll::Ready(Ok(match observing {
                    Some((watching, span, api)) => {
                        observe::watch(res, api, watching).map(|body| TraceBody::new(body, span))
                    }
                    None => {
                        res.map(|inner| TraceBody::new(WatchedBody::unwatched(inner), Span::none()))
                    }
                }))
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
