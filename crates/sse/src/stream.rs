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
