//! The subcommands: argument parsing and the binary's edge (`anyhow` lives here, not below).

pub mod compare;
pub mod doctor;
pub mod find_limit;
pub mod flags;
pub mod generate;
pub mod logger;
pub mod merge;
pub mod out;
pub mod parse;
pub mod report;
pub mod run;
pub mod serve;
pub mod signals;
pub mod trace;
pub mod trace_by;
pub mod tune;

/// Exit statuses, one convention for every subcommand (README, "Exit status").
pub mod exit {
    /// A check that was asked for failed: a `compare --fail-if` gate, `tune validate --apply`
    /// without an improvement.
    pub const CHECK_FAILED: u8 = 1;
    /// Bad input, or an error that stopped the work (one line on stderr). Whatever was
    /// measured before the error is still reported and written.
    pub const ERROR: u8 = 2;
    /// Stopped by SIGINT or SIGTERM before its planned end (128 + SIGINT, as shells report
    /// Ctrl-C); what was measured up to then is still reported and written.
    pub const INTERRUPTED: u8 = 130;
}

/// A multi-threaded tokio runtime with `threads` workers (default: one per CPU).
pub fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
