//! `loadprobe find-limit`: raise the new-connection rate step by step until the load cannot go
//! up, and say what stopped it.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use loadprobe::driver::{self, DriverConfig, Stop, Target, limits};
use loadprobe::find_limit::{
    self, FindLimitError, Outputs, Plan, SearchPlan, Setup, Step, Stopped, Thresholds, Watch,
    judge::MIN_ACHIEVED, rate_name,
};
use loadprobe::model::{Live, Mode, Workload};
use loadprobe::tune::validate::Setting;

use super::exit;
use super::flags;
use super::out::{Stdout, note};
use super::parse;
use super::run::{Plan as LivePlan, show_progress};
use super::signals::Interrupts;

#[derive(Args, Debug)]
pub struct FindLimitArgs {
    /// How each connection ends, as in `loadprobe run --mode` (keep-alive opens no new
    /// connection per request, so it has no place here).
    #[arg(long, default_value = "client-close", value_parser = parse_mode)]
    mode: Mode,
    /// http://HOST[:PORT][/PATH] of a server of yours; each step first waits for the client's
    /// TIME_WAIT towards it to drain. Default: the embedded server, each step in a fresh
    /// client/server network namespace pair joined by veth (needs root).
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// The first step's rate, new connections per second; each next one doubles until a step
    /// breaks, then bisection between the highest that held and the lowest that broke.
    #[arg(long, value_name = "R", value_parser = parse::rate, default_value = "10")]
    start_rate: f64,
    /// The highest rate to try: a cap that holds ends the search.
    #[arg(long, value_name = "R", value_parser = parse::rate)]
    max_rate: Option<f64>,
    /// How long each step measures, e.g. 5s, 1m.
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration, default_value = "10s")]
    duration: Duration,
    /// Done when the lowest rate that broke is within this of the highest that held.
    #[arg(long, value_name = "PCT", value_parser = positive_percent, default_value = "10%")]
    resolution: f64,
    /// Most steps, whatever the resolution.
    #[arg(long, value_name = "N", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(1..=99))]
    max_steps: u32,
    /// A step breaks with more failed requests than this share of its requests.
    #[arg(long, value_name = "PCT", value_parser = parse::percent, default_value = "1%")]
    max_error_rate: f64,
    /// A step breaks with a p99 latency (from the intended start) over this, e.g. 200ms.
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration)]
    max_p99: Option<Duration>,
    /// A sysctl of the namespaces, KEY=VALUE (repeatable), written where it acts as `tune
    /// validate --set` places it: client (tcp_tw_reuse, tcp_tw_reuse_delay,
    /// ip_local_port_range, ...), server (somaxconn, tcp_max_syn_backlog) or both. Embedded
    /// server only; the namespaces start from kernel defaults.
    #[arg(long = "sysctl", value_name = "KEY=VALUE", conflicts_with = "target")]
    sysctls: Vec<String>,
    /// With --target: before each step, wait (up to 65 s) until at most N client TIME_WAIT
    /// sockets towards the target are left [default: 1% of the client's ports towards it].
    #[arg(long, value_name = "N", requires = "target")]
    drain_below: Option<u64>,
    /// Local addresses to spread connections over, as in `loadprobe run` (with --target).
    #[arg(long, value_name = "SPEC", requires = "target")]
    source_ips: Option<String>,
    /// Most requests in flight at once [default: what the descriptor limit allows].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: Option<u32>,
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration, default_value = "3s")]
    connect_timeout: Duration,
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration, default_value = "10s")]
    request_timeout: Duration,
    /// Request path and query [default: the URL's, or /].
    #[arg(long)]
    path: Option<String>,
    /// Extra request header, 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Do not attach the eBPF probe (TIME_WAIT overflow then goes uncounted).
    #[arg(long)]
    no_probe: bool,
    /// Driver threads [default: one per CPU].
    #[arg(long, value_name = "N", value_parser = parse::threads)]
    threads: Option<usize>,
    /// Write each step's run record (step-01-10rps.json, ...: `loadprobe compare
    /// DIR/step-*.json` reads them in order) and find-limit.json (the summary) here.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

fn positive_percent(s: &str) -> Result<f64, String> {
    match parse::percent(s)? {
        0.0 => Err(format!("{s:?} is not a positive percentage")),
        p => Ok(p),
    }
}

pub fn main(args: FindLimitArgs) -> anyhow::Result<ExitCode> {
    let plan = plan(&args)?;
    find_limit::check(&plan)?;
    // Before any namespace or load: a folder that cannot take the records must not cost a step.
    let mut outputs = args
        .output_dir
        .as_deref()
        .map(|dir| Outputs::create(dir).context("--output-dir"))
        .transpose()?;
    let stop = Stop::default();
    watch_signals(stop.clone())?;
    let mut live = LiveView::new()?;
    let summary = find_limit::find_limit(&plan, outputs.as_mut(), &stop, &mut live, &|line| {
        note!("loadprobe: {line}")
    })?;
    let written = match outputs.as_mut() {
        Some(outputs) => Some(outputs.write_summary(&summary)?),
        None => None,
    };
    let mut out = Stdout::new();
    out.write_all(find_limit::text::render(&summary).as_bytes())?;
    if let (Some(dir), Some(summary_path)) = (&args.output_dir, written) {
        writeln!(
            out,
            "wrote {summary_path} and {} step records in {}",
            summary.steps.iter().filter(|s| s.file.is_some()).count(),
            dir.display()
        )?;
    }
    out.flush()?;
    Ok(match summary.stopped {
        Stopped::Interrupted => ExitCode::from(exit::INTERRUPTED),
        Stopped::Failed => {
            note!(
                "loadprobe: error: {}",
                summary.error.as_deref().unwrap_or("a step failed")
            );
            ExitCode::from(exit::ERROR)
        }
        _ => ExitCode::SUCCESS,
    })
}

/// The search from the flags; everything that can be checked before load is checked here.
fn plan(args: &FindLimitArgs) -> anyhow::Result<Plan> {
    let fd_limit = limits::raise_nofile_limit().context("cannot raise RLIMIT_NOFILE")?;
    let embedded = args.target.is_none();
    let max_conns = limits::max_connections(fd_limit, embedded);
    let max_in_flight = match args.max_in_flight {
        Some(n) if u64::from(n) > max_conns => anyhow::bail!(
            "--max-in-flight {n} cannot fit: the descriptor limit ({fd_limit}) allows \
             {max_conns} connections at once"
        ),
        Some(n) => n,
        None => max_conns.min(u64::from(u32::MAX)) as u32,
    };
    if let Some(cap) = args.max_rate
        && cap < args.start_rate
    {
        anyhow::bail!("--max-rate {cap} is below --start-rate {}", args.start_rate);
    }
    let target = match &args.target {
        Some(url) => flags::target(url)?,
        // A placeholder: each step's namespace pair has its own server address.
        None => Target::from_addr(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
    };
    let workload = Workload::Open {
        rate: args.start_rate,
        max_in_flight,
    };
    let mut config = DriverConfig::new(target, args.mode, workload);
    config.duration = Some(args.duration);
    if let Some(threads) = args.threads {
        config.workers = threads;
    }
    let request = config.mix.first_mut();
    if let Some(path) = &args.path {
        request.path = path.clone();
    }
    for h in &args.headers {
        request.headers.push(flags::header(h)?);
    }
    if let Some(spec) = &args.source_ips {
        config.source_ips = flags::source_ips(spec)?;
    }
    config.connect_timeout = args.connect_timeout;
    config.request_timeout = args.request_timeout;
    driver::validate(&config).map_err(flags::driver_error)?;
    let setup = if embedded {
        let sysctls = args
            .sysctls
            .iter()
            .map(|s| Setting::parse("--sysctl", s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(FindLimitError::from)?;
        Setup::Namespaces { sysctls }
    } else {
        let drain_below = match args.drain_below {
            Some(n) => n,
            None => default_drain_bound(config.source_ips.len()),
        };
        Setup::Target { drain_below }
    };
    Ok(Plan {
        config,
        setup,
        search: SearchPlan {
            start_rate: args.start_rate,
            resolution: args.resolution,
            max_steps: args.max_steps,
            max_rate: args.max_rate,
        },
        thresholds: Thresholds {
            max_error_rate: args.max_error_rate,
            max_p99_us: args.max_p99.map(|d| d.as_micros() as u64),
            min_achieved: MIN_ACHIEVED,
        },
        probe: !args.no_probe,
    })
}

/// 1% of the client's ports towards one destination: few enough that a step starts with
/// nearly all of them free.
fn default_drain_bound(source_ips: usize) -> u64 {
    let ports = loadprobe::kernel::usable_ephemeral_ports().unwrap_or(0);
    u64::from(ports) * source_ips.max(1) as u64 / 100
}

/// SIGINT/SIGTERM stop the search: the step in progress winds down, its namespaces are
/// removed, and the steps done are reported (the default action would kill the process and
/// leave namespaces behind).
fn watch_signals(stop: Stop) -> anyhow::Result<()> {
    Interrupts::catch()?.on_each(move |_| {
        note!("loadprobe: stopping the search; the steps done are kept");
        stop.stop();
    })
}

/// On a terminal, the run's live view of each step, labelled with the step and its rate;
/// elsewhere a line per step on stderr.
struct LiveView {
    runtime: Option<tokio::runtime::Runtime>,
    shown: Option<tokio::task::JoinHandle<()>>,
}

impl LiveView {
    fn new() -> anyhow::Result<LiveView> {
        let runtime = if std::io::stderr().is_terminal() {
            Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .context("cannot start the live view's runtime")?,
            )
        } else {
            None
        };
        Ok(LiveView {
            runtime,
            shown: None,
        })
    }
}

impl Watch for LiveView {
    fn step_starts(&mut self, step: u32, rate: f64, config: &DriverConfig, live: Arc<Live>) {
        let label = format!("step {step} at {}/s  ", rate_name(rate));
        match &self.runtime {
            Some(runtime) => {
                let mut plan = LivePlan::of(config);
                plan.label = label;
                self.shown = Some(runtime.spawn(show_progress(live, plan)));
            }
            None => note!("loadprobe: {}", label.trim_end()),
        }
    }

    fn step_ends(&mut self, step: &Step) {
        if let (Some(runtime), Some(shown)) = (&self.runtime, self.shown.take()) {
            shown.abort();
            let _ = runtime.block_on(shown);
        }
        let result = match (step.held, &step.broke) {
            (None, _) => "interrupted".to_string(),
            (Some(true), _) => "held".to_string(),
            (Some(false), Some(broke)) => format!("broke: {}", broke.short()),
            (Some(false), None) => "broke".to_string(),
        };
        note!(
            "loadprobe: step {} at {}/s: {result}",
            step.step,
            rate_name(step.rate)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FindLimitArgs,
    }

    fn plan_of(argv: &[&str]) -> anyhow::Result<Plan> {
        let mut full = vec!["find-limit"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full)?;
        let plan = plan(&cli.args)?;
        find_limit::check(&plan)?;
        Ok(plan)
    }

    #[test]
    fn the_flags_make_the_search() {
        let plan = plan_of(&[
            "--target",
            "http://127.0.0.1:9/x",
            "--start-rate",
            "5",
            "--max-rate",
            "400",
            "--resolution",
            "5%",
            "--max-error-rate",
            "0",
            "--max-p99",
            "200ms",
            "--drain-below",
            "3",
        ])
        .unwrap();
        assert_eq!(
            plan.search,
            SearchPlan {
                start_rate: 5.0,
                resolution: 0.05,
                max_steps: 12,
                max_rate: Some(400.0)
            }
        );
        assert_eq!(plan.thresholds.max_error_rate, 0.0);
        assert_eq!(plan.thresholds.max_p99_us, Some(200_000));
        assert!(matches!(plan.setup, Setup::Target { drain_below: 3 }));
        assert_eq!(plan.config.mix.first().path, "/x");
    }

    #[test]
    fn bad_flags_are_one_clear_line() {
        for (argv, expect) in [
            (
                &["--mode", "keep-alive", "--target", "http://127.0.0.1:9/"][..],
                "keep-alive opens no new connection",
            ),
            (&["--start-rate", "0"], "not a positive rate"),
            (
                &["--start-rate", "50", "--max-rate", "10"],
                "--max-rate 10 is below --start-rate 50",
            ),
            (&["--resolution", "0%"], "not a positive percentage"),
            (
                &["--max-error-rate", "150%"],
                "not a percentage from 0 to 100",
            ),
            (&["--max-steps", "0"], "0 is not in 1..=99"),
            (&["--max-steps", "100"], "100 is not in 1..=99"),
            (&["--target", "ftp://x/"], "invalid --target"),
            (
                &[
                    "--target",
                    "http://127.0.0.1:9/",
                    "--sysctl",
                    "net.ipv4.tcp_tw_reuse=1",
                ],
                "cannot be used with",
            ),
            (&["--drain-below", "3"], "--target"),
            (
                &["--sysctl", "kernel.pid_max=10"],
                "is not a network sysctl",
            ),
            (
                &["--sysctl", "net.ipv4.tcp_tw_reuse"],
                "--sysctl expects KEY=VALUE",
            ),
            (
                &["--sysctl", "net.ipv4.no_such_thing=1"],
                "unknown sysctl net.ipv4.no_such_thing",
            ),
            (&["--max-p99", "0s"], "not a positive duration"),
        ] {
            let (err, usage) = match plan_of(argv) {
                Ok(_) => panic!("{argv:?} should be rejected"),
                Err(e) => (
                    loadprobe::error_chain::one_line(&*e),
                    e.downcast_ref::<clap::Error>().is_some(),
                ),
            };
            assert!(err.contains(expect), "{argv:?}: {err}");
            // clap's usage errors come with their usage lines; ours are one line.
            let first = err.lines().next().unwrap_or_default();
            assert!(
                usage || first == err.trim_end(),
                "{argv:?}: not one line: {err}"
            );
        }
    }
}
