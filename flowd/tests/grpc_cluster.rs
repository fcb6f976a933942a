//! gRPC in the lab cluster end to end (root): flowd on both nodes (the
//! example ConfigMap), the relay in the router namespace, the lab's mix
//! once. order-service (node-a) calls inventory (node-b) over gRPC
//! (`shop.inventory.v1.Inventory/Reserve`, one HTTP/2 connection per call),
//! and the calls end OK, RESOURCE_EXHAUSTED or INVALID_ARGUMENT by the lab's
//! rules. Three accounts of the same calls must agree exactly:
//! - the generator's prediction (`report.expected.grpc`, from the rules);
//! - what the two servers counted (`/stats`: order-service's calls made,
//!   inventory's calls answered);
//! - what flowd observed: per observation point (order-service's veth on
//!   node-a: REQUEST leaving, RESPONSE entering; inventory's veth on node-b:
//!   REQUEST entering, RESPONSE leaving), per method and gRPC status, through
//!   each node's Observer API and through the relay, each call complete
//!   (URL, message counts, grpc-message, a latency > 0 and within the
//!   longest the client measured for its method and status); the gRPC filters
//!   (status codes, names and ranges, service, method, protocol); the real
//!   `observe --grpc-status 1-16` through the relay; and
//!   `hubble_grpc_requests_total` on each node per service, method, code,
//!   type and reporter (the client's node reports `client`, the server's
//!   `server`).
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod metrics_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use flowd_lab::cluster::{Cluster, ClusterOptions};
use flowd_lab::grpc::SERVICE;
use flowd_lab::{GrpcCount, LabState, TrafficReport};
use flowd_proto::Timestamp;
use flowd_proto::flow::layer7::Record;
use flowd_proto::flow::{Flow, FlowFilter, L7FlowType, TraceObservationPoint, grpc};
use flowd_proto::observer::GetFlowsRequest;
use flowd_proto::observer::get_flows_response::ResponseTypes;
use metrics_support::{Sample, parse, scrape};

/// Relay settings: a short drain timeout, so merged queries end quickly.
const RELAY_ARGS: &[&str] = &["--sort-buffer-drain-timeout", "300ms"];

/// One gRPC record as a flow shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Sight {
    node: String,
    /// The pod whose veth saw it (`ns/pod`).
    veth: String,
    point: &'static str,
    response: bool,
    service: String,
    method: String,
    /// The status name of a response (`OK`, `RESOURCE_EXHAUSTED`); empty on
    /// requests.
    status: String,
    client: String,
    server: String,
}

type Counts = BTreeMap<Sight, u32>;

fn pod_key(ns: &Option<String>, pod: &Option<String>) -> String {
    match (ns, pod) {
        (Some(ns), Some(pod)) => format!("{ns}/{pod}"),
        _ => String::new(),
    }
}

/// The records the report's gRPC calls give: at the client's veth and at
/// the server's, a REQUEST and a RESPONSE each.
fn expected(state: &LabState, calls: &[GrpcCount]) -> Result<Counts> {
    let mut out = Counts::new();
    for g in calls {
        let client = pod_key(
            &Some(g.source_namespace.clone()),
            &Some(g.source_pod.clone()),
        );
        let server = pod_key(&g.destination_namespace, &g.destination_pod);
        ensure!(!server.is_empty(), "a gRPC call leaves the cluster: {g:?}");
        let status = g.status_name().context("a call without status")?;
        let sides = [
            (&client, "FROM_ENDPOINT", "TO_ENDPOINT"),
            (&server, "TO_ENDPOINT", "FROM_ENDPOINT"),
        ];
        for (veth, req_point, resp_point) in sides {
            for (response, point) in [(false, req_point), (true, resp_point)] {
                let s = Sight {
                    node: state.node_of(veth)?,
                    veth: veth.clone(),
                    point,
                    response,
                    service: g.service.clone(),
                    method: g.method.clone(),
                    status: if response {
                        status.to_string()
                    } else {
                        String::new()
                    },
                    client: client.clone(),
                    server: server.clone(),
                };
                *out.entry(s).or_default() += g.count;
            }
        }
    }
    Ok(out)
}

fn bare_node(n: &str) -> String {
    n.rsplit('/').next().unwrap_or(n).to_string()
}

fn ep_key(e: &Option<flowd_proto::flow::Endpoint>) -> String {
    e.as_ref()
        .filter(|e| !e.pod_name.is_empty())
        .map(|e| format!("{}/{}", e.namespace, e.pod_name))
        .unwrap_or_default()
}

/// The gRPC record a flow is, if it is one.
fn sight(veths: &BTreeMap<String, String>, f: &Flow) -> Option<Sight> {
    let l7 = f.l7.as_ref()?;
    let Some(Record::Http(http)) = &l7.record else {
        return None;
    };
    let call = http.grpc.as_ref()?;
    let response = l7.r#type == L7FlowType::Response as i32;
    let (client, server) = if response {
        (ep_key(&f.destination), ep_key(&f.source))
    } else {
        (ep_key(&f.source), ep_key(&f.destination))
    };
    let iface = f.interface.as_ref().map_or("", |i| i.name.as_str());
    let point = match TraceObservationPoint::try_from(f.trace_observation_point) {
        Ok(TraceObservationPoint::FromEndpoint) => "FROM_ENDPOINT",
        Ok(TraceObservationPoint::ToEndpoint) => "TO_ENDPOINT",
        _ => "OTHER",
    };
    Some(Sight {
        node: bare_node(&f.node_name),
        veth: veths
            .get(iface)
            .cloned()
            .unwrap_or_else(|| iface.to_string()),
        point,
        response,
        service: call.service.clone(),
        method: call.method.clone(),
        status: call.status_name.clone(),
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

fn only_node(c: &Counts, node: &str) -> Counts {
    c.iter()
        .filter(|(s, _)| s.node == node)
        .map(|(s, n)| (s.clone(), *n))
        .collect()
}

fn select(c: &Counts, pred: impl Fn(&Sight) -> bool) -> Counts {
    c.iter()
        .filter(|(s, _)| pred(s))
        .map(|(s, n)| (s.clone(), *n))
        .collect()
}

fn total(c: &Counts) -> u32 {
    c.values().sum()
}

fn uuids(flows: &[Flow]) -> BTreeSet<String> {
    flows.iter().map(|f| f.uuid.clone()).collect()
}

/// The test's view: the cluster after one round, queried up to `until`.
struct View<'a> {
    c: &'a Cluster,
    nodes: Vec<String>,
    veths: BTreeMap<String, String>,
    until: Timestamp,
}

impl View<'_> {
    fn request(&self, filters: Vec<FlowFilter>) -> GetFlowsRequest {
        GetFlowsRequest {
            number: 0,
            until: Some(self.until),
            whitelist: filters,
            ..Default::default()
        }
    }

    /// Asks every flowd and the relay with `filters`; the gRPC records must
    /// be `want` (per node and merged), and the relay must return exactly
    /// the nodes' flows. Returns the merged flows.
    fn check(&self, what: &str, filters: Vec<FlowFilter>, want: &Counts) -> Result<Vec<Flow>> {
        let req = self.request(filters);
        let mut from_nodes = BTreeSet::new();
        for n in &self.nodes {
            let flows = self.c.get_flows(self.c.flowd_addr(n)?, req.clone())?;
            let got = count(&self.veths, &flows);
            let w = only_node(want, n);
            ensure!(
                got == w,
                "{what} on flowd {n}:\n{}",
                flowd_tests::count_diff(&w, &got)
            );
            from_nodes.extend(uuids(&flows));
        }
        let merged = self.c.get_flows(self.c.relay_addr(), req)?;
        let got = count(&self.veths, &merged);
        ensure!(
            &got == want,
            "{what} through the relay:\n{}",
            flowd_tests::count_diff(want, &got)
        );
        ensure!(uuids(&merged) == from_nodes, "{what}: relay vs nodes");
        eprintln!(
            "{what}: {} gRPC records ({:?} per node), {} flows in all",
            total(want),
            self.nodes
                .iter()
                .map(|n| total(&only_node(want, n)))
                .collect::<Vec<_>>(),
            merged.len()
        );
        Ok(merged)
    }
}

fn grpc_filter(f: impl FnOnce(&mut FlowFilter)) -> Vec<FlowFilter> {
    let mut ff = FlowFilter::default();
    f(&mut ff);
    vec![ff]
}

/// A compact `observe` line of a gRPC response:
/// `TIME: CLIENT <- SERVER gRPC /svc/Method => STATUS (LATENCY) VERDICT`;
/// (client pod, server pod, path, status).
fn parse_compact(line: &str) -> Result<(String, String, String, String)> {
    let (_, rest) = line.split_once(": ").context("no timestamp")?;
    let t: Vec<&str> = rest.split_whitespace().collect();
    ensure!(
        t.len() == 9 && t[1] == "<-" && t[3] == "gRPC" && t[5] == "=>",
        "not a gRPC response line"
    );
    let pod = |s: &str| {
        let host = s.rsplit_once(':').map_or(s, |(h, _)| h);
        host.to_string()
    };
    ensure!(
        t[7].starts_with('(') && t[7].ends_with(')') && t[8] == "FORWARDED",
        "latency and verdict"
    );
    Ok((pod(t[0]), pod(t[2]), t[4].to_string(), t[6].to_string()))
}

/// Sums the samples named `name` by `labels`.
fn group(samples: &[Sample], name: &str, labels: &[&str]) -> BTreeMap<Vec<String>, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        let k: Vec<String> = labels
            .iter()
            .map(|l| s.labels.get(*l).cloned().unwrap_or_default())
            .collect();
        *out.entry(k).or_default() += s.value;
    }
    out
}

#[test]
fn grpc_calls_agree_between_the_generator_the_servers_and_flowd() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "needs root (network namespaces, eBPF)"
    );
    let c = Cluster::start(ClusterOptions {
        relay: true,
        relay_args: RELAY_ARGS.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })?;
    let state = c.lab().state().clone();
    let report: TrafficReport = c.run_traffic()?;
    let calls = &report.expected.grpc;
    ensure!(!calls.is_empty(), "the mix makes gRPC calls");
    let failing: Vec<GrpcCount> = calls
        .iter()
        .filter(|g| g.code != Some(0))
        .cloned()
        .collect();
    ensure!(
        !failing.is_empty() && failing.len() < calls.len(),
        "the mix has calls that end OK and calls that do not: {calls:?}"
    );

    // --- The servers counted exactly the predicted calls. ---
    let stats = c.lab().server_stats()?;
    let mut made: BTreeMap<(String, String, Option<u32>), u32> = BTreeMap::new();
    // The longest call per (method, status) as the client measured it.
    let mut client_max: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut answered: BTreeMap<(String, String, Option<u32>), u32> = BTreeMap::new();
    for (key, s) in &stats {
        for o in &s.grpc_outbound {
            let client = key.clone();
            *made.entry((client, o.method.clone(), o.code)).or_default() += o.count;
            ensure!(o.service == SERVICE, "{o:?}");
            let status = o
                .code
                .and_then(flowd_proto::names::grpc_status_name)
                .unwrap_or_default();
            let max = client_max
                .entry((o.method.clone(), status.to_string()))
                .or_default();
            *max = (*max).max(o.max_latency_ns);
        }
        for i in &s.grpc_inbound {
            *answered
                .entry((key.clone(), i.method.clone(), Some(i.code)))
                .or_default() += i.count;
            ensure!(i.service == SERVICE, "{i:?}");
        }
    }
    let mut want_made = BTreeMap::new();
    let mut want_answered = BTreeMap::new();
    for g in calls {
        let client = format!("{}/{}", g.source_namespace, g.source_pod);
        *want_made
            .entry((client, g.method.clone(), g.code))
            .or_default() += g.count;
        let server = pod_key(&g.destination_namespace, &g.destination_pod);
        *want_answered
            .entry((server, g.method.clone(), g.code))
            .or_default() += g.count;
    }
    assert_eq!(made, want_made, "gRPC calls the servers made");
    assert_eq!(answered, want_answered, "gRPC calls the servers answered");
    eprintln!("servers: made {made:?}, answered {answered:?}");

    // --- Every record is in, then nothing moves. ---
    let want = expected(&state, calls)?;
    let veths: BTreeMap<String, String> = state
        .pods
        .iter()
        .map(|p| (p.host_veth.clone(), p.key()))
        .collect();
    let nodes = c.node_names();
    for n in &nodes {
        let w = total(&only_node(&want, n)) as usize;
        ensure!(w > 0, "the calls cross {n}");
        c.wait_flows(
            c.flowd_addr(n)?,
            GetFlowsRequest {
                whitelist: grpc_filter(|f| f.protocol = vec!["grpc".into()]),
                ..Default::default()
            },
            Duration::from_secs(30),
            |flows| flows.iter().filter_map(|f| sight(&veths, f)).count() >= w,
        )?;
        c.wait_seen_flows_settled(
            c.flowd_addr(n)?,
            Duration::from_millis(1500),
            Duration::from_secs(30),
        )?;
    }
    let v = View {
        c: &c,
        nodes: nodes.clone(),
        veths: veths.clone(),
        until: Timestamp::from(SystemTime::now()),
    };

    // --- Every call, exactly, at each observation point (no filter). ---
    let all = v.check("no filter", Vec::new(), &want)?;
    let mut longest: BTreeMap<String, u64> = BTreeMap::new();
    let url = format!(
        "http://{}:{}/{SERVICE}/Reserve",
        state.service_fqdn("inventory", "ecommerce"),
        state.spec.grpc_port
    );
    for f in all.iter().filter(|f| sight(&veths, f).is_some()) {
        let l7 = f.l7.as_ref().context("l7")?;
        let Some(Record::Http(http)) = &l7.record else {
            bail!("not HTTP: {f:?}");
        };
        let call = http.grpc.as_ref().context("grpc")?;
        ensure!(
            http.protocol == "HTTP/2" && http.method == "POST" && http.url == url,
            "{http:?}"
        );
        ensure!(!http.partial, "a partial record: {http:?}");
        if l7.r#type == L7FlowType::Response as i32 {
            // One message each way when OK; a failed unary call has no reply.
            let ok = call.status_code == Some(0);
            ensure!(
                http.code == 200
                    && call.r#type == grpc::Type::Unary as i32
                    && call.messages_exact
                    && call.request_messages == 1
                    && call.response_messages == u32::from(ok),
                "{call:?}"
            );
            ensure!(
                ok == call.message.is_empty(),
                "grpc-message on exactly the failed calls: {call:?}"
            );
            // From the request's HEADERS to the trailers, as the veth saw
            // them: within what the client measured around the call.
            let measured = client_max
                .get(&(call.method.clone(), call.status_name.clone()))
                .copied()
                .context("no such call measured by the client")?;
            ensure!(
                l7.latency_ns > 0 && l7.latency_ns <= measured,
                "latency {} ns, the client's longest such call {measured} ns",
                l7.latency_ns
            );
            let l = longest.entry(call.status_name.clone()).or_default();
            *l = (*l).max(l7.latency_ns);
        } else {
            ensure!(call.status_code.is_none() && http.code == 0, "{call:?}");
        }
    }

    eprintln!(
        "latency: longest record {longest:?} ns; longest call the client measured {client_max:?} ns"
    );

    // --- gRPC filters, on each node and through the relay. ---
    let responses = |pred: &dyn Fn(&str) -> bool| select(&want, |s| s.response && pred(&s.status));
    v.check(
        "grpc_status 1-16",
        grpc_filter(|f| f.grpc_status = vec!["1-16".into()]),
        &responses(&|s| s != "OK"),
    )?;
    v.check(
        "grpc_status OK",
        grpc_filter(|f| f.grpc_status = vec!["OK".into()]),
        &responses(&|s| s == "OK"),
    )?;
    for g in &failing {
        let name = g.status_name().context("status name")?.to_string();
        let code = g.code.context("code")?;
        let by_name = v.check(
            &format!("grpc_status {name}"),
            grpc_filter(|f| f.grpc_status = vec![name.clone()]),
            &responses(&|s| s == name),
        )?;
        let by_code = v.check(
            &format!("grpc_status {code}"),
            grpc_filter(|f| f.grpc_status = vec![code.to_string()]),
            &responses(&|s| s == name),
        )?;
        ensure!(uuids(&by_name) == uuids(&by_code), "{name} vs {code}");
    }
    v.check(
        "grpc_service",
        grpc_filter(|f| f.grpc_service = vec![SERVICE.into()]),
        &want,
    )?;
    let by_method = v.check(
        "grpc_method Reserve",
        grpc_filter(|f| f.grpc_method = vec!["Reserve".into()]),
        &want,
    )?;
    let by_path = v.check(
        "http_path of Reserve",
        grpc_filter(|f| f.http_path = vec![format!("^/{}/Reserve$", SERVICE.replace('.', r"\."))]),
        &want,
    )?;
    ensure!(uuids(&by_method) == uuids(&by_path), "method vs path");
    v.check(
        "grpc_method Watch",
        grpc_filter(|f| f.grpc_method = vec!["Watch".into()]),
        &Counts::new(),
    )?;
    for proto in ["grpc", "http2"] {
        let got = v.check(
            &format!("protocol {proto}"),
            grpc_filter(|f| f.protocol = vec![proto.into()]),
            &want,
        )?;
        ensure!(
            got.iter().all(|f| sight(&veths, f).is_some()),
            "protocol {proto}: only gRPC records"
        );
    }
    // `http` is every HTTP record, HTTP/1.1 ones too.
    let http = v.check(
        "protocol http",
        grpc_filter(|f| f.protocol = vec!["http".into()]),
        &want,
    )?;
    let http_records: BTreeSet<String> = all
        .iter()
        .filter(|f| {
            matches!(
                f.l7.as_ref().and_then(|l| l.record.as_ref()),
                Some(Record::Http(_))
            )
        })
        .map(|f| f.uuid.clone())
        .collect();
    ensure!(
        uuids(&http) == http_records && http_records.len() > total(&want) as usize,
        "protocol http: every HTTP record"
    );

    // --- observe --grpc-status 1-16 through the relay: exactly the failed calls. ---
    let until = serde_json::to_value(v.until)?
        .as_str()
        .context("until")?
        .to_string();
    let args = [
        "--namespace",
        "ecommerce",
        "--protocol",
        "grpc",
        "--grpc-status",
        "1-16",
        "--all",
        "--until",
        &until,
    ];
    let out = c.observe(&args)?;
    ensure!(
        out.status.success(),
        "observe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut shown: BTreeMap<(String, String, String, String), u32> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.contains(" <- ") || l.contains(" -> "))
    {
        *shown
            .entry(parse_compact(line).with_context(|| format!("observe line {line:?}"))?)
            .or_default() += 1;
    }
    let mut want_shown = BTreeMap::new();
    for g in &failing {
        // A response is seen twice: leaving inventory's veth, entering
        // order-service's.
        *want_shown
            .entry((
                pod_key(
                    &Some(g.source_namespace.clone()),
                    &Some(g.source_pod.clone()),
                ),
                pod_key(&g.destination_namespace, &g.destination_pod),
                g.path(),
                g.status_name().unwrap_or_default().to_string(),
            ))
            .or_default() += 2 * g.count;
    }
    assert_eq!(shown, want_shown, "observe --grpc-status 1-16:\n{text}");
    eprintln!("observe --grpc-status 1-16: {shown:?}");
    // The same command as JSON: the relay's flows for that filter.
    let out = c.observe(&[&args[..], &["-o", "json"]].concat())?;
    ensure!(out.status.success(), "observe -o json");
    let mut json_uuids = BTreeSet::new();
    for line in String::from_utf8(out.stdout)?
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let r: flowd_proto::observer::GetFlowsResponse = serde_json::from_str(line)?;
        if let Some(ResponseTypes::Flow(f)) = r.response_types {
            json_uuids.insert(f.uuid);
        }
    }
    let by_filter = c.get_flows(
        c.relay_addr(),
        v.request(grpc_filter(|f| f.grpc_status = vec!["1-16".into()])),
    )?;
    ensure!(
        json_uuids == uuids(&by_filter),
        "observe -o json vs GetFlows"
    );

    // --- Metrics: each node counts its side of every call. ---
    let mut want_req: BTreeMap<String, BTreeMap<Vec<String>, f64>> = BTreeMap::new();
    let mut want_dur: BTreeMap<String, BTreeMap<Vec<String>, f64>> = BTreeMap::new();
    let mut want_h2: BTreeMap<String, BTreeMap<Vec<String>, f64>> = BTreeMap::new();
    for g in calls {
        let n = f64::from(g.count);
        let code = g
            .code
            .and_then(flowd_proto::names::grpc_status_metric)
            .context("code")?;
        let client = format!("{}/{}", g.source_namespace, g.source_pod);
        let server = pod_key(&g.destination_namespace, &g.destination_pod);
        for (reporter, pod) in [("client", &client), ("server", &server)] {
            let node = state.node_of(pod)?;
            let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            *want_req
                .entry(node.clone())
                .or_default()
                .entry(k(&[&g.service, &g.method, code, "unary", reporter]))
                .or_default() += n;
            *want_dur
                .entry(node.clone())
                .or_default()
                .entry(k(&[&g.service, &g.method, "unary", reporter]))
                .or_default() += n;
            *want_h2
                .entry(node)
                .or_default()
                .entry(k(&["POST", "200", reporter]))
                .or_default() += n;
        }
    }
    for n in &nodes {
        let addr = c.metrics_addr(n)?;
        let samples = parse(&c.in_router(move || scrape(addr))??);
        let got = group(
            &samples,
            "hubble_grpc_requests_total",
            &[
                "grpc_service",
                "grpc_method",
                "grpc_code",
                "grpc_type",
                "reporter",
            ],
        );
        assert_eq!(
            got,
            want_req.get(n).cloned().unwrap_or_default(),
            "hubble_grpc_requests_total on {n}"
        );
        let got = group(
            &samples,
            "hubble_grpc_request_duration_seconds_count",
            &["grpc_service", "grpc_method", "grpc_type", "reporter"],
        );
        assert_eq!(
            got,
            want_dur.get(n).cloned().unwrap_or_default(),
            "hubble_grpc_request_duration_seconds count on {n}"
        );
        let h2: Vec<Sample> = samples
            .iter()
            .filter(|s| s.labels.get("protocol").map(String::as_str) == Some("HTTP/2"))
            .cloned()
            .collect();
        let got = group(
            &h2,
            "hubble_http_requests_total",
            &["method", "status", "reporter"],
        );
        assert_eq!(
            got,
            want_h2.get(n).cloned().unwrap_or_default(),
            "hubble_http_requests_total{{protocol=\"HTTP/2\"}} on {n}"
        );
        // Zero wrong or partial calls: the parser never lost its place.
        for m in [
            "flowd_http2_partial_messages_total",
            "flowd_http2_walk_losses_total",
        ] {
            let v: f64 = samples
                .iter()
                .filter(|s| s.name == m)
                .map(|s| s.value)
                .sum();
            assert_eq!(v, 0.0, "{m} on {n}");
        }
        eprintln!(
            "{n}: hubble_grpc_requests_total {:?}",
            want_req.get(n).cloned().unwrap_or_default()
        );
    }
    Ok(())
}
