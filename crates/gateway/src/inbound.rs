//! The checks on an inbound request, cheapest first: its key, its content
//! type, its body's size and arrival, then the body's shape, route and
//! schema. Each refusal is a [`GatewayError`] in the caller's API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_TYPE;
use palisade_core::body::collect_limited;
use palisade_core::{BodyTooLarge, ParsedBody, Shape, ShapeError, find};
use palisade_providers::Api;

use crate::AppState;
use crate::callers::Caller;
use crate::error::GatewayError;

/// Bodies from this size on are inspected (and translated) on tokio's
/// blocking pool: tens of milliseconds for a body of megabytes would hold
/// up every other request on a runtime worker.
pub(crate) const BLOCKING_FROM: usize = 256 * 1024;

/// A request body that passed every check: its bytes, parsed once, and
/// its model (which a route serves).
pub(crate) struct Checked {
    pub(crate) bytes: Bytes,
    pub(crate) parsed: ParsedBody,
    pub(crate) model: String,
    /// Time spent waiting for the caller to send the body (not the
    /// gateway's own time).
    pub(crate) body_wait: Duration,
}

/// The inbound key, when the gateway has `[auth]` keys.
pub(crate) fn authorize(
    state: &AppState,
    caller: Api,
    headers: &HeaderMap,
) -> Result<Option<Arc<Caller>>, GatewayError> {
    let Some(keys) = &state.inbound_keys else {
        return Ok(None);
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    if let Some(found) = presented.and_then(|p| keys.find(p.trim())) {
        Ok(found)
    } else {
        tracing::info!("refused: missing or unknown inbound key");
        Err(GatewayError::unauthorized(caller))
    }
}

/// A JSON `Content-Type` (415 otherwise); see [`is_json`].
pub(crate) fn require_json(caller: Api, headers: &HeaderMap) -> Result<(), GatewayError> {
    if is_json(headers) {
        return Ok(());
    }
    let got = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    Err(GatewayError::not_json(caller, got))
}

/// Whether the request says its body is JSON: `application/json` or a
/// `+json` type, any parameters, any case.
///
/// Required (415 otherwise) so that a web page cannot post to a gateway on
/// the user's machine: a browser sends a cross-origin POST without asking
/// the server first only with `text/plain`, `multipart/form-data` or
/// `application/x-www-form-urlencoded`; a JSON type makes it ask (a CORS
/// preflight), and the gateway does not answer preflights, so the browser
/// never sends the request.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// Reads the body within `body_read_timeout` and `max_body_bytes` (a
/// declared `Content-Length` over the limit is refused before anything is
/// read), then checks it ([`inspect`], off the runtime for a large body).
pub(crate) async fn check_body(
    state: &Arc<AppState>,
    caller: Api,
    body: Body,
) -> Result<Checked, GatewayError> {
    let limit = state.max_body_bytes;
    let started = Instant::now();
    let deadline = Duration::from_millis(state.server.body_read_timeout);
    let mut stopping = state.signals.stopping.subscribe();
    // A body still arriving when shutdown starts is refused at once: it
    // would hold the exit until `body_read_timeout`.
    let read = tokio::select! {
        biased;
        read = tokio::time::timeout(deadline, collect_limited(body, limit)) => read,
        _ = stopping.wait_for(|s| *s) => {
            tracing::info!("refused: the gateway began shutting down while the request body was arriving");
            return Err(GatewayError::shutting_down(caller));
        }
    };
    let body_wait = started.elapsed();
    let bytes = match read {
        Err(_) => {
            tracing::info!("refused: the request body did not arrive within body_read_timeout");
            return Err(GatewayError::body_timeout(caller, deadline));
        }
        Ok(Ok(b)) => b,
        Ok(Err(e)) if find::<BodyTooLarge>(&*e).is_some() => {
            return Err(GatewayError::too_large(caller, limit));
        }
        Ok(Err(e)) => {
            return Err(GatewayError::new(
                caller,
                http::StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            ));
        }
    };
    let (parsed, model) = if bytes.len() >= BLOCKING_FROM {
        let (st, b) = (state.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || inspect(&st, caller, &b))
            .await
            .unwrap_or_else(|e| {
                Err(GatewayError::new(
                    caller,
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("checking the request body failed: {e}"),
                ))
            })?
    } else {
        inspect(state, caller, &bytes)?
    };
    Ok(Checked {
        bytes,
        parsed,
        model,
        body_wait,
    })
}

/// The checks on a request body, cheapest first: for a body long enough to
/// hold more than `max_json_values` values, count them and find its model
/// without building it (refusing a body of too many values, or a model no
/// route serves, before paying for the parse); then parse it once, route
/// it, and check it against the caller's schema.
fn inspect(
    state: &AppState,
    caller: Api,
    bytes: &[u8],
) -> Result<(ParsedBody, String), GatewayError> {
    // Every JSON value takes at least two bytes (`1,`), but a lone one: a
    // body this short cannot go over the limit, and skips the first pass.
    let may_exceed = (bytes.len() as u64).div_ceil(2) > state.max_json_values;
    if may_exceed {
        let shape = match Shape::scan(bytes, state.max_json_values) {
            Ok(s) => s,
            Err(ShapeError::TooManyValues { limit }) => {
                tracing::info!(limit, "refused: too many JSON values");
                return Err(GatewayError::too_many_values(caller, limit));
            }
            Err(ShapeError::NotJson(rejected)) => {
                return Err(GatewayError::rejected(caller, &rejected));
            }
        };
        // A body without a string model is refused by the schema below.
        if let Some(m) = &shape.model {
            routed(state, caller, m)?;
        }
    }
    let parsed = ParsedBody::parse(bytes).map_err(|r| GatewayError::rejected(caller, &r))?;
    let model = parsed.model().unwrap_or_default().to_owned();
    if !model.is_empty() {
        routed(state, caller, &model)?;
    }
    let schema = match caller {
        Api::ChatCompletions => &state.schemas.openai,
        Api::Messages => &state.schemas.anthropic,
        Api::Responses => &state.schemas.responses,
        Api::Embeddings => &state.schemas.embeddings,
    };
    if let Err(rejected) = schema.check(parsed.value()) {
        tracing::info!(
            violations = rejected.violations().len(),
            "refused: invalid request"
        );
        return Err(GatewayError::rejected(caller, &rejected));
    }
    Ok((parsed, model))
}

/// 404 for a model no route serves, naming those it serves.
fn routed(state: &AppState, caller: Api, model: &str) -> Result<(), GatewayError> {
    if state.routes.contains_key(model) {
        Ok(())
    } else {
        Err(GatewayError::unknown_model(caller, model, &state.models))
    }
}
