//! Rules the kernel's TCP applies whatever a tool thinks: how long TIME_WAIT lasts, and when
//! `tcp_tw_reuse` lets connect() take over a TIME_WAIT port (docs/kernel.md §5). The run record's
//! port budget and `tune check` both ask here, so they cannot disagree.

use std::net::IpAddr;

use serde::Serialize;

/// TIME_WAIT length in seconds: `TCP_TIMEWAIT_LEN`, a compile-time constant, whatever the
/// sysctls say.
pub const TIME_WAIT_SECS: u64 = 60;

/// Whether tcp_tw_reuse frees client ports for connections to one destination.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Reuse {
    Applies,
    /// tcp_tw_reuse=0.
    Off,
    /// tcp_tw_reuse=2 and the destination is not loopback (or unknown).
    LoopbackOnly,
    /// tcp_timestamps=0: reuse needs the peer's timestamps.
    NoTimestamps,
}

impl Reuse {
    /// What `tcp_twsk_unique` decides for `tcp_tw_reuse` = `reuse` and `tcp_timestamps` on or
    /// off, towards a destination that is loopback or not (`None`: not known).
    pub fn of(reuse: u64, timestamps: bool, target_loopback: Option<bool>) -> Reuse {
        match (reuse, timestamps) {
            (0, _) => Reuse::Off,
            (_, false) => Reuse::NoTimestamps,
            (2, _) if target_loopback != Some(true) => Reuse::LoopbackOnly,
            _ => Reuse::Applies,
        }
    }
}

/// Seconds after close before reuse may take a port: `tcp_tw_reuse_delay` in ms; before 6.14
/// (no sysctl) a fixed second.
pub fn reuse_delay_s(delay_ms: Option<u64>) -> f64 {
    delay_ms.unwrap_or(1000) as f64 / 1000.0
}

/// Loopback as `tcp_twsk_unique` sees it for reuse=2: 127/8, ::1, or v4-mapped 127/8.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_follows_the_kernel() {
        assert_eq!(Reuse::of(0, true, Some(true)), Reuse::Off);
        assert_eq!(Reuse::of(1, false, Some(true)), Reuse::NoTimestamps);
        assert_eq!(Reuse::of(2, true, Some(false)), Reuse::LoopbackOnly);
        assert_eq!(Reuse::of(2, true, None), Reuse::LoopbackOnly);
        assert_eq!(Reuse::of(2, true, Some(true)), Reuse::Applies);
        assert_eq!(Reuse::of(1, true, None), Reuse::Applies);
        assert_eq!(reuse_delay_s(None), 1.0);
        assert_eq!(reuse_delay_s(Some(250)), 0.25);
    }

    #[test]
    fn loopback_includes_v4_mapped() {
        assert!(is_loopback("127.0.0.9".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.9".parse().unwrap()));
        assert!(!is_loopback("10.0.0.1".parse().unwrap()));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().unwrap()));
    }
}
