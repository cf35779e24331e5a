//! Relaying an upstream's event stream to the caller.
//!
//! A pump task reads the upstream's events into a channel of one slot, and
//! the relay (the caller's body) takes them from it when the caller's
//! connection asks for more bytes: a slow reader slows the upstream read
//! (backpressure), and memory per stream stays bounded (two events of at
//! most the decoder's `max_event_bytes`, plus their translation).
//!
//! The pump also holds the caller to the upstream's timeouts: an event the
//! caller leaves unread for the upstream's `idle`, or past the request's
//! `total`, ends the pump, which drops the upstream stream at once (a caller
//! that stopped reading must not hold an upstream connection open), and the
//! caller, should it read again, gets an error event. A caller that goes
//! away (its connection closed, an HTTP/2 reset) releases the upstream
//! stream at once too, without waiting for the next upstream event.
//!
//! Events pass through as they came when the upstream speaks the caller's
//! API, and otherwise through the upstream API's stream reader and the
//! caller API's stream writer (`palisade_providers::dialect`: no code per
//! pair of APIs). Usage is read from the upstream stack's own observation
//! of the stream (decoded once, by the innermost layer that watches it).
//! A stream that fails after the first byte — a body error, a timeout, a
//! malformed event, an end without the terminator (`data: [DONE]` /
//! `message_stop`) — ends with an error event in the caller's format; an
//! upstream's own in-band error event is relayed and ends the stream too.
//! Every event arrives with the upstream's key already scrubbed out of its
//! data (`upstream::Events`). Nothing is ever replayed: once the first event went out, no
//! retry or fallback happens.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_core::Stream;
use futures_util::StreamExt;
use http::StatusCode;
use http_body::Frame;
use palisade_core::ErrorKind;
use palisade_providers::Api;
use palisade_providers::dialect::{StreamPosition, StreamReader, StreamWriter};
use palisade_providers::observe::{Observation, ResponseObserver};
use palisade_sse::{Event, SseError};
use tokio::sync::mpsc;

use crate::attempt::Lost;
use crate::metrics::Metrics;
use crate::upstream::{Events, Upstream};

/// How events are carried across.
enum Mode {
    /// Same API on both sides: relayed as they came, the position noted
    /// (a failure continues the stream's numbering).
    Pass(StreamPosition),
    /// Read in the upstream's API, written in the caller's.
    Translate {
        read: Box<dyn StreamReader>,
        write: Box<dyn StreamWriter>,
    },
}

/// Where a stream's usage is read.
enum Seen {
    /// The upstream stack's observation (its trace layer's).
    Stack(Observation),
    /// The relay's own, when the stack observes nothing.
    Own(Box<ResponseObserver>),
}

/// The two ends of a relayed stream.
pub(crate) struct Sides<'a> {
    /// The caller's API.
    pub(crate) caller: Api,
    /// The API the upstream was called in.
    pub(crate) upstream_api: Api,
    /// The caller's request (its stream options).
    pub(crate) caller_request: &'a serde_json::Value,
    /// The upstream stack's observation of the answer, if it has one.
    pub(crate) observation: Option<Observation>,
    /// The caller's request fields the translation left out.
    pub(crate) request_lost: Vec<String>,
}

/// When a stream must end whatever the upstream does.
pub(crate) struct Bounds {
    /// Set when the gateway's shutdown grace period is over.
    pub(crate) cut: tokio::sync::watch::Receiver<bool>,
    /// The request's total deadline (the upstream's `total`).
    pub(crate) deadline: tokio::time::Instant,
    /// When the request came in (for the time to its first token).
    pub(crate) started: std::time::Instant,
}

/// The caller's response body for a streamed call.
pub(crate) struct Relay {
    events: mpsc::Receiver<Result<Event, SseError>>,
    /// Why the pump stopped before the upstream stream ended, if it did.
    stopped: Arc<OnceLock<String>>,
    mode: Mode,
    upstream_api: Api,
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    out: VecDeque<Bytes>,
    /// Usage and finish reasons, as the stream goes by.
    seen: Seen,
    /// What the translations left out (the answer's part filled in at the
    /// end), reported on the request's span.
    lost: Lost,
    span: tracing::Span,
    /// When the request came in, until the first event carrying content
    /// (`Api::carries_content`) records the time to first token.
    waiting_for_content: Option<std::time::Instant>,
    terminated: bool,
    done: bool,
    reported: bool,
    /// Completes when the gateway's shutdown grace period is over.
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("upstream", &self.upstream.name)
            .field("done", &self.done)
            .finish()
    }
}

impl Relay {
    /// A relay whose first upstream event, `first`, was already read.
    pub(crate) fn new(
        events: Events,
        first: Event,
        sides: Sides<'_>,
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        bounds: Bounds,
    ) -> Self {
        let Sides {
            caller,
            upstream_api,
            caller_request,
            observation,
            request_lost,
        } = sides;
        let Bounds {
            mut cut,
            deadline,
            started,
        } = bounds;
        let (tx, rx) = mpsc::channel(1);
        let stopped = Arc::new(OnceLock::new());
        tokio::spawn(pump(events, tx, upstream.idle, deadline, stopped.clone()));
        let mode = match (upstream_api.dialect(), caller.dialect()) {
            (Some(read), Some(write)) if upstream_api != caller => Mode::Translate {
                read: read.stream_reader(),
                write: write.stream_writer(caller_request),
            },
            // The attempt translates only between APIs that have dialects.
            _ => Mode::Pass(StreamPosition::new(caller)),
        };
        let seen = match observation {
            Some(o) => Seen::Stack(o),
            None => Seen::Own(Box::new(ResponseObserver::for_events(upstream_api))),
        };
        let mut relay = Self {
            events: rx,
            stopped,
            mode,
            upstream_api,
            upstream,
            metrics,
            out: VecDeque::new(),
            seen,
            lost: Lost {
                caller,
                request: request_lost,
                upstream_api,
                answer: Vec::new(),
            },
            span: tracing::Span::current(),
            waiting_for_content: Some(started),
            terminated: false,
            done: false,
            reported: false,
            cut: Box::pin(async move {
                // A dropped sender (the gateway gone) cuts too.
                let _ = cut.wait_for(|c| *c).await;
            }),
        };
        relay.on_event(first);
        relay
    }

    fn fail(&mut self, status: StatusCode, message: String) {
        tracing::warn!(upstream = %self.upstream.name, reason = %message, "stream from upstream failed after the first byte");
        match &mut self.mode {
            Mode::Pass(pos) => self.out.push_back(pos.failure(status, &message)),
            Mode::Translate { write, .. } => {
                let mut out = Vec::new();
                write.fail(status, &message, &mut out);
                self.out.extend(out);
            }
        }
        self.done = true;
    }

    fn on_event(&mut self, ev: Event) {
        if let Seen::Own(o) = &mut self.seen {
            o.on_event(&ev);
        }
        if let Some(started) = self.waiting_for_content
            && self.upstream_api.carries_content(&ev)
        {
            self.waiting_for_content = None;
            self.metrics.first_token(started.elapsed());
        }
        if self.upstream_api.is_inband_error(&ev) {
            // Scrubbed already (`upstream::Events`).
            tracing::warn!(upstream = %self.upstream.name, "upstream sent an error event mid-stream");
            if let Mode::Pass(_) = self.mode {
                self.out.push_back(encode(ev.event(), ev.data()));
                self.done = true;
            } else {
                let msg = inband_message(ev.data());
                let m = format!(
                    "upstream `{}` reported an error mid-stream: {msg}",
                    self.upstream.name
                );
                self.fail(StatusCode::BAD_GATEWAY, m);
            }
            return;
        }
        let end = self.upstream_api.is_terminator(&ev);
        let read = match &mut self.mode {
            Mode::Pass(pos) => {
                pos.observe(&ev);
                self.out.push_back(encode(ev.event(), ev.data()));
                Ok(())
            }
            Mode::Translate { read, write } => read.read(&ev).map(|deltas| {
                let mut out = Vec::new();
                for d in deltas {
                    write.write(d, &mut out);
                }
                self.out.extend(out);
            }),
        };
        match read {
            Ok(()) if end => self.terminated = true,
            Ok(()) => {}
            Err(e) => {
                let m = format!(
                    "upstream `{}` sent a malformed stream event ({e}); the stream is cut here",
                    self.upstream.name
                );
                self.fail(StatusCode::BAD_GATEWAY, m);
            }
        }
    }

    fn on_error(&mut self, e: SseError) {
        let (status, what) = match ErrorKind::of(&e) {
            Some(ErrorKind::Timeout) => (StatusCode::GATEWAY_TIMEOUT, "timed out"),
            _ if e.is_too_large() => (StatusCode::BAD_GATEWAY, "sent an oversized event"),
            _ => (StatusCode::BAD_GATEWAY, "failed"),
        };
        let m = format!(
            "the stream from upstream `{}` {what} after the first byte: {e}",
            self.upstream.name
        );
        self.fail(status, m);
    }

    fn report(&mut self) {
        if !self.reported {
            self.reported = true;
            let name = &self.upstream.name;
            let s = match &mut self.seen {
                Seen::Stack(o) => o.summary(),
                Seen::Own(o) => o.finish(),
            };
            if let Mode::Translate { read, write } = &mut self.mode {
                self.lost.answer.extend(read.untranslated());
                self.lost.answer.extend(write.untranslated());
            }
            self.lost.report(&self.metrics, &self.span);
            self.metrics
                .add_tokens(name, "input", s.input_tokens.unwrap_or(0));
            self.metrics
                .add_tokens(name, "output", s.output_tokens.unwrap_or(0));
        }
    }
}

/// Moves the upstream's events into `tx` until the stream ends, the caller
/// goes away, or the caller leaves an event unread for `idle` or past
/// `deadline` (then says why in `stopped`). Returning drops the upstream
/// stream.
async fn pump(
    mut events: Events,
    tx: mpsc::Sender<Result<Event, SseError>>,
    idle: Duration,
    deadline: tokio::time::Instant,
    stopped: Arc<OnceLock<String>>,
) {
    loop {
        let next = tokio::select! {
            biased;
            () = tx.closed() => return,
            next = events.next() => next,
        };
        let Some(item) = next else { return };
        let by = (tokio::time::Instant::now() + idle).min(deadline);
        match tokio::time::timeout_at(by, tx.send(item)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                let why = if by == deadline {
                    "the caller was still reading the stream at the upstream's total timeout"
                } else {
                    "the caller left the stream unread for the upstream's idle timeout"
                };
                tracing::info!(reason = why, "releasing the upstream stream");
                let _ = stopped.set(format!("{why}; the upstream stream was closed"));
                return;
            }
        }
    }
}

/// The message of an in-band error event, in any API's shape: `error.message`
/// (chat completions, messages), `message` (a Responses `error` event),
/// `response.error.message` (`response.failed`), else the data itself.
fn inband_message(data: &Bytes) -> String {
    let v: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
    ["/error/message", "/message", "/response/error/message"]
        .iter()
        .find_map(|p| v.pointer(p).and_then(serde_json::Value::as_str))
        .map_or_else(|| String::from_utf8_lossy(data).into_owned(), str::to_owned)
}

/// `event: …\ndata: …\n\n`, one `data:` line per line of `data`.
fn encode(event: Option<&str>, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 32);
    if let Some(e) = event {
        b.put_slice(b"event: ");
        b.put_slice(e.as_bytes());
        b.put_u8(b'\n');
    }
    for line in data.split(|c| *c == b'\n') {
        b.put_slice(b"data: ");
        b.put_slice(line);
        b.put_u8(b'\n');
    }
    b.put_u8(b'\n');
    b.freeze()
}

impl Stream for Relay {
    type Item = Result<Frame<Bytes>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.done {
                this.report();
                return Poll::Ready(None);
            }
            if this.terminated {
                // Read the upstream body to its end when it is already there,
                // so that the breaker records the call's success; do not wait
                // for it (the caller has everything).
                match this.events.poll_recv(cx) {
                    Poll::Ready(Some(Ok(_))) => continue,
                    _ => {
                        this.done = true;
                        continue;
                    }
                }
            }
            if this.cut.as_mut().poll(cx).is_ready() {
                this.fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the gateway is shutting down and its grace period is over; the answer is cut here: retry the request".to_owned(),
                );
                continue;
            }
            match ready!(this.events.poll_recv(cx)) {
                Some(Ok(ev)) => this.on_event(ev),
                Some(Err(e)) => this.on_error(e),
                None if this.stopped.get().is_some() => {
                    let m = this.stopped.get().cloned().unwrap_or_default();
                    this.fail(StatusCode::GATEWAY_TIMEOUT, m);
                }
                None => {
                    let m = format!(
                        "upstream `{}` ended the stream without its terminator ({}); the answer is truncated",
                        this.upstream.name,
                        this.upstream_api.terminator()
                    );
                    this.fail(StatusCode::BAD_GATEWAY, m);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_data_is_re_encoded_line_by_line() {
        assert_eq!(
            encode(Some("x"), b"a\nb"),
            Bytes::from_static(b"event: x\ndata: a\ndata: b\n\n")
        );
        assert_eq!(
            encode(None, b"[DONE]"),
            Bytes::from_static(b"data: [DONE]\n\n")
        );
    }
}
