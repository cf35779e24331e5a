//! Per-call overhead of the balancer over always-ready members, beside
//! `tower::balance::p2c` (with `tower::load::PeakEwma`, its latency-aware
//! load) over the same members, 2 and 16 of them: each call picks a
//! member, calls it and drops the answer.
//!
//! `cargo bench -p palisade-balance`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Empty;
use palisade_balance::{Balance, Member};
use palisade_core::{BoxError, RequestBody};
use tower::balance::p2c;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma};
use tower::{Service, ServiceExt};

fn member()
-> impl Service<Request<RequestBody>, Response = Response<Empty<Bytes>>, Error = BoxError, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|_req: Request<RequestBody>| async {
        Ok::<_, BoxError>(Response::new(Empty::new()))
    })
}

fn req() -> Request<RequestBody> {
    Request::new(RequestBody::empty())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("balanced call");
    for n in [2usize, 16] {
        g.bench_function(format!("palisade-balance least-loaded, {n} members"), |b| {
            let mut svc = Balance::new(
                (0..n)
                    .map(|i| Member::new(format!("m{i}"), member()))
                    .collect(),
            )
            .unwrap();
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let res = svc.ready().await.unwrap().call(req()).await.unwrap();
                        drop(res);
                    }
                    start.elapsed()
                })
            });
        });
        g.bench_function(format!("tower p2c + PeakEwma, {n} members"), |b| {
            let members = (0..n).map(|_| {
                PeakEwma::new(
                    member(),
                    Duration::from_millis(500),
                    10e9,
                    CompleteOnResponse::default(),
                )
            });
            let mut svc = p2c::Balance::new(ServiceList::new(members.collect::<Vec<_>>()));
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let res = svc.ready().await.unwrap().call(req()).await.unwrap();
                        drop(res);
                    }
                    start.elapsed()
                })
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
