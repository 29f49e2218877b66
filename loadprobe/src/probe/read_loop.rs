//! The probe's read loop, one for `trace` and for a run's session: drain the ring buffer on a
//! timer, feed the tracker, pass on the records it finishes, warn of lost events as they
//! happen, and at the end take in what is left. What a caller does at each step is its
//! [`Watch`]; printing is the caller's, reading is here.

use std::time::{Duration, Instant};

use loadprobe_common::{Event, Owner};

use super::summary::Summary;
use super::track::{ConnRecord, Totals, Tracker};
use super::{LossWatch, Probe};

/// What one reader of the probe does with what the loop reads.
pub trait Watch {
    type Error;

    /// An event from the ring buffer, with its owner if it carries one; the default hands it
    /// to the tracker.
    fn event(&mut self, tracker: &mut Tracker, event: &Event, owner: Option<&Owner>) {
        tracker.owned_event(event, owner);
    }

    /// A record the tracker finished; the default drops it.
    fn record(&mut self, record: ConnRecord) -> Result<(), Self::Error> {
        drop(record);
        Ok(())
    }

    /// After each drain and its records: whether to read on.
    fn step(&mut self, reader: &mut Reader) -> Result<bool, Self::Error>;

    /// The probe lost events since the last warning. Checked at most once a second, after a
    /// drain and between records too: a record written to a slow reader can block for long,
    /// and the warning must not wait for it.
    fn lost(&mut self, warning: &str);
}

/// The attached probe and the tracker its events go to.
pub struct Reader {
    probe: Probe,
    tracker: Tracker,
    losses: LossWatch,
    losses_checked: Instant,
}

impl Reader {
    pub fn new(probe: Probe, tracker: Tracker) -> Reader {
        Reader {
            probe,
            tracker,
            losses: LossWatch::default(),
            losses_checked: Instant::now(),
        }
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn tracker_mut(&mut self) -> &mut Tracker {
        &mut self.tracker
    }

    /// Takes in every event in the ring now and moves the tracker's clock to this drain: what
    /// the tracker counts is then the kernel's state as of now (to compare with the kernel's
    /// own count, say).
    pub fn catch_up(&mut self) {
        let upto = self
            .probe
            .poll(Duration::ZERO, |e, o| self.tracker.owned_event(e, o));
        self.tracker.tick(upto);
    }

    /// Reads every [`Probe::DRAIN_EVERY`] until `watch.step` says stop, then takes in the
    /// events left in the ring (they belong to this reading) and flushes the connections still
    /// open.
    pub fn run<W: Watch>(&mut self, watch: &mut W) -> Result<(), W::Error> {
        loop {
            let upto = self.probe.poll(Probe::DRAIN_EVERY, |e, o| {
                watch.event(&mut self.tracker, e, o)
            });
            self.tracker.tick(upto);
            self.pass_records(watch)?;
            self.check_losses(watch);
            if !watch.step(self)? {
                break;
            }
        }
        let upto = self
            .probe
            .poll(Duration::ZERO, |e, o| watch.event(&mut self.tracker, e, o));
        self.tracker.flush(upto);
        self.pass_records(watch)
    }

    /// What was read, from `since` (a [`Tracker::mark`]) on, or all of it.
    pub fn summary(&self, since: Option<&Totals>) -> Summary {
        let lost = self.probe.lost_events();
        let timewait = self.probe.timewait_unavailable();
        let mut summary = match since {
            Some(before) => Summary::new(&self.tracker.totals().since(before), lost, timewait),
            None => Summary::new(self.tracker.totals(), lost, timewait),
        };
        summary.skipped_events = self.probe.skipped_events();
        summary.read_errors = self.probe.read_errors();
        summary
    }

    fn pass_records<W: Watch>(&mut self, watch: &mut W) -> Result<(), W::Error> {
        let Reader {
            probe,
            tracker,
            losses,
            losses_checked,
        } = self;
        for record in tracker.drain() {
            watch.record(record)?;
            check_losses(probe, losses, losses_checked, watch);
        }
        Ok(())
    }

    fn check_losses(&mut self, watch: &mut impl Watch) {
        check_losses(
            &self.probe,
            &mut self.losses,
            &mut self.losses_checked,
            watch,
        );
    }
}

fn check_losses(
    probe: &Probe,
    losses: &mut LossWatch,
    checked: &mut Instant,
    watch: &mut impl Watch,
) {
    if checked.elapsed() < Duration::from_secs(1) {
        return;
    }
    *checked = Instant::now();
    if let Some(warning) = losses.check(probe) {
        watch.lost(&warning);
    }
}
