//! One connection's HTTP/1.1 handling: every request gets the configured body, after the
//! configured latency, and `Connection: close` once the per-connection request budget is spent.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{ServerConfig, ServerStats};

/// State shared by all connections; built once so that requests only clone a refcounted body.
pub(super) struct Shared {
    body: Bytes,
    latency: Duration,
    close_after: Option<u32>,
    builder: http1::Builder,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshake_timeout: Duration,
    pub(super) stats: Arc<ServerStats>,
}

impl Shared {
    pub(super) fn new(config: &ServerConfig) -> Shared {
        let mut builder = http1::Builder::new();
        // A client FIN ends the connection (what `client-close` relies on): no half-close.
        builder.half_close(false).keep_alive(true);
        Shared {
            body: Bytes::from(vec![b'x'; config.body_bytes]),
            latency: config.latency,
            close_after: config.close_after.filter(|n| *n > 0),
            builder,
            tls: config.tls.clone().map(tokio_rustls::TlsAcceptor::from),
            handshake_timeout: config.tls_handshake_timeout,
            stats: Arc::new(ServerStats::default()),
        }
    }
}

pub(super) async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Responses are written in one go; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    match &shared.tls {
        None => serve_http(stream, &shared).await,
        Some(acceptor) => {
            // A failed or unfinished handshake is the client's to count; it ends this
            // connection only (dropped: the socket closes).
            let accepted = tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream));
            if let Ok(Ok(stream)) = accepted.await {
                serve_http(QuietAfterPeer::new(stream), &shared).await;
            }
        }
    }
}

async fn serve_http<S>(stream: S, shared: &Shared)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let served = AtomicU32::new(0);
    let svc = service_fn(|req| respond(req, shared, &served));
    // Errors here are the client's doing (reset, early close) and end only this connection.
    let _ = shared
        .builder
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

/// A server TLS stream that does not answer a client's close_notify with its own: the client
/// has closed (client-close sends its FIN with its alert), and anything sent to its closed
/// socket would be answered with a reset instead of leaving it in TIME_WAIT. nginx does the
/// same. A connection the server ends itself (server-close) still gets its close_notify.
struct QuietAfterPeer {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    /// The client's close_notify was read (tokio-rustls reports it as EOF), or its FIN
    /// without one (an `UnexpectedEof` error).
    peer_closed: bool,
}

impl QuietAfterPeer {
    fn new(inner: tokio_rustls::server::TlsStream<TcpStream>) -> QuietAfterPeer {
        QuietAfterPeer {
            inner,
            peer_closed: false,
        }
    }
}

impl tokio::io::AsyncRead for QuietAfterPeer {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut me.inner).poll_read(cx, buf);
        me.peer_closed |= match &polled {
            Poll::Ready(Ok(())) => buf.filled().len() == before,
            Poll::Ready(Err(e)) => e.kind() == std::io::ErrorKind::UnexpectedEof,
            Poll::Pending => false,
        };
        polled
    }
}

impl tokio::io::AsyncWrite for QuietAfterPeer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if me.peer_closed {
            Pin::new(me.inner.get_mut().0).poll_shutdown(cx)
        } else {
            Pin::new(&mut me.inner).poll_shutdown(cx)
        }
    }
}

async fn respond(
    req: Request<Incoming>,
    shared: &Shared,
    served: &AtomicU32,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = requested_status(req.uri().path());
    // Read the request body to its end so the connection stays usable for the next request.
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let n = served.fetch_add(1, Ordering::Relaxed) + 1;
    let mut resp = Response::new(Full::new(shared.body.clone()));
    *resp.status_mut() = status;
    if shared.close_after.is_some_and(|max| n >= max) {
        // hyper sees this header and closes after the response: the server's FIN goes first.
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// `/status/503` answers 503 (and so on), so that error accounting can be exercised against
/// the embedded server; every other path answers 200.
fn requested_status(path: &str) -> StatusCode {
    path.strip_prefix("/status/")
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK)
}
