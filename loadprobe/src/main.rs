use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Load-test TCP services and see exactly how every connection ends.
#[derive(Parser)]
#[command(name = "loadprobe", version, about)]
struct Cli {
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
    /// Run the embedded HTTP/1.1 target server standalone.
    Serve(cli::serve::ServeArgs),
    /// Compare run records: every metric's change from the first, noise, and CI gates.
    Compare(cli::compare::CompareArgs),
    /// Merge records of one workload (several hosts, or one after another) into one record.
    Merge(cli::merge::MergeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(args) => cli::trace::main(args),
        Command::Tune(args) => cli::tune::main(args),
        Command::Run(args) => cli::run::main(*args),
        Command::Serve(args) => cli::serve::main(args),
        Command::Compare(args) => cli::compare::main(args),
        Command::Merge(args) => cli::merge::main(args),
    };
    // One line, no backtrace: the error chain says what went wrong and what is missing.
    result.unwrap_or_else(|e| {
        eprintln!("loadprobe: error: {e:#}");
        ExitCode::from(2)
    })
}
