//! The load over time: a start value, then stages that each move linearly to a target over a
//! duration (k6's `stages`), then the last value held. A constant rate or user count is the
//! curve with no stage.
//!
//! In the open model the curve is the arrival rate and start `i` of the run is due when the
//! curve's integral reaches `i`: exact intended start times during a ramp, so latency measured
//! from them stays free of coordinated omission. In the closed model it is the number of users:
//! user `u` runs while the curve is above `u`.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    start: f64,
    stages: Vec<Stage>,
}

/// Move linearly from the previous value to `target` over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub target: f64,
}

impl Curve {
    /// `value` for ever.
    pub fn constant(value: f64) -> Curve {
        Curve {
            start: value,
            stages: Vec::new(),
        }
    }

    pub fn new(start: f64, stages: Vec<Stage>) -> Curve {
        Curve { start, stages }
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    pub fn start(&self) -> f64 {
        self.start
    }

    /// The stages' total length; zero for a constant.
    pub fn total(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The largest value the curve takes.
    pub fn max(&self) -> f64 {
        self.stages
            .iter()
            .map(|s| s.target)
            .fold(self.start, f64::max)
    }

    /// Each stage as (start time, duration, from, to), then the held end as an endless stage.
    fn pieces(&self) -> impl Iterator<Item = (f64, f64, f64, f64)> + '_ {
        let mut t = 0.0;
        let mut from = self.start;
        self.stages
            .iter()
            .map(move |s| {
                let piece = (t, s.duration.as_secs_f64(), from, s.target);
                t += piece.1;
                from = s.target;
                piece
            })
            .chain(std::iter::once((
                self.total().as_secs_f64(),
                f64::INFINITY,
                self.end(),
                self.end(),
            )))
    }

    fn end(&self) -> f64 {
        self.stages.last().map_or(self.start, |s| s.target)
    }

    /// The value at `t` seconds.
    pub fn at(&self, t: f64) -> f64 {
        for (t0, d, a, b) in self.pieces() {
            if t < t0 + d {
                return if d.is_infinite() {
                    a
                } else {
                    a + (b - a) * ((t - t0).max(0.0) / d)
                };
            }
        }
        self.end()
    }

    /// The integral of the curve from 0 to `t` seconds (starts due by then, in the open model).
    pub fn cumulative(&self, t: f64) -> f64 {
        let mut sum = 0.0;
        for (t0, d, a, b) in self.pieces() {
            let tau = (t - t0).clamp(0.0, d);
            if tau <= 0.0 {
                break;
            }
            sum += if d.is_infinite() {
                a * tau
            } else {
                a * tau + (b - a) / (2.0 * d) * tau * tau
            };
        }
        sum
    }

    /// The first moment at which the integral reaches `n`: when start `n` is due. `None` if it
    /// never does (the curve ends at 0 first).
    pub fn time_of(&self, n: f64) -> Option<f64> {
        let mut before = 0.0;
        for (t0, d, a, b) in self.pieces() {
            let left = n - before;
            if d.is_infinite() {
                return (a > 0.0).then(|| t0 + left / a);
            }
            let area = (a + b) / 2.0 * d;
            if left <= area {
                // a·τ + k·τ² = left, with k = (b − a) / 2d.
                let k = (b - a) / (2.0 * d);
                let tau = if k.abs() < 1e-12 {
                    if a > 0.0 { left / a } else { 0.0 }
                } else {
                    (-a + (a * a + 4.0 * k * left).max(0.0).sqrt()) / (2.0 * k)
                };
                return Some(t0 + tau.clamp(0.0, d));
            }
            before += area;
        }
        None
    }

    /// The first moment at or after `t` at which the curve is above `level` (when user `level`
    /// runs, in the closed model); `None` if it never is again.
    pub fn first_above(&self, level: f64, t: f64) -> Option<f64> {
        if self.at(t) > level {
            return Some(t);
        }
        for (t0, d, a, b) in self.pieces() {
            if t0 + d <= t {
                continue;
            }
            if d.is_infinite() {
                return (a > level).then_some(t.max(t0));
            }
            if b > level {
                // Rising through `level` within this stage (or already above at its start).
                let cross = if a > level {
                    t0
                } else {
                    t0 + (level - a) / (b - a) * d
                };
                // Strictly above: a hair after the crossing.
                return Some(cross.max(t) + 1e-6);
            }
        }
        None
    }
}

impl fmt::Display for Curve {
    /// The stages as `--stages` takes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .stages
            .iter()
            .map(|s| format!("{}s:{}", s.duration.as_secs_f64(), s.target))
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(secs: u64, target: f64) -> Stage {
        Stage {
            duration: Duration::from_secs(secs),
            target,
        }
    }

    fn ramp() -> Curve {
        // 0 → 100 over 10 s, 100 → 300 over 10 s, down to 0 over 10 s.
        Curve::new(
            0.0,
            vec![stage(10, 100.0), stage(10, 300.0), stage(10, 0.0)],
        )
    }

    #[test]
    fn values_and_integrals() {
        let c = ramp();
        assert_eq!(c.at(5.0), 50.0);
        assert_eq!(c.at(15.0), 200.0);
        assert_eq!(c.at(25.0), 150.0);
        assert_eq!(c.at(40.0), 0.0);
        assert_eq!(c.cumulative(10.0), 500.0);
        assert_eq!(c.cumulative(20.0), 500.0 + 2000.0);
        assert_eq!(c.cumulative(30.0), 4000.0);
        assert_eq!(c.cumulative(99.0), 4000.0);
        assert_eq!(c.total(), Duration::from_secs(30));
        assert_eq!(c.max(), 300.0);
        assert_eq!(Curve::constant(50.0).cumulative(2.0), 100.0);
    }

    /// The due time of start n is where the integral reaches n, ramps included; past the
    /// curve's last start there is none.
    #[test]
    fn due_times_invert_the_integral() {
        let c = ramp();
        for n in [0.0, 1.0, 37.0, 500.0, 501.0, 2499.5, 3999.0] {
            let t = c.time_of(n).unwrap();
            assert!((c.cumulative(t) - n).abs() < 1e-6, "{n} at {t}");
        }
        assert_eq!(c.time_of(4000.5), None);
        let flat = Curve::constant(400.0);
        assert_eq!(flat.time_of(800.0), Some(2.0));
        assert_eq!(Curve::constant(0.0).time_of(1.0), None);
    }

    #[test]
    fn users_start_when_the_curve_passes_them() {
        let c = ramp();
        // User 49 runs once the curve is above 49: at 4.9 s.
        assert!((c.first_above(49.0, 0.0).unwrap() - 4.9).abs() < 1e-3);
        assert_eq!(c.first_above(10.0, 12.0), Some(12.0));
        // On the way down user 150 stops at 25 s and never runs again.
        assert_eq!(c.first_above(150.0, 26.0), None);
        assert_eq!(c.first_above(300.0, 0.0), None);
    }

    #[test]
    fn shown_as_given() {
        assert_eq!(ramp().to_string(), "10s:100,10s:300,10s:0");
    }
}
