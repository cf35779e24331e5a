//! The mock upstream as a tower `Service`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use palisade_core::body::collect_limited;
use palisade_core::{BodyTooLarge, BoxError};

use crate::body::{MockBody, Words, reset_error};
use crate::script::{Fault, Reply};
use crate::wire::{self, Dialect, ReplyMeta};

/// The largest request body the mock reads (32 MiB, the gateway's default);
/// larger ones get a 413.
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// How many requests the record keeps (the newest); the count covers all.
pub const MAX_RECORDED: usize = 10_000;

/// A request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The method.
    pub method: Method,
    /// The URI (path and query; absolute when the caller sent one).
    pub uri: Uri,
    /// Every header, as received.
    pub headers: HeaderMap,
    /// The whole body (empty when it could not be read).
    pub body: Bytes,
    /// Which connection it arrived on, when served on a socket (1, 2, …).
    pub connection: Option<u64>,
}

impl RecordedRequest {
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Which connection a request arrived on; set by [`crate::MockServer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnectionId(pub(crate) u64);

#[derive(Debug, Default)]
struct State {
    script: VecDeque<Reply>,
    default: Reply,
    recorded: VecDeque<RecordedRequest>,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    requests: AtomicU64,
    pub(crate) connections: AtomicUsize,
    /// Streamed replies dropped before their end.
    pub(crate) cut: AtomicU64,
}

/// A scriptable mock LLM upstream speaking OpenAI chat completions,
/// Anthropic messages, OpenAI's Responses API and embeddings.
///
/// Routes by path suffix: `…/chat/completions` (OpenAI), `…/messages`
/// (Anthropic), `…/responses`, `…/embeddings`, `GET …/models`; anything
/// else is a 404. Each request takes the
/// next [`Reply`] pushed with [`push`](Self::push), or the default reply
/// (echo, unless changed with [`set_default`](Self::set_default)). Every
/// request is recorded.
///
/// Use it in-process as a tower `Service`, or on a socket with
/// [`serve`](Self::serve).
///
/// # Clone
///
/// Clones share the script, the record and the counters.
///
/// # Example
///
/// ```
/// use palisade_mock::{MockUpstream, Reply};
/// use tower::ServiceExt;
/// use http_body_util::BodyExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mock = MockUpstream::new();
/// mock.push(Reply::status(503));
/// let req = || http::Request::post("/v1/chat/completions")
///     .body(http_body_util::Full::new(bytes::Bytes::from_static(
///         br#"{"model":"mock","messages":[{"role":"user","content":"hello world"}]}"#,
///     )))
///     .unwrap();
/// let res = mock.clone().oneshot(req()).await.unwrap();
/// assert_eq!(res.status(), 503);
/// let res = mock.clone().oneshot(req()).await.unwrap();
/// let body = res.into_body().collect().await.unwrap().to_bytes();
/// let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(json["choices"][0]["message"]["content"], "hello world");
/// assert_eq!(mock.request_count(), 2);
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MockUpstream {
    pub(crate) shared: Arc<Shared>,
}

impl MockUpstream {
    /// A mock that echoes.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state invalid
        // (every critical section is a push or pop), so poisoning is ignored.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a reply for the next request not yet answered by a queued one.
    pub fn push(&self, reply: Reply) {
        self.state().script.push_back(reply);
    }

    /// Queues several replies, in order.
    pub fn push_all(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state().script.extend(replies);
    }

    /// Replaces the reply used when the queue is empty.
    pub fn set_default(&self, reply: Reply) {
        self.state().default = reply;
    }

    /// How many queued replies are left.
    pub fn pending_replies(&self) -> usize {
        self.state().script.len()
    }

    /// How many requests have arrived.
    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// How many connections were accepted (when served on a socket).
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// How many streamed replies were dropped before their end: the client
    /// went away (over a socket, closed the connection or reset the
    /// stream) before the last event was sent.
    pub fn cut_streams(&self) -> u64 {
        self.shared.cut.load(Ordering::Relaxed)
    }

    /// The recorded requests, oldest first (at most [`MAX_RECORDED`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().recorded.iter().cloned().collect()
    }

    /// The most recent request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.state().recorded.back().cloned()
    }

    fn record(&self, req: RecordedRequest) -> u64 {
        let n = self.shared.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let mut st = self.state();
        if st.recorded.len() >= MAX_RECORDED {
            st.recorded.pop_front();
        }
        st.recorded.push_back(req);
        n
    }

    fn next_reply(&self) -> Reply {
        let mut st = self.state();
        match st.script.pop_front() {
            Some(r) => r,
            None => st.default.clone(),
        }
    }

    async fn handle(
        self,
        parts: http::request::Parts,
        body: Result<Bytes, BoxError>,
    ) -> Result<Response<MockBody>, BoxError> {
        let read_error = body.as_ref().err().map(|e| {
            let status = if e.is::<BodyTooLarge>() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, e.to_string())
        });
        let body = body.unwrap_or_default();
        let n = self.record(RecordedRequest {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
            connection: parts.extensions.get::<ConnectionId>().map(|c| c.0),
        });
        let path = parts.uri.path().trim_end_matches('/');
        let mut embeddings = false;
        let dialect = if path.ends_with("/chat/completions") {
            Dialect::OpenAi
        } else if path.ends_with("/messages") {
            Dialect::Anthropic
        } else if path.ends_with("/responses") {
            Dialect::Responses
        } else if path.ends_with("/embeddings") {
            embeddings = true;
            Dialect::OpenAi
        } else if path.ends_with("/models") && parts.method == Method::GET {
            return Ok(json_response(StatusCode::OK, wire::models_body()));
        } else {
            let msg = format!(
                "palisade-mock: no route for {} {}; use POST /v1/chat/completions, /v1/messages, /v1/responses or /v1/embeddings",
                parts.method, path
            );
            return Ok(json_response(
                StatusCode::NOT_FOUND,
                wire::error_body(Dialect::OpenAi, StatusCode::NOT_FOUND, &msg),
            ));
        };

        let reply = self.next_reply();
        if !reply.before_headers.is_zero() {
            tokio::time::sleep(reply.before_headers).await;
        }
        if let Some((0, fault)) = &reply.fault {
            match fault {
                Fault::Reset => return Err(reset_error().into()),
                Fault::Stall => std::future::pending::<()>().await,
                _ => {}
            }
        }

        let mut res = if let Some((status, err)) = read_error {
            let msg = format!("palisade-mock: could not read the request body: {err}");
            json_response(status, wire::error_body(dialect, status, &msg))
        } else if let Some(status) = reply.status.filter(|s| !s.is_success()) {
            let body = reply.body.clone().unwrap_or_else(|| {
                wire::error_body(dialect, status, &wire::status_message(status))
            });
            json_response(status, body)
        } else if let Some(raw) = reply.body.clone() {
            json_response(reply.status.unwrap_or(StatusCode::OK), raw)
        } else if embeddings {
            match wire::parse_embeddings(&body) {
                Err(msg) => json_response(
                    StatusCode::BAD_REQUEST,
                    wire::error_body(dialect, StatusCode::BAD_REQUEST, &msg),
                ),
                Ok(req) => json_reply(dialect, wire::embeddings_reply(&req), &reply),
            }
        } else {
            match wire::parse_request(&body) {
                Err(msg) => json_response(
                    StatusCode::BAD_REQUEST,
                    wire::error_body(dialect, StatusCode::BAD_REQUEST, &msg),
                ),
                Ok(chat) => chat_response(dialect, n, chat, &reply),
            }
        };
        res.body_mut().count_cut(Arc::clone(&self.shared));
        let request_id_header = match dialect {
            Dialect::OpenAi | Dialect::Responses => "x-request-id",
            Dialect::Anthropic => "request-id",
        };
        if let Ok(v) = HeaderValue::from_str(&format!("req_mock_{n}")) {
            res.headers_mut().insert(request_id_header, v);
        }
        for (k, v) in &reply.headers {
            res.headers_mut().insert(k.clone(), v.clone());
        }
        Ok(res)
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut res = Response::new(MockBody::full(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn chat_response(
    dialect: Dialect,
    n: u64,
    chat: wire::ChatRequest,
    reply: &Reply,
) -> Response<MockBody> {
    let (words, available) = match reply.words {
        Some(k) => (Words::Generated, k),
        None => {
            let k = chat.words.len();
            (Words::Echo(chat.words.into()), k)
        }
    };
    let completion = available.min(chat.max_tokens.unwrap_or(usize::MAX));
    let meta = ReplyMeta {
        dialect,
        id: match dialect {
            Dialect::OpenAi => format!("chatcmpl-mock-{n}"),
            Dialect::Anthropic => format!("msg_mock_{n}"),
            Dialect::Responses => format!("resp_mock_{n}"),
        },
        model: chat.model,
        created: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        prompt_tokens: chat.prompt_tokens,
        completion_tokens: completion,
        truncated: completion < available,
        include_usage: chat.include_usage,
    };
    if let Some(call) = &chat.call
        && reply.fault.is_none()
    {
        let body = wire::tool_call_reply(&meta, call, chat.stream);
        let mut res = json_response(reply.status.unwrap_or(StatusCode::OK), body);
        if chat.stream {
            let h = res.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        return res;
    }
    if chat.stream {
        let mut res = Response::new(MockBody::stream(
            &meta,
            words,
            reply.per_token,
            reply.fault.clone(),
        ));
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return res;
    }
    json_reply(
        dialect,
        wire::json_reply(&meta, &words.text(completion)),
        reply,
    )
}

/// A whole JSON reply, with the reply's fault if it has one that applies
/// to a JSON body (a reset, stall or truncation halfway, malformed JSON, an
/// error body with a 200).
fn json_reply(dialect: Dialect, full: Bytes, reply: &Reply) -> Response<MockBody> {
    let len = full.len();
    let mut res = match &reply.fault {
        None => json_response(StatusCode::OK, full),
        Some((_, Fault::MalformedJson)) => json_response(StatusCode::OK, full.slice(..len / 2)),
        Some((_, Fault::InbandError)) => {
            let status = StatusCode::INTERNAL_SERVER_ERROR;
            json_response(
                StatusCode::OK,
                wire::error_body(dialect, status, &wire::status_message(status)),
            )
        }
        Some((_, f @ (Fault::Reset | Fault::Stall | Fault::Truncate))) => {
            let mut res = json_response(StatusCode::OK, Bytes::new());
            *res.body_mut() = MockBody::broken(&full, f.clone());
            res.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
            res
        }
        // Stream-only faults do not apply to a JSON reply.
        Some(_) => json_response(StatusCode::OK, full),
    };
    *res.status_mut() = reply.status.unwrap_or(StatusCode::OK);
    res
}

/// The future of [`MockUpstream`]'s `call` (boxed: this is a test double,
/// not a hot path).
pub type MockFuture =
    Pin<Box<dyn Future<Output = Result<Response<MockBody>, BoxError>> + Send + 'static>>;

impl<B> tower_service::Service<Request<B>> for MockUpstream
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<MockBody>;
    type Error = BoxError;
    type Future = MockFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> MockFuture {
        let this = self.clone();
        let (parts, body) = req.into_parts();
        Box::pin(async move {
            let body = collect_limited(body, MAX_REQUEST_BYTES).await;
            this.handle(parts, body).await
        })
    }
}
