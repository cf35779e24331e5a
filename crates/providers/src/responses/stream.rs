//! The Responses API's stream events, typed: [`Event`] has one variant per
//! kind of event, each with the fields that kind carries, read from the
//! lossless wire form [`StreamEvent`] without parsing again; and
//! [`decode_responses`], which reads one SSE event like
//! [`decode_openai`](crate::decode_openai) does for chat completions.
//!
//! Event names are the openai-python SDK's
//! (`src/openai/types/responses/response_*_event.py`). Events of built-in
//! tools (`response.web_search_call.searching`, …), types added after this
//! was written, and a known type missing a field its type requires are
//! [`Event::Other`], as received: nothing is refused for being new.

use palisade_sse::Event as SseEvent;
use serde_json::Value;

use super::{Item, Response, StreamEvent};
use crate::Api;
use crate::maybe::Maybe;
use crate::stream::{InbandError, StreamError, excerpt};

/// Where a `response.*` lifecycle event says the response is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseState {
    /// `response.created`.
    Created,
    /// `response.queued`.
    Queued,
    /// `response.in_progress`.
    InProgress,
    /// `response.completed`: the stream's last event.
    Completed,
    /// `response.incomplete` (`max_output_tokens`, `content_filter`): the
    /// stream's last event.
    Incomplete,
    /// `response.failed`: the response's `error` says why.
    Failed,
}

/// What a text event's `delta` or whole text belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextOf {
    /// `response.output_text.*` (index: `content_index`).
    OutputText,
    /// `response.refusal.*` (index: `content_index`).
    Refusal,
    /// `response.function_call_arguments.*` (no index).
    FunctionCallArguments,
    /// `response.reasoning_summary_text.*` (index: `summary_index`).
    ReasoningSummaryText,
    /// `response.reasoning_text.*` (index: `content_index`).
    ReasoningText,
}

/// Which parts a part event adds or finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartOf {
    /// `response.content_part.added` / `.done` (index: `content_index`).
    Content,
    /// `response.reasoning_summary_part.added` / `.done` (index:
    /// `summary_index`).
    ReasoningSummary,
}

/// One stream event of the Responses API, by kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `response.created`, `.queued`, `.in_progress`, `.completed`,
    /// `.incomplete`, `.failed`: the response as it stands.
    Response {
        /// Which of them.
        state: ResponseState,
        /// The event's place in the stream.
        sequence_number: Option<u64>,
        /// The response.
        response: Box<Response>,
    },
    /// `response.output_item.added` (`done: false`) / `.done` (`true`).
    OutputItem {
        /// Whether the item is finished.
        done: bool,
        /// The event's place in the stream.
        sequence_number: Option<u64>,
        /// The item's place in the output.
        output_index: u64,
        /// The item.
        item: Box<Item>,
    },
    /// `response.content_part.*` and `response.reasoning_summary_part.*`.
    Part {
        /// Content or reasoning summary.
        of: PartOf,
        /// `.done` rather than `.added`.
        done: bool,
        /// The event's place in the stream.
        sequence_number: Option<u64>,
        /// The item the part is in.
        item_id: String,
        /// That item's place in the output.
        output_index: u64,
        /// The part's place in the item.
        index: u64,
        /// The part (`output_text`, `refusal`, `summary_text`, …).
        part: Value,
    },
    /// More text: `response.output_text.delta`, `.refusal.delta`,
    /// `.function_call_arguments.delta`, `.reasoning_summary_text.delta`,
    /// `.reasoning_text.delta`.
    Delta {
        /// What the text belongs to.
        of: TextOf,
        /// The event's place in the stream.
        sequence_number: Option<u64>,
        /// The item it belongs to.
        item_id: String,
        /// That item's place in the output.
        output_index: u64,
        /// The part's place in the item (`None` for function arguments).
        index: Option<u64>,
        /// The text.
        delta: String,
    },
    /// The whole text, at its end: `response.output_text.done` (`text`),
    /// `.refusal.done` (`refusal`), `.function_call_arguments.done`
    /// (`arguments`), `.reasoning_summary_text.done` and
    /// `.reasoning_text.done` (`text`).
    TextDone {
        /// What the text belongs to.
        of: TextOf,
        /// The event's place in the stream.
        sequence_number: Option<u64>,
        /// The item it belongs to.
        item_id: String,
        /// That item's place in the output.
        output_index: u64,
        /// The part's place in the item (`None` for function arguments).
        index: Option<u64>,
        /// The whole text.
        text: String,
    },
    /// `response.output_text.annotation.added`.
    Annotation {
        /// The event's place in the stream.
        sequence_number: Option<u64>,
        /// The item it belongs to.
        item_id: String,
        /// That item's place in the output.
        output_index: u64,
        /// The part's place in the item.
        content_index: u64,
        /// The annotation (`url_citation`, `file_citation`, …).
        annotation: Value,
    },
    /// `error`: the stream failed.
    Error {
        /// The event's place in the stream.
        sequence_number: Option<u64>,
        /// The error code (`server_error`, `rate_limit_exceeded`, …).
        code: Option<String>,
        /// What went wrong.
        message: String,
        /// The request parameter at fault.
        param: Option<String>,
    },
    /// Any other event, as received (see the module docs).
    Other(Box<StreamEvent>),
}

impl Event {
    /// The event's place in the stream.
    pub fn sequence_number(&self) -> Option<u64> {
        match self {
            Self::Response {
                sequence_number, ..
            }
            | Self::OutputItem {
                sequence_number, ..
            }
            | Self::Part {
                sequence_number, ..
            }
            | Self::Delta {
                sequence_number, ..
            }
            | Self::TextDone {
                sequence_number, ..
            }
            | Self::Annotation {
                sequence_number, ..
            }
            | Self::Error {
                sequence_number, ..
            } => *sequence_number,
            Self::Other(ev) => ev.sequence_number.get().copied(),
        }
    }

    /// Reads one event's JSON (an SSE event's `data`).
    ///
    /// # Errors
    ///
    /// The data is not a JSON object with a string `type`.
    pub fn from_data(data: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<StreamEvent>(data).map(StreamEvent::typed)
    }
}

impl StreamEvent {
    /// Whether its type is one [`Event`] has a variant for (an event of
    /// such a type read as [`Event::Other`] lacks a field its type
    /// requires).
    pub fn is_known_kind(&self) -> bool {
        let Some(name) = self.kind.strip_prefix("response.") else {
            return self.kind == "error";
        };
        matches!(
            name,
            "created"
                | "queued"
                | "in_progress"
                | "completed"
                | "incomplete"
                | "failed"
                | "output_item.added"
                | "output_item.done"
                | "content_part.added"
                | "content_part.done"
                | "reasoning_summary_part.added"
                | "reasoning_summary_part.done"
                | "output_text.annotation.added"
        ) || name
            .rsplit_once('.')
            .is_some_and(|(of, end)| matches!(end, "delta" | "done") && text_of(of).is_some())
    }

    /// This event by its kind. A known type missing a field its type
    /// requires is [`Event::Other`], as received.
    pub fn typed(mut self) -> Event {
        let seq = self.sequence_number.get().copied();
        let Some(name) = self.kind.strip_prefix("response.") else {
            if self.kind == "error" {
                if let Maybe::Present(message) = std::mem::take(&mut self.message) {
                    return Event::Error {
                        sequence_number: seq,
                        code: self.code.into_option(),
                        message,
                        param: self
                            .extra
                            .remove("param")
                            .and_then(|p| p.as_str().map(str::to_owned)),
                    };
                }
            }
            return Event::Other(Box::new(self));
        };
        let state = match name {
            "created" => Some(ResponseState::Created),
            "queued" => Some(ResponseState::Queued),
            "in_progress" => Some(ResponseState::InProgress),
            "completed" => Some(ResponseState::Completed),
            "incomplete" => Some(ResponseState::Incomplete),
            "failed" => Some(ResponseState::Failed),
            _ => None,
        };
        if let Some(state) = state {
            if let Maybe::Present(r) = std::mem::take(&mut self.response) {
                return Event::Response {
                    state,
                    sequence_number: seq,
                    response: Box::new(r),
                };
            }
            return Event::Other(Box::new(self));
        }
        let output_index = self.output_index.get().copied();
        let item_id = self.item_id.get().cloned();
        if let Some(done) = match name {
            "output_item.added" => Some(false),
            "output_item.done" => Some(true),
            _ => None,
        } {
            if let (Some(output_index), Maybe::Present(item)) =
                (output_index, std::mem::take(&mut self.item))
            {
                return Event::OutputItem {
                    done,
                    sequence_number: seq,
                    output_index,
                    item: Box::new(item),
                };
            }
            return Event::Other(Box::new(self));
        }
        let part = match name {
            "content_part.added" => Some((PartOf::Content, false)),
            "content_part.done" => Some((PartOf::Content, true)),
            "reasoning_summary_part.added" => Some((PartOf::ReasoningSummary, false)),
            "reasoning_summary_part.done" => Some((PartOf::ReasoningSummary, true)),
            _ => None,
        };
        if let Some((of, done)) = part {
            let index = match of {
                PartOf::Content => self.content_index.get(),
                PartOf::ReasoningSummary => self.summary_index.get(),
            }
            .copied();
            if let (Some(item_id), Some(output_index), Some(index), true) = (
                item_id,
                output_index,
                index,
                self.extra.contains_key("part"),
            ) {
                return Event::Part {
                    of,
                    done,
                    sequence_number: seq,
                    item_id,
                    output_index,
                    index,
                    part: self.extra.remove("part").unwrap_or_default(),
                };
            }
            return Event::Other(Box::new(self));
        }
        if name == "output_text.annotation.added" {
            let content_index = self.content_index.get().copied();
            if let (Some(item_id), Some(output_index), Some(content_index), true) = (
                item_id,
                output_index,
                content_index,
                self.extra.contains_key("annotation"),
            ) {
                return Event::Annotation {
                    sequence_number: seq,
                    item_id,
                    output_index,
                    content_index,
                    annotation: self.extra.remove("annotation").unwrap_or_default(),
                };
            }
            return Event::Other(Box::new(self));
        }
        let text = name
            .rsplit_once('.')
            .and_then(|(of, end)| Some((text_of(of)?, end)));
        if let (
            Some(((of, index_key, whole_key), end @ ("delta" | "done"))),
            Some(item_id),
            Some(output_index),
        ) = (text, item_id, output_index)
        {
            let index = match index_key {
                "content_index" => self.content_index.get().copied(),
                "summary_index" => self.summary_index.get().copied(),
                _ => None,
            };
            if !index_key.is_empty() && index.is_none() {
                return Event::Other(Box::new(self));
            }
            if end == "delta" {
                if let Maybe::Present(delta) = std::mem::take(&mut self.delta) {
                    return Event::Delta {
                        of,
                        sequence_number: seq,
                        item_id,
                        output_index,
                        index,
                        delta,
                    };
                }
            } else if let Some(Value::String(_)) = self.extra.get(whole_key) {
                if let Some(Value::String(text)) = self.extra.remove(whole_key) {
                    return Event::TextDone {
                        of,
                        sequence_number: seq,
                        item_id,
                        output_index,
                        index,
                        text,
                    };
                }
            }
        }
        Event::Other(Box::new(self))
    }
}

/// A text event's kind: what it belongs to, the key of its index (none for
/// function arguments) and the key of its whole text in `.done`.
fn text_of(name: &str) -> Option<(TextOf, &'static str, &'static str)> {
    match name {
        "output_text" => Some((TextOf::OutputText, "content_index", "text")),
        "refusal" => Some((TextOf::Refusal, "content_index", "refusal")),
        "function_call_arguments" => Some((TextOf::FunctionCallArguments, "", "arguments")),
        "reasoning_summary_text" => Some((TextOf::ReasoningSummaryText, "summary_index", "text")),
        "reasoning_text" => Some((TextOf::ReasoningText, "content_index", "text")),
        _ => None,
    }
}

/// Decodes one event of a Responses stream.
///
/// # Errors
///
/// An `error` event and `response.failed` are a [`StreamError`] carrying an
/// [`InbandError`] (its status from the error's code, e.g.
/// `rate_limit_exceeded` → 429, anything unknown → 500); data that is not a
/// JSON object with a string `type` is malformed.
pub fn decode_responses(ev: &SseEvent) -> Result<Event, StreamError> {
    match Event::from_data(ev.data()) {
        Ok(Event::Error { code, message, .. }) => Err(InbandError::new(
            Api::Responses,
            code.unwrap_or_else(|| "error".to_owned()),
            message,
        )
        .into()),
        Ok(Event::Response {
            state: ResponseState::Failed,
            response,
            ..
        }) => {
            let error = response.error.get();
            let field = |k: &str| {
                error
                    .and_then(|e| e.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            Err(InbandError::new(
                Api::Responses,
                field("code").unwrap_or_else(|| "error".to_owned()),
                field("message").unwrap_or_else(|| "the response failed".to_owned()),
            )
            .into())
        }
        Ok(other) => Ok(other),
        Err(e) => Err(StreamError::malformed(
            Api::Responses,
            format!("{e} in {} event {}", ev.event_type(), excerpt(ev.data())),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn typed(v: Value) -> Event {
        Event::from_data(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn each_kind_of_event_reads_as_its_variant_with_its_fields() {
        let r = json!({"id": "resp_1", "object": "response", "model": "m", "output": []});
        for (name, state) in [
            ("response.created", ResponseState::Created),
            ("response.queued", ResponseState::Queued),
            ("response.in_progress", ResponseState::InProgress),
            ("response.completed", ResponseState::Completed),
            ("response.incomplete", ResponseState::Incomplete),
            ("response.failed", ResponseState::Failed),
        ] {
            let ev = typed(json!({"type": name, "sequence_number": 3, "response": r}));
            let Event::Response {
                state: s,
                sequence_number,
                response,
            } = ev
            else {
                panic!("{name}: {ev:?}")
            };
            assert_eq!(
                (s, sequence_number, response.id.as_str()),
                (state, Some(3), "resp_1")
            );
        }
        let item = json!({"type": "function_call", "id": "fc_1", "call_id": "call_1",
                          "name": "f", "arguments": ""});
        for (name, done) in [
            ("response.output_item.added", false),
            ("response.output_item.done", true),
        ] {
            let ev =
                typed(json!({"type": name, "sequence_number": 4, "output_index": 1, "item": item}));
            let Event::OutputItem {
                done: d,
                output_index,
                item,
                ..
            } = ev
            else {
                panic!("{name}: {ev:?}")
            };
            assert_eq!((d, output_index, item.kind()), (done, 1, "function_call"));
        }
        for (name, of, index_key) in [
            ("output_text", TextOf::OutputText, Some("content_index")),
            ("refusal", TextOf::Refusal, Some("content_index")),
            (
                "function_call_arguments",
                TextOf::FunctionCallArguments,
                None,
            ),
            (
                "reasoning_summary_text",
                TextOf::ReasoningSummaryText,
                Some("summary_index"),
            ),
            (
                "reasoning_text",
                TextOf::ReasoningText,
                Some("content_index"),
            ),
        ] {
            let mut delta = json!({"type": format!("response.{name}.delta"), "sequence_number": 5,
                                   "item_id": "it", "output_index": 0, "delta": "Hi"});
            let whole_key = match of {
                TextOf::Refusal => "refusal",
                TextOf::FunctionCallArguments => "arguments",
                _ => "text",
            };
            let mut done = json!({"type": format!("response.{name}.done"), "sequence_number": 6,
                                  "item_id": "it", "output_index": 0, whole_key: "Hi there"});
            if let Some(k) = index_key {
                delta[k] = json!(2);
                done[k] = json!(2);
            }
            let want_index = index_key.map(|_| 2);
            assert_eq!(
                typed(delta),
                Event::Delta {
                    of,
                    sequence_number: Some(5),
                    item_id: "it".into(),
                    output_index: 0,
                    index: want_index,
                    delta: "Hi".into()
                },
                "{name}"
            );
            assert_eq!(
                typed(done),
                Event::TextDone {
                    of,
                    sequence_number: Some(6),
                    item_id: "it".into(),
                    output_index: 0,
                    index: want_index,
                    text: "Hi there".into()
                },
                "{name}"
            );
        }
        let part = json!({"type": "output_text", "text": "", "annotations": []});
        let ev = typed(
            json!({"type": "response.content_part.added", "sequence_number": 7,
            "item_id": "msg_1", "output_index": 0, "content_index": 0, "part": part}),
        );
        assert_eq!(
            ev,
            Event::Part {
                of: PartOf::Content,
                done: false,
                sequence_number: Some(7),
                item_id: "msg_1".into(),
                output_index: 0,
                index: 0,
                part
            }
        );
        let ev = typed(
            json!({"type": "response.reasoning_summary_part.done", "item_id": "rs_1",
            "output_index": 0, "summary_index": 1, "part": {"type": "summary_text", "text": "x"}}),
        );
        assert!(matches!(
            ev,
            Event::Part {
                of: PartOf::ReasoningSummary,
                done: true,
                index: 1,
                ..
            }
        ));
        let ev = typed(
            json!({"type": "response.output_text.annotation.added", "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "annotation_index": 0,
            "annotation": {"type": "url_citation", "url": "https://example.com"}}),
        );
        assert!(
            matches!(
                ev,
                Event::Annotation {
                    content_index: 0,
                    ..
                }
            ),
            "{ev:?}"
        );
        let ev = typed(
            json!({"type": "error", "sequence_number": 9, "code": "server_error",
                              "message": "boom", "param": null}),
        );
        assert_eq!(
            ev,
            Event::Error {
                sequence_number: Some(9),
                code: Some("server_error".into()),
                message: "boom".into(),
                param: None
            }
        );
        assert_eq!(ev.sequence_number(), Some(9));
    }

    #[test]
    fn new_tool_events_and_events_missing_a_required_field_are_kept_as_received() {
        for v in [
            json!({"type": "response.web_search_call.searching", "item_id": "ws_1",
                   "output_index": 0, "sequence_number": 2}),
            json!({"type": "response.brand_new.delta", "item_id": "x", "output_index": 0,
                   "delta": "?"}),
            // `delta` missing
            json!({"type": "response.output_text.delta", "item_id": "m", "output_index": 0,
                   "content_index": 0}),
            // `content_index` missing
            json!({"type": "response.output_text.delta", "item_id": "m", "output_index": 0,
                   "delta": "x"}),
            json!({"type": "response.completed"}),
            json!({"type": "response.output_item.added", "output_index": 0}),
            json!({"type": "error"}),
        ] {
            let Event::Other(raw) = typed(v.clone()) else {
                panic!("{v}")
            };
            assert_eq!(serde_json::to_value(&*raw).unwrap(), v);
            let new = v["type"] == "response.web_search_call.searching"
                || v["type"] == "response.brand_new.delta";
            assert_eq!(raw.is_known_kind(), !new, "{v}");
        }
    }

    #[test]
    fn errors_and_failed_responses_decode_as_inband_errors_with_their_status() {
        let sse = |name: &str, v: Value| {
            let mut d = palisade_sse::Decoder::new();
            d.push(bytes::Bytes::from(format!("event: {name}\ndata: {v}\n\n")));
            d.next_event().unwrap().unwrap()
        };
        let e = decode_responses(&sse(
            "error",
            json!({"type": "error", "code": "rate_limit_exceeded", "message": "slow down"}),
        ))
        .unwrap_err();
        let inband = e.inband().unwrap();
        assert_eq!(
            (inband.status().as_u16(), inband.message()),
            (429, "slow down")
        );
        let e = decode_responses(&sse(
            "response.failed",
            json!({"type": "response.failed", "response": {"id": "r", "status": "failed",
                   "error": {"code": "server_error", "message": "upstream broke"}}}),
        ))
        .unwrap_err();
        assert_eq!(e.inband().unwrap().status().as_u16(), 500);
        assert_eq!(e.inband().unwrap().kind(), "server_error");
        let e = decode_responses(&sse("response.output_text.delta", json!([1]))).unwrap_err();
        assert!(e.is_malformed(), "{e}");
        let ok = decode_responses(&sse(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "item_id": "m", "output_index": 0,
                   "content_index": 0, "delta": "Hi"}),
        ))
        .unwrap();
        assert!(matches!(
            ok,
            Event::Delta {
                of: TextOf::OutputText,
                ..
            }
        ));
    }
}
