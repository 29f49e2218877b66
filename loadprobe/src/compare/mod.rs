//! `loadprobe compare`: run records side by side, the change of every metric from the first
//! (the base), whether each change stands out from the noise, and CI gates.
//!
//! The pieces: [`read_record`] turns a file into a record or one clear error line; metrics are
//! addressed by record path ([`metrics`]), the same for table rows and `--fail-if` gates
//! ([`gate`]); [`noise`] judges changes from repetitions; [`Comparison`] holds everything a
//! report shows, and the renderers ([`text`], [`markdown`], [`html`]) only lay it out.

pub mod gate;
pub mod headline;
pub mod html;
pub mod markdown;
pub mod metrics;
pub mod noise;
mod read;
pub mod rows;
pub mod text;

#[cfg(test)]
mod tests;

use serde_json::Value;

pub use gate::{Gate, GateError};
pub use read::{RecordError, parse_record, read_record};

use crate::report::RunRecord;
use headline::Headline;
use rows::Section;

/// One record in the comparison.
#[derive(Debug, Clone)]
pub struct Run {
    /// How the report names it (the file name, unless two files share one).
    pub label: String,
    pub record: RunRecord,
    /// The record as JSON, which metric paths address.
    pub json: Value,
}

impl Run {
    pub fn new(label: impl Into<String>, record: RunRecord) -> Run {
        let json = metrics::record_json(&record);
        Run {
            label: label.into(),
            record,
            json,
        }
    }

    /// The value of `path` in each repetition of the run (none for a single run).
    pub fn repetition_values(&self, path: &str) -> Vec<f64> {
        self.record
            .repetitions
            .iter()
            .flatten()
            .filter_map(|rep| metrics::repetition_value(rep, path))
            .collect()
    }
}

/// One gate checked on one non-base run.
#[derive(Debug, Clone, PartialEq)]
pub struct GateCheck {
    /// The gate as written back: `throughput.rps < -5%`.
    pub gate: String,
    pub run: String,
    pub failed: bool,
    pub detail: String,
}

/// Everything a report shows, computed once for all formats.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The base first.
    pub runs: Vec<Run>,
    /// One line per run: mode, target, load, duration, repetitions.
    pub descriptions: Vec<String>,
    /// Setup differences (mode, target, …), one sentence each; empty when alike.
    pub differences: Vec<String>,
    pub headline: Headline,
    pub sections: Vec<Section>,
    /// Empty when no gates were given.
    pub gates: Vec<GateCheck>,
}

impl Comparison {
    /// Compares `runs` (at least two; the first is the base) and checks `gates` on every
    /// non-base run. An error only for a gate that names no metric.
    pub fn new(runs: Vec<Run>, gates: &[Gate]) -> Result<Comparison, GateError> {
        let mut checks = Vec::new();
        if let Some((base, others)) = runs.split_first() {
            for gate in gates {
                for other in others {
                    let e = gate.evaluate(&base.json, &other.json)?;
                    checks.push(GateCheck {
                        gate: gate.to_string(),
                        run: other.label.clone(),
                        failed: e.failed,
                        detail: e.detail,
                    });
                }
            }
        }
        let (differences, headline, sections) = if runs.is_empty() {
            (
                Vec::new(),
                headline::Headline {
                    verdicts: Vec::new(),
                    lines: Vec::new(),
                },
                Vec::new(),
            )
        } else {
            (
                headline::differences(&runs),
                headline::headline(&runs),
                rows::sections(&runs),
            )
        };
        Ok(Comparison {
            descriptions: runs.iter().map(headline::describe).collect(),
            differences,
            headline,
            sections,
            gates: checks,
            runs,
        })
    }

    /// Any gate failed.
    pub fn failed(&self) -> bool {
        self.gates.iter().any(|g| g.failed)
    }
}

/// Labels for the files: their names, or their whole paths where two names are the same.
pub fn labels(paths: &[std::path::PathBuf]) -> Vec<String> {
    let name = |p: &std::path::PathBuf| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let names: Vec<String> = paths.iter().map(name).collect();
    paths
        .iter()
        .zip(&names)
        .map(|(p, n)| {
            if names.iter().filter(|m| *m == n).count() > 1 {
                p.display().to_string()
            } else {
                n.clone()
            }
        })
        .collect()
}
