//! Loading and attaching the eBPF programs, and reading their events.

/// The eBPF object built by flowd/build.rs (empty when built with FLOWD_SKIP_EBPF=1).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowd"));
