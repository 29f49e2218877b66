//! The `/metrics` endpoint: a small HTTP/1.1 server on one thread of its own, so that a slow or
//! stuck client never holds up the trace loop (which only ever publishes snapshots). Every
//! client is non-blocking in one poll(2) loop: one that never sends, trickles or never reads
//! takes no thread and holds up no other client, and a full table makes room for a newcomer by
//! dropping its oldest client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

/// How long a client may take, from its accept, to send its request and take the answer: one
/// deadline for the whole exchange, so that a byte now and then does not keep its place.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients held at once (each at most a request head and an answer); a newcomer past this
/// drops the oldest, so that a crowd of stuck clients cannot lock the others out.
const MAX_CLIENTS: usize = 64;
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
        self.listener
            .set_nonblocking(true)
            .map_err(MetricsError::Spawn)?;
        std::thread::Builder::new()
            .name("loadprobe-metrics".into())
            .spawn(move || serve(&self.listener, &registry))
            .map(drop)
            .map_err(MetricsError::Spawn)
    }
}

/// One client: reading its request head, then writing its answer.
struct Client {
    stream: TcpStream,
    deadline: Instant,
    head: Vec<u8>,
    /// The answer and how much of it is written, once the request is read.
    answer: Option<(Vec<u8>, usize)>,
}

impl Client {
    /// Takes what the client sent or writes what the socket takes; false when the client is
    /// done with (answered, gone, or in error).
    fn step(&mut self, registry: &Registry) -> bool {
        if self.answer.is_none() {
            let mut buf = [0u8; 1024];
            let mut ended = false;
            loop {
                match self.stream.read(&mut buf) {
                    // A client may shut its side once its request is sent.
                    Ok(0) => {
                        ended = true;
                        break;
                    }
                    Ok(n) => self.head.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
                if self.head.len() >= MAX_REQUEST {
                    break;
                }
            }
            match answer(&self.head, registry) {
                Some(answer) => self.answer = Some((answer.into_bytes(), 0)),
                None => return !ended,
            }
        }
        let Some((answer, written)) = &mut self.answer else {
            return true;
        };
        while *written < answer.len() {
            match self.stream.write(&answer[*written..]) {
                Ok(0) => return false,
                Ok(n) => *written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        // Handed to the kernel whole: it delivers the rest, the client is forgotten.
        false
    }
}

/// The accept and client loop, until the process exits.
fn serve(listener: &TcpListener, registry: &Registry) {
    let mut clients: Vec<Client> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    loop {
        let now = Instant::now();
        clients.retain(|c| c.deadline > now);
        fds.clear();
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        fds.extend(clients.iter().map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: if c.answer.is_some() {
                libc::POLLOUT
            } else {
                libc::POLLIN
            },
            revents: 0,
        }));
        // Wake for the next deadline, or now and then to look again.
        let wait = clients
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs; poll only writes their
        // `revents`.
        let ready = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                wait.as_millis().max(1) as libc::c_int,
            )
        };
        if ready <= 0 {
            // A timeout, or a signal (EINTR): the deadlines are looked at again.
            continue;
        }
        // Clients first (their indices are the poll set's), then newcomers.
        let mut i = 0;
        clients.retain_mut(|c| {
            i += 1;
            fds[i].revents == 0 || c.step(registry)
        });
        if fds[0].revents != 0 {
            accept_all(listener, &mut clients);
        }
    }
}

/// Takes every pending connection; past [`MAX_CLIENTS`], each newcomer drops the oldest
/// client.
fn accept_all(listener: &TcpListener, clients: &mut Vec<Client>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if clients.len() >= MAX_CLIENTS {
                    // The oldest has the earliest deadline: every client gets the same time.
                    clients.remove(0);
                }
                clients.push(Client {
                    stream,
                    deadline: Instant::now() + CLIENT_TIMEOUT,
                    head: Vec::new(),
                    answer: None,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // WouldBlock: all taken. Out of descriptors, say: the next poll tries again
            // (after a pause, rather than spinning on a listener that stays readable).
            Err(e) => {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
        }
    }
}

/// The answer to the request head `head`, or None while it is incomplete.
fn answer(head: &[u8], registry: &Registry) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let path = match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => (request.method, request.path),
        Ok(httparse::Status::Partial) if head.len() < MAX_REQUEST => return None,
        _ => return Some(respond("400 Bad Request", "text/plain", "bad request\n")),
    };
    Some(match path {
        (Some("GET"), Some(p)) if p == "/metrics" || p.starts_with("/metrics?") => {
            match super::render(registry) {
                Ok(text) => respond("200 OK", CONTENT_TYPE, &text),
                Err(_) => respond(
                    "500 Internal Server Error",
                    "text/plain",
                    "encoding the metrics failed\n",
                ),
            }
        }
        _ => respond("404 Not Found", "text/plain", "see /metrics\n"),
    })
}

fn respond(status: &str, kind: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
