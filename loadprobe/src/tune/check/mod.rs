//! `tune check`: what the churn-related sysctls of a network namespace really do on this kernel,
//! which folklore they reflect, and what a workload will do to TIME_WAIT and ephemeral ports.
//!
//! The facts come from docs/kernel.md §5 (checked on 6.18). The analysis is a pure function of the
//! sysctl values ([`analyse`]), so it can be tested with fixed inputs; [`Input::read`] is the only
//! part that looks at the kernel.
//!
//! The prediction ([`super::predict`]) is deliberately simple: one destination, a constant rate,
//! steady state. Enough to say "exhausted in 28 s" or "fine with 5x headroom", not to replace a
//! measurement (that is `tune validate`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::TuneError;
use super::predict::{Knobs, Prediction, Recommendation, Workload, predict, recommend};

use crate::kernel::tcp::{TIME_WAIT_SECS, is_loopback};
use crate::kernel::{self, KernelError, Ports};

/// A sysctl `tune check` reports, with what it really does.
pub struct Known {
    pub key: &'static str,
    /// Whether each network namespace has its own value (docs/kernel.md §5, checked on 6.18).
    pub per_netns: bool,
    pub meaning: &'static str,
}

/// The sysctls reported, in report order.
pub const KNOWN: &[Known] = &[
    Known {
        key: "net.ipv4.tcp_tw_reuse",
        per_netns: true,
        meaning: "0 off, 1 on, 2 loopback only: an autobind connect() may take a port whose \
                  TIME_WAIT to the same destination is older than tcp_tw_reuse_delay and saw peer \
                  timestamps; never for explicit bind(), incoming connections, or a TIME_WAIT \
                  still in its FIN_WAIT2 substate",
    },
    Known {
        key: "net.ipv4.tcp_tw_reuse_delay",
        per_netns: true,
        meaning: "ms a TIME_WAIT must have existed before tcp_tw_reuse may take its port \
                  (1..60000; added around 6.14, before that about 1 s, fixed)",
    },
    Known {
        key: "net.ipv4.tcp_timestamps",
        per_netns: true,
        meaning: "TCP timestamps (0 off, 1 on, 2 on without random offsets); TIME_WAIT reuse \
                  needs the peer's timestamps, so 0 turns reuse off whatever tcp_tw_reuse says",
    },
    Known {
        key: "net.ipv4.tcp_fin_timeout",
        per_netns: true,
        meaning: "seconds an orphaned FIN_WAIT2 socket waits for the peer's FIN; NOT the \
                  TIME_WAIT length (fixed 60 s); above 60 the orphan lives about 2x(N-60) s",
    },
    Known {
        key: "net.ipv4.tcp_max_tw_buckets",
        per_netns: true,
        meaning: "most TIME_WAIT (and FIN_WAIT2-substate) sockets in this namespace; beyond it \
                  none is created, silently (no log, only TcpExt.TCPTimeWaitOverflow), and a late \
                  FIN then gets an RST",
    },
    Known {
        key: "net.ipv4.ip_local_port_range",
        per_netns: true,
        meaning: "ports connect() and bind(port 0) choose from; with client-side TIME_WAIT one \
                  destination gets about (ports - reserved)/60 new connections/s",
    },
    Known {
        key: "net.ipv4.ip_local_reserved_ports",
        per_netns: true,
        meaning: "ports never chosen automatically (connect, bind port 0); explicit bind() may \
                  still use them",
    },
    Known {
        key: "net.ipv4.ip_unprivileged_port_start",
        per_netns: true,
        meaning: "lowest unprivileged port; ip_local_port_range must start at or above it",
    },
    Known {
        key: "net.ipv4.tcp_rfc1337",
        per_netns: true,
        meaning: "1: TIME_WAIT ignores in-window RSTs; 0: such an RST ends TIME_WAIT early \
                  (assassination)",
    },
    Known {
        key: "net.ipv4.tcp_tw_recycle",
        per_netns: true,
        meaning: "removed in Linux 4.12 (it broke clients behind NAT); absent here",
    },
    Known {
        key: "net.core.somaxconn",
        per_netns: true,
        meaning: "cap on a listener's accept queue; a full queue drops SYNs, seen as connect \
                  latency (retransmitted SYN after 1 s)",
    },
    Known {
        key: "net.ipv4.tcp_max_syn_backlog",
        per_netns: true,
        meaning: "half-open (SYN_RECV) connections per listener before SYN cookies or drops",
    },
    Known {
        key: "net.ipv4.tcp_max_orphans",
        per_netns: false,
        meaning: "global: orphaned sockets (closed by the app, not yet gone) beyond which they \
                  are reset; not visible inside a child namespace",
    },
];

/// What the analysis looks at: one namespace's sysctl values.
#[derive(Clone, Debug, Default)]
pub struct Input {
    /// Inode of the network namespace the values come from.
    pub netns: u64,
    pub release: String,
    /// Dotted key -> value (whitespace normalised); absent keys do not exist on this kernel.
    pub sysctls: BTreeMap<String, String>,
    /// `None` when the port sysctls could not be read or parsed (see `problems`).
    pub ports: Option<Ports>,
    /// Values that exist but could not be read or understood, as one line each.
    pub problems: Vec<(String, String)>,
}

impl Input {
    /// Reads [`KNOWN`] in the calling thread's network namespace (the kernel module resolves
    /// /proc/sys per thread). Unreadable values become findings rather than failing the check.
    pub fn read() -> Result<Input, TuneError> {
        let netns = crate::probe::current_netns().map_err(TuneError::Netns)?;
        let mut input = Input {
            netns: u64::from(netns),
            release: kernel::release(),
            ..Input::default()
        };
        for known in KNOWN {
            match kernel::read_sysctl(known.key) {
                Ok(value) => {
                    input.sysctls.insert(known.key.to_string(), value);
                }
                Err(KernelError::Missing { .. }) => {}
                Err(e) => input.problems.push((known.key.to_string(), e.to_string())),
            }
        }
        let ports = kernel::port_range().and_then(|range| {
            kernel::usable_ephemeral_ports().map(|usable| Ports { range, usable })
        });
        match ports {
            Ok(ports) => input.ports = Some(ports),
            Err(e) => input
                .problems
                .push(("net.ipv4.ip_local_port_range".to_string(), e.to_string())),
        }
        Ok(input)
    }
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Finding {
    pub severity: Severity,
    /// The sysctl (or socket option) the finding is about.
    pub key: String,
    pub message: String,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct SysctlLine {
    pub key: &'static str,
    /// `None`: the sysctl does not exist here.
    pub value: Option<String>,
    pub per_netns: bool,
    pub meaning: &'static str,
}

/// The whole `tune check` answer; its JSON form is the stable `--format json` object.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Report {
    pub netns: u64,
    pub kernel: String,
    pub sysctls: Vec<SysctlLine>,
    pub findings: Vec<Finding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
    pub recommendations: Vec<Recommendation>,
}

/// The analysis: sysctl explanations, findings, and for a workload a prediction and
/// recommendations. Pure: everything comes from `input`.
pub fn analyse(input: &Input, workload: Option<&Workload>) -> Report {
    let knobs = Knobs::from(&input.sysctls);
    let sysctls = KNOWN
        .iter()
        .map(|k| SysctlLine {
            key: k.key,
            value: input.sysctls.get(k.key).cloned(),
            per_netns: k.per_netns,
            meaning: k.meaning,
        })
        .collect();
    let mut findings = findings(input, &knobs, workload.and_then(|w| w.target));
    let (prediction, recommendations) = match workload {
        Some(w) => {
            let p = predict(input.ports, &knobs, w);
            let r = recommend(input.ports, &knobs, w, &p);
            for (side, s) in [("client", &p.client), ("server", &p.server)] {
                if s.overflow_per_second > 0.0 {
                    findings.push(Finding {
                        severity: Severity::Critical,
                        key: "net.ipv4.tcp_max_tw_buckets".to_string(),
                        message: format!(
                            "the {side} would hold {} TIME_WAIT but tcp_max_tw_buckets stops at \
                             {}: about {:.0}/s are silently not created, and late FINs get RSTs",
                            s.wanted, s.time_wait, s.overflow_per_second
                        ),
                    });
                }
            }
            if let Some(t) = p.ports.exhausted_after_seconds {
                findings.push(Finding {
                    severity: Severity::Critical,
                    key: "net.ipv4.ip_local_port_range".to_string(),
                    message: format!(
                        "client-side ports run out after about {t:.1} s: connect() fails with \
                         EADDRNOTAVAIL above {:.0} new connections/s to one destination",
                        p.ports.sustainable_rate.unwrap_or(0.0)
                    ),
                });
            }
            (Some(p), r)
        }
        None => (None, Vec::new()),
    };
    // Most severe first; the order within a severity is the order of the rules.
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Report {
        netns: input.netns,
        kernel: input.release.clone(),
        sysctls,
        findings,
        prediction,
        recommendations,
    }
}

/// Folklore and risks visible from the values alone (and the target, for reuse=2).
fn findings(input: &Input, knobs: &Knobs, target: Option<IpAddr>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |severity, key: &str, message: String| {
        out.push(Finding {
            severity,
            key: key.to_string(),
            message,
        })
    };
    for (key, problem) in &input.problems {
        add(
            Severity::Warning,
            key,
            format!("could not be read: {problem}"),
        );
    }
    if knobs.recycle_exists {
        add(
            Severity::Critical,
            "net.ipv4.tcp_tw_recycle",
            "tcp_tw_recycle exists on this kernel: at 1 it drops SYNs from clients behind NAT; \
             keep it 0 and use tcp_tw_reuse"
                .to_string(),
        );
    } else {
        add(
            Severity::Info,
            "net.ipv4.tcp_tw_recycle",
            "tcp_tw_recycle no longer exists (removed in Linux 4.12): guides that set it are out \
             of date, and writing it fails"
                .to_string(),
        );
    }
    match knobs.fin_timeout {
        Some(n) if n < 60 => add(
            Severity::Warning,
            "net.ipv4.tcp_fin_timeout",
            format!(
                "tcp_fin_timeout={n} does not shorten TIME_WAIT (fixed at 60 s); it only limits \
                 how long an orphaned FIN_WAIT2 socket waits for the peer's FIN"
            ),
        ),
        Some(n) if n > 60 => add(
            Severity::Warning,
            "net.ipv4.tcp_fin_timeout",
            format!(
                "tcp_fin_timeout={n} is above 60: an orphaned FIN_WAIT2 then lives about \
                 2x({n}-60) = {} s, not {n} s (kernel quirk); TIME_WAIT stays 60 s",
                2 * (n - 60)
            ),
        ),
        _ => {}
    }
    if !knobs.timestamps {
        add(
            Severity::Warning,
            "net.ipv4.tcp_timestamps",
            "tcp_timestamps=0: TIME_WAIT is never reused whatever tcp_tw_reuse says (reuse needs \
             the peer's timestamps), and PAWS protection is gone"
                .to_string(),
        );
    }
    let reuse_key = "net.ipv4.tcp_tw_reuse";
    match knobs.reuse {
        0 => add(
            Severity::Info,
            reuse_key,
            "tcp_tw_reuse=0: a client port stays blocked for 60 s per destination after each \
             close"
                .to_string(),
        ),
        2 => match target {
            Some(ip) if !is_loopback(ip) => add(
                Severity::Warning,
                reuse_key,
                format!(
                    "tcp_tw_reuse=2 means loopback only: it will not help towards {ip}, which is \
                     not a loopback address"
                ),
            ),
            _ => add(
                Severity::Info,
                reuse_key,
                "tcp_tw_reuse=2 (the default) applies to loopback only: connections over any real \
                 interface get no reuse"
                    .to_string(),
            ),
        },
        _ => {}
    }
    if knobs.reuse != 0 {
        add(
            Severity::Info,
            reuse_key,
            "tcp_tw_reuse only helps outgoing connect(); it does nothing for TIME_WAIT on a \
             server (closing first there is what creates it)"
                .to_string(),
        );
    }
    match knobs.reuse_delay_ms {
        None => add(
            Severity::Info,
            "net.ipv4.tcp_tw_reuse_delay",
            "no tcp_tw_reuse_delay on this kernel (before 6.14): reuse waits about 1 s, fixed"
                .to_string(),
        ),
        Some(ms) if ms >= 60_000 => add(
            Severity::Warning,
            "net.ipv4.tcp_tw_reuse_delay",
            format!(
                "tcp_tw_reuse_delay={ms} ms: as long as TIME_WAIT itself, so reuse never helps"
            ),
        ),
        Some(_) => {}
    }
    if let Some(max) = knobs.max_tw {
        add(
            Severity::Info,
            "net.ipv4.tcp_max_tw_buckets",
            format!(
                "above {max}/60 = {:.0} closes/s on one side, TIME_WAIT sockets are dropped \
                 without a log message (only TcpExt.TCPTimeWaitOverflow counts them)",
                max as f64 / TIME_WAIT_SECS as f64
            ),
        );
    }
    if let Some(ports) = input.ports {
        let reserved = ports.range.size() - ports.usable;
        add(
            Severity::Info,
            "net.ipv4.ip_local_port_range",
            format!(
                "{} usable ephemeral ports ({}-{}{}): with TIME_WAIT on the client, one \
                 destination sustains about {:.0} new connections/s",
                ports.usable,
                ports.range.low,
                ports.range.high,
                if reserved > 0 {
                    format!(", {reserved} reserved")
                } else {
                    String::new()
                },
                f64::from(ports.usable) / TIME_WAIT_SECS as f64
            ),
        );
    }
    add(
        Severity::Info,
        "IP_BIND_ADDRESS_NO_PORT",
        "an explicit bind() before connect() picks the port without knowing the destination: \
         ports stop being shared between destinations and TIME_WAIT ports are never reused \
         (EADDRINUSE) unless the socket sets IP_BIND_ADDRESS_NO_PORT (loadprobe run \
         --source-ips does)"
            .to_string(),
    );
    out
}

#[cfg(test)]
mod tests;
