//! Records made in memory for the compare and merge tests: known latencies and counts, closed by
//! the side the mode asks for, without running anything.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::driver::{
    DriverConfig, DriverResult, Histograms, Mix, MixRequest, RequestSpec, Second, Target,
};

use crate::model::{Mode, Workload};

use crate::kernel::Snapshot;
use crate::model::TimeWaitPoint;
use crate::report::{
    CloserCounts, FinWait2, Latencies, PortBudget, PortBudgetInputs, ProbeReport, RecordInputs,
    RequestCounts, RequestFigures, RunConfig, RunRecord, SerializedHistograms, TimeWaitSide,
};

/// A driver's result of `elapsed` from `started_at` with nothing counted yet, for tests to
/// fill in what they need.
pub(crate) fn driver_result(started_at: SystemTime, elapsed: Duration) -> DriverResult {
    DriverResult {
        started_at,
        elapsed,
        total: 0,
        ok: 0,
        errors: BTreeMap::new(),
        connections_opened: 0,
        histograms: Histograms::new(),
        timeline: Vec::new(),
        server_fin_missing: 0,
        dropped: 0,
        unfinished: 0,
        stale_connection: 0,
        retried: 0,
        by_request: Vec::new(),
        interrupted: false,
        start_late: None,
        tls: None,
    }
}

/// A record of `mode` whose requests took `latencies_us` (one connection each, all ok), measured
/// for `secs` seconds from `started_at_ms`, with the probe attached.
pub(crate) fn record(mode: Mode, latencies_us: &[u64], started_at_ms: u64, secs: u64) -> RunRecord {
    let histograms = histograms_of(latencies_us);
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
                connections: k,
                ..Second::default()
            }
        })
        .collect();
    let d = DriverResult {
        total: n,
        ok: n,
        connections_opened: n,
        histograms,
        timeline,
        ..driver_result(
            UNIX_EPOCH + Duration::from_millis(started_at_ms),
            Duration::from_secs(secs),
        )
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
        client_fin_wait2_share: 0.0,
    });
    let held = TimeWaitSide {
        entered: Some(n),
        peak: Some(n),
        expired: Some(0),
        reused: Some(0),
        killed: Some(0),
        overflow: Some(0),
        open: Some(n),
        to_time_wait: None,
        reused_older: None,
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
        to_time_wait: None,
        reused_older: None,
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
                fin_wait2_client: Some(0),
                fin_wait2_server: Some(0),
            }
        })
        .collect();
    let probe = ProbeReport {
        attached: true,
        reason: None,
        lost_events: Some(0),
        skipped_events: Some(0),
        read_errors: Some(0),
        closer: Some(closer),
        mismatches: Some(0),
        time_wait_client: Some(client),
        time_wait_server: Some(server),
        fin_wait2: Some(FinWait2::default()),
        server_unseen: None,
        time_wait_timeline: Some(tw_timeline),
    };
    RunRecord::build(RecordInputs {
        segment: None,
        config: RunConfig::new(&config, true),
        driver: &d,
        sampled: None,
        probe,
        kernel,
        port_budget,
    })
    .expect("a record")
}

/// Requests that took `latencies_us`: total and uncorrected those, connect a tenth, first byte
/// half.
fn histograms_of(latencies_us: &[u64]) -> Histograms {
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
    histograms
}

/// A client-close [`record`] of one second started at 0 whose scenario has one request per
/// `(name, latencies)`, each with those latencies (all ok, a connection each), seed 7.
pub(crate) fn scenario_record(parts: &[(&str, &[u64])]) -> RunRecord {
    let all: Vec<u64> = parts.iter().flat_map(|(_, l)| l.iter().copied()).collect();
    let mut r = record(Mode::ClientClose, &all, 0, 1);
    let mut config = DriverConfig::new(
        Target::from_addr("127.0.0.1:8080".parse().expect("an address")),
        Mode::ClientClose,
        Workload::Closed {
            users: 4,
            think_time: Duration::ZERO,
        },
    );
    config.mix = Mix {
        requests: parts
            .iter()
            .map(|(name, _)| MixRequest {
                name: name.to_string(),
                spec: RequestSpec::default(),
                weight: 1,
                mode: None,
            })
            .collect(),
        seed: 7,
        named: true,
    };
    r.config = RunConfig::new(&config, true);
    r.by_request = parts
        .iter()
        .map(|(name, latencies)| {
            let h = histograms_of(latencies);
            let n = latencies.len() as u64;
            let figures = RequestFigures {
                requests: RequestCounts {
                    total: n,
                    ok: n,
                    errors: BTreeMap::new(),
                    unfinished: 0,
                },
                connections_opened: n,
                latency_us: Latencies::of(&h, false),
                histograms: SerializedHistograms::of(&h, false).expect("encodes"),
            };
            (name.to_string(), figures)
        })
        .collect();
    r
}
