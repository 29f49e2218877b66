//! `loadprobe compare` and `loadprobe merge` as people and CI jobs run them, on the fixed records
//! in tests/golden/ (real runs: `loadprobe run --duration 2s --users 16`, client-close and
//! server-close, and the same with `--duration 1s --repeat 3`).
//!
//! - The text and Markdown reports must equal the golden files byte for byte. After an intended
//!   change of the output, rewrite them with `UPDATE_GOLDEN=1` and review the diff.
//! - The HTML report is rendered by headless Chromium (Debian's `chromium`, installed by
//!   `cargo xtask setup`): it must take a screenshot, hold the five charts, and log no console
//!   message (the page has no scripts, so any is an error). Without Chromium the test is skipped,
//!   except under CI=true, where it fails.
//! - Every kind of bad input exits 2 with one line naming the file (also for `report`).
//!
//! Needs the loadprobe binary of the same cargo profile (`cargo xtask test` builds it first).

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use loadprobe_tests::reports::{
    Scratch, assert_golden, chromium, golden, loadprobe, render, stderr, stdout, svgs,
};

#[test]
fn text_report_matches_the_golden_file() {
    let o = loadprobe(&["compare", "client-close.json", "server-close.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(!text.contains('\x1b'), "no colour when not on a terminal");
    for line in text.lines() {
        assert!(
            line.chars().count() <= 100,
            "wider than 100 columns: {line}"
        );
    }
    assert_golden("client-vs-server.txt", &text);
}

#[test]
fn markdown_report_matches_the_golden_file() {
    let o = loadprobe(&[
        "compare",
        "client-close.json",
        "server-close.json",
        "--format",
        "markdown",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_golden("client-vs-server.md", &stdout(&o));
}

#[test]
fn repeated_runs_report_significance() {
    let o = loadprobe(&["compare", "client-close-x3.json", "server-close-x3.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("significant"), "{text}");
    assert_golden("repeated.txt", &text);
    let o = loadprobe(&[
        "compare",
        "client-close-x3.json",
        "server-close-x3.json",
        "--format",
        "markdown",
    ]);
    assert_golden("repeated.md", &stdout(&o));
}

#[test]
fn gates_set_the_exit_code() {
    let o = loadprobe(&[
        "compare",
        "client-close.json",
        "server-close.json",
        "--fail-if",
        "time_wait.server.peak > 0",
        "--fail-if",
        "throughput.rps < -50%",
        "--fail-if",
        "connections.closer.server < 99%",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("gate failed: time_wait.server.peak > 0 (server-close.json: 12,985)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "only the failing gate: {err}");
    assert!(stdout(&o).contains("Gates: 1 of 3 failed"));

    let o = loadprobe(&[
        "compare",
        "client-close.json",
        "server-close.json",
        "--fail-if",
        "time_wait.client.peak > 0",
        "--fail-if",
        "latency_us.total.p99 > +50%",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn bad_input_exits_2_with_one_line_naming_the_file() {
    let dir = Scratch::new("bad-input");
    let good = std::fs::read_to_string(golden().join("client-close.json")).unwrap();
    let files = [
        ("not-json.json", "this is not JSON".to_string()),
        ("truncated.json", good[..good.len() / 3].to_string()),
        ("empty.json", String::new()),
        (
            "unknown.json",
            good.replace("loadprobe.run/1", "someone-else.run/1"),
        ),
        (
            "newer.json",
            good.replace("loadprobe.run/1", "loadprobe.run/2"),
        ),
        (
            "older.json",
            good.replace("loadprobe.run/1", "loadprobe.run/0")
                .replace("\"probe\":", "\"_probe\":"),
        ),
    ];
    for (name, content) in &files {
        std::fs::write(dir.path(name), content).unwrap();
    }
    let cases = [
        (dir.str("missing.json"), "no such file"),
        (dir.str("not-json.json"), "not JSON"),
        (dir.str("truncated.json"), "truncated"),
        (dir.str("empty.json"), "empty file"),
        (dir.str("unknown.json"), "unknown schema"),
        (dir.str("newer.json"), "loadprobe.run/2 is newer"),
        (dir.str("older.json"), "missing field `probe`"),
    ];
    for (file, expect) in &cases {
        for cmd in ["compare", "merge", "report"] {
            let mut args = vec![cmd, "client-close.json", file.as_str()];
            let out = dir.str("merged.json");
            match cmd {
                "merge" => args.extend(["-o", out.as_str()]),
                "report" => args = vec![cmd, file.as_str()],
                _ => {}
            }
            let o = loadprobe(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{cmd} {file}: {err}");
            assert_eq!(err.lines().count(), 1, "{cmd} {file}: not one line: {err}");
            assert!(
                err.starts_with(&format!("loadprobe: error: {file}: ")) && err.contains(expect),
                "{cmd} {file}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    // A gate that names no metric is bad input too.
    let o = loadprobe(&[
        "compare",
        "client-close.json",
        "server-close.json",
        "--fail-if",
        "throughput.rsp < -5%",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("\"throughput.rsp\" is not a number"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn merge_sums_records_and_refuses_different_workloads() {
    let dir = Scratch::new("merge");
    let out = dir.str("all.json");
    let o = loadprobe(&[
        "merge",
        "client-close.json",
        "client-close-x3.json",
        "-o",
        &out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(golden().join(f)).unwrap()).unwrap()
    };
    let (a, b) = (read("client-close.json"), read("client-close-x3.json"));
    let total = |v: &serde_json::Value| v["requests"]["total"].as_u64().unwrap();
    assert_eq!(total(&v), total(&a) + total(&b));
    assert_eq!(v["merged_from"].as_array().unwrap().len(), 4);
    // Taken one after the other: four repetitions.
    assert_eq!(v["repetitions"].as_array().unwrap().len(), 4);

    let o = loadprobe(&[
        "merge",
        "client-close.json",
        "server-close.json",
        "-o",
        &out,
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("cannot merge")
            && err.contains("config.mode")
            && err.contains("server-close.json"),
        "{err}"
    );
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let Some(chrome) = chromium() else {
        return;
    };
    let dir = Scratch::new("compare-html");
    let report = dir.path("report.html");
    let o = loadprobe(&[
        "compare",
        "client-close.json",
        "server-close.json",
        "--format",
        "html",
        "-o",
        &report.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown = render(&chrome, &report, 2000, &dir);
    assert!(
        shown.png.starts_with(b"\x89PNG") && shown.png.len() > 20_000,
        "{} bytes",
        shown.png.len()
    );
    assert_eq!(
        svgs(&shown.dom).len(),
        5,
        "five charts in the rendered page"
    );
    assert!(
        shown
            .dom
            .contains("TIME_WAIT moved from the client to the server")
    );
    assert!(
        shown.console.is_empty(),
        "console messages: {:#?}",
        shown.console
    );
}

#[test]
fn run_repeat_writes_one_record_with_each_repetition() {
    let dir = Scratch::new("repeat");
    let out = dir.str("x2.json");
    let argv = [
        "run",
        "--repeat",
        "2",
        "--requests",
        "200",
        "--users",
        "4",
        "--no-probe",
        "-o",
        &out,
    ];
    let o = loadprobe(&argv);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["requests"]["total"], 400, "counts summed");
    let reps = v["repetitions"].as_array().expect("repetitions");
    assert_eq!(reps.len(), 2);
    for rep in reps {
        assert_eq!(rep["requests.total"], 200.0);
        assert!(rep["latency_us.total.p99"].as_f64().unwrap() > 0.0);
    }
    // And compare reads it, judging noise from the repetitions.
    let o = loadprobe(&["compare", &out, &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 repetitions"), "{}", stdout(&o));
}
