//! [`Decoder`]: the WHATWG event-stream parser, fed chunk by chunk.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::SseError;
use crate::event::Event;

/// The default maximum size of one event (data plus the line being read):
/// 8 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// An incremental `text/event-stream` parser.
///
/// Push a chunk with [`push`](Self::push), then take events with
/// [`next_event`](Self::next_event) until it returns `Ok(None)`; repeat. It
/// holds at most the chunk being read, the unfinished line and the current
/// event's data: nothing is queued, and an event larger than
/// [`max_event_bytes`](Self::max_event_bytes) is an error rather than an
/// allocation without bound.
///
/// Conformance (WHATWG HTML, "Interpreting an event stream"): lines end in
/// CRLF, LF or CR (a CRLF split between chunks counts once); one leading BOM
/// is skipped; `:` lines are comments; a field without a colon has an empty
/// value; one space after the colon is removed; `data` lines are joined with
/// LF; `event` sets the type; `id` sets the last event id unless it contains
/// NUL, and persists across events; `retry` is honoured only when all ASCII
/// digits; other fields are ignored; a blank line dispatches the event unless
/// no `data` line was seen; an unterminated event at the end of the stream is
/// discarded. Bytes are not decoded: [`Event::data_str`] validates UTF-8 on
/// demand and [`Event::data_lossy`] replaces invalid sequences as the
/// standard does.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use palisade_sse::Decoder;
///
/// let mut d = Decoder::new();
/// d.push(Bytes::from_static(b"event: greet\ndata: hel"));
/// assert!(d.next_event().unwrap().is_none()); // needs more input
/// d.push(Bytes::from_static(b"lo\n\n"));
/// let ev = d.next_event().unwrap().unwrap();
/// assert_eq!(ev.event(), Some("greet"));
/// assert_eq!(ev.data(), "hello");
/// ```
#[derive(Debug)]
pub struct Decoder {
    /// The chunk being read, from `pos`.
    cur: Bytes,
    pos: usize,
    /// The start of a line that did not end in the previous chunk(s).
    partial: BytesMut,
    /// The previous chunk ended in CR: a leading LF is part of that line end.
    after_cr: bool,
    /// Whether the first line (which may start with a BOM) was seen.
    started: bool,
    data: Data,
    event: Option<Bytes>,
    last_id: Option<Bytes>,
    /// A `retry` seen since the last dispatched event.
    retry: Option<Duration>,
    /// The stream's reconnection time: the last valid `retry`.
    reconnect: Option<Duration>,
    max: usize,
}

#[derive(Debug)]
enum Data {
    None,
    One(Bytes),
    Many(BytesMut),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::One(b) => b.len(),
            Self::Many(m) => m.len(),
        }
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        Self {
            cur: Bytes::new(),
            pos: 0,
            partial: BytesMut::new(),
            after_cr: false,
            started: false,
            data: Data::None,
            event: None,
            last_id: None,
            retry: None,
            reconnect: None,
            max: DEFAULT_MAX_EVENT_BYTES,
        }
    }

    /// Sets the largest event accepted, in bytes of data plus the line being
    /// read.
    #[must_use]
    pub fn max_event_bytes(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The last event id seen (it persists across events).
    pub fn last_event_id(&self) -> Option<&Bytes> {
        self.last_id.as_ref()
    }

    /// The reconnection time the stream set with its last valid `retry`.
    pub fn reconnection_time(&self) -> Option<Duration> {
        self.reconnect
    }

    /// True when a pushed chunk still has unread bytes: call
    /// [`next_event`](Self::next_event) before pushing another.
    pub fn has_input(&self) -> bool {
        self.pos < self.cur.len()
    }

    /// Hands the decoder the next chunk of the stream.
    ///
    /// Call [`next_event`](Self::next_event) until it returns `Ok(None)`
    /// first; an unread rest of the previous chunk is kept (joined with the
    /// new chunk, a copy) rather than lost.
    pub fn push(&mut self, chunk: Bytes) {
        if self.has_input() {
            let mut joined = BytesMut::with_capacity(self.cur.len() - self.pos + chunk.len());
            joined.put_slice(&self.cur[self.pos..]);
            joined.put_slice(&chunk);
            self.cur = joined.freeze();
        } else {
            self.cur = chunk;
        }
        self.pos = 0;
    }

    /// The next complete event, `Ok(None)` when more input is needed.
    ///
    /// # Errors
    ///
    /// [`SseError`] when an event grows past the size limit; the decoder
    /// should not be used after that.
    pub fn next_event(&mut self) -> Result<Option<Event>, SseError> {
        loop {
            let Some(line) = self.next_line()? else {
                return Ok(None);
            };
            if line.is_empty() {
                if let Some(ev) = self.dispatch() {
                    return Ok(Some(ev));
                }
                continue;
            }
            self.field(line)?;
        }
    }

    /// Ends the stream: the unterminated event, if any, is discarded (as the
    /// standard requires). The decoder is then as new, for another stream.
    pub fn finish(&mut self) {
        let max = self.max;
        *self = Self::new();
        self.max = max;
    }

    fn next_line(&mut self) -> Result<Option<Bytes>, SseError> {
        let chunk = &self.cur[self.pos..];
        if chunk.is_empty() {
            return Ok(None);
        }
        let mut start = 0;
        if self.after_cr {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                start = 1;
            }
        }
        let rest = &chunk[start..];
        let Some(i) = memchr::memchr2(b'\n', b'\r', rest) else {
            // No line end in this chunk: keep the start of the line.
            if self.partial.len() + rest.len() + self.data.len() > self.max {
                return Err(SseError::too_large(self.max));
            }
            self.partial.extend_from_slice(rest);
            self.pos = self.cur.len();
            return Ok(None);
        };
        let line_start = self.pos + start;
        let line_end = line_start + i;
        let mut next = line_end + 1;
        if rest[i] == b'\r' {
            match self.cur.get(next) {
                Some(b'\n') => next += 1,
                Some(_) => {}
                None => self.after_cr = true,
            }
        }
        let mut line = if self.partial.is_empty() {
            self.cur.slice(line_start..line_end)
        } else {
            self.partial
                .extend_from_slice(&self.cur[line_start..line_end]);
            self.partial.split().freeze()
        };
        self.pos = next;
        if !self.started {
            self.started = true;
            if line.starts_with(BOM) {
                line = line.slice(BOM.len()..);
            }
        }
        Ok(Some(line))
    }

    fn field(&mut self, line: Bytes) -> Result<(), SseError> {
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match memchr::memchr(b':', &line) {
            Some(c) => {
                let v = if line.get(c + 1) == Some(&b' ') {
                    c + 2
                } else {
                    c + 1
                };
                (&line[..c], line.slice(v..))
            }
            None => (&line[..], Bytes::new()),
        };
        match name {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max {
                    return Err(SseError::too_large(self.max));
                }
                self.data = match std::mem::replace(&mut self.data, Data::None) {
                    Data::None => Data::One(value),
                    Data::One(first) => {
                        let mut m = BytesMut::with_capacity(first.len() + 1 + value.len());
                        m.put_slice(&first);
                        m.put_u8(b'\n');
                        m.put_slice(&value);
                        Data::Many(m)
                    }
                    Data::Many(mut m) => {
                        m.put_u8(b'\n');
                        m.put_slice(&value);
                        Data::Many(m)
                    }
                };
            }
            b"event" => self.event = Some(value),
            b"id" if memchr::memchr(0, &value).is_none() => self.last_id = Some(value),
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let ms = value.iter().fold(0u64, |acc, d| {
                    acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                self.retry = Some(Duration::from_millis(ms));
                self.reconnect = self.retry;
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Option<Event> {
        let data = match std::mem::replace(&mut self.data, Data::None) {
            Data::None => {
                self.event = None;
                return None;
            }
            Data::One(b) => b,
            Data::Many(m) => m.freeze(),
        };
        Some(Event::new(
            self.event.take(),
            data,
            self.last_id.clone(),
            self.retry.take(),
        ))
    }
}
