//! The load driver: opens connections the way `--mode` says, sends the request, measures.
//!
//! A task is one request; whether it gets a fresh connection, and who closes that connection, is
//! the mode. The closed model runs `--users` loops; the open model starts tasks on a fixed
//! schedule (`--rate`) and measures from the intended start, so a stall is charged to latency
//! instead of silently lowering the request rate (no coordinated omission).

mod connect;
pub mod errors;
mod http;
mod hyper_client;
pub mod limits;
mod request;
mod schedule;
pub mod source_ips;
mod stats;
mod target;
mod task;
pub mod timewait;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

pub use errors::ErrorClass;
pub use request::{RequestError, RequestSpec, parse_header};
pub use source_ips::parse_source_ips;
pub use stats::{Histograms, Second};
pub use target::{Target, TargetError};

/// What a task does with its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// New connection, one request, the client closes first: TIME_WAIT on the client.
    ClientClose,
    /// New connection, `Connection: close`, wait for the server's FIN: TIME_WAIT on the server.
    ServerClose,
    /// Connections are reused, closed by the client after `requests_per_conn` requests.
    KeepAlive,
    /// New connection, one request, then SO_LINGER 0 close: RST, no TIME_WAIT anywhere.
    Reset,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::ClientClose,
        Mode::ServerClose,
        Mode::KeepAlive,
        Mode::Reset,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::ClientClose => "client-close",
            Mode::ServerClose => "server-close",
            Mode::KeepAlive => "keep-alive",
            Mode::Reset => "reset",
        }
    }

    /// Which side ends up holding TIME_WAIT when the mode works as intended.
    pub fn time_wait_side(&self) -> Option<&'static str> {
        match self {
            Mode::ClientClose | Mode::KeepAlive => Some("client"),
            Mode::ServerClose => Some("server"),
            Mode::Reset => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown mode {s:?} (expected client-close, server-close, keep-alive or reset)"
                )
            })
    }
}

/// Which HTTP client code sends requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpClient {
    /// The lean reader/writer: one buffer, no task or channel per connection.
    #[default]
    Lean,
    /// hyper's client connection (connection-per-request modes only), for comparison.
    Hyper,
}

/// How tasks are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    /// `users` loops, each starting its next request when the previous one (and the think
    /// time) is over.
    Closed { users: u32, think_time: Duration },
    /// `rate` requests per second on a constant schedule, at most `max_in_flight` at once (the
    /// descriptor limit); when that cap is hit the schedule waits, and latency shows it.
    Open { rate: f64, max_in_flight: u32 },
}

/// Everything a run needs; built and validated by the CLI.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub target: Target,
    pub mode: Mode,
    /// keep-alive: close the connection after this many requests; `None`: keep it for the run.
    pub requests_per_conn: Option<u32>,
    pub workload: Workload,
    /// Measured duration (after warmup). With neither this nor `requests`, runs until stopped.
    pub duration: Option<Duration>,
    /// Measured requests (after warmup).
    pub requests: Option<u64>,
    /// Load is applied but not measured for this long first.
    pub warmup: Duration,
    pub request: RequestSpec,
    /// Local addresses to spread connections over; empty: let the kernel choose.
    pub source_ips: Vec<IpAddr>,
    pub connect_timeout: Duration,
    /// Bound on write + response; in server-close also on the wait for the server's FIN.
    pub request_timeout: Duration,
    pub http_client: HttpClient,
    /// Driver threads, each with an event loop of its own (see `schedule`).
    pub workers: usize,
}

impl DriverConfig {
    /// A config with the defaults the CLI uses, for `target`.
    pub fn new(target: Target, mode: Mode, workload: Workload) -> DriverConfig {
        let request = RequestSpec {
            path: target.path.clone(),
            ..RequestSpec::default()
        };
        DriverConfig {
            target,
            mode,
            requests_per_conn: None,
            workload,
            duration: Some(Duration::from_secs(10)),
            requests: None,
            warmup: Duration::ZERO,
            request,
            source_ips: Vec::new(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            http_client: HttpClient::Lean,
            workers: default_workers(mode),
        }
    }
}

/// Driver threads unless told otherwise: one per CPU for the connection-per-request modes,
/// whose cost is mostly the kernel's work for the client's sockets; half the CPUs for
/// keep-alive, where the server does most of the work and, on the same machine (this tool's
/// usual setup), needs the cores more. Measured on 2 CPUs against nginx on loopback:
/// server-close 33k conn/s with one thread, 50-64k with two; keep-alive 255-259k req/s with
/// one, 197-230k with two.
fn default_workers(mode: Mode) -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    match mode {
        Mode::KeepAlive => (cpus / 2).max(1),
        _ => cpus,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{0}")]
    Config(String),
    #[error("target {addr} is unreachable: {class}")]
    Unreachable {
        addr: std::net::SocketAddr,
        class: ErrorClass,
    },
}

/// Counters updated as requests complete (measured window only), for live progress.
#[derive(Debug, Default)]
pub struct Live {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub connections: AtomicU64,
    /// Latest TIME_WAIT counts per side, written by the probe (or the sampler without it).
    pub tw_client: AtomicU64,
    pub tw_server: AtomicU64,
    /// Set once warmup is over.
    pub measuring: AtomicBool,
    /// When the measured window started, on [`crate::kernel::monotonic_ns`]'s clock (0 before):
    /// the probe splits its counts there.
    pub window_start_ns: AtomicU64,
}

/// Asks a run to stop early (SIGINT/SIGTERM); cheap to check, and awaitable.
#[derive(Debug, Clone)]
pub struct Stop {
    inner: Arc<watch::Sender<bool>>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            inner: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Stop {
    pub fn stop(&self) {
        self.inner.send_replace(true);
    }

    pub fn is_stopped(&self) -> bool {
        *self.inner.borrow()
    }

    pub async fn wait(&self) {
        let mut rx = self.inner.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

/// What the driver measured. Combined with the TIME_WAIT sampling, the probe's report and the
/// kernel snapshot into a run record by [`crate::report`].
#[derive(Debug, Clone)]
pub struct DriverResult {
    pub started_at: SystemTime,
    /// The measured window: from the end of warmup to the last completion.
    pub elapsed: Duration,
    pub total: u64,
    pub ok: u64,
    /// Error class name (see [`ErrorClass::name`]) → count.
    pub errors: BTreeMap<String, u64>,
    pub connections_opened: u64,
    pub histograms: Histograms,
    /// Completions per second of the measured window.
    pub timeline: Vec<Second>,
    /// Responses after which the server did not close within the timeout (server-close, and
    /// keep-alive responses that announced the close).
    pub server_fin_missing: u64,
    /// Stopped by [`Stop::stop`] before the planned end.
    pub interrupted: bool,
}

impl DriverResult {
    pub fn rps(&self) -> f64 {
        per_second(self.total, self.elapsed)
    }

    pub fn connections_per_second(&self) -> f64 {
        per_second(self.connections_opened, self.elapsed)
    }
}

fn per_second(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// Checks that the target accepts a connection, then runs the load until the duration or
/// request count is reached or `stop` is called. Must run inside a tokio runtime; the load
/// itself runs on threads of its own ([`DriverConfig::workers`]), which inherit the calling
/// thread's network namespace.
pub async fn drive(
    config: DriverConfig,
    live: Arc<Live>,
    stop: Stop,
) -> Result<DriverResult, DriverError> {
    validate(&config)?;
    schedule::run(config, live, stop).await
}

/// Checks the configuration and makes one connection to the target, so that a wrong or dead
/// target is one clear error before anything starts. Separate from [`drive`] so that the probe
/// can be attached after it and count only the run's own connections.
pub async fn preflight(config: &DriverConfig) -> Result<(), DriverError> {
    validate(config)?;
    task::preflight(config).await
}

fn validate(c: &DriverConfig) -> Result<(), DriverError> {
    let bad = |s: &str| Err(DriverError::Config(s.to_string()));
    match c.workload {
        Workload::Closed { users: 0, .. } => return bad("--users must be at least 1"),
        Workload::Open { rate, .. } if !(rate > 0.0 && rate.is_finite()) => {
            return bad("--rate must be a positive number");
        }
        Workload::Open {
            max_in_flight: 0, ..
        } => return bad("max in flight must be at least 1"),
        _ => {}
    }
    if c.requests == Some(0) {
        return bad("--requests must be at least 1");
    }
    if c.duration.is_some_and(|d| d.is_zero()) {
        return bad("--duration must be positive");
    }
    if c.requests_per_conn == Some(0) {
        return bad("--requests-per-conn must be at least 1");
    }
    if c.http_client == HttpClient::Hyper && c.mode == Mode::KeepAlive {
        return bad("the hyper client is only for connection-per-request modes");
    }
    if c.workers == 0 {
        return bad("--threads must be at least 1");
    }
    if c.connect_timeout.is_zero() || c.request_timeout.is_zero() {
        return bad("timeouts must be positive");
    }
    if c.source_ips
        .iter()
        .any(|ip| ip.is_ipv4() != c.target.addr.is_ipv4())
    {
        return bad("--source-ips must be of the same IP family as the target");
    }
    c.request
        .validate()
        .map_err(|e| DriverError::Config(e.to_string()))
}

#[cfg(test)]
mod tests;
