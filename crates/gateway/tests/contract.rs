//! The gateway against SPEC §4, black box: the router served on loopback,
//! palisade-mock upstreams (in-process or on their own sockets), a plain
//! hyper client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use palisade_core::test_util::LogCapture;
use palisade_mock::{Fault, MockUpstream, Reply};

const OPENAI: &str = "/v1/chat/completions";
const ANTHROPIC: &str = "/v1/messages";

/// One attempt, short timeouts: failures show at once.
const ONE_SHOT: &str =
    "[upstreams.retry]\nmax_attempts = 1\n[upstreams.timeout]\nfirst_byte = 2000\nidle = 300\n";

fn mock_gateway_toml(extra_top: &str) -> String {
    format!(
        "{extra_top}\n[[upstreams]]\nname = \"m\"\nkind = \"mock\"\n{}",
        route("mock", &["m"])
    )
}

#[tokio::test]
async fn builtin_mock_answers_json_and_streams_in_both_apis() {
    let gw = start(&mock_gateway_toml(""), &[]).await;
    let (res, body) = gw
        .call(OPENAI, &chat("mock", "hello palisade gateway", false))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(
        json(&body)["choices"][0]["message"]["content"],
        "hello palisade gateway"
    );
    let overhead: f64 = res.headers()["x-palisade-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead >= 0.0);
    assert_eq!(res.headers()["x-trace-id"].len(), 32);

    let (res, body) = gw.call(OPENAI, &chat("mock", "one two three", true)).await;
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(openai_text(&body), "one two three");
    assert_eq!(data_lines(&body).last().unwrap(), "[DONE]");

    let (res, body) = gw
        .call(ANTHROPIC, &anthropic("mock", "hi there", false))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(json(&body)["content"][0]["text"], "hi there");

    let (_, body) = gw
        .call(ANTHROPIC, &anthropic("mock", "hi there", true))
        .await;
    assert!(body.contains("event: message_start"), "{body}");
    // As the real API does, message_start reports the prompt's tokens.
    let start = data_lines(&body)
        .into_iter()
        .find(|d| d.contains("\"message_start\""))
        .unwrap();
    assert!(
        json(&start)["message"]["usage"]["input_tokens"].as_u64() > Some(0),
        "{start}"
    );
    assert!(
        body.trim_end()
            .ends_with("data: {\"type\":\"message_stop\"}"),
        "{body}"
    );

    let (status, models) = gw.get("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(json(&models)["data"][0]["id"], "mock");
    let (_, metrics) = gw.get("/metrics").await;
    // Usage from the JSON answers (3 + 2 words) and the Anthropic stream's
    // message_delta (2); the OpenAI stream asked for no usage chunk.
    assert!(
        metrics.contains(r#"palisade_tokens_total{upstream="m",kind="output"} 7"#),
        "{metrics}"
    );
    let (status, health) = gw.get("/healthz").await;
    assert_eq!(
        (status, json(&health)["status"].as_str()),
        (200, Some("ok"))
    );
}

#[tokio::test]
async fn invalid_requests_are_400_with_the_pointer_and_reach_no_upstream() {
    let mock = MockUpstream::new();
    let gw = start(&mock_gateway_toml(""), &[("m", &mock)]).await;
    let cases = [
        (r#"{"model":"mock"}"#, "/messages"),
        (
            r#"{"model":null,"messages":[{"role":"user","content":"x"}]}"#,
            "/model",
        ),
        (
            r#"{"model":"mock","messages":[{"role":7,"content":"x"}]}"#,
            "/messages/0/role",
        ),
        (
            r#"{"model":"mock","temperature":"3","messages":[{"role":"user","content":"x"}]}"#,
            "/temperature",
        ),
        (
            r#"{"model":"mock","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{}}]}"#,
            "/tools/0/function/name",
        ),
    ];
    for (body, pointer) in cases {
        let (res, text) = gw.call(OPENAI, body).await;
        assert_eq!(res.status(), 400, "{body} → {text}");
        let v = json(&text);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], pointer, "{text}");
        assert!(v["error"]["message"].as_str().unwrap().contains(pointer));
    }
    let (res, text) = gw.call(OPENAI, "{not json").await;
    assert_eq!(res.status(), 400);
    assert!(text.contains("not valid JSON"), "{text}");
    // Anthropic callers get Anthropic's error format.
    let (res, text) = gw
        .call(
            ANTHROPIC,
            r#"{"model":"mock","messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(json(&text)["type"], "error");
    assert!(text.contains("/max_tokens"), "{text}");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn unknown_model_is_404_and_oversized_body_413() {
    let mock = MockUpstream::new();
    let gw = start(&mock_gateway_toml("max_body_bytes = 200"), &[("m", &mock)]).await;
    let (res, text) = gw.call(OPENAI, &chat("gpt-9", "x", false)).await;
    assert_eq!(res.status(), 404);
    assert!(text.contains("gpt-9") && text.contains("mock"), "{text}");
    let (res, text) = gw
        .call(OPENAI, &chat("mock", &"word ".repeat(100), false))
        .await;
    assert_eq!(res.status(), 413, "{text}");
    assert!(text.contains("max_body_bytes"), "{text}");
    let (res, _) = gw
        .call(ANTHROPIC, &anthropic("mock", &"word ".repeat(100), false))
        .await;
    assert_eq!(res.status(), 413);
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn inbound_keys_are_required_when_auth_is_set() {
    let gw = start(
        &mock_gateway_toml("[auth]\nkeys_env = \"PALISADE_TEST_GATEWAY_KEYS\""),
        &[],
    )
    .await;
    let body = chat("mock", "hi", false);
    let res = gw.post(OPENAI, &body, &[]).await;
    assert_eq!(res.status(), 401);
    let said = text(res).await;
    assert!(said.contains("send `Authorization: Bearer KEY`"), "{said}");
    let res = gw
        .post(OPENAI, &body, &[("authorization", "Bearer wrong")])
        .await;
    assert_eq!(res.status(), 401);
    // An Anthropic caller is told its own header first.
    let res = gw
        .post(ANTHROPIC, &anthropic("mock", "hi", false), &[])
        .await;
    assert_eq!(res.status(), 401);
    let said = text(res).await;
    assert!(said.contains("send `x-api-key: KEY`"), "{said}");
    let res = gw
        .post(
            OPENAI,
            &body,
            &[("authorization", "Bearer inbound-test-key-2")],
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = gw
        .post(
            ANTHROPIC,
            &anthropic("mock", "hi", false),
            &[("x-api-key", "inbound-test-key-1")],
        )
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn an_http2_upstream_carries_concurrent_streams_on_one_connection() {
    // `http = "http2"`: h2c with prior knowledge to a cleartext upstream.
    // Over HTTP/1.1 the four overlapping streams would need four
    // connections.
    let mock = MockUpstream::new();
    mock.set_default(Reply::echo().delay_per_token(Duration::from_millis(20)));
    let server = mock.serve().await.unwrap();
    let toml =
        upstream("a", "openai", &server.base_url(), "http = \"http2\"") + &route("gpt", &["a"]);
    let gw = start(&toml, &[]).await;
    let ask = |text: &'static str| {
        let gw = &gw;
        async move { gw.call(OPENAI, &chat("gpt", text, true)).await }
    };
    let (a, b, c, d) = tokio::join!(
        ask("one stream here"),
        ask("two streams here"),
        ask("three streams here"),
        ask("four streams here"),
    );
    for ((res, body), text) in [a, b, c, d].into_iter().zip([
        "one stream here",
        "two streams here",
        "three streams here",
        "four streams here",
    ]) {
        assert_eq!(res.status(), 200, "{body}");
        assert_eq!(openai_text(&body), text);
    }
    let (res, body) = gw.call(OPENAI, &chat("gpt", "and json", false)).await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(mock.request_count(), 5);
    assert_eq!(mock.connection_count(), 1, "one HTTP/2 connection");
}

#[tokio::test]
async fn retry_waits_for_retry_after_then_succeeds() {
    let mock = MockUpstream::new();
    mock.push(Reply::status(429).header("retry-after-ms", "300"));
    let server = mock.serve().await.unwrap();
    let toml = upstream("a", "openai", &server.base_url(), "") + &route("gpt", &["a"]);
    let gw = start(&toml, &[]).await;
    let t = Instant::now();
    let (res, body) = gw.call(OPENAI, &chat("gpt", "after a wait", false)).await;
    assert_eq!(res.status(), 200, "{body}");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(mock.request_count(), 2);
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(r#"palisade_retries_total{upstream="a",reason="rate_limited"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_error_is_relayed_at_once_without_retry_or_fallback() {
    let a = MockUpstream::new();
    a.set_default(Reply::status(400));
    let b = MockUpstream::new();
    let (sa, sb) = (a.serve().await.unwrap(), b.serve().await.unwrap());
    let toml = upstream("a", "openai", &sa.base_url(), "")
        + &upstream("b", "openai", &sb.base_url(), "")
        + &route("gpt", &["a", "b"]);
    let gw = start(&toml, &[]).await;
    let (res, body) = gw.call(OPENAI, &chat("gpt", "x", false)).await;
    assert_eq!(res.status(), 400, "{body}");
    assert!(json(&body)["error"].is_object(), "{body}");
    assert_eq!((a.request_count(), b.request_count()), (1, 0));
}

#[tokio::test]
async fn fallback_goes_to_the_next_target_after_retries() {
    let a = MockUpstream::new();
    a.set_default(Reply::status(503));
    let b = MockUpstream::new();
    let (sa, sb) = (a.serve().await.unwrap(), b.serve().await.unwrap());
    let retry = "[upstreams.retry]\nmax_attempts = 2\nbase_delay = 1\nmax_delay = 2\n";
    let toml = upstream("a", "openai", &sa.base_url(), retry)
        + &upstream("b", "openai", &sb.base_url(), "")
        + &route("gpt", &["a", "b"]);
    let gw = start(&toml, &[]).await;
    let (res, body) = gw
        .call(OPENAI, &chat("gpt", "from the backup", false))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(
        json(&body)["choices"][0]["message"]["content"],
        "from the backup"
    );
    assert_eq!((a.request_count(), b.request_count()), (2, 1));
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(r#"palisade_requests_total{route="gpt",upstream="b",status="200"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn fallback_across_providers_translates_request_answer_and_stream() {
    let a = MockUpstream::new();
    a.set_default(Reply::status(529));
    let b = MockUpstream::new();
    let (sa, sb) = (a.serve().await.unwrap(), b.serve().await.unwrap());
    let toml = upstream("a", "openai", &sa.base_url(), ONE_SHOT)
        + &upstream("claude", "anthropic", &sb.base_url(), "")
        + &route("gpt", &["a", "claude:claude-haiku"]);
    let gw = start(&toml, &[]).await;
    let (res, body) = gw
        .call(OPENAI, &chat("gpt", "translated both ways", false))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    let v = json(&body);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "translated both ways"
    );
    let sent = b.last_request().unwrap();
    assert!(sent.uri.path().ends_with("/messages"), "{}", sent.uri);
    let sent = sent.json().unwrap();
    assert_eq!(sent["model"], "claude-haiku");
    assert!(sent["max_tokens"].as_u64().is_some(), "{sent}");

    let (_, body) = gw.call(OPENAI, &chat("gpt", "streamed across", true)).await;
    assert_eq!(openai_text(&body), "streamed across");
    assert_eq!(data_lines(&body).last().unwrap(), "[DONE]");
    // The tokens are counted across the translation: 3 words in the JSON
    // answer, 2 in the stream's `message_delta`.
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(r#"palisade_tokens_total{upstream="claude",kind="output"} 5"#),
        "{metrics}"
    );
}

/// What a translation leaves out is reported, not dropped silently: an
/// OpenAI request with `response_format` and `seed` answered by an
/// Anthropic upstream names both in `x-palisade-untranslated`; a request
/// that needed no translation carries no such header.
#[tokio::test]
async fn fields_a_translation_leaves_out_are_named_to_the_caller() {
    let b = MockUpstream::new();
    let sb = b.serve().await.unwrap();
    let toml = upstream("claude", "anthropic", &sb.base_url(), "")
        + &route("gpt", &["claude:claude-haiku"]);
    let gw = start(&toml, &[]).await;
    let body = r#"{"model":"gpt","seed":7,"response_format":{"type":"json_object"},"parallel_tool_calls":false,"messages":[{"role":"user","content":"hi"}]}"#;
    let (res, text) = gw.call(OPENAI, body).await;
    assert_eq!(res.status(), 200, "{text}");
    let named = res.headers()["x-palisade-untranslated"].to_str().unwrap();
    assert!(
        named.contains("response_format") && named.contains("seed"),
        "{named}"
    );
    assert!(
        !named.contains("parallel_tool_calls"),
        "carried, not left out: {named}"
    );
    let sent = b.last_request().unwrap().json().unwrap();
    assert!(
        sent.get("seed").is_none() && sent.get("response_format").is_none(),
        "{sent}"
    );

    let (res, _) = gw
        .call(ANTHROPIC, &anthropic("gpt", "same API", false))
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-palisade-untranslated").is_none());
}

#[tokio::test]
async fn breaker_opens_refuses_without_calling_then_closes() {
    let mock = MockUpstream::new();
    mock.set_default(Reply::status(500));
    let server = mock.serve().await.unwrap();
    let extra = format!(
        "{ONE_SHOT}[upstreams.breaker]\nminimum_calls = 2\nwindow = 2\nfailure_rate = 0.5\nopen_for = 200\nhalf_open_calls = 1\n"
    );
    let toml = upstream("a", "openai", &server.base_url(), &extra) + &route("gpt", &["a"]);
    let gw = start(&toml, &[]).await;
    for _ in 0..2 {
        let (res, _) = gw.call(OPENAI, &chat("gpt", "x", false)).await;
        assert_eq!(res.status(), 500);
    }
    let (res, body) = gw.call(OPENAI, &chat("gpt", "x", false)).await;
    assert_eq!(res.status(), 503, "{body}");
    assert!(res.headers().contains_key("retry-after"));
    assert!(body.contains("`a`") && body.contains("circuit"), "{body}");
    assert_eq!(mock.request_count(), 2, "an open circuit calls nobody");
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(r#"palisade_breaker_state{upstream="a"} 1"#),
        "{metrics}"
    );

    mock.set_default(Reply::echo());
    // Let the open time pass (this waits for a deadline, it synchronises nothing).
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (res, _) = gw.call(OPENAI, &chat("gpt", "x", false)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(mock.request_count(), 3);
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(r#"palisade_breaker_state{upstream="a"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_gateways_own_rate_limit_answers_429_with_retry_after() {
    let mock = MockUpstream::new();
    let toml = format!(
        "[[upstreams]]\nname = \"m\"\nkind = \"mock\"\n[upstreams.rate_limit]\nrequests_per_minute = 1\nmax_wait = 0\n{}",
        route("mock", &["m"])
    );
    let gw = start(&toml, &[("m", &mock)]).await;
    let (res, _) = gw.call(OPENAI, &chat("mock", "x", false)).await;
    assert_eq!(res.status(), 200);
    let (res, body) = gw.call(OPENAI, &chat("mock", "x", false)).await;
    assert_eq!(res.status(), 429, "{body}");
    let secs: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((50..=60).contains(&secs), "{secs}");
    assert_eq!(mock.request_count(), 1);
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(r#"palisade_ratelimit_rejected_total{upstream="m"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_last_upstream_429_is_relayed_with_its_retry_after() {
    let mock = MockUpstream::new();
    mock.set_default(Reply::status(429).header("retry-after", "7"));
    let server = mock.serve().await.unwrap();
    let toml = upstream("a", "openai", &server.base_url(), ONE_SHOT) + &route("gpt", &["a"]);
    let gw = start(&toml, &[]).await;
    let (res, body) = gw.call(OPENAI, &chat("gpt", "x", false)).await;
    assert_eq!(res.status(), 429, "{body}");
    assert_eq!(res.headers()["retry-after"], "7");
    // An Anthropic caller gets it in Anthropic's format.
    let (res, body) = gw.call(ANTHROPIC, &anthropic("gpt", "x", false)).await;
    assert_eq!(res.status(), 429);
    assert_eq!(json(&body)["type"], "error", "{body}");
}

#[tokio::test]
async fn transport_failure_is_502_and_timeout_504_naming_the_upstream() {
    // A port nobody listens on: bind, note it, close.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let slow = MockUpstream::new();
    slow.set_default(Reply::echo().delay_before_headers(Duration::from_secs(30)));
    let server = slow.serve().await.unwrap();
    let toml = upstream("gone", "openai", &format!("http://{closed}/v1"), ONE_SHOT)
        + &upstream(
            "slow",
            "openai",
            &server.base_url(),
            "[upstreams.retry]\nmax_attempts = 1\n[upstreams.timeout]\nfirst_byte = 100\n",
        )
        + &route("a", &["gone"])
        + &route("b", &["slow"]);
    let gw = start(&toml, &[]).await;
    let (res, body) = gw.call(OPENAI, &chat("a", "x", false)).await;
    assert_eq!(res.status(), 502, "{body}");
    assert!(body.contains("`gone`"), "{body}");
    let (res, body) = gw.call(OPENAI, &chat("b", "x", false)).await;
    assert_eq!(res.status(), 504, "{body}");
    assert!(
        body.contains("`slow`") && body.contains("first-byte"),
        "{body}"
    );
}

async fn stream_with_fault(fault: Fault, toml_extra: &str) -> String {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(2, fault));
    let server = mock.serve().await.unwrap();
    let extra = format!("{ONE_SHOT}{toml_extra}");
    let toml = upstream("a", "openai", &server.base_url(), &extra) + &route("gpt", &["a"]);
    let gw = start(&toml, &[]).await;
    let (res, body) = gw
        .call(OPENAI, &chat("gpt", "alpha beta gamma delta", true))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(
        mock.request_count(),
        1,
        "nothing is replayed after the first byte"
    );
    body
}

fn assert_ends_with_error(body: &str, needle: &str) {
    let data = data_lines(body);
    let last = data.last().unwrap();
    assert!(last.starts_with("{\"error\""), "{body}");
    assert!(last.contains(needle), "{last}");
    assert!(!data.iter().any(|d| d == "[DONE]"), "{body}");
    // The tokens before the failure went through once, in order.
    assert_eq!(openai_text(body), "alpha beta");
}

#[tokio::test]
async fn a_reset_mid_stream_ends_with_an_error_event() {
    let body = stream_with_fault(Fault::Reset, "").await;
    assert_ends_with_error(&body, "`a`");
}

#[tokio::test]
async fn a_stall_mid_stream_ends_with_a_timeout_error_event() {
    let body = stream_with_fault(Fault::Stall, "").await;
    assert_ends_with_error(&body, "timed out");
}

#[tokio::test]
async fn heartbeats_alone_do_not_keep_a_stream_alive() {
    let body = stream_with_fault(Fault::Heartbeats(Duration::from_millis(50)), "").await;
    assert_ends_with_error(&body, "timed out");
}

#[tokio::test]
async fn a_truncated_stream_ends_with_an_error_event() {
    let body = stream_with_fault(Fault::Truncate, "").await;
    assert_ends_with_error(&body, "truncated");
}

#[tokio::test]
async fn an_inband_error_is_relayed_and_ends_the_stream() {
    let body = stream_with_fault(Fault::InbandError, "").await;
    let data = data_lines(&body);
    assert!(data.last().unwrap().starts_with("{\"error\""), "{body}");
    assert!(!data.iter().any(|d| d == "[DONE]"));
}

#[tokio::test]
async fn an_anthropic_caller_gets_an_anthropic_error_event() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(2, Fault::Reset));
    let server = mock.serve().await.unwrap();
    let toml = upstream("a", "anthropic", &server.base_url(), ONE_SHOT) + &route("claude", &["a"]);
    let gw = start(&toml, &[]).await;
    let (_, body) = gw
        .call(ANTHROPIC, &anthropic("claude", "alpha beta gamma", true))
        .await;
    assert!(body.contains("event: error\ndata: {"), "{body}");
    assert!(!body.contains("message_stop"), "{body}");
}

#[tokio::test]
async fn two_hundred_concurrent_streams_keep_their_exact_tokens() {
    let gw = std::sync::Arc::new(start(&mock_gateway_toml(""), &[]).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let gw = gw.clone();
        tasks.spawn(async move {
            let text = format!("stream {i} says {} and {}", i * 7, i * 13);
            let (res, body) = gw.call(OPENAI, &chat("mock", &text, true)).await;
            assert_eq!(res.status(), 200);
            assert_eq!(openai_text(&body), text);
            assert_eq!(data_lines(&body).last().unwrap(), "[DONE]");
        });
    }
    let mut done = 0;
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
        done += 1;
    }
    assert_eq!(done, 200);
}

#[tokio::test]
async fn keys_are_never_forwarded_logged_or_relayed() {
    let logs = LogCapture::new();
    let _guard = logs.set_default();
    let key = std::env::var("PALISADE_TEST_ENV_KEY").unwrap();
    let mock = MockUpstream::new();
    let quoted = format!(
        r#"{{"error":{{"message":"Incorrect API key provided: {key}","type":"invalid_request_error"}}}}"#
    );
    mock.push(Reply::status(401).body(quoted));
    mock.push(Reply::status(503).body(format!("overloaded; your key {key} is fine")));
    let server = mock.serve().await.unwrap();
    let extra = format!("api_key_env = \"PALISADE_TEST_ENV_KEY\"\n{ONE_SHOT}");
    let toml = upstream("a", "openai", &server.base_url(), &extra) + &route("gpt", &["a"]);
    let gw = start(&toml, &[]).await;
    let headers = [("authorization", "Bearer caller-secret-token")];
    let res = gw.post(OPENAI, &chat("gpt", "x", false), &headers).await;
    assert_eq!(res.status(), 401);
    let body = text(res).await;
    assert!(!body.contains(&key), "{body}");
    assert!(body.contains("[REDACTED]"), "{body}");
    let res = gw.post(OPENAI, &chat("gpt", "x", false), &headers).await;
    let body = text(res).await;
    assert!(!body.contains(&key), "{body}");

    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );
    assert!(
        mock.requests()
            .iter()
            .all(|r| !format!("{:?}", r.headers).contains("caller-secret-token"))
    );
    let (_, metrics) = gw.get("/metrics").await;
    let logs = logs.contents();
    assert!(
        logs.contains("upstream"),
        "the failures were logged: {logs}"
    );
    for (what, text) in [("metrics", &metrics), ("logs", &logs)] {
        assert!(!text.contains(&key), "{what} leak the key");
        assert!(
            !text.contains("caller-secret-token"),
            "{what} leak the caller's key"
        );
    }
}

/// The time to first token is taken at the first event that carries
/// content, not at OpenAI's role-only first chunk; a stream with no content
/// records none.
#[tokio::test]
async fn time_to_first_token_waits_for_content() {
    let mock = MockUpstream::new();
    let gw = start(&mock_gateway_toml(""), &[("m", &mock)]).await;
    let ttft = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("palisade_time_to_first_token_seconds_count "))
            .map(str::to_owned)
    };
    mock.push(Reply::words(0));
    let (res, body) = gw.call(OPENAI, &chat("mock", "x", true)).await;
    assert_eq!(res.status(), 200, "{body}");
    assert!(body.contains("[DONE]"), "{body}");
    assert!(!body.contains("word"), "no content: {body}");
    let (_, metrics) = gw.get("/metrics").await;
    assert_eq!(ttft(&metrics).as_deref(), Some("0"), "{metrics}");
    let (res, body) = gw.call(OPENAI, &chat("mock", "some text", true)).await;
    assert_eq!(res.status(), 200, "{body}");
    let (_, metrics) = gw.get("/metrics").await;
    assert_eq!(ttft(&metrics).as_deref(), Some("1"), "{metrics}");
}

#[tokio::test]
async fn trace_ids_go_upstream_and_come_back() {
    let logs = LogCapture::new();
    let _guard = logs.set_default();
    let mock = MockUpstream::new();
    let toml = mock_gateway_toml("");
    let gw = start(&toml, &[("m", &mock)]).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let res = gw
        .post(OPENAI, &chat("mock", "x", false), &[("traceparent", tp)])
        .await;
    assert_eq!(
        res.headers()["x-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent.header("x-trace-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let up_tp = sent.header("traceparent").unwrap();
    assert!(
        up_tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{up_tp}"
    );

    let res = gw
        .post(
            OPENAI,
            r#"{"model":"mock"}"#,
            &[("x-trace-id", "my-trace-7")],
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["x-trace-id"], "my-trace-7");
    let logs = logs.contents();
    let line = logs
        .lines()
        .find(|l| l.contains("invalid request"))
        .expect(&logs);
    assert!(line.contains("my-trace-7"), "{line}");
}

#[tokio::test]
async fn two_gateways_share_one_requests_per_minute_limit_in_redis() {
    let redis = palisade_core::test_util::RedisServer::start();
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let toml = format!(
        "{}[redis]\nurl = \"{}\"\n",
        upstream(
            "shared",
            "openai",
            &server.base_url(),
            "[upstreams.rate_limit]\nrequests_per_minute = 3\n"
        ) + &route("gpt", &["shared"]),
        redis.url()
    );
    let (a, b) = (start(&toml, &[]).await, start(&toml, &[]).await);
    let mut statuses = Vec::new();
    for i in 0..6 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let (res, _) = gw.call(OPENAI, &chat("gpt", "x", false)).await;
        statuses.push(res.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockUpstream::new();
    let gw = start(&mock_gateway_toml("max_body_bytes = 1000"), &[("m", &mock)]).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Headers only: the 10 MB body never comes.
    tcp.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(mock.request_count(), 0);
}

/// Six streams reserving ~1,300 tokens each and using a few: with every
/// reservation settled at the stream's terminator, a 3,000 tokens-per-minute
/// limit admits them all — passed through and translated, both APIs.
#[tokio::test]
async fn streamed_answers_settle_their_token_reservations() {
    let tpm = "[upstreams.rate_limit]\ntokens_per_minute = 3000\nmax_wait = 0\n";
    let openai_up = MockUpstream::new();
    let anthropic_up = MockUpstream::new();
    let (so, sa) = (
        openai_up.serve().await.unwrap(),
        anthropic_up.serve().await.unwrap(),
    );
    let cases = [
        // (caller path, upstream config, label)
        (
            OPENAI,
            format!("[[upstreams]]\nname = \"u\"\nkind = \"mock\"\n{tpm}"),
            "openai passthrough",
        ),
        (
            ANTHROPIC,
            format!("[[upstreams]]\nname = \"u\"\nkind = \"mock\"\n{tpm}"),
            "anthropic passthrough",
        ),
        (
            OPENAI,
            upstream("u", "anthropic", &sa.base_url(), tpm),
            "openai caller, anthropic upstream",
        ),
        (
            ANTHROPIC,
            upstream("u", "openai", &so.base_url(), tpm),
            "anthropic caller, openai upstream",
        ),
    ];
    for (path, up, label) in cases {
        let gw = start(&(up + &route("m", &["u"])), &[]).await;
        for i in 0..6 {
            let body = serde_json::json!({
                "model": "m", "max_tokens": 1300, "stream": true,
                "messages": [{"role": "user", "content": "settle me"}],
            })
            .to_string();
            let (res, text) = gw.call(path, &body).await;
            assert_eq!(res.status(), 200, "{label}, stream {i}: {text}");
            assert!(
                text.contains("[DONE]") || text.contains("message_stop"),
                "{label}: {text}"
            );
        }
    }
}

/// Every answer carries `x-trace-id` and `x-palisade-overhead-ms`, and every
/// error a provider-style JSON body.
#[tokio::test]
async fn every_answer_has_the_trace_and_overhead_headers_and_errors_a_json_body() {
    let gw = start(&mock_gateway_toml(""), &[]).await;
    let client = client();
    let cases: [(&str, &str, Option<&str>, u16); 7] = [
        ("GET", "/healthz", None, 200),
        ("GET", "/v1/models", None, 200),
        ("GET", "/metrics", None, 200),
        ("GET", "/nowhere", None, 404),
        ("GET", "/v1/chat/completions", None, 405),
        ("DELETE", "/v1/messages", None, 405),
        ("POST", "/v1/chat/completions", Some("{}"), 400),
    ];
    for (method, path, body, want) in cases {
        let req = http::Request::builder()
            .method(method)
            .uri(gw.url(path))
            .header("content-type", "application/json")
            .header("x-trace-id", "trace-every-answer")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.unwrap_or("").to_owned(),
            )))
            .unwrap();
        let res = client.request(req).await.unwrap();
        let label = format!("{method} {path}");
        assert_eq!(res.status().as_u16(), want, "{label}");
        assert_eq!(res.headers()["x-trace-id"], "trace-every-answer", "{label}");
        let overhead: f64 = res.headers()["x-palisade-overhead-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(overhead >= 0.0, "{label}");
        if want >= 400 {
            let text = text(res).await;
            let v = json(&text);
            let message = if path.ends_with("/messages") {
                assert_eq!(v["type"], "error", "{label}: {text}");
                v["error"]["message"].as_str()
            } else {
                v["error"]["message"].as_str()
            };
            assert!(message.is_some_and(|m| !m.is_empty()), "{label}: {text}");
        }
    }
    // Without an incoming id, one is generated: the same for the headers
    // and the upstream call.
    let (res, _) = gw.call(OPENAI, &chat("mock", "x", false)).await;
    assert_eq!(res.headers()["x-trace-id"].len(), 32);
}

#[tokio::test]
async fn an_anthropic_base_url_with_or_without_v1_reaches_v1_messages() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let with_v1 = server.base_url();
    let sdk_style = with_v1.trim_end_matches("/v1").to_owned() + "/";
    for base in [with_v1.as_str(), sdk_style.as_str()] {
        let toml = upstream("claude", "anthropic", base, ONE_SHOT) + &route("c", &["claude"]);
        let gw = start(&toml, &[]).await;
        let (res, body) = gw.call(ANTHROPIC, &anthropic("c", "hello", false)).await;
        assert_eq!(res.status(), 200, "{base}: {body}");
        assert_eq!(
            mock.last_request().unwrap().uri.path(),
            "/v1/messages",
            "{base}"
        );
    }
}

#[tokio::test]
async fn a_retried_error_says_x_should_retry_false_and_rate_limit_headers_are_relayed() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let toml = upstream(
        "a",
        "openai",
        &server.base_url(),
        "[upstreams.retry]\nmax_attempts = 2\nbase_delay = 1\nmax_delay = 5\n",
    ) + &route("gpt", &["a"]);
    let gw = start(&toml, &[]).await;

    // Two 500s: the gateway retried; the SDK should not.
    mock.push_all([
        Reply::status(500).header("x-ratelimit-remaining-requests", "98"),
        Reply::status(500).header("x-ratelimit-remaining-requests", "97"),
    ]);
    let (res, body) = gw.call(OPENAI, &chat("gpt", "x", false)).await;
    assert_eq!(res.status(), 500, "{body}");
    assert_eq!(res.headers()["x-should-retry"], "false");
    // The answering (latest) upstream's rate-limit state.
    assert_eq!(res.headers()["x-ratelimit-remaining-requests"], "97");
    assert_eq!(mock.request_count(), 2);

    // A 400 is the caller's to fix: no retry happened, no header.
    mock.push(Reply::status(400));
    let (res, _) = gw.call(OPENAI, &chat("gpt", "x", false)).await;
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("x-should-retry").is_none());

    // A success relays the rate-limit headers too (both providers' names).
    mock.push(
        Reply::echo()
            .header("x-ratelimit-limit-tokens", "30000")
            .header("anthropic-ratelimit-requests-remaining", "49"),
    );
    let (res, body) = gw.call(OPENAI, &chat("gpt", "fine", false)).await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(res.headers()["x-ratelimit-limit-tokens"], "30000");
    assert_eq!(
        res.headers()["anthropic-ratelimit-requests-remaining"],
        "49"
    );
    assert!(res.headers().get("x-should-retry").is_none());
}

/// A streamed answer keeps the upstream's request id and rate-limit state,
/// as a JSON answer does.
#[tokio::test]
async fn a_stream_keeps_the_upstreams_request_id_and_rate_limit_headers() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let toml = upstream("a", "openai", &server.base_url(), ONE_SHOT) + &route("gpt", &["a"]);
    let gw = start(&toml, &[]).await;
    mock.push(Reply::echo().header("x-ratelimit-remaining-tokens", "123"));
    let (res, body) = gw.call(OPENAI, &chat("gpt", "streamed", true)).await;
    assert_eq!(res.status(), 200, "{body}");
    assert!(body.contains("[DONE]"), "{body}");
    assert_eq!(res.headers()["x-ratelimit-remaining-tokens"], "123");
    assert!(
        res.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_mock_"),
        "{:?}",
        res.headers()
    );
}

#[tokio::test]
async fn the_gateways_own_429_leaves_the_retry_to_the_caller() {
    let toml = format!(
        "[[upstreams]]\nname = \"m\"\nkind = \"mock\"\n[upstreams.rate_limit]\nrequests_per_minute = 1\nmax_wait = 0\n{}",
        route("mock", &["m"])
    );
    let gw = start(&toml, &[]).await;
    let (res, _) = gw.call(OPENAI, &chat("mock", "x", false)).await;
    assert_eq!(res.status(), 200);
    let (res, _) = gw.call(OPENAI, &chat("mock", "x", false)).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert!(res.headers().get("x-should-retry").is_none());
}

/// Redis down mid-traffic: with `fail_open` (the default) the calls go on
/// without the shared limits, each failure logged and counted in
/// `palisade_redis_errors_total`; restarted empty, Redis takes the limits
/// back and refuses nobody on its own. With `fail_open = false` a call
/// while it is down gets a 503 naming Redis.
#[tokio::test]
async fn redis_down_and_restarted_mid_traffic_fails_open_or_closed_and_is_counted() {
    let mut redis = palisade_core::test_util::RedisServer::start();
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let toml = |fail_open: bool| {
        format!(
            "{}[redis]\nurl = \"{}\"\nfail_open = {fail_open}\n",
            upstream(
                "shared",
                "openai",
                &server.base_url(),
                "[upstreams.rate_limit]\nrequests_per_minute = 1000\ntokens_per_minute = 100000\n"
            ) + &route("gpt", &["shared"]),
            redis.url()
        )
    };
    let (open, closed) = (
        start(&toml(true), &[]).await,
        start(&toml(false), &[]).await,
    );
    for gw in [&open, &closed] {
        let (res, text) = gw.call(OPENAI, &chat("gpt", "up", false)).await;
        assert_eq!(res.status(), 200, "{text}");
    }
    redis.stop();
    let t = Instant::now();
    let (res, text) = open.call(OPENAI, &chat("gpt", "down", false)).await;
    assert_eq!(res.status(), 200, "fail open: {text}");
    let (res, text) = closed.call(OPENAI, &chat("gpt", "down", false)).await;
    assert_eq!(res.status(), 503, "{text}");
    assert!(text.contains("Redis"), "{text}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "bounded: {:?}",
        t.elapsed()
    );
    let (_, metrics) = open.get("/metrics").await;
    assert!(
        metrics.contains(r#"palisade_redis_errors_total{upstream="shared"}"#),
        "{metrics}"
    );
    // Restarted, empty: both admit calls again (a lost connection is made
    // anew on a later call).
    redis.restart();
    for gw in [&open, &closed] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (res, _) = gw.call(OPENAI, &chat("gpt", "back", false)).await;
            if res.status() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "Redis taken back within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `[redis] share_breaker = true`: a circuit opened by one gateway's calls
/// opens in the other, which then refuses calls without sending them.
#[tokio::test]
async fn a_circuit_opened_in_one_gateway_opens_in_the_other() {
    let redis = palisade_core::test_util::RedisServer::start();
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let toml = format!(
        "{}[redis]\nurl = \"{}\"\nshare_breaker = true\n",
        upstream(
            "shared",
            "openai",
            &server.base_url(),
            "[upstreams.retry]\nmax_attempts = 1\n[upstreams.breaker]\nminimum_calls = 2\nwindow = 2\nopen_for = 60000\n"
        ) + &route("gpt", &["shared"]),
        redis.url()
    );
    let (a, b) = (start(&toml, &[]).await, start(&toml, &[]).await);
    // B's first call starts its reading of Redis.
    let (res, text) = b.call(OPENAI, &chat("gpt", "up", false)).await;
    assert_eq!(res.status(), 200, "{text}");
    // A's calls fail: its circuit opens.
    mock.set_default(Reply::status(503));
    for _ in 0..2 {
        let (res, _) = a.call(OPENAI, &chat("gpt", "down", false)).await;
        assert_eq!(res.status(), 503);
    }
    assert_eq!(mock.request_count(), 3);
    // Within a poll, B's circuit is open too …
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = b.get("/metrics").await;
        if metrics.contains(r#"palisade_breaker_state{upstream="shared"} 1"#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B's circuit opened within 10 s: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // … and B sends nothing while it is.
    let (res, text) = b.call(OPENAI, &chat("gpt", "again", false)).await;
    assert_eq!(res.status(), 503, "{text}");
    assert!(text.contains("circuit"), "{text}");
    assert_eq!(mock.request_count(), 3, "B called nobody");
}

/// `[[auth.keys]]`: each caller has limits of its own. Tenant A, over its
/// requests per minute, gets a 429 naming itself and the limit with
/// `Retry-After`, before any upstream call; tenant B is not touched. A's
/// tokens per minute are reserved from the estimate and settled with the
/// answer's usage, so calls far under `max_tokens` leave room for more.
/// Counted per caller by name, never by key.
#[tokio::test]
async fn callers_have_limits_of_their_own_and_one_cannot_starve_another() {
    let mock = MockUpstream::new();
    let auth = "[auth]\n\
        [[auth.keys]]\nname = \"team-a\"\nkey_env = \"PALISADE_TEST_TENANT_A_KEY\"\nrequests_per_minute = 5\ntokens_per_minute = 1000\n\
        [[auth.keys]]\nname = \"team-b\"\nkey_env = \"PALISADE_TEST_TENANT_B_KEY\"\n";
    let gw = start(&mock_gateway_toml(auth), &[("m", &mock)]).await;
    let a = [("authorization", "Bearer tenant-a-test-key")];
    let b = [("authorization", "Bearer tenant-b-test-key")];
    // 300 output tokens each: about 310 reserved of A's 1,000 — five would
    // not fit unreserved, but the mock's usage (a few tokens) gives the
    // rest back as each answer ends.
    let body = r#"{"model":"mock","max_tokens":300,"messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..5 {
        let res = gw.post(OPENAI, body, &a).await;
        assert_eq!(res.status(), 200);
        text(res).await;
    }
    let res = gw.post(OPENAI, body, &a).await;
    assert_eq!(res.status(), 429);
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let said = text(res).await;
    assert!(
        said.contains("caller `team-a`") && said.contains("requests_per_minute"),
        "{said}"
    );
    assert!(!said.contains("tenant-a-test-key"), "never the key: {said}");
    assert_eq!(mock.request_count(), 5, "refused before any upstream call");
    // B has no limits of its own: A's do not touch it.
    for _ in 0..5 {
        let res = gw.post(OPENAI, body, &b).await;
        assert_eq!(res.status(), 200);
        text(res).await;
    }
    let (_, metrics) = gw.get("/metrics").await;
    for line in [
        r#"palisade_caller_requests_total{caller="team-a"} 6"#,
        r#"palisade_caller_limited_total{caller="team-a",limit="requests_per_minute"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(!metrics.contains("tenant-a-test-key"));
}

/// A key group: a caller whose `key_env` holds two comma-separated keys
/// has one set of limits, whichever key each call presents.
#[tokio::test]
async fn a_key_group_shares_its_callers_limits() {
    let mock = MockUpstream::new();
    let auth = "[auth]\n[[auth.keys]]\nname = \"group\"\nkey_env = \"PALISADE_TEST_GROUP_KEYS\"\nrequests_per_minute = 2\n";
    let gw = start(&mock_gateway_toml(auth), &[("m", &mock)]).await;
    let body = r#"{"model":"mock","messages":[{"role":"user","content":"hi"}]}"#;
    for key in ["group-test-key-1", "group-test-key-2"] {
        let res = gw
            .post(OPENAI, body, &[("authorization", &format!("Bearer {key}"))])
            .await;
        assert_eq!(res.status(), 200);
        text(res).await;
    }
    for key in ["group-test-key-1", "group-test-key-2"] {
        let res = gw
            .post(OPENAI, body, &[("authorization", &format!("Bearer {key}"))])
            .await;
        assert_eq!(res.status(), 429);
        let said = text(res).await;
        assert!(said.contains("caller `group`"), "{said}");
    }
    assert_eq!(mock.request_count(), 2);
}

/// A caller's tokens per minute, and its tokens per day: a request whose
/// estimate does not fit in what is left is refused naming the limit,
/// with `Retry-After`; one over the whole limit is told so.
#[tokio::test]
async fn a_callers_tokens_per_minute_and_per_day_refuse_what_does_not_fit() {
    for limit in ["tokens_per_minute", "tokens_per_day"] {
        let mock = MockUpstream::new();
        mock.set_default(Reply::echo().delay_per_token(Duration::from_secs(3600)));
        let auth = format!(
            "[auth]\n[[auth.keys]]\nname = \"team-a\"\nkey_env = \"PALISADE_TEST_TENANT_A_KEY\"\n{limit} = 1000\n"
        );
        let gw = start(&mock_gateway_toml(&auth), &[("m", &mock)]).await;
        let a = [("authorization", "Bearer tenant-a-test-key")];
        // A stream held open keeps its ~610-token reservation.
        let held = gw
            .post(
                OPENAI,
                r#"{"model":"mock","max_tokens":600,"stream":true,"messages":[{"role":"user","content":"hold"}]}"#,
                &a,
            )
            .await;
        assert_eq!(held.status(), 200);
        let res = gw
            .post(
                OPENAI,
                r#"{"model":"mock","max_tokens":600,"messages":[{"role":"user","content":"more"}]}"#,
                &a,
            )
            .await;
        assert_eq!(res.status(), 429);
        assert!(res.headers().contains_key("retry-after"), "{limit}");
        let said = text(res).await;
        assert!(said.contains(&format!("{limit} (1000)")), "{said}");
        let res = gw
            .post(
                OPENAI,
                r#"{"model":"mock","max_tokens":5000,"messages":[{"role":"user","content":"too much"}]}"#,
                &a,
            )
            .await;
        assert_eq!(res.status(), 429);
        let said = text(res).await;
        assert!(said.contains("this request alone is over it"), "{said}");
        assert_eq!(mock.request_count(), 1, "{limit}");
        drop(held);
    }
}

/// With `[redis]`, a caller's own limits hold across gateways: two
/// gateways admit team-a's three requests a minute once between them.
#[tokio::test]
async fn a_callers_limits_hold_across_gateways_sharing_redis() {
    let redis = palisade_core::test_util::RedisServer::start();
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let toml = format!(
        "[auth]\n[[auth.keys]]\nname = \"team-a\"\nkey_env = \"PALISADE_TEST_TENANT_A_KEY\"\nrequests_per_minute = 3\ntokens_per_minute = 1000\n{}[redis]\nurl = \"{}\"\n",
        upstream("shared", "openai", &server.base_url(), "") + &route("gpt", &["shared"]),
        redis.url()
    );
    let (a, b) = (start(&toml, &[]).await, start(&toml, &[]).await);
    let key = [("authorization", "Bearer tenant-a-test-key")];
    let mut statuses = Vec::new();
    for i in 0..6 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let res = gw.post(OPENAI, &chat("gpt", "x", false), &key).await;
        statuses.push(res.status().as_u16());
        text(res).await;
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    assert_eq!(mock.request_count(), 3);
}
