//! [`ResponseFuture`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use palisade_core::classify::{Classification, ClassifyOutcome, Outcome, Reason};
use palisade_core::{BoxError, CircuitOpen};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use palisade_sse::SharedScan;

use crate::body::BreakerBody;
use crate::circuit::{Permit, Verdict};

pin_project! {
    /// The future of [`Breaker`](crate::Breaker)'s `call`: the inner call, or
    /// the refusal of an open circuit.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        Call {
            #[pin]
            fut: F,
            // `None` once the call's outcome was handed on.
            permit: Option<Permit>,
            classifier: C,
            // When the call becomes slow (set only with a slow-call threshold).
            slow_at: Option<Instant>,
        },
        Refused { err: Option<CircuitOpen> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn new(fut: F, permit: Permit, classifier: C, slow: Option<Duration>) -> Self {
        Self {
            kind: Kind::Call {
                fut,
                permit: Some(permit),
                classifier,
                slow_at: slow.map(|d| Instant::now() + d),
            },
        }
    }

    pub(crate) fn refused(err: CircuitOpen) -> Self {
        Self {
            kind: Kind::Refused { err: Some(err) },
        }
    }
}

/// Admits a call through `circuit` (calling `inner`) or refuses it: the
/// `call` of both breaker services.
#[inline]
pub(crate) fn admit<S, B, C>(
    circuit: &std::sync::Arc<crate::circuit::Circuit>,
    inner: &mut S,
    req: http::Request<B>,
    classifier: &C,
) -> ResponseFuture<S::Future, C>
where
    S: tower_service::Service<http::Request<B>>,
    C: Clone,
{
    match circuit.acquire() {
        Ok(permit) => ResponseFuture::new(
            inner.call(req),
            permit,
            classifier.clone(),
            circuit.config.slow_call,
        ),
        Err(open) => ResponseFuture::refused(open),
    }
}

/// What a classification means for the circuit: `None` when the outcome says
/// nothing about the upstream (refused locally, invalid request).
pub(crate) fn verdict(class: Classification) -> Option<Verdict> {
    if class.is_failure() {
        return Some(Verdict::Failure);
    }
    match class.reason() {
        Reason::RateLimitedLocally | Reason::CircuitOpen | Reason::InvalidRequest => None,
        _ => Some(Verdict::Success),
    }
}

const POLLED_AFTER_COMPLETION: &str = "palisade-breaker: response future polled after completion";

impl<F, B, E, C> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
    E: Into<BoxError>,
    C: ClassifyOutcome + Clone,
{
    type Output = Result<Response<BreakerBody<B, C>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (fut, permit, classifier, slow_at) = match self.project().kind.project() {
            KindProj::Refused { err } => {
                return Poll::Ready(Err(match err.take() {
                    Some(e) => e.into(),
                    None => POLLED_AFTER_COMPLETION.into(),
                }));
            }
            KindProj::Call {
                fut,
                permit,
                classifier,
                slow_at,
            } => (fut, permit, classifier, slow_at),
        };
        if permit.is_none() {
            return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
        }
        let result = match fut.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r.map_err(Into::into),
        };
        let Some(permit) = permit.take() else {
            return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
        };
        let classifier = classifier.clone();
        match result {
            Err(e) => {
                if let Some(v) = verdict(classifier.classify(Outcome::Error(&*e))) {
                    permit.record(v);
                }
                Poll::Ready(Err(e))
            }
            Ok(res) => {
                let v = verdict(classifier.classify(Outcome::response(&res)));
                let res = match v {
                    // A failure status is known now; a success only when the
                    // body ends.
                    Some(Verdict::Failure) => {
                        permit.record(Verdict::Failure);
                        res.map(move |b| BreakerBody::passthrough(b, classifier))
                    }
                    None => res.map(move |b| BreakerBody::passthrough(b, classifier)),
                    // Nothing to stream (e.g. 204): consumers will not poll
                    // an ended body, so the outcome is known now.
                    Some(Verdict::Success) if res.body().is_end_stream() => {
                        permit.record(crate::body::end_verdict(*slow_at));
                        res.map(move |b| BreakerBody::passthrough(b, classifier))
                    }
                    Some(Verdict::Success) => {
                        let mut res = res;
                        let sse = palisade_sse::has_event_stream(res.headers());
                        // The response's one event scan, shared with the
                        // layers inside that count events too (an SSE-aware
                        // idle timeout).
                        let scan = sse.then(|| Box::new(SharedScan::view(res.extensions_mut())));
                        let slow_at = *slow_at;
                        res.map(move |b| {
                            BreakerBody::watching(b, permit, classifier, scan, slow_at)
                        })
                    }
                };
                Poll::Ready(Ok(res))
            }
        }
    }
}
