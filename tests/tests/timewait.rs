//! TIME_WAIT lifetimes as `loadprobe trace` reports them, against what the kernel does: natural
//! expiry, reuse (loopback and veth), a SYN accepted in TIME_WAIT, the FIN_WAIT2 substate,
//! overflow, simultaneous close, IPv6, and a burst checked against the kernel's own count.
//!
//! Each test makes its own namespace(s). Needs root (fails under `LOADPROBE_REQUIRE_BPF=1`).

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::thread::sleep;
use std::time::{Duration, Instant};

use loadprobe::model::Side;
use loadprobe::tune::netns::Topology;
use loadprobe_tests::{
    Conn, Netns, Trace, Tracer, V4, V6, burst_client_close, client_first_close, connect_pair,
    listen, read_to_eof, require_root, server_first_close, simultaneous_close,
};
use serde_json::Value;

/// One test of this file at a time. Every attached probe runs its programs on every tracepoint
/// hit on the host, and classic tracepoint programs do not nest: a timer event that fires while
/// another BPF program runs on the same CPU is skipped by the kernel (`bpf_prog_active`), and
/// the probe does not yet count those skips. The exact-count tests here would see them as
/// missing TIME_WAIT sockets when several probes run at once.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
use socket2::{Domain, Socket, Type};

/// The timewait sockets of the first record for `conn` (a reused 4-tuple has a second one).
fn time_wait<'a>(trace: &'a Trace, conn: &Conn) -> &'a [Value] {
    let records = trace.records_of(conn);
    assert!(
        !records.is_empty(),
        "a record for {conn:?}: {:#?}",
        trace.records
    );
    records[0]["time_wait"].as_array().expect("time_wait list")
}

fn tw_fields(tw: &Value) -> (&str, &str, &str) {
    (
        tw["side"].as_str().unwrap_or("?"),
        tw["end"].as_str().unwrap_or("?"),
        tw["substate"].as_str().unwrap_or("?"),
    )
}

fn duration_ms(tw: &Value) -> u64 {
    tw["duration_ms"].as_u64().expect("duration_ms")
}

#[test]
fn natural_expiry_takes_60_to_62_seconds() {
    if !require_root("natural TIME_WAIT expiry") {
        return;
    }
    let _serial = serial();
    let netns = Netns::for_test("tw-expiry");
    let tracer = Tracer::start(&netns, &[8101]);
    let conns = client_first_close(&netns, V4, 8101);
    // The kernel's timer decides when: 60 s plus up to one timer-wheel bucket (2 s at HZ=250),
    // plus however late the timer softirq runs. Stop once the kernel has let the socket go.
    sleep(Duration::from_secs(59));
    let deadline = Instant::now() + Duration::from_secs(15);
    while netns.sockets().iter().any(|s| s.state == "TIME-WAIT") {
        assert!(
            Instant::now() < deadline,
            "the kernel kept its TIME-WAIT for 74 s"
        );
        sleep(Duration::from_millis(100));
    }
    let trace = tracer.stop();
    let tws = time_wait(&trace, &conns[0]);
    assert_eq!(tws.len(), 1, "{tws:?}");
    assert_eq!(
        tw_fields(&tws[0]),
        ("client", "expired", "TIME_WAIT"),
        "{tws:?} {}",
        trace.summary
    );
    let ms = duration_ms(&tws[0]);
    assert!((60_000..=62_500).contains(&ms), "lived {ms} ms");
    let client = &trace.summary["time_wait"]["client"];
    assert_eq!(client["expired"], 1);
    assert_eq!(client["open"], 0);
    let max = client["duration_ms"]["max"].as_u64().expect("summary max");
    assert!((60_000..=62_500).contains(&max), "summary max {max} ms");
}

/// One client connection from a one-port range, closed by the client first.
fn one_port_client_close(server: SocketAddr) -> Conn {
    let mut c = TcpStream::connect(server).expect("connect");
    let client = c.local_addr().expect("local addr");
    c.write_all(b"x").expect("write");
    drop(c);
    Conn {
        client,
        server,
        expected: "client",
    }
}

#[test]
fn reuse_on_loopback_after_a_lowered_reuse_delay() {
    if !require_root("TIME_WAIT reuse on loopback") {
        return;
    }
    let _serial = serial();
    let netns = Netns::for_test("tw-reuse-lo");
    netns.sysctl("net.ipv4.tcp_tw_reuse", "2");
    netns.sysctl("net.ipv4.tcp_tw_reuse_delay", "100");
    netns.sysctl("net.ipv4.ip_local_port_range", "40100 40100");
    let tracer = Tracer::start(&netns, &[8102]);
    let (first, second) = netns.enter_thread(|| {
        let server = SocketAddr::new(V4, 8102);
        let listener = listen(V4, 8102);
        let accept_and_drain = || {
            let (mut s, _) = listener.accept().expect("accept");
            read_to_eof(&mut s);
        };
        let first = one_port_client_close(server);
        accept_and_drain();
        sleep(Duration::from_millis(400));
        // The only port is in TIME_WAIT: connect() must take it over.
        let second = one_port_client_close(server);
        accept_and_drain();
        (first, second)
    });
    netns.wait_quiet();
    let trace = tracer.stop();
    assert_eq!(first.client, second.client, "same port twice");
    let tws = time_wait(&trace, &first);
    assert_eq!(tw_fields(&tws[0]).1, "reused", "{tws:?}");
    let ms = duration_ms(&tws[0]);
    assert!((300..1_000).contains(&ms), "reused after {ms} ms");
    assert_eq!(trace.summary["time_wait"]["client"]["reused"], 1);
}

/// Over veth the client's TIME_WAIT is reusable with tcp_tw_reuse=1, not with 2 (loopback only).
#[test]
fn reuse_over_veth_needs_tcp_tw_reuse_1() {
    if !require_root("TIME_WAIT reuse over veth") {
        return;
    }
    let _serial = serial();
    for (reuse, reusable) in [("2", false), ("1", true)] {
        let topo =
            Topology::create(&format!("lp-twv{reuse}-{}", std::process::id())).expect("topology");
        topo.set_sysctl(Side::Client, "net.ipv4.tcp_tw_reuse", reuse)
            .expect("tcp_tw_reuse");
        topo.set_sysctl(Side::Client, "net.ipv4.ip_local_port_range", "40200 40200")
            .expect("port range");
        let server = SocketAddr::new(IpAddr::V4(topo.server_addr()), 8103);
        let listener = topo
            .run_in(Side::Server, || listen(server.ip(), 8103))
            .expect("listener");
        let tracer = Tracer::start_in(&topo.name(Side::Client), &[8103]);
        let (first, second) = topo
            .run_in(Side::Client, || {
                let first = one_port_client_close(server);
                let (mut s, _) = listener.accept().expect("accept");
                read_to_eof(&mut s);
                drop(s);
                // Past the default tcp_tw_reuse_delay of 1 s.
                sleep(Duration::from_millis(1_500));
                let second = TcpStream::connect(server);
                (first, second.map_err(|e| e.raw_os_error()))
            })
            .expect("client");
        let trace = tracer.stop();
        let tws = time_wait(&trace, &first);
        if reusable {
            assert!(second.is_ok(), "reuse=1 reconnects: {second:?}");
            assert_eq!(tw_fields(&tws[0]).1, "reused", "{tws:?}");
        } else {
            assert_eq!(second.err(), Some(Some(libc::EADDRNOTAVAIL)));
            assert_eq!(tw_fields(&tws[0]).1, "open", "{tws:?}");
        }
    }
}

#[test]
fn syn_accepted_in_time_wait_reuses_the_server_socket() {
    if !require_root("SYN accepted in TIME_WAIT") {
        return;
    }
    let _serial = serial();
    let netns = Netns::for_test("tw-syn");
    let tracer = Tracer::start(&netns, &[8104]);
    let first = netns.enter_thread(|| {
        let listener = listen(V4, 8104);
        let bound = |port: u16| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            s.set_reuse_address(true).expect("SO_REUSEADDR");
            s.bind(&SocketAddr::new(V4, port).into()).expect("bind");
            s
        };
        let server = SocketAddr::new(V4, 8104);
        let c = bound(0);
        c.connect(&server.into()).expect("connect");
        let client = c.local_addr().expect("addr").as_socket().expect("inet");
        let (a, _) = listener.accept().expect("accept");
        // Server first: the TIME_WAIT is the server's.
        drop(a);
        let mut c: TcpStream = c.into();
        read_to_eof(&mut c);
        drop(c);
        sleep(Duration::from_millis(300));
        // The same client port again: the SYN meets the server's timewait socket.
        let c2 = bound(client.port());
        c2.connect(&server.into())
            .expect("reconnect from the same port");
        let (a2, _) = listener.accept().expect("accept 2");
        drop(a2);
        let mut c2: TcpStream = c2.into();
        read_to_eof(&mut c2);
        Conn {
            client,
            server,
            expected: "server",
        }
    });
    netns.wait_quiet();
    let trace = tracer.stop();
    let records = trace.records_of(&first);
    assert_eq!(
        records.len(),
        2,
        "two connections on one 4-tuple: {records:#?}"
    );
    let ends: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            let tw = &r["time_wait"][0];
            (
                tw["side"].as_str().unwrap_or("?"),
                tw["end"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert!(ends.contains(&("server", "reused")), "{ends:?}");
    assert_eq!(trace.summary["time_wait"]["server"]["reused"], 1);
}

#[test]
fn fin_wait2_substate_turns_into_time_wait() {
    if !require_root("FIN_WAIT2 substate") {
        return;
    }
    let _serial = serial();
    let netns = Netns::for_test("tw-fw2");
    let tracer = Tracer::start(&netns, &[8105]);
    let conn = netns.enter_thread(|| {
        let listener = listen(V4, 8105);
        let (c, mut a) = connect_pair(&listener);
        let conn = Conn {
            client: c.local_addr().expect("addr"),
            server: a.local_addr().expect("addr"),
            expected: "client",
        };
        drop(c); // client closes; the server keeps its end open for a while
        sleep(Duration::from_millis(500));
        let mut buf = [0u8; 1];
        assert_eq!(a.read(&mut buf).expect("EOF"), 0);
        drop(a);
        conn
    });
    netns.wait_quiet();
    let trace = tracer.stop();
    let tws = time_wait(&trace, &conn);
    assert_eq!(tws[0]["substate_start"], "FIN_WAIT2", "{tws:?}");
    assert_eq!(tws[0]["substate"], "TIME_WAIT", "{tws:?}");
    assert_eq!(tws[0]["side"], "client");
}

#[test]
fn overflow_when_tcp_max_tw_buckets_is_zero() {
    if !require_root("TIME_WAIT overflow") {
        return;
    }
    let _serial = serial();
    let netns = Netns::for_test("tw-overflow");
    netns.sysctl("net.ipv4.tcp_max_tw_buckets", "0");
    let tracer = Tracer::start(&netns, &[8106]);
    let conns = client_first_close(&netns, V4, 8106);
    let trace = tracer.stop();
    let tws = time_wait(&trace, &conns[0]);
    assert_eq!(tw_fields(&tws[0]).1, "overflow", "{tws:?}");
    assert_eq!(trace.summary["time_wait"]["client"]["overflow"], 1);
    assert_eq!(trace.summary["time_wait"]["client"]["entered"], 0);
}

#[test]
fn simultaneous_close_gives_both_sides_a_timewait_socket() {
    if !require_root("simultaneous close TIME_WAIT") {
        return;
    }
    let _serial = serial();
    let netns = Netns::for_test("tw-simultaneous");
    let tracer = Tracer::start(&netns, &[8107]);
    let conns = simultaneous_close(&netns, V4, 8107, 3, 50);
    let trace = tracer.stop();
    trace.assert_closers(&conns);
    let mut seen = 0;
    for conn in conns.iter().filter(|c| c.expected == "simultaneous") {
        let mut sides: Vec<&str> = time_wait(&trace, conn)
            .iter()
            .map(|tw| tw["side"].as_str().unwrap_or("?"))
            .collect();
        sides.sort_unstable();
        assert_eq!(sides, ["client", "server"]);
        seen += 1;
    }
    assert!(seen >= 3);
}

#[test]
fn ipv6_timewait_sockets() {
    if !require_root("IPv6 TIME_WAIT") {
        return;
    }
    let _serial = serial();
    let netns = Netns::for_test("tw-ipv6");
    let tracer = Tracer::start(&netns, &[8108, 8109]);
    let client_first = client_first_close(&netns, V6, 8108);
    let server_first = server_first_close(&netns, V6, 8109);
    let trace = tracer.stop();
    assert_eq!(
        tw_fields(&time_wait(&trace, &client_first[0])[0]).0,
        "client"
    );
    assert_eq!(
        tw_fields(&time_wait(&trace, &server_first[0])[0]).0,
        "server"
    );
}

/// 5,000 client-first closes with nothing ending a timewait socket early (no reuse, RSTs
/// ignored in TIME_WAIT): the kernel keeps all 5,000, and the probe's peak is its count.
///
/// Meanwhile neighbour namespaces full of timewait sockets are torn down: their cleanup runs
/// the probe's timer programs in a kworker while the burst's softirqs start timers on the same
/// CPUs. That is what hid TIME_WAITs from the probe when its programs were classic tracepoint
/// programs (which never nest into another BPF program); raw tracepoint programs must see all.
#[test]
fn burst_of_5000_matches_the_kernel_count() {
    if !require_root("burst against the kernel's count") {
        return;
    }
    let _serial = serial();
    let neighbours: Vec<Netns> = (0..4)
        .map(|i| {
            let neighbour = Netns::for_test(&format!("tw-nb{i}"));
            burst_client_close(&neighbour, V4, 8110, 2_500);
            neighbour
        })
        .collect();
    let netns = Netns::for_test("tw-burst");
    netns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    netns.sysctl("net.ipv4.tcp_rfc1337", "1");
    let tracer = Tracer::start(&netns, &[8110]);
    let conns = std::thread::scope(|s| {
        s.spawn(|| {
            for neighbour in neighbours {
                sleep(Duration::from_millis(100));
                drop(neighbour);
            }
        });
        burst_client_close(&netns, V4, 8110, 5_000)
    });
    netns.wait_quiet();
    let (diag, sockstat) = netns.enter_thread(|| {
        let list = loadprobe::diag::timewait_sockets().expect("sock_diag");
        let count = list.iter().filter(|tw| tw.remote.port() == 8110).count() as u64;
        (count, loadprobe::diag::sockstat_tw().expect("sockstat"))
    });
    let trace = tracer.stop();
    trace.assert_closers(&conns);
    assert_eq!(diag, 5_000, "the kernel kept every timewait socket");
    assert_eq!(sockstat, 5_000);
    let client = &trace.summary["time_wait"]["client"];
    let peak = client["peak"].as_u64().expect("peak");
    assert_eq!(peak, diag, "probe peak vs kernel: {}", trace.summary);
    assert_eq!(client["entered"], peak, "{}", trace.summary);
    assert_eq!(client["open"], peak, "{}", trace.summary);
    assert_eq!(trace.summary["time_wait"]["server"]["entered"], 0);
    for record in &trace.records {
        for tw in record["time_wait"].as_array().expect("list") {
            assert_eq!(tw["side"], record["closer"], "{record}");
        }
    }
}
