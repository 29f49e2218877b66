//! Whether a step held, and when it broke, what broke: named from the figures its run record
//! already has (errors by errno, the probe's TIME_WAIT overflow count, the port budget and the
//! kernel's sysctls), never from a guess.

use serde::Serialize;

use crate::kernel::tcp::{self, TIME_WAIT_SECS};
use crate::model::Side;
use crate::report::RunRecord;

/// A step that achieves less than this share of its intended rate broke.
pub const MIN_ACHIEVED: f64 = 0.99;

/// When a step breaks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Thresholds {
    /// Most failed requests, as a share of the step's requests (0.01: 1 %).
    pub max_error_rate: f64,
    /// Most p99 latency (from the intended start), in microseconds; none: latency never breaks.
    pub max_p99_us: Option<u64>,
    /// Least achieved share of the intended rate ([`MIN_ACHIEVED`]).
    pub min_achieved: f64,
}

/// A threshold a step crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Crossed {
    /// More failed requests than `max_error_rate`.
    Errors,
    /// p99 over `max_p99_us`.
    P99,
    /// Fewer requests than `min_achieved` of the intended rate.
    Achieved,
}

/// The figures a step is judged on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figures {
    /// Requests completed (ok or failed) per second of the measured window.
    pub achieved_per_s: f64,
    /// Failed requests / requests.
    pub error_rate: f64,
    /// `latency_us.total.p99`; none when no request completed.
    pub p99_us: Option<u64>,
}

impl Figures {
    pub fn of(record: &RunRecord) -> Figures {
        let r = &record.requests;
        let failed = r.total.saturating_sub(r.ok);
        let total = &record.latency_us.total;
        Figures {
            achieved_per_s: record.throughput.rps,
            error_rate: if r.total == 0 {
                0.0
            } else {
                failed as f64 / r.total as f64
            },
            p99_us: (total.count > 0).then_some(total.p99),
        }
    }
}

/// The thresholds the step at `rate` crossed (none: it held).
///
/// The intended count is `rate × duration`, and one start is given back for the rounding of
/// a schedule that does not fit the window exactly (7.5 starts due in 5 s at 1.5/s are 7 or 8).
pub fn crossed(record: &RunRecord, rate: f64, t: &Thresholds) -> Vec<Crossed> {
    let f = Figures::of(record);
    let mut crossed = Vec::new();
    if f.error_rate > t.max_error_rate {
        crossed.push(Crossed::Errors);
    }
    if let (Some(p99), Some(max)) = (f.p99_us, t.max_p99_us)
        && p99 > max
    {
        crossed.push(Crossed::P99);
    }
    let intended = rate * record.duration_s;
    if (record.requests.total as f64) + 1.0 < t.min_achieved * intended {
        crossed.push(Crossed::Achieved);
    }
    crossed
}

/// What broke a step, with the evidence it is named from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Breaker {
    /// connect() found no free local port: EADDRNOTAVAIL, the client's port budget spent.
    ClientPorts {
        eaddrnotavail: u64,
        /// `net.ipv4.ip_local_port_range` as the record has it.
        port_range: Option<String>,
        /// Client ports towards the target: usable ports × source addresses.
        ports: Option<u64>,
        source_ips: u32,
        /// tcp_tw_reuse let connect() take over TIME_WAIT ports.
        tw_reuse_applies: bool,
    },
    /// The kernel's TIME_WAIT table was full (`tcp_max_tw_buckets`): sockets closed without
    /// their TIME_WAIT (the probe's overflow count).
    TimeWaitOverflow { side: Side, overflow: u64 },
    /// Connects refused or timed out: the server's accept queue (listen backlog) was full.
    AcceptQueue { refused: u64, timeouts: u64 },
    /// Errors of another class, the most frequent one named.
    Errors { class: String, count: u64 },
    /// The client could not start requests on schedule, with no error: its own CPU.
    ClientCpu {
        achieved_per_s: f64,
        intended_per_s: f64,
        dropped: Option<u64>,
    },
    /// Responses too slow: p99 over `--max-p99`.
    ServerLatency { p99_us: u64, max_p99_us: u64 },
}

impl Breaker {
    /// Names what broke the step at `rate` that crossed `crossed` (not empty). The most
    /// specific evidence wins: EADDRNOTAVAIL (the ports), then TIME_WAIT overflow, then the
    /// accept queue's refusals and timeouts, other errors, a shortfall without errors (the
    /// client), and last latency alone (the server).
    pub fn name(record: &RunRecord, rate: f64, crossed: &[Crossed], t: &Thresholds) -> Breaker {
        let errors = &record.requests.errors;
        let count = |class: &str| errors.get(class).copied().unwrap_or(0);
        let failed: u64 = errors.values().sum();
        let erred = crossed.contains(&Crossed::Errors)
            || (failed > 0 && crossed.contains(&Crossed::Achieved));
        let budget = &record.port_budget;
        let eaddrnotavail = count("EADDRNOTAVAIL");
        if erred && eaddrnotavail > 0 {
            return Breaker::ClientPorts {
                eaddrnotavail,
                port_range: record
                    .kernel
                    .sysctls
                    .get("net.ipv4.ip_local_port_range")
                    .cloned(),
                ports: budget.ports_per_destination,
                source_ips: budget.source_ips,
                tw_reuse_applies: budget.tw_reuse_applies,
            };
        }
        let overflow = |side| record.time_wait.side(side).overflow.unwrap_or(0);
        if let Some(side) = [Side::Client, Side::Server]
            .into_iter()
            .find(|&s| overflow(s) > 0)
        {
            return Breaker::TimeWaitOverflow {
                side,
                overflow: overflow(side),
            };
        }
        let (refused, timeouts) = (count("ECONNREFUSED"), count("timeout") + count("ETIMEDOUT"));
        if erred && refused + timeouts > 0 {
            return Breaker::AcceptQueue { refused, timeouts };
        }
        if erred && let Some((class, &count)) = errors.iter().max_by_key(|(_, n)| **n) {
            return Breaker::Errors {
                class: class.clone(),
                count,
            };
        }
        if crossed.contains(&Crossed::Achieved) {
            return Breaker::ClientCpu {
                achieved_per_s: record.throughput.rps,
                intended_per_s: rate,
                dropped: record.requests.dropped,
            };
        }
        Breaker::ServerLatency {
            p99_us: record.latency_us.total.p99,
            max_p99_us: t.max_p99_us.unwrap_or(0),
        }
    }

    /// A few words, for a table's column.
    pub fn short(&self) -> String {
        match self {
            Breaker::ClientPorts { eaddrnotavail, .. } => {
                format!("client ports ({eaddrnotavail} EADDRNOTAVAIL)")
            }
            Breaker::TimeWaitOverflow { side, overflow } => {
                format!("{} TIME_WAIT table ({overflow} overflow)", side.name())
            }
            Breaker::AcceptQueue { refused, timeouts } => {
                format!("accept queue ({refused} refused, {timeouts} timed out)")
            }
            Breaker::Errors { class, count } => format!("errors ({count} {class})"),
            Breaker::ClientCpu { .. } => "the client's CPU (behind schedule)".to_string(),
            Breaker::ServerLatency { .. } => "server latency (p99)".to_string(),
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Breaker::ClientPorts {
                eaddrnotavail,
                port_range,
                ports,
                source_ips,
                tw_reuse_applies,
            } => {
                let range = port_range
                    .as_deref()
                    .map_or_else(String::new, |r| format!(" (ip_local_port_range {r})"));
                let ports = ports.map_or_else(|| "?".to_string(), |p| p.to_string());
                let held = if *tw_reuse_applies {
                    "until tcp_tw_reuse takes them over"
                } else {
                    "for the 60 s of TIME_WAIT, tcp_tw_reuse not applying"
                };
                format!(
                    "the client's port range: {eaddrnotavail} connects failed with EADDRNOTAVAIL; \
                     {ports} client ports{range} × {source_ips} source address(es), each held \
                     {held}"
                )
            }
            Breaker::TimeWaitOverflow { side, overflow } => format!(
                "the {side}'s TIME_WAIT table: {overflow} sockets closed without TIME_WAIT \
                 (tcp_max_tw_buckets reached)",
                side = side.name()
            ),
            Breaker::AcceptQueue { refused, timeouts } => format!(
                "the server's accept queue: {refused} connects refused, {timeouts} timed out \
                 (listen backlog full: somaxconn, tcp_max_syn_backlog)"
            ),
            Breaker::Errors { class, count } => {
                format!("errors: {count} requests failed with {class}")
            }
            Breaker::ClientCpu {
                achieved_per_s,
                intended_per_s,
                dropped,
            } => format!(
                "the client's own CPU: {achieved_per_s:.1}/s achieved of {intended_per_s:.1}/s \
                 intended with no error{}",
                dropped.map_or_else(String::new, |d| format!(" ({d} starts dropped)"))
            ),
            Breaker::ServerLatency { p99_us, max_p99_us } => format!(
                "server latency: p99 {:.1} ms over --max-p99 {:.1} ms",
                *p99_us as f64 / 1e3,
                *max_p99_us as f64 / 1e3
            ),
        }
    }
}

/// The rate the client can keep up for good from its port budget: every close pins its port
/// for the TIME_WAIT length (or, where tcp_tw_reuse applies, until reuse may take it), so
/// towards one destination at most `ports × source addresses / hold` connections a second.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortBound {
    /// Client ports towards the target (usable ports × source addresses).
    pub ports: u64,
    pub source_ips: u32,
    /// Seconds a closed connection holds its port: TIME_WAIT's 60, or the reuse delay.
    pub hold_s: f64,
    pub tw_reuse_applies: bool,
    /// `ports / hold_s`.
    pub rate_per_s: f64,
}

impl PortBound {
    /// From a record's port budget and sysctls; none when the client holds no TIME_WAIT in
    /// this mode (the server closes, or resets) or the port range could not be read.
    pub fn of(record: &RunRecord) -> Option<PortBound> {
        if record.config.mode.time_wait_side() != Some(Side::Client) {
            return None;
        }
        let budget = &record.port_budget;
        let ports = budget.ports_per_destination?;
        let hold_s = if budget.tw_reuse_applies {
            let delay = record.kernel.sysctls.get("net.ipv4.tcp_tw_reuse_delay");
            tcp::reuse_delay_s(delay.and_then(|v| v.parse().ok()))
        } else {
            TIME_WAIT_SECS as f64
        };
        Some(PortBound {
            ports,
            source_ips: budget.source_ips,
            hold_s,
            tw_reuse_applies: budget.tw_reuse_applies,
            rate_per_s: ports as f64 / hold_s,
        })
    }

    pub fn describe(&self) -> String {
        let why = if self.tw_reuse_applies {
            "tcp_tw_reuse takes a port over"
        } else {
            "TIME_WAIT, tcp_tw_reuse not applying"
        };
        format!(
            "{}/s for good: {} client ports / {} s each ({why})",
            crate::format::number(self.rate_per_s),
            self.ports,
            crate::format::tenths(self.hold_s)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mode;
    use crate::report::sample;

    const T: Thresholds = Thresholds {
        max_error_rate: 0.01,
        max_p99_us: Some(50_000),
        min_achieved: MIN_ACHIEVED,
    };

    /// A 5 s record at `rate` of the client closing, 100 ports, tcp_tw_reuse=0, and `ok` of
    /// `total` requests ok, the rest failed with `class`.
    fn step(rate: f64, total: u64, ok: u64, class: &str) -> RunRecord {
        let mut r = sample::record(Mode::ClientClose, &vec![1000; total as usize], 0, 5);
        r.config.rate = Some(rate);
        r.requests.ok = ok;
        if ok < total {
            r.requests.errors.insert(class.to_string(), total - ok);
        }
        r.throughput.rps = total as f64 / 5.0;
        r.kernel.sysctls.extend([
            ("net.ipv4.tcp_tw_reuse".to_string(), "0".to_string()),
            (
                "net.ipv4.ip_local_port_range".to_string(),
                "40000 40099".to_string(),
            ),
        ]);
        r.port_budget.usable_ports = Some(100);
        r.port_budget.ports_per_destination = Some(100);
        r.port_budget.tw_reuse_applies = false;
        r
    }

    fn judged(r: &RunRecord, rate: f64) -> (Vec<Crossed>, Breaker) {
        let crossed = crossed(r, rate, &T);
        let breaker = Breaker::name(r, rate, &crossed, &T);
        (crossed, breaker)
    }

    #[test]
    fn a_step_on_schedule_without_errors_holds() {
        assert!(crossed(&step(20.0, 100, 100, ""), 20.0, &T).is_empty());
        // One start of rounding slack: 7 starts of the 7.5 due at 1.5/s in 5 s.
        assert!(crossed(&step(1.5, 7, 7, ""), 1.5, &T).is_empty());
        // Errors at the threshold hold; over it they break.
        assert!(crossed(&step(20.0, 100, 99, "EADDRNOTAVAIL"), 20.0, &T).is_empty());
        assert_eq!(
            crossed(&step(20.0, 100, 98, "EADDRNOTAVAIL"), 20.0, &T),
            [Crossed::Errors]
        );
    }

    #[test]
    fn eaddrnotavail_names_the_port_range() {
        let (crossed, breaker) = judged(&step(40.0, 200, 99, "EADDRNOTAVAIL"), 40.0);
        assert_eq!(crossed, [Crossed::Errors]);
        assert!(
            matches!(
                breaker,
                Breaker::ClientPorts {
                    eaddrnotavail: 101,
                    ports: Some(100),
                    tw_reuse_applies: false,
                    ..
                }
            ),
            "{breaker:?}"
        );
        let text = breaker.describe();
        assert_eq!(breaker.short(), "client ports (101 EADDRNOTAVAIL)");
        assert!(
            text.starts_with("the client's port range: 101 connects failed with EADDRNOTAVAIL")
                && text.contains("(ip_local_port_range 40000 40099)"),
            "{text}"
        );
    }

    #[test]
    fn overflow_refusals_and_other_errors_are_told_apart() {
        let mut r = step(40.0, 200, 150, "ECONNRESET");
        r.time_wait.server.overflow = Some(7);
        assert_eq!(
            judged(&r, 40.0).1,
            Breaker::TimeWaitOverflow {
                side: Side::Server,
                overflow: 7
            }
        );
        let mut r = step(40.0, 200, 150, "ECONNREFUSED");
        r.requests.errors.insert("timeout".to_string(), 10);
        assert_eq!(
            judged(&r, 40.0).1,
            Breaker::AcceptQueue {
                refused: 50,
                timeouts: 10
            }
        );
        let (_, b) = judged(&step(40.0, 200, 150, "http_5xx"), 40.0);
        assert_eq!(
            b,
            Breaker::Errors {
                class: "http_5xx".to_string(),
                count: 50
            }
        );
        assert_eq!(b.describe(), "errors: 50 requests failed with http_5xx");
    }

    #[test]
    fn a_shortfall_without_errors_is_the_client_and_slow_answers_the_server() {
        let mut r = step(1000.0, 3000, 3000, "");
        r.requests.dropped = Some(2000);
        let (crossed, b) = judged(&r, 1000.0);
        assert_eq!(crossed, [Crossed::Achieved]);
        assert!(
            b.describe()
                .starts_with("the client's own CPU: 600.0/s achieved of 1000.0/s"),
            "{}",
            b.describe()
        );

        let mut r = step(20.0, 100, 100, "");
        r.latency_us.total.p99 = 80_000;
        let (crossed, b) = judged(&r, 20.0);
        assert_eq!(crossed, [Crossed::P99]);
        assert_eq!(
            b.describe(),
            "server latency: p99 80.0 ms over --max-p99 50.0 ms"
        );
    }

    #[test]
    fn the_port_bound_is_ports_over_how_long_each_is_held() {
        let r = step(20.0, 100, 100, "");
        let bound = PortBound::of(&r).unwrap();
        assert_eq!((bound.ports, bound.hold_s), (100, 60.0));
        assert!((bound.rate_per_s - 100.0 / 60.0).abs() < 1e-9);
        assert_eq!(
            bound.describe(),
            "1.67/s for good: 100 client ports / 60 s each (TIME_WAIT, tcp_tw_reuse not applying)"
        );
        // Reuse with a 100 ms delay: ten times a second per port.
        let mut r = step(20.0, 100, 100, "");
        r.port_budget.tw_reuse_applies = true;
        r.kernel
            .sysctls
            .insert("net.ipv4.tcp_tw_reuse_delay".to_string(), "100".to_string());
        assert_eq!(PortBound::of(&r).unwrap().rate_per_s, 1000.0);
        // No TIME_WAIT on the client: the ports do not bound the rate.
        let mut r = step(20.0, 100, 100, "");
        r.config.mode = Mode::ServerClose;
        assert_eq!(PortBound::of(&r), None);
    }
}
