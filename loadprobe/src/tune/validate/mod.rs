//! `tune validate`: measure whether a sysctl change helps a workload, instead of guessing.
//!
//! Each repetition builds two fresh topologies of network namespaces joined by veth (never
//! loopback, where `tcp_tw_reuse=2` would reuse ports that production never reuses), applies the
//! `--base` sysctls to both and the `--set` sysctls to the tuned one, each in the namespace where
//! it acts ([`settings::PLACEMENTS`]), then runs the same workload in each, baseline first. A
//! fresh pair per repetition means every run starts with an empty TIME_WAIT table, as the first
//! one did. Everything is written from threads inside the topology: the host's own sysctls are
//! never touched (only `--apply`, in the CLI, writes there, through [`apply`]).
//!
//! The namespaces start from the kernel's defaults, not from the host's values: `--base` is how
//! to model the host.

pub mod apply;
pub mod expect;
mod lock;
pub mod settings;
pub mod text;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::driver::{DriverConfig, Stop};
use crate::model::Mode;

use crate::model::Workload;

use crate::model::Live;
use crate::model::Side;
use crate::probe::{Netns, ProbeError};
use crate::report::{MergeError, PendingOutput, ReportError, RunRecord, merge};
use crate::run::ProbePlan;
use crate::run::RunError;
use crate::server::ServerError;
use crate::tune::TuneError;
use crate::tune::hosts::{self, HostRun, HostRunError};
use crate::tune::netns::{self, Topology};
use crate::tune::verdict::{self, MetricDelta, Verdict};

pub use expect::Expectation;
pub use settings::Setting;

/// Schema of validate.json.
pub const SCHEMA: &str = "loadprobe.validate/1";
/// Namespace prefix when none is given: `lpv-a-c`, `lpv-a-s` (baseline), `lpv-b-*` (tuned).
pub const DEFAULT_PREFIX: &str = "lpv";

/// Why a validation could not be done. Each is one line.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("{flag} expects KEY=VALUE, got {given:?}")]
    Syntax { flag: String, given: String },
    #[error("{flag}: {key} is given twice")]
    Twice { flag: String, key: String },
    #[error(
        "{0} is not a network sysctl: only net.* sysctls can be per network namespace, and \
         writing {0} from inside one would change the host"
    )]
    NotNetwork(String),
    #[error("unknown sysctl {key}: this kernel has no such file under /proc/sys{hint}")]
    Unknown { key: String, hint: String },
    #[error(
        "{0} is not per network namespace (a fresh namespace lacks it or may only read it), so \
         it cannot be validated in isolation"
    )]
    NotPerNetns(String),
    #[error(
        "another `tune validate` is using the namespace prefix {0}; wait for it, or pass \
         another --netns-prefix"
    )]
    Busy(String),
    #[error("locking {path}: {error}")]
    Lock { path: String, error: io::Error },
    #[error("interrupted; the namespaces were removed")]
    Interrupted,
    #[error("tune validate needs the eBPF probe (TIME_WAIT end reasons)")]
    Probe(#[source] ProbeError),
    #[error(transparent)]
    Tune(#[from] TuneError),
    #[error(transparent)]
    Run(RunError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("starting an async runtime: {0}")]
    Runtime(io::Error),
    #[error("starting a thread: {0}")]
    Thread(io::Error),
    #[error("cannot create {path}")]
    OutputDir {
        path: String,
        #[source]
        error: io::Error,
    },
    #[error("merging the repetitions: {0}")]
    Merge(#[from] MergeError),
    #[error("cannot serialize validate.json: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<HostRunError> for ValidateError {
    fn from(e: HostRunError) -> ValidateError {
        match e {
            HostRunError::Tune(e) => ValidateError::Tune(e),
            HostRunError::Run(e) => e.into(),
            HostRunError::Server(e) => ValidateError::Server(e),
            HostRunError::Runtime(e) => ValidateError::Runtime(e),
            HostRunError::Thread(e) => ValidateError::Thread(e),
        }
    }
}

impl From<RunError> for ValidateError {
    fn from(e: RunError) -> ValidateError {
        match e {
            RunError::Probe(p) => ValidateError::Probe(p),
            e => ValidateError::Run(e),
        }
    }
}

/// What to validate.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Applied to both topologies.
    pub base: Vec<Setting>,
    /// Applied to the tuned topology, after `base`.
    pub set: Vec<Setting>,
    /// The workload; its target is replaced by each topology's server.
    pub config: DriverConfig,
    /// Repetitions of the baseline/tuned pair (at least 1).
    pub repeat: u32,
    /// Namespaces are `<prefix>-a-{c,s}` and `<prefix>-b-{c,s}`.
    pub prefix: String,
}

/// The variant of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Baseline,
    Tuned,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline",
            Variant::Tuned => "tuned",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Variant::Baseline => "a",
            Variant::Tuned => "b",
        }
    }
}

/// Sysctl values read back in one topology (after the writes), per namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TopologySysctls {
    pub client: BTreeMap<String, String>,
    pub server: BTreeMap<String, String>,
}

/// What the workload was, for validate.json.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkloadSummary {
    pub mode: Mode,
    pub model: String,
    pub rate: Option<f64>,
    pub users: Option<u32>,
    pub duration_s: Option<f64>,
    pub repeat: u32,
}

/// Host values replaced by `--apply`, and how to undo it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Applied {
    /// (key, old value, new value).
    pub changes: Vec<(String, String, String)>,
    pub rollback: String,
}

/// The result: validate.json, plus the records it was judged from.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub schema: &'static str,
    pub verdict: Verdict,
    /// One sentence.
    pub reason: String,
    pub workload: WorkloadSummary,
    pub base: Vec<Setting>,
    pub set: Vec<Setting>,
    /// What each expectation of each `--set` looked like in the runs.
    pub expectations: Vec<Expectation>,
    /// Per-metric deltas (per-run means), each judged against noise.
    pub metrics: Vec<MetricDelta>,
    pub sysctls: BTreeMap<&'static str, TopologySysctls>,
    /// Filled by `--apply` when it wrote the host's sysctls.
    pub applied: Option<Applied>,
    #[serde(skip)]
    pub baseline: Vec<RunRecord>,
    #[serde(skip)]
    pub tuned: Vec<RunRecord>,
}

/// Runs the validation. `stop` ends it early (the caller wires SIGINT/SIGTERM to it): the run
/// in progress winds down, the namespaces are removed, and [`ValidateError::Interrupted`] comes
/// back. `progress` gets one line per run and warnings.
pub fn validate(
    plan: &Plan,
    stop: &Stop,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Outcome, ValidateError> {
    settings::check_all("baseline settings", &plan.base)?;
    settings::check_all("tuned settings", &plan.set)?;
    if !netns::has_cap_sys_admin() {
        return Err(TuneError::NeedsRoot.into());
    }
    check_prefix(&plan.prefix)?;
    let prefixes =
        [Variant::Baseline, Variant::Tuned].map(|v| format!("{}-{}", plan.prefix, v.suffix()));
    let _lock = lock::lock(&plan.prefix)?;
    for prefix in &prefixes {
        for name in netns::cleanup_stale(prefix)? {
            progress(&format!(
                "removed network namespace {name}, left by an earlier run"
            ));
        }
    }
    let port = hosts::server_port();
    let repeat = plan.repeat.max(1);
    let (mut baseline, mut tuned) = (Vec::new(), Vec::new());
    let mut sysctls = BTreeMap::new();
    for rep in 1..=repeat {
        // Both are built (and their sysctls checked) before either runs, so a bad --set fails
        // before any load.
        let a = prepare(plan, Variant::Baseline, &prefixes[0])?;
        let b = prepare(plan, Variant::Tuned, &prefixes[1])?;
        if rep == 1 {
            sysctls.insert("baseline", read_back(plan, &a)?);
            sysctls.insert("tuned", read_back(plan, &b)?);
        }
        for (variant, topology) in [(Variant::Baseline, a), (Variant::Tuned, b)] {
            if stop.is_stopped() {
                return Err(ValidateError::Interrupted);
            }
            progress(&format!(
                "{} {rep}/{repeat}: {} over veth {} -> {}:{port}",
                variant.as_str(),
                describe(&plan.config),
                topology.client_addr(),
                topology.server_addr(),
            ));
            let record = hosts::run(
                &topology,
                &plan.config,
                port,
                HostRun {
                    probe: ProbePlan::Require(Netns::All),
                    live: Arc::new(Live::default()),
                    stop,
                    warn: progress,
                },
            )?;
            drop(topology);
            if stop.is_stopped() {
                return Err(ValidateError::Interrupted);
            }
            match variant {
                Variant::Baseline => baseline.push(record),
                Variant::Tuned => tuned.push(record),
            }
        }
    }
    let judgement = verdict::judge(&baseline, &tuned);
    let expectations = expect::expectations(&plan.set, &judgement.metrics, &baseline, &tuned);
    Ok(Outcome {
        schema: SCHEMA,
        verdict: judgement.verdict,
        reason: judgement.reason,
        workload: summary(&plan.config, repeat),
        base: plan.base.clone(),
        set: plan.set.clone(),
        expectations,
        metrics: judgement.metrics,
        sysctls,
        applied: None,
        baseline,
        tuned,
    })
}

/// The prefix becomes namespace names (`<prefix>-a-c`, within the topology's limits) and a lock
/// file name: the topology's own check, applied to the longest prefix it will be given.
fn check_prefix(prefix: &str) -> Result<(), ValidateError> {
    Ok(super::netns::validate_prefix(&format!("{prefix}-a"))?)
}

/// A fresh topology for `variant` with its sysctls written.
fn prepare(plan: &Plan, variant: Variant, prefix: &str) -> Result<Topology, ValidateError> {
    let topology = Topology::create(prefix)?;
    let mut list: Vec<&Setting> = plan.base.iter().collect();
    if variant == Variant::Tuned {
        list.extend(&plan.set);
    }
    settings::apply(&topology, &list)?;
    Ok(topology)
}

fn read_back(plan: &Plan, topology: &Topology) -> Result<TopologySysctls, ValidateError> {
    let keys: Vec<&str> = plan
        .base
        .iter()
        .chain(&plan.set)
        .map(|s| s.key.as_str())
        .collect();
    let read = |host| -> Result<BTreeMap<_, _>, ValidateError> {
        Ok(settings::read_all(topology, host, &keys)?
            .into_iter()
            .collect())
    };
    Ok(TopologySysctls {
        client: read(Side::Client)?,
        server: read(Side::Server)?,
    })
}

fn describe(c: &DriverConfig) -> String {
    let load = match c.workload {
        Workload::Open { rate, .. } => format!("{rate}/s"),
        Workload::Closed { users, .. } => format!("{users} users"),
    };
    let how_long = match (c.duration, c.requests) {
        (Some(d), _) => format!(" for {}s", d.as_secs_f64()),
        (None, Some(n)) => format!(" for {n} requests"),
        (None, None) => String::new(),
    };
    format!("{} at {load}{how_long}", c.mode)
}

fn summary(c: &DriverConfig, repeat: u32) -> WorkloadSummary {
    let (model, rate, users) = match c.workload {
        Workload::Open { rate, .. } => ("open", Some(rate), None),
        Workload::Closed { users, .. } => ("closed", None, Some(users)),
    };
    WorkloadSummary {
        mode: c.mode,
        model: model.to_string(),
        rate,
        users,
        duration_s: c.duration.map(|d| d.as_secs_f64()),
        repeat,
    }
}

/// The files `--output-dir` gets: `baseline.json` and `tuned.json` (the repetitions merged),
/// with `--repeat` also `baseline-N.json` and `tuned-N.json` for each, and `validate.json`.
/// Reserved before the runs ([`PendingOutput`]), so a folder that cannot be written fails
/// before any namespace is made or any load is applied.
pub struct Outputs {
    dir: PathBuf,
    files: BTreeMap<String, PendingOutput>,
    /// The folder did not exist before: removed again if nothing is written.
    created: bool,
    written: bool,
}

impl Outputs {
    pub fn create(dir: &Path, repeat: u32) -> Result<Outputs, ValidateError> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|error| ValidateError::OutputDir {
            path: dir.display().to_string(),
            error,
        })?;
        let mut names = vec!["validate.json".to_string()];
        for name in ["baseline", "tuned"] {
            names.push(format!("{name}.json"));
            if repeat > 1 {
                names.extend((1..=repeat).map(|i| format!("{name}-{i}.json")));
            }
        }
        let mut outputs = Outputs {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            created,
            written: false,
        };
        for name in names {
            let file = PendingOutput::create(&dir.join(&name))?;
            outputs.files.insert(name, file);
        }
        Ok(outputs)
    }

    /// Writes the outcome's files; returns their paths. Files reserved for repetitions that
    /// did not happen are not written (dropped, they leave nothing behind).
    pub fn write(mut self, outcome: &Outcome) -> Result<Vec<String>, ValidateError> {
        let mut written = Vec::new();
        for (name, records) in [("baseline", &outcome.baseline), ("tuned", &outcome.tuned)] {
            written.push(self.file(format!("{name}.json"))?.write(&merge(records)?)?);
            if records.len() > 1 {
                for (i, record) in records.iter().enumerate() {
                    written.push(self.file(format!("{name}-{}.json", i + 1))?.write(record)?);
                }
            }
        }
        written.push(self.file("validate.json".to_string())?.write(outcome)?);
        self.written = true;
        Ok(written)
    }

    fn file(&mut self, name: String) -> Result<PendingOutput, ReportError> {
        match self.files.remove(&name) {
            Some(file) => Ok(file),
            None => PendingOutput::create(&self.dir.join(name)),
        }
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        // The temporary files go first (dropped), then the folder if this made it and it is
        // empty (remove_dir fails otherwise).
        self.files.clear();
        if self.created && !self.written {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests;
