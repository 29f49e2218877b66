//! Metrics by record path (`throughput.rps`, `latency_us.total.p99`, `time_wait.server.peak`,
//! `connections.closer.server`, `requests.errors.EADDRNOTAVAIL`): the keys of the JSON record
//! joined with dots, as docs/run-record.md documents them. The comparison tables and the
//! `--fail-if` gates both read numbers through [`lookup`], so a gate means what its row shows.
//!
//! A scenario's request `NAME` has its own `requests`, `latency_us`... under
//! `by_request.NAME.` (`by_request.search.latency_us.total.p99`), read by the same rules as the
//! record's own.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::report::RunRecord;

/// The error classes live under this path; a class a run never saw counts 0 there.
const ERRORS: &str = "requests.errors";
pub(crate) const ERROR_CLASS: &str = "requests.errors.";
/// A scenario's requests, by name.
pub(crate) const BY_REQUEST: &str = "by_request";

/// `by_request.NAME.REST` as `(NAME, REST)`.
pub(crate) fn split_request(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix(BY_REQUEST)?
        .strip_prefix('.')?
        .split_once('.')
}

/// The error class a path names (`requests.errors.CLASS`, or a request's), if it names one.
pub(crate) fn error_class(path: &str) -> Option<&str> {
    let rest = split_request(path).map_or(path, |(_, rest)| rest);
    rest.strip_prefix(ERROR_CLASS)
}

/// What a path holds in one record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lookup {
    Number(f64),
    /// The key exists but is `null`: not known from the sources that run had.
    Unknown,
    /// No such key, or not a number (a string, an object, a list).
    NotAMetric,
}

impl Lookup {
    pub fn number(self) -> Option<f64> {
        match self {
            Lookup::Number(v) => Some(v),
            _ => None,
        }
    }
}

/// The record as JSON, the form paths address.
pub fn record_json(r: &RunRecord) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

/// The number at `path` in `record` (its JSON form). Booleans read as 1 and 0.
/// `requests.errors` is the sum of all error classes, and `requests.errors.CLASS` is 0 for a
/// class the run never saw.
pub fn lookup(record: &Value, path: &str) -> Lookup {
    if let Some((name, rest)) = split_request(path) {
        return match record.get(BY_REQUEST).and_then(|r| r.get(name)) {
            Some(figures) => lookup(figures, rest),
            None => Lookup::NotAMetric,
        };
    }
    let mut v = record;
    for key in path.split('.') {
        match v.get(key) {
            Some(next) => v = next,
            None if path.starts_with(ERROR_CLASS) => {
                return if record
                    .pointer("/requests/errors")
                    .is_some_and(Value::is_object)
                {
                    Lookup::Number(0.0)
                } else {
                    Lookup::NotAMetric
                };
            }
            None => return Lookup::NotAMetric,
        }
    }
    match v {
        Value::Number(n) => n.as_f64().map_or(Lookup::NotAMetric, Lookup::Number),
        Value::Bool(b) => Lookup::Number(if *b { 1.0 } else { 0.0 }),
        Value::Null => Lookup::Unknown,
        Value::Object(map) if path == ERRORS => {
            Lookup::Number(map.values().filter_map(Value::as_f64).sum())
        }
        _ => Lookup::NotAMetric,
    }
}

/// The value of `path` in one repetition's figures (see `report::merge::headline_metrics`),
/// with the same rule for error classes as [`lookup`].
pub fn repetition_value(rep: &BTreeMap<String, f64>, path: &str) -> Option<f64> {
    let total = match split_request(path) {
        Some((name, _)) => format!("{BY_REQUEST}.{name}.requests.total"),
        None => "requests.total".to_string(),
    };
    match rep.get(path) {
        Some(v) => Some(*v),
        None if error_class(path).is_some() && rep.contains_key(&total) => Some(0.0),
        None => None,
    }
}

/// For a share written `N%` (`connections.closer.server < 99%`): the path of the total the
/// metric is a share of. Closers are shares of all closers counted, request outcomes shares of
/// all requests.
/// A request's outcomes are shares of its own requests.
pub fn share_of(path: &str) -> Option<String> {
    if let Some((name, rest)) = split_request(path) {
        return share_of(rest)
            .filter(|t| t == "requests.total")
            .map(|t| format!("{BY_REQUEST}.{name}.{t}"));
    }
    if path.starts_with("connections.closer.") {
        Some("connections.closer".to_string())
    } else if path == "requests.ok" || path.starts_with(ERRORS) {
        Some("requests.total".to_string())
    } else {
        None
    }
}

/// The total that [`share_of`] names, in `record`.
pub fn share_total(record: &Value, total_path: &str) -> Option<f64> {
    match total_path {
        "connections.closer" => record
            .pointer("/connections/closer")
            .and_then(Value::as_object)
            .map(|m| m.values().filter_map(Value::as_f64).sum()),
        other => lookup(record, other).number(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample::record;

    use crate::model::Mode;

    use crate::report::merge::headline_metrics;

    #[test]
    fn paths_address_the_record() {
        let mut r = record(Mode::ServerClose, &[100, 200, 300, 400], 0, 2);
        r.requests.errors.insert("ECONNRESET".into(), 2);
        r.time_wait.client.expired = None;
        let v = record_json(&r);
        assert_eq!(lookup(&v, "throughput.rps"), Lookup::Number(2.0));
        assert_eq!(lookup(&v, "time_wait.server.peak"), Lookup::Number(4.0));
        assert_eq!(lookup(&v, "connections.closer.server"), Lookup::Number(4.0));
        assert_eq!(
            lookup(&v, "requests.errors.ECONNRESET"),
            Lookup::Number(2.0)
        );
        assert_eq!(
            lookup(&v, "requests.errors.EADDRNOTAVAIL"),
            Lookup::Number(0.0)
        );
        assert_eq!(lookup(&v, "requests.errors"), Lookup::Number(2.0));
        assert_eq!(lookup(&v, "time_wait.client.expired"), Lookup::Unknown);
        assert_eq!(lookup(&v, "probe.attached"), Lookup::Number(1.0));
        assert_eq!(lookup(&v, "throughput.rsp"), Lookup::NotAMetric);
        assert_eq!(lookup(&v, "config.mode"), Lookup::NotAMetric);
        assert_eq!(lookup(&v, "latency_us.total"), Lookup::NotAMetric);
        assert_eq!(share_total(&v, "connections.closer"), Some(4.0));
    }

    #[test]
    fn repetitions_hold_the_same_numbers_as_the_record() {
        let r = record(Mode::ClientClose, &[100, 200, 300, 400], 0, 2);
        let v = record_json(&r);
        let rep = headline_metrics(&r);
        for path in [
            "throughput.rps",
            "latency_us.total.p99",
            "connections.closer.client",
            "time_wait.client.entered",
            "requests.errors",
            "requests.errors.EADDRNOTAVAIL",
        ] {
            assert_eq!(
                repetition_value(&rep, path),
                lookup(&v, path).number(),
                "{path}"
            );
        }
    }

    #[test]
    fn a_requests_figures_are_read_under_its_name() {
        let r = crate::report::sample::scenario_record(&[
            ("search", &[100; 30]),
            ("login", &[900; 10]),
        ]);
        let v = record_json(&r);
        for (path, want) in [
            ("by_request.search.requests.total", Lookup::Number(30.0)),
            (
                "by_request.login.latency_us.total.p99",
                Lookup::Number(900.0),
            ),
            (
                "by_request.login.requests.errors.timeout",
                Lookup::Number(0.0),
            ),
            ("by_request.login.requests.errors", Lookup::Number(0.0)),
            ("by_request.serch.requests.total", Lookup::NotAMetric),
            ("by_request.login", Lookup::NotAMetric),
        ] {
            assert_eq!(lookup(&v, path), want, "{path}");
        }
        assert_eq!(
            share_of("by_request.login.requests.errors.timeout").as_deref(),
            Some("by_request.login.requests.total")
        );
        assert_eq!(share_of("by_request.login.latency_us.total.p99"), None);
        let rep = headline_metrics(&r);
        for path in [
            "by_request.search.latency_us.total.p99",
            "by_request.login.requests.errors",
            "by_request.login.requests.errors.EADDRNOTAVAIL",
        ] {
            assert_eq!(
                repetition_value(&rep, path),
                lookup(&v, path).number(),
                "{path}"
            );
        }
    }
}
