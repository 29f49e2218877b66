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
    /// The TLS handshake failed, for this reason.
    Tls(TlsFailure),
}

/// Why a TLS handshake failed, in the classes a user acts on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsFailure {
    /// The server's certificate chain does not lead to a trusted root.
    UnknownCa,
    /// The certificate is not valid for the name sent (SNI).
    NameMismatch,
    /// The certificate is expired (or not yet valid).
    Expired,
    /// Client and server share no protocol version.
    ProtocolVersion,
    /// The server answered the ClientHello with something that is not TLS: a plain-HTTP
    /// server on an https URL.
    PlainHttp,
    /// A TLS server answered a plain HTTP request: an https server on an http URL.
    TlsOnHttp,
    /// Any other handshake failure (no shared cipher suite, a client certificate refused...).
    Handshake,
}

impl TlsFailure {
    const ALL: [TlsFailure; 7] = [
        TlsFailure::UnknownCa,
        TlsFailure::NameMismatch,
        TlsFailure::Expired,
        TlsFailure::ProtocolVersion,
        TlsFailure::PlainHttp,
        TlsFailure::TlsOnHttp,
        TlsFailure::Handshake,
    ];

    /// The error class name in reports: `tls_unknown_ca` and so on.
    pub fn name(self) -> &'static str {
        match self {
            TlsFailure::UnknownCa => "tls_unknown_ca",
            TlsFailure::NameMismatch => "tls_name_mismatch",
            TlsFailure::Expired => "tls_expired",
            TlsFailure::ProtocolVersion => "tls_protocol_version",
            TlsFailure::PlainHttp => "tls_plain_http_server",
            TlsFailure::TlsOnHttp => "tls_server_on_http",
            TlsFailure::Handshake => "tls_handshake",
        }
    }
}

impl ErrorClass {
    /// What a response with this status is counted as: 4xx and 5xx are errors (their latency
    /// still counts), anything else is a success.
    pub fn from_status(status: u16) -> Result<(), ErrorClass> {
        match status {
            400..=499 => Err(ErrorClass::Http4xx),
            500..=599 => Err(ErrorClass::Http5xx),
            _ => Ok(()),
        }
    }

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
    /// `http_4xx`, `http_5xx`, `timeout`, `eof`, `protocol`, or a `tls_` class ([`TlsFailure`]).
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
            ErrorClass::Tls(failure) => Cow::Borrowed(failure.name()),
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The errnos a TCP client can plausibly see, by name; libc has no portable errno → name.
const ERRNO_NAMES: [(i32, &str); 24] = [
    (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (libc::EADDRINUSE, "EADDRINUSE"),
    (libc::ECONNREFUSED, "ECONNREFUSED"),
    (libc::ECONNRESET, "ECONNRESET"),
    (libc::ECONNABORTED, "ECONNABORTED"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENFILE, "ENFILE"),
    (libc::EPIPE, "EPIPE"),
    (libc::ENETUNREACH, "ENETUNREACH"),
    (libc::EHOSTUNREACH, "EHOSTUNREACH"),
    (libc::ENETDOWN, "ENETDOWN"),
    (libc::ENOBUFS, "ENOBUFS"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::EINPROGRESS, "EINPROGRESS"),
    (libc::EALREADY, "EALREADY"),
    (libc::EINTR, "EINTR"),
    (libc::EINVAL, "EINVAL"),
    (libc::EACCES, "EACCES"),
    (libc::EPERM, "EPERM"),
    (libc::EPROTO, "EPROTO"),
    (libc::ENOTCONN, "ENOTCONN"),
    (libc::EIO, "EIO"),
];

/// Names of the errnos a TCP client can plausibly see.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    ERRNO_NAMES
        .iter()
        .find(|(e, _)| *e == errno)
        .map(|(_, name)| *name)
}

impl ErrorClass {
    /// The classes that are not an errno, each once (for the list of known names).
    const NOT_ERRNO: [ErrorClass; 5] = [
        ErrorClass::Http4xx,
        ErrorClass::Http5xx,
        ErrorClass::Timeout,
        ErrorClass::Eof,
        ErrorClass::Protocol,
    ];

    /// Every name a class can have in a report, `errno_N` standing for the errnos without a
    /// name: what a gate on `requests.errors.NAME` may name.
    pub fn known_names() -> Vec<Cow<'static, str>> {
        ERRNO_NAMES
            .iter()
            .map(|(_, name)| Cow::Borrowed(*name))
            .chain(ErrorClass::NOT_ERRNO.iter().map(ErrorClass::name))
            .chain(TlsFailure::ALL.iter().map(|f| Cow::Borrowed(f.name())))
            .chain([Cow::Borrowed("errno_N")])
            .collect()
    }

    /// `name` is what [`ErrorClass::name`] gives for some class.
    pub fn is_known_name(name: &str) -> bool {
        let errno_n = name
            .strip_prefix("errno_")
            .is_some_and(|n| n.parse::<i32>().is_ok_and(|e| errno_name(e).is_none()));
        errno_n || ErrorClass::known_names().iter().any(|k| k == name)
    }
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
        assert_eq!(ErrorClass::from_status(200), Ok(()));
        assert_eq!(ErrorClass::from_status(304), Ok(()));
        assert_eq!(ErrorClass::from_status(404), Err(ErrorClass::Http4xx));
        assert_eq!(ErrorClass::from_status(503), Err(ErrorClass::Http5xx));
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(ErrorClass::from_io(&e).name(), "ECONNREFUSED");
    }

    #[test]
    fn every_class_has_a_known_name() {
        for class in [
            ErrorClass::Errno(libc::EADDRNOTAVAIL),
            ErrorClass::Errno(9999),
            ErrorClass::Http4xx,
            ErrorClass::Http5xx,
            ErrorClass::Timeout,
            ErrorClass::Eof,
            ErrorClass::Protocol,
            ErrorClass::Tls(TlsFailure::NameMismatch),
        ] {
            // Exhaustive: a new class must be added to NOT_ERRNO (or be an errno).
            match class {
                ErrorClass::Errno(_)
                | ErrorClass::Http4xx
                | ErrorClass::Http5xx
                | ErrorClass::Timeout
                | ErrorClass::Eof
                | ErrorClass::Protocol
                | ErrorClass::Tls(_) => {}
            }
            assert!(ErrorClass::is_known_name(&class.name()), "{class}");
        }
        for typo in ["EADDRNOTAVIAL", "errno_99", "errno_x", "Timeout", ""] {
            assert!(!ErrorClass::is_known_name(typo), "{typo}");
        }
    }
}
