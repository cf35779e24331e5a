//! The two proxy endpoints, as a straight pipeline:
//!
//! 1. [`handle`]: the trace context, the `request` span, and on the way out
//!    the gateway's own time (`x-palisade-overhead-ms`) and the metrics.
//! 2. [`pipeline`]: the inbound checks ([`crate::inbound`]: key, content
//!    type, body size and arrival, shape, route, schema), each refusal a
//!    [`GatewayError`] in the caller's API.
//! 3. [`fallback`]: the route's targets in order, one
//!    [`Call::attempt`](crate::attempt::Call::attempt) each (translation,
//!    the call through the target's stack, its stream or JSON answer), the
//!    next target when one fails in a way another might not.
//! 4. [`give_up`]: the last failure, in the caller's API, marked
//!    `x-should-retry: false` when the gateway already retried it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::IntoResponse;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use palisade_core::ErrorKind;
use palisade_core::classify::{ClassifyOutcome, Outcome};
use palisade_providers::Api;
use palisade_providers::dialect::responses;
use palisade_trace::TraceContext;
use tracing::Instrument;

use crate::attempt::{Attempt, Call, Failure, failure_answer};
use crate::error::GatewayError;
use crate::inbound::{authorize, check_body, require_json};
use crate::upstream::Upstream;
use crate::{AppState, Planned, RouteTarget};

/// The gateway's own time per request, in milliseconds.
pub(crate) const OVERHEAD_HEADER: &str = "x-palisade-overhead-ms";

/// `d` in milliseconds with three decimals, as a header value.
pub(crate) fn overhead_value(d: Duration) -> HeaderValue {
    // A formatted number is always a valid header value.
    HeaderValue::from_str(&format!("{:.3}", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|_| HeaderValue::from_static("0.000"))
}

/// What the caller gets, plus what the metrics need.
struct Answer {
    res: Response<Body>,
    route: String,
    upstream: String,
    /// Time spent waiting on upstreams (and on the caller's body).
    waited: Duration,
}

impl From<GatewayError> for Answer {
    fn from(e: GatewayError) -> Self {
        Self {
            res: e.into_response(),
            route: String::new(),
            upstream: String::new(),
            waited: Duration::ZERO,
        }
    }
}

/// `POST /v1/chat/completions` and `POST /v1/messages`.
pub(crate) async fn handle(
    state: Arc<AppState>,
    caller: Api,
    req: Request<Body>,
) -> Response<Body> {
    let started = Instant::now();
    if let Some(drains) = &state.drains {
        drains.ensure_polling();
    }
    // The router's `stamp` middleware put it there; computed here only when
    // the handler is used without it.
    let trace = req
        .extensions()
        .get::<TraceContext>()
        .cloned()
        .unwrap_or_else(|| TraceContext::from_headers(req.headers()));
    let span = tracing::info_span!(
        "request",
        trace_id = %trace.id(),
        palisade.untranslated = tracing::field::Empty,
    );
    let answer = pipeline(&state, caller, req, &trace, started)
        .instrument(span)
        .await
        .unwrap_or_else(Answer::from);
    let Answer {
        mut res,
        route,
        upstream,
        waited,
    } = answer;
    let total = started.elapsed();
    let overhead = total.saturating_sub(waited);
    // `x-trace-id` is set by the router's `stamp` middleware, from the same
    // context; the overhead is this handler's own figure.
    res.headers_mut()
        .insert(OVERHEAD_HEADER, overhead_value(overhead));
    state.metrics.timings(total, overhead);
    state
        .metrics
        .request(route, upstream, res.status().as_u16());
    res
}

/// The inbound checks, then the route's targets.
async fn pipeline(
    state: &Arc<AppState>,
    caller: Api,
    req: Request<Body>,
    trace: &TraceContext,
    started: Instant,
) -> Result<Answer, GatewayError> {
    let who = authorize(state, caller, req.headers())?;
    require_json(caller, req.headers())?;
    let (parts, body) = req.into_parts();
    let checked = check_body(state, caller, body).await?;
    let route = state
        .routes
        .get(&checked.model)
        .ok_or_else(|| GatewayError::unknown_model(caller, &checked.model, &state.models))?;
    servable(
        caller,
        &checked.model,
        &route.targets,
        checked.parsed.value(),
    )?;
    let (mut targets, mut skipped) = route.order(&parts.headers, checked.parsed.value());
    let mut waited = checked.body_wait;
    // Every member out, the first back within the route's `max_wait`: wait
    // for it, once.
    if targets.is_empty()
        && let Some(wait) = palisade_balance::NoMember::new(skipped.clone()).retry_after()
        && !route.max_wait.is_zero()
        && wait <= route.max_wait
    {
        tokio::time::sleep(wait).await;
        waited += wait;
        (targets, skipped) = route.order(&parts.headers, checked.parsed.value());
    }
    if targets.is_empty() {
        // Every member of every tier skipped without a call.
        let none = palisade_balance::NoMember::new(skipped);
        let (status, wait) = palisade_core::caller_status(&none);
        return Err(GatewayError::new(
            caller,
            status,
            format!(
                "no upstream of the route `{}` can take the call now: {none}",
                checked.model
            ),
        )
        .retry_after(wait));
    }
    // A caller with limits of its own: admitted (or refused, 429) once
    // the request is known to be servable, before any upstream call; its
    // token reservations settle with the answer.
    let admitted = match who {
        Some(c) => Some(c.admit(caller, &checked.parsed).await?),
        None => None,
    };
    let call = Call {
        state,
        caller,
        headers: &parts.headers,
        bytes: checked.bytes,
        parsed: checked.parsed,
        trace,
        started,
        waited,
        calls: 0,
        untranslated: Vec::new(),
    };
    let answer = fallback(call, checked.model, &targets).await;
    Ok(match admitted {
        Some(a) => Answer {
            res: a.settle(answer.res, caller),
            ..answer
        },
        None => answer,
    })
}

/// The route's targets in order until one answers; a JSON answer that
/// broke off or stalled mid-body is asked for again from the same target (the retry
/// layer sees only what happens before the answer's head).
async fn fallback(mut call: Call<'_>, route: String, targets: &[Planned<'_>]) -> Answer {
    let mut last: Option<(Arc<Upstream>, Failure)> = None;
    let mut next = 0;
    let mut spent = 0u32;
    // Embeddings: the model whose vectors the first target gives; another
    // model's are not comparable, so no fallback goes to one.
    let mut vectors_of: Option<&str> = None;
    // The tier reached last (a hedging tier earns hedges from the calls
    // that reach it); whether the rival of a race whose first member is
    // asked again (`Again`) was called.
    let mut reached = None;
    let mut rival_called_before = false;
    while let Some(&planned) = targets.get(next) {
        if reached != Some(planned.tier) {
            reached = Some(planned.tier);
            if let Some(tier) = planned.hedging {
                tier.called();
            }
        }
        let up = &planned.target.upstream;
        if call.caller == Api::Embeddings && up.target_api(Api::Embeddings).is_some() {
            let model = planned.target.model.as_deref().unwrap_or(&route);
            match vectors_of {
                Some(first) if first != model => {
                    tracing::info!(upstream = %up.name, model, first, "not falling back to another model for embeddings: its vectors are not comparable");
                    next += 1;
                    continue;
                }
                _ => vectors_of = Some(model),
            }
        }
        // A hedging tier's member, with another member of the tier after
        // it: raced against it when its first content is late.
        let same_tier = |at: usize| targets.get(at).filter(|p| p.tier == planned.tier);
        let rival = same_tier(next + 1).filter(|_| spent == 0 && call.caller != Api::Embeddings);
        // The answer, the index of the target that gave it, and whether
        // the rival was called too (then the loop goes on after both).
        let (answer, at, both) = match (planned.hedging, rival) {
            (Some(tier), Some(rival)) => {
                let after = tier.hedge_after().unwrap_or_default();
                let pass_on = same_tier(next + 2).is_some();
                let (answer, rivals, rival_called) = call
                    .attempt_hedged((planned.target, rival.target), tier, after, pass_on)
                    .await;
                (answer, next + usize::from(rivals), rival_called)
            }
            _ => {
                let pass_on = same_tier(next + 1).is_some();
                (
                    call.attempt(planned.target, spent, pass_on).await,
                    next,
                    false,
                )
            }
        };
        let both = both || std::mem::take(&mut rival_called_before);
        let up = &targets[at].target.upstream;
        let failure = match answer {
            Attempt::Answer(res) => {
                return Answer {
                    res,
                    route,
                    upstream: up.name.to_string(),
                    waited: call.waited,
                };
            }
            Attempt::Again(so_far) => {
                // The same target again (the rival, if it answered); when
                // it is the first of a race, its rival was tried already.
                rival_called_before = both && at == next;
                next = at;
                spent = so_far;
                continue;
            }
            Attempt::Failed(f) => f,
        };
        if let Failure::Error(e) = &failure {
            if ErrorKind::of(&**e) == Some(ErrorKind::RateLimited) {
                call.state.metrics.ratelimit_rejected(&up.name);
            }
            tracing::info!(upstream = %up.name, reason = %e, "upstream failed; trying the next target if any");
        }
        // A fallback target that cannot take the request at all (it would
        // need translating what cannot be) does not hide what the targets
        // that were called answered: the caller gets the last real failure.
        let hides_a_call = matches!(failure, Failure::Untranslatable(_))
            && last
                .as_ref()
                .is_some_and(|(_, f)| !matches!(f, Failure::Untranslatable(_)));
        if !hides_a_call {
            last = Some((up.clone(), failure));
        }
        next += 1 + usize::from(both);
        spent = 0;
    }
    let upstream = last
        .as_ref()
        .map(|(up, _)| up.name.to_string())
        .unwrap_or_default();
    Answer {
        res: give_up(call.caller, last, call.calls),
        route,
        upstream,
        waited: call.waited,
    }
}

/// Refuses (400) a request no target of its route could take: an API no
/// target serves or translates to (embeddings on a route of Anthropic
/// targets), or a Responses request needing stored state on a route with
/// no target speaking the Responses API itself.
fn servable(
    caller: Api,
    route: &str,
    targets: &[RouteTarget],
    body: &serde_json::Value,
) -> Result<(), GatewayError> {
    let apis: Vec<Api> = targets
        .iter()
        .filter_map(|t| t.upstream.target_api(caller))
        .collect();
    if apis.is_empty() {
        return Err(GatewayError::new(
            caller,
            StatusCode::BAD_REQUEST,
            format!(
                "no target of the route `{route}` serves {caller} (an Anthropic upstream serves messages only, and {caller} calls are not translated to it); route this model to an OpenAI, Azure or mock upstream"
            ),
        )
        .param("model"));
    }
    if caller == Api::Responses
        && !apis.contains(&Api::Responses)
        && let Some(need) = responses::needs_state(body)
    {
        return Err(GatewayError::new(
            caller,
            StatusCode::BAD_REQUEST,
            format!(
                "the request uses {need}, which needs state a Responses API provider stores, and no target of the route `{route}` speaks the Responses API (its targets' answers would be translated); send the whole conversation as `input` (and leave out `store: true`) instead, or route this model to an OpenAI or Azure upstream"
            ),
        ));
    }
    Ok(())
}

/// `x-should-retry`, which the official SDKs honour over the status.
const SHOULD_RETRY: &str = "x-should-retry";

/// The caller's answer when every target failed: the last failure. One the
/// gateway already retried (or fell back on) is marked
/// `x-should-retry: false`, so an SDK's own retries do not multiply the
/// upstream calls (3 gateway attempts × 3 SDK attempts = 9).
fn give_up(caller: Api, last: Option<(Arc<Upstream>, Failure)>, called: usize) -> Response<Body> {
    let Some((up, failure)) = last else {
        return GatewayError::new(
            caller,
            StatusCode::BAD_GATEWAY,
            "the route has no usable target",
        )
        .into_response();
    };
    let up_api = up.target_api(caller).unwrap_or(caller);
    // A failure of a kind the gateway retries, after more than one call (or
    // with retries configured: the retry layer spent its attempts, or the
    // upstream's wait hint was longer than the budget left).
    let retried = called > 1 || up.max_attempts > 1;
    // The classifier the retry layer asked: a local limit or an open circuit
    // (or an idle/total timeout) is not retryable there, so the caller may
    // still retry those.
    let retryable = match &failure {
        Failure::Status {
            status, headers, ..
        } => up
            .classifier
            .classify(Outcome::Response {
                status: *status,
                headers,
            })
            .is_retryable(),
        Failure::Error(e) => up.classifier.classify(Outcome::Error(&**e)).is_retryable(),
        Failure::Untranslatable(_) | Failure::BadAnswer(_) => false,
    };
    let mut res = failure_answer(caller, &up, up_api, failure);
    if retried && retryable {
        res.headers_mut()
            .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
    }
    res
}
