//! `trace --metrics`: the tracker's running totals as OpenMetrics text.
//!
//! The trace loop publishes a [`Snapshot`] about once a second ([`PUBLISH_EVERY`]) and at its
//! end; a scrape encodes the latest one whole, so every number of one scrape is from the same moment, and they are
//! the numbers the jsonl summary is made of. Counters are the tracker's totals since the start
//! of the trace, hence monotonic for its whole life.

mod serve;

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::model::{Closer, Side, Substate};

use crate::probe::track::by::Row;
use crate::probe::track::{Totals, Tracker};
use std::collections::BTreeMap;

pub use serve::{MetricsError, MetricsServer};

/// Upper bounds (seconds) of the TIME_WAIT lifetime histogram's buckets: short lives (killed,
/// reused) by decades, then fine steps around the kernel's 60 s timer, whose expiries land a
/// little after it (the timer wheel's granularity).
pub const LIFETIME_BUCKETS_S: &[f64] = &[
    0.001, 0.01, 0.1, 1.0, 10.0, 30.0, 59.0, 60.0, 60.5, 61.0, 62.0, 65.0, 70.0, 120.0,
];

/// How often the trace loop publishes a snapshot: copying the totals costs their histograms,
/// which is too much for every 20 ms drain, and Prometheus scrapes every few seconds at most.
pub const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What one scrape reports.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The timewait sockets alive now are each group's `current` gauge.
    pub totals: Totals,
    pub lost_events: u64,
    pub skipped_events: u64,
    /// False when the probe cannot follow timewait sockets: the TIME_WAIT families are left
    /// out rather than reported as zeros.
    pub timewait_tracked: bool,
    /// The same by owner (`trace --metrics-by`), when asked for.
    pub owners: Option<OwnerSeries>,
}

/// The owner series of one scrape: a bounded set of named rows (see `ByTable::sticky`: a row
/// never goes, so its counters only grow) and `other`, the rest.
#[derive(Clone, Debug, Default)]
pub struct OwnerSeries {
    /// The label the rows are named by: `process` or `cgroup`.
    pub label: &'static str,
    /// By name; rows of one name (a command whose pid is unknown) are summed.
    pub rows: BTreeMap<String, Row>,
    pub other: Row,
}

/// What `other` is called in the owner series: no process or cgroup path is spelled so.
pub const OTHER: &str = "other";

impl Snapshot {
    pub fn of(tracker: &Tracker, lost_events: u64, skipped_events: u64, tracked: bool) -> Snapshot {
        Snapshot {
            totals: tracker.totals().clone(),
            lost_events,
            skipped_events,
            timewait_tracked: tracked,
            owners: None,
        }
    }
}

/// The latest snapshot, shared between the trace loop and the metrics server.
#[derive(Debug, Default)]
pub struct Published(Mutex<Snapshot>);

impl Published {
    pub fn set(&self, snapshot: Snapshot) {
        *self.lock() = snapshot;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        // A panic elsewhere cannot leave a half-written snapshot: `set` replaces it whole.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A registry whose one collector encodes the latest published snapshot.
pub fn registry(published: Arc<Published>) -> Registry {
    let mut registry = Registry::with_prefix("loadprobe");
    registry.register_collector(Box::new(SnapshotCollector(published)));
    registry
}

/// Encodes the registry as OpenMetrics text.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

#[derive(Debug)]
struct SnapshotCollector(Arc<Published>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Copied out so that the trace loop never waits on a scrape's encoding.
        let s = self.0.lock().clone();
        if let Some(owners) = &s.owners {
            encode_owners(&mut encoder, owners, s.timewait_tracked)?;
        }
        let mut counters = |name: &str, help: &str, rows: Vec<(Vec<(&str, &str)>, u64)>| {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Counter,
                rows,
                |v, m| ConstCounter::new(v).encode(m),
            )
        };
        counters(
            "connections_closed",
            "Connections finished, by which end closed first.",
            Closer::ALL
                .iter()
                .map(|c| {
                    let n = s.totals.closer.get(c).copied().unwrap_or(0);
                    (vec![("closer", c.name())], n)
                })
                .collect(),
        )?;
        counters(
            "lost_events",
            "Kernel events dropped because the ring buffer was full.",
            vec![(vec![], s.lost_events)],
        )?;
        counters(
            "skipped_events",
            "Tracepoint hits the kernel skipped because a probe program was already running on the CPU (an upper bound).",
            vec![(vec![], s.skipped_events)],
        )?;
        if !s.timewait_tracked {
            return Ok(());
        }
        let stats = |side: Side| s.totals.time_wait.get(&side).cloned().unwrap_or_default();
        let alive = |side: Side, sub: Substate| {
            let group = match sub {
                Substate::TimeWait => &s.totals.time_wait,
                Substate::FinWait2 => &s.totals.fin_wait2,
            };
            group.get(&side).map_or(0, |t| t.current)
        };
        counters(
            "time_wait_entered",
            "Timewait sockets created, by the side of the connection that holds them.",
            Side::ALL
                .iter()
                .map(|&side| (vec![("side", side.name())], stats(side).entered))
                .collect(),
        )?;
        counters(
            "time_wait_ended",
            "Timewait sockets ended, by side and by how: their timer expired, a new connection on the same 4-tuple reused them, or they were killed early.",
            Side::ALL
                .iter()
                .flat_map(|&side| {
                    let t = stats(side);
                    [
                        ("expired", t.expired),
                        ("reused", t.reused),
                        ("killed", t.killed),
                    ]
                    .map(|(reason, n)| (vec![("side", side.name()), ("reason", reason)], n))
                })
                .collect(),
        )?;
        counters(
            "time_wait_overflow",
            "Timewait sockets the kernel did not create because tcp_max_tw_buckets was reached.",
            Side::ALL
                .iter()
                .map(|&side| (vec![("side", side.name())], stats(side).overflow))
                .collect(),
        )?;
        counters(
            "time_wait_unmatched",
            "Timewait sockets of connections the probe did not see open (older than the trace).",
            vec![(vec![], s.totals.time_wait_unmatched)],
        )?;
        family(
            &mut encoder,
            "time_wait_alive",
            "Timewait sockets alive now, by side and substate (FIN_WAIT2: waiting for the peer's FIN).",
            MetricType::Gauge,
            Side::ALL
                .iter()
                .flat_map(|&side| {
                    Substate::ALL.map(|sub| {
                        let labels = vec![("side", side.name()), ("substate", sub.name())];
                        (labels, alive(side, sub))
                    })
                })
                .collect(),
            |v, m| ConstGauge::new(v as i64).encode(m),
        )?;
        let mut metric = encoder.encode_descriptor(
            "time_wait_lifetime_seconds",
            "How long ended timewait sockets lived, by side (from the probe's histogram, within 0.1 %).",
            None,
            MetricType::Histogram,
        )?;
        for side in Side::ALL {
            let h = &stats(side).durations_ms.0;
            // The encoder takes each bucket's own count and adds them up.
            let mut below = 0;
            let buckets: Vec<(f64, u64)> = LIFETIME_BUCKETS_S
                .iter()
                .map(|&le| (le, h.count_between(0, (le * 1000.0) as u64)))
                .chain([(f64::INFINITY, h.len())])
                .map(|(le, upto)| {
                    let own = upto.saturating_sub(below);
                    below = below.max(upto);
                    (le, own)
                })
                .collect();
            let sum_s = h.mean() * h.len() as f64 / 1000.0;
            let labels = [("side", side.name())];
            metric
                .encode_family(&labels.as_slice())?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum_s,
                    h.len(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

/// The owner families: each named row and `other`.
fn encode_owners(
    encoder: &mut DescriptorEncoder,
    owners: &OwnerSeries,
    timewait_tracked: bool,
) -> Result<(), std::fmt::Error> {
    let label = owners.label;
    let all = || {
        owners
            .rows
            .iter()
            .map(|(n, r)| (n.as_str(), r))
            .chain([(OTHER, &owners.other)])
    };
    family(
        encoder,
        "owner_connections_closed",
        "Connections an owner was an end of, by closer (the first owners seen, the rest as other).",
        MetricType::Counter,
        all()
            .flat_map(|(name, r)| {
                Closer::ALL.iter().map(move |c| {
                    let n = r.closer.get(c).copied().unwrap_or(0);
                    (vec![(label, name), ("closer", c.name())], n)
                })
            })
            .collect(),
        |v, m| ConstCounter::new(v).encode(m),
    )?;
    if !timewait_tracked {
        return Ok(());
    }
    family(
        encoder,
        "owner_time_wait_entered",
        "Timewait sockets made by an owner's ends (the first owners seen, the rest as other).",
        MetricType::Counter,
        all()
            .map(|(name, r)| (vec![(label, name)], r.entered))
            .collect(),
        |v, m| ConstCounter::new(v).encode(m),
    )?;
    family(
        encoder,
        "owner_time_wait_alive",
        "Timewait sockets an owner's ends hold now (the first owners seen, the rest as other).",
        MetricType::Gauge,
        all()
            .map(|(name, r)| (vec![(label, name)], r.holding))
            .collect(),
        |v, m| ConstGauge::new(v as i64).encode(m),
    )
}

/// One metric family of labelled rows.
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: Vec<(Vec<(&str, &str)>, u64)>,
    value: impl Fn(u64, prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, n) in rows {
        if labels.is_empty() {
            // A family with no labels is the metric itself.
            return value(n, metric);
        }
        value(n, metric.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
