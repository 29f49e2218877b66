//! `loadprobe report` and `run --html` as people run them, on the fixed records in tests/golden/
//! (see tests/tests/compare.rs for how they were made) and on fresh runs against the embedded
//! server.
//!
//! - The text and Markdown reports must equal the golden files byte for byte (`UPDATE_GOLDEN=1`
//!   rewrites them after an intended change), and the text one must be what `run` printed.
//! - The HTML page is rendered by headless Chromium: no console message, every chart an inline
//!   SVG that drew its data, and a screenshot that is not blank.
//!
//! Needs the loadprobe binary of the same cargo profile (`cargo xtask test` builds it first).

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::io::Write;

use loadprobe_tests::reports::{
    Scratch, assert_golden, chromium, drawn, loadprobe, luminance_variance, render, stderr, stdout,
    svgs,
};
use loadprobe_tests::{
    Netns, OK_RESPONSE, TestServer, loadprobe_bin, read_request_head, require_root,
};
use serde_json::Value;

/// The charts of the page of one run: TIME_WAIT per side, timewait substates, failures by
/// class, closers, requests, latency, ports.
const CHARTS: usize = 8;

/// The charts a record without the probe's substates or without failures has no data for:
/// each is a note in its place.
const SUBSTATES_NOTE: &str = "Timewait sockets by substate: the record does not tell FIN_WAIT2";
const NO_FAILURE_NOTE: &str = "Failed requests per second by class: no request failed";

/// `run`'s own lines after the report: where it wrote the record and the page.
fn without_file_lines(run_output: &str) -> String {
    run_output
        .lines()
        .filter(|l| !l.starts_with("  record ") && !l.starts_with("  report "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn text_report_is_what_run_printed() {
    let o = loadprobe(&["report", "client-close.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_golden("report-client-close.txt", &stdout(&o));

    let dir = Scratch::new("text");
    let (rec, page) = (dir.str("run.json"), dir.str("run.html"));
    let o = loadprobe(&[
        "run",
        "--requests",
        "300",
        "--users",
        "4",
        "--no-probe",
        "-o",
        &rec,
        "--html",
        &page,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    assert!(
        printed.contains(&format!("  report       {page}")),
        "{printed}"
    );
    let o = loadprobe(&["report", &rec]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), without_file_lines(&printed));
    // The page run wrote is the one report draws from its record.
    let o = loadprobe(&["report", &rec, "--format", "html"]);
    assert_eq!(stdout(&o), std::fs::read_to_string(&page).unwrap());
}

#[test]
fn markdown_report_matches_the_golden_files() {
    let o = loadprobe(&["report", "client-close.json", "--format", "markdown"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = stdout(&o);
    assert!(
        md.contains(
            "### TIME_WAIT on the client, 14,210 at peak, reused after ~1 s: no exhaustion \
             thanks to tcp_tw_reuse=2"
        ),
        "{md}"
    );
    assert_golden("report-client-close.md", &md);

    // A repeated run: a row per repetition and per record merged.
    let o = loadprobe(&["report", "client-close-x3.json", "--format", "markdown"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = stdout(&o);
    assert!(md.contains("### Repetitions (3)"), "{md}");
    assert!(md.contains("### Merged from 3 records"), "{md}");
    assert_golden("report-repeated.md", &md);
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let Some(chrome) = chromium() else {
        return;
    };
    let dir = Scratch::new("html");
    // A blank page, to show the screenshot check tells one from a report.
    let blank = dir.path("blank.html");
    std::fs::write(&blank, "<!doctype html><html><body></body></html>\n").unwrap();
    let shown = render(&chrome, &blank, 1200, &dir);
    let blank_variance = luminance_variance(&shown.png);
    assert!(blank_variance < 1.0, "blank page: {blank_variance}");

    for (record, verdict) in [
        (
            "client-close-x3.json",
            "TIME_WAIT on the client, 14,241 at peak: no exhaustion thanks to tcp_tw_reuse=2",
        ),
        (
            "server-close.json",
            "TIME_WAIT on the server, 12,985 at peak, reused after ~0.6 s",
        ),
    ] {
        let page = dir.path(&format!("{record}.html"));
        let o = loadprobe(&[
            "report",
            record,
            "--format",
            "html",
            "-o",
            &page.display().to_string(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let html = std::fs::read_to_string(&page).unwrap();
        for external in ["<script", "<link", "src=", "url(", "@import"] {
            assert!(!html.contains(external), "{record}: {external} in the page");
        }

        let shown = render(&chrome, &page, 2400, &dir);
        assert!(shown.console.is_empty(), "{record}: {:#?}", shown.console);
        let charts = svgs(&shown.dom);
        // Recorded before the per-second substates; no request failed in them.
        assert_eq!(
            charts.len(),
            CHARTS - 2,
            "{record}: charts in the rendered page"
        );
        for note in [SUBSTATES_NOTE, NO_FAILURE_NOTE] {
            assert!(shown.dom.contains(note), "{record}: no note {note:?}");
        }
        for svg in &charts {
            assert!(drawn(svg), "{record}: a chart without its data: {svg}");
        }
        for title in [
            "TIME_WAIT held on the client side",
            "TIME_WAIT held on the server side",
            "Who closed the connections",
            "Requests per second",
            "Latency by percentile",
            "Port budget towards",
        ] {
            assert!(shown.dom.contains(title), "{record}: no chart {title:?}");
        }
        assert!(
            shown.dom.contains(verdict),
            "{record}: no verdict {verdict:?}"
        );
        let variance = luminance_variance(&shown.png);
        assert!(
            variance > 100.0 * blank_variance.max(1.0),
            "{record}: the screenshot looks blank (luminance variance {variance})"
        );
    }
    // The forecast is marked where the record has one (client-close runs out without reuse).
    let page = std::fs::read_to_string(dir.path("client-close-x3.json.html")).unwrap();
    assert!(page.contains("ports run out at ~2.0 s"), "no forecast mark");
    let page = std::fs::read_to_string(dir.path("server-close.json.html")).unwrap();
    assert!(
        !page.contains("ports run out"),
        "a forecast where there is none"
    );
}

#[test]
fn report_to_a_path_that_cannot_be_written_is_one_line() {
    let o = loadprobe(&[
        "report",
        "client-close.json",
        "--format",
        "html",
        "-o",
        "/nonexistent/dir/r.html",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with("loadprobe: error: cannot write /nonexistent/dir/r.html: "),
        "{err}"
    );
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
}

#[test]
fn run_html_checks_its_path_before_the_load() {
    let started = Instant::now();
    let o = loadprobe(&[
        "run",
        "--duration",
        "30s",
        "--no-probe",
        "--html",
        "/nonexistent/dir/run.html",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with("loadprobe: error: cannot write /nonexistent/dir/run.html")
            && err.contains("No such file or directory"),
        "{err}"
    );
    assert!(stdout(&o).is_empty(), "a load ran: {}", stdout(&o));
    assert!(started.elapsed() < Duration::from_secs(10), "a load ran");
}

#[test]
fn run_html_is_written_when_interrupted() {
    let dir = Scratch::new("interrupted");
    let page = dir.path("run.html");
    let child = Command::new(loadprobe_bin())
        .args(["run", "--duration", "60s", "--users", "4", "--no-probe"])
        .arg("--html")
        .arg(&page)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadprobe runs");
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: kill() on the pid of a child this test started and has not waited for yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let o = child.wait_with_output().expect("loadprobe exits");
    // 0, or 130 where the exit status says the run was interrupted: either way not an error.
    assert!(
        matches!(o.status.code(), Some(0 | 130)),
        "{:?}: {}",
        o.status,
        stderr(&o)
    );
    assert!(stdout(&o).contains("(interrupted)"), "{}", stdout(&o));
    let html = std::fs::read_to_string(&page).expect("the page was written");
    assert!(html.contains("Interrupted: the figures cover what ran."));
    // Without the probe nothing tells the substates; nothing failed.
    assert!(html.contains(SUBSTATES_NOTE) && html.contains(NO_FAILURE_NOTE));
    assert_eq!(svgs(&html).len(), CHARTS - 2);
    assert!(svgs(&html).iter().all(|s| drawn(s)), "charts without data");
}

/// A run against a server that answers three connections in four and never closes them (each
/// client close leaves an orphaned FIN_WAIT2 socket) and drops the fourth unanswered (a
/// failure): the record's timeline has FIN_WAIT2 alive per side apart from TIME_WAIT and the
/// failures per second by class, and the page draws every chart from them.
#[test]
fn run_page_draws_substates_and_failures_by_class() {
    if !require_root("run with the probe against a server that never closes") {
        return;
    }
    let netns = Netns::for_test("report-fw2");
    let mut n = 0u64;
    let server = TestServer::start(&netns, "127.0.0.1:8091".parse().unwrap(), move |mut s| {
        n += 1;
        if n.is_multiple_of(4) || !read_request_head(&mut s) {
            return None;
        }
        let _ = s.write_all(OK_RESPONSE);
        Some(s)
    });
    let dir = Scratch::new("substates");
    let (rec, page) = (dir.path("run.json"), dir.path("run.html"));
    let o = Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .arg(loadprobe_bin())
        .args([
            "run",
            "--target",
            "http://127.0.0.1:8091/",
            "--mode",
            "client-close",
            "--rate",
            "200",
            "--duration",
            "3s",
        ])
        .arg("-o")
        .arg(&rec)
        .arg("--html")
        .arg(&page)
        .output()
        .expect("ip netns exec loadprobe run");
    assert!(o.status.success(), "{}", stderr(&o));
    let orphans = netns
        .sockets()
        .iter()
        .filter(|s| s.state == "FIN-WAIT-2" && s.peer == server.addr)
        .count() as u64;
    drop(server);
    let record: Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();

    let tw = record["time_wait"]["timeline"].as_array().unwrap();
    let count = |p: &Value, key: &str| {
        p[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} missing in {p}"))
    };
    assert!(tw.len() >= 3, "{tw:?}");
    for p in tw {
        // No socket reached TIME_WAIT: the server never sent its FIN.
        assert_eq!(count(p, "client"), 0, "{p}");
        assert_eq!(count(p, "fin_wait2_server"), 0, "{p}");
    }
    let fw2: Vec<u64> = tw.iter().map(|p| count(p, "fin_wait2_client")).collect();
    assert!(
        fw2.windows(2).all(|w| w[0] <= w[1]),
        "orphans never end here: {fw2:?}"
    );
    let last = *fw2.last().unwrap();
    assert!(
        last >= 200 && last <= orphans,
        "FIN_WAIT2 alive {fw2:?}, the kernel holds {orphans}"
    );

    let classes = record["requests"]["errors"].as_object().unwrap();
    assert!(
        !classes.is_empty(),
        "nothing failed: {}",
        record["requests"]
    );
    let seconds = record["throughput"]["timeline"].as_array().unwrap();
    for s in seconds {
        let by_class = s["error_classes"].as_object().unwrap();
        let sum: u64 = by_class.values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(sum, count(s, "errors"), "{s}");
    }
    for (class, total) in classes {
        let per_second: u64 = seconds
            .iter()
            .map(|s| s["error_classes"][class].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(Some(per_second), total.as_u64(), "{class}");
    }

    let html = std::fs::read_to_string(&page).unwrap();
    for title in [
        "Timewait sockets by substate",
        "client FIN_WAIT2",
        "Failed requests per second by class",
    ] {
        assert!(html.contains(title), "no {title:?} in the page");
    }
    assert_eq!(svgs(&html).len(), CHARTS, "charts in the page");
    assert!(svgs(&html).iter().all(|s| drawn(s)), "charts without data");
    let Some(chrome) = chromium() else {
        return;
    };
    let shown = render(&chrome, &page, 2400, &dir);
    assert!(shown.console.is_empty(), "{:#?}", shown.console);
    let charts = svgs(&shown.dom);
    assert_eq!(charts.len(), CHARTS, "charts in the rendered page");
    for svg in &charts {
        assert!(drawn(svg), "a chart without its data: {svg}");
    }
}
