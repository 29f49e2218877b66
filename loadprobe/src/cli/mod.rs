//! The subcommands: argument parsing and the binary's edge (`anyhow` lives here, not below).

pub mod trace;
