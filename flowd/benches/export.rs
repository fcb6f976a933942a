//! Export benchmarks: flows/s through each sink, end to end (pushed by the
//! pipeline side → written / accepted by the collector), next to baselines
//! measured in the same run:
//!
//! * file: the same flows JSON-encoded into memory (`baseline_json_encode`),
//!   then the file sink (encode + write + rotation at 10 MiB, 5 backups),
//!   with and without a field mask;
//! * otlp: the same batches built and prost-encoded in memory
//!   (`baseline_otlp_encode`), then the OTLP sink sending to an in-process
//!   tonic collector (opentelemetry-proto LogsService) over loopback;
//! * pipeline side: ns per `Exporters::push_flow` (what the event loop pays).
//!
//! Run: `FLOWD_SKIP_EBPF=1 cargo bench -p flowd --bench export`
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "../tests/observer_common/mod.rs"]
mod observer_common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowd::export::file::{self, FileOptions};
use flowd::export::otlp::{self, OtlpOptions};
use flowd::export::{ExportEvent, ExportStats, Exporters, Selection, reason};
use flowd_proto::flow::Flow;
use observer_common::{http_flow, tcp_flow, udp_flow};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
    logs_service_server::{LogsService, LogsServiceServer},
};
use prost::Message;

/// Flows per measured run.
const N: usize = 20_000;

fn flows() -> Vec<Flow> {
    (0..N as u64)
        .map(|i| match i % 4 {
            0 => http_flow(i, [200, 404, 503][(i as usize / 4) % 3]),
            1 => udp_flow(i),
            _ => tcp_flow(i),
        })
        .collect()
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn bench_file(c: &mut Criterion) {
    let flows = flows();
    let rt = rt();
    let dir = Dir(std::env::temp_dir().join(format!("flowd-bench-export-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let mut g = c.benchmark_group("export/file");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(12));

    let events: Vec<ExportEvent> = flows
        .iter()
        .map(|f| ExportEvent::Flow(Arc::new(f.clone())))
        .collect();
    g.bench_function("baseline_json_encode", |b| {
        let mut line = Vec::with_capacity(4096);
        b.iter(|| {
            let mut total = 0;
            for ev in &events {
                line.clear();
                file::encode_line(ev, &Selection::default(), "", &mut line).expect("encode");
                total += line.len();
            }
            total
        })
    });

    let masked =
        Selection::new(&[], &[], &["time".into(), "source".into(), "l4".into()]).expect("mask");
    for (name, selection) in [("sink", Selection::default()), ("sink_fieldmask", masked)] {
        let path = dir.0.join(format!("{name}.log"));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let stats = ExportStats::default();
                    let mut ex = Exporters::none(stats.clone());
                    ex.add_file(FileOptions {
                        selection: selection.clone(),
                        queue_size: N + 1,
                        ..FileOptions::new(path.to_string_lossy())
                    })
                    .expect("file sink");
                    let batch = flows.clone();
                    let t = Instant::now();
                    for f in batch {
                        ex.push_flow(f);
                    }
                    rt.block_on(ex.shutdown(Duration::ZERO));
                    total += t.elapsed();
                    assert_eq!(stats.exported(file::SINK), N as u64);
                }
                total
            })
        });
    }

    // What the event loop pays per flow (the sink drains concurrently).
    g.bench_function("push_only", |b| {
        let path = dir.0.join("push.log");
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let stats = ExportStats::default();
                let mut ex = Exporters::none(stats.clone());
                ex.add_file(FileOptions {
                    queue_size: N + 1,
                    ..FileOptions::new(path.to_string_lossy())
                })
                .expect("file sink");
                let batch = flows.clone();
                let t = Instant::now();
                for f in batch {
                    ex.push_flow(f);
                }
                total += t.elapsed();
                rt.block_on(ex.shutdown(Duration::ZERO));
                assert_eq!(stats.dropped(file::SINK, reason::QUEUE_FULL), 0);
            }
            total
        })
    });
    g.finish();
}

#[derive(Clone, Default)]
struct Counting(Arc<AtomicU64>);

#[tonic::async_trait]
impl LogsService for Counting {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let n: usize = req
            .into_inner()
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

fn bench_otlp(c: &mut Criterion) {
    let flows = flows();
    let rt = rt();
    let collector = Counting::default();
    let addr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let svc = LogsServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        addr
    });
    let mut g = c.benchmark_group("export/otlp");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));

    let events: Vec<ExportEvent> = flows
        .iter()
        .map(|f| ExportEvent::Flow(Arc::new(f.clone())))
        .collect();
    let resource = otlp::resource("node-a", "");
    g.bench_function("baseline_otlp_encode", |b| {
        b.iter(|| {
            let mut total = 0;
            for chunk in events.chunks(512) {
                total += otlp::logs_request(&resource, chunk).encode_to_vec().len();
            }
            total
        })
    });

    g.bench_function("sink_loopback_collector", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let stats = ExportStats::default();
                let mut ex = Exporters::none(stats.clone());
                let before = collector.0.load(Ordering::Relaxed);
                rt.block_on(async {
                    ex.add_otlp(OtlpOptions {
                        queue_size: N + 1,
                        flush_interval: Duration::from_millis(5),
                        ..OtlpOptions::new(format!("http://{addr}"))
                    })
                    .expect("otlp sink")
                });
                let batch = flows.clone();
                let t = Instant::now();
                for f in batch {
                    ex.push_flow(f);
                }
                rt.block_on(ex.shutdown(Duration::from_secs(30)));
                total += t.elapsed();
                assert_eq!(collector.0.load(Ordering::Relaxed) - before, N as u64);
                assert_eq!(stats.exported(otlp::SINK), N as u64);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench_file, bench_otlp);
criterion_main!(benches);
