//! Shared by the observer_* tests: an Observer served on 127.0.0.1:0 and
//! synthetic flows.
#![allow(dead_code)]
use std::net::SocketAddr;
use std::time::Duration;

use flowd::observer::{FlowWriter, Observer, ObserverConfig};
use flowd_proto::Timestamp;
use flowd_proto::flow::{
    self, CiliumEventType, Endpoint, Flow, FlowType, Http, Ip, IpVersion, L7FlowType, Layer4,
    Layer7, Tcp, TcpFlags, TrafficDirection, Udp, Verdict, Workload, layer4, layer7,
};
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::{GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// First synthetic flow time: 2026-01-01T00:00:00Z; flow `i` is `i` ms later.
pub const BASE_NS: u64 = 1_767_225_600_000_000_000;

pub fn ts(i: u64) -> Timestamp {
    Timestamp::from_unix_nanos(BASE_NS + i * 1_000_000)
}

pub struct Server {
    pub observer: Observer,
    pub writer: FlowWriter,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start(config: ObserverConfig) -> Self {
        let (observer, writer) = Observer::new(config).expect("valid observer config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = observer.clone();
        let task = tokio::spawn(async move {
            serving
                .serve_with_listener(listener, async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Self {
            observer,
            writer,
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> ObserverClient<Channel> {
        ObserverClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

pub fn config(capacity: usize) -> ObserverConfig {
    ObserverConfig {
        capacity,
        node_name: "node-a".into(),
        address: "10.0.0.1:4244".into(),
        ..Default::default()
    }
}

pub fn endpoint(ns: &str, pod: &str, app: &str) -> Endpoint {
    Endpoint {
        id: 1234,
        identity: 5678,
        cluster_name: "default".into(),
        namespace: ns.into(),
        labels: vec![
            format!("k8s:app={app}"),
            format!("k8s:io.kubernetes.pod.namespace={ns}"),
            "k8s:io.cilium.k8s.policy.cluster=default".into(),
        ],
        pod_name: pod.into(),
        workloads: vec![Workload {
            name: app.into(),
            kind: "Deployment".into(),
        }],
    }
}

/// An L3/L4 TCP flow number `i` (time `ts(i)`), both endpoints enriched:
/// ecommerce/frontend-… → ecommerce/order-service-… port 8080.
pub fn tcp_flow(i: u64) -> Flow {
    Flow {
        time: Some(ts(i)),
        uuid: format!("00000000-0000-4000-8000-{i:012}"),
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: "10.244.1.17".into(),
            destination: "10.244.2.33".into(),
            ip_version: IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: 40000 + (i % 20000) as u32,
                destination_port: 8080,
                flags: Some(TcpFlags {
                    syn: true,
                    ..Default::default()
                }),
            })),
        }),
        source: Some(endpoint(
            "ecommerce",
            "frontend-7d9f8b6c5-x2x7k",
            "frontend",
        )),
        destination: Some(endpoint(
            "ecommerce",
            "order-service-5c6b7d8f9-abcde",
            "order-service",
        )),
        r#type: FlowType::L3L4 as i32,
        node_name: "node-a".into(),
        event_type: Some(CiliumEventType {
            r#type: 4,
            sub_type: 0,
        }),
        traffic_direction: TrafficDirection::Egress as i32,
        is_reply: Some(flowd_proto::pbjson_types::BoolValue { value: false }),
        interface: Some(flow::NetworkInterface {
            index: 7,
            name: "lxc12ab34cd".into(),
        }),
        ..Default::default()
    }
}

/// A UDP flow to kube-system/coredns port 53.
pub fn udp_flow(i: u64) -> Flow {
    let mut f = tcp_flow(i);
    f.l4 = Some(Layer4 {
        protocol: Some(layer4::Protocol::Udp(Udp {
            source_port: 50000,
            destination_port: 53,
        })),
    });
    f.destination = Some(endpoint("kube-system", "coredns-abc12", "coredns"));
    f
}

/// An HTTP response L7 flow with status `code`.
pub fn http_flow(i: u64, code: u32) -> Flow {
    let mut f = tcp_flow(i);
    f.r#type = FlowType::L7 as i32;
    f.event_type = Some(CiliumEventType {
        r#type: 129,
        sub_type: 0,
    });
    f.is_reply = Some(flowd_proto::pbjson_types::BoolValue { value: true });
    f.l7 = Some(Layer7 {
        r#type: L7FlowType::Response as i32,
        latency_ns: 12_000_000,
        record: Some(layer7::Record::Http(Http {
            code,
            method: "GET".into(),
            url: "http://order-service.ecommerce.svc.cluster.local:8080/api/v1/orders/12345".into(),
            protocol: "HTTP/1.1".into(),
            headers: Vec::new(),
            url_truncated: false,
            ..Default::default()
        })),
        ..Default::default()
    });
    f
}

/// Index `i` of a flow built by the helpers above (from its time).
pub fn index_of(f: &Flow) -> u64 {
    let t = f.time.expect("flow time").as_unix_nanos() as u64;
    (t - BASE_NS) / 1_000_000
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Flow indices in stream order.
    pub flows: Vec<u64>,
    /// (source, num_events_lost) of each LostEvent, in order.
    pub lost: Vec<(i32, u64)>,
}

pub fn record(c: &mut Collected, r: GetFlowsResponse) {
    match r.response_types {
        Some(ResponseTypes::Flow(f)) => c.flows.push(index_of(&f)),
        Some(ResponseTypes::LostEvents(l)) => c.lost.push((l.source, l.num_events_lost)),
        other => panic!("unexpected response {other:?}"),
    }
}

/// Runs a non-follow GetFlows to its end.
pub async fn collect(client: &mut ObserverClient<Channel>, req: GetFlowsRequest) -> Collected {
    let mut stream = client.get_flows(req).await.expect("GetFlows").into_inner();
    let mut c = Collected::default();
    while let Some(r) = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("stream ended in time")
        .expect("stream item")
    {
        record(&mut c, r);
    }
    c
}
