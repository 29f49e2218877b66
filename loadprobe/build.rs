//! Builds the eBPF programs (crate `loadprobe-ebpf`) with the nightly toolchain and bpf-linker,
//! so that `cargo build -p loadprobe` is the whole build. `cargo xtask setup` provisions both.

fn main() -> anyhow::Result<()> {
    let ebpf = aya_build::Package {
        name: "loadprobe-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../loadprobe-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default())
}
