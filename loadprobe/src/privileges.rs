//! Giving up privileges once the probe is attached: the attached programs, the ring buffer's
//! mapping and the maps' file descriptors keep working without any capability (the kernel checks
//! privileges when a program is loaded or a map is created, not when an open descriptor is
//! used), so a long-running `trace` keeps none.

use std::ffi::CString;

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

/// Empties this thread's effective, permitted and inheritable sets (capset(2); the libc crate
/// has no wrapper for it).
fn clear_caps() -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data::default(); 2];
    // SAFETY: version 3 takes a header and two data structs, both live and correctly laid out;
    // the kernel only reads them. Lowering capabilities is always allowed.
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
