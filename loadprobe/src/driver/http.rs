//! A lean HTTP/1.1 response reader for the connection-per-request path.
//!
//! hyper's client connection costs a spawned task, a channel and several allocations per
//! connection, which is noise for keep-alive but a large share of the work when every request
//! opens a connection. This reader does one buffer (reused across requests), `httparse` for the
//! head, and Content-Length / chunked / read-to-EOF framing; that is all a load driver needs.

use std::io;
use std::time::Instant;

use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;

use super::errors::{ErrorClass, TlsFailure};
use super::stream::Stream;
use super::tls;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// What the driver needs to know about a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseInfo {
    pub status: u16,
    /// The server will close (or has closed) the connection after this response.
    pub close: bool,
}

enum Framing {
    Length(u64),
    Chunked,
    UntilEof,
    Empty,
}

/// Reads one full response. `first_byte` is set when the first bytes arrive.
pub(crate) async fn read_response(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    head_request: bool,
    first_byte: &mut Option<Instant>,
) -> Result<ResponseInfo, ErrorClass> {
    buf.clear();
    loop {
        if fill(stream, buf).await? == 0 {
            return Err(ErrorClass::Eof);
        }
        if first_byte.is_none() {
            *first_byte = Some(Instant::now());
        }
        // 1xx interim responses are skipped; a loop because several may be in one read.
        loop {
            let parsed = parse_head(buf, head_request)?;
            let Some((head_len, status, close, framing)) = parsed else {
                break;
            };
            if (100..200).contains(&status) && status != 101 {
                buf.drain(..head_len);
                continue;
            }
            let close = close || matches!(framing, Framing::UntilEof);
            read_body(stream, buf, head_len, framing).await?;
            return Ok(ResponseInfo { status, close });
        }
        if buf.len() > MAX_HEAD {
            return Err(ErrorClass::Protocol);
        }
    }
}

/// Reads until the peer closes; for `server-close`, which must see the server's FIN before
/// closing its own side. Bytes after the response are ignored.
pub(crate) async fn read_to_eof(stream: &mut Stream, buf: &mut Vec<u8>) -> Result<(), ErrorClass> {
    loop {
        buf.clear();
        if fill(stream, buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Waits for the server's end after a complete response (`server-close`): over TLS its
/// close_notify, then (as on a plain connection) its FIN. A server that sends its FIN without
/// close_notify has ended the connection all the same.
pub(crate) async fn wait_for_fin(stream: &mut Stream, buf: &mut Vec<u8>) -> Result<(), ErrorClass> {
    match stream {
        Stream::Plain(tcp) => wait_for_tcp_fin(tcp, buf).await,
        Stream::Tls(tls) => {
            loop {
                buf.clear();
                make_room(buf);
                match tls.read_buf(buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(tls::classify(&e)),
                }
            }
            wait_for_tcp_fin(tls.get_mut().0, buf).await
        }
    }
}

/// Waits for the server's FIN on the socket itself. Often epoll has already reported it (with
/// the response: a server writes and closes back to back), and then no read is needed: closing
/// with nothing but the FIN unread is an ordinary close, not an abort. A reset also ends the
/// wait: the server ended the connection either way.
async fn wait_for_tcp_fin(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), ErrorClass> {
    loop {
        let ready = stream
            .ready(Interest::READABLE)
            .await
            .map_err(|e| ErrorClass::from_io(&e))?;
        if ready.is_read_closed() {
            return Ok(());
        }
        buf.clear();
        make_room(buf);
        match stream.try_read_buf(buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(ErrorClass::from_io(&e)),
        }
    }
}

/// One read into the spare capacity of `buf`.
async fn fill(stream: &mut Stream, buf: &mut Vec<u8>) -> Result<usize, ErrorClass> {
    make_room(buf);
    stream
        .read_buf(buf)
        .await
        .map_err(|e: io::Error| tls::classify(&e))
}

/// Enough spare capacity in `buf` for one worthwhile read.
fn make_room(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(8192);
    }
}

/// `Ok(None)` when the head is not complete yet.
fn parse_head(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(usize, u16, bool, Framing)>, ErrorClass> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(not_http(buf)),
    };
    let status = resp.code.ok_or(ErrorClass::Protocol)?;
    let http10 = resp.version == Some(0);
    let mut close = http10;
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| ErrorClass::Protocol)?;
            length = Some(v.trim().parse::<u64>().map_err(|_| ErrorClass::Protocol)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = has_token(h.value, b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, b"close") {
                close = true;
            } else if http10 && has_token(h.value, b"keep-alive") {
                close = false;
            }
        }
    }
    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilEof
    };
    Ok(Some((head_len, status, close, framing)))
}

/// What an unparseable response head is counted as: a TLS record means the http URL points at
/// an https server.
fn not_http(buf: &[u8]) -> ErrorClass {
    if is_tls_record(buf) {
        ErrorClass::Tls(TlsFailure::TlsOnHttp)
    } else {
        ErrorClass::Protocol
    }
}

/// Whether these first bytes of an answer are a TLS record, a handshake or an alert of
/// version 3.x: what a TLS server sends when it is spoken plain HTTP to.
pub(crate) fn is_tls_record(buf: &[u8]) -> bool {
    matches!(buf, [0x15 | 0x16, 0x03, ..])
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

async fn read_body(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    head_len: usize,
    framing: Framing,
) -> Result<(), ErrorClass> {
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(len) => {
            let mut have = (buf.len() - head_len) as u64;
            while have < len {
                buf.clear();
                let n = fill(stream, buf).await?;
                if n == 0 {
                    return Err(ErrorClass::Eof);
                }
                have += n as u64;
            }
            Ok(())
        }
        Framing::UntilEof => read_to_eof(stream, buf).await,
        Framing::Chunked => read_chunked(stream, buf, head_len).await,
    }
}

/// Skips a chunked body, compacting the buffer as it goes so it never holds more than one read.
async fn read_chunked(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    mut pos: usize,
) -> Result<(), ErrorClass> {
    // Bytes of chunk data (plus its CRLF) still to skip beyond the buffer.
    let mut skip: u64 = 0;
    loop {
        if skip > 0 {
            let avail = (buf.len() - pos) as u64;
            if avail >= skip {
                pos += skip as usize;
                skip = 0;
            } else {
                skip -= avail;
                buf.clear();
                pos = 0;
                if fill(stream, buf).await? == 0 {
                    return Err(ErrorClass::Eof);
                }
                continue;
            }
        }
        match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete((used, 0))) => {
                // Last chunk: then optional trailers, ended by an empty line.
                let rest = &buf[pos + used..];
                if rest.starts_with(b"\r\n") || rest.windows(4).any(|w| w == b"\r\n\r\n") {
                    return Ok(());
                }
            }
            Ok(httparse::Status::Complete((used, size))) => {
                pos += used;
                skip = size + 2;
                continue;
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err(ErrorClass::Protocol),
        }
        // Need more bytes: keep the unparsed tail, read more.
        buf.drain(..pos);
        pos = 0;
        if buf.len() > MAX_HEAD {
            return Err(ErrorClass::Protocol);
        }
        if fill(stream, buf).await? == 0 {
            return Err(ErrorClass::Eof);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Serves `raw` once and returns what the reader made of it.
    async fn read_raw(raw: &'static [u8], chunks: usize) -> Result<ResponseInfo, ErrorClass> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let step = raw.len().div_ceil(chunks);
            for part in raw.chunks(step) {
                s.write_all(part).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        });
        let mut c = Stream::Plain(TcpStream::connect(addr).await.unwrap());
        let mut buf = Vec::new();
        let mut fb = None;
        let r = read_response(&mut c, &mut buf, false, &mut fb).await;
        server.await.unwrap();
        r
    }

    #[tokio::test]
    async fn framings() {
        let cl = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for chunks in [1, 3, 20] {
            assert_eq!(
                read_raw(cl, chunks).await,
                Ok(ResponseInfo {
                    status: 200,
                    close: false
                })
            );
        }
        let chunked = b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                        5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n";
        for chunks in [1, 4, 30] {
            assert_eq!(
                read_raw(chunked, chunks).await,
                Ok(ResponseInfo {
                    status: 503,
                    close: true
                })
            );
        }
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 No\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(read_raw(interim, 1).await.map(|r| r.status), Ok(404));
        let eof_body = b"HTTP/1.0 200 OK\r\n\r\nuntil the end";
        assert_eq!(
            read_raw(eof_body, 2).await,
            Ok(ResponseInfo {
                status: 200,
                close: true
            })
        );
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello";
        assert_eq!(read_raw(short, 1).await, Err(ErrorClass::Eof));
        assert_eq!(
            read_raw(b"garbage\r\n\r\n", 1).await,
            Err(ErrorClass::Protocol)
        );
        // A TLS alert (unexpected_message) where a status line should be.
        assert_eq!(
            read_raw(b"\x15\x03\x03\x00\x02\x02\x0a", 1).await,
            Err(ErrorClass::Tls(TlsFailure::TlsOnHttp))
        );
    }
}
