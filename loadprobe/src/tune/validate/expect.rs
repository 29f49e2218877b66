//! What each `--set` should change, by docs/kernel.md §5, next to what the runs show. A tuning
//! that "works" for the wrong reason (fewer errors, but no reuse) shows here as an expectation
//! not met, even when the verdict is `improved`.

use serde::Serialize;

use super::settings::Setting;
use crate::report::RunRecord;
use crate::tune::Place;
use crate::tune::verdict::MetricDelta;

/// One `--set` and what it was expected to do.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Expectation {
    /// `KEY=VALUE`.
    pub setting: String,
    pub place: Place,
    pub expect: String,
    /// The figures that show it, baseline -> tuned (per-run means).
    pub seen: String,
    /// Whether the runs show it; null when they cannot tell (e.g. no client TIME_WAIT at all).
    pub met: Option<bool>,
}

/// Baseline and tuned means of a metric (0 when absent, e.g. an error class neither run saw).
fn pair(metrics: &[MetricDelta], name: &str) -> (f64, f64) {
    metrics
        .iter()
        .find(|m| m.metric == name)
        .map_or((0.0, 0.0), |m| (m.baseline, m.tuned))
}

fn arrow((a, b): (f64, f64)) -> String {
    let n = |v: f64| {
        if (v - v.round()).abs() < 0.05 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    format!("{} -> {}", n(a), n(b))
}

fn mean(records: &[RunRecord], f: impl Fn(&RunRecord) -> f64) -> f64 {
    if records.is_empty() {
        return 0.0;
    }
    records.iter().map(f).sum::<f64>() / records.len() as f64
}

/// One expectation per `--set`.
pub fn expectations(
    set: &[Setting],
    metrics: &[MetricDelta],
    baseline: &[RunRecord],
    tuned: &[RunRecord],
) -> Vec<Expectation> {
    set.iter()
        .map(|s| {
            let (expect, seen, met) = judge(s, metrics, baseline, tuned);
            Expectation {
                setting: s.display(),
                place: s.place,
                expect,
                seen,
                met,
            }
        })
        .collect()
}

fn judge(
    s: &Setting,
    metrics: &[MetricDelta],
    baseline: &[RunRecord],
    tuned: &[RunRecord],
) -> (String, String, Option<bool>) {
    let eaddr = pair(metrics, "errors.EADDRNOTAVAIL");
    let reused = pair(metrics, "time_wait.client.reused");
    let entered = pair(metrics, "time_wait.client.entered");
    let name = s.key.rsplit('.').next().unwrap_or(&s.key);
    let v = s.value.as_str();
    match name {
        "tcp_tw_reuse" => {
            let seen = format!(
                "client TIME_WAIT reused {}, EADDRNOTAVAIL {}",
                arrow(reused),
                arrow(eaddr)
            );
            let (expect, met) = match v {
                "1" => (
                    "connect() takes over client TIME_WAIT ports older than tcp_tw_reuse_delay: \
                     client TIME_WAIT ends as reused, EADDRNOTAVAIL falls"
                        .to_string(),
                    (entered.1 > 0.0).then_some(reused.1 > 0.0 && eaddr.1 <= eaddr.0),
                ),
                "2" => (
                    "loopback only: over veth no TIME_WAIT is reused".to_string(),
                    Some(reused.1 == 0.0),
                ),
                _ => ("no TIME_WAIT is reused".to_string(), Some(reused.1 == 0.0)),
            };
            (expect, seen, met)
        }
        "tcp_tw_reuse_delay" => (
            format!(
                "with tcp_tw_reuse on, a client TIME_WAIT port may be reused {v} ms after it \
                 started: a shorter delay reuses more"
            ),
            format!("client TIME_WAIT reused {}", arrow(reused)),
            None,
        ),
        "tcp_timestamps" if v == "0" => (
            "without timestamps no TIME_WAIT is reused, whatever tcp_tw_reuse says".to_string(),
            format!("client TIME_WAIT reused {}", arrow(reused)),
            Some(reused.1 == 0.0),
        ),
        "tcp_timestamps" => (
            "timestamps let tcp_tw_reuse take over TIME_WAIT ports".to_string(),
            format!("client TIME_WAIT reused {}", arrow(reused)),
            None,
        ),
        "ip_local_port_range" | "ip_local_reserved_ports" => {
            let ports =
                |rs: &[RunRecord]| mean(rs, |r| f64::from(r.port_budget.usable_ports.unwrap_or(0)));
            let (pa, pb) = (ports(baseline), ports(tuned));
            let met = match pb.total_cmp(&pa) {
                std::cmp::Ordering::Greater => Some(eaddr.1 <= eaddr.0),
                std::cmp::Ordering::Less => Some(eaddr.1 >= eaddr.0),
                std::cmp::Ordering::Equal => None,
            };
            (
                "more usable ephemeral ports per destination hold more client TIME_WAIT before \
                 connect() fails with EADDRNOTAVAIL (fewer: sooner)"
                    .to_string(),
                format!(
                    "usable ports {}, EADDRNOTAVAIL {}",
                    arrow((pa, pb)),
                    arrow(eaddr)
                ),
                met,
            )
        }
        "tcp_max_tw_buckets" => {
            let over_c = pair(metrics, "time_wait.client.overflow");
            let over_s = pair(metrics, "time_wait.server.overflow");
            let peak_c = pair(metrics, "time_wait.client.peak");
            let peak_s = pair(metrics, "time_wait.server.peak");
            let limit: Option<f64> = v.parse().ok();
            (
                format!(
                    "at most {v} TIME_WAIT sockets per namespace; beyond that none is created \
                     (overflow, no log) and the connection loses TIME_WAIT's protection"
                ),
                format!(
                    "overflow client {} server {}, peak client {} server {}",
                    arrow(over_c),
                    arrow(over_s),
                    arrow(peak_c),
                    arrow(peak_s)
                ),
                limit.map(|l| peak_c.1 <= l && peak_s.1 <= l),
            )
        }
        "tcp_fin_timeout" => (
            "only orphaned FIN_WAIT2 sockets live shorter; TIME_WAIT stays 60 s and its peak \
             does not change"
                .to_string(),
            format!(
                "TIME_WAIT peak client {} server {}",
                arrow(pair(metrics, "time_wait.client.peak")),
                arrow(pair(metrics, "time_wait.server.peak"))
            ),
            None,
        ),
        "somaxconn" | "tcp_max_syn_backlog" => {
            let connect_p99 = |rs: &[RunRecord]| mean(rs, |r| r.latency_us.connect.p99 as f64);
            let timeouts = pair(metrics, "errors.timeout");
            (
                "a full accept queue or SYN backlog drops SYNs: connects take 1 s or more \
                 (SYN retransmit) or time out"
                    .to_string(),
                format!(
                    "connect p99 {:.2} -> {:.2} ms, timeouts {}",
                    connect_p99(baseline) / 1000.0,
                    connect_p99(tuned) / 1000.0,
                    arrow(timeouts)
                ),
                None,
            )
        }
        _ => (
            "no specific expectation: see the metrics".to_string(),
            String::new(),
            None,
        ),
    }
}
