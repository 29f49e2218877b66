//! Opening connections with the socket options the modes need, through socket2 because tokio
//! exposes neither IP_BIND_ADDRESS_NO_PORT nor a non-deprecated SO_LINGER.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

/// Opens connections to one destination, round-robin over the source addresses.
pub(crate) struct Connector {
    dst: SocketAddr,
    sources: Vec<IpAddr>,
    next_source: AtomicUsize,
    /// SO_LINGER 0: closing sends RST and leaves no TIME_WAIT (`reset` mode).
    abort_on_close: bool,
}

impl Connector {
    pub(crate) fn new(dst: SocketAddr, sources: Vec<IpAddr>, abort_on_close: bool) -> Connector {
        Connector {
            dst,
            sources,
            next_source: AtomicUsize::new(0),
            abort_on_close,
        }
    }

    pub(crate) async fn connect(&self) -> io::Result<TcpStream> {
        let socket = TcpSocket::from_std_stream(self.socket()?.into());
        socket.connect(self.dst).await
    }

    /// Opens a connection and sends as much of `request` as it can right away; returns the
    /// stream, connected, and how many bytes went out. On loopback and to namespaces on this
    /// host the handshake completes inside `connect()`, so the write succeeds at once: that
    /// saves a trip through the event loop (waiting to be told the socket is writable) and a
    /// `getsockopt(SO_ERROR)` per connection. When the handshake is not done yet, it waits
    /// for it as `connect` does.
    pub(crate) async fn connect_sending(&self, request: &[u8]) -> io::Result<(TcpStream, usize)> {
        let socket = self.socket()?;
        match socket.connect(&self.dst.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        // A socket still in SYN_SENT refuses the write with EAGAIN, or with the connection's
        // error if it has already failed (ECONNREFUSED...).
        let sent = match socket.send(request) {
            Ok(n) => Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => return Err(e),
        };
        let stream = TcpStream::from_std(socket.into())?;
        if let Some(n) = sent {
            return Ok((stream, n));
        }
        stream.writable().await?;
        match stream.take_error()? {
            Some(e) => Err(e),
            None => Ok((stream, 0)),
        }
    }

    fn socket(&self) -> io::Result<Socket> {
        let socket = Socket::new(
            Domain::for_address(self.dst),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )?;
        if !self.sources.is_empty() {
            let i = self.next_source.fetch_add(1, Ordering::Relaxed) % self.sources.len();
            // Without this, bind() picks the port alone, per source address but without knowing
            // the destination, which caps the run at one port range in total instead of one per
            // (source, destination). With it, the port is chosen at connect() time per 4-tuple.
            set_bind_address_no_port(&socket)?;
            socket.bind(&SocketAddr::new(self.sources[i], 0).into())?;
        }
        if self.abort_on_close {
            socket.set_linger(Some(Duration::ZERO))?;
        }
        // The request goes out in one write; with keep-alive, Nagle could hold a tail segment.
        socket.set_tcp_nodelay(true)?;
        Ok(socket)
    }
}

pub(super) fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd, and a c_int option value with its exact size. The option lives at SOL_IP
    // for IPv6 sockets too.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
