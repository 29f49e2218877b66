//! The Markdown report, for pull requests and issues (GitHub-flavoured tables).

use std::fmt::Write;

use super::Comparison;
use super::noise::Noise;
use super::rows::Row;

/// Pipes would end a table cell early.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

pub fn render(c: &Comparison) -> String {
    let mut out = String::new();
    let labels: Vec<&str> = c.runs.iter().map(|r| r.label.as_str()).collect();
    let _ = writeln!(
        out,
        "## loadprobe compare: {} (base) vs {}\n",
        cell(labels.first().copied().unwrap_or("")),
        cell(&labels.get(1..).unwrap_or_default().join(", "))
    );
    let _ = writeln!(out, "| run | setup |\n| --- | --- |");
    for (i, (label, d)) in labels.iter().zip(&c.descriptions).enumerate() {
        let base = if i == 0 { " (base)" } else { "" };
        let _ = writeln!(out, "| **{}**{base} | {} |", cell(label), cell(d));
    }
    out.push('\n');
    for d in &c.differences {
        let _ = writeln!(out, "> **Note:** {d}");
    }
    if !c.differences.is_empty() {
        out.push('\n');
    }
    for v in &c.headline.verdicts {
        let _ = writeln!(out, "### {v}\n");
    }
    for (label, line) in &c.headline.lines {
        let _ = writeln!(out, "- **{label}**: {line}");
    }

    for section in &c.sections {
        let _ = writeln!(out, "\n### {}\n", section.title);
        let mut head = String::from("| metric |");
        let mut rule = String::from("| --- |");
        for (i, label) in labels.iter().enumerate() {
            let _ = write!(head, " {} |", cell(label));
            rule.push_str(" ---: |");
            if i > 0 {
                let _ = write!(head, " change {} |", cell(label));
                rule.push_str(" --- |");
            }
        }
        let _ = writeln!(out, "{head}\n{rule}");
        for row in &section.rows {
            let mut line = String::new();
            match row {
                Row::Number(r) => {
                    let _ = write!(line, "| `{}` |", r.path);
                    for (i, v) in r.values.iter().enumerate() {
                        let _ = write!(line, " {v} |");
                        if i > 0 {
                            let ch = &r.changes[i - 1];
                            let noise = match ch.noise {
                                Noise::Significant => " · significant",
                                Noise::WithinNoise => " · noise",
                                Noise::CannotTell => "",
                            };
                            let _ = write!(line, " {}{noise} |", ch.text);
                        }
                    }
                }
                Row::Text(r) => {
                    let mark = if r.differs { " ≠" } else { "" };
                    let _ = write!(line, "| `{}`{mark} |", r.path);
                    for (i, v) in r.values.iter().enumerate() {
                        if r.differs {
                            let _ = write!(line, " **{}** |", cell(v));
                        } else {
                            let _ = write!(line, " {} |", cell(v));
                        }
                        if i > 0 {
                            line.push_str("  |");
                        }
                    }
                }
            }
            let _ = writeln!(out, "{line}");
        }
    }

    if !c.gates.is_empty() {
        let failed = c.gates.iter().filter(|g| g.failed).count();
        let _ = writeln!(out, "\n### Gates: {failed} of {} failed\n", c.gates.len());
        for g in &c.gates {
            let mark = if g.failed { "**FAIL**" } else { "pass" };
            let _ = writeln!(out, "- {mark} `{}` {}: {}", g.gate, cell(&g.run), g.detail);
        }
    }
    out
}
