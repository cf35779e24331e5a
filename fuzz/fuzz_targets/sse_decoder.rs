//! Differential fuzzing of the SSE decoder: whole versus chunked decoding
//! must agree, and nothing may panic. `cargo fuzz run sse_decoder`.
#![no_main]

#[path = "../../crates/sse/tests/common/split_check.rs"]
mod split_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| split_check::check(data));
