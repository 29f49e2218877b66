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
    pub _pad: [u8; 3],
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
    /// One of [`port_filter`].
    pub port_filter: u16,
    /// 1: send every step a connection record needs. 0: leave out three steps whose facts a
    /// later event carries too, for totals (a run): the client's `CLOSE->SYN_SENT` and the
    /// server's `SYN_RECV->ESTABLISHED` only time the handshake (the ends are still known from
    /// `SYN_SENT->ESTABLISHED` and `LISTEN->SYN_RECV`), and an end's
    /// `ESTABLISHED->CLOSE_WAIT` is implied by its `CLOSE_WAIT|LAST_ACK->CLOSE`.
    pub records: u16,
    /// The ports of interest when `port_filter` is [`port_filter::INLINE`].
    pub ports: [u16; INLINE_PORTS],
    pub offsets: Offsets,
    /// One of [`floor`]; [`floor::NONE`] but to measure what the probe costs.
    pub floor: u16,
    pub _pad: [u16; 3],
}

/// Number of ports the in-kernel port filter holds.
pub const MAX_PORTS: u32 = 1024;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding; any byte pattern is valid.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::Config {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<Event>(), 64);
        assert_eq!(core::mem::size_of::<Offsets>(), 24);
        assert_eq!(core::mem::size_of::<Config>(), 64);
    }
}
