//! The lab's plan and state: every name and address, computed from the spec
//! before anything is created, and saved as `DIR/lab-state.json` so that
//! `lab down` can clean up even after a crash half-way through `lab up`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::spec::{Role, ServiceMode, Spec};

pub const STATE_FILE: &str = "lab-state.json";
/// The gateway every pod routes through, answered by proxy ARP on the node side (as Calico does).
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pods' IPv6 gateway: a link-local address on every host-side veth.
pub const POD_GATEWAY6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Each app pod's loopback-only admin port (`GET /stats`); loopback traffic never crosses a veth.
pub const ADMIN_PORT: u16 = 9901;
/// The outside-world server's port.
pub const WORLD_PORT: u16 = 80;
/// The interface name inside pods and nodes (pod: towards its node; node: towards the underlay).
pub const UPLINK: &str = "eth0";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    pub prefix: String,
    pub dir: PathBuf,
    pub spec: Spec,
    /// Namespace holding the underlay bridge `br0` and routing to the world.
    pub router_netns: String,
    pub router_ip: Ipv4Addr,
    #[serde(default)]
    pub router_ip6: Option<Ipv6Addr>,
    pub world: WorldState,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
    /// The DNS pod's IP.
    pub dns_ip: Ipv4Addr,
    /// Where pods send DNS queries: the kube-dns ClusterIP, or the DNS pod's IP when headless.
    pub dns_server: Ipv4Addr,
    /// Background processes started by `lab up` (CLI mode).
    #[serde(default)]
    pub processes: Vec<ProcState>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorldState {
    pub netns: String,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    /// The node's address on the underlay (its `eth0`), i.e. its InternalIP.
    pub underlay_ip: Ipv4Addr,
    pub pod_cidr: String,
    #[serde(default)]
    pub underlay_ip6: Option<Ipv6Addr>,
    #[serde(default)]
    pub pod_cidr6: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub deployment: String,
    pub replica_set: String,
    pub uid: String,
    pub role: Role,
    /// This pod runs the cluster DNS server.
    pub dns: bool,
    pub node: String,
    pub ip: Ipv4Addr,
    /// The pod's IPv6 address (`ipv6: true` only).
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    /// The ClusterIP of the pod's Service (`serviceMode: clusterIP` only).
    #[serde(default)]
    pub service_ip: Option<Ipv4Addr>,
    pub netns: String,
    /// The pod's veth end in the node namespace (flowd attaches here).
    pub host_veth: String,
    pub labels: BTreeMap<String, String>,
}

impl PodState {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcState {
    pub pid: i32,
    /// Field 22 of /proc/PID/stat, so a recycled pid is never killed.
    pub start_time: u64,
    pub what: String,
}

/// FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
pub(crate) fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Kubernetes' "safe" alphabet for generated name suffixes (no vowels, no 0/1/3).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn safe_suffix(mut h: u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            let c = SAFE[(h % SAFE.len() as u64) as usize] as char;
            h /= SAFE.len() as u64;
            c
        })
        .collect()
}

fn uid(parts: &[&str]) -> String {
    let a = fnv(parts);
    let b = fnv(&[&a.to_string(), "uid"]);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

impl LabState {
    /// The node pod `key` (`namespace/name`) runs on.
    pub fn node_of(&self, key: &str) -> Result<String, Error> {
        self.pods
            .iter()
            .find(|p| p.key() == key)
            .map(|p| p.node.clone())
            .ok_or_else(|| Error::Lab(format!("no pod {key} in the lab")))
    }

    /// Names and addresses for `spec`; deterministic given `prefix`.
    pub fn plan(spec: &Spec, prefix: &str, dir: &Path) -> LabState {
        let nodes: Vec<NodeState> = spec
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeState {
                name: n.name.clone(),
                netns: format!("{prefix}-node-{}", n.name),
                // Validated: the underlay has room for every node.
                underlay_ip: spec
                    .underlay
                    .host(i as u32 + 2)
                    .unwrap_or(Ipv4Addr::UNSPECIFIED),
                pod_cidr: n.pod_cidr.to_string(),
                underlay_ip6: spec.ipv6.then(|| underlay6(i as u16 + 2)),
                pod_cidr6: spec.ipv6.then(|| format!("{}/64", pod6(i, 0))),
            })
            .collect();
        let mut next_host: BTreeMap<String, u32> = BTreeMap::new();
        let mut pods = Vec::new();
        let mut next_service = 100;
        for d in spec.all_deployments() {
            let Some(node) = spec.nodes.iter().find(|n| n.name == d.node) else {
                continue; // validated
            };
            let n = next_host.entry(d.node.clone()).or_insert(2);
            let ip = node.pod_cidr.host(*n).unwrap_or(Ipv4Addr::UNSPECIFIED);
            let node_index = spec
                .nodes
                .iter()
                .position(|x| x.name == d.node)
                .unwrap_or(0);
            let ip6 = spec.ipv6.then(|| pod6(node_index, *n as u16));
            *n += 1;
            let template_hash = safe_suffix(fnv(&[&d.namespace, &d.name, "template"]), 9);
            let replica_set = format!("{}-{}", d.name, template_hash);
            let name = format!(
                "{replica_set}-{}",
                safe_suffix(fnv(&[&d.namespace, &d.name, "pod"]), 5)
            );
            let mut labels = d.labels.clone();
            let dns = d.namespace == spec.dns.namespace && d.name == spec.dns.deployment;
            if !dns {
                labels.insert("app".into(), d.name.clone());
            }
            labels.insert("pod-template-hash".into(), template_hash);
            // Cilium-style host-side name: "lxc" + 12 hex digits, within IFNAMSIZ.
            let service_ip = match spec.service_mode {
                ServiceMode::Headless => None,
                // kube-dns at .10 as in kubeadm clusters; the others from .100 on.
                ServiceMode::ClusterIp if dns => spec.service_cidr.host(10),
                ServiceMode::ClusterIp if d.role().serves() => {
                    next_service += 1;
                    spec.service_cidr.host(next_service - 1)
                }
                ServiceMode::ClusterIp => None,
            };
            let host_veth = format!("lxc{:012x}", fnv(&[&d.namespace, &name]) & 0xffff_ffff_ffff);
            pods.push(PodState {
                uid: uid(&[&d.namespace, &name]),
                netns: format!("{prefix}-pod-{}-{}", d.namespace, name),
                namespace: d.namespace.clone(),
                deployment: d.name.clone(),
                replica_set,
                role: d.role(),
                dns,
                node: d.node.clone(),
                ip,
                ip6,
                service_ip,
                host_veth,
                labels,
                name,
            });
        }
        let dns_pod = pods.iter().find(|p| p.dns);
        let dns_ip = dns_pod.map(|p| p.ip).unwrap_or(Ipv4Addr::UNSPECIFIED);
        let dns_server = dns_pod.and_then(|p| p.service_ip).unwrap_or(dns_ip);
        LabState {
            prefix: prefix.to_string(),
            dir: dir.to_path_buf(),
            spec: spec.clone(),
            router_netns: format!("{prefix}-router"),
            router_ip: spec.underlay.host(1).unwrap_or(Ipv4Addr::UNSPECIFIED),
            router_ip6: spec.ipv6.then(|| underlay6(1)),
            world: WorldState {
                netns: format!("{prefix}-world"),
                ip: spec.world.ip,
                gateway: world_gateway(spec.world.ip),
                ip6: spec.ipv6.then_some(WORLD_IP6),
                gateway6: spec.ipv6.then_some(WORLD_GW6),
            },
            nodes,
            pods,
            dns_ip,
            dns_server,
            processes: Vec::new(),
        }
    }

    /// Every network namespace of the lab, pods first (torn down in this order).
    pub fn all_netns(&self) -> Vec<String> {
        let mut v: Vec<String> = self.pods.iter().map(|p| p.netns.clone()).collect();
        v.extend(self.nodes.iter().map(|n| n.netns.clone()));
        v.push(self.world.netns.clone());
        v.push(self.router_netns.clone());
        v
    }

    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// A pod by `namespace/name` or `namespace/deployment`.
    pub fn pod(&self, key: &str) -> Option<&PodState> {
        let (ns, name) = key.split_once('/')?;
        self.pods
            .iter()
            .find(|p| p.namespace == ns && (p.name == name || p.deployment == name))
    }

    pub fn pod_by_ip(&self, ip: Ipv4Addr) -> Option<&PodState> {
        self.pods.iter().find(|p| p.ip == ip)
    }

    /// The fully qualified name of a service.
    pub fn service_fqdn(&self, service: &str, namespace: &str) -> String {
        format!("{service}.{namespace}.svc.{}", self.spec.cluster_domain)
    }

    /// DNS names the cluster DNS answers, with their address.
    /// AAAA records: pods' IPv6 (headless services only; ClusterIPs are IPv4) and the world's.
    pub fn dns_records6(&self) -> Vec<(String, Ipv6Addr)> {
        let mut v: Vec<(String, Ipv6Addr)> = self
            .pods
            .iter()
            .filter(|p| (p.dns || p.role.serves()) && p.service_ip.is_none())
            .filter_map(|p| {
                let svc = if p.dns {
                    self.spec.dns.service.as_str()
                } else {
                    p.deployment.as_str()
                };
                Some((self.service_fqdn(svc, &p.namespace), p.ip6?))
            })
            .collect();
        if let Some(ip6) = self.world.ip6 {
            v.extend(self.spec.world.names.iter().map(|n| (n.clone(), ip6)));
        }
        v
    }

    pub fn dns_records(&self) -> Vec<(String, Ipv4Addr)> {
        // Only pods with a Service (see manifests) have a name.
        let mut v: Vec<(String, Ipv4Addr)> = self
            .pods
            .iter()
            .filter(|p| p.dns || p.role.serves())
            .map(|p| {
                let svc = if p.dns {
                    self.spec.dns.service.as_str()
                } else {
                    p.deployment.as_str()
                };
                (
                    self.service_fqdn(svc, &p.namespace),
                    p.service_ip.unwrap_or(p.ip),
                )
            })
            .collect();
        v.extend(
            self.spec
                .world
                .names
                .iter()
                .map(|n| (n.clone(), self.world.ip)),
        );
        v
    }

    pub fn save(&self) -> Result<(), Error> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::Io {
                what: format!("writing {}", path.display()),
                source: e,
            })
    }

    pub fn load(dir: &Path) -> Result<LabState, Error> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
            what: format!("reading {}", path.display()),
            source: e,
        })?;
        serde_json::from_str(&text).map_err(|e| Error::State {
            path,
            reason: e.to_string(),
        })
    }
}

/// IPv6 of the world (documentation prefix) and of the router on that link.
const WORLD_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
const WORLD_GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);

/// `fd00:172:18::<n>`: the IPv6 underlay.
fn underlay6(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x172, 0x18, 0, 0, 0, 0, n)
}

/// `fd00:10:244:<node index + 1>::<n>`: pod addresses of a node.
fn pod6(node_index: usize, n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 0x244, node_index as u16 + 1, 0, 0, 0, n)
}

/// The router's address on the world link: `.1` of the world address' /24.
fn world_gateway(ip: Ipv4Addr) -> Ipv4Addr {
    let o = ip.octets();
    let gw = Ipv4Addr::new(o[0], o[1], o[2], 1);
    if gw == ip {
        Ipv4Addr::new(o[0], o[1], o[2], 254)
    } else {
        gw
    }
}
