//! Field masks over [`Flow`](crate::flow::Flow), as GetFlowsRequest.field_mask
//! and `hubble-export-fieldmask` use them.
//!
//! Paths use proto field names joined by dots (`source.pod_name`, `IP`,
//! `l4.TCP.destination_port`); a path selects its whole subtree. Paths are
//! checked against the Flow descriptor once, into a tree of field numbers.
//! Applying a mask filters the flow's protobuf encoding by that tree (a
//! message field with selected children is filtered recursively, each
//! occurrence of a repeated one alike) and decodes the result. That is
//! generic over Flow's fields and several times cheaper than pruning a
//! dynamic message, but still an encode and a decode: keep it off paths
//! that need no mask ([`FlowFieldMask::is_empty`]).
use std::collections::BTreeMap;
use std::sync::OnceLock;

use prost::Message;
use prost::bytes::BufMut;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

use crate::flow::Flow;

/// An invalid mask path, or (never expected) a flow that would not transcode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldMaskError {
    #[error("invalid field mask path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("field mask: {0}")]
    Transcode(String),
}

fn flow_descriptor() -> Result<&'static MessageDescriptor, FieldMaskError> {
    static DESC: OnceLock<Result<MessageDescriptor, String>> = OnceLock::new();
    DESC.get_or_init(|| {
        let pool = DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())?;
        pool.get_message_by_name("flow.Flow")
            .ok_or_else(|| "flow.Flow missing from the descriptor set".to_string())
    })
    .as_ref()
    .map_err(|e| FieldMaskError::Transcode(e.clone()))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    /// The whole subtree is selected.
    whole: bool,
    /// Otherwise, the selected children by field number.
    children: BTreeMap<u32, Node>,
}

/// A compiled field mask for flows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowFieldMask {
    root: Node,
}

impl FlowFieldMask {
    /// Compiles `paths`; an empty list selects everything.
    pub fn new<S: AsRef<str>>(paths: &[S]) -> Result<Self, FieldMaskError> {
        let desc = flow_descriptor()?;
        let mut root = Node::default();
        for path in paths {
            let path = path.as_ref();
            let bad = |reason: &str| FieldMaskError::InvalidPath {
                path: path.to_string(),
                reason: reason.to_string(),
            };
            if path.is_empty() {
                return Err(bad("empty path"));
            }
            let mut msg = desc.clone();
            let mut node = &mut root;
            let mut segments = path.split('.').peekable();
            while let Some(seg) = segments.next() {
                let field = msg
                    .get_field_by_name(seg)
                    .ok_or_else(|| bad(&format!("{} has no field {seg:?}", msg.full_name())))?;
                let is_last = segments.peek().is_none();
                if !is_last {
                    match field.kind() {
                        Kind::Message(m) if !field.is_map() => msg = m,
                        _ => return Err(bad(&format!("{seg:?} is not a message field"))),
                    }
                }
                node = node.children.entry(field.number()).or_default();
                if node.whole {
                    // An earlier, shorter path already selects all of it.
                    break;
                }
                if is_last {
                    node.whole = true;
                    node.children.clear();
                }
            }
        }
        Ok(Self { root })
    }

    /// True when the mask selects every field.
    pub fn is_empty(&self) -> bool {
        self.root.children.is_empty()
    }

    /// A copy of `flow` with only the selected fields.
    pub fn apply(&self, flow: &Flow) -> Result<Flow, FieldMaskError> {
        if self.is_empty() {
            return Ok(flow.clone());
        }
        let encoded = flow.encode_to_vec();
        let mut kept = Vec::with_capacity(encoded.len());
        prune(&encoded, &self.root, &mut kept)?;
        Flow::decode(kept.as_slice()).map_err(|e| FieldMaskError::Transcode(e.to_string()))
    }
}

/// Appends to `out` the fields of the encoded message `msg` that `node`
/// selects. A selected field is copied as it is; a field with selected
/// children is a message field (checked in [`FlowFieldMask::new`]) and is
/// filtered in turn, so a message whose selected children are all absent
/// stays, empty, as the parent of the selection.
fn prune(mut msg: &[u8], node: &Node, out: &mut Vec<u8>) -> Result<(), FieldMaskError> {
    let bad = |e: prost::DecodeError| FieldMaskError::Transcode(e.to_string());
    while !msg.is_empty() {
        let field = msg;
        let (number, wire_type) = decode_key(&mut msg).map_err(bad)?;
        let len = match wire_type {
            WireType::Varint => {
                decode_varint(&mut msg).map_err(bad)?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                usize::try_from(decode_varint(&mut msg).map_err(bad)?).unwrap_or(usize::MAX)
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(FieldMaskError::Transcode(format!(
                    "field {number}: a group (flow.Flow has none)"
                )));
            }
        };
        let Some(payload) = msg.get(..len) else {
            return Err(FieldMaskError::Transcode(format!(
                "field {number}: {len} bytes, {} left",
                msg.len()
            )));
        };
        msg = &msg[len..];
        let Some(child) = node.children.get(&number) else {
            continue;
        };
        if child.whole {
            out.put_slice(&field[..field.len() - msg.len()]);
            continue;
        }
        if wire_type != WireType::LengthDelimited {
            return Err(FieldMaskError::Transcode(format!(
                "field {number} is not a message"
            )));
        }
        let mut inner = Vec::with_capacity(len);
        prune(payload, child, &mut inner)?;
        encode_key(number, WireType::LengthDelimited, out);
        encode_varint(inner.len() as u64, out);
        out.put_slice(&inner);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Endpoint, Ip, Layer4, Tcp, TcpFlags, Workload, layer4::Protocol};

    fn flow() -> Flow {
        Flow {
            uuid: "u".into(),
            verdict: 1,
            node_name: "n1".into(),
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                destination: "10.0.0.2".into(),
                ip_version: 1,
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    source_port: 1,
                    destination_port: 2,
                    flags: Some(TcpFlags {
                        syn: true,
                        ..Default::default()
                    }),
                })),
            }),
            source: Some(Endpoint {
                namespace: "ns".into(),
                pod_name: "p".into(),
                labels: vec!["k8s:app=a".into()],
                workloads: vec![
                    Workload {
                        name: "w".into(),
                        kind: "Deployment".into(),
                    },
                    Workload {
                        name: "x".into(),
                        kind: "Job".into(),
                    },
                ],
                ..Default::default()
            }),
            is_reply: Some(false.into()),
            ..Default::default()
        }
    }

    #[test]
    fn empty_mask_keeps_everything() {
        let m = FlowFieldMask::new::<&str>(&[]).unwrap();
        assert!(m.is_empty());
        assert_eq!(m.apply(&flow()).unwrap(), flow());
    }

    #[test]
    fn selects_nested_fields() {
        let m = FlowFieldMask::new(&[
            "source.pod_name",
            "IP",
            "l4.TCP.destination_port",
            "verdict",
        ])
        .unwrap();
        let got = m.apply(&flow()).unwrap();
        let expected = Flow {
            verdict: 1,
            ip: flow().ip,
            l4: Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    destination_port: 2,
                    ..Default::default()
                })),
            }),
            source: Some(Endpoint {
                pod_name: "p".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(got, expected);
    }

    #[test]
    fn repeated_messages_and_prefix_union() {
        let m = FlowFieldMask::new(&["source.workloads.kind", "is_reply"]).unwrap();
        let got = m.apply(&flow()).unwrap();
        let src = got.source.unwrap();
        assert_eq!(
            src.workloads,
            vec![
                Workload {
                    name: String::new(),
                    kind: "Deployment".into()
                },
                Workload {
                    name: String::new(),
                    kind: "Job".into()
                }
            ]
        );
        assert!(src.pod_name.is_empty());
        assert_eq!(got.is_reply, Some(false.into()));
        // A shorter path selects the whole subtree, in either order.
        for paths in [["source", "source.pod_name"], ["source.pod_name", "source"]] {
            let got = FlowFieldMask::new(&paths).unwrap().apply(&flow()).unwrap();
            assert_eq!(got.source, flow().source);
            assert_eq!(got.ip, None);
        }
    }

    /// The reference: the mask applied to a dynamic message (how flowd
    /// applied it before filtering the encoding).
    fn pruned_dynamically(mask: &FlowFieldMask, flow: &Flow) -> Flow {
        use prost_reflect::{DynamicMessage, Value};
        fn prune(msg: &mut DynamicMessage, node: &Node) {
            let present: Vec<_> = msg.fields().map(|(f, _)| f).collect();
            for f in present {
                match node.children.get(&f.number()) {
                    None => msg.clear_field(&f),
                    Some(child) if child.whole => {}
                    Some(child) => match msg.get_field_mut(&f) {
                        Value::Message(m) => prune(m, child),
                        Value::List(items) => {
                            for item in items {
                                if let Value::Message(m) = item {
                                    prune(m, child);
                                }
                            }
                        }
                        _ => {}
                    },
                }
            }
        }
        let desc = flow_descriptor().unwrap().clone();
        let mut dm = DynamicMessage::decode(desc, flow.encode_to_vec().as_slice()).unwrap();
        prune(&mut dm, &mask.root);
        dm.transcode_to::<Flow>().unwrap()
    }

    /// Flows with every kind of field a mask can meet: scalars, strings,
    /// enums, wrappers, oneofs, repeated strings and repeated messages.
    fn rich_flows() -> Vec<Flow> {
        use crate::flow::{Dns, Http, HttpHeader, Layer7, layer7::Record};
        let mut http = flow();
        http.time = Some(crate::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        });
        http.destination = flow().source;
        http.l7 = Some(Layer7 {
            r#type: 2,
            latency_ns: 12_000_000,
            record: Some(Record::Http(Http {
                code: 503,
                method: "GET".into(),
                url: "http://svc/api".into(),
                protocol: "HTTP/1.1".into(),
                headers: vec![
                    HttpHeader {
                        key: "host".into(),
                        value: "svc".into(),
                    },
                    HttpHeader {
                        key: "x-id".into(),
                        value: "7".into(),
                    },
                ],
                url_truncated: false,
                ..Default::default()
            })),
            exchange_id: 9,
            unpaired: false,
        });
        let mut dns = flow();
        dns.l7 = Some(Layer7 {
            r#type: 1,
            record: Some(Record::Dns(Dns {
                query: "svc.ns.svc.cluster.local.".into(),
                ips: vec!["10.0.0.9".into(), "fd00::9".into()],
                ttl: 30,
                rcode: 3,
                qtypes: vec!["A".into()],
                ..Default::default()
            })),
            ..Default::default()
        });
        vec![flow(), http, dns, Flow::default()]
    }

    #[test]
    fn filtering_the_encoding_equals_pruning_a_dynamic_message() {
        let masks: &[&[&str]] = &[
            &["time"],
            &["verdict", "uuid", "node_name", "is_reply"],
            &["IP.source", "l4.TCP.flags.SYN"],
            &["l4"],
            &["source.labels", "destination.pod_name"],
            &["source.workloads.name", "destination"],
            &["l7.type", "l7.http.code", "l7.http.headers.key"],
            &["l7.dns.ips", "l7.dns.rcode", "l7.latency_ns"],
            &["l7.exchange_id", "l7.http"],
            &["source.workloads", "source.workloads.kind"],
        ];
        for paths in masks {
            let mask = FlowFieldMask::new(paths).unwrap();
            for (i, f) in rich_flows().iter().enumerate() {
                assert_eq!(
                    mask.apply(f).unwrap(),
                    pruned_dynamically(&mask, f),
                    "mask {paths:?}, flow {i}"
                );
            }
        }
    }

    #[test]
    fn malformed_encodings_are_errors() {
        let mask = FlowFieldMask::new(&["source.pod_name"]).unwrap();
        let mut out = Vec::new();
        // Field 8 (source), length-delimited, 5 bytes announced, 1 there.
        for bytes in [&[0x42, 0x05, 0x00][..], &[0x42][..], &[0x43][..]] {
            assert!(
                matches!(
                    prune(bytes, &mask.root, &mut out),
                    Err(FieldMaskError::Transcode(_))
                ),
                "{bytes:?}"
            );
        }
    }

    /// Every path into Hubble's current Flow is valid: each field, and each
    /// field of each nested message (to a depth that covers all of Flow's
    /// own messages), the CLI's default mask among them.
    #[test]
    fn every_path_of_the_flow_is_accepted() {
        fn paths(msg: &MessageDescriptor, prefix: &str, depth: usize, out: &mut Vec<String>) {
            for f in msg.fields() {
                let p = format!("{prefix}{}", f.name());
                out.push(p.clone());
                if let Kind::Message(m) = f.kind()
                    && !f.is_map()
                    && depth > 0
                {
                    paths(&m, &format!("{p}."), depth - 1, out);
                }
            }
        }
        let mut all = Vec::new();
        paths(flow_descriptor().unwrap(), "", 4, &mut all);
        for p in &all {
            FlowFieldMask::new(&[p]).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        for p in [
            "Summary",
            "ip_trace_id",
            "ip_trace_id.trace_id",
            "tunnel.IP.source",
            "file.name",
            "drop_reason",
            "reply",
            "egress_allowed_by.name",
            "extensions",
        ] {
            assert!(all.iter().any(|a| a == p), "{p} is a Flow path");
        }
        // hubble observe (compact, dict, table) sends all of these at once.
        let default = [
            "time",
            "verdict",
            "ethernet",
            "IP",
            "l4",
            "source.identity",
            "source.namespace",
            "source.pod_name",
            "destination.identity",
            "destination.namespace",
            "destination.pod_name",
            "Type",
            "node_name",
            "l7",
            "event_type",
            "source_service",
            "destination_service",
            "is_reply",
            "Summary",
            "ip_trace_id",
        ];
        let m = FlowFieldMask::new(&default).unwrap();
        #[allow(deprecated)]
        let f = Flow {
            summary: "TCP Flags: SYN".into(),
            uuid: "dropped by the mask".into(),
            ..flow()
        };
        let got = m.apply(&f).unwrap();
        #[allow(deprecated)]
        let kept = (got.summary.as_str(), got.uuid.as_str(), got.verdict);
        assert_eq!(kept, ("TCP Flags: SYN", "", 1));
        assert!(got.source.unwrap().labels.is_empty());
    }

    #[test]
    fn invalid_paths() {
        for (p, reason) in [
            ("", "empty path"),
            ("sauce", "flow.Flow has no field \"sauce\""),
            ("source.podName", "flow.Endpoint has no field \"podName\""),
            ("uuid.x", "\"uuid\" is not a message field"),
        ] {
            assert_eq!(
                FlowFieldMask::new(&[p]).unwrap_err(),
                FieldMaskError::InvalidPath {
                    path: p.into(),
                    reason: reason.into()
                }
            );
        }
    }
}
