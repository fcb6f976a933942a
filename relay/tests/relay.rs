//! The relay against in-test fake nodes on loopback.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use flowd_proto::flow::{FlowFilter, LostEventSource};
use flowd_proto::observer::*;
use flowd_proto::pbjson_types::UInt32Value;
use flowd_proto::relay::NodeState;

const T0: u64 = 1_700_000_000_000_000_000;

/// Three nodes whose buffered flows interleave in time.
fn three_nodes(per_node: u64) -> Vec<FakeNode> {
    (0..3u64)
        .map(|i| {
            let d = NodeData::new(&format!("node-{i}"));
            for k in 0..per_node {
                // node i, k-th flow at T0 + k*3ms + i ms (+ jitter per node)
                d.emit(T0 + k * 3_000_000 + i * 1_000_000 + i);
            }
            FakeNode::start(d)
        })
        .collect()
}

/// Ordering holds while every node answers within the drain timeout; the
/// tests that assert it use a generous one (machines here are shared and
/// busy), the others the short default of `test_config`.
fn ordered_config() -> flowd_relay::RelayConfig {
    flowd_relay::RelayConfig {
        drain_timeout: Duration::from_secs(2),
        ..test_config()
    }
}

fn assert_time_ordered(flows: &[(String, u64, String)]) {
    for w in flows.windows(2) {
        assert!(w[0].1 <= w[1].1, "out of order: {:?} then {:?}", w[0], w[1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_n_returns_last_n_per_node_in_time_order() {
    let nodes = three_nodes(50);
    let relay = relay_over(&nodes.iter().collect::<Vec<_>>(), ordered_config()).await;
    let mut c = client(relay.addr).await;
    wait_connected(&mut c, 3).await;

    let filter = FlowFilter {
        source_pod: vec!["ecommerce/".into()],
        ..Default::default()
    };
    let req = GetFlowsRequest {
        number: 10,
        whitelist: vec![filter.clone()],
        ..Default::default()
    };
    let mut s = c.get_flows(req).await.unwrap().into_inner();
    let mut seen = Seen::default();
    while let Some(m) = s.message().await.unwrap() {
        match classify(m) {
            Item::Flow(n, t, u) => seen.flows.push((n, t, u)),
            Item::Status(st, n) => seen.status.push((st, n)),
            Item::Lost(..) => panic!("lost events"),
        }
    }
    assert_eq!(seen.flows.len(), 30);
    assert_time_ordered(&seen.flows);
    for n in &nodes {
        // Exactly the last 10 of each node, with node_name set.
        let got: Vec<&str> = seen
            .flows
            .iter()
            .filter(|f| f.0 == n.data.name)
            .map(|f| f.2.as_str())
            .collect();
        let want: Vec<String> = (41..=50).map(|k| format!("{}-{k}", n.data.name)).collect();
        assert_eq!(got, want);
        assert!(seen.has_status(NodeState::NodeConnected, &n.data.name));
        // Filters travel to the nodes unchanged.
        let r = n.data.last_request.lock().unwrap().clone().unwrap();
        assert_eq!((r.number, r.whitelist), (10, vec![filter.clone()]));
    }

    // first: the first 5 of each node, merged.
    let req = GetFlowsRequest {
        number: 5,
        first: true,
        ..Default::default()
    };
    let mut s = c.get_flows(req).await.unwrap().into_inner();
    let mut flows = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        if let Item::Flow(n, t, u) = classify(m) {
            flows.push((n, t, u));
        }
    }
    let uuids: Vec<&str> = flows.iter().map(|f| f.2.as_str()).collect();
    let mut want = Vec::new();
    for k in 1..=5 {
        for i in 0..3 {
            want.push(format!("node-{i}-{k}"));
        }
    }
    assert_eq!(uuids, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_history_is_merged_in_order_through_bounded_buffers() {
    // 3 x 1000 flows through a sort buffer of 100 per node.
    let nodes = three_nodes(1000);
    let relay = relay_over(&nodes.iter().collect::<Vec<_>>(), ordered_config()).await;
    let mut c = client(relay.addr).await;
    wait_connected(&mut c, 3).await;
    let req = GetFlowsRequest {
        number: 1000,
        ..Default::default()
    };
    let mut s = c.get_flows(req).await.unwrap().into_inner();
    let mut flows = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        if let Item::Flow(n, t, u) = classify(m) {
            flows.push((n, t, u));
        }
    }
    assert_eq!(flows.len(), 3000);
    assert_time_ordered(&flows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_delivers_every_live_flow_exactly_once() {
    let nodes = three_nodes(5);
    let relay = relay_over(&nodes.iter().collect::<Vec<_>>(), test_config()).await;
    let mut c = client(relay.addr).await;
    wait_connected(&mut c, 3).await;
    let req = GetFlowsRequest {
        follow: true,
        ..Default::default()
    };
    let mut s = c.get_flows(req).await.unwrap().into_inner();
    let mut seen = Seen::default();
    read_until(&mut s, &mut seen, "3 NODE_CONNECTED", |s| {
        nodes
            .iter()
            .all(|n| s.has_status(NodeState::NodeConnected, &n.data.name))
    })
    .await;
    assert!(seen.flows.is_empty(), "follow without number sent history");

    const PER_NODE: usize = 500;
    let mut sent = BTreeSet::new();
    let mut tasks = Vec::new();
    for n in &nodes {
        let d = n.data.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for k in 0..PER_NODE {
                ids.push(d.emit(now_ns()));
                if k % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            ids
        }));
    }
    for t in tasks {
        sent.extend(t.await.unwrap());
    }
    read_until(&mut s, &mut seen, "all live flows", |s| {
        s.flows.len() >= 3 * PER_NODE
    })
    .await;
    // Nothing more may come (duplicates would show up here).
    let extra = tokio::time::timeout(Duration::from_millis(600), s.message()).await;
    assert!(extra.is_err(), "unexpected extra message: {extra:?}");
    let got: BTreeSet<String> = seen.flows.iter().map(|f| f.2.clone()).collect();
    assert_eq!(got.len(), seen.flows.len(), "duplicates");
    assert_eq!(got, sent);
    assert!(seen.lost.is_empty());
    for n in &nodes {
        assert_eq!(seen.count_from(&n.data.name), PER_NODE);
        // Per-node order is kept.
        let ts: Vec<u64> = seen
            .flows
            .iter()
            .filter(|f| f.0 == n.data.name)
            .map(|f| f.1)
            .collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_is_reported_unavailable_and_comes_back() {
    let mut nodes = three_nodes(0);
    let relay = relay_over(&nodes.iter().collect::<Vec<_>>(), test_config()).await;
    let mut c = client(relay.addr).await;
    wait_connected(&mut c, 3).await;
    let mut s = c
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Seen::default();
    read_until(&mut s, &mut seen, "3 NODE_CONNECTED", |s| {
        (0..3).all(|i| s.has_status(NodeState::NodeConnected, &format!("node-{i}")))
    })
    .await;

    nodes[1].kill();
    read_until(&mut s, &mut seen, "NODE_UNAVAILABLE node-1", |s| {
        s.has_status(NodeState::NodeUnavailable, "node-1")
    })
    .await;
    // The stream goes on with the other nodes.
    for _ in 0..20 {
        nodes[0].data.emit(now_ns());
        nodes[2].data.emit(now_ns());
    }
    read_until(&mut s, &mut seen, "flows of node-0 and node-2", |s| {
        s.flows.len() >= 40
    })
    .await;
    assert_eq!(
        (seen.count_from("node-0"), seen.count_from("node-2")),
        (20, 20)
    );
    let st = c
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.unavailable_nodes, vec!["node-1".to_owned()]);

    // Restart on the same address: the relay reconnects and the stream
    // resumes from that node, with flows it saw since it came back.
    nodes[1].restart();
    seen.status.clear();
    read_until(&mut s, &mut seen, "NODE_CONNECTED node-1 again", |s| {
        s.has_status(NodeState::NodeConnected, "node-1")
    })
    .await;
    for _ in 0..30 {
        for n in &nodes {
            n.data.emit(now_ns());
        }
    }
    read_until(&mut s, &mut seen, "flows after the restart", |s| {
        s.flows.len() >= 40 + 90
    })
    .await;
    assert_eq!(
        (
            seen.count_from("node-0"),
            seen.count_from("node-1"),
            seen.count_from("node-2")
        ),
        (50, 30, 50)
    );
    let uuids: BTreeSet<&String> = seen.flows.iter().map(|f| &f.2).collect();
    assert_eq!(uuids.len(), seen.flows.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_added_and_removed_through_peer_notify() {
    let nodes = three_nodes(0);
    let peers = FakePeers::new();
    peers.add("node-0", nodes[0].addr);
    peers.add("node-1", nodes[1].addr);
    let peer_addr = peers.serve().await;
    let registry = flowd_relay::PeerRegistry::new();
    let cfg = std::sync::Arc::new(test_config());
    tokio::spawn(flowd_relay::peers::run_notify(
        registry.clone(),
        peer_addr.to_string(),
        cfg.clone(),
    ));
    let relay = start_relay(registry, test_config(), None).await;
    let mut c = client(relay.addr).await;
    wait_connected(&mut c, 2).await;
    let mut s = c
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Seen::default();
    read_until(&mut s, &mut seen, "2 NODE_CONNECTED", |s| {
        s.has_status(NodeState::NodeConnected, "node-0")
            && s.has_status(NodeState::NodeConnected, "node-1")
    })
    .await;

    peers.add("node-2", nodes[2].addr);
    read_until(&mut s, &mut seen, "node-2 joining the stream", |s| {
        s.has_status(NodeState::NodeConnected, "node-2")
    })
    .await;
    for n in &nodes {
        for _ in 0..10 {
            n.data.emit(now_ns());
        }
    }
    read_until(&mut s, &mut seen, "30 flows", |s| s.flows.len() >= 30).await;
    assert_eq!(seen.count_from("node-2"), 10);
    let nodes_resp = c.get_nodes(GetNodesRequest {}).await.unwrap().into_inner();
    assert_eq!(nodes_resp.nodes.len(), 3);

    peers.delete("node-0");
    read_until(&mut s, &mut seen, "NODE_GONE node-0", |s| {
        s.has_status(NodeState::NodeGone, "node-0")
    })
    .await;
    let names: Vec<String> = c
        .get_nodes(GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["node-1", "node-2"]);

    // Added back: it rejoins the running stream.
    seen.status.clear();
    peers.add("node-0", nodes[0].addr);
    read_until(&mut s, &mut seen, "node-0 rejoining", |s| {
        s.has_status(NodeState::NodeConnected, "node-0")
    })
    .await;
    nodes[0].data.emit(now_ns());
    read_until(&mut s, &mut seen, "a flow of node-0", |s| {
        s.count_from("node-0") == 11
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_peers_follow_the_resolved_addresses() {
    // Two nodes on the same port, on 127.0.0.1 and 127.0.0.2.
    let a = FakeNode::start(NodeData::new("dns-a"));
    let port = a.addr.port();
    let b = FakeNode::start_at(
        NodeData::new("dns-b"),
        format!("127.0.0.2:{port}").parse().unwrap(),
        None,
    );
    let answer = std::sync::Arc::new(std::sync::Mutex::new(vec![a.addr.ip()]));
    let ans = answer.clone();
    let resolver: flowd_relay::peers::Resolver = std::sync::Arc::new(move |host: String| {
        let ips = ans.lock().unwrap().clone();
        Box::pin(async move {
            assert_eq!(host, "flowd.kube-system");
            Ok(ips)
        })
    });
    let registry = flowd_relay::PeerRegistry::new();
    tokio::spawn(flowd_relay::peers::run_dns(
        registry.clone(),
        "flowd.kube-system".into(),
        port,
        Duration::from_millis(50),
        resolver,
    ));
    let relay = start_relay(registry, test_config(), None).await;
    let mut c = client(relay.addr).await;
    wait_connected(&mut c, 1).await;
    answer.lock().unwrap().push(b.addr.ip());
    wait_connected(&mut c, 2).await;
    let addrs: Vec<String> = c
        .get_nodes(GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes
        .into_iter()
        .map(|n| n.address)
        .collect();
    assert_eq!(addrs, [a.addr.to_string(), b.addr.to_string()]);
    answer.lock().unwrap().remove(0);
    let c2 = c.clone();
    wait_for("node a dropped", move || {
        let mut c = c2.clone();
        async move {
            c.get_nodes(GetNodesRequest {})
                .await
                .map(|r| r.into_inner().nodes.len() == 1)
                .unwrap_or(false)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_node_does_not_stall_the_stream() {
    let mut nodes = three_nodes(20);
    nodes.pop();
    let hung = FakeNode::start(NodeData::with(
        "hung",
        vec![],
        ServerStatusResponse::default(),
        true,
    ));
    let mut all: Vec<&FakeNode> = nodes.iter().collect();
    all.push(&hung);
    let relay = relay_over(&all, ordered_config()).await;
    let mut c = client(relay.addr).await;
    wait_connected(&mut c, 3).await;

    // Non-follow: the other nodes' flows, in order; the hung node is
    // abandoned after the idle timeout and the request ends.
    let mut s = c
        .get_flows(GetFlowsRequest {
            number: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Seen::default();
    while let Some(m) = s.message().await.unwrap() {
        match classify(m) {
            Item::Flow(n, t, u) => seen.flows.push((n, t, u)),
            Item::Status(st, n) => seen.status.push((st, n)),
            Item::Lost(..) => {}
        }
    }
    assert_eq!(seen.flows.len(), 10);
    assert_time_ordered(&seen.flows);
    assert!(
        seen.has_status(NodeState::NodeError, "hung"),
        "{:?}",
        seen.status
    );

    // Follow: live flows of the live nodes arrive although "hung" never
    // sends, in order.
    let mut s = c
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Seen::default();
    read_until(&mut s, &mut seen, "NODE_CONNECTED", |s| {
        s.has_status(NodeState::NodeConnected, "node-0")
            && s.has_status(NodeState::NodeConnected, "node-1")
    })
    .await;
    wait_for("followers", || async {
        nodes.iter().all(|n| n.followers() == 1)
    })
    .await;
    let base = now_ns();
    for k in 0..50u64 {
        nodes[(k % 2) as usize].data.emit(base + k * 1000);
    }
    read_until(&mut s, &mut seen, "50 live flows", |s| s.flows.len() >= 50).await;
    assert_eq!(seen.flows.len(), 50);
    assert_time_ordered(&seen.flows);
}

/// A request every node refuses fails with the nodes' error, before any
/// response (never an empty stream); when another node accepts it, a
/// refusal is a NODE_ERROR notice naming the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_fail_the_call_unless_a_node_accepts() {
    let nodes = three_nodes(3);
    let all: Vec<&FakeNode> = nodes.iter().collect();
    let relay = relay_over(&all, ordered_config()).await;
    let mut c = client(relay.addr).await;
    wait_connected(&mut c, 3).await;
    let refuse = |i: usize, msg: &str| {
        *nodes[i].data.refuse.lock().unwrap() =
            Some((tonic::Code::InvalidArgument, msg.to_string()));
    };
    let bad = "invalid whitelist[0].source_ip filter \"x\": invalid IP address";
    for i in 0..3 {
        refuse(i, bad);
    }
    for follow in [false, true] {
        let e = c
            .get_flows(GetFlowsRequest {
                follow,
                ..Default::default()
            })
            .await
            .expect_err("every node refuses");
        assert_eq!((e.code(), e.message()), (tonic::Code::InvalidArgument, bad));
    }
    // Nodes that disagree (different versions): each node's message.
    refuse(1, "unknown field");
    let e = c
        .get_flows(GetFlowsRequest::default())
        .await
        .expect_err("every node refuses");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        e.message(),
        format!("node-0: {bad}; node-1: unknown field; node-2: {bad}")
    );
    // One node accepts: its flows, and the others' refusal as one notice.
    *nodes[2].data.refuse.lock().unwrap() = None;
    refuse(1, bad);
    let mut s = c
        .get_flows(GetFlowsRequest::default())
        .await
        .expect("node-2 accepts")
        .into_inner();
    let mut errors = Vec::new();
    let mut flows = 0;
    while let Some(m) = s.message().await.unwrap() {
        if let Some(get_flows_response::ResponseTypes::NodeStatus(st)) = &m.response_types
            && st.state_change == NodeState::NodeError as i32
        {
            errors.push((st.node_names.clone(), st.message.clone()));
        }
        if let Item::Flow(n, ..) = classify(m) {
            assert_eq!(n, "node-2");
            flows += 1;
        }
    }
    assert_eq!(flows, 3);
    let mut names: Vec<String> = errors.iter().flat_map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(names, ["node-0", "node-1"]);
    assert!(
        errors
            .iter()
            .all(|(_, m)| *m == format!("InvalidArgument: {bad}")),
        "{errors:?}"
    );
    // The relay itself checks the field mask.
    let e = c
        .get_flows(GetFlowsRequest {
            field_mask: Some(flowd_proto::pbjson_types::FieldMask {
                paths: vec!["sauce".into()],
            }),
            ..Default::default()
        })
        .await
        .expect_err("invalid mask");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("field_mask: "), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_nodes_and_namespaces_are_aggregated() {
    let status = |n, m, s| ServerStatusResponse {
        num_flows: n,
        max_flows: m,
        seen_flows: s,
        version: "flowd test".into(),
        flows_rate: 1.5,
        ..Default::default()
    };
    let a = FakeNode::start(NodeData::with(
        "a",
        vec![("default", "ecommerce"), ("default", "kube-system")],
        status(10, 4095, 100),
        false,
    ));
    let b = FakeNode::start(NodeData::with(
        "b",
        vec![("default", "ecommerce"), ("default", "monitoring")],
        status(20, 8191, 300),
        false,
    ));
    // A peer nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let registry = flowd_relay::PeerRegistry::new();
    let peers = [
        format!("a={}", a.addr),
        format!("b={}", b.addr),
        format!("dead={dead}"),
    ]
    .iter()
    .map(|p| {
        let s = flowd_relay::peers::parse_static_peer(p).unwrap();
        (s.name.clone(), s)
    })
    .collect();
    registry.set_source("static", peers);
    let relay = start_relay(registry, test_config(), None).await;
    let mut c = client(relay.addr).await;
    wait_connected(&mut c, 2).await;

    let st = c
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (st.num_flows, st.max_flows, st.seen_flows),
        (30, 12286, 400)
    );
    assert_eq!(st.num_connected_nodes, Some(UInt32Value { value: 2 }));
    assert_eq!(st.num_unavailable_nodes, Some(UInt32Value { value: 1 }));
    assert_eq!(st.unavailable_nodes, vec!["dead".to_owned()]);
    assert_eq!(st.flows_rate, 3.0);

    let nodes = c
        .get_nodes(GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let got: Vec<(String, i32, String, String, u64)> = nodes
        .into_iter()
        .map(|n| (n.name, n.state, n.version, n.address, n.seen_flows))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "a".into(),
                NodeState::NodeConnected as i32,
                "flowd test".into(),
                a.addr.to_string(),
                100
            ),
            (
                "b".into(),
                NodeState::NodeConnected as i32,
                "flowd test".into(),
                b.addr.to_string(),
                300
            ),
            (
                "dead".into(),
                NodeState::NodeUnavailable as i32,
                String::new(),
                dead.to_string(),
                0
            ),
        ]
    );

    let ns = c
        .get_namespaces(GetNamespacesRequest {})
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(String, String)> = ns
        .namespaces
        .into_iter()
        .map(|n| (n.cluster, n.namespace))
        .collect();
    assert_eq!(
        got,
        vec![
            ("default".into(), "ecommerce".into()),
            ("default".into(), "kube-system".into()),
            ("default".into(), "monitoring".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_follow_client_loses_with_lost_events_not_memory() {
    let nodes = three_nodes(0);
    let mut cfg = test_config();
    cfg.client_buffer = 16;
    let relay = relay_over(&nodes.iter().collect::<Vec<_>>(), cfg).await;
    let mut c = client(relay.addr).await;
    wait_connected(&mut c, 3).await;
    let mut s = c
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Seen::default();
    read_until(&mut s, &mut seen, "3 NODE_CONNECTED", |s| {
        (0..3).all(|i| s.has_status(NodeState::NodeConnected, &format!("node-{i}")))
    })
    .await;
    // The client does not read while 3 x 20000 flows are produced.
    const PER_NODE: u64 = 20_000;
    for n in &nodes {
        for _ in 0..PER_NODE {
            n.data.emit(now_ns());
        }
    }
    read_until(
        &mut s,
        &mut seen,
        "every flow delivered or reported lost",
        |s| s.flows.len() as u64 + s.lost.iter().map(|l| l.1).sum::<u64>() >= 3 * PER_NODE,
    )
    .await;
    let lost: u64 = seen.lost.iter().map(|l| l.1).sum();
    assert!(
        lost > 0,
        "a slow client lost nothing (client buffer not bounded?)"
    );
    assert_eq!(seen.flows.len() as u64 + lost, 3 * PER_NODE);
    assert!(
        seen.lost
            .iter()
            .all(|l| l.0 == LostEventSource::ObserverEventsQueue as i32)
    );
    let uuids: BTreeSet<&String> = seen.flows.iter().map(|f| &f.2).collect();
    assert_eq!(uuids.len(), seen.flows.len());
    let _ = BTreeMap::<u8, u8>::new();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_follows_node_connectivity() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let mut node = FakeNode::start(NodeData::new("h"));
    let relay = relay_over(&[&node], test_config()).await;
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", relay.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(ch);
    let status = |service: &'static str| {
        let mut h = health.clone();
        async move {
            h.check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .unwrap_or(-1)
        }
    };
    // Every name `hubble status` and probes ask for carries the relay's
    // status: SERVING while a node is connected, NOT_SERVING while none is.
    let all = |want: ServingStatus| async move {
        for name in ["", "hubble.server.Observer", "observer.Observer"] {
            if status(name).await != want as i32 {
                return false;
            }
        }
        true
    };
    wait_for("every name SERVING", || all(ServingStatus::Serving)).await;
    node.kill();
    wait_for("every name NOT_SERVING", || all(ServingStatus::NotServing)).await;
    node.restart();
    wait_for("SERVING again", || all(ServingStatus::Serving)).await;
    assert_eq!(
        health
            .clone()
            .check(HealthCheckRequest {
                service: "no.such.Service".into()
            })
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_that_accepts_tcp_but_never_answers() {
    // A socket that accepts connections and never sends a byte.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            match s {
                Ok(s) => held.push(s),
                Err(_) => return,
            }
        }
    });
    let nodes = three_nodes(0);
    let registry = flowd_relay::PeerRegistry::new();
    let mut peers: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}={}", n.data.name, n.addr))
        .collect();
    peers.push(format!("silent={silent}"));
    registry.set_source(
        "static",
        peers
            .iter()
            .map(|p| {
                let s = flowd_relay::peers::parse_static_peer(p).unwrap();
                (s.name.clone(), s)
            })
            .collect(),
    );
    let relay = start_relay(registry, ordered_config(), None).await;
    let mut c = client(relay.addr).await;
    wait_connected(&mut c, 3).await;
    let st = c
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.unavailable_nodes, vec!["silent".to_owned()]);

    let mut s = c
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Seen::default();
    read_until(&mut s, &mut seen, "connected and unavailable events", |s| {
        (0..3).all(|i| s.has_status(NodeState::NodeConnected, &format!("node-{i}")))
            && s.has_status(NodeState::NodeUnavailable, "silent")
    })
    .await;
    let base = now_ns();
    for k in 0..60u64 {
        nodes[(k % 3) as usize].data.emit(base + k * 1000);
    }
    read_until(&mut s, &mut seen, "60 flows", |s| s.flows.len() >= 60).await;
    assert_eq!(seen.flows.len(), 60);
    assert_time_ordered(&seen.flows);
}
