//! A palisade stack (total timeout → retry → breaker → per-attempt timeout →
//! client) against the built-in mock upstream: a JSON call and a streamed
//! call, no API key needed.
//!
//! Run with `cargo run --example basic`.

use std::time::Duration;

use http_body_util::BodyExt;
use palisade::breaker::BreakerLayer;
use palisade::client::HttpClient;
use palisade::core::{BoxError, RequestBody};
use palisade::mock::MockUpstream;
use palisade::retry::RetryLayer;
use palisade::timeout::TimeoutLayer;
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // A mock OpenAI/Anthropic upstream on a free loopback port.
    let upstream = MockUpstream::new().serve().await?;
    println!("mock upstream at {}", upstream.base_url());

    // Against a real provider, add `.auth(Auth::openai(KeySource::env("OPENAI_API_KEY")))`.
    let http = HttpClient::builder()
        .base_url(upstream.base_url())
        .build()?;
    let client = ServiceBuilder::new()
        .layer(TimeoutLayer::new().total(Duration::from_secs(120)))
        .layer(RetryLayer::new().max_attempts(3))
        .layer(BreakerLayer::builder().build()?)
        .layer(
            TimeoutLayer::new()
                .first_byte(Duration::from_secs(30))
                .idle(Duration::from_secs(15))
                .sse_aware(true),
        )
        .service(http);

    // A JSON call.
    let body =
        json!({"model": "mock", "messages": [{"role": "user", "content": "Hello from palisade"}]});
    let req = http::Request::post("/chat/completions").body(RequestBody::json(&body))?;
    let res = client.clone().oneshot(req).await?;
    let reply: Value = serde_json::from_slice(&res.into_body().collect().await?.to_bytes())?;
    println!("reply: {}", reply["choices"][0]["message"]["content"]);

    // A streamed call: print each SSE event's token as it arrives.
    let body = json!({"model": "mock", "stream": true, "max_tokens": 64,
                      "messages": [{"role": "user", "content": "tokens arrive one by one"}]});
    let req = http::Request::post("/messages").body(RequestBody::json(&body))?;
    let mut stream = client.oneshot(req).await?.into_body();
    print!("stream:");
    while let Some(frame) = stream.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        for line in String::from_utf8_lossy(&data).lines() {
            let Some(json) = line.strip_prefix("data: ") else {
                continue;
            };
            let event: Value = serde_json::from_str(json)?;
            if let Some(text) = event.pointer("/delta/text").and_then(Value::as_str) {
                print!("{text}");
            }
        }
    }
    println!();
    Ok(())
}
