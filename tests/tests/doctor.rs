//! `loadprobe doctor` on this kernel: as root every check the probe needs passes; as an
//! unprivileged user it names the missing privilege and exits 1, and the same binary with only
//! the capabilities it suggests passes again. A probe that cannot start elsewhere points to it.
//!
//! Needs root (or fails under `LOADPROBE_REQUIRE_BPF=1`) and setpriv/setcap.

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::path::Path;
use std::process::{Command, Output};

use loadprobe::probe::btf::{SOCKET_TRACEPOINTS, TIMER_TRACEPOINTS};
use loadprobe_tests::{loadprobe_bin, require_root, tempdir};
use serde_json::Value;

/// The unprivileged user the tests run as.
const NOBODY: &str = "65534";

/// `bin ARGS` as uid/gid 65534 with no supplementary groups.
fn as_nobody(bin: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .arg(bin)
        .args(args)
        .output()
        .expect("setpriv")
}

fn doctor_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --format json is not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The check named `name`.
fn find<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {doc:#}"))
}

#[test]
fn doctor_passes_as_root_and_checks_every_tracepoint() {
    if !require_root("doctor as root") {
        return;
    }
    let output = Command::new(loadprobe_bin())
        .args(["doctor", "--format", "json"])
        .output()
        .expect("doctor");
    let doc = doctor_json(&output);
    assert_eq!(output.status.code(), Some(0), "{doc:#}");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["schema"], "loadprobe.doctor/1");
    for c in doc["checks"].as_array().unwrap() {
        let status = c["status"].as_str().unwrap();
        assert!(status == "ok" || status == "info", "not passing: {c}");
    }
    for (tracepoint, args) in SOCKET_TRACEPOINTS.iter().chain(TIMER_TRACEPOINTS) {
        let c = find(&doc, &format!("tracepoint {tracepoint}"));
        assert_eq!(c["status"], "ok", "{c}");
        let detail = c["detail"].as_str().unwrap();
        assert!(detail.contains(&args.join(", ")), "{c}");
    }
    for name in [
        "privileges",
        "btf",
        "socket offsets",
        "timewait offsets",
        "ring buffer",
        "memlock",
        "netns",
        "sock_diag",
        "sysctls",
        "attach",
    ] {
        find(&doc, name);
    }
    assert!(
        find(&doc, "sysctls")["detail"]
            .as_str()
            .unwrap()
            .contains("tcp_tw_reuse=")
    );
    assert!(
        find(&doc, "attach")["detail"]
            .as_str()
            .unwrap()
            .contains("TIME_WAIT tracking on")
    );

    // The text form: one line per check, then the verdict.
    let text = Command::new(loadprobe_bin())
        .arg("doctor")
        .output()
        .expect("doctor");
    assert_eq!(text.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&text.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        doc["checks"].as_array().unwrap().len() + 1,
        "{stdout}"
    );
    assert!(lines.last().unwrap().contains("everything"), "{stdout}");
}

#[test]
fn doctor_as_nobody_names_the_privilege_and_fails() {
    if !require_root("doctor as uid 65534 (setpriv)") {
        return;
    }
    let bin = loadprobe_bin();
    let output = as_nobody(&bin, &["doctor", "--format", "json"]);
    let doc = doctor_json(&output);
    assert_eq!(output.status.code(), Some(1), "{doc:#}");
    assert_eq!(doc["ok"], false);
    let privileges = find(&doc, "privileges");
    assert_eq!(privileges["status"], "fail", "{privileges}");
    let detail = privileges["detail"].as_str().unwrap();
    assert!(
        detail.contains("uid 65534") && detail.contains("CAP_BPF"),
        "{detail}"
    );
    assert!(privileges["fix"].as_str().unwrap().contains("setcap"));
    assert_eq!(find(&doc, "ring buffer")["status"], "fail");
    assert_eq!(find(&doc, "attach")["status"], "skip");
    // What needs no privilege still passes: the kernel is fine, the process is not.
    assert_eq!(find(&doc, "btf")["status"], "ok");
    assert_eq!(find(&doc, "socket offsets")["status"], "ok");

    let text = as_nobody(&bin, &["doctor"]);
    assert_eq!(text.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&text.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("privileges"))
        .unwrap_or_else(|| panic!("no FAIL privileges line:\n{stdout}"));
    assert!(line.contains("fix: "), "{line}");
}

/// The fix doctor prints works: the same binary, given the capabilities it names, passes as
/// uid 65534.
#[test]
fn doctor_passes_with_the_capabilities_it_suggests() {
    if !require_root("doctor with file capabilities (setcap)") {
        return;
    }
    let dir = tempdir("doctor-caps");
    let bin = dir.join("loadprobe");
    std::fs::copy(loadprobe_bin(), &bin).expect("copy binary");
    let world = |path: &Path, mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    world(&dir, 0o755);
    let fails = as_nobody(&bin, &["doctor", "--format", "json"]);
    let fix = find(&doctor_json(&fails), "privileges")["fix"]
        .as_str()
        .unwrap()
        .to_string();
    let caps = fix
        .split_whitespace()
        .find(|w| w.starts_with("cap_"))
        .unwrap_or_else(|| panic!("no capability list in {fix:?}"))
        .to_string();
    let setcap = Command::new("setcap")
        .arg(&caps)
        .arg(&bin)
        .status()
        .expect("setcap");
    assert!(setcap.success(), "setcap {caps}");
    let output = as_nobody(&bin, &["doctor", "--format", "json"]);
    let _ = std::fs::remove_dir_all(&dir);
    let doc = doctor_json(&output);
    assert_eq!(output.status.code(), Some(0), "with {caps}: {doc:#}");
    assert_eq!(find(&doc, "attach")["status"], "ok");
}

/// A probe that cannot start, in `trace` and in `run`, says to run doctor.
#[test]
fn probe_start_failures_point_to_doctor() {
    if !require_root("trace and run as uid 65534 (setpriv)") {
        return;
    }
    let bin = loadprobe_bin();
    let trace = as_nobody(&bin, &["trace", "--duration", "1"]);
    assert_eq!(trace.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&trace.stderr);
    assert!(
        stderr.trim_end().ends_with("run `loadprobe doctor`"),
        "{stderr}"
    );
    assert!(stderr.contains("CAP_BPF"), "{stderr}");

    let run = as_nobody(&bin, &["run", "--requests", "5"]);
    assert!(run.status.success(), "a run without its probe still runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("probe off"))
        .unwrap_or_else(|| panic!("no probe-off warning:\n{stderr}"));
    assert!(line.contains("); run `loadprobe doctor`)"), "{line}");
}

/// In a user namespace of its own the process holds every capability by CapEff, yet the kernel
/// answers EPERM to bpf(): the error says the kernel refused, from its errno, and keeps it.
#[test]
fn a_kernel_eperm_despite_capabilities_is_a_privilege_error() {
    if !require_root("trace in a new user namespace (unshare)") {
        return;
    }
    let trace = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(loadprobe_bin())
        .args(["trace", "--duration", "1"])
        .output()
        .expect("unshare");
    assert_eq!(trace.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&trace.stderr);
    assert_eq!(stderr.lines().count(), 1, "not one line:\n{stderr}");
    assert!(
        stderr.starts_with(
            "loadprobe: error: the eBPF probe needs root, or CAP_BPF and CAP_PERFMON: the kernel \
             refused "
        ),
        "{stderr}"
    );
    assert!(stderr.contains("(run `loadprobe doctor`): "), "{stderr}");
    assert!(
        stderr
            .trim_end()
            .ends_with("Operation not permitted (os error 1)"),
        "{stderr}"
    );
}

/// `doctor` (through `unshare`) in a private mount namespace where `tcp_fin_timeout` is
/// `route/flush`, a write-only sysctl that even root cannot read.
fn doctor_with_unreadable_sysctl(extra: &[&str], env: &[(&str, &str)]) -> Output {
    let script = format!(
        "mount --bind /proc/sys/net/ipv4/route/flush /proc/sys/net/ipv4/tcp_fin_timeout \
         && exec \"$0\" doctor {}",
        extra.join(" ")
    );
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(loadprobe_bin())
        .env_remove("RUST_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("unshare")
}

#[test]
fn a_sysctl_that_cannot_be_read_is_a_warning_on_stderr() {
    if !require_root("doctor with an unreadable sysctl") {
        return;
    }
    let warning = "loadprobe: warning: kernel snapshot: reading sysctl net.ipv4.tcp_fin_timeout \
                   failed: Permission denied";
    let output = doctor_with_unreadable_sysctl(&[], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.lines().any(|l| l.starts_with(warning)),
        "no warning line on stderr:\n{stderr}"
    );
    // The rest of the snapshot is still there: one sysctl missing is a warning, not a failure.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("tcp_tw_reuse="), "{stdout}");
    assert!(!stdout.contains("tcp_fin_timeout="), "{stdout}");

    // RUST_LOG turns it off; -v keeps it and adds nothing that is not a log line.
    let quiet = doctor_with_unreadable_sysctl(&[], &[("RUST_LOG", "off")]);
    let stderr = String::from_utf8_lossy(&quiet.stderr);
    assert!(
        !stderr.contains(warning),
        "RUST_LOG=off still warned:\n{stderr}"
    );
    let verbose = doctor_with_unreadable_sysctl(&["-v"], &[]);
    let stderr = String::from_utf8_lossy(&verbose.stderr);
    assert!(stderr.contains(warning), "-v lost the warning:\n{stderr}");
    assert_eq!(verbose.status.code(), output.status.code());
}
