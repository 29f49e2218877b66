//! Shared helpers for tests that need real kernel state (root, private network namespaces).
//!
//! Tests that need root skip with a message when run unprivileged, so `cargo test` works anywhere,
//! but CI sets `LOADPROBE_REQUIRE_BPF=1` so that a skip there is a failure, not a silent pass.

use std::io;
use std::thread;

/// Whether a test that cannot run here must fail rather than skip: in CI (`.ci/run` sets
/// `LOADPROBE_REQUIRE_BPF=1`; `CI=true` counts too), where a skip would pass asserting nothing.
pub fn must_run() -> bool {
    std::env::var("LOADPROBE_REQUIRE_BPF").as_deref() == Ok("1")
        || std::env::var("CI").as_deref() == Ok("true")
}

/// Whether a root-only test named `what` should run.
///
/// Returns `true` when running as root. Otherwise prints a skip message and returns `false`,
/// or panics when [`must_run`], because then a skipped test would hide a missing capability in
/// the environment that is supposed to exercise it.
pub fn require_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if must_run() {
        panic!("{what}: needs root, and LOADPROBE_REQUIRE_BPF=1 forbids skipping");
    }
    eprintln!("skipping {what}: needs root (set LOADPROBE_REQUIRE_BPF=1 to make this a failure)");
    false
}

/// Runs `f` on a new thread that has its own, empty network namespace with loopback up.
///
/// `unshare(CLONE_NEWNET)` only moves the calling thread, so the rest of the test process (and the
/// host) keeps its namespace and sees none of the sockets or sysctl writes made by `f`. The
/// namespace has no other reference, so it disappears when the thread exits: nothing to clean up.
/// A fresh namespace starts with `lo` down, and then even 127.0.0.1 is unreachable, hence the
/// ioctl; bringing `lo` up also gives it `::1`.
///
/// Panics from `f` propagate to the caller with their original message. Needs root (CAP_SYS_ADMIN
/// for unshare): call [`require_root`] first.
pub fn in_fresh_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        let handle = s.spawn(|| {
            // SAFETY: unshare takes only flags; CLONE_NEWNET is allowed in a multi-threaded process
            // and affects just this thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!("unshare(CLONE_NEWNET): {}", io::Error::last_os_error());
            }
            if let Err(e) = loopback_up() {
                panic!("bringing lo up in the new network namespace: {e}");
            }
            f()
        });
        match handle.join() {
            Ok(v) => v,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// Sets IFF_UP on "lo" in the calling thread's network namespace (what `ip link set lo up` does,
/// but `ip` would run in its own process, whose namespace is the host's).
fn loopback_up() -> io::Result<()> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is a valid socket and req a valid ifreq that outlives both calls.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_netns_is_private_and_has_loopback() {
        if !require_root("fresh_netns_is_private_and_has_loopback") {
            return;
        }
        let (ns_ifaces, loopback_works) = in_fresh_netns(|| {
            let ifaces = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
            let l = std::net::TcpListener::bind("[::1]:0").unwrap();
            let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (_s, peer) = l.accept().unwrap();
            (ifaces, peer.ip().is_loopback())
        });
        assert!(loopback_works);
        // Two header lines, then lo only: none of the host's interfaces.
        assert_eq!(ns_ifaces.lines().count(), 3, "{ns_ifaces}");
        assert!(ns_ifaces.contains("lo:"), "{ns_ifaces}");
    }
}
