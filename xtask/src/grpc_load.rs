//! `cargo xtask bench-grpc-load`: what gRPC visibility costs a node. The
//! lab's gRPC service (`lab-grpc serve`, tonic) in one pod serves unary calls
//! from `lab-grpc load` (tonic, keep-alive HTTP/2, one call in flight per
//! connection) in another pod of the same node ([`crate::node`]). Each pair
//! runs three loads in rotating order: the release flowd daemon on both pod
//! veths with its default L7 settings (HTTP/2 walked and decoded), the same
//! daemon with L7 capture off (`flowd-l7-max-bytes=0`: L3/L4 only, the
//! HTTP/2 walker never runs), and nothing attached.
//!
//! Per pair: calls/s of each against nothing; flowd's process CPU per 10k
//! calls; its TC programs' run time per packet and per call (kernel.bpf_stats;
//! a tail call's time counts to the program that made it); and the count
//! check: every call the client completed is a REQUEST and a RESPONSE flow at
//! each pod's veth (`hubble_flows_processed_total{type="L7"}` = 4 × calls).
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use flowd_tests::ChildGuard;

use crate::l7_load::load_average;
use crate::measure::{cpu_times, program_stats};
use crate::node::{Node, sum};
use crate::stats::{ci, fmt_all};

/// Connections of the load generator, one call in flight on each.
const CONNECTIONS: u32 = 8;
const PORT: u16 = 50051;
/// The statistics flowd keeps in this benchmark.
const METRICS_SETS: &str = "hubble-metrics=flow http";

/// The `lab-grpc` program next to the flowd binary (same profile).
fn lab_grpc(flowd: &Path) -> PathBuf {
    flowd.with_file_name("lab-grpc")
}

/// Calls the load generator completed, and their rate.
struct Load {
    calls: u64,
    per_s: f64,
}

fn load(bin: &Path, node: &Node, seconds: u32) -> Result<Load> {
    let start = Instant::now();
    let out = node
        .a
        .command(bin)
        .args([
            "load",
            "--target",
            &format!("{}:{PORT}", node.b_ip),
            "--connections",
            &CONNECTIONS.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .output()
        .context("running lab-grpc load")?;
    let elapsed = start.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "lab-grpc load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: BTreeMap<String, u64> = serde_json::from_slice(&out.stdout)?;
    let calls = counts.values().sum();
    ensure!(
        counts.keys().all(|k| k == "Ok" || k == "NotFound"),
        "unexpected call outcomes: {counts:?}"
    );
    Ok(Load {
        calls,
        per_s: calls as f64 / f64::from(seconds).min(elapsed),
    })
}

/// One load with the flowd daemon attached.
struct FlowdRun {
    load: Load,
    cpu_ns: u64,
    /// Run time and runs of flowd's TC programs during the load.
    tc_ns: u64,
    tc_runs: u64,
    l7_flows: u64,
    lost: u64,
}

fn with_flowd(flowd: &Path, grpc: &Path, node: &Node, seconds: u32, l7: bool) -> Result<FlowdRun> {
    let mut sets = vec![METRICS_SETS];
    if !l7 {
        sets.push("flowd-l7-max-bytes=0");
    }
    let daemon = node.start_flowd(flowd, &sets)?;
    let pid = daemon.pid()?;
    let (_, cpu0) = cpu_times(pid)?;
    let progs0 = program_stats(pid)?;
    let load = load(grpc, node, seconds)?;
    let flows = |m: &str| sum(m, "hubble_flows_processed_total", &["type=\"L7\""]) as u64;
    // Every call is four L7 flows: wait for the last (bounded; a shortfall
    // is reported, not waited out).
    let want = if l7 { 4 * load.calls } else { 0 };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut m = node.metrics()?;
    while flows(&m) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        m = node.metrics()?;
    }
    let (_, cpu1) = cpu_times(pid)?;
    let progs1 = program_stats(pid)?;
    // The kernel counters reach the metrics at the daemon's 1 s tick.
    std::thread::sleep(Duration::from_millis(1100));
    let m2 = node.metrics()?;
    daemon.stop()?;
    let (mut tc_ns, mut tc_runs) = (0, 0);
    for (n, (t, c)) in progs1.iter().filter(|(n, _)| n.starts_with("flowd_tc_")) {
        let (t0, c0) = progs0.get(n).copied().unwrap_or_default();
        tc_ns += t - t0;
        tc_runs += c - c0;
        if c > &c0 {
            eprintln!(
                "    {n}: {} runs, {:.0} ns per run",
                c - c0,
                (t - t0) as f64 / (c - c0) as f64
            );
        }
    }
    Ok(FlowdRun {
        load,
        cpu_ns: cpu1 - cpu0,
        tc_ns,
        tc_runs,
        l7_flows: flows(&m),
        lost: sum(&m2, "flowd_datapath_events_lost_total", &[]) as u64,
    })
}

struct Pair {
    on: FlowdRun,
    off: FlowdRun,
    none: Load,
    load: f64,
}

pub(crate) fn bench(flowd: &Path, pairs: usize, seconds: u32) -> Result<String> {
    ensure!(pairs >= 1, "--pairs must be at least 1");
    let grpc = lab_grpc(flowd);
    ensure!(
        grpc.exists(),
        "{} not found (cargo build --release -p flowd-lab --bin lab-grpc)",
        grpc.display()
    );
    let node = Node::create("grpcld")?;
    let mut cmd = node.b.command(&grpc);
    cmd.args(["serve", "--listen", &format!("{}:{PORT}", node.b_ip)]);
    let _server = ChildGuard::spawn("lab-grpc serve", &mut cmd)?;
    // Warm-up (and the wait for the server): not measured.
    flowd_tests::wait_until("lab-grpc serving", Duration::from_secs(10), || {
        Ok(load(&grpc, &node, 1).ok())
    })?;
    let mut out = Vec::new();
    for i in 0..pairs {
        eprintln!("==> bench-grpc-load pair {}/{pairs}", i + 1);
        let load_avg = load_average();
        let (mut on, mut off, mut none) = (None, None, None);
        // Rotate the order: each configuration runs first, second and third.
        for k in 0..3 {
            match (i + k) % 3 {
                0 => on = Some(with_flowd(flowd, &grpc, &node, seconds, true)?),
                1 => off = Some(with_flowd(flowd, &grpc, &node, seconds, false)?),
                _ => none = Some(load(&grpc, &node, seconds)?),
            }
        }
        let (Some(on), Some(off), Some(none)) = (on, off, none) else {
            unreachable!("each configuration ran")
        };
        eprintln!(
            "    calls/s: {:.0} L7 on, {:.0} L7 off, {:.0} nothing; L7 flows {} for {} calls; CPU {:.1} / {:.1} ms; lost {}",
            on.load.per_s,
            off.load.per_s,
            none.per_s,
            on.l7_flows,
            on.load.calls,
            on.cpu_ns as f64 / 1e6,
            off.cpu_ns as f64 / 1e6,
            on.lost
        );
        out.push(Pair {
            on,
            off,
            none,
            load: load_avg,
        });
    }
    render(&out, seconds)
}

fn render(pairs: &[Pair], seconds: u32) -> Result<String> {
    let mut s = String::new();
    let n = pairs.len();
    let col = |f: &dyn Fn(&Pair) -> f64| -> Vec<f64> { pairs.iter().map(f).collect() };
    writeln!(
        s,
        "### gRPC load on a node — `cargo xtask bench-grpc-load`\n\n\
         `lab-grpc serve` (tonic) in one pod, `lab-grpc load` (tonic, {CONNECTIONS} keep-alive HTTP/2\n\
         connections, one unary call in flight on each, {seconds} s) in another pod of the same node;\n\
         the release flowd daemon in the node namespace on both pod veths with `{METRICS_SETS}`:\n\
         default L7 settings (HTTP/2 walked and decoded) vs. `flowd-l7-max-bytes=0` (L3/L4 only)\n\
         vs. nothing attached, in rotating order; {n} rounds in one run, BPF run-time statistics on.\n\
         Medians over the rounds [90 % bootstrap interval], then every round.\n"
    )?;
    writeln!(
        s,
        "| figure | median [90 % CI] | per round |\n|---|---|---|"
    )?;
    let per_10k = |r: &FlowdRun| r.cpu_ns as f64 / r.load.calls.max(1) as f64 * 1e4 / 1e6;
    let ns_pkt = |r: &FlowdRun| r.tc_ns as f64 / r.tc_runs.max(1) as f64;
    let ns_call = |r: &FlowdRun| r.tc_ns as f64 / r.load.calls.max(1) as f64;
    let rows: [(&str, Vec<f64>, usize); 10] = [
        (
            "calls/s, L7 on ÷ nothing",
            col(&|p| p.on.load.per_s / p.none.per_s),
            3,
        ),
        (
            "calls/s, L7 off ÷ nothing",
            col(&|p| p.off.load.per_s / p.none.per_s),
            3,
        ),
        ("calls/s with nothing attached", col(&|p| p.none.per_s), 0),
        (
            "flowd CPU per 10k calls, L7 on (ms; = mCPU at 10k calls/s)",
            col(&|p| per_10k(&p.on)),
            1,
        ),
        (
            "flowd CPU per 10k calls, L7 off",
            col(&|p| per_10k(&p.off)),
            1,
        ),
        (
            "eBPF ns per packet, L7 on (TC, both veths)",
            col(&|p| ns_pkt(&p.on)),
            0,
        ),
        ("eBPF ns per packet, L7 off", col(&|p| ns_pkt(&p.off)), 0),
        ("eBPF ns per call, L7 on", col(&|p| ns_call(&p.on)), 0),
        ("eBPF ns per call, L7 off", col(&|p| ns_call(&p.off)), 0),
        (
            "1-minute load average at the round's start",
            col(&|p| p.load),
            2,
        ),
    ];
    for (name, v, d) in &rows {
        writeln!(s, "| {name} | {} | {} |", ci(v, *d), fmt_all(v, *d))?;
    }
    writeln!(
        s,
        "\ngRPC records flowd made vs. the calls the client completed (L7 on):\n\n\
         | round | calls | L7 flows vs. 4 × calls | events lost in the kernel ring | unaccounted |\n\
         |---|---|---|---|---|"
    )?;
    for (i, p) in pairs.iter().enumerate() {
        let r = &p.on;
        let want = 4 * r.load.calls;
        writeln!(
            s,
            "| {} | {} | {} ({}) | {} | {} |",
            i + 1,
            r.load.calls,
            r.l7_flows,
            if r.l7_flows == want {
                "exact".to_owned()
            } else {
                format!("{:+}", r.l7_flows as i64 - want as i64)
            },
            r.lost,
            want as i64 - r.l7_flows as i64 - r.lost as i64,
        )?;
    }
    writeln!(
        s,
        "\nThe client waits for every call it starts, so its count is exact: each call is a REQUEST\n\
         and a RESPONSE record at each pod's veth. \"unaccounted\" (4 × calls − L7 flows − lost) is 0\n\
         when flowd keeps up and ≤ 0 when every missing record is a counted loss.\n"
    )?;
    Ok(s)
}
