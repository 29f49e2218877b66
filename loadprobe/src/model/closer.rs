//! Who ended a connection.

use serde::Serialize;

use super::Side;

/// How a connection ended, from the point of view of who acted first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Closer {
    /// The client sent the first FIN.
    Client,
    /// The server sent the first FIN.
    Server,
    /// Both sent a FIN before seeing the other's.
    Simultaneous,
    /// The client aborted with an RST (SO_LINGER 0, or close with unread data).
    ClientReset,
    /// The server aborted with an RST.
    ServerReset,
    /// connect() failed.
    Refused,
    /// Opened before the probe started, or never closed while it ran; or which end put the
    /// first FIN or RST on the wire cannot be told (a FIN queued behind unsent data, that went
    /// out at a moment the kernel does not show, and an RST of the peer's after it was queued).
    Unknown,
}

impl Closer {
    /// `side` put the first FIN (or, `reset`, RST) on the wire.
    pub fn of(side: Side, reset: bool) -> Closer {
        match (side, reset) {
            (Side::Client, false) => Closer::Client,
            (Side::Server, false) => Closer::Server,
            (Side::Client, true) => Closer::ClientReset,
            (Side::Server, true) => Closer::ServerReset,
        }
    }

    pub const ALL: [Closer; 7] = [
        Closer::Client,
        Closer::Server,
        Closer::Simultaneous,
        Closer::ClientReset,
        Closer::ServerReset,
        Closer::Refused,
        Closer::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Closer::Client => "client",
            Closer::Server => "server",
            Closer::Simultaneous => "simultaneous",
            Closer::ClientReset => "client-reset",
            Closer::ServerReset => "server-reset",
            Closer::Refused => "refused",
            Closer::Unknown => "unknown",
        }
    }
}
