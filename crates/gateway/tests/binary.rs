//! The `palisade-gateway` binary: its first line, its config errors, and a
//! SIGTERM with a stream in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use common::{chat, client, data_lines, openai_text};
use http_body_util::{BodyExt, Full};
use palisade_mock::{MockUpstream, Reply};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_palisade-gateway");

/// Starts the binary and reads `listening on ADDR` from its stdout.
async fn spawn(args: &[&str]) -> (Child, String) {
    spawn_with(Command::new(BIN).args(args)).await
}

/// Starts `cmd` (the binary, maybe under a wrapper) and reads `listening on
/// ADDR` from its stdout.
async fn spawn_with(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("the first line within 30 s")
    .unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .trim()
        .to_owned();
    (child, addr)
}

/// The child's log (stderr), line by line, as it comes.
fn log_lines(child: &mut Child) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let _ = tx.send(l);
        }
    });
    rx
}

fn terminate(child: &Child) {
    let pid = child.id().unwrap().to_string();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn exit_code(child: &mut Child) -> i32 {
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within 30 s")
        .unwrap()
        .code()
        .unwrap_or(-1)
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "palisade-gateway-test-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn with_no_config_it_serves_the_mock_and_stops_cleanly_on_sigterm() {
    let (mut child, addr) = spawn(&["--listen", "127.0.0.1:0"]).await;
    let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat(
            "mock",
            "hello from the binary",
            false,
        ))))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "hello from the binary"
    );
    terminate(&child);
    assert_eq!(exit_code(&mut child).await, 0);
}

#[tokio::test]
async fn an_invalid_config_fails_at_start_naming_file_key_and_reason() {
    let path = temp_config(
        "invalid",
        "[[upstreams]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n[upstreams.timeout]\nidle = -5\n[[routes]]\nmodel = \"m\"\ntargets = [\"a\"]\n",
    );
    let out = Command::new(BIN)
        .args(["--config", path.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("upstreams[0].timeout.idle"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing listened");
}

#[tokio::test]
async fn sigterm_lets_a_stream_in_flight_finish_then_exits_0() {
    let mock = MockUpstream::new();
    mock.set_default(Reply::echo().delay_per_token(Duration::from_millis(100)));
    let server = mock.serve().await.unwrap();
    let path = temp_config(
        "sigterm",
        &format!(
            "shutdown_grace = 20000\n[[upstreams]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"{}\"\n[[routes]]\nmodel = \"m\"\ntargets = [\"a\"]\n",
            server.base_url()
        ),
    );
    let (mut child, addr) = spawn(&[
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .await;
    let text = "one two three four five six seven eight";
    let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("m", text, true))))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    // The stream is under way: its first frame is here.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    terminate(&child);
    let rest = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .expect("the stream finishes")
        .unwrap()
        .to_bytes();
    let whole = format!(
        "{}{}",
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(openai_text(&whole), text);
    assert_eq!(data_lines(&whole).last().unwrap(), "[DONE]");
    assert_eq!(exit_code(&mut child).await, 0);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(stderr.contains("shutting down"), "{stderr}");
}

/// The signal handlers are in place before `listening on` is printed: a
/// SIGTERM sent the moment the line is read stops the process cleanly
/// (before, it could arrive before they were installed and kill it).
#[tokio::test]
async fn a_sigterm_right_after_the_first_line_is_a_clean_stop() {
    for _ in 0..3 {
        let (mut child, _addr) = spawn(&["--listen", "127.0.0.1:0"]).await;
        terminate(&child);
        assert_eq!(exit_code(&mut child).await, 0);
    }
}

/// At the open-file limit, accepting fails: the gateway says so in its log,
/// does not spin, and serves again once connections close.
#[tokio::test]
async fn accept_errors_at_the_open_file_limit_are_logged_and_survived() {
    let path = temp_config(
        "nofile",
        "[server]\nmax_connections = 10000\n[[upstreams]]\nname = \"mock\"\nkind = \"mock\"\n[[routes]]\nmodel = \"mock\"\ntargets = [\"mock\"]\n",
    );
    let config = path.to_str().unwrap();
    let (mut child, addr) = spawn_with(Command::new("sh").args([
        "-c",
        "ulimit -n 64 && exec \"$0\" \"$@\"",
        BIN,
        "--config",
        config,
        "--listen",
        "127.0.0.1:0",
    ]))
    .await;
    let mut rx = log_lines(&mut child);
    // More connections than the process has descriptors.
    let mut held = Vec::new();
    for _ in 0..100 {
        if let Ok(c) = tokio::net::TcpStream::connect(&addr).await {
            held.push(c);
        }
    }
    let logged = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(l) = rx.recv().await {
            if l.contains("accepting a connection failed") {
                return l;
            }
        }
        String::new()
    })
    .await
    .expect("the accept error is logged");
    assert!(logged.contains("accepting a connection failed"), "{logged}");
    // Let them go: the gateway serves again.
    drop(held);
    let c = client();
    let mut healthy = false;
    for _ in 0..100 {
        let req = http::Request::get(format!("http://{addr}/healthz"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(Ok(res)) = tokio::time::timeout(Duration::from_secs(5), c.request(req)).await {
            if res.status() == 200 {
                healthy = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "the gateway serves again once connections close");
    terminate(&child);
    assert_eq!(exit_code(&mut child).await, 0);
    let _ = std::fs::remove_file(&path);
}

/// `--log-format json`: one JSON object per line, with the request's trace
/// id as a field.
#[tokio::test]
async fn json_logs_carry_the_trace_id_as_a_field() {
    let (mut child, addr) = spawn(&["--listen", "127.0.0.1:0", "--log-format", "json"]).await;
    let mut rx = log_lines(&mut child);
    // An invalid request: the gateway logs its refusal inside the request.
    let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"mock","messages":"not a list"}"#,
        )))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 400);
    let id = res.headers()["x-trace-id"].to_str().unwrap().to_owned();
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(l) = rx.recv().await {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) else {
                panic!("a log line that is not JSON: {l}");
            };
            if v["span"]["trace_id"] == id.as_str() {
                return v;
            }
        }
        serde_json::Value::Null
    })
    .await
    .expect("a JSON line with the request's trace id");
    assert!(line["fields"]["message"].as_str().is_some(), "{line}");
    terminate(&child);
    assert_eq!(exit_code(&mut child).await, 0);
}

/// An OTLP/HTTP receiver on loopback: every span it is sent, as its name
/// and its string, int and bool attributes, with its resource's attributes
/// (as `resource:KEY`) and the request's `x-palisade-test` header (as
/// `header:x-palisade-test`); and every metric data point, as
/// `metric:NAME` and its attributes, with its `value` (sums and gauges) or
/// `count` (histograms).
async fn otlp_receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, Vec<(String, String)>)>,
) {
    use hyper::service::service_fn;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as Number;
    use prost::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let header = req
                            .headers()
                            .get("x-palisade-test")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let body = req.into_body().collect().await?.to_bytes();
                        let value = |v: &Option<AnyValue>| {
                            Some(match v.as_ref()?.value.as_ref()? {
                                Any::StringValue(s) => s.clone(),
                                Any::IntValue(i) => i.to_string(),
                                Any::BoolValue(b) => b.to_string(),
                                _ => return None,
                            })
                        };
                        let attributes = |kvs: &[KeyValue]| -> Vec<(String, String)> {
                            kvs.iter()
                                .filter_map(|kv| Some((kv.key.clone(), value(&kv.value)?)))
                                .collect()
                        };
                        if path == "/v1/metrics" {
                            if let Ok(export) = ExportMetricsServiceRequest::decode(body.clone()) {
                                let metrics = export
                                    .resource_metrics
                                    .iter()
                                    .flat_map(|r| &r.scope_metrics)
                                    .flat_map(|s| &s.metrics);
                                for m in metrics {
                                    let name = format!("metric:{}", m.name);
                                    let numbers = match &m.data {
                                        Some(Data::Sum(d)) => d.data_points.as_slice(),
                                        Some(Data::Gauge(d)) => d.data_points.as_slice(),
                                        _ => &[],
                                    };
                                    for p in numbers {
                                        let mut attrs = attributes(&p.attributes);
                                        let v = match p.value {
                                            Some(Number::AsInt(i)) => i.to_string(),
                                            Some(Number::AsDouble(d)) => d.to_string(),
                                            None => String::new(),
                                        };
                                        attrs.push(("value".into(), v));
                                        let _ = tx.send((name.clone(), attrs));
                                    }
                                    if let Some(Data::Histogram(h)) = &m.data {
                                        for p in &h.data_points {
                                            let mut attrs = attributes(&p.attributes);
                                            attrs.push(("count".into(), p.count.to_string()));
                                            let _ = tx.send((name.clone(), attrs));
                                        }
                                    }
                                }
                            }
                        }
                        if path == "/v1/traces" {
                            if let Ok(export) = ExportTraceServiceRequest::decode(body) {
                                for r in &export.resource_spans {
                                    // What came with the batch, beside each
                                    // span's own attributes.
                                    let mut context: Vec<(String, String)> = r
                                        .resource
                                        .iter()
                                        .flat_map(|res| &res.attributes)
                                        .filter_map(|kv| {
                                            Some((
                                                format!("resource:{}", kv.key),
                                                value(&kv.value)?,
                                            ))
                                        })
                                        .collect();
                                    if let Some(h) = &header {
                                        context.push(("header:x-palisade-test".into(), h.clone()));
                                    }
                                    for span in r.scope_spans.iter().flat_map(|s| &s.spans) {
                                        let mut attrs = attributes(&span.attributes);
                                        attrs.extend(context.iter().cloned());
                                        let _ = tx.send((span.name.clone(), attrs));
                                    }
                                }
                            }
                        }
                        Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), rx)
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the GenAI spans of the calls
/// reach an OTLP receiver, with their GenAI attributes, the service name of
/// `OTEL_SERVICE_NAME` and the headers of `OTEL_EXPORTER_OTLP_HEADERS`.
#[tokio::test]
async fn spans_are_exported_over_otlp_when_the_endpoint_is_set() {
    let (endpoint, mut spans) = otlp_receiver().await;
    let (mut child, addr) = spawn_with(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "50")
            .env("OTEL_SERVICE_NAME", "gateway-under-test")
            .env("OTEL_EXPORTER_OTLP_HEADERS", "x-palisade-test=from-env"),
    )
    .await;
    let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("mock", "exported", false))))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let (name, attrs) = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (name, attrs) = spans.recv().await.expect("the receiver runs");
            if attrs.iter().any(|(k, _)| k == "gen_ai.operation.name") {
                return (name, attrs);
            }
        }
    })
    .await
    .expect("a GenAI span arrives within 20 s");
    let get = |k: &str| {
        attrs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        get("gen_ai.operation.name"),
        Some("chat"),
        "{name}: {attrs:?}"
    );
    assert_eq!(
        get("gen_ai.request.model"),
        Some("mock"),
        "{name}: {attrs:?}"
    );
    assert!(name.contains("chat"), "{name}");
    terminate(&child);
    assert_eq!(exit_code(&mut child).await, 0);
}

/// With only `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` set, the gateway's
/// metrics (`palisade.*`) and the stacks' GenAI client metrics reach an
/// OTLP receiver, and no span does.
#[tokio::test]
async fn metrics_are_exported_over_otlp_when_their_endpoint_is_set() {
    let (endpoint, mut received) = otlp_receiver().await;
    let (mut child, addr) = spawn_with(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .env(
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                format!("{endpoint}/v1/metrics"),
            )
            .env("OTEL_METRIC_EXPORT_INTERVAL", "100")
            .env("OTEL_BSP_SCHEDULE_DELAY", "50"),
    )
    .await;
    for _ in 0..2 {
        let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(chat("mock", "counted", false))))
            .unwrap();
        let res = client().request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
    }
    let mut seen_genai = false;
    let mut seen_requests = false;
    let mut spans = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !(seen_genai && seen_requests) {
            let (name, attrs) = received.recv().await.expect("the receiver runs");
            let get = |k: &str| {
                attrs
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
            };
            match name.as_str() {
                "metric:gen_ai.client.operation.duration" => {
                    seen_genai |=
                        get("gen_ai.operation.name") == Some("chat") && get("count") == Some("2");
                }
                // Cumulative: a later export carries both requests.
                "metric:palisade.requests" => {
                    seen_requests |= get("route") == Some("mock")
                        && get("status") == Some("200")
                        && get("value") == Some("2");
                }
                n if !n.starts_with("metric:") => spans.push(name),
                _ => {}
            }
        }
    })
    .await
    .expect("the gateway's and the GenAI metrics arrive within 20 s");
    // Shutting down flushes every exporter there is: still no span.
    terminate(&child);
    assert_eq!(exit_code(&mut child).await, 0);
    while let Ok((name, _)) = received.try_recv() {
        if !name.starts_with("metric:") {
            spans.push(name);
        }
    }
    assert!(spans.is_empty(), "traces were not asked for: {spans:?}");
}

/// A tier's members' load (`palisade.member.*`) reaches an OTLP receiver
/// too, not only `/metrics`.
#[tokio::test]
async fn member_load_is_exported_over_otlp() {
    let (endpoint, mut received) = otlp_receiver().await;
    let path = temp_config(
        "tier-otlp",
        "[[upstreams]]\nname = \"m1\"\nkind = \"mock\"\n[[upstreams]]\nname = \"m2\"\nkind = \"mock\"\n\
         [[routes]]\nmodel = \"mock\"\ntargets = [[\"m1\", \"m2\"]]\nbalance = \"round_robin\"\n",
    );
    let (mut child, addr) = spawn_with(
        Command::new(BIN)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--config",
                path.to_str().unwrap(),
            ])
            .env(
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                format!("{endpoint}/v1/metrics"),
            )
            .env("OTEL_METRIC_EXPORT_INTERVAL", "100"),
    )
    .await;
    for _ in 0..4 {
        let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(chat("mock", "balanced", false))))
            .unwrap();
        let res = client().request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
    }
    let mut picks = std::collections::HashMap::new();
    let mut inflight = false;
    tokio::time::timeout(Duration::from_secs(20), async {
        while !(inflight
            && picks.get("m1") == Some(&"2".to_owned())
            && picks.get("m2") == Some(&"2".to_owned()))
        {
            let (name, attrs) = received.recv().await.expect("the receiver runs");
            let get = |k: &str| {
                attrs
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            match name.as_str() {
                "metric:palisade.member.picks" => {
                    if let (Some(up), Some(v)) = (get("upstream"), get("value")) {
                        picks.insert(up, v);
                    }
                }
                "metric:palisade.member.inflight" => {
                    inflight |= get("value").as_deref() == Some("0")
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("member picks arrive within 20 s: {picks:?}"));
    terminate(&child);
    assert_eq!(exit_code(&mut child).await, 0);
    let _ = std::fs::remove_file(&path);
}

/// `OTEL_METRICS_EXPORTER=none` keeps the metrics home while the spans go
/// out; an exporter list without `otlp` is refused at start, by name.
#[tokio::test]
async fn an_exporter_set_to_none_turns_its_signal_off() {
    let (endpoint, mut received) = otlp_receiver().await;
    let (mut child, addr) = spawn_with(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_METRICS_EXPORTER", "none")
            .env("OTEL_METRIC_EXPORT_INTERVAL", "50")
            .env("OTEL_BSP_SCHEDULE_DELAY", "50"),
    )
    .await;
    let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("mock", "spans only", false))))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut names = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (name, attrs) = received.recv().await.expect("the receiver runs");
            let genai = attrs.iter().any(|(k, _)| k == "gen_ai.operation.name");
            names.push(name);
            if genai {
                return;
            }
        }
    })
    .await
    .expect("a GenAI span arrives within 20 s");
    // Shutting down flushes every exporter there is: still no metric.
    terminate(&child);
    assert_eq!(exit_code(&mut child).await, 0);
    while let Ok((name, _)) = received.try_recv() {
        names.push(name);
    }
    assert!(
        !names.iter().any(|n| n.starts_with("metric:")),
        "metrics were turned off: {names:?}"
    );

    let out = std::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_TRACES_EXPORTER", "zipkin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("OTEL_TRACES_EXPORTER") && err.contains("zipkin"),
        "{err}"
    );
}

/// An OTLP protocol the gateway does not speak is refused at start, by name.
#[tokio::test]
async fn an_unsupported_otlp_protocol_is_a_start_error() {
    let out = std::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && err.contains("grpc"),
        "{err}"
    );
}

/// A collector that is not there costs nothing to the requests.
#[tokio::test]
async fn an_unreachable_collector_does_not_affect_requests() {
    let (mut child, addr) = spawn_with(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env("OTEL_BSP_SCHEDULE_DELAY", "10"),
    )
    .await;
    for _ in 0..3 {
        let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(chat("mock", "still served", false))))
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(10), client().request(req))
            .await
            .expect("answered while the exporter fails")
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    terminate(&child);
    assert_eq!(exit_code(&mut child).await, 0);
}

/// A gateway killed mid-stream never settles its reservation in Redis: it
/// is spent capacity that refills at the limit's rate, and its key expires
/// once the bucket is full — nothing leaks beyond the reservation's time.
/// A gateway started after it admits calls at once from what is left.
#[tokio::test]
async fn a_gateway_killed_mid_stream_leaks_nothing_beyond_its_reservation() {
    let world = World::new("tpm-kill", |base, redis| {
        format!(
            "[[upstreams]]\nname = \"shared\"\nkind = \"openai\"\nbase_url = \"{base}\"\n\
             [upstreams.rate_limit]\ntokens_per_minute = 1000\n\
             [[routes]]\nmodel = \"gpt\"\ntargets = [\"shared\"]\n[redis]\nurl = \"{redis}\"\n"
        )
    })
    .await;
    let mock = world.mock.clone();
    mock.set_default(Reply::echo().delay_per_token(Duration::from_secs(3600)));
    let body = r#"{"model":"gpt","max_tokens":300,"stream":true,"messages":[{"role":"user","content":"hold this open"}]}"#;
    let (mut child, addr) = fleet_of(1, &world.path).await.remove(0);
    let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    // Killed with its stream open: nothing settles.
    child.start_kill().unwrap();
    let _ = child.wait().await;
    drop(res);
    let rc = redis::Client::open(world.redis.url()).unwrap();
    let mut c = rc.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("palisade:*:tpm")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    // About 310 of 1,000 tokens a minute: refilled in under 20 s (+1 s).
    assert!(
        (1..=21_000).contains(&ttl),
        "the reservation's key expires with its refill: {ttl} ms"
    );
    // Another gateway admits a call from what is left at once.
    mock.set_default(Reply::echo());
    let mut other = fleet_of(1, &world.path).await;
    let addr = other[0].1.clone();
    let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("gpt", "after the kill", false))))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    world.stop(&mut other).await;
}

/// `n` gateway processes on one config, their logs drained.
async fn fleet_of(n: usize, path: &std::path::Path) -> Vec<(Child, String)> {
    let mut fleet = Vec::new();
    for _ in 0..n {
        let (mut child, addr) = spawn(&[
            "--listen",
            "127.0.0.1:0",
            "--config",
            path.to_str().unwrap(),
        ])
        .await;
        let mut logs = log_lines(&mut child);
        tokio::spawn(async move { while logs.recv().await.is_some() {} });
        fleet.push((child, addr));
    }
    fleet
}

/// A fleet test's world: one Redis, the mock upstream served on loopback,
/// and the config file `config(mock's base URL, Redis's URL)` written.
struct World {
    redis: palisade_core::test_util::RedisServer,
    mock: MockUpstream,
    _served: palisade_mock::MockServer,
    path: std::path::PathBuf,
}

impl World {
    async fn new(name: &str, config: impl FnOnce(&str, &str) -> String) -> Self {
        let redis = palisade_core::test_util::RedisServer::start();
        let mock = MockUpstream::new();
        let served = mock.serve().await.unwrap();
        let path = temp_config(name, &config(&served.base_url(), &redis.url()));
        Self {
            redis,
            mock,
            _served: served,
            path,
        }
    }

    /// SIGTERMs each process of `fleet`, expects exit 0, and removes the
    /// config.
    async fn stop(self, fleet: &mut [(Child, String)]) {
        for (child, _) in fleet {
            terminate(child);
            assert_eq!(exit_code(child).await, 0);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One chat call to the gateway at `addr`: its status and body.
async fn post(addr: &str, body: String) -> (u16, String) {
    let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = client().request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `addr`'s `/metrics` (at most 10 s) until it holds `line`.
async fn metrics_until(addr: &str, line: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let req = http::Request::get(format!("http://{addr}/metrics"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = client().request(req).await.unwrap();
        let text = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        if text.contains(line) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{addr}'s metrics never held {line}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three gateway processes, one Redis, `share_breaker = true`: a trip in
/// one opens the circuit in all three, and once the open time is over the
/// fleet sends one probe (`half_open_calls = 1`), not one per process;
/// when it succeeds every process closes.
#[tokio::test]
async fn three_gateway_processes_share_a_trip_and_send_one_probe() {
    let world = World::new("breaker-fleet", |base, redis| {
        format!(
                "[[upstreams]]\nname = \"shared\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
                 [upstreams.retry]\nmax_attempts = 1\n\
                 [upstreams.breaker]\nminimum_calls = 2\nwindow = 2\nopen_for = 1000\nhalf_open_calls = 1\n\
                 [[routes]]\nmodel = \"gpt\"\ntargets = [\"shared\"]\n\
                 [redis]\nurl = \"{}\"\nshare_breaker = true\n",
            base,
            redis
        )
    })
    .await;
    let mock = world.mock.clone();
    let mut fleet = fleet_of(3, &world.path).await;
    // Every process has made a call: each circuit reads Redis from now on.
    for (_, addr) in &fleet {
        assert_eq!(post(addr, chat("gpt", "up", false)).await.0, 200);
    }
    // Process 0's calls fail: its circuit opens …
    mock.set_default(Reply::status(503));
    for _ in 0..2 {
        assert_eq!(post(&fleet[0].1, chat("gpt", "down", false)).await.0, 503);
    }
    let calls = mock.request_count();
    // … and so do the others', from Redis: they call nobody.
    for (_, addr) in &fleet[1..] {
        metrics_until(addr, r#"palisade_breaker_state{upstream="shared"} 1"#).await;
        let (status, text) = post(addr, chat("gpt", "refused", false)).await;
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("circuit"), "{text}");
    }
    assert_eq!(mock.request_count(), calls, "an open circuit calls nobody");

    // The upstream is back but holds its answers: a probe stays out while
    // every process is asked again and again, past the open time.
    mock.set_default(Reply::echo().delay_before_headers(Duration::from_secs(3600)));
    let mut held = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        for (_, addr) in &fleet {
            let addr = addr.clone();
            held.push(tokio::spawn(async move {
                post(&addr, chat("gpt", "probe?", false)).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        mock.request_count() - calls,
        1,
        "one probe for the fleet, not one per process"
    );
    // The held probe's caller gives up (its slot goes back); the upstream
    // answers at once now: the next probe closes the circuit everywhere.
    for t in &held {
        t.abort();
    }
    mock.set_default(Reply::echo());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    'fleet: loop {
        let mut all = true;
        for (_, addr) in &fleet {
            all &= post(addr, chat("gpt", "closed?", false)).await.0 == 200;
        }
        if all {
            break 'fleet;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fleet never closed"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    world.stop(&mut fleet).await;
}

/// A chat call to `addr` with `headers`; the response, body unread.
async fn send(
    addr: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> http::Response<hyper::body::Incoming> {
    let mut req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client()
        .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap()
}

/// Three gateway processes, one Redis: the upstream's tokens per minute
/// are admitted once for the fleet, not three times, and what a stream
/// did not use is refunded to every process; a caller's own requests per
/// minute (`[[auth.keys]]`) hold across the processes, and another caller
/// is not touched.
#[tokio::test]
async fn three_gateway_processes_share_tokens_per_minute_and_callers_limits() {
    let world = World::new("tpm-fleet", |base, redis| {
        format!(
                "[auth]\n\
                 [[auth.keys]]\nname = \"team-a\"\nkey_env = \"PALISADE_TEST_TENANT_A_KEY\"\nrequests_per_minute = 3\n\
                 [[auth.keys]]\nname = \"team-b\"\nkey_env = \"PALISADE_TEST_TENANT_B_KEY\"\n\
                 [[upstreams]]\nname = \"shared\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
                 [upstreams.rate_limit]\ntokens_per_minute = 1000\n\
                 [[routes]]\nmodel = \"gpt\"\ntargets = [\"shared\"]\n[redis]\nurl = \"{}\"\n",
            base,
            redis
        )
    })
    .await;
    let mock = world.mock.clone();
    let mut fleet = fleet_of(3, &world.path).await;
    let b = [("authorization", "Bearer tenant-b-test-key")];
    let a = [("authorization", "Bearer tenant-a-test-key")];
    // Each stream asks for up to 300 tokens: about 310 reserved, kept while
    // the stream is held open (its tokens come slowly).
    mock.set_default(Reply::echo().delay_per_token(Duration::from_secs(3600)));
    let body = r#"{"model":"gpt","max_tokens":300,"stream":true,"messages":[{"role":"user","content":"hold this open"}]}"#;
    let mut held = Vec::new();
    for (_, addr) in &fleet {
        let res = send(addr, body, &b).await;
        assert_eq!(res.status(), 200);
        held.push(res);
    }
    for (_, addr) in &fleet {
        let res = send(addr, body, &b).await;
        let status = res.status();
        let text = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, 429, "{}", String::from_utf8_lossy(&text));
    }
    assert_eq!(mock.request_count(), 3, "admitted once, not three times");
    // The callers go away: each gateway refunds the output its stream did
    // not use, and every gateway admits again.
    drop(held);
    mock.set_default(Reply::echo());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for (_, addr) in &fleet {
        loop {
            // ~310 tokens: they fit only once the held streams' unused
            // output is back (70 were left while they were held).
            let res = send(
                addr,
                r#"{"model":"gpt","max_tokens":300,"messages":[{"role":"user","content":"again"}]}"#,
                &b,
            )
            .await;
            let status = res.status();
            res.into_body().collect().await.unwrap();
            if status == 200 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the refunds reached Redis within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Team A's three requests a minute hold across the fleet: its fourth,
    // on any process, is refused naming team A; team B goes on.
    for (_, addr) in &fleet {
        let res = send(addr, &chat("gpt", "a", false), &a).await;
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
    }
    let calls = mock.request_count();
    for (_, addr) in &fleet {
        let res = send(addr, &chat("gpt", "a again", false), &a).await;
        assert_eq!(res.status(), 429);
        assert!(res.headers().contains_key("retry-after"));
        let text = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains("team-a") && text.contains("requests_per_minute"),
            "{text}"
        );
        assert!(!text.contains("tenant-a-test-key"), "{text}");
        let res = send(addr, &chat("gpt", "b", false), &b).await;
        assert_eq!(res.status(), 200, "team B is not touched");
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(
        mock.request_count(),
        calls + 3,
        "A's refusals called nobody"
    );
    world.stop(&mut fleet).await;
}

/// Two gateway processes, one Redis, an upstream with a pool of two keys:
/// the key one process saw refused with a 429 (and a wait) rests in the
/// other too, which sends only the other key from then on — though it
/// never saw the refusal.
#[tokio::test]
async fn a_pooled_keys_rest_in_one_gateway_process_reaches_the_other() {
    let world = World::new("key-rests", |base, redis| {
        format!(
            "[[upstreams]]\nname = \"pooled\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
                 api_keys_env = [\"PALISADE_TEST_POOL_KEY_A\", \"PALISADE_TEST_POOL_KEY_B\"]\n\
                 [upstreams.retry]\nmax_attempts = 1\n\
                 [[routes]]\nmodel = \"gpt\"\ntargets = [\"pooled\"]\n[redis]\nurl = \"{}\"\n",
            base, redis
        )
    })
    .await;
    let mock = world.mock.clone();
    let mut fleet = fleet_of(2, &world.path).await;
    let key =
        |r: &palisade_mock::RecordedRequest| r.header("authorization").unwrap_or("").to_owned();
    // Process 0's first key is refused for 60 s; the call goes on with
    // the other key at once.
    mock.push(
        Reply::status(429)
            .header("retry-after", "60")
            .body(r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#),
    );
    assert_eq!(post(&fleet[0].1, chat("gpt", "hi", false)).await.0, 200);
    let seen: Vec<String> = mock.requests().iter().map(key).collect();
    assert_eq!(seen.len(), 2);
    let (refused, other) = (seen[0].clone(), seen[1].clone());
    assert_ne!(refused, other);
    // Process 1, which never saw the 429, soon sends only the other key:
    // four calls in a row with it (its own turn would alternate keys).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    while in_a_row < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "process 1 kept sending the rested key: {:?}",
            mock.requests().iter().map(key).collect::<Vec<_>>()
        );
        assert_eq!(post(&fleet[1].1, chat("gpt", "hi", false)).await.0, 200);
        let last = mock.last_request().map(|r| key(&r)).unwrap_or_default();
        in_a_row = if last == other { in_a_row + 1 } else { 0 };
    }
    world.stop(&mut fleet).await;
}

/// Two gateway processes, one Redis killed and restarted mid-traffic:
/// while it is down, calls go on (fail open, the default) within the
/// bound and each failure is counted; restarted empty, the shared limit
/// holds again from zero, and no circuit opens on its own.
#[tokio::test]
async fn two_gateway_processes_ride_out_redis_killed_and_restarted() {
    let mut world = World::new("redis-restart", |base, redis| {
        format!(
            "[[upstreams]]\nname = \"shared\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
                 [upstreams.rate_limit]\nrequests_per_minute = 4\n\
                 [[routes]]\nmodel = \"gpt\"\ntargets = [\"shared\"]\n\
                 [redis]\nurl = \"{}\"\nshare_breaker = true\n",
            base, redis
        )
    })
    .await;
    let mut fleet = fleet_of(2, &world.path).await;
    // Four a minute for the fleet: two on each, then both refuse.
    let statuses = |fleet: &[(Child, String)]| {
        let addrs: Vec<String> = fleet.iter().map(|(_, a)| a.clone()).collect();
        async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                for addr in &addrs {
                    got.push(post(addr, chat("gpt", "hi", false)).await.0);
                }
            }
            got
        }
    };
    assert_eq!(statuses(&fleet).await, [200, 200, 200, 200, 429, 429]);

    // Redis dies: every call goes on, unlimited, none waits long.
    world.redis.stop();
    let start = std::time::Instant::now();
    assert_eq!(statuses(&fleet).await, [200; 6]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "six calls with Redis down took {:?}",
        start.elapsed()
    );
    for (_, addr) in &fleet {
        metrics_until(addr, r#"palisade_redis_errors_total{upstream="shared"}"#).await;
    }

    // Back, empty: the limit starts again from zero for the fleet; no
    // circuit opened.
    world.redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Until the processes have their connection back (a call made
        // while reconnecting passes, failing open) and the new four are
        // spent.
        if statuses(&fleet).await.contains(&429) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the limit never came back"
        );
    }
    assert_eq!(
        statuses(&fleet).await,
        [429; 6],
        "the fleet's four are spent"
    );
    for (_, addr) in &fleet {
        metrics_until(addr, r#"palisade_breaker_state{upstream="shared"} 0"#).await;
    }
    world.stop(&mut fleet).await;
}
