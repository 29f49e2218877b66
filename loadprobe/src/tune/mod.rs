//! Kernel tuning for connection churn: explain the sysctls that matter and predict what a
//! workload does to them ([`check`]), and build throwaway two-host topologies of network
//! namespaces ([`netns`]) so that a tuning can be measured without touching the host
//! ([`validate`], judged by [`verdict`]).
//!
//! Every sysctl involved is per network namespace (TIME_WAIT.md §5), which is what makes an
//! isolated A/B measurement possible at all.

pub mod check;
pub mod netns;
pub mod predict;
pub mod text;
pub mod validate;
pub mod verdict;

use std::io;

use crate::driver::TargetError;
use crate::kernel::KernelError;

/// Why a tuning step failed. Each message is one line that says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error("creating network namespaces needs root (CAP_SYS_ADMIN)")]
    NeedsRoot,
    #[error("`ip` (iproute2) not found in PATH; it is needed to create network namespaces")]
    IpMissing,
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("running {program}: {error}")]
    Spawn { program: String, error: io::Error },
    #[error(
        "network namespace {0} already exists (left over from a crashed run? \
         remove it with `ip netns delete {0}`)"
    )]
    Exists(String),
    #[error("invalid namespace prefix {prefix:?}: {why}")]
    InvalidPrefix { prefix: String, why: &'static str },
    #[error(
        "no free /30 in 10.213.0.0/16 for a veth pair: every candidate overlaps a host address"
    )]
    NoFreeSubnet,
    #[error("entering network namespace {name}: {error}")]
    Enter { name: String, error: io::Error },
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("reading the network namespace of this thread: {0}")]
    Netns(io::Error),
}
