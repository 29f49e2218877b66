use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::driver::{DriverConfig, DriverResult, Target};
use crate::model::{Mode, Workload};
use crate::report::sample::driver_result;

use crate::kernel::Snapshot;
use crate::report::{
    PortBudget, PortBudgetInputs, ProbeReport, RecordInputs, RunConfig, RunRecord, TimelineSecond,
};

/// A run of `secs` seconds with `ok_per_second[i]` successes and `errors` (class, count),
/// latencies p50/p99 in µs, and the probe's client/server TIME_WAIT figures.
pub(crate) struct Fixture {
    pub ok_per_second: Vec<u64>,
    pub errors: Vec<(&'static str, u64)>,
    pub p50_us: u64,
    pub p99_us: u64,
    pub client: TimeWaitSide,
    pub server: TimeWaitSide,
    pub usable_ports: u32,
}

impl Default for Fixture {
    fn default() -> Fixture {
        Fixture {
            ok_per_second: vec![100; 5],
            errors: Vec::new(),
            p50_us: 1000,
            p99_us: 2000,
            client: tw(0, 0, 0),
            server: tw(0, 0, 0),
            usable_ports: 28232,
        }
    }
}

/// Probe figures for one side: entered, reused, overflow (the rest follows).
pub(crate) fn tw(entered: u64, reused: u64, overflow: u64) -> TimeWaitSide {
    TimeWaitSide {
        entered: Some(entered),
        peak: Some(entered - reused),
        expired: Some(0),
        reused: Some(reused),
        killed: Some(0),
        overflow: Some(overflow),
        open: Some(entered - reused),
        ..TimeWaitSide::default()
    }
}

impl Fixture {
    pub(crate) fn record(&self) -> RunRecord {
        let secs = self.ok_per_second.len() as u64;
        let ok: u64 = self.ok_per_second.iter().sum();
        let failed: u64 = self.errors.iter().map(|(_, n)| n).sum();
        let d = DriverResult {
            total: ok + failed,
            ok,
            connections_opened: ok,
            ..driver_result(SystemTime::UNIX_EPOCH, Duration::from_secs(secs))
        };
        let config = DriverConfig::new(
            Target::from_addr("10.213.0.2:20000".parse().expect("an address")),
            Mode::ClientClose,
            Workload::Open {
                rate: 100.0,
                max_in_flight: 1000,
            },
        );
        let kernel = Snapshot {
            release: "6.18.0".into(),
            sysctls: BTreeMap::new(),
        };
        let port_budget = PortBudget::compute(PortBudgetInputs {
            usable_ports: Some(self.usable_ports),
            source_ips: 1,
            mode: Mode::ClientClose,
            connections_per_s: 100.0,
            concurrency: 1,
            target: config.target.addr,
            sysctls: &kernel.sysctls,
            eaddrnotavail: 0,
            client_fin_wait2_share: 0.0,
        });
        let mut r = RunRecord::build(RecordInputs {
            segment: None,
            config: RunConfig::new(&config, true),
            driver: &d,
            sampled: None,
            probe: ProbeReport::off("fixture"),
            kernel,
            port_budget,
        })
        .expect("a record");
        r.requests.errors = self
            .errors
            .iter()
            .map(|(c, n)| (c.to_string(), *n))
            .collect();
        r.throughput.timeline = self
            .ok_per_second
            .iter()
            .enumerate()
            .map(|(t, &ok)| TimelineSecond {
                t: t as u64,
                ok,
                connections: ok,
                ..TimelineSecond::default()
            })
            .collect();
        r.latency_us.total.p50 = self.p50_us;
        r.latency_us.total.p99 = self.p99_us;
        r.time_wait.client = self.client;
        r.time_wait.server = self.server;
        r
    }
}

fn metric<'a>(j: &'a Judgement, name: &str) -> &'a MetricDelta {
    j.metrics
        .iter()
        .find(|m| m.metric == name)
        .unwrap_or_else(|| panic!("no metric {name}: {:#?}", j.metrics))
}

/// The seed's first story: ports run out without reuse, not with it.
pub(crate) fn reuse_story() -> (RunRecord, RunRecord) {
    let baseline = Fixture {
        ok_per_second: vec![50, 50, 0, 0, 0],
        errors: vec![("EADDRNOTAVAIL", 150)],
        client: tw(100, 0, 0),
        ..Fixture::default()
    };
    let tuned = Fixture {
        ok_per_second: vec![50; 5],
        client: tw(250, 199, 0),
        ..Fixture::default()
    };
    (baseline.record(), tuned.record())
}

#[test]
fn fewer_port_errors_with_reuse_is_improved() {
    let (a, b) = reuse_story();
    let j = judge(&[a], &[b]);
    assert_eq!(j.verdict, Verdict::Improved, "{j:#?}");
    assert_eq!(
        j.reason,
        "EADDRNOTAVAIL errors fell from 150 to 0 of 250 requests per run, and 199 client \
         TIME_WAIT sockets per run were reused."
    );
    let errors = metric(&j, "errors");
    assert_eq!(
        (errors.effect, errors.significant),
        (Effect::Better, Some(true))
    );
    assert_eq!(metric(&j, "ok_per_s").effect, Effect::Better);
    assert_eq!(metric(&j, "errors.EADDRNOTAVAIL").effect, Effect::Info);
    assert_eq!(metric(&j, "time_wait.client.reused").tuned, 199.0);
    assert_eq!(metric(&j, "latency_p99_us").effect, Effect::Same);
}

#[test]
fn overflow_is_a_regression_that_names_the_risk() {
    let a = Fixture {
        server: tw(998, 0, 0),
        ..Fixture::default()
    };
    let b = Fixture {
        server: tw(50, 0, 950),
        ..Fixture::default()
    };
    let j = judge(&[a.record()], &[b.record()]);
    assert_eq!(j.verdict, Verdict::Regressed, "{j:#?}");
    assert!(
        j.reason
            .starts_with("The server dropped 950 TIME_WAIT sockets per run")
            && j.reason.contains("tcp_max_tw_buckets")
            && j.reason.contains("RST"),
        "{}",
        j.reason
    );
    assert_eq!(
        metric(&j, "time_wait.server.overflow").effect,
        Effect::Worse
    );
    assert_eq!(metric(&j, "errors").effect, Effect::Same);
}

#[test]
fn a_gain_with_a_new_risk_is_still_regressed() {
    let (a, mut b) = reuse_story();
    b.time_wait.client = tw(60, 0, 190);
    let j = judge(&[a], &[b]);
    assert_eq!(j.verdict, Verdict::Regressed, "{j:#?}");
    assert!(
        j.reason.contains("client dropped") && j.reason.contains(", although EADDRNOTAVAIL"),
        "{}",
        j.reason
    );
}

#[test]
fn noise_is_no_effect() {
    let a = Fixture {
        ok_per_second: vec![98, 103, 100, 97, 102],
        p50_us: 1000,
        p99_us: 2000,
        ..Fixture::default()
    };
    let b = Fixture {
        ok_per_second: vec![101, 99, 104, 98, 100],
        p50_us: 1150,
        p99_us: 2400,
        ..Fixture::default()
    };
    let j = judge(&[a.record()], &[b.record()]);
    assert_eq!(j.verdict, Verdict::NoEffect, "{j:#?}");
    assert!(
        j.reason.starts_with("Nothing changed beyond noise"),
        "{}",
        j.reason
    );
    assert_eq!(metric(&j, "ok_per_s").significant, Some(false));
}

#[test]
fn a_large_latency_change_counts_even_from_one_run() {
    let a = Fixture::default();
    let b = Fixture {
        p99_us: 1_200_000,
        ..Fixture::default()
    };
    let j = judge(&[a.record()], &[b.record()]);
    assert_eq!(j.verdict, Verdict::Regressed, "{j:#?}");
    assert_eq!(j.reason, "P99 latency rose from 2.00 ms to 1200.00 ms.");
    // A doubling, as two identical runs on a busy machine show: noise.
    let noisy = Fixture {
        p99_us: 80_700,
        ..Fixture::default()
    };
    let calm = Fixture {
        p99_us: 41_400,
        ..Fixture::default()
    };
    let j = judge(&[calm.record()], &[noisy.record()]);
    assert_eq!(metric(&j, "latency_p99_us").effect, Effect::Same);
    assert_eq!(j.verdict, Verdict::NoEffect);
}

#[test]
fn repetitions_are_judged_by_their_spread() {
    let run = |ok: u64, p99: u64| {
        Fixture {
            ok_per_second: vec![ok; 5],
            p99_us: p99,
            ..Fixture::default()
        }
        .record()
    };
    // Throughput differs by 10 % with a spread of 1: significant. p99 differs by 20 % with a
    // spread of 30 %: not.
    let a = [run(100, 2000), run(101, 1400), run(99, 2600)];
    let b = [run(110, 2400), run(111, 1800), run(109, 3000)];
    let j = judge(&a, &b);
    let tp = metric(&j, "ok_per_s");
    assert_eq!(
        (tp.effect, tp.significant),
        (Effect::Better, Some(true)),
        "{tp:#?}"
    );
    assert!(
        tp.noise.starts_with("3 repetitions against 3"),
        "{}",
        tp.noise
    );
    assert_eq!(metric(&j, "latency_p99_us").effect, Effect::Same);
    assert_eq!(j.verdict, Verdict::Improved);
}

#[test]
fn proportions() {
    assert_eq!(proportion_z(0, 100, 0, 100), 0.0);
    assert_eq!(proportion_z(0, 0, 5, 100), 0.0);
    assert!(proportion_z(150, 250, 0, 250) < -10.0);
    assert!(proportion_z(2, 1000, 3, 1000).abs() < 1.0);
}

#[test]
fn unknown_time_wait_figures_are_left_out() {
    let (mut a, b) = reuse_story();
    a.time_wait.client = TimeWaitSide::default();
    let j = judge(&[a], &[b]);
    assert!(
        j.metrics
            .iter()
            .all(|m| !m.metric.starts_with("time_wait.client"))
    );
    assert!(
        j.metrics
            .iter()
            .any(|m| m.metric == "time_wait.server.peak")
    );
}
