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
    CloserCounts, Connections, DurationPercentiles, HISTOGRAM_ENCODING, Latencies, Percentiles,
    ProbeStatus, Requests, RunRecord, SCHEMA, SerializedHistograms, Throughput, TimeWait,
    TimeWaitPoint, TimeWaitSide, TimelineSecond, decode_histogram, encode_histogram,
};
use crate::kernel::Snapshot;

/// One input of a merged record: enough to tell the hosts (or repetitions) apart later.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergedInput {
    pub started_at_unix_ms: u64,
    pub duration_s: f64,
    pub target: String,
    pub requests: u64,
    /// That host's kernel and sysctls.
    pub kernel: Snapshot,
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
    #[error("record {index}: histogram {name}: {reason}")]
    Histogram {
        index: usize,
        name: &'static str,
        reason: String,
    },
}

/// Merges `records` (at least one) into one record; see the module doc for what that means.
///
/// The result keeps the first record's `config` and `kernel` (every input's kernel is kept in
/// `merged_from`), the worst `port_budget` of the inputs (ports are a per-host resource: the
/// tightest host is the one that runs out), and `repetitions` only when no two inputs overlap
/// in time: sequential runs are repetitions of one workload, simultaneous hosts are parts of one.
pub fn merge(records: &[RunRecord]) -> Result<RunRecord, MergeError> {
    let first = records.first().ok_or(MergeError::Empty)?;
    if records.len() == 1 {
        return Ok(first.clone());
    }
    for (index, r) in records.iter().enumerate() {
        if r.schema != SCHEMA {
            return Err(MergeError::Schema {
                index,
                schema: r.schema.clone(),
            });
        }
        for (what, a, b) in [
            ("config.mode", &first.config.mode, &r.config.mode),
            ("config.model", &first.config.model, &r.config.model),
        ] {
            if a != b {
                return Err(MergeError::DifferentWorkload {
                    what,
                    first: a.clone(),
                    other: b.clone(),
                    index,
                });
            }
        }
    }
    let axis = Axis::new(records);
    let histograms = merge_histograms(records)?;
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
                    started_at_unix_ms: r.started_at_unix_ms,
                    duration_s: r.duration_s,
                    target: r.config.target.clone(),
                    requests: r.requests.total,
                    kernel: r.kernel.clone(),
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
        started_at_unix_ms: records
            .iter()
            .map(|r| r.started_at_unix_ms)
            .min()
            .unwrap_or(first.started_at_unix_ms),
        config: first.config.clone(),
        duration_s,
        interrupted: records.iter().any(|r| r.interrupted),
        requests: Requests {
            total,
            ok: sum(&|r| r.requests.ok),
            errors,
        },
        throughput: Throughput {
            rps: per_s(total),
            connections_per_s: per_s(opened),
            timeline: axis.throughput(records),
        },
        latency_us: Latencies {
            total: Percentiles::of(&histograms[0]),
            total_uncorrected: Percentiles::of(&histograms[1]),
            connect: Percentiles::of(&histograms[2]),
            first_byte: Percentiles::of(&histograms[3]),
        },
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
            timeline: axis.time_wait_timeline(records),
        },
        probe: ProbeStatus {
            attached: records.iter().all(|r| r.probe.attached),
            lost_events: all(&|r| r.probe.lost_events),
            skipped_events: all(&|r| r.probe.skipped_events),
            reason: records.iter().find_map(|r| r.probe.reason.clone()),
        },
        kernel: first.kernel.clone(),
        port_budget: worst_port_budget(records).clone(),
        histograms: SerializedHistograms {
            encoding: HISTOGRAM_ENCODING.to_string(),
            total: encode(&histograms[0])?,
            total_uncorrected: encode(&histograms[1])?,
            connect: encode(&histograms[2])?,
            first_byte: encode(&histograms[3])?,
        },
        repetitions,
        merged_from,
    })
}

/// The per-repetition figures kept in `repetitions`: every number of the record's measured
/// sections (`duration_s`, `requests`, `throughput`, `latency_us`, `connections`, `time_wait`,
/// `probe`), keyed by its record path (`latency_us.total.p99`), plus `requests.errors`, the sum
/// of all error classes. Unknown (null) figures are left out.
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
    ] {
        if let Some(section) = v.get(key) {
            flatten(key, section, &mut out);
        }
    }
    out.insert(
        "requests.errors".to_string(),
        total(r.requests.errors.values().copied()) as f64,
    );
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

/// The inputs' four histograms, each merged: total, total_uncorrected, connect, first_byte.
fn merge_histograms(records: &[RunRecord]) -> Result<[Histogram<u64>; 4], MergeError> {
    let new = || {
        Histogram::<u64>::new(3).map_err(|e| MergeError::Histogram {
            index: 0,
            name: "total",
            reason: format!("{e:?}"),
        })
    };
    let mut out = [new()?, new()?, new()?, new()?];
    for (index, r) in records.iter().enumerate() {
        let h = &r.histograms;
        let parts = [
            ("total", &h.total),
            ("total_uncorrected", &h.total_uncorrected),
            ("connect", &h.connect),
            ("first_byte", &h.first_byte),
        ];
        for (merged, (name, encoded)) in out.iter_mut().zip(parts) {
            let err = |reason: String| MergeError::Histogram {
                index,
                name,
                reason,
            };
            let decoded = decode_histogram(encoded).map_err(|e| err(e.to_string()))?;
            merged.add(&decoded).map_err(|e| err(format!("{e:?}")))?;
        }
    }
    Ok(out)
}

fn encode(h: &Histogram<u64>) -> Result<String, MergeError> {
    encode_histogram(h).map_err(|e| MergeError::Histogram {
        index: 0,
        name: "merged",
        reason: e.to_string(),
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
        for (i, r) in records.iter().enumerate() {
            let base = (self.offset_ms[i] as f64 / 1e3).round().max(0.0) as u64;
            for s in &r.throughput.timeline {
                let t = base.saturating_add(s.t);
                let e = seconds.entry(t).or_insert(TimelineSecond {
                    t,
                    ok: 0,
                    errors: 0,
                    connections: 0,
                });
                e.ok = e.ok.saturating_add(s.ok);
                e.errors = e.errors.saturating_add(s.errors);
                e.connections = e.connections.saturating_add(s.connections);
            }
        }
        fill_seconds(seconds)
    }

    /// TIME_WAIT counts per second of the merged axis: each input's last sample in that second,
    /// added up over inputs (simultaneous hosts each hold their own sockets). Samples from the
    /// warmup are left out, like the warmup's requests.
    fn time_wait_timeline(&self, records: &[RunRecord]) -> Vec<TimeWaitPoint> {
        let mut merged: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            let mut last: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            for p in &r.time_wait.timeline {
                let wall = ms(r.started_at_unix_ms).saturating_add(ms(p.t_ms));
                let into_window = wall.saturating_sub(self.window_ms[i]);
                if into_window < 0 {
                    continue;
                }
                let second = (self.offset_ms[i].saturating_add(into_window) / 1000) as u64;
                last.insert(second, (p.client, p.server));
            }
            for (second, (c, s)) in last {
                let e = merged.entry(second).or_default();
                e.0 = e.0.saturating_add(c);
                e.1 = e.1.saturating_add(s);
            }
        }
        merged
            .into_iter()
            .map(|(second, (client, server))| TimeWaitPoint {
                t_ms: second.saturating_mul(1000),
                client,
                server,
            })
            .collect()
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
            killed: sum(|s| s.killed),
            overflow: sum(|s| s.overflow),
            open: sum(|s| s.open),
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
        .map(|t| {
            seconds.get(&t).copied().unwrap_or(TimelineSecond {
                t,
                ok: 0,
                errors: 0,
                connections: 0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::sample::record;
    use crate::driver::Mode;

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
}
