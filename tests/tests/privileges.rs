//! `loadprobe trace` giving up its privileges once attached, started in the ways a user or a
//! container runtime may start it: without CAP_SETPCAP, with a kernel file that cannot be
//! trusted, as a non-root user with only the probe's capabilities, on a system without
//! `nobody`.
//!
//! Needs root (or fails under `LOADPROBE_REQUIRE_BPF=1`) and the loadprobe binary of the same
//! cargo profile.

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use loadprobe_tests::{Netns, Tracer, V4, client_first_close, require_root, tempdir};

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
