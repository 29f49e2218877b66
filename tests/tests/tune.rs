//! `loadprobe tune validate` end to end: the seed's two stories (port exhaustion fixed by
//! `tcp_tw_reuse=1` over veth; TIME_WAIT overflow with a small `tcp_max_tw_buckets`), bad input,
//! Ctrl-C, `--apply`, and what must never happen: a host sysctl changed or a namespace left
//! behind.
//!
//! Needs root (or fails under `LOADPROBE_REQUIRE_BPF=1`) and the loadprobe binary of the same
//! cargo profile. The tests run one at a time: each measures throughput and errors, and two
//! validations sharing the machine's cores would measure each other.

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use loadprobe_tests::{Netns, loadprobe_bin, netns_listed, require_root, tempdir};
use serde_json::Value;

/// The host values a validation must leave alone: every sysctl the tests set.
const WATCHED: &[&str] = &[
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_fin_timeout",
    "net.core.somaxconn",
];

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sysctl(key: &str) -> String {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn host_sysctls() -> Vec<(&'static str, String)> {
    WATCHED.iter().map(|k| (*k, sysctl(k))).collect()
}

/// A namespace prefix of this test run (namespaces `<prefix>-a-c` ...).
fn prefix(test: &str) -> String {
    format!("lpt{}{test}", std::process::id())
}

/// Namespaces of `prefix` still listed by `ip netns list`.
fn leftovers(prefix: &str) -> Vec<String> {
    netns_listed(&format!("{prefix}-"))
}

/// What one `tune validate` left: its output and the files in --output-dir.
struct Validation {
    output: Output,
    stdout: String,
    stderr: String,
    dir: PathBuf,
}

impl Validation {
    fn json(&self, file: &str) -> Value {
        let path = self.dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}\nstdout:\n{}\nstderr:\n{}",
                path.display(),
                self.stdout,
                self.stderr
            )
        });
        serde_json::from_str(&text).expect("JSON")
    }

    fn assert_success(&self) {
        loadprobe_tests::assert_success(&self.output);
    }
}

impl Drop for Validation {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `loadprobe tune validate ARGS` (in `wrapper`, a namespace standing in for the host,
/// when given) and checks what every validation must leave: the host's sysctls as they were and
/// none of its namespaces.
fn validate(test: &str, wrapper: Option<&Netns>, args: &[&str]) -> Validation {
    let prefix = prefix(test);
    let dir = tempdir(&format!("validate-{test}"));
    let before = host_sysctls();
    let mut cmd = match wrapper {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns.name()]).arg(loadprobe_bin());
            c
        }
        None => Command::new(loadprobe_bin()),
    };
    let started = Instant::now();
    let output = cmd
        .args([
            "tune",
            "validate",
            "--netns-prefix",
            &prefix,
            "--output-dir",
        ])
        .arg(&dir)
        .args(args)
        .output()
        .expect("run loadprobe tune validate");
    eprintln!("{test}: tune validate took {:?}", started.elapsed());
    let v = Validation {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        output,
        dir,
    };
    assert_eq!(host_sysctls(), before, "host sysctls changed\n{}", v.stderr);
    assert_eq!(leftovers(&prefix), Vec::<String>::new(), "namespaces left");
    let lock = format!("/run/lock/loadprobe-validate-{prefix}.lock");
    assert!(!Path::new(&lock).exists(), "{lock} left");
    v
}

fn num(v: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(v, |v, key| &v[key])
        .as_u64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v:#}"))
}

fn metric<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["metrics"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["metric"] == name))
        .unwrap_or_else(|| panic!("no metric {name} in {v:#}"))
}

/// Story 1: client-close at 50/s with 100 ports, well above 100 / 60 s. Without reuse the ports
/// are all in TIME_WAIT after 2 s and connect() fails with EADDRNOTAVAIL; with
/// `tcp_tw_reuse=1` the client takes over TIME_WAIT ports older than 1 s instead.
#[test]
fn port_exhaustion_over_veth_is_fixed_by_tw_reuse() {
    if !require_root("tune::port_exhaustion_over_veth_is_fixed_by_tw_reuse") {
        return;
    }
    let _serial = serial();
    let v = validate(
        "reuse",
        None,
        &[
            "--mode",
            "client-close",
            "--rate",
            "50",
            "--duration",
            "5s",
            "--base",
            "net.ipv4.ip_local_port_range=20000 20099",
            "--set",
            "net.ipv4.tcp_tw_reuse=1",
        ],
    );
    v.assert_success();
    assert!(v.stdout.contains("Verdict: improved\n"), "{}", v.stdout);

    let baseline = v.json("baseline.json");
    let tuned = v.json("tuned.json");
    assert_eq!(baseline["schema"], "loadprobe.run/1");
    assert_eq!(baseline["probe"]["attached"], true);
    let target = baseline["config"]["target"].as_str().unwrap_or_default();
    assert!(!target.contains("127.0.0.1"), "not loopback: {target}");
    // The baseline runs out of ports within seconds.
    assert!(
        num(&baseline, "requests.errors.EADDRNOTAVAIL") > 50,
        "{baseline:#}"
    );
    let first_error = baseline["throughput"]["timeline"]
        .as_array()
        .and_then(|t| t.iter().position(|s| num(s, "errors") > 0))
        .expect("a second with errors");
    assert!(
        first_error <= 3,
        "first EADDRNOTAVAIL in second {first_error}"
    );
    assert_eq!(num(&baseline, "time_wait.client.reused"), 0);
    // The tuned run does not, and its client TIME_WAIT sockets end as reused.
    assert!(
        tuned["requests"]["errors"].get("EADDRNOTAVAIL").is_none(),
        "{tuned:#}"
    );
    assert!(num(&tuned, "time_wait.client.reused") > 50, "{tuned:#}");

    let report = v.json("validate.json");
    assert_eq!(report["verdict"], "improved");
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("EADDRNOTAVAIL errors fell from"),
        "{reason}"
    );
    assert_eq!(metric(&report, "errors")["effect"], "better");
    assert_eq!(report["expectations"][0]["met"], true);
    // Each sysctl went to the namespace where it acts.
    let tuned_ns = &report["sysctls"]["tuned"];
    assert_eq!(tuned_ns["client"]["net.ipv4.tcp_tw_reuse"], "1");
    assert_eq!(tuned_ns["server"]["net.ipv4.tcp_tw_reuse"], "2");
    assert_eq!(
        report["sysctls"]["baseline"]["client"]["net.ipv4.ip_local_port_range"],
        "20000 20099"
    );
}

/// Story 2: server-close at 200/s, so the server makes about 1,000 TIME_WAIT sockets in 5 s;
/// with `tcp_max_tw_buckets=50` all but 50 are never made, which no error shows and the verdict
/// must.
#[test]
fn small_max_tw_buckets_overflows_and_the_verdict_says_why() {
    if !require_root("tune::small_max_tw_buckets_overflows_and_the_verdict_says_why") {
        return;
    }
    let _serial = serial();
    let v = validate(
        "buckets",
        None,
        &[
            "--mode",
            "server-close",
            "--rate",
            "200",
            "--duration",
            "4s",
            "--base",
            "net.ipv4.tcp_max_tw_buckets=1000000",
            "--set",
            "net.ipv4.tcp_max_tw_buckets=50",
        ],
    );
    v.assert_success();
    assert!(v.stdout.contains("Verdict: regressed\n"), "{}", v.stdout);
    let baseline = v.json("baseline.json");
    let tuned = v.json("tuned.json");
    assert_eq!(num(&baseline, "time_wait.server.overflow"), 0);
    assert!(
        num(&baseline, "time_wait.server.peak") > 500,
        "{baseline:#}"
    );
    assert!(num(&tuned, "time_wait.server.overflow") > 500, "{tuned:#}");
    assert!(num(&tuned, "time_wait.server.peak") <= 50, "{tuned:#}");
    assert_eq!(num(&tuned, "requests.total"), num(&tuned, "requests.ok"));

    let report = v.json("validate.json");
    assert_eq!(report["verdict"], "regressed");
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("tcp_max_tw_buckets overflow") && reason.contains("RST"),
        "{reason}"
    );
    assert_eq!(
        metric(&report, "time_wait.server.overflow")["effect"],
        "worse"
    );
    assert_eq!(
        report["sysctls"]["tuned"]["server"]["net.ipv4.tcp_max_tw_buckets"],
        "50"
    );
}

/// Unknown sysctl, a value the kernel rejects, a sysctl that is not per namespace, one that is
/// not a network sysctl at all, and no privileges: one line on stderr, non-zero exit, no output
/// files and no namespaces.
#[test]
fn bad_input_is_one_clear_line_and_leaves_nothing() {
    if !require_root("tune::bad_input_is_one_clear_line_and_leaves_nothing") {
        return;
    }
    let _serial = serial();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "net.ipv4.tcp_tw_recycle=1"],
            "unknown sysctl net.ipv4.tcp_tw_recycle",
        ),
        (
            &["--set", "net.ipv4.tcp_tw_reuse=3"],
            "writing \"3\" to sysctl net.ipv4.tcp_tw_reuse failed: value rejected by the kernel",
        ),
        (
            &[
                "--base",
                "net.ipv4.ip_local_port_range=600 500",
                "--set",
                "net.ipv4.tcp_tw_reuse=1",
            ],
            "value rejected by the kernel",
        ),
        (
            &["--set", "net.ipv4.tcp_max_orphans=100"],
            "net.ipv4.tcp_max_orphans is not per network namespace",
        ),
        (
            &["--set", "vm.swappiness=10"],
            "vm.swappiness is not a network sysctl",
        ),
        (&["--set", "tcp_tw_reuse"], "--set expects KEY=VALUE"),
    ];
    for (i, (args, expect)) in cases.iter().enumerate() {
        let v = validate(&format!("bad{i}"), None, args);
        check_one_line(&v, expect);
    }

    // Unprivileged: the same, before anything is created.
    let prefix = prefix("nobody");
    let output = Command::new(loadprobe_bin())
        .args(["tune", "validate", "--netns-prefix", &prefix])
        .args(["--set", "net.ipv4.tcp_tw_reuse=1", "--duration", "1s"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run as nobody");
    let v = Validation {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        output,
        dir: tempdir("validate-nobody"),
    };
    check_one_line(&v, "creating network namespaces needs root (CAP_SYS_ADMIN)");
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}

fn check_one_line(v: &Validation, expect: &str) {
    assert!(!v.output.status.success(), "accepted: {}", v.stdout);
    let lines: Vec<&str> = v.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {:?}", v.stderr);
    assert!(
        lines[0].starts_with("loadprobe: error: ") && lines[0].contains(expect),
        "{:?} does not say {expect:?}",
        lines[0]
    );
    assert_eq!(v.stdout, "");
    assert!(!v.dir.join("validate.json").exists());
}

/// Every sysctl the tests know set to an unusual value, then Ctrl-C in the middle of a run:
/// the host keeps its values (checked by [`validate`]), no namespace survives, and the exit
/// says it was interrupted. Then SIGKILL, and the next run cleaning up after it.
#[test]
fn host_sysctls_stay_and_ctrl_c_leaves_nothing() {
    if !require_root("tune::host_sysctls_stay_and_ctrl_c_leaves_nothing") {
        return;
    }
    let _serial = serial();
    let mut args = vec!["--rate", "20", "--duration", "2s"];
    for set in [
        "net.ipv4.tcp_tw_reuse=0",
        "net.ipv4.ip_local_port_range=40000 40999",
        "net.ipv4.tcp_max_tw_buckets=77",
        "net.ipv4.tcp_fin_timeout=17",
        "net.core.somaxconn=33",
    ] {
        args.extend(["--set", set]);
    }
    let v = validate("host", None, &args);
    v.assert_success();
    let report = v.json("validate.json");
    let tuned = &report["sysctls"]["tuned"];
    assert_eq!(
        tuned["client"]["net.ipv4.ip_local_port_range"],
        "40000 40999"
    );
    assert_eq!(tuned["server"]["net.core.somaxconn"], "33");
    assert_eq!(tuned["client"]["net.core.somaxconn"], "4096");
    assert_eq!(tuned["server"]["net.ipv4.tcp_max_tw_buckets"], "77");
    assert_eq!(tuned["client"]["net.ipv4.tcp_fin_timeout"], "17");

    // Ctrl-C once the baseline is running.
    let prefix = prefix("sigint");
    let before = host_sysctls();
    let mut child = Command::new(loadprobe_bin())
        .args(["tune", "validate", "--netns-prefix", &prefix])
        .args([
            "--rate",
            "20",
            "--duration",
            "30s",
            "--set",
            "net.ipv4.tcp_tw_reuse=1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadprobe");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("first progress line");
    assert!(line.contains("baseline 1/1"), "{line}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        leftovers(&prefix).len(),
        4,
        "both topologies exist while running"
    );
    // SAFETY: kill() with a child pid we own.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let stopped = Instant::now();
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    for l in stderr.lines() {
        rest.push_str(&l.expect("stderr"));
        rest.push('\n');
    }
    assert!(stopped.elapsed() < Duration::from_secs(10), "slow to stop");
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(
        rest.contains("interrupted; the namespaces were removed"),
        "{rest}"
    );
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
    assert!(!Path::new(&format!("/run/lock/loadprobe-validate-{prefix}.lock")).exists());
    assert_eq!(host_sysctls(), before);

    // SIGKILL cannot be caught: the namespaces stay, and the next run of the prefix removes
    // them first (here one that then fails on a rejected value, leaving nothing).
    let killed = self::prefix("kill");
    let mut child = Command::new(loadprobe_bin())
        .args(["tune", "validate", "--netns-prefix", &killed])
        .args([
            "--rate",
            "20",
            "--duration",
            "30s",
            "--set",
            "net.ipv4.tcp_tw_reuse=1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadprobe");
    let mut line = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut line)
        .expect("first progress line");
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    let left = leftovers(&killed).len();
    // Cleans up before any assertion can fail.
    let v = validate("kill", None, &["--set", "net.ipv4.tcp_tw_reuse=3"]);
    assert_eq!(left, 4, "SIGKILL left the namespaces");
    assert!(
        v.stderr.contains("value rejected by the kernel"),
        "{}",
        v.stderr
    );
}

/// `--apply`, run inside a namespace that stands in for the host: after `improved` it writes the
/// tuned value there and prints the rollback; after anything else it writes nothing and exits 1.
#[test]
fn apply_writes_only_after_improved_and_prints_the_rollback() {
    if !require_root("tune::apply_writes_only_after_improved_and_prints_the_rollback") {
        return;
    }
    let _serial = serial();
    let host = Netns::new(&format!("lpt{}-apply", std::process::id()));
    // As /proc/sys shows it, with the tab of multi-value sysctls made a space.
    let read = |key: &str| {
        let value = host.exec(&["sysctl", "-n", key]);
        value.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(read("net.ipv4.tcp_tw_reuse"), "2");

    let v = validate(
        "apply",
        Some(&host),
        &[
            "--rate",
            "50",
            "--duration",
            "4s",
            "--base",
            "net.ipv4.ip_local_port_range=20000 20099",
            "--set",
            "net.ipv4.tcp_tw_reuse=1",
            "--apply",
        ],
    );
    v.assert_success();
    assert!(
        v.stdout
            .contains("applied: net.ipv4.tcp_tw_reuse = 1 (was 2)\n")
            && v.stdout
                .contains("rollback: sysctl -w 'net.ipv4.tcp_tw_reuse=2'\n"),
        "{}",
        v.stdout
    );
    assert_eq!(read("net.ipv4.tcp_tw_reuse"), "1");
    // --base describes the host; it is not applied.
    assert_eq!(read("net.ipv4.ip_local_port_range"), "32768 60999");
    assert_eq!(
        v.json("validate.json")["applied"]["rollback"],
        "sysctl -w 'net.ipv4.tcp_tw_reuse=2'"
    );

    // No effect: nothing written, exit 1.
    let v = validate(
        "noapply",
        Some(&host),
        &[
            "--rate",
            "20",
            "--duration",
            "2s",
            "--set",
            "net.ipv4.tcp_fin_timeout=30",
            "--apply",
        ],
    );
    assert_eq!(
        v.output.status.code(),
        Some(1),
        "{}\n{}",
        v.stdout,
        v.stderr
    );
    assert!(
        v.stdout
            .contains("not applied: --apply needs the verdict improved"),
        "{}",
        v.stdout
    );
    assert_eq!(read("net.ipv4.tcp_fin_timeout"), "60");
}
