//! Drop program cost: ns per call of flowd's skb:kfree_skb
//! program (`flowd_kfree_skb`) next to an empty program on the same
//! tracepoint (`bench_tp_empty`), from kernel.bpf_stats, on a normal
//! workload where nearly all kfree_skb calls are not packet drops.
//!
//! Workload per run, between two namespaces: short TCP connections (connect,
//! 64-byte request and reply, close) and UDP request/reply pairs; one UDP
//! datagram in `DROP_EVERY` rounds goes to a closed port (a real NO_SOCKET
//! drop, reported with `--drops-all` through the whole path: headers,
//! aggregation, events). The tracepoint is global: frees elsewhere on the
//! machine during the run are counted too (same for both programs).
//! Runs alternate flowd / empty, order flipped every pair, medians reported.
use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use flowd_tests::{Pair, flowd::Flowd};

use crate::measure::program_stats;
use crate::stats::median;

const DROP_EVERY: usize = 100;
const TCP_PORT: u16 = 7101;
const UDP_PORT: u16 = 7102;
const CLOSED_PORT: u16 = 7103;

struct RunStats {
    ns_per_call: f64,
    calls: u64,
}

/// One workload run: `rounds` TCP connections and UDP exchanges.
fn workload(pair: &Pair, rounds: usize) -> Result<()> {
    // Bound inside the pod namespace before the client starts; served from
    // plain threads (a socket keeps its namespace).
    let l = pair.b.run(|| TcpListener::bind(("0.0.0.0", TCP_PORT)))??;
    let s = pair.b.run(|| UdpSocket::bind(("0.0.0.0", UDP_PORT)))??;
    let tcp = std::thread::spawn(move || -> Result<()> {
        let mut buf = [0u8; 64];
        for _ in 0..rounds {
            let (mut c, _) = l.accept()?;
            c.read_exact(&mut buf)?;
            c.write_all(&buf)?;
        }
        Ok(())
    });
    let udp = std::thread::spawn(move || -> Result<()> {
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; 64];
        for _ in 0..rounds {
            let (n, from) = s.recv_from(&mut buf)?;
            s.send_to(&buf[..n], from)?;
        }
        Ok(())
    });
    let client = pair.a.run(move || -> Result<()> {
        let server = |port| SocketAddr::from(([10, 200, 0, 2], port));
        let u = UdpSocket::bind("0.0.0.0:0")?;
        u.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; 64];
        for i in 0..rounds {
            let mut c = TcpStream::connect(server(TCP_PORT))?;
            c.write_all(&[7u8; 64])?;
            c.read_exact(&mut buf)?;
            drop(c);
            u.send_to(&[1u8; 64], server(UDP_PORT))?;
            u.recv_from(&mut buf)?;
            if i % DROP_EVERY == 0 {
                u.send_to(b"nobody listens", server(CLOSED_PORT))?;
            }
        }
        Ok(())
    })?;
    client?;
    tcp.join()
        .map_err(|_| anyhow::anyhow!("TCP server panicked"))??;
    udp.join()
        .map_err(|_| anyhow::anyhow!("UDP server panicked"))??;
    Ok(())
}

fn run(bin: &Path, pair: &Pair, empty: bool, rounds: usize) -> Result<RunStats> {
    let mut args = vec!["-i", "veth-a", "--no-watch-links", "--drops-all"];
    if empty {
        args.push("--bench-empty-programs");
    }
    let mut f = Flowd::start(bin, &pair.a, &args)?;
    workload(pair, rounds)?;
    let pid = f.child.pid().context("flowd exited early")?;
    let progs = program_stats(pid)?;
    f.stop()?;
    let name = if empty {
        "bench_tp_empty"
    } else {
        "flowd_kfree_skb"
    };
    let (t, c) = progs
        .iter()
        .find(|(n, _)| name.starts_with(n.as_str()))
        .map(|(_, v)| *v)
        .with_context(|| format!("no run-time statistics for {name}: {progs:?}"))?;
    ensure!(c > 0, "{name} never ran");
    Ok(RunStats {
        ns_per_call: t as f64 / c as f64,
        calls: c,
    })
}

/// Runs the benchmark and returns the Markdown report.
pub fn bench_drops(bin: &Path, pairs: usize, rounds: usize) -> Result<String> {
    ensure!(
        pairs >= 1 && rounds >= DROP_EVERY,
        "--pairs ≥ 1, --rounds ≥ {DROP_EVERY}"
    );
    let pair = Pair::create("bdrop")?;
    pair.up()?;
    let (mut flowd_ns, mut empty_ns, mut ratios, mut calls) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        eprintln!("==> drops pair {}/{pairs}", i + 1);
        let (f, e) = if i % 2 == 0 {
            let f = run(bin, &pair, false, rounds)?;
            (f, run(bin, &pair, true, rounds)?)
        } else {
            let e = run(bin, &pair, true, rounds)?;
            (run(bin, &pair, false, rounds)?, e)
        };
        eprintln!(
            "    flowd_kfree_skb {:.1} ns/call ({} calls), bench_tp_empty {:.1} ns/call ({} calls)",
            f.ns_per_call, f.calls, e.ns_per_call, e.calls
        );
        flowd_ns.push(f.ns_per_call);
        empty_ns.push(e.ns_per_call);
        ratios.push(f.ns_per_call / e.ns_per_call);
        calls.push(f.calls as f64);
    }
    let drops = rounds.div_ceil(DROP_EVERY);
    let mut s = String::new();
    writeln!(
        s,
        "### Drop program cost (`cargo xtask bench-drops`)\n\n\
         skb:kfree_skb runs per workload run (median): {:.0}, of which {drops} are provoked \
         drops (NO_SOCKET, one UDP datagram in {DROP_EVERY} rounds); {rounds} rounds of one \
         short TCP connection + one UDP request/reply. {pairs} flowd/empty pairs, alternating; \
         medians. ns per call = run_time_ns / run_cnt (kernel.bpf_stats).\n",
        median(calls)
    )?;
    writeln!(s, "| program | ns per call |\n|---|---|")?;
    writeln!(s, "| bench_tp_empty (baseline) | {:.1} |", median(empty_ns))?;
    writeln!(s, "| flowd_kfree_skb | {:.1} |", median(flowd_ns))?;
    writeln!(
        s,
        "\nRatio flowd / empty per pair: median {:.2}.",
        median(ratios)
    )?;
    Ok(s)
}
