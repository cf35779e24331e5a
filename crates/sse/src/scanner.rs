//! [`EventScanner`]: what kind of events pass by, without decoding them.

/// How many bytes of each line are looked at.
const HEAD: usize = 24;

/// The UTF-8 byte-order mark a stream may start with.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Watches `text/event-stream` bytes as they pass through a layer, split at
/// any frame boundary, and counts the events they complete — without
/// buffering or copying them (it keeps a few bytes of state, only the first
/// bytes of each line are looked at).
///
/// It tells apart what layers need to know:
/// - events that carry data and are not `ping` (progress, for an SSE-aware
///   idle timeout: comment heartbeats and `event: ping` are not progress);
/// - in-band errors after a 200: `event: error` (Anthropic, OpenAI's
///   Responses API), `event: response.failed` (the Responses API), or a
///   `data:` line starting with `{"error"` (OpenAI chat completions), for
///   the circuit breaker.
///
/// Line ends are CR, LF or CRLF (a CRLF split across two chunks counts once),
/// per the WHATWG event-stream grammar.
///
/// # Example
///
/// ```
/// use palisade_sse::EventScanner;
///
/// let mut s = EventScanner::new();
/// let seen = s.feed(b": keep-alive\n\nevent: ping\ndata: {}\n\ndata: {\"error\":{\"message\":\"boom\"}}\n\n");
/// assert_eq!(seen.data_events, 1);
/// assert_eq!(seen.inband_errors, 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct EventScanner {
    /// The first bytes of the current line.
    head: [u8; HEAD],
    /// How many bytes of the current line have been seen (saturating).
    len: usize,
    /// The previous chunk ended with CR: an LF at the start of this one is
    /// the same line end.
    after_cr: bool,
    /// The event being read has a `data` field.
    has_data: bool,
    /// The event being read is a `ping`.
    is_ping: bool,
    /// The event being read is an in-band error.
    is_error: bool,
    /// The stream's first line was read (a byte-order mark may start it).
    past_first_line: bool,
}

/// What a chunk completed, from [`EventScanner::feed`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scanned {
    /// Events that carry data and are not `ping` (in-band errors included).
    pub data_events: usize,
    /// In-band error events.
    pub inband_errors: usize,
}

impl EventScanner {
    /// A scanner at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream; returns what they completed.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Scanned {
        let mut seen = Scanned::default();
        if chunk.is_empty() {
            // Must not forget a pending CR: its LF may be in the next chunk.
            return seen;
        }
        if self.after_cr && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        while let Some(i) = memchr::memchr2(b'\n', b'\r', chunk) {
            self.push(&chunk[..i]);
            self.end_line(&mut seen);
            let crlf = chunk[i] == b'\r';
            if crlf && i + 1 == chunk.len() {
                self.after_cr = true;
            }
            let skip = if crlf && chunk.get(i + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            chunk = &chunk[i + skip..];
        }
        self.push(chunk);
        seen
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.len < HEAD {
            let n = bytes.len().min(HEAD - self.len);
            self.head[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        }
        self.len = self.len.saturating_add(bytes.len());
    }

    /// Ends the current line, counting the event a blank line dispatches.
    fn end_line(&mut self, seen: &mut Scanned) {
        let mut len = self.len;
        let mut head = &self.head[..len.min(HEAD)];
        self.len = 0;
        if !self.past_first_line {
            self.past_first_line = true;
            // A UTF-8 byte-order mark is not part of the first line.
            if let Some(rest) = head.strip_prefix(BOM) {
                head = rest;
                len -= BOM.len();
            }
        }
        if len == 0 {
            if self.has_data && !self.is_ping {
                seen.data_events += 1;
                seen.inband_errors += usize::from(self.is_error);
            }
            self.has_data = false;
            self.is_ping = false;
            self.is_error = false;
            return;
        }
        if head[0] == b':' {
            return;
        }
        let (field, value) = match head.iter().position(|b| *b == b':') {
            Some(c) => (&head[..c], &head[c + 1..]),
            None => (head, &[][..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        // `len` covers the whole line: a longer value is not the keyword.
        let whole = len <= HEAD;
        match field {
            b"data" => {
                self.has_data = true;
                if crate::event::is_error_json(value) {
                    self.is_error = true;
                }
            }
            b"event" => {
                self.is_ping = whole && value == b"ping";
                self.is_error |= whole && (value == b"error" || value == b"response.failed");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn count(chunks: &[&[u8]]) -> usize {
        let mut p = EventScanner::default();
        chunks.iter().map(|c| p.feed(c).data_events).sum()
    }

    #[test]
    fn a_responses_failure_is_an_inband_error() {
        let mut p = EventScanner::default();
        let seen = p.feed(
            b"event: response.output_text.delta\ndata: {\"delta\":\"x\"}\n\n\
              event: response.failed\ndata: {\"type\":\"response.failed\"}\n\n",
        );
        assert_eq!((seen.data_events, seen.inband_errors), (2, 1));
    }

    #[test]
    fn data_events_count_keepalives_do_not() {
        assert_eq!(count(&[b"data: {\"a\":1}\n\n"]), 1);
        assert_eq!(count(&[b": keep-alive\n\n"]), 0);
        assert_eq!(count(&[b"event: ping\ndata: {\"type\": \"ping\"}\n\n"]), 0);
        assert_eq!(count(&[b"event:ping\ndata: x\n\n"]), 0);
        assert_eq!(count(&[b"event: content_block_delta\ndata: {}\n\n"]), 1);
        assert_eq!(count(&[b"event: pinged\ndata: x\n\n"]), 1);
        assert_eq!(count(&[b"id: 1\nretry: 10\n\n"]), 0, "no data field");
        assert_eq!(count(&[b"data: x\r\n\r\n"]), 1);
        assert_eq!(count(&[b"data: x\r\r"]), 1);
        assert_eq!(count(&[b"data: [DONE]\n\ndata: a\n\n"]), 2);
        // A byte-order mark before the first line, whole or split.
        assert_eq!(count(&[b"\xEF\xBB\xBFdata: x\n\n"]), 1);
        assert_eq!(count(&[b"\xEF", b"\xBB\xBFdata: x\n\n"]), 1);
        assert_eq!(count(&[b"\xEF\xBB\xBFevent: ping\ndata: x\n\n"]), 0);
        assert_eq!(
            count(&[b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"]),
            1,
            "only the first line"
        );
    }

    #[test]
    fn an_event_is_counted_when_it_completes() {
        let mut p = EventScanner::default();
        assert_eq!(p.feed(b"data: partial").data_events, 0);
        assert_eq!(p.feed(b" more\n").data_events, 0);
        assert_eq!(p.feed(b"\n").data_events, 1);
        // CR at the end of one chunk, LF at the start of the next: one line end.
        let mut p = EventScanner::default();
        assert_eq!(p.feed(b"data: x\r").data_events, 0);
        assert_eq!(p.feed(b"\ndata: y\r").data_events, 0);
        assert_eq!(p.feed(b"\n\r\n").data_events, 1);
        // ... with an empty frame between the CR and its LF.
        let mut p = EventScanner::default();
        assert_eq!(p.feed(b"event: ping\r").data_events, 0);
        assert_eq!(p.feed(b"").data_events, 0);
        assert_eq!(p.feed(b"\ndata: {}\r\n\r\n").data_events, 0, "still a ping");
    }

    #[test]
    fn long_lines_are_not_buffered() {
        let mut p = EventScanner::default();
        let big = vec![b'x'; 1 << 20];
        assert_eq!(p.feed(b"data: ").data_events, 0);
        assert_eq!(p.feed(&big).data_events, 0);
        assert_eq!(p.feed(b"\n\n").data_events, 1);
        assert!(std::mem::size_of::<EventScanner>() <= 48);
    }

    #[test]
    fn inband_errors_are_flagged() {
        let mut s = EventScanner::new();
        let anthropic = s.feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n");
        assert_eq!((anthropic.data_events, anthropic.inband_errors), (1, 1));
        let openai = s.feed(b"data: { \"error\": {\"message\": \"x\"}}\n\n");
        assert_eq!(openai.inband_errors, 1);
        let normal = s.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"error\"}}]}\n\nevent: errors\ndata: x\n\n");
        assert_eq!((normal.data_events, normal.inband_errors), (2, 0));
    }

    const STREAM: &[u8] = b": hi\r\n\r\nevent: ping\r\ndata: {}\r\n\r\ndata: a\rdata: b\r\revent: delta\ndata: c\n\n: bye\n\nevent: a-very-long-event-name\ndata: d\n\ndata: [DONE]\n\n";

    proptest! {
        /// Splitting a stream at any byte boundaries never changes how many
        /// data events it holds.
        #[test]
        fn splits_do_not_matter(cuts in proptest::collection::vec(0usize..=STREAM.len(), 0..16)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut p = EventScanner::default();
            let mut n = 0;
            let mut prev = 0;
            for c in cuts.into_iter().chain([STREAM.len()]) {
                n += p.feed(&STREAM[prev..c]).data_events;
                prev = c;
            }
            prop_assert_eq!(n, 4, "a+b (one event), delta/c, the long-named event, [DONE]");
        }
    }
}
