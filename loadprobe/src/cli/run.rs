//! `loadprobe run`: apply load with the chosen connection-ending mode, then print a summary
//! and (with `--output`) write the run record.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;

use loadprobe::driver::{
    self, Curve, DriverConfig, HttpClient, Identity, Mix, RequestSpec, Segment, Stop, Target,
    TlsOptions, Trust, limits,
};

use loadprobe::model::{Live, Mode, Workload};

use loadprobe::probe::{Floor, Netns};
use loadprobe::report::{Incomplete, PendingOutput, RunRecord, merge, render_text};
use loadprobe::run::{ProbePlan, RunOnce, run_once};
use loadprobe::run_report;
use loadprobe::server::{Server, ServerConfig};

use super::exit;
use super::flags;
use super::out::{Stdout, note};
use super::parse;
use super::signals::Interrupts;

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
    /// Describe rare anomalies inside the probe's kernel programs on stderr (a failed kernel
    /// read: which program, which field); they are counted either way.
    #[arg(long, conflicts_with = "no_probe")]
    probe_log: bool,
    /// http[s]://HOST[:PORT][/PATH] (IPv4, [IPv6] or a name). Default: an embedded server on
    /// 127.0.0.1 with an ephemeral port.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// With no --target: the embedded server speaks TLS, with a self-signed certificate made
    /// for the run (and trusted by it alone).
    #[arg(long, conflicts_with = "target")]
    tls: bool,
    /// https: the server name sent in SNI and checked against the certificate [default: the
    /// URL's host], e.g. when the target is an address.
    #[arg(long, value_name = "NAME")]
    sni: Option<String>,
    /// https: trust the CA certificates in this PEM file instead of the system's roots.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    cacert: Option<PathBuf>,
    /// https: accept any server certificate (no verification); the report and record say so.
    #[arg(long)]
    insecure: bool,
    /// https: client certificate chain (PEM), for servers that ask for one (mTLS).
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// https: the private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// https: off (default): every connection a new client with a full handshake; on: sessions
    /// are resumed from one store shared by all connections.
    #[arg(long, value_name = "off|on", default_value = "off", value_parser = ["off", "on"])]
    tls_resume: String,
    /// Closed model: this many concurrent users, each sending its next request when the
    /// previous one is done [default: 64].
    #[arg(long, value_name = "N", conflicts_with = "rate")]
    users: Option<u32>,
    /// Closed model: pause between a user's requests (e.g. 10ms).
    #[arg(long, value_name = "DUR", value_parser = parse::duration, conflicts_with = "rate")]
    think_time: Option<Duration>,
    /// Open model: start this many requests per second on a fixed schedule; latency is measured
    /// from the intended start.
    #[arg(long, value_name = "R", value_parser = parse::rate)]
    rate: Option<f64>,
    /// Open model: most requests in flight at once [default: what the descriptor limit allows].
    #[arg(long, value_name = "N", requires = "rate",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: Option<u32>,
    /// Change the load over the run: DURATION:TARGET stages (e.g. 30s:100,1m:500,30s:0), each
    /// moving linearly from the previous value to its target, the first from --users (or 0):
    /// users in the closed model, or with --rate R starts a second from R (intended start times
    /// stay exact during a ramp). The run lasts the stages' total.
    #[arg(long, value_name = "STAGES", value_parser = parse::stages,
          conflicts_with_all = ["duration", "requests", "warmup"])]
    stages: Option<Curve>,
    /// How long to measure (after warmup), e.g. 30s, 2m [default: 10s unless --requests].
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration)]
    duration: Option<Duration>,
    /// Stop after this many measured requests.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Apply load for this long before measuring.
    #[arg(long, value_name = "DUR", value_parser = parse::duration, default_value = "0s")]
    warmup: Duration,
    /// keep-alive: the client closes each connection after N requests.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    requests_per_conn: Option<u32>,
    /// Request method [default: GET].
    #[arg(long)]
    method: Option<String>,
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
    /// Send a weighted mix of named requests from a TOML file instead of one request (see
    /// docs/commands.md for the format); the record keeps each request's figures by name.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Seed the scenario's draws, to repeat them exactly [default: from the clock; the record
    /// keeps the seed used].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Local addresses to spread connections over: a list, a range or a CIDR block, e.g.
    /// 127.0.0.2-127.0.0.9 (each one adds a full ephemeral port range per destination).
    #[arg(long, value_name = "SPEC")]
    source_ips: Option<String>,
    /// Bound on connecting; for https, also on the TLS handshake after it (each on its own).
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration, default_value = "3s")]
    connect_timeout: Duration,
    /// Bound on sending the request and reading the response (and, in server-close, on the
    /// wait for the server's FIN).
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration, default_value = "10s")]
    request_timeout: Duration,
    /// keep-alive: a request written onto a connection the server had closed meanwhile is
    /// counted (requests.stale_connection) and, by default, sent again on a new connection
    /// (requests.retried); with this flag it fails instead, with the error it met.
    #[arg(long)]
    no_retry_stale: bool,
    /// Write the run record (JSON, schema loadprobe.run/1) to this file; `-`: to standard
    /// output as one line, with the text report on standard error (a pod's log).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Run segment K of N of the workload, one of N load hosts: the users, the requests and
    /// the open model's schedule are split so that the N segments together are the whole run
    /// (`merge` puts their records together).
    #[arg(long, value_name = "K/N", value_parser = parse_segment, conflicts_with = "segments")]
    segment: Option<Segment>,
    /// Run one of N segments: the one of this pod of a Kubernetes Indexed Job, K =
    /// JOB_COMPLETION_INDEX + 1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_SEGMENTS))]
    segments: Option<u32>,
    /// Start the load (warmup first) at this moment, once everything else is ready (probe
    /// attached, target checked), so that several hosts run together: RFC 3339 in UTC
    /// (2026-12-04T10:00:00Z) or Unix seconds. A host ready only after it starts at once, and
    /// its record says how late.
    #[arg(long, value_name = "TIME", value_parser = parse::moment)]
    start_at: Option<SystemTime>,
    /// Also write the report of the run as one self-contained HTML page with charts (what
    /// `loadprobe report --format html` draws from the record), also when interrupted.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Run the workload N times (a fresh embedded server each time) and write one record: the
    /// merged whole plus each repetition's figures, which `compare` uses to tell changes from
    /// noise.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=MAX_REPEAT))]
    repeat: u32,
    /// Driver threads, each with an event loop of its own [default: one per CPU; half the
    /// CPUs in keep-alive, which leaves the cores to a server on the same machine].
    #[arg(long, value_name = "N", value_parser = parse::threads)]
    threads: Option<usize>,
    /// HTTP client code: lean (default) or hyper, to measure what the lean path saves.
    #[arg(long, hide = true, default_value = "lean", value_parser = ["lean", "hyper"])]
    http_client: String,
}

const DEFAULT_USERS: u32 = 64;

/// Most segments of one workload: far more load hosts than any one test uses.
const MAX_SEGMENTS: i64 = 10_000;

/// The furthest ahead `--start-at` may be.
const MAX_START_AHEAD: Duration = Duration::from_secs(86_400);

/// A host that started later than this for `--start-at` is warned about (its record always
/// says how late it was).
const LATE_WARNING_MS: u64 = 1000;

fn parse_segment(s: &str) -> Result<Segment, String> {
    s.parse()
        .map_err(|e: loadprobe::driver::SegmentError| e.to_string())
}

/// The segment to run: `--segment`, or `--segments` with the pod's index from the Job.
fn segment_of(args: &RunArgs) -> anyhow::Result<Segment> {
    match (args.segment, args.segments) {
        (Some(segment), _) => Ok(segment),
        (None, None) => Ok(Segment::WHOLE),
        (None, Some(count)) => {
            let index = std::env::var("JOB_COMPLETION_INDEX").map_err(|_| {
                anyhow::anyhow!(
                    "--segments {count} needs JOB_COMPLETION_INDEX (set in each pod of a \
                     Kubernetes Indexed Job); elsewhere give --segment K/{count}"
                )
            })?;
            let k: u32 = index
                .trim()
                .parse()
                .ok()
                .filter(|k| *k < count)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "JOB_COMPLETION_INDEX={index:?} is not an index below --segments {count}"
                    )
                })?;
            Ok(Segment::new(k + 1, count)?)
        }
    }
}

/// Most repetitions of one `run --repeat`: far more than noise estimates need.
const MAX_REPEAT: i64 = 1000;

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

pub fn main(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Before anything else: a record that cannot be written must not cost a run.
    // `-o -`: the record is standard output's, one line; the text report goes to stderr.
    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    let output = args
        .output
        .as_deref()
        .filter(|_| !to_stdout)
        .map(PendingOutput::create)
        .transpose()?;
    if args.html.is_some() && args.html == args.output {
        anyhow::bail!("--html and -o name the same file; give the page its own");
    }
    let html = args
        .html
        .as_deref()
        .map(PendingOutput::create)
        .transpose()?;
    let fd_limit = limits::raise_nofile_limit().context("cannot raise RLIMIT_NOFILE")?;
    let (config, embedded) = plan(&args, fd_limit)?;
    let keep = kept_caps(&[&output, &html], config.tls.as_ref());
    let runtime = super::runtime(args.threads)?;
    let mut records = Vec::new();
    let mut failure = None;
    for i in 1..=args.repeat {
        let temps = [&output, &html]
            .into_iter()
            .flatten()
            .filter_map(|o| o.temp_path().map(Path::to_path_buf))
            .collect();
        let record = match runtime.block_on(run(
            config.clone(),
            embedded,
            probe_plan(&args),
            args.probe_log,
            temps,
            // The last repetition attaches the probe for the last time.
            (i == args.repeat).then_some(keep),
        )) {
            Ok(record) => record,
            Err(e) if records.is_empty() => return Err(e),
            // What the finished repetitions measured is kept (and marked incomplete).
            Err(e) => {
                let reason = loadprobe::error_chain::one_line(&*e);
                failure = Some((reason, e.context(format!("repetition {i}/{}", args.repeat))));
                break;
            }
        };
        let interrupted = record.interrupted;
        if args.repeat > 1 {
            note!(
                "loadprobe: repetition {i}/{}: {} requests, {:.1} req/s",
                args.repeat,
                record.requests.total,
                record.throughput.rps
            );
        }
        records.push(record);
        if interrupted {
            break;
        }
    }
    // One record either way: a single run as it is, repetitions merged (counts summed,
    // histograms merged, each repetition's figures kept).
    let mut record = merge(&records)?;
    if let Some((reason, _)) = &failure {
        record.incomplete = Some(Incomplete {
            planned_repetitions: args.repeat,
            completed_repetitions: records.len() as u32,
            reason: reason.clone(),
        });
    }
    // The record first: the summary goes to a stdout that may be closed.
    if let Some(output) = output {
        output.write(&record)?;
    }
    if let Some(html) = html {
        let page = run_report::run_page(args.output.as_deref(), record.clone());
        html.write_bytes(page.as_bytes())?;
    }
    let late = record.segment.as_ref().and_then(|s| s.start_late_ms);
    if let Some(ms) = late.filter(|ms| *ms > LATE_WARNING_MS) {
        note!("loadprobe: warning: started {ms} ms after --start-at (the record says so)");
    }
    if to_stdout {
        let mut line = serde_json::to_string(&record)?;
        line.push('\n');
        let mut out = Stdout::new();
        out.write_all(line.as_bytes())?;
        out.flush()?;
        note!("{}", render_text(&record).trim_end());
    } else {
        let mut out = Stdout::new();
        write!(out, "{}", render_text(&record))?;
        if let Some(path) = &args.output {
            writeln!(out, "  record       {}", path.display())?;
        }
        if let Some(path) = &args.html {
            writeln!(out, "  report       {}", path.display())?;
        }
        out.flush()?;
    }
    match failure {
        Some((_, e)) => Err(e),
        None if record.interrupted => Ok(ExitCode::from(exit::INTERRUPTED)),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Validates the arguments into a driver config (target address still unknown for the
/// embedded server: port 0 until it is bound). Everything that can be checked before load
/// starts is checked here.
fn plan(args: &RunArgs, fd_limit: u64) -> anyhow::Result<(DriverConfig, bool)> {
    let embedded = args.target.is_none();
    let target = match &args.target {
        Some(url) => flags::target(url)?,
        None => Target::from_addr(ServerConfig::default().listen),
    };
    let max_conns = limits::max_connections(fd_limit, embedded);
    // What this host must hold is its segment's share, not the whole run.
    let segment = segment_of(args)?;
    let share = |n: u32| segment.share(u64::from(n));
    let workload = match args.rate {
        Some(rate) => {
            let max_in_flight = match args.max_in_flight {
                Some(n) if share(n) > max_conns => bail!(
                    "--max-in-flight {n} cannot fit: the descriptor limit ({fd_limit}) allows \
                     {max_conns} connections at once{}",
                    if embedded {
                        " with the embedded server"
                    } else {
                        ""
                    }
                ),
                // The whole run's cap, split like the rest (at least one each).
                Some(n) => share(n).max(1) as u32,
                // This host's own limit.
                None => max_conns.min(u64::from(u32::MAX)) as u32,
            };
            Workload::Open {
                rate,
                max_in_flight,
            }
        }
        None => {
            // A ramp starts from nothing unless told otherwise.
            let users = match &args.stages {
                Some(_) => args.users.unwrap_or(0),
                None => args.users.unwrap_or(DEFAULT_USERS),
            };
            if users == 0 && args.stages.is_none() {
                bail!("--users must be at least 1");
            }
            let most = match &args.stages {
                Some(c) => Curve::new(f64::from(users), c.stages().to_vec())
                    .max()
                    .ceil() as u32,
                None => users,
            };
            if share(most) > max_conns {
                bail!(
                    "--users {most} cannot fit: each needs {} file descriptor(s) and the limit \
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
    config.duration = match (args.duration, args.requests, &args.stages) {
        (_, _, Some(curve)) => Some(curve.total()),
        (Some(d), _, _) => Some(d),
        (None, Some(_), _) => None,
        (None, None, None) => Some(Duration::from_secs(10)),
    };
    if let Some(curve) = &args.stages {
        config.stages = curve.stages().to_vec();
    }
    config.requests = args.requests;
    config.warmup = args.warmup;
    config.requests_per_conn = args.requests_per_conn;
    match &args.scenario {
        Some(file) => {
            config.mix = scenario(args, file, &config.mix.first().path, segment.count() > 1)?
        }
        None if args.seed.is_some() => bail!("--seed only applies to --scenario"),
        None => plain_request(args, config.mix.first_mut())?,
    }
    // Requests that all end their connections one way make that the run's mode, for what reads
    // it: the probe's mismatches, the port budget, the verdict.
    if let Some(mode) = config.mix.common_mode(config.mode) {
        config.mode = mode;
    }
    if args.requests_per_conn.is_some()
        && !config.mix.modes(args.mode).any(|m| m == Mode::KeepAlive)
    {
        bail!("--requests-per-conn only applies to --mode keep-alive (or keep-alive requests)");
    }
    if let Some(spec) = &args.source_ips {
        config.source_ips = flags::source_ips(spec)?;
    }
    config.connect_timeout = args.connect_timeout;
    config.request_timeout = args.request_timeout;
    config.retry_stale = !args.no_retry_stale;
    config.segment = segment;
    config.start_at = args.start_at;
    if let Some(at) = args.start_at {
        // Most likely milliseconds given for seconds, or the wrong day: a run that would wait
        // that long is a mistake to say now, not after it.
        if at.duration_since(SystemTime::now()).unwrap_or_default() > MAX_START_AHEAD {
            bail!("--start-at is more than a day ahead");
        }
    }
    if args.http_client == "hyper" {
        config.http_client = HttpClient::Hyper;
    }
    config.tls = tls_options(args, &config.target)?;
    if args.tls {
        config.target.tls = true;
    }
    driver::validate(&config).map_err(flags::driver_error)?;
    Ok((config, embedded))
}

/// The TLS options of an https target (or of `--tls`); flags for https on an http target are
/// an error, not ignored.
fn tls_options(args: &RunArgs, target: &Target) -> anyhow::Result<Option<TlsOptions>> {
    let given = args.sni.is_some()
        || args.cacert.is_some()
        || args.insecure
        || args.cert.is_some()
        || args.tls_resume != "off";
    if !target.tls && !args.tls {
        if given {
            bail!(
                "--sni, --cacert, --insecure, --cert, --key and --tls-resume need an https:// \
                 --target (or --tls)"
            );
        }
        return Ok(None);
    }
    if args.tls && (args.cacert.is_some() || args.insecure) {
        bail!(
            "--tls trusts the embedded server's own certificate; --cacert and --insecure are for --target https://"
        );
    }
    if args.tls && args.cert.is_some() {
        bail!(
            "--tls: the embedded server asks for no client certificate; --cert and --key are for --target https://"
        );
    }
    let trust = match (&args.cacert, args.insecure) {
        (Some(file), _) => Trust::CaFile(file.clone()),
        (None, true) => Trust::Insecure,
        // `--tls`: replaced by the embedded server's certificate once it is made.
        (None, false) => Trust::System,
    };
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(Identity {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    Ok(Some(TlsOptions {
        sni: args.sni.clone(),
        trust,
        identity,
        resume: args.tls_resume == "on",
    }))
}

/// The one request of a plain run, from `--method`, `--path`, `--header` and the body flags.
fn plain_request(args: &RunArgs, request: &mut RequestSpec) -> anyhow::Result<()> {
    if let Some(method) = &args.method {
        request.method = method.clone();
    }
    if let Some(path) = &args.path {
        request.path = path.clone();
    }
    for h in &args.headers {
        request.headers.push(flags::header(h)?);
    }
    request.body = match (&args.body, &args.body_file) {
        (Some(body), _) => Bytes::from(body.clone()),
        (None, Some(file)) => Bytes::from(
            std::fs::read(file)
                .with_context(|| format!("cannot read --body-file {}", file.display()))?,
        ),
        (None, None) => Bytes::new(),
    };
    Ok(())
}

/// The mix of `--scenario FILE`; requests without a path take `default_path` (the target's).
/// `split`: the run is one segment of several, whose draws must come from one sequence.
fn scenario(args: &RunArgs, file: &Path, default_path: &str, split: bool) -> anyhow::Result<Mix> {
    let single = [
        ("--method", args.method.is_some()),
        ("--path", args.path.is_some()),
        ("--header", !args.headers.is_empty()),
        ("--body", args.body.is_some()),
        ("--body-file", args.body_file.is_some()),
    ];
    if let Some((flag, _)) = single.iter().find(|(_, given)| *given) {
        bail!(
            "{flag} describes the one request of a plain run; with --scenario, give it in the file"
        );
    }
    let seed = match (args.seed, args.start_at) {
        (Some(seed), _) => seed,
        // Every host of the split run knows the agreed start, so it seeds them all alike.
        (None, Some(at)) if split => seed_of(at),
        (None, None) if split => bail!(
            "--scenario over segments draws from one sequence on every host: give --seed N \
             (or --start-at, whose time seeds it)"
        ),
        (None, _) => seed_of(SystemTime::now()),
    };
    driver::scenario::load(file, default_path, args.mode, seed).context("--scenario")
}

/// A seed from a time, for a scenario run without `--seed` (its record keeps it). Below 2^53,
/// so that JSON readers that hold numbers as doubles (jq, JavaScript) keep it exact.
fn seed_of(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos() as u64)
        & ((1 << 53) - 1)
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

/// What a run keeps of its capabilities once the probe is attached: it keeps its uid (0 when
/// started as root), and uid 0 with no capability still writes root's files and folders. The
/// outputs' temporary files are renamed into their folders at the end, which a folder root may
/// not write (another user's home, say) allows only with CAP_DAC_OVERRIDE (and a sticky folder's
/// file of another user only with CAP_FOWNER); the driver reads `--cacert`, `--cert` and
/// `--key` again when the load starts, which files root cannot read need CAP_DAC_READ_SEARCH
/// for.
fn kept_caps(outputs: &[&Option<PendingOutput>], tls: Option<&TlsOptions>) -> u64 {
    use loadprobe::privileges::{CAP_DAC_READ_SEARCH, caps_to_replace_in};
    let mut keep = 0;
    for target in outputs.iter().filter_map(|o| o.as_ref()?.replaced()) {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        keep |= caps_to_replace_in(dir, target);
    }
    if tls.is_some_and(|t| matches!(t.trust, Trust::CaFile(_)) || t.identity.is_some()) {
        keep |= 1 << CAP_DAC_READ_SEARCH;
    }
    keep
}

/// `temps` are the outputs' temporary files, removed if a second signal ends the process.
/// `drop_privileges`: the capabilities to keep once the probe is attached, if they are to be
/// given up (see [`kept_caps`]).
async fn run(
    mut config: DriverConfig,
    embedded: bool,
    probe: ProbePlan,
    probe_log: bool,
    temps: Vec<PathBuf>,
    drop_privileges: Option<u64>,
) -> anyhow::Result<RunRecord> {
    let server = if embedded {
        let mut server_config = ServerConfig::default();
        if let Some(options) = &mut config.tls {
            // `run --tls`: a certificate of the run's own, and the only one it trusts.
            let tls = loadprobe::server::tls::self_signed()?;
            options.trust = Trust::Roots(vec![tls.certificate]);
            server_config.tls = Some(tls.config);
        }
        let server = Server::bind(&server_config)?.spawn();
        let tls = config.target.tls;
        config.target = Target::from_addr(server.local_addr());
        config.target.tls = tls;
        config.target.path = config.mix.first().path.clone();
        Some(server)
    } else {
        None
    };
    let stop = Stop::default();
    watch_signals(stop.clone(), temps)?;
    let live = Arc::new(Live::default());
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(show_progress(live.clone(), Plan::of(&config))));

    let record = run_once(RunOnce {
        config,
        embedded_server: embedded,
        probe,
        probe_log,
        live,
        stop,
        warn: &|w| note!("loadprobe: {w}"),
        drop_privileges,
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
/// exits at once, for a run whose wind-down hangs, removing the outputs' temporary files.
fn watch_signals(stop: Stop, temps: Vec<PathBuf>) -> anyhow::Result<()> {
    Interrupts::catch()?.on_each(move |n| {
        if n > 1 {
            note!("loadprobe: interrupted again, exiting without a report");
            for temp in &temps {
                let _ = std::fs::remove_file(temp);
            }
            std::process::exit(exit::INTERRUPTED.into());
        }
        stop.stop();
    })
}

/// What the live view shows of the plan: where the run is in it, and what it is to carry now.
pub(super) struct Plan {
    /// Said first on the line (`find-limit`'s step and rate), or empty.
    pub(super) label: String,
    warmup: Duration,
    duration: Option<Duration>,
    curve: Curve,
    stages: usize,
    open: bool,
    /// This host's part of the intended load (its segment's).
    share: f64,
    start_at: Option<SystemTime>,
}

impl Plan {
    pub(super) fn of(config: &DriverConfig) -> Plan {
        Plan {
            label: String::new(),
            warmup: config.warmup,
            duration: config.duration,
            curve: config.curve(),
            stages: config.stages.len(),
            open: matches!(config.workload, Workload::Open { .. }),
            share: 1.0 / f64::from(config.segment.count()),
            start_at: config.start_at,
        }
    }

    /// "stage 2/3  " at `t` seconds into the window, with stages.
    fn stage(&self, t: f64) -> String {
        if self.stages == 0 {
            return String::new();
        }
        let mut end = 0.0;
        for (i, s) in self.curve.stages().iter().enumerate() {
            end += s.duration.as_secs_f64();
            if t < end {
                return format!("stage {}/{}  ", i + 1, self.stages);
            }
        }
        format!("stage {}/{}  ", self.stages, self.stages)
    }
}

/// A one-line live view on stderr, refreshed 4 times a second; only on a terminal: where the
/// run is (waiting for its start, warming up, the stage, a bar to the end), the rate achieved
/// against the one intended (or the users running), errors and TIME_WAIT per side.
pub(super) async fn show_progress(live: Arc<Live>, plan: Plan) {
    // Cleared when the task is aborted, so the final report starts on a clean line.
    let bar = match plan.duration {
        Some(d) => indicatif::ProgressBar::new((plan.warmup + d).as_millis() as u64),
        None => indicatif::ProgressBar::new_spinner(),
    }
    .with_finish(indicatif::ProgressFinish::AndClear);
    let template = match plan.duration {
        Some(_) => "{spinner} [{bar:24}] {msg}",
        None => "{spinner} {elapsed:>4} {msg}",
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
            .progress_chars("=> "),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let (mut last_n, mut last_t) = (0u64, Instant::now());
    let mut rate = 0.0;
    loop {
        tick.tick().await;
        let window_ns = live.window_start_ns.load(Ordering::Relaxed);
        if window_ns == 0 {
            let left = plan
                .start_at
                .and_then(|at| at.duration_since(SystemTime::now()).ok());
            bar.set_message(match left {
                Some(left) => format!(
                    "{}starting in {:.1} s (--start-at)",
                    plan.label,
                    left.as_secs_f64()
                ),
                None => format!("{}getting ready", plan.label),
            });
            bar.tick();
            continue;
        }
        // Seconds into the measured window (negative in the warmup).
        let t = (loadprobe::kernel::monotonic_ns() as f64 - window_ns as f64) / 1e9;
        if plan.duration.is_some() {
            bar.set_position(((t + plan.warmup.as_secs_f64()).max(0.0) * 1e3) as u64);
        }
        let n = live.requests.load(Ordering::Relaxed);
        let now = Instant::now();
        let dt = now.duration_since(last_t).as_secs_f64();
        if dt >= 1.0 {
            rate = (n - last_n) as f64 / dt;
            (last_n, last_t) = (n, now);
        }
        let phase = if live.measuring.load(Ordering::Relaxed) {
            plan.stage(t)
        } else {
            "warming up  ".to_string()
        };
        let load = if plan.open {
            // Over the same trailing second as the achieved rate.
            let c = &plan.curve;
            let intended =
                (c.cumulative(t.max(0.0)) - c.cumulative((t - 1.0).max(0.0))) * plan.share;
            format!("{rate:.0}/{intended:.0} req/s")
        } else {
            let users = (plan.curve.at(t.max(0.0)) * plan.share).ceil();
            format!("{rate:.0} req/s, {users} users")
        };
        bar.set_message(format!(
            "{}{phase}{load}  {n} req  {} err  TIME_WAIT client {} server {}",
            plan.label,
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

    /// A host holds its segment's share: 30000 users do not fit under 20000 descriptors, a
    /// quarter of them does; an explicit cap is the whole run's and splits the same way.
    #[test]
    fn the_descriptor_limit_bounds_this_hosts_share() {
        assert!(plan_of(&["--users", "30000"]).is_err());
        let (c, _) = plan_of(&["--users", "30000", "--segment", "1/4"]).unwrap();
        assert!(matches!(c.workload, Workload::Closed { users: 30000, .. }));
        let (c, _) =
            plan_of(&["--rate", "100", "--max-in-flight", "10", "--segment", "4/4"]).unwrap();
        assert!(matches!(
            c.workload,
            Workload::Open {
                max_in_flight: 2,
                ..
            }
        ));
    }

    #[test]
    fn bad_input_is_an_error_with_one_clear_line() {
        for (argv, expect) in [
            (&["--users", "0"][..], "--users must be at least 1"),
            (&["--target", "127.0.0.1:80"], "expected http[s]://"),
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
            (&["--seed", "1"], "--seed only applies to --scenario"),
            (
                &["--scenario", "mix.toml", "--body", "x"],
                "--body describes the one request of a plain run",
            ),
            (
                &["--scenario", "/nonexistent/mix.toml"],
                "--scenario: /nonexistent/mix.toml: cannot read the scenario file",
            ),
            (
                &["--scenario", "mix.toml", "--segment", "1/2"],
                "--scenario over segments draws from one sequence on every host: give --seed N",
            ),
            (
                &["--tls", "--cert", "c.pem", "--key", "k.pem"],
                "--tls: the embedded server asks for no client certificate",
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

    /// The driver says what is wrong with a value; the error names the flag it came from.
    #[test]
    fn driver_errors_name_the_flag() {
        for (argv, expect) in [
            (
                &["--method", "G T"][..],
                "invalid --method \"G T\": must be an HTTP token like GET or POST",
            ),
            (
                &["--header", "Connection: close"],
                "--header Connection: set by the driver",
            ),
            (
                &["--http-client", "hyper", "--mode", "keep-alive"],
                "--http-client hyper is only for connection-per-request modes",
            ),
            (
                &["--target", "ftp://127.0.0.1/"],
                "invalid --target \"ftp://127.0.0.1/\": ",
            ),
            (
                &["--source-ips", "192.0.2.1"],
                "--source-ips: cannot use 192.0.2.1 as a source address",
            ),
        ] {
            let err = match plan_of(argv) {
                Ok(_) => panic!("{argv:?} should be rejected"),
                Err(e) => loadprobe::error_chain::one_line(&*e),
            };
            assert!(err.starts_with(expect), "{argv:?}: {err}");
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
        assert_eq!(c.mix.first().path, "/api/query");
        assert_eq!(c.mix.first().body.len(), 7);
        assert_eq!(c.duration, None);
        assert!(matches!(c.workload, Workload::Open { rate: 100.0, .. }));
    }

    /// A scenario's requests take the target's path unless they give one, and its keep-alive
    /// requests are what `--requests-per-conn` applies to.
    #[test]
    fn plans_a_scenario() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mix.toml");
        std::fs::write(
            &file,
            "[[request]]\nname = \"a\"\nmode = \"keep-alive\"\n\n\
             [[request]]\nname = \"b\"\npath = \"/b\"\nweight = 2\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let (c, _) = plan_of(&[
            "--target",
            "http://127.0.0.1:9/base",
            "--scenario",
            file,
            "--seed",
            "5",
            "--requests-per-conn",
            "3",
        ])
        .unwrap();
        assert!(c.mix.named);
        assert_eq!(c.mix.seed, 5);
        let paths: Vec<&str> = c
            .mix
            .requests
            .iter()
            .map(|r| r.spec.path.as_str())
            .collect();
        assert_eq!(paths, ["/base", "/b"]);
        assert_eq!(
            c.mix.modes(c.mode).collect::<Vec<_>>(),
            [Mode::KeepAlive, Mode::ClientClose]
        );
        // Without a seed, one from the clock, kept in the config for the record.
        let (c, _) = plan_of(&["--scenario", file]).unwrap();
        assert!(c.mix.named && c.mix.seed != 0);
        // Every request's own mode is the run's.
        std::fs::write(
            dir.path().join("ka.toml"),
            "[[request]]\nname = \"a\"\nmode = \"keep-alive\"\n",
        )
        .unwrap();
        let ka = dir.path().join("ka.toml");
        let (c, _) = plan_of(&["--scenario", ka.to_str().unwrap()]).unwrap();
        assert_eq!(c.mode, Mode::KeepAlive);
        let err = plan_of(&["--scenario", file, "--mode", "reset"]).unwrap_err();
        assert!(
            format!("{err:#}").contains(":3: reset cannot be mixed"),
            "{err:#}"
        );
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
