//! The endpoint model: pods, services and nodes as flowd needs them, and the
//! Hubble (Cilium) conventions for labels, workloads and reserved identities.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;

/// Cilium's reserved numeric identities (pkg/identity/numericidentity.go).
pub mod identity {
    /// No identity known for the address.
    pub const UNKNOWN: u32 = 0;
    /// The local node's own addresses.
    pub const HOST: u32 = 1;
    /// Anything outside the cluster.
    pub const WORLD: u32 = 2;
    /// Another node of the cluster.
    pub const REMOTE_NODE: u32 = 6;
    /// Identities derived from pod labels start here (Cilium's cluster-local
    /// identity range is 256..=65535).
    pub const FIRST_POD: u32 = 256;
}

/// Label source prefix for labels that come from Kubernetes.
pub const K8S: &str = "k8s:";
pub const LABEL_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_CLUSTER: &str = "io.cilium.k8s.policy.cluster";
pub const LABEL_SERVICE_ACCOUNT: &str = "io.cilium.k8s.policy.serviceaccount";
pub const RESERVED_HOST: &str = "reserved:host";
pub const RESERVED_WORLD: &str = "reserved:world";
pub const RESERVED_REMOTE_NODE: &str = "reserved:remote-node";
pub const RESERVED_UNKNOWN: &str = "reserved:unknown";

/// `namespace/name` of an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// An owner reference (`metadata.ownerReferences[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub kind: String,
    pub name: String,
    pub controller: bool,
}

/// A workload as Hubble reports it (`flow.Workload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: String,
    pub name: String,
}

/// The workload of a pod from its controlling owner, as Cilium resolves it
/// without asking the API server: a ReplicaSet `<deployment>-<hash>` is the
/// Deployment `<deployment>`, a Job `<cronjob>-<digits>` is the CronJob
/// `<cronjob>`; other owners are reported as they are. `pod_template_hash`
/// (the pod's `pod-template-hash` label), when present, must be the
/// ReplicaSet's suffix: a ReplicaSet not made by a Deployment keeps its name.
pub fn workload_of(owners: &[OwnerRef], pod_template_hash: Option<&str>) -> Option<Workload> {
    let owner = owners
        .iter()
        .find(|o| o.controller)
        .or_else(|| owners.first())?;
    let split = owner.name.rsplit_once('-');
    match (owner.kind.as_str(), split) {
        ("ReplicaSet", Some((deploy, hash)))
            if !deploy.is_empty() && pod_template_hash.is_none_or(|h| h == hash) =>
        {
            Some(Workload {
                kind: "Deployment".into(),
                name: deploy.into(),
            })
        }
        ("Job", Some((cron, stamp)))
            if !cron.is_empty()
                && !stamp.is_empty()
                && stamp.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(Workload {
                kind: "CronJob".into(),
                name: cron.into(),
            })
        }
        _ => Some(Workload {
            kind: owner.kind.clone(),
            name: owner.name.clone(),
        }),
    }
}

/// Pod labels Cilium leaves out of identities (its default label filter):
/// per-rollout hashes and Kubernetes-internal keys.
fn label_is_relevant(key: &str) -> bool {
    const EXCLUDED: &[&str] = &[
        "pod-template-hash",
        "pod-template-generation",
        "controller-revision-hash",
        "controller-uid",
        "job-name",
        "statefulset.kubernetes.io/pod-name",
    ];
    if EXCLUDED.contains(&key) {
        return false;
    }
    let prefix = key.split_once('/').map(|(p, _)| p).unwrap_or("");
    !(prefix == "kubernetes.io"
        || prefix == "k8s.io"
        || prefix.ends_with(".kubernetes.io")
        || prefix.ends_with(".k8s.io"))
}

/// Hubble-style labels of a pod, sorted: `k8s:<key>=<value>` for its
/// relevant labels, plus namespace, cluster and service account labels.
pub fn pod_labels(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    service_account: Option<&str>,
    cluster_name: &str,
) -> Vec<String> {
    let mut out: Vec<String> = labels
        .iter()
        .filter(|(k, _)| label_is_relevant(k))
        .map(|(k, v)| format!("{K8S}{k}={v}"))
        .collect();
    out.push(format!("{K8S}{LABEL_NAMESPACE}={namespace}"));
    if !cluster_name.is_empty() {
        out.push(format!("{K8S}{LABEL_CLUSTER}={cluster_name}"));
    }
    if let Some(sa) = service_account.filter(|s| !s.is_empty()) {
        out.push(format!("{K8S}{LABEL_SERVICE_ACCOUNT}={sa}"));
    }
    out.sort();
    out.dedup();
    out
}

/// A numeric identity from labels: the same labels give the same number on
/// every node (Cilium allocates them cluster-wide; flowd has no allocator,
/// so it hashes — FNV-1a folded into 256..=65535; collisions are possible
/// and only make two label sets share a number).
pub fn identity_of(labels: &[String]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for l in labels {
        for b in l.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    identity::FIRST_POD + (h % u64::from(65536 - identity::FIRST_POD)) as u32
}

/// A pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub key: ObjectKey,
    pub uid: String,
    /// Kubernetes labels as they are (`app` → `frontend`).
    pub labels: BTreeMap<String, String>,
    pub owners: Vec<OwnerRef>,
    pub service_account: Option<String>,
    /// `spec.nodeName`; empty while unscheduled.
    pub node_name: String,
    /// `status.podIPs` (or `status.podIP`), both families.
    pub ips: Vec<IpAddr>,
    /// `spec.hostNetwork`: its addresses are the node's, not its own.
    pub host_network: bool,
}

impl Pod {
    pub fn workload(&self) -> Option<Workload> {
        workload_of(
            &self.owners,
            self.labels.get("pod-template-hash").map(String::as_str),
        )
    }
}

/// A Service: its cluster IPs (none when headless).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub key: ObjectKey,
    pub cluster_ips: Vec<IpAddr>,
}

/// A node: its addresses, pod CIDRs and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// `metadata.labels` (flows observed on this node carry them as
    /// `node_labels`, `key=value`, sorted, as Cilium fills them).
    pub labels: BTreeMap<String, String>,
    pub addresses: Vec<IpAddr>,
    pub pod_cidrs: Vec<IpNetwork>,
}

/// One object from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Pod(Arc<Pod>),
    Service(Arc<Service>),
    Node(Arc<Node>),
}

/// The kinds of object a source delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Service,
    Node,
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::Node(_) => Kind::Node,
        }
    }
    pub fn key(&self) -> ObjectKey {
        match self {
            Object::Pod(p) => p.key.clone(),
            Object::Service(s) => s.key.clone(),
            Object::Node(n) => ObjectKey::new("", n.name.clone()),
        }
    }
}

/// What an address resolves to, ready to be copied into flows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Endpoint {
    /// Endpoint ID: set for pods of this node only (Cilium's IDs are
    /// node-local), derived from the pod UID (1..=4095).
    pub id: u32,
    pub identity: u32,
    pub namespace: String,
    pub pod_name: String,
    pub labels: Vec<String>,
    pub workload: Option<Workload>,
    pub node_name: String,
    /// The pod this is (None for reserved identities).
    pub pod: Option<Arc<Pod>>,
}

impl Endpoint {
    pub fn reserved(identity: u32, label: &str) -> Self {
        Endpoint {
            id: 0,
            identity,
            namespace: String::new(),
            pod_name: String::new(),
            labels: vec![label.to_string()],
            workload: None,
            node_name: String::new(),
            pod: None,
        }
    }

    pub fn is_pod(&self) -> bool {
        self.pod.is_some()
    }

    /// The proto message.
    pub fn to_proto(&self, cluster_name: &str) -> flowd_proto::flow::Endpoint {
        flowd_proto::flow::Endpoint {
            id: self.id,
            identity: self.identity,
            cluster_name: if self.is_pod() {
                cluster_name.to_string()
            } else {
                String::new()
            },
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            pod_name: self.pod_name.clone(),
            workloads: self
                .workload
                .iter()
                .map(|w| flowd_proto::flow::Workload {
                    name: w.name.clone(),
                    kind: w.kind.clone(),
                })
                .collect(),
        }
    }
}

/// A node-local endpoint ID from a pod UID: 1..=4095, stable across restarts.
pub fn endpoint_id(uid: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in uid.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    1 + h % 4095
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(kind: &str, name: &str) -> OwnerRef {
        OwnerRef {
            kind: kind.into(),
            name: name.into(),
            controller: true,
        }
    }

    #[test]
    fn replicaset_resolves_to_its_deployment() {
        let w = workload_of(&[owner("ReplicaSet", "order-service-7d9f8b6c5")], None).unwrap();
        assert_eq!(
            w,
            Workload {
                kind: "Deployment".into(),
                name: "order-service".into()
            }
        );
        let w = workload_of(
            &[owner("ReplicaSet", "order-service-7d9f8b6c5")],
            Some("7d9f8b6c5"),
        )
        .unwrap();
        assert_eq!(w.name, "order-service");
        // A hand-made ReplicaSet whose suffix is not the template hash stays itself.
        let w = workload_of(&[owner("ReplicaSet", "cache-blue")], Some("abc12")).unwrap();
        assert_eq!(
            w,
            Workload {
                kind: "ReplicaSet".into(),
                name: "cache-blue".into()
            }
        );
    }

    #[test]
    fn other_owners() {
        assert_eq!(
            workload_of(&[owner("Job", "backup-28391040")], None).unwrap(),
            Workload {
                kind: "CronJob".into(),
                name: "backup".into()
            }
        );
        assert_eq!(
            workload_of(&[owner("Job", "migrate-db")], None).unwrap(),
            Workload {
                kind: "Job".into(),
                name: "migrate-db".into()
            }
        );
        assert_eq!(
            workload_of(&[owner("StatefulSet", "db")], None).unwrap(),
            Workload {
                kind: "StatefulSet".into(),
                name: "db".into()
            }
        );
        assert_eq!(workload_of(&[], None), None);
        // The controller wins over other owners.
        let owners = [
            OwnerRef {
                kind: "ConfigMap".into(),
                name: "x".into(),
                controller: false,
            },
            owner("DaemonSet", "flowd"),
        ];
        assert_eq!(workload_of(&owners, None).unwrap().kind, "DaemonSet");
    }

    #[test]
    fn labels_hubble_style() {
        let mut l = BTreeMap::new();
        l.insert("app".to_string(), "frontend".to_string());
        l.insert("pod-template-hash".to_string(), "h7grtjcbz".to_string());
        l.insert("kubernetes.io/os".to_string(), "linux".to_string());
        l.insert("tier".to_string(), "web".to_string());
        assert_eq!(
            pod_labels("ecommerce", &l, Some("shop"), "default"),
            vec![
                "k8s:app=frontend",
                "k8s:io.cilium.k8s.policy.cluster=default",
                "k8s:io.cilium.k8s.policy.serviceaccount=shop",
                "k8s:io.kubernetes.pod.namespace=ecommerce",
                "k8s:tier=web",
            ]
        );
        assert_eq!(
            pod_labels("kube-system", &BTreeMap::new(), None, ""),
            vec!["k8s:io.kubernetes.pod.namespace=kube-system"]
        );
    }

    #[test]
    fn identities() {
        let a = vec!["k8s:app=a".to_string()];
        let b = vec!["k8s:app=b".to_string()];
        assert_eq!(identity_of(&a), identity_of(&a.clone()));
        assert_ne!(identity_of(&a), identity_of(&b));
        for l in [&a, &b] {
            assert!((identity::FIRST_POD..=65535).contains(&identity_of(l)));
        }
        let id = endpoint_id("0b1f4c3e-aaaa");
        assert!((1..=4095).contains(&id));
        assert_eq!(id, endpoint_id("0b1f4c3e-aaaa"));
    }
}
