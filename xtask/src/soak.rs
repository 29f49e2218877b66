//! `cargo xtask soak`: `loadprobe trace` as a node runs it (every network namespace, metrics
//! served and scraped, no privileges) under steady connection churn for a long time, to show
//! that its memory stays flat and that it loses no events.
//!
//! The churn is loadprobe's own: `loadprobe serve` and `loadprobe run --no-probe` in the open
//! model at `--rate`, in a network namespace made for the soak and deleted at the end, on a port
//! below the ephemeral range so that no other connection of the machine matches the trace's
//! port filter. The trace runs in the caller's namespace with `--all-netns`, as the DaemonSet
//! runs it. Its RSS (`VmRSS`) is sampled every few seconds and its `/metrics` scraped every
//! half minute; at the end the report gives the RSS at minute 1 and at the end, the growth, the
//! events lost and skipped, and the connections the trace saw against those the churn made,
//! with a verdict against the targets (growth under 5 %, no lost event).
//!
//! Not part of `cargo xtask test`: it lasts half an hour by default. Ctrl-C (SIGINT, SIGTERM,
//! SIGHUP) stops it, its processes and its namespace.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::bench::{TempDir, check_interrupted, cpu_seconds, free_port, install_signal_handlers};

#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// How long the churn lasts, in minutes (at least 2: minute 1 is the reference).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..))]
    minutes: u64,
    /// Connections per second the churn starts (open model: on a fixed schedule).
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// How the churn's connections end: server-close (TIME_WAIT on the server, an API
    /// server's case) or client-close.
    #[arg(long, default_value = "server-close", value_parser = ["server-close", "client-close"])]
    mode: String,
}

/// The targets of issue 16: RSS growth between minute 1 and the end, and lost events.
const MAX_GROWTH_PCT: f64 = 5.0;
/// How often the trace's RSS is read.
const RSS_EVERY: Duration = Duration::from_secs(5);
/// How often `/metrics` is scraped (and a progress line printed).
const SCRAPE_EVERY: Duration = Duration::from_secs(30);

pub fn soak(root: &Path, args: SoakArgs) -> Result<ExitCode> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number");
    }
    if !super::is_root() {
        bail!("the soak needs root: the probe, and a network namespace of its own");
    }
    install_signal_handlers();
    super::ensure_rust_src()?;
    super::ensure_bpf_linker()?;
    super::status(Command::new("cargo").args(["build", "--release", "-p", "loadprobe"]))?;
    let loadprobe = super::target_dir(root)?.join("release/loadprobe");
    check_interrupted()?;

    let tmp = TempDir::new()?;
    let dir = tmp.path();
    let netns = Netns::create(&format!("loadprobe-soak-{}", std::process::id()))?;
    let port = churn_port()?;
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));

    let mut server = Proc::spawn(
        Command::new("ip")
            .args(["netns", "exec", netns.name()])
            .arg(&loadprobe)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")]),
        dir,
        "serve",
    )?;
    server.wait_for_line("stdout", "listening on", Duration::from_secs(10))?;

    let mut trace = Proc::spawn(
        Command::new(&loadprobe).args([
            "trace",
            "--all-netns",
            "--port",
            &port.to_string(),
            "--metrics",
            &metrics.to_string(),
        ]),
        dir,
        "trace",
    )?;
    trace.wait_for_line("stderr", "tracing TCP connections", Duration::from_secs(60))?;
    let trace_pid = trace.pid();
    let cpu_before = cpu_seconds(trace_pid).unwrap_or(0.0);
    println!(
        "soak: trace (pid {trace_pid}) on every namespace, port {port}, metrics on http://{metrics}/metrics"
    );

    let record = dir.join("churn.json");
    let duration = Duration::from_secs(args.minutes * 60);
    let mut churn = Proc::spawn(
        Command::new("ip")
            .args(["netns", "exec", netns.name()])
            .arg(&loadprobe)
            .args(["run", "--no-probe", "--mode", &args.mode])
            .args(["--rate", &args.rate.to_string()])
            .args(["--duration", &format!("{}s", duration.as_secs())])
            .args(["--target", &format!("http://127.0.0.1:{port}/")])
            .arg("-o")
            .arg(&record),
        dir,
        "churn",
    )?;
    println!(
        "soak: churn: loadprobe run --no-probe --mode {} --rate {} for {} min in netns {}",
        args.mode,
        args.rate,
        args.minutes,
        netns.name()
    );

    let started = Instant::now();
    let mut rss: Vec<(Duration, u64)> = Vec::new();
    let mut next_rss = started;
    let mut next_scrape = started + SCRAPE_EVERY;
    loop {
        check_interrupted()?;
        if let Some(st) = trace.exited() {
            bail!(
                "trace exited during the soak ({st}): {}",
                trace.tail("stderr")
            );
        }
        if let Some(st) = churn.exited() {
            if !st.success() {
                bail!("the churn failed ({st}): {}", churn.tail("stderr"));
            }
            break;
        }
        let now = Instant::now();
        if now >= next_rss {
            if let Some(kib) = vm_rss_kib(trace_pid) {
                rss.push((now - started, kib));
            }
            next_rss += RSS_EVERY;
        }
        if now >= next_scrape {
            next_scrape += SCRAPE_EVERY;
            let m = match scrape(metrics) {
                Ok(m) => m,
                // A missed scrape is only said: the last one, after the churn, must succeed.
                Err(e) => {
                    println!("soak: scrape failed: {e:#}");
                    continue;
                }
            };
            println!(
                "soak: {:>3}m{:02}s  trace RSS {:>6.1} MiB  connections {:>11}  TIME_WAIT alive {:>7}  lost {}  skipped {}",
                (now - started).as_secs() / 60,
                (now - started).as_secs() % 60,
                rss.last().map_or(0.0, |r| r.1 as f64 / 1024.0),
                closed(&m),
                sum(&m, "loadprobe_time_wait_alive{"),
                sum(&m, "loadprobe_lost_events_total"),
                sum(&m, "loadprobe_skipped_events_total"),
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let churned = started.elapsed();
    // The last closes reach the trace's reader (it drains every 20 ms).
    std::thread::sleep(Duration::from_secs(2));
    if let Some(kib) = vm_rss_kib(trace_pid) {
        rss.push((started.elapsed(), kib));
    }
    let last = scrape(metrics)?;
    let cpu = cpu_seconds(trace_pid).unwrap_or(0.0) - cpu_before;
    let summary = trace.stop()?;
    drop(server);
    drop(netns);

    let record: Value = serde_json::from_slice(
        &std::fs::read(&record).with_context(|| format!("reading {}", record.display()))?,
    )
    .context("the churn's record")?;
    let report = Report {
        args: &args,
        rss: &rss,
        metrics: &last,
        record: &record,
        trace_cpu_s: cpu,
        churned,
    };
    print!("\n{}", report.render());
    println!("\ntrace's summary:\n{}", summary.trim_end());
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What the soak measured, and its verdict.
struct Report<'a> {
    args: &'a SoakArgs,
    /// (time since the churn started, trace's VmRSS in KiB).
    rss: &'a [(Duration, u64)],
    /// The last scrape, after the churn ended.
    metrics: &'a BTreeMap<String, f64>,
    /// The churn's run record.
    record: &'a Value,
    trace_cpu_s: f64,
    churned: Duration,
}

impl Report<'_> {
    /// The sample nearest minute 1, and the last.
    fn rss_ends(&self) -> Option<(u64, u64)> {
        let minute = Duration::from_secs(60);
        let first = self
            .rss
            .iter()
            .min_by_key(|(t, _)| t.abs_diff(minute))
            .map(|r| r.1)?;
        Some((first, self.rss.last()?.1))
    }

    fn growth_pct(&self) -> Option<f64> {
        self.rss_ends()
            .filter(|(first, _)| *first > 0)
            .map(|(first, last)| (last as f64 - first as f64) / first as f64 * 100.0)
    }

    fn lost(&self) -> u64 {
        sum(self.metrics, "loadprobe_lost_events_total")
    }

    fn passed(&self) -> bool {
        self.growth_pct().is_some_and(|g| g < MAX_GROWTH_PCT) && self.lost() == 0
    }

    fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut t = String::new();
        let mib = |k: u64| k as f64 / 1024.0;
        let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
        let opened = self.record["connections"]["opened"].as_u64().unwrap_or(0);
        let reached = self.record["throughput"]["connections_per_s"]
            .as_f64()
            .unwrap_or(0.0);
        let errors: u64 = self.record["requests"]["errors"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
        let _ = writeln!(
            t,
            "soak: {} for {:.1} min, asked {} conn/s, reached {:.0} conn/s ({} connections, {} errors)",
            self.args.mode,
            self.churned.as_secs_f64() / 60.0,
            self.args.rate,
            reached,
            opened,
            errors
        );
        match (self.rss_ends(), self.growth_pct()) {
            (Some((first, last)), Some(g)) => {
                let peak = self.rss.iter().map(|r| r.1).max().unwrap_or(0);
                let _ = writeln!(
                    t,
                    "trace RSS: minute 1 {:.1} MiB, end {:.1} MiB, growth {g:+.2} % (target < {MAX_GROWTH_PCT} %): {}; peak {:.1} MiB",
                    mib(first),
                    mib(last),
                    verdict(g < MAX_GROWTH_PCT),
                    mib(peak)
                );
            }
            _ => {
                let _ = writeln!(t, "trace RSS: too few samples: MISS");
            }
        }
        let per_minute: Vec<String> = (1..)
            .map(|m| Duration::from_secs(60 * m))
            .take_while(|at| *at <= self.churned)
            .filter_map(|at| {
                self.rss
                    .iter()
                    .min_by_key(|(t, _)| t.abs_diff(at))
                    .map(|r| format!("{:.1}", mib(r.1)))
            })
            .collect();
        let _ = writeln!(t, "trace RSS by minute (MiB): {}", per_minute.join(" "));
        let lost = self.lost();
        let _ = writeln!(
            t,
            "events: lost {lost} (target 0): {}; skipped {}",
            verdict(lost == 0),
            sum(self.metrics, "loadprobe_skipped_events_total")
        );
        let seen = closed(self.metrics);
        let _ = writeln!(
            t,
            "connections: trace saw {seen} closed, the churn opened {opened} (and 1 preflight): difference {}",
            seen as i64 - opened as i64 - 1
        );
        let side = |name: &str| {
            format!(
                "{name} entered {}, alive at the end {}",
                sum(
                    self.metrics,
                    &format!("loadprobe_time_wait_entered_total{{side=\"{name}\"}}")
                ),
                sum(
                    self.metrics,
                    &format!("loadprobe_time_wait_alive{{side=\"{name}\"")
                ),
            )
        };
        let _ = writeln!(t, "TIME_WAIT: {}; {}", side("client"), side("server"));
        let _ = writeln!(
            t,
            "trace CPU: {:.1} s, {:.1} % of one core",
            self.trace_cpu_s,
            self.trace_cpu_s / self.churned.as_secs_f64().max(1e-3) * 100.0
        );
        t
    }
}

/// Connections the trace saw finish, every closer summed.
fn closed(m: &BTreeMap<String, f64>) -> u64 {
    sum(m, "loadprobe_connections_closed_total{")
}

/// The sum of the series whose name and labels start with `prefix`.
fn sum(m: &BTreeMap<String, f64>, prefix: &str) -> u64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| *v as u64)
        .sum()
}

/// `GET /metrics` at `addr`: every sample line, series (name and labels) → value.
fn scrape(addr: SocketAddr) -> Result<BTreeMap<String, f64>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot connect to the trace's metrics on {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text).context("reading /metrics")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of the answer's head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "/metrics answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// `VmRSS` of `pid`, KiB.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A port below the ephemeral range (so that no client of the machine gets it as its own
/// port and matches the trace's filter), different for concurrent soaks.
fn churn_port() -> Result<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .context("reading ip_local_port_range")?;
    let low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .context("ip_local_port_range")?;
    if low <= 10_001 {
        bail!(
            "ip_local_port_range starts at {low}: the soak needs ports below it, above 10000, \
             for a server no client port can match"
        );
    }
    let span = low - 10_001;
    Ok(10_000 + (std::process::id() % u32::from(span)) as u16)
}

/// A network namespace of the soak's (`ip netns add`, `lo` up), deleted when dropped.
struct Netns(String);

impl Netns {
    fn create(name: &str) -> Result<Netns> {
        super::status(Command::new("ip").args(["netns", "add", name]))?;
        let netns = Netns(name.to_string());
        super::status(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        Ok(netns)
    }

    fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process with its stdout and stderr in files of `dir`; stopped (SIGINT, then
/// SIGKILL after 10 s) when dropped.
struct Proc {
    child: Option<Child>,
    name: String,
    dir: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, dir: &Path, name: &str) -> Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("{name}.stdout")))?)
            .stderr(std::fs::File::create(dir.join(format!("{name}.stderr")))?)
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        Ok(Proc {
            child: Some(child),
            name: name.to_string(),
            dir: dir.to_path_buf(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn read(&self, stream: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.{stream}", self.name)))
            .unwrap_or_default()
    }

    fn tail(&self, stream: &str) -> String {
        let text = self.read(stream);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits until `stream` has a line containing `what`; an error if the process exits or
    /// `limit` passes first.
    fn wait_for_line(&mut self, stream: &str, what: &str, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.read(stream).lines().any(|l| l.contains(what)) {
                return Ok(());
            }
            if let Some(st) = self.exited() {
                bail!(
                    "{} exited at start ({st}): {}",
                    self.name,
                    self.tail("stderr")
                );
            }
            if Instant::now() > deadline {
                bail!("{} did not say {what:?} within {limit:?}", self.name);
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT, then the exit; its stdout.
    fn stop(&mut self) -> Result<String> {
        if let Some(mut child) = self.child.take() {
            let st = stop(&mut child);
            if !st.is_some_and(|s| s.success()) {
                bail!("{} ended with {st:?}: {}", self.name, self.tail("stderr"));
            }
        }
        Ok(self.read("stdout"))
    }
}

/// SIGINT to `child`, SIGKILL after 10 s; its exit status, if it was had.
fn stop(child: &mut Child) -> Option<std::process::ExitStatus> {
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }
}
