//! The comparison tables: which metrics are shown, in which sections, and their values and
//! changes, already formatted so every renderer prints the same digits.

use std::collections::BTreeSet;

use super::Run;
use super::metrics::lookup;
use super::noise::{Noise, assess};
use crate::format::{change, number};
use crate::model::{Closer, Side};

/// Which way is better for a metric, to colour its changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Neither: a count that only describes the run.
    Neither,
}

/// How a change reads, for colour: better, worse, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Better,
    Worse,
    Neutral,
}

/// One non-base run's change from the base on one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `+1,234 (+12.3%)`, `0`, or empty when a side is not known.
    pub text: String,
    pub tone: Tone,
    pub noise: Noise,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NumberRow {
    pub path: String,
    /// One per run; `n/a` where the run does not know it.
    pub values: Vec<String>,
    /// One per non-base run.
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextRow {
    pub path: String,
    pub values: Vec<String>,
    /// Not every run has the same value: highlighted.
    pub differs: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Number(NumberRow),
    Text(TextRow),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub title: String,
    pub rows: Vec<Row>,
}

/// Rows hidden when every run has 0 (or null) there: rare outcomes that would only add lines.
const RARE: &[&str] = &[
    "connections.closer.simultaneous",
    "connections.closer.client-reset",
    "connections.closer.server-reset",
    "connections.closer.refused",
    "connections.closer.unknown",
    "connections.server_fin_missing",
    "requests.dropped",
    "requests.unfinished",
    "requests.stale_connection",
    "requests.retried",
    "expired",
    "reused",
    "killed",
    "overflow",
    "port_budget.eaddrnotavail",
];

/// The sections for `runs` (the first is the base).
pub fn sections(runs: &[Run]) -> Vec<Section> {
    let mut out = Vec::new();
    let n = |path: &str, better: Better| number_row(runs, path, better);

    out.push(Section {
        title: "Throughput".into(),
        rows: vec![
            n("throughput.rps", Better::Higher),
            n("throughput.connections_per_s", Better::Neither),
            n("duration_s", Better::Neither),
        ],
    });

    let mut requests = vec![
        n("requests.total", Better::Neither),
        n("requests.ok", Better::Higher),
        n("requests.errors", Better::Lower),
    ];
    let classes: BTreeSet<&String> = runs
        .iter()
        .flat_map(|r| r.record.requests.errors.keys())
        .collect();
    for class in classes {
        requests.push(n(&format!("requests.errors.{class}"), Better::Lower));
    }
    for key in ["dropped", "unfinished", "stale_connection", "retried"] {
        requests.push(n(&format!("requests.{key}"), Better::Lower));
    }
    out.push(Section {
        title: "Requests".into(),
        rows: requests,
    });

    let open_model = runs.iter().any(|r| r.record.config.model == "open");
    let tls = runs
        .iter()
        .any(|r| r.record.latency_us.tls_handshake.is_some());
    for (key, title) in [
        ("total", "Latency, total (µs)"),
        ("total_uncorrected", "Latency, total uncorrected (µs)"),
        ("connect", "Latency, connect (µs)"),
        ("first_byte", "Latency, first byte (µs)"),
        ("tls_handshake", "Latency, TLS handshake (µs)"),
    ] {
        if key == "total_uncorrected" && !open_model {
            // Equal to `total` in the closed model: nothing to add.
            continue;
        }
        if key == "tls_handshake" && !tls {
            // Plain HTTP runs only: no handshake to show.
            continue;
        }
        out.push(Section {
            title: title.into(),
            rows: ["p50", "p90", "p99", "p999", "max", "mean"]
                .iter()
                .map(|p| n(&format!("latency_us.{key}.{p}"), Better::Lower))
                .collect(),
        });
    }

    if tls {
        out.push(Section {
            title: "TLS handshakes".into(),
            rows: vec![
                n("tls.full_handshakes", Better::Neither),
                n("tls.resumed_handshakes", Better::Neither),
            ],
        });
    }
    // A scenario's requests, each in a section of its own, by name.
    let names: BTreeSet<&String> = runs
        .iter()
        .flat_map(|r| r.record.by_request.keys())
        .collect();
    for name in names {
        let p = |key: &str| format!("by_request.{name}.{key}");
        let mut rows = vec![
            n(&p("requests.total"), Better::Neither),
            n(&p("requests.ok"), Better::Higher),
            n(&p("requests.errors"), Better::Lower),
        ];
        let classes: BTreeSet<&String> = runs
            .iter()
            .filter_map(|r| r.record.by_request.get(name))
            .flat_map(|f| f.requests.errors.keys())
            .collect();
        for class in classes {
            rows.push(n(&p(&format!("requests.errors.{class}")), Better::Lower));
        }
        rows.push(n(&p("requests.unfinished"), Better::Lower));
        for q in ["p50", "p90", "p99", "p999", "max", "mean"] {
            rows.push(n(&p(&format!("latency_us.total.{q}")), Better::Lower));
        }
        rows.push(n(&p("connections_opened"), Better::Neither));
        out.push(Section {
            title: format!("Request {name} (latency total, µs)"),
            rows,
        });
    }

    let mut connections = vec![n("connections.opened", Better::Neither)];
    for closer in Closer::ALL.map(Closer::name) {
        connections.push(n(&format!("connections.closer.{closer}"), Better::Neither));
    }
    connections.push(n("connections.mismatches", Better::Lower));
    connections.push(n("connections.server_fin_missing", Better::Lower));
    out.push(Section {
        title: "Connections".into(),
        rows: connections,
    });

    for side in Side::ALL {
        let mut rows = Vec::new();
        if side == Side::Client {
            rows.push(text_row(runs, "time_wait.source", |r| {
                r.record.time_wait.source.clone()
            }));
        }
        // Whether more TIME_WAIT is worse depends on the side and the port budget (below), so
        // only overflow (sockets the kernel could not keep) is coloured.
        for (key, better) in [
            ("entered", Better::Neither),
            ("peak", Better::Neither),
            ("open", Better::Neither),
            ("expired", Better::Neither),
            ("reused", Better::Neither),
            ("killed", Better::Neither),
            ("overflow", Better::Lower),
            ("duration_ms.p50", Better::Neither),
            ("duration_ms.p99", Better::Neither),
            ("duration_ms.max", Better::Neither),
        ] {
            rows.push(n(&format!("time_wait.{side}.{key}"), better));
        }
        out.push(Section {
            title: format!("TIME_WAIT, {side} side"),
            rows,
        });
    }

    out.push(Section {
        title: "Port budget".into(),
        rows: vec![
            n("port_budget.ports_per_destination", Better::Higher),
            n("port_budget.client_time_wait_per_s", Better::Lower),
            n("port_budget.ports_needed", Better::Lower),
            n("port_budget.headroom", Better::Higher),
            n("port_budget.exhaustion_after_s", Better::Higher),
            n("port_budget.eaddrnotavail", Better::Lower),
            text_row(runs, "port_budget.verdict", |r| {
                r.record.port_budget.verdict.clone()
            }),
        ],
    });

    out.push(Section {
        title: "Probe".into(),
        rows: vec![
            text_row(runs, "probe.attached", |r| {
                match (r.record.probe.attached, &r.record.probe.reason) {
                    (true, _) => "yes".into(),
                    (false, Some(reason)) => format!("no: {reason}"),
                    (false, None) => "no".into(),
                }
            }),
            n("probe.lost_events", Better::Lower),
            n("probe.skipped_events", Better::Lower),
            n("probe.read_errors", Better::Lower),
        ],
    });

    let mut kernel = vec![text_row(runs, "kernel.release", |r| {
        r.record.kernel.release.clone()
    })];
    let sysctls: BTreeSet<&String> = runs
        .iter()
        .flat_map(|r| r.record.kernel.sysctls.keys())
        .collect();
    for name in sysctls {
        // Named as sysctl(8) names them: shorter than the record path, and what people search.
        kernel.push(text_row(runs, name, |r| {
            match r.record.kernel.sysctls.get(name) {
                None => "absent".into(),
                Some(v) if v.trim().is_empty() => "(empty)".into(),
                Some(v) => v.split_whitespace().collect::<Vec<_>>().join(" "),
            }
        }));
    }
    out.push(Section {
        title: "Kernel".into(),
        rows: kernel,
    });

    for s in &mut out {
        s.rows.retain(shown);
    }
    out.retain(|s| !s.rows.is_empty());
    out
}

/// Rows where no run knows the figure are left out, and rare outcomes where every run has 0.
fn shown(row: &Row) -> bool {
    let Row::Number(r) = row else { return true };
    let known: Vec<&String> = r.values.iter().filter(|v| *v != "n/a").collect();
    if known.is_empty() {
        return false;
    }
    let rare = RARE
        .iter()
        .any(|k| r.path == *k || r.path.ends_with(&format!(".{k}")));
    !(rare && known.iter().all(|v| *v == "0"))
}

fn number_row(runs: &[Run], path: &str, better: Better) -> Row {
    let values: Vec<Option<f64>> = runs.iter().map(|r| value(r, path)).collect();
    let reps: Vec<Vec<f64>> = runs.iter().map(|r| r.repetition_values(path)).collect();
    let base = values.first().copied().flatten();
    let changes = values
        .iter()
        .zip(&reps)
        .skip(1)
        .map(|(v, rep)| match (base, *v) {
            (Some(b), Some(v)) => {
                let d = v - b;
                let tone = match better {
                    _ if d == 0.0 => Tone::Neutral,
                    Better::Neither => Tone::Neutral,
                    Better::Higher if d > 0.0 => Tone::Better,
                    Better::Lower if d < 0.0 => Tone::Better,
                    _ => Tone::Worse,
                };
                Change {
                    text: change(b, v),
                    tone,
                    // No change, nothing to judge.
                    noise: if d == 0.0 {
                        Noise::CannotTell
                    } else {
                        assess(&reps[0], rep)
                    },
                }
            }
            _ => Change {
                text: String::new(),
                tone: Tone::Neutral,
                noise: Noise::CannotTell,
            },
        })
        .collect();
    Row::Number(NumberRow {
        path: path.to_string(),
        values: values
            .iter()
            .map(|v| v.map_or("n/a".into(), number))
            .collect(),
        changes,
    })
}

/// The figure a row shows. A side that had no TIME_WAIT socket has no lifetimes: the record
/// says 0 there, the table says n/a, so "0 ms" is not read as a measured lifetime.
fn value(run: &Run, path: &str) -> Option<f64> {
    if let Some((side, _)) = path
        .strip_prefix("time_wait.")
        .and_then(|p| p.split_once(".duration_ms."))
        && lookup(&run.json, &format!("time_wait.{side}.entered")).number() == Some(0.0)
    {
        return None;
    }
    lookup(&run.json, path).number()
}

fn text_row(runs: &[Run], path: &str, value: impl Fn(&Run) -> String) -> Row {
    let values: Vec<String> = runs.iter().map(value).collect();
    let differs = values.iter().any(|v| *v != values[0]);
    Row::Text(TextRow {
        path: path.to_string(),
        values,
        differs,
    })
}
