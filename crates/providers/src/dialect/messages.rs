//! Anthropic messages as a [`Dialect`].

use bytes::Bytes;
use http::StatusCode;
use palisade_sse::Event;
use serde_json::Value;

use super::{Dialect, StreamReader, StreamWriter, Written, WrittenAnswer, bad};
use crate::neutral::{self, Delta, FromAnthropicStream, ToAnthropicStream};
use crate::translate::{TranslateError, anthropic_sse};
use crate::{Api, anthropic, decode_anthropic};

/// Anthropic messages.
#[derive(Clone, Copy, Debug, Default)]
pub struct Messages;

impl Dialect for Messages {
    fn api(&self) -> Api {
        Api::Messages
    }

    fn read_request(&self, body: &Value) -> Result<neutral::Request, TranslateError> {
        let req: anthropic::MessagesRequest =
            serde_json::from_value(body.clone()).map_err(|e| bad(self.api(), e))?;
        Ok(neutral::Request::from_anthropic(&req))
    }

    fn write_request(&self, request: &neutral::Request) -> Result<Written, TranslateError> {
        let (req, left_out) = request.to_anthropic_reporting();
        Ok(Written {
            body: serde_json::to_value(req).map_err(|e| bad(self.api(), e))?,
            left_out,
        })
    }

    fn read_answer(&self, body: &[u8]) -> Result<neutral::Answer, TranslateError> {
        let res: anthropic::MessagesResponse =
            serde_json::from_slice(body).map_err(|e| bad(self.api(), e))?;
        Ok(neutral::Answer::from_anthropic(&res))
    }

    fn write_answer(&self, answer: &neutral::Answer) -> Result<WrittenAnswer, TranslateError> {
        let (res, left_out) = answer.to_anthropic_reporting();
        Ok(WrittenAnswer {
            body: serde_json::to_vec(&res).map_err(|e| bad(self.api(), e))?,
            left_out,
        })
    }

    fn stream_reader(&self) -> Box<dyn StreamReader> {
        Box::new(Reader(FromAnthropicStream::default()))
    }

    fn stream_writer(&self, _caller_request: &Value) -> Box<dyn StreamWriter> {
        Box::new(Writer(ToAnthropicStream::default()))
    }
}

struct Reader(FromAnthropicStream);

impl StreamReader for Reader {
    fn read(&mut self, event: &Event) -> Result<Vec<Delta>, TranslateError> {
        let ev = decode_anthropic(event).map_err(|e| bad(Api::Messages, e))?;
        Ok(self.0.push(ev))
    }

    fn untranslated(&mut self) -> Vec<String> {
        self.0.take_untranslated()
    }
}

struct Writer(ToAnthropicStream);

impl StreamWriter for Writer {
    fn write(&mut self, delta: Delta, out: &mut Vec<Bytes>) {
        out.extend(self.0.push(delta).iter().map(anthropic_sse));
    }

    fn fail(&mut self, status: StatusCode, message: &str, out: &mut Vec<Bytes>) {
        out.push(Api::Messages.stream_error_event(status, message));
    }

    fn untranslated(&mut self) -> Vec<String> {
        self.0.take_untranslated()
    }
}
