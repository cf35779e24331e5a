//! palisade-retry: every retry rule, under paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use palisade_core::{ErrorKind, RequestBody, TransportKind};
use palisade_mock::{Fault, MockUpstream, Reply};
use palisade_retry::{BudgetExhausted, RetryBudget, RetryLayer};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready};
use tower::{Layer, Service, ServiceExt};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn chat() -> Request<RequestBody> {
    Request::post("/v1/chat/completions")
        .body(RequestBody::from(
            r#"{"model":"mock","messages":[{"role":"user","content":"hello retry"}]}"#,
        ))
        .unwrap()
}

/// No jitter: delays are exact.
fn exact() -> RetryLayer {
    RetryLayer::new().jitter(false)
}

async fn call(
    layer: RetryLayer,
    mock: &MockUpstream,
) -> (
    Result<Response<palisade_mock::MockBody>, palisade_core::BoxError>,
    Duration,
) {
    let start = Instant::now();
    let res = layer.layer(mock.clone()).oneshot(chat()).await;
    (res, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_is_waited_exactly() {
    let mock = MockUpstream::new();
    mock.push(Reply::status(429).header("retry-after", "2"));
    let (res, took) = call(exact(), &mock).await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    assert_eq!(took, secs(2));
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_ms_and_openai_reset_headers_are_waited() {
    let mock = MockUpstream::new();
    mock.push(Reply::status(429).header("retry-after-ms", "1500"));
    mock.push(
        Reply::status(429)
            .header("x-ratelimit-reset-requests", "6s")
            .header("x-ratelimit-remaining-requests", "0")
            .header("x-ratelimit-reset-tokens", "1m0s")
            .header("x-ratelimit-remaining-tokens", "5000"),
    );
    let (res, took) = call(exact().max_attempts(3).max_delay(secs(60)), &mock).await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    assert_eq!(took, ms(1500) + secs(6), "the exhausted limit's reset");
}

#[tokio::test(start_paused = true)]
async fn the_hint_comes_from_the_latest_attempt() {
    let mock = MockUpstream::new();
    mock.push(Reply::status(503).header("retry-after", "5"));
    mock.push(Reply::status(503).header("retry-after", "1"));
    let (res, took) = call(exact(), &mock).await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    assert_eq!(took, secs(6));
}

#[tokio::test(start_paused = true)]
async fn a_hint_is_cut_to_max_delay_and_jitter_only_adds() {
    let mock = MockUpstream::new();
    mock.push(Reply::status(429).header("retry-after", "100"));
    let (res, took) = call(exact().max_delay(secs(5)), &mock).await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    assert_eq!(took, secs(5));

    for _ in 0..20 {
        mock.push(Reply::status(429).header("retry-after", "2"));
        let (res, took) = call(RetryLayer::new(), &mock).await;
        assert_eq!(res.unwrap().status(), StatusCode::OK);
        assert!(took >= secs(2) && took <= ms(2200), "{took:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_hint_beyond_the_time_left_gives_up_at_once_with_the_upstreams_answer() {
    let mock = MockUpstream::new();
    mock.push(Reply::status(429).header("retry-after", "60"));
    let (res, took) = call(exact().max_elapsed(secs(10)), &mock).await;
    let res = res.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        res.headers()["retry-after"],
        "60",
        "the upstream's own response"
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("rate_limit_exceeded"));
    assert_eq!(took, Duration::ZERO);
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_until_success() {
    let mock = MockUpstream::new();
    mock.push_all([Reply::status(503), Reply::status(503)]);
    let (res, took) = call(exact().base_delay(ms(100)), &mock).await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    assert_eq!(mock.request_count(), 3);
    assert_eq!(took, ms(100) + ms(200), "base, then doubled");
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_never_retried() {
    for code in [400, 401, 403, 404, 413, 422] {
        let mock = MockUpstream::new();
        mock.push(Reply::status(code));
        let (res, took) = call(exact(), &mock).await;
        assert_eq!(res.unwrap().status().as_u16(), code);
        assert_eq!(mock.request_count(), 1, "{code} was retried");
        assert_eq!(took, Duration::ZERO);
    }
}

#[tokio::test(start_paused = true)]
async fn overloaded_529_is_retried() {
    let mock = MockUpstream::new();
    mock.push(Reply::status(529));
    let (res, _) = call(exact(), &mock).await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn x_should_retry_false_stops_a_retryable_status() {
    let mock = MockUpstream::new();
    mock.push(Reply::status(503).header("x-should-retry", "false"));
    let (res, _) = call(exact(), &mock).await;
    assert_eq!(res.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_counts_the_first_call() {
    let mock = MockUpstream::new();
    mock.set_default(Reply::status(500));
    let (res, took) = call(exact().max_attempts(4).base_delay(ms(10)), &mock).await;
    assert_eq!(res.unwrap().status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(mock.request_count(), 4);
    assert_eq!(took, ms(10 + 20 + 40));
}

#[tokio::test(start_paused = true)]
async fn full_jitter_stays_within_the_exponential_bound() {
    for _ in 0..50 {
        let mock = MockUpstream::new();
        mock.push_all([Reply::status(502), Reply::status(502)]);
        let (res, took) = call(RetryLayer::new().base_delay(ms(100)), &mock).await;
        assert_eq!(res.unwrap().status(), StatusCode::OK);
        assert!(took <= ms(300), "{took:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_stops_retries_and_the_error_says_so() {
    let budget = || RetryBudget::new(secs(10), 0.0, 0);
    // A retryable status: returned as it is after one call.
    let mock = MockUpstream::new();
    mock.set_default(Reply::status(503));
    let (res, _) = call(exact().budget(budget()), &mock).await;
    assert_eq!(res.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(mock.request_count(), 1);

    // A retryable error: wrapped in BudgetExhausted, kind preserved.
    mock.push(Reply::echo().fault(Fault::Reset));
    let svc = exact().budget(budget()).layer(mock.clone());
    let err = svc.oneshot(chat()).await.unwrap_err();
    let exhausted = err.downcast_ref::<BudgetExhausted>().expect("says budget");
    assert_eq!(exhausted.attempts(), 1);
    assert!(err.to_string().contains("retry budget is spent"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_shared_by_every_clone_and_service_of_a_layer() {
    let mock = MockUpstream::new();
    mock.set_default(Reply::status(503));
    // Floor: 2 retries per 1 s window, no ratio.
    let layer = exact()
        .max_attempts(2)
        .base_delay(ms(1))
        .budget(RetryBudget::new(secs(1), 0.0, 2));
    let a = layer.layer(mock.clone());
    let b = layer.layer(mock.clone());
    for svc in [a.clone(), b.clone(), a, b] {
        let _ = svc.oneshot(chat()).await.unwrap();
    }
    // 4 calls, of which only 2 could retry.
    assert_eq!(mock.request_count(), 4 + 2);
}

#[tokio::test]
async fn connection_refused_is_retried_then_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = palisade_client::HttpClient::builder()
        .base_url(format!("http://{addr}/v1"))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = {
        let calls = calls.clone();
        tower::service_fn(move |req: Request<RequestBody>| {
            calls.fetch_add(1, Ordering::SeqCst);
            client.clone().oneshot(req)
        })
    };
    let svc = exact().max_attempts(3).base_delay(ms(1)).layer(counted);
    let req = Request::post("/chat/completions")
        .body(RequestBody::from("{}"))
        .unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(
        ErrorKind::of(&*err),
        Some(ErrorKind::Transport(TransportKind::ConnectRefused))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_stream_failing_after_its_headers_is_not_retried() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(1, Fault::Reset));
    let req = Request::post("/v1/messages")
        .body(RequestBody::from(
            r#"{"model":"mock","stream":true,"max_tokens":9,"messages":[{"role":"user","content":"a b c"}]}"#,
        ))
        .unwrap();
    let res = exact().layer(mock.clone()).oneshot(req).await.unwrap();
    let err = res.into_body().collect().await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(
        mock.request_count(),
        1,
        "no replay after the headers were handed on"
    );
}

type MockSvc = tower_test::mock::Mock<Request<RequestBody>, Response<String>>;

type Spawned =
    tower_test::mock::Spawn<palisade_retry::Retry<MockSvc, palisade_core::classify::LlmClassifier>>;
type MockHandle = tower_test::mock::Handle<Request<RequestBody>, Response<String>>;

fn spawn() -> (Spawned, MockHandle) {
    tower_test::mock::spawn_layer(exact().base_delay(secs(1)))
}

fn status(code: u16) -> Response<String> {
    let mut r = Response::new(String::new());
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
}

#[tokio::test(start_paused = true)]
async fn each_retry_re_drives_poll_ready() {
    let (mut svc, mut handle) = spawn();
    handle.allow(1);
    assert_ready!(svc.poll_ready()).unwrap();
    let mut fut = tokio_test::task::spawn(svc.call(chat()));
    assert_pending!(fut.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(status(503));
    assert_pending!(fut.poll()); // now backing off
    tokio::time::advance(secs(1)).await;
    // The backoff is over, but the inner service is not ready: no call yet.
    assert_pending!(fut.poll());
    assert!(
        tokio_test::task::spawn(handle.next_request())
            .poll()
            .is_pending()
    );
    handle.allow(1);
    assert_pending!(fut.poll());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.uri(), "/v1/chat/completions");
    send.send_response(status(200));
    assert_eq!(assert_ready!(fut.poll()).unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_mid_backoff_cancels_everything() {
    let (mut svc, mut handle) = spawn();
    handle.allow(10);
    assert_ready!(svc.poll_ready()).unwrap();
    let mut fut = tokio_test::task::spawn(svc.call(chat()));
    assert_pending!(fut.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(status(503));
    assert_pending!(fut.poll());
    drop(fut);
    tokio::time::advance(secs(3600)).await;
    let mut next = tokio_test::task::spawn(handle.next_request());
    assert_pending!(next.poll(), "no attempt after the drop");
}

#[tokio::test(start_paused = true)]
async fn request_bodies_are_replayed_without_copying() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let svc = {
        let seen = seen.clone();
        tower::service_fn(move |req: Request<RequestBody>| {
            let mut seen = seen.lock().unwrap();
            seen.push((
                req.body().as_bytes().as_ptr() as usize,
                req.headers().get("x-probe").cloned(),
            ));
            let code = if seen.len() < 3 { 503 } else { 200 };
            std::future::ready(Ok::<_, std::convert::Infallible>(status(code)))
        })
    };
    let mut req = chat();
    req.headers_mut().insert("x-probe", "kept".parse().unwrap());
    let original = req.body().as_bytes().as_ptr() as usize;
    let res = exact()
        .base_delay(ms(1))
        .layer(svc)
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (ptr, probe) in seen.iter() {
        assert_eq!(*ptr, original, "same buffer every attempt");
        assert_eq!(probe.as_ref().unwrap(), "kept");
    }
}

#[tokio::test(start_paused = true)]
async fn every_retry_is_a_tracing_event_with_attempt_delay_and_reason() {
    let capture = palisade_core::test_util::LogCapture::new();
    let _g = capture.set_default();

    let mock = MockUpstream::new();
    mock.push(Reply::status(429).header("retry-after", "3"));
    mock.push(Reply::status(529));
    let (res, _) = call(exact().base_delay(ms(50)), &mock).await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    let logs = capture.contents();
    let lines: Vec<_> = logs.lines().filter(|l| l.contains("retrying")).collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(
        lines[0].contains("attempt=1")
            && lines[0].contains("delay_ms=3000")
            && lines[0].contains("reason=\"rate_limited\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("attempt=2")
            && lines[1].contains("delay_ms=100")
            && lines[1].contains("reason=\"overloaded\""),
        "{}",
        lines[1]
    );
}

#[tokio::test]
async fn retries_over_loopback_with_the_real_client() {
    let mock = MockUpstream::new();
    mock.push(Reply::status(503).header("retry-after-ms", "5"));
    mock.push(Reply::status(429).header("retry-after-ms", "5"));
    let server = mock.serve().await.unwrap();
    let client = palisade_client::HttpClient::builder()
        .base_url(server.base_url())
        .build()
        .unwrap();
    let svc = exact().layer(client);
    let req = Request::post("/chat/completions")
        .body(RequestBody::from(
            r#"{"model":"mock","messages":[{"role":"user","content":"over the wire"}]}"#,
        ))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("over the wire"));
    assert_eq!(mock.request_count(), 3);
    // The failed responses are dropped unread, yet their small bodies were
    // already buffered: the connection goes back to the pool.
    assert_eq!(mock.connection_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_retry_hook_sees_every_retry_with_its_delay_and_reason() {
    let mock = MockUpstream::new();
    mock.push(Reply::status(429).header("retry-after", "1"));
    mock.push(Reply::status(503));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let layer = exact()
        .base_delay(ms(100))
        .on_retry(move |ev| sink.lock().unwrap().push((ev.attempt, ev.delay, ev.reason)));
    let (res, _) = call(layer, &mock).await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].0, seen[0].1), (1, secs(1)));
    assert_eq!((seen[1].0, seen[1].1), (2, ms(200)));
    assert_eq!(seen[0].2, "rate_limited");
    assert_eq!(seen[1].2, "server_error");
}

/// A classifier that counts its clones.
struct Counted(Arc<AtomicUsize>);

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::Relaxed);
        Self(self.0.clone())
    }
}

impl palisade_core::classify::ClassifyOutcome for Counted {
    fn classify(
        &self,
        outcome: palisade_core::classify::Outcome<'_>,
    ) -> palisade_core::classify::Classification {
        palisade_core::classify::LlmClassifier::default().classify(outcome)
    }
}

#[tokio::test(start_paused = true)]
async fn the_policy_is_shared_by_calls_not_copied_into_each() {
    let clones = Arc::new(AtomicUsize::new(0));
    let mock = MockUpstream::new();
    mock.push(Reply::status(503));
    let mut svc = exact()
        .base_delay(ms(1))
        .classifier(Counted(clones.clone()))
        .layer(mock.clone());
    let made = clones.load(Ordering::Relaxed);
    for _ in 0..5 {
        let res = ServiceExt::<Request<RequestBody>>::ready(&mut svc)
            .await
            .unwrap()
            .call(chat())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(mock.request_count(), 6, "one retry after the 503");
    assert_eq!(clones.load(Ordering::Relaxed), made, "no clone per call");
}

type Answer = Result<Response<String>, palisade_core::BoxError>;

/// A service failing its first `stale` calls on a stale pooled connection,
/// then answering 503 (retryable) or 200; it counts its calls.
fn stale_then(
    stale: usize,
    then: u16,
) -> (
    impl Service<
        Request<RequestBody>,
        Response = Response<String>,
        Error = palisade_core::BoxError,
        Future = std::future::Ready<Answer>,
    > + Clone,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let svc = tower::service_fn(move |_req: Request<RequestBody>| {
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(if n < stale {
            Err(palisade_core::TransportError::new(
                palisade_core::TransportKind::StaleConnection,
                "connection closed before message completed",
            )
            .into())
        } else {
            Ok(status(then))
        })
    });
    (svc, calls)
}

#[tokio::test(start_paused = true)]
async fn a_stale_connection_is_resent_without_counting_an_attempt() {
    // One attempt allowed: the stale connection's resend is not one.
    let (svc, calls) = stale_then(1, 200);
    let res = exact().max_attempts(1).layer(svc).oneshot(chat()).await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);

    // Two stale connections, then 503s: max_attempts = 2 still gets its
    // two real attempts.
    let (svc, calls) = stale_then(2, 503);
    let res = exact()
        .max_attempts(2)
        .base_delay(ms(1))
        .layer(svc)
        .oneshot(chat())
        .await;
    assert_eq!(res.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn stale_resends_are_bounded_on_their_own() {
    // A server that closes every reused connection: two resends, then the
    // error, with one attempt.
    let (svc, calls) = stale_then(usize::MAX, 200);
    let err = exact()
        .max_attempts(1)
        .layer(svc)
        .oneshot(chat())
        .await
        .unwrap_err();
    assert_eq!(
        palisade_core::ErrorKind::of(&*err),
        Some(palisade_core::ErrorKind::Transport(
            palisade_core::TransportKind::StaleConnection
        ))
    );
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1 + palisade_retry::DEFAULT_STALE_RESENDS as usize
    );
    // Off: the stale connection is an attempt like any transport error.
    let (svc, calls) = stale_then(1, 200);
    let res = exact()
        .max_attempts(1)
        .stale_resends(0)
        .layer(svc)
        .oneshot(chat())
        .await;
    assert!(res.is_err());
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_may_ask_for_fewer_attempts_and_the_answer_says_how_many_it_took() {
    let mock = MockUpstream::new();
    let svc = exact()
        .max_attempts(3)
        .base_delay(ms(1))
        .layer(mock.clone());
    // Two 503s, then the default 200: three attempts, said in the answer.
    mock.push(Reply::status(503));
    mock.push(Reply::status(503));
    let res = svc.clone().oneshot(chat()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.extensions().get::<palisade_retry::Attempts>(),
        Some(&palisade_retry::Attempts(3))
    );
    // A first attempt that answers says nothing (absent means one).
    let res = svc.clone().oneshot(chat()).await.unwrap();
    assert!(res.extensions().get::<palisade_retry::Attempts>().is_none());
    // One attempt asked for: the 503 is the answer.
    mock.push(Reply::status(503));
    let mut req = chat();
    req.extensions_mut().insert(palisade_retry::MaxAttempts(1));
    let before = mock.request_count();
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(mock.request_count() - before, 1);
    // More than the layer allows is cut to the layer's.
    for _ in 0..5 {
        mock.push(Reply::status(503));
    }
    let mut req = chat();
    req.extensions_mut().insert(palisade_retry::MaxAttempts(10));
    let before = mock.request_count();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(mock.request_count() - before, 3);
}

/// A request marked `PassOnRateLimit` gets its 429 back at once (its caller
/// has another member to send it to); a 503 is still retried.
#[tokio::test(start_paused = true)]
async fn a_request_passing_on_rate_limits_gets_its_429_at_once() {
    let mock = MockUpstream::new();
    mock.push(Reply::status(429).header("retry-after", "2"));
    let mut req = chat();
    req.extensions_mut().insert(palisade_core::PassOnRateLimit);
    let start = Instant::now();
    let res = exact().layer(mock.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(mock.request_count(), 1);

    mock.push(Reply::status(503));
    let mut req = chat();
    req.extensions_mut().insert(palisade_core::PassOnRateLimit);
    let res = exact().layer(mock.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(mock.request_count(), 3);
}
