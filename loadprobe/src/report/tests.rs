use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::diag::timewait::{TwCount, TwObserved};
use crate::driver::errors::ErrorClass;
use crate::model::TimeWaitPoint;

use crate::driver::{DriverConfig, Histograms, Second, Target};
use crate::model::Mode;
use crate::report::sample;

fn driver_result() -> DriverResult {
    let mut histograms = Histograms::new();
    for v in [100, 200, 300, 5000] {
        histograms.total.record(v).unwrap();
        histograms.total_uncorrected.record(v).unwrap();
        histograms.connect.record(v / 10).unwrap();
        histograms.first_byte.record(v / 2).unwrap();
    }
    DriverResult {
        total: 5,
        ok: 4,
        errors: BTreeMap::from([("EADDRNOTAVAIL".to_string(), 1)]),
        connections_opened: 4,
        histograms,
        timeline: vec![
            Second {
                ok: 3,
                connections: 3,
                ..Second::default()
            },
            Second {
                ok: 1,
                errors: 1,
                errors_by_class: BTreeMap::from([(ErrorClass::Errno(libc::EADDRNOTAVAIL), 1)]),
                connections: 1,
            },
        ],
        ..sample::driver_result(SystemTime::now(), Duration::from_secs(2))
    }
}

fn record(probe: ProbeReport) -> RunRecord {
    let d = driver_result();
    let config = DriverConfig::new(
        Target::from_addr("127.0.0.1:8080".parse().unwrap()),
        Mode::ClientClose,
        Workload::Closed {
            users: 4,
            think_time: Duration::ZERO,
        },
    );
    let sampled = TwObserved {
        source: "sock_diag",
        client: TwCount {
            entered: 4,
            peak: 4,
            open: 3,
        },
        server: TwCount::default(),
        timeline: vec![TimeWaitPoint {
            t_ms: 1000,
            client: 3,
            server: 0,
            ..TimeWaitPoint::default()
        }],
        error: None,
    };
    let kernel = crate::kernel::Snapshot {
        release: "6.18.0".into(),
        sysctls: BTreeMap::from([("net.ipv4.tcp_tw_reuse".to_string(), "2".to_string())]),
    };
    let port_budget = PortBudget::compute(PortBudgetInputs {
        usable_ports: Some(28232),
        source_ips: 1,
        mode: Mode::ClientClose,
        connections_per_s: 2.0,
        concurrency: 4,
        target: config.target.addr,
        sysctls: &kernel.sysctls,
        eaddrnotavail: 1,
        client_fin_wait2_share: 0.0,
    });
    RunRecord::build(RecordInputs {
        segment: None,
        config: RunConfig::new(&config, true),
        driver: &d,
        sampled: Some(&sampled),
        probe,
        kernel,
        port_budget,
    })
    .unwrap()
}

/// The keys the contract names must be there, spelled as promised.
#[test]
fn record_has_the_contract_keys() {
    let r = record(ProbeReport::off("needs root"));
    let v = serde_json::to_value(&r).unwrap();
    let at = |path: &str| {
        path.split('.')
            .try_fold(&v, |v, k| v.get(k))
            .unwrap_or_else(|| panic!("missing {path}"))
            .clone()
    };
    assert_eq!(at("schema"), "loadprobe.run/1");
    assert_eq!(at("config.mode"), "client-close");
    assert_eq!(at("requests.total"), 5);
    assert_eq!(at("requests.ok"), 4);
    assert_eq!(at("requests.errors.EADDRNOTAVAIL"), 1);
    assert_eq!(at("throughput.rps"), 2.5);
    for h in ["total", "connect", "first_byte", "total_uncorrected"] {
        for p in ["p50", "p90", "p99", "p999", "max"] {
            at(&format!("latency_us.{h}.{p}"));
        }
    }
    assert_eq!(at("latency_us.total.max"), 5003);
    assert_eq!(at("connections.opened"), 4);
    for k in [
        "client",
        "server",
        "simultaneous",
        "client-reset",
        "server-reset",
        "refused",
        "unknown",
    ] {
        at(&format!("connections.closer.{k}"));
    }
    assert_eq!(at("connections.closer.unknown"), 4);
    for side in ["client", "server"] {
        for k in [
            "entered", "peak", "expired", "reused", "killed", "overflow", "open",
        ] {
            at(&format!("time_wait.{side}.{k}"));
        }
        for k in ["p50", "p99", "max"] {
            at(&format!("time_wait.{side}.duration_ms.{k}"));
        }
    }
    assert_eq!(at("time_wait.client.peak"), 4);
    assert_eq!(at("time_wait.client.expired"), serde_json::Value::Null);
    assert_eq!(at("time_wait.source"), "sock_diag");
    assert_eq!(at("probe.attached"), false);
    assert_eq!(at("probe.lost_events"), serde_json::Value::Null);
    assert_eq!(at("probe.skipped_events"), serde_json::Value::Null);
    assert_eq!(at("probe.read_errors"), serde_json::Value::Null);
    assert_eq!(at("probe.reason"), "needs root");
    assert_eq!(at("kernel.release"), "6.18.0");
    assert_eq!(at("kernel.sysctls")["net.ipv4.tcp_tw_reuse"], "2");
    at("port_budget.verdict");
    assert_eq!(at("throughput.timeline").as_array().unwrap().len(), 2);
    // Each second's errors by class, by the names `requests.errors` uses.
    assert_eq!(
        at("throughput.timeline")[1]["error_classes"],
        serde_json::json!({"EADDRNOTAVAIL": 1})
    );
    assert_eq!(
        at("throughput.timeline")[0]["error_classes"],
        serde_json::json!({})
    );
    // Sampling cannot tell FIN_WAIT2 from TIME_WAIT: the split is absent, not 0.
    assert_eq!(at("time_wait.timeline")[0].get("fin_wait2_client"), None);

    // Histograms round-trip, so records can be merged.
    let h = decode_histogram(&r.histograms.total).unwrap();
    assert_eq!(h.len(), 4);
    assert_eq!(h.max(), r.latency_us.total.max);

    // And the record reads back as written.
    let back: RunRecord = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

#[test]
fn probe_figures_take_precedence() {
    let probe = ProbeReport {
        attached: true,
        reason: Some("ignored when attached".into()),
        lost_events: Some(0),
        skipped_events: Some(0),
        read_errors: Some(0),
        closer: Some(CloserCounts {
            client: 4,
            ..Default::default()
        }),
        mismatches: Some(0),
        time_wait_client: Some(TimeWaitSide {
            entered: Some(4),
            expired: Some(4),
            ..Default::default()
        }),
        time_wait_server: Some(TimeWaitSide::default()),
        fin_wait2: None,
        server_unseen: None,
        time_wait_timeline: None,
    };
    let r = record(probe);
    assert_eq!(r.time_wait.source, "probe");
    assert_eq!(r.time_wait.client.expired, Some(4));
    assert_eq!(r.connections.closer.client, 4);
    assert_eq!(r.probe.reason, None);
    let text = render_text(&r);
    assert!(text.contains("closer       client 4"), "{text}");
}

#[test]
fn read_errors_are_told_and_records_without_them_still_read() {
    let probe = ProbeReport {
        attached: true,
        read_errors: Some(3),
        ..Default::default()
    };
    let r = record(probe);
    let text = render_text(&r);
    assert!(
        text.contains("probe        3 kernel reads failed, each dropping its event"),
        "{text}"
    );
    assert!(!render_text(&record(ProbeReport::default())).contains("kernel reads failed"));

    // A record written before the field existed reads back with it absent.
    let mut v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["probe"]["read_errors"], 3);
    v["probe"].as_object_mut().unwrap().remove("read_errors");
    let old: RunRecord = serde_json::from_value(v).unwrap();
    assert_eq!(old.probe.read_errors, None);
}

#[test]
fn text_summary_names_the_essentials() {
    let r = record(ProbeReport::off("needs root"));
    let text = render_text(&r);
    for needle in [
        "client-close",
        "5 total, 4 ok, 1 errors",
        "EADDRNOTAVAIL 1",
        "probe        off: needs root",
        "TIME_WAIT    client entered 4, peak 4, open 3",
        "exhausted: 1 connects failed with EADDRNOTAVAIL",
        "kernel       6.18.0 tcp_tw_reuse=2",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn write_is_atomic_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    let r = record(ProbeReport::off("x"));
    write_atomic(&path, &r).unwrap();
    write_atomic(&path, &r).unwrap();
    let back: RunRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(back, r);
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // A directory that does not exist is an error, not a panic.
    assert!(write_atomic(&dir.path().join("no/such/dir/run.json"), &r).is_err());
}

/// A corrupt histogram keeps what the decoder said as its source, for the one-line chain.
#[test]
fn a_corrupt_histogram_keeps_the_decoders_error() {
    use std::error::Error as _;
    let not_base64 = crate::report::histograms::decode_histogram("!!").unwrap_err();
    assert!(not_base64.source().is_some(), "{not_base64:?}");
    assert!(
        crate::error_chain::one_line(&not_base64)
            .starts_with("cannot decode a histogram: not base64: Invalid"),
        "{}",
        crate::error_chain::one_line(&not_base64)
    );
    let not_a_histogram = crate::report::histograms::decode_histogram("AAAA").unwrap_err();
    assert!(not_a_histogram.source().is_some(), "{not_a_histogram:?}");
}
