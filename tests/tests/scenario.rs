//! `run --scenario`: a weighted mix of named requests, with the real binary. The draws follow
//! the weights (a chi-square test at a fixed seed) against the embedded server and nginx, the
//! per-request figures add up to the totals, a seed repeats the draws exactly, a bad file is
//! one line naming its line before any load, gates address a request by name, and segments of
//! a scenario merge by name.
//!
//! The runs use `--no-probe`; the nginx test needs root (a network namespace of its own) and
//! fails instead of skipping under `LOADPROBE_REQUIRE_BPF=1`.

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use loadprobe_tests::{Netns, Nginx, OK_RESPONSE, loadprobe_bin, require_root, tempdir};
use serde_json::Value;

/// A mix of three requests, weights 6:3:1, each ending its connection its own way; the POST
/// sends a body file next to the scenario.
const MIX: &str = r#"
[[request]]
name = "search"
path = "/search?q=tcp"
weight = 6
mode = "keep-alive"

[[request]]
name = "item"
path = "/item/42"
weight = 3
mode = "client-close"

[[request]]
name = "login"
method = "POST"
headers = ["Content-Type: application/json"]
body_file = "login.json"
weight = 1
mode = "server-close"
"#;

/// A run of the mix: 8 users, 6000 requests.
const MIX_RUN: [&str; 6] = [
    "--scenario",
    "mix.toml",
    "--users",
    "8",
    "--requests",
    "6000",
];

const WEIGHTS: [(&str, f64); 3] = [("search", 6.0), ("item", 3.0), ("login", 1.0)];

/// Writes the mix and its body file into a fresh folder; returns the scenario's path.
fn mix_file(tag: &str) -> PathBuf {
    let dir = tempdir(tag);
    std::fs::write(dir.join("login.json"), br#"{"user":"ada"}"#).expect("body file");
    let path = dir.join("mix.toml");
    std::fs::write(&path, MIX).expect("scenario");
    path
}

/// `loadprobe ARGS` (in `netns` if given) in `dir`.
fn loadprobe(netns: Option<&str>, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(loadprobe_bin());
            c
        }
        None => Command::new(loadprobe_bin()),
    };
    cmd.args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("loadprobe runs")
}

/// `loadprobe run --no-probe ARGS -o OUT` in `dir`; the record.
fn run(netns: Option<&str>, dir: &Path, out: &str, args: &[&str]) -> Value {
    run_probed(netns, dir, out, &[&["--no-probe"], args].concat())
}

/// `loadprobe run ARGS -o OUT` in `dir`, the probe attached unless ARGS say otherwise.
fn run_probed(netns: Option<&str>, dir: &Path, out: &str, args: &[&str]) -> Value {
    let mut all = vec!["run", "-o", out];
    all.extend_from_slice(args);
    let output = loadprobe(netns, dir, &all);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    loadprobe_tests::read_record(&dir.join(out), &output)
}

fn num(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} in {v}"))
}

fn count(record: &Value, name: &str) -> u64 {
    num(record, &format!("/by_request/{name}/requests/total"))
}

/// Pearson's chi-square of the per-request counts against the weights.
fn chi_square(record: &Value) -> f64 {
    let n: u64 = WEIGHTS.iter().map(|(name, _)| count(record, name)).sum();
    let all: f64 = WEIGHTS.iter().map(|(_, w)| w).sum();
    WEIGHTS
        .iter()
        .map(|(name, w)| {
            let expected = n as f64 * w / all;
            (count(record, name) as f64 - expected).powi(2) / expected
        })
        .sum()
}

/// 0.999 quantile of chi-square with 2 degrees of freedom (three requests).
const CHI2_2DF_999: f64 = 13.82;

/// Every request has its counts and latencies, and they add up to the record's totals: counts,
/// connections, and the histograms themselves (decoded), not only their summaries.
fn check_parts_add_up(record: &Value) {
    let by = record["by_request"].as_object().expect("by_request");
    assert_eq!(by.len(), WEIGHTS.len(), "{by:?}");
    let sum = |pointer: &str| -> u64 { by.values().map(|f| num(f, pointer)).sum() };
    for (part, whole) in [
        ("/requests/total", "/requests/total"),
        ("/requests/ok", "/requests/ok"),
        ("/requests/unfinished", "/requests/unfinished"),
        ("/connections_opened", "/connections/opened"),
        ("/latency_us/total/count", "/latency_us/total/count"),
        ("/latency_us/connect/count", "/latency_us/connect/count"),
    ] {
        assert_eq!(sum(part), num(record, whole), "{part} of the requests");
    }
    let decoded = |h: &Value| {
        loadprobe::report::decode_histogram(h.as_str().expect("encoded histogram"))
            .expect("decodes")
    };
    let whole = decoded(&record["histograms"]["total"]);
    // The sum of the parts' histograms, from an empty copy of the whole's.
    let mut parts = whole.clone();
    parts.reset();
    for f in by.values() {
        let h = decoded(&f["histograms"]["total"]);
        assert_eq!(h.len(), num(f, "/latency_us/total/count"));
        parts.add(&h).expect("adds");
    }
    assert_eq!(parts.len(), whole.len());
    assert_eq!(parts.max(), whole.max());
    assert_eq!(parts.value_at_quantile(0.99), whole.value_at_quantile(0.99));
}

/// The counts follow the weights, every request succeeded, and the parts add up.
fn check_mix(record: &Value) {
    let chi2 = chi_square(record);
    assert!(
        chi2 < CHI2_2DF_999,
        "chi-square {chi2}: {}",
        record["by_request"]
    );
    assert_eq!(
        num(record, "/requests/ok"),
        num(record, "/requests/total"),
        "{}",
        record["requests"]
    );
    check_parts_add_up(record);
}

#[test]
fn a_mix_follows_its_weights_against_the_embedded_server() {
    let scenario = mix_file("scenario-embedded");
    let dir = scenario.parent().unwrap();
    let record = run(
        None,
        dir,
        "mix.json",
        &[&MIX_RUN[..], &["--seed", "42"]].concat(),
    );
    check_mix(&record);
    // The embedded server answers every path; the totals are what they always were.
    assert_eq!(num(&record, "/requests/total"), 6000);
    assert_eq!(num(&record, "/requests/ok"), 6000);
    let scenario = &record["config"]["scenario"];
    assert_eq!(scenario["seed"], 42);
    assert_eq!(scenario["requests"][2]["body_bytes"], 14);
    assert_eq!(scenario["requests"][2]["mode"], "server-close");
    assert_eq!(record["config"]["path"], "/search?q=tcp");
    // Closers of several modes: the probe could not tell a mismatch (and is off here).
    assert!(record["connections"]["mismatches"].is_null());
    let _ = std::fs::remove_dir_all(dir);
}

/// One user draws one sequence: a run repeated with the seed its record kept sends the same
/// requests, and another seed other ones.
#[test]
fn the_seed_in_the_record_repeats_the_draws() {
    let scenario = mix_file("scenario-seed");
    let dir = scenario.parent().unwrap();
    let args = [
        "--scenario",
        "mix.toml",
        "--users",
        "1",
        "--requests",
        "1500",
    ];
    let first = run(None, dir, "first.json", &args);
    let seed = first["config"]["scenario"]["seed"]
        .as_u64()
        .expect("the seed used");
    let seed = seed.to_string();
    let again = run(
        None,
        dir,
        "again.json",
        &[&args[..], &["--seed", &seed]].concat(),
    );
    let other_seed = (first["config"]["scenario"]["seed"].as_u64().unwrap() ^ 1).to_string();
    let other = run(
        None,
        dir,
        "other.json",
        &[&args[..], &["--seed", &other_seed]].concat(),
    );
    let counts = |r: &Value| WEIGHTS.map(|(name, _)| count(r, name));
    assert_eq!(counts(&first), counts(&again));
    assert_ne!(counts(&first), counts(&other));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_mix_follows_its_weights_against_nginx() {
    if !require_root("a scenario against nginx") {
        return;
    }
    let netns = Netns::for_test("scenario-nginx");
    let _nginx = Nginx::start(netns.name(), 8090);
    let scenario = mix_file("scenario-nginx");
    let dir = scenario.parent().unwrap();
    let record = run_probed(
        Some(netns.name()),
        dir,
        "mix.json",
        &[
            &MIX_RUN[..],
            &["--target", "http://127.0.0.1:8090/", "--seed", "7"],
        ]
        .concat(),
    );
    check_mix(&record);
    assert_eq!(num(&record, "/requests/total"), 6000);
    assert_eq!(record["probe"]["attached"], true, "{}", record["probe"]);
    // Each login asks nginx to close the connection it went on (a new one, or one a search
    // kept alive): the server closes exactly as many connections as there were logins, and
    // sends every FIN it was asked for.
    assert_eq!(num(&record, "/connections/server_fin_missing"), 0);
    let closer = |who: &str| num(&record, &format!("/connections/closer/{who}"));
    assert_eq!(closer("server"), count(&record, "login"));
    // Each item closes its connection from the client; so does the end of the run, for the
    // connections searches still kept (one per user at most).
    let items = count(&record, "item");
    assert!(
        (items..=items + 8).contains(&closer("client")),
        "client closes {} for {items} items",
        closer("client")
    );
    // Which closer a connection should have depends on the requests it carried.
    assert!(record["connections"]["mismatches"].is_null());
    let _ = std::fs::remove_dir_all(dir);
}

/// Each bad scenario is one line naming the file and line, exit status 2, and no connection
/// ever reaches the target.
#[test]
fn a_bad_scenario_names_its_line_before_any_load() {
    let dir = tempdir("scenario-errors");
    let target = TcpListener::bind("127.0.0.1:0").expect("listen");
    target.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}/", target.local_addr().unwrap());
    let head = "[[request]]\nname = \"a\"\n";
    for (i, (text, expect)) in [
        (
            format!("{head}wieght = 2\n"),
            "bad0.toml:3: unknown field `wieght`, expected one of `name`",
        ),
        (
            format!("{head}body_file = \"missing.json\"\n"),
            "bad1.toml:3: cannot read body_file missing.json: No such file",
        ),
        (
            format!("{head}weight = 0\n\n[[request]]\nname = \"b\"\nweight = 0\n"),
            "bad2.toml:3: the weights add up to 0",
        ),
        (
            format!("{head}\n[[request]]\nname = \"b\"\n\n[[request]]\nname = \"a\"\n"),
            "bad3.toml:8: duplicate request name \"a\" (first on line 2)",
        ),
        (
            format!("{head}method = \"G T\"\n"),
            "bad4.toml:3: invalid method \"G T\": must be an HTTP token",
        ),
        (
            format!("{head}headers = [\n  \"Accept: */*\",\n  \"Bad Name: x\",\n]\n"),
            "bad5.toml:5: invalid header \"Bad Name: x\"",
        ),
        (
            format!("{head}mode = \"reset\"\n[[request]]\nname = \"b\"\n"),
            "bad6.toml:3: reset cannot be mixed with other modes",
        ),
    ]
    .iter()
    .enumerate()
    {
        let file = format!("bad{i}.toml");
        std::fs::write(dir.join(&file), text).expect("scenario");
        let out = loadprobe(
            None,
            &dir,
            &["run", "--no-probe", "--target", &url, "--scenario", &file],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert_eq!(err.lines().count(), 1, "{file}: not one line: {err}");
        assert!(
            err.starts_with(&format!("loadprobe: error: --scenario: {expect}")),
            "{file}: {err}"
        );
    }
    // A single-request flag beside a scenario is one line too.
    let out = loadprobe(
        None,
        &dir,
        &[
            "run",
            "--no-probe",
            "--target",
            &url,
            "--scenario",
            "bad0.toml",
            "-H",
            "X: 1",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        "loadprobe: error: --header describes the one request of a plain run; with \
         --scenario, give it in the file"
    );
    match target.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the target was reached: {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A keep-alive HTTP server of the test's own on 127.0.0.1: `/slow` answers after 20 ms, any
/// other path at once.
fn slow_and_fast_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    format!("http://{addr}/")
}

fn serve(mut s: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        if head.starts_with(b"GET /slow ") {
            std::thread::sleep(Duration::from_millis(20));
        }
        head.drain(..end);
        if s.write_all(OK_RESPONSE).is_err() {
            return;
        }
    }
}

/// A gate on one request's percentile sees what the totals hide: nine fast requests in ten
/// keep the run's p50 low while every slow one takes 20 ms.
#[test]
fn a_gate_addresses_a_request_by_name() {
    let dir = tempdir("scenario-gate");
    std::fs::write(
        dir.join("mix.toml"),
        "[[request]]\nname = \"fast\"\npath = \"/fast\"\nweight = 9\n\n\
         [[request]]\nname = \"slow\"\npath = \"/slow\"\nweight = 1\n",
    )
    .expect("scenario");
    let url = slow_and_fast_server();
    let record = run(
        None,
        &dir,
        "run.json",
        &[
            "--target",
            &url,
            "--mode",
            "keep-alive",
            "--scenario",
            "mix.toml",
            "--seed",
            "3",
            "--users",
            "8",
            "--requests",
            "600",
        ],
    );
    assert!(num(&record, "/by_request/slow/latency_us/total/p50") >= 20_000);
    assert!(num(&record, "/latency_us/total/p50") < 15_000);
    let gate = |g: &str| {
        let out = loadprobe(
            None,
            &dir,
            &["compare", "run.json", "run.json", "--fail-if", g],
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = gate("by_request.slow.latency_us.total.p50 > 15000");
    assert_eq!(code, Some(1), "the slow request's gate fails: {text}");
    assert!(text.contains("Request slow"), "per-request rows: {text}");
    let (code, text) = gate("latency_us.total.p50 > 15000");
    assert_eq!(code, Some(0), "the totals' gate passes: {text}");
    let (code, text) = gate("by_request.fast.latency_us.total.p50 > 15000");
    assert_eq!(code, Some(0), "the fast request's gate passes: {text}");
    let out = loadprobe(
        None,
        &dir,
        &[
            "compare",
            "run.json",
            "run.json",
            "--fail-if",
            "by_request.quick.latency_us.total.p99 > 1",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no request is named \"quick\" in the records; their requests are fast, slow"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two segments of one scenario merge into one record whose requests add up by name.
#[test]
fn segments_of_a_scenario_merge_by_name() {
    let scenario = mix_file("scenario-merge");
    let dir = scenario.parent().unwrap();
    let args = |k: &str| {
        [
            "--scenario",
            "mix.toml",
            "--seed",
            "11",
            "--users",
            "4",
            "--requests",
            "2000",
            "--segment",
        ]
        .into_iter()
        .chain([k])
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    let (a, b) = std::thread::scope(|s| {
        let one = s.spawn(|| {
            let a = args("1/2");
            run(
                None,
                dir,
                "one.json",
                &a.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        });
        let b = args("2/2");
        let b = run(
            None,
            dir,
            "two.json",
            &b.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        (one.join().expect("segment 1"), b)
    });
    let out = loadprobe(
        None,
        dir,
        &["merge", "one.json", "two.json", "-o", "merged.json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged = loadprobe_tests::read_record(&dir.join("merged.json"), &out);
    assert_eq!(num(&merged, "/requests/total"), 2000);
    for (name, _) in WEIGHTS {
        for pointer in [
            "requests/total",
            "requests/ok",
            "latency_us/total/count",
            "connections_opened",
        ] {
            let p = format!("/by_request/{name}/{pointer}");
            assert_eq!(num(&merged, &p), num(&a, &p) + num(&b, &p), "{p}");
        }
    }
    check_parts_add_up(&merged);
    assert!(
        chi_square(&merged) < CHI2_2DF_999,
        "{}",
        merged["by_request"]
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Requests that all say `reset` reset every connection, whatever `--mode` says: the probe
/// sees the client's RST on each, and the record's mode is theirs.
#[test]
fn requests_that_all_reset_make_a_reset_run() {
    if !require_root("a reset scenario seen by the probe") {
        return;
    }
    let dir = tempdir("scenario-reset");
    std::fs::write(
        dir.join("reset.toml"),
        "[[request]]\nname = \"a\"\nmode = \"reset\"\n\n\
         [[request]]\nname = \"b\"\npath = \"/b\"\nmode = \"reset\"\n",
    )
    .expect("scenario");
    let record = run_probed(
        None,
        &dir,
        "reset.json",
        &[
            "--scenario",
            "reset.toml",
            "--users",
            "4",
            "--requests",
            "400",
        ],
    );
    assert_eq!(record["config"]["mode"], "reset");
    assert_eq!(record["probe"]["attached"], true, "{}", record["probe"]);
    let opened = num(&record, "/connections/opened");
    assert_eq!(opened, 400);
    assert_eq!(num(&record, "/connections/closer/client-reset"), opened);
    assert_eq!(num(&record, "/connections/mismatches"), 0);
    assert_eq!(count(&record, "a") + count(&record, "b"), 400);
    let _ = std::fs::remove_dir_all(&dir);
}
