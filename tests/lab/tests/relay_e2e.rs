//! The relay and `observe` end to end on the lab (root): flowd on every node,
//! the relay in the router namespace, real HTTP/DNS traffic from the lab's
//! generator.
//!
//! Counting rule. flowd sits on the host side of every pod's veth, so an HTTP
//! exchange is observed once per pod veth it crosses: at the client's veth
//! (request `FROM_ENDPOINT`, response `TO_ENDPOINT`, on the client's node) and
//! at the server's veth (request `TO_ENDPOINT`, response `FROM_ENDPOINT`, on
//! the server's node). Two pods of one node give two sightings on that node;
//! a call to the outside world gives only the client's. The expected
//! sightings are derived from the generator's report (`expected`: every
//! exchange the mix causes in the cluster; its gRPC calls are HTTP/2
//! requests, `POST` of the method's path answered `:status` 200) and the
//! pods' placement, and are
//! compared per node, observation point, request/response, method, path,
//! status, client and server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use flowd_lab::cluster::{Cluster, ClusterOptions, in_netns};
use flowd_lab::{HttpCount, LabState, TrafficReport};
use flowd_proto::flow::layer7::Record;
use flowd_proto::flow::{Endpoint, Flow, L7FlowType, TraceObservationPoint};
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::{GetFlowsRequest, GetFlowsResponse, GetNodesRequest};
use flowd_proto::relay::NodeState;

/// Relay settings for the tests: short drain timeout (live flows wait at most
/// this long for a silent node) and a quick reconnection after a restart.
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

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// One sighting of an HTTP request or response.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Sighting {
    node: String,
    point: &'static str,
    response: bool,
    method: String,
    path: String,
    /// 0 for requests.
    status: u32,
    /// `namespace/pod`, empty outside the cluster.
    client: String,
    server: String,
}

type Counts = BTreeMap<Sighting, u32>;

fn pod_key(ns: &str, pod: &str) -> String {
    if pod.is_empty() {
        String::new()
    } else {
        format!("{ns}/{pod}")
    }
}

/// The sightings the exchanges `h` give.
fn expected_sightings(state: &LabState, rows: &[HttpCount]) -> Result<Counts> {
    let mut out = Counts::new();
    for h in rows {
        let client = pod_key(&h.source_namespace, &h.source_pod);
        let server = match (&h.destination_namespace, &h.destination_pod) {
            (Some(ns), Some(pod)) => pod_key(ns, pod),
            _ => String::new(),
        };
        let mut sides = vec![(state.node_of(&client)?, "FROM_ENDPOINT", "TO_ENDPOINT")];
        if !server.is_empty() {
            sides.push((state.node_of(&server)?, "TO_ENDPOINT", "FROM_ENDPOINT"));
        }
        for (node, req_point, resp_point) in sides {
            for (response, point, status) in [
                (false, req_point, 0),
                (true, resp_point, u32::from(h.status)),
            ] {
                let s = Sighting {
                    node: node.clone(),
                    point,
                    response,
                    method: h.method.clone(),
                    path: h.path.clone(),
                    status,
                    client: client.clone(),
                    server: server.clone(),
                };
                *out.entry(s).or_default() += h.count;
            }
        }
    }
    Ok(out)
}

/// `/path` of an HTTP URL (`http://host:port/path?q` or `/path`).
fn url_path(url: &str) -> String {
    let rest = match url.split_once("://") {
        Some((_, r)) => r.find('/').map_or("/", |i| &r[i..]),
        None => url,
    };
    rest.split(['?', '#']).next().unwrap_or("/").to_string()
}

fn endpoint_key(e: &Option<Endpoint>) -> String {
    e.as_ref()
        .map(|e| pod_key(&e.namespace, &e.pod_name))
        .unwrap_or_default()
}

/// Node names in flows may carry a cluster prefix (`cluster/node`).
fn bare_node(n: &str) -> String {
    n.rsplit('/').next().unwrap_or(n).to_string()
}

/// The HTTP sighting a flow is, if it is one.
fn sighting(f: &Flow) -> Option<Sighting> {
    let l7 = f.l7.as_ref()?;
    let Some(Record::Http(http)) = &l7.record else {
        return None;
    };
    let response = l7.r#type == L7FlowType::Response as i32;
    let (client, server) = if response {
        (endpoint_key(&f.destination), endpoint_key(&f.source))
    } else {
        (endpoint_key(&f.source), endpoint_key(&f.destination))
    };
    Some(Sighting {
        node: bare_node(&f.node_name),
        point: TraceObservationPoint::try_from(f.trace_observation_point)
            .map_or("?", |p| p.as_str_name()),
        response,
        method: http.method.clone(),
        path: url_path(&http.url),
        status: http.code,
        client,
        server,
    })
}

fn count<'a>(flows: impl IntoIterator<Item = &'a Flow>) -> Counts {
    let mut out = Counts::new();
    for s in flows.into_iter().filter_map(sighting) {
        *out.entry(s).or_default() += 1;
    }
    out
}

fn total(c: &Counts) -> u32 {
    c.values().sum()
}

fn only_node(c: &Counts, node: &str) -> Counts {
    c.iter()
        .filter(|(s, _)| s.node == node)
        .map(|(s, n)| (s.clone(), *n))
        .collect()
}

/// A follow stream from the relay, read on a thread in the router namespace.
struct Follow {
    rx: mpsc::Receiver<Result<GetFlowsResponse, String>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    flows: Vec<Flow>,
    status: Vec<(NodeState, Vec<String>)>,
}

impl Follow {
    fn start(c: &Cluster) -> Result<Follow> {
        let ns = c.lab().router_netns().to_string();
        let addr = c.relay_addr();
        let (tx, rx) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let err = tx.clone();
            let res = in_netns(&ns, move || async move {
                let run = async {
                    let mut c = ObserverClient::connect(format!("http://{addr}")).await?;
                    let mut s = c
                        .get_flows(GetFlowsRequest {
                            follow: true,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
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
            let res = res.map_err(|e| format!("{e:#}")).and_then(|r| r);
            if let Err(e) = res {
                let _ = err.send(Err(e));
            }
        });
        Ok(Follow {
            rx,
            stop: Some(stop),
            thread: Some(thread),
            flows: Vec::new(),
            status: Vec::new(),
        })
    }

    fn take(&mut self, r: GetFlowsResponse) {
        match r.response_types {
            Some(ResponseTypes::Flow(f)) => self.flows.push(f),
            Some(ResponseTypes::NodeStatus(s)) => self.status.push((
                NodeState::try_from(s.state_change).unwrap_or(NodeState::UnknownNodeState),
                s.node_names.iter().map(|n| bare_node(n)).collect(),
            )),
            _ => {}
        }
    }

    /// Reads until `pred` holds (bounded).
    fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Follow) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !pred(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; status events so far: {:?}",
                    self.status
                );
            }
            match self.rx.recv_timeout(left) {
                Ok(Ok(r)) => self.take(r),
                Ok(Err(e)) => bail!("follow stream failed: {e}"),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("follow stream ended"),
            }
        }
        Ok(())
    }

    /// Reads whatever arrives until nothing has for `quiet`.
    fn settle(&mut self, quiet: Duration) -> Result<()> {
        loop {
            match self.rx.recv_timeout(quiet) {
                Ok(Ok(r)) => self.take(r),
                Ok(Err(e)) => bail!("follow stream failed: {e}"),
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(()),
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("follow stream ended"),
            }
        }
    }

    fn has_status(&self, state: NodeState, node: &str) -> bool {
        self.status
            .iter()
            .any(|(s, n)| *s == state && n.iter().any(|n| n == node))
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

/// Waits until the follow stream has at least the expected HTTP sightings,
/// then reads until quiet, and returns the sightings of the flows read since
/// `from` (index into `f.flows`).
fn sightings_after(f: &mut Follow, from: usize, want: u32, what: &str) -> Result<Counts> {
    f.until(what, Duration::from_secs(30), |f| {
        total(&count(&f.flows[from..])) >= want
    })?;
    // Beyond the relay's drain timeout: anything extra (a duplicate) would
    // have arrived by now.
    f.settle(Duration::from_millis(1500))?;
    Ok(count(&f.flows[from..]))
}

/// The HTTP flows each node holds, straight from its flowd.
fn node_http_flows(c: &Cluster) -> Result<Vec<Flow>> {
    let mut all = Vec::new();
    for n in c.node_names() {
        let flows = c.get_flows(c.flowd_addr(&n)?, GetFlowsRequest::default())?;
        all.extend(flows.into_iter().filter(|f| sighting(f).is_some()));
    }
    Ok(all)
}

/// Every HTTP record of the report's exchanges: HTTP/1.1 ones, and the
/// gRPC calls as the HTTP/2 requests they are.
fn expected_for(c: &Cluster, report: &TrafficReport) -> Result<Counts> {
    let mut rows = report.expected.http.clone();
    rows.extend(report.expected.grpc.iter().map(|g| g.as_http()));
    expected_sightings(c.lab().state(), &rows)
}

#[test]
fn relay_merges_every_node_survives_a_killed_node_and_observe_shows_http_errors() -> Result<()> {
    anyhow::ensure!(is_root(), "relay_e2e needs root (network namespaces, eBPF)");
    let started = Instant::now();
    let mut c = Cluster::start(ClusterOptions {
        relay: true,
        relay_args: RELAY_ARGS.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })?;
    let nodes = c.node_names();
    ensure!(nodes.len() == 2, "the default lab has two nodes: {nodes:?}");
    eprintln!("cluster up in {:?}", started.elapsed());

    // --- Follow: every live flow of every node, once. ---
    let mut follow = Follow::start(&c)?;
    follow.until(
        "NODE_CONNECTED for every node",
        Duration::from_secs(15),
        |f| {
            nodes
                .iter()
                .all(|n| f.has_status(NodeState::NodeConnected, n))
        },
    )?;
    let report = c.run_traffic()?;
    let want = expected_for(&c, &report)?;
    for n in &nodes {
        ensure!(total(&only_node(&want, n)) > 0, "the mix crosses {n}");
    }
    let got = sightings_after(&mut follow, 0, total(&want), "round 1 through the relay")?;
    assert_eq!(
        got,
        want,
        "follow, round 1:\n{}",
        flowd_tests::count_diff(&want, &got)
    );
    // Nothing lost or duplicated: exactly the HTTP flows the nodes hold.
    let followed: Vec<&Flow> = follow
        .flows
        .iter()
        .filter(|f| sighting(f).is_some())
        .collect();
    let uuids: BTreeSet<&str> = followed.iter().map(|f| f.uuid.as_str()).collect();
    assert_eq!(uuids.len(), followed.len(), "a flow was delivered twice");
    let held = node_http_flows(&c)?;
    let held_uuids: BTreeSet<&str> = held.iter().map(|f| f.uuid.as_str()).collect();
    assert_eq!(uuids, held_uuids, "follow vs the nodes' own buffers");
    eprintln!(
        "follow: {} HTTP sightings (per node {:?}) at {:?}",
        total(&got),
        nodes
            .iter()
            .map(|n| total(&only_node(&got, n)))
            .collect::<Vec<_>>(),
        started.elapsed()
    );

    // --- observe --namespace ecommerce --http-status 400-599 (issue 8). ---
    let errors: Vec<HttpCount> = report
        .expected
        .http
        .iter()
        .filter(|h| (400..=599).contains(&h.status))
        .cloned()
        .collect();
    // The generator's own 4xx/5xx answers are among them.
    for s in report.sent.http.iter().filter(|h| h.status >= 400) {
        ensure!(
            errors.iter().any(|e| e.method == s.method
                && e.path == s.path
                && e.status == s.status
                && e.count == s.count
                && e.source_pod == s.source_pod),
            "generator got {s:?}, not in the expected exchanges"
        );
    }
    let want_err: Counts = expected_sightings(c.lab().state(), &errors)?
        .into_iter()
        .filter(|(s, _)| s.response)
        .collect();
    let out = c.observe(&[
        "--namespace",
        "ecommerce",
        "--http-status",
        "400-599",
        "--all",
        "-o",
        "json",
    ])?;
    ensure!(
        out.status.success(),
        "observe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    let mut shown = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let r: GetFlowsResponse =
            serde_json::from_str(line).with_context(|| format!("observe -o json line {line}"))?;
        // Node status notices (NODE_CONNECTED, …) come along, as in Hubble.
        match r.response_types {
            Some(ResponseTypes::Flow(f)) => shown.push(f),
            Some(ResponseTypes::NodeStatus(_)) => {}
            other => bail!("observe printed {other:?}"),
        }
    }
    ensure!(
        shown.iter().all(|f| sighting(f).is_some()),
        "observe showed a non-HTTP flow"
    );
    let got_err = count(&shown);
    assert_eq!(
        got_err,
        want_err,
        "observe --namespace ecommerce --http-status 400-599:\n{}",
        flowd_tests::count_diff(&want_err, &got_err)
    );
    // The command exactly as typed: Hubble's default is the last 20 flows
    // per node, oldest first.
    let out = c.observe(&["--namespace", "ecommerce", "--http-status", "400-599"])?;
    ensure!(out.status.success(), "observe failed");
    let text = String::from_utf8(out.stdout)?;
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(": NODE_"))
        .map(str::to_string)
        .collect();
    let want_lines: u32 = nodes
        .iter()
        .map(|n| total(&only_node(&want_err, n)).min(20))
        .sum();
    assert_eq!(
        lines.len() as u32,
        want_lines,
        "default observe:\n{}",
        lines.join("\n")
    );
    for l in &lines {
        ensure!(
            l.contains("=> 4") || l.contains("=> 5"),
            "not a 4xx/5xx line: {l}"
        );
    }
    eprintln!(
        "observe: {} 4xx/5xx sightings ({} as typed) at {:?}",
        total(&got_err),
        lines.len(),
        started.elapsed()
    );

    // --- --last N: N per node, in time order. ---
    const N: u64 = 10;
    let mut ok = false;
    for _ in 0..5 {
        let before: Vec<u64> = nodes
            .iter()
            .map(|n| Ok(c.server_status(c.flowd_addr(n)?)?.seen_flows))
            .collect::<Result<_>>()?;
        let merged = c.get_flows(
            c.relay_addr(),
            GetFlowsRequest {
                number: N,
                ..Default::default()
            },
        )?;
        let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in &merged {
            per_node
                .entry(bare_node(&f.node_name))
                .or_default()
                .push(f.uuid.clone());
        }
        let mut own = BTreeMap::new();
        for n in &nodes {
            let flows = c.get_flows(
                c.flowd_addr(n)?,
                GetFlowsRequest {
                    number: N,
                    ..Default::default()
                },
            )?;
            own.insert(
                n.clone(),
                flows.into_iter().map(|f| f.uuid).collect::<Vec<_>>(),
            );
        }
        let after: Vec<u64> = nodes
            .iter()
            .map(|n| Ok(c.server_status(c.flowd_addr(n)?)?.seen_flows))
            .collect::<Result<_>>()?;
        if before != after {
            continue; // a node got new flows meanwhile: compare again
        }
        assert_eq!(merged.len() as u64, N * nodes.len() as u64, "--last {N}");
        assert_eq!(per_node, own, "--last {N}: each node's own last {N}");
        let times: Vec<i128> = merged
            .iter()
            .map(|f| f.time.map_or(0, |t| t.as_unix_nanos()))
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "--last {N} is not in time order: {times:?}"
        );
        ok = true;
        break;
    }
    ensure!(
        ok,
        "--last {N}: the nodes never stood still for a comparison"
    );

    // --- Kill one node's flowd: the stream goes on, the node is unavailable. ---
    let victim = "node-b";
    let survivor = "node-a";
    c.kill_flowd(victim)?;
    follow.until(
        "NODE_UNAVAILABLE for the killed node",
        Duration::from_secs(15),
        |f| f.has_status(NodeState::NodeUnavailable, victim),
    )?;
    let status = c.server_status(c.relay_addr())?;
    assert_eq!(status.num_connected_nodes.map(|v| v.value), Some(1));
    assert_eq!(status.num_unavailable_nodes.map(|v| v.value), Some(1));
    assert_eq!(status.unavailable_nodes, [victim.to_string()]);
    let from = follow.flows.len();
    let report2 = c.run_traffic()?;
    let want2 = only_node(&expected_for(&c, &report2)?, survivor);
    let got2 = sightings_after(
        &mut follow,
        from,
        total(&want2),
        "round 2 from the survivor",
    )?;
    assert_eq!(
        got2,
        want2,
        "follow with {victim} down:\n{}",
        flowd_tests::count_diff(&want2, &got2)
    );
    eprintln!(
        "{victim} killed: round 2 complete at {:?}",
        started.elapsed()
    );

    // --- Restart it: it rejoins the same stream. ---
    c.start_flowd(victim)?;
    let marker = follow.status.len();
    follow.until(
        "NODE_CONNECTED after the restart",
        Duration::from_secs(20),
        |f| {
            f.status[marker..]
                .iter()
                .any(|(s, n)| *s == NodeState::NodeConnected && n.iter().any(|n| n == victim))
        },
    )?;
    let from = follow.flows.len();
    let report3 = c.run_traffic()?;
    let want3 = expected_for(&c, &report3)?;
    let got3 = sightings_after(&mut follow, from, total(&want3), "round 3, both nodes")?;
    assert_eq!(
        got3,
        want3,
        "follow after the restart:\n{}",
        flowd_tests::count_diff(&want3, &got3)
    );
    let nodes_now: Vec<(String, i32)> = c.in_router({
        let addr = c.relay_addr();
        move || async move {
            let mut cl = ObserverClient::connect(format!("http://{addr}")).await?;
            let mut v: Vec<(String, i32)> = cl
                .get_nodes(GetNodesRequest {})
                .await?
                .into_inner()
                .nodes
                .into_iter()
                .map(|n| (bare_node(&n.name), n.state))
                .collect();
            v.sort();
            anyhow::Ok(v)
        }
    })??;
    let connected = NodeState::NodeConnected as i32;
    assert_eq!(
        nodes_now,
        nodes
            .iter()
            .map(|n| (n.clone(), connected))
            .collect::<Vec<_>>()
    );
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}

/// The relay's nodes and their states, sorted.
fn relay_nodes(c: &Cluster) -> Result<Vec<(String, i32)>> {
    let addr = c.relay_addr();
    c.in_router(move || async move {
        let mut cl = ObserverClient::connect(format!("http://{addr}")).await?;
        let mut v: Vec<(String, i32)> = cl
            .get_nodes(GetNodesRequest {})
            .await?
            .into_inner()
            .nodes
            .into_iter()
            .map(|n| (bare_node(&n.name), n.state))
            .collect();
        v.sort();
        anyhow::Ok(v)
    })?
}

fn all_connected(nodes: &[&str]) -> Vec<(String, i32)> {
    let connected = NodeState::NodeConnected as i32;
    let mut v: Vec<(String, i32)> = nodes.iter().map(|n| (n.to_string(), connected)).collect();
    v.sort();
    v
}

/// A relay that knows only `relay --peer-service <node-a's flowd>`: node-c
/// joins the cluster later (its Node object appears in the manifests and its
/// flowd starts), flowd's peer service announces it, and the relay's running
/// follow stream picks it up.
#[test]
fn relay_finds_a_node_added_later_through_the_peer_service() -> Result<()> {
    anyhow::ensure!(is_root(), "relay_e2e needs root (network namespaces, eBPF)");
    let started = Instant::now();
    let mut spec = flowd_lab::Spec::default_spec();
    let mut node_c = spec.nodes[1].clone();
    node_c.name = "node-c".into();
    node_c.pod_cidr = "10.244.3.0/24".parse().map_err(anyhow::Error::msg)?;
    spec.nodes.push(node_c);
    // A service the mix calls runs on the new node.
    spec.deployments
        .iter_mut()
        .find(|d| d.name == "inventory")
        .context("the default lab has inventory")?
        .node = "node-c".into();
    let mut c = Cluster::start(ClusterOptions {
        spec,
        ..Default::default()
    })?;

    // Before: node-c is not part of the cluster (no Node object, no flowd).
    c.stop_flowd("node-c")?;
    // The NodeList flowd reads (the lab writes it next to the manifest
    // directory for now; flowd reads only the directory).
    let nodes_yaml = c.lab().manifest_dir().join("nodes.yaml");
    let original = match std::fs::read_to_string(&nodes_yaml) {
        Ok(t) => t,
        Err(_) => std::fs::read_to_string(c.lab().dir().join("nodes.yaml"))
            .context("the lab's nodes.yaml")?,
    };
    let mut list: serde_json::Value = serde_yaml_ng::from_str(&original)?;
    let items = list["items"]
        .as_array_mut()
        .context("nodes.yaml is a NodeList")?;
    let before = items.len();
    items.retain(|n| n["metadata"]["name"] != "node-c");
    ensure!(items.len() + 1 == before, "node-c in nodes.yaml");
    std::fs::write(&nodes_yaml, serde_yaml_ng::to_string(&list)?)?;

    let peer_service = c.flowd_addr("node-a")?.to_string();
    let mut args = vec![
        "--peer-service".to_string(),
        peer_service,
        "--listen-address".into(),
        c.relay_addr().to_string(),
    ];
    args.extend(RELAY_ARGS.iter().map(|s| s.to_string()));
    // mTLS towards the nodes as the harness's relay; node streams verify
    // the names the peer service announces (<node>.default.hubble-grpc…).
    if let Some(tls) = c.client_tls() {
        args.extend(tls.relay_args());
    }
    let log = c.lab().dir().join("logs").join("relay-peer-service.log");
    let mut cmd = c
        .lab()
        .command_in_router(&flowd_lab::cluster::bins::path("relay")?.to_string_lossy());
    cmd.args(&args)
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log)?);
    let _relay = flowd_tests::ChildGuard::spawn("relay --peer-service", &mut cmd)?;
    let ab = all_connected(&["node-a", "node-b"]);
    flowd_tests::wait_until(
        "the relay to know node-a and node-b only",
        Duration::from_secs(30),
        || Ok((relay_nodes(&c).ok() == Some(ab.clone())).then_some(())),
    )
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;

    let mut follow = Follow::start(&c)?;
    follow.until(
        "NODE_CONNECTED node-a, node-b",
        Duration::from_secs(15),
        |f| {
            ["node-a", "node-b"]
                .iter()
                .all(|n| f.has_status(NodeState::NodeConnected, n))
        },
    )?;
    let r1 = c.run_traffic()?;
    let all1 = expected_for(&c, &r1)?;
    let want1: Counts = all1
        .iter()
        .filter(|(s, _)| s.node != "node-c")
        .map(|(s, n)| (s.clone(), *n))
        .collect();
    ensure!(
        total(&only_node(&all1, "node-c")) > 0,
        "the mix crosses node-c"
    );
    let got1 = sightings_after(&mut follow, 0, total(&want1), "round 1 (two nodes)")?;
    assert_eq!(
        got1,
        want1,
        "before node-c joins:\n{}",
        flowd_tests::count_diff(&want1, &got1)
    );

    // node-c joins: Node object, then its flowd (as a DaemonSet would).
    std::fs::write(&nodes_yaml, &original)?;
    c.start_flowd("node-c")?;
    follow.until("NODE_CONNECTED node-c", Duration::from_secs(30), |f| {
        f.has_status(NodeState::NodeConnected, "node-c")
    })?;
    assert_eq!(
        relay_nodes(&c)?,
        all_connected(&["node-a", "node-b", "node-c"])
    );
    let from = follow.flows.len();
    let r2 = c.run_traffic()?;
    let want2 = expected_for(&c, &r2)?;
    let got2 = sightings_after(&mut follow, from, total(&want2), "round 2 (three nodes)")?;
    assert_eq!(
        got2,
        want2,
        "after node-c joined:\n{}",
        flowd_tests::count_diff(&want2, &got2)
    );
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}

// ---------------------------------------------------------------------------
// mTLS between the relay and the nodes, and certificate rotation.

mod mtls {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::SystemTime;

    use flowd_lab::cluster::{ClientTlsFiles, TLS_SERVER_NAME, node_tls_server_name};
    use flowd_tls::cert::{CertInfo, first_in_pem};
    use tokio_rustls::rustls;

    use super::*;

    /// A client's view of one node: the certificate it was served, what
    /// the node answered right after the handshake (Err: the TLS alert
    /// that refused the client), and how a ServerStatus call went.
    pub struct Attempt {
        pub served: Option<CertInfo>,
        pub tls: std::result::Result<(), String>,
        pub status: std::result::Result<(), String>,
    }

    /// Connects to flowd at `addr` with `client` (None: no certificate),
    /// trusting `ca`: a bare rustls connection (the served certificate,
    /// and the node's first bytes or the alert it refuses the client
    /// with), then ServerStatus over tonic as the relay calls it.
    pub fn attempt(
        c: &Cluster,
        addr: std::net::SocketAddr,
        ca: &Path,
        client: Option<(&Path, &Path)>,
        server_name: &str,
    ) -> Result<Attempt> {
        let ca = std::fs::read(ca)?;
        let id = match client {
            Some((crt, key)) => Some((std::fs::read(crt)?, std::fs::read(key)?)),
            None => None,
        };
        let name = server_name.to_string();
        c.in_router(move || async move {
            let (served, tls) = match bare(addr, &ca, id.as_ref(), &name).await {
                Ok(r) => r,
                Err(e) => (None, Err(format!("handshake: {e:#}"))),
            };
            let mut cfg = tonic::transport::ClientTlsConfig::new()
                .domain_name(&name)
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca));
            if let Some((crt, key)) = &id {
                cfg = cfg.identity(tonic::transport::Identity::from_pem(crt, key));
            }
            let status = async {
                let ch = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                    .map_err(|e| e.to_string())?
                    .tls_config(cfg)
                    .map_err(|e| e.to_string())?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(5))
                    .connect()
                    .await
                    .map_err(|e| e.to_string())?;
                ObserverClient::new(ch)
                    .server_status(flowd_proto::observer::ServerStatusRequest {})
                    .await
                    .map(|_| ())
                    .map_err(|s| s.to_string())
            }
            .await;
            Attempt {
                served,
                tls,
                status,
            }
        })
    }

    type Verdict = (Option<CertInfo>, std::result::Result<(), String>);

    /// A TLS connection to `addr` verified against `ca` for `name`: the
    /// certificate served, then the first read — the server's HTTP/2
    /// SETTINGS when it accepted the client, the alert when it did not
    /// (TLS 1.3 checks the client's certificate after the client's side
    /// of the handshake is done).
    async fn bare(
        addr: std::net::SocketAddr,
        ca: &[u8],
        id: Option<&(Vec<u8>, Vec<u8>)>,
        name: &str,
    ) -> Result<Verdict> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        use tokio::io::AsyncReadExt;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca) {
            roots.add(c?)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
        let mut cfg = match id {
            Some((crt, key)) => builder.with_client_auth_cert(
                CertificateDer::pem_slice_iter(crt).collect::<Result<Vec<_>, _>>()?,
                PrivateKeyDer::from_pem_slice(key)?,
            )?,
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await??;
        let mut tls = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(ServerName::try_from(name.to_string())?, tcp),
        )
        .await??;
        let (_, conn) = tls.get_ref();
        ensure!(
            conn.alpn_protocol() == Some(b"h2"),
            "flowd did not negotiate h2"
        );
        let der = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .context("no certificate served")?;
        let served = CertInfo::from_der(der).map_err(anyhow::Error::msg)?;
        let mut buf = [0u8; 64];
        let verdict = match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => Ok(()),
            Ok(Ok(_)) => Err("closed without an alert".to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("nothing read in 5 s".to_string()),
        };
        Ok((Some(served), verdict))
    }

    pub fn cert_file(dir: &Path, secret: &str) -> Result<CertInfo> {
        let p = dir.join(secret).join("tls.crt");
        first_in_pem(&std::fs::read(&p)?).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    }

    /// Waits until every node serves the certificate now in the lab's
    /// files (new connections use the renewed files); returns its serial.
    pub fn wait_served_everywhere(c: &Cluster, what: &str) -> Result<String> {
        let want = cert_file(&c.tls_dir(), "flowd-server-certs")?.serial;
        let tls = c.client_tls().context("the cluster runs with TLS")?.clone();
        for n in c.node_names() {
            let addr = c.flowd_addr(&n)?;
            let mut last = String::new();
            flowd_tests::wait_until(
                &format!("{n} to serve the {what} certificate {want}"),
                Duration::from_secs(20),
                || {
                    let a = attempt(c, addr, &tls.ca_file, None, &node_tls_server_name(&n))?;
                    last = a.served.map(|s| s.serial).unwrap_or_default();
                    Ok((last == want).then_some(()))
                },
            )
            .with_context(|| format!("{n} still serves {last:?}"))?;
        }
        Ok(want)
    }

    /// A copy of the relay's client files as they are now (they are
    /// symlinks into a directory the next renewal deletes).
    pub fn keep_client(c: &Cluster, to: &Path) -> Result<ClientTlsFiles> {
        let src = c.client_tls().context("TLS")?;
        std::fs::create_dir_all(to)?;
        let copy = |from: &Path, name: &str| -> Result<PathBuf> {
            let dst = to.join(name);
            std::fs::copy(from, &dst)?;
            Ok(dst)
        };
        Ok(ClientTlsFiles {
            ca_file: copy(&src.ca_file, "ca.crt")?,
            cert_file: copy(&src.cert_file, "tls.crt")?,
            key_file: copy(&src.key_file, "tls.key")?,
            server_name: TLS_SERVER_NAME.to_string(),
        })
    }

    /// Runs `flowd certgen ARGS` on the lab's files; returns its stdout.
    pub fn certgen(c: &Cluster, args: &[&str]) -> Result<String> {
        let out = c.certgen(args)?;
        ensure!(
            out.status.success(),
            "flowd certgen {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Whether `c` has expired for a verifier: X.509 times and rustls'
    /// clock have whole seconds, so a certificate stays valid through the
    /// second of its notAfter.
    pub fn past_expiry(c: &CertInfo) -> bool {
        SystemTime::now() > c.not_after + Duration::from_secs(1)
    }
}

/// mTLS between the relay and the nodes, as the lab runs by default, and
/// certificates renewed by `flowd certgen` while everything runs:
/// - every node refuses a client without a certificate, with one from
///   another CA, or with an expired one; the relay, with its certificate,
///   gets every node's flows (exact counts);
/// - renewed files (same CA) are served to new connections (the served
///   serial is the new file's), an open follow stream through the relay
///   keeps delivering every flow, and the replaced, now expired, client
///   certificate is refused;
/// - a new CA: the open stream goes on, and a restarted node is reached by
///   the relay only if it reloaded its client certificate and node CA.
#[test]
fn relay_and_nodes_speak_mtls_and_certificates_rotate_without_restarts() -> Result<()> {
    use flowd_lab::cluster::{ClientTlsFiles, node_tls_server_name};
    use flowd_tls::cert::first_in_pem;
    use mtls::*;
    if !is_root() {
        bail!("relay_e2e needs root (network namespaces, eBPF)");
    }
    let started = Instant::now();
    let mut c = Cluster::start(ClusterOptions {
        relay: true,
        relay_args: RELAY_ARGS.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })?;
    let nodes = c.node_names();
    let tls = c.client_tls().context("mTLS is the default")?.clone();
    let scratch = c.lab().dir().join("mtls-test");

    // --- Who is refused, on every node. ---
    let other = scratch.join("other-ca");
    let out = std::process::Command::new(flowd_lab::cluster::bins::path("flowd")?)
        .args(["certgen", "--output-dir"])
        .arg(&other)
        .output()?;
    ensure!(out.status.success(), "certgen for another CA failed");
    let other = ClientTlsFiles::relay_client(&other);
    // A certificate of the lab's CA that expires in 2 s: certgen with a
    // copy of the CA and no certificates yet.
    let expired = scratch.join("expired");
    std::fs::create_dir_all(expired.join("flowd-ca"))?;
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(
            c.tls_dir().join("flowd-ca").join(f),
            expired.join("flowd-ca").join(f),
        )?;
    }
    let out = std::process::Command::new(flowd_lab::cluster::bins::path("flowd")?)
        .args(["certgen", "--output-dir"])
        .arg(&expired)
        .args(["--cert-validity", "2s", "--renew-before", "1s"])
        .output()?;
    ensure!(
        out.status.success(),
        "certgen for the expired certificate failed"
    );
    let expired = ClientTlsFiles::relay_client(&expired);
    let exp = first_in_pem(&std::fs::read(&expired.cert_file)?).map_err(anyhow::Error::msg)?;
    flowd_tests::wait_until(
        "the 2-second certificate to expire",
        Duration::from_secs(10),
        || Ok(past_expiry(&exp).then_some(())),
    )?;
    let server_serial = cert_file(&c.tls_dir(), "flowd-server-certs")?.serial;
    for n in &nodes {
        let addr = c.flowd_addr(n)?;
        let name = node_tls_server_name(n);
        let ok = attempt(
            &c,
            addr,
            &tls.ca_file,
            Some((&tls.cert_file, &tls.key_file)),
            &name,
        )?;
        assert_eq!(ok.tls, Ok(()), "{n}: the relay's certificate");
        assert_eq!(ok.status, Ok(()), "{n}: the relay's certificate");
        assert_eq!(
            ok.served.map(|s| s.serial),
            Some(server_serial.clone()),
            "{n}"
        );
        for (what, client, alert) in [
            ("no certificate", None, "CertificateRequired"),
            // Another certgen's CA has the same name as the lab's: the
            // issuer is found by name and its signature does not verify.
            (
                "another CA",
                Some((other.cert_file.as_path(), other.key_file.as_path())),
                "DecryptError",
            ),
            (
                "expired",
                Some((expired.cert_file.as_path(), expired.key_file.as_path())),
                "CertificateExpired",
            ),
        ] {
            let a = attempt(&c, addr, &tls.ca_file, client, &name)?;
            ensure!(a.status.is_err(), "{n}: ServerStatus with {what} answered");
            match a.tls {
                Ok(()) => bail!("{n} accepted a client with {what}"),
                Err(e) => ensure!(
                    e.contains(alert),
                    "{n}, {what}: refused, but not with {alert}: {e}"
                ),
            }
        }
    }
    // Plain text on the same port: gRPC health only (what kubelet's gRPC
    // readiness probe asks), SERVING; the Observer API is not there.
    for n in &nodes {
        let addr = c.flowd_addr(n)?;
        let (health, observer) = c.in_router(move || async move {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(5))
                .connect()
                .await?;
            let health = tonic_health::pb::health_client::HealthClient::new(ch.clone())
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await?
                .into_inner()
                .status;
            let observer = ObserverClient::new(ch)
                .server_status(flowd_proto::observer::ServerStatusRequest {})
                .await
                .err()
                .map(|s| s.code());
            anyhow::Ok((health, observer))
        })??;
        assert_eq!(
            health,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{n}: plain-text health"
        );
        assert_eq!(
            observer,
            Some(tonic::Code::Unimplemented),
            "{n}: the Observer API in plain text"
        );
    }
    eprintln!("refusals checked at {:?}", started.elapsed());

    // --- The relay, with its certificate, gets every node's flows. ---
    let mut follow = Follow::start(&c)?;
    follow.until(
        "NODE_CONNECTED for every node",
        Duration::from_secs(15),
        |f| {
            nodes
                .iter()
                .all(|n| f.has_status(NodeState::NodeConnected, n))
        },
    )?;
    let report = c.run_traffic()?;
    let want = expected_for(&c, &report)?;
    for n in &nodes {
        ensure!(total(&only_node(&want, n)) > 0, "the mix crosses {n}");
    }
    let got = sightings_after(&mut follow, 0, total(&want), "round 1 over mTLS")?;
    assert_eq!(
        got,
        want,
        "follow over mTLS:\n{}",
        flowd_tests::count_diff(&want, &got)
    );
    eprintln!(
        "round 1: {} sightings at {:?}",
        total(&got),
        started.elapsed()
    );

    // --- Renewal 1 (same CA): short-lived certificates. ---
    let ca_serial = first_in_pem(&std::fs::read(c.tls_dir().join("flowd-ca/ca.crt"))?)
        .map_err(anyhow::Error::msg)?
        .serial;
    let out = certgen(
        &c,
        &[
            "--force-renew",
            "--cert-validity",
            "40s",
            "--renew-before",
            "10s",
        ],
    )?;
    ensure!(out.contains("flowd-ca: kept"), "{out}");
    let serial1 = wait_served_everywhere(&c, "renewed")?;
    ensure!(
        serial1 != server_serial,
        "the renewal did not change the server certificate"
    );
    let short_lived = keep_client(&c, &scratch.join("short-lived"))?;
    let short =
        first_in_pem(&std::fs::read(&short_lived.cert_file)?).map_err(anyhow::Error::msg)?;
    let from = follow.flows.len();
    let r2 = c.run_traffic()?;
    let want2 = expected_for(&c, &r2)?;
    let got2 = sightings_after(&mut follow, from, total(&want2), "round 2, after renewal 1")?;
    assert_eq!(
        got2,
        want2,
        "the open stream after renewal 1:\n{}",
        flowd_tests::count_diff(&want2, &got2)
    );
    eprintln!("renewal 1 served and streamed at {:?}", started.elapsed());

    // --- Renewal 2: certgen renews what is within its window (the 40 s
    // certificates), still with the same CA. ---
    let out = certgen(&c, &["--renew-before", "1h"])?;
    ensure!(
        out.contains("flowd-ca: kept")
            && out.contains("flowd-server-certs: renewed")
            && out.contains("flowd-relay-client-certs: renewed"),
        "{out}"
    );
    let ca_now = first_in_pem(&std::fs::read(c.tls_dir().join("flowd-ca/ca.crt"))?)
        .map_err(anyhow::Error::msg)?
        .serial;
    assert_eq!(ca_now, ca_serial, "renewals kept the CA");
    let serial2 = wait_served_everywhere(&c, "renewed again")?;
    ensure!(serial2 != serial1);
    let from = follow.flows.len();
    let r3 = c.run_traffic()?;
    let want3 = expected_for(&c, &r3)?;
    let got3 = sightings_after(&mut follow, from, total(&want3), "round 3, after renewal 2")?;
    assert_eq!(
        got3,
        want3,
        "the open stream after renewal 2:\n{}",
        flowd_tests::count_diff(&want3, &got3)
    );

    // The replaced client certificate, once expired, is refused everywhere.
    flowd_tests::wait_until(
        "the replaced 40-second client certificate to expire",
        Duration::from_secs(60),
        || Ok(past_expiry(&short).then_some(())),
    )?;
    for n in &nodes {
        let a = attempt(
            &c,
            c.flowd_addr(n)?,
            &tls.ca_file,
            Some((&short_lived.cert_file, &short_lived.key_file)),
            &node_tls_server_name(n),
        )?;
        ensure!(
            a.status.is_err(),
            "{n}: ServerStatus with the expired certificate answered"
        );
        match a.tls {
            Ok(()) => bail!("{n} accepted the replaced, expired certificate"),
            Err(e) => ensure!(e.contains("CertificateExpired"), "{n}: {e}"),
        }
        assert_eq!(a.served.map(|s| s.serial), Some(serial2.clone()), "{n}");
    }
    eprintln!("expired certificate refused at {:?}", started.elapsed());

    // --- A new CA: the open stream goes on; a restarted node is reached
    // only with the relay's reloaded client certificate and node CA. ---
    let out = certgen(&c, &["--renew-ca"])?;
    ensure!(out.contains("flowd-ca: renewed"), "{out}");
    wait_served_everywhere(&c, "new CA's")?;
    let from = follow.flows.len();
    let r4 = c.run_traffic()?;
    let want4 = expected_for(&c, &r4)?;
    let got4 = sightings_after(
        &mut follow,
        from,
        total(&want4),
        "round 4, after the new CA",
    )?;
    assert_eq!(
        got4,
        want4,
        "the open stream after the new CA:\n{}",
        flowd_tests::count_diff(&want4, &got4)
    );
    let victim = "node-b";
    c.kill_flowd(victim)?;
    follow.until(
        "NODE_UNAVAILABLE after the kill",
        Duration::from_secs(15),
        |f| f.has_status(NodeState::NodeUnavailable, victim),
    )?;
    let marker = follow.status.len();
    c.start_flowd(victim)?;
    follow.until(
        "NODE_CONNECTED: the relay reconnects with its reloaded files",
        Duration::from_secs(20),
        |f| {
            f.status[marker..]
                .iter()
                .any(|(s, n)| *s == NodeState::NodeConnected && n.iter().any(|n| n == victim))
        },
    )?;
    let from = follow.flows.len();
    let r5 = c.run_traffic()?;
    let want5 = expected_for(&c, &r5)?;
    let got5 = sightings_after(&mut follow, from, total(&want5), "round 5, restarted node")?;
    assert_eq!(
        got5,
        want5,
        "after the restart under the new CA:\n{}",
        flowd_tests::count_diff(&want5, &got5)
    );
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}
