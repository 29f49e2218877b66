//! The embedded HTTP/1.1 target server.
//!
//! `loadprobe run` without `--target` needs something to hit that behaves like a well-mannered
//! origin: it honours `Connection: close` (it sends the first FIN after the response, which is what
//! puts TIME_WAIT on the server in `server-close` mode) and keeps connections alive otherwise. It
//! shares the machine's cores with the driver, so it does as little per request as hyper allows:
//! the response body is one shared `Bytes`, and nothing else is allocated per request.

mod accept;
mod service;
pub mod tls;

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the server answers and how.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks an ephemeral port.
    pub listen: SocketAddr,
    /// Size of every response body, in bytes.
    pub body_bytes: usize,
    /// Delay added before each response is sent.
    pub latency: Duration,
    /// Close the connection (server FIN) after this many requests on it; `None` never does.
    pub close_after: Option<u32>,
    /// Speak TLS (HTTPS) with this configuration ([`tls`] makes one); `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// With `tls`: a connection whose handshake is not done this long after it was accepted is
    /// closed, so that a client that connects and says nothing does not hold a task and a
    /// socket for ever.
    pub tls_handshake_timeout: Duration,
}

/// The default [`ServerConfig::tls_handshake_timeout`]: a handshake takes a few round trips,
/// well under a second even far away; nginx gives a client 60 s for its whole request
/// (`client_header_timeout`), and 10 s is as long as any load test's client waits.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            body_bytes: 64,
            latency: Duration::ZERO,
            close_after: None,
            tls: None,
            tls_handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot register the listener with the runtime: {0}")]
    Runtime(io::Error),
}

/// Counters the server keeps, readable while it runs.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Accept errors (EMFILE and the like) that made the accept loop back off.
    pub accept_errors: AtomicU64,
}

impl ServerStats {
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// A bound, not yet serving, server. Binding is separate from serving so the caller learns the
/// port (for `127.0.0.1:0`) before any load starts.
pub struct Server {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    shared: Arc<service::Shared>,
}

impl Server {
    /// Binds the listening socket (SO_REUSEADDR, backlog 4096: bursts of new connections are the
    /// whole point of this tool, and the kernel clamps it to `somaxconn` anyway).
    pub fn bind(config: &ServerConfig) -> Result<Server, ServerError> {
        let addr = config.listen;
        let bind_err = |source| ServerError::Bind { addr, source };
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )
        .map_err(bind_err)?;
        socket.set_reuse_address(true).map_err(bind_err)?;
        if addr.is_ipv6() {
            // `[::]` should mean IPv6 only, like the address says; IPv4 has its own flag.
            socket.set_only_v6(true).map_err(bind_err)?;
        }
        socket.bind(&addr.into()).map_err(bind_err)?;
        socket.listen(4096).map_err(bind_err)?;
        let listener: std::net::TcpListener = socket.into();
        let addr = listener.local_addr().map_err(bind_err)?;
        Ok(Server {
            listener,
            addr,
            shared: Arc::new(service::Shared::new(config)),
        })
    }

    /// The address actually bound (the ephemeral port resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters shared with the running server.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` completes. Connections already open are left to finish on their
    /// own tasks; the listener closes at once.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let listener = TcpListener::from_std(self.listener).map_err(ServerError::Runtime)?;
        tokio::select! {
            _ = accept::accept_loop(listener, self.shared) => {}
            _ = shutdown => {}
        }
        Ok(())
    }

    /// Spawns the server on the current tokio runtime.
    pub fn spawn(self) -> ServerHandle {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let addr = self.addr;
        let stats = self.stats();
        let task = tokio::spawn(self.serve_until(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }));
        ServerHandle {
            addr,
            stats,
            stop_tx,
            task,
        }
    }
}

/// A server running on a tokio task.
pub struct ServerHandle {
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Stops accepting and waits for the accept loop to end.
    pub async fn stop(self) -> Result<(), ServerError> {
        let _ = self.stop_tx.send(true);
        match self.task.await {
            Ok(r) => r,
            // The task only ends by returning; a panic or cancellation leaves nothing to report.
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
