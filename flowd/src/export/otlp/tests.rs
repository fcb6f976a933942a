use std::sync::Arc;

use flowd_proto::Timestamp;
use flowd_proto::flow::{Endpoint, LostEventSource, TraceContext, TraceParent};

use super::*;

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

#[test]
fn ingress_flows_describe_the_destination_pod() {
    let f = Flow {
        traffic_direction: TrafficDirection::Ingress as i32,
        source: Some(Endpoint {
            namespace: "a".into(),
            pod_name: "client".into(),
            ..Default::default()
        }),
        destination: Some(Endpoint {
            namespace: "b".into(),
            pod_name: "server".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let a = flow_attributes(&f);
    assert_eq!(str_attr(&a, "k8s.pod.name"), Some("server"));
    assert_eq!(str_attr(&a, "k8s.namespace.name"), Some("b"));
    assert_eq!(str_attr(&a, "source.k8s.pod.name"), Some("client"));
    assert_eq!(str_attr(&a, "flowd.traffic_direction"), Some("INGRESS"));
}

#[test]
fn w3c_trace_id_is_carried_over() {
    let hex = "4bf92f3577b34da6a3ce929d0e0e4736";
    let f = Flow {
        trace_context: Some(TraceContext {
            parent: Some(TraceParent {
                trace_id: hex.into(),
            }),
        }),
        ..Default::default()
    };
    let r = log_record(&ExportEvent::Flow(Arc::new(f)), 0);
    let got: String = r.trace_id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(got, hex);
    assert_eq!(parse_hex16("zz"), None);
    assert_eq!(parse_hex16(&"0".repeat(32)), None);
}

#[test]
fn lost_events_become_warning_records() {
    let r = log_record(
        &ExportEvent::Lost {
            source: LostEventSource::PerfEventRingBuffer,
            count: 7,
            time: Timestamp::from_unix_nanos(5),
        },
        9,
    );
    assert_eq!(r.event_name, "flowd.lost_events");
    assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(r.time_unix_nano, 5);
    assert_eq!(r.observed_time_unix_nano, 9);
    assert_eq!(
        str_attr(&r.attributes, "flowd.lost_events.source"),
        Some("PERF_EVENT_RING_BUFFER")
    );
}

#[test]
fn https_endpoints_are_refused_with_a_reason() {
    let stats = ExportStats::default();
    let (_tx, rx) = super::super::queue::bounded(SINK, 1, stats.clone());
    let err = spawn(OtlpOptions::new("https://collector:4317"), rx, stats).unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
}
