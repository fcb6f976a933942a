//! Polling a condition with a deadline (never a fixed sleep as synchronisation).
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Calls `cond` until it returns `Some` or `timeout` passes. `what` names the
/// condition in the error.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = cond()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
