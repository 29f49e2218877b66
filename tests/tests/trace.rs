//! `loadprobe trace --format jsonl` against real sockets: each test makes its own network
//! namespace, traces it, runs one close scenario there and checks that every connection made
//! has exactly one record with the right closer, no other record, and no lost event.
//!
//! Needs root (or fails under `LOADPROBE_REQUIRE_BPF=1`) and the loadprobe binary of the same
//! cargo profile (`cargo xtask test` builds it first).

use loadprobe_tests::{
    Conn, Netns, Nginx, Side, Tracer, V4, V6, burst_client_close, client_first_close,
    connect_refused, linger0_abort, require_root, server_first_close, simultaneous_close,
    unread_data_close,
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
