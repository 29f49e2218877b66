//! `loadprobe tune`: check what the kernel's churn-related settings really do and what a workload
//! will do to them. (`tune validate`, the measured A/B in namespaces, goes beside `check`.)

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use loadprobe::driver::{Mode, Target};
use loadprobe::tune::{check, text};

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
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// How connections end, as in `loadprobe run --mode` (needs --rate).
    #[arg(long, value_enum, requires = "rate")]
    mode: Option<ModeArg>,
    /// Requests per second, as in `loadprobe run --rate`; each is a new connection except in
    /// keep-alive mode (needs --mode).
    #[arg(long, value_name = "R", requires = "mode", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Where the load would go (http://HOST[:PORT]/): tcp_tw_reuse=2 helps only for loopback.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    /// The client closes first: TIME_WAIT on the client.
    ClientClose,
    /// The server closes first: TIME_WAIT on the server.
    ServerClose,
    /// Connections are reused: next to no TIME_WAIT.
    KeepAlive,
    /// SO_LINGER 0 abort: no TIME_WAIT anywhere.
    Reset,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::ClientClose => Mode::ClientClose,
            ModeArg::ServerClose => Mode::ServerClose,
            ModeArg::KeepAlive => Mode::KeepAlive,
            ModeArg::Reset => Mode::Reset,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Sections for reading, at most 100 columns wide.
    Text,
    /// One stable JSON object.
    Json,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a positive rate")),
    }
}

pub fn main(args: TuneArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TuneCommand::Check(args) => check_main(args),
    }
}

fn check_main(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let target = match &args.target {
        Some(url) => Some(Target::parse(url)?.addr.ip()),
        None => None,
    };
    let workload = match (args.mode, args.rate) {
        (Some(mode), Some(rate)) => Some(check::Workload {
            mode: mode.into(),
            rate,
            target,
        }),
        _ => None,
    };
    let input = check::Input::read()?;
    let report = check::analyse(&input, workload.as_ref());
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Text => out.write_all(text::render(&report).as_bytes())?,
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
    }
    Ok(ExitCode::SUCCESS)
}
