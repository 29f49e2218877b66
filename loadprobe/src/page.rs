//! What every HTML page loadprobe writes shares: escaping and one stylesheet, so the compare
//! report and the report of one run look alike.

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

pub const STYLE: &str = r#"
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
