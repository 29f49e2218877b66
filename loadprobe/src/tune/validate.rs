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
mod hosts;
mod lock;
pub mod settings;
pub mod text;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::Serialize;

use crate::driver::{DriverConfig, Stop, Workload};
use crate::probe::ProbeError;
use crate::report::{MergeError, ReportError, RunRecord, merge, write_atomic};
use crate::run::RunError;
use crate::server::ServerError;
use crate::tune::TuneError;
use crate::tune::netns::{self, Host, Topology};
use crate::tune::verdict::{self, MetricDelta, Verdict};

pub use expect::Expectation;
pub use settings::{Place, Setting};

/// Schema of validate.json.
pub const SCHEMA: &str = "loadprobe.validate/1";
/// Namespace prefix when none is given: `lpv-a-c`, `lpv-a-s` (baseline), `lpv-b-*` (tuned).
pub const DEFAULT_PREFIX: &str = "lpv";

/// Why a validation could not be done. Each is one line.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("{flag} expects KEY=VALUE, got {given:?}")]
    Syntax { flag: String, given: String },
    #[error("{flag} gives {key} twice")]
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
    #[error("tune validate needs the eBPF probe (TIME_WAIT end reasons): {0}")]
    Probe(ProbeError),
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
    #[error("cannot create --output-dir {path}: {error}")]
    OutputDir { path: String, error: io::Error },
    #[error("merging the repetitions: {0}")]
    Merge(#[from] MergeError),
    #[error("cannot serialize validate.json: {0}")]
    Json(#[from] serde_json::Error),
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
    pub mode: String,
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
    settings::check_all("--base", &plan.base)?;
    settings::check_all("--set", &plan.set)?;
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
    let port = server_port();
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
            let record = hosts::run(&topology, &plan.config, port, stop, progress)?;
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
        client: read(Host::Client)?,
        server: read(Host::Server)?,
    })
}

/// The server's port, the same in both topologies so that the records differ only in what was
/// tuned. The probe watches every namespace filtered to this port, so it is taken below the
/// default ephemeral range (32768+): a host connection happening to use it as its own source
/// port would otherwise be counted in.
fn server_port() -> u16 {
    20000 + (std::process::id() % 10000) as u16
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
        mode: c.mode.as_str().to_string(),
        model: model.to_string(),
        rate,
        users,
        duration_s: c.duration.map(|d| d.as_secs_f64()),
        repeat,
    }
}

/// Writes `baseline.json` and `tuned.json` (run records, so `loadprobe compare` reads them;
/// with several repetitions they are the merged records, whose `repetitions` let `compare`
/// judge noise, and each repetition is kept as `baseline-1.json`, ...) and `validate.json` into
/// `dir`, creating it. Returns the paths written.
pub fn write_outputs(dir: &Path, outcome: &Outcome) -> Result<Vec<String>, ValidateError> {
    std::fs::create_dir_all(dir).map_err(|error| ValidateError::OutputDir {
        path: dir.display().to_string(),
        error,
    })?;
    let mut written = Vec::new();
    let mut write = |file: String, record: &RunRecord| -> Result<(), ValidateError> {
        let path = dir.join(file);
        write_atomic(&path, record)?;
        written.push(path.display().to_string());
        Ok(())
    };
    for (name, records) in [("baseline", &outcome.baseline), ("tuned", &outcome.tuned)] {
        write(format!("{name}.json"), &merge(records)?)?;
        if records.len() > 1 {
            for (i, record) in records.iter().enumerate() {
                write(format!("{name}-{}.json", i + 1), record)?;
            }
        }
    }
    let path = dir.join("validate.json");
    let json = serde_json::to_vec_pretty(outcome)?;
    std::fs::write(&path, [json, b"\n".to_vec()].concat()).map_err(|source| {
        ReportError::Write {
            path: path.display().to_string(),
            source,
        }
    })?;
    written.push(path.display().to_string());
    Ok(written)
}

#[cfg(test)]
mod tests;
