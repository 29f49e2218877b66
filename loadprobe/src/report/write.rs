//! Writing outputs atomically: a reader (or a run killed mid-write) never sees half a file,
//! and a path that cannot be written is found out before the work that fills it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{ReportError, RunRecord};

/// An output reserved before the work that fills it, so that a missing directory or an
/// unwritable place fails before any load starts.
///
/// A regular file (or a new path) gets a temporary file next to it at once (same directory, so
/// the final rename is atomic: a reader, or a run killed mid-write, never sees half a file). Its
/// name is random and made with `O_EXCL` ([`tempfile`]), so two outputs of one run, or a file
/// planted under a guessable name, cannot meet it. A symbolic link is followed, so the file it
/// points to is replaced and the link stays. Anything else that exists (`/dev/null`, a FIFO,
/// a pipe) is opened at once and written in place: renaming over a device would replace the
/// device node itself. Opening a FIFO waits for its reader, as any writer's open does.
/// `/dev/stdout` and `/dev/stderr` are this process's own descriptors, written as they are. Dropped unwritten, a reservation removes its temporary file.
#[derive(Debug)]
pub struct PendingOutput {
    path: PathBuf,
    target: Target,
}

#[derive(Debug)]
enum Target {
    /// Filled, then renamed over `real` (the path, or the file its symbolic link names).
    Replace {
        file: tempfile::NamedTempFile,
        real: PathBuf,
    },
    /// Not a regular file: written where it is.
    InPlace(std::fs::File),
}

impl PendingOutput {
    pub fn create(path: &Path) -> Result<PendingOutput, ReportError> {
        let err = |source| ReportError::Write {
            path: path.display().to_string(),
            source,
        };
        // This process's own stdout or stderr, whatever it is (a file the shell appends to
        // included): written through the descriptor itself, so it lands where the shell put it.
        if let Some(stream) = standard_stream(path) {
            return Ok(PendingOutput {
                path: path.to_path_buf(),
                target: Target::InPlace(std::fs::File::from(stream.map_err(err)?)),
            });
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => return Err(err(std::io::Error::other("is a directory"))),
            Ok(m) if !m.is_file() => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(err)?;
                return Ok(PendingOutput {
                    path: path.to_path_buf(),
                    target: Target::InPlace(file),
                });
            }
            _ => {}
        }
        // Through a symbolic link, the file it names is the one replaced.
        let real = if path.is_symlink() {
            std::fs::canonicalize(path).map_err(err)?
        } else {
            path.to_path_buf()
        };
        let dir = match real.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = real
            .file_name()
            .ok_or_else(|| err(std::io::Error::other("not a file name")))?;
        let file = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            // What `File::create` would give (less the umask): a record is for others to read.
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(err)?;
        Ok(PendingOutput {
            path: path.to_path_buf(),
            target: Target::Replace { file, real },
        })
    }

    /// The file this will become.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary file, if there is one, for a caller that exits without unwinding (which
    /// skips `Drop`) to remove.
    pub fn temp_path(&self) -> Option<&Path> {
        match &self.target {
            Target::Replace { file, .. } => Some(file.path()),
            Target::InPlace(_) => None,
        }
    }

    /// The file the temporary one is renamed over at the end (through a symbolic link, the
    /// file it names), if there is a temporary one.
    pub fn replaced(&self) -> Option<&Path> {
        match &self.target {
            Target::Replace { real, .. } => Some(real),
            Target::InPlace(_) => None,
        }
    }

    /// Writes `value` as pretty JSON and renames the file over the target; returns the
    /// target's path, for people.
    pub fn write(self, value: &impl Serialize) -> Result<String, ReportError> {
        let mut json = serde_json::to_vec_pretty(value)?;
        json.push(b'\n');
        self.write_bytes(&json)
    }

    /// Writes `bytes` (a rendered page, say) and renames the file over the target; returns the
    /// target's path, for people.
    pub fn write_bytes(self, bytes: &[u8]) -> Result<String, ReportError> {
        let shown = self.path.display().to_string();
        let err = |source| ReportError::Write {
            path: shown.clone(),
            source,
        };
        match self.target {
            Target::InPlace(mut file) => file.write_all(bytes).map_err(err)?,
            Target::Replace { mut file, real } => {
                file.write_all(bytes)
                    .and_then(|()| file.as_file().sync_all())
                    .map_err(err)?;
                // On failure the temporary file is dropped, and removed, with the error.
                file.persist(&real).map_err(|e| err(e.error))?;
            }
        }
        Ok(shown)
    }
}

/// A copy of the descriptor `path` names when it is this process's standard output or error
/// (`/dev/stdout`, `/dev/fd/2`, `/proc/self/fd/1`, …).
fn standard_stream(path: &Path) -> Option<std::io::Result<std::os::fd::OwnedFd>> {
    use std::os::fd::AsFd;
    let fd = match path.to_str()? {
        "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1" | "/proc/thread-self/fd/1" => 1,
        "/dev/stderr" | "/dev/fd/2" | "/proc/self/fd/2" | "/proc/thread-self/fd/2" => 2,
        _ => return None,
    };
    Some(if fd == 1 {
        std::io::stdout().as_fd().try_clone_to_owned()
    } else {
        std::io::stderr().as_fd().try_clone_to_owned()
    })
}

/// Writes `record` as pretty JSON to a temporary file next to `path`, then renames it over
/// `path`.
pub fn write_atomic(path: &Path, record: &RunRecord) -> Result<(), ReportError> {
    PendingOutput::create(path)?.write(record).map(drop)
}

#[cfg(test)]
mod tests {
    use super::PendingOutput;

    /// Two outputs reserved for one path (a run's record and page given the same name, two
    /// runs at once) get temporary files of their own: each write lands whole, the last wins.
    #[test]
    fn two_reservations_of_one_path_do_not_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let a = PendingOutput::create(&path).unwrap();
        let b = PendingOutput::create(&path).unwrap();
        assert_ne!(a.temp_path().unwrap(), b.temp_path().unwrap());
        a.write_bytes(b"first").unwrap();
        b.write_bytes(b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    }

    /// Dropped unwritten, a reservation removes its temporary file.
    #[test]
    fn an_unwritten_reservation_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        drop(PendingOutput::create(&path).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A target that is not a regular file (here a FIFO; `/dev/null` is the common one) is
    /// written in place: renaming over it would replace the node itself with a plain file.
    #[test]
    fn a_fifo_is_written_in_place_and_stays_a_fifo() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let out = PendingOutput::create(&fifo).unwrap();
        assert!(out.temp_path().is_none());
        out.write_bytes(b"record").unwrap();
        assert_eq!(reader.join().unwrap(), b"record");
        let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(kind.is_fifo(), "{kind:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Through a symbolic link the file it names is replaced, and the link stays a link.
    #[test]
    fn a_symbolic_link_keeps_pointing_at_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("records");
        std::fs::create_dir(&sub).unwrap();
        let real = sub.join("r.json");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.path().join("latest.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        PendingOutput::create(&link)
            .unwrap()
            .write_bytes(b"new")
            .unwrap();
        assert!(link.is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert_eq!(
            std::fs::read_dir(&sub).unwrap().count(),
            1,
            "temporary file left"
        );
    }
}
