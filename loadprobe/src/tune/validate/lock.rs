//! One validation per namespace prefix at a time.
//!
//! A validation starts by deleting namespaces of its prefix left by a crashed run
//! ([`crate::tune::netns::cleanup_stale`]). That is only safe when no live run uses them, so the
//! prefix is locked first: `flock` on `/run/lock/loadprobe-validate-<prefix>.lock`, released by
//! the kernel when the process dies however it dies.
//!
//! The holder removes the file when it is done, so runs leave nothing behind. That opens one
//! race, handled the usual way: a process that opened the file just before it was removed can
//! lock the removed file, so after locking it checks that the path still names the file it
//! locked, and starts over if not.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::ValidateError;

/// Held for the whole validation; dropping it removes the file and releases the lock.
#[derive(Debug)]
pub struct PrefixLock {
    path: PathBuf,
    _file: File,
}

impl Drop for PrefixLock {
    fn drop(&mut self) {
        // Still locked here: whoever opens the path next creates a new file.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn path(prefix: &str) -> PathBuf {
    let dir = PathBuf::from("/run/lock");
    let dir = if dir.is_dir() {
        dir
    } else {
        PathBuf::from("/run")
    };
    dir.join(format!("loadprobe-validate-{prefix}.lock"))
}

/// Takes the lock for `prefix`, or says that another validation holds it. `prefix` must
/// already be checked (it becomes part of a file name).
pub fn lock(prefix: &str) -> Result<PrefixLock, ValidateError> {
    let path = path(prefix);
    let err = |error| ValidateError::Lock {
        path: path.display().to_string(),
        error,
    };
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        // SAFETY: a valid open fd; flock only changes the lock on it.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = io::Error::last_os_error();
            return Err(if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                ValidateError::Busy(prefix.to_string())
            } else {
                err(error)
            });
        }
        let locked = file.metadata().map_err(err)?.ino();
        match std::fs::metadata(&path) {
            Ok(m) if m.ino() == locked => return Ok(PrefixLock { path, _file: file }),
            // Removed (or replaced) by the previous holder after we opened it: try again.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_prefix_and_no_file_left() {
        let prefix = format!("lpunit{}", std::process::id());
        let held = lock(&prefix).expect("first lock");
        assert!(path(&prefix).exists());
        let err = lock(&prefix).expect_err("second lock");
        assert!(
            matches!(err, ValidateError::Busy(ref p) if *p == prefix),
            "{err}"
        );
        assert!(err.to_string().contains("another `tune validate`"));
        drop(held);
        assert!(!path(&prefix).exists());
        drop(lock(&prefix).expect("free again"));
    }
}
