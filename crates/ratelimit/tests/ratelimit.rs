//! palisade-ratelimit: the bucket under paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use palisade_core::{ErrorKind, RateLimited};
use palisade_ratelimit::RateLimitLayer;
use proptest::prelude::*;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type Log = Arc<Mutex<Vec<(u64, Duration)>>>;

/// A service recording (request number, when it was called).
fn recorder(
    log: Log,
    t0: Instant,
) -> impl Service<
    Request<u64>,
    Response = (),
    Error = std::convert::Infallible,
    Future = std::future::Ready<Result<(), std::convert::Infallible>>,
> + Clone {
    tower::service_fn(move |req: Request<u64>| {
        log.lock().unwrap().push((*req.body(), t0.elapsed()));
        std::future::ready(Ok(()))
    })
}

fn limited(err: &palisade_core::BoxError) -> &RateLimited {
    err.downcast_ref::<RateLimited>()
        .unwrap_or_else(|| panic!("not RateLimited: {err}"))
}

#[tokio::test(start_paused = true)]
async fn burst_then_refill_and_reject_says_when() {
    let layer = RateLimitLayer::try_new(3, 2.0).unwrap(); // 3 burst, 1 per 500 ms
    let log = Log::default();
    let svc = layer.layer(recorder(log.clone(), Instant::now()));
    for i in 0..3 {
        svc.clone().oneshot(Request::new(i)).await.unwrap();
    }
    let err = svc.clone().oneshot(Request::new(3)).await.unwrap_err();
    assert_eq!(limited(&err).retry_after(), Some(ms(500)));
    assert_eq!(ErrorKind::of(&*err), Some(ErrorKind::RateLimited));
    tokio::time::advance(ms(500)).await;
    svc.clone().oneshot(Request::new(4)).await.unwrap();
    assert!(svc.clone().oneshot(Request::new(5)).await.is_err());
    assert_eq!(log.lock().unwrap().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order_at_the_refill_rate() {
    let layer = RateLimitLayer::try_new(1, 1.0)
        .unwrap()
        .wait(Duration::from_secs(10));
    let t0 = Instant::now();
    let log = Log::default();
    let svc = layer.layer(recorder(log.clone(), t0));
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let mut s = svc.clone();
            let fut = {
                let mut s2 = s.clone();
                // Ready, then call: each reserves its slot now, in order.
                assert!(tokio_test::task::spawn(s2.ready()).poll().is_ready());
                s2.call(Request::new(i))
            };
            let _ = &mut s;
            tokio::spawn(fut)
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let log = log.lock().unwrap().clone();
    let expect: Vec<(u64, Duration)> = (0..5).map(|i| (i, Duration::from_secs(i))).collect();
    assert_eq!(log, expect, "FIFO, one per second");
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_max_wait_is_refused_at_once() {
    let layer = RateLimitLayer::try_new(1, 1.0).unwrap().wait(ms(500));
    let svc = layer.layer(recorder(Log::default(), Instant::now()));
    svc.clone().oneshot(Request::new(0)).await.unwrap();
    let t = Instant::now();
    let err = svc.clone().oneshot(Request::new(1)).await.unwrap_err();
    assert_eq!(t.elapsed(), Duration::ZERO);
    assert_eq!(limited(&err).retry_after(), Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn weighted_cost_and_a_cost_over_capacity() {
    let layer = RateLimitLayer::try_new(10, 10.0)
        .unwrap()
        .cost(|req: &Request<u64>| *req.body());
    let svc = layer.layer(recorder(Log::default(), Instant::now()));
    svc.clone().oneshot(Request::new(6)).await.unwrap();
    svc.clone().oneshot(Request::new(4)).await.unwrap();
    let err = svc.clone().oneshot(Request::new(1)).await.unwrap_err();
    assert_eq!(limited(&err).retry_after(), Some(ms(100)));
    let err = svc.clone().oneshot(Request::new(11)).await.unwrap_err();
    assert_eq!(limited(&err).retry_after(), None, "can never pass");
    assert!(
        err.to_string().contains("more than the limit's capacity"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_gives_its_reservation_back() {
    let layer = RateLimitLayer::try_new(1, 1.0)
        .unwrap()
        .wait(Duration::from_secs(10));
    let log = Log::default();
    let svc = layer.layer(recorder(log.clone(), Instant::now()));
    svc.clone().oneshot(Request::new(0)).await.unwrap();
    let mut s = svc.clone();
    s.ready().await.unwrap();
    let waiter = s.call(Request::new(1)); // reserved for t = 1 s
    drop(waiter);
    // Its slot is free again: the next caller gets t = 1 s, not 2 s.
    let t = Instant::now();
    svc.clone().oneshot(Request::new(2)).await.unwrap();
    assert_eq!(t.elapsed(), Duration::from_secs(1));
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .map(|(i, _)| *i)
            .collect::<Vec<_>>(),
        [0, 2]
    );
}

#[tokio::test(start_paused = true)]
async fn every_service_of_a_layer_shares_the_bucket() {
    let layer = RateLimitLayer::try_new(2, 1.0).unwrap();
    let a = layer.layer(recorder(Log::default(), Instant::now()));
    let b = layer
        .clone()
        .layer(recorder(Log::default(), Instant::now()));
    a.clone().oneshot(Request::new(0)).await.unwrap();
    b.clone().oneshot(Request::new(1)).await.unwrap();
    assert!(a.oneshot(Request::new(2)).await.is_err());
    assert!(b.oneshot(Request::new(3)).await.is_err());
}

#[test]
fn invalid_settings_are_named() {
    assert!(
        RateLimitLayer::try_new(0, 1.0)
            .unwrap_err()
            .to_string()
            .contains("capacity")
    );
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = RateLimitLayer::try_new(1, rate).unwrap_err();
        assert!(e.to_string().contains("refill rate"), "{e}");
    }
}

proptest! {
    /// Over any interval, the cost admitted is at most capacity + rate × interval.
    #[test]
    fn admitted_cost_is_bounded(
        capacity in 1u64..50,
        per_second in 1u32..100,
        steps in proptest::collection::vec((0u64..200, 1u64..20), 1..200),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let layer = RateLimitLayer::try_new(capacity, f64::from(per_second))
                .unwrap()
                .cost(|req: &Request<u64>| *req.body());
            let log = Log::default();
            let t0 = Instant::now();
            let svc = layer.layer(recorder(log.clone(), t0));
            for (gap_ms, cost) in steps {
                tokio::time::advance(ms(gap_ms)).await;
                let _ = svc.clone().oneshot(Request::new(cost)).await;
            }
            let log = log.lock().unwrap().clone();
            // Every window [start, end] between two admissions.
            for i in 0..log.len() {
                let mut sum = 0u64;
                for j in i..log.len() {
                    sum += log[j].0;
                    let span = (log[j].1 - log[i].1).as_secs_f64();
                    let bound = capacity as f64 + f64::from(per_second) * span + 1e-6;
                    prop_assert!(sum as f64 <= bound, "{sum} admitted in {span}s (cap {capacity}, rate {per_second}/s)");
                }
            }
            Ok(())
        })?;
    }
}
