//! The text form of a validation: what was set where, each expectation against what the runs
//! showed, the per-metric table, and the verdict last, where the eye lands. At most 100 columns
//! (as `tune check`), so it pastes into an issue unchanged.

use super::Outcome;
use crate::tune::text::{WIDTH, wrap};
use crate::tune::verdict::{Effect, MetricDelta};

/// Renders `outcome`.
pub fn render(outcome: &Outcome) -> String {
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    let w = &outcome.workload;
    let load = match (w.rate, w.users) {
        (Some(rate), _) => format!("{rate}/s"),
        (None, Some(users)) => format!("{users} users"),
        (None, None) => String::new(),
    };
    let reps = if w.repeat == 1 {
        "1 run each".to_string()
    } else {
        format!("{} runs each, alternating", w.repeat)
    };
    let secs = w
        .duration_s
        .map(|d| format!(" for {d}s"))
        .unwrap_or_default();
    line(&format!(
        "tune validate: {} at {load}{secs}, {reps}, client and server namespaces joined by veth",
        w.mode
    ));
    for (flag, list) in [("base", &outcome.base), ("set", &outcome.set)] {
        for s in list {
            let text = format!("{:<5} {}", flag, s.display());
            line(&format!("  {text:<58} ({})", s.place.as_str()));
        }
    }
    line("");
    line("Expectations");
    for e in &outcome.expectations {
        let tag = match e.met {
            Some(true) => "seen",
            Some(false) => "NOT seen",
            None => "cannot tell",
        };
        line(&format!("  {}  [{tag}]", e.setting));
        wrap(&mut line, &e.expect, "    expect: ", "            ");
        if !e.seen.is_empty() {
            wrap(&mut line, &e.seen, "    runs:   ", "            ");
        }
    }
    line("");
    line(&format!(
        "{:<36}{:>14}{:>14}{:>10}  {}",
        "Per run", "baseline", "tuned", "change", "judged"
    ));
    for m in &outcome.metrics {
        if let Some(row) = row(m) {
            line(&row);
        }
    }
    line("");
    line(&format!("Verdict: {}", outcome.verdict.as_str()));
    wrap(&mut line, &outcome.reason, "  ", "  ");
    out
}

/// A table row, or `None` for a TIME_WAIT figure that is 0 in both (only the peak is always
/// shown).
fn row(m: &MetricDelta) -> Option<String> {
    let (label, scale, decimals) = label(&m.metric);
    let quiet_tw = m.metric.starts_with("time_wait.") && !m.metric.ends_with(".peak");
    if quiet_tw && m.baseline == 0.0 && m.tuned == 0.0 {
        return None;
    }
    let value = |v: f64| {
        let v = v / scale;
        // Counts are whole in a single run; a mean over repetitions may not be.
        let decimals = if decimals == 0 && v.fract() != 0.0 {
            1
        } else {
            decimals
        };
        format!("{v:.decimals$}")
    };
    let change = match m.delta_pct {
        _ if m.delta == 0.0 => "0".to_string(),
        Some(p) => format!("{p:+.0}%"),
        None => format!("+{}", value(m.delta)),
    };
    let judged = match m.effect {
        Effect::Better => "better",
        Effect::Worse => "WORSE",
        Effect::Same => "same (noise)",
        Effect::Info => "",
    };
    let text = format!(
        "  {label:<34}{:>14}{:>14}{change:>10}  {judged}",
        value(m.baseline),
        value(m.tuned)
    );
    Some(text.trim_end().chars().take(WIDTH).collect())
}

/// Row label, the divisor to its unit, and decimals.
fn label(metric: &str) -> (String, f64, usize) {
    match metric {
        "errors" => ("failed requests".into(), 1.0, 0),
        "ok_per_s" => ("successful requests/s".into(), 1.0, 1),
        "latency_p50_us" => ("latency p50 (ms)".into(), 1000.0, 2),
        "latency_p99_us" => ("latency p99 (ms)".into(), 1000.0, 2),
        m => match (m.strip_prefix("errors."), m.strip_prefix("time_wait.")) {
            (Some(class), _) => (format!("  {class}"), 1.0, 0),
            (_, Some(rest)) => (format!("TIME_WAIT {}", rest.replace('.', " ")), 1.0, 0),
            _ => (m.to_string(), 1.0, 1),
        },
    }
}
