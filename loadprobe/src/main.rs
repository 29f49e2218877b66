use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Load-test TCP services and see exactly how every connection ends.
#[derive(Parser)]
#[command(name = "loadprobe", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {}
}
