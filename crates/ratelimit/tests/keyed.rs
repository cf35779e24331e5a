//! palisade-ratelimit: keyed limits are independent and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::Request;
use palisade_core::RateLimited;
use palisade_ratelimit::RateLimitLayer;
use tower::{Layer, ServiceExt};

fn ok_service() -> impl tower::Service<
    Request<u64>,
    Response = (),
    Error = std::convert::Infallible,
    Future = std::future::Ready<Result<(), std::convert::Infallible>>,
> + Clone {
    tower::service_fn(|_: Request<u64>| std::future::ready(Ok(())))
}

fn tenant(req: &Request<u64>) -> u64 {
    *req.body()
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_bucket() {
    let layer = RateLimitLayer::try_new(2, 1.0).unwrap().keyed(tenant);
    let svc = layer.layer(ok_service());
    for _ in 0..2 {
        svc.clone().oneshot(Request::new(7)).await.unwrap();
    }
    let err = svc.clone().oneshot(Request::new(7)).await.unwrap_err();
    assert!(err.is::<RateLimited>());
    // Another tenant is not affected.
    svc.clone().oneshot(Request::new(8)).await.unwrap();
    assert_eq!(layer.len(), 2);
}

/// A million distinct keys pass; memory stays bounded: the map never holds
/// more than `max_keys` buckets (measured with `len()`, the map's own count).
#[tokio::test(start_paused = true)]
async fn a_million_keys_keep_memory_bounded() {
    let layer = RateLimitLayer::try_new(5, 100.0)
        .unwrap()
        .keyed_with_max(tenant, 1_000);
    let svc = layer.layer(ok_service());
    let mut max_len = 0;
    for key in 0..1_000_000u64 {
        svc.clone().oneshot(Request::new(key)).await.unwrap();
        if key % 1_000 == 999 {
            // Time passes: earlier buckets refill and become forgettable.
            tokio::time::advance(Duration::from_millis(100)).await;
            max_len = max_len.max(layer.len());
        }
    }
    assert!(max_len <= 1_000, "{max_len} buckets kept");
    assert!(layer.len() <= 1_000);
}
