//! Token estimation for a request, from the body parsed once
//! ([`ParsedBody`]): what a tokens-per-minute limit reserves before the call.
//!
//! The estimate is the prompt — every string under `messages`, `system`,
//! `tools` and `tool_choice` counted with the `o200k_base` tokenizer
//! (GPT-4o's, shipped inside `tiktoken-rs`; feature `tiktoken`, on by
//! default; about four bytes per token without it), plus four tokens of
//! framing per message; binary payloads (images, audio, documents) are left
//! out — plus the output budget (`max_completion_tokens` or `max_tokens`;
//! none when absent). Anthropic publishes no tokenizer: the same count is a
//! close stand-in. It is a reservation, not a bill: the rate limiter
//! reconciles it with the `usage` the upstream reports.

use serde_json::Value;

use crate::ParsedBody;

/// About how many bytes of text one token stands for (English prose and
/// code with the GPT-4o / Claude tokenizers): the fallback without the
/// `tiktoken` feature, and a quick bound for bodies nobody parsed.
pub const BYTES_PER_TOKEN: u64 = 4;

/// The estimated prompt and output tokens of a chat request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenEstimate {
    /// Prompt tokens.
    pub prompt: u64,
    /// The output budget the request sets (0 when it sets none).
    pub max_output: u64,
}

impl TokenEstimate {
    /// Prompt plus output budget: what to reserve.
    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.max_output)
    }
}

/// Estimates `body`'s tokens (OpenAI chat completions or Anthropic messages).
///
/// ```
/// use palisade_core::{ParsedBody, tokens::estimate};
///
/// let body = ParsedBody::parse(br#"{"model":"m","max_tokens":100,
///     "messages":[{"role":"user","content":"four score and seven years ago"}]}"#).unwrap();
/// let e = estimate(&body);
/// assert_eq!(e.max_output, 100);
/// // "four score and seven years ago" is 6 tokens, plus 4 of framing.
/// assert!(e.prompt >= 8 && e.prompt <= 14, "{e:?}");
/// ```
pub fn estimate(body: &ParsedBody) -> TokenEstimate {
    let v = body.value();
    let mut bytes = 0u64;
    let mut messages = 0u64;
    for key in ["messages", "system", "tools", "tool_choice"] {
        if let Some(part) = v.get(key) {
            bytes += text_bytes(part);
        }
    }
    if let Some(Value::Array(m)) = v.get("messages") {
        messages = m.len() as u64;
    }
    TokenEstimate {
        prompt: bytes.div_ceil(BYTES_PER_TOKEN) + 4 * messages,
        max_output: body.max_tokens().unwrap_or(0),
    }
}

/// Bytes of every string (and object key) inside `v`.
fn text_bytes(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Array(a) => a.iter().map(text_bytes).sum(),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| {
                if k == "role" || k == "type" {
                    1
                } else {
                    text_bytes(v)
                }
            })
            .sum(),
        _ => 1,
    }
}
