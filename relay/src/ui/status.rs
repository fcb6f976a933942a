//! `GET /api/status`: the nodes (connected or unavailable, with the reason),
//! flows per second through the relay, and lost events, so that a gap in the
//! map or the table is visible rather than hidden in a log.
use flowd_proto::observer::observer_server::Observer as _;
use flowd_proto::observer::{GetNodesRequest, ServerStatusRequest};
use flowd_proto::relay::NodeState;
use serde_json::{Value, json};
use tonic::Request;

use crate::server::Relay;
use crate::ui::map::ServiceMap;

/// The status document.
pub async fn status(relay: &Relay, map: &ServiceMap) -> Value {
    let (nodes, status) = futures::join!(
        relay.get_nodes(Request::new(GetNodesRequest {})),
        relay.server_status(Request::new(ServerStatusRequest {}))
    );
    let nodes: Vec<Value> = nodes
        .map(|r| r.into_inner().nodes)
        .unwrap_or_default()
        .into_iter()
        .map(|n| {
            let state = NodeState::try_from(n.state).unwrap_or(NodeState::UnknownNodeState);
            json!({
                "name": n.name,
                "address": n.address,
                "connected": state == NodeState::NodeConnected,
                "state": state.as_str_name(),
                "version": n.version,
                "tls": n.tls.is_some_and(|t| t.enabled),
                "flows_in_buffer": n.num_flows,
                "seen_flows": n.seen_flows,
            })
        })
        .collect();
    let (flows_per_second, flows_total, lost) = map.counters();
    let lost_total: u64 = lost.values().sum();
    let st = status.map(|r| r.into_inner()).ok();
    json!({
        "nodes": nodes,
        "connected": st.as_ref().and_then(|s| s.num_connected_nodes.as_ref()).map_or(0, |v| v.value),
        "unavailable": st.as_ref().map(|s| s.unavailable_nodes.clone()).unwrap_or_default(),
        "flows_per_second": (flows_per_second * 10.0).round() / 10.0,
        "flows_seen": flows_total,
        "lost_events": lost_total,
        "lost_by_source": lost,
        "lost_kernel_events": st.as_ref().map_or(0, |s| s.lost_kernel_events),
        "version": st.as_ref().map(|s| s.version.clone()).unwrap_or_default(),
        "uptime_ns": st.as_ref().map_or(0, |s| s.uptime_ns),
    })
}
