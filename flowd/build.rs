//! Builds flowd-ebpf for the BPF target with aya-build (nightly + bpf-linker),
//! or writes an empty stub object when FLOWD_SKIP_EBPF / AYA_BUILD_SKIP is set,
//! so that the rest of the workspace checks, lints and unit-tests on stable.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, Result};

const OBJECT: &str = "flowd";

fn main() -> Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    println!("cargo:rerun-if-env-changed=FLOWD_SKIP_EBPF");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = ["FLOWD_SKIP_EBPF", "AYA_BUILD_SKIP"]
        .iter()
        .any(|k| env::var(k).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")));
    if skip {
        println!("cargo:warning=eBPF build skipped: flowd will refuse to load programs");
        fs::write(out_dir.join(OBJECT), []).context("writing stub eBPF object")?;
        return Ok(());
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?);
    let ebpf_dir = manifest
        .parent()
        .context("flowd has no parent directory")?
        .join("flowd-ebpf");
    let root_dir = ebpf_dir.to_str().context("non-UTF-8 path to flowd-ebpf")?;
    let nightly = pinned_nightly(&ebpf_dir)?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "flowd-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&nightly),
    )
}

/// The pinned nightly: `channel` of flowd-ebpf/rust-toolchain.toml, or
/// $FLOWD_NIGHTLY (scripts/setup.sh installs the same one).
fn pinned_nightly(ebpf_dir: &std::path::Path) -> Result<String> {
    println!("cargo:rerun-if-env-changed=FLOWD_NIGHTLY");
    if let Ok(n) = env::var("FLOWD_NIGHTLY")
        && !n.is_empty()
    {
        return Ok(n);
    }
    let file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={}", file.display());
    let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|l| l.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
        .with_context(|| format!("no channel in {}", file.display()))
}
