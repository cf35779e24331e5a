//! End to end over loopback: palisade-mock served on 127.0.0.1, a raw
//! hyper-util client versus `palisade-client` alone and under the preset
//! stack (`palisade::preset`: trace → total timeout → retry → rate limit →
//! breaker → first-byte/idle timeout → client; schema validation off, as it
//! is a parse of the body rather than overhead), at concurrency 1 and 32. Prints requests/s and p50/p99 latency side by side,
//! and the stack's share of raw hyper's throughput.
//!
//! `cargo bench --bench e2e` (E2E_REQUESTS=N to change the requests per run)
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::client::HttpClient;
use palisade::core::{BoxError, RequestBody};
use palisade::mock::MockUpstream;
use palisade::preset::StackConfig;
use tower::{Service, ServiceExt};

const BODY: &str = r#"{"model":"mock","messages":[{"role":"user","content":"hello from the end to end benchmark"}]}"#;

struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// `total` requests by `concurrency` tasks, each calling `one` in a loop.
async fn run<F, Fut>(total: usize, concurrency: usize, one: F) -> Run
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, one) = (next.clone(), one.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t0 = Instant::now();
                    one().await.unwrap();
                    lat.push(t0.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(total);
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let took = start.elapsed();
    lat.sort_unstable();
    Run {
        rps: lat.len() as f64 / took.as_secs_f64(),
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
    }
}

const ROUNDS: usize = 5;

/// The run with the median requests/s.
fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    runs.swap_remove(runs.len() / 2)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async_main());
}

async fn async_main() {
    let total: usize = std::env::var("E2E_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let server = MockUpstream::new().serve().await.unwrap();
    let url: http::Uri = format!("{}/chat/completions", server.base_url())
        .parse()
        .unwrap();

    let raw: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let raw_one = {
        let (raw, url) = (raw.clone(), url.clone());
        move || {
            let (raw, url) = (raw.clone(), url.clone());
            async move {
                let req = Request::post(url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))?;
                let res = raw.request(req).await?;
                res.into_body().collect().await?;
                Ok::<_, BoxError>(())
            }
        }
    };

    let client = HttpClient::builder()
        .base_url(server.base_url())
        .build()
        .unwrap();
    let bare_client = client.clone();
    let client_one = move || {
        let svc = bare_client.clone();
        async move {
            let req = Request::post("/chat/completions").body(RequestBody::from(BODY))?;
            let res = svc.oneshot(req).await?;
            res.into_body().collect().await?;
            Ok::<_, BoxError>(())
        }
    };
    let stack = StackConfig::openai()
        .no_key()
        .validate(false)
        .requests_per_minute(u64::from(u32::MAX))
        .max_wait(Duration::from_secs(1))
        .build_over(client)
        .unwrap();
    let stack_one = move || {
        let mut svc = stack.clone();
        async move {
            let req = Request::post("/chat/completions").body(RequestBody::from(BODY))?;
            let res = svc.ready().await?.call(req).await?;
            res.into_body().collect().await?;
            Ok::<_, BoxError>(())
        }
    };

    // Warm up both (connections, allocator, branch predictors).
    run(2_000, 8, raw_one.clone()).await;
    run(2_000, 8, stack_one.clone()).await;

    println!(
        "end to end over loopback, {total} requests per run, median of {ROUNDS} interleaved rounds \
         (client, server and load share 2 cores: expect ±10 % between rounds)"
    );
    println!(
        "{:<12} {:>5} {:>10} {:>9} {:>9}",
        "client", "conc", "req/s", "p50 µs", "p99 µs"
    );
    for concurrency in [1, 32] {
        let mut raws = Vec::new();
        let mut clients = Vec::new();
        let mut stacks = Vec::new();
        let mut ratios = Vec::new();
        for _ in 0..ROUNDS {
            let r = run(total, concurrency, raw_one.clone()).await;
            let c = run(total, concurrency, client_one.clone()).await;
            let s = run(total, concurrency, stack_one.clone()).await;
            ratios.push(s.rps / r.rps);
            raws.push(r);
            clients.push(c);
            stacks.push(s);
        }
        let (r, c, s) = (median(raws), median(clients), median(stacks));
        ratios.sort_by(f64::total_cmp);
        for (name, x) in [("raw hyper", &r), ("client only", &c), ("preset stack", &s)] {
            println!(
                "{:<12} {:>5} {:>10.0} {:>9.1} {:>9.1}",
                name,
                concurrency,
                x.rps,
                x.p50.as_secs_f64() * 1e6,
                x.p99.as_secs_f64() * 1e6
            );
        }
        println!(
            "the stack keeps {:.1} % of raw hyper's requests/s at concurrency {concurrency} \
             (per-round ratios {:.1} % to {:.1} %)",
            100.0 * s.rps / r.rps,
            100.0 * ratios[0],
            100.0 * ratios[ratios.len() - 1]
        );
    }
}
