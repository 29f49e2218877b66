//! The probe running beside a load run: a thread of its own reads the kernel's events while the
//! driver works, so the driver's runtime never waits on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loadprobe_common::{Event, Owner};
use serde::{Deserialize, Serialize};

use super::read_loop::{Reader, Watch};
use super::summary::Summary;
use super::track::{Totals, Tracker};
use super::{Probe, ProbeError, ProbeOptions};
use crate::model::{Live, Side, TimeWaitPoint};

/// What the probe saw during a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionReport {
    pub summary: Summary,
    pub time_wait_timeline: Vec<TimeWaitPoint>,
}

pub struct Session {
    stop: Arc<AtomicBool>,
    tracks_timewait: bool,
    thread: JoinHandle<Result<SessionReport, ProbeError>>,
}

/// After the load stops, the last connections still close (and their events still arrive):
/// the session reads on until every end it saw has closed, at least [`SETTLE_MIN`] (events
/// already in the kernel's hands) and at most [`SETTLE_MAX`] (an end that never closes, such as
/// a hung server's, must not hold the run). A fixed wait was too short on a busy machine, where
/// the peer's close lands late and the connection's closer would read `unknown`.
const SETTLE_MIN: Duration = Duration::from_millis(100);
const SETTLE_MAX: Duration = Duration::from_millis(1500);

impl Session {
    /// Attaches the probe (errors, e.g. missing privileges, surface here) and starts reading.
    ///
    /// The session keeps the run's live TIME_WAIT counts (`tw_client`, `tw_server`) current
    /// when it tracks timewait sockets ([`Session::tracks_timewait`]), and takes the start of
    /// the measured window from `window_start_ns` once the warmup is over: the report's counts
    /// (closers, TIME_WAIT entered and ended, lifetimes, peaks) cover what happened from then
    /// on, like the driver's own figures (none, when the run stopped during its warmup); the
    /// TIME_WAIT timeline covers the whole run.
    ///
    /// `warn` gets a line when the probe loses events, as it happens.
    pub fn start(
        options: &ProbeOptions,
        live: Arc<Live>,
        warn: Box<dyn Fn(&str) + Send>,
    ) -> Result<Session, ProbeError> {
        let probe = Probe::attach(options)?;
        let tracks_timewait = probe.timewait_unavailable().is_none();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("loadprobe-probe".into())
                .spawn(move || read(probe, tracks_timewait, &stop, &live, &*warn))
                .map_err(ProbeError::Read)?
        };
        Ok(Session {
            stop,
            tracks_timewait,
            thread,
        })
    }

    /// Whether the probe follows timewait sockets (it proves who closed either way).
    pub fn tracks_timewait(&self) -> bool {
        self.tracks_timewait
    }

    /// Stops reading (once the last closes are seen, see [`SETTLE_MAX`]) and reports.
    pub fn finish(self) -> Result<SessionReport, ProbeError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| ProbeError::Read(std::io::Error::other("the probe thread panicked")))?
    }
}

fn read(
    probe: Probe,
    tracks_timewait: bool,
    stop: &AtomicBool,
    live: &Live,
    warn: &dyn Fn(&str),
) -> Result<SessionReport, ProbeError> {
    let mut reader = Reader::new(probe, Tracker::new(tracks_timewait).records_at_close());
    let mut watch = RunWatch {
        tracks_timewait,
        stop,
        live,
        warn,
        warmup: None,
        started: Instant::now(),
        timeline: Vec::new(),
        next_second: Duration::from_secs(1),
        stopping: None,
    };
    reader.run(&mut watch)?;
    // The window never started (the run stopped during its warmup), or nothing happened in it:
    // its counts are nothing, like the driver's, not the warmup's.
    let before = match watch.warmup {
        Some(before) => before,
        None => reader.tracker_mut().mark(),
    };
    Ok(SessionReport {
        summary: reader.summary(Some(&before)),
        time_wait_timeline: watch.timeline,
    })
}

/// What a run's session does as the probe is read: live TIME_WAIT counts, the timeline, the
/// start of the measured window, and the settling after the load stops.
struct RunWatch<'a> {
    tracks_timewait: bool,
    stop: &'a AtomicBool,
    live: &'a Live,
    warn: &'a dyn Fn(&str),
    /// The totals at the start of the measured window, taken at the first event at or after it.
    warmup: Option<Totals>,
    started: Instant,
    timeline: Vec<TimeWaitPoint>,
    next_second: Duration,
    stopping: Option<Instant>,
}

impl Watch for RunWatch<'_> {
    type Error = ProbeError;

    fn event(&mut self, tracker: &mut Tracker, e: &Event, _: Option<&Owner>) {
        if self.warmup.is_none() {
            let at = self.live.window_start_ns.load(Ordering::Relaxed);
            if at != 0 && e.ts_ns >= at {
                self.warmup = Some(tracker.mark());
            }
        }
        tracker.event(e);
    }

    fn step(&mut self, reader: &mut Reader) -> Result<bool, ProbeError> {
        let tracker = reader.tracker();
        let totals = tracker.totals();
        let current = |s: Side| totals.time_wait.get(&s).map_or(0, |t| t.current);
        let fin_wait2 = |s: Side| totals.fin_wait2.get(&s).map_or(0, |t| t.current);
        if self.tracks_timewait {
            self.live
                .tw_client
                .store(current(Side::Client), Ordering::Relaxed);
            self.live
                .tw_server
                .store(current(Side::Server), Ordering::Relaxed);
        }
        if self.started.elapsed() >= self.next_second {
            self.timeline.push(TimeWaitPoint {
                t_ms: self.started.elapsed().as_millis() as u64,
                client: current(Side::Client),
                server: current(Side::Server),
                fin_wait2_client: Some(fin_wait2(Side::Client)),
                fin_wait2_server: Some(fin_wait2(Side::Server)),
            });
            self.next_second += Duration::from_secs(1);
        }
        if self.stop.load(Ordering::Relaxed) {
            let since = *self.stopping.get_or_insert_with(Instant::now);
            let settled = since.elapsed() >= SETTLE_MIN && tracker.open_ends() == 0;
            if settled || since.elapsed() >= SETTLE_MAX {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn lost(&mut self, warning: &str) {
        (self.warn)(warning);
    }
}
