//! The eBPF probe: loads the kernel programs, configures them for this kernel and reads their
//! events.
//!
//! [`Probe::attach`] does everything that needs privileges; [`Probe::poll`] hands decoded
//! [`Event`]s to a callback. Turning events into connection records is [`track`]'s job, so the
//! same tracker serves `trace` and `run`.

pub mod btf;
pub mod event;
pub mod session;
pub mod summary;
pub mod track;

use std::{
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::RawTracePoint,
};
use loadprobe_common::{Config, Event, INLINE_PORTS, floor, port_filter};

/// The compiled eBPF object, built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/loadprobe"));

/// The socket programs in attach order: (program, raw tracepoint, whether the kernel skipping
/// it loses events). The kernel calls the programs of a tracepoint in the order they were
/// attached; `inet_sock_set_state_nested` must come right after `inet_sock_set_state`, whose
/// skipped hits it handles (see loadprobe-ebpf). The prototypes are checked in
/// [`btf::SOCKET_TRACEPOINTS`].
const SOCKET_PROGRAMS: &[(&str, &str, bool)] = &[
    ("inet_sock_set_state", "inet_sock_set_state", false),
    ("inet_sock_set_state_nested", "inet_sock_set_state", true),
    ("tcp_send_reset", "tcp_send_reset", true),
    ("tcp_receive_reset", "tcp_receive_reset", true),
];

/// The timewait timer programs, each named after its tracepoint ([`btf::TIMER_TRACEPOINTS`]).
const TIMER_PROGRAMS: &[(&str, &str, bool)] = &[
    ("timer_start", "timer_start", true),
    ("timer_cancel", "timer_cancel", true),
    ("timer_expire_entry", "timer_expire_entry", true),
];

/// Why the probe could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("the eBPF probe needs root, or CAP_BPF and CAP_PERFMON ({0})")]
    Privileges(String),
    #[error("kernel type information (BTF): {0}")]
    Btf(String),
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),
    #[error("attaching to tracepoint {0} failed: {1}")]
    Attach(&'static str, String),
    #[error("reading the probe's events failed: {0}")]
    Read(std::io::Error),
}

/// Which network namespace the kernel side keeps events for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Netns {
    /// The namespace of the calling thread.
    Current,
    /// Every namespace on the host.
    All,
}

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub netns: Netns,
    /// Keep only connections with either end's port in this set; empty = every port.
    pub ports: Vec<u16>,
    /// Follow timewait sockets through their timer (issue: the heart of the product); off only
    /// for benchmarks of the state events alone.
    pub timewait: bool,
    /// Send every step connection records need. A run needs totals, not records, and leaves
    /// out three steps whose facts later events carry too (`Config::records`): three events
    /// fewer per connection.
    pub records: bool,
    /// Stop the programs early, to measure what the probe costs before its own work
    /// (`Config::floor`); `None` for the probe itself.
    pub floor: Option<Floor>,
}

/// Where [`ProbeOptions::floor`] stops the programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Floor {
    /// They return at once: the cost of the tracepoint hits alone.
    Attached,
    /// They read and filter each socket, and send nothing.
    Filtered,
}

impl Floor {
    pub fn name(self) -> &'static str {
        match self {
            Floor::Attached => "attached",
            Floor::Filtered => "filtered",
        }
    }
}

/// The loaded and attached probe. Dropping it detaches every program.
pub struct Probe {
    _ebpf: Ebpf,
    events: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    /// The attached programs whose skips lose events, to ask the kernel how often it skipped
    /// them.
    program_fds: Vec<std::os::fd::OwnedFd>,
    netns: u32,
    timewait: Result<(), String>,
}

impl Probe {
    pub fn attach(options: &ProbeOptions) -> Result<Probe, ProbeError> {
        check_privileges()?;
        let btf = btf_rs::Btf::from_file(btf::VMLINUX_BTF)
            .map_err(|e| ProbeError::Btf(format!("{}: {e}", btf::VMLINUX_BTF)))?;
        let mut offsets = btf::socket_offsets(&btf)?;
        // TIME_WAIT tracking is optional: without it the probe still proves who closed.
        let timewait = if options.timewait {
            btf::timewait_offsets(&btf, &mut offsets)
                .map_err(|e| e.to_string())
                .and_then(|()| kallsyms("tw_timer_handler"))
        } else {
            Err("turned off".to_string())
        };
        let netns = match options.netns {
            Netns::Current => current_netns().map_err(ProbeError::Read)?,
            Netns::All => 0,
        };
        let mut config = Config {
            tw_timer_handler: *timewait.as_ref().unwrap_or(&0),
            netns,
            records: options.records.into(),
            floor: match options.floor {
                None => floor::NONE,
                Some(Floor::Attached) => floor::ATTACHED,
                Some(Floor::Filtered) => floor::FILTERED,
            },
            offsets,
            ..Config::default()
        };
        let mut ports = options.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        ports.retain(|&p| p != 0);
        config.port_filter = match ports.len() {
            0 => port_filter::NONE,
            n if n <= INLINE_PORTS => {
                config.ports[..n].copy_from_slice(&ports);
                port_filter::INLINE
            }
            _ => port_filter::MAP,
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .load(EBPF_OBJECT)
            .map_err(|e| load_error(&e))?;

        if config.port_filter == port_filter::MAP {
            let mut map: HashMap<_, u16, u8> = HashMap::try_from(
                ebpf.map_mut("PORTS")
                    .ok_or_else(|| ProbeError::Load("no PORTS map".into()))?,
            )
            .map_err(|e| ProbeError::Load(e.to_string()))?;
            for port in &ports {
                map.insert(port, 1, 0)
                    .map_err(|e| ProbeError::Load(e.to_string()))?;
            }
        }

        let timewait_programs = if timewait.is_ok() {
            TIMER_PROGRAMS
        } else {
            &[]
        };
        let mut program_fds = Vec::new();
        for &(name, tracepoint, skips_lose_events) in
            SOCKET_PROGRAMS.iter().chain(timewait_programs)
        {
            let program: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| ProbeError::Load(format!("program {name} missing")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| ProbeError::Load(e.to_string()))?;
            program.load().map_err(|e| load_error(&e))?;
            program
                .attach(tracepoint)
                .map_err(|e| ProbeError::Attach(name, error_chain(&e)))?;
            if skips_lose_events {
                let fd = program.fd().map_err(|e| ProbeError::Load(e.to_string()))?;
                program_fds.push(fd.as_fd().try_clone_to_owned().map_err(ProbeError::Read)?);
            }
        }

        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| ProbeError::Load(format!("no {name} map")))
        };
        let events = RingBuf::try_from(take(&mut ebpf, "EVENTS")?)
            .map_err(|e| ProbeError::Load(e.to_string()))?;
        let lost = PerCpuArray::try_from(take(&mut ebpf, "LOST")?)
            .map_err(|e| ProbeError::Load(e.to_string()))?;
        Ok(Probe {
            _ebpf: ebpf,
            events,
            lost,
            program_fds,
            netns,
            timewait: timewait.map(|_| ()),
        })
    }

    /// Why TIME_WAIT tracking is off, if it is.
    pub fn timewait_unavailable(&self) -> Option<&str> {
        self.timewait.as_ref().err().map(String::as_str)
    }

    /// The namespace filtered on (inode), or 0 for all.
    pub fn netns(&self) -> u32 {
        self.netns
    }

    /// How often readers should [`Probe::poll`]: the programs never wake the reader (a wakeup
    /// per event cost a context switch each), so the ring is drained on this timer. 8 MiB of
    /// ring is 116k events: 20 ms leaves room for 5 million events a second.
    pub const DRAIN_EVERY: Duration = Duration::from_millis(20);

    /// Sleeps `wait`, then hands every event in the ring buffer to `each`. Returns the time
    /// (CLOCK_MONOTONIC ns) the drain started: everything the kernel did before it has been
    /// handed over, which is the "now" to give [`track::Tracker::tick`]. The time after the
    /// drain would not do: a timer cancel read in this drain whose expiry landed just after it
    /// would look like a kill.
    pub fn poll(&mut self, wait: Duration, mut each: impl FnMut(&Event)) -> u64 {
        std::thread::sleep(wait);
        let upto = crate::kernel::monotonic_ns();
        while let Some(item) = self.events.next() {
            if let Some(event) = event::decode(&item) {
                each(&event);
            }
        }
        upto
    }

    /// Events the kernel side dropped because the ring buffer was full.
    pub fn lost_events(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }

    /// Tracepoint hits the kernel skipped because the same program was already running on that
    /// CPU (an interrupt arriving in the middle of it whose handler hit the same tracepoint):
    /// raw tracepoint programs do not nest into themselves. An upper bound on events missed: the
    /// timer programs also count skipped hits of timers that are not timewait timers.
    pub fn skipped_events(&self) -> u64 {
        self.program_fds.iter().map(recursion_misses).sum()
    }
}

/// How many times the kernel skipped this program because it was already running on the CPU
/// (aya 0.14 does not expose the field, so this asks with `BPF_OBJ_GET_INFO_BY_FD`).
fn recursion_misses(fd: &std::os::fd::OwnedFd) -> u64 {
    use aya_obj::generated::{bpf_cmd, bpf_prog_info};
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: bpf_prog_info is plain C data; all zeroes is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<bpf_prog_info>() as u32,
        info: std::ptr::addr_of_mut!(info) as u64,
    };
    // SAFETY: the attribute points at a live, correctly sized buffer for the kernel to fill.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            std::ptr::addr_of!(attr),
            size_of::<InfoAttr>(),
        )
    };
    if rc == 0 { info.recursion_misses } else { 0 }
}

/// Network namespace inode of the calling thread.
pub fn current_netns() -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
    u32::try_from(ino).map_err(std::io::Error::other)
}

/// Fails early with a clear message instead of an EPERM from deep inside the loader.
fn check_privileges() -> Result<(), ProbeError> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(ProbeError::Privileges("this process has neither".into()))
    }
}

/// Address of a kernel symbol (static functions included) from /proc/kallsyms.
fn kallsyms(symbol: &str) -> Result<u64, String> {
    let text =
        std::fs::read_to_string("/proc/kallsyms").map_err(|e| format!("/proc/kallsyms: {e}"))?;
    text.lines()
        .find_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let addr = fields.next()?;
            let _kind = fields.next()?;
            (fields.next()? == symbol).then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .filter(|&addr| addr != 0)
        .ok_or_else(|| format!("kernel symbol {symbol} not found in /proc/kallsyms"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn load_error(e: &dyn std::error::Error) -> ProbeError {
    let text = error_chain(e);
    if text.contains("Operation not permitted") {
        ProbeError::Privileges(text)
    } else {
        ProbeError::Load(text)
    }
}
