//! `loadprobe trace --format jsonl` writing into a pipe, as in `trace --format jsonl | head -1`:
//! each record reaches the reader as the trace learns of it, and a reader that goes away ends
//! the trace at the next record.
//!
//! Needs root (or fails under `LOADPROBE_REQUIRE_BPF=1`) and the loadprobe binary of the same
//! cargo profile.

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use loadprobe_tests::{Netns, Side, V4, linger0_abort, loadprobe_bin, require_root};

#[test]
fn a_pipe_gets_each_record_at_once_and_a_closed_one_ends_the_trace() {
    if !require_root("trace --format jsonl into a pipe") {
        return;
    }
    let netns = Netns::for_test("jsonl-pipe");
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .arg(loadprobe_bin())
        .args(["trace", "--format", "jsonl", "--port", "8160"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadprobe");
    let stderr = BufReader::new(child.stderr.take().expect("piped"));
    let (said_tx, said) = mpsc::channel();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("tracing TCP connections") {
                let _ = said_tx.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let started = said.recv_timeout(Duration::from_secs(30)).is_ok();
    let kill = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    if !started {
        kill(&mut child);
        panic!("trace did not start:\n{}", stderr.join().unwrap());
    }

    // One connection reset (no timewait socket to wait for): its record is one short line, far
    // below any buffer's size.
    let made = linger0_abort(&netns, V4, 8160, Side::Client);
    let (line_tx, line_rx) = mpsc::channel();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = line_tx.send(line);
        // Then the reader goes away, as `head -1` does.
    });
    let Ok(line) = line_rx.recv_timeout(Duration::from_secs(3)) else {
        kill(&mut child);
        panic!("no record within 3 s of the connection");
    };
    let record: serde_json::Value = serde_json::from_str(&line).expect("a JSON record");
    let conn = made
        .iter()
        .find(|c| record["client"] == c.client.to_string())
        .unwrap_or_else(|| panic!("{record} is none of {made:?}"));
    assert_eq!(record["closer"], conn.expected);

    // The next record finds the pipe closed, and the trace ends.
    std::thread::sleep(Duration::from_millis(100));
    linger0_abort(&netns, V4, 8160, Side::Client);
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            kill(&mut child);
            panic!("trace still running 3 s after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{status}: {stderr}");
}
