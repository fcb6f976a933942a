//! `cargo xtask bench-pipeline`: what flowd's user space spends per event.
//! The release daemon observes both pod veths of a node ([`crate::node`])
//! with `monitor-aggregation=none` (one event per packet and observation
//! point) while a UDP flood of 64-byte datagrams runs from one pod to the
//! other at fixed offered rates, lowest first, repeated `rounds` times.
//!
//! Per run: datapath events flowd read (`flowd_datapath_events_total`) and
//! lost (in the kernel ring and the flow buffer), flows it processed, its
//! process CPU time (/proc/PID/stat) from the flood's start until the
//! last event is processed. µs CPU per event = CPU ÷ events read; events/s
//! per core = events read ÷ CPU seconds, counted only for runs with zero losses.
//! L7 events are measured by `bench-l7-load` (µs per event there).
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use flowd_tests::ChildGuard;

use crate::l7_load::{METRICS_SETS, load_average};
use crate::measure::cpu_times;
use crate::node::{Node, sum};
use crate::stats::{median, median_ci};

const DATAGRAM: u32 = 64;

struct Counts {
    events: f64,
    lost: f64,
    processed: f64,
    /// Drop flows (the drop program's records are aggregated into them).
    drop_flows: f64,
    /// Events the parser made no flow of (flowd_events_skipped_total).
    skipped: f64,
}

fn counts(m: &str) -> Counts {
    Counts {
        events: sum(m, "flowd_datapath_events_total", &[]),
        lost: sum(m, "flowd_datapath_events_lost_total", &[]),
        processed: sum(m, "flowd_flows_processed_total", &[]),
        drop_flows: sum(m, "hubble_flows_processed_total", &["type=\"Drop\""]),
        skipped: sum(m, "flowd_events_skipped_total", &[]),
    }
}

/// Metrics once nothing moves any more across a 1 s tick (kernel counters
/// reach the metrics at the daemon's tick).
fn settled(node: &Node) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = node.metrics()?;
    loop {
        std::thread::sleep(Duration::from_millis(1100));
        let now = node.metrics()?;
        let (a, b) = (counts(&last), counts(&now));
        if a.events == b.events && a.processed == b.processed && a.lost == b.lost {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("flowd's counters did not settle within 15 s");
        }
        last = now;
    }
}

struct Run {
    events: f64,
    lost: f64,
    processed: f64,
    drop_flows: f64,
    skipped: f64,
    cpu_ns: u64,
    secs: f64,
}

fn flood(node: &Node, pid: u32, pps: u64, seconds: u32) -> Result<Run> {
    let before = counts(&settled(node)?);
    let (_, cpu0) = cpu_times(pid)?;
    let t = Instant::now();
    let out = node
        .a
        .command("iperf3")
        .args([
            "-c",
            &node.b_ip,
            "-u",
            "-l",
            &DATAGRAM.to_string(),
            "-b",
            &(pps * u64::from(DATAGRAM) * 8).to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ])
        .output()
        .context("running iperf3 (scripts/setup.sh installs it)")?;
    let secs = t.elapsed().as_secs_f64();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON output")?;
    if let Some(e) = v.get("error") {
        bail!("iperf3: {e}");
    }
    let after = counts(&settled(node)?);
    let (_, cpu1) = cpu_times(pid)?;
    Ok(Run {
        events: after.events - before.events,
        lost: after.lost - before.lost,
        processed: after.processed - before.processed,
        drop_flows: after.drop_flows - before.drop_flows,
        skipped: after.skipped - before.skipped,
        cpu_ns: cpu1 - cpu0,
        secs,
    })
}

pub(crate) fn bench(bin: &Path, rates: &[u64], rounds: usize, seconds: u32) -> Result<String> {
    ensure!(rounds >= 1, "--rounds must be at least 1");
    ensure!(!rates.is_empty(), "--rates: at least one rate");
    let node = Node::create("pipe")?;
    let _server = ChildGuard::spawn(
        "iperf3 server",
        node.b.command("iperf3").args(["-s", "-B", &node.b_ip]),
    )?;
    let daemon = node.start_flowd(bin, &[METRICS_SETS, "monitor-aggregation=none"])?;
    let pid = daemon.pid()?;
    let load = load_average();
    let mut runs: BTreeMap<u64, Vec<Run>> = BTreeMap::new();
    let mut sorted = rates.to_vec();
    sorted.sort_unstable();
    for round in 0..rounds {
        for &pps in &sorted {
            let r = flood(&node, pid, pps, seconds)?;
            eprintln!(
                "==> round {}/{rounds}, {pps} datagrams/s offered: {:.0} events ({:.0}/s), {:.0} lost, {:.0} flows ({:.0} drop flows), {:.0} skipped, {:.2} µs CPU per event",
                round + 1,
                r.events,
                r.events / r.secs,
                r.lost,
                r.processed,
                r.drop_flows,
                r.skipped,
                r.cpu_ns as f64 / r.events.max(1.0) / 1e3
            );
            runs.entry(pps).or_default().push(r);
        }
    }
    daemon.stop()?;
    render(&runs, rounds, seconds, load, load_average())
}

fn render(
    runs: &BTreeMap<u64, Vec<Run>>,
    rounds: usize,
    seconds: u32,
    load0: f64,
    load1: f64,
) -> Result<String> {
    let mut s = String::new();
    writeln!(
        s,
        "### Event pipeline, L3/L4 — `cargo xtask bench-pipeline`\n\n\
         UDP flood (iperf3, {DATAGRAM}-byte datagrams, {seconds} s per run) from one pod to another of a node,\n\
         the release flowd daemon observing both pod veths with `monitor-aggregation=none` (an event\n\
         per packet at each veth: two per datagram) and `{METRICS_SETS}`; rates lowest first,\n\
         {rounds} rounds. Load average (1 min) {load0:.2} at the start, {load1:.2} at the end.\n\
         Medians over the rounds [90 % bootstrap interval].\n"
    )?;
    writeln!(
        s,
        "| datagrams/s offered | events/s read | events lost (all rounds) | flows ÷ events | µs CPU per event | events/s per core (zero-loss runs) |\n|---|---|---|---|---|---|"
    )?;
    for (pps, rs) in runs {
        let us: Vec<f64> = rs
            .iter()
            .map(|r| r.cpu_ns as f64 / r.events.max(1.0) / 1e3)
            .collect();
        let per_core: Vec<f64> = rs
            .iter()
            .filter(|r| r.lost == 0.0)
            .map(|r| r.events / (r.cpu_ns as f64 / 1e9).max(1e-9))
            .collect();
        let (lo, hi) = median_ci(&us);
        writeln!(
            s,
            "| {pps} | {:.0} | {:.0} | {:.3} | {:.2} [{lo:.2}–{hi:.2}] | {} |",
            median(rs.iter().map(|r| r.events / r.secs).collect()),
            rs.iter().map(|r| r.lost).sum::<f64>(),
            median(rs.iter().map(|r| r.processed / r.events.max(1.0)).collect()),
            median(us.clone()),
            if per_core.is_empty() {
                "– (losses in every run)".to_owned()
            } else {
                format!("{:.0}", median(per_core))
            },
        )?;
    }
    writeln!(
        s,
        "\nCPU is flowd's process time from the flood's start until its counters settle (a 1 s tick\n\
         after the last event), so its idle ticks are in it. Events/s per core: events read ÷ CPU\n\
         seconds, i.e. the rate one core would sustain at this cost. Flows ÷ events is below 1 when\n\
         the server pod's socket overflows: the drop program's records of those drops are running\n\
         totals, each turned into one drop flow for what it adds (the progress lines show the drop\n\
         flows and the parser's skips per run).\n"
    )?;
    Ok(s)
}
