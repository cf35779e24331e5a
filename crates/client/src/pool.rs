//! A pool of keys for one upstream: each key with its own limit state.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, StatusCode};
use palisade_core::hint::provider_drain;

use crate::config::ConfigError;
use crate::key::{Auth, Injector};

/// How long a key answered 429 without any wait hint rests.
pub(crate) const DEFAULT_DRAIN: Duration = Duration::from_secs(1);

type RestHook = Arc<dyn Fn(usize, Duration) + Send + Sync>;

/// How long each key of a pool rests (its provider limit spent), shared:
/// by the clients of one upstream (one per worker thread), and with code
/// outside that learns of rests elsewhere — a fleet sharing them through
/// Redis ([`ClientBuilder::key_rests`](crate::ClientBuilder::key_rests)).
/// Keys are named by their place in the pool. Cheap to clone; clones share
/// the state.
#[derive(Clone)]
pub struct KeyRests {
    inner: Arc<RestsInner>,
}

struct RestsInner {
    /// Per key, milliseconds after `origin` until which it rests (0: not).
    until_ms: Box<[AtomicU64]>,
    origin: Instant,
    on_rest: std::sync::OnceLock<RestHook>,
}

impl std::fmt::Debug for KeyRests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRests")
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

impl KeyRests {
    /// The rests of a pool of `keys` keys, none resting.
    pub fn new(keys: usize) -> Self {
        Self {
            inner: Arc::new(RestsInner {
                until_ms: (0..keys).map(|_| AtomicU64::new(0)).collect(),
                origin: Instant::now(),
                on_rest: std::sync::OnceLock::new(),
            }),
        }
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.inner.until_ms.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.inner.until_ms.is_empty()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn until_ms(&self, i: usize) -> u64 {
        self.inner
            .until_ms
            .get(i)
            .map_or(0, |u| u.load(Ordering::Acquire))
    }

    /// How long key `i` still rests, if it does.
    pub fn resting_for(&self, i: usize) -> Option<Duration> {
        let left = self.until_ms(i).saturating_sub(self.now_ms());
        (left > 0).then(|| Duration::from_millis(left))
    }

    /// Rests key `i` for `wait` from now (unless it already rests longer),
    /// as learned from elsewhere: the [`on_rest`](Self::on_rest) hook is
    /// not told. An `i` past the pool is ignored.
    pub fn rest(&self, i: usize, wait: Duration) {
        self.extend(i, wait);
    }

    /// Tells `hook` (once set) each time an answer to one of these clients
    /// rests a key for longer than it already rested: the key's place and
    /// the wait. E.g. to share it with a fleet.
    pub fn on_rest(&self, hook: impl Fn(usize, Duration) + Send + Sync + 'static) {
        let _ = self.inner.on_rest.set(Arc::new(hook));
    }

    /// Whether the rest was extended.
    fn extend(&self, i: usize, wait: Duration) -> bool {
        let Some(slot) = self.inner.until_ms.get(i) else {
            return false;
        };
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        slot.fetch_max(until, Ordering::AcqRel) < until
    }

    /// An answer rests key `i` for `wait`: told to the hook when it is news.
    fn answered(&self, i: usize, wait: Duration) {
        if self.extend(i, wait)
            && let Some(hook) = self.inner.on_rest.get()
        {
            hook(i, wait);
        }
    }
}

/// The keys of a [`ClientBuilder::key_pool`](crate::ClientBuilder::key_pool).
pub(crate) struct KeyPool {
    keys: Vec<PoolKey>,
    next: AtomicUsize,
    rests: KeyRests,
}

struct PoolKey {
    injector: Arc<Injector>,
    /// The fingerprint of the key value that was refused (401/403): retired
    /// until its source gives another value.
    retired: Mutex<Option<u64>>,
}

impl KeyPool {
    pub(crate) fn new(auths: &[Auth], rests: Option<KeyRests>) -> Result<Self, ConfigError> {
        if auths.is_empty() {
            return Err(ConfigError::new(
                "the key pool is empty; give it one key source at least".to_owned(),
            ));
        }
        let keys = auths
            .iter()
            .map(|a| {
                Ok(PoolKey {
                    injector: Injector::new(a)?,
                    retired: Mutex::new(None),
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let rests = match rests {
            Some(r) if r.len() != keys.len() => {
                return Err(ConfigError::new(format!(
                    "the key rests are for {} keys and the pool has {}; make them with \
                     `KeyRests::new({})`",
                    r.len(),
                    keys.len(),
                    keys.len()
                )));
            }
            Some(r) => r,
            None => KeyRests::new(keys.len()),
        };
        Ok(Self {
            keys,
            next: AtomicUsize::new(0),
            rests,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    fn now_ms(&self) -> u64 {
        self.rests.now_ms()
    }

    fn retired(&self, i: usize) -> bool {
        let key = &self.keys[i];
        let mut retired = key.retired.lock().unwrap_or_else(PoisonError::into_inner);
        match *retired {
            Some(fp) if fp == key.injector.fingerprint() => true,
            Some(_) => {
                // Its source gives another key now: back in the pool.
                *retired = None;
                false
            }
            None => false,
        }
    }

    fn usable(&self, i: usize, now: u64) -> bool {
        self.rests.until_ms(i) <= now && !self.retired(i)
    }

    /// The key for a call: the next usable one in turn that is not in
    /// `tried`; when none is usable, the one that rests the shortest (the
    /// upstream then says what it says); `None` only when every key is
    /// retired — a retired key is never sent again.
    pub(crate) fn pick(&self, tried: u64) -> Option<usize> {
        self.other(tried).or_else(|| {
            (0..self.keys.len())
                .filter(|&i| !self.retired(i))
                .min_by_key(|&i| self.rests.until_ms(i))
        })
    }

    /// The next usable key in turn not in `tried`, if any.
    pub(crate) fn other(&self, tried: u64) -> Option<usize> {
        let n = self.keys.len();
        let now = self.now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| start.wrapping_add(k) % n)
            .find(|&i| !(i < 64 && tried & (1 << i) != 0) && self.usable(i, now))
    }

    /// What the answer to a call made with key `i` says about that key: a
    /// 401 or 403 retires it (until its source changes); a 429 rests it for
    /// the provider's hint (or [`DEFAULT_DRAIN`]); any answer saying a limit
    /// of the key is spent (`x-ratelimit-remaining-*: 0`,
    /// `anthropic-ratelimit-*-remaining: 0`) rests it until that limit's
    /// reset ([`provider_drain`]). True when it was refused (another key
    /// may take the call).
    pub(crate) fn report(&self, i: usize, status: StatusCode, headers: &HeaderMap) -> bool {
        let key = &self.keys[i];
        if matches!(status.as_u16(), 401 | 403) {
            *key.retired.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(key.injector.fingerprint());
            return true;
        }
        let refused = status == StatusCode::TOO_MANY_REQUESTS;
        let wait = provider_drain(status, headers, SystemTime::now())
            .or_else(|| refused.then_some(DEFAULT_DRAIN));
        if let Some(wait) = wait {
            self.rests.answered(i, wait);
        }
        refused
    }

    pub(crate) fn apply(&self, i: usize, headers: &mut HeaderMap) {
        self.keys[i].injector.apply(headers);
    }

    /// `text` with every key of the pool scrubbed (see
    /// [`HttpClient::redact`](crate::HttpClient::redact)).
    pub(crate) fn redact(&self, text: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for key in &self.keys {
            let current = out.as_deref().unwrap_or(text);
            if let Some(scrubbed) = key.injector.redact(current) {
                out = Some(scrubbed);
            }
        }
        out
    }

    pub(crate) fn too_short_to_scrub(&self) -> bool {
        self.keys.iter().any(|k| k.injector.too_short_to_scrub())
    }
}

impl std::fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPool")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// A fingerprint of a header value (never the value itself kept).
pub(crate) fn fingerprint(value: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}
