//! `loadprobe generate man|completions DIR` (hidden): man pages and shell completions made from
//! the same clap definitions as `--help`, so the installed documentation cannot drift from the
//! binary. `cargo xtask install` runs it and puts the files where man and the shells look.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use clap_complete::Shell;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// What to write.
    what: What,
    /// Folder to write into (created if missing).
    dir: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum What {
    /// One man page per command and subcommand (`loadprobe.1`, `loadprobe-run.1`, ...).
    Man,
    /// Completions for bash (`loadprobe.bash`), zsh (`_loadprobe`) and fish (`loadprobe.fish`).
    Completions,
}

/// The shells completions are written for.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

pub fn main(args: GenerateArgs, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    match args.what {
        What::Man => clap_mangen::generate_to(command, dir)
            .with_context(|| format!("cannot write man pages into {}", dir.display()))?,
        What::Completions => {
            let name = command.get_name().to_string();
            for shell in SHELLS {
                clap_complete::generate_to(shell, &mut command, &name, dir).with_context(|| {
                    format!("cannot write {shell} completions into {}", dir.display())
                })?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
