//! API keys: where they come from and how they reach the upstream.
//!
//! A key is wrapped in [`secrecy`] from the moment it is read and only ever
//! leaves that wrapper as an HTTP header value marked *sensitive* (so hyper,
//! h2 and `Debug` output print `Sensitive` instead of it). It is never logged,
//! never put in an error message.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use crate::config::ConfigError;

/// The largest key file read (64 KiB): a key is far smaller; anything larger
/// is the wrong file.
pub const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// The default interval between re-reads of a key file (1 s).
pub const DEFAULT_KEY_REFRESH: Duration = Duration::from_secs(1);

/// Keys shorter than this are never scrubbed out of answers
/// ([`HttpClient::redact`](crate::HttpClient::redact)): real providers'
/// keys are far longer, and local servers (vLLM, Ollama) take `EMPTY`, `x`
/// or `k`, which occur in every answer.
pub const MIN_SCRUBBED_KEY_LEN: usize = 8;

/// The `anthropic-version` sent by [`Auth::anthropic`].
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// An API key. `Debug` prints `ApiKey([REDACTED])`.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    /// Wraps a key given in code (prefer [`KeySource::env`] or
    /// [`KeySource::file`]: a key in source code ends up in version control).
    pub fn new(key: impl Into<String>) -> Self {
        Self(SecretString::from(key.into()))
    }

    /// The key itself, for the rare caller that must see it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

/// Where an API key is read from.
///
/// # Example
///
/// ```
/// use palisade_client::{Auth, KeySource};
///
/// let auth = Auth::openai(KeySource::env("OPENAI_API_KEY"));
/// let rotated = Auth::anthropic(KeySource::file("/run/secrets/anthropic-key"));
/// # let _ = (auth, rotated);
/// ```
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A key given in code.
    Literal(ApiKey),
    /// An environment variable, read once when the client is built.
    Env(String),
    /// A file, read when the client is built and re-read (at most once per
    /// `refresh`) so that a rotated key is picked up without a restart.
    /// Surrounding whitespace (a trailing newline) is ignored.
    File {
        /// The file.
        path: PathBuf,
        /// The minimum time between two reads.
        refresh: Duration,
    },
}

impl KeySource {
    /// A key given in code.
    pub fn literal(key: impl Into<String>) -> Self {
        Self::Literal(ApiKey::new(key))
    }

    /// The environment variable `name`.
    pub fn env(name: impl Into<String>) -> Self {
        Self::Env(name.into())
    }

    /// The file at `path`, re-read at most every [`DEFAULT_KEY_REFRESH`].
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File {
            path: path.into(),
            refresh: DEFAULT_KEY_REFRESH,
        }
    }

    /// The file at `path`, re-read at most every `refresh` (zero: before
    /// every request).
    pub fn file_refreshed_every(path: impl Into<PathBuf>, refresh: Duration) -> Self {
        Self::File {
            path: path.into(),
            refresh,
        }
    }
}

/// How a key is presented to the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthStyle {
    /// `Authorization: Bearer KEY` (OpenAI and every OpenAI-compatible API).
    Bearer,
    /// `x-api-key: KEY` plus `anthropic-version: VERSION` (Anthropic).
    Anthropic {
        /// The `anthropic-version` header's value.
        version: String,
    },
    /// `NAME: KEY` (e.g. Azure OpenAI's `api-key`).
    Header(HeaderName),
}

/// A key source plus the way it is presented.
#[derive(Clone, Debug)]
pub struct Auth {
    source: KeySource,
    style: AuthStyle,
}

impl Auth {
    /// A key presented in `style`.
    pub fn new(source: KeySource, style: AuthStyle) -> Self {
        Self { source, style }
    }

    /// OpenAI style: `Authorization: Bearer KEY`.
    pub fn openai(source: KeySource) -> Self {
        Self::new(source, AuthStyle::Bearer)
    }

    /// Anthropic style: `x-api-key: KEY` and `anthropic-version: 2023-06-01`.
    pub fn anthropic(source: KeySource) -> Self {
        Self::new(
            source,
            AuthStyle::Anthropic {
                version: ANTHROPIC_VERSION.to_owned(),
            },
        )
    }

    /// The key source.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The presentation.
    pub fn style(&self) -> &AuthStyle {
        &self.style
    }
}

/// The resolved key, ready to be injected into requests.
pub(crate) struct Injector {
    style: AuthStyle,
    name: HeaderName,
    /// The header value holding the key (sensitive), for a key that never
    /// changes (literal, env): no lock on the request path.
    fixed: HeaderValue,
    extra: Option<(HeaderName, HeaderValue)>,
    file: Option<FileState>,
}

struct FileState {
    /// The current header value of a rotating key.
    current: RwLock<HeaderValue>,
    path: PathBuf,
    refresh: Duration,
    origin: Instant,
    /// Milliseconds after `origin` of the last read.
    last_read_ms: AtomicU64,
}

impl fmt::Debug for Injector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Injector")
            .field("header", &self.name)
            .field("key", &"[REDACTED]")
            .field("file", &self.file.as_ref().map(|s| &s.path))
            .finish()
    }
}

impl Injector {
    pub(crate) fn new(auth: &Auth) -> Result<Arc<Self>, ConfigError> {
        let (key, file) = match &auth.source {
            KeySource::Literal(k) => (k.clone(), None),
            KeySource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => (ApiKey::new(v.trim()), None),
                Ok(_) => {
                    return Err(ConfigError::key(format!(
                        "the API key variable `{var}` is empty; set it to the key"
                    )));
                }
                Err(std::env::VarError::NotPresent) => {
                    return Err(ConfigError::key(format!(
                        "the API key variable `{var}` is not set; export it or use another key source"
                    )));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(ConfigError::key(format!(
                        "the API key variable `{var}` is not valid UTF-8"
                    )));
                }
            },
            KeySource::File { path, refresh } => {
                let key = read_key_file(path).map_err(ConfigError::key)?;
                let state = FileState {
                    current: RwLock::new(HeaderValue::from_static("")),
                    path: path.clone(),
                    refresh: *refresh,
                    origin: Instant::now(),
                    last_read_ms: AtomicU64::new(0),
                };
                (key, Some(state))
            }
        };
        let (name, extra) = match &auth.style {
            AuthStyle::Bearer => (http::header::AUTHORIZATION, None),
            AuthStyle::Anthropic { version } => {
                let v = HeaderValue::from_str(version).map_err(|_| {
                    ConfigError::key(format!(
                        "anthropic-version `{version}` is not a valid header value"
                    ))
                })?;
                (
                    HeaderName::from_static("x-api-key"),
                    Some((HeaderName::from_static("anthropic-version"), v)),
                )
            }
            AuthStyle::Header(n) => (n.clone(), None),
        };
        let value = header_value(&auth.style, &key).map_err(|()| {
            ConfigError::key(format!(
                "the API key from {} contains characters not allowed in an HTTP header",
                describe(&auth.source)
            ))
        })?;
        if let Some(f) = &file {
            *f.current.write().unwrap_or_else(PoisonError::into_inner) = value.clone();
        }
        Ok(Arc::new(Self {
            style: auth.style.clone(),
            name,
            fixed: value,
            extra,
            file,
        }))
    }

    /// Sets the auth headers on `headers`, replacing any the caller set.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        let value = match &self.file {
            Some(file) => {
                self.maybe_refresh(file);
                file.current
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            }
            None => self.fixed.clone(),
        };
        headers.insert(self.name.clone(), value);
        if let Some((n, v)) = &self.extra {
            headers.insert(n.clone(), v.clone());
        }
    }

    /// A fingerprint of the current key (to tell when its source changed).
    pub(crate) fn fingerprint(&self) -> u64 {
        if let Some(file) = &self.file {
            self.maybe_refresh(file);
        }
        crate::pool::fingerprint(self.current().as_bytes())
    }

    /// The current header value (re-read from the file when due for it).
    fn current(&self) -> HeaderValue {
        match &self.file {
            Some(file) => file
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            None => self.fixed.clone(),
        }
    }

    /// The key itself in a header value (without `Bearer `).
    fn key_of<'v>(&self, value: &'v HeaderValue) -> &'v [u8] {
        let raw = value.as_bytes();
        match self.style {
            AuthStyle::Bearer => raw.strip_prefix(b"Bearer ").unwrap_or(raw),
            _ => raw,
        }
    }

    /// Whether the current key is shorter than [`MIN_SCRUBBED_KEY_LEN`]:
    /// too short to be a secret, so never scrubbed.
    pub(crate) fn too_short_to_scrub(&self) -> bool {
        let value = self.current();
        self.key_of(&value).len() < MIN_SCRUBBED_KEY_LEN
    }

    /// Replaces every occurrence of the current key in `text` with
    /// `[REDACTED]`, written plainly or JSON-escaped in any mix (`\/` for
    /// `/`, `\u0073` for `s`, `\"`, `\\`): the forms a caller decoding the
    /// JSON would read as the key. `None` when the key does not occur (the
    /// common case: one `memchr2` scan for the key's first byte and `\`),
    /// and always for a key shorter than [`MIN_SCRUBBED_KEY_LEN`]: local
    /// servers take `EMPTY` or `x`, and scrubbing those would rewrite every
    /// answer (`choices` → `ch[REDACTED]ices` for the key `o`).
    pub(crate) fn redact(&self, text: &[u8]) -> Option<Vec<u8>> {
        let value = self.current();
        let key = self.key_of(&value);
        if key.len() < MIN_SCRUBBED_KEY_LEN {
            return None;
        }
        let mut out: Option<Vec<u8>> = None;
        let mut last = 0;
        let mut at = 0;
        while let Some(i) = memchr::memchr2(key[0], b'\\', &text[at..]).map(|i| at + i) {
            match match_escaped(text, i, key) {
                Some(end) => {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(text.len()));
                    o.extend_from_slice(&text[last..i]);
                    o.extend_from_slice(b"[REDACTED]");
                    last = end;
                    at = end;
                }
                None => at = i + 1,
            }
        }
        let mut out = out?;
        out.extend_from_slice(&text[last..]);
        Some(out)
    }

    fn maybe_refresh(&self, file: &FileState) {
        let now_ms = u64::try_from(file.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = file.last_read_ms.load(Ordering::Relaxed);
        let due = now_ms.saturating_sub(last) >= file.refresh.as_millis() as u64;
        // One caller wins the right to re-read; the others use the current key.
        if !due
            || file
                .last_read_ms
                .compare_exchange(
                    last,
                    now_ms.max(last + 1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        // A small, bounded, local read at most once per `refresh`: cheaper
        // than handing it to a blocking thread.
        match read_key_file(&file.path) {
            Ok(key) => match header_value(&self.style, &key) {
                Ok(v) => {
                    let mut cur = file.current.write().unwrap_or_else(PoisonError::into_inner);
                    if *cur != v {
                        tracing::info!(path = %file.path.display(), "API key file changed; using the new key");
                        *cur = v;
                    }
                }
                Err(()) => tracing::warn!(
                    path = %file.path.display(),
                    "the API key file now holds characters not allowed in an HTTP header; keeping the previous key"
                ),
            },
            Err(why) => {
                tracing::warn!(path = %file.path.display(), "{why}; keeping the previous key")
            }
        }
    }
}

fn describe(source: &KeySource) -> String {
    match source {
        KeySource::Literal(_) => "the literal key".to_owned(),
        KeySource::Env(v) => format!("`${v}`"),
        KeySource::File { path, .. } => format!("`{}`", path.display()),
    }
}

fn header_value(style: &AuthStyle, key: &ApiKey) -> Result<HeaderValue, ()> {
    let mut v = match style {
        AuthStyle::Bearer => {
            // The temporary is zeroized when dropped.
            let s = SecretString::from(format!("Bearer {}", key.expose()));
            HeaderValue::from_str(s.expose_secret()).map_err(|_| ())?
        }
        _ => HeaderValue::from_str(key.expose()).map_err(|_| ())?,
    };
    v.set_sensitive(true);
    Ok(v)
}

/// Reads a key file; the error names the file, never its content.
fn read_key_file(path: &Path) -> Result<ApiKey, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the API key file `{shown}`: {e}"))?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "the API key file `{shown}` is {} bytes, over the {MAX_KEY_FILE_BYTES} byte limit; is it the right file?",
            meta.len()
        ));
    }
    let raw = SecretString::from(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the API key file `{shown}` as UTF-8 text: {e}"))?,
    );
    let key = raw.expose_secret().trim();
    if key.is_empty() {
        return Err(format!(
            "the API key file `{shown}` is empty; write the key into it"
        ));
    }
    Ok(ApiKey::new(key))
}

/// Where a match of `key` that starts at `text[at]` ends, each key byte
/// written plainly or as a JSON escape of it.
fn match_escaped(text: &[u8], at: usize, key: &[u8]) -> Option<usize> {
    let mut j = at;
    for &k in key {
        let c = *text.get(j)?;
        if c == k {
            j += 1;
            continue;
        }
        if c != b'\\' {
            return None;
        }
        match *text.get(j + 1)? {
            b'/' | b'"' | b'\\' if text[j + 1] == k => j += 2,
            b'u' => {
                let hex = std::str::from_utf8(text.get(j + 2..j + 6)?).ok()?;
                let code = u32::from_str_radix(hex, 16).ok()?;
                if !k.is_ascii() || code != u32::from(k) {
                    return None;
                }
                j += 6;
            }
            _ => return None,
        }
    }
    Some(j)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let k = ApiKey::new("test-key-do-not-print");
        assert_eq!(format!("{k:?}"), "ApiKey([REDACTED])");
        let src = KeySource::literal("test-key-do-not-print");
        let auth = Auth::openai(src);
        let inj = Injector::new(&auth).unwrap();
        for s in [format!("{auth:?}"), format!("{inj:?}")] {
            assert!(!s.contains("test-key-do-not-print"), "{s}");
        }
        let mut h = HeaderMap::new();
        inj.apply(&mut h);
        assert!(h["authorization"].is_sensitive());
        assert!(!format!("{h:?}").contains("test-key-do-not-print"));
    }

    #[test]
    fn keys_too_short_to_be_secrets_are_never_scrubbed() {
        let answer = br#"{"choices":[{"message":{"content":"EMPTY x k o"}}]}"#;
        for key in ["o", "x", "k", "EMPTY", "1234567"] {
            for auth in [
                Auth::openai(KeySource::literal(key)),
                Auth::anthropic(KeySource::literal(key)),
            ] {
                let inj = Injector::new(&auth).unwrap();
                assert!(inj.too_short_to_scrub(), "{key}");
                assert_eq!(inj.redact(answer), None, "{key}");
            }
        }
        let inj = Injector::new(&Auth::openai(KeySource::literal("12345678"))).unwrap();
        assert!(!inj.too_short_to_scrub());
        assert_eq!(
            inj.redact(b"key 12345678").as_deref(),
            Some(&b"key [REDACTED]"[..])
        );
    }

    #[test]
    fn redaction_finds_the_key_in_every_json_escaped_form() {
        let key = "test/key+x";
        let inj = Injector::new(&Auth::openai(KeySource::literal(key))).unwrap();
        let red = |t: &str| {
            inj.redact(t.as_bytes())
                .map(|v| String::from_utf8(v).unwrap())
        };
        for (text, want) in [
            ("bad key test/key+x.", "bad key [REDACTED]."),
            (
                r#"{"m":"bad key test\/key+x"}"#,
                r#"{"m":"bad key [REDACTED]"}"#,
            ),
            (r#""\u0074est\/key\u002Bx""#, r#""[REDACTED]""#),
            (
                r#""\u0074\u0065\u0073\u0074\u002f\u006b\u0065\u0079\u002b\u0078""#,
                r#""[REDACTED]""#,
            ),
            ("test/key+xtest/key+x", "[REDACTED][REDACTED]"),
            (r#"\\test/key+x"#, r#"\\[REDACTED]"#),
        ] {
            assert_eq!(red(text).as_deref(), Some(want), "{text}");
        }
        // Near misses are left alone.
        for text in [
            "test/key+",
            r#"test\/key\u002"#,
            r#"test\xkey+x"#,
            r#"test\u002fkey-x"#,
            "",
        ] {
            assert_eq!(red(text), None, "{text}");
        }
    }

    #[test]
    fn styles_put_the_key_in_the_right_headers() {
        let mut h = HeaderMap::new();
        Injector::new(&Auth::anthropic(KeySource::literal("k1")))
            .unwrap()
            .apply(&mut h);
        assert_eq!(h["x-api-key"], "k1");
        assert_eq!(h["anthropic-version"], ANTHROPIC_VERSION);
        assert!(!h.contains_key("authorization"));

        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer client-supplied"),
        );
        Injector::new(&Auth::openai(KeySource::literal("k2")))
            .unwrap()
            .apply(&mut h);
        assert_eq!(
            h["authorization"], "Bearer k2",
            "the configured key replaces the caller's"
        );

        let mut h = HeaderMap::new();
        let azure = Auth::new(
            KeySource::literal("k3"),
            AuthStyle::Header(HeaderName::from_static("api-key")),
        );
        Injector::new(&azure).unwrap().apply(&mut h);
        assert_eq!(h["api-key"], "k3");
    }

    #[test]
    fn missing_sources_are_clear_errors_without_the_key() {
        let err = Injector::new(&Auth::openai(KeySource::env(
            "PALISADE_TEST_SURELY_UNSET_VAR",
        )))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("PALISADE_TEST_SURELY_UNSET_VAR") && err.contains("not set"),
            "{err}"
        );

        let err = Injector::new(&Auth::openai(KeySource::file("/nonexistent/palisade/key")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/palisade/key"), "{err}");

        let err = Injector::new(&Auth::openai(KeySource::literal("bad\nkey-secret-part")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not allowed") && !err.contains("secret-part"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn file_key_is_re_read_only_after_the_refresh_interval() {
        let dir = std::env::temp_dir().join(format!("palisade-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("interval-key");
        std::fs::write(&path, "first-key\n").unwrap();
        let auth = Auth::openai(KeySource::file_refreshed_every(
            &path,
            Duration::from_secs(10),
        ));
        let inj = Injector::new(&auth).unwrap();
        let current = || {
            let mut h = HeaderMap::new();
            inj.apply(&mut h);
            h["authorization"].to_str().unwrap().to_owned()
        };
        assert_eq!(current(), "Bearer first-key");
        std::fs::write(&path, "second-key").unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            current(),
            "Bearer first-key",
            "not re-read before the interval"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(current(), "Bearer second-key");
        // A broken file keeps the last good key.
        std::fs::write(&path, "").unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(current(), "Bearer second-key");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
