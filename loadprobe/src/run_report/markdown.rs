//! The report of one run in Markdown (GitHub-flavoured tables), to paste into a ticket.

use std::fmt::Write;

use super::{RunReport, Table};

/// Pipes would end a table cell early.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

pub fn render(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## loadprobe report: {}\n", r.run.label);
    let _ = writeln!(out, "{}\n", r.description);
    if r.run.record.interrupted {
        let _ = writeln!(
            out,
            "> **Note:** interrupted: the figures cover what ran.\n"
        );
    }
    let _ = writeln!(out, "### {}\n", r.verdict);
    let _ = writeln!(out, "{}\n", r.summary.title);
    let _ = writeln!(out, "| | |\n| --- | --- |");
    for (label, value) in &r.summary.lines {
        // A continuation line (no label of its own) leaves its label cell empty.
        if label.trim().is_empty() {
            let _ = writeln!(out, "| | {} |", cell(value));
            continue;
        }
        // A detail line (leading space) reads as a sub-item of the one above it.
        let label = match label.strip_prefix(' ') {
            Some(detail) => format!("↳ {detail}"),
            None => label.clone(),
        };
        let _ = writeln!(out, "| **{}** | {} |", cell(&label), cell(value));
    }
    for t in &r.tables {
        table(&mut out, t);
    }
    out
}

fn table(out: &mut String, t: &Table) {
    let _ = writeln!(out, "\n### {}\n", t.title);
    let head: Vec<String> = t.head.iter().map(|h| cell(h)).collect();
    let _ = writeln!(out, "| {} |", head.join(" | "));
    // Numbers line up on the right, words on the left.
    let numeric = |i: usize| {
        t.rows.iter().all(|r| {
            r.get(i).is_some_and(|c| {
                c == "n/a"
                    || c.starts_with(|ch: char| ch.is_ascii_digit() || ch == '+' || ch == '-')
            })
        })
    };
    let rule: Vec<&str> = (0..t.head.len())
        .map(|i| if i > 0 && numeric(i) { "---:" } else { "---" })
        .collect();
    let _ = writeln!(out, "| {} |", rule.join(" | "));
    for row in &t.rows {
        let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
}
