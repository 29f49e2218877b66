//! The run record (`loadprobe.run/1`, documented in docs/run-record.md) and the text summary.
//!
//! A record is assembled from independent parts, so each can come from whoever measured it:
//! the driver's [`DriverResult`], the TIME_WAIT sampling ([`TwObserved`]), the eBPF probe's
//! [`ProbeReport`] (which, when attached, takes precedence for `connections.closer`,
//! `time_wait` and `probe`), the kernel [`Snapshot`] and the [`PortBudget`].

mod budget;
pub mod histograms;
pub mod merge;
mod text;
mod write;

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::{Closer, Mode, Side};

use crate::diag::timewait::TwObserved;

use crate::driver::{Curve, DriverConfig, DriverResult, Histograms, Stage, Trust};
use crate::model::Workload;

use crate::kernel::Snapshot;
use crate::probe::session::SessionReport;
use crate::probe::summary::SideSummary;

pub use budget::{PortBudget, PortBudgetInputs};
pub use histograms::{HISTOGRAM_ENCODING, decode_histogram, encode_histogram};
pub use merge::{HostFigures, MergeError, MergeOptions, MergedInput, merge, merge_with};
pub use text::{Summary, render_text, summary};
pub use write::{PendingOutput, write_atomic};

/// The schema identifier; bump the suffix on any incompatible change.
pub const SCHEMA: &str = "loadprobe.run/1";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot serialize the run record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot encode a histogram")]
    Encode(#[source] hdrhistogram::serialization::V2DeflateSerializeError),
    #[error("cannot decode a histogram: not base64")]
    Base64(#[source] base64::DecodeError),
    #[error("cannot decode a histogram")]
    Decode(#[source] hdrhistogram::serialization::DeserializeError),
}

/// One run, as written to `--output`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// Always [`SCHEMA`].
    pub schema: String,
    pub loadprobe_version: String,
    /// This run's identity, random and made once when its record is built, so that `merge`
    /// can refuse a run it already holds. Absent in records written before it existed (their
    /// start time and target identify them) and in merged records (their inputs have theirs
    /// in `merged_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Wall-clock start of the run (warmup included), milliseconds since the Unix epoch.
    pub started_at_unix_ms: u64,
    pub config: RunConfig,
    /// Length of the measured window, in seconds.
    pub duration_s: f64,
    /// Stopped by SIGINT/SIGTERM before the planned end; the figures cover what ran.
    pub interrupted: bool,
    /// `run --repeat N` stopped by a failed repetition: the figures are those of the
    /// repetitions that finished. Absent when every planned repetition ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
    pub requests: Requests,
    pub throughput: Throughput,
    pub latency_us: Latencies,
    /// An https run's handshakes. Absent for plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsRecord>,
    pub connections: Connections,
    pub time_wait: TimeWait,
    pub probe: ProbeStatus,
    pub kernel: Snapshot,
    pub port_budget: PortBudget,
    pub histograms: SerializedHistograms,
    /// `run --scenario`: each request's figures by its name; they add up to `requests` and
    /// the histograms. Absent for a plain run (and in records written before it existed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_request: BTreeMap<String, RequestFigures>,
    /// `run --repeat N` (or a merge of sequential runs): each repetition's figures by record
    /// path (see [`merge::headline_metrics`]), for `compare` to judge noise. Absent for a
    /// single run; records written before it existed still parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetitions: Option<Vec<BTreeMap<String, f64>>>,
    /// A merged record: each input's start, target and kernel (per-host snapshots). Absent for
    /// a single run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<MergedInput>,
    /// One host's part of a workload split across hosts (`run --segment K/N`, or a start time
    /// given with `--start-at`). Absent otherwise, and in merged records (see `segments`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentRecord>,
    /// A merge of segments: which were there and how far apart the hosts started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<SegmentSet>,
}

/// Which part of a split workload a record holds, and where and when it ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentRecord {
    /// 1-based.
    pub index: u32,
    pub count: u32,
    /// The host's name (a pod's name, in a Kubernetes Job).
    pub host: String,
    /// Closed model: this segment's share of `config.users`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u64>,
    /// The moment the hosts were to start at (`--start-at`), milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at_unix_ms: Option<u64>,
    /// How late this host started for that moment (0: it was ready in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_late_ms: Option<u64>,
}

/// The segments a merged record holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentSet {
    pub count: u32,
    /// The indexes merged, ascending.
    pub merged: Vec<u32>,
    /// The indexes not there (only with `merge --allow-partial`): the figures are those of a
    /// part of the workload.
    pub missing: Vec<u32>,
    /// Latest minus earliest wall-clock start of the hosts, in milliseconds.
    pub start_skew_ms: u64,
    /// `start_skew_ms` is over [`START_SKEW_BOUND_MS`]: the hosts did not run at the same time,
    /// and per-second figures of the whole mix different moments.
    pub skewed: bool,
}

/// Start skew across the hosts of a merge beyond which they are said not to have started
/// together: one second, the resolution of the timelines.
pub const START_SKEW_BOUND_MS: u64 = 1000;

/// Why a record holds fewer repetitions than were asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Incomplete {
    pub planned_repetitions: u32,
    pub completed_repetitions: u32,
    /// The error that stopped the next repetition, one line.
    pub reason: String,
}

/// What was asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunConfig {
    /// `client-close`, `server-close`, `keep-alive` or `reset`.
    pub mode: Mode,
    /// `http://addr/path` actually connected to.
    pub target: String,
    /// The target was the in-process server.
    pub embedded_server: bool,
    /// `closed` (`users`) or `open` (`rate`).
    pub model: String,
    pub users: Option<u32>,
    pub think_time_ms: Option<u64>,
    pub rate: Option<f64>,
    pub max_in_flight: Option<u32>,
    pub duration_s: Option<f64>,
    pub requests: Option<u64>,
    pub warmup_s: f64,
    pub requests_per_conn: Option<u32>,
    pub method: String,
    pub path: String,
    pub headers: Vec<String>,
    pub body_bytes: usize,
    pub source_ips: Vec<String>,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// `--stages`: how the load moved from `users` (or `rate`) over the run. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageRecord>>,
    /// An https target: how the run spoke TLS. Absent for plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfigRecord>,
    /// `--scenario`: the requests drawn from, and the seed. Absent for a plain run, whose one
    /// request `method`, `path`, `headers` and `body_bytes` describe (with a scenario they
    /// describe its first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<ScenarioConfig>,
}

/// How an https run spoke TLS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TlsConfigRecord {
    /// The server name sent in SNI and checked against the certificate; `None` when that name
    /// is an IP address, which SNI cannot carry (the certificate is checked against the
    /// address).
    pub sni: Option<String>,
    /// `system` (the system's roots), `cacert` (a file's), `embedded` (the embedded server's
    /// own certificate) or `insecure` (no verification).
    pub trust: String,
    /// `--cacert`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cacert: Option<String>,
    /// A client certificate was offered (`--cert`).
    pub client_cert: bool,
    /// Sessions resumed from one shared store (`--tls-resume on`).
    pub resume: bool,
}

/// The handshakes of an https run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TlsRecord {
    /// Handshakes that resumed no session.
    pub full_handshakes: u64,
    pub resumed_handshakes: u64,
    /// Handshakes by protocol version (`TLSv1_3`).
    pub versions: BTreeMap<String, u64>,
    /// Handshakes by cipher suite (`TLS13_AES_256_GCM_SHA384`).
    pub cipher_suites: BTreeMap<String, u64>,
}

impl TlsRecord {
    fn of(c: &crate::driver::TlsCounts) -> TlsRecord {
        let named =
            |m: &BTreeMap<&'static str, u64>| m.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        TlsRecord {
            full_handshakes: c.full,
            resumed_handshakes: c.resumed,
            versions: named(&c.versions),
            cipher_suites: named(&c.cipher_suites),
        }
    }

    /// Two records' handshakes together.
    pub fn add(&mut self, other: &TlsRecord) {
        self.full_handshakes += other.full_handshakes;
        self.resumed_handshakes += other.resumed_handshakes;
        for (k, n) in &other.versions {
            *self.versions.entry(k.clone()).or_insert(0) += n;
        }
        for (k, n) in &other.cipher_suites {
            *self.cipher_suites.entry(k.clone()).or_insert(0) += n;
        }
    }
}

/// The weighted mix of a scenario run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioConfig {
    /// Seeds the draws: `run --seed` with it draws the same requests again.
    pub seed: u64,
    /// In the file's order.
    pub requests: Vec<ScenarioRequest>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioRequest {
    pub name: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<String>,
    pub body_bytes: usize,
    pub weight: u32,
    /// How the connection ends after it (its own mode, or the run's).
    pub mode: Mode,
}

/// One request's figures in a scenario run, under `by_request.NAME`: the same fields as the
/// record's own `requests`, `latency_us` and `histograms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestFigures {
    pub requests: RequestCounts,
    /// Connections this request opened (a kept-alive connection is its first request's).
    pub connections_opened: u64,
    pub latency_us: Latencies,
    pub histograms: SerializedHistograms,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestCounts {
    pub total: u64,
    pub ok: u64,
    /// Error class → count.
    pub errors: BTreeMap<String, u64>,
    /// In flight when the run ended (not in `total`).
    pub unfinished: u64,
}

/// One stage: the load moves linearly to `target` over `duration_s`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct StageRecord {
    pub duration_s: f64,
    pub target: f64,
}

impl RunConfig {
    /// The load over time, when it had stages.
    pub fn curve(&self) -> Option<Curve> {
        let stages = self.stages.as_ref()?;
        let start = self.users.map(f64::from).or(self.rate).unwrap_or(0.0);
        Some(Curve::new(
            start,
            stages
                .iter()
                .map(|s| Stage {
                    duration: Duration::from_secs_f64(s.duration_s),
                    target: s.target,
                })
                .collect(),
        ))
    }
}

impl RunConfig {
    pub fn new(c: &DriverConfig, embedded_server: bool) -> RunConfig {
        let (model, users, think_time_ms, rate, max_in_flight) = match c.workload {
            Workload::Closed { users, think_time } => (
                "closed",
                Some(users),
                Some(think_time.as_millis() as u64),
                None,
                None,
            ),
            Workload::Open {
                rate,
                max_in_flight,
            } => ("open", None, None, Some(rate), Some(max_in_flight)),
        };
        let tls = c.tls.as_ref().map(|t| TlsConfigRecord {
            sni: Some(t.sni.as_deref().unwrap_or(&c.target.host))
                .filter(|name| name.parse::<std::net::IpAddr>().is_err())
                .map(str::to_string),
            trust: match &t.trust {
                Trust::System => "system",
                Trust::CaFile(_) => "cacert",
                Trust::Roots(_) => "embedded",
                Trust::Insecure => "insecure",
            }
            .to_string(),
            cacert: match &t.trust {
                Trust::CaFile(path) => Some(path.display().to_string()),
                _ => None,
            },
            client_cert: t.identity.is_some(),
            resume: t.resume,
        });
        let scheme = if c.target.tls { "https" } else { "http" };
        RunConfig {
            mode: c.mode,
            target: format!("{scheme}://{}{}", c.target.addr, c.mix.first().path),
            embedded_server,
            model: model.to_string(),
            users,
            think_time_ms,
            rate,
            max_in_flight,
            duration_s: c.duration.map(|d| d.as_secs_f64()),
            requests: c.requests,
            warmup_s: c.warmup.as_secs_f64(),
            requests_per_conn: c.requests_per_conn,
            method: c.mix.first().method.clone(),
            path: c.mix.first().path.clone(),
            headers: header_lines(c.mix.first()),
            body_bytes: c.mix.first().body.len(),
            source_ips: c.source_ips.iter().map(|ip| ip.to_string()).collect(),
            connect_timeout_ms: c.connect_timeout.as_millis() as u64,
            request_timeout_ms: c.request_timeout.as_millis() as u64,
            stages: (!c.stages.is_empty()).then(|| {
                c.stages
                    .iter()
                    .map(|s| StageRecord {
                        duration_s: s.duration.as_secs_f64(),
                        target: s.target,
                    })
                    .collect()
            }),
            tls,
            scenario: c.mix.named.then(|| ScenarioConfig {
                seed: c.mix.seed,
                requests: c
                    .mix
                    .requests
                    .iter()
                    .zip(c.mix.modes(c.mode))
                    .map(|(r, mode)| ScenarioRequest {
                        name: r.name.clone(),
                        method: r.spec.method.clone(),
                        path: r.spec.path.clone(),
                        headers: header_lines(&r.spec),
                        body_bytes: r.spec.body.len(),
                        weight: r.weight,
                        mode,
                    })
                    .collect(),
            }),
        }
    }
}

fn header_lines(r: &crate::driver::RequestSpec) -> Vec<String> {
    r.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Requests {
    pub total: u64,
    pub ok: u64,
    /// Error class → count; classes are listed in docs/run-record.md.
    pub errors: BTreeMap<String, u64>,
    /// Open model: starts due in the window that were never made (not in `total`). The four
    /// counts below are absent (null) in records written before they existed.
    #[serde(default)]
    pub dropped: Option<u64>,
    /// Requests in flight when the run ended, deadline plus grace or a stop (not in `total`).
    #[serde(default)]
    pub unfinished: Option<u64>,
    /// Requests written onto a kept-alive connection the server had already closed.
    #[serde(default)]
    pub stale_connection: Option<u64>,
    /// Of those, the ones sent again on a new connection (their outcome is what `total` counts).
    #[serde(default)]
    pub retried: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Throughput {
    /// Requests (ok and failed) per second of the measured window.
    pub rps: f64,
    /// New connections per second.
    pub connections_per_s: f64,
    pub timeline: Vec<TimelineSecond>,
}

/// Completions during second `t` of the measured window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TimelineSecond {
    pub t: u64,
    pub ok: u64,
    pub errors: u64,
    /// `errors` by class (the keys of `requests.errors`); empty in a second without errors.
    /// Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_classes: Option<BTreeMap<String, u64>>,
    pub connections: u64,
    /// With `--stages`, what this second was to be on this host: the starts due in it (open
    /// model) or the users running at its middle (closed model), this segment's share of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
}

/// Summary of one latency histogram, in microseconds. Of an empty histogram (no completed
/// request) only `count` is written; the rest is null, as no latency was measured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(into = "PercentilesJson", from = "PercentilesJson")]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// [`Percentiles`] as a record holds them: null but the count when nothing was measured.
#[derive(Serialize, Deserialize)]
struct PercentilesJson {
    count: u64,
    mean: Option<f64>,
    p50: Option<u64>,
    p90: Option<u64>,
    p99: Option<u64>,
    p999: Option<u64>,
    max: Option<u64>,
}

impl From<Percentiles> for PercentilesJson {
    fn from(p: Percentiles) -> PercentilesJson {
        let some = |v: u64| (p.count > 0).then_some(v);
        PercentilesJson {
            count: p.count,
            mean: (p.count > 0).then_some(p.mean),
            p50: some(p.p50),
            p90: some(p.p90),
            p99: some(p.p99),
            p999: some(p.p999),
            max: some(p.max),
        }
    }
}

impl From<PercentilesJson> for Percentiles {
    fn from(p: PercentilesJson) -> Percentiles {
        Percentiles {
            count: p.count,
            mean: p.mean.unwrap_or(0.0),
            p50: p.p50.unwrap_or(0),
            p90: p.p90.unwrap_or(0),
            p99: p.p99.unwrap_or(0),
            p999: p.p999.unwrap_or(0),
            max: p.max.unwrap_or(0),
        }
    }
}

impl Latencies {
    /// `tls`: the run spoke TLS, so its handshakes have a summary (empty or not).
    pub fn of(h: &Histograms, tls: bool) -> Latencies {
        Latencies {
            total: Percentiles::of(&h.total),
            total_uncorrected: Percentiles::of(&h.total_uncorrected),
            connect: Percentiles::of(&h.connect),
            first_byte: Percentiles::of(&h.first_byte),
            tls_handshake: tls.then(|| Percentiles::of(&h.tls_handshake)),
        }
    }
}

impl SerializedHistograms {
    /// `tls` as for [`Latencies::of`].
    pub fn of(h: &Histograms, tls: bool) -> Result<SerializedHistograms, ReportError> {
        Ok(SerializedHistograms {
            encoding: HISTOGRAM_ENCODING.to_string(),
            total: encode_histogram(&h.total)?,
            total_uncorrected: encode_histogram(&h.total_uncorrected)?,
            connect: encode_histogram(&h.connect)?,
            first_byte: encode_histogram(&h.first_byte)?,
            tls_handshake: tls
                .then(|| encode_histogram(&h.tls_handshake))
                .transpose()?,
        })
    }
}

impl Percentiles {
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latencies {
    /// Start to complete response; open model: from the intended start.
    pub total: Percentiles,
    /// Start to complete response from the actual start (same as `total` in the closed model).
    pub total_uncorrected: Percentiles,
    /// connect() to established.
    pub connect: Percentiles,
    /// Actual start to first response byte.
    pub first_byte: Percentiles,
    /// The TLS handshake, after connect and before the request (https runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshake: Option<Percentiles>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Connections {
    pub opened: u64,
    pub closer: CloserCounts,
    /// Connections whose closer was not the one the mode asked for (probe only).
    pub mismatches: Option<u64>,
    /// server-close: responses after which the server did not close within the request timeout.
    pub server_fin_missing: u64,
}

/// Who ended each connection. Without the probe everything is `unknown`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct CloserCounts {
    pub client: u64,
    pub server: u64,
    pub simultaneous: u64,
    #[serde(rename = "client-reset")]
    pub client_reset: u64,
    #[serde(rename = "server-reset")]
    pub server_reset: u64,
    pub refused: u64,
    pub unknown: u64,
}

/// Lifetime percentiles of TIME_WAIT sockets, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct DurationPercentiles {
    pub p50: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

/// TIME_WAIT on one side. `None` (JSON null): the source in use cannot tell.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct TimeWaitSide {
    /// Sockets that entered TIME_WAIT.
    pub entered: Option<u64>,
    /// Most at once.
    pub peak: Option<u64>,
    /// Left after the full timeout.
    pub expired: Option<u64>,
    /// Taken over by a new connection (tcp_tw_reuse, or a SYN the server accepted).
    pub reused: Option<u64>,
    /// TIME_WAIT sockets older than the run (another run's, or from before it) that its
    /// connections took over; apart from `reused` (the run's own). Probe only; absent in
    /// older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_older: Option<u64>,
    /// Ended early (RST, or the namespace's table flushed).
    pub killed: Option<u64>,
    /// Not created because `tcp_max_tw_buckets` was reached.
    pub overflow: Option<u64>,
    /// Still in TIME_WAIT when the run ended.
    pub open: Option<u64>,
    /// FIN_WAIT2 only (`time_wait.fin_wait2`): moved on to TIME_WAIT, where they count as
    /// `entered`, when the peer's FIN arrived. Absent on the TIME_WAIT sides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_time_wait: Option<u64>,
    pub duration_ms: DurationPercentiles,
}

/// Orphaned FIN_WAIT2 sockets per side: the closing end's timewait socket while the peer has
/// not sent its FIN (a server that never closes). `ss` shows them as fin-wait-2, not
/// time-wait, and they hold their port for `tcp_fin_timeout`. All null where the source
/// cannot tell them (sampling, records written before this existed).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct FinWait2 {
    pub client: TimeWaitSide,
    pub server: TimeWaitSide,
}

pub use crate::model::TimeWaitPoint;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TimeWait {
    /// `probe`, `sock_diag`, `proc` (/proc/net/tcp*) or `none`.
    pub source: String,
    pub client: TimeWaitSide,
    pub server: TimeWaitSide,
    #[serde(default)]
    pub fin_wait2: FinWait2,
    /// Why the `server` side (and `fin_wait2.server`) is null though the probe was attached:
    /// the target's end is outside what it watches (another network namespace, another host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_unseen: Option<String>,
    pub timeline: Vec<TimeWaitPoint>,
}

impl TimeWait {
    /// One side's figures.
    pub fn side(&self, side: Side) -> &TimeWaitSide {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeStatus {
    pub attached: bool,
    pub lost_events: Option<u64>,
    /// Tracepoint hits the kernel skipped (see [`crate::probe::Probe::skipped_events`]).
    /// Absent in records written before it existed.
    #[serde(default)]
    pub skipped_events: Option<u64>,
    /// Kernel reads that failed (see [`crate::probe::Probe::read_errors`]). Absent in records
    /// written before it existed.
    #[serde(default)]
    pub read_errors: Option<u64>,
    /// Why the probe is off (null when attached).
    pub reason: Option<String>,
}

/// The histograms themselves, so records can be merged and compared later.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SerializedHistograms {
    /// [`HISTOGRAM_ENCODING`]: HdrHistogram V2 + deflate, base64 (the format of
    /// HdrHistogram's `encodeIntoCompressedByteBuffer`), values in microseconds.
    pub encoding: String,
    pub total: String,
    pub total_uncorrected: String,
    pub connect: String,
    pub first_byte: String,
    /// https runs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshake: Option<String>,
}

/// What the eBPF probe contributes to a record. The driver knows nothing of the probe; whoever
/// runs it fills this and hands it to [`RunRecord::build`]. Every `None` falls back to what the
/// run can tell without the probe.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    pub attached: bool,
    /// Why the probe is not attached (one line, shown in the summary).
    pub reason: Option<String>,
    pub lost_events: Option<u64>,
    pub skipped_events: Option<u64>,
    pub read_errors: Option<u64>,
    pub closer: Option<CloserCounts>,
    pub mismatches: Option<u64>,
    pub time_wait_client: Option<TimeWaitSide>,
    pub time_wait_server: Option<TimeWaitSide>,
    pub fin_wait2: Option<FinWait2>,
    /// Why the probe cannot see the target's end (see [`TimeWait::server_unseen`]).
    pub server_unseen: Option<String>,
    pub time_wait_timeline: Option<Vec<TimeWaitPoint>>,
}

impl ProbeReport {
    /// No probe, for `reason`.
    pub fn off(reason: impl Into<String>) -> ProbeReport {
        ProbeReport {
            reason: Some(reason.into()),
            ..ProbeReport::default()
        }
    }

    /// The target's end of the connections is outside what the probe watches, for `reason`:
    /// its server-side figures are unknown, not zero.
    pub fn server_unseen(mut self, reason: String) -> ProbeReport {
        self.time_wait_server = None;
        if let Some(fw2) = &mut self.fin_wait2 {
            fw2.server = TimeWaitSide::default();
        }
        for p in self.time_wait_timeline.iter_mut().flatten() {
            p.fin_wait2_server = None;
        }
        self.server_unseen = Some(reason);
        self
    }

    /// Of the client's timewait sockets, the share that stayed in FIN_WAIT2 (never reached
    /// TIME_WAIT); 0 without the probe's figures.
    pub fn client_fin_wait2_share(&self) -> f64 {
        let (Some(tw), Some(fw2)) = (&self.time_wait_client, &self.fin_wait2) else {
            return 0.0;
        };
        let n = |v: Option<u64>| v.unwrap_or(0);
        let stayed = n(fw2.client.entered).saturating_sub(n(fw2.client.to_time_wait));
        let all = stayed + n(tw.entered);
        if all == 0 {
            0.0
        } else {
            stayed as f64 / all as f64
        }
    }

    /// What the probe saw over a run of `mode`. Mismatches are connections that closed another
    /// way than the mode asks for (`unknown` ones, still open at the end, are not counted).
    pub fn from_probe(seen: &SessionReport, mode: Mode) -> ProbeReport {
        let s = &seen.summary;
        let count = |c: Closer| s.closer.get(c.name()).copied().unwrap_or(0);
        let closer = CloserCounts {
            client: count(Closer::Client),
            server: count(Closer::Server),
            simultaneous: count(Closer::Simultaneous),
            client_reset: count(Closer::ClientReset),
            server_reset: count(Closer::ServerReset),
            refused: count(Closer::Refused),
            unknown: count(Closer::Unknown),
        };
        let expected = match mode {
            Mode::ClientClose | Mode::KeepAlive => closer.client,
            Mode::ServerClose => closer.server,
            Mode::Reset => closer.client_reset,
        };
        let side = |t: &SideSummary| TimeWaitSide {
            entered: Some(t.entered),
            peak: Some(t.peak),
            expired: Some(t.expired),
            reused: Some(t.reused),
            reused_older: Some(t.reused_older),
            killed: Some(t.killed),
            overflow: Some(t.overflow),
            open: Some(t.open),
            to_time_wait: None,
            duration_ms: DurationPercentiles {
                p50: Some(t.duration_ms.p50),
                p99: Some(t.duration_ms.p99),
                max: Some(t.duration_ms.max),
            },
        };
        let fin_wait2_side = |t: &SideSummary| TimeWaitSide {
            to_time_wait: Some(t.to_time_wait),
            ..side(t)
        };
        let tw = s.time_wait.available;
        ProbeReport {
            attached: true,
            reason: s
                .time_wait
                .unavailable_reason
                .as_ref()
                .map(|r| format!("TIME_WAIT tracking unavailable: {r}")),
            lost_events: Some(s.lost_events),
            skipped_events: Some(s.skipped_events),
            read_errors: Some(s.read_errors),
            mismatches: Some(s.connections - closer.unknown - expected),
            closer: Some(closer),
            time_wait_client: tw.then(|| side(&s.time_wait.client)),
            time_wait_server: tw.then(|| side(&s.time_wait.server)),
            fin_wait2: tw.then(|| FinWait2 {
                client: fin_wait2_side(&s.time_wait.fin_wait2.client),
                server: fin_wait2_side(&s.time_wait.fin_wait2.server),
            }),
            server_unseen: None,
            time_wait_timeline: tw.then(|| seen.time_wait_timeline.clone()),
        }
    }
}

/// The parts a record is built from.
pub struct RecordInputs<'a> {
    pub config: RunConfig,
    pub driver: &'a DriverResult,
    /// TIME_WAIT sampling over the run, if it ran.
    pub sampled: Option<&'a TwObserved>,
    pub probe: ProbeReport,
    pub kernel: Snapshot,
    pub port_budget: PortBudget,
    pub segment: Option<SegmentRecord>,
}

/// 128 random bits as hex. The standard library's hasher keys are seeded from the operating
/// system's randomness; hashing the clock and the process id with two of them gives an id no
/// other run (on this host or another) will have, without a dependency for it.
fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos());
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

/// How a run is told apart from every other: its `run_id`, or for records written before ids
/// existed, its start time and target.
pub(crate) fn run_identity(run_id: Option<&str>, started_at_unix_ms: u64, target: &str) -> String {
    match run_id {
        Some(id) => format!("run {id}"),
        None => format!("the run started at {started_at_unix_ms} ms against {target}"),
    }
}

impl RunRecord {
    /// The runs this record holds: itself, or for a merged record each of its inputs.
    pub fn runs(&self) -> Vec<String> {
        if self.merged_from.is_empty() {
            vec![run_identity(
                self.run_id.as_deref(),
                self.started_at_unix_ms,
                &self.config.target,
            )]
        } else {
            self.merged_from
                .iter()
                .map(|m| run_identity(m.run_id.as_deref(), m.started_at_unix_ms, &m.target))
                .collect()
        }
    }

    pub fn build(inputs: RecordInputs<'_>) -> Result<RunRecord, ReportError> {
        let RecordInputs {
            config,
            driver: d,
            sampled,
            probe,
            kernel,
            port_budget,
            segment,
        } = inputs;
        let h = &d.histograms;
        // With stages, what each second of the window was to carry on this host.
        let curve = config.curve();
        let share = 1.0 / f64::from(segment.as_ref().map_or(1, |s| s.count));
        let open = config.rate.is_some();
        let intended = |t: f64| {
            let c = curve.as_ref()?;
            let whole = if open {
                c.cumulative(t + 1.0) - c.cumulative(t)
            } else {
                c.at(t + 0.5).ceil()
            };
            Some(whole * share)
        };
        let by_request = match &config.scenario {
            Some(scenario) => scenario
                .requests
                .iter()
                .zip(&d.by_request)
                .map(|(r, fig)| {
                    let figures = RequestFigures {
                        requests: RequestCounts {
                            total: fig.total(),
                            ok: fig.ok,
                            errors: fig.errors.clone(),
                            unfinished: fig.unfinished,
                        },
                        connections_opened: fig.connections_opened,
                        latency_us: Latencies::of(&fig.histograms, d.tls.is_some()),
                        histograms: SerializedHistograms::of(&fig.histograms, d.tls.is_some())?,
                    };
                    Ok((r.name.clone(), figures))
                })
                .collect::<Result<_, ReportError>>()?,
            None => BTreeMap::new(),
        };
        let time_wait = match (&probe.time_wait_client, &probe.time_wait_server, sampled) {
            (Some(client), server, _) => TimeWait {
                source: "probe".into(),
                client: *client,
                server: server.unwrap_or_default(),
                fin_wait2: probe.fin_wait2.unwrap_or_default(),
                server_unseen: probe.server_unseen.clone(),
                timeline: probe.time_wait_timeline.clone().unwrap_or_default(),
            },
            (_, _, Some(s)) if s.error.is_none() => TimeWait {
                source: s.source.to_string(),
                client: sampled_side(&s.client),
                server: sampled_side(&s.server),
                fin_wait2: FinWait2::default(),
                server_unseen: None,
                timeline: s.timeline.clone(),
            },
            _ => TimeWait {
                source: "none".into(),
                client: TimeWaitSide::default(),
                server: TimeWaitSide::default(),
                fin_wait2: FinWait2::default(),
                server_unseen: None,
                timeline: Vec::new(),
            },
        };
        Ok(RunRecord {
            schema: SCHEMA.to_string(),
            loadprobe_version: env!("CARGO_PKG_VERSION").to_string(),
            run_id: Some(new_run_id()),
            started_at_unix_ms: d
                .started_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |t| t.as_millis() as u64),
            config,
            duration_s: d.elapsed.as_secs_f64(),
            interrupted: d.interrupted,
            incomplete: None,
            requests: Requests {
                total: d.total,
                ok: d.ok,
                errors: d.errors.clone(),
                dropped: Some(d.dropped),
                unfinished: Some(d.unfinished),
                stale_connection: Some(d.stale_connection),
                retried: Some(d.retried),
            },
            throughput: Throughput {
                rps: d.rps(),
                connections_per_s: d.connections_per_second(),
                timeline: d
                    .timeline
                    .iter()
                    .enumerate()
                    .map(|(t, s)| TimelineSecond {
                        t: t as u64,
                        ok: s.ok,
                        errors: s.errors,
                        error_classes: Some(
                            s.errors_by_class
                                .iter()
                                .map(|(class, n)| (class.name().into_owned(), *n))
                                .collect(),
                        ),
                        connections: s.connections,
                        target: intended(t as f64),
                    })
                    .collect(),
            },
            latency_us: Latencies::of(h, d.tls.is_some()),
            tls: d.tls.as_ref().map(TlsRecord::of),
            connections: Connections {
                opened: d.connections_opened,
                closer: probe.closer.unwrap_or(CloserCounts {
                    unknown: d.connections_opened,
                    ..CloserCounts::default()
                }),
                mismatches: probe.mismatches,
                server_fin_missing: d.server_fin_missing,
            },
            time_wait,
            probe: ProbeStatus {
                attached: probe.attached,
                lost_events: probe.lost_events,
                skipped_events: probe.skipped_events,
                read_errors: probe.read_errors,
                reason: if probe.attached { None } else { probe.reason },
            },
            kernel,
            port_budget,
            histograms: SerializedHistograms::of(h, d.tls.is_some())?,
            by_request,
            repetitions: None,
            merged_from: Vec::new(),
            segment,
            segments: None,
        })
    }
}

/// Sampling sees counts only: entered (approximate: sockets seen in at least one sample),
/// peak and open. The rest needs the probe's events.
fn sampled_side(c: &crate::diag::timewait::TwCount) -> TimeWaitSide {
    TimeWaitSide {
        entered: Some(c.entered),
        peak: Some(c.peak),
        open: Some(c.open),
        ..TimeWaitSide::default()
    }
}

#[cfg(test)]
pub(crate) mod sample;
#[cfg(test)]
mod tests;
