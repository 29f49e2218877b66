//! SIGINT and SIGTERM, one way for every command: caught, so that a command stops cleanly
//! (what was measured is still reported and written, namespaces are removed) instead of the
//! default action ending the process on the spot.
//!
//! SIGHUP keeps its default (the process ends) except in `trace`, a daemon, which catches it and
//! goes on ([`Interrupts::catch_keeping_on_hangup`]).
//!
//! SIGPIPE keeps Rust's default for binaries: ignored, so a reader that went away is an EPIPE
//! from the write, which [`super::out`] drops quietly, never a process killed mid-report.

use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// SIGINT and SIGTERM, caught from [`Interrupts::catch`] on.
pub struct Interrupts {
    signals: Signals,
    arrived: bool,
    /// SIGHUPs caught and not yet taken by [`Interrupts::hangups`].
    hangups: usize,
}

impl Interrupts {
    /// Catches both signals from now on. Starts no thread: `trace` must stay single-threaded
    /// until it has dropped its privileges.
    pub fn catch() -> anyhow::Result<Interrupts> {
        let signals =
            Signals::new([SIGINT, SIGTERM]).context("cannot handle SIGINT and SIGTERM")?;
        Ok(Interrupts {
            signals,
            arrived: false,
            hangups: 0,
        })
    }

    /// [`Interrupts::catch`], and SIGHUP caught too, so that it does not end the process: a
    /// long-running observer outlives the terminal or the session that started it, and a
    /// `kill -HUP` (which daemons take as "reload") must not cost its counts. Starts no thread.
    pub fn catch_keeping_on_hangup() -> anyhow::Result<Interrupts> {
        let signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
            .context("cannot handle SIGINT, SIGTERM and SIGHUP")?;
        Ok(Interrupts {
            signals,
            arrived: false,
            hangups: 0,
        })
    }

    /// Takes in the pending signals: SIGHUP is counted, SIGINT or SIGTERM stops.
    fn take_pending(&mut self) {
        for signal in self.signals.pending() {
            if signal == SIGHUP {
                self.hangups += 1;
            } else {
                self.arrived = true;
            }
        }
    }

    /// The SIGHUPs that arrived since the last call (none unless caught with
    /// [`Interrupts::catch_keeping_on_hangup`]).
    pub fn hangups(&mut self) -> usize {
        self.take_pending();
        std::mem::take(&mut self.hangups)
    }

    /// Whether SIGINT or SIGTERM has arrived since [`Interrupts::catch`], without waiting: for a
    /// loop that looks between its own steps.
    pub fn arrived(&mut self) -> bool {
        if !self.arrived {
            self.take_pending();
        }
        self.arrived
    }

    /// Calls `each(n)` for the n-th SIGINT or SIGTERM (1, 2, ...) as it arrives, on a thread of its own.
    pub fn on_each(mut self, mut each: impl FnMut(usize) + Send + 'static) -> anyhow::Result<()> {
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let stops = self.signals.forever().filter(|&s| s != SIGHUP);
                for (n, _) in stops.enumerate() {
                    each(n + 1);
                }
            })
            .context("cannot start the signal thread")?;
        Ok(())
    }
}
