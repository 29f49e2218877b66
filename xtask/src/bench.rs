//! `cargo xtask bench`: loadprobe's throughput against its peers on this machine, with the same
//! target, concurrency and duration for everyone.
//!
//! The target is nginx with one worker on 127.0.0.1 (its own configuration in a temporary
//! directory; the system's nginx configuration is never read or touched). The contenders:
//! loadprobe with the probe attached and with `--no-probe`, `wrk`, `oha` and the project's
//! reference loop (`bench-ref`: a minimal epoll loop, the kernel's practical limit here). Each
//! measurement is repeated, contenders alternating (reversed order on odd repetitions) so that
//! drift on a shared machine hits all of them alike; medians are compared. Then peak RSS of
//! loadprobe over a 100k and a 1M connection run.
//!
//! With `--floor`, loadprobe also runs at the probe's two cost floors (`run --probe-floor`):
//! programs attached that return at once, and programs that read and filter each socket but
//! send nothing. No tracepoint probe can cost less than those, so they say which targets a
//! probe can meet at all on this machine.
//!
//! With `--floor`, server-close also gets the tools a person attaches instead of the probe
//! (see [`bpftrace`]): a bpftrace script printing one line per TCP state change, as BCC's
//! tcpstates does, and one counting transitions in a map, each attached while loadprobe
//! `--no-probe` drives the load.
//!
//! With `--tls`, the same over HTTPS instead (see [`tls`]): nginx speaks TLS 1.3, and loadprobe
//! runs with resumption off and on, each peer compared with the loadprobe row that does the same
//! kind of handshake as it does (measured first, from nginx's `$ssl_session_reused`).
//!
//! nginx is stopped at the end, on error and on Ctrl-C (SIGINT/SIGTERM) too.

mod bpftrace;
mod tls;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Repetitions of each measurement (medians are compared).
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Concurrent connections for every contender (loadprobe --users, wrk/oha -c, the reference
    /// loop's connections).
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// Spread loadprobe's and the reference loop's connections over these local addresses
    /// (e.g. 127.0.0.2-127.0.0.9); wrk and oha cannot, so they keep one source address.
    #[arg(long, value_name = "SPEC")]
    source_ips: Option<String>,
    /// Only these modes (comma-separated: client-close, server-close, keep-alive).
    #[arg(long, value_delimiter = ',', value_parser = ["client-close", "server-close", "keep-alive"])]
    modes: Vec<String>,
    /// Skip the peak-RSS runs (100k and 1M connections).
    #[arg(long)]
    no_rss: bool,
    /// Also measure the probe's cost floors: loadprobe with the probe's programs attached but
    /// returning at once, and reading and filtering each socket but sending nothing. What any
    /// tracepoint probe pays before its own work (`loadprobe run --probe-floor`). In
    /// server-close (plain HTTP) also two bpftrace scripts on `sock:inet_sock_set_state`, one
    /// printing each state change and one counting them, each attached while loadprobe
    /// `--no-probe` drives the load.
    #[arg(long)]
    floor: bool,
    /// HTTPS rows instead of plain HTTP: nginx speaks TLS 1.3 with an ECDSA P-256 certificate
    /// made for the run; loadprobe with `--tls-resume off` and `on`; wrk and oha, each compared
    /// with the loadprobe row doing the kind of handshake it does (calibrated first). No
    /// reference loop (it has no TLS).
    #[arg(long)]
    tls: bool,
}

const MODES: [&str; 3] = ["client-close", "server-close", "keep-alive"];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Tool {
    Probe,
    NoProbe,
    FloorAttached,
    FloorFiltered,
    /// loadprobe, probe attached, `--tls-resume on` (the plain rows are `--tls-resume off`).
    ProbeResume,
    /// loadprobe, `--no-probe`, `--tls-resume on`.
    NoProbeResume,
    /// loadprobe `--no-probe` with a bpftrace script printing one line per TCP state change
    /// attached (BCC's tcpstates as bpftrace).
    BpftracePrint,
    /// loadprobe `--no-probe` with a bpftrace script counting TCP state changes in a map.
    BpftraceCount,
    Wrk,
    Oha,
    Reference,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::Probe => "loadprobe (probe)",
            Tool::NoProbe => "loadprobe (--no-probe)",
            Tool::FloorAttached => "loadprobe (floor: attached)",
            Tool::FloorFiltered => "loadprobe (floor: filtered)",
            Tool::ProbeResume => "loadprobe (probe, resume on)",
            Tool::NoProbeResume => "loadprobe (--no-probe, resume on)",
            Tool::BpftracePrint => "bpftrace (print per event)",
            Tool::BpftraceCount => "bpftrace (count in map)",
            Tool::Wrk => "wrk",
            Tool::Oha => "oha",
            Tool::Reference => "reference loop",
        }
    }

    /// The label in a bench over TLS (`tls`) or not: over TLS loadprobe's plain rows run with
    /// `--tls-resume off`, and say so.
    fn label_in(self, tls: bool) -> String {
        match self {
            Tool::Probe | Tool::NoProbe if tls => self.label().replace(')', ", resume off)"),
            _ => self.label().to_string(),
        }
    }

    /// The probe's cost floor this runs at, if it is one.
    fn floor(self) -> Option<&'static str> {
        match self {
            Tool::FloorAttached => Some("attached"),
            Tool::FloorFiltered => Some("filtered"),
            _ => None,
        }
    }

    fn is_loadprobe(self) -> bool {
        !matches!(self, Tool::Wrk | Tool::Oha | Tool::Reference)
    }

    fn probe_attached(self) -> bool {
        matches!(self, Tool::Probe | Tool::ProbeResume)
    }

    /// loadprobe's `--tls-resume` in an https run.
    fn resume(self) -> bool {
        matches!(self, Tool::ProbeResume | Tool::NoProbeResume)
    }

    /// Who runs in `mode`: wrk has no client-close; oha's `--disable-keepalive` sends
    /// `Connection: close`, so the server closes: server-close. Over TLS loadprobe runs with
    /// resumption off and on, and the reference loop (plain TCP) not at all. The bpftrace
    /// peers run beside the floors in plain server-close, where the probe's cost is.
    fn in_mode(mode: &str, oha: bool, floor: bool, tls: bool) -> Vec<Tool> {
        let mut tools = vec![Tool::Probe, Tool::NoProbe];
        if tls {
            tools.extend([Tool::ProbeResume, Tool::NoProbeResume]);
        }
        if floor {
            tools.extend([Tool::FloorAttached, Tool::FloorFiltered]);
            if mode == "server-close" && !tls {
                tools.extend(bpftrace::TOOLS);
            }
        }
        if mode != "client-close" {
            tools.push(Tool::Wrk);
            if oha {
                tools.push(Tool::Oha);
            }
        }
        if !tls {
            tools.push(Tool::Reference);
        }
        tools
    }
}

/// One measurement.
#[derive(Clone, Debug)]
struct Sample {
    /// Connections per second (close modes) or requests per second (keep-alive).
    value: f64,
    errors: u64,
    rss_kib: u64,
    /// Requests (connections in the close modes) made in the measured window.
    requests: f64,
    /// The contender's CPU time (user + system, start-up included) per request, µs.
    cpu_us_per_req: f64,
    /// nginx's worker CPU over the measured window, in cores (1.0: saturated).
    nginx_cores: Option<f64>,
    /// TLS handshakes made (https runs): loadprobe's record counts them; a peer makes one per
    /// request in the close modes, and an unknown number (about one per connection) in
    /// keep-alive.
    handshakes: Option<f64>,
    /// Of those, resumed ones (loadprobe's record; a peer's share is its calibration's).
    resumed: Option<f64>,
    /// The contender's CPU time per handshake, µs, in the close modes of an https run.
    cpu_us_per_handshake: Option<f64>,
    /// What bpftrace did beside loadprobe, for the bpftrace peers (the columns above are
    /// loadprobe's).
    observed: Option<bpftrace::Observed>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub(crate) fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub(crate) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub fn bench(root: &Path, args: BenchArgs) -> Result<ExitCode> {
    if args.duration == 0 || args.repeat == 0 || args.concurrency == 0 {
        bail!("--duration, --repeat and --concurrency must be at least 1");
    }
    install_signal_handlers();
    // What the release build and the probe need (setup's pieces, without the test-only apt
    // packages: nginx and wrk come from `ensure_packages`, with one apt-get update at most).
    ensure_packages(args.floor)?;
    super::ensure_rust_src()?;
    super::ensure_bpf_linker()?;
    let oha = ensure_oha();
    let (loadprobe, reference) = build(root)?;
    check_interrupted()?;

    let tmp = TempDir::new()?;
    let port = free_port()?;
    let tls = args
        .tls
        .then(|| tls::Setup::new(tmp.path(), free_port()?))
        .transpose()?;
    let nginx = Nginx::start(tmp.path(), port, args.concurrency, tls.as_ref())?;
    let env = Env::probe(&nginx, oha.as_ref().ok(), tls.as_ref());
    println!("bench: {}", env.headline(&args));

    let ctx = Ctx {
        args: &args,
        dir: tmp.path(),
        port,
        loadprobe: &loadprobe,
        reference: &reference,
        oha: oha.as_ref().ok(),
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        nginx_worker: nginx.worker,
        tls: tls.as_ref(),
    };
    let calibration = tls.as_ref().map(|t| ctx.calibrate(t)).transpose()?;
    let modes: Vec<&str> = MODES
        .into_iter()
        .filter(|m| args.modes.is_empty() || args.modes.iter().any(|a| a == m))
        .collect();
    let mut samples: BTreeMap<(&str, Tool), Vec<Sample>> = BTreeMap::new();
    // A bpftrace peer that could not run, and why (it is not tried again).
    let mut not_run: BTreeMap<Tool, String> = BTreeMap::new();
    for rep in 0..args.repeat {
        for &mode in &modes {
            let mut tools = Tool::in_mode(mode, ctx.oha.is_some(), args.floor, args.tls);
            tools.retain(|t| !not_run.contains_key(t));
            if rep % 2 == 1 {
                tools.reverse();
            }
            // The longest label: "loadprobe (--no-probe, resume off)" over TLS.
            let width = if args.tls { 34 } else { 27 };
            for tool in tools {
                let s = if bpftrace::script(tool).is_some() {
                    match ctx.measure_beside_bpftrace(mode, tool, rep)? {
                        Ok(s) => s,
                        Err(why) => {
                            println!("bench: {}: not run: {why}", tool.label());
                            not_run.insert(tool, why);
                            continue;
                        }
                    }
                } else {
                    ctx.measure(mode, tool, rep)?
                };
                println!(
                    "bench: [{}/{}] {mode:<12} {:<width$} {:>9.0} {}/s{}{}",
                    rep + 1,
                    args.repeat,
                    tool.label_in(args.tls),
                    s.value,
                    unit(mode),
                    if s.errors > 0 {
                        format!("  ({} errors)", s.errors)
                    } else {
                        String::new()
                    },
                    s.observed.as_ref().map_or(String::new(), |o| format!(
                        "  (bpftrace: {:.1} lines, {:.1} counted per connection, {} lost)",
                        o.lines as f64 / s.requests,
                        o.counted as f64 / s.requests,
                        o.lost
                    )),
                );
                samples.entry((mode, tool)).or_default().push(s);
                // Let the last run's closes and FIN handshakes settle.
                std::thread::sleep(Duration::from_millis(500));
                check_interrupted()?;
            }
        }
    }

    let rss = if args.no_rss {
        None
    } else {
        // The mode with the most connections per second, for the most connections per second
        // of wall time.
        let mode = ["client-close", "server-close"]
            .into_iter()
            .filter_map(|m| Some((m, median(samples.get(&(m, Tool::Probe))?)?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or("server-close", |(m, _)| m);
        Some(ctx.rss_runs(mode)?)
    };

    drop(nginx);
    let table = render(
        &env,
        &args,
        &samples,
        &not_run,
        oha.as_ref().err(),
        rss.as_ref(),
        calibration.as_ref(),
    );
    println!();
    print!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// What the bench needs from Debian, installed when missing (one `apt-get update` at most):
/// bpftrace for the peers of a `--floor` bench.
fn ensure_packages(floor: bool) -> Result<()> {
    let mut wanted = vec![("nginx", "/usr/sbin/nginx"), ("wrk", "/usr/bin/wrk")];
    if floor {
        wanted.push(("bpftrace", "/usr/bin/bpftrace"));
    }
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(_, bin)| !Path::new(bin).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = wanted.iter().map(|(pkg, _)| *pkg).collect();
        println!("bench: {}: installed", names.join(", "));
        return Ok(());
    }
    if !super::is_root() {
        bail!(
            "{} missing and not root: install with apt-get",
            missing.join(", ")
        );
    }
    println!(
        "bench: {}: missing, running apt-get update",
        missing.join(", ")
    );
    super::status(Command::new("apt-get").args(["update", "-q"]))?;
    super::status(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// oha from crates.io (`cargo install oha --locked`) unless present; `Err(reason)` when it
/// cannot be had, and the bench goes on without it.
fn ensure_oha() -> Result<PathBuf, String> {
    let find = || {
        let cargo_bin = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
            .map(|h| h.join("bin/oha"));
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join("oha"))
            .chain(cargo_bin)
            .find(|p| {
                Command::new(p)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
    };
    if let Some(p) = find() {
        println!("bench: oha: {}", p.display());
        return Ok(p);
    }
    println!("bench: oha: missing, running cargo install oha --locked");
    let st = Command::new("cargo")
        .args(["install", "oha", "--locked"])
        .status();
    match (st, find()) {
        (_, Some(p)) => Ok(p),
        (Ok(st), None) => {
            let why = format!("`cargo install oha --locked` failed ({st}); oha skipped");
            println!("bench: oha: {why}");
            Err(why)
        }
        (Err(e), None) => {
            let why = format!("cannot run cargo install oha: {e}; oha skipped");
            println!("bench: oha: {why}");
            Err(why)
        }
    }
}

/// Release builds of loadprobe and the reference loop, in the normal target directory.
fn build(root: &Path) -> Result<(PathBuf, PathBuf)> {
    super::status(Command::new("cargo").args([
        "build",
        "--release",
        "-p",
        "loadprobe",
        "-p",
        "bench-ref",
    ]))?;
    let target = super::target_dir(root)?;
    Ok((
        target.join("release/loadprobe"),
        target.join("release/bench-ref"),
    ))
}

pub(crate) fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A temporary directory, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Result<TempDir> {
        let mut template = b"/tmp/loadprobe-bench.XXXXXX\0".to_vec();
        // SAFETY: a NUL-terminated, writable template.
        let p = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
        if p.is_null() {
            bail!("mkdtemp: {}", std::io::Error::last_os_error());
        }
        template.pop();
        Ok(TempDir(PathBuf::from(String::from_utf8(template)?)))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// nginx, one worker, on 127.0.0.1:`port`, stopped (with its worker) when dropped.
struct Nginx {
    child: Option<Child>,
    version: String,
    /// The one worker process, for its CPU time.
    worker: Option<u32>,
}

impl Nginx {
    /// With `tls`, the server speaks TLS, beside a second one logging each connection's
    /// handshake for the calibration.
    fn start(dir: &Path, port: u16, concurrency: u32, tls: Option<&tls::Setup>) -> Result<Nginx> {
        let d = dir.display();
        let location = "location / {
            default_type text/plain;
            return 200 \"loadprobe bench: a small static response\\n\";
        }";
        let worker_connections = (4 * concurrency).max(4096);
        let conf = format!(
            "# loadprobe bench: a private nginx (never the system's configuration)
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {rlimit};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections {worker_connections};
    use epoll;
}}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 75s;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{tls_http}    server {{
        listen 127.0.0.1:{port}{ssl} backlog=4096;
        {location}
    }}
}}
",
            rlimit = 2 * worker_connections + 64,
            ssl = if tls.is_some() { " ssl" } else { "" },
            tls_http = tls.map_or(String::new(), |t| t.nginx_http(location)),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let version = Command::new("nginx")
            .arg("-v")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .unwrap_or_default();
        let version = version
            .strip_prefix("nginx version: ")
            .unwrap_or(&version)
            .to_string();
        let log = std::fs::File::create(dir.join("nginx.stderr"))?;
        let mut command = Command::new("nginx");
        // A session of its own, as a service has: a terminal's Ctrl-C reaches us only (we stop
        // nginx in order), and the scheduler's autogroups (`kernel.sched_autogroup_enabled`)
        // give nginx its own share of the CPUs instead of one thread's share among the
        // contender's threads. With nginx in the bench's session, server-close measured 56k
        // conn/s for loadprobe without the probe and 59k for wrk; in a session of its own,
        // 66k and 62k.
        // SAFETY: setsid is async-signal-safe and touches nothing of this process's memory.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start nginx")?;
        let mut nginx = Nginx {
            child: Some(child),
            version,
            worker: None,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = nginx
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                nginx.child = None;
                let log = std::fs::read_to_string(dir.join("nginx.stderr")).unwrap_or_default();
                let err = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                bail!("nginx exited at start ({st}): {}{}", log.trim(), err.trim());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on {addr} within 10 s");
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        let master = nginx.child.as_ref().map_or(0, Child::id);
        for _ in 0..100 {
            nginx.worker = children_of(master).into_iter().next();
            if nginx.worker.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!(
            "bench: {} (1 worker) on {addr}, config {}",
            nginx.version,
            conf_path.display()
        );
        Ok(nginx)
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: signalling our own child (fast shutdown: master and worker exit).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                // The worker exits with its master; make sure of it.
                // SAFETY: the process group created for nginx.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                println!("bench: nginx stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: the process group created for nginx.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = child.wait();
        println!("bench: nginx killed");
    }
}

/// Child processes of `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return s
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|st| {
                st.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = st.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks / if hz > 0 { hz as f64 } else { 100.0 })
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The machine and the tools, for the table's heading.
struct Env {
    date: String,
    cpus: usize,
    kernel: String,
    nginx: String,
    wrk: String,
    oha: Option<String>,
    sysctls: String,
    /// What the HTTPS rows had in common, for an https bench.
    tls: Option<String>,
}

impl Env {
    fn probe(nginx: &Nginx, oha: Option<&PathBuf>, tls: Option<&tls::Setup>) -> Env {
        let out = |cmd: &mut Command| {
            cmd.output()
                .map(|o| {
                    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                    s.push_str(&String::from_utf8_lossy(&o.stderr));
                    s.trim().to_string()
                })
                .unwrap_or_default()
        };
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|_| "?".into())
        };
        let wrk = out(Command::new("wrk").arg("--version"));
        let wrk = wrk
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string();
        Env {
            date: out(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease"),
            nginx: nginx.version.clone(),
            wrk,
            oha: oha.map(|p| out(Command::new(p).arg("--version"))),
            sysctls: format!(
                "ip_local_port_range {}, tcp_tw_reuse {}, tcp_max_tw_buckets {}",
                read("/proc/sys/net/ipv4/ip_local_port_range"),
                read("/proc/sys/net/ipv4/tcp_tw_reuse"),
                read("/proc/sys/net/ipv4/tcp_max_tw_buckets"),
            ),
            tls: tls.map(|t| t.headline(&out(Command::new("openssl").arg("version")))),
        }
    }

    fn headline(&self, args: &BenchArgs) -> String {
        format!(
            "{}; {} CPUs, Linux {}; {} (1 worker), wrk {}, {}; concurrency {}, {} s x {}; {}; {}",
            self.date,
            self.cpus,
            self.kernel,
            self.nginx,
            self.wrk,
            self.oha.as_deref().unwrap_or("oha: not available"),
            args.concurrency,
            args.duration,
            args.repeat,
            match &args.source_ips {
                Some(s) =>
                    format!("loadprobe and the reference loop from {s}, wrk/oha from 127.0.0.1"),
                None => "every contender from one source address (127.0.0.1)".into(),
            },
            self.sysctls
        ) + &self
            .tls
            .as_ref()
            .map_or(String::new(), |t| format!("; {t}"))
    }
}

struct Ctx<'a> {
    args: &'a BenchArgs,
    dir: &'a Path,
    port: u16,
    loadprobe: &'a Path,
    reference: &'a Path,
    oha: Option<&'a PathBuf>,
    threads: usize,
    nginx_worker: Option<u32>,
    tls: Option<&'a tls::Setup>,
}

/// What a finished child left.
struct Finished {
    status: ExitStatus,
    rss_kib: u64,
    /// User + system CPU seconds.
    cpu_s: f64,
    stdout: String,
    stderr: String,
}

impl Finished {
    /// Itself if the child exited with success; else an error naming `what`, with the end of
    /// its stderr.
    fn succeeded(self, what: &str) -> Result<Finished> {
        if !self.status.success() {
            bail!("{what} failed: {}\n{}", self.status, tail(&self.stderr, 20));
        }
        Ok(self)
    }
}

impl Ctx<'_> {
    fn url(&self, port: u16) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{port}/")
    }

    /// loadprobe's `--target`, and over TLS the same trust as the peers: no certificate
    /// verification (wrk never verifies; oha gets `--insecure`).
    fn target_args(&self, cmd: &mut Command, port: u16) {
        cmd.args(["--target", &self.url(port)]);
        if self.tls.is_some() {
            cmd.arg("--insecure");
        }
    }

    /// `tool` in `mode` against nginx on `port` for `d` seconds; loadprobe writes its record
    /// to `record`.
    fn command(&self, mode: &str, tool: Tool, port: u16, d: u64, record: &Path) -> Result<Command> {
        let c = self.args.concurrency.to_string();
        let t = self.threads.to_string();
        let mut cmd;
        match tool {
            Tool::Wrk => {
                cmd = Command::new("wrk");
                cmd.args(["-t", &t, "-c", &c, "-d", &format!("{d}s")]);
                if mode == "server-close" {
                    cmd.args(["-H", "Connection: close"]);
                }
                cmd.arg(self.url(port));
            }
            Tool::Oha => {
                cmd = Command::new(self.oha.context("no oha")?);
                cmd.args(["--no-tui", "--output-format", "json", "-c", &c])
                    .args(["-z", &format!("{d}s")]);
                if mode != "keep-alive" {
                    cmd.arg("--disable-keepalive");
                }
                if self.tls.is_some() {
                    cmd.arg("--insecure");
                }
                cmd.arg(self.url(port));
            }
            Tool::Reference => {
                cmd = Command::new(self.reference);
                cmd.args(["--mode", mode, "--connections", &c, "--threads", &t])
                    .args(["--duration", &d.to_string()])
                    .args(["--target", &format!("127.0.0.1:{port}")]);
                if let Some(s) = &self.args.source_ips {
                    cmd.args(["--source-ips", s]);
                }
            }
            // Every other contender is loadprobe in one of its settings.
            _ => {
                cmd = Command::new(self.loadprobe);
                // loadprobe's own thread count: what its users get (see `--threads`).
                cmd.args(["run", "--mode", mode, "--users", &c])
                    .arg("--duration")
                    .arg(format!("{d}s"))
                    .arg("-o")
                    .arg(record);
                self.target_args(&mut cmd, port);
                if self.tls.is_some() {
                    let resume = if tool.resume() { "on" } else { "off" };
                    cmd.args(["--tls-resume", resume]);
                }
                if !tool.probe_attached() && tool.floor().is_none() {
                    cmd.arg("--no-probe");
                }
                if let Some(floor) = tool.floor() {
                    cmd.args(["--probe-floor", floor]);
                }
                if let Some(s) = &self.args.source_ips {
                    cmd.args(["--source-ips", s]);
                }
            }
        }
        Ok(cmd)
    }

    /// `tool`, a bpftrace peer: its script attached, then loadprobe `--no-probe` measured as
    /// any contender, then the script stopped. `Ok(Err(why))` when bpftrace cannot run here.
    fn measure_beside_bpftrace(
        &self,
        mode: &str,
        tool: Tool,
        rep: u32,
    ) -> Result<Result<Sample, String>> {
        let name = format!("{mode}-{tool:?}-{rep}-bpftrace");
        let running = match bpftrace::start(tool, self.dir, &name) {
            Ok(r) => r,
            Err(why) => {
                check_interrupted()?;
                return Ok(Err(why));
            }
        };
        // On an error loadprobe's, dropping `running` stops bpftrace.
        let mut s = self.measure(mode, tool, rep)?;
        Ok(running.stop().map(|o| {
            s.observed = Some(o);
            s
        }))
    }

    fn measure(&self, mode: &str, tool: Tool, rep: u32) -> Result<Sample> {
        let d = self.args.duration;
        let name = format!("{mode}-{tool:?}-{rep}");
        let record = self.dir.join(format!("{name}.json"));
        let mut cmd = self.command(mode, tool, self.port, d, &record)?;
        let nginx_before = self.nginx_worker.and_then(cpu_seconds);
        let f = run_child(&mut cmd, self.dir, &name, Duration::from_secs(d + 60))?;
        let nginx_cpu = self
            .nginx_worker
            .and_then(cpu_seconds)
            .zip(nginx_before)
            .map(|(after, before)| after - before);
        let f = f.succeeded(&format!("{} ({mode})", tool.label()))?;
        let per_conn = mode != "keep-alive";
        // (rate, errors, measured seconds, TLS handshakes in loadprobe's record)
        let (value, errors, secs, handshakes) = match tool {
            Tool::Wrk => {
                let rps = f
                    .stdout
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
                    .context("no Requests/sec in wrk's output")?
                    .trim()
                    .parse::<f64>()?;
                // "Socket errors: connect 0, read 0, write 0, timeout 0" and "Non-2xx or 3xx
                // responses: N".
                let mut errors = 0;
                for l in f.stdout.lines().map(str::trim) {
                    if let Some(rest) = l.strip_prefix("Socket errors:") {
                        errors += rest
                            .split(',')
                            .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                            .sum::<u64>();
                    } else if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
                        errors += rest.trim().parse::<u64>().unwrap_or(0);
                    }
                }
                (rps, errors, d as f64, None)
            }
            Tool::Oha => {
                let v: Value = serde_json::from_str(&f.stdout).context("oha's JSON output")?;
                // Requests still in flight at the deadline are not failures.
                let errors = v["errorDistribution"].as_object().map_or(0, |m| {
                    m.iter()
                        .filter(|(k, _)| !k.contains("deadline"))
                        .filter_map(|(_, n)| n.as_u64())
                        .sum()
                });
                let secs = v["summary"]["total"].as_f64().unwrap_or(d as f64);
                (num(&v["summary"]["requestsPerSec"])?, errors, secs, None)
            }
            Tool::Reference => {
                let v: Value = serde_json::from_str(&f.stdout).context("bench-ref's output")?;
                let errors = v["errors"]
                    .as_object()
                    .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
                // Completions: each one is a whole connection in the close modes.
                (num(&v["rps"])?, errors, num(&v["duration_s"])?, None)
            }
            // Every other contender is loadprobe in one of its settings.
            _ => {
                let v: Value = serde_json::from_slice(&std::fs::read(&record)?)
                    .with_context(|| format!("reading {}", record.display()))?;
                let attached = v["probe"]["attached"].as_bool() == Some(true);
                // A floor has no results, so its record says the probe is off, and why.
                let at_floor = v["probe"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("cost floor"));
                if tool.probe_attached() != attached || tool.floor().is_some() != at_floor {
                    bail!(
                        "{} ({mode}): probe.attached is {attached}, reason {}: {}",
                        tool.label(),
                        v["probe"]["reason"],
                        tail(&f.stderr, 5)
                    );
                }
                let key = if per_conn { "connections_per_s" } else { "rps" };
                let errors = v["requests"]["errors"]
                    .as_object()
                    .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
                let resumed = v["tls"]["resumed_handshakes"].as_f64();
                let handshakes = v["tls"]["full_handshakes"]
                    .as_f64()
                    .zip(resumed)
                    .map(|(full, resumed)| (full + resumed, resumed));
                let (rate, secs) = (num(&v["throughput"][key])?, num(&v["duration_s"])?);
                (rate, errors, secs, handshakes)
            }
        };
        let requests = (value * secs).max(1.0);
        // A peer makes a connection, so a handshake, per request in the close modes.
        let (handshakes, resumed) = match handshakes {
            Some((total, resumed)) => (Some(total), Some(resumed)),
            None => ((self.tls.is_some() && per_conn).then_some(requests), None),
        };
        Ok(Sample {
            value,
            errors,
            rss_kib: f.rss_kib,
            requests,
            cpu_us_per_req: f.cpu_s / requests * 1e6,
            // The window is the contender's measured one: nginx idles during start-up.
            nginx_cores: nginx_cpu.map(|c| (c / secs.max(1e-3)).min(1.0)),
            handshakes,
            resumed,
            // In keep-alive a handful of handshakes open the connections: the CPU is the
            // requests'.
            cpu_us_per_handshake: handshakes
                .filter(|&h| per_conn && h >= 1.0)
                .map(|h| f.cpu_s / h * 1e6),
            observed: None,
        })
    }

    /// loadprobe (probe attached) for 100k and then 1M connections: peak RSS of each.
    fn rss_runs(&self, mode: &str) -> Result<Rss> {
        let mut runs = Vec::new();
        for n in [100_000u64, 1_000_000] {
            let name = format!("rss-{n}");
            let record = self.dir.join(format!("{name}.json"));
            let mut cmd = Command::new(self.loadprobe);
            cmd.args(["run", "--mode", mode])
                .args(["--users", &self.args.concurrency.to_string()])
                .args(["--requests", &n.to_string()])
                .arg("-o")
                .arg(&record);
            self.target_args(&mut cmd, self.port);
            if let Some(s) = &self.args.source_ips {
                cmd.args(["--source-ips", s]);
            }
            println!("bench: peak RSS: loadprobe (probe) {mode}, {n} connections");
            let started = Instant::now();
            let f = run_child(&mut cmd, self.dir, &name, Duration::from_secs(1800))?
                .succeeded(&format!("loadprobe ({name})"))?;
            let v: Value = serde_json::from_slice(&std::fs::read(&record)?)?;
            let attached = v["probe"]["attached"].as_bool() == Some(true);
            let conns = v["connections"]["opened"].as_u64().unwrap_or(0);
            println!(
                "bench: peak RSS: {n} requests, {conns} connections, {:.1} MiB, {:.1} s{}",
                f.rss_kib as f64 / 1024.0,
                started.elapsed().as_secs_f64(),
                if attached {
                    ""
                } else {
                    " (probe NOT attached)"
                }
            );
            runs.push(RssRun {
                connections: conns,
                peak_kib: f.rss_kib,
                attached,
            });
            std::thread::sleep(Duration::from_millis(500));
            check_interrupted()?;
        }
        Ok(Rss {
            mode: mode.to_string(),
            runs,
        })
    }
}

/// The 100k and 1M connection runs.
struct Rss {
    mode: String,
    runs: Vec<RssRun>,
}

struct RssRun {
    connections: u64,
    /// Peak RSS (the kernel's high-water mark), KiB.
    peak_kib: u64,
    attached: bool,
}

fn num(v: &Value) -> Result<f64> {
    v.as_f64()
        .with_context(|| format!("expected a number, got {v}"))
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A child that ended, reaped with wait4: its status, CPU seconds and peak RSS (KiB).
pub(crate) struct Reaped {
    pub status: ExitStatus,
    pub cpu_s: f64,
    pub rss_kib: u64,
}

/// Reaps the child `pid` if it has ended (without waiting); its `Child` must then not be waited
/// for again.
pub(crate) fn try_reap(pid: libc::pid_t) -> Result<Option<Reaped>> {
    let mut st: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid out-struct for wait4.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals; WNOHANG only asks, for our own child.
    let r = unsafe { libc::wait4(pid, &mut st, libc::WNOHANG, &mut ru) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    if r != pid {
        return Ok(None);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Some(Reaped {
        status: ExitStatus::from_raw(st),
        cpu_s: secs(ru.ru_utime) + secs(ru.ru_stime),
        // ru_maxrss is in KiB on Linux.
        rss_kib: ru.ru_maxrss as u64,
    }))
}

/// Runs `cmd` with stdout/stderr in files under `dir`, reaping it with wait4 for its peak RSS.
/// On SIGINT/SIGTERM (or after `limit`) the child gets SIGINT, then SIGKILL.
fn run_child(cmd: &mut Command, dir: &Path, name: &str, limit: Duration) -> Result<Finished> {
    let out_path = dir.join(format!("{name}.stdout"));
    let err_path = dir.join(format!("{name}.stderr"));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    let mut signalled: Option<Instant> = None;
    let Reaped {
        status,
        cpu_s,
        rss_kib,
    } = loop {
        if let Some(reaped) = try_reap(pid)? {
            break reaped;
        }
        let late = started.elapsed() > limit;
        if INTERRUPTED.load(Ordering::SeqCst) || late {
            match signalled {
                None => {
                    // SAFETY: signalling our own child.
                    unsafe { libc::kill(pid, libc::SIGINT) };
                    signalled = Some(Instant::now());
                }
                Some(t) if t.elapsed() > Duration::from_secs(5) => {
                    // SAFETY: signalling our own child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Reaped by wait4: the Child must not be waited for again.
    drop(child);
    check_interrupted()?;
    if signalled.is_some() {
        bail!("{name}: still running after {} s, stopped", limit.as_secs());
    }
    Ok(Finished {
        status,
        rss_kib,
        cpu_s,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    })
}

fn unit(mode: &str) -> &'static str {
    if mode == "keep-alive" { "req" } else { "conn" }
}

fn median(samples: &[Sample]) -> Option<f64> {
    median_of(samples.iter().map(|s| s.value))
}

fn median_of(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// 12345.6 → "12,346".
fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A ratio row: name, value, target, and whether a value meets the target.
type Row = (String, Option<f64>, &'static str, fn(f64) -> bool);

/// The results as Markdown tables (pasted into docs/benchmarks.md as they are).
fn render(
    env: &Env,
    args: &BenchArgs,
    samples: &BTreeMap<(&str, Tool), Vec<Sample>>,
    not_run: &BTreeMap<Tool, String>,
    oha_missing: Option<&String>,
    rss: Option<&Rss>,
    calibration: Option<&tls::Calibration>,
) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{}\n", env.headline(args));
    // An https bench adds what each contender's handshakes were, and their CPU.
    let (tls_head, tls_align) = match calibration {
        Some(_) => (
            " handshakes (resumed) | client CPU / handshake |",
            "---:|---:|",
        ),
        None => ("", ""),
    };
    let _ = writeln!(
        t,
        "| mode | contender | median | runs | errors | client CPU / req |{tls_head} nginx worker CPU | peak RSS |\n\
         |---|---|---:|---|---:|---:|{tls_align}---:|---:|"
    );
    for mode in MODES {
        for tool in [
            Tool::Probe,
            Tool::NoProbe,
            Tool::ProbeResume,
            Tool::NoProbeResume,
            Tool::FloorAttached,
            Tool::FloorFiltered,
            Tool::BpftracePrint,
            Tool::BpftraceCount,
            Tool::Wrk,
            Tool::Oha,
            Tool::Reference,
        ] {
            let Some(s) = samples.get(&(mode, tool)) else {
                let here = Tool::in_mode(mode, false, args.floor, args.tls).contains(&tool);
                if let Some(why) = not_run.get(&tool).filter(|_| here) {
                    let _ = writeln!(
                        t,
                        "| {mode} | {} | not run: {} | | | | | |",
                        tool.label(),
                        why.replace('|', "/")
                    );
                }
                continue;
            };
            let runs: Vec<String> = s.iter().map(|s| thousands(s.value)).collect();
            let rss = s.iter().map(|s| s.rss_kib).max().unwrap_or(0);
            let cpu = median_of(s.iter().map(|s| s.cpu_us_per_req));
            let nginx = median_of(s.iter().filter_map(|s| s.nginx_cores));
            let tls_cells = calibration.map_or(String::new(), |c| c.cells(tool, s));
            let _ = writeln!(
                t,
                "| {mode} | {} | {} {}/s | {} | {} | {} |{tls_cells} {} | {:.1} MiB |",
                tool.label_in(calibration.is_some()),
                thousands(median(s).unwrap_or(0.0)),
                unit(mode),
                runs.join(" / "),
                s.iter().map(|s| s.errors).sum::<u64>(),
                cpu.map_or("?".into(), |c| format!("{c:.1} µs")),
                nginx.map_or("?".into(), |c| format!("{:.0} %", c * 100.0)),
                rss as f64 / 1024.0
            );
        }
    }
    if let Some(why) = oha_missing {
        let _ = writeln!(t, "\noha: {why}");
    }

    let m = |mode: &str, tool: Tool| samples.get(&(mode, tool)).and_then(|s| median(s));
    let mut rows = match calibration {
        Some(c) => c.targets(&m),
        None => plain_targets(&m),
    };
    if args.floor && calibration.is_none() {
        rows.extend(peer_targets(&m));
    }
    let mut rss_note = String::new();
    if let Some(rss) = rss {
        if let [small, large] = &rss.runs[..] {
            rows.push((
                format!("peak RSS 1M / 100k connections, {}", rss.mode),
                (small.peak_kib > 0).then(|| large.peak_kib as f64 / small.peak_kib as f64),
                "within ±10%",
                |r| (0.9..=1.1).contains(&r),
            ));
            let mib = |k: u64| k as f64 / 1024.0;
            rss_note = format!(
                "\npeak RSS of loadprobe (probe {}), {}: {} connections {:.1} MiB, {} \
                 connections {:.1} MiB\n",
                if small.attached && large.attached {
                    "attached"
                } else {
                    "NOT attached"
                },
                rss.mode,
                thousands(small.connections as f64),
                mib(small.peak_kib),
                thousands(large.connections as f64),
                mib(large.peak_kib),
            );
        }
    }
    let _ = writeln!(
        t,
        "\n| ratio (of medians) | value | target | |\n|---|---:|---|---|"
    );
    for (name, value, target, pass) in &rows {
        let (v, verdict) = match value {
            Some(r) => (format!("{r:.3}"), if pass(*r) { "PASS" } else { "MISS" }),
            None => ("n/a".into(), "n/a"),
        };
        let _ = writeln!(t, "| {name} | {v} | {target} | {verdict} |");
    }
    // The floors, as the ratios the targets above are stated in: a probe cannot do better.
    for mode in MODES {
        for floor in [Tool::FloorAttached, Tool::FloorFiltered] {
            let name = floor.floor().unwrap_or_default();
            let of = |peer: Tool| ratio(m(mode, floor), m(mode, peer));
            for peer in [Tool::NoProbe, Tool::Wrk, Tool::Reference] {
                if let Some(r) = of(peer) {
                    let label = peer.label();
                    let _ = writeln!(t, "| floor {name} / {label}, {mode} | {r:.3} | (floor) | |");
                }
            }
        }
    }
    // The bpftrace peers against no probe and the floors (against the probe: the targets).
    for peer in bpftrace::TOOLS {
        let mode = "server-close";
        for other in [Tool::NoProbe, Tool::FloorAttached, Tool::FloorFiltered] {
            if let Some(r) = ratio(m(mode, peer), m(mode, other)) {
                let (p, o) = (peer.label(), other.label());
                let _ = writeln!(t, "| {p} / {o}, {mode} | {r:.3} | (peer) | |");
            }
        }
    }
    if let Some(c) = calibration {
        t.push_str(&c.note(&m));
    } else {
        for mode in ["server-close", "keep-alive"] {
            if let Some(r) = ratio(m(mode, Tool::Probe), m(mode, Tool::Oha)) {
                let _ = writeln!(t, "| loadprobe (probe) / oha, {mode} | {r:.3} | (none) | |");
            }
        }
    }
    t.push_str(&peers_note(samples, not_run));
    t.push_str(&rss_note);
    t
}

/// The targets against the bpftrace peers (server-close): the probe costs less throughput
/// than printing each state change, and no more than counting them, while it measures closers
/// and every TIME_WAIT lifetime.
fn peer_targets(m: &Median<'_>) -> Vec<Row> {
    let mode = "server-close";
    let name = |peer: Tool| format!("{} / {}, {mode}", Tool::Probe.label(), peer.label());
    vec![
        (
            name(Tool::BpftracePrint),
            ratio(m(mode, Tool::Probe), m(mode, Tool::BpftracePrint)),
            "> 1.0",
            |r| r > 1.0,
        ),
        (
            name(Tool::BpftraceCount),
            ratio(m(mode, Tool::Probe), m(mode, Tool::BpftraceCount)),
            "≥ 1.0",
            |r| r >= 1.0,
        ),
    ]
}

/// What bpftrace itself did in each peer's runs (medians per connection): the table's columns
/// are loadprobe's, this is the rest of the peer's cost. And why a peer stopped running.
fn peers_note(
    samples: &BTreeMap<(&str, Tool), Vec<Sample>>,
    not_run: &BTreeMap<Tool, String>,
) -> String {
    let mut t = String::new();
    for peer in bpftrace::TOOLS {
        let Some(s) = samples.get(&("server-close", peer)) else {
            continue;
        };
        let per_conn = |f: fn(&bpftrace::Observed) -> f64| {
            median_of(
                s.iter()
                    .filter_map(|s| Some(f(s.observed.as_ref()?) / s.requests.max(1.0))),
            )
            .unwrap_or(0.0)
        };
        let lines = per_conn(|o| o.lines as f64);
        let bytes = per_conn(|o| o.bytes as f64);
        let counted = per_conn(|o| o.counted as f64);
        let cpu = per_conn(|o| o.cpu_s * 1e6);
        let lost: u64 = s
            .iter()
            .filter_map(|s| s.observed.as_ref())
            .map(|o| o.lost)
            .sum();
        let rss = s
            .iter()
            .filter_map(|s| s.observed.as_ref())
            .map(|o| o.rss_kib)
            .max()
            .unwrap_or(0);
        let killed = s
            .iter()
            .filter(|s| s.observed.as_ref().is_some_and(|o| o.killed))
            .count();
        if killed > 0 {
            let _ = write!(
                t,
                "\n{}: bpftrace still printing {} s after SIGINT in {killed} of {} runs, killed",
                peer.label(),
                bpftrace::STOP_LIMIT.as_secs(),
                s.len()
            );
        }
        let what = if peer == Tool::BpftracePrint {
            format!("{lines:.2} lines ({bytes:.0} bytes) printed, {lost} events lost in all runs")
        } else {
            format!("{counted:.2} state changes counted")
        };
        let _ = write!(
            t,
            "\n{}, server-close: per connection {what}; bpftrace's own CPU {cpu:.1} µs per \
             connection (compiling and attaching included), peak RSS {:.1} MiB\n",
            peer.label(),
            rss as f64 / 1024.0
        );
        if let Some(why) = not_run.get(&peer) {
            let _ = writeln!(t, "(stopped after {} runs: {why})", s.len());
        }
    }
    t
}

/// `a / b`, when both are known and `b` is not zero.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The median of one contender in one mode, if it ran.
type Median<'a> = dyn Fn(&str, Tool) -> Option<f64> + 'a;

/// The plain-HTTP bench's targets.
fn plain_targets(m: &Median<'_>) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    rows.push((
        "loadprobe (probe) / wrk, server-close".into(),
        ratio(m("server-close", Tool::Probe), m("server-close", Tool::Wrk)),
        "≥ 1.0",
        |r| r >= 1.0,
    ));
    for mode in ["client-close", "server-close"] {
        rows.push((
            format!("loadprobe (probe) / reference loop, {mode}"),
            ratio(m(mode, Tool::Probe), m(mode, Tool::Reference)),
            "≥ 0.95",
            |r| r >= 0.95,
        ));
    }
    rows.push((
        "loadprobe (probe) / wrk, keep-alive".into(),
        ratio(m("keep-alive", Tool::Probe), m("keep-alive", Tool::Wrk)),
        "≥ 0.9",
        |r| r >= 0.9,
    ));
    for mode in MODES {
        rows.push((
            format!("probe on / off, {mode}"),
            ratio(m(mode, Tool::Probe), m(mode, Tool::NoProbe)),
            "≥ 0.97",
            |r| r >= 0.97,
        ));
    }
    rows
}
