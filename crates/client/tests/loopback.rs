//! palisade-client against palisade-mock over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Duration;

use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use palisade_client::{Auth, HttpClient, HttpVersion, KeySource};
use palisade_core::{ErrorKind, RequestBody, TransportError, TransportKind};
use palisade_mock::{MockUpstream, Reply};
use serde_json::{Value, json};
use tower::ServiceExt;

fn chat_body(text: &str, stream: bool) -> RequestBody {
    RequestBody::from(
        json!({"model": "mock", "stream": stream,
               "messages": [{"role": "user", "content": text}]})
        .to_string(),
    )
}

fn post(path: &str, body: RequestBody) -> Request<RequestBody> {
    Request::post(path).body(body).unwrap()
}

async fn client_for(base: &str) -> HttpClient {
    HttpClient::builder().base_url(base).build().unwrap()
}

#[tokio::test]
async fn json_round_trip_under_the_base_url_with_default_headers() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let client = client_for(&server.base_url()).await;
    let res = client
        .oneshot(post("/chat/completions", chat_body("hello json", false)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hello json");

    let rec = mock.last_request().unwrap();
    assert_eq!(rec.uri.path(), "/v1/chat/completions");
    assert_eq!(rec.header("content-type"), Some("application/json"));
    assert!(rec.header("user-agent").unwrap().starts_with("palisade/"));
    assert_eq!(rec.json().unwrap()["messages"][0]["content"], "hello json");
}

#[tokio::test]
async fn sse_round_trip_streams_every_token() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let client = client_for(&server.base_url()).await;
    let res = client
        .oneshot(post("/messages", chat_body("one two three four", true)))
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let mut frames = 0;
    let mut all = Vec::new();
    while let Some(f) = body.frame().await {
        all.extend_from_slice(&f.unwrap().into_data().unwrap());
        frames += 1;
    }
    assert!(frames >= 2, "the body arrived in more than one frame");
    let text = String::from_utf8(all).unwrap();
    let deltas: Vec<String> = text
        .split("\n\n")
        .filter(|e| e.starts_with("event: content_block_delta"))
        .map(|e| {
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let v: Value = serde_json::from_str(data).unwrap();
            v["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(deltas.concat(), "one two three four");
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let client = client_for(&server.base_url()).await;
    for i in 0..20 {
        let res = client
            .clone()
            .oneshot(post(
                "/chat/completions",
                chat_body(&format!("n {i}"), i % 2 == 0),
            ))
            .await
            .unwrap();
        // Reading the body to its end returns the connection to the pool.
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(mock.request_count(), 20);
    assert_eq!(mock.connection_count(), 1);
}

#[tokio::test]
async fn http2_prior_knowledge_multiplexes_on_one_connection() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let client = HttpClient::builder()
        .base_url(server.base_url())
        .http_version(HttpVersion::Http2Only)
        .build()
        .unwrap();
    let calls = (0..8).map(|i| {
        let c = client.clone();
        async move {
            let res = c
                .oneshot(post(
                    "/chat/completions",
                    chat_body(&format!("h2 {i}"), true),
                ))
                .await
                .unwrap();
            assert_eq!(res.version(), Version::HTTP_2);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert!(String::from_utf8_lossy(&body).contains("[DONE]"));
        }
    });
    futures_join_all(calls).await;
    assert_eq!(mock.connection_count(), 1);
}

/// Runs futures concurrently on the current task (no extra dependency).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

#[tokio::test]
async fn connection_refused_is_a_transport_error_naming_the_upstream() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client_for(&format!("http://{addr}/v1")).await;
    let err = client
        .oneshot(post("/chat/completions", chat_body("x", false)))
        .await
        .unwrap_err();
    assert_eq!(
        ErrorKind::of(&*err),
        Some(ErrorKind::Transport(TransportKind::ConnectRefused))
    );
    let t = err.downcast_ref::<TransportError>().unwrap();
    assert_eq!(t.kind(), TransportKind::ConnectRefused);
    let msg = err.to_string();
    assert!(
        msg.contains(&addr.to_string()) && msg.contains("refused"),
        "{msg}"
    );
}

#[tokio::test]
async fn tls_to_a_plain_http_port_is_a_tls_error() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let client = client_for(&format!("https://{}/v1", server.addr())).await;
    let err = client
        .oneshot(post("/chat/completions", chat_body("x", false)))
        .await
        .unwrap_err();
    assert_eq!(
        ErrorKind::of(&*err),
        Some(ErrorKind::Transport(TransportKind::Tls)),
        "{err:?}"
    );
}

#[tokio::test]
async fn reset_before_headers_is_a_protocol_error() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault(palisade_mock::Fault::Reset));
    let server = mock.serve().await.unwrap();
    let client = client_for(&server.base_url()).await;
    let err = client
        .oneshot(post("/chat/completions", chat_body("x", false)))
        .await
        .unwrap_err();
    assert_eq!(
        ErrorKind::of(&*err),
        Some(ErrorKind::Transport(TransportKind::Protocol)),
        "{err:?}"
    );
}

#[tokio::test]
async fn relative_uri_without_base_is_rejected_before_sending() {
    let client = HttpClient::builder().build().unwrap();
    let err = client
        .oneshot(post("/chat/completions", chat_body("x", false)))
        .await
        .unwrap_err();
    assert_eq!(ErrorKind::of(&*err), Some(ErrorKind::InvalidRequest));
    assert!(err.to_string().contains("base URL"), "{err}");
}

#[tokio::test]
async fn absolute_uris_are_sent_as_they_are() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let client = client_for("http://127.0.0.1:1/unused").await;
    let url = format!("http://{}/v1/chat/completions", server.addr());
    let res = client
        .oneshot(post(&url, chat_body("abs", false)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn key_from_env_reaches_the_upstream_as_bearer_replacing_the_callers() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let client = HttpClient::builder()
        .base_url(server.base_url())
        .auth(Auth::openai(KeySource::env("PALISADE_TEST_ENV_KEY")))
        .build()
        .expect("PALISADE_TEST_ENV_KEY is set by .cargo/config.toml");
    let mut req = post("/chat/completions", chat_body("x", false));
    req.headers_mut().insert(
        "authorization",
        "Bearer inbound-client-key".parse().unwrap(),
    );
    client.oneshot(req).await.unwrap();
    let rec = mock.last_request().unwrap();
    assert_eq!(
        rec.header("authorization"),
        Some("Bearer palisade-test-key-from-env")
    );
}

fn temp_key_file(name: &str, content: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(content.as_bytes()).unwrap();
    path
}

#[tokio::test]
async fn key_from_file_is_anthropic_style_and_rotation_is_picked_up() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let path = temp_key_file("rotating", "first-file-key\n");
    let client = HttpClient::builder()
        .base_url(server.base_url())
        .auth(Auth::anthropic(KeySource::file_refreshed_every(
            &path,
            Duration::ZERO,
        )))
        .build()
        .unwrap();
    client
        .clone()
        .oneshot(post("/messages", chat_body("x", false)))
        .await
        .unwrap();
    let rec = mock.last_request().unwrap();
    assert_eq!(rec.header("x-api-key"), Some("first-file-key"));
    assert_eq!(rec.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(rec.header("authorization"), None);

    std::fs::write(&path, "second-file-key").unwrap();
    client
        .oneshot(post("/messages", chat_body("x", false)))
        .await
        .unwrap();
    assert_eq!(
        mock.last_request().unwrap().header("x-api-key"),
        Some("second-file-key")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn keys_never_appear_in_debug_or_tracing_output() {
    let capture = palisade_core::test_util::LogCapture::new();
    let _guard = capture.set_default();

    let mock = MockUpstream::new();
    mock.push(Reply::status(401));
    let server = mock.serve().await.unwrap();
    let path = temp_key_file("traced", "traced-secret-one");
    let client = HttpClient::builder()
        .base_url(server.base_url())
        .auth(Auth::openai(KeySource::file_refreshed_every(
            &path,
            Duration::ZERO,
        )))
        .build()
        .unwrap();
    let res = client
        .clone()
        .oneshot(post("/chat/completions", chat_body("x", false)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let debug_res = format!("{res:?}");
    res.into_body().collect().await.unwrap();
    // Rotation logs a line: it must not carry either key.
    std::fs::write(&path, "traced-secret-two").unwrap();
    let req = post("/chat/completions", chat_body("x", false));
    let res = client.clone().oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();
    // An error path too.
    std::fs::write(&path, "").unwrap();
    let _ = client
        .clone()
        .oneshot(post("/chat/completions", chat_body("x", false)))
        .await;

    let logs = capture.contents();
    assert!(
        logs.contains("API key file changed"),
        "the capture works: {logs}"
    );
    let client_debug = format!("{client:?}");
    for out in [&logs, &client_debug, &debug_res] {
        assert!(!out.contains("traced-secret"), "a key leaked: {out}");
    }
    // The key did reach the upstream (so the absence above means something).
    assert_eq!(
        mock.last_request().unwrap().header("authorization"),
        Some("Bearer traced-secret-two")
    );
}

#[test]
fn build_errors_name_the_setting() {
    let err = HttpClient::builder()
        .base_url("localhost:8080")
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("base URL `localhost:8080`"),
        "{err}"
    );
    let err = HttpClient::builder()
        .default_header("bad header", "v")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("bad header"), "{err}");
    let err = HttpClient::builder()
        .auth(Auth::openai(KeySource::env(
            "PALISADE_SURELY_UNSET_KEY_VAR",
        )))
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("PALISADE_SURELY_UNSET_KEY_VAR"),
        "{err}"
    );
}

#[tokio::test]
async fn connect_timeout_is_a_connect_timeout() {
    // A listener that never accepts, with a backlog of 1: once its queue is
    // full the kernel drops further SYNs, so a connect hangs until our
    // connect timeout fires.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        // Some of these complete, the rest stay pending; either way the
        // queue ends up full.
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_millis(100), s.connect(addr)).await {
            fillers.push(c);
        }
    }
    let client = HttpClient::builder()
        .base_url(format!("http://{addr}/v1"))
        .connect_timeout(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        client.oneshot(post("/chat/completions", chat_body("x", false))),
    )
    .await
    .expect("the connect timeout fired")
    .unwrap_err();
    let kind = ErrorKind::of(&*err).unwrap();
    assert_eq!(
        kind,
        ErrorKind::Transport(TransportKind::ConnectTimeout),
        "{err:?}"
    );
    assert!(kind.is_timeout());
    drop((listener, fillers));
}

/// The key each recorded request went with.
/// A client at `base` with a pool of these literal OpenAI keys.
fn pooled(base: &str, keys: &[&'static str]) -> HttpClient {
    HttpClient::builder()
        .base_url(base)
        .key_pool(
            keys.iter()
                .map(|k| Auth::openai(KeySource::literal(*k)))
                .collect(),
        )
        .build()
        .unwrap()
}

fn keys_used(mock: &MockUpstream) -> Vec<String> {
    mock.requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or("").to_owned())
        .collect()
}

/// A key pool: calls take the keys in turn; a key answered 401 is retired
/// and never used again, a key answered 429 rests — and the refused call
/// goes again at once with another key, so the caller (and a retry layer
/// above) sees one answer, with no sleep. Keys are scrubbed, all of them.
#[tokio::test]
async fn a_key_pool_retires_refused_keys_and_switches_without_a_retry() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let pool = [
        "pool-key-aaaa-0001",
        "pool-key-bbbb-0002",
        "pool-key-cccc-0003",
    ];
    let client = HttpClient::builder()
        .base_url(server.base_url())
        .key_pool(
            pool.iter()
                .map(|k| Auth::openai(KeySource::literal(*k)))
                .collect(),
        )
        .build()
        .unwrap();
    let call = || async {
        client
            .clone()
            .oneshot(post("/chat/completions", chat_body("hi", false)))
            .await
            .unwrap()
            .status()
    };
    // Three calls, three keys in turn.
    for _ in 0..3 {
        assert_eq!(call().await, StatusCode::OK);
    }
    let mut used = keys_used(&mock);
    used.sort();
    assert_eq!(used, pool.map(|k| format!("Bearer {k}")));
    // The next key is refused (401): the call goes again with another key
    // and the caller sees 200.
    mock.push(Reply::status(401));
    let started = std::time::Instant::now();
    assert_eq!(call().await, StatusCode::OK);
    let used = keys_used(&mock);
    let retired = used[3].clone();
    assert_ne!(used[4], retired);
    // A 429 with a long hint rests its key; again one answer, no sleep.
    mock.push(Reply::status(429).header("retry-after", "600"));
    assert_eq!(call().await, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(5), "no sleep");
    let used = keys_used(&mock);
    assert_eq!(used.len(), 7);
    let resting = used[5].clone();
    // Only the one key left takes the calls from now on.
    for _ in 0..5 {
        assert_eq!(call().await, StatusCode::OK);
    }
    let used = keys_used(&mock);
    for k in &used[7..] {
        assert_ne!(*k, retired, "a retired key is never used again");
        assert_ne!(*k, resting);
    }
    // Every key of the pool is scrubbed from what the upstream sends back.
    let text = format!("{} and {}", pool[0], pool[2]);
    let scrubbed = client.redact(text.as_bytes()).unwrap();
    assert_eq!(scrubbed, b"[REDACTED] and [REDACTED]");
}

#[test]
fn a_pool_and_a_single_key_are_one_too_many() {
    let err = HttpClient::builder()
        .base_url("http://127.0.0.1:9/v1")
        .auth(Auth::openai(KeySource::literal("single-key-0001")))
        .key_pool(vec![Auth::openai(KeySource::literal("pool-key-0001"))])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("`auth` and `key_pool`"), "{err}");
}

/// A key whose answer (a 200) says its limit is spent rests until the
/// reset the provider named: the next calls take the other key.
#[tokio::test]
async fn a_pooled_key_whose_limit_is_spent_rests_until_its_reset() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let client = pooled(
        &server.base_url(),
        &["pool-key-dddd-0004", "pool-key-eeee-0005"],
    );
    mock.push(
        Reply::echo()
            .header("x-ratelimit-remaining-requests", "0")
            .header("x-ratelimit-reset-requests", "10m0s"),
    );
    for _ in 0..5 {
        let res = client
            .clone()
            .oneshot(post("/chat/completions", chat_body("hi", false)))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let used = keys_used(&mock);
    assert_eq!(
        used.len(),
        5,
        "a spent limit on a 200 is no refusal: no resend"
    );
    assert!(used[1..].iter().all(|k| *k != used[0]), "{used:?}");
}

/// A pooled key read from a file and retired (401) comes back when its file
/// holds another key (rotated), and is then used again; until then it is
/// not.
#[tokio::test]
async fn a_retired_file_key_returns_when_its_file_is_rotated() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let dir = std::env::temp_dir().join(format!("palisade-client-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("key-a"), dir.join("key-b"));
    std::fs::write(&a, "pool-file-key-aaaa-0001\n").unwrap();
    std::fs::write(&b, "pool-file-key-bbbb-0001\n").unwrap();
    let client = HttpClient::builder()
        .base_url(server.base_url())
        .key_pool(vec![
            Auth::openai(KeySource::file_refreshed_every(&a, Duration::ZERO)),
            Auth::openai(KeySource::file_refreshed_every(&b, Duration::ZERO)),
        ])
        .build()
        .unwrap();
    let call = || async {
        client
            .clone()
            .oneshot(post("/chat/completions", chat_body("hi", false)))
            .await
            .unwrap()
            .status()
    };
    // The first call's key is refused: retired, and the call goes again
    // with the other.
    mock.push(Reply::status(401));
    assert_eq!(call().await, StatusCode::OK);
    let used = keys_used(&mock);
    let retired = used[0].clone();
    let (file, rotated) = if retired.contains("aaaa") {
        (&a, "pool-file-key-aaaa-0002")
    } else {
        (&b, "pool-file-key-bbbb-0002")
    };
    for _ in 0..4 {
        assert_eq!(call().await, StatusCode::OK);
    }
    let used = keys_used(&mock);
    assert!(used[1..].iter().all(|k| *k != retired), "{used:?}");
    // Its file now holds a new key: the pool takes it again.
    std::fs::write(file, format!("{rotated}\n")).unwrap();
    for _ in 0..4 {
        assert_eq!(call().await, StatusCode::OK);
    }
    let used = keys_used(&mock);
    assert!(
        used[6..].iter().any(|k| *k == format!("Bearer {rotated}")),
        "the rotated key is used: {used:?}"
    );
    assert!(
        used[1..].iter().all(|k| *k != retired),
        "the refused key itself is never sent again: {used:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Once every key of a pool is refused (401/403), no retired key is sent
/// again: the call fails at once, saying why, and the upstream sees nothing.
#[tokio::test]
async fn a_pool_whose_keys_are_all_retired_sends_none_of_them() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let client = pooled(
        &server.base_url(),
        &["pool-key-dddd-0001", "pool-key-eeee-0002"],
    );
    mock.push(Reply::status(401));
    mock.push(Reply::status(403));
    let res = client
        .clone()
        .oneshot(post("/chat/completions", chat_body("hi", false)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(mock.request_count(), 2);
    let err = client
        .clone()
        .oneshot(post("/chat/completions", chat_body("hi", false)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("every key"), "{err}");
    assert!(
        !err.to_string().contains("pool-key"),
        "no key in the error: {err}"
    );
    assert_eq!(mock.request_count(), 2, "no retired key sent");
}

/// `key_rests`: two clients sharing one `KeyRests` (two worker threads'
/// clients of one upstream) see each other's rests; a rest learned
/// elsewhere (`KeyRests::rest`) is honoured without telling the hook,
/// while one an answer brings is told (for a fleet to share); rests of
/// the wrong size are refused.
#[tokio::test]
async fn key_rests_are_shared_by_clients_and_with_code_outside() {
    use palisade_client::KeyRests;
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let keys = ["pool-key-aaaa-0001", "pool-key-bbbb-0002"];
    let rests = KeyRests::new(2);
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let t = std::sync::Arc::clone(&told);
    rests.on_rest(move |i, wait| t.lock().unwrap().push((i, wait)));
    let client = |rests: &KeyRests| {
        HttpClient::builder()
            .base_url(server.base_url())
            .key_pool(
                keys.iter()
                    .map(|k| Auth::openai(KeySource::literal(*k)))
                    .collect(),
            )
            .key_rests(rests.clone())
            .build()
            .unwrap()
    };
    let (one, two) = (client(&rests), client(&rests));
    let call = |c: &HttpClient| {
        let c = c.clone();
        async move {
            c.oneshot(post("/chat/completions", chat_body("hi", false)))
                .await
                .unwrap()
                .status()
        }
    };
    // Client one's first key is refused for 600 s: it rests for both.
    mock.push(Reply::status(429).header("retry-after", "600"));
    assert_eq!(call(&one).await, StatusCode::OK);
    let rested = keys_used(&mock)[0].clone();
    let told_now = told.lock().unwrap().clone();
    assert_eq!(told_now.len(), 1, "{told_now:?}");
    assert_eq!(told_now[0].1, Duration::from_secs(600));
    let i = told_now[0].0;
    assert!(rests.resting_for(i).is_some());
    for _ in 0..4 {
        assert_eq!(call(&two).await, StatusCode::OK);
    }
    assert!(
        keys_used(&mock)[2..].iter().all(|k| *k != rested),
        "client two never sends the key client one saw refused"
    );
    // The other key rests too, as learned elsewhere: not told again; with
    // every key resting, the one resting the shortest goes.
    rests.rest(1 - i, Duration::from_secs(30));
    assert_eq!(told.lock().unwrap().len(), 1);
    assert_eq!(call(&two).await, StatusCode::OK);
    assert_ne!(*keys_used(&mock).last().unwrap(), rested);
    // Rests for another pool size are a build error.
    let err = HttpClient::builder()
        .base_url(server.base_url())
        .key_pool(vec![Auth::openai(KeySource::literal(keys[0]))])
        .key_rests(KeyRests::new(3))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("KeyRests::new(1)"), "{err}");
}
