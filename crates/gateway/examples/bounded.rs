//! Bounded work per request: what a large request body costs the gateway in
//! memory, and how long it makes a concurrent small request wait.
//!
//! ```sh
//! cargo run --release -p palisade-gateway --example bounded
//! ```
//!
//! Four processes: two mock upstreams, the gateway in front of them (two
//! `openai` upstreams, default config: `max_body_bytes` 32 MiB), and this
//! driver. The probe's model is served by the second mock, so that the
//! first mock's own work on the large bodies does not count against the
//! gateway. For each body shape, the driver sends two
//! bodies of just under 32 MiB at once while a probe sends a small chat
//! request every 20 ms on its own connection, and prints:
//! - the status the large requests got;
//! - the gateway's largest RSS growth over its RSS before (from
//!   `/proc/PID/status` every 20 ms), per body and as a multiple of the body
//!   size (goal: < 4×);
//! - the RSS growth still held 1 s after the answers (memory given back?);
//! - the probe's slowest answer during the large requests, beside its median
//!   on an idle gateway (goal: delayed by no more than 50 ms).
//!
//! Shapes: a million tiny messages (the worst case: every JSON value costs
//! far more parsed than written), one message of one long text (the common
//! large request: a document or a base64 image), and one message of a
//! million content parts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

mod procs;

use procs::{BoxError, Sampler, child, rss, serve_config, stop};

const MIB: usize = 1 << 20;
/// Just under the default `max_body_bytes` (32 MiB).
const SIZE: usize = 32 * MIB - 4096;
const SMALL: &str = r#"{"model":"p","messages":[{"role":"user","content":"hello"}]}"#;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.first().map(String::as_str) {
        Some("serve-mock") => rt.block_on(async {
            let mock = palisade_mock::MockUpstream::new();
            let server = mock.serve().await?;
            println!("{}", server.base_url());
            std::future::pending::<()>().await;
            Ok(())
        }),
        Some("serve-gateway") => rt.block_on(serve_two(
            args.get(1).map_or("", String::as_str),
            args.get(2).map_or("", String::as_str),
        )),
        _ => rt.block_on(drive()),
    }
}

/// A gateway (default config) with model `m` (the large requests) on the
/// mock at `big` and model `p` (the probe) on the mock at `probe`: the
/// mock's own parsing of the large bodies must not delay the probe.
async fn serve_two(big: &str, probe: &str) -> Result<(), BoxError> {
    serve_config(&format!(
        "[[upstreams]]\nname = \"big\"\nkind = \"openai\"\nbase_url = \"{big}\"\n\
         [[upstreams]]\nname = \"probe\"\nkind = \"openai\"\nbase_url = \"{probe}\"\n\
         [[routes]]\nmodel = \"m\"\ntargets = [\"big\"]\n\
         [[routes]]\nmodel = \"p\"\ntargets = [\"probe\"]\n"
    ))
    .await
}

/// A chat request of about [`SIZE`] bytes: `{"model":"m","messages":[` +
/// `item` repeated (comma-separated) + `tail`.
fn body_of(head: &str, item: &str, tail: &str) -> Bytes {
    let room = SIZE - head.len() - tail.len();
    repeated(head, item, tail, room / (item.len() + 1))
}

/// `head` + `n` times `item` (comma-separated) + `tail`.
fn repeated(head: &str, item: &str, tail: &str, n: usize) -> Bytes {
    let mut out = String::with_capacity(head.len() + n * (item.len() + 1) + tail.len());
    out.push_str(head);
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push_str(tail);
    Bytes::from(out)
}

fn shapes() -> Vec<(&'static str, Bytes)> {
    let long = {
        let head = r#"{"model":"m","messages":[{"role":"user","content":""#;
        let tail = r#""}]}"#;
        let mut s = String::with_capacity(SIZE);
        s.push_str(head);
        while s.len() < SIZE - tail.len() - 16 {
            s.push_str("lorem ipsum dolor sit amet ");
        }
        s.push_str(tail);
        Bytes::from(s)
    };
    // The most messages the default `max_json_values` (300,000) lets
    // through: the object, `model`, `messages`, then three per message.
    let at_limit = 99_999;
    let filler = "lorem ipsum ".repeat((SIZE / at_limit - 40) / 12);
    vec![
        (
            "100k messages, 32 MiB",
            repeated(
                r#"{"model":"m","messages":["#,
                &format!(r#"{{"role":"user","content":"{filler}"}}"#),
                "]}",
                at_limit,
            ),
        ),
        (
            "100k tiny messages",
            repeated(
                r#"{"model":"m","messages":["#,
                r#"{"role":"user","content":"a"}"#,
                "]}",
                at_limit,
            ),
        ),
        (
            "a million tiny messages",
            body_of(
                r#"{"model":"m","messages":["#,
                r#"{"role":"user","content":"a"}"#,
                "]}",
            ),
        ),
        ("one long text", long),
        (
            "a million content parts",
            body_of(
                r#"{"model":"m","messages":[{"role":"user","content":["#,
                r#"{"type":"text","text":"a"}"#,
                "]}]}",
            ),
        ),
    ]
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn post(url: &str, body: Bytes) -> Result<http::Request<Full<Bytes>>, BoxError> {
    Ok(http::Request::post(format!("{url}/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(body))?)
}

/// Sends one small request; its latency.
async fn small(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
) -> Result<Duration, BoxError> {
    let t = Instant::now();
    let res = client
        .request(post(url, Bytes::from_static(SMALL.as_bytes()))?)
        .await?;
    let status = res.status();
    res.into_body().collect().await?;
    if !status.is_success() {
        return Err(format!("the probe got {status}").into());
    }
    Ok(t.elapsed())
}

async fn drive() -> Result<(), BoxError> {
    println!("two bodies of each shape at once; a fresh gateway per shape");
    println!(
        "{:<26} {:>9} {:>8} {:>14} {:>8} {:>14} {:>13} {:>13}",
        "shape",
        "MiB",
        "status",
        "peak RSS +MiB",
        "× size",
        "after 1 s MiB",
        "probe p50 ms",
        "probe max ms"
    );
    for (name, body) in shapes() {
        let (mut mock, mock_url) = child(&["serve-mock"])?;
        let (mut mock2, mock2_url) = child(&["serve-mock"])?;
        let (mut gw, gw_url) = child(&["serve-gateway", &mock_url, &mock2_url])?;
        let result = run(gw.id(), &gw_url, name, body).await;
        stop(&mut [&mut gw, &mut mock, &mut mock2]);
        result?;
    }
    Ok(())
}

/// One shape against a fresh gateway.
async fn run(pid: u32, url: &str, name: &str, body: Bytes) -> Result<(), BoxError> {
    let probe = client();
    // Idle figures: warm up, then the probe's median.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(small(&probe, url).await?);
    }
    idle.sort();
    let idle_p50 = idle[idle.len() / 2];
    {
        let before = rss(pid)?;
        let sampler = Sampler::start(pid);
        let done = Arc::new(AtomicBool::new(false));
        let prober = tokio::spawn({
            let (probe, url, done) = (probe.clone(), url.to_owned(), done.clone());
            async move {
                let mut worst = Duration::ZERO;
                while !done.load(Ordering::Relaxed) {
                    if let Ok(d) = small(&probe, &url).await {
                        worst = worst.max(d);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                worst
            }
        });
        let big = client();
        let send = |b: Bytes| {
            let big = big.clone();
            let url = url.to_owned();
            async move {
                let res = big.request(post(&url, b)?).await?;
                let status = res.status();
                res.into_body().collect().await?;
                Ok::<_, BoxError>(status)
            }
        };
        let (a, b) = tokio::join!(send(body.clone()), send(body.clone()));
        done.store(true, Ordering::Relaxed);
        let worst = prober.await?;
        let peak = sampler.stop().await.saturating_sub(before);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss(pid)?.saturating_sub(before);
        let (a, b) = (a?, b?);
        println!(
            "{:<26} {:>9.1} {:>8} {:>14.1} {:>8.2} {:>14.1} {:>13.2} {:>13.1}",
            name,
            body.len() as f64 / MIB as f64,
            format!("{} {}", a.as_u16(), b.as_u16()),
            peak as f64 / MIB as f64,
            peak as f64 / (2 * body.len()) as f64,
            after as f64 / MIB as f64,
            idle_p50.as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
