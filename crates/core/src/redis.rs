//! [`RedisConnection`]: the connection to Redis of each layer that keeps a
//! fleet's state there (feature `redis`): the rate limits' buckets
//! (palisade-ratelimit), the breaker's shared circuit (palisade-breaker),
//! and the gateway's shared provider-limit state — one type, each with a
//! connection of its own.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// One Redis, reached over a multiplexed connection made on first use
/// (connecting bounded by a timeout) and made anew after a failure. Its URL
/// is shown without a password.
pub struct RedisConnection {
    client: redis::Client,
    shown: String,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("redis", &self.shown)
            .finish_non_exhaustive()
    }
}

/// A Redis URL that cannot be used; names the URL without its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRedisUrl(String);

impl fmt::Display for InvalidRedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidRedisUrl {}

impl RedisConnection {
    /// The Redis at `url` (`redis://host:port/db`); nothing connects yet.
    ///
    /// # Errors
    ///
    /// [`InvalidRedisUrl`] for a URL Redis cannot parse (named without its
    /// password).
    pub fn open(url: &str) -> Result<Self, InvalidRedisUrl> {
        let shown = shown_url(url);
        let client = redis::Client::open(url)
            .map_err(|e| InvalidRedisUrl(format!("the Redis URL {shown} is invalid: {e}")))?;
        Ok(Self {
            client,
            shown,
            conn: Mutex::new(None),
        })
    }

    /// Its URL, without a password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The connection, made now (within `timeout`) if there is none.
    ///
    /// # Errors
    ///
    /// Why it could not be made, naming no password.
    pub async fn get(&self, timeout: Duration) -> Result<MultiplexedConnection, String> {
        let cached = self
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(c) = cached {
            return Ok(c);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let conn = tokio::time::timeout(
            timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| format!("connecting took over {timeout:?}"))?
        .map_err(|e| format!("cannot connect within {timeout:?}: {e}"))?;
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the connection (after a failure): the next [`get`](Self::get)
    /// makes a new one.
    pub fn forget(&self) {
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// `url` without a password: the scheme and what follows the last `@`.
pub fn shown_url(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://{host}"),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            shown_url("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://10.0.0.1:6379/0"
        );
        assert_eq!(
            shown_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        let err = RedisConnection::open("redis://:hunter2@[bad").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
