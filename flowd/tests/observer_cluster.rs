//! The Observer API of flowd observing the lab cluster's real traffic (root):
//! a gRPC client queries each node's flowd directly (node-a first) and checks
//! every RPC and every GetFlows filter with exact counts.
//!
//! Expected values come from the traffic report and the lab state, through
//! this model of what flowd records for one L7 exchange (HTTP request/response,
//! a gRPC call as the HTTP/2 request it is, or DNS query/answer) between a
//! client and a server:
//! - on the client pod's node: a REQUEST flow (client → server) and a RESPONSE
//!   flow (server → client, reply), both with traffic direction EGRESS;
//! - on the server pod's node: the same pair with direction INGRESS;
//! - the RESPONSE carries the HTTP status / DNS rcode, both carry the method,
//!   URL and query. The outside world is no pod: only its client side exists.
//!
//! L3/L4 flows (connection setup, ARP, periodic updates) have no such model;
//! the cases that count them compare against the unfiltered buffer instead.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use flowd_lab::cluster::{Cluster, ClusterOptions};
use flowd_lab::state::{LabState, PodState};
use flowd_lab::traffic::TrafficReport;
use flowd_proto::Timestamp;
use flowd_proto::flow::{
    EventTypeFilter, Flow, FlowFilter, TcpFlags, TrafficDirection, Verdict, Workload,
};
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::{GetFlowsRequest, GetNamespacesRequest, GetNodesRequest};
use flowd_proto::relay::NodeState;

/// Hubble's event type of L7 flows (MessageTypeAccessLog) and of L3/L4 traces.
const L7: i32 = 129;
const L34: i32 = 4;
/// Small enough to check max_flows, large enough for the mix twice.
const CAPACITY: u64 = 4095;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Http,
    Dns,
}

/// One L7 flow the model expects on a node, `count` times.
#[derive(Clone, Debug)]
struct Expected {
    kind: Kind,
    direction: TrafficDirection,
    reply: bool,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    src: Option<PodState>,
    dst: Option<PodState>,
    /// The server's port (destination of the request, source of the reply).
    server_port: u16,
    method: String,
    path: String,
    /// Response only.
    status: Option<u16>,
    query: String,
    count: u64,
}

impl Expected {
    fn src_ns(&self) -> Option<&str> {
        self.src.as_ref().map(|p| p.namespace.as_str())
    }
    fn dst_ns(&self) -> Option<&str> {
        self.dst.as_ref().map(|p| p.namespace.as_str())
    }
    fn src_deploy(&self) -> Option<&str> {
        self.src.as_ref().map(|p| p.deployment.as_str())
    }
    fn dst_deploy(&self) -> Option<&str> {
        self.dst.as_ref().map(|p| p.deployment.as_str())
    }
    fn dst_port(&self) -> Option<u16> {
        (!self.reply).then_some(self.server_port)
    }
}

/// The model's L7 flows on `node` for the exchanges of `report`.
fn model(state: &LabState, report: &TrafficReport, node: &str) -> Vec<Expected> {
    let pod = |ip: Ipv4Addr| state.pod_by_ip(ip).cloned();
    let mut out = Vec::new();
    let mut exchange = |proto: Expected, client: Ipv4Addr, server: Ipv4Addr| {
        let sides = [
            (client, TrafficDirection::Egress),
            (server, TrafficDirection::Ingress),
        ];
        for (ip, direction) in sides {
            if pod(ip).is_none_or(|p| p.node != node) {
                continue;
            }
            let request = Expected {
                direction,
                status: None,
                ..proto.clone()
            };
            let response = Expected {
                direction,
                reply: true,
                src_ip: proto.dst_ip,
                dst_ip: proto.src_ip,
                src: proto.dst.clone(),
                dst: proto.src.clone(),
                ..proto.clone()
            };
            out.push(request);
            out.push(response);
        }
    };
    // gRPC calls are HTTP/2 requests: POST of the method's path, :status 200.
    let grpc: Vec<_> = report.expected.grpc.iter().map(|g| g.as_http()).collect();
    for h in report.expected.http.iter().chain(&grpc) {
        exchange(
            Expected {
                kind: Kind::Http,
                direction: TrafficDirection::Unknown,
                reply: false,
                src_ip: h.source_ip,
                dst_ip: h.backend_ip,
                src: pod(h.source_ip),
                dst: pod(h.backend_ip),
                server_port: h.destination_port,
                method: h.method.clone(),
                path: h.path.clone(),
                status: Some(h.status),
                query: String::new(),
                count: u64::from(h.count),
            },
            h.source_ip,
            h.backend_ip,
        );
    }
    for d in &report.expected.dns {
        exchange(
            Expected {
                kind: Kind::Dns,
                direction: TrafficDirection::Unknown,
                reply: false,
                src_ip: d.source_ip,
                dst_ip: d.server_ip,
                src: pod(d.source_ip),
                dst: pod(d.server_ip),
                server_port: 53,
                method: String::new(),
                path: String::new(),
                status: None,
                query: format!("{}.", d.name),
                count: u64::from(d.count),
            },
            d.source_ip,
            d.server_ip,
        );
    }
    out
}

fn count(model: &[Expected], pred: impl Fn(&Expected) -> bool) -> u64 {
    model.iter().filter(|e| pred(e)).map(|e| e.count).sum()
}

fn ff() -> FlowFilter {
    FlowFilter::default()
}

/// `f` restricted to L7 flows (AND within one filter).
fn l7(mut f: FlowFilter) -> FlowFilter {
    f.event_type.push(EventTypeFilter {
        r#type: L7,
        ..Default::default()
    });
    f
}

fn whitelist(filters: Vec<FlowFilter>) -> GetFlowsRequest {
    GetFlowsRequest {
        whitelist: filters,
        ..Default::default()
    }
}

fn uuids(flows: &[Flow]) -> Vec<&str> {
    flows.iter().map(|f| f.uuid.as_str()).collect()
}

fn nanos(f: &Flow) -> i128 {
    f.time.as_ref().map_or(0, Timestamp::as_unix_nanos)
}

fn in_cidr(ip: Ipv4Addr, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// The GetFlows filter cases: (name, request, expected count from the model).
fn cases(
    state: &LabState,
    report: &TrafficReport,
    node: &str,
    m: &[Expected],
) -> Vec<(String, GetFlowsRequest, u64)> {
    let other = state
        .nodes
        .iter()
        .find(|n| n.name != node)
        .map(|n| n.name.clone())
        .unwrap_or_default();
    let other_cidr = state
        .nodes
        .iter()
        .find(|n| n.name == other)
        .map(|n| n.pod_cidr.clone())
        .unwrap_or_default();
    let source_ns = report.source_namespace.clone();
    let loadgen = state
        .pods
        .iter()
        .find(|p| p.name == report.source_pod)
        .cloned()
        .expect("traffic source pod in the lab state");
    // The pod serving `report.target` (the service the generator calls).
    let target = report.target.split('.').next().unwrap_or("").to_string();
    let dns_ns = state.spec.dns.namespace.clone();
    let mut v: Vec<(String, FlowFilter, u64)> = vec![
        ("all L7".into(), l7(ff()), count(m, |_| true)),
        (
            format!("source_ip {other_cidr}"),
            l7(FlowFilter {
                source_ip: vec![other_cidr.clone()],
                ..ff()
            }),
            count(m, |e| in_cidr(e.src_ip, &other_cidr)),
        ),
        (
            format!("destination_ip {}", loadgen.ip),
            l7(FlowFilter {
                destination_ip: vec![loadgen.ip.to_string()],
                ..ff()
            }),
            count(m, |e| e.dst_ip == loadgen.ip),
        ),
        (
            // `ns/prefix`: the pod name starts with the deployment's name.
            format!("source_pod {source_ns}/{target}"),
            l7(FlowFilter {
                source_pod: vec![format!("{source_ns}/{target}")],
                ..ff()
            }),
            count(m, |e| {
                e.src_ns() == Some(source_ns.as_str())
                    && e.src.as_ref().is_some_and(|p| p.name.starts_with(&target))
            }),
        ),
        (
            format!("destination_pod {dns_ns}/"),
            l7(FlowFilter {
                destination_pod: vec![format!("{dns_ns}/")],
                ..ff()
            }),
            count(m, |e| e.dst_ns() == Some(dns_ns.as_str())),
        ),
        (
            "source_label k8s:tier in (backend)".into(),
            l7(FlowFilter {
                source_label: vec!["k8s:tier in (backend)".into()],
                ..ff()
            }),
            count(m, |e| {
                e.src
                    .as_ref()
                    .is_some_and(|p| p.labels.get("tier").map(String::as_str) == Some("backend"))
            }),
        ),
        (
            format!("destination_label app={target}"),
            l7(FlowFilter {
                destination_label: vec![format!("app={target}")],
                ..ff()
            }),
            count(m, |e| {
                e.dst
                    .as_ref()
                    .is_some_and(|p| p.labels.get("app") == Some(&target))
            }),
        ),
        (
            format!("source_workload Deployment/{}", loadgen.deployment),
            l7(FlowFilter {
                source_workload: vec![Workload {
                    name: loadgen.deployment.clone(),
                    kind: "Deployment".into(),
                }],
                ..ff()
            }),
            count(m, |e| e.src_deploy() == Some(loadgen.deployment.as_str())),
        ),
        (
            format!("destination_workload {target} (any kind)"),
            l7(FlowFilter {
                destination_workload: vec![Workload {
                    name: target.clone(),
                    kind: String::new(),
                }],
                ..ff()
            }),
            count(m, |e| e.dst_deploy() == Some(target.as_str())),
        ),
        (
            "verdict FORWARDED".into(),
            l7(FlowFilter {
                verdict: vec![Verdict::Forwarded as i32],
                ..ff()
            }),
            count(m, |_| true),
        ),
        (
            "verdict DROPPED".into(),
            l7(FlowFilter {
                verdict: vec![Verdict::Dropped as i32],
                ..ff()
            }),
            0,
        ),
        (
            "protocol dns".into(),
            // No event-type restriction: L3/L4 flows carry no L7 protocol.
            FlowFilter {
                protocol: vec!["dns".into()],
                ..ff()
            },
            count(m, |e| e.kind == Kind::Dns),
        ),
        (
            "protocol http".into(),
            FlowFilter {
                protocol: vec!["HTTP".into()],
                ..ff()
            },
            count(m, |e| e.kind == Kind::Http),
        ),
        (
            "destination_port 53".into(),
            l7(FlowFilter {
                destination_port: vec!["53".into()],
                ..ff()
            }),
            count(m, |e| e.dst_port() == Some(53)),
        ),
        (
            "source_port 8080".into(),
            l7(FlowFilter {
                source_port: vec!["8080".into()],
                ..ff()
            }),
            count(m, |e| e.reply && e.server_port == 8080),
        ),
        (
            "http_status_code 404".into(),
            l7(FlowFilter {
                http_status_code: vec!["404".into()],
                ..ff()
            }),
            count(m, |e| e.status == Some(404)),
        ),
        (
            "http_status_code 5+".into(),
            l7(FlowFilter {
                http_status_code: vec!["5+".into()],
                ..ff()
            }),
            count(m, |e| e.status.is_some_and(|s| (500..600).contains(&s))),
        ),
        (
            "http_status_code 400-599".into(),
            l7(FlowFilter {
                http_status_code: vec!["400-599".into()],
                ..ff()
            }),
            count(m, |e| e.status.is_some_and(|s| (400..=599).contains(&s))),
        ),
        (
            "http_status_code 200 or 201".into(),
            l7(FlowFilter {
                http_status_code: vec!["200".into(), "201".into()],
                ..ff()
            }),
            count(m, |e| matches!(e.status, Some(200 | 201))),
        ),
        (
            "http_method post".into(),
            l7(FlowFilter {
                http_method: vec!["post".into()],
                ..ff()
            }),
            count(m, |e| e.method == "POST"),
        ),
        (
            r"http_path ^/(cart|carts)/\d+$".into(),
            l7(FlowFilter {
                http_path: vec![r"^/(cart|carts)/\d+$".into()],
                ..ff()
            }),
            count(m, |e| {
                e.kind == Kind::Http
                    && (e.path.starts_with("/cart/") || e.path.starts_with("/carts/"))
            }),
        ),
        (
            r"dns_query ^nosuch\.|\.nosuch\.".into(),
            l7(FlowFilter {
                dns_query: vec![r"^nosuch\.".into(), r"\.nosuch\.".into()],
                ..ff()
            }),
            count(m, |e| {
                e.kind == Kind::Dns
                    && (e.query.starts_with("nosuch.") || e.query.contains(".nosuch."))
            }),
        ),
        (
            format!("node_name {node}"),
            l7(FlowFilter {
                node_name: vec![node.to_string()],
                ..ff()
            }),
            count(m, |_| true),
        ),
        (
            format!("node_name {other}"),
            l7(FlowFilter {
                node_name: vec![other.clone()],
                ..ff()
            }),
            0,
        ),
        (
            "traffic_direction EGRESS".into(),
            l7(FlowFilter {
                traffic_direction: vec![TrafficDirection::Egress as i32],
                ..ff()
            }),
            count(m, |e| e.direction == TrafficDirection::Egress),
        ),
        (
            "traffic_direction INGRESS".into(),
            l7(FlowFilter {
                traffic_direction: vec![TrafficDirection::Ingress as i32],
                ..ff()
            }),
            count(m, |e| e.direction == TrafficDirection::Ingress),
        ),
        (
            "reply true".into(),
            l7(FlowFilter {
                reply: vec![true],
                ..ff()
            }),
            count(m, |e| e.reply),
        ),
        (
            "reply false".into(),
            l7(FlowFilter {
                reply: vec![false],
                ..ff()
            }),
            count(m, |e| !e.reply),
        ),
        (
            // Several fields AND-ed: POST requests from the generator.
            "source_pod + http_method + reply false".into(),
            l7(FlowFilter {
                source_pod: vec![format!("{source_ns}/{}", loadgen.deployment)],
                http_method: vec!["POST".into()],
                reply: vec![false],
                ..ff()
            }),
            count(m, |e| {
                e.src.as_ref().is_some_and(|p| p.name == loadgen.name)
                    && e.method == "POST"
                    && !e.reply
            }),
        ),
    ];
    let mut out: Vec<(String, GetFlowsRequest, u64)> = v
        .drain(..)
        .map(|(n, f, c)| (n, whitelist(vec![f]), c))
        .collect();
    // OR across whitelist filters; blacklist excludes.
    out.push((
        "whitelist [404] or [dns nosuch]".into(),
        whitelist(vec![
            l7(FlowFilter {
                http_status_code: vec!["404".into()],
                ..ff()
            }),
            l7(FlowFilter {
                dns_query: vec!["nosuch".into()],
                ..ff()
            }),
        ]),
        count(m, |e| e.status == Some(404) || e.query.contains("nosuch")),
    ));
    out.push((
        format!("L7 minus blacklist source_pod {source_ns}/{}", loadgen.name),
        GetFlowsRequest {
            whitelist: vec![l7(ff())],
            blacklist: vec![FlowFilter {
                source_pod: vec![format!("{source_ns}/{}", loadgen.name)],
                ..ff()
            }],
            ..Default::default()
        },
        count(m, |e| e.src.as_ref().is_none_or(|p| p.name != loadgen.name)),
    ));
    out.push((
        "blacklist only: not DNS".into(),
        GetFlowsRequest {
            whitelist: vec![l7(ff())],
            blacklist: vec![FlowFilter {
                protocol: vec!["dns".into()],
                ..ff()
            }],
            ..Default::default()
        },
        count(m, |e| e.kind != Kind::Dns),
    ));
    out
}

fn status_code(e: &anyhow::Error) -> Option<tonic::Code> {
    e.chain()
        .find_map(|c| c.downcast_ref::<tonic::Status>())
        .map(tonic::Status::code)
}

/// Flows between two ServerStatus calls that agree (nothing arrived in
/// between): the whole buffer, consistent with the counters.
fn settled_buffer(c: &Cluster, addr: SocketAddr) -> Result<(Vec<Flow>, u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = c.server_status(addr)?;
        let flows = c.get_flows(addr, GetFlowsRequest::default())?;
        let after = c.server_status(addr)?;
        if before.seen_flows == after.seen_flows {
            return Ok((flows, after.num_flows, after.seen_flows));
        }
        ensure!(Instant::now() < deadline, "flows at {addr} never settle");
    }
}

fn check_node(c: &Cluster, report: &TrafficReport, node: &str) -> Result<()> {
    let t0 = Instant::now();
    let state = c.lab().state();
    let addr = c.flowd_addr(node)?;
    let m = model(state, report, node);
    let total = count(&m, |_| true);
    ensure!(total > 0, "the model expects L7 flows on {node}");

    // Wait until every L7 flow of the mix is in (the pairing of responses
    // runs behind the traffic), then until L3/L4 updates stop.
    let all_l7 = c.wait_flows(
        addr,
        whitelist(vec![l7(ff())]),
        Duration::from_secs(30),
        |f| f.len() as u64 >= total,
    )?;
    assert_eq!(all_l7.len() as u64, total, "{node}: L7 flows");
    let (buffer, num_flows, seen) = settled_buffer(c, addr)?;

    // ServerStatus: counters agree with the buffer (which has not wrapped).
    let status = c.server_status(addr)?;
    assert_eq!(buffer.len() as u64, num_flows, "{node}: num_flows");
    assert_eq!(num_flows, seen, "{node}: nothing overwritten");
    assert_eq!(status.max_flows, CAPACITY, "{node}: max_flows");
    assert!(status.version.starts_with("flowd v"), "{}", status.version);
    assert!(status.uptime_ns > 0);
    assert_eq!(status.num_connected_nodes.map(|v| v.value), Some(1));
    assert_eq!(status.num_unavailable_nodes.map(|v| v.value), Some(0));
    assert!(
        buffer.iter().all(|f| f.node_name == node),
        "{node}: every flow names its node"
    );

    // GetNodes: this node.
    let conn = c.connector(addr);
    let (nodes, namespaces) = c.in_router(move || async move {
        let mut cl = conn.observer().await?;
        let nodes = cl.get_nodes(GetNodesRequest {}).await?.into_inner();
        let ns = cl
            .get_namespaces(GetNamespacesRequest {})
            .await?
            .into_inner();
        anyhow::Ok((nodes, ns))
    })??;
    assert_eq!(nodes.nodes.len(), 1, "{node}: {nodes:?}");
    let n = &nodes.nodes[0];
    assert_eq!(n.name, node);
    assert_eq!(n.state, NodeState::NodeConnected as i32);
    assert_eq!((n.max_flows, n.seen_flows), (CAPACITY, seen));

    // GetNamespaces: the namespaces of the pods in this node's flows.
    let want: BTreeSet<String> = m
        .iter()
        .flat_map(|e| [e.src_ns(), e.dst_ns()])
        .flatten()
        .map(str::to_string)
        .collect();
    let got: BTreeSet<String> = namespaces
        .namespaces
        .iter()
        .map(|n| n.namespace.clone())
        .collect();
    assert_eq!(got, want, "{node}: namespaces");

    // Event types split the buffer.
    let l34 = c.get_flows(
        addr,
        whitelist(vec![FlowFilter {
            event_type: vec![EventTypeFilter {
                r#type: L34,
                ..Default::default()
            }],
            ..ff()
        }]),
    )?;
    let l34_in_buffer = buffer
        .iter()
        .filter(|f| f.event_type.as_ref().is_some_and(|e| e.r#type == L34))
        .count();
    assert_eq!(l34.len(), l34_in_buffer, "{node}: event_type 4");
    let l7_in_buffer = buffer
        .iter()
        .filter(|f| f.event_type.as_ref().is_some_and(|e| e.r#type == L7))
        .count();
    assert_eq!(
        l7_in_buffer as u64, total,
        "{node}: event_type 129 in the buffer"
    );

    // number / first / since / until over the L7 flows (oldest first).
    let l7_req = whitelist(vec![l7(ff())]);
    let last5 = c.get_flows(
        addr,
        GetFlowsRequest {
            number: 5,
            ..l7_req.clone()
        },
    )?;
    assert_eq!(
        uuids(&last5),
        uuids(&all_l7[all_l7.len() - 5..]),
        "number 5"
    );
    let first7 = c.get_flows(
        addr,
        GetFlowsRequest {
            number: 7,
            first: true,
            ..l7_req.clone()
        },
    )?;
    assert_eq!(uuids(&first7), uuids(&all_l7[..7]), "first 7");
    let (lo, hi) = (
        nanos(&all_l7[all_l7.len() / 4]),
        nanos(&all_l7[all_l7.len() / 2]),
    );
    let window: Vec<Flow> = all_l7
        .iter()
        .filter(|f| (lo..=hi).contains(&nanos(f)))
        .cloned()
        .collect();
    ensure!(!window.is_empty());
    let got = c.get_flows(
        addr,
        GetFlowsRequest {
            since: Some(Timestamp::from_unix_nanos(lo as u64)),
            until: Some(Timestamp::from_unix_nanos(hi as u64)),
            ..l7_req.clone()
        },
    )?;
    assert_eq!(uuids(&got), uuids(&window), "since/until");
    let got = c.get_flows(
        addr,
        GetFlowsRequest {
            since: Some(Timestamp::from_unix_nanos(hi as u64)),
            ..l7_req.clone()
        },
    )?;
    let after_hi = all_l7.iter().filter(|f| nanos(f) >= hi).count();
    assert_eq!(got.len(), after_hi, "since only");

    // TCP flags: one SYN per connection of the generator, on the target's node.
    let target_pod = state
        .pods
        .iter()
        .find(|p| report.target.starts_with(&format!("{}.", p.deployment)))
        .context("target pod")?;
    let syn = c.get_flows(
        addr,
        whitelist(vec![FlowFilter {
            tcp_flags: vec![TcpFlags {
                syn: true,
                ..Default::default()
            }],
            source_ip: vec![report.source_ip.to_string()],
            destination_ip: vec![target_pod.ip.to_string()],
            ..ff()
        }]),
    )?;
    // Seen leaving the client's veth and entering the server's.
    let source_node = state.pod_by_ip(report.source_ip).map(|p| p.node.as_str());
    let sides = u64::from(target_pod.node == node) + u64::from(source_node == Some(node));
    let want_syn = u64::from(report.connections * report.rounds) * sides;
    assert_eq!(syn.len() as u64, want_syn, "{node}: SYN flows {syn:#?}");

    // Every filter.
    let mut failures = Vec::new();
    for (name, req, want) in cases(state, report, node, &m) {
        let got = c.get_flows(addr, req)?.len() as u64;
        if got != want {
            failures.push(format!("{name}: got {got}, want {want}"));
        }
    }
    if !failures.is_empty() {
        // Name the L7 flows without a direction: what the model cannot see.
        for f in buffer.iter().filter(|f| {
            f.event_type.as_ref().is_some_and(|e| e.r#type == L7)
                && f.traffic_direction != TrafficDirection::Egress as i32
                && f.traffic_direction != TrafficDirection::Ingress as i32
        }) {
            failures.push(format!(
                "no direction: {:?} -> {:?} interface {:?} reply {:?} point {} l7 {:?}",
                f.ip.as_ref().map(|i| &i.source),
                f.ip.as_ref().map(|i| &i.destination),
                f.interface,
                f.is_reply,
                f.trace_observation_point,
                f.l7.as_ref().map(|l| l.r#type),
            ));
        }
    }
    assert!(failures.is_empty(), "{node}:\n{}", failures.join("\n"));

    // Invalid filters: InvalidArgument naming the field.
    let bad: Vec<(&str, FlowFilter)> = vec![
        (
            "source_ip",
            FlowFilter {
                source_ip: vec!["10.0.0.0/33".into()],
                ..ff()
            },
        ),
        (
            "destination_ip",
            FlowFilter {
                destination_ip: vec!["not-an-ip".into()],
                ..ff()
            },
        ),
        (
            "source_pod",
            FlowFilter {
                source_pod: vec!["a/b/c".into()],
                ..ff()
            },
        ),
        (
            "source_label",
            FlowFilter {
                source_label: vec!["app in (".into()],
                ..ff()
            },
        ),
        (
            "http_status_code",
            FlowFilter {
                http_status_code: vec!["6xx".into()],
                ..ff()
            },
        ),
        (
            "http_status_code",
            FlowFilter {
                http_status_code: vec!["599-400".into()],
                ..ff()
            },
        ),
        (
            "http_method",
            FlowFilter {
                http_method: vec!["G3T".into()],
                ..ff()
            },
        ),
        (
            "http_path",
            FlowFilter {
                http_path: vec!["(".into()],
                ..ff()
            },
        ),
        (
            "dns_query",
            FlowFilter {
                dns_query: vec!["[a-".into()],
                ..ff()
            },
        ),
        (
            "protocol",
            FlowFilter {
                protocol: vec!["carrier-pigeon".into()],
                ..ff()
            },
        ),
        (
            "destination_port",
            FlowFilter {
                destination_port: vec!["70000".into()],
                ..ff()
            },
        ),
        (
            "verdict",
            FlowFilter {
                verdict: vec![99],
                ..ff()
            },
        ),
        (
            "traffic_direction",
            FlowFilter {
                traffic_direction: vec![7],
                ..ff()
            },
        ),
    ];
    for (field, f) in bad {
        for req in [
            whitelist(vec![f.clone()]),
            GetFlowsRequest {
                blacklist: vec![f.clone()],
                ..Default::default()
            },
        ] {
            let err = c
                .get_flows(addr, req)
                .expect_err(&format!("{field}: {f:?} accepted"));
            assert_eq!(
                status_code(&err),
                Some(tonic::Code::InvalidArgument),
                "{field}: {err:#}"
            );
            assert!(
                format!("{err:#}").contains(field),
                "{field} not named: {err:#}"
            );
        }
    }
    eprintln!("{node}: checked in {:?}", t0.elapsed());
    Ok(())
}

#[test]
fn observer_api_on_real_cluster_traffic() -> Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "observer_cluster needs root (network namespaces, eBPF)"
    );
    let t0 = Instant::now();
    let c = Cluster::start(ClusterOptions {
        set: vec![("hubble-event-buffer-capacity".into(), CAPACITY.to_string())],
        ..Default::default()
    })?;
    let report = c.run_traffic()?;
    // Node-a first: one node queried directly, then the others.
    let mut nodes = c.node_names();
    nodes.sort();
    for node in &nodes {
        check_node(&c, &report, node)?;
    }

    // follow: a stream opened before a second round of traffic receives
    // exactly the flows a later non-follow query finds after its start. The
    // mix is deterministic, so the model of the first round gives the count.
    let node = nodes[0].clone();
    let addr = c.flowd_addr(&node)?;
    let req = whitelist(vec![l7(FlowFilter {
        reply: vec![false],
        ..ff()
    })]);
    let want = count(&model(c.lab().state(), &report, &node), |e| !e.reply);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let follow_req = GetFlowsRequest {
        follow: true,
        ..req.clone()
    };
    let started = Timestamp::now();
    let ns = c.lab().router_netns().to_string();
    let conn = c.connector(addr);
    let stream = std::thread::spawn(move || {
        flowd_lab::cluster::in_netns(&ns, move || async move {
            let mut cl = conn.observer().await?;
            let mut s = cl.get_flows(follow_req).await?.into_inner();
            tx.send(()).ok();
            let mut got = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while (got.len() as u64) < want {
                match tokio::time::timeout_at(deadline, s.message()).await {
                    Ok(Ok(Some(r))) => {
                        if let Some(ResponseTypes::Flow(f)) = r.response_types {
                            got.push(f);
                        }
                    }
                    Ok(Ok(None)) | Err(_) => break,
                    Ok(Err(e)) => return Err(e.into()),
                }
            }
            anyhow::Ok(got)
        })
    });
    rx.recv_timeout(Duration::from_secs(10))
        .context("follow stream open")?;
    let report2 = c.run_traffic()?;
    assert_eq!(
        report2.expected, report.expected,
        "the mix is deterministic"
    );
    let followed = stream
        .join()
        .map_err(|_| anyhow::anyhow!("follow thread panicked"))???;
    let later = c.wait_flows(
        addr,
        GetFlowsRequest {
            since: Some(started),
            ..req
        },
        Duration::from_secs(30),
        |f| f.len() as u64 >= want,
    )?;
    assert_eq!(later.len() as u64, want, "second round, {node}");
    assert_eq!(uuids(&followed), uuids(&later), "follow = since(start)");
    eprintln!("observer_cluster: {:?}", t0.elapsed());
    Ok(())
}

/// Service filters need flows that carry services: with ClusterIP services
/// the client's veth sees the Service address (before the node's DNAT), so
/// its request flows name the destination service and its response flows
/// the source service; the server's veth sees pod addresses only.
#[test]
fn service_filters_with_cluster_ip_services() -> Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "observer_cluster needs root (network namespaces, eBPF)"
    );
    let t0 = Instant::now();
    let mut spec = flowd_lab::Spec::default_spec();
    spec.service_mode = flowd_lab::spec::ServiceMode::ClusterIp;
    let c = Cluster::start(ClusterOptions {
        spec,
        ..Default::default()
    })?;
    let report = c.run_traffic()?;
    let state = c.lab().state();
    // HTTP records: HTTP/1.1 exchanges and gRPC calls (HTTP/2).
    let mut rows = report.expected.http.clone();
    rows.extend(report.expected.grpc.iter().map(|g| g.as_http()));
    let mut nonzero = 0;
    for node in c.node_names() {
        let addr = c.flowd_addr(&node)?;
        let m = model(state, &report, &node);
        let http_total = count(&m, |e| e.kind == Kind::Http);
        let http = FlowFilter {
            protocol: vec!["http".into()],
            ..ff()
        };
        c.wait_flows(
            addr,
            whitelist(vec![http.clone()]),
            Duration::from_secs(30),
            |f| f.len() as u64 >= http_total,
        )?;
        let services: BTreeSet<(String, String)> = rows
            .iter()
            .filter_map(|h| {
                Some((
                    h.destination_namespace.clone()?,
                    h.destination_service.clone(),
                ))
            })
            .collect();
        // Exchanges through a Service address whose client runs here.
        let want = |matches: &dyn Fn(&str, &str) -> bool| -> u64 {
            rows.iter()
                .filter(|h| {
                    h.destination_namespace
                        .as_deref()
                        .is_some_and(|ns| matches(ns, &h.destination_service))
                        && h.destination_ip != h.backend_ip
                        && state.pod_by_ip(h.source_ip).is_some_and(|p| p.node == node)
                })
                .map(|h| u64::from(h.count))
                .sum()
        };
        for (ns, svc) in services {
            let name = format!("{ns}/{svc}");
            let exact = want(&|n, s| n == ns && s == svc);
            let requests = c.get_flows(
                addr,
                whitelist(vec![FlowFilter {
                    destination_service: vec![name.clone()],
                    reply: vec![false],
                    ..http.clone()
                }]),
            )?;
            let responses = c.get_flows(
                addr,
                whitelist(vec![FlowFilter {
                    source_service: vec![name.clone()],
                    reply: vec![true],
                    ..http.clone()
                }]),
            )?;
            assert_eq!(
                requests.len() as u64,
                exact,
                "{node}: destination_service {name}"
            );
            assert_eq!(
                responses.len() as u64,
                exact,
                "{node}: source_service {name}"
            );
            // `ns/prefix`: every service of the namespace whose name starts so.
            let head = &svc[..svc.len().min(3)];
            let by_prefix = c.get_flows(
                addr,
                whitelist(vec![FlowFilter {
                    destination_service: vec![format!("{ns}/{head}")],
                    reply: vec![false],
                    ..http.clone()
                }]),
            )?;
            assert_eq!(
                by_prefix.len() as u64,
                want(&|n, s| n == ns && s.starts_with(head)),
                "{node}: destination_service {ns}/{head}"
            );
            nonzero += exact;
        }
    }
    ensure!(nonzero > 0, "no exchange went through a Service address");
    eprintln!(
        "service_filters_with_cluster_ip_services: {:?}",
        t0.elapsed()
    );
    Ok(())
}

/// A new pod's first packets come before its object reaches flowd (here: its
/// manifest is written only after its traffic). Its veth is attached at
/// once (the `lxc*` glob); flowd holds the flows of the unknown interface
/// until it knows the pod, so even the first ones have the pod, the
/// direction and the observation point.
#[test]
fn first_flows_of_a_new_pod_name_it() -> Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "observer_cluster needs root (network namespaces, eBPF)"
    );
    const REQUESTS: u64 = 3;
    let mut c = Cluster::start(ClusterOptions::default())?;
    let node = "node-b";
    let pod = c
        .lab_mut()
        .add_pod_unlisted(flowd_lab::spec::DeploymentSpec {
            namespace: "ecommerce".into(),
            name: "newcomer".into(),
            node: node.into(),
            role: None,
            labels: Default::default(),
        })?;
    flowd_tests::wait_until(
        &format!("flowd on {node} attached to {}", pod.host_veth),
        Duration::from_secs(30),
        || {
            Ok(c.attached_interfaces(node)?
                .contains(&pod.host_veth)
                .then_some(()))
        },
    )?;
    let server = c
        .lab()
        .pods()
        .iter()
        .find(|p| p.deployment == "frontend")
        .context("frontend pod")?
        .clone();
    ensure!(server.node != node, "the server must run on the other node");
    let port = c.lab().state().spec.app_port;
    for _ in 0..REQUESTS {
        c.lab()
            .http(&pod.key(), server.ip, port, "GET", "/")
            .context("request from the new pod")?;
    }
    c.lab().list_pod(&pod)?;

    let addr = c.flowd_addr(node)?;
    let ip = pod.ip.to_string();
    let involving = |f: FlowFilter| {
        whitelist(vec![
            FlowFilter {
                source_ip: vec![ip.clone()],
                ..f.clone()
            },
            FlowFilter {
                destination_ip: vec![ip.clone()],
                ..f
            },
        ])
    };
    // Each request and its response: one L7 flow each, on the new pod's veth.
    let l7_flows = c.wait_flows(addr, involving(l7(ff())), Duration::from_secs(30), |f| {
        f.len() as u64 >= 2 * REQUESTS
    })?;
    assert_eq!(l7_flows.len() as u64, 2 * REQUESTS, "{l7_flows:#?}");
    let all = c.get_flows(addr, involving(ff()))?;
    let syns = all
        .iter()
        .filter(|f| {
            f.l4.as_ref()
                .and_then(|l| l.protocol.as_ref())
                .is_some_and(|p| {
                    matches!(p, flowd_proto::flow::layer4::Protocol::Tcp(t)
                        if t.flags.as_ref().is_some_and(|fl| fl.syn && !fl.ack))
                })
        })
        .count() as u64;
    assert_eq!(syns, REQUESTS, "one SYN flow per connection");
    for f in &all {
        let from_pod = f.ip.as_ref().is_some_and(|i| i.source == ip);
        let own = if from_pod { &f.source } else { &f.destination };
        let what = format!("{:?} reply={:?}", f.ip, f.is_reply);
        assert_eq!(
            f.traffic_direction,
            TrafficDirection::Egress as i32,
            "{what}: direction"
        );
        assert_eq!(
            own.as_ref().map(|e| e.pod_name.as_str()),
            Some(pod.name.as_str()),
            "{what}: the new pod"
        );
        assert_eq!(
            f.interface.as_ref().map(|i| i.name.as_str()),
            Some(pod.host_veth.as_str()),
            "{what}: interface"
        );
    }
    Ok(())
}
