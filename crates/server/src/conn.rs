//! Connections: the accept loop, its limits, and how a connection ends.
//!
//! axum's own `serve` has no connection limit and no header timeout (a client that sends one
//! header line every few seconds, or nothing at all, keeps its socket forever), so facegate runs
//! hyper's HTTP/1 connection itself:
//! - at most `max_connections` at once; one more is closed at accept (counted in the metrics);
//! - the request head must arrive within `header_timeout`, which also bounds how long a
//!   kept-alive connection may sit idle between requests (hyper starts that timer whenever it
//!   waits for a head);
//! - at most `max_header_bytes` of head buffered per connection;
//! - a connection that ends with part of a request body unread (a refusal sent before the body was
//!   read: 401, 403, 413) closes its write side and reads and discards what the client is still
//!   sending, for at most `linger` and `linger_bytes`, so the client reads the answer instead of
//!   a reset. Discarding needs one fixed buffer, never the body.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Wraps a request's body so the caller learns whether it was read to its end (`true` at once
/// for a request without a body).
pub fn track_body_end(
    req: axum::extract::Request,
) -> (axum::extract::Request, Arc<std::sync::atomic::AtomicBool>) {
    use http_body::Body as _;
    let (parts, body) = req.into_parts();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(body.is_end_stream()));
    let tracked = TrackedBody {
        inner: body,
        done: done.clone(),
    };
    (
        axum::extract::Request::from_parts(parts, axum::body::Body::new(tracked)),
        done,
    )
}

struct TrackedBody {
    inner: axum::body::Body,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub linger: Duration,
    pub linger_bytes: u64,
}

/// Connection counters for the metrics.
#[derive(Default)]
pub struct ConnStats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub refused_at_limit: AtomicU64,
}

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting and let the open
/// connections finish their requests.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    shutdown: impl Future<Output = ()>,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused_at_limit.fetch_add(1, Ordering::Relaxed);
            drop(io);
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let app = app.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let io = TokioIo::new(Lingering::new(io, limits.linger, limits.linger_bytes));
        let conn = graceful.watch(http.serve_connection(io, svc));
        let stats = stats.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = conn.await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// An IO whose shutdown lingers: write side closed first, then what the peer still sends is read
/// and dropped until it closes, `linger` passes or `linger_bytes` have been dropped.
pub struct Lingering<I> {
    inner: I,
    linger: Duration,
    linger_bytes: u64,
    state: LingerState,
}

enum LingerState {
    Open,
    Draining {
        deadline: Pin<Box<tokio::time::Sleep>>,
        dropped: u64,
    },
    Done,
}

impl<I> Lingering<I> {
    pub fn new(inner: I, linger: Duration, linger_bytes: u64) -> Self {
        Lingering {
            inner,
            linger,
            linger_bytes,
            state: LingerState::Open,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Lingering<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                LingerState::Open => {
                    // A failed shutdown means the peer is gone: nothing to linger for.
                    if ready!(Pin::new(&mut this.inner).poll_shutdown(cx)).is_err() {
                        this.state = LingerState::Done;
                        continue;
                    }
                    this.state = LingerState::Draining {
                        deadline: Box::pin(tokio::time::sleep(this.linger)),
                        dropped: 0,
                    };
                }
                LingerState::Draining { deadline, dropped } => {
                    if deadline.as_mut().poll(cx).is_ready() || *dropped >= this.linger_bytes {
                        this.state = LingerState::Done;
                        continue;
                    }
                    let mut scratch = [0u8; 8192];
                    let mut rb = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                            *dropped += rb.filled().len() as u64;
                        }
                        // End of stream or an error: the peer has finished.
                        Poll::Ready(_) => this.state = LingerState::Done,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                LingerState::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn lingering_shutdown_drains_what_the_peer_still_sends_then_ends() {
        let (server, mut client) = tokio::io::duplex(1024);
        let mut io = Lingering::new(server, Duration::from_secs(5), 1 << 20);
        // The peer is still uploading 64 KiB when the server closes.
        let writer = tokio::spawn(async move {
            let chunk = [7u8; 4096];
            for _ in 0..16 {
                client.write_all(&chunk).await.expect("peer write");
            }
            client.shutdown().await.expect("peer shutdown");
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.expect("peer read");
            rest
        });
        io.shutdown().await.expect("lingering shutdown");
        let seen_by_peer = writer.await.expect("peer task");
        assert!(seen_by_peer.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn lingering_is_bounded_in_time_when_the_peer_never_stops() {
        let (server, _client) = tokio::io::duplex(1024);
        let mut io = Lingering::new(server, Duration::from_secs(2), 1 << 20);
        // The peer keeps the stream open and sends nothing: the deadline ends the wait.
        tokio::time::timeout(Duration::from_secs(3), io.shutdown())
            .await
            .expect("bounded by the linger time")
            .expect("shutdown");
    }
}
