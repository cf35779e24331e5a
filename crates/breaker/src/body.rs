//! [`BreakerBody`]: records a successful response's outcome when it ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use palisade_core::BoxError;
use palisade_core::classify::{ClassifyOutcome, Outcome};
use palisade_sse::ScanView;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::circuit::{Permit, Verdict};
use crate::future::verdict;

pin_project! {
    /// A response body whose end decides the call's outcome.
    ///
    /// A body that ends is a success (unless slower than the slow-call
    /// threshold); an error frame is classified (transport errors and idle
    /// or total timeouts are failures); an SSE body carrying an in-band error
    /// event is a failure. A body dropped before its end records nothing:
    /// the caller went away, the upstream did nothing wrong.
    #[derive(Debug)]
    pub struct BreakerBody<B, C> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
        classifier: C,
        // Boxed: only event streams need it, and they are long-lived; every
        // other response is smaller for it (it is moved with the response).
        scanner: Option<Box<ScanView>>,
        slow_at: Option<Instant>,
    }
}

impl<B, C> BreakerBody<B, C> {
    pub(crate) fn passthrough(inner: B, classifier: C) -> Self {
        Self {
            inner,
            permit: None,
            classifier,
            scanner: None,
            slow_at: None,
        }
    }

    pub(crate) fn watching(
        inner: B,
        permit: Permit,
        classifier: C,
        scanner: Option<Box<ScanView>>,
        slow_at: Option<Instant>,
    ) -> Self {
        Self {
            inner,
            permit: Some(permit),
            classifier,
            scanner,
            slow_at,
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

pub(crate) fn end_verdict(slow_at: Option<Instant>) -> Verdict {
    match slow_at {
        Some(at) if Instant::now() > at => Verdict::Failure,
        _ => Verdict::Success,
    }
}

impl<B, C> Body for BreakerBody<B, C>
where
    B: Body,
    B::Data: 'static,
    B::Error: Into<BoxError>,
    C: ClassifyOutcome,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                if let Some(p) = this.permit.take() {
                    p.record(end_verdict(*this.slow_at));
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                if let Some(p) = this.permit.take()
                    && let Some(v) = verdict(this.classifier.classify(Outcome::Error(&*e)))
                {
                    p.record(v);
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(scanner), Some(data)) = (this.scanner.as_mut(), frame.data_ref()) {
                    if scanner.feed_buf(data).inband_errors > 0
                        && let Some(p) = this.permit.take()
                    {
                        p.record(Verdict::Failure);
                    }
                }
                if this.inner.is_end_stream()
                    && let Some(p) = this.permit.take()
                {
                    // Consumers may stop polling once the body says it ended.
                    p.record(end_verdict(*this.slow_at));
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
