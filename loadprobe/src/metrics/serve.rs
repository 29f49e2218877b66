//! The `/metrics` endpoint: a small blocking HTTP/1.1 server on threads of its own, so that a
//! slow or stuck client never holds up the trace loop (which only ever publishes snapshots).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

/// How long a client may take, from its accept, to send its request and take the answer: one
/// deadline for the whole exchange, so that a byte now and then does not keep a slot.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients served at once; more get a 503 at once, so that many stuck clients cost a bounded
/// number of threads.
const MAX_CLIENTS: usize = 16;
/// Longest request head read.
const MAX_REQUEST: usize = 8192;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The caller names `addr` (and the flag it came from).
    #[error("cannot listen")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the metrics server")]
    Spawn(#[source] std::io::Error),
}

/// A bound metrics listener, not yet serving: bind it before the probe attaches (a bad address
/// is an error before any load; a port below 1024 is still allowed) and start it after
/// privileges are dropped.
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    pub fn bind(addr: SocketAddr) -> Result<MetricsServer, MetricsError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(MetricsServer { listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `registry` on `/metrics` until the process exits.
    pub fn start(self, registry: Registry) -> Result<(), MetricsError> {
        let registry = Arc::new(registry);
        let clients = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("loadprobe-metrics".into())
            .spawn(move || {
                for stream in self.listener.incoming() {
                    let Ok(stream) = stream else {
                        // Out of descriptors, say: wait rather than spin.
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                        clients.fetch_sub(1, Ordering::AcqRel);
                        busy(stream);
                        continue;
                    }
                    let (registry, count) = (Arc::clone(&registry), Arc::clone(&clients));
                    let spawned = std::thread::Builder::new()
                        .name("loadprobe-metrics-client".into())
                        .spawn(move || {
                            let _ = answer(stream, &registry);
                            count.fetch_sub(1, Ordering::AcqRel);
                        });
                    if spawned.is_err() {
                        clients.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })
            .map(drop)
            .map_err(MetricsError::Spawn)
    }
}

/// Tells a client over the limit to come back later, without waiting on it: the answer is
/// small enough for a new socket's send buffer, so one non-blocking write sends it whole (or,
/// on a peer that is already gone, fails and the client is closed all the same). What the
/// client sent already is read first: closing with unread data would reset the connection,
/// and a reset can discard the answer before the client reads it.
fn busy(mut stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
        Content-Length: 13\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many now\n";
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let (mut sink, mut read) = ([0u8; 1024], 0);
    while read < MAX_REQUEST {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => read += n,
            _ => break,
        }
    }
    let _ = stream.write(BUSY);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Time left before `deadline` for one read or write; an error once it has passed (a zero
/// timeout would mean none at all).
fn left(deadline: Instant) -> std::io::Result<Option<Duration>> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    Ok(Some(left))
}

fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let path = loop {
        stream.set_read_timeout(left(deadline)?)?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                break (request.method, request.path.map(str::to_owned));
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_REQUEST => continue,
            _ => {
                return respond(
                    &mut stream,
                    deadline,
                    "400 Bad Request",
                    "text/plain",
                    "bad request\n",
                );
            }
        }
    };
    match path {
        (Some("GET"), Some(p)) if p == "/metrics" || p.starts_with("/metrics?") => {
            match super::render(registry) {
                Ok(text) => respond(&mut stream, deadline, "200 OK", CONTENT_TYPE, &text),
                Err(_) => respond(
                    &mut stream,
                    deadline,
                    "500 Internal Server Error",
                    "text/plain",
                    "encoding the metrics failed\n",
                ),
            }
        }
        _ => respond(
            &mut stream,
            deadline,
            "404 Not Found",
            "text/plain",
            "see /metrics\n",
        ),
    }
}

/// Writes the answer a piece at a time, each write given what is left of the client's
/// `deadline`, so that a reader taking a byte now and then is cut off all the same.
fn respond(
    stream: &mut TcpStream,
    deadline: Instant,
    status: &str,
    kind: &str,
    body: &str,
) -> std::io::Result<()> {
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut answer = answer.as_bytes();
    while !answer.is_empty() {
        stream.set_write_timeout(left(deadline)?)?;
        match stream.write(answer) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => answer = &answer[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
