//! async-openai over a palisade stack, against palisade-mock on loopback:
//! a chat completion, a streamed one, a 429 retried by the stack, and a
//! circuit breaker that opens — each checked, so CI runs this as a test.
//!
//! ```sh
//! cargo run -p palisade-reqwest --example async_openai
//! ```

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::CreateChatCompletionRequest;
use futures_util::StreamExt;
use palisade::core::{BoxError, CircuitOpen, find};
use palisade::mock::{MockUpstream, Reply};
use palisade::preset::StackConfig;
use palisade_reqwest::async_openai::PalisadeService;

fn request(text: &str) -> Result<CreateChatCompletionRequest, BoxError> {
    Ok(serde_json::from_value(serde_json::json!({
        "model": "mock",
        "messages": [{"role": "user", "content": text}],
    }))?)
}

/// An async-openai client whose calls go through `stack`.
fn client(base_url: &str, stack: palisade::preset::LlmStack) -> Client<OpenAIConfig> {
    let config = OpenAIConfig::new()
        .with_api_base(base_url)
        .with_api_key("not-a-real-key");
    Client::with_config(config).with_http_service(PalisadeService::new(stack))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mock = MockUpstream::new();
    let server = mock.serve().await?;
    let base = server.base_url();
    // async-openai sets the key; the stack sends what it was given.
    let stack = StackConfig::openai()
        .base_url(&base)
        .no_key()
        .base_delay(Duration::from_millis(5))
        .build()?;
    let openai = client(&base, stack);

    // 1. A chat completion.
    let answer = openai.chat().create(request("hello palisade")?).await?;
    let text = answer.choices[0]
        .message
        .content
        .clone()
        .unwrap_or_default();
    assert_eq!(text, "hello palisade");
    println!("chat: {text:?}");

    // 2. A streamed one, through async-openai's own SSE reader.
    let mut stream = openai
        .chat()
        .create_stream(request("one two three")?)
        .await?;
    let mut streamed = String::new();
    while let Some(chunk) = stream.next().await {
        for choice in chunk?.choices {
            streamed.push_str(choice.delta.content.as_deref().unwrap_or(""));
        }
    }
    assert_eq!(streamed, "one two three");
    println!("stream: {streamed:?}");

    // 3. A 429 with a wait hint: the stack waits and retries; the caller
    //    sees only the answer.
    let before = mock.request_count();
    mock.push(Reply::status(429).header("retry-after-ms", "20"));
    let answer = openai.chat().create(request("after a 429")?).await?;
    assert_eq!(
        answer.choices[0].message.content.as_deref(),
        Some("after a 429")
    );
    assert_eq!(mock.request_count() - before, 2, "one 429, one retry");
    println!("429 retried: 2 upstream calls, 1 answer");

    // 4. A breaker that opens: failures counted by the stack, then calls
    //    refused without reaching the upstream, as a typed error inside
    //    OpenAIError::Boxed.
    let stack = StackConfig::openai()
        .base_url(&base)
        .no_key()
        .max_attempts(1)
        .minimum_calls(2)
        .window(4)
        .failure_rate(0.5)
        .build()?;
    let fragile = client(&base, stack);
    mock.set_default(Reply::status(500));
    let mut open = None;
    for _ in 0..10 {
        match fragile.chat().create(request("x")?).await {
            Err(OpenAIError::Boxed(e)) if find::<CircuitOpen>(&*e).is_some() => {
                open = Some(e);
                break;
            }
            Err(_) => {} // the 500s, as async-openai reports them
            Ok(_) => return Err("a 500 cannot be an answer".into()),
        }
    }
    let open = open.ok_or("the breaker did not open after 10 failures")?;
    println!("breaker open: {open}");
    let calls = mock.request_count();
    assert!(fragile.chat().create(request("x")?).await.is_err());
    assert_eq!(mock.request_count(), calls, "an open circuit calls nobody");
    println!("ok");
    Ok(())
}
