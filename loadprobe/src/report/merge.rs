//! Merging run records into one: the repetitions of `run --repeat N`, or the same workload run
//! from several hosts (`loadprobe merge`). One implementation for both, so a repeated run and a
//! merged one mean the same thing.
//!
//! Counts are summed and histograms are merged exactly (HdrHistogram addition), so percentiles
//! of the merged record are those of all requests together, not an average of percentiles.
//!
//! Time is where repetitions and hosts differ: repetitions run one after the other, hosts at the
//! same time. Both fall out of one rule: the merged **measured window is the union of the inputs'
//! windows** on the wall clock (`started_at_unix_ms + warmup_s`, for `duration_s`), with the gaps
//! between them left out. Sequential runs add up their durations; simultaneous ones share theirs.
//! `throughput.rps` is then `requests.total / duration_s` either way, and the timelines place
//! each input's seconds on that gap-free axis (simultaneous seconds add up).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    CloserCounts, Connections, DurationPercentiles, FinWait2, HISTOGRAM_ENCODING, Latencies,
    Percentiles, PortBudget, ProbeStatus, RequestCounts, RequestFigures, Requests, RunRecord,
    SCHEMA, START_SKEW_BOUND_MS, SegmentRecord, SegmentSet, SerializedHistograms, Throughput,
    TimeWait, TimeWaitPoint, TimeWaitSide, TimelineSecond, TlsRecord, decode_histogram,
    encode_histogram,
};
use crate::kernel::Snapshot;

/// One input of a merged record: enough to tell the hosts (or repetitions) apart later.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergedInput {
    /// The input's `run_id` (absent for inputs recorded before ids existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub started_at_unix_ms: u64,
    pub duration_s: f64,
    pub target: String,
    pub requests: u64,
    /// That host's kernel and sysctls.
    pub kernel: Snapshot,
    /// Which segment it ran, on which host (absent for a run that was not a segment, and in
    /// older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentRecord>,
    /// That host's own figures, which the whole sums or takes the worst of: ports and
    /// TIME_WAIT are per-host resources. Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostFigures>,
}

/// One input's figures kept beside the merged whole.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostFigures {
    pub connections_opened: u64,
    pub closer: CloserCounts,
    pub errors: BTreeMap<String, u64>,
    pub time_wait_client: Option<u64>,
    pub time_wait_server: Option<u64>,
    pub port_budget: PortBudget,
}

/// How [`merge_with`] treats a set of segments.
#[derive(Debug, Clone, Copy, Default)]
pub struct MergeOptions {
    /// Merge the segments that are there when some are missing (the record says which).
    pub allow_partial: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("nothing to merge")]
    Empty,
    #[error("record {index} has schema {schema:?}, expected {SCHEMA}")]
    Schema { index: usize, schema: String },
    #[error(
        "records are not the same workload: {what} is {first:?} in the first and {other:?} in \
         record {index}"
    )]
    DifferentWorkload {
        what: &'static str,
        first: String,
        other: String,
        index: usize,
    },
    #[error("records {first} and {index} hold the same run ({run}): it would count twice")]
    SameRun {
        first: usize,
        index: usize,
        run: String,
    },
    #[error(
        "record {index} is segment {segment} of {other}, the first is of {count}: not one split"
    )]
    SegmentCount {
        index: usize,
        segment: u32,
        other: u32,
        count: u32,
    },
    #[error("records {first} and {index} are both segment {segment}: it would count twice")]
    SegmentTwice {
        first: usize,
        index: usize,
        segment: u32,
    },
    #[error(
        "segment(s) {} of {count} missing (merge --allow-partial merges the others)",
        join(.missing)
    )]
    SegmentsMissing { missing: Vec<u32>, count: u32 },
    #[error("record {index} is not a segment, record {first} is: not one split")]
    NotASegment { index: usize, first: usize },
    #[error("record {index}: histogram {name}")]
    Histogram {
        index: usize,
        name: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Merges `records` (at least one) into one record; see the module doc for what that means.
///
/// The result keeps the first record's `config` and `kernel` (every input's kernel is kept in
/// `merged_from`), the worst `port_budget` of the inputs (ports are a per-host resource: the
/// tightest host is the one that runs out), and `repetitions` only when no two inputs overlap
/// in time: sequential runs are repetitions of one workload, simultaneous hosts are parts of one.
///
/// These are repetitions of one run (`run --repeat`, `tune validate`): a segment repeated is
/// still that segment. Records of several hosts go through [`merge_with`].
pub fn merge(records: &[RunRecord]) -> Result<RunRecord, MergeError> {
    merge_inner(records, None)
}

/// [`merge`] of the records of several hosts (`loadprobe merge`); when they are segments of one
/// split workload (`run --segment K/N`), the set is checked: the same split, each segment once,
/// all of them (unless [`MergeOptions::allow_partial`]), the same workload; the start skew of
/// the hosts is kept.
pub fn merge_with(records: &[RunRecord], options: MergeOptions) -> Result<RunRecord, MergeError> {
    merge_inner(records, Some(options))
}

fn merge_inner(
    records: &[RunRecord],
    hosts: Option<MergeOptions>,
) -> Result<RunRecord, MergeError> {
    let first = records.first().ok_or(MergeError::Empty)?;
    let segments = match hosts {
        Some(options) => segment_set(records, options)?,
        None => None,
    };
    if records.len() == 1 && segments.is_none() {
        return Ok(first.clone());
    }
    // Repetitions of one segment are that segment (each started as late as it did: the
    // first one's lateness is the one the agreed start speaks of); anything else is not one.
    let part = |r: &RunRecord| r.segment.as_ref().map(|s| (s.index, s.count));
    let segment = match hosts {
        None if records.iter().all(|r| part(r) == part(first)) => first.segment.clone(),
        _ => None,
    };
    for (index, r) in records.iter().enumerate() {
        if r.schema != SCHEMA {
            return Err(MergeError::Schema {
                index,
                schema: r.schema.clone(),
            });
        }
        for (what, a, b) in [
            (
                "config.mode",
                first.config.mode.as_str(),
                r.config.mode.as_str(),
            ),
            ("config.model", &first.config.model, &r.config.model),
            ("the protocol", scheme(first), scheme(r)),
        ] {
            if a != b {
                return Err(MergeError::DifferentWorkload {
                    what,
                    first: a.to_string(),
                    other: b.to_string(),
                    index,
                });
            }
        }
    }
    // A split workload's segments must be of one workload to the letter; runs merged otherwise
    // (repetitions, hosts given loads of their own) only of one kind.
    if segments.is_some() {
        for (index, r) in records.iter().enumerate() {
            let (a, b) = (workload(&first.config), workload(&r.config));
            if a != b {
                return Err(MergeError::DifferentWorkload {
                    what: "the workload (users, rate, requests, duration, warmup, think time, scenario)",
                    first: a,
                    other: b,
                    index,
                });
            }
        }
    }
    let mut seen = BTreeMap::new();
    for (index, r) in records.iter().enumerate() {
        for run in r.runs() {
            if let Some(&first) = seen.get(&run) {
                if first != index {
                    return Err(MergeError::SameRun { first, index, run });
                }
            }
            seen.insert(run, index);
        }
    }
    // Per-request figures add up by name, so every input must have the same names (or none).
    let names = |r: &RunRecord| r.by_request.keys().cloned().collect::<Vec<_>>().join(", ");
    for (index, r) in records.iter().enumerate() {
        if names(r) != names(first) {
            let shown = |n: String| if n.is_empty() { "none".to_string() } else { n };
            return Err(MergeError::DifferentWorkload {
                what: "the scenario's request names",
                first: shown(names(first)),
                other: shown(names(r)),
                index,
            });
        }
    }
    let axis = Axis::new(records);
    let histograms = merge_histograms(records.iter().map(|r| &r.histograms))?;
    // Records with and without TLS merge: the handshakes are those of the records that had them.
    let tls =
        records
            .iter()
            .filter_map(|r| r.tls.as_ref())
            .fold(None, |sum: Option<TlsRecord>, t| {
                let mut sum = sum.unwrap_or_default();
                sum.add(t);
                Some(sum)
            });
    let sum = |f: &dyn Fn(&RunRecord) -> u64| total(records.iter().map(f));
    let all = |f: &dyn Fn(&RunRecord) -> Option<u64>| total_known(records.iter().map(f));

    let total = sum(&|r| r.requests.total);
    let opened = sum(&|r| r.connections.opened);
    let duration_s = axis.duration_s;
    let per_s = |n: u64| {
        if duration_s > 0.0 {
            n as f64 / duration_s
        } else {
            0.0
        }
    };
    let mut errors = BTreeMap::new();
    for r in records {
        for (class, n) in &r.requests.errors {
            let e = errors.entry(class.clone()).or_insert(0u64);
            *e = e.saturating_add(*n);
        }
    }
    let closer = records.iter().fold(CloserCounts::default(), |a, r| {
        add_closer(a, r.connections.closer)
    });
    let sources: Vec<&str> = records
        .iter()
        .map(|r| r.time_wait.source.as_str())
        .collect();
    let tw_source = if sources.iter().all(|s| *s == sources[0]) {
        sources[0].to_string()
    } else {
        // Figures from different sources do not add up to either; say so.
        "mixed".to_string()
    };
    let merged_from = records
        .iter()
        .flat_map(|r| {
            if r.merged_from.is_empty() {
                vec![MergedInput {
                    run_id: r.run_id.clone(),
                    started_at_unix_ms: r.started_at_unix_ms,
                    duration_s: r.duration_s,
                    target: r.config.target.clone(),
                    requests: r.requests.total,
                    kernel: r.kernel.clone(),
                    segment: r.segment.clone(),
                    host: Some(HostFigures {
                        connections_opened: r.connections.opened,
                        closer: r.connections.closer,
                        errors: r.requests.errors.clone(),
                        time_wait_client: r.time_wait.client.entered,
                        time_wait_server: r.time_wait.server.entered,
                        port_budget: r.port_budget.clone(),
                    }),
                }]
            } else {
                r.merged_from.clone()
            }
        })
        .collect();
    let repetitions = (!axis.overlap).then(|| {
        records
            .iter()
            .flat_map(|r| match &r.repetitions {
                Some(reps) => reps.clone(),
                None => vec![headline_metrics(r)],
            })
            .collect()
    });

    Ok(RunRecord {
        schema: SCHEMA.to_string(),
        loadprobe_version: first.loadprobe_version.clone(),
        run_id: None,
        started_at_unix_ms: records
            .iter()
            .map(|r| r.started_at_unix_ms)
            .min()
            .unwrap_or(first.started_at_unix_ms),
        config: first.config.clone(),
        duration_s,
        interrupted: records.iter().any(|r| r.interrupted),
        incomplete: records.iter().find_map(|r| r.incomplete.clone()),
        requests: Requests {
            total,
            ok: sum(&|r| r.requests.ok),
            errors,
            dropped: all(&|r| r.requests.dropped),
            unfinished: all(&|r| r.requests.unfinished),
            stale_connection: all(&|r| r.requests.stale_connection),
            retried: all(&|r| r.requests.retried),
        },
        throughput: Throughput {
            rps: per_s(total),
            connections_per_s: per_s(opened),
            timeline: axis.throughput(records),
        },
        latency_us: latencies(&histograms),
        tls,
        connections: Connections {
            opened,
            closer,
            mismatches: all(&|r| r.connections.mismatches),
            server_fin_missing: sum(&|r| r.connections.server_fin_missing),
        },
        time_wait: TimeWait {
            source: tw_source,
            client: axis.time_wait_side(records, |t| &t.client),
            server: axis.time_wait_side(records, |t| &t.server),
            fin_wait2: FinWait2 {
                client: axis.time_wait_side(records, |t| &t.fin_wait2.client),
                server: axis.time_wait_side(records, |t| &t.fin_wait2.server),
            },
            server_unseen: records
                .iter()
                .find_map(|r| r.time_wait.server_unseen.clone()),
            timeline: axis.time_wait_timeline(records),
        },
        probe: ProbeStatus {
            attached: records.iter().all(|r| r.probe.attached),
            lost_events: all(&|r| r.probe.lost_events),
            skipped_events: all(&|r| r.probe.skipped_events),
            read_errors: all(&|r| r.probe.read_errors),
            reason: records.iter().find_map(|r| r.probe.reason.clone()),
        },
        kernel: first.kernel.clone(),
        port_budget: worst_port_budget(records).clone(),
        histograms: serialized(&histograms)?,
        by_request: merge_by_request(records)?,
        repetitions,
        merged_from,
        segment,
        segments,
    })
}

/// The segment set of `records`, checked; `None` when they are not segments.
fn segment_set(
    records: &[RunRecord],
    options: MergeOptions,
) -> Result<Option<SegmentSet>, MergeError> {
    // A merged record of several hosts: its segments are its inputs'.
    let parts: Vec<(usize, Option<&SegmentRecord>, u64)> = records
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            // A record of one segment (repeated or not) is that segment.
            if r.merged_from.is_empty() || r.segment.is_some() {
                vec![(i, r.segment.as_ref(), r.started_at_unix_ms)]
            } else {
                r.merged_from
                    .iter()
                    .map(|m| (i, m.segment.as_ref(), m.started_at_unix_ms))
                    .collect()
            }
        })
        .collect();
    let Some(&(first, Some(one), _)) = parts.iter().find(|p| p.1.is_some_and(|s| s.count > 1))
    else {
        return Ok(None);
    };
    let count = one.count;
    let mut at = BTreeMap::new();
    for &(index, segment, _) in &parts {
        let segment = segment.ok_or(MergeError::NotASegment { index, first })?;
        if segment.count != count {
            return Err(MergeError::SegmentCount {
                index,
                segment: segment.index,
                other: segment.count,
                count,
            });
        }
        if let Some(&before) = at.get(&segment.index) {
            return Err(MergeError::SegmentTwice {
                first: before,
                index,
                segment: segment.index,
            });
        }
        at.insert(segment.index, index);
    }
    let missing: Vec<u32> = (1..=count).filter(|k| !at.contains_key(k)).collect();
    if !missing.is_empty() && !options.allow_partial {
        return Err(MergeError::SegmentsMissing { missing, count });
    }
    let starts = parts.iter().map(|p| p.2);
    let skew = starts.clone().max().unwrap_or(0) - starts.min().unwrap_or(0);
    Ok(Some(SegmentSet {
        count,
        merged: at.into_keys().collect(),
        missing,
        start_skew_ms: skew,
        skewed: skew > START_SKEW_BOUND_MS,
    }))
}

/// What a segment of a split workload must share with the others: the load, and a scenario's
/// requests and seed (so the segments' draws are parts of one sequence).
fn workload(c: &super::RunConfig) -> String {
    let scenario = c.scenario.as_ref().map(|s| {
        let requests: Vec<String> = s
            .requests
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} weight {} {}",
                    r.name, r.method, r.path, r.weight, r.mode
                )
            })
            .collect();
        format!(", scenario seed {}: {}", s.seed, requests.join("; "))
    });
    format!(
        "users {:?}, rate {:?}, requests {:?}, duration {:?} s, warmup {} s, think time {:?} ms{}",
        c.users,
        c.rate,
        c.requests,
        c.duration_s,
        c.warmup_s,
        c.think_time_ms,
        scenario.unwrap_or_default()
    )
}

/// Plain HTTP and HTTPS runs are not one workload: a handshake is most of what a new
/// connection costs.
fn scheme(r: &RunRecord) -> &'static str {
    if r.config.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

fn join(indexes: &[u32]) -> String {
    let shown: Vec<String> = indexes.iter().map(u32::to_string).collect();
    shown.join(", ")
}

/// The per-repetition figures kept in `repetitions`: every number of the record's measured
/// sections (`duration_s`, `requests`, `throughput`, `latency_us`, `connections`, `time_wait`,
/// `probe`, `by_request`), keyed by its record path (`latency_us.total.p99`), plus
/// `requests.errors` (and each request's), the sum of all error classes. Unknown (null) figures are left out.
pub fn headline_metrics(r: &RunRecord) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(v) = serde_json::to_value(r) else {
        return out;
    };
    for key in [
        "duration_s",
        "requests",
        "throughput",
        "latency_us",
        "connections",
        "time_wait",
        "probe",
        "by_request",
    ] {
        if let Some(section) = v.get(key) {
            flatten(key, section, &mut out);
        }
    }
    out.insert(
        "requests.errors".to_string(),
        total(r.requests.errors.values().copied()) as f64,
    );
    for (name, f) in &r.by_request {
        out.insert(
            format!("by_request.{name}.requests.errors"),
            total(f.requests.errors.values().copied()) as f64,
        );
    }
    out
}

fn flatten(path: &str, v: &Value, out: &mut BTreeMap<String, f64>) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.insert(path.to_string(), f);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{path}.{k}"), v, out);
            }
        }
        // Timelines (arrays), strings, booleans and nulls are not headline figures.
        _ => {}
    }
}

/// Counts added up; a broken record's huge counts saturate instead of overflowing.
fn total(counts: impl Iterator<Item = u64>) -> u64 {
    counts.fold(0, u64::saturating_add)
}

/// Like [`total`], but unknown (None) when any input does not know the count.
fn total_known(mut counts: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    counts.try_fold(0u64, |a, b| Some(a.saturating_add(b?)))
}

/// Milliseconds on the wall clock as a signed number (saturating: they are far from the limit).
fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn add_closer(a: CloserCounts, b: CloserCounts) -> CloserCounts {
    CloserCounts {
        client: a.client.saturating_add(b.client),
        server: a.server.saturating_add(b.server),
        simultaneous: a.simultaneous.saturating_add(b.simultaneous),
        client_reset: a.client_reset.saturating_add(b.client_reset),
        server_reset: a.server_reset.saturating_add(b.server_reset),
        refused: a.refused.saturating_add(b.refused),
        unknown: a.unknown.saturating_add(b.unknown),
    }
}

/// Each request's figures of `records` (which have the same names) added up.
fn merge_by_request(records: &[RunRecord]) -> Result<BTreeMap<String, RequestFigures>, MergeError> {
    let Some(first) = records.first() else {
        return Ok(BTreeMap::new());
    };
    first
        .by_request
        .keys()
        .map(|name| {
            let parts: Vec<&RequestFigures> = records
                .iter()
                .filter_map(|r| r.by_request.get(name))
                .collect();
            let sum = |f: &dyn Fn(&RequestFigures) -> u64| total(parts.iter().map(|p| f(p)));
            let mut errors = BTreeMap::new();
            for p in &parts {
                for (class, n) in &p.requests.errors {
                    let e = errors.entry(class.clone()).or_insert(0u64);
                    *e = e.saturating_add(*n);
                }
            }
            let h = merge_histograms(parts.iter().map(|p| &p.histograms))?;
            let figures = RequestFigures {
                requests: RequestCounts {
                    total: sum(&|p| p.requests.total),
                    ok: sum(&|p| p.requests.ok),
                    errors,
                    unfinished: sum(&|p| p.requests.unfinished),
                },
                connections_opened: sum(&|p| p.connections_opened),
                latency_us: latencies(&h),
                histograms: serialized(&h)?,
            };
            Ok((name.clone(), figures))
        })
        .collect()
}

fn latencies(h: &Merged) -> Latencies {
    Latencies {
        total: Percentiles::of(&h.parts[0]),
        total_uncorrected: Percentiles::of(&h.parts[1]),
        connect: Percentiles::of(&h.parts[2]),
        first_byte: Percentiles::of(&h.parts[3]),
        tls_handshake: h.tls_handshake.as_ref().map(Percentiles::of),
    }
}

fn serialized(h: &Merged) -> Result<SerializedHistograms, MergeError> {
    Ok(SerializedHistograms {
        encoding: HISTOGRAM_ENCODING.to_string(),
        total: encode(&h.parts[0])?,
        total_uncorrected: encode(&h.parts[1])?,
        connect: encode(&h.parts[2])?,
        first_byte: encode(&h.parts[3])?,
        tls_handshake: h.tls_handshake.as_ref().map(encode).transpose()?,
    })
}

/// The inputs' histograms, each merged.
struct Merged {
    /// total, total_uncorrected, connect, first_byte.
    parts: [Histogram<u64>; 4],
    /// The handshakes of the inputs that spoke TLS: records with and without TLS merge, and
    /// the merged handshakes are those of the ones that had them.
    tls_handshake: Option<Histogram<u64>>,
}

fn merge_histograms<'a>(
    inputs: impl Iterator<Item = &'a SerializedHistograms>,
) -> Result<Merged, MergeError> {
    let new = || {
        Histogram::<u64>::new(3).map_err(|e| MergeError::Histogram {
            index: 0,
            name: "total",
            source: e.into(),
        })
    };
    let mut out = Merged {
        parts: [new()?, new()?, new()?, new()?],
        tls_handshake: None,
    };
    for (index, h) in inputs.enumerate() {
        let parts = [
            ("total", &h.total),
            ("total_uncorrected", &h.total_uncorrected),
            ("connect", &h.connect),
            ("first_byte", &h.first_byte),
        ];
        let err = |name, source: Box<dyn std::error::Error + Send + Sync>| MergeError::Histogram {
            index,
            name,
            source,
        };
        for (merged, (name, encoded)) in out.parts.iter_mut().zip(parts) {
            let decoded = decode_histogram(encoded).map_err(|e| err(name, e.into()))?;
            merged.add(&decoded).map_err(|e| err(name, e.into()))?;
        }
        if let Some(encoded) = &h.tls_handshake {
            let name = "tls_handshake";
            let decoded = decode_histogram(encoded).map_err(|e| err(name, e.into()))?;
            // A decoded histogram keeps its range: the sum starts empty and grows, as the
            // others do, so a later input's longer handshakes fit.
            let merged = match &mut out.tls_handshake {
                Some(m) => m,
                None => out.tls_handshake.insert(new()?),
            };
            merged.add(&decoded).map_err(|e| err(name, e.into()))?;
        }
    }
    Ok(out)
}

fn encode(h: &Histogram<u64>) -> Result<String, MergeError> {
    encode_histogram(h).map_err(|e| MergeError::Histogram {
        index: 0,
        name: "merged",
        source: e.into(),
    })
}

/// Ports run out per client host, so the merged budget is the input's closest to running out:
/// EADDRNOTAVAIL seen first, then the least headroom.
fn worst_port_budget(records: &[RunRecord]) -> &super::PortBudget {
    let key = |r: &&RunRecord| {
        let b = &r.port_budget;
        (
            std::cmp::Reverse(b.eaddrnotavail),
            b.headroom.unwrap_or(f64::INFINITY),
        )
    };
    let worst = records
        .iter()
        .min_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
        })
        .unwrap_or(&records[0]);
    &worst.port_budget
}

/// The merged time axis: the union of the inputs' measured windows with the gaps removed.
struct Axis {
    /// Per input: where its measured window starts on the merged axis, in milliseconds.
    offset_ms: Vec<i64>,
    /// Per input: its window start on the wall clock, in milliseconds.
    window_ms: Vec<i64>,
    /// Per input: the union segment its window falls in.
    segment: Vec<usize>,
    segments: usize,
    duration_s: f64,
    /// Some windows overlap (simultaneous hosts).
    overlap: bool,
}

impl Axis {
    fn new(records: &[RunRecord]) -> Axis {
        let windows: Vec<(i64, i64)> = records
            .iter()
            .map(|r| {
                let start =
                    ms(r.started_at_unix_ms).saturating_add((r.config.warmup_s * 1e3) as i64);
                (
                    start,
                    start.saturating_add((r.duration_s.max(0.0) * 1e3) as i64),
                )
            })
            .collect();
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by_key(|&i| windows[i]);
        let mut offset_ms = vec![0; records.len()];
        let mut segment = vec![0; records.len()];
        let mut overlap = false;
        // The segment being built: wall-clock start and end, and its start on the merged axis.
        let mut current: Option<(i64, i64, i64)> = None;
        let mut segments = 0;
        let mut covered = 0i64;
        for &i in &order {
            let (start, end) = windows[i];
            current = match current {
                Some((s, e, at)) if start < e => {
                    overlap = true;
                    Some((s, e.max(end), at))
                }
                Some((s, e, at)) => {
                    covered = at.saturating_add(e.saturating_sub(s));
                    segments += 1;
                    Some((start, end, covered))
                }
                None => Some((start, end, 0)),
            };
            if let Some((s, _, at)) = current {
                offset_ms[i] = at.saturating_add(start.saturating_sub(s));
                segment[i] = segments;
            }
        }
        if let Some((s, e, at)) = current {
            covered = at.saturating_add(e.saturating_sub(s));
            segments += 1;
        }
        Axis {
            offset_ms,
            window_ms: windows.iter().map(|w| w.0).collect(),
            segment,
            segments,
            duration_s: covered as f64 / 1e3,
            overlap,
        }
    }

    /// Each input's per-second completions, placed at their second on the merged axis.
    fn throughput(&self, records: &[RunRecord]) -> Vec<TimelineSecond> {
        let mut seconds: BTreeMap<u64, TimelineSecond> = BTreeMap::new();
        let mut targets: BTreeMap<u64, Option<f64>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            let base = (self.offset_ms[i] as f64 / 1e3).round().max(0.0) as u64;
            for s in &r.throughput.timeline {
                let t = base.saturating_add(s.t);
                let e = seconds.entry(t).or_insert_with(|| empty_second(t));
                e.ok = e.ok.saturating_add(s.ok);
                e.errors = e.errors.saturating_add(s.errors);
                // By class only where every input that second has the split.
                e.error_classes = e.error_classes.take().zip(s.error_classes.as_ref()).map(
                    |(mut mine, theirs)| {
                        for (class, n) in theirs {
                            let c = mine.entry(class.clone()).or_insert(0);
                            *c = c.saturating_add(*n);
                        }
                        mine
                    },
                );
                e.connections = e.connections.saturating_add(s.connections);
                // The intended load adds up over the hosts of a second, where all of them say.
                let known = targets.entry(t).or_insert(Some(0.0));
                *known = known.zip(s.target).map(|(a, b)| a + b);
            }
        }
        for (t, target) in targets {
            if let Some(s) = seconds.get_mut(&t) {
                s.target = target;
            }
        }
        fill_seconds(seconds)
    }

    /// TIME_WAIT counts per second of the merged axis: each input's last sample in that second,
    /// added up over inputs (simultaneous hosts each hold their own sockets); FIN_WAIT2 counts
    /// only where every input sampled that second has them. Samples from the warmup are left
    /// out, like the warmup's requests.
    fn time_wait_timeline(&self, records: &[RunRecord]) -> Vec<TimeWaitPoint> {
        let add = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| a.saturating_add(b));
        let mut merged: BTreeMap<u64, TimeWaitPoint> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            let mut last: BTreeMap<u64, TimeWaitPoint> = BTreeMap::new();
            for p in &r.time_wait.timeline {
                let wall = ms(r.started_at_unix_ms).saturating_add(ms(p.t_ms));
                let into_window = wall.saturating_sub(self.window_ms[i]);
                if into_window < 0 {
                    continue;
                }
                let second = (self.offset_ms[i].saturating_add(into_window) / 1000) as u64;
                last.insert(second, *p);
            }
            for (second, p) in last {
                let e = merged.entry(second).or_insert(TimeWaitPoint {
                    t_ms: second.saturating_mul(1000),
                    fin_wait2_client: Some(0),
                    fin_wait2_server: Some(0),
                    ..TimeWaitPoint::default()
                });
                e.client = e.client.saturating_add(p.client);
                e.server = e.server.saturating_add(p.server);
                e.fin_wait2_client = add(e.fin_wait2_client, p.fin_wait2_client);
                e.fin_wait2_server = add(e.fin_wait2_server, p.fin_wait2_server);
            }
        }
        merged.into_values().collect()
    }

    /// One side's TIME_WAIT: counts summed (null if any input lacks them); the peak is the
    /// largest, over union segments, of the sum of the peaks in that segment (sequential runs:
    /// the largest peak; simultaneous ones: an upper bound, as their peaks need not coincide).
    /// Lifetime percentiles cannot be merged from percentiles: the largest is kept, an upper
    /// bound that is exact when every input's sockets sat out the full timeout.
    fn time_wait_side(
        &self,
        records: &[RunRecord],
        side: impl Fn(&TimeWait) -> &TimeWaitSide,
    ) -> TimeWaitSide {
        let sides: Vec<&TimeWaitSide> = records.iter().map(|r| side(&r.time_wait)).collect();
        let sum = |f: fn(&TimeWaitSide) -> Option<u64>| total_known(sides.iter().map(|s| f(s)));
        let max = |f: fn(&TimeWaitSide) -> Option<u64>| -> Option<u64> {
            total_known(sides.iter().map(|s| f(s)))?;
            sides.iter().filter_map(|s| f(s)).max()
        };
        let mut peak_by_segment = vec![Some(0u64); self.segments];
        for (i, s) in sides.iter().enumerate() {
            let slot = &mut peak_by_segment[self.segment[i]];
            *slot = slot.zip(s.peak).map(|(a, b)| a.saturating_add(b));
        }
        let peak = peak_by_segment
            .into_iter()
            .collect::<Option<Vec<u64>>>()
            .and_then(|p| p.into_iter().max());
        TimeWaitSide {
            entered: sum(|s| s.entered),
            peak,
            expired: sum(|s| s.expired),
            reused: sum(|s| s.reused),
            reused_older: sum(|s| s.reused_older),
            killed: sum(|s| s.killed),
            overflow: sum(|s| s.overflow),
            open: sum(|s| s.open),
            to_time_wait: sum(|s| s.to_time_wait),
            duration_ms: DurationPercentiles {
                p50: max(|s| s.duration_ms.p50),
                p99: max(|s| s.duration_ms.p99),
                max: max(|s| s.duration_ms.max),
            },
        }
    }
}

/// Seconds with no completions in any input still get an entry, so `t` counts 0, 1, 2, … .
/// Inputs whose seconds are far apart (not a timeline of one entry per second) are kept as they
/// are rather than padded, so a broken record cannot make the merge allocate without bound.
fn fill_seconds(seconds: BTreeMap<u64, TimelineSecond>) -> Vec<TimelineSecond> {
    let Some(&last) = seconds.keys().next_back() else {
        return Vec::new();
    };
    if last > 2 * seconds.len() as u64 + 16 {
        return seconds.into_values().collect();
    }
    (0..=last)
        .map(|t| seconds.get(&t).cloned().unwrap_or_else(|| empty_second(t)))
        .collect()
}

/// Second `t` with nothing completed in it: no errors of any class either.
fn empty_second(t: u64) -> TimelineSecond {
    TimelineSecond {
        t,
        error_classes: Some(BTreeMap::new()),
        ..TimelineSecond::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample::record;
    use crate::report::{ScenarioConfig, ScenarioRequest};

    use crate::model::Mode;

    fn recorded(encoded: &str) -> Vec<(u64, u64)> {
        decode_histogram(encoded)
            .unwrap()
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    fn latencies(n: u64) -> Vec<u64> {
        // A spread with a tail, so percentiles differ between the halves.
        (1..=n).map(|i| 100 + (i * 37) % 900 + i * i / 50).collect()
    }

    #[test]
    fn two_halves_merge_into_the_whole() {
        let all = latencies(1000);
        let whole = record(Mode::ClientClose, &all, 1_000_000, 2);
        let first = record(Mode::ClientClose, &all[..500], 1_000_000, 1);
        let second = record(Mode::ClientClose, &all[500..], 1_001_000, 1);
        let merged = merge(&[first.clone(), second.clone()]).unwrap();

        assert_eq!(merged.requests, whole.requests);
        assert_eq!(merged.connections, whole.connections);
        assert_eq!(merged.duration_s, 2.0);
        assert_eq!(merged.throughput.rps, whole.throughput.rps);
        assert_eq!(merged.latency_us, whole.latency_us);
        let h = |r: &RunRecord| {
            let h = &r.histograms;
            [&h.total, &h.total_uncorrected, &h.connect, &h.first_byte].map(|e| recorded(e))
        };
        assert_eq!(h(&merged), h(&whole));
        assert_eq!(
            merged.time_wait.client.entered,
            whole.time_wait.client.entered
        );
        // One after the other: the peak is the larger one, not the sum.
        assert_eq!(merged.time_wait.client.peak, Some(500));
        // Sequential inputs are repetitions, each with its own figures.
        let reps = merged.repetitions.as_ref().unwrap();
        assert_eq!(reps.len(), 2);
        assert_eq!(reps[0]["requests.total"], 500.0);
        assert_eq!(
            reps[1]["latency_us.total.p99"],
            second.latency_us.total.p99 as f64
        );
        assert_eq!(merged.merged_from.len(), 2);
        // The timeline continues where the first input ended.
        let t: Vec<(u64, u64)> = merged
            .throughput
            .timeline
            .iter()
            .map(|s| (s.t, s.ok))
            .collect();
        assert_eq!(t, vec![(0, 500), (1, 500)]);
    }

    #[test]
    fn per_second_classes_and_fin_wait2_add_up_where_every_input_has_them() {
        let mut a = record(Mode::ClientClose, &latencies(300), 5_000_000, 2);
        let mut b = record(Mode::ClientClose, &latencies(100), 5_000_000, 2);
        let classes =
            |pairs: &[(&str, u64)]| Some(pairs.iter().map(|(c, n)| (c.to_string(), *n)).collect());
        a.throughput.timeline[1].error_classes = classes(&[("ECONNRESET", 3), ("timeout", 1)]);
        b.throughput.timeline[1].error_classes = classes(&[("ECONNRESET", 2)]);
        for (r, n) in [(&mut a, 7), (&mut b, 5)] {
            for p in &mut r.time_wait.timeline {
                p.fin_wait2_client = Some(n);
            }
        }
        let merged = merge(&[a.clone(), b.clone()]).unwrap();
        let t = &merged.throughput.timeline;
        assert_eq!(t[0].error_classes, Some(BTreeMap::new()));
        assert_eq!(
            t[1].error_classes,
            classes(&[("ECONNRESET", 5), ("timeout", 1)])
        );
        let tw = &merged.time_wait.timeline;
        assert!(!tw.is_empty());
        assert!(tw.iter().all(|p| p.fin_wait2_client == Some(12)), "{tw:?}");
        assert!(tw.iter().all(|p| p.fin_wait2_server == Some(0)), "{tw:?}");

        // An input written before the split: unknown, not a smaller count.
        for s in &mut b.throughput.timeline {
            s.error_classes = None;
        }
        for p in &mut b.time_wait.timeline {
            p.fin_wait2_client = None;
        }
        let merged = merge(&[a, b]).unwrap();
        assert!(
            merged
                .throughput
                .timeline
                .iter()
                .all(|s| s.error_classes.is_none())
        );
        assert!(
            merged
                .time_wait
                .timeline
                .iter()
                .all(|p| p.fin_wait2_client.is_none())
        );
    }

    #[test]
    fn simultaneous_hosts_share_their_window() {
        let a = record(Mode::ServerClose, &latencies(300), 5_000_000, 2);
        let b = record(Mode::ServerClose, &latencies(100), 5_000_200, 2);
        let merged = merge(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(merged.requests.total, 400);
        // The union of [0, 2 s] and [0.2 s, 2.2 s] is 2.2 s long.
        assert!(
            (merged.duration_s - 2.2).abs() < 1e-9,
            "{}",
            merged.duration_s
        );
        assert!((merged.throughput.rps - 400.0 / 2.2).abs() < 1e-9);
        assert_eq!(merged.time_wait.server.peak, Some(400));
        assert_eq!(merged.repetitions, None, "hosts are parts, not repetitions");
        assert_eq!(merged.throughput.timeline[0].ok, 150 + 50);
        assert_eq!(merged.merged_from[1].requests, 100);
    }

    /// An https record's handshakes merge with another's, whichever holds the longer ones (a
    /// decoded histogram keeps its range, so the sum must not start as one); a plain record
    /// is another protocol and does not join them; a record written before TLS existed (no
    /// `tls` fields at all) still reads.
    #[test]
    fn https_records_merge_their_handshakes() {
        let plain = record(Mode::ClientClose, &latencies(100), 1_000_000, 1);
        let https = |values: &[u64], started: u64, id: &str| {
            let mut r = record(Mode::ClientClose, &latencies(100), started, 1);
            let mut h = Histogram::<u64>::new(3).unwrap();
            for v in values {
                h.record(*v).unwrap();
            }
            r.run_id = Some(id.into());
            r.histograms.tls_handshake = Some(encode_histogram(&h).unwrap());
            r.latency_us.tls_handshake = Some(Percentiles::of(&h));
            r.config.tls = Some(crate::report::TlsConfigRecord {
                sni: Some("localhost".into()),
                trust: "cacert".into(),
                cacert: Some("ca.pem".into()),
                client_cert: false,
                resume: false,
            });
            r.tls = Some(TlsRecord {
                full_handshakes: values.len() as u64,
                resumed_handshakes: 0,
                versions: BTreeMap::from([("TLSv1_3".to_string(), values.len() as u64)]),
                cipher_suites: BTreeMap::from([(
                    "TLS13_AES_128_GCM_SHA256".to_string(),
                    values.len() as u64,
                )]),
            });
            r
        };
        let short = https(&[300, 400, 500], 1_001_000, "short");
        let long = https(&[250_000, 276_000], 1_002_000, "long");
        for order in [[&short, &long], [&long, &short]] {
            let merged = merge(&[order[0].clone(), order[1].clone()]).unwrap();
            assert_eq!(merged.tls.as_ref().map(|t| t.full_handshakes), Some(5));
            let l = merged.latency_us.tls_handshake.unwrap();
            assert_eq!((l.count, l.max >= 276_000), (5, true));
            let counts = recorded(merged.histograms.tls_handshake.as_deref().unwrap());
            assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 5);
        }
        let err = merge(&[plain.clone(), short.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the protocol") && err.contains("https"),
            "{err}"
        );

        let mut old = serde_json::to_value(&plain).unwrap();
        for (parent, key) in [("", "tls"), ("latency_us", "tls_handshake")] {
            let object = if parent.is_empty() {
                &mut old
            } else {
                &mut old[parent]
            };
            assert!(object.as_object_mut().unwrap().remove(key).is_none());
        }
        let read: RunRecord = serde_json::from_value(old).unwrap();
        assert_eq!(read.tls, None);
        assert!(merge(&[read]).unwrap().histograms.tls_handshake.is_none());
    }

    #[test]
    fn different_workloads_do_not_merge() {
        let a = record(Mode::ClientClose, &[100], 0, 1);
        let b = record(Mode::ServerClose, &[100], 2_000, 1);
        let err = merge(&[a, b]).unwrap_err().to_string();
        assert!(err.contains("config.mode"), "{err}");
        assert!(matches!(merge(&[]), Err(MergeError::Empty)));
    }

    #[test]
    fn merging_merged_records_keeps_every_input() {
        let r = |t| record(Mode::ClientClose, &latencies(10), t, 1);
        let ab = merge(&[r(0), r(10_000)]).unwrap();
        let abc = merge(&[ab, r(20_000)]).unwrap();
        assert_eq!(abc.merged_from.len(), 3);
        assert_eq!(abc.repetitions.as_ref().unwrap().len(), 3);
        assert_eq!(abc.requests.total, 30);
    }

    /// Segment `index` of `count`, started at `t` ms.
    fn segment(index: u32, count: u32, t: u64) -> RunRecord {
        let mut r = record(Mode::ClientClose, &latencies(10), t, 1);
        r.segment = Some(SegmentRecord {
            index,
            count,
            host: format!("pod-{index}"),
            users: Some(1),
            start_at_unix_ms: Some(0),
            start_late_ms: Some(0),
        });
        r
    }

    #[test]
    fn a_set_of_segments_is_checked() {
        let hosts = MergeOptions::default();
        let all = merge_with(
            &[segment(2, 3, 5), segment(1, 3, 0), segment(3, 3, 9)],
            hosts,
        )
        .unwrap();
        let set = all.segments.as_ref().unwrap();
        assert_eq!((set.merged.clone(), set.start_skew_ms), (vec![1, 2, 3], 9));
        assert!(!set.skewed && set.missing.is_empty());
        assert_eq!(all.segment, None);
        assert_eq!(all.requests.total, 30);
        assert_eq!(
            all.merged_from[0].host.as_ref().unwrap().connections_opened,
            10
        );

        let err = merge_with(&[segment(1, 3, 0), segment(3, 3, 0)], hosts).unwrap_err();
        assert!(matches!(&err, MergeError::SegmentsMissing { missing, .. } if missing == &[2]));
        let partial = MergeOptions {
            allow_partial: true,
        };
        let some = merge_with(&[segment(1, 3, 0), segment(3, 3, 0)], partial).unwrap();
        assert_eq!(some.segments.unwrap().missing, vec![2]);
        assert!(matches!(
            merge_with(&[segment(1, 2, 0), segment(1, 2, 0)], hosts),
            Err(MergeError::SegmentTwice { segment: 1, .. })
        ));
        assert!(matches!(
            merge_with(&[segment(1, 2, 0), segment(2, 3, 0)], hosts),
            Err(MergeError::SegmentCount { .. })
        ));
        let plain = record(Mode::ClientClose, &latencies(10), 0, 1);
        assert!(matches!(
            merge_with(&[segment(1, 2, 0), plain], hosts),
            Err(MergeError::NotASegment { index: 1, .. })
        ));
        let mut other = segment(2, 2, 0);
        other.config.users = Some(99);
        assert!(matches!(
            merge_with(&[segment(1, 2, 0), other], hosts),
            Err(MergeError::DifferentWorkload { .. })
        ));
        let late = merge_with(&[segment(1, 2, 0), segment(2, 2, 2_500)], hosts).unwrap();
        assert!(late.segments.unwrap().skewed);

        // A scenario's segments draw from one sequence: another seed or other weights are
        // another workload.
        let scenario = ScenarioConfig {
            seed: 7,
            requests: vec![ScenarioRequest {
                name: "search".into(),
                method: "GET".into(),
                path: "/search".into(),
                headers: Vec::new(),
                body_bytes: 0,
                weight: 3,
                mode: Mode::ClientClose,
            }],
        };
        let with = |index, seed, weight| {
            let mut r = segment(index, 2, 0);
            let mut s = scenario.clone();
            s.seed = seed;
            s.requests[0].weight = weight;
            r.config.scenario = Some(s);
            r
        };
        assert!(merge_with(&[with(1, 7, 3), with(2, 7, 3)], hosts).is_ok());
        for other in [with(2, 8, 3), with(2, 7, 4)] {
            let err = merge_with(&[with(1, 7, 3), other], hosts).unwrap_err();
            assert!(err.to_string().contains("scenario seed"), "{err}");
        }
    }

    /// Repetitions of one segment (`run --segment 2/4 --repeat 3`) are that segment, and such a
    /// record merges with the other segments as one.
    #[test]
    fn repetitions_of_a_segment_stay_that_segment() {
        let mut later = segment(2, 2, 10_000);
        later.segment.as_mut().unwrap().start_late_ms = Some(9_800);
        let reps = merge(&[segment(2, 2, 0), later]).unwrap();
        assert_eq!(reps.segment.as_ref().map(|s| s.index), Some(2));
        assert!(reps.segments.is_none());
        let all = merge_with(&[segment(1, 2, 0), reps], MergeOptions::default()).unwrap();
        assert_eq!(all.segments.unwrap().merged, vec![1, 2]);
        assert_eq!(all.requests.total, 30);
    }

    /// Per-request figures add up by name; records of different names, or with and without a
    /// scenario, are not one workload.
    #[test]
    fn requests_of_scenarios_merge_by_name() {
        use crate::report::sample::scenario_record;
        let a = scenario_record(&[("search", &[100; 30]), ("login", &[1000; 10])]);
        let b = scenario_record(&[("search", &[300; 10]), ("login", &[2000; 10])]);
        let merged = merge_with(&[a.clone(), b.clone()], MergeOptions::default()).unwrap();
        let search = &merged.by_request["search"];
        assert_eq!((search.requests.total, search.requests.ok), (40, 40));
        assert_eq!(search.connections_opened, 40);
        assert_eq!(search.latency_us.total.count, 40);
        assert_eq!(search.latency_us.total.max, 300);
        assert_eq!(search.latency_us.total.p50, 100);
        let login = &merged.by_request["login"];
        assert_eq!(login.latency_us.total.count, 20);
        assert_eq!(
            recorded(&login.histograms.total),
            vec![(1000, 10), (2000, 10)]
        );
        let parts: u64 = merged.by_request.values().map(|f| f.requests.total).sum();
        assert_eq!(parts, merged.requests.total);
        assert_eq!(merged.config.scenario, a.config.scenario);

        let other = scenario_record(&[("search", &[100; 3]), ("signup", &[100; 3])]);
        let err = merge_with(&[a.clone(), other], MergeOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("request names"), "{err}");
        let plain = record(Mode::ClientClose, &latencies(10), 0, 1);
        let err = merge_with(&[a, plain.clone()], MergeOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"login, search\" in the first and \"none\""),
            "{err}"
        );
        // Records without a scenario merge as before, with no per-request figures.
        let plain2 = record(Mode::ClientClose, &latencies(10), 0, 1);
        assert!(merge(&[plain, plain2]).unwrap().by_request.is_empty());
    }
}
