//! The traffic generator and its report.
//!
//! The generator runs in the source pod: it makes the spec's extra DNS lookups,
//! opens `connections` keep-alive connections to the target service (one type-A
//! lookup each), and sends the requests in a seeded shuffled order, request `i`
//! on connection `i % connections`, each connection sequentially.
//!
//! The report holds what the generator sent and got (`http`, `dns`), and the
//! exchanges the whole cluster is expected to make because of it (`expected`,
//! downstream calls, gRPC calls among them, and their lookups included),
//! derived from the mix and the rules in [`crate::app::rules`]. Tests compare
//! `expected` with what the servers counted and with what flowd observed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::app::rules::{self, Reply, Request};
use crate::app::{Connection, Kind};
use crate::state::{LabState, PodState, WORLD_PORT};

/// A count of HTTP exchanges with the same endpoints, request and status.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HttpCount {
    pub source_namespace: String,
    pub source_pod: String,
    pub source_ip: Ipv4Addr,
    /// `None` for the outside world.
    pub destination_namespace: Option<String>,
    /// The service name, or the world's DNS name.
    pub destination_service: String,
    /// `None` for the outside world.
    pub destination_pod: Option<String>,
    /// The address the client connected to: the pod's, or its Service's ClusterIP.
    pub destination_ip: Ipv4Addr,
    /// The address that served it (after ClusterIP DNAT): the pod's IP.
    pub backend_ip: Ipv4Addr,
    pub destination_port: u16,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub count: u32,
}

/// A count of DNS queries with the same source, name, type and answer code.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DnsCount {
    pub source_namespace: String,
    pub source_pod: String,
    pub source_ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    pub name: String,
    pub qtype: String,
    pub rcode: String,
    pub count: u32,
}

/// A count of unary gRPC calls with the same endpoints, method and status.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GrpcCount {
    pub source_namespace: String,
    pub source_pod: String,
    pub source_ip: Ipv4Addr,
    pub destination_namespace: Option<String>,
    /// The Kubernetes service name (its DNS name is the call's authority).
    pub destination_service: String,
    pub destination_pod: Option<String>,
    /// The address the client connected to: the pod's, or its Service's ClusterIP.
    pub destination_ip: Ipv4Addr,
    /// The address that served it (after ClusterIP DNAT): the pod's IP.
    pub backend_ip: Ipv4Addr,
    pub destination_port: u16,
    /// The gRPC service, fully qualified (`shop.inventory.v1.Inventory`).
    pub service: String,
    pub method: String,
    /// The status code the call ended with (0 = OK); `None` if it got none
    /// (the connection failed).
    pub code: Option<u32>,
    pub count: u32,
}

impl GrpcCount {
    /// `:path` of the call (`/shop.inventory.v1.Inventory/Reserve`).
    pub fn path(&self) -> String {
        format!("/{}/{}", self.service, self.method)
    }

    /// The status's canonical name (`RESOURCE_EXHAUSTED`), if it has one.
    pub fn status_name(&self) -> Option<&'static str> {
        self.code.and_then(flowd_proto::names::grpc_status_name)
    }

    /// The call as an HTTP/2 exchange: `POST` of its path, answered with
    /// `:status` 200 (gRPC carries its own status in the trailers).
    pub fn as_http(&self) -> HttpCount {
        HttpCount {
            source_namespace: self.source_namespace.clone(),
            source_pod: self.source_pod.clone(),
            source_ip: self.source_ip,
            destination_namespace: self.destination_namespace.clone(),
            destination_service: self.destination_service.clone(),
            destination_pod: self.destination_pod.clone(),
            destination_ip: self.destination_ip,
            backend_ip: self.backend_ip,
            destination_port: self.destination_port,
            method: "POST".into(),
            path: self.path(),
            status: 200,
            count: self.count,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchanges {
    /// HTTP/1.1 exchanges.
    pub http: Vec<HttpCount>,
    pub dns: Vec<DnsCount>,
    /// gRPC calls (HTTP/2, one connection each).
    #[serde(default)]
    pub grpc: Vec<GrpcCount>,
}

impl Exchanges {
    /// HTTP/1.1 exchanges.
    pub fn http_total(&self) -> u32 {
        self.http.iter().map(|h| h.count).sum()
    }
    pub fn dns_total(&self) -> u32 {
        self.dns.iter().map(|d| d.count).sum()
    }
    pub fn grpc_total(&self) -> u32 {
        self.grpc.iter().map(|g| g.count).sum()
    }

    /// Adds `other`'s counts to these (rows with equal keys are summed).
    pub fn merge(&mut self, other: &Exchanges) {
        let mut http: BTreeMap<HttpCount, u32> = BTreeMap::new();
        for h in self.http.iter().chain(&other.http) {
            *http
                .entry(HttpCount {
                    count: 0,
                    ..h.clone()
                })
                .or_default() += h.count;
        }
        let mut dns: BTreeMap<DnsCount, u32> = BTreeMap::new();
        for d in self.dns.iter().chain(&other.dns) {
            *dns.entry(DnsCount {
                count: 0,
                ..d.clone()
            })
            .or_default() += d.count;
        }
        let mut grpc: BTreeMap<GrpcCount, u32> = BTreeMap::new();
        for g in self.grpc.iter().chain(&other.grpc) {
            *grpc
                .entry(GrpcCount {
                    count: 0,
                    ..g.clone()
                })
                .or_default() += g.count;
        }
        *self = Tally { http, dns, grpc }.finish();
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficReport {
    pub seed: u64,
    pub source_namespace: String,
    pub source_pod: String,
    pub source_ip: Ipv4Addr,
    pub target: String,
    /// TCP connections the generator opened to the target per round (keep-alive).
    pub connections: u32,
    /// How many times the mix was sent (counts below are totals over all rounds).
    pub rounds: u32,
    pub elapsed_ms: u64,
    /// What the generator itself sent, with the statuses and rcodes it got.
    pub sent: Exchanges,
    /// Every exchange in the cluster the mix should cause, per the rules in `app`.
    pub expected: Exchanges,
}

impl TrafficReport {
    /// TCP connections the rounds opened in the cluster: the generator's
    /// keep-alive ones, and one per downstream call (HTTP or gRPC).
    pub fn tcp_connections(&self) -> u32 {
        let downstream_http = self.expected.http_total() - self.sent.http_total();
        self.connections * self.rounds + downstream_http + self.expected.grpc_total()
    }
}

/// Rows with `count: 0` are the keys.
#[derive(Default)]
struct Tally {
    http: BTreeMap<HttpCount, u32>,
    dns: BTreeMap<DnsCount, u32>,
    grpc: BTreeMap<GrpcCount, u32>,
}

/// One side of an exchange.
#[derive(Clone)]
struct Peer {
    namespace: Option<String>,
    service: String,
    pod: Option<String>,
    /// What clients connect to (ClusterIP or pod IP).
    ip: Ipv4Addr,
    /// Who serves (pod IP; the world's IP).
    backend: Ipv4Addr,
    port: u16,
    kind: Kind,
}

impl Tally {
    fn http(&mut self, src: &PodState, dst: &Peer, method: &str, path: &str, status: u16, n: u32) {
        let key = HttpCount {
            source_namespace: src.namespace.clone(),
            source_pod: src.name.clone(),
            source_ip: src.ip,
            destination_namespace: dst.namespace.clone(),
            destination_service: dst.service.clone(),
            destination_pod: dst.pod.clone(),
            destination_ip: dst.ip,
            backend_ip: dst.backend,
            destination_port: dst.port,
            method: method.to_string(),
            path: path.to_string(),
            status,
            count: 0,
        };
        *self.http.entry(key).or_default() += n;
    }

    fn dns(&mut self, src: &PodState, server: Ipv4Addr, name: &str, rcode: &str, n: u32) {
        let key = DnsCount {
            source_namespace: src.namespace.clone(),
            source_pod: src.name.clone(),
            source_ip: src.ip,
            server_ip: server,
            name: name.to_string(),
            qtype: "A".into(),
            rcode: rcode.to_string(),
            count: 0,
        };
        *self.dns.entry(key).or_default() += n;
    }

    fn grpc(&mut self, src: &PodState, dst: &Peer, method: &str, code: Option<u32>, n: u32) {
        let key = GrpcCount {
            source_namespace: src.namespace.clone(),
            source_pod: src.name.clone(),
            source_ip: src.ip,
            destination_namespace: dst.namespace.clone(),
            destination_service: dst.service.clone(),
            destination_pod: dst.pod.clone(),
            destination_ip: dst.ip,
            backend_ip: dst.backend,
            destination_port: dst.port,
            service: crate::grpc::SERVICE.to_string(),
            method: method.to_string(),
            code,
            count: 0,
        };
        *self.grpc.entry(key).or_default() += n;
    }

    fn finish(self) -> Exchanges {
        Exchanges {
            http: self
                .http
                .into_iter()
                .map(|(k, count)| HttpCount { count, ..k })
                .collect(),
            dns: self
                .dns
                .into_iter()
                .map(|(k, count)| DnsCount { count, ..k })
                .collect(),
            grpc: self
                .grpc
                .into_iter()
                .map(|(k, count)| GrpcCount { count, ..k })
                .collect(),
        }
    }
}

fn service_peer<'a>(
    state: &'a LabState,
    namespace: &str,
    service: &str,
) -> Option<(Peer, &'a PodState)> {
    let pod = state
        .pods
        .iter()
        .find(|p| p.namespace == namespace && p.deployment == service && !p.dns)?;
    Some((
        Peer {
            namespace: Some(namespace.to_string()),
            service: service.to_string(),
            pod: Some(pod.name.clone()),
            ip: pod.service_ip.unwrap_or(pod.ip),
            backend: pod.ip,
            port: state.spec.app_port,
            kind: Kind::Pod(pod.role),
        },
        pod,
    ))
}

fn world_peer(state: &LabState) -> Option<Peer> {
    Some(Peer {
        namespace: None,
        service: state.spec.world.names.first()?.clone(),
        pod: None,
        ip: state.world.ip,
        backend: state.world.ip,
        port: WORLD_PORT,
        kind: Kind::World,
    })
}

/// Follows one request through the rules, tallying every hop; returns its status.
fn simulate(
    state: &LabState,
    tally: &mut Tally,
    src: &PodState,
    (dst, dst_pod): (&Peer, Option<&PodState>),
    method: &str,
    path: &str,
    n: u32,
) -> u16 {
    let (calls, fin) = rules::plan(dst.kind, method, path);
    let mut replies = Vec::new();
    for c in &calls {
        let Some(caller) = dst_pod else { break };
        if !rules::proceeds(fin, &replies) {
            break;
        }
        let next = match c.service {
            Some(svc) => service_peer(state, &caller.namespace, svc).map(|(p, pod)| (p, Some(pod))),
            None => world_peer(state).map(|p| (p, None)),
        };
        let Some((mut peer, pod)) = next else {
            replies.push(Reply::Failed);
            continue;
        };
        let fqdn = match c.service {
            Some(svc) => state.service_fqdn(svc, &caller.namespace),
            None => peer.service.clone(),
        };
        tally.dns(caller, state.dns_server, &fqdn, "NOERROR", n);
        let reply = match &c.request {
            Request::Http { method, path } => Reply::Http(simulate(
                state,
                tally,
                caller,
                (&peer, pod),
                method,
                path,
                n,
            )),
            Request::Grpc { method, quantity } => {
                peer.port = state.spec.grpc_port;
                let (code, _) =
                    rules::answer_grpc(peer.kind, crate::grpc::SERVICE, method, *quantity);
                tally.grpc(caller, &peer, method, Some(code as u32), n);
                Reply::Grpc(code)
            }
        };
        replies.push(reply);
    }
    let status = rules::finish(fin, &replies);
    tally.http(src, dst, method, path, status, n);
    status
}

/// The rcode the cluster DNS gives a type-A query for `name`.
fn expected_rcode(state: &LabState, name: &str) -> &'static str {
    let name = name.trim_end_matches('.');
    if state.dns_records().iter().any(|(n, _)| n == name) {
        "NOERROR"
    } else {
        "NXDOMAIN"
    }
}

/// The exchanges the spec's mix should cause.
pub fn expected(state: &LabState) -> Result<Exchanges, Error> {
    let t = &state.spec.traffic;
    let src = state
        .pod(&t.source)
        .ok_or_else(|| Error::Traffic(format!("no pod for {}", t.source)))?;
    let (target, target_pod) = service_peer(state, &src.namespace, &t.target)
        .ok_or_else(|| Error::Traffic(format!("no pod for service {}", t.target)))?;
    let mut tally = Tally::default();
    for name in &t.lookups {
        tally.dns(src, state.dns_server, name, expected_rcode(state, name), 1);
    }
    let fqdn = state.service_fqdn(&t.target, &src.namespace);
    tally.dns(src, state.dns_server, &fqdn, "NOERROR", t.connections);
    for r in &t.requests {
        if r.count > 0 {
            simulate(
                state,
                &mut tally,
                src,
                (&target, Some(target_pod)),
                &r.method,
                &r.path,
                r.count,
            );
        }
    }
    Ok(tally.finish())
}

/// Runs the generator `rounds` times, `interval` apart (pacing for live views),
/// and sums the reports. Call from inside the source pod's namespace.
pub async fn generate_rounds(
    state: &LabState,
    rounds: u32,
    interval: Duration,
) -> Result<TrafficReport, Error> {
    let started = Instant::now();
    let mut total = generate(state).await?;
    for _ in 1..rounds {
        tokio::time::sleep(interval).await;
        let r = generate(state).await?;
        total.sent.merge(&r.sent);
        total.expected.merge(&r.expected);
        total.rounds += 1;
    }
    total.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(total)
}

/// Runs the generator once. Call from inside the source pod's namespace (any tokio runtime).
pub async fn generate(state: &LabState) -> Result<TrafficReport, Error> {
    let started = Instant::now();
    let t = &state.spec.traffic;
    let src = state
        .pod(&t.source)
        .ok_or_else(|| Error::Traffic(format!("no pod for {}", t.source)))?;
    let (target, _) = service_peer(state, &src.namespace, &t.target)
        .ok_or_else(|| Error::Traffic(format!("no pod for service {}", t.target)))?;
    let dns = SocketAddr::from((state.dns_server, 53));
    let timeout = Duration::from_secs(3);
    let mut tally = Tally::default();

    for name in &t.lookups {
        let a = crate::dns::query(dns, name, RecordType::A, timeout).await?;
        tally.dns(src, state.dns_server, name, &a.rcode, 1);
    }

    let mut order: Vec<(String, String)> = t
        .requests
        .iter()
        .flat_map(|r| std::iter::repeat_n((r.method.clone(), r.path.clone()), r.count as usize))
        .collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(t.seed));

    let fqdn = state.service_fqdn(&t.target, &src.namespace);
    let conns = t.connections as usize;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..conns {
        let a = crate::dns::query(dns, &fqdn, RecordType::A, timeout).await?;
        tally.dns(src, state.dns_server, &fqdn, &a.rcode, 1);
        let ip = a.addrs.first().copied().ok_or_else(|| {
            Error::Traffic(format!("{fqdn} resolved to no address ({})", a.rcode))
        })?;
        let mine: Vec<(String, String)> = order.iter().skip(i).step_by(conns).cloned().collect();
        let addr = SocketAddr::from((ip, target.port));
        let host = fqdn.clone();
        tasks.spawn(async move {
            let mut conn = Connection::open(addr, &host).await?;
            let mut results = Vec::with_capacity(mine.len());
            for (m, p) in mine {
                let body = if m == "POST" {
                    String::from("{\"from\":\"loadgen\"}")
                } else {
                    String::new()
                };
                let status = conn.send(&m, &p, body, false).await?;
                results.push((m, p, status, ip));
            }
            Ok::<_, Error>(results)
        });
    }
    while let Some(res) = tasks.join_next().await {
        let results = res.map_err(|e| Error::Traffic(format!("connection task: {e}")))??;
        for (m, p, status, ip) in results {
            let mut dst = target.clone();
            dst.ip = ip;
            tally.http(src, &dst, &m, &p, status, 1);
        }
    }
    Ok(TrafficReport {
        seed: t.seed,
        source_namespace: src.namespace.clone(),
        source_pod: src.name.clone(),
        source_ip: src.ip,
        target: fqdn,
        connections: t.connections,
        rounds: 1,
        elapsed_ms: started.elapsed().as_millis() as u64,
        sent: tally.finish(),
        expected: expected(state)?,
    })
}
