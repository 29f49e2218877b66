//! The port budget: how many client ports towards the target the run's TIME_WAIT holds, against
//! how many there are. A client's TIME_WAIT socket pins its (source ip, source port, dest ip,
//! dest port) for 60 s, so towards one destination the budget is the usable ephemeral ports
//! times the source addresses; at `r` closes per second the client holds about `60 r`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::driver::Mode;

/// TCP_TIMEWAIT_LEN: fixed in the kernel, not a sysctl.
pub const TIME_WAIT_SECONDS: u64 = 60;

/// What the budget is computed from.
pub struct PortBudgetInputs<'a> {
    /// Usable ephemeral ports (range minus reserved), if they could be read.
    pub usable_ports: Option<u32>,
    /// Source addresses in use (1 when the kernel chooses).
    pub source_ips: u32,
    pub mode: Mode,
    pub connections_per_s: f64,
    /// Connections open at once (users, or in-flight cap).
    pub concurrency: u64,
    pub target: SocketAddr,
    pub sysctls: &'a BTreeMap<String, String>,
    /// Connects that failed with EADDRNOTAVAIL during the run.
    pub eaddrnotavail: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortBudget {
    /// Usable ephemeral ports per source address.
    pub usable_ports: Option<u32>,
    pub source_ips: u32,
    /// `usable_ports × source_ips`: client ports available towards the target.
    pub ports_per_destination: Option<u64>,
    pub time_wait_s: u64,
    /// Client-side TIME_WAIT created per second (connections the client closes).
    pub client_time_wait_per_s: f64,
    /// Ports held at steady state without reuse: `rate × 60 + concurrency`.
    pub ports_needed: f64,
    /// tcp_tw_reuse lets connect() take over TIME_WAIT ports towards this target.
    pub tw_reuse_applies: bool,
    /// Seconds from an empty table until connect() fails, at this rate, without reuse;
    /// null when the budget covers the steady state.
    pub exhaustion_after_s: Option<f64>,
    /// `ports_per_destination / ports_needed` (>1: room to spare).
    pub headroom: Option<f64>,
    pub eaddrnotavail: u64,
    /// One line for humans.
    pub verdict: String,
}

impl PortBudget {
    pub fn compute(i: PortBudgetInputs<'_>) -> PortBudget {
        let client_closes = matches!(i.mode, Mode::ClientClose | Mode::KeepAlive);
        let rate = if client_closes {
            i.connections_per_s
        } else {
            0.0
        };
        let source_ips = i.source_ips.max(1);
        let budget = i.usable_ports.map(|p| u64::from(p) * u64::from(source_ips));
        let needed = rate * TIME_WAIT_SECONDS as f64 + i.concurrency as f64;
        let sysctl = |name: &str| i.sysctls.get(name).map(|v| v.trim().to_string());
        let reuse = sysctl("net.ipv4.tcp_tw_reuse").unwrap_or_default();
        let timestamps = sysctl("net.ipv4.tcp_timestamps").is_none_or(|v| v != "0");
        let reuse_applies =
            timestamps && (reuse == "1" || (reuse == "2" && i.target.ip().is_loopback()));
        let reuse_delay_s = sysctl("net.ipv4.tcp_tw_reuse_delay")
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(1.0, |ms| ms / 1000.0);
        let exhaustion_after_s = match budget {
            Some(b) if needed > b as f64 && rate > 0.0 => {
                Some((b as f64 - i.concurrency as f64).max(0.0) / rate)
            }
            _ => None,
        };
        let headroom = budget.filter(|_| needed > 0.0).map(|b| b as f64 / needed);
        let verdict = match budget {
            _ if i.eaddrnotavail > 0 => format!(
                "exhausted: {} connects failed with EADDRNOTAVAIL (no free local port towards {}); \
                 add --source-ips, lower the rate, or let the server close",
                i.eaddrnotavail, i.target
            ),
            None => "unknown: the ephemeral port range could not be read".to_string(),
            Some(b) if rate == 0.0 => format!(
                "headroom: this mode leaves no TIME_WAIT on the client; {b} ports towards {}",
                i.target
            ),
            Some(b) if needed <= b as f64 => format!(
                "headroom: {rate:.0} client closes/s hold ~{needed:.0} of {b} ports towards {} \
                 ({:.0}% used)",
                i.target,
                100.0 * needed / b as f64
            ),
            Some(b) => {
                let t = exhaustion_after_s.unwrap_or(0.0);
                if reuse_applies && rate * reuse_delay_s + (i.concurrency as f64) <= b as f64 {
                    format!(
                        "headroom thanks to tcp_tw_reuse={reuse}: connect() reuses TIME_WAIT ports \
                         after {reuse_delay_s} s; without it {b} ports would run out after \
                         {t:.1} s at {rate:.0} closes/s"
                    )
                } else {
                    format!(
                        "exhaustion after ~{t:.1} s: {rate:.0} client closes/s need \
                         ~{needed:.0} ports for 60 s of TIME_WAIT, {b} exist towards {}",
                        i.target
                    )
                }
            }
        };
        PortBudget {
            usable_ports: i.usable_ports,
            source_ips,
            ports_per_destination: budget,
            time_wait_s: TIME_WAIT_SECONDS,
            client_time_wait_per_s: rate,
            ports_needed: needed,
            tw_reuse_applies: reuse_applies,
            exhaustion_after_s,
            headroom,
            eaddrnotavail: i.eaddrnotavail,
            verdict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(
        sysctls: &'a BTreeMap<String, String>,
        rate: f64,
        target: &str,
    ) -> PortBudgetInputs<'a> {
        PortBudgetInputs {
            usable_ports: Some(28232),
            source_ips: 1,
            mode: Mode::ClientClose,
            connections_per_s: rate,
            concurrency: 100,
            target: target.parse().unwrap(),
            sysctls,
            eaddrnotavail: 0,
        }
    }

    #[test]
    fn headroom_and_exhaustion() {
        let mut sysctls = BTreeMap::new();
        sysctls.insert("net.ipv4.tcp_tw_reuse".to_string(), "0".to_string());
        let b = PortBudget::compute(inputs(&sysctls, 100.0, "10.0.0.1:80"));
        assert_eq!(b.exhaustion_after_s, None);
        assert!(b.verdict.starts_with("headroom:"), "{}", b.verdict);

        let b = PortBudget::compute(inputs(&sysctls, 1000.0, "10.0.0.1:80"));
        let t = b.exhaustion_after_s.unwrap();
        assert!((t - 28.132).abs() < 0.01, "{t}");
        assert!(
            b.verdict.starts_with("exhaustion after ~28.1 s"),
            "{}",
            b.verdict
        );

        // tcp_tw_reuse=2 covers loopback only.
        sysctls.insert("net.ipv4.tcp_tw_reuse".to_string(), "2".to_string());
        let b = PortBudget::compute(inputs(&sysctls, 1000.0, "127.0.0.1:80"));
        assert!(b.tw_reuse_applies);
        assert!(b.verdict.starts_with("headroom thanks to"), "{}", b.verdict);
        let b = PortBudget::compute(inputs(&sysctls, 1000.0, "10.0.0.1:80"));
        assert!(!b.tw_reuse_applies);

        let mut i = inputs(&sysctls, 1000.0, "10.0.0.1:80");
        i.eaddrnotavail = 5;
        assert!(PortBudget::compute(i).verdict.contains("EADDRNOTAVAIL"));

        let mut i = inputs(&sysctls, 1000.0, "10.0.0.1:80");
        i.mode = Mode::ServerClose;
        let b = PortBudget::compute(i);
        assert_eq!(b.client_time_wait_per_s, 0.0);
        assert!(
            b.verdict.contains("no TIME_WAIT on the client"),
            "{}",
            b.verdict
        );
    }
}
