//! palisade-mock: wire formats, scripts and faults, in-process and on a socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use palisade_mock::{Fault, MockBody, MockUpstream, Reply};
use serde_json::{Value, json};
use tower::ServiceExt;

fn chat(path: &str, body: Value) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn openai(text: &str, stream: bool) -> Request<Full<Bytes>> {
    chat(
        "/v1/chat/completions",
        json!({"model": "mock", "stream": stream, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": text}]}),
    )
}

fn anthropic(text: &str, stream: bool) -> Request<Full<Bytes>> {
    chat(
        "/v1/messages",
        json!({"model": "mock", "stream": stream, "max_tokens": 100,
               "messages": [{"role": "user", "content": text}]}),
    )
}

/// Splits an SSE body into (event, data) pairs; enough for well-formed output.
fn events(body: &[u8]) -> Vec<(Option<String>, String)> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                } else if line.starts_with(':') {
                    data.push_str(line);
                }
            }
            (event, data)
        })
        .collect()
}

fn openai_text(evs: &[(Option<String>, String)]) -> String {
    evs.iter()
        .filter(|(_, d)| d.starts_with('{'))
        .filter_map(|(_, d)| {
            let v: Value = serde_json::from_str(d).unwrap();
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

/// Reads frames until the body ends or errors; returns data and the error.
async fn drain(mut body: MockBody) -> (Vec<u8>, Option<std::io::Error>) {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => out.extend_from_slice(&f.into_data().unwrap()),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

#[tokio::test]
async fn openai_stream_has_role_tokens_finish_usage_and_done() {
    let mock = MockUpstream::new();
    let res = mock
        .clone()
        .oneshot(openai("the quick brown fox", true))
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert!(res.headers().contains_key("x-request-id"));
    let (body, err) = drain(res.into_body()).await;
    assert!(err.is_none());
    let evs = events(&body);
    assert_eq!(openai_text(&evs), "the quick brown fox");
    let first: Value = serde_json::from_str(&evs[0].1).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let n = evs.len();
    assert_eq!(evs[n - 1].1, "[DONE]");
    let usage: Value = serde_json::from_str(&evs[n - 2].1).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    assert_eq!(usage["usage"]["prompt_tokens"], 4);
    let finish: Value = serde_json::from_str(&evs[n - 3].1).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn anthropic_stream_follows_the_documented_event_order() {
    let mock = MockUpstream::new();
    let res = mock.oneshot(anthropic("hello there", true)).await.unwrap();
    assert!(res.headers().contains_key("request-id"));
    let (body, _) = drain(res.into_body()).await;
    let names: Vec<_> = events(&body).into_iter().map(|(e, _)| e.unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let evs = events(&body);
    let delta: Value = serde_json::from_str(&evs[4].1).unwrap();
    assert_eq!(delta["delta"]["text"], " there");
    let md: Value = serde_json::from_str(&evs[6].1).unwrap();
    assert_eq!(md["usage"]["output_tokens"], 2);
    // Cumulative usage, input included, as the API sends it now: what
    // LangChain's ChatAnthropic reads its token counts from.
    let start: Value = serde_json::from_str(&evs[0].1).unwrap();
    assert!(md["usage"]["input_tokens"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(
        md["usage"]["input_tokens"],
        start["message"]["usage"]["input_tokens"]
    );
    assert_eq!(md["delta"]["stop_reason"], "end_turn");
}

#[tokio::test]
async fn json_replies_in_both_dialects_and_max_tokens_truncates() {
    let mock = MockUpstream::new();
    let res = mock
        .clone()
        .oneshot(anthropic("one two three", false))
        .await
        .unwrap();
    let v: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["content"][0]["text"], "one two three");
    assert_eq!(v["usage"]["output_tokens"], 3);

    let req = chat(
        "/v1/chat/completions",
        json!({"model": "gpt-x", "max_completion_tokens": 2,
               "messages": [{"role": "user", "content": "one two three"}]}),
    );
    let res = mock.oneshot(req).await.unwrap();
    let v: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "one two");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["model"], "gpt-x");
}

#[tokio::test]
async fn scripted_status_uses_the_provider_error_format_and_headers() {
    let mock = MockUpstream::new();
    mock.push(Reply::status(429).header("retry-after", "2"));
    mock.push(Reply::status(529));
    let res = mock.clone().oneshot(openai("hi", false)).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "2");
    let v: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");

    let res = mock.clone().oneshot(anthropic("hi", false)).await.unwrap();
    assert_eq!(res.status().as_u16(), 529);
    let v: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error");

    // The queue is used up: back to the echo.
    assert_eq!(mock.pending_replies(), 0);
    let res = mock.clone().oneshot(openai("hi", false)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test]
async fn bad_requests_and_unknown_routes() {
    let mock = MockUpstream::new();
    let res = mock
        .clone()
        .oneshot(
            Request::post("/v1/chat/completions")
                .body(Full::new(Bytes::from_static(b"{not json")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = mock
        .clone()
        .oneshot(
            Request::get("/v1/nope")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = mock
        .clone()
        .oneshot(
            Request::get("/v1/models")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let big = vec![b' '; palisade_mock::MAX_REQUEST_BYTES + 1];
    let res = mock
        .clone()
        .oneshot(
            Request::post("/v1/messages")
                .body(Full::new(Bytes::from(big)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Every request was recorded, even the bad ones.
    assert_eq!(mock.request_count(), 4);
    assert_eq!(mock.requests()[0].body, Bytes::from_static(b"{not json"));
}

#[tokio::test]
async fn reset_mid_stream_errors_the_body_after_the_scripted_tokens() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(2, Fault::Reset));
    let res = mock.oneshot(openai("a b c d e", true)).await.unwrap();
    let (body, err) = drain(res.into_body()).await;
    assert_eq!(
        err.expect("a reset").kind(),
        std::io::ErrorKind::ConnectionReset
    );
    assert_eq!(openai_text(&events(&body)), "a b");
}

#[tokio::test]
async fn reset_before_headers_fails_the_call() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault(Fault::Reset));
    let err = mock.oneshot(openai("a", false)).await.unwrap_err();
    assert!(err.to_string().contains("reset"), "{err}");
}

#[tokio::test]
async fn truncate_inband_and_malformed_faults() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(1, Fault::Truncate));
    mock.push(Reply::echo().fault_after(1, Fault::InbandError));
    mock.push(Reply::echo().fault_after(1, Fault::MalformedJson));
    mock.push(Reply::echo().fault_after(1, Fault::MalformedSse));

    let (body, err) = drain(
        mock.clone()
            .oneshot(openai("a b c", true))
            .await
            .unwrap()
            .into_body(),
    )
    .await;
    assert!(err.is_none());
    assert!(
        !String::from_utf8_lossy(&body).contains("[DONE]"),
        "truncated"
    );

    let (body, _) = drain(
        mock.clone()
            .oneshot(anthropic("a b c", true))
            .await
            .unwrap()
            .into_body(),
    )
    .await;
    let evs = events(&body);
    let last = evs.last().unwrap();
    assert_eq!(last.0.as_deref(), Some("error"));
    assert!(last.1.contains("overloaded_error"));

    let (body, _) = drain(
        mock.clone()
            .oneshot(openai("a b c", true))
            .await
            .unwrap()
            .into_body(),
    )
    .await;
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("[DONE]"),
        "the stream goes on after the bad event"
    );
    let bad = events(&body)
        .into_iter()
        .filter(|(_, d)| d.starts_with('{'))
        .filter(|(_, d)| serde_json::from_str::<Value>(d).is_err())
        .count();
    assert_eq!(bad, 1);

    let (body, _) = drain(
        mock.clone()
            .oneshot(openai("a b c", true))
            .await
            .unwrap()
            .into_body(),
    )
    .await;
    assert!(
        std::str::from_utf8(&body).is_err(),
        "invalid UTF-8 was sent"
    );
}

#[tokio::test]
async fn json_reply_faults_mid_body() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(1, Fault::Reset));
    mock.push(Reply::echo().fault(Fault::MalformedJson));
    let res = mock.clone().oneshot(openai("a b c", false)).await.unwrap();
    let full_len = res.body().size_hint().exact();
    assert!(full_len.is_none());
    let declared: usize = res.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (body, err) = drain(res.into_body()).await;
    assert!(err.is_some());
    assert_eq!(body.len(), declared / 2);

    let res = mock.oneshot(openai("a b c", false)).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(serde_json::from_slice::<Value>(&body).is_err());
}

#[tokio::test(start_paused = true)]
async fn delays_follow_paused_time() {
    let mock = MockUpstream::new();
    mock.push(
        Reply::echo()
            .delay_before_headers(Duration::from_secs(3))
            .delay_per_token(Duration::from_secs(1)),
    );
    let start = tokio::time::Instant::now();
    let res = mock.oneshot(openai("a b c", true)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    let (body, _) = drain(res.into_body()).await;
    assert_eq!(openai_text(&events(&body)), "a b c");
    assert_eq!(start.elapsed(), Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn stall_never_ends_and_heartbeats_carry_no_data() {
    let mock = MockUpstream::new();
    mock.push(Reply::echo().fault_after(1, Fault::Stall));
    mock.push(Reply::echo().fault_after(1, Fault::Heartbeats(Duration::from_secs(5))));

    let mut body = mock
        .clone()
        .oneshot(openai("a b", true))
        .await
        .unwrap()
        .into_body();
    body.frame().await.unwrap().unwrap(); // role chunk
    body.frame().await.unwrap().unwrap(); // "a"
    let stalled = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await;
    assert!(stalled.is_err(), "a stalled body never yields");

    let mut body = mock
        .oneshot(anthropic("a b", true))
        .await
        .unwrap()
        .into_body();
    body.frame().await.unwrap().unwrap(); // preamble
    body.frame().await.unwrap().unwrap(); // "a"
    let start = tokio::time::Instant::now();
    for _ in 0..3 {
        let f = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&f[..], b"event: ping\ndata: {\"type\": \"ping\"}\n\n");
    }
    assert_eq!(start.elapsed(), Duration::from_secs(15));
}

#[tokio::test]
async fn generated_streams_are_lazy_and_oversized_events_are_chunked() {
    let mock = MockUpstream::new();
    mock.push(Reply::words(200_000));
    mock.push(Reply::echo().fault_after(1, Fault::OversizedEvent(100_000)));
    let mut body = mock
        .clone()
        .oneshot(openai("x", true))
        .await
        .unwrap()
        .into_body();
    let mut frames = 0usize;
    let mut largest = 0usize;
    let mut total = 0usize;
    while let Some(f) = body.frame().await {
        let d = f.unwrap().into_data().unwrap();
        largest = largest.max(d.len());
        total += d.len();
        frames += 1;
    }
    assert_eq!(
        frames,
        200_000 + 2,
        "one frame per token, plus preamble and closing"
    );
    assert!(
        largest < 1024,
        "no frame holds more than one event ({largest} bytes)"
    );
    assert!(total > 200_000 * 100);

    let res = mock.oneshot(openai("a b", true)).await.unwrap();
    let mut body = res.into_body();
    let mut largest = 0;
    let mut all = Vec::new();
    while let Some(f) = body.frame().await {
        let d = f.unwrap().into_data().unwrap();
        largest = largest.max(d.len());
        all.extend_from_slice(&d);
    }
    assert!(largest <= 8192);
    let line = all.split(|b| *b == b'\n').map(<[u8]>::len).max().unwrap();
    assert_eq!(line, 100_000 + "data: ".len());
}

mod socket {
    use super::*;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    #[tokio::test]
    async fn served_over_http1_reuses_connections_and_records_them() {
        let mock = MockUpstream::new();
        let server = mock.serve().await.unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        for _ in 0..5 {
            let mut req = openai("hello socket", false);
            *req.uri_mut() = format!("{}/chat/completions", server.base_url())
                .parse()
                .unwrap();
            let res = client.request(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["choices"][0]["message"]["content"], "hello socket");
        }
        assert_eq!(mock.connection_count(), 1);
        let recs = mock.requests();
        assert_eq!(recs.len(), 5);
        assert!(recs.iter().all(|r| r.connection == Some(1)));
        assert_eq!(recs[0].header("content-type"), Some("application/json"));
    }

    #[tokio::test]
    async fn reset_after_first_byte_breaks_the_connection() {
        let mock = MockUpstream::new();
        mock.push(Reply::echo().fault_after(2, Fault::Reset));
        let server = mock.serve().await.unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut req = openai("a b c d", true);
        *req.uri_mut() = format!("{}/chat/completions", server.base_url())
            .parse()
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let mut body = res.into_body();
        let mut got = Vec::new();
        let err = loop {
            match body.frame().await {
                Some(Ok(f)) => got.extend_from_slice(&f.into_data().unwrap()),
                Some(Err(e)) => break e,
                None => panic!("the body ended cleanly; expected a broken connection"),
            }
        };
        assert_eq!(
            palisade_core::ErrorKind::of(&err),
            Some(palisade_core::ErrorKind::Transport(
                palisade_core::TransportKind::Protocol
            )),
            "{err:?}"
        );
        assert_eq!(
            openai_text(&events(&got)),
            "a b",
            "the tokens before the reset arrived"
        );
    }

    #[tokio::test]
    async fn h2c_prior_knowledge_streams() {
        let mock = MockUpstream::new();
        let server = mock.serve().await.unwrap();
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<Full<Bytes>>();
        let mut req = anthropic("over h2", true);
        *req.uri_mut() = format!("{}/messages", server.base_url()).parse().unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("message_stop"));
    }

    #[tokio::test]
    async fn dropping_the_server_closes_its_connections() {
        let mock = MockUpstream::new();
        mock.push(Reply::echo().fault_after(1, Fault::Stall));
        let server = mock.serve().await.unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut req = openai("a b", true);
        *req.uri_mut() = format!("{}/chat/completions", server.base_url())
            .parse()
            .unwrap();
        let res = client.request(req).await.unwrap();
        let mut body = res.into_body();
        body.frame().await.unwrap().unwrap();
        drop(server);
        // The stalled stream ends (with an error) instead of hanging forever.
        let rest = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match body.frame().await {
                    Some(Ok(_)) => continue,
                    other => return other.map(|r| r.is_err()),
                }
            }
        })
        .await
        .expect("the connection closed");
        assert_ne!(rest, Some(false));
    }
}

#[tokio::test]
async fn responses_answers_json_and_numbered_streams() {
    let mock = MockUpstream::new();
    let req = |stream: bool| {
        chat(
            "/v1/responses",
            json!({"model": "mock", "stream": stream, "instructions": "be brief",
                   "input": [{"role": "user", "content": [{"type": "input_text", "text": "hello big world"}]}]}),
        )
    };
    let res = mock.clone().oneshot(req(false)).await.unwrap();
    assert!(res.headers().contains_key("x-request-id"));
    let (body, _) = drain(res.into_body()).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["text"], "hello big world");
    assert_eq!(v["usage"]["input_tokens"], 5);
    assert_eq!(v["usage"]["output_tokens"], 3);

    let res = mock.clone().oneshot(req(true)).await.unwrap();
    let (body, err) = drain(res.into_body()).await;
    assert!(err.is_none());
    let evs = events(&body);
    let mut text = String::new();
    for (i, (event, data)) in evs.iter().enumerate() {
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["sequence_number"], i, "{data}");
        assert_eq!(v["type"].as_str(), event.as_deref());
        if event.as_deref() == Some("response.output_text.delta") {
            text.push_str(v["delta"].as_str().unwrap());
        }
    }
    assert_eq!(text, "hello big world");
    assert_eq!(evs[0].0.as_deref(), Some("response.created"));
    let (last, data) = evs.last().unwrap();
    assert_eq!(last.as_deref(), Some("response.completed"));
    let done: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        done["response"]["output"][0]["content"][0]["text"],
        "hello big world"
    );
    assert_eq!(done["response"]["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn embeddings_in_floats_base64_and_from_token_arrays() {
    use base64::Engine as _;
    let mock = MockUpstream::new();
    let ask = |body: Value| mock.clone().oneshot(chat("/v1/embeddings", body));
    let res = ask(json!({"model": "mock", "input": ["one two", "three"], "dimensions": 4}))
        .await
        .unwrap();
    let (body, _) = drain(res.into_body()).await;
    let floats: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(floats["data"].as_array().unwrap().len(), 2);
    assert_eq!(floats["data"][1]["index"], 1);
    assert_eq!(floats["data"][0]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(floats["usage"]["prompt_tokens"], 3);
    let res = ask(
        json!({"model": "mock", "input": "one two", "dimensions": 4, "encoding_format": "base64"}),
    )
    .await
    .unwrap();
    let (body, _) = drain(res.into_body()).await;
    let b64: Value = serde_json::from_slice(&body).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f64> = bytes
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
        .collect();
    let same: Vec<f64> = floats["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(
        decoded, same,
        "the same text, the same vector, in either encoding"
    );
    let res = ask(json!({"model": "mock", "input": [[1, 2, 3], [4]]}))
        .await
        .unwrap();
    let (body, _) = drain(res.into_body()).await;
    let tokens: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tokens["usage"]["prompt_tokens"], 4);
    let res = ask(json!({"model": "mock"})).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_required_tool_choice_is_answered_with_a_call_in_every_api() {
    let mock = MockUpstream::new();
    let params = json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}});
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "mock", "messages": [{"role": "user", "content": "Oslo"}],
                   "tools": [{"type": "function", "function": {"name": "weather", "parameters": params}}],
                   "tool_choice": "required"}),
        ),
        (
            "/v1/messages",
            json!({"model": "mock", "max_tokens": 9, "messages": [{"role": "user", "content": "Oslo"}],
                   "tools": [{"name": "weather", "input_schema": params}], "tool_choice": {"type": "any"}}),
        ),
        (
            "/v1/responses",
            json!({"model": "mock", "input": "Oslo",
                   "tools": [{"type": "function", "name": "weather", "parameters": params}],
                   "tool_choice": {"type": "function", "name": "weather"}}),
        ),
    ];
    for (path, body) in cases {
        let res = mock
            .clone()
            .oneshot(chat(path, body.clone()))
            .await
            .unwrap();
        let (bytes, _) = drain(res.into_body()).await;
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let (name, args) = match path {
            "/v1/chat/completions" => {
                let c = &v["choices"][0]["message"]["tool_calls"][0]["function"];
                (
                    c["name"].clone(),
                    serde_json::from_str(c["arguments"].as_str().unwrap()).unwrap(),
                )
            }
            "/v1/messages" => (
                v["content"][0]["name"].clone(),
                v["content"][0]["input"].clone(),
            ),
            _ => (
                v["output"][0]["name"].clone(),
                serde_json::from_str(v["output"][0]["arguments"].as_str().unwrap()).unwrap(),
            ),
        };
        assert_eq!(name, "weather", "{path}: {v}");
        assert_eq!(args, json!({"city": "Oslo", "days": 1}), "{path}");
        // Streamed: the arguments arrive whole in one delta.
        let mut streamed = body;
        streamed["stream"] = json!(true);
        let res = mock.clone().oneshot(chat(path, streamed)).await.unwrap();
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let (bytes, _) = drain(res.into_body()).await;
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains(r#"{\"city\":\"Oslo\",\"days\":1}"#),
            "{path}: {text}"
        );
    }
}
