//! Running the flowd binary inside a namespace and reading what it reports.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{ChildGuard, Netns};

/// A flowd process started with `--print --print-format json` and
/// `--dump-flows-on-exit`, killed on drop.
pub struct Flowd {
    pub child: ChildGuard,
    dump: PathBuf,
    _dir: TempDir,
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("flowd-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Flowd {
    /// Starts `bin` inside `ns` with `args` and waits (bounded) until it has
    /// attached to everything that matched at start ("ready" line).
    pub fn start(bin: &Path, ns: &Netns, args: &[&str]) -> Result<Self> {
        Self::start_env(bin, ns, args, &[])
    }

    /// [`Flowd::start`] with extra environment variables (e.g. `FLOWD_EBPF_OBJECT`).
    pub fn start_env(bin: &Path, ns: &Netns, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let dir = TempDir::new("flowd")?;
        let dump = dir.0.join("dump.json");
        let mut cmd = ns.command(bin);
        cmd.envs(env.iter().copied());
        cmd.args(["--print", "--print-format", "json", "--dump-flows-on-exit"])
            .arg(&dump)
            .args(args);
        let child = ChildGuard::spawn("flowd", &mut cmd)?;
        child
            .stdout
            .wait_for("flowd ready", Duration::from_secs(30), |l| {
                l.contains("\"event\":\"ready\"")
            })?;
        Ok(Self {
            child,
            dump,
            _dir: dir,
        })
    }

    /// Every JSON line printed so far.
    pub fn events(&self) -> Vec<Value> {
        self.child
            .stdout
            .snapshot()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// SIGTERM, wait for a clean exit (and the end of its output), and
    /// return the dump (flows + counters).
    pub fn stop(&mut self) -> Result<Value> {
        let st = self.child.stop(Signal::SIGTERM, Duration::from_secs(20))?;
        if !st.success() {
            bail!("flowd exited with {st}");
        }
        // What it printed while shutting down is in `events` from here on.
        self.child.stdout.wait_end(Duration::from_secs(5))?;
        let text = std::fs::read_to_string(&self.dump)
            .with_context(|| format!("reading {}", self.dump.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}
