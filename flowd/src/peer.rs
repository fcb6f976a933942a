//! `peer.Peer` (Hubble's peer service), served next to the Observer API on
//! :4244: tells a relay which nodes run flowd and where their Observer API is.
//!
//! The nodes are the Node objects of the endpoint store (manifests or the
//! Kubernetes API). `Notify` sends every node as `PEER_ADDED`, then each
//! change as `PEER_ADDED` / `PEER_UPDATED` (address or TLS name changed) /
//! `PEER_DELETED`. Each stream diffs the store's snapshots against what it
//! last sent, so a slow client never makes the server queue changes: while it
//! does not read, changes coalesce and it later gets the net difference.
//!
//! A node's address is its first IPv4 address (else IPv6) with this flowd's
//! Observer API port: every node serves the API on the same port, as a
//! DaemonSet does. Nodes without an address are not announced.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use flowd_proto::peer::peer_server::{Peer, PeerServer};
use flowd_proto::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest, Tls};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::endpoints::{EndpointStore, Snapshot};

/// Default port of the Observer API (`hubble-listen-address`).
pub const DEFAULT_PORT: u16 = 4244;

/// Notifications queued per Notify stream before its task waits for the client.
const STREAM_QUEUE: usize = 64;

/// What the peer service announces about the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Port of every node's Observer API.
    pub port: u16,
    /// Cluster name: peers are `<cluster>/<node>` unless it is `default`.
    pub cluster_name: String,
    /// Nodes serve TLS: each peer carries the name to verify its certificate
    /// against (Cilium's `<node>.<cluster>.hubble-grpc.cilium.io`).
    pub tls: bool,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            cluster_name: "default".into(),
            tls: false,
        }
    }
}

/// One announced node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub name: String,
    /// `host:port`, IPv6 hosts in brackets.
    pub address: String,
    pub tls_server_name: Option<String>,
}

impl PeerInfo {
    fn notification(&self, t: ChangeNotificationType) -> ChangeNotification {
        ChangeNotification {
            name: self.name.clone(),
            address: self.address.clone(),
            r#type: t as i32,
            tls: self.tls_server_name.as_ref().map(|n| Tls {
                server_name: n.clone(),
            }),
        }
    }
}

/// The peers of a snapshot, by name.
pub fn peers_of(snapshot: &Snapshot, cfg: &PeerConfig) -> BTreeMap<String, PeerInfo> {
    let mut out = BTreeMap::new();
    for n in snapshot.nodes() {
        let ip = n
            .addresses
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| n.addresses.first());
        let Some(ip) = ip else { continue };
        let address = match ip {
            IpAddr::V4(v4) => format!("{v4}:{}", cfg.port),
            IpAddr::V6(v6) => format!("[{v6}]:{}", cfg.port),
        };
        let name = crate::options::cluster::absolute_node_name(&cfg.cluster_name, &n.name);
        let tls_server_name = cfg.tls.then(|| {
            format!(
                "{}.{}.hubble-grpc.cilium.io",
                n.name.replace('.', "-"),
                cfg.cluster_name
            )
        });
        out.insert(
            name.clone(),
            PeerInfo {
                name,
                address,
                tls_server_name,
            },
        );
    }
    out
}

/// The notifications that turn `old` into `new`: deletions first, then
/// additions and updates, each in name order.
pub fn diff(
    old: &BTreeMap<String, PeerInfo>,
    new: &BTreeMap<String, PeerInfo>,
) -> Vec<ChangeNotification> {
    let mut out: Vec<ChangeNotification> = old
        .iter()
        .filter(|(k, _)| !new.contains_key(*k))
        .map(|(_, p)| p.notification(ChangeNotificationType::PeerDeleted))
        .collect();
    for (k, p) in new {
        match old.get(k) {
            None => out.push(p.notification(ChangeNotificationType::PeerAdded)),
            Some(o) if o != p => out.push(p.notification(ChangeNotificationType::PeerUpdated)),
            Some(_) => {}
        }
    }
    out
}

/// The peer service over an endpoint store.
#[derive(Clone)]
pub struct PeerService {
    store: Arc<EndpointStore>,
    cfg: Arc<PeerConfig>,
}

impl PeerService {
    pub fn new(store: Arc<EndpointStore>, cfg: PeerConfig) -> Self {
        Self {
            store,
            cfg: Arc::new(cfg),
        }
    }

    /// The tonic service, to mount next to the Observer service.
    pub fn into_service(self) -> PeerServer<PeerService> {
        PeerServer::new(self)
    }

    /// The peers announced now.
    pub fn peers(&self) -> BTreeMap<String, PeerInfo> {
        peers_of(&self.store.snapshot(), &self.cfg)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn notify(
        &self,
        _request: Request<NotifyRequest>,
    ) -> Result<Response<BoxStream<ChangeNotification>>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let store = self.store.clone();
        let cfg = self.cfg.clone();
        tokio::spawn(async move {
            let mut changed = store.subscribe();
            let mut sent = BTreeMap::new();
            loop {
                // Mark the version seen before reading the snapshot, so a
                // change published meanwhile wakes the next wait.
                changed.borrow_and_update();
                let now = peers_of(&store.snapshot(), &cfg);
                for n in diff(&sent, &now) {
                    if tx.send(Ok(n)).await.is_err() {
                        return;
                    }
                }
                sent = now;
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::{Node, Object, StoreConfig, Update};

    fn node(name: &str, ips: &[&str]) -> Object {
        Object::Node(Arc::new(Node {
            name: name.into(),
            labels: Default::default(),
            addresses: ips.iter().map(|s| s.parse().unwrap()).collect(),
            pod_cidrs: Vec::new(),
        }))
    }

    fn store(nodes: Vec<Object>) -> Arc<EndpointStore> {
        let s = EndpointStore::new(StoreConfig::default());
        s.apply(Update::Replace {
            kind: crate::endpoints::Kind::Node,
            objects: nodes,
        });
        s
    }

    fn kinds(v: &[ChangeNotification]) -> Vec<(String, String, i32)> {
        v.iter()
            .map(|n| (n.name.clone(), n.address.clone(), n.r#type))
            .collect()
    }

    #[test]
    fn nodes_become_peers_with_the_api_port() {
        let s = store(vec![
            node("node-b", &["fd00::3", "172.18.0.3"]),
            node("node-a", &["172.18.0.2"]),
            node("v6-only", &["fd00::4"]),
            node("no-address", &[]),
        ]);
        let cfg = PeerConfig {
            port: 4300,
            ..PeerConfig::default()
        };
        let p = peers_of(&s.snapshot(), &cfg);
        let got: Vec<(&str, &str)> = p
            .values()
            .map(|p| (p.name.as_str(), p.address.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("node-a", "172.18.0.2:4300"),
                ("node-b", "172.18.0.3:4300"),
                ("v6-only", "[fd00::4]:4300"),
            ]
        );
        assert!(p.values().all(|p| p.tls_server_name.is_none()));
    }

    #[test]
    fn cluster_name_and_tls_server_name() {
        let s = store(vec![node("n1.example", &["10.0.0.1"])]);
        let cfg = PeerConfig {
            port: 4244,
            cluster_name: "east".into(),
            tls: true,
        };
        let p = peers_of(&s.snapshot(), &cfg);
        let one = &p["east/n1.example"];
        assert_eq!(one.address, "10.0.0.1:4244");
        assert_eq!(
            one.tls_server_name.as_deref(),
            Some("n1-example.east.hubble-grpc.cilium.io")
        );
        let n = one.notification(ChangeNotificationType::PeerAdded);
        assert_eq!(
            n.tls.map(|t| t.server_name).as_deref(),
            Some("n1-example.east.hubble-grpc.cilium.io")
        );
    }

    #[test]
    fn diff_adds_updates_and_deletes() {
        let cfg = PeerConfig::default();
        let before = peers_of(
            &store(vec![node("a", &["10.0.0.1"]), node("b", &["10.0.0.2"])]).snapshot(),
            &cfg,
        );
        let after = peers_of(
            &store(vec![node("b", &["10.0.0.20"]), node("c", &["10.0.0.3"])]).snapshot(),
            &cfg,
        );
        let added = ChangeNotificationType::PeerAdded as i32;
        let updated = ChangeNotificationType::PeerUpdated as i32;
        let deleted = ChangeNotificationType::PeerDeleted as i32;
        assert_eq!(
            kinds(&diff(&before, &after)),
            [
                ("a".into(), "10.0.0.1:4244".into(), deleted),
                ("b".into(), "10.0.0.20:4244".into(), updated),
                ("c".into(), "10.0.0.3:4244".into(), added),
            ]
        );
        assert!(diff(&after, &after).is_empty());
        assert_eq!(
            kinds(&diff(&BTreeMap::new(), &before)),
            [
                ("a".into(), "10.0.0.1:4244".into(), added),
                ("b".into(), "10.0.0.2:4244".into(), added),
            ]
        );
    }
}
