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
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
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

/// How long bpftrace may take to detach and exit after SIGINT.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// Where bpftrace looks for tracefs first.
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
/// times a second. The maps it and the print script keep are cleared at exit so that only the
/// counts are printed.
fn marker() -> String {
    format!(
        r#"interval:ms:100
/@attached == 0/
{{
	@attached = 1;
	printf("{ATTACHED}\n");
}}
END
{{
	clear(@attached);
}}
"#
    )
}

/// The script `tool` attaches, if it is a bpftrace peer.
pub(super) fn script(tool: Tool) -> Option<String> {
    let (probe, end) = match tool {
        Tool::BpftracePrint => (PRINT, "END\n{\n\tclear(@last);\n}\n"),
        Tool::BpftraceCount => (COUNT, ""),
        _ => return None,
    };
    Some(format!("{probe}{}{end}", marker()))
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
fn drain(mut out: ChildStdout, attached: mpsc::Sender<()>) -> Output {
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
    let reader = std::thread::spawn(move || drain(out, tx));
    let mut running = Running {
        child: Some(child),
        reader: Some(reader),
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
    /// status, CPU seconds and peak RSS (KiB).
    fn reap(&mut self) -> Option<(ExitStatus, f64, u64)> {
        let child = self.child.take()?;
        let pid = child.id() as libc::pid_t;
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let asked = Instant::now();
        let mut killed = false;
        let reaped = loop {
            let mut st: libc::c_int = 0;
            // SAFETY: an out-struct for wait4 on our own child.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointers; WNOHANG.
            let r = unsafe { libc::wait4(pid, &mut st, libc::WNOHANG, &mut ru) };
            if r == pid {
                let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                let cpu = secs(ru.ru_utime) + secs(ru.ru_stime);
                break Some((ExitStatus::from_raw(st), cpu, ru.ru_maxrss as u64));
            }
            if r < 0 {
                break None;
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
        let Some((status, cpu_s, rss_kib)) = self.reap() else {
            return Err("bpftrace could not be reaped".into());
        };
        let out = self.output();
        if !status.success() {
            return Err(self.explain("did not stop cleanly", Some(status), &out));
        }
        Ok(Observed {
            lines: out.lines,
            bytes: out.bytes,
            lost: out.lost,
            counted: out.counted,
            cpu_s,
            rss_kib,
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
