//! The text form of a `tune check` report: sections of short lines, wrapped to fit 100 columns
//! so it reads in a terminal and pastes into an issue unchanged.

use std::fmt::Write;

use super::check::Report;
use super::predict::HEADROOM;
use super::predict::SidePrediction;
use crate::kernel::tcp::Reuse;
use crate::model::Mode;

/// Widest line the text output produces.
pub const WIDTH: usize = 100;

/// Renders `report` as text, every line at most [`WIDTH`] columns (a single word longer than
/// that, which no message has, would overflow rather than be cut).
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line(&format!(
        "network namespace {}, kernel {}",
        report.netns, report.kernel
    ));
    line("Every value applies to this network namespace only, unless marked [global].");
    line("");
    line("Sysctls");
    for s in &report.sysctls {
        let value = match &s.value {
            Some(v) if v.is_empty() => " = (empty)".to_string(),
            Some(v) => format!(" = {v}"),
            None => "  (absent)".to_string(),
        };
        let global = if s.per_netns { "" } else { "  [global]" };
        wrap(
            &mut line,
            &format!("{}{value}{global}", s.key),
            "  ",
            "    ",
        );
        wrap(&mut line, s.meaning, "      ", "      ");
    }
    line("");
    line("Findings");
    for f in &report.findings {
        let severity = serde_json::to_value(f.severity)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        // "tcp_fin_timeout=30 does ..." needs no "tcp_fin_timeout: " in front.
        let key = f.key.strip_prefix("net.ipv4.").unwrap_or(&f.key);
        let text = if f.message.starts_with(key) {
            f.message.clone()
        } else {
            format!("{key}: {}", f.message)
        };
        wrap(&mut line, &text, &format!("  {severity:<9}"), "           ");
    }
    if let Some(p) = &report.prediction {
        line("");
        let target = match (p.target, p.target_loopback) {
            (Some(ip), Some(true)) => format!(" to {ip} (loopback)"),
            (Some(ip), _) => format!(" to {ip} (not loopback)"),
            (None, _) => String::new(),
        };
        let unit = if p.mode == Mode::KeepAlive {
            "requests/s"
        } else {
            "new connections/s"
        };
        wrap(
            &mut line,
            &format!(
                "Prediction for {} at {} {unit}{target}",
                p.mode,
                num(p.rate)
            ),
            "",
            "  ",
        );
        line("  (one destination, steady state, TIME_WAIT fixed at 60 s)");
        wrap(
            &mut line,
            &side(&p.client),
            "  client TIME_WAIT  ",
            &pad(20),
        );
        wrap(
            &mut line,
            &side(&p.server),
            "  server TIME_WAIT  ",
            &pad(20),
        );
        let mut ports = match p.ports.usable {
            Some(u) => format!("{u} usable per destination"),
            None => "unknown (port range unreadable)".to_string(),
        };
        if let Some(rate) = p.ports.sustainable_rate {
            let _ = write!(
                ports,
                ", each held {} s after close: sustains {}/s",
                num(p.ports.hold_seconds),
                num(rate)
            );
        } else {
            ports.push_str(", not held by TIME_WAIT");
        }
        match p.ports.exhausted_after_seconds {
            Some(t) => {
                let _ = write!(ports, "; EXHAUSTED after {t:.1} s (EADDRNOTAVAIL)");
            }
            None => ports.push_str("; no exhaustion"),
        }
        wrap(&mut line, &ports, "  client ports      ", &pad(20));
        let reuse = match p.ports.reuse {
            Reuse::Applies => "applies",
            Reuse::Off => "off (tcp_tw_reuse=0)",
            Reuse::LoopbackOnly => "does not apply (tcp_tw_reuse=2 is loopback only)",
            Reuse::NoTimestamps => "does not apply (tcp_timestamps=0)",
        };
        wrap(&mut line, reuse, "  tw reuse          ", &pad(20));
        for note in &p.notes {
            wrap(&mut line, note, "  note: ", &pad(8));
        }
        line("");
        if report.recommendations.is_empty() {
            wrap(
                &mut line,
                &format!("No change needed: {HEADROOM}x the rate fits the current settings."),
                "",
                "  ",
            );
        } else {
            line(&format!(
                "Recommendations (first: the smallest change with {HEADROOM}x headroom)"
            ));
        }
        for (i, r) in report.recommendations.iter().enumerate() {
            let sustains = r
                .sustains_rate
                .map(|s| format!(", sustains {}/s", num(s)))
                .unwrap_or_default();
            wrap(
                &mut line,
                &format!("{}  [{}{sustains}]", r.change, r.side),
                &format!("  {}. ", i + 1),
                &pad(5),
            );
            wrap(&mut line, &r.why, &pad(5), &pad(5));
        }
    }
    out
}

fn side(s: &SidePrediction) -> String {
    let mut text = s.time_wait.to_string();
    if s.wanted != s.time_wait {
        let _ = write!(text, " (wanted {} = rate x 60 s", s.wanted);
        if let Some(limit) = s.limited_by {
            let _ = write!(text, ", capped by {limit}");
        }
        text.push(')');
    }
    if s.overflow_per_second > 0.0 {
        let _ = write!(
            text,
            "; OVERFLOW: {}/s not created, silently",
            num(s.overflow_per_second)
        );
    }
    text
}

/// A rate or duration: whole numbers without decimals, others with one.
fn num(x: f64) -> String {
    if x >= 100.0 || x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn pad(n: usize) -> String {
    " ".repeat(n)
}

/// Greedy word wrap: `first` before the first line, `rest` before the others.
pub(crate) fn wrap(line: &mut impl FnMut(&str), text: &str, first: &str, rest: &str) {
    let mut current = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && current.chars().count() + 1 + word.chars().count() > WIDTH {
            line(&current);
            current = rest.to_string();
            empty = true;
        }
        if !empty {
            current.push(' ');
        }
        current.push_str(word);
        empty = false;
    }
    line(&current);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mode;

    use crate::kernel::PortRange;
    use crate::kernel::Ports;
    use crate::tune::check::{Input, analyse};
    use crate::tune::predict::Workload;

    #[test]
    fn every_line_fits_100_columns() {
        let range = PortRange {
            low: 32768,
            high: 60999,
        };
        let mut input = Input {
            netns: 4026531840,
            release: "6.18.44-fc-v595".to_string(),
            ports: Some(Ports {
                range,
                usable: range.size(),
            }),
            ..Input::default()
        };
        for (k, v) in [
            ("net.ipv4.tcp_tw_reuse", "0"),
            ("net.ipv4.tcp_fin_timeout", "30"),
            ("net.ipv4.tcp_max_tw_buckets", "10000"),
            ("net.ipv4.ip_local_port_range", "32768 60999"),
        ] {
            input.sysctls.insert(k.to_string(), v.to_string());
        }
        for mode in Mode::ALL {
            let w = Workload {
                mode,
                rate: 1000.0,
                target: Some("10.0.0.2".parse().unwrap()),
            };
            let text = render(&analyse(&input, Some(&w)));
            for l in text.lines() {
                assert!(
                    l.chars().count() <= WIDTH,
                    "{} columns: {l}",
                    l.chars().count()
                );
            }
            assert!(text.contains("Prediction for "), "{text}");
        }
        let text = render(&analyse(&input, None));
        assert!(
            text.contains("warning  tcp_fin_timeout=30 does not shorten"),
            "{text}"
        );
        assert!(!text.contains("Prediction"));
    }

    #[test]
    fn wrapping() {
        let mut lines = Vec::new();
        wrap(
            &mut |l: &str| lines.push(l.to_string()),
            &"word ".repeat(40),
            "> ",
            "  ",
        );
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.len() <= WIDTH));
        assert!(lines[0].starts_with("> word") && lines[1].starts_with("  word"));
    }
}
