//! The answer's body, watched for the member's time to first content, its
//! failures, and its end (when the call stops being in flight).

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

pin_project! {
    /// The body of a balanced call's answer, as the member sent it; its
    /// call stays in flight on the member until it ends or is dropped.
    pub struct BalancedBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        // A stream: watched through the stack's observation (no second
        // decoding when a layer inside already watches it).
        Watched {
            #[pin]
            body: WatchedBody<B, MemberWatch>,
        },
        // Anything else: passed through; its end or failure reported.
        Plain {
            #[pin]
            body: B,
            watch: Option<MemberWatch>,
        },
    }
}

impl<B> BalancedBody<B> {
    pub(crate) fn watched(body: WatchedBody<B, MemberWatch>) -> Self {
        Self {
            inner: Inner::Watched { body },
        }
    }

    pub(crate) fn plain(body: B, watch: MemberWatch) -> Self {
        Self {
            inner: Inner::Plain {
                body,
                watch: Some(watch),
            },
        }
    }
}

impl<B> std::fmt::Debug for BalancedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancedBody").finish_non_exhaustive()
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
        match self.project().inner.project() {
            InnerProj::Watched { body } => body.poll_frame(cx),
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
        match &self.inner {
            Inner::Watched { body } => body.is_end_stream(),
            Inner::Plain { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Watched { body } => body.size_hint(),
            Inner::Plain { body, .. } => body.size_hint(),
        }
    }
}
