//! palisade-breaker: keyed circuits are independent and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use palisade_breaker::{CircuitOpen, KeyedBreakerLayer, State};
use tower::{Layer, ServiceExt};

type Body = Empty<bytes::Bytes>;

fn req(model: &str) -> Request<()> {
    Request::post("/v1/chat/completions")
        .header("x-model", model)
        .body(())
        .unwrap()
}

fn model_of(req: &Request<()>) -> String {
    req.headers()
        .get("x-model")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Answers 503 for models starting with "bad", 200 otherwise.
fn upstream() -> impl tower::Service<
    Request<()>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(|req: Request<()>| async move {
        let mut res = Response::new(Body::new());
        if model_of(&req).starts_with("bad") {
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        Ok::<_, std::convert::Infallible>(res)
    })
}

#[tokio::test(start_paused = true)]
async fn a_failing_key_opens_only_its_own_circuit() {
    let layer = KeyedBreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(2)
        .keyed(model_of)
        .unwrap();
    let svc = layer.layer(upstream());
    for _ in 0..2 {
        svc.clone().oneshot(req("bad-model")).await.unwrap();
    }
    assert_eq!(layer.state(&"bad-model".to_owned()), Some(State::Open));
    let err = svc.clone().oneshot(req("bad-model")).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    let ok = svc.clone().oneshot(req("good-model")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(layer.state(&"good-model".to_owned()), Some(State::Closed));
}

#[tokio::test(start_paused = true)]
async fn memory_stays_bounded_over_many_keys() {
    let layer = KeyedBreakerLayer::builder()
        .keyed_with_max(model_of, 100)
        .unwrap();
    let svc = layer.layer(upstream());
    for i in 0..10_000 {
        let res = svc
            .clone()
            .oneshot(req(&format!("model-{i}")))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert!(layer.len() <= 100, "{} circuits kept", layer.len());
}

#[tokio::test(start_paused = true)]
async fn when_every_kept_circuit_is_open_new_keys_share_the_overflow_circuit() {
    let layer = KeyedBreakerLayer::builder()
        .no_failure_rate()
        .consecutive_failures(1)
        .keyed_with_max(model_of, 2)
        .unwrap();
    let svc = layer.layer(upstream());
    svc.clone().oneshot(req("bad-1")).await.unwrap();
    svc.clone().oneshot(req("bad-2")).await.unwrap();
    assert_eq!(layer.state(&"bad-1".to_owned()), Some(State::Open));
    assert_eq!(layer.state(&"bad-2".to_owned()), Some(State::Open));
    // The open circuits are kept (they protect); a new key is still served.
    let res = svc.clone().oneshot(req("fresh")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(layer.len(), 2);
    assert_eq!(layer.state(&"fresh".to_owned()), None);
}

#[test]
fn zero_keys_is_a_config_error() {
    let err = KeyedBreakerLayer::builder()
        .keyed_with_max(model_of, 0)
        .unwrap_err();
    assert!(err.to_string().contains("max_keys"), "{err}");
}
