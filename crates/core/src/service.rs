//! [`LlmService`]: what every palisade stack is, in one bound.

use std::future::Future;

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::{BoxError, RequestBody};

/// A service that sends an LLM request and answers the HTTP response: any
/// palisade stack, whatever its layers — the preset's `LlmStack`, a
/// `ServiceBuilder` over `palisade_client::HttpClient`, a mock.
///
/// One bound instead of a where-clause of six lines; implemented for every
/// service that fits. Its [`Body`](LlmService::Body) is the answer's body,
/// read frame by frame (streams included).
///
/// ```
/// use http_body_util::BodyExt;
/// use palisade_core::{BoxError, LlmService, RequestBody};
/// use tower::ServiceExt;
///
/// /// Any stack will do.
/// async fn ask(llm: impl LlmService, question: &str) -> Result<String, BoxError> {
///     let body = serde_json::json!({"model": "mock", "messages": [{"role": "user", "content": question}]});
///     let req = http::Request::post("/chat/completions").body(RequestBody::json(&body))?;
///     let res = llm.oneshot(req).await?;
///     let bytes = res.into_body().collect().await.map_err(Into::<BoxError>::into)?.to_bytes();
///     Ok(String::from_utf8_lossy(&bytes).into_owned())
/// }
/// # let echo = tower::service_fn(|req: http::Request<RequestBody>| async move {
/// #     Ok::<_, BoxError>(http::Response::new(http_body_util::Full::new(req.into_body().into_bytes())))
/// # });
/// # let answer = tokio::runtime::Builder::new_current_thread().build()?.block_on(ask(echo, "hi"))?;
/// # assert!(answer.contains("hi"));
/// # Ok::<(), BoxError>(())
/// ```
pub trait LlmService:
    tower::Service<
        http::Request<RequestBody>,
        Response = http::Response<<Self as LlmService>::Body>,
        Error = BoxError,
        Future = <Self as LlmService>::Future,
    > + Clone
    + Send
    + 'static
{
    /// The answer's body.
    type Body: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
    /// The call's future.
    type Future: Future<Output = Result<http::Response<<Self as LlmService>::Body>, BoxError>>
        + Send
        + 'static;

    /// This stack, type-erased: one type for any stack, to keep in a struct
    /// field or an axum state (its body boxed as [`BoxLlmBody`]).
    ///
    /// It needs the stack to be `Sync` too, as axum's state does: every
    /// palisade stack is, but a generic parameter must say so —
    /// `impl LlmService + Sync`:
    ///
    /// ```
    /// use palisade_core::{BoxLlmService, LlmService};
    ///
    /// fn keep(llm: impl LlmService + Sync) -> BoxLlmService {
    ///     llm.boxed_llm()
    /// }
    /// # let echo = tower::service_fn(|req: http::Request<palisade_core::RequestBody>| async move {
    /// #     Ok::<_, palisade_core::BoxError>(http::Response::new(http_body_util::Full::new(req.into_body().into_bytes())))
    /// # });
    /// # let _ = keep(echo);
    /// ```
    ///
    /// ```
    /// use palisade_core::{BoxError, BoxLlmService, LlmService, RequestBody};
    ///
    /// struct App {
    ///     llm: BoxLlmService,
    /// }
    /// let echo = tower::service_fn(|req: http::Request<RequestBody>| async move {
    ///     Ok::<_, BoxError>(http::Response::new(http_body_util::Full::new(req.into_body().into_bytes())))
    /// });
    /// let app = App { llm: echo.boxed_llm() };
    /// # let _ = app.llm;
    /// ```
    fn boxed_llm(self) -> BoxLlmService
    where
        Self: Sync + Sized,
    {
        BoxCloneSyncService::new(
            self.map_response(|res| res.map(|b| b.map_err(Into::<BoxError>::into).boxed_unsync())),
        )
    }
}

/// The body of a [`BoxLlmService`]'s answer: any stack's body, boxed.
pub type BoxLlmBody = UnsyncBoxBody<Bytes, BoxError>;

/// Any stack, type-erased ([`LlmService::boxed_llm`]).
pub type BoxLlmService =
    BoxCloneSyncService<http::Request<RequestBody>, http::Response<BoxLlmBody>, BoxError>;

impl<S, B> LlmService for S
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<B>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
    type Future = S::Future;
}
