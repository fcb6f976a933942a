//! Fixed flows shared by the golden-file and end-to-end tests.
#![allow(dead_code)]

use flowd_proto::Timestamp;
use flowd_proto::flow::{
    self, Dns, Endpoint, Flow, FlowType, Grpc, Http, IcmPv6, Ip, IpVersion, L7FlowType, Layer4,
    Layer7, LostEvent, LostEventSource, Tcp, TcpFlags, Udp, Verdict, grpc::Type as GrpcType,
    layer4::Protocol, layer7::Record,
};
use flowd_proto::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use flowd_proto::relay::{NodeState, NodeStatusEvent};

pub const BASE: i64 = 1_700_000_000;

fn ts(ms: i32) -> Timestamp {
    Timestamp {
        seconds: BASE,
        nanos: ms * 1_000_000,
    }
}

fn pod(ns: &str, name: &str) -> Option<Endpoint> {
    Some(Endpoint {
        namespace: ns.into(),
        pod_name: name.into(),
        ..Default::default()
    })
}

fn ip4(src: &str, dst: &str) -> Option<Ip> {
    Some(Ip {
        source: src.into(),
        destination: dst.into(),
        ip_version: IpVersion::IPv4 as i32,
        ..Default::default()
    })
}

fn tcp(sp: u32, dp: u32, flags: TcpFlags) -> Option<Layer4> {
    Some(Layer4 {
        protocol: Some(Protocol::Tcp(Tcp {
            source_port: sp,
            destination_port: dp,
            flags: Some(flags),
        })),
    })
}

fn udp(sp: u32, dp: u32) -> Option<Layer4> {
    Some(Layer4 {
        protocol: Some(Protocol::Udp(Udp {
            source_port: sp,
            destination_port: dp,
        })),
    })
}

fn wrap(ms: i32, node: &str, r: ResponseTypes) -> GetFlowsResponse {
    GetFlowsResponse {
        response_types: Some(r),
        node_name: node.into(),
        time: Some(ts(ms)),
    }
}

fn flow_resp(ms: i32, f: Flow) -> GetFlowsResponse {
    let node = f.node_name.clone();
    wrap(
        ms,
        &node,
        ResponseTypes::Flow(Flow {
            time: Some(ts(ms)),
            ..f
        }),
    )
}

const FRONTEND: &str = "10.244.1.10";
const CART: &str = "10.244.2.20";
const DNS_IP: &str = "10.96.0.10";
const INVENTORY: &str = "10.244.2.40";
const WEB: &str = "10.244.2.50";

/// L3/L4 TCP (SYN and the SYN-ACK reply), UDP, ICMPv6, HTTP request and
/// response, DNS query and NXDOMAIN answer, gRPC calls (a request, a
/// NOT_FOUND response, a reset stream, a partial response), a plain HTTP/2
/// request and response, a dropped flow, lost events and a node status
/// notice.
pub fn responses() -> Vec<GetFlowsResponse> {
    let syn = TcpFlags {
        syn: true,
        ..Default::default()
    };
    let http = |kind: L7FlowType, code: u32, latency_ns: u64| Layer7 {
        r#type: kind as i32,
        latency_ns,
        record: Some(Record::Http(Http {
            code,
            method: "GET".into(),
            url: "/cart".into(),
            protocol: "HTTP/1.1".into(),
            headers: vec![],
            url_truncated: false,
            ..Default::default()
        })),
        ..Default::default()
    };
    let dns = |kind: L7FlowType, rcode: u32, latency_ns: u64| Layer7 {
        r#type: kind as i32,
        latency_ns,
        record: Some(Record::Dns(Dns {
            query: "inventory.ecommerce.svc.cluster.local.".into(),
            qtypes: vec!["A".into()],
            rcode,
            ..Default::default()
        })),
        ..Default::default()
    };
    let grpc_call = |kind: L7FlowType, latency_ns: u64, g: Grpc| Layer7 {
        r#type: kind as i32,
        latency_ns,
        record: Some(Record::Http(Http {
            code: if kind == L7FlowType::Response { 200 } else { 0 },
            method: "POST".into(),
            url: format!(
                "http://inventory.ecommerce:50051/{}/{}",
                g.service, g.method
            ),
            protocol: "HTTP/2".into(),
            grpc: Some(g),
            ..Default::default()
        })),
        ..Default::default()
    };
    let reserve = Grpc {
        service: "shop.inventory.v1.Inventory".into(),
        method: "Reserve".into(),
        ..Default::default()
    };
    let watch = Grpc {
        method: "Watch".into(),
        ..reserve.clone()
    };
    let h2 = |kind: L7FlowType, code: u32, latency_ns: u64| Layer7 {
        r#type: kind as i32,
        latency_ns,
        record: Some(Record::Http(Http {
            code,
            method: "GET".into(),
            url: "http://web.ecommerce/index.html".into(),
            protocol: "HTTP/2".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let to_inventory = |ms: i32, l7: Layer7| {
        flow_resp(
            ms,
            Flow {
                verdict: Verdict::Forwarded as i32,
                ip: ip4(FRONTEND, INVENTORY),
                l4: tcp(40400, 50051, TcpFlags::default()),
                source: pod("ecommerce", "frontend-7d9f"),
                destination: pod("ecommerce", "inventory-6f7d"),
                r#type: FlowType::L7 as i32,
                node_name: "node-1".into(),
                l7: Some(l7),
                is_reply: Some(false.into()),
                ..Default::default()
            },
        )
    };
    let from_inventory = |ms: i32, l7: Layer7| {
        flow_resp(
            ms,
            Flow {
                verdict: Verdict::Forwarded as i32,
                ip: ip4(INVENTORY, FRONTEND),
                l4: tcp(50051, 40400, TcpFlags::default()),
                source: pod("ecommerce", "inventory-6f7d"),
                destination: pod("ecommerce", "frontend-7d9f"),
                r#type: FlowType::L7 as i32,
                node_name: "node-1".into(),
                l7: Some(l7),
                is_reply: Some(true.into()),
                ..Default::default()
            },
        )
    };
    let web = |ms: i32, reply: bool, l7: Layer7| {
        let (src, dst, sp, dp) = if reply {
            (WEB, FRONTEND, 8080, 40500)
        } else {
            (FRONTEND, WEB, 40500, 8080)
        };
        let (a, b) = (pod("ecommerce", "frontend-7d9f"), pod("ecommerce", "web-0"));
        let (source, destination) = if reply { (b, a) } else { (a, b) };
        flow_resp(
            ms,
            Flow {
                verdict: Verdict::Forwarded as i32,
                ip: ip4(src, dst),
                l4: tcp(sp, dp, TcpFlags::default()),
                source,
                destination,
                r#type: FlowType::L7 as i32,
                node_name: "node-2".into(),
                l7: Some(l7),
                is_reply: Some(reply.into()),
                ..Default::default()
            },
        )
    };
    let mut out = vec![
        flow_resp(
            1,
            Flow {
                verdict: Verdict::Forwarded as i32,
                ip: ip4(FRONTEND, CART),
                l4: tcp(40312, 8080, syn),
                source: pod("ecommerce", "frontend-7d9f"),
                destination: pod("ecommerce", "cart-5c8b"),
                r#type: FlowType::L3L4 as i32,
                node_name: "node-1".into(),
                is_reply: Some(false.into()),
                ..Default::default()
            },
        ),
        flow_resp(
            2,
            Flow {
                verdict: Verdict::Forwarded as i32,
                ip: ip4(CART, FRONTEND),
                l4: tcp(
                    8080,
                    40312,
                    TcpFlags {
                        syn: true,
                        ack: true,
                        ..Default::default()
                    },
                ),
                source: pod("ecommerce", "cart-5c8b"),
                destination: pod("ecommerce", "frontend-7d9f"),
                r#type: FlowType::L3L4 as i32,
                node_name: "node-2".into(),
                is_reply: Some(true.into()),
                trace_observation_point: flow::TraceObservationPoint::ToEndpoint as i32,
                ..Default::default()
            },
        ),
        flow_resp(
            3,
            Flow {
                verdict: Verdict::Forwarded as i32,
                ip: ip4("192.168.1.5", "10.244.1.53"),
                l4: udp(5353, 5353),
                r#type: FlowType::L3L4 as i32,
                node_name: "node-1".into(),
                ..Default::default()
            },
        ),
        flow_resp(
            4,
            Flow {
                verdict: Verdict::Forwarded as i32,
                ip: Some(Ip {
                    source: "fd00::1".into(),
                    destination: "fd00::2".into(),
                    ip_version: IpVersion::IPv6 as i32,
                    ..Default::default()
                }),
                l4: Some(Layer4 {
                    protocol: Some(Protocol::IcmPv6(IcmPv6 {
                        r#type: 128,
                        code: 0,
                    })),
                }),
                r#type: FlowType::L3L4 as i32,
                node_name: "node-1".into(),
                ..Default::default()
            },
        ),
        flow_resp(
            10,
            Flow {
                verdict: Verdict::Forwarded as i32,
                ip: ip4(FRONTEND, CART),
                l4: tcp(40312, 8080, TcpFlags::default()),
                source: pod("ecommerce", "frontend-7d9f"),
                destination: pod("ecommerce", "cart-5c8b"),
                r#type: FlowType::L7 as i32,
                node_name: "node-1".into(),
                l7: Some(http(L7FlowType::Request, 0, 0)),
                is_reply: Some(false.into()),
                ..Default::default()
            },
        ),
        flow_resp(
            22,
            Flow {
                verdict: Verdict::Forwarded as i32,
                ip: ip4(CART, FRONTEND),
                l4: tcp(8080, 40312, TcpFlags::default()),
                source: pod("ecommerce", "cart-5c8b"),
                destination: pod("ecommerce", "frontend-7d9f"),
                r#type: FlowType::L7 as i32,
                node_name: "node-1".into(),
                l7: Some(http(L7FlowType::Response, 503, 12_000_000)),
                is_reply: Some(true.into()),
                ..Default::default()
            },
        ),
        flow_resp(
            30,
            Flow {
                verdict: Verdict::Forwarded as i32,
                ip: ip4(FRONTEND, DNS_IP),
                l4: udp(53001, 53),
                source: pod("ecommerce", "frontend-7d9f"),
                destination: pod("kube-system", "coredns-1"),
                r#type: FlowType::L7 as i32,
                node_name: "node-1".into(),
                l7: Some(dns(L7FlowType::Request, 0, 0)),
                is_reply: Some(false.into()),
                ..Default::default()
            },
        ),
        flow_resp(
            32,
            Flow {
                verdict: Verdict::Forwarded as i32,
                ip: ip4(DNS_IP, FRONTEND),
                l4: udp(53, 53001),
                source: pod("kube-system", "coredns-1"),
                destination: pod("ecommerce", "frontend-7d9f"),
                r#type: FlowType::L7 as i32,
                node_name: "node-1".into(),
                l7: Some(dns(L7FlowType::Response, 3, 2_000_000)),
                is_reply: Some(true.into()),
                ..Default::default()
            },
        ),
        to_inventory(33, grpc_call(L7FlowType::Request, 0, reserve.clone())),
        from_inventory(
            35,
            grpc_call(
                L7FlowType::Response,
                12_000_000,
                Grpc {
                    status_code: Some(5),
                    status_name: "NOT_FOUND".into(),
                    message: "item 7 not found".into(),
                    r#type: GrpcType::Unary as i32,
                    request_messages: 1,
                    response_messages: 0,
                    messages_exact: true,
                    request_bytes: 14,
                    ..reserve.clone()
                },
            ),
        ),
        // A server-streaming call the client cancelled: no grpc-status.
        from_inventory(
            36,
            grpc_call(
                L7FlowType::Response,
                2_500_000_000,
                Grpc {
                    reset: "CANCEL".into(),
                    r#type: GrpcType::ServerStreaming as i32,
                    request_messages: 1,
                    response_messages: 3,
                    messages_exact: true,
                    request_bytes: 9,
                    response_bytes: 120,
                    ..watch
                },
            ),
        ),
        web(37, false, h2(L7FlowType::Request, 0, 0)),
        web(38, true, h2(L7FlowType::Response, 200, 3_000_000)),
    ];
    // A response on a connection flowd saw from its middle: the path was a
    // dynamic-table entry it never saw; the status was a literal.
    let mut partial = grpc_call(
        L7FlowType::Response,
        0,
        Grpc {
            status_code: Some(0),
            status_name: "OK".into(),
            ..Default::default()
        },
    );
    partial.unpaired = true;
    if let Some(Record::Http(h)) = partial.record.as_mut() {
        h.method.clear();
        h.url.clear();
        h.partial = true;
    }
    out.push(from_inventory(39, partial));
    out.extend([
        flow_resp(
            40,
            Flow {
                verdict: Verdict::Dropped as i32,
                ip: ip4("10.244.9.9", "10.244.2.30"),
                l4: tcp(41000, 443, syn),
                destination: pod("ecommerce", "payments-0"),
                r#type: FlowType::L3L4 as i32,
                node_name: "node-2".into(),
                kernel_drop_reason: "NO_SOCKET".into(),
                kernel_drop_reason_code: 3,
                ..Default::default()
            },
        ),
        wrap(
            50,
            "node-2",
            ResponseTypes::LostEvents(LostEvent {
                source: LostEventSource::HubbleRingBuffer as i32,
                num_events_lost: 42,
                cpu: Some(1.into()),
                ..Default::default()
            }),
        ),
        wrap(
            60,
            "",
            ResponseTypes::NodeStatus(NodeStatusEvent {
                state_change: NodeState::NodeUnavailable as i32,
                node_names: vec!["node-3".into()],
                message: "connection refused".into(),
            }),
        ),
    ]);
    out
}
