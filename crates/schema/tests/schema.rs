//! palisade-schema: the classic bad inputs, a corpus of valid requests in
//! the shapes of the providers' documentation, parse-once, the server
//! variant, and a property that arbitrary JSON never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use palisade_core::{BodyTooLarge, ErrorKind, ParsedBody, Rejected, RequestBody, find};
use palisade_providers::Api;
use palisade_schema::{Schema, SchemaLayer};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::{Layer, ServiceExt, service_fn};

type Calls = Arc<AtomicUsize>;

/// An inner service that counts calls and checks it got a `ParsedBody`.
fn counting(
    calls: Calls,
) -> impl tower::Service<
    Request<RequestBody>,
    Response = Response<String>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response<String>, std::convert::Infallible>>,
> + Clone {
    service_fn(move |req: Request<RequestBody>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let parsed = ParsedBody::of(&req).is_some();
        async move { Ok(Response::new(format!("parsed={parsed}"))) }
    })
}

async fn check(layer: SchemaLayer, body: &str) -> Result<String, palisade_core::BoxError> {
    let calls = Calls::default();
    let svc = layer.layer(counting(calls.clone()));
    let req = Request::post("/x")
        .body(RequestBody::from(body.to_owned()))
        .unwrap();
    let res = svc.oneshot(req).await;
    match &res {
        Ok(_) => assert_eq!(calls.load(Ordering::SeqCst), 1),
        Err(_) => assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "a rejected request is never sent"
        ),
    }
    res.map(Response::into_body)
}

fn pointers(err: &palisade_core::BoxError) -> Vec<String> {
    let r = find::<Rejected>(&**err).expect("a Rejected");
    r.violations()
        .iter()
        .map(|v| v.pointer().to_owned())
        .collect()
}

/// Each body is refused by the layer `make` builds, as an invalid request,
/// with a violation at its pointer.
async fn assert_refused(make: fn() -> SchemaLayer, cases: Vec<(Value, &str)>) {
    for (body, pointer) in cases {
        let err = check(make(), &body.to_string()).await.unwrap_err();
        assert_eq!(ErrorKind::of(&*err), Some(ErrorKind::InvalidRequest));
        let p = pointers(&err);
        assert!(
            p.iter().any(|x| x == pointer),
            "{body} → {p:?} (wanted {pointer}): {err}"
        );
    }
}

#[tokio::test]
async fn the_classic_bad_inputs_are_rejected_with_the_right_pointer() {
    let user = |c: Value| json!({"role": "user", "content": c});
    let cases: Vec<(Value, &str)> = vec![
        // A missing required field.
        (json!({"model": "gpt-4o"}), "/messages"),
        (json!({"messages": [user(json!("hi"))]}), "/model"),
        // null where a value is required.
        (
            json!({"model": null, "messages": [user(json!("hi"))]}),
            "/model",
        ),
        // Not an array.
        (
            json!({"model": "gpt-4o", "messages": {"role": "user", "content": "hi"}}),
            "/messages",
        ),
        (json!({"model": "gpt-4o", "messages": "hi"}), "/messages"),
        // A role that is not a string, a message without one.
        (
            json!({"model": "gpt-4o", "messages": [{"role": 1, "content": "hi"}]}),
            "/messages/0/role",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"content": "hi"}]}),
            "/messages/0/role",
        ),
        // A string where a number must be.
        (
            json!({"model": "gpt-4o", "temperature": "0.7", "messages": [user(json!("hi"))]}),
            "/temperature",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user(json!("hi"))], "max_tokens": "100"}),
            "/max_tokens",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user(json!("hi"))], "n": "2"}),
            "/n",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user(json!("hi"))], "stream": "yes"}),
            "/stream",
        ),
        // A function tool without a name; a name that is not a string.
        (
            json!({"model": "gpt-4o", "messages": [user(json!("hi"))], "tools": [{"type": "function", "function": {"parameters": {}}}]}),
            "/tools/0/function/name",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user(json!("hi"))], "tools": [{"type": "function", "function": {"name": 7}}]}),
            "/tools/0/function/name",
        ),
        // Content of the wrong type; a text part without its text.
        (
            json!({"model": "gpt-4o", "messages": [user(json!(7))]}),
            "/messages/0/content",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user(json!([{"type": "text"}]))]}),
            "/messages/0/content/0/text",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user"}]}),
            "/messages/0/content",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user(json!("hi"))], "stop": [1, 2]}),
            "/stop/0",
        ),
        // Certain and lasting: an empty list of messages, a tool call
        // without its id, a tool message without the id it answers, an
        // image_url object without its url, a count below zero.
        (json!({"model": "gpt-4o", "messages": []}), "/messages"),
        (
            json!({"model": "gpt-4o", "messages": [user(json!("hi")), {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
            "/messages/1/tool_calls/0/id",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user(json!("hi")), {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]}]}),
            "/messages/1/tool_calls/0/function",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user(json!("hi")), {"role": "tool", "content": "42"}]}),
            "/messages/1/tool_call_id",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user(json!([{"type": "image_url", "image_url": {"detail": "high"}}]))]}),
            "/messages/0/content/0/image_url/url",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user(json!("hi"))], "max_tokens": -1}),
            "/max_tokens",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user(json!("hi"))], "max_completion_tokens": -5}),
            "/max_completion_tokens",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user(json!("hi"))], "n": -1}),
            "/n",
        ),
    ];
    assert_refused(SchemaLayer::openai, cases).await;
    let anthropic: Vec<(Value, &str)> = vec![
        (
            json!({"model": "claude", "messages": [user(json!("hi"))]}),
            "/max_tokens",
        ),
        (
            json!({"max_tokens": 9, "messages": [user(json!("hi"))]}),
            "/model",
        ),
        (json!({"model": "claude", "max_tokens": 9}), "/messages"),
        (
            json!({"model": "claude", "max_tokens": "9", "messages": [user(json!("hi"))]}),
            "/max_tokens",
        ),
        (
            json!({"model": "claude", "max_tokens": -1, "messages": [user(json!("hi"))]}),
            "/max_tokens",
        ),
        (
            json!({"model": "claude", "max_tokens": 9.5, "messages": [user(json!("hi"))]}),
            "/max_tokens",
        ),
        (
            json!({"model": "claude", "max_tokens": 9, "messages": "hi"}),
            "/messages",
        ),
        (
            json!({"model": "claude", "max_tokens": 9, "messages": [{"role": ["user"], "content": "hi"}]}),
            "/messages/0/role",
        ),
        (
            json!({"model": "claude", "max_tokens": 9, "messages": [{"role": "user"}]}),
            "/messages/0/content",
        ),
        (
            json!({"model": "claude", "max_tokens": 9, "temperature": "warm", "messages": [user(json!("hi"))]}),
            "/temperature",
        ),
        (
            json!({"model": "claude", "max_tokens": 9, "messages": [user(json!([{"type": "tool_use", "id": "t", "name": "n", "input": "x"}]))]}),
            "/messages/0/content/0/input",
        ),
        (
            json!({"model": "claude", "max_tokens": 9, "messages": [user(json!([{"type": "text", "text": 5}]))]}),
            "/messages/0/content/0/text",
        ),
        // Certain and lasting: an empty list of messages, tool_use without
        // its input, thinking enabled without a budget, a named tool_choice
        // without its name, top_k below zero, a number as metadata.user_id.
        (
            json!({"model": "claude", "max_tokens": 9, "messages": []}),
            "/messages",
        ),
        (
            json!({"model": "claude", "max_tokens": 9, "messages": [user(json!("hi")), {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "n"}]}]}),
            "/messages/1/content/0/input",
        ),
        (
            json!({"model": "claude", "max_tokens": 2048, "thinking": {"type": "enabled"}, "messages": [user(json!("hi"))]}),
            "/thinking/budget_tokens",
        ),
        (
            json!({"model": "claude", "max_tokens": 9, "tool_choice": {"type": "tool"}, "messages": [user(json!("hi"))]}),
            "/tool_choice/name",
        ),
        (
            json!({"model": "claude", "max_tokens": 9, "top_k": -1, "messages": [user(json!("hi"))]}),
            "/top_k",
        ),
        (
            json!({"model": "claude", "max_tokens": 9, "metadata": {"user_id": 42}, "messages": [user(json!("hi"))]}),
            "/metadata/user_id",
        ),
    ];
    assert_refused(SchemaLayer::anthropic, anthropic).await;
}

#[tokio::test]
async fn responses_and_embeddings_requests_certain_to_fail_are_refused() {
    let responses: Vec<(Value, &str)> = vec![
        (json!({"model": 7, "input": "hi"}), "/model"),
        (json!({"model": "gpt-4.1", "input": 7}), "/input"),
        (json!({"model": "gpt-4.1", "input": ["hi"]}), "/input/0"),
        (
            json!({"model": "gpt-4.1", "input": [{"role": "user"}]}),
            "/input/0/content",
        ),
        (
            json!({"model": "gpt-4.1", "input": [{"type": "function_call_output", "output": "14.5"}]}),
            "/input/0/call_id",
        ),
        (
            json!({"model": "gpt-4.1", "input": [{"type": "function_call_output", "call_id": "c"}]}),
            "/input/0/output",
        ),
        (
            json!({"model": "gpt-4.1", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]}),
            "/input/0/arguments",
        ),
        (
            json!({"model": "gpt-4.1", "input": [{"type": "item_reference"}]}),
            "/input/0/id",
        ),
        (
            json!({"model": "gpt-4.1", "input": "hi", "tools": [{"type": "function", "parameters": {}}]}),
            "/tools/0/name",
        ),
        (
            json!({"model": "gpt-4.1", "input": "hi", "metadata": {"n": 1}}),
            "/metadata/n",
        ),
        (
            json!({"model": "gpt-4.1", "input": "hi", "max_output_tokens": -1}),
            "/max_output_tokens",
        ),
        (
            json!({"model": "gpt-4.1", "input": "hi", "stream": "yes"}),
            "/stream",
        ),
        (json!({"prompt": {"version": "2"}}), "/prompt/id"),
    ];
    assert_refused(SchemaLayer::responses, responses).await;
    let embeddings: Vec<(Value, &str)> = vec![
        (json!({"input": "hi"}), "/model"),
        (json!({"model": "text-embedding-3-small"}), "/input"),
        (
            json!({"model": "text-embedding-3-small", "input": ""}),
            "/input",
        ),
        (
            json!({"model": "text-embedding-3-small", "input": []}),
            "/input",
        ),
        (
            json!({"model": "text-embedding-3-small", "input": [{"text": "hi"}]}),
            "/input/0",
        ),
        (
            json!({"model": "text-embedding-3-small", "input": [[1, "two"]]}),
            "/input/0/1",
        ),
        (
            json!({"model": "text-embedding-3-small", "input": "hi", "dimensions": -8}),
            "/dimensions",
        ),
        (
            json!({"model": "text-embedding-3-small", "input": "hi", "dimensions": "256"}),
            "/dimensions",
        ),
    ];
    assert_refused(SchemaLayer::embeddings, embeddings).await;
}

#[tokio::test]
async fn a_block_missing_its_type_is_one_violation() {
    for (layer, body) in [
        (
            SchemaLayer::anthropic(),
            r#"{"model":"claude","max_tokens":9,"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#,
        ),
        (
            SchemaLayer::openai(),
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":[{"text":"hi"}]}]}"#,
        ),
    ] {
        let err = check(layer, body).await.unwrap_err();
        assert_eq!(pointers(&err), ["/messages/0/content/0/type"], "{err}");
    }
}

/// Requests taken from the providers' published material (see each entry's
/// `source`): the OpenAI OpenAPI spec's examples and a request per variant
/// of every property of `CreateChatCompletionRequest`, the `create` tests
/// (`with_all_params` included) and examples of openai-python and
/// anthropic-sdk-python, and the cases earlier schemas refused. Every one
/// must pass.
#[tokio::test]
async fn the_corpus_from_the_providers_published_material_passes() {
    for (file, schema, at_least) in [
        (
            include_str!("corpus/openai_chat.json"),
            Schema::openai_chat(),
            150,
        ),
        (
            include_str!("corpus/anthropic_messages.json"),
            Schema::anthropic_messages(),
            40,
        ),
        (
            include_str!("corpus/openai_responses.json"),
            Schema::openai_responses(),
            18,
        ),
        (
            include_str!("corpus/openai_embeddings.json"),
            Schema::openai_embeddings(),
            7,
        ),
    ] {
        let corpus: Vec<Value> = serde_json::from_str(file).unwrap();
        assert!(corpus.len() >= at_least, "{}", corpus.len());
        let refused: Vec<String> = corpus
            .iter()
            .filter_map(|entry| {
                let source = entry["source"]
                    .as_str()
                    .expect("each entry names its source");
                schema
                    .check(&entry["request"])
                    .err()
                    .map(|e| format!("{source}: {e}"))
            })
            .collect();
        assert!(
            refused.is_empty(),
            "{} of {} refused:\n{}",
            refused.len(),
            corpus.len(),
            refused.join("\n")
        );
    }
}

#[tokio::test]
async fn a_string_in_a_number_array_fails_a_users_schema() {
    let schema = Schema::new(
        "embedding",
        &json!({"type": "object", "properties": {"input": {"type": "array", "items": {"type": "number"}}}}),
    )
    .unwrap();
    let err = check(SchemaLayer::new(schema), r#"{"input":[0.5,"1.5",2]}"#)
        .await
        .unwrap_err();
    assert_eq!(pointers(&err), ["/input/1"]);
    assert!(err.to_string().contains("number"), "{err}");
}

#[tokio::test]
async fn every_violation_is_listed() {
    let err = check(
        SchemaLayer::openai(),
        r#"{"model":5,"temperature":"hot","top_p":"x","messages":[{"role":"user"}]}"#,
    )
    .await
    .unwrap_err();
    let mut p = pointers(&err);
    p.sort();
    assert_eq!(
        p,
        ["/messages/0/content", "/model", "/temperature", "/top_p"]
    );
}

#[tokio::test]
async fn not_json_and_too_large_are_refused_before_the_schema() {
    let err = check(SchemaLayer::openai(), "{\"model\":")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    let err = check(SchemaLayer::openai().max_body_bytes(10), &"x".repeat(11))
        .await
        .unwrap_err();
    assert!(find::<BodyTooLarge>(&*err).is_some(), "{err}");
}

#[tokio::test]
async fn the_body_is_parsed_once_and_handed_on() {
    let ok = r#"{"model":"gpt-4o","temperature":0.30000000000000004,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(
        check(SchemaLayer::openai(), ok).await.unwrap(),
        "parsed=true"
    );

    // A ParsedBody an earlier layer stored is trusted, not parsed again: here
    // it disagrees with the bytes on purpose.
    let calls = Calls::default();
    let svc = SchemaLayer::openai().layer(counting(calls.clone()));
    let mut req = Request::post("/x")
        .body(RequestBody::from("not json at all"))
        .unwrap();
    req.extensions_mut()
        .insert(ParsedBody::parse(ok.as_bytes()).unwrap());
    assert!(svc.oneshot(req).await.is_ok());

    // Numbers keep every digit.
    let calls = Calls::default();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let sink = seen.clone();
    let svc = SchemaLayer::openai().layer(service_fn(move |req: Request<RequestBody>| {
        calls.fetch_add(1, Ordering::SeqCst);
        *sink.lock().unwrap() = ParsedBody::of(&req).map(|p| p.value()["temperature"].to_string());
        async { Ok::<_, std::convert::Infallible>(Response::new(())) }
    }));
    let req = Request::post("/x").body(RequestBody::from(ok)).unwrap();
    svc.oneshot(req).await.unwrap();
    assert_eq!(seen.lock().unwrap().as_deref(), Some("0.30000000000000004"));
}

#[tokio::test]
async fn the_server_variant_answers_400_and_413_in_the_providers_format() {
    let calls = Calls::default();
    let openai = SchemaLayer::openai()
        .max_body_bytes(200)
        .respond_as(Api::ChatCompletions)
        .layer(counting(calls.clone()));
    let req = |b: &str| {
        Request::post("/v1/chat/completions")
            .body(Full::new(Bytes::from(b.to_owned())))
            .unwrap()
    };
    let res = openai
        .clone()
        .oneshot(req(
            r#"{"model":"m","messages":[{"role":"user","content":7}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let v: Value = serde_json::from_str(res.body()).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "/messages/0/content");
    let res = openai.clone().oneshot(req(&"y".repeat(201))).await.unwrap();
    assert_eq!(res.status(), 413);
    let res = openai
        .clone()
        .oneshot(req(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(
        (res.status().as_u16(), res.body().as_str()),
        (200, "parsed=true")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let anthropic = SchemaLayer::anthropic()
        .max_body_bytes(200)
        .respond_as(Api::Messages)
        .layer(counting(calls.clone()));
    let res = anthropic
        .clone()
        .oneshot(req(&"y".repeat(201)))
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let v: Value = serde_json::from_str(res.body()).unwrap();
    assert_eq!(v["error"]["type"], "request_too_large");
}

/// Valid requests in the shapes the providers document.
const VALID_OPENAI: &[&str] = &[
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello!"}]}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"developer","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}]}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be terse."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello."},{"role":"user","content":"Bye"}]}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"What's in this image?"},{"type":"image_url","image_url":{"url":"https://example.invalid/cat.png"}}]}],"max_tokens":300}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}}]}]}"#,
    r#"{"model":"gpt-4o-audio-preview","modalities":["text","audio"],"audio":{"voice":"alloy","format":"wav"},"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello!"}],"stream":true}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello!"}],"stream":true,"stream_options":{"include_usage":true}}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"What's the weather like in Boston today?"}],"tools":[{"type":"function","function":{"name":"get_current_weather","description":"Get the current weather in a given location","parameters":{"type":"object","properties":{"location":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["location"]}}}],"tool_choice":"auto"}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"get_weather","strict":true,"parameters":{"type":"object","properties":{},"additionalProperties":false}}}],"tool_choice":{"type":"function","function":{"name":"get_weather"}}}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_abc123","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Boston\"}"}}]},{"role":"tool","tool_call_id":"call_abc123","content":"22 C and sunny"}]}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"List three colours"}],"response_format":{"type":"json_object"}}"#,
    r#"{"model":"gpt-4o-2024-08-06","messages":[{"role":"system","content":"Extract the event."},{"role":"user","content":"Alice and Bob go to a fair on Friday."}],"response_format":{"type":"json_schema","json_schema":{"name":"calendar_event","strict":true,"schema":{"type":"object","properties":{"name":{"type":"string"},"date":{"type":"string"},"participants":{"type":"array","items":{"type":"string"}}},"required":["name","date","participants"],"additionalProperties":false}}}}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello!"}],"logprobs":true,"top_logprobs":2}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello!"}],"temperature":0.2,"top_p":0.9,"n":2,"presence_penalty":0.5,"frequency_penalty":-0.5,"seed":42}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello!"}],"stop":["\n\n","END"],"max_completion_tokens":64}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello!"}],"stop":"END","user":"user-1234","logit_bias":{"50256":-100}}"#,
    r#"{"model":"o3-mini","messages":[{"role":"user","content":"Prove it."}],"reasoning_effort":"high","max_completion_tokens":4000}"#,
    r#"{"model":"gpt-4o","messages":[{"role":"user","name":"alice","content":"Hello!"}],"metadata":{"tenant":"acme"},"store":false,"parallel_tool_calls":false,"service_tier":"auto"}"#,
    r#"{"model":"llama3:8b","messages":[{"role":"user","content":"Hi"}],"temperature":null,"max_tokens":null,"some_server_specific_option":{"top_k":40}}"#,
];

const VALID_ANTHROPIC: &[&str] = &[
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hello, world"}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"system":"You are a pirate.","messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Arr"},{"role":"user","content":"Bye"}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"system":[{"type":"text","text":"Be terse.","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"Hi"}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"AAAA"}},{"type":"text","text":"Describe this image."}]}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://example.invalid/a.jpg"}}]}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0="}},{"type":"text","text":"Summarise."}]}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Hello"}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"tools":[{"name":"get_weather","description":"Get the current weather in a given location","input_schema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}}],"messages":[{"role":"user","content":"What is the weather like in San Francisco?"}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{}}}],"tool_choice":{"type":"tool","name":"get_weather"},"messages":[{"role":"user","content":"weather?"}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"tool_choice":{"type":"any","disable_parallel_tool_use":true},"tools":[{"name":"a","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":"go"}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{"location":"San Francisco, CA"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01A","content":"15 degrees"}]}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01A","content":[{"type":"text","text":"15 degrees"}],"is_error":false}]}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":16000,"thinking":{"type":"enabled","budget_tokens":10000},"messages":[{"role":"user","content":"Prove there are infinitely many primes."}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":[{"type":"thinking","thinking":"Let me think.","signature":"sig"},{"type":"text","text":"Hello"}]},{"role":"user","content":"Go on"}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"temperature":0.5,"top_p":0.9,"top_k":40,"stop_sequences":["\n\nHuman:"],"metadata":{"user_id":"u-1"},"messages":[{"role":"user","content":"Hi"}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}],"messages":[{"role":"user","content":"news?"}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hi"}],"service_tier":"auto","container":"c-1"}"#,
];

#[tokio::test]
async fn a_corpus_of_valid_requests_passes() {
    assert!(VALID_OPENAI.len() + VALID_ANTHROPIC.len() >= 30);
    for body in VALID_OPENAI {
        if let Err(e) = check(SchemaLayer::openai(), body).await {
            panic!("{body}\n→ {e}");
        }
    }
    for body in VALID_ANTHROPIC {
        if let Err(e) = check(SchemaLayer::anthropic(), body).await {
            panic!("{body}\n→ {e}");
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-z_ ]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("tool"),
            Just("text"),
            Just("function"),
            Just("json_schema")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        let keys = prop_oneof![
            Just("model"),
            Just("messages"),
            Just("role"),
            Just("content"),
            Just("type"),
            Just("text"),
            Just("tools"),
            Just("function"),
            Just("name"),
            Just("max_tokens"),
            Just("temperature"),
            Just("response_format"),
            Just("json_schema"),
            Just("input_schema"),
            Just("x"),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys.prop_map(str::to_owned), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn arbitrary_json_never_panics_and_errors_always_point_somewhere(v in arb_json()) {
        for schema in [Schema::openai_chat(), Schema::anthropic_messages()] {
            match schema.check(&v) {
                Ok(()) => prop_assert!(schema.is_valid(&v)),
                Err(r) => {
                    prop_assert!(!r.violations().is_empty());
                    for viol in r.violations() {
                        prop_assert!(viol.pointer().is_empty() || viol.pointer().starts_with('/'));
                    }
                }
            }
        }
    }
}
