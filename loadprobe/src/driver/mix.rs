//! The requests a run sends and how often each: a plain run is a mix of one request; a
//! scenario file (see [`super::scenario`]) makes one of several, each drawn by its weight.
//!
//! Draws are reproducible from the seed alone, whatever the threads and the timing do: each
//! closed-model user, and each scheduled start of the open model, draws from a generator of its
//! own seeded from the run's seed and its number in the whole run (not this host's or this
//! thread's), so the same seed gives every user the same sequence of requests and every start
//! the same request, on one host or split over several.

use rand::SeedableRng;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::Xoshiro256PlusPlus;

use super::RequestSpec;
use crate::model::Mode;

/// One request of the mix.
#[derive(Debug, Clone)]
pub struct MixRequest {
    /// How the record names it (`by_request.NAME`); letters, digits, `-` and `_`.
    pub name: String,
    pub spec: RequestSpec,
    /// Relative frequency; 0 leaves the request out of the draws.
    pub weight: u32,
    /// How the connection ends after this request; `None`: the run's mode.
    pub mode: Option<Mode>,
}

/// What a run sends.
#[derive(Debug, Clone)]
pub struct Mix {
    /// At least one (checked by [`super::validate`]).
    pub requests: Vec<MixRequest>,
    /// Seeds every draw.
    pub seed: u64,
    /// From a scenario file: the record keeps figures per request name. A plain run's one
    /// request is the totals themselves.
    pub named: bool,
}

/// The name of a plain run's one request.
pub const SINGLE: &str = "request";

impl Mix {
    /// A plain run: `spec` every time.
    pub fn single(spec: RequestSpec) -> Mix {
        Mix {
            requests: vec![MixRequest {
                name: SINGLE.to_string(),
                spec,
                weight: 1,
                mode: None,
            }],
            seed: 0,
            named: false,
        }
    }

    /// The first request: a plain run's only one, and what the record's `config.method`,
    /// `config.path`... describe.
    pub fn first(&self) -> &RequestSpec {
        &self.requests[0].spec
    }

    pub fn first_mut(&mut self) -> &mut RequestSpec {
        &mut self.requests[0].spec
    }

    /// The mode each request ends its connection with, given the run's.
    pub fn modes(&self, run: Mode) -> impl Iterator<Item = Mode> + '_ {
        self.requests.iter().map(move |r| r.mode.unwrap_or(run))
    }

    /// The one mode every request that can be drawn ends its connection with; `None` when
    /// they differ.
    pub fn common_mode(&self, run: Mode) -> Option<Mode> {
        let mut drawn = self.drawn_modes(run);
        let first = drawn.next()?;
        drawn.all(|m| m == first).then_some(first)
    }

    /// The modes of the requests with a weight (a request of weight 0 is never sent).
    fn drawn_modes(&self, run: Mode) -> impl Iterator<Item = Mode> + '_ {
        self.requests
            .iter()
            .filter(|r| r.weight > 0)
            .map(move |r| r.mode.unwrap_or(run))
    }

    /// Checks that the modes can share connections: `reset` sets SO_LINGER 0 when a
    /// connection is made, before the request that uses it is drawn (and a kept-alive one is
    /// reused by whichever request comes next), so it is all the requests' mode or none's.
    pub fn check_modes(&self, run: Mode) -> Result<(), ModeClash> {
        let reset = |m: Mode| m == Mode::Reset;
        if self.drawn_modes(run).all(reset) || !self.drawn_modes(run).any(reset) {
            return Ok(());
        }
        // Mixed: the first request whose own mode differs from the run's on this is to blame.
        let index = self
            .requests
            .iter()
            .position(|r| r.weight > 0 && r.mode.is_some_and(|m| reset(m) != reset(run)))
            .unwrap_or(0);
        Err(ModeClash { index })
    }

    pub fn total_weight(&self) -> u64 {
        self.requests.iter().map(|r| u64::from(r.weight)).sum()
    }
}

/// A request whose mode cannot be mixed with the others' (see [`Mix::check_modes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "reset cannot be mixed with other modes: SO_LINGER 0 is set when a connection is made, \
     before the request that uses it is drawn"
)]
pub struct ModeClash {
    /// The request's index in the mix.
    pub index: usize,
}

/// Draws requests by weight.
pub(crate) struct Chooser {
    /// `None` for a mix of one: nothing to draw.
    weights: Option<WeightedIndex<u64>>,
    seed: u64,
}

/// The draws of one user, or of one scheduled start.
pub(crate) struct Draws(Option<Xoshiro256PlusPlus>);

/// Why a mix cannot be drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the weights add up to 0: give at least one request a positive weight")]
pub struct ZeroWeight;

impl Chooser {
    pub(crate) fn new(mix: &Mix) -> Result<Chooser, ZeroWeight> {
        let weights = match mix.requests.len() {
            0 => return Err(ZeroWeight),
            1 => None,
            _ => Some(
                WeightedIndex::new(mix.requests.iter().map(|r| u64::from(r.weight)))
                    .map_err(|_| ZeroWeight)?,
            ),
        };
        Ok(Chooser {
            weights,
            seed: mix.seed,
        })
    }

    /// The generator of draw stream `stream` (a user's number, or a start's, in the whole run).
    pub(crate) fn draws(&self, stream: u64) -> Draws {
        // seed_from_u64 runs its input through SplitMix64: neighbouring streams of one seed
        // start far apart.
        let key = self.seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Draws(
            self.weights
                .as_ref()
                .map(|_| Xoshiro256PlusPlus::seed_from_u64(key)),
        )
    }

    /// The index of the next request of `draws`.
    pub(crate) fn next(&self, draws: &mut Draws) -> usize {
        match (&self.weights, &mut draws.0) {
            (Some(w), Some(rng)) => w.sample(rng),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(weights: &[u32], seed: u64) -> Mix {
        Mix {
            requests: weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| MixRequest {
                    name: format!("r{i}"),
                    spec: RequestSpec::default(),
                    weight,
                    mode: None,
                })
                .collect(),
            seed,
            named: true,
        }
    }

    fn counts(c: &Chooser, streams: u64, per_stream: usize, n: usize) -> Vec<u64> {
        let mut out = vec![0; n];
        for s in 0..streams {
            let mut d = c.draws(s);
            for _ in 0..per_stream {
                out[c.next(&mut d)] += 1;
            }
        }
        out
    }

    #[test]
    fn draws_follow_the_weights() {
        let c = Chooser::new(&mix(&[6, 3, 1, 0], 42)).unwrap();
        let got = counts(&c, 100, 1000, 4);
        assert_eq!(got[3], 0, "weight 0 is never drawn");
        // Chi-square with 2 degrees of freedom; 13.8 is its 0.999 quantile.
        let n = 100_000.0;
        let chi2: f64 = [0.6, 0.3, 0.1]
            .iter()
            .zip(&got)
            .map(|(p, &o)| (o as f64 - p * n).powi(2) / (p * n))
            .sum();
        assert!(chi2 < 13.8, "{got:?}: chi-square {chi2}");
    }

    #[test]
    fn the_seed_alone_decides_the_draws() {
        let a = Chooser::new(&mix(&[1, 1, 1], 7)).unwrap();
        let b = Chooser::new(&mix(&[1, 1, 1], 7)).unwrap();
        let other = Chooser::new(&mix(&[1, 1, 1], 8)).unwrap();
        let seq = |c: &Chooser, stream| {
            let mut d = c.draws(stream);
            (0..64).map(|_| c.next(&mut d)).collect::<Vec<_>>()
        };
        assert_eq!(seq(&a, 3), seq(&b, 3));
        assert_ne!(seq(&a, 3), seq(&a, 4), "streams differ");
        assert_ne!(seq(&a, 3), seq(&other, 3), "seeds differ");
    }

    #[test]
    fn a_mix_of_one_draws_nothing_and_zero_weight_is_refused() {
        let c = Chooser::new(&Mix::single(RequestSpec::default())).unwrap();
        assert_eq!(counts(&c, 3, 10, 1), vec![30]);
        assert!(Chooser::new(&mix(&[0, 0], 1)).is_err());
    }

    #[test]
    fn modes_are_the_runs_unless_a_request_says() {
        let mut m = mix(&[1, 1], 0);
        assert_eq!(m.common_mode(Mode::KeepAlive), Some(Mode::KeepAlive));
        m.requests[1].mode = Some(Mode::ClientClose);
        assert_eq!(m.common_mode(Mode::KeepAlive), None);
        assert_eq!(
            m.modes(Mode::KeepAlive).collect::<Vec<_>>(),
            [Mode::KeepAlive, Mode::ClientClose]
        );
        assert_eq!(m.common_mode(Mode::ClientClose), Some(Mode::ClientClose));
        m.requests[0].mode = Some(Mode::ClientClose);
        assert_eq!(m.common_mode(Mode::KeepAlive), Some(Mode::ClientClose));
        assert!(m.check_modes(Mode::KeepAlive).is_ok());
        m.requests[0].mode = Some(Mode::Reset);
        assert_eq!(m.check_modes(Mode::KeepAlive), Err(ModeClash { index: 0 }));
        assert_eq!(m.check_modes(Mode::Reset), Err(ModeClash { index: 1 }));
        // Every request's own mode reset, whatever the run's: nothing is mixed.
        m.requests[1].mode = Some(Mode::Reset);
        assert!(m.check_modes(Mode::KeepAlive).is_ok());
        assert_eq!(m.common_mode(Mode::KeepAlive), Some(Mode::Reset));
    }
}
