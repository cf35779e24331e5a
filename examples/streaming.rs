//! A typed OpenAI stream through a palisade stack: tokens printed as they
//! arrive, time to first token, and the final message rebuilt by the
//! aggregator (text, finish reason, usage). Runs against the mock upstream,
//! which sends one word every 20 ms.
//!
//! Run with `cargo run --example streaming`.

use std::io::Write;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use palisade::client::HttpClient;
use palisade::core::{BoxError, RequestBody};
use palisade::mock::{MockUpstream, Reply};
use palisade::providers::{OpenAiAggregator, OpenAiItem, decode_openai};
use palisade::retry::RetryLayer;
use palisade::sse::EventStream;
use palisade::timeout::TimeoutLayer;
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mock = MockUpstream::new();
    mock.set_default(Reply::echo().delay_per_token(Duration::from_millis(20)));
    let upstream = mock.serve().await?;

    let client = ServiceBuilder::new()
        .layer(TimeoutLayer::new().total(Duration::from_secs(60)))
        .layer(RetryLayer::new())
        // A stream that goes quiet for 5 s (heartbeats do not count) fails.
        .layer(
            TimeoutLayer::new()
                .first_byte(Duration::from_secs(10))
                .idle(Duration::from_secs(5))
                .sse_aware(true),
        )
        .service(
            HttpClient::builder()
                .base_url(upstream.base_url())
                .build()?,
        );

    let body = json!({
        "model": "mock",
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "streams arrive one typed chunk at a time"}],
    });
    let started = Instant::now();
    let req = http::Request::post("/chat/completions").body(RequestBody::json(&body))?;
    let res = client.oneshot(req).await?;
    println!("status {} after {:?}", res.status(), started.elapsed());

    let mut events = EventStream::new(res.into_body());
    let mut aggregate = OpenAiAggregator::new();
    let mut first_token = None;
    while let Some(event) = events.next().await {
        // A broken stream, an oversized event or an in-band `{"error":…}`
        // ends the loop with a typed error.
        let item = decode_openai(&event?)?;
        if let OpenAiItem::Chunk(chunk) = &item {
            for choice in &chunk.choices {
                if let Some(text) = choice.delta.content.get() {
                    if !text.is_empty() {
                        first_token.get_or_insert_with(|| started.elapsed());
                        print!("{text}");
                        std::io::stdout().flush()?;
                    }
                }
            }
        }
        aggregate.push(item);
    }
    println!();
    if let Some(ttft) = first_token {
        println!(
            "time to first token: {ttft:?}; whole stream: {:?}",
            started.elapsed()
        );
    }
    // `finish` reports a stream that ended without `data: [DONE]` as truncated.
    let message = aggregate.finish()?;
    let choice = &message.choices[0];
    println!(
        "final message: {:?}, finish reason {:?}, usage {:?}",
        choice.message.content,
        choice.finish_reason,
        message.usage.get()
    );
    Ok(())
}
