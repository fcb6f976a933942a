//! Wire compatibility with Cilium Hubble's API v1.
//!
//! The tables below were copied by hand from Hubble's api/v1/{flow,observer,
//! peer,relay}/*.proto (message, field, number, type). The test checks that
//! our descriptors have exactly these fields — nothing missing, nothing
//! renamed or renumbered — plus the documented flowd extensions (numbers >=
//! 1000). Then messages are encoded independently of our types (raw protobuf
//! wire format with the numbers from the table) and decoded with our types,
//! and the reverse.
use std::collections::BTreeSet;

use flowd_proto::{FILE_DESCRIPTOR_SET, Timestamp, flow, observer, peer, relay};
use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};
use prost_reflect::{DescriptorPool, Kind};

/// (message, field, number, type). `type` is the proto type, prefixed with
/// `repeated ` for repeated fields; messages and enums by full name.
const HUBBLE_FIELDS: &[(&str, &str, u32, &str)] = &[
    // flow.Flow (fields flowd declares; newer Hubble additions such as
    // trace_reason 36, file 38, tunnel 39 and the policy lists are not used).
    ("flow.Flow", "time", 1, "google.protobuf.Timestamp"),
    ("flow.Flow", "uuid", 34, "string"),
    ("flow.Flow", "verdict", 2, "flow.Verdict"),
    ("flow.Flow", "drop_reason", 3, "uint32"),
    ("flow.Flow", "auth_type", 35, "flow.AuthType"),
    ("flow.Flow", "ethernet", 4, "flow.Ethernet"),
    ("flow.Flow", "IP", 5, "flow.IP"),
    ("flow.Flow", "l4", 6, "flow.Layer4"),
    ("flow.Flow", "source", 8, "flow.Endpoint"),
    ("flow.Flow", "destination", 9, "flow.Endpoint"),
    ("flow.Flow", "Type", 10, "flow.FlowType"),
    ("flow.Flow", "node_name", 11, "string"),
    ("flow.Flow", "node_labels", 37, "repeated string"),
    ("flow.Flow", "source_names", 13, "repeated string"),
    ("flow.Flow", "destination_names", 14, "repeated string"),
    ("flow.Flow", "l7", 15, "flow.Layer7"),
    ("flow.Flow", "reply", 16, "bool"),
    ("flow.Flow", "event_type", 19, "flow.CiliumEventType"),
    ("flow.Flow", "source_service", 20, "flow.Service"),
    ("flow.Flow", "destination_service", 21, "flow.Service"),
    (
        "flow.Flow",
        "traffic_direction",
        22,
        "flow.TrafficDirection",
    ),
    ("flow.Flow", "policy_match_type", 23, "uint32"),
    (
        "flow.Flow",
        "trace_observation_point",
        24,
        "flow.TraceObservationPoint",
    ),
    ("flow.Flow", "drop_reason_desc", 25, "flow.DropReason"),
    ("flow.Flow", "is_reply", 26, "google.protobuf.BoolValue"),
    (
        "flow.Flow",
        "debug_capture_point",
        27,
        "flow.DebugCapturePoint",
    ),
    ("flow.Flow", "interface", 28, "flow.NetworkInterface"),
    ("flow.Flow", "proxy_port", 29, "uint32"),
    ("flow.Flow", "trace_context", 30, "flow.TraceContext"),
    (
        "flow.Flow",
        "sock_xlate_point",
        31,
        "flow.SocketTranslationPoint",
    ),
    ("flow.Flow", "socket_cookie", 32, "uint64"),
    ("flow.Flow", "cgroup_id", 33, "uint64"),
    ("flow.Flow", "Summary", 100000, "string"),
    ("flow.Layer4", "TCP", 1, "flow.TCP"),
    ("flow.Layer4", "UDP", 2, "flow.UDP"),
    ("flow.Layer4", "ICMPv4", 3, "flow.ICMPv4"),
    ("flow.Layer4", "ICMPv6", 4, "flow.ICMPv6"),
    ("flow.Layer4", "SCTP", 5, "flow.SCTP"),
    ("flow.Layer7", "type", 1, "flow.L7FlowType"),
    ("flow.Layer7", "latency_ns", 2, "uint64"),
    ("flow.Layer7", "dns", 100, "flow.DNS"),
    ("flow.Layer7", "http", 101, "flow.HTTP"),
    ("flow.Layer7", "kafka", 102, "flow.Kafka"),
    ("flow.TraceContext", "parent", 1, "flow.TraceParent"),
    ("flow.TraceParent", "trace_id", 1, "string"),
    ("flow.Endpoint", "ID", 1, "uint32"),
    ("flow.Endpoint", "identity", 2, "uint32"),
    ("flow.Endpoint", "cluster_name", 7, "string"),
    ("flow.Endpoint", "namespace", 3, "string"),
    ("flow.Endpoint", "labels", 4, "repeated string"),
    ("flow.Endpoint", "pod_name", 5, "string"),
    ("flow.Endpoint", "workloads", 6, "repeated flow.Workload"),
    ("flow.Workload", "name", 1, "string"),
    ("flow.Workload", "kind", 2, "string"),
    ("flow.TCP", "source_port", 1, "uint32"),
    ("flow.TCP", "destination_port", 2, "uint32"),
    ("flow.TCP", "flags", 3, "flow.TCPFlags"),
    ("flow.IP", "source", 1, "string"),
    ("flow.IP", "source_xlated", 5, "string"),
    ("flow.IP", "destination", 2, "string"),
    ("flow.IP", "ipVersion", 3, "flow.IPVersion"),
    ("flow.IP", "encrypted", 4, "bool"),
    ("flow.Ethernet", "source", 1, "string"),
    ("flow.Ethernet", "destination", 2, "string"),
    ("flow.TCPFlags", "FIN", 1, "bool"),
    ("flow.TCPFlags", "SYN", 2, "bool"),
    ("flow.TCPFlags", "RST", 3, "bool"),
    ("flow.TCPFlags", "PSH", 4, "bool"),
    ("flow.TCPFlags", "ACK", 5, "bool"),
    ("flow.TCPFlags", "URG", 6, "bool"),
    ("flow.TCPFlags", "ECE", 7, "bool"),
    ("flow.TCPFlags", "CWR", 8, "bool"),
    ("flow.TCPFlags", "NS", 9, "bool"),
    ("flow.UDP", "source_port", 1, "uint32"),
    ("flow.UDP", "destination_port", 2, "uint32"),
    ("flow.SCTP", "source_port", 1, "uint32"),
    ("flow.SCTP", "destination_port", 2, "uint32"),
    ("flow.ICMPv4", "type", 1, "uint32"),
    ("flow.ICMPv4", "code", 2, "uint32"),
    ("flow.ICMPv6", "type", 1, "uint32"),
    ("flow.ICMPv6", "code", 2, "uint32"),
    ("flow.EventTypeFilter", "type", 1, "int32"),
    ("flow.EventTypeFilter", "match_sub_type", 2, "bool"),
    ("flow.EventTypeFilter", "sub_type", 3, "int32"),
    ("flow.CiliumEventType", "type", 1, "int32"),
    ("flow.CiliumEventType", "sub_type", 2, "int32"),
    ("flow.FlowFilter", "uuid", 29, "repeated string"),
    ("flow.FlowFilter", "source_ip", 1, "repeated string"),
    ("flow.FlowFilter", "source_pod", 2, "repeated string"),
    ("flow.FlowFilter", "source_fqdn", 7, "repeated string"),
    ("flow.FlowFilter", "source_label", 10, "repeated string"),
    ("flow.FlowFilter", "source_service", 16, "repeated string"),
    (
        "flow.FlowFilter",
        "source_workload",
        26,
        "repeated flow.Workload",
    ),
    ("flow.FlowFilter", "destination_ip", 3, "repeated string"),
    ("flow.FlowFilter", "destination_pod", 4, "repeated string"),
    ("flow.FlowFilter", "destination_fqdn", 8, "repeated string"),
    (
        "flow.FlowFilter",
        "destination_label",
        11,
        "repeated string",
    ),
    (
        "flow.FlowFilter",
        "destination_service",
        17,
        "repeated string",
    ),
    (
        "flow.FlowFilter",
        "destination_workload",
        27,
        "repeated flow.Workload",
    ),
    (
        "flow.FlowFilter",
        "traffic_direction",
        30,
        "repeated flow.TrafficDirection",
    ),
    ("flow.FlowFilter", "verdict", 5, "repeated flow.Verdict"),
    (
        "flow.FlowFilter",
        "drop_reason_desc",
        33,
        "repeated flow.DropReason",
    ),
    (
        "flow.FlowFilter",
        "event_type",
        6,
        "repeated flow.EventTypeFilter",
    ),
    ("flow.FlowFilter", "http_status_code", 9, "repeated string"),
    ("flow.FlowFilter", "protocol", 12, "repeated string"),
    ("flow.FlowFilter", "source_port", 13, "repeated string"),
    ("flow.FlowFilter", "destination_port", 14, "repeated string"),
    ("flow.FlowFilter", "reply", 15, "repeated bool"),
    ("flow.FlowFilter", "dns_query", 18, "repeated string"),
    ("flow.FlowFilter", "source_identity", 19, "repeated uint32"),
    (
        "flow.FlowFilter",
        "destination_identity",
        20,
        "repeated uint32",
    ),
    ("flow.FlowFilter", "http_method", 21, "repeated string"),
    ("flow.FlowFilter", "http_path", 22, "repeated string"),
    ("flow.FlowFilter", "tcp_flags", 23, "repeated flow.TCPFlags"),
    ("flow.FlowFilter", "node_name", 24, "repeated string"),
    (
        "flow.FlowFilter",
        "ip_version",
        25,
        "repeated flow.IPVersion",
    ),
    ("flow.FlowFilter", "trace_id", 28, "repeated string"),
    ("flow.DNS", "query", 1, "string"),
    ("flow.DNS", "ips", 2, "repeated string"),
    ("flow.DNS", "ttl", 3, "uint32"),
    ("flow.DNS", "cnames", 4, "repeated string"),
    ("flow.DNS", "observation_source", 5, "string"),
    ("flow.DNS", "rcode", 6, "uint32"),
    ("flow.DNS", "qtypes", 7, "repeated string"),
    ("flow.DNS", "rrtypes", 8, "repeated string"),
    ("flow.HTTPHeader", "key", 1, "string"),
    ("flow.HTTPHeader", "value", 2, "string"),
    ("flow.HTTP", "code", 1, "uint32"),
    ("flow.HTTP", "method", 2, "string"),
    ("flow.HTTP", "url", 3, "string"),
    ("flow.HTTP", "protocol", 4, "string"),
    ("flow.HTTP", "headers", 5, "repeated flow.HTTPHeader"),
    ("flow.Kafka", "error_code", 1, "int32"),
    ("flow.Kafka", "api_version", 2, "int32"),
    ("flow.Kafka", "api_key", 3, "string"),
    ("flow.Kafka", "correlation_id", 4, "int32"),
    ("flow.Kafka", "topic", 5, "string"),
    ("flow.Service", "name", 1, "string"),
    ("flow.Service", "namespace", 2, "string"),
    ("flow.LostEvent", "source", 1, "flow.LostEventSource"),
    ("flow.LostEvent", "num_events_lost", 2, "uint64"),
    ("flow.LostEvent", "cpu", 3, "google.protobuf.Int32Value"),
    ("flow.NetworkInterface", "index", 1, "uint32"),
    ("flow.NetworkInterface", "name", 2, "string"),
    // Only the notifications flowd could ever send; the others are reserved.
    ("flow.AgentEvent", "type", 1, "flow.AgentEventType"),
    ("flow.AgentEvent", "unknown", 100, "flow.AgentEventUnknown"),
    (
        "flow.AgentEvent",
        "agent_start",
        101,
        "flow.TimeNotification",
    ),
    ("flow.AgentEventUnknown", "type", 1, "string"),
    ("flow.AgentEventUnknown", "notification", 2, "string"),
    (
        "flow.TimeNotification",
        "time",
        1,
        "google.protobuf.Timestamp",
    ),
    // Hubble: DebugEventType type = 1 (an enum; same varint encoding).
    ("flow.DebugEvent", "type", 1, "int32"),
    ("flow.DebugEvent", "source", 2, "flow.Endpoint"),
    ("flow.DebugEvent", "hash", 3, "google.protobuf.UInt32Value"),
    ("flow.DebugEvent", "arg1", 4, "google.protobuf.UInt32Value"),
    ("flow.DebugEvent", "arg2", 5, "google.protobuf.UInt32Value"),
    ("flow.DebugEvent", "arg3", 6, "google.protobuf.UInt32Value"),
    ("flow.DebugEvent", "message", 7, "string"),
    ("flow.DebugEvent", "cpu", 8, "google.protobuf.Int32Value"),
    // relay
    (
        "relay.NodeStatusEvent",
        "state_change",
        1,
        "relay.NodeState",
    ),
    ("relay.NodeStatusEvent", "node_names", 2, "repeated string"),
    ("relay.NodeStatusEvent", "message", 3, "string"),
    // observer
    ("observer.ServerStatusResponse", "num_flows", 1, "uint64"),
    ("observer.ServerStatusResponse", "max_flows", 2, "uint64"),
    ("observer.ServerStatusResponse", "seen_flows", 3, "uint64"),
    ("observer.ServerStatusResponse", "uptime_ns", 4, "uint64"),
    (
        "observer.ServerStatusResponse",
        "num_connected_nodes",
        5,
        "google.protobuf.UInt32Value",
    ),
    (
        "observer.ServerStatusResponse",
        "num_unavailable_nodes",
        6,
        "google.protobuf.UInt32Value",
    ),
    (
        "observer.ServerStatusResponse",
        "unavailable_nodes",
        7,
        "repeated string",
    ),
    ("observer.ServerStatusResponse", "version", 8, "string"),
    ("observer.ServerStatusResponse", "flows_rate", 9, "double"),
    ("observer.GetFlowsRequest", "number", 1, "uint64"),
    ("observer.GetFlowsRequest", "first", 9, "bool"),
    ("observer.GetFlowsRequest", "follow", 3, "bool"),
    (
        "observer.GetFlowsRequest",
        "blacklist",
        5,
        "repeated flow.FlowFilter",
    ),
    (
        "observer.GetFlowsRequest",
        "whitelist",
        6,
        "repeated flow.FlowFilter",
    ),
    (
        "observer.GetFlowsRequest",
        "since",
        7,
        "google.protobuf.Timestamp",
    ),
    (
        "observer.GetFlowsRequest",
        "until",
        8,
        "google.protobuf.Timestamp",
    ),
    (
        "observer.GetFlowsRequest",
        "field_mask",
        10,
        "google.protobuf.FieldMask",
    ),
    (
        "observer.GetFlowsRequest",
        "experimental",
        999,
        "observer.GetFlowsRequest.Experimental",
    ),
    (
        "observer.GetFlowsRequest",
        "extensions",
        150000,
        "google.protobuf.Any",
    ),
    (
        "observer.GetFlowsRequest.Experimental",
        "field_mask",
        1,
        "google.protobuf.FieldMask",
    ),
    ("observer.GetFlowsResponse", "flow", 1, "flow.Flow"),
    (
        "observer.GetFlowsResponse",
        "node_status",
        2,
        "relay.NodeStatusEvent",
    ),
    (
        "observer.GetFlowsResponse",
        "lost_events",
        3,
        "flow.LostEvent",
    ),
    ("observer.GetFlowsResponse", "node_name", 1000, "string"),
    (
        "observer.GetFlowsResponse",
        "time",
        1001,
        "google.protobuf.Timestamp",
    ),
    ("observer.GetAgentEventsRequest", "number", 1, "uint64"),
    ("observer.GetAgentEventsRequest", "first", 9, "bool"),
    ("observer.GetAgentEventsRequest", "follow", 2, "bool"),
    (
        "observer.GetAgentEventsRequest",
        "since",
        7,
        "google.protobuf.Timestamp",
    ),
    (
        "observer.GetAgentEventsRequest",
        "until",
        8,
        "google.protobuf.Timestamp",
    ),
    (
        "observer.GetAgentEventsResponse",
        "agent_event",
        1,
        "flow.AgentEvent",
    ),
    (
        "observer.GetAgentEventsResponse",
        "node_name",
        1000,
        "string",
    ),
    (
        "observer.GetAgentEventsResponse",
        "time",
        1001,
        "google.protobuf.Timestamp",
    ),
    ("observer.GetDebugEventsRequest", "number", 1, "uint64"),
    ("observer.GetDebugEventsRequest", "first", 9, "bool"),
    ("observer.GetDebugEventsRequest", "follow", 2, "bool"),
    (
        "observer.GetDebugEventsRequest",
        "since",
        7,
        "google.protobuf.Timestamp",
    ),
    (
        "observer.GetDebugEventsRequest",
        "until",
        8,
        "google.protobuf.Timestamp",
    ),
    (
        "observer.GetDebugEventsResponse",
        "debug_event",
        1,
        "flow.DebugEvent",
    ),
    (
        "observer.GetDebugEventsResponse",
        "node_name",
        1000,
        "string",
    ),
    (
        "observer.GetDebugEventsResponse",
        "time",
        1001,
        "google.protobuf.Timestamp",
    ),
    (
        "observer.GetNodesResponse",
        "nodes",
        1,
        "repeated observer.Node",
    ),
    ("observer.Node", "name", 1, "string"),
    ("observer.Node", "version", 2, "string"),
    ("observer.Node", "address", 3, "string"),
    ("observer.Node", "state", 4, "relay.NodeState"),
    ("observer.Node", "tls", 5, "observer.TLS"),
    ("observer.Node", "uptime_ns", 6, "uint64"),
    ("observer.Node", "num_flows", 7, "uint64"),
    ("observer.Node", "max_flows", 8, "uint64"),
    ("observer.Node", "seen_flows", 9, "uint64"),
    ("observer.TLS", "enabled", 1, "bool"),
    ("observer.TLS", "server_name", 2, "string"),
    (
        "observer.GetNamespacesResponse",
        "namespaces",
        1,
        "repeated observer.Namespace",
    ),
    ("observer.Namespace", "cluster", 1, "string"),
    ("observer.Namespace", "namespace", 2, "string"),
    ("observer.ExportEvent", "flow", 1, "flow.Flow"),
    (
        "observer.ExportEvent",
        "node_status",
        2,
        "relay.NodeStatusEvent",
    ),
    ("observer.ExportEvent", "lost_events", 3, "flow.LostEvent"),
    ("observer.ExportEvent", "agent_event", 4, "flow.AgentEvent"),
    ("observer.ExportEvent", "debug_event", 5, "flow.DebugEvent"),
    ("observer.ExportEvent", "node_name", 1000, "string"),
    (
        "observer.ExportEvent",
        "time",
        1001,
        "google.protobuf.Timestamp",
    ),
    // peer
    ("peer.ChangeNotification", "name", 1, "string"),
    ("peer.ChangeNotification", "address", 2, "string"),
    (
        "peer.ChangeNotification",
        "type",
        3,
        "peer.ChangeNotificationType",
    ),
    ("peer.ChangeNotification", "tls", 4, "peer.TLS"),
    ("peer.TLS", "server_name", 1, "string"),
];

/// flowd's own fields: numbers >= 1000, documented in the .proto files.
const FLOWD_EXTENSIONS: &[(&str, &str, u32, &str)] = &[
    ("flow.Flow", "kernel_drop_reason", 1000, "string"),
    ("flow.Flow", "kernel_drop_reason_code", 1001, "uint32"),
    ("flow.Flow", "stats", 1002, "flow.FlowStats"),
    ("flow.Flow", "drop_count", 1003, "uint64"),
    ("flow.Layer7", "exchange_id", 1000, "uint64"),
    ("flow.Layer7", "unpaired", 1001, "bool"),
    (
        "flow.FlowFilter",
        "kernel_drop_reason",
        1000,
        "repeated string",
    ),
    (
        "observer.ServerStatusResponse",
        "lost_kernel_events",
        1000,
        "uint64",
    ),
];

/// Messages with no fields in Hubble.
const HUBBLE_EMPTY: &[&str] = &[
    "observer.ServerStatusRequest",
    "observer.GetNodesRequest",
    "observer.GetNamespacesRequest",
    "peer.NotifyRequest",
];

/// (enum, value, number).
const HUBBLE_ENUMS: &[(&str, &str, i32)] = &[
    ("flow.FlowType", "UNKNOWN_TYPE", 0),
    ("flow.FlowType", "L3_L4", 1),
    ("flow.FlowType", "L7", 2),
    ("flow.FlowType", "SOCK", 3),
    ("flow.Verdict", "VERDICT_UNKNOWN", 0),
    ("flow.Verdict", "FORWARDED", 1),
    ("flow.Verdict", "DROPPED", 2),
    ("flow.Verdict", "ERROR", 3),
    ("flow.Verdict", "AUDIT", 4),
    ("flow.Verdict", "REDIRECTED", 5),
    ("flow.Verdict", "TRACED", 6),
    ("flow.Verdict", "TRANSLATED", 7),
    ("flow.TrafficDirection", "TRAFFIC_DIRECTION_UNKNOWN", 0),
    ("flow.TrafficDirection", "INGRESS", 1),
    ("flow.TrafficDirection", "EGRESS", 2),
    ("flow.IPVersion", "IP_NOT_USED", 0),
    ("flow.IPVersion", "IPv4", 1),
    ("flow.IPVersion", "IPv6", 2),
    ("flow.L7FlowType", "UNKNOWN_L7_TYPE", 0),
    ("flow.L7FlowType", "REQUEST", 1),
    ("flow.L7FlowType", "RESPONSE", 2),
    ("flow.L7FlowType", "SAMPLE", 3),
    ("flow.LostEventSource", "UNKNOWN_LOST_EVENT_SOURCE", 0),
    ("flow.LostEventSource", "PERF_EVENT_RING_BUFFER", 1),
    ("flow.LostEventSource", "OBSERVER_EVENTS_QUEUE", 2),
    ("flow.LostEventSource", "HUBBLE_RING_BUFFER", 3),
    ("flow.TraceObservationPoint", "UNKNOWN_POINT", 0),
    ("flow.TraceObservationPoint", "TO_PROXY", 1),
    ("flow.TraceObservationPoint", "TO_HOST", 2),
    ("flow.TraceObservationPoint", "TO_STACK", 3),
    ("flow.TraceObservationPoint", "TO_OVERLAY", 4),
    ("flow.TraceObservationPoint", "TO_ENDPOINT", 101),
    ("flow.TraceObservationPoint", "FROM_ENDPOINT", 5),
    ("flow.TraceObservationPoint", "FROM_PROXY", 6),
    ("flow.TraceObservationPoint", "FROM_HOST", 7),
    ("flow.TraceObservationPoint", "FROM_STACK", 8),
    ("flow.TraceObservationPoint", "FROM_OVERLAY", 9),
    ("flow.TraceObservationPoint", "FROM_NETWORK", 10),
    ("flow.TraceObservationPoint", "TO_NETWORK", 11),
    ("flow.AuthType", "DISABLED", 0),
    ("flow.AuthType", "SPIRE", 1),
    ("flow.AuthType", "TEST_ALWAYS_FAIL", 2),
    ("flow.EventType", "UNKNOWN", 0),
    ("flow.EventType", "EventSample", 9),
    ("flow.EventType", "RecordLost", 2),
    ("flow.SocketTranslationPoint", "SOCK_XLATE_POINT_UNKNOWN", 0),
    (
        "flow.SocketTranslationPoint",
        "SOCK_XLATE_POINT_PRE_DIRECTION_FWD",
        1,
    ),
    (
        "flow.SocketTranslationPoint",
        "SOCK_XLATE_POINT_POST_DIRECTION_FWD",
        2,
    ),
    (
        "flow.SocketTranslationPoint",
        "SOCK_XLATE_POINT_PRE_DIRECTION_REV",
        3,
    ),
    (
        "flow.SocketTranslationPoint",
        "SOCK_XLATE_POINT_POST_DIRECTION_REV",
        4,
    ),
    ("flow.DebugCapturePoint", "DBG_CAPTURE_POINT_UNKNOWN", 0),
    ("flow.DebugCapturePoint", "DBG_CAPTURE_DELIVERY", 4),
    ("flow.DebugCapturePoint", "DBG_CAPTURE_FROM_LB", 5),
    ("flow.DebugCapturePoint", "DBG_CAPTURE_AFTER_V46", 6),
    ("flow.DebugCapturePoint", "DBG_CAPTURE_AFTER_V64", 7),
    ("flow.DebugCapturePoint", "DBG_CAPTURE_PROXY_PRE", 8),
    ("flow.DebugCapturePoint", "DBG_CAPTURE_PROXY_POST", 9),
    ("flow.DebugCapturePoint", "DBG_CAPTURE_SNAT_PRE", 10),
    ("flow.DebugCapturePoint", "DBG_CAPTURE_SNAT_POST", 11),
    ("flow.AgentEventType", "AGENT_EVENT_UNKNOWN", 0),
    ("flow.AgentEventType", "AGENT_STARTED", 2),
    ("flow.AgentEventType", "POLICY_UPDATED", 3),
    ("flow.AgentEventType", "POLICY_DELETED", 4),
    ("flow.AgentEventType", "ENDPOINT_REGENERATE_SUCCESS", 5),
    ("flow.AgentEventType", "ENDPOINT_REGENERATE_FAILURE", 6),
    ("flow.AgentEventType", "ENDPOINT_CREATED", 7),
    ("flow.AgentEventType", "ENDPOINT_DELETED", 8),
    ("flow.AgentEventType", "IPCACHE_UPSERTED", 9),
    ("flow.AgentEventType", "IPCACHE_DELETED", 10),
    ("flow.AgentEventType", "SERVICE_UPSERTED", 11),
    ("flow.AgentEventType", "SERVICE_DELETED", 12),
    ("relay.NodeState", "UNKNOWN_NODE_STATE", 0),
    ("relay.NodeState", "NODE_CONNECTED", 1),
    ("relay.NodeState", "NODE_UNAVAILABLE", 2),
    ("relay.NodeState", "NODE_GONE", 3),
    ("relay.NodeState", "NODE_ERROR", 4),
    ("peer.ChangeNotificationType", "UNKNOWN", 0),
    ("peer.ChangeNotificationType", "PEER_ADDED", 1),
    ("peer.ChangeNotificationType", "PEER_DELETED", 2),
    ("peer.ChangeNotificationType", "PEER_UPDATED", 3),
    // DropReason: Hubble's full list.
    ("flow.DropReason", "DROP_REASON_UNKNOWN", 0),
    ("flow.DropReason", "INVALID_SOURCE_MAC", 130),
    ("flow.DropReason", "INVALID_DESTINATION_MAC", 131),
    ("flow.DropReason", "INVALID_SOURCE_IP", 132),
    ("flow.DropReason", "POLICY_DENIED", 133),
    ("flow.DropReason", "INVALID_PACKET_DROPPED", 134),
    ("flow.DropReason", "CT_TRUNCATED_OR_INVALID_HEADER", 135),
    ("flow.DropReason", "CT_MISSING_TCP_ACK_FLAG", 136),
    ("flow.DropReason", "CT_UNKNOWN_L4_PROTOCOL", 137),
    ("flow.DropReason", "CT_CANNOT_CREATE_ENTRY_FROM_PACKET", 138),
    ("flow.DropReason", "UNSUPPORTED_L3_PROTOCOL", 139),
    ("flow.DropReason", "MISSED_TAIL_CALL", 140),
    ("flow.DropReason", "ERROR_WRITING_TO_PACKET", 141),
    ("flow.DropReason", "UNKNOWN_L4_PROTOCOL", 142),
    ("flow.DropReason", "UNKNOWN_ICMPV4_CODE", 143),
    ("flow.DropReason", "UNKNOWN_ICMPV4_TYPE", 144),
    ("flow.DropReason", "UNKNOWN_ICMPV6_CODE", 145),
    ("flow.DropReason", "UNKNOWN_ICMPV6_TYPE", 146),
    ("flow.DropReason", "ERROR_RETRIEVING_TUNNEL_KEY", 147),
    ("flow.DropReason", "ERROR_RETRIEVING_TUNNEL_OPTIONS", 148),
    ("flow.DropReason", "INVALID_GENEVE_OPTION", 149),
    ("flow.DropReason", "UNKNOWN_L3_TARGET_ADDRESS", 150),
    ("flow.DropReason", "STALE_OR_UNROUTABLE_IP", 151),
    ("flow.DropReason", "NO_MATCHING_LOCAL_CONTAINER_FOUND", 152),
    ("flow.DropReason", "ERROR_WHILE_CORRECTING_L3_CHECKSUM", 153),
    ("flow.DropReason", "ERROR_WHILE_CORRECTING_L4_CHECKSUM", 154),
    ("flow.DropReason", "CT_MAP_INSERTION_FAILED", 155),
    ("flow.DropReason", "INVALID_IPV6_EXTENSION_HEADER", 156),
    ("flow.DropReason", "IP_FRAGMENTATION_NOT_SUPPORTED", 157),
    ("flow.DropReason", "SERVICE_BACKEND_NOT_FOUND", 158),
    (
        "flow.DropReason",
        "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT",
        160,
    ),
    ("flow.DropReason", "FAILED_TO_INSERT_INTO_PROXYMAP", 161),
    (
        "flow.DropReason",
        "REACHED_EDT_RATE_LIMITING_DROP_HORIZON",
        162,
    ),
    ("flow.DropReason", "UNKNOWN_CONNECTION_TRACKING_STATE", 163),
    ("flow.DropReason", "LOCAL_HOST_IS_UNREACHABLE", 164),
    (
        "flow.DropReason",
        "NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION",
        165,
    ),
    ("flow.DropReason", "UNSUPPORTED_L2_PROTOCOL", 166),
    ("flow.DropReason", "NO_MAPPING_FOR_NAT_MASQUERADE", 167),
    (
        "flow.DropReason",
        "UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE",
        168,
    ),
    ("flow.DropReason", "FIB_LOOKUP_FAILED", 169),
    (
        "flow.DropReason",
        "ENCAPSULATION_TRAFFIC_IS_PROHIBITED",
        170,
    ),
    ("flow.DropReason", "INVALID_IDENTITY", 171),
    ("flow.DropReason", "UNKNOWN_SENDER", 172),
    ("flow.DropReason", "NAT_NOT_NEEDED", 173),
    ("flow.DropReason", "IS_A_CLUSTERIP", 174),
    (
        "flow.DropReason",
        "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND",
        175,
    ),
    ("flow.DropReason", "FORBIDDEN_ICMPV6_MESSAGE", 176),
    ("flow.DropReason", "DENIED_BY_LB_SRC_RANGE_CHECK", 177),
    ("flow.DropReason", "SOCKET_LOOKUP_FAILED", 178),
    ("flow.DropReason", "SOCKET_ASSIGN_FAILED", 179),
    (
        "flow.DropReason",
        "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL",
        180,
    ),
    ("flow.DropReason", "POLICY_DENY", 181),
    ("flow.DropReason", "VLAN_FILTERED", 182),
    ("flow.DropReason", "INVALID_VNI", 183),
    ("flow.DropReason", "INVALID_TC_BUFFER", 184),
    ("flow.DropReason", "NO_SID", 185),
    ("flow.DropReason", "MISSING_SRV6_STATE", 186),
    ("flow.DropReason", "NAT46", 187),
    ("flow.DropReason", "NAT64", 188),
    ("flow.DropReason", "AUTH_REQUIRED", 189),
    ("flow.DropReason", "CT_NO_MAP_FOUND", 190),
    ("flow.DropReason", "SNAT_NO_MAP_FOUND", 191),
    ("flow.DropReason", "INVALID_CLUSTER_ID", 192),
    ("flow.DropReason", "UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP", 193),
    ("flow.DropReason", "NO_EGRESS_GATEWAY", 194),
    ("flow.DropReason", "UNENCRYPTED_TRAFFIC", 195),
    ("flow.DropReason", "TTL_EXCEEDED", 196),
    ("flow.DropReason", "NO_NODE_ID", 197),
    ("flow.DropReason", "DROP_HOST_NOT_READY", 202),
    ("flow.DropReason", "DROP_EP_NOT_READY", 203),
];

/// (service, method, input, output, server streaming).
const HUBBLE_METHODS: &[(&str, &str, &str, &str, bool)] = &[
    (
        "observer.Observer",
        "GetFlows",
        "observer.GetFlowsRequest",
        "observer.GetFlowsResponse",
        true,
    ),
    (
        "observer.Observer",
        "GetAgentEvents",
        "observer.GetAgentEventsRequest",
        "observer.GetAgentEventsResponse",
        true,
    ),
    (
        "observer.Observer",
        "GetDebugEvents",
        "observer.GetDebugEventsRequest",
        "observer.GetDebugEventsResponse",
        true,
    ),
    (
        "observer.Observer",
        "GetNodes",
        "observer.GetNodesRequest",
        "observer.GetNodesResponse",
        false,
    ),
    (
        "observer.Observer",
        "GetNamespaces",
        "observer.GetNamespacesRequest",
        "observer.GetNamespacesResponse",
        false,
    ),
    (
        "observer.Observer",
        "ServerStatus",
        "observer.ServerStatusRequest",
        "observer.ServerStatusResponse",
        false,
    ),
    (
        "peer.Peer",
        "Notify",
        "peer.NotifyRequest",
        "peer.ChangeNotification",
        true,
    ),
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

#[test]
fn messages_have_hubbles_fields_exactly() {
    let pool = pool();
    let expected: BTreeSet<(String, String, u32, String)> = HUBBLE_FIELDS
        .iter()
        .chain(FLOWD_EXTENSIONS)
        .map(|(m, f, n, t)| (m.to_string(), f.to_string(), *n, t.to_string()))
        .collect();
    assert_eq!(
        expected.len(),
        HUBBLE_FIELDS.len() + FLOWD_EXTENSIONS.len(),
        "duplicate table rows"
    );
    let messages: BTreeSet<&str> = HUBBLE_FIELDS.iter().map(|r| r.0).collect();
    let mut actual = BTreeSet::new();
    for m in &messages {
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
    for (_, _, n, _) in FLOWD_EXTENSIONS {
        assert!(*n >= 1000, "flowd extension below 1000");
    }
    for m in HUBBLE_EMPTY {
        let md = pool
            .get_message_by_name(m)
            .unwrap_or_else(|| panic!("message {m} missing"));
        assert_eq!(md.fields().len(), 0, "{m} must be empty");
    }
}

#[test]
fn enums_have_hubbles_values_exactly() {
    let pool = pool();
    let expected: BTreeSet<(String, String, i32)> = HUBBLE_ENUMS
        .iter()
        .map(|(e, v, n)| (e.to_string(), v.to_string(), *n))
        .collect();
    assert_eq!(expected.len(), HUBBLE_ENUMS.len(), "duplicate table rows");
    let enums: BTreeSet<&str> = HUBBLE_ENUMS.iter().map(|r| r.0).collect();
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
    for (svc, method, input, output, streaming) in HUBBLE_METHODS {
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
    assert_eq!(ours, HUBBLE_METHODS.len(), "methods not in Hubble's API");
}

fn num(t: &[(&str, &str, u32, &str)], msg: &str, field: &str) -> u32 {
    t.iter()
        .chain(FLOWD_EXTENSIONS)
        .find(|r| r.0 == msg && r.1 == field)
        .unwrap_or_else(|| panic!("{msg}.{field} not in table"))
        .2
}

fn n(msg: &str, field: &str) -> u32 {
    num(HUBBLE_FIELDS, msg, field)
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
            let ty = HUBBLE_FIELDS
                .iter()
                .chain(FLOWD_EXTENSIONS)
                .find(|r| r.0 == msg && r.2 == tag)
                .unwrap_or_else(|| panic!("{msg} field {tag} not in table"))
                .3;
            let ty = ty.trim_start_matches("repeated ");
            let nested = HUBBLE_FIELDS.iter().any(|r| r.0 == ty);
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
