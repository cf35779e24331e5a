//! The `o200k_base` tokenizer, counting only.
//!
//! `bpe-openai` splits the text with the encoding's pattern (a
//! `regex-automata` DFA, where tiktoken-rs runs `fancy-regex`'s backtracking
//! engine) and encodes each piece with `bpe`'s backtracking encoder, which
//! gives the same tokens as tiktoken's merges. As in tiktoken itself, a
//! piece that is one token of the vocabulary counts one without being
//! encoded (most pieces of prose are): that skips two allocations and a
//! search per piece. The vocabulary is indexed for that once per process
//! (token ids in a hash table keyed by their bytes: about 1.3 MB).

use std::sync::LazyLock;

use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64;

/// The vocabulary's token ids, found by their bytes.
static WHOLE: LazyLock<HashTable<u32>> = LazyLock::new(|| {
    let bpe = &bpe_openai::o200k_base().bpe;
    let n = u32::try_from(bpe.num_tokens()).unwrap_or(u32::MAX);
    let mut table = HashTable::with_capacity(n as usize);
    for id in 0..n {
        table.insert_unique(xxh3_64(bpe.token_bytes(id)), id, |&i| {
            xxh3_64(bpe.token_bytes(i))
        });
    }
    table
});

/// Tokens in `text`: what tiktoken's `encode_ordinary(text).len()` gives.
pub(super) fn count(text: &str) -> usize {
    let tokenizer = bpe_openai::o200k_base();
    let bpe = &tokenizer.bpe;
    tokenizer
        .split(text)
        .map(|piece| {
            let bytes = piece.as_bytes();
            let whole = WHOLE.find(xxh3_64(bytes), |&id| bpe.token_bytes(id) == bytes);
            if whole.is_some() { 1 } else { bpe.count(bytes) }
        })
        .sum()
}

/// Text that stresses the tokenizer's split and the cache's seams: line
/// breaks, whitespace of every kind, `/`, punctuation, contractions,
/// digits, letters and marks outside ASCII.
#[cfg(test)]
pub(super) fn stress_text() -> impl proptest::strategy::Strategy<Value = String> {
    proptest::string::string_regex(
        "([a-zA-Z]{1,8}|[0-9]{1,5}|[ \\t\\n\\r\\x0b\\x0c]{1,3}|[/.,!?:;'\"(){}$%*-]{1,3}|'s|'re|'LL|\u{a0}|\u{2028}|\u{3000}|\u{85}|\u{1c}|é|\u{301}|日本語|𝔘|🦀|²){0,12}",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tiktoken(text: &str) -> usize {
        tiktoken_rs::o200k_base_singleton()
            .encode_ordinary(text)
            .len()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// bpe-openai with the whole-piece shortcut counts what tiktoken-rs
        /// counts.
        #[test]
        fn counts_what_tiktoken_counts(text in stress_text()) {
            prop_assert_eq!(count(&text), tiktoken(&text));
        }
    }

    #[test]
    fn counts_what_tiktoken_counts_on_prose_code_and_json() {
        let samples = [
            include_str!("mod.rs"),
            "The quick brown fox jumps over the lazy dog. Tokenizers split words like \
             'antidisestablishmentarianism' into several pieces; emojis 🦀 too.",
            r#"{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}"#,
            "Revenue grew 4.2% to $12.5 million in the third quarter, while operating margin \
             held at 31% despite higher logistics costs.\n\n\t- item\r\n  /usr/bin/env   x",
            "Ünïcödé: 日本語のテキスト、中文文本, русский текст, العربية, हिन्दी, ﬁ ligatures",
        ];
        for text in samples {
            assert_eq!(count(text), tiktoken(text), "{text:.60}");
        }
    }
}
