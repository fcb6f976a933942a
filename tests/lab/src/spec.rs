//! The lab spec: nodes, deployments, DNS, the outside world and the traffic mix.
//!
//! `lab.yaml` in this crate is the embedded default ([`Spec::default_spec`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The default spec, embedded from `tests/lab/lab.yaml`.
pub const DEFAULT_SPEC: &str = include_str!("../lab.yaml");

/// An IPv4 network in CIDR notation (`10.244.1.0/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        };
        Ipv4Addr::from(u32::from(self.addr) & mask)
    }

    /// The `n`-th address of the network (`n = 1` is `.1` of a /24), if inside it.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix);
        // Keep the broadcast address out.
        if u64::from(n) + 1 >= size {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.network()) + n))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        };
        u32::from(ip) & mask == u32::from(self.network())
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (expected a.b.c.d/len)"))?;
        let addr: Ipv4Addr = a.parse().map_err(|e| format!("{s:?}: bad address: {e}"))?;
        let prefix: u8 = p.parse().map_err(|e| format!("{s:?}: bad prefix: {e}"))?;
        if prefix > 30 {
            return Err(format!("{s:?}: prefix must be at most /30"));
        }
        Ok(Ipv4Net { addr, prefix })
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

/// What the program in a pod does. The HTTP rules of each role are in [`crate::app`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Frontend,
    OrderService,
    PaymentService,
    Inventory,
    /// Runs the traffic generator on demand; serves nothing.
    Loadgen,
    /// Serves nothing (a pod that only exists).
    Idle,
}

impl Role {
    /// The role a deployment gets when the spec names none: from its name.
    pub fn from_name(name: &str) -> Role {
        match name {
            "frontend" => Role::Frontend,
            "order-service" => Role::OrderService,
            "payment-service" => Role::PaymentService,
            "inventory" => Role::Inventory,
            "loadgen" => Role::Loadgen,
            _ => Role::Idle,
        }
    }

    /// Whether the pod runs an HTTP server on the app port.
    pub fn serves(&self) -> bool {
        !matches!(self, Role::Loadgen | Role::Idle)
    }

    /// Whether the pod also serves gRPC on the gRPC port.
    pub fn serves_grpc(&self) -> bool {
        matches!(self, Role::Inventory)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Frontend => "frontend",
            Role::OrderService => "order-service",
            Role::PaymentService => "payment-service",
            Role::Inventory => "inventory",
            Role::Loadgen => "loadgen",
            Role::Idle => "idle",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "frontend" => Ok(Role::Frontend),
            "order-service" => Ok(Role::OrderService),
            "payment-service" => Ok(Role::PaymentService),
            "inventory" => Ok(Role::Inventory),
            "loadgen" => Ok(Role::Loadgen),
            "idle" => Ok(Role::Idle),
            _ => Err(format!(
                "unknown role {s:?} (frontend, order-service, payment-service, inventory, loadgen, idle)"
            )),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    #[serde(default = "default_domain")]
    pub cluster_domain: String,
    #[serde(default = "default_underlay")]
    pub underlay: Ipv4Net,
    #[serde(default = "default_port")]
    pub app_port: u16,
    /// The port gRPC services (inventory's `shop.inventory.v1.Inventory`)
    /// listen on, besides HTTP on `appPort`.
    #[serde(default = "default_grpc_port")]
    pub grpc_port: u16,
    /// `headless` (default): service names resolve to pod IPs. `clusterIP`: to
    /// virtual IPs from `serviceCidr`, DNATed to the pod by nftables in every
    /// node namespace, as kube-proxy does.
    #[serde(default)]
    pub service_mode: ServiceMode,
    #[serde(default = "default_service_cidr")]
    pub service_cidr: Ipv4Net,
    /// Dual stack: pods also get an IPv6 address (`fd00:10:244:<node#>::<n>/128`,
    /// default route via `fe80::1` on the host veth), nodes `fd00:172:18::<n>`,
    /// the world `2001:db8:100::10`; DNS answers AAAA. Off: IPv6 is disabled.
    #[serde(default)]
    pub ipv6: bool,
    pub nodes: Vec<NodeSpec>,
    pub world: WorldSpec,
    pub dns: DnsSpec,
    pub deployments: Vec<DeploymentSpec>,
    pub traffic: TrafficSpec,
}

fn default_domain() -> String {
    "cluster.local".into()
}
fn default_underlay() -> Ipv4Net {
    Ipv4Net {
        addr: Ipv4Addr::new(172, 18, 0, 0),
        prefix: 24,
    }
}
fn default_port() -> u16 {
    8080
}
fn default_grpc_port() -> u16 {
    50051
}
fn default_service_cidr() -> Ipv4Net {
    Ipv4Net {
        addr: Ipv4Addr::new(10, 96, 0, 0),
        prefix: 16,
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceMode {
    #[default]
    #[serde(rename = "headless")]
    Headless,
    #[serde(rename = "clusterIP")]
    ClusterIp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    pub pod_cidr: Ipv4Net,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorldSpec {
    pub ip: Ipv4Addr,
    /// Names the cluster DNS resolves to `ip` (their parent domains answer NXDOMAIN otherwise).
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsSpec {
    pub namespace: String,
    pub deployment: String,
    pub service: String,
    pub node: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// Defaults to the role named like the deployment, else `idle`.
    #[serde(default)]
    pub role: Option<Role>,
    /// Extra pod labels; `app: <name>` is always set.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl DeploymentSpec {
    pub fn role(&self) -> Role {
        self.role.unwrap_or_else(|| Role::from_name(&self.name))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficSpec {
    /// `namespace/deployment` of the pod the generator runs in.
    pub source: String,
    /// Service (in the source's namespace) the requests go to.
    pub target: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_connections")]
    pub connections: u32,
    pub requests: Vec<RequestSpec>,
    /// Extra type-A lookups (typically names that do not exist).
    #[serde(default)]
    pub lookups: Vec<String>,
}

fn default_connections() -> u32 {
    2
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestSpec {
    pub method: String,
    pub path: String,
    pub count: u32,
}

impl Spec {
    /// The embedded default spec.
    pub fn default_spec() -> Spec {
        // The embedded file is part of this crate and covered by a test.
        Spec::parse(DEFAULT_SPEC, "<embedded lab.yaml>").unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn parse(text: &str, origin: &str) -> Result<Spec, Error> {
        let spec: Spec = serde_yaml_ng::from_str(text).map_err(|e| Error::Spec {
            origin: origin.to_string(),
            reason: e.to_string(),
        })?;
        spec.check().map_err(|reason| Error::Spec {
            origin: origin.to_string(),
            reason,
        })?;
        Ok(spec)
    }

    pub fn from_file(path: &Path) -> Result<Spec, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            what: format!("reading spec {}", path.display()),
            source: e,
        })?;
        Spec::parse(&text, &path.display().to_string())
    }

    /// Deployment specs including the DNS one, in the order pods are created.
    pub fn all_deployments(&self) -> Vec<DeploymentSpec> {
        let mut v = vec![DeploymentSpec {
            namespace: self.dns.namespace.clone(),
            name: self.dns.deployment.clone(),
            node: self.dns.node.clone(),
            role: Some(Role::Idle),
            labels: BTreeMap::from([("k8s-app".to_string(), self.dns.service.clone())]),
        }];
        v.extend(self.deployments.iter().cloned());
        v
    }

    /// Checks consistency (nodes, names, addresses, traffic); the reason if not.
    pub fn check(&self) -> Result<(), String> {
        if self.nodes.len() < 2 {
            return Err("at least 2 nodes are needed".into());
        }
        let mut names = HashSet::new();
        for n in &self.nodes {
            check_dns_label(&n.name, "node name")?;
            if !names.insert(n.name.as_str()) {
                return Err(format!("node {:?} is listed twice", n.name));
            }
            if n.pod_cidr.contains(self.world.ip) {
                return Err(format!(
                    "world ip {} is inside pod CIDR {} of {}",
                    self.world.ip, n.pod_cidr, n.name
                ));
            }
        }
        for (i, a) in self.nodes.iter().enumerate() {
            for b in &self.nodes[i + 1..] {
                if a.pod_cidr.contains(b.pod_cidr.network())
                    || b.pod_cidr.contains(a.pod_cidr.network())
                {
                    return Err(format!("pod CIDRs of {} and {} overlap", a.name, b.name));
                }
            }
        }
        if self
            .service_cidr
            .host(100 + self.deployments.len() as u32)
            .is_none()
        {
            return Err(format!("serviceCidr {} is too small", self.service_cidr));
        }
        if self.underlay.host(self.nodes.len() as u32 + 1).is_none() {
            return Err(format!("underlay {} is too small", self.underlay));
        }
        let mut deps = HashSet::new();
        for d in self.all_deployments() {
            check_dns_label(&d.namespace, "namespace")?;
            check_dns_label(&d.name, "deployment name")?;
            if d.name.len() > 40 {
                return Err(format!("deployment name {:?} is longer than 40", d.name));
            }
            if !names.contains(d.node.as_str()) {
                return Err(format!(
                    "deployment {}/{} is on unknown node {:?}",
                    d.namespace, d.name, d.node
                ));
            }
            if !deps.insert((d.namespace.clone(), d.name.clone())) {
                return Err(format!(
                    "deployment {}/{} is listed twice",
                    d.namespace, d.name
                ));
            }
        }
        for n in &self.nodes {
            let count = self
                .all_deployments()
                .iter()
                .filter(|d| d.node == n.name)
                .count();
            if n.pod_cidr.host(count as u32 + 1).is_none() {
                return Err(format!(
                    "pod CIDR {} of {} is too small",
                    n.pod_cidr, n.name
                ));
            }
        }
        let (ns, dep) = self.traffic.source.split_once('/').ok_or_else(|| {
            format!(
                "traffic.source {:?} must be namespace/deployment",
                self.traffic.source
            )
        })?;
        if !deps.contains(&(ns.to_string(), dep.to_string())) {
            return Err(format!(
                "traffic.source {:?} is not a deployment",
                self.traffic.source
            ));
        }
        let target = self
            .deployments
            .iter()
            .find(|d| d.namespace == ns && d.name == self.traffic.target)
            .ok_or_else(|| {
                format!(
                    "traffic.target {:?} is not a deployment in {ns}",
                    self.traffic.target
                )
            })?;
        if !target.role().serves() {
            return Err(format!("traffic.target {:?} serves nothing", target.name));
        }
        if self.grpc_port == self.app_port {
            return Err(format!(
                "grpcPort {} is appPort too: each needs its own port",
                self.grpc_port
            ));
        }
        if self.traffic.connections == 0 {
            return Err("traffic.connections must be at least 1".into());
        }
        for r in &self.traffic.requests {
            if !matches!(r.method.as_str(), "GET" | "POST" | "PUT" | "DELETE") {
                return Err(format!(
                    "traffic request method {:?} is not GET/POST/PUT/DELETE",
                    r.method
                ));
            }
            if !r.path.starts_with('/') {
                return Err(format!(
                    "traffic request path {:?} must start with /",
                    r.path
                ));
            }
        }
        Ok(())
    }
}

fn check_dns_label(s: &str, what: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {s:?} is not a DNS label (a-z, 0-9, -)"))
    }
}
