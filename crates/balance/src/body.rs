//! The answer's body, watched for the member's time to first content, its
//! failures, and its end (when the call stops being in flight); and read
//! ahead to its first content event when a hedged call races two members.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use palisade_providers::observe::{End, Summary, Watch, WatchedBody};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::member::{InFlight, Load};

/// Reports a call's answer to its member.
pub(crate) struct MemberWatch {
    pub(crate) load: Arc<Load>,
    pub(crate) started: Instant,
    pub(crate) guard: Option<InFlight>,
    /// The time to first content is still to be measured (a successful
    /// stream's first content event, or its first data when no API is
    /// named).
    pub(crate) timing: bool,
    /// The answer's API is known: content events, terminators and in-band
    /// errors can be told.
    pub(crate) api_known: bool,
    /// A successful stream: one that ends without its terminator was cut.
    pub(crate) ok_stream: bool,
}

impl MemberWatch {
    fn measured(&mut self) {
        if self.timing {
            self.timing = false;
            let now = Instant::now();
            self.load
                .record_ttft(now, now.saturating_duration_since(self.started));
        }
    }

    fn ended(&mut self, failed: bool) {
        if failed {
            self.load.penalize(Instant::now());
        }
        self.guard = None;
    }
}

impl Watch for MemberWatch {
    fn on_content(&mut self) {
        self.measured();
    }

    fn on_data(&mut self, data: &Bytes) {
        if !self.api_known && !data.is_empty() {
            self.measured();
        }
    }

    fn on_end(&mut self, summary: Summary, how: End) {
        // A broken stream, an in-band error, or a stream of a known API
        // that ended without its terminator (truncated) is a failure; a
        // caller going away is not the member's.
        let failed = match how {
            End::Failed => true,
            End::Complete => {
                summary.inband_error.is_some()
                    || (self.api_known && self.ok_stream && !summary.terminated)
            }
            // Dropped: the caller went away, not the member's doing.
            _ => false,
        };
        self.ended(failed);
    }
}

/// What is read ahead at most while waiting for the first content event
/// (role-only chunks, `message_start`, pings are small): past it, the
/// answer counts as having content.
const MAX_HELD_BYTES: usize = 256 * 1024;

/// How far [`BalancedBody::poll_content`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reached {
    /// Its first content event (or, for an answer that is not a stream or
    /// whose API is not known, its first data; or more than 256 KiB read
    /// ahead without one).
    Content,
    /// Its end, with no content event (a stream that ended without one).
    End,
    /// It failed before any content event: the error is handed on after
    /// the frames read before it.
    Failed,
}

pin_project! {
    /// The body of a balanced call's answer, as the member sent it; its
    /// call stays in flight on the member until it ends or is dropped.
    pub struct BalancedBody<B: Body> {
        #[pin]
        inner: Inner<B>,
        // Frames read ahead (`poll_content`), handed on first.
        held: VecDeque<Frame<Bytes>>,
        held_bytes: usize,
        // How the body ended while read ahead; handed on after `held`.
        held_end: Option<HeldEnd<B::Error>>,
    }
}

enum HeldEnd<E> {
    Error(E),
    End,
    /// The end (or error) was handed on.
    Done,
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B: Body> {
        // A stream: watched through the stack's observation (no second
        // decoding when a layer inside already watches it).
        Watched {
            #[pin]
            body: WatchedBody<B, MemberWatch>,
            // Content events can be told (the API is known); else the
            // first data counts as content.
            api_known: bool,
            data_seen: bool,
        },
        // Anything else: passed through; its end or failure reported.
        Plain {
            #[pin]
            body: B,
            watch: Option<MemberWatch>,
        },
        // Read ahead pinned where it was (a hedged call's winner).
        Pinned {
            body: Pin<Box<BalancedBody<B>>>,
        },
    }
}

impl<B: Body> BalancedBody<B> {
    pub(crate) fn watched(body: WatchedBody<B, MemberWatch>, api_known: bool) -> Self {
        Self::new(Inner::Watched {
            body,
            api_known,
            data_seen: false,
        })
    }

    pub(crate) fn plain(body: B, watch: MemberWatch) -> Self {
        Self::new(Inner::Plain {
            body,
            watch: Some(watch),
        })
    }

    pub(crate) fn pinned(body: Pin<Box<Self>>) -> Self {
        Self::new(Inner::Pinned { body })
    }

    fn new(inner: Inner<B>) -> Self {
        Self {
            inner,
            held: VecDeque::new(),
            held_bytes: 0,
            held_end: None,
        }
    }
}

impl<B> BalancedBody<B>
where
    B: Body<Data = Bytes>,
{
    /// Reads ahead until the answer's first content event (a stream's
    /// first token, not its role-only first chunk or `message_start`), its
    /// end, or its failure, keeping what it read to hand on from the start:
    /// nothing is lost or handed on twice. An answer that is not a stream
    /// is its content: `Content` at once, nothing read. What hedging waits
    /// for ([`BalanceBuilder::hedge_after`](crate::BalanceBuilder::hedge_after));
    /// a gateway racing members itself uses it the same way.
    pub fn poll_content(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reached> {
        let mut this = self.project();
        loop {
            match this.held_end {
                Some(HeldEnd::Error(_)) => return Poll::Ready(Reached::Failed),
                Some(HeldEnd::End | HeldEnd::Done) => return Poll::Ready(Reached::End),
                None => {}
            }
            if *this.held_bytes > MAX_HELD_BYTES {
                return Poll::Ready(Reached::Content);
            }
            let (mut body, api_known, data_seen) = match this.inner.as_mut().project() {
                InnerProj::Watched {
                    body,
                    api_known,
                    data_seen,
                } => (body, api_known, data_seen),
                InnerProj::Pinned { body } => return body.as_mut().poll_content(cx),
                InnerProj::Plain { .. } => return Poll::Ready(Reached::Content),
            };
            if body.content_seen() || (!*api_known && *data_seen) {
                return Poll::Ready(Reached::Content);
            }
            match ready!(body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        *this.held_bytes += data.len();
                        *data_seen |= !data.is_empty();
                    }
                    this.held.push_back(frame);
                }
                Some(Err(e)) => *this.held_end = Some(HeldEnd::Error(e)),
                None => *this.held_end = Some(HeldEnd::End),
            }
        }
    }

    /// [`poll_content`](Self::poll_content) as a future.
    pub fn content(&mut self) -> impl std::future::Future<Output = Reached> + '_
    where
        Self: Unpin,
    {
        std::future::poll_fn(move |cx| Pin::new(&mut *self).poll_content(cx))
    }
}

impl<B: Body> std::fmt::Debug for BalancedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancedBody")
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl<B> Body for BalancedBody<B>
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
        if let Some(frame) = this.held.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match this.held_end.take() {
            Some(HeldEnd::Error(e)) => {
                *this.held_end = Some(HeldEnd::Done);
                return Poll::Ready(Some(Err(e)));
            }
            Some(HeldEnd::End | HeldEnd::Done) => {
                *this.held_end = Some(HeldEnd::Done);
                return Poll::Ready(None);
            }
            None => {}
        }
        match this.inner.project() {
            InnerProj::Watched { body, .. } => body.poll_frame(cx),
            InnerProj::Pinned { body } => body.as_mut().poll_frame(cx),
            InnerProj::Plain { mut body, watch } => {
                let polled = ready!(body.as_mut().poll_frame(cx));
                let end = match &polled {
                    Some(Ok(_)) => body.is_end_stream().then_some(false),
                    Some(Err(_)) => Some(true),
                    None => Some(false),
                };
                if let (Some(failed), Some(w)) = (end, watch.as_mut()) {
                    w.ended(failed);
                    *watch = None;
                }
                Poll::Ready(polled)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if !self.held.is_empty() {
            return false;
        }
        match &self.held_end {
            Some(HeldEnd::End | HeldEnd::Done) => return true,
            Some(HeldEnd::Error(_)) => return false,
            None => {}
        }
        match &self.inner {
            Inner::Watched { body, .. } => body.is_end_stream(),
            Inner::Pinned { body } => body.is_end_stream(),
            Inner::Plain { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if !self.held.is_empty() || self.held_end.is_some() {
            return SizeHint::default();
        }
        match &self.inner {
            Inner::Watched { body, .. } => body.size_hint(),
            Inner::Pinned { body } => body.size_hint(),
            Inner::Plain { body, .. } => body.size_hint(),
        }
    }
}
