//! Messages streams: decoding one event ([`decode_anthropic`]) and
//! rebuilding the message ([`AnthropicAggregator`]).

use std::collections::BTreeMap;

use palisade_sse::Event;

use crate::maybe::Maybe;
use crate::stream::{InbandError, StreamError, append, excerpt};
use crate::{Api, anthropic};

/// Decodes one event of an Anthropic stream. Unknown event types are passed
/// through as [`anthropic::StreamEvent::Unknown`].
///
/// # Errors
///
/// `event: error` is a [`StreamError`] carrying an [`InbandError`]; data that
/// does not fit its event type is malformed.
pub fn decode_anthropic(ev: &Event) -> Result<anthropic::StreamEvent, StreamError> {
    match anthropic::StreamEvent::from_data(ev.data()) {
        Ok(anthropic::StreamEvent::Error(e)) => {
            Err(InbandError::new(Api::Messages, e.error.kind, e.error.message).into())
        }
        Ok(other) => Ok(other),
        Err(e) => Err(StreamError::malformed(
            Api::Messages,
            format!("{e} in {} event {}", ev.event_type(), excerpt(ev.data())),
        )),
    }
}

/// Rebuilds an Anthropic message from its stream.
#[derive(Debug, Default)]
pub struct AnthropicAggregator {
    message: Option<anthropic::MessagesResponse>,
    blocks: BTreeMap<u32, (anthropic::ContentBlock, String)>,
    stopped: bool,
}

impl AnthropicAggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one stream event.
    pub fn push(&mut self, ev: anthropic::StreamEvent) {
        use anthropic::StreamEvent as E;
        match ev {
            E::MessageStart { message: m, .. } => self.message = Some(m),
            E::ContentBlockStart { index, block, .. } => {
                self.blocks.insert(index, (block, String::new()));
            }
            E::ContentBlockDelta { index, delta, .. } => {
                let (block, json) = self
                    .blocks
                    .entry(index)
                    .or_insert_with(|| (anthropic::ContentBlock::default(), String::new()));
                append(&mut block.text, delta.text);
                append(&mut block.thinking, delta.thinking);
                if let Maybe::Present(s) = delta.signature {
                    block.signature = Maybe::Present(s);
                }
                if let Maybe::Present(p) = delta.partial_json {
                    json.push_str(&p);
                }
            }
            E::ContentBlockStop { .. } | E::Ping { .. } | E::Unknown { .. } | E::Error(_) => {}
            E::MessageDelta { delta, usage, .. } => {
                if let Some(m) = &mut self.message {
                    if !delta.stop_reason.is_absent() {
                        m.stop_reason = delta.stop_reason;
                    }
                    if !delta.stop_sequence.is_absent() {
                        m.stop_sequence = delta.stop_sequence;
                    }
                    // message_delta usage is cumulative: it replaces.
                    if !usage.output_tokens.is_absent() {
                        m.usage.output_tokens = usage.output_tokens;
                    }
                    if !usage.input_tokens.is_absent() {
                        m.usage.input_tokens = usage.input_tokens;
                    }
                    m.usage.extra.extend(usage.extra);
                }
            }
            E::MessageStop { .. } => self.stopped = true,
        }
    }

    /// The message the stream amounted to.
    ///
    /// # Errors
    ///
    /// A truncated stream (no `message_start` or no `message_stop`), or a
    /// tool input whose streamed JSON does not parse.
    pub fn finish(self) -> Result<anthropic::MessagesResponse, StreamError> {
        let (Some(mut m), true) = (self.message, self.stopped) else {
            return Err(StreamError::truncated(Api::Messages));
        };
        m.content = Vec::with_capacity(self.blocks.len());
        for (_, (mut block, json)) in self.blocks {
            if !json.is_empty() {
                let input = serde_json::from_str(&json).map_err(|e| {
                    StreamError::malformed(
                        Api::Messages,
                        format!("tool input JSON does not parse: {e}"),
                    )
                })?;
                block.input = Maybe::Present(input);
            }
            m.content.push(block);
        }
        Ok(m)
    }
}
