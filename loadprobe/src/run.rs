//! One measured run, from preflight to run record: the piece `loadprobe run` and
//! `loadprobe tune validate` share, so that a validation's `baseline.json` and `tuned.json` are
//! ordinary run records made by the same code as any other (and `compare` works on them).
//!
//! The caller owns what differs between them: where the server runs (same runtime for `run`,
//! another network namespace for `validate`), signal handling ([`Stop`]) and live progress
//! ([`Live`]). Everything that reads the kernel here (probe attach, TIME_WAIT sampling, the
//! sysctl snapshot and the port budget) does so in the calling thread's network namespace, so a
//! run driven from inside a namespace describes that namespace.

use std::sync::Arc;
use std::time::Duration;

use crate::diag::timewait::TwSampler;

use crate::driver::{DriverConfig, DriverError, Segment, Stop, drive, preflight};
use crate::error_chain::one_line;
use crate::model::{Live, Workload};

use crate::kernel;
use crate::privileges::{self, PrivilegeError};
use crate::probe::session::Session;
use crate::probe::{Floor, Netns, ProbeError, ProbeOptions};
use crate::report::{
    PortBudget, PortBudgetInputs, ProbeReport, RecordInputs, ReportError, RunConfig, RunRecord,
    SegmentRecord,
};

/// Whether the eBPF probe watches the run's connections (those to or from the target's port).
#[derive(Debug, Clone)]
pub enum ProbePlan {
    /// No probe, for this reason (shown in the record and the summary).
    Off(String),
    /// Attach if possible; without it, TIME_WAIT is sampled from sock_diag.
    Try(Netns),
    /// The run is worthless without the probe (`tune validate` needs its TIME_WAIT end
    /// reasons): failing to attach fails the run.
    Require(Netns),
    /// Attach, but stop the programs early ([`Floor`]): what the probe costs before its own
    /// work, for `cargo xtask bench --floor`. Fails like `Require`; the record says the probe
    /// is off (it has no results), and nothing samples the socket table instead.
    Floor(Floor),
}

/// What one run needs besides its driver config.
pub struct RunOnce<'a> {
    pub config: DriverConfig,
    /// The target is the in-process server (recorded in the run config).
    pub embedded_server: bool,
    pub probe: ProbePlan,
    /// [`ProbeOptions::log`] (`--probe-log`).
    pub probe_log: bool,
    pub live: Arc<Live>,
    pub stop: Stop,
    /// Receives one-line warnings as they happen (probe off, sampling failed).
    pub warn: &'a dyn Fn(&str),
    /// Once the probe is attached, give up every capability but these (a mask of
    /// capability(7) numbers; see [`privileges::drop_caps_in_every_thread`]): nothing later in
    /// a run needs one but what writing its outputs may. None keeps them all, for a caller
    /// that attaches again or makes namespaces after this run (`tune validate`, `find-limit`,
    /// the repetitions before the last).
    pub drop_privileges: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
}

/// Preflight (one connection, before the probe so it is not counted), probe, TIME_WAIT
/// sampling, privileges given up, the load itself, then the record. Must run inside a tokio runtime.
pub async fn run_once(run: RunOnce<'_>) -> Result<RunRecord, RunError> {
    let RunOnce {
        config,
        embedded_server,
        probe,
        probe_log,
        live,
        stop,
        warn,
        drop_privileges,
    } = run;
    // A stop during the check (a target that never answers holds it for --connect-timeout)
    // goes on at once to the load, which sees the stop: an interrupted run, nothing measured.
    tokio::select! {
        checked = preflight(&config) => checked?,
        _ = stop.wait() => {}
    }
    let options = |netns, floor| ProbeOptions {
        netns,
        ports: vec![config.target.addr.port()],
        owner: Some(std::process::id()),
        timewait: true,
        records: false,
        floor,
        log: probe_log,
    };
    let floor = match probe {
        ProbePlan::Floor(floor) => Some(floor),
        _ => None,
    };
    let probe_netns = match probe {
        ProbePlan::Try(netns) | ProbePlan::Require(netns) => netns,
        ProbePlan::Off(_) | ProbePlan::Floor(_) => Netns::Current,
    };
    let probe = match probe {
        ProbePlan::Off(reason) => Err(reason),
        ProbePlan::Try(netns) => Session::start(&options(netns, None), live.clone(), stderr_warn())
            .map_err(|e| one_line(&e)),
        ProbePlan::Require(netns) => Ok(Session::start(
            &options(netns, None),
            live.clone(),
            stderr_warn(),
        )?),
        ProbePlan::Floor(floor) => Ok(Session::start(
            &options(Netns::Current, Some(floor)),
            live.clone(),
            stderr_warn(),
        )?),
    };
    // Without the probe's timewait tracking, TIME_WAIT counts come from sampling the socket
    // table (under churn that costs the load as much as the probe's own reading: not both).
    if let Err(reason) = &probe {
        warn(&format!(
            "probe off ({reason}); TIME_WAIT counts come from sock_diag"
        ));
    }
    let sampler = match &probe {
        Ok(session) if session.tracks_timewait() => None,
        _ => TwSampler::start(config.target.addr, live.clone(), Duration::from_secs(1)).ok(),
    };
    // Everything that needed privileges is done: the programs are attached, the maps and the
    // sampler's socket open. The load, the sampling and the record need none.
    // A failure ends the run before any load, the probe and the sampler stopped first.
    if let Some(keep) = drop_privileges
        && let Err(e) = privileges::drop_caps_in_every_thread(keep)
    {
        let _ = sampler.map(TwSampler::finish);
        let _ = probe.map(Session::finish);
        return Err(e.into());
    }

    let result = drive(config.clone(), live, stop).await;

    let sampled = sampler.map(TwSampler::finish);
    let probe = match (
        probe.and_then(|s| s.finish().map_err(|e| one_line(&e))),
        floor,
    ) {
        (Ok(_), Some(floor)) => ProbeReport::off(format!(
            "cost floor \"{}\": programs attached but stopped early, no results",
            floor.name()
        )),
        (Ok(seen), None) => {
            // With requests of several modes, which closer a connection should have depends
            // on the requests it carried, which the probe cannot tell: mismatches are unknown.
            let common = config.mix.common_mode(config.mode);
            let mut report = ProbeReport::from_probe(&seen, common.unwrap_or(config.mode));
            if common.is_none() {
                report.mismatches = None;
            }
            match server_end_unseen(&probe_netns, config.target.addr) {
                Some(reason) => report.server_unseen(reason),
                None => report,
            }
        }
        (Err(reason), _) => ProbeReport::off(reason),
    };
    let result = result?;
    if let Some(err) = sampled.as_ref().and_then(|s| s.error.as_ref()) {
        warn(&format!("warning: TIME_WAIT sampling failed: {err}"));
    }

    let kernel = kernel::snapshot();
    let concurrency = match config.workload {
        Workload::Closed { users, .. } => u64::from(users),
        Workload::Open { rate, .. } => {
            // Little's law: rate × mean latency is what is open at once.
            let mean_s = result.histograms.total_uncorrected.mean() / 1e6;
            (rate * mean_s).ceil() as u64
        }
    };
    let port_budget = PortBudget::compute(PortBudgetInputs {
        usable_ports: kernel::usable_ephemeral_ports().ok(),
        source_ips: config.source_ips.len().max(1) as u32,
        mode: config.mode,
        connections_per_s: result.connections_per_second(),
        concurrency,
        target: config.target.addr,
        sysctls: &kernel.sysctls,
        eaddrnotavail: result.errors.get("EADDRNOTAVAIL").copied().unwrap_or(0),
        client_fin_wait2_share: probe.client_fin_wait2_share(),
    });
    let segment =
        (config.segment != Segment::WHOLE || config.start_at.is_some()).then(|| SegmentRecord {
            index: config.segment.index(),
            count: config.segment.count(),
            host: hostname(),
            users: match config.workload {
                Workload::Closed { users, .. } => Some(config.segment.share(u64::from(users))),
                Workload::Open { .. } => None,
            },
            start_at_unix_ms: config.start_at.map(|at| {
                at.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
            }),
            start_late_ms: result.start_late.map(|d| d.as_millis() as u64),
        });
    Ok(RunRecord::build(RecordInputs {
        segment,
        config: RunConfig::new(&config, embedded_server),
        driver: &result,
        sampled: sampled.as_ref(),
        probe,
        kernel,
        port_budget,
    })?)
}

/// Why a probe confined to `netns` cannot see the target's end of the connections, if it
/// cannot: watching this namespace only, it sees the server's sockets only when the target's
/// address is one of this namespace's own (loopback, or an address of one of its interfaces).
/// A probe of every namespace is taken to see a target on this host (`tune validate`'s).
fn server_end_unseen(netns: &Netns, target: std::net::SocketAddr) -> Option<String> {
    if *netns == Netns::All || std::net::UdpSocket::bind((target.ip(), 0)).is_ok() {
        return None;
    }
    Some(format!(
        "{} is not an address of this network namespace: the probe does not see the server's \
         end",
        target.ip()
    ))
}

/// Where the probe's thread says what happens as it happens (lost events): stderr, as every
/// warning of a run.
fn stderr_warn() -> Box<dyn Fn(&str) + Send> {
    Box::new(|w| eprintln!("loadprobe: {w}"))
}

/// This host's name as its UTS namespace has it (a pod's name, in Kubernetes).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}
