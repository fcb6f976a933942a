//! Hubble JSON (protojson with proto field names) for the generated types.
use flowd_proto::{flow, observer};

fn sample_response() -> observer::GetFlowsResponse {
    let f = flow::Flow {
        time: Some(flowd_proto::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        }),
        verdict: flow::Verdict::Forwarded as i32,
        ip: Some(flow::Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            ip_version: flow::IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        l4: Some(flow::Layer4 {
            protocol: Some(flow::layer4::Protocol::Tcp(flow::Tcp {
                source_port: 40000,
                destination_port: 80,
                flags: Some(flow::TcpFlags {
                    syn: true,
                    ..Default::default()
                }),
            })),
        }),
        source: Some(flow::Endpoint {
            namespace: "ecommerce".into(),
            pod_name: "frontend-1".into(),
            ..Default::default()
        }),
        r#type: flow::FlowType::L3L4 as i32,
        node_name: "node-1".into(),
        is_reply: Some(false.into()),
        socket_cookie: 7,
        ..Default::default()
    };
    observer::GetFlowsResponse {
        response_types: Some(observer::get_flows_response::ResponseTypes::Flow(f)),
        node_name: "node-1".into(),
        time: Some(flowd_proto::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        }),
    }
}

#[test]
fn flow_json_uses_hubble_names() {
    let v = serde_json::to_value(sample_response()).unwrap();
    let expected = serde_json::json!({
        "flow": {
            "time": "2023-11-14T22:13:20.123456789Z",
            "verdict": "FORWARDED",
            "IP": {"source": "10.0.0.1", "destination": "10.0.0.2", "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": 40000, "destination_port": 80, "flags": {"SYN": true}}},
            "source": {"namespace": "ecommerce", "pod_name": "frontend-1"},
            "Type": "L3_L4",
            "node_name": "node-1",
            "is_reply": false,
            "socket_cookie": "7"
        },
        "node_name": "node-1",
        "time": "2023-11-14T22:13:20.123456789Z"
    });
    assert_eq!(v, expected);
}

#[test]
fn flow_json_roundtrip() {
    let r = sample_response();
    let s = serde_json::to_string(&r).unwrap();
    let back: observer::GetFlowsResponse = serde_json::from_str(&s).unwrap();
    assert_eq!(back, r);
}

#[test]
fn filter_json_accepts_proto_and_camel_names() {
    // The form used by hubble-export-allowlist / denylist.
    let a: flow::FlowFilter = serde_json::from_str(
        r#"{"source_pod":["kube-system/"],"verdict":["DROPPED"],"tcp_flags":[{"SYN":true}]}"#,
    )
    .unwrap();
    let b: flow::FlowFilter = serde_json::from_str(
        r#"{"sourcePod":["kube-system/"],"verdict":[2],"tcpFlags":[{"SYN":true}]}"#,
    )
    .unwrap();
    let expected = flow::FlowFilter {
        source_pod: vec!["kube-system/".into()],
        verdict: vec![flow::Verdict::Dropped as i32],
        tcp_flags: vec![flow::TcpFlags {
            syn: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(a, expected);
    assert_eq!(b, expected);
    assert!(serde_json::from_str::<flow::FlowFilter>(r#"{"verdict":["NOT_A_VERDICT"]}"#).is_err());
}

#[test]
fn export_event_lost_events_json() {
    let e = observer::ExportEvent {
        response_types: Some(observer::export_event::ResponseTypes::LostEvents(
            flow::LostEvent {
                source: flow::LostEventSource::PerfEventRingBuffer as i32,
                num_events_lost: 3,
                cpu: Some(1.into()),
                ..Default::default()
            },
        )),
        node_name: "node-1".into(),
        time: Some(flowd_proto::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
    };
    // Key order may differ from Go's (pbjson writes the oneof last); JSON
    // consumers do not depend on it.
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        serde_json::json!({
            "lost_events": {"source": "PERF_EVENT_RING_BUFFER", "num_events_lost": "3", "cpu": 1},
            "node_name": "node-1",
            "time": "2023-11-14T22:13:20Z"
        })
    );
}
