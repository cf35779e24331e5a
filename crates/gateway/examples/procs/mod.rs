//! What the multi-process examples (`load`, `memory`, `bounded`) share: running this
//! example binary again as a child in another mode, and the gateway mode.

// Each example uses part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves a gateway in front of the mock at `mock_url` (an `openai`
/// upstream `mock`, model `m`; `upstream_extra`: more TOML lines for the
/// upstream) with `[server] runtime = "{runtime}"` and prints its base URL.
pub(crate) async fn serve_gateway(
    mock_url: &str,
    upstream_extra: &str,
    runtime: &str,
) -> Result<(), BoxError> {
    serve_config(&format!(
        "[server]\nruntime = \"{runtime}\"\n[[upstreams]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{mock_url}\"\n{upstream_extra}\n[[routes]]\nmodel = \"m\"\ntargets = [\"mock\"]\n"
    ))
    .await
}

/// Serves a gateway for the config `toml` on a free loopback port and prints
/// its base URL; `[server] runtime = "thread_per_core"` in `toml` serves it
/// with one runtime per worker thread ([`palisade_gateway::serve_per_core`]),
/// otherwise on this process's runtime.
pub(crate) async fn serve_config(toml: &str) -> Result<(), BoxError> {
    let config = palisade_gateway::Config::parse(toml, "example")?;
    if config.server.runtime == palisade_gateway::config::Runtime::ThreadPerCore {
        let workers = config.server.worker_count();
        let gateway = palisade_gateway::Gateway::new(config)?;
        let listeners = palisade_gateway::PerCoreListeners::bind("127.0.0.1:0".parse()?, workers)?;
        println!("http://{}/v1", listeners.local_addr());
        palisade_gateway::serve_per_core(listeners, gateway, std::future::pending(), None).await?;
        return Ok(());
    }
    let gateway =
        palisade_gateway::Gateway::new(palisade_gateway::Config::parse(toml, "example")?)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}/v1", listener.local_addr()?);
    palisade_gateway::serve(listener, gateway, std::future::pending()).await?;
    Ok(())
}

/// Runs this example in `mode` and reads the base URL it prints.
pub(crate) fn child(mode: &[&str]) -> Result<(Child, String), BoxError> {
    let mut c = Command::new(std::env::current_exe()?)
        .args(mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = c.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    Ok((c, line.trim().to_owned()))
}

/// Stops the child processes.
pub(crate) fn stop(children: &mut [&mut Child]) {
    for c in children.iter_mut() {
        let _ = c.kill();
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
}

/// The CPU time process `pid` has used so far (user and system), from
/// `/proc/PID/stat` (Linux only).
pub(crate) fn cpu_time(pid: u32) -> Result<Duration, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("odd /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the whole line, in clock ticks.
    let ticks = |i: usize| -> Result<u64, BoxError> {
        Ok(fields
            .get(i)
            .ok_or("short /proc/PID/stat")?
            .parse::<u64>()?)
    };
    let total = ticks(11)? + ticks(12)?;
    // Linux's USER_HZ is 100 on every architecture it runs on.
    Ok(Duration::from_millis(total * 10))
}

/// The resident set of process `pid`, in bytes.
pub(crate) fn rss(pid: u32) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or("no VmRSS line in /proc/PID/status (Linux only)")?;
    Ok(kb * 1024)
}

/// Samples `pid`'s RSS every 20 ms into a running maximum until stopped.
pub(crate) struct Sampler {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub(crate) fn start(pid: u32) -> Self {
        let (max, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let task = tokio::spawn({
            let (max, stop) = (max.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = rss(pid) {
                        max.fetch_max(r, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self { max, stop, task }
    }

    pub(crate) async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.max.load(Ordering::Relaxed)
    }
}
