//! [`HttpClient`]: the raw hyper client as a tower `Service`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use http_body::Body;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{self, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use palisade_core::{BoxError, RequestBody, TransportError, TransportKind, Violation};

use crate::config::{ClientBuilder, ConfigError, HttpVersion};
use crate::key::Injector;
use crate::pool::KeyPool;
use crate::reuse::{TrackingConnector, Uses, closed_while_idle};

type Connector = TrackingConnector<HttpsConnector<HttpConnector>>;

/// The raw hyper client at the bottom of a palisade stack: a
/// `Service<http::Request<B>>` answering `http::Response<hyper::body::Incoming>`.
///
/// Built with [`HttpClient::builder`]; see [`ClientBuilder`] for every setting
/// and its default. For each request it joins a relative URI under the base
/// URL, adds the default headers the request lacks, and injects the API key;
/// then hyper-util's pooled client sends it.
///
/// `poll_ready` is always ready (the pool queues internally), so the layers
/// above decide admission.
///
/// # Errors
///
/// A failed exchange is a [`TransportError`] whose
/// [`kind`](TransportError::kind) tells a refused connection, a connect
/// timeout, a TLS failure and a broken exchange apart (and so does
/// [`palisade_core::ErrorKind::of`]); the hyper error is its source. A relative
/// URI without a base URL is a [`palisade_core::Rejected`].
///
/// # Clone
///
/// Clones share the connection pool, the settings and the key.
///
/// # Example
///
/// ```no_run
/// use palisade_client::{Auth, HttpClient, KeySource};
/// use palisade_core::RequestBody;
/// use tower::ServiceExt;
///
/// # async fn run() -> Result<(), palisade_core::BoxError> {
/// let client = HttpClient::builder()
///     .base_url("https://api.openai.com/v1")
///     .auth(Auth::openai(KeySource::env("OPENAI_API_KEY")))
///     .build()?;
/// let req = http::Request::post("/chat/completions").body(RequestBody::from(
///     r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
/// ))?;
/// let res = client.oneshot(req).await?;
/// println!("{}", res.status());
/// # Ok(()) }
/// ```
pub struct HttpClient<B = RequestBody> {
    inner: legacy::Client<Connector, B>,
    shared: Arc<Shared>,
}

struct Shared {
    base: Option<Base>,
    default_headers: HeaderMap,
    user_agent: Option<HeaderValue>,
    auth: Option<Arc<Injector>>,
    pool: Option<Arc<KeyPool>>,
}

struct Base {
    scheme: Scheme,
    authority: Authority,
    /// The base path without its trailing slash (`""` or `"/v1"`).
    path: String,
    /// [`KNOWN_PATHS`] joined under the base once, at build time.
    known: Vec<(&'static str, Uri)>,
}

/// The endpoints whose joined URIs are computed once when the client is
/// built, so that a request to one of them costs no allocation for its URI.
/// Any other relative path is joined per request (two small allocations: the
/// path, and its promotion to a shared buffer when hyper clones the URI).
const KNOWN_PATHS: [&str; 7] = [
    "/chat/completions",
    "/messages",
    "/completions",
    "/responses",
    "/embeddings",
    "/models",
    "/messages/count_tokens",
];

impl<B> Clone for HttpClient<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<B> fmt::Debug for HttpClient<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self
            .shared
            .base
            .as_ref()
            .map(|b| format!("{}://{}{}", b.scheme, b.authority, b.path));
        f.debug_struct("HttpClient")
            .field("base_url", &base)
            .field("auth", &self.shared.auth)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A builder with the documented defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }
}

impl ClientBuilder {
    /// Builds a client for [`RequestBody`] requests.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting: an invalid base URL, a key source
    /// that cannot be read, an invalid default header.
    pub fn build(self) -> Result<HttpClient, ConfigError> {
        self.build_for_body()
    }

    /// Builds a client for requests with body type `B`.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_for_body<B>(self) -> Result<HttpClient<B>, ConfigError>
    where
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        if let Some(e) = self.header_errors.first() {
            return Err(ConfigError::new(e.clone()));
        }
        let base = self.base_url.as_deref().map(parse_base).transpose()?;
        let auth = self.auth.as_ref().map(Injector::new).transpose()?;
        let pool = if self.key_pool.is_empty() {
            None
        } else {
            if self.auth.is_some() {
                return Err(ConfigError::new(
                    "both `auth` and `key_pool` are set; give one".to_owned(),
                ));
            }
            Some(Arc::new(KeyPool::new(
                &self.key_pool,
                self.key_rests.clone(),
            )?))
        };
        let user_agent = self
            .user_agent
            .as_deref()
            .map(|ua| {
                HeaderValue::try_from(ua).map_err(|_| {
                    ConfigError::new(format!("user agent `{ua}` is not a valid header value"))
                })
            })
            .transpose()?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(self.connect_timeout);
        http.set_nodelay(self.tcp_nodelay);
        http.set_keepalive(self.tcp_keepalive);

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| ConfigError::new(format!("cannot set up TLS: {e}")))?
            .https_or_http();
        let connector = match self.http_version {
            HttpVersion::Http1Only => tls.enable_http1().wrap_connector(http),
            HttpVersion::Http2Only => tls.enable_http2().wrap_connector(http),
            HttpVersion::Auto => tls.enable_all_versions().wrap_connector(http),
        };

        let mut builder = legacy::Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(self.http_version == HttpVersion::Http2Only);
        // HTTP/1.1: reads of a fixed size, so the buffer of a stream whose
        // caller stopped reading does not grow to hyper's 400 KiB; HTTP/2:
        // windows sized from the measured bandwidth-delay product instead of
        // hyper's fixed 2 MiB per stream and 5 MiB per connection, which a
        // blocked stream filled (see `memory` example, blocked streams).
        builder
            .http1_read_buf_exact_size(self.read_buffer)
            .http2_adaptive_window(true);
        Ok(HttpClient {
            inner: builder.build(TrackingConnector(connector)),
            shared: Arc::new(Shared {
                base,
                default_headers: self.default_headers,
                user_agent,
                auth,
                pool,
            }),
        })
    }
}

fn parse_base(url: &str) -> Result<Base, ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(format!(
            "invalid base URL `{url}`: {why} (expected e.g. `https://api.openai.com/v1`)"
        ))
    };
    let uri: Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
    let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(bad("the scheme must be http or https"));
    }
    let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
    if uri.query().is_some() {
        return Err(bad("a base URL cannot have a query"));
    }
    let mut base = Base {
        scheme,
        authority,
        path: uri.path().trim_end_matches('/').to_owned(),
        known: Vec::new(),
    };
    for p in KNOWN_PATHS {
        let rel = Uri::from_static(p);
        let joined = join(&base, &rel).map_err(|e| bad(&e.to_string()))?;
        // Promote the buffer to a shared one now, so that later clones are
        // reference counts.
        drop(joined.clone());
        base.known.push((p, joined));
    }
    Ok(base)
}

impl<B> HttpClient<B> {
    /// `text` with every occurrence of this client's API key replaced by
    /// `[REDACTED]`, or `None` when the key does not occur in it (or the
    /// client has no key, or a key shorter than
    /// [`MIN_SCRUBBED_KEY_LEN`](crate::MIN_SCRUBBED_KEY_LEN), which is
    /// never scrubbed: see [`key_too_short_to_scrub`](Self::key_too_short_to_scrub)).
    ///
    /// For relaying what an upstream sent back: some APIs quote the key they
    /// were given in an error message, and a proxy must not hand that on.
    ///
    /// ```
    /// use palisade_client::{Auth, HttpClient, KeySource};
    ///
    /// let client = HttpClient::builder()
    ///     .base_url("http://127.0.0.1:9/v1")
    ///     .auth(Auth::openai(KeySource::literal("test-key-123")))
    ///     .build()
    ///     .unwrap();
    /// let scrubbed = client.redact(b"invalid key: test-key-123").unwrap();
    /// assert_eq!(scrubbed, b"invalid key: [REDACTED]");
    /// assert!(client.redact(b"no key here").is_none());
    /// ```
    pub fn redact(&self, text: &[u8]) -> Option<Vec<u8>> {
        if let Some(pool) = &self.shared.pool {
            return pool.redact(text);
        }
        self.shared.auth.as_ref()?.redact(text)
    }

    /// Whether this client has a key too short to be a secret (under
    /// [`MIN_SCRUBBED_KEY_LEN`](crate::MIN_SCRUBBED_KEY_LEN) bytes, like the
    /// `EMPTY` or `x` local servers take), which [`redact`](Self::redact)
    /// leaves in place: scrubbing it would rewrite answers. A proxy should
    /// warn at start-up, as the gateway does. False without a key.
    ///
    /// ```
    /// use palisade_client::{Auth, HttpClient, KeySource};
    ///
    /// let local = HttpClient::builder()
    ///     .base_url("http://127.0.0.1:9/v1")
    ///     .auth(Auth::openai(KeySource::literal("o")))
    ///     .build()
    ///     .unwrap();
    /// assert!(local.key_too_short_to_scrub());
    /// assert!(local.redact(br#"{"choices":[]}"#).is_none());
    /// ```
    pub fn key_too_short_to_scrub(&self) -> bool {
        self.shared
            .auth
            .as_ref()
            .is_some_and(|a| a.too_short_to_scrub())
            || self
                .shared
                .pool
                .as_ref()
                .is_some_and(|p| p.too_short_to_scrub())
    }

    /// Makes `req` ready to send: absolute URI, default headers, key.
    fn prepare(&self, req: &mut Request<B>) -> Result<(), BoxError>
    where
        B: Body,
    {
        let shared = &*self.shared;
        if req.uri().scheme().is_none() {
            let Some(base) = &shared.base else {
                return Err(palisade_core::Rejected::new(vec![Violation::new(
                    "",
                    format!(
                        "the request URI `{}` is relative and the client has no base URL; \
                         set one with `ClientBuilder::base_url` or send an absolute URI",
                        req.uri()
                    ),
                )])
                .into());
            };
            let rel = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
            *req.uri_mut() = match base.known.iter().find(|(p, _)| *p == rel) {
                Some((_, uri)) => uri.clone(),
                None => join(base, req.uri())?,
            };
        }
        let headers = req.headers_mut();
        for (name, value) in &shared.default_headers {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        if let Some(ua) = &shared.user_agent
            && !headers.contains_key(USER_AGENT)
        {
            headers.insert(USER_AGENT, ua.clone());
        }
        if let Some(auth) = &shared.auth {
            auth.apply(headers);
        }
        if !req.body().is_end_stream() && !req.headers().contains_key(CONTENT_TYPE) {
            req.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(())
    }
}

/// `base` + the request's path and query.
fn join(base: &Base, rel: &Uri) -> Result<Uri, BoxError> {
    let rel_pq = rel.path_and_query().map_or("/", PathAndQuery::as_str);
    let slash = if rel_pq.starts_with('/') { "" } else { "/" };
    // Exact capacity: `Bytes::from(String)` reallocates when len != capacity.
    let mut joined = String::with_capacity(base.path.len() + slash.len() + rel_pq.len());
    joined.push_str(&base.path);
    joined.push_str(slash);
    joined.push_str(rel_pq);
    let pq = PathAndQuery::from_maybe_shared(Bytes::from(joined))?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(base.scheme.clone());
    parts.authority = Some(base.authority.clone());
    parts.path_and_query = Some(pq);
    Ok(Uri::from_parts(parts)?)
}

/// Tells what part of the transport a hyper-util error came from.
fn transport_kind(err: &legacy::Error) -> TransportKind {
    if closed_while_idle(err) {
        return TransportKind::StaleConnection;
    }
    for e in palisade_core::chain(err) {
        if e.is::<rustls::Error>() {
            return TransportKind::Tls;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return TransportKind::ConnectRefused,
                std::io::ErrorKind::TimedOut if err.is_connect() => {
                    return TransportKind::ConnectTimeout;
                }
                _ => {}
            }
        }
    }
    if err.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Protocol
    }
}

/// The future of [`HttpClient`]'s `call`.
pub struct ResponseFuture<B = RequestBody> {
    state: State,
    /// With a key pool: the key this call went with, and what it needs to
    /// go again with another.
    pooled: Option<Pooled<B>>,
}

struct Pooled<B> {
    pool: Arc<KeyPool>,
    key: usize,
    /// The keys that refused it (a bit per key).
    tried: u64,
    /// A copy of the request, to send again with another key.
    spare: Option<Request<B>>,
    client: legacy::Client<Connector, B>,
}

enum State {
    Failed(Option<BoxError>),
    Sending {
        fut: legacy::ResponseFuture,
        authority: Option<Authority>,
    },
}

impl<B> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<B> Future for ResponseFuture<B>
where
    B: Body + Clone + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let (fut, authority) = match &mut this.state {
                State::Failed(err) => {
                    return Poll::Ready(Err(err.take().unwrap_or_else(|| {
                        "palisade-client: response future polled after completion".into()
                    })));
                }
                State::Sending { fut, authority } => (fut, authority),
            };
            let res = match Pin::new(fut).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    let kind = transport_kind(&e);
                    let mut err = TransportError::new(kind, e);
                    if let Some(a) = authority.take() {
                        err = err.with_upstream(a.as_str());
                    }
                    return Poll::Ready(Err(err.into()));
                }
                Poll::Ready(Ok(res)) => res,
            };
            // One more answer on this connection: from now on it is a
            // reused one (see the `reuse` module).
            if let Some(uses) = res.extensions().get::<Uses>() {
                uses.answered();
            }
            // A pooled key refused (401/403/429): another key takes the
            // call at once when one can.
            if let Some(p) = &mut this.pooled
                && p.pool.report(p.key, res.status(), res.headers())
            {
                if p.key < 64 {
                    p.tried |= 1 << p.key;
                }
                if let Some(next) = p.pool.other(p.tried)
                    && let Some(mut req) = p.spare.take()
                {
                    p.pool.apply(next, req.headers_mut());
                    p.key = next;
                    p.spare = Some(req.clone());
                    let authority = req.uri().authority().cloned();
                    this.state = State::Sending {
                        fut: p.client.request(req),
                        authority,
                    };
                    continue;
                }
            }
            return Poll::Ready(Ok(res));
        }
    }
}

impl<B> tower_service::Service<Request<B>> for HttpClient<B>
where
    B: Body + Clone + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture<B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> ResponseFuture<B> {
        if let Err(e) = self.prepare(&mut req) {
            return ResponseFuture {
                state: State::Failed(Some(e)),
                pooled: None,
            };
        }
        let mut pooled = None;
        if let Some(pool) = &self.shared.pool {
            let Some(key) = pool.pick(0) else {
                return ResponseFuture {
                    state: State::Failed(Some(
                        format!(
                            "every key of this client's pool of {} was refused (401 or 403) and is retired until its source gives another key; check the keys, or rotate their files",
                            pool.len()
                        )
                        .into(),
                    )),
                    pooled: None,
                };
            };
            pool.apply(key, req.headers_mut());
            pooled = Some(Pooled {
                pool: Arc::clone(pool),
                key,
                tried: 0,
                spare: (pool.len() > 1).then(|| req.clone()),
                client: self.inner.clone(),
            });
        }
        let authority = req.uri().authority().cloned();
        ResponseFuture {
            state: State::Sending {
                fut: self.inner.request(req),
                authority,
            },
            pooled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        for bad in [
            "api.openai.com/v1",
            "ftp://x/v1",
            "https://x/v1?a=1",
            "not a url",
        ] {
            let err = parse_base(bad).err().expect(bad).to_string();
            assert!(err.contains(bad.trim()), "{err}");
        }
        let b = parse_base("https://api.openai.com/v1/").unwrap();
        assert_eq!(b.path, "/v1");
    }

    #[test]
    fn join_puts_the_path_under_the_base() {
        let b = parse_base("http://127.0.0.1:9/v1").unwrap();
        let j = |p: &str| join(&b, &p.parse().unwrap()).unwrap().to_string();
        assert_eq!(
            j("/chat/completions"),
            "http://127.0.0.1:9/v1/chat/completions"
        );
        assert_eq!(j("/models?limit=2"), "http://127.0.0.1:9/v1/models?limit=2");
        let root = parse_base("http://h").unwrap();
        assert_eq!(
            join(&root, &"/v1/messages".parse().unwrap())
                .unwrap()
                .to_string(),
            "http://h/v1/messages"
        );
    }
}
