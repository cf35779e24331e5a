//! Every palisade layer, stacked by hand in the recommended order — trace →
//! schema → total timeout → retry → rate limit (requests, then tokens) →
//! breaker → per-attempt timeout → client — against the built-in mock
//! upstream: a JSON call and a streamed call, no API key needed. (The
//! `palisade` crate docs say why this order; `preset::StackConfig` builds
//! the same stack from one config struct.)
//!
//! Run with `cargo run --example basic`.

use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::BodyExt;
use palisade::breaker::BreakerLayer;
use palisade::client::HttpClient;
use palisade::core::{BoxError, RequestBody};
use palisade::mock::MockUpstream;
use palisade::providers::{Api, OpenAiStream};
use palisade::ratelimit::{RateLimitLayer, TokenLimitLayer};
use palisade::retry::RetryLayer;
use palisade::schema::SchemaLayer;
use palisade::timeout::TimeoutLayer;
use palisade::trace::TraceLayer;
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
        // Trace ids upstream and a GenAI span per call.
        .layer(TraceLayer::new().api(Api::ChatCompletions))
        // Refuse a malformed request before it costs anything.
        .layer(SchemaLayer::openai())
        // The whole call, retries and the streamed body included.
        .layer(TimeoutLayer::new().total(Duration::from_secs(120)))
        // Retries that honour the provider's wait hints.
        .layer(RetryLayer::new().max_attempts(3))
        // 600 requests and 100,000 tokens a minute, refused at once beyond.
        .layer(RateLimitLayer::try_new(600, 10.0)?.reject())
        .layer(TokenLimitLayer::per_minute(100_000)?.reject())
        // Stop calling an upstream that keeps failing.
        .layer(BreakerLayer::builder().build()?)
        // Each attempt: its first byte, and silence between events.
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

    // A streamed call: print each chunk's text as it arrives.
    let body = json!({"model": "mock", "stream": true,
                      "messages": [{"role": "user", "content": "tokens arrive one by one"}]});
    let req = http::Request::post("/chat/completions").body(RequestBody::json(&body))?;
    let res = client.oneshot(req).await?;
    let mut chunks = OpenAiStream::new(Box::pin(res.into_body()));
    print!("stream:");
    while let Some(chunk) = chunks.next().await {
        print!("{}", chunk?.text());
    }
    println!();
    Ok(())
}
