//! `run --stages`: the load follows the stages, second by second, against the embedded server
//! (which keeps up with these rates), and the record carries the stages and each second's
//! intended load beside what was achieved.

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::path::PathBuf;
use std::process::Command;

use loadprobe_tests::{loadprobe_bin, tempdir};
use serde_json::Value;

fn run(tag: &str, args: &[&str]) -> Value {
    let dir: PathBuf = tempdir(&format!("stages-{tag}"));
    let record = dir.join("r.json");
    let out = Command::new(loadprobe_bin())
        .args(["run", "--no-probe", "-o"])
        .arg(&record)
        .args(args)
        .output()
        .expect("loadprobe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    v
}

/// (intended, achieved) per second of the window.
fn seconds(r: &Value) -> Vec<(f64, f64)> {
    r["throughput"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let done = s["ok"].as_u64().unwrap() + s["errors"].as_u64().unwrap();
            (s["target"].as_f64().expect("target"), done as f64)
        })
        .collect()
}

/// An arrival-rate ramp 50 → 300 → 300 → 100 per second: each second's starts are the
/// integral of the ramp over it, and the completions follow within 2 %.
#[test]
fn an_open_model_ramp_is_followed_second_by_second() {
    let r = run(
        "open",
        &["--rate", "50", "--stages", "2s:300,1s:300,2s:100"],
    );
    assert_eq!(r["config"]["stages"].as_array().map(Vec::len), Some(3));
    let s = seconds(&r);
    let intended: Vec<f64> = s.iter().map(|p| p.0).collect();
    assert_eq!(intended, [112.5, 237.5, 300.0, 250.0, 150.0]);
    for (t, (want, got)) in s.iter().enumerate() {
        assert!(
            (got - want).abs() <= (want * 0.02).max(2.0),
            "second {t}: {s:?}"
        );
    }
}

/// Users ramp 0 → 20, hold, back to 0, each thinking 100 ms between requests: the users at
/// each second's middle are the curve's, and each second carries about ten requests a user.
#[test]
fn a_closed_model_ramp_starts_and_stops_users() {
    let r = run(
        "closed",
        &["--stages", "2s:20,2s:20,2s:0", "--think-time", "100ms"],
    );
    let s = seconds(&r);
    let users: Vec<f64> = s.iter().map(|p| p.0).collect();
    assert_eq!(users, [5.0, 15.0, 20.0, 20.0, 15.0, 5.0]);
    for (t, (n, got)) in s.iter().enumerate() {
        let per_user = got / n;
        assert!((6.0..=11.5).contains(&per_user), "second {t}: {s:?}");
    }
}

#[test]
fn bad_stages_are_one_line_errors_before_load() {
    for (args, says) in [
        (&["--stages", "10s"][..], "expected DURATION:TARGET"),
        (&["--stages", "10s:-4"], "the target must be"),
        (&["--stages", "0s:4"], "stage \"0s:4\""),
        (
            &["--stages", "2s:4", "--duration", "3s"],
            "cannot be used with",
        ),
    ] {
        let out = Command::new(loadprobe_bin())
            .args(["run", "--no-probe"])
            .args(args)
            .output()
            .expect("loadprobe");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
