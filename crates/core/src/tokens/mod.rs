//! Token estimation for a request, from the body parsed once
//! ([`ParsedBody`]): what a tokens-per-minute limit reserves before the call.
//!
//! The estimate is the prompt plus the output budget:
//!
//! - **Text** — every string under `messages`, `system`, `instructions`,
//!   `input` (Responses API, embeddings), `prompt`, `tools`, `functions` and
//!   `tool_choice`, each followed by a line break — is counted with the
//!   `o200k_base` tokenizer (GPT-4o's tiktoken encoding; feature `tiktoken`,
//!   on by default; without it, [`BYTES_PER_TOKEN`] bytes per token) —
//!   exactly up to [`EXACT_TEXT_BYTES`], and the rest of a longer prompt at
//!   the ratio measured on that part, which bounds the cost. Tool
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
//!
//! # Cost: each message is counted once per process
//!
//! Agents resend the whole conversation with one new message on every call.
//! So the exactly counted text is cut into *runs* — a string and its line
//! break, in practice one message's text or one tool definition — and each
//! run's token count is kept in a process-wide cache: a conversation resent
//! with one more message tokenizes only that message (and nothing when the
//! message lies past [`EXACT_TEXT_BYTES`], where text is only measured).
//! The runs are cut only where the tokenizer itself splits the text: after
//! a line break, before a character that is neither whitespace nor `/` (a
//! string starting with one of those joins the run before it). So the sum
//! of the runs' counts is exactly the count of the text in one piece: **the
//! estimate is identical with or without the cache**, and identical to the
//! previous code, which counted the joined text with tiktoken-rs (tests
//! compare the two on random and real-shaped requests, each estimated three
//! times, and again with one more message).
//!
//! - **Key:** XXH3-128 (a fast non-cryptographic hash; `xxhash-rust`) of
//!   each string in the run, seeded at random once per process, chained over
//!   the run's strings and line breaks. Two different runs share a key with
//!   probability about 2⁻¹²⁸; a shared key would only give one run the
//!   other's count (an estimate off until the usage reconciles it).
//! - **Bound:** 4,096 counts (about 0.1 MiB, allocated when the cache is
//!   first used), in 1,024 sets of four, each set behind a `std::sync::Mutex`
//!   held only to compare or write four entries, never while tokenizing. A
//!   full set forgets its least recently used count.
//! - **Tokenizer:** the `o200k_base` encoding as `bpe-openai` implements it
//!   (a DFA for the split pattern, a backtracking BPE encoder), with
//!   tiktoken's shortcut of one token for a piece that is one token of the
//!   vocabulary (indexed once: about 1.3 MB). It counts what tiktoken-rs's
//!   `encode_ordinary` gives (tested on random and real text), about twice
//!   as fast (the bench's `tokenizer_2k` rows); its vocabulary ships inside
//!   the crate (no download). The tokenizer, the index and the cache are
//!   built at the first estimate (about 60 ms in a release build, where
//!   tiktoken-rs took about 0.35 s).
//!
//! `cargo bench -p palisade-core --bench tokens` measures a first call, the
//! same request again, and a conversation resent with one new message.

use serde_json::{Map, Value};

use crate::ParsedBody;

#[cfg(feature = "tiktoken")]
mod cache;
#[cfg(feature = "tiktoken")]
mod exact;
#[cfg(feature = "tiktoken")]
mod o200k;
#[cfg(all(test, feature = "tiktoken"))]
mod reference;

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

/// Builds the tokenizer and its tables now (tens of milliseconds, once
/// per process), so that the first [`estimate`] does not pay for it on a
/// request's path. [`TokenLimitLayer`]'s constructors call it; a server that
/// estimates by itself can call it at start. Later calls cost one small
/// estimate (a cache hit).
///
/// [`TokenLimitLayer`]: https://docs.rs/palisade-ratelimit
pub fn warm_up() {
    let body = ParsedBody::from_value(
        serde_json::json!({"messages": [{"role": "user", "content": "warm up"}]}),
        0,
    );
    let _ = estimate(&body);
}

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
    // Tool definitions count as their JSON text, made before the walk
    // borrows it.
    let tools: Vec<String> = TOOL_FIELDS
        .iter()
        .filter_map(|key| match v.get(key) {
            Some(Value::Array(tools)) => Some(tools),
            _ => None,
        })
        .flatten()
        .map(Value::to_string)
        .collect();
    let mut acc = Acc::default();
    for key in PROMPT_FIELDS {
        if let Some(part) = v.get(key) {
            acc.walk(part);
        }
    }
    for t in &tools {
        acc.push_line(t);
    }
    let messages = match v.get("messages") {
        Some(Value::Array(m)) => m.len() as u64,
        _ => 0,
    };
    let fixed = acc.fixed;
    let prompt = count_text(acc)
        .saturating_add(fixed)
        .saturating_add(MESSAGE_FRAMING_TOKENS * messages);
    TokenEstimate {
        prompt,
        max_output: body.max_tokens().unwrap_or(0),
    }
}

/// A string of the prompt (or the part of it within [`EXACT_TEXT_BYTES`]),
/// and whether its line break follows it.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "tiktoken"), allow(dead_code))]
struct Line<'a> {
    text: &'a str,
    newline: bool,
}

impl Line<'_> {
    /// Its length in bytes, with its line break.
    #[cfg_attr(not(feature = "tiktoken"), allow(dead_code))]
    fn len(&self) -> usize {
        self.text.len() + usize::from(self.newline)
    }
}

/// The text to tokenize, and the fixed costs met on the way.
///
/// Only the first [`EXACT_TEXT_BYTES`] of text are kept (the part counted
/// exactly), borrowed from the body; the rest is only measured, so a 30 MiB
/// prompt costs 8 KiB here, not a second copy of itself.
#[derive(Default)]
struct Acc<'a> {
    /// The kept text: these lines joined.
    #[cfg_attr(not(feature = "tiktoken"), allow(dead_code))]
    lines: Vec<Line<'a>>,
    /// Bytes of kept text (at most `EXACT_TEXT_BYTES`).
    len: usize,
    /// Bytes of text past the kept part.
    beyond: u64,
    fixed: u64,
}

impl<'a> Acc<'a> {
    /// Adds `s` and a line break, each kept while there is room (at a char
    /// boundary: a char that does not fit leaves its bytes to the line
    /// break), measured beyond it.
    fn push_line(&mut self, s: &'a str) {
        let room = EXACT_TEXT_BYTES.saturating_sub(self.len);
        let text = if s.len() <= room {
            s
        } else {
            let mut at = room;
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            self.beyond = self.beyond.saturating_add((s.len() - at) as u64);
            &s[..at]
        };
        self.len += text.len();
        let newline = self.len < EXACT_TEXT_BYTES;
        if newline {
            self.len += 1;
        } else {
            self.beyond = self.beyond.saturating_add(1);
        }
        if !text.is_empty() || newline {
            self.lines.push(Line { text, newline });
        }
    }

    fn walk(&mut self, v: &'a Value) {
        match v {
            Value::String(s) => {
                if is_data_url(s) {
                    self.fixed = self.fixed.saturating_add(IMAGE_TOKENS);
                } else {
                    self.push_line(s);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| self.walk(x)),
            Value::Object(o) => self.walk_object(o),
            // Numbers (embeddings' token arrays), booleans, null.
            _ => self.fixed = self.fixed.saturating_add(1),
        }
    }

    fn walk_object(&mut self, o: &'a Map<String, Value>) {
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

    /// The byte offset of the kept text's last whitespace character.
    #[cfg(feature = "tiktoken")]
    fn last_whitespace(&self) -> Option<usize> {
        let mut end = self.len;
        for line in self.lines.iter().rev() {
            if line.newline {
                return Some(end - 1);
            }
            let start = end - line.text.len();
            if let Some(at) = line.text.rfind(char::is_whitespace) {
                return Some(start + at);
            }
            end = start;
        }
        None
    }

    /// Keeps only the first `cut` bytes of the kept text (`cut` at a char
    /// boundary).
    #[cfg(feature = "tiktoken")]
    fn keep(&mut self, cut: usize) {
        let mut start = 0;
        for (i, line) in self.lines.iter_mut().enumerate() {
            if start + line.len() >= cut {
                if start + line.text.len() >= cut {
                    *line = Line {
                        text: &line.text[..cut - start],
                        newline: false,
                    };
                }
                self.lines.truncate(i + 1);
                break;
            }
            start += line.len();
        }
        self.len = cut;
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
/// estimate's cost is bounded (on a first call, when nothing is cached,
/// 8 KiB takes about 0.1 ms, where 100 KB would take over 1 ms on an async
/// worker).
pub const EXACT_TEXT_BYTES: usize = 8 * 1024;

/// Tokens in the kept text followed by `beyond` more bytes of text like it.
#[cfg(feature = "tiktoken")]
fn count_text(mut acc: Acc<'_>) -> u64 {
    if acc.beyond == 0 {
        return exact::count(&acc.lines);
    }
    // Cut the exact part at a line or word boundary (the kept text ends at a
    // char boundary) so no token is split.
    let mut cut = acc.len;
    if let Some(ws) = acc.last_whitespace() {
        if ws > cut / 2 {
            cut = ws;
        }
    }
    let rest = ((acc.len - cut) as u64).saturating_add(acc.beyond);
    acc.keep(cut);
    let exact = exact::count(&acc.lines);
    // rest × exact / cut, rounded up.
    exact.saturating_add(rest.saturating_mul(exact).div_ceil(cut.max(1) as u64))
}

#[cfg(not(feature = "tiktoken"))]
fn count_text(acc: Acc<'_>) -> u64 {
    (acc.len as u64)
        .saturating_add(acc.beyond)
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

    /// Estimates `body` three times (the first call may count, the others
    /// find the counts cached) and checks each against the previous code.
    #[cfg(feature = "tiktoken")]
    fn assert_same_as_before(body: &serde_json::Value) {
        let parsed = ParsedBody::parse(body.to_string().as_bytes()).unwrap();
        let want = reference::estimate(&parsed);
        for call in 0..3 {
            assert_eq!(estimate(&parsed), want, "call {call} of {body}");
        }
    }

    /// The bench's requests and a conversation growing one turn per call,
    /// past `EXACT_TEXT_BYTES`.
    #[cfg(feature = "tiktoken")]
    #[test]
    fn real_shaped_requests_estimate_as_before_cached_or_not() {
        use serde_json::json;
        let tool = json!({"type": "function", "function": {"name": "lookup_figure",
            "description": "Look up a figure", "parameters": {"type": "object",
            "properties": {"name": {"type": "string"}}, "required": ["name"]}}});
        let sentence = "Revenue grew 4.2% to $12.5 million in the third quarter, while operating \
                        margin held at 31% despite higher logistics costs. ";
        let mut messages = vec![json!({"role": "system", "content": "You are a careful analyst."})];
        for turn in 0..60 {
            messages.push(
                json!({"role": "user", "content": format!("Summarise part {turn}, exactly.")}),
            );
            messages.push(json!({"role": "assistant", "content": [
                {"type": "text", "text": format!("Part {turn}: {}", sentence.repeat(turn % 4))},
            ]}));
            if turn % 7 == 0 {
                // A pasted document, a path, a message led by whitespace.
                messages.push(json!({"role": "user", "content": sentence.repeat(40)}));
                messages.push(json!({"role": "user", "content": "/tmp/report.txt\n\n  indented"}));
            }
            let body =
                json!({"model": "m", "max_tokens": 64, "messages": &messages, "tools": [&tool]});
            assert_same_as_before(&body);
            // The Anthropic shape: `system` after the messages.
            let body = json!({"model": "m", "system": "Be brief.", "messages": &messages[1..]});
            assert_same_as_before(&body);
        }
    }

    /// The kept text ends inside a character that does not fit: its bytes
    /// go to the next line break, as before.
    #[cfg(feature = "tiktoken")]
    #[test]
    fn a_char_across_the_exact_limit_estimates_as_before() {
        use serde_json::json;
        for pad in 0..6 {
            let first = "a".repeat(EXACT_TEXT_BYTES - 4 - pad);
            let body = json!({"model": "m", "messages": [
                {"role": "user", "content": first},
                {"role": "user", "content": "€€ and then words"},
                {"role": "user", "content": "more"},
                {"role": "user", "content": "€"},
            ]});
            assert_same_as_before(&body);
        }
    }

    #[cfg(feature = "tiktoken")]
    mod same_as_before {
        #![allow(clippy::unwrap_used)]
        use super::*;
        use proptest::prelude::*;
        use serde_json::{Value, json};

        /// Strings that stress the cache's seams and the exact limit:
        /// whitespace of every kind first or last, `/`, punctuation,
        /// contractions, digits, text outside ASCII, and now and then
        /// thousands of bytes.
        fn text() -> impl Strategy<Value = String> {
            let short = || {
                proptest::string::string_regex(
                    "([a-zA-Z]{1,8}|[0-9]{1,5}|[ \\t\\n\\r]{1,3}|[/.,!?:'\"(){}$%-]{1,3}|'s|\u{a0}|\u{2028}|é|\u{301}|日本|🦀){0,10}",
                )
                .unwrap()
            };
            prop_oneof![
                8 => short(),
                1 => (short(), 50..700usize).prop_map(|(s, n)| format!("{s} ").repeat(n)),
            ]
        }

        fn content() -> impl Strategy<Value = Value> {
            prop_oneof![
                3 => text().prop_map(Value::String),
                1 => proptest::collection::vec(text(), 0..3).prop_map(|parts| {
                    Value::Array(parts.into_iter().map(|t| json!({"type": "text", "text": t})).collect())
                }),
            ]
        }

        fn request() -> impl Strategy<Value = (Value, Value)> {
            (
                proptest::collection::vec((prop::sample::select(vec!["system", "user", "assistant"]), content()), 0..8),
                proptest::option::of(text()),
                proptest::option::of(text()),
                (prop::sample::select(vec!["user", "assistant"]), content()),
            )
                .prop_map(|(messages, system, tool, next)| {
                    let messages: Vec<Value> = messages
                        .into_iter()
                        .map(|(role, content)| json!({"role": role, "content": content}))
                        .collect();
                    let mut body = json!({"model": "m", "messages": messages});
                    if let Some(s) = system {
                        body["system"] = Value::String(s);
                    }
                    if let Some(d) = tool {
                        body["tools"] = json!([{"type": "function", "function": {"name": "f", "description": d}}]);
                    }
                    (body, json!({"role": next.0, "content": next.1}))
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(96))]

            /// Cached or not, the estimate is the previous code's; and
            /// again when the conversation comes back with one more message.
            #[test]
            fn random_requests_estimate_as_before((mut body, next) in request()) {
                assert_same_as_before(&body);
                body["messages"].as_array_mut().unwrap().push(next);
                assert_same_as_before(&body);
            }
        }
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
