//! Totals by owner (`trace --by`): per process, cgroup, peer address or local port, who holds
//! TIME_WAIT now, how many each made, and who closed their connections.
//!
//! The table is bounded ([`ByTable::new`]'s `max_rows`), whatever the churn: when it is full, a
//! new key takes the place of the row with the least activity that holds no TIME_WAIT now,
//! whose counts move to `other`; if every row holds TIME_WAIT, the new key is counted in
//! `other`. So every count lands somewhere exactly once, and the rows with the sum of `other`
//! always equal the totals; only which key it is counted under may be lost.

use std::net::IpAddr;

use loadprobe_common::Owner;
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;

use crate::model::Closer;

/// What rows are keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    /// The owning process (pid and command) of the end.
    Process,
    /// The owning process's cgroup.
    Cgroup,
    /// The end's remote address.
    Peer,
    /// The end's local port.
    LocalPort,
}

impl By {
    pub fn name(self) -> &'static str {
        match self {
            By::Process => "process",
            By::Cgroup => "cgroup",
            By::Peer => "peer",
            By::LocalPort => "local-port",
        }
    }
}

/// One row's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowKey {
    Process {
        pid: u32,
        comm: [u8; 16],
    },
    Cgroup(u64),
    Peer(IpAddr),
    LocalPort(u16),
    /// By process or cgroup: an end whose owner the probe did not see.
    Unknown,
}

impl RowKey {
    /// The key of an end owned by `owner`, with this local and remote address.
    pub fn of(
        by: By,
        owner: Option<&Owner>,
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
    ) -> RowKey {
        match (by, owner) {
            (By::Process, Some(o)) => RowKey::Process {
                pid: o.pid,
                comm: o.comm,
            },
            (By::Cgroup, Some(o)) => RowKey::Cgroup(o.cgroup_id),
            (By::Process | By::Cgroup, None) => RowKey::Unknown,
            (By::Peer, _) => RowKey::Peer(remote.ip()),
            (By::LocalPort, _) => RowKey::LocalPort(local.port()),
        }
    }
}

/// The counts of one row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Timewait sockets (TIME_WAIT and FIN_WAIT2) its ends hold now.
    pub holding: u64,
    /// Timewait sockets its ends made.
    pub entered: u64,
    /// Connections it was an end of, counted once both ends closed.
    pub connections: u64,
    /// Those by closer (every closer, zeros included).
    pub closer: std::collections::BTreeMap<Closer, u64>,
}

impl Row {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Row) {
        self.holding += other.holding;
        self.entered += other.entered;
        self.connections += other.connections;
        for (c, n) in &other.closer {
            *self.closer.entry(*c).or_default() += n;
        }
    }

    fn activity(&self) -> u64 {
        self.entered + self.connections
    }
}

/// Where a timewait socket's `holding` was counted, to take it back from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Row(RowKey),
    Other,
}

/// The bounded table (see the module's doc).
#[derive(Clone, Debug)]
pub struct ByTable {
    pub by: By,
    rows: HashMap<RowKey, Row>,
    other: Row,
    max_rows: usize,
    /// Whether a full table gives up a row for a new key ([`ByTable::new`]) or never does
    /// ([`ByTable::sticky`]).
    evicts: bool,
}

/// Rows kept at most by default: far more than a table shows, few enough that finding the row
/// to give up (a scan) stays cheap.
pub const MAX_ROWS: usize = 1024;

impl ByTable {
    pub fn new(by: By, max_rows: usize) -> ByTable {
        ByTable {
            by,
            rows: HashMap::default(),
            other: Row::default(),
            max_rows: max_rows.max(1),
            evicts: true,
        }
    }

    /// A table whose first `max_rows` keys keep their rows for good, and every later key is
    /// counted in `other`: no row ever goes, so every count of every row (and of `other`) only
    /// grows, which is what a Prometheus counter must do. A key that comes back keeps counting
    /// where it was, in its row or in `other`.
    pub fn sticky(by: By, max_rows: usize) -> ByTable {
        ByTable {
            evicts: false,
            ..ByTable::new(by, max_rows)
        }
    }

    /// The row for `key`, making room for it if needed; `None`: counted in `other`.
    fn row(&mut self, key: RowKey) -> Option<&mut Row> {
        if !self.rows.contains_key(&key) && self.rows.len() >= self.max_rows {
            if !self.evicts {
                return None;
            }
            let quietest = self
                .rows
                .iter()
                .filter(|(_, r)| r.holding == 0)
                .min_by_key(|(_, r)| r.activity())
                .map(|(k, _)| *k)?;
            if let Some(gone) = self.rows.remove(&quietest) {
                self.other.add(&gone);
            }
        }
        Some(self.rows.entry(key).or_default())
    }

    /// A timewait socket made by an end with key `key`; returns where it is held, for
    /// [`ByTable::released`].
    pub fn entered(&mut self, key: RowKey) -> Slot {
        match self.row(key) {
            Some(row) => {
                row.entered += 1;
                row.holding += 1;
                Slot::Row(key)
            }
            None => {
                self.other.entered += 1;
                self.other.holding += 1;
                Slot::Other
            }
        }
    }

    /// The timewait socket held at `slot` ended.
    pub fn released(&mut self, slot: Slot) {
        let row = match slot {
            // A row holding TIME_WAIT is never given up, so it is still there.
            Slot::Row(key) => self.rows.get_mut(&key),
            Slot::Other => None,
        };
        let row = row.unwrap_or(&mut self.other);
        row.holding = row.holding.saturating_sub(1);
    }

    /// A connection closed by `closer` whose ends have these keys (each key counted once).
    pub fn closed(&mut self, keys: &[RowKey], closer: Closer) {
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].contains(key) {
                continue;
            }
            let row = match self.row(*key) {
                Some(row) => row,
                None => &mut self.other,
            };
            row.connections += 1;
            *row.closer.entry(closer).or_default() += 1;
        }
    }

    /// The `top` rows by `order`, and the rest (with what left the table) summed.
    pub fn top(&self, top: usize, order: Order) -> (Vec<(RowKey, Row)>, Row) {
        let mut rows: Vec<(RowKey, Row)> = self.rows.iter().map(|(k, r)| (*k, r.clone())).collect();
        rows.sort_by(|(ka, a), (kb, b)| {
            let by = match order {
                Order::Holding => (b.holding, b.entered).cmp(&(a.holding, a.entered)),
                Order::Entered => (b.entered, b.holding).cmp(&(a.entered, a.holding)),
            };
            by.then_with(|| b.connections.cmp(&a.connections))
                .then_with(|| format!("{ka:?}").cmp(&format!("{kb:?}")))
        });
        let mut other = self.other.clone();
        for (_, r) in rows.iter().skip(top) {
            other.add(r);
        }
        rows.truncate(top);
        (rows, other)
    }

    /// Every row and `other` summed: the totals the table accounts for.
    pub fn sum(&self) -> Row {
        let mut all = self.other.clone();
        for r in self.rows.values() {
            all.add(r);
        }
        all
    }

    /// Every row, in no order, and `other`.
    pub fn rows(&self) -> (impl Iterator<Item = (&RowKey, &Row)>, &Row) {
        (self.rows.iter(), &self.other)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// How [`ByTable::top`] ranks rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Who holds the most TIME_WAIT now.
    Holding,
    /// Who made the most.
    Entered,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(p: u16) -> RowKey {
        RowKey::LocalPort(p)
    }

    /// Full, a new key takes the place of the quietest row holding nothing; when every row
    /// holds TIME_WAIT, it goes to `other`; the sums never lose a count.
    #[test]
    fn bounded_and_exact() {
        let mut t = ByTable::new(By::LocalPort, 4);
        let mut slots = Vec::new();
        for p in 0..4 {
            for _ in 0..=p {
                slots.push(t.entered(port(p)));
            }
        }
        // Every row holds: port 9 is counted in `other`.
        let s9 = t.entered(port(9));
        assert_eq!(s9, Slot::Other);
        assert_eq!(t.len(), 4);
        // Port 0's one socket ends: its row holds nothing now and is the quietest.
        t.released(slots[0]);
        t.closed(&[port(7), port(7)], Closer::Client);
        assert_eq!(t.len(), 4);
        let (rows, other) = t.top(10, Order::Entered);
        assert!(rows.iter().all(|(k, _)| *k != port(0)), "{rows:?}");
        assert_eq!(
            rows.iter()
                .find(|(k, _)| *k == port(7))
                .unwrap()
                .1
                .connections,
            1
        );
        // Port 0's count moved to `other`, beside port 9's.
        assert_eq!((other.entered, other.holding), (2, 1));
        t.released(s9);
        let sum = t.sum();
        assert_eq!((sum.entered, sum.holding, sum.connections), (11, 9, 1));
        for _ in 0..1000 {
            t.closed(&[port(1000)], Closer::Server);
        }
        assert!(t.len() <= 4);
        let (top, rest) = t.top(2, Order::Holding);
        assert_eq!(top[0].0, port(3));
        assert_eq!(
            top.iter().map(|(_, r)| r.holding).sum::<u64>() + rest.holding,
            9
        );
    }

    /// A sticky table keeps its first keys: later ones count in `other`, also once a row holds
    /// nothing; no count ever goes down but `holding`.
    #[test]
    fn sticky_rows_never_go() {
        let mut t = ByTable::sticky(By::LocalPort, 2);
        let a = t.entered(port(1));
        t.entered(port(2));
        t.released(a);
        assert_eq!(t.entered(port(3)), Slot::Other);
        t.closed(&[port(4)], Closer::Client);
        t.closed(&[port(1)], Closer::Server);
        let (rows, other) = t.top(10, Order::Entered);
        let keys: Vec<RowKey> = rows.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [port(2), port(1)]);
        assert_eq!((other.entered, other.connections), (1, 1));
    }
}
