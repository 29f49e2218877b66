//! The accept loop. It must survive running out of file descriptors: under a connection storm
//! EMFILE is expected, and a server that exits (or spins at 100% CPU retrying) would take the
//! whole measurement down with it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;

use super::service::{Shared, serve_connection};

/// How long to stop accepting after the process or system ran out of descriptors or memory.
/// Long enough for some connections to close, short enough not to fill the backlog.
const EXHAUSTION_BACKOFF: Duration = Duration::from_millis(20);

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut warned = false;
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_connection(stream, shared.clone()));
            }
            Err(e) => {
                shared.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if is_exhaustion(&e) {
                    if !warned {
                        log::warn!("server accept failed ({e}); backing off (reported once)");
                        warned = true;
                    }
                    tokio::time::sleep(EXHAUSTION_BACKOFF).await;
                }
                // Anything else (ECONNABORTED, EPROTO: a client gave up while queued) concerns
                // one connection only; keep accepting.
            }
        }
    }
}

fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
