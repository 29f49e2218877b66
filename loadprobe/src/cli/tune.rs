//! `loadprobe tune`: check what the kernel's churn-related settings really do and what a workload
//! will do to them (`check`), and measure whether a change helps (`validate`, the A/B in network
//! namespaces).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use loadprobe::driver::{self, DriverConfig, Stop, Target, limits};
use loadprobe::model::{Mode, Workload};

use loadprobe::tune::validate::{self, Plan, Setting, ValidateError};
use loadprobe::tune::verdict::Verdict;
use loadprobe::tune::{check, predict, text};

use super::exit;
use super::out::{Stdout, note};
use super::parse;
use super::signals::Interrupts;

#[derive(Args, Debug)]
pub struct TuneArgs {
    #[command(subcommand)]
    command: TuneCommand,
}

#[derive(Subcommand, Debug)]
enum TuneCommand {
    /// Explain this network namespace's TIME_WAIT and port sysctls, flag folklore and risks,
    /// and with --mode and --rate predict TIME_WAIT and port exhaustion.
    Check(CheckArgs),
    /// Measure a sysctl change instead of guessing: the same workload against two fresh
    /// client/server namespace pairs joined by veth, baseline and tuned, with the probe; then
    /// per-metric deltas and a verdict (improved, no effect, regressed). The host's sysctls are
    /// untouched unless --apply.
    Validate(ValidateArgs),
}

#[derive(Args, Debug)]
struct ValidateArgs {
    /// A sysctl for the tuned run, KEY=VALUE (repeatable), written in the namespace where it
    /// acts: client (tcp_tw_reuse, tcp_tw_reuse_delay, ip_local_port_range,
    /// ip_local_reserved_ports, tcp_timestamps), server (somaxconn, tcp_max_syn_backlog) or both
    /// (tcp_max_tw_buckets, tcp_fin_timeout, any other net.* sysctl).
    #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
    set: Vec<String>,
    /// A sysctl for both runs (repeatable), placed like --set: the setup the change is measured
    /// against. The namespaces start from kernel defaults, not from the host's values.
    #[arg(long = "base", value_name = "KEY=VALUE")]
    base: Vec<String>,
    /// How connections end, as in `loadprobe run --mode`.
    #[arg(long, value_enum, default_value_t = Mode::ClientClose)]
    mode: Mode,
    /// Open model: start this many requests per second.
    #[arg(long, value_name = "R", value_parser = parse::rate, conflicts_with = "users")]
    rate: Option<f64>,
    /// Closed model: this many concurrent users [default: 64 without --rate].
    #[arg(long, value_name = "N")]
    users: Option<u32>,
    /// How long each run measures, e.g. 5s, 1m.
    #[arg(long, value_name = "DUR", value_parser = parse::positive_duration, default_value = "10s")]
    duration: Duration,
    /// Baseline/tuned pairs to run, alternating, each in fresh namespaces.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Write baseline.json and tuned.json (run records, for `loadprobe compare`) and
    /// validate.json (verdict, reason, per-metric deltas) here.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// After an `improved` verdict, write the --set values to this host's network namespace
    /// and print the old values and a rollback command.
    #[arg(long)]
    apply: bool,
    /// Namespace names: <NAME>-a-c, <NAME>-a-s (baseline), <NAME>-b-c, <NAME>-b-s (tuned).
    #[arg(long, value_name = "NAME", default_value = validate::DEFAULT_PREFIX)]
    netns_prefix: String,
    /// text, or json (validate.json on stdout).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// How connections end, as in `loadprobe run --mode` (needs --rate).
    #[arg(long, value_enum, requires = "rate")]
    mode: Option<Mode>,
    /// Requests per second, as in `loadprobe run --rate`; each is a new connection except in
    /// keep-alive mode (needs --mode).
    #[arg(long, value_name = "R", requires = "mode", value_parser = parse::rate)]
    rate: Option<f64>,
    /// Where the load would go (http://HOST[:PORT]/): tcp_tw_reuse=2 helps only for loopback.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Sections for reading, at most 100 columns wide.
    Text,
    /// One stable JSON object.
    Json,
}

pub fn main(args: TuneArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TuneCommand::Check(args) => check_main(args),
        TuneCommand::Validate(args) => validate_main(args),
    }
}

/// Default closed-model concurrency, as `loadprobe run`.
const DEFAULT_USERS: u32 = 64;

fn validate_main(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let parse = |flag: &str, list: &[String]| -> Result<Vec<Setting>, ValidateError> {
        list.iter().map(|s| Setting::parse(flag, s)).collect()
    };
    let plan = Plan {
        base: parse("--base", &args.base)?,
        set: parse("--set", &args.set)?,
        config: workload(&args)?,
        repeat: args.repeat,
        prefix: args.netns_prefix.clone(),
    };
    // Checked here too (validate checks them again), so that errors name the flags.
    validate::settings::check_all("--base", &plan.base)?;
    validate::settings::check_all("--set", &plan.set)?;
    // Before any namespace or load: a folder that cannot take the results must not cost a run.
    let outputs = args
        .output_dir
        .as_deref()
        .map(|dir| validate::Outputs::create(dir, args.repeat).context("--output-dir"))
        .transpose()?;
    let stop = Stop::default();
    watch_signals(stop.clone())?;
    let outcome = validate::validate(&plan, &stop, &|line| note!("loadprobe: {line}"));
    let mut outcome = match outcome {
        Err(ValidateError::Interrupted) => {
            note!("loadprobe: {}", ValidateError::Interrupted);
            return Ok(ExitCode::from(exit::INTERRUPTED));
        }
        other => other?,
    };
    let mut code = ExitCode::SUCCESS;
    let mut notes = Vec::new();
    if args.apply {
        if outcome.verdict == Verdict::Improved {
            let applied = validate::apply::apply(&plan.set)?;
            for (key, old, new) in &applied.changes {
                notes.push(format!("applied: {key} = {new} (was {old})"));
            }
            notes.push(format!("rollback: {}", applied.rollback));
            outcome.applied = Some(applied);
        } else {
            notes.push(format!(
                "not applied: --apply needs the verdict improved, this one is {}",
                outcome.verdict.as_str()
            ));
            code = ExitCode::from(exit::CHECK_FAILED);
        }
    }
    let written = match outputs {
        Some(outputs) => outputs.write(&outcome)?,
        None => Vec::new(),
    };
    let mut out = Stdout::new();
    match args.format {
        Format::Text => {
            out.write_all(validate::text::render(&outcome).as_bytes())?;
            for note in notes {
                writeln!(out, "{note}")?;
            }
            if !written.is_empty() {
                writeln!(out, "wrote {}", written.join(" "))?;
            }
        }
        Format::Json => {
            writeln!(out, "{}", serde_json::to_string_pretty(&outcome)?)?;
            for note in notes {
                note!("loadprobe: {note}");
            }
        }
    }
    out.flush()?;
    Ok(code)
}

/// The workload both runs get (its target is set per topology).
fn workload(args: &ValidateArgs) -> anyhow::Result<DriverConfig> {
    let fd_limit = limits::raise_nofile_limit().context("cannot raise RLIMIT_NOFILE")?;
    let max_conns = limits::max_connections(fd_limit, true);
    let workload = match args.rate {
        Some(rate) => Workload::Open {
            rate,
            max_in_flight: max_conns.min(u64::from(u32::MAX)) as u32,
        },
        None => {
            let users = args.users.unwrap_or(DEFAULT_USERS);
            if users == 0 || u64::from(users) > max_conns {
                anyhow::bail!("--users must be between 1 and {max_conns} (descriptor limit)");
            }
            Workload::Closed {
                users,
                think_time: Duration::ZERO,
            }
        }
    };
    // The target is a placeholder: each topology has its own server address.
    let placeholder = Target::from_addr(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut config = DriverConfig::new(placeholder, args.mode, workload);
    config.duration = Some(args.duration);
    driver::validate(&config).map_err(super::flags::driver_error)?;
    Ok(config)
}

/// SIGINT/SIGTERM stop the validation: the run in progress winds down and the namespaces are
/// removed before exiting (the default action would kill the process and leave them behind).
fn watch_signals(stop: Stop) -> anyhow::Result<()> {
    Interrupts::catch()?.on_each(move |_| {
        note!("loadprobe: stopping; removing the network namespaces");
        stop.stop();
    })
}

fn check_main(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let target = match &args.target {
        Some(url) => Some(super::flags::target(url)?.addr.ip()),
        None => None,
    };
    let workload = match (args.mode, args.rate) {
        (Some(mode), Some(rate)) => Some(predict::Workload { mode, rate, target }),
        _ => None,
    };
    let input = check::Input::read()?;
    let report = check::analyse(&input, workload.as_ref());
    let mut out = Stdout::new();
    match args.format {
        Format::Text => out.write_all(text::render(&report).as_bytes())?,
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
