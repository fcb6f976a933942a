//! The relay's web UI in a real browser (root): the lab with flowd on every
//! node, the relay with `--ui-listen` in the router namespace, Debian's
//! headless Chromium (chromedriver) in the same namespace, and the lab's
//! generator sending its known mix once.
//!
//! The expected service map is derived from the generator's report
//! (`expected`: every exchange the mix causes, downstream calls and DNS
//! lookups included, per the lab's rules) and the pods' placement, never
//! from observed output: nodes are workloads (`namespace/deployment`) and
//! the world by its DNS name; an edge per client, server, protocol and port;
//! requests and errors per edge counted once per exchange.
//!
//! Screenshots of the map and the flows view are written under the test's
//! output directory (`target/tmp/ui-lab/`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use flowd_lab::browser::{Browser, WAIT};
use flowd_lab::cluster::{Cluster, ClusterOptions};
use flowd_lab::{LabState, TrafficReport};
use flowd_proto::observer::GetFlowsRequest;
use serde_json::{Value, json};

const UI_PORT: u16 = 12000;

/// Relay settings: short drain timeout and quick reconnection (as relay_e2e).
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

fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-lab")
}

/// An edge of the map: (client, server, protocol, port).
type EdgeKey = (String, String, String, u16);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    requests: u64,
    errors: u64,
}

fn workload_of(state: &LabState, ns: &str, pod: &str) -> Result<String> {
    state
        .pods
        .iter()
        .find(|p| p.namespace == ns && p.name == pod)
        .map(|p| format!("{}/{}", p.namespace, p.deployment))
        .with_context(|| format!("no pod {ns}/{pod} in the lab"))
}

/// The map the mix must give: edges with their request and error counts.
fn expected_map(state: &LabState, report: &TrafficReport) -> Result<BTreeMap<EdgeKey, Counts>> {
    let mut out: BTreeMap<EdgeKey, Counts> = BTreeMap::new();
    for h in &report.expected.http {
        let client = workload_of(state, &h.source_namespace, &h.source_pod)?;
        let server = match (&h.destination_namespace, &h.destination_pod) {
            (Some(ns), Some(pod)) => workload_of(state, ns, pod)?,
            // The outside world, by the DNS name the client resolved.
            _ => format!("dns:{}", h.destination_service),
        };
        let c = out
            .entry((client, server, "HTTP".into(), h.destination_port))
            .or_default();
        c.requests += u64::from(h.count);
        if h.status >= 400 {
            c.errors += u64::from(h.count);
        }
    }
    // gRPC calls: an error is a call that did not end OK.
    for g in &report.expected.grpc {
        let client = workload_of(state, &g.source_namespace, &g.source_pod)?;
        let (Some(ns), Some(pod)) = (&g.destination_namespace, &g.destination_pod) else {
            bail!("a gRPC call leaves the cluster: {g:?}");
        };
        let server = workload_of(state, ns, pod)?;
        let c = out
            .entry((client, server, "gRPC".into(), g.destination_port))
            .or_default();
        c.requests += u64::from(g.count);
        if g.code != Some(0) {
            c.errors += u64::from(g.count);
        }
    }
    for d in &report.expected.dns {
        let client = workload_of(state, &d.source_namespace, &d.source_pod)?;
        let dns = state
            .pods
            .iter()
            .find(|p| p.ip == d.server_ip)
            .with_context(|| format!("no pod serves DNS at {}", d.server_ip))?;
        let c = out
            .entry((
                client,
                format!("{}/{}", dns.namespace, dns.deployment),
                "DNS".into(),
                53,
            ))
            .or_default();
        c.requests += u64::from(d.count);
        if d.rcode == "NXDOMAIN" || d.rcode == "SERVFAIL" {
            c.errors += u64::from(d.count);
        }
    }
    Ok(out)
}

/// The edges the page shows (from the SVG's data attributes).
const READ_EDGES: &str = r#"
return [...document.querySelectorAll('#map-svg g.edge')].map(g => ({
  source: g.dataset.source, target: g.dataset.target, protocol: g.dataset.protocol,
  port: Number(g.dataset.port), requests: Number(g.dataset.requests), errors: Number(g.dataset.errors),
  label: g.getAttribute('aria-label'), err: g.classList.contains('err'),
  stroke: getComputedStyle(g.querySelector('path.line')).stroke,
}));"#;

const READ_NODES: &str =
    "return [...document.querySelectorAll('#map-svg g.node')].map(g => g.dataset.id);";

fn page_edges(b: &Browser) -> Result<BTreeMap<EdgeKey, (Counts, Value)>> {
    let v = b.eval(READ_EDGES, Vec::new())?;
    let mut out = BTreeMap::new();
    for e in v.as_array().context("edges: not an array")? {
        let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        let n = |k: &str| e[k].as_u64().unwrap_or(u64::MAX);
        out.insert(
            (s("source"), s("target"), s("protocol"), n("port") as u16),
            (
                Counts {
                    requests: n("requests"),
                    errors: n("errors"),
                },
                e.clone(),
            ),
        );
    }
    Ok(out)
}

fn generation(b: &Browser) -> Result<u64> {
    Ok(b.eval(
        "return Number(document.getElementById('map-updated').dataset.generation);",
        Vec::new(),
    )?
    .as_u64()
    .unwrap_or(0))
}

/// Waits until the map has refreshed `n` more times (the page's own counter).
fn wait_refreshes(b: &Browser, n: u64) -> Result<()> {
    let target = generation(b)? + n;
    b.wait_js(
        &format!("map refresh #{target}"),
        &format!(
            "return Number(document.getElementById('map-updated').dataset.generation) >= {target};"
        ),
        WAIT,
    )?;
    Ok(())
}

fn diff(want: &BTreeMap<EdgeKey, Counts>, got: &BTreeMap<EdgeKey, Counts>) -> String {
    let keys: BTreeSet<&EdgeKey> = want.keys().chain(got.keys()).collect();
    let mut s = String::new();
    for k in keys {
        let (w, g) = (want.get(k), got.get(k));
        if w != g {
            s.push_str(&format!("  {k:?}: want {w:?}, page {g:?}\n"));
        }
    }
    s
}

/// Sightings of responses by (source, destination, status, node, point).
type RowCounts = BTreeMap<(String, String, String, String, String), usize>;

/// One row of the flows table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    source: String,
    destination: String,
    status: String,
    node: String,
    point: String,
    uuid: String,
}

const READ_ROWS: &str = r#"
return [...document.querySelectorAll('#flows-table tbody tr')].map(r => ({
  source: r.dataset.source, destination: r.dataset.destination, status: r.dataset.status,
  node: r.dataset.node, point: r.dataset.point, uuid: r.dataset.uuid }));"#;

fn rows(b: &Browser) -> Result<Vec<Row>> {
    let v = b.eval(READ_ROWS, Vec::new())?;
    let mut out: Vec<Row> = v
        .as_array()
        .context("rows: not an array")?
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            Row {
                source: s("source"),
                destination: s("destination"),
                status: s("status"),
                node: s("node").rsplit('/').next().unwrap_or_default().to_string(),
                point: s("point"),
                uuid: s("uuid"),
            }
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Waits until the table holds exactly `n` rows, then for the stream to
/// stay quiet past the relay's drain timeout (a duplicate would show).
fn wait_rows(b: &Browser, n: usize) -> Result<Vec<Row>> {
    b.wait_js(
        &format!("{n} rows in the flows table"),
        &format!(
            "const s = document.getElementById('flows-state'); return s.dataset.state === 'following' && document.querySelectorAll('#flows-table tbody tr').length >= {n};"
        ),
        WAIT,
    )?;
    let received = b.eval(
        "return Number(document.getElementById('flows-state').dataset.received);",
        Vec::new(),
    )?;
    // Quiet for longer than the relay's drain timeout and one render: the
    // count must not move (polled, bounded).
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let now = b.eval(
            "return Number(document.getElementById('flows-state').dataset.received);",
            Vec::new(),
        )?;
        ensure!(
            now == received,
            "more flows arrived after the table was complete: {received} then {now}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    rows(b)
}

/// The sightings of HTTP responses from `server` to `client` (pods) with a
/// status ≥ 400, per the report: (source, destination, status, node, point).
fn expected_error_rows(
    state: &LabState,
    report: &TrafficReport,
    client_deploy: &str,
    server_deploy: &str,
) -> Result<RowCounts> {
    let mut out = BTreeMap::new();
    for h in &report.expected.http {
        if h.status < 400 {
            continue;
        }
        let client = state
            .pods
            .iter()
            .find(|p| p.namespace == h.source_namespace && p.name == h.source_pod)
            .context("client pod")?;
        let Some(server) = state.pods.iter().find(|p| {
            Some(&p.namespace) == h.destination_namespace.as_ref()
                && Some(&p.name) == h.destination_pod.as_ref()
        }) else {
            continue;
        };
        if client.deployment != client_deploy || server.deployment != server_deploy {
            continue;
        }
        // Responses: leaving the server's veth, entering the client's.
        for (node, point) in [
            (&server.node, "FROM_ENDPOINT"),
            (&client.node, "TO_ENDPOINT"),
        ] {
            *out.entry((
                server.key(),
                client.key(),
                h.status.to_string(),
                node.clone(),
                point.to_string(),
            ))
            .or_default() += h.count as usize;
        }
    }
    Ok(out)
}

fn row_counts(rows: &[Row]) -> RowCounts {
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry((
            r.source.clone(),
            r.destination.clone(),
            r.status.clone(),
            r.node.clone(),
            r.point.clone(),
        ))
        .or_default() += 1;
    }
    out
}

fn node_state(b: &Browser, node: &str) -> Result<String> {
    Ok(b.eval(
        "const li = document.querySelector(`#status-nodes li[data-node='${arguments[0]}']`); return li ? li.dataset.state : '';",
        vec![json!(node)],
    )?
    .as_str()
    .unwrap_or_default()
    .to_string())
}

#[test]
fn ui_service_map_flows_and_status_on_the_lab() -> Result<()> {
    ensure!(
        is_root(),
        "needs root (network namespaces, eBPF); run as root"
    );
    let out = out_dir();
    std::fs::create_dir_all(&out)?;
    let mut relay_args: Vec<String> = RELAY_ARGS.iter().map(|s| s.to_string()).collect();
    relay_args.extend(["--ui-listen".into(), format!("127.0.0.1:{UI_PORT}")]);
    let mut c = Cluster::start(ClusterOptions {
        relay: true,
        relay_args,
        ..Default::default()
    })?;
    let state = c.lab().state().clone();
    let report = c.run_traffic()?;
    let want = expected_map(&state, &report)?;
    eprintln!("expected map ({} edges):", want.len());
    for (k, v) in &want {
        eprintln!("  {k:?}: {v:?}");
    }
    // Every exchange has reached the nodes (and so the relay's stream):
    // the HTTP responses of the mix (gRPC calls' HTTP/2 ones too), each seen
    // at least once via the relay.
    let http_total = report.expected.http_total() + report.expected.grpc_total();
    c.wait_flows(
        c.relay_addr(),
        GetFlowsRequest {
            number: 100_000,
            whitelist: vec![flowd_proto::flow::FlowFilter {
                http_status_code: vec!["100-599".into()],
                ..Default::default()
            }],
            ..Default::default()
        },
        Duration::from_secs(30),
        |f| f.len() >= http_total as usize,
    )?;

    let b = Browser::start(Some(c.lab().router_netns()), &out, 1280, 800)?;
    let base = format!("http://127.0.0.1:{UI_PORT}");

    // --- The service map equals the lab's call graph, within one refresh.
    b.goto(&format!("{base}/map?window=5m"))?;
    b.wait_js(
        "the first map",
        "return Number(document.getElementById('map-updated').dataset.generation) >= 1;",
        WAIT,
    )?;
    // Everything the relay had when this refresh started is on the page.
    wait_refreshes(&b, 1)?;
    let got = page_edges(&b)?;
    let got_counts: BTreeMap<EdgeKey, Counts> =
        got.iter().map(|(k, (c, _))| (k.clone(), *c)).collect();
    ensure!(
        got_counts == want,
        "the map differs from the lab's call graph:\n{}",
        diff(&want, &got_counts)
    );
    let want_nodes: BTreeSet<String> = want
        .keys()
        .flat_map(|(a, b, _, _)| [a.clone(), b.clone()])
        .collect();
    let nodes: BTreeSet<String> = serde_json::from_value(b.eval(READ_NODES, Vec::new())?)?;
    ensure!(
        nodes == want_nodes,
        "map nodes: want {want_nodes:?}, page {nodes:?}"
    );
    // Error rates as shown, and error edges stand out by colour.
    for (k, (cnt, e)) in &got {
        let rate = if cnt.requests == 0 {
            0.0
        } else {
            cnt.errors as f64 / cnt.requests as f64
        };
        let shown = format!("{:.1}%", rate * 100.0);
        let label = e["label"].as_str().unwrap_or_default();
        ensure!(
            label.contains(&format!("{} errors ({shown})", cnt.errors)),
            "edge {k:?}: label {label:?} does not show {} errors ({shown})",
            cnt.errors
        );
        ensure!(
            e["err"].as_bool() == Some(cnt.errors > 0),
            "edge {k:?}: error colour {:?} with {} errors",
            e["err"],
            cnt.errors
        );
    }
    let strokes: BTreeSet<String> = got
        .values()
        .map(|(c, e)| format!("{}:{}", c.errors > 0, e["stroke"].as_str().unwrap_or("")))
        .collect();
    eprintln!("edge strokes (error?:colour): {strokes:?}");
    b.screenshot(&out.join("map.png"))?;
    eprintln!(
        "map: {} edges, {} nodes, as expected",
        got.len(),
        nodes.len()
    );

    // --- The layout stays put across refreshes.
    let positions = "return [...document.querySelectorAll('#map-svg g.node circle')].map(c => c.parentNode.dataset.id + '@' + c.getAttribute('cx') + ',' + c.getAttribute('cy')).sort();";
    let before = b.eval(positions, Vec::new())?;
    wait_refreshes(&b, 2)?;
    ensure!(
        b.eval(positions, Vec::new())? == before,
        "nodes moved between refreshes"
    );

    // --- Clicking the failing edge shows exactly its 4xx/5xx flows.
    let (client, server) = ("order-service", "payment-service");
    let edge_css = format!(
        "#map-svg g.edge[data-source='ecommerce/{client}'][data-target='ecommerce/{server}'][data-protocol='HTTP']"
    );
    let id = b.eval(
        &format!("return document.querySelector(\"{edge_css}\").dataset.id;"),
        Vec::new(),
    )?;
    let id = id.as_str().context("edge id")?.to_string();
    // The edge's label (drawn above every edge) is what a user clicks.
    b.click(&format!("#map-svg text.edge-label[data-edge=\"{id}\"]"))?;
    b.wait_js(
        "the edge's details",
        &format!(
            "return document.querySelector('[data-selected-edge]')?.dataset.selectedEdge === document.querySelector(\"{edge_css}\").dataset.id;"
        ),
        WAIT,
    )?;
    b.click("#link-errors")?;
    b.wait_js(
        "the flows view",
        "return document.body.dataset.view === 'flows';",
        WAIT,
    )?;
    let want_rows = expected_error_rows(&state, &report, client, server)?;
    let n: usize = want_rows.values().sum();
    ensure!(n > 0, "the mix has no {client} -> {server} errors");
    let got_rows = wait_rows(&b, n)?;
    ensure!(
        row_counts(&got_rows) == want_rows,
        "error flows of {client} -> {server}: want {want_rows:#?}\npage {:#?}",
        row_counts(&got_rows)
    );
    let url = b.eval("return location.href;", Vec::new())?;
    let url = url.as_str().context("location")?.to_string();
    eprintln!("error flows of {client} -> {server}: {n} rows as expected; view URL {url}");
    b.screenshot(&out.join("flows.png"))?;

    // --- A flow opens its full JSON.
    b.click("#flows-table tbody tr")?;
    let json_text = b.wait_js(
        "the flow's JSON",
        "const d = document.getElementById('flow-dialog'); return d.open ? document.getElementById('flow-json').textContent : null;",
        WAIT,
    )?;
    let flow: Value = serde_json::from_str(json_text.as_str().unwrap_or_default())?;
    let first_uuid = b.eval(
        "return document.querySelector('#flows-table tbody tr').dataset.uuid;",
        Vec::new(),
    )?;
    ensure!(
        flow["flow"]["uuid"] == first_uuid
            && flow["flow"]["l7"]["http"]["code"].as_u64() >= Some(400),
        "the dialog shows {flow}, not the flow of the first row ({first_uuid})"
    );
    b.click("#flow-dialog button")?;

    // --- The URL reproduces the same view (a fresh page load).
    let before_uuids: BTreeSet<String> = got_rows.iter().map(|r| r.uuid.clone()).collect();
    b.goto(&url)?;
    let again = wait_rows(&b, n)?;
    let after_uuids: BTreeSet<String> = again.iter().map(|r| r.uuid.clone()).collect();
    ensure!(
        before_uuids == after_uuids,
        "the link shows other flows: {before_uuids:?} vs {after_uuids:?}"
    );
    let form = b.eval(
        "return document.querySelector('#flows-filters [name=\"http-status\"]').value;",
        Vec::new(),
    )?;
    ensure!(form == json!("400-599"), "http-status field: {form}");

    // --- Follow, pause, resume: a second round arrives while paused.
    b.click("#flows-pause")?;
    b.wait_js(
        "paused",
        "return document.getElementById('flows-state').dataset.state === 'paused';",
        WAIT,
    )?;
    let report2 = c.run_traffic()?;
    let n2: usize = expected_error_rows(&state, &report2, client, server)?
        .values()
        .sum();
    b.wait_js(
        "the second round counted while paused",
        &format!(
            "return Number(document.getElementById('flows-state').dataset.received) >= {};",
            n + n2
        ),
        WAIT,
    )?;
    ensure!(rows(&b)?.len() == n, "the table changed while paused");
    b.click("#flows-pause")?;
    let resumed = wait_rows(&b, n + n2)?;
    ensure!(
        resumed.len() == n + n2,
        "after resume: {} rows",
        resumed.len()
    );

    // --- A map link with a namespace and window reproduces that map.
    b.goto(&format!("{base}/map?namespace=kube-system&window=15m"))?;
    b.wait_js(
        "the kube-system map",
        "return Number(document.getElementById('map-updated').dataset.generation) >= 1;",
        WAIT,
    )?;
    let sel = b.eval(
        "return [document.getElementById('map-namespace').value, document.getElementById('map-window').value];",
        Vec::new(),
    )?;
    ensure!(sel == json!(["kube-system", "15m"]), "map controls: {sel}");
    let dns_edges: BTreeSet<EdgeKey> = page_edges(&b)?.into_keys().collect();
    let want_dns: BTreeSet<EdgeKey> = want
        .keys()
        .filter(|(a, b, _, _)| a.starts_with("kube-system/") || b.starts_with("kube-system/"))
        .cloned()
        .collect();
    ensure!(
        dns_edges == want_dns,
        "kube-system map: want {want_dns:?}, page {dns_edges:?}"
    );

    // --- Narrow window: the same page, details under the map.
    b.set_size(480, 900)?;
    b.wait_js(
        "the narrow layout",
        "return getComputedStyle(document.querySelector('.map-layout')).gridTemplateColumns.split(' ').length === 1;",
        WAIT,
    )?;
    let overflow = b.eval(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
        Vec::new(),
    )?;
    ensure!(overflow == json!(true), "the narrow page scrolls sideways");
    b.screenshot(&out.join("map-narrow.png"))?;
    b.set_size(1280, 800)?;

    // --- No request left the relay's origin.
    let foreign = b.eval(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin));",
        Vec::new(),
    )?;
    ensure!(foreign == json!([]), "requests to other origins: {foreign}");

    // --- Accessibility basics: labelled controls, focusable map items.
    let unlabelled = b.eval(
        "return [...document.querySelectorAll('input, select, button')].filter(e => !(e.labels?.length || e.textContent.trim() || e.getAttribute('aria-label'))).map(e => e.outerHTML);",
        Vec::new(),
    )?;
    ensure!(unlabelled == json!([]), "unlabelled controls: {unlabelled}");
    let unreachable = b.eval(
        "return [...document.querySelectorAll('#map-svg g.node, #map-svg g.edge')].filter(g => g.getAttribute('tabindex') !== '0' || !g.getAttribute('aria-label')).length;",
        Vec::new(),
    )?;
    ensure!(
        unreachable == json!(0),
        "{unreachable} map items without keyboard access or label"
    );

    // --- A node killed in the lab shows as unavailable, and returns.
    b.goto(&format!("{base}/map?window=5m"))?;
    b.wait_js(
        "both nodes connected",
        "return document.getElementById('status-summary').dataset.connected === '2';",
        WAIT,
    )?;
    c.kill_flowd("node-b")?;
    b.wait_js(
        "node-b unavailable in the status",
        "return document.querySelector(\"#status-nodes li[data-node='node-b']\")?.dataset.state === 'unavailable';",
        WAIT,
    )?;
    ensure!(
        node_state(&b, "node-a")? == "connected",
        "node-a is not shown connected"
    );
    let summary = b.eval(
        "return document.getElementById('status-summary').textContent;",
        Vec::new(),
    )?;
    ensure!(
        summary == json!("Nodes: 1/2 connected, 1 unavailable"),
        "summary: {summary}"
    );
    b.screenshot(&out.join("status-node-down.png"))?;
    c.start_flowd("node-b")?;
    b.wait_js(
        "node-b connected again",
        "return document.querySelector(\"#status-nodes li[data-node='node-b']\")?.dataset.state === 'connected';",
        WAIT,
    )?;
    let lost = b.eval(
        "return document.getElementById('status-lost').dataset.value;",
        Vec::new(),
    )?;
    eprintln!("lost events shown: {lost}");
    if !out.exists() {
        bail!("no output directory");
    }
    eprintln!("screenshots in {}", out.display());
    Ok(())
}
