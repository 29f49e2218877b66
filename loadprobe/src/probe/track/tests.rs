//! The classifier against the exact event sequences of docs/kernel.md §2.

use super::*;
use loadprobe_common::{AF_INET, tcp_state::*};

const C: u64 = 0xc000; // client socket address
const S: u64 = 0x5000; // server (accepted) socket address
const TW_C: u64 = 0x7c00;
const TW_S: u64 = 0x7500;
const MS: u64 = 1_000_000;

const LOOPBACK: [u8; 16] = [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// A timewait timer event for `addr` (local `sport`, remote `dport`) at exactly `ts_ns`, for
/// the orderings that matter within a microsecond.
fn tw_event(ts_ns: u64, kind: u8, addr: u64, substate: u8, sport: u16, dport: u16) -> Event {
    Event {
        ts_ns,
        kind,
        addr,
        old_state: substate,
        sport,
        dport,
        saddr: LOOPBACK,
        daddr: LOOPBACK,
        family: AF_INET,
        netns: 1,
        ..Event::default()
    }
}

/// Replays events at 1 ms steps and collects what the tracker produced.
struct Replay {
    t: Tracker,
    now: u64,
    /// Whether the probe sends every step records need (`ProbeOptions::records`).
    records: bool,
    /// The namespace of the events sent, and what is added to their socket addresses (each
    /// namespace's sockets are other kernel objects).
    netns: u32,
    shift: u64,
    /// The client's and the server's processes, when the probe sends owners: the steps each
    /// makes in its own process carry its owner, as the kernel's do.
    owners: Option<(Owner, Owner)>,
}

const CPORT: u16 = 40000;
const SPORT: u16 = 8080;

impl Replay {
    fn new() -> Replay {
        Replay {
            t: Tracker::new(true),
            now: 1_000 * MS,
            records: true,
            netns: 1,
            shift: 0,
            owners: None,
        }
    }

    /// As the probe of a run sends them: without the steps only records need.
    fn totals_only() -> Replay {
        Replay {
            records: false,
            ..Replay::new()
        }
    }

    fn send(&mut self, e: Event) -> &mut Self {
        self.send_owned(e, None)
    }

    fn send_owned(&mut self, mut e: Event, owner: Option<Owner>) -> &mut Self {
        self.now += MS;
        e.ts_ns = self.now;
        e.family = AF_INET;
        e.netns = self.netns;
        e.addr += self.shift;
        self.t.owned_event(&e, owner.as_ref());
        self
    }

    /// A state change of the client (`side_client`) or server end.
    fn st(&mut self, side_client: bool, old: u8, new: u8) -> &mut Self {
        let optional = matches!(
            (old, new),
            (CLOSE, SYN_SENT) | (SYN_RECV, ESTABLISHED) | (ESTABLISHED, CLOSE_WAIT)
        );
        if optional && !self.records {
            return self;
        }
        let (a, sport, dport) = if side_client {
            (C, CPORT, SPORT)
        } else {
            (S, SPORT, CPORT)
        };
        // The client's CLOSE->SYN_SENT comes before autobind picks its port.
        let sport = if side_client && old == CLOSE && new == SYN_SENT {
            0
        } else {
            sport
        };
        // The steps of `Capture::Always` in loadprobe-ebpf, and the aborts of these scenarios,
        // which are close() calls.
        let in_process = matches!(
            (old, new),
            (CLOSE, SYN_SENT) | (_, FIN_WAIT1) | (CLOSE_WAIT, LAST_ACK) | (ESTABLISHED, CLOSE)
        );
        let owner = self
            .owners
            .filter(|_| in_process)
            .map(|(c, s)| if side_client { c } else { s });
        self.send_owned(
            Event {
                kind: kind::SET_STATE,
                addr: a,
                old_state: old,
                new_state: new,
                sport,
                dport,
                saddr: LOOPBACK,
                daddr: LOOPBACK,
                ..Event::default()
            },
            owner,
        )
    }

    fn c(&mut self, old: u8, new: u8) -> &mut Self {
        self.st(true, old, new)
    }

    fn s(&mut self, old: u8, new: u8) -> &mut Self {
        self.st(false, old, new)
    }

    fn other(&mut self, kind: u8, side_client: bool, substate: u8) -> &mut Self {
        let (a, tw, sport, dport) = if side_client {
            (C, TW_C, CPORT, SPORT)
        } else {
            (S, TW_S, SPORT, CPORT)
        };
        let is_tw = matches!(kind, kind::TW_START | kind::TW_CANCEL | kind::TW_EXPIRE);
        self.send(Event {
            kind,
            addr: if is_tw { tw } else { a },
            old_state: substate,
            sport,
            dport,
            saddr: LOOPBACK,
            daddr: LOOPBACK,
            ..Event::default()
        })
    }

    fn open(&mut self) -> &mut Self {
        self.c(CLOSE, SYN_SENT)
            .c(SYN_SENT, ESTABLISHED)
            .s(LISTEN, SYN_RECV)
            .s(SYN_RECV, ESTABLISHED)
    }

    /// A whole connection, closed by the client first: its timewait socket (on the client) is
    /// left alive.
    fn client_first_close(&mut self) -> &mut Self {
        self.first_close(true)
    }

    /// A whole connection, closed by the server first: its timewait socket (on the server) is
    /// left alive.
    fn server_first_close(&mut self) -> &mut Self {
        self.first_close(false)
    }

    fn first_close(&mut self, by_client: bool) -> &mut Self {
        let (closer, peer) = (by_client, !by_client);
        self.open()
            .st(closer, ESTABLISHED, FIN_WAIT1)
            .st(peer, ESTABLISHED, CLOSE_WAIT)
            .st(closer, FIN_WAIT1, FIN_WAIT2)
            .other(kind::TW_START, closer, FIN_WAIT2)
            .st(closer, FIN_WAIT2, CLOSE)
            .st(peer, CLOSE_WAIT, LAST_ACK)
            .st(peer, LAST_ACK, CLOSE)
    }

    /// Both ends send their FIN before receiving the other's.
    fn simultaneous_close(&mut self) -> &mut Self {
        self.open()
            .c(ESTABLISHED, FIN_WAIT1)
            .s(ESTABLISHED, FIN_WAIT1)
            .c(FIN_WAIT1, CLOSING)
            .s(FIN_WAIT1, CLOSING)
            .other(kind::TW_START, true, TIME_WAIT)
            .c(CLOSING, CLOSE)
            .other(kind::TW_START, false, TIME_WAIT)
            .s(CLOSING, CLOSE)
    }

    /// One end aborts with an RST.
    fn abort(&mut self, client_aborts: bool) -> &mut Self {
        self.open()
            // The closer goes to CLOSE before it sends the RST (tcp_disconnect, __tcp_close).
            .st(client_aborts, ESTABLISHED, CLOSE)
            .other(kind::RST_SENT, client_aborts, 0)
            .other(kind::RST_RECEIVED, !client_aborts, 0);
        // The peer's CLOSE is the softirq's that took the RST in: it names no process.
        let owners = self.owners.take();
        self.st(!client_aborts, ESTABLISHED, CLOSE);
        self.owners = owners;
        self
    }

    /// The server's port is closed: an RST answers the SYN.
    fn refused(&mut self) -> &mut Self {
        self.c(CLOSE, SYN_SENT)
            .other(kind::RST_RECEIVED, true, 0)
            .c(SYN_SENT, CLOSE)
    }

    /// Sends what follows from another namespace, whose sockets have the same addresses and
    /// ports (each namespace has its own loopback).
    fn in_netns(&mut self, netns: u32) -> &mut Self {
        self.netns = netns;
        self.shift = u64::from(netns) << 32;
        self
    }

    fn wait(&mut self, ns: u64) -> &mut Self {
        self.now += ns;
        self.t.tick(self.now);
        self
    }

    fn finish(&mut self) -> Vec<ConnRecord> {
        self.t.flush(self.now + MS);
        self.t.drain().collect()
    }

    fn records(&mut self) -> Vec<ConnRecord> {
        self.t.drain().collect()
    }
}

fn only(records: Vec<ConnRecord>) -> ConnRecord {
    assert_eq!(records.len(), 1, "{records:#?}");
    records.into_iter().next().unwrap()
}

#[test]
fn client_first_close_leaves_time_wait_on_the_client() {
    let mut r = Replay::new();
    r.client_first_close();
    // The record waits for its timewait socket.
    assert!(r.records().is_empty());
    r.wait(60_000 * MS)
        .other(kind::TW_CANCEL, true, TIME_WAIT)
        .other(kind::TW_EXPIRE, true, TIME_WAIT);
    let rec = only(r.records());
    assert_eq!(rec.closer, Closer::Client);
    assert_eq!(rec.client, "127.0.0.1:40000".parse().unwrap());
    assert_eq!(rec.server, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(rec.connect_us, Some(1000));
    assert_eq!(rec.time_wait.len(), 1);
    let tw = &rec.time_wait[0];
    assert_eq!((tw.side, tw.end), (Side::Client, TwEnd::Expired));
    assert_eq!(
        (tw.substate_start, tw.substate),
        (Substate::FinWait2, Substate::TimeWait)
    );
    assert!(
        (60_000..60_010).contains(&tw.duration_ms),
        "{}",
        tw.duration_ms
    );
    let stats = &r.t.totals().time_wait[&Side::Client];
    assert_eq!(
        (stats.entered, stats.peak, stats.expired, stats.current),
        (1, 1, 1, 0)
    );
    // The summary's lifetime histogram holds the minute too (a fresh hdrhistogram tracks only
    // up to 2,047 and `saturating_record` alone clamped 60 s to 2 ms).
    let max = stats.durations_ms.0.max();
    assert!((60_000..60_100).contains(&max), "{max}");
}

#[test]
fn server_first_close_leaves_time_wait_on_the_server() {
    let mut r = Replay::new();
    r.server_first_close();
    let rec = only(r.finish());
    assert_eq!(rec.closer, Closer::Server);
    assert_eq!(rec.time_wait[0].side, Side::Server);
    assert_eq!(rec.time_wait[0].end, TwEnd::Open);
    // The client's LAST_ACK->CLOSE means the server's timewait socket got the FIN.
    assert_eq!(rec.time_wait[0].substate_start, Substate::FinWait2);
    assert_eq!(rec.time_wait[0].substate, Substate::TimeWait);
}

#[test]
fn half_close_and_self_transitions() {
    // H1: shutdown(SHUT_WR), then close() in FIN_WAIT2 logs FIN_WAIT2->FIN_WAIT2.
    let mut r = Replay::new();
    r.open()
        .c(ESTABLISHED, FIN_WAIT1)
        .c(FIN_WAIT1, FIN_WAIT1)
        .s(ESTABLISHED, CLOSE_WAIT)
        .c(FIN_WAIT1, FIN_WAIT2)
        .c(FIN_WAIT2, FIN_WAIT2)
        .s(CLOSE_WAIT, LAST_ACK)
        .other(kind::TW_START, true, TIME_WAIT)
        .c(FIN_WAIT2, CLOSE)
        .s(LAST_ACK, CLOSE);
    let rec = only(r.finish());
    assert_eq!(rec.closer, Closer::Client);
    assert_eq!(rec.time_wait[0].substate_start, Substate::TimeWait);
}

#[test]
fn simultaneous_close_gives_both_sides_a_timewait_socket() {
    let mut r = Replay::new();
    r.simultaneous_close();
    let rec = only(r.finish());
    assert_eq!(rec.closer, Closer::Simultaneous);
    let sides: Vec<Side> = rec.time_wait.iter().map(|t| t.side).collect();
    assert!(sides.contains(&Side::Client) && sides.contains(&Side::Server));
}

#[test]
fn abort_is_attributed_to_the_end_that_sent_the_rst() {
    for client_aborts in [true, false] {
        let mut r = Replay::new();
        r.abort(client_aborts);
        let rec = only(r.records());
        let want = if client_aborts {
            Closer::ClientReset
        } else {
            Closer::ServerReset
        };
        assert_eq!(rec.closer, want);
        assert!(rec.time_wait.is_empty());
    }
}

#[test]
fn refused_and_failed_connects() {
    let mut r = Replay::new();
    r.refused();
    assert_eq!(only(r.records()).closer, Closer::Refused);

    // EADDRNOTAVAIL: the socket never gets a port, and no SYN leaves the host. An error of the
    // request (the driver counts it), not a connection: no record, no closer.
    let mut r = Replay::new();
    r.send(Event {
        kind: kind::SET_STATE,
        addr: C,
        old_state: CLOSE,
        new_state: SYN_SENT,
        dport: SPORT,
        ..Event::default()
    })
    .send(Event {
        kind: kind::SET_STATE,
        addr: C,
        old_state: SYN_SENT,
        new_state: CLOSE,
        dport: SPORT,
        ..Event::default()
    });
    assert!(r.finish().is_empty());
    assert!(r.t.totals().closer.is_empty(), "{:?}", r.t.totals().closer);
}

#[test]
fn overflow_when_no_timewait_socket_is_made() {
    let mut r = Replay::new();
    r.open()
        .c(ESTABLISHED, FIN_WAIT1)
        .s(ESTABLISHED, CLOSE_WAIT)
        .c(FIN_WAIT1, FIN_WAIT2)
        .c(FIN_WAIT2, CLOSE) // tcp_max_tw_buckets exhausted: no timer_start
        .s(CLOSE_WAIT, LAST_ACK)
        .s(LAST_ACK, CLOSE);
    let rec = only(r.records());
    assert_eq!(rec.closer, Closer::Client);
    assert_eq!(rec.time_wait[0].end, TwEnd::Overflow);
    assert_eq!(r.t.totals().time_wait[&Side::Client].overflow, 1);
}

#[test]
fn visible_reschedule_keeps_the_socket_and_a_lone_cancel_is_a_kill() {
    let mut r = Replay::new();
    r.client_first_close();
    // cancel + start within the same microsecond: a reschedule (the peer's FIN arrived).
    r.t.event(&tw_event(
        r.now + 10,
        kind::TW_CANCEL,
        TW_C,
        TIME_WAIT,
        CPORT,
        SPORT,
    ));
    r.t.event(&tw_event(
        r.now + 20,
        kind::TW_START,
        TW_C,
        TIME_WAIT,
        CPORT,
        SPORT,
    ));
    r.wait(100 * MS);
    assert!(r.records().is_empty(), "a reschedule is not an end");
    // Then an RST assassinates it: a cancel with nothing after it.
    r.other(kind::TW_CANCEL, true, TIME_WAIT).wait(2_000 * MS);
    let rec = only(r.records());
    assert_eq!(rec.time_wait.len(), 1);
    assert_eq!(rec.time_wait[0].end, TwEnd::Killed);
    assert_eq!(rec.time_wait[0].substate_start, Substate::FinWait2);
}

#[test]
fn a_new_connection_on_the_same_tuple_reuses_the_timewait_socket() {
    let mut r = Replay::new();
    r.open()
        .c(ESTABLISHED, FIN_WAIT1)
        .s(ESTABLISHED, CLOSE_WAIT)
        .c(FIN_WAIT1, FIN_WAIT2)
        .s(CLOSE_WAIT, LAST_ACK)
        .other(kind::TW_START, true, TIME_WAIT)
        .c(FIN_WAIT2, CLOSE)
        .s(LAST_ACK, CLOSE)
        .wait(1_500 * MS);
    // tcp_tw_reuse: connect() picks the same port; the kill happens inside connect().
    const C2: u64 = 0xc2000;
    r.send(Event {
        kind: kind::SET_STATE,
        addr: C2,
        old_state: CLOSE,
        new_state: SYN_SENT,
        dport: SPORT,
        saddr: LOOPBACK,
        daddr: LOOPBACK,
        ..Event::default()
    })
    .other(kind::TW_CANCEL, true, TIME_WAIT)
    .send(Event {
        kind: kind::SET_STATE,
        addr: C2,
        old_state: SYN_SENT,
        new_state: ESTABLISHED,
        sport: CPORT,
        dport: SPORT,
        saddr: LOOPBACK,
        daddr: LOOPBACK,
        ..Event::default()
    })
    .wait(10 * MS);
    let rec = only(r.records());
    assert_eq!(rec.time_wait[0].end, TwEnd::Reused);
    assert!((1_500..1_600).contains(&rec.time_wait[0].duration_ms));
}

#[test]
fn a_lone_end_is_classified_from_its_own_transitions() {
    // Remote server: only the client is on this host.
    let mut r = Replay::new();
    r.c(CLOSE, SYN_SENT)
        .c(SYN_SENT, ESTABLISHED)
        .c(ESTABLISHED, CLOSE_WAIT)
        .c(CLOSE_WAIT, LAST_ACK)
        .c(LAST_ACK, CLOSE);
    assert!(r.records().is_empty(), "waits a moment for a late peer");
    r.wait(50 * MS);
    assert_eq!(only(r.records()).closer, Closer::Server);

    // Remote client: only the accepted socket is here, and it received the RST.
    let mut r = Replay::new();
    r.s(LISTEN, SYN_RECV)
        .s(SYN_RECV, ESTABLISHED)
        .other(kind::RST_RECEIVED, false, 0)
        .s(ESTABLISHED, CLOSE)
        .wait(50 * MS);
    assert_eq!(only(r.records()).closer, Closer::ClientReset);
}

#[test]
fn connections_older_than_the_probe_are_unknown() {
    let mut r = Replay::new();
    r.c(ESTABLISHED, FIN_WAIT1)
        .s(ESTABLISHED, CLOSE_WAIT)
        .c(FIN_WAIT1, FIN_WAIT2)
        .s(CLOSE_WAIT, LAST_ACK)
        .s(LAST_ACK, CLOSE);
    let recs = r.finish();
    assert_eq!(only(recs).closer, Closer::Unknown);
}

#[test]
fn open_connections_are_flushed_at_exit() {
    let mut r = Replay::new();
    r.open();
    let rec = only(r.finish());
    assert_eq!(rec.closer, Closer::Unknown);
    assert_eq!(r.t.totals().closer[&Closer::Unknown], 1);
}

#[test]
fn a_new_timewait_socket_in_the_memory_of_a_killed_older_one_is_counted() {
    // A timewait socket from before the probe is killed (its port reused by a client) and the
    // kernel hands its memory straight to the server's new timewait socket of another tuple.
    let mut r = Replay::new();
    r.open()
        .s(ESTABLISHED, FIN_WAIT1)
        .c(ESTABLISHED, CLOSE_WAIT)
        .s(FIN_WAIT1, FIN_WAIT2);
    r.t.event(&tw_event(
        r.now + 10,
        kind::TW_CANCEL,
        TW_S,
        TIME_WAIT,
        50000,
        SPORT,
    ));
    r.t.event(&tw_event(
        r.now + 20,
        kind::TW_START,
        TW_S,
        FIN_WAIT2,
        SPORT,
        CPORT,
    ));
    r.s(FIN_WAIT2, CLOSE)
        .c(CLOSE_WAIT, LAST_ACK)
        .c(LAST_ACK, CLOSE);
    let rec = only(r.finish());
    assert_eq!(rec.closer, Closer::Server);
    assert_eq!(rec.time_wait.len(), 1, "{:?}", rec.time_wait);
    assert_eq!(rec.time_wait[0].end, TwEnd::Open, "not an overflow");
}

/// A run's warmup: counts since the mark leave out what finished before it, and the peak starts
/// again from the sockets alive at the mark.
#[test]
fn counts_since_a_mark_leave_out_what_came_before() {
    let mut r = Replay::new();
    r.t = Tracker::new(true).records_at_close();
    // During warmup: a connection closes; its timewait socket is still alive at the mark.
    r.client_first_close().wait(100 * MS);
    let before = r.t.mark();
    // After it: that timewait socket expires.
    r.wait(60_000 * MS)
        .other(kind::TW_CANCEL, true, TIME_WAIT)
        .other(kind::TW_EXPIRE, true, TIME_WAIT)
        .wait(100 * MS);
    let since = r.t.totals().since(&before);
    assert_eq!(since.closer.values().sum::<u64>(), 0, "{since:?}");
    let client = &since.time_wait[&Side::Client];
    assert_eq!(
        (client.entered, client.expired, client.current, client.peak),
        (0, 1, 0, 1)
    );
    assert_eq!(client.durations_ms.0.len(), 1);
    // The whole run still has everything.
    assert_eq!(r.t.totals().closer[&Closer::Client], 1);
    assert_eq!(r.t.totals().time_wait[&Side::Client].entered, 1);
}

#[test]
fn without_the_steps_only_records_need_the_closers_and_timewait_sockets_are_the_same() {
    type Scenario = fn(&mut Replay);
    let scenarios: [(&str, Scenario); 7] = [
        ("client first", |r| {
            r.client_first_close();
        }),
        ("server first", |r| {
            r.server_first_close();
        }),
        ("server first, the client end alone", |r| {
            r.c(CLOSE, SYN_SENT)
                .c(SYN_SENT, ESTABLISHED)
                .c(ESTABLISHED, CLOSE_WAIT)
                .c(LAST_ACK, CLOSE);
        }),
        ("client first, the server end alone", |r| {
            r.s(LISTEN, SYN_RECV)
                .s(SYN_RECV, ESTABLISHED)
                .s(ESTABLISHED, CLOSE_WAIT)
                .s(CLOSE_WAIT, CLOSE);
        }),
        ("simultaneous", |r| {
            r.simultaneous_close();
        }),
        ("client reset", |r| {
            r.abort(true);
        }),
        ("refused", |r| {
            r.refused();
        }),
    ];
    let seen = |mut r: Replay, scenario: Scenario| {
        scenario(&mut r);
        let rec = only(r.finish());
        let tws: Vec<_> = rec.time_wait.iter().map(|t| (t.side, t.end)).collect();
        (rec.closer, tws, r.t.totals().clone())
    };
    for (name, scenario) in scenarios {
        let (closer, tws, totals) = seen(Replay::totals_only(), scenario);
        let (want_closer, want_tws, _) = seen(Replay::new(), scenario);
        assert_eq!((closer, tws), (want_closer, want_tws), "{name}");
        assert_eq!(totals.closer.get(&closer), Some(&1), "{name}");
        assert_ne!(closer, Closer::Unknown, "{name}");
    }
}

/// Against a server that never closes, the client's timewait socket is an orphaned FIN_WAIT2
/// one (`ss` shows it in fin-wait-2, not time-wait): it counts as FIN_WAIT2 and moves to
/// TIME_WAIT only if the server's FIN arrives after all.
#[test]
fn fin_wait2_orphans_are_not_counted_as_time_wait() {
    let half_closed = |r: &mut Replay| {
        r.open()
            .c(ESTABLISHED, FIN_WAIT1)
            .s(ESTABLISHED, CLOSE_WAIT)
            .c(FIN_WAIT1, FIN_WAIT2)
            .other(kind::TW_START, true, FIN_WAIT2)
            .c(FIN_WAIT2, CLOSE);
    };
    let group = |t: &Totals, fin_wait2: bool| {
        let g = if fin_wait2 {
            &t.fin_wait2
        } else {
            &t.time_wait
        };
        let s = g.get(&Side::Client).cloned().unwrap_or_default();
        (s.entered, s.current, s.expired, s.to_time_wait, s.open)
    };
    for records in [true, false] {
        let mut r = Replay {
            records,
            ..Replay::new()
        };
        half_closed(&mut r);
        assert_eq!(group(r.t.totals(), false), (0, 0, 0, 0, 0), "{records}");
        assert_eq!(group(r.t.totals(), true), (1, 1, 0, 0, 0), "{records}");
        // tcp_fin_timeout runs out: the orphan goes, never having been in TIME_WAIT.
        r.wait(60_000 * MS)
            .other(kind::TW_CANCEL, true, FIN_WAIT2)
            .other(kind::TW_EXPIRE, true, FIN_WAIT2);
        assert_eq!(group(r.t.totals(), false), (0, 0, 0, 0, 0), "{records}");
        assert_eq!(group(r.t.totals(), true), (1, 0, 1, 0, 0), "{records}");

        // The server's FIN arrives late: the orphan turns into a TIME_WAIT socket (the
        // kernel re-arms its timer), and that one is open at the end.
        let mut r = Replay {
            records,
            ..Replay::new()
        };
        half_closed(&mut r);
        let at = r.now + MS;
        for kind in [kind::TW_CANCEL, kind::TW_START] {
            let e = tw_event(at, kind, TW_C, TIME_WAIT, CPORT, SPORT);
            r.t.event(&e);
        }
        r.now = at;
        r.s(CLOSE_WAIT, LAST_ACK).s(LAST_ACK, CLOSE);
        assert_eq!(group(r.t.totals(), true), (1, 0, 0, 1, 0), "{records}");
        assert_eq!(group(r.t.totals(), false), (1, 1, 0, 0, 0), "{records}");
        let rec = only(r.finish());
        assert_eq!(rec.closer, Closer::Client);
        assert_eq!(group(r.t.totals(), false), (1, 0, 0, 0, 1), "{records}");
    }
}

/// The client's close queues its FIN behind unsent data (`Event::unsent` at FIN_WAIT1): the FIN
/// goes on the wire at a moment no event shows. The closer is whoever first put a FIN or an RST
/// there, as far as the events tell, else unknown.
#[test]
fn a_queued_fin_is_not_a_fin_sent() {
    let fin_queued = |r: &mut Replay| {
        r.open().send(Event {
            kind: kind::SET_STATE,
            addr: C,
            old_state: ESTABLISHED,
            new_state: FIN_WAIT1,
            sport: CPORT,
            dport: SPORT,
            saddr: LOOPBACK,
            daddr: LOOPBACK,
            unsent: 1,
            ..Event::default()
        });
    };
    let rst_received = |r: &mut Replay, unsent: u8| {
        r.send(Event {
            kind: kind::RST_RECEIVED,
            addr: C,
            sport: CPORT,
            dport: SPORT,
            saddr: LOOPBACK,
            daddr: LOOPBACK,
            unsent,
            ..Event::default()
        })
        .c(FIN_WAIT1, CLOSE);
    };
    for records in [true, false] {
        let replay = || Replay {
            records,
            ..Replay::new()
        };
        // The server drops the unread body with an RST before the FIN could go: server-reset.
        let mut r = replay();
        fin_queued(&mut r);
        r.s(ESTABLISHED, CLOSE).other(kind::RST_SENT, false, 0);
        rst_received(&mut r, 1);
        assert_eq!(only(r.finish()).closer, Closer::ServerReset, "{records}");

        // The FIN had gone out when the server's RST came, sent after the FIN was queued: which
        // was first on the wire cannot be told.
        let mut r = replay();
        fin_queued(&mut r);
        r.s(ESTABLISHED, CLOSE).other(kind::RST_SENT, false, 0);
        rst_received(&mut r, 0);
        assert_eq!(only(r.finish()).closer, Closer::Unknown, "{records}");

        // The server got the FIN before doing anything: the client closed.
        let mut r = replay();
        fin_queued(&mut r);
        r.s(ESTABLISHED, CLOSE_WAIT)
            .c(FIN_WAIT1, FIN_WAIT2)
            .other(kind::TW_START, true, FIN_WAIT2)
            .c(FIN_WAIT2, CLOSE)
            .s(CLOSE_WAIT, LAST_ACK)
            .s(LAST_ACK, CLOSE);
        assert_eq!(only(r.finish()).closer, Closer::Client, "{records}");

        // The same with the FIN sent at once (nothing unsent): the client's FIN was first.
        let mut r = replay();
        r.open().c(ESTABLISHED, FIN_WAIT1);
        r.s(ESTABLISHED, CLOSE).other(kind::RST_SENT, false, 0);
        rst_received(&mut r, 0);
        assert_eq!(only(r.finish()).closer, Closer::Client, "{records}");
    }
}

/// Two namespaces, each with its own 127.0.0.1, make connections on the same 4-tuple at the
/// same time (`trace --all-netns` beside two runs): each namespace's timewait sockets are its
/// own. Server-close, so each server end leaves an orphan (FIN_WAIT2) that turns TIME_WAIT
/// when its client's FIN comes, with a silent re-arm of its timer.
#[test]
fn the_same_tuple_in_two_namespaces_is_two_timewait_sockets() {
    let mut r = Replay::new();
    let orphan = |r: &mut Replay, netns| {
        r.in_netns(netns)
            .open()
            .s(ESTABLISHED, FIN_WAIT1)
            .c(ESTABLISHED, CLOSE_WAIT)
            .s(FIN_WAIT1, FIN_WAIT2)
            .other(kind::TW_START, false, FIN_WAIT2)
            .s(FIN_WAIT2, CLOSE);
    };
    let client_closes = |r: &mut Replay, netns| {
        r.in_netns(netns).c(CLOSE_WAIT, LAST_ACK).c(LAST_ACK, CLOSE);
    };
    orphan(&mut r, 1);
    orphan(&mut r, 2);
    client_closes(&mut r, 1);
    client_closes(&mut r, 2);
    r.wait(2_000 * MS);
    let totals = r.t.totals().clone();
    let server = |g: &BTreeMap<Side, TwSideStats>| {
        let s = g.get(&Side::Server).cloned().unwrap_or_default();
        (s.entered, s.current, s.killed, s.reused, s.to_time_wait)
    };
    assert_eq!(server(&totals.fin_wait2), (2, 0, 0, 0, 2));
    assert_eq!(server(&totals.time_wait), (2, 2, 0, 0, 0));
    let records = r.finish();
    assert_eq!(records.len(), 2, "{records:#?}");
    for rec in &records {
        assert_eq!(rec.closer, Closer::Server);
        let ends: Vec<_> = rec
            .time_wait
            .iter()
            .map(|t| (t.side, t.substate, t.end))
            .collect();
        assert_eq!(
            ends,
            [(Side::Server, Substate::TimeWait, TwEnd::Open)],
            "{rec:#?}"
        );
    }
}

fn task(pid: u32, comm: &str, cgroup_id: u64) -> Owner {
    let mut owner = Owner {
        pid,
        cgroup_id,
        ..Owner::default()
    };
    owner.comm[..comm.len()].copy_from_slice(comm.as_bytes());
    owner
}

/// Each end is named by its own process: the client's from its connect() and close(), the
/// server's from its close().
#[test]
fn each_end_is_named_by_the_process_of_its_own_steps() {
    let (curl, nginx) = (task(10, "curl", 7), task(20, "nginx", 8));
    for by_client in [true, false] {
        let mut r = Replay::new();
        r.owners = Some((curl, nginx));
        r.first_close(by_client);
        let rec = only(r.finish());
        assert_eq!(
            (rec.client_owner, rec.server_owner),
            (Some(curl), Some(nginx))
        );
    }
    // An abort: the close() that sends the RST names its process.
    let mut r = Replay::new();
    r.owners = Some((curl, nginx));
    r.abort(true);
    let rec = only(r.finish());
    assert_eq!((rec.client_owner, rec.server_owner), (Some(curl), None));
}

/// Without owners (a run's probe, or softirq steps only) nothing is named: never a guess.
#[test]
fn an_end_seen_only_in_softirq_steps_has_no_owner() {
    let mut r = Replay::new();
    r.client_first_close();
    let rec = only(r.finish());
    assert_eq!((rec.client_owner, rec.server_owner), (None, None));
}

/// `--by process`: the timewait sockets each process holds, made, and its connections' closers;
/// a socket that ends leaves its holder's count.
#[test]
fn the_owner_table_counts_each_process_for_its_own_ends() {
    use by::{By, Order, RowKey};
    let (curl, nginx) = (task(10, "curl", 7), task(20, "nginx", 8));
    let mut r = Replay::new();
    r.t = Tracker::new(true).by(By::Process, 16);
    r.owners = Some((curl, nginx));
    r.client_first_close();
    let key = |o: Owner| RowKey::Process {
        pid: o.pid,
        comm: o.comm,
    };
    let table = r.t.table().unwrap();
    let (rows, other) = table.top(5, Order::Holding);
    assert_eq!(rows[0].0, key(curl));
    assert_eq!((rows[0].1.holding, rows[0].1.entered), (1, 1));
    assert_eq!(rows[0].1.closer[&Closer::Client], 1);
    assert_eq!(rows[1].0, key(nginx));
    assert_eq!((rows[1].1.holding, rows[1].1.connections), (0, 1));
    assert_eq!(other, by::Row::default());
    r.wait(60_000 * MS)
        .other(kind::TW_CANCEL, true, TIME_WAIT)
        .other(kind::TW_EXPIRE, true, TIME_WAIT);
    let sum = r.t.table().unwrap().sum();
    assert_eq!((sum.holding, sum.entered, sum.connections), (0, 1, 2));
}
