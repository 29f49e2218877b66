use super::*;
use crate::tune::Place;
use crate::tune::text::WIDTH;
use crate::tune::verdict::tests::{Fixture, reuse_story, tw};

fn setting(s: &str) -> Setting {
    Setting::parse("--set", s).expect("a valid setting")
}

#[test]
fn settings_parse_and_go_where_they_act() {
    let s = setting(" net.ipv4.tcp_tw_reuse = 1 ");
    assert_eq!(
        (s.key.as_str(), s.value.as_str(), s.place),
        ("net.ipv4.tcp_tw_reuse", "1", Place::Client)
    );
    assert_eq!(
        setting("net/ipv4/ip_local_port_range=20000 20099").key,
        "net.ipv4.ip_local_port_range"
    );
    assert_eq!(setting("net.core.somaxconn=16").place, Place::Server);
    assert_eq!(setting("net.ipv4.tcp_max_tw_buckets=50").place, Place::Both);
    assert_eq!(setting("net.ipv4.tcp_rfc1337=1").place, Place::Both);
    for bad in ["tcp_tw_reuse", "=1", "net.ipv4.tcp_tw_reuse=", ""] {
        let err = Setting::parse("--set", bad).expect_err(bad);
        assert_eq!(
            err.to_string(),
            format!("--set expects KEY=VALUE, got {bad:?}")
        );
    }
}

#[test]
fn names_are_checked_before_anything_is_created() {
    let check = |list: &[&str]| {
        let list: Vec<Setting> = list.iter().map(|s| setting(s)).collect();
        settings::check_all("--set", &list).map_err(|e| e.to_string())
    };
    assert_eq!(
        check(&["net.ipv4.tcp_tw_reuse=1", "net.ipv4.tcp_fin_timeout=30"]),
        Ok(())
    );
    let err = check(&["vm.swappiness=10"]).unwrap_err();
    assert!(
        err.contains("not a network sysctl") && err.contains("change the host"),
        "{err}"
    );
    let err = check(&["net.ipv4.no_such_sysctl=1"]).unwrap_err();
    assert_eq!(
        err,
        "unknown sysctl net.ipv4.no_such_sysctl: this kernel has no such file under /proc/sys"
    );
    let err = check(&["net.ipv4.tcp_tw_recycle=1"]).unwrap_err();
    assert!(err.contains("removed in Linux 4.12"), "{err}");
    let err = check(&["net.ipv4.tcp_tw_reuse=1", "net.ipv4.tcp_tw_reuse=0"]).unwrap_err();
    assert_eq!(err, "--set: net.ipv4.tcp_tw_reuse is given twice");
}

#[test]
fn prefixes_are_plain() {
    assert!(check_prefix("lpv").is_ok());
    assert!(check_prefix("lpt-123_x").is_ok());
    for bad in ["", "-x", "a/b", "../x", &"x".repeat(31)] {
        assert!(check_prefix(bad).is_err(), "{bad:?}");
    }
}

fn outcome(set: &[&str], baseline: RunRecord, tuned: RunRecord) -> Outcome {
    let set: Vec<Setting> = set.iter().map(|s| setting(s)).collect();
    let (baseline, tuned) = (vec![baseline], vec![tuned]);
    let j = verdict::judge(&baseline, &tuned);
    Outcome {
        schema: SCHEMA,
        verdict: j.verdict,
        reason: j.reason,
        workload: WorkloadSummary {
            mode: crate::model::Mode::ClientClose,
            model: "open".into(),
            rate: Some(50.0),
            users: None,
            duration_s: Some(5.0),
            repeat: 1,
        },
        base: vec![setting("net.ipv4.ip_local_port_range=20000 20099")],
        expectations: expect::expectations(&set, &j.metrics, &baseline, &tuned),
        set,
        metrics: j.metrics,
        sysctls: BTreeMap::new(),
        applied: None,
        baseline,
        tuned,
    }
}

#[test]
fn reuse_expectation_is_seen_and_the_text_fits() {
    let (a, b) = reuse_story();
    let o = outcome(&["net.ipv4.tcp_tw_reuse=1"], a, b);
    assert_eq!(o.expectations.len(), 1);
    let e = &o.expectations[0];
    assert_eq!(e.met, Some(true), "{e:#?}");
    assert_eq!(
        e.seen,
        "client TIME_WAIT reused 0 -> 199, EADDRNOTAVAIL 150 -> 0"
    );
    let text = text::render(&o);
    assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
    assert!(
        text.contains("Verdict: improved\n  EADDRNOTAVAIL errors fell"),
        "{text}"
    );
    assert!(text.contains("net.ipv4.tcp_tw_reuse=1  [seen]"), "{text}");
    let json = serde_json::to_value(&o).expect("json");
    assert_eq!(json["verdict"], "improved");
    assert_eq!(json["schema"], "loadprobe.validate/1");
    assert!(json["metrics"].as_array().is_some_and(|m| m.len() > 5));
    assert!(
        json.get("baseline").is_none(),
        "records go to their own files"
    );
}

#[test]
fn reuse_without_reuse_is_not_seen() {
    let (a, mut b) = reuse_story();
    b.time_wait.client = tw(100, 0, 0);
    b.requests.errors = a.requests.errors.clone();
    let o = outcome(&["net.ipv4.tcp_tw_reuse=1"], a, b);
    assert_eq!(o.expectations[0].met, Some(false));
    assert!(text::render(&o).contains("[NOT seen]"));
}

#[test]
fn max_tw_buckets_expectation_and_verdict() {
    let a = Fixture {
        server: tw(998, 0, 0),
        ..Fixture::default()
    };
    let b = Fixture {
        server: tw(50, 0, 950),
        ..Fixture::default()
    };
    let o = outcome(&["net.ipv4.tcp_max_tw_buckets=50"], a.record(), b.record());
    assert_eq!(o.verdict, Verdict::Regressed);
    let e = &o.expectations[0];
    assert_eq!(e.met, Some(true), "{e:#?}");
    assert!(e.seen.contains("server 0 -> 950"), "{}", e.seen);
    let text = text::render(&o);
    assert!(text.contains("TIME_WAIT server overflow"), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
}

#[test]
fn port_range_expectation_follows_the_usable_ports() {
    let a = Fixture {
        errors: vec![("EADDRNOTAVAIL", 150)],
        usable_ports: 100,
        ..Fixture::default()
    };
    let b = Fixture {
        usable_ports: 1000,
        ..Fixture::default()
    };
    let o = outcome(
        &["net.ipv4.ip_local_port_range=20000 20999"],
        a.record(),
        b.record(),
    );
    let e = &o.expectations[0];
    assert_eq!(e.met, Some(true));
    assert_eq!(e.seen, "usable ports 100 -> 1000, EADDRNOTAVAIL 150 -> 0");
}

#[test]
fn outputs_are_records_and_validate_json() {
    let (a, b) = reuse_story();
    let o = outcome(&["net.ipv4.tcp_tw_reuse=1"], a, b);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("new");
    let written = Outputs::create(&out, 1)
        .and_then(|files| files.write(&o))
        .expect("written");
    assert_eq!(written.len(), 3);
    for name in ["baseline.json", "tuned.json"] {
        let text = std::fs::read_to_string(out.join(name)).expect(name);
        let r: RunRecord = serde_json::from_str(&text).expect("a run record");
        assert_eq!(r.schema, crate::report::SCHEMA);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("validate.json")).expect("validate.json"))
            .expect("json");
    assert_eq!(v["verdict"], "improved");
    assert!(v["reason"].as_str().is_some_and(|r| r.ends_with('.')));
}

#[test]
fn outputs_reserved_but_not_written_leave_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("new");
    let outputs = Outputs::create(&out, 3).expect("reserved");
    // baseline, tuned, each of 3 repetitions of both, validate.json: all reserved up front.
    assert_eq!(std::fs::read_dir(&out).expect("made").count(), 9);
    drop(outputs);
    assert!(!out.exists(), "the folder it made is removed");
    // A folder that existed stays, empty.
    let kept = dir.path().join("kept");
    std::fs::create_dir(&kept).expect("mkdir");
    drop(Outputs::create(&kept, 1).expect("reserved"));
    assert_eq!(std::fs::read_dir(&kept).expect("kept").count(), 0);
    assert!(Outputs::create(std::path::Path::new("/proc/x"), 1).is_err());
}
