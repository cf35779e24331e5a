//! [`EventStream`]: events from any `http_body::Body`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use futures_core::Stream;
use http_body::Body;
use palisade_core::BoxError;
use pin_project_lite::pin_project;

use crate::decoder::Decoder;
use crate::error::SseError;
use crate::event::Event;
use crate::shared::{Drained, Subscription};

pin_project! {
    /// The events of a `text/event-stream` body, as a `futures::Stream`.
    ///
    /// Backpressure is by polling only: the body is polled for a frame only
    /// when the decoder has no complete event left, and nothing is queued.
    /// After an error the stream ends.
    ///
    /// # Example
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use http_body_util::Full;
    /// use palisade_sse::EventStream;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let body = Full::new(bytes::Bytes::from_static(b"data: {\"n\":1}\n\ndata: [DONE]\n\n"));
    /// let events: Vec<_> = EventStream::new(body).collect().await;
    /// assert_eq!(events.len(), 2);
    /// assert_eq!(events[1].as_ref().unwrap().data(), "[DONE]");
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct EventStream<B> {
        #[pin]
        body: B,
        decoder: Decoder,
        state: State,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    BodyDone,
    Failed,
}

impl<B> EventStream<B> {
    /// Decodes `body` with a default [`Decoder`].
    pub fn new(body: B) -> Self {
        Self::with_decoder(body, Decoder::new())
    }

    /// Decodes `body` with `decoder` (e.g. a different size limit).
    pub fn with_decoder(body: B, decoder: Decoder) -> Self {
        Self {
            body,
            decoder,
            state: State::Reading,
        }
    }

    /// The decoder (last event id, reconnection time).
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }
}

impl<B> Stream for EventStream<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Item = Result<Event, SseError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if *this.state == State::Failed {
                return Poll::Ready(None);
            }
            match this.decoder.next_event() {
                Ok(Some(ev)) => return Poll::Ready(Some(Ok(ev))),
                Ok(None) => {}
                Err(e) => {
                    *this.state = State::Failed;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if *this.state == State::BodyDone {
                this.decoder.finish();
                return Poll::Ready(None);
            }
            match this.body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(mut data) = frame.into_data() {
                        let n = data.remaining();
                        // Zero-copy for `Bytes`, one copy for other buffers.
                        this.decoder.push(data.copy_to_bytes(n));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    *this.state = State::Failed;
                    return Poll::Ready(Some(Err(SseError::body(e.into()))));
                }
                Poll::Ready(None) => *this.state = State::BodyDone,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

pin_project! {
    /// The events of a body whose stream a layer inside already decodes
    /// (its [`SharedScan`](crate::SharedScan), [subscribed to](crate::SharedScan::subscribe)):
    /// the body is polled for frames as [`EventStream`] polls it, and each
    /// frame's events are taken from the subscription instead of decoded a
    /// second time. The items, their order and the errors are
    /// [`EventStream`]'s; an event over the size limit ends the stream with
    /// [`SseError::is_too_large`].
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use palisade_sse::{SharedEvents, SharedScan};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut ext = http::Extensions::new();
    /// // What a layer inside does: view the scan, feed it every frame.
    /// let mut inner = SharedScan::view(&mut ext);
    /// let sub = SharedScan::subscribe(&ext, 1 << 20).expect("a layer inside feeds it");
    /// let frame = bytes::Bytes::from_static(b"data: {\"n\":1}\n\ndata: [DONE]\n\n");
    /// inner.feed_buf(&frame);
    /// let events: Vec<_> = SharedEvents::new(http_body_util::Full::new(frame), sub).collect().await;
    /// assert_eq!(events.len(), 2);
    /// assert_eq!(events[1].as_ref().unwrap().data(), "[DONE]");
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct SharedEvents<B> {
        #[pin]
        body: B,
        sub: Subscription,
        queue: std::collections::VecDeque<Event>,
        state: State,
    }
}

impl<B> SharedEvents<B> {
    /// The events of `body`, taken from `sub`.
    pub fn new(body: B, sub: Subscription) -> Self {
        Self {
            body,
            sub,
            queue: std::collections::VecDeque::new(),
            state: State::Reading,
        }
    }
}

impl<B> Stream for SharedEvents<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Item = Result<Event, SseError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if let Some(ev) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(ev)));
            }
            if *this.state != State::Reading {
                return Poll::Ready(None);
            }
            match this.body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if frame.is_data() && this.sub.drain_into(this.queue) == Drained::Stopped {
                        *this.state = State::Failed;
                        return Poll::Ready(Some(Err(SseError::too_large(
                            this.sub.max_event_bytes(),
                        ))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    *this.state = State::Failed;
                    return Poll::Ready(Some(Err(SseError::body(e.into()))));
                }
                Poll::Ready(None) => *this.state = State::BodyDone,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body::Frame;

    use super::*;
    use crate::shared::{ScanView, SharedScan};

    /// Frames handed out one per poll, each fed to the scan first: what an
    /// SSE-aware layer inside does.
    struct Feeding {
        frames: VecDeque<Bytes>,
        view: ScanView,
    }

    impl Body for Feeding {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let this = &mut *self;
            Poll::Ready(this.frames.pop_front().map(|f| {
                this.view.feed_buf(&f);
                Ok(Frame::data(f))
            }))
        }
    }

    fn shared(frames: &[&'static [u8]], max: usize) -> Option<SharedEvents<Feeding>> {
        let mut ext = http::Extensions::new();
        let view = SharedScan::view(&mut ext);
        let sub = SharedScan::subscribe(&ext, max)?;
        let frames = frames.iter().map(|f| Bytes::from_static(f)).collect();
        Some(SharedEvents::new(Feeding { frames, view }, sub))
    }

    #[tokio::test]
    async fn shared_events_are_the_events_a_decoder_gives() {
        let frames: [&[u8]; 4] = [
            b"event: message_start\ndata: {\"a\"",
            b":1}\n\n: keep-alive\n\nevent: ping\ndata: {}\r\n\r\nda",
            b"ta: x\ndata: y\n\nid: 7\ndata: [DONE]\n\n",
            b"data: cut off",
        ];
        let mut ext = http::Extensions::new();
        let own: Vec<_> = EventStream::new(Feeding {
            frames: frames.iter().map(|f| Bytes::from_static(f)).collect(),
            view: SharedScan::view(&mut ext),
        })
        .map(|r| r.map_err(|e| e.to_string()))
        .collect()
        .await;
        let taken: Vec<_> = shared(&frames, 1024)
            .expect("subscribed")
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
            .await;
        assert_eq!(own.len(), 4, "{own:?}");
        assert_eq!(taken, own);
    }

    #[tokio::test]
    async fn an_event_over_the_limit_ends_shared_events_with_too_large() {
        let frames: [&[u8]; 2] = [b"data: ok\n\n", b"data: far more than sixteen bytes\n\n"];
        let got: Vec<_> = shared(&frames, 16).expect("subscribed").collect().await;
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].as_ref().map(|e| e.data().clone()).ok(),
            Some("ok".into())
        );
        assert!(got[1].as_ref().is_err_and(SseError::is_too_large));
    }

    const STREAM: &[u8] = b"\xEF\xBB\xBFevent: message_start\ndata: {\"a\":1}\n\n: keep-alive\r\n\r\nevent: ping\rdata: {}\r\rid: 9\ndata: x\ndata: y\r\n\r\nretry: 10\n\ndata: {\"error\":{}}\n\nevent: error\ndata: e\n\ndata\n\ndata: [DONE]\n\ndata: cut";

    fn collect_now<S: Stream + Unpin>(mut s: S) -> Vec<S::Item> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(item)) = Pin::new(&mut s).poll_next(&mut cx) {
            out.push(item);
        }
        out
    }

    proptest::proptest! {
        /// Whatever the frame boundaries, the events taken from the shared
        /// decoding are the ones decoding the body gives.
        #[test]
        fn shared_events_equal_decoded_events_at_any_split(
            cuts in proptest::collection::vec(0usize..=STREAM.len(), 0..12)
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut frames = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([STREAM.len()]) {
                frames.push(Bytes::copy_from_slice(&STREAM[prev..c]));
                prev = c;
            }
            let mut ext = http::Extensions::new();
            let own = collect_now(EventStream::new(Feeding {
                frames: frames.iter().cloned().collect(),
                view: SharedScan::view(&mut ext),
            }));
            let mut ext = http::Extensions::new();
            let view = SharedScan::view(&mut ext);
            let sub = SharedScan::subscribe(&ext, 1024).expect("subscribed");
            let taken = collect_now(SharedEvents::new(
                Feeding { frames: frames.into_iter().collect(), view },
                sub,
            ));
            let own: Vec<_> = own.into_iter().map(|r| r.map_err(|e| e.to_string())).collect();
            let taken: Vec<_> = taken.into_iter().map(|r| r.map_err(|e| e.to_string())).collect();
            proptest::prop_assert_eq!(own.len(), 7);
            proptest::prop_assert_eq!(taken, own);
        }
    }
}
