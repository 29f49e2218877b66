//! `loadprobe trace`: watch TCP connections and report who closed each one and how long its
//! TIME_WAIT socket lived.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};

use loadprobe::probe::summary::Summary;
use loadprobe::probe::track::{ConnRecord, Side, Tracker};
use loadprobe::probe::{Netns, Probe, ProbeOptions, monotonic_ns};

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

    let mut tracker = Tracker::new(probe.timewait_unavailable().is_none());
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let live = args.format == Format::Text && std::io::stderr().is_terminal();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut last_view = Instant::now();
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        probe.poll(Duration::from_millis(100), |e| tracker.event(e))?;
        tracker.tick(monotonic_ns());
        emit(&mut out, args.format, tracker.drain())?;
        if live && last_view.elapsed() >= Duration::from_secs(1) {
            last_view = Instant::now();
            eprint!("\r{}", live_line(&tracker, probe.lost_events()));
        }
    }
    // Events already in the ring buffer belong to this trace.
    probe.poll(Duration::ZERO, |e| tracker.event(e))?;
    tracker.flush(monotonic_ns());
    emit(&mut out, args.format, tracker.drain())?;
    if live {
        eprintln!();
    }
    let summary = Summary::new(
        tracker.totals(),
        probe.lost_events(),
        probe.timewait_unavailable(),
    );
    match args.format {
        Format::Jsonl => writeln!(out, "{}", serde_json::json!({ "summary": summary }))?,
        Format::Text => write_summary(&mut out, &summary)?,
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
    } else {
        writeln!(out, "TIME_WAIT: unavailable")?;
    }
    writeln!(out, "lost events: {}", s.lost_events)
}
