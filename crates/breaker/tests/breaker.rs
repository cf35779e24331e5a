//! palisade-breaker: every transition under paused time, against the mock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use palisade_breaker::{BreakerLayer, CircuitOpen, State, Transition, Window};
use palisade_core::RequestBody;
use palisade_mock::{Fault, MockUpstream, Reply};
use tower::{Layer, Service, ServiceExt};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn req(stream: bool) -> Request<RequestBody> {
    let body = serde_json::json!({"model": "mock", "stream": stream, "max_tokens": 20,
        "messages": [{"role": "user", "content": "a b c"}]});
    Request::post("/v1/messages")
        .body(RequestBody::json(&body))
        .unwrap()
}

/// One call, body read to its end: Ok(status) or the error (call or body).
async fn call<S>(svc: &S) -> Result<StatusCode, palisade_core::BoxError>
where
    S: Service<Request<RequestBody>, Error = palisade_core::BoxError> + Clone,
    S::Response: Into<
        http::Response<
            palisade_breaker::BreakerBody<
                palisade_mock::MockBody,
                palisade_core::classify::LlmClassifier,
            >,
        >,
    >,
{
    let res: http::Response<_> = svc.clone().oneshot(req(false)).await?.into();
    let status = res.status();
    res.into_body().collect().await?;
    Ok(status)
}

fn mock_with(default: Reply) -> MockUpstream {
    let m = MockUpstream::new();
    m.set_default(default);
    m
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_and_an_open_circuit_refuses_at_once() {
    let layer = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(3)
        .open_for(secs(30))
        .build()
        .unwrap();
    let mock = mock_with(Reply::status(503));
    let svc = layer.layer(mock.clone());
    for _ in 0..3 {
        assert_eq!(call(&svc).await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(layer.handle().state(), State::Open);
    tokio::time::advance(secs(10)).await;
    let err = call(&svc).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().expect("CircuitOpen");
    assert_eq!(open.remaining(), secs(20));
    assert!(err.to_string().contains("circuit open"), "{err}");
    assert_eq!(
        mock.request_count(),
        3,
        "refused calls never reach the upstream"
    );
}

#[tokio::test(start_paused = true)]
async fn failure_rate_waits_for_minimum_calls() {
    let layer = BreakerLayer::builder()
        .failure_rate(0.5)
        .window(Window::Count(20))
        .minimum_calls(10)
        .build()
        .unwrap();
    let svc = layer.layer(mock_with(Reply::status(500)));
    for _ in 0..9 {
        call(&svc).await.unwrap();
    }
    assert_eq!(
        layer.handle().state(),
        State::Closed,
        "9 calls < minimum 10"
    );
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn the_count_window_evicts_old_outcomes() {
    let layer = BreakerLayer::builder()
        .failure_rate(0.8)
        .window(Window::Count(10))
        .minimum_calls(10)
        .build()
        .unwrap();
    let mock = MockUpstream::new();
    let svc = layer.layer(mock.clone());
    // Ten failures spread out (5 of 10), then ten successes: all evicted.
    for _ in 0..5 {
        mock.push_all([Reply::status(500), Reply::echo()]);
    }
    for _ in 0..20 {
        call(&svc).await.unwrap();
    }
    assert_eq!(layer.handle().window(), (10, 0), "old failures evicted");
    // Now 7 failures in the last 10 stay under 0.8; the 8th trips.
    mock.set_default(Reply::status(500));
    for _ in 0..7 {
        call(&svc).await.unwrap();
    }
    assert_eq!(layer.handle().state(), State::Closed);
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_failure_after_a_clean_window_stays_for_exactly_the_window_length() {
    // A success into a full window of successes is not written (the ring
    // would not change); this checks that a failure after such a run is
    // kept for exactly `n` further calls, as in a ring written every time.
    let layer = BreakerLayer::builder()
        .failure_rate(1.0)
        .window(Window::Count(4))
        .minimum_calls(4)
        .build()
        .unwrap();
    let mock = MockUpstream::new();
    let svc = layer.layer(mock.clone());
    for _ in 0..9 {
        call(&svc).await.unwrap();
    }
    assert_eq!(layer.handle().window(), (4, 0));
    mock.push(Reply::status(500));
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().window(), (4, 1));
    for left in [1, 1, 1, 0] {
        call(&svc).await.unwrap();
        assert_eq!(layer.handle().window(), (4, left));
    }
    // Clean again: successes are skipped, two failures count as two.
    for _ in 0..5 {
        call(&svc).await.unwrap();
    }
    mock.push_all([Reply::status(500), Reply::status(500)]);
    call(&svc).await.unwrap();
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().window(), (4, 2));
    assert_eq!(layer.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_time_window_forgets_what_is_older_than_it() {
    let layer = BreakerLayer::builder()
        .failure_rate(0.5)
        .window(Window::Time(secs(10)))
        .minimum_calls(4)
        .build()
        .unwrap();
    let mock = MockUpstream::new();
    let svc = layer.layer(mock.clone());
    mock.push_all([Reply::status(502), Reply::status(502), Reply::status(502)]);
    for _ in 0..3 {
        call(&svc).await.unwrap();
    }
    assert_eq!(layer.handle().state(), State::Closed, "3 calls < minimum 4");
    tokio::time::advance(secs(11)).await;
    mock.push(Reply::status(502));
    for _ in 0..4 {
        call(&svc).await.unwrap();
    }
    assert_eq!(layer.handle().window(), (4, 1));
    assert_eq!(
        layer.handle().state(),
        State::Closed,
        "1 of 4 recent calls failed"
    );
    mock.push_all([Reply::status(502), Reply::status(502)]);
    call(&svc).await.unwrap();
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().state(), State::Open, "3 of 6");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_count_as_failures() {
    let layer = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(2)
        .slow_call(secs(2))
        .build()
        .unwrap();
    let svc = layer.layer(mock_with(Reply::echo().delay_before_headers(secs(3))));
    call(&svc).await.unwrap();
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_probes_decide_and_failures_reopen_for_longer() {
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let seen = transitions.clone();
    let layer = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(1)
        .open_for(secs(10))
        .open_backoff(2.0, secs(60))
        .half_open_calls(2)
        .on_transition(move |t: Transition| seen.lock().unwrap().push((t.from, t.to, t.open_for)))
        .build()
        .unwrap();
    let mock = MockUpstream::new();
    let svc = layer.layer(mock.clone());
    mock.push(Reply::status(500));
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().state(), State::Open);
    tokio::time::advance(secs(10)).await;
    // A probe fails: open again, for twice as long.
    mock.push(Reply::status(500));
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().state(), State::Open);
    tokio::time::advance(secs(19)).await;
    assert!(call(&svc).await.unwrap_err().is::<CircuitOpen>());
    tokio::time::advance(secs(1)).await;
    // Two successful probes close it.
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().state(), State::HalfOpen);
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().state(), State::Closed);
    let t = transitions.lock().unwrap().clone();
    assert_eq!(
        t,
        [
            (State::Closed, State::Open, Some(secs(10))),
            (State::Open, State::HalfOpen, None),
            (State::HalfOpen, State::Open, Some(secs(20))),
            (State::Open, State::HalfOpen, None),
            (State::HalfOpen, State::Closed, None),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_only_its_probes_and_a_dropped_probe_frees_its_slot() {
    let layer = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(1)
        .open_for(secs(5))
        .half_open_calls(1)
        .build()
        .unwrap();
    let mock = MockUpstream::new();
    let mut svc = layer.layer(mock.clone());
    let handle = layer.handle();
    assert_eq!(handle.refuses_for(), None);
    mock.push(Reply::status(500));
    call(&svc).await.unwrap();
    assert_eq!(handle.refuses_for(), Some(secs(5)));
    tokio::time::advance(secs(5)).await;
    // Past `open_for`: a call would be admitted as a probe.
    assert_eq!(handle.refuses_for(), None);

    mock.push(Reply::echo().delay_before_headers(secs(100)));
    let probe = ServiceExt::<Request<RequestBody>>::ready(&mut svc)
        .await
        .unwrap()
        .call(req(false));
    // The one probe is out: the next call is refused.
    let err = svc.clone().oneshot(req(false)).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_eq!(handle.refuses_for(), Some(Duration::ZERO));
    drop(probe);
    // Its slot is back: a new probe passes and closes the circuit.
    assert_eq!(call(&svc).await.unwrap(), StatusCode::OK);
    assert_eq!(layer.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_errors_after_200_is_a_failure() {
    let layer = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(2, Fault::Reset));
    let svc = layer.layer(mock.clone());
    let res = svc.clone().oneshot(req(true)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        layer.handle().state(),
        State::Closed,
        "not decided at the headers"
    );
    assert!(res.into_body().collect().await.is_err());
    assert_eq!(layer.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn an_inband_error_event_is_a_failure() {
    let layer = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(1, Fault::InbandError));
    let svc = layer.layer(mock.clone());
    let res = svc.clone().oneshot(req(true)).await.unwrap();
    // The body itself ends cleanly; the event inside it is the failure.
    res.into_body().collect().await.unwrap();
    assert_eq!(layer.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_complete_stream_is_a_success_and_a_dropped_one_is_nothing() {
    let layer = BreakerLayer::builder()
        .failure_rate(1.0)
        .minimum_calls(1)
        .build()
        .unwrap();
    let mock = MockUpstream::new();
    let svc = layer.layer(mock.clone());
    let res = svc.clone().oneshot(req(true)).await.unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(layer.handle().window(), (1, 0));

    mock.push(Reply::echo().delay_per_token(secs(1)));
    let res = svc.clone().oneshot(req(true)).await.unwrap();
    let mut body = Box::pin(res.into_body());
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert_eq!(
        layer.handle().window(),
        (1, 0),
        "a cancelled stream is not recorded"
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_success_is_recorded_without_polling_its_body() {
    let layer = BreakerLayer::builder()
        .failure_rate(1.0)
        .minimum_calls(1)
        .build()
        .unwrap();
    let svc = layer.layer(tower::service_fn(|_: Request<RequestBody>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
        ))
    }));
    let res = svc.oneshot(req(false)).await.unwrap();
    assert_eq!(
        layer.handle().window(),
        (1, 0),
        "recorded before the body was touched"
    );
    drop(res);
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_429_are_not_failures_by_default() {
    let layer = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let mock = MockUpstream::new();
    let svc = layer.layer(mock.clone());
    for code in [400, 401, 404, 422, 429] {
        mock.push(Reply::status(code));
        call(&svc).await.unwrap();
    }
    assert_eq!(layer.handle().state(), State::Closed);
    assert_eq!(layer.handle().window(), (5, 0));
}

#[tokio::test(start_paused = true)]
async fn transport_errors_are_failures_and_poll_ready_never_blocks() {
    let layer = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault(Fault::Reset));
    let mut svc = layer.layer(mock.clone());
    assert!(call(&svc).await.is_err());
    assert_eq!(svc.state(), State::Open);
    // Open: ready at once, refusal from the future.
    let ready = tokio_test::task::spawn(async {
        ServiceExt::<Request<RequestBody>>::ready(&mut svc)
            .await
            .map(|_| ())
    })
    .poll();
    assert!(ready.is_ready());
}

#[tokio::test(start_paused = true)]
async fn the_circuit_is_shared_by_every_service_of_a_layer_and_can_be_forced() {
    let layer = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(2)
        .build()
        .unwrap();
    let mock = mock_with(Reply::status(503));
    let a = layer.layer(mock.clone());
    let b = layer.layer(mock.clone());
    call(&a).await.unwrap();
    call(&b).await.unwrap();
    assert_eq!(layer.handle().state(), State::Open, "one circuit for both");
    layer.handle().force_closed();
    assert_eq!(a.state(), State::Closed);
    layer.handle().force_open();
    assert!(call(&b).await.unwrap_err().is::<CircuitOpen>());
}

#[test]
fn invalid_settings_are_named() {
    let e = BreakerLayer::builder()
        .failure_rate(1.5)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("failure_rate"), "{e}");
    let e = BreakerLayer::builder()
        .window(Window::Count(0))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("count window"), "{e}");
    let e = BreakerLayer::builder()
        .half_open_calls(0)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("half_open_calls"), "{e}");
    let e = BreakerLayer::builder()
        .no_failure_rate()
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("no trip policy"), "{e}");
}

/// Many tasks hammering one breaker through a trip and a recovery: in
/// half-open never more than `half_open_calls` probes are in flight.
#[tokio::test(start_paused = true)]
async fn concurrent_callers_never_exceed_the_probe_limit() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let layer = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(3)
        .open_for(secs(1))
        .half_open_calls(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let failing = Arc::new(AtomicBool::new(true));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_probes = Arc::new(AtomicUsize::new(0));
    let inner = {
        let (failing, in_flight, max_probes, handle) = (
            failing.clone(),
            in_flight.clone(),
            max_probes.clone(),
            handle.clone(),
        );
        tower::service_fn(move |_: Request<RequestBody>| {
            let (failing, in_flight, max_probes, handle) = (
                failing.clone(),
                in_flight.clone(),
                max_probes.clone(),
                handle.clone(),
            );
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                if handle.state() == State::HalfOpen {
                    max_probes.fetch_max(now, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let code = if failing.load(Ordering::SeqCst) {
                    500
                } else {
                    200
                };
                let mut res = http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                *res.status_mut() = StatusCode::from_u16(code).unwrap();
                Ok::<_, std::convert::Infallible>(res)
            }
        })
    };
    let svc = layer.layer(inner);
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (svc, refused) = (svc.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..40 {
                match svc.clone().oneshot(req(false)).await {
                    Ok(_) => {}
                    Err(e) if e.is::<CircuitOpen>() => {
                        refused.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    // Let it trip, then heal the upstream.
    tokio::time::sleep(secs(1)).await;
    assert_ne!(handle.state(), State::Closed, "it tripped under load");
    failing.store(false, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(handle.state(), State::Closed, "it recovered");
    assert!(refused.load(Ordering::SeqCst) > 0);
    let max = max_probes.load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "{max} probes in flight at once");
}

/// A frame whose buffer has several chunks is scanned whole: an in-band
/// error in its second chunk counts.
#[tokio::test(start_paused = true)]
async fn an_inband_error_in_a_later_chunk_of_a_frame_is_a_failure() {
    use bytes::{Buf, Bytes};
    let layer = BreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let svc = layer.layer(tower::service_fn(|_: Request<RequestBody>| async {
        let data = Bytes::from_static(b"data: {\"a\":1}\n\n").chain(Bytes::from_static(
            b"data: {\"error\":{\"message\":\"x\"}}\n\n",
        ));
        let res = http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(http_body_util::Full::new(data))?;
        Ok::<_, http::Error>(res)
    }));
    let res = svc.oneshot(req(true)).await.unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(layer.handle().state(), State::Open);
}
