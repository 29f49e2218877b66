//! Builds the eBPF programs (crate `loadprobe-ebpf`) with the nightly toolchain and bpf-linker,
//! so that `cargo build -p loadprobe` is the whole build. `cargo xtask setup` provisions both.
//!
//! This does what `aya_build::build_ebpf` does, but keeps the nested build's output and shows
//! it (as cargo warnings, the only way a build script can) only when that build fails:
//! aya-build 0.2 echoes every line, some forty `Compiling …` warnings on each fresh build.

use std::{
    env, fs,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, bail};
// Only a build-dependency so that cargo reruns this script when the programs' sources change.
use loadprobe_ebpf as _;

/// The eBPF crate and its binary target, which `probe` includes from `OUT_DIR`.
const PACKAGE: &str = "loadprobe-ebpf";
const BIN: &str = "loadprobe";

fn main() -> anyhow::Result<()> {
    // Read when the script runs, not built into it: a target dir copied to another checkout
    // would otherwise keep watching the first checkout's sources.
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = format!("{manifest_dir}/../loadprobe-ebpf");
    // The library target covers the crate's dependencies; this covers the binary's sources.
    println!("cargo:rerun-if-changed={root}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "big" => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    // Apart from this build's own target dir: cargo would wait for its own lock.
    let target_dir = out_dir.join("ebpf-target");
    let mut cargo = Command::new("rustup");
    cargo
        .args(["run", "nightly", "cargo", "build", "--release"])
        .args(["--package", PACKAGE, "--bins", "--target", target])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(&target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        // The outer build's compiler (stable) must not leak into the nightly one.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        // Never the outer stdin: a stray one once fed garbage to `rustc -`.
        .stdin(Stdio::null());
    let output = cargo
        .output()
        .context("cannot run `rustup run nightly cargo` (cargo xtask setup installs it)")?;
    if !output.status.success() {
        for stream in [&output.stdout, &output.stderr] {
            for line in String::from_utf8_lossy(stream).lines() {
                println!("cargo:warning={line}");
            }
        }
        bail!(
            "building the eBPF programs failed ({}), its output is above",
            output.status
        );
    }
    let built = target_dir.join(target).join("release").join(BIN);
    fs::copy(&built, out_dir.join(BIN))
        .with_context(|| format!("cannot copy {} to OUT_DIR", built.display()))?;
    Ok(())
}
