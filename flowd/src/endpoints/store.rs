//! The endpoint store: objects from the sources, and the snapshot that
//! enrichment reads.
//!
//! Writers (the sources' tasks, the attachment reconciler) update the objects
//! under a mutex and publish a new immutable [`Snapshot`] through `ArcSwap`.
//! The event path only loads the current snapshot (an atomic load, no lock,
//! no await) and does hash lookups in it. Rebuilding is O(objects) per
//! change; sources batch (a relist or rescan is one `Replace`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use futures::StreamExt;
use ipnetwork::IpNetwork;
use tokio::sync::watch;

use super::model::{
    self, Endpoint, Kind, Node, Object, ObjectKey, Pod, RESERVED_HOST, RESERVED_REMOTE_NODE,
    RESERVED_UNKNOWN, RESERVED_WORLD, Service, identity,
};
use super::{Source, SourceError, Update};

/// What the store needs to know about where it runs.
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    /// This node (`spec.nodeName` of its pods).
    pub node_name: String,
    /// Set in flows' endpoints and in the `io.cilium.k8s.policy.cluster` label
    /// (Cilium's default is `default`).
    pub cluster_name: String,
    /// Addresses inside the cluster besides the nodes' pod CIDRs (service
    /// CIDR, cluster pod CIDR): unknown addresses there are `reserved:unknown`
    /// rather than `reserved:world`.
    pub cluster_cidrs: Vec<IpNetwork>,
    /// This node's own addresses besides those of its Node object.
    pub host_addresses: Vec<IpAddr>,
}

/// An interface the datapath observes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub ifindex: u32,
    pub name: String,
    pub kind: InterfaceKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceKind {
    /// The host side of a pod's veth.
    PodVeth { pod: ObjectKey },
    /// The node's link to the network.
    Uplink,
}

/// An immutable view for enrichment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub node_name: String,
    pub cluster_name: String,
    /// This node's labels as flows carry them (`key=value`, sorted).
    pub node_labels: Vec<String>,
    by_ip: HashMap<IpAddr, Arc<Endpoint>, ahash::RandomState>,
    services: HashMap<IpAddr, Arc<ObjectKey>, ahash::RandomState>,
    cluster_cidrs: Vec<IpNetwork>,
    interfaces: HashMap<u32, Arc<Interface>, ahash::RandomState>,
    local_pods: Vec<Arc<Pod>>,
    nodes: Vec<Arc<Node>>,
    /// A source has listed every pod (its first full replace): an empty
    /// `local_pods` then means no pods, not "not listed yet".
    pub pods_listed: bool,
    world: Arc<Endpoint>,
    unknown: Arc<Endpoint>,
    /// Incremented on every change.
    pub version: u64,
}

impl Snapshot {
    /// The endpoint of an address: a pod, this node (`reserved:host`), another
    /// node (`reserved:remote-node`), an in-cluster address nobody has
    /// (`reserved:unknown`), or `reserved:world`.
    pub fn endpoint(&self, ip: IpAddr) -> &Arc<Endpoint> {
        if let Some(e) = self.by_ip.get(&ip) {
            return e;
        }
        if self.services.contains_key(&ip) || self.cluster_cidrs.iter().any(|c| c.contains(ip)) {
            &self.unknown
        } else {
            &self.world
        }
    }

    /// The Service whose cluster IP this is.
    pub fn service(&self, ip: IpAddr) -> Option<&ObjectKey> {
        self.services.get(&ip).map(|k| &**k)
    }

    pub fn interface(&self, ifindex: u32) -> Option<&Interface> {
        self.interfaces.get(&ifindex).map(|i| &**i)
    }

    /// Pods scheduled on this node with addresses of their own (not host
    /// network), sorted by key.
    pub fn local_pods(&self) -> &[Arc<Pod>] {
        &self.local_pods
    }

    /// Every node of the cluster the sources know, sorted by name (the peer
    /// service announces them).
    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    /// `(namespace, name)` of every pod with an address, on any node.
    pub fn pod_keys(&self) -> std::collections::BTreeSet<(String, String)> {
        self.by_ip
            .values()
            .filter(|e| e.pod.is_some())
            .map(|e| (e.namespace.clone(), e.pod_name.clone()))
            .collect()
    }

    /// Whether the address is a pod of this node.
    pub fn is_local_pod(&self, ip: IpAddr) -> bool {
        self.by_ip
            .get(&ip)
            .is_some_and(|e| e.pod.is_some() && e.node_name == self.node_name)
    }
}

#[derive(Default)]
struct Objects {
    pods: HashMap<ObjectKey, Arc<Pod>>,
    services: HashMap<ObjectKey, Arc<Service>>,
    nodes: HashMap<ObjectKey, Arc<Node>>,
    interfaces: HashMap<u32, Arc<Interface>, ahash::RandomState>,
    errors: Vec<SourceError>,
    pods_listed: bool,
    version: u64,
}

/// Pods, services and nodes by address; see the module docs.
pub struct EndpointStore {
    cfg: StoreConfig,
    objects: Mutex<Objects>,
    snapshot: ArcSwap<Snapshot>,
    changed: watch::Sender<u64>,
}

impl EndpointStore {
    pub fn new(cfg: StoreConfig) -> Arc<Self> {
        let store = EndpointStore {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            objects: Mutex::new(Objects::default()),
            changed: watch::channel(0).0,
            cfg,
        };
        store.publish(&mut store.lock());
        Arc::new(store)
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, Objects> {
        // A panic while holding the lock leaves consistent maps (each
        // update is applied whole before publishing), so poison is ignored.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current snapshot: lock-free, for the event path.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Notified with the snapshot version after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Errors reported by the sources, most recent last (bounded).
    pub fn errors(&self) -> Vec<SourceError> {
        self.lock().errors.clone()
    }

    /// Applies one update.
    pub fn apply(&self, update: Update) {
        let mut o = self.lock();
        match update {
            Update::Upsert(obj) => {
                let key = obj.key();
                match obj {
                    Object::Pod(p) => {
                        o.pods.insert(key, p);
                    }
                    Object::Service(s) => {
                        o.services.insert(key, s);
                    }
                    Object::Node(n) => {
                        o.nodes.insert(key, n);
                    }
                }
            }
            Update::Delete { kind, key } => match kind {
                Kind::Pod => drop(o.pods.remove(&key)),
                Kind::Service => drop(o.services.remove(&key)),
                Kind::Node => drop(o.nodes.remove(&key)),
            },
            Update::Replace { kind, objects } => {
                let objs = objects.into_iter().filter(|x| x.kind() == kind);
                match kind {
                    Kind::Pod => {
                        o.pods_listed = true;
                        o.pods.clear();
                    }
                    Kind::Service => o.services.clear(),
                    Kind::Node => o.nodes.clear(),
                }
                for obj in objs {
                    let key = obj.key();
                    match obj {
                        Object::Pod(p) => drop(o.pods.insert(key, p)),
                        Object::Service(s) => drop(o.services.insert(key, s)),
                        Object::Node(n) => drop(o.nodes.insert(key, n)),
                    }
                }
            }
            Update::Error(e) => {
                tracing::warn!(error = %e, "endpoint source");
                const KEEP: usize = 256;
                if o.errors.len() >= KEEP {
                    o.errors.remove(0);
                }
                o.errors.push(e);
                return;
            }
        }
        self.publish(&mut o);
    }

    /// Replaces the pod veths the datapath observes (ifindex → pod), for the
    /// observation point of flows. Uplinks are kept.
    pub fn set_pod_veths(&self, veths: impl IntoIterator<Item = Interface>) {
        self.replace_interfaces(true, veths);
    }

    /// Replaces the uplinks (the node's interfaces to the network). Pod veths
    /// are kept.
    pub fn set_uplinks(&self, uplinks: impl IntoIterator<Item = Interface>) {
        self.replace_interfaces(false, uplinks);
    }

    /// Adds one uplink (an interface the datapath observes in an XDP mode).
    pub fn add_uplink(&self, ifindex: u32, name: &str) {
        let mut o = self.lock();
        let i = Interface {
            ifindex,
            name: name.to_string(),
            kind: InterfaceKind::Uplink,
        };
        // Unchanged, or a pod veth (which keeps its classification).
        if o.interfaces
            .get(&ifindex)
            .is_some_and(|old| **old == i || old.kind != InterfaceKind::Uplink)
        {
            return;
        }
        o.interfaces.insert(ifindex, Arc::new(i));
        self.publish(&mut o);
    }

    /// Forgets an uplink (detached or gone); pod veths are not touched.
    pub fn remove_uplink(&self, ifindex: u32) {
        let mut o = self.lock();
        if o.interfaces
            .get(&ifindex)
            .is_some_and(|i| i.kind == InterfaceKind::Uplink)
        {
            o.interfaces.remove(&ifindex);
            self.publish(&mut o);
        }
    }

    fn replace_interfaces(&self, pod_veths: bool, items: impl IntoIterator<Item = Interface>) {
        let mut o = self.lock();
        let is_veth = |i: &Interface| matches!(i.kind, InterfaceKind::PodVeth { .. });
        o.interfaces.retain(|_, i| is_veth(i) != pod_veths);
        for i in items {
            if is_veth(&i) == pod_veths {
                o.interfaces.insert(i.ifindex, Arc::new(i));
            }
        }
        self.publish(&mut o);
    }

    /// Consumes a source until it ends.
    pub async fn run(self: Arc<Self>, source: Box<dyn Source>) {
        let name = source.name();
        let mut updates = source.updates();
        while let Some(u) = updates.next().await {
            self.apply(u);
        }
        tracing::info!(source = %name, "endpoint source ended");
    }

    fn publish(&self, o: &mut Objects) {
        let cfg = &self.cfg;
        let version = o.version + 1;
        let mut by_ip: HashMap<IpAddr, Arc<Endpoint>, ahash::RandomState> = HashMap::default();
        let mut cluster_cidrs = cfg.cluster_cidrs.clone();

        // Nodes first; pods override (a host-network pod keeps the node's).
        let host = Arc::new(Endpoint {
            node_name: cfg.node_name.clone(),
            ..Endpoint::reserved(identity::HOST, RESERVED_HOST)
        });
        for n in o.nodes.values() {
            cluster_cidrs.extend(n.pod_cidrs.iter().copied());
            let ep = if n.name == cfg.node_name {
                host.clone()
            } else {
                Arc::new(Endpoint {
                    node_name: n.name.clone(),
                    ..Endpoint::reserved(identity::REMOTE_NODE, RESERVED_REMOTE_NODE)
                })
            };
            for ip in &n.addresses {
                by_ip.insert(*ip, ep.clone());
            }
        }
        for ip in &cfg.host_addresses {
            by_ip.insert(*ip, host.clone());
        }
        let mut local_pods = Vec::new();
        for p in o.pods.values() {
            if p.host_network {
                continue;
            }
            let labels = model::pod_labels(
                &p.key.namespace,
                &p.labels,
                p.service_account.as_deref(),
                &cfg.cluster_name,
            );
            let local = !cfg.node_name.is_empty() && p.node_name == cfg.node_name;
            let ep = Arc::new(Endpoint {
                id: if local { model::endpoint_id(&p.uid) } else { 0 },
                identity: model::identity_of(&labels),
                namespace: p.key.namespace.clone(),
                pod_name: p.key.name.clone(),
                labels,
                workload: p.workload(),
                node_name: p.node_name.clone(),
                pod: Some(p.clone()),
            });
            for ip in &p.ips {
                by_ip.insert(*ip, ep.clone());
            }
            if local && !p.ips.is_empty() {
                local_pods.push(p.clone());
            }
        }
        local_pods.sort_by(|a, b| a.key.cmp(&b.key));
        let mut services = HashMap::default();
        for s in o.services.values() {
            let key = Arc::new(s.key.clone());
            for ip in &s.cluster_ips {
                services.insert(*ip, key.clone());
            }
        }
        let node_labels = o
            .nodes
            .values()
            .find(|n| n.name == cfg.node_name)
            .map(|n| n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        let mut nodes: Vec<Arc<Node>> = o.nodes.values().cloned().collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        cluster_cidrs.sort_by_key(|c| (c.ip(), c.prefix()));
        cluster_cidrs.dedup();
        let snap = Snapshot {
            node_name: cfg.node_name.clone(),
            cluster_name: cfg.cluster_name.clone(),
            node_labels,
            by_ip,
            services,
            cluster_cidrs,
            interfaces: o.interfaces.clone(),
            local_pods,
            nodes,
            pods_listed: o.pods_listed,
            world: Arc::new(Endpoint::reserved(identity::WORLD, RESERVED_WORLD)),
            unknown: Arc::new(Endpoint::reserved(identity::UNKNOWN, RESERVED_UNKNOWN)),
            version,
        };
        self.snapshot.store(Arc::new(snap));
        o.version = version;
        // No receivers is fine: nobody waits for changes.
        let _ = self.changed.send(version);
    }
}
