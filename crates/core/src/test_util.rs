//! Test probes (feature `test-util`): things every crate's tests need.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Captures everything `tracing` prints while it is the default subscriber,
/// so a test can assert what was (or was not) logged.
///
/// # Example
///
/// ```
/// use palisade_core::test_util::LogCapture;
///
/// let logs = LogCapture::new();
/// let _guard = logs.set_default();
/// tracing::info!(attempt = 1, "retrying");
/// assert!(logs.contents().contains("attempt=1"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs a TRACE-level, plain-text subscriber writing here, as the
    /// default for this thread until the guard drops.
    #[must_use = "the capture stops when the guard is dropped"]
    pub fn set_default(&self) -> tracing::subscriber::DefaultGuard {
        // While one subscriber is live, tracing computes a callsite's
        // interest from the registering thread's default alone: a callsite
        // first reached by another test's thread (no subscriber there) would
        // cache "never" for every thread. A second, silent subscriber kept
        // for the life of the process makes tracing ask all of them.
        static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(self.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// Everything captured so far, as text.
    pub fn contents(&self) -> String {
        let buf = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}

/// Readies `svc`, calls it and polls the future once with a no-op waker: for
/// benchmarks of layers around a service that answers at once.
///
/// # Panics
///
/// If the service is not ready or its future is not ready at the first poll
/// (a bug in the benchmark's setup).
pub fn call_now<S, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error>
where
    S: tower::Service<R>,
{
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => return Err(e),
        Poll::Pending => panic!("call_now: the service is not ready"),
    }
    let mut fut = std::pin::pin!(svc.call(req));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("call_now: the future is not ready at once"),
    }
}

/// Times `iters` runs of `mine` on this thread while `other` runs in a loop
/// on a second thread: the cost of one operation under contention, for
/// `criterion`'s `iter_custom`.
pub fn time_contended(
    iters: u64,
    mut mine: impl FnMut(),
    mut other: impl FnMut() + Send + 'static,
) -> std::time::Duration {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                other();
            }
        })
    };
    let t0 = std::time::Instant::now();
    for _ in 0..iters {
        mine();
    }
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = thread.join();
    took
}

/// A `redis-server` started on a free loopback port for a test, stopped when
/// dropped. Needs `redis-server` on the `PATH` (CI installs it with
/// `apt-get install -y redis-server`).
#[derive(Debug)]
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    /// Starts one and waits (at most 10 s) until it answers `PING`.
    ///
    /// # Panics
    ///
    /// When `redis-server` cannot be started or does not answer: the message
    /// says how to install it.
    #[allow(clippy::expect_used, clippy::unwrap_used)]
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        Self::start_on(port)
    }

    /// Stops it (as a crash would: its state is gone).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port, empty (a restarted Redis).
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn restart(&mut self) {
        self.stop();
        let fresh = Self::start_on(self.port);
        // The old handle's process is gone already: dropping it is a no-op.
        drop(std::mem::replace(self, fresh));
    }

    #[allow(clippy::expect_used, clippy::unwrap_used)]
    fn start_on(port: u16) -> Self {
        use std::io::{Read, Write};
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is needed for this test: apt-get install -y redis-server");
        let server = Self { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let pong = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
                s.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
                s.write_all(b"PING\r\n")?;
                let mut buf = [0u8; 7];
                s.read_exact(&mut buf)?;
                Ok(buf)
            });
            if matches!(pong, Ok(b) if &b == b"+PONG\r\n") {
                return server;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on port {port} did not answer PING within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Its process id (e.g. to read its CPU time in a benchmark).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
