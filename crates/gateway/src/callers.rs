//! Inbound keys (`[auth]`) and the callers' own limits (`[[auth.keys]]`):
//! requests per minute, tokens per minute and a token budget per day, so
//! one tenant cannot starve the others.
//!
//! A caller's call is admitted after its body is read and checked: a
//! request taken from its requests-per-minute bucket, and its token
//! estimate (prompt + `max_tokens`, `palisade_core::tokens`) reserved from
//! its tokens per minute and per day; over any of them, a 429 naming the
//! caller and the limit, with `Retry-After`, before any upstream call. The
//! reservations are settled when the answer to the caller ends, from the
//! usage in that answer, by the rules of `palisade_ratelimit`'s
//! `TokenLimitLayer` (unused tokens refunded; an error status without usage
//! refunded whole).
//!
//! With `[redis]` the limits are kept there (keys
//! `palisade:caller:{name}:{limit}`), so a fleet admits each caller's
//! limits once, not once per process; Redis unreachable: the call goes on
//! (or, with `fail_open = false`, gets a 503), counted in
//! `palisade_redis_errors_total{upstream="*"}`. Without it, each process
//! keeps its own.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Response, StatusCode};
use palisade::ratelimit::TokenLimitLayer;
use palisade_core::{BoxError, ParsedBody, RateLimited, find, tokens};
use palisade_providers::Api;
use secrecy::{ExposeSecret, SecretString};

use crate::StartError;
use crate::config::{AuthConfig, CallerConfig, RedisConfig};
use crate::error::GatewayError;
use crate::metrics::Metrics;

/// Seconds in a day: `tokens_per_day` refills over it.
const DAY: f64 = 86_400.0;

/// The keys inbound callers must present, each with its caller's limits
/// when it has some.
pub(crate) struct InboundKeys {
    keys: Vec<(SecretString, Option<Arc<Caller>>)>,
}

impl std::fmt::Debug for InboundKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InboundKeys([REDACTED; {}])", self.keys.len())
    }
}

impl InboundKeys {
    /// The keys in `keys_env`'s variable (comma-separated) and each
    /// `[[auth.keys]]` caller's.
    pub(crate) fn from_config(
        a: &AuthConfig,
        redis: Option<&RedisConfig>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, StartError> {
        let mut keys = Vec::new();
        if let Some(var) = &a.keys_env {
            let raw = std::env::var(var).map_err(|_| {
                StartError::Auth(format!(
                    "[auth] keys_env: the variable `{var}` is not set; export it with the accepted keys, comma-separated"
                ))
            })?;
            let before = keys.len();
            keys.extend(
                raw.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| (SecretString::from(k.to_owned()), None)),
            );
            if keys.len() == before {
                return Err(StartError::Auth(format!(
                    "[auth] keys_env: the variable `{var}` holds no key"
                )));
            }
        }
        for c in &a.keys {
            // One key, or a group: several comma-separated keys sharing
            // the caller's limits.
            let group: Vec<String> = std::env::var(&c.key_env)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect();
            if group.is_empty() {
                return Err(StartError::Auth(format!(
                    "[[auth.keys]] `{}`: the variable `{}` is not set or empty; export the caller's key in it (or several, comma-separated)",
                    c.name, c.key_env
                )));
            }
            let caller = Arc::new(Caller::new(c, redis, metrics)?);
            for key in group {
                if keys.iter().any(|(k, _)| k.expose_secret() == key) {
                    return Err(StartError::Auth(format!(
                        "[[auth.keys]] `{}`: a key in `{}` is also another caller's, in keys_env or given twice; give each caller keys of its own",
                        c.name, c.key_env
                    )));
                }
                keys.push((SecretString::from(key), Some(Arc::clone(&caller))));
            }
        }
        Ok(Self { keys })
    }

    /// The caller presenting `presented`: `None` for an unknown key;
    /// `Some(None)` for a key without limits of its own. Every key is
    /// compared in full, whichever matches.
    pub(crate) fn find(&self, presented: &str) -> Option<Option<Arc<Caller>>> {
        let p = presented.as_bytes();
        let mut hit = None;
        for (i, (k, _)) in self.keys.iter().enumerate() {
            let k = k.expose_secret().as_bytes();
            let same =
                k.len() == p.len() && k.iter().zip(p).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            if same && hit.is_none() {
                hit = Some(i);
            }
        }
        hit.map(|i| self.keys[i].1.clone())
    }
}

/// A caller with limits of its own; each a `TokenLimitLayer` (for
/// requests, a unit per call), kept in `[redis]` when there is one.
pub(crate) struct Caller {
    name: Arc<str>,
    rpm: Option<(u64, TokenLimitLayer)>,
    tpm: Option<(u64, TokenLimitLayer)>,
    tpd: Option<(u64, TokenLimitLayer)>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn limit_error(caller: &str, what: &str, e: impl std::fmt::Display) -> StartError {
    StartError::Auth(format!("[[auth.keys]] `{caller}` {what}: {e}"))
}

impl Caller {
    fn new(
        c: &CallerConfig,
        redis: Option<&RedisConfig>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, StartError> {
        let limit = |n: Option<u64>, per: f64, what: &'static str| {
            n.map(|n| {
                let mut l = TokenLimitLayer::try_new(n, n as f64 / per)
                    .map_err(|e| limit_error(&c.name, what, e))?;
                if let Some(r) = redis {
                    let key = format!("palisade:caller:{}:{what}", c.name);
                    l = l
                        .redis(&r.url, key)
                        .map_err(|e| limit_error(&c.name, what, e))?;
                    if !r.fail_open {
                        l = l.fail_closed();
                    }
                    let m = Arc::clone(metrics);
                    l = l.on_redis_error(move |_| m.redis_error("*"));
                }
                Ok::<_, StartError>((n, l))
            })
            .transpose()
        };
        Ok(Self {
            name: Arc::from(c.name.as_str()),
            rpm: limit(c.requests_per_minute, 60.0, "requests_per_minute")?,
            tpm: limit(c.tokens_per_minute, 60.0, "tokens_per_minute")?,
            tpd: limit(c.tokens_per_day, DAY, "tokens_per_day")?,
            metrics: Arc::clone(metrics),
        })
    }

    /// Admits one call of `api` with this body, or refuses it naming the
    /// limit it is over (429), or — its limits' Redis down and failing
    /// closed — saying so (503).
    pub(crate) async fn admit(
        self: &Arc<Self>,
        api: Api,
        parsed: &ParsedBody,
    ) -> Result<Admitted, GatewayError> {
        let estimate = tokens::estimate(parsed);
        let cost = estimate.total().max(1);
        self.metrics.caller_request(&self.name);
        // What was reserved so far: (limit, units), given back on a refusal
        // or when the caller goes away while the next limit is asked.
        let mut made = Undo(Vec::new());
        let mut tokens_made = [false; 2];
        let limits = [
            ("requests_per_minute", &self.rpm, 1),
            ("tokens_per_minute", &self.tpm, cost),
            ("tokens_per_day", &self.tpd, cost),
        ];
        for (k, (what, limit, units)) in limits.into_iter().enumerate() {
            let Some((n, l)) = limit else { continue };
            match l.reserve(units).await {
                Ok(reserved) => {
                    if reserved {
                        made.0.push((l, units));
                    }
                    if k > 0 {
                        tokens_made[k - 1] = reserved;
                    }
                }
                Err(e) => return Err(self.refuse(api, what, *n, &e)),
            }
        }
        // Admitted: the reservations are the answer's to settle now.
        made.0.clear();
        Ok(Admitted {
            caller: Arc::clone(self),
            reserved: cost,
            prompt: estimate.prompt,
            made: tokens_made,
        })
    }

    fn refuse(&self, api: Api, limit: &str, n: u64, e: &BoxError) -> GatewayError {
        let Some(limited) = find::<RateLimited>(&**e) else {
            tracing::warn!(caller = %self.name, limit, reason = %e, "refused: the caller's limits are unavailable");
            return GatewayError::new(
                api,
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the limits of caller `{}` are unavailable (their Redis cannot be reached); retry later",
                    self.name
                ),
            );
        };
        self.metrics.caller_limited(&self.name, limit);
        let wait = limited.retry_after();
        let when = match wait {
            Some(d) => format!("retry in {} s", d.as_secs().max(1)),
            None => "this request alone is over it; ask for fewer tokens (max_tokens) or a shorter prompt".to_owned(),
        };
        tracing::info!(caller = %self.name, limit, "refused: over the caller's own limit");
        GatewayError::new(
            api,
            StatusCode::TOO_MANY_REQUESTS,
            format!("caller `{}` is over its {limit} ({n}); {when}", self.name),
        )
        .retry_after(wait.map(|d| d.max(Duration::from_secs(1))))
    }
}

/// Reservations made for a call not yet admitted: given back when dropped
/// (a refusal by a later limit, or the caller gone mid-admission).
struct Undo<'a>(Vec<(&'a TokenLimitLayer, u64)>);

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        for (l, units) in self.0.drain(..) {
            l.refund(units);
        }
    }
}

/// A caller's admitted call: its token reservations, settled when its
/// answer ends.
pub(crate) struct Admitted {
    caller: Arc<Caller>,
    /// Tokens reserved; 0 once handed to the answer's settlement.
    reserved: u64,
    prompt: u64,
    /// Whether tokens per minute and per day reserved them (not when
    /// their Redis could not be asked and they fail open).
    made: [bool; 2],
}

impl Admitted {
    /// The token limits that hold this call's reservation.
    fn holding(&self) -> impl Iterator<Item = &TokenLimitLayer> {
        [&self.caller.tpm, &self.caller.tpd]
            .into_iter()
            .zip(self.made)
            .filter_map(|(l, made)| l.as_ref().filter(|_| made).map(|(_, l)| l))
    }
}

impl Admitted {
    /// `res` (the caller's answer, in `api`), its body settling the
    /// reservations when it ends.
    pub(crate) fn settle(mut self, res: Response<Body>, api: Api) -> Response<Body> {
        let reserved = std::mem::take(&mut self.reserved);
        let mut res = res;
        for l in self.holding() {
            res = l
                .reconcile(res, Some(api), reserved, self.prompt)
                .map(Body::new);
        }
        res
    }
}

impl Drop for Admitted {
    /// Dropped before its answer (the caller went away while the
    /// upstreams were asked): it can have cost its prompt, not its output.
    fn drop(&mut self) {
        let unused = self.reserved.saturating_sub(self.prompt);
        if unused > 0 {
            for l in self.holding() {
                l.refund(unused);
            }
        }
    }
}
