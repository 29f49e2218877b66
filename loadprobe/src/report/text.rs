//! The human-readable summary printed at the end of a run.

use std::fmt::Write;

use super::{Percentiles, RunRecord, TimeWaitSide};
use crate::probe::LOSS_UNCERTAIN;

/// The summary, several short lines, ending in a newline.
pub fn render_text(r: &RunRecord) -> String {
    let mut out = String::new();
    let c = &r.config;
    let load = match (c.curve(), c.users, c.rate) {
        (Some(curve), users, _) => format!(
            "stages {curve} from {} {}",
            curve.start(),
            if users.is_some() {
                "users"
            } else {
                "/s (open model)"
            }
        ),
        (None, Some(users), _) => format!("{users} users"),
        (None, None, Some(rate)) => format!("{rate}/s open model"),
        _ => String::new(),
    };
    let server = if c.embedded_server {
        " (embedded server)"
    } else {
        ""
    };
    // A scenario's modes are its requests' (each on its line below).
    let what = match &c.scenario {
        Some(s) => format!(
            "scenario of {} requests (seed {})",
            s.requests.len(),
            s.seed
        ),
        None => c.mode.to_string(),
    };
    let _ = writeln!(
        out,
        "loadprobe {what} against {}{server}: {load}, {:.1} s measured{}",
        c.target,
        r.duration_s,
        if r.interrupted { " (interrupted)" } else { "" }
    );
    if let Some(t) = &c.tls {
        let _ = writeln!(
            out,
            "  tls config   SNI {}, trust {}{}, resumption {}{}",
            t.sni.as_deref().unwrap_or("none (an address)"),
            t.trust,
            if t.trust == "insecure" {
                " (certificates NOT verified)"
            } else {
                ""
            },
            if t.resume { "on" } else { "off" },
            if t.client_cert {
                ", client certificate"
            } else {
                ""
            }
        );
    }
    if let Some(i) = &r.incomplete {
        let _ = writeln!(
            out,
            "  incomplete   {} of {} repetitions ran; then: {}",
            i.completed_repetitions, i.planned_repetitions, i.reason
        );
    }
    if let Some(seg) = &r.segment {
        let late = match seg.start_late_ms {
            Some(ms) if ms > 0 => format!(", started {ms} ms late for --start-at"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  segment      {} of {} on {}{late}",
            seg.index, seg.count, seg.host
        );
    }
    if let Some(set) = &r.segments {
        let missing = if set.missing.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = set.missing.iter().map(u32::to_string).collect();
            format!(
                ", MISSING {} (a part of the workload only)",
                list.join(", ")
            )
        };
        let skew = if set.skewed {
            " (over 1 s: the hosts did not run at the same time)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  segments     {} of {}{missing}; hosts started within {} ms{skew}",
            set.merged.len(),
            set.count,
            set.start_skew_ms
        );
    }
    let errors: u64 = r.requests.errors.values().sum();
    let _ = writeln!(
        out,
        "  requests     {} total, {} ok, {} errors; {:.1} req/s",
        r.requests.total, r.requests.ok, errors, r.throughput.rps
    );
    if !r.requests.errors.is_empty() {
        let list: Vec<String> = r
            .requests
            .errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "  errors       {}", list.join(", "));
    }
    let (dropped, unfinished) = (
        r.requests.dropped.unwrap_or(0),
        r.requests.unfinished.unwrap_or(0),
    );
    if dropped + unfinished > 0 {
        let _ = writeln!(
            out,
            "  not done     {dropped} dropped (due, never started), {unfinished} unfinished \
             (in flight when the run ended); neither is in the total"
        );
    }
    if let Some(stale) = r.requests.stale_connection.filter(|n| *n > 0) {
        let retried = r.requests.retried.unwrap_or(0);
        let _ = writeln!(
            out,
            "  stale        {stale} requests were sent on a keep-alive connection the server had \
             closed; {retried} of them retried on a new connection"
        );
    }
    let _ = writeln!(
        out,
        "  connections  {} opened; {:.1}/s",
        r.connections.opened, r.throughput.connections_per_s
    );
    let l = &r.latency_us;
    let _ = writeln!(out, "  latency      {}", percentiles(&l.total));
    if c.model == "open" {
        let _ = writeln!(out, "   uncorrected {}", percentiles(&l.total_uncorrected));
    }
    let _ = writeln!(out, "   connect     {}", percentiles(&l.connect));
    if let Some(tls) = &l.tls_handshake {
        let _ = writeln!(out, "   tls         {}", percentiles(tls));
    }
    let _ = writeln!(out, "   first byte  {}", percentiles(&l.first_byte));
    if let Some(t) = &r.tls {
        let named = |m: &std::collections::BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "  tls          {} full, {} resumed handshakes; {}; {}",
            t.full_handshakes,
            t.resumed_handshakes,
            named(&t.versions),
            named(&t.cipher_suites)
        );
    }
    // A scenario's requests in the file's order: how often each was drawn, and its latency.
    for (i, req) in c.scenario.iter().flat_map(|s| &s.requests).enumerate() {
        let Some(f) = r.by_request.get(&req.name) else {
            continue;
        };
        let share = if r.requests.total > 0 {
            f.requests.total as f64 / r.requests.total as f64 * 100.0
        } else {
            0.0
        };
        let errors: u64 = f.requests.errors.values().sum();
        let _ = writeln!(
            out,
            "  {:<12} {}: {} ({share:.1}%, weight {}, {}), {errors} errors; {}",
            if i == 0 { "by request" } else { "" },
            req.name,
            f.requests.total,
            req.weight,
            req.mode,
            percentiles(&f.latency_us.total)
        );
    }
    if r.probe.attached {
        let k = &r.connections.closer;
        let _ = writeln!(
            out,
            "  closer       client {}, server {}, simultaneous {}, client-reset {}, \
             server-reset {}, refused {}, unknown {}{}",
            k.client,
            k.server,
            k.simultaneous,
            k.client_reset,
            k.server_reset,
            k.refused,
            k.unknown,
            r.connections
                .mismatches
                .map_or(String::new(), |m| format!("; {m} not as the mode asked"))
        );
        let lost = r.probe.lost_events.unwrap_or(0);
        let skipped = r.probe.skipped_events.unwrap_or(0);
        if lost + skipped > 0 {
            let _ = writeln!(
                out,
                "  probe        {lost} events lost (ring buffer full), {skipped} tracepoint hits \
                 skipped: {LOSS_UNCERTAIN} (requests, latency and errors are the driver's)"
            );
        }
        let read_errors = r.probe.read_errors.unwrap_or(0);
        if read_errors > 0 {
            let _ = writeln!(
                out,
                "  probe        {read_errors} kernel reads failed, each dropping its event: \
                 {LOSS_UNCERTAIN}"
            );
        }
    } else {
        let _ = writeln!(
            out,
            "  probe        off: {}",
            r.probe.reason.as_deref().unwrap_or("not attached")
        );
    }
    if r.connections.server_fin_missing > 0 {
        let _ = writeln!(
            out,
            "  warning      {} responses were not followed by the server's FIN (does it ignore \
             Connection: close?)",
            r.connections.server_fin_missing
        );
    }
    let tw = &r.time_wait;
    let server = match &tw.server_unseen {
        Some(why) => format!("{} ({why})", side(&tw.server)),
        None => side(&tw.server),
    };
    let _ = writeln!(
        out,
        "  TIME_WAIT    client {} | server {server}  (from {})",
        side(&tw.client),
        tw.source
    );
    let fw2 = &tw.fin_wait2;
    if fw2.client.entered.unwrap_or(0) + fw2.server.entered.unwrap_or(0) > 0 {
        let _ = writeln!(
            out,
            "  FIN_WAIT2    client {} | server {}  (orphans whose peer had not sent its FIN)",
            side(&fw2.client),
            side(&fw2.server),
        );
    }
    let _ = writeln!(out, "  ports        {}", r.port_budget.verdict);
    let sys = &r.kernel.sysctls;
    let pick = |name: &str| {
        sys.get(&format!("net.ipv4.{name}")).map(|v| {
            format!(
                "{name}={}",
                v.split_whitespace().collect::<Vec<_>>().join("-")
            )
        })
    };
    let settings: Vec<String> = [
        "tcp_tw_reuse",
        "tcp_timestamps",
        "ip_local_port_range",
        "tcp_max_tw_buckets",
    ]
    .iter()
    .filter_map(|n| pick(n))
    .collect();
    let _ = writeln!(
        out,
        "  kernel       {} {}",
        r.kernel.release,
        settings.join(" ")
    );
    out
}

fn side(s: &TimeWaitSide) -> String {
    let mut parts = Vec::new();
    let mut add = |name: &str, v: Option<u64>| {
        if let Some(v) = v {
            parts.push(format!("{name} {v}"));
        }
    };
    add("entered", s.entered);
    add("peak", s.peak);
    add("open", s.open);
    add("expired", s.expired);
    add("reused", s.reused);
    add("reused older", s.reused_older.filter(|&n| n > 0));
    add("killed", s.killed);
    add("overflow", s.overflow);
    add("to TIME_WAIT", s.to_time_wait);
    if parts.is_empty() {
        "n/a".to_string()
    } else {
        parts.join(", ")
    }
}

fn percentiles(p: &Percentiles) -> String {
    if p.count == 0 {
        return "n/a".to_string();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        us(p.p50),
        us(p.p90),
        us(p.p99),
        us(p.p999),
        us(p.max)
    )
}

/// Microseconds in the unit that keeps three significant digits readable.
fn us(v: u64) -> String {
    match v {
        0..1_000 => format!("{v}µs"),
        1_000..1_000_000 => format!("{:.2}ms", v as f64 / 1e3),
        _ => format!("{:.2}s", v as f64 / 1e6),
    }
}

/// The summary as data, for the other formats of the report of a run: the title line, then
/// each line's label and value. A label starting with a space details the line above it
/// (` connect` under `latency`).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub title: String,
    pub lines: Vec<(String, String)>,
}

/// Width of the label column of [`render_text`]: two spaces, the label padded to 12, a space.
const LABEL_END: usize = 15;

/// The summary of `r`: [`render_text`]'s own lines, split at its label column, so that every
/// format shows exactly what `run` printed.
pub fn summary(r: &RunRecord) -> Summary {
    let text = render_text(r);
    let mut lines = text.lines();
    let title = lines.next().unwrap_or_default().to_string();
    let lines = lines
        .map(|line| {
            match (line.get(2..LABEL_END), line.get(LABEL_END..)) {
                (Some(label), Some(value)) if line.starts_with("  ") => {
                    (label.trim_end().to_string(), value.to_string())
                }
                // Not in the label column: the whole line as the value.
                _ => (String::new(), line.trim().to_string()),
            }
        })
        .collect();
    Summary { title, lines }
}

#[cfg(test)]
mod summary_tests {
    use super::*;
    use crate::report::sample::record;

    use crate::model::Mode;

    #[test]
    fn the_summary_is_the_text_split_at_its_label_column() {
        let r = record(Mode::ClientClose, &[100, 200, 300], 0, 1);
        let s = summary(&r);
        let text = render_text(&r);
        assert_eq!(text.lines().next(), Some(s.title.as_str()));
        let labels: Vec<&str> = s.lines.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            &labels[..5],
            [
                "requests",
                "connections",
                "latency",
                " connect",
                " first byte"
            ]
        );
        let again: String = s
            .lines
            .iter()
            .map(|(l, v)| format!("  {l:<12} {v}\n"))
            .collect();
        assert_eq!(format!("{}\n{again}", s.title), text);
    }

    #[test]
    fn a_scenarios_requests_have_a_line_each() {
        let r = crate::report::sample::scenario_record(&[
            ("search", &[100; 30]),
            ("login", &[900; 10]),
        ]);
        let text = render_text(&r);
        assert!(
            text.starts_with("loadprobe scenario of 2 requests (seed 7) against http://"),
            "{text}"
        );
        assert!(
            text.contains(
                "  by request   search: 30 (75.0%, weight 1, client-close), 0 errors; p50 100µs"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\n               login: 10 (25.0%, weight 1, client-close), 0 errors; p50 900µs"
            ),
            "{text}"
        );
    }
}
