//! [`SchemaLayer`] / [`Validate`]: the client-side check.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Request;
use palisade_core::{BodyTooLarge, BoxError, ParsedBody};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::Schema;

/// The default body limit: 32 MiB (the providers' own request limit).
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Validates request bodies against a [`Schema`] before they go further.
///
/// For bodies already in memory (`B: AsRef<[u8]>`, as
/// [`palisade_core::RequestBody`]): the size is checked first
/// ([`BodyTooLarge`]), then the body is parsed **once** — or the
/// [`ParsedBody`] an earlier layer stored is reused — and the parsed value
/// is stored in the request's extensions for the layers after this one
/// (token estimation, routing). A body that does not match fails with
/// [`palisade_core::Rejected`] listing every violation with its JSON pointer,
/// and the inner service is never called.
///
/// For a server (a request body still streaming in, an answer in the
/// provider's error format), see [`SchemaLayer::respond_as`].
///
/// # Example
///
/// ```
/// use palisade_core::{ErrorKind, RequestBody};
/// use palisade_schema::SchemaLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = SchemaLayer::openai().layer(service_fn(|_req: http::Request<RequestBody>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(()))
/// }));
/// let req = http::Request::post("/chat/completions")
///     .body(RequestBody::from(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":7}]}"#))
///     .unwrap();
/// let err = svc.oneshot(req).await.unwrap_err();
/// assert_eq!(ErrorKind::of(&*err), Some(ErrorKind::InvalidRequest));
/// assert!(err.to_string().contains("/messages/0/content"));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SchemaLayer {
    pub(crate) schema: Schema,
    pub(crate) max_body_bytes: usize,
}

impl SchemaLayer {
    /// Validates against `schema`.
    pub fn new(schema: Schema) -> Self {
        Self {
            schema,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Validates OpenAI chat completions requests ([`Schema::openai_chat`]).
    pub fn openai() -> Self {
        Self::new(Schema::openai_chat())
    }

    /// Validates Anthropic messages requests
    /// ([`Schema::anthropic_messages`]).
    pub fn anthropic() -> Self {
        Self::new(Schema::anthropic_messages())
    }

    /// Validates OpenAI Responses API requests
    /// ([`Schema::openai_responses`]).
    pub fn responses() -> Self {
        Self::new(Schema::openai_responses())
    }

    /// Validates OpenAI embeddings requests ([`Schema::openai_embeddings`]).
    pub fn embeddings() -> Self {
        Self::new(Schema::openai_embeddings())
    }

    /// Refuses bodies over `n` bytes before parsing them.
    #[must_use]
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
}

impl<S> Layer<S> for SchemaLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Validate<S> {
        Validate {
            inner,
            schema: self.schema.clone(),
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// The service [`SchemaLayer`] builds.
#[derive(Clone, Debug)]
pub struct Validate<S> {
    inner: S,
    schema: Schema,
    max_body_bytes: usize,
}

impl<S> Validate<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<Request<B>> for Validate<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    B: AsRef<[u8]>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if req.body().as_ref().len() > self.max_body_bytes {
            return ResponseFuture::failed(BodyTooLarge::new(self.max_body_bytes).into());
        }
        let parsed = match ParsedBody::get_or_parse(&mut req) {
            Ok(p) => p,
            Err(rejected) => return ResponseFuture::failed(rejected.into()),
        };
        if let Err(rejected) = self.schema.check(parsed.value()) {
            return ResponseFuture::failed(rejected.into());
        }
        ResponseFuture {
            state: State::Called {
                fut: self.inner.call(req),
            },
        }
    }
}

pin_project! {
    /// The future of [`Validate`]: the inner call, or the refusal.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Called { #[pin] fut: F },
        Failed { err: Option<BoxError> },
    }
}

impl<F> ResponseFuture<F> {
    fn failed(err: BoxError) -> Self {
        Self {
            state: State::Failed { err: Some(err) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { fut } => fut.poll(cx).map_err(Into::into),
            StateProj::Failed { err } => Poll::Ready(Err(err
                .take()
                .unwrap_or_else(|| "palisade-schema: future polled after completion".into()))),
        }
    }
}
