//! loadprobe: a load generator that proves, with eBPF, how every TCP connection it makes ends:
//! who closed it, and how long its TIME_WAIT socket lived.

// Dependencies of the binary alone (main.rs and cli/): a package has one list for its library
// and its binary, and `unused_crate_dependencies` would flag these here.
use {
    anyhow as _, clap as _, clap_complete as _, clap_mangen as _, env_logger as _, humantime as _,
    indicatif as _, signal_hook as _,
};

pub mod charts;
pub mod compare;
pub mod diag;
pub mod driver;
pub mod error_chain;
pub mod find_limit;
pub mod format;
pub mod kernel;
pub mod metrics;
pub mod model;
pub mod page;
pub mod privileges;
pub mod probe;
pub mod report;
pub mod run;
pub mod run_report;
pub mod server;
pub mod tls_material;
pub mod tune;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
