//! The subcommands: argument parsing and the binary's edge (`anyhow` lives here, not below).

pub mod compare;
pub mod merge;
pub mod run;
pub mod serve;
pub mod trace;
pub mod tune;

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
