//! File descriptor limits: every connection in flight is a descriptor (two with the embedded
//! server: the accepted side lives in this process too), and running out mid-run produces
//! EMFILE noise that looks like a server problem. So: raise the soft limit first, and refuse a
//! concurrency that cannot fit before starting.

use std::io;

/// Descriptors kept free for everything else (listener, runtime, stdio, /proc reads, netlink).
pub const RESERVED_FDS: u64 = 64;

/// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// Descriptors one connection in flight costs.
pub fn fds_per_connection(embedded_server: bool) -> u64 {
    if embedded_server { 2 } else { 1 }
}

/// How many connections can be open at once under `limit`.
pub fn max_connections(limit: u64, embedded_server: bool) -> u64 {
    limit.saturating_sub(RESERVED_FDS) / fds_per_connection(embedded_server)
}
