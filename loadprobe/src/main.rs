// The binary sees every dependency of the library too; the library's own lint covers them.
#![allow(unused_crate_dependencies)]

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod cli;

use cli::out::note;
use loadprobe::error_chain::one_line;

/// Load-test TCP services and see exactly how every connection ends.
#[derive(Parser)]
#[command(name = "loadprobe", version, about)]
struct Cli {
    /// Show more of what happens: -v information, -vv debugging (RUST_LOG filters too).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trace TCP connections: who closed each one, and how long its TIME_WAIT lasted.
    Trace(cli::trace::TraceArgs),
    /// Check what the kernel's TIME_WAIT and port settings really do, and what a workload needs.
    Tune(cli::tune::TuneArgs),
    /// Apply load with fresh connections per task and report how they ended.
    Run(Box<cli::run::RunArgs>),
    /// Raise the new-connection rate step by step to the breaking point, and say what broke.
    FindLimit(cli::find_limit::FindLimitArgs),
    /// Run the embedded HTTP/1.1 target server standalone.
    Serve(cli::serve::ServeArgs),
    /// Compare run records: every metric's change from the first, noise, and CI gates.
    Compare(cli::compare::CompareArgs),
    /// Merge records of one workload (several hosts, or one after another) into one record.
    Merge(cli::merge::MergeArgs),
    /// Report one recorded run: the text `run` prints, Markdown, or an HTML page with charts.
    Report(cli::report::ReportArgs),
    /// Check what `run` and `trace` need on this kernel: one line each, with the fix.
    Doctor(cli::doctor::DoctorArgs),
    /// Write man pages or shell completions (for `cargo xtask install`).
    #[command(hide = true)]
    Generate(cli::generate::GenerateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::logger::init(cli.verbose);
    let result = match cli.command {
        Command::Trace(args) => cli::trace::main(args),
        Command::Tune(args) => cli::tune::main(args),
        Command::Run(args) => cli::run::main(*args),
        Command::FindLimit(args) => cli::find_limit::main(args),
        Command::Serve(args) => cli::serve::main(args),
        Command::Compare(args) => cli::compare::main(args),
        Command::Merge(args) => cli::merge::main(args),
        Command::Report(args) => cli::report::main(args),
        Command::Doctor(args) => cli::doctor::main(args),
        Command::Generate(args) => cli::generate::main(args, Cli::command()),
    };
    // One line, no backtrace: the error chain says what went wrong and what is missing.
    result.unwrap_or_else(|e| {
        note!("loadprobe: error: {}", one_line(&*e));
        ExitCode::from(cli::exit::ERROR)
    })
}
