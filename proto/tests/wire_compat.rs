//! Wire compatibility with Cilium Hubble's API v1.
//!
//! `hubble_api` holds the facts of Hubble's current api/v1/{flow,observer,
//! peer,relay}/*.proto (messages, fields with number and type, enum values,
//! RPCs). The tests check that our descriptors have exactly these — nothing
//! missing, nothing renamed or renumbered — plus the documented flowd
//! extensions (numbers >= 1000). Then messages are encoded independently of our types (raw protobuf
//! wire format with the numbers from the table) and decoded with our types,
//! and the reverse.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeSet;

use flowd_proto::{FILE_DESCRIPTOR_SET, Timestamp, flow, observer, peer, relay};
use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};
use prost_reflect::{DescriptorPool, Kind};

mod hubble_api;

/// flowd's own fields: numbers >= 1000, documented in the .proto files.
const FLOWD_EXTENSIONS: &[(&str, &str, u32, &str)] = &[
    ("flow.Flow", "kernel_drop_reason", 1000, "string"),
    ("flow.Flow", "kernel_drop_reason_code", 1001, "uint32"),
    ("flow.Flow", "stats", 1002, "flow.FlowStats"),
    ("flow.Flow", "drop_count", 1003, "uint64"),
    ("flow.Layer7", "exchange_id", 1000, "uint64"),
    ("flow.Layer7", "unpaired", 1001, "bool"),
    ("flow.HTTP", "url_truncated", 1000, "bool"),
    ("flow.HTTP", "grpc", 1001, "flow.GRPC"),
    ("flow.HTTP", "partial", 1002, "bool"),
    (
        "flow.FlowFilter",
        "kernel_drop_reason",
        1000,
        "repeated string",
    ),
    ("flow.FlowFilter", "grpc_status", 1001, "repeated string"),
    ("flow.FlowFilter", "grpc_service", 1002, "repeated string"),
    ("flow.FlowFilter", "grpc_method", 1003, "repeated string"),
    (
        "observer.ServerStatusResponse",
        "lost_kernel_events",
        1000,
        "uint64",
    ),
];

/// flowd's own messages, used only by FLOWD_EXTENSIONS fields.
const FLOWD_MESSAGES: &[&str] = &["flow.FlowStats", "flow.GRPC"];

/// flowd's own enums (inside flowd's own messages), with their values.
const FLOWD_ENUMS: &[(&str, &str, i32)] = &[
    ("flow.GRPC.Type", "TYPE_UNKNOWN", 0),
    ("flow.GRPC.Type", "UNARY", 1),
    ("flow.GRPC.Type", "CLIENT_STREAMING", 2),
    ("flow.GRPC.Type", "SERVER_STREAMING", 3),
    ("flow.GRPC.Type", "BIDI_STREAMING", 4),
];

fn pool() -> DescriptorPool {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("our descriptor set decodes")
}

fn type_name(f: &prost_reflect::FieldDescriptor) -> String {
    let base = match f.kind() {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
    };
    if f.is_list() {
        format!("repeated {base}")
    } else {
        base
    }
}

/// Our messages and enums in Hubble's packages (everything protox compiled
/// from proto/, without google.protobuf).
fn our_types(pool: &DescriptorPool) -> (BTreeSet<String>, BTreeSet<String>) {
    let ours = |name: &str| {
        ["flow.", "observer.", "peer.", "relay."]
            .iter()
            .any(|p| name.starts_with(p))
    };
    let messages = pool
        .all_messages()
        .map(|m| m.full_name().to_string())
        .filter(|n| ours(n))
        .collect();
    let enums = pool
        .all_enums()
        .map(|e| e.full_name().to_string())
        .filter(|n| ours(n))
        .collect();
    (messages, enums)
}

#[test]
fn every_hubble_message_and_enum_exists_and_nothing_else() {
    let pool = pool();
    let (messages, enums) = our_types(&pool);
    let expected: BTreeSet<String> = hubble_api::MESSAGES
        .iter()
        .chain(FLOWD_MESSAGES)
        .map(|m| m.to_string())
        .collect();
    assert_eq!(
        messages, expected,
        "messages differ from Hubble's (+ flowd's own)"
    );
    let expected: BTreeSet<String> = hubble_api::ENUMS
        .iter()
        .chain(FLOWD_ENUMS)
        .map(|r| r.0.to_string())
        .collect();
    assert_eq!(
        enums, expected,
        "enums differ from Hubble's (+ flowd's own)"
    );
}

#[test]
fn messages_have_hubbles_fields_exactly() {
    let pool = pool();
    let expected: BTreeSet<(String, String, u32, String)> = hubble_api::FIELDS
        .iter()
        .chain(FLOWD_EXTENSIONS)
        .map(|(m, f, n, t)| (m.to_string(), f.to_string(), *n, t.to_string()))
        .collect();
    assert_eq!(
        expected.len(),
        hubble_api::FIELDS.len() + FLOWD_EXTENSIONS.len(),
        "duplicate table rows"
    );
    let (messages, _) = our_types(&pool);
    let mut actual = BTreeSet::new();
    // flowd's own messages are entirely its own.
    for m in messages
        .iter()
        .filter(|m| !FLOWD_MESSAGES.contains(&m.as_str()))
    {
        let md = pool
            .get_message_by_name(m)
            .unwrap_or_else(|| panic!("message {m} missing"));
        for f in md.fields() {
            actual.insert((
                m.to_string(),
                f.name().to_string(),
                f.number(),
                type_name(&f),
            ));
        }
    }
    let missing: Vec<_> = expected.difference(&actual).collect();
    let extra: Vec<_> = actual.difference(&expected).collect();
    assert!(
        missing.is_empty(),
        "fields missing or different: {missing:#?}"
    );
    assert!(
        extra.is_empty(),
        "fields not in Hubble's protos nor in FLOWD_EXTENSIONS: {extra:#?}"
    );
    for (m, _, n, _) in FLOWD_EXTENSIONS {
        assert!(*n >= 1000, "flowd extension below 1000 in {m}");
    }
    for m in FLOWD_MESSAGES {
        let used = FLOWD_EXTENSIONS.iter().any(|r| r.3 == *m);
        assert!(used, "{m} is not used by a flowd extension field");
    }
}

#[test]
fn enums_have_hubbles_values_exactly() {
    let pool = pool();
    let expected: BTreeSet<(String, String, i32)> = hubble_api::ENUMS
        .iter()
        .chain(FLOWD_ENUMS)
        .map(|(e, v, n)| (e.to_string(), v.to_string(), *n))
        .collect();
    assert_eq!(
        expected.len(),
        hubble_api::ENUMS.len() + FLOWD_ENUMS.len(),
        "duplicate table rows"
    );
    let (_, enums) = our_types(&pool);
    let mut actual = BTreeSet::new();
    for e in &enums {
        let ed = pool
            .get_enum_by_name(e)
            .unwrap_or_else(|| panic!("enum {e} missing"));
        for v in ed.values() {
            actual.insert((e.to_string(), v.name().to_string(), v.number()));
        }
    }
    assert_eq!(actual, expected);
}

#[test]
fn services_match_hubble() {
    let pool = pool();
    for (svc, method, input, output, streaming) in hubble_api::METHODS {
        let sd = pool
            .services()
            .find(|s| s.full_name() == *svc)
            .unwrap_or_else(|| panic!("service {svc} missing"));
        let md = sd
            .methods()
            .find(|m| m.name() == *method)
            .unwrap_or_else(|| panic!("{svc}/{method} missing"));
        assert_eq!(md.input().full_name(), *input, "{svc}/{method} input");
        assert_eq!(md.output().full_name(), *output, "{svc}/{method} output");
        assert_eq!(
            md.is_server_streaming(),
            *streaming,
            "{svc}/{method} streaming"
        );
        assert!(!md.is_client_streaming());
    }
    let ours: usize = pool.services().map(|s| s.methods().len()).sum();
    assert_eq!(
        ours,
        hubble_api::METHODS.len(),
        "methods not in Hubble's API"
    );
}

fn num(t: &[(&str, &str, u32, &str)], msg: &str, field: &str) -> u32 {
    t.iter()
        .chain(FLOWD_EXTENSIONS)
        .find(|r| r.0 == msg && r.1 == field)
        .unwrap_or_else(|| panic!("{msg}.{field} not in table"))
        .2
}

fn n(msg: &str, field: &str) -> u32 {
    num(hubble_api::FIELDS, msg, field)
}

// --- A minimal independent protobuf writer, driven by the table's numbers. ---

fn put_varint(buf: &mut Vec<u8>, field: u32, v: u64) {
    encode_key(field, WireType::Varint, buf);
    encode_varint(v, buf);
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, v: &[u8]) {
    encode_key(field, WireType::LengthDelimited, buf);
    encode_varint(v.len() as u64, buf);
    buf.extend_from_slice(v);
}

fn timestamp_bytes(seconds: i64, nanos: i32) -> Vec<u8> {
    let mut b = Vec::new();
    put_varint(&mut b, 1, seconds as u64);
    put_varint(&mut b, 2, nanos as u64);
    b
}

/// A Flow as Hubble would send it, built from field numbers only.
fn hubble_flow_bytes() -> Vec<u8> {
    let mut ip = Vec::new();
    put_bytes(&mut ip, n("flow.IP", "source"), b"10.1.0.5");
    put_bytes(&mut ip, n("flow.IP", "destination"), b"10.1.1.7");
    put_varint(&mut ip, n("flow.IP", "ipVersion"), 1);

    let mut flags = Vec::new();
    put_varint(&mut flags, n("flow.TCPFlags", "SYN"), 1);
    put_varint(&mut flags, n("flow.TCPFlags", "ACK"), 1);
    let mut tcp = Vec::new();
    put_varint(&mut tcp, n("flow.TCP", "source_port"), 43210);
    put_varint(&mut tcp, n("flow.TCP", "destination_port"), 8080);
    put_bytes(&mut tcp, n("flow.TCP", "flags"), &flags);
    let mut l4 = Vec::new();
    put_bytes(&mut l4, n("flow.Layer4", "TCP"), &tcp);

    let mut wl = Vec::new();
    put_bytes(&mut wl, n("flow.Workload", "name"), b"frontend");
    put_bytes(&mut wl, n("flow.Workload", "kind"), b"Deployment");
    let mut src = Vec::new();
    put_varint(&mut src, n("flow.Endpoint", "ID"), 42);
    put_varint(&mut src, n("flow.Endpoint", "identity"), 12345);
    put_bytes(&mut src, n("flow.Endpoint", "namespace"), b"ecommerce");
    put_bytes(&mut src, n("flow.Endpoint", "labels"), b"k8s:app=frontend");
    put_bytes(&mut src, n("flow.Endpoint", "labels"), b"k8s:tier=web");
    put_bytes(
        &mut src,
        n("flow.Endpoint", "pod_name"),
        b"frontend-7d4b9-x2x",
    );
    put_bytes(&mut src, n("flow.Endpoint", "workloads"), &wl);

    let mut http = Vec::new();
    put_varint(&mut http, n("flow.HTTP", "code"), 503);
    put_bytes(&mut http, n("flow.HTTP", "method"), b"GET");
    put_bytes(&mut http, n("flow.HTTP", "url"), b"/cart");
    put_bytes(&mut http, n("flow.HTTP", "protocol"), b"HTTP/1.1");
    let mut l7 = Vec::new();
    put_varint(&mut l7, n("flow.Layer7", "type"), 2);
    put_varint(&mut l7, n("flow.Layer7", "latency_ns"), 12_000_000);
    put_bytes(&mut l7, n("flow.Layer7", "http"), &http);

    let mut ev = Vec::new();
    put_varint(&mut ev, n("flow.CiliumEventType", "type"), 129);
    let mut is_reply = Vec::new();
    put_varint(&mut is_reply, 1, 1); // google.protobuf.BoolValue.value = 1

    let mut svc = Vec::new();
    put_bytes(&mut svc, n("flow.Service", "name"), b"cart");
    put_bytes(&mut svc, n("flow.Service", "namespace"), b"ecommerce");

    let mut f = Vec::new();
    put_bytes(
        &mut f,
        n("flow.Flow", "time"),
        &timestamp_bytes(1_700_000_000, 5),
    );
    put_bytes(
        &mut f,
        n("flow.Flow", "uuid"),
        b"6b1c7c2e-0000-4000-8000-000000000001",
    );
    put_varint(&mut f, n("flow.Flow", "verdict"), 2);
    put_varint(&mut f, n("flow.Flow", "drop_reason_desc"), 133);
    put_bytes(&mut f, n("flow.Flow", "IP"), &ip);
    put_bytes(&mut f, n("flow.Flow", "l4"), &l4);
    put_bytes(&mut f, n("flow.Flow", "source"), &src);
    put_varint(&mut f, n("flow.Flow", "Type"), 2);
    put_bytes(&mut f, n("flow.Flow", "node_name"), b"kind-worker");
    put_bytes(
        &mut f,
        n("flow.Flow", "destination_names"),
        b"cart.ecommerce.svc.cluster.local",
    );
    put_bytes(&mut f, n("flow.Flow", "l7"), &l7);
    put_bytes(&mut f, n("flow.Flow", "event_type"), &ev);
    put_bytes(&mut f, n("flow.Flow", "destination_service"), &svc);
    put_varint(&mut f, n("flow.Flow", "traffic_direction"), 2);
    put_varint(&mut f, n("flow.Flow", "trace_observation_point"), 101);
    put_bytes(&mut f, n("flow.Flow", "is_reply"), &is_reply);
    put_varint(&mut f, n("flow.Flow", "socket_cookie"), u64::MAX - 1);
    put_bytes(&mut f, n("flow.Flow", "Summary"), b"HTTP/1.1 GET /cart");
    f
}

fn expected_flow() -> flow::Flow {
    flow::Flow {
        time: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        uuid: "6b1c7c2e-0000-4000-8000-000000000001".into(),
        verdict: flow::Verdict::Dropped as i32,
        drop_reason_desc: flow::DropReason::PolicyDenied as i32,
        ip: Some(flow::Ip {
            source: "10.1.0.5".into(),
            destination: "10.1.1.7".into(),
            ip_version: flow::IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        l4: Some(flow::Layer4 {
            protocol: Some(flow::layer4::Protocol::Tcp(flow::Tcp {
                source_port: 43210,
                destination_port: 8080,
                flags: Some(flow::TcpFlags {
                    syn: true,
                    ack: true,
                    ..Default::default()
                }),
            })),
        }),
        source: Some(flow::Endpoint {
            id: 42,
            identity: 12345,
            namespace: "ecommerce".into(),
            labels: vec!["k8s:app=frontend".into(), "k8s:tier=web".into()],
            pod_name: "frontend-7d4b9-x2x".into(),
            workloads: vec![flow::Workload {
                name: "frontend".into(),
                kind: "Deployment".into(),
            }],
            ..Default::default()
        }),
        r#type: flow::FlowType::L7 as i32,
        node_name: "kind-worker".into(),
        destination_names: vec!["cart.ecommerce.svc.cluster.local".into()],
        l7: Some(flow::Layer7 {
            r#type: flow::L7FlowType::Response as i32,
            latency_ns: 12_000_000,
            record: Some(flow::layer7::Record::Http(flow::Http {
                code: 503,
                method: "GET".into(),
                url: "/cart".into(),
                protocol: "HTTP/1.1".into(),
                headers: vec![],
                url_truncated: false,
                ..Default::default()
            })),
            ..Default::default()
        }),
        event_type: Some(flow::CiliumEventType {
            r#type: 129,
            sub_type: 0,
        }),
        destination_service: Some(flow::Service {
            name: "cart".into(),
            namespace: "ecommerce".into(),
        }),
        traffic_direction: flow::TrafficDirection::Egress as i32,
        trace_observation_point: flow::TraceObservationPoint::ToEndpoint as i32,
        is_reply: Some(true.into()),
        socket_cookie: u64::MAX - 1,
        #[allow(deprecated)]
        summary: "HTTP/1.1 GET /cart".into(),
        ..Default::default()
    }
}

#[test]
fn decode_hubble_encoded_flow() {
    let decoded = flow::Flow::decode(hubble_flow_bytes().as_slice()).unwrap();
    assert_eq!(decoded, expected_flow());
}

// --- A minimal independent protobuf reader. ---

#[derive(Debug, PartialEq)]
enum Val {
    Varint(u64),
    Bytes(Vec<u8>),
}

fn read_fields(mut buf: &[u8]) -> Vec<(u32, Val)> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (tag, wt) = decode_key(&mut buf).unwrap();
        match wt {
            WireType::Varint => out.push((tag, Val::Varint(decode_varint(&mut buf).unwrap()))),
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).unwrap() as usize;
                out.push((tag, Val::Bytes(buf[..len].to_vec())));
                buf = &buf[len..];
            }
            other => panic!("unexpected wire type {other:?} for field {tag}"),
        }
    }
    out
}

fn only(fields: &[(u32, Val)], tag: u32) -> &Val {
    let v: Vec<_> = fields.iter().filter(|(t, _)| *t == tag).collect();
    assert_eq!(v.len(), 1, "field {tag} present {} times", v.len());
    &v[0].1
}

fn bytes(v: &Val) -> &[u8] {
    match v {
        Val::Bytes(b) => b,
        Val::Varint(_) => panic!("expected bytes, got {v:?}"),
    }
}

/// Field tree of an encoded message, with nested flowd/Hubble messages
/// expanded using the table's types (the reader knows nothing of our code).
#[derive(Debug, PartialEq)]
enum Canon {
    Varint(u64),
    Bytes(Vec<u8>),
    Msg(Vec<(u32, Canon)>),
}

fn canon(msg: &str, buf: &[u8]) -> Vec<(u32, Canon)> {
    let mut out: Vec<(u32, Canon)> = read_fields(buf)
        .into_iter()
        .map(|(tag, v)| {
            let ty = hubble_api::FIELDS
                .iter()
                .chain(FLOWD_EXTENSIONS)
                .find(|r| r.0 == msg && r.2 == tag)
                .unwrap_or_else(|| panic!("{msg} field {tag} not in table"))
                .3;
            let ty = ty.trim_start_matches("repeated ");
            let nested = hubble_api::FIELDS.iter().any(|r| r.0 == ty);
            let c = match v {
                Val::Varint(x) => Canon::Varint(x),
                Val::Bytes(b) if nested => Canon::Msg(canon(ty, &b)),
                Val::Bytes(b) => Canon::Bytes(b),
            };
            (tag, c)
        })
        .collect();
    // Field order on the wire is free; order of repeated values is not, and
    // a stable sort keeps it.
    out.sort_by_key(|(t, _)| *t);
    out
}

#[test]
fn our_flow_encoding_is_read_by_field_number() {
    let ours = expected_flow().encode_to_vec();
    assert_eq!(
        canon("flow.Flow", &ours),
        canon("flow.Flow", &hubble_flow_bytes())
    );

    // Spot-check specific numbers from the table.
    let top = read_fields(&ours);
    assert_eq!(*only(&top, n("flow.Flow", "verdict")), Val::Varint(2));
    assert_eq!(
        bytes(only(&top, n("flow.Flow", "node_name"))),
        b"kind-worker"
    );
    let src = read_fields(bytes(only(&top, n("flow.Flow", "source"))));
    assert_eq!(
        bytes(only(&src, n("flow.Endpoint", "pod_name"))),
        b"frontend-7d4b9-x2x"
    );
    let l4 = read_fields(bytes(only(&top, n("flow.Flow", "l4"))));
    let tcp = read_fields(bytes(only(&l4, n("flow.Layer4", "TCP"))));
    assert_eq!(
        *only(&tcp, n("flow.TCP", "destination_port")),
        Val::Varint(8080)
    );
    let l7 = read_fields(bytes(only(&top, n("flow.Flow", "l7"))));
    let http = read_fields(bytes(only(&l7, n("flow.Layer7", "http"))));
    assert_eq!(*only(&http, n("flow.HTTP", "code")), Val::Varint(503));
}

#[test]
fn get_flows_request_roundtrip_by_number() {
    let mut filter = Vec::new();
    put_bytes(
        &mut filter,
        n("flow.FlowFilter", "source_pod"),
        b"ecommerce/",
    );
    put_bytes(&mut filter, n("flow.FlowFilter", "http_status_code"), b"5+");
    // Packed repeated enum, as Go's protobuf writes it.
    put_bytes(&mut filter, n("flow.FlowFilter", "verdict"), &[1, 2]);
    let mut flags = Vec::new();
    put_varint(&mut flags, n("flow.TCPFlags", "SYN"), 1);
    put_bytes(&mut filter, n("flow.FlowFilter", "tcp_flags"), &flags);

    let mut req = Vec::new();
    put_varint(&mut req, n("observer.GetFlowsRequest", "number"), 20);
    put_varint(&mut req, n("observer.GetFlowsRequest", "follow"), 1);
    put_bytes(
        &mut req,
        n("observer.GetFlowsRequest", "whitelist"),
        &filter,
    );
    put_bytes(
        &mut req,
        n("observer.GetFlowsRequest", "since"),
        &timestamp_bytes(1_700_000_000, 0),
    );

    let decoded = observer::GetFlowsRequest::decode(req.as_slice()).unwrap();
    let expected = observer::GetFlowsRequest {
        number: 20,
        follow: true,
        whitelist: vec![flow::FlowFilter {
            source_pod: vec!["ecommerce/".into()],
            http_status_code: vec!["5+".into()],
            verdict: vec![
                flow::Verdict::Forwarded as i32,
                flow::Verdict::Dropped as i32,
            ],
            tcp_flags: vec![flow::TcpFlags {
                syn: true,
                ..Default::default()
            }],
            ..Default::default()
        }],
        since: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        ..Default::default()
    };
    assert_eq!(decoded, expected);

    // And the reverse: our encoding read back by number.
    let top = read_fields(&expected.encode_to_vec());
    assert_eq!(
        *only(&top, n("observer.GetFlowsRequest", "number")),
        Val::Varint(20)
    );
    assert_eq!(
        *only(&top, n("observer.GetFlowsRequest", "follow")),
        Val::Varint(1)
    );
    let f = read_fields(bytes(only(
        &top,
        n("observer.GetFlowsRequest", "whitelist"),
    )));
    assert_eq!(
        bytes(only(&f, n("flow.FlowFilter", "source_pod"))),
        b"ecommerce/"
    );
    assert_eq!(bytes(only(&f, n("flow.FlowFilter", "verdict"))), &[1, 2]);
}

#[test]
fn get_flows_response_envelope_by_number() {
    let mut lost = Vec::new();
    put_varint(&mut lost, n("flow.LostEvent", "source"), 3);
    put_varint(&mut lost, n("flow.LostEvent", "num_events_lost"), 17);
    let mut resp = Vec::new();
    put_bytes(
        &mut resp,
        n("observer.GetFlowsResponse", "lost_events"),
        &lost,
    );
    put_bytes(
        &mut resp,
        n("observer.GetFlowsResponse", "node_name"),
        b"node-a",
    );
    put_bytes(
        &mut resp,
        n("observer.GetFlowsResponse", "time"),
        &timestamp_bytes(1, 2),
    );
    let decoded = observer::GetFlowsResponse::decode(resp.as_slice()).unwrap();
    assert_eq!(
        decoded,
        observer::GetFlowsResponse {
            response_types: Some(observer::get_flows_response::ResponseTypes::LostEvents(
                flow::LostEvent {
                    source: flow::LostEventSource::HubbleRingBuffer as i32,
                    num_events_lost: 17,
                    cpu: None,
                    first: None,
                    last: None,
                }
            )),
            node_name: "node-a".into(),
            time: Some(Timestamp {
                seconds: 1,
                nanos: 2
            }),
        }
    );

    let status = observer::GetFlowsResponse {
        response_types: Some(observer::get_flows_response::ResponseTypes::NodeStatus(
            relay::NodeStatusEvent {
                state_change: relay::NodeState::NodeUnavailable as i32,
                node_names: vec!["node-b".into()],
                message: "connection refused".into(),
            },
        )),
        ..Default::default()
    };
    let top = read_fields(&status.encode_to_vec());
    let ns = read_fields(bytes(only(
        &top,
        n("observer.GetFlowsResponse", "node_status"),
    )));
    assert_eq!(
        *only(&ns, n("relay.NodeStatusEvent", "state_change")),
        Val::Varint(2)
    );
    assert_eq!(
        bytes(only(&ns, n("relay.NodeStatusEvent", "node_names"))),
        b"node-b"
    );
}

#[test]
fn peer_change_notification_by_number() {
    let mut tls = Vec::new();
    put_bytes(
        &mut tls,
        n("peer.TLS", "server_name"),
        b"node-a.hubble-grpc.cilium.io",
    );
    let mut cn = Vec::new();
    put_bytes(&mut cn, n("peer.ChangeNotification", "name"), b"node-a");
    put_bytes(
        &mut cn,
        n("peer.ChangeNotification", "address"),
        b"10.0.0.1:4244",
    );
    put_varint(&mut cn, n("peer.ChangeNotification", "type"), 1);
    put_bytes(&mut cn, n("peer.ChangeNotification", "tls"), &tls);
    let decoded = peer::ChangeNotification::decode(cn.as_slice()).unwrap();
    assert_eq!(
        decoded,
        peer::ChangeNotification {
            name: "node-a".into(),
            address: "10.0.0.1:4244".into(),
            r#type: peer::ChangeNotificationType::PeerAdded as i32,
            tls: Some(peer::Tls {
                server_name: "node-a.hubble-grpc.cilium.io".into()
            }),
        }
    );
    assert_eq!(decoded.encode_to_vec(), cn);
}
