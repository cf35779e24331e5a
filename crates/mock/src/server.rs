//! Serving the mock on a loopback socket.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::upstream::{ConnectionId, MockFuture, MockUpstream};

/// A [`MockUpstream`] served over HTTP/1.1 and HTTP/2 (h2c) on a socket.
///
/// Dropping it stops the server and closes every connection it holds (no task
/// outlives it).
///
/// # Example
///
/// ```
/// use palisade_mock::MockUpstream;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let mock = MockUpstream::new();
/// let server = mock.serve().await?;
/// assert!(server.base_url().starts_with("http://127.0.0.1:"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    upstream: MockUpstream,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    /// Serves this mock on `127.0.0.1` at a free port.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn serve(&self) -> std::io::Result<MockServer> {
        self.serve_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves this mock on `addr` (port 0 picks a free one).
    ///
    /// # Errors
    ///
    /// When `addr` cannot be bound.
    pub async fn serve_on(&self, addr: SocketAddr) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let upstream = self.clone();
        let task = tokio::spawn(accept_loop(listener, upstream.clone()));
        Ok(MockServer {
            addr,
            upstream,
            task,
        })
    }
}

async fn accept_loop(listener: TcpListener, upstream: MockUpstream) {
    let mut conns = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors or similar: keep serving the
                    // connections we have and try again.
                    tokio::task::yield_now().await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                next_id += 1;
                upstream.shared.connections.fetch_add(1, Ordering::Relaxed);
                let svc = TowerToHyperService::new(Tagged {
                    inner: upstream.clone(),
                    id: ConnectionId(next_id),
                });
                conns.spawn(async move {
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    // hyper's default is 200 streams per HTTP/2 connection;
                    // the mock takes as many as a load test opens (each
                    // stream is still bounded by its own flow control).
                    builder.http2().max_concurrent_streams(H2_MAX_STREAMS);
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Concurrent streams the mock allows per HTTP/2 connection.
const H2_MAX_STREAMS: u32 = 65_536;

/// Tags each request with the connection it arrived on.
#[derive(Clone, Debug)]
struct Tagged {
    inner: MockUpstream,
    id: ConnectionId,
}

impl tower_service::Service<Request<Incoming>> for Tagged {
    type Response = <MockUpstream as tower_service::Service<Request<Incoming>>>::Response;
    type Error = palisade_core::BoxError;
    type Future = MockFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> MockFuture {
        req.extensions_mut().insert(self.id);
        self.inner.call(req)
    }
}

impl MockServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL an OpenAI- or Anthropic-style
    /// client is configured with.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The mock it serves (shares script and record with the one served).
    pub fn upstream(&self) -> &MockUpstream {
        &self.upstream
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every
        // connection task.
        self.task.abort();
    }
}
