//! The top of every report: what the runs were, how they differ in setup (mode, target, load,
//! sources), and the few lines a person reads first, TIME_WAIT per side above all, since where
//! TIME_WAIT sits is what changing the close mode is usually about.

use super::Run;
use super::metrics::lookup;
use super::noise::{Noise, assess};
use crate::format::{number, percent, tenths};
use crate::model::{Closer, Side};

/// The headline: an optional one-sentence verdict and labelled lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Headline {
    /// "TIME_WAIT moved from the client to the server", and the like.
    pub verdicts: Vec<String>,
    pub lines: Vec<(String, String)>,
}

/// One line per run: what it was.
pub fn describe(run: &Run) -> String {
    let r = &run.record;
    let c = &r.config;
    let load = match (c.model.as_str(), c.users, c.rate) {
        ("open", _, Some(rate)) => format!("{} req/s open model", number(rate)),
        (_, Some(users), _) => format!("{users} users"),
        _ => c.model.clone(),
    };
    let reps = match r.repetitions.as_ref().map_or(0, Vec::len) {
        0 | 1 => "single run".to_string(),
        n => format!("{n} repetitions"),
    };
    let mut parts = vec![
        c.mode.to_string(),
        target(run),
        load,
        format!("{:.1} s", r.duration_s),
        reps,
    ];
    if let Some(s) = &c.scenario {
        parts.insert(
            1,
            format!(
                "scenario of {} requests (seed {})",
                s.requests.len(),
                s.seed
            ),
        );
    }
    if !r.merged_from.is_empty() && r.repetitions.is_none() {
        parts.push(format!("merged from {} records", r.merged_from.len()));
    }
    parts.push(
        if r.probe.attached {
            "probe"
        } else {
            "no probe"
        }
        .to_string(),
    );
    if r.interrupted {
        parts.push("interrupted".into());
    }
    parts.join(", ")
}

/// The target as compared: the embedded server gets a new port every run, so it is one target.
fn target(run: &Run) -> String {
    if run.record.config.embedded_server {
        "embedded server".into()
    } else {
        run.record.config.target.clone()
    }
}

/// Setup differences a reader must know before trusting a change: one sentence each.
pub fn differences(runs: &[Run]) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, value: &dyn Fn(&Run) -> String| {
        let values: Vec<String> = runs.iter().map(value).collect();
        if values.iter().any(|v| *v != values[0]) {
            let list: Vec<String> = runs
                .iter()
                .zip(&values)
                .map(|(r, v)| format!("{v} ({})", r.label))
                .collect();
            out.push(format!("Runs differ in {what}: {}.", list.join(", ")));
        }
    };
    check("mode", &|r| r.record.config.mode.to_string());
    check("target", &target);
    check("load", &|r| {
        let c = &r.record.config;
        match (c.users, c.rate) {
            (Some(u), _) => format!("{u} users"),
            (_, Some(rate)) => format!("{} req/s", number(rate)),
            _ => c.model.clone(),
        }
    });
    check("TIME_WAIT source", &|r| r.record.time_wait.source.clone());
    check("kernel", &|r| r.record.kernel.release.clone());
    let base = &runs[0].record.kernel.sysctls;
    let mut changed: Vec<&str> = runs
        .iter()
        .flat_map(|r| r.record.kernel.sysctls.iter())
        .filter(|(k, v)| base.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .chain(
            base.keys()
                .filter(|k| {
                    runs.iter()
                        .any(|r| !r.record.kernel.sysctls.contains_key(*k))
                })
                .map(String::as_str),
        )
        .collect();
    changed.sort_unstable();
    changed.dedup();
    if !changed.is_empty() {
        out.push(format!(
            "Sysctls differ: {} (see Kernel).",
            changed.join(", ")
        ));
    }
    for r in runs {
        let parts = &r.record.merged_from;
        if parts.iter().any(|p| p.kernel != parts[0].kernel) {
            out.push(format!(
                "{} merges records taken with different kernels or sysctls (see merged_from).",
                r.label
            ));
        }
    }
    for r in runs.iter().filter(|r| r.record.interrupted) {
        out.push(format!(
            "{} was interrupted: its figures cover what ran.",
            r.label
        ));
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    One(Side),
    Neither,
}

/// Which side holds the run's TIME_WAIT (most sockets entered; peak if entered is unknown).
fn holder(run: &Run) -> Option<Holder> {
    let figure = |side: Side| {
        let side = side.name();
        lookup(&run.json, &format!("time_wait.{side}.entered"))
            .number()
            .or_else(|| lookup(&run.json, &format!("time_wait.{side}.peak")).number())
    };
    let (c, s) = (figure(Side::Client)?, figure(Side::Server)?);
    Some(if c > s {
        Holder::One(Side::Client)
    } else if s > c {
        Holder::One(Side::Server)
    } else if c == 0.0 {
        Holder::Neither
    } else {
        // Both sides equally: no single holder to speak of.
        return None;
    })
}

fn verdict(base: Option<Holder>, other: Option<Holder>) -> Option<String> {
    use Holder::*;
    Some(match (base?, other?) {
        (Neither, Neither) => "No TIME_WAIT on either side".into(),
        (One(a), One(b)) if a == b => format!("TIME_WAIT stays on the {} side", a.name()),
        (Neither, One(b)) => format!("TIME_WAIT appears on the {} side", b.name()),
        (One(a), Neither) => format!(
            "TIME_WAIT on the {} side is gone: none on either side",
            a.name()
        ),
        (One(a), One(b)) => format!("TIME_WAIT moved from the {} to the {}", a.name(), b.name()),
    })
}

pub fn headline(runs: &[Run]) -> Headline {
    let base = holder(&runs[0]);
    let verdicts = runs
        .iter()
        .skip(1)
        .filter_map(|r| {
            let v = verdict(base, holder(r))?;
            Some(if runs.len() > 2 {
                format!("{}: {v}", r.label)
            } else {
                v
            })
        })
        .collect();

    let chain = |path: &str| -> String {
        runs.iter()
            .map(|r| lookup(&r.json, path).number().map_or("n/a".into(), number))
            .collect::<Vec<_>>()
            .join(" → ")
    };
    let with_change = |path: &str, unit: &str| -> String {
        let mut s = format!("{}{unit}", chain(path));
        if runs.len() == 2 {
            let (b, o) = (
                lookup(&runs[0].json, path).number(),
                lookup(&runs[1].json, path).number(),
            );
            if let (Some(b), Some(o)) = (b, o)
                && b != 0.0
            {
                s.push_str(&format!(" ({})", percent((o - b) / b.abs() * 100.0)));
            }
            if b == o {
                return s;
            }
            match noise(runs, path) {
                Noise::Significant => s.push_str(", significant"),
                Noise::WithinNoise => s.push_str(", within noise"),
                Noise::CannotTell => {}
            }
        }
        s
    };

    let mut lines = vec![(
        "TIME_WAIT".to_string(),
        format!(
            "client {}, server {} (sockets entered)",
            chain("time_wait.client.entered"),
            chain("time_wait.server.entered")
        ),
    )];
    lines.push(("closer".into(), closer_shares(runs)));
    lines.push(("throughput".into(), with_change("throughput.rps", " req/s")));
    lines.push((
        "latency p99".into(),
        with_change("latency_us.total.p99", " µs"),
    ));
    lines.push(("errors".into(), with_change("requests.errors", "")));
    lines.push(("noise".into(), noise_note(runs)));
    Headline { verdicts, lines }
}

fn noise(runs: &[Run], path: &str) -> Noise {
    assess(
        &runs[0].repetition_values(path),
        &runs[1].repetition_values(path),
    )
}

/// `client 100.0% → 0.0%, server 0.0% → 100.0%`: each closer seen in any run, as a share of
/// the connections whose closer was counted.
fn closer_shares(runs: &[Run]) -> String {
    let kinds = Closer::ALL.map(Closer::name);
    let share = |r: &Run, kind: &str| -> Option<f64> {
        let closer = r.json.pointer("/connections/closer")?.as_object()?;
        let total: f64 = closer.values().filter_map(|v| v.as_f64()).sum();
        let n = closer.get(kind)?.as_f64()?;
        (total > 0.0).then(|| n / total * 100.0)
    };
    let parts: Vec<String> = kinds
        .iter()
        .filter(|k| runs.iter().any(|r| share(r, k).is_some_and(|s| s > 0.0)))
        .map(|k| {
            let chain: Vec<String> = runs
                .iter()
                .map(|r| share(r, k).map_or("n/a".into(), |s| format!("{s:.1}%")))
                .collect();
            format!("{k} {}", chain.join(" → "))
        })
        .collect();
    if parts.is_empty() {
        "no connections".into()
    } else {
        parts.join(", ")
    }
}

/// What the noise markings rest on, or plainly that there are none.
fn noise_note(runs: &[Run]) -> String {
    let reps = |r: &Run| r.record.repetitions.as_ref().map_or(1, Vec::len).max(1);
    let counts: Vec<String> = runs
        .iter()
        .map(|r| match reps(r) {
            1 => format!("{}: 1 run", r.label),
            n => format!("{}: {n} repetitions", r.label),
        })
        .collect();
    if runs.iter().all(|r| reps(r) >= 2) {
        format!(
            "a change is significant when the repetitions' mean ± 2·sd/√n intervals do not \
             overlap ({})",
            counts.join(", ")
        )
    } else {
        format!(
            "cannot tell: single runs ({}); record with run --repeat N to tell changes from noise",
            counts.join(", ")
        )
    }
}

/// The sentence `report` puts on top of one run: where its TIME_WAIT sits, how high it got,
/// how soon connect() took the sockets over, and what that means for the client's ports.
/// E.g. "TIME_WAIT on the client, 14,210 at peak, reused after ~1 s: no exhaustion thanks to
/// tcp_tw_reuse=2".
pub fn run_verdict(run: &Run) -> String {
    let r = &run.record;
    let (name, side) = match holder(run) {
        Some(Holder::One(s)) => (s.name(), r.time_wait.side(s)),
        Some(Holder::Neither) => return "No TIME_WAIT on either side".into(),
        None if r.time_wait.source == "none" => {
            return "TIME_WAIT not measured (neither the probe nor sampling ran)".into();
        }
        None => return "TIME_WAIT on both sides alike".into(),
    };
    let mut s = format!("TIME_WAIT on the {name}");
    if let Some(peak) = side.peak {
        s.push_str(&format!(", {} at peak", number(peak as f64)));
    }
    if let (Some(reused), Some(p50)) = (side.reused, side.duration_ms.p50)
        && reused > 0
    {
        s.push_str(&format!(", reused after ~{} s", tenths(p50 as f64 / 1e3)));
    }
    let b = &r.port_budget;
    let reuse = r
        .kernel
        .sysctls
        .get("net.ipv4.tcp_tw_reuse")
        .map_or("?", |v| v.trim());
    let ports = match b.exhaustion_after_s {
        _ if b.eaddrnotavail > 0 => Some(format!(
            "ports exhausted, {} connects failed with EADDRNOTAVAIL",
            number(b.eaddrnotavail as f64)
        )),
        Some(_) if b.tw_reuse_applies => {
            Some(format!("no exhaustion thanks to tcp_tw_reuse={reuse}"))
        }
        Some(t) => Some(format!("ports run out after ~{t:.1} s at this rate")),
        None if name == "client" => b.headroom.filter(|h| *h > 0.0).map(|h| {
            format!(
                "{}% of the ports towards the target held",
                number((100.0 / h).round())
            )
        }),
        None => None,
    };
    if let Some(p) = ports {
        s.push_str(": ");
        s.push_str(&p);
    }
    s
}
