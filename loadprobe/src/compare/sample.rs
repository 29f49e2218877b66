//! Records made in memory for the compare and merge tests: known latencies and counts, closed by
//! the side the mode asks for, without running anything.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use crate::driver::{DriverConfig, DriverResult, Histograms, Mode, Second, Target, Workload};
use crate::kernel::Snapshot;
use crate::report::{
    CloserCounts, PortBudget, PortBudgetInputs, ProbeReport, RecordInputs, RunConfig, RunRecord,
    TimeWaitPoint, TimeWaitSide,
};

/// A record of `mode` whose requests took `latencies_us` (one connection each, all ok), measured
/// for `secs` seconds from `started_at_ms`, with the probe attached.
pub(crate) fn record(mode: Mode, latencies_us: &[u64], started_at_ms: u64, secs: u64) -> RunRecord {
    let mut histograms = Histograms::new();
    for &v in latencies_us {
        histograms.total.record(v).expect("auto-resizing");
        histograms
            .total_uncorrected
            .record(v)
            .expect("auto-resizing");
        histograms.connect.record(v / 10).expect("auto-resizing");
        histograms.first_byte.record(v / 2).expect("auto-resizing");
    }
    let n = latencies_us.len() as u64;
    let per_s = n / secs.max(1);
    let timeline: Vec<Second> = (0..secs)
        .map(|i| {
            let k = if i + 1 == secs {
                n - per_s * (secs - 1)
            } else {
                per_s
            };
            Second {
                ok: k,
                errors: 0,
                connections: k,
            }
        })
        .collect();
    let d = DriverResult {
        started_at: UNIX_EPOCH + Duration::from_millis(started_at_ms),
        elapsed: Duration::from_secs(secs),
        total: n,
        ok: n,
        errors: BTreeMap::new(),
        connections_opened: n,
        histograms,
        timeline,
        server_fin_missing: 0,
        interrupted: false,
    };
    let config = DriverConfig::new(
        Target::from_addr("127.0.0.1:8080".parse().expect("an address")),
        mode,
        Workload::Closed {
            users: 4,
            think_time: Duration::ZERO,
        },
    );
    let kernel = Snapshot {
        release: "6.18.0".into(),
        sysctls: BTreeMap::from([
            ("net.ipv4.tcp_tw_reuse".to_string(), "2".to_string()),
            ("net.ipv4.tcp_timestamps".to_string(), "1".to_string()),
        ]),
    };
    let port_budget = PortBudget::compute(PortBudgetInputs {
        usable_ports: Some(28232),
        source_ips: 1,
        mode,
        connections_per_s: d.connections_per_second(),
        concurrency: 4,
        target: config.target.addr,
        sysctls: &kernel.sysctls,
        eaddrnotavail: 0,
    });
    let held = TimeWaitSide {
        entered: Some(n),
        peak: Some(n),
        expired: Some(0),
        reused: Some(0),
        killed: Some(0),
        overflow: Some(0),
        open: Some(n),
        duration_ms: Default::default(),
    };
    let none = TimeWaitSide {
        entered: Some(0),
        peak: Some(0),
        expired: Some(0),
        reused: Some(0),
        killed: Some(0),
        overflow: Some(0),
        open: Some(0),
        duration_ms: Default::default(),
    };
    let client_side = mode == Mode::ClientClose;
    let closer = if client_side {
        CloserCounts {
            client: n,
            ..Default::default()
        }
    } else {
        CloserCounts {
            server: n,
            ..Default::default()
        }
    };
    let (client, server) = if client_side {
        (held, none)
    } else {
        (none, held)
    };
    let tw_timeline = (0..=secs)
        .map(|i| {
            let held = n * i / secs.max(1);
            TimeWaitPoint {
                t_ms: i * 1000,
                client: if client_side { held } else { 0 },
                server: if client_side { 0 } else { held },
            }
        })
        .collect();
    let probe = ProbeReport {
        attached: true,
        reason: None,
        lost_events: Some(0),
        skipped_events: Some(0),
        closer: Some(closer),
        mismatches: Some(0),
        time_wait_client: Some(client),
        time_wait_server: Some(server),
        time_wait_timeline: Some(tw_timeline),
    };
    RunRecord::build(RecordInputs {
        config: RunConfig::new(&config, true),
        driver: &d,
        sampled: None,
        probe,
        kernel,
        port_budget,
    })
    .expect("a record")
}
