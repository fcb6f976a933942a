//! SIGTERM / SIGINT handling shared by both modes of flowd.
//!
//! The first signal starts an orderly shutdown (the receiver of [`install`]
//! flips to `true`), which the daemon bounds by `flowd-shutdown-grace`. A
//! second SIGTERM or SIGINT ends the process at once (exit status 128 +
//! the signal number, as a shell reports a process killed by it). If an
//! orderly step blocks a thread past the grace period, the process ends
//! [`LAST_RESORT`] later anyway, with status 1.
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// `flowd-shutdown-grace` when no configuration is read (flowd alone).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// How long after the grace period the process is ended without waiting
/// for the orderly shutdown, which gives up at the grace period itself.
pub const LAST_RESORT: Duration = Duration::from_secs(1);

/// Installs the handlers; the receiver turns `true` at the first signal.
/// Must be called inside a tokio runtime.
pub fn install(grace: Duration) -> std::io::Result<watch::Receiver<bool>> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = sigint.recv() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
        };
        info!(
            signal = first,
            grace = %humantime::format_duration(grace),
            "shutting down; a second SIGTERM or SIGINT exits at once"
        );
        let _ = tx.send(true);
        let (second, code) = tokio::select! {
            _ = sigint.recv() => ("SIGINT", 128 + libc::SIGINT),
            _ = sigterm.recv() => ("SIGTERM", 128 + libc::SIGTERM),
            _ = tokio::time::sleep(grace + LAST_RESORT) => {
                error!(
                    grace = %humantime::format_duration(grace),
                    "the shutdown did not finish within the grace period; exiting now"
                );
                std::process::exit(1);
            }
        };
        warn!(
            signal = second,
            "second signal during the shutdown: exiting now"
        );
        std::process::exit(code);
    });
    Ok(rx)
}
