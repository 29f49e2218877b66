//! The eBPF probe: loads the kernel programs, configures them for this kernel and reads their
//! events.
//!
//! [`Probe::attach`] does everything that needs privileges; [`Probe::poll`] hands decoded
//! [`Event`]s to a callback. Turning events into connection records is [`track`]'s job, so the
//! same tracker serves `trace` and `run`.

pub mod btf;
pub mod event;
pub mod owner;
pub mod read_loop;
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
use aya_log::EbpfLogger;
use loadprobe_common::{Config, Event, INLINE_PORTS, Owner, floor, port_filter, program};

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

/// What every message of a probe that could not start ends with: `doctor` checks each thing
/// the probe needs on this kernel, one line each with its fix.
pub const RUN_DOCTOR: &str = "run `loadprobe doctor`";

/// Why the probe could not start. The kernel's and aya's errors are kept as sources: the
/// one-line message is the chain (`anyhow`'s `{:#}`, [`crate::error_chain::one_line`]).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Found from CapEff before asking the kernel anything.
    #[error(
        "the eBPF probe needs root, or CAP_BPF and CAP_PERFMON (this process has neither); \
         {RUN_DOCTOR}"
    )]
    NoCapabilities,
    /// The kernel answered EPERM although the capabilities looked right (a user namespace,
    /// a seccomp or LSM policy, a lockdown).
    #[error(
        "the eBPF probe needs root, or CAP_BPF and CAP_PERFMON: the kernel refused {step} \
         ({RUN_DOCTOR})"
    )]
    Denied {
        step: String,
        #[source]
        source: Box<AyaError>,
    },
    #[error("kernel type information (BTF): {0}; {RUN_DOCTOR}")]
    Btf(String),
    #[error("reading kernel type information (BTF) from {path} failed ({RUN_DOCTOR})")]
    BtfRead {
        path: &'static str,
        #[source]
        source: btf_rs::Error,
    },
    #[error("loading the eBPF programs failed at {step} ({RUN_DOCTOR})")]
    Load {
        step: String,
        #[source]
        source: Box<AyaError>,
    },
    /// The embedded object lacks a program or map this loader expects: a build mismatch.
    #[error("the eBPF object has no {0}; {RUN_DOCTOR}")]
    Missing(String),
    #[error("attaching to tracepoint {tracepoint} failed ({RUN_DOCTOR})")]
    Attach {
        tracepoint: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("reading the probe's events failed")]
    Read(#[source] std::io::Error),
}

/// The aya errors loading the probe can meet, kept whole.
#[derive(Debug, thiserror::Error)]
pub enum AyaError {
    #[error(transparent)]
    Ebpf(#[from] aya::EbpfError),
    #[error(transparent)]
    Program(#[from] aya::programs::ProgramError),
    #[error(transparent)]
    Map(#[from] aya::maps::MapError),
    #[error(transparent)]
    Log(#[from] aya_log::Error),
}

impl ProbeError {
    /// `step` failed with `source`: [`ProbeError::Denied`] when the kernel said EPERM, else
    /// [`ProbeError::Load`].
    fn load(step: impl Into<String>, source: impl Into<AyaError>) -> ProbeError {
        let step = step.into();
        let source = Box::new(source.into());
        let errno = crate::error_chain::io_error(&*source).and_then(std::io::Error::raw_os_error);
        if errno == Some(libc::EPERM) {
            ProbeError::Denied { step, source }
        } else {
            ProbeError::Load { step, source }
        }
    }

    /// Whether the kernel refused for lack of privileges (before or while loading).
    pub fn needs_privileges(&self) -> bool {
        matches!(self, ProbeError::NoCapabilities | ProbeError::Denied { .. })
    }
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
    /// Keep only the connections this process (pid) opens, and the server's ends of them on
    /// this host: a run counts its own connections whatever else talks to the same target.
    /// `None`: every connection (trace).
    pub owner: Option<u32>,
    /// Follow timewait sockets through their timer (issue: the heart of the product); off only
    /// for benchmarks of the state events alone.
    pub timewait: bool,
    /// Send every step connection records need, and the owner (process, cgroup) of the steps
    /// its process makes ([`loadprobe_common::Owner`]). A run needs totals, not records, and
    /// leaves out the owners and four steps whose facts later events carry too
    /// (`Config::records`): its events stay 64 bytes, four fewer per connection.
    pub records: bool,
    /// Stop the programs early, to measure what the probe costs before its own work
    /// (`Config::floor`); `None` for the probe itself.
    pub floor: Option<Floor>,
    /// Show the programs' own descriptions of rare anomalies (a failed kernel read: which
    /// program, which field) on stderr (`--probe-log`). Off, they cost nothing.
    pub log: bool,
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
    read_errors: PerCpuArray<MapData, u64>,
    /// With [`ProbeOptions::log`]: the programs' messages, read at each drain.
    log: Option<EbpfLogger<ProgramLog>>,
    /// The attached programs whose skips lose events, to ask the kernel how often it skipped
    /// them.
    program_fds: Vec<std::os::fd::OwnedFd>,
    netns: u32,
    timewait: Result<(), String>,
}

impl Probe {
    pub fn attach(options: &ProbeOptions) -> Result<Probe, ProbeError> {
        check_privileges()?;
        let btf =
            btf_rs::Btf::from_file(btf::VMLINUX_BTF).map_err(|source| ProbeError::BtfRead {
                path: btf::VMLINUX_BTF,
                source,
            })?;
        let mut offsets = btf::socket_offsets(&btf)?;
        // A test hook, in debug builds only: a wrong offset for `skc_net` makes the programs
        // read a wrong namespace pointer and fail to read through it, as a BTF offset that does
        // not fit the kernel would. The tests check that such failures are counted and told.
        #[cfg(debug_assertions)]
        if let Some(at) = std::env::var("LOADPROBE_TEST_SKC_NET_OFFSET")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            offsets.skc_net = at;
        }
        // TIME_WAIT tracking is optional: without it the probe still proves who closed.
        let timewait = if options.timewait {
            btf::timewait_offsets(&btf, &mut offsets)
                .map_err(|e| crate::error_chain::one_line(&e))
                .and_then(|()| kallsyms("tw_timer_handler"))
        } else {
            Err("turned off".to_string())
        };
        let netns = match options.netns {
            Netns::Current => current_netns().map_err(ProbeError::Read)?,
            Netns::All => 0,
        };
        // Process ids are those of loadprobe's own PID namespace: a run's own id, which is not
        // the kernel's global one in a container, and the ids a trace names owners by (a task
        // outside it has none there, rather than an id that means nothing here).
        let (pidns_dev, pidns_ino) = {
            use std::os::unix::fs::MetadataExt;
            let ns = std::fs::metadata("/proc/self/ns/pid").map_err(ProbeError::Read)?;
            (ns.dev(), ns.ino())
        };
        let mut config = Config {
            tw_timer_handler: *timewait.as_ref().unwrap_or(&0),
            netns,
            owner: options.owner.unwrap_or(0),
            pidns_dev,
            pidns_ino,
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
        // aya-log's level, in the programs' read-only data: at 0 the verifier drops every
        // message as dead code.
        let log_level = if options.log {
            aya_log::Level::Trace as u8
        } else {
            0
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .override_global(aya_log::LEVEL, &log_level, true)
            .load(EBPF_OBJECT)
            .map_err(|e| ProbeError::load("the eBPF object", e))?;
        let log = if options.log {
            let logger = EbpfLogger::init_with_logger(&mut ebpf, ProgramLog)
                .map_err(|e| ProbeError::load("the programs' log", e))?;
            Some(logger)
        } else {
            None
        };

        if config.port_filter == port_filter::MAP {
            let mut map: HashMap<_, u16, u8> = HashMap::try_from(
                ebpf.map_mut("PORTS")
                    .ok_or_else(|| ProbeError::Missing("PORTS map".into()))?,
            )
            .map_err(|e| ProbeError::load("map PORTS", e))?;
            for port in &ports {
                map.insert(port, 1, 0)
                    .map_err(|e| ProbeError::load("map PORTS", e))?;
            }
        }

        let timewait_programs = if timewait.is_ok() {
            TIMER_PROGRAMS
        } else {
            &[]
        };
        let programs: Vec<_> = SOCKET_PROGRAMS.iter().chain(timewait_programs).collect();
        // Every program is verified before the first is attached: the two set_state programs
        // work as a pair, and each hit the first runs for while the second is not attached
        // leaves an entry behind in their list (on a busy host, as many as the verifier takes
        // milliseconds).
        for &&(name, _, _) in &programs {
            raw_tracepoint(&mut ebpf, name)?
                .load()
                .map_err(|e| ProbeError::load(format!("program {name}"), e))?;
        }
        let mut program_fds = Vec::new();
        for &&(name, tracepoint, skips_lose_events) in &programs {
            let program = raw_tracepoint(&mut ebpf, name)?;
            program.attach(tracepoint).map_err(|e| ProbeError::Attach {
                tracepoint,
                source: Box::new(e),
            })?;
            if skips_lose_events {
                let fd = program
                    .fd()
                    .map_err(|e| ProbeError::load(format!("program {name}"), e))?;
                program_fds.push(fd.as_fd().try_clone_to_owned().map_err(ProbeError::Read)?);
            }
        }

        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| ProbeError::Missing(format!("{name} map")))
        };
        let events = RingBuf::try_from(take(&mut ebpf, "EVENTS")?)
            .map_err(|e| ProbeError::load("map EVENTS", e))?;
        let lost = PerCpuArray::try_from(take(&mut ebpf, "LOST")?)
            .map_err(|e| ProbeError::load("map LOST", e))?;
        let read_errors = PerCpuArray::try_from(take(&mut ebpf, "READ_ERRORS")?)
            .map_err(|e| ProbeError::load("map READ_ERRORS", e))?;
        Ok(Probe {
            _ebpf: ebpf,
            events,
            lost,
            read_errors,
            log,
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
    pub fn poll(&mut self, wait: Duration, mut each: impl FnMut(&Event, Option<&Owner>)) -> u64 {
        std::thread::sleep(wait);
        let upto = crate::kernel::monotonic_ns();
        while let Some(item) = self.events.next() {
            if let Some((event, owner)) = event::decode(&item) {
                each(&event, owner.as_ref());
            }
        }
        if let Some(log) = &mut self.log {
            log.flush();
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

    /// Failed kernel reads (`bpf_probe_read_kernel`) per program, in [`program`]'s slots: each
    /// dropped the event it was for. Never expected; a BTF offset that does not fit the running
    /// kernel would show here.
    pub fn read_errors_by_program(&self) -> [u64; program::COUNT as usize] {
        let mut counts = [0; program::COUNT as usize];
        for (slot, count) in (0..program::COUNT).zip(&mut counts) {
            *count = self
                .read_errors
                .get(&slot, 0)
                .map_or(0, |per_cpu| per_cpu.iter().sum());
        }
        counts
    }

    /// All failed kernel reads (see [`Probe::read_errors_by_program`]).
    pub fn read_errors(&self) -> u64 {
        self.read_errors_by_program().iter().sum()
    }

    /// Tracepoint hits the kernel skipped because the same program was already running on that
    /// CPU (an interrupt arriving in the middle of it whose handler hit the same tracepoint):
    /// raw tracepoint programs do not nest into themselves. An upper bound on events missed: the
    /// timer programs also count skipped hits of timers that are not timewait timers.
    pub fn skipped_events(&self) -> u64 {
        self.program_fds.iter().map(recursion_misses).sum()
    }
}

/// Writes the programs' aya-log messages to stderr, one line each.
struct ProgramLog;

impl log::Log for ProgramLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        eprintln!("loadprobe: probe log: {}", record.args());
    }

    fn flush(&self) {}
}

/// What lost events make uncertain: everything counted from the probe's events.
pub const LOSS_UNCERTAIN: &str = "closers, mismatches and TIME_WAIT/FIN_WAIT2 counts may be short";

/// Tells, once a second or so, when the probe has lost events or failed to read the kernel
/// since it last said so: either is reported as it happens, not only in the final summary.
#[derive(Debug, Default)]
pub struct LossWatch {
    reported: u64,
    read_errors: u64,
}

impl LossWatch {
    /// A warning if `probe` lost events or failed reads since the last one.
    pub fn check(&mut self, probe: &Probe) -> Option<String> {
        self.check_counts(probe.lost_events(), probe.read_errors_by_program())
    }

    fn check_counts(
        &mut self,
        lost: u64,
        read_errors: [u64; program::COUNT as usize],
    ) -> Option<String> {
        let mut warnings = Vec::new();
        if lost > self.reported {
            self.reported = lost;
            warnings.push(format!(
                "the probe has lost {lost} events (its ring buffer was full: the reader fell \
                 behind)"
            ));
        }
        let failed: u64 = read_errors.iter().sum();
        if failed > self.read_errors {
            self.read_errors = failed;
            let programs: Vec<String> = program::TRACEPOINTS
                .iter()
                .zip(read_errors)
                .filter(|&(_, n)| n > 0)
                .map(|(tracepoint, n)| format!("{tracepoint} {n}"))
                .collect();
            warnings.push(format!(
                "{failed} kernel reads of the probe failed ({}), each dropping its event: the \
                 kernel's layout may not be what its BTF said",
                programs.join(", ")
            ));
        }
        (!warnings.is_empty())
            .then(|| format!("warning: {}; {LOSS_UNCERTAIN}", warnings.join("; ")))
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
pub fn check_privileges() -> Result<(), ProbeError> {
    use crate::privileges::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, has_cap as has};
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(ProbeError::NoCapabilities)
    }
}

/// Address of a kernel symbol (static functions included) from /proc/kallsyms.
pub fn kallsyms(symbol: &str) -> Result<u64, String> {
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

/// The raw tracepoint program `name` of the loaded object.
fn raw_tracepoint<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut RawTracePoint, ProbeError> {
    ebpf.program_mut(name)
        .ok_or_else(|| ProbeError::Missing(format!("program {name}")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| ProbeError::load(format!("program {name}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya::{programs::ProgramError, sys::SyscallError};

    fn syscall_failed(errno: i32) -> ProgramError {
        ProgramError::SyscallError(SyscallError {
            call: "bpf_prog_load",
            io_error: std::io::Error::from_raw_os_error(errno),
        })
    }

    /// EPERM is told by its errno, whatever the message says; the source stays reachable.
    #[test]
    fn eperm_is_a_privilege_error_other_errnos_a_load_error() {
        let denied = ProbeError::load("program p", syscall_failed(libc::EPERM));
        assert!(denied.needs_privileges(), "{denied:?}");
        let errno = crate::error_chain::io_error(&denied).and_then(std::io::Error::raw_os_error);
        assert_eq!(errno, Some(libc::EPERM));

        let rejected = ProbeError::load("program p", syscall_failed(libc::EINVAL));
        assert!(!rejected.needs_privileges(), "{rejected:?}");
        assert_eq!(
            crate::error_chain::one_line(&rejected),
            "loading the eBPF programs failed at program p (run `loadprobe doctor`): \
             `bpf_prog_load` failed: Invalid argument (os error 22)"
        );
    }

    #[test]
    fn failed_reads_are_summed_named_by_program_and_warned_once() {
        let mut watch = LossWatch::default();
        assert_eq!(watch.check_counts(0, [0; 6]), None);
        let warning = watch.check_counts(0, [2, 0, 0, 1, 0, 0]).unwrap();
        assert!(
            warning.contains("3 kernel reads of the probe failed")
                && warning.contains("(inet_sock_set_state 2, timer_start 1)")
                && !warning.contains("lost"),
            "{warning}"
        );
        // Nothing new, nothing said; then a loss alone.
        assert_eq!(watch.check_counts(0, [2, 0, 0, 1, 0, 0]), None);
        let warning = watch.check_counts(5, [2, 0, 0, 1, 0, 0]).unwrap();
        assert!(
            warning.contains("lost 5 events") && !warning.contains("reads"),
            "{warning}"
        );
        let both = watch.check_counts(6, [2, 0, 0, 1, 0, 4]).unwrap();
        assert!(
            both.contains("lost 6 events") && both.contains("7 kernel reads"),
            "{both}"
        );
    }
}
