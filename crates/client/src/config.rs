//! Building an [`HttpClient`](crate::HttpClient): settings, defaults, errors.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::key::Auth;

/// Which HTTP versions the client speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpVersion {
    /// HTTP/2 when the server offers it over TLS (ALPN), otherwise HTTP/1.1.
    /// Cleartext `http://` upstreams get HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1Only,
    /// HTTP/2 only: over TLS via ALPN, over cleartext with prior knowledge
    /// (h2c), as vLLM or an internal gateway may require.
    Http2Only,
}

/// The settings of an [`HttpClient`](crate::HttpClient), with their defaults.
///
/// | setting | default | why |
/// |---|---|---|
/// | `base_url` | none: requests must carry absolute URIs | |
/// | `auth` | none: no key injected | |
/// | `key_pool` | none | several keys of one account or deployment, each with its own limit state |
/// | `connect_timeout` | 10 s | a dead host fails fast; first-byte and total budgets belong to the timeout layer |
/// | `tcp_nodelay` | on | small request/response frames must not wait for Nagle |
/// | `tcp_keepalive` | 60 s | long streams survive idle NAT/load-balancer paths |
/// | `pool_idle_timeout` | 90 s | below the 120 s+ idle timeouts of the big providers' load balancers |
/// | `pool_max_idle_per_host` | 64 | enough for bursts without hoarding sockets |
/// | `http_version` | [`HttpVersion::Auto`] | h2 via ALPN where offered |
/// | `read_buffer` | 8 KiB ([`DEFAULT_READ_BUFFER`]) | HTTP/1.1 reads of exactly this size: a stream whose reader stopped holds one buffer, not hyper's adaptive buffer grown to 400 KiB by a fast upstream |
/// | HTTP/2 flow control | adaptive windows | sized from the measured bandwidth-delay product, not hyper's fixed 2 MiB per stream and 5 MiB per connection, which a stream nobody reads would fill |
/// | `user_agent` | `palisade/<version>` | set only when the request has none |
/// | `content-type` | `application/json` | set only on requests with a body and none set |
/// | TLS | rustls, `ring` provider, Mozilla roots (webpki-roots), TLS 1.2 + 1.3 | pure Rust, no system OpenSSL, builds offline |
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    pub(crate) base_url: Option<String>,
    pub(crate) auth: Option<Auth>,
    pub(crate) key_pool: Vec<Auth>,
    pub(crate) key_rests: Option<crate::pool::KeyRests>,
    pub(crate) default_headers: HeaderMap,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) tcp_nodelay: bool,
    pub(crate) tcp_keepalive: Option<Duration>,
    pub(crate) pool_idle_timeout: Option<Duration>,
    pub(crate) pool_max_idle_per_host: usize,
    pub(crate) http_version: HttpVersion,
    pub(crate) read_buffer: usize,
    pub(crate) user_agent: Option<String>,
    pub(crate) header_errors: Vec<String>,
}

/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default TCP keepalive.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// The default idle timeout of pooled connections.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The default number of idle connections kept per host.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 64;
/// The default size of an HTTP/1.1 read (8 KiB).
pub const DEFAULT_READ_BUFFER: usize = 8 * 1024;

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            base_url: None,
            auth: None,
            key_pool: Vec::new(),
            key_rests: None,
            default_headers: HeaderMap::new(),
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            tcp_nodelay: true,
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            pool_idle_timeout: Some(DEFAULT_POOL_IDLE_TIMEOUT),
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
            http_version: HttpVersion::Auto,
            read_buffer: DEFAULT_READ_BUFFER,
            user_agent: Some(concat!("palisade/", env!("CARGO_PKG_VERSION")).to_owned()),
            header_errors: Vec::new(),
        }
    }
}

impl ClientBuilder {
    /// A builder with the defaults of the table above.
    pub fn new() -> Self {
        Self::default()
    }

    /// The base URL relative request URIs are joined under, e.g.
    /// `https://api.openai.com/v1`: a request for `/chat/completions` goes to
    /// `https://api.openai.com/v1/chat/completions`. Requests with an absolute
    /// URI are sent as they are. Checked by [`build`](Self::build).
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The key to inject into every request (see [`Auth`]); it replaces any
    /// `Authorization` / `x-api-key` the caller set.
    #[must_use]
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Several keys for one upstream (several keys of one account, or of
    /// one deployment), instead of [`auth`](Self::auth): each call takes
    /// the next key that can take it, in turn. A key answered 401 or 403
    /// is retired until its source gives another key (a rotated file); a
    /// key answered 429 rests for the provider's wait hint (1 s without
    /// one). The refused call is sent again at once with another key that
    /// can take it — no sleep, and the layers above (a retry layer) see one
    /// call. With none left, the call goes with the key that rests the
    /// shortest, and the upstream's answer is the answer. Keys are never
    /// logged; [`HttpClient::redact`](crate::HttpClient::redact) scrubs all
    /// of them.
    #[must_use]
    pub fn key_pool(mut self, keys: Vec<Auth>) -> Self {
        self.key_pool = keys;
        self
    }

    /// Keeps the [`key_pool`](Self::key_pool)'s rest state in `rests`
    /// instead of a state of its own: clients built with clones of one
    /// [`KeyRests`](crate::KeyRests) (one per worker thread, say) share
    /// which keys rest, and code outside can read it and rest keys it
    /// learned of elsewhere (a fleet sharing them through Redis).
    /// [`build`](Self::build) fails when its size is not the pool's.
    #[must_use]
    pub fn key_rests(mut self, rests: crate::pool::KeyRests) -> Self {
        self.key_rests = Some(rests);
        self
    }

    /// A header added to every request that does not already have it.
    /// Invalid names or values are reported by [`build`](Self::build).
    #[must_use]
    pub fn default_header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(v)) => {
                self.default_headers.insert(n, v);
            }
            _ => self.header_errors.push(format!(
                "default header `{name}` has an invalid name or value"
            )),
        }
        self
    }

    /// The TCP connect timeout (`None`: the OS's, often minutes).
    #[must_use]
    pub fn connect_timeout(mut self, d: Option<Duration>) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Whether to disable Nagle's algorithm.
    #[must_use]
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.tcp_nodelay = on;
        self
    }

    /// The TCP keepalive idle time (`None`: off).
    #[must_use]
    pub fn tcp_keepalive(mut self, d: Option<Duration>) -> Self {
        self.tcp_keepalive = d;
        self
    }

    /// How long an idle pooled connection is kept (`None`: forever).
    #[must_use]
    pub fn pool_idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.pool_idle_timeout = d;
        self
    }

    /// How many idle connections are kept per host (0 disables pooling).
    #[must_use]
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_max_idle_per_host = n;
        self
    }

    /// The size of each HTTP/1.1 read, in bytes (at least 8 KiB, hyper's
    /// smallest; smaller values count as 8 KiB). Larger reads take fewer
    /// system calls for very large answers; each stream whose reader has
    /// stopped holds one such buffer.
    #[must_use]
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = bytes.max(DEFAULT_READ_BUFFER);
        self
    }

    /// Which HTTP versions to speak.
    #[must_use]
    pub fn http_version(mut self, v: HttpVersion) -> Self {
        self.http_version = v;
        self
    }

    /// The `user-agent` set on requests without one (`None`: none).
    #[must_use]
    pub fn user_agent(mut self, ua: Option<String>) -> Self {
        self.user_agent = ua;
        self
    }
}

/// A client setting was invalid; the message names the setting and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    pub(crate) fn new(message: String) -> Self {
        Self { message }
    }

    pub(crate) fn key(message: String) -> Self {
        Self::new(message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}
