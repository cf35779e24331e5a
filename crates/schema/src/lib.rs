//! palisade-schema: JSON Schema validation of LLM request bodies, so a bad
//! request is stopped before it leaves the process (or, on a server, answered
//! with a 400 in the provider's format).
//!
//! - [`Schema`]: a schema compiled once with the `jsonschema` crate and
//!   shared by every clone; bundled schemas for OpenAI chat completions
//!   ([`Schema::openai_chat`]), Anthropic messages
//!   ([`Schema::anthropic_messages`]), the OpenAI Responses API
//!   ([`Schema::openai_responses`]) and OpenAI embeddings
//!   ([`Schema::openai_embeddings`]), or your own ([`Schema::new`]).
//! - [`SchemaLayer`] / [`Validate`]: the tower layer for a client stack. The
//!   size limit is checked before parsing; the body is parsed **once** and
//!   the value stored as [`palisade_core::ParsedBody`] in the request's
//!   extensions, so token estimation and routing after it never parse again
//!   (and a `ParsedBody` stored by an earlier layer is reused). Every
//!   violation is reported with its JSON pointer in a
//!   [`palisade_core::Rejected`].
//! - [`SchemaServerLayer`] ([`SchemaLayer::respond_as`]): the server-side
//!   variant answering 413 / 400 in the caller's provider format.
//! - [`OutputSchemaLayer`]: checks a structured output against the schema
//!   its request asked for (`response_format: json_schema`), failing with a
//!   typed [`palisade_core::InvalidOutput`] that retry can be told to act on.
//!
//! **The bundled schemas never refuse what the provider accepts.** They
//! check structure and types where a mistake is certain — a missing
//! `model`, `messages` or (Anthropic) `max_tokens`, `messages` that is not an
//! array, a role that is not a string, a string where a number must be, a
//! content block without its `type`, a text part without its text, an
//! empty `messages` list, a tool message without `tool_call_id`, a tool
//! call without its `id`, an `image_url` object without its `url`,
//! Anthropic `tool_use` without `input`, `thinking` enabled without
//! `budget_tokens`, a `tool_choice` of type `tool` without its `name`, a
//! number as `metadata.user_id`, a count below zero (`max_tokens`, `n`,
//! `top_k` …) — and leave open what providers extend: roles, thinking types, tool and block
//! types, image `detail`, tool names (no length or pattern), the number of
//! `stop` strings, sampling ranges, and every field they do not name.
//! Optional fields may be `null` (frameworks send it for "unset"). They are
//! tested against a corpus of real requests from the providers' OpenAPI
//! spec, SDK tests and examples (`tests/corpus/`, each with its source).
//!
//! Numbers keep their precision: the workspace builds `serde_json` with
//! `float_roundtrip`, and the parsed value is what later layers see.
//!
//! In the recommended stack it sits right after trace, before the total
//! timeout: a request that cannot succeed costs no retry, no rate-limit
//! token and no breaker slot.
//!
//! ```
//! use palisade_schema::SchemaLayer;
//! use tower::ServiceBuilder;
//! # let client = tower::service_fn(|_: http::Request<palisade_core::RequestBody>| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(()))
//! # });
//! let stack = ServiceBuilder::new()
//!     .layer(SchemaLayer::openai().max_body_bytes(1 << 20))
//!     .service(client);
//! # let _ = stack;
//! ```

mod layer;
mod output;
mod schema;
mod server;

pub use layer::{DEFAULT_MAX_BODY_BYTES, ResponseFuture, SchemaLayer, Validate};
pub use output::{CheckFuture, CheckOutput, OutputSchemaLayer};
pub use palisade_core::{Rejected, Violation};
pub use schema::{MAX_VIOLATIONS, Schema, SchemaError};
pub use server::{
    SchemaServerLayer, ServerFuture, ValidateServer, rejection_message, rejection_param,
    rejection_response,
};
