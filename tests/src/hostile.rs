//! Small HTTP servers that misbehave on purpose, each in the ways a real server does on a bad
//! day: one that never answers, one that announces its close but waits for the client's, one
//! that closes idle keep-alive connections, one that drops a connection's second request, one
//! that closes an idle connection and then answers no new one. They
//! run on threads inside a test's namespace, one thread per connection (the loads they see in
//! tests are small), and count what they saw for the test to compare with the run's record.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::Netns;

/// How a [`Hostile`] server treats each connection.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Reads requests and never answers.
    NeverAnswers,
    /// Answers with `Connection: close`, then waits for the client's EOF before closing.
    ClosesAfterClient,
    /// Keep-alive; a connection idle for this long gets the server's FIN (a half close: the
    /// server still reads, and counts requests that arrive after its FIN).
    ClosesIdleAfter(Duration),
    /// Answers a connection's first request; reads its second and closes without an answer.
    DropsSecondRequest,
    /// The first connection with a request is served as by [`Behaviour::ClosesIdleAfter`];
    /// every later one has its first request read and gets no answer, only the server's close.
    ClosesIdleThenDropsNew(Duration),
}

/// What the server saw.
#[derive(Debug, Default)]
pub struct HostileStats {
    pub accepted: AtomicU64,
    /// Complete request heads read.
    pub requests: AtomicU64,
    /// Responses written.
    pub answered: AtomicU64,
    /// Requests that arrived on a connection after the server had sent its FIN.
    pub after_fin: AtomicU64,
}

/// A running hostile server; stopped (every thread joined) on drop.
pub struct Hostile {
    pub addr: SocketAddr,
    pub stats: Arc<HostileStats>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const RESPONSE_CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
/// How often blocked threads look at the stop flag.
const TICK: Duration = Duration::from_millis(20);

impl Hostile {
    /// Listens on 127.0.0.1 (an ephemeral port) inside `netns`.
    pub fn start(netns: &Netns, behaviour: Behaviour) -> Hostile {
        let stats = Arc::new(HostileStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let netns_name = netns.name().to_owned();
        let (s, st) = (stats.clone(), stop.clone());
        let thread = thread::Builder::new()
            .name("hostile server".into())
            .spawn(move || {
                Netns::enter_named(&netns_name);
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind hostile server");
                listener.set_nonblocking(true).expect("nonblocking");
                tx.send(listener.local_addr().expect("local addr"))
                    .expect("send addr");
                accept_loop(listener, behaviour, &s, &st);
            })
            .expect("spawn hostile server");
        let addr = rx.recv().expect("hostile server started");
        Hostile {
            addr,
            stats,
            stop,
            thread: Some(thread),
        }
    }

    pub fn count(&self, f: impl Fn(&HostileStats) -> &AtomicU64) -> u64 {
        f(&self.stats).load(Ordering::Relaxed)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    behaviour: Behaviour,
    stats: &Arc<HostileStats>,
    stop: &Arc<AtomicBool>,
) {
    let mut conns = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                let (stats, stop) = (stats.clone(), stop.clone());
                conns.push(thread::spawn(move || serve(conn, behaviour, &stats, &stop)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("accept: {e}"),
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Reads one request head within `idle` (or until stopped); `None`: EOF, error, stop or idle.
fn read_request(conn: &mut TcpStream, idle: Duration, stop: &AtomicBool) -> Option<Vec<u8>> {
    let since = Instant::now();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if stop.load(Ordering::Relaxed) || since.elapsed() >= idle {
            return None;
        }
        match conn.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
    Some(head)
}

fn serve(mut conn: TcpStream, behaviour: Behaviour, stats: &HostileStats, stop: &AtomicBool) {
    conn.set_read_timeout(Some(TICK)).expect("read timeout");
    let forever = Duration::from_secs(3600);
    let count = |c: &AtomicU64| c.fetch_add(1, Ordering::Relaxed);
    match behaviour {
        Behaviour::NeverAnswers => {
            while read_request(&mut conn, forever, stop).is_some() {
                count(&stats.requests);
            }
        }
        Behaviour::ClosesAfterClient => {
            if read_request(&mut conn, forever, stop).is_some() {
                count(&stats.requests);
                if conn.write_all(RESPONSE_CLOSE).is_ok() {
                    count(&stats.answered);
                }
                // Whatever the client sends now is ignored; its EOF (or a stop) ends it.
                let _ = read_request(&mut conn, forever, stop);
            }
        }
        Behaviour::ClosesIdleAfter(idle) => closes_idle(conn, idle, stats, stop),
        Behaviour::ClosesIdleThenDropsNew(idle) => {
            if stats.answered.load(Ordering::Relaxed) == 0 {
                closes_idle(conn, idle, stats, stop);
            } else if read_request(&mut conn, forever, stop).is_some() {
                count(&stats.requests);
            }
        }
        Behaviour::DropsSecondRequest => {
            if read_request(&mut conn, forever, stop).is_some() {
                count(&stats.requests);
                if conn.write_all(RESPONSE).is_ok() {
                    count(&stats.answered);
                }
                if read_request(&mut conn, forever, stop).is_some() {
                    count(&stats.requests);
                }
            }
        }
    }
}

/// Keep-alive until the connection has been idle for `idle`, then the server's FIN (a half
/// close: the server still reads, and counts requests that arrive after its FIN).
fn closes_idle(mut conn: TcpStream, idle: Duration, stats: &HostileStats, stop: &AtomicBool) {
    let count = |c: &AtomicU64| c.fetch_add(1, Ordering::Relaxed);
    while read_request(&mut conn, idle, stop).is_some() {
        count(&stats.requests);
        if conn.write_all(RESPONSE).is_err() {
            return;
        }
        count(&stats.answered);
    }
    let _ = conn.shutdown(Shutdown::Write);
    if read_request(&mut conn, Duration::from_secs(2), stop).is_some() {
        count(&stats.after_fin);
    }
}
