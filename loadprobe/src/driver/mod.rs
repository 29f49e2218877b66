//! The load driver: opens connections the way `--mode` says, sends the request, measures.
//!
//! A task is one request; whether it gets a fresh connection, and who closes that connection, is
//! the mode. The closed model runs `--users` loops; the open model starts tasks on a fixed
//! schedule (`--rate`) and measures from the intended start, so a stall is charged to latency
//! instead of silently lowering the request rate (no coordinated omission).

mod connect;
pub mod curve;
pub mod errors;
mod http;
mod hyper_client;
pub mod limits;
pub mod mix;
mod request;
pub mod scenario;
mod schedule;
pub mod segment;
pub mod source_ips;
mod stats;
mod stream;
mod target;
mod task;
pub mod tls;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::model::{Live, Mode, Workload};

pub use curve::{Curve, Stage};
pub use errors::{ErrorClass, TlsFailure};
pub use mix::{Mix, MixRequest};
pub use request::{RequestError, RequestSpec, parse_header};
pub use segment::{Segment, SegmentError};
pub use source_ips::parse_source_ips;
pub use stats::{Histograms, RequestResult, Second, TlsCounts};
pub use target::{Target, TargetError};
pub use tls::{Identity, TlsConfigError, TlsOptions, Trust};

/// Which HTTP client code sends requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpClient {
    /// The lean reader/writer: one buffer, no task or channel per connection.
    #[default]
    Lean,
    /// hyper's client connection (connection-per-request modes only), for comparison.
    Hyper,
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
    /// What to send: one request, or a scenario's weighted mix.
    pub mix: Mix,
    /// Local addresses to spread connections over; empty: let the kernel choose.
    pub source_ips: Vec<IpAddr>,
    pub connect_timeout: Duration,
    /// Bound on write + response; in server-close also on the wait for the server's FIN.
    pub request_timeout: Duration,
    /// How long requests still in flight at the end of the measured duration may take to
    /// finish; those still going after it are counted as `unfinished`.
    pub grace: Duration,
    /// Send a request again, on a new connection, when the kept-alive connection it was
    /// written to turns out to have been closed by the server (counted either way).
    pub retry_stale: bool,
    pub http_client: HttpClient,
    /// Driver threads, each with an event loop of its own (see `schedule`).
    pub workers: usize,
    /// The part of the workload this host runs ([`Segment::WHOLE`]: all of it). `workload`
    /// (but its `max_in_flight`, which is this host's) and `requests` stay the whole run's; the
    /// driver takes its share.
    pub segment: Segment,
    /// Wall-clock moment to start the run at (warmup first), so that the segments on several
    /// hosts run at the same time; everything else is ready before it.
    pub start_at: Option<SystemTime>,
    /// The load changes over the run: from the workload's users or rate, each stage moves
    /// linearly to its target (see [`Curve`]). Empty: the workload's value throughout.
    pub stages: Vec<Stage>,
    /// How to speak TLS: set exactly when the target is https ([`Target::tls`]).
    pub tls: Option<TlsOptions>,
}

impl DriverConfig {
    /// The users (closed model) or starts a second (open model) over time, from the start of
    /// the run.
    pub fn curve(&self) -> Curve {
        let start = match self.workload {
            Workload::Closed { users, .. } => f64::from(users),
            Workload::Open { rate, .. } => rate,
        };
        Curve::new(start, self.stages.clone())
    }
}

impl DriverConfig {
    /// A config with the defaults the CLI uses, for `target`.
    pub fn new(target: Target, mode: Mode, workload: Workload) -> DriverConfig {
        let mix = Mix::single(RequestSpec {
            path: target.path.clone(),
            ..RequestSpec::default()
        });
        DriverConfig {
            mode,
            requests_per_conn: None,
            workload,
            duration: Some(Duration::from_secs(10)),
            requests: None,
            warmup: Duration::ZERO,
            mix,
            source_ips: Vec::new(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            grace: GRACE,
            retry_stale: true,
            http_client: HttpClient::Lean,
            workers: default_workers(mode),
            segment: Segment::WHOLE,
            start_at: None,
            stages: Vec::new(),
            tls: target.tls.then(TlsOptions::default),
            target,
        }
    }
}

/// The default [`DriverConfig::grace`]: long enough for any ordinary response in flight at the
/// deadline, short enough that a hung server delays the report by little.
pub const GRACE: Duration = Duration::from_secs(3);

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

/// A [`DriverConfig`] field [`validate`] can reject: errors name the field, and the command
/// line maps it to its own flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Users,
    Rate,
    MaxInFlight,
    Requests,
    Duration,
    RequestsPerConn,
    HttpClient,
    Workers,
    Timeouts,
    SourceIps,
    Stages,
    Tls,
    Scenario,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Users => "users",
            Field::Rate => "rate",
            Field::MaxInFlight => "max_in_flight",
            Field::Requests => "requests",
            Field::Duration => "duration",
            Field::RequestsPerConn => "requests_per_conn",
            Field::HttpClient => "http_client",
            Field::Workers => "workers",
            Field::Timeouts => "timeouts",
            Field::SourceIps => "source_ips",
            Field::Stages => "stages",
            Field::Tls => "tls",
            Field::Scenario => "scenario",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// `why` says what is wrong with the field's value ("must be at least 1").
    #[error("{} {why}", field.name())]
    Invalid { field: Field, why: &'static str },
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Segment(SegmentError),
    #[error(transparent)]
    Modes(#[from] mix::ModeClash),
    #[error("the request cannot be built for the hyper client")]
    HyperRequest(#[source] hyper::http::Error),
    #[error("cannot start a driver thread")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    SourceIp(#[from] source_ips::UnusableSourceIp),
    #[error("target {addr} is unreachable: {class}")]
    Unreachable {
        addr: std::net::SocketAddr,
        class: ErrorClass,
    },
    #[error(transparent)]
    TlsConfig(TlsConfigError),
    /// The pre-flight handshake failed; `source` holds rustls' reason.
    #[error("TLS handshake with {addr} failed ({class})")]
    Handshake {
        addr: std::net::SocketAddr,
        class: ErrorClass,
        #[source]
        source: std::io::Error,
    },
    /// An http target whose server answered in TLS.
    #[error("target {addr} answered in TLS ({}): it is an https server; give an https:// target", TlsFailure::TlsOnHttp.name())]
    TlsServer { addr: std::net::SocketAddr },
    #[error("TLS handshake with {addr} got no answer within {} ms (--connect-timeout): is it an https server?", .after.as_millis())]
    HandshakeTimeout {
        addr: std::net::SocketAddr,
        after: Duration,
    },
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

    /// Resolves once stopped. Every poll looks at the flag itself first: a stop wakes its
    /// waiters in groups, one after the other, and a task woken by an early group must find
    /// its other waits resolved too (a FIN wait cut at the end of a run, say), not still
    /// waiting for their own wake-up.
    pub async fn wait(&self) {
        let mut rx = self.inner.subscribe();
        let mut changed = std::pin::pin!(rx.wait_for(|stopped| *stopped));
        std::future::poll_fn(|cx| {
            if self.is_stopped() {
                return std::task::Poll::Ready(());
            }
            changed.as_mut().poll(cx).map(drop)
        })
        .await
    }
}

/// What the driver measured. Combined with the TIME_WAIT sampling, the probe's report and the
/// kernel snapshot into a run record by [`crate::report`].
#[derive(Debug, Clone)]
pub struct DriverResult {
    pub started_at: SystemTime,
    /// The measured window: from the end of warmup to the deadline, the stop, or (with a
    /// request count) the last completion; the grace after a deadline is not part of it.
    pub elapsed: Duration,
    /// Completed requests, `ok` and errors.
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
    /// Open model: starts that were due in the window but never made, because the in-flight
    /// cap was full or the driver was behind when the window ended (k6's dropped iterations).
    pub dropped: u64,
    /// Requests in flight when the run ended (deadline plus grace, or a stop); not in `total`.
    pub unfinished: u64,
    /// The figures of each request of [`DriverConfig::mix`], in its order; they add up to the
    /// totals above.
    pub by_request: Vec<RequestResult>,
    /// Requests written onto a kept-alive connection the server had already closed.
    pub stale_connection: u64,
    /// Of those, the ones sent again on a new connection ([`DriverConfig::retry_stale`]).
    pub retried: u64,
    /// Stopped by [`Stop::stop`] before the run ended by itself.
    pub interrupted: bool,
    /// With [`DriverConfig::start_at`]: how long after that moment the run started (zero when
    /// it was ready in time).
    pub start_late: Option<Duration>,
    /// Handshakes of an https run; `None` for plain HTTP.
    pub tls: Option<TlsCounts>,
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
/// target, or one that speaks the other protocol (TLS or not), is one clear error before
/// anything starts. Separate from [`drive`] so that the probe
/// can be attached after it and count only the run's own connections.
pub async fn preflight(config: &DriverConfig) -> Result<(), DriverError> {
    validate(config)?;
    task::preflight(config).await
}

/// Checks a configuration before any connection: each problem names the [`Field`] and what is
/// wrong with its value. [`drive`] and [`preflight`] call it; a command line calls it too, to
/// put its flags on the errors.
pub fn validate(c: &DriverConfig) -> Result<(), DriverError> {
    let bad = |field, why| Err(DriverError::Invalid { field, why });
    // With stages the load may start from nothing; it must be something at some point.
    let peak = c.curve().max();
    match c.workload {
        Workload::Closed { .. } if peak < 1.0 => return bad(Field::Users, "must be at least 1"),
        Workload::Open { .. } if !(peak > 0.0 && peak.is_finite()) => {
            return bad(Field::Rate, "must be a positive number");
        }
        Workload::Open {
            max_in_flight: 0, ..
        } => return bad(Field::MaxInFlight, "must be at least 1"),
        _ => {}
    }
    if c.requests == Some(0) {
        return bad(Field::Requests, "must be at least 1");
    }
    let split = |what, n| {
        c.segment
            .nonempty_share(what, n)
            .map_err(DriverError::Segment)
    };
    if let Workload::Closed { .. } = c.workload {
        split("users", peak.ceil() as u64)?;
    }
    if !c.stages.is_empty() && (c.warmup > Duration::ZERO || c.duration != Some(c.curve().total()))
    {
        return bad(
            Field::Stages,
            "set the run's length: no warmup, and the duration is theirs",
        );
    }
    if let Some(requests) = c.requests {
        split("requests", requests)?;
    }
    if c.duration.is_some_and(|d| d.is_zero()) {
        return bad(Field::Duration, "must be positive");
    }
    if c.requests_per_conn == Some(0) {
        return bad(Field::RequestsPerConn, "must be at least 1");
    }
    if c.http_client == HttpClient::Hyper && c.mix.modes(c.mode).any(|m| m == Mode::KeepAlive) {
        return bad(
            Field::HttpClient,
            "hyper is only for connection-per-request modes",
        );
    }
    if c.workers == 0 {
        return bad(Field::Workers, "must be at least 1");
    }
    if c.connect_timeout.is_zero() || c.request_timeout.is_zero() || c.grace.is_zero() {
        return bad(Field::Timeouts, "must be positive");
    }
    if c.source_ips
        .iter()
        .any(|ip| ip.is_ipv4() != c.target.addr.is_ipv4())
    {
        return bad(
            Field::SourceIps,
            "must be of the same IP family as the target",
        );
    }
    if c.tls.is_some() != c.target.tls {
        return bad(
            Field::Tls,
            "TLS options are set exactly for an https target",
        );
    }
    source_ips::check_usable(&c.source_ips)?;
    if c.mix.total_weight() == 0 {
        return bad(
            Field::Scenario,
            "must give at least one request a positive weight",
        );
    }
    c.mix.check_modes(c.mode)?;
    for r in &c.mix.requests {
        r.spec.validate()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
