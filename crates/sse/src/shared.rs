//! [`SharedScan`]: one pass over a response's event stream per response,
//! shared by every layer that counts its events or reads them.

use std::any::Any;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Buf, Bytes};

use crate::decoder::Decoder;
use crate::event::Event;
use crate::scanner::{EventScanner, Scanned};

/// Frames a [`Subscription`] may let go by with events untaken before it
/// is dropped as lagging (its reader stopped reading; the stream goes on).
const MAX_UNDRAINED_FRAMES: u32 = 64;

/// One pass over a response's event stream, kept in the response's
/// extensions, so that the layers counting its events (an SSE-aware idle
/// timeout, a breaker watching for in-band errors) and a layer reading them
/// (an observer looking for usage, [`SharedScan::subscribe`]) go over the
/// bytes once between them, however many they are.
///
/// The first layer to ask ([`SharedScan::view`], the innermost one: a
/// response reaches the inner layers first) makes it and feeds it; every
/// layer outside reads what each frame added. Body wrappers are polled on
/// one task, innermost first, so a frame is counted before an outer layer
/// sees it; the lock is never contended. A layer between two viewers must
/// hand the event stream on unchanged (palisade's layers do).
///
/// The pass is a scan ([`EventScanner`]: counts, no copy) unless a layer
/// outside [subscribed](SharedScan::subscribe) to the events before the
/// first frame: then it is a full decoding ([`Decoder`]), counted from the
/// events it yields, which the subscriber takes instead of decoding the
/// stream a second time.
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
    pass: Pass,
    totals: Scanned,
    /// A feeding view exists (and has not been dropped).
    feeder: bool,
    /// A chunk was fed: too late to subscribe.
    started: bool,
    /// Each subscriber's untaken events, by its id; `None` once it was
    /// dropped or stopped.
    subscribers: Vec<Option<Queue>>,
    /// The largest event size a subscriber accepts.
    max_event_bytes: usize,
}

#[derive(Debug, Default)]
struct Queue {
    events: Vec<Event>,
    /// Frames fed since the subscriber last took its events.
    undrained: u32,
}

#[derive(Debug)]
enum Pass {
    Scan(EventScanner),
    Decode(Box<Decoder>),
}

impl Default for Pass {
    fn default() -> Self {
        Self::Scan(EventScanner::new())
    }
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

/// A layer's claim on the events of a [`SharedScan`]
/// ([`SharedScan::subscribe`]).
#[derive(Debug)]
pub struct Subscription {
    shared: SharedScan,
    id: usize,
    max_event_bytes: usize,
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
        if feeds {
            shared.lock().feeder = true;
        }
        ScanView {
            shared,
            feeds,
            seen: Scanned::default(),
        }
    }

    /// The events of the response's stream as a layer inside decodes them,
    /// so this layer need not decode it again: `Some` when a layer inside
    /// feeds a scan kept in `extensions` and no frame went by yet; else
    /// `None` (decode the stream yourself). Every subscriber gets every
    /// event.
    ///
    /// The decoding accepts events up to the largest `max_event_bytes` of
    /// its subscribers; a larger one stops it: each subscription then
    /// reports [`Drained::Stopped`], and the layers counting events go on
    /// with a scan. A subscriber that lets 64 frames go by without taking
    /// its events is dropped the same way (memory stays bounded).
    ///
    /// ```
    /// use palisade_sse::{Drained, SharedScan};
    ///
    /// let mut ext = http::Extensions::new();
    /// let mut inner = SharedScan::view(&mut ext);
    /// let events = SharedScan::subscribe(&ext, 1 << 20).expect("a layer inside feeds it");
    /// inner.feed(b"event: delta\ndata: {\"n\":1}\n\ndata: [DONE]\n\n");
    /// let mut data = Vec::new();
    /// let drained = events.drain(|ev| data.push(ev.data().clone()));
    /// assert_eq!(drained, Drained::Events);
    /// assert_eq!(data, ["{\"n\":1}", "[DONE]"]);
    /// ```
    pub fn subscribe(
        extensions: &http::Extensions,
        max_event_bytes: usize,
    ) -> Option<Subscription> {
        let shared = extensions.get::<SharedScan>()?;
        let mut state = shared.lock();
        if !state.feeder || state.started {
            return None;
        }
        state.subscribers.push(Some(Queue::default()));
        state.max_event_bytes = state.max_event_bytes.max(max_event_bytes);
        let id = state.subscribers.len() - 1;
        drop(state);
        Some(Subscription {
            shared: shared.clone(),
            id,
            max_event_bytes,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A chunk to feed: borrowed, or a `Bytes` the decoder may keep without a
/// copy.
enum Chunk<'a> {
    Slice(&'a [u8]),
    Bytes(&'a Bytes),
}

impl Chunk<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Slice(s) => s,
            Chunk::Bytes(b) => b,
        }
    }
}

impl State {
    fn feed(&mut self, chunk: Chunk<'_>) -> Scanned {
        if !self.started {
            self.started = true;
            if self.subscribers.iter().any(Option::is_some) {
                let max = self.max_event_bytes;
                self.pass = Pass::Decode(Box::new(Decoder::new().max_event_bytes(max)));
            }
        }
        let decoder = match &mut self.pass {
            Pass::Scan(scanner) => return scanner.feed(chunk.as_slice()),
            Pass::Decode(decoder) => decoder,
        };
        for q in self.subscribers.iter_mut() {
            if q.as_ref()
                .is_some_and(|q| q.undrained >= MAX_UNDRAINED_FRAMES)
            {
                *q = None;
            } else if let Some(q) = q.as_mut().filter(|q| !q.events.is_empty()) {
                q.undrained += 1;
            }
        }
        let mut seen = Scanned::default();
        decoder.push(match chunk {
            Chunk::Bytes(b) => b.clone(),
            Chunk::Slice(s) => Bytes::copy_from_slice(s),
        });
        loop {
            match decoder.next_event() {
                Ok(Some(ev)) => {
                    // The scanner's rules: a ping is not progress.
                    if !ev.is("ping") {
                        seen.data_events += 1;
                        seen.inband_errors += usize::from(ev.is_inband_error());
                    }
                    hand_over(&mut self.subscribers, ev);
                }
                Ok(None) => return seen,
                Err(_) => {
                    // Too large: the subscribers stop; counting goes on with
                    // a scan from here (the rest of that event is not
                    // counted).
                    self.pass = Pass::Scan(EventScanner::new());
                    self.subscribers.iter_mut().for_each(|q| *q = None);
                    return seen;
                }
            }
        }
    }
}

/// Gives `ev` to every live subscriber: a copy (reference counts) to each
/// but the last, which takes it.
fn hand_over(subscribers: &mut [Option<Queue>], ev: Event) {
    let Some(last) = subscribers.iter().rposition(Option::is_some) else {
        return;
    };
    for q in subscribers[..last].iter_mut().flatten() {
        q.events.push(ev.clone());
    }
    if let Some(q) = &mut subscribers[last] {
        q.events.push(ev);
    }
}

impl ScanView {
    /// What the next chunk of the stream completed: scanned by the view
    /// that feeds; read from the shared totals by the others (`chunk` is
    /// then not looked at).
    ///
    /// When a layer outside subscribed to the events, the feeding view
    /// decodes, keeping a copy of `chunk`; [`feed_buf`](Self::feed_buf)
    /// spares the copy when the frame is `Bytes`.
    pub fn feed(&mut self, chunk: &[u8]) -> Scanned {
        self.feed_chunk(Chunk::Slice(chunk))
    }

    /// [`feed`](Self::feed) with a frame's data as it is: a `Bytes` (what
    /// hyper and palisade hand on) is kept by reference count, not copied,
    /// where the decoder keeps bytes; another buffer is fed by its chunks.
    /// A buffer of more chunks than can be looked at (64) is fed by its
    /// first 64 and counts as one data event at least: progress, rather
    /// than a live stream taken for a stalled one.
    pub fn feed_buf<D: Buf + 'static>(&mut self, data: &D) -> Scanned {
        if let Some(bytes) = (data as &dyn Any).downcast_ref::<Bytes>() {
            return self.feed_chunk(Chunk::Bytes(bytes));
        }
        let mut slices = [std::io::IoSlice::new(&[]); 64];
        let n = data.chunks_vectored(&mut slices);
        let mut seen = Scanned::default();
        let mut fed = 0;
        for slice in &slices[..n] {
            let s = self.feed_chunk(Chunk::Slice(slice));
            seen.data_events += s.data_events;
            seen.inband_errors += s.inband_errors;
            fed += slice.len();
        }
        if fed < data.remaining() {
            seen.data_events = seen.data_events.max(1);
        }
        seen
    }

    fn feed_chunk(&mut self, chunk: Chunk<'_>) -> Scanned {
        let mut state = self.shared.lock();
        if self.feeds {
            let s = state.feed(chunk);
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

impl Drop for ScanView {
    fn drop(&mut self) {
        if self.feeds {
            self.shared.lock().feeder = false;
        }
    }
}

/// What [`Subscription::drain`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drained {
    /// The events decoded since the last drain (maybe none) were handed over.
    Events,
    /// Decoding stopped (an event over the size limit), or this subscriber
    /// let too many frames go by untaken: no more events will come.
    Stopped,
}

impl Subscription {
    /// The size limit this subscriber asked for.
    pub(crate) fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// Hands `f` the events decoded since the last call, in stream order.
    pub fn drain(&self, mut f: impl FnMut(&Event)) -> Drained {
        self.take(|events| events.for_each(|ev| f(&ev)))
    }

    /// [`drain`](Self::drain), the events by value.
    pub fn drain_into(&self, out: &mut impl Extend<Event>) -> Drained {
        self.take(|events| out.extend(events))
    }

    fn take(&self, f: impl FnOnce(std::vec::Drain<'_, Event>)) -> Drained {
        let mut state = self.shared.lock();
        match state.subscribers.get_mut(self.id) {
            Some(Some(q)) => {
                q.undrained = 0;
                f(q.events.drain(..));
                Drained::Events
            }
            _ => Drained::Stopped,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Nobody takes them any more: stop keeping events.
        if let Some(q) = self.shared.lock().subscribers.get_mut(self.id) {
            *q = None;
        }
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

    const FRAMES: [&[u8]; 4] = [
        b"data: a\n",
        b"\ndata: {\"error\":{}}\n\n: hi\n\n",
        b"event: ping\ndata: {}\r\n\r\nevent: error\ndata: {\"type\":\"error\"}\n\n",
        b"event: delta\ndata: x\ndata: y\n\n",
    ];

    /// With a subscriber the pass decodes; the counts are the scan's.
    #[test]
    fn a_subscribed_pass_counts_as_the_scan_does_and_hands_every_event_over() {
        let counts = |subscribe: bool| {
            let mut ext = http::Extensions::new();
            let mut inner = SharedScan::view(&mut ext);
            let sub = subscribe.then(|| SharedScan::subscribe(&ext, 1024).unwrap());
            let mut outer = SharedScan::view(&mut ext);
            let mut data = Vec::new();
            let mut by_outer = Vec::new();
            for f in FRAMES {
                inner.feed(f);
                let s = outer.feed(f);
                by_outer.push((s.data_events, s.inband_errors));
                if let Some(sub) = &sub {
                    assert_eq!(
                        sub.drain(|ev| data.push(ev.data().clone())),
                        Drained::Events
                    );
                }
            }
            (by_outer, data)
        };
        let (scanned, none) = counts(false);
        let (decoded, data) = counts(true);
        assert_eq!(scanned, decoded);
        assert_eq!(scanned, [(0, 0), (2, 1), (1, 1), (1, 0)]);
        assert!(none.is_empty());
        assert_eq!(
            data,
            ["a", "{\"error\":{}}", "{}", "{\"type\":\"error\"}", "x\ny"]
        );
    }

    #[test]
    fn subscribing_needs_a_feeder_that_has_not_started_and_every_subscriber_gets_every_event() {
        let mut ext = http::Extensions::new();
        assert!(SharedScan::subscribe(&ext, 1024).is_none(), "no scan");
        let mut inner = SharedScan::view(&mut ext);
        let first = SharedScan::subscribe(&ext, 1024).unwrap();
        let second = SharedScan::subscribe(&ext, 1024).unwrap();
        inner.feed(b"data: a\n\ndata: b\n\n");
        assert!(SharedScan::subscribe(&ext, 1024).is_none(), "started");
        for sub in [&first, &second] {
            let mut data = Vec::new();
            sub.drain(|ev| data.push(ev.data().clone()));
            assert_eq!(data, ["a", "b"]);
        }
        drop(first);
        inner.feed(b"data: c\n\n");
        let mut data = Vec::new();
        assert_eq!(second.drain_into(&mut data), Drained::Events);
        assert_eq!(data.len(), 1);

        let mut ext = http::Extensions::new();
        drop(SharedScan::view(&mut ext));
        assert!(
            SharedScan::subscribe(&ext, 1024).is_none(),
            "nobody feeds it"
        );
    }

    #[test]
    fn an_oversized_event_stops_the_subscriber_and_counting_goes_on() {
        let mut ext = http::Extensions::new();
        let mut inner = SharedScan::view(&mut ext);
        let sub = SharedScan::subscribe(&ext, 16).unwrap();
        assert_eq!(inner.feed(b"data: short\n\n").data_events, 1);
        assert_eq!(sub.drain(|_| {}), Drained::Events);
        inner.feed(b"data: far more than sixteen bytes of data\n\n");
        assert_eq!(sub.drain(|_| {}), Drained::Stopped);
        assert_eq!(inner.feed(b"data: next\n\n").data_events, 1);
    }

    #[test]
    fn a_subscriber_that_stops_reading_is_dropped_not_buffered_for() {
        let mut ext = http::Extensions::new();
        let mut inner = SharedScan::view(&mut ext);
        let reading = SharedScan::subscribe(&ext, 1024).unwrap();
        let gone = SharedScan::subscribe(&ext, 1024).unwrap();
        // Many events in one frame are fine for a reader that keeps up.
        let big = b"data: x\n\n".repeat(10_000);
        assert_eq!(inner.feed(&big).data_events, 10_000);
        let mut n = 0;
        assert_eq!(reading.drain(|_| n += 1), Drained::Events);
        assert_eq!(n, 10_000);
        for _ in 0..=MAX_UNDRAINED_FRAMES {
            inner.feed(b"data: y\n\n");
            assert_eq!(reading.drain(|_| {}), Drained::Events);
        }
        assert_eq!(gone.drain(|_| {}), Drained::Stopped);
        assert_eq!(reading.drain(|_| {}), Drained::Events);
    }

    #[test]
    fn a_bytes_frame_is_kept_not_copied_and_other_buffers_are_fed_by_their_chunks() {
        let mut ext = http::Extensions::new();
        let mut inner = SharedScan::view(&mut ext);
        let sub = SharedScan::subscribe(&ext, 1024).unwrap();
        let frame = Bytes::from_static(b"data: kept\n\n");
        assert_eq!(inner.feed_buf(&frame).data_events, 1);
        let mut ptr = None;
        sub.drain(|ev| ptr = Some(ev.data().as_ptr()));
        let range = frame.as_ptr_range();
        assert!(
            ptr.is_some_and(|p| range.contains(&p)),
            "the event's data is the frame's"
        );

        let chained = (&b"data: a"[..]).chain(&b"b\n\ndata: c\n\n"[..]);
        assert_eq!(inner.feed_buf(&chained).data_events, 2);
        let mut data = Vec::new();
        sub.drain(|ev| data.push(ev.data().clone()));
        assert_eq!(data, ["ab", "c"]);
    }

    /// A buffer of many one-byte-slice chunks.
    struct Pieces(std::collections::VecDeque<&'static [u8]>);

    impl Buf for Pieces {
        fn remaining(&self) -> usize {
            self.0.iter().map(|p| p.len()).sum()
        }
        fn chunk(&self) -> &[u8] {
            self.0.front().copied().unwrap_or_default()
        }
        fn advance(&mut self, mut n: usize) {
            while n > 0 {
                let Some(front) = self.0.front_mut() else {
                    return;
                };
                let k = n.min(front.len());
                *front = &front[k..];
                n -= k;
                if front.is_empty() {
                    self.0.pop_front();
                }
            }
        }
        fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
            let n = dst.len().min(self.0.len());
            for (d, p) in dst.iter_mut().zip(&self.0) {
                *d = std::io::IoSlice::new(p);
            }
            n
        }
    }

    #[test]
    fn a_buffer_of_more_chunks_than_can_be_seen_counts_as_progress() {
        let mut ext = http::Extensions::new();
        let mut view = SharedScan::view(&mut ext);
        // Seen whole, no event completed: no progress.
        let few = Pieces(
            std::iter::once(&b"data: "[..])
                .chain([&b"y"[..]; 10])
                .collect(),
        );
        assert_eq!(view.feed_buf(&few).data_events, 0);
        // 70 chunks: the last six are not looked at.
        let many = Pieces([&b"y"[..]; 70].into_iter().collect());
        assert_eq!(view.feed_buf(&many).data_events, 1);
    }
}
