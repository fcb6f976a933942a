//! Stock Hubble clients against flowd and the relay, on the lab cluster's
//! real traffic (root): every request is shaped exactly as the Hubble CLI
//! v1.19 sends it ([`flowd_tests::hubble_cli`]), answers are checked with
//! exact counts and exact strings.
//!
//! - `hubble status`: gRPC health (`hubble.server.Observer`, `""`), then
//!   ServerStatus; `hubble list nodes` / `list namespaces`.
//! - `hubble observe` with the CLI's default field mask (compact, dict and
//!   table modes), `--last`, `--all`, `--follow`, `-o json`; the masked flows
//!   carry exactly the mask's fields of the flows the nodes hold.
//! - `Summary`, Hubble's SUMMARY column, for every flow type flowd produces:
//!   HTTP requests/responses and DNS queries/answers of the traffic mix
//!   (derived from the generator's report), and a probe with exact results:
//!   a UDP datagram and a TCP SYN from frontend to closed ports of
//!   order-service (both pods on node-a) give `UDP`, `TCP Flags: SYN`,
//!   `TCP Flags: ACK, RST`, `ICMPv4 DestinationUnreachable(Port)` at both
//!   veths and one kernel drop each (`UDP`, `TCP`).
//! - `-t trace:from-endpoint` / `-t trace:to-endpoint` (event sub type =
//!   observation point), in Hubble's request shape and with flowd's `observe`.
//! - `--all-namespaces` (`source_pod` / `destination_pod` `/`).
//! - An invalid request is refused with INVALID_ARGUMENT by flowd and by the
//!   relay (which answers with the nodes' message), never an empty stream.
//! - Health is real: NOT_SERVING while flowd shuts down and until its first
//!   pod list is attached; the relay's NOT_SERVING while every node is down.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use flowd_lab::TrafficReport;
use flowd_lab::cluster::{Cluster, ClusterOptions, Connector, in_netns};
use flowd_proto::flow::layer4::Protocol;
use flowd_proto::flow::layer7::Record;
use flowd_proto::flow::{Endpoint, Flow, L7FlowType, TcpFlags, TraceObservationPoint, Verdict};
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::{GetFlowsRequest, GetFlowsResponse};
use flowd_proto::pbjson_types::FieldMask;
use flowd_proto::relay::NodeState;
use flowd_tests::hubble_cli::{self, Observe, Output};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Relay settings: a short drain timeout (live flows wait at most this long
/// for a silent node) and quick reconnection and probing.
const RELAY_ARGS: &[&str] = &[
    "--sort-buffer-drain-timeout",
    "300ms",
    "--retry-initial",
    "200ms",
    "--retry-max",
    "1s",
    "--health-check-interval",
    "1s",
];

/// Probe ports: below the ephemeral range, so no other flow uses them.
const UDP_PROBE_PORT: u16 = 31001;
const TCP_PROBE_PORT: u16 = 31002;
/// Closed ports of order-service.
const UDP_CLOSED: u16 = 9;
const TCP_CLOSED: u16 = 9998;

fn require_root() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "hubble_compat needs root (network namespaces, eBPF)"
    );
    Ok(())
}

fn cluster() -> Result<Cluster> {
    Cluster::start(ClusterOptions {
        relay: true,
        relay_args: RELAY_ARGS.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

/// A channel as the harness connects: mTLS to the nodes, plain text to the
/// relay.
async fn channel(conn: Connector) -> Result<tonic::transport::Channel> {
    conn.channel_with_timeout(Duration::from_secs(20)).await
}

/// `Health/Check` of `service` at `addr`: the status, or the gRPC error code.
fn health(c: &Cluster, addr: SocketAddr, service: &str) -> Result<Result<ServingStatus, Code>> {
    let service = service.to_string();
    let conn = c.connector(addr);
    c.in_router(move || async move {
        let mut h = HealthClient::new(channel(conn).await?);
        Ok(match h.check(HealthCheckRequest { service }).await {
            Ok(r) => Ok(
                ServingStatus::try_from(r.into_inner().status).unwrap_or(ServingStatus::Unknown)
            ),
            Err(s) => Err(s.code()),
        })
    })?
}

/// What `hubble status` sees first: the health of the service it checks and
/// of the overall status.
fn status_of(c: &Cluster, addr: SocketAddr) -> Result<[Result<ServingStatus, Code>; 2]> {
    Ok([
        health(c, addr, hubble_cli::HEALTH_SERVICE)?,
        health(c, addr, "")?,
    ])
}

const SERVING: [Result<ServingStatus, Code>; 2] = [Ok(ServingStatus::Serving); 2];
const NOT_SERVING: [Result<ServingStatus, Code>; 2] = [Ok(ServingStatus::NotServing); 2];

/// Every response of a non-follow GetFlows, or the call's error.
fn get_flows(
    c: &Cluster,
    addr: SocketAddr,
    req: GetFlowsRequest,
) -> Result<Result<Vec<GetFlowsResponse>, tonic::Status>> {
    let conn = c.connector(addr);
    c.in_router(move || async move {
        let mut cl = ObserverClient::new(channel(conn).await?);
        let mut s = match cl.get_flows(req).await {
            Ok(s) => s.into_inner(),
            Err(e) => return Ok(Err(e)),
        };
        let mut out = Vec::new();
        loop {
            match s.message().await {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return Ok(Ok(out)),
                Err(e) => return Ok(Err(e)),
            }
        }
    })?
}

fn flows_of(rs: Vec<GetFlowsResponse>) -> Vec<Flow> {
    rs.into_iter()
        .filter_map(|r| match r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(f),
            _ => None,
        })
        .collect()
}

/// The flows of a request the server must accept.
fn flows(c: &Cluster, addr: SocketAddr, req: &GetFlowsRequest) -> Result<Vec<Flow>> {
    match get_flows(c, addr, req.clone())? {
        Ok(rs) => Ok(flows_of(rs)),
        Err(e) => bail!("GetFlows at {addr} refused {req:?}: {e}"),
    }
}

/// A flow as the CLI's default field mask leaves it, written out by hand
/// from the mask's paths (time, verdict, ethernet, IP, l4, source/destination
/// identity+namespace+pod_name, Type, node_name, l7, event_type,
/// source/destination_service, is_reply, Summary, ip_trace_id).
#[allow(deprecated)] // Summary: deprecated by Hubble, shown by its printers.
fn default_masked(f: &Flow) -> Flow {
    let ep = |e: &Option<Endpoint>| {
        e.as_ref().map(|e| Endpoint {
            identity: e.identity,
            namespace: e.namespace.clone(),
            pod_name: e.pod_name.clone(),
            ..Default::default()
        })
    };
    Flow {
        time: f.time,
        verdict: f.verdict,
        ethernet: f.ethernet.clone(),
        ip: f.ip.clone(),
        l4: f.l4.clone(),
        source: ep(&f.source),
        destination: ep(&f.destination),
        r#type: f.r#type,
        node_name: f.node_name.clone(),
        l7: f.l7.clone(),
        event_type: f.event_type,
        source_service: f.source_service.clone(),
        destination_service: f.destination_service.clone(),
        is_reply: f.is_reply,
        summary: f.summary.clone(),
        ip_trace_id: f.ip_trace_id,
        ..Default::default()
    }
}

#[allow(deprecated)]
fn summary(f: &Flow) -> &str {
    &f.summary
}

/// Hubble's `TCP Flags: …` (threefour's getTCPFlags order), written
/// independently of flowd's formatter.
fn tcp_summary(fl: &TcpFlags) -> String {
    let set: Vec<&str> = [
        (fl.syn, "SYN"),
        (fl.ack, "ACK"),
        (fl.rst, "RST"),
        (fl.fin, "FIN"),
        (fl.psh, "PSH"),
        (fl.urg, "URG"),
        (fl.ece, "ECE"),
        (fl.cwr, "CWR"),
        (fl.ns, "NS"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect();
    format!("TCP Flags: {}", set.join(", "))
}

/// The summary Hubble's agent would give an L3/L4 flow of the lab (TCP,
/// UDP, the probe's ICMP error); None for anything else.
fn l34_summary(f: &Flow) -> Option<String> {
    let dropped = f.verdict == Verdict::Dropped as i32;
    Some(match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        // A kernel drop record keeps no TCP flags.
        Some(Protocol::Tcp(_)) if dropped => "TCP".into(),
        Some(Protocol::Tcp(t)) => tcp_summary(t.flags.as_ref()?),
        Some(Protocol::Udp(_)) => "UDP".into(),
        Some(Protocol::IcmPv4(i)) if (i.r#type, i.code) == (3, 3) => {
            "ICMPv4 DestinationUnreachable(Port)".into()
        }
        None if f.ip.is_none() => "Ethernet".into(),
        _ => return None,
    })
}

fn is_l7(f: &Flow) -> bool {
    f.l7.as_ref().is_some_and(|l| l.record.is_some())
}

fn event(f: &Flow) -> (i32, i32) {
    f.event_type.map_or((0, 0), |e| (e.r#type, e.sub_type))
}

fn has_pod(e: &Option<Endpoint>) -> bool {
    e.as_ref()
        .is_some_and(|e| !e.namespace.is_empty() || !e.pod_name.is_empty())
}

/// The HTTP (gRPC calls as HTTP/2) and DNS summaries the traffic mix must
/// give, each as many times as it is seen: at the client's veth and, inside
/// the cluster, the server's. A response's latency is written `<ms>`.
fn expected_l7(c: &Cluster, report: &TrafficReport) -> Result<BTreeMap<String, u32>> {
    let state = c.lab().state();
    let mut want = BTreeMap::new();
    // HTTP/1.1 names the host as the client's Host header does (no port);
    // a gRPC call's :authority carries the port.
    let http = report
        .expected
        .http
        .iter()
        .map(|h| ("HTTP/1.1", h.clone(), false));
    let grpc = report
        .expected
        .grpc
        .iter()
        .map(|g| ("HTTP/2", g.as_http(), true));
    for (protocol, h, with_port) in http.chain(grpc) {
        let (host, sightings) = match &h.destination_namespace {
            Some(ns) => (state.service_fqdn(&h.destination_service, ns), 2),
            None => (h.destination_service.clone(), 1),
        };
        let url = if with_port {
            format!("http://{host}:{}{}", h.destination_port, h.path)
        } else {
            format!("http://{host}{}", h.path)
        };
        *want
            .entry(format!("{protocol} {} {url}", h.method))
            .or_default() += h.count * sightings;
        *want
            .entry(format!("{protocol} {} <ms> ({} {url})", h.status, h.method))
            .or_default() += h.count * sightings;
    }
    let records = state.dns_records();
    for d in &report.expected.dns {
        let name = format!("{}.", d.name);
        *want
            .entry(format!("DNS Query {name} {}", d.qtype))
            .or_default() += d.count * 2;
        let answer = match d.rcode.as_str() {
            "NOERROR" => {
                let ip = records
                    .iter()
                    .find(|(n, _)| *n == d.name)
                    .map(|(_, ip)| *ip)
                    .with_context(|| format!("no DNS record for {}", d.name))?;
                format!("\"{ip}\"")
            }
            "NXDOMAIN" => "RCode: Non-Existent Domain".to_string(),
            other => bail!("the mix has an rcode {other} this test does not know"),
        };
        // Names the lab's DNS knows carry its TTL; an NXDOMAIN has none.
        let ttl = if d.rcode == "NOERROR" {
            flowd_lab::lab::DNS_TTL_SECS
        } else {
            0
        };
        *want
            .entry(format!(
                "DNS Answer {answer} TTL: {ttl} (Query {name} {})",
                d.qtype
            ))
            .or_default() += d.count * 2;
    }
    Ok(want)
}

/// The summary of an L7 flow with a response's latency written `<ms>`,
/// after checking that it is the flow's own latency in whole milliseconds.
fn l7_key(f: &Flow) -> Result<String> {
    let s = summary(f).to_string();
    let Some(l7) = &f.l7 else {
        bail!("not an L7 flow: {f:?}")
    };
    if l7.r#type == L7FlowType::Response as i32
        && let Some(Record::Http(h)) = &l7.record
    {
        let ms = format!(" {} {}ms ", h.code, l7.latency_ns / 1_000_000);
        ensure!(s.contains(&ms), "{s:?} lacks its latency {ms:?}");
        return Ok(s.replacen(&ms, &format!(" {} <ms> ", h.code), 1));
    }
    Ok(s)
}

fn count<K: Ord>(items: impl IntoIterator<Item = K>) -> BTreeMap<K, u32> {
    let mut m = BTreeMap::new();
    for k in items {
        *m.entry(k).or_default() += 1;
    }
    m
}

/// A node status notice: its state and node names.
type NodeStatusSeen = (i32, Vec<String>);

/// A follow stream on a thread in the router namespace.
struct Follow {
    rx: mpsc::Receiver<Result<GetFlowsResponse, String>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Follow {
    fn start(c: &Cluster, addr: SocketAddr, req: GetFlowsRequest) -> Follow {
        let ns = c.lab().router_netns().to_string();
        let conn = c.connector(addr);
        let (tx, rx) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let err = tx.clone();
            let res = in_netns(&ns, move || async move {
                let run = async {
                    let mut cl = ObserverClient::new(channel(conn).await?);
                    let mut s = cl.get_flows(req).await?.into_inner();
                    while let Some(r) = s.message().await? {
                        if tx.send(Ok(r)).is_err() {
                            break;
                        }
                    }
                    anyhow::Ok(())
                };
                tokio::select! {
                    r = run => r.map_err(|e| format!("{e:#}")),
                    _ = stop_rx => Ok(()),
                }
            });
            if let Err(e) = res.map_err(|e| format!("{e:#}")).and_then(|r| r) {
                let _ = err.send(Err(e));
            }
        });
        Follow {
            rx,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Reads until `done` holds over the flows read (bounded), then until
    /// nothing has come for `quiet`.
    fn collect(
        &self,
        what: &str,
        timeout: Duration,
        quiet: Duration,
        done: impl Fn(&[Flow]) -> bool,
    ) -> Result<(Vec<Flow>, Vec<NodeStatusSeen>)> {
        let deadline = Instant::now() + timeout;
        let mut flows = Vec::new();
        let mut status = Vec::new();
        let mut settled = false;
        loop {
            let wait = if settled {
                quiet
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                ensure!(!left.is_zero(), "timed out waiting for {what}: {flows:#?}");
                left
            };
            match self.rx.recv_timeout(wait) {
                Ok(Ok(r)) => match r.response_types {
                    Some(ResponseTypes::Flow(f)) => flows.push(f),
                    Some(ResponseTypes::NodeStatus(s)) => {
                        status.push((s.state_change, s.node_names))
                    }
                    _ => {}
                },
                Ok(Err(e)) => bail!("follow stream failed: {e}"),
                Err(mpsc::RecvTimeoutError::Timeout) if settled => return Ok((flows, status)),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("follow stream ended"),
            }
            if !settled && done(&flows) {
                settled = true;
            }
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The probe: one UDP datagram and one TCP connection attempt from
/// frontend to closed ports of order-service (both on node-a).
fn probe(c: &Cluster) -> Result<()> {
    let order = c
        .lab()
        .pod_ip("ecommerce/order-service")
        .context("order-service in the lab")?;
    let refused = c
        .lab()
        .run_in_pod("ecommerce/frontend", move || async move {
            let lab_err = |e: std::io::Error| flowd_lab::Error::Lab(format!("probe: {e}"));
            let udp = tokio::net::UdpSocket::bind(("0.0.0.0", UDP_PROBE_PORT))
                .await
                .map_err(lab_err)?;
            udp.send_to(b"probe", (order, UDP_CLOSED))
                .await
                .map_err(lab_err)?;
            let tcp = tokio::net::TcpSocket::new_v4().map_err(lab_err)?;
            tcp.bind(SocketAddr::from(([0, 0, 0, 0], TCP_PROBE_PORT)))
                .map_err(lab_err)?;
            let r = tcp.connect(SocketAddr::from((order, TCP_CLOSED))).await;
            Ok(r.err().map(|e| e.kind()))
        })?;
    ensure!(
        refused == Some(std::io::ErrorKind::ConnectionRefused),
        "the TCP probe must be refused: {refused:?}"
    );
    Ok(())
}

/// A flow with no pod on either side (ARP makes none): a datagram from the
/// frontend's veth with an address that is no pod's (TEST-NET-1, added to
/// the pod's eth0 for the send) to the world.
fn stray(c: &Cluster) -> Result<()> {
    const STRAY: &str = "192.0.2.77";
    let ip = |args: &[&str]| -> Result<()> {
        let out = c
            .lab()
            .command_in_pod("ecommerce/frontend", "ip")?
            .args(args)
            .output()?;
        ensure!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    ip(&["addr", "add", &format!("{STRAY}/32"), "dev", "eth0"])?;
    let world = c.lab().world_ip();
    let sent = c
        .lab()
        .run_in_pod("ecommerce/frontend", move || async move {
            let lab_err = |e: std::io::Error| flowd_lab::Error::Lab(format!("stray: {e}"));
            let udp = tokio::net::UdpSocket::bind((STRAY, 0))
                .await
                .map_err(lab_err)?;
            udp.send_to(b"stray", (world, 9)).await.map_err(lab_err)?;
            Ok(())
        });
    ip(&["addr", "del", &format!("{STRAY}/32"), "dev", "eth0"])?;
    sent?;
    Ok(())
}

fn is_probe(f: &Flow) -> bool {
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Udp(u)) => {
            [u.source_port, u.destination_port].contains(&u32::from(UDP_PROBE_PORT))
        }
        Some(Protocol::Tcp(t)) => {
            [t.source_port, t.destination_port].contains(&u32::from(TCP_PROBE_PORT))
        }
        Some(Protocol::IcmPv4(i)) => (i.r#type, i.code) == (3, 3),
        _ => false,
    }
}

/// Each node's whole buffer (unfiltered, unmasked), at a moment when no node
/// received a flow during the reads; then `check` runs against it while the
/// nodes still stand still (retried otherwise).
fn with_settled_buffers(
    c: &Cluster,
    mut check: impl FnMut(&BTreeMap<String, Vec<Flow>>) -> Result<()>,
) -> Result<()> {
    let nodes = c.node_names();
    for n in &nodes {
        c.wait_seen_flows_settled(
            c.flowd_addr(n)?,
            Duration::from_secs(3),
            Duration::from_secs(90),
        )?;
    }
    let seen = |c: &Cluster| -> Result<Vec<u64>> {
        nodes
            .iter()
            .map(|n| Ok(c.server_status(c.flowd_addr(n)?)?.seen_flows))
            .collect()
    };
    for _ in 0..5 {
        let before = seen(c)?;
        let mut buffers = BTreeMap::new();
        for n in &nodes {
            let all = Observe::new().all().output(Output::Json).request();
            buffers.insert(n.clone(), flows(c, c.flowd_addr(n)?, &all)?);
        }
        let r = check(&buffers);
        if seen(c)? != before {
            eprintln!("a node received flows during the checks: again");
            continue;
        }
        return r;
    }
    bail!("the nodes never stood still for the checks")
}

#[test]
fn hubble_cli_requests_on_flowd_and_the_relay() -> Result<()> {
    require_root()?;
    let t0 = Instant::now();
    let c = cluster()?;
    let relay = c.relay_addr();
    let nodes = c.node_names();
    ensure!(nodes == ["node-a", "node-b"], "the default lab: {nodes:?}");

    // --- hubble status: health first, then ServerStatus. ---
    for n in &nodes {
        let addr = c.flowd_addr(n)?;
        assert_eq!(status_of(&c, addr)?, SERVING, "health of flowd on {n}");
        assert_eq!(
            health(&c, addr, "no.such.Service")?,
            Err(Code::NotFound),
            "{n}"
        );
        let st = c.server_status(addr)?;
        assert_eq!(st.num_connected_nodes.map(|v| v.value), Some(1), "{n}");
    }
    assert_eq!(status_of(&c, relay)?, SERVING, "health of the relay");
    let st = c.server_status(relay)?;
    assert_eq!(st.num_connected_nodes.map(|v| v.value), Some(2));
    assert_eq!(st.num_unavailable_nodes.map(|v| v.value), Some(0));
    assert_eq!(st.max_flows, 2 * 4095);

    // --- hubble observe --follow (compact: the default mask) through the
    // relay, then the traffic mix and the probe. ---
    let follow = Follow::start(&c, relay, Observe::new().follow().request());
    let report = c.run_traffic()?;
    probe(&c)?;
    let (followed, status) = follow.collect(
        "the probe's 10 flows",
        Duration::from_secs(30),
        Duration::from_millis(1500),
        |f| f.iter().filter(|f| is_probe(f)).count() >= 10,
    )?;
    drop(follow);
    let connected: BTreeSet<&str> = status
        .iter()
        .filter(|(s, _)| *s == NodeState::NodeConnected as i32)
        .flat_map(|(_, n)| n.iter().map(String::as_str))
        .collect();
    assert_eq!(connected, BTreeSet::from(["node-a", "node-b"]));
    let probe_flows: Vec<&Flow> = followed.iter().filter(|f| is_probe(f)).collect();
    let got = count(probe_flows.iter().map(|f| {
        (
            f.node_name.as_str(),
            summary(f),
            Verdict::try_from(f.verdict).map_or("?", |v| v.as_str_name()),
            event(f),
        )
    }));
    // Trace sub types: 5 = from-endpoint (frontend's veth for the probes,
    // order-service's for the answers), 0 = to-endpoint; drops: type 1.
    let want = count([
        ("node-a", "UDP", "FORWARDED", (4, 5)),
        ("node-a", "UDP", "FORWARDED", (4, 0)),
        ("node-a", "UDP", "DROPPED", (1, 0)),
        (
            "node-a",
            "ICMPv4 DestinationUnreachable(Port)",
            "FORWARDED",
            (4, 5),
        ),
        (
            "node-a",
            "ICMPv4 DestinationUnreachable(Port)",
            "FORWARDED",
            (4, 0),
        ),
        ("node-a", "TCP Flags: SYN", "FORWARDED", (4, 5)),
        ("node-a", "TCP Flags: SYN", "FORWARDED", (4, 0)),
        ("node-a", "TCP", "DROPPED", (1, 0)),
        ("node-a", "TCP Flags: ACK, RST", "FORWARDED", (4, 5)),
        ("node-a", "TCP Flags: ACK, RST", "FORWARDED", (4, 0)),
    ]);
    assert_eq!(
        got, want,
        "the probe's flows through the relay's follow stream"
    );
    for f in &followed {
        assert_eq!(*f, default_masked(f), "follow sends only the mask's fields");
        assert!(f.uuid.is_empty() && f.trace_observation_point == 0);
    }
    eprintln!("follow and probe checked at {:?}", t0.elapsed());
    stray(&c)?;

    with_settled_buffers(&c, |buffers| {
        let all: Vec<&Flow> = buffers.values().flatten().collect();
        let total: usize = all.len();
        // Every flow has a summary, and an L3/L4 one is Hubble's for its fields.
        for f in &all {
            if is_l7(f) {
                continue;
            }
            let want = l34_summary(f).with_context(|| format!("an unexpected flow: {f:?}"))?;
            ensure!(
                summary(f) == want,
                "summary {:?}, Hubble's {want:?}: {f:?}",
                summary(f)
            );
        }
        // HTTP and DNS summaries: exactly those of the mix (the buffers hold
        // one round; the probe added no L7 flow).
        let got = count(
            all.iter()
                .filter(|f| is_l7(f))
                .map(|f| l7_key(f))
                .collect::<Result<Vec<_>>>()?,
        );
        let want = expected_l7(&c, &report)?;
        assert_eq!(got, want, "HTTP/DNS summaries");
        eprintln!(
            "buffers {:?}; {} HTTP/DNS summaries ({} distinct) as the mix gives them",
            buffers
                .iter()
                .map(|(n, b)| (n.as_str(), b.len()))
                .collect::<Vec<_>>(),
            got.values().sum::<u32>(),
            got.len()
        );

        // Default `hubble observe` on each node: the last 20, masked.
        for (n, buf) in buffers {
            let addr = c.flowd_addr(n)?;
            let got = flows(&c, addr, &Observe::new().request())?;
            let want: Vec<Flow> = buf[buf.len() - 20..].iter().map(default_masked).collect();
            assert_eq!(got, want, "hubble observe on {n}");
        }
        // Through the relay: 20 per node, in time order.
        let got = flows(&c, relay, &Observe::new().request())?;
        assert_eq!(got.len(), 40);
        let mut want: Vec<Flow> = buffers
            .values()
            .flat_map(|b| b[b.len() - 20..].iter().map(default_masked))
            .collect();
        want.sort_by_key(|f| f.time.map(|t| t.as_unix_nanos()));
        assert_eq!(
            count(got.iter().map(|f| format!("{f:?}"))),
            count(want.iter().map(|f| format!("{f:?}"))),
            "hubble observe through the relay"
        );
        let times: Vec<i128> = got
            .iter()
            .map(|f| f.time.map_or(0, |t| t.as_unix_nanos()))
            .collect();
        ensure!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "relay output not in time order"
        );

        // --all in each output mode: every flow; the mask only in compact,
        // dict and table.
        for o in [Output::Compact, Output::Dict, Output::Table, Output::Json] {
            let got = flows(&c, relay, &Observe::new().all().output(o).request())?;
            assert_eq!(got.len(), total, "hubble observe --all -o {o:?}");
            let want = all.iter().map(|f| {
                if o == Output::Json {
                    (*f).clone()
                } else {
                    default_masked(f)
                }
            });
            assert_eq!(
                count(got.iter().map(|f| format!("{f:?}"))),
                count(want.map(|f| format!("{f:?}"))),
                "hubble observe --all -o {o:?}"
            );
        }

        // -t trace:from-endpoint / trace:to-endpoint: exactly the trace flows
        // at that observation point; together, every trace flow.
        let at = |buf: &[Flow], p: TraceObservationPoint| {
            buf.iter()
                .filter(|f| event(f).0 == 4 && f.trace_observation_point == p as i32)
                .count()
        };
        let mut sums = [0usize; 2];
        for (n, buf) in buffers {
            let addr = c.flowd_addr(n)?;
            let traces = buf.iter().filter(|f| event(f).0 == 4).count();
            let mut both = 0;
            for (i, (spec, point)) in [
                ("trace:from-endpoint", TraceObservationPoint::FromEndpoint),
                ("trace:to-endpoint", TraceObservationPoint::ToEndpoint),
            ]
            .into_iter()
            .enumerate()
            {
                let req = Observe::new().all().event_type(spec).request();
                let got = flows(&c, addr, &req)?;
                let want = at(buf, point);
                ensure!(want > 0, "{n} has {spec} flows");
                assert_eq!(got.len(), want, "-t {spec} on {n}");
                eprintln!("-t {spec} on {n}: {want} of {traces} trace flows");
                ensure!(
                    got.iter()
                        .all(|f| event(f) == (4, if i == 0 { 5 } else { 0 }))
                );
                both += got.len();
                sums[i] += want;
            }
            assert_eq!(
                both, traces,
                "{n}: from- and to-endpoint are every trace flow"
            );
        }
        for (i, spec) in ["trace:from-endpoint", "trace:to-endpoint"]
            .into_iter()
            .enumerate()
        {
            let got = flows(&c, relay, &Observe::new().all().event_type(spec).request())?;
            assert_eq!(got.len(), sums[i], "-t {spec} through the relay");
            // flowd's own observe, same selection.
            let out = c.observe(&["-t", spec, "--all", "-o", "json"])?;
            ensure!(
                out.status.success(),
                "observe -t {spec}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let lines = String::from_utf8(out.stdout)?
                .lines()
                .filter(|l| l.contains("\"flow\""))
                .count();
            assert_eq!(lines, sums[i], "observe -t {spec}");
            eprintln!("-t {spec} through the relay and with observe: {}", sums[i]);
        }

        // --all-namespaces: flows with a pod on either side.
        for (n, buf) in buffers {
            let addr = c.flowd_addr(n)?;
            let want = buf
                .iter()
                .filter(|f| has_pod(&f.source) || has_pod(&f.destination))
                .count();
            let got = flows(&c, addr, &Observe::new().all().all_namespaces().request())?;
            assert_eq!(got.len(), want, "--all-namespaces on {n}");
            eprintln!("--all-namespaces on {n}: {want} of {}", buf.len());
        }
        let with_pods = all
            .iter()
            .filter(|f| has_pod(&f.source) || has_pod(&f.destination))
            .count();
        // ARP makes no flow: the flows without a pod are the nodes' own.
        ensure!(
            with_pods < all.len(),
            "no flow without a pod: --all-namespaces would filter nothing"
        );
        let got = flows(&c, relay, &Observe::new().all().all_namespaces().request())?;
        assert_eq!(got.len(), with_pods, "--all-namespaces through the relay");
        let l7_total: u32 = expected_l7(&c, &report)?.values().sum();
        let got = flows(
            &c,
            relay,
            &Observe::new()
                .all()
                .all_namespaces()
                .event_type("l7")
                .request(),
        )?;
        assert_eq!(got.len() as u32, l7_total, "--all-namespaces -t l7");
        eprintln!(
            "--all-namespaces through the relay: {with_pods} of {total}; with -t l7: {l7_total}"
        );
        Ok(())
    })?;
    eprintln!(
        "observe, summaries, types, namespaces checked at {:?}",
        t0.elapsed()
    );

    // --- hubble list nodes / list namespaces. ---
    let conn = c.connector(relay);
    let (nodes_list, namespaces) = c.in_router(move || async move {
        let mut cl = ObserverClient::new(channel(conn).await?);
        let n = cl
            .get_nodes(hubble_cli::get_nodes_request())
            .await?
            .into_inner();
        let ns = cl
            .get_namespaces(hubble_cli::get_namespaces_request())
            .await?
            .into_inner();
        anyhow::Ok((n, ns))
    })??;
    let listed: Vec<(String, i32, String)> = nodes_list
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.state, n.version.clone()))
        .collect();
    let v = flowd_version();
    assert_eq!(
        listed,
        vec![
            ("node-a".into(), NodeState::NodeConnected as i32, v.clone()),
            ("node-b".into(), NodeState::NodeConnected as i32, v),
        ]
    );
    let ns: Vec<(String, String)> = namespaces
        .namespaces
        .into_iter()
        .map(|n| (n.cluster, n.namespace))
        .collect();
    assert_eq!(
        ns,
        [
            ("default".to_string(), "ecommerce".to_string()),
            ("default".into(), "kube-system".into())
        ]
    );

    // --- Invalid requests: INVALID_ARGUMENT naming the field, from flowd and
    // from the relay (the nodes' own message), never an empty stream. ---
    let bad_ip = Observe::new()
        .both(|f| f.source_ip.push("nope".into()))
        .request();
    let direct = match get_flows(&c, c.flowd_addr("node-a")?, bad_ip.clone())? {
        Err(e) => e,
        Ok(r) => bail!("flowd accepted an invalid source_ip: {r:?}"),
    };
    assert_eq!(direct.code(), Code::InvalidArgument);
    assert_eq!(
        direct.message(),
        "invalid whitelist[0].source_ip filter \"nope\": invalid IP address"
    );
    for req in [
        bad_ip.clone(),
        GetFlowsRequest {
            follow: true,
            ..bad_ip
        },
    ] {
        match get_flows(&c, relay, req)? {
            Err(e) => {
                assert_eq!((e.code(), e.message()), (direct.code(), direct.message()));
            }
            Ok(r) => bail!("the relay answered an invalid request with {r:?}"),
        }
    }
    let bad_mask = GetFlowsRequest {
        field_mask: Some(FieldMask {
            paths: vec!["time".into(), "source.podName".into()],
        }),
        ..Observe::new().request()
    };
    for addr in [relay, c.flowd_addr("node-b")?] {
        match get_flows(&c, addr, bad_mask.clone())? {
            Err(e) => {
                assert_eq!(e.code(), Code::InvalidArgument);
                ensure!(
                    e.message()
                        .starts_with("field_mask: invalid field mask path \"source.podName\""),
                    "{e}"
                );
            }
            Ok(r) => bail!("{addr} accepted an invalid field mask: {r:?}"),
        }
    }
    eprintln!("done in {:?}", t0.elapsed());
    Ok(())
}

fn flowd_version() -> String {
    format!("flowd v{}", env!("CARGO_PKG_VERSION"))
}

/// `Health/Watch` of `hubble.server.Observer` at `addr`, read on a thread in
/// the router namespace until the stream ends: the statuses in order.
fn watch(
    c: &Cluster,
    addr: SocketAddr,
) -> (
    mpsc::Receiver<ServingStatus>,
    std::thread::JoinHandle<Result<()>>,
) {
    let ns = c.lab().router_netns().to_string();
    let conn = c.connector(addr);
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        in_netns(&ns, move || async move {
            let mut h = HealthClient::new(channel(conn).await?);
            let mut s = h
                .watch(hubble_cli::health_check_request())
                .await?
                .into_inner();
            // The stream ends when flowd is done; an error then is the
            // connection going away.
            while let Ok(Some(r)) = s.message().await {
                let _ =
                    tx.send(ServingStatus::try_from(r.status).unwrap_or(ServingStatus::Unknown));
            }
            anyhow::Ok(())
        })?
    });
    (rx, t)
}

#[test]
fn health_follows_readiness_shutdown_and_the_nodes() -> Result<()> {
    require_root()?;
    let t0 = Instant::now();
    let mut c = cluster()?;
    let relay = c.relay_addr();
    let a = c.flowd_addr("node-a")?;
    assert_eq!(status_of(&c, a)?, SERVING);
    assert_eq!(status_of(&c, relay)?, SERVING);

    // Shutdown: NOT_SERVING from the moment it begins (while the datapath
    // drains and the API still answers), then the Watch stream ends.
    let (statuses, watcher) = watch(&c, a);
    ensure!(
        statuses.recv_timeout(Duration::from_secs(10))? == ServingStatus::Serving,
        "watch starts SERVING"
    );
    let exit = c.stop_flowd("node-a")?;
    ensure!(exit.success(), "flowd on node-a exited with {exit}");
    watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watch thread panicked"))??;
    let rest: Vec<ServingStatus> = statuses.try_iter().collect();
    assert_eq!(rest, [ServingStatus::NotServing], "after SIGTERM");
    // One node left: the relay still serves.
    flowd_tests::wait_until("relay sees node-a down", Duration::from_secs(20), || {
        Ok((c
            .server_status(relay)?
            .num_unavailable_nodes
            .map(|v| v.value)
            == Some(1))
        .then_some(()))
    })?;
    assert_eq!(status_of(&c, relay)?, SERVING, "relay with node-b up");

    // Every node down: the relay is NOT_SERVING, and says so to `hubble status`.
    c.stop_flowd("node-b")?;
    flowd_tests::wait_until("relay NOT_SERVING", Duration::from_secs(20), || {
        Ok((status_of(&c, relay)? == NOT_SERVING).then_some(()))
    })?;

    // Startup: until its first pod list is attached flowd is NOT_SERVING.
    // With the manifest directory missing there is no pod list, however
    // long it waits; the datapath is up and the API answers.
    let manifests = c.lab().manifest_dir();
    let later = c.lab().dir().join("manifests-later");
    c.options_mut()
        .set
        .push(("flowd-manifests-dir".into(), later.display().to_string()));
    c.start_flowd("node-a")?;
    assert_eq!(status_of(&c, a)?, NOT_SERVING, "no pod list yet");
    assert_eq!(
        c.server_status(a)?.num_connected_nodes.map(|v| v.value),
        Some(1)
    );
    // The relay serves again (a node is connected), while node-a is not ready.
    flowd_tests::wait_until("relay SERVING with node-a", Duration::from_secs(20), || {
        Ok((status_of(&c, relay)? == SERVING).then_some(()))
    })?;
    std::os::unix::fs::symlink(&manifests, &later)?;
    flowd_tests::wait_until(
        "node-a SERVING once its pods are listed",
        Duration::from_secs(30),
        || Ok((status_of(&c, a)? == SERVING).then_some(())),
    )?;
    eprintln!("done in {:?}", t0.elapsed());
    Ok(())
}
