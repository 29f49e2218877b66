//! loadprobe's kernel side: classic tracepoints only (kprobes and fentry are not available on
//! the kernels this tool targets).
//!
//! * `sock:inet_sock_set_state` shows every state change of a full TCP socket, which is how we
//!   know which end sent the first FIN.
//! * `tcp:tcp_send_reset` / `tcp:tcp_receive_reset` say which end aborted.
//! * `timer:timer_start|timer_cancel|timer_expire_entry`, filtered to the timewait timer
//!   (`tw_timer_handler`), show the life of each TIME_WAIT socket, which never appears on
//!   `inet_sock_set_state`.
//!
//! Filtering (network namespace, ports) happens here so that only interesting events cross the
//! ring buffer. Every kernel offset comes from userspace (`CONFIG`), computed from BTF.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use loadprobe_common::{AF_INET, AF_INET6, Config, Event, MAX_PORTS, kind, tcp_state};

const IPPROTO_TCP: u16 = 6;
const TCP_FIN_WAIT1: i32 = tcp_state::FIN_WAIT1 as i32;
const TCP_FIN_WAIT2: i32 = tcp_state::FIN_WAIT2 as i32;
const TCP_CLOSE_WAIT: i32 = tcp_state::CLOSE_WAIT as i32;
const TCP_LAST_ACK: i32 = tcp_state::LAST_ACK as i32;

/// Set by userspace at load time (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    tw_timer_handler: 0,
    netns: 0,
    filter_ports: 0,
    offsets: loadprobe_common::Offsets {
        skc_daddr: 0,
        skc_rcv_saddr: 0,
        skc_dport: 0,
        skc_num: 0,
        skc_family: 0,
        skc_net: 0,
        skc_v6_daddr: 0,
        skc_v6_rcv_saddr: 0,
        net_inum: 0,
        tw_substate: 0,
        tw_timer: 0,
        timer_function: 0,
        timer_expires: 0,
        sss_skaddr: 0,
        sss_oldstate: 0,
        sss_newstate: 0,
        sss_sport: 0,
        sss_dport: 0,
        sss_family: 0,
        sss_protocol: 0,
        sss_saddr: 0,
        sss_daddr: 0,
        sss_saddr_v6: 0,
        sss_daddr_v6: 0,
        start_timer: 0,
        start_function: 0,
        start_expires: 0,
        start_bucket_expiry: 0,
        start_now: 0,
        cancel_timer: 0,
        expire_timer: 0,
        expire_now: 0,
        expire_function: 0,
        rst_sent_skaddr: 0,
        rst_received_skaddr: 0,
        _pad: 0,
    },
};

/// Events to userspace. 8 MiB holds about 95k events: a second of heavy churn.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Events dropped because the ring buffer was full (per CPU, summed by userspace).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Ports of interest when `CONFIG.filter_ports` is set: a connection matches if either end's
/// port is here.
#[map]
static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PORTS, 0);

#[inline(always)]
fn config() -> Config {
    // Volatile: the value is patched into the object after compilation.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

#[inline(always)]
fn tw_timer_handler() -> u64 {
    unsafe { core::ptr::read_volatile(&CONFIG.tw_timer_handler) }
}

#[inline(always)]
fn read<T>(addr: u64) -> Result<T, i32> {
    unsafe { bpf_probe_read_kernel(addr as *const T) }
}

#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u16) -> Result<T, i32> {
    unsafe { ctx.read_at::<T>(offset as usize) }
}

/// Network namespace inode of a socket (full or timewait: both start with `sock_common`).
#[inline(always)]
fn netns_of(cfg: &Config, sk: u64) -> Result<u32, i32> {
    let net: u64 = read(sk + cfg.offsets.skc_net as u64)?;
    read(net + cfg.offsets.net_inum as u64)
}

#[inline(always)]
fn wanted(cfg: &Config, netns: u32, sport: u16, dport: u16) -> bool {
    if cfg.netns != 0 && cfg.netns != netns {
        return false;
    }
    if cfg.filter_ports == 0 {
        return true;
    }
    unsafe { PORTS.get(sport).is_some() || PORTS.get(dport).is_some() }
}

/// Wake the reader only once this much is waiting. Userspace drains on a short timer anyway;
/// waking it for every event costs a context switch (and an IPI) per event, which under churn
/// halved the load a run could drive. The threshold leaves 7 MiB for bursts.
const WAKEUP_BYTES: u64 = 1 << 20;

#[inline(always)]
fn send(event: &Event) {
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<Event>(event, flags as u64).is_err()
        && let Some(lost) = LOST.get_ptr_mut(0)
    {
        unsafe { *lost += 1 };
    }
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_set_state(&ctx);
    0
}

fn try_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    let cfg = config();
    let o = &cfg.offsets;
    if field::<u16>(ctx, o.sss_protocol)? != IPPROTO_TCP {
        return Ok(());
    }
    let sport: u16 = field(ctx, o.sss_sport)?;
    let dport: u16 = field(ctx, o.sss_dport)?;
    let old: i32 = field(ctx, o.sss_oldstate)?;
    let new: i32 = field(ctx, o.sss_newstate)?;
    // Transitions the tracker never needs: self transitions, and the two whose information the
    // following `->CLOSE` carries anyway (its old state). Two events fewer per connection.
    if old == new
        || (old, new) == (TCP_FIN_WAIT1, TCP_FIN_WAIT2)
        || (old, new) == (TCP_CLOSE_WAIT, TCP_LAST_ACK)
    {
        return Ok(());
    }
    let skaddr: u64 = field(ctx, o.sss_skaddr)?;
    let netns = netns_of(&cfg, skaddr)?;
    if !wanted(&cfg, netns, sport, dport) {
        return Ok(());
    }
    let family: u16 = field(ctx, o.sss_family)?;
    let mut event = Event {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        addr: skaddr,
        netns,
        sport,
        dport,
        family,
        kind: kind::SET_STATE,
        old_state: old as u8,
        new_state: new as u8,
        ..Event::default()
    };
    if family == AF_INET6 {
        event.saddr = field(ctx, o.sss_saddr_v6)?;
        event.daddr = field(ctx, o.sss_daddr_v6)?;
    } else {
        event.saddr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, o.sss_saddr)?);
        event.daddr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, o.sss_daddr)?);
    }
    send(&event);
    Ok(())
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let cfg = config();
    let _ = reset_event(&cfg, &ctx, cfg.offsets.rst_sent_skaddr, kind::RST_SENT);
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let cfg = config();
    let _ = reset_event(
        &cfg,
        &ctx,
        cfg.offsets.rst_received_skaddr,
        kind::RST_RECEIVED,
    );
    0
}

/// Only the socket address and its tuple: userspace matches it to the socket it already tracks.
/// Resets sent with no socket (a SYN to a closed port) or from a timewait socket are of no use
/// here and are dropped by userspace, which does not know their address.
fn reset_event(cfg: &Config, ctx: &TracePointContext, skaddr_at: u16, kind: u8) -> Result<(), i32> {
    let skaddr: u64 = field(ctx, skaddr_at)?;
    if skaddr == 0 {
        return Ok(());
    }
    let mut event = sock_common_event(cfg, skaddr)?;
    if !wanted(cfg, event.netns, event.sport, event.dport) {
        return Ok(());
    }
    event.kind = kind;
    event.ts_ns = unsafe { bpf_ktime_get_ns() };
    send(&event);
    Ok(())
}

/// The 4-tuple, family and namespace of a socket read from its `sock_common`.
#[inline(always)]
fn sock_common_event(cfg: &Config, sk: u64) -> Result<Event, i32> {
    let o = &cfg.offsets;
    let family: u16 = read(sk + o.skc_family as u64)?;
    let mut event = Event {
        addr: sk,
        family,
        netns: netns_of(cfg, sk)?,
        sport: read(sk + o.skc_num as u64)?,
        dport: u16::from_be(read(sk + o.skc_dport as u64)?),
        ..Event::default()
    };
    if family == AF_INET6 {
        event.saddr = read(sk + o.skc_v6_rcv_saddr as u64)?;
        event.daddr = read(sk + o.skc_v6_daddr as u64)?;
    } else if family == AF_INET {
        event.saddr[..4].copy_from_slice(&read::<[u8; 4]>(sk + o.skc_rcv_saddr as u64)?);
        event.daddr[..4].copy_from_slice(&read::<[u8; 4]>(sk + o.skc_daddr as u64)?);
    }
    Ok(event)
}

/// Builds and sends an event for the timewait socket that owns `timer`.
#[inline(always)]
fn timewait_event(
    cfg: &Config,
    timer: u64,
    kind: u8,
    expires: u64,
    bucket_expiry: u64,
    now: u64,
) -> Result<(), i32> {
    let tw = timer - cfg.offsets.tw_timer as u64;
    let mut event = sock_common_event(cfg, tw)?;
    if !wanted(cfg, event.netns, event.sport, event.dport) {
        return Ok(());
    }
    event.ts_ns = unsafe { bpf_ktime_get_ns() };
    event.kind = kind;
    event.old_state = read(tw + cfg.offsets.tw_substate as u64)?;
    event.expires = expires;
    event.bucket_expiry = bucket_expiry;
    event.now = now;
    send(&event);
    Ok(())
}

// The timer tracepoints fire for every timer in the system: compare the callback first and
// leave at once for anything that is not a timewait timer.

#[tracepoint]
pub fn timer_start(ctx: TracePointContext) -> u32 {
    let _ = try_timer_start(&ctx);
    0
}

fn try_timer_start(ctx: &TracePointContext) -> Result<(), i32> {
    let handler = tw_timer_handler();
    // Offsets are read only after the cheap test; `start_function` comes first.
    let function: u64 = field(ctx, unsafe {
        core::ptr::read_volatile(&CONFIG.offsets.start_function)
    })?;
    if handler == 0 || function != handler {
        return Ok(());
    }
    let cfg = config();
    let o = &cfg.offsets;
    timewait_event(
        &cfg,
        field(ctx, o.start_timer)?,
        kind::TW_START,
        field(ctx, o.start_expires)?,
        field(ctx, o.start_bucket_expiry)?,
        field(ctx, o.start_now)?,
    )
}

#[tracepoint]
pub fn timer_cancel(ctx: TracePointContext) -> u32 {
    let _ = try_timer_cancel(&ctx);
    0
}

fn try_timer_cancel(ctx: &TracePointContext) -> Result<(), i32> {
    let handler = tw_timer_handler();
    if handler == 0 {
        return Ok(());
    }
    let cfg = config();
    let timer: u64 = field(ctx, cfg.offsets.cancel_timer)?;
    // The event carries only the timer; its callback is still set while it is being detached.
    let function: u64 = read(timer + cfg.offsets.timer_function as u64)?;
    if function != handler {
        return Ok(());
    }
    let expires: u64 = read(timer + cfg.offsets.timer_expires as u64)?;
    timewait_event(&cfg, timer, kind::TW_CANCEL, expires, 0, 0)
}

#[tracepoint]
pub fn timer_expire_entry(ctx: TracePointContext) -> u32 {
    let _ = try_timer_expire(&ctx);
    0
}

fn try_timer_expire(ctx: &TracePointContext) -> Result<(), i32> {
    let handler = tw_timer_handler();
    let function: u64 = field(ctx, unsafe {
        core::ptr::read_volatile(&CONFIG.offsets.expire_function)
    })?;
    if handler == 0 || function != handler {
        return Ok(());
    }
    let cfg = config();
    let now: u64 = field(ctx, cfg.offsets.expire_now)?;
    timewait_event(
        &cfg,
        field(ctx, cfg.offsets.expire_timer)?,
        kind::TW_EXPIRE,
        0,
        0,
        now,
    )
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
