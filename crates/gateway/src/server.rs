//! Serving connections: the accept loop, the limits on each caller's
//! connection, graceful shutdown.
//!
//! Each accepted connection is served by hyper (HTTP/1.1 or HTTP/2, told
//! apart by the preface) with the timeouts and HTTP/2 settings of
//! [`ServerConfig`](crate::config::ServerConfig) set explicitly. A
//! connection past `max_connections` gets a 503 and is closed at once, so a
//! flood of connections cannot use up the process's file descriptors and
//! leave health checks hanging. An accept error (the open-file limit
//! reached, say) is logged and accepting pauses for 100 ms instead of
//! spinning.
//!
//! Every connection, HTTP/1.1 or HTTP/2, closes (gracefully: requests in
//! flight finish) after `idle_timeout` with no byte either way; HTTP/1.1's
//! `header_read_timeout` usually closes an idle one first. A new connection
//! whose first request head is not complete within `header_read_timeout` is
//! closed, whether it sent part of one or nothing at all: hyper's own
//! timer starts only once the protocol is known, and telling HTTP/1.1 from
//! HTTP/2 waits for the first bytes, so a silent socket would otherwise be
//! held until `idle_timeout`.
//!
//! On shutdown: the listener closes; idle connections close, and so do
//! those that have not sent a complete first head (at once: nothing was
//! asked yet); a request whose body is still arriving is answered 503 at
//! once (see `inbound::check_body`); a connection serving a request closes
//! after its answer. Streams still running when
//! the grace period ends get an error event in the caller's format (the
//! gateway's `cut` signal, which every relay watches) and a moment to flush
//! it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use crate::config::ServerConfig;

/// How long streams cut at the end of the grace period get to flush their
/// error event.
const FLUSH_AFTER_CUT: Duration = Duration::from_secs(2);

/// The answer to a connection over the limit.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 129\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"error\":{\"message\":\"the gateway is serving its maximum of connections (max_connections); retry shortly\",\"type\":\"server_error\"}}\n";

/// hyper's connection builder with every limit set.
fn builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(cfg.header_read_timeout))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.http2_max_concurrent_streams)
        .initial_stream_window_size(cfg.http2_stream_window)
        .initial_connection_window_size(cfg.http2_connection_window)
        .keep_alive_interval(Duration::from_millis(cfg.http2_keep_alive_interval))
        .keep_alive_timeout(Duration::from_millis(cfg.http2_keep_alive_interval))
        .max_pending_accept_reset_streams(cfg.http2_max_pending_accept_reset_streams)
        .max_header_list_size(64 * 1024);
    b
}

/// Whether an accept error means the process is out of a resource (worth a
/// pause) rather than one connection having failed.
fn out_of_resources(e: &std::io::Error) -> bool {
    !matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::Interrupted
    )
}

/// What every accept loop of one gateway shares: hyper's connection
/// builder, the connection slots (`max_connections` is process-wide, however
/// many workers accept), the connections' timers.
#[derive(Clone)]
pub(crate) struct Accepting {
    builder: Arc<auto::Builder<TokioExecutor>>,
    slots: Arc<Semaphore>,
    max: usize,
    timers: Timers,
}

impl Accepting {
    pub(crate) fn new(cfg: &ServerConfig) -> Self {
        // Within what a semaphore holds and one `acquire_many` can take.
        let max = cfg.connection_limit().clamp(1, u32::MAX as usize >> 4);
        Self {
            builder: Arc::new(builder(cfg)),
            slots: Arc::new(Semaphore::new(max)),
            max,
            timers: Timers {
                idle: Duration::from_millis(cfg.idle_timeout),
                first_head: Duration::from_millis(cfg.header_read_timeout),
            },
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then waits up to `grace`
/// for the connections to finish; past it, sends `cut` and gives streams
/// [`FLUSH_AFTER_CUT`] to end. Returns whether every connection finished
/// within the grace period.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    cfg: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Option<Duration>,
    signals: &Signals,
) -> std::io::Result<bool> {
    let acc = Accepting::new(cfg);
    tokio::select! {
        () = shutdown => {}
        () = accept_loop(listener, router, &acc, signals.stopping.subscribe()) => {}
    }
    let _ = signals.stopping.send(true);
    Ok(drain(&acc.slots, acc.max, grace, &signals.cut).await)
}

/// Like [`run`], with one worker thread per listener of `sockets` (bound
/// to one address with `SO_REUSEPORT`: the kernel spreads connections over
/// them), each running a current-thread runtime that accepts on its own
/// socket and serves its connections, so a request stays on one thread
/// from accept to answer. Connection slots, shutdown and the grace period
/// are process-wide; each worker's calls go through its own upstream stacks
/// (`upstream::set_worker`), which share their layers' state.
pub(crate) async fn run_per_core(
    sockets: Vec<std::net::TcpListener>,
    router: Router,
    cfg: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Option<Duration>,
    signals: &Signals,
) -> std::io::Result<bool> {
    let acc = Accepting::new(cfg);
    let done = watch::Sender::new(false);
    // A worker that cannot listen on its socket says so here.
    let (failed_tx, mut failed) = tokio::sync::mpsc::unbounded_channel();
    let mut threads = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let worker = Worker {
            index: i,
            socket,
            router: router.clone(),
            acc: acc.clone(),
            stop: signals.stopping.subscribe(),
            done: done.subscribe(),
            failed: failed_tx.clone(),
        };
        match worker.spawn() {
            Ok(t) => threads.push((i, t)),
            Err(e) => {
                // Stop the workers already started before giving up.
                let _ = signals.stopping.send(true);
                let _ = done.send(true);
                return Err(e);
            }
        }
    }
    drop(failed_tx);
    let failure = tokio::select! {
        () = shutdown => None,
        Some(e) = failed.recv() => Some(e),
    };
    let _ = signals.stopping.send(true);
    let finished = drain(&acc.slots, acc.max, grace, &signals.cut).await;
    let _ = done.send(true);
    join(threads).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(finished),
    }
}

/// One worker thread of [`run_per_core`].
struct Worker {
    index: usize,
    socket: std::net::TcpListener,
    router: Router,
    acc: Accepting,
    /// Shutdown started: stop accepting.
    stop: watch::Receiver<bool>,
    /// Every connection drained (or was cut): end the runtime.
    done: watch::Receiver<bool>,
    failed: tokio::sync::mpsc::UnboundedSender<std::io::Error>,
}

impl Worker {
    /// Starts the thread: a current-thread runtime accepting on the
    /// worker's socket until `stop`, then serving its connections until
    /// `done`.
    fn spawn(self) -> std::io::Result<std::thread::JoinHandle<std::io::Result<()>>> {
        let i = self.index;
        std::thread::Builder::new()
            .name(format!("palisade-worker-{i}"))
            .spawn(move || self.run())
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start gateway worker thread {i}: {e}"),
                )
            })
    }

    fn run(self) -> std::io::Result<()> {
        let Self {
            index,
            socket,
            router,
            acc,
            stop,
            mut done,
            failed,
        } = self;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        crate::upstream::set_worker(index);
        rt.block_on(async move {
            match TcpListener::from_std(socket) {
                Ok(listener) => accept_loop(listener, router, &acc, stop).await,
                Err(e) => {
                    let _ = failed.send(std::io::Error::new(
                        e.kind(),
                        format!("gateway worker {index} cannot listen on its socket: {e}"),
                    ));
                    return;
                }
            }
            let _ = done.wait_for(|d| *d).await;
        });
        Ok(())
    }
}

/// Waits for the worker threads to end (on the blocking pool), logging
/// those that failed.
async fn join(threads: Vec<(usize, std::thread::JoinHandle<std::io::Result<()>>)>) {
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|(i, t)| (i, t.join()))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (i, r) in joined {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(worker = i, error = %e, "a gateway worker failed"),
            Err(_) => tracing::error!(worker = i, "a gateway worker panicked"),
        }
    }
}

/// Accepts connections on `listener` and serves each on its own task until
/// `stop` is set (or the stop sender is gone).
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    acc: &Accepting,
    stop: watch::Receiver<bool>,
) {
    let mut refusals = Refusals::default();
    let mut stopped = stop.clone();
    loop {
        let (tcp, _peer) = tokio::select! {
            () = async { let _ = stopped.wait_for(|s| *s).await; } => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    if out_of_resources(&e) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        // Stream events are small writes: they must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = acc.slots.clone().try_acquire_owned() else {
            refusals.log(acc.max);
            tokio::spawn(refuse(tcp));
            continue;
        };
        tokio::spawn(serve_one(
            acc.builder.clone(),
            router.clone(),
            tcp,
            acc.timers,
            stop.clone(),
            slot,
        ));
    }
}

/// The gateway-wide signals of a shutdown.
#[derive(Debug)]
pub(crate) struct Signals {
    /// Set when shutdown starts: connections close once their requests are
    /// answered, and bodies still arriving are refused.
    pub(crate) stopping: watch::Sender<bool>,
    /// Set when the grace period is over: running streams end with an
    /// error event.
    pub(crate) cut: watch::Sender<bool>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            stopping: watch::Sender::new(false),
            cut: watch::Sender::new(false),
        }
    }
}

/// A connection's own timers.
#[derive(Clone, Copy, Debug)]
struct Timers {
    /// No byte either way for this long closes it (`idle_timeout`).
    idle: Duration,
    /// Its first request head must be complete within this
    /// (`header_read_timeout`).
    first_head: Duration,
}

/// Logs refused connections at most once a second, with how many were
/// refused since the last line: a flood of connections must not become a
/// flood of log lines.
#[derive(Debug, Default)]
struct Refusals {
    last: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl Refusals {
    fn log(&mut self, max: usize) {
        self.unlogged += 1;
        let now = tokio::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        tracing::warn!(
            max_connections = max,
            refused = self.unlogged,
            "refused connections: the gateway is at max_connections (at most one such line a second; `refused` counts the connections since the last)"
        );
        self.last = Some(now);
        self.unlogged = 0;
    }
}

/// Serves one caller's connection until it ends, the gateway stops
/// (`stop`: a graceful close), it carries no byte for `timers.idle`, or its
/// first request head is not complete within `timers.first_head`; its
/// `slot` is given back at the end.
async fn serve_one(
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    tcp: TcpStream,
    timers: Timers,
    mut stop: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) {
    // Set once the first request head is complete (hyper calls the service).
    let asked = Arc::new(AtomicBool::new(false));
    let svc = {
        let asked = asked.clone();
        router.map_request(move |req: http::Request<Incoming>| {
            asked.store(true, Ordering::Relaxed);
            req.map(axum::body::Body::new)
        })
    };
    let activity = Activity::default();
    let io = Watched {
        inner: tcp,
        activity: activity.clone(),
    };
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            if !asked.load(Ordering::Relaxed) {
                // Nothing asked yet (maybe half a head): nothing to finish.
                tracing::debug!("closing a caller's connection that had sent no complete request at shutdown");
                return drop(slot);
            }
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = first_head_late(&asked, timers.first_head) => {
            tracing::debug!("closing a caller's connection whose first request head was not complete within header_read_timeout");
            return drop(slot);
        }
        () = activity.silent_for(timers.idle) => {
            tracing::debug!("closing a caller's connection idle for idle_timeout");
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "a caller's connection ended with an error");
    }
    drop(slot);
}

/// Completes when `first_head` has passed and no request head was
/// complete by then; never otherwise.
async fn first_head_late(asked: &AtomicBool, first_head: Duration) {
    tokio::time::sleep(first_head).await;
    if asked.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
}

/// Waits for every connection to end, up to `grace`; past it, running
/// streams are cut (an error event each) and get [`FLUSH_AFTER_CUT`] to
/// flush it. True when everything finished within the grace.
async fn drain(
    slots: &Arc<Semaphore>,
    max: usize,
    grace: Option<Duration>,
    cut: &watch::Sender<bool>,
) -> bool {
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let drained = slots.acquire_many(all);
    tokio::pin!(drained);
    let finished = match grace {
        None => {
            let _ = drained.as_mut().await;
            true
        }
        Some(grace) => tokio::time::timeout(grace, drained.as_mut()).await.is_ok(),
    };
    if !finished {
        tracing::warn!(
            "the grace period is over: ending the streams still running with an error event"
        );
        let _ = cut.send(true);
        let _ = tokio::time::timeout(FLUSH_AFTER_CUT, drained).await;
    }
    finished
}

/// Counts a connection's reads and writes, for its idle timeout.
#[derive(Clone, Debug, Default)]
struct Activity(Arc<AtomicU64>);

impl Activity {
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Completes once no byte went either way for `idle` (checked four
    /// times per `idle`, so within 1.25 × `idle`).
    async fn silent_for(&self, idle: Duration) {
        let mut tick = tokio::time::interval(idle / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = self.0.load(Ordering::Relaxed);
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let now = self.0.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                quiet_since = tokio::time::Instant::now();
            } else if quiet_since.elapsed() >= idle {
                return;
            }
        }
    }
}

pin_project! {
    /// A caller's connection whose reads and writes are counted.
    struct Watched {
        #[pin]
        inner: TcpStream,
        activity: Activity,
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if buf.filled().len() != before {
            this.activity.bump();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bump();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bump();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Answers 503 to a connection over the limit and closes it (within 1 s).
async fn refuse(mut tcp: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = tcp.write_all(BUSY).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_is_well_formed() {
        let text = std::str::from_utf8(BUSY).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head} / {}",
            body.len()
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("max_connections"))
        );
    }
}
