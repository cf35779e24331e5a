//! Three deployments of one model behind one balancer, five minutes of
//! traffic compressed with paused time: `fast` (time to first token
//! 200 ms), `slow` (600 ms, 3×) and `throttled` (200 ms, but its provider
//! allows 60 requests a minute and says so in `x-ratelimit-*` headers,
//! answering 429 past it). Ten calls a second arrive; each strategy gets
//! the same arrivals.
//!
//! Strategies: palisade-balance least-loaded (the default), its round
//! robin, and a LiteLLM-style random pick that reads no provider headers.
//! Printed per strategy: calls answered 200, 429s the callers saw, and the
//! time to first token (p50, p99) of the answered calls.
//!
//! `cargo run --release -p palisade-balance --example simulate`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use palisade_balance::{Balance, Member, Strategy};
use palisade_core::{BoxError, RequestBody};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

type Body = UnsyncBoxBody<Bytes, BoxError>;
type Svc = BoxCloneSyncService<Request<RequestBody>, Response<Body>, BoxError>;

const STREAM: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
const SECONDS: u64 = 300;
const PER_SECOND: u64 = 10;

fn answer(status: u16, headers: &[(&str, String)]) -> Response<Body> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "text/event-stream");
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(
        Full::new(Bytes::from_static(STREAM.as_bytes()))
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    )
    .unwrap()
}

/// A deployment answering after `ttft`; `limit`: requests a minute its
/// provider allows, each minute from the start; `hits`: calls it got.
fn deployment(ttft: Duration, limit: Option<u64>, start: Instant, hits: Arc<AtomicU64>) -> Svc {
    let used = Arc::new(Mutex::new((0u64, 0u64))); // (minute, calls in it)
    BoxCloneSyncService::new(tower::service_fn(move |_req: Request<RequestBody>| {
        let used = Arc::clone(&used);
        hits.fetch_add(1, Ordering::Relaxed);
        async move {
            let now = Instant::now() - start;
            let minute = now.as_secs() / 60;
            let reset = Duration::from_secs((minute + 1) * 60) - now;
            let reset = format!("{}ms", reset.as_millis());
            if let Some(limit) = limit {
                let calls = {
                    let mut u = used.lock().unwrap();
                    if u.0 != minute {
                        *u = (minute, 0);
                    }
                    u.1 += 1;
                    u.1
                };
                if calls > limit {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    return Ok::<_, BoxError>(answer(
                        429,
                        &[
                            ("x-ratelimit-remaining-requests", "0".into()),
                            ("x-ratelimit-reset-requests", reset),
                        ],
                    ));
                }
                tokio::time::sleep(ttft).await;
                return Ok(answer(
                    200,
                    &[
                        (
                            "x-ratelimit-remaining-requests",
                            (limit - calls).to_string(),
                        ),
                        ("x-ratelimit-reset-requests", reset),
                    ],
                ));
            }
            tokio::time::sleep(ttft).await;
            Ok(answer(200, &[]))
        }
    }))
}

fn members(start: Instant, slow_hits: Arc<AtomicU64>) -> Vec<(&'static str, Svc)> {
    vec![
        (
            "fast",
            deployment(Duration::from_millis(200), None, start, Arc::default()),
        ),
        (
            "slow",
            deployment(Duration::from_millis(600), None, start, slow_hits),
        ),
        (
            "throttled",
            deployment(Duration::from_millis(200), Some(60), start, Arc::default()),
        ),
    ]
}

#[derive(Default)]
struct Tally {
    ok: u64,
    refused: u64,
    other: u64,
    ttft: Vec<Duration>,
}

async fn run<S>(svc: S) -> Tally
where
    S: Service<Request<RequestBody>, Error = BoxError> + Clone + Send + 'static,
    S::Response: Send,
    S::Future: Send,
    S::Response: Into<Response<()>>,
{
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut calls = Vec::new();
    let gap = Duration::from_secs(1) / PER_SECOND as u32;
    for _ in 0..SECONDS * PER_SECOND {
        let (mut svc, tally) = (svc.clone(), Arc::clone(&tally));
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let req = Request::post("/chat/completions")
                .body(RequestBody::from("{}"))
                .unwrap();
            let res = match svc.ready().await {
                Ok(s) => s.call(req).await,
                Err(e) => Err(e),
            };
            let mut t = tally.lock().unwrap();
            match res.map(Into::into) {
                Ok(r) if r.status() == 200 => {
                    t.ok += 1;
                    t.ttft.push(Instant::now() - started);
                }
                Ok(r) if r.status() == 429 => t.refused += 1,
                Err(e)
                    if palisade_core::ErrorKind::of(&*e)
                        == Some(palisade_core::ErrorKind::RateLimited) =>
                {
                    t.refused += 1;
                }
                _ => t.other += 1,
            }
        }));
        tokio::time::sleep(gap).await;
    }
    for c in calls {
        c.await.unwrap();
    }
    Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap()
}

/// Reads an answer's body to its end (the balancer times the first
/// content event and counts the call in flight until then); its head.
async fn read<B>(res: Response<B>) -> Result<Response<()>, BoxError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (head, body) = res.into_parts();
    body.collect().await.map_err(Into::into)?;
    Ok(Response::from_parts(head, ()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    println!(
        "| strategy | answered | 429s seen by callers | other errors | calls to the slow member | TTFT p50 | TTFT p90 | TTFT p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for name in ["least-loaded", "round robin", "random (LiteLLM-style)"] {
        let slow_hits = Arc::new(AtomicU64::new(0));
        let tally = rt.block_on(async {
            let start = Instant::now();
            let ms = members(start, Arc::clone(&slow_hits));
            match name {
                "random (LiteLLM-style)" => {
                    let svcs: Vec<Svc> = ms.into_iter().map(|(_, s)| s).collect();
                    let random = tower::service_fn(move |req: Request<RequestBody>| {
                        let svc = svcs[fastrand::usize(..svcs.len())].clone();
                        async move { read(svc.oneshot(req).await?).await }
                    });
                    run(random).await
                }
                _ => {
                    let strategy = if name == "round robin" {
                        Strategy::RoundRobin
                    } else {
                        Strategy::LeastLoaded
                    };
                    let balance = Balance::builder()
                        .strategy(strategy)
                        .build(ms.into_iter().map(|(n, s)| Member::new(n, s)).collect())
                        .unwrap();
                    run(balance.and_then(read)).await
                }
            }
        });
        let mut ttft = tally.ttft.clone();
        ttft.sort();
        println!(
            "| {name} | {} | {} | {} | {} | {:?} | {:?} | {:?} |",
            tally.ok,
            tally.refused,
            tally.other,
            slow_hits.load(Ordering::Relaxed),
            percentile(&ttft, 0.5),
            percentile(&ttft, 0.9),
            percentile(&ttft, 0.99)
        );
    }
    println!(
        "\n{} calls per strategy over {SECONDS} s (paused time); fast and throttled answer in 200 ms, slow in 600 ms.",
        SECONDS * PER_SECOND
    );
}
