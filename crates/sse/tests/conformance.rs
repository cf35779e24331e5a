//! palisade-sse: WHATWG conformance, split invariance, limits, and real
//! provider streams from the mock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use http_body_util::Full;
use palisade_mock::{Fault, MockUpstream, Reply};
use palisade_sse::{Decoder, Event, EventStream};
use proptest::prelude::*;
use tower::ServiceExt;

/// (type, data, id) of one event.
type Summary = (String, String, Option<String>);

/// The summaries of each event, decoding `chunks` in order.
fn decode_chunks(chunks: &[&[u8]]) -> Vec<Summary> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.push(Bytes::copy_from_slice(c));
        while let Some(ev) = d.next_event().unwrap() {
            out.push(summary(&ev));
        }
    }
    d.finish();
    out
}

fn summary(ev: &Event) -> Summary {
    (
        ev.event_type().into_owned(),
        ev.data_lossy().into_owned(),
        ev.id().map(|i| String::from_utf8_lossy(i).into_owned()),
    )
}

fn decode(input: &str) -> Vec<Summary> {
    decode_chunks(&[input.as_bytes()])
}

fn ev(t: &str, d: &str, id: Option<&str>) -> Summary {
    (t.to_owned(), d.to_owned(), id.map(str::to_owned))
}

#[test]
fn whatwg_conformance_table() {
    let m = "message";
    let cases: Vec<(&str, Vec<Summary>)> = vec![
        ("data: hello\n\n", vec![ev(m, "hello", None)]),
        ("data:hello\n\n", vec![ev(m, "hello", None)]),
        ("data:  two\n\n", vec![ev(m, " two", None)]),
        ("data\n\n", vec![ev(m, "", None)]),
        ("data:\n\n", vec![ev(m, "", None)]),
        ("data: a\ndata: b\n\n", vec![ev(m, "a\nb", None)]),
        ("data: a\ndata:\ndata: b\n\n", vec![ev(m, "a\n\nb", None)]),
        ("data: a\r\ndata: b\r\n\r\n", vec![ev(m, "a\nb", None)]),
        ("data: a\rdata: b\r\r", vec![ev(m, "a\nb", None)]),
        (
            "data: a\r\n\ndata: b\n\r\n",
            vec![ev(m, "a", None), ev(m, "b", None)],
        ),
        (": comment\n\n", vec![]),
        (":\n:another\ndata: x\n\n", vec![ev(m, "x", None)]),
        ("event: add\ndata: x\n\n", vec![ev("add", "x", None)]),
        ("event: add\n\ndata: x\n\n", vec![ev(m, "x", None)]),
        ("event:\ndata: x\n\n", vec![ev(m, "x", None)]),
        ("event: a\nevent: b\ndata: x\n\n", vec![ev("b", "x", None)]),
        (
            "id: 1\ndata: a\n\ndata: b\n\n",
            vec![ev(m, "a", Some("1")), ev(m, "b", Some("1"))],
        ),
        ("id: 1\u{0}2\ndata: a\n\n", vec![ev(m, "a", None)]),
        (
            "id: 7\ndata: a\n\nid\ndata: b\n\n",
            vec![ev(m, "a", Some("7")), ev(m, "b", Some(""))],
        ),
        ("id: 3\n\ndata: a\n\n", vec![ev(m, "a", Some("3"))]),
        ("\u{feff}data: bom\n\n", vec![ev(m, "bom", None)]),
        ("\u{feff}\u{feff}data: x\n\n", vec![]),
        ("data: x\n\u{feff}data: y\n\n", vec![ev(m, "x", None)]),
        ("foo: bar\ndata: x\nData: y\n\n", vec![ev(m, "x", None)]),
        ("data: unterminated", vec![]),
        ("data: x\n", vec![]),
        ("data: x\n\n\n\n", vec![ev(m, "x", None)]),
        ("data: [DONE]\n\n", vec![ev(m, "[DONE]", None)]),
        ("data: é ü 漢\n\n", vec![ev(m, "é ü 漢", None)]),
        ("data: a:b:c\n\n", vec![ev(m, "a:b:c", None)]),
    ];
    for (input, want) in cases {
        assert_eq!(decode(input), want, "input {input:?}");
    }
}

#[test]
fn retry_is_honoured_only_when_all_digits() {
    let mut d = Decoder::new();
    d.push(Bytes::from_static(
        b"retry: 1500\ndata: a\n\nretry: 10x\ndata: b\n\nretry:\ndata: c\n\n",
    ));
    let a = d.next_event().unwrap().unwrap();
    assert_eq!(a.retry(), Some(Duration::from_millis(1500)));
    let b = d.next_event().unwrap().unwrap();
    assert_eq!(b.retry(), None);
    assert_eq!(d.next_event().unwrap().unwrap().retry(), None);
    assert_eq!(d.reconnection_time(), Some(Duration::from_millis(1500)));
}

#[test]
fn single_frame_events_are_slices_of_the_frame() {
    let frame = Bytes::from_static(b"event: e\ndata: payload\n\n");
    let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
    let mut d = Decoder::new();
    d.push(frame);
    let ev = d.next_event().unwrap().unwrap();
    assert!(
        range.contains(&(ev.data().as_ptr() as usize)),
        "data is not a copy"
    );
}

#[test]
fn an_endless_line_is_an_error_not_an_allocation() {
    let mut d = Decoder::new().max_event_bytes(64 * 1024);
    let chunk = Bytes::from(vec![b'x'; 8192]);
    let mut failed = None;
    for i in 0..1_000 {
        d.push(chunk.clone());
        match d.next_event() {
            Ok(None) => {}
            Ok(Some(_)) => panic!("no event expected"),
            Err(e) => {
                failed = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = failed.expect("the limit was hit");
    assert!(i <= 8, "failed after {i} chunks");
    assert!(e.is_too_large());
    assert!(e.to_string().contains("max_event_bytes"), "{e}");

    // Many data lines adding up past the limit fail too.
    let mut d = Decoder::new().max_event_bytes(1024);
    d.push(Bytes::from("data: 0123456789\n".repeat(200)));
    assert!(d.next_event().unwrap_err().is_too_large());
}

#[test]
fn pushing_before_draining_loses_nothing() {
    let mut d = Decoder::new();
    d.push(Bytes::from_static(b"data: a\n\ndata: b\n\ndata: c"));
    assert_eq!(d.next_event().unwrap().unwrap().data(), "a");
    d.push(Bytes::from_static(b"d\n\n"));
    assert_eq!(d.next_event().unwrap().unwrap().data(), "b");
    assert_eq!(d.next_event().unwrap().unwrap().data(), "cd");
    assert!(d.next_event().unwrap().is_none());
}

const RICH: &str = "\u{feff}: hello\r\n\r\nevent: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\nevent: ping\ndata: {\"type\": \"ping\"}\n\nid: 42\rdata: line one\rdata: line two\r\rretry: 250\ndata: x\n\ndata\n\n: comment\nevent: content_block_delta\ndata: {\"delta\":{\"text\":\"\u{e9}\"}}\n\nid: bad\u{0}id\ndata: y\n\ndata: [DONE]\n\ndata: trailing";

proptest! {
    /// Splitting a stream at any byte boundaries never changes its events.
    #[test]
    fn any_split_gives_the_same_events(cuts in proptest::collection::vec(0usize..=RICH.len(), 0..24)) {
        let bytes = RICH.as_bytes();
        let whole = decode_chunks(&[bytes]);
        prop_assert_eq!(whole.len(), 8);
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            chunks.push(&bytes[prev..c]);
            prev = c;
        }
        prop_assert_eq!(decode_chunks(&chunks), whole);
    }

    /// Arbitrary bytes, arbitrarily split: no panic, same events as whole.
    #[test]
    fn arbitrary_bytes_never_panic_and_splits_agree(
        bytes in proptest::collection::vec(prop_oneof![
            Just(b'\n'), Just(b'\r'), Just(b':'), Just(b' '), Just(0u8), Just(0xEF), Just(0xBB), Just(0xBF),
            Just(b'd'), Just(b'a'), Just(b't'), Just(b'e'), Just(b'v'), Just(b'i'), any::<u8>()
        ], 0..400),
        cuts in proptest::collection::vec(0usize..400, 0..16),
    ) {
        let whole = decode_chunks(&[&bytes]);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            chunks.push(&bytes[prev..c]);
            prev = c;
        }
        prop_assert_eq!(decode_chunks(&chunks), whole);
    }
}

fn chat(path: &str, text: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .body(Full::new(Bytes::from(
            serde_json::json!({"model": "mock", "stream": true, "max_tokens": 50,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": text}]})
            .to_string(),
        )))
        .unwrap()
}

#[tokio::test]
async fn openai_and_anthropic_streams_from_the_mock() {
    let mock = MockUpstream::new();
    let res = mock
        .clone()
        .oneshot(chat("/v1/chat/completions", "one two three"))
        .await
        .unwrap();
    let events: Vec<Event> = EventStream::new(res.into_body())
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(events.last().unwrap().data(), "[DONE]");
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_slice::<serde_json::Value>(e.data()).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(|c| c.as_str())
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "one two three");

    let res = mock.oneshot(chat("/v1/messages", "a b")).await.unwrap();
    let types: Vec<String> = EventStream::new(res.into_body())
        .map(|e| e.unwrap().event_type().into_owned())
        .collect()
        .await;
    assert_eq!(
        types,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
}

#[tokio::test]
async fn body_errors_and_malformed_events_from_the_mock() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(2, Fault::Reset));
    mock.push(Reply::echo().fault_after(1, Fault::MalformedSse));
    mock.push(Reply::echo().fault_after(1, Fault::OversizedEvent(10 * 1024 * 1024)));

    let res = mock
        .clone()
        .oneshot(chat("/v1/chat/completions", "a b c"))
        .await
        .unwrap();
    let items: Vec<_> = EventStream::new(res.into_body()).collect().await;
    let err = items.last().unwrap().as_ref().unwrap_err();
    assert!(err.is_body(), "{err}");
    assert_eq!(
        items.len(),
        1 + 2 + 1,
        "role chunk, two tokens, then the error"
    );

    let res = mock
        .clone()
        .oneshot(chat("/v1/chat/completions", "a b c"))
        .await
        .unwrap();
    let events: Vec<Event> = EventStream::new(res.into_body())
        .map(Result::unwrap)
        .collect()
        .await;
    let bad = events
        .iter()
        .find(|e| e.data_str().is_err())
        .expect("the malformed event");
    assert!(bad.data_lossy().contains('\u{fffd}'));
    assert_eq!(events.last().unwrap().data(), "[DONE]", "decoding went on");

    let res = mock
        .oneshot(chat("/v1/chat/completions", "a b"))
        .await
        .unwrap();
    let items: Vec<_> = EventStream::new(res.into_body()).collect().await;
    assert!(items.last().unwrap().as_ref().unwrap_err().is_too_large());
}
