//! `loadprobe merge A.json B.json... -o ALL.json`: records of one workload taken on several
//! hosts (or one after another) as one record, so a test spread over machines reports as one.
//! Counts are summed and histograms merged exactly; see `loadprobe::report::merge`.
//!
//! `-` reads records from standard input, one JSON object per line, as the segments of a
//! Kubernetes Job print them (`kubectl logs -l job-name=… --prefix=false | loadprobe merge -`);
//! lines that are not records (the text reports beside them) are skipped and counted.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use loadprobe::compare::{parse_record, read_record};
use loadprobe::report::{MergeError, MergeOptions, PendingOutput, merge_with, render_text};

use super::out::Stdout;

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The records to merge (written by `run --output`), two or more in all; `-` reads
    /// records from standard input, one per line.
    #[arg(value_name = "RECORD.json", required = true)]
    records: Vec<PathBuf>,
    /// Where to write the merged record; `-`: to standard output as one line, with the text
    /// report on standard error (as `run -o -`).
    #[arg(long, short = 'o', value_name = "FILE", required = true)]
    output: PathBuf,
    /// Segments of a split workload (`run --segment K/N`): merge the ones there when some are
    /// missing, and say which are missing, instead of refusing.
    #[arg(long)]
    allow_partial: bool,
}

pub fn main(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let to_stdout = args.output.as_os_str() == "-";
    let output = if to_stdout {
        None
    } else {
        Some(PendingOutput::create(&args.output)?)
    };
    let (mut records, mut names, mut skipped) = (Vec::new(), Vec::new(), 0);
    for path in &args.records {
        if path.as_os_str() == "-" {
            let mut text = Vec::new();
            std::io::stdin()
                .read_to_end(&mut text)
                .context("cannot read records from standard input")?;
            for (n, line) in text.split(|&b| b == b'\n').enumerate() {
                let name = format!("standard input, line {}", n + 1);
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                match parse_record(&name, line) {
                    Ok(record) => {
                        records.push(record);
                        names.push(name);
                    }
                    Err(_) => skipped += 1,
                }
            }
        } else {
            records.push(read_record(path)?);
            names.push(path.display().to_string());
        }
    }
    if records.len() < 2 && !records.iter().any(|r| r.segment.is_some()) {
        bail!(
            "cannot merge: {} record(s) found, two or more are needed{}",
            records.len(),
            if skipped > 0 {
                format!(" ({skipped} line(s) of standard input were not records)")
            } else {
                String::new()
            }
        );
    }
    let options = MergeOptions {
        allow_partial: args.allow_partial,
    };
    let merged = merge_with(&records, options).map_err(|e| {
        // Name the files rather than their positions.
        let file = |i: usize| names.get(i).cloned().unwrap_or_default();
        match &e {
            MergeError::SameRun { first, index, run } => anyhow::anyhow!(
                "cannot merge: {} and {} hold the same run ({run}): it would count twice",
                file(*first),
                file(*index)
            ),
            MergeError::SegmentTwice {
                first,
                index,
                segment,
            } => anyhow::anyhow!(
                "cannot merge: {} and {} are both segment {segment}: it would count twice",
                file(*first),
                file(*index)
            ),
            MergeError::Schema { index, .. }
            | MergeError::DifferentWorkload { index, .. }
            | MergeError::SegmentCount { index, .. }
            | MergeError::NotASegment { index, .. }
            | MergeError::Histogram { index, .. } => anyhow::anyhow!(
                "cannot merge: {} (record {index} is {})",
                loadprobe::error_chain::one_line(&e),
                file(*index)
            ),
            MergeError::SegmentsMissing { .. } | MergeError::Empty => {
                anyhow::anyhow!("cannot merge: {e}")
            }
        }
    })?;
    let mut report = render_text(&merged);
    report.push_str(&format!(
        "  merged       {} records into {}\n",
        records.len(),
        if to_stdout {
            "standard output".to_string()
        } else {
            args.output.display().to_string()
        }
    ));
    if skipped > 0 {
        report.push_str(&format!(
            "  skipped      {skipped} line(s) of standard input that were not records\n"
        ));
    }
    let mut out = Stdout::new();
    match output {
        Some(output) => {
            output.write(&merged)?;
            write!(out, "{report}")?;
        }
        None => {
            writeln!(out, "{}", serde_json::to_string(&merged)?)?;
            eprint!("{report}");
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
