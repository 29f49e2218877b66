//! The report of one run as one self-contained HTML page (inline CSS and SVG, no scripts,
//! nothing fetched), drawn with the same chart code and stylesheet as `compare`'s: the verdict
//! and TIME_WAIT per side as large numbers, the charts, then the text report's lines and the
//! per-repetition and per-record tables.

use std::fmt::Write;

use super::{RunReport, Table};
use crate::charts::{self, Curve, Plotted};
use crate::compare::html::headline_section;
use crate::model::Side;
use crate::page::{STYLE, escape};

pub fn render(r: &RunReport) -> String {
    let record = &r.run.record;
    let title = format!("loadprobe report: {}", r.run.label);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>{t}</h1>\n\
         <p>{}</p>\n",
        escape(&r.description),
        t = escape(&title),
    );
    if record.interrupted {
        out.push_str("<div class=\"warn\">Interrupted: the figures cover what ran.</div>\n");
    }
    headline_section(
        &mut out,
        std::slice::from_ref(&r.verdict),
        std::slice::from_ref(&r.run),
        &r.lines,
    );

    let run = [Plotted {
        label: &r.run.label,
        record,
    }];
    let h = &record.histograms;
    let mut curves = vec![Curve {
        label: "total",
        histogram: &h.total,
    }];
    // Open model: total is from the intended start; the uncorrected one shows what
    // coordinated omission would have hidden.
    if record.config.model == "open" {
        curves.push(Curve {
            label: "total, uncorrected",
            histogram: &h.total_uncorrected,
        });
    }
    curves.extend([
        Curve {
            label: "connect",
            histogram: &h.connect,
        },
        Curve {
            label: "first byte",
            histogram: &h.first_byte,
        },
    ]);
    if let Some(tls) = &h.tls_handshake {
        curves.push(Curve {
            label: "TLS handshake",
            histogram: tls,
        });
    }
    let tw_max = charts::time_wait_max(&run);
    let drawn = [
        ("chart", charts::time_wait(&run, Side::Client, tw_max)),
        ("chart", charts::time_wait(&run, Side::Server, tw_max)),
        ("chart", charts::time_wait_substates(run[0])),
        ("chart", charts::errors_by_class(run[0])),
        ("chart wide", charts::closers(&run)),
        ("chart", charts::requests(run[0])),
        (
            "chart",
            charts::latency_curves("Latency by percentile (log scales)", &curves),
        ),
        ("chart wide", charts::port_budget(run[0])),
    ];
    out.push_str("<div class=\"charts\">\n");
    for (class, chart) in drawn {
        let _ = writeln!(out, "<div class=\"{class}\">{chart}</div>");
    }
    out.push_str("</div>\n");

    let _ = writeln!(
        out,
        "<h2>Summary</h2>\n<p>{}</p>\n<table class=\"data\"><col class=\"metric\">",
        escape(&r.summary.title)
    );
    for (label, value) in &r.summary.lines {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"text\">{}</td></tr>",
            escape(label.trim_start()),
            escape(value)
        );
    }
    out.push_str("</table>\n");
    for t in &r.tables {
        table(&mut out, t);
    }
    out.push_str(
        "<footer>Figures from the run record (docs/run-record.md); n/a: not known from the \
         run's sources.</footer>\n</main>\n</body>\n</html>\n",
    );
    out
}

fn table(out: &mut String, t: &Table) {
    let _ = writeln!(
        out,
        "<h2>{}</h2>\n<table class=\"data\">\n<tr>",
        escape(&t.title)
    );
    for h in &t.head {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>\n");
    for row in &t.rows {
        out.push_str("<tr>");
        for c in row {
            let _ = write!(out, "<td>{}</td>", escape(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}
