//! `LogCapture` sees the events of a callsite that another thread, with no
//! subscriber of its own, reached first while the capture was on.

use palisade_core::test_util::LogCapture;

fn probe(n: u32) {
    tracing::info!(n, "probe");
}

#[test]
fn a_callsite_first_reached_by_another_thread_is_still_captured() {
    let logs = LogCapture::new();
    let _guard = logs.set_default();
    // The other thread registers the callsite while this capture is the
    // only live subscriber: tracing then asks only that thread's (absent)
    // subscriber and could cache "never" for every thread.
    std::thread::spawn(|| probe(1))
        .join()
        .expect("the probe thread does not panic");
    probe(2);
    let text = logs.contents();
    assert!(text.contains("probe n=2"), "captured: {text:?}");
    assert!(!text.contains("n=1"), "another thread's event: {text:?}");
}
