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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(args) => cli::trace::main(args),
    };
    // One line, no backtrace: the error chain says what went wrong and what is missing.
    result.unwrap_or_else(|e| {
        eprintln!("loadprobe: error: {e:#}");
        ExitCode::from(2)
    })
}
