//! The kernel's own list of timewait sockets, read through sock_diag (`NETLINK_SOCK_DIAG`, the
//! interface `ss` uses).
//!
//! Two uses: cross-checking what the eBPF probe reconstructed from tracepoints (the probe never sees
//! a timewait socket directly, docs/kernel.md §1 and §7; this list: §6), and a degraded mode that needs no eBPF
//! privileges at all, since dumping TCP sockets is unprivileged.
//!
//! # Which sockets count as timewait
//!
//! The kernel reports a timewait socket with `idiag_state` set to its *substate*: `TIME_WAIT` (6),
//! or `FIN_WAIT2` (5) for an orphaned FIN_WAIT2 socket that was already turned into a timewait
//! socket (the client closed first and the peer has not sent its FIN yet). A full socket that is
//! in FIN_WAIT2 because its owner shut down writes but still holds the fd has the same state, so
//! FIN_WAIT2 entries are kept only when they carry the timewait timer (`idiag_timer == 3`) and no
//! inode, which only `inet_twsk_diag_fill` produces. Both substates count against
//! `tcp_max_tw_buckets` and the `tw` counter of `/proc/net/sockstat`, so both are returned.
//!
//! # Network namespaces
//!
//! A netlink socket belongs to the network namespace of the *thread* that creates it, and
//! `/proc/thread-self/net` shows that thread's namespace, whereas `/proc/net` follows the process's
//! main thread. Both functions here therefore describe the calling thread's namespace; a tool that
//! moves one thread into another namespace (`setns`) must call them from that thread.
//!
//! # Consistency
//!
//! A dump walks the socket hash table in several batches, so sockets created or destroyed while it
//! runs may be missed or seen twice; duplicates are removed (by cookie), misses are not detectable.
//! Under churn the list and [`sockstat_tw`] can therefore differ by the sockets that changed
//! between the two reads.

pub mod timewait;

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;

use netlink_packet_core::{
    DoneBuffer, ErrorBuffer, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ALIGNTO, NLMSG_DONE, NLMSG_ERROR,
    NLMSG_NOOP, NLMSG_OVERRUN, NetlinkBuffer, NetlinkHeader, NetlinkMessage, Parseable,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY, SockDiagMessage, TCP_FIN_WAIT2,
    TCP_TIME_WAIT,
    inet::{
        ExtensionFlags, InetRequest, InetResponseHeader, SocketId, SocketIdBuffer, StateFlags,
        Timer,
    },
};
use netlink_sys::{Socket, protocols::NETLINK_SOCK_DIAG};

use crate::model::Substate;

/// One timewait socket as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TwSocket {
    /// Our end. v4-mapped IPv6 addresses (a dual-stack socket talking to an IPv4 peer) are given
    /// as IPv4, so that the same connection compares equal whichever socket family made it.
    /// IPv6 scope ids are not reported (always 0).
    pub local: SocketAddr,
    /// The peer's end, normalised like `local`.
    pub remote: SocketAddr,
    pub substate: Substate,
    /// Time left on the timewait timer, in ms (0 once it is due). The kernel re-arms the timer on
    /// retransmitted FINs and on the FIN_WAIT2 -> TIME_WAIT change, so this is not simply
    /// 60 s minus the age.
    pub expires_ms: u32,
    /// The socket cookie: the full socket's `SO_COOKIE`, inherited by its timewait socket, which
    /// is what ties this entry to the connection the probe saw.
    pub cookie: u64,
}

/// Why the kernel's timewait sockets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("cannot open a NETLINK_SOCK_DIAG socket: {0}")]
    Socket(io::Error),
    #[error("sending the sock_diag dump request for {family} failed: {error}")]
    Send {
        family: &'static str,
        error: io::Error,
    },
    #[error("receiving the sock_diag dump for {family} failed: {error}")]
    Recv {
        family: &'static str,
        error: io::Error,
    },
    #[error(
        "the kernel refused the sock_diag dump for {family}: {error} \
         (ENOENT means the inet_diag/tcp_diag support is not loaded)"
    )]
    Kernel {
        family: &'static str,
        error: io::Error,
    },
    #[error("malformed sock_diag reply for {family}: {detail}")]
    Malformed {
        family: &'static str,
        detail: String,
    },
    #[error("reading {path} failed: {error}")]
    Sockstat {
        path: &'static str,
        error: io::Error,
    },
    #[error("{path} has no `tw` counter on its `TCP:` line")]
    SockstatFormat { path: &'static str },
}

/// Large enough for any dump batch: the kernel sizes batches to the reader's buffer but caps them
/// at 32 KiB, so a bigger buffer never truncates. One batch holds about 370 timewait sockets.
const RECV_BUF_LEN: usize = 64 * 1024;

/// Offset of `idiag_expires` in `struct inet_diag_msg`: family, state, timer, retrans, then the
/// socket id. netlink-packet-sock-diag 0.5 parses the header but drops `expires` for the
/// timewait timer (`Timer::TimeWait` carries no duration), so this one field is read directly.
const EXPIRES_OFFSET: usize = 4 + size_of::<SocketIdBuffer>();

/// All timewait sockets (v4 and v6, both substates) of the calling thread's network namespace.
///
/// One dump per address family, both into the same buffer, and only timewait-capable states are
/// requested, so the cost is proportional to the number of timewait (and full FIN_WAIT2) sockets,
/// not to every socket on the host: about 60k sockets take some 160 reads per family.
/// The order of the result is unspecified.
pub fn timewait_sockets() -> Result<Vec<TwSocket>, DiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(DiagError::Socket)?;
    socket.bind_auto().map_err(DiagError::Socket)?;
    socket
        .connect(&netlink_sys::SocketAddr::new(0, 0))
        .map_err(DiagError::Socket)?;

    let mut buf = vec![0u8; RECV_BUF_LEN];
    let mut out = Vec::new();
    // A dual-stack socket's connection to an IPv4 peer is listed in the AF_INET6 dump only (the
    // timewait socket keeps the family of the socket that made it), so the two dumps never overlap.
    for family in [AF_INET, AF_INET6] {
        dump_family(&socket, family, &mut buf, &mut out)?;
    }
    out.sort_unstable_by_key(|tw| tw.cookie);
    out.dedup_by_key(|tw| tw.cookie);
    Ok(out)
}

/// `/proc/thread-self/net/sockstat`: the calling thread's namespace, like the netlink socket.
/// (`/proc/net` is a link to `/proc/self/net`, which follows the main thread instead.)
const SOCKSTAT: &str = "/proc/thread-self/net/sockstat";

/// `tw` from the `TCP:` line of `/proc/net/sockstat`, read for the calling thread's network
/// namespace (`/proc/thread-self/net/sockstat`), so that it matches [`timewait_sockets`] called
/// from the same thread.
///
/// It is the kernel's live count of timewait sockets of the namespace, IPv4 and IPv6, both
/// substates: the number that `tcp_max_tw_buckets` limits. Reading it is cheap, so it suits
/// sampling during a run, where a full dump would not.
pub fn sockstat_tw() -> Result<u64, DiagError> {
    let text = std::fs::read_to_string(SOCKSTAT).map_err(|error| DiagError::Sockstat {
        path: SOCKSTAT,
        error,
    })?;
    parse_sockstat_tw(&text).ok_or(DiagError::SockstatFormat { path: SOCKSTAT })
}

/// The `tw` value of the `TCP:` line, e.g. `TCP: inuse 5 orphan 0 tw 3 alloc 7 mem 1` -> 3.
fn parse_sockstat_tw(text: &str) -> Option<u64> {
    let fields = text
        .lines()
        .find_map(|line| line.strip_prefix("TCP:"))?
        .split_whitespace()
        .collect::<Vec<_>>();
    fields
        .chunks_exact(2)
        .find(|pair| pair[0] == "tw")
        .and_then(|pair| pair[1].parse().ok())
}

fn family_name(family: u8) -> &'static str {
    if family == AF_INET { "IPv4" } else { "IPv6" }
}

/// Sends one dump request for `family` and appends its timewait sockets to `out`, reading until
/// NLMSG_DONE.
fn dump_family(
    socket: &Socket,
    family: u8,
    buf: &mut [u8],
    out: &mut Vec<TwSocket>,
) -> Result<(), DiagError> {
    let fam = family_name(family);
    let malformed = |detail: String| DiagError::Malformed {
        family: fam,
        detail,
    };

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            // The kernel filters timewait sockets on their substate, so FIN_WAIT2 is needed
            // to see the FIN_WAIT2-substate ones; full FIN_WAIT2 sockets are dropped below.
            states: StateFlags::TIME_WAIT | StateFlags::FIN_WAIT2,
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    request.finalize();
    let len = request.buffer_len();
    request.serialize(&mut buf[..len]);
    socket
        .send(&buf[..len], 0)
        .map_err(|error| DiagError::Send { family: fam, error })?;

    loop {
        let n = loop {
            // MSG_TRUNC makes recv return the real datagram size, so truncation is detectable.
            match socket.recv(&mut &mut buf[..], libc::MSG_TRUNC) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(DiagError::Recv { family: fam, error }),
            }
        };
        if n > buf.len() {
            return Err(malformed(format!(
                "a {n}-byte batch does not fit the {}-byte buffer",
                buf.len()
            )));
        }

        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let msg = NetlinkBuffer::new_checked(rest).map_err(|e| malformed(e.to_string()))?;
            let payload = msg.payload();
            match msg.message_type() {
                NLMSG_DONE => {
                    // The dump's own status: negative errno if it stopped early.
                    let code = DoneBuffer::new_checked(payload).map_or(0, |d| d.code());
                    if code < 0 {
                        return Err(DiagError::Kernel {
                            family: fam,
                            error: io::Error::from_raw_os_error(-code),
                        });
                    }
                    return Ok(());
                }
                NLMSG_ERROR => {
                    let err =
                        ErrorBuffer::new_checked(payload).map_err(|e| malformed(e.to_string()))?;
                    // A zero code is an ACK, which a dump does not normally send; ignore it.
                    if let Some(code) = err.code() {
                        return Err(DiagError::Kernel {
                            family: fam,
                            error: io::Error::from_raw_os_error(code.get().saturating_abs()),
                        });
                    }
                }
                NLMSG_NOOP => {}
                NLMSG_OVERRUN => return Err(malformed("NLMSG_OVERRUN".into())),
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(tw) = parse_timewait(payload).map_err(malformed)? {
                        out.push(tw);
                    }
                }
                other => return Err(malformed(format!("unexpected message type {other}"))),
            }
            let advance = align(msg.length() as usize);
            rest = rest.get(advance..).unwrap_or_default();
        }
    }
}

fn align(len: usize) -> usize {
    let a = usize::from(NLMSG_ALIGNTO);
    len.div_ceil(a) * a
}

/// One `inet_diag_msg` -> a timewait socket, or `None` for a full socket.
fn parse_timewait(payload: &[u8]) -> Result<Option<TwSocket>, String> {
    let header = InetResponseHeader::parse(payload).map_err(|e| e.to_string())?;
    // Only inet_twsk_diag_fill reports the timewait timer, and always with inode 0.
    if header.timer != Some(Timer::TimeWait) || header.inode != 0 {
        return Ok(None);
    }
    let substate = match header.state {
        TCP_TIME_WAIT => Substate::TimeWait,
        TCP_FIN_WAIT2 => Substate::FinWait2,
        _ => return Ok(None),
    };
    let expires_ms = payload
        .get(EXPIRES_OFFSET..EXPIRES_OFFSET + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| format!("{}-byte inet_diag_msg has no expires field", payload.len()))?;
    let id = &header.socket_id;
    Ok(Some(TwSocket {
        local: SocketAddr::new(id.source_address.to_canonical(), id.source_port),
        remote: SocketAddr::new(id.destination_address.to_canonical(), id.destination_port),
        substate,
        expires_ms,
        cookie: cookie(id.cookie),
    }))
}

/// `idiag_cookie` is two native-endian u32s, low half first (`sock_diag_save_cookie`).
fn cookie(raw: [u8; 8]) -> u64 {
    let lo = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let hi = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
    (u64::from(hi) << 32) | u64::from(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{in_fresh_netns, require_root};
    use std::collections::BTreeSet;
    use std::io::Read;
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    #[test]
    fn sockstat_line_parsing() {
        let text =
            "sockets: used 12\nTCP: inuse 1 orphan 0 tw 42 alloc 1 mem 301\nUDP: inuse 0 mem 0\n";
        assert_eq!(parse_sockstat_tw(text), Some(42));
        assert_eq!(parse_sockstat_tw("TCP: inuse 1 orphan 0\n"), None);
        assert_eq!(parse_sockstat_tw("UDP: inuse 0 tw 3\n"), None);
        assert_eq!(parse_sockstat_tw("TCP: tw x\n"), None);
    }

    #[test]
    fn cookie_halves() {
        let mut raw = [0u8; 8];
        raw[..4].copy_from_slice(&0xdead_beef_u32.to_ne_bytes());
        raw[4..].copy_from_slice(&0x1234_u32.to_ne_bytes());
        assert_eq!(cookie(raw), 0x1234_dead_beef);
    }

    /// (local, remote, substate) of a connection as the test expects to see it.
    type Tuple = (SocketAddr, SocketAddr, Substate);

    fn canonical(a: SocketAddr) -> SocketAddr {
        SocketAddr::new(a.ip().to_canonical(), a.port())
    }

    /// Accepts `client` on `listener`: (client, server side, the client's SO_COOKIE).
    fn connect(listener: &TcpListener, client: TcpStream) -> (TcpStream, TcpStream, u64) {
        let (server, _) = listener.accept().unwrap();
        let cookie = socket2::SockRef::from(&client).cookie().unwrap();
        (client, server, cookie)
    }

    fn tuple(client: &TcpStream, substate: Substate) -> Tuple {
        (
            canonical(client.local_addr().unwrap()),
            canonical(client.peer_addr().unwrap()),
            substate,
        )
    }

    /// Client closes first, then the server (after seeing the client's FIN, so the closes cannot
    /// cross): the client ends in TIME_WAIT, the server goes through LAST_ACK to CLOSE.
    fn client_time_wait(listener: &TcpListener, client: TcpStream) -> (Tuple, u64) {
        let (client, mut server, cookie) = connect(listener, client);
        let t = tuple(&client, Substate::TimeWait);
        drop(client);
        assert_eq!(server.read(&mut [0u8; 1]).unwrap(), 0);
        drop(server);
        (t, cookie)
    }

    /// Polls until the dump shows exactly `want` (closes finish asynchronously), then returns it.
    fn wait_for(want: &BTreeSet<Tuple>) -> Vec<TwSocket> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = timewait_sockets().unwrap();
            let tuples: BTreeSet<Tuple> = got
                .iter()
                .map(|t| (t.local, t.remote, t.substate))
                .collect();
            if &tuples == want || Instant::now() > deadline {
                assert_eq!(&tuples, want);
                assert_eq!(got.len(), want.len(), "duplicate entries: {got:?}");
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn reports_exactly_the_timewait_sockets() {
        if !require_root("diag::reports_exactly_the_timewait_sockets") {
            return;
        }
        in_fresh_netns(|| {
            assert!(timewait_sockets().unwrap().is_empty());
            assert_eq!(sockstat_tw().unwrap(), 0);

            let l4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let l6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
            let mut want = BTreeSet::new();
            let mut cookies = Vec::new();
            let mut keep = Vec::new();

            for _ in 0..5 {
                let (t, c) =
                    client_time_wait(&l4, TcpStream::connect(l4.local_addr().unwrap()).unwrap());
                want.insert(t);
                cookies.push(c);
            }
            for _ in 0..3 {
                let (t, c) =
                    client_time_wait(&l6, TcpStream::connect(l6.local_addr().unwrap()).unwrap());
                want.insert(t);
                cookies.push(c);
            }

            // A dual-stack IPv6 socket talking to 127.0.0.1: its timewait socket is AF_INET6
            // with v4-mapped addresses, which must come back as plain IPv4.
            let mapped =
                socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
            mapped.set_only_v6(false).unwrap();
            let port = l4.local_addr().unwrap().port();
            mapped
                .connect(&SocketAddr::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(), port).into())
                .unwrap();
            let (t, c) = client_time_wait(&l4, mapped.into());
            assert!(t.0.is_ipv4() && t.1.is_ipv4());
            want.insert(t);
            cookies.push(c);

            // Client closes, server keeps its end open: the client's timewait socket stays in
            // the FIN_WAIT2 substate. One per family.
            for l in [&l4, &l6] {
                let (client, server, c) =
                    connect(l, TcpStream::connect(l.local_addr().unwrap()).unwrap());
                want.insert(tuple(&client, Substate::FinWait2));
                cookies.push(c);
                drop(client);
                keep.push(server);
            }

            // A full FIN_WAIT2 socket (writes shut down, fd still open) has the same state as a
            // FIN_WAIT2-substate timewait socket and must not be reported.
            let (half, mut server, _) =
                connect(&l4, TcpStream::connect(l4.local_addr().unwrap()).unwrap());
            half.shutdown(std::net::Shutdown::Write).unwrap();
            assert_eq!(server.read(&mut [0u8; 1]).unwrap(), 0);
            keep.push(half);
            keep.push(server);

            let got = wait_for(&want);
            assert_eq!(sockstat_tw().unwrap(), want.len() as u64);

            let mut got_cookies: Vec<u64> = got.iter().map(|t| t.cookie).collect();
            got_cookies.sort_unstable();
            cookies.sort_unstable();
            assert_eq!(
                got_cookies, cookies,
                "cookies must be the sockets' SO_COOKIE"
            );
            for tw in &got {
                // Both the TIME_WAIT length and the default tcp_fin_timeout are 60 s.
                assert!(
                    (50_000..=60_000).contains(&tw.expires_ms),
                    "expires_ms out of range: {tw:?}"
                );
            }
            drop(keep);
        });
    }

    /// More timewait sockets than fit in one netlink batch, so the dump spans many reads.
    #[test]
    fn large_dump_spans_many_batches() {
        if !require_root("diag::large_dump_spans_many_batches") {
            return;
        }
        const N: usize = 2000;
        in_fresh_netns(|| {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let addr = l.local_addr().unwrap();
            let want: BTreeSet<Tuple> = (0..N)
                .map(|_| client_time_wait(&l, TcpStream::connect(addr).unwrap()).0)
                .collect();
            assert_eq!(want.len(), N);
            wait_for(&want);
            assert_eq!(sockstat_tw().unwrap(), N as u64);
        });
    }
}
