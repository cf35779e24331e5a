//! Load script: the gateway's added latency and throughput against calling
//! the mock upstream directly.
//!
//! ```sh
//! cargo run --release -p palisade-gateway --example load            # 3 s per run
//! cargo run --release -p palisade-gateway --example load -- 10      # 10 s per run
//! cargo run --release -p palisade-gateway --example load -- apis    # per endpoint
//! cargo run --release -p palisade-gateway --example load -- redis   # [redis] on vs off
//! ```
//!
//! `redis [SECONDS]`: requests per second at concurrency 64 through one
//! `thread_per_core` gateway whose upstream has request and token limits
//! (never reached) kept in process, and through one whose limits are kept
//! in a `redis-server` on loopback (`[redis]`: a reservation and a
//! settlement script per call), three interleaved rounds, medians.
//!
//! `apis [SECONDS]`: the gateway's cost per request on each endpoint —
//! `/v1/chat/completions`, `/v1/responses`, `/v1/embeddings` — beside
//! calling the mock directly, in one run (the mock, one `thread_per_core`
//! gateway, this driver; same columns).
//!
//! Five processes: the mock upstream (palisade-mock on loopback), a bare
//! hyper reverse proxy in front of it (the least any proxy does: accept,
//! forward over a pooled connection, stream the answer back, on tokio's
//! multi-thread runtime — the floor a gateway is measured against), the
//! gateway in front of it twice (an `openai` upstream, default stack), once
//! with `[server] runtime = "multi_thread"` and once with
//! `"thread_per_core"`, and this driver, which sends non-streamed chat
//! requests from `c` concurrent workers straight to the mock, through the
//! bare proxy and through each gateway, for concurrency 1 and 64, three
//! interleaved rounds each, and prints the medians side by side: p50, p99,
//! requests/s, the added p50 and the throughput ratio against the direct
//! calls and against the bare proxy, the CPU time each proxy process spent
//! per request (user + system, from `/proc/PID/stat`), and the gateway's
//! own time per request as it reports it in `x-palisade-overhead-ms` (total
//! minus waiting on the upstream and on the caller). All share this
//! machine's cores, so a proxy and the driver compete for CPU: the ratios
//! are lower bounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

mod procs;

use procs::{BoxError, child, cpu_time, serve_gateway, stop};

const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"the quick brown fox jumps over the lazy dog"}]}"#;

/// The same question to each endpoint (`apis` mode).
const ENDPOINTS: [(&str, &str); 3] = [
    ("/chat/completions", BODY),
    (
        "/responses",
        r#"{"model":"m","input":[{"role":"user","content":"the quick brown fox jumps over the lazy dog"}]}"#,
    ),
    (
        "/embeddings",
        r#"{"model":"m","input":"the quick brown fox jumps over the lazy dog"}"#,
    ),
];

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.first().map(String::as_str) {
        Some("serve-mock") => rt.block_on(serve_mock()),
        Some("serve-proxy") => rt.block_on(serve_proxy(args.get(1).map_or("", String::as_str))),
        Some("serve-gateway") => rt.block_on(serve_gateway(
            args.get(1).map_or("", String::as_str),
            "",
            args.get(2).map_or("thread_per_core", String::as_str),
        )),
        Some("serve-gateway-extra") => rt.block_on(serve_gateway(
            args.get(1).map_or("", String::as_str),
            args.get(2).map_or("", String::as_str),
            "thread_per_core",
        )),
        Some("redis") => {
            let secs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3u64);
            rt.block_on(drive_redis(Duration::from_secs(secs)))
        }
        Some("apis") => {
            let secs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3u64);
            rt.block_on(drive_apis(Duration::from_secs(secs)))
        }
        other => {
            let secs = other.and_then(|s| s.parse().ok()).unwrap_or(3u64);
            rt.block_on(drive(Duration::from_secs(secs)))
        }
    }
}

async fn serve_mock() -> Result<(), BoxError> {
    let server = palisade_mock::MockUpstream::new().serve().await?;
    println!("{}", server.base_url());
    std::future::pending::<()>().await;
    Ok(())
}

/// A bare reverse proxy to `upstream` with hyper alone: HTTP/1 in, the
/// request forwarded as it came (its path appended to `upstream`'s) over
/// hyper-util's pooled client with `TCP_NODELAY` (as the gateway's client),
/// the answer streamed back. No checks, no parsing, no layers.
async fn serve_proxy(upstream: &str) -> Result<(), BoxError> {
    use hyper::body::Incoming;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioIo;

    let upstream: Arc<str> = Arc::from(upstream.trim_end_matches('/'));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let (client, upstream) = (client.clone(), upstream.clone());
        let forward = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            forward(client.clone(), upstream.clone(), req)
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), forward)
                .await;
        });
    }
}

async fn forward(
    client: Client<hyper_util::client::legacy::connect::HttpConnector, hyper::body::Incoming>,
    upstream: Arc<str>,
    mut req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<hyper::body::Incoming>, BoxError> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = format!("{upstream}{path}").parse()?;
    Ok(client.request(req).await?)
}

struct Run {
    p50: Duration,
    p99: Duration,
    rps: f64,
    /// The gateway's own time per request (`x-palisade-overhead-ms`), p50.
    own_p50: f64,
    /// How long the run took, requests included.
    took: Duration,
}

async fn run(url: &str, concurrency: usize, length: Duration) -> Result<Run, BoxError> {
    run_on(url, ("/chat/completions", BODY), concurrency, length).await
}

/// [`run`] on one endpoint: `(path, body)`.
async fn run_on(
    url: &str,
    (path, body): (&str, &'static str),
    concurrency: usize,
    length: Duration,
) -> Result<Run, BoxError> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let url: http::Uri = format!("{url}{path}").parse()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut own = Vec::with_capacity(100_000);
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::post(url.clone())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(body.as_bytes())))?;
                let t = Instant::now();
                let res = client.request(req).await?;
                if res.status() != 200 {
                    return Err(format!("status {}", res.status()).into());
                }
                if let Some(ms) = res
                    .headers()
                    .get("x-palisade-overhead-ms")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    own.push(ms * 1000.0);
                }
                res.into_body().collect().await?;
                lat.push(t.elapsed());
            }
            Ok::<_, BoxError>((lat, own))
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut own) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, o) = t.await??;
        all.extend(l);
        own.extend(o);
    }
    let took = started.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Ok(Run {
        p50: pct(0.50),
        p99: pct(0.99),
        rps: all.len() as f64 / took.as_secs_f64(),
        own_p50: if own.is_empty() { 0.0 } else { median(own) },
        took,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One process the driver sends requests to.
struct Target {
    name: &'static str,
    url: String,
    /// Its process, for its CPU time (none for the mock: not a proxy).
    pid: Option<u32>,
}

/// The medians of a target's rounds.
struct Summary {
    p50: f64,
    p99: f64,
    rps: f64,
    /// CPU µs per request, when measured.
    cpu: Option<f64>,
    own: f64,
}

async fn drive(length: Duration) -> Result<(), BoxError> {
    let (mut mock, mock_url) = child(&["serve-mock"])?;
    let (mut proxy, proxy_url) = child(&["serve-proxy", &mock_url])?;
    let (mut gw_mt, gw_mt_url) = child(&["serve-gateway", &mock_url, "multi_thread"])?;
    let (mut gw_tpc, gw_tpc_url) = child(&["serve-gateway", &mock_url, "thread_per_core"])?;
    let targets = [
        Target {
            name: "direct",
            url: mock_url.clone(),
            pid: None,
        },
        Target {
            name: "bare proxy",
            url: proxy_url,
            pid: Some(proxy.id()),
        },
        Target {
            name: "gateway multi_thread",
            url: gw_mt_url,
            pid: Some(gw_mt.id()),
        },
        Target {
            name: "gateway thread_per_core",
            url: gw_tpc_url,
            pid: Some(gw_tpc.id()),
        },
    ];
    println!(
        "{} s per run, 3 interleaved rounds, medians; CPU: the process's user + system time per request",
        length.as_secs()
    );
    for conc in [1usize, 64] {
        // Warm every path (connections, allocator, branch predictors).
        for t in &targets {
            run(&t.url, conc, Duration::from_millis(300)).await?;
        }
        let mut rounds: Vec<Vec<(Run, Option<f64>)>> = targets.iter().map(|_| Vec::new()).collect();
        for _ in 0..3 {
            for (t, r) in targets.iter().zip(rounds.iter_mut()) {
                let before = t.pid.map(cpu_time).transpose()?;
                let got = run(&t.url, conc, length).await?;
                let after = t.pid.map(cpu_time).transpose()?;
                let requests = got.rps * got.took.as_secs_f64();
                let cpu = before
                    .zip(after)
                    .map(|(b, a)| (a.saturating_sub(b)).as_secs_f64() * 1e6 / requests.max(1.0));
                r.push((got, cpu));
            }
        }
        let sums: Vec<Summary> = rounds
            .iter()
            .map(|v| {
                let us = |f: fn(&Run) -> Duration| {
                    median(v.iter().map(|(r, _)| f(r).as_secs_f64() * 1e6).collect())
                };
                let cpus: Vec<f64> = v.iter().filter_map(|(_, c)| *c).collect();
                Summary {
                    p50: us(|r| r.p50),
                    p99: us(|r| r.p99),
                    rps: median(v.iter().map(|(r, _)| r.rps).collect()),
                    cpu: (!cpus.is_empty()).then(|| median(cpus)),
                    own: median(v.iter().map(|(r, _)| r.own_p50).collect()),
                }
            })
            .collect();
        let (direct, bare) = (&sums[0], &sums[1]);
        println!("\nconcurrency {conc}");
        println!(
            "{:<24} {:>7} {:>7} {:>9} {:>8} {:>9} {:>9} {:>10} {:>8} {:>7}",
            "",
            "p50 µs",
            "p99 µs",
            "req/s",
            "+p50 µs",
            "% direct",
            "% bare",
            "CPU µs/req",
            "× bare",
            "own µs"
        );
        for (t, s) in targets.iter().zip(&sums) {
            let cpu = s.cpu.map_or("-".to_owned(), |c| format!("{c:.0}"));
            let cpu_ratio = s
                .cpu
                .zip(bare.cpu)
                .map_or("-".to_owned(), |(c, b)| format!("{:.2}", c / b));
            println!(
                "{:<24} {:>7.0} {:>7.0} {:>9.0} {:>+8.0} {:>8.1}% {:>8.1}% {:>10} {:>8} {:>7.1}",
                t.name,
                s.p50,
                s.p99,
                s.rps,
                s.p50 - direct.p50,
                100.0 * s.rps / direct.rps,
                100.0 * s.rps / bare.rps,
                cpu,
                cpu_ratio,
                s.own,
            );
        }
    }
    stop(&mut [&mut proxy, &mut gw_mt, &mut gw_tpc, &mut mock]);
    Ok(())
}

/// `redis` mode: limits in process vs in Redis, concurrency 64.
async fn drive_redis(length: Duration) -> Result<(), BoxError> {
    let redis = palisade_core::test_util::RedisServer::start();
    let limits = "[upstreams.rate_limit]\nrequests_per_minute = 1000000000\ntokens_per_minute = 100000000000\n";
    let shared = format!(
        "{limits}[redis]\nurl = \"{}\"\nfail_open = false\n",
        redis.url()
    );
    let (mut mock, mock_url) = child(&["serve-mock"])?;
    let (mut local, local_url) = child(&["serve-gateway-extra", &mock_url, limits])?;
    let (mut remote, remote_url) = child(&["serve-gateway-extra", &mock_url, &shared])?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    // CPU per request: each gateway's, and Redis's during the Redis runs.
    let (mut cpu_off, mut cpu_on, mut cpu_redis) = (Vec::new(), Vec::new(), Vec::new());
    let per_request = |spent: Duration, r: &Run| {
        spent.as_secs_f64() * 1e6 / (r.rps * r.took.as_secs_f64()).max(1.0)
    };
    for _ in 0..3 {
        let before = cpu_time(local.id())?;
        let r = run(&local_url, 64, length).await?;
        cpu_off.push(per_request(
            cpu_time(local.id())?.saturating_sub(before),
            &r,
        ));
        off.push(r.rps);
        let (before, redis_before) = (cpu_time(remote.id())?, cpu_time(redis.pid())?);
        let r = run(&remote_url, 64, length).await?;
        cpu_on.push(per_request(
            cpu_time(remote.id())?.saturating_sub(before),
            &r,
        ));
        cpu_redis.push(per_request(
            cpu_time(redis.pid())?.saturating_sub(redis_before),
            &r,
        ));
        on.push(r.rps);
    }
    let (off, on) = (median(off), median(on));
    println!(
        "{} s per run, 3 interleaved rounds, medians; concurrency 64",
        length.as_secs()
    );
    println!(
        "  limits in process:  {off:.0} req/s; gateway CPU {:.1} µs/req",
        median(cpu_off)
    );
    println!(
        "  limits in Redis:    {on:.0} req/s ({:.1} % of in process); gateway CPU {:.1} µs/req, redis-server CPU {:.1} µs/req",
        on / off * 100.0,
        median(cpu_on),
        median(cpu_redis)
    );
    stop(&mut [&mut local, &mut remote, &mut mock]);
    Ok(())
}

/// `apis` mode: each endpoint directly and through one `thread_per_core`
/// gateway, three interleaved rounds, medians.
async fn drive_apis(length: Duration) -> Result<(), BoxError> {
    let (mut mock, mock_url) = child(&["serve-mock"])?;
    let (mut gw, gw_url) = child(&["serve-gateway", &mock_url, "thread_per_core"])?;
    let pid = gw.id();
    println!(
        "{} s per run, 3 interleaved rounds, medians; CPU: the gateway process's user + system time per request",
        length.as_secs()
    );
    for conc in [1usize, 64] {
        println!("\nconcurrency {conc}");
        println!(
            "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10} {:>7}",
            "",
            "direct p50",
            "gw p50",
            "+p50 µs",
            "gw p99",
            "req/s",
            "% direct",
            "CPU µs/req",
            "own µs"
        );
        for endpoint in ENDPOINTS {
            run_on(&mock_url, endpoint, conc, Duration::from_millis(300)).await?;
            run_on(&gw_url, endpoint, conc, Duration::from_millis(300)).await?;
            let (mut direct, mut through, mut cpus) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..3 {
                direct.push(run_on(&mock_url, endpoint, conc, length).await?);
                let before = cpu_time(pid)?;
                let got = run_on(&gw_url, endpoint, conc, length).await?;
                let spent = cpu_time(pid)?.saturating_sub(before).as_secs_f64() * 1e6;
                cpus.push(spent / (got.rps * got.took.as_secs_f64()).max(1.0));
                through.push(got);
            }
            let us = |v: &[Run], f: fn(&Run) -> Duration| {
                median(v.iter().map(|r| f(r).as_secs_f64() * 1e6).collect())
            };
            let rps = |v: &[Run]| median(v.iter().map(|r| r.rps).collect());
            let (d50, g50) = (us(&direct, |r| r.p50), us(&through, |r| r.p50));
            println!(
                "{:<22} {:>9.0} {:>9.0} {:>+9.0} {:>9.0} {:>9.0} {:>7.1}% {:>10.0} {:>7.1}",
                format!("/v1{}", endpoint.0),
                d50,
                g50,
                g50 - d50,
                us(&through, |r| r.p99),
                rps(&through),
                100.0 * rps(&through) / rps(&direct),
                median(cpus),
                median(through.iter().map(|r| r.own_p50).collect()),
            );
        }
    }
    stop(&mut [&mut gw, &mut mock]);
    Ok(())
}
