//! `find-limit`: the search for the breaking point of connection churn. The new-connection
//! rate (open model) goes up step by step ([`search`]), each step a full measured run
//! ([`crate::run`]) judged against thresholds; a step that breaks is named from its record
//! ([`judge`]): the client's ports, the TIME_WAIT table, the accept queue, the client's CPU or
//! the server's latency.
//!
//! No step may inherit what the last one left (its ports in TIME_WAIT). Against the embedded
//! server every step gets a fresh client/server namespace pair joined by veth
//! ([`crate::tune::netns`], as `tune validate` runs its workloads), with the `--sysctl`
//! settings written in it; against `--target`, each step waits first until the client's
//! TIME_WAIT towards the target is drained below a bound (sock_diag).

pub mod judge;
pub mod search;
pub mod text;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::diag::timewait::{count_for, list_time_wait};
use crate::driver::{DriverConfig, Stop};
use crate::error_chain::one_line;
use crate::kernel::tcp::TIME_WAIT_SECS;
use crate::model::{Live, Mode, Workload};
use crate::probe::Netns;
use crate::report::{PendingOutput, ReportError, RunRecord};
use crate::run::{ProbePlan, RunError, RunOnce, run_once};
use crate::tune::TuneError;
use crate::tune::hosts::{self, HostRun, HostRunError};
use crate::tune::netns::{self, Topology};
use crate::tune::validate::{Setting, ValidateError, settings};

pub use judge::{Breaker, Crossed, Figures, PortBound, Thresholds};
pub use search::{Search, SearchPlan, Stopped};

/// Schema of find-limit.json.
pub const SCHEMA: &str = "loadprobe.find-limit/1";

/// The summary's file name in `--output-dir`.
pub const SUMMARY_FILE: &str = "find-limit.json";

/// Why a search could not start, or a step could not run. Each is one line.
#[derive(Debug, thiserror::Error)]
pub enum FindLimitError {
    #[error(
        "against the embedded server each step runs in fresh network namespaces, which needs \
         root (CAP_SYS_ADMIN); give --target URL to search against a server of yours"
    )]
    NeedsRoot,
    #[error(
        "--mode keep-alive opens no new connection per request; find-limit raises the \
         new-connection rate (client-close, server-close or reset)"
    )]
    KeepAlive,
    #[error(
        "--sysctl is written in the embedded server's namespaces; with --target set the \
         sysctls of this host yourself"
    )]
    SysctlWithTarget,
    #[error(transparent)]
    Settings(#[from] ValidateError),
    #[error(transparent)]
    Tune(#[from] TuneError),
    #[error(transparent)]
    Host(#[from] HostRunError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("starting an async runtime: {0}")]
    Runtime(io::Error),
    #[error("waiting for TIME_WAIT to drain: {0}")]
    Drain(io::Error),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(
        "{path} already holds another search's step records ({file}); give an empty or new \
         folder, so that its step-*.json are this search's only"
    )]
    OutputDirUsed { path: String, file: String },
    #[error("cannot create {path}")]
    OutputDir {
        path: String,
        #[source]
        error: io::Error,
    },
}

/// Where the steps run.
#[derive(Clone, Debug)]
pub enum Setup {
    /// The embedded server, each step in a fresh namespace pair with these sysctls written
    /// where each acts (as `tune validate --set` places them).
    Namespaces { sysctls: Vec<Setting> },
    /// `config.target`, from this network namespace, each step after the client's TIME_WAIT
    /// towards it is at most `drain_below`.
    Target { drain_below: u64 },
}

/// What to search.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The workload of every step (open model; its rate is each step's).
    pub config: DriverConfig,
    pub setup: Setup,
    pub search: SearchPlan,
    pub thresholds: Thresholds,
    /// Attach the probe when possible (TIME_WAIT overflow is counted only by it).
    pub probe: bool,
}

/// One step as the summary keeps it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// 1-based.
    pub step: u32,
    /// Intended new connections per second.
    pub rate: f64,
    /// Its run record's file name in `--output-dir`.
    pub file: Option<String>,
    /// None: interrupted, not judged.
    pub held: Option<bool>,
    pub crossed: Vec<Crossed>,
    #[serde(flatten)]
    pub figures: Figures,
    /// Failed requests by class, as in the record.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// What broke it, when it broke.
    pub broke: Option<Breaker>,
    /// One line for people, beside `broke`.
    pub broke_text: Option<String>,
    /// Seconds waited before the step for the client's TIME_WAIT to drain (`--target`).
    pub drain_wait_s: Option<f64>,
}

/// find-limit.json, and what the text summary shows.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub schema: &'static str,
    pub mode: Mode,
    /// The URL, or `embedded` (a fresh namespace pair per step).
    pub target: String,
    pub step_duration_s: f64,
    pub search: SearchPlan,
    pub thresholds: Thresholds,
    /// The `--sysctl` settings of the namespaces.
    pub sysctls: Vec<Setting>,
    pub stopped: Stopped,
    /// The highest rate that held for a step.
    pub highest_held_rate: Option<f64>,
    /// The lowest rate that broke.
    pub lowest_broken_rate: Option<f64>,
    /// What broke the step at `lowest_broken_rate`; none if nothing broke.
    pub broke: Option<Breaker>,
    pub broke_text: Option<String>,
    /// The rate the client's port budget sustains for good, from the records' kernel facts.
    pub port_bound: Option<PortBound>,
    pub steps: Vec<Step>,
    /// Why a step could not be run (`stopped: failed`).
    pub error: Option<String>,
}

/// What the caller shows while the search goes.
pub trait Watch {
    /// Step `step` at `rate` starts; `live` is its board.
    fn step_starts(&mut self, step: u32, rate: f64, config: &DriverConfig, live: Arc<Live>);
    /// The step is done (its board no longer moves).
    fn step_ends(&mut self, step: &Step);
}

/// Checks everything that can be checked before any load: the mode, the sysctls (names that
/// exist, not given twice), root for namespaces.
pub fn check(plan: &Plan) -> Result<(), FindLimitError> {
    if plan.config.mode == Mode::KeepAlive {
        return Err(FindLimitError::KeepAlive);
    }
    if let Setup::Namespaces { sysctls } = &plan.setup {
        settings::check_all("--sysctl", sysctls)?;
        if !netns::has_cap_sys_admin() {
            return Err(FindLimitError::NeedsRoot);
        }
    }
    Ok(())
}

/// Runs the search: steps until it converges, the budget is spent, the cap holds, `stop` is
/// set (the step in progress winds down and is kept, not judged) or a step fails (its error
/// is in the summary). Each finished step's record goes to `outputs` at once, so an
/// interrupted or failed search keeps what it measured. `note` gets progress lines and
/// warnings.
pub fn find_limit(
    plan: &Plan,
    mut outputs: Option<&mut Outputs>,
    stop: &Stop,
    watch: &mut dyn Watch,
    note: &(dyn Fn(&str) + Sync),
) -> Result<Summary, FindLimitError> {
    check(plan)?;
    let runner = Runner::new(plan)?;
    let mut search = Search::default();
    let mut steps: Vec<Step> = Vec::new();
    let mut port_bound = None;
    let mut error = None;
    let failed = |k: u32, rate: f64, e: &FindLimitError| {
        format!("step {k} at {}/s: {}", rate_name(rate), one_line(e))
    };
    let stopped = loop {
        let rate = match search.next(&plan.search) {
            Ok(rate) => rate,
            Err(stopped) => break stopped,
        };
        if stop.is_stopped() {
            break Stopped::Interrupted;
        }
        let k = search.steps + 1;
        let drain_wait_s = match runner.drain(stop, note) {
            Ok(waited) => waited,
            Err(e) => {
                error = Some(one_line(&e));
                break Stopped::Failed;
            }
        };
        if stop.is_stopped() {
            break Stopped::Interrupted;
        }
        let mut config = plan.config.clone();
        if let Workload::Open { max_in_flight, .. } = config.workload {
            config.workload = Workload::Open {
                rate,
                max_in_flight,
            };
        }
        let live = Arc::new(Live::default());
        watch.step_starts(k, rate, &config, live.clone());
        let record = runner.step(&config, live, stop, note);
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                error = Some(failed(k, rate, &e));
                break Stopped::Failed;
            }
        };
        // A record that cannot be written ends the search as failed, with the steps before.
        let file = match outputs
            .as_deref_mut()
            .map(|o| o.write_step(k, rate, &record))
        {
            Some(Ok(name)) => Some(name),
            Some(Err(e)) => {
                error = Some(failed(k, rate, &e));
                break Stopped::Failed;
            }
            None => None,
        };
        let step = judge_step(k, rate, &record, &plan.thresholds, file, drain_wait_s);
        watch.step_ends(&step);
        // The kernel facts are the same every step; the last record's stand for all.
        port_bound = PortBound::of(&record);
        let held = step.held;
        steps.push(step);
        match held {
            Some(held) => search.record(rate, held),
            None => break Stopped::Interrupted,
        }
    };
    let broke = search.lowest_broken.and_then(|rate| {
        steps
            .iter()
            .find(|s| s.rate == rate && s.held == Some(false))
            .and_then(|s| s.broke.clone())
    });
    Ok(Summary {
        schema: SCHEMA,
        mode: plan.config.mode,
        target: match plan.setup {
            Setup::Namespaces { .. } => "embedded".to_string(),
            Setup::Target { .. } => format!(
                "{}://{}{}",
                if plan.config.target.tls {
                    "https"
                } else {
                    "http"
                },
                plan.config.target.addr,
                plan.config.mix.first().path
            ),
        },
        step_duration_s: plan.config.duration.unwrap_or_default().as_secs_f64(),
        search: plan.search,
        thresholds: plan.thresholds,
        sysctls: match &plan.setup {
            Setup::Namespaces { sysctls } => sysctls.clone(),
            Setup::Target { .. } => Vec::new(),
        },
        stopped,
        highest_held_rate: search.highest_held,
        lowest_broken_rate: search.lowest_broken,
        broke_text: broke.as_ref().map(Breaker::describe),
        broke,
        port_bound,
        steps,
        error,
    })
}

/// A step's judgement from its record; an interrupted run is kept but not judged.
fn judge_step(
    k: u32,
    rate: f64,
    record: &RunRecord,
    thresholds: &Thresholds,
    file: Option<String>,
    drain_wait_s: Option<f64>,
) -> Step {
    let (held, crossed, broke) = if record.interrupted {
        (None, Vec::new(), None)
    } else {
        let crossed = judge::crossed(record, rate, thresholds);
        let broke =
            (!crossed.is_empty()).then(|| Breaker::name(record, rate, &crossed, thresholds));
        (Some(crossed.is_empty()), crossed, broke)
    };
    Step {
        step: k,
        rate,
        file,
        held,
        crossed,
        figures: Figures::of(record),
        errors: record.requests.errors.clone(),
        broke_text: broke.as_ref().map(Breaker::describe),
        broke,
        drain_wait_s,
    }
}

/// Waits until this namespace holds at most `bound` client TIME_WAIT sockets towards `target`
/// (sock_diag, every half second), or `most` has passed (a warning), or `stop`; returns the
/// seconds waited.
fn drain(
    target: SocketAddr,
    bound: u64,
    most: Duration,
    stop: &Stop,
    note: &dyn Fn(&str),
) -> Result<f64, FindLimitError> {
    let started = Instant::now();
    let mut said = false;
    loop {
        let (_, entries) = list_time_wait().map_err(FindLimitError::Drain)?;
        let (client, _) = count_for(target, &entries);
        let waited = started.elapsed();
        if client <= bound || stop.is_stopped() {
            return Ok(waited.as_secs_f64());
        }
        if waited >= most {
            note(&format!(
                "warning: {client} client TIME_WAIT sockets towards {target} still open after \
                 {} s (bound {bound}); starting the step",
                most.as_secs()
            ));
            return Ok(waited.as_secs_f64());
        }
        if !said {
            note(&format!(
                "waiting for {client} client TIME_WAIT sockets towards {target} to drain to \
                 {bound}"
            ));
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs the steps where the plan says.
enum Runner<'a> {
    Namespaces {
        plan: &'a Plan,
        sysctls: &'a [Setting],
        prefix: String,
        port: u16,
    },
    Target {
        plan: &'a Plan,
        target: SocketAddr,
        drain_below: u64,
        runtime: tokio::runtime::Runtime,
    },
}

/// Longest wait for TIME_WAIT to drain: the TIME_WAIT length and a little more for the
/// timer wheel; a table that is still over the bound then is some other program's.
const DRAIN_MAX: Duration = Duration::from_secs(TIME_WAIT_SECS + 5);

impl<'a> Runner<'a> {
    fn new(plan: &'a Plan) -> Result<Runner<'a>, FindLimitError> {
        Ok(match &plan.setup {
            Setup::Namespaces { sysctls } => Runner::Namespaces {
                plan,
                sysctls,
                // Unique among live processes; a crashed search's pair is named by
                // `Topology::create`'s error, with the command that removes it.
                prefix: format!("lpf{}", std::process::id()),
                port: hosts::server_port(),
            },
            Setup::Target { drain_below } => Runner::Target {
                plan,
                target: plan.config.target.addr,
                drain_below: *drain_below,
                runtime: tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(plan.config.workers.max(1))
                    .enable_all()
                    .build()
                    .map_err(FindLimitError::Runtime)?,
            },
        })
    }

    fn probe(plan: &Plan, netns: Netns) -> ProbePlan {
        if plan.probe {
            ProbePlan::Try(netns)
        } else {
            ProbePlan::Off("turned off with --no-probe".to_string())
        }
    }

    /// Waits for the client's TIME_WAIT towards the target to drain ([`drain`]); nothing to
    /// wait for in a fresh namespace pair.
    fn drain(&self, stop: &Stop, note: &dyn Fn(&str)) -> Result<Option<f64>, FindLimitError> {
        match self {
            Runner::Target {
                target,
                drain_below,
                ..
            } => Ok(Some(drain(*target, *drain_below, DRAIN_MAX, stop, note)?)),
            Runner::Namespaces { .. } => Ok(None),
        }
    }

    fn step(
        &self,
        config: &DriverConfig,
        live: Arc<Live>,
        stop: &Stop,
        note: &(dyn Fn(&str) + Sync),
    ) -> Result<RunRecord, FindLimitError> {
        match self {
            Runner::Namespaces {
                plan,
                sysctls,
                prefix,
                port,
            } => {
                let topology = Topology::create(prefix)?;
                settings::apply(&topology, &sysctls.iter().collect::<Vec<_>>())?;
                Ok(hosts::run(
                    &topology,
                    config,
                    *port,
                    HostRun {
                        probe: Runner::probe(plan, Netns::All),
                        live,
                        stop,
                        warn: note,
                    },
                )?)
            }
            Runner::Target { plan, runtime, .. } => Ok(runtime.block_on(run_once(RunOnce {
                config: config.clone(),
                embedded_server: false,
                probe: Runner::probe(plan, Netns::Current),
                probe_log: false,
                live,
                stop: stop.clone(),
                warn: note,
                // The next step attaches again.
                drop_privileges: None,
            }))?),
        }
    }
}

/// The steps' records and the summary in `--output-dir`: `step-01-5rps.json`, ... (named so
/// that a shell glob gives them to `compare` in step order) and [`SUMMARY_FILE`]. The folder
/// is made and the summary's file reserved before any load, so a folder that cannot take
/// them fails first.
pub struct Outputs {
    dir: PathBuf,
    summary: Option<PendingOutput>,
}

impl Outputs {
    pub fn create(dir: &Path) -> Result<Outputs, FindLimitError> {
        let err = |error| FindLimitError::OutputDir {
            path: dir.display().to_string(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        for entry in std::fs::read_dir(dir).map_err(err)? {
            let name = entry
                .map_err(err)?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name.starts_with("step-") && name.ends_with(".json") {
                return Err(FindLimitError::OutputDirUsed {
                    path: dir.display().to_string(),
                    file: name,
                });
            }
        }
        Ok(Outputs {
            dir: dir.to_path_buf(),
            summary: Some(PendingOutput::create(&dir.join(SUMMARY_FILE))?),
        })
    }

    /// Writes step `k`'s record; returns its file name.
    pub fn write_step(
        &mut self,
        k: u32,
        rate: f64,
        record: &RunRecord,
    ) -> Result<String, FindLimitError> {
        let name = step_file(k, rate);
        PendingOutput::create(&self.dir.join(&name))?.write(record)?;
        Ok(name)
    }

    /// Writes the summary; returns its path.
    pub fn write_summary(&mut self, summary: &Summary) -> Result<String, FindLimitError> {
        let file = match self.summary.take() {
            Some(file) => file,
            None => PendingOutput::create(&self.dir.join(SUMMARY_FILE))?,
        };
        Ok(file.write(summary)?)
    }
}

/// `step-03-20rps.json`: the step zero-padded (at most 99 steps), then the rate.
pub fn step_file(k: u32, rate: f64) -> String {
    format!("step-{k:02}-{}rps.json", rate_name(rate))
}

/// A rate with at most two decimals and no trailing zeros: `20`, `18.75`, `3.33`.
pub fn rate_name(rate: f64) -> String {
    let s = format!("{rate:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{in_fresh_netns, require_root};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Mutex;

    #[test]
    fn an_output_dir_with_another_searchs_steps_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new");
        drop(Outputs::create(&out).unwrap());
        std::fs::write(out.join("notes.txt"), "").unwrap();
        drop(Outputs::create(&out).expect("other files are no step records"));
        std::fs::write(out.join(step_file(1, 5.0)), "{}").unwrap();
        let err = Outputs::create(&out).err().expect("refused");
        assert!(
            err.to_string().ends_with(
                "already holds another search's step records (step-01-5rps.json); \
                            give an empty or new folder, so that its step-*.json are this \
                            search's only"
            ),
            "{err}"
        );
    }

    #[test]
    fn step_files_sort_in_step_order_and_name_the_rate() {
        assert_eq!(step_file(3, 20.0), "step-03-20rps.json");
        assert_eq!(step_file(8, 21.25), "step-08-21.25rps.json");
        assert_eq!(step_file(12, 10.0 / 3.0), "step-12-3.33rps.json");
        assert!(step_file(9, 1000.0) < step_file(10, 5.0));
    }

    /// Against the kernel's own table: 5 client TIME_WAIT sockets towards a listener, in a
    /// namespace of the test's own. A bound they are under lets the step start at once; a
    /// bound of 0 waits (TIME_WAIT lasts 60 s) until the longest wait, and says so.
    #[test]
    fn the_drain_waits_for_client_time_wait_towards_the_target() {
        if !require_root("find_limit::the_drain_waits_for_client_time_wait_towards_the_target") {
            return;
        }
        in_fresh_netns(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let target = listener.local_addr().unwrap();
            for _ in 0..5 {
                let client = TcpStream::connect(target).unwrap();
                let (server, _) = listener.accept().unwrap();
                // The client's FIN first: its end holds the TIME_WAIT.
                drop(client);
                let mut buf = [0u8; 1];
                let _ = std::io::Read::read(&mut &server, &mut buf);
                drop(server);
            }
            std::thread::sleep(Duration::from_millis(100));
            let (_, entries) = list_time_wait().unwrap();
            assert_eq!(count_for(target, &entries).0, 5);
            let notes = Mutex::new(Vec::new());
            let note = |l: &str| notes.lock().unwrap().push(l.to_string());
            let stop = Stop::default();
            let waited = drain(target, 5, Duration::from_secs(5), &stop, &note).unwrap();
            assert!(waited < 0.5, "{waited}");
            assert!(notes.lock().unwrap().is_empty());

            let waited = drain(target, 0, Duration::from_secs(1), &stop, &note).unwrap();
            assert!((1.0..3.0).contains(&waited), "{waited}");
            let notes = notes.lock().unwrap().clone();
            assert_eq!(notes.len(), 2, "{notes:?}");
            assert!(
                notes[0].starts_with("waiting for 5 client TIME_WAIT sockets"),
                "{notes:?}"
            );
            assert!(
                notes[1].contains("still open after 1 s (bound 0)"),
                "{notes:?}"
            );
        });
    }
}
