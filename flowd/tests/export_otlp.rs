//! OTLP export against a collector stand-in: a tonic server implementing the
//! official OpenTelemetry LogsService and TraceService (opentelemetry-proto).
//! Checks the exact records received, retry while the collector is down, the
//! queue bound and the drop counters.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowd::export::otlp::{OtlpOptions, SINK};
use flowd::export::{ExportStats, Exporters, reason};
use flowd_proto::Timestamp;
use flowd_proto::flow::{
    Dns, Endpoint, Flow, Grpc, Http, Ip, L7FlowType, Layer4, Layer7, TrafficDirection, Udp,
    Verdict, layer4::Protocol, layer7::Record,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
    logs_service_server::{LogsService, LogsServiceServer},
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Collector {
    logs: Arc<Mutex<Vec<LogRecord>>>,
    spans: Arc<Mutex<Vec<Span>>>,
    resources: Arc<Mutex<Vec<Vec<KeyValue>>>>,
    calls: Arc<Mutex<u32>>,
    /// Answer every log export with this status.
    refuse: Option<tonic::Code>,
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        *self.calls.lock() += 1;
        if let Some(code) = self.refuse {
            return Err(Status::new(code, "refused by the test"));
        }
        for rl in req.into_inner().resource_logs {
            self.resources
                .lock()
                .push(rl.resource.map(|r| r.attributes).unwrap_or_default());
            for sl in rl.scope_logs {
                assert_eq!(sl.scope.as_ref().map(|s| s.name.as_str()), Some("flowd"));
                self.logs.lock().extend(sl.log_records);
            }
        }
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                self.spans.lock().extend(ss.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A running collector; `stop` shuts it down gracefully.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(c: &Collector, addr: SocketAddr) -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let svc_logs = LogsServiceServer::new(c.clone());
        let svc_traces = TraceServiceServer::new(c.clone());
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc_logs)
                .add_service(svc_traces)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = rx.await;
                    },
                )
                .await
                .unwrap();
        });
        (
            Self {
                stop: Some(tx),
                task,
            },
            addr,
        )
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn fast(addr: SocketAddr) -> OtlpOptions {
    OtlpOptions {
        queue_size: 100,
        batch_size: 10,
        flush_interval: Duration::from_millis(20),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
        node_name: "node-a".into(),
        ..OtlpOptions::new(format!("http://{addr}"))
    }
}

const T0: u64 = 1_700_000_000_000_000_000;

fn ep(ns: &str, pod: &str) -> Option<Endpoint> {
    Some(Endpoint {
        namespace: ns.into(),
        pod_name: pod.into(),
        ..Default::default()
    })
}

fn tcp_flow(i: u32) -> Flow {
    Flow {
        time: Some(Timestamp::from_unix_nanos(T0 + u64::from(i))),
        uuid: format!("00000000-0000-4000-8000-{i:012}"),
        verdict: Verdict::Forwarded as i32,
        node_name: "node-a".into(),
        traffic_direction: TrafficDirection::Egress as i32,
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.1.2".into(),
            ip_version: 1,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(Protocol::Tcp(flowd_proto::flow::Tcp {
                source_port: 40000,
                destination_port: 8080,
                flags: None,
            })),
        }),
        source: ep("shop", "frontend-1"),
        destination: ep("shop", "backend-1"),
        ..Default::default()
    }
}

fn http_response(i: u32, code: u32, latency_ns: u64) -> Flow {
    Flow {
        traffic_direction: TrafficDirection::Egress as i32,
        l7: Some(Layer7 {
            r#type: L7FlowType::Response as i32,
            latency_ns,
            record: Some(Record::Http(Http {
                code,
                method: "GET".into(),
                url: "http://backend/api/items".into(),
                protocol: "HTTP/1.1".into(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..tcp_flow(i)
    }
}

/// A gRPC call's RESPONSE record, observed at the client (EGRESS) or at the
/// server (INGRESS).
fn grpc_response(i: u32, status: u32, direction: TrafficDirection) -> Flow {
    Flow {
        traffic_direction: direction as i32,
        l7: Some(Layer7 {
            r#type: L7FlowType::Response as i32,
            latency_ns: 3_000_000,
            record: Some(Record::Http(Http {
                code: 200,
                method: "POST".into(),
                url: "http://inventory:50051/shop.inventory.v1.Inventory/Reserve".into(),
                protocol: "HTTP/2".into(),
                grpc: Some(Grpc {
                    service: "shop.inventory.v1.Inventory".into(),
                    method: "Reserve".into(),
                    status_code: Some(status),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..tcp_flow(i)
    }
}

fn dns_response(i: u32, latency_ns: u64) -> Flow {
    Flow {
        l4: Some(Layer4 {
            protocol: Some(Protocol::Udp(Udp {
                source_port: 5353,
                destination_port: 53,
            })),
        }),
        l7: Some(Layer7 {
            r#type: L7FlowType::Response as i32,
            latency_ns,
            record: Some(Record::Dns(Dns {
                query: "backend.shop.svc.cluster.local.".into(),
                ips: vec!["10.0.1.2".into()],
                qtypes: vec!["A".into()],
                rcode: 0,
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..tcp_flow(i)
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> &'a str {
    match attr(attrs, key) {
        Some(Value::StringValue(s)) => s,
        other => panic!("attribute {key}: {other:?}"),
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> i64 {
    match attr(attrs, key) {
        Some(Value::IntValue(v)) => *v,
        other => panic!("attribute {key}: {other:?}"),
    }
}

fn uuid_of(r: &LogRecord) -> &str {
    str_attr(&r.attributes, "flowd.flow.uuid")
}

#[tokio::test]
async fn collector_receives_exactly_the_expected_records_and_spans() {
    let c = Collector::default();
    let (server, addr) = Running::start(&c, "127.0.0.1:0".parse().unwrap()).await;
    let stats = ExportStats::default();
    let mut ex = Exporters::none(stats.clone());
    ex.add_otlp(OtlpOptions {
        l7_spans: true,
        ..fast(addr)
    })
    .unwrap();

    // A known mix: 25 TCP flows, 10 HTTP responses (2 of them 503), 5 DNS
    // responses, and one HTTP response without latency (no span).
    let mut flows = Vec::new();
    for i in 0..25 {
        flows.push(tcp_flow(i));
    }
    for i in 25..35 {
        let code = if i % 5 == 0 { 503 } else { 200 };
        flows.push(http_response(i, code, 1_000_000 * u64::from(i)));
    }
    for i in 35..40 {
        flows.push(dns_response(i, 250_000));
    }
    flows.push(http_response(40, 200, 0));
    // gRPC: OK and NOT_FOUND at the client, NOT_FOUND and INTERNAL at the
    // server (a server span fails on INTERNAL, not on NOT_FOUND).
    for (i, status, dir) in [
        (41, 0, TrafficDirection::Egress),
        (42, 5, TrafficDirection::Egress),
        (43, 5, TrafficDirection::Ingress),
        (44, 13, TrafficDirection::Ingress),
    ] {
        flows.push(grpc_response(i, status, dir));
    }
    for f in &flows {
        ex.push_flow(f.clone());
    }
    let want_spans = flows
        .iter()
        .filter(|f| f.l7.as_ref().is_some_and(|l| l.latency_ns > 0))
        .count();
    wait_for("all records", Duration::from_secs(20), || {
        c.logs.lock().len() >= flows.len() && c.spans.lock().len() >= want_spans
    })
    .await;
    ex.shutdown(Duration::from_secs(5)).await;

    let logs = c.logs.lock().clone();
    assert_eq!(logs.len(), flows.len());
    for (r, f) in logs.iter().zip(&flows) {
        assert_eq!(uuid_of(r), f.uuid);
        assert_eq!(r.event_name, "flowd.flow");
        assert_eq!(
            r.time_unix_nano,
            u64::try_from(f.time.unwrap().as_unix_nanos()).unwrap()
        );
        // The body is the flow's Hubble JSON.
        let body = match r.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(Value::StringValue(s)) => s,
            other => panic!("body: {other:?}"),
        };
        assert_eq!(&serde_json::from_str::<Flow>(body).unwrap(), f);
        let a = &r.attributes;
        assert_eq!(str_attr(a, "source.address"), "10.0.0.1");
        assert_eq!(str_attr(a, "destination.address"), "10.0.1.2");
        assert_eq!(str_attr(a, "network.type"), "ipv4");
        assert_eq!(str_attr(a, "source.k8s.pod.name"), "frontend-1");
        assert_eq!(str_attr(a, "destination.k8s.pod.name"), "backend-1");
        // The local pod: the source at egress, the destination at ingress.
        let local = if f.traffic_direction == TrafficDirection::Egress as i32 {
            "frontend-1"
        } else {
            "backend-1"
        };
        assert_eq!(str_attr(a, "k8s.pod.name"), local);
        assert_eq!(str_attr(a, "k8s.namespace.name"), "shop");
        assert_eq!(str_attr(a, "flowd.verdict"), "FORWARDED");
        match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
            Some(Record::Http(h)) if h.grpc.is_some() => {
                let g = h.grpc.as_ref().unwrap();
                assert_eq!(str_attr(a, "network.protocol.version"), "2");
                assert_eq!(str_attr(a, "http.request.method"), "POST");
                assert_eq!(str_attr(a, "rpc.system"), "grpc");
                assert_eq!(str_attr(a, "rpc.service"), "shop.inventory.v1.Inventory");
                assert_eq!(str_attr(a, "rpc.method"), "Reserve");
                assert_eq!(
                    int_attr(a, "rpc.grpc.status_code"),
                    i64::from(g.status_code.unwrap())
                );
            }
            Some(Record::Http(h)) => {
                assert!(attr(a, "rpc.system").is_none());
                assert_eq!(str_attr(a, "network.transport"), "tcp");
                assert_eq!(str_attr(a, "network.protocol.name"), "http");
                assert_eq!(str_attr(a, "network.protocol.version"), "1.1");
                assert_eq!(str_attr(a, "http.request.method"), "GET");
                assert_eq!(int_attr(a, "http.response.status_code"), i64::from(h.code));
                assert_eq!(str_attr(a, "url.full"), h.url);
            }
            Some(Record::Dns(_)) => {
                assert_eq!(str_attr(a, "network.transport"), "udp");
                assert_eq!(int_attr(a, "destination.port"), 53);
                assert_eq!(str_attr(a, "network.protocol.name"), "dns");
                assert_eq!(
                    str_attr(a, "dns.question.name"),
                    "backend.shop.svc.cluster.local"
                );
                assert_eq!(str_attr(a, "flowd.dns.rcode"), "No Error");
            }
            _ => {
                assert_eq!(str_attr(a, "network.transport"), "tcp");
                assert_eq!(int_attr(a, "source.port"), 40000);
                assert_eq!(int_attr(a, "destination.port"), 8080);
                assert!(attr(a, "network.protocol.name").is_none());
            }
        }
    }
    for res in c.resources.lock().iter() {
        assert_eq!(str_attr(res, "service.name"), "flowd");
        assert_eq!(str_attr(res, "k8s.node.name"), "node-a");
    }

    let spans = c.spans.lock().clone();
    assert_eq!(spans.len(), want_spans);
    let with_latency: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.l7.as_ref().is_some_and(|l| l.latency_ns > 0))
        .collect();
    for (s, f) in spans.iter().zip(&with_latency) {
        let l7 = f.l7.as_ref().unwrap();
        let end = u64::try_from(f.time.unwrap().as_unix_nanos()).unwrap();
        assert_eq!(s.end_time_unix_nano, end);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, l7.latency_ns);
        assert_eq!(s.trace_id.len(), 16);
        assert_eq!(s.span_id.len(), 8);
        let grpc = match &l7.record {
            Some(Record::Http(h)) => h.grpc.as_ref(),
            _ => None,
        };
        let error = match (&l7.record, grpc) {
            // The client's NOT_FOUND and the server's INTERNAL.
            (_, Some(_)) => f.uuid.ends_with("042") || f.uuid.ends_with("044"),
            (Some(Record::Http(h)), None) => h.code >= 500,
            _ => false,
        };
        let code = s.status.as_ref().map_or(0, |st| st.code);
        assert_eq!(code == 2, error, "span {} status", s.name);
        match (&l7.record, grpc) {
            (_, Some(_)) => assert_eq!(s.name, "shop.inventory.v1.Inventory/Reserve"),
            (Some(Record::Http(_)), None) => assert_eq!(s.name, "GET"),
            _ => assert_eq!(s.name, "DNS A"),
        }
    }
    assert_eq!(stats.exported(SINK), flows.len() as u64);
    assert_eq!(stats.dropped(SINK, reason::QUEUE_FULL), 0);
    server.stop().await;
}

#[tokio::test]
async fn collector_restart_loses_nothing_within_the_queue_bound_and_counts_the_rest() {
    let c = Collector::default();
    let (server, addr) = Running::start(&c, "127.0.0.1:0".parse().unwrap()).await;
    let stats = ExportStats::default();
    let mut ex = Exporters::none(stats.clone());
    let opts = fast(addr);
    let bound = opts.queue_size as u32;
    ex.add_otlp(opts).unwrap();
    let mut next = 0u32;
    let mut push = |ex: &Exporters, n: u32| {
        let first = next;
        for i in first..first + n {
            ex.push_flow(tcp_flow(i));
        }
        next += n;
        first..first + n
    };

    // Up: delivered.
    let a = push(&ex, 20);
    wait_for("first 20", Duration::from_secs(20), || {
        c.logs.lock().len() == 20
    })
    .await;
    // Delivered means released too (the server may see a batch before the
    // client has its answer).
    wait_for("queue empty", Duration::from_secs(20), || {
        stats.queued(SINK) == 0
    })
    .await;

    // Down, fewer events than the bound: all kept and delivered after restart.
    server.stop().await;
    let b = push(&ex, bound - 40);
    let seen_down = |stats: &ExportStats, before: u64| stats.errors(SINK, "unavailable") > before;
    wait_for("an export attempt to fail", Duration::from_secs(20), || {
        seen_down(&stats, 0)
    })
    .await;
    let (server, _) = Running::start(&c, addr).await;
    let total = a.len() + b.len();
    wait_for("within-bound backlog", Duration::from_secs(30), || {
        c.logs.lock().len() == total
    })
    .await;
    assert_eq!(stats.dropped(SINK, reason::QUEUE_FULL), 0);
    wait_for("queue empty", Duration::from_secs(20), || {
        stats.queued(SINK) == 0
    })
    .await;

    // Down, more than the bound: exactly `bound` kept, the rest counted.
    server.stop().await;
    let d = push(&ex, bound + 150);
    assert_eq!(stats.dropped(SINK, reason::QUEUE_FULL), 150);
    let failures = stats.errors(SINK, "unavailable");
    wait_for("an export attempt to fail", Duration::from_secs(20), || {
        seen_down(&stats, failures)
    })
    .await;
    let (server, _) = Running::start(&c, addr).await;
    let total = total + bound as usize;
    wait_for("bounded backlog", Duration::from_secs(30), || {
        c.logs.lock().len() == total
    })
    .await;
    ex.shutdown(Duration::from_secs(5)).await;

    let got: Vec<String> = c
        .logs
        .lock()
        .iter()
        .map(|r| uuid_of(r).to_string())
        .collect();
    let want: Vec<String> = a
        .chain(b)
        .chain(d.start..d.start + bound)
        .map(|i| tcp_flow(i).uuid)
        .collect();
    assert_eq!(got, want);
    assert_eq!(stats.exported(SINK), total as u64);
    assert_eq!(stats.dropped(SINK, reason::QUEUE_FULL), 150);
    server.stop().await;
}

#[tokio::test]
async fn refused_batches_are_dropped_as_rejected_without_retry() {
    let c = Collector {
        refuse: Some(tonic::Code::InvalidArgument),
        ..Default::default()
    };
    let (server, addr) = Running::start(&c, "127.0.0.1:0".parse().unwrap()).await;
    let stats = ExportStats::default();
    let mut ex = Exporters::none(stats.clone());
    ex.add_otlp(fast(addr)).unwrap();
    for i in 0..30 {
        ex.push_flow(tcp_flow(i));
    }
    wait_for("rejections", Duration::from_secs(20), || {
        stats.dropped(SINK, reason::REJECTED) == 30
    })
    .await;
    ex.shutdown(Duration::from_secs(1)).await;
    // Batches of 10, each tried once.
    assert_eq!(*c.calls.lock(), 3);
    assert_eq!(stats.exported(SINK), 0);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_with_the_collector_down_counts_what_is_left() {
    // A port nobody listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let stats = ExportStats::default();
    let mut ex = Exporters::none(stats.clone());
    ex.add_otlp(fast(addr)).unwrap();
    for i in 0..25 {
        ex.push_flow(tcp_flow(i));
    }
    ex.shutdown(Duration::from_millis(200)).await;
    assert_eq!(stats.dropped(SINK, reason::SHUTDOWN), 25);
    assert_eq!(stats.exported(SINK), 0);
}
