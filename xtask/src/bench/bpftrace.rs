//! The bpftrace peers of `cargo xtask bench --floor`: what a person attaches instead of
//! loadprobe's probe to watch TCP state changes, each attached while loadprobe `--no-probe`
//! drives server-close against the bench's nginx.
//!
//! Two scripts on the classic tracepoint `sock:inet_sock_set_state`, the one BCC's tcpstates
//! uses:
//! - [`Tool::BpftracePrint`]: tcpstates' work, one line per TCP state change (socket address,
//!   pid, comm, both ends, old and new state, milliseconds in the old state from a map keyed
//!   by the socket). Its output goes to a pipe the bench drains and counts, as `| wc -c` would:
//!   bpftrace formats every line, nothing is kept.
//! - [`Tool::BpftraceCount`]: the cheapest thing a bpftrace user writes, a count per
//!   transition in a map, printed once at exit.
//!
//! Each script declares, after its tracepoint probe, an `interval` probe that prints a marker
//! once. bpftrace attaches tracepoint and interval probes in the order they are declared (its
//! `BEGIN` and its "Attaching N probes..." line come before any attachment), so the marker
//! means the tracepoint program is attached; the measurement starts after it. bpftrace is
//! stopped with SIGINT (it detaches, prints its maps and exits) and reaped with `wait4` for its
//! CPU time and peak RSS.
//!
//! Classic tracepoints need tracefs (bpftrace reads the tracepoint's id and format there).
//! Where it is not mounted, bpftrace runs in a private mount namespace with tracefs mounted in
//! it, so the machine's mounts are left as they were.

use std::ffi::CStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{INTERRUPTED, Tool, tail};

/// The bpftrace peers, in the order of the table.
pub(super) const TOOLS: [Tool; 2] = [Tool::BpftracePrint, Tool::BpftraceCount];

/// The line each script prints once its tracepoint program is attached.
const ATTACHED: &str = "loadprobe-bench: attached";

/// How long bpftrace may take to compile and attach (LLVM, BTF) on a loaded machine.
const ATTACH_LIMIT: Duration = Duration::from_secs(60);

/// How long bpftrace's output may keep growing before it is stopped: on SIGINT bpftrace 0.17
/// drops the events it has not read yet, so it is given the time to print them first.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// How long bpftrace may take to detach and exit after SIGINT.
pub(super) const STOP_LIMIT: Duration = Duration::from_secs(15);

/// tracefs's own mount point, where bpftrace finds it when debugfs is not mounted.
const TRACEFS: &CStr = c"/sys/kernel/tracing";

/// What the BCC tool tcpstates does, as a bpftrace script: one line per TCP state change.
/// States are printed as numbers (tcpstates names them in userspace).
const PRINT: &str = r#"tracepoint:sock:inet_sock_set_state
/args->protocol == 6/
{
	$last = @last[args->skaddr];
	$ms = $last > 0 ? (nsecs - $last) / 1000000 : 0;
	printf("%lx %d %s %s %d %s %d %d -> %d %d\n", args->skaddr, pid, comm,
	    ntop(args->saddr), args->sport, ntop(args->daddr), args->dport,
	    args->oldstate, args->newstate, $ms);
	if (args->newstate == 7) {
		delete(@last[args->skaddr]);
	} else {
		@last[args->skaddr] = nsecs;
	}
}
"#;

/// The cheapest script on the same tracepoint: a count per transition.
const COUNT: &str = r#"tracepoint:sock:inet_sock_set_state
{
	@[args->oldstate, args->newstate] = count();
}
"#;

/// Declared after the tracepoint probe: prints [`ATTACHED`] once, then only checks a map ten
/// times a second. At exit its map and `maps` (the script's own, not results) are cleared so
/// that only the counts are printed.
fn marker(maps: &[&str]) -> String {
    let clears: String = ["@attached"]
        .iter()
        .chain(maps)
        .map(|m| format!("\tclear({m});\n"))
        .collect();
    format!(
        r#"interval:ms:100
/@attached == 0/
{{
	@attached = 1;
	printf("{ATTACHED}\n");
}}
END
{{
{clears}}}
"#
    )
}

/// The script `tool` attaches, if it is a bpftrace peer.
pub(super) fn script(tool: Tool) -> Option<String> {
    let (probe, maps): (&str, &[&str]) = match tool {
        Tool::BpftracePrint => (PRINT, &["@last"]),
        Tool::BpftraceCount => (COUNT, &[]),
        _ => return None,
    };
    Some(format!("{probe}{}", marker(maps)))
}

/// What bpftrace did during one measurement.
#[derive(Clone, Debug)]
pub(super) struct Observed {
    /// Lines of per-event output (the print script), marker and map lines not counted.
    pub(super) lines: u64,
    /// Bytes of output, everything included.
    pub(super) bytes: u64,
    /// Events bpftrace said it lost (its "Lost N events" lines).
    pub(super) lost: u64,
    /// The sum of the counts it printed at exit (the count script).
    pub(super) counted: u64,
    /// bpftrace's own user + system CPU seconds, compilation and attachment included.
    pub(super) cpu_s: f64,
    /// bpftrace's peak RSS, KiB.
    pub(super) rss_kib: u64,
    /// Whether it had to be killed, still busy printing [`STOP_LIMIT`] after SIGINT (its
    /// loop reads its buffers until they are empty before it looks at the signal).
    pub(super) killed: bool,
}

/// What the reader thread saw on bpftrace's stdout.
#[derive(Default)]
struct Output {
    lines: u64,
    bytes: u64,
    lost: u64,
    counted: u64,
    /// The lines before the marker, for an error message.
    head: String,
}

impl Output {
    /// One line of output (without its newline), after the marker or not.
    fn line(&mut self, line: &[u8], attached: bool) {
        if !attached {
            if self.head.len() < 4096 {
                self.head.push_str(&String::from_utf8_lossy(line));
                self.head.push('\n');
            }
            return;
        }
        if line.first() == Some(&b'@') {
            // "@[4, 5]: 123"
            let n = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
            self.counted += parse_u64(n);
        } else if let Some(rest) = line.strip_prefix(b"Lost ") {
            // "Lost 123 events"
            let n = rest.split(|&b| b == b' ').next().unwrap_or_default();
            self.lost += parse_u64(n);
        } else if !line.is_empty() {
            self.lines += 1;
        }
    }
}

fn parse_u64(digits: &[u8]) -> u64 {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads bpftrace's stdout to its end, counting; says on `attached` when the marker arrives.
/// `bytes` follows the bytes read so far.
fn drain(mut out: impl Read, attached: mpsc::Sender<()>, bytes: &AtomicU64) -> Output {
    let mut o = Output::default();
    let mut seen = false;
    let mut buf = vec![0u8; 1 << 16];
    // The start of a line that did not end in the last read.
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        o.bytes += n as u64;
        bytes.store(o.bytes, Ordering::Relaxed);
        let mut chunk = &buf[..n];
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            let line = if partial.is_empty() {
                &chunk[..i]
            } else {
                partial.extend_from_slice(&chunk[..i]);
                &partial[..]
            };
            if !seen && line == ATTACHED.as_bytes() {
                seen = true;
                let _ = attached.send(());
            } else {
                o.line(line, seen);
            }
            partial.clear();
            chunk = &chunk[i + 1..];
        }
        partial.extend_from_slice(chunk);
    }
    if !partial.is_empty() {
        o.line(&partial, seen);
    }
    o
}

/// A bpftrace script attached and running.
pub(super) struct Running {
    child: Option<Child>,
    reader: Option<JoinHandle<Output>>,
    /// The bytes of output read so far.
    bytes: Arc<AtomicU64>,
    stderr: PathBuf,
}

/// Whether bpftrace can find tracefs on this machine as it is.
fn tracefs_mounted() -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|d| {
            Path::new(d)
                .join("events/sock/inet_sock_set_state")
                .exists()
        })
}

/// Starts `tool`'s script and returns once its tracepoint program is attached; `Err(why)`
/// when it cannot run here (the table's row says why). Its stderr goes to `dir/name.stderr`.
pub(super) fn start(tool: Tool, dir: &Path, name: &str) -> Result<Running, String> {
    let script =
        script(tool).ok_or_else(|| format!("{} is not a bpftrace script", tool.label()))?;
    let stderr = dir.join(format!("{name}.stderr"));
    let err_file =
        std::fs::File::create(&stderr).map_err(|e| format!("{}: {e}", stderr.display()))?;
    let private_tracefs = !tracefs_mounted();
    let mut cmd = Command::new("bpftrace");
    cmd.arg("-e")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err_file);
    // A session of its own, as when it runs in another terminal: the scheduler's autogroups
    // give it its own share of the CPUs (as nginx has), and a terminal's Ctrl-C reaches the
    // bench, which stops it.
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, unshare, mount) on
    // static C strings; nothing of this process's memory is touched.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if private_tracefs {
                // Mounts made private first, so that tracefs does not propagate back out.
                let none = std::ptr::null();
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        none,
                        c"/".as_ptr(),
                        none,
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    || libc::mount(
                        c"tracefs".as_ptr(),
                        TRACEFS.as_ptr(),
                        c"tracefs".as_ptr(),
                        0,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        if private_tracefs {
            format!(
                "tracefs is not mounted and bpftrace cannot start with it mounted in a private \
                 mount namespace: {e}"
            )
        } else {
            format!("cannot start bpftrace: {e}")
        }
    })?;
    let out = child.stdout.take().ok_or("bpftrace's stdout")?;
    let (tx, rx) = mpsc::channel();
    let bytes = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&bytes);
    let reader = std::thread::spawn(move || drain(out, tx, &counter));
    let mut running = Running {
        child: Some(child),
        reader: Some(reader),
        bytes,
        stderr,
    };
    let started = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(()) => return Ok(running),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Its stdout closed before the marker: it exited.
                return Err(running.failed("exited before attaching"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err("interrupted".into());
        }
        if started.elapsed() > ATTACH_LIMIT {
            return Err(running.failed(&format!("not attached after {} s", ATTACH_LIMIT.as_secs())));
        }
    }
}

impl Running {
    /// Stops bpftrace (SIGINT, then SIGKILL after [`STOP_LIMIT`]) and reaps it: its exit
    /// status, CPU seconds, peak RSS (KiB) and whether it was killed.
    fn reap(&mut self) -> Option<(ExitStatus, f64, u64, bool)> {
        let child = self.child.take()?;
        let pid = child.id() as libc::pid_t;
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let asked = Instant::now();
        let mut killed = false;
        let reaped = loop {
            match super::try_reap(pid) {
                Ok(Some(r)) => break Some((r.status, r.cpu_s, r.rss_kib, killed)),
                Ok(None) => {}
                Err(_) => break None,
            }
            if !killed && asked.elapsed() > STOP_LIMIT {
                // SAFETY: signalling our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Reaped by wait4: the Child must not be waited for again.
        drop(child);
        reaped
    }

    /// The reader's counts, once bpftrace's stdout has closed.
    fn output(&mut self) -> Output {
        self.reader
            .take()
            .and_then(|r| r.join().ok())
            .unwrap_or_default()
    }

    /// Stops bpftrace and says why it could not run: `what`, with what it printed.
    fn failed(&mut self, what: &str) -> String {
        let status = self.reap().map(|(st, ..)| st);
        let out = self.output();
        self.explain(what, status, &out)
    }

    /// `what` went wrong, with the exit status and the last lines bpftrace printed (before
    /// the marker, and on stderr).
    fn explain(&self, what: &str, status: Option<ExitStatus>, out: &Output) -> String {
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        // Its warning about RLIMIT_MEMLOCK is harmless (BPF memory is charged to the cgroup on
        // this kernel) and says nothing about a failure.
        let err: Vec<&str> = err
            .lines()
            .filter(|l| !l.contains("RLIMIT_MEMLOCK") && !l.trim().is_empty())
            .collect();
        let said = tail(&format!("{}\n{}", out.head.trim(), err.join("\n")), 3);
        format!(
            "bpftrace {what}{}: {}",
            status.map_or(String::new(), |st| format!(" ({st})")),
            said.trim().replace('\n', "; ")
        )
    }

    /// Whether bpftrace has exited (without reaping it).
    fn exited(&self) -> bool {
        let Some(child) = &self.child else {
            return true;
        };
        // SAFETY: an out-struct for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer; WNOWAIT leaves the child to be reaped by `reap`.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid filled `info` (or left it zeroed: no child has changed state).
        r == 0 && unsafe { info.si_pid() } != 0
    }

    /// Stops bpftrace and returns what it did; `Err(why)` when it had exited already or does
    /// not exit cleanly.
    pub(super) fn stop(mut self) -> Result<Observed, String> {
        if self.exited() {
            return Err(self.failed("exited during the measurement"));
        }
        // Until its output has stopped growing for 200 ms.
        let since = Instant::now();
        loop {
            let before = self.bytes.load(Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(200));
            if self.bytes.load(Ordering::Relaxed) == before || since.elapsed() > SETTLE_LIMIT {
                break;
            }
        }
        let Some((status, cpu_s, rss_kib, killed)) = self.reap() else {
            return Err("bpftrace could not be reaped".into());
        };
        let out = self.output();
        if !status.success() && !killed {
            return Err(self.explain("did not stop cleanly", Some(status), &out));
        }
        Ok(Observed {
            lines: out.lines,
            bytes: out.bytes,
            lost: out.lost,
            counted: out.counted,
            cpu_s,
            rss_kib,
            killed,
        })
    }
}

impl Drop for Running {
    /// On an error or Ctrl-C during the measurement: bpftrace detaches and is reaped.
    fn drop(&mut self) {
        self.reap();
        self.output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    /// Hands out `data` a few bytes at a time, so that lines straddle reads.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(self.data.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn output_is_counted_after_the_marker_only() {
        let text = format!(
            "Attaching 3 probes...\n{ATTACHED}\nffff8881 12 curl 127.0.0.1 0 127.0.0.1 80 7 -> 2 0\n\
             ffff8881 12 curl 127.0.0.1 4000 127.0.0.1 80 2 -> 1 0\nLost 17 events\n\n\n\
             @[4, 5]: 10\n@[1, 7]: 3"
        );
        for step in [1, 7, 1 << 16] {
            let (tx, rx) = mpsc::channel();
            let bytes = AtomicU64::new(0);
            let o = drain(
                Trickle {
                    data: text.as_bytes(),
                    step,
                },
                tx,
                &bytes,
            );
            assert_eq!(bytes.load(Ordering::Relaxed), text.len() as u64);
            assert!(rx.try_recv().is_ok(), "marker seen (step {step})");
            assert_eq!((o.lines, o.lost, o.counted), (2, 17, 13), "step {step}");
            assert_eq!(o.bytes, text.len() as u64);
            assert_eq!(o.head, "Attaching 3 probes...\n");
        }
    }

    /// Both scripts attach on this kernel and see state changes of loopback connections made
    /// right after `start` returns (as root with bpftrace; `LOADPROBE_REQUIRE_BPF=1` makes a
    /// missing one a failure).
    #[test]
    fn scripts_see_connections_made_once_attached() {
        let usable = crate::is_root() && Path::new("/usr/bin/bpftrace").exists();
        if !usable {
            assert!(
                std::env::var_os("LOADPROBE_REQUIRE_BPF").is_none(),
                "needs root and bpftrace"
            );
            eprintln!("skipped: needs root and bpftrace");
            return;
        }
        let dir = crate::bench::TempDir::new().unwrap();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = 20;
        for tool in TOOLS {
            let running = start(tool, dir.path(), &format!("{tool:?}")).unwrap();
            for _ in 0..connections {
                let client = TcpStream::connect(addr).unwrap();
                let (server, _) = listener.accept().unwrap();
                drop(client);
                drop(server);
            }
            let o = running.stop().unwrap();
            // Each connection: the client's SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2 and
            // CLOSE, the server's SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK and CLOSE (other
            // traffic on the machine adds to it). Without the settling in `stop`, the print
            // script's last lines are lost.
            let seen = match tool {
                Tool::BpftracePrint => o.lines,
                _ => o.counted,
            };
            // Other traffic on a busy machine can make bpftrace lose events.
            assert!(
                seen + o.lost >= 10 * connections,
                "{}: {seen} state changes for {connections} connections: {o:?}",
                tool.label()
            );
        }
    }
}
