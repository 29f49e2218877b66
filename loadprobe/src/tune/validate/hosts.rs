//! One run inside a topology: the embedded server on a thread in the server namespace, the
//! driver and the probe on a thread in the client namespace, each with its own tokio runtime.
//!
//! A runtime's worker threads are spawned by the thread that builds it and inherit its network
//! namespace, so building each runtime after `enter` keeps every socket of the run on the right
//! side of the veth. Both threads are joined before returning: a thread left inside a namespace
//! would keep it (and its veth) alive after the topology deletes its name.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use super::ValidateError;
use crate::driver::{DriverConfig, Live, Stop, Target};
use crate::probe::Netns;
use crate::report::RunRecord;
use crate::run::{ProbePlan, RunOnce, run_once};
use crate::server::{Server, ServerConfig};
use crate::tune::netns::{Host, Topology};

/// Runs `config` (its target replaced by the server in `topology`, on `port`) and returns the
/// record. The probe watches every namespace, filtered to `port`, so it sees both ends of each
/// connection and pairs them across the veth.
pub fn run(
    topology: &Topology,
    config: &DriverConfig,
    port: u16,
    stop: &Stop,
    warn: &(dyn Fn(&str) + Sync),
) -> Result<RunRecord, ValidateError> {
    let listen = SocketAddr::from((topology.server_addr(), port));
    let (ready_tx, ready_rx) = mpsc::channel();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    thread::scope(|s| {
        let server = thread::Builder::new()
            .name("validate-server".into())
            .spawn_scoped(s, move || serve(topology, listen, ready_tx, shutdown_rx))
            .map_err(ValidateError::Thread)?;
        let record = match ready_rx.recv() {
            Ok(Ok(())) => drive(topology, config, listen, stop, warn),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ValidateError::Thread(std::io::Error::other(
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
    ready: mpsc::Sender<Result<(), ValidateError>>,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), ValidateError> {
    let setup = || -> Result<_, ValidateError> {
        topology.enter(Host::Server)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ValidateError::Runtime)?;
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
    stop: &Stop,
    warn: &(dyn Fn(&str) + Sync),
) -> Result<RunRecord, ValidateError> {
    let mut config = config.clone();
    let path = config.request.path.clone();
    config.target = Target::from_addr(target);
    config.target.path = path;
    topology.run_in(Host::Client, move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(ValidateError::Runtime)?;
        let record = runtime.block_on(run_once(RunOnce {
            config,
            embedded_server: true,
            probe: ProbePlan::Require(Netns::All),
            live: Arc::new(Live::default()),
            stop: stop.clone(),
            warn,
        }))?;
        Ok(record)
    })?
}
