//! The prediction half of `tune check`: TIME_WAIT per side and client port exhaustion at steady
//! state for one workload, and the smallest changes that give headroom.
//!
//! The model: one destination (ip, port), a constant rate of new connections, TIME_WAIT fixed at
//! 60 s; a closed connection holds its client port for 60 s, or for tcp_tw_reuse_delay when reuse
//! applies; tcp_max_tw_buckets caps TIME_WAIT per namespace, and its overflow frees the port.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::Place;
use crate::model::Mode;

use crate::kernel::tcp::{Reuse, TIME_WAIT_SECS, is_loopback};
use crate::kernel::{self, PortRange, Ports};

/// A recommendation must sustain this many times the requested rate: running right at the limit
/// fails at the first burst.
pub const HEADROOM: f64 = 1.25;

/// The workload to predict for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Workload {
    pub mode: Mode,
    /// Requests per second, as `loadprobe run --rate`; each is a new connection except in
    /// keep-alive mode.
    pub rate: f64,
    /// The destination address, if known: reuse=2 depends on it.
    pub target: Option<IpAddr>,
}

/// The sysctl values that drive the analysis, with the kernel's defaults for absent ones.
pub(super) struct Knobs {
    pub(super) reuse: u64,
    pub(super) reuse_delay_ms: Option<u64>,
    pub(super) timestamps: bool,
    pub(super) fin_timeout: Option<u64>,
    pub(super) max_tw: Option<u64>,
    pub(super) unprivileged_start: u16,
    pub(super) recycle_exists: bool,
}

impl Knobs {
    pub(super) fn from(sysctls: &BTreeMap<String, String>) -> Knobs {
        let num = |key: &str| sysctls.get(key).and_then(|v| v.trim().parse::<u64>().ok());
        Knobs {
            reuse: num("net.ipv4.tcp_tw_reuse").unwrap_or(0),
            reuse_delay_ms: num("net.ipv4.tcp_tw_reuse_delay"),
            timestamps: num("net.ipv4.tcp_timestamps").unwrap_or(1) != 0,
            fin_timeout: num("net.ipv4.tcp_fin_timeout"),
            max_tw: num("net.ipv4.tcp_max_tw_buckets"),
            unprivileged_start: num("net.ipv4.ip_unprivileged_port_start")
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(1024),
            recycle_exists: sysctls.contains_key("net.ipv4.tcp_tw_recycle"),
        }
    }

    pub(super) fn reuse_delay_s(&self) -> f64 {
        kernel::tcp::reuse_delay_s(self.reuse_delay_ms)
    }

    pub(super) fn reuse_for(&self, target_loopback: Option<bool>) -> Reuse {
        Reuse::of(self.reuse, self.timestamps, target_loopback)
    }
}

/// TIME_WAIT on one side at steady state.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct SidePrediction {
    /// Expected number of TIME_WAIT sockets.
    pub time_wait: u64,
    /// What the workload would create with no limit: closes/s x 60 s.
    pub wanted: u64,
    /// What caps `time_wait` below `wanted`: "ports" or "tcp_max_tw_buckets".
    pub limited_by: Option<&'static str>,
    /// TIME_WAIT sockets per second the kernel skips because of tcp_max_tw_buckets.
    pub overflow_per_second: f64,
}

/// The client's ephemeral ports towards the one destination.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct PortPrediction {
    pub usable: Option<u32>,
    pub reuse: Reuse,
    /// How long a closed connection keeps its port from a new connection to the same
    /// destination: 60 s, tcp_tw_reuse_delay with reuse, 0 without client-side TIME_WAIT.
    pub hold_seconds: f64,
    /// New connections/s the ports sustain; `None` when TIME_WAIT does not limit them.
    pub sustainable_rate: Option<f64>,
    /// Seconds from a cold start until connect() fails with EADDRNOTAVAIL; `None`: never.
    pub exhausted_after_seconds: Option<f64>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Prediction {
    pub mode: Mode,
    pub rate: f64,
    pub target: Option<IpAddr>,
    pub target_loopback: Option<bool>,
    pub time_wait_seconds: f64,
    pub client: SidePrediction,
    pub server: SidePrediction,
    pub ports: PortPrediction,
    pub notes: Vec<String>,
}

/// One change, with the rate it would sustain. The first of a report's list is the smallest
/// change that gives [`HEADROOM`]; the rest are alternatives.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Recommendation {
    pub change: String,
    /// Where to apply it.
    pub side: Place,
    pub sustains_rate: Option<f64>,
    pub why: String,
}

fn no_time_wait() -> SidePrediction {
    SidePrediction {
        time_wait: 0,
        wanted: 0,
        limited_by: None,
        overflow_per_second: 0.0,
    }
}

/// TIME_WAIT on a side that closes `rate` connections/s, held to `port_cap` by the ports (client)
/// and to `max_tw` by tcp_max_tw_buckets.
fn closing_side(rate: f64, port_cap: Option<u64>, max_tw: Option<u64>) -> SidePrediction {
    let wanted = (rate * (TIME_WAIT_SECS as f64)).ceil() as u64;
    let ports = port_cap.unwrap_or(u64::MAX);
    let buckets = max_tw.unwrap_or(u64::MAX);
    let (time_wait, limited_by) = if wanted <= ports.min(buckets) {
        (wanted, None)
    } else if buckets < ports {
        (buckets, Some("tcp_max_tw_buckets"))
    } else {
        (ports, Some("ports"))
    };
    let overflow_per_second = if limited_by == Some("tcp_max_tw_buckets") {
        round1((rate - buckets as f64 / (TIME_WAIT_SECS as f64)).max(0.0))
    } else {
        0.0
    };
    SidePrediction {
        time_wait,
        wanted,
        limited_by,
        overflow_per_second,
    }
}

/// Steady state for one destination; see the module doc for the model.
pub(super) fn predict(ports: Option<Ports>, knobs: &Knobs, w: &Workload) -> Prediction {
    let target_loopback = w.target.map(is_loopback);
    let reuse = knobs.reuse_for(target_loopback);
    let usable = ports.map(|p| p.usable);
    let mut notes = Vec::new();
    let (client, server, hold) = match w.mode {
        Mode::ClientClose => {
            let hold = if reuse == Reuse::Applies {
                knobs.reuse_delay_s()
            } else {
                TIME_WAIT_SECS as f64
            };
            let client = closing_side(w.rate, usable.map(u64::from), knobs.max_tw);
            (client, no_time_wait(), hold)
        }
        Mode::ServerClose => {
            notes.push(
                "server values assumed equal to this namespace's (each namespace has its own)"
                    .to_string(),
            );
            let server = closing_side(w.rate, None, knobs.max_tw);
            (no_time_wait(), server, 0.0)
        }
        Mode::KeepAlive => {
            notes.push(
                "keep-alive: about 0 TIME_WAIT; each connection closed leaves one on the client \
                 (with --requests-per-conn K, about rate/K x 60)"
                    .to_string(),
            );
            (no_time_wait(), no_time_wait(), 0.0)
        }
        Mode::Reset => {
            notes.push(
                "reset: an RST (SO_LINGER 0) skips TIME_WAIT on both sides; data in flight is \
                 lost and the peer sees ECONNRESET, fine for a test, not a fix"
                    .to_string(),
            );
            (no_time_wait(), no_time_wait(), 0.0)
        }
    };
    let (sustainable_rate, exhausted_after_seconds) = match usable {
        Some(usable) if hold > 0.0 => {
            let sustainable = f64::from(usable) / hold;
            // Overflow below the port count frees ports: no EADDRNOTAVAIL, silent drops instead.
            let buckets_first = knobs.max_tw.is_some_and(|b| b < u64::from(usable));
            let exhausted = w.rate > sustainable && !buckets_first;
            (
                Some(round1(sustainable)),
                exhausted.then(|| round1(f64::from(usable) / w.rate)),
            )
        }
        _ => (None, None),
    };
    if w.mode == Mode::ClientClose {
        match reuse {
            Reuse::Applies => notes.push(format!(
                "tcp_tw_reuse applies: a port is free again {:.0} ms after close, if the \
                 server has closed its side (FIN_WAIT2-substate TIME_WAIT is never reused) \
                 and connect() is not preceded by a plain bind()",
                hold * 1000.0
            )),
            Reuse::LoopbackOnly => notes.push(match w.target {
                Some(ip) => format!(
                    "tcp_tw_reuse=2 does not apply to {ip} (not loopback): reuse won't help"
                ),
                None => "no --target: assumed not loopback, where tcp_tw_reuse=2 does not apply"
                    .to_string(),
            }),
            Reuse::Off => notes.push("tcp_tw_reuse=0: each port is held 60 s".to_string()),
            Reuse::NoTimestamps => notes
                .push("tcp_timestamps=0: no reuse possible, each port is held 60 s".to_string()),
        }
        if client.limited_by == Some("tcp_max_tw_buckets") && usable.is_some() {
            notes.push(
                "tcp_max_tw_buckets is below the port count: overflow frees ports, so connect() \
                 keeps working while TIME_WAIT protection is silently lost"
                    .to_string(),
            );
        }
    }
    let ports_come_round = usable.is_some_and(|u| w.rate * (TIME_WAIT_SECS as f64) > f64::from(u));
    if let (Mode::ServerClose, true, Some(usable)) = (w.mode, ports_come_round, usable) {
        notes.push(format!(
            "above {:.0}/s the client's ports come round within 60 s: the server then accepts \
             a SYN that hits its TIME_WAIT (needs timestamps or a higher sequence number)",
            f64::from(usable) / (TIME_WAIT_SECS as f64)
        ));
    }
    Prediction {
        mode: w.mode,
        rate: w.rate,
        target: w.target,
        target_loopback,
        time_wait_seconds: TIME_WAIT_SECS as f64,
        client,
        server,
        ports: PortPrediction {
            usable,
            reuse,
            hold_seconds: hold,
            sustainable_rate,
            exhausted_after_seconds,
        },
        notes,
    }
}

/// The changes that give [`HEADROOM`], least behaviour change first: more ports (TIME_WAIT keeps
/// its full protection), then reuse (safe with timestamps, outgoing connections only), then more
/// source addresses (needs configuration), then moving TIME_WAIT to the server (changes the
/// application). Never tcp_tw_recycle.
pub(super) fn recommend(
    ports: Option<Ports>,
    knobs: &Knobs,
    w: &Workload,
    p: &Prediction,
) -> Vec<Recommendation> {
    let mut out = Vec::new();
    let need = w.rate * HEADROOM;
    let ports_short = p.ports.sustainable_rate.is_some_and(|s| s < need);
    if let (Some(ports), true) = (ports, ports_short && w.mode == Mode::ClientClose) {
        port_recommendations(ports, knobs, w, p, need, &mut out);
    }
    for (side, s) in [(Place::Client, &p.client), (Place::Server, &p.server)] {
        // TIME_WAIT the side would hold if the buckets were no limit (ports still are).
        let wanted = match (side, p.ports.usable) {
            (Place::Client, Some(u)) if p.ports.reuse == Reuse::Applies || !ports_short => {
                s.wanted.min(u64::from(u))
            }
            _ => s.wanted,
        };
        let wanted_with_headroom = (wanted as f64 * HEADROOM).ceil() as u64;
        if wanted == 0 || knobs.max_tw.is_none_or(|b| b >= wanted_with_headroom) {
            continue;
        }
        let mut why = "overflow skips TIME_WAIT silently: no log, the peer's late FIN gets an \
                       RST and stray old segments are no longer caught; each TIME_WAIT socket \
                       is only a small kernel object"
            .to_string();
        if side == Place::Client && ports_short {
            why.push_str(
                "; together with a port change above, since overflow is what now keeps ports free",
            );
        }
        out.push(Recommendation {
            change: format!("net.ipv4.tcp_max_tw_buckets={wanted_with_headroom}"),
            side,
            sustains_rate: Some(round1(
                wanted_with_headroom as f64 / (TIME_WAIT_SECS as f64),
            )),
            why,
        });
    }
    out
}

fn port_recommendations(
    ports: Ports,
    knobs: &Knobs,
    w: &Workload,
    p: &Prediction,
    need: f64,
    out: &mut Vec<Recommendation>,
) {
    let hold = p.ports.hold_seconds;
    let usable = f64::from(ports.usable);
    let reserved = ports.range.size() - ports.usable;
    // 1. More ports.
    let needed = (need * hold).ceil() as u32;
    if let Some(range) = widened(ports.range, needed + reserved, knobs.unprivileged_start) {
        let mut why = format!(
            "{needed} usable ports keep TIME_WAIT's full protection and sustain {:.0}/s",
            f64::from(needed) / hold
        );
        if range.low < 32768 {
            why.push_str("; reserve local servers' listening ports with ip_local_reserved_ports");
        }
        out.push(Recommendation {
            change: format!("net.ipv4.ip_local_port_range={} {}", range.low, range.high),
            side: Place::Client,
            sustains_rate: Some(round1(f64::from(range.size() - reserved) / hold)),
            why,
        });
    }
    // 2. Reuse, with what it needs for this destination.
    let loopback = p.target_loopback == Some(true);
    let mut changes = Vec::new();
    let mut side = Place::Client;
    if !knobs.timestamps {
        changes.push("net.ipv4.tcp_timestamps=1".to_string());
        side = Place::Both;
    }
    if p.ports.reuse != Reuse::Applies
        && Reuse::of(knobs.reuse, true, Some(loopback)) != Reuse::Applies
    {
        changes.push(format!(
            "net.ipv4.tcp_tw_reuse={}",
            if loopback { 2 } else { 1 }
        ));
    }
    let mut delay = knobs.reuse_delay_s();
    if usable / delay < need {
        let ms = (usable * 1000.0 / need).floor();
        if ms >= 1.0 && knobs.reuse_delay_ms.is_some() {
            changes.push(format!("net.ipv4.tcp_tw_reuse_delay={ms:.0}"));
            delay = ms / 1000.0;
        } else {
            changes.clear();
        }
    }
    if !changes.is_empty() {
        out.push(Recommendation {
            change: changes.join(" "),
            side,
            sustains_rate: Some(round1(usable / delay)),
            why: format!(
                "connect() takes a port whose TIME_WAIT is older than {:.0} ms (safe with \
                 timestamps); only for connect() without a plain bind(), and only once the \
                 server has closed its side",
                delay * 1000.0
            ),
        });
    }
    // 3. More source addresses.
    let addresses = (need * hold / usable).ceil().max(2.0);
    out.push(Recommendation {
        change: format!("loadprobe run --source-ips with {addresses:.0} addresses"),
        side: Place::Client,
        sustains_rate: Some(round1(addresses * usable / hold)),
        why: "each local address has its own ports per destination; the addresses must be \
              configured on the client"
            .to_string(),
    });
    // 4. Let the server close.
    let server_tw = (w.rate * (TIME_WAIT_SECS as f64)).ceil() as u64;
    out.push(Recommendation {
        change: "--mode server-close (the server closes first)".to_string(),
        side: Place::Server,
        sustains_rate: None,
        why: format!(
            "moves TIME_WAIT to the server, where it costs memory but no ports: about {server_tw} \
             there, so its tcp_max_tw_buckets must exceed that"
        ),
    });
}

/// Rates and seconds to one decimal: the model is not more precise, and JSON stays readable.
pub(super) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The port range with at least `size` ports: first up to 65535, then down to `floor`.
pub(super) fn widened(range: PortRange, size: u32, floor: u16) -> Option<PortRange> {
    let low = u32::from(range.low);
    let high = (low + size)
        .saturating_sub(1)
        .clamp(u32::from(range.high), 65535);
    if high + 1 - low >= size {
        return Some(PortRange {
            low: range.low,
            high: u16::try_from(high).ok()?,
        });
    }
    let low = 65536u32.checked_sub(size)?;
    (low >= u32::from(floor.max(1))).then(|| PortRange {
        low: u16::try_from(low).unwrap_or(u16::MAX),
        high: 65535,
    })
}
