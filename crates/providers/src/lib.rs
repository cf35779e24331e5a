//! OpenAI and Anthropic wire types, typed streams and aggregation.
//!
//! - [`Api`]: one description per wire API (path, terminator, error
//!   formats, in-band error statuses, GenAI names); every layer and the
//!   gateway ask it.
//! - [`openai`], [`anthropic`] and [`responses`] (OpenAI's Responses API):
//!   serde types for requests, responses and stream events. Unknown fields are **kept** (in each type's `extra` map)
//!   and optional fields remember absent versus `null` ([`Maybe`]), so
//!   deserializing and serializing gives back the same JSON value: a proxy
//!   never drops what it does not model.
//! - [`decode_openai`] / [`decode_anthropic`]: typed decoding of
//!   `palisade_sse` events: OpenAI chunks, the usage chunk, `data: [DONE]`;
//!   Anthropic `message_start` … `message_stop` with every delta type. An
//!   in-band error after a 200 becomes an [`InbandError`] that
//!   `palisade_core::ErrorKind` and the classifier see as the status it
//!   stands for; unknown Anthropic event types are passed through.
//! - [`OpenAiAggregator`] / [`AnthropicAggregator`]: rebuild the final
//!   message, tool calls, finish reason and usage from a stream, and report
//!   a stream that ended without its terminator as truncated.
//!
//! - [`errors`]: error bodies and stream error events in each provider's format.
//! - [`observe`]: usage, finish reasons, model and in-band errors of a response as it goes by.
//! - [`dialect`]: the translation core — one [`dialect::Dialect`] per API
//!   (chat completions, messages, the Responses API) reading into and
//!   writing out of the [`neutral`] model, so any API's caller can be
//!   served by any translated API's target with no code per pair.
//! - [`translate`]: requests, answers and streams from one API to the other,
//!   so a route can fall back across providers.

pub mod anthropic;
mod api;
mod chunks;
pub mod dialect;
pub mod errors;
mod maybe;
pub mod neutral;
pub mod observe;
pub mod openai;
pub mod responses;
mod skim;
mod stream;
pub mod translate;

pub use api::{Api, KeyStyle};
pub use chunks::OpenAiStream;
pub use maybe::Maybe;
pub use stream::{
    AnthropicAggregator, InbandError, OpenAiAggregator, OpenAiItem, StreamError, decode_anthropic,
    decode_openai,
};
