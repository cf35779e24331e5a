//! Just enough of `text/event-stream` to tell data from keep-alives.
//!
//! The SSE-aware idle timeout must not count comment lines (`: keep-alive`)
//! or `ping` events (Anthropic sends `event: ping` with a `data:` line) as
//! progress. This scanner sees the body's bytes as they pass, split at any
//! frame boundary, and reports whether a chunk completed an event that
//! carries data and is not a `ping`. It keeps a few bytes of state, never a
//! buffer: only the first [`HEAD`] bytes of the current line are looked at.
//!
//! Line ends are CR, LF or CRLF (a CRLF split across two chunks counts once),
//! per the WHATWG event-stream grammar.

const HEAD: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct Progress {
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
}

impl Progress {
    /// Feeds a chunk; returns how many events carrying data (and not `ping`)
    /// it completed.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> usize {
        let mut progressed = 0;
        if chunk.is_empty() {
            // Must not forget a pending CR: its LF may be in the next chunk.
            return 0;
        }
        if self.after_cr && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        while let Some(i) = memchr::memchr2(b'\n', b'\r', chunk) {
            self.push(&chunk[..i]);
            progressed += usize::from(self.end_line());
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
        progressed
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.len < HEAD {
            let n = bytes.len().min(HEAD - self.len);
            self.head[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        }
        self.len = self.len.saturating_add(bytes.len());
    }

    /// Ends the current line; true when it dispatched a data event.
    fn end_line(&mut self) -> bool {
        let len = self.len;
        let seen = &self.head[..len.min(HEAD)];
        self.len = 0;
        if len == 0 {
            let dispatched = self.has_data && !self.is_ping;
            self.has_data = false;
            self.is_ping = false;
            return dispatched;
        }
        if seen[0] == b':' {
            return false;
        }
        let (field, value) = match seen.iter().position(|b| *b == b':') {
            Some(c) => (&seen[..c], &seen[c + 1..]),
            None => (seen, &[][..]),
        };
        match field {
            b"data" => self.has_data = true,
            b"event" => {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                // `len` covers the whole line: a longer value is not "ping".
                let whole = len <= HEAD;
                self.is_ping = whole && value == b"ping";
            }
            _ => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn count(chunks: &[&[u8]]) -> usize {
        let mut p = Progress::default();
        chunks.iter().map(|c| p.feed(c)).sum()
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
    }

    #[test]
    fn an_event_is_counted_when_it_completes() {
        let mut p = Progress::default();
        assert_eq!(p.feed(b"data: partial"), 0);
        assert_eq!(p.feed(b" more\n"), 0);
        assert_eq!(p.feed(b"\n"), 1);
        // CR at the end of one chunk, LF at the start of the next: one line end.
        let mut p = Progress::default();
        assert_eq!(p.feed(b"data: x\r"), 0);
        assert_eq!(p.feed(b"\ndata: y\r"), 0);
        assert_eq!(p.feed(b"\n\r\n"), 1);
        // ... with an empty frame between the CR and its LF.
        let mut p = Progress::default();
        assert_eq!(p.feed(b"event: ping\r"), 0);
        assert_eq!(p.feed(b""), 0);
        assert_eq!(p.feed(b"\ndata: {}\r\n\r\n"), 0, "still a ping");
    }

    #[test]
    fn long_lines_are_not_buffered() {
        let mut p = Progress::default();
        let big = vec![b'x'; 1 << 20];
        assert_eq!(p.feed(b"data: "), 0);
        assert_eq!(p.feed(&big), 0);
        assert_eq!(p.feed(b"\n\n"), 1);
        assert!(std::mem::size_of::<Progress>() <= 48);
    }

    const STREAM: &[u8] = b": hi\r\n\r\nevent: ping\r\ndata: {}\r\n\r\ndata: a\rdata: b\r\revent: delta\ndata: c\n\n: bye\n\nevent: a-very-long-event-name\ndata: d\n\ndata: [DONE]\n\n";

    proptest! {
        /// Splitting a stream at any byte boundaries never changes how many
        /// data events it holds.
        #[test]
        fn splits_do_not_matter(cuts in proptest::collection::vec(0usize..=STREAM.len(), 0..16)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut p = Progress::default();
            let mut n = 0;
            let mut prev = 0;
            for c in cuts.into_iter().chain([STREAM.len()]) {
                n += p.feed(&STREAM[prev..c]);
                prev = c;
            }
            prop_assert_eq!(n, 4, "a+b (one event), delta/c, the long-named event, [DONE]");
        }
    }
}
