//! The Redis backend's cost per call: 10,000 sequential admissions through
//! `RedisRateLimitLayer` against a `redis-server` started on loopback, next
//! to the in-process bucket; p50 / p99.
//!
//! `cargo run --release -p palisade-ratelimit --example redis_roundtrip`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use http::{Request, Response};
use palisade_core::test_util::RedisServer;
use palisade_ratelimit::{RateLimitLayer, RedisRateLimitLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

const N: usize = 10_000;

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
}
