//! The core every API is translated through: one [`Dialect`] per API.
//!
//! Each API that can be translated implements [`Dialect`] once — reading
//! its requests, answers and stream events into the neutral model
//! ([`crate::neutral`]) and writing them back out — and
//! [`Api::dialect`](crate::Api::dialect) hands it out. A call from an API
//! `A` served by a target speaking `B` is always
//! `A.read_* → neutral → B.write_*` (and back for the answer): no code is
//! written per pair of APIs, so a new API is one module implementing this
//! trait plus its arms in [`Api`]'s exhaustive methods.
//!
//! What has no counterpart is never dropped silently: reading a request
//! names it in [`neutral::Request::untranslated`], writing one returns it
//! in [`Written::left_out`].

use bytes::Bytes;
use http::StatusCode;
use palisade_sse::Event;
use serde_json::{Value, json};

use crate::Api;
use crate::neutral::{self, Delta};
use crate::translate::TranslateError;

pub use crate::anthropic::dialect as messages;
pub use crate::openai::dialect as chat;
pub use crate::responses::dialect as responses;

/// A request written in a target's API.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    /// The request body.
    pub body: Value,
    /// What the neutral request carried that this API has no place for
    /// (e.g. stop sequences toward the Responses API), by name.
    pub left_out: Vec<String>,
}

/// An answer written in the caller's API.
#[derive(Clone, Debug, PartialEq)]
pub struct WrittenAnswer {
    /// The answer's JSON body.
    pub body: Vec<u8>,
    /// What the neutral answer carried that this API has no place for
    /// (e.g. a reasoning signature toward chat completions), by name.
    pub left_out: Vec<String>,
}

/// One API's reader and writer of the neutral model. Every method must be
/// written for a new API: there is no default.
pub trait Dialect: Send + Sync {
    /// The API this is.
    fn api(&self) -> Api;

    /// Reads a request of this API (its parsed JSON body).
    ///
    /// # Errors
    ///
    /// The body does not have this API's request shape, or holds something
    /// that cannot be carried (a tool call whose arguments are not a JSON
    /// object; an item that needs the provider's stored state).
    fn read_request(&self, body: &Value) -> Result<neutral::Request, TranslateError>;

    /// Writes a request in this API.
    ///
    /// # Errors
    ///
    /// The request cannot be written (never for the bundled dialects but
    /// on a serialization failure).
    fn write_request(&self, request: &neutral::Request) -> Result<Written, TranslateError>;

    /// Reads a whole JSON answer of this API.
    ///
    /// # Errors
    ///
    /// The body is not an answer of this API.
    fn read_answer(&self, body: &[u8]) -> Result<neutral::Answer, TranslateError>;

    /// Writes a whole JSON answer in this API.
    ///
    /// # Errors
    ///
    /// On a serialization failure.
    fn write_answer(&self, answer: &neutral::Answer) -> Result<WrittenAnswer, TranslateError>;

    /// A reader of one stream of this API, event by event.
    fn stream_reader(&self) -> Box<dyn StreamReader>;

    /// A writer of one stream in this API, for a caller whose request was
    /// `caller_request` (e.g. chat completions' `stream_options`).
    fn stream_writer(&self, caller_request: &Value) -> Box<dyn StreamWriter>;
}

/// Reads one stream's events as [`Delta`]s.
pub trait StreamReader: Send {
    /// The deltas of one event (often none or one). In-band errors are the
    /// relay's to handle ([`Api::is_inband_error`](crate::Api::is_inband_error))
    /// before they get here.
    ///
    /// # Errors
    ///
    /// The event is not one of this API's (malformed JSON, a wrong shape).
    fn read(&mut self, event: &Event) -> Result<Vec<Delta>, TranslateError>;

    /// What the stream had so far with no counterpart in the neutral model
    /// (e.g. `choices[1..]`), by name; taken.
    fn untranslated(&mut self) -> Vec<String>;
}

/// Writes [`Delta`]s as one stream's SSE bytes.
pub trait StreamWriter: Send {
    /// The events for one delta, appended to `out`.
    fn write(&mut self, delta: Delta, out: &mut Vec<Bytes>);

    /// The events that end this stream with an error after its first byte
    /// (numbered on from the events written so far, where the API numbers
    /// them), appended to `out`.
    fn fail(&mut self, status: StatusCode, message: &str, out: &mut Vec<Bytes>);

    /// What it could not write so far (e.g. a reasoning signature toward
    /// chat completions), by name; taken.
    fn untranslated(&mut self) -> Vec<String>;
}

/// Where a stream relayed as it came (not translated) has got to, so that a
/// failure after its first byte is written as its API wants:
/// chat completions `data: {"error":…}`, Anthropic `event: error`, the
/// Responses API `response.failed` then `error`, numbered on from the last
/// event's `sequence_number`.
#[derive(Clone, Debug)]
pub struct StreamPosition {
    api: Api,
    next_sequence: u64,
    id: Option<String>,
    model: Option<String>,
}

impl StreamPosition {
    /// Nothing seen yet.
    pub fn new(api: Api) -> Self {
        Self {
            api,
            next_sequence: 0,
            id: None,
            model: None,
        }
    }

    /// Notes an event that went to the caller. Only the Responses API's
    /// events are read (their `sequence_number`; the id and model of
    /// `response.created`).
    pub fn observe(&mut self, ev: &Event) {
        match self.api {
            Api::Responses => {
                if let Some(n) = sequence_number(ev.data()) {
                    self.next_sequence = self.next_sequence.max(n.saturating_add(1));
                }
                if self.id.is_none() && ev.is("response.created") {
                    let v: Value = serde_json::from_slice(ev.data()).unwrap_or_default();
                    let text = |k: &str| {
                        v.get("response")
                            .and_then(|r| r.get(k))
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    };
                    self.id = text("id");
                    self.model = text("model");
                }
            }
            Api::ChatCompletions | Api::Messages | Api::Embeddings => {}
        }
    }

    /// The events ending the stream with an error `status` and `message`.
    pub fn failure(&self, status: StatusCode, message: &str) -> Bytes {
        let api = self.api;
        match api {
            Api::ChatCompletions | Api::Embeddings => {
                let data = api.error_json(status, message, None);
                Bytes::from(format!("data: {data}\n\n"))
            }
            Api::Messages => {
                let data = api.error_json(status, message, None);
                Bytes::from(format!("event: error\ndata: {data}\n\n"))
            }
            Api::Responses => {
                let code = api.error_type(status);
                let n = self.next_sequence;
                let failed = json!({
                    "type": "response.failed",
                    "sequence_number": n,
                    "response": responses::failed_response(
                        self.id.as_deref().unwrap_or("resp_palisade"),
                        self.model.as_deref().unwrap_or(""),
                        code,
                        message,
                    ),
                });
                let error = json!({
                    "type": "error",
                    "code": code,
                    "message": message,
                    "param": null,
                    "sequence_number": n + 1,
                });
                Bytes::from(format!(
                    "event: response.failed\ndata: {failed}\n\nevent: error\ndata: {error}\n\n"
                ))
            }
        }
    }
}

/// The number after the first `"sequence_number":` in `data`, read
/// without parsing the event (a Responses event's field; never inside a
/// string, where the quotes would be escaped).
fn sequence_number(data: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sequence_number\"";
    let at = memchr::memmem::find(data, KEY)? + KEY.len();
    let rest = data[at..].trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// An SSE event `event: {name}\ndata: {data}\n\n`.
pub(crate) fn sse(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

pub(crate) fn bad(api: Api, e: impl std::fmt::Display) -> TranslateError {
    TranslateError::new(format!("not a valid {api} value: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_are_read_without_parsing() {
        assert_eq!(
            sequence_number(br#"{"type":"x","sequence_number": 41,"delta":"a"}"#),
            Some(41)
        );
        assert_eq!(sequence_number(br#"{"delta":"sequence_number"}"#), None);
        assert_eq!(sequence_number(b"{}"), None);
    }

    #[test]
    fn a_responses_failure_continues_the_numbering() {
        let mut d = palisade_sse::Decoder::new();
        d.push(Bytes::from_static(
            b"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"model\":\"m\"}}\n\n\
              event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":7,\"delta\":\"Hi\"}\n\n",
        ));
        let mut pos = StreamPosition::new(Api::Responses);
        while let Ok(Some(ev)) = d.next_event() {
            pos.observe(&ev);
        }
        let out = pos.failure(StatusCode::BAD_GATEWAY, "cut");
        let mut d = palisade_sse::Decoder::new();
        d.push(out);
        let failed = d.next_event().unwrap().unwrap();
        let error = d.next_event().unwrap().unwrap();
        assert!(failed.is("response.failed") && error.is("error"));
        let f: Value = serde_json::from_slice(failed.data()).unwrap();
        let e: Value = serde_json::from_slice(error.data()).unwrap();
        assert_eq!(f["sequence_number"], 8);
        assert_eq!(f["response"]["id"], "resp_1");
        assert_eq!(f["response"]["status"], "failed");
        assert_eq!(e["sequence_number"], 9);
        assert_eq!(e["message"], "cut");
    }
}
