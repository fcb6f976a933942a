//! Relay benchmark (not a test): `cargo bench -p flowd-relay --bench relay_throughput`.
//!
//! 1. Throughput: 3 fake nodes each hold N buffered flows; a client asks for
//!    `number: N` through the relay (merged, time-ordered) and, as the
//!    baseline in the same run, straight from the 3 nodes concurrently.
//! 2. Latency: the 3 nodes emit live flows stamped with the wall clock at a
//!    fixed rate; a follow client measures receive time − flow time through
//!    the relay and straight from one node (baseline). Added latency = the
//!    difference of the percentiles.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use flowd_proto::observer::GetFlowsRequest;
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_relay::RelayConfig;

const T0: u64 = 1_700_000_000_000_000_000;

async fn count_flows(addr: std::net::SocketAddr, req: GetFlowsRequest) -> usize {
    let mut c = client(addr).await.max_decoding_message_size(16 << 20);
    let mut s = c.get_flows(req).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(m) = s.message().await.unwrap() {
        if matches!(m.response_types, Some(ResponseTypes::Flow(_))) {
            n += 1;
        }
    }
    n
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1e6
}

/// Follows `addr` for `dur` while the emitter runs; returns sorted latencies (ns).
async fn follow_latencies(addr: std::net::SocketAddr, dur: Duration) -> Vec<u64> {
    let mut c = client(addr).await;
    let mut s = c
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let end = tokio::time::Instant::now() + dur;
    let mut lat = Vec::new();
    while let Ok(Ok(Some(m))) = tokio::time::timeout_at(end, s.message()).await {
        if let Some(ResponseTypes::Flow(f)) = m.response_types {
            let t = f.time.map_or(0, |t| t.as_unix_nanos() as u64);
            lat.push(now_ns().saturating_sub(t));
        }
    }
    lat.sort_unstable();
    lat
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let per_node: u64 = std::env::var("RELAY_BENCH_FLOWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let nodes: Vec<FakeNode> = (0..3u64)
            .map(|i| {
                let d = NodeData::new(&format!("node-{i}"));
                for k in 0..per_node {
                    d.emit(T0 + k * 3_000 + i * 1_000);
                }
                FakeNode::start(d)
            })
            .collect();
        let cfg = RelayConfig {
            node_idle_timeout: Duration::from_secs(30),
            ..test_config()
        };
        let relay = relay_over(&nodes.iter().collect::<Vec<_>>(), cfg).await;
        let mut c = client(relay.addr).await;
        wait_connected(&mut c, 3).await;
        let req = GetFlowsRequest {
            number: per_node,
            ..Default::default()
        };

        println!("throughput: 3 nodes x {per_node} buffered flows, number={per_node}");
        let mut ratios = Vec::new();
        for round in 0..5 {
            let t = Instant::now();
            let direct: usize = futures::future::join_all(
                nodes.iter().map(|n| count_flows(n.addr, req.clone())),
            )
            .await
            .into_iter()
            .sum();
            let d_direct = t.elapsed();
            let t = Instant::now();
            let relayed = count_flows(relay.addr, req.clone()).await;
            let d_relay = t.elapsed();
            assert_eq!((direct, relayed), (3 * per_node as usize, 3 * per_node as usize));
            let (fd, fr) = (
                direct as f64 / d_direct.as_secs_f64(),
                relayed as f64 / d_relay.as_secs_f64(),
            );
            ratios.push(fr / fd);
            println!(
                "  round {round}: relay {fr:>10.0} flows/s   direct (3 streams) {fd:>10.0} flows/s   ratio {:.2}",
                fr / fd
            );
        }
        ratios.sort_by(f64::total_cmp);
        println!("  median ratio relay/direct: {:.2}", ratios[2]);

        let rate_per_node: u64 = std::env::var("RELAY_BENCH_RATE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        println!("latency: 3 nodes x {rate_per_node} live flows/s each, 3 s per run");
        let stop = Arc::new(AtomicBool::new(false));
        let datas: Vec<_> = nodes.iter().map(|n| n.data.clone()).collect();
        let st = stop.clone();
        let emitter = std::thread::spawn(move || {
            let period = Duration::from_nanos(1_000_000_000 / rate_per_node.max(1));
            let mut next = Instant::now();
            while !st.load(Ordering::Relaxed) {
                for d in &datas {
                    d.emit(now_ns());
                }
                next += period;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
        });
        for round in 0..3 {
            let relayed = follow_latencies(relay.addr, Duration::from_secs(3)).await;
            let direct = follow_latencies(nodes[0].addr, Duration::from_secs(3)).await;
            println!(
                "  round {round}: relay p50 {:.3} ms p99 {:.3} ms (n={})   direct p50 {:.3} ms p99 {:.3} ms (n={})   added p50 {:.3} ms p99 {:.3} ms",
                pct(&relayed, 0.5),
                pct(&relayed, 0.99),
                relayed.len(),
                pct(&direct, 0.5),
                pct(&direct, 0.99),
                direct.len(),
                pct(&relayed, 0.5) - pct(&direct, 0.5),
                pct(&relayed, 0.99) - pct(&direct, 0.99),
            );
        }
        stop.store(true, Ordering::Relaxed);
        let _ = emitter.join();
    });
}
