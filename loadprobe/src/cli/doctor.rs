//! `loadprobe doctor`: what `run` and `trace` need from this kernel and this process, checked one
//! thing at a time, one line each with the reason and, when something is missing, the fix.
//!
//! The checks use the probe's own code (the BTF prototypes and offsets it verifies at load time,
//! its privilege check) and end with a real attach, so doctor cannot pass where the probe fails.
//! Exit 0 when everything `run` and `trace` need is there; 1 otherwise. A missing TIME_WAIT
//! piece only warns: the probe then still proves who closed each connection.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;

use loadprobe::error_chain::one_line;
use loadprobe::probe::{self, Netns, Probe, ProbeOptions, btf};
use loadprobe::{diag, kernel};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One line per check.
    Text,
    /// One JSON object: `{"schema", "ok", "checks": [{"check", "status", "detail", "fix"}]}`.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    /// Present and as the probe expects.
    Ok,
    /// For information: a setting that shapes results, not a requirement.
    Info,
    /// Missing, but `run` and `trace` work without it (with less).
    Warn,
    /// `run` (with its probe) or `trace` cannot work.
    Fail,
    /// Not tried, because a failure above decides it.
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    status: Status,
    detail: String,
    fix: Option<String>,
}

fn check(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
    Check {
        check: name.into(),
        status,
        detail: detail.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

pub fn main(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let checks = run_checks();
    let ok = !checks.iter().any(|c| c.status == Status::Fail);
    let text = match args.format {
        Format::Text => text(&checks, ok),
        Format::Json => {
            let doc = serde_json::json!({
                "schema": "loadprobe.doctor/1",
                "ok": ok,
                "checks": checks,
            });
            serde_json::to_string_pretty(&doc).context("cannot encode the checks")? + "\n"
        }
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line per check: status, name, detail and the fix, then the verdict.
fn text(checks: &[Check], ok: bool) -> String {
    let width = checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<4}  {:<width$}  {}",
            c.status.label(),
            c.check,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("; fix: {fix}"));
        }
        out.push('\n');
    }
    out.push_str(if ok {
        "loadprobe doctor: everything `run` and `trace` need is here\n"
    } else {
        "loadprobe doctor: `run` and `trace` cannot probe here (FAIL lines above)\n"
    });
    out
}

fn run_checks() -> Vec<Check> {
    let mut checks = vec![privileges(), lockdown()];
    let vmlinux = match btf_rs::Btf::from_file(btf::VMLINUX_BTF) {
        Ok(vmlinux) => {
            checks.push(check(
                "btf",
                Status::Ok,
                format!("{} present", btf::VMLINUX_BTF),
            ));
            Some(vmlinux)
        }
        Err(e) => {
            checks.push(
                check("btf", Status::Fail, format!("{}: {e}", btf::VMLINUX_BTF)).fix(
                    "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y: the probe reads the \
                     kernel's struct layouts and tracepoint prototypes from it",
                ),
            );
            None
        }
    };
    if let Some(vmlinux) = &vmlinux {
        checks.extend(tracepoints(vmlinux));
        checks.extend(offsets(vmlinux));
    }
    checks.push(timer_symbol());
    checks.push(ring_buffer());
    checks.push(memlock());
    checks.push(netns());
    checks.push(sock_diag());
    checks.push(sysctls());
    let blocked = checks.iter().any(|c| c.status == Status::Fail);
    checks.push(attach(blocked));
    checks
}

/// A probe error's text without the pointer to doctor that every such message ends with.
fn reason(text: &str) -> String {
    let text = text.replace(&format!(" ({})", probe::RUN_DOCTOR), "");
    let hint = format!("; {}", probe::RUN_DOCTOR);
    text.strip_suffix(&hint).unwrap_or(&text).to_string()
}

fn privileges() -> Check {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    match probe::check_privileges() {
        Ok(()) => check(
            "privileges",
            Status::Ok,
            format!("uid {uid}, with CAP_SYS_ADMIN or CAP_BPF+CAP_PERFMON"),
        ),
        Err(e) => check(
            "privileges",
            Status::Fail,
            format!("uid {uid}: {}", reason(&e.to_string())),
        )
        .fix(
            "run it as root (sudo loadprobe ...), or give the binary the capabilities: \
             sudo setcap cap_bpf,cap_perfmon,cap_syslog+ep \"$(command -v loadprobe)\" \
             (CAP_SYSLOG for the kernel addresses TIME_WAIT tracking reads)",
        ),
    }
}

/// Under lockdown=confidentiality the kernel refuses eBPF reads of kernel memory, which is
/// how every program reads a socket.
fn lockdown() -> Check {
    const LOCKDOWN: &str = "/sys/kernel/security/lockdown";
    let text = match std::fs::read_to_string(LOCKDOWN) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return check(
                "lockdown",
                Status::Info,
                format!(
                    "unknown: no {LOCKDOWN} (no lockdown LSM, or securityfs not mounted); \
                     the attach line shows whether the kernel lets the probe read sockets"
                ),
            );
        }
        Err(e) => return check("lockdown", Status::Warn, format!("{LOCKDOWN}: {e}")),
    };
    // "none [integrity] confidentiality": the bracketed word is in force.
    let mode = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
        .unwrap_or("unknown")
        .to_string();
    match mode.as_str() {
        "none" | "integrity" => check(
            "lockdown",
            Status::Ok,
            format!("{mode}: eBPF may read kernel memory"),
        ),
        _ => check(
            "lockdown",
            Status::Fail,
            format!("{mode}: the kernel refuses eBPF reads of kernel memory"),
        )
        .fix("boot with lockdown=integrity (or none) on the kernel command line"),
    }
}

/// Each raw tracepoint the programs attach to, with the arguments the programs read. The
/// socket tracepoints are required; the timer ones only for TIME_WAIT tracking.
fn tracepoints(vmlinux: &btf_rs::Btf) -> Vec<Check> {
    let required = btf::SOCKET_TRACEPOINTS.iter().map(|t| (t, Status::Fail));
    let timewait = btf::TIMER_TRACEPOINTS.iter().map(|t| (t, Status::Warn));
    required
        .chain(timewait)
        .map(|(&(tracepoint, args), missing)| {
            let name = format!("tracepoint {tracepoint}");
            let expected = format!("({}, ...)", args.join(", "));
            match btf::check_tracepoint(vmlinux, tracepoint, args) {
                Ok(()) => check(
                    name,
                    Status::Ok,
                    format!("passes {expected} as the probe reads"),
                ),
                Err(e) => {
                    check(name, missing, reason(&e.to_string())).fix(if missing == Status::Fail {
                        "this kernel changed what the tracepoint passes: loadprobe needs an update \
                     for it (report this line)"
                    } else {
                        "none needed for closers; TIME_WAIT tracking stays off on this kernel \
                     (report this line)"
                    })
                }
            }
        })
        .collect()
}

/// The field offsets the probe derives from BTF and hands the programs.
fn offsets(vmlinux: &btf_rs::Btf) -> Vec<Check> {
    let mut offsets =
        match btf::socket_offsets(vmlinux) {
            Ok(o) => o,
            Err(e) => {
                return vec![check("socket offsets", Status::Fail, reason(&e.to_string())).fix(
                "this kernel's struct sock layout is one loadprobe does not know: it needs an \
                 update (report this line)",
            )];
            }
        };
    let socket = format!(
        "sock_common: addresses {}, ports {}, state {}, net {}, v6 addresses {}/{}; net.ns.inum \
         {}; sock.sk_protocol {}; inet_sock.inet_sport {}",
        offsets.skc_addrpair,
        offsets.skc_portpair,
        offsets.skc_state,
        offsets.skc_net,
        offsets.skc_v6_daddr,
        offsets.skc_v6_rcv_saddr,
        offsets.net_inum,
        offsets.sk_protocol,
        offsets.inet_sport,
    );
    let timewait = match btf::timewait_offsets(vmlinux, &mut offsets) {
        Ok(()) => check(
            "timewait offsets",
            Status::Ok,
            format!(
                "inet_timewait_sock: tw_substate {}, tw_timer {}; timer_list.function {}",
                offsets.tw_substate, offsets.tw_timer, offsets.timer_function
            ),
        ),
        Err(e) => check("timewait offsets", Status::Warn, reason(&e.to_string()))
            .fix("none needed for closers; TIME_WAIT tracking stays off on this kernel"),
    };
    vec![check("socket offsets", Status::Ok, socket), timewait]
}

/// The probe tells timewait timers from all others by their handler's address.
fn timer_symbol() -> Check {
    match probe::kallsyms("tw_timer_handler") {
        Ok(addr) => check(
            "kallsyms",
            Status::Ok,
            format!("tw_timer_handler at {addr:#x}: timewait timers can be told apart"),
        ),
        Err(e) => {
            let restrict = kernel::read_sysctl("kernel.kptr_restrict").unwrap_or_default();
            check("kallsyms", Status::Warn, e).fix(format!(
                "TIME_WAIT tracking needs kernel addresses (kernel.kptr_restrict={restrict}): \
                 run as root, or add CAP_SYSLOG"
            ))
        }
    }
}

/// A ring buffer of the size the probe's `EVENTS` map has, created and closed again.
fn ring_buffer() -> Check {
    use aya_obj::generated::{bpf_cmd, bpf_map_type};
    let bytes = loadprobe_common::EVENTS_RING_BYTES;
    // The leading fields of the kernel's `union bpf_attr` for BPF_MAP_CREATE; the kernel reads
    // the attribute's size from the call and takes the fields past it as zero.
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    let attr = MapCreate {
        map_type: bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32,
        key_size: 0,
        value_size: 0,
        max_entries: bytes,
        map_flags: 0,
    };
    // SAFETY: the attribute is a live, initialised buffer of the size passed; the kernel only
    // reads it. The returned fd, if any, is owned and closed below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_MAP_CREATE as libc::c_long,
            std::ptr::addr_of!(attr),
            size_of::<MapCreate>(),
        )
    };
    let size = format!("ring buffer of {} MiB", bytes >> 20);
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let fix = match e.raw_os_error() {
            Some(libc::EPERM) => "needs the privileges above",
            Some(libc::EINVAL) => "BPF ring buffers need Linux 5.8 or later",
            _ => "give the memory cgroup room for the ring buffer",
        };
        return check(
            "ring buffer",
            Status::Fail,
            format!("cannot create a {size}: {e}"),
        )
        .fix(fix);
    }
    // SAFETY: the kernel just returned this fd to this process; nothing else owns it.
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) });
    check(
        "ring buffer",
        Status::Ok,
        format!("a {size} can be created"),
    )
}

/// Since Linux 5.11 eBPF memory is charged to the memory cgroup, not to RLIMIT_MEMLOCK.
fn memlock() -> Check {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    let current = if rc != 0 {
        "unknown".to_string()
    } else if limit.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".to_string()
    } else {
        format!("{} KiB", limit.rlim_cur / 1024)
    };
    let release = kernel::release();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    // The ring buffer, with as much again for the other maps and the programs (they are far
    // smaller): a rule of thumb for kernels that still charge RLIMIT_MEMLOCK.
    let needed = 2 * u64::from(loadprobe_common::EVENTS_RING_BYTES);
    if version >= (5, 11) {
        check(
            "memlock",
            Status::Ok,
            format!(
                "RLIMIT_MEMLOCK {current}; Linux {release} charges eBPF memory to the memory \
                 cgroup, so this limit does not apply"
            ),
        )
    } else if rc == 0 && (limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= needed) {
        check(
            "memlock",
            Status::Ok,
            format!("RLIMIT_MEMLOCK {current}: room for the ring buffer"),
        )
    } else {
        check(
            "memlock",
            Status::Fail,
            format!("RLIMIT_MEMLOCK {current}; Linux {release} charges eBPF maps to it"),
        )
        .fix("ulimit -l unlimited (as root) before running loadprobe")
    }
}

fn netns() -> Check {
    use std::os::unix::fs::MetadataExt;
    let own = match probe::current_netns() {
        Ok(inode) => inode,
        Err(e) => {
            return check(
                "netns",
                Status::Fail,
                format!("/proc/thread-self/ns/net: {e}"),
            )
            .fix("mount /proc");
        }
    };
    let host = std::fs::metadata("/proc/1/ns/net").map(|m| m.ino());
    let whose = match host {
        Ok(host) if host == u64::from(own) => "the host's (that of pid 1)",
        Ok(_) => "not the host's (pid 1 is in another)",
        Err(_) => "whether it is the host's is unknown (cannot read pid 1's)",
    };
    check(
        "netns",
        Status::Info,
        format!(
            "run and trace watch net:[{own}], {whose}; trace --all-netns watches every namespace"
        ),
    )
}

/// sock_diag lists the kernel's own timewait sockets: `run` without the probe counts TIME_WAIT
/// with it, and `trace --verify` checks the probe against it.
fn sock_diag() -> Check {
    match diag::timewait_sockets() {
        Ok(sockets) => check(
            "sock_diag",
            Status::Ok,
            format!(
                "{} timewait sockets listed in this namespace",
                sockets.len()
            ),
        ),
        Err(e) => check("sock_diag", Status::Warn, e.to_string()).fix(
            "load the TCP sock_diag module (modprobe tcp_diag); without it `trace --verify` \
             and probe-less runs cannot count TIME_WAIT",
        ),
    }
}

fn sysctls() -> Check {
    let snapshot = kernel::snapshot();
    let values: Vec<String> = snapshot
        .sysctls
        .iter()
        .map(|(name, value)| {
            let short = name.rsplit('.').next().unwrap_or(name);
            format!(
                "{short}={}",
                value.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    check(
        "sysctls",
        Status::Info,
        format!(
            "{}; what they mean for a workload (ports, TIME_WAIT reuse): `loadprobe tune check`",
            values.join(", ")
        ),
    )
}

/// The real thing: the probe loads, passes the verifier and attaches, then detaches at once.
fn attach(blocked: bool) -> Check {
    if blocked {
        return check(
            "attach",
            Status::Skip,
            "not tried: fix the FAIL lines first",
        );
    }
    let options = ProbeOptions {
        netns: Netns::Current,
        ports: Vec::new(),
        owner: None,
        timewait: true,
        records: true,
        floor: None,
        log: false,
    };
    match Probe::attach(&options) {
        Ok(probe) => match probe.timewait_unavailable() {
            None => check(
                "attach",
                Status::Ok,
                "every program loaded and attached, TIME_WAIT tracking on",
            ),
            Some(why) => check(
                "attach",
                Status::Warn,
                format!("attached; TIME_WAIT tracking off: {}", reason(why)),
            ),
        },
        Err(e) => {
            check("attach", Status::Fail, reason(&one_line(&e))).fix(if e.needs_privileges() {
                "needs the privileges above; the kernel refused them here (a user namespace, \
                 a seccomp or LSM policy)"
            } else {
                "the kernel refused the probe: the verifier's message above says why (report it)"
            })
        }
    }
}
