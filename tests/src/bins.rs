//! Built workspace binaries, for tests of one package that run another
//! package's binary (cargo only hands a package's own binaries over, as
//! `CARGO_BIN_EXE_<name>`).
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// The directory cargo puts binaries in for the running test executable
/// (`target/<profile>/`; test executables live in its `deps/`).
pub fn dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let mut d = exe
        .parent()
        .context("test executable without a directory")?
        .to_path_buf();
    if d.ends_with("deps") {
        d.pop();
    }
    Ok(d)
}

/// The path of workspace binary `name` (flowd, relay, observe, lab-app, …).
pub fn path(name: &str) -> Result<PathBuf> {
    let p = dir()?.join(name);
    if !p.is_file() {
        bail!(
            "binary {name} not found at {} — build the workspace binaries first: \
             `cargo build --workspace --bins --exclude flowd-ebpf` (scripts/test.sh does)",
            p.display()
        );
    }
    Ok(p)
}
