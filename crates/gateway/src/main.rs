//! `palisade-gateway [--config FILE] [--listen ADDR] [--log-format text|json]`
//!
//! With no config, the built-in mock upstream (model `mock`) on
//! `127.0.0.1:8080`. The first line on stdout is `listening on ADDR`; logs go
//! to stderr, filtered by `RUST_LOG` (default `info`), as text or, with
//! `--log-format json`, one JSON object per line. SIGTERM/SIGINT stop
//! accepting and let in-flight requests finish within the grace period
//! (installed before `listening on` is printed); SIGHUP keeps its default
//! action.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use palisade_gateway::config::Runtime;
use palisade_gateway::{Config, Gateway, PerCoreListeners};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

const USAGE: &str =
    "usage: palisade-gateway [--config FILE] [--listen ADDR] [--log-format text|json]

  --config FILE   the TOML config (every key and default: the docs of
                  `palisade_gateway::config`, `cargo doc -p palisade-gateway
                  --open`); without it, the built-in mock upstream serves
                  the model `mock`
  --listen ADDR   where to listen (overrides the config's `listen`);
                  127.0.0.1:0 picks a free port
  --log-format F  `text` (the default) or `json`: one JSON object per line,
                  the request's `trace_id` among the span fields

Spans and metrics go over OTLP (HTTP/protobuf, plain http://) when
OTEL_EXPORTER_OTLP_ENDPOINT is set (or, per signal,
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / _METRICS_ENDPOINT); the other standard
OTEL_* variables apply (headers, service name, sampler,
OTEL_METRIC_EXPORT_INTERVAL, OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER
= none). GET /metrics serves the same metrics as Prometheus text either way.
";

struct Args {
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    json_logs: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args_os().skip(1);
    let mut out = Args {
        config: None,
        listen: None,
        json_logs: false,
    };
    while let Some(a) = args.next() {
        let a = a.to_string_lossy().into_owned();
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (a.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next().map(|v| v.to_string_lossy().into_owned()))
                .ok_or_else(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--config" | "-c" => out.config = Some(PathBuf::from(value("--config")?)),
            "--listen" | "-l" => {
                let v = value("--listen")?;
                out.listen = Some(v.parse().map_err(|e| {
                    format!("--listen `{v}` is not an address like 127.0.0.1:8080: {e}")
                })?);
            }
            "--log-format" => match value("--log-format")?.as_str() {
                "text" => out.json_logs = false,
                "json" => out.json_logs = true,
                other => {
                    return Err(format!(
                        "--log-format `{other}`: use `text` or `json`\n\n{USAGE}"
                    ));
                }
            },
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    Ok(out)
}

/// The shutdown signals, installed now (not when first polled), so a
/// SIGTERM that arrives right after `listening on` stops the process
/// gracefully instead of killing it. SIGHUP is not handled: it keeps its
/// default action (the process ends at once), as there is no configuration
/// reload to tie it to; run the gateway under a supervisor that sends
/// SIGTERM to stop it gracefully.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down: no new connections; waiting for in-flight requests");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            tracing::info!("shutting down: no new connections; waiting for in-flight requests");
        })
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(m) => {
            eprintln!("{m}");
            return ExitCode::from(2);
        }
    };
    let config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::builtin_mock(),
    };
    // `thread_per_core`: the workers run runtimes of their own
    // (`serve_per_core`); this one only waits for signals and runs the
    // exporters.
    let runtime = match config.server.runtime {
        Runtime::ThreadPerCore => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Runtime::MultiThread => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    match runtime {
        Ok(rt) => rt.block_on(start(args, config)),
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn start(args: Args, config: Config) -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = if args.json_logs {
        // The current span's fields (the request's `trace_id`) on each line.
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let subscriber = tracing_subscriber::registry().with(filter).with(logs);
    // Spans and metrics over OTLP when the standard OTEL_* variables ask
    // for them.
    let (spans, exporter) = match palisade_gateway::otel::from_env() {
        Ok(Some(o)) => (o.spans, Some(o.exporter)),
        Ok(None) => (None, None),
        Err(m) => {
            eprintln!("error: {m}");
            return ExitCode::from(2);
        }
    };
    subscriber.with(spans).init();
    let meter = exporter.as_ref().and_then(|e| e.meter());
    let code = run(args, config, meter).await;
    if let Some(e) = exporter {
        let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
    }
    code
}

async fn run(
    args: Args,
    mut config: Config,
    meter: Option<opentelemetry::metrics::Meter>,
) -> ExitCode {
    if let Some(l) = args.listen {
        config.listen = l;
    }
    let (grace, listen) = (config.grace(), config.listen);
    let mock_mode = args.config.is_none();
    let listening = match Listening::bind(&config).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {}: {e}; is another process using it? pick another with --listen",
                config.listen
            );
            return ExitCode::from(1);
        }
    };
    let built = match &meter {
        Some(m) => Gateway::with_meter(config, m),
        None => Gateway::new(config),
    };
    let gateway = match built {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = match shutdown_signal() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install the SIGTERM/SIGINT handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let addr = listening.addr().unwrap_or(listen);
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }
    if mock_mode {
        tracing::info!(
            "built-in mock upstream, model `mock`; try: curl -s http://{addr}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"mock\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello palisade\"}}]}}'"
        );
    }
    match listening.serve(gateway, shutdown, grace).await {
        Ok(true) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "stopped with requests still in flight after the grace period"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: serving failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// Where the gateway listens, per `[server] runtime`.
enum Listening {
    PerCore(PerCoreListeners),
    Shared(tokio::net::TcpListener),
}

impl Listening {
    /// Binds `config.listen` as its `[server] runtime` wants.
    async fn bind(config: &Config) -> std::io::Result<Self> {
        match config.server.runtime {
            Runtime::ThreadPerCore => {
                PerCoreListeners::bind(config.listen, config.server.worker_count())
                    .map(Self::PerCore)
            }
            Runtime::MultiThread => tokio::net::TcpListener::bind(config.listen)
                .await
                .map(Self::Shared),
        }
    }

    fn addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Self::PerCore(l) => Ok(l.local_addr()),
            Self::Shared(l) => l.local_addr(),
        }
    }

    async fn serve(
        self,
        gateway: Gateway,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: std::time::Duration,
    ) -> std::io::Result<bool> {
        match self {
            Self::PerCore(l) => {
                tracing::info!(
                    workers = l.workers(),
                    "thread_per_core: one runtime per worker thread"
                );
                palisade_gateway::serve_per_core(l, gateway, shutdown, Some(grace)).await
            }
            Self::Shared(l) => {
                palisade_gateway::serve_with_grace(l, gateway, shutdown, grace).await
            }
        }
    }
}
