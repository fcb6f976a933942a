//! Issue 6 end to end: flowd on both nodes of the lab cluster (the example
//! ConfigMap's metrics), the lab's traffic mix, and every node's /metrics
//! scraped from the router namespace. Every expected value is derived from
//! the generator's TrafficReport (`expected`: every exchange the mix causes)
//! and the lab state — nothing is hard-coded:
//! - hubble_http_requests_total by reporter, method, protocol, status,
//!   source and destination (namespace, workload, IP, direction), summed
//!   over the nodes: each exchange between pods (gRPC calls as HTTP/2) once
//!   as client and once as server;
//! - the duration histogram's count equals the number of responses;
//! - hubble_dns_queries_total / responses by query, qtype, rcode and the
//!   number of addresses returned;
//! - hubble_tcp_flags_total: SYN, SYN-ACK once and FIN twice per connection;
//! - hubble_flows_processed_total equals what GetFlows returns, per node and type;
//! - then Debian's Prometheus in the router namespace scrapes both nodes and
//!   PromQL through its HTTP API returns the same values (Prometheus from
//!   `scripts/setup.sh`).
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod metrics_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use flowd_lab::cluster::{Cluster, ClusterOptions};
use flowd_lab::state::PodState;
use flowd_lab::traffic::TrafficReport;
use flowd_proto::flow::{Flow, layer7::Record};
use flowd_proto::observer::GetFlowsRequest;
use flowd_tests::{ChildGuard, wait_until};
use metrics_support::{Sample, parse, prometheus, scrape};

type Counts = BTreeMap<Vec<(String, String)>, f64>;

/// The labels of the example ConfigMap's httpV2 handler (labelsContext) plus
/// the handler's own; the key of an HTTP count.
const HTTP_LABELS: [&str; 11] = [
    "reporter",
    "method",
    "protocol",
    "status",
    "source_namespace",
    "source_workload",
    "source_ip",
    "destination_namespace",
    "destination_workload",
    "destination_ip",
    "traffic_direction",
];

fn key(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    let mut k: Vec<(String, String)> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    k.sort();
    k
}

/// Sums the samples named `name` grouped by `labels` (a missing label is "").
fn group(samples: &[Sample], name: &str, labels: &[&str]) -> Counts {
    let mut out = Counts::new();
    for s in samples.iter().filter(|s| s.name == name) {
        let k: Vec<(&str, String)> = labels
            .iter()
            .map(|l| (*l, s.labels.get(*l).cloned().unwrap_or_default()))
            .collect();
        *out.entry(key(&k)).or_default() += s.value;
    }
    out
}

fn diff(what: &str, want: &Counts, got: &Counts) -> Result<()> {
    if want == got {
        return Ok(());
    }
    let mut lines = Vec::new();
    for k in want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (w, g) = (want.get(k), got.get(k));
        if w != g {
            lines.push(format!("  {k:?}: expected {w:?}, got {g:?}"));
        }
    }
    bail!("{what} differs:\n{}", lines.join("\n"))
}

/// Hubble's rcode label for the lab's rcode mnemonic (NOERROR, NXDOMAIN, …).
fn hubble_rcode(mnemonic: &str) -> Result<String> {
    (0u16..4096)
        .find(|c| {
            flowd_lab::dns::rcode_name(<hickory_proto::op::ResponseCode as From<u16>>::from(*c))
                == mnemonic
        })
        .map(|c| flowd_proto::names::dns_rcode_metric(u32::from(c)).to_string())
        .with_context(|| format!("unknown rcode {mnemonic}"))
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// What the metrics must say, derived from the report and the lab state.
struct Expected {
    http: Counts,
    responses: f64,
    dns_queries: Counts,
    dns_responses: Counts,
    tcp: Counts,
    /// For PromQL: loadgen's requests by status as its client side counts them.
    loadgen_by_status: BTreeMap<String, f64>,
    nxdomain: f64,
}

fn pod<'a>(pods: &'a [PodState], ns: &str, name: &str) -> Result<&'a PodState> {
    pods.iter()
        .find(|p| p.namespace == ns && p.name == name)
        .with_context(|| format!("no pod {ns}/{name} in the lab"))
}

impl Expected {
    fn derive(c: &Cluster, r: &TrafficReport) -> Result<Expected> {
        let pods = c.lab().pods();
        let mut http = Counts::new();
        let mut responses = 0.0;
        let mut loadgen_by_status = BTreeMap::new();
        // gRPC calls count as the HTTP/2 requests they are (:status 200).
        let http_rows = r.expected.http.iter().map(|h| ("HTTP/1.1", h.clone()));
        let grpc_rows = r.expected.grpc.iter().map(|g| ("HTTP/2", g.as_http()));
        for (protocol, h) in http_rows.chain(grpc_rows) {
            let n = f64::from(h.count);
            let src = pod(pods, &h.source_namespace, &h.source_pod)?;
            let dst = match (&h.destination_namespace, &h.destination_pod) {
                (Some(ns), Some(p)) => Some(pod(pods, ns, p)?),
                _ => None,
            };
            let dst_ns = dst.map(|d| d.namespace.clone()).unwrap_or_default();
            let dst_wl = dst.map(|d| d.deployment.clone()).unwrap_or_default();
            // The client's veth sees the address it connected to; the
            // server's the pod's own. Only pods report.
            let mut sides = vec![("client", h.destination_ip, "egress")];
            if dst.is_some() {
                sides.push(("server", h.backend_ip, "ingress"));
            }
            for (reporter, dst_ip, dir) in sides {
                let k = key(&[
                    ("reporter", reporter.into()),
                    ("method", h.method.clone()),
                    ("protocol", protocol.into()),
                    ("status", h.status.to_string()),
                    ("source_namespace", src.namespace.clone()),
                    ("source_workload", src.deployment.clone()),
                    ("source_ip", h.source_ip.to_string()),
                    ("destination_namespace", dst_ns.clone()),
                    ("destination_workload", dst_wl.clone()),
                    ("destination_ip", dst_ip.to_string()),
                    ("traffic_direction", dir.into()),
                ]);
                *http.entry(k).or_default() += n;
                responses += n;
            }
            if h.source_namespace == r.source_namespace && h.source_pod == r.source_pod {
                *loadgen_by_status.entry(h.status.to_string()).or_default() += n;
            }
        }
        // DNS: the number of addresses an answer carries comes from the lab's records.
        let records = c.lab().state().dns_records();
        let mut dns_queries = Counts::new();
        let mut dns_responses = Counts::new();
        let mut nxdomain = 0.0;
        for d in &r.expected.dns {
            let n = f64::from(d.count);
            let rcode = hubble_rcode(&d.rcode)?;
            let ips = if d.rcode == "NOERROR" {
                records
                    .iter()
                    .filter(|(name, _)| fqdn(name) == fqdn(&d.name))
                    .count()
            } else {
                0
            };
            if d.rcode == "NXDOMAIN" {
                nxdomain += n;
            }
            let q = key(&[("query", fqdn(&d.name)), ("qtypes", d.qtype.clone())]);
            *dns_queries.entry(q).or_default() += n;
            let a = key(&[
                ("query", fqdn(&d.name)),
                ("qtypes", d.qtype.clone()),
                ("rcode", rcode),
                ("ips_returned", ips.to_string()),
            ]);
            *dns_responses.entry(a).or_default() += n;
        }
        // TCP: the generator's keep-alive connections, plus one connection
        // per downstream call, HTTP or gRPC (each call opens its own).
        let conns = f64::from(r.tcp_connections());
        let mut tcp = Counts::new();
        for (flag, per_conn) in [("SYN", 1.0), ("SYN-ACK", 1.0), ("FIN", 2.0)] {
            let k = key(&[("flag", flag.into()), ("family", "IPv4".into())]);
            tcp.insert(k, conns * per_conn);
        }
        Ok(Expected {
            http,
            responses,
            dns_queries,
            dns_responses,
            tcp,
            loadgen_by_status,
            nxdomain,
        })
    }
}

/// Every node's /metrics, parsed and concatenated (Prometheus' `sum` view).
/// Every node's samples together, and per node.
type Scraped = (Vec<Sample>, BTreeMap<String, Vec<Sample>>);

fn scrape_all(c: &Cluster) -> Result<Scraped> {
    let mut all = Vec::new();
    let mut per_node = BTreeMap::new();
    for n in c.node_names() {
        let addr = c.metrics_addr(&n)?;
        let text = c.in_router(move || scrape(addr))??;
        let samples = parse(&text);
        all.extend(samples.iter().cloned());
        per_node.insert(n, samples);
    }
    Ok((all, per_node))
}

/// A flow's (type, subtype) as hubble_flows_processed_total labels it.
fn flow_kind(f: &Flow) -> (&'static str, &'static str) {
    match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
        Some(Record::Http(_)) => ("L7", "HTTP"),
        Some(Record::Dns(_)) => ("L7", "DNS"),
        Some(Record::Kafka(_)) => ("L7", "Kafka"),
        None => ("L3/L4", ""),
    }
}

#[test]
fn metrics_on_real_traffic_match_the_report() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "needs root (network namespaces, eBPF)"
    );
    let started = Instant::now();
    let c = Cluster::start(ClusterOptions {
        // Room for every flow of the run, so GetFlows returns them all.
        set: vec![("hubble-event-buffer-capacity".into(), "65535".into())],
        ..Default::default()
    })?;
    let nodes = c.node_names();
    let report = c.run_traffic()?;
    let want = Expected::derive(&c, &report)?;
    eprintln!(
        "metrics_cluster: cluster up and traffic sent in {:.1}s; {} exchanges, {} DNS queries",
        started.elapsed().as_secs_f64(),
        report.expected.http_total(),
        report.expected.dns_total()
    );

    // The flows of the run are in once every node's seen_flows is stable;
    // the scrapes must then agree with the report exactly.
    for n in &nodes {
        c.wait_seen_flows_settled(
            c.flowd_addr(n)?,
            Duration::from_secs(2),
            Duration::from_secs(60),
        )?;
    }
    let (all, per_node) = scrape_all(&c)?;

    let http = group(&all, "hubble_http_requests_total", &HTTP_LABELS);
    diff("hubble_http_requests_total", &want.http, &http)?;
    let hist_count: f64 = group(&all, "hubble_http_request_duration_seconds_count", &[])
        .values()
        .sum();
    assert_eq!(
        hist_count, want.responses,
        "histogram count == number of responses"
    );
    // Per reporter and method too (the histogram's own labels).
    let by = [
        "reporter",
        "method",
        "source_workload",
        "destination_workload",
    ];
    assert_eq!(
        group(&all, "hubble_http_request_duration_seconds_count", &by),
        group(&all, "hubble_http_requests_total", &by),
        "histogram count per reporter/method/workloads"
    );

    let q = group(&all, "hubble_dns_queries_total", &["query", "qtypes"]);
    diff("hubble_dns_queries_total", &want.dns_queries, &q)?;
    let rcode_empty = group(&all, "hubble_dns_queries_total", &["rcode"]);
    ensure!(
        rcode_empty.keys().all(|k| k[0].1.is_empty()),
        "queries carry no rcode: {rcode_empty:?}"
    );
    let a = group(
        &all,
        "hubble_dns_responses_total",
        &["query", "qtypes", "rcode", "ips_returned"],
    );
    diff("hubble_dns_responses_total", &want.dns_responses, &a)?;

    let tcp = group(&all, "hubble_tcp_flags_total", &["flag", "family"]);
    diff("hubble_tcp_flags_total", &want.tcp, &tcp)?;

    // hubble_flows_processed_total == what GetFlows returns, per node and kind.
    let mut processed_total = 0.0;
    for n in &nodes {
        let addr = c.flowd_addr(n)?;
        let status = c.server_status(addr)?;
        let flows = c.get_flows(
            addr,
            GetFlowsRequest {
                number: 0,
                ..Default::default()
            },
        )?;
        let samples = &per_node[n];
        let processed: f64 = group(samples, "hubble_flows_processed_total", &[])
            .values()
            .sum();
        processed_total += processed;
        assert_eq!(processed, status.seen_flows as f64, "{n}: seen_flows");
        assert_eq!(processed, flows.len() as f64, "{n}: GetFlows");
        let mut by_kind: BTreeMap<(&str, &str), f64> = BTreeMap::new();
        for f in &flows {
            *by_kind.entry(flow_kind(f)).or_default() += 1.0;
        }
        let mut metric: BTreeMap<(&str, &str), f64> = BTreeMap::new();
        for s in samples
            .iter()
            .filter(|s| s.name == "hubble_flows_processed_total")
        {
            let k = match s.labels.get("type").map(String::as_str) {
                Some("L7") => match s.labels.get("subtype").map(String::as_str) {
                    Some("HTTP") => ("L7", "HTTP"),
                    Some("DNS") => ("L7", "DNS"),
                    _ => ("L7", "Kafka"),
                },
                _ => ("L3/L4", ""),
            };
            *metric.entry(k).or_default() += s.value;
        }
        assert_eq!(metric, by_kind, "{n}: flows processed by kind vs GetFlows");
        eprintln!("metrics_cluster: {n}: {processed} flows processed = GetFlows {by_kind:?}");
    }
    eprintln!(
        "metrics_cluster: exact: {} HTTP series ({} responses), {} DNS queries, TCP {:?}; {processed_total} flows; {:.1}s",
        want.http.len(),
        want.responses,
        want.dns_queries.values().sum::<f64>(),
        want.tcp.values().collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );

    through_prometheus(&c, &want)?;
    eprintln!(
        "metrics_cluster: done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Debian's Prometheus in the router namespace scrapes every node; PromQL
/// answers match the report.
fn through_prometheus(c: &Cluster, want: &Expected) -> Result<()> {
    let bin = prometheus::prometheus_binary().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let dir = TempDir(std::env::temp_dir().join(format!(
        "flowd-metrics-cluster-prometheus-{}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(dir.0.join("data"))?;
    let targets: Vec<String> = c
        .node_names()
        .iter()
        .map(|n| c.metrics_addr(n).map(|a| format!("'{a}'")))
        .collect::<Result<_>>()?;
    let cfg = dir.0.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: flowd\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )?;
    // Inside the router namespace: its own loopback, so a fixed port is free.
    let prom: SocketAddr = "127.0.0.1:9090".parse()?;
    let log_path = dir.0.join("prometheus.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = c.lab().command_in_router(&bin.to_string_lossy());
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.0.join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .stderr(log);
    let _proc = ChildGuard::spawn("prometheus", &mut cmd)?;
    let show_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let nodes = c.node_names().len() as f64;
    let query = |promql: String, label: &'static str| -> Result<BTreeMap<String, f64>> {
        Ok(
            c.in_router(move || async move { prometheus::query_by(prom, &promql, label).await })?
                .unwrap_or_default(),
        )
    };
    // Poll until Prometheus has scraped every node (its own schedule).
    wait_until(
        "Prometheus scraping every node",
        Duration::from_secs(90),
        || {
            let up = query("sum(up{job=\"flowd\"})".into(), "")?;
            Ok((up.get("") == Some(&nodes)).then_some(()))
        },
    )
    .with_context(|| format!("Prometheus log:\n{}", show_log()))?;

    // Waits for the query's answer to equal `want` (scrapes lag), then checks it.
    let check = |promql: &str, label: &'static str, want: &BTreeMap<String, f64>| -> Result<()> {
        let mut last = BTreeMap::new();
        let res = wait_until(promql, Duration::from_secs(30), || {
            last = query(promql.to_string(), label)?;
            Ok((last == *want).then_some(()))
        });
        if res.is_err() {
            bail!("PromQL {promql}: expected {want:?}, got {last:?}");
        }
        eprintln!("metrics_cluster: PromQL {promql} = {last:?}");
        Ok(())
    };
    let one = |v: f64| BTreeMap::from([(String::new(), v)]);
    check(
        "sum by (status) (hubble_http_requests_total{reporter=\"client\",source_workload=\"loadgen\"})",
        "status",
        &want.loadgen_by_status,
    )?;
    let clients: f64 = want
        .http
        .iter()
        .filter(|(k, _)| k.iter().any(|(n, v)| n == "reporter" && v == "client"))
        .map(|(_, v)| v)
        .sum();
    let servers: f64 = want.responses - clients;
    check(
        "sum by (reporter) (hubble_http_requests_total)",
        "reporter",
        &BTreeMap::from([
            ("client".to_string(), clients),
            ("server".to_string(), servers),
        ]),
    )?;
    check(
        "sum(hubble_http_request_duration_seconds_count)",
        "",
        &one(want.responses),
    )?;
    check(
        "sum(hubble_dns_responses_total{rcode=\"Non-Existent Domain\"})",
        "",
        &one(want.nxdomain),
    )?;
    let syn = want
        .tcp
        .iter()
        .find(|(k, _)| k.iter().any(|(n, v)| n == "flag" && v == "SYN"))
        .map(|(_, v)| *v)
        .context("SYN expectation")?;
    check("sum(hubble_tcp_flags_total{flag=\"SYN\"})", "", &one(syn))?;
    eprintln!(
        "metrics_cluster: Prometheus part {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
