//! TIME_WAIT counts over a run.

use serde::{Deserialize, Serialize};

use super::Side;

/// TIME_WAIT sockets alive per side at one moment of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeWaitPoint {
    /// Milliseconds since the run started.
    pub t_ms: u64,
    pub client: u64,
    pub server: u64,
    /// Orphaned FIN_WAIT2 sockets alive per side, apart from `client` and `server` (which
    /// count TIME_WAIT only). Absent where the source cannot tell the substates apart
    /// (sampling) and in records written before they were counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fin_wait2_client: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fin_wait2_server: Option<u64>,
}

impl TimeWaitPoint {
    /// TIME_WAIT sockets alive on `side`.
    pub fn time_wait(&self, side: Side) -> u64 {
        match side {
            Side::Client => self.client,
            Side::Server => self.server,
        }
    }

    /// Orphaned FIN_WAIT2 sockets alive on `side`, where counted.
    pub fn fin_wait2(&self, side: Side) -> Option<u64> {
        match side {
            Side::Client => self.fin_wait2_client,
            Side::Server => self.fin_wait2_server,
        }
    }
}
