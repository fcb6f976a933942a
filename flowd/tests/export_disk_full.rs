//! A full export disk, for real: the daemon runs in a mount namespace of
//! its own where the export directory is a 256 KiB tmpfs (gone with the
//! process, whatever happens to the test), the test fills it through
//! /proc/<pid>/root until ENOSPC, and keeps traffic flowing so that every
//! retry (each second) fails.
//!
//! What docs/configuration.md (Export) promises: errors are counted, the log
//! gets at most one ERROR per 30 s (a lasting failure: two lines a minute),
//! a file that opens again on a full disk is no recovery, and the recovery
//! (a write that succeeds, once space is freed) is logged exactly once.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod daemon_netns;
mod metrics_support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use daemon_netns::*;
use flowd_tests::flowd::TempDir;
use flowd_tests::{Pair, wait_until};

const ERROR_LINE: &str = "writing export file";
const RECOVERY_LINE: &str = "export file writable again";
/// The documented rate limit.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// The time at the start of a log line (tracing's RFC 3339, UTC).
fn line_time(line: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    let stamp = line.split_whitespace().next().context("empty log line")?;
    Ok(chrono::DateTime::parse_from_rfc3339(stamp)
        .with_context(|| format!("no timestamp in {line:?}"))?
        .to_utc())
}

/// Fills the filesystem of `dir` (seen through the daemon's root) until
/// ENOSPC; returns the filler file.
fn fill(dir: &Path) -> Result<PathBuf> {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler)?;
    let chunk = vec![0u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e).context("filling the tmpfs"),
        }
    }
    Ok(filler)
}

#[test]
fn full_disk_logs_at_most_twice_a_minute() -> Result<()> {
    let mnt = TempDir::new("diskfull")?;
    let mnt_path = mnt.0.display().to_string();
    let pair = Pair::create("dfull")?;
    let mount = format!("mount -t tmpfs -o size=256k flowd-test-full {mnt_path} && exec \"$@\"");
    let mut d = Daemon::start_wrapped(
        &pair.a,
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &mount,
            "sh",
        ],
        "df-node",
        &[
            "-i",
            "veth-a",
            "--set",
            &format!("hubble-export-file-path={mnt_path}/export/events.log"),
            // Flows are written as they come (one per new UDP port).
            "--set",
            "monitor-aggregation-interval=1h",
        ],
    )?;
    let pid = d.child.pid().context("no pid")?;
    // The tmpfs as the daemon sees it; the host sees the empty directory.
    let inside = PathBuf::from(format!("/proc/{pid}/root{mnt_path}"));
    wait_until("the export file created", Duration::from_secs(20), || {
        Ok(inside.join("export/events.log").exists().then_some(()))
    })?;
    ensure!(
        !mnt.0.join("export").exists(),
        "the tmpfs must be private to the daemon"
    );
    wait_until("flowd attached", Duration::from_secs(30), || {
        Ok((tcx_programs(&pair.a, "veth-a")? == (1, 1)).then_some(()))
    })?;
    quiet_up(&pair, true)?;
    let _sink = pair
        .b
        .run(|| std::net::UdpSocket::bind(("10.200.0.2", 9000)))??;
    let filler = fill(&inside)?;

    // A new flow every 100 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        pair.a.spawn_thread(move || -> Result<u64> {
            let dst = SocketAddr::from(([10, 200, 0, 2], 9000));
            let mut port = 40_000u16;
            while !stop.load(Ordering::Relaxed) {
                let s = std::net::UdpSocket::bind(("10.200.0.1", port))?;
                s.send_to(b"x", dst)?;
                port += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(u64::from(port - 40_000))
        })?
    };

    let first = wait_until(
        "the first write error logged",
        Duration::from_secs(20),
        || {
            d.alive()?;
            Ok(d.log_lines(ERROR_LINE).first().cloned())
        },
    )?;
    let t0 = line_time(&first)?;
    // The second report comes at the first failed retry at least 30 s later.
    let second = wait_until(
        "the second report",
        LOG_EVERY + Duration::from_secs(15),
        || Ok(d.log_lines(ERROR_LINE).get(1).cloned()),
    )?;
    let t1 = line_time(&second)?;
    let gap = (t1 - t0).to_std()?;
    ensure!(
        gap >= LOG_EVERY && gap < LOG_EVERY + Duration::from_secs(5),
        "reports {gap:?} apart:\n{first}\n{second}"
    );
    ensure!(
        second.contains("errors and") && second.contains("lost lines since the last report"),
        "the second report says what happened meanwhile: {second}"
    );
    let errors = d.log_lines(ERROR_LINE);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        d.log_lines(RECOVERY_LINE).is_empty(),
        "reopening the file on a full disk is no recovery:\n{}",
        d.log_text()
    );
    // Every retry failed and was counted, each second.
    let s = scrape(&pair.a)?;
    let write_errors = value(
        &s,
        "flowd_export_errors_total",
        &[("sink", "file"), ("kind", "write")],
    );
    ensure!(
        write_errors >= 25.0,
        "{write_errors} write errors counted in over 30 s of retries"
    );
    ensure!(
        value(
            &s,
            "flowd_export_events_dropped_total",
            &[("sink", "file"), ("reason", "write_error")]
        ) > 0.0
    );

    // Space again: the next write succeeds, and that is said once.
    std::fs::remove_file(&filler)?;
    let written_before = value(&s, "flowd_export_events_total", &[("sink", "file")]);
    let t_free = Instant::now();
    wait_metrics(
        &pair.a,
        "lines written again",
        Duration::from_secs(20),
        |s| {
            (value(s, "flowd_export_events_total", &[("sink", "file")]) > written_before)
                .then_some(())
        },
    )?;
    wait_until("the recovery logged", Duration::from_secs(10), || {
        Ok((!d.log_lines(RECOVERY_LINE).is_empty()).then_some(()))
    })?;
    // Let a few more flows be written: still one recovery line, no new error.
    let more = value(
        &scrape(&pair.a)?,
        "flowd_export_events_total",
        &[("sink", "file")],
    );
    wait_metrics(
        &pair.a,
        "more lines written",
        Duration::from_secs(20),
        |s| {
            (value(s, "flowd_export_events_total", &[("sink", "file")]) >= more + 3.0).then_some(())
        },
    )?;
    stop.store(true, Ordering::Relaxed);
    let sent = traffic
        .join()
        .map_err(|_| anyhow::anyhow!("traffic thread panicked"))???;
    assert_eq!(d.log_lines(RECOVERY_LINE).len(), 1, "{}", d.log_text());
    assert_eq!(d.log_lines(ERROR_LINE).len(), 2, "{}", d.log_text());
    // Over the whole run (well over 30 s), the log had 3 export lines.
    let minutes = (t_free.elapsed() + gap).as_secs_f64() / 60.0;
    eprintln!(
        "{sent} flows sent; {write_errors} write errors counted, 3 log lines in {:.1} min",
        minutes
    );
    d.alive()?;
    Ok(())
}
