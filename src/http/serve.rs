//! The accept loop, in place of `axum::serve` (which never closes a connection on its own): each connection
//! has a header-read timeout (from accepting it, or from the first byte after an idle spell, to a complete
//! request head), an idle keep-alive timeout (from the end of one response to the first byte of the next
//! request), and at most `POLYTOMIC_MCP_MAX_CONNECTIONS` are open at once; one more is answered 503 and closed
//! rather than left waiting unanswered in the kernel's queue. On shutdown the loop stops accepting, idle
//! connections close, requests in flight finish, and [`serve`] returns once every connection has ended (the
//! caller bounds that wait with the grace period).
//!
//! The two timeouts are kept here rather than by hyper: hyper's single header-read timer also runs while a
//! keep-alive connection idles, so the two could not be set apart.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::state::AppState;
use crate::telemetry::ReasonLabels;

/// Connections over the cap that are answered at once; beyond this many, one is closed without an answer.
const MAX_REFUSING: usize = 64;
/// How long a refused connection may take to read its 503 before it is closed anyway.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// After an accept error other than a client's reset (e.g. out of file descriptors), wait before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The per-connection limits, read once from the configuration.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    header_read_timeout: Duration,
    keep_alive_timeout: Duration,
    max_connections: u32,
}

/// Accepts and serves connections until `shutdown`, then waits for every open connection to end.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    state: AppState,
    shutdown: CancellationToken,
) {
    let limits = ConnectionLimits {
        header_read_timeout: state.config.limits.header_read_timeout(),
        keep_alive_timeout: state.config.limits.keep_alive_timeout(),
        max_connections: state.config.limits.max_connections,
    };
    let open = Arc::new(Semaphore::new(limits.max_connections as usize));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) if is_client_reset(&error) => continue,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed; retrying in 1 s");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                let connection = Connection {
                    router: router.clone(),
                    state: state.clone(),
                    limits,
                    remote,
                    shutdown: shutdown.clone(),
                };
                tokio::spawn(connection.run(stream, permit));
            }
            Err(_) => {
                state.metrics.connections_refused.inc();
                // Beyond MAX_REFUSING at once, the stream is dropped here: closed, still not left hanging.
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    tokio::spawn(refuse(stream, limits.max_connections, permit));
                }
            }
        }
    }
    drop(listener);
    // Every connection holds a permit until it ends, so having all of them back means the drain is over.
    let _ = open.acquire_many(limits.max_connections).await;
}

/// Errors that concern one client's connection only; the next accept can follow at once.
fn is_client_reset(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Answers a connection over the cap with a 503 that names the limit, then closes it.
async fn refuse(mut stream: TcpStream, limit: u32, _permit: OwnedSemaphorePermit) {
    let body = format!(
        "{{\"error\":\"unavailable\",\"message\":\"the server is at its limit of {limit} open connections; retry in a second\"}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes: closing with unread bytes would reset the connection,
        // and the client could lose the answer.
        let mut sink = [0u8; 4096];
        let mut total = 0usize;
        while total < 64 * 1024 {
            let read = stream.read(&mut sink).await?;
            if read == 0 {
                break;
            }
            total += read;
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// One accepted connection and what serving it needs.
struct Connection {
    router: Router,
    state: AppState,
    limits: ConnectionLimits,
    remote: SocketAddr,
    shutdown: CancellationToken,
}

impl Connection {
    /// Serves the connection until the client closes it, a timeout closes it, or shutdown drains it.
    async fn run(self, stream: TcpStream, _permit: OwnedSemaphorePermit) {
        let metrics = &self.state.metrics;
        metrics.open_connections.inc();
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let service = {
            let (router, remote, activity) = (self.router.clone(), self.remote, activity.clone());
            hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let busy = Busy::start(activity.clone());
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(remote));
                let router = router.clone();
                async move {
                    let response = match router.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    Ok::<_, Infallible>(
                        response.map(|body| Body::new(Tracked { body, _busy: busy })),
                    )
                }
            })
        };
        let builder = auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut draining = false;
        let closed_for = loop {
            let deadline = activity.deadline(&self.limits);
            tokio::select! {
                _ = connection.as_mut() => break None,
                () = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = activity.changed.notified() => {}
                () = sleep_until(deadline) => {
                    if let Some(reason) = activity.expired(&self.limits, Instant::now()) {
                        break Some(reason);
                    }
                }
            }
        };
        if let Some(reason) = closed_for {
            tracing::debug!(remote = %self.remote, reason, "connection closed");
            metrics
                .connections_closed
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
        metrics.open_connections.dec();
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Where a connection stands, for its timeouts.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a complete request head: since the connection was accepted, or since the first byte that
    /// followed an idle spell.
    ReadingHead { since: Instant },
    /// Requests being served (more than one only on HTTP/2); no timeout of ours applies.
    Busy { requests: usize },
    /// Between requests on a keep-alive connection.
    Idle { since: Instant },
}

/// A connection's phase, updated by its reads and its requests; `changed` wakes the supervising loop.
#[derive(Debug)]
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::ReadingHead {
                since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn update(&self, change: impl FnOnce(Phase) -> Phase) {
        if let Ok(mut phase) = self.phase.lock() {
            *phase = change(*phase);
        }
        self.changed.notify_one();
    }

    /// Bytes on an idle connection start the next request head, and with it the header-read timeout.
    fn bytes_arrived(&self) {
        let Ok(mut phase) = self.phase.lock() else {
            return;
        };
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::ReadingHead {
                since: Instant::now(),
            };
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// When the current phase's time is up, and the reason to give then.
    fn deadline_and_reason(&self, limits: &ConnectionLimits) -> Option<(Instant, &'static str)> {
        match *self.phase.lock().ok()? {
            Phase::ReadingHead { since } => {
                Some((since + limits.header_read_timeout, "header_timeout"))
            }
            Phase::Idle { since } => {
                Some((since + limits.keep_alive_timeout, "keep_alive_timeout"))
            }
            Phase::Busy { .. } => None,
        }
    }

    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        self.deadline_and_reason(limits)
            .map(|(deadline, _)| deadline)
    }

    /// Why the connection should close now, if its phase's time is up.
    fn expired(&self, limits: &ConnectionLimits, now: Instant) -> Option<&'static str> {
        let (deadline, reason) = self.deadline_and_reason(limits)?;
        (deadline <= now).then_some(reason)
    }
}

/// Marks one request in service from the moment its head is parsed until its response body is dropped
/// (sent in full, or abandoned).
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Self {
        activity.update(|phase| match phase {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            _ => Phase::Busy { requests: 1 },
        });
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|phase| match phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        });
    }
}

/// A response body that keeps its request marked busy until hyper has finished with it.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting when bytes arrive on an idle connection (the start of the next request head).
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
