//! A reqwest-middleware client with a palisade stack in its chain, against
//! palisade-mock on loopback: a chat completion, a streamed one, a 429
//! retried by the stack, and a circuit breaker that opens — each checked,
//! so CI runs this as a test.
//!
//! ```sh
//! cargo run -p palisade-reqwest --example reqwest_middleware
//! ```

use std::time::Duration;

use palisade::core::{BoxError, CircuitOpen, find};
use palisade::mock::{MockUpstream, Reply};
use palisade::preset::{LlmStack, StackConfig};
use palisade_reqwest::middleware::{Forward, PalisadeMiddleware};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

fn client(stack: LlmStack) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(PalisadeMiddleware::new(stack))
        .build()
}

/// POSTs a chat request; the status and the whole body.
async fn chat(
    client: &ClientWithMiddleware,
    url: &str,
    text: &str,
    stream: bool,
) -> Result<(u16, String), reqwest_middleware::Error> {
    let body = serde_json::json!({
        "model": "mock",
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    });
    let mut res = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = res.status().as_u16();
    let mut out = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        out.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&out).into_owned()))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mock = MockUpstream::new();
    let server = mock.serve().await?;
    let url = format!("{}/chat/completions", server.base_url());
    let stack = StackConfig::openai()
        .no_key()
        .base_delay(Duration::from_millis(5))
        .build_over(Forward::new())?;
    let http = client(stack);

    // 1. A chat completion.
    let (status, body) = chat(&http, &url, "hello palisade", false).await?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(status, 200);
    assert_eq!(v["choices"][0]["message"]["content"], "hello palisade");
    println!("chat: {}", v["choices"][0]["message"]["content"]);

    // 2. A streamed one, read as it comes.
    let (status, body) = chat(&http, &url, "one two three", true).await?;
    assert_eq!(status, 200);
    let text: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "one two three");
    assert!(body.trim_end().ends_with("data: [DONE]"));
    println!("stream: {text:?}");

    // 3. A 429 with a wait hint: the stack waits and sends it down the
    //    chain again; the caller sees only the answer.
    let before = mock.request_count();
    mock.push(Reply::status(429).header("retry-after-ms", "20"));
    let (status, _) = chat(&http, &url, "after a 429", false).await?;
    assert_eq!(status, 200);
    assert_eq!(mock.request_count() - before, 2, "one 429, one retry");
    println!("429 retried: 2 upstream calls, 1 answer");

    // 4. A breaker that opens: calls refused without going down the chain,
    //    with palisade's typed error inside reqwest-middleware's.
    let stack = StackConfig::openai()
        .no_key()
        .max_attempts(1)
        .minimum_calls(2)
        .window(4)
        .failure_rate(0.5)
        .build_over(Forward::new())?;
    let fragile = client(stack);
    mock.set_default(Reply::status(500));
    let mut open = None;
    for _ in 0..10 {
        match chat(&fragile, &url, "x", false).await {
            Err(reqwest_middleware::Error::Middleware(e))
                if find::<CircuitOpen>(e.as_ref()).is_some() =>
            {
                open = Some(e);
                break;
            }
            Ok((500, _)) => {} // the failures the breaker counts
            other => return Err(format!("unexpected: {other:?}").into()),
        }
    }
    let open = open.ok_or("the breaker did not open after 10 failures")?;
    println!("breaker open: {open}");
    let calls = mock.request_count();
    assert!(chat(&fragile, &url, "x", false).await.is_err());
    assert_eq!(mock.request_count(), calls, "an open circuit calls nobody");
    println!("ok");
    Ok(())
}
