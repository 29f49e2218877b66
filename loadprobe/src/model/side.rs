//! The two ends of a connection, and where a timewait socket is in its life.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An end of a connection, or the host that holds it: records, flags and messages spell it
/// `client` and `server`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub const ALL: [Side; 2] = [Side::Client, Side::Server];

    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a timewait socket is in its life: what the probe tracks and sock_diag reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Substate {
    /// We closed first and the peer has not closed yet (an orphaned `FIN_WAIT2`). The socket
    /// lives for `tcp_fin_timeout` unless the peer's FIN moves it to `TimeWait`; `tcp_tw_reuse`
    /// never applies to it.
    #[serde(rename = "FIN_WAIT2")]
    FinWait2,
    /// Both sides closed; the socket lives 60 s (`TCP_TIMEWAIT_LEN`) unless reused or killed.
    #[serde(rename = "TIME_WAIT")]
    TimeWait,
}

impl Substate {
    pub const ALL: [Substate; 2] = [Substate::FinWait2, Substate::TimeWait];

    /// The kernel's name for it, as records spell it.
    pub fn name(self) -> &'static str {
        match self {
            Substate::FinWait2 => "FIN_WAIT2",
            Substate::TimeWait => "TIME_WAIT",
        }
    }
}
