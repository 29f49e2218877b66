//! Is a change real, or the run-to-run noise? Judged from the repetitions a record holds
//! (`run --repeat N`), deliberately simply, so anyone can redo it by hand:
//!
//! For each side, the repetitions' values give a mean `m`, a sample standard deviation `s`
//! and a count `n`. The mean itself is uncertain by about `s / √n` (its standard error), so it
//! very likely lies within `m ± 2·s/√n` (about 95 % for normal-ish noise). A change is
//! **significant** when the two sides' intervals do not overlap, and **within noise** when they
//! do. Non-overlap is a stricter test than a t-test at the same level, so "significant" is
//! rarely a false alarm; small real changes may read as noise until more repetitions narrow the
//! intervals.
//!
//! With fewer than two repetitions on either side there is no spread to judge by, and the
//! report says so plainly ("cannot tell: single runs") instead of guessing.

/// The verdict on one metric's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noise {
    Significant,
    WithinNoise,
    /// Fewer than two repetitions on a side, or the metric is not in the repetitions.
    CannotTell,
}

impl Noise {
    /// A short word for table cells.
    pub fn word(self) -> &'static str {
        match self {
            Noise::Significant => "significant",
            Noise::WithinNoise => "noise",
            Noise::CannotTell => "",
        }
    }
}

/// Mean and interval half-width of one side's repetitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub n: usize,
    pub mean: f64,
    /// `2 · s / √n`.
    pub half_width: f64,
}

impl Spread {
    /// None for fewer than two values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let n = values.len();
        if n < 2 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Some(Spread {
            n,
            mean,
            half_width: 2.0 * var.sqrt() / (n as f64).sqrt(),
        })
    }
}

/// The verdict for a metric whose repetitions gave `base` and `other`.
pub fn assess(base: &[f64], other: &[f64]) -> Noise {
    let (Some(b), Some(o)) = (Spread::of(base), Spread::of(other)) else {
        return Noise::CannotTell;
    };
    let apart = (b.mean - o.mean).abs() > b.half_width + o.half_width;
    if apart {
        Noise::Significant
    } else {
        Noise::WithinNoise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_decide() {
        // Means 100 and 110; spreads small: clearly apart.
        assert_eq!(
            assess(&[99.0, 100.0, 101.0], &[109.0, 110.0, 111.0]),
            Noise::Significant
        );
        // Same means with a wide spread: noise.
        assert_eq!(
            assess(&[90.0, 100.0, 110.0], &[95.0, 105.0, 115.0]),
            Noise::WithinNoise
        );
        // Identical, no spread at all: no change, so noise.
        assert_eq!(assess(&[5.0, 5.0], &[5.0, 5.0]), Noise::WithinNoise);
        assert_eq!(assess(&[5.0], &[6.0, 7.0]), Noise::CannotTell);
        let s = Spread::of(&[1.0, 3.0]).unwrap();
        assert_eq!(s.mean, 2.0);
        // s = √2, n = 2: 2·√2/√2 = 2.
        assert!((s.half_width - 2.0).abs() < 1e-12);
    }
}
