//! Observer benchmarks.
//!
//! 1. Bytes of heap per buffered flow (a counting allocator around the
//!    system one), for L3/L4 flows with both endpoints enriched and for HTTP
//!    L7 flows, in a 65,535-flow buffer. Printed before the timed runs.
//! 2. Flows/s streamed by GetFlows over loopback gRPC (a 65,535-flow
//!    buffer replayed to a tonic client), without filters and with filters,
//!    next to a baseline in the same run: the same flows prost-encoded and
//!    decoded in memory (the floor cost of any gRPC delivery).
//!
//! Run: `FLOWD_SKIP_EBPF=1 cargo bench -p flowd --bench observer`
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "../tests/observer_common/mod.rs"]
mod observer_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowd::observer::{Observer, ObserverConfig};
use flowd_proto::flow::{Flow, FlowFilter};
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::{GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes};
use observer_common::*;
use prost::Message;

struct Counting;
static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the System allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds alloc's contract, which System.alloc shares.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        ALLOCATED.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: p was allocated by System with layout l (every alloc goes there).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as dealloc: p and l come from System.alloc.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CAP: usize = 65_535;

/// Heap bytes per flow of a full buffer (slots included), after a second
/// round of pushes so overwritten flows have been freed.
fn bytes_per_flow(make: impl Fn(u64) -> Flow) -> f64 {
    let before = ALLOCATED.load(Ordering::Relaxed);
    let (observer, mut writer) = Observer::new(ObserverConfig {
        capacity: CAP,
        ..Default::default()
    })
    .expect("config");
    for i in 0..2 * CAP as u64 {
        writer.push(&make(i));
    }
    let after = ALLOCATED.load(Ordering::Relaxed);
    assert_eq!(observer.stats().num_flows, CAP as u64);
    let b = (after - before) as f64 / CAP as f64;
    drop((observer, writer));
    b
}

fn memory_report() {
    let l34 = bytes_per_flow(tcp_flow);
    let l7 = bytes_per_flow(|i| http_flow(i, 200));
    let mixed = bytes_per_flow(|i| {
        if i % 4 == 0 {
            http_flow(i, 200)
        } else {
            tcp_flow(i)
        }
    });
    println!(
        "observer/memory: bytes per buffered flow (65535-flow buffer, incl. slots): \
         L3/L4 {l34:.0}, HTTP L7 {l7:.0}, 3:1 mix {mixed:.0}; target <= 1024; \
         full buffer of L7 flows = {:.1} MiB; size_of::<Flow>() = {}",
        l7 * CAP as f64 / (1 << 20) as f64,
        std::mem::size_of::<Flow>()
    );
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    srv: Server,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut srv = rt.block_on(Server::start(ObserverConfig {
        stream_queue: 256,
        ..config(CAP)
    }));
    // A realistic mix: TCP and UDP L3/L4 flows and HTTP responses.
    for i in 0..CAP as u64 {
        let f = match i % 4 {
            0 => http_flow(i, [200, 404, 503][(i as usize / 4) % 3]),
            1 => udp_flow(i),
            _ => tcp_flow(i),
        };
        srv.writer.push(&f);
    }
    Fixture { rt, srv }
}

/// Replays the whole buffer once; returns flows received.
async fn replay(
    client: &mut ObserverClient<tonic::transport::Channel>,
    req: GetFlowsRequest,
) -> u64 {
    let mut s = client.get_flows(req).await.expect("GetFlows").into_inner();
    let mut n = 0;
    while let Some(r) = s.message().await.expect("stream") {
        if let Some(ResponseTypes::Flow(_)) = r.response_types {
            n += 1;
        }
    }
    n
}

fn bench_get_flows(c: &mut Criterion) {
    memory_report();
    let fx = fixture();
    let client = fx.rt.block_on(fx.srv.client());
    let mut g = c.benchmark_group("observer/get_flows");
    g.throughput(Throughput::Elements(CAP as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));

    // Baseline: encode + decode of the same responses, no network, no ring.
    let responses: Vec<Vec<u8>> = (0..CAP as u64)
        .map(|i| {
            GetFlowsResponse {
                response_types: Some(ResponseTypes::Flow(tcp_flow(i))),
                node_name: "node-a".into(),
                time: Some(ts(i)),
            }
            .encode_to_vec()
        })
        .collect();
    g.bench_function("baseline_prost_decode_encode", |b| {
        b.iter(|| {
            let mut total = 0;
            for bytes in &responses {
                let r = GetFlowsResponse::decode(bytes.as_slice()).expect("decode");
                total += r.encoded_len();
            }
            total
        })
    });

    let cases: Vec<(&str, GetFlowsRequest, u64)> = vec![
        ("no_filter", GetFlowsRequest::default(), CAP as u64),
        (
            // Keeps the L7 responses with a 5xx status (1 in 12 flows).
            "whitelist_http_5xx",
            GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    http_status_code: vec!["5+".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
            (0..CAP as u64)
                .filter(|i| i % 4 == 0 && (i / 4) % 3 == 2)
                .count() as u64,
        ),
        (
            // Matches every flow through several checks: the filter cost
            // with full delivery.
            "whitelist_pod_label_all_match_blacklist_none",
            GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    source_pod: vec!["ecommerce/frontend".into()],
                    source_label: vec!["k8s:app=frontend".into()],
                    source_ip: vec!["10.244.0.0/16".into()],
                    ..Default::default()
                }],
                blacklist: vec![FlowFilter {
                    destination_pod: vec!["kube-system/etcd".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
            CAP as u64,
        ),
    ];
    for (name, req, expect) in cases {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut client = client.clone();
                let req = req.clone();
                fx.rt.block_on(async move {
                    let t = Instant::now();
                    for _ in 0..iters {
                        let n = replay(&mut client, req.clone()).await;
                        assert_eq!(n, expect, "{name}");
                    }
                    t.elapsed()
                })
            })
        });
    }
    g.finish();
    fx.rt.block_on(fx.srv.shutdown());
}

criterion_group!(benches, bench_get_flows);
criterion_main!(benches);
