//! `loadprobe trace` giving up its privileges once attached, started in the ways a user or a
//! container runtime may start it: without CAP_SETPCAP, with a kernel file that cannot be
//! trusted, as a non-root user with only the probe's capabilities, on a system without
//! `nobody`. And `loadprobe run` giving up its capabilities once its probe is attached.
//!
//! Needs root (or fails under `LOADPROBE_REQUIRE_BPF=1`) and the loadprobe binary of the same
//! cargo profile.

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::time::{Duration, Instant};

use loadprobe_tests::{Netns, Tracer, V4, client_first_close, num, require_root, tempdir};

/// The start line of a trace's stderr.
fn start_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.contains("tracing TCP connections"))
        .unwrap_or_else(|| panic!("no start line in:\n{stderr}"))
}

/// Root whose bounding set lacks CAP_SETPCAP cannot empty it: the start line says so rather
/// than claiming every set is empty, and the trace still switches user and counts.
#[test]
fn without_setpcap_the_start_line_says_the_bounding_set_stays() {
    if !require_root("trace without CAP_SETPCAP") {
        return;
    }
    let netns = Netns::for_test("no-setpcap");
    let tracer = Tracer::start_under(
        netns.name(),
        &[
            "setpriv",
            "--bounding-set=-setpcap",
            "--inh-caps=-all",
            "--",
        ],
        &[8150],
        &[],
    );
    let pid = tracer.pid();
    assert_eq!(
        loadprobe_tests::status_line(pid, "Uid:"),
        "65534\t65534\t65534\t65534"
    );
    assert_eq!(
        loadprobe_tests::status_line(pid, "CapEff:"),
        "0000000000000000"
    );
    assert_ne!(
        loadprobe_tests::status_line(pid, "CapBnd:"),
        "0000000000000000"
    );
    let made = client_first_close(&netns, V4, 8150);
    let trace = tracer.stop();
    assert!(trace.status.success(), "{}", trace.stderr);
    assert!(
        start_line(&trace.stderr).ends_with(
            "as user nobody, no capabilities (bounding set not emptied: no CAP_SETPCAP); \
             Ctrl-C to stop"
        ),
        "{}",
        trace.stderr
    );
    trace.assert_closers(&made);
}

/// A `cap_last_cap` that names capabilities this kernel does not have (here bind-mounted over
/// the real one in a mount namespace of the trace's own) does not turn the bounding set's
/// drop into a fatal error after the probe attached: the drop stops at the first unknown one.
#[test]
fn a_wrong_cap_last_cap_still_empties_the_bounding_set() {
    if !require_root("trace with a wrong cap_last_cap") {
        return;
    }
    let dir = tempdir("cap-last-cap");
    let file = dir.join("cap_last_cap");
    std::fs::write(&file, "63\n").unwrap();
    let netns = Netns::for_test("cap-last-cap");
    let script = format!(
        "mount --bind {} /proc/sys/kernel/cap_last_cap && exec \"$0\" \"$@\"",
        file.display()
    );
    let tracer = Tracer::start_under(
        netns.name(),
        &["unshare", "--mount", "sh", "-c", &script],
        &[8151],
        &[],
    );
    let pid = tracer.pid();
    assert_eq!(
        loadprobe_tests::status_line(pid, "CapBnd:"),
        "0000000000000000"
    );
    assert_eq!(
        loadprobe_tests::status_line(pid, "Uid:"),
        "65534\t65534\t65534\t65534"
    );
    let made = client_first_close(&netns, V4, 8151);
    let trace = tracer.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(trace.status.success(), "{}", trace.stderr);
    assert!(
        start_line(&trace.stderr).ends_with("as user nobody, no capabilities; Ctrl-C to stop"),
        "{}",
        trace.stderr
    );
    trace.assert_closers(&made);
}

/// Not root, with only the probe's capabilities (ambient, as a container runtime grants them),
/// on a system whose user database has no `nobody`: there is no user to switch to, so none is
/// looked up; the trace keeps its uid, drops the capabilities and counts.
#[test]
fn not_root_needs_no_nobody() {
    if !require_root("trace as a non-root user") {
        return;
    }
    let dir = tempdir("no-nobody");
    let passwd = dir.join("passwd");
    let users: String = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("nobody:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&passwd, users).unwrap();
    // Only the file: NSS modules such as systemd's make up a `nobody` of their own.
    let nsswitch = dir.join("nsswitch.conf");
    std::fs::write(&nsswitch, "passwd: files\ngroup: files\n").unwrap();
    let netns = Netns::for_test("no-nobody");
    let script = format!(
        "mount --bind {} /etc/passwd && mount --bind {} /etc/nsswitch.conf && exec \"$0\" \"$@\"",
        passwd.display(),
        nsswitch.display()
    );
    let caps = "+bpf,+perfmon,+syslog";
    let tracer = Tracer::start_under(
        netns.name(),
        &[
            "unshare",
            "--mount",
            "sh",
            "-c",
            &script,
            "setpriv",
            "--reuid=1000",
            "--regid=1000",
            "--clear-groups",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            "--",
        ],
        &[8152],
        &[],
    );
    let pid = tracer.pid();
    assert_eq!(
        loadprobe_tests::status_line(pid, "Uid:"),
        "1000\t1000\t1000\t1000"
    );
    for set in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:"] {
        assert_eq!(
            loadprobe_tests::status_line(pid, set),
            "0000000000000000",
            "{set}"
        );
    }
    let made = client_first_close(&netns, V4, 8152);
    let trace = tracer.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(trace.status.success(), "{}", trace.stderr);
    assert!(
        start_line(&trace.stderr).contains(" as uid 1000, no capabilities"),
        "{}",
        trace.stderr
    );
    trace.assert_closers(&made);
}

/// `loadprobe run ARGS -o DIR/record.json --html DIR/page.html` in `netns`, started now (a run
/// of a few seconds: it ends by itself if the test fails first).
fn start_run(netns: &Netns, args: &[&str], dir: &std::path::Path) -> std::process::Child {
    std::process::Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .arg(loadprobe_tests::loadprobe_bin())
        .arg("run")
        .args(args)
        .arg("-o")
        .arg(dir.join("record.json"))
        .arg("--html")
        .arg(dir.join("page.html"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start loadprobe run")
}

/// Waits until every thread of `pid` has no effective capability but `kept` (the probe is
/// attached by then), and returns each thread's status fields; panics after 30 s.
fn wait_for_drop(pid: u32, kept: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let threads: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|dir| dir.filter_map(|e| e.ok()).collect())
            .unwrap_or_default();
        let statuses: Vec<std::collections::BTreeMap<String, String>> = threads
            .iter()
            .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
            .map(|s| {
                s.lines()
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                    .collect()
            })
            .collect();
        if !statuses.is_empty() && statuses.iter().all(|s| s["CapEff"] == kept) {
            return statuses;
        }
        assert!(
            Instant::now() < deadline,
            "run {pid}: its threads' CapEff {:?} after 30 s, not {kept}",
            statuses.iter().map(|s| &s["CapEff"]).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `run` started as root gives up every capability in every thread once the probe is
/// attached (the load, the sampling and the record need none), keeps uid 0 (which writes the
/// outputs into root's folders), and its record and page still land, with the probe's counts.
#[test]
fn run_drops_every_capability_after_attaching() {
    if !require_root("run's privilege drop") {
        return;
    }
    let netns = Netns::for_test("run-drop");
    let dir = tempdir("run-drop");
    let run = start_run(
        &netns,
        &[
            "--mode",
            "client-close",
            "--users",
            "2",
            "--think-time",
            "20ms",
            "--requests",
            "200",
        ],
        &dir,
    );
    let pid = run.id();
    let threads = wait_for_drop(pid, "0000000000000000");
    assert!(
        threads.len() > 1,
        "a runtime of several threads: {threads:?}"
    );
    for status in &threads {
        for set in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
            assert_eq!(status[set], "0000000000000000", "{} {set}", status["Pid"]);
        }
        assert_eq!(status["NoNewPrivs"], "1", "{}", status["Pid"]);
        assert_eq!(status["Uid"], "0\t0\t0\t0");
    }
    let output = run.wait_with_output().expect("wait run");
    loadprobe_tests::assert_success(&output);
    let record = loadprobe_tests::read_record(&dir.join("record.json"), &output);
    assert!(dir.join("page.html").exists());
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 2, "temporary files left: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(record["probe"]["attached"], true, "{}", record["probe"]);
    assert_eq!(num(&record, "connections.opened"), 200);
    assert_eq!(num(&record, "connections.closer.client"), 200);
    assert_eq!(num(&record, "time_wait.client.entered"), 200);
    assert_eq!(num(&record, "probe.lost_events"), 0);
}

/// An output folder root may not write without CAP_DAC_OVERRIDE (another user's, mode 0755):
/// `run` keeps that one capability and no other, and the record is renamed into the folder.
#[test]
fn run_keeps_dac_override_for_an_output_folder_root_cannot_write() {
    if !require_root("run's privilege drop with another user's folder") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let netns = Netns::for_test("run-dac");
    let dir = tempdir("run-dac");
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = start_run(
        &netns,
        &["--users", "2", "--think-time", "20ms", "--requests", "100"],
        &dir,
    );
    let pid = run.id();
    // CAP_DAC_OVERRIDE is capability 1.
    for status in wait_for_drop(pid, "0000000000000002") {
        assert_eq!(status["CapPrm"], "0000000000000002", "{}", status["Pid"]);
        assert_eq!(status["CapBnd"], "0000000000000000", "{}", status["Pid"]);
    }
    let output = run.wait_with_output().expect("wait run");
    loadprobe_tests::assert_success(&output);
    let record = loadprobe_tests::read_record(&dir.join("record.json"), &output);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(num(&record, "connections.closer.client"), 100);
}

/// The rename at the end also needs search permission in every folder above the output's: a
/// folder of another user, mode 0700, above a 0777 one. `run` keeps CAP_DAC_OVERRIDE for it,
/// and the record lands.
#[test]
fn run_keeps_dac_override_for_a_folder_above_the_output_root_cannot_search() {
    if !require_root("run's privilege drop below another user's folder") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let netns = Netns::for_test("run-above");
    let top = tempdir("run-above");
    let dir = top.join("open");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&top, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o700)).unwrap();
    let run = start_run(
        &netns,
        &["--users", "2", "--think-time", "20ms", "--requests", "100"],
        &dir,
    );
    wait_for_drop(run.id(), "0000000000000002");
    let output = run.wait_with_output().expect("wait run");
    loadprobe_tests::assert_success(&output);
    let record = loadprobe_tests::read_record(&dir.join("record.json"), &output);
    let _ = std::fs::remove_dir_all(&top);
    assert_eq!(num(&record, "connections.closer.client"), 100);
}

/// Securebits a service manager locked (systemd's `SecureBits=`) cannot be changed: `run`
/// keeps them, still drops every capability, and runs.
#[test]
fn run_under_locked_securebits_still_drops_and_runs() {
    if !require_root("run's privilege drop under locked securebits") {
        return;
    }
    let netns = Netns::for_test("run-secbits");
    let dir = tempdir("run-secbits");
    let run = std::process::Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .args([
            "setpriv",
            "--securebits",
            "+no_setuid_fixup,+no_setuid_fixup_locked",
            "--",
        ])
        .arg(loadprobe_tests::loadprobe_bin())
        .args([
            "run",
            "--users",
            "2",
            "--think-time",
            "20ms",
            "--requests",
            "100",
            "-o",
        ])
        .arg(dir.join("record.json"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start loadprobe run under setpriv");
    wait_for_drop(run.id(), "0000000000000000");
    let output = run.wait_with_output().expect("wait run");
    loadprobe_tests::assert_success(&output);
    let record = loadprobe_tests::read_record(&dir.join("record.json"), &output);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(num(&record, "connections.closer.client"), 100);
}
