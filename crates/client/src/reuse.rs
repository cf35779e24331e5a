//! Knowing whether a request failed on a reused connection that the server
//! had closed.
//!
//! A server that closes keep-alive connections after a short idle time
//! (uvicorn and Node.js default to 5 s) without saying `Connection: close`
//! races the client: a pooled connection can be closed just as a request is
//! written on it. The server never read that request, so it never
//! processed it; the client sees the connection reset, or closed, before a
//! response head. hyper-util resends a request it had not begun to write;
//! the rest of the race is told apart here, as Go's `net/http` does
//! (`errServerClosedIdle`): the connector tags every connection with a
//! counter of the answers it carried, and such a failure on a connection
//! that had carried one is a [`TransportKind::StaleConnection`]
//! (`palisade_core::TransportKind`) — which the default classifier retries
//! and does not count against the upstream. The same failure on a fresh
//! connection is an ordinary protocol error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy;
use hyper_util::client::legacy::connect::{Connected, Connection};
use palisade_core::BoxError;
use pin_project_lite::pin_project;

/// How many answers a connection has carried (shared by every request on
/// it, through hyper-util's connection extras).
#[derive(Clone, Debug, Default)]
pub(crate) struct Uses(Arc<AtomicU64>);

impl Uses {
    /// Counts an answer received on this connection.
    pub(crate) fn answered(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn reused(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

pin_project! {
    /// A connection tagged with its [`Uses`].
    #[derive(Debug)]
    pub(crate) struct Tracked<T> {
        #[pin]
        inner: T,
        uses: Uses,
    }
}

impl<T: Read> Read for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: Write> Write for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
}

impl<T: Connection> Connection for Tracked<T> {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.uses.clone())
    }
}

/// A connector whose connections are [`Tracked`].
#[derive(Clone, Debug)]
pub(crate) struct TrackingConnector<C>(pub(crate) C);

impl<C> tower_service::Service<Uri> for TrackingConnector<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = Tracked<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let inner = connecting.await.map_err(Into::into)?;
            Ok(Tracked {
                inner,
                uses: Uses::default(),
            })
        })
    }
}

/// Whether `err` is a reused connection found closed before any byte of
/// the answer: reset, broken, or ended before a response head.
pub(crate) fn closed_while_idle(err: &legacy::Error) -> bool {
    if err.is_connect() {
        return false;
    }
    let reused = err.connect_info().is_some_and(|c| {
        let mut ext = http::Extensions::new();
        c.get_extras(&mut ext);
        ext.get::<Uses>().is_some_and(Uses::reused)
    });
    reused
        && palisade_core::chain(err).any(|e| {
            e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_incomplete_message)
                || e.downcast_ref::<io::Error>().is_some_and(|io| {
                    matches!(
                        io.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                            | io::ErrorKind::UnexpectedEof
                    )
                })
        })
}
