//! The contract every palisade layer keeps (STYLE.md "Tests"), checked for
//! each layer and the preset stack over tower-test's mock:
//!
//! - the instance `poll_ready` readied is the one whose `call` reaches the
//!   inner service, and `poll_ready` is passed through to the inner service;
//! - a clone starts unready (readiness is never copied into a clone);
//! - the services and their futures are `Send` (and the services `Sync`),
//!   checked at compile time.
//!
//! Dropping a call releases what it held: the rate limiter's reservation
//! (`crates/ratelimit/tests/ratelimit.rs`, refund on cancel), the breaker's
//! half-open probe (`crates/breaker/tests/breaker.rs`, a dropped probe frees
//! its slot, and the loom model), and here for the whole preset stack: a
//! dropped call leaves the breaker closed and the rate limit unspent for the
//! next caller.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::{Request, Response};
use palisade::breaker::BreakerLayer;
use palisade::core::RequestBody;
use palisade::preset::StackConfig;
use palisade::ratelimit::RateLimitLayer;
use palisade::retry::RetryLayer;
use palisade::schema::SchemaLayer;
use palisade::timeout::TimeoutLayer;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service};
use tower_test::mock;

type Mock = mock::Mock<Request<RequestBody>, Response<RequestBody>>;
type Handle = mock::Handle<Request<RequestBody>, Response<RequestBody>>;

fn chat() -> Request<RequestBody> {
    Request::post("/chat/completions")
        .body(RequestBody::from(
            r#"{"model":"m","messages":[{"role":"user","content":"contract"}]}"#,
        ))
        .unwrap()
}

/// The readied instance is the one called; a clone starts unready.
async fn readiness_contract<S>(mut svc: S, mut handle: Handle)
where
    S: Service<Request<RequestBody>> + Clone,
    S::Error: std::fmt::Debug,
{
    // Not ready while the inner service is not.
    handle.allow(0);
    let mut t = task::spawn(());
    t.enter(|cx, _| assert_pending!(svc.poll_ready(cx)));
    // Ready once it is.
    handle.allow(1);
    t.enter(|cx, _| assert_ready_ok!(svc.poll_ready(cx)));
    // The inner service has no more room: a clone made now starts unready,
    // while the readied original can still call.
    handle.allow(0);
    let mut clone = svc.clone();
    t.enter(|cx, _| assert_pending!(clone.poll_ready(cx)));
    let fut = svc.call(chat());
    let mut fut = task::spawn(fut);
    let _ = fut.poll();
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("the readied instance's call reaches the inner service")
        .expect("a request");
    assert_eq!(req.uri().path(), "/chat/completions");
    send.send_response(Response::new(RequestBody::empty()));
    drop(fut);
}

fn pair() -> (Mock, Handle) {
    mock::pair()
}

fn assert_service_traits<S>(_: &S)
where
    S: Service<Request<RequestBody>> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
}

#[tokio::test]
async fn timeout_keeps_the_contract() {
    let (inner, handle) = pair();
    let svc = TimeoutLayer::new()
        .total(Duration::from_secs(5))
        .first_byte(Duration::from_secs(1))
        .layer(inner);
    assert_service_traits(&svc);
    readiness_contract(svc, handle).await;
}

#[tokio::test]
async fn retry_keeps_the_contract() {
    let (inner, handle) = pair();
    let svc = RetryLayer::new().layer(inner);
    assert_service_traits(&svc);
    readiness_contract(svc, handle).await;
}

#[tokio::test]
async fn ratelimit_keeps_the_contract() {
    let (inner, handle) = pair();
    let svc = RateLimitLayer::try_new(10, 1.0)
        .unwrap()
        .wait(Duration::from_secs(1))
        .layer(inner);
    assert_service_traits(&svc);
    readiness_contract(svc, handle).await;
}

#[tokio::test]
async fn breaker_keeps_the_contract() {
    let (inner, handle) = pair();
    let svc = BreakerLayer::builder().build().unwrap().layer(inner);
    assert_service_traits(&svc);
    readiness_contract(svc, handle).await;
}

#[tokio::test]
async fn schema_keeps_the_contract() {
    let (inner, handle) = pair();
    let svc = SchemaLayer::openai().layer(inner);
    assert_service_traits(&svc);
    readiness_contract(svc, handle).await;
}

#[tokio::test]
async fn the_preset_stack_keeps_the_contract() {
    let (inner, handle) = pair();
    let svc = StackConfig::openai()
        .no_key()
        .requests_per_minute(60)
        .build_over(inner)
        .unwrap();
    assert_service_traits(&svc);
    readiness_contract(svc, handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_through_the_preset_releases_what_it_held() {
    let (inner, mut handle) = pair();
    // One request per minute, no waiting; a breaker that one failure opens.
    let svc = StackConfig::openai()
        .no_key()
        .requests_per_minute(1)
        .max_wait(Duration::from_secs(120))
        .minimum_calls(1)
        .window(1)
        .build_over(inner)
        .unwrap();
    handle.allow(10);
    // A second caller waits for the minute's single permit behind the first.
    let mut first = task::spawn(tower::ServiceExt::oneshot(svc.clone(), chat()));
    let _ = first.poll();
    let (_req, _send) = handle.next_request().await.unwrap();
    let mut waiting = task::spawn(tower::ServiceExt::oneshot(svc.clone(), chat()));
    assert_pending!(waiting.poll());
    // The waiter gives up: its reservation is refunded, so the third caller
    // waits only for the refill, not for two.
    drop(waiting);
    drop(first);
    let start = tokio::time::Instant::now();
    let third = tokio::spawn(tower::ServiceExt::oneshot(svc.clone(), chat()));
    let (_req, send) = handle.next_request().await.unwrap();
    assert!(
        start.elapsed() <= Duration::from_secs(61),
        "{:?}",
        start.elapsed()
    );
    send.send_response(Response::new(RequestBody::empty()));
    let res = third.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    // The dropped first call was not recorded as a failure.
    assert_eq!(svc.breaker().state(), palisade::breaker::State::Closed);
}
