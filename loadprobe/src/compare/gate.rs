//! CI gates: `--fail-if 'PATH OP VALUE'`, a condition that fails the comparison when it holds
//! for a run compared with the base.
//!
//! `PATH` is a record path (see [`super::metrics`]); `OP` one of `< <= > >= == !=`; `VALUE`:
//! - a plain number (`0`, `1500`): the run's own value, e.g. `time_wait.server.peak > 0`;
//! - a signed percentage (`+10%`, `-5%`): the relative change from the base, e.g.
//!   `throughput.rps < -5%` fails when throughput dropped by more than 5 %;
//! - an unsigned percentage (`99%`): a share of a total, for closers (of all closers counted)
//!   and request outcomes (of all requests), e.g. `connections.closer.server < 99%`.
//!
//! A gate whose figure is not known in a run (`null`, e.g. no probe) fails: a CI job must not
//! pass on a check it could not make.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use super::metrics::{
    BY_REQUEST, Lookup, error_class, lookup, share_of, share_total, split_request,
};
use crate::driver::errors::ErrorClass;
use crate::format::{number, percent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    /// Longest first, so `<=` is not read as `<`.
    const ALL: [(&'static str, Op); 6] = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }

    fn as_str(self) -> &'static str {
        Op::ALL
            .iter()
            .find(|(_, op)| *op == self)
            .map_or("?", |(s, _)| s)
    }
}

/// What the metric is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// The run's value itself.
    Absolute(f64),
    /// Relative change from the base, in percent (`-5%` is `Change(-5.0)`).
    Change(f64),
    /// Share of a total, in percent.
    Share(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub path: String,
    pub op: Op,
    pub threshold: Threshold,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GateError {
    // Each says what is wrong with the gate it holds; the caller names the gate (and its flag).
    #[error("{reason}")]
    Syntax { expr: String, reason: String },
    #[error("{path:?} is not a number in the records (see docs/run-record.md for the paths)")]
    UnknownPath { gate: String, path: String },
    #[error("no request is named {name:?} in the records; their requests are {known}")]
    UnknownRequest {
        gate: String,
        name: String,
        known: String,
    },
    #[error("{class:?} is not an error class; the classes are {known}")]
    UnknownErrorClass {
        gate: String,
        class: String,
        known: String,
    },
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = match self.threshold {
            Threshold::Absolute(v) => v.to_string(),
            Threshold::Change(v) if v >= 0.0 => format!("+{v}%"),
            Threshold::Change(v) => format!("{v}%"),
            Threshold::Share(v) => format!("{v}%"),
        };
        write!(f, "{} {} {value}", self.path, self.op.as_str())
    }
}

impl FromStr for Gate {
    type Err = GateError;

    fn from_str(expr: &str) -> Result<Gate, GateError> {
        let syntax = |reason: &str| GateError::Syntax {
            expr: expr.to_string(),
            reason: reason.to_string(),
        };
        let (at, sym, op) = Op::ALL
            .iter()
            .filter_map(|&(sym, op)| expr.find(sym).map(|at| (at, sym, op)))
            .min_by_key(|&(at, sym, _)| (at, std::cmp::Reverse(sym.len())))
            .ok_or_else(|| syntax("expected PATH OP VALUE with OP one of < <= > >= == !="))?;
        let path = expr[..at].trim();
        let value = expr[at + sym.len()..].trim();
        if path.is_empty() || path.contains(char::is_whitespace) {
            return Err(syntax(
                "expected a record path before the operator, e.g. throughput.rps",
            ));
        }
        let number = |s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| syntax(&format!("{s:?} is not a number")))
        };
        let threshold = match value.strip_suffix('%') {
            Some(p) if p.starts_with('+') || p.starts_with('-') => Threshold::Change(number(p)?),
            Some(p) => {
                if share_of(path).is_none() {
                    return Err(syntax(
                        "an unsigned N% is a share of a total, which only connections.closer.* \
                         and requests.ok/requests.errors (also a request's, by_request.NAME.) \
                         have; write +N% or -N% for a change from the base",
                    ));
                }
                Threshold::Share(number(p)?)
            }
            None if value.starts_with('+') => {
                return Err(syntax(
                    "a sign marks a change from the base: write +N% (relative), or N without \
                     a sign for the value itself",
                ));
            }
            None if value.is_empty() => return Err(syntax("expected a value after the operator")),
            None => Threshold::Absolute(number(value)?),
        };
        Ok(Gate {
            path: path.to_string(),
            op,
            threshold,
        })
    }
}

/// One gate checked on one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The condition holds (or could not be checked): the comparison fails.
    pub failed: bool,
    /// What was compared, for people: `9,512.1 vs base 10,402.3: -8.6%`.
    pub detail: String,
}

impl Gate {
    /// Checks the gate on `other` against `base` (both records as JSON).
    pub fn evaluate(&self, base: &Value, other: &Value) -> Result<Evaluation, GateError> {
        // An absent class counts 0, so a misspelt one would be a gate that never fires. A class
        // that some record has is fine even if this build does not know it.
        if let Some((name, _)) = split_request(&self.path) {
            let has = |r: &Value| r.get(BY_REQUEST).is_some_and(|b| b.get(name).is_some());
            if !has(base) && !has(other) {
                let names = |r: &Value| {
                    r.get(BY_REQUEST)
                        .and_then(Value::as_object)
                        .map(|m| m.keys().cloned().collect::<Vec<_>>())
                        .unwrap_or_default()
                };
                let mut known = names(base);
                known.extend(names(other));
                known.sort();
                known.dedup();
                return Err(GateError::UnknownRequest {
                    gate: self.to_string(),
                    name: name.to_string(),
                    known: if known.is_empty() {
                        "none (the records are not of scenarios)".to_string()
                    } else {
                        known.join(", ")
                    },
                });
            }
        }
        if let Some(class) = error_class(&self.path) {
            let errors = match split_request(&self.path) {
                Some((name, _)) => format!("/{BY_REQUEST}/{name}/requests/errors"),
                None => "/requests/errors".to_string(),
            };
            let seen = |r: &Value| r.pointer(&errors).is_some_and(|e| e.get(class).is_some());
            if !ErrorClass::is_known_name(class) && !seen(base) && !seen(other) {
                return Err(GateError::UnknownErrorClass {
                    gate: self.to_string(),
                    class: class.to_string(),
                    known: ErrorClass::known_names().join(", "),
                });
            }
        }
        let (b, o) = (lookup(base, &self.path), lookup(other, &self.path));
        if b == Lookup::NotAMetric && o == Lookup::NotAMetric {
            return Err(GateError::UnknownPath {
                gate: self.to_string(),
                path: self.path.clone(),
            });
        }
        let unknown = |what: &str| Evaluation {
            failed: true,
            detail: format!("cannot check: {what}"),
        };
        let Some(o) = o.number() else {
            return Ok(unknown("not known in this run (null)"));
        };
        let (actual, detail) = match self.threshold {
            Threshold::Absolute(_) => (o, number(o)),
            Threshold::Change(_) => {
                let Some(b) = b.number() else {
                    return Ok(unknown("not known in the base (null)"));
                };
                let change = if b == o {
                    0.0
                } else if b == 0.0 {
                    f64::INFINITY.copysign(o)
                } else {
                    (o - b) / b.abs() * 100.0
                };
                (
                    change,
                    format!("{} vs base {}: {}", number(o), number(b), percent(change)),
                )
            }
            Threshold::Share(_) => {
                let total = share_of(&self.path).and_then(|t| share_total(other, &t));
                match total {
                    Some(t) if t > 0.0 => {
                        let share = o / t * 100.0;
                        (
                            share,
                            format!("{} of {}: {share:.1}%", number(o), number(t)),
                        )
                    }
                    _ => return Ok(unknown("the total is 0 in this run")),
                }
            }
        };
        let limit = match self.threshold {
            Threshold::Absolute(v) | Threshold::Change(v) | Threshold::Share(v) => v,
        };
        Ok(Evaluation {
            failed: self.op.holds(actual, limit),
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::metrics::record_json;
    use crate::report::sample::record;

    use crate::model::Mode;

    fn gate(s: &str) -> Gate {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_the_three_kinds_of_value() {
        assert_eq!(
            gate("throughput.rps < -5%"),
            Gate {
                path: "throughput.rps".into(),
                op: Op::Lt,
                threshold: Threshold::Change(-5.0)
            }
        );
        assert_eq!(
            gate("latency_us.total.p99>+10%").threshold,
            Threshold::Change(10.0)
        );
        assert_eq!(
            gate("time_wait.server.peak > 0").threshold,
            Threshold::Absolute(0.0)
        );
        assert_eq!(gate("latency_us.total.p99 >= 1500").op, Op::Ge);
        assert_eq!(
            gate("connections.closer.server < 99%").threshold,
            Threshold::Share(99.0)
        );
        assert_eq!(gate("requests.errors.EADDRNOTAVAIL != 0").op, Op::Ne);
        assert_eq!(gate("requests.errors <= 0.5%").op, Op::Le);
        assert_eq!(gate("a.b == 1").op, Op::Eq);
        assert_eq!(
            gate("throughput.rps < -5%").to_string(),
            "throughput.rps < -5%"
        );
        assert_eq!(gate("x.y>=+10%").to_string(), "x.y >= +10%");
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for (expr, expect) in [
            ("throughput.rps", "expected PATH OP VALUE"),
            ("< 5", "expected a record path"),
            ("through put < 5", "expected a record path"),
            ("throughput.rps <", "expected a value"),
            ("throughput.rps < fast", "\"fast\" is not a number"),
            ("throughput.rps < +5", "a sign marks a change"),
            ("throughput.rps < 5%", "share of a total"),
            ("throughput.rps < -x%", "not a number"),
            ("throughput.rps < NaN", "not a number"),
        ] {
            let e = expr.parse::<Gate>().unwrap_err().to_string();
            assert!(e.contains(expect), "{expr}: {e}");
        }
    }

    #[test]
    fn percent_change_absolute_and_share() {
        // Base: 400 requests over 2 s, client closes; other: 360 over 2 s, server closes.
        let base = record_json(&record(Mode::ClientClose, &[100; 400], 0, 2));
        let other = record_json(&record(Mode::ServerClose, &[120; 360], 0, 2));
        let check = |s: &str| gate(s).evaluate(&base, &other).unwrap();
        // -10 % throughput.
        assert!(check("throughput.rps < -5%").failed);
        assert!(!check("throughput.rps < -15%").failed);
        assert_eq!(
            check("throughput.rps < -5%").detail,
            "180 vs base 200: -10.0%"
        );
        // +20 % latency (100 -> 120 µs, within HdrHistogram's 3 digits).
        assert!(check("latency_us.total.p99 > +10%").failed);
        assert!(!check("latency_us.total.p99 > +25%").failed);
        // Absolute values are the run's own, not the change.
        assert!(check("time_wait.server.peak > 0").failed);
        assert!(!check("time_wait.client.peak > 0").failed);
        assert!(check("latency_us.total.p99 >= 120").failed);
        assert!(!check("latency_us.total.p99 > 120").failed);
        // Shares: all 360 closed by the server.
        assert!(!check("connections.closer.server < 99%").failed);
        assert!(check("connections.closer.client < 1%").failed);
        assert_eq!(
            check("connections.closer.server < 99%").detail,
            "360 of 360: 100.0%"
        );
        assert!(!check("requests.errors > 0%").failed);
        // From zero, any growth is an infinite change.
        assert!(check("time_wait.server.entered > +1000%").failed);
    }

    #[test]
    fn unknown_figures_fail_and_unknown_paths_are_errors() {
        let base = record(Mode::ClientClose, &[100; 10], 0, 1);
        let mut other = base.clone();
        other.time_wait.client.expired = None;
        let (b, o) = (record_json(&base), record_json(&other));
        let e = gate("time_wait.client.expired > 5")
            .evaluate(&b, &o)
            .unwrap();
        assert!(e.failed && e.detail.contains("not known"), "{e:?}");
        let err = gate("requests.errors.EADDRNOTAVIAL > 0")
            .evaluate(&b, &o)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"EADDRNOTAVIAL\" is not an error class")
                && err.contains("EADDRNOTAVAIL, "),
            "{err}"
        );
        assert!(
            !gate("requests.errors.timeout > 0")
                .evaluate(&b, &o)
                .unwrap()
                .failed
        );
        let err = gate("throughput.rsp < -5%").evaluate(&b, &o).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"throughput.rsp\" is not a number"),
            "{err}"
        );
    }
}
