//! `loadprobe merge A.json B.json... -o ALL.json`: records of one workload taken on several
//! hosts (or one after another) as one record, so a test spread over machines reports as one.
//! Counts are summed and histograms merged exactly; see `loadprobe::report::merge`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use loadprobe::compare::read_record;
use loadprobe::report::{MergeError, merge, render_text, write_atomic};

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The records to merge (written by `run --output`), two or more.
    #[arg(value_name = "RECORD.json", required = true, num_args = 2..)]
    records: Vec<PathBuf>,
    /// Where to write the merged record.
    #[arg(long, short = 'o', value_name = "FILE", required = true)]
    output: PathBuf,
}

pub fn main(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let records = args
        .records
        .iter()
        .map(|p| read_record(p))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = merge(&records).map_err(|e| {
        // Name the file rather than its position.
        let index = match &e {
            MergeError::Schema { index, .. }
            | MergeError::DifferentWorkload { index, .. }
            | MergeError::Histogram { index, .. } => Some(*index),
            MergeError::Empty => None,
        };
        match index.and_then(|i| args.records.get(i)) {
            Some(file) => anyhow::anyhow!(
                "cannot merge: {e} (record {} is {})",
                index.unwrap_or(0),
                file.display()
            ),
            None => anyhow::anyhow!("cannot merge: {e}"),
        }
    })?;
    write_atomic(&args.output, &merged)?;
    print!("{}", render_text(&merged));
    println!(
        "  merged       {} records into {}",
        records.len(),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
