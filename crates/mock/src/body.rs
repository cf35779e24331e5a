//! The mock's response body: generated lazily, one event per poll.
//!
//! Nothing is buffered ahead of the reader: a stream of any length costs the
//! memory of one event, and a slow reader slows the generator (backpressure by
//! polling, as a real server behaves).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::script::Fault;
use crate::upstream::Shared;
use crate::wire::{self, Dialect, ReplyMeta};

/// The error a scripted reset puts on the body.
pub(crate) fn reset_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "palisade-mock: scripted connection reset",
    )
}

/// The body of a mock response.
pub struct MockBody {
    kind: Kind,
}

impl fmt::Debug for MockBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full(_) => "full",
            Kind::Broken { .. } => "broken",
            Kind::Stream(_) => "stream",
        };
        f.debug_struct("MockBody").field("kind", &kind).finish()
    }
}

enum Kind {
    Full(Option<Bytes>),
    /// Half a JSON body, then a fault.
    Broken {
        first: Option<Bytes>,
        then: Fault,
        flushed: bool,
    },
    Stream(Box<StreamGen>),
}

/// Where the words of a reply come from.
#[derive(Clone, Debug)]
pub(crate) enum Words {
    Echo(Arc<[String]>),
    Generated,
}

const LOREM: [&str; 8] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
];

impl Words {
    fn get(&self, i: usize) -> &str {
        match self {
            Self::Echo(w) => w.get(i).map_or("", String::as_str),
            Self::Generated => LOREM[i % LOREM.len()],
        }
    }

    /// The first `n` words joined by spaces.
    pub(crate) fn text(&self, n: usize) -> String {
        (0..n).map(|i| self.get(i)).collect::<Vec<_>>().join(" ")
    }
}

enum Phase {
    Preamble,
    Tokens,
    Oversized(usize),
    Heartbeats(Duration),
    Closing,
    Stalled,
    Done,
}

pub(crate) struct StreamGen {
    dialect: Dialect,
    words: Words,
    total: usize,
    next: usize,
    phase: Phase,
    per_token: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    waited: bool,
    fault: Option<(usize, Fault)>,
    flushed: bool,
    preamble: Bytes,
    head: Bytes,
    tail: Bytes,
    closing: Bytes,
    /// Told when the stream is dropped before its end.
    cut: Option<Arc<Shared>>,
}

impl Drop for StreamGen {
    fn drop(&mut self) {
        if let Some(shared) = &self.cut
            && !matches!(self.phase, Phase::Done)
        {
            shared.cut.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl MockBody {
    pub(crate) fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full(Some(bytes)),
        }
    }

    pub(crate) fn broken(bytes: &Bytes, then: Fault) -> Self {
        Self {
            kind: Kind::Broken {
                first: Some(bytes.slice(..bytes.len() / 2)),
                then,
                flushed: false,
            },
        }
    }

    pub(crate) fn stream(
        meta: &ReplyMeta,
        words: Words,
        per_token: Duration,
        fault: Option<(usize, Fault)>,
    ) -> Self {
        let (head, tail) = wire::token_frame(meta);
        Self {
            kind: Kind::Stream(Box::new(StreamGen {
                dialect: meta.dialect,
                words: words.clone(),
                total: meta.completion_tokens,
                next: 0,
                phase: Phase::Preamble,
                per_token,
                sleep: None,
                waited: false,
                fault,
                flushed: false,
                preamble: wire::stream_preamble(meta),
                head,
                tail,
                closing: wire::stream_closing(meta, &words.text(meta.completion_tokens)),
                cut: None,
            })),
        }
    }

    /// A stream dropped before its end is counted in `shared`.
    pub(crate) fn count_cut(&mut self, shared: Arc<Shared>) {
        if let Kind::Stream(gen_) = &mut self.kind {
            gen_.cut = Some(shared);
        }
    }
}

type Item = Option<Result<Frame<Bytes>, std::io::Error>>;

fn data(b: Bytes) -> Poll<Item> {
    Poll::Ready(Some(Ok(Frame::data(b))))
}

/// Returns `Pending` after waking the task at once: a flush point.
fn yield_once(cx: &mut Context<'_>) -> Poll<Item> {
    cx.waker().wake_by_ref();
    Poll::Pending
}

impl StreamGen {
    /// Waits `d` on the one reusable timer; Ready once it has passed.
    fn wait(&mut self, cx: &mut Context<'_>, d: Duration) -> Poll<()> {
        if d.is_zero() {
            return Poll::Ready(());
        }
        let deadline = Instant::now() + d;
        let sleep = match &mut self.sleep {
            Some(s) => {
                if !self.waited {
                    s.as_mut().reset(deadline);
                    self.waited = true;
                }
                s
            }
            None => {
                self.waited = true;
                self.sleep
                    .insert(Box::pin(tokio::time::sleep_until(deadline)))
            }
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.waited = false;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Item> {
        loop {
            match self.phase {
                Phase::Preamble => {
                    self.phase = Phase::Tokens;
                    return data(self.preamble.clone());
                }
                Phase::Tokens => {
                    let due = self
                        .fault
                        .as_ref()
                        .is_some_and(|(after, _)| *after <= self.next || self.next >= self.total);
                    if due && matches!(self.fault, Some((_, Fault::Reset))) && !self.flushed {
                        // Give the server one chance to flush what was sent,
                        // so the reset really comes after the first byte.
                        self.flushed = true;
                        return yield_once(cx);
                    }
                    if due && let Some((_, fault)) = self.fault.take() {
                        match fault {
                            Fault::Reset => {
                                self.phase = Phase::Done;
                                return Poll::Ready(Some(Err(reset_error())));
                            }
                            Fault::Stall => {
                                self.phase = Phase::Stalled;
                                continue;
                            }
                            Fault::Truncate => {
                                self.phase = Phase::Done;
                                continue;
                            }
                            Fault::MalformedSse => return data(wire::malformed_sse()),
                            Fault::MalformedJson => {
                                return data(wire::malformed_json_event(self.dialect));
                            }
                            Fault::InbandError => {
                                self.phase = Phase::Done;
                                let seq = wire::RESPONSES_PREAMBLE_EVENTS + self.next;
                                return data(wire::inband_error(self.dialect, seq));
                            }
                            Fault::Heartbeats(every) => {
                                self.phase = Phase::Heartbeats(every);
                                continue;
                            }
                            Fault::OversizedEvent(n) => {
                                self.phase = Phase::Oversized(n);
                                return data(Bytes::from_static(b"data: "));
                            }
                        }
                    }
                    if self.next >= self.total {
                        self.phase = Phase::Closing;
                        continue;
                    }
                    if self.wait(cx, self.per_token).is_pending() {
                        return Poll::Pending;
                    }
                    let word = self.words.get(self.next);
                    let word = if self.next == 0 {
                        serde_json::Value::from(word)
                    } else {
                        serde_json::Value::from(format!(" {word}"))
                    };
                    let word = word.to_string();
                    let mut b = BytesMut::with_capacity(
                        self.head.len() + word.len() + self.tail.len() + 32,
                    );
                    b.put_slice(&self.head);
                    if self.dialect == Dialect::Responses {
                        let seq = wire::RESPONSES_PREAMBLE_EVENTS + self.next;
                        b.put_slice(seq.to_string().as_bytes());
                        b.put_slice(b",\"delta\":");
                    }
                    b.put_slice(word.as_bytes());
                    b.put_slice(&self.tail);
                    self.next += 1;
                    return data(b.freeze());
                }
                Phase::Oversized(left) => {
                    static CHUNK: [u8; 8192] = [b'x'; 8192];
                    if left == 0 {
                        self.phase = Phase::Tokens;
                        return data(Bytes::from_static(b"\n\n"));
                    }
                    let n = left.min(CHUNK.len());
                    self.phase = Phase::Oversized(left - n);
                    return data(Bytes::from_static(&CHUNK[..n]));
                }
                Phase::Heartbeats(every) => {
                    if self.wait(cx, every).is_pending() {
                        return Poll::Pending;
                    }
                    return data(wire::heartbeat(self.dialect));
                }
                Phase::Closing => {
                    self.phase = Phase::Done;
                    return data(self.closing.clone());
                }
                // A scripted stall: nothing will ever wake this body. The
                // reader's own timeout (or a dropped connection) ends it.
                Phase::Stalled => return Poll::Pending,
                Phase::Done => return Poll::Ready(None),
            }
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Broken {
                first,
                then,
                flushed,
            } => {
                if let Some(b) = first.take() {
                    return data(b);
                }
                if !*flushed {
                    *flushed = true;
                    return yield_once(cx);
                }
                match then {
                    Fault::Stall => Poll::Pending,
                    Fault::Truncate => Poll::Ready(None),
                    _ => {
                        *then = Fault::Truncate;
                        Poll::Ready(Some(Err(reset_error())))
                    }
                }
            }
            Kind::Stream(g) => g.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Broken { .. } => false,
            Kind::Stream(g) => matches!(g.phase, Phase::Done),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
