//! The Redis backend's cost per call: 10,000 sequential admissions through
//! `RedisRateLimitLayer` against a `redis-server` started on loopback, next
//! to the in-process bucket; then 10,000 calls through `TokenLimitLayer`
//! kept in Redis (the estimate reserved in one script; the settlement, a
//! second script, sent in the background as each answer ends) next to the
//! in-process one; p50 / p99.
//!
//! `cargo run --release -p palisade-ratelimit --example redis_roundtrip`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use http::{Request, Response};
use palisade_core::test_util::RedisServer;
use palisade_ratelimit::{RateLimitLayer, RedisRateLimitLayer, TokenLimitLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

const N: usize = 10_000;

/// A chat request, answered with usage, read to its end (so it settles).
async fn measure_tokens<S, B>(mut svc: S) -> (Duration, Duration)
where
    S: Service<Request<palisade_core::RequestBody>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body + Unpin,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    let body = r#"{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"how long is a piece of string"}]}"#;
    let mut lat = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let req = Request::post("/v1/chat/completions")
            .body(palisade_core::RequestBody::from(body))
            .unwrap();
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        res.into_body().collect().await.unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    (lat[N / 2], lat[N * 99 / 100])
}

async fn measure<S>(mut svc: S) -> (Duration, Duration)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let mut lat = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    (lat[N / 2], lat[N * 99 / 100])
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let redis = RedisServer::start();
    let ok =
        service_fn(|_: Request<()>| async { Ok::<_, std::convert::Infallible>(Response::new(())) });
    let big = 1_000_000_000;
    let remote = RedisRateLimitLayer::new(&redis.url(), "bench", big, 1e6)
        .unwrap()
        .timeout(Duration::from_secs(1))
        .fail_closed()
        .layer(ok);
    let local = RateLimitLayer::try_new(big, 1e6).unwrap().layer(ok);
    let _ = measure(remote.clone()).await; // warm: connect, load the script
    let (rp50, rp99) = measure(remote).await;
    let (lp50, lp99) = measure(local).await;
    println!("{N} sequential admissions, one task:");
    println!("  Redis backend:      p50 {rp50:?}  p99 {rp99:?}");
    println!("  in-process bucket:  p50 {lp50:?}  p99 {lp99:?}");

    let answer = service_fn(|_: Request<palisade_core::RequestBody>| async {
        Ok::<_, std::convert::Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    br#"{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}"#,
                )))
                .unwrap(),
        )
    });
    let tokens = || TokenLimitLayer::try_new(big, 1e6).unwrap();
    let remote = tokens()
        .redis(&redis.url(), "bench:tpm")
        .unwrap()
        .redis_timeout(Duration::from_secs(1))
        .fail_closed()
        .layer(answer);
    let local = tokens().layer(answer);
    let _ = measure_tokens(remote.clone()).await;
    let (rp50, rp99) = measure_tokens(remote).await;
    let (lp50, lp99) = measure_tokens(local).await;
    println!("{N} sequential token-limited calls (estimate, reserve, answer, settle), one task:");
    println!("  tokens per minute in Redis:  p50 {rp50:?}  p99 {rp99:?}");
    println!("  in process:                  p50 {lp50:?}  p99 {lp99:?}");
}
