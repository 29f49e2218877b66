//! What the driver measures per request, and how it is collected without contention: tasks
//! record into one of several mutex-guarded shards (a lock nobody else is likely to hold costs
//! tens of nanoseconds, against tens of microseconds for a TCP handshake), merged at the end.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::errors::ErrorClass;
use crate::report::histograms::record_growing;

/// Latency histograms, in microseconds.
#[derive(Debug, Clone)]
pub struct Histograms {
    /// From `connect()` to established, for every connection opened.
    pub connect: Histogram<u64>,
    /// From the task's actual start (before connecting, if it had to) to the first response byte.
    pub first_byte: Histogram<u64>,
    /// From the task's start to the complete response; in the open model the start is the
    /// *intended* one, so a stalled driver or server shows up here (no coordinated omission).
    pub total: Histogram<u64>,
    /// Like `total`, but from the actual start: what a closed-loop tool would report.
    pub total_uncorrected: Histogram<u64>,
}

impl Histograms {
    pub fn new() -> Histograms {
        // Three significant digits, auto-resizing: no upper bound to pick wrong.
        let h = || Histogram::<u64>::new(3).expect("3 significant digits is a valid precision");
        Histograms {
            connect: h(),
            first_byte: h(),
            total: h(),
            total_uncorrected: h(),
        }
    }

    fn add(&mut self, other: &Histograms) {
        // Auto-resizing histograms with equal precision cannot fail to add.
        let _ = self.connect.add(&other.connect);
        let _ = self.first_byte.add(&other.first_byte);
        let _ = self.total.add(&other.total);
        let _ = self.total_uncorrected.add(&other.total_uncorrected);
    }
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms::new()
    }
}

/// Completions in one second of the measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Second {
    pub ok: u64,
    pub errors: u64,
    pub connections: u64,
}

/// One request's timings and outcome.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub intended: Instant,
    pub start: Instant,
    /// Set when this request opened a connection.
    pub connect: Option<Duration>,
    pub first_byte: Option<Instant>,
    pub done: Instant,
    /// `Err(Http4xx | Http5xx)` still got a full response and has its latency recorded.
    pub result: Result<(), ErrorClass>,
}

/// Merged or per-shard statistics.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stats {
    pub hist: Histograms,
    pub ok: u64,
    pub errors: BTreeMap<ErrorClass, u64>,
    pub connections: u64,
    pub timeline: Vec<Second>,
    /// server-close: responses after which the server never closed within the timeout.
    pub fin_missing: u64,
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// Records `d` in microseconds.
fn record(h: &mut Histogram<u64>, d: Duration) {
    record_growing(h, micros(d));
}

impl Stats {
    pub(crate) fn record(&mut self, s: &Sample, window_start: Instant) {
        let second = s.done.saturating_duration_since(window_start).as_secs() as usize;
        if self.timeline.len() <= second {
            self.timeline.resize(second + 1, Second::default());
        }
        let slot = &mut self.timeline[second];
        if let Some(c) = s.connect {
            self.connections += 1;
            slot.connections += 1;
            record(&mut self.hist.connect, c);
        }
        match s.result {
            Ok(()) => {
                self.ok += 1;
                slot.ok += 1;
            }
            Err(class) => {
                *self.errors.entry(class).or_insert(0) += 1;
                slot.errors += 1;
            }
        }
        if matches!(
            s.result,
            Ok(()) | Err(ErrorClass::Http4xx | ErrorClass::Http5xx)
        ) {
            if let Some(fb) = s.first_byte {
                record(
                    &mut self.hist.first_byte,
                    fb.saturating_duration_since(s.start),
                );
            }
            record(
                &mut self.hist.total,
                s.done.saturating_duration_since(s.intended),
            );
            record(
                &mut self.hist.total_uncorrected,
                s.done.saturating_duration_since(s.start),
            );
        }
    }

    pub(crate) fn add(&mut self, other: &Stats) {
        self.hist.add(&other.hist);
        self.ok += other.ok;
        for (class, n) in &other.errors {
            *self.errors.entry(*class).or_insert(0) += n;
        }
        self.connections += other.connections;
        if self.timeline.len() < other.timeline.len() {
            self.timeline
                .resize(other.timeline.len(), Second::default());
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            mine.ok += theirs.ok;
            mine.errors += theirs.errors;
            mine.connections += theirs.connections;
        }
        self.fin_missing += other.fin_missing;
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Sharded recorder; a task always uses the shard of its own index.
pub(crate) struct Recorder {
    shards: Box<[Mutex<Stats>]>,
    window_start: Instant,
}

impl Recorder {
    pub(crate) fn new(shards: usize, window_start: Instant) -> Recorder {
        Recorder {
            shards: (0..shards.max(1)).map(|_| Mutex::default()).collect(),
            window_start,
        }
    }

    fn shard(&self, idx: usize) -> std::sync::MutexGuard<'_, Stats> {
        let m = &self.shards[idx % self.shards.len()];
        // A panic while recording leaves plain counters behind, still worth reporting.
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn record(&self, idx: usize, sample: &Sample) {
        self.shard(idx).record(sample, self.window_start);
    }

    pub(crate) fn fin_missing(&self, idx: usize) {
        self.shard(idx).fin_missing += 1;
    }

    pub(crate) fn collect(&self) -> Stats {
        let mut total = Stats::default();
        for i in 0..self.shards.len() {
            total.add(&self.shard(i));
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_merges() {
        let t0 = Instant::now();
        let rec = Recorder::new(4, t0);
        let ok = Sample {
            intended: t0,
            start: t0 + Duration::from_millis(10),
            connect: Some(Duration::from_micros(50)),
            first_byte: Some(t0 + Duration::from_millis(11)),
            done: t0 + Duration::from_millis(12),
            result: Ok(()),
        };
        rec.record(0, &ok);
        rec.record(1, &ok);
        let refused = Sample {
            connect: None,
            first_byte: None,
            done: t0 + Duration::from_millis(1500),
            result: Err(ErrorClass::Errno(libc::ECONNREFUSED)),
            ..ok
        };
        rec.record(2, &refused);
        let s = rec.collect();
        assert_eq!((s.ok, s.error_count(), s.connections), (2, 1, 2));
        assert_eq!(s.timeline.len(), 2);
        assert_eq!(s.timeline[1].errors, 1);
        // Corrected latency counts from the intended start, uncorrected from the actual one.
        assert_eq!(s.hist.total.max() / 1000, 12);
        assert_eq!(s.hist.total_uncorrected.max() / 1000, 2);
        assert_eq!(s.hist.total.len(), 2);
    }
}
