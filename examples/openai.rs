//! A real call to OpenAI through a palisade stack, when `OPENAI_API_KEY` is
//! set (the key is read into a `secrecy` wrapper and never printed). Without
//! the key it says so and exits 0, so CI can run it.
//!
//! Run with `OPENAI_API_KEY=… cargo run --example openai` (optionally
//! `OPENAI_MODEL`, default `gpt-4o-mini`; `OPENAI_BASE_URL` for any
//! OpenAI-compatible server).

use std::time::Duration;

use http_body_util::BodyExt;
use palisade::breaker::BreakerLayer;
use palisade::client::{Auth, HttpClient, KeySource};
use palisade::core::{BoxError, RequestBody};
use palisade::retry::RetryLayer;
use palisade::schema::SchemaLayer;
use palisade::timeout::TimeoutLayer;
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if std::env::var_os("OPENAI_API_KEY").is_none_or(|k| k.is_empty()) {
        println!(
            "OPENAI_API_KEY is not set: nothing to call. Set it to make a real call (see the comment at the top of examples/openai.rs)."
        );
        return Ok(());
    }
    let base =
        std::env::var("OPENAI_BASE_URL").unwrap_or_else(|_| "https://api.openai.com/v1".to_owned());
    let model = std::env::var("OPENAI_MODEL").unwrap_or_else(|_| "gpt-4o-mini".to_owned());
    let client = HttpClient::builder()
        .base_url(base)
        .auth(Auth::openai(KeySource::env("OPENAI_API_KEY")))
        .build()?;
    let llm = ServiceBuilder::new()
        .layer(SchemaLayer::openai())
        .layer(TimeoutLayer::new().total(Duration::from_secs(120)))
        .layer(RetryLayer::new().max_attempts(3))
        .layer(BreakerLayer::builder().build()?)
        .layer(
            TimeoutLayer::new()
                .first_byte(Duration::from_secs(30))
                .idle(Duration::from_secs(30))
                .sse_aware(true),
        )
        .service(client);
    let body = json!({
        "model": model,
        "max_completion_tokens": 64,
        "messages": [{"role": "user", "content": "Say hello to palisade in five words."}],
    });
    let req = http::Request::post("/chat/completions").body(RequestBody::json(&body))?;
    let res = llm.oneshot(req).await?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    let reply: Value = serde_json::from_slice(&bytes)?;
    if !status.is_success() {
        println!("OpenAI answered {status}: {}", reply["error"]["message"]);
        return Ok(());
    }
    println!(
        "{}",
        reply["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
    );
    println!("usage: {}", reply["usage"]);
    Ok(())
}
