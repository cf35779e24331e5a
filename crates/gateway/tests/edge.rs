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

/// Bodies from 256 KiB on are checked and translated on the blocking pool:
/// the same answers as small ones, in both directions.
#[tokio::test]
async fn large_bodies_are_checked_and_translated_like_small_ones() {
    let a = MockUpstream::new();
    let c = MockUpstream::new();
    let (sa, sc) = (a.serve().await.unwrap(), c.serve().await.unwrap());
    let toml = upstream("o", "openai", &sa.base_url(), "")
        + &upstream("c", "anthropic", &sc.base_url(), "")
        + &route("gpt", &["o"])
        + &route("to-claude", &["c:claude-haiku"])
        + &route("claude", &["c"])
        + &route("to-gpt", &["o:gpt-x"]);
    let gw = start(&toml, &[]).await;
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
