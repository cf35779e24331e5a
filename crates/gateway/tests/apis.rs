//! The Responses API and embeddings through the gateway, over loopback:
//! passthrough, translation to an Anthropic target and back (JSON and
//! streams), fallback, what needs stored state, faults after the first
//! byte, and embeddings' same-model rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use palisade_mock::{Fault, MockUpstream, Reply};
use serde_json::{Value, json};

const RESPONSES: &str = "/v1/responses";
const EMBEDDINGS: &str = "/v1/embeddings";
const ONE_SHOT: &str =
    "[upstreams.retry]\nmax_attempts = 1\n[upstreams.timeout]\nfirst_byte = 2000\nidle = 300\n";

fn ask(model: &str, text: &str, stream: bool) -> String {
    json!({
        "model": model,
        "stream": stream,
        "instructions": "Answer briefly.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}],
        "max_output_tokens": 64,
    })
    .to_string()
}

/// The `(event, data)` pairs of an SSE text.
fn events(sse: &str) -> Vec<(String, Value)> {
    sse.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (event, serde_json::from_str(&data).unwrap_or(Value::Null))
        })
        .collect()
}

/// A Responses stream's events are numbered from 0 without a gap, each
/// one's `type` its `event:`; returns the text of its deltas.
fn numbered_text(evs: &[(String, Value)]) -> String {
    let mut text = String::new();
    for (i, (event, data)) in evs.iter().enumerate() {
        assert_eq!(data["sequence_number"], i, "{event}: {data}");
        assert_eq!(data["type"].as_str(), Some(event.as_str()), "{data}");
        if event == "response.output_text.delta" {
            text.push_str(data["delta"].as_str().unwrap());
        }
    }
    text
}

fn mock_route() -> String {
    "[[upstreams]]\nname = \"m\"\nkind = \"mock\"\n".to_owned() + &route("mock", &["m"])
}

#[tokio::test]
async fn responses_and_embeddings_are_served_by_the_built_in_mock() {
    let mock = MockUpstream::new();
    let gw = start(&mock_route(), &[("m", &mock)]).await;
    let (res, body) = gw.call(RESPONSES, &ask("mock", "hello there", false)).await;
    assert_eq!(res.status(), 200, "{body}");
    let v = json(&body);
    assert_eq!(v["object"], "response");
    assert_eq!(v["output"][0]["content"][0]["text"], "hello there");
    assert!(
        mock.last_request()
            .unwrap()
            .uri
            .path()
            .ends_with("/responses")
    );

    let (res, body) = gw
        .call(RESPONSES, &ask("mock", "streamed words", true))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let evs = events(&body);
    assert_eq!(numbered_text(&evs), "streamed words");
    assert_eq!(evs.last().unwrap().0, "response.completed");

    let (res, body) = gw
        .call(
            EMBEDDINGS,
            &json!({"model": "mock", "input": ["a b", "c"], "dimensions": 3}).to_string(),
        )
        .await;
    assert_eq!(res.status(), 200, "{body}");
    let v = json(&body);
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 3);
    assert!(
        mock.last_request()
            .unwrap()
            .uri
            .path()
            .ends_with("/embeddings")
    );

    // Each API's usage is read as that API's (the stack is told per call):
    // 3 Responses calls' and the embeddings' input tokens all counted.
    let (_, metrics) = gw.get("/metrics").await;
    let input = metrics
        .lines()
        .find(|l| l.starts_with("palisade_tokens_total{upstream=\"m\",kind=\"input\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    // ask(): "Answer briefly." (2) + the text (2), twice; embeddings 3.
    assert!(input.ends_with(" 11"), "{input}");

    // The schemas: certain failures refused before any call.
    let before = mock.request_count();
    let (res, body) = gw.call(RESPONSES, r#"{"model":"mock","input":7}"#).await;
    assert_eq!(res.status(), 400, "{body}");
    let (res, body) = gw.call(EMBEDDINGS, r#"{"model":"mock"}"#).await;
    assert_eq!(res.status(), 400, "{body}");
    assert!(body.contains("input"), "{body}");
    assert_eq!(mock.request_count(), before);
}

/// The mock servers behind a gateway: they serve while this lives.
type Served = (palisade_mock::MockServer, palisade_mock::MockServer);

/// An OpenAI target failing (503), an Anthropic one behind it.
async fn openai_then_anthropic() -> (TestGateway, MockUpstream, MockUpstream, Served) {
    let (o, c) = (MockUpstream::new(), MockUpstream::new());
    o.set_default(Reply::status(503));
    let (so, sc) = (o.serve().await.unwrap(), c.serve().await.unwrap());
    let toml = upstream("o", "openai", &so.base_url(), ONE_SHOT)
        + &upstream("c", "anthropic", &sc.base_url(), ONE_SHOT)
        + &route("gpt", &["o", "c:claude-x"])
        + &route("claude", &["c"]);
    (start(&toml, &[]).await, o, c, (so, sc))
}

#[tokio::test]
async fn a_stateless_responses_call_falls_back_to_anthropic_json_and_stream() {
    let (gw, o, c, _served) = openai_then_anthropic().await;
    let (res, body) = gw
        .call(RESPONSES, &ask("gpt", "across providers", false))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    let v = json(&body);
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["text"], "across providers");
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(o.request_count(), 1);
    let sent = c.last_request().unwrap();
    assert!(sent.uri.path().ends_with("/messages"), "{}", sent.uri);
    let sent = sent.json().unwrap();
    assert_eq!(sent["model"], "claude-x");
    assert_eq!(sent["system"], "Answer briefly.");
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(
        sent["messages"][0]["content"][0]["text"],
        "across providers"
    );

    let (res, body) = gw
        .call(RESPONSES, &ask("gpt", "streamed across", true))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    let evs = events(&body);
    assert_eq!(numbered_text(&evs), "streamed across");
    let (last, done) = evs.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(
        done["response"]["output"][0]["content"][0]["text"],
        "streamed across"
    );
    assert!(done["response"]["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // Fields with no counterpart are named.
    let mut with_text = json(&ask("claude", "x", false));
    with_text["text"] = json!({"format": {"type": "text"}});
    let (res, body) = gw.call(RESPONSES, &with_text.to_string()).await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(res.headers()["x-palisade-untranslated"], "text");
}

#[tokio::test]
async fn a_function_call_round_trip_is_translated_for_an_anthropic_target() {
    let (gw, _o, c, _served) = openai_then_anthropic().await;
    c.push(Reply::status(200).body(
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
               "content": [{"type": "text", "text": "Looking."},
                           {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}],
               "stop_reason": "tool_use", "stop_sequence": null,
               "usage": {"input_tokens": 20, "output_tokens": 9}})
        .to_string(),
    ));
    let first = json!({
        "model": "claude",
        "input": "Weather in Oslo?",
        "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
    });
    let (res, body) = gw.call(RESPONSES, &first.to_string()).await;
    assert_eq!(res.status(), 200, "{body}");
    let v = json(&body);
    let call = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap();
    assert_eq!(call["call_id"], "toolu_1");
    assert_eq!(call["name"], "weather");
    assert_eq!(
        json(call["arguments"].as_str().unwrap()),
        json!({"city": "Oslo"})
    );
    let sent = c.last_request().unwrap().json().unwrap();
    assert_eq!(sent["tools"][0]["name"], "weather");
    assert_eq!(
        sent["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );

    // The caller sends the call and its output back, as the SDK does.
    let mut second = first.clone();
    second["input"] = json!([
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "function_call", "call_id": "toolu_1", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
        {"type": "function_call_output", "call_id": "toolu_1", "output": "Sunny, 21 °C"},
    ]);
    let (res, body) = gw.call(RESPONSES, &second.to_string()).await;
    assert_eq!(res.status(), 200, "{body}");
    let sent = c.last_request().unwrap().json().unwrap();
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{sent}");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"][0]["type"], "tool_use");
    assert_eq!(msgs[1]["content"][0]["id"], "toolu_1");
    assert_eq!(msgs[1]["content"][0]["input"], json!({"city": "Oslo"}));
    assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
    assert_eq!(msgs[2]["content"][0]["tool_use_id"], "toolu_1");
}

#[tokio::test]
async fn requests_needing_stored_state_go_only_to_responses_targets() {
    let (gw, o, c, _served) = openai_then_anthropic().await;
    o.set_default(Reply::echo());
    let chained =
        json!({"model": "claude", "input": "and then?", "previous_response_id": "resp_1"});
    let (res, body) = gw.call(RESPONSES, &chained.to_string()).await;
    assert_eq!(res.status(), 400, "{body}");
    assert!(body.contains("previous_response_id"), "{body}");
    assert_eq!(c.request_count(), 0);
    // With an OpenAI target on the route, it goes there (and only there).
    let mut to_gpt = chained.clone();
    to_gpt["model"] = json!("gpt");
    let (res, body) = gw.call(RESPONSES, &to_gpt.to_string()).await;
    assert_eq!(res.status(), 200, "{body}");
    let sent = o.last_request().unwrap().json().unwrap();
    assert_eq!(sent["previous_response_id"], "resp_1");
    assert_eq!(c.request_count(), 0);
    // An explicit `store: true` (the answer to be read later) is such a
    // request: refused where only translation could serve it, and never
    // falling back to a target that would not store it.
    let stored = json!({"model": "claude", "input": "keep this", "store": true});
    let (res, body) = gw.call(RESPONSES, &stored.to_string()).await;
    assert_eq!(res.status(), 400, "{body}");
    assert!(body.contains("`store: true`"), "{body}");
    let mut to_gpt = stored.clone();
    to_gpt["model"] = json!("gpt");
    o.push(Reply::status(503));
    let (res, body) = gw.call(RESPONSES, &to_gpt.to_string()).await;
    assert_eq!(res.status(), 503, "{body}");
    assert_eq!(c.request_count(), 0);
    // Without it, the same call falls back to Anthropic.
    to_gpt["store"] = json!(false);
    o.push(Reply::status(503));
    let (res, body) = gw.call(RESPONSES, &to_gpt.to_string()).await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(c.request_count(), 1);
}

#[tokio::test]
async fn a_responses_stream_failing_after_its_first_byte_ends_with_response_failed_and_error() {
    let mock = MockUpstream::new();
    let gw = start(&(mock_route()), &[("m", &mock)]).await;
    // Passed through as it came, then cut.
    mock.push(Reply::echo().fault_after(2, Fault::Reset));
    let (res, body) = gw
        .call(RESPONSES, &ask("mock", "one two three four", true))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    let evs = events(&body);
    numbered_text(&evs);
    let n = evs.len();
    assert_eq!(evs[n - 2].0, "response.failed", "{body}");
    assert_eq!(evs[n - 2].1["response"]["status"], "failed");
    assert_eq!(evs[n - 2].1["response"]["id"], evs[0].1["response"]["id"]);
    assert_eq!(evs[n - 1].0, "error");
    assert!(
        evs[n - 1].1["message"]
            .as_str()
            .unwrap()
            .contains("after the first byte"),
        "{body}"
    );
}

#[tokio::test]
async fn a_translated_responses_stream_failing_continues_its_numbering() {
    let (gw, _o, c, _served) = openai_then_anthropic().await;
    c.push(Reply::echo().fault_after(1, Fault::Truncate));
    let (res, body) = gw
        .call(RESPONSES, &ask("claude", "one two three", true))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    let evs = events(&body);
    assert_eq!(numbered_text(&evs), "one");
    let n = evs.len();
    assert_eq!(evs[n - 2].0, "response.failed", "{body}");
    assert_eq!(evs[n - 1].0, "error");
    assert!(
        evs[n - 1].1["message"]
            .as_str()
            .unwrap()
            .contains("truncated"),
        "{body}"
    );
}

#[tokio::test]
async fn embeddings_fall_back_only_to_the_same_model_and_never_to_anthropic() {
    let (a, b, c) = (
        MockUpstream::new(),
        MockUpstream::new(),
        MockUpstream::new(),
    );
    a.set_default(Reply::status(503));
    let (sa, sb, sc) = (
        a.serve().await.unwrap(),
        b.serve().await.unwrap(),
        c.serve().await.unwrap(),
    );
    let toml = upstream("a", "openai", &sa.base_url(), ONE_SHOT)
        + &upstream("b", "openai", &sb.base_url(), ONE_SHOT)
        + &upstream("c", "anthropic", &sc.base_url(), ONE_SHOT)
        + &route(
            "embed",
            &[
                "a:text-embedding-3-small",
                "b:text-embedding-3-large",
                "b:text-embedding-3-small",
            ],
        )
        + &route("claude", &["c"]);
    let gw = start(&toml, &[]).await;
    let body =
        json!({"model": "embed", "input": [[1, 2, 3]], "encoding_format": "base64"}).to_string();
    let (res, text) = gw.call(EMBEDDINGS, &body).await;
    assert_eq!(res.status(), 200, "{text}");
    assert!(json(&text)["data"][0]["embedding"].is_string());
    // The large model was skipped: its vectors are not comparable.
    let sent = b.last_request().unwrap().json().unwrap();
    assert_eq!(sent["model"], "text-embedding-3-small");
    assert_eq!(b.request_count(), 1);
    assert_eq!(sent["input"], json!([[1, 2, 3]]));
    let (res, text) = gw
        .call(
            EMBEDDINGS,
            &json!({"model": "claude", "input": "x"}).to_string(),
        )
        .await;
    assert_eq!(res.status(), 400, "{text}");
    assert!(text.contains("embeddings"), "{text}");
    assert_eq!(c.request_count(), 0);
}

#[tokio::test]
async fn what_translation_leaves_out_is_counted_and_several_choices_are_refused() {
    let (gw, _o, c, _served) = openai_then_anthropic().await;
    c.push(
        Reply::status(200).body(
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
               "content": [{"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
                           {"type": "redacted_thinking", "data": "opaque"},
                           {"type": "text", "text": "Yes."}],
               "stop_reason": "end_turn", "stop_sequence": null,
               "usage": {"input_tokens": 4, "output_tokens": 2}})
            .to_string(),
        ),
    );
    let body =
        json!({"model": "claude", "seed": 7, "messages": [{"role": "user", "content": "q"}]});
    let (res, text) = gw.call("/v1/chat/completions", &body.to_string()).await;
    assert_eq!(res.status(), 200, "{text}");
    assert_eq!(res.headers()["x-palisade-untranslated"], "seed");
    let v = json(&text);
    assert_eq!(v["choices"][0]["message"]["reasoning_content"], "Hmm.");
    assert_eq!(v["choices"][0]["message"]["content"], "Yes.");
    let (_, metrics) = gw.get("/metrics").await;
    for line in [
        r#"palisade_untranslated_total{api="chat_completions",field="seed"} 1"#,
        r#"palisade_untranslated_total{api="messages",field="content block `redacted_thinking`"} 1"#,
        r#"palisade_untranslated_total{api="messages",field="reasoning signature"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    // Several choices cannot come from Anthropic: refused, naming `n`.
    let n2 = json!({"model": "claude", "n": 2, "messages": [{"role": "user", "content": "q"}]});
    let before = c.request_count();
    let (res, text) = gw.call("/v1/chat/completions", &n2.to_string()).await;
    assert_eq!(res.status(), 400, "{text}");
    assert!(text.contains("`n` is 2"), "{text}");
    assert_eq!(c.request_count(), before);
}

#[tokio::test]
async fn models_list_the_endpoints_each_route_serves() {
    let (gw, _o, _c, _served) = openai_then_anthropic().await;
    let (status, body) = gw.get("/v1/models").await;
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    let of = |id: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap()["endpoints"]
            .clone()
    };
    assert_eq!(
        of("gpt"),
        json!([
            "/v1/chat/completions",
            "/v1/messages",
            "/v1/responses",
            "/v1/embeddings"
        ])
    );
    assert_eq!(
        of("claude"),
        json!(["/v1/chat/completions", "/v1/messages", "/v1/responses"])
    );
}

#[tokio::test]
async fn both_endpoints_are_retried_before_the_first_byte() {
    let o = MockUpstream::new();
    let so = o.serve().await.unwrap();
    // The breaker kept out of the way: this test is about retries.
    let retry = "[upstreams.retry]\nmax_attempts = 3\nbase_delay = 1\nmax_delay = 2\n\
                 [upstreams.timeout]\nfirst_byte = 2000\nidle = 300\n\
                 [upstreams.breaker]\nminimum_calls = 100\nwindow = 100\n";
    let toml = upstream("o", "openai", &so.base_url(), retry) + &route("gpt", &["o"]);
    let gw = start(&toml, &[]).await;
    // A reset before the headers, then a 503: the third attempt answers.
    o.push_all([Reply::echo().fault(Fault::Reset), Reply::status(503)]);
    let (res, body) = gw.call(RESPONSES, &ask("gpt", "third time", true)).await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(numbered_text(&events(&body)), "third time");
    assert_eq!(o.request_count(), 3);
    o.push_all([
        Reply::status(429).header("retry-after-ms", "1"),
        Reply::status(500),
    ]);
    let (res, body) = gw
        .call(
            EMBEDDINGS,
            &json!({"model": "gpt", "input": "x"}).to_string(),
        )
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(o.request_count(), 6);
    // A connection reset before the headers, then a 429: the third answers.
    o.push_all([
        Reply::echo().fault(Fault::Reset),
        Reply::status(429).header("retry-after-ms", "1"),
    ]);
    let (res, body) = gw
        .call(
            EMBEDDINGS,
            &json!({"model": "gpt", "input": "x"}).to_string(),
        )
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(o.request_count(), 9);
    // An embeddings answer cut mid-body, or stalled, is asked for again.
    o.push_all([
        Reply::echo().fault(Fault::Truncate),
        Reply::echo().fault(Fault::Stall),
    ]);
    let (res, body) = gw
        .call(
            EMBEDDINGS,
            &json!({"model": "gpt", "input": ["x", "y"]}).to_string(),
        )
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(json(&body)["data"].as_array().unwrap().len(), 2);
    assert_eq!(o.request_count(), 12);
    // A JSON Responses answer cut mid-body is asked for again.
    o.push(Reply::echo().fault(Fault::Truncate));
    let (res, body) = gw.call(RESPONSES, &ask("gpt", "whole again", false)).await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(
        json(&body)["output"][0]["content"][0]["text"],
        "whole again"
    );
    // A stream that stalls after its first byte ends in an error event.
    o.push(Reply::echo().fault_after(1, Fault::Stall));
    let (res, body) = gw.call(RESPONSES, &ask("gpt", "one two", true)).await;
    assert_eq!(res.status(), 200, "{body}");
    let evs = events(&body);
    assert_eq!(evs.last().unwrap().0, "error", "{body}");
    assert_eq!(evs[evs.len() - 2].0, "response.failed", "{body}");
}

/// An Azure deployment URL serves chat completions and embeddings (Azure
/// serves the Responses API only at its v1 URL): a Responses call to it is
/// translated to chat completions; at a v1 URL it goes as it came.
#[tokio::test]
async fn azure_deployments_take_responses_calls_as_chat_and_v1_urls_as_they_came() {
    let (d, v1) = (MockUpstream::new(), MockUpstream::new());
    let (sd, sv) = (d.serve().await.unwrap(), v1.serve().await.unwrap());
    let deployment = format!("{}/openai/deployments/gpt-4o", sd.base_url());
    let toml = upstream("dep", "azure", &deployment, "api_version = \"2024-10-21\"")
        + &upstream("v1", "azure", &sv.base_url(), "")
        + &route("dep", &["dep"])
        + &route("v1", &["v1"]);
    let gw = start(&toml, &[]).await;
    let (res, body) = gw
        .call(RESPONSES, &ask("dep", "to a deployment", false))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(
        json(&body)["output"][0]["content"][0]["text"],
        "to a deployment"
    );
    let sent = d.last_request().unwrap();
    assert_eq!(
        sent.uri.path_and_query().unwrap().as_str(),
        "/v1/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    );
    let (res, body) = gw
        .call(
            EMBEDDINGS,
            &json!({"model": "dep", "input": "x"}).to_string(),
        )
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert!(
        d.last_request()
            .unwrap()
            .uri
            .path()
            .ends_with("/embeddings")
    );
    let (res, body) = gw.call(RESPONSES, &ask("v1", "to v1", false)).await;
    assert_eq!(res.status(), 200, "{body}");
    assert!(
        v1.last_request()
            .unwrap()
            .uri
            .path()
            .ends_with("/responses")
    );
}

/// Embeddings go through the upstream's whole stack: its token limit
/// counts their input (here 2,000 tokens of input against a limit of
/// 1,000: refused before any call, 429), and its request limit their calls.
#[tokio::test]
async fn embeddings_are_held_to_the_upstreams_limits() {
    let mock = MockUpstream::new();
    let toml = "[[upstreams]]\nname = \"m\"\nkind = \"mock\"\n\
                [upstreams.rate_limit]\nrequests_per_minute = 2\ntokens_per_minute = 1000\nmax_wait = 0\n"
        .to_owned()
        + &route("mock", &["m"]);
    let gw = start(&toml, &[("m", &mock)]).await;
    let big = json!({"model": "mock", "input": vec![7u32; 2000]});
    let (res, body) = gw.call(EMBEDDINGS, &big.to_string()).await;
    assert_eq!(res.status(), 429, "{body}");
    assert_eq!(mock.request_count(), 0);
    let small = json!({"model": "mock", "input": "a few words"}).to_string();
    let (res, body) = gw.call(EMBEDDINGS, &small).await;
    assert_eq!(res.status(), 200, "{body}");
    let (res, body) = gw.call(EMBEDDINGS, &small).await;
    assert_eq!(res.status(), 429, "{body}");
    assert!(res.headers().contains_key("retry-after"), "{body}");
}

/// Embeddings failures count toward the upstream's breaker like any call:
/// it opens, and an open circuit refuses embeddings without calling.
#[tokio::test]
async fn embeddings_failures_open_the_breaker() {
    let o = MockUpstream::new();
    o.set_default(Reply::status(500));
    let so = o.serve().await.unwrap();
    let extra = "[upstreams.retry]\nmax_attempts = 1\n[upstreams.breaker]\nminimum_calls = 2\n\
                 window = 2\nfailure_rate = 0.5\nopen_for = 600000\n";
    let toml = upstream("o", "openai", &so.base_url(), extra) + &route("gpt", &["o"]);
    let gw = start(&toml, &[]).await;
    let ask = json!({"model": "gpt", "input": "x"}).to_string();
    for _ in 0..2 {
        let (res, body) = gw.call(EMBEDDINGS, &ask).await;
        assert_eq!(res.status(), 500, "{body}");
    }
    let (res, body) = gw.call(EMBEDDINGS, &ask).await;
    assert_eq!(res.status(), 503, "{body}");
    assert!(body.contains("circuit"), "{body}");
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(o.request_count(), 2, "an open circuit calls nobody");
}

/// What a translated stream cannot carry is counted too: an Anthropic
/// stream's `redacted_thinking` block and thinking signature, relayed to a
/// chat completions caller.
#[tokio::test]
async fn what_a_translated_stream_leaves_out_is_counted() {
    let (gw, _o, c, _served) = openai_then_anthropic().await;
    let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
    let wire = [
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1",
            "type": "message", "role": "assistant", "model": "claude-x", "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 3, "output_tokens": 0}}}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Hmm."}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "signature_delta", "signature": "sig"}}),
        ),
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "redacted_thinking", "data": "opaque"}}),
        ),
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 2,
            "content_block": {"type": "text", "text": ""}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "text_delta", "text": "Yes."}}),
        ),
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        ),
        ev(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"input_tokens": 3, "output_tokens": 2}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
    .concat();
    c.push(
        Reply::status(200)
            .header("content-type", "text/event-stream")
            .body(wire),
    );
    let body = json!({"model": "claude", "stream": true,
                      "messages": [{"role": "user", "content": "q"}]});
    let (res, text) = gw.call("/v1/chat/completions", &body.to_string()).await;
    assert_eq!(res.status(), 200, "{text}");
    assert!(text.contains("\"reasoning_content\":\"Hmm.\""), "{text}");
    assert!(text.contains("\"content\":\"Yes.\""), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let (_, metrics) = gw.get("/metrics").await;
    for line in [
        r#"palisade_untranslated_total{api="messages",field="content block `redacted_thinking`"} 1"#,
        r#"palisade_untranslated_total{api="messages",field="reasoning signature"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

/// What a translation leaves out goes on the request's span
/// (`palisade.untranslated`) and in one log line per call.
#[tokio::test]
async fn what_translation_leaves_out_is_logged_once_on_the_requests_span() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // This test's runtime is one thread: the gateway's tasks log here.
    let _guard = tracing::subscriber::set_default(subscriber);
    let (gw, _o, _c, _served) = openai_then_anthropic().await;
    let body =
        json!({"model": "claude", "seed": 1, "messages": [{"role": "user", "content": "q"}]});
    let (res, text) = gw.call("/v1/chat/completions", &body.to_string()).await;
    assert_eq!(res.status(), 200, "{text}");
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("left out by translation"))
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(
        lines[0].contains(
            "palisade.untranslated=\"request (chat_completions): seed; answer (messages): none\""
        ),
        "{}",
        lines[0]
    );
}
