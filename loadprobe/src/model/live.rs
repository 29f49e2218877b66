//! The live board: counters the load driver and the probe update while a run goes, read by
//! progress lines and the metrics endpoint.

use std::sync::atomic::{AtomicBool, AtomicU64};

/// Counters updated as requests complete (measured window only), for live progress.
#[derive(Debug, Default)]
pub struct Live {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub connections: AtomicU64,
    /// Latest TIME_WAIT counts per side, written by the probe (or the sampler without it).
    pub tw_client: AtomicU64,
    pub tw_server: AtomicU64,
    /// Set once warmup is over.
    pub measuring: AtomicBool,
    /// When the measured window starts, on the kernel's monotonic clock (`kernel::monotonic_ns`) (0 until
    /// the run begins, which sets it before its first connection): the probe splits its counts
    /// there.
    pub window_start_ns: AtomicU64,
}
