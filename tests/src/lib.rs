//! Integration-test harness for loadprobe: network namespaces, the `loadprobe trace` process,
//! and reference TCP scenarios made with real sockets.
//!
//! Every test creates its own namespace ([`Netns`]), starts a [`Tracer`] in it, runs one of the
//! scenario functions (which make connections inside the namespace and return what they made,
//! with the closer each one must be reported with), stops the tracer and checks the records
//! ([`Trace::assert_closers`]). All traffic stays on the loopback interface of the namespace.

// A dev-dependency for the tests; the harness's own unit tests do not use it.
#[cfg(test)]
use loadprobe as _;

pub mod hostile;
pub mod reports;

use serde_json::Value;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Barrier, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// IPv4 loopback.
pub const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// IPv6 loopback.
pub const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// How long a socket operation of a scenario may block before the scenario fails.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub use loadprobe::testing::{must_run, require_root};

// ---------------------------------------------------------------------------------------------
// Network namespaces

/// A network namespace made for one test (`ip netns add`), with `lo` up; deleted on drop, also
/// when the test panics.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `lp-<test>-<pid>`: unique per test within a run, and across
    /// concurrent runs.
    pub fn for_test(test: &str) -> Netns {
        Netns::new(&format!("lp-{test}-{}", std::process::id()))
    }

    /// Creates the namespace `name` (a stale one of that name, left by a killed run, is
    /// replaced).
    pub fn new(name: &str) -> Netns {
        if PathBuf::from("/run/netns").join(name).exists() {
            let _ = run_quiet(Command::new("ip").args(["netns", "del", name]));
        }
        run(Command::new("ip").args(["netns", "add", name]));
        // From here on, Drop removes it even if bringing lo up fails.
        let netns = Netns {
            name: name.to_owned(),
        };
        run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]));
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a new thread that has joined this namespace, and returns its result (a panic
    /// in `f` is re-raised here). Sockets made there, and threads spawned from there, belong to
    /// the namespace.
    pub fn enter_thread<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        thread::scope(|s| {
            let handle = thread::Builder::new()
                .name(format!("netns {}", self.name))
                .spawn_scoped(s, || {
                    self.enter_current_thread();
                    f()
                })
                .expect("spawn thread");
            match handle.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Moves the calling thread into this namespace (`setns(CLONE_NEWNET)`). Prefer
    /// [`Netns::enter_thread`], which leaves the caller's thread where it was.
    pub fn enter_current_thread(&self) {
        Netns::enter_named(&self.name);
    }

    /// Moves the calling thread into the namespace called `name`, for threads that outlive
    /// the borrow of a [`Netns`] (servers started in a test's namespace).
    pub fn enter_named(name: &str) {
        let path = format!("/run/netns/{name}");
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: a valid namespace fd; setns only changes this thread's network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!("setns({path}): {}", std::io::Error::last_os_error());
        }
    }

    /// `ip netns exec NAME sysctl -w KEY=VALUE`.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// Runs a command inside the namespace; panics unless it exits 0; returns its stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }

    /// The TCP sockets of the namespace as `ss -tan` shows them (time-wait ones included).
    pub fn sockets(&self) -> Vec<SsEntry> {
        self.exec(&["ss", "-H", "-t", "-a", "-n"])
            .lines()
            .filter_map(SsEntry::parse)
            .collect()
    }

    /// Waits until no TCP socket of the namespace is in the middle of a handshake (every one is
    /// LISTEN, TIME-WAIT or gone), so every close a scenario started has finished in the kernel.
    pub fn wait_quiet(&self) {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let sockets = self.sockets();
            if sockets
                .iter()
                .all(|s| matches!(s.state.as_str(), "LISTEN" | "TIME-WAIT" | "UNCONN"))
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "netns {}: sockets still closing after {IO_TIMEOUT:?}: {sockets:#?}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Which end of `conn` holds a TIME-WAIT socket, as the kernel says (ss): that end sent its
    /// FIN before it received the peer's. Both ends: "simultaneous"; neither: None.
    pub fn time_wait_closer(&self, conn: &Conn) -> Option<&'static str> {
        let sockets = self.sockets();
        let tw = |local: SocketAddr, peer: SocketAddr| {
            sockets
                .iter()
                .any(|s| s.state == "TIME-WAIT" && s.local == local && s.peer == peer)
        };
        match (tw(conn.client, conn.server), tw(conn.server, conn.client)) {
            (true, true) => Some("simultaneous"),
            (true, false) => Some("client"),
            (false, true) => Some("server"),
            (false, false) => None,
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_quiet(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: could not delete netns {}: {e}", self.name);
        }
    }
}

/// The names `ip netns list` gives that start with `prefix`: what a command that makes its
/// own namespaces (`tune validate`, `find-limit`) may have left behind.
pub fn netns_listed(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// One line of `ss -Htan`.
#[derive(Debug, Clone)]
pub struct SsEntry {
    /// "ESTAB", "TIME-WAIT", "FIN-WAIT-2", ... (a TIME_WAIT socket still in its FIN_WAIT2
    /// substate shows as FIN-WAIT-2).
    pub state: String,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

impl SsEntry {
    /// Parses `STATE RECV-Q SEND-Q LOCAL PEER`. An address ss writes with a wildcard (`*:80`,
    /// `0.0.0.0:*`) or that does not parse reads as unspecified, so the state is never lost.
    fn parse(line: &str) -> Option<SsEntry> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let addr = |s: &str| {
            let s = match s.strip_prefix("*:") {
                Some(port) => format!("[::]:{port}"),
                None => s.to_owned(),
            };
            let s = match s.strip_suffix(":*") {
                Some(host) => format!("{host}:0"),
                None => s,
            };
            s.parse::<SocketAddr>()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
        };
        Some(SsEntry {
            state: f.first()?.to_string(),
            local: addr(f.get(3)?),
            peer: addr(f.get(4)?),
        })
    }
}

/// Runs a command, panics unless it exits 0, returns stdout.
fn run(cmd: &mut Command) -> String {
    match run_quiet(cmd) {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    }
}

fn run_quiet(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------------
// The tracer

/// The loadprobe binary: `$LOADPROBE_BIN`, else `loadprobe` in the cargo profile directory of
/// the running test (`target/<profile>/deps/<test>` -> `target/<profile>/loadprobe`), which
/// `cargo xtask test` builds before the tests.
pub fn loadprobe_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("LOADPROBE_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary in target/<profile>/deps");
    let bin = profile_dir.join("loadprobe");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p loadprobe`; `cargo xtask test` does) or set LOADPROBE_BIN",
        bin.display()
    );
    bin
}

/// A running `loadprobe trace --format jsonl` inside a namespace. Killed on drop if
/// [`Tracer::stop`] was not called.
pub struct Tracer {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    /// When the tool said it was tracing.
    started: Instant,
}

/// What a stopped tracer printed.
#[derive(Debug)]
pub struct Trace {
    /// One per finished connection (the stdout objects without a "summary" key).
    pub records: Vec<Value>,
    /// The value of the final `{"summary": {...}}` object.
    pub summary: Value,
    pub stderr: String,
    pub status: ExitStatus,
    /// From the start of tracing to the call of [`Tracer::stop`]: every connection of a
    /// scenario opened and closed inside it.
    pub scenario_us: u64,
}

impl Tracer {
    /// How long the probe may take to attach.
    const START_TIMEOUT: Duration = Duration::from_secs(60);
    /// How long loadprobe may take to exit after SIGINT.
    const STOP_TIMEOUT: Duration = Duration::from_secs(20);

    /// Starts `ip netns exec NAME loadprobe trace --format jsonl [--port P]...` and returns once
    /// the tool says on stderr that it is tracing (a line with the word `tracing`, such as
    /// `loadprobe: tracing ...`). Panics with its stderr if it exits first.
    pub fn start(netns: &Netns, ports: &[u16]) -> Tracer {
        Tracer::start_in(netns.name(), ports)
    }

    /// [`Tracer::start`] in a namespace named `netns` that this harness did not make.
    pub fn start_in(netns: &str, ports: &[u16]) -> Tracer {
        Tracer::start_with(netns, ports, &[])
    }

    /// [`Tracer::start_in`] with more arguments for `trace` (e.g. `--metrics ADDR`).
    pub fn start_with(netns: &str, ports: &[u16], extra: &[&str]) -> Tracer {
        Tracer::start_under(netns, &[], ports, extra)
    }

    /// [`Tracer::start_with`], loadprobe started by the command `under` (e.g. `setpriv ...
    /// --`), which must exec it.
    pub fn start_under(netns: &str, under: &[&str], ports: &[u16], extra: &[&str]) -> Tracer {
        let bin = loadprobe_bin();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .args(under)
            .arg(&bin)
            .args(["trace", "--format", "jsonl"])
            .args(extra);
        for port in ports {
            cmd.arg("--port").arg(port.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut stdout = child.stdout.take().expect("piped");
        let stdout = thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            out
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr_pipe = child.stderr.take().expect("piped");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                if line
                    .split_whitespace()
                    .any(|w| w.trim_matches(|c: char| !c.is_alphanumeric()) == "tracing")
                {
                    let _ = ready_tx.send(());
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let mut tracer = Tracer {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
            started: Instant::now(),
        };
        match ready_rx.recv_timeout(Self::START_TIMEOUT) {
            Ok(()) => {
                tracer.started = Instant::now();
                tracer
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stderr closed without the line: the tool exited.
                let status = tracer.child.wait().expect("wait loadprobe");
                let stderr = tracer.stderr.take().unwrap().join().unwrap_or_default();
                panic!("{cmd:?} exited before tracing ({status}); stderr:\n{stderr}");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = tracer.child.kill();
                let _ = tracer.child.wait();
                let stderr = tracer.stderr.take().unwrap().join().unwrap_or_default();
                panic!(
                    "{cmd:?} did not say it was tracing within {:?}; stderr:\n{stderr}",
                    Self::START_TIMEOUT
                );
            }
        }
    }

    /// The process id of the running loadprobe (`ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGINT, waits for the exit (kills it after 20 s) and parses its output.
    pub fn stop(mut self) -> Trace {
        let scenario_us = self.started.elapsed().as_micros() as u64;
        // Let the last events of the scenario reach the ring buffer reader.
        thread::sleep(Duration::from_millis(100));
        // `ip netns exec` execs the command, so the child is loadprobe itself.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Self::STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait loadprobe") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.take().unwrap().join().unwrap_or_default();
                panic!(
                    "loadprobe did not exit within {:?} of SIGINT; stderr:\n{stderr}",
                    Self::STOP_TIMEOUT
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.take().unwrap().join().unwrap_or_default();
        let stderr = self.stderr.take().unwrap().join().unwrap_or_default();
        let mut records = Vec::new();
        let mut summary = None;
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("stdout line is not JSON ({e}): {line:?}\nstderr:\n{stderr}")
            });
            match value.get("summary") {
                Some(s) => {
                    assert!(summary.is_none(), "two summary objects in:\n{stdout}");
                    summary = Some(s.clone());
                }
                None => records.push(value),
            }
        }
        let summary = summary.unwrap_or_else(|| {
            panic!(
                "no {{\"summary\": ...}} object ({status}); stdout:\n{stdout}\nstderr:\n{stderr}"
            )
        });
        Trace {
            records,
            summary,
            stderr,
            status,
            scenario_us,
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Trace {
    /// The records whose "client" and "server" are those of `conn`.
    pub fn records_of(&self, conn: &Conn) -> Vec<&Value> {
        let (client, server) = (conn.client.to_string(), conn.server.to_string());
        self.records
            .iter()
            .filter(|r| r["client"] == client.as_str() && r["server"] == server.as_str())
            .collect()
    }

    /// `summary.lost_events` (panics if absent).
    pub fn lost_events(&self) -> u64 {
        self.summary["lost_events"]
            .as_u64()
            .unwrap_or_else(|| panic!("summary has no lost_events: {}", self.summary))
    }

    /// `summary.skipped_events` (panics if absent).
    pub fn skipped_events(&self) -> u64 {
        self.summary["skipped_events"]
            .as_u64()
            .unwrap_or_else(|| panic!("summary has no skipped_events: {}", self.summary))
    }

    /// `summary.read_errors`: failed kernel reads (panics if absent).
    pub fn read_errors(&self) -> u64 {
        self.summary["read_errors"]
            .as_u64()
            .unwrap_or_else(|| panic!("summary has no read_errors: {}", self.summary))
    }

    /// The checks of every trace test: no lost events or failed kernel reads, exactly one record per connection made
    /// and no other, each with the expected closer, and every close seen.
    ///
    /// A record that lasts longer than the scenario (all its connections closed inside it) had
    /// an end whose close the probe missed and closed only when the trace ended. The kernel
    /// skips a probe program that a hit of its own tracepoint interrupts (a softirq's state
    /// change arriving while the program runs for a socket in process context), and the probe
    /// reports those as `skipped_events`: each missed close must be one of them.
    pub fn assert_closers(&self, conns: &[Conn]) {
        let mut problems = String::new();
        if self.lost_events() != 0 {
            let _ = writeln!(problems, "lost_events = {}", self.lost_events());
        }
        if self.read_errors() != 0 {
            let _ = writeln!(problems, "read_errors = {}", self.read_errors());
        }
        if self.records.len() != conns.len() {
            let _ = writeln!(
                problems,
                "{} records for {} connections",
                self.records.len(),
                conns.len()
            );
        }
        let late: Vec<&Value> = self
            .records
            .iter()
            .filter(|r| r["lifetime_us"].as_u64() > Some(self.scenario_us))
            .collect();
        if late.len() as u64 > self.skipped_events() {
            let _ = writeln!(
                problems,
                "{} records last longer than the scenario ({} us) but only {} events were \
                 skipped, e.g. {}",
                late.len(),
                self.scenario_us,
                self.skipped_events(),
                late[0]
            );
        }
        for conn in conns {
            let found = self.records_of(conn);
            match found.as_slice() {
                [record] if record["closer"] == conn.expected => {}
                [record] => {
                    let _ = writeln!(
                        problems,
                        "{} -> {}: closer {} (expected {:?})",
                        conn.client, conn.server, record["closer"], conn.expected
                    );
                }
                _ => {
                    let _ = writeln!(
                        problems,
                        "{} -> {}: {} records (expected 1, closer {:?})",
                        conn.client,
                        conn.server,
                        found.len(),
                        conn.expected
                    );
                }
            }
        }
        if !problems.is_empty() {
            let mut records = String::new();
            for r in self.records.iter().take(50) {
                let _ = writeln!(records, "  {r}");
            }
            panic!(
                "trace does not match the connections made:\n{problems}summary: {}\nrecords (first 50 of {}):\n{records}stderr:\n{}",
                self.summary,
                self.records.len(),
                self.stderr
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// A connection a scenario made, and the closer loadprobe must report for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// `client`, `server`, `simultaneous`, `client-reset`, `server-reset` or `refused`.
    pub expected: &'static str,
}

/// Which end does something first.
pub use loadprobe::model::Side;

/// A listening socket on `ip:port` (SO_REUSEADDR, backlog 1024).
pub fn listen(ip: IpAddr, port: u16) -> TcpListener {
    let addr = SocketAddr::new(ip, port);
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).expect("socket");
    s.set_reuse_address(true).expect("SO_REUSEADDR");
    if ip.is_ipv6() {
        s.set_only_v6(true).expect("IPV6_V6ONLY");
    }
    s.bind(&addr.into())
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    s.listen(1024).expect("listen");
    s.into()
}

/// Connects to `listener` and accepts: (client end, server end).
pub fn connect_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().expect("listener addr");
    let client = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (server, _) = listener.accept().expect("accept");
    for s in [&client, &server] {
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("SO_RCVTIMEO");
        s.set_write_timeout(Some(IO_TIMEOUT)).expect("SO_SNDTIMEO");
    }
    (client, server)
}

fn conn(client: &TcpStream, server: &TcpStream, expected: &'static str) -> Conn {
    let c = Conn {
        client: client.local_addr().expect("client addr"),
        server: client.peer_addr().expect("server addr"),
        expected,
    };
    debug_assert_eq!(server.local_addr().ok(), Some(c.server));
    c
}

/// Reads until the peer's FIN; panics on anything else (a reset, a timeout).
pub fn read_to_eof(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => panic!("read until EOF: {e}"),
        }
    }
}

/// Reads expecting the peer's RST (ECONNRESET); panics on EOF or a timeout.
pub fn read_expect_reset(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => panic!("read: EOF where a reset was expected"),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("read: {e} where a reset was expected"),
        }
    }
}

/// Blocks until data is in the receive queue, without reading it.
fn wait_readable(s: &TcpStream) {
    let mut buf = [0u8; 1];
    let n = s.peek(&mut buf).expect("peek");
    assert_eq!(n, 1, "peek: EOF where data was expected");
}

/// One connection in `netns` to a listener on `ip:port`, ended by `end(by's end, the other
/// end)`; both ends are closed when `end` returns. The connection's expected closer is
/// `closer[0]` when `by` is the client, `closer[1]` when it is the server.
fn one_connection(
    netns: &Netns,
    ip: IpAddr,
    port: u16,
    by: Side,
    closer: [&'static str; 2],
    end: impl FnOnce(TcpStream, TcpStream) + Send,
) -> Vec<Conn> {
    netns.enter_thread(|| {
        let listener = listen(ip, port);
        let (client, server) = connect_pair(&listener);
        let (c, ends) = match by {
            Side::Client => (conn(&client, &server, closer[0]), (client, server)),
            Side::Server => (conn(&client, &server, closer[1]), (server, client)),
        };
        end(ends.0, ends.1);
        drop(listener);
        netns.wait_quiet();
        vec![c]
    })
}

/// Normal close, `first` closes first: each side sends data the other reads, `first` closes,
/// the other reads EOF and closes. Expected closer: `client` or `server`. The first closer ends
/// in TIME-WAIT.
pub fn orderly_close(netns: &Netns, ip: IpAddr, port: u16, first: Side) -> Vec<Conn> {
    one_connection(
        netns,
        ip,
        port,
        first,
        ["client", "server"],
        |mut closer, mut other| {
            closer.write_all(b"hello").unwrap();
            let mut buf = [0u8; 5];
            other.read_exact(&mut buf).unwrap();
            other.write_all(b"world").unwrap();
            closer.read_exact(&mut buf).unwrap();
            drop(closer);
            read_to_eof(&mut other);
        },
    )
}

/// Client closes first ([`orderly_close`]).
pub fn client_first_close(netns: &Netns, ip: IpAddr, port: u16) -> Vec<Conn> {
    orderly_close(netns, ip, port, Side::Client)
}

/// Server closes first ([`orderly_close`]).
pub fn server_first_close(netns: &Netns, ip: IpAddr, port: u16) -> Vec<Conn> {
    orderly_close(netns, ip, port, Side::Server)
}

/// Simultaneous close: on each connection both ends call `shutdown(SHUT_WR)` at the same
/// instant from two threads pinned to two CPUs (SCHED_FIFO; a Barrier, then a spin to a common
/// deadline), then read EOF and close. Makes connections until `want` of them came out
/// simultaneous, at most `max_tries` (then panics).
///
/// Whether the two FINs really cross is a race the kernel decides (loopback delivers a segment
/// within microseconds), so each connection's expected closer is what the kernel did, read from
/// `ss` after the close: TIME-WAIT on both ends (each sent its FIN before it received the
/// other's) = `simultaneous`, on one end only = that end.
pub fn simultaneous_close(
    netns: &Netns,
    ip: IpAddr,
    port: u16,
    want: usize,
    max_tries: usize,
) -> Vec<Conn> {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    netns.enter_thread(|| {
        let listener = listen(ip, port);
        let mut conns = Vec::new();
        let mut simultaneous = 0;
        while simultaneous < want {
            assert!(
                conns.len() < max_tries,
                "only {simultaneous} of {max_tries} closes were simultaneous (wanted {want}): {conns:#?}"
            );
            let (client, server) = connect_pair(&listener);
            let c = conn(&client, &server, "simultaneous");
            let barrier = Barrier::new(2);
            // One deadline for both threads, far enough for both to start and pin themselves.
            let go = Instant::now() + Duration::from_millis(20);
            thread::scope(|s| {
                for (cpu, mut stream) in [(0, client), (1, server)] {
                    let barrier = &barrier;
                    s.spawn(move || {
                        if cpus >= 2 {
                            pin_and_prioritize(cpu);
                        }
                        barrier.wait();
                        while Instant::now() < go {
                            std::hint::spin_loop();
                        }
                        stream.shutdown(Shutdown::Write).expect("shutdown(SHUT_WR)");
                        read_to_eof(&mut stream);
                    });
                }
            });
            netns.wait_quiet();
            let expected = netns
                .time_wait_closer(&c)
                .unwrap_or_else(|| panic!("no TIME-WAIT socket for {c:?}"));
            simultaneous += usize::from(expected == "simultaneous");
            conns.push(Conn { expected, ..c });
        }
        conns
    })
}

/// Pins the calling thread to `cpu` and makes it SCHED_FIFO, so that other load on the machine
/// does not delay it at the moment it must act (it runs for a few milliseconds only). Best
/// effort: failures are ignored.
fn pin_and_prioritize(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, sched_param is plain data; pid 0 is the
    // calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        let param = libc::sched_param { sched_priority: 1 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param);
    }
}

/// Abortive close with SO_LINGER {on, 0} by `by`: close sends a RST, the peer reads ECONNRESET
/// and closes. Expected closer: `client-reset` or `server-reset`. No TIME-WAIT anywhere.
pub fn linger0_abort(netns: &Netns, ip: IpAddr, port: u16, by: Side) -> Vec<Conn> {
    let closer = ["client-reset", "server-reset"];
    one_connection(netns, ip, port, by, closer, |aborter, mut other| {
        SockRef::from(&aborter)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER");
        drop(aborter);
        read_expect_reset(&mut other);
    })
}

/// Close with unread data by `by`: the peer sends bytes that `by` has received but never reads,
/// then `by` closes, which sends a RST (TCP_ABORT_ON_CLOSE); the peer reads ECONNRESET and
/// closes. Expected closer: `client-reset` or `server-reset`.
pub fn unread_data_close(netns: &Netns, ip: IpAddr, port: u16, by: Side) -> Vec<Conn> {
    let closer = ["client-reset", "server-reset"];
    one_connection(netns, ip, port, by, closer, |closer, mut peer| {
        peer.write_all(&[b'x'; 100]).unwrap();
        wait_readable(&closer);
        drop(closer);
        read_expect_reset(&mut peer);
    })
}

/// The client closes while its FIN must wait behind unsent data, and the server then closes
/// with the client's bytes unread, which sends an RST, as a server does that reads a request's
/// head only and drops a large body. Connection `i` does this for even `i`: the client writes
/// until its send buffer is full (the server reads nothing, so its window closes), closes (its
/// socket is in FIN_WAIT1, its FIN queued, not sent), and the server's RST is the first closing
/// segment on the wire: `server-reset`. For odd `i` the client writes a little, its FIN goes
/// out at close, and the server's RST comes after it: `client`.
pub fn queued_fin_then_reset(netns: &Netns, ip: IpAddr, port: u16, n: usize) -> Vec<Conn> {
    netns.enter_thread(|| {
        let listener = listen(ip, port);
        // Small buffers keep the data each connection queues small.
        SockRef::from(&listener)
            .set_recv_buffer_size(16 * 1024)
            .expect("SO_RCVBUF");
        let mut conns = Vec::new();
        for i in 0..n {
            let (mut client, server) = connect_pair(&listener);
            let queued = i % 2 == 0;
            conns.push(conn(
                &client,
                &server,
                if queued { "server-reset" } else { "client" },
            ));
            if queued {
                SockRef::from(&client)
                    .set_send_buffer_size(32 * 1024)
                    .expect("SO_SNDBUF");
                client.set_nonblocking(true).expect("nonblocking");
                let chunk = [b'x'; 4096];
                loop {
                    match client.write(&chunk) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("write: {e}"),
                    }
                }
            } else {
                client.write_all(&[b'x'; 100]).unwrap();
                wait_readable(&server);
            }
            drop(client);
            drop(server);
        }
        drop(listener);
        netns.wait_quiet();
        conns
    })
}

/// connect() to `ip:port` where nothing listens: the kernel answers the SYN with a RST and
/// connect fails with ECONNREFUSED. The client binds first (port 0) to learn its address,
/// because a failed connect releases the port. Expected closer: `refused`.
pub fn connect_refused(netns: &Netns, ip: IpAddr, port: u16) -> Vec<Conn> {
    netns.enter_thread(|| {
        let server = SocketAddr::new(ip, port);
        let s = Socket::new(
            Domain::for_address(server),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .expect("socket");
        s.bind(&SocketAddr::new(ip, 0).into()).expect("bind");
        let client = s.local_addr().unwrap().as_socket().expect("inet addr");
        let err = s
            .connect(&server.into())
            .expect_err("connect to a closed port succeeded");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "connect: {err}");
        drop(s);
        netns.wait_quiet();
        vec![Conn {
            client,
            server,
            expected: "refused",
        }]
    })
}

/// `n` short connections, one after the other as fast as possible: the client connects and
/// closes at once, a server thread accepts, reads EOF and closes. Expected closer: `client`.
pub fn burst_client_close(netns: &Netns, ip: IpAddr, port: u16, n: usize) -> Vec<Conn> {
    let conns = netns.enter_thread(|| {
        let listener = listen(ip, port);
        let addr = listener.local_addr().unwrap();
        thread::scope(|s| {
            // Spawned from the namespace thread, so it is in the namespace too.
            let server = s.spawn(|| {
                for _ in 0..n {
                    let (mut stream, _) = listener.accept().expect("accept");
                    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    read_to_eof(&mut stream);
                }
            });
            let mut conns = Vec::with_capacity(n);
            for _ in 0..n {
                let client =
                    TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
                conns.push(Conn {
                    client: client.local_addr().unwrap(),
                    server: addr,
                    expected: "client",
                });
            }
            server.join().expect("burst server thread");
            conns
        })
    });
    netns.wait_quiet();
    conns
}

/// A fresh temporary folder for one test's files.
pub fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadprobe-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Debian's nginx, one worker, on 127.0.0.1:`port` in `netns`, with a config of its own.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    pub fn start(netns: &str, port: u16) -> Nginx {
        Nginx::start_server(
            netns,
            port,
            &format!("listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }}"),
        )
    }

    /// HTTPS on 127.0.0.1:`port` and [::1]:`port`, showing the certificate chain and key of
    /// these PEM files; session tickets on (nginx's default), so clients may resume. `extra`:
    /// more directives for the server block (`ssl_verify_client on;`...).
    pub fn start_tls(netns: &str, port: u16, cert: &Path, key: &Path, extra: &str) -> Nginx {
        Nginx::start_server(
            netns,
            port,
            &format!(
                "listen 127.0.0.1:{port} ssl; listen [::1]:{port} ssl;\n\
                 ssl_certificate {}; ssl_certificate_key {}; {extra}\n\
                 location / {{ return 200 \"ok\\n\"; }}",
                cert.display(),
                key.display()
            ),
        )
    }

    /// nginx with one `server { ... }` block of this body, listening on 127.0.0.1:`port`.
    fn start_server(netns: &str, port: u16, server: &str) -> Nginx {
        let dir = tempdir(&format!("nginx-{port}"));
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
                   client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                   fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
                   scgi_temp_path {d}/scgi;\n\
                   server {{ {server} }}\n}}\n",
                d = dir.display()
            ),
        )
        .expect("nginx.conf");
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "nginx", "-e"])
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx (cargo xtask setup installs it)");
        let nginx = Nginx { child, dir };
        wait_for_port(netns, &format!("127.0.0.1:{port}"));
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until something listens on `addr` (as `ss` prints it) in `netns`.
pub fn wait_for_port(netns: &str, addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let ss = Command::new("ip")
            .args(["netns", "exec", netns, "ss", "-Htln"])
            .output()
            .expect("ss");
        if String::from_utf8_lossy(&ss.stdout).contains(addr) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr} in {netns}");
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// One scrape of an OpenMetrics endpoint: each sample line's value by its series, the metric
/// name with its labels as the text spells them (`loadprobe_lost_events_total`,
/// `loadprobe_time_wait_alive{side="client",substate="TIME_WAIT"}`).
pub type Scrape = std::collections::BTreeMap<String, f64>;

/// `GET /metrics` from `addr`, on a thread inside `netns`; panics unless it answers 200 within
/// [`IO_TIMEOUT`].
pub fn scrape(netns: &Netns, addr: SocketAddr) -> Scrape {
    let text = netns.enter_thread(|| http_get(addr, "/metrics"));
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF:\n{body}"
    );
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|e| panic!("{l:?}: {e}")),
            };
            (series.to_string(), value)
        })
        .collect()
}

/// A plain HTTP/1.1 GET; returns the whole answer, head and body.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    text
}

#[cfg(test)]
mod tests {
    //! The harness on its own (no loadprobe): namespaces come and go, each scenario completes
    //! and leaves the kernel state it claims.
    use super::*;

    fn tw_closers(netns: &Netns, conns: &[Conn]) -> Vec<Option<&'static str>> {
        conns.iter().map(|c| netns.time_wait_closer(c)).collect()
    }

    #[test]
    fn netns_is_created_isolated_and_removed() {
        if !require_root("netns_is_created_isolated_and_removed") {
            return;
        }
        let path = PathBuf::from("/run/netns").join(format!("lp-h-netns-{}", std::process::id()));
        {
            let netns = Netns::for_test("h-netns");
            assert!(path.exists());
            netns.sysctl("net.ipv4.tcp_fin_timeout", "30");
            assert_eq!(
                netns
                    .exec(&["sysctl", "-n", "net.ipv4.tcp_fin_timeout"])
                    .trim(),
                "30"
            );
            // A listener made in the namespace is seen there, not in the caller's namespace.
            let listener = netns.enter_thread(|| listen(V4, 7001));
            assert!(
                netns
                    .sockets()
                    .iter()
                    .any(|s| s.state == "LISTEN" && s.local.port() == 7001)
            );
            let host = run(Command::new("ss").args(["-H", "-t", "-l", "-n"]));
            assert!(
                !host.contains("127.0.0.1:7001"),
                "listener leaked to host: {host}"
            );
            drop(listener);
        }
        assert!(!path.exists(), "netns not removed");
    }

    #[test]
    fn netns_is_removed_when_a_test_panics() {
        if !require_root("netns_is_removed_when_a_test_panics") {
            return;
        }
        let path = PathBuf::from("/run/netns").join(format!("lp-h-panic-{}", std::process::id()));
        let result = std::panic::catch_unwind(|| {
            let netns = Netns::for_test("h-panic");
            netns.enter_thread(|| panic!("boom"));
        });
        assert!(result.is_err());
        assert!(!path.exists(), "netns not removed after a panic");
    }

    #[test]
    fn orderly_closes_leave_time_wait_on_the_closer() {
        if !require_root("orderly_closes_leave_time_wait_on_the_closer") {
            return;
        }
        let netns = Netns::for_test("h-orderly");
        let mut conns = client_first_close(&netns, V4, 7002);
        conns.extend(server_first_close(&netns, V4, 7003));
        conns.extend(client_first_close(&netns, V6, 7004));
        conns.extend(server_first_close(&netns, V6, 7005));
        assert_eq!(
            tw_closers(&netns, &conns),
            [
                Some("client"),
                Some("server"),
                Some("client"),
                Some("server")
            ]
        );
        assert_eq!(conns[2].client.ip(), V6);
        assert!(conns[2].server.to_string().starts_with("[::1]:"));
    }

    #[test]
    fn aborts_leave_no_time_wait() {
        if !require_root("aborts_leave_no_time_wait") {
            return;
        }
        let netns = Netns::for_test("h-abort");
        let mut conns = linger0_abort(&netns, V4, 7010, Side::Client);
        conns.extend(linger0_abort(&netns, V4, 7011, Side::Server));
        conns.extend(unread_data_close(&netns, V4, 7012, Side::Client));
        conns.extend(unread_data_close(&netns, V4, 7013, Side::Server));
        conns.extend(connect_refused(&netns, V4, 7014));
        let expected: Vec<_> = conns.iter().map(|c| c.expected).collect();
        assert_eq!(
            expected,
            [
                "client-reset",
                "server-reset",
                "client-reset",
                "server-reset",
                "refused"
            ]
        );
        assert_eq!(tw_closers(&netns, &conns), [None; 5]);
        assert!(netns.sockets().is_empty(), "{:#?}", netns.sockets());
        assert_ne!(conns[4].client.port(), 0);
    }

    #[test]
    fn simultaneous_close_leaves_time_wait_on_both_ends() {
        if !require_root("simultaneous_close_leaves_time_wait_on_both_ends") {
            return;
        }
        let netns = Netns::for_test("h-simul");
        let conns = simultaneous_close(&netns, V4, 7020, 5, 50);
        let n = conns
            .iter()
            .filter(|c| c.expected == "simultaneous")
            .count();
        assert_eq!(n, 5);
        eprintln!("simultaneous: {n} of {}", conns.len());
    }

    #[test]
    fn burst_leaves_time_waits_on_clients_only() {
        if !require_root("burst_leaves_time_waits_on_clients_only") {
            return;
        }
        let netns = Netns::for_test("h-burst");
        let conns = burst_client_close(&netns, V4, 7030, 200);
        let clients: std::collections::HashSet<_> = conns.iter().map(|c| c.client).collect();
        assert_eq!(clients.len(), 200, "a client address was used twice");
        let tw: Vec<_> = netns
            .sockets()
            .into_iter()
            .filter(|s| s.state == "TIME-WAIT")
            .collect();
        assert!(tw.iter().all(|s| clients.contains(&s.local)), "{tw:#?}");
        // Not all 200. Seen on 6.18 in bursts (up to 15% of them): a client TIME-WAIT disappears
        // within milliseconds, one RST per missing TIME-WAIT, each sent by the listener (reason
        // TCP_FLAGS, from ksoftirqd) and none counted as a reset of a full socket. Likely cause:
        // loopback segments queued on the two CPUs' backlogs overtake each other, a late one
        // reaches the TIME-WAIT after its server end is gone, the TIME-WAIT answers with an ACK,
        // the listener with a RST, which kills the TIME-WAIT (tcp_rfc1337=0). The first FIN is
        // still the client's.
        assert!(tw.len() >= 100, "only {} client TIME-WAITs", tw.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Misbehaving servers

/// A small TCP server with a misbehaviour of its own, on a thread inside a namespace: each
/// accepted connection goes to `handle`, on the accept thread, one after the other. The
/// streams `handle` returns stay open until the server is dropped (a server that never
/// closes); those it drops close when it does.
pub struct TestServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn start(
        netns: &Netns,
        addr: SocketAddr,
        handle: impl FnMut(TcpStream) -> Option<TcpStream> + Send + 'static,
    ) -> TestServer {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let path = format!("/run/netns/{}", netns.name());
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let stop = stop.clone();
            let mut handle = handle;
            thread::spawn(move || {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: a valid namespace fd; setns only changes this thread's namespace.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    panic!("setns({path}): {}", std::io::Error::last_os_error());
                }
                let listener = listen(addr.ip(), addr.port());
                listener.set_nonblocking(true).expect("nonblocking");
                let _ = ready_tx.send(());
                let mut kept = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).expect("blocking");
                            stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                            kept.extend(handle(stream));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(1));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            })
        };
        ready_rx.recv().expect("test server listening");
        TestServer {
            stop,
            thread: Some(thread),
            addr,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads an HTTP request's head (up to the blank line); returns false at EOF or an error.
pub fn read_request_head(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

/// A minimal complete response that leaves the connection open.
pub const OK_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
// ---------------------------------------------------------------------------------------------
// Packet captures

/// `tcpdump` on `lo` of a namespace, for the truth on the wire: who sent the first FIN or RST
/// of each connection. Stopped (and its output parsed) by [`Capture::stop`].
pub struct Capture {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// One TCP segment of a capture.
#[derive(Debug, Clone)]
pub struct Segment {
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// tcpdump's flags: `S`, `.`, `P`, `F`, `R`, ... as in `[F.]`.
    pub flags: String,
}

impl Capture {
    /// Starts `tcpdump -i lo -n -l 'tcp port PORT'` in `netns`; returns once it listens.
    pub fn start(netns: &Netns, port: u16) -> Capture {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns.name()])
            .args([
                "tcpdump", "-i", "lo", "-n", "-l", "-S", "-B", "65536", "-s", "128",
            ])
            .arg(format!("tcp port {port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (cargo xtask setup installs it)");
        let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
        let mut line = String::new();
        // "listening on lo, link-type ..." once the capture runs.
        while stderr.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("listening on") {
            line.clear();
        }
        assert!(line.contains("listening on"), "tcpdump did not start");
        let stderr = thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            rest
        });
        let mut stdout = child.stdout.take().expect("piped");
        let stdout = thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            out
        });
        Capture {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// Stops the capture (SIGINT, so tcpdump flushes) and returns its segments in order.
    /// Panics if the kernel dropped any packet of it: the capture would not be the truth.
    pub fn stop(mut self) -> Vec<Segment> {
        thread::sleep(Duration::from_millis(200));
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.child.wait();
        let out = self.stdout.take().unwrap().join().unwrap_or_default();
        let stats = self.stderr.take().unwrap().join().unwrap_or_default();
        let dropped = stats
            .lines()
            .find(|l| l.contains("dropped by kernel"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok());
        assert_eq!(dropped, Some(0), "tcpdump dropped packets:\n{stats}");
        out.lines().filter_map(Segment::parse).collect()
    }

    /// Per connection (client, server), in the order of their first segments: who first put
    /// a FIN or an RST on the wire, named as the probe names closers (`client`, `server`,
    /// `client-reset`, `server-reset`; None: neither yet), for connections to `server_port`.
    pub fn first_closers(
        segments: &[Segment],
        server_port: u16,
    ) -> Vec<((SocketAddr, SocketAddr), Option<&'static str>)> {
        let mut conns: Vec<((SocketAddr, SocketAddr), Option<&'static str>)> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for s in segments {
            let (client, server, by_client) = if s.to.port() == server_port {
                (s.from, s.to, true)
            } else {
                (s.to, s.from, false)
            };
            let i = *index.entry((client, server)).or_insert_with(|| {
                conns.push(((client, server), None));
                conns.len() - 1
            });
            let what = match (s.flags.contains('R'), s.flags.contains('F'), by_client) {
                (true, _, true) => "client-reset",
                (true, _, false) => "server-reset",
                (false, true, true) => "client",
                (false, true, false) => "server",
                _ => continue,
            };
            conns[i].1.get_or_insert(what);
        }
        conns
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Segment {
    /// `12:00:00.000000 IP 127.0.0.1.40000 > 127.0.0.1.8080: Flags [F.], seq ...` (IPv4 only).
    fn parse(line: &str) -> Option<Segment> {
        let mut words = line.split_whitespace();
        words.find(|w| *w == "IP")?;
        let from = words.next()?;
        words.next().filter(|w| *w == ">")?;
        let to = words.next()?.trim_end_matches(':');
        words.find(|w| *w == "Flags")?;
        let flags = words
            .next()?
            .trim_matches(|c| c == '[' || c == ']' || c == ',');
        let addr = |s: &str| -> Option<SocketAddr> {
            let (ip, port) = s.rsplit_once('.')?;
            Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
        };
        Some(Segment {
            from: addr(from)?,
            to: addr(to)?,
            flags: flags.to_string(),
        })
    }
}

/// A field of `/proc/PID/status` (`"Uid:"`, `"CapEff:"`), trimmed; panics if absent.
pub fn status_line(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
        .to_string()
}

/// Panics unless the command exited 0, showing its status, stdout and stderr.
pub fn assert_success(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Held for a whole test by the tests that must not go beside each other: runs whose probe
/// counts are held to the kernel's exactly lose some (closers `unknown`, FIN_WAIT2 sockets not
/// counted) when another test's runs take the CPUs at the same time.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it poisons it; the next one runs all the same.
    ONE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `loadprobe run ARGS -o record.json` inside `netns`; returns the record and the output.
pub fn run_in(netns: &str, args: &[&str]) -> (Value, std::process::Output) {
    // A directory of its own per call: runs may go at once.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = tempdir(&format!("{netns}-{n}"));
    let record = dir.join("record.json");
    let output = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(loadprobe_bin())
        .arg("run")
        .args(args)
        .arg("-o")
        .arg(&record)
        .output()
        .expect("ip netns exec loadprobe run");
    let record = read_record(&record, &output);
    let _ = std::fs::remove_dir_all(&dir);
    (record, output)
}

/// A child process, killed when dropped: also when the test fails first.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The number at a record path (`requests.ok`); panics if it is not one.
pub fn num(record: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(record, |v, key| &v[key])
        .as_u64()
        .unwrap_or_else(|| panic!("{path} is not a number in the record"))
}

/// The run record a `loadprobe run -o PATH` wrote; panics with the run's output if it did not.
pub fn read_record(path: &std::path::Path, output: &std::process::Output) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "no record ({e}); stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    serde_json::from_str(&text).expect("record is JSON")
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A test CA and the server certificates it signs, as PEM files in a folder of the test's.
pub struct Pki {
    dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA's certificate: what `--cacert` names.
    pub ca: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = tempdir(&format!("pki-{tag}"));
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "loadprobe test CA");
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("ca.pem");
        Pki {
            issuer: rcgen::Issuer::new(params, key),
            dir,
            ca,
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by the CA; expired
    /// a year ago when `expired`.
    pub fn server(&self, file: &str, names: &[&str], expired: bool) -> CertFiles {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("server params");
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        self.write(file, &cert.pem(), &key.serialize_pem())
    }

    /// A certificate for `names` signed by itself, which no CA vouches for.
    pub fn self_signed(&self, file: &str, names: &[&str]) -> CertFiles {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(names).expect("self-signed");
        self.write(file, &cert.pem(), &signing_key.serialize_pem())
    }

    fn write(&self, file: &str, cert: &str, key: &str) -> CertFiles {
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert).expect("cert file");
        std::fs::write(&files.key, key).expect("key file");
        files
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
