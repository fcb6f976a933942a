//! The service map: workloads and the connections between them, with
//! request rate, error rate and latency per edge and per node, aggregated in
//! the relay from one follow stream over every node.
//!
//! Nodes of the map are workloads (`namespace/workload`), falling back to the
//! pod, then, outside the cluster, to a DNS name the address is known by
//! (`source_names`/`destination_names`), a reserved identity (`world`,
//! `host`, …) or the address itself. Edges go from client to server, keyed by
//! the server's port and the transport protocol; their label is the L7
//! protocol once one was seen (HTTP, gRPC, DNS), else the transport.
//!
//! Counting. flowd observes an exchange at every pod veth it crosses (the
//! client's and the server's), so each L7 response is counted once: at the
//! server's veth (`FROM_ENDPOINT`) when the server is a pod, else at the
//! client's (`TO_ENDPOINT`). Requests and latency come from the responses
//! (HTTP responses, DNS answers); errors are HTTP 4xx/5xx, gRPC calls that
//! did not end with status OK (a failed call is HTTP 200; one reset without
//! a grpc-status failed too) and DNS NXDOMAIN/SERVFAIL answers; drops count
//! as errors of their edge. Other
//! flows only make the edge exist and count as flows; frames without an IP
//! header (ARP) are left out of the map.
//!
//! Time. Counts go into 5 s buckets by the flow's own timestamp (flows read
//! back from the nodes' buffers land where they belong); an hour is kept. A
//! window sums the buckets it covers; rates divide by the window.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowd_proto::Timestamp;
use flowd_proto::flow::layer4::Protocol;
use flowd_proto::flow::layer7::Record;
use flowd_proto::flow::{Endpoint, Flow, L7FlowType, TraceObservationPoint, Verdict};
use flowd_proto::observer::GetFlowsRequest;
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::observer_server::Observer as _;
use futures::StreamExt as _;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tonic::Request;

use crate::pool::PeerState;
use crate::server::Relay;

/// Width of a bucket, seconds.
const BUCKET_SECS: i64 = 5;
/// How much history is kept (the longest window).
const KEEP_SECS: i64 = 3600;
/// The "live" window.
const LIVE_SECS: i64 = 30;
/// Latency histogram resolution: bins per doubling (about 9 % wide).
const BINS_PER_OCTAVE: f64 = 8.0;
/// Pause before the map's stream is opened again after it ended.
const RETRY: Duration = Duration::from_secs(1);

/// A window of the map (`window=` in the query).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Length in seconds.
    pub window_secs: i64,
    /// Name as given (`live`, `5m`, `15m`, `60m`).
    pub window: String,
    /// Only edges with an end in this namespace (and their nodes).
    pub namespace: Option<String>,
}

impl Query {
    /// Parses `window=…&namespace=…`; anything else is refused.
    pub fn parse(q: &str) -> Result<Self, String> {
        let mut out = Query {
            window_secs: LIVE_SECS,
            window: "live".into(),
            namespace: None,
        };
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            match &*k {
                "window" => {
                    out.window_secs = match &*v {
                        "live" => LIVE_SECS,
                        "5m" => 300,
                        "15m" => 900,
                        "60m" => 3600,
                        other => {
                            return Err(format!(
                                "invalid window {other:?} (expected live, 5m, 15m or 60m)"
                            ));
                        }
                    };
                    out.window = v.into_owned();
                }
                "namespace" => out.namespace = Some(v.into_owned()).filter(|s| !s.is_empty()),
                other => {
                    return Err(format!(
                        "unknown parameter {other:?} (expected window, namespace)"
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// A map node's identity and how it is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeInfo {
    label: String,
    /// Namespace, or "" outside the cluster.
    namespace: String,
    /// workload, pod, dns, reserved, ip.
    kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct EdgeKey {
    src: Arc<str>,
    dst: Arc<str>,
    /// Transport: TCP, UDP, ICMP, SCTP, other.
    transport: &'static str,
    /// The server's port (0 for ICMP).
    port: u16,
}

/// Counts of one bucket (or a sum of buckets).
#[derive(Clone, Debug, Default)]
struct Counts {
    flows: u64,
    requests: u64,
    errors: u64,
    drops: u64,
    /// Latency histogram: (bin, count), sorted by bin.
    latency: Vec<(u16, u32)>,
}

impl Counts {
    fn add_latency(&mut self, ns: u64) {
        let bin = latency_bin(ns);
        match self.latency.binary_search_by_key(&bin, |(b, _)| *b) {
            Ok(i) => self.latency[i].1 += 1,
            Err(i) => self.latency.insert(i, (bin, 1)),
        }
    }

    fn merge(&mut self, o: &Counts) {
        self.flows += o.flows;
        self.requests += o.requests;
        self.errors += o.errors;
        self.drops += o.drops;
        for &(b, n) in &o.latency {
            match self.latency.binary_search_by_key(&b, |(x, _)| *x) {
                Ok(i) => self.latency[i].1 += n,
                Err(i) => self.latency.insert(i, (b, n)),
            }
        }
    }

    /// The latency below which `q` of the samples fall, in milliseconds.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().map(|(_, n)| u64::from(*n)).sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for &(b, n) in &self.latency {
            seen += u64::from(n);
            if seen >= rank {
                return Some(bin_upper_ns(b) / 1e6);
            }
        }
        None
    }

    fn to_json(&self, window_secs: i64) -> Value {
        let secs = window_secs.max(1) as f64;
        // Errors over what could fail: answered requests and dropped packets.
        let attempts = self.requests + self.drops;
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        json!({
            "flows": self.flows,
            "requests": self.requests,
            "errors": self.errors + self.drops,
            "drops": self.drops,
            "flow_rate": round(self.flows as f64 / secs),
            "request_rate": round(self.requests as f64 / secs),
            "error_rate": if attempts == 0 { 0.0 } else { (self.errors + self.drops) as f64 / attempts as f64 },
            "p50_ms": self.quantile_ms(0.50).map(round),
            "p95_ms": self.quantile_ms(0.95).map(round),
        })
    }
}

fn latency_bin(ns: u64) -> u16 {
    let ns = ns.max(1) as f64;
    (ns.log2() * BINS_PER_OCTAVE)
        .floor()
        .clamp(0.0, f64::from(u16::MAX)) as u16
}

fn bin_upper_ns(bin: u16) -> f64 {
    2f64.powf((f64::from(bin) + 1.0) / BINS_PER_OCTAVE)
}

#[derive(Default)]
struct EdgeData {
    /// L7 protocol once seen (HTTP, DNS).
    l7: Option<&'static str>,
    /// (bucket start, counts), oldest first.
    buckets: VecDeque<(i64, Counts)>,
}

impl EdgeData {
    fn bucket(&mut self, t: i64) -> &mut Counts {
        let start = t - t.rem_euclid(BUCKET_SECS);
        // Flows arrive in time order across nodes (the relay merges them),
        // so the bucket is nearly always the last one.
        let pos = self.buckets.iter().rposition(|(s, _)| *s <= start);
        let idx = match pos {
            Some(i) if self.buckets[i].0 == start => i,
            Some(i) => {
                self.buckets.insert(i + 1, (start, Counts::default()));
                i + 1
            }
            None => {
                self.buckets.push_front((start, Counts::default()));
                0
            }
        };
        &mut self.buckets[idx].1
    }
}

/// Everything the aggregation holds.
#[derive(Default)]
struct Agg {
    nodes: HashMap<Arc<str>, NodeInfo>,
    edges: HashMap<EdgeKey, EdgeData>,
    /// Flows received by the map's stream (all of them).
    flows_total: u64,
    /// Events lost, by source (LostEvent.source name), since the relay started.
    lost: BTreeMap<String, u64>,
    /// (when, flows_total) samples for the flows-per-second figure.
    rate_samples: VecDeque<(Instant, u64)>,
    /// When the stream last (re)started.
    since: Option<SystemTime>,
}

/// Waits, before the map's first stream, until the nodes known so far have
/// all had their first connection attempt (at least one node known), or a
/// first attempt's time (dial timeout + RPC timeout) has passed. A node
/// that joins a follow stream later gets only what it saw since the stream
/// started (the relay's rule for every client), so a stream opened before
/// the nodes are connected would leave the 15 and 60 min windows without
/// the history in the nodes' buffers.
async fn settle(relay: &Relay) {
    let pool = relay.pool();
    let mut changed = pool.subscribe();
    let cfg = relay.config();
    let deadline = tokio::time::sleep(cfg.connect_timeout + cfg.node_rpc_timeout);
    tokio::pin!(deadline);
    let closed = relay.closed();
    tokio::pin!(closed);
    loop {
        let nodes = pool.snapshot();
        if !nodes.is_empty() && nodes.iter().all(|n| n.state != PeerState::Connecting) {
            return;
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = &mut deadline => return,
            _ = &mut closed => return,
        }
    }
}

/// The aggregated map, shared by the UI's handlers.
pub struct ServiceMap {
    agg: Mutex<Agg>,
}

impl ServiceMap {
    /// Opens the follow stream over `relay` (from an hour back, so the
    /// longer windows start filled from the nodes' buffers) and aggregates
    /// it until the relay shuts down.
    pub fn start(relay: Relay) -> Arc<Self> {
        let map = Arc::new(ServiceMap {
            agg: Mutex::new(Agg::default()),
        });
        let m = map.clone();
        tokio::spawn(async move { m.run(relay).await });
        map
    }

    /// A map fed by hand (tests, benchmarks).
    pub fn empty() -> Self {
        ServiceMap {
            agg: Mutex::new(Agg::default()),
        }
    }

    async fn run(&self, relay: Relay) {
        settle(&relay).await;
        // Where to resume after the stream ended: just after the last flow.
        let mut resume: Option<Timestamp> = None;
        loop {
            let since = resume.unwrap_or_else(|| {
                Timestamp::from(SystemTime::now() - Duration::from_secs(KEEP_SECS as u64))
            });
            let req = GetFlowsRequest {
                follow: true,
                since: Some(since),
                ..Default::default()
            };
            self.agg.lock().since = Some(SystemTime::now());
            match relay.get_flows(Request::new(req)).await {
                Ok(r) => {
                    let mut stream = r.into_inner();
                    while let Some(msg) = stream.next().await {
                        match msg {
                            Ok(resp) => {
                                if let Some(t) = self.take(resp) {
                                    resume = Some(t);
                                }
                            }
                            Err(s) => {
                                tracing::debug!(status = %s, "the service map's flow stream ended");
                                break;
                            }
                        }
                    }
                }
                Err(s) if s.code() == tonic::Code::Unavailable && relay.is_closing() => return,
                Err(s) => {
                    tracing::warn!(status = %s, "the service map cannot open its flow stream")
                }
            }
            if relay.is_closing() {
                return;
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Takes one response; returns the flow's time (to resume after it).
    fn take(&self, resp: flowd_proto::observer::GetFlowsResponse) -> Option<Timestamp> {
        match resp.response_types? {
            ResponseTypes::Flow(f) => {
                let t = f.time.or(resp.time);
                self.add(&f);
                t.map(|t| {
                    Timestamp::from_unix_nanos(u64::try_from(t.as_unix_nanos() + 1).unwrap_or(0))
                })
            }
            ResponseTypes::LostEvents(l) => {
                let src = flowd_proto::flow::LostEventSource::try_from(l.source)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_else(|_| l.source.to_string());
                *self.agg.lock().lost.entry(src).or_default() += l.num_events_lost;
                None
            }
            _ => None,
        }
    }

    /// Adds one flow to the map.
    pub fn add(&self, f: &Flow) {
        // Frames without an IP header (ARP, other L2) connect no workloads.
        if f.ip.is_none() {
            self.agg.lock().flows_total += 1;
            return;
        }
        let t = f
            .time
            .map(|t| (t.as_unix_nanos() / 1_000_000_000) as i64)
            .unwrap_or_else(now_secs);
        let (transport, sport, dport, syn) = l4(f);
        let l7 = f.l7.as_ref();
        let response = l7.is_some_and(|l| l.r#type == L7FlowType::Response as i32);
        // Which side is the server: responses come from it; other flows go
        // to it unless they are replies (TCP's reply flag, else the lower
        // port serves).
        let reversed = if l7.is_some() {
            response
        } else {
            match f.is_reply.as_ref() {
                Some(r) => r.value,
                None => sport != 0 && dport != 0 && sport < dport && !syn,
            }
        };
        let src = endpoint_node(f.source.as_ref(), ip(f, true), &f.source_names);
        let dst = endpoint_node(f.destination.as_ref(), ip(f, false), &f.destination_names);
        let ((client, cinfo), (server, sinfo), port) = if reversed {
            (dst, src, sport)
        } else {
            (src, dst, dport)
        };
        let point = f.trace_observation_point;
        let server_is_pod = if reversed {
            f.source.as_ref()
        } else {
            f.destination.as_ref()
        }
        .is_some_and(|e| !e.pod_name.is_empty());
        // The one sighting of a response that counts (see the module docs).
        let counted_response = response
            && if server_is_pod {
                point == TraceObservationPoint::FromEndpoint as i32
            } else {
                point == TraceObservationPoint::ToEndpoint as i32
            };
        let drop = f.verdict == Verdict::Dropped as i32;

        let mut agg = self.agg.lock();
        agg.flows_total += 1;
        let client = intern(&mut agg, client, cinfo);
        let server = intern(&mut agg, server, sinfo);
        let key = EdgeKey {
            src: client,
            dst: server,
            transport,
            port,
        };
        let edge = agg.edges.entry(key).or_default();
        if let Some(l) = l7 {
            edge.l7 = match &l.record {
                Some(Record::Http(h)) if h.grpc.is_some() => Some("gRPC"),
                Some(Record::Http(_)) => Some("HTTP"),
                Some(Record::Dns(_)) => Some("DNS"),
                _ => edge.l7,
            };
        }
        let b = edge.bucket(t);
        b.flows += 1;
        if drop {
            b.drops += 1;
        }
        if counted_response && let Some(l) = l7 {
            b.requests += 1;
            let failed = match &l.record {
                Some(Record::Http(h)) => match &h.grpc {
                    Some(call) => call.status_code != Some(0),
                    None => h.code >= 400,
                },
                // NXDOMAIN (3), SERVFAIL (2).
                Some(Record::Dns(d)) => d.rcode == 3 || d.rcode == 2,
                _ => false,
            };
            if failed {
                b.errors += 1;
            }
            if l.latency_ns > 0 {
                b.add_latency(l.latency_ns);
            }
        }
    }

    /// The map over `q`'s window, as JSON for the browser.
    pub fn snapshot(&self, q: &Query) -> Value {
        let now = now_secs();
        let from = now - q.window_secs;
        let mut agg = self.agg.lock();
        prune(&mut agg, now);
        let mut node_in: BTreeMap<Arc<str>, Counts> = BTreeMap::new();
        let mut node_out: BTreeMap<Arc<str>, Counts> = BTreeMap::new();
        let mut edges = Vec::new();
        let mut keys: Vec<&EdgeKey> = agg.edges.keys().collect();
        keys.sort();
        for k in keys {
            let e = &agg.edges[k];
            let in_ns = |id: &Arc<str>| {
                q.namespace
                    .as_ref()
                    .is_none_or(|ns| agg.nodes.get(id).is_some_and(|n| &n.namespace == ns))
            };
            if !in_ns(&k.src) && !in_ns(&k.dst) {
                continue;
            }
            let c = window_sum(e, from);
            let Some(c) = c else { continue };
            node_in.entry(k.dst.clone()).or_default().merge(&c);
            node_out.entry(k.src.clone()).or_default().merge(&c);
            node_in.entry(k.src.clone()).or_default();
            node_out.entry(k.dst.clone()).or_default();
            edges.push(json!({
                "id": format!("{}|{}|{}|{}", k.src, k.dst, k.transport, k.port),
                "source": &*k.src,
                "target": &*k.dst,
                "protocol": e.l7.unwrap_or(k.transport),
                "transport": k.transport,
                "port": k.port,
                "stats": c.to_json(q.window_secs),
            }));
        }
        let nodes: Vec<Value> = node_in
            .iter()
            .map(|(id, served)| {
                let info = agg.nodes.get(id);
                let out = node_out.get(id).cloned().unwrap_or_default();
                json!({
                    "id": &**id,
                    "label": info.map(|i| i.label.as_str()).unwrap_or(id),
                    "namespace": info.map(|i| i.namespace.as_str()).unwrap_or(""),
                    "kind": info.map(|i| i.kind).unwrap_or("ip"),
                    "stats": served.to_json(q.window_secs),
                    "outgoing": out.to_json(q.window_secs),
                })
            })
            .collect();
        let mut namespaces: Vec<&str> = agg
            .nodes
            .values()
            .map(|n| n.namespace.as_str())
            .filter(|n| !n.is_empty())
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        json!({
            "window": q.window,
            "window_secs": q.window_secs,
            "namespace": q.namespace,
            "namespaces": namespaces,
            "generated_at": Timestamp::now(),
            "nodes": nodes,
            "edges": edges,
        })
    }

    /// Flows per second over the last few seconds, flows and lost events
    /// since the relay started.
    pub fn counters(&self) -> (f64, u64, BTreeMap<String, u64>) {
        let mut agg = self.agg.lock();
        let now = Instant::now();
        let total = agg.flows_total;
        agg.rate_samples.push_back((now, total));
        while agg
            .rate_samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(10))
        {
            agg.rate_samples.pop_front();
        }
        let rate = match agg.rate_samples.front() {
            Some((t, n)) if now.duration_since(*t) >= Duration::from_millis(500) => {
                (total - n) as f64 / now.duration_since(*t).as_secs_f64()
            }
            _ => 0.0,
        };
        (rate, total, agg.lost.clone())
    }
}

fn window_sum(e: &EdgeData, from: i64) -> Option<Counts> {
    let mut c = Counts::default();
    let mut any = false;
    for (start, b) in e.buckets.iter().rev() {
        // A bucket counts if it overlaps the window.
        if start + BUCKET_SECS <= from {
            break;
        }
        c.merge(b);
        any = true;
    }
    any.then_some(c)
}

fn prune(agg: &mut Agg, now: i64) {
    let oldest = now - KEEP_SECS - BUCKET_SECS;
    agg.edges.retain(|_, e| {
        while e.buckets.front().is_some_and(|(s, _)| *s < oldest) {
            e.buckets.pop_front();
        }
        !e.buckets.is_empty()
    });
    if agg.nodes.len() > 2 * agg.edges.len() + 64 {
        let used: std::collections::HashSet<Arc<str>> = agg
            .edges
            .keys()
            .flat_map(|k| [k.src.clone(), k.dst.clone()])
            .collect();
        agg.nodes.retain(|id, _| used.contains(id));
    }
}

fn intern(agg: &mut Agg, id: String, info: NodeInfo) -> Arc<str> {
    if let Some((k, v)) = agg.nodes.get_key_value(id.as_str()) {
        let k = k.clone();
        if *v != info {
            agg.nodes.insert(k.clone(), info);
        }
        return k;
    }
    let k: Arc<str> = Arc::from(id);
    agg.nodes.insert(k.clone(), info);
    k
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn ip(f: &Flow, source: bool) -> &str {
    f.ip.as_ref()
        .map(|i| if source { &i.source } else { &i.destination })
        .map_or("", String::as_str)
}

/// (transport, source port, destination port, TCP SYN without ACK).
fn l4(f: &Flow) -> (&'static str, u16, u16, bool) {
    let port = |p: u32| u16::try_from(p).unwrap_or(0);
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => {
            let syn = t.flags.as_ref().is_some_and(|f| f.syn && !f.ack);
            ("TCP", port(t.source_port), port(t.destination_port), syn)
        }
        Some(Protocol::Udp(u)) => ("UDP", port(u.source_port), port(u.destination_port), false),
        Some(Protocol::Sctp(s)) => ("SCTP", port(s.source_port), port(s.destination_port), false),
        Some(Protocol::IcmPv4(_)) | Some(Protocol::IcmPv6(_)) => ("ICMP", 0, 0, false),
        _ => ("other", 0, 0, false),
    }
}

/// The map node an endpoint belongs to: (id, info).
fn endpoint_node(ep: Option<&Endpoint>, ip: &str, names: &[String]) -> (String, NodeInfo) {
    if let Some(e) = ep.filter(|e| !e.namespace.is_empty()) {
        let ns = e.namespace.clone();
        if let Some(w) = e.workloads.iter().find(|w| !w.name.is_empty()) {
            return (
                format!("{ns}/{}", w.name),
                NodeInfo {
                    label: w.name.clone(),
                    namespace: ns,
                    kind: "workload",
                },
            );
        }
        if !e.pod_name.is_empty() {
            return (
                format!("{ns}/{}", e.pod_name),
                NodeInfo {
                    label: e.pod_name.clone(),
                    namespace: ns,
                    kind: "pod",
                },
            );
        }
    }
    if let Some(n) = names.first() {
        let n = n.trim_end_matches('.');
        return (
            format!("dns:{n}"),
            NodeInfo {
                label: n.to_string(),
                namespace: String::new(),
                kind: "dns",
            },
        );
    }
    if let Some(r) = ep.and_then(|e| e.labels.iter().find_map(|l| l.strip_prefix("reserved:"))) {
        return (
            format!("reserved:{r}"),
            NodeInfo {
                label: r.to_string(),
                namespace: String::new(),
                kind: "reserved",
            },
        );
    }
    let label = if ip.is_empty() { "unknown" } else { ip };
    (
        format!("ip:{label}"),
        NodeInfo {
            label: label.to_string(),
            namespace: String::new(),
            kind: "ip",
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_bins_round_trip_within_a_bin() {
        for ns in [1_000u64, 250_000, 3_000_000, 1_000_000_000] {
            let up = bin_upper_ns(latency_bin(ns));
            assert!(up >= ns as f64 && up < ns as f64 * 1.1, "{ns} -> {up}");
        }
    }

    #[test]
    fn windows_parse_and_refuse() {
        assert_eq!(
            Query::parse("window=5m&namespace=shop")
                .unwrap()
                .window_secs,
            300
        );
        assert!(Query::parse("window=2h").unwrap_err().contains("2h"));
        assert!(Query::parse("x=1").unwrap_err().contains("\"x\""));
    }
}
