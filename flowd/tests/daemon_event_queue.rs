//! `hubble-event-queue-size` on a running daemon: the queue between the
//! ring reader and the flow pipeline holds exactly that many events
//! (`flowd_event_queue_capacity_events`, `flowd_event_queue_used_events`),
//! and when the pipeline stalls the rest waits in the kernel ring buffer:
//! nothing is lost. Root, like flowd.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod daemon_netns;
mod metrics_support;

use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use daemon_netns::*;
use flowd_tests::flowd::TempDir;
use flowd_tests::{Pair, wait_until};
use metrics_support::Sample;

const WAIT: Duration = Duration::from_secs(30);

fn queue(s: &[Sample]) -> (f64, f64) {
    (
        value(s, "flowd_event_queue_used_events", &[]),
        value(s, "flowd_event_queue_capacity_events", &[]),
    )
}

/// Without the key the queue has min(CPUs × 1024, 16384) places, as in
/// Hubble (the CPUs flowd may run on: this process's).
#[test]
fn default_size_follows_the_cpus() -> Result<()> {
    let pair = Pair::create("eqdef")?;
    let mut d = Daemon::start(&pair.a, "eq-def", &["-i", "veth-a"])?;
    let cpus = std::thread::available_parallelism()?.get();
    let want = (cpus * 1024).min(16_384) as f64;
    let s = wait_metrics(&pair.a, "the queue's capacity", WAIT, |s| {
        (queue(s).1 > 0.0).then(|| s.to_vec())
    })?;
    assert_eq!(queue(&s), (0.0, want));
    d.alive()
}

/// `hubble-event-queue-size` 16, and a pipeline held up by a `--print`
/// reader that does not read (flowd's stdout is a FIFO the test leaves
/// full): of a burst of N packets (`monitor-aggregation: none`, one event
/// each) exactly 16 wait in the queue and the others in the ring. Once the
/// FIFO is read, all N become flows and nothing is counted lost.
#[test]
fn a_stalled_pipeline_fills_exactly_the_configured_queue_and_loses_nothing() -> Result<()> {
    const Q: usize = 16;
    // Far more print lines than a pipe holds (64 KiB; a line is ~100 B).
    const N: usize = 3000;
    let dir = TempDir::new("eq-stall")?;
    let fifo = dir.0.join("stdout");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU)?;
    // Opened for reading first (not blocking), so that flowd's open for
    // writing does not wait; read only later.
    let mut out = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)?;
    let pair = Pair::create("eqstl")?;
    let script = format!("exec \"$@\" >'{}'", fifo.display());
    let queue_size = format!("hubble-event-queue-size={Q}");
    let mut d = Daemon::start_wrapped(
        &pair.a,
        &["sh", "-c", &script, "sh"],
        "eq-stl",
        &[
            "-i",
            "veth-a",
            "--print",
            "--set",
            &queue_size,
            "--set",
            "monitor-aggregation=none",
        ],
    )?;
    wait_until("flowd attached", WAIT, || {
        Ok((tcx_programs(&pair.a, "veth-a")? == (1, 1)).then_some(()))
    })?;
    quiet_up(&pair, true)?;
    let s = scrape(&pair.a)?;
    assert_eq!(queue(&s), (0.0, Q as f64), "an empty queue of {Q}");

    let sink = pair
        .b
        .run(|| std::net::UdpSocket::bind(b_addr(9000)))?
        .context("binding the UDP sink")?;
    pair.a.run(move || -> Result<()> {
        let s = std::net::UdpSocket::bind(("10.200.0.1", 0))?;
        for _ in 0..N {
            s.send_to(b"flowd-queue", b_addr(9000))?;
        }
        Ok(())
    })??;
    let s = wait_metrics(&pair.a, "a full queue", WAIT, |s| {
        (queue(s).0 >= Q as f64).then(|| s.to_vec())
    })?;
    assert_eq!(queue(&s), (Q as f64, Q as f64));
    // The queue stays full while nothing reads the FIFO.
    assert_eq!(queue(&scrape(&pair.a)?), (Q as f64, Q as f64));

    // Read flowd's output from now on (to EOF, when flowd is gone).
    let mut flags = nix::fcntl::OFlag::from_bits_truncate(nix::fcntl::fcntl(
        &out,
        nix::fcntl::FcntlArg::F_GETFL,
    )?);
    flags.remove(nix::fcntl::OFlag::O_NONBLOCK);
    nix::fcntl::fcntl(&out, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        std::io::copy(&mut out, &mut std::io::sink())
    });
    let s = wait_metrics(&pair.a, "the queue drained", WAIT, |s| {
        (queue(s).0 == 0.0).then(|| s.to_vec())
    })?;
    ensure!(
        value(&s, "flowd_datapath_events_lost_total", &[]) == 0.0,
        "the ring lost events"
    );
    let f = flows_when(&pair.a, "a flow per packet", |f| {
        f.iter().filter(|f| ports(f).1 == 9000).count() >= N
    })?;
    assert_eq!(f.iter().filter(|f| ports(f).1 == 9000).count(), N);
    let s = scrape(&pair.a)?;
    assert_eq!(
        value(
            &s,
            "hubble_lost_events_total",
            &[("source", "perf_event_ring_buffer")]
        ),
        0.0
    );
    drop(sink);
    d.alive()?;
    drop(d);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    Ok(())
}
