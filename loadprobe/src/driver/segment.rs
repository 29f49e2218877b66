//! Execution segments: one workload split across N load hosts so that the union of the N runs
//! is the single-host run. Segment K of N takes every N-th item of the run from its own
//! offset: users `K-1, K-1+N, …`, and in the open model the scheduled starts `K-1, K-1+N, …`
//! of the one schedule of `rate` starts a second. So the shares add up exactly (users and
//! `requests` differ by at most one between segments) and the N open schedules interleave
//! into the single host's even one, not N bursts at the same instants.

use std::fmt;
use std::str::FromStr;

/// Segment `index` (1-based) of `count`. The whole run is `1/1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    index: u32,
    count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("{0:?} is not a segment: expected K/N with 1 <= K <= N, e.g. 2/4")]
    Syntax(String),
    #[error("{what} {n} cannot be split into {count} segments: segment {index} would get none")]
    Empty {
        what: &'static str,
        n: u64,
        count: u32,
        index: u32,
    },
}

impl Segment {
    pub const WHOLE: Segment = Segment { index: 1, count: 1 };

    pub fn new(index: u32, count: u32) -> Result<Segment, SegmentError> {
        if count == 0 || index == 0 || index > count {
            return Err(SegmentError::Syntax(format!("{index}/{count}")));
        }
        Ok(Segment { index, count })
    }

    /// 1-based.
    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// This segment's first item of the run (0-based): its phase.
    pub fn offset(&self) -> u64 {
        u64::from(self.index - 1)
    }

    /// How many of a run's `n` items (users, requests) are this segment's: those at
    /// `offset() + j * count`.
    pub fn share(&self, n: u64) -> u64 {
        let count = u64::from(self.count);
        n / count + u64::from(self.offset() < n % count)
    }

    /// [`Segment::share`], refused when it is nothing (a host with no users would measure
    /// nothing and still count as a segment).
    pub fn nonempty_share(&self, what: &'static str, n: u64) -> Result<u64, SegmentError> {
        match self.share(n) {
            0 => Err(SegmentError::Empty {
                what,
                n,
                count: self.count,
                index: self.index,
            }),
            share => Ok(share),
        }
    }

    /// The run's item number of this segment's `j`-th item.
    pub fn item(&self, j: u64) -> u64 {
        self.offset() + j * u64::from(self.count)
    }
}

impl Default for Segment {
    fn default() -> Segment {
        Segment::WHOLE
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Segment {
    type Err = SegmentError;

    fn from_str(s: &str) -> Result<Segment, SegmentError> {
        let syntax = || SegmentError::Syntax(s.to_string());
        let (k, n) = s.split_once('/').ok_or_else(syntax)?;
        let k = k.trim().parse().map_err(|_| syntax())?;
        let n = n.trim().parse().map_err(|_| syntax())?;
        Segment::new(k, n).map_err(|_| syntax())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_whole_and_differ_by_at_most_one() {
        for n in [0u64, 1, 7, 480, 1001] {
            for count in 1..=9u32 {
                let shares: Vec<u64> = (1..=count)
                    .map(|k| Segment::new(k, count).unwrap().share(n))
                    .collect();
                assert_eq!(shares.iter().sum::<u64>(), n, "{n} over {count}");
                let (lo, hi) = (shares.iter().min(), shares.iter().max());
                assert!(
                    hi.unwrap() - lo.unwrap() <= 1,
                    "{n} over {count}: {shares:?}"
                );
            }
        }
    }

    /// Every item of the run belongs to exactly one segment.
    #[test]
    fn items_partition_the_run() {
        let count = 4;
        let mut seen = vec![0; 103];
        for k in 1..=count {
            let s = Segment::new(k, count).unwrap();
            for j in 0..s.share(103) {
                seen[s.item(j) as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }

    #[test]
    fn parsing() {
        assert_eq!("2/4".parse(), Ok(Segment::new(2, 4).unwrap()));
        for bad in ["0/4", "5/4", "1/0", "4", "a/b", "-1/4", ""] {
            assert!(bad.parse::<Segment>().is_err(), "{bad}");
        }
        assert!(matches!(
            Segment::new(5, 8).unwrap().nonempty_share("users", 4),
            Err(SegmentError::Empty { index: 5, .. })
        ));
    }
}
