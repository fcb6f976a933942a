//! Peer discovery: a static list, DNS names re-resolved periodically, and
//! flowd's Hubble-compatible `peer.Peer/Notify` stream. Every source feeds
//! one [`PeerRegistry`]; the connection pool follows its changes at run time.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowd_proto::peer::peer_client::PeerClient;
use flowd_proto::peer::{ChangeNotificationType, NotifyRequest};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::Error;
use crate::config::RelayConfig;
use crate::dial::{join_host_port, split_host_port};

/// Default port of a node's Observer API when an address has none.
pub const DEFAULT_NODE_PORT: u16 = 4244;

/// One node to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// Node name (used in NodeStatusEvents, GetNodes, node_name).
    pub name: String,
    /// `host:port` of its Observer API.
    pub address: String,
    /// Name to verify its TLS certificate against, when the source gave one.
    pub tls_server_name: Option<String>,
}

/// All peers currently known, by name.
pub type PeerMap = BTreeMap<String, PeerSpec>;

/// Union of the peers of every discovery source, published on a watch channel.
pub struct PeerRegistry {
    sources: Mutex<HashMap<String, PeerMap>>,
    tx: watch::Sender<Arc<PeerMap>>,
}

impl PeerRegistry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            sources: Mutex::new(HashMap::new()),
            tx: watch::Sender::new(Arc::new(PeerMap::new())),
        })
    }

    /// Replaces every peer of `source`.
    pub fn set_source(&self, source: &str, peers: PeerMap) {
        let mut s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        s.insert(source.to_owned(), peers);
        self.publish(&s);
    }

    /// Adds or updates one peer of `source`.
    pub fn upsert(&self, source: &str, peer: PeerSpec) {
        let mut s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        s.entry(source.to_owned())
            .or_default()
            .insert(peer.name.clone(), peer);
        self.publish(&s);
    }

    /// Removes one peer of `source`.
    pub fn remove(&self, source: &str, name: &str) {
        let mut s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = s.get_mut(source) {
            m.remove(name);
        }
        self.publish(&s);
    }

    /// The current peers and their later changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PeerMap>> {
        self.tx.subscribe()
    }

    /// The current peers.
    pub fn current(&self) -> Arc<PeerMap> {
        self.tx.borrow().clone()
    }

    fn publish(&self, sources: &HashMap<String, PeerMap>) {
        // Deterministic on name clashes: the source that sorts first wins.
        let mut names: Vec<&String> = sources.keys().collect();
        names.sort();
        let mut all = PeerMap::new();
        for n in names {
            for (k, v) in &sources[n] {
                all.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        self.tx.send_if_modified(|cur| {
            if **cur == all {
                false
            } else {
                *cur = Arc::new(all);
                true
            }
        });
    }
}

/// Parses a `--peer` value: `name=host:port` or `host:port` (named after
/// its address).
pub fn parse_static_peer(value: &str) -> Result<PeerSpec, Error> {
    let bad = |reason: String| Error::InvalidPeer {
        value: value.to_owned(),
        reason,
    };
    let (name, addr) = match value.split_once('=') {
        Some(("", _)) => return Err(bad("empty name before '='".into())),
        Some((n, a)) => (Some(n), a),
        None => (None, value),
    };
    let (host, port) = split_host_port(addr, None).map_err(bad)?;
    let address = join_host_port(&host, port);
    Ok(PeerSpec {
        name: name.map_or_else(|| address.clone(), str::to_owned),
        address,
        tls_server_name: None,
    })
}

/// Resolves a host name to addresses.
pub type Resolver = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> + Send + Sync,
>;

/// The system resolver (getaddrinfo through tokio).
pub fn system_resolver() -> Resolver {
    Arc::new(|host: String| {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    })
}

/// Keeps the peers of a DNS name up to date: every address it resolves to is
/// a node (named `ip:port`). A failed lookup keeps the previous set.
pub async fn run_dns(
    registry: Arc<PeerRegistry>,
    host: String,
    port: u16,
    interval: Duration,
    resolver: Resolver,
) {
    let source = format!("dns:{host}:{port}");
    loop {
        match resolver(host.clone()).await {
            Ok(ips) => {
                let set: BTreeSet<IpAddr> = ips.into_iter().collect();
                let peers: PeerMap = set
                    .into_iter()
                    .map(|ip| {
                        let address = join_host_port(&ip.to_string(), port);
                        let spec = PeerSpec {
                            name: address.clone(),
                            address: address.clone(),
                            tls_server_name: None,
                        };
                        (address, spec)
                    })
                    .collect();
                debug!(%host, n = peers.len(), "DNS peers resolved");
                registry.set_source(&source, peers);
            }
            Err(e) => warn!(%host, error = %e, "resolving peers failed; keeping the previous set"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Follows a `peer.Peer/Notify` stream (flowd's or Hubble's peer service),
/// reconnecting with backoff. Peers keep their state across reconnections;
/// the service re-sends every peer as PEER_ADDED after a reconnection.
pub async fn run_notify(registry: Arc<PeerRegistry>, address: String, cfg: Arc<RelayConfig>) {
    let source = format!("peer-service:{address}");
    let mut failures = 0u32;
    loop {
        match notify_once(&registry, &source, &address, &cfg, &mut failures).await {
            Ok(()) => warn!(%address, "peer service closed the Notify stream"),
            Err(e) => warn!(%address, error = %e, "peer service unavailable"),
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(cfg.backoff.delay(failures)).await;
    }
}

async fn notify_once(
    registry: &PeerRegistry,
    source: &str,
    address: &str,
    cfg: &RelayConfig,
    failures: &mut u32,
) -> Result<(), String> {
    let channel = crate::dial::connect(address, None, cfg)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = PeerClient::new(channel);
    let mut stream = tokio::time::timeout(cfg.node_rpc_timeout, client.notify(NotifyRequest {}))
        .await
        .map_err(|_| "Notify timed out".to_owned())?
        .map_err(|s| s.to_string())?
        .into_inner();
    *failures = 0;
    info!(%address, "following the peer service");
    while let Some(cn) = stream.message().await.map_err(|s| s.to_string())? {
        let ty =
            ChangeNotificationType::try_from(cn.r#type).unwrap_or(ChangeNotificationType::Unknown);
        match ty {
            ChangeNotificationType::PeerAdded | ChangeNotificationType::PeerUpdated => {
                match split_host_port(&cn.address, Some(DEFAULT_NODE_PORT)) {
                    Ok((h, p)) if !cn.name.is_empty() => registry.upsert(
                        source,
                        PeerSpec {
                            name: cn.name.clone(),
                            address: join_host_port(&h, p),
                            tls_server_name: cn
                                .tls
                                .map(|t| t.server_name)
                                .filter(|s| !s.is_empty()),
                        },
                    ),
                    Ok(_) => {
                        warn!(address = %cn.address, "peer notification without a name; ignored")
                    }
                    Err(e) => {
                        warn!(name = %cn.name, address = %cn.address, error = %e, "peer notification with a bad address; ignored")
                    }
                }
            }
            ChangeNotificationType::PeerDeleted => registry.remove(source, &cn.name),
            ChangeNotificationType::Unknown => {
                warn!(name = %cn.name, "peer notification of unknown type; ignored")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_peers_parse() {
        let p = parse_static_peer("node-a=10.0.0.1:4244").unwrap();
        assert_eq!(
            (p.name.as_str(), p.address.as_str()),
            ("node-a", "10.0.0.1:4244")
        );
        let p = parse_static_peer("[fd00::1]:4244").unwrap();
        assert_eq!(
            (p.name.as_str(), p.address.as_str()),
            ("[fd00::1]:4244", "[fd00::1]:4244")
        );
        let p = parse_static_peer("n=flowd.kube-system:4244").unwrap();
        assert_eq!(p.address, "flowd.kube-system:4244");
        for bad in ["", "=1.2.3.4:1", "host", "host:x", "host:0", "a:b:c"] {
            assert!(parse_static_peer(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn registry_unions_sources() {
        let r = PeerRegistry::new();
        let mut rx = r.subscribe();
        let spec = |n: &str| PeerSpec {
            name: n.into(),
            address: format!("{n}:1"),
            tls_server_name: None,
        };
        r.upsert("a", spec("x"));
        r.set_source("b", [("y".to_owned(), spec("y"))].into());
        assert!(rx.has_changed().unwrap());
        let names: Vec<String> = rx.borrow_and_update().keys().cloned().collect();
        assert_eq!(names, ["x", "y"]);
        r.upsert("a", spec("x"));
        assert!(!rx.has_changed().unwrap(), "no-op update published");
        r.remove("a", "x");
        let names: Vec<String> = rx.borrow_and_update().keys().cloned().collect();
        assert_eq!(names, ["y"]);
    }
}
