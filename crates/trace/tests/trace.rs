//! palisade-trace against opentelemetry_sdk's in-memory exporters, through
//! tracing-opentelemetry: the GenAI span of a JSON call and of a streamed
//! call, trace-context propagation, no key in exported data, the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::Request;
use http_body_util::BodyExt;
use opentelemetry::Value;
use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use palisade_core::RequestBody;
use palisade_mock::MockUpstream;
use palisade_trace::TraceLayer;
use tower::{Layer, ServiceExt};
use tracing_subscriber::layer::SubscriberExt;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

struct Otel {
    spans: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

fn otel() -> Otel {
    let spans = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("palisade-test")));
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    Otel {
        spans,
        provider,
        _guard: guard,
    }
}

impl Otel {
    fn finished(&self) -> Vec<SpanData> {
        self.provider.force_flush().unwrap();
        self.spans.get_finished_spans().unwrap()
    }
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn request(body: &str) -> Request<RequestBody> {
    Request::post("http://127.0.0.1:9/v1/chat/completions")
        .header("traceparent", TRACEPARENT)
        .header("authorization", "Bearer secret-test-token-do-not-export")
        .header("x-api-key", "secret-test-key-do-not-export")
        .body(RequestBody::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn a_json_call_exports_a_genai_span_continuing_the_incoming_trace() {
    let otel = otel();
    let mock = MockUpstream::new();
    let svc = TraceLayer::new().layer(mock.clone());
    let res = svc
        .oneshot(request(
            r#"{"model":"mock","messages":[{"role":"user","content":"hello trace"}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(res.headers()["x-trace-id"], TRACE_ID);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());

    let spans = otel.finished();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert_eq!(span.name, "chat mock");
    assert_eq!(span.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
    let expect = [
        ("gen_ai.operation.name", Value::from("chat")),
        ("gen_ai.provider.name", Value::from("openai")),
        ("gen_ai.request.model", Value::from("mock")),
        ("gen_ai.response.model", Value::from("mock")),
        ("gen_ai.usage.input_tokens", Value::from(2i64)),
        ("gen_ai.usage.output_tokens", Value::from(2i64)),
        ("gen_ai.response.finish_reasons", Value::from("stop")),
        ("http.response.status_code", Value::from(200i64)),
        ("server.address", Value::from("127.0.0.1")),
    ];
    for (k, v) in expect {
        assert_eq!(attr(span, k), Some(&v), "{k} in {:#?}", span.attributes);
    }
    assert!(attr(span, "gen_ai.response.request_id").is_some());
    assert!(
        attr(span, "gen_ai.response.time_to_first_chunk").is_none(),
        "not a stream"
    );
    assert!(attr(span, "error.type").is_none());

    // Upstream got the same trace, with this span as the parent.
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.header("x-trace-id"), Some(TRACE_ID));
    let tp = sent.header("traceparent").unwrap();
    assert_eq!(
        tp,
        format!("00-{TRACE_ID}-{}-01", span.span_context.span_id())
    );

    // No key anywhere in what was exported.
    let dump = format!("{spans:?}");
    assert!(!dump.contains("secret-test"), "a key was exported");
}

#[tokio::test]
async fn a_streamed_call_records_usage_from_the_final_chunk_and_time_to_first_chunk() {
    let otel = otel();
    let mock = MockUpstream::new();
    let svc = TraceLayer::new().layer(mock.clone());
    let res = svc
        .oneshot(request(
            r#"{"model":"mock","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"one two three"}]}"#,
        ))
        .await
        .unwrap();
    // Nothing is recorded before the body ends.
    assert!(otel.finished().is_empty());
    res.into_body().collect().await.unwrap();
    let spans = otel.finished();
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(
        attr(span, "gen_ai.usage.output_tokens"),
        Some(&Value::from(3i64))
    );
    assert_eq!(
        attr(span, "gen_ai.usage.input_tokens"),
        Some(&Value::from(3i64))
    );
    assert_eq!(
        attr(span, "gen_ai.response.finish_reasons"),
        Some(&Value::from("stop"))
    );
    match attr(span, "gen_ai.response.time_to_first_chunk") {
        Some(Value::F64(t)) => assert!(*t >= 0.0),
        other => panic!("time_to_first_chunk: {other:?}"),
    }
}

#[tokio::test]
async fn an_upstream_error_and_a_dropped_stream_set_error_type() {
    let otel = otel();
    let mock = MockUpstream::new();
    mock.push(palisade_mock::Reply::status(503));
    let svc = TraceLayer::new().layer(mock.clone());
    let body = r#"{"model":"mock","stream":true,"messages":[{"role":"user","content":"a b c d"}]}"#;
    let res = svc.clone().oneshot(request(body)).await.unwrap();
    res.into_body().collect().await.unwrap();
    let res = svc.oneshot(request(body)).await.unwrap();
    drop(res);
    let spans = otel.finished();
    assert_eq!(spans.len(), 2);
    assert_eq!(attr(&spans[0], "error.type"), Some(&Value::from("503")));
    assert_eq!(
        attr(&spans[1], "error.type"),
        Some(&Value::from("cancelled"))
    );
}

#[tokio::test]
async fn a_caller_that_stops_at_the_terminator_completed_the_call() {
    let otel = otel();
    let svc = TraceLayer::new().layer(MockUpstream::new());
    let res = svc
        .oneshot(request(
            r#"{"model":"mock","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"one two three"}]}"#,
        ))
        .await
        .unwrap();
    let mut body = res.into_body();
    let mut seen = String::new();
    while !seen.contains("data: [DONE]") {
        let frame = body.frame().await.expect("a frame before [DONE]").unwrap();
        if let Some(d) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(d));
        }
    }
    // The caller stops reading here, as most do.
    drop(body);
    let spans = otel.finished();
    assert_eq!(spans.len(), 1);
    assert_eq!(
        attr(&spans[0], "error.type"),
        None,
        "a complete stream is not cancelled"
    );
    assert_eq!(
        attr(&spans[0], "gen_ai.usage.output_tokens"),
        Some(&Value::from(3i64))
    );
}

#[tokio::test]
async fn log_lines_inside_a_call_carry_the_trace_id() {
    let logs = palisade_core::test_util::LogCapture::new();
    let _g = logs.set_default();
    let mock = MockUpstream::new();
    let svc = TraceLayer::new().layer(tower::service_fn(move |req: Request<RequestBody>| {
        tracing::info!("inside the call");
        mock.clone().oneshot(req)
    }));
    let req = Request::post("/v1/chat/completions")
        .header("x-trace-id", "trace-in-every-line")
        .body(RequestBody::from(
            r#"{"model":"mock","messages":[{"role":"user","content":"x"}]}"#,
        ))
        .unwrap();
    svc.oneshot(req).await.unwrap();
    let logs = logs.contents();
    let line = logs
        .lines()
        .find(|l| l.contains("inside the call"))
        .expect(&logs);
    assert!(line.contains("trace-in-every-line"), "{line}");
}

#[tokio::test]
async fn the_genai_client_metrics_are_recorded() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let meter = provider.meter("palisade-test");
    let mock = MockUpstream::new();
    let svc = TraceLayer::new().metrics(&meter).layer(mock);
    let res = svc
        .oneshot(request(
            r#"{"model":"mock","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"metrics please"}]}"#,
        ))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    provider.force_flush().unwrap();
    let metrics = exporter.get_finished_metrics().unwrap();
    let names: Vec<String> = metrics
        .iter()
        .flat_map(|rm| rm.scope_metrics())
        .flat_map(|sm| sm.metrics())
        .map(|m| m.name().to_owned())
        .collect();
    for n in [
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.time_to_first_chunk",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    let dump = format!("{metrics:?}");
    assert!(dump.contains("gen_ai.token.type"), "{dump}");
    // The bucket boundaries the GenAI conventions advise (seconds, tokens),
    // not the SDK's millisecond-scaled defaults.
    assert!(
        dump.contains("81.92") && dump.contains("67108864"),
        "{dump}"
    );
    assert!(!dump.contains("secret-test"), "a key reached the metrics");
}

#[tokio::test]
async fn a_failed_call_names_its_error_in_palisades_one_vocabulary() {
    let otel = otel();
    let svc = TraceLayer::new().layer(tower::service_fn(|_: Request<RequestBody>| async {
        Err::<http::Response<http_body_util::Full<bytes::Bytes>>, palisade_core::BoxError>(
            Box::new(palisade_core::RateLimited::new(None)),
        )
    }));
    let err = svc
        .oneshot(request(
            r#"{"model":"mock","messages":[{"role":"user","content":"x"}]}"#,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        palisade_core::ErrorKind::of(&*err).map(palisade_core::ErrorKind::as_str),
        Some("local_rate_limit")
    );
    let spans = otel.finished();
    assert_eq!(
        attr(&spans[0], "error.type"),
        Some(&Value::from("local_rate_limit")),
        "a local limiter's refusal, not an upstream 429 (`rate_limited`)"
    );
}

/// A service that serves several APIs names each call's in its extensions:
/// an embeddings call is traced as one (`gen_ai.operation.name`), its usage
/// read as embeddings', whatever the layer was configured with.
#[tokio::test]
async fn the_api_a_request_names_in_its_extensions_is_the_one_traced() {
    let otel = otel();
    let mock = MockUpstream::new();
    let svc = TraceLayer::new()
        .api(palisade_providers::Api::ChatCompletions)
        .layer(mock.clone());
    let mut req = Request::post("http://127.0.0.1:9/v1/embeddings")
        .body(RequestBody::from(
            r#"{"model":"mock","input":["one two","three"]}"#,
        ))
        .unwrap();
    req.extensions_mut()
        .insert(palisade_providers::Api::Embeddings);
    let res = svc.oneshot(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
    let spans = otel.finished();
    let span = &spans[0];
    assert_eq!(span.name, "embeddings mock");
    assert_eq!(
        attr(span, "gen_ai.operation.name"),
        Some(&Value::from("embeddings"))
    );
    assert_eq!(
        attr(span, "gen_ai.usage.input_tokens"),
        Some(&Value::from(3i64))
    );
}

/// A path that names no API and no API named anywhere: nothing is assumed
/// (no operation or provider name, no usage read as some API's), while the
/// trace id, model and status are recorded as always.
#[tokio::test]
async fn a_call_to_a_path_of_no_api_assumes_none() {
    let otel = otel();
    let upstream = tower::service_fn(|_: Request<RequestBody>| async {
        http::Response::builder()
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                br#"{"model":"m","usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
            )))
    });
    let svc = TraceLayer::new().layer(upstream);
    let req = Request::post("http://127.0.0.1:9/generate")
        .header("traceparent", TRACEPARENT)
        .body(RequestBody::from(r#"{"model":"m","prompt":"hi"}"#))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.headers()["x-trace-id"], TRACE_ID);
    res.into_body().collect().await.unwrap();
    let spans = otel.finished();
    let span = &spans[0];
    assert_eq!(span.name, "m");
    assert_eq!(attr(span, "gen_ai.request.model"), Some(&Value::from("m")));
    assert_eq!(
        attr(span, "http.response.status_code"),
        Some(&Value::from(200i64))
    );
    for absent in [
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
    ] {
        assert!(
            attr(span, absent).is_none(),
            "{absent} in {:#?}",
            span.attributes
        );
    }
}
