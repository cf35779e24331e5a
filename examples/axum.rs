//! The layers inside an axum app: a small service that answers questions by
//! calling an LLM through a palisade stack kept in the app state (a named,
//! cloneable service), with palisade-schema's server-side layer validating
//! the app's own OpenAI-compatible endpoint.
//!
//! The example serves the app on a free port, calls it twice (a good request
//! and a bad one) and exits, so CI can run it: `cargo run --example axum`.

use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use http_body_util::BodyExt;
use palisade::client::HttpClient;
use palisade::core::{BoxError, BoxLlmService, LlmService, ParsedBody, RequestBody};
use palisade::mock::MockUpstream;
use palisade::providers::Api;
use palisade::retry::RetryLayer;
use palisade::schema::SchemaLayer;
use palisade::timeout::TimeoutLayer;
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};

#[derive(Clone)]
struct AppState {
    /// Any palisade stack, type-erased so it fits in a struct field.
    llm: BoxLlmService,
}

/// `GET /ask?q=…`: one question, one answer.
async fn ask(
    State(state): State<AppState>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Result<String, (StatusCode, String)> {
    let q = q.unwrap_or_default();
    let question = q.strip_prefix("q=").unwrap_or(&q).replace('+', " ");
    let body = json!({"model": "mock", "messages": [{"role": "user", "content": question}]});
    let req = http::Request::post("/chat/completions")
        .body(RequestBody::json(&body))
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // palisade errors say what failed; map them to a 502 for the caller.
    let bad_gateway = |e: BoxError| (StatusCode::BAD_GATEWAY, e.to_string());
    let res = state.llm.oneshot(req).await.map_err(bad_gateway)?;
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(bad_gateway)?
        .to_bytes();
    let reply: Value = serde_json::from_slice(&bytes).map_err(|e| bad_gateway(e.into()))?;
    Ok(reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// `POST /v1/chat/completions`: reached only by bodies the schema layer let
/// through; the parsed body is in the extensions (no second parse).
async fn completions(req: http::Request<RequestBody>) -> Json<Value> {
    let model = ParsedBody::of(&req)
        .and_then(|p| p.model())
        .unwrap_or("?")
        .to_owned();
    Json(json!({"object": "chat.completion", "model": model, "choices": []}))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let upstream = MockUpstream::new().serve().await?;
    let stack = ServiceBuilder::new()
        .layer(TimeoutLayer::new().total(Duration::from_secs(60)))
        .layer(RetryLayer::new())
        .layer(TimeoutLayer::new().first_byte(Duration::from_secs(10)))
        .service(
            HttpClient::builder()
                .base_url(upstream.base_url())
                .build()?,
        );
    let state = AppState {
        llm: stack.boxed_llm(),
    };

    let validated = tower::service_fn(|req: http::Request<RequestBody>| async move {
        Ok::<_, std::convert::Infallible>(axum::response::IntoResponse::into_response(
            completions(req).await,
        ))
    });
    let app = Router::new()
        .route("/ask", get(ask))
        .route_service(
            "/v1/chat/completions",
            ServiceBuilder::new()
                .layer(
                    SchemaLayer::openai()
                        .max_body_bytes(1 << 20)
                        .respond_as(Api::ChatCompletions),
                )
                .service(validated),
        )
        .route("/healthz", post(|| async { "ok" }))
        .with_state(state);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("app on http://{addr}");

    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let res = http
        .get(format!("http://{addr}/ask?q=what+is+palisade").parse()?)
        .await?;
    let text = res.into_body().collect().await?.to_bytes();
    println!("GET /ask → {}", String::from_utf8_lossy(&text));

    let bad = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":7}]}"#,
        )))?;
    let res = http.request(bad).await?;
    let status = res.status();
    let text = res.into_body().collect().await?.to_bytes();
    println!(
        "POST /v1/chat/completions (bad) → {status} {}",
        String::from_utf8_lossy(&text)
    );
    server.abort();
    Ok(())
}
