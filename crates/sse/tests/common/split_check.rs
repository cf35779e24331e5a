//! The differential check shared by the SSE fuzz target and the corpus
//! replay test: decoding an input whole, or split into chunks at boundaries
//! the input itself chooses, gives the same events, and nothing panics.

use bytes::Bytes;
use palisade_sse::Decoder;

/// (event type, data, id) of one event.
type Seen = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// Every event, chunk by chunk; `Err` when the size limit was hit.
fn events(chunks: &[&[u8]], max: usize) -> Result<Vec<Seen>, ()> {
    let mut d = Decoder::new().max_event_bytes(max);
    let mut out = Vec::new();
    for c in chunks {
        d.push(Bytes::copy_from_slice(c));
        loop {
            match d.next_event() {
                Ok(Some(ev)) => out.push((
                    ev.event_type().as_bytes().to_vec(),
                    ev.data().to_vec(),
                    ev.id().map(|i| i.to_vec()),
                )),
                Ok(None) => break,
                Err(_) => return Err(()),
            }
        }
    }
    Ok(out)
}

/// Panics when chunked decoding disagrees with whole decoding.
pub(crate) fn check(data: &[u8]) {
    // The first byte picks a chunk size (1..=64); the rest is the stream.
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let size = usize::from(first % 64) + 1;
    let chunks: Vec<&[u8]> = stream.chunks(size).collect();
    // A generous limit: the limit must fail both ways or neither.
    let max = 1 << 20;
    let whole = events(&[stream], max);
    let split = events(&chunks, max);
    assert_eq!(whole, split, "chunk size {size}");
}
