// Host-side library target: lets flowd's build.rs depend on this crate so that
// cargo rebuilds the eBPF object when its sources change.
#![no_std]
