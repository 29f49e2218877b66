//! Giving up privileges once the probe is attached: the attached programs, the ring buffer's
//! mapping and the maps' file descriptors keep working without any capability (the kernel checks
//! privileges when a program is loaded or a map is created, not when an open descriptor is
//! used), so a long-running `trace` keeps none, and `run` only what writing its outputs needs
//! ([`drop_caps_in_every_thread`]).

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// capability(7) number of CAP_SETPCAP, which dropping from the bounding set needs.
const CAP_SETPCAP: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    // The user's name is the caller's to put in front: the messages say what is wrong with it.
    #[error("no such user")]
    NoUser(String),
    #[error("looking it up failed")]
    Lookup {
        name: String,
        source: std::io::Error,
    },
    #[error("switching to it needs CAP_SETUID and CAP_SETGID, which this process lacks")]
    CannotSwitch(String),
    #[error("uid 0 or gid 0 keeps root's privileges; name an unprivileged user")]
    Privileged(String),
    #[error("dropping privileges needs a process with one thread, this one has {0}")]
    Threads(usize),
    #[error("dropping privileges: {step} failed")]
    Step {
        step: &'static str,
        source: std::io::Error,
    },
    #[error("dropping privileges: capabilities still effective afterwards ({0})")]
    Left(String),
}

impl PrivilegeError {
    /// The user the error is about, if it is about one.
    pub fn user(&self) -> Option<&str> {
        match self {
            PrivilegeError::NoUser(name)
            | PrivilegeError::Lookup { name, .. }
            | PrivilegeError::CannotSwitch(name)
            | PrivilegeError::Privileged(name) => Some(name),
            _ => None,
        }
    }
}

/// An account to switch to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

impl User {
    /// Looks `name` up in the user database (so a typo is an error before the probe loads).
    pub fn lookup(name: &str) -> Result<User, PrivilegeError> {
        let c_name = CString::new(name).map_err(|_| PrivilegeError::NoUser(name.into()))?;
        // SAFETY: passwd is plain C data; all zeroes is a valid value to be filled in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is to live memory of the given size; getpwnam_r writes strings
        // into `buf` only, and `found` either stays null or points at `pwd`.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc != 0 {
            return Err(PrivilegeError::Lookup {
                name: name.into(),
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        if found.is_null() {
            return Err(PrivilegeError::NoUser(name.into()));
        }
        Ok(User {
            name: name.into(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        })
    }
}

/// The user [`drop_all`] switches to, looked up and checked now (before the probe loads):
/// `name`, else `nobody` when running as root. None when not root and no user is named: there
/// is nothing to switch, and a system without `nobody` is no obstacle.
pub fn target(name: Option<&str>) -> Result<Option<User>, PrivilegeError> {
    let Some(name) = name.or(is_root().then_some("nobody")) else {
        return Ok(None);
    };
    let user = User::lookup(name)?;
    check_switch(&user)?;
    Ok(Some(user))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails now, before the probe loads, if [`drop_all`] could not switch to `user` later, or if
/// `user` is root's uid or group, where switching would keep root's privileges (files, ports,
/// other processes) however empty the capability sets.
pub fn check_switch(user: &User) -> Result<(), PrivilegeError> {
    const CAP_SETGID: u32 = 6;
    const CAP_SETUID: u32 = 7;
    if user.uid == 0 || user.gid == 0 {
        return Err(PrivilegeError::Privileged(user.name.clone()));
    }
    let root = is_root();
    let caps = held_caps();
    let can = caps & (1 << CAP_SETUID) != 0 && caps & (1 << CAP_SETGID) != 0;
    if root && !can {
        return Err(PrivilegeError::CannotSwitch(user.name.clone()));
    }
    Ok(())
}

/// What [`drop_all`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The uid the process runs as now.
    pub uid: libc::uid_t,
    /// Whether it switched to the requested user (it does when it ran as root).
    pub switched: bool,
    /// Whether the bounding set is empty too: without CAP_SETPCAP it cannot be emptied. With
    /// no-new-privs set and no uid 0 left, what it still holds can never be gained again.
    pub bounding_dropped: bool,
}

/// Switches to `user` when running as root (see [`target`]), then clears every capability set and sets
/// no-new-privs, so that nothing executed later can regain any.
///
/// Call it before the process starts a second thread: capabilities and the bounding set are
/// per thread (the uid switch is not: the C library applies it to every thread).
pub fn drop_all(user: Option<&User>) -> Result<Dropped, PrivilegeError> {
    let threads = thread_count();
    if threads != 1 {
        return Err(PrivilegeError::Threads(threads));
    }
    let step = |step: &'static str, rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(PrivilegeError::Step {
                step,
                source: std::io::Error::last_os_error(),
            })
        }
    };
    // SAFETY: prctl with integer arguments only changes this thread's flags.
    step("no-new-privs", unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    })?;
    let root = is_root();
    if held_caps() & (1 << CAP_SETPCAP) != 0 {
        drop_bounding_set().map_err(|source| PrivilegeError::Step {
            step: "dropping the bounding set",
            source,
        })?;
    }
    if root {
        let user = user.ok_or_else(|| PrivilegeError::NoUser("nobody".into()))?;
        // SAFETY: setgroups with a null list and length 0 empties the supplementary groups.
        step("setgroups", unsafe { libc::setgroups(0, std::ptr::null()) })?;
        // SAFETY: plain id changes; the C library applies them to every thread.
        step("setresgid", unsafe {
            libc::setresgid(user.gid, user.gid, user.gid)
        })?;
        // SAFETY: as above. Leaving uid 0 for good clears the permitted and effective sets.
        step("setresuid", unsafe {
            libc::setresuid(user.uid, user.uid, user.uid)
        })?;
    }
    // SAFETY: prctl with integer arguments only changes this thread's ambient set.
    step("clearing the ambient set", unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    clear_caps().map_err(|source| PrivilegeError::Step {
        step: "capset",
        source,
    })?;
    let left = held_caps();
    if left != 0 {
        return Err(PrivilegeError::Left(format!("CapEff {left:016x}")));
    }
    Ok(Dropped {
        // SAFETY: getuid has no preconditions and cannot fail.
        uid: unsafe { libc::getuid() },
        switched: root,
        bounding_dropped: bounding_caps() == 0,
    })
}

/// Drops every capability from this thread's bounding set: numbers upwards until the first one
/// this kernel does not know (EINVAL), so that neither an unreadable `cap_last_cap` nor a
/// kernel with fewer capabilities than loadprobe was built for turns into an error.
fn drop_bounding_set() -> std::io::Result<()> {
    // Capability sets are 64 bits wide: no capability has a higher number.
    for cap in 0..64 as libc::c_ulong {
        // SAFETY: prctl with integer arguments only changes this thread's bounding set; an
        // unknown capability number only returns EINVAL.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) && cap > 0 {
                return Ok(());
            }
            return Err(err);
        }
    }
    Ok(())
}

/// Empties this thread's effective, permitted and inheritable sets.
fn clear_caps() -> std::io::Result<()> {
    capset(&[CapData::default(); 2])
}

/// One half of the capability sets as capget(2) and capset(2) take them (version 3: two
/// halves, capabilities 0-31 then 32-63).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// This thread's capability sets (capget(2); the libc crate has no wrapper for it).
fn capget(data: &mut [CapData; 2]) -> std::io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: version 3 takes a header and two data structs, both live and correctly laid
    // out; the kernel writes the two data structs only.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets this thread's capability sets (capset(2)); lowering them is always allowed.
fn capset(data: &[CapData; 2]) -> std::io::Result<()> {
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: version 3 takes a header and two data structs, both live and correctly laid
    // out; the kernel only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn status_field(name: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
}

/// capability(7) numbers the probe and the namespaces need.
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;
/// capability(7) numbers of the file access checks a process running as uid 0 may still need.
pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_FOWNER: u32 = 3;

/// The capabilities uid 0 needs, once it holds no others, to rename a file of its own over
/// `target` in `dir` (and to remove that file instead): CAP_DAC_OVERRIDE when the directory's
/// mode does not let this process's uid or groups write and search it, or a directory above
/// it search, CAP_FOWNER when a sticky directory's `target` exists and belongs to neither this
/// uid nor the directory's owner (the rename replaces it). An unreadable directory needs the
/// override. Modes only: ACLs and read-only mounts are not foreseen.
pub fn caps_to_replace_in(dir: &Path, target: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return 1 << CAP_DAC_OVERRIDE;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let class = |meta: &std::fs::Metadata| {
        let mode = meta.mode();
        if meta.uid() == uid {
            mode >> 6
        } else if in_groups(meta.gid()) {
            mode >> 3
        } else {
            mode
        }
    };
    let mode = meta.mode();
    let mut needs = 0;
    // Write and search here; search in every directory above.
    let searchable = |d: &Path| std::fs::metadata(d).is_ok_and(|m| class(&m) & 0o1 != 0);
    let above_ok = std::fs::canonicalize(dir).is_ok_and(|d| d.ancestors().skip(1).all(searchable));
    if class(&meta) & 0o3 != 0o3 || !above_ok {
        needs |= 1 << CAP_DAC_OVERRIDE;
    }
    if mode & libc::S_ISVTX != 0
        && meta.uid() != uid
        && std::fs::symlink_metadata(target).is_ok_and(|t| t.uid() != uid)
    {
        needs |= 1 << CAP_FOWNER;
    }
    needs
}

/// Whether `gid` is this process's effective group or one of its supplementary groups.
fn in_groups(gid: libc::gid_t) -> bool {
    // SAFETY: getegid has no preconditions and cannot fail.
    if unsafe { libc::getegid() } == gid {
        return true;
    }
    // SAFETY: a zero-length call only returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n <= 0 {
        return false;
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `groups` has room for `n` entries.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    n > 0 && groups[..n as usize].contains(&gid)
}

/// What [`drop_caps_in_every_thread`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapsDropped {
    /// The capabilities still effective (and permitted): those asked to be kept that the
    /// process had.
    pub kept: u64,
    /// Threads that gave theirs up (the calling one included).
    pub threads: usize,
    /// Whether the bounding set is empty and the securebits are locked: without CAP_SETPCAP
    /// neither can be done, and no-new-privs alone stops an exec from gaining capabilities.
    pub bounding_dropped: bool,
}

/// securebits(7): uid 0 gains no capabilities at exec (NOROOT), the keep-caps flag stays off
/// and no capability can be raised into the ambient set, each of the three locked.
const SECUREBITS: libc::c_ulong = bit(0) // SECURE_NOROOT
    | bit(1) // SECURE_NOROOT_LOCKED
    | bit(5) // SECURE_KEEP_CAPS_LOCKED
    | bit(6) // SECURE_NO_CAP_AMBIENT_RAISE
    | bit(7); // SECURE_NO_CAP_AMBIENT_RAISE_LOCKED

const fn bit(n: u32) -> libc::c_ulong {
    1 << n
}

/// What every thread keeps, for the signal handler.
static KEEP: AtomicU64 = AtomicU64::new(0);
/// Threads whose handler has run since the last broadcast.
static ANSWERED: AtomicUsize = AtomicUsize::new(0);
/// The first failure in a handler: the step's index + 1 in the high half, errno in the low.
static FAILED: AtomicU64 = AtomicU64::new(0);

/// How often [`drop_caps_in_every_thread`] goes over the threads before it gives up: a thread
/// started meanwhile by one that had not dropped yet inherits its capabilities and is found
/// on the next pass.
const PASSES: usize = 10;
/// How long one pass waits for the threads it signalled.
const PASS_WAIT: Duration = Duration::from_secs(1);

/// The steps of [`drop_this_thread`], by index, for errors.
const STEPS: [&str; 6] = [
    "capget",
    "setting the securebits",
    "dropping the bounding set",
    "no-new-privs",
    "clearing the ambient set",
    "capset",
];

/// The signal that makes a thread drop its capabilities. No library loadprobe links uses
/// real-time signals (the C library's own are below SIGRTMIN).
fn drop_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// Gives up every capability but those in `keep` (a mask of capability(7) numbers) in every
/// thread of the process, without changing its uid: empties the inheritable, ambient and
/// bounding sets, lowers the effective and permitted sets to `keep`, sets no-new-privs and
/// locks the securebits so that an exec (also by uid 0) regains nothing.
///
/// Capabilities belong to each thread, and a process that already runs a runtime cannot make
/// them go away in one call: the calling thread drops its own, then every other thread is sent
/// [`drop_signal`], whose handler does the same, pass after pass, until `/proc/self/task` shows
/// no thread holding more. Threads started later inherit the lowered sets.
pub fn drop_caps_in_every_thread(keep: u64) -> Result<CapsDropped, PrivilegeError> {
    let setpcap = held_caps() & (1 << CAP_SETPCAP) != 0;
    KEEP.store(keep, Ordering::SeqCst);
    FAILED.store(0, Ordering::SeqCst);
    // SAFETY: the handler only makes raw syscalls and touches atomics (async-signal-safe);
    // `sa` is fully initialised before the call.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_drop_signal as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(drop_signal(), &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(PrivilegeError::Step {
            step: "installing the signal handler",
            source: std::io::Error::last_os_error(),
        });
    }
    drop_this_thread(keep).map_err(step_error)?;
    // SAFETY: getpid has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() };
    for _ in 0..PASSES {
        let holding: Vec<libc::pid_t> = threads()
            .into_iter()
            .filter(|&tid| still_holds(tid, keep, setpcap))
            .collect();
        if holding.is_empty() {
            return Ok(CapsDropped {
                kept: held_caps() & keep,
                threads: threads().len(),
                bounding_dropped: setpcap,
            });
        }
        ANSWERED.store(0, Ordering::SeqCst);
        let mut sent = 0;
        for tid in holding {
            // SAFETY: tgkill to a thread of this process; one that exited meanwhile is ESRCH.
            if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, drop_signal()) } == 0 {
                sent += 1;
            }
        }
        let deadline = Instant::now() + PASS_WAIT;
        while ANSWERED.load(Ordering::SeqCst) < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let failed = FAILED.load(Ordering::SeqCst);
        if failed != 0 {
            return Err(step_error((
                (failed >> 32) as usize - 1,
                (failed & 0xffff_ffff) as i32,
            )));
        }
    }
    Err(PrivilegeError::Left(format!(
        "threads still holding capabilities after {PASSES} passes"
    )))
}

fn step_error((step, errno): (usize, i32)) -> PrivilegeError {
    PrivilegeError::Step {
        step: STEPS[step],
        source: std::io::Error::from_raw_os_error(errno),
    }
}

extern "C" fn on_drop_signal(_: libc::c_int) {
    // SAFETY: this thread's errno, saved and restored around the handler's syscalls.
    let errno = unsafe { *libc::__errno_location() };
    if let Err((step, err)) = drop_this_thread(KEEP.load(Ordering::SeqCst)) {
        let code = ((step as u64 + 1) << 32) | u64::from(err as u32);
        let _ = FAILED.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
    }
    ANSWERED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The calling thread's part of [`drop_caps_in_every_thread`]: raw syscalls only, so that a
/// signal handler may run it. On failure, the index of the step in [`STEPS`] and errno.
fn drop_this_thread(keep: u64) -> Result<(), (usize, i32)> {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut data = [CapData::default(); 2];
    capget(&mut data).map_err(|_| (0, errno()))?;
    let permitted = u64::from(data[0].permitted) | u64::from(data[1].permitted) << 32;
    let effective = u64::from(data[0].effective) | u64::from(data[1].effective) << 32;
    if effective & (1 << CAP_SETPCAP) != 0 {
        // The bits already set stay (a locked one cannot be cleared), and a refusal (bits a
        // service manager locked) is no failure: no-new-privs, below, already keeps an exec
        // from gaining anything; the securebits only make that hold twice.
        // SAFETY: prctl with integer arguments only reads or changes this thread's flags.
        let current = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
        if current >= 0 {
            let bits = SECUREBITS | current as libc::c_ulong;
            // SAFETY: as above.
            let _ = unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) };
        }
        for cap in 0..64 as libc::c_ulong {
            // SAFETY: as above, for this thread's bounding set; an unknown capability number
            // only returns EINVAL.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
                let e = errno();
                if e == libc::EINVAL && cap > 0 {
                    break;
                }
                return Err((2, e));
            }
        }
    }
    // SAFETY: as above.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err((3, errno()));
    }
    // SAFETY: as above, for this thread's ambient set.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err((4, errno()));
    }
    let kept = permitted & keep;
    let set = CapData {
        effective: kept as u32,
        permitted: kept as u32,
        inheritable: 0,
    };
    let high = CapData {
        effective: (kept >> 32) as u32,
        permitted: (kept >> 32) as u32,
        inheritable: 0,
    };
    capset(&[set, high]).map_err(|_| (5, errno()))
}

/// The threads of this process (`/proc/self/task`).
fn threads() -> Vec<libc::pid_t> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether thread `tid` still holds more than `keep` (or, when the bounding set could be
/// emptied, any of it), or lacks no-new-privs. A thread that is gone holds nothing.
fn still_holds(tid: libc::pid_t, keep: u64, bounding: bool) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(u64::MAX)
    };
    field("CapEff:") & !keep != 0
        || field("CapPrm:") & !keep != 0
        || field("CapInh:") != 0
        || field("CapAmb:") != 0
        || (bounding && field("CapBnd:") != 0)
        || field("NoNewPrivs:") != 1
}

/// The calling thread's effective capabilities (`CapEff`), `None` if unreadable.
pub fn effective_caps() -> Option<u64> {
    status_field("CapEff:").and_then(|hex| u64::from_str_radix(&hex, 16).ok())
}

/// Whether the calling thread has `cap` in its effective set (no if unreadable), so a missing
/// privilege is one clear line instead of an EPERM from deep inside a syscall or `ip`.
pub fn has_cap(cap: u32) -> bool {
    effective_caps().is_some_and(|caps| caps & (1 << cap) != 0)
}

/// This thread's effective capabilities, all set if unreadable, so that nothing passes for
/// dropped that was not.
fn held_caps() -> u64 {
    effective_caps().unwrap_or(u64::MAX)
}

/// This thread's bounding set (all set if unreadable).
fn bounding_caps() -> u64 {
    status_field("CapBnd:")
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(u64::MAX)
}

fn thread_count() -> usize {
    status_field("Threads:")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_user_is_named() {
        let err = User::lookup("no-such-user-loadprobe").unwrap_err();
        assert!(
            matches!(&err, PrivilegeError::NoUser(name) if name == "no-such-user-loadprobe"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "no such user");
    }

    #[test]
    fn root_is_uid_0() {
        assert_eq!(User::lookup("root").unwrap().uid, 0);
    }

    #[test]
    fn an_account_of_uid_or_gid_0_is_refused() {
        for (uid, gid) in [(0, 0), (0, 65534), (65534, 0)] {
            let user = User {
                name: "toor".into(),
                uid,
                gid,
            };
            let err = check_switch(&user).unwrap_err();
            assert!(matches!(err, PrivilegeError::Privileged(_)), "{err}");
        }
    }
}
