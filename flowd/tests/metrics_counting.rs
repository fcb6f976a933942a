//! The counting rule (`flowd-metrics-count-once`, metrics::counting) on a
//! simulated two-node cluster: every packet of an exchange is turned into the
//! records each observation point on its path gives (sender veth, uplinks,
//! receiver veth), enriched by that node's real EndpointStore and fed to that
//! node's Metrics. Summed over the nodes (what a PromQL `sum` sees), each
//! exchange counts once per reporter — same node, across nodes, through a
//! ClusterIP, with the world — and with the rule off every record counts.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod metrics_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use flowd::endpoints::manifest::parse_manifest;
use flowd::endpoints::model::{Kind, ObjectKey};
use flowd::endpoints::{EndpointStore, Hook, Interface, InterfaceKind, StoreConfig, Update};
use flowd::metrics::{Metrics, MetricsOptions};
use flowd::options::metrics::MetricsSpec;
use flowd_proto::flow::{
    CiliumEventType, Dns, Flow, FlowType, Http, Ip, IpVersion, L7FlowType, Layer4, Layer7,
    NetworkInterface, TcpFlags, Verdict, layer4, layer7,
};
use metrics_support::{Sample, parse};

const CLUSTER: &str = r#"
apiVersion: v1
kind: List
items:
- kind: Node
  metadata: {name: node-a}
  spec: {podCIDR: 10.244.1.0/24}
  status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
- kind: Node
  metadata: {name: node-b}
  spec: {podCIDR: 10.244.2.0/24}
  status: {addresses: [{type: InternalIP, address: 172.18.0.3}]}
- kind: Pod
  metadata: {name: coredns-1, namespace: kube-system, uid: u-dns, labels: {k8s-app: kube-dns}}
  spec: {nodeName: node-a}
  status: {podIP: 10.244.1.2}
- kind: Pod
  metadata: {name: frontend-1, namespace: ecommerce, uid: u-fe, labels: {app: frontend}}
  spec: {nodeName: node-a}
  status: {podIP: 10.244.1.3}
- kind: Pod
  metadata: {name: order-1, namespace: ecommerce, uid: u-order, labels: {app: order}}
  spec: {nodeName: node-a}
  status: {podIP: 10.244.1.4}
- kind: Pod
  metadata: {name: inventory-1, namespace: ecommerce, uid: u-inv, labels: {app: inventory}}
  spec: {nodeName: node-b}
  status: {podIP: 10.244.2.2}
- kind: Service
  metadata: {name: order, namespace: ecommerce}
  spec: {clusterIP: 10.96.0.101}
"#;

const WORLD: &str = "198.51.100.10";
const UPLINK: u32 = 2;

/// Pods: (namespace/name, ip, node, veth ifindex).
const PODS: [(&str, &str, &str, u32); 4] = [
    ("kube-system/coredns-1", "10.244.1.2", "node-a", 10),
    ("ecommerce/frontend-1", "10.244.1.3", "node-a", 11),
    ("ecommerce/order-1", "10.244.1.4", "node-a", 12),
    ("ecommerce/inventory-1", "10.244.2.2", "node-b", 20),
];

/// The pod behind a ClusterIP (what the node's DNAT does).
const VIPS: [(&str, &str); 1] = [("10.96.0.101", "10.244.1.4")];

const NODES: [&str; 2] = ["node-a", "node-b"];

fn store(node: &str) -> Arc<EndpointStore> {
    let store = EndpointStore::new(StoreConfig {
        node_name: node.into(),
        cluster_name: "default".into(),
        cluster_cidrs: vec!["10.96.0.0/16".parse().unwrap()],
        host_addresses: vec![],
    });
    let objects = parse_manifest(CLUSTER, false).unwrap();
    for kind in [Kind::Node, Kind::Pod, Kind::Service] {
        store.apply(Update::Replace {
            kind,
            objects: objects.clone(),
        });
    }
    store.set_pod_veths(PODS.iter().filter(|p| p.2 == node).map(|p| {
        let (ns, name) = p.0.split_once('/').unwrap();
        Interface {
            ifindex: p.3,
            name: format!("lxc{}", p.3),
            kind: InterfaceKind::PodVeth {
                pod: ObjectKey::new(ns, name),
            },
        }
    }));
    store.set_uplinks([Interface {
        ifindex: UPLINK,
        name: "eth0".into(),
        kind: InterfaceKind::Uplink,
    }]);
    store
}

fn pod_at(ip: &str) -> Option<(&'static str, u32)> {
    PODS.iter().find(|p| p.1 == ip).map(|p| (p.2, p.3))
}

fn backend(ip: &str) -> &str {
    VIPS.iter().find(|v| v.0 == ip).map_or(ip, |v| v.1)
}

/// What one packet looks like on the wire: addresses as the client sees
/// them (a ClusterIP is translated on the client's node, after its veth).
#[derive(Clone)]
struct Packet {
    src: String,
    dst: String,
    proto: Proto,
}

#[derive(Clone)]
enum Proto {
    Tcp(TcpFlags, u32, u32),
    Http(L7FlowType, bool, &'static str, u32, u32, u32),
    Dns(bool, u32, u32),
}

struct Cluster {
    nodes: BTreeMap<&'static str, (Arc<EndpointStore>, Metrics)>,
}

impl Cluster {
    fn new(count_once: bool) -> Cluster {
        let spec = "dns:query http tcp flow";
        let nodes = NODES
            .iter()
            .map(|n| {
                let m = Metrics::new(&MetricsOptions {
                    spec: MetricsSpec::parse(spec).unwrap(),
                    count_once,
                    ..MetricsOptions::default()
                });
                (*n, (store(n), m))
            })
            .collect();
        Cluster { nodes }
    }

    /// Gives the packet to every observation point on its path; returns how
    /// many records that made.
    fn send(&self, p: &Packet) -> usize {
        let mut points = Vec::new();
        // A ClusterIP is only ever seen at the client's veth: the client's
        // node translates it right behind that veth (both ways).
        let (real_src, real_dst) = (backend(&p.src), backend(&p.dst));
        let src_pod = pod_at(real_src);
        let dst_pod = pod_at(real_dst);
        if let Some((node, veth)) = src_pod {
            // The sender's veth (ingress hook) sees the sender's own address.
            points.push((node, veth, Hook::Ingress, real_src, p.dst.as_str()));
        }
        let same_node = matches!((src_pod, dst_pod), (Some(a), Some(b)) if a.0 == b.0);
        if !same_node {
            // Leaving the sender's node, entering the receiver's.
            if let Some((node, _)) = src_pod {
                points.push((node, UPLINK, Hook::Egress, real_src, real_dst));
            }
            if let Some((node, _)) = dst_pod {
                points.push((node, UPLINK, Hook::Ingress, real_src, real_dst));
            }
        }
        if let Some((node, veth)) = dst_pod {
            points.push((node, veth, Hook::Egress, p.src.as_str(), real_dst));
        }
        for (node, ifindex, hook, src, dst) in &points {
            let (store, m) = &self.nodes[node];
            let mut f = record(p, src, dst, *ifindex);
            store.enrich(&mut f, Some(*hook));
            m.process(&f);
        }
        points.len()
    }

    /// Sum over the nodes of the samples named `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.nodes
            .values()
            .flat_map(|(_, m)| parse(&m.encode_prometheus()))
            .filter(|s: &Sample| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn record(p: &Packet, src: &str, dst: &str, ifindex: u32) -> Flow {
    let mut f = Flow {
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: src.into(),
            destination: dst.into(),
            ip_version: IpVersion::IPv4 as i32,
            ..Ip::default()
        }),
        interface: Some(NetworkInterface {
            index: ifindex,
            name: String::new(),
        }),
        ..Flow::default()
    };
    let l4 = |p: layer4::Protocol| Some(Layer4 { protocol: Some(p) });
    let tcp = |sp, dp, flags| {
        l4(layer4::Protocol::Tcp(flowd_proto::flow::Tcp {
            source_port: sp,
            destination_port: dp,
            flags,
        }))
    };
    match &p.proto {
        // L3/L4 records carry no is_reply (the datapath does not know it).
        Proto::Tcp(flags, sp, dp) => {
            f.r#type = FlowType::L3L4 as i32;
            f.event_type = Some(CiliumEventType {
                r#type: 4,
                sub_type: 0,
            });
            f.l4 = tcp(*sp, *dp, Some(*flags));
        }
        Proto::Http(typ, reply, method, code, sp, dp) => {
            f.r#type = FlowType::L7 as i32;
            f.is_reply = Some((*reply).into());
            f.l4 = tcp(*sp, *dp, None);
            f.l7 = Some(Layer7 {
                r#type: *typ as i32,
                latency_ns: if *reply { 3_000_000 } else { 0 },
                record: Some(layer7::Record::Http(Http {
                    code: *code,
                    method: method.to_string(),
                    url: "http://svc/x".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Http::default()
                })),
                ..Layer7::default()
            });
        }
        Proto::Dns(reply, sp, dp) => {
            f.r#type = FlowType::L7 as i32;
            f.is_reply = Some((*reply).into());
            f.l4 = l4(layer4::Protocol::Udp(flowd_proto::flow::Udp {
                source_port: *sp,
                destination_port: *dp,
            }));
            f.l7 = Some(Layer7 {
                r#type: if *reply {
                    L7FlowType::Response
                } else {
                    L7FlowType::Request
                } as i32,
                record: Some(layer7::Record::Dns(Dns {
                    query: "order.ecommerce.svc.cluster.local.".into(),
                    ips: if *reply {
                        vec!["10.96.0.101".into()]
                    } else {
                        vec![]
                    },
                    qtypes: vec!["A".into()],
                    rrtypes: if *reply { vec!["A".into()] } else { vec![] },
                    ..Dns::default()
                })),
                ..Layer7::default()
            });
        }
    }
    f
}

fn flags(syn: bool, ack: bool, fin: bool) -> TcpFlags {
    TcpFlags {
        syn,
        ack,
        fin,
        ..TcpFlags::default()
    }
}

/// One HTTP exchange on its own connection: handshake, request, response,
/// both FINs. Returns the number of records made.
fn http_exchange(c: &Cluster, client: &str, server: &str, port: u32) -> usize {
    let sport = 40_000 + port;
    let fwd = |proto| Packet {
        src: client.into(),
        dst: server.into(),
        proto,
    };
    let back = |proto| Packet {
        src: server.into(),
        dst: client.into(),
        proto,
    };
    [
        fwd(Proto::Tcp(flags(true, false, false), sport, port)),
        back(Proto::Tcp(flags(true, true, false), port, sport)),
        fwd(Proto::Http(
            L7FlowType::Request,
            false,
            "GET",
            0,
            sport,
            port,
        )),
        back(Proto::Http(
            L7FlowType::Response,
            true,
            "GET",
            200,
            port,
            sport,
        )),
        fwd(Proto::Tcp(flags(false, true, true), sport, port)),
        back(Proto::Tcp(flags(false, true, true), port, sport)),
    ]
    .iter()
    .map(|p| c.send(p))
    .sum()
}

/// The exchanges: (client, server as the client addresses it).
const EXCHANGES: [(&str, &str, &str); 5] = [
    ("same node", "10.244.1.3", "10.244.1.4"),
    ("same node through a ClusterIP", "10.244.1.3", "10.96.0.101"),
    ("across nodes", "10.244.1.3", "10.244.2.2"),
    ("pod to world", "10.244.2.2", WORLD),
    ("world to pod", WORLD, "10.244.1.3"),
];

#[test]
fn each_exchange_counts_once_per_reporter() {
    for (what, client, server) in EXCHANGES {
        let c = Cluster::new(true);
        http_exchange(&c, client, server, 8080);
        let client_pod = pod_at(client).is_some();
        let server_pod = pod_at(backend(server)).is_some();
        let ctx = format!("{what}: {client} -> {server}");
        // http: once per reporter that is a pod.
        for (reporter, is_pod) in [("client", client_pod), ("server", server_pod)] {
            let want = f64::from(u8::from(is_pod));
            let l = [("reporter", reporter), ("method", "GET")];
            assert_eq!(
                c.sum("hubble_http_requests_total", &l),
                want,
                "{ctx}: requests {reporter}"
            );
            let l = [("reporter", reporter), ("status", "200")];
            assert_eq!(
                c.sum("hubble_http_responses_total", &l),
                want,
                "{ctx}: responses {reporter}"
            );
            let l = [("reporter", reporter)];
            assert_eq!(
                c.sum("hubble_http_request_duration_seconds_count", &l),
                want,
                "{ctx}: histogram {reporter}"
            );
        }
        assert_eq!(
            c.sum("hubble_http_requests_total", &[("reporter", "unknown")]),
            0.0,
            "{ctx}: no uplink sighting counted"
        );
        // tcp: every flag once per connection (each FIN once per side).
        for (flag, n) in [("SYN", 1.0), ("SYN-ACK", 1.0), ("FIN", 2.0)] {
            assert_eq!(
                c.sum("hubble_tcp_flags_total", &[("flag", flag)]),
                n,
                "{ctx}: {flag}"
            );
        }
    }
}

#[test]
fn dns_exchange_counts_once() {
    // A pod on each node asks coredns (node-a); the world asks it too.
    for client in ["10.244.1.3", "10.244.2.2", WORLD] {
        let c = Cluster::new(true);
        c.send(&Packet {
            src: client.into(),
            dst: "10.244.1.2".into(),
            proto: Proto::Dns(false, 5353, 53),
        });
        c.send(&Packet {
            src: "10.244.1.2".into(),
            dst: client.into(),
            proto: Proto::Dns(true, 53, 5353),
        });
        assert_eq!(c.sum("hubble_dns_queries_total", &[]), 1.0, "{client}");
        assert_eq!(
            c.sum("hubble_dns_responses_total", &[("rcode", "No Error")]),
            1.0,
            "{client}"
        );
        assert_eq!(
            c.sum("hubble_dns_response_types_total", &[("type", "A")]),
            1.0,
            "{client}"
        );
    }
}

#[test]
fn without_the_rule_every_record_counts() {
    for (what, client, server) in EXCHANGES {
        let on = Cluster::new(true);
        let off = Cluster::new(false);
        let records = http_exchange(&on, client, server, 8080);
        assert_eq!(http_exchange(&off, client, server, 8080), records);
        // hubble_flows_processed_total keeps every record either way.
        for c in [&on, &off] {
            assert_eq!(
                c.sum("hubble_flows_processed_total", &[]),
                records as f64,
                "{what}"
            );
        }
        // Off: each TCP packet counts at every point on its path (6 packets,
        // 4 of them TCP-only records; SYN is the first of them).
        let syn_points = on.sum(
            "hubble_flows_processed_total",
            &[("type", "Trace"), ("protocol", "TCP")],
        ) / 4.0;
        assert_eq!(
            off.sum("hubble_tcp_flags_total", &[("flag", "SYN")]),
            syn_points,
            "{what}"
        );
        assert!(
            off.sum("hubble_http_requests_total", &[]) >= on.sum("hubble_http_requests_total", &[]),
            "{what}"
        );
    }
}
