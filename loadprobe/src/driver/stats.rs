//! What the driver measures per request, and how it is collected without contention: tasks
//! record into one of several mutex-guarded shards (a lock nobody else is likely to hold costs
//! tens of nanoseconds, against tens of microseconds for a TCP handshake), merged at the end.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::errors::ErrorClass;
use super::tls::Handshake;
use crate::model::record_growing;

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
    /// The TLS handshake, from established to its end, for every TLS connection; empty for
    /// plain HTTP.
    pub tls_handshake: Histogram<u64>,
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
            tls_handshake: h(),
        }
    }

    fn add(&mut self, other: &Histograms) {
        // Auto-resizing histograms with equal precision cannot fail to add.
        let _ = self.connect.add(&other.connect);
        let _ = self.first_byte.add(&other.first_byte);
        let _ = self.total.add(&other.total);
        let _ = self.total_uncorrected.add(&other.total_uncorrected);
        let _ = self.tls_handshake.add(&other.tls_handshake);
    }
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms::new()
    }
}

/// Completions in one second of the measured window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Second {
    pub ok: u64,
    pub errors: u64,
    /// `errors` by class, so a burst of one class shows when it happened.
    pub errors_by_class: BTreeMap<ErrorClass, u64>,
    pub connections: u64,
}

/// The TLS handshakes of a run: how many resumed a session, and what they negotiated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsCounts {
    pub full: u64,
    pub resumed: u64,
    /// Handshakes by protocol version (rustls' name: `TLSv1_3`).
    pub versions: BTreeMap<&'static str, u64>,
    /// Handshakes by cipher suite (`TLS13_AES_256_GCM_SHA384`).
    pub cipher_suites: BTreeMap<&'static str, u64>,
}

impl TlsCounts {
    fn count(&mut self, h: &Handshake) {
        if h.resumed {
            self.resumed += 1;
        } else {
            self.full += 1;
        }
        *self.versions.entry(h.version).or_insert(0) += 1;
        *self.cipher_suites.entry(h.suite).or_insert(0) += 1;
    }

    fn add(&mut self, other: &TlsCounts) {
        self.full += other.full;
        self.resumed += other.resumed;
        for (k, n) in &other.versions {
            *self.versions.entry(k).or_insert(0) += n;
        }
        for (k, n) in &other.cipher_suites {
            *self.cipher_suites.entry(k).or_insert(0) += n;
        }
    }
}

/// What one request of the mix measured (see [`super::DriverResult::by_request`]).
#[derive(Debug, Clone, Default)]
pub struct RequestResult {
    pub ok: u64,
    /// Error class name → count.
    pub errors: BTreeMap<String, u64>,
    /// Connections this request opened (a kept-alive one is the first request's on it).
    pub connections_opened: u64,
    pub unfinished: u64,
    pub histograms: Histograms,
}

impl RequestResult {
    /// Completed requests, `ok` and errors.
    pub fn total(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }
}

/// One request's timings and outcome.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Which request of the mix it was.
    pub request: usize,
    pub intended: Instant,
    pub start: Instant,
    /// Set when this request opened a connection.
    pub connect: Option<Duration>,
    pub first_byte: Option<Instant>,
    pub done: Instant,
    /// `Err(Http4xx | Http5xx)` still got a full response and has its latency recorded.
    pub result: Result<(), ErrorClass>,
    /// Set when this request's connection completed a TLS handshake.
    pub tls: Option<Handshake>,
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
    /// Requests still in flight when the run ended (see [`Recorder::unfinished`]).
    pub unfinished: u64,
    /// Requests written onto a kept-alive connection the server had already closed.
    pub stale_connection: u64,
    /// Of those, the ones sent again on a new connection.
    pub retried: u64,
    pub tls: TlsCounts,
    /// The same for each request of the mix (only its own counts and timings: no stale or
    /// FIN figures), when there is more than one.
    pub by_request: Vec<Stats>,
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// Records `d` in microseconds.
fn record(h: &mut Histogram<u64>, d: Duration) {
    record_growing(h, micros(d));
}

impl Stats {
    /// The timeline's entry for the second `at` falls in.
    fn second(&mut self, at: Instant, window_start: Instant) -> &mut Second {
        let second = at.saturating_duration_since(window_start).as_secs() as usize;
        if self.timeline.len() <= second {
            self.timeline.resize(second + 1, Second::default());
        }
        &mut self.timeline[second]
    }

    /// Counts the connection `s` opened, if it opened one.
    fn connection(&mut self, s: &Sample, window_start: Instant) {
        if let Some(c) = s.connect {
            self.connections += 1;
            self.second(s.done, window_start).connections += 1;
            record(&mut self.hist.connect, c);
        }
        if let Some(h) = &s.tls {
            record(&mut self.hist.tls_handshake, h.took);
            self.tls.count(h);
        }
    }

    pub(crate) fn record(&mut self, s: &Sample, window_start: Instant) {
        self.connection(s, window_start);
        match s.result {
            Ok(()) => {
                self.ok += 1;
                self.second(s.done, window_start).ok += 1;
            }
            Err(class) => {
                *self.errors.entry(class).or_insert(0) += 1;
                let second = self.second(s.done, window_start);
                second.errors += 1;
                *second.errors_by_class.entry(class).or_insert(0) += 1;
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

    /// The part of request `i` of the mix.
    fn part(&mut self, i: usize) -> &mut Stats {
        if self.by_request.len() <= i {
            self.by_request.resize_with(i + 1, Stats::default);
        }
        &mut self.by_request[i]
    }

    /// As a request's figures.
    pub(crate) fn request_result(&self) -> RequestResult {
        RequestResult {
            ok: self.ok,
            errors: error_names(&self.errors),
            connections_opened: self.connections,
            unfinished: self.unfinished,
            histograms: self.hist.clone(),
        }
    }

    pub(crate) fn add(&mut self, other: &Stats) {
        for (i, part) in other.by_request.iter().enumerate() {
            self.part(i).add(part);
        }
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
            for (class, n) in &theirs.errors_by_class {
                *mine.errors_by_class.entry(*class).or_insert(0) += n;
            }
            mine.connections += theirs.connections;
        }
        self.fin_missing += other.fin_missing;
        self.unfinished += other.unfinished;
        self.stale_connection += other.stale_connection;
        self.retried += other.retried;
        self.tls.add(&other.tls);
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Error class → count, by the classes' names.
pub(crate) fn error_names(errors: &BTreeMap<ErrorClass, u64>) -> BTreeMap<String, u64> {
    errors
        .iter()
        .map(|(class, n)| (class.name().into_owned(), *n))
        .collect()
}

/// Sharded recorder; a task always uses the shard of its own index.
pub(crate) struct Recorder {
    shards: Box<[Mutex<Stats>]>,
    window_start: Instant,
    /// Requests in the mix: with one, its figures are the totals and are not recorded twice.
    requests: usize,
}

impl Recorder {
    pub(crate) fn new(shards: usize, window_start: Instant, requests: usize) -> Recorder {
        Recorder {
            shards: (0..shards.max(1)).map(|_| Mutex::default()).collect(),
            window_start,
            requests: requests.max(1),
        }
    }

    fn shard(&self, idx: usize) -> std::sync::MutexGuard<'_, Stats> {
        let m = &self.shards[idx % self.shards.len()];
        // A panic while recording leaves plain counters behind, still worth reporting.
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn record(&self, idx: usize, sample: &Sample) {
        let mut shard = self.shard(idx);
        shard.record(sample, self.window_start);
        if self.requests > 1 {
            shard.part(sample.request).record(sample, self.window_start);
        }
    }

    pub(crate) fn fin_missing(&self, idx: usize) {
        self.shard(idx).fin_missing += 1;
    }

    /// A request cut off by the end of the run, before its response was complete: counted
    /// apart from completions (it has no outcome and no latency), with the connection it opened.
    pub(crate) fn unfinished(&self, idx: usize, sample: &Sample) {
        let mut shard = self.shard(idx);
        shard.unfinished += 1;
        shard.connection(sample, self.window_start);
        if self.requests > 1 {
            let part = shard.part(sample.request);
            part.unfinished += 1;
            part.connection(sample, self.window_start);
        }
    }

    /// A request sent on a connection the server had closed; `retried` if it was sent again.
    pub(crate) fn stale_connection(&self, idx: usize, retried: bool) {
        let mut shard = self.shard(idx);
        shard.stale_connection += 1;
        shard.retried += u64::from(retried);
    }

    pub(crate) fn collect(&self) -> Stats {
        let mut total = Stats::default();
        for i in 0..self.shards.len() {
            total.add(&self.shard(i));
        }
        if self.requests == 1 {
            total.by_request = vec![total.clone()];
        } else {
            // A request never drawn has its (empty) part too.
            total.part(self.requests - 1);
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
        let rec = Recorder::new(4, t0, 1);
        let ok = Sample {
            request: 0,
            intended: t0,
            start: t0 + Duration::from_millis(10),
            connect: Some(Duration::from_micros(50)),
            first_byte: Some(t0 + Duration::from_millis(11)),
            done: t0 + Duration::from_millis(12),
            result: Ok(()),
            tls: None,
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
        rec.record(
            3,
            &Sample {
                result: Err(ErrorClass::Timeout),
                ..refused
            },
        );
        rec.record(2, &refused);
        let s = rec.collect();
        assert_eq!((s.ok, s.error_count(), s.connections), (2, 3, 2));
        assert_eq!(s.timeline.len(), 2);
        assert_eq!(s.timeline[1].errors, 3);
        // Each second's errors by class, summed over the shards.
        assert!(s.timeline[0].errors_by_class.is_empty());
        assert_eq!(
            s.timeline[1].errors_by_class,
            BTreeMap::from([
                (ErrorClass::Errno(libc::ECONNREFUSED), 2),
                (ErrorClass::Timeout, 1)
            ])
        );
        // Corrected latency counts from the intended start, uncorrected from the actual one.
        assert_eq!(s.hist.total.max() / 1000, 12);
        assert_eq!(s.hist.total_uncorrected.max() / 1000, 2);
        assert_eq!(s.hist.total.len(), 2);
    }

    /// Each request's part holds its own samples, and the parts add up to the totals.
    #[test]
    fn parts_per_request_add_up_to_the_totals() {
        let t0 = Instant::now();
        let rec = Recorder::new(3, t0, 3);
        let sample = |request, result| Sample {
            request,
            intended: t0,
            start: t0,
            connect: Some(Duration::from_micros(40)),
            first_byte: Some(t0 + Duration::from_micros(100 * (request as u64 + 1))),
            done: t0 + Duration::from_micros(200 * (request as u64 + 1)),
            result,
            tls: None,
        };
        for i in 0..30 {
            rec.record(i, &sample(i % 2, Ok(())));
        }
        rec.record(5, &sample(1, Err(ErrorClass::Http5xx)));
        rec.unfinished(2, &sample(0, Ok(())));
        let s = rec.collect();
        assert_eq!(s.by_request.len(), 3, "the undrawn third is there, empty");
        let parts: Vec<RequestResult> = s.by_request.iter().map(Stats::request_result).collect();
        assert_eq!(
            (parts[0].total(), parts[1].total(), parts[2].total()),
            (15, 16, 0)
        );
        assert_eq!(
            parts[1].errors,
            BTreeMap::from([("http_5xx".to_string(), 1)])
        );
        assert_eq!((parts[0].unfinished, parts[0].connections_opened), (1, 16));
        assert_eq!(
            parts.iter().map(RequestResult::total).sum::<u64>(),
            s.ok + s.error_count()
        );
        let lens: u64 = parts.iter().map(|p| p.histograms.total.len()).sum();
        assert_eq!(lens, s.hist.total.len());
        assert_eq!(parts[0].histograms.total.max(), 200);
        assert_eq!(parts[1].histograms.total.min(), 400);
    }
}
