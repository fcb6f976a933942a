use std::env;

fn main() {
    // Rebuild when the linker changes: the object is only as good as bpf-linker.
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_CFG_BPF_TARGET_ARCH");
    let _ = env::var("CARGO_CFG_BPF_TARGET_ARCH");
}
