//! Empty on purpose: `loadprobe` build-depends on this library target so that cargo reruns its
//! build script (which compiles the programs in `main.rs` for the BPF target) whenever this
//! crate or `loadprobe-common` changes.
#![no_std]
