//! Cilium's four Hubble Grafana dashboards (the Helm chart's
//! `install/kubernetes/cilium/files/hubble/dashboards/`, Cilium v1.19) and
//! flowd's own (`examples/grafana/flowd.json`) against flowd on lab traffic:
//! - flowd runs on both lab nodes with `examples/configmap.yaml` as it is;
//! - Debian's Prometheus runs in the lab's router namespace (its own
//!   loopback, so its port is its own), scrapes both nodes every second into
//!   a temporary directory, and is killed when the test ends, also on failure;
//! - two rounds of the lab's traffic mix, each with probes that give the
//!   troubleshooting panels something to show (a refused TCP connection, a
//!   DNS query nobody answers, ICMP echoes answered and ignored, a SYN a
//!   netfilter rule drops); Prometheus scrapes each round before the next, so
//!   counters grow between scrapes and `rate()` sees the traffic;
//! - every target expression of every panel, with the template variables
//!   filled with lab values, through `/api/v1/query_range` over the run. A
//!   target "returns data" when it has a finite value at some step. The
//!   targets listed as expected empty (with the reason) must be exactly the
//!   ones that return none.
//!
//! Cilium's dashboards are kept here as facts (panel title, PromQL), not as
//! copies of their files. The same run checks exactly what
//! `flows-to-world` counts and the ring buffer gauges.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod metrics_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use flowd_lab::cluster::{Cluster, ClusterOptions, in_netns};
use flowd_lab::traffic::TrafficReport;
use flowd_tests::flowd::TempDir;
use flowd_tests::{ChildGuard, wait_until};
use metrics_support::prometheus::{get, get_json, prometheus_binary, query_range, url_encode};
use metrics_support::{Sample, parse, scrape};

/// A dashboard panel: its title and the PromQL of its targets (A, B, …).
struct Panel {
    title: &'static str,
    exprs: &'static [&'static str],
}

const fn p(title: &'static str, exprs: &'static [&'static str]) -> Panel {
    Panel { title, exprs }
}

/// hubble-dashboard.json ("Hubble Metrics and Monitoring"); no variables.
const HUBBLE: &[Panel] = &[
    p(
        "Flows processed Per Node",
        &[
            "avg(sum(rate(hubble_flows_processed_total[1m])) by (pod))",
            "min(sum(rate(hubble_flows_processed_total[1m])) by (pod))",
            "max(sum(rate(hubble_flows_processed_total[1m])) by (pod))",
        ],
    ),
    p(
        "Flows Types",
        &["sum(rate(hubble_flows_processed_total[1m])) by (pod, type)"],
    ),
    p(
        "L7 Flow Distribution",
        &["sum(rate(hubble_flows_processed_total{type=\"L7\"}[1m])) by (pod, subtype)"],
    ),
    p(
        "Trace Flow Distribution",
        &["sum(rate(hubble_flows_processed_total{type=\"Trace\"}[1m])) by (pod, subtype)"],
    ),
    p(
        "Forwarded vs Dropped",
        &["sum(rate(hubble_flows_processed_total[1m])) by (pod, verdict)"],
    ),
    p(
        "Drop Reason",
        &["sum(rate(hubble_drop_total[1m])) by (pod, reason)"],
    ),
    p(
        "Protocol Usage",
        &["sum (rate(hubble_port_distribution_total[1m])) by (pod, protocol)"],
    ),
    p(
        "Top 10 Port Distribution",
        &[
            "topk(10, sum (rate(hubble_port_distribution_total{port!=\"0\"}[1m])) by (pod, port, protocol))",
        ],
    ),
    p(
        "TCPv4",
        &["sum(rate(hubble_tcp_flags_total{family=\"IPv4\"}[1m])) by (pod, flag)"],
    ),
    p(
        "Missing TCPv4 SYN-ACKs",
        &[
            "sum(rate(hubble_tcp_flags_total{family=\"IPv4\", flag=\"SYN\"}[1m])) by (pod) - sum(rate(hubble_tcp_flags_total{family=\"IPv4\", flag=\"SYN-ACK\"}[1m])) by (pod)",
        ],
    ),
    p(
        "TCPv6",
        &["sum(rate(hubble_tcp_flags_total{family=\"IPv6\"}[1m])) by (pod, flag)"],
    ),
    p(
        "Missing TCPv6 SYN-ACKs",
        &[
            "sum(rate(hubble_tcp_flags_total{family=\"IPv6\", flag=\"SYN\"}[1m])) by (pod) - sum(rate(hubble_tcp_flags_total{family=\"IPv6\", flag=\"SYN-ACK\"}[1m])) by (pod)",
        ],
    ),
    p(
        "ICMPv4",
        &["sum(rate(hubble_icmp_total{family=\"IPv4\"}[1m])) by (pod, type)"],
    ),
    p(
        "Missing ICMPv4 Echo-Reply",
        &[
            "sum(rate(hubble_icmp_total{family=\"IPv4\", type=\"EchoRequest\"}[1m])) by (pod) - sum(rate(hubble_icmp_total{family=\"IPv4\", type=\"EchoReply\"}[1m])) by (pod)",
        ],
    ),
    p(
        "ICMPv6",
        &["sum(rate(hubble_icmp_total{family=\"IPv6\"}[1m])) by (pod, type)"],
    ),
    p(
        "Missing ICMPv6 Echo-Reply",
        &[
            "sum(rate(hubble_icmp_total{family=\"IPv6\", type=\"EchoRequest\"}[1m])) by (pod) - sum(rate(hubble_icmp_total{family=\"IPv6\", type=\"EchoReply\"}[1m])) by (pod)",
        ],
    ),
    p(
        "Denies by Reason",
        &["sum(rate(hubble_drop_total{reason=\"POLICY_DENIED\"}[1m])) by (pod, reason)"],
    ),
    p(
        "Denied Packets by Protocol",
        &["sum(rate(hubble_drop_total{reason=\"POLICY_DENIED\"}[1m])) by (pod, protocol)"],
    ),
    p(
        "Top 10 Source Pods with Denied Packets",
        &["topk(10, sum(rate(hubble_drop_total{reason=\"POLICY_DENIED\"}[1m])) by (pod, source))"],
    ),
    p(
        "Top 10 Destination Pods with Denied Packets",
        &[
            "topk(10, sum(rate(hubble_drop_total{reason=\"POLICY_DENIED\"}[1m])) by (pod, destination))",
        ],
    ),
    p(
        "HTTP Requests",
        &["sum(rate(hubble_http_requests_total[1m])) by (pod, method)"],
    ),
    p(
        "HTTP responses",
        &["sum(rate(hubble_http_responses_total[1m])) by (pod, status)"],
    ),
    p(
        "HTTP Request/Response Latency (p50)",
        &["histogram_quantile(0.5, rate(hubble_http_request_duration_seconds_bucket[1m]))"],
    ),
    p(
        "HTTP Request/Response Latency (p99)",
        &["histogram_quantile(0.99, rate(hubble_http_request_duration_seconds_bucket[1m]))"],
    ),
    p(
        "HTTP Protocol Usage",
        &["sum(rate(hubble_http_requests_total[5m])) by (pod, protocol)"],
    ),
    p(
        "DNS Requests",
        &["sum(rate(hubble_dns_queries_total[1m])) by (pod, qtypes)"],
    ),
    p(
        "DNS responses",
        &["sum(rate(hubble_dns_responses_total{rcode=\"No Error\"}[1m])) by (pod, qtypes)"],
    ),
    p(
        "Missing DNS Responses",
        &[
            "sum(rate(hubble_dns_queries_total[1m])) by (pod, qtypes) - sum(rate(hubble_dns_responses_total[1m])) by (pod, qtypes)",
        ],
    ),
    p(
        "DNS Response Record Type",
        &["sum(rate(hubble_dns_response_types_total[1m])) by (pod, type)"],
    ),
    p(
        "DNS Response IPs Returned",
        &["sum(rate(hubble_dns_responses_total{rcode=\"No Error\"}[1m])) by (pod,ips_returned)"],
    ),
    p(
        "DNS Errors",
        &["sum(rate(hubble_dns_responses_total{rcode!=\"No Error\"}[1m])) by (pod, qtypes, rcode)"],
    ),
    p(
        "Pods with DNS errors",
        &[
            "topk(10,sum(rate(hubble_dns_responses_total{rcode!=\"No Error\"}[1m])) by (pod, destination))",
        ],
    ),
    p(
        "Top 10 DNS Queries per minute",
        &["topk(10, sum(rate(hubble_dns_queries_total[10m])*60) by (query, qtypes))"],
    ),
];

const IPV4_ONLY: &str = "the lab's traffic is IPv4 only (IPv6 is off in its namespaces)";

const HUBBLE_EMPTY: &[(&str, &str)] = &[
    ("TCPv6", IPV4_ONLY),
    ("Missing TCPv6 SYN-ACKs", IPV4_ONLY),
    ("ICMPv6", IPV4_ONLY),
    ("Missing ICMPv6 Echo-Reply", IPV4_ONLY),
    (
        "HTTP responses",
        "hubble_http_responses_total is the deprecated http handler's; the example enables httpV2 \
         (Hubble refuses both at once), whose hubble_http_requests_total carries the status",
    ),
];

/// hubble-dns-namespace.json ("Hubble / DNS Overview (Namespace)").
const DNS_NAMESPACE: &[Panel] = &[
    p(
        "DNS queries",
        &[
            "sum(rate(hubble_dns_queries_total{cluster=~\"$cluster\", source_namespace=~\"$source_namespace\", destination_namespace=~\"$destination_namespace\"}[$__rate_interval])) by (source) > 0",
        ],
    ),
    p(
        "Top 10 DNS queries",
        &[
            "topk(10, sum(rate(hubble_dns_queries_total{cluster=~\"$cluster\", source_namespace=~\"$source_namespace\", destination_namespace=~\"$destination_namespace\"}[$__rate_interval])*60) by (query))",
        ],
    ),
    p(
        "Missing DNS responses",
        &[
            "round(sum(rate(hubble_dns_queries_total{cluster=~\"$cluster\", source_namespace=~\"$source_namespace\", destination_namespace=~\"$destination_namespace\"}[$__rate_interval])) by (source) - sum(label_replace(sum(rate(hubble_dns_responses_total{cluster=~\"$cluster\", source_namespace=~\"$destination_namespace\", destination_namespace=~\"$source_namespace\"}[$__rate_interval])) by (destination), \"source\", \"$1\", \"destination\", \"(.*)\")) without (destination), 0.001) > 0",
        ],
    ),
    p(
        "DNS errors",
        &[
            "sum(rate(hubble_dns_responses_total{cluster=~\"$cluster\", source_namespace=~\"$destination_namespace\", destination_namespace=~\"$source_namespace\", rcode!=\"No Error\"}[$__rate_interval])) by (destination, rcode) > 0",
        ],
    ),
];

/// hubble-network-overview-namespace.json ("Hubble / Network Overview (Namespace)").
const NETWORK_NAMESPACE: &[Panel] = &[
    p(
        "Flows processed by type",
        &[
            "sum(rate(hubble_flows_processed_total{cluster=~\"$cluster\", source_namespace=~\"$source_namespace\", destination_namespace=~\"$destination_namespace\"}[$__rate_interval])) by (type, subtype)",
        ],
    ),
    p(
        "Flows processed by verdict",
        &[
            "sum(rate(hubble_flows_processed_total{cluster=~\"$cluster\", source_namespace=~\"$source_namespace\", destination_namespace=~\"$destination_namespace\"}[$__rate_interval])) by (verdict)",
        ],
    ),
    p(
        "Top 10 sources",
        &[
            "topk(10, sum(rate(hubble_flows_processed_total{cluster=~\"$cluster\", source_namespace=~\"$source_namespace\", destination_namespace=~\"$destination_namespace\"}[$__rate_interval])) by (source))",
        ],
    ),
    p(
        "Top 10 destinations",
        &[
            "topk(10, sum(rate(hubble_flows_processed_total{cluster=~\"$cluster\", source_namespace=~\"$source_namespace\", destination_namespace=~\"$destination_namespace\"}[$__rate_interval])) by (destination))",
        ],
    ),
    p(
        "Missing TCP SYN-ACKs",
        &[
            "sum(rate(hubble_tcp_flags_total{cluster=~\"$cluster\", source_namespace=~\"$source_namespace\", destination_namespace=~\"$destination_namespace\", flag=\"SYN\"}[$__rate_interval])) by (source) - sum(label_replace(sum(rate(hubble_tcp_flags_total{cluster=~\"$cluster\", source_namespace=~\"$destination_namespace\", destination_namespace=~\"$source_namespace\", flag=\"SYN-ACK\"}[$__rate_interval])) by (destination), \"source\", \"$1\", \"destination\", \"(.*)\")) without (destination) > 0",
        ],
    ),
    p(
        "Missing ICMP Echo Replies",
        &[
            "sum(rate(hubble_icmp_total{cluster=~\"$cluster\", source_namespace=~\"$source_namespace\", destination_namespace=~\"$destination_namespace\", type=\"EchoRequest\"}[$__rate_interval])) by (source) - sum(label_replace(sum(rate(hubble_icmp_total{cluster=~\"$cluster\", source_namespace=~\"$destination_namespace\", destination_namespace=~\"$source_namespace\", type=\"EchoReply\"}[$__rate_interval])) by (destination), \"source\", \"$1\", \"destination\", \"(.*)\")) without (destination) > 0",
        ],
    ),
    p(
        "Network Policy drops by source",
        &[
            "sum(rate(hubble_drop_total{cluster=~\"$cluster\", source_namespace=~\"$source_namespace\", destination_namespace=~\"$destination_namespace\"}[$__rate_interval])) by (source, reason) > 0",
        ],
    ),
    p(
        "Network Policy drops by destination",
        &[
            "sum(rate(hubble_drop_total{cluster=~\"$cluster\", source_namespace=~\"$source_namespace\", destination_namespace=~\"$destination_namespace\"}[$__rate_interval])) by (destination, reason) > 0",
        ],
    ),
];

/// hubble-l7-http-metrics-by-workload.json ("Hubble L7 HTTP Metrics by Workload").
const L7_HTTP: &[Panel] = &[
    p(
        "Incoming Request Volume",
        &[
            "round(sum(rate(hubble_http_requests_total{reporter=~\"${reporter}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\"}[$__rate_interval])), 0.001)",
        ],
    ),
    p(
        "Incoming Request Success Rate (non-5xx responses)",
        &[
            "sum(rate(hubble_http_requests_total{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\", status!~\"5.*\"}[$__rate_interval]))\n/\nsum(rate(hubble_http_requests_total{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\"}[$__rate_interval]))",
        ],
    ),
    p(
        "Request Duration",
        &[
            "histogram_quantile(0.50, sum(rate(hubble_http_request_duration_seconds_bucket{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\"}[$__rate_interval])) by (le))",
            "histogram_quantile(0.95, sum(rate(hubble_http_request_duration_seconds_bucket{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\"}[$__rate_interval])) by (le))",
            "histogram_quantile(0.99, sum(rate(hubble_http_request_duration_seconds_bucket{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\"}[$__rate_interval])) by (le))",
        ],
    ),
    p(
        "Incoming Requests by Source and Response Code",
        &[
            "round(sum(rate(hubble_http_requests_total{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\", source_namespace=~\"${source_namespace}\", source_workload=~\"${source_workload}\"}[$__rate_interval])) by (cluster, source_namespace, source_workload, status), 0.001)",
        ],
    ),
    p(
        "Incoming Request Success Rate (non-5xx responses) By Source",
        &[
            "sum(rate(hubble_http_requests_total{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\", source_namespace=~\"${source_namespace}\", source_workload=~\"${source_workload}\",status!~\"5.*\"}[$__rate_interval])) by (cluster, source_namespace, source_workload)\n/\nsum(rate(hubble_http_requests_total{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\", source_namespace=~\"${source_namespace}\", source_workload=~\"${source_workload}\"}[$__rate_interval])) by (cluster, source_namespace, source_workload)",
        ],
    ),
    p(
        "HTTP Request Duration by Source",
        &[
            "histogram_quantile(0.50, sum(rate(hubble_http_request_duration_seconds_bucket{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\", source_namespace=~\"${source_namespace}\", source_workload=~\"${source_workload}\"}[$__rate_interval])) by (cluster, source_namespace, source_workload, le))",
            "histogram_quantile(0.95, sum(rate(hubble_http_request_duration_seconds_bucket{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\", source_namespace=~\"${source_namespace}\", source_workload=~\"${source_workload}\"}[$__rate_interval])) by (cluster, source_namespace, source_workload, le))",
            "histogram_quantile(0.99, sum(rate(hubble_http_request_duration_seconds_bucket{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\", source_namespace=~\"${source_namespace}\", source_workload=~\"${source_workload}\"}[$__rate_interval])) by (cluster, source_namespace, source_workload, le))",
        ],
    ),
    p(
        "CPU Usage by Source",
        &[
            "sum(\n    node_namespace_pod_container:container_cpu_usage_seconds_total:sum_irate{cluster=~\"${cluster}\", namespace=~\"${destination_namespace}\"}\n  * on(namespace,pod)\n    group_left(workload, workload_type) namespace_workload_pod:kube_pod_owner:relabel{cluster=~\"${cluster}\", namespace=~\"${destination_namespace}\", workload=~\"${source_workload}\"}\n) by (namespace, workload)",
        ],
    ),
    p(
        "Incoming Requests by Destination and Response Code",
        &[
            "round(sum(rate(hubble_http_requests_total{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\", source_namespace=~\"${source_namespace}\", source_workload=~\"${source_workload}\"}[$__rate_interval])) by (cluster, destination_namespace, destination_workload, status), 0.001)",
        ],
    ),
    p(
        "Incoming Request Success Rate (non-5xx responses) By Destination",
        &[
            "sum(rate(hubble_http_requests_total{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\", source_namespace=~\"${source_namespace}\", source_workload=~\"${source_workload}\",status!~\"5.*\"}[$__rate_interval])) by (cluster, destination_namespace, destination_workload)\n/\nsum(rate(hubble_http_requests_total{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\", source_namespace=~\"${source_namespace}\", source_workload=~\"${source_workload}\"}[$__rate_interval])) by (cluster, destination_namespace, destination_workload)",
        ],
    ),
    p(
        "HTTP Request Duration by Destination",
        &[
            "histogram_quantile(0.50, sum(rate(hubble_http_request_duration_seconds_bucket{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\", source_namespace=~\"${source_namespace}\", source_workload=~\"${source_workload}\"}[$__rate_interval])) by (cluster, destination_namespace, destination_workload, le))",
            "histogram_quantile(0.95, sum(rate(hubble_http_request_duration_seconds_bucket{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\", source_namespace=~\"${source_namespace}\", source_workload=~\"${source_workload}\"}[$__rate_interval])) by (cluster, destination_namespace, destination_workload, le))",
            "histogram_quantile(0.99, sum(rate(hubble_http_request_duration_seconds_bucket{cluster=~\"${cluster}\", destination_namespace=~\"${destination_namespace}\", destination_workload=~\"${destination_workload}\", reporter=\"${reporter}\", source_namespace=~\"${source_namespace}\", source_workload=~\"${source_workload}\"}[$__rate_interval])) by (cluster, destination_namespace, destination_workload, le))",
        ],
    ),
    p(
        "CPU Usage by Destination",
        &[
            "sum(\n    node_namespace_pod_container:container_cpu_usage_seconds_total:sum_irate{cluster=~\"${cluster}\", namespace=~\"${destination_namespace}\"}\n  * on(namespace,pod)\n    group_left(workload, workload_type) namespace_workload_pod:kube_pod_owner:relabel{cluster=~\"${cluster}\", namespace=~\"${destination_namespace}\", workload=\"${destination_workload}\"}\n) by (namespace, workload)",
        ],
    ),
];

const KUBE_PROMETHEUS: &str = "kube-prometheus recording rules over cAdvisor and \
    kube-state-metrics (node_namespace_pod_container:container_cpu_usage_seconds_total:sum_irate, \
    namespace_workload_pod:kube_pod_owner:relabel), not Hubble metrics";

const L7_HTTP_EMPTY: &[(&str, &str)] = &[
    ("CPU Usage by Source", KUBE_PROMETHEUS),
    ("CPU Usage by Destination", KUBE_PROMETHEUS),
];

/// Every panel of flowd's dashboard has data on the lab (the loss sources are
/// present at 0 from the start).
const FLOWD_EMPTY: &[(&str, &str)] = &[];

/// `$__rate_interval` as Grafana computes it for a data source whose scrape
/// interval is the test's 1 s: max(4 × scrape interval, step + scrape interval).
const RATE_INTERVAL: &str = "4s";
const SCRAPE_INTERVAL_S: u64 = 1;
const PROMETHEUS_ADDR: &str = "127.0.0.1:9090";
/// The kernel ring buffer size `flowd-ring-buffer-bytes` in examples/configmap.yaml.
const RING_BYTES: f64 = 8_388_608.0;

#[test]
fn cilium_and_flowd_dashboards_show_the_lab_traffic() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "needs root (network namespaces, eBPF)"
    );
    let prometheus_bin = prometheus_binary().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let c = Cluster::start(ClusterOptions::default())?;
    let prom = Prometheus::start(&c, &prometheus_bin)?;
    let nodes = c.node_names();
    prom.wait("Prometheus scraping every node", || {
        let up = prom.instant("sum(up{job=\"flowd\"})")?;
        Ok((up == Some(nodes.len() as f64)).then_some(()))
    })?;
    eprintln!(
        "metrics_dashboards: lab, flowd and Prometheus up in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let lab = Values::of(&c)?;
    let probes = Probes::setup(&c)?;
    let run_start = unix_now() - 1.0;
    let mut reports = Vec::new();
    for round in 1..=2u32 {
        reports.push(c.run_traffic()?);
        probes.send(&c, round)?;
        // Flows of the round processed, and Prometheus has scraped them all
        // (the next round's increments then land in later scrapes).
        let processed = settled_total(&c)?;
        prom.wait(&format!("Prometheus scraping round {round}"), || {
            let v = prom.instant("sum(flowd_flows_processed_total)")?;
            Ok((v == Some(processed)).then_some(()))
        })?;
        eprintln!(
            "metrics_dashboards: round {round}: {processed} flows processed, scraped at {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    let run_end = unix_now();

    let samples = scrape_all(&c)?;
    flows_to_world_counts_world_connections(&c, &samples, &reports)?;
    ring_gauges(&samples, &prom, run_start, run_end)?;

    let (ns, dns_ns) = (lab.namespace.clone(), lab.dns_namespace.clone());
    // Grafana's regex for a multi-value selection of both namespaces.
    let both = format!("({ns}|{dns_ns})");
    // No `cluster` label on any series (its variable has no values): an
    // empty regex matches a missing label, as Grafana's empty value does.
    let namespaced = vec![
        ("cluster", String::new()),
        ("source_namespace", ns.clone()),
        ("destination_namespace", both),
        ("__rate_interval", RATE_INTERVAL.to_string()),
    ];
    let l7 = vec![
        ("cluster", String::new()),
        ("destination_namespace", ns.clone()),
        ("destination_workload", lab.server_workload.clone()),
        ("reporter", "server".to_string()),
        ("source_namespace", ns.clone()),
        ("source_workload", lab.client_workload.clone()),
        ("__rate_interval", RATE_INTERVAL.to_string()),
    ];
    // The values the dashboards' variable queries offer include the lab's.
    for (label, selector, value) in [
        ("source_namespace", "", ns.as_str()),
        ("destination_namespace", "", dns_ns.as_str()),
        (
            "destination_workload",
            "hubble_http_requests_total",
            lab.server_workload.as_str(),
        ),
        ("reporter", "hubble_http_requests_total", "server"),
        (
            "source_workload",
            "hubble_http_requests_total",
            lab.client_workload.as_str(),
        ),
        ("job", "flowd_datapath_events_total", "flowd"),
    ] {
        let offered = prom.label_values(label, selector)?;
        ensure!(
            offered.contains(value),
            "variable {label}: {value:?} not among {offered:?}"
        );
    }

    let range = (run_start, unix_now());
    let mut total = 0;
    total += prom.check_dashboard(
        "hubble-dashboard",
        &panels(HUBBLE),
        &[],
        HUBBLE_EMPTY,
        range,
    )?;
    total += prom.check_dashboard(
        "hubble-dns-namespace",
        &panels(DNS_NAMESPACE),
        &namespaced,
        &[],
        range,
    )?;
    total += prom.check_dashboard(
        "hubble-network-overview-namespace",
        &panels(NETWORK_NAMESPACE),
        &namespaced,
        &[],
        range,
    )?;
    total += prom.check_dashboard(
        "hubble-l7-http-metrics-by-workload",
        &panels(L7_HTTP),
        &l7,
        L7_HTTP_EMPTY,
        range,
    )?;

    let (flowd_panels, flowd_vars) = flowd_dashboard(&repo_file("examples/grafana/flowd.json"))?;
    let mut vars = vec![("__rate_interval", RATE_INTERVAL.to_string())];
    for v in flowd_vars {
        vars.push(match v.as_str() {
            "job" => ("job", "flowd".to_string()),
            "namespace" => ("namespace", ns.clone()),
            other => bail!("flowd.json: variable ${other} has no lab value in this test"),
        });
    }
    total += prom.check_dashboard("flowd", &flowd_panels, &vars, FLOWD_EMPTY, range)?;
    eprintln!(
        "metrics_dashboards: {total} targets evaluated; done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Lab values the template variables take.
struct Values {
    namespace: String,
    dns_namespace: String,
    client_workload: String,
    server_workload: String,
}

impl Values {
    fn of(c: &Cluster) -> Result<Values> {
        let spec = &c.options().spec;
        let source = &spec.traffic.source;
        let (namespace, client) = source
            .split_once('/')
            .with_context(|| format!("traffic source {source:?}"))?;
        Ok(Values {
            namespace: namespace.to_string(),
            dns_namespace: spec.dns.namespace.clone(),
            client_workload: client.to_string(),
            server_workload: spec.traffic.target.clone(),
        })
    }
}

/// Traffic the mix does not make, for the troubleshooting panels, sent from
/// the traffic source to two pods on its node: a TCP SYN to a closed port
/// (refused: a SYN without SYN-ACK, a kernel NO_SOCKET drop), a DNS query to
/// a pod without a DNS server (no response, an ICMP port unreachable, a
/// NO_SOCKET drop), a SYN a netfilter rule in the second pod drops
/// (NETFILTER_DROP, which flowd reports as POLICY_DENIED), and a ping of each
/// pod (the second ignores echoes).
struct Probes {
    from: String,
    answering: Pod,
    silent: Pod,
}

struct Pod {
    ip: Ipv4Addr,
    workload: String,
}

/// The port the silent pod's netfilter rule drops.
const DROPPED_PORT: u16 = 82;
/// A port nobody listens on.
const CLOSED_PORT: u16 = 81;

impl Probes {
    fn setup(c: &Cluster) -> Result<Probes> {
        let lab = c.lab();
        let from = c.options().spec.traffic.source.clone();
        let pod = |key: &str| -> Result<&flowd_lab::PodState> {
            lab.pod(key).with_context(|| format!("no pod {key}"))
        };
        let (source, answering, silent) = (
            pod(&from)?,
            pod("ecommerce/inventory")?,
            pod("ecommerce/payment-service")?,
        );
        ensure!(
            source.node == answering.node && source.node == silent.node,
            "the probes expect {from}, {} and {} on one node",
            answering.key(),
            silent.key()
        );
        // Ping sockets for root, as distributions set it for `ping`: the
        // kernel hands each reply to its socket (a raw socket's reply would
        // also be freed as a NO_SOCKET drop).
        flowd_lab::netns::sysctls(
            &source.netns,
            vec![("net/ipv4/ping_group_range".into(), "0 0".into())],
        )?;
        flowd_lab::netns::sysctls(
            &silent.netns,
            vec![("net/ipv4/icmp_echo_ignore_all".into(), "1".into())],
        )?;
        let port = DROPPED_PORT.to_string();
        for args in [
            vec!["add", "table", "inet", "flowdtest"],
            vec![
                "add",
                "chain",
                "inet",
                "flowdtest",
                "input",
                "{ type filter hook input priority 0 ; }",
            ],
            vec![
                "add",
                "rule",
                "inet",
                "flowdtest",
                "input",
                "tcp",
                "dport",
                port.as_str(),
                "drop",
            ],
        ] {
            let out = lab
                .command_in_pod(&silent.key(), "nft")?
                .args(&args)
                .output()?;
            ensure!(
                out.status.success(),
                "nft {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let p = |s: &flowd_lab::PodState| Pod {
            ip: s.ip,
            workload: s.deployment.clone(),
        };
        Ok(Probes {
            answering: p(answering),
            silent: p(silent),
            from,
        })
    }

    fn netns(&self, c: &Cluster) -> Result<String> {
        Ok(c.lab()
            .pod_netns(&self.from)
            .context("probe source")?
            .to_string())
    }

    /// Sends the probes of round `round`. flowd reports a flow when it
    /// starts and then at most once per aggregation interval, and a ping
    /// repeats the same ICMP flow: the pings go on (as `ping` does) until
    /// flowd has reported this round's echoes.
    fn send(&self, c: &Cluster, round: u32) -> Result<()> {
        let ns = self.netns(c)?;
        let (answering, silent) = (self.answering.ip, self.silent.ip);
        in_netns(&ns, move || async move { probe(answering, silent).await })??;
        let source = c
            .lab()
            .pod(&self.from)
            .context("probe source")?
            .deployment
            .clone();
        let icmp = |s: &[Sample], typ: &str, src: &str, dst: &str| -> f64 {
            s.iter()
                .filter(|s| {
                    let l = |k: &str| s.labels.get(k).map(String::as_str);
                    s.name == "hubble_icmp_total"
                        && l("type") == Some(typ)
                        && l("source") == Some(src)
                        && l("destination") == Some(dst)
                })
                .map(|s| s.value)
                .sum()
        };
        let want = f64::from(round);
        wait_until(
            &format!("flowd reporting round {round}'s echoes"),
            Duration::from_secs(30),
            || {
                in_netns(&ns, move || async move {
                    ping(answering, true)?;
                    ping(silent, false)
                })??;
                let s = scrape_all(c)?;
                let (a, w) = (&self.answering.workload, &self.silent.workload);
                Ok((icmp(&s, "EchoRequest", &source, a) >= want
                    && icmp(&s, "EchoRequest", &source, w) >= want
                    && icmp(&s, "EchoReply", a, &source) >= want)
                    .then_some(()))
            },
        )
    }
}

async fn probe(answering: Ipv4Addr, silent: Ipv4Addr) -> Result<()> {
    use tokio::net::{TcpStream, UdpSocket};
    let refused = TcpStream::connect((answering, CLOSED_PORT)).await;
    ensure!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "TCP to {answering}:{CLOSED_PORT}: {refused:?}"
    );
    // A DNS query where no server listens: the ICMP port unreachable
    // comes back as ECONNREFUSED on the connected socket.
    let udp = UdpSocket::bind("0.0.0.0:0").await?;
    udp.connect((answering, 53)).await?;
    udp.send(&dns_query("flowd-probe.example.")?).await?;
    let mut buf = [0u8; 512];
    let got = tokio::time::timeout(Duration::from_secs(3), udp.recv(&mut buf)).await;
    ensure!(
        matches!(&got, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "DNS to {answering}:53: {got:?}"
    );
    // One SYN (no retransmission: the attempt ends before the kernel's 1 s).
    let dropped = tokio::time::timeout(
        Duration::from_millis(300),
        TcpStream::connect((silent, DROPPED_PORT)),
    )
    .await;
    ensure!(
        dropped.is_err(),
        "TCP to {silent}:{DROPPED_PORT} was answered: {dropped:?}"
    );
    Ok(())
}

fn dns_query(name: &str) -> Result<Vec<u8>> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut m = Message::new();
    m.set_id(0x2929)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    Ok(m.to_vec()?)
}

/// One ICMP echo request to `dst` from a ping socket (the kernel sets the
/// identifier and checksum); with `answered`, fails unless the reply comes
/// within 2 s.
fn ping(dst: Ipv4Addr, answered: bool) -> Result<()> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    use std::io::Read;
    let mut s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4))?;
    // Connected: only `dst`'s replies are read.
    s.connect(&SockAddr::from(SocketAddrV4::new(dst, 0)))?;
    let mut pkt = [0u8; 16];
    pkt[0] = 8; // echo request, code 0
    pkt[8..].copy_from_slice(b"flowd-29");
    s.send(&pkt)?;
    if !answered {
        return Ok(());
    }
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 64];
    let n = s
        .read(&mut buf)
        .with_context(|| format!("no echo reply from {dst}"))?;
    // A ping socket's message starts with the ICMP header: type 0 is a reply.
    ensure!(
        n >= 8 && buf[0] == 0,
        "not an echo reply from {dst}: {:?}",
        &buf[..n]
    );
    Ok(())
}

/// Waits until every node's flowd has processed the round (seen_flows
/// stable), then returns `flowd_flows_processed_total` summed over nodes.
fn settled_total(c: &Cluster) -> Result<f64> {
    for n in c.node_names() {
        c.wait_seen_flows_settled(
            c.flowd_addr(&n)?,
            Duration::from_secs(2),
            Duration::from_secs(60),
        )?;
    }
    Ok(scrape_all(c)?
        .iter()
        .filter(|s| s.name == "flowd_flows_processed_total")
        .map(|s| s.value)
        .sum())
}

/// Every node's /metrics, each sample labelled with its node.
fn scrape_all(c: &Cluster) -> Result<Vec<Sample>> {
    let mut all = Vec::new();
    for n in c.node_names() {
        let addr = c.metrics_addr(&n)?;
        let text = c.in_router(move || scrape(addr))??;
        all.extend(parse(&text).into_iter().map(|mut s| {
            s.labels.insert("node".into(), n.clone());
            s
        }));
    }
    Ok(all)
}

/// `flows-to-world:any-drop;port;syn-only;sourceContext=…;labelsContext=source_namespace`:
/// one count per TCP connection a pod opened to the world — in the lab, the
/// payment service's calls to the PSP (every round opens its own).
fn flows_to_world_counts_world_connections(
    c: &Cluster,
    samples: &[Sample],
    reports: &[TrafficReport],
) -> Result<()> {
    let mut want: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in reports {
        for h in r
            .expected
            .http
            .iter()
            .filter(|h| h.destination_namespace.is_none())
        {
            let workload = &c
                .lab()
                .pod(&format!("{}/{}", h.source_namespace, h.source_pod))
                .with_context(|| format!("no pod {}", h.source_pod))?
                .deployment;
            *want
                .entry((
                    h.source_namespace.clone(),
                    format!("{workload}:{}", h.destination_port),
                ))
                .or_default() += f64::from(h.count);
        }
    }
    ensure!(!want.is_empty(), "the lab's mix calls the world");
    let mut got: BTreeMap<(String, String), f64> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "hubble_flows_to_world_total")
    {
        let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        ensure!(
            l("protocol") == "TCP" && l("verdict") == "FORWARDED",
            "unexpected series {s:?}"
        );
        *got.entry((
            l("source_namespace"),
            format!("{}:{}", l("source"), l("port")),
        ))
        .or_default() += s.value;
    }
    ensure!(
        got == want,
        "hubble_flows_to_world_total: got {got:?}, want {want:?}"
    );
    eprintln!("metrics_dashboards: flows to the world {got:?}");
    Ok(())
}

/// flowd_ring_buffer_capacity_bytes is the configured size on every node;
/// flowd_ring_buffer_used_bytes moved during the traffic, within it.
fn ring_gauges(samples: &[Sample], prom: &Prometheus, start: f64, end: f64) -> Result<()> {
    let cap: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == "flowd_ring_buffer_capacity_bytes")
        .map(|s| s.value)
        .collect();
    ensure!(
        cap.len() == 2 && cap.iter().all(|v| *v == RING_BYTES),
        "flowd_ring_buffer_capacity_bytes {cap:?}"
    );
    let series = prom.range("flowd_ring_buffer_used_bytes", start, end)?;
    let used: Vec<f64> = series
        .iter()
        .flat_map(|s| s.values.iter().map(|(_, v)| *v))
        .collect();
    let max = used.iter().copied().fold(0.0, f64::max);
    ensure!(
        series.len() == 2 && max > 0.0 && max <= RING_BYTES,
        "flowd_ring_buffer_used_bytes over the run: {} series, max {max}",
        series.len()
    );
    eprintln!(
        "metrics_dashboards: ring buffer: most used {max} of {RING_BYTES} bytes ({} samples)",
        used.len()
    );
    Ok(())
}

/// A dashboard as (target id, PromQL): the id is the panel title, with the
/// target's refId when the panel has several.
type Targets = Vec<(String, String)>;

fn panels(ps: &[Panel]) -> Targets {
    let mut out = Vec::new();
    for p in ps {
        for (i, e) in p.exprs.iter().enumerate() {
            let id = if p.exprs.len() == 1 {
                p.title.to_string()
            } else {
                format!("{} [{}]", p.title, char::from(b'A' + i as u8))
            };
            out.push((id, e.to_string()));
        }
    }
    out
}

/// flowd's dashboard file: its targets and the names of its template
/// variables (the data source excepted).
fn flowd_dashboard(path: &Path) -> Result<(Targets, Vec<String>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let d: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = Vec::new();
    let mut stack: Vec<&serde_json::Value> = d["panels"]
        .as_array()
        .context("no panels")?
        .iter()
        .collect();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p["panels"].as_array() {
            stack.extend(inner);
        }
        let Some(targets) = p["targets"].as_array() else {
            continue;
        };
        let title = p["title"].as_str().context("panel without title")?;
        for t in targets {
            let expr = t["expr"].as_str().context("target without expr")?;
            let id = if targets.len() == 1 {
                title.to_string()
            } else {
                format!("{title} [{}]", t["refId"].as_str().unwrap_or("?"))
            };
            out.push((id, expr.to_string()));
        }
    }
    ensure!(!out.is_empty(), "flowd.json has no targets");
    let vars = d["templating"]["list"]
        .as_array()
        .context("no templating")?
        .iter()
        .filter(|v| v["type"] != "datasource")
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    Ok((out, vars))
}

/// `expr` with Grafana's variables (`$name`, `${name}`) replaced; refuses
/// one it does not know (`$1`, `${1}` are regex references, not variables).
fn fill(expr: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut sorted: Vec<&(&str, String)> = vars.iter().collect();
    // Longest first: `$source` must not eat the start of `$source_namespace`.
    sorted.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    let mut out = expr.to_string();
    for (n, v) in &sorted {
        out = out.replace(&format!("${{{n}}}"), v);
    }
    for (n, v) in &sorted {
        out = out.replace(&format!("${n}"), v);
    }
    let left = regex::Regex::new(r"\$\{?[A-Za-z_][A-Za-z0-9_]*")?;
    if let Some(m) = left.find(&out) {
        bail!("unfilled variable {} in {expr}", m.as_str());
    }
    Ok(out)
}

/// Prometheus in the router namespace, killed (and its directory removed)
/// on drop.
struct Prometheus {
    router: String,
    addr: SocketAddr,
    log: PathBuf,
    // Killed before the directory goes.
    _child: ChildGuard,
    _dir: TempDir,
}

impl Prometheus {
    fn start(c: &Cluster, bin: &Path) -> Result<Prometheus> {
        let dir = TempDir::new("dashboards-prometheus")?;
        let targets: Vec<String> = c
            .node_names()
            .iter()
            .map(|n| c.metrics_addr(n).map(|a| format!("'{a}'")))
            .collect::<Result<_>>()?;
        let cfg = dir.0.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: {SCRAPE_INTERVAL_S}s\n  scrape_timeout: {SCRAPE_INTERVAL_S}s\n  evaluation_interval: {SCRAPE_INTERVAL_S}s\n\
                 scrape_configs:\n  - job_name: flowd\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )?;
        let addr: SocketAddr = PROMETHEUS_ADDR.parse()?;
        let log = dir.0.join("prometheus.log");
        let mut cmd = c.lab().command_in_router(&bin.to_string_lossy());
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stderr(std::fs::File::create(&log)?);
        let child = ChildGuard::spawn("prometheus", &mut cmd)?;
        let p = Prometheus {
            router: c.lab().router_netns().to_string(),
            addr,
            log,
            _child: child,
            _dir: dir,
        };
        p.wait("Prometheus ready", || {
            let ready = in_netns(
                &p.router,
                move || async move { get(addr, "/-/ready").await },
            )?;
            Ok(matches!(ready, Ok((status, _)) if status.contains(" 200 ")).then_some(()))
        })?;
        Ok(p)
    }

    fn get(&self, path: String) -> Result<serde_json::Value> {
        let addr = self.addr;
        in_netns(
            &self.router,
            move || async move { get_json(addr, &path).await },
        )?
        .map_err(anyhow::Error::msg)
    }

    /// The single value of an instant query (None: no series yet).
    fn instant(&self, promql: &str) -> Result<Option<f64>> {
        let v = self.get(format!("/api/v1/query?query={}", url_encode(promql)))?;
        let result = v["data"]["result"].as_array().context("no result")?;
        Ok(match result.as_slice() {
            [one] => one["value"][1].as_str().and_then(|s| s.parse().ok()),
            _ => None,
        })
    }

    fn range(
        &self,
        promql: &str,
        start: f64,
        end: f64,
    ) -> Result<Vec<metrics_support::prometheus::RangeSeries>> {
        let (addr, q) = (self.addr, promql.to_string());
        in_netns(&self.router, move || async move {
            query_range(addr, &q, start, end, SCRAPE_INTERVAL_S as f64).await
        })?
        .map_err(anyhow::Error::msg)
    }

    /// Values of `label` (on the series of `selector`, all when empty).
    fn label_values(&self, label: &str, selector: &str) -> Result<BTreeSet<String>> {
        let mut path = format!("/api/v1/label/{label}/values");
        if !selector.is_empty() {
            path += &format!("?match[]={}", url_encode(selector));
        }
        let v = self.get(path)?;
        Ok(v["data"]
            .as_array()
            .context("no data")?
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect())
    }

    fn wait<T>(&self, what: &str, cond: impl FnMut() -> Result<Option<T>>) -> Result<T> {
        wait_until(what, Duration::from_secs(60), cond).with_context(|| {
            format!(
                "Prometheus log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }

    /// Evaluates every target over `range`; the ones without a finite value
    /// must be exactly `expected_empty`. Returns the number of targets.
    fn check_dashboard(
        &self,
        name: &str,
        targets: &Targets,
        vars: &[(&str, String)],
        expected_empty: &[(&str, &str)],
        (start, end): (f64, f64),
    ) -> Result<usize> {
        let mut empty = BTreeSet::new();
        for (id, expr) in targets {
            let q = fill(expr, vars)?;
            let series = self
                .range(&q, start, end)
                .with_context(|| format!("{name}: {id}: {q}"))?;
            let finite = series
                .iter()
                .flat_map(|s| s.values.iter())
                .filter(|(_, v)| v.is_finite())
                .count();
            if finite == 0 {
                empty.insert(id.clone());
            }
            eprintln!(
                "metrics_dashboards: {name}: {id}: {} series, {finite} finite values",
                series.len()
            );
        }
        let want: BTreeSet<String> = expected_empty.iter().map(|(t, _)| t.to_string()).collect();
        let ids: BTreeSet<&String> = targets.iter().map(|(id, _)| id).collect();
        for w in &want {
            ensure!(ids.contains(w), "{name}: no target {w:?} to expect empty");
        }
        if empty != want {
            let unexpected: Vec<_> = empty.difference(&want).collect();
            let missing: Vec<_> = want.difference(&empty).collect();
            bail!(
                "{name}: targets without data that should have some: {unexpected:?}; \
                 expected empty but with data: {missing:?}"
            );
        }
        eprintln!(
            "metrics_dashboards: {name}: {} targets, {} with data, expected empty: {}",
            targets.len(),
            targets.len() - empty.len(),
            expected_empty
                .iter()
                .map(|(t, why)| format!("{t} ({why})"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        Ok(targets.len())
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}
