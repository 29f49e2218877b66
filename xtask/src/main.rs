//! Developer tasks for loadprobe: `cargo xtask setup|test|run|lint|bench|soak|install|uninstall`.
//!
//! `setup` provisions everything the build and the tests need (nightly rust-src, a bpf-linker
//! linked against nightly's own libLLVM, a few Debian packages). It is idempotent and
//! takes seconds when the machine is already provisioned; `test` and `run` call it first.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

mod bench;
mod install;
mod layers;
mod soak;

/// The bpf-linker release line that matches aya 0.14 and nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.13";

/// Debian packages the tests and benchmarks use: `ip`/`ss` (namespaces), nginx (a third-party
/// server to load), `sysctl`/`pgrep`, chromium (renders `compare --format html` headless in the
/// tests), `setcap` (the doctor test gives a copy of the binary the capabilities it suggests). Each entry is satisfied by any one of its names; the first name with an installation
/// candidate is installed. (On bookworm, `nginx` carries the binary and `nginx-light` only adds a
/// module on top of it.)
const APT_PACKAGES: &[&[&str]] = &[
    &["iproute2"],
    &["nginx", "nginx-light"],
    &["procps"],
    &["chromium"],
    &["libcap2-bin"],
    &["tcpdump"],
    // A real Prometheus server scrapes `trace --metrics` in the tests.
    &["prometheus"],
    // The peers of `bench --floor`: what a person attaches instead of the probe.
    &["bpftrace"],
];

#[derive(Parser)]
#[command(name = "cargo xtask", about = "loadprobe's developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Provision this machine (idempotent): rust-src, bpf-linker, apt packages.
    Setup,
    /// Setup, build loadprobe, then `cargo test --workspace` (extra arguments go to cargo test).
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build loadprobe in release mode, then run it with ARGS.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Formatting check and clippy (host crates and the eBPF crate), warnings as errors.
    Lint,
    /// Provision, then loadprobe's throughput against wrk, oha and a reference epoll loop on a
    /// private one-worker nginx, plus peak RSS; prints a table of medians and ratios.
    Bench(bench::BenchArgs),
    /// `loadprobe trace --all-netns --metrics` under steady churn for a long time (30 min by
    /// default): its RSS at minute 1 and at the end, lost events, connections seen; a verdict
    /// against growth under 5 % and no lost event. Not part of `test`.
    Soak(soak::SoakArgs),
    /// Build the release binary and install it with its man pages and shell completions.
    Install(install::PrefixArgs),
    /// Remove exactly what `install` put under the prefix.
    Uninstall(install::PrefixArgs),
}

fn main() -> ExitCode {
    // One line on failure, no backtrace: the failing command says what went wrong above it.
    main_inner().unwrap_or_else(|e| {
        eprintln!("xtask: error: {e:#}");
        ExitCode::FAILURE
    })
}

fn main_inner() -> Result<ExitCode> {
    // No chdir: `run` keeps the caller's directory for loadprobe's relative paths, and cargo
    // finds the workspace from anywhere inside it.
    let root = repo_root();
    match Cli::parse().task {
        Task::Setup => setup().map(|()| ExitCode::SUCCESS),
        Task::Test { args } => {
            setup()?;
            test(&root, &args)
        }
        Task::Run { args } => {
            setup()?;
            run(&root, &args)
        }
        Task::Lint => lint(&root),
        Task::Bench(args) => bench::bench(&root, args),
        Task::Soak(args) => soak::soak(&root, args),
        Task::Install(args) => install::install(&root, &args).map(|()| ExitCode::SUCCESS),
        Task::Uninstall(args) => install::uninstall(&args).map(|()| ExitCode::SUCCESS),
    }
}

/// The workspace root: xtask/ lives directly under it.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

fn setup() -> Result<()> {
    null_device_is_sane()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_cargo_fuzz()?;
    let root_user = is_root();
    ensure_apt_packages(root_user)?;
    ensure_kubernetes_validate()?;
    Ok(())
}

/// cargo runs `rustc -` with its stdin from /dev/null to learn about a target; when /dev/null
/// has been replaced by a plain file (a tool that renamed its output over it), rustc compiles
/// whatever that file holds and the build fails with errors about "<anon>". Said plainly here.
fn null_device_is_sane() -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata("/dev/null").context("cannot inspect /dev/null")?;
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    if meta.file_type().is_char_device() && (major, minor) == (1, 3) {
        return Ok(());
    }
    anyhow::bail!(
        "/dev/null is not the null device ({:?}, {major}:{minor}); builds read it as source. \
         Restore it as root: rm -f /dev/null && mknod -m 666 /dev/null c 1 3",
        meta.file_type()
    )
}

/// `kubernetes-validate` (PyPI) checks deploy/kubernetes against the Kubernetes schemas, which
/// its package ships: the check needs no cluster and no network.
fn ensure_kubernetes_validate() -> Result<()> {
    if runs(Command::new("kubernetes-validate").arg("--version")) {
        println!("setup: kubernetes-validate: present");
        return Ok(());
    }
    println!("setup: kubernetes-validate: installing");
    status(Command::new("python3").args(["-m", "pip", "install", "-q", "kubernetes-validate"]))
}

/// Whether the command starts and exits 0 (its output thrown away).
fn runs(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cargo fuzz` (crates.io) runs the record reader's fuzz target in `cargo xtask test`.
fn ensure_cargo_fuzz() -> Result<()> {
    if runs(Command::new("cargo").args(["fuzz", "--version"])) {
        println!("setup: cargo-fuzz: present");
        return Ok(());
    }
    println!("setup: cargo-fuzz: installing");
    status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// The eBPF crate is built with `-Z build-std=core`, which needs nightly's rust-src.
fn ensure_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("nightly toolchain not usable (rustup component list --toolchain nightly)")?;
    if installed.lines().any(|l| l.trim() == "rust-src") {
        println!("setup: rust-src (nightly): present");
        return Ok(());
    }
    println!("setup: rust-src (nightly): installing");
    status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// bpf-linker must use the same LLVM as nightly's rustc, so it is linked against the very
/// libLLVM shared library shipped with the nightly toolchain.
fn ensure_bpf_linker() -> Result<()> {
    if let Some(version) = bpf_linker_version() {
        if version.starts_with(BPF_LINKER_VERSION) {
            println!("setup: bpf-linker: {version} present");
            return Ok(());
        }
        println!("setup: bpf-linker: found {version}, need {BPF_LINKER_VERSION}");
    }
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm_major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("no `LLVM version:` line in `rustc +nightly -vV`")?
        .to_owned();
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let libdir = Path::new(sysroot.trim()).join("lib");
    let libllvm = std::fs::read_dir(&libdir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", libdir.display()))?;
    // bpf-linker's build looks for `$LLVM_PREFIX/lib/libLLVM.so`; the binary it produces keeps
    // `$LLVM_PREFIX/lib` as its run path and needs the versioned name there.
    // Beside the installed binary (not under target/, which `cargo clean` empties): the linker
    // must find this folder for as long as it is installed.
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let prefix = cargo_home.join(format!("loadprobe-llvm-{llvm_major}"));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    let versioned = libllvm.file_name().expect("a file name");
    for name in [OsStr::new("libLLVM.so"), versioned] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("symlink {}", link.display()))?;
    }
    let feature = format!("llvm-{llvm_major}");
    println!(
        "setup: bpf-linker: installing {BPF_LINKER_VERSION} with {feature} against {}",
        libllvm.display()
    );
    status(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version"])
            .arg(format!("^{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features", &feature])
            .env("LLVM_PREFIX", &prefix),
    )
}

/// `bpf-linker --version`, run outside cargo's environment (no inherited library paths), or
/// None when it is missing or does not start (for instance, its libLLVM link is gone).
fn bpf_linker_version() -> Option<String> {
    let mut cmd = Command::new("bpf-linker");
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        if key_str.starts_with("CARGO")
            || key_str.starts_with("RUSTUP")
            || key_str == "LD_LIBRARY_PATH"
        {
            cmd.env_remove(&key);
        }
    }
    let out = cmd.output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "bpf-linker 0.13.0"
    text.split_whitespace().nth(1).map(str::to_owned)
}

fn ensure_apt_packages(root_user: bool) -> Result<()> {
    let mut missing = Vec::new();
    for alternatives in APT_PACKAGES {
        match alternatives.iter().find(|p| dpkg_installed(p)) {
            Some(p) => println!("setup: apt {p}: installed"),
            None => missing.push(*alternatives),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|a| a[0]).collect();
    if !root_user {
        println!(
            "setup: apt {}: missing, skipped (not root)",
            names.join(", ")
        );
        return Ok(());
    }
    println!(
        "setup: apt {}: missing, running apt-get update",
        names.join(", ")
    );
    status(Command::new("apt-get").args(["update", "-q"]))?;
    let mut install = Vec::new();
    for alternatives in missing {
        let pick = alternatives
            .iter()
            .find(|p| apt_has_candidate(p))
            .with_context(|| format!("apt offers none of {alternatives:?}"))?;
        install.push(*pick);
    }
    println!("setup: apt: installing {}", install.join(" "));
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&install)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b" installed"))
}

fn apt_has_candidate(package: &str) -> bool {
    output(Command::new("apt-cache").args(["policy", package])).is_ok_and(|out| {
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("Candidate:"))
            .any(|c| c.trim() != "(none)")
    })
}

/// Builds loadprobe in the profile the tests use (they run its binary), then runs the tests.
fn test(root: &Path, args: &[String]) -> Result<ExitCode> {
    // Only cargo's own options (before `--`) choose the profile.
    let cargo_args = args.split(|a| a == "--").next().unwrap_or_default();
    let mut build = Command::new("cargo");
    build.args(["build", "-p", "loadprobe"]);
    for (i, arg) in cargo_args.iter().enumerate() {
        if arg == "--release" || arg == "-r" || arg.starts_with("--profile=") {
            build.arg(arg);
        } else if arg == "--profile" {
            build.args(cargo_args.get(i..i + 2).unwrap_or_default());
        }
    }
    status(&mut build)?;
    let mut test = Command::new("cargo");
    test.arg("test");
    // The whole workspace (and the fuzz run) unless packages are named; the eBPF crate only
    // builds for BPF.
    let whole = !cargo_args
        .iter()
        .any(|a| a.starts_with("-p") || a.starts_with("--package"));
    if whole {
        test.args(["--workspace", "--exclude", "loadprobe-ebpf"]);
    }
    let code = test
        .args(args)
        .status()
        .context("running cargo test")?
        .code()
        .unwrap_or(1);
    // A test that wrote over /dev/null would break every later build on the machine.
    null_device_is_sane().context("after the tests")?;
    if code != 0 || !whole {
        return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
    }
    fuzz(root)
}

/// How long `cargo xtask test` fuzzes the record reader; `LOADPROBE_FUZZ_SECS` changes it.
const FUZZ_SECS: u32 = 30;

/// A bounded run of the record reader's fuzz target (bad record files must never panic).
fn fuzz(root: &Path) -> Result<ExitCode> {
    let secs = std::env::var("LOADPROBE_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(FUZZ_SECS);
    if secs == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    println!("xtask: fuzzing the record reader for {secs} s");
    let code = Command::new("cargo")
        .current_dir(root.join("fuzz"))
        .args(["+nightly", "fuzz", "run", "record_reader", "--"])
        .arg(format!("-max_total_time={secs}"))
        .status()
        .context("running cargo fuzz")?
        .code()
        .unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Builds the release binary and replaces this process with it.
fn run(root: &Path, args: &[String]) -> Result<ExitCode> {
    status(Command::new("cargo").args(["build", "--release", "-p", "loadprobe"]))?;
    let bin = target_dir(root)?.join("release/loadprobe");
    let err = Command::new(&bin).args(args).exec();
    bail!("cannot run {}: {err}", bin.display())
}

/// Cargo's target folder. Like cargo: a relative CARGO_TARGET_DIR is taken from the current
/// directory.
fn target_dir(root: &Path) -> Result<PathBuf> {
    Ok(match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::env::current_dir()?.join(dir),
        None => root.join("target"),
    })
}

/// Runs every check (all of them, even after a failure) and fails if any failed.
fn lint(root: &Path) -> Result<ExitCode> {
    let checks: [&[&str]; 3] = [
        &["fmt", "--all", "--check"],
        &[
            "clippy",
            "--workspace",
            "--exclude",
            "loadprobe-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        // The eBPF crate only builds for the BPF target, with nightly and build-std.
        &[
            "+nightly",
            "clippy",
            "-p",
            "loadprobe-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ],
    ];
    let mut failed = Vec::new();
    if let Err(e) = check_layers(root) {
        eprintln!("lint: {e:#}");
        failed.push("layers".to_string());
    }
    for args in checks {
        if let Err(e) = status(Command::new("cargo").args(args)) {
            eprintln!("lint: {e:#}");
            failed.push(format!("cargo {}", args.join(" ")));
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join("; "));
    }
    println!("lint: ok");
    Ok(ExitCode::SUCCESS)
}

/// Fails on an import cycle between loadprobe's top-level modules, or a use against the layer
/// order docs/architecture.md writes down.
fn check_layers(root: &Path) -> Result<()> {
    let doc = std::fs::read_to_string(root.join("docs/architecture.md"))
        .context("cannot read docs/architecture.md")?;
    let layers = layers::Layers::parse(&doc).context("docs/architecture.md")?;
    let problems = layers::check(&layers::graph(&root.join("loadprobe/src"))?, &layers);
    for p in &problems {
        eprintln!("layers: {p}");
    }
    if !problems.is_empty() {
        bail!("{} layer problem(s)", problems.len());
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command with inherited stdio; an error unless it exits 0.
fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

/// Runs a command and returns its stdout; an error unless it exits 0.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
