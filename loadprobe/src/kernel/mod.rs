//! Kernel facts that decide how a connection-churn run behaves, for run records and tuning.
//!
//! A run's TIME_WAIT numbers mean little without the sysctls they ran under (reuse on or off,
//! how long FIN_WAIT2 orphans live, how many ephemeral ports there are), so every run records a
//! [`Snapshot`], and the tuning commands use [`read_sysctl`] / [`write_sysctl`].
//!
//! # Network namespaces
//!
//! All the `net.*` sysctls in [`SYSCTLS`] are per network namespace (docs/kernel.md §5). Files under
//! `/proc/sys/net` are looked up in the namespace of the *thread* that opens them (checked on
//! 6.18: a thread that called `unshare(CLONE_NEWNET)` sees only its own `lo` under
//! `/proc/sys/net/ipv4/conf` while the main thread still sees the host's interfaces), and there is
//! no `/proc/thread-self/sys`. So, like [`crate::diag`], every function here reads and writes the
//! calling thread's namespace; each call opens the file afresh, because an already open fd keeps
//! the namespace it was opened in. (`/proc/net`, by contrast, follows the process's main thread.)

pub mod cgroup;
pub mod tcp;

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::io::{self, Write};
use std::path::PathBuf;

/// The sysctls that matter for connection churn, in a fixed order.
pub const SYSCTLS: &[&str] = &[
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_tw_reuse_delay",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
];

/// The kernel settings a run was made under.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// `uname -r`.
    pub release: String,
    /// Dotted sysctl name -> value as [`read_sysctl`] returns it. Sysctls this kernel does not
    /// have (e.g. `tcp_tw_reuse_delay` before 6.14) are absent rather than empty, so a record
    /// says "did not exist", not "was empty".
    pub sysctls: BTreeMap<String, String>,
}

/// Why a sysctl could not be read, written or understood.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("invalid sysctl name {0:?}")]
    InvalidName(String),
    #[error("sysctl {name} does not exist on this kernel (no {path})")]
    Missing { name: String, path: PathBuf },
    #[error("reading sysctl {name} failed: {error}")]
    Read { name: String, error: io::Error },
    #[error("writing {value:?} to sysctl {name} failed: value rejected by the kernel (EINVAL)")]
    Rejected { name: String, value: String },
    #[error(
        "writing sysctl {name} failed: {error} (needs root in the namespace's owning user \
         namespace; some sysctls are read-only)"
    )]
    PermissionDenied { name: String, error: io::Error },
    #[error("writing {value:?} to sysctl {name} failed: {error}")]
    Write {
        name: String,
        value: String,
        error: io::Error,
    },
    #[error("sysctl {name} has unexpected contents {value:?}: {detail}")]
    Parse {
        name: String,
        value: String,
        detail: String,
    },
}

/// The kernel release and every sysctl of [`SYSCTLS`] this kernel has, for the calling thread's
/// network namespace.
///
/// Never fails: a run record with a partial snapshot is more useful than no record. Sysctls that
/// exist but cannot be read are logged and left out.
pub fn snapshot() -> Snapshot {
    let mut sysctls = BTreeMap::new();
    for &name in SYSCTLS {
        match read_sysctl(name) {
            Ok(value) => {
                sysctls.insert(name.to_string(), value);
            }
            Err(KernelError::Missing { .. }) => {}
            Err(e) => log::warn!("kernel snapshot: {e}"),
        }
    }
    Snapshot {
        release: release(),
        sysctls,
    }
}

/// Reads a sysctl by its dotted name (`net.ipv4.tcp_fin_timeout`), as `sysctl -n` would.
///
/// Whitespace is normalised (trimmed, runs of spaces and tabs become one space) because the kernel
/// separates multi-value sysctls with tabs (`ip_local_port_range` reads `32768\t60999`), and
/// records and comparisons should not depend on that.
pub fn read_sysctl(name: &str) -> Result<String, KernelError> {
    let path = sysctl_path(name)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(normalise(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(KernelError::Missing {
            name: name.to_string(),
            path,
        }),
        Err(error) => Err(KernelError::Read {
            name: name.to_string(),
            error,
        }),
    }
}

/// Writes a sysctl by its dotted name, as `sysctl -w name=value` would.
///
/// The kernel validates the value in the write itself, so a rejected value surfaces here as
/// [`KernelError::Rejected`] and the old value stays in place.
pub fn write_sysctl(name: &str, value: &str) -> Result<(), KernelError> {
    let path = sysctl_path(name)?;
    let result = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        // One write() call: sysctl handlers parse each write on its own.
        .and_then(|mut f| f.write_all(value.as_bytes()));
    let Err(error) = result else {
        return Ok(());
    };
    let name = name.to_string();
    Err(match (error.kind(), error.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => KernelError::Missing { name, path },
        (_, Some(libc::EINVAL)) => KernelError::Rejected {
            name,
            value: value.to_string(),
        },
        (_, Some(libc::EACCES | libc::EPERM)) => KernelError::PermissionDenied { name, error },
        _ => KernelError::Write {
            name,
            value: value.to_string(),
            error,
        },
    })
}

/// The autobind (ephemeral) port range, both ends inclusive.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    /// Number of ports in the range (`high - low + 1`).
    pub fn size(&self) -> u32 {
        (u32::from(self.high) + 1).saturating_sub(u32::from(self.low))
    }
}

/// `net.ipv4.ip_local_port_range`: where connect() picks source ports from (IPv6 too).
pub fn port_range() -> Result<PortRange, KernelError> {
    const NAME: &str = "net.ipv4.ip_local_port_range";
    let value = read_sysctl(NAME)?;
    parse_port_range(&value).map_err(|detail| KernelError::Parse {
        name: NAME.to_string(),
        value,
        detail,
    })
}

/// Ephemeral ports usable by connect(): range size minus ip_local_reserved_ports inside the range.
///
/// This bounds how many connections to one destination (ip, port) can sit in TIME_WAIT before
/// connect() fails with EADDRNOTAVAIL (when tw reuse does not apply), which is the number a churn
/// run needs to compare against. connect() scans both port parities before giving up, so every
/// port in the range counts.
pub fn usable_ephemeral_ports() -> Result<u32, KernelError> {
    const NAME: &str = "net.ipv4.ip_local_reserved_ports";
    let range = port_range()?;
    let value = read_sysctl(NAME)?;
    let reserved = parse_port_list(&value).map_err(|detail| KernelError::Parse {
        name: NAME.to_string(),
        value,
        detail,
    })?;
    Ok(usable_ports(range, &reserved))
}

/// The running kernel's release, as `uname -r` prints it ("unknown" if uname fails).
pub fn release() -> String {
    // SAFETY: utsname is plain old data, all-zero is valid, and uname only writes into it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a live, correctly sized utsname for uname to fill.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".to_string();
    }
    // The field is NUL-terminated by the kernel; the zeroed buffer guarantees it anyway unless
    // the release fills all 65 bytes, which CStr::from_bytes_until_nul then reports.
    let bytes: Vec<u8> = uts.release.iter().map(|&c| c as u8).collect();
    CStr::from_bytes_until_nul(&bytes)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// `net.ipv4.tcp_fin_timeout` -> `/proc/sys/net/ipv4/tcp_fin_timeout`. A name containing `/` is
/// taken as already slash-separated (as sysctl(8) does), for components that contain dots
/// (e.g. `net/ipv4/conf/eth0.100/forwarding`). Empty, `.` and `..` components are refused so a
/// name cannot escape /proc/sys.
fn sysctl_path(name: &str) -> Result<PathBuf, KernelError> {
    let sep = if name.contains('/') { '/' } else { '.' };
    let mut path = PathBuf::from("/proc/sys");
    for component in name.split(sep) {
        if component.is_empty() || component == "." || component == ".." {
            return Err(KernelError::InvalidName(name.to_string()));
        }
        path.push(component);
    }
    Ok(path)
}

fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a port number (0-65535)"))
}

/// `"32768 60999"` (any whitespace) -> 32768..=60999.
fn parse_port_range(s: &str) -> Result<PortRange, String> {
    let fields: Vec<&str> = s.split_whitespace().collect();
    let [low, high] = fields[..] else {
        return Err(format!("expected two ports, got {} fields", fields.len()));
    };
    let range = PortRange {
        low: parse_port(low)?,
        high: parse_port(high)?,
    };
    if range.low > range.high {
        return Err(format!(
            "low end {} above high end {}",
            range.low, range.high
        ));
    }
    Ok(range)
}

/// A port list as the kernel prints bitmaps: `"1000-2000,3000"`, or empty for none.
fn parse_port_list(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (parse_port(a.trim())?, parse_port(b.trim())?),
            None => {
                let p = parse_port(item)?;
                (p, p)
            }
        };
        if a > b {
            return Err(format!("reversed range {item:?}"));
        }
        out.push((a, b));
    }
    Ok(out)
}

/// The ephemeral ports of a namespace, as the kernel module parses them.
#[derive(serde::Serialize, Clone, Copy, Debug, PartialEq)]
pub struct Ports {
    pub range: PortRange,
    /// Range size minus reserved ports inside it.
    pub usable: u32,
}

/// Ports of `range` not covered by any of the `reserved` ranges (which may overlap).
fn usable_ports(range: PortRange, reserved: &[(u16, u16)]) -> u32 {
    let mut inside: Vec<(u16, u16)> = reserved
        .iter()
        .map(|&(a, b)| (a.max(range.low), b.min(range.high)))
        .filter(|&(a, b)| a <= b)
        .collect();
    inside.sort_unstable();
    let mut covered = 0u32;
    // Highest port counted so far, so overlapping ranges are counted once.
    let mut counted_to: Option<u16> = None;
    for (a, b) in inside {
        let start = match counted_to {
            Some(end) if end >= b => continue,
            Some(end) if end >= a => end + 1,
            _ => a,
        };
        covered += u32::from(b) - u32::from(start) + 1;
        counted_to = Some(b);
    }
    range.size() - covered
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the probe's events (`bpf_ktime_get_ns`) and of
/// `std::time::Instant` on Linux.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `at` on the [`monotonic_ns`] clock.
pub fn instant_ns(at: std::time::Instant) -> u64 {
    let now = std::time::Instant::now();
    let now_ns = monotonic_ns();
    if at <= now {
        now_ns.saturating_sub(now.duration_since(at).as_nanos() as u64)
    } else {
        now_ns + at.duration_since(now).as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{in_fresh_netns, require_root};

    const fn pr(low: u16, high: u16) -> PortRange {
        PortRange { low, high }
    }

    #[test]
    fn port_range_parsing() {
        assert_eq!(parse_port_range("32768\t60999"), Ok(pr(32768, 60999)));
        assert_eq!(parse_port_range(" 1024  1024 "), Ok(pr(1024, 1024)));
        assert_eq!(pr(32768, 60999).size(), 28232);
        assert_eq!(pr(1024, 1024).size(), 1);
        for bad in [
            "",
            "1",
            "1 2 3",
            "a 2",
            "60999 32768",
            "70000 70001",
            "-1 5",
        ] {
            assert!(parse_port_range(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reserved_list_parsing() {
        assert_eq!(parse_port_list(""), Ok(vec![]));
        assert_eq!(parse_port_list("\n"), Ok(vec![]));
        assert_eq!(
            parse_port_list("1000-2000,3000"),
            Ok(vec![(1000, 2000), (3000, 3000)])
        );
        assert_eq!(parse_port_list(" 5 - 7 , 9,"), Ok(vec![(5, 7), (9, 9)]));
        for bad in ["2000-1000", "x", "1-", "-5", "1,70000", "1-2-3"] {
            assert!(parse_port_list(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn usable_port_counting() {
        let range = pr(32768, 60999);
        assert_eq!(usable_ports(range, &[]), 28232);
        // Entirely outside the range: no effect.
        assert_eq!(usable_ports(range, &[(1000, 2000), (3000, 3000)]), 28232);
        // Both edges, a single port, and a range straddling the low end.
        assert_eq!(
            usable_ports(range, &[(32768, 32867), (60999, 60999), (30000, 32870)]),
            28232 - 103 - 1
        );
        // Overlapping and nested ranges are counted once.
        assert_eq!(
            usable_ports(range, &[(40050, 40200), (40000, 40100), (40060, 40070)]),
            28232 - 201
        );
        assert_eq!(usable_ports(pr(1024, 1024), &[(0, 65535)]), 0);
        assert_eq!(usable_ports(pr(0, 65535), &[]), 65536);
    }

    #[test]
    fn sysctl_names_map_to_proc_sys() {
        assert_eq!(
            sysctl_path("net.ipv4.tcp_fin_timeout").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/tcp_fin_timeout")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/forwarding").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        for bad in ["", "net..ipv4", "../etc/passwd", "net/../../etc", ".net"] {
            assert!(
                matches!(sysctl_path(bad), Err(KernelError::InvalidName(_))),
                "{bad:?} accepted"
            );
        }
        assert_eq!(normalise("32768\t60999\n"), "32768 60999");
    }

    #[test]
    fn snapshot_of_this_kernel() {
        let snap = snapshot();
        assert!(!snap.release.is_empty() && snap.release != "unknown");
        // Present on every kernel this tool supports.
        for name in ["net.ipv4.tcp_fin_timeout", "net.ipv4.ip_local_port_range"] {
            assert!(snap.sysctls.contains_key(name), "{name} missing: {snap:?}");
        }
        assert!(snap.sysctls.keys().all(|k| SYSCTLS.contains(&k.as_str())));
        assert!(matches!(
            read_sysctl("net.ipv4.no_such_sysctl"),
            Err(KernelError::Missing { .. })
        ));
        let json = serde_json::to_string(&snap).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), snap);
    }

    #[test]
    fn writes_stay_in_the_threads_netns() {
        if !require_root("kernel::writes_stay_in_the_threads_netns") {
            return;
        }
        let host_range = read_sysctl("net.ipv4.ip_local_port_range").unwrap();
        let host_reserved = read_sysctl("net.ipv4.ip_local_reserved_ports").unwrap();

        in_fresh_netns(|| {
            // Guard before writing anything: /proc/sys must resolve in this thread's namespace,
            // which has only lo. If that ever stopped holding, the writes below would hit the host.
            let mut conf: Vec<String> = std::fs::read_dir("/proc/sys/net/ipv4/conf")
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            conf.sort();
            assert_eq!(
                conf,
                ["all", "default", "lo"],
                "/proc/sys is not per-thread"
            );

            write_sysctl("net.ipv4.ip_local_port_range", "40000 40999").unwrap();
            assert_eq!(
                read_sysctl("net.ipv4.ip_local_port_range").unwrap(),
                "40000 40999"
            );
            assert_eq!(port_range().unwrap(), pr(40000, 40999));

            write_sysctl(
                "net.ipv4.ip_local_reserved_ports",
                "40100-40199,40500,50000",
            )
            .unwrap();
            assert_eq!(usable_ephemeral_ports().unwrap(), 1000 - 100 - 1);

            let err = write_sysctl("net.ipv4.ip_local_port_range", "40999 40000").unwrap_err();
            assert!(matches!(err, KernelError::Rejected { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("net.ipv4.ip_local_port_range")
                    && msg.contains("rejected by the kernel"),
                "{msg}"
            );
            assert_eq!(port_range().unwrap(), pr(40000, 40999));

            assert!(matches!(
                write_sysctl("net.ipv4.no_such_sysctl", "1"),
                Err(KernelError::Missing { .. })
            ));
        });

        assert_eq!(
            read_sysctl("net.ipv4.ip_local_port_range").unwrap(),
            host_range
        );
        assert_eq!(
            read_sysctl("net.ipv4.ip_local_reserved_ports").unwrap(),
            host_reserved
        );
    }
}
