//! OpenAI chat completions as a [`Dialect`].

use bytes::Bytes;
use http::StatusCode;
use palisade_sse::Event;
use serde_json::Value;

use super::{Dialect, StreamReader, StreamWriter, Written, WrittenAnswer, bad};
use crate::neutral::{self, Delta, FromOpenAiStream, ToOpenAiStream};
use crate::translate::{TranslateError, openai_sse};
use crate::{Api, decode_openai, openai};

/// OpenAI chat completions (and every OpenAI-compatible server).
#[derive(Clone, Copy, Debug, Default)]
pub struct Chat;

impl Dialect for Chat {
    fn api(&self) -> Api {
        Api::ChatCompletions
    }

    fn read_request(&self, body: &Value) -> Result<neutral::Request, TranslateError> {
        let req: openai::ChatRequest =
            serde_json::from_value(body.clone()).map_err(|e| bad(self.api(), e))?;
        neutral::Request::from_openai(&req)
    }

    fn write_request(&self, request: &neutral::Request) -> Result<Written, TranslateError> {
        let (req, left_out) = request.to_openai_reporting();
        Ok(Written {
            body: serde_json::to_value(req).map_err(|e| bad(self.api(), e))?,
            left_out,
        })
    }

    fn read_answer(&self, body: &[u8]) -> Result<neutral::Answer, TranslateError> {
        let res: openai::ChatCompletion =
            serde_json::from_slice(body).map_err(|e| bad(self.api(), e))?;
        neutral::Answer::from_openai(&res)
    }

    fn write_answer(&self, answer: &neutral::Answer) -> Result<WrittenAnswer, TranslateError> {
        let (res, left_out) = answer.to_openai_reporting();
        Ok(WrittenAnswer {
            body: serde_json::to_vec(&res).map_err(|e| bad(self.api(), e))?,
            left_out,
        })
    }

    fn stream_reader(&self) -> Box<dyn StreamReader> {
        Box::new(Reader(FromOpenAiStream::default()))
    }

    fn stream_writer(&self, caller_request: &Value) -> Box<dyn StreamWriter> {
        let include_usage = caller_request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Box::new(Writer(ToOpenAiStream::new(include_usage)))
    }
}

struct Reader(FromOpenAiStream);

impl StreamReader for Reader {
    fn read(&mut self, event: &Event) -> Result<Vec<Delta>, TranslateError> {
        let item = decode_openai(event).map_err(|e| bad(Api::ChatCompletions, e))?;
        Ok(self.0.push(item))
    }

    fn untranslated(&mut self) -> Vec<String> {
        self.0.take_untranslated()
    }
}

struct Writer(ToOpenAiStream);

impl StreamWriter for Writer {
    fn write(&mut self, delta: Delta, out: &mut Vec<Bytes>) {
        out.extend(self.0.push(delta).iter().map(openai_sse));
    }

    fn fail(&mut self, status: StatusCode, message: &str, out: &mut Vec<Bytes>) {
        out.push(Api::ChatCompletions.stream_error_event(status, message));
    }

    fn untranslated(&mut self) -> Vec<String> {
        self.0.take_untranslated()
    }
}
