//! `loadprobe report`: the report of one run from its record, in the formats people pass on:
//! the text `run` prints ([`crate::report::render_text`]), Markdown for tickets and pull
//! requests ([`markdown`]), and one self-contained HTML page with the charts ([`html`]).
//!
//! Every format shows the same things, computed here once: the verdict in words, the summary
//! lines of the text report, and, where the record has them, a table of each repetition's
//! figures (`run --repeat`) and one of the records it was merged from (per host).

pub mod html;
pub mod markdown;

use std::path::Path;

use crate::compare::headline::{self, run_verdict};
use crate::compare::{Run, labels};
use crate::format::number;
use crate::report::{RunRecord, Summary, merge::headline_metrics, summary};

/// The figures each repetition shows: record path and column heading.
const REPETITION_FIGURES: [(&str, &str); 8] = [
    ("requests.total", "requests"),
    ("throughput.rps", "req/s"),
    ("requests.errors", "errors"),
    ("latency_us.total.p50", "p50 µs"),
    ("latency_us.total.p99", "p99 µs"),
    ("connections.closer.client", "client closed"),
    ("time_wait.client.peak", "TIME_WAIT client peak"),
    ("time_wait.server.peak", "TIME_WAIT server peak"),
];

/// A table as every format lays it out: a title, column headings, rows of cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub title: String,
    pub head: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Everything a report of one run shows, for any format.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run: Run,
    /// "TIME_WAIT on the client, 14,210 at peak, …".
    pub verdict: String,
    /// What the run was: mode, target, load, duration, repetitions.
    pub description: String,
    /// The text report's lines.
    pub summary: Summary,
    /// compare's headline lines for this run alone (closer shares, throughput, p99, errors).
    pub lines: Vec<(String, String)>,
    /// Per repetition and per merged record, where the record has them.
    pub tables: Vec<Table>,
}

impl RunReport {
    pub fn new(run: Run) -> RunReport {
        let runs = std::slice::from_ref(&run);
        // With one run there is nothing to tell from noise: compare's noise line says only that.
        let lines = headline::headline(runs)
            .lines
            .into_iter()
            .filter(|(label, _)| label != "noise")
            .collect();
        RunReport {
            verdict: run_verdict(&run),
            description: headline::describe(&run),
            summary: summary(&run.record),
            lines,
            tables: [repetitions(&run), merged(&run)]
                .into_iter()
                .flatten()
                .collect(),
            run,
        }
    }
}

/// Each repetition's figures, one row per repetition; none for a single run.
fn repetitions(run: &Run) -> Option<Table> {
    let reps = run.record.repetitions.as_ref().filter(|r| !r.is_empty())?;
    let mut head = vec!["repetition".to_string()];
    head.extend(REPETITION_FIGURES.iter().map(|(_, h)| h.to_string()));
    let rows = reps
        .iter()
        .enumerate()
        .map(|(i, rep)| {
            let mut row = vec![(i + 1).to_string()];
            row.extend(
                REPETITION_FIGURES
                    .iter()
                    .map(|(path, _)| rep.get(*path).map_or("n/a".into(), |v| number(*v))),
            );
            row
        })
        .collect::<Vec<_>>();
    let mut rows = rows;
    // The merged whole under its parts, read from the record the same way.
    let whole = headline_metrics(&run.record);
    let mut total = vec!["all".to_string()];
    total.extend(
        REPETITION_FIGURES
            .iter()
            .map(|(path, _)| whole.get(*path).map_or("n/a".into(), |v| number(*v))),
    );
    rows.push(total);
    Some(Table {
        title: format!("Repetitions ({})", reps.len()),
        head,
        rows,
    })
}

/// The records a merged record was made from (each host's, or each run's of a sequence), with
/// when each started relative to the first; none for a record that was not merged.
fn merged(run: &Run) -> Option<Table> {
    let parts = &run.record.merged_from;
    let first = parts.iter().map(|p| p.started_at_unix_ms).min()?;
    let head = [
        "record", "started", "measured", "target", "requests", "kernel",
    ]
    .map(String::from)
    .to_vec();
    let rows = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            vec![
                (i + 1).to_string(),
                format!("+{:.1} s", (p.started_at_unix_ms - first) as f64 / 1e3),
                format!("{:.1} s", p.duration_s),
                p.target.clone(),
                number(p.requests as f64),
                p.kernel.release.clone(),
            ]
        })
        .collect();
    Some(Table {
        title: format!("Merged from {} records", parts.len()),
        head,
        rows,
    })
}

/// The HTML page of `record`, as `run --html` leaves it: named after the record's file where
/// one was written (as `report` names it), else `run`.
pub fn run_page(record_file: Option<&Path>, record: RunRecord) -> String {
    let label = record_file.map_or_else(
        || "run".to_string(),
        |f| labels(&[f.to_path_buf()]).remove(0),
    );
    html::render(&RunReport::new(Run::new(label, record)))
}
