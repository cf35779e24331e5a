//! The client's per-request work allocates nothing beyond what hyper does,
//! for absolute URIs and for relative URIs of the well-known LLM endpoints;
//! another relative path costs two small allocations (its joined path, and
//! the promotion of that buffer when hyper-util clones the URI).
//!
//! Counted with dhat's heap profiler in testing mode: the number of heap
//! blocks allocated by `HttpClient::call` is compared with the number
//! allocated by hyper-util's own `Client::request` for the same request (with
//! the headers we would add already present). Neither future is polled: what
//! is measured is the synchronous work per request, which is where our
//! preparation happens; the exchange itself is hyper's.
//!
//! One test per binary: dhat counts process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_client::{Auth, HttpClient, KeySource};
use palisade_core::RequestBody;
use tower::Service;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const N: u64 = 200;
const BODY: &str = r#"{"model":"mock","messages":[{"role":"user","content":"hi"}]}"#;

fn blocks() -> u64 {
    dhat::HeapStats::get().total_blocks
}

fn request(uri: &str, with_added_headers: bool) -> Request<RequestBody> {
    let mut b = Request::post(uri).header("content-type", "application/json");
    if with_added_headers {
        b = b
            .header("user-agent", "palisade/0.1.0")
            .header("authorization", "Bearer alloc-test-key");
    }
    b.body(RequestBody::from(BODY)).unwrap()
}

/// Allocations per call of `f` over `N` prepared requests.
fn per_call<F: FnMut(Request<RequestBody>) -> R, R>(
    mut make: impl FnMut() -> Request<RequestBody>,
    mut f: F,
) -> f64 {
    // Warm up: first uses register tracing callsites, promote shared bytes.
    for _ in 0..3 {
        drop(f(make()));
    }
    let reqs: Vec<_> = (0..N).map(|_| make()).collect();
    let mut outs = Vec::with_capacity(N as usize);
    let before = blocks();
    for r in reqs {
        outs.push(f(r));
    }
    let after = blocks();
    drop(outs);
    (after - before) as f64 / N as f64
}

#[test]
fn call_allocates_only_what_hyper_does_plus_the_joined_path() {
    let _profiler = dhat::Profiler::builder().testing().build();

    let raw: Client<_, RequestBody> = Client::builder(TokioExecutor::new()).build_http();
    let abs = "http://127.0.0.1:9/v1/chat/completions";
    let hyper_only = per_call(|| request(abs, true), |r| raw.request(r));

    let mut ours = HttpClient::builder()
        .base_url("http://127.0.0.1:9/v1")
        .auth(Auth::openai(KeySource::literal("alloc-test-key")))
        .build()
        .unwrap();
    let ours_absolute = per_call(|| request(abs, false), |r| ours.call(r));
    let ours_known = per_call(|| request("/chat/completions", false), |r| ours.call(r));
    let ours_other = per_call(|| request("/fine_tuning/jobs", false), |r| ours.call(r));

    println!(
        "allocations per request: hyper-util {hyper_only}, palisade absolute URI {ours_absolute}, \
         palisade /chat/completions {ours_known}, palisade other relative path {ours_other}"
    );
    // dhat counts every thread of the process: a stray allocation elsewhere
    // (the test harness, a runtime thread) can add a few hundredths per call.
    // What is checked is the whole number of allocations per call.
    let same = |a: f64, b: f64| (a - b).abs() < 0.1;
    assert!(
        same(ours_absolute, hyper_only),
        "with an absolute URI the client adds no allocation: {ours_absolute} vs {hyper_only}"
    );
    assert!(
        same(ours_known, hyper_only),
        "a well-known endpoint's URI is pre-joined, no allocation: {ours_known} vs {hyper_only}"
    );
    assert!(
        same(ours_other, hyper_only + 2.0),
        "another relative path costs its joined path and that buffer's promotion: {ours_other} vs {hyper_only} + 2"
    );
}
