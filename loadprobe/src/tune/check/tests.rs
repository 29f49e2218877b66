use super::*;
use crate::kernel::PortRange;
use crate::kernel::tcp::Reuse;
use crate::model::Mode;
use crate::testing::{in_fresh_netns, require_root};
use crate::tune::predict::widened;

/// This kernel's defaults (docs/kernel.md §5), with `changes` applied.
fn input(changes: &[(&str, &str)]) -> Input {
    let mut sysctls: BTreeMap<String, String> = [
        ("net.ipv4.tcp_tw_reuse", "2"),
        ("net.ipv4.tcp_tw_reuse_delay", "1000"),
        ("net.ipv4.tcp_timestamps", "1"),
        ("net.ipv4.tcp_fin_timeout", "60"),
        ("net.ipv4.tcp_max_tw_buckets", "131072"),
        ("net.ipv4.ip_local_port_range", "32768 60999"),
        ("net.ipv4.ip_local_reserved_ports", ""),
        ("net.ipv4.ip_unprivileged_port_start", "1024"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in changes {
        sysctls.insert(k.to_string(), v.to_string());
    }
    let range = PortRange {
        low: 32768,
        high: 60999,
    };
    Input {
        netns: 1,
        release: "6.18.0".to_string(),
        sysctls,
        ports: Some(Ports {
            range,
            usable: range.size(),
        }),
        problems: Vec::new(),
    }
}

fn workload(mode: Mode, rate: f64, target: &str) -> Workload {
    Workload {
        mode,
        rate,
        target: Some(target.parse().unwrap()),
    }
}

fn has_finding(r: &Report, key: &str, severity: Severity, text: &str) -> bool {
    r.findings
        .iter()
        .any(|f| f.key == key && f.severity == severity && f.message.contains(text))
}

#[test]
fn client_close_above_port_range_rate_exhausts_and_gets_a_fix() {
    // 28232 ports / 60 s = 470/s; 1000/s exhausts them in 28.2 s.
    let r = analyse(
        &input(&[("net.ipv4.tcp_tw_reuse", "0")]),
        Some(&workload(Mode::ClientClose, 1000.0, "10.0.0.2")),
    );
    let p = r.prediction.as_ref().unwrap();
    assert_eq!(p.ports.reuse, Reuse::Off);
    assert_eq!(p.ports.usable, Some(28232));
    let t = p.ports.exhausted_after_seconds.unwrap();
    assert_eq!(t, 28.2);
    assert!((p.ports.sustainable_rate.unwrap() - 470.5).abs() < 0.1);
    assert_eq!(p.client.time_wait, 28232);
    assert_eq!(p.client.wanted, 60000);
    assert_eq!(p.client.limited_by, Some("ports"));
    assert_eq!(p.server.time_wait, 0);
    assert!(has_finding(
        &r,
        "net.ipv4.ip_local_port_range",
        Severity::Critical,
        "28.2 s"
    ));

    // 1250/s x 60 s = 75000 ports do not fit in 1024-65535: reuse first, then the others.
    let changes: Vec<&str> = r
        .recommendations
        .iter()
        .map(|r| r.change.as_str())
        .collect();
    assert_eq!(changes[0], "net.ipv4.tcp_tw_reuse=1", "{changes:?}");
    assert!(r.recommendations[0].sustains_rate.unwrap() >= 1250.0);
    assert!(changes[1].starts_with("loadprobe run --source-ips with 3 addresses"));
    assert!(changes[2].starts_with("--mode server-close"));
    assert!(
        r.recommendations
            .iter()
            .all(|r| !r.change.contains("recycle"))
    );

    // At 600/s a wider range is enough and comes first: 45000 ports.
    let r = analyse(
        &input(&[("net.ipv4.tcp_tw_reuse", "0")]),
        Some(&workload(Mode::ClientClose, 600.0, "10.0.0.2")),
    );
    let first = &r.recommendations[0];
    assert_eq!(first.change, "net.ipv4.ip_local_port_range=20536 65535");
    assert!(first.sustains_rate.unwrap() >= 750.0, "{first:?}");
}

#[test]
fn reuse_2_does_not_help_a_remote_target_but_does_loopback() {
    let remote = analyse(
        &input(&[]),
        Some(&workload(Mode::ClientClose, 1000.0, "10.0.0.2")),
    );
    let p = remote.prediction.as_ref().unwrap();
    assert_eq!(p.ports.reuse, Reuse::LoopbackOnly);
    assert!(p.ports.exhausted_after_seconds.is_some());
    assert!(
        p.notes.iter().any(|n| n.contains("reuse won't help")),
        "{:?}",
        p.notes
    );
    assert!(has_finding(
        &remote,
        "net.ipv4.tcp_tw_reuse",
        Severity::Warning,
        "not help"
    ));
    assert_eq!(remote.recommendations[0].change, "net.ipv4.tcp_tw_reuse=1");

    let local = analyse(
        &input(&[]),
        Some(&workload(Mode::ClientClose, 1000.0, "127.0.0.1")),
    );
    let p = local.prediction.as_ref().unwrap();
    assert_eq!(p.ports.reuse, Reuse::Applies);
    assert_eq!(p.ports.hold_seconds, 1.0);
    assert_eq!(p.ports.exhausted_after_seconds, None);
    assert!(
        local.recommendations.is_empty(),
        "{:?}",
        local.recommendations
    );

    // Reuse without timestamps does nothing.
    let r = analyse(
        &input(&[
            ("net.ipv4.tcp_tw_reuse", "1"),
            ("net.ipv4.tcp_timestamps", "0"),
        ]),
        Some(&workload(Mode::ClientClose, 1000.0, "10.0.0.2")),
    );
    let p = r.prediction.as_ref().unwrap();
    assert_eq!(p.ports.reuse, Reuse::NoTimestamps);
    assert!(p.ports.exhausted_after_seconds.is_some());
    assert_eq!(r.recommendations[0].change, "net.ipv4.tcp_timestamps=1");
    assert_eq!(r.recommendations[0].side, crate::tune::Place::Both);
}

#[test]
fn fin_timeout_folklore_is_flagged() {
    let r = analyse(&input(&[("net.ipv4.tcp_fin_timeout", "30")]), None);
    assert!(has_finding(
        &r,
        "net.ipv4.tcp_fin_timeout",
        Severity::Warning,
        "does not shorten TIME_WAIT"
    ));
    assert!(r.prediction.is_none() && r.recommendations.is_empty());
    let r = analyse(&input(&[("net.ipv4.tcp_fin_timeout", "64")]), None);
    assert!(has_finding(
        &r,
        "net.ipv4.tcp_fin_timeout",
        Severity::Warning,
        "= 8 s"
    ));
    let r = analyse(&input(&[]), None);
    assert!(
        !r.findings
            .iter()
            .any(|f| f.key == "net.ipv4.tcp_fin_timeout")
    );
    assert!(has_finding(
        &r,
        "net.ipv4.tcp_tw_recycle",
        Severity::Info,
        "4.12"
    ));
}

#[test]
fn server_close_puts_time_wait_on_the_server() {
    let r = analyse(
        &input(&[]),
        Some(&workload(Mode::ServerClose, 1000.0, "10.0.0.2")),
    );
    let p = r.prediction.as_ref().unwrap();
    assert_eq!(p.client.time_wait, 0);
    assert_eq!(p.server.time_wait, 60000);
    assert_eq!(p.ports.exhausted_after_seconds, None);
    assert_eq!(p.ports.sustainable_rate, None);
    assert!(r.recommendations.is_empty(), "{:?}", r.recommendations);

    // Past tcp_max_tw_buckets: overflow predicted and a higher limit on the server.
    let r = analyse(
        &input(&[("net.ipv4.tcp_max_tw_buckets", "30000")]),
        Some(&workload(Mode::ServerClose, 1000.0, "10.0.0.2")),
    );
    let p = r.prediction.as_ref().unwrap();
    assert_eq!(p.server.time_wait, 30000);
    assert_eq!(p.server.limited_by, Some("tcp_max_tw_buckets"));
    assert!((p.server.overflow_per_second - 500.0).abs() < 1e-9);
    assert!(has_finding(
        &r,
        "net.ipv4.tcp_max_tw_buckets",
        Severity::Critical,
        "500/s"
    ));
    assert_eq!(r.recommendations.len(), 1);
    assert_eq!(
        r.recommendations[0].change,
        "net.ipv4.tcp_max_tw_buckets=75000"
    );
    assert_eq!(r.recommendations[0].side, crate::tune::Place::Server);
}

#[test]
fn keep_alive_and_reset_leave_no_time_wait() {
    for mode in [Mode::KeepAlive, Mode::Reset] {
        let r = analyse(&input(&[]), Some(&workload(mode, 5000.0, "10.0.0.2")));
        let p = r.prediction.as_ref().unwrap();
        assert_eq!((p.client.time_wait, p.server.time_wait), (0, 0), "{mode}");
        assert_eq!(p.ports.exhausted_after_seconds, None);
        assert!(r.recommendations.is_empty());
    }
}

#[test]
fn small_bucket_limit_overflows_before_ports_run_out() {
    let r = analyse(
        &input(&[
            ("net.ipv4.tcp_tw_reuse", "0"),
            ("net.ipv4.tcp_max_tw_buckets", "10000"),
        ]),
        Some(&workload(Mode::ClientClose, 1000.0, "10.0.0.2")),
    );
    let p = r.prediction.as_ref().unwrap();
    assert_eq!(p.client.time_wait, 10000);
    assert_eq!(p.client.limited_by, Some("tcp_max_tw_buckets"));
    assert_eq!(p.ports.exhausted_after_seconds, None);
    // Ports would run out without the overflow, so a port change comes with the limit.
    let last = r.recommendations.last().unwrap();
    assert_eq!(last.change, "net.ipv4.tcp_max_tw_buckets=75000");
    assert!(last.why.contains("port change"), "{}", last.why);
}

#[test]
fn port_range_widening() {
    let pr = |low, high| PortRange { low, high };
    assert_eq!(
        widened(pr(32768, 60999), 30000, 1024),
        Some(pr(32768, 62767))
    );
    assert_eq!(
        widened(pr(32768, 60999), 45000, 1024),
        Some(pr(20536, 65535))
    );
    assert_eq!(
        widened(pr(32768, 60999), 64512, 1024),
        Some(pr(1024, 65535))
    );
    assert_eq!(widened(pr(32768, 60999), 64513, 1024), None);
}

#[test]
fn json_shape_is_stable() {
    let r = analyse(
        &input(&[]),
        Some(&workload(Mode::ClientClose, 100.0, "127.0.0.1")),
    );
    let v = serde_json::to_value(&r).unwrap();
    for key in [
        "netns",
        "sysctls",
        "findings",
        "prediction",
        "recommendations",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    let line = &v["sysctls"][0];
    assert_eq!(line["key"], "net.ipv4.tcp_tw_reuse");
    assert_eq!(line["value"], "2");
    assert_eq!(line["per_netns"], true);
    assert!(line["meaning"].is_string());
    assert!(
        v["sysctls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| { s["key"] == "net.ipv4.tcp_tw_recycle" && s["value"].is_null() })
    );
    assert!(v["findings"][0]["severity"].is_string());
    assert_eq!(v["prediction"]["ports"]["reuse"], "applies");
    let none = serde_json::to_value(analyse(&input(&[]), None)).unwrap();
    assert!(none.get("prediction").is_none());
}

#[test]
fn check_in_a_fresh_netns_uses_its_port_range() {
    if !require_root("tune::check::check_in_a_fresh_netns_uses_its_port_range") {
        return;
    }
    let host_range = kernel::read_sysctl("net.ipv4.ip_local_port_range").unwrap();
    let host_netns = crate::probe::current_netns().unwrap();
    let report = in_fresh_netns(|| {
        kernel::write_sysctl("net.ipv4.ip_local_port_range", "40000 40999").unwrap();
        kernel::write_sysctl("net.ipv4.tcp_tw_reuse", "0").unwrap();
        let input = Input::read().unwrap();
        analyse(
            &input,
            Some(&workload(Mode::ClientClose, 100.0, "10.0.0.2")),
        )
    });
    assert_ne!(report.netns, u64::from(host_netns));
    let p = report.prediction.as_ref().unwrap();
    assert_eq!(p.ports.usable, Some(1000));
    assert_eq!(p.ports.reuse, Reuse::Off);
    assert_eq!(p.ports.exhausted_after_seconds, Some(10.0));
    let value = |key: &str| {
        report
            .sysctls
            .iter()
            .find(|s| s.key == key)
            .and_then(|s| s.value.clone())
    };
    assert_eq!(
        value("net.ipv4.ip_local_port_range").as_deref(),
        Some("40000 40999")
    );
    // Global only: absent in a child namespace.
    assert_eq!(value("net.ipv4.tcp_max_orphans"), None);
    assert_eq!(
        kernel::read_sysctl("net.ipv4.ip_local_port_range").unwrap(),
        host_range
    );
}
