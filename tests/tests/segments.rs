//! Many load hosts, simulated on one machine as a Kubernetes Indexed Job would run them: a
//! target namespace and N "pod" namespaces on one bridge, each pod with a host name of its own
//! (a UTS namespace) running its segment with JOB_COMPLETION_INDEX set, `--start-at` and
//! `--output -` into its log; then `merge -` over the concatenated logs, as
//! `kubectl logs … | loadprobe merge -` would.

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use loadprobe_tests::{Netns, loadprobe_bin, require_root, tempdir, wait_for_port};
use serde_json::Value;

/// The target's namespace holds the bridge; each pod is a veth pair's far end.
struct Cluster {
    target: Netns,
    pods: Vec<Netns>,
    dir: PathBuf,
}

const TARGET_IP: &str = "10.77.0.1";

fn ip(args: &[&str]) {
    let ok = Command::new("ip").args(args).status().expect("ip");
    assert!(ok.success(), "ip {args:?}");
}

impl Cluster {
    fn new(tag: &str, pods: usize) -> Cluster {
        // Link names are global to the machine until moved: unique per cluster of this run.
        static CLUSTERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let target = Netns::for_test(&format!("{tag}-t"));
        let t = target.name().to_string();
        ip(&["-n", &t, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &t,
            "addr",
            "add",
            &format!("{TARGET_IP}/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &t, "link", "set", "br0", "up"]);
        let pods: Vec<Netns> = (0..pods)
            .map(|i| {
                let pod = Netns::for_test(&format!("{tag}-p{i}"));
                let (near, far) = (format!("lp{pid}c{n}b{i}"), format!("lp{pid}c{n}p{i}"));
                ip(&[
                    "link", "add", &near, "netns", &t, "type", "veth", "peer", "name", &far,
                ]);
                ip(&["link", "set", &far, "netns", pod.name()]);
                ip(&["-n", &t, "link", "set", &near, "master", "br0", "up"]);
                let addr = format!("10.77.0.{}/24", 10 + i);
                ip(&["-n", pod.name(), "addr", "add", &addr, "dev", &far]);
                ip(&["-n", pod.name(), "link", "set", &far, "up"]);
                pod
            })
            .collect();
        Cluster {
            target,
            pods,
            dir: tempdir(tag),
        }
    }

    /// Starts pod `i` (0-based, its JOB_COMPLETION_INDEX) as `pod-<i>`, its stdout and stderr
    /// both in its log, as a container's are.
    fn start_pod(&self, i: usize, args: &[&str]) -> Child {
        let log = std::fs::File::create(self.log(i)).expect("log");
        let script = format!("hostname pod-{i} && exec \"$0\" \"$@\"");
        Command::new("ip")
            .args(["netns", "exec", self.pods[i].name()])
            .args(["unshare", "--uts", "sh", "-c", &script])
            .arg(loadprobe_bin())
            .arg("run")
            .args(args)
            .env("JOB_COMPLETION_INDEX", i.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("pod")
    }

    /// `loadprobe serve` on the target's address, up and listening; stopped when dropped.
    fn serve(&self) -> (String, Killed) {
        let target = format!("{TARGET_IP}:8080");
        let server = Killed(
            Command::new("ip")
                .args(["netns", "exec", self.target.name()])
                .arg(loadprobe_bin())
                .args(["serve", "--listen", &target])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("serve"),
        );
        wait_for_port(self.target.name(), &target);
        (target, server)
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("pod-{i}.log"))
    }

    /// `merge - -o OUT` over these logs (concatenated in this order) plus `extra` arguments.
    fn merge(&self, logs: &[usize], extra: &[&str]) -> (std::process::Output, PathBuf) {
        let out = self.dir.join("all.json");
        let _ = std::fs::remove_file(&out);
        let mut input = Vec::new();
        for &i in logs {
            input.extend(std::fs::read(self.log(i)).expect("log"));
        }
        let mut child = Command::new(loadprobe_bin())
            .args(["merge", "-", "-o"])
            .arg(&out)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("merge");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&input).unwrap();
        (child.wait_with_output().expect("merge"), out)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn unix_s_from_now(d: Duration) -> String {
    let at = SystemTime::now() + d;
    format!(
        "{:.3}",
        at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("record")).expect("JSON")
}

fn num(v: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_u64()
        .unwrap_or_else(|| panic!("{path} in {v}"))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Four pods run an open-model workload of 400 requests a second between them, started
/// together: the merge has every segment once, adds up to the whole, holds the single host's
/// rate (within 1 %) evenly per second, and each host's probe saw as many client closes as
/// that host opened connections. The SYNs on the bridge show the four schedules interleaved
/// (one start every 2.5 ms), not four bursts at the same instants. A missing segment and a
/// segment given twice are refused.
#[test]
fn four_pods_split_one_open_workload_and_merge_exactly() {
    if !require_root("a simulated cluster of network namespaces") {
        return;
    }
    let cluster = Cluster::new("seg", 4);
    let (target, _server) = cluster.serve();
    let capture_file = cluster.dir.join("syn.txt");
    let capture = Killed(
        Command::new("ip")
            .args(["netns", "exec", cluster.target.name()])
            .args(["tcpdump", "-i", "br0", "-nn", "-tt", "-l", "-U"])
            .arg("tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn and dst port 8080")
            .stdout(std::fs::File::create(&capture_file).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump (installed by cargo xtask setup)"),
    );
    std::thread::sleep(Duration::from_millis(500));
    // Time for four probes to load at once on a busy machine, so no pod is late.
    let start_at = unix_s_from_now(Duration::from_secs(10));
    let url = format!("http://{target}/");
    let args = [
        "--target",
        &url,
        "--mode",
        "client-close",
        "--rate",
        "400",
        "--duration",
        "3s",
        "--segments",
        "4",
        "--start-at",
        &start_at,
        "--output",
        "-",
    ];
    let pods: Vec<Child> = (0..4).map(|i| cluster.start_pod(i, &args)).collect();
    for (i, mut pod) in pods.into_iter().enumerate() {
        let status = pod.wait().expect("pod");
        let log = std::fs::read_to_string(cluster.log(i)).unwrap_or_default();
        assert!(status.success(), "pod {i}: {log}");
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(capture);

    let (o, out) = cluster.merge(&[0, 1, 2, 3], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(report.contains("segments     4 of 4"), "{report}");
    // Each log's text report lines were skipped and counted.
    assert!(
        report.contains("line(s) of standard input that were not records"),
        "{report}"
    );
    let all = read_json(&out);
    assert_eq!(all["segments"]["merged"], serde_json::json!([1, 2, 3, 4]));
    assert_eq!(all["segments"]["skewed"], false, "{}", all["segments"]);
    let hosts = all["merged_from"].as_array().expect("merged_from");
    assert_eq!(hosts.len(), 4);
    let mut total = 0;
    for (i, h) in hosts.iter().enumerate() {
        let seg = &h["segment"];
        let k = num(seg, "index");
        assert_eq!(seg["host"], format!("pod-{}", k - 1), "{seg}");
        assert_eq!(num(seg, "count"), 4);
        assert!(num(seg, "start_late_ms") < 1000, "{seg}");
        total += num(h, "requests");
        // This host's probe: every connection it opened, closed by the client first.
        let opened = num(&h["host"], "connections_opened");
        assert!(opened > 250, "host {i}: {h}");
        assert_eq!(
            num(&h["host"], "closer.client"),
            opened,
            "host {i}: {}",
            h["host"]
        );
    }
    assert_eq!(num(&all, "requests.total"), total);
    let rps = all["throughput"]["rps"].as_f64().unwrap();
    assert!((rps - 400.0).abs() <= 4.0, "rps {rps}");
    let timeline = all["throughput"]["timeline"].as_array().unwrap();
    let full: Vec<u64> = timeline
        .iter()
        .map(|s| num(s, "ok") + num(s, "errors"))
        .take(3)
        .collect();
    assert!(
        full.iter().all(|n| n.abs_diff(400) <= 12),
        "per second: {full:?}"
    );

    // The wire: one SYN every 2.5 ms, the four schedules interleaved.
    let times: Vec<f64> = std::fs::read_to_string(&capture_file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(times.len() >= 1150, "{} SYNs captured", times.len());
    let mut gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]) * 1e3).collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    assert!(
        median > 1.0,
        "median gap between SYNs {median:.3} ms (bursts?)"
    );

    // A segment missing, and one given twice, are refused, naming it.
    let (o, _) = cluster.merge(&[0, 1, 3], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("segment(s) 3 of 4 missing"),
        "{}",
        stderr(&o)
    );
    let (o, out) = cluster.merge(&[0, 1, 3], &["--allow-partial"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        read_json(&out)["segments"]["missing"],
        serde_json::json!([3])
    );
    let (o, _) = cluster.merge(&[0, 1, 1, 2, 3], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("are both segment 2"), "{}", stderr(&o));
}

/// A pod that comes up 2 s after the agreed start still runs, at once; its record says how
/// late it was, and the merge reports the hosts' start skew as over the bound.
#[test]
fn a_pod_started_late_is_reported() {
    if !require_root("a simulated cluster of network namespaces") {
        return;
    }
    let cluster = Cluster::new("seglate", 2);
    let (target, _server) = cluster.serve();
    let start_at = unix_s_from_now(Duration::from_secs(2));
    let url = format!("http://{target}/");
    let args = [
        "--target",
        &url,
        "--users",
        "4",
        "--duration",
        "1s",
        "--segments",
        "2",
        "--start-at",
        &start_at,
        "--output",
        "-",
        "--no-probe",
    ];
    let mut first = cluster.start_pod(0, &args);
    std::thread::sleep(Duration::from_secs(4));
    let mut late = cluster.start_pod(1, &args);
    assert!(first.wait().unwrap().success());
    assert!(late.wait().unwrap().success());
    let log = std::fs::read_to_string(cluster.log(1)).unwrap();
    assert!(log.contains("ms after --start-at"), "{log}");
    let (o, out) = cluster.merge(&[0, 1], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let all = read_json(&out);
    let set = &all["segments"];
    assert_eq!(set["skewed"], true, "{set}");
    assert!(num(set, "start_skew_ms") >= 1900, "{set}");
    let late_ms: Vec<u64> = all["merged_from"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| num(&h["segment"], "start_late_ms"))
        .collect();
    assert!(late_ms.iter().any(|ms| *ms >= 1900), "{late_ms:?}");
    assert!(late_ms.iter().any(|ms| *ms < 1000), "{late_ms:?}");
    // The record holds the whole workload; each segment ran its share of it, 2 and 2.
    assert_eq!(all["config"]["users"], 4);
    let users: Vec<u64> = all["merged_from"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| num(&h["segment"], "users"))
        .collect();
    assert_eq!(users, [2, 2]);
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(report.contains("did not run at the same time"), "{report}");
}
