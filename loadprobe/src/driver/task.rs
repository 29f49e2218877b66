//! One task: (maybe) connect, send the request, read the response, and end the connection the
//! way the mode says. The ordering here is the whole point of the modes:
//! - client-close drops the socket as soon as the response is read, while the server is still
//!   waiting for the next request, so the client's FIN is first;
//! - server-close asks for `Connection: close` and reads until the server's EOF before closing,
//!   so the server's FIN is first;
//! - reset has SO_LINGER 0 set at socket creation, so the close is an RST;
//! - keep-alive keeps the connection, unless the server announced its close (then it waits
//!   for the server's FIN, as server-close does) or `--requests-per-conn` is reached.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::connect::Connector;
use super::errors::ErrorClass;
use super::http::{read_response, wait_for_fin};
use super::hyper_client::{self, HyperRequest};
use super::stats::{Recorder, Sample};
use super::{DriverConfig, DriverError, HttpClient, Live, Mode, Stop};

/// An open connection and how many requests it has carried.
pub(crate) struct Conn {
    stream: TcpStream,
    used: u32,
}

/// State shared by all tasks of a run.
pub(crate) struct Ctx {
    pub cfg: DriverConfig,
    connector: Connector,
    /// The encoded request.
    wire: Bytes,
    head: bool,
    /// Set for `HttpClient::Hyper`.
    hyper: Option<HyperRequest>,
    pub recorder: Recorder,
    pub live: Arc<Live>,
    pub stop: Stop,
    /// When warmup ends and measurement begins.
    pub window_start: Instant,
    /// End of the measured duration, if any.
    pub deadline: Option<Instant>,
    issued: AtomicU64,
}

/// Whether a task may start, and whether it counts.
pub(crate) enum Ticket {
    Warmup,
    Measured,
    Done,
}

impl Ctx {
    pub(crate) fn new(
        cfg: DriverConfig,
        live: Arc<Live>,
        stop: Stop,
        run_start: Instant,
    ) -> Result<Ctx, DriverError> {
        let window_start = run_start + cfg.warmup;
        let deadline = cfg.duration.map(|d| window_start + d);
        let connector = Connector::new(
            cfg.target.addr,
            cfg.source_ips.clone(),
            cfg.mode == Mode::Reset,
        );
        let wire = cfg
            .request
            .encode(&cfg.target.host_header, cfg.mode == Mode::ServerClose);
        let shards = 4 * std::thread::available_parallelism().map_or(2, |n| n.get());
        let hyper = match cfg.http_client {
            HttpClient::Lean => None,
            HttpClient::Hyper => Some(HyperRequest::new(&cfg).map_err(DriverError::Config)?),
        };
        Ok(Ctx {
            head: cfg.request.is_head(),
            hyper,
            cfg,
            connector,
            wire,
            recorder: Recorder::new(shards, window_start),
            live,
            stop,
            window_start,
            deadline,
            issued: AtomicU64::new(0),
        })
    }

    /// Decides for a task whose (intended) start is `at`.
    pub(crate) fn ticket(&self, at: Instant) -> Ticket {
        if self.stop.is_stopped() {
            return Ticket::Done;
        }
        if at < self.window_start {
            return Ticket::Warmup;
        }
        if self.deadline.is_some_and(|d| at >= d) {
            return Ticket::Done;
        }
        if let Some(limit) = self.cfg.requests {
            if self.issued.fetch_add(1, Ordering::Relaxed) >= limit {
                return Ticket::Done;
            }
        }
        Ticket::Measured
    }

    /// Runs one request on `slot` (taking its connection, or opening one) and records it.
    pub(crate) async fn run_one(
        &self,
        idx: usize,
        slot: &mut Option<Conn>,
        buf: &mut Vec<u8>,
        intended: Instant,
        measured: bool,
    ) {
        let start = Instant::now();
        let mut s = Sample {
            intended,
            start,
            connect: None,
            first_byte: None,
            done: start,
            result: Ok(()),
        };
        let reused = slot.is_some();
        let mut outcome = self.exchange(slot, buf, &mut s).await;
        if reused && s.first_byte.is_none() && is_stale_keepalive(&outcome) {
            // The server closed an idle keep-alive connection just as we reused it; that is
            // the connection's end, not a failed request: retry once on a new connection.
            outcome = self.exchange(slot, buf, &mut s).await;
        }
        let fin_missing = match outcome {
            Ok(fin_missing) => fin_missing,
            Err(class) => {
                s.result = Err(class);
                s.done = Instant::now();
                false
            }
        };
        if !measured {
            return;
        }
        self.recorder.record(idx, &s);
        if fin_missing {
            self.recorder.fin_missing(idx);
        }
        self.live.requests.fetch_add(1, Ordering::Relaxed);
        if s.result.is_err() {
            self.live.errors.fetch_add(1, Ordering::Relaxed);
        }
        if s.connect.is_some() {
            self.live.connections.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `Ok(true)`: the response was fine but the server never sent its FIN (server-close, or a
    /// keep-alive response that announced the close).
    /// An HTTP error status is returned in `s.result`, not as `Err`, so its latency counts.
    async fn exchange(
        &self,
        slot: &mut Option<Conn>,
        buf: &mut Vec<u8>,
        s: &mut Sample,
    ) -> Result<bool, ErrorClass> {
        let (mut conn, sent) = match slot.take() {
            Some(conn) => (conn, 0),
            None => {
                let t = Instant::now();
                if let Some(req) = &self.hyper {
                    let stream = connected(
                        timeout(self.cfg.connect_timeout, self.connector.connect()).await,
                    )?;
                    s.connect = Some(t.elapsed());
                    return hyper_client::exchange(&self.cfg, req, stream, s).await;
                }
                let connect = self.connector.connect_sending(&self.wire);
                let (stream, sent) = connected(timeout(self.cfg.connect_timeout, connect).await)?;
                s.connect = Some(t.elapsed());
                (Conn { stream, used: 0 }, sent)
            }
        };
        let response = timeout(self.cfg.request_timeout, async {
            conn.stream
                .write_all(&self.wire[sent..])
                .await
                .map_err(|e| ErrorClass::from_io(&e))?;
            read_response(&mut conn.stream, buf, self.head, &mut s.first_byte).await
        })
        .await
        .map_err(|_| ErrorClass::Timeout)??;
        s.done = Instant::now();
        s.result = match response.status {
            400..=499 => Err(ErrorClass::Http4xx),
            500..=599 => Err(ErrorClass::Http5xx),
            _ => Ok(()),
        };
        conn.used += 1;
        let mut fin_missing = false;
        match self.cfg.mode {
            // Dropping closes: FIN (client-close), or RST because of SO_LINGER 0 (reset).
            Mode::ClientClose | Mode::Reset => drop(conn),
            Mode::ServerClose => fin_missing = self.server_fin_missing(&mut conn, buf).await,
            // The server said it closes: let it, so that its FIN comes first, as it meant.
            Mode::KeepAlive if response.close => {
                fin_missing = self.server_fin_missing(&mut conn, buf).await
            }
            Mode::KeepAlive => {
                let spent = self
                    .cfg
                    .requests_per_conn
                    .is_some_and(|max| conn.used >= max);
                if !spent {
                    *slot = Some(conn);
                }
            }
        }
        Ok(fin_missing)
    }

    /// Waits for the server's FIN under the request timeout; `true` if it never came. A reset
    /// after the response also ended the connection from the server: only a timeout means the
    /// server never closed.
    async fn server_fin_missing(&self, conn: &mut Conn, buf: &mut Vec<u8>) -> bool {
        let eof = wait_for_fin(&mut conn.stream, buf);
        timeout(self.cfg.request_timeout, eof).await.is_err()
    }
}

/// The outcome of a connect under its timeout.
fn connected<T>(
    outcome: Result<std::io::Result<T>, tokio::time::error::Elapsed>,
) -> Result<T, ErrorClass> {
    match outcome {
        Err(_) => Err(ErrorClass::Timeout),
        Ok(Err(e)) => Err(ErrorClass::from_io(&e)),
        Ok(Ok(connected)) => Ok(connected),
    }
}

fn is_stale_keepalive(outcome: &Result<bool, ErrorClass>) -> bool {
    matches!(
        outcome,
        Err(ErrorClass::Eof | ErrorClass::Errno(libc::EPIPE | libc::ECONNRESET))
    )
}

/// One connection before the run, so that a wrong or dead target is one clear error instead of
/// a run full of ECONNREFUSED.
pub(crate) async fn preflight(cfg: &DriverConfig) -> Result<(), DriverError> {
    // SO_LINGER 0: the check leaves no TIME_WAIT behind to skew the counts.
    let connector = Connector::new(cfg.target.addr, cfg.source_ips.clone(), true);
    // Closed right away; the server sees a connection with no request, which it tolerates.
    connected(timeout(cfg.connect_timeout, connector.connect()).await)
        .map(drop)
        .map_err(|class| DriverError::Unreachable {
            addr: cfg.target.addr,
            class,
        })
}
