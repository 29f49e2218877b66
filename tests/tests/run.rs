//! `loadprobe run` end to end, with the probe attached: each mode against the embedded server
//! and against Debian's nginx, and port exhaustion on purpose over a veth pair. Each test makes
//! its own network namespace(s); the probe's counts are checked against what the mode asks for.
//!
//! Needs root (or fails under `LOADPROBE_REQUIRE_BPF=1`) and nginx (`cargo xtask setup`).

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::process::{Command, Stdio};

use loadprobe::model::Side;
use loadprobe::tune::netns::Topology;
use std::io::Write;

use loadprobe_tests::{
    Capture, Killed, Netns, Nginx, OK_RESPONSE, TestServer, loadprobe_bin, num, one_at_a_time,
    read_request_head, require_root, run_in as run, tempdir, wait_for_port,
};
use serde_json::Value;

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
    // The probe's reads of the kernel all succeed: its offsets fit this kernel.
    assert_eq!(num(record, "probe.read_errors"), 0);
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
    let _one = one_at_a_time();
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
    let _one = one_at_a_time();
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
    let _one = one_at_a_time();
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
    let _one = one_at_a_time();
    if !require_root("port exhaustion over veth") {
        return;
    }
    let topo = Topology::create(&format!("lp-exh-{}", std::process::id())).expect("topology");
    topo.set_sysctl(Side::Client, "net.ipv4.ip_local_port_range", "40000 40099")
        .expect("port range");
    topo.set_sysctl(Side::Client, "net.ipv4.tcp_tw_reuse", "0")
        .expect("tcp_tw_reuse");
    let server_addr = format!("{}:8080", topo.server_addr());
    let serve = Killed(
        topo.command(Side::Server, loadprobe_bin())
            .args(["serve", "--listen", &server_addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("loadprobe serve"),
    );
    wait_for_port(&topo.name(Side::Server), &server_addr);

    let (record, output) = run(
        &topo.name(Side::Client),
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
    drop(serve);

    let exhausted = num(&record, "requests.errors.EADDRNOTAVAIL");
    assert!(exhausted > 0, "{}", record["requests"]);
    // The 100 ports allow about 100 connections in a minute (one may still be connecting).
    let ok = num(&record, "requests.ok");
    assert!((95..=101).contains(&ok), "ok {ok}");
    assert_eq!(ok + exhausted, num(&record, "requests.total"));
    // A connect() that failed on this host sent no SYN: an error of the request, not a
    // connection. The closers add up to the connections opened, all closed by the client.
    let opened = num(&record, "connections.opened");
    let closers = &record["connections"]["closer"];
    assert_eq!(num(&record, "connections.closer.refused"), 0, "{closers}");
    assert_eq!(
        num(&record, "connections.closer.client"),
        opened,
        "{closers}"
    );
    assert_eq!(num(&record, "connections.mismatches"), 0, "{closers}");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("EADDRNOTAVAIL") && report.contains("port"),
        "the report names the cause:\n{report}"
    );
    assert!(output.status.code().is_some(), "no crash");
}

/// The tracepoints `pid`'s raw tracepoint links are attached to, sorted (one per link).
fn raw_tracepoint_links(pid: u32) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut links: Vec<String> = fds
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|info| info.contains("link_type:\traw_tracepoint"))
        .filter_map(|info| {
            let line = info.lines().find(|l| l.starts_with("tp_name:"))?;
            Some(line.trim_start_matches("tp_name:").trim().to_string())
        })
        .collect();
    links.sort();
    links
}

/// `--probe-floor` (what `cargo xtask bench --floor` measures) attaches every program of the
/// probe, and its record claims no probe results: closers unknown, no TIME_WAIT counts.
#[test]
fn probe_floors_attach_every_program_and_claim_no_results() {
    let _one = one_at_a_time();
    if !require_root("run at the probe's cost floors") {
        return;
    }
    let netns = Netns::for_test("run-floor");
    for floor in ["attached", "filtered"] {
        let dir = tempdir("run-floor");
        let record = dir.join("record.json");
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns.name()])
            .arg(loadprobe_bin())
            .args(["run", "--mode", "server-close", "--users", "8"])
            .args(["--duration", "5s", "--probe-floor", floor, "-o"])
            .arg(&record)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec loadprobe run");
        // `ip netns exec` execs loadprobe: same pid. The probe attaches after the reachability
        // check, which takes a while on a loaded machine: look at its links for as long as the
        // run goes and keep the fullest set seen.
        let mut attached = Vec::new();
        while child.try_wait().expect("loadprobe run").is_none() {
            let now = raw_tracepoint_links(child.id());
            if now.len() > attached.len() {
                attached = now;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
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

/// A server that answers and never closes: each client close leaves an orphaned FIN_WAIT2
/// socket (`ss` shows fin-wait-2, no time-wait). The record and the report count them as
/// FIN_WAIT2, not TIME_WAIT, as many as the kernel holds, and the port budget says where the
/// ports wait.
#[test]
fn fin_wait2_orphans_are_counted_apart_from_time_wait() {
    let _one = one_at_a_time();
    if !require_root("run against a server that never closes") {
        return;
    }
    let netns = Netns::for_test("run-fw2");
    let server = TestServer::start(&netns, "127.0.0.1:8090".parse().unwrap(), |mut s| {
        if read_request_head(&mut s) {
            let _ = s.write_all(OK_RESPONSE);
        }
        Some(s)
    });
    let (record, output) = run(
        netns.name(),
        &[
            "--target",
            "http://127.0.0.1:8090/",
            "--mode",
            "client-close",
            "--users",
            "4",
            "--requests",
            "300",
        ],
    );
    let sockets = netns.sockets();
    let count = |state: &str| {
        sockets
            .iter()
            .filter(|s| s.state == state && s.peer == server.addr)
            .count() as u64
    };
    let (fin_wait2, time_wait) = (count("FIN-WAIT-2"), count("TIME-WAIT"));
    drop(server);
    assert_eq!(num(&record, "requests.ok"), 300, "{}", record["requests"]);
    assert_eq!((fin_wait2, time_wait), (300, 0), "the kernel's view");
    let tw = &record["time_wait"];
    assert_eq!(num(&record, "time_wait.client.entered"), time_wait, "{tw}");
    assert_eq!(num(&record, "time_wait.client.open"), 0, "{tw}");
    // Exact, but for timer hits the kernel skipped (a hit interrupting the same program),
    // which the probe reports.
    let skipped = num(&record, "probe.skipped_events");
    let seen = num(&record, "time_wait.fin_wait2.client.entered");
    assert!(
        seen <= fin_wait2 && seen + skipped >= fin_wait2,
        "{seen} FIN_WAIT2 seen, {skipped} hits skipped, kernel {fin_wait2}: {tw}"
    );
    assert_eq!(
        num(&record, "time_wait.fin_wait2.client.open"),
        seen,
        "{tw}"
    );
    assert_eq!(
        num(&record, "time_wait.fin_wait2.client.to_time_wait"),
        0,
        "{tw}"
    );
    assert_eq!(num(&record, "connections.closer.client"), 300);
    let report = String::from_utf8_lossy(&output.stdout);
    let line = |start: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no {start} line in:\n{report}"))
            .to_string()
    };
    assert!(line("TIME_WAIT").contains("client entered 0,"), "{report}");
    assert!(
        line("FIN_WAIT2").contains(&format!("client entered {seen},")),
        "{report}"
    );
    let ports = line("ports");
    assert!(
        ports.contains("FIN_WAIT2") && !ports.contains("TIME_WAIT"),
        "the port budget agrees: {ports}"
    );
}

/// A server that reads the request's head only and closes with a 2 MB body unread: its RST is
/// the first closing segment on the wire, even where the client's close() had already queued
/// its FIN behind body bytes not yet sent. The run's closers agree with a capture taken
/// meanwhile: none of them is claimed for an end the wire does not show first (the order may
/// be unknown, never guessed).
#[test]
fn closers_against_a_server_that_drops_the_body_agree_with_the_capture() {
    let _one = one_at_a_time();
    if !require_root("run against a server that drops the body") {
        return;
    }
    let netns = Netns::for_test("run-rst-body");
    let dir = tempdir("run-rst-body");
    let body = dir.join("body");
    std::fs::write(&body, vec![b'x'; 2 << 20]).expect("body file");
    let capture = Capture::start(&netns, 8092);
    let server = TestServer::start(&netns, "127.0.0.1:8092".parse().unwrap(), |mut s| {
        read_request_head(&mut s);
        None
    });
    let (record, _) = run(
        netns.name(),
        &[
            "--target",
            "http://127.0.0.1:8092/",
            "--mode",
            "client-close",
            "--users",
            "4",
            "--requests",
            "300",
            "--body-file",
            body.to_str().unwrap(),
        ],
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    // The first connection is the run's reachability check, made before the probe attaches.
    let wire = Capture::first_closers(&capture.stop(), 8092);
    let mut on_wire = std::collections::BTreeMap::new();
    for (_, closer) in &wire[1..] {
        *on_wire.entry(closer.unwrap_or("none")).or_insert(0u64) += 1;
    }
    let closers = &record["connections"]["closer"];
    let probe = |name: &str| num(&record, &format!("connections.closer.{name}"));
    let wire_n = |name: &str| on_wire.get(name).copied().unwrap_or(0);
    assert_eq!(
        wire.len() - 1,
        300,
        "connections in the capture: {on_wire:?}"
    );
    assert_eq!(wire_n("server-reset"), 300, "the capture: {on_wire:?}");
    assert_eq!(probe("client"), 0, "probe {closers}, capture {on_wire:?}");
    assert_eq!(
        probe("server-reset") + probe("unknown"),
        300,
        "probe {closers}, capture {on_wire:?}, opened {}, probe {}",
        record["connections"]["opened"],
        record["probe"]
    );
    eprintln!("probe {closers}; capture {on_wire:?}");
}

/// Two runs at once against one `loadprobe serve`, one client-close and one server-close: each
/// run's probe counts its own connections only (both the client's ends and the server's), so
/// each one's closers add up to the connections it opened, all closed the way its mode asks.
#[test]
fn concurrent_runs_against_one_target_count_their_own_connections() {
    let _one = one_at_a_time();
    if !require_root("two runs against one target") {
        return;
    }
    let netns = Netns::for_test("run-two");
    let serve = Killed(
        Command::new("ip")
            .args(["netns", "exec", netns.name()])
            .arg(loadprobe_bin())
            .args(["serve", "--listen", "127.0.0.1:8093"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("loadprobe serve"),
    );
    wait_for_port(netns.name(), "127.0.0.1:8093");
    let args = |mode: &'static str| {
        [
            "--target",
            "http://127.0.0.1:8093/",
            "--mode",
            mode,
            "--users",
            "4",
            "--duration",
            "2s",
        ]
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(netns.name(), &args("client-close")));
        let b = s.spawn(|| run(netns.name(), &args("server-close")));
        (a.join().unwrap().0, b.join().unwrap().0)
    });
    drop(serve);
    for (record, mode, closer, tw_side, other_side) in [
        (&a, "client-close", "client", "client", "server"),
        (&b, "server-close", "server", "server", "client"),
    ] {
        let opened = num(record, "connections.opened");
        assert!(opened > 500, "{mode}: the run did some work: {opened}");
        let closers = &record["connections"]["closer"];
        let total: u64 = closers
            .as_object()
            .expect("closers")
            .values()
            .filter_map(Value::as_u64)
            .sum();
        // Give or take the connections in flight at either end of the window (one per user).
        assert!(
            total.abs_diff(opened) <= 2 * 4,
            "{mode}: closers {closers} for {opened} opened"
        );
        let wanted = num(record, &format!("connections.closer.{closer}"));
        assert!(
            wanted + 2 * 4 >= total,
            "{mode}: {closers}; probe {}",
            record["probe"]
        );
        let entered = num(record, &format!("time_wait.{tw_side}.entered"));
        assert!(
            entered.abs_diff(wanted) <= 2 * 4,
            "{mode}: {entered} TIME_WAIT on the {tw_side} for {wanted}"
        );
        assert_eq!(
            num(record, &format!("time_wait.{other_side}.entered")),
            0,
            "{mode}"
        );
    }
}

/// Ctrl-C during the warmup: the measured window never started, so the record counts nothing
/// in it, the probe's figures like the driver's (the warmup's connections are not the
/// window's), and with no completed request the latencies are null, not 0.
#[test]
fn interrupted_in_the_warmup_counts_nothing() {
    let _one = one_at_a_time();
    if !require_root("run interrupted in its warmup") {
        return;
    }
    let netns = Netns::for_test("run-warm-int");
    let dir = tempdir("run-warm-int");
    let path = dir.join("record.json");
    let child = Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .arg(loadprobe_bin())
        .args(["run", "--mode", "client-close", "--users", "8"])
        .args(["--warmup", "6s", "--duration", "2s", "-o"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip netns exec loadprobe run");
    std::thread::sleep(std::time::Duration::from_millis(3000));
    // SAFETY: kill(2) on our own child (`ip netns exec` execs loadprobe: same pid).
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let output = child.wait_with_output().expect("loadprobe run");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no record ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    let record: Value = serde_json::from_str(&text).expect("record is JSON");
    assert_eq!(record["interrupted"], Value::Bool(true));
    assert_eq!(record["probe"]["attached"], Value::Bool(true));
    assert_eq!(num(&record, "requests.total"), 0, "{}", record["requests"]);
    assert_eq!(num(&record, "connections.opened"), 0);
    let closers = &record["connections"]["closer"];
    let total: u64 = closers
        .as_object()
        .expect("closers")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(total, 0, "closers of the window: {closers}");
    assert_eq!(
        num(&record, "time_wait.client.entered"),
        0,
        "{}",
        record["time_wait"]
    );
    for h in ["total", "total_uncorrected", "connect", "first_byte"] {
        let l = &record["latency_us"][h];
        assert_eq!(l["count"], 0, "{h}: {l}");
        for p in ["mean", "p50", "p90", "p99", "p999", "max"] {
            assert_eq!(l[p], Value::Null, "latency_us.{h}.{p}: {l}");
        }
    }
}

/// The target in another namespace, over veth: the run's probe watches the client's namespace
/// only, so the server's TIME_WAIT (where server-close leaves it) is unknown to it. The record
/// and the report say so, with the reason, instead of counting 0.
#[test]
fn a_server_end_the_probe_cannot_see_is_null_not_zero() {
    let _one = one_at_a_time();
    if !require_root("server end in another namespace") {
        return;
    }
    let topo = Topology::create(&format!("lp-unseen-{}", std::process::id())).expect("topology");
    let server_addr = format!("{}:8080", topo.server_addr());
    let serve = Killed(
        topo.command(Side::Server, loadprobe_bin())
            .args(["serve", "--listen", &server_addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("loadprobe serve"),
    );
    wait_for_port(&topo.name(Side::Server), &server_addr);
    let (record, output) = run(
        &topo.name(Side::Client),
        &[
            "--target",
            &format!("http://{server_addr}/"),
            "--mode",
            "server-close",
            "--users",
            "4",
            "--requests",
            "300",
        ],
    );
    drop(serve);
    assert_eq!(num(&record, "requests.ok"), 300, "{}", record["requests"]);
    let tw = &record["time_wait"];
    assert_eq!(tw["source"], "probe", "{tw}");
    for key in ["entered", "peak", "expired", "open"] {
        assert_eq!(
            tw["server"][key],
            Value::Null,
            "time_wait.server.{key}: {tw}"
        );
        assert_eq!(tw["fin_wait2"]["server"][key], Value::Null, "{tw}");
    }
    let why = tw["server_unseen"].as_str().unwrap_or_default();
    assert!(why.contains(&topo.server_addr().to_string()), "{tw}");
    // What the probe does see, it still counts: the client's ends, all closed by the server.
    assert_eq!(num(&record, "connections.closer.server"), 300);
    assert_eq!(num(&record, "time_wait.client.entered"), 0);
    let report = String::from_utf8_lossy(&output.stdout);
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with("TIME_WAIT"))
        .unwrap_or_default();
    assert!(
        line.contains("server n/a (") && line.contains("does not see the server"),
        "{report}"
    );
}

/// `tcp_tw_reuse` with 100 ports: a first run leaves 100 client TIME_WAIT sockets, and a second
/// run's connections take every one of them over. The second run counts those reuses, apart
/// from reuses of its own sockets, as many as the kernel's TWRecycled counter.
#[test]
fn reuse_of_older_time_wait_sockets_is_counted_apart() {
    let _one = one_at_a_time();
    if !require_root("reuse of older TIME_WAIT sockets") {
        return;
    }
    let netns = Netns::for_test("run-reuse-old");
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    netns.sysctl("net.ipv4.tcp_tw_reuse", "1");
    let serve = Killed(
        Command::new("ip")
            .args(["netns", "exec", netns.name()])
            .arg(loadprobe_bin())
            .args(["serve", "--listen", "127.0.0.1:8094"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("loadprobe serve"),
    );
    wait_for_port(netns.name(), "127.0.0.1:8094");
    let args = [
        "--target",
        "http://127.0.0.1:8094/",
        "--mode",
        "client-close",
        "--users",
        "1",
        "--requests",
        "90",
    ];
    let (first, _) = run(netns.name(), &args);
    assert_eq!(num(&first, "time_wait.client.entered"), 90);
    // tcp_tw_reuse takes a TIME_WAIT socket over once it is a second old.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let recycled = || {
        netns
            .exec(&["nstat", "-a", "-z", "TcpExtTWRecycled"])
            .lines()
            .find_map(|l| {
                l.strip_prefix("TcpExtTWRecycled")?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .expect("TcpExtTWRecycled")
    };
    let before = recycled();
    let (second, _) = run(netns.name(), &args);
    let kernel = recycled() - before;
    drop(serve);
    assert_eq!(num(&second, "requests.ok"), 90, "{}", second["requests"]);
    let tw = &second["time_wait"]["client"];
    // 100 ports, 90 of them held by the first run: most connections reuse one of its sockets.
    assert!(kernel >= 80, "the kernel recycled {kernel}");
    // The kernel's count also has the run's reachability check, made before its probe
    // attaches, which may have taken one over too. One reuse more may be missing: in about one
    // fresh-clone suite run in three the probe counted one fewer than that (79 where the
    // kernel made 81, 0 events lost or skipped), a gap not yet found (docs/probe.md).
    let counted =
        num(&second, "time_wait.client.reused_older") + num(&second, "time_wait.client.reused");
    assert!(
        counted <= kernel && kernel - counted <= 2,
        "probe {counted}, kernel {kernel}: {tw}"
    );
    // None of its own sockets is a second old yet: every reuse is of an older one.
    assert_eq!(num(&second, "time_wait.client.reused"), 0, "{tw}");
}

/// Inside a PID namespace of its own, as every container is, a run's process id is not the
/// kernel's global one: the probe still knows the run's own connections (it compares ids in
/// the run's PID namespace), every closer and TIME_WAIT socket counted.
#[test]
fn a_run_in_a_pid_namespace_counts_its_connections() {
    let _one = one_at_a_time();
    if !require_root("a run in a PID namespace") {
        return;
    }
    let netns = Netns::for_test("run-pidns");
    let dir = tempdir("run-pidns");
    let record = dir.join("record.json");
    let output = Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .args(["unshare", "--pid", "--fork", "--mount-proc"])
        .arg(loadprobe_bin())
        .args(["run", "--users", "4", "--requests", "300", "-o"])
        .arg(&record)
        .output()
        .expect("unshare loadprobe run");
    let record = loadprobe_tests::read_record(&record, &output);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(record["probe"]["attached"], true, "{}", record["probe"]);
    assert_eq!(num(&record, "connections.opened"), 300);
    assert_eq!(
        num(&record, "connections.closer.client"),
        300,
        "{}",
        record["connections"]
    );
    assert_eq!(
        num(&record, "time_wait.client.entered"),
        300,
        "{}",
        record["time_wait"]
    );
}

// ---------------------------------------------------------------------------------------------
// HTTPS

/// `loadprobe run --no-probe ARGS` in `netns` that must be refused before any load: one line on
/// stderr, a non-zero exit and no record. Returns the line.
fn refused(netns: &str, args: &[&str]) -> String {
    let dir = tempdir(&format!("{netns}-refused"));
    let record = dir.join("record.json");
    let output = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(loadprobe_bin())
        .args(["run", "--no-probe"])
        .args(args)
        .arg("-o")
        .arg(&record)
        .output()
        .expect("loadprobe run");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!record.exists(), "{args:?}: no load, no record");
    let _ = std::fs::remove_dir_all(&dir);
    stderr
}

/// Handshakes counted in the record: (full, resumed).
fn handshakes(record: &Value) -> (u64, u64) {
    (
        num(record, "tls.full_handshakes"),
        num(record, "tls.resumed_handshakes"),
    )
}

/// Every mode (and keep-alive with --requests-per-conn) over TLS to nginx, IPv4 and IPv6: the
/// closers are the mode's, and without --tls-resume every connection was a full handshake.
#[test]
fn every_mode_against_nginx_over_tls() {
    let _one = one_at_a_time();
    if !require_root("run against nginx over TLS") {
        return;
    }
    let netns = Netns::for_test("run-nginx-tls");
    let pki = loadprobe_tests::Pki::new("nginx-tls");
    let server = pki.server("server", &["localhost", "127.0.0.1", "::1"], false);
    let _nginx = Nginx::start_tls(netns.name(), 8443, &server.cert, &server.key, "");
    let ca = pki.ca.to_str().unwrap();
    let base = |target: &'static str, mode: &'static str| {
        vec![
            "--target",
            target,
            "--cacert",
            ca,
            "--mode",
            mode,
            "--users",
            "8",
            "--duration",
            "2s",
        ]
    };
    let mut runs: Vec<(&str, Vec<&str>)> = MODES
        .iter()
        .map(|mode| (*mode, base("https://127.0.0.1:8443/", mode)))
        .collect();
    let mut per_conn = base("https://127.0.0.1:8443/", "keep-alive");
    per_conn.extend(["--requests-per-conn", "5"]);
    runs.push(("keep-alive", per_conn));
    runs.push(("client-close", base("https://[::1]:8443/", "client-close")));
    let mut named = base("https://127.0.0.1:8443/", "server-close");
    named.extend(["--sni", "localhost"]);
    runs.push(("server-close", named));
    for (mode, args) in runs {
        let (record, output) = run(netns.name(), &args);
        assert!(output.status.success(), "{args:?}: {output:?}");
        check_mode(&record, mode);
        let (full, resumed) = handshakes(&record);
        assert_eq!(resumed, 0, "{args:?}: resumption is off by default");
        let opened = num(&record, "connections.opened");
        assert!(
            full > 0 && full.abs_diff(opened) <= 8,
            "{args:?}: {full} handshakes for {opened} connections"
        );
        let versions: u64 = record["tls"]["versions"]
            .as_object()
            .expect("tls.versions")
            .values()
            .filter_map(Value::as_u64)
            .sum();
        assert_eq!(versions, full, "{args:?}: {}", record["tls"]);
        assert!(num(&record, "latency_us.tls_handshake.p50") > 0);
        assert_eq!(record["config"]["tls"]["trust"], "cacert");
        if args.contains(&"--sni") {
            assert_eq!(record["config"]["tls"]["sni"], "localhost");
        }
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("   tls         p50"), "{text}");
    }
}

/// `--tls-resume on`: after the first handshakes (one per user, at most), sessions resume.
#[test]
fn tls_resumption_against_nginx() {
    let _one = one_at_a_time();
    if !require_root("TLS resumption against nginx") {
        return;
    }
    let netns = Netns::for_test("run-nginx-resume");
    let pki = loadprobe_tests::Pki::new("nginx-resume");
    let server = pki.server("server", &["127.0.0.1"], false);
    let _nginx = Nginx::start_tls(netns.name(), 8444, &server.cert, &server.key, "");
    let ca = pki.ca.to_str().unwrap();
    let (record, output) = run(
        netns.name(),
        &[
            "--target",
            "https://127.0.0.1:8444/",
            "--cacert",
            ca,
            "--tls-resume",
            "on",
            "--users",
            "4",
            "--duration",
            "2s",
        ],
    );
    assert!(output.status.success(), "{output:?}");
    check_mode(&record, "client-close");
    let (full, resumed) = handshakes(&record);
    assert!(
        resumed * 100 >= (full + resumed).saturating_sub(4) * 90 && resumed > 100,
        "{full} full, {resumed} resumed"
    );
    assert_eq!(record["config"]["tls"]["resume"], true);
}

/// Certificates the run would refuse are reported before any load, in one line, with a
/// non-zero exit and no record; --insecure accepts them, and says so.
#[test]
fn tls_certificate_problems_stop_the_run_before_load() {
    let _one = one_at_a_time();
    if !require_root("TLS errors against nginx") {
        return;
    }
    let netns = Netns::for_test("run-nginx-tls-errors");
    let pki = loadprobe_tests::Pki::new("nginx-errors");
    let cases = [
        (
            pki.server("wrong-name", &["elsewhere.test"], false),
            "tls_name_mismatch",
        ),
        (pki.server("expired", &["127.0.0.1"], true), "tls_expired"),
        (
            pki.self_signed("self-signed", &["127.0.0.1"]),
            "tls_unknown_ca",
        ),
    ];
    let ca = pki.ca.to_str().unwrap();
    for (i, (files, class)) in cases.iter().enumerate() {
        let port = 8450 + i as u16;
        let _nginx = Nginx::start_tls(netns.name(), port, &files.cert, &files.key, "");
        let target = format!("https://127.0.0.1:{port}/");
        let stderr = refused(
            netns.name(),
            &["--target", &target, "--cacert", ca, "--duration", "1s"],
        );
        assert!(
            stderr.contains(class) && stderr.contains("TLS handshake"),
            "{class}: {stderr}"
        );
        let (ok, output) = run(
            netns.name(),
            &[
                "--no-probe",
                "--target",
                &target,
                "--insecure",
                "--duration",
                "1s",
            ],
        );
        assert!(
            output.status.success(),
            "{class} with --insecure: {output:?}"
        );
        assert!(num(&ok, "requests.ok") > 0);
        assert_eq!(ok["config"]["tls"]["trust"], "insecure");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("NOT verified"), "{text}");
    }
    // A server that speaks only TLS 1.1 (which rustls never offers).
    let good = pki.server("old", &["127.0.0.1"], false);
    let _old = Nginx::start_tls(
        netns.name(),
        8459,
        &good.cert,
        &good.key,
        "ssl_protocols TLSv1.1;",
    );
    let stderr = refused(
        netns.name(),
        &["--target", "https://127.0.0.1:8459/", "--cacert", ca],
    );
    assert!(stderr.contains("tls_protocol_version"), "{stderr}");
    // An https URL on a plain-HTTP server: told apart too.
    let _plain = Nginx::start(netns.name(), 8460);
    let stderr = refused(
        netns.name(),
        &["--target", "https://127.0.0.1:8460/", "--insecure"],
    );
    assert!(stderr.contains("tls_plain_http_server"), "{stderr}");
}

/// `run --tls`: the embedded server over TLS, every mode, with the probe's closers.
#[test]
fn every_mode_against_the_embedded_server_over_tls() {
    let _one = one_at_a_time();
    if !require_root("run --tls against the embedded server") {
        return;
    }
    let netns = Netns::for_test("run-embedded-tls");
    for mode in MODES {
        let (record, output) = run(
            netns.name(),
            &["--tls", "--mode", mode, "--users", "8", "--duration", "2s"],
        );
        assert!(output.status.success(), "{output:?}");
        check_mode(&record, mode);
        assert!(
            record["config"]["target"]
                .as_str()
                .unwrap()
                .starts_with("https://")
        );
        assert_eq!(record["config"]["tls"]["trust"], "embedded");
        assert_eq!(handshakes(&record).1, 0);
    }
}

/// mTLS: nginx asks for a client certificate signed by the test CA; with --cert/--key every
/// request is answered, without them none is.
#[test]
fn client_certificates_against_nginx() {
    let _one = one_at_a_time();
    if !require_root("mTLS against nginx") {
        return;
    }
    let netns = Netns::for_test("run-nginx-mtls");
    let pki = loadprobe_tests::Pki::new("nginx-mtls");
    let server = pki.server("server", &["127.0.0.1"], false);
    let client = pki.server("client", &["client.test"], false);
    let verify = format!(
        "ssl_client_certificate {}; ssl_verify_client on;",
        pki.ca.display()
    );
    let _nginx = Nginx::start_tls(netns.name(), 8461, &server.cert, &server.key, &verify);
    let ca = pki.ca.to_str().unwrap();
    let base = [
        "--no-probe",
        "--target",
        "https://127.0.0.1:8461/",
        "--cacert",
        ca,
        "--users",
        "2",
        "--requests",
        "50",
    ];
    let (with, output) = run(
        netns.name(),
        &[
            &base[..],
            &[
                "--cert",
                client.cert.to_str().unwrap(),
                "--key",
                client.key.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(num(&with, "requests.ok"), 50, "{}", with["requests"]);
    assert_eq!(with["config"]["tls"]["client_cert"], true);
    // Without: TLS 1.3 finishes the client's handshake before the server checks, so the
    // refusal comes with the request (nginx answers 400), not in the pre-flight.
    let (without, _) = run(netns.name(), &base);
    assert_eq!(num(&without, "requests.ok"), 0, "{}", without["requests"]);
    assert!(num(&without, "requests.total") > 0);
}

/// `serve --tls` with the test CA's certificate (--cert/--key): an https run trusting the CA
/// gets every answer; an http:// run against it is refused before any load, told that it is
/// talking to a TLS server.
#[test]
fn serve_tls_with_given_certificate() {
    let _one = one_at_a_time();
    if !require_root("serve --tls in a namespace") {
        return;
    }
    let netns = Netns::for_test("serve-tls");
    let pki = loadprobe_tests::Pki::new("serve-tls");
    let server = pki.server("server", &["127.0.0.1"], false);
    let _serve = Killed(
        Command::new("ip")
            .args(["netns", "exec", netns.name()])
            .arg(loadprobe_bin())
            .args(["serve", "--tls", "--listen", "127.0.0.1:8471", "--cert"])
            .arg(&server.cert)
            .arg("--key")
            .arg(&server.key)
            .stdout(Stdio::null())
            .spawn()
            .expect("loadprobe serve --tls"),
    );
    wait_for_port(netns.name(), "127.0.0.1:8471");
    let ca = pki.ca.to_str().unwrap();
    let (record, output) = run(
        netns.name(),
        &[
            "--target",
            "https://127.0.0.1:8471/",
            "--cacert",
            ca,
            "--mode",
            "server-close",
            "--users",
            "4",
            "--duration",
            "2s",
        ],
    );
    assert!(output.status.success(), "{output:?}");
    check_mode(&record, "server-close");
    let stderr = refused(
        netns.name(),
        &[
            "--target",
            "http://127.0.0.1:8471/",
            "--users",
            "1",
            "--requests",
            "5",
        ],
    );
    assert!(stderr.contains("tls_server_on_http"), "{stderr}");
    assert!(stderr.contains("https://"), "{stderr}");
}

/// Each state change on the host runs the probe's programs, the run's own or not, from the
/// moment they attach. While another process churns connections (other runs, or the services
/// of a host where a trace daemon runs), a probed run still counts each of its connections
/// once: none taken for another process's, none twice (docs/probe.md, the set_state pair).
#[test]
fn a_probed_run_beside_heavy_churn_counts_each_of_its_connections() {
    let _one = one_at_a_time();
    if !require_root("a probed run beside another process's churn") {
        return;
    }
    let churn_ns = Netns::for_test("run-churn");
    let ns = Netns::for_test("run-beside");
    let churn_dir = tempdir("run-churn");
    let _churn = Killed(
        Command::new("ip")
            .args(["netns", "exec", churn_ns.name()])
            .arg(loadprobe_bin())
            .args([
                "run",
                "--no-probe",
                "--mode",
                "server-close",
                "--users",
                "32",
            ])
            .args(["--duration", "60s", "-o"])
            .arg(churn_dir.join("churn.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the churn"),
    );
    // The churn is under way once its namespace holds TIME_WAIT sockets.
    let started = std::time::Instant::now();
    while !churn_ns.sockets().iter().any(|s| s.state == "TIME-WAIT") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the churn never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for attempt in 0..3 {
        let (record, _) = run(
            ns.name(),
            &["--mode", "reset", "--users", "4", "--requests", "300"],
        );
        let closers = &record["connections"]["closer"];
        assert_eq!(
            num(&record, "connections.opened"),
            300,
            "run {attempt}: {closers}"
        );
        assert_eq!(
            num(&record, "connections.closer.client-reset"),
            300,
            "run {attempt}: {closers}, probe {}",
            record["probe"]
        );
        assert_eq!(num(&record, "connections.mismatches"), 0, "run {attempt}");
        assert_eq!(num(&record, "probe.lost_events"), 0, "run {attempt}");
    }
    let _ = std::fs::remove_dir_all(churn_dir);
}
