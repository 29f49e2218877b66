//! `loadprobe compare BASE.json OTHER.json...`: the runs side by side with the change of every
//! metric from the base, as text, Markdown or HTML, and `--fail-if` gates for CI.
//!
//! Exit codes: 0 when every gate passed (or none were given), 1 when a gate failed (listed on
//! stderr), 2 for unusable input (a missing or broken record, a gate naming no metric).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use loadprobe::compare::{Comparison, Gate, Run, html, labels, markdown, read_record, text};
use loadprobe::report::PendingOutput;

use super::exit;
use super::out::{Stdout, note};

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The base record, then the records to compare with it (written by `run --output`).
    #[arg(value_name = "RECORD.json", required = true, num_args = 2..)]
    records: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the report to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Exit 1 when EXPR holds for any run against the base (repeatable). EXPR is
    /// 'PATH OP VALUE': PATH a record path (throughput.rps, latency_us.total.p99,
    /// time_wait.server.peak, connections.closer.server, requests.errors.EADDRNOTAVAIL, …), OP
    /// one of < <= > >= == !=, VALUE a number (the run's value), +N% or -N% (change from the
    /// base), or N% for closer and request shares. E.g. 'throughput.rps < -5%'.
    #[arg(long = "fail-if", value_name = "EXPR", value_parser = parse_gate)]
    fail_if: Vec<Gate>,
    /// Colours in the text report: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, value_enum, default_value = "auto")]
    color: Color,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Text,
    Markdown,
    Html,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

fn parse_gate(s: &str) -> Result<Gate, String> {
    s.parse()
        .map_err(|e: loadprobe::compare::GateError| e.to_string())
}

pub fn main(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let output = args
        .output
        .as_deref()
        .map(PendingOutput::create)
        .transpose()?;
    let names = labels(&args.records);
    let mut runs = Vec::with_capacity(args.records.len());
    for (path, label) in args.records.iter().zip(names) {
        // The error already names the file and the problem, in one line.
        runs.push(Run::new(label, read_record(path)?));
    }
    let comparison = Comparison::new(runs, &args.fail_if).map_err(super::flags::gate_error)?;
    let color = match args.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            args.output.is_none()
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let report = match args.format {
        Format::Text => text::render(&comparison, color),
        Format::Markdown => markdown::render(&comparison),
        Format::Html => html::render(&comparison),
    };
    match output {
        Some(output) => drop(output.write_bytes(report.as_bytes())?),
        None => {
            let mut out = Stdout::new();
            out.write_all(report.as_bytes())?;
            out.flush()?;
        }
    }
    let failed: Vec<_> = comparison.gates.iter().filter(|g| g.failed).collect();
    for g in &failed {
        note!(
            "loadprobe: gate failed: {} ({}: {})",
            g.gate,
            g.run,
            g.detail
        );
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::CHECK_FAILED)
    })
}
