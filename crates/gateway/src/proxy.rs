//! The two proxy endpoints: read and check the request, route it over its
//! targets (fallback), translate where a target speaks the other API, and
//! answer in the caller's format.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::StreamBody;
use palisade_core::classify::{ClassifyOutcome, LlmClassifier, Outcome};
use palisade_core::{
    BodyTooLarge, BoxError, ErrorKind, ParsedBody, RequestBody, Shape, ShapeError,
    body::collect_limited, find,
};
use palisade_providers::observe::ResponseObserver;
use palisade_providers::translate::{
    anthropic_request_to_openai, anthropic_response_to_openai, openai_request_to_anthropic,
    openai_response_to_anthropic,
};
use palisade_providers::{Api, anthropic, openai};
use serde_json::Value;
use tracing::Instrument;

use crate::AppState;
use crate::errors::error_response;
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use palisade_providers::errors::parse_error as parse_upstream_error;
use palisade_schema::rejection_response;
use palisade_trace::{TRACE_ID_HEADER, TraceContext};

/// The largest upstream answer read whole (JSON answers and error bodies).
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;
/// The largest upstream error body relayed.
const MAX_ERROR_BODY: usize = 1024 * 1024;

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

impl Answer {
    fn local(res: Response<Body>) -> Self {
        Self {
            res,
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
    // The router's `stamp` middleware put it there; computed here only when
    // the handler is used without it.
    let trace = req
        .extensions()
        .get::<TraceContext>()
        .cloned()
        .unwrap_or_else(|| TraceContext::from_headers(req.headers()));
    let span = tracing::info_span!("request", trace_id = %trace.id);
    let answer = proxy(&state, caller, req, &trace, started)
        .instrument(span)
        .await;
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

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(keys) = &state.inbound_keys else {
        return true;
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    presented.is_some_and(|p| keys.matches(p.trim()))
}

async fn proxy(
    state: &Arc<AppState>,
    caller: Api,
    req: Request<Body>,
    trace: &TraceContext,
    started: Instant,
) -> Answer {
    if !authorized(state, req.headers()) {
        tracing::info!("refused: missing or unknown inbound key");
        return Answer::local(error_response(
            caller,
            StatusCode::UNAUTHORIZED,
            "missing or invalid API key for this gateway: send `Authorization: Bearer KEY` with one of the keys it was configured with",
            None,
            None,
        ));
    }
    if !is_json(req.headers()) {
        let got = req
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        return Answer::local(error_response(
            caller,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!(
                "this endpoint takes a JSON body: send `Content-Type: application/json` ({})",
                match got {
                    Some(t) => format!("got `{t}`"),
                    None => "the request has no Content-Type".to_owned(),
                }
            ),
            None,
            None,
        ));
    }
    let (parts, body) = req.into_parts();
    let limit = state.max_body_bytes;
    let too_large = || {
        error_response(
            caller,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the request body is over this gateway's limit of {limit} bytes (max_body_bytes); send a smaller request"
            ),
            None,
            None,
        )
    };
    // Waiting for the caller's body is not the gateway's own time either.
    let t_body = Instant::now();
    // A declared Content-Length over the limit (the body's size hint) is
    // refused before anything is read.
    let deadline = Duration::from_millis(state.server.body_read_timeout);
    let read = tokio::time::timeout(deadline, collect_limited(body, limit)).await;
    let body_wait = t_body.elapsed();
    let Ok(read) = read else {
        tracing::info!("refused: the request body did not arrive within body_read_timeout");
        return Answer::local(error_response(
            caller,
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the request body did not arrive within {} ms (body_read_timeout); send it at once",
                deadline.as_millis()
            ),
            None,
            None,
        ));
    };
    let bytes = match read {
        Ok(b) => b,
        Err(e) if find::<BodyTooLarge>(&*e).is_some() => return Answer::local(too_large()),
        Err(e) => {
            return Answer::local(error_response(
                caller,
                StatusCode::BAD_REQUEST,
                &format!("could not read the request body: {e}"),
                None,
                None,
            ));
        }
    };
    let inspected = if bytes.len() >= BLOCKING_FROM {
        // Tens of milliseconds for a body of megabytes: not on a runtime
        // worker, where it would hold up every other request.
        let (st, b) = (state.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || inspect(&st, caller, &b))
            .await
            .unwrap_or_else(|e| {
                Err(Box::new(error_response(
                    caller,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("checking the request body failed: {e}"),
                    None,
                    None,
                )))
            })
    } else {
        inspect(state, caller, &bytes)
    };
    let (parsed, model) = match inspected {
        Ok(x) => x,
        Err(res) => return Answer::local(*res),
    };
    let Some(targets) = state.routes.get(&model) else {
        return Answer::local(unknown_model(state, caller, &model));
    };
    let stream = parsed.is_stream();
    let mut waited = body_wait;
    let mut last: Option<(Arc<Upstream>, Failure)> = None;
    // Targets called, for `x-should-retry` on the final failure.
    let mut called = 0usize;
    let mut next = 0;
    // A JSON answer that broke off mid-body is asked for again from the same
    // target (the retry layer sees only what happens before the answer's
    // head), up to its `max_attempts` calls.
    let mut again_for: Option<usize> = None;
    let mut body_retries = 0u32;
    while let Some(target) = targets.get(next) {
        if again_for != Some(next) {
            body_retries = 0;
        }
        again_for = None;
        next += 1;
        let up = &target.upstream;
        let up_api = up.api.unwrap_or(caller);
        if up_api != caller {
            // A budget the other API's typed request cannot carry is the
            // caller's mistake (400), not this upstream's (502).
            if let Err(msg) = whole_budgets(parsed.value()) {
                return Answer {
                    res: error_response(caller, StatusCode::BAD_REQUEST, &msg, None, None),
                    route: model,
                    upstream: up.name.to_string(),
                    waited,
                };
            }
        }
        let translated = if bytes.len() >= BLOCKING_FROM
            && (caller != up_api || target.model.is_some())
        {
            let (b, p, m) = (bytes.clone(), parsed.clone(), target.model.clone());
            tokio::task::spawn_blocking(move || upstream_body(caller, up_api, &b, &p, m.as_deref()))
                .await
                .unwrap_or_else(|e| Err(format!("translating the request failed: {e}")))
        } else {
            upstream_body(caller, up_api, &bytes, &parsed, target.model.as_deref())
        };
        let (body, body_parsed) = match translated {
            Ok(b) => b,
            Err(msg) => {
                tracing::info!(upstream = %up.name, reason = %msg, "cannot translate the request for this upstream; trying the next target");
                last = Some((up.clone(), Failure::Untranslatable(msg)));
                continue;
            }
        };
        let mut ureq = Request::post(up_api.path())
            .header(CONTENT_TYPE, "application/json")
            .header(TRACE_ID_HEADER, trace.id.as_str())
            .header("traceparent", trace.traceparent());
        if let Some(ts) = &trace.tracestate {
            ureq = ureq.header("tracestate", ts.as_str());
        }
        if up_api == Api::Messages && caller == Api::Messages {
            if let Some(beta) = parts.headers.get("anthropic-beta") {
                ureq = ureq.header("anthropic-beta", beta.clone());
            }
        }
        let Ok(mut ureq) = ureq.body(RequestBody::new(body)) else {
            continue;
        };
        // The parsed body travels with the request (trace, token estimation
        // read it without parsing again).
        ureq.extensions_mut().insert(body_parsed);

        let t0 = Instant::now();
        called += 1;
        let result = up.call(ureq).await;
        let failure = match result {
            Ok(res) if res.status().is_success() => {
                if stream {
                    let mut events = res.into_body().events();
                    match events.next().await {
                        Some(Ok(first)) => {
                            waited += t0.elapsed();
                            state.metrics.first_token(started.elapsed());
                            let include_usage = parsed
                                .value()
                                .pointer("/stream_options/include_usage")
                                .and_then(Value::as_bool)
                                .unwrap_or(false);
                            let relay = crate::relay::Relay::new(
                                events,
                                first,
                                caller,
                                up.clone(),
                                state.metrics.clone(),
                                include_usage,
                                crate::relay::Bounds {
                                    cut: state.cut.subscribe(),
                                    deadline: tokio::time::Instant::from_std(started)
                                        .checked_add(up.total)
                                        .unwrap_or_else(|| {
                                            tokio::time::Instant::now()
                                                + Duration::from_secs(1 << 30)
                                        }),
                                },
                            );
                            let mut res = Response::new(Body::new(StreamBody::new(relay)));
                            let h = res.headers_mut();
                            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                            h.insert(
                                http::header::CACHE_CONTROL,
                                HeaderValue::from_static("no-cache"),
                            );
                            return Answer {
                                res,
                                route: model,
                                upstream: up.name.to_string(),
                                waited,
                            };
                        }
                        Some(Err(e)) => Failure::Error(e.into()),
                        None => Failure::Error("the stream ended before its first event".into()),
                    }
                } else {
                    let (uparts, ubody) = res.into_parts();
                    match ubody.read_all(MAX_UPSTREAM_BODY).await {
                        Ok(b) => {
                            waited += t0.elapsed();
                            match json_answer(
                                caller,
                                up,
                                up_api,
                                &uparts.headers,
                                b,
                                &state.metrics,
                            ) {
                                Ok(res) => {
                                    return Answer {
                                        res,
                                        route: model,
                                        upstream: up.name.to_string(),
                                        waited,
                                    };
                                }
                                Err(msg) => Failure::Untranslatable(msg),
                            }
                        }
                        Err(e)
                            if body_retries + 1 < up.max_attempts
                                && LlmClassifier::new()
                                    .classify(Outcome::Error(&*e))
                                    .is_retryable() =>
                        {
                            waited += t0.elapsed();
                            tracing::info!(upstream = %up.name, reason = %e, "the JSON answer broke off mid-body; asking the same target again");
                            body_retries += 1;
                            next -= 1;
                            again_for = Some(next);
                            continue;
                        }
                        Err(e) => Failure::Error(e),
                    }
                }
            }
            Ok(res) if res.status().is_informational() => Failure::Error(
                format!(
                    "upstream `{}` answered {} to a request that asked for no protocol switch or interim answer",
                    up.name,
                    res.status()
                )
                .into(),
            ),
            Ok(res) => {
                let retryable = LlmClassifier::new()
                    .classify(Outcome::response(&res))
                    .is_retryable();
                let (uparts, ubody) = res.into_parts();
                let body = ubody.read_all(MAX_ERROR_BODY)
                    .await
                    .unwrap_or_default();
                waited += t0.elapsed();
                let status = uparts.status;
                tracing::info!(upstream = %up.name, status = status.as_u16(), "upstream answered with an error status");
                let f = Failure::Status {
                    status,
                    headers: uparts.headers,
                    body,
                };
                if !retryable {
                    // The request itself is at fault: another target would
                    // refuse it too.
                    return Answer {
                        res: relay_failure(caller, up, up_api, f),
                        route: model,
                        upstream: up.name.to_string(),
                        waited,
                    };
                }
                f
            }
            Err(e) => Failure::Error(e),
        };
        if matches!(failure, Failure::Error(_)) {
            waited += t0.elapsed();
        }
        if let Failure::Error(e) = &failure {
            if ErrorKind::of(&**e) == Some(ErrorKind::RateLimited) {
                state.metrics.ratelimit_rejected(&up.name);
            }
            tracing::info!(upstream = %up.name, reason = %e, "upstream failed; trying the next target if any");
        }
        last = Some((up.clone(), failure));
    }
    let Some((up, failure)) = last else {
        return Answer::local(error_response(
            caller,
            StatusCode::BAD_GATEWAY,
            "the route has no usable target",
            None,
            None,
        ));
    };
    let up_api = up.api.unwrap_or(caller);
    // A failure of a kind the gateway retries, after more than one call (or
    // with retries configured: the retry layer spent its attempts, or the
    // upstream's wait hint was longer than the budget left).
    let retried = called > 1 || up.max_attempts > 1;
    // The classifier the retry layer asked: a local limit or an open circuit
    // (or an idle/total timeout) is not retryable there, so the caller may
    // still retry those.
    let classifier = LlmClassifier::new();
    let retryable = match &failure {
        Failure::Status {
            status, headers, ..
        } => classifier
            .classify(Outcome::Response {
                status: *status,
                headers,
            })
            .is_retryable(),
        Failure::Error(e) => classifier.classify(Outcome::Error(&**e)).is_retryable(),
        Failure::Untranslatable(_) => false,
    };
    let mut res = relay_failure(caller, &up, up_api, failure);
    if retried && retryable {
        no_more_retries(&mut res);
    }
    Answer {
        res,
        route: model,
        upstream: up.name.to_string(),
        waited,
    }
}

/// Bodies from this size on are inspected (and translated) on tokio's
/// blocking pool.
const BLOCKING_FROM: usize = 256 * 1024;

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

/// The checks on a request body, cheapest first: for a body long enough to
/// hold more than `max_json_values` values, count them and find its model
/// without building it (refusing a body of too many values, or a model no
/// route serves, before paying for the parse); then parse it once, route
/// it, and check it against the caller's schema.
fn inspect(
    state: &AppState,
    caller: Api,
    bytes: &[u8],
) -> Result<(ParsedBody, String), Box<Response<Body>>> {
    // Every JSON value takes at least two bytes (`1,`), but a lone one: a
    // body this short cannot go over the limit, and skips the first pass.
    let may_exceed = (bytes.len() as u64).div_ceil(2) > state.max_json_values;
    if may_exceed {
        let shape = match Shape::scan(bytes, state.max_json_values) {
            Ok(s) => s,
            Err(ShapeError::TooManyValues { limit }) => {
                tracing::info!(limit, "refused: too many JSON values");
                return Err(Box::new(error_response(
                    caller,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "the request body holds more than {limit} JSON values, this gateway's limit (max_json_values); send fewer messages or content parts"
                    ),
                    None,
                    None,
                )));
            }
            Err(ShapeError::NotJson(rejected)) => {
                return Err(Box::new(rejection_response(caller, &rejected)));
            }
        };
        // A body without a string model is refused by the schema below.
        if let Some(m) = &shape.model {
            if !state.routes.contains_key(m) {
                return Err(Box::new(unknown_model(state, caller, m)));
            }
        }
    }
    let parsed = ParsedBody::parse(bytes).map_err(|r| Box::new(rejection_response(caller, &r)))?;
    let model = parsed.model().unwrap_or_default().to_owned();
    if !model.is_empty() && !state.routes.contains_key(&model) {
        return Err(Box::new(unknown_model(state, caller, &model)));
    }
    let schema = match caller {
        Api::ChatCompletions => &state.schemas.openai,
        Api::Messages => &state.schemas.anthropic,
    };
    if let Err(rejected) = schema.check(parsed.value()) {
        tracing::info!(
            violations = rejected.violations().len(),
            "refused: invalid request"
        );
        return Err(Box::new(rejection_response(caller, &rejected)));
    }
    Ok((parsed, model))
}

/// 404 for a model no route serves, naming those it serves.
fn unknown_model(state: &AppState, caller: Api, model: &str) -> Response<Body> {
    let known: Vec<&str> = state.models.iter().map(String::as_str).collect();
    error_response(
        caller,
        StatusCode::NOT_FOUND,
        &format!(
            "the model `{model}` is not served by this gateway; it serves: {}",
            known.join(", ")
        ),
        Some("model"),
        None,
    )
}

/// How one target failed.
enum Failure {
    /// An error status (body scrubbed).
    Status {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// An error from the stack (transport, timeout, open circuit, limit, …).
    Error(BoxError),
    /// The request or answer cannot be carried to/from this target's API.
    Untranslatable(String),
}

/// The request body for a target speaking `up_api`, with its model name,
/// and its parsed form (the caller's, or the value it was serialized from:
/// never parsed again).
fn upstream_body(
    caller: Api,
    up_api: Api,
    bytes: &Bytes,
    parsed: &ParsedBody,
    model: Option<&str>,
) -> Result<(Bytes, ParsedBody), String> {
    if caller == up_api && model.is_none() {
        return Ok((bytes.clone(), parsed.clone()));
    }
    let mut value = match (caller, up_api) {
        (Api::ChatCompletions, Api::Messages) => {
            let req: openai::ChatRequest = serde_json::from_value(with_whole_budgets(parsed)?)
                .map_err(|e| format!("the request does not fit OpenAI's chat request: {e}"))?;
            let out = openai_request_to_anthropic(&req).map_err(|e| e.to_string())?;
            serde_json::to_value(out).map_err(|e| e.to_string())?
        }
        (Api::Messages, Api::ChatCompletions) => {
            let req: anthropic::MessagesRequest =
                serde_json::from_value(with_whole_budgets(parsed)?).map_err(|e| {
                    format!("the request does not fit Anthropic's messages request: {e}")
                })?;
            serde_json::to_value(anthropic_request_to_openai(&req)).map_err(|e| e.to_string())?
        }
        (Api::ChatCompletions, Api::ChatCompletions) | (Api::Messages, Api::Messages) => {
            parsed.value().clone()
        }
    };
    if let (Some(m), Some(obj)) = (model, value.as_object_mut()) {
        obj.insert("model".to_owned(), Value::String(m.to_owned()));
    }
    let out = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    let len = out.len();
    Ok((Bytes::from(out), ParsedBody::from_value(value, len)))
}

/// The output-budget fields a translation reads as integers.
const BUDGETS: [&str; 2] = ["max_tokens", "max_completion_tokens"];

/// The output budgets of `v` written as other JSON numbers (`1e3`,
/// `1000.0`) and the whole numbers they are.
///
/// # Errors
///
/// A message naming the field when its number is not a whole number from 0
/// to `u64::MAX` (`1.5`, `1e300`, `-1`).
fn whole_budgets(v: &Value) -> Result<Vec<(&'static str, u64)>, String> {
    let mut out = Vec::new();
    for key in BUDGETS {
        let Some(Value::Number(n)) = v.get(key) else {
            continue;
        };
        if n.is_u64() {
            continue;
        }
        // 2^64 as a float: the first value past u64::MAX.
        const LIMIT: f64 = 18_446_744_073_709_551_616.0;
        match n.as_f64() {
            Some(f) if (0.0..LIMIT).contains(&f) && f.fract() == 0.0 => out.push((key, f as u64)),
            _ => {
                return Err(format!(
                    "`{key}` must be a whole number from 0 to {}; got {n}",
                    u64::MAX
                ));
            }
        }
    }
    Ok(out)
}

/// A copy of the parsed body with its output budgets as integers.
fn with_whole_budgets(parsed: &ParsedBody) -> Result<Value, String> {
    let mut v = parsed.value().clone();
    for (key, n) in whole_budgets(&v)? {
        v[key] = Value::from(n);
    }
    Ok(v)
}

/// Headers of an upstream answer worth handing on.
const RELAYED_HEADERS: [&str; 4] = [
    "retry-after",
    "retry-after-ms",
    "x-request-id",
    "request-id",
];

/// Copies [`RELAYED_HEADERS`] and the answering upstream's rate-limit
/// state (`x-ratelimit-*`, `anthropic-ratelimit-*`), so callers that pace
/// themselves by them keep working behind the gateway.
fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for name in RELAYED_HEADERS {
        if let Some(v) = from.get(name) {
            to.insert(HeaderName::from_static(name), v.clone());
        }
    }
    for (name, v) in from {
        let n = name.as_str();
        if n.starts_with("x-ratelimit-") || n.starts_with("anthropic-ratelimit-") {
            to.append(name.clone(), v.clone());
        }
    }
}

/// `x-should-retry`, which the official SDKs honour over the status.
const SHOULD_RETRY: &str = "x-should-retry";

/// Marks an answer the gateway already retried (or fell back on) with
/// `x-should-retry: false`, so an SDK's own retries do not multiply the
/// upstream calls (3 gateway attempts × 3 SDK attempts = 9).
fn no_more_retries(res: &mut Response<Body>) {
    res.headers_mut()
        .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
}

/// A JSON answer, translated when the target speaks the other API.
fn json_answer(
    caller: Api,
    up: &Upstream,
    up_api: Api,
    headers: &HeaderMap,
    body: Bytes,
    metrics: &Metrics,
) -> Result<Response<Body>, String> {
    // A body cut short by an upstream that closed early (no length to hold
    // it to) is not an answer.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return Err(format!(
            "upstream `{}` sent a 2xx answer that is not complete JSON ({e}); it may have been cut short",
            up.name
        ));
    }
    let body = match (up_api, caller) {
        (Api::Messages, Api::ChatCompletions) => {
            let r: anthropic::MessagesResponse = serde_json::from_slice(&body).map_err(|e| {
                format!(
                    "upstream `{}` sent an answer that is not an Anthropic message: {e}",
                    up.name
                )
            })?;
            Bytes::from(
                serde_json::to_vec(&anthropic_response_to_openai(&r)).map_err(|e| e.to_string())?,
            )
        }
        (Api::ChatCompletions, Api::Messages) => {
            let r: openai::ChatCompletion = serde_json::from_slice(&body).map_err(|e| {
                format!(
                    "upstream `{}` sent an answer that is not an OpenAI chat completion: {e}",
                    up.name
                )
            })?;
            let out = openai_response_to_anthropic(&r).map_err(|e| e.to_string())?;
            Bytes::from(serde_json::to_vec(&out).map_err(|e| e.to_string())?)
        }
        (Api::ChatCompletions, Api::ChatCompletions) | (Api::Messages, Api::Messages) => body,
    };
    count_usage(&body, &up.name, metrics);
    let mut res = Response::new(Body::from(body));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    copy_headers(headers, res.headers_mut());
    Ok(res)
}

fn count_usage(body: &Bytes, upstream: &str, metrics: &Metrics) {
    let mut obs = ResponseObserver::new(Some("application/json"));
    obs.feed(body);
    let s = obs.finish();
    metrics.add_tokens(upstream, "input", s.input_tokens.unwrap_or(0));
    metrics.add_tokens(upstream, "output", s.output_tokens.unwrap_or(0));
}

/// The caller's answer for a failed target.
fn relay_failure(caller: Api, up: &Upstream, up_api: Api, f: Failure) -> Response<Body> {
    let name = &up.name;
    match f {
        Failure::Status {
            status,
            headers,
            body,
        } => {
            let mut res = if up_api == caller && parse_upstream_error(&body).is_some() {
                let mut res = Response::new(Body::from(body));
                res.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                res
            } else {
                let msg = match parse_upstream_error(&body) {
                    Some((kind, m)) => format!("upstream `{name}` answered {status} ({kind}): {m}"),
                    None => format!(
                        "upstream `{name}` answered {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(500)])
                    ),
                };
                error_response(caller, status, &msg, None, None)
            };
            *res.status_mut() = status;
            copy_headers(&headers, res.headers_mut());
            res
        }
        Failure::Untranslatable(msg) => error_response(
            caller,
            StatusCode::BAD_GATEWAY,
            &format!("upstream `{name}`: {msg}"),
            None,
            None,
        ),
        Failure::Error(e) => {
            // The status and Retry-After: palisade's public mapping, the
            // one a library user's own server gets from `caller_status`.
            let (status, wait) = palisade_core::caller_status(&*e);
            let msg = match ErrorKind::of(&*e) {
                Some(ErrorKind::CircuitOpen) => format!(
                    "upstream `{name}` is unavailable: its circuit breaker is open after repeated failures; retry later ({e})"
                ),
                Some(ErrorKind::RateLimited) => format!(
                    "the gateway's rate limit for upstream `{name}` is reached; retry later ({e})"
                ),
                Some(ErrorKind::Timeout) => format!("upstream `{name}` timed out: {e}"),
                Some(ErrorKind::Transport(_)) => {
                    format!("upstream `{name}` could not be reached: {e}")
                }
                _ => format!("upstream `{name}` failed: {e}"),
            };
            error_response(caller, status, &msg, None, wait)
        }
    }
}
