//! A minimal HTTP/1.1 server on loopback, shared by `wxim serve` and the local stand-ins of the
//! WeChat and IM APIs, so both speak real HTTP through the same few lines.
//!
//! It stays up when the process runs out of file descriptors (accept errors back off, from
//! 10 ms to 1 s, logged once per burst), and no client can hold a connection forever:
//!
//! - **headers**: hyper's `header_read_timeout` ([`Limits::header_read`]); its timer runs from the
//!   moment the server waits for a request head, so it also bounds a new connection that sends
//!   nothing and a keep-alive wait;
//! - **body**: the whole body must arrive within [`Limits::body_read`] after the head (408
//!   `body_timeout`, and the connection is closed);
//! - **idle**: a connection with no request in progress and no bytes moving for
//!   [`Limits::idle`] is shut down gracefully (and dropped if even that does not finish in
//!   another idle period: a client that never reads its response).
//!
//! A body that breaks off (a malformed chunk, the connection closed before `Content-Length`
//! bytes) is answered 400 `malformed_body`; only a body over [`Limits::max_body`] is 413
//! `body_too_large`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::http::{Request, Response, parse_query};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

pub type BoxFuture = Pin<Box<dyn Future<Output = Response> + Send>>;
pub type Handler = Arc<dyn Fn(Request) -> BoxFuture + Send + Sync>;

/// How long a client may take, and how much it may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From waiting for a request head (a new connection, or after the previous response) to
    /// having all of it.
    pub header_read: Duration,
    /// From the head to the end of the body.
    pub body_read: Duration,
    /// No request in progress and no bytes moving for this long: the connection is closed.
    pub idle: Duration,
    /// Bodies above this are cut off by the server itself (the handlers refuse smaller ones
    /// first).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(10),
            idle: Duration::from_secs(5),
            max_body: 1024 * 1024,
        }
    }
}

/// The first pause after an accept error, doubled per further error up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Binds 127.0.0.1:`port` (0 = any free port) and serves until the task is dropped.
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await
}

/// Serves with the default [`Limits`].
pub async fn serve(listener: TcpListener, handler: Handler) {
    serve_with(listener, handler, Limits::default()).await
}

pub async fn serve_with(listener: TcpListener, handler: Handler, limits: Limits) {
    let mut counter: u64 = 0;
    let mut backoff = Backoff::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.recovered();
                stream
            }
            Err(e) => {
                // Out of file descriptors (EMFILE/ENFILE), or out of memory: accepting again at
                // once fails again at once. Wait (the connections being served close meanwhile).
                tokio::time::sleep(backoff.failed(&e)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        counter += 1;
        let conn_id = counter;
        let handler = handler.clone();
        tokio::spawn(connection(stream, conn_id, handler, limits));
    }
}

/// The accept loop's pause after errors, and its log lines: one when a burst of errors starts,
/// one when accepting works again (with how many errors there were).
#[derive(Debug, Default)]
struct Backoff {
    next: Option<Duration>,
    errors: u64,
}

impl Backoff {
    fn failed(&mut self, e: &io::Error) -> Duration {
        self.errors += 1;
        let pause = match self.next {
            None => {
                tracing::warn!(decision = "accept_backoff", reason = %e, "cannot accept connections; backing off (10 ms, doubling up to 1 s)");
                ACCEPT_BACKOFF_MIN
            }
            Some(d) => (d * 2).min(ACCEPT_BACKOFF_MAX),
        };
        self.next = Some(pause);
        pause
    }

    fn recovered(&mut self) {
        if self.next.take().is_some() {
            tracing::info!(
                decision = "accept_recovered",
                errors = self.errors,
                "accepting connections again"
            );
            self.errors = 0;
        }
    }
}

/// What the idle watchdog of one connection sees.
struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last read or write that moved bytes.
    last_ms: AtomicU64,
    /// Requests whose handler has not answered yet.
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }
}

/// Counts a request in progress for as long as it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.touch();
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The socket, noting when bytes move.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn connection(stream: tokio::net::TcpStream, conn_id: u64, handler: Handler, limits: Limits) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let act = activity.clone();
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        let guard = InFlight::new(&act);
        async move {
            let resp = match to_request(req, conn_id, &limits).await {
                Ok(r) => handler(r).await,
                Err(resp) => resp,
            };
            drop(guard);
            Ok::<_, Infallible>(to_hyper(resp))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        // A client that shuts down its sending side after the request still gets the answer
        // (and one whose body breaks off gets its 400).
        .half_close(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let mut closing: Option<Instant> = None;
    loop {
        let wake = match closing {
            Some(since) => since + limits.idle,
            None => activity.last() + limits.idle,
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        match closing {
            // Gracefully closing did not finish in time: the client does not read.
            Some(since) if since.elapsed() >= limits.idle => return,
            Some(_) => {}
            None => {
                if !activity.busy() && activity.last().elapsed() >= limits.idle {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now());
                } else if activity.busy() {
                    // A handler is working: look again an idle period from now.
                    activity.touch();
                }
            }
        }
    }
}

async fn to_request(
    req: hyper::Request<hyper::body::Incoming>,
    conn_id: u64,
    limits: &Limits,
) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let collected = tokio::time::timeout(
        limits.body_read,
        Limited::new(body, limits.max_body).collect(),
    )
    .await;
    let body = match collected {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(closing(Response::error(
                413,
                "body_too_large",
                "request body too large",
            )));
        }
        Ok(Err(e)) => {
            tracing::info!(decision = "refused", reason = "malformed_body", error = %e);
            return Err(closing(Response::error(
                400,
                "malformed_body",
                "the request body is malformed or incomplete",
            )));
        }
        Err(_) => {
            tracing::info!(decision = "refused", reason = "body_timeout");
            return Err(closing(Response::error(
                408,
                "body_timeout",
                "the request body did not arrive in time",
            )));
        }
    };
    Ok(Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(parse_query).unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        path_params: vec![],
        body: body.to_vec(),
        request_id: format!("local-{conn_id}-{}", random_suffix()),
        // Nothing on a local socket vouches for the caller: admin routes need the bearer token.
        principal: None,
    })
}

/// A refusal after which the connection cannot be reused (the rest of the body is unread).
fn closing(mut resp: Response) -> Response {
    resp.headers.push(("connection".into(), "close".into()));
    resp
}

fn random_suffix() -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

fn to_hyper(resp: Response) -> hyper::Response<Full<Bytes>> {
    let mut builder = hyper::Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        builder = builder.header(k, v);
    }
    builder
        .body(Full::new(Bytes::from(resp.body)))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let e = io::Error::other("Too many open files");
        let pauses: Vec<u64> = (0..10).map(|_| b.failed(&e).as_millis() as u64).collect();
        assert_eq!(
            pauses,
            [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000],
            "10 ms doubling, capped at 1 s"
        );
        b.recovered();
        assert_eq!(b.errors, 0);
        assert_eq!(b.failed(&e), ACCEPT_BACKOFF_MIN, "a new burst starts over");
    }
}
