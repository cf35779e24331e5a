//! Watching a response go by: usage, finish reasons, model, id and in-band
//! errors, from a JSON answer or a stream, without holding the stream.
//!
//! This is the one place the layers that need "what did this call amount
//! to" get it: the trace layer (span attributes, token metrics), the
//! gateway (token metrics), token reconciliation. Feed it the body's frames
//! ([`ResponseObserver::feed`]) or, when you already decode the stream, its
//! events ([`ResponseObserver::on_event`]); read the [`Summary`] at the end.
//!
//! [`WatchedBody`] is the body wrapper built on it: it feeds the observer
//! the frames as the caller reads them and tells a [`Watch`] how the body
//! ended — completely, with an error, or dropped unread — with the summary.
//! The trace layer (span attributes, GenAI metrics) and the token limiter
//! (reconciliation) are both watches.
//!
//! **Decoded once.** [`watch`] wraps a response's body through its one
//! [`Observation`], kept in the response's extensions: the innermost layer
//! that watches a response decodes it, every layer outside reads the same
//! observation (`layers_share_one_decoding` tests it). When a layer inside
//! that one already passes over the stream (an SSE-aware idle timeout or a
//! breaker: [`palisade_sse::SharedScan`]), the observation takes that
//! pass's decoded events ([`SharedScan::subscribe`]) instead of decoding
//! the bytes itself, so the stream is gone over once in all
//! (`the_events_of_a_scan_inside_are_read_not_decoded_again`). Layers stay
//! independent — each works alone, and none names another; they share only
//! these types.
//!
//! **A stream is complete at its terminator** (OpenAI `data: [DONE]`,
//! Anthropic `message_stop`), as the breaker also counts it: most callers
//! stop reading there and drop the body, and the usage is known by then
//! (the usage chunk and `message_delta` come before it). So a
//! [`WatchedBody`] reports [`End::Complete`] as soon as the frame holding
//! the terminator went by, not when — or whether — the connection ends
//! after it. A body that says it has nothing more (`is_end_stream`, e.g. a
//! JSON answer whose `Content-Length` is all read) is complete at once too.
//!
//! Memory is bounded: an SSE stream is decoded event by event (at most
//! [`MAX_EVENT_BYTES`] per event), a JSON answer is kept only up to
//! [`MAX_JSON_BYTES`] (beyond that, nothing is reported).
//!
//! **The API says where to look.** An observer is made for one [`Api`],
//! which says which events may carry usage, finish reasons, model and id
//! (only those are parsed: for chat completions the first chunk and those
//! whose `usage` or `finish_reason` is not `null`; for messages
//! `message_start` and `message_delta`), where those live in them, and
//! which event ends the stream. An error event is read whatever the API.

use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http::header::CONTENT_TYPE;
use http_body::{Body, Frame, SizeHint};
use memchr::arch::all::packedpair::HeuristicFrequencyRank;
use memchr::memmem::{Finder, FinderBuilder};
use palisade_sse::{Decoder, Drained, Event, SharedScan, Subscription};

use crate::Api;
use pin_project_lite::pin_project;
use serde_json::Value;

/// The largest JSON answer kept to be read at its end (4 MiB).
pub const MAX_JSON_BYTES: usize = 4 * 1024 * 1024;
/// The largest stream event decoded (1 MiB); larger ones are skipped.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// What a response amounted to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Prompt tokens the upstream reported.
    pub input_tokens: Option<u64>,
    /// Output tokens the upstream reported.
    pub output_tokens: Option<u64>,
    /// Finish reasons (`stop`, `length`, `tool_calls`; Anthropic's
    /// `end_turn`, `max_tokens`, `tool_use` …), one per choice.
    pub finish_reasons: Vec<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// The response id.
    pub id: Option<String>,
    /// The type of an in-band error event, if one came.
    pub inband_error: Option<String>,
    /// Data events seen (streams), keep-alives ([`Api::is_ping`]) not counted.
    pub events: u64,
    /// The stream's terminator went by (OpenAI `data: [DONE]`, Anthropic
    /// `event: message_stop`): the answer is complete, whatever happens to
    /// the connection afterwards.
    pub terminated: bool,
    /// A content event went by ([`Api::carries_content`]: text, a tool
    /// call, reasoning, a refusal — what time to first token waits for).
    /// Never set for an API nobody named, nor for a JSON answer.
    pub content: bool,
}

#[derive(Debug)]
enum Mode {
    Sse(Box<Decoder>),
    /// The events a layer inside decodes ([`SharedScan::subscribe`]).
    Shared(Subscription),
    Json(Vec<u8>),
    /// Too large, or neither JSON nor SSE.
    Off,
}

/// Watches one response; see the module docs.
///
/// ```
/// use bytes::Bytes;
/// use palisade_providers::Api;
/// use palisade_providers::observe::ResponseObserver;
///
/// let mut obs = ResponseObserver::new(Api::ChatCompletions, Some("text/event-stream"));
/// obs.feed(&Bytes::from_static(b"data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n"));
/// obs.feed(&Bytes::from_static(b"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"));
/// obs.feed(&Bytes::from_static(b"data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n"));
/// let s = obs.finish();
/// assert_eq!((s.input_tokens, s.output_tokens), (Some(5), Some(1)));
/// assert_eq!(s.finish_reasons, ["stop"]);
/// assert_eq!(s.model.as_deref(), Some("gpt-4o"));
/// ```
#[derive(Debug)]
pub struct ResponseObserver {
    /// Where the answer says what it amounted to ([`Api::summarize`]);
    /// `None`: an API nobody named, whose answer is not read (its events
    /// are counted, its in-band errors seen by the SSE rule).
    api: Option<Api>,
    mode: Mode,
    summary: Summary,
}

const USAGE: &[u8] = b"\"usage\"";

/// The last `"usage"` in `data`: a chunk has one `usage` (its last key in
/// OpenAI's chunks, so the search from the end is short), and quotes inside
/// JSON strings are escaped, so the needle only matches a key (or a whole
/// string value `"usage"`). It steps back over its rarest byte, `g`:
/// with memchr's reverse substring search instead, the preset's streamed
/// throughput was 2.62 GiB/s rather than 3.07 (`cargo bench --bench stream`).
fn rfind_usage(data: &[u8]) -> Option<usize> {
    let mut end = data.len();
    while let Some(g) = memchr::memrchr(b'g', &data[..end]) {
        if g >= 4 && data[g - 4..].starts_with(USAGE) {
            return Some(g - 4);
        }
        end = g;
    }
    None
}

/// `…_reason"`, searched forward (a chunk has one per choice). Its
/// prefilter looks for the needle's two rarest bytes; memchr's own ranking
/// is for prose, where `"` is rare, so [`JsonRank`] ranks bytes as they
/// occur in a stream's JSON. (One pass for both keys with aho-corasick's
/// Teddy measured 18 % slower through the whole stack on these ~300-byte
/// events.)
static REASON: LazyLock<Finder<'static>> =
    LazyLock::new(|| FinderBuilder::new().build_forward_with_ranker(JsonRank, b"_reason\""));

/// Byte frequencies in streamed JSON: structure and quotes everywhere,
/// lowercase letters in keys and text, `_` and uppercase rare.
struct JsonRank;

impl HeuristicFrequencyRank for JsonRank {
    fn rank(&self, byte: u8) -> u8 {
        match byte {
            b'"' | b':' | b',' | b'{' | b'}' | b' ' => 255,
            b'e' | b't' | b'a' | b'o' | b'i' | b'n' | b's' | b'r' | b'h' | b'l' | b'd' => 200,
            b'c' | b'u' | b'm' | b'f' | b'p' | b'g' | b'w' | b'y' | b'b' | b'v' | b'k' => 150,
            b'0'..=b'9' | b'[' | b']' | b'-' | b'.' => 150,
            b'a'..=b'z' => 100,
            b'_' => 40,
            _ => 60,
        }
    }
}

/// Whether a key found at `rest` (just after its closing quote) has a value
/// other than `null`.
fn not_null(rest: &[u8]) -> bool {
    let value = rest.trim_ascii_start();
    let value = value.strip_prefix(b":").unwrap_or(value).trim_ascii_start();
    !value.starts_with(b"null")
}

/// Whether `data` has a `usage` or a `…_reason` (`finish_reason`) whose value
/// is not `null`: the events worth parsing. (With `include_usage`, OpenAI
/// sends `"usage":null` on every chunk but the last.)
pub(crate) fn worth_parsing(data: &[u8]) -> bool {
    if let Some(i) = rfind_usage(data)
        && not_null(&data[i + USAGE.len()..])
    {
        return true;
    }
    // One `finish_reason` per choice, and a chunk may carry several.
    let mut rest = data;
    while let Some(i) = REASON.find(rest) {
        rest = &rest[i + REASON.needle().len()..];
        if not_null(rest) {
            return true;
        }
    }
    false
}

impl ResponseObserver {
    /// An observer for an answer of `api`, with a body of this
    /// `content-type` (`text/event-stream`: a stream; anything else: JSON).
    pub fn new(api: Api, content_type: Option<&str>) -> Self {
        Self::of(Some(api), content_type)
    }

    /// An observer for an answer of `api`, or of an API nobody named
    /// (`None`): then usage, finish reasons, model and id are not read —
    /// no API's shape is assumed — while events, in-band errors (by the
    /// SSE rule: `event: error`, data `{"error":…}`) and the end are.
    pub fn of(api: Option<Api>, content_type: Option<&str>) -> Self {
        let sse = content_type.is_some_and(palisade_sse::is_event_stream);
        Self {
            api,
            mode: if sse {
                Mode::Sse(Box::new(Decoder::new().max_event_bytes(MAX_EVENT_BYTES)))
            } else {
                Mode::Json(Vec::new())
            },
            summary: Summary::default(),
        }
    }

    /// An observer of a stream of `api`, fed with decoded events only
    /// ([`on_event`](Self::on_event)).
    pub fn for_events(api: Api) -> Self {
        Self {
            api: Some(api),
            mode: Mode::Off,
            summary: Summary::default(),
        }
    }

    /// Whether the stream's terminator was seen (see [`Summary::terminated`]).
    pub fn is_terminated(&self) -> bool {
        self.summary.terminated
    }

    /// Feeds a frame of the body.
    pub fn feed(&mut self, bytes: &Bytes) {
        match &mut self.mode {
            Mode::Sse(_) => {
                // The decoder is taken out while its events are watched
                // (they borrow it), and put back unless one was oversized.
                let Mode::Sse(mut decoder) = std::mem::replace(&mut self.mode, Mode::Off) else {
                    return;
                };
                decoder.push(bytes.clone());
                loop {
                    match decoder.next_event() {
                        Ok(Some(ev)) => self.on_event(&ev),
                        Ok(None) => {
                            self.mode = Mode::Sse(decoder);
                            break;
                        }
                        // An oversized event: skip watching the rest.
                        Err(_) => break,
                    }
                }
            }
            Mode::Shared(_) => {
                let Mode::Shared(sub) = std::mem::replace(&mut self.mode, Mode::Off) else {
                    return;
                };
                if sub.drain(|ev| self.on_event(ev)) == Drained::Events {
                    self.mode = Mode::Shared(sub);
                }
            }
            Mode::Json(buf) => {
                if buf.len() + bytes.len() > MAX_JSON_BYTES {
                    self.mode = Mode::Off;
                } else {
                    buf.extend_from_slice(bytes);
                }
            }
            Mode::Off => {}
        }
    }

    /// Watches one decoded stream event.
    pub fn on_event(&mut self, ev: &Event) {
        if self.api.is_some_and(|api| api.is_ping(ev)) {
            return;
        }
        self.summary.events += 1;
        let data = ev.data();
        let inband = match self.api {
            Some(api) => api.is_inband_error(ev),
            None => ev.is_inband_error(),
        };
        if inband {
            let kind = serde_json::from_slice::<Value>(data)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/type")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "error".to_owned());
            self.summary.inband_error = Some(kind);
            return;
        }
        let Some(api) = self.api else {
            return;
        };
        if !self.summary.content && api.carries_content(ev) {
            self.summary.content = true;
        }
        if api.is_terminator(ev) {
            self.summary.terminated = true;
            // A Responses stream's terminator is its whole answer, usage
            // included; the others' carry nothing to read.
            if !api.may_summarize(ev, false) {
                return;
            }
        }
        let first = self.summary.events == 1;
        if !api.may_summarize(ev, first) {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(data) {
            api.summarize(&v, &mut self.summary);
        }
    }

    /// The summary so far (for a stream, complete once its last event was
    /// fed; for JSON, parses what was kept).
    pub fn finish(&mut self) -> Summary {
        if let Mode::Json(buf) = &mut self.mode {
            let buf = std::mem::take(buf);
            // The fields a summary reads, the rest skipped unbuilt; a body
            // the lenient reader refuses (a duplicate field, say) is read
            // whole as before.
            match serde_json::from_slice::<crate::skim::Object<crate::skim::Answer>>(&buf) {
                Ok(crate::skim::Object(Some(a))) => match &a.error.0 {
                    Some(e) => self.summary.inband_error.clone_from(&e.kind.value),
                    None => {
                        if let Some(api) = self.api {
                            api.summarize_answer(&a, &mut self.summary);
                        }
                    }
                },
                // JSON, not an object: nothing to read.
                Ok(crate::skim::Object(None)) => {}
                Err(_) => self.summarize_whole(&buf),
            }
            self.mode = Mode::Off;
        }
        self.summary.clone()
    }

    /// The summary of a JSON answer parsed whole.
    fn summarize_whole(&mut self, buf: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(buf) else {
            return;
        };
        if v.get("error").is_some_and(Value::is_object) {
            self.summary.inband_error = v
                .pointer("/error/type")
                .and_then(Value::as_str)
                .map(str::to_owned);
        } else if let Some(api) = self.api {
            api.summarize(&v, &mut self.summary);
        }
    }
}

/// How a watched body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum End {
    /// Read to its end.
    Complete,
    /// The body failed.
    Failed,
    /// Dropped before its end (the caller went away).
    Dropped,
}

/// What a [`WatchedBody`] reports to.
pub trait Watch {
    /// A data frame went by (the observer has seen it).
    fn on_data(&mut self, _data: &Bytes) {}

    /// The first content event went by ([`Summary::content`]), in the frame
    /// about to be passed on; called at most once, before that frame's
    /// [`on_data`](Self::on_data).
    fn on_content(&mut self) {}

    /// The body ended; called exactly once.
    fn on_end(&mut self, summary: Summary, how: End);
}

/// The one observation of a response, shared by every layer that watches
/// it: the first [`WatchedBody`] made with [`watch`] (the innermost layer)
/// decodes the body into it and leaves it in the response's extensions;
/// the layers outside find it there and read it — the stream is decoded
/// once however many layers watch it, and no layer depends on another.
/// Body wrappers are polled on one task, innermost first, so a frame is in
/// the observation before any outer layer sees it; the lock is never
/// contended.
#[derive(Clone, Debug)]
pub struct Observation(Arc<Mutex<ResponseObserver>>);

impl Observation {
    fn new(observer: ResponseObserver) -> Self {
        Self(Arc::new(Mutex::new(observer)))
    }

    fn with<T>(&self, f: impl FnOnce(&mut ResponseObserver) -> T) -> T {
        // A panic while holding it leaves a usable observer: the counts so far.
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The summary so far (see [`ResponseObserver::finish`]).
    pub fn summary(&self) -> Summary {
        self.with(ResponseObserver::finish)
    }
}

/// Watches `res`'s body, an answer of `api` (`None`: an API nobody named,
/// whose usage is not read; see [`ResponseObserver::of`]), reporting to
/// `watch`: through
/// the response's [`Observation`] when a layer inside already watches it
/// (then that layer's `api` is the one the answer is read as), else through
/// a new one (for a body of its `Content-Type`), left in the extensions for
/// the layers outside.
pub fn watch<B, W: Watch>(
    res: Response<B>,
    api: impl Into<Option<Api>>,
    watch: W,
) -> Response<WatchedBody<B, W>> {
    let api = api.into();
    let (mut parts, inner) = res.into_parts();
    let (observation, feeds) = match parts.extensions.get::<Observation>() {
        Some(o) => (o.clone(), false),
        None => {
            let ct = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            // A layer inside decoding the stream already (its shared scan)?
            // Then take its events rather than decode the bytes again.
            let shared = ct
                .is_some_and(palisade_sse::is_event_stream)
                .then(|| SharedScan::subscribe(&parts.extensions, MAX_EVENT_BYTES))
                .flatten();
            let observer = match shared {
                Some(sub) => ResponseObserver {
                    api,
                    mode: Mode::Shared(sub),
                    summary: Summary::default(),
                },
                None => ResponseObserver::of(api, ct),
            };
            let o = Observation::new(observer);
            parts.extensions.insert(o.clone());
            (o, true)
        }
    };
    let body = WatchedBody {
        inner,
        watching: Some(Box::new(Watching {
            observation,
            feeds,
            watch,
            content: false,
        })),
    };
    Response::from_parts(parts, body)
}

struct Watching<W> {
    observation: Observation,
    /// This body feeds the observation (it made it); else it only reads.
    feeds: bool,
    watch: W,
    /// `watch.on_content` was called.
    content: bool,
}

pin_project! {
    /// A response body watched to its end; see the module docs.
    pub struct WatchedBody<B, W: Watch> {
        #[pin]
        inner: B,
        watching: Option<Box<Watching<W>>>,
    }

    impl<B, W: Watch> PinnedDrop for WatchedBody<B, W> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(mut w) = this.project().watching.take() {
                let summary = w.observation.summary();
                w.watch.on_end(summary, End::Dropped);
            }
        }
    }
}

impl<B, W: Watch> WatchedBody<B, W> {
    /// Watches `inner` with an `observer` of its own (not shared with other
    /// layers: [`watch`] shares), reporting to `watch`.
    pub fn new(inner: B, observer: ResponseObserver, watch: W) -> Self {
        Self {
            inner,
            watching: Some(Box::new(Watching {
                observation: Observation::new(observer),
                feeds: true,
                watch,
                content: false,
            })),
        }
    }

    /// `inner` unwatched (nobody listens): frames pass straight through.
    pub fn unwatched(inner: B) -> Self {
        Self {
            inner,
            watching: None,
        }
    }

    /// Whether its first content event has gone by ([`Watch::on_content`]
    /// was called). False once it ended, and for an unwatched body.
    pub fn content_seen(&self) -> bool {
        self.watching.as_ref().is_some_and(|w| w.content)
    }
}

impl<B, W: Watch> std::fmt::Debug for WatchedBody<B, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedBody")
            .field("watched", &self.watching.is_some())
            .finish_non_exhaustive()
    }
}

impl<B, W> Body for WatchedBody<B, W>
where
    B: Body<Data = Bytes>,
    W: Watch,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = ready!(this.inner.as_mut().poll_frame(cx));
        let end = match &polled {
            Some(Ok(frame)) => match (this.watching.as_mut(), frame.data_ref()) {
                (Some(w), Some(data)) => {
                    let feeds = w.feeds;
                    let (terminated, content) = w.observation.with(|o| {
                        if feeds {
                            o.feed(data);
                        }
                        (o.is_terminated(), o.summary.content)
                    });
                    if content && !w.content {
                        w.content = true;
                        w.watch.on_content();
                    }
                    w.watch.on_data(data);
                    // Complete at the terminator, or when nothing follows.
                    (terminated || this.inner.is_end_stream()).then_some(End::Complete)
                }
                _ => None,
            },
            Some(Err(_)) => Some(End::Failed),
            None => Some(End::Complete),
        };
        if let Some(how) = end {
            if let Some(mut w) = this.watching.take() {
                let summary = w.observation.summary();
                w.watch.on_end(summary, how);
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_answer_summarizes_as_it_did_parsed_whole() {
        let answers = [
            r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hi \"usage\": 3"},"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":"yo"},"finish_reason":"length"}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":0}}}"#,
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":2,"cache_read_input_tokens":3}}"#,
            r#"{"type":"message_start","message":{"id":"msg_2","model":"claude","usage":{"input_tokens":4,"output_tokens":1}}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":7}}"#,
            r#"{"stop_reason":null,"delta":{"stop_reason":"end_turn"}}"#,
            r#"{"stop_reason":5,"delta":{"stop_reason":"end_turn"}}"#,
            r#"{"error":{"type":"rate_limit_error","message":"slow down"}}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
            r#"{"error":{"type":7},"model":"m"}"#,
            r#"{"error":"a string, not an object","model":"m","usage":{"prompt_tokens":2}}"#,
            r#"{"choices":"not an array","usage":{"prompt_tokens":"NaN","completion_tokens":-1},"model":7}"#,
            r#"{"choices":[1,{"finish_reason":"stop"},{"finish_reason":null},[]],"id":null,"usage":{"prompt_tokens":2.0,"completion_tokens":18446744073709551615}}"#,
            r#"{"usage":{"prompt_tokens":1e3,"completion_tokens":3},"usage2":[{"a":[1,{"b":null}]}],"flag":true}"#,
            r#"{"message":"not an object","model":"outer","stop_reason":"end_turn"}"#,
            r#"{"message":{"model":"inner","usage":{"input_tokens":5}},"model":"outer","usage":{"prompt_tokens":8}}"#,
            r#"{"model":"first","model":"last","usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#,
            r#"{"us\u0061ge":{"prompt_tokens":3},"model":"escaped \"key\""}"#,
            r#"["id","model"]"#,
            r#""a string""#,
            "null",
            r#"{"id":"cut short"#,
            r#"{"id":"x"} trailing"#,
            "",
        ];
        // Read by the lenient reader itself, not by the whole-parse
        // fallback: all but a duplicate field and broken JSON.
        let fallback = |a: &str| {
            a.contains(r#""model":"first","model""#)
                || a.contains("cut short")
                || a.contains("trailing")
                || a.is_empty()
        };
        for a in answers {
            let skimmed =
                serde_json::from_slice::<crate::skim::Object<crate::skim::Answer>>(a.as_bytes());
            assert_eq!(skimmed.is_ok(), !fallback(a), "{a}");
        }
        for api in [Api::ChatCompletions, Api::Messages] {
            for a in answers {
                let mut obs = ResponseObserver::new(api, Some("application/json"));
                obs.feed(&Bytes::copy_from_slice(a.as_bytes()));
                let got = obs.finish();
                let mut whole = ResponseObserver::new(api, Some("application/json"));
                whole.summarize_whole(a.as_bytes());
                let want = whole.summary;
                assert_eq!(
                    (
                        got.input_tokens,
                        got.output_tokens,
                        &got.finish_reasons,
                        &got.model,
                        &got.id,
                        &got.inband_error
                    ),
                    (
                        want.input_tokens,
                        want.output_tokens,
                        &want.finish_reasons,
                        &want.model,
                        &want.id,
                        &want.inband_error
                    ),
                    "{api:?}: {a}"
                );
            }
        }
    }

    #[test]
    fn only_events_with_a_usage_or_a_finish_reason_are_parsed() {
        let chunk = |tail: &str| {
            format!(
                r#"{{"id":"c","object":"chat.completion.chunk","choices":[{{"index":0,"delta":{{"content":"the usage of a stop_reason field"}},"finish_reason":{tail}"#
            )
        };
        // include_usage: every chunk but the last says `"usage":null`.
        assert!(!worth_parsing(chunk(r#"null}],"usage":null}"#).as_bytes()));
        assert!(!worth_parsing(
            chunk(r#"null}],"usage" : null}"#).as_bytes()
        ));
        assert!(worth_parsing(chunk(r#""stop"}],"usage":null}"#).as_bytes()));
        assert!(worth_parsing(
            br#"{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#
        ));
        // `usage` first, with `g`s after it; an escaped `\"usage\"` in text.
        assert!(worth_parsing(
            br#"{"usage":{"prompt_tokens":1},"model":"gpt-4o","system_fingerprint":"fp_g"}"#
        ));
        assert!(!worth_parsing(
            br#"{"choices":[{"delta":{"content":"say \"usage\": 1"},"finish_reason":null}]}"#
        ));
        assert!(!worth_parsing(b"usage\": {}"), "no key");
        // A second choice's reason after a first one's null.
        assert!(worth_parsing(
            br#"{"choices":[{"index":0,"finish_reason":null},{"index":1,"finish_reason":"length"}]}"#
        ));
        let mut o = ResponseObserver::new(Api::ChatCompletions, Some("text/event-stream"));
        let first = format!("data: {}\n\n", chunk(r#"null}],"usage":null}"#));
        o.feed(&Bytes::from(first.clone()));
        o.feed(&Bytes::from(first));
        o.feed(&Bytes::from_static(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
        ));
        let s = o.finish();
        assert_eq!(
            (s.input_tokens, s.output_tokens, s.events),
            (Some(3), Some(4), 3)
        );
    }

    #[test]
    fn an_anthropic_stream_and_a_json_answer() {
        let mut o = ResponseObserver::new(Api::Messages, Some("text/event-stream; charset=utf-8"));
        for chunk in [
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":4}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ] {
            o.feed(&Bytes::from(chunk));
        }
        let s = o.finish();
        assert_eq!((s.input_tokens, s.output_tokens), (Some(9), Some(4)));
        assert_eq!(s.finish_reasons, ["end_turn"]);
        assert_eq!(
            (s.model.as_deref(), s.id.as_deref()),
            (Some("claude"), Some("msg_1"))
        );

        let mut o = ResponseObserver::new(Api::ChatCompletions, Some("application/json"));
        o.feed(&Bytes::from_static(
            b"{\"id\":\"c\",\"model\":\"gpt\",\"choices\":[{\"finish_reason\":\"length\"}],",
        ));
        o.feed(&Bytes::from_static(
            b"\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":7}}",
        ));
        let s = o.finish();
        assert_eq!((s.input_tokens, s.output_tokens), (Some(3), Some(7)));
        assert_eq!(s.finish_reasons, ["length"]);

        let mut o = ResponseObserver::new(Api::Messages, Some("text/event-stream"));
        o.feed(&Bytes::from_static(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}\n\n"));
        assert_eq!(o.finish().inband_error.as_deref(), Some("overloaded_error"));
    }

    /// Each API's answer is read where that API puts things, and only
    /// there: an Anthropic message's usage and stop reason mean nothing to
    /// a chat-completions observer, and the other way round; each API's
    /// own terminator ends its stream.
    #[test]
    fn an_observer_reads_where_its_api_says() {
        let message: &[u8] = br#"{"id":"msg_1","type":"message","model":"claude","stop_reason":"end_turn","usage":{"input_tokens":9,"output_tokens":4}}"#;
        let completion: &[u8] = br#"{"id":"c1","model":"gpt","choices":[{"index":0,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":7}}"#;
        let read = |api: Api, body: &[u8]| {
            let mut o = ResponseObserver::new(api, Some("application/json"));
            o.feed(&Bytes::copy_from_slice(body));
            o.finish()
        };
        let s = read(Api::Messages, message);
        assert_eq!((s.input_tokens, s.output_tokens), (Some(9), Some(4)));
        assert_eq!(s.finish_reasons, ["end_turn"]);
        let s = read(Api::ChatCompletions, completion);
        assert_eq!((s.input_tokens, s.output_tokens), (Some(3), Some(7)));
        assert_eq!(s.finish_reasons, ["stop"]);
        for (api, body) in [(Api::ChatCompletions, message), (Api::Messages, completion)] {
            let s = read(api, body);
            assert_eq!((s.input_tokens, s.output_tokens), (None, None), "{api:?}");
            assert!(s.finish_reasons.is_empty(), "{api:?}");
        }

        let events = |api: Api, stream: &'static str| {
            let mut o = ResponseObserver::new(api, Some("text/event-stream"));
            o.feed(&Bytes::from_static(stream.as_bytes()));
            o.finish()
        };
        let done = "data: {\"id\":\"c1\",\"choices\":[]}\n\ndata: [DONE]\n\n";
        let stop = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        assert!(events(Api::ChatCompletions, done).terminated);
        assert!(events(Api::Messages, stop).terminated);
        assert!(!events(Api::ChatCompletions, stop).terminated);
        assert!(!events(Api::Messages, done).terminated);
    }

    /// Records what it is told.
    struct Rec(Arc<Mutex<Vec<(Summary, End)>>>);

    impl Watch for Rec {
        fn on_end(&mut self, summary: Summary, how: End) {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((summary, how));
        }
    }

    /// Two layers watching one response share one observation: the inner
    /// one decodes, the outer one reads; both are told the same summary,
    /// and the events are counted once.
    #[tokio::test]
    async fn layers_share_one_decoding() {
        use http_body_util::BodyExt;
        let stream = "data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n\
                      data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n\
                      data: [DONE]\n\n";
        let res = Response::builder()
            .header(CONTENT_TYPE, "text/event-stream")
            .body(http_body_util::Full::new(Bytes::from(stream)))
            .unwrap_or_default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = watch(res, Api::ChatCompletions, Rec(seen.clone()));
        let made = inner.extensions().get::<Observation>().cloned();
        let outer = watch(inner, Api::ChatCompletions, Rec(seen.clone()));
        let found = outer.extensions().get::<Observation>().cloned();
        assert!(
            matches!((&made, &found), (Some(a), Some(b)) if Arc::ptr_eq(&a.0, &b.0)),
            "the outer layer uses the inner one's observation"
        );
        let body = outer.into_body().collect().await.map(|c| c.to_bytes());
        assert_eq!(body.ok().as_deref(), Some(stream.as_bytes()));
        let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(seen.len(), 2, "both layers are told");
        assert_eq!(seen[0], seen[1]);
        let (s, how) = &seen[0];
        assert_eq!(*how, End::Complete);
        assert_eq!(s.events, 3, "each event counted once, not once per layer");
        assert_eq!((s.input_tokens, s.output_tokens), (Some(5), Some(1)));
        assert_eq!(s.finish_reasons, ["stop"]);
        assert!(s.terminated);
    }

    pin_project! {
        /// What an SSE-aware layer inside does: feeds the response's shared
        /// scan as frames go by.
        struct Feeding<B> {
            #[pin]
            inner: B,
            view: palisade_sse::ScanView,
        }
    }

    impl<B: Body<Data = Bytes>> Body for Feeding<B> {
        type Data = Bytes;
        type Error = B::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
            let this = self.project();
            let polled = ready!(this.inner.poll_frame(cx));
            if let Some(Ok(frame)) = &polled
                && let Some(d) = frame.data_ref()
            {
                this.view.feed(d);
            }
            Poll::Ready(polled)
        }
    }

    #[tokio::test]
    async fn the_events_of_a_scan_inside_are_read_not_decoded_again() {
        use futures_util::stream;
        use http_body_util::{BodyExt, StreamBody};
        let frames = [
            "data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}],\"usage\":null}\n\nda",
            "ta: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
        ];
        let body =
            StreamBody::new(stream::iter(frames.map(|f| {
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(f)))
            })));
        let mut res = Response::builder()
            .header(CONTENT_TYPE, "text/event-stream")
            .body(())
            .unwrap_or_default();
        let view = palisade_sse::SharedScan::view(res.extensions_mut());
        let res = res.map(|()| Feeding { inner: body, view });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let watched = watch(res, Api::ChatCompletions, Rec(seen.clone()));
        let shared = watched
            .extensions()
            .get::<Observation>()
            .is_some_and(|o| o.with(|o| matches!(o.mode, Mode::Shared(_))));
        assert!(shared, "the observer takes the scan's events");
        let body = watched.into_body().collect().await.map(|c| c.to_bytes());
        assert_eq!(body.ok().as_deref(), Some(frames.concat().as_bytes()));
        let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        let (s, how) = &seen[0];
        assert_eq!(*how, End::Complete);
        assert_eq!(s.events, 4);
        assert_eq!((s.input_tokens, s.output_tokens), (Some(5), Some(2)));
        assert_eq!(s.finish_reasons, ["stop"]);
        assert_eq!(s.model.as_deref(), Some("gpt"));
        assert!(s.terminated);
    }

    /// Records, per data frame, whether content had been announced.
    struct ContentRec(Arc<Mutex<Vec<&'static str>>>);

    impl Watch for ContentRec {
        fn on_content(&mut self) {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push("content");
        }
        fn on_data(&mut self, _data: &Bytes) {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push("data");
        }
        fn on_end(&mut self, summary: Summary, _how: End) {
            assert!(summary.content);
        }
    }

    /// The first content event is announced once, with its frame, to the
    /// layer that decodes and to the layers that read: not at the role-only
    /// first chunk.
    #[tokio::test]
    async fn the_first_content_event_is_announced_once_with_its_frame() {
        use futures_util::stream;
        use http_body_util::{BodyExt, StreamBody};
        let frames = [
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"}}]}\n\ndata: [DONE]\n\n",
        ];
        let body =
            StreamBody::new(stream::iter(frames.map(|f| {
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(f)))
            })));
        let mut res = Response::new(body);
        res.headers_mut().insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        let (inner_seen, outer_seen) = (Arc::default(), Arc::default());
        let inner = watch(
            res,
            Api::ChatCompletions,
            ContentRec(Arc::clone(&inner_seen)),
        );
        let outer = watch(
            inner,
            Api::ChatCompletions,
            ContentRec(Arc::clone(&outer_seen)),
        );
        assert!(outer.into_body().collect().await.is_ok());
        for seen in [inner_seen, outer_seen] {
            let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            assert_eq!(*seen, ["data", "content", "data", "data"]);
        }
    }
}
