//! The logger behind the library's `log::warn!` and friends: one line each on stderr, in the
//! same shape as the rest of loadprobe's messages (`loadprobe: warning: ...`).
//!
//! env_logger because it is the `log` ecosystem's own, well-kept stderr logger and reads
//! `RUST_LOG` as users of other Rust tools expect; its default features (colours, timestamps,
//! regex filters) are left out, since a line here must read like loadprobe's other messages.

use std::io::Write;

use log::{Level, LevelFilter};

/// Installs the logger. `verbose` is the count of `-v`: none shows warnings and errors, `-v`
/// adds information, `-vv` debugging, `-vvv` everything. `RUST_LOG`, when set, is applied on top
/// (`RUST_LOG=off` silences it, `RUST_LOG=aya=debug` picks one crate).
pub fn init(verbose: u8) {
    let level = match verbose {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(filters) = std::env::var("RUST_LOG") {
        builder.parse_filters(&filters);
    }
    builder
        .format(|out, record| {
            let level = match record.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            // Debugging lines come from many crates (aya, hyper): say which.
            if record.level() >= Level::Debug {
                writeln!(
                    out,
                    "loadprobe: {level}: {}: {}",
                    record.target(),
                    record.args()
                )
            } else {
                writeln!(out, "loadprobe: {level}: {}", record.args())
            }
        })
        // A second init (tests) keeps the first logger; nothing to report.
        .try_init()
        .ok();
}
