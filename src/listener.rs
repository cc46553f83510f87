//! Accepted connections and the descriptor budget they draw on.
//!
//! Owns: the process's `RLIMIT_NOFILE` (raised to the hard limit at start), the connection caps
//! derived from it, and the life of every accepted socket: the HTTP accept loop (header-read
//! and idle timeouts, a cap that evicts the oldest idle connection before it refuses one) and
//! the gRPC incoming stream (a cap that refuses, a no-bytes idle timeout, TCP keepalive). An
//! idle connection flood must not take the descriptors the store needs. Knows hyper, not axum
//! (`http` hands in its router as a tower service) and not tonic (`api` serves the stream).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::ListenerMetrics;

/// Descriptors kept out of the HTTP cap (besides the gRPC cap) for the store's files, outbound
/// vendor and chat connections, the policy watcher, logs and the listeners themselves.
pub const FD_RESERVE: u64 = 256;

/// How long the accept loop backs off after an accept error other than a failed handshake
/// (typically `EMFILE`: out of descriptors), so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How long a new connection at the cap waits for the idle connection it evicted to close.
const EVICT_WAIT: Duration = Duration::from_millis(500);

/// How long a connection closed for idleness may take to finish closing before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The process's descriptor limit, `(soft, hard)`.
#[cfg(unix)]
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let r = get_nofile()?;
    // `rlim_t` is u64 on Linux, not on every unix.
    #[allow(clippy::useless_conversion)]
    Ok((u64::from(r.rlim_cur), u64::from(r.rlim_max)))
}

#[cfg(unix)]
fn get_nofile() -> io::Result<libc::rlimit> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass in and keeps no pointer to it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

#[cfg(not(unix))]
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no RLIMIT_NOFILE",
    ))
}

/// Raises the soft descriptor limit to the hard limit (a process may always do that); returns
/// the limits in force afterwards.
#[cfg(unix)]
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut r = get_nofile()?;
    if r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        // SAFETY: setrlimit reads the struct we pass in and keeps no pointer to it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    nofile_limit()
}

#[cfg(not(unix))]
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    nofile_limit()
}

/// The HTTP connection cap: the configured one, lowered so that it, the gRPC cap and
/// [`FD_RESERVE`] fit under the soft descriptor limit (at least 1).
pub fn http_cap(configured: usize, grpc_cap: usize, soft_limit: u64) -> usize {
    let room = soft_limit.saturating_sub(FD_RESERVE + grpc_cap as u64);
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// Limits of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A header must be complete within this long of its first byte.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// A request's body must arrive whole within this long of its header (enforced by `http`,
    /// which reads bodies; a request in flight is never cut off here).
    pub body_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// One open HTTP connection as the cap sees it.
struct Conn {
    /// Requests being answered on it now.
    in_flight: AtomicUsize,
    /// Requests begun on it so far. A request answered within one poll of the connection
    /// begins and ends before the timer loop can see `in_flight` above zero; this count is how
    /// the loop learns that the connection was used meanwhile.
    begun: AtomicU64,
    /// Signalled whenever `in_flight` changes.
    changed: Notify,
    /// Cancelled to close the connection (while idle) for a newer one.
    evict: CancellationToken,
    /// Bytes received so far, and a signal whenever more arrive.
    received: AtomicU64,
    read: Notify,
}

/// An accepted HTTP socket that reports the bytes it receives to its [`Conn`].
struct Watched {
    tcp: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.tcp).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0 {
            self.conn.received.fetch_add(n as u64, Ordering::SeqCst);
            self.conn.read.notify_one();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The open connections; a slot is a semaphore permit, so the cap is never exceeded.
struct Slots {
    free: Arc<Semaphore>,
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Slots {
    /// Marks the oldest idle connection for eviction; false if every connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let victim = conns
            .values()
            .find(|c| c.in_flight.load(Ordering::SeqCst) == 0 && !c.evict.is_cancelled());
        match victim {
            Some(c) => {
                c.evict.cancel();
                true
            }
            None => false,
        }
    }
}

/// Holds a slot while the connection lives; frees it (and counts the close) on drop.
struct Registered {
    slots: Arc<Slots>,
    id: u64,
    open: prometheus_client::metrics::gauge::Gauge,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.slots
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        self.open.dec();
    }
}

/// Counts a request in flight on its connection until dropped.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn begin(conn: &Arc<Conn>) -> InFlight {
        conn.begun.fetch_add(1, Ordering::SeqCst);
        conn.in_flight.fetch_add(1, Ordering::SeqCst);
        conn.changed.notify_one();
        InFlight(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_one();
    }
}

/// The per-connection service: the caller's tower service, with each request counted in flight
/// until its response is ready.
struct Tracked<S> {
    inner: S,
    conn: Arc<Conn>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<B>, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = InFlight::begin(&self.conn);
        let svc = self.inner.clone();
        Box::pin(async move {
            let _guard = guard;
            tower::ServiceExt::oneshot(svc, req).await
        })
    }
}

/// Why a connection was closed by us rather than by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    Idle,
    HeaderTimeout,
    Evicted,
    Shutdown,
}

/// Serves HTTP/1 and HTTP/2 on `listener` with `make(peer)` as each connection's service,
/// under `limits`, until `shutdown` completes; then lets in-flight requests finish.
///
/// At the cap a new connection is still accepted: the oldest connection with no request in
/// flight is closed to make room, so an idle flood cannot lock out a client that sends a
/// request. Only when every slot holds a request in flight is the new connection closed at
/// once (counted as refused). Accepting and closing, rather than leaving connections in the
/// kernel's backlog, tells the client at once and keeps the backlog moving.
pub async fn serve_http<M, S, B>(
    listener: TcpListener,
    limits: HttpLimits,
    metrics: ListenerMetrics,
    make: M,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    M: Fn(SocketAddr) -> S,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // hyper's own header timer also runs while a kept-alive connection waits for its next
    // request, which would make it the idle timeout; the loop below times headers from their
    // first byte instead.
    builder.http1().header_read_timeout(None);
    let slots = Arc::new(Slots {
        free: Arc::new(Semaphore::new(limits.max_connections)),
        conns: Mutex::new(BTreeMap::new()),
        next_id: AtomicU64::new(0),
    });
    let stop = CancellationToken::new();
    let conns = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) if is_handshake_error(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an HTTP connection; retrying in a second");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        let permit = match slots.free.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) if slots.evict_oldest_idle() => {
                metrics.evicted.inc();
                tokio::time::timeout(EVICT_WAIT, slots.free.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(permit) = permit else {
            metrics.refused.inc();
            drop(tcp);
            continue;
        };
        // Small request/response pairs: without TCP_NODELAY, Nagle plus delayed ACKs add ~40 ms.
        let _ = tcp.set_nodelay(true);
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            changed: Notify::new(),
            evict: CancellationToken::new(),
            received: AtomicU64::new(0),
            read: Notify::new(),
        });
        let id = slots.next_id.fetch_add(1, Ordering::Relaxed);
        slots
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, conn.clone());
        metrics.open.inc();
        let registered = Registered {
            slots: slots.clone(),
            id,
            open: metrics.open.clone(),
            _permit: permit,
        };
        let service = Tracked {
            inner: make(peer),
            conn: conn.clone(),
        };
        let (builder, stop) = (builder.clone(), stop.clone());
        conns.spawn(async move {
            let _registered = registered;
            let io = Watched {
                tcp,
                conn: conn.clone(),
            };
            let served = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(served);
            // Runs until the client closes, the connection has had no request in flight for
            // the idle timeout, a header that began arriving is not complete within the
            // header-read timeout, it is evicted while idle, or the daemon stops. A request in
            // flight is never cut off here.
            let (mut was_idle, mut idle_since, mut received_then) = (true, Instant::now(), 0);
            let mut begun_then = 0;
            let mut header_since: Option<Instant> = None;
            let close = loop {
                let is_idle = conn.in_flight.load(Ordering::SeqCst) == 0;
                // `begun` before `received`: a request's bytes are counted before it begins, so
                // `received` covers every request counted in `begun`.
                let begun = conn.begun.load(Ordering::SeqCst);
                let received = conn.received.load(Ordering::SeqCst);
                // Idle again after a request, whether this loop saw it in flight or it was
                // answered in one poll of the connection (a fast handler): the idle timer starts
                // now, and the bytes so far belonged to requests, not to a header being withheld.
                // (Without the count, a client sending one fast request after another was cut
                // off by the header timer as if its header had been slow.)
                if is_idle && (!was_idle || begun != begun_then) {
                    (idle_since, received_then, header_since) = (Instant::now(), received, None);
                }
                was_idle = is_idle;
                begun_then = begun;
                if is_idle && header_since.is_none() && received > received_then {
                    header_since = Some(Instant::now());
                }
                let idle_deadline = idle_since + limits.idle_timeout;
                let (deadline, why) = match header_since {
                    Some(h) if h + limits.header_read_timeout < idle_deadline => {
                        (h + limits.header_read_timeout, Close::HeaderTimeout)
                    }
                    _ => (idle_deadline, Close::Idle),
                };
                let changed = conn.changed.notified();
                let read = conn.read.notified();
                tokio::select! {
                    r = served.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "http connection ended with an error");
                        }
                        return;
                    }
                    _ = changed => continue,
                    _ = read, if is_idle && header_since.is_none() => continue,
                    _ = tokio::time::sleep_until(deadline), if is_idle => break why,
                    _ = conn.evict.cancelled(), if is_idle => break Close::Evicted,
                    _ = stop.cancelled() => break Close::Shutdown,
                }
            };
            if close == Close::HeaderTimeout {
                // Half a header: nothing to finish.
                return;
            }
            served.as_mut().graceful_shutdown();
            if close == Close::Shutdown && conn.in_flight.load(Ordering::SeqCst) > 0 {
                // In-flight requests finish; the daemon's drain deadline bounds this.
                let _ = served.await;
            } else {
                let _ = tokio::time::timeout(CLOSE_GRACE, served).await;
            }
        });
    }
    drop(listener);
    stop.cancel();
    conns.close();
    conns.wait().await;
    Ok(())
}

/// Errors of one connection that failed during the handshake, not of the listener.
fn is_handshake_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Limits of the gRPC listener's sockets (HTTP/2 settings are tonic's, in `api`).
#[derive(Debug, Clone, Copy)]
pub struct GrpcLimits {
    pub max_connections: usize,
    /// A connection that sends no bytes for this long is closed.
    pub idle_timeout: Duration,
    pub tcp_keepalive: Duration,
}

/// Accepted gRPC sockets, at most `max_connections` open at once: more are accepted and closed
/// at once (counted as refused). Accept errors back off instead of ending the stream.
pub struct GrpcIncoming {
    listener: TcpListener,
    limits: GrpcLimits,
    metrics: ListenerMetrics,
    free: Arc<Semaphore>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl GrpcIncoming {
    pub fn new(listener: TcpListener, limits: GrpcLimits, metrics: ListenerMetrics) -> Self {
        GrpcIncoming {
            listener,
            free: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            metrics,
            backoff: None,
        }
    }
}

impl tokio_stream::Stream for GrpcIncoming {
    type Item = io::Result<GrpcConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(b) = &mut this.backoff {
                ready!(b.as_mut().poll(cx));
                this.backoff = None;
            }
            let tcp = match ready!(this.listener.poll_accept(cx)) {
                Ok((tcp, _)) => tcp,
                Err(e) if is_handshake_error(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a gRPC connection; retrying in a second");
                    this.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                    continue;
                }
            };
            let Ok(permit) = this.free.clone().try_acquire_owned() else {
                this.metrics.refused.inc();
                drop(tcp);
                continue;
            };
            // Sockets we accept ourselves get neither tonic's TCP_NODELAY nor its keepalive;
            // without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms to every small RPC.
            let _ = tcp.set_nodelay(true);
            let keepalive = socket2::TcpKeepalive::new().with_time(this.limits.tcp_keepalive);
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
            this.metrics.open.inc();
            let idle = this.limits.idle_timeout;
            return Poll::Ready(Some(Ok(GrpcConn {
                tcp,
                idle,
                deadline: Box::pin(tokio::time::sleep(idle)),
                open: this.metrics.open.clone(),
                _permit: permit,
            })));
        }
    }
}

/// One accepted gRPC socket: holds its slot, and fails its reads once no byte has arrived for
/// the idle timeout (HTTP/2 keepalive answers count, so live clients are not cut off).
pub struct GrpcConn {
    tcp: TcpStream,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    open: prometheus_client::metrics::gauge::Gauge,
    _permit: OwnedSemaphorePermit,
}

impl GrpcConn {
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl Drop for GrpcConn {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + this.idle;
                    this.deadline.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no bytes from the client within the idle timeout",
                )))
            }
        }
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_cap_fits_under_the_descriptor_limit() {
        // Room enough: the configured cap stands.
        assert_eq!(http_cap(512, 128, 65536), 512);
        // 1,024 descriptors: 1024 - 256 - 128 = 640 left for HTTP.
        assert_eq!(http_cap(900, 128, 1024), 640);
        // Hardly any descriptors: still one connection, never zero or an underflow.
        assert_eq!(http_cap(512, 128, 100), 1);
    }
}
