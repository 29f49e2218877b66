//! `loadprobe run` end to end, with the probe attached: each mode against the embedded server
//! and against Debian's nginx, and port exhaustion on purpose over a veth pair. Each test makes
//! its own network namespace(s); the probe's counts are checked against what the mode asks for.
//!
//! Needs root (or fails under `LOADPROBE_REQUIRE_BPF=1`) and nginx (`cargo xtask setup`).

use std::process::{Command, Output, Stdio};

use loadprobe::tune::netns::{Host, Topology};
use loadprobe_tests::{Netns, Nginx, loadprobe_bin, require_root, tempdir, wait_for_port};
use serde_json::Value;

/// Runs `loadprobe run ARGS -o record.json` inside `netns`; returns the record and the output.
fn run(netns: &str, args: &[&str]) -> (Value, Output) {
    let dir = tempdir(netns);
    let record = dir.join("record.json");
    let output = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(loadprobe_bin())
        .arg("run")
        .args(args)
        .arg("-o")
        .arg(&record)
        .output()
        .expect("ip netns exec loadprobe run");
    let text = std::fs::read_to_string(&record).unwrap_or_else(|e| {
        panic!(
            "no record ({e}); stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    (serde_json::from_str(&text).expect("record is JSON"), output)
}

fn num(record: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(record, |v, key| &v[key])
        .as_u64()
        .unwrap_or_else(|| panic!("{path} is not a number in the record"))
}

/// What a mode must show: the closer of (nearly) every connection and where TIME_WAIT lands.
fn check_mode(record: &Value, mode: &str) {
    let errors: u64 = record["requests"]["errors"]
        .as_object()
        .expect("requests.errors")
        .values()
        .map(|v| v.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        num(record, "requests.ok") + errors,
        num(record, "requests.total"),
        "ok + errors = total"
    );
    assert!(num(record, "requests.ok") > 0, "the run did some work");
    assert_eq!(
        record["probe"]["attached"],
        Value::Bool(true),
        "{}",
        record["probe"]
    );
    assert_eq!(num(record, "probe.lost_events"), 0);
    // Reported, whatever it is: a program interrupted by a hit of its own tracepoint is rare,
    // and the burst test in timewait.rs holds the probe to the kernel's exact count.
    num(record, "probe.skipped_events");

    let (closer, tw_side) = match mode {
        "client-close" | "keep-alive" => ("client", Some("client")),
        "server-close" => ("server", Some("server")),
        "reset" => ("client-reset", None),
        other => panic!("unknown mode {other}"),
    };
    let closers = record["connections"]["closer"]
        .as_object()
        .expect("closers");
    let closed: u64 = closers
        .iter()
        .filter(|(k, _)| *k != "unknown")
        .map(|(_, v)| v.as_u64().unwrap_or(0))
        .sum();
    let wanted = num(record, &format!("connections.closer.{closer}"));
    assert!(
        closed > 0 && wanted * 100 >= closed * 99,
        "{mode}: {wanted} of {closed} closed by {closer}: {closers:?}"
    );
    for side in ["client", "server"] {
        let entered = num(record, &format!("time_wait.{side}.entered"));
        if tw_side == Some(side) {
            // Every closing end made a timewait socket (none overflowed here).
            assert!(
                entered * 100 >= wanted * 99,
                "{mode}: {entered} TIME_WAIT on the {side} for {wanted} connections"
            );
        } else {
            assert!(
                entered * 100 <= closed,
                "{mode}: {entered} TIME_WAIT on the {side}, expected none"
            );
        }
    }
    assert_eq!(record["time_wait"]["source"], "probe");
}

const MODES: [&str; 4] = ["client-close", "server-close", "keep-alive", "reset"];

#[test]
fn every_mode_against_the_embedded_server() {
    if !require_root("run against the embedded server") {
        return;
    }
    let netns = Netns::for_test("run-embedded");
    for mode in MODES {
        let (record, _) = run(
            netns.name(),
            &["--mode", mode, "--users", "16", "--duration", "2s"],
        );
        check_mode(&record, mode);
    }
}

/// With a warmup, the probe's counts cover the measured window like the driver's: the closers
/// of the connections that finished in it add up to those opened in it, give or take the ones
/// in flight at either end of it (one per user at each).
#[test]
fn warmup_is_left_out_of_the_probe_counts() {
    if !require_root("run with a warmup") {
        return;
    }
    let netns = Netns::for_test("run-warmup");
    let (record, _) = run(
        netns.name(),
        &[
            "--mode",
            "client-close",
            "--users",
            "8",
            "--warmup",
            "1s",
            "--duration",
            "1s",
        ],
    );
    let opened = num(&record, "connections.opened");
    assert!(opened > 1000, "the run did some work: {opened}");
    let closers: u64 = record["connections"]["closer"]
        .as_object()
        .expect("closer counts")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    let entered = num(&record, "time_wait.client.entered");
    for (what, n) in [("closers", closers), ("client TIME_WAIT entered", entered)] {
        assert!(
            n.abs_diff(opened) <= 2 * 8,
            "{what} {n} for {opened} connections opened in the window"
        );
    }
}

#[test]
fn every_mode_against_nginx() {
    if !require_root("run against nginx") {
        return;
    }
    let netns = Netns::for_test("run-nginx");
    let _nginx = Nginx::start(netns.name(), 8080);
    for mode in MODES {
        let (record, _) = run(
            netns.name(),
            &[
                "--target",
                "http://127.0.0.1:8080/",
                "--mode",
                mode,
                "--users",
                "16",
                "--duration",
                "2s",
            ],
        );
        check_mode(&record, mode);
    }
}

/// A client namespace with 100 ephemeral ports and no TIME_WAIT reuse, talking over veth to a
/// server namespace: the fourth hundred connections cannot get a port.
#[test]
fn port_exhaustion_is_counted_and_explained() {
    if !require_root("port exhaustion over veth") {
        return;
    }
    let topo = Topology::create(&format!("lp-exh-{}", std::process::id())).expect("topology");
    topo.set_sysctl(Host::Client, "net.ipv4.ip_local_port_range", "40000 40099")
        .expect("port range");
    topo.set_sysctl(Host::Client, "net.ipv4.tcp_tw_reuse", "0")
        .expect("tcp_tw_reuse");
    let server_addr = format!("{}:8080", topo.server_addr());
    let mut serve = topo
        .command(Host::Server, loadprobe_bin())
        .args(["serve", "--listen", &server_addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("loadprobe serve");
    wait_for_port(&topo.name(Host::Server), &server_addr);

    let (record, output) = run(
        &topo.name(Host::Client),
        &[
            "--target",
            &format!("http://{server_addr}/"),
            "--mode",
            "client-close",
            "--users",
            "4",
            "--requests",
            "300",
        ],
    );
    serve.kill().ok();
    serve.wait().ok();

    let exhausted = num(&record, "requests.errors.EADDRNOTAVAIL");
    assert!(exhausted > 0, "{}", record["requests"]);
    // The 100 ports allow about 100 connections in a minute (one may still be connecting).
    let ok = num(&record, "requests.ok");
    assert!((95..=101).contains(&ok), "ok {ok}");
    assert_eq!(ok + exhausted, num(&record, "requests.total"));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("EADDRNOTAVAIL") && report.contains("port"),
        "the report names the cause:\n{report}"
    );
    assert!(output.status.code().is_some(), "no crash");
}

/// `--probe-floor` (what `cargo xtask bench --floor` measures) attaches every program of the
/// probe, and its record claims no probe results: closers unknown, no TIME_WAIT counts.
#[test]
fn probe_floors_attach_every_program_and_claim_no_results() {
    if !require_root("run at the probe's cost floors") {
        return;
    }
    let netns = Netns::for_test("run-floor");
    for floor in ["attached", "filtered"] {
        let dir = tempdir("run-floor");
        let record = dir.join("record.json");
        let child = Command::new("ip")
            .args(["netns", "exec", netns.name()])
            .arg(loadprobe_bin())
            .args(["run", "--mode", "server-close", "--users", "8"])
            .args(["--duration", "3s", "--probe-floor", floor, "-o"])
            .arg(&record)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec loadprobe run");
        // `ip netns exec` execs loadprobe: same pid. Its links name the tracepoints.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let mut attached: Vec<String> = std::fs::read_dir(format!("/proc/{}/fdinfo", child.id()))
            .expect("fdinfo")
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .filter(|info| info.contains("link_type:\traw_tracepoint"))
            .filter_map(|info| {
                let line = info.lines().find(|l| l.starts_with("tp_name:"))?;
                Some(line.trim_start_matches("tp_name:").trim().to_string())
            })
            .collect();
        attached.sort();
        let output = child.wait_with_output().expect("loadprobe run");
        assert!(output.status.success(), "{floor}: {output:?}");
        assert_eq!(
            attached,
            [
                "inet_sock_set_state",
                "inet_sock_set_state",
                "tcp_receive_reset",
                "tcp_send_reset",
                "timer_cancel",
                "timer_expire_entry",
                "timer_start",
            ],
            "{floor}: the probe's programs while the run goes"
        );
        let record: Value =
            serde_json::from_str(&std::fs::read_to_string(&record).expect("record")).expect("JSON");
        let _ = std::fs::remove_dir_all(&dir);
        let opened = num(&record, "connections.opened");
        assert!(opened > 1000, "{floor}: the run did some work: {opened}");
        assert_eq!(num(&record, "connections.closer.unknown"), opened);
        assert_eq!(record["probe"]["attached"], Value::Bool(false));
        let reason = record["probe"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with(&format!("cost floor \"{floor}\"")),
            "{floor}: {reason}"
        );
        assert_eq!(record["time_wait"]["server"]["entered"], Value::Null);
    }
}
