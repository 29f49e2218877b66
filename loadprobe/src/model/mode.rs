//! What a task does with its connection, and how tasks are started.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::PossibleValue;
use serde::{Deserialize, Serialize};

use super::Side;

/// What a task does with its connection. Records, flags and the bench spell it `client-close`,
/// `server-close`, `keep-alive` or `reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// New connection, one request, the client closes first: TIME_WAIT on the client.
    ClientClose,
    /// New connection, `Connection: close`, wait for the server's FIN: TIME_WAIT on the server.
    ServerClose,
    /// Connections are reused, closed by the client after `requests_per_conn` requests.
    KeepAlive,
    /// New connection, one request, then SO_LINGER 0 close: RST, no TIME_WAIT anywhere.
    Reset,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::ClientClose,
        Mode::ServerClose,
        Mode::KeepAlive,
        Mode::Reset,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::ClientClose => "client-close",
            Mode::ServerClose => "server-close",
            Mode::KeepAlive => "keep-alive",
            Mode::Reset => "reset",
        }
    }

    /// Which side ends up holding TIME_WAIT when the mode works as intended.
    pub fn time_wait_side(&self) -> Option<Side> {
        match self {
            Mode::ClientClose | Mode::KeepAlive => Some(Side::Client),
            Mode::ServerClose => Some(Side::Server),
            Mode::Reset => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown mode {s:?} (expected client-close, server-close, keep-alive or reset)"
                )
            })
    }
}

/// `--mode` as a flag with a closed set of values, each explained in `--help`.
impl clap::ValueEnum for Mode {
    fn value_variants<'a>() -> &'a [Mode] {
        &Mode::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            Mode::ClientClose => "The client closes first: TIME_WAIT on the client",
            Mode::ServerClose => "The server closes first: TIME_WAIT on the server",
            Mode::KeepAlive => "Connections are reused: next to no TIME_WAIT",
            Mode::Reset => "SO_LINGER 0 abort: no TIME_WAIT anywhere",
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}

/// How tasks are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    /// `users` loops, each starting its next request when the previous one (and the think
    /// time) is over.
    Closed { users: u32, think_time: Duration },
    /// `rate` requests per second on a constant schedule, at most `max_in_flight` at once (the
    /// descriptor limit); when that cap is hit the schedule waits, and latency shows it.
    Open { rate: f64, max_in_flight: u32 },
}
