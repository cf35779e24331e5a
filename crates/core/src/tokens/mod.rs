//! Token estimation for a request, from the body parsed once
//! ([`ParsedBody`]): what a tokens-per-minute limit reserves before the call.
//!
//! The estimate is the prompt plus the output budget:
//!
//! - **Text** — every string under `messages`, `system`, `instructions`,
//!   `input` (Responses API, embeddings), `prompt`, `tools`, `functions` and
//!   `tool_choice` — is counted with the `o200k_base` tokenizer (GPT-4o's
//!   tiktoken encoding, as `bpe-openai` implements it: the same counts as
//!   tiktoken-rs, in less than half the time; its vocabulary ships inside
//!   the crate, no download; feature `tiktoken`, on by default; without it,
//!   [`BYTES_PER_TOKEN`] bytes per token) — exactly up to
//!   [`EXACT_TEXT_BYTES`], and the rest of a longer prompt at the ratio
//!   measured on that part, which bounds the cost. Tool
//!   definitions are counted as their JSON text (that is how providers put
//!   them in the prompt); roles and block types count one token each; each
//!   message adds [`MESSAGE_FRAMING_TOKENS`]. Anthropic publishes no
//!   tokenizer: the same count is a close stand-in.
//! - **Binary payloads are never counted as text.** An image (OpenAI
//!   `image_url` / `input_image` parts, Anthropic `image` blocks, or any
//!   `data:` URL) costs [`IMAGE_TOKENS`] — the most either provider documents
//!   for one image (Anthropic: width × height / 750, capped near 1,600;
//!   OpenAI high detail: 85 + 170 per 512 px tile, 765 for 1024 × 1024). Audio,
//!   documents and files cost [`FILE_TOKENS`] each: their real cost depends on
//!   their length, which the request does not state; reconciliation with the
//!   reported usage corrects it.
//! - **The output budget** is `max_completion_tokens`, `max_tokens` or
//!   `max_output_tokens`, in any JSON number shape (none when absent).
//!
//! It is a reservation, not a bill: the rate limiter reconciles it with the
//! `usage` the upstream reports.

use serde_json::{Map, Value};

use crate::ParsedBody;

#[cfg(feature = "tiktoken")]
mod o200k;

/// About how many bytes of text one token stands for (English prose and
/// code with the GPT-4o / Claude tokenizers): the count without the
/// `tiktoken` feature, and a quick bound for bodies nobody parsed.
pub const BYTES_PER_TOKEN: u64 = 4;

/// What one image costs in the estimate (see the module docs).
pub const IMAGE_TOKENS: u64 = 1_600;

/// What one audio clip, document or file costs in the estimate.
pub const FILE_TOKENS: u64 = 1_600;

/// Tokens of framing per message (role markers and separators).
pub const MESSAGE_FRAMING_TOKENS: u64 = 4;

/// The estimated prompt and output tokens of a request.
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

/// The top-level fields whose text is prompt.
const PROMPT_FIELDS: [&str; 6] = [
    "messages",
    "system",
    "instructions",
    "input",
    "prompt",
    "tool_choice",
];

/// The top-level fields holding tool definitions (counted as JSON text).
const TOOL_FIELDS: [&str; 2] = ["tools", "functions"];

/// Estimates `body`'s tokens (chat completions, messages, Responses API or
/// embeddings request).
///
/// ```
/// use palisade_core::{ParsedBody, tokens::estimate};
///
/// let body = ParsedBody::parse(br#"{"model":"m","max_tokens":100,
///     "messages":[{"role":"user","content":"four score and seven years ago"}]}"#).unwrap();
/// let e = estimate(&body);
/// assert_eq!(e.max_output, 100);
/// // "four score and seven years ago" and its line break are 7 tokens with
/// // o200k_base, plus the role (1) and the message's framing (4).
/// assert_eq!(e.prompt, 12);
/// ```
pub fn estimate(body: &ParsedBody) -> TokenEstimate {
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

/// The text to tokenize, and the fixed costs met on the way.
///
/// Only the first [`EXACT_TEXT_BYTES`] of text are kept (the part counted
/// exactly); the rest is only measured, so a 30 MiB prompt costs 8 KiB
/// here, not a second copy of itself.
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

/// The fixed cost of a part or block of this `type`, when it is binary.
fn binary_cost(kind: &str) -> Option<u64> {
    match kind {
        "image" | "image_url" | "input_image" => Some(IMAGE_TOKENS),
        "input_audio" | "audio" | "document" | "file" | "input_file" => Some(FILE_TOKENS),
        _ => None,
    }
}

/// `data:…;base64,…`: an inline binary payload.
fn is_data_url(s: &str) -> bool {
    s.len() > 5
        && s.as_bytes()[..5].eq_ignore_ascii_case(b"data:")
        && s.get(..s.len().min(256))
            .is_some_and(|h| h.contains(";base64,"))
}

/// The prompt text counted exactly with the tokenizer: 8 KiB. Beyond it the
/// rest is counted at the tokens-per-byte ratio of that first part, so the
/// estimate's cost is bounded (the tokenizer runs at about 20 MB/s: 8 KiB
/// is about 0.4 ms, where 100 KB would be 5 ms on an async worker).
pub const EXACT_TEXT_BYTES: usize = 8 * 1024;

/// Tokens in `text` followed by `beyond` more bytes of text like it.
#[cfg(feature = "tiktoken")]
fn count_text(text: &str, beyond: u64) -> u64 {
    if beyond == 0 && text.len() <= EXACT_TEXT_BYTES {
        return o200k::count(text) as u64;
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
    let exact = o200k::count(&text[..cut]) as u64;
    let rest = ((text.len() - cut) as u64).saturating_add(beyond);
    // rest × exact / cut, rounded up.
    exact + (rest * exact).div_ceil(cut.max(1) as u64)
}

#[cfg(not(feature = "tiktoken"))]
fn count_text(text: &str, beyond: u64) -> u64 {
    (text.len() as u64)
        .saturating_add(beyond)
        .div_ceil(BYTES_PER_TOKEN)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn est(json: &str) -> TokenEstimate {
        estimate(&ParsedBody::parse(json.as_bytes()).unwrap())
    }

    #[cfg(feature = "tiktoken")]
    fn o200k(text: &str) -> u64 {
        tiktoken_rs::o200k_base_singleton()
            .encode_ordinary(text)
            .len() as u64
    }

    #[cfg(feature = "tiktoken")]
    #[test]
    fn text_is_counted_with_the_tokenizer() {
        let prose = "The quick brown fox jumps over the lazy dog. Tokenizers split words like \
                     'antidisestablishmentarianism' into several pieces; emojis 🦀 too.";
        let body = serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": prose}],
        })
        .to_string();
        // The tokenizer's own count of the text (and its separator), the
        // role, the framing.
        let want = o200k(&format!("{prose}\n")) + 1 + MESSAGE_FRAMING_TOKENS;
        assert_eq!(est(&body).prompt, want);
        // Not bytes over four.
        assert_ne!(want, (prose.len() as u64).div_ceil(4) + 1 + 4);
    }

    #[cfg(feature = "tiktoken")]
    #[test]
    fn every_message_and_the_system_prompt_count() {
        let body = r#"{"model":"m","max_tokens":7,"system":"be brief",
            "messages":[{"role":"user","content":[{"type":"text","text":"hello there"}]},
                        {"role":"assistant","content":"general kenobi"}]}"#;
        let want = o200k("be brief\nhello there\ngeneral kenobi\n")
            + 2 // roles
            + 1 // the text block's type
            + 2 * MESSAGE_FRAMING_TOKENS;
        assert_eq!(
            est(body),
            TokenEstimate {
                prompt: want,
                max_output: 7
            }
        );
    }

    #[cfg(feature = "tiktoken")]
    #[test]
    fn a_long_prompt_is_counted_within_two_percent_at_a_bounded_cost() {
        let prose = "Revenue grew 4.2% to $12.5 million in the third quarter, while operating \
                     margin held at 31% despite higher logistics costs; the board approved a \
                     dividend of 0.18 per share. ";
        let text = prose.repeat(400); // ~70 KB
        assert!(text.len() > 8 * EXACT_TEXT_BYTES);
        let body =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": text}]})
                .to_string();
        let exact = o200k(&format!("{text}\n")) + 1 + MESSAGE_FRAMING_TOKENS;
        let got = est(&body).prompt;
        let err = (got as f64 - exact as f64).abs() / exact as f64;
        assert!(err < 0.02, "estimate {got}, tokenizer {exact}");
    }

    #[test]
    fn a_large_image_is_not_counted_as_text() {
        let b64 = "A".repeat(1_000_000);
        for body in [
            // OpenAI
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"text","text":"what is this"}},
                {{"type":"image_url","image_url":{{"url":"data:image/png;base64,{b64}","detail":"high"}}}}]}}]}}"#
            ),
            // Anthropic
            format!(
                r#"{{"model":"m","max_tokens":1,"messages":[{{"role":"user","content":[{{"type":"text","text":"what is this"}},
                {{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{b64}"}}}}]}}]}}"#
            ),
        ] {
            let e = est(&body);
            assert!(
                e.prompt >= IMAGE_TOKENS && e.prompt < IMAGE_TOKENS + 20,
                "{e:?}"
            );
        }
        // A bare data URL somewhere else is not text either.
        let body = format!(
            r#"{{"model":"m","input":[{{"role":"user","content":"data:audio/wav;base64,{b64}"}}]}}"#
        );
        assert!(est(&body).prompt < IMAGE_TOKENS + 10);
    }

    #[test]
    fn documents_and_audio_cost_a_fixed_amount() {
        let body = r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[
            {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0xLjQK"}},
            {"type":"input_audio","input_audio":{"data":"UklGRg==","format":"wav"}}]}]}"#;
        let e = est(body);
        assert_eq!(e.prompt, 2 * FILE_TOKENS + 1 + MESSAGE_FRAMING_TOKENS);
    }

    #[test]
    fn tools_count_as_their_json_text() {
        let without = est(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        let with = est(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function",
            "function":{"name":"get_weather","description":"Get the weather for a city",
            "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]}"#,
        );
        assert!(with.prompt > without.prompt + 20, "{with:?} vs {without:?}");
    }

    #[test]
    fn the_output_budget_takes_any_number_shape() {
        let m = r#""messages":[{"role":"user","content":"hi"}]"#;
        for (field, want) in [
            (r#""max_tokens":1000"#, 1000),
            (r#""max_tokens":1e3"#, 1000),
            (r#""max_tokens":1000.0"#, 1000),
            (r#""max_completion_tokens":64"#, 64),
            (r#""max_output_tokens":32"#, 32),
            (r#""max_tokens":1.8e19"#, 18_000_000_000_000_000_000),
            (r#""max_tokens":1e300"#, u64::MAX),
            (r#""max_tokens":18446744073709551616"#, u64::MAX),
            (r#""max_tokens":-5"#, 0),
            (r#""max_tokens":"many""#, 0),
        ] {
            let e = est(&format!(r#"{{"model":"m",{field},{m}}}"#));
            assert_eq!(e.max_output, want, "{field}");
        }
        assert_eq!(
            est(&format!(r#"{{"model":"m","max_tokens":1e300,{m}}}"#)).total(),
            u64::MAX
        );
    }

    #[test]
    fn embeddings_inputs_count() {
        let text = est(r#"{"model":"e","input":["alpha beta","gamma"]}"#);
        assert!(text.prompt >= 3, "{text:?}");
        // Token arrays: one token per number.
        let ids = est(r#"{"model":"e","input":[[1,2,3,4,5]]}"#);
        assert_eq!(ids.prompt, 5);
    }
}
