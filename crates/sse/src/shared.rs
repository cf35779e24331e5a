//! [`SharedScan`]: one [`EventScanner`] per response, shared by every layer
//! that counts its events.

use std::sync::{Arc, Mutex, PoisonError};

use crate::scanner::{EventScanner, Scanned};

/// One scan of a response's event stream, kept in the response's
/// extensions, so that the layers counting its events (an SSE-aware idle
/// timeout, a breaker watching for in-band errors) scan the bytes once
/// between them, however many there are.
///
/// The first layer to ask ([`SharedScan::view`], the innermost one: a
/// response reaches the inner layers first) makes it and feeds it; every
/// layer outside reads what each frame added. Body wrappers are polled on
/// one task, innermost first, so a frame is counted before an outer layer
/// sees it; the lock is never contended. A layer between two viewers must
/// hand the event stream on unchanged (palisade's layers do).
///
/// ```
/// use palisade_sse::SharedScan;
///
/// let mut ext = http::Extensions::new();
/// let mut inner = SharedScan::view(&mut ext); // makes it: scans
/// let mut outer = SharedScan::view(&mut ext); // finds it: reads
/// let frame = b"data: {}\n\nevent: error\ndata: {}\n\n";
/// assert_eq!(inner.feed(frame).data_events, 2);
/// let seen = outer.feed(frame); // not scanned again
/// assert_eq!((seen.data_events, seen.inband_errors), (2, 1));
/// ```
#[derive(Clone, Debug, Default)]
pub struct SharedScan(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    scanner: EventScanner,
    totals: Scanned,
}

/// One layer's view of a [`SharedScan`].
#[derive(Debug)]
pub struct ScanView {
    shared: SharedScan,
    /// This layer made the scan and feeds it; else it reads.
    feeds: bool,
    /// The totals this view has reported.
    seen: Scanned,
}

impl SharedScan {
    /// This layer's view of the response's scan: the one in `extensions`
    /// (made by a layer inside), or a new one left there for the layers
    /// outside.
    pub fn view(extensions: &mut http::Extensions) -> ScanView {
        let (shared, feeds) = match extensions.get::<SharedScan>() {
            Some(s) => (s.clone(), false),
            None => {
                let s = SharedScan::default();
                extensions.insert(s.clone());
                (s, true)
            }
        };
        ScanView {
            shared,
            feeds,
            seen: Scanned::default(),
        }
    }
}

impl ScanView {
    /// What the next chunk of the stream completed: scanned by the view
    /// that feeds; read from the shared totals by the others (`chunk` is
    /// then not looked at).
    pub fn feed(&mut self, chunk: &[u8]) -> Scanned {
        let mut state = self.shared.0.lock().unwrap_or_else(PoisonError::into_inner);
        if self.feeds {
            let s = state.scanner.feed(chunk);
            state.totals.data_events += s.data_events;
            state.totals.inband_errors += s.inband_errors;
        }
        let t = state.totals;
        drop(state);
        let new = Scanned {
            data_events: t.data_events - self.seen.data_events,
            inband_errors: t.inband_errors - self.seen.inband_errors,
        };
        self.seen = t;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outer_view_sees_what_each_frame_added_once() {
        let mut ext = http::Extensions::new();
        let mut inner = SharedScan::view(&mut ext);
        let mut outer = SharedScan::view(&mut ext);
        let frames: [&[u8]; 3] = [
            b"data: a\n",
            b"\ndata: {\"error\":{}}\n\n: hi\n\n",
            b"event: ping\ndata: {}\n\n",
        ];
        let mut by_outer = Vec::new();
        for f in frames {
            inner.feed(f);
            let s = outer.feed(f);
            by_outer.push((s.data_events, s.inband_errors));
        }
        assert_eq!(by_outer, [(0, 0), (2, 1), (0, 0)]);
    }
}
