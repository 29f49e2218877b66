//! Any bytes handed to `loadprobe compare` or `loadprobe merge` as a record: the reader must
//! answer with a record or an error, never panic; and a record it accepts must survive being
//! merged and compared (every report format) without panicking either.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loadprobe::compare::{Comparison, Gate, Run, html, markdown, parse_record, text};
use loadprobe::report::merge;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = parse_record("fuzz.json", data) else {
        return;
    };
    let _ = merge(&[record.clone(), record.clone()]);
    let gates: Vec<Gate> = ["throughput.rps < -5%", "connections.closer.server < 99%"]
        .iter()
        .filter_map(|g| g.parse().ok())
        .collect();
    let runs = vec![Run::new("a", record.clone()), Run::new("b", record)];
    if let Ok(c) = Comparison::new(runs, &gates) {
        let _ = text::render(&c, true);
        let _ = markdown::render(&c);
        let _ = html::render(&c);
    }
});
