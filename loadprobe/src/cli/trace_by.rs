//! `trace --by`: the owner table as text (live and at the end) and as the summary's `by`.

use clap::ValueEnum;
use serde_json::{Value, json};

use loadprobe::model::Closer;
use loadprobe::probe::owner::{Namer, comm};
use loadprobe::probe::track::by::{By, ByTable, Order, Row, RowKey};
use loadprobe_common::Owner;

/// What `--by` keys rows by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ByArg {
    /// The owning process (pid and command) of each end.
    Process,
    /// The owning process's cgroup.
    Cgroup,
    /// The remote address of each end.
    Peer,
    /// The local port of each end.
    LocalPort,
}

impl ByArg {
    pub fn by(self) -> By {
        match self {
            ByArg::Process => By::Process,
            ByArg::Cgroup => By::Cgroup,
            ByArg::Peer => By::Peer,
            ByArg::LocalPort => By::LocalPort,
        }
    }
}

/// A row's key as people read it: `curl[4711]`, a cgroup path, an address, a port.
pub fn name(key: &RowKey, namer: &mut Namer) -> String {
    match key {
        RowKey::Process { pid, comm: c } => {
            let owner = Owner {
                comm: *c,
                ..Owner::default()
            };
            match pid {
                0 => format!("{}[?]", comm(&owner)),
                pid => format!("{}[{pid}]", comm(&owner)),
            }
        }
        RowKey::Cgroup(id) => {
            let owner = Owner {
                cgroup_id: *id,
                ..Owner::default()
            };
            match namer.cgroup(&owner) {
                Some(c) => c.path.clone(),
                None => format!("(cgroup {id}, path unknown)"),
            }
        }
        RowKey::Peer(ip) => ip.to_string(),
        RowKey::LocalPort(port) => port.to_string(),
        RowKey::Unknown => "(owner unknown)".to_string(),
    }
}

/// The closer columns: the two orderly closers, the two resets, and the rest.
const CLOSERS: [(&str, &[Closer]); 5] = [
    ("client", &[Closer::Client]),
    ("server", &[Closer::Server]),
    ("c-reset", &[Closer::ClientReset]),
    ("s-reset", &[Closer::ServerReset]),
    (
        "other",
        &[Closer::Simultaneous, Closer::Refused, Closer::Unknown],
    ),
];

fn closed(row: &Row, closers: &[Closer]) -> u64 {
    closers
        .iter()
        .map(|c| row.closer.get(c).copied().unwrap_or(0))
        .sum()
}

/// The two rankings (who holds TIME_WAIT now, who made the most), `top` rows each and the rest
/// as `other`, as text lines.
pub fn lines(table: &ByTable, top: usize, namer: &mut Namer) -> Vec<String> {
    let mut out = Vec::new();
    for (title, order) in [
        ("holding TIME_WAIT now", Order::Holding),
        ("entered TIME_WAIT most", Order::Entered),
    ] {
        let (rows, other) = table.top(top, order);
        out.push(format!("by {}, {title} (top {top}):", table.by.name()));
        let closers: String = CLOSERS.iter().map(|(n, _)| format!("{n:>8}")).collect();
        out.push(format!(
            "  {:<40} {:>9} {:>8} {:>7} {closers}",
            "", "TIME_WAIT", "entered", "conns"
        ));
        let mut row_line = |label: &str, r: &Row| {
            let closers: String = CLOSERS
                .iter()
                .map(|(_, cs)| format!("{:>8}", closed(r, cs)))
                .collect();
            out.push(format!(
                "  {label:<40} {:>9} {:>8} {:>7} {closers}",
                r.holding, r.entered, r.connections
            ));
        };
        for (key, row) in &rows {
            let label = name(key, namer);
            row_line(&label, row);
        }
        if other != Row::default() {
            row_line("other", &other);
        }
    }
    out
}

/// The table for the summary: per ranking, its rows with their names and counts, and `other`.
pub fn json(table: &ByTable, top: usize, namer: &mut Namer) -> Value {
    let mut row_json = |key: Option<&RowKey>, r: &Row| {
        let mut v = json!({
            "holding": r.holding,
            "entered": r.entered,
            "connections": r.connections,
            "closer": Closer::ALL.iter().map(|c| (c.name().to_string(), r.closer.get(c).copied().unwrap_or(0).into())).collect::<serde_json::Map<_, _>>()
        });
        v["name"] = match key {
            Some(k) => name(k, namer).into(),
            None => "other".into(),
        };
        if let Some(RowKey::Process { pid, .. }) = key {
            v["pid"] = if *pid == 0 {
                Value::Null
            } else {
                (*pid).into()
            };
        }
        v
    };
    let mut ranking = |order| {
        let (rows, other) = table.top(top, order);
        let rows: Vec<Value> = rows.iter().map(|(k, r)| row_json(Some(k), r)).collect();
        json!({ "rows": rows, "other": row_json(None, &other) })
    };
    json!({
        "key": table.by.name(),
        "top": top,
        "holding": ranking(Order::Holding),
        "entered": ranking(Order::Entered),
    })
}
