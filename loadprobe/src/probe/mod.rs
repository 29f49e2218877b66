//! The eBPF probe: loading, configuring and reading the kernel programs.
