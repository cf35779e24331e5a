//! [`TraceBody`]: the answer watched to its end; usage, finish reasons and
//! metrics recorded there.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use opentelemetry::KeyValue;
use palisade_providers::observe::{End, Summary, Watch, WatchedBody};
use pin_project_lite::pin_project;
use tracing::Span;

use crate::service::Call;

/// What the body wrapper reports to: the span and the metrics.
pub(crate) struct Observing {
    pub(crate) stream: bool,
    pub(crate) first_chunk: Option<Instant>,
    pub(crate) call: Box<Call>,
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

impl<B> TraceBody<B> {
    pub(crate) fn new(inner: WatchedBody<B, Observing>, span: Span) -> Self {
        Self { inner, span }
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
