//! SIGINT and SIGTERM, one way for every command: caught, so that a command stops cleanly
//! (what was measured is still reported and written, namespaces are removed) instead of the
//! default action ending the process on the spot.
//!
//! SIGPIPE keeps Rust's default for binaries: ignored, so a reader that went away is an EPIPE
//! from the write, which [`super::out`] drops quietly, never a process killed mid-report.

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// SIGINT and SIGTERM, caught from [`Interrupts::catch`] on.
pub struct Interrupts {
    signals: Signals,
    arrived: bool,
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
        })
    }

    /// Whether either signal has arrived since [`Interrupts::catch`], without waiting: for a
    /// loop that looks between its own steps.
    pub fn arrived(&mut self) -> bool {
        if !self.arrived {
            self.arrived = self.signals.pending().next().is_some();
        }
        self.arrived
    }

    /// Calls `each(n)` for the n-th signal (1, 2, ...) as it arrives, on a thread of its own.
    pub fn on_each(mut self, mut each: impl FnMut(usize) + Send + 'static) -> anyhow::Result<()> {
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for (n, _) in self.signals.forever().enumerate() {
                    each(n + 1);
                }
            })
            .context("cannot start the signal thread")?;
        Ok(())
    }
}
