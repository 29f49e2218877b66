//! One task: (maybe) connect, send the request, read the response, and end the connection the
//! way the mode says. The ordering here is the whole point of the modes:
//! - client-close drops the socket as soon as the response is read, while the server is still
//!   waiting for the next request, so the client's FIN is first;
//! - server-close asks for `Connection: close` and reads until the server's EOF before closing,
//!   so the server's FIN is first;
//! - reset has SO_LINGER 0 set at socket creation, so the close is an RST;
//! - keep-alive keeps the connection, unless the server announced its close (then it waits
//!   for the server's FIN, as server-close does) or `--requests-per-conn` is reached.
//!
//! Over TLS the same order holds: the client's close_notify leaves with its FIN, server-close
//! waits for the server's close_notify and then its FIN, and reset says nothing before its RST.
//!
//! In a scenario each request has a mode of its own (the run's unless it says): a task sends
//! its request on the connection its slot holds, when a keep-alive request left one there, or
//! on a new one, and then ends that connection as its own request's mode says.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::connect::Connector;
use super::errors::ErrorClass;
use super::http::{is_tls_record, read_response, wait_for_fin};
use super::hyper_client::{self, HyperRequest};
use super::mix::Chooser;
use super::stats::{Recorder, Sample};
use super::stream::Stream;
use super::tls::{self, TlsClient};
use super::{DriverConfig, DriverError, Field, HttpClient, Stop};
use crate::model::{Live, Mode};

/// An open connection and how many requests it has carried.
pub(crate) struct Conn {
    stream: Stream,
    used: u32,
}

/// One request of the mix, ready to send.
struct Prepared {
    /// The encoded request.
    wire: Bytes,
    head: bool,
    /// How the connection ends after it (its own mode, or the run's).
    mode: Mode,
    /// Set for `HttpClient::Hyper`.
    hyper: Option<HyperRequest>,
}

/// State shared by all tasks of a run.
pub(crate) struct Ctx {
    pub cfg: DriverConfig,
    connector: Connector,
    /// The mix's requests, in its order.
    requests: Vec<Prepared>,
    pub chooser: Chooser,
    /// Set for an https target.
    tls: Option<TlsClient>,
    pub recorder: Recorder,
    pub live: Arc<Live>,
    pub stop: Stop,
    /// When warmup ends and measurement begins.
    pub window_start: Instant,
    /// End of the measured duration, if any.
    pub deadline: Option<Instant>,
    /// Set when requests still in flight must give up: the grace after the deadline is over,
    /// or the run was stopped. They are counted as unfinished.
    pub cut: Stop,
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
            // Reset is every request's mode or none's (see `Mix::check_modes`).
            cfg.mix.common_mode(cfg.mode) == Some(Mode::Reset),
        );
        let requests = cfg
            .mix
            .requests
            .iter()
            .map(|r| {
                let mode = r.mode.unwrap_or(cfg.mode);
                let hyper = match cfg.http_client {
                    HttpClient::Lean => None,
                    HttpClient::Hyper => Some(
                        HyperRequest::new(&cfg, &r.spec, mode)
                            .map_err(DriverError::HyperRequest)?,
                    ),
                };
                Ok(Prepared {
                    wire: r
                        .spec
                        .encode(&cfg.target.host_header, mode == Mode::ServerClose),
                    head: r.spec.is_head(),
                    mode,
                    hyper,
                })
            })
            .collect::<Result<Vec<_>, DriverError>>()?;
        let chooser = Chooser::new(&cfg.mix).map_err(|_| DriverError::Invalid {
            field: Field::Scenario,
            why: "must give at least one request a positive weight",
        })?;
        let shards = 4 * std::thread::available_parallelism().map_or(2, |n| n.get());
        let tls = tls_client(&cfg)?;
        Ok(Ctx {
            recorder: Recorder::new(shards, window_start, requests.len()),
            requests,
            chooser,
            tls,
            cfg,
            connector,
            live,
            stop,
            window_start,
            deadline,
            cut: Stop::default(),
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
        if let Some(limit) = self.cfg.requests.map(|n| self.cfg.segment.share(n)) {
            if self.issued.fetch_add(1, Ordering::Relaxed) >= limit {
                return Ticket::Done;
            }
        }
        Ticket::Measured
    }

    /// Runs request `request` of the mix on `slot` (taking its connection, or opening one) and
    /// records it.
    /// Returns `true` when it failed to open a connection: the connect failed (refused, no
    /// local port...) or, for an https target, the TLS handshake did (an alert, a certificate
    /// refused). Such a failure comes back at once, so a user loop must pause before its next
    /// try, or it keeps its event loop from every other user on it.
    pub(crate) async fn run_one(
        &self,
        idx: usize,
        request: usize,
        slot: &mut Option<Conn>,
        buf: &mut Vec<u8>,
        intended: Instant,
        measured: bool,
    ) -> bool {
        let start = Instant::now();
        let mut s = Sample {
            request,
            intended,
            start,
            connect: None,
            first_byte: None,
            done: start,
            result: Ok(()),
            tls: None,
        };
        // A kept-alive connection the server closed while it was idle is only its end: a
        // request written onto it would meet the server's RST. Dropped here, before `fresh` is
        // decided, so that a failure of the connection that replaces it is that connection's.
        if slot
            .as_ref()
            .is_some_and(|conn| peer_closed(conn.stream.tcp()))
        {
            *slot = None;
        }
        let (mut stale, mut retried, mut fresh) = (false, false, slot.is_none());
        let outcome = {
            let attempt = async {
                let mut outcome = self.exchange(slot, buf, &mut s).await;
                if !fresh && s.first_byte.is_none() && is_stale_keepalive(&outcome) {
                    // The server closed the kept-alive connection while the request was on
                    // its way: the request never reached a server that would answer it.
                    stale = true;
                    if self.cfg.retry_stale {
                        retried = true;
                        fresh = true;
                        outcome = self.exchange(slot, buf, &mut s).await;
                    }
                }
                outcome
            };
            tokio::pin!(attempt);
            // Biased: a FIN wait cut by the end is the exchange's to report (as a missing FIN).
            let finished = tokio::select! {
                biased;
                outcome = &mut attempt => Some(outcome),
                _ = self.cut.wait() => None,
            };
            match finished {
                Some(outcome) => Some(outcome),
                None => last_look(attempt).await,
            }
        };
        // Opened: connected, and with TLS the handshake done (it sets `s.tls`).
        let opened = s.connect.is_some() && (self.tls.is_none() || s.tls.is_some());
        let open_failed = fresh && !opened && matches!(outcome, Some(Err(_)));
        if measured && stale {
            self.recorder.stale_connection(idx, retried);
        }
        let fin_missing = match outcome {
            Some(Ok(fin_missing)) => fin_missing,
            Some(Err(class)) => {
                s.result = Err(class);
                s.done = Instant::now();
                false
            }
            None => {
                if measured {
                    // `s.done` is still the start: its connection goes in the timeline's
                    // second of the window where the request started, not after the window.
                    self.recorder.unfinished(idx, &s);
                    if s.connect.is_some() {
                        self.live.connections.fetch_add(1, Ordering::Relaxed);
                    }
                }
                return false;
            }
        };
        if !measured {
            return open_failed;
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
        open_failed
    }

    /// Ends a kept-alive connection the run needs no more (its user is done or off the curve;
    /// the open model's idle pool at the end) as client-close ends its connections: over TLS
    /// with close_notify, so that the server sees an end and not a truncation. Bounded by `by`
    /// and by the end of the run's grace ([`Ctx::cut`]): after that, only what needs no
    /// waiting is sent, so the end of the run is never held. A connection the server has
    /// already ended is only dropped: its socket would answer the alert with a reset.
    pub(crate) async fn close_kept(&self, mut conn: Conn, by: Instant) {
        if peer_closed(conn.stream.tcp()) {
            return;
        }
        tokio::select! {
            biased;
            _ = conn.stream.close_notify() => {}
            _ = tokio::time::sleep_until(by.into()) => {}
            _ = self.cut.wait() => {}
        }
    }

    /// Resolves when no new request may start: the deadline passed or the run was stopped.
    pub(crate) async fn window_over(&self) {
        match self.deadline {
            Some(deadline) => tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = self.stop.wait() => {}
            },
            None => self.stop.wait().await,
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
        let request = &self.requests[s.request];
        let (mut conn, sent) = match slot.take() {
            Some(conn) => (conn, 0),
            None if self.tls.is_none() && request.hyper.is_none() => {
                let t = Instant::now();
                let connect = self.connector.connect_sending(&request.wire);
                let (stream, sent) = connected(timeout(self.cfg.connect_timeout, connect).await)?;
                s.connect = Some(t.elapsed());
                let stream = Stream::Plain(stream);
                (Conn { stream, used: 0 }, sent)
            }
            // TLS, or hyper: the request waits for the connection (and its handshake).
            None => {
                let t = Instant::now();
                let tcp =
                    connected(timeout(self.cfg.connect_timeout, self.connector.connect()).await)?;
                s.connect = Some(t.elapsed());
                let stream = match &self.tls {
                    None => Stream::Plain(tcp),
                    Some(tls) => {
                        let (stream, handshake) =
                            timeout(self.cfg.connect_timeout, tls.handshake(tcp))
                                .await
                                .map_err(|_| ErrorClass::Timeout)?
                                .map_err(|e| tls::classify(&e))?;
                        s.tls = Some(handshake);
                        Stream::Tls(Box::new(stream))
                    }
                };
                if let Some(req) = &request.hyper {
                    return hyper_client::exchange(&self.cfg, req, stream, s).await;
                }
                (Conn { stream, used: 0 }, 0)
            }
        };
        let response = timeout(self.cfg.request_timeout, async {
            conn.stream
                .write_all(&request.wire[sent..])
                .await
                .map_err(|e| tls::classify(&e))?;
            read_response(&mut conn.stream, buf, request.head, &mut s.first_byte).await
        })
        .await
        .map_err(|_| ErrorClass::Timeout)??;
        s.done = Instant::now();
        s.result = ErrorClass::from_status(response.status);
        conn.used += 1;
        let mut fin_missing = false;
        match request.mode {
            // Dropping closes: FIN (client-close, after TLS's close_notify), or RST because of
            // SO_LINGER 0 (reset, with no close_notify: an abort says nothing first).
            Mode::ClientClose => conn.stream.close_notify().await,
            Mode::Reset => drop(conn),
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
                if spent {
                    conn.stream.close_notify().await;
                } else {
                    *slot = Some(conn);
                }
            }
        }
        Ok(fin_missing)
    }

    /// Waits for the server's FIN under the request timeout; `true` if it never came. A reset
    /// after the response also ended the connection from the server: only a timeout means the
    /// server never closed.
    /// The end of the run ([`Ctx::cut`]) cuts the wait short, and then the FIN is missing too.
    async fn server_fin_missing(&self, conn: &mut Conn, buf: &mut Vec<u8>) -> bool {
        let eof = timeout(
            self.cfg.request_timeout,
            wait_for_fin(&mut conn.stream, buf),
        );
        tokio::select! {
            biased;
            came = eof => came.is_err(),
            _ = self.cut.wait() => true,
        }
    }
}

/// What an attempt cut by the end of the run still completes: what its sockets already hold.
/// The event loop learns that a socket is readable only when it polls for events, which it
/// does when it runs out of ready tasks; a cut that comes while it is busy is seen before a
/// response that arrived meanwhile. Yielding hands the loop that turn first (tokio wakes a
/// yielded task after polling for events), then one more poll finishes the attempt if nothing
/// needs waiting for; if something does, the attempt is unfinished.
async fn last_look<F: Future>(mut attempt: Pin<&mut F>) -> Option<F::Output> {
    tokio::task::yield_now().await;
    std::future::poll_fn(|cx| match attempt.as_mut().poll(cx) {
        Poll::Ready(outcome) => Poll::Ready(Some(outcome)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
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

/// Whether the peer has already ended an idle connection: its FIN (or RST) is queued, or it
/// sent bytes unasked (a server's goodbye such as a 408), after which the connection is no
/// place for a request either. Looks without waiting: the readiness tokio already has, and
/// one `MSG_PEEK` read when that says there may be something.
fn peer_closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let mut peeked = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    !stream.poll_peek(&mut cx, &mut peeked).is_pending()
}

fn is_stale_keepalive(outcome: &Result<bool, ErrorClass>) -> bool {
    matches!(
        outcome,
        Err(ErrorClass::Eof | ErrorClass::Errno(libc::EPIPE | libc::ECONNRESET))
    )
}

/// The run's TLS client, for an https target.
fn tls_client(cfg: &DriverConfig) -> Result<Option<TlsClient>, DriverError> {
    cfg.tls
        .as_ref()
        .map(|options| TlsClient::new(options, &cfg.target.host))
        .transpose()
        .map_err(DriverError::TlsConfig)
}

/// One connection before the run, so that a wrong or dead target, a certificate the run would
/// refuse, or a target that speaks the other protocol is one clear error instead of a run full
/// of ECONNREFUSED or TLS failures. For an https target it is a real handshake with the run's
/// own configuration; for an http one, [`refuse_tls_server`].
pub(crate) async fn preflight(cfg: &DriverConfig) -> Result<(), DriverError> {
    let tls = tls_client(cfg)?;
    // SO_LINGER 0: the check leaves no TIME_WAIT behind to skew the counts.
    let connector = Connector::new(cfg.target.addr, cfg.source_ips.clone(), true);
    let start = Instant::now();
    let tcp =
        connected(timeout(cfg.connect_timeout, connector.connect()).await).map_err(|class| {
            DriverError::Unreachable {
                addr: cfg.target.addr,
                class,
            }
        })?;
    let Some(tls) = tls else {
        return refuse_tls_server(cfg, tcp, start.elapsed()).await;
    };
    match timeout(cfg.connect_timeout, tls.handshake(tcp)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(DriverError::Handshake {
            addr: cfg.target.addr,
            class: tls::classify(&source),
            source,
        }),
        Err(_) => Err(DriverError::HandshakeTimeout {
            addr: cfg.target.addr,
            after: cfg.connect_timeout,
        }),
    }
}

/// What the check of an http target sends: the first line of a request, without the blank
/// line that would end its head. A plain-HTTP server waits for the rest, answers nothing and
/// counts no request (the connection is then reset); a TLS server reads it as a record header
/// that is no TLS and answers at once with an alert (rustls does; OpenSSL resets without one,
/// and nginx waits for a whole request to answer it with a plain 400).
const HALF_REQUEST: &[u8] = b"GET / HTTP/1.1\r\n";

/// How long the check of an http target waits for a TLS server's alert, beyond three times the
/// connect's own time (an alert takes one round trip and no work): long enough for a busy
/// server, short enough that the wait, which every plain-HTTP run pays, goes unnoticed.
const TLS_ALERT_WAIT: Duration = Duration::from_millis(100);

/// Refuses an http target whose server answers [`HALF_REQUEST`] with a TLS record: the run
/// would be nothing but `tls_server_on_http` errors. Silence (a plain server waiting for the
/// rest of the request), a close or any other answer lets the run go on.
async fn refuse_tls_server(
    cfg: &DriverConfig,
    mut tcp: TcpStream,
    connect_took: Duration,
) -> Result<(), DriverError> {
    let wait = (connect_took * 3 + TLS_ALERT_WAIT).min(cfg.connect_timeout);
    let answer = timeout(wait, async {
        tcp.write_all(HALF_REQUEST).await?;
        // The two bytes that tell, even when they come in separate segments.
        let mut first = [0u8; 2];
        let mut n = 0;
        while n < first.len() {
            match tcp.read(&mut first[n..]).await? {
                0 => break,
                got => n += got,
            }
        }
        Ok::<_, std::io::Error>(is_tls_record(&first[..n]))
    })
    .await;
    if let Ok(Ok(true)) = answer {
        return Err(DriverError::TlsServer {
            addr: cfg.target.addr,
        });
    }
    Ok(())
}
