//! A real Prometheus server (Debian's `prometheus`) scrapes `trace --metrics` inside a test
//! namespace; its query API returns the numbers the trace's summary reports.

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use loadprobe_tests::{
    Netns, Side, Tracer, V4, client_first_close, http_get, linger0_abort, require_root, scrape,
    server_first_close, tempdir,
};
use serde_json::Value;

const TRACE_METRICS: &str = "127.0.0.1:9466";
const PROMETHEUS: &str = "127.0.0.1:9467";

/// `prometheus` in `netns`, scraping `target` every second, its data in `dir`; killed and its
/// folder removed on drop, also when the test panics.
struct Prometheus(Child, std::path::PathBuf);

impl Prometheus {
    fn start(netns: &Netns, dir: &std::path::Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: loadprobe\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns.name(), "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (installed by `cargo xtask setup`)");
        Prometheus(child, dir.to_path_buf())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// `GET /api/v1/query?query=...` of the Prometheus in `netns`: the value of each series, by
/// its labels as JSON text, or None while Prometheus is not answering yet.
fn query(netns: &Netns, promql: &str) -> Option<Vec<(Value, f64)>> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let addr: SocketAddr = PROMETHEUS.parse().unwrap();
    let text = netns.enter_thread(|| {
        std::net::TcpStream::connect(addr)
            .ok()
            .map(|_| http_get(addr, &format!("/api/v1/query?query={encoded}")))
    })?;
    let body = text.split_once("\r\n\r\n")?.1;
    let v: Value = serde_json::from_str(body).ok()?;
    (v["status"] == "success").then(|| {
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (r["metric"].clone(), value)
            })
            .collect()
    })
}

fn one(netns: &Netns, promql: &str) -> Option<u64> {
    match query(netns, promql)?.as_slice() {
        [(_, v)] => Some(*v as u64),
        _ => None,
    }
}

#[test]
fn prometheus_scrapes_what_the_summary_reports() {
    if !require_root("Prometheus scraping trace --metrics") {
        return;
    }
    let netns = Netns::for_test("prometheus");
    let tracer = Tracer::start_with(netns.name(), &[8150], &["--metrics", TRACE_METRICS]);
    let _prometheus = Prometheus::start(&netns, &tempdir("prometheus"), TRACE_METRICS);
    let mut made = client_first_close(&netns, V4, 8150);
    made.extend(server_first_close(&netns, V4, 8150));
    made.extend(linger0_abort(&netns, V4, 8150, Side::Server));
    // What trace serves once its reader has taken in the scenario's last events.
    let closed_of = |s: &loadprobe_tests::Scrape| -> u64 {
        s.iter()
            .filter(|(k, _)| k.starts_with("loadprobe_connections_closed_total"))
            .map(|(_, v)| *v as u64)
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = scrape(&netns, TRACE_METRICS.parse().unwrap());
        if closed_of(&served) == made.len() as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "{served:#?}");
        sleep(Duration::from_millis(50));
    }
    let closed = made.len() as u64;
    // Prometheus has it once a scrape after the scenario is in.
    let deadline = Instant::now() + Duration::from_secs(30);
    while one(&netns, "sum(loadprobe_connections_closed_total)") != Some(closed) {
        assert!(
            Instant::now() < deadline,
            "Prometheus never had {closed} connections"
        );
        sleep(Duration::from_millis(200));
    }
    // Asked before the trace stops: a target that went away leaves stale series.
    let mut asked = Vec::new();
    // Every closer Prometheus has a series for, by its label.
    for (labels, v) in query(&netns, "loadprobe_connections_closed_total").expect("closers") {
        let closer = labels["closer"].as_str().expect("closer label");
        asked.push((
            format!("loadprobe_connections_closed_total{{closer=\"{closer}\"}}"),
            Some(v as u64),
        ));
    }
    let mut ask = |promql: String| {
        let v = one(&netns, &promql);
        asked.push((promql, v));
    };
    for side in ["client", "server"] {
        ask(format!(
            "loadprobe_time_wait_entered_total{{side=\"{side}\"}}"
        ));
        ask(format!("sum(loadprobe_time_wait_alive{{side=\"{side}\"}})"));
        ask(format!(
            "sum(loadprobe_time_wait_ended_total{{side=\"{side}\"}})"
        ));
        ask(format!(
            "loadprobe_time_wait_lifetime_seconds_count{{side=\"{side}\"}}"
        ));
    }
    ask("loadprobe_lost_events_total".into());
    let trace = tracer.stop();
    let summary = &trace.summary;
    let tw = &summary["time_wait"];
    let mut expected = Vec::new();
    for (closer, n) in summary["closer"].as_object().unwrap() {
        expected.push((
            format!("loadprobe_connections_closed_total{{closer=\"{closer}\"}}"),
            n.as_u64(),
        ));
    }
    for side in ["client", "server"] {
        let n = |k: &str| tw[side][k].as_u64().unwrap();
        let ended = n("expired") + n("reused") + n("killed");
        expected.push((
            format!("loadprobe_time_wait_entered_total{{side=\"{side}\"}}"),
            Some(n("entered")),
        ));
        expected.push((
            format!("sum(loadprobe_time_wait_alive{{side=\"{side}\"}})"),
            Some(n("open")),
        ));
        expected.push((
            format!("sum(loadprobe_time_wait_ended_total{{side=\"{side}\"}})"),
            Some(ended),
        ));
        expected.push((
            format!("loadprobe_time_wait_lifetime_seconds_count{{side=\"{side}\"}}"),
            Some(ended),
        ));
    }
    expected.push((
        "loadprobe_lost_events_total".into(),
        summary["lost_events"].as_u64(),
    ));
    asked.sort();
    expected.sort();
    assert_eq!(asked, expected);
    assert_eq!(
        tw["client"]["entered"],
        made.iter().filter(|c| c.expected == "client").count()
    );
    assert!(tw["server"]["entered"].as_u64().unwrap() > 0);
}
