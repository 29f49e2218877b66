//! The subcommands: argument parsing and the binary's edge (`anyhow` lives here, not below).

pub mod compare;
pub mod merge;
pub mod run;
pub mod serve;
pub mod trace;
pub mod tune;
