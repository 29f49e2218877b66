//! The human-readable summary printed at the end of a run.

use std::fmt::Write;

use super::{Percentiles, RunRecord, TimeWaitSide};

/// The summary, several short lines, ending in a newline.
pub fn render_text(r: &RunRecord) -> String {
    let mut out = String::new();
    let c = &r.config;
    let load = match (c.users, c.rate) {
        (Some(users), _) => format!("{users} users"),
        (None, Some(rate)) => format!("{rate}/s open model"),
        _ => String::new(),
    };
    let server = if c.embedded_server {
        " (embedded server)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "loadprobe {} against {}{server}: {load}, {:.1} s measured{}",
        c.mode,
        c.target,
        r.duration_s,
        if r.interrupted { " (interrupted)" } else { "" }
    );
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
    let _ = writeln!(out, "   first byte  {}", percentiles(&l.first_byte));
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
                 skipped: its counts may be short"
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
    let _ = writeln!(
        out,
        "  TIME_WAIT    client {} | server {}  (from {})",
        side(&tw.client),
        side(&tw.server),
        tw.source
    );
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
    add("killed", s.killed);
    add("overflow", s.overflow);
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
