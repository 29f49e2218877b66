//! The reference loop of `cargo xtask bench`: the least a client can do per request, so that its
//! rate is what the kernel (and the server) allow on this machine, not what a tool's code costs.
//!
//! Per thread: one epoll instance, edge-triggered, and its share of `--connections` sockets, each
//! cycling through
//! - `client-close`: socket, connect, write one `GET`, read the whole response (Content-Length
//!   framing), close: the client's FIN is first;
//! - `server-close`: the same with `Connection: close`, then read until the server's EOF, close;
//! - `keep-alive`: connect once, then request/response on the same socket (`--requests-per-conn`
//!   closes after N; the server's `Connection: close` too).
//!
//! The request is written right after `connect()` returns EINPROGRESS: on loopback the handshake
//! usually completes inside `connect()` already, and if not the write fails with EAGAIN and waits
//! for EPOLLOUT. No allocation, no timer, no parsing beyond the head's Content-Length.
//!
//! Prints one JSON object: completions (responses, and for server-close the server's EOF too)
//! and connections per second over the measured duration, errors by errno name.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    ClientClose,
    ServerClose,
    KeepAlive,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::ClientClose => "client-close",
            Mode::ServerClose => "server-close",
            Mode::KeepAlive => "keep-alive",
        }
    }
}

#[derive(Clone, Debug)]
struct Config {
    target: SocketAddrV4,
    path: String,
    mode: Mode,
    connections: usize,
    threads: usize,
    duration: Duration,
    /// keep-alive: close after this many requests (0: never).
    requests_per_conn: u64,
    /// Local addresses, round-robin, with IP_BIND_ADDRESS_NO_PORT (empty: the kernel's choice).
    sources: Vec<Ipv4Addr>,
}

const USAGE: &str = "usage: bench-ref --target IP:PORT [--path /] [--mode client-close|server-close|keep-alive] \
[--connections C] [--threads T] [--duration SECS] [--requests-per-conn N] [--source-ips A-B|A,B,..]";

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench-ref: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    raise_nofile_limit();
    match run(&config) {
        Ok(totals) => {
            println!("{}", totals.to_json(&config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-ref: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Config, String> {
    let mut c = Config {
        target: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80),
        path: "/".into(),
        mode: Mode::ClientClose,
        connections: 64,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        duration: Duration::from_secs(5),
        requests_per_conn: 0,
        sources: Vec::new(),
    };
    let mut have_target = false;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|_| format!("bad number {v:?}"));
        match flag.as_str() {
            "--target" => {
                let v = value()?;
                c.target = v
                    .parse()
                    .map_err(|_| format!("--target wants IPv4:PORT, got {v:?}"))?;
                have_target = true;
            }
            "--path" => c.path = value()?,
            "--mode" => {
                c.mode = match value()?.as_str() {
                    "client-close" => Mode::ClientClose,
                    "server-close" => Mode::ServerClose,
                    "keep-alive" => Mode::KeepAlive,
                    other => return Err(format!("unknown mode {other:?}")),
                }
            }
            "--connections" => c.connections = num(value()?)? as usize,
            "--threads" => c.threads = num(value()?)? as usize,
            "--duration" => {
                let v = value()?;
                let secs: f64 = v.parse().map_err(|_| format!("bad duration {v:?}"))?;
                c.duration =
                    Duration::try_from_secs_f64(secs).map_err(|_| format!("bad duration {v:?}"))?;
            }
            "--requests-per-conn" => c.requests_per_conn = num(value()?)?,
            "--source-ips" => c.sources = parse_sources(&value()?)?,
            "-h" | "--help" => return Err("help".into()),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    if !have_target {
        return Err("--target is required".into());
    }
    if c.connections == 0 || c.threads == 0 {
        return Err("--connections and --threads must be at least 1".into());
    }
    c.threads = c.threads.min(c.connections);
    Ok(c)
}

/// `A`, `A,B,C` or `A-B` (an inclusive IPv4 range).
fn parse_sources(spec: &str) -> Result<Vec<Ipv4Addr>, String> {
    let ip = |s: &str| {
        s.trim()
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("bad IPv4 address {s:?}"))
    };
    if let Some((a, b)) = spec.split_once('-') {
        let (a, b) = (u32::from(ip(a)?), u32::from(ip(b)?));
        if b < a || b - a > 65535 {
            return Err(format!("bad range {spec:?}"));
        }
        return Ok((a..=b).map(Ipv4Addr::from).collect());
    }
    spec.split(',').map(ip).collect()
}

fn raise_nofile_limit() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[derive(Default)]
struct Totals {
    completions: u64,
    connections: u64,
    errors: BTreeMap<i32, u64>,
    elapsed: Duration,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.completions += other.completions;
        self.connections += other.connections;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    fn to_json(&self, c: &Config) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(errno, n)| format!("\"{}\":{n}", errno_name(*errno)))
            .collect();
        format!(
            "{{\"mode\":\"{}\",\"connections\":{},\"threads\":{},\"source_ips\":{},\
             \"duration_s\":{:.3},\"completions\":{},\"connections_opened\":{},\
             \"rps\":{:.1},\"connections_per_s\":{:.1},\"errors\":{{{}}}}}",
            c.mode.name(),
            c.connections,
            c.threads,
            c.sources.len(),
            secs,
            self.completions,
            self.connections,
            self.completions as f64 / secs,
            self.connections as f64 / secs,
            errors.join(",")
        )
    }
}

fn errno_name(errno: i32) -> String {
    match errno {
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::ECONNRESET => "ECONNRESET".into(),
        libc::ETIMEDOUT => "ETIMEDOUT".into(),
        libc::EMFILE => "EMFILE".into(),
        libc::EPIPE => "EPIPE".into(),
        EOF_EARLY => "eof".into(),
        PROTOCOL => "protocol".into(),
        n => format!("errno_{n}"),
    }
}

/// Pseudo errnos for failures that are not system-call errors.
const EOF_EARLY: i32 = -1;
const PROTOCOL: i32 = -2;

fn run(config: &Config) -> Result<Totals, String> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n{}\r\n",
        config.path,
        config.target,
        if config.mode == Mode::ServerClose {
            "Connection: close\r\n"
        } else {
            ""
        }
    )
    .into_bytes();
    let start = Instant::now();
    let deadline = start + config.duration;
    let mut totals = Totals::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..config.threads)
            .map(|t| {
                let share = config.connections / config.threads
                    + usize::from(t < config.connections % config.threads);
                let request = &request;
                scope.spawn(move || Worker::new(config, request, share, t).run(start, deadline))
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(Ok(t)) => totals.add(t),
                Ok(Err(e)) => return Err(format!("worker: {e}")),
                Err(_) => return Err("worker panicked".into()),
            }
        }
        Ok(())
    })?;
    Ok(totals)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting to write the request (connect in progress, or a full send buffer).
    Writing,
    /// Waiting for (the rest of) the response.
    Reading,
    /// server-close: the response is in, waiting for the server's EOF.
    Draining,
    /// No socket (a failed connect waits for the next loop turn).
    Closed,
}

const HEAD_BUF: usize = 4096;

struct Conn {
    fd: i32,
    state: State,
    /// The response head as it arrives (only the head is kept).
    head: [u8; HEAD_BUF],
    head_len: usize,
    /// Bytes of the current response received, and its full size once the head is parsed.
    got: usize,
    need: Option<usize>,
    /// The server asked to close after this response.
    server_closes: bool,
    used: u64,
}

struct Worker<'a> {
    config: &'a Config,
    request: &'a [u8],
    ep: i32,
    conns: Vec<Conn>,
    /// Next source address index (each thread starts at its own offset).
    next_source: usize,
    /// Slots whose connect failed, reopened on the next loop turn.
    retry: Vec<usize>,
    stats: Totals,
    measuring: bool,
}

impl<'a> Worker<'a> {
    fn new(config: &'a Config, request: &'a [u8], n: usize, thread: usize) -> Worker<'a> {
        let conns = (0..n)
            .map(|_| Conn {
                fd: -1,
                state: State::Closed,
                head: [0; HEAD_BUF],
                head_len: 0,
                got: 0,
                need: None,
                server_closes: false,
                used: 0,
            })
            .collect();
        Worker {
            config,
            request,
            ep: -1,
            conns,
            next_source: thread,
            retry: Vec::new(),
            stats: Totals::default(),
            measuring: true,
        }
    }

    fn run(mut self, start: Instant, deadline: Instant) -> Result<Totals, String> {
        // SAFETY: epoll_create1 has no memory preconditions.
        self.ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if self.ep < 0 {
            return Err(format!("epoll_create1: {}", io::Error::last_os_error()));
        }
        for i in 0..self.conns.len() {
            self.open(i);
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let timeout_ms = if self.retry.is_empty() {
                (deadline - now).as_millis().clamp(1, 100) as i32
            } else {
                1
            };
            // SAFETY: `events` is a valid buffer of `events.len()` entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.ep,
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout_ms,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("epoll_wait: {e}"));
            }
            for ev in &events[..n as usize] {
                let (bits, idx) = (ev.events, ev.u64 as usize);
                self.on_event(idx, bits);
            }
            for i in std::mem::take(&mut self.retry) {
                self.open(i);
            }
        }
        self.measuring = false;
        self.stats.elapsed = start.elapsed();
        for i in 0..self.conns.len() {
            self.close(i);
        }
        // SAFETY: our own epoll descriptor.
        unsafe { libc::close(self.ep) };
        Ok(self.stats)
    }

    fn error(&mut self, errno: i32) {
        if self.measuring {
            *self.stats.errors.entry(errno).or_default() += 1;
        }
    }

    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.fd >= 0 {
            // SAFETY: a descriptor this slot owns; closing also removes it from the epoll set.
            unsafe { libc::close(c.fd) };
        }
        c.fd = -1;
        c.state = State::Closed;
    }

    /// A new connection on slot `i`, with the request written if the handshake is done.
    fn open(&mut self, i: usize) {
        let fd = match self.connect() {
            Ok(fd) => fd,
            Err(errno) => {
                self.error(errno);
                self.conns[i].state = State::Closed;
                self.retry.push(i);
                return;
            }
        };
        if self.measuring {
            self.stats.connections += 1;
        }
        let c = &mut self.conns[i];
        c.fd = fd;
        c.used = 0;
        // Registered after the first write, so that a written request waits for EPOLLIN only
        // (no wake-up for the writable socket).
        let mut interest = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;
        match self.start_request(i) {
            Ok(true) => {}
            Ok(false) => interest |= libc::EPOLLOUT,
            Err(errno) => {
                self.error(errno);
                self.close(i);
                self.retry.push(i);
                return;
            }
        }
        let mut ev = libc::epoll_event {
            events: interest as u32,
            u64: i as u64,
        };
        // SAFETY: valid epoll and socket descriptors, a valid event struct.
        if unsafe { libc::epoll_ctl(self.ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            let errno = last_errno();
            self.error(errno);
            self.close(i);
            self.retry.push(i);
        }
    }

    fn connect(&mut self) -> Result<i32, i32> {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(last_errno());
        }
        let fail = |fd| {
            let errno = last_errno();
            // SAFETY: the socket just created.
            unsafe { libc::close(fd) };
            Err(errno)
        };
        if !self.config.sources.is_empty() {
            let src = self.config.sources[self.next_source % self.config.sources.len()];
            self.next_source += 1;
            let one: libc::c_int = 1;
            // SAFETY: a c_int option value of its exact size.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return fail(fd);
            }
            let sa = sockaddr(SocketAddrV4::new(src, 0));
            // SAFETY: a valid sockaddr_in and its size.
            let rc = unsafe {
                libc::bind(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return fail(fd);
            }
        }
        let sa = sockaddr(self.config.target);
        // SAFETY: a valid sockaddr_in and its size.
        let rc = unsafe {
            libc::connect(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc != 0 && last_errno() != libc::EINPROGRESS {
            return fail(fd);
        }
        Ok(fd)
    }

    /// Starts the next request on slot `i`: `Ok(false)` when it must wait for EPOLLOUT (the
    /// handshake is not done yet).
    fn start_request(&mut self, i: usize) -> Result<bool, i32> {
        let c = &mut self.conns[i];
        c.head_len = 0;
        c.got = 0;
        c.need = None;
        c.server_closes = false;
        c.state = State::Writing;
        self.write(i)
    }

    /// One write: the request is a few dozen bytes and an empty send buffer takes it whole.
    fn write(&mut self, i: usize) -> Result<bool, i32> {
        let fd = self.conns[i].fd;
        // SAFETY: the request buffer outlives the call.
        let n = unsafe { libc::send(fd, self.request.as_ptr().cast(), self.request.len(), 0) };
        if n == self.request.len() as isize {
            self.conns[i].state = State::Reading;
            return Ok(true);
        }
        match if n < 0 { last_errno() } else { libc::EPIPE } {
            libc::EAGAIN => Ok(false),
            errno => Err(errno),
        }
    }

    /// A keep-alive request on an open, registered connection.
    fn next_request(&mut self, i: usize) {
        match self.start_request(i) {
            Ok(true) => {}
            Ok(false) => {
                let mut ev = libc::epoll_event {
                    events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET)
                        as u32,
                    u64: i as u64,
                };
                // SAFETY: valid descriptors and event struct.
                if unsafe {
                    libc::epoll_ctl(self.ep, libc::EPOLL_CTL_MOD, self.conns[i].fd, &mut ev)
                } != 0
                {
                    self.fail(i, last_errno());
                }
            }
            Err(errno) => self.fail(i, errno),
        }
    }

    fn fail(&mut self, i: usize, errno: i32) {
        self.error(errno);
        self.close(i);
        self.open(i);
    }

    fn on_event(&mut self, i: usize, bits: u32) {
        match self.conns[i].state {
            State::Writing => {
                if bits & (libc::EPOLLERR as u32) != 0 {
                    let errno = socket_error(self.conns[i].fd);
                    self.fail(i, errno);
                } else if bits & (libc::EPOLLOUT as u32) != 0 {
                    match self.write(i) {
                        Ok(true) if bits & (libc::EPOLLIN as u32) != 0 => self.read(i),
                        Ok(_) => {}
                        Err(errno) => self.fail(i, errno),
                    }
                }
            }
            State::Reading | State::Draining => self.read(i),
            State::Closed => {}
        }
    }

    /// Reads until EAGAIN (edge-triggered), finishing the response and the connection as the
    /// mode says.
    fn read(&mut self, i: usize) {
        let mut scratch = [0u8; 16384];
        loop {
            let c = &mut self.conns[i];
            // Before the head is complete, read into the head buffer; then anywhere.
            let into_head = c.need.is_none();
            let (ptr, cap) = if into_head {
                (c.head[c.head_len..].as_mut_ptr(), HEAD_BUF - c.head_len)
            } else {
                (scratch.as_mut_ptr(), scratch.len())
            };
            // SAFETY: `ptr` points at `cap` writable bytes.
            let n = unsafe { libc::recv(c.fd, ptr.cast(), cap, 0) };
            if n < 0 {
                let errno = last_errno();
                if errno == libc::EAGAIN {
                    return;
                }
                if c.state == State::Draining && errno == libc::ECONNRESET {
                    // The server ended the connection after the response: that is its close.
                    self.finish(i);
                } else {
                    self.fail(i, errno);
                }
                return;
            }
            if n == 0 {
                if c.state == State::Draining {
                    self.finish(i);
                } else {
                    self.fail(i, EOF_EARLY);
                }
                return;
            }
            let n = n as usize;
            if c.state == State::Draining {
                continue;
            }
            c.got += n;
            if into_head {
                c.head_len += n;
                match parse_head(&c.head[..c.head_len]) {
                    Ok(Some((head, body, close))) => {
                        c.need = Some(head + body);
                        c.server_closes = close;
                    }
                    Ok(None) if c.head_len < HEAD_BUF => continue,
                    _ => {
                        self.fail(i, PROTOCOL);
                        return;
                    }
                }
            }
            if c.need.is_some_and(|need| c.got >= need) {
                c.used += 1;
                match self.config.mode {
                    Mode::ClientClose => {
                        self.finish(i);
                        return;
                    }
                    Mode::ServerClose => c.state = State::Draining,
                    Mode::KeepAlive => {
                        let spent = self.config.requests_per_conn > 0
                            && c.used >= self.config.requests_per_conn;
                        if c.server_closes || spent {
                            self.finish(i);
                        } else {
                            if self.measuring {
                                self.stats.completions += 1;
                            }
                            self.next_request(i);
                        }
                        return;
                    }
                }
            }
        }
    }

    /// The request on slot `i` is complete and its connection ends: count, close, reopen.
    fn finish(&mut self, i: usize) {
        if self.measuring {
            self.stats.completions += 1;
        }
        self.close(i);
        self.open(i);
    }
}

/// `(head length, body length, server closes)` once the head is complete. Content-Length
/// framing only (what a static response has); no body for 204/304.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, usize, bool)>, ()> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = &buf[..end];
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = lines.next().ok_or(())?;
    if !status_line.starts_with(b"HTTP/1.") {
        return Err(());
    }
    let status = status_line.get(9..12).ok_or(())?;
    let mut body = None;
    let mut close = status_line.starts_with(b"HTTP/1.0");
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(value).map_err(|_| ())?;
            body = Some(v.parse::<usize>().map_err(|_| ())?);
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = value.eq_ignore_ascii_case(b"close");
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(()); // chunked: not for the reference loop
        }
    }
    let body = if status == b"204" || status == b"304" {
        0
    } else {
        body.ok_or(())?
    };
    Ok(Some((end + 4, body, close)))
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn socket_error(fd: i32) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a c_int out-value of its exact size.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if err == 0 { libc::EPIPE } else { err }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let r = b"HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 12\r\n\r\nhello";
        assert_eq!(parse_head(r), Ok(Some((50, 12, false))));
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n";
        assert_eq!(parse_head(r), Ok(Some((57, 3, true))));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        assert_eq!(
            parse_head(b"HTTP/1.1 304 NM\r\n\r\n"),
            Ok(Some((19, 0, false)))
        );
        assert!(parse_head(b"junk\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn sources() {
        assert_eq!(parse_sources("127.0.0.2-127.0.0.4").unwrap().len(), 3);
        assert_eq!(
            parse_sources("127.0.0.2,127.0.0.9").unwrap(),
            vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 9)]
        );
        assert!(parse_sources("127.0.0.9-127.0.0.2").is_err());
    }
}
