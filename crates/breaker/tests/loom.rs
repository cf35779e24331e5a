//! Loom models of the circuit's state machine, through the public API.
//!
//! ```sh
//! RUSTFLAGS="--cfg palisade_loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p palisade-breaker --test loom --release
//! ```
//!
//! `open_for` is zero in every model, so no interleaving depends on the
//! clock: an open circuit goes half-open at the next call.
#![cfg(palisade_loom)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use palisade_breaker::{BreakerLayer, State, Transition};
use tower::{Layer, Service};

#[derive(Clone, Copy)]
struct Answer(u16);

impl Service<Request<()>> for Answer {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Empty<Bytes>>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<()>) -> Self::Future {
        let mut res = Response::new(Empty::new());
        *res.status_mut() = StatusCode::from_u16(self.0).unwrap();
        ready(Ok(res))
    }
}

fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the models' futures are ready at once"),
    }
}

/// Counts transitions into each state.
fn counting() -> (
    Arc<[AtomicUsize; 3]>,
    impl Fn(Transition) + Send + Sync + 'static,
) {
    let counts: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let c = counts.clone();
    (counts, move |t: Transition| {
        c[usize::from(t.to.as_u8())].fetch_add(1, Ordering::SeqCst);
    })
}

#[test]
fn concurrent_failures_trip_exactly_once() {
    loom::model(|| {
        let (counts, hook) = counting();
        let layer = BreakerLayer::builder()
            .no_failure_rate()
            // Both failures can reach the threshold: they race to trip.
            .consecutive_failures(1)
            .open_for(Duration::from_secs(3600))
            .on_transition(hook)
            .build()
            .unwrap();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let mut svc = layer.layer(Answer(500));
                loom::thread::spawn(move || {
                    let _ = now(svc.call(Request::new(())));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(layer.handle().state(), State::Open);
        assert_eq!(counts[1].load(Ordering::SeqCst), 1, "opened once");
    });
}

#[test]
fn concurrent_probes_close_the_circuit_once() {
    loom::model(|| {
        let (counts, hook) = counting();
        let layer = BreakerLayer::builder()
            .no_failure_rate()
            .consecutive_failures(1)
            .open_for(Duration::ZERO)
            .half_open_calls(2)
            .on_transition(hook)
            .build()
            .unwrap();
        let _ = now(layer.layer(Answer(500)).call(Request::new(())));
        assert_eq!(layer.handle().state(), State::Open);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let mut svc = layer.layer(Answer(200));
                loom::thread::spawn(move || now(svc.call(Request::new(()))).is_ok())
            })
            .collect();
        let admitted = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(admitted, 2, "two probes were allowed");
        assert_eq!(layer.handle().state(), State::Closed);
        assert_eq!(counts[0].load(Ordering::SeqCst), 1, "closed once");
        assert_eq!(counts[2].load(Ordering::SeqCst), 1, "half-open once");
    });
}

#[test]
fn a_dropped_probe_never_wedges_half_open() {
    loom::model(|| {
        let layer = BreakerLayer::builder()
            .no_failure_rate()
            .consecutive_failures(1)
            .open_for(Duration::ZERO)
            .half_open_calls(1)
            .build()
            .unwrap();
        let _ = now(layer.layer(Answer(500)).call(Request::new(())));
        let mut a = layer.layer(Answer(200));
        let dropper = loom::thread::spawn(move || {
            // Takes the probe slot, then goes away without an outcome.
            drop(a.call(Request::new(())));
        });
        let mut b = layer.layer(Answer(200));
        let other = loom::thread::spawn(move || {
            let _ = now(b.call(Request::new(())));
        });
        dropper.join().unwrap();
        other.join().unwrap();
        // Whatever the interleaving, the circuit can still recover.
        let mut c = layer.layer(Answer(200));
        assert!(now(c.call(Request::new(()))).is_ok(), "a probe is admitted");
        assert_eq!(layer.handle().state(), State::Closed);
    });
}
