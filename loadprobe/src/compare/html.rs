//! The HTML report: one self-contained file (inline CSS and SVG, no scripts, nothing fetched),
//! that reads top-down: what was compared, the verdict on TIME_WAIT with the per-side counts as
//! large numbers, the charts, then every table.

use std::fmt::Write;

use super::charts;
use super::format::number;
use super::metrics::lookup;
use super::noise::Noise;
use super::rows::{Row, Tone};
use super::{Comparison, Run};

/// Text made safe for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  color: #1d2330; background: #f4f5f7; }
main { max-width: 1200px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 12px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
.runs td { padding: 2px 10px 2px 0; vertical-align: top; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
  margin-right: 6px; vertical-align: -1px; }
.warn { background: #fff4d6; border-left: 4px solid #e0a100; padding: 8px 12px; margin: 8px 0; }
.headline { background: #fff; border-radius: 8px; padding: 16px 20px; margin-top: 16px;
  box-shadow: 0 1px 3px rgba(0,0,0,.12); }
.verdict { font-size: 24px; font-weight: 700; margin-bottom: 12px; }
.cards { display: flex; gap: 16px; flex-wrap: wrap; margin-bottom: 12px; }
.card { flex: 1 1 260px; border: 1px solid #dde1e7; border-radius: 8px; padding: 12px 16px; }
.card .side { font-size: 13px; text-transform: uppercase; letter-spacing: .05em; color: #5b6475; }
.card .flow { font-size: 30px; font-weight: 700; margin: 4px 0; }
.card .what { font-size: 13px; color: #5b6475; }
.lines { margin: 0; padding-left: 18px; }
.lines b { display: inline-block; min-width: 96px; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 16px;
  margin-top: 16px; }
.chart { background: #fff; border-radius: 8px; padding: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
.chart svg { width: 100%; height: auto; display: block; }
.chart.wide { grid-column: 1 / -1; }
table.data { border-collapse: collapse; background: #fff; width: 100%; font-size: 14px;
  box-shadow: 0 1px 3px rgba(0,0,0,.12); table-layout: fixed; }
table.data col.metric { width: 30%; }
table.data th, table.data td { padding: 4px 10px; border-bottom: 1px solid #eceef2; }
table.data th { text-align: right; background: #eef0f4; }
table.data th:first-child, table.data td:first-child { text-align: left; }
table.data td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }
table.data td.text { white-space: normal; text-align: left; }
td code { font-size: 13px; }
.better { color: #1e7d32; } .worse { color: #c62828; } .noise { color: #8a93a3; }
tr.differs td { background: #fff4d6; font-weight: 600; }
.gates li.fail { color: #c62828; font-weight: 600; }
.no-data, .chart-error { color: #5b6475; padding: 24px; }
footer { color: #5b6475; font-size: 12px; margin-top: 24px; }
"#;

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

    let tw_max = charts::time_wait_max(&c.runs);
    out.push_str("<div class=\"charts\">\n");
    for (class, chart) in [
        ("chart", charts::time_wait(&c.runs, "client", tw_max)),
        ("chart", charts::time_wait(&c.runs, "server", tw_max)),
        ("chart wide", charts::closers(&c.runs)),
        ("chart", charts::throughput(&c.runs)),
        ("chart", charts::latency_curves(&c.runs)),
    ] {
        let _ = writeln!(out, "<div class=\"{class}\">{chart}</div>");
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

/// The verdict, the two TIME_WAIT cards (one per side, runs in their colours), and the other
/// headline lines.
fn headline(out: &mut String, c: &Comparison) {
    out.push_str("<section class=\"headline\">\n");
    for v in &c.headline.verdicts {
        let _ = writeln!(out, "<div class=\"verdict\">{}</div>", escape(v));
    }
    out.push_str("<div class=\"cards\">\n");
    for side in ["client", "server"] {
        let flow = flow(&c.runs, &format!("time_wait.{side}.entered"));
        let peak = flow_plain(&c.runs, &format!("time_wait.{side}.peak"));
        let reused = flow_plain(&c.runs, &format!("time_wait.{side}.reused"));
        // Reuse is why TIME_WAIT can plateau far below rate × 60 s: say so where it happened.
        let reused = if c.runs.iter().any(|r| {
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
    for (label, line) in c.headline.lines.iter().filter(|(l, _)| l != "TIME_WAIT") {
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
