//! The comparison as a whole, on records made in memory: the headline, noise, and each format's
//! promises (width, self-contained HTML).

use super::*;
use crate::model::Mode;
use crate::report::sample::record;

use crate::report::merge::merge;

fn pair() -> Comparison {
    let a = record(Mode::ClientClose, &[100; 400], 0, 2);
    let b = record(Mode::ServerClose, &[120; 360], 0, 2);
    Comparison::new(vec![Run::new("a.json", a), Run::new("b.json", b)], &[]).unwrap()
}

/// A record of `reps` sequential repetitions, each `n` requests of `latency` µs.
fn repeated(mode: Mode, reps: u64, n: usize, latency: u64) -> RunRecord {
    let parts: Vec<RunRecord> = (0..reps)
        .map(|i| {
            // A little spread between repetitions, as real runs have.
            let n = n + (i as usize % 2) * n / 50;
            record(mode, &vec![latency + i; n], i * 10_000, 1)
        })
        .collect();
    merge(&parts).unwrap()
}

#[test]
fn the_headline_says_where_time_wait_went() {
    let c = pair();
    assert_eq!(
        c.headline.verdicts,
        vec!["TIME_WAIT moved from the client to the server"]
    );
    let (_, tw) = &c.headline.lines[0];
    assert_eq!(tw, "client 400 → 0, server 0 → 360 (sockets entered)");
    let (_, closer) = &c.headline.lines[1];
    assert_eq!(closer, "client 100.0% → 0.0%, server 0.0% → 100.0%");
    assert!(
        c.differences[0].starts_with("Runs differ in mode: client-close (a.json), server-close"),
        "{:?}",
        c.differences
    );
    let noise = &c.headline.lines.last().unwrap().1;
    assert!(noise.starts_with("cannot tell: single runs"), "{noise}");
}

#[test]
fn repetitions_tell_significant_changes_from_noise() {
    let a = repeated(Mode::ClientClose, 4, 200, 100);
    // One more request per repetition, latency doubled.
    let b = repeated(Mode::ClientClose, 4, 201, 200);
    let c = Comparison::new(vec![Run::new("a", a), Run::new("b", b)], &[]).unwrap();
    let row = |path: &str| {
        c.sections
            .iter()
            .flat_map(|s| &s.rows)
            .find_map(|r| match r {
                rows::Row::Number(n) if n.path == path => Some(n.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no row {path}"))
    };
    // Latency doubled in every repetition: significant.
    assert_eq!(
        row("latency_us.total.p50").changes[0].noise,
        noise::Noise::Significant
    );
    // Throughput: +1 request against a spread of 4 between repetitions: noise.
    assert_eq!(
        row("throughput.rps").changes[0].noise,
        noise::Noise::WithinNoise
    );
    let note = &c.headline.lines.last().unwrap().1;
    assert!(note.contains("4 repetitions"), "{note}");
    let text = text::render(&c, false);
    assert!(text.contains("significant"), "{text}");
}

#[test]
fn text_fits_100_columns_with_many_runs_and_long_names() {
    let runs: Vec<Run> = (0..5)
        .map(|i| {
            let mode = if i % 2 == 0 {
                Mode::ClientClose
            } else {
                Mode::ServerClose
            };
            let mut r = record(mode, &vec![1000 + i * 7777; 20_000], 0, 10);
            r.requests.errors.insert("EADDRNOTAVAIL".into(), 12_345_678);
            Run::new(format!("a-rather-long-record-name-number-{i}.json"), r)
        })
        .collect();
    let c = Comparison::new(runs, &["throughput.rps < -5%".parse().unwrap()]).unwrap();
    for color in [false, true] {
        let text = text::render(&c, color);
        for line in text.lines() {
            let plain = strip_ansi(line);
            assert!(
                plain.chars().count() <= 100,
                "{} > 100: {plain}",
                plain.chars().count()
            );
        }
        assert_eq!(text.contains('\x1b'), color);
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn html_is_self_contained_with_the_charts() {
    let html = html::render(&pair());
    assert_eq!(html.matches("<svg").count(), 5, "five charts");
    for fetch in ["src=", "href=", "@import", "url(", "<script", "<link"] {
        assert!(!html.contains(fetch), "{fetch} in the HTML");
    }
    assert!(html.contains("TIME_WAIT moved from the client to the server"));
}

#[test]
fn gates_are_checked_on_every_other_run() {
    let a = record(Mode::ClientClose, &[100; 400], 0, 2);
    let b = record(Mode::ServerClose, &[100; 360], 0, 2);
    let c2 = record(Mode::ClientClose, &[100; 400], 0, 2);
    let gates: Vec<Gate> = ["throughput.rps < -5%", "time_wait.server.peak > 0"]
        .iter()
        .map(|g| g.parse().unwrap())
        .collect();
    let runs = vec![Run::new("a", a), Run::new("b", b), Run::new("c", c2)];
    let c = Comparison::new(runs, &gates).unwrap();
    let failed: Vec<(&str, &str)> = c
        .gates
        .iter()
        .filter(|g| g.failed)
        .map(|g| (g.gate.as_str(), g.run.as_str()))
        .collect();
    assert_eq!(
        failed,
        vec![
            ("throughput.rps < -5%", "b"),
            ("time_wait.server.peak > 0", "b")
        ]
    );
    assert!(c.failed());
    let md = markdown::render(&c);
    assert!(md.contains("### Gates: 2 of 4 failed"), "{md}");
}

#[test]
fn labels_are_file_names_unless_they_clash() {
    use std::path::PathBuf;
    let l = labels(&[PathBuf::from("x/a.json"), PathBuf::from("y/b.json")]);
    assert_eq!(l, vec!["a.json", "b.json"]);
    let l = labels(&[PathBuf::from("x/a.json"), PathBuf::from("y/a.json")]);
    assert_eq!(l, vec!["x/a.json", "y/a.json"]);
}

#[test]
fn one_run_gets_a_verdict_in_words() {
    use super::headline::run_verdict;
    let verdict = |r: RunRecord| run_verdict(&Run::new("r", r));
    // 200 connections in 2 s: 100 closes/s hold ~6,004 of 28,232 ports.
    let client = record(Mode::ClientClose, &[100; 200], 0, 2);
    assert_eq!(
        verdict(client.clone()),
        "TIME_WAIT on the client, 200 at peak: 21% of the ports towards the target held"
    );
    let server = record(Mode::ServerClose, &[100; 180], 0, 2);
    assert_eq!(verdict(server), "TIME_WAIT on the server, 180 at peak");

    let mut reused = client.clone();
    reused.time_wait.client.reused = Some(150);
    reused.time_wait.client.duration_ms.p50 = Some(1036);
    reused.port_budget.exhaustion_after_s = Some(2.0);
    assert_eq!(
        verdict(reused.clone()),
        "TIME_WAIT on the client, 200 at peak, reused after ~1 s: no exhaustion thanks to \
         tcp_tw_reuse=2"
    );
    reused.port_budget.tw_reuse_applies = false;
    assert!(
        verdict(reused.clone()).ends_with(": ports run out after ~2.0 s at this rate"),
        "{}",
        verdict(reused.clone())
    );
    reused.port_budget.eaddrnotavail = 5;
    assert!(
        verdict(reused).ends_with(": ports exhausted, 5 connects failed with EADDRNOTAVAIL"),
        "exhaustion seen beats exhaustion forecast"
    );

    let mut none = client.clone();
    none.time_wait.client.entered = Some(0);
    assert_eq!(verdict(none), "No TIME_WAIT on either side");
    let mut unmeasured = client;
    unmeasured.time_wait.source = "none".into();
    unmeasured.time_wait.client = Default::default();
    unmeasured.time_wait.server = Default::default();
    assert_eq!(
        verdict(unmeasured),
        "TIME_WAIT not measured (neither the probe nor sampling ran)"
    );
}

/// The TLS handshake rows and chart appear when a run has handshakes (n/a for a plain one),
/// and not at all between plain runs.
#[test]
fn tls_rows_only_where_a_run_has_tls() {
    let paths = |c: &Comparison| -> Vec<(String, Vec<String>)> {
        c.sections
            .iter()
            .flat_map(|s| &s.rows)
            .filter_map(|r| match r {
                rows::Row::Number(n) if n.path.contains("tls") => {
                    Some((n.path.clone(), n.values.clone()))
                }
                _ => None,
            })
            .collect()
    };
    assert!(paths(&pair()).is_empty());
    let plain = record(Mode::ClientClose, &[100; 400], 0, 2);
    let mut https = record(Mode::ClientClose, &[100; 400], 10_000, 2);
    https.latency_us.tls_handshake = Some(https.latency_us.connect);
    https.histograms.tls_handshake = Some(https.histograms.connect.clone());
    https.tls = Some(crate::report::TlsRecord {
        full_handshakes: 400,
        ..Default::default()
    });
    let c = Comparison::new(
        vec![Run::new("plain.json", plain), Run::new("https.json", https)],
        &[],
    )
    .unwrap();
    let rows = paths(&c);
    let full = rows
        .iter()
        .find(|(p, _)| p == "tls.full_handshakes")
        .expect("a handshake row");
    assert_eq!(full.1[0], "n/a");
    assert_eq!(full.1[1], "400");
    assert!(
        rows.iter()
            .any(|(p, _)| p == "latency_us.tls_handshake.p50")
    );
}

/// A scenario's requests get sections of their own, and gates address them by name.
#[test]
fn requests_of_a_scenario_have_rows_and_gates() {
    use crate::report::sample::scenario_record;
    let base = scenario_record(&[("search", &[100; 40]), ("login", &[1000; 10])]);
    let slower = scenario_record(&[("search", &[100; 40]), ("login", &[2000; 10])]);
    let gates: Vec<Gate> = [
        "by_request.login.latency_us.total.p99 > 1500",
        "by_request.search.latency_us.total.p99 > 1500",
        "by_request.login.latency_us.total.p99 > +20%",
        "by_request.login.requests.errors > 1%",
    ]
    .iter()
    .map(|g| g.parse().unwrap())
    .collect();
    let runs = vec![Run::new("base", base), Run::new("slower", slower)];
    let c = Comparison::new(runs, &gates).unwrap();
    let failed: Vec<&str> = c
        .gates
        .iter()
        .filter(|g| g.failed)
        .map(|g| g.gate.as_str())
        .collect();
    assert_eq!(
        failed,
        [
            "by_request.login.latency_us.total.p99 > 1500",
            "by_request.login.latency_us.total.p99 > +20%"
        ]
    );
    let login = c
        .sections
        .iter()
        .find(|s| s.title.starts_with("Request login"))
        .expect("a section for login");
    let p99 = login
        .rows
        .iter()
        .find_map(|r| match r {
            rows::Row::Number(n) if n.path == "by_request.login.latency_us.total.p99" => Some(n),
            _ => None,
        })
        .expect("a p99 row");
    assert_eq!(p99.values, ["1,000", "2,000"]);
    let text = text::render(&c, false);
    assert!(text.contains("Request search"), "{text}");
    assert!(
        text.contains("client-close, scenario of 2 requests (seed 7), embedded server"),
        "{text}"
    );
    // Long paths keep their ends, which tell the rows apart.
    assert!(
        text.contains("  …uest.search.latency_us.total.p999 "),
        "{text}"
    );
    // A name no record has is an error that lists the names there are.
    let err = "by_request.serch.latency_us.total.p99 > 5"
        .parse::<Gate>()
        .unwrap()
        .evaluate(&c.runs[0].json, &c.runs[1].json)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no request is named \"serch\"") && err.contains("login, search"),
        "{err}"
    );
}
