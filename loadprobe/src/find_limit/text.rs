//! The text summary `find-limit` prints: the search, one line per step, and the answer.

use std::fmt::Write;

use super::{Stopped, Summary, rate_name};
use crate::format::number;

pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    let target = match s.target.as_str() {
        "embedded" => "the embedded server (fresh namespaces per step)".into(),
        url => url.to_string(),
    };
    let _ = writeln!(
        out,
        "find-limit: {} against {target}, {} s per step",
        s.mode,
        crate::format::tenths(s.step_duration_s)
    );
    for setting in &s.sysctls {
        let _ = writeln!(out, "  sysctl   {} ({})", setting.display(), setting.place);
    }
    let mut breaks = format!(
        "errors over {}%",
        crate::format::tenths(100.0 * s.thresholds.max_error_rate)
    );
    if let Some(p99) = s.thresholds.max_p99_us {
        let _ = write!(breaks, ", p99 over {} ms", number(p99 as f64 / 1e3));
    }
    let _ = writeln!(
        out,
        "  a step breaks on {breaks}, or under {}% of the intended rate achieved",
        100.0 * s.thresholds.min_achieved
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "step      rate/s   achieved/s   errors    p99 ms  result"
    );
    for step in &s.steps {
        let result = match (step.held, &step.broke) {
            (None, _) => "interrupted, not judged".to_string(),
            (Some(true), _) => "held".to_string(),
            (Some(false), Some(broke)) => format!("broke: {}", broke.short()),
            (Some(false), None) => "broke".to_string(),
        };
        let _ = writeln!(
            out,
            "{:>4}  {:>10}  {:>11}  {:>6.1}%  {:>8}  {result}",
            step.step,
            rate_name(step.rate),
            number(step.figures.achieved_per_s),
            100.0 * step.figures.error_rate,
            step.figures
                .p99_us
                .map_or_else(|| "-".to_string(), |p| number(p as f64 / 1e3)),
        );
    }
    let _ = writeln!(out);
    let held = s.highest_held_rate.map_or_else(
        || "none: even the lowest rate tried broke".to_string(),
        |r| format!("{}/s", rate_name(r)),
    );
    field(&mut out, "highest rate that held for a step", &held);
    if let Some(bound) = &s.port_bound {
        field(
            &mut out,
            "sustainable from the port budget",
            &bound.describe(),
        );
    }
    let broke = match (&s.broke_text, s.lowest_broken_rate) {
        (Some(text), Some(rate)) => format!("at {}/s, {text}", rate_name(rate)),
        _ => "nothing".to_string(),
    };
    field(&mut out, "what broke", &broke);
    let ended = match s.stopped {
        Stopped::Converged => format!(
            "converged: held and broke within {}% of each other",
            crate::format::tenths(100.0 * s.search.resolution)
        ),
        Stopped::StepBudget => format!(
            "the step budget (--max-steps {}) ran out before the resolution",
            s.search.max_steps
        ),
        Stopped::CapHeld => format!(
            "nothing broke up to the cap, --max-rate {}/s",
            s.search.max_rate.map_or_else(String::new, rate_name)
        ),
        Stopped::Interrupted => "interrupted: the steps done are kept".to_string(),
        Stopped::Failed => format!(
            "failed: {}",
            s.error.as_deref().unwrap_or("a step could not be run")
        ),
    };
    field(&mut out, "search ended", &ended);
    out
}

/// Width of the labels of the closing lines; their values wrap to [`WIDTH`].
const LABEL: usize = 36;
const WIDTH: usize = 100;

fn field(out: &mut String, label: &str, value: &str) {
    for (i, line) in crate::format::wrap(value, WIDTH - LABEL).iter().enumerate() {
        let label = if i == 0 { label } else { "" };
        let _ = writeln!(out, "{label:<LABEL$}{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::find_limit::{Breaker, Figures, PortBound, SCHEMA, SearchPlan, Step, Thresholds};
    use crate::model::Mode;

    fn step(k: u32, rate: f64, broke: Option<Breaker>) -> Step {
        Step {
            step: k,
            rate,
            file: None,
            held: Some(broke.is_none()),
            crossed: Vec::new(),
            figures: Figures {
                achieved_per_s: rate,
                error_rate: if broke.is_some() { 0.5 } else { 0.0 },
                p99_us: Some(2_500),
            },
            errors: Default::default(),
            broke_text: broke.as_ref().map(Breaker::describe),
            broke,
            drain_wait_s: None,
        }
    }

    #[test]
    fn the_summary_says_what_held_what_is_sustainable_and_what_broke_in_100_columns() {
        let broke = Breaker::ClientPorts {
            eaddrnotavail: 100,
            port_range: Some("40000 40099".to_string()),
            ports: Some(100),
            source_ips: 1,
            tw_reuse_applies: false,
        };
        let summary = Summary {
            schema: SCHEMA,
            mode: Mode::ClientClose,
            target: "embedded".to_string(),
            step_duration_s: 5.0,
            search: SearchPlan {
                start_rate: 20.0,
                resolution: 0.1,
                max_steps: 2,
                max_rate: None,
            },
            thresholds: Thresholds {
                max_error_rate: 0.0,
                max_p99_us: Some(200_000),
                min_achieved: 0.99,
            },
            sysctls: Vec::new(),
            stopped: Stopped::StepBudget,
            highest_held_rate: Some(20.0),
            lowest_broken_rate: Some(40.0),
            broke_text: Some(broke.describe()),
            broke: Some(broke.clone()),
            port_bound: Some(PortBound {
                ports: 100,
                source_ips: 1,
                hold_s: 60.0,
                tw_reuse_applies: false,
                rate_per_s: 100.0 / 60.0,
            }),
            steps: vec![step(1, 20.0, None), step(2, 40.0, Some(broke))],
            error: None,
        };
        let text = render(&summary);
        for expect in [
            "a step breaks on errors over 0%, p99 over 200 ms, or under 99% of the intended",
            "   2          40           40    50.0%      2.50  broke: client ports (100 EADDRNOTAVAIL)",
            "highest rate that held for a step   20/s",
            "sustainable from the port budget    1.67/s for good: 100 client ports / 60 s each",
            "what broke                          at 40/s, the client's port range: 100 connects",
            "search ended                        the step budget (--max-steps 2) ran out",
        ] {
            assert!(text.contains(expect), "{expect:?} in\n{text}");
        }
        for line in text.lines() {
            assert!(line.chars().count() <= 100, "over 100 columns: {line}");
        }
    }
}
