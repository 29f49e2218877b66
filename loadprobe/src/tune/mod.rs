//! Kernel tuning for connection churn: explain the sysctls that matter and predict what a
//! workload does to them ([`check`]), and build throwaway two-host topologies of network
//! namespaces ([`netns`]) and run a workload in them ([`hosts`]) so that a tuning can be
//! measured without touching the host ([`validate`], judged by [`verdict`]).
//!
//! Every sysctl involved is per network namespace (docs/kernel.md §5), which is what makes an
//! isolated A/B measurement possible at all.

pub mod check;
pub mod hosts;
pub mod netns;
pub mod predict;
pub mod text;
pub mod validate;
pub mod verdict;

use std::fmt;
use std::io;

use serde::Serialize;

use crate::driver::TargetError;
use crate::kernel::KernelError;
use crate::model::Side;

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

/// Where a sysctl acts, and so which namespace of the topology it is written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// Read by connect(): the client namespace.
    Client,
    /// Read by the listener or accepted sockets: the server namespace.
    Server,
    /// Either side may need it (each namespace has its own TIME_WAIT table): both.
    Both,
}

impl Place {
    pub fn hosts(self) -> &'static [Side] {
        match self {
            Place::Client => &[Side::Client],
            Place::Server => &[Side::Server],
            Place::Both => &[Side::Client, Side::Server],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Place::Client => "client",
            Place::Server => "server",
            Place::Both => "both",
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
