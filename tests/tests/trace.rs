//! `loadprobe trace --format jsonl` against real sockets: each test makes its own network
//! namespace, traces it, runs one close scenario there and checks that every connection made
//! has exactly one record with the right closer, no other record, and no lost event.
//!
//! Needs root (or fails under `LOADPROBE_REQUIRE_BPF=1`) and the loadprobe binary of the same
//! cargo profile (`cargo xtask test` builds it first).

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use loadprobe_tests::{
    Capture, Conn, Netns, Nginx, Side, Trace, Tracer, V4, V6, burst_client_close,
    client_first_close, connect_refused, linger0_abort, queued_fin_then_reset, require_root,
    server_first_close, simultaneous_close, unread_data_close,
};

/// Traces the namespace `lp-<test>-<pid>` (filtered to `ports`, or to the namespace only when
/// empty) while `scenario` runs there, then checks the records against what it made.
fn check(test: &str, ports: &[u16], scenario: impl FnOnce(&Netns) -> Vec<Conn>) {
    if !require_root(test) {
        return;
    }
    let netns = Netns::for_test(test);
    let tracer = Tracer::start(&netns, ports);
    let conns = scenario(&netns);
    let trace = tracer.stop();
    trace.assert_closers(&conns);
}

#[test]
fn client_first_close_is_client() {
    check("client-first", &[8001], |ns| {
        client_first_close(ns, V4, 8001)
    });
}

/// Traces `client_first_close` on `port` with every read through `skc_net` failing: the debug
/// build's test hook points its offset at the socket's addresses, as a BTF offset that does not
/// fit the kernel would. `extra`: more arguments for `trace`.
fn trace_with_failing_reads(test: &str, port: u16, extra: &[&str]) -> Option<Trace> {
    if !require_root(test) {
        return None;
    }
    let netns = Netns::for_test(test);
    let tracer = Tracer::start_under(
        netns.name(),
        &["env", "LOADPROBE_TEST_SKC_NET_OFFSET=0"],
        &[port],
        extra,
    );
    let conns = client_first_close(&netns, V4, port);
    // The warning comes with the once-a-second check.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let trace = tracer.stop();
    assert!(!conns.is_empty());
    assert!(
        trace.read_errors() >= 4 * conns.len() as u64,
        "each of a connection's state changes fails to read: summary {}",
        trace.summary
    );
    Some(trace)
}

/// A kernel read that fails drops its event: the trace counts such reads in its summary and
/// warns on stderr, naming the programs, instead of showing nothing but missing connections.
/// Without `--probe-log` the programs describe nothing.
#[test]
fn failed_kernel_reads_are_counted_and_warned_about() {
    let Some(trace) = trace_with_failing_reads("failed-reads", 8031, &[]) else {
        return;
    };
    assert!(
        trace.records.is_empty(),
        "no event got through: {:?}",
        trace.records
    );
    assert!(
        trace
            .stderr
            .contains("kernel reads of the probe failed (inet_sock_set_state "),
        "stderr: {}",
        trace.stderr
    );
    assert!(
        !trace.stderr.contains("probe log:"),
        "stderr: {}",
        trace.stderr
    );
}

/// With `--probe-log` the programs say which read failed, through aya-log: the program and
/// the field (the namespace's inode, read through the wrong pointer).
#[test]
fn probe_log_names_the_program_and_field_of_a_failed_read() {
    let Some(trace) = trace_with_failing_reads("probe-log", 8032, &["--probe-log"]) else {
        return;
    };
    assert!(
        trace.stderr.contains(
            "loadprobe: probe log: inet_sock_set_state: reading the kernel field net_inum failed"
        ),
        "stderr: {}",
        trace.stderr
    );
}

/// Connections on the filtered ports are traced, others not: with few ports the programs compare
/// them inline, with more than `INLINE_PORTS` they look them up in a map.
#[test]
fn port_filter_inline_and_in_a_map() {
    for (test, ports) in [
        ("ports-inline", (8020..8022).collect::<Vec<u16>>()),
        ("ports-map", (8020..8030).collect()),
    ] {
        check(test, &ports, |ns| {
            let mut conns = client_first_close(ns, V4, 8021);
            // Not in the filter: must leave no record.
            client_first_close(ns, V4, 8030);
            conns.extend(server_first_close(ns, V4, 8020));
            conns
        });
    }
}

#[test]
fn server_first_close_is_server() {
    check("server-first", &[8002], |ns| {
        server_first_close(ns, V4, 8002)
    });
}

#[test]
fn simultaneous_close_is_simultaneous() {
    // Every connection made is checked against what the kernel did (TIME-WAIT on both ends or
    // on one); at least 5 of them are true simultaneous closes.
    check("simultaneous", &[8003], |ns| {
        simultaneous_close(ns, V4, 8003, 5, 50)
    });
}

#[test]
fn linger0_abort_by_client_is_client_reset() {
    check("linger-client", &[8004], |ns| {
        linger0_abort(ns, V4, 8004, Side::Client)
    });
}

#[test]
fn linger0_abort_by_server_is_server_reset() {
    check("linger-server", &[8005], |ns| {
        linger0_abort(ns, V4, 8005, Side::Server)
    });
}

#[test]
fn close_with_unread_data_by_server_is_server_reset() {
    check("unread-server", &[8006], |ns| {
        unread_data_close(ns, V4, 8006, Side::Server)
    });
}

#[test]
fn close_with_unread_data_by_client_is_client_reset() {
    check("unread-client", &[8007], |ns| {
        unread_data_close(ns, V4, 8007, Side::Client)
    });
}

/// A FIN still queued behind unsent data is not a FIN sent: the closer is whoever first put a
/// FIN or an RST on the wire, as a capture taken meanwhile shows it.
#[test]
fn a_fin_queued_behind_unsent_data_is_not_a_fin_sent() {
    if !require_root("queued FIN") {
        return;
    }
    let netns = Netns::for_test("queued-fin");
    let capture = Capture::start(&netns, 8012);
    let tracer = Tracer::start(&netns, &[8012]);
    let conns = queued_fin_then_reset(&netns, V4, 8012, 40);
    let trace = tracer.stop();
    let wire: std::collections::HashMap<_, _> = Capture::first_closers(&capture.stop(), 8012)
        .into_iter()
        .collect();
    for c in &conns {
        assert_eq!(
            wire.get(&(c.client, c.server)).copied().flatten(),
            Some(c.expected),
            "the capture: {} -> {}",
            c.client,
            c.server
        );
    }
    trace.assert_closers(&conns);
}

#[test]
fn connect_refused_is_refused() {
    check("refused", &[8008], |ns| connect_refused(ns, V4, 8008));
}

#[test]
fn ipv6_loopback_closes() {
    check("ipv6", &[8009, 8010], |ns| {
        let mut conns = client_first_close(ns, V6, 8009);
        conns.extend(server_first_close(ns, V6, 8010));
        conns
    });
}

#[test]
fn burst_of_1000_client_closes() {
    // No port filter: the namespace filter alone keeps the trace to this test's connections.
    check("burst", &[], |ns| burst_client_close(ns, V4, 8011, 1000));
}

/// Third-party peers: Debian's nginx and curl. curl closes a kept-alive connection when it
/// exits (client first); with `Connection: close` nginx closes right after the response, but
/// curl may close at the same moment, so each record is checked against the kernel's own
/// answer: the end that holds the TIME-WAIT socket (ss) sent the first FIN.
#[test]
fn third_party_client_and_server() {
    if !require_root("third-party client and server") {
        return;
    }
    let netns = Netns::for_test("third-party");
    let _nginx = Nginx::start(netns.name(), 8012);
    let tracer = Tracer::start(&netns, &[8012]);
    let curl = |extra: &[&str]| {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                netns.name(),
                "curl",
                "-sf",
                "-o",
                "/dev/null",
            ])
            .args(extra)
            .arg("http://127.0.0.1:8012/")
            .status()
            .expect("curl");
        assert!(out.success(), "curl failed");
    };
    for _ in 0..3 {
        curl(&[]);
        curl(&["-H", "Connection: close"]);
    }
    netns.wait_quiet();
    let trace = tracer.stop();
    assert_eq!(trace.records.len(), 6, "{:#?}", trace.records);
    let mut closers = Vec::new();
    for r in &trace.records {
        let addr = |key: &str| {
            r[key]
                .as_str()
                .and_then(|a| a.parse().ok())
                .expect("address")
        };
        let conn = Conn {
            client: addr("client"),
            server: addr("server"),
            expected: "",
        };
        assert_eq!(conn.server.port(), 8012);
        let kernel = netns.time_wait_closer(&conn).expect("a TIME-WAIT end");
        assert_eq!(r["closer"], kernel, "{r}");
        closers.push(kernel);
    }
    // curl's own closes at exit are always first.
    assert!(
        closers.iter().filter(|c| **c == "client").count() >= 3,
        "{closers:?}"
    );
    assert_eq!(trace.lost_events(), 0);
}

/// `--all-netns` over veth: each end of a record carries its own namespace, and so does the
/// server's timewait socket (server-close), not the client's.
#[test]
fn each_end_carries_its_own_namespace() {
    use loadprobe::model::Side;
    use loadprobe::tune::netns::Topology;
    use std::io::Read;
    if !require_root("namespaces per end") {
        return;
    }
    let topo = Topology::create(&format!("lp-nsend-{}", std::process::id())).expect("topology");
    let server = std::net::SocketAddr::new(topo.server_addr().into(), 8013);
    let listener = topo
        .run_in(Side::Server, || std::net::TcpListener::bind(server))
        .expect("enter")
        .expect("bind");
    let tracer = Tracer::start_with(&topo.name(Side::Client), &[8013], &["--all-netns"]);
    let mut client = topo
        .run_in(Side::Client, || std::net::TcpStream::connect(server))
        .expect("enter")
        .expect("connect");
    let (accepted, _) = listener.accept().expect("accept");
    drop(accepted);
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf).expect("EOF"), 0);
    let client_addr = client.local_addr().unwrap();
    drop(client);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let trace = tracer.stop();
    let records: Vec<_> = trace
        .records
        .iter()
        .filter(|r| r["client"] == client_addr.to_string().as_str())
        .collect();
    assert_eq!(records.len(), 1, "{:#?}", trace.records);
    let r = records[0];
    let inode = |host| topo.inode(host).expect("inode");
    assert_eq!(r["closer"], "server", "{r}");
    assert_eq!(r["client_netns"], inode(Side::Client), "{r}");
    assert_eq!(r["server_netns"], inode(Side::Server), "{r}");
    let tw = &r["time_wait"][0];
    assert_eq!(tw["side"], "server", "{r}");
    assert_eq!(tw["netns"], inode(Side::Server), "{r}");
}

/// A consumer that reads `trace`'s output slowly makes the probe lose events (its ring buffer
/// fills while the tracer waits to write; reset mode, whose records go out at once, having no
/// TIME_WAIT to wait for): `trace` says so on stderr while it runs, not only in
/// its final summary.
#[test]
fn lost_events_are_reported_as_they_happen() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    if !require_root("lost events warning") {
        return;
    }
    let netns = Netns::for_test("lost-warn");
    let mut trace = Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .arg(loadprobe_tests::loadprobe_bin())
        .args(["trace", "--format", "jsonl"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadprobe trace");
    let mut stdout = trace.stdout.take().unwrap();
    // The slow consumer: 1 KiB every 100 ms.
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while stdout.read(&mut buf).unwrap_or(0) > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = BufReader::new(trace.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("trace starts");
    assert!(started.contains("tracing"), "{started}");
    let mut load = Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .arg(loadprobe_tests::loadprobe_bin())
        .args(["run", "--no-probe", "--mode", "reset", "--users", "32"])
        .args(["--duration", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("loadprobe run");
    // Until the ring buffer has overflowed: how long that takes depends on how fast a busy
    // machine makes connections, not on the probe.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut warning = None;
    let mut said = Vec::new();
    while warning.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.contains("lost") {
                warning = Some(line);
            } else {
                said.push(line);
            }
        }
    }
    let _ = load.kill();
    let _ = load.wait();
    // Still tracing (never told to stop): the warning came while it ran.
    let running = trace.try_wait().expect("trace status").is_none();
    let _ = trace.kill();
    let _ = trace.wait();
    let warning =
        warning.unwrap_or_else(|| panic!("no warning on stderr while trace ran: {said:?}"));
    assert!(running);
    assert!(
        warning.contains("TIME_WAIT") && warning.contains("closers"),
        "names what it makes uncertain: {warning}"
    );
}

/// `trace --all-netns` beside two namespaces that each drive server-close as fast as they can
/// against a server on the same 127.0.0.1:port: the same 4-tuples are in both namespaces at
/// once, and each namespace's TIME_WAIT sockets must be counted as its kernel counts them
/// (TcpExtTW, TcpExtTWKilled), none taken for the other's.
///
/// Ignored until issue 20's silent loss is found: at ~3-4k connections/s it passes (the
/// namespace collision it was written for is fixed), but at ~8k/s on a quiet machine
/// `entered` is still short of TcpExtTW (23,991 of 24,127, lost 0, skipped 0) and one run
/// counted 60 false overflows. Run it with `cargo test --test trace -- --ignored`.
#[test]
#[ignore = "issue 20: TIME_WAIT still short of the kernel at ~8k connections/s"]
fn the_same_tuples_in_two_namespaces_under_churn_match_the_kernel() {
    if !require_root("same tuples in two namespaces") {
        return;
    }
    const PORT: &str = "127.0.0.1:8013";
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let counter = |ns: &Netns, name: &str| -> u64 {
        ns.exec(&["nstat", "-a", "-z", name])
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name} in nstat"))
    };
    let spaces = [Netns::for_test("churn-a"), Netns::for_test("churn-b")];
    let loadprobe = |ns: &Netns, args: &[&str]| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", ns.name()])
            .arg(loadprobe_tests::loadprobe_bin())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    };
    let _servers: Vec<Killed> = spaces
        .iter()
        .map(|ns| {
            let server = Killed(loadprobe(ns, &["serve", "--listen", PORT]).spawn().unwrap());
            loadprobe_tests::wait_for_port(ns.name(), PORT);
            server
        })
        .collect();
    let before: Vec<(u64, u64)> = spaces
        .iter()
        .map(|ns| (counter(ns, "TcpExtTW"), counter(ns, "TcpExtTWKilled")))
        .collect();
    let tracer = Tracer::start_with(spaces[0].name(), &[8013], &["--all-netns"]);
    let target = format!("http://{PORT}/");
    let mut runs: Vec<Killed> = spaces
        .iter()
        .map(|ns| {
            let args = [
                "run",
                "--no-probe",
                "--mode",
                "server-close",
                "--target",
                &target,
            ];
            let more = ["--users", "512", "--duration", "3s"];
            let mut cmd = loadprobe(ns, &args);
            Killed(cmd.args(more).spawn().unwrap())
        })
        .collect();
    for run in &mut runs {
        assert!(run.0.wait().unwrap().success());
    }
    let trace = tracer.stop();
    let (mut entered, mut killed) = (0, 0);
    for (ns, (tw, tw_killed)) in spaces.iter().zip(before) {
        entered += counter(ns, "TcpExtTW") - tw;
        killed += counter(ns, "TcpExtTWKilled") - tw_killed;
    }
    let server = &trace.summary["time_wait"]["server"];
    let fin_wait2 = &trace.summary["time_wait"]["fin_wait2"]["server"];
    assert_eq!(trace.lost_events(), 0, "{}", trace.summary);
    assert!(entered > 2_000, "a churn: {entered} TIME_WAIT sockets");
    // A socket the kernel skipped a program for may be missing, and only such a one.
    let skipped = trace.skipped_events();
    let seen = server["entered"].as_u64().unwrap();
    assert!(
        seen <= entered && entered - seen <= skipped,
        "entered {seen}, kernel {entered}, skipped {skipped}: {}",
        trace.summary
    );
    assert_eq!(server["killed"].as_u64(), Some(killed), "{}", trace.summary);
    assert_eq!(fin_wait2["killed"].as_u64(), Some(0), "{}", trace.summary);
    assert_eq!(
        server["reused_older"].as_u64(),
        Some(0),
        "{}",
        trace.summary
    );
}

/// The client program of [`namespaces_and_owners_that_go_away_leave_nothing_alive`]: three
/// connections it leaves open, for its exit to close (client first), and two it waits on until
/// the server closes them; it prints the local ports of those two, then exits.
const EXITING_CLIENT: &str = r#"
import socket, sys
port = int(sys.argv[1])
left = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
waited = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
print(" ".join(str(s.getsockname()[1]) for s in waited), flush=True)
for s in waited:
    s.recv(1)
"#;

/// `--all-netns` while network namespaces come and go, as containers do on a node, and the
/// processes in them exit while they hold TIME_WAIT sockets: in each of five namespaces a
/// client process makes five connections and exits (its exit closes three of them first; the
/// server closed the other two first), then the namespace is deleted, which kills its
/// timewait sockets. The trace keeps running, counts every connection with its closer, and
/// each timewait socket ends as killed: nothing of a namespace that is gone stays alive in it.
#[test]
fn namespaces_and_owners_that_go_away_leave_nothing_alive() {
    use loadprobe_tests::{Scrape, listen, read_to_eof, scrape};
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};
    if !require_root("namespaces coming and going") {
        return;
    }
    const PORT: u16 = 8197;
    let metrics: SocketAddr = "127.0.0.1:9471".parse().unwrap();
    let home = Netns::for_test("ns-churn");
    let tracer = Tracer::start_with(
        home.name(),
        &[PORT],
        &["--all-netns", "--metrics", "127.0.0.1:9471"],
    );
    const ROUNDS: u64 = 5;
    for round in 0..ROUNDS {
        let netns = Netns::for_test(&format!("ns-churn{round}"));
        let listener = netns.enter_thread(|| listen(V4, PORT));
        let mut client = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                netns.name(),
                "python3",
                "-c",
                EXITING_CLIENT,
            ])
            .arg(PORT.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut accepted: Vec<_> = (0..5).map(|_| listener.accept().expect("accept")).collect();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(client.stdout.take().unwrap()),
            &mut line,
        )
        .expect("the client's ports");
        let waited: Vec<u16> = line
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        // The server closes first where the client waits; the rest the client's exit closes.
        accepted.retain(|(_, peer)| !waited.contains(&peer.port()));
        assert!(client.wait().expect("wait the client").success());
        for (mut s, _) in accepted {
            read_to_eof(&mut s);
        }
        drop(listener);
        netns.wait_quiet();
        drop(netns);
    }
    let series = |s: &Scrape, name: &str| {
        s.iter()
            .filter(|(k, _)| k.starts_with(name))
            .map(|(_, v)| *v as u64)
            .sum::<u64>()
    };
    // Deleting a namespace is finished by a kernel worker, a moment later.
    let deadline = Instant::now() + Duration::from_secs(20);
    let last = loop {
        let s = scrape(&home, metrics);
        if series(
            &s,
            "loadprobe_time_wait_ended_total{side=\"client\",reason=\"killed\"}",
        ) == 3 * ROUNDS
            && series(
                &s,
                "loadprobe_time_wait_ended_total{side=\"server\",reason=\"killed\"}",
            ) == 2 * ROUNDS
        {
            break s;
        }
        assert!(Instant::now() < deadline, "not all killed: {s:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(series(&last, "loadprobe_time_wait_alive"), 0, "{last:#?}");
    let trace = tracer.stop();
    assert!(trace.status.success(), "{}", trace.stderr);
    let s = &trace.summary;
    assert_eq!(s["connections"], 5 * ROUNDS, "{s}");
    assert_eq!(s["closer"]["client"], 3 * ROUNDS, "{s}");
    assert_eq!(s["closer"]["server"], 2 * ROUNDS, "{s}");
    for (side, n) in [("client", 3 * ROUNDS), ("server", 2 * ROUNDS)] {
        let tw = &s["time_wait"][side];
        assert_eq!(tw["entered"], n, "{side}: {tw}");
        assert_eq!(tw["killed"], n, "{side}: {tw}");
        assert_eq!(tw["open"], 0, "{side}: {tw}");
    }
    assert_eq!(trace.lost_events(), 0);
    assert_eq!(trace.records.len() as u64, 5 * ROUNDS);
}
