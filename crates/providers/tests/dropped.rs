//! Nothing dropped silently: reasoning, refusals, cached and cache-write
//! tokens, extra choices, tool calls opened without an id — each either
//! carried to the other API or named as untranslated. Every test goes
//! through the generic core (`Api::dialect`): read in one API, write in
//! another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use palisade_providers::Api;
use palisade_providers::dialect::Dialect;
use palisade_sse::{Decoder, Event};
use serde_json::{Value, json};

fn dialect(api: Api) -> &'static dyn Dialect {
    api.dialect().unwrap()
}

/// `answer` (JSON of `from`) as `to` writes it, and what was left out.
fn answer(from: Api, to: Api, answer: &Value) -> (Value, Vec<String>) {
    let a = dialect(from)
        .read_answer(answer.to_string().as_bytes())
        .unwrap();
    let mut lost = a.untranslated.clone();
    let w = dialect(to).write_answer(&a).unwrap();
    lost.extend(w.left_out);
    (serde_json::from_slice(&w.body).unwrap(), lost)
}

fn events(wire: &[u8]) -> Vec<Event> {
    let mut d = Decoder::new();
    d.push(Bytes::copy_from_slice(wire));
    std::iter::from_fn(|| d.next_event().ok().flatten()).collect()
}

/// A stream of `from` (its wire bytes) as `to` writes it (decoded), and
/// what was left out.
fn stream(from: Api, to: Api, wire: &[u8], caller_request: &Value) -> (Vec<Event>, Vec<String>) {
    let mut read = dialect(from).stream_reader();
    let mut write = dialect(to).stream_writer(caller_request);
    let mut out = Vec::new();
    for ev in events(wire) {
        for d in read.read(&ev).unwrap() {
            write.write(d, &mut out);
        }
    }
    let mut lost = read.untranslated();
    lost.extend(write.untranslated());
    (events(&out.concat()), lost)
}

fn data(ev: &Event) -> Value {
    serde_json::from_slice(ev.data()).unwrap_or(Value::Null)
}

fn claude_thinking() -> Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "42."},
        ],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5,
                  "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20},
    })
}

#[test]
fn thinking_becomes_reasoning_in_every_api_and_comes_back_signed() {
    // Chat completions: `reasoning_content`, as compatible servers send it.
    let (chat, lost) = answer(Api::Messages, Api::ChatCompletions, &claude_thinking());
    let msg = &chat["choices"][0]["message"];
    assert_eq!(msg["reasoning_content"], "Let me think.");
    assert_eq!(msg["content"], "42.");
    assert!(lost.contains(&"reasoning signature".to_owned()), "{lost:?}");
    assert!(
        lost.contains(&"content block `redacted_thinking`".to_owned()),
        "{lost:?}"
    );
    // The Responses API: a reasoning item with its summary.
    let (resp, _) = answer(Api::Messages, Api::Responses, &claude_thinking());
    assert_eq!(resp["output"][0]["type"], "reasoning");
    assert_eq!(resp["output"][0]["summary"][0]["text"], "Let me think.");
    assert_eq!(resp["output"][1]["content"][0]["text"], "42.");
    // Anthropic to Anthropic through the neutral model: signed as it came.
    let (back, lost) = answer(Api::Messages, Api::Messages, &claude_thinking());
    assert_eq!(back["content"][0]["type"], "thinking");
    assert_eq!(back["content"][0]["signature"], "sig-abc");
    assert_eq!(lost, ["content block `redacted_thinking`"]);
    // In a request, signed thinking goes back to Anthropic; reasoning
    // another provider made is left out (Anthropic refuses it unsigned).
    let history = json!({"model": "m", "max_tokens": 9, "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": "sig-abc"},
            {"type": "text", "text": "a"}]},
        {"role": "user", "content": "and?"},
    ]});
    let n = dialect(Api::Messages).read_request(&history).unwrap();
    let w = dialect(Api::Messages).write_request(&n).unwrap();
    assert_eq!(w.body["messages"][1]["content"][0]["signature"], "sig-abc");
    let w = dialect(Api::ChatCompletions).write_request(&n).unwrap();
    assert_eq!(w.left_out, ["reasoning"]);
    let from_openai = json!({"model": "m", "input": [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}],
         "encrypted_content": "enc"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "a"}]},
    ]});
    let n = dialect(Api::Responses).read_request(&from_openai).unwrap();
    let w = dialect(Api::Messages).write_request(&n).unwrap();
    assert_eq!(w.left_out, ["reasoning without an Anthropic signature"]);
    assert_eq!(w.body["messages"][1]["content"][0]["text"], "a");
}

#[test]
fn streamed_thinking_and_its_signature_cross_to_every_api() {
    let wire = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hmm.\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sig-1\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Yes.\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":7}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let (chat, lost) = stream(Api::Messages, Api::ChatCompletions, wire, &json!({}));
    let reasoning: String = chat
        .iter()
        .filter_map(|e| {
            data(e)["choices"][0]["delta"]["reasoning_content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(reasoning, "Hmm.");
    assert_eq!(lost, ["reasoning signature"]);
    let (resp, lost) = stream(Api::Messages, Api::Responses, wire, &json!({}));
    assert!(
        lost.is_empty() || lost == ["reasoning signature"],
        "{lost:?}"
    );
    let summary: String = resp
        .iter()
        .filter(|e| e.is("response.reasoning_summary_text.delta"))
        .map(|e| data(e)["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(summary, "Hmm.");
    let done = data(resp.last().unwrap());
    assert_eq!(done["response"]["output"][0]["type"], "reasoning");
    assert_eq!(done["response"]["output"][1]["content"][0]["text"], "Yes.");
    // Anthropic again: thinking block and its signature delta.
    let (claude, lost) = stream(Api::Messages, Api::Messages, wire, &json!({}));
    assert!(lost.is_empty(), "{lost:?}");
    assert!(
        claude
            .iter()
            .any(|e| data(e)["delta"]["signature"] == "sig-1")
    );
    assert!(
        claude
            .iter()
            .any(|e| data(e)["delta"]["thinking"] == "Hmm.")
    );
    // And reasoning from a compatible server's chat stream reaches Anthropic.
    let chat_wire = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"r1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"Think\"}}]}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"r1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Done\"},\"finish_reason\":\"stop\"}]}\n\n\
data: [DONE]\n\n";
    let (claude, _) = stream(Api::ChatCompletions, Api::Messages, chat_wire, &json!({}));
    let thinking: Vec<_> = claude
        .iter()
        .filter(|e| data(e)["delta"]["type"] == "thinking_delta")
        .collect();
    assert_eq!(thinking.len(), 1);
    assert!(claude.iter().any(|e| data(e)["delta"]["text"] == "Done"));
}

#[test]
fn refusals_are_carried_and_finish_as_a_refusal() {
    let refused = json!({
        "id": "c", "object": "chat.completion", "created": 0, "model": "gpt",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                     "refusal": "I can't help with that."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 6},
    });
    let (claude, lost) = answer(Api::ChatCompletions, Api::Messages, &refused);
    assert!(lost.is_empty(), "{lost:?}");
    assert_eq!(claude["content"][0]["text"], "I can't help with that.");
    assert_eq!(claude["stop_reason"], "refusal");
    let (resp, _) = answer(Api::ChatCompletions, Api::Responses, &refused);
    assert_eq!(resp["output"][0]["content"][0]["type"], "refusal");
    assert_eq!(
        resp["output"][0]["content"][0]["refusal"],
        "I can't help with that."
    );
    let (chat, _) = answer(Api::Responses, Api::ChatCompletions, &resp);
    assert_eq!(
        chat["choices"][0]["message"]["refusal"],
        "I can't help with that."
    );
    assert_eq!(chat["choices"][0]["finish_reason"], "content_filter");
    // Streamed refusal deltas.
    let wire = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"refusal\":\"No.\"}}]}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let (resp, _) = stream(Api::ChatCompletions, Api::Responses, wire, &json!({}));
    assert!(
        resp.iter()
            .any(|e| e.is("response.refusal.delta") && data(e)["delta"] == "No.")
    );
}

#[test]
fn cache_reads_and_writes_cross_both_ways() {
    let (chat, _) = answer(Api::Messages, Api::ChatCompletions, &claude_thinking());
    assert_eq!(chat["usage"]["prompt_tokens"], 130);
    assert_eq!(chat["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
    let (resp, _) = answer(Api::Messages, Api::Responses, &claude_thinking());
    assert_eq!(resp["usage"]["input_tokens"], 130);
    assert_eq!(resp["usage"]["input_tokens_details"]["cached_tokens"], 100);
    let (claude, _) = answer(Api::Messages, Api::Messages, &claude_thinking());
    assert_eq!(claude["usage"]["input_tokens"], 10);
    assert_eq!(claude["usage"]["cache_read_input_tokens"], 100);
    assert_eq!(claude["usage"]["cache_creation_input_tokens"], 20);
    let (claude, _) = answer(Api::Responses, Api::Messages, &resp);
    assert_eq!(claude["usage"]["cache_read_input_tokens"], 100);
    assert_eq!(claude["usage"]["input_tokens"], 30);
}

#[test]
fn several_choices_are_refused_or_named() {
    let n2 = json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "hi"}]});
    let e = dialect(Api::ChatCompletions).read_request(&n2).unwrap_err();
    assert!(e.to_string().contains("`n` is 2"), "{e}");
    let n1 = json!({"model": "m", "n": 1, "messages": [{"role": "user", "content": "hi"}]});
    assert!(dialect(Api::ChatCompletions).read_request(&n1).is_ok());
    let two = json!({
        "id": "c", "object": "chat.completion", "created": 0, "model": "gpt",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "one"}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "two"}, "finish_reason": "stop"},
        ],
    });
    let (claude, lost) = answer(Api::ChatCompletions, Api::Messages, &two);
    assert_eq!(claude["content"][0]["text"], "one");
    assert_eq!(lost, ["choices[1..]"]);
    let wire = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"g\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n\n";
    let (_, lost) = stream(Api::ChatCompletions, Api::Messages, wire, &json!({}));
    assert_eq!(lost, ["choices[1..]"]);
}

#[test]
fn a_tool_call_opened_without_an_id_still_opens() {
    let wire = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n";
    let (claude, _) = stream(Api::ChatCompletions, Api::Messages, wire, &json!({}));
    let start = claude
        .iter()
        .map(data)
        .find(|d| d["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    assert_eq!(start["content_block"]["id"], "toolu_palisade_0");
    assert_eq!(start["content_block"]["name"], "f");
    assert!(
        claude
            .iter()
            .any(|e| data(e)["delta"]["partial_json"] == "{\"a\":1}")
    );
    let (resp, _) = stream(Api::ChatCompletions, Api::Responses, wire, &json!({}));
    let done = data(resp.last().unwrap());
    assert_eq!(done["response"]["output"][0]["call_id"], "call_palisade_0");
    assert_eq!(done["response"]["output"][0]["arguments"], "{\"a\":1}");
}

#[test]
fn what_cannot_be_carried_is_named() {
    let chat = json!({"model": "m", "messages": [
        {"role": "user", "name": "ann", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "high"}}]},
        {"role": "assistant", "content": null, "audio": {"id": "au_1"}, "refusal": "no"},
    ], "tools": [{"type": "custom", "custom": {"name": "grammar"}}]});
    let n = dialect(Api::ChatCompletions).read_request(&chat).unwrap();
    for named in [
        "messages[].name",
        "messages[].audio",
        "image_url.detail",
        "tools[] of type `custom`",
    ] {
        assert!(
            n.untranslated.iter().any(|u| u == named),
            "{named}: {:?}",
            n.untranslated
        );
    }
    let claude = json!({"model": "m", "max_tokens": 9,
    "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
    "tools": [{"type": "web_search_20250305", "name": "web_search"},
              {"name": "f", "input_schema": {"type": "object"}}],
    "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": true,
            "content": [{"type": "text", "text": "bad"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]}]},
    ]});
    let n = dialect(Api::Messages).read_request(&claude).unwrap();
    assert_eq!(
        n.tools.as_ref().unwrap().len(),
        1,
        "the server tool is not a function"
    );
    for named in [
        "cache_control",
        "tools[] of type `web_search_20250305`",
        "tool_result is_error",
        "non-text content of a tool_result",
    ] {
        assert!(
            n.untranslated.iter().any(|u| u == named),
            "{named}: {:?}",
            n.untranslated
        );
    }
    let annotated = json!({"id": "r", "model": "m", "status": "completed", "output": [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "see [1]",
            "annotations": [{"type": "url_citation", "url": "https://x"}]}]},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    ]});
    let (_, lost) = answer(Api::Responses, Api::ChatCompletions, &annotated);
    assert!(
        lost.contains(&"output_text annotations".to_owned()),
        "{lost:?}"
    );
    assert!(
        lost.contains(&"output item `web_search_call`".to_owned()),
        "{lost:?}"
    );
}

#[test]
fn tool_calls_without_ids_get_ids_and_reasoning_tokens_cross() {
    let no_id = json!({
        "id": "c", "object": "chat.completion", "created": 0, "model": "gpt",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 9,
                  "completion_tokens_details": {"reasoning_tokens": 5}},
    });
    let (claude, _) = answer(Api::ChatCompletions, Api::Messages, &no_id);
    assert_eq!(claude["content"][0]["id"], "toolu_palisade_0");
    let (resp, _) = answer(Api::ChatCompletions, Api::Responses, &no_id);
    assert_eq!(resp["output"][0]["call_id"], "call_palisade_0");
    assert_eq!(
        resp["usage"]["output_tokens_details"]["reasoning_tokens"],
        5
    );
    let (chat, _) = answer(Api::Responses, Api::ChatCompletions, &resp);
    assert_eq!(
        chat["usage"]["completion_tokens_details"]["reasoning_tokens"],
        5
    );
    assert_eq!(
        chat["choices"][0]["message"]["tool_calls"][0]["id"],
        "call_palisade_0"
    );
}

/// Keys nested inside what is carried — a content part's or block's own
/// fields, a tool definition's — are named when they carry something, in
/// every API; keys that carry nothing (`null`, `[]`) are not.
#[test]
fn keys_nested_inside_what_is_carried_are_named() {
    let named_in = |api: Api, body: Value, want: &[&str], not: &[&str]| {
        let n = dialect(api).read_request(&body).unwrap();
        for w in want {
            assert!(
                n.untranslated.iter().any(|u| u == w),
                "{api:?} {w}: {:?}",
                n.untranslated
            );
        }
        for w in not {
            assert!(
                !n.untranslated.iter().any(|u| u.contains(w)),
                "{api:?} {w}: {:?}",
                n.untranslated
            );
        }
    };
    named_in(
        Api::ChatCompletions,
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
            {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{}"}, "x_trace": "t"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"}],
            "tools": [{"type": "function", "function": {"name": "f", "strict": true,
                       "parameters": {"type": "object"}}}]}),
        &[
            "content part `text` field `cache_control`",
            "tools[].function field `strict`",
        ],
        &["image_url` field"],
    );
    named_in(
        Api::Messages,
        json!({"model": "m", "max_tokens": 9,
            "tools": [{"name": "f", "input_schema": {"type": "object"}, "strict": true}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "q", "citations": null, "private_note": "x"},
                {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}},
                {"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}]}),
        &[
            "content block `text` field `private_note`",
            "tools[] field `strict`",
            "content block `image`",
        ],
        &["field `citations`", "content block `image` field"],
    );
    named_in(
        Api::Responses,
        json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "q", "annotations": []},
            {"type": "input_image", "image_url": "https://x/a.png", "file_id": "file_1"}]},
            {"type": "function_call", "id": "fc_1", "status": "completed", "call_id": "c1",
             "name": "f", "arguments": "{}", "namespace": "n"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
            "tools": [{"type": "function", "name": "f", "strict": true,
                       "parameters": {"type": "object"}}]}),
        &[
            "input[0].content part `input_image` field `file_id`",
            "tools[0] field `strict`",
        ],
        &["field `annotations`"],
    );
}
