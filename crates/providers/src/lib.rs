//! Every API people call, one module each, translated through one neutral
//! model.
//!
//! - [`Api`]: one description per wire API (path, terminator, error
//!   formats, in-band error statuses, GenAI names); every layer and the
//!   gateway ask it.
//! - One module per translated API — [`openai`] (chat completions),
//!   [`anthropic`] (messages) and [`responses`] (OpenAI's Responses API) —
//!   holding its serde types for requests, responses and stream events, its
//!   stream decoding, and its [`dialect::Dialect`] (reader and writer of the
//!   [`neutral`] model). Unknown fields are **kept** (in each type's `extra`
//!   map) and optional fields remember absent versus `null` ([`Maybe`]), so
//!   deserializing and serializing gives back the same JSON value: a proxy
//!   never drops what it does not model.
//! - [`decode_openai`] / [`decode_anthropic`] / [`decode_responses`]: typed
//!   decoding of `palisade_sse` events: OpenAI chunks, the usage chunk,
//!   `data: [DONE]`; Anthropic `message_start` … `message_stop` with every
//!   delta type; Responses events by kind ([`responses::Event`]). An in-band
//!   error after a 200 becomes an [`InbandError`] that
//!   `palisade_core::ErrorKind` and the classifier see as the status it
//!   stands for; unknown event types are passed through.
//! - [`OpenAiAggregator`] / [`AnthropicAggregator`]: rebuild the final
//!   message, tool calls, finish reason and usage from a stream, and report
//!   a stream that ended without its terminator as truncated.
//!
//! - [`errors`]: error bodies and stream error events in each provider's format.
//! - [`observe`]: usage, finish reasons, model and in-band errors of a response as it goes by.
//! - [`dialect`]: the translation core — the [`dialect::Dialect`] trait
//!   every translated API implements, so any API's caller can be served by
//!   any translated API's target with no code per pair.
//! - [`translate`]: requests, answers and streams from one API to another,
//!   so a route can fall back across providers.
//!
//! Embeddings are described by [`Api::Embeddings`] and passed through as
//! received: they are never translated (vectors of two models are not
//! comparable), so they have no types module and no dialect.

pub mod anthropic;
mod api;
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

pub use anthropic::{AnthropicAggregator, decode_anthropic};
pub use api::{Api, KeyStyle};
pub use maybe::Maybe;
pub use openai::{OpenAiAggregator, OpenAiItem, OpenAiStream, decode_openai};
pub use responses::decode_responses;
pub use stream::{InbandError, StreamError};
