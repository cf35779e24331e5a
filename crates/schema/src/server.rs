//! [`SchemaServerLayer`]: the server-side check, answering 400/413 in the
//! provider's error format.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body;
use palisade_core::body::collect_limited;
use palisade_core::{BodyTooLarge, BoxError, ParsedBody, Rejected, RequestBody, find};
use palisade_providers::Api;
use tower_layer::Layer;
use tower_service::Service;

use crate::{Schema, SchemaLayer};

impl SchemaLayer {
    /// The server-side variant: reads the request body (refusing it past the
    /// limit with 413 before parsing), parses it once, validates it, and
    /// answers 400 listing every violation — both in `api`'s error format —
    /// without calling the inner service. A valid request goes on as a
    /// `Request<RequestBody>` carrying its [`ParsedBody`].
    ///
    /// ```
    /// use palisade_core::RequestBody;
    /// use palisade_providers::Api;
    /// use palisade_schema::SchemaLayer;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let svc = SchemaLayer::anthropic().respond_as(Api::Messages).layer(service_fn(
    ///     |_req: http::Request<RequestBody>| async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) },
    /// ));
    /// let req = http::Request::post("/v1/messages")
    ///     .body(http_body_util::Full::new(bytes::Bytes::from_static(br#"{"model":"claude-haiku-4-5","messages":[]}"#)))
    ///     .unwrap();
    /// let res = svc.oneshot(req).await.unwrap();
    /// assert_eq!(res.status(), 400);
    /// assert!(res.body().contains(r#""type":"invalid_request_error""#));
    /// assert!(res.body().contains("/max_tokens"));
    /// # }
    /// ```
    pub fn respond_as(self, api: Api) -> SchemaServerLayer {
        SchemaServerLayer {
            schema: self.schema,
            max_body_bytes: self.max_body_bytes,
            api,
        }
    }
}

/// Validates requests on the server side; see [`SchemaLayer::respond_as`].
#[derive(Clone, Debug)]
pub struct SchemaServerLayer {
    schema: Schema,
    max_body_bytes: usize,
    api: Api,
}

impl<S> Layer<S> for SchemaServerLayer {
    type Service = ValidateServer<S>;

    fn layer(&self, inner: S) -> ValidateServer<S> {
        ValidateServer {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`SchemaServerLayer`] builds.
#[derive(Clone, Debug)]
pub struct ValidateServer<S> {
    inner: S,
    layer: SchemaServerLayer,
}

/// The boxed future of [`ValidateServer`] (it reads the request body).
pub type ServerFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

fn error_response<R: From<String>>(
    api: Api,
    status: StatusCode,
    message: &str,
    param: Option<&str>,
) -> Response<R> {
    let mut res = Response::new(R::from(api.error_json(status, message, param).to_string()));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// The 400 answer for `rejected`, in `api`'s format: the message of
/// [`rejection_message`], the first violation's pointer as `param`.
pub fn rejection_response<R: From<String>>(api: Api, rejected: &Rejected) -> Response<R> {
    error_response(
        api,
        StatusCode::BAD_REQUEST,
        &rejection_message(rejected),
        rejection_param(rejected),
    )
}

/// The message of a 400 for `rejected`: `invalid request: ` and every
/// violation, `pointer: message`, joined by `; `.
pub fn rejection_message(rejected: &Rejected) -> String {
    let message = rejected
        .violations()
        .iter()
        .map(|v| {
            if v.pointer().is_empty() {
                v.message().to_owned()
            } else {
                format!("{}: {}", v.pointer(), v.message())
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!("invalid request: {message}")
}

/// The first violation's JSON pointer, when it has one (`param` in
/// OpenAI's error format).
pub fn rejection_param(rejected: &Rejected) -> Option<&str> {
    rejected
        .violations()
        .first()
        .map(|v| v.pointer())
        .filter(|p| !p.is_empty())
}

impl<S, B, R> Service<Request<B>> for ValidateServer<S>
where
    S: Service<Request<RequestBody>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    R: From<String> + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ServerFuture<Response<R>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The readied service handles this request; the clone left behind
        // must be readied again (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let api = layer.api;
            let limit = layer.max_body_bytes;
            let too_large = || {
                error_response(
                    api,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "the request body is over the limit of {limit} bytes; send a smaller request"
                    ),
                    None,
                )
            };
            let (parts, body) = req.into_parts();
            // A declared Content-Length over the limit (the body's size hint)
            // is refused before anything is read.
            let bytes = match collect_limited(body, limit).await {
                Ok(b) => b,
                Err(e) if find::<BodyTooLarge>(&*e).is_some() => return Ok(too_large()),
                Err(e) => {
                    return Ok(error_response(
                        api,
                        StatusCode::BAD_REQUEST,
                        &format!("could not read the request body: {e}"),
                        None,
                    ));
                }
            };
            let parsed = match ParsedBody::parse(&bytes) {
                Ok(p) => p,
                Err(rejected) => return Ok(rejection_response(api, &rejected)),
            };
            if let Err(rejected) = layer.schema.check(parsed.value()) {
                return Ok(rejection_response(api, &rejected));
            }
            let mut req = Request::from_parts(parts, RequestBody::new(bytes));
            req.extensions_mut().insert(parsed);
            inner.call(req).await
        })
    }
}
