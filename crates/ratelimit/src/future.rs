//! [`ResponseFuture`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Request;
use palisade_core::{BoxError, RateLimited};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::bucket::Bucket;

/// Units reserved for a waiting call; given back if the call never happens.
#[derive(Debug)]
pub(crate) struct Reservation {
    bucket: Option<Arc<Bucket>>,
    cost: u64,
}

impl Reservation {
    pub(crate) fn new(bucket: Arc<Bucket>, cost: u64) -> Self {
        Self {
            bucket: Some(bucket),
            cost,
        }
    }

    /// Nothing to give back here (a reservation kept elsewhere).
    pub(crate) fn elsewhere() -> Self {
        Self {
            bucket: None,
            cost: 0,
        }
    }

    /// The call happened: the units are spent.
    fn spend(mut self) {
        self.cost = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let (Some(bucket), true) = (&self.bucket, self.cost > 0) {
            bucket.refund(self.cost);
        }
    }
}

pin_project! {
    /// The future of [`RateLimit`](crate::RateLimit)'s `call`.
    ///
    /// Dropping it while it waits gives its reservation back to the bucket.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Refused { err: Option<RateLimited> },
        // Refused for another reason (a shared limit's backend is down and
        // the limit fails closed).
        Failed { err: Option<BoxError> },
        // Boxed: only a waiting call needs it, and it holds a request and a
        // service; every call's future is smaller (and cheaper to move) for it.
        Waiting { waiting: Box<Waiting<S, B>> },
        Calling { #[pin] fut: S::Future },
    }
}

struct Waiting<S, B> {
    sleep: Pin<Box<Sleep>>,
    svc: S,
    req: Option<Request<B>>,
    reservation: Option<Reservation>,
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn refused(err: RateLimited) -> Self {
        Self {
            state: State::Refused { err: Some(err) },
        }
    }

    pub(crate) fn failed(err: BoxError) -> Self {
        Self {
            state: State::Failed { err: Some(err) },
        }
    }

    pub(crate) fn calling(fut: S::Future) -> Self {
        Self {
            state: State::Calling { fut },
        }
    }

    pub(crate) fn waiting(
        svc: S,
        req: Request<B>,
        wait: Duration,
        reservation: Reservation,
    ) -> Self {
        Self {
            state: State::Waiting {
                waiting: Box::new(Waiting {
                    sleep: Box::pin(tokio::time::sleep(wait)),
                    svc,
                    req: Some(req),
                    reservation: Some(reservation),
                }),
            },
        }
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Refused { err } => {
                    return Poll::Ready(Err(match err.take() {
                        Some(e) => e.into(),
                        None => "palisade-ratelimit: future polled after completion".into(),
                    }));
                }
                StateProj::Failed { err } => {
                    return Poll::Ready(Err(err.take().unwrap_or_else(|| {
                        "palisade-ratelimit: future polled after completion".into()
                    })));
                }
                StateProj::Waiting { waiting } => {
                    let Waiting {
                        sleep,
                        svc,
                        req,
                        reservation,
                    } = &mut **waiting;
                    ready!(sleep.as_mut().poll(cx));
                    if let Err(e) = ready!(svc.poll_ready(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    let Some(req) = req.take() else {
                        return Poll::Ready(Err(
                            "palisade-ratelimit: future polled after completion".into(),
                        ));
                    };
                    if let Some(r) = reservation.take() {
                        r.spend();
                    }
                    let fut = svc.call(req);
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => {
                    return fut.poll(cx).map_err(Into::into);
                }
            }
        }
    }
}
