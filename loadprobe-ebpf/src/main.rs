//! loadprobe's kernel side: raw tracepoints only (kprobes and fentry are not available on the
//! kernels this tool targets).
//!
//! * `inet_sock_set_state` shows every state change of a full TCP socket, which is how we know
//!   which end sent the first FIN.
//! * `tcp_send_reset` / `tcp_receive_reset` say which end aborted.
//! * `timer_start|timer_cancel|timer_expire_entry`, filtered to the timewait timer
//!   (`tw_timer_handler`), show the life of each TIME_WAIT socket, which never appears on
//!   `inet_sock_set_state`.
//!
//! Why raw tracepoints and not the classic `tracepoint/` kind: the kernel runs a classic
//! tracepoint program only when no other BPF program of that kind is running on the CPU
//! (`bpf_prog_active`), so a softirq's `timer_start` arriving while one of our programs runs in
//! process context was silently skipped (a TIME_WAIT socket the probe never saw). A raw
//! tracepoint program is skipped only if the same program is already running on that CPU.
//! Raw tracepoints are also cheaper: the kernel does not fill a trace record first. The price is
//! that the arguments are the tracepoint's C arguments (`TP_PROTO`), so the programs read the
//! socket themselves; userspace checks those prototypes in BTF before loading.
//!
//! Filtering (network namespace, ports) happens here so that only interesting events cross the
//! ring buffer. Every kernel offset comes from userspace (`CONFIG`), computed from BTF.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, generated},
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use loadprobe_common::{
    AF_INET, AF_INET6, Config, Event, INLINE_PORTS, MAX_PORTS, floor, kind, port_filter, tcp_state,
};

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: u8 = tcp_state::ESTABLISHED;
const TCP_SYN_SENT: u8 = tcp_state::SYN_SENT;
const TCP_SYN_RECV: u8 = tcp_state::SYN_RECV;
const TCP_CLOSE: u8 = tcp_state::CLOSE;
const TCP_FIN_WAIT1: u8 = tcp_state::FIN_WAIT1;
const TCP_FIN_WAIT2: u8 = tcp_state::FIN_WAIT2;
const TCP_CLOSE_WAIT: u8 = tcp_state::CLOSE_WAIT;
const TCP_LAST_ACK: u8 = tcp_state::LAST_ACK;
const TCP_TIME_WAIT: u8 = tcp_state::TIME_WAIT;
const TCP_NEW_SYN_RECV: u8 = tcp_state::NEW_SYN_RECV;

/// Set by userspace at load time (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    tw_timer_handler: 0,
    netns: 0,
    port_filter: port_filter::NONE,
    records: 1,
    ports: [0; INLINE_PORTS],
    offsets: loadprobe_common::Offsets {
        skc_addrpair: 0,
        skc_portpair: 0,
        skc_state: 0,
        skc_net: 0,
        skc_v6_daddr: 0,
        skc_v6_rcv_saddr: 0,
        net_inum: 0,
        sk_protocol: 0,
        inet_sport: 0,
        tw_substate: 0,
        tw_timer: 0,
        timer_function: 0,
    },
    floor: floor::NONE,
    _pad: [0; 3],
};

/// One field of [`CONFIG`], read on its own. Volatile: the value is patched into the object
/// after compilation, so the compiler must not fold the default in. (The verifier does not fold
/// it either: `bpftool prog dump xlated` shows each read as a load from the map.)
/// Reading fields one by one, where they are used, keeps the programs from copying the whole
/// configuration onto the stack first.
macro_rules! config {
    ($($field:ident).+) => {
        unsafe { core::ptr::read_volatile(&raw const CONFIG.$($field).+) }
    };
}

/// Events to userspace: 8 MiB hold about 116k events (72 bytes with the ring's header), a
/// second of the heaviest churn this tool has seen, while the reader drains every 20 ms (it is
/// never woken, see [`socket_event`]).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Events dropped because the ring buffer was full (per CPU, summed by userspace).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Ports of interest when `CONFIG.port_filter` is `MAP` (more than fit in `CONFIG.ports`): a
/// connection matches if either end's port is here.
#[map]
static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PORTS, 0);

/// The `struct net` of the namespace in `CONFIG.netns`, once a socket has shown it: comparing
/// the pointer saves reading the namespace's inode for every event. That namespace outlives
/// the probe (the probe's own process lives in it), so its address cannot be reused meanwhile.
#[map]
static NET: Array<u64> = Array::with_max_entries(1, 0);

/// [`floor::ATTACHED`]: return before any work. What the probe pays for the check: one load
/// and one compare per hit.
#[inline(always)]
fn attached_floor() -> bool {
    config!(floor) == floor::ATTACHED
}

#[inline(always)]
fn read<T>(addr: u64) -> Result<T, i32> {
    unsafe { bpf_probe_read_kernel(addr as *const T) }
}

/// Network namespace inode of a socket (full or timewait: both start with `sock_common`), or
/// `None` when it is not the namespace the probe is confined to.
#[inline(always)]
fn netns_of(sk: u64) -> Result<Option<u32>, i32> {
    let want = config!(netns);
    let net: u64 = read(sk + config!(offsets.skc_net) as u64)?;
    let known = NET.get_ptr_mut(0);
    if want != 0
        && let Some(known) = known
        && unsafe { *known } == net
    {
        return Ok(Some(want));
    }
    let inum: u32 = read(net + config!(offsets.net_inum) as u64)?;
    if want == 0 {
        return Ok(Some(inum));
    }
    if inum != want {
        return Ok(None);
    }
    if let Some(known) = known {
        unsafe { *known = net };
    }
    Ok(Some(inum))
}

#[inline(always)]
fn wanted_ports(sport: u16, dport: u16) -> bool {
    match config!(port_filter) {
        port_filter::NONE => true,
        port_filter::INLINE => config!(ports)
            .iter()
            .any(|&p| p != 0 && (p == sport || p == dport)),
        _ => unsafe { PORTS.get(sport).is_some() || PORTS.get(dport).is_some() },
    }
}

/// Which kind of socket an address points to: both start with `struct sock_common`, but only a
/// full socket still knows its local port when it moves to CLOSE (in `inet_sport`).
#[derive(Clone, Copy)]
enum Sock {
    Full,
    Timewait,
}

/// Sends an event for the socket at `sk` unless it is outside the configured namespace and
/// ports.
///
/// The event is written straight into the ring buffer, never built on the stack and copied:
/// LLVM made the zeroing and the copy calls to byte-loop `memset`/`memcpy`, which in profiles
/// cost about as much as all the kernel reads together. The reader is never woken:
/// waking it per event cost a context switch (and an IPI) per event, which under churn halved
/// the load a run could drive; it drains on a timer instead (`Probe::DRAIN_EVERY`), far inside
/// what the ring holds.
#[inline(always)]
fn socket_event(sk: u64, sock: Sock, kind: u8, old_state: u8, new_state: u8) -> Result<(), i32> {
    let Some(netns) = netns_of(sk)? else {
        return Ok(());
    };
    // skc_dport (network order), skc_num, skc_family.
    let ports: [u8; 6] = read(sk + config!(offsets.skc_portpair) as u64)?;
    let dport = u16::from_be_bytes([ports[0], ports[1]]);
    let sport = match sock {
        Sock::Full => u16::from_be(read(sk + config!(offsets.inet_sport) as u64)?),
        Sock::Timewait => u16::from_ne_bytes([ports[2], ports[3]]),
    };
    if !wanted_ports(sport, dport) {
        return Ok(());
    }
    if config!(floor) == floor::FILTERED {
        return Ok(());
    }
    let family = u16::from_ne_bytes([ports[4], ports[5]]);
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            unsafe { *lost += 1 };
        }
        return Ok(());
    };
    let e = entry.as_mut_ptr();
    if let Err(err) = write_addresses(e, sk, family) {
        entry.discard(BPF_RB_NO_WAKEUP as u64);
        return Err(err);
    }
    unsafe {
        (*e).ts_ns = bpf_ktime_get_ns();
        (*e).addr = sk;
        (*e).netns = netns;
        (*e).sport = sport;
        (*e).dport = dport;
        (*e).family = family;
        // Volatile: LLVM merges these byte stores, mostly zeros, into a call to a byte-loop
        // memset.
        (&raw mut (*e).kind).write_volatile(kind);
        (&raw mut (*e).old_state).write_volatile(old_state);
        (&raw mut (*e).new_state).write_volatile(new_state);
        let pad = (&raw mut (*e)._pad).cast::<u8>();
        for i in 0..3 {
            pad.add(i).write_volatile(0);
        }
    }
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    Ok(())
}

/// Reads the socket's addresses straight into the event: 16 bytes each for IPv6, the first 4
/// for IPv4 (the rest zero).
#[inline(always)]
fn write_addresses(e: *mut Event, sk: u64, family: u16) -> Result<(), i32> {
    let saddr = unsafe { &raw mut (*e).saddr }.cast::<u8>();
    let daddr = unsafe { &raw mut (*e).daddr }.cast::<u8>();
    if family == AF_INET6 {
        read_into(saddr, 16, sk + config!(offsets.skc_v6_rcv_saddr) as u64)?;
        return read_into(daddr, 16, sk + config!(offsets.skc_v6_daddr) as u64);
    }
    // skc_daddr, skc_rcv_saddr; no addresses for a family this tool does not know.
    let pair: [u32; 2] = if family == AF_INET {
        read(sk + config!(offsets.skc_addrpair) as u64)?
    } else {
        [0, 0]
    };
    unsafe {
        saddr.cast::<[u32; 4]>().write([pair[1], 0, 0, 0]);
        daddr.cast::<[u32; 4]>().write([pair[0], 0, 0, 0]);
    }
    Ok(())
}

/// Reads `len` bytes of kernel memory at `src` into `dst` (here: a ring buffer entry).
#[inline(always)]
fn read_into(dst: *mut u8, len: u32, src: u64) -> Result<(), i32> {
    let rc = unsafe { generated::bpf_probe_read_kernel(dst.cast(), len, src as *const _) };
    if rc == 0 { Ok(()) } else { Err(rc as i32) }
}

// `inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate)`.
//
// The kernel skips a raw tracepoint program that a hit of its own tracepoint interrupts, and
// this one can be interrupted: it often runs for a socket in process context with softirqs
// enabled, and a softirq then changes another socket's state. So two programs are attached, in
// this order, and each hit is handled by exactly one of them:
//
// * `inet_sock_set_state` handles every hit it is run for, then notes the hit (socket and
//   transition) in a per-CPU list of its last few;
// * `inet_sock_set_state_nested` runs right after it for every hit; it finds the hits the first
//   one handled in that list (and takes them out), and handles the others: those the kernel
//   skipped the first one for because they interrupted it.
//
// Only a hit that interrupts both programs at once is lost, and the kernel counts it in the
// second program's recursion misses (`skipped_events`).

/// A hit `inet_sock_set_state` handled that `inet_sock_set_state_nested` has not seen yet:
/// `key` is `sk << 16 | old << 8 | new` (kernel addresses in the direct map have their top 16
/// bits set, so nothing is lost), 0 for a free slot; `run` is the number of the
/// `inet_sock_set_state` run that wrote it.
#[repr(C)]
struct Handled {
    run: u64,
    key: u64,
}

/// Per CPU. At most two hits wait at once (a softirq's, inside a process-context one), but an
/// entry stays behind when the kernel skips `inet_sock_set_state_nested` (a hit interrupting it):
/// entries more than [`HANDLED_STALE_RUNS`] runs old count as free. That is far more state
/// changes than one softirq makes while a process-context hit waits (a network softirq stops
/// after 300 packets), and far fewer than it takes to leave 8 entries behind. Slot 0 holds no
/// entry but the run counter, in `run`.
#[map]
static HANDLED: PerCpuArray<Handled> = PerCpuArray::with_max_entries(HANDLED_SLOTS + 1, 0);
const HANDLED_SLOTS: u32 = 8;
const HANDLED_STALE_RUNS: u64 = 1024;

#[inline(always)]
fn hit_key(ctx: &RawTracePointContext) -> u64 {
    let sk: u64 = ctx.arg(0);
    (sk << 16) | ((ctx.arg::<u64>(1) & 0xff) << 8) | (ctx.arg::<u64>(2) & 0xff)
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    if attached_floor() {
        return 0;
    }
    let _ = try_set_state(&ctx);
    let Some(counter) = HANDLED.get_ptr_mut(0) else {
        return 0;
    };
    let run = unsafe { (*counter).run } + 1;
    unsafe { (*counter).run = run };
    for slot in 1..=HANDLED_SLOTS {
        if let Some(entry) = HANDLED.get_ptr_mut(slot) {
            let (at, key) = unsafe { (&raw mut (*entry).run, &raw mut (*entry).key) };
            if unsafe { *key == 0 || run - *at > HANDLED_STALE_RUNS } {
                // The run first: a matching key then always comes with its own run.
                unsafe {
                    core::ptr::write_volatile(at, run);
                    core::ptr::write_volatile(key, hit_key(&ctx));
                }
                break;
            }
        }
    }
    0
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_nested(ctx: RawTracePointContext) -> i32 {
    if attached_floor() {
        return 0;
    }
    let key = hit_key(&ctx);
    for slot in 1..=HANDLED_SLOTS {
        if let Some(entry) = HANDLED.get_ptr_mut(slot)
            && unsafe { core::ptr::read_volatile(&raw const (*entry).key) } == key
        {
            let at = unsafe { core::ptr::read_volatile(&raw const (*entry).run) };
            unsafe { core::ptr::write_volatile(&raw mut (*entry).key, 0) };
            let run = HANDLED.get(0).map_or(0, |c| c.run);
            if run - at <= HANDLED_STALE_RUNS {
                return 0;
            }
        }
    }
    let _ = try_set_state(&ctx);
    0
}

fn try_set_state(ctx: &RawTracePointContext) -> Result<(), i32> {
    let old = ctx.arg::<u64>(1) as u8;
    let new = ctx.arg::<u64>(2) as u8;
    // Transitions the tracker never needs: self transitions, and the two whose information the
    // following `->CLOSE` carries anyway (its old state). Two events fewer per connection.
    if old == new
        || (old, new) == (TCP_FIN_WAIT1, TCP_FIN_WAIT2)
        || (old, new) == (TCP_CLOSE_WAIT, TCP_LAST_ACK)
    {
        return Ok(());
    }
    if config!(records) == 0
        && matches!(
            (old, new),
            (TCP_CLOSE, TCP_SYN_SENT)
                | (TCP_SYN_RECV, TCP_ESTABLISHED)
                | (TCP_ESTABLISHED, TCP_CLOSE_WAIT)
        )
    {
        return Ok(());
    }
    let sk: u64 = ctx.arg(0);
    if read::<u16>(sk + config!(offsets.sk_protocol) as u64)? != IPPROTO_TCP {
        return Ok(());
    }
    socket_event(sk, Sock::Full, kind::SET_STATE, old, new)
}

/// `tcp_send_reset(const struct sock *sk, const struct sk_buff *skb, enum sk_rst_reason)`.
#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: RawTracePointContext) -> i32 {
    if attached_floor() {
        return 0;
    }
    let _ = reset_event(&ctx, kind::RST_SENT);
    0
}

/// `tcp_receive_reset(struct sock *sk)`.
#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: RawTracePointContext) -> i32 {
    if attached_floor() {
        return 0;
    }
    let _ = reset_event(&ctx, kind::RST_RECEIVED);
    0
}

/// Only the socket address and its tuple: userspace matches it to the socket it already tracks.
/// Resets sent with no socket (a SYN to a closed port), or from a timewait or request socket
/// (`tcp_send_reset` passes those too, and they have no `inet_sock` to read), are of no use here.
fn reset_event(ctx: &RawTracePointContext, kind: u8) -> Result<(), i32> {
    let sk: u64 = ctx.arg(0);
    if sk == 0 {
        return Ok(());
    }
    let state: u8 = read(sk + config!(offsets.skc_state) as u64)?;
    if state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV {
        return Ok(());
    }
    socket_event(sk, Sock::Full, kind, 0, 0)
}

/// Sends an event for the timewait socket that owns `timer`.
#[inline(always)]
fn timewait_event(timer: u64, kind: u8) -> Result<(), i32> {
    let tw = timer - config!(offsets.tw_timer) as u64;
    let substate: u8 = read(tw + config!(offsets.tw_substate) as u64)?;
    socket_event(tw, Sock::Timewait, kind, substate, 0)
}

/// The timer tracepoints fire for every timer in the system: compare the callback first and
/// leave at once for anything that is not a timewait timer. The callback is read from the
/// timer itself (none of the three tracepoints passes it as an argument).
#[inline(always)]
fn timewait_timer(ctx: &RawTracePointContext) -> Option<u64> {
    let handler = config!(tw_timer_handler);
    if handler == 0 {
        return None;
    }
    let timer: u64 = ctx.arg(0);
    let function: u64 = read(timer + config!(offsets.timer_function) as u64).ok()?;
    (function == handler).then_some(timer)
}

/// `timer_start(struct timer_list *timer, unsigned long bucket_expiry)`.
#[raw_tracepoint(tracepoint = "timer_start")]
pub fn timer_start(ctx: RawTracePointContext) -> i32 {
    if attached_floor() {
        return 0;
    }
    if let Some(timer) = timewait_timer(&ctx) {
        let _ = timewait_event(timer, kind::TW_START);
    }
    0
}

/// `timer_cancel(struct timer_list *timer)`: the callback is still set while it is detached.
#[raw_tracepoint(tracepoint = "timer_cancel")]
pub fn timer_cancel(ctx: RawTracePointContext) -> i32 {
    if attached_floor() {
        return 0;
    }
    if let Some(timer) = timewait_timer(&ctx) {
        let _ = timewait_event(timer, kind::TW_CANCEL);
    }
    0
}

/// `timer_expire_entry(struct timer_list *timer, unsigned long baseclk)`.
#[raw_tracepoint(tracepoint = "timer_expire_entry")]
pub fn timer_expire_entry(ctx: RawTracePointContext) -> i32 {
    if attached_floor() {
        return 0;
    }
    if let Some(timer) = timewait_timer(&ctx) {
        let _ = timewait_event(timer, kind::TW_EXPIRE);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
