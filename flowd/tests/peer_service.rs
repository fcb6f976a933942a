//! flowd's `peer.Peer/Notify` over the endpoint store, served on the same
//! server as the Observer API, and a relay that finds every node through it.
//!
//! Runs on loopback only: the "nodes" are Observer APIs bound to 127.0.0.1,
//! 127.0.0.2 and 127.0.0.3 on one shared port (every address of 127/8 is
//! local on Linux), which is what a DaemonSet's Node IPs + :4244 look like.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowd::endpoints::{EndpointStore, Kind, Node, Object, ObjectKey, StoreConfig, Update};
use flowd::observer::{FlowWriter, Observer, ObserverConfig, serve_routes};
use flowd::peer::{PeerConfig, PeerService};
use flowd_proto::Timestamp;
use flowd_proto::flow::Flow;
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::{GetFlowsRequest, GetNodesRequest};
use flowd_proto::peer::peer_client::PeerClient;
use flowd_proto::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest};
use flowd_relay::{PeerRegistry, Pool, RelayConfig};
use tonic::Streaming;
use tonic::service::Routes;

fn node(name: &str, ip: &str) -> Object {
    Object::Node(Arc::new(Node {
        name: name.into(),
        labels: Default::default(),
        addresses: vec![ip.parse().unwrap()],
        pod_cidrs: Vec::new(),
    }))
}

fn store_with(nodes: Vec<Object>) -> Arc<EndpointStore> {
    let s = EndpointStore::new(StoreConfig {
        node_name: "node-1".into(),
        cluster_name: "default".into(),
        ..StoreConfig::default()
    });
    s.apply(Update::Replace {
        kind: Kind::Node,
        objects: nodes,
    });
    s
}

/// A flowd API server (Observer, plus Peer when given a store) on `listener`.
fn serve(
    listener: tokio::net::TcpListener,
    name: &str,
    peers: Option<(Arc<EndpointStore>, u16)>,
) -> (FlowWriter, tokio::sync::oneshot::Sender<()>) {
    let (observer, writer) = Observer::new(ObserverConfig {
        node_name: name.into(),
        ..ObserverConfig::default()
    })
    .unwrap();
    let mut routes = Routes::new(observer.into_service());
    if let Some((store, port)) = peers {
        let cfg = PeerConfig {
            port,
            ..PeerConfig::default()
        };
        routes = routes.add_service(PeerService::new(store, cfg).into_service());
    }
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_routes(routes, listener, None, async {
        let _ = rx.await;
    }));
    (writer, stop)
}

async fn next(s: &mut Streaming<ChangeNotification>) -> (String, String, ChangeNotificationType) {
    let n = tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("no notification within 10 s")
        .expect("Notify stream failed")
        .expect("Notify stream ended");
    (
        n.name,
        n.address,
        ChangeNotificationType::try_from(n.r#type).unwrap(),
    )
}

fn t(
    name: &str,
    addr: &str,
    ty: ChangeNotificationType,
) -> (String, String, ChangeNotificationType) {
    (name.into(), addr.into(), ty)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_announces_nodes_then_each_change() {
    use ChangeNotificationType::*;
    let store = store_with(vec![node("node-2", "10.0.0.2"), node("node-1", "10.0.0.1")]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_w, _stop) = serve(l, "node-1", Some((store.clone(), 4244)));
    let mut c = PeerClient::connect(format!("http://{addr}")).await.unwrap();
    let mut s = c.notify(NotifyRequest {}).await.unwrap().into_inner();
    assert_eq!(next(&mut s).await, t("node-1", "10.0.0.1:4244", PeerAdded));
    assert_eq!(next(&mut s).await, t("node-2", "10.0.0.2:4244", PeerAdded));

    store.apply(Update::Upsert(node("node-3", "10.0.0.3")));
    assert_eq!(next(&mut s).await, t("node-3", "10.0.0.3:4244", PeerAdded));
    store.apply(Update::Upsert(node("node-2", "10.0.0.22")));
    assert_eq!(
        next(&mut s).await,
        t("node-2", "10.0.0.22:4244", PeerUpdated)
    );
    store.apply(Update::Delete {
        kind: Kind::Node,
        key: ObjectKey::new("", "node-1"),
    });
    assert_eq!(
        next(&mut s).await,
        t("node-1", "10.0.0.1:4244", PeerDeleted)
    );
    // Changes that leave the nodes as they are send nothing: the next
    // notification is the next real change.
    store.apply(Update::Upsert(node("node-3", "10.0.0.3")));
    store.apply(Update::Upsert(node("node-4", "10.0.0.4")));
    assert_eq!(next(&mut s).await, t("node-4", "10.0.0.4:4244", PeerAdded));

    // A new subscriber gets the current set.
    let mut s2 = c.notify(NotifyRequest {}).await.unwrap().into_inner();
    let mut now = Vec::new();
    for _ in 0..3 {
        now.push(next(&mut s2).await);
    }
    assert_eq!(
        now,
        [
            t("node-2", "10.0.0.22:4244", PeerAdded),
            t("node-3", "10.0.0.3:4244", PeerAdded),
            t("node-4", "10.0.0.4:4244", PeerAdded),
        ]
    );
}

/// Binds 127.0.0.1..=127.0.0.n on one port (retrying with another port if
/// one of them is taken).
async fn bind_same_port(n: u8) -> (u16, Vec<tokio::net::TcpListener>) {
    'retry: for _ in 0..20 {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut ls = vec![first];
        for i in 2..=n {
            let a: SocketAddr = format!("127.0.0.{i}:{port}").parse().unwrap();
            match tokio::net::TcpListener::bind(a).await {
                Ok(l) => ls.push(l),
                Err(_) => continue 'retry,
            }
        }
        return (port, ls);
    }
    panic!("no port free on 127.0.0.1-{n}");
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

async fn node_names(c: &mut ObserverClient<tonic::transport::Channel>) -> Vec<(String, i32)> {
    let mut v: Vec<(String, i32)> = c
        .get_nodes(GetNodesRequest {})
        .await
        .map(|r| r.into_inner().nodes)
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.name, n.state))
        .collect();
    v.sort();
    v
}

async fn wait_nodes(c: &mut ObserverClient<tonic::transport::Channel>, want: &[&str]) {
    let connected = flowd_proto::relay::NodeState::NodeConnected as i32;
    let want: Vec<(String, i32)> = want.iter().map(|n| (n.to_string(), connected)).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = node_names(c).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "relay nodes: want {want:?}, have {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_finds_every_node_through_the_peer_service() {
    let (port, mut listeners) = bind_same_port(3).await;
    let node_objs = |n: u8| {
        (1..=n)
            .map(|i| node(&format!("node-{i}"), &format!("127.0.0.{i}")))
            .collect::<Vec<_>>()
    };
    // The store knows two of the three running nodes at first.
    let store = store_with(node_objs(2));
    let l3 = listeners.pop().unwrap();
    let l2 = listeners.pop().unwrap();
    let l1 = listeners.pop().unwrap();
    let (mut w1, _s1) = serve(l1, "node-1", Some((store.clone(), port)));
    let (mut w2, _s2) = serve(l2, "node-2", None);
    let (mut w3, _s3) = serve(l3, "node-3", None);

    // The relay as `relay --peer-service 127.0.0.1:<port>` runs it.
    let cfg = Arc::new(RelayConfig {
        drain_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(2),
        node_rpc_timeout: Duration::from_secs(2),
        health_check_interval: Duration::from_millis(200),
        backoff: flowd_relay::config::Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
        ..RelayConfig::default()
    });
    let registry = PeerRegistry::new();
    tokio::spawn(flowd_relay::peers::run_notify(
        registry.clone(),
        format!("127.0.0.1:{port}"),
        cfg.clone(),
    ));
    let pool = Pool::start(registry.subscribe(), cfg.clone());
    let rl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = rl.local_addr().unwrap();
    let (_stop_relay, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(flowd_relay::server::serve(
        flowd_relay::server::Relay::new(pool, cfg),
        rl,
        None,
        async {
            let _ = stop_rx.await;
        },
    ));
    let mut c = ObserverClient::connect(format!("http://{relay_addr}"))
        .await
        .unwrap();
    wait_nodes(&mut c, &["node-1", "node-2"]).await;

    // A node added to the cluster later is found without restarting anything.
    store.apply(Update::Replace {
        kind: Kind::Node,
        objects: node_objs(3),
    });
    wait_nodes(&mut c, &["node-1", "node-2", "node-3"]).await;

    // Flows of every node come back through the relay.
    for (i, w) in [&mut w1, &mut w2, &mut w3].into_iter().enumerate() {
        for k in 0..5 {
            w.push(&Flow {
                time: Some(Timestamp::from_unix_nanos(now_ns())),
                uuid: format!("n{}-{k}", i + 1),
                ..Flow::default()
            });
        }
    }
    let mut s = c
        .get_flows(GetFlowsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    while let Some(r) = tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("relay stream stalled")
        .unwrap()
    {
        if let Some(ResponseTypes::Flow(_)) = r.response_types {
            *per_node.entry(r.node_name).or_default() += 1;
        }
    }
    let want: std::collections::BTreeMap<String, usize> =
        (1..=3).map(|i| (format!("node-{i}"), 5)).collect();
    assert_eq!(per_node, want);

    // A node removed from the cluster is dropped by the relay.
    store.apply(Update::Delete {
        kind: Kind::Node,
        key: ObjectKey::new("", "node-2"),
    });
    wait_nodes(&mut c, &["node-1", "node-3"]).await;
}
