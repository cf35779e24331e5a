//! The schema layer's input path on arbitrary bytes: parse once, check
//! against both bundled schemas. Must never panic; every violation points
//! somewhere (empty or a JSON pointer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_core::ParsedBody;
use palisade_schema::Schema;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = ParsedBody::parse(data) else {
        return;
    };
    for schema in [Schema::openai_chat(), Schema::anthropic_messages()] {
        if let Err(r) = schema.check(parsed.value()) {
            assert!(!r.violations().is_empty());
            for v in r.violations() {
                assert!(v.pointer().is_empty() || v.pointer().starts_with('/'));
            }
        } else {
            assert!(schema.is_valid(parsed.value()));
        }
    }
});
