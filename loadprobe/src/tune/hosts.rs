//! One run inside a topology: the embedded server on a thread in the server namespace, the
//! driver and the probe on a thread in the client namespace, each with its own tokio runtime.
//! `tune validate` runs its baseline and tuned workloads this way, `find-limit` its steps.
//!
//! A runtime's worker threads are spawned by the thread that builds it and inherit its network
//! namespace, so building each runtime after `enter` keeps every socket of the run on the right
//! side of the veth. Both threads are joined before returning: a thread left inside a namespace
//! would keep it (and its veth) alive after the topology deletes its name.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use crate::driver::{DriverConfig, Stop, Target};
use crate::model::{Live, Side};
use crate::report::RunRecord;
use crate::run::{ProbePlan, RunError, RunOnce, run_once};
use crate::server::{Server, ServerConfig, ServerError};
use crate::tune::TuneError;
use crate::tune::netns::Topology;

/// Why a run inside a topology could not be done.
#[derive(Debug, thiserror::Error)]
pub enum HostRunError {
    #[error(transparent)]
    Tune(#[from] TuneError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("starting an async runtime: {0}")]
    Runtime(io::Error),
    #[error("starting a thread: {0}")]
    Thread(io::Error),
}

/// What the run does besides its workload.
pub struct HostRun<'a> {
    /// The probe, run in the client namespace. [`crate::probe::Netns::All`] filtered to the
    /// server's port sees both ends of each connection and pairs them across the veth.
    pub probe: ProbePlan,
    /// The board the run writes to, for a live view.
    pub live: Arc<Live>,
    pub stop: &'a Stop,
    pub warn: &'a (dyn Fn(&str) + Sync),
}

/// The server's port in a topology. The probe watches every namespace filtered to this port,
/// so it is taken below the default ephemeral range (32768+): a host connection happening to
/// use it as its own source port would otherwise be counted in. The same for every topology
/// of a process, so that their records differ only in what was changed.
pub fn server_port() -> u16 {
    20000 + (std::process::id() % 10000) as u16
}

/// Runs `config` (its target replaced by the server in `topology`, on `port`) and returns the
/// record.
pub fn run(
    topology: &Topology,
    config: &DriverConfig,
    port: u16,
    how: HostRun<'_>,
) -> Result<RunRecord, HostRunError> {
    let listen = SocketAddr::from((topology.server_addr(), port));
    let (ready_tx, ready_rx) = mpsc::channel();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    thread::scope(|s| {
        let server = thread::Builder::new()
            .name("topology-server".into())
            .spawn_scoped(s, move || serve(topology, listen, ready_tx, shutdown_rx))
            .map_err(HostRunError::Thread)?;
        let record = match ready_rx.recv() {
            Ok(Ok(())) => drive(topology, config, listen, how),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(HostRunError::Thread(io::Error::other(
                "the server thread ended before listening",
            ))),
        };
        let _ = shutdown_tx.send(());
        let served = match server.join() {
            Ok(r) => r,
            Err(payload) => std::panic::resume_unwind(payload),
        };
        let record = record?;
        served?;
        Ok(record)
    })
}

/// The server thread: enters the server namespace, listens, reports readiness (or why not), and
/// serves until `shutdown`.
fn serve(
    topology: &Topology,
    listen: SocketAddr,
    ready: mpsc::Sender<Result<(), HostRunError>>,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), HostRunError> {
    let setup = || -> Result<_, HostRunError> {
        topology.enter(Side::Server)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(HostRunError::Runtime)?;
        let server = Server::bind(&ServerConfig {
            listen,
            ..ServerConfig::default()
        })?;
        Ok((runtime, server))
    };
    let (runtime, server) = match setup() {
        Ok(ok) => ok,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(()));
    runtime.block_on(server.serve_until(async {
        let _ = shutdown.await;
    }))?;
    Ok(())
}

/// The client side: the driver's runtime and the probe, built inside the client namespace.
fn drive(
    topology: &Topology,
    config: &DriverConfig,
    target: SocketAddr,
    how: HostRun<'_>,
) -> Result<RunRecord, HostRunError> {
    let mut config = config.clone();
    let path = config.mix.first().path.clone();
    config.target = Target::from_addr(target);
    config.target.path = path;
    topology.run_in(Side::Client, move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(HostRunError::Runtime)?;
        let record = runtime.block_on(run_once(RunOnce {
            config,
            embedded_server: true,
            probe: how.probe,
            probe_log: false,
            live: how.live,
            stop: how.stop.clone(),
            warn: how.warn,
            // The next run makes namespaces and attaches again.
            drop_privileges: None,
        }))?;
        Ok(record)
    })?
}
