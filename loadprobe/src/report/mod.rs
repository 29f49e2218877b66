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
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::driver::Mode;
use crate::driver::timewait::TwObserved;
use crate::driver::{DriverConfig, DriverResult, Workload};
use crate::kernel::Snapshot;
use crate::probe::session::SessionReport;
use crate::probe::summary::SideSummary;

pub use budget::{PortBudget, PortBudgetInputs};
pub use histograms::{HISTOGRAM_ENCODING, decode_histogram, encode_histogram};
pub use merge::{MergeError, MergedInput, merge};
pub use text::render_text;
pub use write::write_atomic;

/// The schema identifier; bump the suffix on any incompatible change.
pub const SCHEMA: &str = "loadprobe.run/1";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write the run record to {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot serialize the run record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot encode a histogram: {0}")]
    Encode(String),
    #[error("cannot decode a histogram: {0}")]
    Decode(String),
}

/// One run, as written to `--output`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// Always [`SCHEMA`].
    pub schema: String,
    pub loadprobe_version: String,
    /// Wall-clock start of the run (warmup included), milliseconds since the Unix epoch.
    pub started_at_unix_ms: u64,
    pub config: RunConfig,
    /// Length of the measured window, in seconds.
    pub duration_s: f64,
    /// Stopped by SIGINT/SIGTERM before the planned end; the figures cover what ran.
    pub interrupted: bool,
    pub requests: Requests,
    pub throughput: Throughput,
    pub latency_us: Latencies,
    pub connections: Connections,
    pub time_wait: TimeWait,
    pub probe: ProbeStatus,
    pub kernel: Snapshot,
    pub port_budget: PortBudget,
    pub histograms: SerializedHistograms,
    /// `run --repeat N` (or a merge of sequential runs): each repetition's figures by record
    /// path (see [`merge::headline_metrics`]), for `compare` to judge noise. Absent for a
    /// single run; records written before it existed still parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetitions: Option<Vec<BTreeMap<String, f64>>>,
    /// A merged record: each input's start, target and kernel (per-host snapshots). Absent for
    /// a single run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<MergedInput>,
}

/// What was asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunConfig {
    /// `client-close`, `server-close`, `keep-alive` or `reset`.
    pub mode: String,
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
        RunConfig {
            mode: c.mode.as_str().to_string(),
            target: format!("http://{}{}", c.target.addr, c.request.path),
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
            method: c.request.method.clone(),
            path: c.request.path.clone(),
            headers: c
                .request
                .headers
                .iter()
                .map(|(n, v)| format!("{n}: {v}"))
                .collect(),
            body_bytes: c.request.body.len(),
            source_ips: c.source_ips.iter().map(|ip| ip.to_string()).collect(),
            connect_timeout_ms: c.connect_timeout.as_millis() as u64,
            request_timeout_ms: c.request_timeout.as_millis() as u64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Requests {
    pub total: u64,
    pub ok: u64,
    /// Error class → count; classes are listed in docs/run-record.md.
    pub errors: BTreeMap<String, u64>,
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
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct TimelineSecond {
    pub t: u64,
    pub ok: u64,
    pub errors: u64,
    pub connections: u64,
}

/// Summary of one latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
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
    /// Ended early (RST, or the namespace's table flushed).
    pub killed: Option<u64>,
    /// Not created because `tcp_max_tw_buckets` was reached.
    pub overflow: Option<u64>,
    /// Still in TIME_WAIT when the run ended.
    pub open: Option<u64>,
    pub duration_ms: DurationPercentiles,
}

pub use crate::probe::session::TimeWaitPoint;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TimeWait {
    /// `probe`, `sock_diag`, `proc` (/proc/net/tcp*) or `none`.
    pub source: String,
    pub client: TimeWaitSide,
    pub server: TimeWaitSide,
    pub timeline: Vec<TimeWaitPoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeStatus {
    pub attached: bool,
    pub lost_events: Option<u64>,
    /// Tracepoint hits the kernel skipped (see [`crate::probe::Probe::skipped_events`]).
    /// Absent in records written before it existed.
    #[serde(default)]
    pub skipped_events: Option<u64>,
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
    pub closer: Option<CloserCounts>,
    pub mismatches: Option<u64>,
    pub time_wait_client: Option<TimeWaitSide>,
    pub time_wait_server: Option<TimeWaitSide>,
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

    /// What the probe saw over a run of `mode`. Mismatches are connections that closed another
    /// way than the mode asks for (`unknown` ones, still open at the end, are not counted).
    pub fn from_probe(seen: &SessionReport, mode: Mode) -> ProbeReport {
        let s = &seen.summary;
        let count = |name: &str| s.closer.get(name).copied().unwrap_or(0);
        let closer = CloserCounts {
            client: count("client"),
            server: count("server"),
            simultaneous: count("simultaneous"),
            client_reset: count("client-reset"),
            server_reset: count("server-reset"),
            refused: count("refused"),
            unknown: count("unknown"),
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
            killed: Some(t.killed),
            overflow: Some(t.overflow),
            open: Some(t.open),
            duration_ms: DurationPercentiles {
                p50: Some(t.duration_ms.p50),
                p99: Some(t.duration_ms.p99),
                max: Some(t.duration_ms.max),
            },
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
            mismatches: Some(s.connections - closer.unknown - expected),
            closer: Some(closer),
            time_wait_client: tw.then(|| side(&s.time_wait.client)),
            time_wait_server: tw.then(|| side(&s.time_wait.server)),
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
}

impl RunRecord {
    pub fn build(inputs: RecordInputs<'_>) -> Result<RunRecord, ReportError> {
        let RecordInputs {
            config,
            driver: d,
            sampled,
            probe,
            kernel,
            port_budget,
        } = inputs;
        let h = &d.histograms;
        let time_wait = match (&probe.time_wait_client, &probe.time_wait_server, sampled) {
            (Some(client), Some(server), _) => TimeWait {
                source: "probe".into(),
                client: *client,
                server: *server,
                timeline: probe.time_wait_timeline.clone().unwrap_or_default(),
            },
            (_, _, Some(s)) if s.error.is_none() => TimeWait {
                source: s.source.to_string(),
                client: sampled_side(&s.client),
                server: sampled_side(&s.server),
                timeline: s.timeline.clone(),
            },
            _ => TimeWait {
                source: "none".into(),
                client: TimeWaitSide::default(),
                server: TimeWaitSide::default(),
                timeline: Vec::new(),
            },
        };
        Ok(RunRecord {
            schema: SCHEMA.to_string(),
            loadprobe_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_unix_ms: d
                .started_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |t| t.as_millis() as u64),
            config,
            duration_s: d.elapsed.as_secs_f64(),
            interrupted: d.interrupted,
            requests: Requests {
                total: d.total,
                ok: d.ok,
                errors: d.errors.clone(),
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
                        connections: s.connections,
                    })
                    .collect(),
            },
            latency_us: Latencies {
                total: Percentiles::of(&h.total),
                total_uncorrected: Percentiles::of(&h.total_uncorrected),
                connect: Percentiles::of(&h.connect),
                first_byte: Percentiles::of(&h.first_byte),
            },
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
                reason: if probe.attached { None } else { probe.reason },
            },
            kernel,
            port_budget,
            histograms: SerializedHistograms {
                encoding: HISTOGRAM_ENCODING.to_string(),
                total: encode_histogram(&h.total)?,
                total_uncorrected: encode_histogram(&h.total_uncorrected)?,
                connect: encode_histogram(&h.connect)?,
                first_byte: encode_histogram(&h.first_byte)?,
            },
            repetitions: None,
            merged_from: Vec::new(),
        })
    }
}

/// Sampling sees counts only: entered (approximate: sockets seen in at least one sample),
/// peak and open. The rest needs the probe's events.
fn sampled_side(c: &crate::driver::timewait::TwCount) -> TimeWaitSide {
    TimeWaitSide {
        entered: Some(c.entered),
        peak: Some(c.peak),
        open: Some(c.open),
        ..TimeWaitSide::default()
    }
}

#[cfg(test)]
mod tests;
