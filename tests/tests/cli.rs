//! The command line's faults as a user meets them, with the real binary: a closed stdout, an
//! output path that cannot be written, a repetition that fails, numbers out of range, a gate or
//! a merge that cannot mean what it says, and the exit status of an interrupted run.
//!
//! The runs here use the embedded server or a small server of the test's own on 127.0.0.1, with
//! `--no-probe`; the tests that attach the probe need root (or fail under
//! `LOADPROBE_REQUIRE_BPF=1`).

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use loadprobe_tests::{loadprobe_bin, require_root, tempdir};
use serde_json::Value;

fn golden(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name)
        .display()
        .to_string()
}

fn loadprobe(dir: &Path, args: &[&str]) -> Output {
    Command::new(loadprobe_bin())
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("loadprobe runs")
}

/// Runs `loadprobe ARGS` with its stdout a pipe whose reading end is already closed, as in
/// `loadprobe ... | true`: every write to stdout fails with EPIPE.
fn closed_stdout(dir: &Path, args: &[&str]) -> Output {
    let mut child = spawn_closed_stdout(dir, args);
    drop(child.stdout.take());
    child.wait_with_output().expect("loadprobe runs")
}

fn spawn_closed_stdout(dir: &Path, args: &[&str]) -> Child {
    let mut child = Command::new(loadprobe_bin())
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadprobe starts");
    drop(child.stdout.take());
    child
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("JSON")
}

/// A scratch folder, removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        Scratch(tempdir(&format!("cli-{tag}")))
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A short run against the embedded server that writes its record to `record`.
fn short_run(record: &str) -> Vec<&str> {
    vec![
        "run",
        "--no-probe",
        "--requests",
        "50",
        "--users",
        "2",
        "-o",
        record,
    ]
}

fn assert_no_panic(what: &str, o: &Output) {
    let err = stderr(o);
    assert!(
        !err.contains("panicked") && o.status.code() != Some(101),
        "{what}: {:?}\n{err}",
        o.status
    );
}

#[test]
fn closed_stdout_writes_the_record_and_exits_quietly() {
    let dir = Scratch::new("epipe");
    let record = dir.file("r.json");
    let o = closed_stdout(dir.path(), &short_run(&record));
    assert_no_panic("run", &o);
    assert_eq!(o.status.code(), Some(0), "run: {}", stderr(&o));
    assert!(!stderr(&o).contains("error"), "run: {}", stderr(&o));
    assert_eq!(read_json(Path::new(&record))["requests"]["total"], 50);

    let (a, b) = (golden("client-close.json"), golden("server-close.json"));
    let o = closed_stdout(dir.path(), &["compare", &a, &b]);
    assert_no_panic("compare", &o);
    assert_eq!(o.status.code(), Some(0), "compare: {}", stderr(&o));
    assert!(stderr(&o).is_empty(), "compare: {}", stderr(&o));

    // A gate that fails still decides the status when nobody reads the report.
    let o = closed_stdout(
        dir.path(),
        &["compare", &a, &b, "--fail-if", "throughput.rps > 0"],
    );
    assert_no_panic("compare --fail-if", &o);
    assert_eq!(o.status.code(), Some(1), "compare: {}", stderr(&o));

    let merged = dir.file("m.json");
    let x3 = golden("client-close-x3.json");
    let o = closed_stdout(dir.path(), &["merge", &a, &x3, "-o", &merged]);
    assert_no_panic("merge", &o);
    assert_eq!(o.status.code(), Some(0), "merge: {}", stderr(&o));
    assert!(read_json(Path::new(&merged))["merged_from"].is_array());

    let o = closed_stdout(dir.path(), &["tune", "check"]);
    assert_no_panic("tune check", &o);
    assert_eq!(o.status.code(), Some(0), "tune check: {}", stderr(&o));
    assert!(stderr(&o).is_empty(), "tune check: {}", stderr(&o));
}

/// Runs `loadprobe ARGS` with stdout and stderr one pipe nobody reads, as in
/// `loadprobe ... 2>&1 | head -1` once `head` is gone; returns the exit status.
fn closed_stdout_and_stderr(dir: &Path, args: &[&str]) -> std::process::ExitStatus {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(loadprobe_bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("dup"))
        .stderr(writer)
        .status()
        .expect("loadprobe runs")
}

#[test]
fn closed_stdout_and_stderr_lose_nothing() {
    let dir = Scratch::new("epipe-both");
    let record = dir.file("r.json");
    let status = closed_stdout_and_stderr(dir.path(), &short_run(&record));
    assert_eq!(status.code(), Some(0), "run: {status:?}");
    assert_eq!(read_json(Path::new(&record))["requests"]["total"], 50);
    let (a, b) = (golden("client-close.json"), golden("server-close.json"));
    let gate = ["compare", &a, &b, "--fail-if", "throughput.rps > 0"];
    let status = closed_stdout_and_stderr(dir.path(), &gate);
    assert_eq!(status.code(), Some(1), "compare: {status:?}");
    // An error still exits 2 when its line cannot be written.
    let status = closed_stdout_and_stderr(dir.path(), &["merge", &a, &a, "-o", &record]);
    assert_eq!(status.code(), Some(2), "merge: {status:?}");
}

#[test]
fn closed_stdout_serve_keeps_serving() {
    let dir = Scratch::new("epipe-serve");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = spawn_closed_stdout(dir.path(), &["serve", "--listen", &listen]);
    // The server answers although its "listening on" line went nowhere.
    let mut answer = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && answer.is_empty() {
        if let Ok(mut s) = std::net::TcpStream::connect(&listen) {
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let _ = s.read_to_string(&mut answer);
        } else if child.try_wait().unwrap().is_some() {
            break;
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // SAFETY: kill() with a child pid we own (it has not been reaped yet).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert_no_panic("serve", &o);
    assert!(answer.starts_with("HTTP/1.1 200"), "no answer: {answer:?}");
    assert_eq!(o.status.code(), Some(0), "serve: {}", stderr(&o));
}

#[test]
fn closed_stdout_trace_ends_quietly() {
    if !require_root("closed_stdout_trace_ends_quietly") {
        return;
    }
    let dir = Scratch::new("epipe-trace");
    for format in ["text", "jsonl"] {
        let o = closed_stdout(
            dir.path(),
            &[
                "trace",
                "--duration",
                "1",
                "--port",
                "9",
                "--format",
                format,
            ],
        );
        assert_no_panic("trace", &o);
        assert_eq!(o.status.code(), Some(0), "trace {format}: {}", stderr(&o));
        assert!(!stderr(&o).contains("error"), "trace: {}", stderr(&o));
    }
}

/// `args` must fail at once (well before its 10 s of load), in one line naming `names`.
fn assert_fails_before_load(dir: &Path, args: &[&str], names: &str) {
    let started = Instant::now();
    let o = loadprobe(dir, args);
    let took = started.elapsed();
    let err = stderr(&o);
    assert_no_panic(names, &o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(took < Duration::from_secs(5), "{args:?}: took {took:?}");
    assert!(
        err.starts_with("loadprobe: error: ") && err.contains(names),
        "{args:?}: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
}

#[test]
fn output_paths_are_checked_before_load() {
    let dir = Scratch::new("outputs");
    let run = ["run", "--no-probe", "--duration", "10s", "--users", "2"];
    for output in ["/proc/x.json", "missing/dir/r.json"] {
        let mut args = run.to_vec();
        args.extend(["-o", output]);
        assert_fails_before_load(dir.path(), &args, output);
    }
    assert_fails_before_load(
        dir.path(),
        &[
            "tune",
            "validate",
            "--set",
            "net.ipv4.tcp_tw_reuse=1",
            "--duration",
            "10s",
            "--netns-prefix",
            &format!("lpcli{}", std::process::id()),
            "--output-dir",
            "/proc/x",
        ],
        "/proc/x",
    );
    // The page and the record under one name: one would overwrite the other.
    let same = dir.file("same");
    assert_fails_before_load(
        dir.path(),
        &[
            "run",
            "--no-probe",
            "--duration",
            "10s",
            "-o",
            &same,
            "--html",
            &same,
        ],
        "same file",
    );
    // Nothing is left beside the target when the check passes and the run is refused later.
    let ok = dir.file("r.json");
    let o = loadprobe(
        dir.path(),
        &[
            "run",
            "--no-probe",
            "--duration",
            "10s",
            "--users",
            "0",
            "-o",
            &ok,
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `-o /dev/null` (and the page, and compare's and merge's outputs) writes into the device: the
/// device node stays a device. Replacing it with a plain file breaks every later reader of
/// `/dev/null` on the machine, so the test makes a node of its own (root) rather than risk the
/// real one.
#[test]
fn a_device_as_output_is_written_into_not_replaced() {
    use std::os::unix::fs::FileTypeExt;
    if !require_root("a null device of the test's own") {
        return;
    }
    let dir = Scratch::new("devnull");
    let nodes: Vec<String> = ["null-record", "null-page", "null-compare", "null-merge"]
        .iter()
        .map(|n| dir.file(n))
        .collect();
    for node in &nodes {
        let made = Command::new("mknod")
            .args(["-m", "666", node, "c", "1", "3"])
            .status()
            .expect("mknod");
        assert!(made.success(), "mknod {node}");
    }
    let record = dir.file("r.json");
    let mut run = short_run(&nodes[0]);
    run.extend(["--html", &nodes[1]]);
    let o = loadprobe(dir.path(), &run);
    assert_eq!(o.status.code(), Some(0), "run: {}", stderr(&o));
    let o = loadprobe(dir.path(), &short_run(&record));
    assert_eq!(o.status.code(), Some(0), "run: {}", stderr(&o));
    let o = loadprobe(dir.path(), &["compare", &record, &record, "-o", &nodes[2]]);
    assert_eq!(o.status.code(), Some(0), "compare: {}", stderr(&o));
    let a = golden("client-close.json");
    let o = loadprobe(dir.path(), &["merge", &record, &a, "-o", &nodes[3]]);
    assert_eq!(o.status.code(), Some(0), "merge: {}", stderr(&o));
    for node in &nodes {
        let kind = std::fs::symlink_metadata(node).unwrap().file_type();
        assert!(kind.is_char_device(), "{node} is now {kind:?}");
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), nodes.len() + 1, "left beside them: {names:?}");
}

/// `-o /dev/stdout` with stdout a file the shell appends to (`>> f`): the record is appended
/// through the descriptor, the file keeps what it held, and the text report follows it.
#[test]
fn stdout_as_output_writes_through_the_descriptor() {
    let dir = Scratch::new("devstdout");
    let file = dir.path().join("f");
    std::fs::write(&file, "before\n").unwrap();
    let out = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    let status = Command::new(loadprobe_bin())
        .args(short_run("/dev/stdout"))
        .current_dir(dir.path())
        .stdout(out)
        .stderr(Stdio::null())
        .status()
        .expect("loadprobe runs");
    assert!(status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("before\n{"), "{text}");
    assert!(
        text.contains("\"schema\": \"loadprobe.run/1\"") && text.contains("requests "),
        "{text}"
    );
    assert!(file.is_file());
}

/// An HTTP/1.1 server on 127.0.0.1 that answers `requests` requests (one per connection, then
/// it closes), closing its listener before the last answer: the next connect is refused.
fn serve_then_vanish(requests: usize) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut listener = Some(listener);
        let mut served = 0;
        while served < requests {
            let (stream, _) = listener.as_ref().unwrap().accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut head = Vec::new();
            // Preflight connections close without a request.
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line == "\r\n" => {
                        head.push(line);
                        break;
                    }
                    Ok(_) => head.push(line),
                }
            }
            if head.last().is_none_or(|l| l != "\r\n") {
                continue;
            }
            served += 1;
            if served == requests {
                listener = None;
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
        drop(listener);
    });
    (url, server)
}

#[test]
fn repeat_keeps_finished_repetitions_when_a_later_one_fails() {
    let dir = Scratch::new("repeat");
    let (url, server) = serve_then_vanish(10);
    let record = dir.file("r.json");
    let o = loadprobe(
        dir.path(),
        &[
            "run",
            "--no-probe",
            "--target",
            &url,
            "--mode",
            "server-close",
            "--requests",
            "10",
            "--users",
            "1",
            "--repeat",
            "3",
            "-o",
            &record,
        ],
    );
    server.join().unwrap();
    let err = stderr(&o);
    assert_no_panic("run --repeat", &o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("loadprobe: error: repetition 2/3") && last.contains("ECONNREFUSED"),
        "{err}"
    );
    let v = read_json(Path::new(&record));
    assert_eq!(v["requests"]["total"], 10, "{v}");
    assert_eq!(v["requests"]["ok"], 10, "{v}");
    let incomplete = &v["incomplete"];
    assert_eq!(incomplete["planned_repetitions"], 3, "{incomplete}");
    assert_eq!(incomplete["completed_repetitions"], 1, "{incomplete}");
    assert!(
        incomplete["reason"]
            .as_str()
            .is_some_and(|r| r.contains("ECONNREFUSED")),
        "{incomplete}"
    );
    // The summary of what was measured is still printed.
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("incomplete   1 of 3 repetitions ran"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn numbers_out_of_range_are_one_line_errors() {
    let dir = Scratch::new("numbers");
    let cases: &[(&[&str], &str)] = &[
        (&["trace", "--duration", "1e300"], "--duration"),
        (&["trace", "--duration", "inf"], "--duration"),
        (&["trace", "--duration=-1"], "--duration"),
        (&["trace", "--port", "0"], "--port"),
        (
            &["serve", "--body-bytes", "18446744073709551615"],
            "--body-bytes",
        ),
        (&["serve", "--body-bytes", "100000000000"], "--body-bytes"),
        (&["serve", "--latency", "18446744073709551615"], "--latency"),
        (&["serve", "--threads", "0"], "--threads"),
        (&["serve", "--threads", "1000000"], "--threads"),
        (&["run", "--threads", "1000000"], "--threads"),
        (&["run", "--threads", "0"], "--threads"),
        (&["run", "--duration", "5000000000000000000s"], "--duration"),
        (&["run", "--warmup", "5000000000000000000s"], "--warmup"),
        (&["run", "--connect-timeout", "0"], "--connect-timeout"),
        (
            &["run", "--request-timeout", "9999999h"],
            "--request-timeout",
        ),
        (&["run", "--think-time", "9999999h"], "--think-time"),
        (&["run", "--rate", "inf"], "--rate"),
        (&["run", "--rate", "0"], "--rate"),
        (
            &["run", "--rate", "100", "--max-in-flight", "0"],
            "--max-in-flight",
        ),
        (&["run", "--requests", "0"], "--requests"),
        (&["run", "--users", "0"], "--users"),
        (&["run", "--repeat", "1000000"], "--repeat"),
        (
            &["run", "--mode", "keep-alive", "--requests-per-conn", "0"],
            "--requests-per-conn",
        ),
        (
            &["tune", "validate", "--set", "a=1", "--duration", "0"],
            "--duration",
        ),
        (
            &["tune", "validate", "--set", "a=1", "--users", "0"],
            "--users",
        ),
        (
            &["tune", "check", "--mode", "client-close", "--rate=-1"],
            "--rate",
        ),
    ];
    for (args, option) in cases {
        let started = Instant::now();
        let o = loadprobe(dir.path(), args);
        let err = stderr(&o);
        assert_no_panic(&format!("{args:?}"), &o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?}: not refused at once"
        );
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.contains("error") && first.contains(option),
            "{args:?}: {err}"
        );
        // clap adds a pointer to --help after a blank line; the error itself is one line.
        let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            lines.len() == 1 || (lines.len() == 2 && lines[1].contains("--help")),
            "{args:?}: not one line: {err}"
        );
    }
}

/// Starts `loadprobe ARGS` in `dir`, waits for the stderr line containing `ready` (its signal
/// handlers are in place by then), lets it work for `then`, sends SIGINT and returns the result.
fn interrupt(dir: &Path, args: &[&str], ready: &str, then: Duration) -> Output {
    let mut child = Command::new(loadprobe_bin())
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadprobe starts");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains(ready) {
        line.clear();
        assert!(
            err.read_line(&mut line).expect("stderr") > 0,
            "{args:?} ended before {ready:?}"
        );
    }
    std::thread::sleep(then);
    // SAFETY: kill() with a child pid we own (not reaped yet).
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    child.wait_with_output().expect("loadprobe ends")
}

#[test]
fn trace_duration_takes_units() {
    if !require_root("trace_duration_takes_units") {
        return;
    }
    let dir = Scratch::new("trace-dur");
    let started = Instant::now();
    let o = loadprobe(
        dir.path(),
        &[
            "trace",
            "--duration",
            "500ms",
            "--port",
            "9",
            "--format",
            "jsonl",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // 500 ms, not 500 s; the bound leaves room for attaching the probe on a loaded machine.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "took {took:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\"summary\""), "{out}");

    // Cut short before its --duration, a trace is interrupted, as a run is.
    let o = interrupt(
        dir.path(),
        &[
            "trace",
            "--duration",
            "30s",
            "--port",
            "9",
            "--format",
            "jsonl",
        ],
        "tracing TCP connections",
        Duration::ZERO,
    );
    assert_eq!(o.status.code(), Some(130));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"summary\""));
}

#[test]
fn a_gate_on_an_unknown_error_class_is_refused() {
    let dir = Scratch::new("gate");
    let (a, b) = (golden("client-close.json"), golden("server-close.json"));
    let o = loadprobe(
        dir.path(),
        &[
            "compare",
            &a,
            &b,
            "--fail-if",
            "requests.errors.EADDRNOTAVIAL > 0",
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("EADDRNOTAVIAL")
            && err.contains("EADDRNOTAVAIL")
            && err.contains("ECONNREFUSED")
            && err.contains("timeout"),
        "{err}"
    );
    // Known classes, absent from both records (no error of that kind), are fine gates.
    for gate in [
        "requests.errors.EADDRNOTAVAIL > 0",
        "requests.errors.timeout > 0",
        "requests.errors.errno_200 > 0",
    ] {
        let o = loadprobe(dir.path(), &["compare", &a, &b, "--fail-if", gate]);
        assert_eq!(o.status.code(), Some(0), "{gate}: {}", stderr(&o));
    }
}

#[test]
fn merge_refuses_the_same_run_twice() {
    let dir = Scratch::new("merge-twice");
    let a = golden("client-close.json");
    let copy = dir.file("copy.json");
    std::fs::copy(&a, &copy).unwrap();
    let out = dir.file("m.json");
    for second in [&a, &copy] {
        let o = loadprobe(dir.path(), &["merge", &a, second, "-o", &out]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("same run") && err.contains(&a) && err.contains(second.as_str()),
            "{err}"
        );
        assert!(!Path::new(&out).exists());
    }
    // A merged record holds its inputs: merging it with one of them counts that one twice.
    let x3 = golden("client-close-x3.json");
    let o = loadprobe(dir.path(), &["merge", &a, &x3, "-o", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = loadprobe(dir.path(), &["merge", &out, &a, "-o", &dir.file("m2.json")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("same run"), "{}", stderr(&o));

    // Two fresh runs are different runs, whatever their figures.
    let (r1, r2) = (dir.file("r1.json"), dir.file("r2.json"));
    for r in [&r1, &r2] {
        let o = loadprobe(dir.path(), &short_run(r));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = loadprobe(dir.path(), &["merge", &r1, &r2, "-o", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_json(Path::new(&out))["requests"]["total"], 100);
    let o = loadprobe(dir.path(), &["merge", &r1, &r1, "-o", &out]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Ctrl-C while waiting for `--start-at`: the run ends at once with its (empty) record, which
/// does not claim a start it never reached; a start more than a day ahead is refused at once.
#[test]
fn a_run_waiting_for_its_start_can_be_interrupted() {
    let dir = Scratch::new("startat");
    let record = dir.file("r.json");
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let at = format!("{}", now_ms() / 1000 + 60);
    let args = ["run", "--no-probe", "--users", "2", "--duration", "1s"];
    let started = Instant::now();
    let o = interrupt(
        dir.path(),
        &[&args[..], &["--start-at", &at, "-o", &record]].concat(),
        "probe off",
        Duration::from_millis(300),
    );
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(10));
    let v = read_json(Path::new(&record));
    assert_eq!(v["interrupted"], true);
    assert_eq!(v["requests"]["total"], 0);
    assert!(v["started_at_unix_ms"].as_u64().unwrap() <= now_ms(), "{v}");
    let far = format!("{}", now_ms() / 1000 + 2 * 86_400);
    assert_fails_before_load(
        dir.path(),
        &[&args[..], &["--start-at", &far]].concat(),
        "more than a day ahead",
    );
}

/// `merge -o -`, as `run -o -`: the merged record is one line on stdout, the report on stderr;
/// no file called `-`.
#[test]
fn merge_to_standard_output() {
    let dir = Scratch::new("merge-stdout");
    let (a, b) = (golden("client-close.json"), dir.file("b.json"));
    assert!(loadprobe(dir.path(), &short_run(&b)).status.success());
    let o = loadprobe(dir.path(), &["merge", &a, &b, "-o", "-"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    let merged: Value = serde_json::from_str(&text).expect("one JSON line");
    assert_eq!(merged["merged_from"].as_array().map(Vec::len), Some(2));
    assert!(stderr(&o).contains("merged       2 records into standard output"));
    assert!(!dir.path().join("-").exists());
}

#[test]
fn an_interrupted_run_exits_130_with_its_record() {
    let dir = Scratch::new("sigint");
    let record = dir.file("r.json");
    // "probe off" comes as the load starts.
    let o = interrupt(
        dir.path(),
        &[
            "run",
            "--no-probe",
            "--duration",
            "30s",
            "--users",
            "2",
            "-o",
            &record,
        ],
        "probe off",
        Duration::from_millis(500),
    );
    assert_eq!(o.status.code(), Some(130));
    let v = read_json(Path::new(&record));
    assert_eq!(v["interrupted"], true);
    assert!(v["requests"]["total"].as_u64().unwrap() > 0, "{v}");
}
