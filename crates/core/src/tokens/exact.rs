//! The exact count of the kept text, one run of lines at a time, each run's
//! count remembered in the process-wide [`CountCache`].
//!
//! # Why the sum of the runs is the count of the whole
//!
//! The tokenizer first splits text into pieces with the `o200k_base`
//! pattern, then encodes each piece alone: the count of a text is the sum
//! over its pieces. So where a text `A + B` is split at the seam between
//! `A` and `B`, and each side splits as it does alone, the count of `A + B`
//! is the count of `A` plus the count of `B`. That holds when `A` ends with
//! `\n` and `B` begins with a character that is neither whitespace nor `/`:
//!
//! - the pattern's alternatives that can take a `\n` are `\s*[\r\n]+`
//!   (a run of whitespace ending at its last line break), `\s+(?!\S)` and
//!   `\s+` (whitespace runs), and ` ?[^\s\p{L}\p{N}]+[\r\n/]*` (punctuation
//!   then line breaks and slashes); the letter and digit alternatives never
//!   do;
//! - so the piece holding `A`'s final `\n` can only grow past it over
//!   whitespace or `/`; with `B`'s first character neither, that piece ends
//!   at the seam, as it does at the end of `A` alone (`\s*[\r\n]+` is tried
//!   before the look-ahead alternatives, and matches there either way);
//! - every earlier piece of `A` ended before reaching `A`'s end, so it never
//!   looked at `B`; and the pattern only looks forward, so `B` splits from
//!   the seam as it does alone.
//!
//! `char::is_whitespace` is Unicode's `White_Space`, the pattern's `\s`.
//! Every line the estimate keeps ends with `\n` (but perhaps the last), so
//! seams fall between messages unless the next one starts with whitespace
//! or `/`, which then joins the run before it. Tests compare the sum with
//! one count of the whole text.

use std::sync::LazyLock;

use xxhash_rust::xxh3::{xxh3_128, xxh3_128_with_seed};

use super::Line;
use super::cache::CountCache;
use super::o200k;

/// The process's counts.
static CACHE: LazyLock<CountCache> = LazyLock::new(CountCache::new);

/// The hash seed, random per process (so that a collision found offline
/// does not carry over).
static SEED: LazyLock<u64> = LazyLock::new(|| {
    use std::hash::BuildHasher;
    std::hash::RandomState::new().hash_one(0x7061_6c69_7361_6465_u64)
});

/// Tokens of `lines` joined, as one text.
pub(super) fn count(lines: &[Line<'_>]) -> u64 {
    count_with(&CACHE, lines)
}

/// [`count`] with the counts kept in `cache`.
pub(super) fn count_with(cache: &CountCache, lines: &[Line<'_>]) -> u64 {
    let mut total = 0u64;
    let mut start = 0;
    for end in 1..=lines.len() {
        if end == lines.len() || is_seam(&lines[end - 1], &lines[end]) {
            let run = &lines[start..end];
            total += u64::from(cache.get_or_count(key(run), || count_run(run)));
            start = end;
        }
    }
    total
}

/// Whether the tokenizer splits `prev + next` between the two (see the
/// module docs).
fn is_seam(prev: &Line<'_>, next: &Line<'_>) -> bool {
    let ends_with_newline = prev.newline || prev.text.ends_with('\n');
    // An empty text with its line break starts with `\n`.
    let first = next.text.chars().next().unwrap_or('\n');
    ends_with_newline && !first.is_whitespace() && first != '/'
}

/// The cache key of a run: XXH3-128 of each line's text (seeded), chained
/// with XXH3-128 over (key so far, text hash, line break).
fn key(run: &[Line<'_>]) -> u128 {
    let seed = *SEED;
    run.iter().fold(0u128, |acc, line| {
        let mut buf = [0u8; 33];
        buf[..16].copy_from_slice(&acc.to_le_bytes());
        buf[16..32].copy_from_slice(&xxh3_128_with_seed(line.text.as_bytes(), seed).to_le_bytes());
        buf[32] = u8::from(line.newline);
        xxh3_128(&buf)
    })
}

/// Tokens of one run, counted by the tokenizer.
fn count_run(run: &[Line<'_>]) -> u32 {
    let n = match run {
        [
            Line {
                text,
                newline: false,
            },
        ] => o200k::count(text),
        _ => {
            let mut joined = String::with_capacity(run.iter().map(Line::len).sum());
            for line in run {
                joined.push_str(line.text);
                if line.newline {
                    joined.push('\n');
                }
            }
            o200k::count(&joined)
        }
    };
    // A run is at most `EXACT_TEXT_BYTES` long, so far below `u32::MAX`.
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn tiktoken(text: &str) -> usize {
        tiktoken_rs::o200k_base_singleton()
            .encode_ordinary(text)
            .len()
    }

    fn joined(lines: &[Line<'_>]) -> String {
        lines
            .iter()
            .map(|l| format!("{}{}", l.text, if l.newline { "\n" } else { "" }))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The sum over runs is one count of the joined text, cached or not.
        #[test]
        fn runs_add_up_to_the_whole(
            parts in proptest::collection::vec((o200k::stress_text(), any::<bool>()), 0..8),
        ) {
            let mut lines: Vec<Line<'_>> = parts
                .iter()
                .map(|(t, nl)| Line { text: t, newline: *nl })
                .collect();
            // Only the last line may lack its line break.
            let n = lines.len();
            for l in lines.iter_mut().take(n.saturating_sub(1)) {
                l.newline = true;
            }
            let want = tiktoken(&joined(&lines)) as u64;
            let cache = CountCache::new();
            prop_assert_eq!(count_with(&cache, &lines), want);
            // Again, from the cache.
            prop_assert_eq!(count_with(&cache, &lines), want);
        }
    }

    #[test]
    fn seams_fall_where_the_tokenizer_splits() {
        let line = |text| Line {
            text,
            newline: true,
        };
        assert!(is_seam(&line("hello."), &line("world")));
        assert!(is_seam(&line("hello"), &line("{\"type\":1}")));
        // `.\n/` is one piece; `\n\n` and `\n ` may be too.
        assert!(!is_seam(&line("hello."), &line("/path")));
        assert!(!is_seam(&line("a"), &line("\nb")));
        assert!(!is_seam(&line("a"), &line(" b")));
        assert!(!is_seam(&line("a"), &line("\u{a0}b")));
        assert!(!is_seam(&line("a"), &line("")));
        // The previous line must end with its line break.
        assert!(!is_seam(
            &Line {
                text: "a",
                newline: false
            },
            &line("b")
        ));
    }

    #[test]
    fn a_repeated_run_is_counted_once() {
        let cache = CountCache::new();
        let a = [Line {
            text: "The quick brown fox.",
            newline: true,
        }];
        let n = count_with(&cache, &a);
        assert_eq!(n, tiktoken("The quick brown fox.\n") as u64);
        let mut counted = false;
        let again = cache.get_or_count(key(&a), || {
            counted = true;
            0
        });
        assert_eq!((again, counted), (n as u32, false));
    }
}
