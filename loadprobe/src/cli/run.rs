//! `loadprobe run`: apply load with the chosen connection-ending mode, then print a summary
//! and (with `--output`) write the run record.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;

use loadprobe::driver::{
    DriverConfig, HttpClient, Live, Mode, Stop, Target, Workload, limits, parse_header,
    parse_source_ips,
};
use loadprobe::probe::{Floor, Netns};
use loadprobe::report::{RunRecord, merge, render_text, write_atomic};
use loadprobe::run::{ProbePlan, RunOnce, run_once};
use loadprobe::server::{Server, ServerConfig};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// How each task ends its connection: client-close (client FIN first: TIME_WAIT on the
    /// client), server-close (Connection: close, server FIN first: TIME_WAIT on the server),
    /// keep-alive (connections reused), reset (SO_LINGER 0: RST, no TIME_WAIT).
    #[arg(long, default_value = "client-close", value_parser = parse_mode)]
    mode: Mode,
    /// Do not attach the eBPF probe: closers are then unknown and TIME_WAIT is sampled from
    /// sock_diag once a second.
    #[arg(long)]
    no_probe: bool,
    /// A measurement aid for `cargo xtask bench --floor`, not for runs: attach the probe but
    /// stop its programs early, at `attached` (they return at once) or `filtered` (they read
    /// and filter each socket, then send nothing). The record has no probe results.
    #[arg(long, value_name = "FLOOR", hide = true, value_parser = parse_floor, conflicts_with = "no_probe")]
    probe_floor: Option<Floor>,
    /// http://HOST[:PORT][/PATH] (IPv4, [IPv6] or a name). Default: an embedded server on
    /// 127.0.0.1 with an ephemeral port.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// Closed model: this many concurrent users, each sending its next request when the
    /// previous one is done [default: 64].
    #[arg(long, value_name = "N", conflicts_with = "rate")]
    users: Option<u32>,
    /// Closed model: pause between a user's requests (e.g. 10ms).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, conflicts_with = "rate")]
    think_time: Option<Duration>,
    /// Open model: start this many requests per second on a fixed schedule; latency is measured
    /// from the intended start.
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Open model: most requests in flight at once [default: what the descriptor limit allows].
    #[arg(long, value_name = "N", requires = "rate")]
    max_in_flight: Option<u32>,
    /// How long to measure (after warmup), e.g. 30s, 2m [default: 10s unless --requests].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many measured requests.
    #[arg(long, value_name = "N")]
    requests: Option<u64>,
    /// Apply load for this long before measuring.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "0s")]
    warmup: Duration,
    /// keep-alive: the client closes each connection after N requests.
    #[arg(long, value_name = "N")]
    requests_per_conn: Option<u32>,
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request path and query [default: the URL's, or /].
    #[arg(long)]
    path: Option<String>,
    /// Extra request header, 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Request body read from a file.
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
    /// Local addresses to spread connections over: a list, a range or a CIDR block, e.g.
    /// 127.0.0.2-127.0.0.9 (each one adds a full ephemeral port range per destination).
    #[arg(long, value_name = "SPEC")]
    source_ips: Option<String>,
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "3s")]
    connect_timeout: Duration,
    /// Bound on sending the request and reading the response (and, in server-close, on the
    /// wait for the server's FIN).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10s")]
    request_timeout: Duration,
    /// Write the run record (JSON, schema loadprobe.run/1) to this file.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Run the workload N times (a fresh embedded server each time) and write one record: the
    /// merged whole plus each repetition's figures, which `compare` uses to tell changes from
    /// noise.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Driver threads, each with an event loop of its own [default: one per CPU; half the
    /// CPUs in keep-alive, which leaves the cores to a server on the same machine].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// HTTP client code: lean (default) or hyper, to measure what the lean path saves.
    #[arg(long, hide = true, default_value = "lean", value_parser = ["lean", "hyper"])]
    http_client: String,
}

const DEFAULT_USERS: u32 = 64;

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

/// `250ms`, `10s`, `2m`, `1h`, `500us`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 500ms, 10s, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use us, ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(n * scale).map_err(|_| format!("invalid duration {s:?}"))
}

pub fn main(args: RunArgs) -> anyhow::Result<ExitCode> {
    let fd_limit = limits::raise_nofile_limit().context("cannot raise RLIMIT_NOFILE")?;
    let (config, embedded) = plan(&args, fd_limit)?;
    let runtime = super::runtime(args.threads)?;
    let mut records = Vec::new();
    for i in 1..=args.repeat {
        let record = runtime.block_on(run(config.clone(), embedded, probe_plan(&args)))?;
        let interrupted = record.interrupted;
        if args.repeat > 1 {
            eprintln!(
                "loadprobe: repetition {i}/{}: {} requests, {:.1} req/s",
                args.repeat, record.requests.total, record.throughput.rps
            );
        }
        records.push(record);
        if interrupted {
            break;
        }
    }
    // One record either way: a single run as it is, repetitions merged (counts summed,
    // histograms merged, each repetition's figures kept).
    let record = merge(&records)?;
    print!("{}", render_text(&record));
    if let Some(path) = &args.output {
        write_atomic(path, &record)?;
        println!("  record       {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Validates the arguments into a driver config (target address still unknown for the
/// embedded server: port 0 until it is bound). Everything that can be checked before load
/// starts is checked here.
fn plan(args: &RunArgs, fd_limit: u64) -> anyhow::Result<(DriverConfig, bool)> {
    let embedded = args.target.is_none();
    let target = match &args.target {
        Some(url) => Target::parse(url)?,
        None => Target::from_addr(ServerConfig::default().listen),
    };
    let max_conns = limits::max_connections(fd_limit, embedded);
    let workload = match args.rate {
        Some(rate) => {
            let max_in_flight = match args.max_in_flight {
                Some(n) if u64::from(n) > max_conns => bail!(
                    "--max-in-flight {n} cannot fit: the descriptor limit ({fd_limit}) allows \
                     {max_conns} connections at once{}",
                    if embedded {
                        " with the embedded server"
                    } else {
                        ""
                    }
                ),
                Some(n) => n,
                None => max_conns.min(u64::from(u32::MAX)) as u32,
            };
            Workload::Open {
                rate,
                max_in_flight,
            }
        }
        None => {
            let users = args.users.unwrap_or(DEFAULT_USERS);
            if users == 0 {
                bail!("--users must be at least 1");
            }
            if u64::from(users) > max_conns {
                bail!(
                    "--users {users} cannot fit: each needs {} file descriptor(s) and the limit \
                     is {fd_limit} (hard limit; raise it with ulimit -Hn), so at most {max_conns}",
                    limits::fds_per_connection(embedded)
                );
            }
            Workload::Closed {
                users,
                think_time: args.think_time.unwrap_or(Duration::ZERO),
            }
        }
    };
    let mut config = DriverConfig::new(target, args.mode, workload);
    if let Some(threads) = args.threads {
        config.workers = threads;
    }
    config.duration = match (args.duration, args.requests) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    config.requests = args.requests;
    config.warmup = args.warmup;
    config.requests_per_conn = args.requests_per_conn;
    if args.requests_per_conn.is_some() && args.mode != Mode::KeepAlive {
        bail!("--requests-per-conn only applies to --mode keep-alive");
    }
    config.request.method = args.method.clone();
    if let Some(path) = &args.path {
        config.request.path = path.clone();
    }
    for h in &args.headers {
        config.request.headers.push(parse_header(h)?);
    }
    config.request.body = match (&args.body, &args.body_file) {
        (Some(body), _) => Bytes::from(body.clone()),
        (None, Some(file)) => Bytes::from(
            std::fs::read(file)
                .with_context(|| format!("cannot read --body-file {}", file.display()))?,
        ),
        (None, None) => Bytes::new(),
    };
    config.request.validate()?;
    if let Some(spec) = &args.source_ips {
        config.source_ips = parse_source_ips(spec)?;
    }
    config.connect_timeout = args.connect_timeout;
    config.request_timeout = args.request_timeout;
    if args.http_client == "hyper" {
        config.http_client = HttpClient::Hyper;
    }
    Ok((config, embedded))
}

/// What the run does with the probe, from `--no-probe` and `--probe-floor`.
fn probe_plan(args: &RunArgs) -> ProbePlan {
    match (args.no_probe, args.probe_floor) {
        (true, _) => ProbePlan::Off("turned off with --no-probe".to_string()),
        (false, Some(floor)) => ProbePlan::Floor(floor),
        (false, None) => ProbePlan::Try(Netns::Current),
    }
}

fn parse_floor(s: &str) -> Result<Floor, String> {
    [Floor::Attached, Floor::Filtered]
        .into_iter()
        .find(|f| f.name() == s)
        .ok_or_else(|| format!("{s:?} is not a floor (attached or filtered)"))
}

async fn run(
    mut config: DriverConfig,
    embedded: bool,
    probe: ProbePlan,
) -> anyhow::Result<RunRecord> {
    let server = if embedded {
        let server = Server::bind(&ServerConfig::default())?.spawn();
        config.target = Target::from_addr(server.local_addr());
        config.target.path = config.request.path.clone();
        Some(server)
    } else {
        None
    };
    let stop = Stop::default();
    watch_signals(stop.clone())?;
    let live = Arc::new(Live::default());
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(show_progress(live.clone())));

    let record = run_once(RunOnce {
        config,
        embedded_server: embedded,
        probe,
        live,
        stop,
        warn: &|w| eprintln!("loadprobe: {w}"),
    })
    .await;

    if let Some(p) = progress {
        p.abort();
        let _ = p.await;
    }
    if let Some(server) = server {
        let _ = server.stop().await;
    }
    Ok(record?)
}

/// First SIGINT/SIGTERM: stop cleanly (the report and record are still written). A second one
/// exits at once, for a run whose wind-down hangs.
fn watch_signals(stop: Stop) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if n > 0 {
                eprintln!("loadprobe: interrupted again, exiting without a report");
                std::process::exit(130);
            }
            stop.stop();
        }
    });
    Ok(())
}

/// A one-line live view on stderr, refreshed 4 times a second; only on a terminal.
async fn show_progress(live: Arc<Live>) {
    // Cleared when the task is aborted, so the final report starts on a clean line.
    let bar =
        indicatif::ProgressBar::new_spinner().with_finish(indicatif::ProgressFinish::AndClear);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let (mut last_n, mut last_t) = (0u64, Instant::now());
    let mut rate = 0.0;
    loop {
        tick.tick().await;
        let n = live.requests.load(Ordering::Relaxed);
        let now = Instant::now();
        let dt = now.duration_since(last_t).as_secs_f64();
        if dt >= 1.0 {
            rate = (n - last_n) as f64 / dt;
            (last_n, last_t) = (n, now);
        }
        let phase = if live.measuring.load(Ordering::Relaxed) {
            ""
        } else {
            "warming up  "
        };
        bar.set_message(format!(
            "{phase}{rate:.0} req/s  {n} req  {} err  TIME_WAIT client {} server {}",
            live.errors.load(Ordering::Relaxed),
            live.tw_client.load(Ordering::Relaxed),
            live.tw_server.load(Ordering::Relaxed),
        ));
        bar.tick();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunArgs,
    }

    fn plan_of(argv: &[&str]) -> anyhow::Result<(DriverConfig, bool)> {
        let mut full = vec!["run"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full)?;
        plan(&cli.args, 20_000)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn bad_input_is_an_error_with_one_clear_line() {
        for (argv, expect) in [
            (&["--users", "0"][..], "--users must be at least 1"),
            (&["--target", "127.0.0.1:80"], "expected http://"),
            (&["--target", "http://[::1"], "unclosed"),
            (
                &["--body-file", "/nonexistent/body.json"],
                "cannot read --body-file",
            ),
            (&["--users", "30000"], "cannot fit"),
            (&["--header", "nocolon"], "invalid --header"),
            (&["--source-ips", "10.0.0.0/8"], "invalid --source-ips"),
            (
                &["--requests-per-conn", "5"],
                "only applies to --mode keep-alive",
            ),
        ] {
            let err = match plan_of(argv) {
                Ok(_) => panic!("{argv:?} should be rejected"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains(expect), "{argv:?}: {err}");
            assert!(
                !err.trim_end().contains('\n'),
                "{argv:?}: not one line: {err}"
            );
        }
    }

    #[test]
    fn unknown_mode_is_a_usage_error() {
        let err = plan_of(&["--mode", "sideways"]).expect_err("rejected");
        assert!(format!("{err}").contains("unknown mode"), "{err}");
    }

    #[test]
    fn plans_a_post_with_headers() {
        let (c, embedded) = plan_of(&[
            "--target",
            "http://127.0.0.1:9/api/query",
            "--method",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--body",
            "{\"q\":1}",
            "--rate",
            "100",
            "--requests",
            "10",
        ])
        .unwrap();
        assert!(!embedded);
        assert_eq!(c.request.path, "/api/query");
        assert_eq!(c.request.body.len(), 7);
        assert_eq!(c.duration, None);
        assert!(matches!(c.workload, Workload::Open { rate: 100.0, .. }));
    }

    #[test]
    fn unreachable_target_fails_before_load() {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", unused.local_addr().unwrap());
        drop(unused);
        let cli = Cli::try_parse_from(["run", "--target", &url, "--requests", "1"]).unwrap();
        let err = main(cli.args).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("unreachable") && msg.contains("ECONNREFUSED"),
            "{msg}"
        );
    }

    #[test]
    fn runs_against_the_embedded_server_and_writes_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let argv = [
            "run",
            "--mode",
            "server-close",
            "--requests",
            "200",
            "--users",
            "4",
            // The sampled (sock_diag) path; tests/tests/run.rs covers the probe's.
            "--no-probe",
            "-o",
            path.to_str().unwrap(),
        ];
        let cli = Cli::try_parse_from(argv).unwrap();
        assert_eq!(main(cli.args).unwrap(), ExitCode::SUCCESS);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["schema"], "loadprobe.run/1");
        assert_eq!(v["config"]["mode"], "server-close");
        assert_eq!(v["requests"]["total"], 200);
        assert_eq!(v["requests"]["ok"], 200);
        assert_eq!(v["connections"]["opened"], 200);
        assert_eq!(v["probe"]["attached"], false);
        assert!(
            v["time_wait"]["server"]["peak"].as_u64().unwrap() >= 190,
            "{}",
            v["time_wait"]
        );
    }
}
