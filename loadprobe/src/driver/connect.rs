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
        let socket = self.socket()?;
        socket.connect(self.dst).await
    }

    fn socket(&self) -> io::Result<TcpSocket> {
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
        let std_stream: std::net::TcpStream = socket.into();
        Ok(TcpSocket::from_std_stream(std_stream))
    }
}

fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
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
