//! The HTML report: one self-contained file (inline CSS and SVG, no scripts, nothing fetched),
//! that reads top-down: what was compared, the verdict on TIME_WAIT with the per-side counts as
//! large numbers, the charts, then every table.

use std::fmt::Write;

use super::metrics::lookup;
use super::noise::Noise;
use super::rows::{Row, Tone};
use super::{Comparison, Run};
use crate::charts::{self, Curve, Plotted};
use crate::format::number;
use crate::model::Side;
use crate::page::{STYLE, escape};

pub fn render(c: &Comparison) -> String {
    let mut out = String::new();
    let labels: Vec<&str> = c.runs.iter().map(|r| r.label.as_str()).collect();
    let title = format!(
        "loadprobe compare: {} (base) vs {}",
        labels.first().copied().unwrap_or(""),
        labels.get(1..).unwrap_or_default().join(", ")
    );
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );

    out.push_str("<table class=\"runs\">\n");
    for (i, (run, d)) in c.runs.iter().zip(&c.descriptions).enumerate() {
        let base = if i == 0 { " (base)" } else { "" };
        let _ = writeln!(
            out,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span><b>{}</b>{base}</td>\
             <td>{}</td></tr>",
            charts::run_color(i),
            escape(&run.label),
            escape(d)
        );
    }
    out.push_str("</table>\n");
    for d in &c.differences {
        let _ = writeln!(out, "<div class=\"warn\">{}</div>", escape(d));
    }

    headline(&mut out, c);

    let plotted: Vec<Plotted> = c
        .runs
        .iter()
        .map(|r| Plotted {
            label: &r.label,
            record: &r.record,
        })
        .collect();
    let totals: Vec<Curve> = c
        .runs
        .iter()
        .map(|r| Curve {
            label: &r.label,
            histogram: &r.record.histograms.total,
        })
        .collect();
    let tw_max = charts::time_wait_max(&plotted);
    out.push_str("<div class=\"charts\">\n");
    for (class, chart) in [
        ("chart", charts::time_wait(&plotted, Side::Client, tw_max)),
        ("chart", charts::time_wait(&plotted, Side::Server, tw_max)),
        ("chart wide", charts::closers(&plotted)),
        ("chart", charts::throughput(&plotted)),
        (
            "chart",
            charts::latency_curves("Latency by percentile (total, log scales)", &totals),
        ),
    ] {
        let _ = writeln!(out, "<div class=\"{class}\">{chart}</div>");
    }
    // https runs: their handshakes side by side (a plain run has none to draw).
    let handshakes: Vec<Curve> = c
        .runs
        .iter()
        .filter_map(|r| {
            Some(Curve {
                label: &r.label,
                histogram: r.record.histograms.tls_handshake.as_ref()?,
            })
        })
        .collect();
    if !handshakes.is_empty() {
        let chart = charts::latency_curves("TLS handshake by percentile (log scales)", &handshakes);
        let _ = writeln!(out, "<div class=\"chart\">{chart}</div>");
    }
    out.push_str("</div>\n");

    for section in &c.sections {
        table(&mut out, c, section);
    }
    gates(&mut out, c);
    out.push_str(
        "<footer>Changes are from the base (first run). Metric names are record paths \
         (docs/run-record.md), usable in <code>--fail-if</code>. n/a: not known from that \
         run's sources.</footer>\n</main>\n</body>\n</html>\n",
    );
    out
}

fn headline(out: &mut String, c: &Comparison) {
    headline_section(out, &c.headline.verdicts, &c.runs, &c.headline.lines);
}

/// The headline box of an HTML report: the verdicts, the two TIME_WAIT cards (one per side,
/// runs in their colours), and the other headline lines. `report` draws one run's with it.
pub fn headline_section(
    out: &mut String,
    verdicts: &[String],
    runs: &[Run],
    lines: &[(String, String)],
) {
    out.push_str("<section class=\"headline\">\n");
    for v in verdicts {
        let _ = writeln!(out, "<div class=\"verdict\">{}</div>", escape(v));
    }
    out.push_str("<div class=\"cards\">\n");
    for side in Side::ALL {
        let flow = flow(runs, &format!("time_wait.{side}.entered"));
        let peak = flow_plain(runs, &format!("time_wait.{side}.peak"));
        let reused = flow_plain(runs, &format!("time_wait.{side}.reused"));
        // Reuse is why TIME_WAIT can plateau far below rate × 60 s: say so where it happened.
        let reused = if runs.iter().any(|r| {
            lookup(&r.json, &format!("time_wait.{side}.reused"))
                .number()
                .is_some_and(|v| v > 0.0)
        }) {
            format!("; taken over early by new connections: {reused}")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "<div class=\"card\"><div class=\"side\">TIME_WAIT on the {side} side</div>\
             <div class=\"flow\">{flow}</div><div class=\"what\">sockets that entered TIME_WAIT \
             (most at once: {}{})</div></div>",
            escape(&peak),
            escape(&reused)
        );
    }
    out.push_str("</div>\n<ul class=\"lines\">\n");
    for (label, line) in lines.iter().filter(|(l, _)| l != "TIME_WAIT") {
        let _ = writeln!(out, "<li><b>{}</b> {}</li>", escape(label), escape(line));
    }
    out.push_str("</ul>\n</section>\n");
}

/// `14,046 → 0` with each value in its run's colour.
fn flow(runs: &[Run], path: &str) -> String {
    runs.iter()
        .enumerate()
        .map(|(i, r)| {
            let v = lookup(&r.json, path).number().map_or("n/a".into(), number);
            format!(
                "<span style=\"color:{}\">{}</span>",
                charts::run_color(i),
                escape(&v)
            )
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

fn flow_plain(runs: &[Run], path: &str) -> String {
    runs.iter()
        .map(|r| lookup(&r.json, path).number().map_or("n/a".into(), number))
        .collect::<Vec<_>>()
        .join(" → ")
}

fn table(out: &mut String, c: &Comparison, section: &super::rows::Section) {
    let _ = writeln!(
        out,
        "<h2>{}</h2>\n<table class=\"data\"><col class=\"metric\">\n<tr><th>metric</th>",
        escape(&section.title)
    );
    for (i, r) in c.runs.iter().enumerate() {
        let _ = write!(
            out,
            "<th><span class=\"swatch\" style=\"background:{}\"></span>{}</th>",
            charts::run_color(i),
            escape(&r.label)
        );
        if i > 0 {
            let _ = write!(out, "<th>change</th>");
        }
    }
    out.push_str("</tr>\n");
    for row in &section.rows {
        match row {
            Row::Number(r) => {
                let _ = write!(out, "<tr><td><code>{}</code></td>", escape(&r.path));
                for (i, v) in r.values.iter().enumerate() {
                    let _ = write!(out, "<td>{}</td>", escape(v));
                    if i > 0 {
                        let ch = &r.changes[i - 1];
                        let class = match (ch.noise, ch.tone) {
                            (Noise::WithinNoise, _) => "noise",
                            (_, Tone::Better) => "better",
                            (_, Tone::Worse) => "worse",
                            (_, Tone::Neutral) => "",
                        };
                        let note = match ch.noise {
                            Noise::Significant => " <small>significant</small>",
                            Noise::WithinNoise => " <small>within noise</small>",
                            Noise::CannotTell => "",
                        };
                        let _ = write!(
                            out,
                            "<td class=\"change {class}\">{}{note}</td>",
                            escape(&ch.text)
                        );
                    }
                }
            }
            Row::Text(r) => {
                let class = if r.differs { " class=\"differs\"" } else { "" };
                let _ = write!(out, "<tr{class}><td><code>{}</code></td>", escape(&r.path));
                let long = r.values.iter().any(|v| v.chars().count() > 16);
                let class = if long { " class=\"text\"" } else { "" };
                for (i, v) in r.values.iter().enumerate() {
                    let _ = write!(out, "<td{class}>{}</td>", escape(v));
                    if i > 0 {
                        out.push_str("<td></td>");
                    }
                }
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn gates(out: &mut String, c: &Comparison) {
    if c.gates.is_empty() {
        return;
    }
    let failed = c.gates.iter().filter(|g| g.failed).count();
    let _ = writeln!(
        out,
        "<h2>Gates: {failed} of {} failed</h2>\n<ul class=\"gates\">",
        c.gates.len()
    );
    for g in &c.gates {
        let (class, mark) = if g.failed {
            ("fail", "FAIL")
        } else {
            ("pass", "pass")
        };
        let _ = writeln!(
            out,
            "<li class=\"{class}\">{mark} <code>{}</code> {}: {}</li>",
            escape(&g.gate),
            escape(&g.run),
            escape(&g.detail)
        );
    }
    out.push_str("</ul>\n");
}
