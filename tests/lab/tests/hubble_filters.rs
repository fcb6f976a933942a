//! Hubble's FlowFilter fields on real lab traffic (root): flowd on both
//! nodes, the relay in the router namespace, the lab's traffic mix once.
//! Each request is the one `hubble observe --all -o jsonpb <flags>` sends
//! (its filters written as `hubble observe --print-raw-filters` prints
//! them: `--not`, repeated flags and from/to variants as the CLI combines
//! them). Expected HTTP sightings come from the generator's report (every
//! exchange the mix causes, gRPC calls as the HTTP/2 requests they are,
//! with the DNS name each client resolved) and the
//! pods' placement; where a filter also selects L3/L4 and DNS flows, the
//! result is also compared with the node's whole buffer filtered here by
//! the lab's own facts (addresses, veths, who resolved what).
//!
//! Counting rule as in relay_e2e: an HTTP exchange is seen at the client's
//! veth and, for a pod server, at the server's veth (request and response
//! each); names a client resolved are known on its own node only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use flowd_lab::cluster::{Cluster, ClusterOptions, bins};
use flowd_lab::{LabState, TrafficReport};
use flowd_proto::Timestamp;
use flowd_proto::flow::layer7::Record;
use flowd_proto::flow::{Flow, FlowFilter, L7FlowType};
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::{GetFlowsRequest, GetFlowsResponse};

/// One HTTP sighting, as a flow shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Sight {
    node: String,
    /// The pod whose veth saw it (`ns/pod`).
    veth: String,
    response: bool,
    method: String,
    path: String,
    status: u32,
    client: String,
    /// Empty for the world.
    server: String,
}

/// A sighting the mix causes, with what filters may look at.
struct Expected {
    sight: Sight,
    /// The DNS name the client resolved for this call.
    name: String,
    /// The client is a pod of the observing node (its names are known there).
    client_local: bool,
    /// A gRPC call (HTTP/2; tonic's own headers).
    grpc: bool,
}

type Counts = BTreeMap<Sight, u32>;

fn pod_key(ns: &str, pod: &str) -> String {
    format!("{ns}/{pod}")
}

/// Every sighting of the report's expected exchanges, with its count: the
/// HTTP/1.1 exchanges and the gRPC calls as the HTTP/2 requests they are.
fn expected(state: &LabState, report: &TrafficReport) -> Result<Vec<(Expected, u32)>> {
    let mut out = Vec::new();
    let http = report.expected.http.iter().map(|h| (h.clone(), false));
    let grpc = report.expected.grpc.iter().map(|g| (g.as_http(), true));
    for (h, grpc) in http.chain(grpc) {
        let client = pod_key(&h.source_namespace, &h.source_pod);
        let (server, name) = match (&h.destination_namespace, &h.destination_pod) {
            (Some(ns), Some(pod)) => (
                pod_key(ns, pod),
                state.service_fqdn(&h.destination_service, ns),
            ),
            _ => (String::new(), h.destination_service.clone()),
        };
        let client_node = state.node_of(&client)?;
        let mut sides = vec![(client_node.clone(), client.clone())];
        if !server.is_empty() {
            sides.push((state.node_of(&server)?, server.clone()));
        }
        for (node, veth) in sides {
            for (response, status) in [(false, 0), (true, u32::from(h.status))] {
                out.push((
                    Expected {
                        sight: Sight {
                            node: node.clone(),
                            veth: veth.clone(),
                            response,
                            method: h.method.clone(),
                            path: h.path.clone(),
                            status,
                            client: client.clone(),
                            server: server.clone(),
                        },
                        name: name.clone(),
                        client_local: node == client_node,
                        grpc,
                    },
                    h.count,
                ));
            }
        }
    }
    Ok(out)
}

fn want(all: &[(Expected, u32)], pred: impl Fn(&Expected) -> bool) -> Counts {
    let mut c = Counts::new();
    for (e, n) in all.iter().filter(|(e, _)| pred(e)) {
        *c.entry(e.sight.clone()).or_default() += n;
    }
    c
}

fn only_node(c: &Counts, node: &str) -> Counts {
    c.iter()
        .filter(|(s, _)| s.node == node)
        .map(|(s, n)| (s.clone(), *n))
        .collect()
}

fn total(c: &Counts) -> u32 {
    c.values().sum()
}

fn url_path(url: &str) -> String {
    let rest = match url.split_once("://") {
        Some((_, r)) => r.find('/').map_or("/", |i| &r[i..]),
        None => url,
    };
    rest.split(['?', '#']).next().unwrap_or("/").to_string()
}

fn ep_key(e: &Option<flowd_proto::flow::Endpoint>) -> String {
    e.as_ref()
        .filter(|e| !e.pod_name.is_empty())
        .map(|e| pod_key(&e.namespace, &e.pod_name))
        .unwrap_or_default()
}

fn bare_node(n: &str) -> String {
    n.rsplit('/').next().unwrap_or(n).to_string()
}

/// veth name → pod key.
fn veths(state: &LabState) -> BTreeMap<String, String> {
    state
        .pods
        .iter()
        .map(|p| (p.host_veth.clone(), p.key()))
        .collect()
}

fn sight(veths: &BTreeMap<String, String>, f: &Flow) -> Option<Sight> {
    let l7 = f.l7.as_ref()?;
    let Some(Record::Http(http)) = &l7.record else {
        return None;
    };
    let response = l7.r#type == L7FlowType::Response as i32;
    let (client, server) = if response {
        (ep_key(&f.destination), ep_key(&f.source))
    } else {
        (ep_key(&f.source), ep_key(&f.destination))
    };
    let iface = f.interface.as_ref().map_or("", |i| i.name.as_str());
    Some(Sight {
        node: bare_node(&f.node_name),
        veth: veths
            .get(iface)
            .cloned()
            .unwrap_or_else(|| iface.to_string()),
        response,
        method: http.method.clone(),
        path: url_path(&http.url),
        status: http.code,
        client,
        server,
    })
}

fn count(veths: &BTreeMap<String, String>, flows: &[Flow]) -> Counts {
    let mut c = Counts::new();
    for s in flows.iter().filter_map(|f| sight(veths, f)) {
        *c.entry(s).or_default() += 1;
    }
    c
}

/// Where the compared views end: every request asks for the flows until
/// this time, so flows reported later (a connection's late update) change
/// no result. Set once, after the traffic settled.
static UNTIL: OnceLock<Timestamp> = OnceLock::new();

/// `hubble observe -o jsonpb --until <UNTIL>` with these raw filters (JSON,
/// proto field names, as --print-raw-filters prints them): the CLI sends
/// number 0 (all) with `until`.
fn request(whitelist: &[String], blacklist: &[String]) -> Result<GetFlowsRequest> {
    let parse = |l: &[String]| -> Result<Vec<FlowFilter>> {
        l.iter()
            .map(|s| serde_json::from_str(s).with_context(|| format!("filter {s}")))
            .collect()
    };
    Ok(GetFlowsRequest {
        number: 0,
        until: UNTIL.get().copied(),
        whitelist: parse(whitelist)?,
        blacklist: parse(blacklist)?,
        ..Default::default()
    })
}

fn uuids(flows: &[Flow]) -> BTreeSet<String> {
    flows.iter().map(|f| f.uuid.clone()).collect()
}

/// The test's view of the cluster after one round of traffic.
struct World<'a> {
    c: &'a Cluster,
    nodes: Vec<String>,
    veths: BTreeMap<String, String>,
    all: Vec<(Expected, u32)>,
    /// Each node's whole buffer.
    buffers: BTreeMap<String, Vec<Flow>>,
}

impl World<'_> {
    /// Asks every flowd and the relay; checks the HTTP sightings against
    /// `want` (per node and merged) and returns the flows per node.
    fn check(
        &self,
        what: &str,
        wl: &[String],
        bl: &[String],
        want: &Counts,
    ) -> Result<BTreeMap<String, Vec<Flow>>> {
        let req = request(wl, bl)?;
        let mut per_node = BTreeMap::new();
        for n in &self.nodes {
            let flows = self.c.get_flows(self.c.flowd_addr(n)?, req.clone())?;
            let got = count(&self.veths, &flows);
            let w = only_node(want, n);
            assert!(
                got == w,
                "{what} on flowd {n}:\n{}",
                flowd_tests::count_diff(&w, &got)
            );
            per_node.insert(n.clone(), flows);
        }
        let merged = self.c.get_flows(self.c.relay_addr(), req)?;
        let got = count(&self.veths, &merged);
        assert_eq!(
            &got,
            want,
            "{what} through the relay:\n{}",
            flowd_tests::count_diff(want, &got)
        );
        let from_nodes: BTreeSet<String> = per_node.values().flat_map(|f| uuids(f)).collect();
        assert_eq!(uuids(&merged), from_nodes, "{what}: relay vs nodes");
        eprintln!(
            "{what}: {} HTTP sightings, {} flows in all",
            total(want),
            merged.len()
        );
        Ok(per_node)
    }

    /// The flows of `node`'s buffer for which `pred` holds.
    fn buffer_where(&self, node: &str, pred: impl Fn(&Flow) -> bool) -> BTreeSet<String> {
        self.buffers[node]
            .iter()
            .filter(|f| pred(f))
            .map(|f| f.uuid.clone())
            .collect()
    }
}

fn ips(f: &Flow) -> Option<(IpAddr, IpAddr)> {
    let ip = f.ip.as_ref()?;
    Some((ip.source.parse().ok()?, ip.destination.parse().ok()?))
}

/// RFC 3339 with nanoseconds, as `--until` takes it.
fn rfc3339(t: &Timestamp) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn f(json: &str) -> String {
    json.to_string()
}

#[test]
fn every_flow_filter_field_on_lab_traffic_through_flowd_and_the_relay() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "needs root (network namespaces, eBPF)"
    );
    let c = Cluster::start(ClusterOptions {
        relay: true,
        relay_args: vec!["--sort-buffer-drain-timeout".into(), "300ms".into()],
        set: vec![(
            "flowd-http-headers-allow".into(),
            "content-type,user-agent".into(),
        )],
        ..Default::default()
    })?;
    let state = c.lab().state().clone();
    let report = c.run_traffic()?;
    let all = expected(&state, &report)?;
    let veths = veths(&state);
    let nodes = c.node_names();
    // Every sighting is in, and nothing else moves.
    let every = want(&all, |_| true);
    for n in &nodes {
        let w = total(&only_node(&every, n)) as usize;
        c.wait_flows(
            c.flowd_addr(n)?,
            request(&[f(r#"{"event_type":[{"type":129}]}"#)], &[])?,
            Duration::from_secs(30),
            |flows| flows.iter().filter_map(|f| sight(&veths, f)).count() >= w,
        )?;
        c.wait_seen_flows_settled(
            c.flowd_addr(n)?,
            Duration::from_millis(1500),
            Duration::from_secs(30),
        )?;
    }
    let until = Timestamp::from(SystemTime::now());
    UNTIL
        .set(until)
        .map_err(|_| anyhow::anyhow!("UNTIL set twice"))?;
    let mut buffers = BTreeMap::new();
    for n in &nodes {
        buffers.insert(
            n.clone(),
            c.get_flows(c.flowd_addr(n)?, request(&[], &[])?)?,
        );
    }
    let w = World {
        c: &c,
        nodes: nodes.clone(),
        veths: veths.clone(),
        all,
        buffers,
    };
    let got = w.check("no filter", &[], &[], &every)?;
    for n in &nodes {
        ensure!(
            uuids(&got[n]) == uuids(&w.buffers[n]),
            "buffer of {n} moved"
        );
    }

    // --- --interface <frontend's veth> ---
    let frontend = state.pod("ecommerce/frontend").context("frontend")?;
    let fe_veth = frontend.host_veth.clone();
    let got = w.check(
        "--interface",
        &[format!(r#"{{"interface":[{{"name":"{fe_veth}"}}]}}"#)],
        &[],
        &want(&w.all, |e| e.sight.veth == frontend.key()),
    )?;
    ensure!(total(&want(&w.all, |e| e.sight.veth == frontend.key())) > 0);
    for n in &nodes {
        let by_iface = w.buffer_where(n, |fl| {
            fl.interface.as_ref().is_some_and(|i| i.name == fe_veth)
        });
        assert_eq!(
            uuids(&got[n]),
            by_iface,
            "--interface on {n}: every flow of the veth"
        );
    }
    // --not --interface: the rest.
    w.check(
        "--not --interface",
        &[],
        &[format!(r#"{{"interface":[{{"name":"{fe_veth}"}}]}}"#)],
        &want(&w.all, |e| e.sight.veth != frontend.key()),
    )?;

    // --- --http-url (regex on the whole URL) ---
    let carts = format!(
        r"^http://{}/carts/\d+$",
        state
            .service_fqdn("order-service", "ecommerce")
            .replace('.', r"\.")
    );
    w.check(
        "--http-url",
        &[serde_json::json!({ "http_url": [carts] }).to_string()],
        &[],
        &want(&w.all, |e| e.sight.path.starts_with("/carts/")),
    )?;
    // Repeated: either regex.
    w.check(
        "--http-url --http-url",
        &[serde_json::json!({ "http_url": [carts, "/v1/authorize/"] }).to_string()],
        &[],
        &want(&w.all, |e| {
            e.sight.path.starts_with("/carts/") || e.sight.path.starts_with("/v1/authorize/")
        }),
    )?;

    // --- --http-header (captured headers: content-type, user-agent) ---
    let generator = pod_key(&report.source_namespace, &report.source_pod);
    w.check(
        "--http-header Content-Type:application/json",
        &[f(
            r#"{"http_header":[{"key":"Content-Type","value":"application/json"}]}"#,
        )],
        &[],
        // JSON bodies: every HTTP/1.1 answer, the generator's POSTs and
        // every downstream HTTP/1.1 call (the apps always send one); gRPC
        // is application/grpc.
        &want(&w.all, |e| {
            !e.grpc && (e.sight.response || e.sight.method == "POST" || e.sight.client != generator)
        }),
    )?;
    w.check(
        "--http-header user-agent:flowd-lab/0.1 --http-method POST",
        &[f(
            r#"{"http_method":["POST"],"http_header":[{"key":"user-agent","value":"flowd-lab/0.1"}]}"#,
        )],
        &[],
        // tonic sends its own user-agent.
        &want(&w.all, |e| {
            !e.grpc && !e.sight.response && e.sight.method == "POST"
        }),
    )?;
    w.check(
        "--http-header user-agent:curl",
        &[f(
            r#"{"http_header":[{"key":"user-agent","value":"curl"}]}"#,
        )],
        &[],
        &Counts::new(),
    )?;

    // --- --node-label (the observing node's labels) ---
    let got = w.check(
        "--node-label kubernetes.io/hostname=node-a",
        &[f(r#"{"node_labels":["kubernetes.io/hostname=node-a"]}"#)],
        &[],
        &only_node(&every, "node-a"),
    )?;
    assert_eq!(uuids(&got["node-a"]), uuids(&w.buffers["node-a"]));
    assert!(got["node-b"].is_empty());
    let got = w.check(
        "--node-label kubernetes.io/os in (linux)",
        &[f(r#"{"node_labels":["kubernetes.io/os in (linux)"]}"#)],
        &[],
        &every,
    )?;
    for n in &nodes {
        assert_eq!(uuids(&got[n]), uuids(&w.buffers[n]), "{n}");
        ensure!(
            w.buffers[n].iter().all(|fl| fl
                .node_labels
                .contains(&format!("kubernetes.io/hostname={n}"))),
            "node_labels on {n}'s flows"
        );
    }

    // --- --cluster / --from-cluster / --to-cluster (pods are in "default") ---
    w.check(
        "--cluster default",
        &[
            f(r#"{"source_cluster_name":["default"]}"#),
            f(r#"{"destination_cluster_name":["default"]}"#),
        ],
        &[],
        &every,
    )?;
    w.check(
        "--to-cluster default",
        &[f(r#"{"destination_cluster_name":["default"]}"#)],
        &[],
        // Requests to the world have no cluster.
        &want(&w.all, |e| e.sight.response || !e.sight.server.is_empty()),
    )?;
    w.check(
        "--from-cluster default",
        &[f(r#"{"source_cluster_name":["default"]}"#)],
        &[],
        &want(&w.all, |e| !e.sight.response || !e.sight.server.is_empty()),
    )?;
    w.check(
        "--cluster other",
        &[
            f(r#"{"source_cluster_name":["other"]}"#),
            f(r#"{"destination_cluster_name":["other"]}"#),
        ],
        &[],
        &Counts::new(),
    )?;

    // --- --ip-trace-id, --encrypted / --unencrypted ---
    // flowd reads no IP trace option: every flow's trace ID is 0.
    w.check(
        "--ip-trace-id 5",
        &[f(r#"{"ip_trace_id":["5"]}"#)],
        &[],
        &Counts::new(),
    )?;
    w.check(
        "--allowlist ip_trace_id 0",
        &[f(r#"{"ip_trace_id":["0"]}"#)],
        &[],
        &every,
    )?;
    w.check(
        "--encrypted",
        &[f(r#"{"encrypted":[true]}"#)],
        &[],
        &Counts::new(),
    )?;
    let got = w.check(
        "--unencrypted",
        &[f(r#"{"encrypted":[false]}"#)],
        &[],
        &every,
    )?;
    for n in &nodes {
        assert_eq!(uuids(&got[n]), uuids(&w.buffers[n]), "--unencrypted on {n}");
    }

    // --- FQDN filters: names from the DNS answers each client saw ---
    let world_ip = IpAddr::V4(state.world.ip);
    let payment = state.pod("ecommerce/payment-service").context("payment")?;
    let payment_ip = IpAddr::V4(payment.ip);
    let psp = state.spec.world.names[0].clone();
    ensure!(
        total(&want(&w.all, |e| e.name == psp)) > 0,
        "the mix calls {psp}"
    );
    let got = w.check(
        "--to-fqdn psp",
        &[format!(r#"{{"destination_fqdn":["{psp}"]}}"#)],
        &[],
        &want(&w.all, |e| {
            e.name == psp && e.client_local && !e.sight.response
        }),
    )?;
    // Every flow (L3/L4 too) from the resolving pod to that address, and nothing else.
    let to_world = |fl: &Flow| ips(fl) == Some((payment_ip, world_ip));
    assert_eq!(
        uuids(&got[&payment.node]),
        w.buffer_where(&payment.node, to_world)
    );
    ensure!(!got[&payment.node].is_empty());
    let got = w.check(
        "--from-fqdn psp",
        &[format!(r#"{{"source_fqdn":["{psp}"]}}"#)],
        &[],
        &want(&w.all, |e| {
            e.name == psp && e.client_local && e.sight.response
        }),
    )?;
    let from_world = |fl: &Flow| ips(fl) == Some((world_ip, payment_ip));
    assert_eq!(
        uuids(&got[&payment.node]),
        w.buffer_where(&payment.node, from_world)
    );
    // --fqdn "*.<ns>.svc.cluster.local": either side, services only.
    let svc_pattern = format!("*.ecommerce.svc.{}", state.spec.cluster_domain);
    let svc_suffix = format!(".ecommerce.svc.{}", state.spec.cluster_domain);
    let got = w.check(
        "--fqdn *.ecommerce.svc",
        &[
            format!(r#"{{"source_fqdn":["{svc_pattern}"]}}"#),
            format!(r#"{{"destination_fqdn":["{svc_pattern}"]}}"#),
        ],
        &[],
        &want(&w.all, |e| e.name.ends_with(&svc_suffix) && e.client_local),
    )?;
    // The whole buffer: flows between a local client and an address it
    // resolved a service name to (answers of the lab's DNS).
    let records: BTreeMap<String, Ipv4Addr> = state.dns_records().into_iter().collect();
    let mut resolved: BTreeSet<(IpAddr, IpAddr)> = BTreeSet::new();
    for d in report.expected.dns.iter().filter(|d| d.rcode == "NOERROR") {
        if d.name.ends_with(&svc_suffix)
            && let Some(ip) = records.get(d.name.trim_end_matches('.'))
        {
            resolved.insert((IpAddr::V4(d.source_ip), IpAddr::V4(*ip)));
        }
    }
    ensure!(resolved.len() >= 4, "lookups in the mix: {resolved:?}");
    for n in &nodes {
        let local: BTreeSet<IpAddr> = state
            .pods
            .iter()
            .filter(|p| &p.node == n)
            .map(|p| IpAddr::V4(p.ip))
            .collect();
        let by_names = w.buffer_where(n, |fl| {
            ips(fl).is_some_and(|(s, d)| {
                (local.contains(&s) && resolved.contains(&(s, d)))
                    || (local.contains(&d) && resolved.contains(&(d, s)))
            })
        });
        assert_eq!(uuids(&got[n]), by_names, "--fqdn on {n}");
        ensure!(
            got[n].iter().all(|fl| fl
                .source_names
                .iter()
                .chain(&fl.destination_names)
                .all(|x| x.ends_with(&svc_suffix))),
            "names on {n}"
        );
    }

    // --- CEL: the same flows as the equivalent flags ---
    let cel = |expr: &str| {
        serde_json::json!({ "experimental": { "cel_expression": [expr] } }).to_string()
    };
    let pairs: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        (
            "--http-status 4+ --http-status 5+",
            vec![f(r#"{"http_status_code":["4+","5+"]}"#)],
            vec![cel(
                "has(_flow.l7.http) && _flow.l7.http.code >= 400u && _flow.l7.http.code < 600u",
            )],
        ),
        (
            "--traffic-direction egress --protocol tcp --to-port 8080",
            vec![f(
                r#"{"destination_port":["8080"],"protocol":["tcp"],"traffic_direction":["EGRESS"]}"#,
            )],
            vec![cel(
                "_flow.traffic_direction == TrafficDirection.EGRESS && has(_flow.l4.TCP) && _flow.l4.TCP.destination_port == 8080u",
            )],
        ),
        (
            "--to-label app=frontend",
            vec![f(r#"{"destination_label":["app=frontend"]}"#)],
            vec![cel("'k8s:app=frontend' in _flow.destination.labels")],
        ),
        (
            "--to-fqdn psp",
            vec![format!(r#"{{"destination_fqdn":["{psp}"]}}"#)],
            vec![cel(&format!("'{psp}' in _flow.destination_names"))],
        ),
        (
            "--interface",
            vec![format!(r#"{{"interface":[{{"name":"{fe_veth}"}}]}}"#)],
            vec![cel(&format!("_flow.interface.name == '{fe_veth}'"))],
        ),
    ];
    for (flags, wl, cel_wl) in pairs {
        let by_flags = w.check(flags, &wl, &[], &{
            // Sightings the flags select, counted from the flows themselves
            // below; here only the nodes' and relay's agreement is checked.
            let req = request(&wl, &[])?;
            let merged = c.get_flows(c.relay_addr(), req)?;
            count(&veths, &merged)
        })?;
        let by_cel = w.check(&format!("CEL for {flags}"), &cel_wl, &[], &{
            let merged = c.get_flows(c.relay_addr(), request(&wl, &[])?)?;
            count(&veths, &merged)
        })?;
        for n in &nodes {
            assert_eq!(
                uuids(&by_cel[n]),
                uuids(&by_flags[n]),
                "CEL vs {flags} on {n}"
            );
            ensure!(
                !by_flags.values().all(Vec::is_empty),
                "{flags} selects something"
            );
        }
    }
    // The HTTP-status pair also matches the mix.
    w.check(
        "CEL http code 4xx/5xx",
        &[cel("_flow.l7.http.code >= 400u")],
        &[],
        &want(&w.all, |e| e.sight.status >= 400),
    )?;

    // --- Refused: SNAT addresses; a bad CEL expression ---
    for (filter, field) in [
        (r#"{"source_ip_xlated":["10.0.0.1"]}"#, "source_ip_xlated"),
        (
            r#"{"experimental":{"cel_expression":["_flow.sourc.namespace == 'x'"]}}"#,
            "cel_expression",
        ),
    ] {
        let req = request(&[f(filter)], &[])?;
        for n in &nodes {
            let conn = c.connector(c.flowd_addr(n)?);
            let req = req.clone();
            let st = c.in_router(move || async move {
                let mut cl = conn.observer().await?;
                let res = async {
                    let mut s = cl.get_flows(req).await?.into_inner();
                    while s.message().await?.is_some() {}
                    Ok::<_, tonic::Status>(())
                }
                .await;
                anyhow::Ok(res.err())
            })??;
            let st = st.with_context(|| format!("{filter} accepted by {n}"))?;
            assert_eq!(st.code(), tonic::Code::InvalidArgument, "{filter}: {st:?}");
            ensure!(st.message().contains(field), "{filter}: {}", st.message());
            ensure!(!st.message().contains('\n'), "one line: {}", st.message());
            eprintln!("{n} refuses {field}: {}", st.message());
        }
        // Through the relay: no flow; the refusal reaches the client.
        let relay = c.relay_addr();
        let req = request(&[f(filter)], &[])?;
        let (flows, errors) = c.in_router(move || async move {
            let mut cl = ObserverClient::connect(format!("http://{relay}")).await?;
            let mut flows = 0;
            let mut errors = Vec::new();
            match cl.get_flows(req).await {
                Err(st) => errors.push(st.message().to_string()),
                Ok(s) => {
                    let mut s = s.into_inner();
                    loop {
                        match s.message().await {
                            Ok(Some(GetFlowsResponse {
                                response_types: Some(ResponseTypes::Flow(_)),
                                ..
                            })) => flows += 1,
                            Ok(Some(GetFlowsResponse {
                                response_types: Some(ResponseTypes::NodeStatus(ns)),
                                ..
                            })) => {
                                if !ns.message.is_empty() {
                                    errors.push(ns.message);
                                }
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(st) => {
                                errors.push(st.message().to_string());
                                break;
                            }
                        }
                    }
                }
            }
            anyhow::Ok((flows, errors))
        })??;
        assert_eq!(flows, 0, "{filter} through the relay");
        ensure!(
            errors.iter().any(|e| e.contains(field)),
            "{filter} through the relay: {errors:?}"
        );
    }

    // --- observe: the same flags give the same flows through the relay ---
    let observe_cases: Vec<(Vec<String>, GetFlowsRequest)> = vec![
        (
            vec!["--interface".into(), fe_veth.clone()],
            request(
                &[format!(r#"{{"interface":[{{"name":"{fe_veth}"}}]}}"#)],
                &[],
            )?,
        ),
        (
            vec!["--http-url".into(), carts.clone()],
            request(
                &[serde_json::json!({ "http_url": [carts] }).to_string()],
                &[],
            )?,
        ),
        (
            vec![
                "--http-header".into(),
                "Content-Type:application/json".into(),
            ],
            request(
                &[f(
                    r#"{"http_header":[{"key":"Content-Type","value":"application/json"}]}"#,
                )],
                &[],
            )?,
        ),
        (
            vec![
                "--node-label".into(),
                "kubernetes.io/hostname=node-a".into(),
            ],
            request(
                &[f(r#"{"node_labels":["kubernetes.io/hostname=node-a"]}"#)],
                &[],
            )?,
        ),
        (
            vec!["--to-cluster".into(), "default".into()],
            request(&[f(r#"{"destination_cluster_name":["default"]}"#)], &[])?,
        ),
        (
            vec![
                "--cluster".into(),
                "default".into(),
                "--not".into(),
                "--cluster".into(),
                "other".into(),
            ],
            request(
                &[
                    f(r#"{"source_cluster_name":["default"]}"#),
                    f(r#"{"destination_cluster_name":["default"]}"#),
                ],
                &[
                    f(r#"{"source_cluster_name":["other"]}"#),
                    f(r#"{"destination_cluster_name":["other"]}"#),
                ],
            )?,
        ),
        (
            vec![
                "--cel-expression".into(),
                "_flow.l7.http.code >= 400u".into(),
            ],
            request(&[cel("_flow.l7.http.code >= 400u")], &[])?,
        ),
        (
            vec!["--to-fqdn".into(), psp.clone()],
            request(&[format!(r#"{{"destination_fqdn":["{psp}"]}}"#)], &[])?,
        ),
        (
            vec!["--fqdn".into(), svc_pattern.clone()],
            request(
                &[
                    format!(r#"{{"source_fqdn":["{svc_pattern}"]}}"#),
                    format!(r#"{{"destination_fqdn":["{svc_pattern}"]}}"#),
                ],
                &[],
            )?,
        ),
        (
            vec!["--unencrypted".into()],
            request(&[f(r#"{"encrypted":[false]}"#)], &[])?,
        ),
        (
            vec!["--encrypted".into()],
            request(&[f(r#"{"encrypted":[true]}"#)], &[])?,
        ),
        (
            vec!["--ip-trace-id".into(), "5".into()],
            request(&[f(r#"{"ip_trace_id":["5"]}"#)], &[])?,
        ),
    ];
    bins::path("observe")?;
    for (args, req) in observe_cases {
        let want = uuids(&c.get_flows(c.relay_addr(), req)?);
        let until = rfc3339(&until);
        let mut a: Vec<&str> = vec!["--until", &until, "-o", "json"];
        a.extend(args.iter().map(String::as_str));
        let out = c.observe(&a)?;
        if !out.status.success() {
            bail!("observe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut got = BTreeSet::new();
        for line in String::from_utf8(out.stdout)?
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let r: GetFlowsResponse = serde_json::from_str(line)?;
            if let Some(ResponseTypes::Flow(fl)) = r.response_types {
                got.insert(fl.uuid);
            }
        }
        assert_eq!(got, want, "observe {args:?}");
        eprintln!("observe {args:?}: {} flows", got.len());
    }
    Ok(())
}
