//! [`ResponseFuture`]: the first-byte (and total) deadline on the headers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use palisade_core::{BoxError, Budget, Elapsed};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use palisade_sse::SharedScan;

use crate::body::TimeoutBody;
use crate::layer::TimeoutLayer;

pin_project! {
    /// The future of [`Timeout`](crate::Timeout)'s `call`.
    ///
    /// The timer is armed (and allocated) only if the inner future is not
    /// ready at once, so an immediate answer costs no timer.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        sleep: Option<Pin<Box<Sleep>>>,
        start: Option<Instant>,
        config: TimeoutLayer,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, config: TimeoutLayer) -> Self {
        Self {
            inner,
            sleep: None,
            start: None,
            config,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<TimeoutBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let config = *this.config;
        match this.inner.poll(cx) {
            Poll::Ready(Ok(mut res)) => {
                let total_at = config
                    .total
                    .map(|t| this.start.unwrap_or_else(Instant::now) + t);
                // An event stream's one scan, shared with the layers outside
                // that count events too (a breaker). Any other body makes
                // progress with every frame.
                // The headers are looked at only when an event stream
                // would be treated apart.
                let sse = (config.sse_aware
                    && config.idle.is_some()
                    && palisade_sse::has_event_stream(res.headers()))
                .then(|| SharedScan::view(res.extensions_mut()));
                return Poll::Ready(Ok(res.map(|b| TimeoutBody::new(b, config, total_at, sse))));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
            Poll::Pending => {}
        }
        let (first, total) = match (config.first_byte, config.total) {
            (None, None) => return Poll::Pending,
            (f, t) => (f, t),
        };
        if this.sleep.is_none() {
            let start = *this.start.get_or_insert_with(Instant::now);
            let deadline = match (first, total) {
                (Some(f), Some(t)) => start + f.min(t),
                (Some(d), None) | (None, Some(d)) => start + d,
                (None, None) => return Poll::Pending,
            };
            *this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline)));
        }
        if let Some(sleep) = this.sleep.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            // Whichever deadline is shorter is the one that expired.
            let err = match (first, total) {
                (Some(f), Some(t)) if t < f => Elapsed::new(Budget::Total, t),
                (Some(f), _) => Elapsed::new(Budget::FirstByte, f),
                (None, Some(t)) => Elapsed::new(Budget::Total, t),
                (None, None) => return Poll::Pending,
            };
            return Poll::Ready(Err(err.into()));
        }
        Poll::Pending
    }
}
