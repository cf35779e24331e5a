//! [`OutputSchemaLayer`]: checks a structured output against the schema the
//! request asked for.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{Either, Full};
use palisade_core::body::collect_limited;
use palisade_core::{BoxError, InvalidOutput, ParsedBody, Violation};
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;

use crate::Schema;

/// Checks the answer of a request that asked for structured output
/// (OpenAI's `response_format: {"type": "json_schema", "json_schema":
/// {"schema": …}}`): every choice's `message.content` must be JSON matching
/// that schema, else the call fails with [`InvalidOutput`] (every violation
/// with its pointer into the output). Retry acts on it when told to
/// ([`palisade_core::classify::LlmClassifier::retry_invalid_output`]), so
/// place this layer **inside** retry.
///
/// Requests without such a schema, streamed requests and error statuses pass
/// untouched (`Either::Left`); a checked answer is read whole (at most
/// `max_body_bytes`, 16 MiB by default) and handed on as `Either::Right`.
/// The request's schema is compiled per call (tens of microseconds; only
/// requests that ask for structured output pay it).
///
/// ```
/// use palisade_core::classify::LlmClassifier;
/// use palisade_retry::RetryLayer;
/// use palisade_schema::OutputSchemaLayer;
/// use tower::ServiceBuilder;
/// # let client = tower::service_fn(|_: http::Request<palisade_core::RequestBody>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
/// # });
/// let stack = ServiceBuilder::new()
///     .layer(RetryLayer::new().classifier(LlmClassifier::new().retry_invalid_output(true)))
///     .layer(OutputSchemaLayer::new())
///     .service(client);
/// # let _ = stack;
/// ```
#[derive(Clone, Debug)]
pub struct OutputSchemaLayer {
    max_body_bytes: usize,
}

impl Default for OutputSchemaLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl OutputSchemaLayer {
    /// Checks outputs of up to 16 MiB.
    pub fn new() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
        }
    }

    /// The largest answer read to be checked.
    #[must_use]
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }
}

impl<S> Layer<S> for OutputSchemaLayer {
    type Service = CheckOutput<S>;

    fn layer(&self, inner: S) -> CheckOutput<S> {
        CheckOutput {
            inner,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// The service [`OutputSchemaLayer`] builds.
#[derive(Clone, Debug)]
pub struct CheckOutput<S> {
    inner: S,
    max_body_bytes: usize,
}

/// The boxed future of [`CheckOutput`] (it may read the answer whole).
pub type CheckFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'static>>;

/// The schema a request asks its output to match, if any.
fn requested_schema(parsed: &ParsedBody) -> Option<Schema> {
    if parsed.is_stream() {
        return None;
    }
    let v = parsed.value();
    if v.pointer("/response_format/type").and_then(Value::as_str) != Some("json_schema") {
        return None;
    }
    let schema = v.pointer("/response_format/json_schema/schema")?;
    Schema::new("response_format", schema).ok()
}

/// Checks every choice's content of an OpenAI chat completion.
fn check_answer(schema: &Schema, body: &[u8]) -> Result<(), InvalidOutput> {
    let answer: Value = serde_json::from_slice(body).map_err(|e| {
        InvalidOutput::new(vec![Violation::new(
            "",
            format!("the answer is not JSON: {e}"),
        )])
    })?;
    let choices = answer
        .get("choices")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, c) in choices.iter().enumerate() {
        // A refusal or a tool call carries no content to check.
        let Some(content) = c.pointer("/message/content").and_then(Value::as_str) else {
            continue;
        };
        match serde_json::from_str::<Value>(content) {
            Err(e) => out.push(Violation::new(
                format!("/choices/{i}/message/content"),
                format!("not JSON: {e}"),
            )),
            Ok(output) => {
                if let Err(r) = schema.check(&output) {
                    out.extend(r.violations().iter().map(|v| {
                        Violation::new(
                            format!("/choices/{i}/message/content{}", v.pointer()),
                            v.message(),
                        )
                    }));
                }
            }
        }
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(InvalidOutput::new(out))
    }
}

impl<S, B, RB> Service<Request<B>> for CheckOutput<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: AsRef<[u8]>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<Either<RB, Full<Bytes>>>;
    type Error = BoxError;
    type Future = CheckFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let schema = ParsedBody::get_or_parse(&mut req)
            .ok()
            .and_then(|p| requested_schema(&p));
        let fut = self.inner.call(req);
        let limit = self.max_body_bytes;
        Box::pin(async move {
            let res = fut.await.map_err(Into::into)?;
            let Some(schema) = schema.filter(|_| res.status().is_success()) else {
                return Ok(res.map(Either::Left));
            };
            let (parts, body) = res.into_parts();
            let bytes = collect_limited(body, limit).await?;
            check_answer(&schema, &bytes)?;
            Ok(Response::from_parts(parts, Either::Right(Full::new(bytes))))
        })
    }
}
