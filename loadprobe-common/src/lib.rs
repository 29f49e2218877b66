//! Types shared by the eBPF programs and userspace.
//!
//! Everything here is `#[repr(C)]` with fixed-width fields and explicit padding, so that both
//! sides agree on the layout byte for byte. Userspace implements [`aya::Pod`] for them behind the
//! `user` feature.
#![no_std]

/// What an [`Event`] reports.
pub mod kind {
    /// `sock:inet_sock_set_state` on a TCP socket: `old_state` -> `new_state`.
    pub const SET_STATE: u8 = 1;
    /// `timer:timer_start` of a timewait socket's timer: the socket was created (or rescheduled).
    pub const TW_START: u8 = 2;
    /// `timer:timer_cancel` of a timewait socket's timer: expiry, reschedule or early kill.
    pub const TW_CANCEL: u8 = 3;
    /// `timer:timer_expire_entry` of a timewait socket's timer: natural expiry.
    pub const TW_EXPIRE: u8 = 4;
    /// `tcp:tcp_send_reset` from a full socket: this end aborted with an RST.
    pub const RST_SENT: u8 = 5;
    /// `tcp:tcp_receive_reset` on a full socket: the peer aborted with an RST.
    pub const RST_RECEIVED: u8 = 6;
}

/// TCP states as the kernel numbers them (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    /// A request socket (SYN received, no full socket yet).
    pub const NEW_SYN_RECV: u8 = 12;
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// One event from the kernel, as it travels through the ring buffer.
///
/// A single fixed-size shape for every kind keeps the ring buffer simple and the decoder one
/// function. Ports are in host byte order; addresses hold 4 bytes (IPv4) or 16 (IPv6) according
/// to `family`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, comparable with userspace's clock.
    pub ts_ns: u64,
    /// Kernel address of the full socket (`SET_STATE`, `RST_*`) or of the timewait socket (`TW_*`).
    pub addr: u64,
    /// Network namespace inode of the socket.
    pub netns: u32,
    /// Local and remote port, host byte order.
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// One of [`kind`].
    pub kind: u8,
    /// `SET_STATE`: old state. Timewait events: the substate (`FIN_WAIT2` or `TIME_WAIT`).
    pub old_state: u8,
    /// `SET_STATE`: new state.
    pub new_state: u8,
    /// `SET_STATE` to `FIN_WAIT1` and `RST_RECEIVED`: 1 if the socket had queued bytes not yet
    /// transmitted (`write_seq != snd_nxt`), else 0. At `FIN_WAIT1` (set before the FIN is
    /// queued) it means the FIN waits behind unsent data; when an RST arrives, that what was
    /// queued, the FIN included, had not all gone out. 0 for every other event.
    pub unsent: u8,
    pub _pad: [u8; 2],
}

/// The task a transition ran in, sent after its [`Event`] (one [`OwnedEvent`]) when the
/// programs run for connection records ([`Config::records`]) and the transition is one only the
/// socket's own process makes: `connect()` (`CLOSE->SYN_SENT`), `close()` or `shutdown()`
/// (`->FIN_WAIT1`, `CLOSE_WAIT->LAST_ACK`), and a `->CLOSE` made with the socket locked by its
/// process (an abortive close from the syscall). A transition in softirq context runs in
/// whatever task it interrupted, so it never carries one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Owner {
    /// `bpf_get_current_cgroup_id()`: the task's cgroup v2 id, the inode of its directory
    /// under the cgroup2 mount.
    pub cgroup_id: u64,
    /// The process (tgid) as loadprobe's own PID namespace numbers it ([`Config::pidns_dev`]);
    /// 0 when the task is outside that namespace.
    pub pid: u32,
    pub _pad: u32,
    /// `bpf_get_current_comm()`: the thread's command name, NUL-padded.
    pub comm: [u8; 16],
}

/// An [`Event`] with the [`Owner`] it was made by: the ring holds records of either size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnedEvent {
    pub event: Event,
    pub owner: Owner,
}

/// Byte offsets the programs need, computed by userspace from the running kernel's BTF at load
/// time: nothing about kernel layouts is compiled into the programs.
///
/// Each `bpf_probe_read_kernel` costs about as much as the rest of a program, so fields that sit
/// side by side are read together: userspace checks in BTF that they do (see `probe::btf`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    // `struct sock_common`, which also starts `struct inet_timewait_sock`.
    /// `skc_daddr`, followed by `skc_rcv_saddr`: the IPv4 pair, read as 8 bytes.
    pub skc_addrpair: u16,
    /// `skc_dport` (network order), followed by `skc_num` and `skc_family`: read as 6 bytes.
    pub skc_portpair: u16,
    pub skc_state: u16,
    pub skc_net: u16,
    pub skc_v6_daddr: u16,
    pub skc_v6_rcv_saddr: u16,
    /// `struct net` -> `ns.inum`.
    pub net_inum: u16,
    /// `struct sock` (full sockets only).
    pub sk_protocol: u16,
    /// `struct inet_sock` (full sockets only): the local port, network byte order. A full
    /// socket's `skc_num` is already 0 when it moves to CLOSE (the port is released first).
    pub inet_sport: u16,
    /// `struct inet_timewait_sock`.
    pub tw_substate: u16,
    pub tw_timer: u16,
    /// `struct timer_list`.
    pub timer_function: u16,
    /// `struct tcp_sock`: the next sequence number to queue and the next to send.
    pub tcp_write_seq: u16,
    pub tcp_snd_nxt: u16,
    /// `struct sock` -> `sk_lock.owned`: set while a process holds the socket's lock. A state
    /// change made then runs in that process (softirq work on a locked socket waits in its
    /// backlog until the owner releases it, and runs in the owner then).
    pub sk_lock_owned: u16,
}

/// The programs, by where they count their failed kernel reads (slots of the `READ_ERRORS` map).
/// Both `inet_sock_set_state` programs share a slot: they run the same code.
pub mod program {
    pub const SET_STATE: u32 = 0;
    pub const SEND_RESET: u32 = 1;
    pub const RECEIVE_RESET: u32 = 2;
    pub const TIMER_START: u32 = 3;
    pub const TIMER_CANCEL: u32 = 4;
    pub const TIMER_EXPIRE: u32 = 5;
    /// The number of slots.
    pub const COUNT: u32 = 6;
    /// The tracepoint of each slot, to name it in a warning.
    pub const TRACEPOINTS: [&str; COUNT as usize] = [
        "inet_sock_set_state",
        "tcp_send_reset",
        "tcp_receive_reset",
        "timer_start",
        "timer_cancel",
        "timer_expire_entry",
    ];
}

/// Ports the programs compare inline; more go to the `PORTS` hash map (a lookup per port of
/// every event, which costs more than the comparisons).
pub const INLINE_PORTS: usize = 8;

/// How the programs filter on ports ([`Config::port_filter`]).
pub mod port_filter {
    /// Every port.
    pub const NONE: u16 = 0;
    /// Those in [`super::Config::ports`] (0 marks unused slots).
    pub const INLINE: u16 = 1;
    /// Those in the `PORTS` map.
    pub const MAP: u16 = 2;
}

/// How far the programs go ([`Config::floor`]). A measurement aid, not a mode: the two floors
/// are what a tracepoint-only probe costs before it does its own work (`cargo xtask bench
/// --floor` measures them against the probe and against no probe).
pub mod floor {
    /// The whole way: the probe.
    pub const NONE: u16 = 0;
    /// Every program returns at once: what the tracepoint hits cost by themselves.
    pub const ATTACHED: u16 = 1;
    /// The programs read each socket and filter it (namespace, ports, protocol; the timer
    /// programs find the timewait timers by their callback), then send nothing.
    pub const FILTERED: u16 = 2;
}

/// Run-time configuration of the programs, patched into the object before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Address of `tw_timer_handler` (from /proc/kallsyms); 0 turns timewait tracing off.
    pub tw_timer_handler: u64,
    /// Only sockets in this network namespace (inode); 0 = all namespaces.
    pub netns: u32,
    /// Only connections this process (tgid) opened, and their peers' ends on this host; 0 =
    /// every connection. See [`Endpoint`].
    pub owner: u32,
    /// One of [`port_filter`].
    pub port_filter: u16,
    /// 1: send every step a connection record needs, with the [`Owner`] of those its process
    /// makes ([`OwnedEvent`]). 0: for totals (a run), no owners, and leave out four steps whose
    /// facts a later event carries too: the client's `CLOSE->SYN_SENT` and the server's
    /// `SYN_RECV->ESTABLISHED` only time the handshake (the ends are still known from
    /// `SYN_SENT->ESTABLISHED` and `LISTEN->SYN_RECV`), and an end's
    /// `ESTABLISHED->CLOSE_WAIT` and `CLOSE_WAIT->LAST_ACK` are implied by its
    /// `CLOSE_WAIT|LAST_ACK->CLOSE`.
    pub records: u16,
    /// The ports of interest when `port_filter` is [`port_filter::INLINE`].
    pub ports: [u16; INLINE_PORTS],
    pub offsets: Offsets,
    /// One of [`floor`]; [`floor::NONE`] but to measure what the probe costs.
    pub floor: u16,
    pub _pad: [u16; 2],
    /// loadprobe's own PID namespace (device and inode of its nsfs file), which `owner` and
    /// [`Owner::pid`] are process ids of: inside a container a process's id is not the
    /// kernel's global one, so the programs ask for the current task's id in this namespace.
    /// 0: ids are global ones.
    pub pidns_dev: u64,
    pub pidns_ino: u64,
}

/// A client end of one of [`Config::owner`]'s connections: its address (IPv4 in the first
/// word, IPv4-mapped IPv6 as IPv4), its port and the server's port, host byte order. The
/// programs find the owner's client sockets by address while they connect, then every end of
/// the connection by this: the client's full and timewait sockets as their local end, the
/// server's (on this host) as their remote end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: [u32; 4],
    pub port: u16,
    pub server_port: u16,
}

/// How many client ends [`Config::owner`]'s filter remembers at once (least recently used
/// first out): a port's end stays while its TIME_WAIT lasts, so this is ports times source
/// addresses.
pub const MAX_OWNED_ENDPOINTS: u32 = 262_144;

/// Number of ports the in-kernel port filter holds.
pub const MAX_PORTS: u32 = 1024;

/// Size of the `EVENTS` ring buffer: 8 MiB hold about 116k events (72 bytes with the ring's
/// header; an [`OwnedEvent`] takes 104, at most two of a connection's events are one). Userspace creates one of this size in `doctor` to show whether the kernel allows it.
pub const EVENTS_RING_BYTES: u32 = 8 << 20;

/// The layouts both sides rely on, checked at compile time on every target that builds this
/// crate, the BPF one included: a reordered or resized field (even one that keeps the size)
/// fails the build instead of being decoded wrongly.
mod layout {
    use super::{Config, Endpoint, Event, INLINE_PORTS, Offsets, OwnedEvent, Owner};
    use core::mem::{align_of, offset_of, size_of};

    const _: () = {
        assert!(size_of::<Event>() == 64 && align_of::<Event>() == 8);
        assert!(offset_of!(Event, ts_ns) == 0);
        assert!(offset_of!(Event, addr) == 8);
        assert!(offset_of!(Event, netns) == 16);
        assert!(offset_of!(Event, sport) == 20);
        assert!(offset_of!(Event, dport) == 22);
        assert!(offset_of!(Event, saddr) == 24);
        assert!(offset_of!(Event, daddr) == 40);
        assert!(offset_of!(Event, family) == 56);
        assert!(offset_of!(Event, kind) == 58);
        assert!(offset_of!(Event, old_state) == 59);
        assert!(offset_of!(Event, new_state) == 60);
        assert!(offset_of!(Event, unsent) == 61);
        assert!(offset_of!(Event, _pad) == 62);

        assert!(size_of::<Owner>() == 32 && align_of::<Owner>() == 8);
        assert!(offset_of!(Owner, cgroup_id) == 0);
        assert!(offset_of!(Owner, pid) == 8);
        assert!(offset_of!(Owner, _pad) == 12);
        assert!(offset_of!(Owner, comm) == 16);
        assert!(size_of::<OwnedEvent>() == 96 && align_of::<OwnedEvent>() == 8);
        assert!(offset_of!(OwnedEvent, event) == 0);
        assert!(offset_of!(OwnedEvent, owner) == 64);

        // Fifteen `u16`s in declaration order.
        assert!(size_of::<Offsets>() == 30 && align_of::<Offsets>() == 2);
        assert!(offset_of!(Offsets, skc_addrpair) == 0);
        assert!(offset_of!(Offsets, skc_portpair) == 2);
        assert!(offset_of!(Offsets, skc_state) == 4);
        assert!(offset_of!(Offsets, skc_net) == 6);
        assert!(offset_of!(Offsets, skc_v6_daddr) == 8);
        assert!(offset_of!(Offsets, skc_v6_rcv_saddr) == 10);
        assert!(offset_of!(Offsets, net_inum) == 12);
        assert!(offset_of!(Offsets, sk_protocol) == 14);
        assert!(offset_of!(Offsets, inet_sport) == 16);
        assert!(offset_of!(Offsets, tw_substate) == 18);
        assert!(offset_of!(Offsets, tw_timer) == 20);
        assert!(offset_of!(Offsets, timer_function) == 22);
        assert!(offset_of!(Offsets, tcp_write_seq) == 24);
        assert!(offset_of!(Offsets, tcp_snd_nxt) == 26);
        assert!(offset_of!(Offsets, sk_lock_owned) == 28);

        assert!(size_of::<Config>() == 88 && align_of::<Config>() == 8);
        assert!(offset_of!(Config, tw_timer_handler) == 0);
        assert!(offset_of!(Config, netns) == 8);
        assert!(offset_of!(Config, owner) == 12);
        assert!(offset_of!(Config, port_filter) == 16);
        assert!(offset_of!(Config, records) == 18);
        assert!(offset_of!(Config, ports) == 20);
        assert!(offset_of!(Config, offsets) == 20 + 2 * INLINE_PORTS);
        assert!(offset_of!(Config, floor) == 66);
        assert!(offset_of!(Config, _pad) == 68);
        assert!(offset_of!(Config, pidns_dev) == 72);
        assert!(offset_of!(Config, pidns_ino) == 80);

        assert!(size_of::<Endpoint>() == 20 && align_of::<Endpoint>() == 4);
        assert!(offset_of!(Endpoint, addr) == 0);
        assert!(offset_of!(Endpoint, port) == 16);
        assert!(offset_of!(Endpoint, server_port) == 18);
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding; any byte pattern is valid.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Offsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Endpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Owner {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OwnedEvent {}
}
