//! `trace --format jsonl` names the owner of each end: real clients (curl, a Python client)
//! against nginx in a namespace each test makes, each client checked by its own process id and
//! local port.
//!
//! Needs root (or fails under `LOADPROBE_REQUIRE_BPF=1`) and the loadprobe binary of the same
//! cargo profile.

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::process::{Command, Stdio};

use loadprobe_tests::{Netns, Nginx, Trace, Tracer, require_root};
use serde_json::Value;

/// What one client run made: its process id and the local port of its one connection.
struct Client {
    pid: u32,
    port: u16,
}

/// Runs `cmd` (which prints its connection's local port on stdout and exits) to the end.
fn client(mut cmd: Command) -> Client {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().expect("client");
    assert!(out.status.success(), "{cmd:?}: {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let port = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{cmd:?} printed {text:?}, not a port"));
    Client { pid, port }
}

/// curl, run by `ip netns exec` (which execs it: the child's pid is curl's), one request.
fn curl(netns: &Netns, port: u16, extra: &[&str]) -> Client {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        netns.name(),
        "curl",
        "-sf",
        "-o",
        "/dev/null",
    ])
    .args(["-w", "%{local_port}"])
    .args(extra)
    .arg(format!("http://127.0.0.1:{port}/"));
    client(cmd)
}

/// A Python client (http.client): one request, then it closes its end first (nginx keeps the
/// connection alive) and prints its local port.
fn python(netns: &Netns, port: u16) -> Client {
    let script = format!(
        "import http.client\n\
         c = http.client.HTTPConnection('127.0.0.1', {port})\n\
         c.request('GET', '/')\n\
         c.getresponse().read()\n\
         p = c.sock.getsockname()[1]\n\
         c.close()\n\
         print(p)\n"
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns.name(), "python3", "-c", &script]);
    client(cmd)
}

/// The one record of the connection from local port `port`.
fn record_of(trace: &Trace, port: u16) -> &Value {
    let client = format!("127.0.0.1:{port}");
    let found: Vec<&Value> = trace
        .records
        .iter()
        .filter(|r| r["client"] == client.as_str())
        .collect();
    assert_eq!(found.len(), 1, "{client}: {:#?}", trace.records);
    found[0]
}

/// Each client program is named for its own connections, by its pid and command, and nginx
/// for its ends; the TIME_WAIT a client left stays attributed to it after it exited.
#[test]
fn curl_and_python_are_each_named_for_their_own_connections() {
    if !require_root("attribution of curl and python") {
        return;
    }
    let netns = Netns::for_test("attr-clients");
    let _nginx = Nginx::start(netns.name(), 8041);
    let tracer = Tracer::start(&netns, &[8041]);
    let curls = [curl(&netns, 8041, &[]), curl(&netns, 8041, &[])];
    let pythons = [python(&netns, 8041), python(&netns, 8041)];
    // nginx closes first: its end's TIME_WAIT is held by nginx.
    let server_closed = curl(&netns, 8041, &["-H", "Connection: close"]);
    netns.wait_quiet();
    let trace = tracer.stop();
    assert_eq!(trace.records.len(), 5, "{:#?}", trace.records);
    for (clients, comm) in [(&curls, "curl"), (&pythons, "python3")] {
        for c in clients {
            let r = record_of(&trace, c.port);
            let owner = &r["client_owner"];
            assert_eq!(owner["comm"], comm, "{r}");
            assert_eq!(owner["pid"], c.pid, "{r}");
            assert_eq!(r["server_owner"]["comm"], "nginx", "{r}");
            assert!(r["server_owner"]["pid"].is_u64(), "{r}");
            // The client closed first and has exited: its TIME_WAIT is still alive, and the
            // record still names it.
            assert_eq!(r["closer"], "client", "{r}");
            assert!(
                !std::path::Path::new(&format!("/proc/{}", c.pid)).exists(),
                "{comm} {} still runs",
                c.pid
            );
            let tw = &r["time_wait"][0];
            assert_eq!(
                (&tw["side"], &tw["end"]),
                (&"client".into(), &"open".into()),
                "{r}"
            );
        }
    }
    let r = record_of(&trace, server_closed.port);
    assert_eq!(r["client_owner"]["pid"], server_closed.pid, "{r}");
    assert_eq!(r["server_owner"]["comm"], "nginx", "{r}");
    let nginx_pids: Vec<&Value> = trace
        .records
        .iter()
        .map(|r| &r["server_owner"]["pid"])
        .collect();
    assert!(
        nginx_pids.windows(2).all(|w| w[0] == w[1]),
        "one nginx worker: {nginx_pids:?}"
    );
    assert_eq!(trace.lost_events(), 0);
}

/// The cgroup2 mount point, from /proc/self/mounts.
fn cgroup2_mount() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| f[1].to_string())
    })
}

/// A cgroup this test made; removed on drop (its one process has exited by then).
struct TestCgroup(std::path::PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A client moved into a cgroup of its own is named by that cgroup's path, also once the
/// cgroup is gone (removed before the trace ends and writes the record).
#[test]
fn a_client_in_its_own_cgroup_is_named_by_its_path() {
    if !require_root("attribution by cgroup") {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        panic!("no cgroup2 mount");
    };
    let name = format!("lp-attr-{}", std::process::id());
    let cgroup = TestCgroup(std::path::Path::new(&mount).join(&name));
    std::fs::create_dir(&cgroup.0).expect("mkdir cgroup");
    let netns = Netns::for_test("attr-cgroup");
    let _nginx = Nginx::start(netns.name(), 8042);
    const METRICS: &str = "127.0.0.1:9472";
    let tracer = Tracer::start_with(netns.name(), &[8042], &["--metrics", METRICS]);
    // nsenter keeps this mount namespace (ip netns exec gives a /sys without the cgroup
    // mounts): the shell moves itself into the cgroup, then becomes curl.
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", netns.name()))
        .args(["--", "sh", "-c"])
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec curl -sf -o /dev/null -w '%{{local_port}}' \
             http://127.0.0.1:8042/",
            cgroup.0.display()
        ));
    let c = client(cmd);
    // An outside curl, in this test's own cgroup.
    let outside = curl(&netns, 8042, &[]);
    netns.wait_quiet();
    // The trace names a cgroup when it reads the connection's first event: only once it has
    // read both connections' closes is the cgroup's removal sure to come after that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let closed = |s: &loadprobe_tests::Scrape| {
        s.iter()
            .filter(|(k, _)| k.starts_with("loadprobe_connections_closed_total{"))
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    while closed(&loadprobe_tests::scrape(&netns, METRICS.parse().unwrap())) < 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the trace never read both closes"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(cgroup);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let trace = tracer.stop();
    let r = record_of(&trace, c.port);
    let owner = &r["client_owner"];
    assert_eq!(owner["comm"], "curl", "{r}");
    assert_eq!(owner["pid"], c.pid, "{r}");
    assert_eq!(owner["cgroup"], format!("/{name}").as_str(), "{r}");
    assert_eq!(
        (&owner["container"], &owner["pod"]),
        (&Value::Null, &Value::Null),
        "{r}"
    );
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let r = record_of(&trace, outside.port);
    assert_eq!(r["client_owner"]["cgroup"], own, "{r}");
}

/// A Python client making `n` connections, one after the other, each closed by the client
/// (nginx keeps them alive); returns its pid.
fn python_many(netns: &Netns, port: u16, n: usize) -> u32 {
    let script = format!(
        "import http.client\n\
         for _ in range({n}):\n\
         \x20   c = http.client.HTTPConnection('127.0.0.1', {port})\n\
         \x20   c.request('GET', '/')\n\
         \x20   c.getresponse().read()\n\
         \x20   c.close()\n\
         print({port})\n"
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns.name(), "python3", "-c", &script]);
    client(cmd).pid
}

/// `--by process --top 2`: who holds TIME_WAIT now (the Python client that made three, after
/// it exited), who made the most, each row's closers, the rest summed as `other`, and the rows
/// with `other` adding up to the totals.
#[test]
fn by_process_ranks_who_holds_and_who_made_time_wait() {
    if !require_root("trace --by process") {
        return;
    }
    let netns = Netns::for_test("attr-by");
    let _nginx = Nginx::start(netns.name(), 8043);
    let tracer = Tracer::start_with(netns.name(), &[8043], &["--by", "process", "--top", "2"]);
    let py = python_many(&netns, 8043, 3);
    let curls = [curl(&netns, 8043, &[]), curl(&netns, 8043, &[])];
    netns.wait_quiet();
    let trace = tracer.stop();
    let by = &trace.summary["by"];
    assert_eq!(by["key"], "process", "{by}");
    let holding = &by["holding"]["rows"];
    assert_eq!(holding.as_array().unwrap().len(), 2, "{by}");
    let first = &holding[0];
    assert_eq!(first["name"], format!("python3[{py}]").as_str(), "{by}");
    assert_eq!(first["pid"], py, "{by}");
    assert_eq!(
        (&first["holding"], &first["entered"]),
        (&3.into(), &3.into()),
        "{by}"
    );
    assert_eq!(first["connections"], 3, "{by}");
    assert_eq!(first["closer"]["client"], 3, "{by}");
    // Everything else is `other`: the rows and it add up to what the summary counts.
    let tw = &trace.summary["time_wait"];
    let open = tw["client"]["open"].as_u64().unwrap() + tw["server"]["open"].as_u64().unwrap();
    assert_eq!(open, 5, "{}", trace.summary);
    let sum = |ranking: &Value, field: &str| {
        ranking["rows"]
            .as_array()
            .unwrap()
            .iter()
            .chain([&ranking["other"]])
            .map(|r| r[field].as_u64().unwrap())
            .sum::<u64>()
    };
    for ranking in [&by["holding"], &by["entered"]] {
        assert_eq!(sum(ranking, "holding"), 5, "{by}");
        assert_eq!(sum(ranking, "entered"), 5, "{by}");
        // Each connection counts once per process it has an end in: client and nginx.
        assert_eq!(sum(ranking, "connections"), 10, "{by}");
    }
    // A curl holds its one: the second row; nginx (no TIME_WAIT, an end of every
    // connection) is in `other`.
    for ranking in [&by["holding"], &by["entered"]] {
        let second = &ranking["rows"][1];
        let curl_pids: Vec<u32> = curls.iter().map(|c| c.pid).collect();
        assert!(curl_pids.iter().any(|p| second["pid"] == *p), "{by}");
        assert_eq!(
            (&second["holding"], &second["connections"]),
            (&1.into(), &1.into()),
            "{by}"
        );
        assert_eq!(ranking["other"]["connections"], 6, "{by}");
        assert_eq!(ranking["other"]["closer"]["client"], 6, "{by}");
    }
    assert_eq!(by["entered"]["rows"][0]["name"], first["name"], "{by}");
    for c in &curls {
        assert!(
            !std::path::Path::new(&format!("/proc/{}", c.pid)).exists(),
            "curl {} still runs",
            c.pid
        );
    }
}

/// Bad input is one line and exit 2 before the probe loads: `--top` without `--by`, an unknown
/// key.
#[test]
fn by_flags_are_checked_before_anything_runs() {
    for args in [
        &["--top", "3"][..],
        &["--by", "pid"],
        &["--by", "process", "--top", "0"],
    ] {
        let out = Command::new(loadprobe_tests::loadprobe_bin())
            .arg("trace")
            .args(args)
            .output()
            .expect("loadprobe");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
