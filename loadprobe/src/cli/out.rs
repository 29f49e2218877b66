//! Standard output for reports: a reader that went away (`loadprobe run | head -1`) is not an
//! error. What matters has been written to files before the report is printed, and the exit
//! status still says how the run went, so output to a closed pipe is dropped, quietly.

use std::io::{self, Write};

/// Standard output that swallows EPIPE (and a hung-up terminal's EIO): after the first such
/// error every further write succeeds without doing anything. Other errors (a full disk behind a redirect) still surface.
pub struct Stdout {
    inner: io::Stdout,
    closed: bool,
}

impl Stdout {
    pub fn new() -> Stdout {
        Stdout {
            inner: io::stdout(),
            closed: false,
        }
    }

    /// Whoever read standard output has gone: nothing written from now on reaches anyone.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn guard<T>(&mut self, done: T, r: io::Result<T>) -> io::Result<T> {
        match r {
            // EPIPE for a pipe; EIO (ENXIO) for a terminal that hung up, which a trace that
            // outlives its session (SIGHUP does not stop it) meets at its next line.
            Err(e)
                if e.kind() == io::ErrorKind::BrokenPipe
                    || matches!(e.raw_os_error(), Some(libc::EIO | libc::ENXIO)) =>
            {
                self.closed = true;
                Ok(done)
            }
            other => other,
        }
    }
}

impl Default for Stdout {
    fn default() -> Stdout {
        Stdout::new()
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let r = self.inner.write(buf);
        self.guard(buf.len(), r)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.inner.flush();
        self.guard((), r)
    }
}

/// `eprintln!` for a stderr that may be a closed pipe too (`loadprobe run 2>&1 | head -1`):
/// the line is dropped instead of panicking, since stderr has nowhere to report its own failure.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use note;
