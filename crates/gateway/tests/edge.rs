//! The gateway's edge, black box over loopback: bounded work per request,
//! content types, numbers of any shape, keys in escaped forms.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use palisade_mock::MockUpstream;

const OPENAI: &str = "/v1/chat/completions";
const ANTHROPIC: &str = "/v1/messages";

fn mock_gateway(extra_top: &str) -> String {
    format!(
        "{extra_top}\n[[upstreams]]\nname = \"m\"\nkind = \"mock\"\n{}",
        route("mock", &["m"])
    )
}

/// POSTs `body` with exactly the given headers (no default content type).
async fn post_raw(
    gw: &TestGateway,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut b = Request::post(gw.url(path));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let res = tokio::time::timeout(std::time::Duration::from_secs(30), gw.client.request(req))
        .await
        .expect("the gateway answers within 30 s")
        .expect("a response");
    let status = res.status().as_u16();
    (status, text(res).await)
}

#[tokio::test]
async fn json_endpoints_require_a_json_content_type() {
    let mock = MockUpstream::new();
    let gw = start(&mock_gateway(""), &[("m", &mock)]).await;
    let body = chat("mock", "hi", false);
    // What a web page can send without a CORS preflight, and nothing at all.
    for ct in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
        Some("json"),
        None,
    ] {
        let headers: Vec<(&str, &str)> = ct.iter().map(|c| ("content-type", *c)).collect();
        let (status, text) = post_raw(&gw, OPENAI, &body, &headers).await;
        assert_eq!(status, 415, "{ct:?}: {text}");
        let v = json(&text);
        // The caller's mistake, typed as such (not `server_error`).
        assert_eq!(v["error"]["type"], "invalid_request_error", "{text}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Content-Type: application/json"),
            "{text}"
        );
        let (status, text) =
            post_raw(&gw, ANTHROPIC, &anthropic("mock", "hi", false), &headers).await;
        assert_eq!(status, 415, "{ct:?}: {text}");
        assert_eq!(json(&text)["type"], "error", "{text}");
        assert_eq!(
            json(&text)["error"]["type"],
            "invalid_request_error",
            "{text}"
        );
    }
    assert_eq!(mock.request_count(), 0);
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.api+json",
    ] {
        let (status, text) = post_raw(&gw, OPENAI, &body, &[("content-type", ct)]).await;
        assert_eq!(status, 200, "{ct}: {text}");
    }
}

/// `n` one-word messages: 3 + 3n JSON values.
fn tiny_messages(n: usize) -> String {
    let messages: Vec<_> = (0..n)
        .map(|_| serde_json::json!({"role": "user", "content": "a"}))
        .collect();
    serde_json::json!({"model": "mock", "messages": messages}).to_string()
}

#[tokio::test]
async fn a_body_of_too_many_values_is_413_and_reaches_no_upstream() {
    let mock = MockUpstream::new();
    let gw = start(&mock_gateway("max_json_values = 300"), &[("m", &mock)]).await;
    // 3 + 3 × 99 = 300: at the limit.
    let (res, text) = gw.call(OPENAI, &tiny_messages(99)).await;
    assert_eq!(res.status(), 200, "{text}");
    let (res, text) = gw.call(OPENAI, &tiny_messages(100)).await;
    assert_eq!(res.status(), 413, "{text}");
    let msg = json(&text)["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("max_json_values") && msg.contains("300"),
        "{msg}"
    );
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn a_model_no_route_serves_is_404_even_when_the_body_is_large() {
    let mock = MockUpstream::new();
    let gw = start(&mock_gateway(""), &[("m", &mock)]).await;
    let mut body = json(&tiny_messages(1000));
    body["model"] = "elsewhere".into();
    let (res, text) = gw.call(OPENAI, &body.to_string()).await;
    assert_eq!(res.status(), 404, "{text}");
    assert!(text.contains("elsewhere"), "{text}");
    assert_eq!(mock.request_count(), 0);
}

/// A gateway in front of an OpenAI mock `o` and an Anthropic mock `c`, each
/// on its own socket (`o_extra`, `c_extra`: TOML lines for each), with the
/// routes `gpt` (o), `claude` (c), `to-claude` (c, as `claude-haiku`) and
/// `to-gpt` (o, as `gpt-x`). Bind `_served` where it is taken apart: the
/// mocks serve only while it lives.
struct TwoApis {
    gw: TestGateway,
    o: MockUpstream,
    c: MockUpstream,
    _served: (palisade_mock::MockServer, palisade_mock::MockServer),
}

async fn two_apis(o_extra: &str, c_extra: &str) -> TwoApis {
    let (o, c) = (MockUpstream::new(), MockUpstream::new());
    let (so, sc) = (o.serve().await.unwrap(), c.serve().await.unwrap());
    let toml = upstream("o", "openai", &so.base_url(), o_extra)
        + &upstream("c", "anthropic", &sc.base_url(), c_extra)
        + &route("gpt", &["o"])
        + &route("to-claude", &["c:claude-haiku"])
        + &route("claude", &["c"])
        + &route("to-gpt", &["o:gpt-x"]);
    TwoApis {
        gw: start(&toml, &[]).await,
        o,
        c,
        _served: (so, sc),
    }
}

/// Bodies from 256 KiB on are checked and translated on the blocking pool:
/// the same answers as small ones, in both directions.
#[tokio::test]
async fn large_bodies_are_checked_and_translated_like_small_ones() {
    let TwoApis { gw, c, _served, .. } = two_apis("", "").await;
    let long = "lorem ipsum ".repeat(40_000); // 480 KB
    let (res, text) = gw.call(OPENAI, &chat("gpt", &long, false)).await;
    assert_eq!(res.status(), 200, "{}", &text[..text.len().min(300)]);
    let (res, text) = gw.call(OPENAI, &chat("to-claude", &long, false)).await;
    assert_eq!(res.status(), 200, "{}", &text[..text.len().min(300)]);
    assert_eq!(json(&text)["object"], "chat.completion");
    let sent = c.last_request().unwrap().json().unwrap();
    assert_eq!(sent["model"], "claude-haiku");
    let content = &sent["messages"][0]["content"];
    let sent_text = content.as_str().or(content[0]["text"].as_str());
    assert_eq!(sent_text.map(str::len), Some(long.len()), "{content:.200}");
    let (res, text) = gw.call(ANTHROPIC, &anthropic("to-gpt", &long, false)).await;
    assert_eq!(res.status(), 200, "{}", &text[..text.len().min(300)]);
    assert_eq!(json(&text)["type"], "message");
    // A large invalid body: the schema's answer, naming the field.
    let mut bad = json(&chat("gpt", &long, false));
    bad["messages"][0]["role"] = 7.into();
    let (res, text) = gw.call(OPENAI, &bad.to_string()).await;
    assert_eq!(res.status(), 400, "{text}");
    assert!(text.contains("/messages/0/role"), "{text}");
    // Large and not JSON.
    let (res, text) = gw
        .call(OPENAI, &format!("{{\"model\":\"gpt\",\"x\":\"{long}"))
        .await;
    assert_eq!(res.status(), 400, "{text}");
    assert!(text.contains("not valid JSON"), "{text}");
}

/// Reads from `tcp` until the peer closes (or 10 s pass); what it sent.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    r.ok().map(|()| String::from_utf8_lossy(&out).into_owned())
}

const SMALL: &str = r#"{"model":"mock","messages":[{"role":"user","content":"hi"}]}"#;

fn request_head(len: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    )
}

/// A gateway with one `[server]` setting in front of `mock`, and a raw
/// connection to it on which `first` was written.
async fn raw_connection(
    setting: &str,
    mock: &MockUpstream,
    first: &[u8],
) -> (TestGateway, tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let gw = start(
        &mock_gateway(&format!("[server]\n{setting}")),
        &[("m", mock)],
    )
    .await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(first).await.unwrap();
    (gw, tcp)
}

#[tokio::test]
async fn a_slow_head_and_an_idle_connection_are_closed() {
    use tokio::io::AsyncWriteExt;
    let mock = MockUpstream::new();
    // Half a head, then nothing.
    let (gw, mut tcp) = raw_connection(
        "header_read_timeout = 200",
        &mock,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n",
    )
    .await;
    assert!(
        read_until_closed(&mut tcp).await.is_some(),
        "a connection with half a head is closed"
    );
    // A full exchange, then an idle keep-alive connection.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(format!("{}{SMALL}", request_head(SMALL.len())).as_bytes())
        .await
        .unwrap();
    let seen = read_until_closed(&mut tcp)
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let mock = MockUpstream::new();
    let (_gw, mut tcp) = raw_connection(
        "body_read_timeout = 200",
        &mock,
        format!("{}{}", request_head(SMALL.len()), &SMALL[..10]).as_bytes(),
    )
    .await;
    let seen = read_until_closed(&mut tcp)
        .await
        .expect("an answer, then close");
    assert!(seen.starts_with("HTTP/1.1 408"), "{seen}");
    assert!(seen.contains("body_read_timeout"), "{seen}");
    assert!(seen.contains(r#""type":"invalid_request_error""#), "{seen}");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn connections_over_the_limit_get_503_and_a_freed_slot_serves_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockUpstream::new();
    let gw = start(
        &mock_gateway("[server]\nmax_connections = 2"),
        &[("m", &mock)],
    )
    .await;
    let exchange = format!("{}{SMALL}", request_head(SMALL.len()));
    // Two connections, each served once and kept open.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(exchange.as_bytes()).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(tcp);
    }
    let mut third = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let seen = read_until_closed(&mut third)
        .await
        .expect("503, then close");
    assert!(seen.starts_with("HTTP/1.1 503"), "{seen}");
    assert!(seen.contains("max_connections"), "{seen}");
    // Health checks are connections too: the answer is immediate, not a
    // hang. Free a slot: a new connection is served (the slot comes back
    // when the server notices the close; bounded wait).
    drop(held.pop());
    let mut served = false;
    for _ in 0..200 {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(exchange.as_bytes()).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        if buf[..n].starts_with(b"HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served, "a freed slot serves a new connection");
}

#[tokio::test]
async fn streams_running_past_the_grace_period_end_with_an_error_event() {
    use http_body_util::BodyExt;
    let mock = MockUpstream::new();
    mock.set_default(
        palisade_mock::Reply::words(10_000).delay_per_token(std::time::Duration::from_millis(20)),
    );
    let config = palisade_gateway::Config::parse(&mock_gateway(""), "t.toml").unwrap();
    let gateway = palisade_gateway::Gateway::with_mocks(
        config,
        [("m".to_owned(), mock.clone())].into_iter().collect(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(palisade_gateway::serve_with_grace(
        listener,
        gateway,
        async move {
            let _ = stop_rx.await;
        },
        std::time::Duration::from_millis(300),
    ));
    let c = client();
    let open = |path: &'static str, body: String| {
        let c = c.clone();
        async move {
            let req = Request::post(format!("http://{addr}{path}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let mut res = c.request(req).await.unwrap();
            // The first event is through: the stream is running.
            let first = res.body_mut().frame().await.unwrap().unwrap();
            assert!(first.is_data());
            res
        }
    };
    let a = open(OPENAI, chat("mock", "x", true)).await;
    let b = open(ANTHROPIC, anthropic("mock", "x", true)).await;
    stop_tx.send(()).unwrap();
    let (a, b) = (text(a).await, text(b).await);
    let last_a = data_lines(&a).last().cloned().unwrap();
    assert!(last_a.contains("shutting down"), "{last_a}");
    assert!(json(&last_a)["error"]["message"].is_string(), "{last_a}");
    assert!(
        b.contains("event: error"),
        "{}",
        &b[b.len().saturating_sub(300)..]
    );
    let last_b = data_lines(&b).last().cloned().unwrap();
    assert!(last_b.contains("shutting down"), "{last_b}");
    let all_finished = tokio::time::timeout(std::time::Duration::from_secs(10), served)
        .await
        .expect("serving ends after grace + flush")
        .unwrap()
        .unwrap();
    assert!(!all_finished, "the streams were cut, not finished");
}

#[tokio::test]
async fn http2_callers_are_served() {
    let mock = MockUpstream::new();
    let gw = start(&mock_gateway(""), &[("m", &mock)]).await;
    let h2: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = Request::post(gw.url(OPENAI))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(SMALL.as_bytes())))
        .unwrap();
    let res = h2.request(req).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn output_budgets_of_any_number_shape_are_limited_and_translated_or_400() {
    let tpm = "[upstreams.rate_limit]\ntokens_per_minute = 100000\nmax_wait = 0\n";
    let TwoApis { gw, o, c, _served } = two_apis(tpm, "").await;
    // The same shape is a valid request in both APIs.
    let with_budget = |model: &str, n: &str| {
        format!(
            r#"{{"model":"{model}","max_tokens":{n},"messages":[{{"role":"user","content":"hi"}}]}}"#
        )
    };
    // Whole numbers in other shapes: translated as the integers they are.
    for n in ["1e3", "1000.0", "1000"] {
        let (res, text) = gw.call(OPENAI, &with_budget("to-claude", n)).await;
        assert_eq!(res.status(), 200, "{n}: {text}");
        assert_eq!(
            c.last_request().unwrap().json().unwrap()["max_tokens"],
            1000
        );
        let (res, text) = gw.call(ANTHROPIC, &with_budget("to-gpt", n)).await;
        assert_eq!(res.status(), 200, "{n}: {text}");
        let sent = o.last_request().unwrap().json().unwrap();
        let budget = sent
            .get("max_completion_tokens")
            .or(sent.get("max_tokens"))
            .cloned();
        assert_eq!(budget, Some(1000.into()), "{sent}");
    }
    // Not a whole number a typed request can carry: the caller's mistake,
    // 400 naming the field, in both directions; no upstream called.
    let (before_o, before_c) = (o.request_count(), c.request_count());
    for n in ["1.5", "1e300", "18446744073709551616"] {
        let (res, text) = gw.call(OPENAI, &with_budget("to-claude", n)).await;
        assert_eq!(res.status(), 400, "{n}: {text}");
        assert!(text.contains("max_tokens"), "{text}");
        let (res, text) = gw.call(ANTHROPIC, &with_budget("to-gpt", n)).await;
        assert_eq!(res.status(), 400, "{n}: {text}");
        assert_eq!(json(&text)["type"], "error");
    }
    assert_eq!((o.request_count(), c.request_count()), (before_o, before_c));
    // The token limit sees every shape: a budget past the limit is refused
    // locally, however it is written.
    for n in [
        "1e6",
        "1000000.0",
        "1e300",
        "18446744073709551616",
        "1.8e19",
    ] {
        let (res, text) = gw.call(OPENAI, &with_budget("gpt", n)).await;
        assert_eq!(res.status(), 429, "{n}: {text}");
        assert!(text.contains("rate limit"), "{text}");
    }
    assert_eq!(o.request_count(), before_o);
}

/// `key` with every character written as a JSON `\u` escape.
fn unicode_escaped(key: &str) -> String {
    key.chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect()
}

#[tokio::test]
async fn a_key_quoted_json_escaped_is_scrubbed_on_every_path() {
    let key = std::env::var("PALISADE_TEST_SLASH_KEY").unwrap();
    let slashed = key.replace('/', "\\/");
    let forms = [key.clone(), slashed.clone(), unicode_escaped(&key)];
    let extra = "api_key_env = \"PALISADE_TEST_SLASH_KEY\"\n[upstreams.retry]\nmax_attempts = 1\n";
    let TwoApis { gw, o, c, _served } = two_apis(extra, extra).await;
    let openai_error = |form: &str| {
        format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {form}","type":"invalid_request_error"}}}}"#
        )
    };
    let anthropic_error = |form: &str| {
        format!(
            r#"{{"type":"error","error":{{"type":"authentication_error","message":"invalid x-api-key {form}"}}}}"#
        )
    };
    for form in &forms {
        for (upstream, caller, path, body, error) in [
            (
                &o,
                "gpt",
                OPENAI,
                chat("gpt", "x", false),
                openai_error(form),
            ),
            (
                &o,
                "to-gpt",
                ANTHROPIC,
                anthropic("to-gpt", "x", false),
                openai_error(form),
            ),
            (
                &c,
                "claude",
                ANTHROPIC,
                anthropic("claude", "x", false),
                anthropic_error(form),
            ),
            (
                &c,
                "to-claude",
                OPENAI,
                chat("to-claude", "x", false),
                anthropic_error(form),
            ),
        ] {
            upstream.push(palisade_mock::Reply::status(401).body(error));
            let (res, text) = gw.call(path, &body).await;
            assert_eq!(res.status(), 401, "{caller} {form}: {text}");
            // Neither in the bytes nor in what a JSON decoder reads.
            let decoded = json(&text).to_string();
            for seen in [&text, &decoded] {
                for f in &forms {
                    assert!(!seen.contains(f.as_str()), "{caller} {form}: {seen}");
                }
                assert!(!seen.contains(&key), "{caller} {form}: {seen}");
            }
            assert!(text.contains("[REDACTED]"), "{caller} {form}: {text}");
        }
    }
}

/// A raw-TCP OpenAI upstream that answers every request with an endless
/// stream of events, written as fast as the gateway takes them, and reports
/// on `closed` when the gateway closed the connection (a write failed).
async fn endless_upstream() -> (String, tokio::sync::mpsc::Receiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                // The request head and body (small): read what is there.
                let mut buf = vec![0u8; 64 * 1024];
                let _ = tcp.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if tcp.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let event = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"},\"finish_reason\":null}]}\n\n";
                let chunk = format!("{:x}\r\n{event}\r\n", event.len()).repeat(64);
                loop {
                    if tcp.write_all(chunk.as_bytes()).await.is_err() {
                        let _ = tx.send(()).await;
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/v1"), rx)
}

#[tokio::test]
async fn a_caller_that_stops_reading_releases_the_upstream_at_idle() {
    use http_body_util::BodyExt;
    let (url, mut closed) = endless_upstream().await;
    let extra = "http = \"http1\"\n[upstreams.retry]\nmax_attempts = 1\n[upstreams.timeout]\nidle = 300\ntotal = 600000\n";
    let toml = upstream("o", "openai", &url, extra) + &route("gpt", &["o"]);
    let gw = start(&toml, &[]).await;
    let mut res = gw.post(OPENAI, &chat("gpt", "x", true), &[]).await;
    assert_eq!(res.status(), 200);
    let first = res.body_mut().frame().await.unwrap().unwrap();
    assert!(first.is_data());
    // Stop reading: the buffers on the way fill, the gateway's pump waits,
    // and after the idle timeout it lets the upstream go.
    tokio::time::timeout(std::time::Duration::from_secs(20), closed.recv())
        .await
        .expect("the upstream connection is closed while the caller holds the stream")
        .unwrap();
    // Reading again: what was buffered, then an error event saying why.
    let rest = text(res).await;
    let last = data_lines(&rest).last().cloned().unwrap();
    assert!(last.contains("unread"), "{last}");
}

#[tokio::test]
async fn a_caller_that_goes_away_releases_the_upstream_at_once() {
    use http_body_util::BodyExt;
    let (url, mut closed) = endless_upstream().await;
    // Long timeouts: only the caller's going away can release it in time.
    let extra = "http = \"http1\"\n[upstreams.retry]\nmax_attempts = 1\n[upstreams.timeout]\nidle = 600000\ntotal = 600000\n";
    let toml = "[server]\nidle_timeout = 700000\n".to_owned()
        + &upstream("o", "openai", &url, extra)
        + &route("gpt", &["o"]);
    let gw = start(&toml, &[]).await;
    let h2: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = Request::post(gw.url(OPENAI))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("gpt", "x", true))))
        .unwrap();
    let mut res = h2.request(req).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    let first = res.body_mut().frame().await.unwrap().unwrap();
    assert!(first.is_data());
    // Dropping the body resets the HTTP/2 stream.
    drop(res);
    tokio::time::timeout(std::time::Duration::from_secs(20), closed.recv())
        .await
        .expect("the upstream connection is closed once the caller reset its stream")
        .unwrap();

    // An HTTP/2 caller whose window is full (it reads nothing) and whose
    // connection then goes away.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(1024)
            .handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::post(gw.url(OPENAI))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("gpt", "x", true))))
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    // The window (1 KiB) fills at once; then the connection is dropped.
    conn.abort();
    let _ = conn.await;
    drop((res, send));
    tokio::time::timeout(std::time::Duration::from_secs(20), closed.recv())
        .await
        .expect("the upstream connection is closed once the caller's connection is gone")
        .unwrap();
}

/// A raw-TCP upstream that reads a request and writes `answer` as is, then
/// closes the connection.
async fn fixed_upstream(answer: impl Into<Bytes>) -> String {
    let answer: Bytes = answer.into();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(&answer).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn an_unrequested_101_and_a_truncated_json_answer_are_502_not_relayed() {
    let switch = fixed_upstream(
        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await;
    // No length: the body ends where the connection does, mid-JSON.
    let cut = fixed_upstream(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"the answer is",
    )
    .await;
    let one = "http = \"http1\"\n[upstreams.retry]\nmax_attempts = 1\n";
    let toml = upstream("switch", "openai", &switch, one)
        + &upstream("cut", "openai", &cut, one)
        + &route("s", &["switch"])
        + &route("c", &["cut"]);
    let gw = start(&toml, &[]).await;
    let (res, text) = gw.call(OPENAI, &chat("s", "x", false)).await;
    assert_eq!(res.status(), 502, "{text}");
    assert!(text.contains("101"), "{text}");
    let (res, text) = gw.call(OPENAI, &chat("c", "x", false)).await;
    assert_eq!(res.status(), 502, "{text}");
    assert!(text.contains("not complete JSON"), "{text}");
}

/// An HTTP/1.1 answer of `body` compressed with `encoding`.
fn compressed(content_type: &str, encoding: &str, body: &str) -> Vec<u8> {
    use std::io::Write;
    let packed = match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body.as_bytes()).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(body.as_bytes()).unwrap();
            }
            out
        }
        other => panic!("no encoder for {other}"),
    };
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-encoding: {encoding}\r\ncontent-length: {}\r\n\r\n",
        packed.len()
    )
    .into_bytes();
    answer.extend_from_slice(&packed);
    answer
}

#[tokio::test]
async fn answers_compressed_without_being_asked_are_decoded() {
    let completion = r#"{"id":"chatcmpl-1","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"decoded fine"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
    let chunk = |text: &str| {
        format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":null}}]}}\n\n"
        )
    };
    let stream = format!(
        "{}{}data: [DONE]\n\n",
        chunk("streamed "),
        chunk("and decoded")
    );
    let gz_json = fixed_upstream(compressed("application/json", "gzip", completion)).await;
    let br_json = fixed_upstream(compressed("application/json", "br", completion)).await;
    let gz_sse = fixed_upstream(compressed("text/event-stream", "gzip", &stream)).await;
    let br_sse = fixed_upstream(compressed("text/event-stream", "br", &stream)).await;
    let one = "http = \"http1\"\n[upstreams.retry]\nmax_attempts = 1\n";
    let toml = upstream("gz", "openai", &gz_json, one)
        + &upstream("br", "openai", &br_json, one)
        + &upstream("gzs", "openai", &gz_sse, one)
        + &upstream("brs", "openai", &br_sse, one)
        + &route("gz", &["gz"])
        + &route("br", &["br"])
        + &route("gzs", &["gzs"])
        + &route("brs", &["brs"]);
    let gw = start(&toml, &[]).await;
    for model in ["gz", "br"] {
        let (res, text) = gw.call(OPENAI, &chat(model, "x", false)).await;
        assert_eq!(res.status(), 200, "{model}: {text}");
        assert!(res.headers().get("content-encoding").is_none());
        assert_eq!(
            json(&text)["choices"][0]["message"]["content"],
            "decoded fine"
        );
        // Translated too: the decoded answer is what the translator reads.
        let (res, text) = gw.call(ANTHROPIC, &anthropic(model, "x", false)).await;
        assert_eq!(res.status(), 200, "{model}: {text}");
        assert_eq!(json(&text)["content"][0]["text"], "decoded fine");
    }
    for model in ["gzs", "brs"] {
        let (res, text) = gw.call(OPENAI, &chat(model, "x", true)).await;
        assert_eq!(res.status(), 200, "{model}: {text}");
        assert_eq!(openai_text(&text), "streamed and decoded", "{text}");
        assert_eq!(data_lines(&text).last().unwrap(), "[DONE]");
    }
    // What the gateway asks for: no compression.
    let mock = MockUpstream::new();
    let served = mock.serve().await.unwrap();
    let gw = start(
        &(upstream("m", "openai", &served.base_url(), "") + &route("m", &["m"])),
        &[],
    )
    .await;
    let (res, _) = gw.call(OPENAI, &chat("m", "x", false)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        mock.last_request().unwrap().header("accept-encoding"),
        Some("identity")
    );
}

/// A raw-TCP OpenAI upstream that keeps connections alive (no
/// `Connection: close`) but closes one that stays idle for 2 ms after an
/// answer, as servers with short keep-alive timeouts do: a pooled connection may be
/// closed just as the gateway reuses it. Counts the answers it wrote.
async fn short_keep_alive_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let mut answered = false;
                loop {
                    // A whole request: its head and the body its
                    // content-length announces; after an answer, idle 2 ms
                    // before the next request's first byte closes the
                    // connection.
                    loop {
                        let idle = answered && buf.is_empty();
                        let read = tcp.read(&mut chunk);
                        let n = if idle {
                            match tokio::time::timeout(std::time::Duration::from_millis(2), read)
                                .await
                            {
                                Ok(Ok(n)) => n,
                                _ => return,
                            }
                        } else {
                            match read.await {
                                Ok(n) => n,
                                Err(_) => return,
                            }
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf);
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                buf.clear();
                                break;
                            }
                        }
                    }
                    let body = r#"{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tcp.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    answered = true;
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    (format!("http://{addr}/v1"), served)
}

#[tokio::test]
async fn stale_pooled_connections_are_retried_and_never_trip_the_breaker() {
    let (url, served) = short_keep_alive_upstream().await;
    // Retries with no delay; a breaker that opens after 5 failures in 10
    // calls: were a closed pooled connection counted against the upstream,
    // it would open, and callers would get 503s.
    let extra = "http = \"http1\"\n[upstreams.retry]\nmax_attempts = 5\nbase_delay = 1\nmax_delay = 1\n[upstreams.breaker]\nminimum_calls = 5\nwindow = 10\n";
    let toml = upstream("o", "openai", &url, extra) + &route("gpt", &["o"]);
    let gw = std::sync::Arc::new(start(&toml, &[]).await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..25u64 {
                let (res, text) = gw.call(OPENAI, &chat("gpt", "x", false)).await;
                statuses.push((res.status().as_u16(), text));
                // Gaps around the upstream's 2 ms keep-alive.
                tokio::time::sleep(std::time::Duration::from_micros(500 * (i % 7))).await;
            }
            statuses
        }));
    }
    let mut failed = Vec::new();
    for t in tasks {
        for (status, text) in t.await.unwrap() {
            if status != 200 {
                failed.push(format!("{status}: {text}"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 200 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(served.load(std::sync::atomic::Ordering::Relaxed), 200);
}

/// A raw-TCP upstream that gives its `n`-th connection the `n`-th answer
/// (the last one from then on), then closes it.
async fn scripted_upstream(
    answers: Vec<Bytes>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    scripted_upstream_holding(answers, false).await
}

/// [`scripted_upstream`]; with `hold_first`, the first connection is held
/// open after its answer (a stall) until the gateway closes it.
async fn scripted_upstream_holding(
    answers: Vec<Bytes>,
    hold_first: bool,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let answer = answers[n.min(answers.len() - 1)].clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(&answer).await;
                if hold_first && n == 0 {
                    while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                }
                let _ = tcp.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/v1"), calls)
}

#[tokio::test]
async fn a_json_answer_that_breaks_off_mid_body_is_asked_for_again() {
    let body = r#"{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}]}"#;
    let whole = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // The length promises the whole answer; the connection ends at 40 bytes.
    let broken = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        body.len(),
        &body[..40]
    );
    let answers = vec![Bytes::from(broken.clone()), Bytes::from(whole)];
    let (retried_url, retried_calls) = scripted_upstream(answers).await;
    let (once_url, once_calls) = scripted_upstream(vec![Bytes::from(broken)]).await;
    let two = "http = \"http1\"\n[upstreams.retry]\nmax_attempts = 2\nbase_delay = 1\n";
    let one = "http = \"http1\"\n[upstreams.retry]\nmax_attempts = 1\n";
    let toml = upstream("r", "openai", &retried_url, two)
        + &upstream("o", "openai", &once_url, one)
        + &route("r", &["r"])
        + &route("o", &["o"]);
    let gw = start(&toml, &[]).await;
    let (res, text) = gw.call(OPENAI, &chat("r", "x", false)).await;
    assert_eq!(res.status(), 200, "{text}");
    assert_eq!(json(&text)["choices"][0]["message"]["content"], "whole");
    assert_eq!(retried_calls.load(std::sync::atomic::Ordering::Relaxed), 2);
    // One attempt configured: the broken answer is a 502, called once.
    let (res, text) = gw.call(OPENAI, &chat("o", "x", false)).await;
    assert_eq!(res.status(), 502, "{text}");
    assert_eq!(once_calls.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_key_quoted_in_a_stream_is_scrubbed_in_both_apis() {
    let key = std::env::var("PALISADE_TEST_SLASH_KEY").unwrap();
    let forms = [key.clone(), key.replace('/', "\\/"), unicode_escaped(&key)];
    for form in &forms {
        let sse = format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"hi {form}\"}},\"finish_reason\":null}}]}}\n\n\
             data: {{\"error\":{{\"message\":\"bad key {form}\",\"type\":\"server_error\"}}}}\n\n"
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{sse}",
            sse.len()
        );
        let url = fixed_upstream(answer).await;
        let extra = "api_key_env = \"PALISADE_TEST_SLASH_KEY\"\nhttp = \"http1\"\n[upstreams.retry]\nmax_attempts = 1\n";
        let toml = upstream("o", "openai", &url, extra) + &route("gpt", &["o"]);
        let gw = start(&toml, &[]).await;
        for (path, body) in [
            (OPENAI, chat("gpt", "x", true)),
            (ANTHROPIC, anthropic("gpt", "x", true)),
        ] {
            let (res, text) = gw.call(path, &body).await;
            assert_eq!(res.status(), 200, "{text}");
            assert!(text.contains("[REDACTED]"), "{path} {form}: {text}");
            for line in data_lines(&text).iter().filter(|l| l.starts_with('{')) {
                let decoded = json(line).to_string();
                for seen in [line, &decoded] {
                    assert!(!seen.contains(&key), "{path} {form}: {seen}");
                    assert!(!seen.contains(form.as_str()), "{path} {form}: {seen}");
                }
            }
        }
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_and_the_timeout_is_checked_against_upstreams() {
    let mock = MockUpstream::new();
    let toml = "[server]\nidle_timeout = 300\n[[upstreams]]\nname = \"m\"\nkind = \"mock\"\n[upstreams.timeout]\nfirst_byte = 100\nidle = 100\n".to_owned()
        + &route("mock", &["m"]);
    let gw = start(&toml, &[("m", &mock)]).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::post(gw.url(OPENAI))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(SMALL.as_bytes())))
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    drop(text(res).await);
    // Nothing more on it: the gateway closes it (GOAWAY, then the end).
    tokio::time::timeout(std::time::Duration::from_secs(10), conn)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap()
        .unwrap();

    // An upstream that may wait longer than idle_timeout is refused at start.
    let bad = "[server]\nidle_timeout = 1000\n[[upstreams]]\nname = \"m\"\nkind = \"mock\"\n"
        .to_owned()
        + &route("mock", &["m"]);
    let e = palisade_gateway::Config::parse(&bad, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("first_byte") && e.contains("idle_timeout"),
        "{e}"
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_header_read_timeout() {
    use tokio::io::AsyncWriteExt;
    let mock = MockUpstream::new();
    // `idle_timeout` stays at its 5 min: only the head's timer can close
    // these within the 10 s `read_until_closed` waits.
    let (gw, mut silent) = raw_connection("header_read_timeout = 200", &mock, b"").await;
    assert!(
        read_until_closed(&mut silent).await.is_some(),
        "a connection that sends nothing is closed"
    );
    // One byte: not yet enough to tell HTTP/1.1 from HTTP/2.
    let mut one = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    one.write_all(b"P").await.unwrap();
    assert!(
        read_until_closed(&mut one).await.is_some(),
        "a connection that sends one byte is closed"
    );
    // HTTP/2's preface and nothing more.
    let mut h2 = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_until_closed(&mut h2).await.is_some(),
        "an HTTP/2 connection that opens no stream is closed"
    );
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn half_sent_requests_do_not_hold_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockUpstream::new();
    let config = palisade_gateway::Config::parse(&mock_gateway(""), "t.toml").unwrap();
    let gateway = palisade_gateway::Gateway::with_mocks(
        config,
        std::collections::HashMap::from([("m".to_owned(), mock.clone())]),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let grace = std::time::Duration::from_secs(5);
    let server = tokio::spawn(palisade_gateway::serve_with_grace(
        listener,
        gateway,
        async move {
            let _ = stopped.await;
        },
        grace,
    ));
    // A body still arriving: the head asks `100-continue`, so the
    // gateway's `100 Continue` says its handler is reading the body.
    let mut body = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        SMALL.len()
    );
    body.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), body.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 100"), "{:?}", &buf[..n]);
    body.write_all(&SMALL.as_bytes()[..10]).await.unwrap();
    // Half a head, one byte, and nothing at all.
    let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
    half.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n")
        .await
        .unwrap();
    let mut one = tokio::net::TcpStream::connect(addr).await.unwrap();
    one.write_all(b"P").await.unwrap();
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t0 = std::time::Instant::now();
    stop.send(()).unwrap();
    let finished = tokio::time::timeout(std::time::Duration::from_secs(30), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    assert!(
        finished,
        "every connection ended within the grace ({:?} after the signal)",
        t0.elapsed()
    );
    // The body's sender is told to send it again.
    let seen = read_until_closed(&mut body)
        .await
        .expect("an answer, then close");
    assert!(seen.contains("503"), "{seen}");
    assert!(seen.contains("shutting down"), "{seen}");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn an_upstream_answer_over_the_limit_is_502_naming_the_upstream() {
    let o = MockUpstream::new();
    o.set_default(palisade_mock::Reply::words(1_000));
    let served = o.serve().await.unwrap();
    let toml = "max_answer_bytes = 2000\n".to_owned()
        + &upstream(
            "big-o",
            "openai",
            &served.base_url(),
            "[upstreams.retry]\nmax_attempts = 1\n",
        )
        + &route("gpt", &["big-o"]);
    let gw = start(&toml, &[]).await;
    for (path, body) in [
        (OPENAI, chat("gpt", "x", false)),
        (
            ANTHROPIC,
            anthropic("gpt", "x", false).replace("\"max_tokens\":64", "\"max_tokens\":4000"),
        ),
    ] {
        let (res, text) = gw.call(path, &body).await;
        assert_eq!(res.status(), 502, "{path}: {text}");
        assert!(text.contains("`big-o`"), "{text}");
        assert!(text.contains("max_answer_bytes"), "{text}");
        assert!(!text.contains("smaller request"), "{text}");
    }
    // A short answer still passes.
    o.push(palisade_mock::Reply::words(3));
    let (res, text) = gw.call(OPENAI, &chat("gpt", "x", false)).await;
    assert_eq!(res.status(), 200, "{text}");
}

#[tokio::test]
async fn a_key_too_short_to_be_a_secret_is_never_scrubbed_and_start_up_warns() {
    let capture = palisade_core::test_util::LogCapture::new();
    let _g = capture.set_default();
    // The key `o` (PALISADE_TEST_SHORT_KEY) occurs in `choices`, `object`…
    let extra = "api_key_env = \"PALISADE_TEST_SHORT_KEY\"\n[upstreams.retry]\nmax_attempts = 1\n";
    let TwoApis { gw, _served, .. } = two_apis(extra, extra).await;
    let logs = capture.contents();
    assert!(
        logs.contains("too short to be a secret") && logs.contains("upstream=o"),
        "{logs}"
    );
    let (res, text) = gw.call(OPENAI, &chat("gpt", "hello world", false)).await;
    assert_eq!(res.status(), 200, "{text}");
    assert!(!text.contains("REDACTED"), "{text}");
    assert_eq!(
        json(&text)["choices"][0]["message"]["content"],
        "hello world"
    );
    // Streams, translated or not, come through whole.
    let (res, text) = gw.call(OPENAI, &chat("gpt", "hello world", true)).await;
    assert_eq!(res.status(), 200, "{text}");
    assert_eq!(openai_text(&text), "hello world", "{text}");
    let (res, text) = gw
        .call(OPENAI, &chat("to-claude", "hello world", true))
        .await;
    assert_eq!(res.status(), 200, "{text}");
    assert_eq!(openai_text(&text), "hello world", "{text}");
    let (res, text) = gw
        .call(ANTHROPIC, &anthropic("to-gpt", "hello world", true))
        .await;
    assert_eq!(res.status(), 200, "{text}");
    assert!(text.contains("message_stop"), "{text}");
    assert!(!text.contains("REDACTED"), "{text}");
}

#[tokio::test]
async fn a_json_answer_that_stalls_mid_body_is_asked_for_again() {
    let body = r#"{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}]}"#;
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let stalled = Bytes::from(format!("{head}{}", &body[..40]));
    let whole = Bytes::from(format!("{head}{body}"));
    let (url, calls) = scripted_upstream_holding(vec![stalled, whole], true).await;
    let extra = "http = \"http1\"\n[upstreams.timeout]\nidle = 300\n[upstreams.retry]\nmax_attempts = 2\nbase_delay = 1\n";
    let toml = upstream("s", "openai", &url, extra) + &route("s", &["s"]);
    let gw = start(&toml, &[]).await;
    let (res, text) = gw.call(OPENAI, &chat("s", "x", false)).await;
    assert_eq!(res.status(), 200, "{text}");
    assert_eq!(json(&text)["choices"][0]["message"]["content"], "whole");
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[tokio::test]
async fn stale_pooled_connections_are_resent_without_spending_the_one_attempt() {
    let (url, served) = short_keep_alive_upstream().await;
    // One attempt: a resend on a closed pooled connection is not one.
    let extra = "http = \"http1\"\n[upstreams.retry]\nmax_attempts = 1\n";
    let toml = upstream("o", "openai", &url, extra) + &route("gpt", &["o"]);
    let gw = start(&toml, &[]).await;
    let mut failed = Vec::new();
    for i in 0..60u64 {
        let (res, text) = gw.call(OPENAI, &chat("gpt", "x", false)).await;
        if res.status() != 200 {
            failed.push(format!("{}: {text}", res.status()));
        }
        // Gaps around the upstream's 2 ms keep-alive.
        tokio::time::sleep(std::time::Duration::from_micros(500 * (i % 7))).await;
    }
    assert!(
        failed.is_empty(),
        "{} of 60 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(served.load(std::sync::atomic::Ordering::Relaxed), 60);
}

#[tokio::test]
async fn refused_connections_are_logged_at_most_once_a_second() {
    let capture = palisade_core::test_util::LogCapture::new();
    let _g = capture.set_default();
    let mock = MockUpstream::new();
    let gw = start(
        &mock_gateway("[server]\nmax_connections = 1"),
        &[("m", &mock)],
    )
    .await;
    // The one slot, held by a connection mid-head.
    let mut held = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut held, b"POST / HTTP/1.1\r\n")
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    for _ in 0..30 {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let seen = read_until_closed(&mut tcp).await.expect("503, then close");
        assert!(seen.starts_with("HTTP/1.1 503"), "{seen}");
    }
    let seconds = t0.elapsed().as_secs() + 1;
    let lines = capture.contents().matches("refused connections").count() as u64;
    assert!(
        (1..=seconds + 1).contains(&lines),
        "{lines} lines in {seconds} s: {}",
        capture.contents()
    );
}

/// A gateway for `toml` (the mock `m` behind its mock upstream `m`) served
/// by `serve_per_core` on two workers, and a client that opens a new
/// connection per request, so the kernel spreads them over both workers.
struct PerCore {
    addr: std::net::SocketAddr,
    client: HttpClient,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<bool>>,
}

async fn per_core(toml: &str, mock: &MockUpstream) -> PerCore {
    let config = palisade_gateway::Config::parse(toml, "t.toml").unwrap();
    assert_eq!(config.server.worker_count(), 2);
    let gateway = palisade_gateway::Gateway::with_mocks(
        config,
        std::collections::HashMap::from([("m".to_owned(), mock.clone())]),
    )
    .unwrap();
    let listeners =
        palisade_gateway::PerCoreListeners::bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    assert_eq!(listeners.workers(), 2);
    let addr = listeners.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(palisade_gateway::serve_per_core(
        listeners,
        gateway,
        async move {
            let _ = stopped.await;
        },
        Some(std::time::Duration::from_secs(5)),
    ));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    PerCore {
        addr,
        client,
        stop,
        server,
    }
}

impl PerCore {
    /// POSTs a chat request for `mock` on a new connection.
    async fn chat(&self) -> http::Response<hyper::body::Incoming> {
        let req = Request::post(format!("http://{}{OPENAI}", self.addr))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(chat("mock", "hi", false))))
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), self.client.request(req))
            .await
            .unwrap()
            .unwrap()
    }

    /// Stops it; whether every connection ended within the grace.
    async fn stop(self) -> bool {
        self.stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), self.server)
            .await
            .expect("every worker stops")
            .unwrap()
            .unwrap()
    }
}

const TWO_WORKERS: &str = "[server]\nruntime = \"thread_per_core\"\nworkers = 2\n";

#[tokio::test]
async fn thread_per_core_workers_share_limits_metrics_and_shutdown() {
    let mock = MockUpstream::new();
    let toml = TWO_WORKERS.to_owned()
        + &upstream(
            "m",
            "mock",
            "http://unused",
            "[upstreams.rate_limit]\nrequests_per_minute = 20\n",
        )
        + &route("mock", &["m"]);
    let gw = per_core(&toml, &mock).await;
    // A second gateway on the same port is refused, not joined to this one
    // through SO_REUSEPORT.
    let again = palisade_gateway::PerCoreListeners::bind(gw.addr, 2).unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);
    let (mut ok, mut limited) = (0u64, 0u64);
    for _ in 0..40 {
        let res = gw.chat().await;
        match res.status().as_u16() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("status {other}: {}", text(res).await),
        }
    }
    // One limit for the process, not one per worker (which would admit all
    // 40); one more may be admitted when the calls take over 3 s, the
    // bucket's refill time for one request at 20 a minute.
    assert_eq!(ok + limited, 40);
    assert!((20..=21).contains(&ok), "{ok} admitted");
    assert_eq!(mock.request_count(), ok);
    // Metrics count every worker's requests.
    let req = Request::get(format!("http://{}/metrics", gw.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let metrics = text(gw.client.request(req).await.unwrap()).await;
    assert!(
        metrics.contains(&format!(
            r#"palisade_requests_total{{route="mock",upstream="m",status="200"}} {ok}"#
        )),
        "{metrics}"
    );
    let addr = gw.addr;
    assert!(gw.stop().await);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no worker listens any more"
    );
}

/// An HTTP/2 (h2c) upstream answering every request with an endless chat
/// stream; `produced` counts the bytes its streams were polled for, which
/// hyper does only while the reader's flow-control window has room.
async fn endless_h2_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = produced.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let count = count.clone();
                    let chunk = Bytes::from(format!(
                        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},\"finish_reason\":null}}]}}\n\n",
                        "word ".repeat(200)
                    ));
                    let frames = futures_util::StreamExt::map(
                        futures_util::stream::repeat(chunk),
                        move |c| {
                            count.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                            Ok::<_, std::convert::Infallible>(http_body::Frame::data(c))
                        },
                    );
                    let res = http::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(http_body_util::StreamBody::new(frames))
                        .unwrap();
                    std::future::ready(Ok::<_, std::convert::Infallible>(res))
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
            });
        }
    });
    (format!("http://{addr}/v1"), produced)
}

#[tokio::test]
async fn a_stream_its_http2_caller_stops_reading_pulls_little_from_an_http2_upstream() {
    let (url, produced) = endless_h2_upstream().await;
    let extra = "http = \"http2\"\n[upstreams.retry]\nmax_attempts = 1\n";
    let toml = upstream("o", "openai", &url, extra) + &route("gpt", &["o"]);
    let gw = start(&toml, &[]).await;
    // HTTP/2's default stream window, and a caller that never reads.
    let h2: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .http2_initial_stream_window_size(65_535)
            .build_http();
    let req = Request::post(gw.url(OPENAI))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("gpt", "x", true))))
        .unwrap();
    let res = h2.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    // Wait until the upstream is no longer polled (its count still for
    // 300 ms), at most 10 s.
    let mut last = u64::MAX;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = produced.load(std::sync::atomic::Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let pulled = produced.load(std::sync::atomic::Ordering::Relaxed);
    // The caller's window, the relay's two events, and the gateway's
    // receive window towards the upstream. hyper's fixed windows let the
    // upstream push 2 MiB into the gateway for this one stream.
    assert!(
        pulled < 1024 * 1024,
        "the gateway pulled {pulled} bytes from the upstream for a stream nobody reads"
    );
    assert!(pulled > 0);
    drop(res);
}

#[tokio::test]
async fn azure_upstreams_take_the_key_in_api_key_and_the_api_version_in_the_query() {
    let key = std::env::var("PALISADE_TEST_ENV_KEY").unwrap();
    let (deployment, v1) = (MockUpstream::new(), MockUpstream::new());
    let (sd, sv) = (deployment.serve().await.unwrap(), v1.serve().await.unwrap());
    let root = |s: &palisade_mock::MockServer| s.base_url().trim_end_matches("/v1").to_owned();
    let toml = upstream(
        "az",
        "azure",
        &format!("{}/openai/deployments/gpt-4o-east", root(&sd)),
        "api_key_env = \"PALISADE_TEST_ENV_KEY\"\napi_version = \"2024-10-21\"\n",
    ) + &upstream(
        "az-v1",
        "azure",
        &format!("{}/openai/v1", root(&sv)),
        "api_key_env = \"PALISADE_TEST_ENV_KEY\"\n",
    ) + &route("gpt-4o", &["az"])
        + &route("gpt-4o-v1", &["az-v1"]);
    let gw = start(&toml, &[]).await;
    for (model, mock, path, query) in [
        (
            "gpt-4o",
            &deployment,
            "/openai/deployments/gpt-4o-east/chat/completions",
            Some("api-version=2024-10-21"),
        ),
        ("gpt-4o-v1", &v1, "/openai/v1/chat/completions", None),
    ] {
        for stream in [false, true] {
            let (res, text) = gw.call(OPENAI, &chat(model, "hello azure", stream)).await;
            assert_eq!(res.status(), 200, "{model}: {text}");
            let seen = mock.last_request().unwrap();
            assert_eq!(seen.uri.path(), path);
            assert_eq!(seen.uri.query(), query);
            assert_eq!(seen.header("api-key"), Some(key.as_str()));
            assert_eq!(seen.header("authorization"), None);
        }
        // Anthropic callers are translated to it like to any OpenAI upstream.
        let (res, text) = gw
            .call(ANTHROPIC, &anthropic(model, "hello azure", false))
            .await;
        assert_eq!(res.status(), 200, "{model}: {text}");
        assert_eq!(json(&text)["type"], "message");
    }
    // A deployment URL needs its api_version.
    let bad = upstream(
        "az",
        "azure",
        "https://res.openai.azure.invalid/openai/deployments/d",
        "",
    ) + &route("m", &["az"]);
    let err = palisade_gateway::Config::parse(&bad, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("api_version") && err.contains("deployment"),
        "{err}"
    );
    // `api_version` belongs to azure upstreams only.
    let bad = upstream(
        "o",
        "openai",
        "http://127.0.0.1:9/v1",
        "api_version = \"2024-10-21\"\n",
    ) + &route("m", &["o"]);
    let err = palisade_gateway::Config::parse(&bad, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("api_version") && err.contains("azure"),
        "{err}"
    );
}

#[tokio::test]
async fn thread_per_core_workers_share_one_breaker() {
    let mock = MockUpstream::new();
    mock.set_default(palisade_mock::Reply::status(500));
    let toml = TWO_WORKERS.to_owned()
        + &upstream(
            "m",
            "mock",
            "http://unused",
            "[upstreams.retry]\nmax_attempts = 1\n[upstreams.breaker]\nminimum_calls = 4\nwindow = 4\nfailure_rate = 0.5\nopen_for = 600000\n",
        )
        + &route("mock", &["m"]);
    let gw = per_core(&toml, &mock).await;
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(gw.chat().await.status().as_u16());
    }
    // Four failures open the one circuit of the process: a breaker per
    // worker would let each worker's connections fail four times first.
    assert_eq!(mock.request_count(), 4, "{statuses:?}");
    assert_eq!(&statuses[..4], &[500, 500, 500, 500]);
    assert!(statuses[4..].iter().all(|s| *s == 503), "{statuses:?}");
    assert!(gw.stop().await);
}

#[tokio::test]
async fn asking_again_for_a_broken_answer_stays_within_max_attempts() {
    let body = r#"{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}]}"#;
    let unavailable = Bytes::from_static(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    );
    let broken = Bytes::from(format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        body.len(),
        &body[..40]
    ));
    // A 503 (retried by the stack), a body that breaks off (asked again by
    // the gateway), then 503s for ever.
    let (url, calls) = scripted_upstream(vec![unavailable.clone(), broken, unavailable]).await;
    let extra =
        "http = \"http1\"\n[upstreams.retry]\nmax_attempts = 3\nbase_delay = 1\nmax_delay = 1\n";
    let toml = upstream("o", "openai", &url, extra) + &route("gpt", &["o"]);
    let gw = start(&toml, &[]).await;
    let (res, text) = gw.call(OPENAI, &chat("gpt", "x", false)).await;
    assert_eq!(res.status(), 503, "{text}");
    // Three calls in all: two in the first ask (the 503 retried), one left
    // for the second; before, the second ask had three of its own.
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 3);

    // A first ask that spends every attempt before its answer breaks off
    // leaves none: no second ask.
    let (url, calls) = scripted_upstream(vec![
        unavailable_again(),
        unavailable_again(),
        broken_again(body),
    ])
    .await;
    let toml = upstream("o", "openai", &url, extra) + &route("gpt", &["o"]);
    let gw = start(&toml, &[]).await;
    let (res, text) = gw.call(OPENAI, &chat("gpt", "x", false)).await;
    assert_eq!(res.status(), 502, "{text}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 3);
}

fn unavailable_again() -> Bytes {
    Bytes::from_static(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    )
}

fn broken_again(body: &str) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        body.len(),
        &body[..40]
    ))
}
