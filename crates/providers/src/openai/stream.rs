//! Chat completions streams: decoding one event ([`decode_openai`]) and
//! rebuilding the completion ([`OpenAiAggregator`]).

use std::collections::BTreeMap;

use palisade_sse::Event;
use serde_json::{Map, Value};

use crate::maybe::Maybe;
use crate::stream::{InbandError, StreamError, excerpt};
use crate::{Api, openai};

/// One item of an OpenAI stream.
// Nearly every item is a chunk: boxing it would cost an allocation per
// event to save stack space on the rare `Done`.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum OpenAiItem {
    /// A chunk (the usage chunk has no choices and `usage` set).
    Chunk(openai::ChatChunk),
    /// `data: [DONE]`: the stream is complete.
    Done,
}

/// Decodes one event of an OpenAI stream.
///
/// # Errors
///
/// An in-band `{"error":…}` is a [`StreamError`] carrying an
/// [`InbandError`]; data that is neither a chunk nor an error is malformed.
pub fn decode_openai(ev: &Event) -> Result<OpenAiItem, StreamError> {
    let data = ev.data();
    if data.as_ref() == b"[DONE]" {
        return Ok(OpenAiItem::Done);
    }
    match serde_json::from_slice::<openai::ChatChunk>(data) {
        Ok(chunk) => Ok(OpenAiItem::Chunk(chunk)),
        Err(chunk_err) => match serde_json::from_slice::<openai::ErrorBody>(data) {
            Ok(e) => Err(InbandError::new(
                Api::ChatCompletions,
                e.error
                    .kind
                    .into_option()
                    .unwrap_or_else(|| "error".to_owned()),
                e.error.message,
            )
            .into()),
            Err(_) => Err(StreamError::malformed(
                Api::ChatCompletions,
                format!("{chunk_err} in {}", excerpt(data)),
            )),
        },
    }
}

/// Rebuilds an OpenAI chat completion from its stream.
///
/// # Example
///
/// ```
/// use palisade_providers::{OpenAiAggregator, decode_openai};
/// use palisade_sse::Decoder;
///
/// let mut d = Decoder::new();
/// d.push(bytes::Bytes::from_static(concat!(
///     r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#, "\n\n",
///     r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#, "\n\n",
///     "data: [DONE]\n\n",
/// ).as_bytes()));
/// let mut agg = OpenAiAggregator::new();
/// while let Some(ev) = d.next_event().unwrap() {
///     agg.push(decode_openai(&ev).unwrap());
/// }
/// let done = agg.finish().unwrap();
/// assert_eq!(done.choices[0].message.content.get().unwrap().text(), "Hello");
/// assert_eq!(done.choices[0].finish_reason.get().map(String::as_str), Some("stop"));
/// ```
#[derive(Debug, Default)]
pub struct OpenAiAggregator {
    head: Option<(String, u64, String)>,
    choices: BTreeMap<u32, ChoiceAcc>,
    usage: Option<openai::Usage>,
    extra: Map<String, Value>,
    done: bool,
}

#[derive(Debug, Default)]
struct ChoiceAcc {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tools: BTreeMap<u32, openai::ToolCall>,
    finish: Option<String>,
}

impl OpenAiAggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one stream item.
    pub fn push(&mut self, item: OpenAiItem) {
        let chunk = match item {
            OpenAiItem::Done => {
                self.done = true;
                return;
            }
            OpenAiItem::Chunk(c) => c,
        };
        if self.head.is_none() {
            self.head = Some((chunk.id, chunk.created, chunk.model));
            self.extra = chunk.extra;
        }
        if let Maybe::Present(u) = chunk.usage {
            self.usage = Some(u);
        }
        for c in chunk.choices {
            let acc = self.choices.entry(c.index).or_default();
            let d = c.delta;
            if let Maybe::Present(r) = d.role {
                acc.role = Some(r);
            }
            if let Maybe::Present(t) = d.content {
                acc.content.get_or_insert_with(String::new).push_str(&t);
            }
            if let Maybe::Present(t) = d.refusal {
                acc.refusal.get_or_insert_with(String::new).push_str(&t);
            }
            for tc in d.tool_calls.into_option().unwrap_or_default() {
                let i = tc.index.get().copied().unwrap_or(0);
                let slot = acc.tools.entry(i).or_default();
                if let Maybe::Present(id) = tc.id {
                    slot.id = Maybe::Present(id);
                }
                if let Maybe::Present(k) = tc.kind {
                    slot.kind = Maybe::Present(k);
                }
                if let Maybe::Present(f) = tc.function {
                    let sf = match &mut slot.function {
                        Maybe::Present(sf) => sf,
                        other => {
                            *other = Maybe::Present(openai::FunctionCall::default());
                            match other.get_mut() {
                                Some(sf) => sf,
                                None => continue,
                            }
                        }
                    };
                    if let Maybe::Present(n) = f.name {
                        sf.name = Maybe::Present(n);
                    }
                    if let Maybe::Present(a) = f.arguments {
                        match &mut sf.arguments {
                            Maybe::Present(s) => s.push_str(&a),
                            other => *other = Maybe::Present(a),
                        }
                    }
                }
            }
            if let Maybe::Present(f) = c.finish_reason {
                acc.finish = Some(f);
            }
        }
    }

    /// The completion the stream amounted to.
    ///
    /// # Errors
    ///
    /// A truncated stream (no `data: [DONE]`, or no chunk at all).
    pub fn finish(self) -> Result<openai::ChatCompletion, StreamError> {
        let (Some((id, created, model)), true) = (self.head, self.done) else {
            return Err(StreamError::truncated(Api::ChatCompletions));
        };
        let choices = self
            .choices
            .into_iter()
            .map(|(index, acc)| openai::Choice {
                index,
                message: openai::ChatMessage {
                    role: acc.role.unwrap_or_else(|| "assistant".to_owned()),
                    content: match acc.content {
                        Some(t) => Maybe::Present(openai::Content::Text(t)),
                        None => Maybe::Null,
                    },
                    tool_calls: if acc.tools.is_empty() {
                        Maybe::Absent
                    } else {
                        Maybe::Present(
                            acc.tools
                                .into_values()
                                .map(|mut t| {
                                    t.index = Maybe::Absent;
                                    t
                                })
                                .collect(),
                        )
                    },
                    refusal: acc.refusal.into(),
                    ..Default::default()
                },
                finish_reason: acc.finish.into(),
                extra: Map::new(),
            })
            .collect();
        Ok(openai::ChatCompletion {
            id,
            object: "chat.completion".to_owned(),
            created,
            model,
            choices,
            usage: self.usage.into(),
            extra: self.extra,
        })
    }
}
