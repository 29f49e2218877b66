//! `loadprobe trace`: watch TCP connections and report who closed each one and how long its
//! TIME_WAIT socket lived.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};

use loadprobe::diag::{self, TwSocket};
use loadprobe::kernel::cgroup::Cgroups;
use loadprobe::metrics::{self, MetricsServer, OwnerSeries, PUBLISH_EVERY, Published, Snapshot};
use loadprobe::model::Side;
use loadprobe::privileges;
use loadprobe::probe::owner::{Named, Namer};
use loadprobe::probe::read_loop::{Reader, Watch};
use loadprobe::probe::summary::Summary;
use loadprobe::probe::track::by::{By, MAX_ROWS};
use loadprobe::probe::track::{ConnRecord, Tracker};
use loadprobe::probe::{LOSS_UNCERTAIN, Netns, Probe, ProbeOptions};
use loadprobe_common::{Event, Owner};

use super::exit;
use super::out::{Stdout, note};
use super::parse;
use super::signals::Interrupts;
use super::trace_by::{self, ByArg};

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// Only connections with either end on this port (repeatable).
    #[arg(long = "port", value_name = "P", value_parser = clap::value_parser!(u16).range(1..))]
    ports: Vec<u16>,
    /// Every network namespace, not just the one loadprobe runs in.
    #[arg(long)]
    all_netns: bool,
    /// Stop after this long, e.g. 10s, 2m (default: at Ctrl-C or SIGTERM).
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration)]
    duration: Option<Duration>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Every second, compare the probe's TIME_WAIT gauge with the kernel's own count
    /// (sock_diag, /proc/net/sockstat) and report the difference.
    #[arg(long, conflicts_with = "all_netns")]
    verify: bool,
    /// Serve the running totals as OpenMetrics text on http://ADDR/metrics
    /// (e.g. 127.0.0.1:9464, or [::]:9464 for every address).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Also serve the counts by owner, process or cgroup: the first N owners seen
    /// (--metrics-top) get series of their own for the whole trace, the rest are summed as
    /// `other`.
    #[arg(long, value_enum, value_name = "KEY", requires = "metrics")]
    metrics_by: Option<MetricsBy>,
    /// How many owners get series of their own with --metrics-by.
    #[arg(long, value_name = "N", requires = "metrics_by", default_value_t = 20,
          value_parser = clap::value_parser!(u16).range(1..))]
    metrics_top: u16,
    /// The user to run as once the probe is attached, with no capability left
    /// (default: nobody; taken only when started as root).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Also keep totals by owner: who holds TIME_WAIT now, who made the most, and who closed
    /// their connections, per process, cgroup, peer address or local port; shown live on a
    /// terminal and at the end (the summary's `by` in jsonl).
    #[arg(long, value_enum, value_name = "KEY")]
    by: Option<ByArg>,
    /// How many rows `--by` shows per ranking; the rest are summed as `other`.
    #[arg(long, value_name = "N", requires = "by", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..))]
    top: u16,
    /// Describe rare anomalies inside the probe's kernel programs on stderr (a failed kernel
    /// read: which program, which field); they are counted either way.
    #[arg(long)]
    probe_log: bool,
    /// Print every raw kernel event to stderr (for debugging the probe).
    #[arg(long, hide = true)]
    debug_events: bool,
}

/// What `--metrics-by` names series by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum MetricsBy {
    /// The owning process, as `comm[pid]`.
    Process,
    /// The owning process's cgroup path.
    Cgroup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A live view on a terminal, then a summary.
    Text,
    /// One JSON object per finished connection, then `{"summary": ...}`.
    Jsonl,
}

pub fn main(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let options = ProbeOptions {
        netns: if args.all_netns {
            Netns::All
        } else {
            Netns::Current
        },
        ports: args.ports.clone(),
        owner: None,
        timewait: true,
        records: true,
        floor: None,
        log: args.probe_log,
    };
    // Bad input fails here, before the probe loads.
    let user = privileges::target(args.user.as_deref()).map_err(super::flags::user_error)?;
    let metrics_server = args
        .metrics
        .map(|addr| MetricsServer::bind(addr).with_context(|| format!("--metrics {addr}")))
        .transpose()?;
    let probe = Probe::attach(&options)?;
    let interrupts = Interrupts::catch_keeping_on_hangup()?;
    if let Some(reason) = probe.timewait_unavailable() {
        note!("loadprobe: TIME_WAIT tracking unavailable ({reason}); closers only");
    }
    let mut tracker = Tracker::new(probe.timewait_unavailable().is_none());
    if let Some(by) = args.by {
        tracker = tracker.by(by.by(), MAX_ROWS);
    }
    match args.metrics_by {
        Some(MetricsBy::Process) => {
            tracker = tracker.metrics_by(By::Process, args.metrics_top.into())
        }
        Some(MetricsBy::Cgroup) => {
            tracker = tracker.metrics_by(By::Cgroup, args.metrics_top.into())
        }
        None => {}
    }
    let mut reader = Reader::new(probe, tracker);
    // Opened while still privileged: see `Cgroups`.
    let namer = Namer::new(Cgroups::new());
    let dropped = privileges::drop_all(user.as_ref())?;
    let published = match metrics_server {
        Some(server) => {
            let published = Arc::new(Published::default());
            let addr = server.local_addr().context("metrics address")?;
            server.start(metrics::registry(Arc::clone(&published)))?;
            note!("loadprobe: metrics on http://{addr}/metrics");
            Some(published)
        }
        None => None,
    };
    let verify = match (args.verify, reader.probe().timewait_unavailable()) {
        (false, _) => None,
        (true, Some(reason)) => {
            anyhow::bail!("--verify needs TIME_WAIT tracking, which is unavailable: {reason}")
        }
        (true, None) => {
            // What existed before the probe: the kernel's list, read once the probe is attached.
            reader.catch_up();
            let before = kernel_timewait(&args.ports)?;
            // The kernel lists the sockets of this thread's namespace.
            let netns = loadprobe::probe::current_netns()?;
            reader
                .tracker_mut()
                .set_baseline(netns, before.into_iter().map(|tw| (tw.local, tw.remote)));
            Some(Verify::default())
        }
    };
    let scope = if args.all_netns {
        "all network namespaces".to_string()
    } else {
        format!("network namespace {}", reader.probe().netns())
    };
    let ports = if args.ports.is_empty() {
        String::new()
    } else {
        format!(", ports {:?}", args.ports)
    };
    let running_as = match (&user, dropped.switched) {
        (Some(user), true) => format!("user {}", user.name),
        _ => format!("uid {}", dropped.uid),
    };
    let caps = if dropped.bounding_dropped {
        "no capabilities"
    } else {
        "no capabilities (bounding set not emptied: no CAP_SETPCAP)"
    };
    note!(
        "loadprobe: tracing TCP connections in {scope}{ports} as {running_as}, {caps}; Ctrl-C to stop"
    );

    let mut watch = TraceWatch {
        args: &args,
        interrupts,
        deadline: args.duration.map(|d| Instant::now() + d),
        live: args.format == Format::Text && std::io::stderr().is_terminal(),
        out: std::io::BufWriter::new(Stdout::new()),
        written: 0,
        published,
        last_publish: Instant::now(),
        last_second: Instant::now(),
        verify,
        namer,
        live_lines: 0,
    };
    watch.publish(&reader);
    reader.run(&mut watch)?;
    watch.publish(&reader);
    let TraceWatch {
        mut out,
        live,
        verify,
        deadline,
        mut interrupts,
        mut namer,
        ..
    } = watch;
    if live && verify.is_none() {
        note!();
    }
    let summary = reader.summary(None);
    let verify = verify.map(Verify::result);
    let top = usize::from(args.top);
    match args.format {
        Format::Jsonl => {
            let mut value = serde_json::json!({ "summary": summary });
            if let Some(v) = &verify {
                value["summary"]["verify"] = serde_json::to_value(v)?;
            }
            if let Some(table) = reader.tracker().table() {
                value["summary"]["by"] = trace_by::json(table, top, &mut namer);
            }
            writeln!(out, "{value}")?;
        }
        Format::Text => {
            write_summary(&mut out, &summary)?;
            if let Some(table) = reader.tracker().table() {
                for line in trace_by::lines(table, top, &mut namer) {
                    writeln!(out, "{line}")?;
                }
            }
            if let Some(v) = &verify {
                writeln!(
                    out,
                    "verify: {} samples, largest difference {} ({:.3}%)",
                    v.samples, v.max_abs_diff, v.max_abs_diff_pct
                )?;
            }
        }
    }
    out.flush()?;
    // Stopped by a signal is how a trace without --duration ends; with one, it was cut short.
    Ok(if deadline.is_some() && interrupts.arrived() {
        ExitCode::from(exit::INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// What `trace` does as the probe is read: records to stdout, metrics, the live line or the
/// `--verify` samples, and when to stop.
struct TraceWatch<'a> {
    args: &'a TraceArgs,
    interrupts: Interrupts,
    deadline: Option<Instant>,
    /// The one-line live view on a terminal (text format only).
    live: bool,
    out: std::io::BufWriter<Stdout>,
    /// Records written since the last flush.
    written: usize,
    published: Option<Arc<Published>>,
    last_publish: Instant,
    last_second: Instant,
    verify: Option<Verify>,
    namer: Namer,
    /// Lines the live `--by` table took last time, to redraw it in place.
    live_lines: usize,
}

impl TraceWatch<'_> {
    /// A line on stderr, below the live line if there is one.
    fn say(&self, line: &str) {
        note!("{}loadprobe: {line}", if self.live { "\n" } else { "" });
    }

    fn publish(&mut self, reader: &Reader) {
        if let Some(published) = &self.published {
            let probe = reader.probe();
            let mut snapshot = Snapshot::of(
                reader.tracker(),
                probe.lost_events(),
                probe.skipped_events(),
                probe.timewait_unavailable().is_none(),
            );
            snapshot.owners = reader.tracker().metrics_table().map(|table| {
                let (rows, other) = table.rows();
                let mut series = OwnerSeries {
                    label: table.by.name(),
                    other: other.clone(),
                    ..OwnerSeries::default()
                };
                for (key, row) in rows {
                    let name = trace_by::name(key, &mut self.namer);
                    series.rows.entry(name).or_default().add(row);
                }
                series
            });
            published.set(snapshot);
        }
    }
}

impl Watch for TraceWatch<'_> {
    type Error = anyhow::Error;

    fn event(&mut self, tracker: &mut Tracker, e: &Event, owner: Option<&Owner>) {
        if self.args.debug_events {
            note!("{e:?} {owner:?}");
        }
        if let Some(owner) = owner {
            self.namer.learn(owner);
        }
        tracker.owned_event(e, owner);
    }

    fn record(&mut self, record: ConnRecord) -> anyhow::Result<()> {
        match self.args.format {
            Format::Jsonl => {
                let mut name = |o: Option<Owner>| o.map(|o| self.namer.name(&o));
                let line = RecordLine {
                    client_owner: name(record.client_owner),
                    server_owner: name(record.server_owner),
                    record: &record,
                };
                writeln!(self.out, "{}", serde_json::to_string(&line)?)?;
                self.written += 1;
            }
            // The text view is the summary; per-connection lines would flood a terminal.
            Format::Text => {}
        }
        Ok(())
    }

    fn step(&mut self, reader: &mut Reader) -> anyhow::Result<bool> {
        if self.written > 0 {
            // Readers get records as they come, and a closed pipe shows at once.
            self.out.flush()?;
            self.written = 0;
        }
        if self.last_publish.elapsed() >= PUBLISH_EVERY {
            self.publish(reader);
            self.last_publish = Instant::now();
        }
        if self.last_second.elapsed() >= Duration::from_secs(1) {
            self.last_second = Instant::now();
            if let Some(verify) = &mut self.verify {
                // Take in what the kernel did up to now, then ask it for its count.
                reader.catch_up();
                let kernel = kernel_count(&self.args.ports)?;
                let sample = verify.sample(reader.tracker().timewait_gauge(), kernel);
                match self.args.format {
                    Format::Jsonl => {
                        writeln!(self.out, "{}", serde_json::json!({ "verify": sample }))?
                    }
                    Format::Text => note!("{}", sample.line()),
                }
                self.out.flush()?;
            } else if self.live {
                let line = live_line(reader.tracker(), reader.probe().lost_events());
                match reader.tracker().table() {
                    Some(table) => {
                        // Redraws the table in place: up to its first line, clear below.
                        let mut text = String::new();
                        if self.live_lines > 0 {
                            text.push_str(&format!("\x1b[{}F\x1b[J", self.live_lines));
                        }
                        let lines =
                            trace_by::lines(table, usize::from(self.args.top), &mut self.namer);
                        self.live_lines = lines.len() + 1;
                        text.push_str(&line);
                        for l in lines {
                            text.push('\n');
                            text.push_str(&l);
                        }
                        text.push('\n');
                        let _ = write!(std::io::stderr(), "{text}");
                    }
                    None => {
                        let _ = write!(std::io::stderr(), "\r{line}");
                    }
                }
            }
        }
        if self.interrupts.hangups() > 0 {
            self.say("SIGHUP: still tracing (trace reloads nothing; SIGINT or SIGTERM stops it)");
        }
        // A closed stdout ends a trace that writes there: nobody would see the records.
        Ok(!self.interrupts.arrived()
            && self.deadline.is_none_or(|d| Instant::now() < d)
            && !(self.args.format == Format::Jsonl && self.out.get_ref().is_closed()))
    }

    fn lost(&mut self, warning: &str) {
        self.say(warning);
    }
}

/// A connection record as `--format jsonl` writes it: with each end's owner named.
#[derive(serde::Serialize)]
struct RecordLine<'a> {
    #[serde(flatten)]
    record: &'a ConnRecord,
    client_owner: Option<Named>,
    server_owner: Option<Named>,
}

fn live_line(tracker: &Tracker, lost: u64) -> String {
    let totals = tracker.totals();
    let done: u64 = totals.closer.values().sum();
    let tw = |s: Side| totals.time_wait.get(&s).map_or(0, |t| t.current);
    format!(
        "connections {done:>9}   TIME_WAIT client {:>7} server {:>7}   lost {lost}",
        tw(Side::Client),
        tw(Side::Server)
    )
}

fn write_summary(out: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    writeln!(out, "connections: {}", s.connections)?;
    for (closer, n) in &s.closer {
        writeln!(out, "  {closer:<13} {n}")?;
    }
    if s.time_wait.available {
        writeln!(out, "TIME_WAIT      client     server")?;
        let (c, v) = (&s.time_wait.client, &s.time_wait.server);
        for (name, a, b) in [
            ("entered", c.entered, v.entered),
            ("peak", c.peak, v.peak),
            ("expired", c.expired, v.expired),
            ("reused", c.reused, v.reused),
            ("reused old", c.reused_older, v.reused_older),
            ("killed", c.killed, v.killed),
            ("overflow", c.overflow, v.overflow),
            ("open", c.open, v.open),
            ("p50 ms", c.duration_ms.p50, v.duration_ms.p50),
            ("p99 ms", c.duration_ms.p99, v.duration_ms.p99),
            ("max ms", c.duration_ms.max, v.duration_ms.max),
        ] {
            writeln!(out, "  {name:<10} {a:>8} {b:>10}")?;
        }
        let (c, v) = (&s.time_wait.fin_wait2.client, &s.time_wait.fin_wait2.server);
        if c.entered + v.entered > 0 {
            writeln!(out, "FIN_WAIT2      client     server")?;
            for (name, a, b) in [
                ("entered", c.entered, v.entered),
                ("peak", c.peak, v.peak),
                ("expired", c.expired, v.expired),
                ("killed", c.killed, v.killed),
                ("to TW", c.to_time_wait, v.to_time_wait),
                ("open", c.open, v.open),
            ] {
                writeln!(out, "  {name:<10} {a:>8} {b:>10}")?;
            }
        }
        if s.time_wait.unmatched > 0 {
            writeln!(
                out,
                "  ({} more of connections opened before the trace)",
                s.time_wait.unmatched
            )?;
        }
    } else {
        writeln!(out, "TIME_WAIT: unavailable")?;
    }
    if s.lost_events > 0 {
        writeln!(out, "lost events: {} ({LOSS_UNCERTAIN})", s.lost_events)?;
    } else {
        writeln!(out, "lost events: 0")?;
    }
    writeln!(
        out,
        "skipped events: {} (tracepoint hits that interrupted the probe's programs and were lost)",
        s.skipped_events
    )?;
    writeln!(
        out,
        "read errors: {} (failed kernel reads, each dropping its event)",
        s.read_errors
    )
}

/// The kernel's timewait sockets of this namespace, limited to `ports` if any are given.
fn kernel_timewait(ports: &[u16]) -> anyhow::Result<Vec<TwSocket>> {
    let mut list = diag::timewait_sockets()?;
    if !ports.is_empty() {
        list.retain(|tw| ports.contains(&tw.local.port()) || ports.contains(&tw.remote.port()));
    }
    Ok(list)
}

/// The kernel's count of timewait sockets in the probe's scope. Without a port filter the
/// sockstat counter is exact and cheap; with one, only a dump can filter.
fn kernel_count(ports: &[u16]) -> anyhow::Result<u64> {
    Ok(if ports.is_empty() {
        diag::sockstat_tw()?
    } else {
        kernel_timewait(ports)?.len() as u64
    })
}

/// The probe's TIME_WAIT gauge against the kernel's count, second by second.
#[derive(Default)]
struct Verify {
    started: Option<Instant>,
    samples: u64,
    max_abs_diff: u64,
    max_abs_diff_pct: f64,
}

#[derive(serde::Serialize)]
struct VerifySample {
    elapsed_s: u64,
    probe: u64,
    kernel: u64,
    diff: i64,
    diff_pct: f64,
}

#[derive(serde::Serialize)]
struct VerifyResult {
    samples: u64,
    max_abs_diff: u64,
    max_abs_diff_pct: f64,
}

impl Verify {
    fn sample(&mut self, probe: u64, kernel: u64) -> VerifySample {
        let started = *self.started.get_or_insert_with(Instant::now);
        let diff = probe as i64 - kernel as i64;
        let diff_pct = match (kernel, diff) {
            (_, 0) => 0.0,
            (0, _) => 100.0,
            _ => diff as f64 * 100.0 / kernel as f64,
        };
        self.samples += 1;
        self.max_abs_diff = self.max_abs_diff.max(diff.unsigned_abs());
        self.max_abs_diff_pct = self.max_abs_diff_pct.max(diff_pct.abs());
        VerifySample {
            elapsed_s: started.elapsed().as_secs(),
            probe,
            kernel,
            diff,
            diff_pct,
        }
    }

    fn result(self) -> VerifyResult {
        VerifyResult {
            samples: self.samples,
            max_abs_diff: self.max_abs_diff,
            max_abs_diff_pct: self.max_abs_diff_pct,
        }
    }
}

impl VerifySample {
    fn line(&self) -> String {
        format!(
            "{:>5}s  TIME_WAIT probe {:>8}  kernel {:>8}  diff {:>+6} ({:+.3}%)",
            self.elapsed_s, self.probe, self.kernel, self.diff, self.diff_pct
        )
    }
}
