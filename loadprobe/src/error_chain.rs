//! Reading an error's chain of sources: the one-line text users see, and the errno behind it.
//! Library errors keep their sources (`#[source]`) instead of flattening them into strings;
//! these are for the few places that must store or classify the whole chain.

use std::error::Error;
use std::io;

/// The error and each of its sources, joined by ": " on one line, as `anyhow`'s `{:#}` prints
/// them, for users and for a reason kept in a record. A source whose text its error already
/// shows is left out: several of aya's errors print their source and also return it
/// (`map error: failed to create map X` over `failed to create map X`).
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut shown = text.clone();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !shown.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        shown = part;
        source = s.source();
    }
    text
}

/// The first `io::Error` in the chain (the error itself included): the errno a failed
/// syscall deep inside a library returned.
pub fn io_error<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a io::Error> {
    let mut next = Some(e);
    while let Some(current) = next {
        if let Some(io) = current.downcast_ref::<io::Error>() {
            return Some(io);
        }
        next = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("loading program x failed")]
    struct Outer(#[source] io::Error);

    #[test]
    fn one_line_joins_every_source_and_io_error_finds_the_errno() {
        let e = Outer(io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(
            one_line(&e),
            "loading program x failed: Operation not permitted (os error 1)"
        );
        assert_eq!(
            io_error(&e).and_then(io::Error::raw_os_error),
            Some(libc::EPERM)
        );
        assert!(
            io_error(&Outer(io::Error::other("no errno")))
                .unwrap()
                .raw_os_error()
                .is_none()
        );
        let plain = std::fmt::Error;
        assert!(io_error(&plain).is_none());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("map error: {0}")]
    struct Repeats(#[source] Outer);

    #[test]
    fn a_source_its_error_already_shows_is_not_repeated() {
        let e = Repeats(Outer(io::Error::from_raw_os_error(libc::EPERM)));
        assert_eq!(
            one_line(&e),
            "map error: loading program x failed: Operation not permitted (os error 1)"
        );
    }
}
