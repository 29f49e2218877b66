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
//! - Every kind of bad input exits 2 with one line naming the file.
//!
//! Needs the loadprobe binary of the same cargo profile (`cargo xtask test` builds it first).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use loadprobe_tests::loadprobe_bin;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// Runs `loadprobe ARGS` in tests/golden/, so records are named by their file names.
fn loadprobe(args: &[&str]) -> Output {
    Command::new(loadprobe_bin())
        .args(args)
        .current_dir(golden())
        .env_remove("NO_COLOR")
        .output()
        .expect("loadprobe runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory for one test's files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("lp-compare-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `actual` must equal tests/golden/`name` (or replaces it under UPDATE_GOLDEN=1).
fn assert_golden(name: &str, actual: &str) {
    let path = golden().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .map_or_else(|| "the length".to_string(), |i| format!("line {}", i + 1));
        panic!(
            "{name} differs from the golden file at {line} (UPDATE_GOLDEN=1 rewrites it)\n\
             --- expected\n{expected}\n--- actual\n{actual}"
        );
    }
}

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
        for cmd in ["compare", "merge"] {
            let mut args = vec![cmd, "client-close.json", file.as_str()];
            let out = dir.str("merged.json");
            if cmd == "merge" {
                args.extend(["-o", out.as_str()]);
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

/// Chromium, if this machine has it.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    })
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let Some(chrome) = chromium() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromium not installed: cargo xtask setup installs it");
        }
        eprintln!("skipped: chromium not installed (cargo xtask setup installs it)");
        return;
    };
    let dir = Scratch::new("html");
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
    let url = format!("file://{}", report.display());
    let browse = |extra: &[&str]| -> Output {
        let profile = dir.path(&format!("profile-{}", extra.len()));
        Command::new(&chrome)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs")
    };

    let shot = dir.path("report.png");
    let o = browse(&[
        "--window-size=1280,2000",
        &format!("--screenshot={}", shot.display()),
    ]);
    assert!(o.status.success(), "chromium: {}", stderr(&o));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if let Some(keep) = std::env::var_os("LOADPROBE_KEEP_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }

    let o = browse(&["--dump-dom"]);
    assert!(o.status.success(), "chromium: {}", stderr(&o));
    let dom = stdout(&o);
    assert_eq!(
        dom.matches("<svg").count(),
        5,
        "five charts in the rendered page"
    );
    assert!(dom.contains("TIME_WAIT moved from the client to the server"));
    // Console messages are logged as `...:CONSOLE(line)] "message"`; the page has no script,
    // so any is an error (a failed load, a CSP violation, ...).
    let log = stderr(&o);
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
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
