//! Replays the fuzz corpus (`fuzz/corpus/sse_decoder`) through the same
//! differential check the fuzz target runs, on every `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/split_check.rs"]
mod split_check;

#[test]
fn the_fuzz_corpus_replays_clean() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/sse_decoder");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus is checked in") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        // Every chunk size, not only the one the first byte picks.
        for size in 0..64u8 {
            let mut input = vec![size];
            input.extend_from_slice(data.get(1..).unwrap_or_default());
            split_check::check(&input);
        }
        n += 1;
    }
    assert!(n >= 10, "only {n} corpus files in {}", dir.display());
}
