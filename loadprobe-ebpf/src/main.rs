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
//!
//! The programs exist for the BPF target only; on the host this is an empty program, so that a
//! workspace-wide host build (and the library target `loadprobe` build-depends on) still works.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes, generated,
    },
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use aya_log_ebpf::warn;
use loadprobe_common::{
    AF_INET, AF_INET6, Config, EVENTS_RING_BYTES, Endpoint, Event, INLINE_PORTS,
    MAX_OWNED_ENDPOINTS, MAX_PORTS, OwnedEvent, Owner, floor, kind, port_filter, program,
    tcp_state,
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
    owner: 0,
    pidns_dev: 0,
    pidns_ino: 0,
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
        tcp_write_seq: 0,
        tcp_snd_nxt: 0,
        sk_lock_owned: 0,
    },
    floor: floor::NONE,
    _pad: [0; 2],
};

/// One field of [`CONFIG`], read on its own. Volatile: the value is patched into the object
/// after compilation, so the compiler must not fold the default in. (The verifier does not fold
/// it either: `bpftool prog dump xlated` shows each read as a load from the map.)
/// Reading fields one by one, where they are used, keeps the programs from copying the whole
/// configuration onto the stack first.
macro_rules! config {
    ($($field:ident).+) => {
        // SAFETY: `CONFIG` is a static, so the field is aligned and initialised; the programs
        // never write it (it lives in the read-only `.rodata` map, frozen at load), so no read
        // can race with a write.
        unsafe { core::ptr::read_volatile(&raw const CONFIG.$($field).+) }
    };
}

/// Events to userspace: [`EVENTS_RING_BYTES`] is a second of the heaviest churn this tool has
/// seen, while the reader drains every 20 ms (it is never woken, see [`socket_event`]).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Events dropped because the ring buffer was full (per CPU, summed by userspace).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Kernel reads that failed, per CPU and per program (a [`program`] slot), summed by userspace.
/// A failed read drops the event it was for: an offset from BTF that does not fit the running
/// kernel would otherwise only show as connections with an unknown closer.
#[map]
static READ_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(program::COUNT, 0);

/// Counts a failed read of the program in [`program`] slot `SLOT` (see [`READ_ERRORS`]) and
/// describes it through aya-log. The message costs nothing unless `--probe-log` is given:
/// userspace sets aya-log's level (`AYA_LOG_LEVEL`, read-only data) to off at load, and the
/// verifier removes it; only the copy of the field's name below stays, on this failure path.
#[inline(always)]
fn read_failed<const SLOT: u32>(ctx: &RawTracePointContext, e: ReadError) {
    // A constant: a name chosen at run time would be as unbounded as the field's below.
    let tracepoint = const { program::TRACEPOINTS[SLOT as usize] };
    if let Some(count) = READ_ERRORS.get_ptr_mut(SLOT) {
        // SAFETY: a non-null pointer to this CPU's own aligned `u64` slot. Only a program
        // nested on this CPU could interleave, which at worst loses one count.
        unsafe { *count += 1 };
    }
    // The field's name goes through a bounded copy: handed to aya-log as it is, the verifier
    // cannot bound the length of a name chosen at run time among several.
    let mut name = [0u8; 32];
    // SAFETY: the helper writes at most `name.len()` bytes into `name` and reads the name up to
    // the NUL every `Field` ends with; a read it cannot make fails instead of faulting.
    if let Ok(name) = unsafe { bpf_probe_read_kernel_str_bytes(e.field.0.as_ptr(), &mut name) } {
        warn!(
            ctx,
            "{}: reading the kernel field {} failed (error {}), its event is dropped",
            tracepoint,
            // SAFETY: every `Field` is an ASCII identifier (`stringify!`).
            unsafe { core::str::from_utf8_unchecked(name) },
            e.rc
        );
    }
}

/// Ports of interest when `CONFIG.port_filter` is `MAP` (more than fit in `CONFIG.ports`): a
/// connection matches if either end's port is here.
#[map]
static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PORTS, 0);

/// The `struct net` of the namespace in `CONFIG.netns`, once a socket has shown it: comparing
/// the pointer saves reading the namespace's inode for every event. That namespace outlives
/// the probe (the probe's own process lives in it), so its address cannot be reused meanwhile.
#[map]
static NET: Array<u64> = Array::with_max_entries(1, 0);

/// `CONFIG.owner`'s client sockets while they connect (no port yet, or no `OWNED` entry yet),
/// by kernel address. Each program instance has its own (nothing is pinned), so several
/// probes on one host each keep their own run's connections.
#[map]
static CONNECTING: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65_536, 0);

/// The client ends of `CONFIG.owner`'s connections (see [`Endpoint`]).
#[map]
static OWNED: LruHashMap<Endpoint, u8> = LruHashMap::with_max_entries(MAX_OWNED_ENDPOINTS, 0);

/// [`floor::ATTACHED`]: return before any work. What the probe pays for the check: one load
/// and one compare per hit.
#[inline(always)]
fn attached_floor() -> bool {
    config!(floor) == floor::ATTACHED
}

#[inline(always)]
fn read<T>(addr: u64) -> Result<T, i32> {
    // SAFETY: the program never dereferences `addr`: the helper copies from it and returns an
    // error instead of faulting if it is not readable kernel memory. Every `T` read here is an
    // integer or an array of integers, for which any bytes are a valid value.
    unsafe { bpf_probe_read_kernel(addr as *const T) }
}

/// A kernel field, named as [`loadprobe_common::Offsets`] names its offset, NUL-terminated.
#[derive(Clone, Copy)]
struct Field(&'static str);

/// The [`Field`] named `$field`.
macro_rules! field {
    ($field:ident) => {
        Field(concat!(stringify!($field), "\0"))
    };
}

/// A kernel read that failed: which field, and the helper's error (a negative errno).
#[derive(Clone, Copy)]
struct ReadError {
    field: Field,
    rc: i32,
}

/// Reads the field `$field` (one of [`loadprobe_common::Offsets`]) of the kernel object at
/// `$base`; a failure says which field it was.
macro_rules! read_field {
    ($base:expr, $field:ident) => {
        read($base + config!(offsets.$field) as u64).map_err(|rc| ReadError {
            field: field!($field),
            rc,
        })
    };
}

/// Network namespace inode of a socket (full or timewait: both start with `sock_common`), or
/// `None` when it is not the namespace the probe is confined to.
#[inline(always)]
fn netns_of(sk: u64) -> Result<Option<u32>, ReadError> {
    let want = config!(netns);
    let net: u64 = read_field!(sk, skc_net)?;
    let known = NET.get_ptr_mut(0);
    if want != 0
        && let Some(known) = known
        // SAFETY: `get_ptr_mut` returned a non-null pointer to the map's one aligned `u64`
        // value, which lives as long as the map; such a load cannot tear.
        && unsafe { *known } == net
    {
        return Ok(Some(want));
    }
    let inum: u32 = read_field!(net, net_inum)?;
    if want == 0 {
        return Ok(Some(inum));
    }
    if inum != want {
        return Ok(None);
    }
    if let Some(known) = known {
        // SAFETY: as above; another CPU storing the same namespace's pointer at once is harmless.
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
        // SAFETY: `get` is unsafe because the value it points to may change or be deleted
        // meanwhile; only whether there is one is looked at.
        _ => unsafe { PORTS.get(sport).is_some() || PORTS.get(dport).is_some() },
    }
}

/// Whether an event carries [`Event::unsent`]: only the FIN's and the received RST's need it,
/// and the two reads cost about as much as the rest of the program.
#[derive(Clone, Copy)]
enum Unsent {
    Skip,
    Read,
}

/// Which kind of socket an address points to: both start with `struct sock_common`, but only a
/// full socket still knows its local port when it moves to CLOSE (in `inet_sport`).
#[derive(Clone, Copy)]
enum Sock {
    Full,
    Timewait,
}

/// Whether an event carries the [`Owner`] of its transition (the current task), which only
/// transitions a socket's own process makes do (see [`Owner`]).
#[derive(Clone, Copy)]
enum Capture {
    Skip,
    /// The transition is made by a syscall of the socket's process, always.
    Always,
    /// The transition runs in the socket's process only when that process holds the socket's
    /// lock (`sk_lock.owned`): a `->CLOSE` made by `close()` is, one made by a softirq is not.
    IfLocked,
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
fn socket_event(
    sk: u64,
    sock: Sock,
    kind: u8,
    old_state: u8,
    new_state: u8,
    unsent: Unsent,
    capture: Capture,
) -> Result<(), ReadError> {
    let Some(netns) = netns_of(sk)? else {
        return Ok(());
    };
    // skc_dport (network order), skc_num, skc_family.
    let ports: [u8; 6] = read_field!(sk, skc_portpair)?;
    let dport = u16::from_be_bytes([ports[0], ports[1]]);
    let sport = match sock {
        Sock::Full => u16::from_be(read_field!(sk, inet_sport)?),
        Sock::Timewait => u16::from_ne_bytes([ports[2], ports[3]]),
    };
    if !wanted_ports(sport, dport) {
        return Ok(());
    }
    let family = u16::from_ne_bytes([ports[4], ports[5]]);
    let seen = Seen {
        sk,
        sock,
        sport,
        dport,
        family,
    };
    if config!(owner) != 0 && !owned(&seen, kind, old_state, new_state)? {
        return Ok(());
    }
    if config!(floor) == floor::FILTERED {
        return Ok(());
    }
    let unsent = match unsent {
        Unsent::Skip => 0,
        Unsent::Read => {
            let write_seq: u32 = read_field!(sk, tcp_write_seq)?;
            let snd_nxt: u32 = read_field!(sk, tcp_snd_nxt)?;
            u8::from(write_seq != snd_nxt)
        }
    };
    let facts = Facts {
        netns,
        kind,
        old_state,
        new_state,
        unsent,
    };
    let with_owner = match capture {
        Capture::Skip => false,
        Capture::Always => true,
        Capture::IfLocked => read_field!(sk, sk_lock_owned).map(|owned: i32| owned != 0)?,
    };
    if with_owner {
        let Some(mut entry) = EVENTS.reserve::<OwnedEvent>(0) else {
            count_lost();
            return Ok(());
        };
        let o = entry.as_mut_ptr();
        // SAFETY: `o` is a reserved ring buffer entry of `size_of::<OwnedEvent>()` bytes,
        // aligned to 8 and ours alone until it is submitted; taking field addresses reads
        // nothing.
        let (e, owner) = unsafe { (&raw mut (*o).event, &raw mut (*o).owner) };
        if let Err(err) = write_event(e, &seen, &facts) {
            entry.discard(BPF_RB_NO_WAKEUP as u64);
            return Err(err);
        }
        write_owner(owner);
        entry.submit(BPF_RB_NO_WAKEUP as u64);
    } else {
        let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
            count_lost();
            return Ok(());
        };
        if let Err(err) = write_event(entry.as_mut_ptr(), &seen, &facts) {
            entry.discard(BPF_RB_NO_WAKEUP as u64);
            return Err(err);
        }
        entry.submit(BPF_RB_NO_WAKEUP as u64);
    }
    Ok(())
}

/// What an event says besides the socket [`Seen`].
struct Facts {
    netns: u32,
    kind: u8,
    old_state: u8,
    new_state: u8,
    unsent: u8,
}

/// An event dropped because the ring buffer was full.
#[inline(always)]
fn count_lost() {
    if let Some(lost) = LOST.get_ptr_mut(0) {
        // SAFETY: a non-null pointer to this CPU's own aligned `u64` slot. Only a program
        // nested on this CPU could interleave, which at worst loses one count.
        unsafe { *lost += 1 };
    }
}

/// Fills the reserved, writable [`Event`] at `e`: every field, padding included (the ring's
/// memory is not zeroed).
#[inline(always)]
fn write_event(e: *mut Event, seen: &Seen, facts: &Facts) -> Result<(), ReadError> {
    write_addresses(e, seen.sk, seen.family)?;
    // SAFETY: `e` is the start of a reserved ring buffer entry holding an `Event`, aligned to 8
    // and ours alone until it is submitted; every write stays inside one field (the verifier
    // rejects the program otherwise).
    unsafe {
        (*e).ts_ns = bpf_ktime_get_ns();
        (*e).addr = seen.sk;
        (*e).netns = facts.netns;
        (*e).sport = seen.sport;
        (*e).dport = seen.dport;
        (*e).family = seen.family;
        // Volatile: LLVM merges these byte stores, mostly zeros, into a call to a byte-loop
        // memset.
        (&raw mut (*e).kind).write_volatile(facts.kind);
        (&raw mut (*e).old_state).write_volatile(facts.old_state);
        (&raw mut (*e).new_state).write_volatile(facts.new_state);
        (&raw mut (*e).unsent).write_volatile(facts.unsent);
        let pad = (&raw mut (*e)._pad).cast::<u8>();
        for i in 0..2 {
            pad.add(i).write_volatile(0);
        }
    }
    Ok(())
}

/// Fills the reserved, writable [`Owner`] at `o` from the current task.
#[inline(always)]
fn write_owner(o: *mut Owner) {
    // SAFETY: `o` points to the `Owner` of a reserved entry (see `socket_event`); the comm
    // helper writes at most its 16 bytes there (NUL-padded, or zeroed if it fails).
    unsafe {
        (*o).cgroup_id = generated::bpf_get_current_cgroup_id();
        (*o).pid = current_pid();
        (&raw mut (*o)._pad).write_volatile(0);
        generated::bpf_get_current_comm((&raw mut (*o).comm).cast(), 16);
    }
}

/// The current task's process id (tgid) in loadprobe's PID namespace (`CONFIG.pidns_dev`), 0
/// when it is outside it; the global id when no namespace is set.
#[inline(always)]
fn current_pid() -> u32 {
    let dev = config!(pidns_dev);
    if dev == 0 {
        return (bpf_get_current_pid_tgid() >> 32) as u32;
    }
    let ino = config!(pidns_ino);
    let mut ns = aya_ebpf::bindings::bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: the helper writes at most `size_of::<bpf_pidns_info>()` bytes into `ns`, a local
    // of exactly that type; a task outside that namespace makes it fail, leaving `ns` zeroed.
    let failed = unsafe {
        generated::bpf_get_ns_current_pid_tgid(
            dev,
            ino,
            &mut ns,
            core::mem::size_of::<aya_ebpf::bindings::bpf_pidns_info>() as u32,
        )
    } != 0;
    if failed { 0 } else { ns.tgid }
}

/// A socket as far as [`socket_event`] has read it before it filters on the owner.
struct Seen {
    sk: u64,
    sock: Sock,
    sport: u16,
    dport: u16,
    family: u16,
}

/// Whether the socket is an end of one of `CONFIG.owner`'s connections, keeping the maps
/// current: an owner's client socket is `CONNECTING` from `CLOSE->SYN_SENT` (see
/// [`note_connect`]) until it has a port, then its client end is `OWNED`; another process's
/// client socket that takes an owned client end (a TIME_WAIT socket's tuple, reused) takes it
/// out.
#[inline(always)]
fn owned(seen: &Seen, kind: u8, old_state: u8, new_state: u8) -> Result<bool, ReadError> {
    let &Seen {
        sk,
        sock,
        sport,
        dport,
        family,
    } = seen;
    let (local_addr, remote_addr) = endpoint_addrs(sk, family)?;
    let local = Endpoint {
        addr: local_addr,
        port: sport,
        server_port: dport,
    };
    let remote = Endpoint {
        addr: remote_addr,
        port: dport,
        server_port: sport,
    };
    // SAFETY: as with `PORTS` (`wanted_ports`): only whether there is a value is looked at.
    let is = |e: &Endpoint| unsafe { OWNED.get(e).is_some() };
    if let Sock::Timewait = sock {
        // An older timewait socket (not one of the owner's connections) that the owner's
        // connect() takes over is killed in the owner's process (tcp_tw_reuse), or in the
        // softirq its SYN raises there (a SYN accepted in TIME_WAIT, on this host).
        return Ok(is(&local) || is(&remote) || (kind == kind::TW_CANCEL && current_is_owner()));
    }
    let client_step = kind == kind::SET_STATE && old_state == TCP_SYN_SENT;
    // SAFETY: only whether there is a value is looked at.
    if unsafe { CONNECTING.get(sk).is_some() } {
        if sport != 0 && new_state != TCP_SYN_SENT {
            let _ = OWNED.insert(local, 1, 0);
        }
        if client_step || new_state == TCP_CLOSE {
            let _ = CONNECTING.remove(sk);
        }
        return Ok(true);
    }
    if client_step {
        // Someone else's connection now has this client end.
        let _ = OWNED.remove(local);
        return Ok(false);
    }
    Ok(is(&remote) || is(&local))
}

/// `CLOSE->SYN_SENT` runs in the connecting process: note the socket if it is the owner's.
#[inline(always)]
fn note_connect(sk: u64) {
    if config!(owner) != 0 && current_is_owner() {
        let _ = CONNECTING.insert(sk, 1, 0);
    }
}

/// Whether the current task belongs to `CONFIG.owner`: by its id in the owner's PID namespace
/// when one is set (a container's), so that the id userspace knows itself by is the one
/// compared; a task of another PID namespace is never the owner (its id reads 0).
#[inline(always)]
fn current_is_owner() -> bool {
    current_pid() == config!(owner)
}

/// The socket's local and remote addresses in [`Endpoint`]'s form.
#[inline(always)]
fn endpoint_addrs(sk: u64, family: u16) -> Result<([u32; 4], [u32; 4]), ReadError> {
    if family == AF_INET6 {
        let local: [u32; 4] = read_field!(sk, skc_v6_rcv_saddr)?;
        let remote: [u32; 4] = read_field!(sk, skc_v6_daddr)?;
        return Ok((v4_mapped(local), v4_mapped(remote)));
    }
    let pair: [u32; 2] = read_field!(sk, skc_addrpair)?;
    Ok(([pair[1], 0, 0, 0], [pair[0], 0, 0, 0]))
}

/// `::ffff:a.b.c.d` as IPv4 (a dual-stack server's end of an IPv4 client's connection).
#[inline(always)]
fn v4_mapped(a: [u32; 4]) -> [u32; 4] {
    if a[0] == 0 && a[1] == 0 && a[2] == u32::from_be(0x0000_ffff) {
        [a[3], 0, 0, 0]
    } else {
        a
    }
}

/// Reads the socket's addresses straight into the event: 16 bytes each for IPv6, the first 4
/// for IPv4 (the rest zero).
#[inline(always)]
fn write_addresses(e: *mut Event, sk: u64, family: u16) -> Result<(), ReadError> {
    // SAFETY: `e` points to a reserved, writable `Event` (see `socket_event`); taking a field's
    // address reads nothing.
    let saddr = unsafe { &raw mut (*e).saddr }.cast::<u8>();
    // SAFETY: as above.
    let daddr = unsafe { &raw mut (*e).daddr }.cast::<u8>();
    if family == AF_INET6 {
        let saddr_at = sk + config!(offsets.skc_v6_rcv_saddr) as u64;
        read_into(saddr, 16, saddr_at, field!(skc_v6_rcv_saddr))?;
        let daddr_at = sk + config!(offsets.skc_v6_daddr) as u64;
        return read_into(daddr, 16, daddr_at, field!(skc_v6_daddr));
    }
    // skc_daddr, skc_rcv_saddr; no addresses for a family this tool does not know.
    let pair: [u32; 2] = if family == AF_INET {
        read_field!(sk, skc_addrpair)?
    } else {
        [0, 0]
    };
    // SAFETY: each field is 16 writable bytes at offset 24 or 40 of an entry aligned to 8, so a
    // `[u32; 4]` there is in bounds and aligned.
    unsafe {
        saddr.cast::<[u32; 4]>().write([pair[1], 0, 0, 0]);
        daddr.cast::<[u32; 4]>().write([pair[0], 0, 0, 0]);
    }
    Ok(())
}

/// Reads `len` bytes of kernel memory at `src`, the field `field`, into `dst` (here: a ring
/// buffer entry).
#[inline(always)]
fn read_into(dst: *mut u8, len: u32, src: u64, field: Field) -> Result<(), ReadError> {
    // SAFETY: callers pass `dst` with `len` writable bytes (a 16-byte address field of a
    // reserved entry); `src` is only read by the helper, which fails instead of faulting.
    let rc = unsafe { generated::bpf_probe_read_kernel(dst.cast(), len, src as *const _) };
    if rc == 0 {
        Ok(())
    } else {
        Err(ReadError {
            field,
            rc: rc as i32,
        })
    }
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

/// Per CPU. At most two hits wait at once (a softirq's, inside a process-context one), but
/// entries stay behind: when the kernel skips `inet_sock_set_state_nested` (a hit interrupting
/// it), and for every state change on the host between the attaching of the two programs.
/// Entries more than [`HANDLED_STALE_RUNS`] runs old match nothing and count as free: far more
/// state changes than one softirq makes while a process-context hit waits (a network softirq
/// stops after 300 packets). With no slot free the oldest entry is taken, never a waiting one.
/// Slot 0 holds no entry but the run counter, in `run`.
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
    if let Err(e) = try_set_state(&ctx) {
        read_failed::<{ program::SET_STATE }>(&ctx, e);
    }
    let Some(counter) = HANDLED.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a non-null pointer to this CPU's slot 0, aligned (`#[repr(C)]`, `u64` fields).
    // This program does not nest on one CPU (the kernel skips a nested hit of the same program).
    let run = unsafe { (*counter).run } + 1;
    // SAFETY: as above.
    unsafe { (*counter).run = run };
    // Every hit is noted, or `inet_sock_set_state_nested` would handle it a second time (a
    // second `SYN_SENT->ESTABLISHED` reads as another process taking the client end). So the
    // slot is a free or stale one if there is one, else the oldest: entries left behind (see
    // [`HANDLED`]) are older than the one or two that can still be waited for.
    let (mut chosen, mut chosen_at) = (0, u64::MAX);
    for slot in 1..=HANDLED_SLOTS {
        if let Some(entry) = HANDLED.get_ptr_mut(slot) {
            // SAFETY: a non-null pointer to this CPU's slot, whose `u64` fields are aligned. A
            // program interrupting this one (`inet_sock_set_state_nested` for a softirq's hit)
            // may write them meanwhile: aligned `u64` loads do not tear, and a stale value only
            // makes the choice of slot a worse one.
            let (at, key) = unsafe {
                (
                    core::ptr::read_volatile(&raw const (*entry).run),
                    core::ptr::read_volatile(&raw const (*entry).key),
                )
            };
            if key == 0 || run - at > HANDLED_STALE_RUNS {
                chosen = slot;
                break;
            }
            if at < chosen_at {
                (chosen, chosen_at) = (slot, at);
            }
        }
    }
    if chosen != 0
        && let Some(entry) = HANDLED.get_ptr_mut(chosen)
    {
        // The run first: a matching key then always comes with its own run.
        // SAFETY: a non-null pointer to this CPU's slot; aligned `u64` stores do not tear.
        unsafe {
            core::ptr::write_volatile(&raw mut (*entry).run, run);
            core::ptr::write_volatile(&raw mut (*entry).key, hit_key(&ctx));
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
            // SAFETY: a non-null pointer to this CPU's slot, whose `u64` fields are aligned. An
            // interrupting `inet_sock_set_state` may write them meanwhile: aligned `u64` loads
            // and stores do not tear, and a stale value only makes a match miss.
            && unsafe { core::ptr::read_volatile(&raw const (*entry).key) } == key
        {
            // SAFETY: as above.
            let at = unsafe { core::ptr::read_volatile(&raw const (*entry).run) };
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(&raw mut (*entry).key, 0) };
            let run = HANDLED.get(0).map_or(0, |c| c.run);
            if run - at <= HANDLED_STALE_RUNS {
                return 0;
            }
        }
    }
    if let Err(e) = try_set_state(&ctx) {
        read_failed::<{ program::SET_STATE }>(&ctx, e);
    }
    0
}

fn try_set_state(ctx: &RawTracePointContext) -> Result<(), ReadError> {
    let old = ctx.arg::<u64>(1) as u8;
    let new = ctx.arg::<u64>(2) as u8;
    // Transitions the tracker never needs: self transitions, and `FIN_WAIT1->FIN_WAIT2`, whose
    // information the following `->CLOSE` carries anyway (its old state).
    if old == new || (old, new) == (TCP_FIN_WAIT1, TCP_FIN_WAIT2) {
        return Ok(());
    }
    if (old, new) == (TCP_CLOSE, TCP_SYN_SENT) {
        note_connect(ctx.arg(0));
    }
    // Without records (a run) four steps are left out whose facts a later event carries too
    // (see `Config::records`); with them, `CLOSE_WAIT->LAST_ACK` is the `close()` that names
    // the owner of the end that got the FIN first.
    let records = config!(records) != 0;
    if !records
        && matches!(
            (old, new),
            (TCP_CLOSE, TCP_SYN_SENT)
                | (TCP_SYN_RECV, TCP_ESTABLISHED)
                | (TCP_ESTABLISHED, TCP_CLOSE_WAIT)
                | (TCP_CLOSE_WAIT, TCP_LAST_ACK)
        )
    {
        return Ok(());
    }
    let sk: u64 = ctx.arg(0);
    let protocol: u16 = read_field!(sk, sk_protocol)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    // A FIN queued behind unsent data is not on the wire yet: say so (`Event::unsent`).
    let unsent = if new == TCP_FIN_WAIT1 {
        Unsent::Read
    } else {
        Unsent::Skip
    };
    // The steps only the socket's own process makes (see `Owner`).
    let capture = match (records, old, new) {
        (false, _, _) => Capture::Skip,
        (_, TCP_CLOSE, TCP_SYN_SENT)
        | (_, _, TCP_FIN_WAIT1)
        | (_, TCP_CLOSE_WAIT, TCP_LAST_ACK) => Capture::Always,
        (_, _, TCP_CLOSE) => Capture::IfLocked,
        _ => Capture::Skip,
    };
    socket_event(sk, Sock::Full, kind::SET_STATE, old, new, unsent, capture)
}

/// `tcp_send_reset(const struct sock *sk, const struct sk_buff *skb, enum sk_rst_reason)`.
#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: RawTracePointContext) -> i32 {
    if attached_floor() {
        return 0;
    }
    if let Err(e) = reset_event(&ctx, kind::RST_SENT) {
        read_failed::<{ program::SEND_RESET }>(&ctx, e);
    }
    0
}

/// `tcp_receive_reset(struct sock *sk)`.
#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: RawTracePointContext) -> i32 {
    if attached_floor() {
        return 0;
    }
    if let Err(e) = reset_event(&ctx, kind::RST_RECEIVED) {
        read_failed::<{ program::RECEIVE_RESET }>(&ctx, e);
    }
    0
}

/// Only the socket address and its tuple: userspace matches it to the socket it already tracks.
/// Resets sent with no socket (a SYN to a closed port), or from a timewait or request socket
/// (`tcp_send_reset` passes those too, and they have no `inet_sock` to read), are of no use here.
fn reset_event(ctx: &RawTracePointContext, kind: u8) -> Result<(), ReadError> {
    let sk: u64 = ctx.arg(0);
    if sk == 0 {
        return Ok(());
    }
    let state: u8 = read_field!(sk, skc_state)?;
    if state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV {
        return Ok(());
    }
    // Whether this end's FIN had gone out when the peer's RST came (`Event::unsent`).
    let unsent = if kind == kind::RST_RECEIVED {
        Unsent::Read
    } else {
        Unsent::Skip
    };
    socket_event(sk, Sock::Full, kind, 0, 0, unsent, Capture::Skip)
}

/// Sends an event for the timewait socket that owns `timer`.
#[inline(always)]
fn timewait_event(timer: u64, kind: u8) -> Result<(), ReadError> {
    let tw = timer - config!(offsets.tw_timer) as u64;
    let substate: u8 = read_field!(tw, tw_substate)?;
    socket_event(
        tw,
        Sock::Timewait,
        kind,
        substate,
        0,
        Unsent::Skip,
        Capture::Skip,
    )
}

/// The timer tracepoints fire for every timer in the system: compare the callback first and
/// leave at once for anything that is not a timewait timer. The callback is read from the
/// timer itself (none of the three tracepoints passes it as an argument).
#[inline(always)]
fn timewait_timer(ctx: &RawTracePointContext) -> Result<Option<u64>, ReadError> {
    let handler = config!(tw_timer_handler);
    if handler == 0 {
        return Ok(None);
    }
    let timer: u64 = ctx.arg(0);
    let function: u64 = read_field!(timer, timer_function)?;
    Ok((function == handler).then_some(timer))
}

/// What each timer program does: the timewait socket's event if `ctx` is a timewait timer.
#[inline(always)]
fn timer_program<const SLOT: u32>(ctx: &RawTracePointContext, kind: u8) -> i32 {
    if attached_floor() {
        return 0;
    }
    let sent = match timewait_timer(ctx) {
        Ok(Some(timer)) => timewait_event(timer, kind),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        read_failed::<SLOT>(ctx, e);
    }
    0
}

/// `timer_start(struct timer_list *timer, unsigned long bucket_expiry)`.
#[raw_tracepoint(tracepoint = "timer_start")]
pub fn timer_start(ctx: RawTracePointContext) -> i32 {
    timer_program::<{ program::TIMER_START }>(&ctx, kind::TW_START)
}

/// `timer_cancel(struct timer_list *timer)`: the callback is still set while it is detached.
#[raw_tracepoint(tracepoint = "timer_cancel")]
pub fn timer_cancel(ctx: RawTracePointContext) -> i32 {
    timer_program::<{ program::TIMER_CANCEL }>(&ctx, kind::TW_CANCEL)
}

/// `timer_expire_entry(struct timer_list *timer, unsigned long baseclk)`.
#[raw_tracepoint(tracepoint = "timer_expire_entry")]
pub fn timer_expire_entry(ctx: RawTracePointContext) -> i32 {
    timer_program::<{ program::TIMER_EXPIRE }>(&ctx, kind::TW_EXPIRE)
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
