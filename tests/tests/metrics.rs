//! `loadprobe trace --metrics`: the OpenMetrics endpoint against real sockets, while trace runs
//! as an unprivileged user with no capability.
//!
//! Needs root (or fails under `LOADPROBE_REQUIRE_BPF=1`) and the loadprobe binary of the same
//! cargo profile.

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::sleep;
use std::time::{Duration, Instant};

use loadprobe_tests::{
    Netns, Scrape, Side, Tracer, V4, burst_client_close, client_first_close, connect_pair,
    linger0_abort, listen, read_to_eof, require_root, scrape, server_first_close,
};
use serde_json::Value;

const METRICS: &str = "127.0.0.1:9464";

fn metrics_addr() -> SocketAddr {
    METRICS.parse().unwrap()
}

fn get(s: &Scrape, series: &str) -> u64 {
    let v = *s
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {s:#?}"));
    v as u64
}

/// Each number of the summary has its series, with the same value, when nothing happens between
/// the scrape and the end of the trace.
fn assert_same_numbers(s: &Scrape, summary: &Value) {
    for (closer, n) in summary["closer"].as_object().expect("closers") {
        let series = format!("loadprobe_connections_closed_total{{closer=\"{closer}\"}}");
        assert_eq!(get(s, &series), n.as_u64().unwrap(), "{series}");
    }
    assert_eq!(
        get(s, "loadprobe_lost_events_total"),
        summary["lost_events"]
    );
    assert_eq!(
        get(s, "loadprobe_skipped_events_total"),
        summary["skipped_events"]
    );
    let tw = &summary["time_wait"];
    assert_eq!(
        get(s, "loadprobe_time_wait_unmatched_total"),
        tw["unmatched"]
    );
    for side in ["client", "server"] {
        let sum = &tw[side];
        let n = |key: &str| sum[key].as_u64().unwrap();
        let entered = format!("loadprobe_time_wait_entered_total{{side=\"{side}\"}}");
        assert_eq!(get(s, &entered), n("entered"), "{entered}");
        let overflow = format!("loadprobe_time_wait_overflow_total{{side=\"{side}\"}}");
        assert_eq!(get(s, &overflow), n("overflow"), "{overflow}");
        let mut ended = 0;
        for reason in ["expired", "reused", "killed"] {
            let series =
                format!("loadprobe_time_wait_ended_total{{side=\"{side}\",reason=\"{reason}\"}}");
            assert_eq!(get(s, &series), n(reason), "{series}");
            ended += n(reason);
        }
        // Alive at the scrape is what the trace's end finds still open.
        let alive: u64 = ["FIN_WAIT2", "TIME_WAIT"]
            .iter()
            .map(|sub| {
                get(
                    s,
                    &format!("loadprobe_time_wait_alive{{side=\"{side}\",substate=\"{sub}\"}}"),
                )
            })
            .sum();
        assert_eq!(alive, n("open"), "{side} alive");
        let count = format!("loadprobe_time_wait_lifetime_seconds_count{{side=\"{side}\"}}");
        assert_eq!(get(s, &count), ended, "{count}");
        let inf =
            format!("loadprobe_time_wait_lifetime_seconds_bucket{{le=\"+Inf\",side=\"{side}\"}}");
        assert_eq!(get(s, &inf), ended, "{inf}");
    }
}

/// trace serves /metrics as nobody with no capability; the counts keep flowing after the drop
/// (every connection here is made after it), a client that never reads holds nothing up, and
/// the last scrape equals the jsonl summary: closers, TIME_WAIT entered, ended (a reuse), alive
/// per substate (a FIN_WAIT2 one), lifetimes, lost and skipped events.
#[test]
fn metrics_equal_the_summary_while_running_unprivileged() {
    if !require_root("trace --metrics") {
        return;
    }
    let netns = Netns::for_test("metrics");
    netns.sysctl("net.ipv4.tcp_tw_reuse", "2");
    netns.sysctl("net.ipv4.tcp_tw_reuse_delay", "100");
    netns.sysctl("net.ipv4.ip_local_port_range", "40100 40100");
    let tracer = Tracer::start_with(netns.name(), &[8130], &["--metrics", METRICS]);
    let pid = tracer.pid();
    assert_eq!(
        loadprobe_tests::status_line(pid, "Uid:"),
        "65534\t65534\t65534\t65534"
    );
    assert_eq!(
        loadprobe_tests::status_line(pid, "Gid:"),
        "65534\t65534\t65534\t65534"
    );
    for set in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:", "CapBnd:"] {
        assert_eq!(
            loadprobe_tests::status_line(pid, set),
            "0000000000000000",
            "{set}"
        );
    }
    assert_eq!(loadprobe_tests::status_line(pid, "NoNewPrivs:"), "1");

    // A client TIME_WAIT that a second connection from the only local port reuses.
    netns.enter_thread(|| {
        let server = SocketAddr::new(V4, 8130);
        let listener = listen(V4, 8130);
        for i in 0..2 {
            let mut c = TcpStream::connect(server).unwrap_or_else(|e| panic!("connect {i}: {e}"));
            c.write_all(b"x").expect("write");
            drop(c);
            let (mut a, _) = listener.accept().expect("accept");
            read_to_eof(&mut a);
            drop(a);
            if i == 0 {
                sleep(Duration::from_millis(400));
            }
        }
    });
    netns.sysctl("net.ipv4.ip_local_port_range", "40200 40400");
    let first = wait_for(&netns, |s| {
        get(s, "loadprobe_connections_closed_total{closer=\"client\"}") == 2
            && get(
                s,
                "loadprobe_time_wait_ended_total{side=\"client\",reason=\"reused\"}",
            ) == 1
    });

    let mut made = client_first_close(&netns, V4, 8130);
    made.extend(server_first_close(&netns, V4, 8130));
    made.extend(linger0_abort(&netns, V4, 8130, Side::Client));
    // The client closes and the server keeps its end: the client's socket waits in FIN_WAIT2.
    let (fin_wait2_peer, _client) = netns.enter_thread(|| {
        let listener = listen(V4, 8130);
        let (c, a) = connect_pair(&listener);
        drop(c);
        (a, listener)
    });
    // Clients that connect and never send, and one that asks and never reads.
    let stuck: Vec<TcpStream> = netns.enter_thread(|| {
        let mut v: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(metrics_addr()).expect("connect"))
            .collect();
        let mut asks = TcpStream::connect(metrics_addr()).expect("connect");
        asks.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        v.push(asks);
        v
    });

    let started = Instant::now();
    let last = wait_for(&netns, |s| {
        get(
            s,
            "loadprobe_time_wait_alive{side=\"client\",substate=\"FIN_WAIT2\"}",
        ) == 1
            && get(
                s,
                "loadprobe_connections_closed_total{closer=\"client-reset\"}",
            ) == 1
    });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "scraped with stuck clients"
    );
    let closed = |s: &Scrape| -> u64 {
        s.iter()
            .filter(|(k, _)| k.starts_with("loadprobe_connections_closed_total"))
            .map(|(_, v)| *v as u64)
            .sum()
    };
    let made_by = |closer: &str| made.iter().filter(|c| c.expected == closer).count() as u64;
    // Counters only grow, by what was made after the first scrape (the FIN_WAIT2 connection is
    // not closed yet; its client end's timewait socket is alive in FIN_WAIT2, and enters the
    // TIME_WAIT series only when the peer's FIN arrives).
    assert_eq!(closed(&last) - closed(&first), made.len() as u64);
    let entered = |s: &Scrape, side: &str| {
        get(
            s,
            &format!("loadprobe_time_wait_entered_total{{side=\"{side}\"}}"),
        )
    };
    assert_eq!(
        entered(&last, "client") - entered(&first, "client"),
        made_by("client")
    );
    assert_eq!(
        entered(&last, "server") - entered(&first, "server"),
        made_by("server")
    );
    for (series, v) in &first {
        if series.ends_with("_total") {
            assert!(last[series] >= *v, "{series} went down");
        }
    }
    // The server closes its end too: the client's socket turns into a true TIME_WAIT.
    drop(fin_wait2_peer);
    let end = wait_for(&netns, |s| {
        closed(s) == closed(&last) + 1
            && get(
                s,
                "loadprobe_time_wait_alive{side=\"client\",substate=\"FIN_WAIT2\"}",
            ) == 0
    });
    assert_eq!(entered(&end, "client"), entered(&last, "client") + 1);
    // Quiet for a moment: the same numbers again, then the summary.
    sleep(Duration::from_millis(300));
    assert_eq!(scrape(&netns, metrics_addr()), end);
    drop(stuck);
    let trace = tracer.stop();
    assert!(trace.status.success(), "{}", trace.stderr);
    assert_same_numbers(&end, &trace.summary);
    let tw = &trace.summary["time_wait"];
    assert_eq!(tw["client"]["reused"], 1);
    assert_eq!(tw["client"]["open"], 1 + made_by("client") + 1);
    assert_eq!(tw["server"]["open"], made_by("server"));
    assert_eq!(trace.lost_events(), 0);
}

/// Scrapes until `ready` holds (the probe's reader drains every 20 ms); panics after 10 s.
fn wait_for(netns: &Netns, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    wait_at(netns, metrics_addr(), ready)
}

/// [`wait_for`] on the metrics at `addr`.
fn wait_at(netns: &Netns, addr: SocketAddr, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(netns, addr);
        if ready(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "metrics never got there: {s:#?}");
        sleep(Duration::from_millis(50));
    }
}

/// A user that does not exist, root's account (which would keep root's privileges) and a
/// metrics address already taken are one line each and exit 2, before the probe loads (so also
/// without root). `--duration` ends a trace that wrongly starts.
#[test]
fn bad_user_or_metrics_address_is_one_line_before_the_probe() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap().to_string();
    for (args, says) in [
        (
            vec!["--user", "no-such-user-lp"],
            "loadprobe: error: --user no-such-user-lp: no such user".to_string(),
        ),
        (
            vec!["--user", "root"],
            "loadprobe: error: --user root: uid 0 or gid 0 keeps root's privileges; name an \
             unprivileged user"
                .to_string(),
        ),
        (
            vec!["--metrics", addr.as_str()],
            format!("loadprobe: error: --metrics {addr}: cannot listen: Address already in use"),
        ),
    ] {
        let out = std::process::Command::new(loadprobe_tests::loadprobe_bin())
            .args(["trace", "--duration", "2s"])
            .args(&args)
            .output()
            .expect("run loadprobe");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(err.starts_with(&says), "{args:?}: {err}");
        assert!(!err.contains("tracing"), "{args:?}: {err}");
    }
}

/// One deadline per client from its accept, not per read: sixteen clients that each send a
/// byte a second, never finishing a request, are all cut off after 5 s; meanwhile they hold
/// up no other client: a scrape beside them is answered at once.
#[test]
fn trickling_clients_are_cut_off_at_their_deadline() {
    if !require_root("trace --metrics with trickling clients") {
        return;
    }
    const ADDR: &str = "127.0.0.1:9468";
    let addr: SocketAddr = ADDR.parse().unwrap();
    let netns = Netns::for_test("metrics-trickle");
    let tracer = Tracer::start_with(netns.name(), &[8131], &["--metrics", ADDR]);
    let accepted = Instant::now();
    let mut trickling: Vec<TcpStream> = netns.enter_thread(|| {
        (0..16)
            .map(|_| {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
                    .expect("send");
                s
            })
            .collect()
    });
    // The server has read each one's first bytes.
    sleep(Duration::from_millis(300));
    let asked = Instant::now();
    let s = scrape(&netns, addr);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "a scrape beside trickling clients took {:?}",
        asked.elapsed()
    );
    assert_eq!(get(&s, "loadprobe_lost_events_total"), 0);
    // A byte a second from each, for 7 s in all: the server must have closed them at 5 s.
    while accepted.elapsed() < Duration::from_secs(7) {
        sleep(Duration::from_secs(1));
        for s in &mut trickling {
            let _ = s.write_all(b"a");
        }
    }
    let held = trickling
        .iter()
        .filter(|&(mut s)| {
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            // Closed by the server: end of stream, or a reset for the bytes sent after.
            matches!(
                s.read(&mut [0u8; 64]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
            )
        })
        .count();
    assert_eq!(held, 0, "clients still held after 7 s");
    drop(trickling);
    let trace = tracer.stop();
    assert!(trace.status.success(), "{}", trace.stderr);
}

/// CPU time (user and system, in clock ticks) process `pid` has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// With ten thousand timewait sockets alive and nothing happening, `trace --metrics` costs
/// next to nothing: its drains every 20 ms do not walk the live sockets or copy the totals
/// (which cost several % of a CPU at this count), and a scrape still reports them all.
#[test]
fn idle_metrics_cost_nothing_per_live_timewait_socket() {
    if !require_root("trace --metrics with many timewait sockets") {
        return;
    }
    const ADDR: &str = "127.0.0.1:9469";
    let netns = Netns::for_test("metrics-idle");
    let tracer = Tracer::start_with(netns.name(), &[8132], &["--metrics", ADDR]);
    let made = burst_client_close(&netns, V4, 8132, 10_000);
    let pid = tracer.pid();
    // Idle from here: the burst's events are read, then 5 s of nothing but drains.
    sleep(Duration::from_secs(1));
    let (before, started) = (cpu_ticks(pid), Instant::now());
    sleep(Duration::from_secs(5));
    let used = cpu_ticks(pid) - before;
    let ticks_per_s = 100.0; // USER_HZ, the same on every Linux architecture
    let share = used as f64 / ticks_per_s / started.elapsed().as_secs_f64();
    // Every one is counted: alive, or taken over by a later connection of the burst (loopback
    // reuses timewait ports).
    let s = scrape(&netns, ADDR.parse().unwrap());
    let client = |series: &str| get(&s, &format!("loadprobe_time_wait_{series}"));
    // Exact, but for timer hits the kernel skipped (a hit interrupting the same program),
    // which the probe reports.
    let entered = client("entered_total{side=\"client\"}");
    let skipped = get(&s, "loadprobe_skipped_events_total");
    let made_n = made.len() as u64;
    assert!(
        entered <= made_n && made_n - entered <= skipped,
        "entered {entered} of {made_n}, {skipped} hits skipped"
    );
    let ended: u64 = ["expired", "reused", "killed"]
        .iter()
        .map(|r| client(&format!("ended_total{{side=\"client\",reason=\"{r}\"}}")))
        .sum();
    let alive = client("alive{side=\"client\",substate=\"TIME_WAIT\"}");
    assert_eq!(alive + ended, entered);
    assert!(alive > made.len() as u64 / 2, "{s:#?}");
    let trace = tracer.stop();
    assert!(trace.status.success(), "{}", trace.stderr);
    assert!(
        share < 0.02,
        "idle trace --metrics used {:.1} % of a CPU with {alive} timewait sockets alive",
        share * 100.0
    );
}

/// SIGHUP does not end a trace: a daemon outlives the terminal or session that started it, and
/// a `kill -HUP` (a daemon's "reload") must not cost its counts. trace says so on stderr, keeps
/// counting and serving, and SIGINT still ends it with its summary.
#[test]
fn sighup_keeps_tracing_and_serving() {
    if !require_root("trace and SIGHUP") {
        return;
    }
    const ADDR: &str = "127.0.0.1:9469";
    let addr: SocketAddr = ADDR.parse().unwrap();
    let netns = Netns::for_test("metrics-sighup");
    let tracer = Tracer::start_with(netns.name(), &[8132], &["--metrics", ADDR]);
    let pid = tracer.pid();
    let mut made = client_first_close(&netns, V4, 8132);
    let closed = |s: &Scrape| {
        s.iter()
            .filter(|(k, _)| k.starts_with("loadprobe_connections_closed_total"))
            .map(|(_, v)| *v as u64)
            .sum::<u64>()
    };
    let wait = |n: u64| wait_at(&netns, addr, |s| closed(s) == n);
    wait(1);
    for _ in 0..2 {
        // SAFETY: kill(2) on the tracer, our child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) }, 0);
        sleep(Duration::from_millis(300));
    }
    let state = loadprobe_tests::status_line(pid, "State:");
    assert!(!state.starts_with('Z'), "trace ended at SIGHUP: {state}");
    made.extend(server_first_close(&netns, V4, 8132));
    let s = wait(2);
    assert_eq!(
        get(&s, "loadprobe_connections_closed_total{closer=\"server\"}"),
        1
    );
    let trace = tracer.stop();
    assert!(trace.status.success(), "{}", trace.stderr);
    let hangups = trace
        .stderr
        .lines()
        .filter(|l| l.contains("SIGHUP: still tracing"))
        .count();
    assert_eq!(hangups, 2, "{}", trace.stderr);
    trace.assert_closers(&made);
}

/// `VmRSS` and `Threads` of `pid`.
fn rss_and_threads(pid: u32) -> (u64, u64) {
    let field = |name| {
        loadprobe_tests::status_line(pid, name)
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} of {pid}"))
    };
    (field("VmRSS:"), field("Threads:"))
}

/// Clients that ask for /metrics and never read the answer, 200 of them kept open, hold
/// nothing up: each answer goes to the kernel whole, so a scrape beside them is answered well
/// inside the 5 s a client is given (a server that held each client until its answer was read
/// answered 503 here), and the trace's threads and memory stay where they were.
#[test]
fn clients_that_never_read_hold_nothing_up() {
    if !require_root("trace --metrics with clients that never read") {
        return;
    }
    const ADDR: &str = "127.0.0.1:9470";
    let addr: SocketAddr = ADDR.parse().unwrap();
    let netns = Netns::for_test("metrics-unread");
    let tracer = Tracer::start_with(netns.name(), &[8133], &["--metrics", ADDR]);
    let pid = tracer.pid();
    burst_client_close(&netns, V4, 8133, 100);
    // The first scrapes allocate what every later one reuses.
    wait_at(&netns, addr, |s| {
        get(s, "loadprobe_connections_closed_total{closer=\"client\"}") == 100
    });
    let (rss_before, threads_before) = rss_and_threads(pid);
    let mut unread: Vec<TcpStream> = Vec::new();
    for round in 0..4 {
        unread.extend(netns.enter_thread(|| {
            (0..50)
                .map(|_| {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                        .expect("send");
                    s
                })
                .collect::<Vec<_>>()
        }));
        let asked = Instant::now();
        let s = scrape(&netns, addr);
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "round {round}: a scrape took {:?}",
            asked.elapsed()
        );
        assert_eq!(
            get(&s, "loadprobe_connections_closed_total{closer=\"client\"}"),
            100
        );
    }
    // Each never-reading client's answer waits in the kernel's buffers, not in trace.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (rss_after, threads_after) = loop {
        let (rss, threads) = rss_and_threads(pid);
        if threads == threads_before || Instant::now() > deadline {
            break (rss, threads);
        }
        sleep(Duration::from_millis(50));
    };
    assert_eq!(threads_after, threads_before, "client threads left");
    assert!(
        rss_after < rss_before + 2048,
        "RSS grew from {rss_before} to {rss_after} KiB with {} clients that never read",
        unread.len()
    );
    drop(unread);
    let trace = tracer.stop();
    assert!(trace.status.success(), "{}", trace.stderr);
}

/// The series of `family` in a scrape, by their labels.
fn series_of<'a>(s: &'a Scrape, family: &str) -> Vec<(&'a str, u64)> {
    s.iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(family)?.strip_prefix('{')?, *v as u64)))
        .collect()
}

/// `--metrics-by process --metrics-top 10` with 200 distinct client processes (curl, one
/// connection each, closed first by curl) against nginx: every owner family has at most 10
/// owners and `other`, no series goes away or down between two scrapes (the counters are
/// monotonic while owners beyond the bound land in `other`), and the owner series add up to
/// the totals.
#[test]
fn owner_series_stay_bounded_and_monotonic_with_200_processes() {
    if !require_root("metrics by process") {
        return;
    }
    let netns = Netns::for_test("metrics-by");
    let _nginx = loadprobe_tests::Nginx::start(netns.name(), 8131);
    let tracer = Tracer::start_with(
        netns.name(),
        &[8131],
        &[
            "--metrics",
            METRICS,
            "--metrics-by",
            "process",
            "--metrics-top",
            "10",
        ],
    );
    let curls = |n: u32| {
        let status = std::process::Command::new("ip")
            .args(["netns", "exec", netns.name(), "sh", "-c"])
            .arg(format!(
                "for i in $(seq {n}); do curl -sf -o /dev/null http://127.0.0.1:8131/ || exit 1; done"
            ))
            .status()
            .expect("sh");
        assert!(status.success());
    };
    let closed = |s: &Scrape| get(s, "loadprobe_connections_closed_total{closer=\"client\"}");
    curls(100);
    let first = wait_for(&netns, |s| closed(s) == 100);
    curls(100);
    let last = wait_for(&netns, |s| closed(s) == 200);
    let trace = tracer.stop();
    let entered = "loadprobe_owner_time_wait_entered_total";
    for s in [&first, &last] {
        for family in [entered, "loadprobe_owner_time_wait_alive"] {
            let series = series_of(s, family);
            assert!(series.len() <= 11, "{family}: {series:#?}");
            assert!(
                series.iter().any(|(l, _)| *l == "process=\"other\"}"),
                "{series:#?}"
            );
        }
        let owners: std::collections::BTreeSet<&str> =
            series_of(s, "loadprobe_owner_connections_closed_total")
                .into_iter()
                .map(|(l, _)| l.split(",closer=").next().unwrap())
                .collect();
        assert!(owners.len() <= 11, "{owners:#?}");
        // Each connection is counted once per owner of an end: curl's and nginx's.
        let sum: u64 = series_of(s, "loadprobe_owner_connections_closed_total")
            .iter()
            .filter(|(l, _)| l.ends_with(",closer=\"client\"}"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(sum, 2 * closed(s), "{s:#?}");
        let sum: u64 = series_of(s, entered).iter().map(|(_, v)| v).sum();
        assert_eq!(
            sum,
            get(s, "loadprobe_time_wait_entered_total{side=\"client\"}")
                + get(s, "loadprobe_time_wait_entered_total{side=\"server\"}"),
            "{s:#?}"
        );
    }
    for (series, v) in first
        .iter()
        .filter(|(k, _)| k.starts_with("loadprobe_owner_") && k.contains("_total{"))
    {
        let now = last
            .get(series)
            .unwrap_or_else(|| panic!("{series} went away"));
        assert!(now >= v, "{series}: {v} then {now}");
    }
    let other = get(&last, &format!("{entered}{{process=\"other\"}}"));
    assert!(other >= 190, "200 processes, 10 series: other {other}");
    assert_eq!(trace.lost_events(), 0);
}

/// A trace whose terminal goes away (its session ended: the terminal hangs up, SIGHUP) goes on
/// tracing, and its writes to the dead terminal (EIO) end nothing: it ends at `--duration`
/// with status 0, as it would on a closed pipe.
#[test]
fn a_trace_outlives_its_terminal() {
    if !require_root("trace on a terminal that hangs up") {
        return;
    }
    let netns = Netns::for_test("metrics-pty");
    // The child gets a terminal of its own (pty.fork); the parent closes it after a second.
    let script = "import os, pty, sys, time\n\
        pid, fd = pty.fork()\n\
        if pid == 0:\n    os.execv(sys.argv[1], sys.argv[1:])\n\
        time.sleep(1)\n\
        os.close(fd)\n\
        _, status = os.waitpid(pid, 0)\n\
        print(os.waitstatus_to_exitcode(status))\n";
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", netns.name(), "python3", "-c", script])
        .arg(loadprobe_tests::loadprobe_bin())
        .args(["trace", "--port", "8137", "--duration", "3s"])
        .output()
        .expect("python3 with a pty");
    let code = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        code.trim(),
        "0",
        "trace's exit status after its terminal hung up; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
