//! Error classes: what a failed request is counted as. The point of the tool is to tell port
//! exhaustion (`EADDRNOTAVAIL`) from a full accept queue (`ECONNREFUSED`, timeouts) from a server
//! that resets, so transport errors keep their errno name instead of being lumped together.

use std::borrow::Cow;
use std::fmt;
use std::io;

/// Why one request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// A system call failed with this errno (connect, read, write).
    Errno(i32),
    /// The response status was 4xx.
    Http4xx,
    /// The response status was 5xx.
    Http5xx,
    /// Our own connect or request timeout fired.
    Timeout,
    /// The server closed the connection before the response was complete.
    Eof,
    /// The response was not parseable HTTP/1.x.
    Protocol,
}

impl ErrorClass {
    /// Classifies an I/O error; errors without an errno (rare in practice) count as `EIO`.
    pub fn from_io(e: &io::Error) -> ErrorClass {
        match e.raw_os_error() {
            Some(errno) => ErrorClass::Errno(errno),
            None => match e.kind() {
                io::ErrorKind::TimedOut => ErrorClass::Timeout,
                io::ErrorKind::UnexpectedEof | io::ErrorKind::WriteZero => ErrorClass::Eof,
                _ => ErrorClass::Errno(libc::EIO),
            },
        }
    }

    /// The key used in reports and run records: the errno name (`EADDRNOTAVAIL`), or one of
    /// `http_4xx`, `http_5xx`, `timeout`, `eof`, `protocol`.
    pub fn name(&self) -> Cow<'static, str> {
        match self {
            ErrorClass::Errno(e) => match errno_name(*e) {
                Some(name) => Cow::Borrowed(name),
                None => Cow::Owned(format!("errno_{e}")),
            },
            ErrorClass::Http4xx => Cow::Borrowed("http_4xx"),
            ErrorClass::Http5xx => Cow::Borrowed("http_5xx"),
            ErrorClass::Timeout => Cow::Borrowed("timeout"),
            ErrorClass::Eof => Cow::Borrowed("eof"),
            ErrorClass::Protocol => Cow::Borrowed("protocol"),
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Names of the errnos a TCP client can plausibly see; libc has no portable errno → name.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::EPIPE => "EPIPE",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::EAGAIN => "EAGAIN",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EALREADY => "EALREADY",
        libc::EINTR => "EINTR",
        libc::EINVAL => "EINVAL",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EPROTO => "EPROTO",
        libc::ENOTCONN => "ENOTCONN",
        libc::EIO => "EIO",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            ErrorClass::Errno(libc::EADDRNOTAVAIL).name(),
            "EADDRNOTAVAIL"
        );
        assert_eq!(ErrorClass::Errno(9999).name(), "errno_9999");
        assert_eq!(ErrorClass::Http5xx.name(), "http_5xx");
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(ErrorClass::from_io(&e).name(), "ECONNREFUSED");
    }
}
