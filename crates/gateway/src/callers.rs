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
//! The limits are kept in each gateway process (a fleet behind a load
//! balancer gives a caller its limits once per process); `[redis]` does
//! not share them yet.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Response, StatusCode};
use palisade::ratelimit::{RateLimitLayer, TokenLimitLayer};
use palisade_core::{ParsedBody, RateLimited, tokens};
use palisade_providers::Api;
use secrecy::{ExposeSecret, SecretString};

use crate::StartError;
use crate::config::{AuthConfig, CallerConfig};
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
    pub(crate) fn from_config(a: &AuthConfig, metrics: &Arc<Metrics>) -> Result<Self, StartError> {
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
            let key = std::env::var(&c.key_env)
                .ok()
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    StartError::Auth(format!(
                        "[[auth.keys]] `{}`: the variable `{}` is not set or empty; export the caller's key in it",
                        c.name, c.key_env
                    ))
                })?;
            if keys.iter().any(|(k, _)| k.expose_secret() == key) {
                return Err(StartError::Auth(format!(
                    "[[auth.keys]] `{}`: its key (in `{}`) is also another caller's or in keys_env; give each caller a key of its own",
                    c.name, c.key_env
                )));
            }
            keys.push((
                SecretString::from(key),
                Some(Arc::new(Caller::new(c, metrics)?)),
            ));
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

/// A caller with limits of its own.
pub(crate) struct Caller {
    name: Arc<str>,
    rpm: Option<(u64, RateLimitLayer)>,
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
    fn new(c: &CallerConfig, metrics: &Arc<Metrics>) -> Result<Self, StartError> {
        let rpm = c
            .requests_per_minute
            .map(|n| {
                RateLimitLayer::try_new(n, n as f64 / 60.0)
                    .map(|l| (n, l))
                    .map_err(|e| limit_error(&c.name, "requests_per_minute", e))
            })
            .transpose()?;
        let tokens = |n: u64, per: f64, what: &str| {
            TokenLimitLayer::try_new(n, n as f64 / per)
                .map(|l| (n, l))
                .map_err(|e| limit_error(&c.name, what, e))
        };
        Ok(Self {
            name: Arc::from(c.name.as_str()),
            rpm,
            tpm: c
                .tokens_per_minute
                .map(|n| tokens(n, 60.0, "tokens_per_minute"))
                .transpose()?,
            tpd: c
                .tokens_per_day
                .map(|n| tokens(n, DAY, "tokens_per_day"))
                .transpose()?,
            metrics: Arc::clone(metrics),
        })
    }

    /// Admits one call of `api` with this body, or refuses it naming the
    /// limit it is over.
    pub(crate) fn admit(
        self: &Arc<Self>,
        api: Api,
        parsed: &ParsedBody,
    ) -> Result<Admitted, GatewayError> {
        let estimate = tokens::estimate(parsed);
        let cost = estimate.total().max(1);
        self.metrics.caller_request(&self.name);
        if let Some((n, l)) = &self.rpm {
            l.bucket()
                .take(1)
                .map_err(|e| self.refuse(api, "requests_per_minute", *n, &e))?;
        }
        let mut taken: Vec<&TokenLimitLayer> = Vec::new();
        for (what, limit) in [
            ("tokens_per_minute", &self.tpm),
            ("tokens_per_day", &self.tpd),
        ] {
            let Some((n, l)) = limit else { continue };
            if let Err(e) = l.reserve(cost) {
                // Nothing stays taken for a refused call.
                for t in taken {
                    t.bucket().refund(cost);
                }
                if let Some((_, r)) = &self.rpm {
                    r.bucket().refund(1);
                }
                return Err(self.refuse(api, what, *n, &e));
            }
            taken.push(l);
        }
        Ok(Admitted {
            caller: Arc::clone(self),
            reserved: cost,
            prompt: estimate.prompt,
        })
    }

    fn refuse(&self, api: Api, limit: &str, n: u64, e: &RateLimited) -> GatewayError {
        self.metrics.caller_limited(&self.name, limit);
        let wait = e.retry_after();
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

/// A caller's admitted call: its token reservations, settled when its
/// answer ends.
pub(crate) struct Admitted {
    caller: Arc<Caller>,
    /// Tokens reserved; 0 once handed to the answer's settlement.
    reserved: u64,
    prompt: u64,
}

impl Admitted {
    /// `res` (the caller's answer, in `api`), its body settling the
    /// reservations when it ends.
    pub(crate) fn settle(mut self, res: Response<Body>, api: Api) -> Response<Body> {
        let reserved = std::mem::take(&mut self.reserved);
        let mut res = res;
        for (_, l) in [&self.caller.tpm, &self.caller.tpd].into_iter().flatten() {
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
            for (_, l) in [&self.caller.tpm, &self.caller.tpd].into_iter().flatten() {
                l.bucket().refund(unused);
            }
        }
    }
}
