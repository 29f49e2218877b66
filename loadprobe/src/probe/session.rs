//! The probe running beside a load run: a thread of its own reads the kernel's events while the
//! driver works, so the driver's runtime never waits on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loadprobe_common::Event;
use serde::{Deserialize, Serialize};

use super::summary::Summary;
use super::track::{Side, Totals, Tracker};
use super::{Probe, ProbeError, ProbeOptions};
use crate::driver::Live;

/// TIME_WAIT sockets alive per side at one moment of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeWaitPoint {
    /// Milliseconds since the run started.
    pub t_ms: u64,
    pub client: u64,
    pub server: u64,
}

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

/// After the load stops, the last connections still close (and their events still arrive).
const SETTLE: Duration = Duration::from_millis(300);

impl Session {
    /// Attaches the probe (errors, e.g. missing privileges, surface here) and starts reading.
    ///
    /// The session keeps the run's live TIME_WAIT counts (`tw_client`, `tw_server`) current
    /// when it tracks timewait sockets ([`Session::tracks_timewait`]), and takes the start of
    /// the measured window from `window_start_ns` once the warmup is over: the report's counts (closers, TIME_WAIT entered and ended, lifetimes, peaks) cover
    /// what happened from then on, like the driver's own figures; the TIME_WAIT timeline
    /// covers the whole run.
    pub fn start(options: &ProbeOptions, live: Arc<Live>) -> Result<Session, ProbeError> {
        let probe = Probe::attach(options)?;
        let tracks_timewait = probe.timewait_unavailable().is_none();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("loadprobe-probe".into())
                .spawn(move || read(probe, tracks_timewait, &stop, &live))
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

    /// Stops reading (after a short settle so that the last closes are seen) and reports.
    pub fn finish(self) -> Result<SessionReport, ProbeError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| ProbeError::Read(std::io::Error::other("the probe thread panicked")))?
    }
}

fn read(
    mut probe: Probe,
    tracks_timewait: bool,
    stop: &AtomicBool,
    live: &Live,
) -> Result<SessionReport, ProbeError> {
    let mut tracker = Tracker::new(tracks_timewait).records_at_close();
    // The totals at the start of the measured window, taken at the first event at or after it.
    let mut warmup: Option<Totals> = None;
    let mut event = |tracker: &mut Tracker, e: &Event| {
        if warmup.is_none() {
            let at = live.window_start_ns.load(Ordering::Relaxed);
            if at != 0 && e.ts_ns >= at {
                warmup = Some(tracker.mark());
            }
        }
        tracker.event(e);
    };
    let started = Instant::now();
    let mut timeline = Vec::new();
    let mut next_second = Duration::from_secs(1);
    let mut stopping: Option<Instant> = None;
    loop {
        let upto = probe.poll(Probe::DRAIN_EVERY, |e| event(&mut tracker, e));
        tracker.tick(upto);
        tracker.drain().for_each(drop);
        let totals = tracker.totals();
        let current = |s: Side| totals.time_wait.get(&s).map_or(0, |t| t.current);
        if tracks_timewait {
            live.tw_client
                .store(current(Side::Client), Ordering::Relaxed);
            live.tw_server
                .store(current(Side::Server), Ordering::Relaxed);
        }
        if started.elapsed() >= next_second {
            timeline.push(TimeWaitPoint {
                t_ms: started.elapsed().as_millis() as u64,
                client: current(Side::Client),
                server: current(Side::Server),
            });
            next_second += Duration::from_secs(1);
        }
        if stop.load(Ordering::Relaxed) {
            let since = *stopping.get_or_insert_with(Instant::now);
            if since.elapsed() >= SETTLE {
                break;
            }
        }
    }
    let upto = probe.poll(Duration::ZERO, |e| event(&mut tracker, e));
    tracker.flush(upto);
    tracker.drain().for_each(drop);
    let totals = match &warmup {
        Some(before) => tracker.totals().since(before),
        None => tracker.totals().clone(),
    };
    let mut summary = Summary::new(&totals, probe.lost_events(), probe.timewait_unavailable());
    summary.skipped_events = probe.skipped_events();
    Ok(SessionReport {
        summary,
        time_wait_timeline: timeline,
    })
}
