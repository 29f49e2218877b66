//! `loadprobe find-limit` end to end: the breaking point of client-close churn over veth with
//! a 100-port range, named from the records (the port range without reuse; something else, or
//! nothing up to the cap, with it), Ctrl-C during a search, and bad input before any load.
//!
//! Needs root (or fails under `LOADPROBE_REQUIRE_BPF=1`) and the loadprobe binary of the same
//! cargo profile. The tests run one at a time: each measures what the machine's cores can
//! carry, and two searches at once would measure each other.

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use loadprobe_tests::{
    Netns, assert_success, loadprobe_bin, netns_listed, read_record, require_root, tempdir,
    wait_for_port,
};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Namespaces a find-limit of process `pid` would use, still listed by `ip netns list`.
fn leftovers(pid: u32) -> Vec<String> {
    netns_listed(&format!("lpf{pid}-"))
}

/// What one search left: its output and `--output-dir`.
struct Search {
    output: Output,
    stdout: String,
    dir: PathBuf,
}

impl Search {
    fn json(&self, file: &str) -> Value {
        read_record(&self.dir.join(file), &self.output)
    }
}

impl Drop for Search {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `loadprobe find-limit` against the embedded server with a 100-port client range, 5 s
/// steps and no error allowed, plus `args`.
fn find_limit(test: &str, args: &[&str]) -> Search {
    let dir = tempdir(&format!("find-limit-{test}"));
    let started = Instant::now();
    let mut cmd = Command::new(loadprobe_bin());
    cmd.args([
        "find-limit",
        "--mode",
        "client-close",
        "--duration",
        "5s",
        "--max-error-rate",
        "0",
        "--sysctl",
        "net.ipv4.ip_local_port_range=40000 40099",
        "--output-dir",
    ])
    .arg(&dir)
    .args(args);
    let output = cmd.output().expect("run loadprobe find-limit");
    eprintln!("{test}: find-limit took {:?}", started.elapsed());
    let search = Search {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        output,
        dir,
    };
    eprintln!("{}", search.stdout);
    search
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {v}"))
}

/// Every step's record is in the folder under the name the summary gives, is a run record of
/// the step's rate, and the names sort in step order (what `compare DIR/step-*.json` reads).
fn assert_step_records(search: &Search, summary: &Value) {
    let steps = summary["steps"].as_array().expect("steps");
    let mut names = Vec::new();
    for step in steps {
        let file = step["file"].as_str().expect("a record per step");
        let record = search.json(file);
        assert_eq!(record["schema"], "loadprobe.run/1");
        assert_eq!(record["config"]["rate"], step["rate"], "{file}");
        assert_eq!(record["config"]["embedded_server"], true);
        names.push(file.to_string());
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "step files sort in step order");
}

/// The seed's port-exhaustion story as a search. 100 client ports and TIME_WAIT's 60 s make
/// 100 / 60 ≈ 1.7 new connections a second the most the client sustains for good; a 5 s step
/// from an empty table holds up to 100 ports / 5 s = 20/s. With tcp_tw_reuse=1 connect() takes
/// over a TIME_WAIT port once it is tcp_tw_reuse_delay old: at the default 1 s the same 100
/// ports carry ~100/s, only 5× the 20/s, so the delay is set to 100 ms (~1000/s) to leave room
/// for the ten times asked; the cap of 400/s (20× what held without reuse) keeps that search
/// at four steps.
///
/// Time: starting at 5/s, doubling to the break at ~20/s and bisecting to 10 % takes 6 to 8
/// steps of ~6 s (5 s measured, a fresh namespace pair and the probe attached); the reuse
/// search starts at 50/s and takes 4 (50, 100, 200, 400). About 80 s in all.
#[test]
fn the_port_range_breaks_without_reuse_and_ten_times_more_holds_with_it() {
    if !require_root(
        "find_limit::the_port_range_breaks_without_reuse_and_ten_times_more_holds_with_it",
    ) {
        return;
    }
    let _serial = serial();
    let without = find_limit(
        "no-reuse",
        &["--sysctl", "net.ipv4.tcp_tw_reuse=0", "--start-rate", "5"],
    );
    assert_success(&without.output);
    let s = without.json("find-limit.json");
    assert_eq!(s["schema"], "loadprobe.find-limit/1");
    assert_eq!(s["stopped"], "converged", "{s:#}");
    let held = num(&s, "highest_held_rate");
    let broken = num(&s, "lowest_broken_rate");
    // 100 ports in a 5 s step: at most ~20/s, and the search brackets it within 10 %.
    assert!((10.0..=21.0).contains(&held), "held {held}/s\n{s:#}");
    assert!(broken > held && broken - held <= 0.1 * held, "{s:#}");
    // What broke is the port range, from the record's EADDRNOTAVAIL and its sysctls.
    let broke = &s["broke"];
    assert_eq!(broke["kind"], "client-ports", "{s:#}");
    assert_eq!(broke["port_range"], "40000 40099");
    assert_eq!(broke["ports"], 100);
    assert_eq!(broke["tw_reuse_applies"], false);
    assert!(broke["eaddrnotavail"].as_u64().unwrap() > 0);
    // The rate sustained for good, from the port budget: 100 ports / 60 s.
    let bound = &s["port_bound"];
    let sustainable = num(bound, "rate_per_s");
    assert!(
        (sustainable - 100.0 / 60.0).abs() <= 0.1 * 100.0 / 60.0,
        "{sustainable}"
    );
    assert_eq!(num(bound, "hold_s"), 60.0);
    // Every step that broke was named the same way; every one that held had no error.
    for step in s["steps"].as_array().unwrap() {
        match step["held"].as_bool() {
            Some(true) => assert_eq!(step["error_rate"], 0.0, "{step}"),
            Some(false) => assert_eq!(step["broke"]["kind"], "client-ports", "{step}"),
            None => panic!("a step was not judged: {step}"),
        }
    }
    assert_step_records(&without, &s);
    // The text says both rates side by side, and what broke (its lines wrap at 100 columns:
    // matched word by word).
    let words = without
        .stdout
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for expect in [
        "highest rate that held for a step",
        "sustainable from the port budget 1.67/s for good: 100 client ports / 60 s each",
        "what broke at",
        "the client's port range",
        "(ip_local_port_range 40000 40099)",
    ] {
        assert!(words.contains(expect), "{expect}\n{}", without.stdout);
    }

    let with = find_limit(
        "reuse",
        &[
            "--sysctl",
            "net.ipv4.tcp_tw_reuse=1",
            "--sysctl",
            "net.ipv4.tcp_tw_reuse_delay=100",
            "--start-rate",
            "50",
            "--max-rate",
            "400",
        ],
    );
    assert_success(&with.output);
    let r = with.json("find-limit.json");
    let reused_held = num(&r, "highest_held_rate");
    assert!(
        reused_held >= 10.0 * held,
        "with reuse {reused_held}/s, without {held}/s\n{r:#}"
    );
    // Nothing broke up to the cap, and it says so; or, if a step did break, not the ports as
    // they were without reuse.
    match r["stopped"].as_str() {
        Some("cap-held") => {
            assert_eq!(r["broke"], Value::Null);
            assert!(
                with.stdout
                    .contains("nothing broke up to the cap, --max-rate 400/s"),
                "{}",
                with.stdout
            );
        }
        _ => assert_ne!(r["broke"]["tw_reuse_applies"], false, "{r:#}"),
    }
    assert_eq!(r["port_bound"]["tw_reuse_applies"], true);
    assert_eq!(num(&r["port_bound"], "rate_per_s"), 1000.0);
    assert_step_records(&with, &r);
}

/// Ctrl-C during step 2 (10 s steps, to be sure it is measuring): the step winds down, the search reports itself interrupted with the
/// first step judged and the second kept unjudged, both records and the summary are written,
/// exit 130, and no namespace is left.
#[test]
fn ctrl_c_keeps_the_steps_done() {
    if !require_root("find_limit::ctrl_c_keeps_the_steps_done") {
        return;
    }
    let _serial = serial();
    let dir = tempdir("find-limit-sigint");
    let mut child = Command::new(loadprobe_bin())
        .args([
            "find-limit",
            "--start-rate",
            "5",
            "--duration",
            "10s",
            "--output-dir",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadprobe");
    let pid = child.id();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).expect("stderr") > 0,
            "ended before step 2:\n{seen}"
        );
        seen.push_str(&line);
        if line.trim_end() == "loadprobe: step 2 at 10/s" {
            break;
        }
    }
    // The pair is made and the probe attached first: by 4 s step 2 is measuring.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        leftovers(pid).len(),
        2,
        "step 2's pair exists while it runs"
    );
    // SAFETY: kill() with a child pid we own.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    let stopped = Instant::now();
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    for l in stderr.lines() {
        seen.push_str(&l.expect("stderr"));
        seen.push('\n');
    }
    assert!(stopped.elapsed() < Duration::from_secs(10), "slow to stop");
    assert_eq!(output.status.code(), Some(130), "{seen}\n{stdout}");
    assert!(leftovers(pid).is_empty(), "{:?}", leftovers(pid));
    let s = read_record(&dir.join("find-limit.json"), &output);
    assert_eq!(s["stopped"], "interrupted", "{s:#}");
    let steps = s["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{s:#}");
    assert_eq!(steps[0]["held"], true);
    assert_eq!(steps[1]["held"], Value::Null);
    assert_eq!(s["highest_held_rate"], 5.0);
    let second = read_record(&dir.join("step-02-10rps.json"), &output);
    assert_eq!(second["interrupted"], true);
    assert!(second["requests"]["total"].as_u64().unwrap() > 0);
    assert!(dir.join("step-01-5rps.json").exists());
    assert!(
        stdout.contains("interrupted: the steps done are kept"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad input is one line on stderr and exit 2, before any namespace or load: no step line.
#[test]
fn bad_input_is_one_clear_line_before_any_load() {
    if !require_root("find_limit::bad_input_is_one_clear_line_before_any_load") {
        return;
    }
    let _serial = serial();
    let dir = tempdir("find-limit-bad");
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let under_file = file.join("out");
    for (args, expect) in [
        (
            vec!["--output-dir", under_file.to_str().unwrap()],
            "--output-dir: cannot create",
        ),
        (
            vec![
                "--sysctl",
                "net.ipv4.tcp_tw_reuse=1",
                "--sysctl",
                "net.ipv4.tcp_tw_reuse=0",
            ],
            "net.ipv4.tcp_tw_reuse is given twice",
        ),
        (
            vec!["--sysctl", "vm.swappiness=1"],
            "vm.swappiness is not a network sysctl",
        ),
        (
            vec!["--mode", "keep-alive"],
            "keep-alive opens no new connection",
        ),
        (
            vec!["--start-rate", "100", "--max-rate", "10"],
            "--max-rate 10 is below --start-rate 100",
        ),
        (vec!["--max-error-rate", "2x"], "not a percentage"),
        (vec!["--target", "http://[::1"], "invalid --target"),
    ] {
        let child = Command::new(loadprobe_bin())
            .arg("find-limit")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run loadprobe");
        let pid = child.id();
        let output = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("step 1"),
            "{args:?}: load started: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{args:?}");
        // clap's own usage errors add a hint line; ours are one line.
        if !stderr.contains("For more information, try '--help'.") {
            assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        }
        assert!(leftovers(pid).is_empty(), "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Against `--target` (a `loadprobe serve` of the test's namespace, the search run inside
/// it): each step first waits for the client's TIME_WAIT towards the target to be at most
/// `--drain-below` (here above what 2 s steps at 20 and 40/s leave, so it does not wait: the
/// wait itself is the unit test `the_drain_waits_for_client_time_wait_towards_the_target`),
/// the records are of the target, and the cap holding ends the search. About 10 s.
#[test]
fn against_a_target_each_step_checks_the_drain_first() {
    if !require_root("find_limit::against_a_target_each_step_checks_the_drain_first") {
        return;
    }
    let _serial = serial();
    let netns = Netns::for_test("find-limit-target");
    let mut server = Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .arg(loadprobe_bin())
        .args(["serve", "--listen", "127.0.0.1:18480"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("loadprobe serve");
    wait_for_port(netns.name(), "127.0.0.1:18480");
    let dir = tempdir("find-limit-target");
    let output = Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .arg(loadprobe_bin())
        .args([
            "find-limit",
            "--target",
            "http://127.0.0.1:18480/",
            "--start-rate",
            "20",
            "--max-rate",
            "40",
            "--duration",
            "2s",
            "--drain-below",
            "1000",
            "--output-dir",
        ])
        .arg(&dir)
        .output()
        .expect("run loadprobe find-limit");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
    assert_success(&output);
    let s = read_record(&dir.join("find-limit.json"), &output);
    assert_eq!(s["target"], "http://127.0.0.1:18480/");
    assert_eq!(s["stopped"], "cap-held", "{s:#}");
    assert_eq!(s["highest_held_rate"], 40.0);
    let steps = s["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{s:#}");
    for step in steps {
        let waited = step["drain_wait_s"]
            .as_f64()
            .expect("a drain before each step");
        assert!(waited < 1.0, "{step}");
        let record = read_record(&dir.join(step["file"].as_str().unwrap()), &output);
        assert_eq!(record["config"]["embedded_server"], false);
        assert_eq!(record["config"]["target"], "http://127.0.0.1:18480/");
        assert_eq!(record["requests"]["ok"], record["requests"]["total"]);
    }
    // The namespace's own (default) port range, read where the search ran.
    assert!(s["port_bound"]["ports"].as_u64().unwrap() > 1000, "{s:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A step that cannot run (nothing listens at the target: its preflight connect is refused)
/// ends the search as failed: exit 2, the reason on stderr, and the summary still written with
/// `stopped: failed` and the error.
#[test]
fn a_step_that_cannot_run_ends_the_search_as_failed() {
    let _serial = serial();
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", unused.local_addr().unwrap());
    drop(unused);
    let dir = tempdir("find-limit-failed");
    let output = Command::new(loadprobe_bin())
        .args([
            "find-limit",
            "--target",
            &url,
            "--duration",
            "1s",
            "--no-probe",
        ])
        .arg("--output-dir")
        .arg(&dir)
        .output()
        .expect("run loadprobe find-limit");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("loadprobe: error: step 1 at 10/s: target")
            && stderr.contains("is unreachable: ECONNREFUSED"),
        "{stderr}"
    );
    let s = read_record(&dir.join("find-limit.json"), &output);
    assert_eq!(s["stopped"], "failed");
    assert!(
        s["error"].as_str().unwrap().contains("ECONNREFUSED"),
        "{s:#}"
    );
    assert_eq!(s["steps"], serde_json::json!([]));
    assert!(String::from_utf8_lossy(&output.stdout).contains("search ended"));
    let _ = std::fs::remove_dir_all(&dir);
}
