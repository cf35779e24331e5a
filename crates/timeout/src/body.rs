//! [`TimeoutBody`]: idle and total deadlines on a streamed response body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use palisade_core::{BoxError, Budget, Elapsed};
use palisade_sse::ScanView;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::layer::TimeoutLayer;

pin_project! {
    /// A response body under the idle and total deadlines.
    ///
    /// One `Sleep` serves both deadlines. It is armed (and allocated) only when
    /// the inner body is not ready, and re-armed lazily: progress only records the time (one
    /// clock read), and when the timer fires before the real deadline it is
    /// reset to it. After a deadline expires the body yields the
    /// [`Elapsed`] error once and then ends.
    #[derive(Debug)]
    pub struct TimeoutBody<B> {
        #[pin]
        inner: B,
        sleep: Option<Pin<Box<Sleep>>>,
        idle: Option<Duration>,
        total: Option<Duration>,
        total_at: Option<Instant>,
        last_progress: Option<Instant>,
        sse: Option<ScanView>,
        expired: bool,
    }
}

impl<B> TimeoutBody<B> {
    pub(crate) fn new(
        inner: B,
        config: TimeoutLayer,
        total_at: Option<Instant>,
        sse: Option<ScanView>,
    ) -> Self {
        let idle = config.idle;
        Self {
            inner,
            sleep: None,
            idle,
            total: config.total,
            total_at,
            last_progress: None,
            sse,
            expired: false,
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The wrapped body, by value.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body,
    B::Data: 'static,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        if *this.expired {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.idle.is_some() {
                    let progressed = match (this.sse.as_mut(), frame.data_ref()) {
                        (Some(sse), Some(data)) => feed(sse, data) > 0,
                        (Some(_), None) => false,
                        (None, _) => true,
                    };
                    if progressed || this.last_progress.is_none() {
                        *this.last_progress = Some(Instant::now());
                    }
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if this.idle.is_none() && this.total_at.is_none() {
            return Poll::Pending;
        }
        loop {
            // The idle clock starts at the body's first silence.
            let idle_at = match *this.idle {
                Some(idle) => Some(*this.last_progress.get_or_insert_with(Instant::now) + idle),
                None => None,
            };
            let deadline = match (idle_at, *this.total_at) {
                (Some(a), Some(b)) => a.min(b),
                (Some(d), None) | (None, Some(d)) => d,
                (None, None) => return Poll::Pending,
            };
            let sleep = match this.sleep {
                None => this
                    .sleep
                    .insert(Box::pin(tokio::time::sleep_until(deadline))),
                Some(sleep) => {
                    if sleep.deadline() < deadline && sleep.is_elapsed() {
                        // Fired early: progress moved the deadline. Re-arm.
                        sleep.as_mut().reset(deadline);
                    }
                    sleep
                }
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let err = if this.total_at.is_some_and(|t| t <= now) {
                Elapsed::new(Budget::Total, this.total.unwrap_or_default())
            } else if idle_at.is_some_and(|t| t <= now) {
                Elapsed::new(Budget::Idle, this.idle.unwrap_or_default())
            } else {
                continue;
            };
            *this.expired = true;
            return Poll::Ready(Some(Err(err.into())));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.expired {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

/// Feeds a frame's data to the shared scan (a `Bytes` without a copy: a
/// layer outside may keep it); returns how many data events (progress) it
/// completed.
fn feed<D: Buf + 'static>(sse: &mut ScanView, data: &D) -> usize {
    sse.feed_buf(data).data_events
}
