//! `loadprobe trace`: watch TCP connections and report who closed each one and how long its
//! TIME_WAIT socket lived.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};

use loadprobe::diag::{self, TwSocket};
use loadprobe::probe::summary::Summary;
use loadprobe::probe::track::{ConnRecord, Side, Tracker};
use loadprobe::probe::{Netns, Probe, ProbeOptions};

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// Only connections with either end on this port (repeatable).
    #[arg(long = "port", value_name = "P")]
    ports: Vec<u16>,
    /// Every network namespace, not just the one loadprobe runs in.
    #[arg(long)]
    all_netns: bool,
    /// Stop after this many seconds (default: at Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Every second, compare the probe's TIME_WAIT gauge with the kernel's own count
    /// (sock_diag, /proc/net/sockstat) and report the difference.
    #[arg(long, conflicts_with = "all_netns")]
    verify: bool,
    /// Print every raw kernel event to stderr (for debugging the probe).
    #[arg(long, hide = true)]
    debug_events: bool,
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
        timewait: true,
        records: true,
        floor: None,
    };
    let mut probe = Probe::attach(&options)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handler")?;
    }
    if let Some(reason) = probe.timewait_unavailable() {
        eprintln!("loadprobe: TIME_WAIT tracking unavailable ({reason}); closers only");
    }
    let mut tracker = Tracker::new(probe.timewait_unavailable().is_none());
    let mut verify = match (args.verify, probe.timewait_unavailable()) {
        (false, _) => None,
        (true, Some(reason)) => {
            anyhow::bail!("--verify needs TIME_WAIT tracking, which is unavailable: {reason}")
        }
        (true, None) => {
            // What existed before the probe: the kernel's list, read once the probe is attached.
            probe.poll(Duration::ZERO, |e| tracker.event(e));
            let before = kernel_timewait(&args.ports)?;
            tracker.set_baseline(before.into_iter().map(|tw| (tw.local, tw.remote)));
            Some(Verify::default())
        }
    };
    let scope = if args.all_netns {
        "all network namespaces".to_string()
    } else {
        format!("network namespace {}", probe.netns())
    };
    let ports = if args.ports.is_empty() {
        String::new()
    } else {
        format!(", ports {:?}", args.ports)
    };
    eprintln!("loadprobe: tracing TCP connections in {scope}{ports}; Ctrl-C to stop");

    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let live = args.format == Format::Text && std::io::stderr().is_terminal();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut last_second = Instant::now();
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        let upto = probe.poll(Probe::DRAIN_EVERY, |e| {
            if args.debug_events {
                eprintln!("{e:?}");
            }
            tracker.event(e)
        });
        tracker.tick(upto);
        emit(&mut out, args.format, tracker.drain())?;
        if last_second.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last_second = Instant::now();
        if let Some(verify) = &mut verify {
            // Take in what the kernel did up to now, then ask it for its count.
            let upto = probe.poll(Duration::ZERO, |e| tracker.event(e));
            tracker.tick(upto);
            let sample = verify.sample(tracker.timewait_gauge(), kernel_count(&args.ports)?);
            match args.format {
                Format::Jsonl => writeln!(out, "{}", serde_json::json!({ "verify": sample }))?,
                Format::Text => eprintln!("{}", sample.line()),
            }
            out.flush()?;
        } else if live {
            eprint!("\r{}", live_line(&tracker, probe.lost_events()));
        }
    }
    // Events already in the ring buffer belong to this trace.
    let upto = probe.poll(Duration::ZERO, |e| tracker.event(e));
    tracker.flush(upto);
    emit(&mut out, args.format, tracker.drain())?;
    if live && verify.is_none() {
        eprintln!();
    }
    let mut summary = Summary::new(
        tracker.totals(),
        probe.lost_events(),
        probe.timewait_unavailable(),
    );
    summary.skipped_events = probe.skipped_events();
    let verify = verify.map(Verify::result);
    match args.format {
        Format::Jsonl => {
            let mut value = serde_json::json!({ "summary": summary });
            if let Some(v) = &verify {
                value["summary"]["verify"] = serde_json::to_value(v)?;
            }
            writeln!(out, "{value}")?;
        }
        Format::Text => {
            write_summary(&mut out, &summary)?;
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
    Ok(ExitCode::SUCCESS)
}

fn emit(
    out: &mut impl Write,
    format: Format,
    records: impl Iterator<Item = ConnRecord>,
) -> anyhow::Result<()> {
    for record in records {
        match format {
            Format::Jsonl => writeln!(out, "{}", serde_json::to_string(&record)?)?,
            // The text view is the summary; per-connection lines would flood a terminal.
            Format::Text => {}
        }
    }
    Ok(())
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
            ("killed", c.killed, v.killed),
            ("overflow", c.overflow, v.overflow),
            ("open", c.open, v.open),
            ("p50 ms", c.duration_ms.p50, v.duration_ms.p50),
            ("p99 ms", c.duration_ms.p99, v.duration_ms.p99),
            ("max ms", c.duration_ms.max, v.duration_ms.max),
        ] {
            writeln!(out, "  {name:<10} {a:>8} {b:>10}")?;
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
    writeln!(out, "lost events: {}", s.lost_events)?;
    writeln!(
        out,
        "skipped events: {} (tracepoint hits that interrupted the probe's programs and were lost)",
        s.skipped_events
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
