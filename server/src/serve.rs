//! Serving: the TLS accept loop that hands each connection, with its peer
//! address and verified client certificate, to the HTTP router; and `run`,
//! which serves both listeners until shutdown. Sockets are bound by the
//! caller.
//!
//! Connections are a resource under attack: each listener caps its open
//! connections, in all and per source address (over a cap, a connection is
//! closed as soon as it is accepted), and cuts off a client slower than the
//! handshake, header or body timeout (`[limits]` in server.toml). A
//! kept-alive connection may sit idle between requests for `idle_timeout`:
//! longer than the agents' check-in interval, so an agent keeps its
//! connection (and its TLS session) from one check-in to the next.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::http::{ConnInfo, Shared};
use crate::settings::Limits;
use crate::{api, console};

/// How long open connections get to finish after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin listener's routes: the admin API and, beside it, the web
/// console at `/` (the API's fallback answers what neither serves).
fn admin_router(app: Shared) -> Router {
    api::admin_router()
        .merge(console::router(&app.settings.console_frame_ancestors))
        .with_state(app)
}

/// Serves the agent and admin APIs on the given listeners until `shutdown`
/// completes, then lets open connections finish (bounded).
pub async fn run(
    app: Shared,
    agent: TcpListener,
    agent_tls: Arc<ServerConfig>,
    admin: TcpListener,
    admin_tls: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = app.settings.limits.clone();
    let agent_task = tokio::spawn(accept_loop(
        agent,
        agent_tls,
        api::agent_router(app.clone()),
        limits.clone(),
        stop_rx.clone(),
    ));
    let admin_task = tokio::spawn(accept_loop(
        admin,
        admin_tls,
        admin_router(app.clone()),
        limits,
        stop_rx,
    ));
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), async {
        let _ = agent_task.await;
        let _ = admin_task.await;
    })
    .await;
    // Target files still queued are written before exit (the next start's
    // full pass would write them otherwise).
    let reconciler = app.reconciler.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || reconciler.write_queued()).await {
        tracing::error!(error = %e, "target file writer failed at shutdown");
    }
    // Check-in times still in memory go to the database before exit.
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || store.flush_seen()).await {
        Ok(Ok(n)) => tracing::info!(hosts = n, "check-in times written"),
        Ok(Err(e)) => tracing::error!(error = %e, "cannot write check-in times at shutdown"),
        Err(e) => tracing::error!(error = %e, "check-in time writer failed at shutdown"),
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = tokio::task::JoinSet::new();
    let open = Arc::new(OpenConnections::default());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: pause, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        // Over a cap: closed at once, before any TLS work.
        let Some(slot) = open.take(peer.ip().to_canonical(), &limits) else {
            tracing::debug!(peer = %peer, "connection cap reached: closed");
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let stop = stop.clone();
        let limits = limits.clone();
        connections.spawn(async move {
            let _slot = slot;
            let handshake = acceptor.accept(tcp);
            let tls = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| Arc::new(c.as_ref().to_vec()));
            let info = ConnInfo { peer, client_cert };
            let body_timeout = limits.body_timeout;
            let clock = Arc::new(HeadClock::default());
            let (started, finished) = (clock.clone(), clock.clone());
            let service = router
                .map_request(move |req: axum::http::Request<Incoming>| {
                    started.head_received();
                    let (mut parts, body) = req.into_parts();
                    parts.extensions.insert(info.clone());
                    axum::http::Request::from_parts(parts, DeadlineBody::new(body, body_timeout))
                })
                .map_future(move |answer| {
                    let finished = finished.clone();
                    async move {
                        let out = answer.await;
                        finished.answered();
                        out
                    }
                });
            let service = TowerToHyperService::new(service);
            let io = HeadDeadline::new(tls, clock, limits.header_timeout);
            serve_connection(TokioIo::new(io), service, limits.idle_timeout, stop).await;
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// Serves one connection. hyper's header read timeout starts when it waits
/// for a request, idle time included: it is the idle timeout here, and
/// [`HeadDeadline`] bounds the headers themselves.
async fn serve_connection<I, S>(
    io: I,
    service: S,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<axum::http::Request<Incoming>, Response = axum::response::Response>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Where a connection is between requests: how many request heads it
/// received, and whether one is being answered.
#[derive(Default)]
struct HeadClock {
    heads: AtomicU64,
    busy: AtomicBool,
}

impl HeadClock {
    fn head_received(&self) {
        self.heads.fetch_add(1, Ordering::AcqRel);
        self.busy.store(true, Ordering::Release);
    }

    fn answered(&self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// A connection's reads, failing once a request's headers take longer
/// than `timeout` from their first byte (a slow-header client), however
/// long the connection sat idle before.
struct HeadDeadline<T> {
    inner: T,
    clock: Arc<HeadClock>,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The head count when the deadline was set: armed until it changes.
    armed_for: Option<u64>,
}

impl<T> HeadDeadline<T> {
    fn new(inner: T, clock: Arc<HeadClock>, timeout: Duration) -> HeadDeadline<T> {
        HeadDeadline {
            inner,
            clock,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            armed_for: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let heads = this.clock.heads.load(Ordering::Acquire);
        if this.armed_for.is_some_and(|n| n != heads) {
            this.armed_for = None;
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        match read {
            Poll::Ready(Ok(())) => {
                let first_bytes = buf.filled().len() > before
                    && this.armed_for.is_none()
                    && !this.clock.busy.load(Ordering::Acquire);
                if first_bytes {
                    this.armed_for = Some(heads);
                    let at = tokio::time::Instant::now() + this.timeout;
                    this.deadline.as_mut().reset(at);
                }
                read
            }
            Poll::Pending
                if this.armed_for.is_some() && this.deadline.as_mut().poll(cx).is_ready() =>
            {
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request headers were not received within the header timeout",
                )))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<T> {
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
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The open connections of one listener, in all and per source address.
#[derive(Default)]
struct OpenConnections {
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// One open connection: counted until dropped.
struct Slot {
    open: Arc<OpenConnections>,
    source: IpAddr,
}

impl OpenConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `source`, unless a cap is reached.
    fn take(self: &Arc<Self>, source: IpAddr, limits: &Limits) -> Option<Slot> {
        let mut counts = self.lock();
        let mine = counts.by_source.get(&source).copied().unwrap_or(0);
        if counts.total >= limits.max_connections || mine >= limits.max_connections_per_source {
            return None;
        }
        counts.total += 1;
        counts.by_source.insert(source, mine + 1);
        Some(Slot {
            open: self.clone(),
            source,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.open.lock();
        counts.total -= 1;
        if let Some(n) = counts.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                counts.by_source.remove(&self.source);
            }
        }
    }
}

/// A request body that fails once its deadline passes: a client that sends
/// its body slowly (a byte every few seconds) is cut off instead of holding
/// the connection and a handler.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within the body timeout")]
struct BodyTimeout;

impl hyper::body::Body for DeadlineBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
