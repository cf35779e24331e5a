//! A scriptable mock LLM upstream: OpenAI chat completions, Anthropic
//! messages, OpenAI's Responses API and embeddings, JSON and SSE, with
//! faults on demand.
//!
//! Every palisade crate tests against it, the gateway runs on it by default,
//! and users can test their own code with it. It answers by echoing the last
//! user message word by word (or with `n` generated words), as a JSON reply or
//! a stream, exactly in each provider's wire format: OpenAI `data:` chunks,
//! the usage chunk when `stream_options.include_usage` is set, `data: [DONE]`;
//! Anthropic `message_start` … `ping` … `message_stop`; the Responses API's
//! numbered events `response.created` … `response.completed`. A request
//! that requires a tool call (`tool_choice` `"required"`, naming a
//! function, or Anthropic's `any`/`tool`) is answered with a call to that
//! tool (else the first), each string parameter set to the last user
//! message. Embeddings are unit vectors of `dimensions` floats (default 8),
//! the same for the same input, as floats or base64.
//!
//! Per request, a [`Reply`] script can instead answer with any status and
//! headers (a 429 with `Retry-After`), wait before the headers or between
//! tokens, or inject a [`Fault`]: a reset before or after the first byte, a
//! stall, a truncated stream, malformed SSE or JSON, an in-band error event,
//! heartbeats without data, an oversized event. Streams of any size are
//! generated lazily as the client reads them.
//!
//! Every request is recorded (method, URI, headers, body, connection), so a
//! test can check what reached the upstream.
//!
//! Two ways to run it:
//! - in-process, as a tower `Service<http::Request<B>>` ([`MockUpstream`]):
//!   deterministic under `tokio::time::pause()`;
//! - on a loopback socket ([`MockUpstream::serve`] → [`MockServer`]), HTTP/1.1
//!   and h2c, counting connections.
//!
//! # Example
//!
//! ```
//! use palisade_mock::{Fault, MockUpstream, Reply};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! let mock = MockUpstream::new();
//! mock.push(Reply::status(429).header("retry-after", "1"));
//! mock.push(Reply::echo().fault_after(2, Fault::Reset));
//! let server = mock.serve().await?;
//! println!("OpenAI-compatible base URL: {}", server.base_url());
//! # Ok(()) }
//! ```

mod body;
mod script;
mod server;
mod upstream;
mod wire;

pub use body::MockBody;
pub use script::{Fault, Reply};
pub use server::MockServer;
pub use upstream::{MAX_RECORDED, MAX_REQUEST_BYTES, MockFuture, MockUpstream, RecordedRequest};
