//! One call to one target of a route: the request in the target's API, the
//! call, and its answer for the caller — a stream ([`Call::stream`]) or a
//! JSON answer ([`Call::json`]) — or how it failed ([`Failure`]), which
//! the fallback loop in `proxy` weighs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::IntoResponse;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::StreamBody;
use palisade::retry::{Attempts, MaxAttempts};
use palisade_core::classify::{ClassifyOutcome, Outcome};
use palisade_core::{
    BodyTooLarge, BoxError, Budget, Elapsed, ErrorKind, ParsedBody, RequestBody, find,
};
use palisade_providers::Api;
use palisade_providers::dialect::responses;
use palisade_providers::errors::parse_error;
use palisade_providers::observe::{Observation, ResponseObserver};
use palisade_trace::{TRACE_ID_HEADER, TraceContext};
use serde_json::Value;

use crate::error::GatewayError;
use crate::inbound::BLOCKING_FROM;
use crate::metrics::Metrics;
use crate::relay::{Bounds, Relay, Sides};
use crate::upstream::{Upstream, UpstreamBody};
use crate::{AppState, RouteTarget};

/// The largest upstream error body relayed.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// How one target failed.
pub(crate) enum Failure {
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
    /// A 2xx answer that cannot be relayed: over `max_answer_bytes`, not
    /// complete JSON, or not an answer of the target's API.
    BadAnswer(String),
}

/// What one call to a target came to.
pub(crate) enum Attempt {
    /// The caller's answer: a success, or a failure no other target would
    /// change (the request itself is at fault, or its budget cannot be
    /// carried).
    Answer(Response<Body>),
    /// This target failed; the next may serve.
    Failed(Failure),
    /// A JSON answer broke off or stalled mid-body: ask the same target
    /// again; the attempts spent on it so far, the retry layer's included.
    Again(u32),
}

/// One request on its way through its route's targets.
pub(crate) struct Call<'a> {
    pub(crate) state: &'a Arc<AppState>,
    pub(crate) caller: Api,
    /// The caller's headers (`anthropic-beta` is handed on).
    pub(crate) headers: &'a HeaderMap,
    pub(crate) bytes: Bytes,
    pub(crate) parsed: ParsedBody,
    pub(crate) trace: &'a TraceContext,
    pub(crate) started: Instant,
    /// Time spent waiting on the caller's body and on upstreams: the rest
    /// is the gateway's own.
    pub(crate) waited: Duration,
    /// Upstream calls made (for `x-should-retry` on the final failure).
    pub(crate) calls: usize,
    /// What the latest translation left out (reported to the caller in
    /// [`UNTRANSLATED_HEADER`]).
    pub(crate) untranslated: Vec<String>,
}

/// Names the request fields a translation left out (no counterpart in the
/// answering target's API), comma-separated; absent when nothing was.
pub(crate) const UNTRANSLATED_HEADER: &str = "x-palisade-untranslated";

impl Call<'_> {
    /// Calls `target` once. `spent` counts the attempts already spent on
    /// this target for this request (0 at first; more when a JSON answer
    /// broke off or stalled and it is asked again): the retry layer gets
    /// what is left of `max_attempts`, so one request never makes more
    /// than `max_attempts` attempts on one target (resends after a stale
    /// pooled connection aside, which are not attempts).
    ///
    /// `pass_on`: another member of `target`'s tier follows it, so a 429 is
    /// handed back at once for it (`PassOnRateLimit`), not waited out by
    /// `target`'s retry layer.
    pub(crate) async fn attempt(
        &mut self,
        target: &RouteTarget,
        spent: u32,
        pass_on: bool,
    ) -> Attempt {
        let (req, up_api) = match self.prepare(target, spent, pass_on).await {
            Ok(r) => r,
            Err(a) => return a,
        };
        let t0 = Instant::now();
        self.calls += 1;
        let res = target.upstream.call(req).await;
        self.finish(&target.upstream, up_api, res, t0, spent).await
    }

    /// Calls `first`, and — when it has no content event after `after`
    /// and `tier`'s hedge budget allows — `rival` (the next member of its
    /// tier) too: the first of the two to reach a content event (or an
    /// answer another member would not change, like a 400) is the answer,
    /// and the other is dropped, its connection closed and the output its
    /// `tokens_per_minute` reserved refunded (its prompt kept). One failing (a 5xx, 429, transport error, a
    /// stream failing before content) leaves the race to the other. Nothing
    /// reaches the caller before the winner is known. Returns the answer,
    /// whether it is `rival`'s, and whether `rival` was called. `pass_on`:
    /// another member of the tier follows `rival`.
    pub(crate) async fn attempt_hedged(
        &mut self,
        (first, rival): (&RouteTarget, &RouteTarget),
        tier: &palisade_balance::Balance<()>,
        after: Duration,
        pass_on: bool,
    ) -> (Attempt, bool, bool) {
        let (req, first_api) = match self.prepare(first, 0, true).await {
            Ok(r) => r,
            Err(a) => return (a, false, false),
        };
        let first_lost = std::mem::take(&mut self.untranslated);
        let t0 = Instant::now();
        self.calls += 1;
        let mut a = Box::pin(first.upstream.call_reading(req, true));
        let answered = tokio::select! {
            r = &mut a => Some(r),
            () = tokio::time::sleep(after) => None,
        };
        let hedge = match answered {
            Some(r) => Err(r),
            None => match self.prepare(rival, 0, pass_on).await {
                Ok(prepared) if tier.take_hedge() => Ok(prepared),
                // No hedge in the budget, or the rival cannot take the
                // request (translation).
                _ => Err((&mut a).await),
            },
        };
        let (req, rival_api) = match hedge {
            Ok(prepared) => prepared,
            Err(r) => {
                self.untranslated = first_lost;
                let res = r.map(|(res, _)| res);
                return (
                    self.finish(&first.upstream, first_api, res, t0, 0).await,
                    false,
                    false,
                );
            }
        };
        let rival_lost = std::mem::take(&mut self.untranslated);
        self.state
            .metrics
            .hedge(&first.upstream.name, &rival.upstream.name);
        tracing::info!(first = %first.upstream.name, rival = %rival.upstream.name, after_ms = after.as_millis() as u64, "no content event in time; hedging on another member of the tier");
        self.calls += 1;
        let mut b = Box::pin(rival.upstream.call_reading(req, true));
        let mut a_lost = false;
        let mut b_lost = false;
        // The first to win, or the last to lose.
        let (res, rivals) = loop {
            tokio::select! {
                r = &mut a, if !a_lost => {
                    if b_lost || self.wins(&first.upstream, &r) {
                        break (r, false);
                    }
                    a_lost = true;
                }
                r = &mut b, if !b_lost => {
                    if a_lost || self.wins(&rival.upstream, &r) {
                        break (r, true);
                    }
                    b_lost = true;
                }
            }
        };
        // The loser, still running, is cancelled here.
        drop((a, b));
        let res = res.map(|(res, _)| res);
        let answer = if rivals {
            self.untranslated = rival_lost;
            self.finish(&rival.upstream, rival_api, res, t0, 0).await
        } else {
            self.untranslated = first_lost;
            self.finish(&first.upstream, first_api, res, t0, 0).await
        };
        (answer, rivals, true)
    }

    /// Whether a hedged call's attempt ends the race: it reached content,
    /// or answered what another member would not change (a 400); not a
    /// failure its upstream's classifier or a 429 names, an error, or a
    /// stream that failed before content.
    fn wins(
        &self,
        up: &Upstream,
        r: &Result<(Response<UpstreamBody>, palisade_balance::Reached), BoxError>,
    ) -> bool {
        let Ok((res, reached)) = r else {
            return false;
        };
        let status = res.status();
        if status.is_success() {
            return *reached != palisade_balance::Reached::Failed;
        }
        status != StatusCode::TOO_MANY_REQUESTS
            && !up
                .classifier
                .classify(Outcome::Response {
                    status,
                    headers: res.headers(),
                })
                .is_failure()
    }

    /// The request for `target` (in its API, with what is left of its
    /// attempts when `spent`, marked `PassOnRateLimit` when `pass_on`), or
    /// why it is not called.
    async fn prepare(
        &mut self,
        target: &RouteTarget,
        spent: u32,
        pass_on: bool,
    ) -> Result<(Request<RequestBody>, Api), Attempt> {
        let up = &target.upstream;
        let Some(up_api) = up.target_api(self.caller) else {
            return Err(Attempt::Failed(Failure::Untranslatable(format!(
                "it does not serve {} and such calls are not translated",
                self.caller
            ))));
        };
        if up_api != self.caller
            && let Some(need) = responses::needs_state(self.parsed.value())
                .filter(|_| self.caller == Api::Responses)
        {
            return Err(Attempt::Failed(Failure::Untranslatable(format!(
                "the request needs state stored by the provider ({need}), and this upstream does not serve the Responses API"
            ))));
        }
        match self.request_for(up, up_api, target.model.as_deref()).await {
            Ok(mut r) => {
                if spent > 0 {
                    let left = up.max_attempts.saturating_sub(spent).max(1);
                    r.extensions_mut().insert(MaxAttempts(left));
                }
                if pass_on {
                    r.extensions_mut().insert(palisade_core::PassOnRateLimit);
                }
                Ok((r, up_api))
            }
            Err(Skip::Refuse(e)) => Err(Attempt::Answer(e.into_response())),
            Err(Skip::Next(msg)) => {
                tracing::info!(upstream = %up.name, reason = %msg, "cannot translate the request for this upstream; trying the next target");
                Err(Attempt::Failed(Failure::Untranslatable(msg)))
            }
        }
    }

    /// What `up`'s answer `res` to a call made at `t0` comes to.
    async fn finish(
        &mut self,
        up: &Arc<Upstream>,
        up_api: Api,
        res: Result<Response<UpstreamBody>, BoxError>,
        t0: Instant,
        spent: u32,
    ) -> Attempt {
        let res = match res {
            Ok(res) => res,
            Err(e) => {
                self.waited += t0.elapsed();
                return Attempt::Failed(Failure::Error(e));
            }
        };
        let status = res.status();
        if status.is_success() {
            let answer = if self.parsed.is_stream() {
                self.stream(up, up_api, res, t0).await
            } else {
                self.json(up, up_api, res, t0, spent).await
            };
            self.report_untranslated(answer)
        } else if status.is_informational() {
            self.waited += t0.elapsed();
            Attempt::Failed(Failure::Error(
                format!(
                    "upstream `{}` answered {status} to a request that asked for no protocol switch or interim answer",
                    up.name
                )
                .into(),
            ))
        } else {
            self.error_status(up, up_api, res, t0).await
        }
    }

    /// Names what the translation left out on a successful answer.
    fn report_untranslated(&self, answer: Attempt) -> Attempt {
        match answer {
            Attempt::Answer(mut res) if !self.untranslated.is_empty() => {
                if let Ok(v) = HeaderValue::from_str(&self.untranslated.join(", ")) {
                    res.headers_mut().insert(UNTRANSLATED_HEADER, v);
                }
                Attempt::Answer(res)
            }
            other => other,
        }
    }

    /// The request for `up`, a target speaking `up_api`, under `model` if
    /// the route renames it.
    async fn request_for(
        &mut self,
        up: &Upstream,
        up_api: Api,
        model: Option<&str>,
    ) -> Result<Request<RequestBody>, Skip> {
        let caller = self.caller;
        if up_api != caller {
            // A budget the other API's typed request cannot carry is the
            // caller's mistake (400), not this upstream's (502).
            whole_budgets(self.parsed.value()).map_err(|msg| {
                Skip::Refuse(GatewayError::new(caller, StatusCode::BAD_REQUEST, msg))
            })?;
        }
        let translated = if self.bytes.len() >= BLOCKING_FROM
            && (caller != up_api || model.is_some())
        {
            let (b, p, m) = (
                self.bytes.clone(),
                self.parsed.clone(),
                model.map(str::to_owned),
            );
            tokio::task::spawn_blocking(move || upstream_body(caller, up_api, &b, &p, m.as_deref()))
                .await
                .unwrap_or_else(|e| Err(format!("translating the request failed: {e}")))
        } else {
            upstream_body(caller, up_api, &self.bytes, &self.parsed, model)
        };
        let (body, parsed, untranslated) = translated.map_err(Skip::Next)?;
        self.untranslated = untranslated;
        let trace = self.trace;
        let mut req = Request::post(up.path(up_api).as_ref())
            .header(CONTENT_TYPE, "application/json")
            .header(TRACE_ID_HEADER, trace.id())
            .header("traceparent", trace.traceparent());
        if let Some(ts) = trace.tracestate() {
            req = req.header("tracestate", ts);
        }
        if up_api == Api::Messages && caller == Api::Messages {
            if let Some(beta) = self.headers.get("anthropic-beta") {
                req = req.header("anthropic-beta", beta.clone());
            }
        }
        let mut req = req
            .body(RequestBody::new(body))
            .map_err(|e| Skip::Next(format!("cannot build the upstream request: {e}")))?;
        // The parsed body travels with the request (trace, token estimation
        // read it without parsing again), and so does the API it is in: an
        // upstream serving several reads each call as its own.
        req.extensions_mut().insert(parsed);
        req.extensions_mut().insert(up_api);
        Ok(req)
    }

    /// A streamed answer: relayed from its first event on, in the caller's
    /// API, with the upstream's request id and rate-limit headers.
    async fn stream(
        &mut self,
        up: &Arc<Upstream>,
        up_api: Api,
        res: Response<UpstreamBody>,
        t0: Instant,
    ) -> Attempt {
        let (parts, body) = res.into_parts();
        let observation = parts.extensions.get::<Observation>().cloned();
        let mut events = body.events(&parts.extensions);
        let first = match events.next().await {
            Some(Ok(first)) => first,
            Some(Err(e)) => {
                self.waited += t0.elapsed();
                return Attempt::Failed(Failure::Error(e.into()));
            }
            None => {
                self.waited += t0.elapsed();
                return Attempt::Failed(Failure::Error(
                    "the stream ended before its first event".into(),
                ));
            }
        };
        self.waited += t0.elapsed();
        let state = self.state;
        let deadline = tokio::time::Instant::from_std(self.started)
            .checked_add(up.total)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1 << 30));
        let relay = Relay::new(
            events,
            first,
            Sides {
                caller: self.caller,
                upstream_api: up_api,
                caller_request: self.parsed.value(),
                observation,
                request_lost: self.untranslated.clone(),
            },
            up.clone(),
            state.metrics.clone(),
            Bounds {
                cut: state.signals.cut.subscribe(),
                deadline,
                started: self.started,
            },
        );
        let mut res = Response::new(Body::new(StreamBody::new(relay)));
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        copy_headers(&parts.headers, h);
        Attempt::Answer(res)
    }

    /// A JSON answer, read whole (up to `max_answer_bytes`: above it, a
    /// failure naming the upstream, 502 if no other target serves) and
    /// translated where the target speaks the other API; one that broke off
    /// or stalled (the target's `idle` timeout) mid-body is asked for again,
    /// up to the target's `max_attempts`.
    async fn json(
        &mut self,
        up: &Upstream,
        up_api: Api,
        res: Response<UpstreamBody>,
        t0: Instant,
        spent: u32,
    ) -> Attempt {
        let (parts, body) = res.into_parts();
        // This call's attempts, the retry layer's included.
        let spent = spent + parts.extensions.get::<Attempts>().map_or(1, |a| a.0);
        let limit = self.state.max_answer_bytes;
        let read = body.read_all(limit).await;
        self.waited += t0.elapsed();
        match read {
            Ok(b) => match json_answer(self.caller, up, up_api, &parts, b, &self.state.metrics) {
                Ok((res, lost)) => {
                    let lost = Lost {
                        caller: self.caller,
                        request: self.untranslated.clone(),
                        upstream_api: up_api,
                        answer: lost,
                    };
                    lost.report(&self.state.metrics, &tracing::Span::current());
                    Attempt::Answer(res)
                }
                Err(msg) => Attempt::Failed(Failure::BadAnswer(msg)),
            },
            Err(e) if find::<BodyTooLarge>(&*e).is_some() => {
                tracing::warn!(upstream = %up.name, limit, "the upstream's answer is over max_answer_bytes");
                Attempt::Failed(Failure::BadAnswer(format!(
                    "its answer is over this gateway's limit of {limit} bytes for an upstream answer (max_answer_bytes); raise the limit, or ask for a shorter answer or a stream"
                )))
            }
            Err(e) if spent < up.max_attempts && broke_off(up, &*e) => {
                tracing::info!(upstream = %up.name, reason = %e, attempts = spent, "the JSON answer broke off or stalled mid-body; asking the same target again");
                Attempt::Again(spent)
            }
            Err(e) => Attempt::Failed(Failure::Error(e)),
        }
    }

    /// An error status: relayed at once when the request itself is at
    /// fault (another target would refuse it too), else a failure to fall
    /// back from.
    async fn error_status(
        &mut self,
        up: &Upstream,
        up_api: Api,
        res: Response<UpstreamBody>,
        t0: Instant,
    ) -> Attempt {
        let retryable = up
            .classifier
            .classify(Outcome::response(&res))
            .is_retryable();
        let (parts, body) = res.into_parts();
        let body = body.read_all(MAX_ERROR_BODY).await.unwrap_or_default();
        self.waited += t0.elapsed();
        let status = parts.status;
        tracing::info!(upstream = %up.name, status = status.as_u16(), "upstream answered with an error status");
        let f = Failure::Status {
            status,
            headers: parts.headers,
            body,
        };
        if retryable {
            Attempt::Failed(f)
        } else {
            Attempt::Answer(failure_answer(self.caller, up, up_api, f))
        }
    }
}

/// Whether reading a JSON answer failed in a way a new call may not: the
/// connection broke (what the retry layer would retry before the head) or
/// the answer stalled past the target's `idle` timeout. A `total` timeout
/// is not: the request's whole budget is spent.
fn broke_off(up: &Upstream, e: &(dyn std::error::Error + 'static)) -> bool {
    match find::<Elapsed>(e) {
        Some(elapsed) => elapsed.budget() == Budget::Idle,
        None => up.classifier.classify(Outcome::Error(e)).is_retryable(),
    }
}

/// Why a target is not called.
enum Skip {
    /// The caller's request cannot be served by any target.
    Refuse(GatewayError),
    /// This target cannot take it; the next may.
    Next(String),
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
) -> Result<Translated, String> {
    if caller == up_api && model.is_none() {
        return Ok((bytes.clone(), parsed.clone(), Vec::new()));
    }
    let (mut value, untranslated) = if caller == up_api {
        // The same API under another model name.
        (parsed.value().clone(), Vec::new())
    } else {
        // Through the neutral model: the caller's API read, the target's
        // written (no code per pair of APIs).
        let (Some(read), Some(write)) = (caller.dialect(), up_api.dialect()) else {
            return Err(format!("{caller} calls are not translated to {up_api}"));
        };
        let neutral = read
            .read_request(&with_whole_budgets(parsed)?)
            .map_err(|e| e.to_string())?;
        let written = write.write_request(&neutral).map_err(|e| e.to_string())?;
        let mut untranslated = neutral.untranslated;
        untranslated.extend(written.left_out);
        (written.body, untranslated)
    };
    if let (Some(m), Some(obj)) = (model, value.as_object_mut()) {
        obj.insert("model".to_owned(), Value::String(m.to_owned()));
    }
    let out = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    let len = out.len();
    Ok((
        Bytes::from(out),
        ParsedBody::from_value(value, len),
        untranslated,
    ))
}

/// A request body for a target: its bytes, parsed form, and the fields
/// with no counterpart in the target's API (left out).
type Translated = (Bytes, ParsedBody, Vec<String>);

/// The output-budget fields a translation reads as integers.
const BUDGETS: [&str; 3] = ["max_tokens", "max_completion_tokens", "max_output_tokens"];

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

/// What one call's translations left out: fields of the caller's request
/// and of the upstream's answer with no counterpart on the other side.
pub(crate) struct Lost {
    pub(crate) caller: Api,
    pub(crate) request: Vec<String>,
    pub(crate) upstream_api: Api,
    pub(crate) answer: Vec<String>,
}

impl Lost {
    /// Counts each field (`palisade_untranslated_total{api,field}`, `api`
    /// the API whose request or answer had it), logs one line, and records
    /// the list on the request's span (`palisade.untranslated`).
    pub(crate) fn report(&self, metrics: &Metrics, span: &tracing::Span) {
        if self.request.is_empty() && self.answer.is_empty() {
            return;
        }
        for f in &self.request {
            metrics.untranslated(self.caller.id(), f);
        }
        for f in &self.answer {
            metrics.untranslated(self.upstream_api.id(), f);
        }
        let list = format!(
            "request ({}): {}; answer ({}): {}",
            self.caller.id(),
            or_none(&self.request),
            self.upstream_api.id(),
            or_none(&self.answer)
        );
        span.record("palisade.untranslated", list.as_str());
        tracing::info!(parent: span, untranslated = %list, "left out by translation: no counterpart in the other API");
    }
}

fn or_none(fields: &[String]) -> String {
    if fields.is_empty() {
        "none".to_owned()
    } else {
        fields.join(", ")
    }
}

/// A JSON answer, translated when the target speaks another API, with the
/// answer's fields the translation left out.
fn json_answer(
    caller: Api,
    up: &Upstream,
    up_api: Api,
    parts: &http::response::Parts,
    body: Bytes,
    metrics: &Metrics,
) -> Result<(Response<Body>, Vec<String>), String> {
    let headers = &parts.headers;
    // A body cut short by an upstream that closed early (no length to hold
    // it to) is not an answer.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return Err(format!(
            "upstream `{}` sent a 2xx answer that is not complete JSON ({e}); it may have been cut short",
            up.name
        ));
    }
    // The usage the upstream's stack already read from this answer (its
    // observation: the trace layer watches every answer, as the API the
    // call was made in).
    let seen = parts
        .extensions
        .get::<Observation>()
        .map(Observation::summary);
    let (body, read_as, lost) = if up_api == caller {
        (body, up_api, Vec::new())
    } else {
        let (Some(read), Some(write)) = (up_api.dialect(), caller.dialect()) else {
            return Err(format!("{up_api} answers are not translated to {caller}"));
        };
        let answer = read.read_answer(&body).map_err(|e| {
            format!(
                "upstream `{}` sent an answer that is not an {up_api} answer: {e}",
                up.name
            )
        })?;
        let out = write.write_answer(&answer).map_err(|e| e.to_string())?;
        let mut lost = answer.untranslated;
        lost.extend(out.left_out);
        (Bytes::from(out.body), caller, lost)
    };
    // Without a stack's observation (its trace layer off), read here.
    let summary = seen.unwrap_or_else(|| {
        let mut obs = ResponseObserver::new(read_as, Some("application/json"));
        obs.feed(&body);
        obs.finish()
    });
    metrics.add_tokens(&up.name, "input", summary.input_tokens.unwrap_or(0));
    metrics.add_tokens(&up.name, "output", summary.output_tokens.unwrap_or(0));
    let mut res = Response::new(Body::from(body));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    copy_headers(headers, res.headers_mut());
    Ok((res, lost))
}

/// The caller's answer for a failed target: a same-API error body relayed
/// as it came (scrubbed), anything else as a [`GatewayError`] naming the
/// upstream; the upstream's request id and rate-limit headers kept.
pub(crate) fn failure_answer(
    caller: Api,
    up: &Upstream,
    up_api: Api,
    f: Failure,
) -> Response<Body> {
    let name = &up.name;
    match f {
        Failure::Status {
            status,
            headers,
            body,
        } => {
            let parsed = parse_error(&body);
            let mut res = if up_api == caller && parsed.is_some() {
                let mut res = Response::new(Body::from(body));
                res.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                res
            } else {
                let msg = match parsed {
                    Some((kind, m)) => format!("upstream `{name}` answered {status} ({kind}): {m}"),
                    None => format!(
                        "upstream `{name}` answered {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(500)])
                    ),
                };
                GatewayError::new(caller, status, msg).into_response()
            };
            *res.status_mut() = status;
            copy_headers(&headers, res.headers_mut());
            res
        }
        // The request cannot be carried to this target's API: the request,
        // as written, is what no target could serve (400).
        Failure::Untranslatable(msg) => GatewayError::new(
            caller,
            StatusCode::BAD_REQUEST,
            format!("upstream `{name}` cannot take this request: {msg}"),
        )
        .into_response(),
        Failure::BadAnswer(msg) => GatewayError::new(
            caller,
            StatusCode::BAD_GATEWAY,
            format!("upstream `{name}`: {msg}"),
        )
        .into_response(),
        Failure::Error(e) => {
            // The status and Retry-After: palisade's public mapping, the
            // one a library user's own server gets from `caller_status`.
            let (status, wait) = palisade_core::caller_status(&*e);
            // The shared limits' Redis is down and they fail closed: the
            // gateway's own outage, not the upstream's (its address and
            // the library's advice stay in the log).
            if find::<palisade::ratelimit::BackendUnavailable>(&*e).is_some() {
                tracing::warn!(upstream = %name, reason = %e, "refused: the shared limits' Redis is unavailable (fail_open = false)");
                return GatewayError::new(
                    caller,
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the gateway's shared rate limits for upstream `{name}` are unavailable (their Redis cannot be reached); retry later"),
                )
                .into_response();
            }
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
            GatewayError::new(caller, status, msg)
                .retry_after(wait)
                .into_response()
        }
    }
}
