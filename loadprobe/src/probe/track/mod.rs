//! Turns the probe's events into one record per connection: who closed it, how long each phase
//! took, and the life of each TIME_WAIT socket it left behind. This module follows the full
//! sockets (the connection state machine); `timewait` follows the timewait sockets they leave.
//!
//! Facts this relies on (docs/kernel.md §2 and §3):
//! * A client end is the socket that went `CLOSE->SYN_SENT` (or, when the probe leaves that
//!   step out, `ProbeOptions::records`, first shows leaving `SYN_SENT`); a server end appears as
//!   `LISTEN->SYN_RECV`. Both ends of a loopback or veth connection on this host are seen.
//! * The end that goes `ESTABLISHED->FIN_WAIT1` sent the first FIN; the other goes
//!   `ESTABLISHED->CLOSE_WAIT`, and later `CLOSE_WAIT|LAST_ACK->CLOSE` (which alone tells,
//!   when the probe leaves out the former). Both going `FIN_WAIT1` is a simultaneous close.
//! * An abort shows as `ESTABLISHED->CLOSE` on both ends; `tcp_send_reset` says who sent it.
//! * A timewait socket never appears on `inet_sock_set_state`. Its timer does: `timer_start`
//!   right before the full socket's `FIN_WAIT2->CLOSE`/`CLOSING->CLOSE`; `timer_cancel` then
//!   `timer_expire_entry` on expiry; `timer_cancel` then `timer_start` on a visible reschedule;
//!   `timer_cancel` alone on an early kill.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use loadprobe_common::{Event, Owner, kind, tcp_state as st};
// Every event costs several lookups keyed by kernel addresses and 4-tuples: FxHash is several
// times cheaper than SipHash there (it showed in profiles of churn), and SipHash's resistance to
// crafted keys buys little when a remote peer controls at most its own address and port.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::Serialize;

use super::event::endpoints;
use crate::model::{Closer, Side, Substate};
use by::{By, ByTable, RowKey};
use timewait::{CANCEL_GRACE_NS, REUSE_WINDOW_NS, Tuple, Tw, substate_of, tuple_of};

/// How a timewait socket's life ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TwEnd {
    /// Its timer ran out (60 s, plus the timer wheel's granularity).
    Expired,
    /// A new connection on the same 4-tuple took it over (tcp_tw_reuse, or a SYN accepted).
    Reused,
    /// Killed early: RST, netns teardown, or another cause.
    Killed,
    /// Never created: `tcp_max_tw_buckets` was exhausted.
    Overflow,
    /// Still alive when the trace ended.
    Open,
}

/// One timewait socket of a connection.
#[derive(Clone, Debug, Serialize)]
pub struct TimeWait {
    pub side: Side,
    /// Network namespace (inode) of the timewait socket: its end's, which over veth need not
    /// be the other end's.
    pub netns: u32,
    /// The substate when it ended (or when the trace ended).
    pub substate: Substate,
    pub substate_start: Substate,
    /// Time in TIME_WAIT, ms (for `open`: the age so far).
    pub duration_ms: u64,
    pub end: TwEnd,
}

/// One finished connection.
#[derive(Clone, Debug, Serialize)]
pub struct ConnRecord {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub closer: Closer,
    /// SYN sent to established, at the client.
    pub connect_us: Option<u64>,
    /// Established to the first FIN or RST.
    pub established_us: Option<u64>,
    /// First FIN to both ends closed.
    pub close_us: Option<u64>,
    /// First event to the last end closed.
    pub lifetime_us: u64,
    /// Network namespace (inode) of the first end seen; `client_netns` and `server_netns` say
    /// each end's (null for an end the probe did not see).
    pub netns: u32,
    pub client_netns: Option<u32>,
    pub server_netns: Option<u32>,
    pub time_wait: Vec<TimeWait>,
    /// The task that last made a step of each end in its own process (connect, close; see
    /// [`Owner`]): `None` for an end not seen, or seen only in softirq steps. Raw kernel ids:
    /// `probe::owner` names them (cgroup path, container, pod) for the record's reader.
    #[serde(skip)]
    pub client_owner: Option<Owner>,
    #[serde(skip)]
    pub server_owner: Option<Owner>,
}

/// Counters for the timewait sockets of one side in one substate (see [`Totals`]).
#[derive(Clone, Debug, Default, Serialize)]
pub struct TwSideStats {
    pub entered: u64,
    /// Timewait sockets alive now.
    pub current: u64,
    /// Most alive at once.
    pub peak: u64,
    pub expired: u64,
    pub reused: u64,
    pub killed: u64,
    pub overflow: u64,
    pub open: u64,
    /// TIME_WAIT sockets the probe did not see created (older than it: another run's, or
    /// from before) that these connections took over, apart from `reused`, which counts
    /// only those of connections seen opening.
    pub reused_older: u64,
    /// FIN_WAIT2 only: those whose peer's FIN arrived, which moved them to TIME_WAIT (where
    /// they count as entered).
    pub to_time_wait: u64,
    /// How long the ended ones lived, in ms. A histogram, so that memory stays flat however
    /// many sockets a run makes (percentiles within 0.1 %).
    #[serde(skip)]
    pub durations_ms: Lifetimes,
}

#[derive(Clone, Debug)]
pub struct Lifetimes(pub hdrhistogram::Histogram<u64>);

impl Default for Lifetimes {
    fn default() -> Lifetimes {
        Lifetimes(hdrhistogram::Histogram::new(3).expect("3 significant figures is valid"))
    }
}

/// The totals a trace reports at its end.
///
/// Timewait sockets count by substate, as `ss` tells them apart: `time_wait` holds those that
/// were in TIME_WAIT (from their start, or from when the peer's FIN arrived), `fin_wait2` the
/// orphans of a close whose peer had not sent its FIN. Each socket is in one group at a time:
/// a FIN_WAIT2 one that moves on leaves `fin_wait2` as `to_time_wait` and enters `time_wait`;
/// it ends (expired, killed, ...) in the group of its substate then.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Connections by closer, counted when both ends have closed.
    pub closer: BTreeMap<Closer, u64>,
    pub time_wait: BTreeMap<Side, TwSideStats>,
    pub fin_wait2: BTreeMap<Side, TwSideStats>,
    /// Timewait sockets of connections the probe did not see open (pre-existing, or not ours).
    pub time_wait_unmatched: u64,
}

impl Totals {
    /// The counters of the substate group `substate`, for `side`.
    fn side_mut(&mut self, substate: Substate, side: Side) -> &mut TwSideStats {
        match substate {
            Substate::TimeWait => self.time_wait.entry(side).or_default(),
            Substate::FinWait2 => self.fin_wait2.entry(side).or_default(),
        }
    }

    /// A timewait socket of `owner`'s side now has `substate`: it moves from the FIN_WAIT2
    /// group to the TIME_WAIT group when its peer's FIN arrived (never back).
    fn substate_now(&mut self, tw: &mut Tw, substate: Substate) {
        if tw.substate != Substate::FinWait2 || substate != Substate::TimeWait {
            return;
        }
        tw.substate = substate;
        let Some((_, side)) = tw.owner else {
            return;
        };
        let fw2 = self.side_mut(Substate::FinWait2, side);
        fw2.current = fw2.current.saturating_sub(1);
        fw2.to_time_wait += 1;
        let stats = self.side_mut(Substate::TimeWait, side);
        stats.entered += 1;
        stats.current += 1;
        stats.peak = stats.peak.max(stats.current);
    }

    /// What happened since `earlier`, a copy of these totals taken then: counters and lifetimes
    /// are differences; the gauges (`current`, `peak`) are kept, so take `earlier` with
    /// [`Tracker::mark`], which also restarts the peaks.
    pub fn since(&self, earlier: &Totals) -> Totals {
        let mut now = self.clone();
        for (closer, n) in &mut now.closer {
            *n = n.saturating_sub(earlier.closer.get(closer).copied().unwrap_or(0));
        }
        for (group, before_group) in [
            (&mut now.time_wait, &earlier.time_wait),
            (&mut now.fin_wait2, &earlier.fin_wait2),
        ] {
            for (side, stats) in group {
                let Some(before) = before_group.get(side) else {
                    continue;
                };
                for (n, then) in [
                    (&mut stats.entered, before.entered),
                    (&mut stats.expired, before.expired),
                    (&mut stats.reused, before.reused),
                    (&mut stats.killed, before.killed),
                    (&mut stats.overflow, before.overflow),
                    (&mut stats.open, before.open),
                    (&mut stats.to_time_wait, before.to_time_wait),
                    (&mut stats.reused_older, before.reused_older),
                ] {
                    *n = n.saturating_sub(then);
                }
                // `earlier` is an older state of the same histogram: it cannot hold more.
                let _ = stats.durations_ms.0.subtract(&before.durations_ms.0);
            }
        }
        now.time_wait_unmatched = now
            .time_wait_unmatched
            .saturating_sub(earlier.time_wait_unmatched);
        now
    }
}

/// What kind of first closing act an end performed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    SentFin,
    GotFin,
    SentRst,
    GotRst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Client,
    Server,
    /// First seen mid-life: opened before the probe.
    Unknown,
}

/// One end (one full socket) of a connection.
#[derive(Clone, Debug)]
struct End {
    addr: u64,
    role: Role,
    local: SocketAddr,
    remote: SocketAddr,
    netns: u32,
    opened_ns: u64,
    established_ns: Option<u64>,
    /// The first closing act and when it happened. A `SentFin` is when the FIN was queued: it
    /// went on the wire then unless `fin_queued`.
    first_act: Option<(Act, u64)>,
    sent_fin: bool,
    /// The FIN was queued behind data not yet sent, so it went out later, at a moment no event
    /// shows.
    fin_queued: bool,
    /// An RST arrived: whether something this end queued (its FIN included) had still not been
    /// sent then.
    rst_unsent: Option<bool>,
    reset: bool,
    has_tw: bool,
    closed_ns: Option<u64>,
    conn: Option<ConnId>,
    /// The task of the latest step this end's own process made (see [`Owner`]).
    owner: Option<Owner>,
}

/// Connections get an id of their own: a new connection can take the 4-tuple of one that is
/// still waiting for its timewait socket to end (that is what tcp_tw_reuse does).
type ConnId = u64;

/// Identifies a connection by its client and server endpoints. Loopback connections never
/// leave their namespace, so for them the namespace is part of the key (many test namespaces
/// reuse 127.0.0.1 and the same ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConnKey {
    client: SocketAddr,
    server: SocketAddr,
    netns: u32,
}

impl ConnKey {
    fn new(client: SocketAddr, server: SocketAddr, netns: u32) -> ConnKey {
        let ns = if client.ip().is_loopback() { netns } else { 0 };
        ConnKey {
            client,
            server,
            netns: ns,
        }
    }
}

#[derive(Debug)]
struct Conn {
    key: ConnKey,
    /// Which roles (client, server) have an end here, live or closed.
    roles: [bool; 2],
    client: Option<End>,
    server: Option<End>,
    /// Ends of this connection not yet closed, by kernel address.
    live: Vec<u64>,
    tw_live: u32,
    time_wait: Vec<TimeWait>,
    /// When the last end closed with no peer seen: the record waits a moment for a late peer.
    lone_since: Option<u64>,
    /// Whether `Totals::closer` counts it already.
    closer_counted: bool,
}

/// A lone end waits this long for its peer before it is classified on its own.
const LONE_GRACE_NS: u64 = 20_000_000;
/// Builds connection records from events. Feed it with [`Tracker::event`], call
/// [`Tracker::tick`] regularly, and take finished records from [`Tracker::drain`].
#[derive(Debug, Default)]
pub struct Tracker {
    ends: HashMap<u64, End>,
    /// Closed ends still filed under an unfinished connection, by kernel address.
    closed: HashMap<u64, ConnId>,
    conns: HashMap<ConnId, Conn>,
    /// The newest connection of each 4-tuple.
    current: HashMap<ConnKey, ConnId>,
    next_id: ConnId,
    tws: HashMap<u64, Tw>,
    /// Timer cancels of timewait sockets the probe never saw created, by address.
    foreign_cancels: HashMap<u64, (u64, Tuple)>,
    /// Timewait sockets the probe never saw created, killed early (a cancel alone), by
    /// (local, remote), with the time of the kill: for a moment they may still turn out to
    /// have been taken over by a new connection.
    foreign_dying: HashMap<Tuple, u64>,
    foreign_dying_queue: VecDeque<(u64, Tuple)>,
    /// Timewait sockets older than the probe, still alive (see [`Tracker::set_baseline`]).
    baseline: HashSet<Tuple>,
    /// Live timewait sockets by (local, remote).
    tw_by_tuple: HashMap<Tuple, u64>,
    /// Timewait sockets killed early, by (local, remote), with the time of the kill: for a
    /// moment they may still turn out to have been reused.
    dying: HashMap<Tuple, (Tw, u64)>,
    /// What `tick` waits on, in event order: timer cancels (kill or not?), killed sockets
    /// (reused or not?), lone ends (peer coming or not?).
    cancel_queue: VecDeque<(u64, u64)>,
    dying_queue: VecDeque<(u64, Tuple)>,
    lone_queue: VecDeque<(u64, ConnId)>,
    done: Vec<ConnRecord>,
    totals: Totals,
    timewait_tracked: bool,
    /// Hold a connection's record until its timewait sockets end (see `records_at_close`).
    wait_for_timewait: bool,
    /// The owner the event being handled carries (see [`Tracker::owned_event`]).
    owner_now: Option<Owner>,
    /// Totals by owner, when asked for: [`Tracker::by`]'s table, then
    /// [`Tracker::metrics_by`]'s.
    tables: [Option<ByTable>; 2],
}

impl Tracker {
    /// `timewait_tracked`: the probe follows timewait sockets, so a `FIN_WAIT2->CLOSE` with no
    /// timewait socket is an overflow and records wait for their timewait sockets to end.
    pub fn new(timewait_tracked: bool) -> Tracker {
        Tracker {
            timewait_tracked,
            wait_for_timewait: timewait_tracked,
            ..Tracker::default()
        }
    }

    /// Finish each record as soon as both ends are closed, without its TIME_WAIT list. The
    /// totals still count every timewait socket; memory then stays bounded by the live sockets
    /// rather than by a minute of connections, which is what a load run needs.
    pub fn records_at_close(mut self) -> Tracker {
        self.wait_for_timewait = false;
        self
    }

    /// Also keep totals by owner (`trace --by`), in a table of at most `max_rows` rows.
    pub fn by(mut self, by: By, max_rows: usize) -> Tracker {
        self.tables[0] = Some(ByTable::new(by, max_rows));
        self
    }

    pub fn table(&self) -> Option<&ByTable> {
        self.tables[0].as_ref()
    }

    /// Also keep totals by owner for metrics: the first `series` keys seen, and `other`, whose
    /// counts only ever grow ([`ByTable::sticky`]).
    pub fn metrics_by(mut self, by: By, series: usize) -> Tracker {
        self.tables[1] = Some(ByTable::sticky(by, series));
        self
    }

    pub fn metrics_table(&self) -> Option<&ByTable> {
        self.tables[1].as_ref()
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Marks the start of a measured window (a run's warmup is over): returns the totals so
    /// far, for [`Totals::since`], and restarts each side's peak from what is alive now.
    pub fn mark(&mut self) -> Totals {
        let totals = &mut self.totals;
        for stats in totals
            .time_wait
            .values_mut()
            .chain(totals.fin_wait2.values_mut())
        {
            stats.peak = stats.current;
        }
        self.totals.clone()
    }

    /// Connection ends the probe saw and has not yet seen close: after a run's load stops,
    /// the closes still on their way.
    pub fn open_ends(&self) -> usize {
        self.ends.len()
    }

    /// Timewait sockets the probe saw being created and not yet ending, on any side.
    pub fn live_timewait(&self) -> u64 {
        self.tws.len() as u64
    }

    /// Sets the timewait sockets that existed before the probe (local, remote), as the kernel
    /// listed them right after the probe attached. Those the probe has already seen created are
    /// left out; the others leave the set as the probe sees them end. `netns`: the namespace
    /// the kernel listed them in (inode).
    pub fn set_baseline(
        &mut self,
        netns: u32,
        tuples: impl IntoIterator<Item = (SocketAddr, SocketAddr)>,
    ) {
        let known = &self.tw_by_tuple;
        self.baseline = tuples
            .into_iter()
            .map(|(local, remote)| (netns, local, remote))
            .filter(|t| !known.contains_key(t))
            .collect();
    }

    /// The probe's count of timewait sockets in its scope: those it saw created and not yet
    /// ended, plus those of the baseline still alive.
    pub fn timewait_gauge(&self) -> u64 {
        self.live_timewait() + self.baseline.len() as u64
    }

    /// Finished records, oldest first.
    pub fn drain(&mut self) -> std::vec::Drain<'_, ConnRecord> {
        self.done.drain(..)
    }

    /// [`Tracker::event`] for an event that may carry the [`Owner`] of its step: the end
    /// takes it before the step is handled (a close may finish the connection's record).
    pub fn owned_event(&mut self, e: &Event, owner: Option<&Owner>) {
        self.owner_now = owner.copied();
        self.event(e);
        self.owner_now = None;
    }

    pub fn event(&mut self, e: &Event) {
        match e.kind {
            kind::SET_STATE => self.set_state(e),
            kind::RST_SENT => self.act(e.addr, Act::SentRst, e.ts_ns),
            kind::RST_RECEIVED => {
                if let Some(end) = self.end_mut(e.addr) {
                    end.rst_unsent = Some(e.unsent != 0);
                }
                self.act(e.addr, Act::GotRst, e.ts_ns)
            }
            kind::TW_START => self.tw_start(e),
            kind::TW_CANCEL => match self.tws.get_mut(&e.addr) {
                Some(tw) => {
                    tw.cancel_ns = Some(e.ts_ns);
                    self.totals.substate_now(tw, substate_of(e.old_state));
                    self.cancel_queue.push_back((e.ts_ns, e.addr));
                }
                None => {
                    self.foreign_cancels.insert(e.addr, (e.ts_ns, tuple_of(e)));
                    self.cancel_queue.push_back((e.ts_ns, e.addr));
                }
            },
            kind::TW_EXPIRE => match self.remove_tw(e.addr) {
                Some(mut tw) => {
                    self.totals.substate_now(&mut tw, substate_of(e.old_state));
                    self.tw_end(tw, TwEnd::Expired, e.ts_ns, false);
                }
                None => {
                    self.foreign_cancels.remove(&e.addr);
                    self.baseline.remove(&tuple_of(e));
                }
            },
            _ => {}
        }
    }

    /// Resolves what only the passing of time tells: kills (a cancel with nothing after it),
    /// reuses, and lone ends whose peer never showed. `now_ns` is CLOCK_MONOTONIC.
    ///
    /// Each kind of wait is a queue in event order, so a tick costs what has come due, not the
    /// number of sockets alive (a hundred thousand under churn). An entry whose wait was
    /// answered meanwhile (its time no longer matches) is dropped.
    pub fn tick(&mut self, now_ns: u64) {
        while let Some(&(at, addr)) = self.cancel_queue.front() {
            if now_ns.saturating_sub(at) <= CANCEL_GRACE_NS {
                break;
            }
            self.cancel_queue.pop_front();
            if self
                .tws
                .get(&addr)
                .is_some_and(|tw| tw.cancel_ns == Some(at))
            {
                if let Some(tw) = self.remove_tw(addr) {
                    self.kill(tw, at);
                }
            } else if self.foreign_cancels.get(&addr).is_some_and(|f| f.0 == at)
                && let Some((_, tuple)) = self.foreign_cancels.remove(&addr)
            {
                self.baseline.remove(&tuple);
                self.foreign_dying.insert(tuple, at);
                self.foreign_dying_queue.push_back((at, tuple));
            }
        }
        while let Some(&(at, tuple)) = self.foreign_dying_queue.front() {
            if now_ns.saturating_sub(at) <= REUSE_WINDOW_NS {
                break;
            }
            self.foreign_dying_queue.pop_front();
            if self.foreign_dying.get(&tuple) == Some(&at) {
                self.foreign_dying.remove(&tuple);
            }
        }
        while let Some(&(at, tuple)) = self.dying_queue.front() {
            if now_ns.saturating_sub(at) <= REUSE_WINDOW_NS {
                break;
            }
            self.dying_queue.pop_front();
            if self.dying.get(&tuple).is_some_and(|d| d.1 == at)
                && let Some((tw, at)) = self.dying.remove(&tuple)
            {
                self.tw_end(tw, TwEnd::Killed, at, true);
            }
        }
        while let Some(&(since, id)) = self.lone_queue.front() {
            if now_ns.saturating_sub(since) <= LONE_GRACE_NS {
                break;
            }
            self.lone_queue.pop_front();
            if let Some(conn) = self.conns.get_mut(&id)
                && conn.lone_since == Some(since)
            {
                conn.lone_since = None;
                self.maybe_finish(id, true);
            }
        }
    }

    /// Ends the trace: every connection still known becomes a record, timewait sockets still
    /// alive are `open` with their age so far.
    pub fn flush(&mut self, now_ns: u64) {
        self.tick(now_ns);
        self.tw_by_tuple.clear();
        let dying: Vec<(Tw, u64)> = self.dying.drain().map(|(_, d)| d).collect();
        for (tw, at) in dying {
            self.tw_end(tw, TwEnd::Killed, at, true);
        }
        let tws: Vec<(u64, Tw)> = self.tws.drain().collect();
        for (_, tw) in tws {
            match tw.cancel_ns {
                Some(at) => self.tw_end(tw, TwEnd::Killed, at, false),
                None => self.tw_end(tw, TwEnd::Open, now_ns, false),
            }
        }
        let live: Vec<u64> = self.ends.keys().copied().collect();
        for addr in live {
            if let Some(mut end) = self.ends.remove(&addr) {
                end.closed_ns = Some(now_ns);
                self.close_end(addr, end, true);
            }
        }
        let keys: Vec<ConnId> = self.conns.keys().copied().collect();
        for key in keys {
            self.maybe_finish(key, true);
        }
    }

    fn set_state(&mut self, e: &Event) {
        let (old, new) = (e.old_state, e.new_state);
        if old == new || (old == st::LISTEN && new != st::SYN_RECV) || new == st::LISTEN {
            return; // self transitions carry nothing; listeners are not connections
        }
        let (local, remote) = endpoints(e);
        let opening = match (old, new) {
            (st::CLOSE, st::SYN_SENT) | (st::LISTEN, st::SYN_RECV) => true,
            // A client end opened at `CLOSE->SYN_SENT` is not established yet; any other is
            // new here (the probe leaves `CLOSE->SYN_SENT` out when told to, see
            // `ProbeOptions::records`, or started after it).
            (st::SYN_SENT, _) => !self
                .ends
                .get(&e.addr)
                .is_some_and(|end| end.role == Role::Client && end.established_ns.is_none()),
            _ => false,
        };
        if opening {
            if let Some(stale) = self.ends.remove(&e.addr) {
                // The kernel reused the address of a socket whose close we did not see.
                self.close_end(e.addr, stale, true);
            }
            let role = if new == st::SYN_RECV {
                Role::Server
            } else {
                Role::Client
            };
            self.ends.insert(
                e.addr,
                End::new(e.addr, role, local, remote, e.netns, e.ts_ns),
            );
        }
        let end = self
            .ends
            .entry(e.addr)
            .or_insert_with(|| End::new(e.addr, Role::Unknown, local, remote, e.netns, e.ts_ns));
        if let Some(owner) = self.owner_now.take() {
            end.owner = Some(owner);
        }
        if local.port() != 0 {
            end.local = local;
            end.remote = remote;
        }
        if end.conn.is_none() && local.port() != 0 && remote.port() != 0 {
            let (key, client_side) = end.key_for();
            let id = self.conn_for(key, client_side);
            if let Some(end) = self.ends.get_mut(&e.addr) {
                end.conn = Some(id);
            }
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.live.push(e.addr);
                conn.lone_since = None;
            }
            let side = if client_side {
                Side::Client
            } else {
                Side::Server
            };
            self.took_tuple((e.netns, local, remote), side);
        }
        match (old, new) {
            (_, st::ESTABLISHED) => {
                self.ends
                    .get_mut(&e.addr)
                    .map(|end| end.established_ns.get_or_insert(e.ts_ns));
            }
            (st::ESTABLISHED | st::SYN_RECV, st::FIN_WAIT1) => {
                self.act(e.addr, Act::SentFin, e.ts_ns);
                if e.unsent != 0
                    && let Some(end) = self.ends.get_mut(&e.addr)
                {
                    end.fin_queued = true;
                }
            }
            (st::ESTABLISHED, st::CLOSE_WAIT) => self.act(e.addr, Act::GotFin, e.ts_ns),
            (_, st::CLOSE) => {
                if matches!(old, st::CLOSE_WAIT | st::LAST_ACK) {
                    // It got the FIN first: known already unless the probe left out its
                    // `ESTABLISHED->CLOSE_WAIT` (then this is the act's time as far as we know).
                    self.act(e.addr, Act::GotFin, e.ts_ns);
                }
                if let Some(mut end) = self.ends.remove(&e.addr) {
                    end.closed_ns = Some(e.ts_ns);
                    let into_tw = matches!(old, st::FIN_WAIT2 | st::CLOSING);
                    if into_tw && self.timewait_tracked && !end.has_tw && !end.reset {
                        self.overflow(&end);
                    }
                    if old == st::LAST_ACK {
                        // Its FIN was acknowledged, by the peer's timewait socket if it has
                        // one: that socket is in TIME_WAIT now, even if its timer's re-arm was
                        // silent (same wheel bucket: no tracepoint).
                        self.peer_fin_arrived((end.netns, end.remote, end.local));
                    }
                    self.close_end(e.addr, end, false);
                }
            }
            _ => {}
        }
    }

    /// The end at kernel address `addr`, live or already filed under its connection.
    fn end_mut(&mut self, addr: u64) -> Option<&mut End> {
        match self.ends.get_mut(&addr) {
            Some(end) => Some(end),
            None => self
                .closed
                .get(&addr)
                .and_then(|id| self.conns.get_mut(id))
                .and_then(|conn| {
                    [conn.client.as_mut(), conn.server.as_mut()]
                        .into_iter()
                        .flatten()
                        .find(|e| e.addr == addr)
                }),
        }
    }

    fn act(&mut self, addr: u64, act: Act, ts: u64) {
        // The kernel moves a socket to CLOSE before it sends its abortive RST, so the end may
        // already be filed under its connection.
        let Some(end) = self.end_mut(addr) else {
            return;
        };
        match act {
            Act::SentFin => end.sent_fin = true,
            Act::SentRst | Act::GotRst => end.reset = true,
            Act::GotFin => {}
        }
        end.first_act.get_or_insert((act, ts));
    }

    /// A full socket reached CLOSE (or the trace ended): file it under its connection.
    fn close_end(&mut self, addr: u64, end: End, at_exit: bool) {
        if end.conn.is_none() && end.local.port() == 0 {
            // Never had a port: connect() failed on this host (EADDRNOTAVAIL) before any SYN
            // left, or the trace ended before autobind. Not a connection.
            return;
        }
        let (key, client_side) = end.key_for();
        let id = match end.conn {
            Some(id) => id,
            None => self.conn_for(key, client_side),
        };
        self.closed.insert(addr, id);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.live.retain(|&a| a != addr);
        if client_side {
            conn.client = Some(end);
        } else {
            conn.server = Some(end);
        }
        let lone = conn.client.is_none() || conn.server.is_none();
        let refused = conn
            .client
            .as_ref()
            .is_some_and(|c| c.established_ns.is_none() && c.role == Role::Client);
        if lone && !refused && !at_exit && conn.live.is_empty() {
            let since = conn
                .client
                .as_ref()
                .or(conn.server.as_ref())
                .and_then(|e| e.closed_ns)
                .unwrap_or(0);
            conn.lone_since = Some(since);
            self.lone_queue.push_back((since, id));
            return;
        }
        self.maybe_finish(id, at_exit);
    }

    /// The connection a new end with this key and side belongs to: the current one of its
    /// 4-tuple unless that one already has an end on this side.
    fn conn_for(&mut self, key: ConnKey, client_side: bool) -> ConnId {
        let side = usize::from(!client_side);
        if let Some(&id) = self.current.get(&key)
            && let Some(conn) = self.conns.get_mut(&id)
            && !conn.roles[side]
        {
            conn.roles[side] = true;
            return id;
        }
        self.next_id += 1;
        let id = self.next_id;
        let mut roles = [false; 2];
        roles[side] = true;
        self.conns.insert(
            id,
            Conn {
                key,
                roles,
                client: None,
                server: None,
                live: Vec::new(),
                tw_live: 0,
                time_wait: Vec::new(),
                lone_since: None,
                closer_counted: false,
            },
        );
        self.current.insert(key, id);
        id
    }

    fn maybe_finish(&mut self, key: ConnId, force: bool) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        // Counted once both ends are closed, not when the record is complete (a minute later
        // for a connection whose record waits for its timewait sockets): live totals, such as
        // `trace --metrics` serves, show a close when it happened.
        if conn.live.is_empty() && conn.lone_since.is_none() && !conn.closer_counted {
            conn.closer_counted = true;
            let closer = conn.closer();
            *self.totals.closer.entry(closer).or_default() += 1;
            for table in self.tables.iter_mut().flatten() {
                table.closed(&conn.row_keys(table.by), closer);
            }
        }
        let tw_wait = conn.tw_live > 0 && self.wait_for_timewait;
        let waiting = !conn.live.is_empty() || tw_wait || conn.lone_since.is_some();
        if waiting && !force {
            return;
        }
        if !conn.live.is_empty() || tw_wait {
            return; // flush() closes ends and timewait sockets first
        }
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        for end in conn.client.iter().chain(conn.server.iter()) {
            if self.closed.get(&end.addr) == Some(&key) {
                self.closed.remove(&end.addr);
            }
        }
        if self.current.get(&conn.key) == Some(&key) {
            self.current.remove(&conn.key);
        }
        let counted = conn.closer_counted;
        let keys = self
            .tables
            .each_ref()
            .map(|t| t.as_ref().map(|t| conn.row_keys(t.by)));
        let record = conn.record();
        if !counted {
            *self.totals.closer.entry(record.closer).or_default() += 1;
            for (table, keys) in self.tables.iter_mut().zip(keys) {
                if let (Some(table), Some(keys)) = (table, keys) {
                    table.closed(&keys, record.closer);
                }
            }
        }
        self.done.push(record);
    }
}

impl End {
    fn new(
        addr: u64,
        role: Role,
        local: SocketAddr,
        remote: SocketAddr,
        netns: u32,
        ts: u64,
    ) -> End {
        End {
            addr,
            role,
            local,
            remote,
            netns,
            opened_ns: ts,
            established_ns: None,
            first_act: None,
            sent_fin: false,
            fin_queued: false,
            rst_unsent: None,
            reset: false,
            has_tw: false,
            closed_ns: None,
            conn: None,
            owner: None,
        }
    }

    /// The connection key of this end. An end seen only mid-life has no known role; it is
    /// keyed by guessing the higher port is the client's (ephemeral) one, the same way on both
    /// ends so that they still pair.
    /// Also says whether this end is the client side.
    fn key_for(&self) -> (ConnKey, bool) {
        let client_is_local = match self.role {
            Role::Client => true,
            Role::Server => false,
            Role::Unknown => (self.local.port(), self.local) > (self.remote.port(), self.remote),
        };
        if client_is_local {
            (ConnKey::new(self.local, self.remote, self.netns), true)
        } else {
            (ConnKey::new(self.remote, self.local, self.netns), false)
        }
    }
}

impl End {
    /// The closer, when this end (on `side`) closed first but its FIN had to wait behind
    /// unsent data: the FIN went on the wire at a moment no event shows, after it was queued
    /// and before the peer received it. `None` when its FIN went out at once (or it sent none).
    fn queued_fin_closer(&self, side: Side, peer: Option<&End>) -> Option<Closer> {
        let Some((Act::SentFin, queued_at)) = self.first_act else {
            return None;
        };
        // Still unsent when the peer's RST came: the RST was on the wire first.
        if self.rst_unsent == Some(true) {
            return Some(Closer::of(side.other(), true));
        }
        if !self.fin_queued {
            return None;
        }
        Some(match peer.and_then(|p| p.first_act) {
            // The peer got the FIN before it did anything itself.
            Some((Act::GotFin, _)) => Closer::of(side, false),
            // The peer acted before this end even queued its FIN.
            Some((act @ (Act::SentFin | Act::SentRst), at)) if at < queued_at => {
                Closer::of(side.other(), act == Act::SentRst)
            }
            // The peer acted while the FIN waited or was on its way: which came first on the
            // wire no event tells.
            Some((Act::SentFin | Act::SentRst, _)) => Closer::Unknown,
            // The peer got this end's RST: its own abort, after the FIN.
            Some((Act::GotRst, _)) => return None,
            // The peer not seen: an RST came after the FIN went out (the order is unknown),
            // or nothing did and the FIN was the first.
            None if self.rst_unsent.is_some() => Closer::Unknown,
            None => Closer::of(side, false),
        })
    }
}

impl Conn {
    /// The table keys of its ends (see [`by::ByTable::closed`]).
    fn row_keys(&self, by: By) -> Vec<RowKey> {
        self.client
            .iter()
            .chain(self.server.iter())
            .map(|e| RowKey::of(by, e.owner.as_ref(), e.local, e.remote))
            .collect()
    }

    fn record(self) -> ConnRecord {
        let key = self.key;
        // Not collected: a run finishes tens of thousands of records a second.
        let ends = || self.client.iter().chain(self.server.iter());
        let opened = ends().map(|e| e.opened_ns).min().unwrap_or(0);
        let closed = ends().filter_map(|e| e.closed_ns).max().unwrap_or(opened);
        let established = ends().filter_map(|e| e.established_ns).min();
        let first_close = ends().filter_map(|e| e.first_act.map(|(_, t)| t)).min();
        let netns = ends().next().map_or(key.netns, |e| e.netns);
        let us = |from: u64, to: u64| to.saturating_sub(from) / 1000;
        ConnRecord {
            client: key.client,
            server: key.server,
            closer: self.closer(),
            connect_us: self
                .client
                .as_ref()
                .filter(|c| c.role == Role::Client)
                .and_then(|c| c.established_ns.map(|t| us(c.opened_ns, t))),
            established_us: established.zip(first_close).map(|(a, b)| us(a, b)),
            close_us: first_close.map(|t| us(t, closed)),
            lifetime_us: us(opened, closed),
            netns,
            client_netns: self.client.as_ref().map(|e| e.netns),
            server_netns: self.server.as_ref().map(|e| e.netns),
            time_wait: self.time_wait,
            client_owner: self.client.as_ref().and_then(|e| e.owner),
            server_owner: self.server.as_ref().and_then(|e| e.owner),
        }
    }

    fn closer(&self) -> Closer {
        let (c, s) = (self.client.as_ref(), self.server.as_ref());
        let known = |e: Option<&End>| e.is_some_and(|e| e.role != Role::Unknown);
        if !known(c) && !known(s) {
            return Closer::Unknown;
        }
        if let Some(c) = c
            && c.role == Role::Client
            && c.established_ns.is_none()
        {
            return Closer::Refused;
        }
        if c.is_some_and(|e| e.sent_fin && !e.reset) && s.is_some_and(|e| e.sent_fin && !e.reset) {
            let got_fin_first = |e: &End| matches!(e.first_act, Some((Act::GotFin, _)));
            if !c.is_some_and(got_fin_first) && !s.is_some_and(got_fin_first) {
                return Closer::Simultaneous;
            }
        }
        for (end, side, peer) in [(c, Side::Client, s), (s, Side::Server, c)] {
            if let Some(closer) = end.and_then(|e| e.queued_fin_closer(side, peer)) {
                return closer;
            }
        }
        // The earliest act on either end decides; what the peer received tells about the peer.
        let first = [(c, Side::Client), (s, Side::Server)]
            .into_iter()
            .filter_map(|(end, side)| end.and_then(|e| e.first_act).map(|(act, t)| (t, side, act)))
            .min_by_key(|&(t, side, act)| (t, matches!(act, Act::GotFin | Act::GotRst), side));
        let Some((_, side, act)) = first else {
            return Closer::Unknown;
        };
        let acted_here = matches!(act, Act::SentFin | Act::SentRst);
        let closer_side = match (side, acted_here) {
            (Side::Client, true) | (Side::Server, false) => Side::Client,
            _ => Side::Server,
        };
        Closer::of(closer_side, matches!(act, Act::SentRst | Act::GotRst))
    }
}

pub mod by;
#[cfg(test)]
mod tests;
mod timewait;
