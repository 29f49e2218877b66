//! The port budget: how many client ports towards the target the run's TIME_WAIT holds, against
//! how many there are. A client's TIME_WAIT socket pins its (source ip, source port, dest ip,
//! dest port) for 60 s, so towards one destination the budget is the usable ephemeral ports
//! times the source addresses; at `r` closes per second the client holds about `60 r`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::kernel::tcp::{self, Reuse, TIME_WAIT_SECS};
use crate::model::{Mode, Side};

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
    /// Of the client's closes, the share whose timewait socket stayed in FIN_WAIT2 (the
    /// server never sent its FIN): it holds the port for `tcp_fin_timeout`, not as TIME_WAIT.
    /// From the probe; 0 without it.
    pub client_fin_wait2_share: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortBudget {
    /// Usable ephemeral ports per source address.
    pub usable_ports: Option<u32>,
    pub source_ips: u32,
    /// `usable_ports × source_ips`: client ports available towards the target.
    pub ports_per_destination: Option<u64>,
    pub time_wait_s: u64,
    /// Client-side TIME_WAIT created per second (connections the client closes, less those
    /// that stay in FIN_WAIT2).
    pub client_time_wait_per_s: f64,
    /// Client-side FIN_WAIT2 orphans created per second (client closes the server never
    /// answered with its FIN; probe only). Absent in older records.
    #[serde(default)]
    pub client_fin_wait2_per_s: f64,
    /// Ports held at steady state without reuse: `TIME_WAIT rate × 60 + FIN_WAIT2 rate ×
    /// tcp_fin_timeout + concurrency`.
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
        let client_closes = i.mode.time_wait_side() == Some(Side::Client);
        let rate = if client_closes {
            i.connections_per_s
        } else {
            0.0
        };
        let source_ips = i.source_ips.max(1);
        let budget = i.usable_ports.map(|p| u64::from(p) * u64::from(source_ips));
        let sysctl = |name: &str| i.sysctls.get(name).map(|v| v.trim().to_string());
        let fin_timeout_s = sysctl("net.ipv4.tcp_fin_timeout")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(TIME_WAIT_SECS as f64);
        let share = i.client_fin_wait2_share.clamp(0.0, 1.0);
        let (tw_rate, fw2_rate) = (rate * (1.0 - share), rate * share);
        let needed =
            tw_rate * TIME_WAIT_SECS as f64 + fw2_rate * fin_timeout_s + i.concurrency as f64;
        // Where the closed ports wait, as the TIME_WAIT and FIN_WAIT2 lines count them.
        let held = if share == 0.0 {
            format!("for {TIME_WAIT_SECS} s of TIME_WAIT")
        } else if share == 1.0 {
            format!(
                "for {fin_timeout_s} s of FIN_WAIT2 (tcp_fin_timeout; the server never sent \
                 its FIN)"
            )
        } else {
            format!(
                "in TIME_WAIT ({TIME_WAIT_SECS} s) and, {:.0}% of them, FIN_WAIT2 \
                 ({fin_timeout_s} s; the server did not send its FIN)",
                100.0 * share
            )
        };
        let reuse = sysctl("net.ipv4.tcp_tw_reuse").unwrap_or_default();
        let timestamps = sysctl("net.ipv4.tcp_timestamps").is_none_or(|v| v != "0");
        let reuse_applies = Reuse::of(
            reuse.parse().unwrap_or(0),
            timestamps,
            Some(tcp::is_loopback(i.target.ip())),
        ) == Reuse::Applies;
        let reuse_delay_s =
            tcp::reuse_delay_s(sysctl("net.ipv4.tcp_tw_reuse_delay").and_then(|v| v.parse().ok()));
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
                 {held} ({:.0}% used)",
                i.target,
                100.0 * needed / b as f64
            ),
            Some(b) => {
                let t = exhaustion_after_s.unwrap_or(0.0);
                // tcp_tw_reuse takes over TIME_WAIT sockets only: connect() skips a FIN_WAIT2
                // one, which holds its port until tcp_fin_timeout.
                let with_reuse =
                    tw_rate * reuse_delay_s + fw2_rate * fin_timeout_s + i.concurrency as f64;
                if reuse_applies && tw_rate > 0.0 && with_reuse <= b as f64 {
                    format!(
                        "headroom thanks to tcp_tw_reuse={reuse}: connect() reuses TIME_WAIT ports \
                         after {reuse_delay_s} s; without it {b} ports would run out after \
                         {t:.1} s at {rate:.0} closes/s"
                    )
                } else {
                    format!(
                        "exhaustion after ~{t:.1} s: {rate:.0} client closes/s need \
                         ~{needed:.0} ports {held}, {b} exist towards {}",
                        i.target
                    )
                }
            }
        };
        PortBudget {
            usable_ports: i.usable_ports,
            source_ips,
            ports_per_destination: budget,
            time_wait_s: TIME_WAIT_SECS,
            client_time_wait_per_s: tw_rate,
            client_fin_wait2_per_s: fw2_rate,
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
            client_fin_wait2_share: 0.0,
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
        // A dual-stack socket's v4-mapped loopback is loopback to the kernel too, as it is to
        // `tune check`.
        let b = PortBudget::compute(inputs(&sysctls, 1000.0, "[::ffff:127.0.0.1]:80"));
        assert!(b.tw_reuse_applies);

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

    /// Against a server that never closes, the client's closes leave FIN_WAIT2 orphans, not
    /// TIME_WAIT: the budget says so, as the FIN_WAIT2 and TIME_WAIT lines do.
    #[test]
    fn fin_wait2_orphans_hold_ports_for_the_fin_timeout() {
        let mut sysctls = BTreeMap::new();
        sysctls.insert("net.ipv4.tcp_fin_timeout".to_string(), "30".to_string());
        let mut i = inputs(&sysctls, 100.0, "10.0.0.1:80");
        i.client_fin_wait2_share = 1.0;
        let b = PortBudget::compute(i);
        assert_eq!(b.client_time_wait_per_s, 0.0);
        assert_eq!(b.client_fin_wait2_per_s, 100.0);
        assert_eq!(b.ports_needed, 100.0 * 30.0 + 100.0);
        assert!(b.verdict.contains("FIN_WAIT2"), "{}", b.verdict);
        assert!(!b.verdict.contains("TIME_WAIT"), "{}", b.verdict);

        let mut i = inputs(&sysctls, 100.0, "10.0.0.1:80");
        i.client_fin_wait2_share = 0.25;
        let b = PortBudget::compute(i);
        assert_eq!(b.ports_needed, 75.0 * 60.0 + 25.0 * 30.0 + 100.0);
        assert!(
            b.verdict.contains("25% of them, FIN_WAIT2"),
            "{}",
            b.verdict
        );
        // tcp_tw_reuse does not take FIN_WAIT2 sockets: at 2000 closes/s, all of them FIN_WAIT2,
        // the ports run out whatever it says.
        sysctls.insert("net.ipv4.tcp_tw_reuse".to_string(), "1".to_string());
        let mut i = inputs(&sysctls, 2000.0, "10.0.0.1:80");
        i.client_fin_wait2_share = 1.0;
        let b = PortBudget::compute(i);
        assert!(b.verdict.starts_with("exhaustion after"), "{}", b.verdict);
    }
}
