//! `loadprobe report RECORD.json`: the report of one recorded run, as the text `run` printed,
//! as Markdown, or as one HTML page with charts.
//!
//! Exit codes: 0 when the report was written, 2 for unusable input (a missing, unreadable or
//! broken record) or an output that cannot be written.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use loadprobe::compare::{Run, labels, read_record};
use loadprobe::report::PendingOutput;
use loadprobe::report::render_text;
use loadprobe::run_report::{RunReport, html, markdown};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run record (written by `run --output`, `run --repeat` or `merge`).
    #[arg(value_name = "RECORD.json")]
    record: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the report to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Text,
    Markdown,
    Html,
}

pub fn main(args: ReportArgs) -> anyhow::Result<ExitCode> {
    // The error already names the file and the problem, in one line.
    let record = read_record(&args.record)?;
    let label = labels(std::slice::from_ref(&args.record)).remove(0);
    let report = match args.format {
        Format::Text => render_text(&record),
        Format::Markdown => markdown::render(&RunReport::new(Run::new(label, record))),
        Format::Html => html::render(&RunReport::new(Run::new(label, record))),
    };
    match &args.output {
        Some(path) => drop(PendingOutput::create(path)?.write_bytes(report.as_bytes())?),
        None => print!("{report}"),
    }
    Ok(ExitCode::SUCCESS)
}
