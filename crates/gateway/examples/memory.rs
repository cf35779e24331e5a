//! Memory script: the gateway's resident memory (RSS) with a large stream
//! going to a slow reader, and with many streams open at once (SPEC §9's
//! memory rows).
//!
//! ```sh
//! cargo run --release -p palisade-gateway --example memory              # 1 GiB, 10,000 streams
//! cargo run --release -p palisade-gateway --example memory -- 256 2000  # 256 MiB, 2,000 streams
//! cargo run --release -p palisade-gateway --example memory -- open 10000 http1  # only 2., over HTTP/1.1
//! cargo run --release -p palisade-gateway --example memory -- blocked 1000  # only 3., 1,000 streams
//! ```
//!
//! Three processes, as in the `load` example: the mock upstream, the gateway
//! in front of it (an `openai` upstream, default stack), and this driver.
//! The gateway's RSS is read from `/proc/PID/status` (Linux) every 20 ms.
//!
//! 1. **Slow reader**: one streamed chat completion whose upstream produces
//!    words as fast as it is read. The driver reads 1 MiB, stops reading for
//!    2 s (the upstream could produce hundreds of MiB meanwhile: only
//!    backpressure keeps them out of the gateway), then reads on, pausing
//!    5 ms after every MiB, until it has read the given size; it prints the
//!    largest RSS growth over the gateway's RSS before the stream.
//! 2. **Open streams**: the driver opens N streams (HTTP/2 to the gateway,
//!    200 per connection) whose upstream sends a token every 500 ms, waits
//!    until each has relayed its first event, and prints the RSS growth with
//!    all of them open, per stream; twice: with HTTP/1.1 from the gateway to
//!    the mock (a connection per stream, as to a cleartext upstream) and with
//!    `http = "http2"` (one multiplexed connection, as to OpenAI or
//!    Anthropic over TLS, where ALPN picks HTTP/2).
//! 3. **Blocked HTTP/2 streams**: the driver opens N/10 streams over HTTP/2
//!    connections whose stream windows are HTTP/2's default 65,535 bytes
//!    (the connection windows large), to an upstream that produces words as
//!    fast as they are read, and never reads them: every stream's window
//!    runs to zero, as with a caller that stopped reading. It prints the
//!    gateway's RSS growth per blocked stream after 2 s: what a stream the
//!    caller does not drain holds in the gateway. The gateway speaks
//!    HTTP/1.1 to the mock; `UPSTREAM_HTTP=http2` in the environment makes
//!    it HTTP/2.
//!
//! The gateway runs with `[server] runtime = "thread_per_core"` (the
//! binary's default); `GATEWAY_RUNTIME=multi_thread` in the environment
//! runs it on one multi-thread runtime instead.
//!
//! File descriptors: the gateway holds one socket per open stream towards
//! the mock; 10,000 streams need a `nofile` limit above ~10,100.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

mod procs;

use procs::{BoxError, Sampler, child, rss, serve_gateway, stop};

const MIB: u64 = 1 << 20;
const STREAM: &str = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"go"}]}"#;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.first().map(String::as_str) {
        Some("serve-mock") => rt.block_on(serve_mock(args.get(1).map(String::as_str))),
        Some("open") => {
            let n = args
                .get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(10_000usize);
            let http = args.get(2).map_or("http1", String::as_str).to_owned();
            rt.block_on(open_streams(n, &http))
        }
        Some("blocked") => {
            let n = args
                .get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1000usize);
            rt.block_on(blocked_streams(n))
        }
        Some("serve-gateway") => {
            let http = args.get(2).map_or("auto", String::as_str);
            rt.block_on(serve_gateway(
                args.get(1).map_or("", String::as_str),
                &format!("http = \"{http}\""),
                &std::env::var("GATEWAY_RUNTIME").unwrap_or_else(|_| "thread_per_core".into()),
            ))
        }
        _ => {
            let mib = args.first().and_then(|s| s.parse().ok()).unwrap_or(1024u64);
            let streams = args
                .get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(10_000usize);
            rt.block_on(drive(mib, streams))
        }
    }
}

async fn serve_mock(mode: Option<&str>) -> Result<(), BoxError> {
    let mock = palisade_mock::MockUpstream::new();
    let reply = palisade_mock::Reply::words(usize::MAX);
    mock.set_default(match mode {
        Some("slow") => reply.delay_per_token(Duration::from_millis(500)),
        _ => reply,
    });
    let server = mock.serve().await?;
    println!("{}", server.base_url());
    std::future::pending::<()>().await;
    Ok(())
}

fn request(url: &str) -> Result<http::Request<Full<Bytes>>, BoxError> {
    Ok(http::Request::post(format!("{url}/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(STREAM.as_bytes())))?)
}

fn h1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn drive(mib: u64, streams: usize) -> Result<(), BoxError> {
    slow_reader(mib).await?;
    open_streams(streams, "http1").await?;
    open_streams(streams, "http2").await?;
    blocked_streams((streams / 10).max(1)).await
}

/// `n` streams whose caller never reads: each one's HTTP/2 window runs to
/// zero while the upstream could produce without end.
async fn blocked_streams(n: usize) -> Result<(), BoxError> {
    let (mut mock, mock_url) = child(&["serve-mock", "fast"])?;
    let upstream_http = std::env::var("UPSTREAM_HTTP").unwrap_or_else(|_| "auto".into());
    let (mut gw, gw_url) = child(&["serve-gateway", &mock_url, &upstream_http])?;
    let pid = gw.id();
    let per_conn = 200;
    let clients: Vec<Client<HttpConnector, Full<Bytes>>> = (0..n.div_ceil(per_conn))
        .map(|_| {
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .http2_initial_stream_window_size(65_535)
                .http2_initial_connection_window_size(1 << 30)
                .build_http()
        })
        .collect();
    // A warm-up stream, read a little and dropped, then the baseline.
    read_some(&h1_client(), &gw_url, MIB, false).await?;
    let before = rss(pid)?;
    let sampler = Sampler::start(pid);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = clients[i % clients.len()].clone();
        let req = request(&gw_url)?;
        tasks.spawn(async move { client.request(req).await });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        let res = r??;
        if res.status() != 200 {
            return Err(format!("gateway answered {}", res.status()).into());
        }
        held.push(res);
    }
    // Let every window run dry and the upstreams push against it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let max = sampler.stop().await;
    println!(
        "blocked HTTP/2 streams (65,535-byte windows, never read): {} streams; {}",
        held.len(),
        per_stream(before, max, held.len()),
    );
    drop(held);
    stop(&mut [&mut gw, &mut mock]);
    Ok(())
}

async fn slow_reader(mib: u64) -> Result<(), BoxError> {
    let (mut mock, mock_url) = child(&["serve-mock", "fast"])?;
    let (mut gw, gw_url) = child(&["serve-gateway", &mock_url])?;
    let pid = gw.id();
    let client = h1_client();
    // Warm the gateway (allocator arenas, connection pool) with a short
    // stream read to 1 MiB, then take its RSS as the baseline.
    read_some(&client, &gw_url, MIB, false).await?;
    let before = rss(pid)?;
    let sampler = Sampler::start(pid);
    let t = Instant::now();
    let read = read_some(&client, &gw_url, mib * MIB, true).await?;
    let took = t.elapsed();
    let max = sampler.stop().await;
    println!(
        "slow reader: {} MiB relayed in {:.1} s ({:.0} MiB/s, 2 s stall included); gateway RSS {:.1} MiB before, max {:.1} MiB: growth {:.2} MiB (goal < 16 MiB)",
        read / MIB,
        took.as_secs_f64(),
        (read / MIB) as f64 / took.as_secs_f64(),
        before as f64 / MIB as f64,
        max as f64 / MIB as f64,
        max.saturating_sub(before) as f64 / MIB as f64,
    );
    stop(&mut [&mut gw, &mut mock]);
    Ok(())
}

/// Reads `limit` bytes of one stream through the gateway, then drops it.
/// `slow`: stall 2 s after the first MiB, then pause 5 ms after every MiB.
async fn read_some(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    limit: u64,
    slow: bool,
) -> Result<u64, BoxError> {
    let res = client.request(request(url)?).await?;
    if res.status() != 200 {
        return Err(format!("gateway answered {}", res.status()).into());
    }
    let mut body = res.into_body();
    let (mut read, mut next_pause) = (0u64, MIB);
    while read < limit {
        let Some(frame) = body.frame().await else {
            return Err(format!("the stream ended after {read} bytes").into());
        };
        if let Some(data) = frame?.data_ref() {
            read += data.len() as u64;
        }
        if slow && read >= next_pause {
            let pause = if next_pause == MIB { 2000 } else { 5 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            next_pause += MIB;
        }
    }
    Ok(read)
}

/// `upstream_http`: the gateway's `http` setting towards the mock: `http1`
/// (a connection per stream) or `http2` (one connection for all).
async fn open_streams(n: usize, upstream_http: &str) -> Result<(), BoxError> {
    let (mut mock, mock_url) = child(&["serve-mock", "slow"])?;
    let (mut gw, gw_url) = child(&["serve-gateway", &mock_url, upstream_http])?;
    let pid = gw.id();
    // One HTTP/2 connection per 200 streams (the server's default limit of
    // concurrent streams per connection).
    let per_conn = 200;
    let clients: Vec<Client<HttpConnector, Full<Bytes>>> = (0..n.div_ceil(per_conn))
        .map(|_| {
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http()
        })
        .collect();
    // Warm up with one connection's worth, then take the baseline.
    drop(open(&clients[..1], &gw_url, per_conn.min(n)).await?);
    let before = rss(pid)?;
    let sampler = Sampler::start(pid);
    let t = Instant::now();
    let held = open(&clients, &gw_url, n).await?;
    let took = t.elapsed();
    // Let the streams run (tokens every 500 ms) while sampling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let max = sampler.stop().await;
    println!(
        "open streams, {upstream_http} to the upstream: {} streams open through the gateway (opened in {:.1} s); {} (goal < 200 MiB in all)",
        held.len(),
        took.as_secs_f64(),
        per_stream(before, max, held.len()),
    );
    drop(held);
    stop(&mut [&mut gw, &mut mock]);
    Ok(())
}

/// The gateway's RSS before and at its largest, the growth, and the growth
/// per stream of `n`.
fn per_stream(before: u64, max: u64, n: usize) -> String {
    let growth = max.saturating_sub(before);
    format!(
        "gateway RSS {:.1} MiB before, max {:.1} MiB: growth {:.1} MiB, {:.1} KiB per stream",
        before as f64 / MIB as f64,
        max as f64 / MIB as f64,
        growth as f64 / MIB as f64,
        growth as f64 / 1024.0 / n.max(1) as f64,
    )
}

/// Opens `n` streams spread over `clients`, each read to its first data
/// frame; returns their bodies (the streams stay open while held).
async fn open(
    clients: &[Client<HttpConnector, Full<Bytes>>],
    url: &str,
    n: usize,
) -> Result<Vec<hyper::body::Incoming>, BoxError> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = clients[i % clients.len()].clone();
        let req = request(url)?;
        tasks.spawn(async move {
            let res = client.request(req).await?;
            if res.status() != 200 {
                return Err::<_, BoxError>(format!("gateway answered {}", res.status()).into());
            }
            let mut body = res.into_body();
            loop {
                match body.frame().await {
                    Some(Ok(f)) if f.is_data() => return Ok(body),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err("the stream ended before its first event".into()),
                }
            }
        });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        held.push(r??);
    }
    Ok(held)
}
