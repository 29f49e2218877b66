//! Did a tuning help? Per-metric deltas between the baseline and tuned runs of `tune validate`,
//! each judged against noise, and one verdict with its reason.
//!
//! Noise is judged the way `compare` judges it ([`crate::compare::noise`]: the two sides' means
//! ± 2·s/√n must not overlap) wherever there is a spread to judge by: the repetitions' values,
//! or, for throughput from a single run each, its seconds. Two cases `compare` has no rule for
//! get one here:
//! * counts that are a share of something (failed requests per request, TIME_WAIT overflow per
//!   TIME_WAIT needed) use a two-proportion z-test over all repetitions, which works from a
//!   single run: a change counts at |z| >= 3;
//! * a latency percentile from a single run each has no spread, and on a shared machine a p99
//!   doubles between two identical runs, so it counts only beyond 5x and 100 ms (a full accept
//!   queue's SYN retransmits add a whole second); anything subtler needs `--repeat`.
//!
//! The verdict is conservative because `--apply` acts on it: `improved` only when something got
//! better and nothing got worse.

use serde::Serialize;

use crate::compare::noise::{self, Noise};
use crate::model::Side;
use crate::report::{RunRecord, TimeWaitSide};

/// The overall answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "improved")]
    Improved,
    #[serde(rename = "no effect")]
    NoEffect,
    #[serde(rename = "regressed")]
    Regressed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Improved => "improved",
            Verdict::NoEffect => "no effect",
            Verdict::Regressed => "regressed",
        }
    }
}

/// Which direction is good for a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
    /// Informative only (TIME_WAIT peak, reuse): neither direction is good in itself.
    Neither,
}

/// What a change means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Better,
    Worse,
    /// Within noise.
    Same,
    /// Not judged (see [`Better::Neither`]).
    Info,
}

/// One metric, baseline against tuned (means per run over the repetitions).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricDelta {
    /// E.g. `errors`, `errors.EADDRNOTAVAIL`, `ok_per_s`, `latency_p99_us`,
    /// `time_wait.client.reused`.
    pub metric: String,
    pub better: Better,
    pub baseline: f64,
    pub tuned: f64,
    /// `tuned - baseline`.
    pub delta: f64,
    /// `delta / baseline` in percent; null when the baseline is 0.
    pub delta_pct: Option<f64>,
    /// Beyond noise (null for informative metrics).
    pub significant: Option<bool>,
    pub effect: Effect,
    /// How the noise was judged, for a reader who wants to check.
    pub noise: String,
}

/// Every delta and the verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Judgement {
    pub verdict: Verdict,
    /// One sentence.
    pub reason: String,
    pub metrics: Vec<MetricDelta>,
}

/// z beyond which a difference of proportions counts.
const Z: f64 = 3.0;
/// A latency from single runs counts beyond this change, in µs ...
const SINGLE_RUN_LATENCY_US: f64 = 100_000.0;
/// ... and this factor.
const SINGLE_RUN_LATENCY_FACTOR: f64 = 5.0;

/// Compares `baseline` against `tuned` (one record per repetition each, at least one).
pub fn judge(baseline: &[RunRecord], tuned: &[RunRecord]) -> Judgement {
    let mut metrics = Vec::new();
    metrics.push(errors(baseline, tuned));
    for class in error_classes(baseline, tuned) {
        let count = |r: &RunRecord| r.requests.errors.get(&class).copied().unwrap_or(0) as f64;
        metrics.push(info(
            &format!("errors.{class}"),
            mean_of(baseline, count),
            mean_of(tuned, count),
        ));
    }
    metrics.push(throughput(baseline, tuned));
    metrics.push(latency("latency_p50_us", baseline, tuned, |r| {
        r.latency_us.total.p50
    }));
    metrics.push(latency("latency_p99_us", baseline, tuned, |r| {
        r.latency_us.total.p99
    }));
    for side in Side::ALL {
        if let Some(m) = overflow(side, baseline, tuned) {
            metrics.push(m);
        }
        for (field, get) in TW_FIELDS {
            let value = |r: &RunRecord| tw_side(r, side).and_then(get);
            if baseline.iter().chain(tuned).all(|r| value(r).is_some()) {
                let count = |r: &RunRecord| value(r).unwrap_or(0) as f64;
                metrics.push(info(
                    &format!("time_wait.{side}.{field}"),
                    mean_of(baseline, count),
                    mean_of(tuned, count),
                ));
            }
        }
    }
    let (verdict, reason) = decide(&metrics, baseline, tuned);
    Judgement {
        verdict,
        reason,
        metrics,
    }
}

type TwField = fn(&TimeWaitSide) -> Option<u64>;

/// The TIME_WAIT figures reported as information (overflow is judged separately).
const TW_FIELDS: [(&str, TwField); 6] = [
    ("peak", |t| t.peak),
    ("entered", |t| t.entered),
    ("reused", |t| t.reused),
    ("expired", |t| t.expired),
    ("killed", |t| t.killed),
    ("open", |t| t.open),
];

fn tw_side(r: &RunRecord, side: Side) -> Option<&TimeWaitSide> {
    Some(r.time_wait.side(side))
}

fn error_classes(baseline: &[RunRecord], tuned: &[RunRecord]) -> Vec<String> {
    let mut classes: Vec<String> = baseline
        .iter()
        .chain(tuned)
        .flat_map(|r| r.requests.errors.keys().cloned())
        .collect();
    classes.sort();
    classes.dedup();
    classes
}

fn mean_of(records: &[RunRecord], f: impl Fn(&RunRecord) -> f64) -> f64 {
    mean(&records.iter().map(f).collect::<Vec<_>>())
}

fn sum_of(records: &[RunRecord], f: impl Fn(&RunRecord) -> u64) -> u64 {
    records.iter().map(f).sum()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn delta(metric: &str, better: Better, baseline: f64, tuned: f64) -> MetricDelta {
    let d = tuned - baseline;
    MetricDelta {
        metric: metric.to_string(),
        better,
        baseline,
        tuned,
        delta: d,
        delta_pct: (baseline != 0.0).then(|| 100.0 * d / baseline),
        significant: None,
        effect: Effect::Info,
        noise: "not judged".to_string(),
    }
}

fn info(metric: &str, baseline: f64, tuned: f64) -> MetricDelta {
    delta(metric, Better::Neither, baseline, tuned)
}

/// Sets significance and effect on a judged metric.
fn judged(mut m: MetricDelta, significant: bool, noise: String) -> MetricDelta {
    m.significant = Some(significant);
    m.noise = noise;
    m.effect = match (significant, m.better, m.delta > 0.0) {
        (_, Better::Neither, _) => Effect::Info,
        (false, _, _) => Effect::Same,
        (true, Better::Higher, true) | (true, Better::Lower, false) => Effect::Better,
        (true, _, _) => Effect::Worse,
    };
    m
}

/// Pooled two-proportion z-test: `a` of `n` against `b` of `m`.
fn proportion_z(a: u64, n: u64, b: u64, m: u64) -> f64 {
    if n == 0 || m == 0 {
        return 0.0;
    }
    let (n, m) = (n as f64, m as f64);
    let (pa, pb) = (a as f64 / n, b as f64 / m);
    let p = (a + b) as f64 / (n + m);
    let se = (p * (1.0 - p) * (1.0 / n + 1.0 / m)).sqrt();
    if se == 0.0 { 0.0 } else { (pb - pa) / se }
}

/// Failed requests per run; judged as a share of all requests.
fn errors(baseline: &[RunRecord], tuned: &[RunRecord]) -> MetricDelta {
    let failed = |r: &RunRecord| r.requests.total - r.requests.ok.min(r.requests.total);
    let (a, n) = (
        sum_of(baseline, failed),
        sum_of(baseline, |r| r.requests.total),
    );
    let (b, m) = (sum_of(tuned, failed), sum_of(tuned, |r| r.requests.total));
    let z = proportion_z(a, n, b, m);
    let d = delta(
        "errors",
        Better::Lower,
        mean_of(baseline, |r| failed(r) as f64),
        mean_of(tuned, |r| failed(r) as f64),
    );
    judged(
        d,
        z.abs() >= Z && a != b,
        format!("share of requests: {a} of {n} against {b} of {m}, z = {z:.1} (counts at 3)"),
    )
}

/// TIME_WAIT sockets not created (tcp_max_tw_buckets) on one side, as a share of the TIME_WAIT
/// sockets that side needed. `None` when the source cannot tell (no probe).
fn overflow(side: Side, baseline: &[RunRecord], tuned: &[RunRecord]) -> Option<MetricDelta> {
    let counts = |records: &[RunRecord]| -> Option<(u64, u64)> {
        records.iter().try_fold((0, 0), |(o, n), r| {
            let t = tw_side(r, side)?;
            let (overflow, entered) = (t.overflow?, t.entered?);
            Some((o + overflow, n + overflow + entered))
        })
    };
    let ((a, n), (b, m)) = (counts(baseline)?, counts(tuned)?);
    let z = proportion_z(a, n, b, m);
    let d = delta(
        &format!("time_wait.{side}.overflow"),
        Better::Lower,
        a as f64 / baseline.len().max(1) as f64,
        b as f64 / tuned.len().max(1) as f64,
    );
    Some(judged(
        d,
        z.abs() >= Z && a != b,
        format!("share of TIME_WAIT needed: {a} of {n} against {b} of {m}, z = {z:.1}"),
    ))
}

/// Successful requests per second.
fn throughput(baseline: &[RunRecord], tuned: &[RunRecord]) -> MetricDelta {
    let ok_per_s = |r: &RunRecord| {
        if r.duration_s > 0.0 {
            r.requests.ok as f64 / r.duration_s
        } else {
            0.0
        }
    };
    let (sa, sb, what) = if baseline.len() >= 2 && tuned.len() >= 2 {
        let per_run = |rs: &[RunRecord]| rs.iter().map(ok_per_s).collect::<Vec<_>>();
        (per_run(baseline), per_run(tuned), "repetitions")
    } else {
        (per_second(baseline), per_second(tuned), "seconds")
    };
    let d = delta(
        "ok_per_s",
        Better::Higher,
        mean_of(baseline, ok_per_s),
        mean_of(tuned, ok_per_s),
    );
    spread_test(d, &sa, &sb, what)
}

/// Successful requests in each full second of every run.
fn per_second(records: &[RunRecord]) -> Vec<f64> {
    records
        .iter()
        .flat_map(|r| {
            let full = r.duration_s.floor() as usize;
            r.throughput
                .timeline
                .iter()
                .take(full.max(1))
                .map(|s| s.ok as f64)
        })
        .collect()
}

/// `compare`'s rule ([`noise::assess`]) on two sets of samples.
fn spread_test(d: MetricDelta, sa: &[f64], sb: &[f64], what: &str) -> MetricDelta {
    let judgement = noise::assess(sa, sb);
    let interval = |v: &[f64]| match noise::Spread::of(v) {
        Some(s) => format!("{:.1} ± {:.1}", s.mean, s.half_width),
        None => "one value".to_string(),
    };
    let text = format!(
        "{} {what} against {}: {} and {} (mean ± 2·s/√n), {}",
        sa.len(),
        sb.len(),
        interval(sa),
        interval(sb),
        match judgement {
            Noise::Significant => "apart",
            Noise::WithinNoise => "overlapping",
            Noise::CannotTell => "cannot tell",
        }
    );
    judged(d, judgement == Noise::Significant, text)
}

/// A latency percentile of the successful requests, in microseconds.
fn latency(
    metric: &str,
    baseline: &[RunRecord],
    tuned: &[RunRecord],
    get: fn(&RunRecord) -> u64,
) -> MetricDelta {
    let values = |rs: &[RunRecord]| rs.iter().map(|r| get(r) as f64).collect::<Vec<_>>();
    let (sa, sb) = (values(baseline), values(tuned));
    let d = delta(metric, Better::Lower, mean(&sa), mean(&sb));
    if sa.len() >= 2 && sb.len() >= 2 {
        return spread_test(d, &sa, &sb, "repetitions");
    }
    let (lo, hi) = (d.baseline.min(d.tuned), d.baseline.max(d.tuned));
    let significant = hi - lo >= SINGLE_RUN_LATENCY_US && hi >= SINGLE_RUN_LATENCY_FACTOR * lo;
    let noise =
        "one run each, no spread: counts beyond 5x and 100 ms (use --repeat for less)".to_string();
    judged(d, significant, noise)
}

/// The verdict and its sentence, from the judged metrics in order of importance: failed
/// requests, lost TIME_WAIT protection, throughput, then latency.
fn decide(
    metrics: &[MetricDelta],
    baseline: &[RunRecord],
    tuned: &[RunRecord],
) -> (Verdict, String) {
    const RANK: [&str; 6] = [
        "errors",
        "time_wait.server.overflow",
        "time_wait.client.overflow",
        "ok_per_s",
        "latency_p99_us",
        "latency_p50_us",
    ];
    let ranked = |effect: Effect| {
        RANK.iter()
            .filter_map(|name| metrics.iter().find(|m| m.metric == *name))
            .filter(|m| m.effect == effect)
            .collect::<Vec<_>>()
    };
    let (better, worse) = (ranked(Effect::Better), ranked(Effect::Worse));
    let say = |m: &MetricDelta| describe(m, metrics, baseline, tuned);
    match (worse.first(), better.first()) {
        (Some(w), Some(b)) => (
            Verdict::Regressed,
            sentence(&format!("{}, although {}", say(w), say(b))),
        ),
        (Some(w), None) => (Verdict::Regressed, sentence(&say(w))),
        (None, Some(b)) => (Verdict::Improved, sentence(&say(b))),
        (None, None) => (Verdict::NoEffect, sentence(&unchanged(metrics))),
    }
}

/// Capitalised, with a full stop.
fn sentence(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

fn find<'a>(metrics: &'a [MetricDelta], name: &str) -> Option<&'a MetricDelta> {
    metrics.iter().find(|m| m.metric == name)
}

/// Rounds a per-run mean for a sentence: whole numbers stay whole.
fn num(v: f64) -> String {
    if (v - v.round()).abs() < 0.05 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn describe(
    m: &MetricDelta,
    metrics: &[MetricDelta],
    baseline: &[RunRecord],
    tuned: &[RunRecord],
) -> String {
    let dir = if m.delta < 0.0 { "fell" } else { "rose" };
    let (a, b) = (num(m.baseline), num(m.tuned));
    match m.metric.as_str() {
        "errors" => {
            // Name the error class that moved most.
            let class = metrics
                .iter()
                .filter(|c| c.metric.starts_with("errors."))
                .max_by(|x, y| x.delta.abs().total_cmp(&y.delta.abs()))
                .map(|c| {
                    let name = c.metric.trim_start_matches("errors.");
                    format!(
                        "{name} errors {dir} from {} to {}",
                        num(c.baseline),
                        num(c.tuned)
                    )
                })
                .unwrap_or_else(|| format!("failed requests {dir} from {a} to {b}"));
            let requests = mean_of(tuned, |r| r.requests.total as f64);
            let base_requests = mean_of(baseline, |r| r.requests.total as f64);
            let mut s = if num(requests) == num(base_requests) {
                format!("{class} of {} requests per run", num(requests))
            } else {
                format!(
                    "{class} (of {} and {} requests per run)",
                    num(base_requests),
                    num(requests)
                )
            };
            if m.effect == Effect::Better
                && let Some(r) = find(metrics, "time_wait.client.reused").filter(|r| r.delta > 0.0)
            {
                s.push_str(&format!(
                    ", and {} client TIME_WAIT sockets per run were reused",
                    num(r.tuned)
                ));
            }
            s
        }
        "time_wait.server.overflow" | "time_wait.client.overflow" => {
            let side = if m.metric.contains("server") {
                "server"
            } else {
                "client"
            };
            if m.effect == Effect::Worse {
                format!(
                    "the {side} dropped {b} TIME_WAIT sockets per run to tcp_max_tw_buckets \
                     overflow (baseline {a}), silently: those connections lose TIME_WAIT's \
                     protection, so a late or retransmitted segment meets an RST or a new \
                     connection on the same ports"
                )
            } else {
                format!("{side} TIME_WAIT overflow {dir} from {a} to {b} per run")
            }
        }
        "ok_per_s" => format!("successful requests {dir} from {a}/s to {b}/s"),
        name => {
            let p = name.trim_start_matches("latency_").trim_end_matches("_us");
            format!(
                "{p} latency {dir} from {:.2} ms to {:.2} ms",
                m.baseline / 1000.0,
                m.tuned / 1000.0
            )
        }
    }
}

/// The no-effect sentence: what stayed the same.
fn unchanged(metrics: &[MetricDelta]) -> String {
    let pair = |name: &str| {
        find(metrics, name)
            .map(|m| (num(m.baseline), num(m.tuned)))
            .unwrap_or_default()
    };
    let (ea, eb) = pair("errors");
    let (ta, tb) = pair("ok_per_s");
    format!(
        "nothing changed beyond noise (failed requests per run {ea} and {eb}, successful \
         requests {ta}/s and {tb}/s, latency alike)"
    )
}

#[cfg(test)]
pub(crate) mod tests;
