//! `loadprobe run` against servers that misbehave (the harness's [`Hostile`] servers, in a
//! namespace of the test's own): the run ends on time, and every request it started is in the
//! record as what happened to it: completed, unfinished at the end, dropped by the schedule,
//! sent on a connection the server had closed.
//!
//! Needs root (or fails under `LOADPROBE_REQUIRE_BPF=1`).

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use loadprobe_tests::hostile::{Behaviour, Hostile, HostileStats};
use loadprobe_tests::{Netns, loadprobe_bin, require_root, tempdir};
use serde_json::Value;

/// A finished `loadprobe run`: its record, output and how long it took from the load's start.
struct Run {
    record: Value,
    output: Output,
    took: Duration,
}

impl Run {
    fn num(&self, path: &str) -> u64 {
        let v = path.split('.').fold(&self.record, |v, key| &v[key]);
        v.as_u64().unwrap_or_else(|| {
            panic!(
                "{path} is {v} in the record; stdout:\n{}",
                String::from_utf8_lossy(&self.output.stdout)
            )
        })
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
}

/// When to send SIGINT to a run: once the server has read this many requests (or, with
/// `accepted`, accepted this many connections), and this long after that.
struct Interrupt<'a> {
    server: &'a Hostile,
    requests: u64,
    accepted: bool,
    then: Duration,
}

/// Runs `loadprobe run ARGS -o record.json` in `netns`, interrupted if asked.
fn run(netns: &Netns, args: &[&str], interrupt: Option<Interrupt>) -> Run {
    let dir = tempdir(netns.name());
    let record = dir.join("record.json");
    let child = Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .arg(loadprobe_bin())
        .arg("run")
        .args(args)
        .arg("-o")
        .arg(&record)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip netns exec loadprobe run");
    if let Some(i) = interrupt {
        let patience = Instant::now() + Duration::from_secs(20);
        fn seen(s: &HostileStats, accepted: bool) -> &std::sync::atomic::AtomicU64 {
            if accepted { &s.accepted } else { &s.requests }
        }
        while i.server.count(|s| seen(s, i.accepted)) < i.requests {
            assert!(Instant::now() < patience, "the run never sent its requests");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(i.then);
        // `ip netns exec` execs loadprobe: the child's pid is loadprobe's.
        // SAFETY: kill has no memory effects; the pid is our own child, not yet waited for.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    }
    let output = child.wait_with_output().expect("wait for loadprobe run");
    let ended = SystemTime::now();
    let record = loadprobe_tests::read_record(&record, &output);
    let _ = std::fs::remove_dir_all(&dir);
    // From the load's start (the record's clock) to the process's end: the probe's start-up
    // before the load, which a loaded machine stretches, is not the run's to bound.
    let started = UNIX_EPOCH
        + Duration::from_millis(
            record["started_at_unix_ms"]
                .as_u64()
                .expect("started_at_unix_ms"),
        );
    Run {
        record,
        output,
        took: ended.duration_since(started).unwrap_or_default(),
    }
}

fn target(server: &Hostile) -> String {
    format!("http://{}/", server.addr)
}

/// The grace a run gives requests in flight at its deadline (`driver::GRACE`).
const GRACE: Duration = loadprobe::driver::GRACE;
/// Room for starting, the reachability check and writing the record.
const SLACK: Duration = Duration::from_secs(3);

/// A server that accepts and never answers: the open model's requests are all unfinished at
/// deadline + grace, none vanishes, and the run ends then.
#[test]
fn requests_to_a_hung_server_are_unfinished() {
    if !require_root("run against a server that never answers") {
        return;
    }
    let netns = Netns::for_test("fault-hung");
    let server = Hostile::start(&netns, Behaviour::NeverAnswers);
    let r = run(
        &netns,
        &[
            "--target",
            &target(&server),
            "--rate",
            "10",
            "--duration",
            "2s",
            "--threads",
            "2",
        ],
        None,
    );
    assert!(
        r.took < Duration::from_secs(2) + GRACE + SLACK,
        "took {:?}",
        r.took
    );
    assert_eq!(r.num("requests.total"), 0);
    assert_eq!(r.num("requests.unfinished"), 20, "{}", r.stdout());
    assert_eq!(r.num("requests.dropped"), 0);
    // Every request had its connection (the server saw them, after the reachability check).
    assert_eq!(r.num("connections.opened"), 20);
    assert_eq!(server.count(|s| &s.requests), 20);
    assert_eq!(r.record["duration_s"].as_f64(), Some(2.0));
    // The connections are in the window's seconds, where their requests started.
    let timeline = r.record["throughput"]["timeline"]
        .as_array()
        .expect("timeline");
    assert!(timeline.len() <= 2, "{timeline:?}");
    let opened: u64 = timeline
        .iter()
        .map(|s| s["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(opened, 20);
    assert!(r.stdout().contains("20 unfinished"), "{}", r.stdout());
}

/// Ctrl-C during the reachability check, a TLS handshake the server never answers (it would
/// hold the check for the whole --connect-timeout): the run ends at once, interrupted, with
/// nothing measured, not "unreachable" half a minute later.
#[test]
fn a_stop_during_the_handshake_check_ends_the_run_at_once() {
    if !require_root("run against a TLS port that never answers, interrupted") {
        return;
    }
    let netns = Netns::for_test("fault-tlsstop");
    let server = Hostile::start(&netns, Behaviour::NeverAnswers);
    let asked = Instant::now();
    let r = run(
        &netns,
        &[
            "--target",
            &format!("https://{}/", server.addr),
            "--insecure",
            "--connect-timeout",
            "30s",
            "--users",
            "2",
            "--duration",
            "10s",
        ],
        Some(Interrupt {
            server: &server,
            requests: 1,
            accepted: true,
            then: Duration::from_millis(300),
        }),
    );
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(r.output.status.code(), Some(130), "{}", r.stdout());
    assert_eq!(r.record["interrupted"], Value::Bool(true));
    assert_eq!(r.num("requests.total"), 0);
    assert_eq!(r.num("connections.opened"), 0);
    // Only the check's connection reached the server.
    assert_eq!(server.count(|s| &s.accepted), 1);
}

/// Ctrl-C while every user waits on a hung server: the users' requests are unfinished, their
/// connections opened, the run interrupted.
#[test]
fn a_stop_counts_what_was_in_flight() {
    if !require_root("run against a server that never answers, interrupted") {
        return;
    }
    let netns = Netns::for_test("fault-stop");
    let server = Hostile::start(&netns, Behaviour::NeverAnswers);
    let r = run(
        &netns,
        &[
            "--target",
            &target(&server),
            "--users",
            "8",
            "--duration",
            "60s",
        ],
        Some(Interrupt {
            server: &server,
            requests: 8,
            accepted: false,
            then: Duration::from_millis(200),
        }),
    );
    assert!(r.took < Duration::from_secs(10), "took {:?}", r.took);
    assert_eq!(r.record["interrupted"], Value::Bool(true));
    assert_eq!(r.num("requests.total"), 0);
    assert_eq!(r.num("requests.unfinished"), 8, "{}", r.stdout());
    assert_eq!(r.num("connections.opened"), 8);

    // Stopped during the grace after the deadline: still an interrupted run, at once.
    let r = run(
        &netns,
        &[
            "--target",
            &target(&server),
            "--users",
            "8",
            "--duration",
            "1s",
        ],
        // The first run's 8 requests, then this run's: 1.5 s later it is in the grace.
        Some(Interrupt {
            server: &server,
            requests: 16,
            accepted: false,
            then: Duration::from_millis(1500),
        }),
    );
    assert_eq!(r.record["interrupted"], Value::Bool(true), "{}", r.stdout());
    assert_eq!(r.num("requests.unfinished"), 8, "{}", r.stdout());
    assert_eq!(r.record["duration_s"].as_f64(), Some(1.0));
}

/// server-close against a server that answers `Connection: close` but waits for the client's
/// EOF: every response that arrived is ok, every FIN wait cut at the end is a missing FIN, and
/// the window is the duration asked for, not the drain.
#[test]
fn a_late_server_fin_keeps_the_response() {
    if !require_root("server-close against a server that waits for the client") {
        return;
    }
    let netns = Netns::for_test("fault-latefin");
    let server = Hostile::start(&netns, Behaviour::ClosesAfterClient);
    let r = run(
        &netns,
        &[
            "--target",
            &target(&server),
            "--mode",
            "server-close",
            "--users",
            "4",
            "--duration",
            "2s",
        ],
        None,
    );
    assert!(
        r.took < Duration::from_secs(2) + GRACE + SLACK,
        "took {:?}",
        r.took
    );
    // Each user's one request got its answer, then waited for a FIN that never came.
    assert_eq!(server.count(|s| &s.answered), 4);
    assert_eq!(r.num("requests.ok"), 4, "{}", r.stdout());
    assert_eq!(r.num("requests.total"), 4);
    assert_eq!(r.num("connections.server_fin_missing"), 4);
    assert_eq!(r.num("requests.unfinished"), 0);
    assert_eq!(r.record["duration_s"].as_f64(), Some(2.0));
}

/// The open model at a rate no driver can hold ends at its deadline; the starts it could not
/// make are dropped, and every start of the window is accounted for.
#[test]
fn the_open_model_ends_at_its_deadline() {
    if !require_root("open model beyond what the driver can do") {
        return;
    }
    let netns = Netns::for_test("fault-rate");
    let r = run(&netns, &["--rate", "1e12", "--duration", "1s"], None);
    assert!(
        r.took < Duration::from_secs(1) + GRACE + SLACK,
        "took {:?}",
        r.took
    );
    assert!(r.record["duration_s"].as_f64().unwrap() <= 1.0);
    let started = r.num("requests.total") + r.num("requests.unfinished");
    assert!(started > 0, "{}", r.stdout());
    assert_eq!(started + r.num("requests.dropped"), 1_000_000_000_000);
    assert!(r.stdout().contains("dropped"), "{}", r.stdout());

    // A rate below one per duration: one start, and the run still lasts its duration only.
    let r = run(&netns, &["--rate", "0.1", "--duration", "1s"], None);
    assert!(r.took < Duration::from_secs(1) + SLACK, "took {:?}", r.took);
    assert_eq!(r.num("requests.total"), 1);
    assert_eq!(r.record["duration_s"].as_f64(), Some(1.0));
}

/// Idle keep-alive connections the server closes: the driver sees the server's FIN before
/// reusing one and opens a new connection instead, so no request is written to a server that
/// has closed (the server counts any that arrive after its FIN), and the server's FIN is the
/// first close, as the probe must say.
#[test]
fn idle_connections_closed_by_the_server_are_not_reused() {
    if !require_root("keep-alive against a server with a short idle timeout") {
        return;
    }
    let netns = Netns::for_test("fault-idle");
    let server = Hostile::start(
        &netns,
        Behaviour::ClosesIdleAfter(Duration::from_millis(300)),
    );
    let r = run(
        &netns,
        &[
            "--target",
            &target(&server),
            "--mode",
            "keep-alive",
            "--users",
            "4",
            "--think-time",
            "600ms",
            "--duration",
            "3s",
        ],
        None,
    );
    assert_eq!(server.count(|s| &s.after_fin), 0, "{}", r.stdout());
    let total = r.num("requests.total");
    assert!(total >= 16, "{}", r.stdout());
    assert_eq!(r.num("requests.ok"), total, "{}", r.stdout());
    assert_eq!(r.num("requests.stale_connection"), 0);
    // Every request needed a new connection, the old one having been closed by the server.
    assert_eq!(r.num("connections.opened"), total);
    if r.record["probe"]["attached"] == Value::Bool(true) {
        assert_eq!(
            r.num("connections.closer.server-reset"),
            0,
            "{}",
            r.stdout()
        );
    }
}

/// A server that drops every connection's second request: each is a request sent on a
/// connection the server closed. Retried (the default), each is counted and the retry
/// succeeds; with `--no-retry-stale` each is counted and fails.
#[test]
fn requests_on_closed_connections_are_counted_and_retried_or_not() {
    if !require_root("keep-alive against a server that drops second requests") {
        return;
    }
    let netns = Netns::for_test("fault-stale");
    let server = Hostile::start(&netns, Behaviour::DropsSecondRequest);
    let args = [
        "--target",
        &target(&server),
        "--mode",
        "keep-alive",
        "--users",
        "2",
        "--think-time",
        "20ms",
        "--duration",
        "2s",
    ];
    let r = run(&netns, &args, None);
    let stale = r.num("requests.stale_connection");
    assert!(stale >= 10, "{}", r.stdout());
    assert_eq!(r.num("requests.retried"), stale);
    assert_eq!(
        r.num("requests.ok"),
        r.num("requests.total"),
        "{}",
        r.stdout()
    );
    assert!(
        r.stdout().contains(&format!("{stale} requests were sent")),
        "{}",
        r.stdout()
    );

    let no_retry = [&args[..], &["--no-retry-stale"]].concat();
    let r = run(&netns, &no_retry, None);
    let stale = r.num("requests.stale_connection");
    assert!(stale >= 10, "{}", r.stdout());
    assert_eq!(r.num("requests.retried"), 0);
    assert_eq!(r.num("requests.errors.eof"), stale, "{}", r.stdout());
    assert_eq!(r.num("requests.ok") + stale, r.num("requests.total"));
}

/// A kept-alive connection the server closed while it was idle is replaced before the request
/// is sent; when the new connection then fails, that is the new connection's failure (an EOF),
/// not a request sent on a closed connection: nothing is stale, and nothing is retried.
#[test]
fn a_failure_on_the_connection_that_replaced_a_closed_one_is_not_stale() {
    if !require_root("keep-alive against a server that closes idle connections") {
        return;
    }
    let netns = Netns::for_test("fault-replaced");
    for extra in [&[][..], &["--no-retry-stale"][..]] {
        let server = Hostile::start(
            &netns,
            Behaviour::ClosesIdleThenDropsNew(Duration::from_millis(100)),
        );
        let target = target(&server);
        let args = [
            &[
                "--target",
                &target,
                "--mode",
                "keep-alive",
                "--users",
                "1",
                "--think-time",
                "400ms",
                "--duration",
                "2s",
            ][..],
            extra,
        ]
        .concat();
        let r = run(&netns, &args, None);
        let total = r.num("requests.total");
        assert!(total >= 3, "{extra:?}: {}", r.stdout());
        assert_eq!(r.num("requests.ok"), 1, "{extra:?}: {}", r.stdout());
        assert_eq!(
            r.num("requests.errors.eof"),
            total - 1,
            "{extra:?}: {}",
            r.stdout()
        );
        assert_eq!(
            r.num("requests.stale_connection"),
            0,
            "{extra:?}: {}",
            r.stdout()
        );
        assert_eq!(r.num("requests.retried"), 0, "{extra:?}: {}", r.stdout());
    }
}

/// Every `--source-ips` address is checked before any load: one that is not local, and a
/// repeated one, are one-line errors naming the address.
#[test]
fn every_source_address_is_checked_before_load() {
    if !require_root("source addresses in a namespace") {
        return;
    }
    let netns = Netns::for_test("fault-srcip");
    for (spec, named) in [
        ("127.0.0.2,192.0.2.1", "192.0.2.1"),
        ("127.0.0.2,127.0.0.3,127.0.0.2", "127.0.0.2"),
    ] {
        let out = Command::new("ip")
            .args(["netns", "exec", netns.name()])
            .arg(loadprobe_bin())
            .args([
                "run",
                "--no-probe",
                "--requests",
                "10",
                "--source-ips",
                spec,
            ])
            .output()
            .expect("loadprobe run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{spec}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{spec}: {stderr}");
        assert!(stderr.contains(named), "{spec}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{spec}: load ran: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
