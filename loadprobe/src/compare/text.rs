//! The terminal report: at most 100 columns, colour only when asked (the CLI asks on a TTY).
//! With more runs than fit side by side, the tables repeat with the base and as many others as
//! fit, so no line ever wraps.

use std::fmt::Write;

use super::Comparison;
use super::noise::Noise;
use super::rows::{Row, Tone};
use crate::format::{fit, wrap};

/// The widest line the report prints.
pub const WIDTH: usize = 100;
const PATH_MAX: usize = 34;
const VALUE_MAX: usize = 14;
const LABEL_MAX: usize = 20;

/// A record path in `width` columns: its end, which tells it from its neighbours
/// (`…search.latency_us.total.p99` under a section that names the request).
fn fit_path(path: &str, width: usize) -> String {
    let n = path.chars().count();
    if n <= width {
        return path.to_string();
    }
    let tail: String = path.chars().skip(n + 1 - width).collect();
    format!("…{tail}")
}

/// Colours when on; plain text when off.
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn wrap(self, code: &str, s: &str) -> String {
        if self.0 && !s.is_empty() {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn tone(self, tone: Tone, noise: Noise, s: &str) -> String {
        match (tone, noise) {
            (_, Noise::WithinNoise) => self.wrap("2", s),
            (Tone::Better, _) => self.wrap("32", s),
            (Tone::Worse, _) => self.wrap("31", s),
            (Tone::Neutral, _) => s.to_string(),
        }
    }
    fn warn(self, s: &str) -> String {
        self.wrap("33", s)
    }
}

/// The report; `color` adds ANSI colours (better green, worse red, noise dim, differences
/// yellow).
pub fn render(c: &Comparison, color: bool) -> String {
    let p = Paint(color);
    let mut out = String::new();
    let labels: Vec<&str> = c.runs.iter().map(|r| r.label.as_str()).collect();
    let title = match labels.as_slice() {
        [base, rest @ ..] => format!("loadprobe compare: {base} (base) vs {}", rest.join(", ")),
        [] => "loadprobe compare: no runs".to_string(),
    };
    for line in wrap(&title, WIDTH) {
        let _ = writeln!(out, "{}", p.bold(&line));
    }
    let label_w = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
        .min(24);
    for (label, d) in labels.iter().zip(&c.descriptions) {
        let head = format!("  {:<label_w$}  ", fit(label, label_w));
        wrapped(&mut out, &head, d, |s| s.to_string());
    }
    for d in &c.differences {
        wrapped(&mut out, "! ", d, |s| p.warn(s));
    }
    out.push('\n');

    for v in &c.headline.verdicts {
        let _ = writeln!(out, "{}", p.bold(&format!(">> {v}")));
    }
    for (label, line) in &c.headline.lines {
        let head = format!("   {label:<12} ");
        wrapped(&mut out, &head, line, |s| s.to_string());
    }

    let others: Vec<usize> = (1..c.runs.len()).collect();
    let chunks = chunks(c, &others);
    for chunk in &chunks {
        if chunks.len() > 1 {
            let names: Vec<&str> = chunk.iter().map(|&i| labels[i]).collect();
            let _ = writeln!(
                out,
                "\n{}",
                p.bold(&format!("== {} vs {}", labels[0], names.join(", ")))
            );
        }
        tables(&mut out, c, chunk, p);
    }

    if !c.gates.is_empty() {
        let failed = c.gates.iter().filter(|g| g.failed).count();
        let _ = writeln!(
            out,
            "\n{}",
            p.bold(&format!("Gates: {failed} of {} failed", c.gates.len()))
        );
        for g in &c.gates {
            let mark = if g.failed {
                p.wrap("31", "FAIL")
            } else {
                p.wrap("32", "pass")
            };
            let head = format!("  {}  ", if g.failed { "FAIL" } else { "pass" });
            let body = format!("{}  {}: {}", g.gate, g.run, g.detail);
            let mut lines = wrap(&body, WIDTH - head.chars().count()).into_iter();
            if let Some(first) = lines.next() {
                let _ = writeln!(out, "  {mark}  {first}");
            }
            for l in lines {
                let _ = writeln!(out, "{:w$}{l}", "", w = head.chars().count());
            }
        }
    }
    out
}

/// `text` wrapped to the report's width after `head`, later lines indented to match.
fn wrapped(out: &mut String, head: &str, text: &str, paint: impl Fn(&str) -> String) {
    let indent = head.chars().count();
    for (i, line) in wrap(text, WIDTH - indent).iter().enumerate() {
        let lead = if i == 0 {
            head.to_string()
        } else {
            " ".repeat(indent)
        };
        let _ = writeln!(out, "{}", paint(&format!("{lead}{line}")).trim_end());
    }
}

/// Column widths for the base and `others`.
struct Layout {
    path: usize,
    value: usize,
    /// Per other run: its change column.
    change: Vec<usize>,
    noise: bool,
}

impl Layout {
    fn new(c: &Comparison, others: &[usize]) -> Layout {
        let mut path = 0;
        let mut value = 0;
        let mut change = vec![6; others.len()];
        let mut noise = false;
        for row in c.sections.iter().flat_map(|s| &s.rows) {
            match row {
                Row::Number(r) => {
                    path = path.max(r.path.chars().count());
                    for i in std::iter::once(0).chain(others.iter().copied()) {
                        value = value.max(r.values[i].chars().count());
                    }
                    for (k, &i) in others.iter().enumerate() {
                        let ch = &r.changes[i - 1];
                        change[k] = change[k].max(ch.text.chars().count());
                        noise |= ch.noise != Noise::CannotTell;
                    }
                }
                Row::Text(r) => {
                    path = path.max(r.path.chars().count());
                    // Short texts (sysctl values, sources) share the value columns.
                    for i in std::iter::once(0).chain(others.iter().copied()) {
                        let w = r.values[i].chars().count();
                        if w <= VALUE_MAX {
                            value = value.max(w);
                        }
                    }
                }
            }
        }
        let label = std::iter::once(&0)
            .chain(others)
            .map(|&i| c.runs[i].label.chars().count())
            .max()
            .unwrap_or(0);
        let mut layout = Layout {
            path: path.min(PATH_MAX),
            // Whole run names in the headers when they fit, else cut to the values' width.
            value: value.max(label).clamp(6, LABEL_MAX),
            change,
            noise,
        };
        if layout.width() > WIDTH {
            layout.value = value.clamp(6, VALUE_MAX);
        }
        layout
    }

    fn width(&self) -> usize {
        let per_other: usize = self
            .change
            .iter()
            .map(|w| self.value + 2 + w + 2 + if self.noise { 11 + 2 } else { 0 })
            .sum();
        2 + self.path + 2 + self.value + 2 + per_other
    }
}

/// Splits the other runs into groups whose table fits the width (at least one per group).
fn chunks(c: &Comparison, others: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for &i in others {
        current.push(i);
        if current.len() > 1 && Layout::new(c, &current).width() > WIDTH {
            current.pop();
            out.push(std::mem::take(&mut current));
            current.push(i);
        }
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
    out
}

fn tables(out: &mut String, c: &Comparison, others: &[usize], p: Paint) {
    let l = Layout::new(c, others);
    let cols: Vec<usize> = std::iter::once(0).chain(others.iter().copied()).collect();
    for section in &c.sections {
        // Header: section title in the path column, then run labels and change columns.
        let mut head = format!("{:<w$}", fit(&section.title, l.path + 2), w = l.path + 2);
        for &i in &cols {
            let _ = write!(
                head,
                "  {:>w$}",
                fit(&c.runs[i].label, l.value),
                w = l.value
            );
            if i > 0 {
                let k = others.iter().position(|&o| o == i).unwrap_or(0);
                let _ = write!(head, "  {:<w$}", "change", w = l.change[k]);
                if l.noise {
                    let _ = write!(head, "  {:<11}", "noise");
                }
            }
        }
        let _ = writeln!(out, "\n{}", p.bold(head.trim_end()));
        let mut lists = Vec::new();
        for row in &section.rows {
            match row {
                Row::Number(r) => {
                    let mut line = format!("  {:<w$}", fit_path(&r.path, l.path), w = l.path);
                    for &i in &cols {
                        let _ = write!(line, "  {:>w$}", r.values[i], w = l.value);
                        if i > 0 {
                            let k = others.iter().position(|&o| o == i).unwrap_or(0);
                            let ch = &r.changes[i - 1];
                            // Padding outside the colour, so lines end without blanks.
                            let pad = l.change[k].saturating_sub(ch.text.chars().count());
                            let painted = p.tone(ch.tone, ch.noise, &ch.text);
                            let _ = write!(line, "  {painted}{:pad$}", "");
                            if l.noise {
                                let _ = write!(line, "  {:<11}", ch.noise.word());
                            }
                        }
                    }
                    let _ = writeln!(out, "{}", line.trim_end());
                }
                Row::Text(r) => {
                    let fits = cols.iter().all(|&i| r.values[i].chars().count() <= l.value);
                    let same = cols.iter().all(|&i| r.values[i] == r.values[0]);
                    let span = 2 + l.path + 2 + r.values[0].chars().count();
                    if !fits && same && span <= WIDTH {
                        // One value for every run: once, across the value columns.
                        let _ = writeln!(
                            out,
                            "  {:<w$}  {}",
                            fit_path(&r.path, l.path),
                            r.values[0],
                            w = l.path
                        );
                        continue;
                    }
                    if !fits {
                        lists.push(r);
                        continue;
                    }
                    let mark = if r.differs { "≠ " } else { "  " };
                    let mut line = format!("{mark}{:<w$}", fit_path(&r.path, l.path), w = l.path);
                    for &i in &cols {
                        let _ = write!(line, "  {:>w$}", r.values[i], w = l.value);
                        if i > 0 {
                            let k = others.iter().position(|&o| o == i).unwrap_or(0);
                            let _ = write!(line, "  {:w$}", "", w = l.change[k]);
                            if l.noise {
                                let _ = write!(line, "  {:11}", "");
                            }
                        }
                    }
                    let line = line.trim_end().to_string();
                    let _ = writeln!(out, "{}", if r.differs { p.warn(&line) } else { line });
                }
            }
        }
        // Long texts (verdicts, reasons) as a list under the table, one run per entry.
        for r in lists {
            let mark = if r.differs { "≠ " } else { "  " };
            let _ = writeln!(out, "{mark}{}", r.path);
            let label_w = cols
                .iter()
                .map(|&i| c.runs[i].label.chars().count())
                .max()
                .unwrap_or(0)
                .min(24);
            for &i in &cols {
                let head = format!("    {:<label_w$}  ", fit(&c.runs[i].label, label_w));
                wrapped(out, &head, &r.values[i], |s| s.to_string());
            }
        }
    }
}
