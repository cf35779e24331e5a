//! Hedging: a call with no content event after `hedge_after` gets a second
//! attempt on another member; the first to reach content wins and the other
//! is cancelled.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use palisade_core::classify::{ClassifyOutcome, LlmClassifier, Outcome};
use palisade_core::{BoxError, ErrorKind, RequestBody};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::util::Oneshot;
use tower_service::Service;

use crate::balance::{Shared, with};
use crate::body::{BalancedBody, Reached};
use crate::member::Tracking;

/// A thousandth of a hedge: the budget's unit.
const HEDGE: u64 = 1000;
/// The most hedges saved up (a burst after a quiet spell).
const MAX_CREDIT: u64 = 10 * HEDGE;

/// Hedging's settings and budget: each call earns `ratio` of a hedge, each
/// hedge spends one, so hedges never exceed `ratio` of calls.
pub(crate) struct Hedging {
    pub(crate) after: Duration,
    per_call: u64,
    credit: AtomicU64,
    pub(crate) hedges: AtomicU64,
}

impl Hedging {
    pub(crate) fn new(after: Duration, ratio: f64) -> Self {
        Self {
            after,
            // A ratio is checked to be in [0, 1] when the balance is built.
            per_call: (ratio * HEDGE as f64).round() as u64,
            credit: AtomicU64::new(0),
            hedges: AtomicU64::new(0),
        }
    }

    /// A call starts: it earns its share of a hedge.
    pub(crate) fn deposit(&self) {
        let per_call = self.per_call;
        let _ = self
            .credit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some((c + per_call).min(MAX_CREDIT))
            });
    }

    /// A hedge, if the budget has one.
    pub(crate) fn withdraw(&self) -> bool {
        let spent = self
            .credit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                c.checked_sub(HEDGE)
            })
            .is_ok();
        if spent {
            self.hedges.fetch_add(1, Ordering::Relaxed);
        }
        spent
    }
}

/// A hedged call: one attempt, a second once `after` passes with no content
/// event (budget and another member allowing), the first to reach content
/// the answer.
pub(crate) struct Race<S, B>
where
    S: Service<Request<RequestBody>>,
    B: Body,
{
    runs: Vec<Pin<Box<Run<S, B>>>>,
    /// Until the hedge; gone once it fired.
    timer: Option<Pin<Box<Sleep>>>,
    /// The request, for a hedge or for another member after a refusal.
    req: Request<RequestBody>,
    /// Members that refused or failed this call, or are running it.
    tried: u64,
}

impl<S, B> Race<S, B>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = BoxError> + Clone,
    B: Body<Data = Bytes>,
{
    pub(crate) fn new(shared: &Shared<S>, first: usize, req: Request<RequestBody>) -> Self {
        let after = shared.hedging.as_ref().map_or(Duration::ZERO, |h| h.after);
        let mut race = Self {
            runs: Vec::with_capacity(2),
            timer: Some(Box::pin(tokio::time::sleep_until(Instant::now() + after))),
            req,
            tried: 0,
        };
        race.start(shared, first);
        race
    }

    fn start(&mut self, shared: &Shared<S>, member: usize) {
        let slot = shared.slot(member);
        let req = self.req.clone();
        let pass_on = shared.others(member, self.tried, Instant::now());
        self.tried = with(self.tried, member);
        self.runs.push(Box::pin(Run {
            pass_on,
            tracking: Some(slot.load.start(&req)),
            call: Oneshot::new(slot.service.clone(), req),
            answer: None,
        }));
    }

    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Shared<S>,
    ) -> Poll<Result<Response<BalancedBody<B>>, BoxError>> {
        loop {
            let mut k = 0;
            while k < self.runs.len() {
                let Poll::Ready(ran) = self.runs[k].as_mut().poll(cx, &shared.classifier) else {
                    k += 1;
                    continue;
                };
                self.runs.remove(k);
                let (out, refused, failure) = match ran {
                    // The first to content wins; the other is dropped here:
                    // its call or body is cancelled (its connection closed,
                    // the output its token limit reserved refunded) and it stops being
                    // in flight on its member, with no penalty.
                    Ran::Won(res) => {
                        self.runs.clear();
                        return Poll::Ready(Ok(res));
                    }
                    Ran::Lost {
                        out,
                        refused,
                        failure,
                    } => (out, refused, failure),
                };
                if !self.runs.is_empty() {
                    if failure {
                        // The rival may still answer.
                        continue;
                    }
                    // An answer no other member would change (a 400).
                    self.runs.clear();
                    return Poll::Ready(out);
                }
                // Refused (a 429, its own breaker or limiter): another
                // member at once, if one can take it.
                if refused && let Ok(next) = shared.pick_except(Instant::now(), self.tried) {
                    drop(out);
                    self.start(shared, next);
                    // The member taking over gets its own `hedge_after`.
                    if let (Some(timer), Some(h)) = (self.timer.as_mut(), &shared.hedging) {
                        timer.as_mut().reset(Instant::now() + h.after);
                    }
                    k = 0;
                    continue;
                }
                return Poll::Ready(out);
            }
            let Some(timer) = self.timer.as_mut() else {
                return Poll::Pending;
            };
            ready!(timer.as_mut().poll(cx));
            self.timer = None;
            // No content yet: a second attempt on another member, if one
            // can take it and the budget has a hedge.
            if self.runs.len() == 1
                && let Some(hedging) = &shared.hedging
                && let Ok(next) = shared.pick_except(Instant::now(), self.tried)
                && hedging.withdraw()
            {
                self.start(shared, next);
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// What one attempt of a race came to.
enum Ran<B: Body> {
    /// Its first content event (or its end), read ahead and kept.
    Won(Response<BalancedBody<B>>),
    /// Anything else: a failure status, an error, a stream that failed
    /// before its first content.
    Lost {
        out: Result<Response<BalancedBody<B>>, BoxError>,
        /// Refused without an answer of the deployment's (a 429, its own
        /// breaker or limiter).
        refused: bool,
        /// The member failed (a rival may do better); else the answer is
        /// one any member would give (a 400).
        failure: bool,
    },
}

pin_project! {
    /// One attempt of a race: the call, then its answer read to its first
    /// content.
    struct Run<S, B>
    where
        S: Service<Request<RequestBody>>,
        B: Body,
    {
        #[pin]
        call: Oneshot<S, Request<RequestBody>>,
        // Another member could take it when it started: its retry layer
        // hands a 429 back at once (`palisade_core::passing_on`).
        pass_on: bool,
        tracking: Option<Tracking>,
        // The answer, its body boxed so it can be read ahead pinned and
        // still be handed on.
        answer: Option<(http::response::Parts, Pin<Box<BalancedBody<B>>>)>,
    }
}

impl<S, B> Run<S, B>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = BoxError>,
    B: Body<Data = Bytes>,
{
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        classifier: &LlmClassifier,
    ) -> Poll<Ran<B>> {
        let this = self.project();
        if this.answer.is_none() {
            let call = this.call;
            let answer = ready!(palisade_core::with_passing_on(
                *this.pass_on || palisade_core::passing_on(),
                || call.poll(cx)
            ));
            let Some(tracking) = this.tracking.take() else {
                return Poll::Ready(Ran::Lost {
                    out: Err("hedged call polled after it ended".into()),
                    refused: false,
                    failure: false,
                });
            };
            match answer {
                Ok(res) => {
                    let status = res.status();
                    let res = tracking.answered(res);
                    if !status.is_success() {
                        let refused = status == StatusCode::TOO_MANY_REQUESTS;
                        let failure = refused
                            || classifier
                                .classify(Outcome::Response {
                                    status,
                                    headers: res.headers(),
                                })
                                .is_failure();
                        return Poll::Ready(Ran::Lost {
                            out: Ok(res),
                            refused,
                            failure,
                        });
                    }
                    let (parts, body) = res.into_parts();
                    *this.answer = Some((parts, Box::pin(body)));
                }
                Err(e) => {
                    let refused = matches!(
                        ErrorKind::of(&*e),
                        Some(ErrorKind::CircuitOpen | ErrorKind::RateLimited)
                    );
                    tracking.failed(&e);
                    return Poll::Ready(Ran::Lost {
                        out: Err(e),
                        refused,
                        failure: true,
                    });
                }
            }
        }
        let Some((_, body)) = this.answer.as_mut() else {
            return Poll::Pending;
        };
        let reached = ready!(body.as_mut().poll_content(cx));
        let Some((parts, body)) = this.answer.take() else {
            return Poll::Pending;
        };
        let res = Response::from_parts(parts, BalancedBody::pinned(body));
        Poll::Ready(match reached {
            Reached::Failed => Ran::Lost {
                out: Ok(res),
                refused: false,
                failure: true,
            },
            _ => Ran::Won(res),
        })
    }
}
