//! The end-of-trace summary: closers and TIME_WAIT per side, in the shape both `trace` and run
//! records print.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::track::{Totals, TwSideStats};
use crate::model::{Closer, Side};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

/// TIME_WAIT on one side of the connections.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SideSummary {
    pub entered: u64,
    pub peak: u64,
    pub expired: u64,
    pub reused: u64,
    /// Older timewait sockets (not seen created) these connections took over.
    #[serde(default)]
    pub reused_older: u64,
    pub killed: u64,
    pub overflow: u64,
    pub open: u64,
    /// FIN_WAIT2 only: moved on to TIME_WAIT when the peer's FIN arrived (0 for TIME_WAIT).
    #[serde(default)]
    pub to_time_wait: u64,
    pub duration_ms: Percentiles,
}

impl From<&TwSideStats> for SideSummary {
    fn from(s: &TwSideStats) -> SideSummary {
        SideSummary {
            entered: s.entered,
            peak: s.peak,
            expired: s.expired,
            reused: s.reused,
            reused_older: s.reused_older,
            killed: s.killed,
            overflow: s.overflow,
            open: s.open,
            to_time_wait: s.to_time_wait,
            duration_ms: Percentiles::of(&s.durations_ms.0),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeWaitSummary {
    /// False when the kernel lacks what timewait tracking needs; the counts are then all zero
    /// and mean "unknown", not "none".
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
    /// Timewait sockets in the TIME_WAIT substate.
    pub client: SideSummary,
    pub server: SideSummary,
    /// Timewait sockets in the FIN_WAIT2 substate (orphans of a close whose peer had not sent
    /// its FIN), counted apart as `ss` shows them apart.
    #[serde(default)]
    pub fin_wait2: FinWait2Summary,
    /// Timewait sockets of connections the probe did not see open.
    pub unmatched: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FinWait2Summary {
    pub client: SideSummary,
    pub server: SideSummary,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub connections: u64,
    /// Counts by closer, every closer named even when zero.
    pub closer: BTreeMap<String, u64>,
    /// Dropped because the ring buffer was full.
    pub lost_events: u64,
    /// Skipped by the kernel because another BPF program was running on the CPU (an upper
    /// bound, see `Probe::skipped_events`); set by the caller, which owns the probe.
    #[serde(default)]
    pub skipped_events: u64,
    /// Kernel reads that failed, each dropping its event (see `Probe::read_errors`); set by
    /// the caller, which owns the probe.
    #[serde(default)]
    pub read_errors: u64,
    pub time_wait: TimeWaitSummary,
}

impl Summary {
    pub fn new(totals: &Totals, lost_events: u64, timewait_unavailable: Option<&str>) -> Summary {
        let closer: BTreeMap<String, u64> = Closer::ALL
            .iter()
            .map(|c| {
                (
                    c.name().to_string(),
                    totals.closer.get(c).copied().unwrap_or(0),
                )
            })
            .collect();
        let side = |group: &BTreeMap<Side, TwSideStats>, s: Side| {
            group.get(&s).map(SideSummary::from).unwrap_or_default()
        };
        Summary {
            connections: closer.values().sum(),
            closer,
            lost_events,
            skipped_events: 0,
            read_errors: 0,
            time_wait: TimeWaitSummary {
                available: timewait_unavailable.is_none(),
                unavailable_reason: timewait_unavailable.map(str::to_string),
                client: side(&totals.time_wait, Side::Client),
                server: side(&totals.time_wait, Side::Server),
                fin_wait2: FinWait2Summary {
                    client: side(&totals.fin_wait2, Side::Client),
                    server: side(&totals.fin_wait2, Side::Server),
                },
                unmatched: totals.time_wait_unmatched,
            },
        }
    }
}
