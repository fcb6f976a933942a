//! Child processes that are always reaped: killed on drop (also on panic).
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Condvar, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// Lines so far, and whether the output has ended.
type LineState = Mutex<(Vec<String>, bool)>;

/// Lines a child printed on stdout, collected by a background thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<(LineState, Condvar)>);

impl Lines {
    /// A snapshot of the lines so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.0.0.lock().map(|g| g.0.clone()).unwrap_or_default()
    }

    /// Waits until the output has ended (the writer closed it, e.g. exited)
    /// and returns every line.
    pub fn wait_end(&self, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.0;
        let mut g = lock
            .lock()
            .map_err(|_| anyhow::anyhow!("line collector poisoned"))?;
        while !g.1 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("output still open after {timeout:?}");
            }
            g = cv
                .wait_timeout(g, left)
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .0;
        }
        Ok(g.0.clone())
    }

    /// Waits until a line satisfies `pred` (returns it) or the deadline passes.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.0;
        let mut g = lock
            .lock()
            .map_err(|_| anyhow::anyhow!("line collector poisoned"))?;
        let mut seen = 0;
        loop {
            if let Some(l) = g.0[seen..].iter().find(|l| pred(l)) {
                return Ok(l.clone());
            }
            seen = g.0.len();
            if g.1 {
                bail!("output ended before {what}");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            g = cv
                .wait_timeout(g, left)
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .0;
        }
    }
}

/// A spawned process, killed (SIGKILL) and reaped on drop.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
    pub stdout: Lines,
    /// stderr lines, when spawned with [`ChildGuard::spawn_capture`].
    pub stderr: Lines,
}

impl Lines {
    /// Collects the lines of `r` on a background thread until it ends.
    fn collect(r: impl std::io::Read + Send + 'static) -> Self {
        let lines = Lines::default();
        let l = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut g) = l.0.0.lock() {
                    g.0.push(line);
                }
                l.0.1.notify_all();
            }
            if let Ok(mut g) = l.0.0.lock() {
                g.1 = true;
            }
            l.0.1.notify_all();
        });
        lines
    }
}

impl ChildGuard {
    /// Spawns `cmd` with stdout collected line by line (stderr inherited so
    /// its logs show up in the test output).
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        Self::spawn_with(name, cmd, false)
    }

    /// Like [`ChildGuard::spawn`], with stderr collected too (for tests of
    /// what a program says on stderr).
    pub fn spawn_capture(name: &str, cmd: &mut Command) -> Result<Self> {
        Self::spawn_with(name, cmd, true)
    }

    fn spawn_with(name: &str, cmd: &mut Command, capture_stderr: bool) -> Result<Self> {
        cmd.stdout(Stdio::piped()).stdin(Stdio::null());
        if capture_stderr {
            cmd.stderr(Stdio::piped());
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        let stdout = child.stdout.take().map(Lines::collect).unwrap_or_default();
        let stderr = child.stderr.take().map(Lines::collect).unwrap_or_default();
        Ok(Self {
            child: Some(child),
            name: name.to_owned(),
            stdout,
            stderr,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self.pid().context("process already reaped")?;
        kill(Pid::from_raw(pid as i32), sig).with_context(|| format!("{sig} to {}", self.name))
    }

    /// Sends `sig` and waits for the exit (bounded), returning the status.
    pub fn stop(&mut self, sig: Signal, timeout: Duration) -> Result<std::process::ExitStatus> {
        self.signal(sig)?;
        self.wait_exit(timeout)
            .with_context(|| format!("after {sig}"))
    }

    /// Waits (bounded) for the process to exit by itself, returning the status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().context("process already reaped")?;
        loop {
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok(st);
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Exit status if the process has already exited.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("process already reaped"),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
