//! The estimate as it was before the cache and `bpe-openai`: the kept
//! text copied into one `String` and counted at once by tiktoken-rs. Tests
//! compare [`super::estimate`] with it. (Copied from the previous
//! `tokens.rs`; only paths changed.)
#![allow(clippy::unwrap_used)]

use serde_json::{Map, Value};

use super::{
    BYTES_PER_TOKEN, EXACT_TEXT_BYTES, IMAGE_TOKENS, MESSAGE_FRAMING_TOKENS, PROMPT_FIELDS,
    TOOL_FIELDS, TokenEstimate, binary_cost, is_data_url,
};
use crate::ParsedBody;

/// The previous `estimate`.
pub(super) fn estimate(body: &ParsedBody) -> TokenEstimate {
    let v = body.value();
    let mut acc = Acc::default();
    for key in PROMPT_FIELDS {
        if let Some(part) = v.get(key) {
            acc.walk(part);
        }
    }
    for key in TOOL_FIELDS {
        if let Some(Value::Array(tools)) = v.get(key) {
            for t in tools {
                acc.push(&t.to_string());
                acc.push("\n");
            }
        }
    }
    let messages = match v.get("messages") {
        Some(Value::Array(m)) => m.len() as u64,
        _ => 0,
    };
    let prompt = count_text(&acc.text, acc.beyond)
        .saturating_add(acc.fixed)
        .saturating_add(MESSAGE_FRAMING_TOKENS * messages);
    TokenEstimate {
        prompt,
        max_output: body.max_tokens().unwrap_or(0),
    }
}

#[derive(Default)]
struct Acc {
    text: String,
    /// Bytes of text past the kept part.
    beyond: u64,
    fixed: u64,
}

impl Acc {
    fn push(&mut self, s: &str) {
        let room = EXACT_TEXT_BYTES.saturating_sub(self.text.len());
        if s.len() <= room {
            self.text.push_str(s);
            return;
        }
        let mut at = room;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        self.text.push_str(&s[..at]);
        self.beyond = self.beyond.saturating_add((s.len() - at) as u64);
    }

    fn walk(&mut self, v: &Value) {
        match v {
            Value::String(s) => {
                if is_data_url(s) {
                    self.fixed = self.fixed.saturating_add(IMAGE_TOKENS);
                } else {
                    self.push(s);
                    self.push("\n");
                }
            }
            Value::Array(a) => a.iter().for_each(|x| self.walk(x)),
            Value::Object(o) => self.walk_object(o),
            // Numbers (embeddings' token arrays), booleans, null.
            _ => self.fixed = self.fixed.saturating_add(1),
        }
    }

    fn walk_object(&mut self, o: &Map<String, Value>) {
        if let Some(cost) = o.get("type").and_then(Value::as_str).and_then(binary_cost) {
            self.fixed = self.fixed.saturating_add(cost);
            return;
        }
        for (k, v) in o {
            match k.as_str() {
                // A role or block type: one token, not its spelling.
                "role" | "type" => self.fixed = self.fixed.saturating_add(1),
                // Opaque payloads: a signature, an id, the raw cache
                // control — not prompt text.
                "signature" | "cache_control" | "id" | "tool_use_id" | "tool_call_id" => {}
                _ => self.walk(v),
            }
        }
    }
}

/// Tokens in `text` followed by `beyond` more bytes of text like it.
fn count_text(text: &str, beyond: u64) -> u64 {
    use std::sync::LazyLock;
    // Built once (the embedded vocabulary); `None` only if tiktoken-rs's own
    // embedded data were broken, and then bytes stand in.
    static O200K: LazyLock<Option<tiktoken_rs::CoreBPE>> =
        LazyLock::new(|| tiktoken_rs::o200k_base().ok());
    let Some(bpe) = &*O200K else {
        return (text.len() as u64)
            .saturating_add(beyond)
            .div_ceil(BYTES_PER_TOKEN);
    };
    if beyond == 0 && text.len() <= EXACT_TEXT_BYTES {
        return bpe.count_ordinary(text) as u64;
    }
    // Cut the exact part at a line or word boundary (a char boundary at
    // least) so no token is split.
    let mut cut = EXACT_TEXT_BYTES.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if let Some(ws) = text[..cut].rfind(char::is_whitespace) {
        if ws > cut / 2 {
            cut = ws;
        }
    }
    let exact = bpe.count_ordinary(&text[..cut]) as u64;
    let rest = ((text.len() - cut) as u64).saturating_add(beyond);
    // rest × exact / cut, rounded up.
    exact + (rest * exact).div_ceil(cut.max(1) as u64)
}
