//! The accept loop of `lifeboat serve`: HTTP/1.1 connections served by
//! hyper with the limits `axum::serve` does not expose.
//!
//! - **Connections:** at most `[server] max_connections` open at once (a
//!   semaphore); one more is answered `503` with `Retry-After` and closed.
//! - **Header read:** once a client starts sending a request's head, the
//!   whole head must arrive within `[server] header_read_timeout`, or the
//!   connection is closed (slow-header clients cannot hold it open).
//! - **Idle:** a connection with no request in flight that sends nothing
//!   (a fresh one, or keep-alive between requests) is closed after `[server]
//!   idle_timeout`. A request in flight (an event stream included) is never
//!   idle; its own time is bounded by the router's timeout.
//! - **Shutdown:** on `shutdown` the listener closes, idle connections close
//!   at once, requests in flight finish (event streams end on the same
//!   signal), for at most [`DRAIN`].
//!
//! A watchdog beside each connection enforces the two timeouts from what the
//! connection did: bytes read (an IO wrapper) and requests in flight (a
//! service wrapper whose guard lives as long as the response body).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::ServerConfig;

/// How long shutdown waits for requests in flight.
pub const DRAIN: Duration = Duration::from_secs(30);

/// Connections being refused (503 written, request drained) at once; past
/// it a connection over the cap is closed without an answer.
const REFUSING_AT_ONCE: usize = 64;

/// How long a refused connection is given to send its request head and
/// read the 503 (an answer sent before the request confuses clients).
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// The limits of `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn from_config(server: &ServerConfig) -> Limits {
        Limits {
            header_read_timeout: server.header_read_timeout.0,
            idle_timeout: server.idle_timeout.0,
            max_connections: server.max_connections.max(1),
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, router.clone(), limits, shutdown.clone(), permit));
            }
            Err(_) => refuse(stream, limits.max_connections, &refusing),
        }
    }
    drop(listener);
    // Every permit back: every connection has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, open.acquire_many(all)).await.is_err() {
        tracing::warn!(
            seconds = DRAIN.as_secs(),
            "Requests still in flight after the drain period; closing their connections."
        );
    }
    Ok(())
}

/// Accept errors: a connection that failed before it was accepted is
/// skipped; anything else (out of file descriptors) is waited out, as
/// `axum::serve` does, instead of spinning.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "Cannot accept a connection; retrying in 1s.");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A connection over the cap: `503` and `Retry-After`, then closed.
fn refuse(stream: TcpStream, max: usize, refusing: &Arc<Semaphore>) {
    static WARNED: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    {
        let mut last = WARNED.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::warn!(
                max_connections = max,
                "Connection refused: {max} connections are open ([server] max_connections)."
            );
        }
    }
    crate::metrics::connection_refused();
    let Ok(permit) = refusing.clone().try_acquire_owned() else { return };
    tokio::spawn(async move {
        let _permit = permit;
        let body = format!(
            "{{\"error\":{{\"code\":\"unavailable\",\"message\":\"the server has {max} connections open ([server] max_connections); try again in a moment\"}}}}"
        );
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // The request head first (up to 8 KiB), so the answer follows it.
            let mut head = Vec::new();
            let mut chunk = [0u8; 1024];
            while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&chunk[..n]);
            }
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await?;
            // Read what else the client sent, so closing does not reset the
            // connection before it reads the answer.
            while stream.read(&mut chunk).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

/// What a connection did, for its watchdog. Times are ms since `origin`.
struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    /// When the connection last became idle (opened, or a response ended).
    idle_since: AtomicU64,
    /// Whether bytes arrived since then, and when the first did.
    reading: AtomicBool,
    reading_since: AtomicU64,
    changed: Notify,
}

/// What the watchdog should do now.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A request is in flight: nothing to time until that changes.
    Busy,
    /// Check again after this long (or when something changes).
    Wait(Duration),
    /// The limit passed: close the connection.
    Close(&'static str),
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            reading: AtomicBool::new(false),
            reading_since: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived: the first after an idle spell starts the header clock.
    fn read(&self) {
        if !self.reading.load(Ordering::Relaxed) {
            self.reading_since.store(self.now(), Ordering::Relaxed);
            self.reading.store(true, Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// A request's head arrived: it is in flight until its response body is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    fn verdict(&self, limits: &Limits) -> Verdict {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Verdict::Busy;
        }
        let now = self.now();
        let (start, limit, why) = if self.reading.load(Ordering::Acquire) {
            (
                self.reading_since.load(Ordering::Relaxed),
                limits.header_read_timeout,
                "the request head did not arrive within [server] header_read_timeout",
            )
        } else {
            (
                self.idle_since.load(Ordering::Relaxed),
                limits.idle_timeout,
                "idle for [server] idle_timeout",
            )
        };
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let elapsed = now.saturating_sub(start);
        if elapsed >= limit {
            Verdict::Close(why)
        } else {
            Verdict::Wait(Duration::from_millis(limit - elapsed))
        }
    }
}

/// A request in flight; dropped with its response body.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.idle_since.store(a.now(), Ordering::Relaxed);
            a.reading.store(false, Ordering::Release);
        }
        a.changed.notify_one();
    }
}

/// The socket, noting every read for the watchdog.
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
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
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

/// One connection: hyper serves it while the watchdog times it.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let in_flight = activity.begin();
            let router = router.clone();
            async move {
                let response = router.oneshot(req.map(Body::new)).await?;
                // The guard lives in the body: a streamed response (SSE)
                // stays in flight until it ends or the client leaves.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _keep = &in_flight;
                        frame
                    }))
                }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper's own clock (from idle to a complete head) as a backstop;
        // the watchdog below is the finer rule.
        .header_read_timeout(limits.header_read_timeout.max(limits.idle_timeout))
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let wait = match activity.verdict(&limits) {
            Verdict::Close(why) => {
                tracing::debug!(reason = why, "Connection closed.");
                crate::metrics::connection_timed_out();
                return;
            }
            Verdict::Busy => None,
            Verdict::Wait(d) => Some(d),
        };
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "Connection ended with an error.");
                }
                return;
            }
            _ = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = activity.changed.notified() => {}
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
        }
    }

    #[test]
    fn an_idle_connection_is_timed_by_idle_timeout_and_a_started_head_by_header_read_timeout() {
        let a = Activity { origin: Instant::now() - Duration::from_secs(30), ..Activity::new() };
        // Idle for 30s of 60.
        match a.verdict(&limits()) {
            Verdict::Wait(d) => assert!(d <= Duration::from_secs(30), "{d:?}"),
            other => panic!("{other:?}"),
        }
        // The first byte after 30s idle: 10s from now, not from the start.
        a.read();
        match a.verdict(&limits()) {
            Verdict::Wait(d) => {
                assert!(d > Duration::from_secs(9) && d <= Duration::from_secs(10), "{d:?}")
            }
            other => panic!("{other:?}"),
        }
        // A head that started 11s ago and is not complete: closed.
        a.reading_since.store(a.now() - 11_000, Ordering::Relaxed);
        assert!(
            matches!(a.verdict(&limits()), Verdict::Close(why) if why.contains("header_read_timeout"))
        );
        // Idle past 60s: closed.
        let idle = Activity { origin: Instant::now() - Duration::from_secs(61), ..Activity::new() };
        assert!(
            matches!(idle.verdict(&limits()), Verdict::Close(why) if why.contains("idle_timeout"))
        );
    }

    #[test]
    fn a_request_in_flight_is_never_timed_out_and_its_end_restarts_the_idle_clock() {
        let a = Arc::new(Activity {
            origin: Instant::now() - Duration::from_secs(120),
            ..Activity::new()
        });
        a.read();
        let guard = a.begin();
        assert_eq!(a.verdict(&limits()), Verdict::Busy);
        drop(guard);
        match a.verdict(&limits()) {
            Verdict::Wait(d) => assert!(d > Duration::from_secs(59), "idle clock restarted: {d:?}"),
            other => panic!("{other:?}"),
        }
    }
}
