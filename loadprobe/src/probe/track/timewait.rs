//! The timewait half of the tracker: a timewait socket never appears on `inet_sock_set_state`,
//! so its life is followed through its timer (`timer_start`, `timer_cancel`,
//! `timer_expire_entry`), tied to the connection that left it, and ended as expired, reused,
//! killed or still open (docs/kernel.md §2 and §3).

use std::net::SocketAddr;

use loadprobe_common::{Event, tcp_state as st};

use super::by::{RowKey, Slot};
use super::{ConnId, ConnKey, End, Role, TimeWait, Tracker, TwEnd};
use crate::model::{Side, Substate, record_growing};
use crate::probe::event::endpoints;

/// A timewait socket's 4-tuple in its network namespace, (netns, local, remote): with
/// `--all-netns` two namespaces often hold the same addresses (each its own 127.0.0.1), and a
/// tuple alone would take one namespace's socket for the other's.
pub(super) type Tuple = (u32, SocketAddr, SocketAddr);

/// The substate a full socket's old state leaves its timewait socket in.
pub(super) fn substate_of(state: u8) -> Substate {
    if state == st::FIN_WAIT2 {
        Substate::FinWait2
    } else {
        Substate::TimeWait
    }
}

pub(super) fn tuple_of(e: &Event) -> Tuple {
    let (local, remote) = endpoints(e);
    (e.netns, local, remote)
}

/// A `timer_cancel` not followed within this time by an expiry or a restart was a kill. Both
/// follow within microseconds on the same CPU; this leaves room for the reader's batching.
pub(super) const CANCEL_GRACE_NS: u64 = 5_000_000;
/// A killed timewait socket counts as reused if a connection on its 4-tuple opens this soon.
pub(super) const REUSE_WINDOW_NS: u64 = 1_000_000_000;
/// A cancel and a start this close together, same socket and tuple, are one reschedule
/// (`__mod_timer` emits them back to back); a kill followed by a new timewait socket at the
/// same address needs a whole new connection in between.
pub(super) const RESCHEDULE_NS: u64 = 100_000;

#[derive(Debug)]
pub(super) struct Tw {
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) netns: u32,
    pub(super) start_ns: u64,
    pub(super) substate_start: Substate,
    pub(super) substate: Substate,
    pub(super) owner: Option<(ConnId, Side)>,
    /// Where the owner table counts it as held (see [`super::by`]): under the owner of the full
    /// socket it replaced, even once that process has exited.
    pub(super) slots: [Option<Slot>; 2],
    pub(super) cancel_ns: Option<u64>,
}

impl Tw {
    pub(super) fn tuple(&self) -> Tuple {
        (self.netns, self.local, self.remote)
    }
}

impl Tracker {
    pub(super) fn tw_start(&mut self, e: &Event) {
        let (local, remote) = endpoints(e);
        let this = (e.netns, local, remote);
        let substate = substate_of(e.old_state);
        if let Some((cancel, tuple)) = self.foreign_cancels.remove(&e.addr) {
            if tuple == this && e.ts_ns.saturating_sub(cancel) < RESCHEDULE_NS {
                return; // a reschedule of a timewait socket older than the probe
            }
            // It was killed, and the kernel reused its memory at once for this new one.
            self.baseline.remove(&tuple);
        }
        // Created just before the baseline was read: the probe knows it now.
        self.baseline.remove(&this);
        if let Some(tw) = self.tws.get_mut(&e.addr) {
            let same = tw.local == local && tw.remote == remote && tw.netns == e.netns;
            if same
                && tw
                    .cancel_ns
                    .is_some_and(|c| e.ts_ns.saturating_sub(c) < RESCHEDULE_NS)
            {
                tw.cancel_ns = None; // a visible reschedule: same socket, new expiry
                self.totals.substate_now(tw, substate);
                return;
            }
            // The kernel freed the old socket (a kill) and reused its memory.
            if let Some(old) = self.remove_tw(e.addr) {
                let at = old.cancel_ns.unwrap_or(e.ts_ns);
                self.kill(old, at);
            }
        }
        let owner = self.owner_of(local, remote, e.netns);
        let mut holder = None;
        let mut slots = [None; 2];
        match owner {
            Some((key, side)) => {
                if let Some(conn) = self.conns.get_mut(&key) {
                    conn.tw_live += 1;
                    for addr in &conn.live {
                        if let Some(end) = self.ends.get_mut(addr)
                            && end.local == local
                        {
                            end.has_tw = true;
                            holder = end.owner;
                        }
                    }
                }
                let stats = self.totals.side_mut(substate, side);
                stats.entered += 1;
                stats.current += 1;
                stats.peak = stats.peak.max(stats.current);
                for (table, slot) in self.tables.iter_mut().zip(&mut slots) {
                    if let Some(table) = table {
                        let key = RowKey::of(table.by, holder.as_ref(), local, remote);
                        *slot = Some(table.entered(key));
                    }
                }
            }
            None => self.totals.time_wait_unmatched += 1,
        }
        if let Some(old) = self.tw_by_tuple.insert(this, e.addr)
            && old != e.addr
            && let Some(stale) = self.remove_tw(old)
        {
            let at = stale.cancel_ns.unwrap_or(e.ts_ns);
            self.kill(stale, at);
            self.tw_by_tuple.insert(this, e.addr);
        }
        self.tws.insert(
            e.addr,
            Tw {
                local,
                remote,
                netns: e.netns,
                start_ns: e.ts_ns,
                substate_start: substate,
                substate,
                owner,
                slots,
                cancel_ns: None,
            },
        );
    }

    /// The connection and side a timewait socket with this local/remote pair belongs to.
    pub(super) fn owner_of(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        netns: u32,
    ) -> Option<(ConnId, Side)> {
        [
            (ConnKey::new(local, remote, netns), Side::Client),
            (ConnKey::new(remote, local, netns), Side::Server),
        ]
        .into_iter()
        .find_map(|(key, side)| {
            let id = *self.current.get(&key)?;
            (self.side_of(id, local) == Some(side)).then_some((id, side))
        })
    }

    /// Which side of connection `id` has the local address `local`.
    pub(super) fn side_of(&self, id: ConnId, local: SocketAddr) -> Option<Side> {
        let conn = self.conns.get(&id)?;
        let key = conn.key;
        let ends = conn
            .live
            .iter()
            .filter_map(|a| self.ends.get(a))
            .chain(conn.client.iter())
            .chain(conn.server.iter());
        for end in ends {
            if end.local == local {
                return match end.role {
                    Role::Client => Some(Side::Client),
                    Role::Server => Some(Side::Server),
                    Role::Unknown => (local == key.client)
                        .then_some(Side::Client)
                        .or(Some(Side::Server)),
                };
            }
        }
        None
    }

    /// A new connection took this 4-tuple: a timewait socket on it whose timer was just
    /// cancelled was killed for it (tcp_tw_reuse on connect, or a SYN accepted in TIME_WAIT).
    /// A timewait socket the probe never saw created counts as `reused_older` on `side`.
    pub(super) fn took_tuple(&mut self, tuple: Tuple, side: Side) {
        if let Some((tw, at)) = self.dying.remove(&tuple) {
            self.tw_end(tw, TwEnd::Reused, at, true);
        }
        // A kill still waiting to be told from an expiry (a handful within CANCEL_GRACE_NS).
        let cancelled = self
            .foreign_cancels
            .iter()
            .find_map(|(&addr, &(_, t))| (t == tuple).then_some(addr));
        if self.foreign_dying.remove(&tuple).is_some()
            || cancelled.is_some_and(|addr| self.foreign_cancels.remove(&addr).is_some())
        {
            self.baseline.remove(&tuple);
            self.totals.side_mut(Substate::TimeWait, side).reused_older += 1;
        }
        let Some(&addr) = self.tw_by_tuple.get(&tuple) else {
            return;
        };
        if let Some(at) = self.tws.get(&addr).and_then(|tw| tw.cancel_ns)
            && let Some(tw) = self.remove_tw(addr)
        {
            self.tw_end(tw, TwEnd::Reused, at, false);
        }
    }

    /// The timewait socket is gone from the kernel, killed early: it leaves the gauge now and
    /// waits, by 4-tuple, to learn whether a new connection took its place.
    pub(super) fn kill(&mut self, tw: Tw, at: u64) {
        if let Some((_, side)) = tw.owner {
            let stats = self.totals.side_mut(tw.substate, side);
            stats.current = stats.current.saturating_sub(1);
        }
        self.release_slot(&tw);
        let tuple = tw.tuple();
        self.dying_queue.push_back((at, tuple));
        if let Some((older, older_at)) = self.dying.insert(tuple, (tw, at)) {
            self.tw_end(older, TwEnd::Killed, older_at, true);
        }
    }

    /// The owner table no longer counts the timewait socket as held.
    fn release_slot(&mut self, tw: &Tw) {
        for (table, slot) in self.tables.iter_mut().zip(tw.slots) {
            if let (Some(table), Some(slot)) = (table, slot) {
                table.released(slot);
            }
        }
    }

    pub(super) fn peer_fin_arrived(&mut self, tuple: Tuple) {
        if let Some(addr) = self.tw_by_tuple.get(&tuple)
            && let Some(tw) = self.tws.get_mut(addr)
        {
            self.totals.substate_now(tw, Substate::TimeWait);
        }
    }

    pub(super) fn remove_tw(&mut self, addr: u64) -> Option<Tw> {
        let tw = self.tws.remove(&addr)?;
        if self.tw_by_tuple.get(&tw.tuple()) == Some(&addr) {
            self.tw_by_tuple.remove(&tw.tuple());
        }
        Some(tw)
    }

    /// Records the end of a timewait socket; `released`: already off the gauge (see `kill`).
    pub(super) fn tw_end(&mut self, tw: Tw, end: TwEnd, at_ns: u64, released: bool) {
        let Some((key, side)) = tw.owner else {
            return;
        };
        let duration_ms = at_ns.saturating_sub(tw.start_ns) / 1_000_000;
        let stats = self.totals.side_mut(tw.substate, side);
        if !released {
            stats.current = stats.current.saturating_sub(1);
            // Still alive at the trace's end: its holder still holds it.
            if end != TwEnd::Open {
                self.release_slot(&tw);
            }
        }
        let stats = self.totals.side_mut(tw.substate, side);
        match end {
            TwEnd::Expired => stats.expired += 1,
            TwEnd::Reused => stats.reused += 1,
            TwEnd::Killed => stats.killed += 1,
            TwEnd::Overflow => stats.overflow += 1,
            TwEnd::Open => stats.open += 1,
        }
        record_growing(&mut stats.durations_ms.0, duration_ms);
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.tw_live = conn.tw_live.saturating_sub(1);
            conn.time_wait.push(TimeWait {
                side,
                netns: tw.netns,
                substate: tw.substate,
                substate_start: tw.substate_start,
                duration_ms,
                end,
            });
            if end != TwEnd::Open {
                self.maybe_finish(key, false);
            }
        }
    }

    /// The end went to CLOSE from a state that makes a timewait socket, but none was made.
    pub(super) fn overflow(&mut self, end: &End) {
        let Some(id) = end.conn else {
            return;
        };
        let side = if end.key_for().1 {
            Side::Client
        } else {
            Side::Server
        };
        self.totals.time_wait.entry(side).or_default().overflow += 1;
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.time_wait.push(TimeWait {
                side,
                netns: end.netns,
                substate: Substate::TimeWait,
                substate_start: Substate::TimeWait,
                duration_ms: 0,
                end: TwEnd::Overflow,
            });
        }
    }
}
