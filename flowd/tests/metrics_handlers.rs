//! Hubble's metric handlers fed with synthetic flows: exact values as a
//! scraper sees them in the text exposition.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod metrics_support;

use std::time::{Duration, Instant};

use flowd::metrics::{DatapathTotals, Metrics, MetricsOptions};
use flowd::options::metrics::MetricsSpec;
use flowd_proto::flow::{
    DropReason, Endpoint, Flow, Grpc, LostEventSource, TraceObservationPoint, TrafficDirection,
    Verdict, grpc::Type as GrpcType, layer7::Record,
};
use metrics_support::*;

use TrafficDirection::{Egress, Ingress};

fn metrics(spec: &str) -> Metrics {
    metrics_with(spec, 10_000)
}

fn metrics_with(spec: &str, max_series: usize) -> Metrics {
    Metrics::new(&MetricsOptions {
        spec: MetricsSpec::parse(spec).unwrap(),
        max_series,
        series_ttl: None,
        open_metrics: true,
        count_once: true,
    })
}

fn scrape(m: &Metrics) -> Vec<Sample> {
    parse(&m.encode_prometheus())
}

const DEMO_HTTP: &str = "httpV2:exemplars=true;labelsContext=source_ip,source_namespace,source_workload,destination_ip,destination_namespace,destination_workload,traffic_direction";

#[test]
fn http_v2_counts_each_exchange_once_per_reporter() {
    let m = metrics(DEMO_HTTP);
    let client = pod("ecommerce", "loadgen-6d9f-abcde", "loadgen", "loadgen");
    let server = pod("ecommerce", "frontend-7c4b-xyz12", "frontend", "frontend");
    let (cip, sip) = ("10.244.2.7", "10.244.1.5");
    // (method, status, latency ms): 3 × GET 200, 2 × GET 404, 1 × POST 503.
    let mix = [
        ("GET", 200, 4),
        ("GET", 200, 30),
        ("GET", 200, 700),
        ("GET", 404, 2),
        ("GET", 404, 3),
        ("POST", 503, 12),
    ];
    for (method, code, ms) in mix {
        // Pods on one node: the exchange is seen at the client's veth
        // (EGRESS) and at the server's veth (INGRESS), 4 records in all.
        for dir in [Egress, Ingress] {
            for f in http_exchange(
                (&client, cip),
                (&server, sip),
                method,
                code,
                ms * 1_000_000,
                dir,
                Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            ) {
                m.process(&f);
            }
        }
    }
    let s = scrape(&m);
    let ctx = |reporter: &'static str, dir: &'static str| {
        vec![
            ("source_ip", cip),
            ("source_namespace", "ecommerce"),
            ("source_workload", "loadgen"),
            ("destination_ip", sip),
            ("destination_namespace", "ecommerce"),
            ("destination_workload", "frontend"),
            ("traffic_direction", dir),
            ("protocol", "HTTP/1.1"),
            ("reporter", reporter),
        ]
    };
    for (reporter, dir) in [("client", "egress"), ("server", "ingress")] {
        for (method, status, n) in [
            ("GET", "200", 3.0),
            ("GET", "404", 2.0),
            ("POST", "503", 1.0),
        ] {
            let mut l = ctx(reporter, dir);
            l.push(("method", method));
            l.push(("status", status));
            assert_eq!(
                get(&s, "hubble_http_requests_total", &l),
                Some(n),
                "{reporter} {method} {status}"
            );
        }
    }
    assert_eq!(count(&s, "hubble_http_requests_total"), 6);
    assert_eq!(sum(&s, "hubble_http_requests_total"), 12.0);

    // Duration: one observation per response and reporter.
    let hist = |reporter: &'static str, dir: &'static str, method: &'static str| {
        let mut l = ctx(reporter, dir);
        l.retain(|(k, _)| *k != "protocol");
        l.push(("method", method));
        l
    };
    let l = hist("client", "egress", "GET");
    assert_eq!(
        get(&s, "hubble_http_request_duration_seconds_count", &l),
        Some(5.0)
    );
    let sum_s = get(&s, "hubble_http_request_duration_seconds_sum", &l).unwrap();
    assert!((sum_s - 0.739).abs() < 1e-9, "{sum_s}");
    let bucket = |le: &'static str| {
        let mut b = l.clone();
        b.push(("le", le));
        get(&s, "hubble_http_request_duration_seconds_bucket", &b)
    };
    assert_eq!(bucket("0.005"), Some(3.0)); // 4 ms, 2 ms, 3 ms
    assert_eq!(bucket("0.05"), Some(4.0)); // + 30 ms
    assert_eq!(bucket("0.5"), Some(4.0));
    assert_eq!(bucket("1"), Some(5.0)); // + 700 ms
    assert_eq!(bucket("+Inf"), Some(5.0));
    assert_eq!(
        get(
            &s,
            "hubble_http_request_duration_seconds_count",
            &hist("server", "ingress", "POST")
        ),
        Some(1.0)
    );
    // The histogram's count equals the number of responses.
    assert_eq!(sum(&s, "hubble_http_request_duration_seconds_count"), 12.0);

    // Exemplars: only in OpenMetrics.
    let om = m.encode_openmetrics();
    assert!(
        om.contains("traceID=\"4bf92f3577b34da6a3ce929d0e0e4736\""),
        "{om}"
    );
    assert!(om.trim_end().ends_with("# EOF"));
    assert!(!m.encode_prometheus().contains("traceID"));
}

#[test]
fn http_v2_source_context_alternatives() {
    let m = metrics(
        "httpV2:sourceContext=workload-name|reserved-identity;destinationContext=workload-name|reserved-identity",
    );
    let client = pod(
        "ecommerce",
        "payment-service-1-a",
        "payment-service",
        "payment",
    );
    let psp = world();
    for f in http_exchange(
        (&client, "10.244.2.9"),
        (&psp, "198.51.100.10"),
        "POST",
        402,
        5_000_000,
        Egress,
        None,
    ) {
        m.process(&f);
    }
    let s = scrape(&m);
    assert_eq!(
        get(
            &s,
            "hubble_http_requests_total",
            &[
                ("source", "payment-service"),
                ("destination", "reserved:world"),
                ("method", "POST"),
                ("protocol", "HTTP/1.1"),
                ("status", "402"),
                ("reporter", "client"),
            ]
        ),
        Some(1.0)
    );
}

#[test]
fn http_v1_counts_requests_and_responses() {
    let m = metrics("http:sourceContext=pod;destinationContext=namespace");
    let client = pod("ecommerce", "loadgen-1", "loadgen", "loadgen");
    let server = pod("ecommerce", "frontend-1", "frontend", "frontend");
    for _ in 0..2 {
        for f in http_exchange(
            (&client, "10.0.0.1"),
            (&server, "10.0.0.2"),
            "GET",
            200,
            1_000_000,
            Egress,
            None,
        ) {
            m.process(&f);
        }
    }
    let s = scrape(&m);
    // Request records: source = client.
    assert_eq!(
        get(
            &s,
            "hubble_http_requests_total",
            &[
                ("source", "ecommerce/loadgen-1"),
                ("destination", "ecommerce"),
                ("method", "GET"),
                ("protocol", "HTTP/1.1"),
                ("reporter", "client"),
            ]
        ),
        Some(2.0)
    );
    // Response records are labelled as they flow (v1 does not invert).
    assert_eq!(
        get(
            &s,
            "hubble_http_responses_total",
            &[
                ("source", "ecommerce/frontend-1"),
                ("destination", "ecommerce"),
                ("method", "GET"),
                ("protocol", "HTTP/1.1"),
                ("status", "200"),
                ("reporter", "client"),
            ]
        ),
        Some(2.0)
    );
}

#[test]
fn dns_queries_responses_and_types() {
    let m = metrics("dns:query;ignoreAAAA");
    let client = pod("ecommerce", "frontend-1", "frontend", "frontend");
    let coredns = pod("kube-system", "coredns-1", "coredns", "kube-dns");
    let (c, d) = ((&client, "10.244.1.5"), (&coredns, "10.244.1.2"));
    let name = "inventory.ecommerce.svc.cluster.local.";
    let nx = "nosuch.ecommerce.svc.cluster.local.";
    for _ in 0..3 {
        // Observed at the client and at the server: the query counts where
        // the client sent it, the response where the server sent it.
        for dir in [Egress, Ingress] {
            m.process(&dns(c, d, false, name, "A", 0, &[], &[], dir));
            m.process(&dns(d, c, true, name, "A", 0, &["10.96.0.20"], &["A"], dir));
        }
    }
    for dir in [Egress, Ingress] {
        m.process(&dns(c, d, false, nx, "A", 0, &[], &[], dir));
        m.process(&dns(d, c, true, nx, "A", 3, &[], &[], dir));
        // AAAA-only queries are ignored.
        m.process(&dns(c, d, false, name, "AAAA", 0, &[], &[], dir));
        let aaaa = &["fd00::20"];
        m.process(&dns(d, c, true, name, "AAAA", 0, aaaa, &["AAAA"], dir));
    }
    // A client that is not a pod is only seen at the server: counted there.
    let host = world();
    m.process(&dns(
        (&host, "172.18.0.1"),
        d,
        false,
        name,
        "A",
        0,
        &[],
        &[],
        Ingress,
    ));

    let s = scrape(&m);
    let q = |rcode: &'static str, ips: &'static str, query: &'static str| {
        vec![
            ("rcode", rcode),
            ("qtypes", "A"),
            ("ips_returned", ips),
            ("query", query),
        ]
    };
    assert_eq!(
        get(&s, "hubble_dns_queries_total", &q("", "0", name)),
        Some(4.0)
    );
    assert_eq!(
        get(&s, "hubble_dns_queries_total", &q("", "0", nx)),
        Some(1.0)
    );
    assert_eq!(sum(&s, "hubble_dns_queries_total"), 5.0);
    assert_eq!(
        get(&s, "hubble_dns_responses_total", &q("No Error", "1", name)),
        Some(3.0)
    );
    assert_eq!(
        get(
            &s,
            "hubble_dns_responses_total",
            &q("Non-Existent Domain", "0", nx)
        ),
        Some(1.0)
    );
    assert_eq!(sum(&s, "hubble_dns_responses_total"), 4.0);
    assert_eq!(
        get(
            &s,
            "hubble_dns_response_types_total",
            &[("type", "A"), ("qtypes", "A"), ("query", name)]
        ),
        Some(3.0)
    );
    assert_eq!(sum(&s, "hubble_dns_response_types_total"), 3.0);
}

#[test]
fn tcp_flags_icmp_and_port_distribution() {
    let m = metrics("tcp icmp port-distribution flow");
    let (a, b) = (("10.0.0.1", 40000), ("10.0.0.2", 8080));
    let fw = Verdict::Forwarded;
    m.process(&tcp(a, b, flags("SYN"), fw, Some(false)));
    m.process(&tcp(b, a, flags("SYN|ACK"), fw, Some(true)));
    m.process(&tcp(a, b, flags("ACK|PSH"), fw, Some(false)));
    m.process(&tcp(a, b, flags("FIN|ACK"), fw, Some(false)));
    m.process(&tcp(b, a, flags("FIN|ACK"), fw, Some(true)));
    m.process(&tcp(b, a, flags("RST"), fw, None));
    // Not forwarded: no tcp / port-distribution count.
    m.process(&tcp(a, b, flags("SYN"), Verdict::Dropped, Some(false)));
    m.process(&tcp(
        ("fd00::1", 40001),
        ("fd00::2", 443),
        flags("SYN"),
        fw,
        Some(false),
    ));
    m.process(&udp(("10.0.0.1", 5353), ("10.0.0.2", 53), Some(false)));
    m.process(&udp(("10.0.0.2", 53), ("10.0.0.1", 5353), Some(true)));
    m.process(&icmp4("10.0.0.1", "10.0.0.2", 8, 0));
    m.process(&icmp4("10.0.0.2", "10.0.0.1", 0, 0));
    m.process(&icmp4("10.0.0.2", "10.0.0.1", 3, 3));
    m.process(&icmp4("10.0.0.2", "10.0.0.1", 3, 3));
    m.process(&icmp6("fd00::1", "fd00::2", 128, 0));

    let s = scrape(&m);
    let tf = |flag: &'static str, fam: &'static str| {
        get(
            &s,
            "hubble_tcp_flags_total",
            &[("flag", flag), ("family", fam)],
        )
    };
    assert_eq!(tf("SYN", "IPv4"), Some(1.0));
    assert_eq!(tf("SYN-ACK", "IPv4"), Some(1.0));
    assert_eq!(tf("FIN", "IPv4"), Some(2.0));
    assert_eq!(tf("RST", "IPv4"), Some(1.0));
    assert_eq!(tf("SYN", "IPv6"), Some(1.0));
    assert_eq!(sum(&s, "hubble_tcp_flags_total"), 6.0);

    let ic = |fam: &'static str, t: &'static str| {
        get(&s, "hubble_icmp_total", &[("family", fam), ("type", t)])
    };
    assert_eq!(ic("IPv4", "EchoRequest"), Some(1.0));
    assert_eq!(ic("IPv4", "EchoReply"), Some(1.0));
    assert_eq!(ic("IPv4", "DestinationUnreachable(Port)"), Some(2.0));
    assert_eq!(ic("IPv6", "EchoRequest"), Some(1.0));

    let pd = |p: &'static str, port: &'static str| {
        get(
            &s,
            "hubble_port_distribution_total",
            &[("protocol", p), ("port", port)],
        )
    };
    // Connections: the records that open one (trace_reason NEW), i.e. the
    // SYN to 8080 but not its ACK|PSH and FIN|ACK records, nor replies.
    assert_eq!(pd("TCP", "8080"), Some(1.0));
    assert_eq!(pd("TCP", "443"), Some(1.0));
    assert_eq!(pd("UDP", "53"), Some(1.0));
    assert_eq!(pd("TCP", "40000"), None);
    assert_eq!(sum(&s, "hubble_port_distribution_total"), 3.0);

    let fl = |p: &'static str, verdict: &'static str| {
        get(
            &s,
            "hubble_flows_processed_total",
            &[
                ("protocol", p),
                ("type", "Trace"),
                ("subtype", "to-endpoint"),
                ("verdict", verdict),
            ],
        )
    };
    assert_eq!(fl("TCP", "FORWARDED"), Some(7.0));
    assert_eq!(fl("TCP", "DROPPED"), Some(1.0));
    assert_eq!(fl("UDP", "FORWARDED"), Some(2.0));
    assert_eq!(fl("ICMPv4", "FORWARDED"), Some(4.0));
    assert_eq!(fl("ICMPv6", "FORWARDED"), Some(1.0));
    assert_eq!(sum(&s, "hubble_flows_processed_total"), 15.0);
    assert_eq!(get(&s, "flowd_flows_processed_total", &[]), Some(15.0));
}

#[test]
fn flow_types_and_observation_points() {
    let m = metrics("flow");
    let mut f = tcp(
        ("10.0.0.1", 1),
        ("10.0.0.2", 2),
        flags("ACK"),
        Verdict::Forwarded,
        None,
    );
    f.trace_observation_point = 5; // FROM_ENDPOINT
    m.process(&f);
    f.trace_observation_point = 101; // TO_ENDPOINT
    m.process(&f);
    let client = pod("a", "c", "c", "c");
    let server = pod("a", "s", "s", "s");
    for r in http_exchange(
        (&client, "10.0.0.1"),
        (&server, "10.0.0.2"),
        "GET",
        200,
        1,
        Egress,
        None,
    ) {
        m.process(&r);
    }
    let mut d = tcp(
        ("10.0.0.1", 1),
        ("10.0.0.2", 2),
        flags("SYN"),
        Verdict::Dropped,
        None,
    );
    d.event_type = None; // derived from the verdict
    m.process(&d);
    let s = scrape(&m);
    let fl = |p: &'static str, t: &'static str, sub: &'static str, v: &'static str| {
        get(
            &s,
            "hubble_flows_processed_total",
            &[
                ("protocol", p),
                ("type", t),
                ("subtype", sub),
                ("verdict", v),
            ],
        )
    };
    assert_eq!(fl("TCP", "Trace", "from-endpoint", "FORWARDED"), Some(1.0));
    assert_eq!(fl("TCP", "Trace", "to-endpoint", "FORWARDED"), Some(1.0));
    assert_eq!(fl("HTTP", "L7", "HTTP", "FORWARDED"), Some(2.0));
    assert_eq!(fl("TCP", "Drop", "", "DROPPED"), Some(1.0));
}

#[test]
fn drops_by_reason() {
    let m = metrics("drop:sourceContext=namespace");
    let mut f = udp(("10.0.0.1", 40000), ("10.0.0.2", 9), None);
    f.verdict = Verdict::Dropped as i32;
    f.source = Some(pod("ecommerce", "p", "w", "a"));
    f.kernel_drop_reason = "NO_SOCKET".to_string();
    for _ in 0..3 {
        m.process(&f);
    }
    let mut g = f.clone();
    g.drop_reason_desc = DropReason::PolicyDenied as i32;
    g.kernel_drop_reason = "NETFILTER_DROP".to_string();
    m.process(&g);
    let mut fw = f.clone();
    fw.verdict = Verdict::Forwarded as i32;
    m.process(&fw);
    let s = scrape(&m);
    let dr = |r: &'static str| {
        get(
            &s,
            "hubble_drop_total",
            &[("source", "ecommerce"), ("reason", r), ("protocol", "UDP")],
        )
    };
    assert_eq!(dr("NO_SOCKET"), Some(3.0));
    assert_eq!(dr("POLICY_DENIED"), Some(1.0));
    assert_eq!(sum(&s, "hubble_drop_total"), 4.0);
}

#[test]
fn cardinality_is_capped_and_overflow_counted() {
    let m = metrics_with("port-distribution", 3);
    for port in [1, 2, 3, 4, 5, 1, 4] {
        m.process(&udp(("10.0.0.1", 40000), ("10.0.0.2", port), Some(false)));
    }
    let s = scrape(&m);
    assert_eq!(count(&s, "hubble_port_distribution_total"), 3);
    let pd = |port: &'static str| {
        get(
            &s,
            "hubble_port_distribution_total",
            &[("protocol", "UDP"), ("port", port)],
        )
    };
    assert_eq!(pd("1"), Some(2.0));
    assert_eq!(pd("4"), None);
    // Ports 4, 5 and 4 again were refused.
    assert_eq!(
        get(
            &s,
            "flowd_metrics_series_refused_total",
            &[("metric", "hubble_port_distribution_total")]
        ),
        Some(3.0)
    );
    assert_eq!(m.series_count("hubble_port_distribution_total"), Some(3));
}

#[test]
fn series_of_deleted_pods_and_idle_series_expire() {
    let m = metrics(
        "httpV2:sourceContext=pod;destinationContext=pod tcp:labelsContext=source_namespace,source_pod",
    );
    let a = pod("ecommerce", "frontend-1", "frontend", "frontend");
    let b = pod("ecommerce", "inventory-1", "inventory", "inventory");
    let c = pod("ecommerce", "orders-1", "orders", "orders");
    for (cl, sv) in [(&a, &b), (&c, &b)] {
        for f in http_exchange(
            (cl, "10.0.0.1"),
            (sv, "10.0.0.2"),
            "GET",
            200,
            1_000,
            Egress,
            None,
        ) {
            m.process(&f);
        }
    }
    let mut t = tcp(
        ("10.0.0.1", 1),
        ("10.0.0.2", 2),
        flags("SYN"),
        Verdict::Forwarded,
        None,
    );
    t.source = Some(a.clone());
    m.process(&t);
    t.source = Some(c.clone());
    m.process(&t);
    assert_eq!(m.series_count("hubble_http_requests_total"), Some(2));

    // frontend-1 is deleted: its requests series, its duration series and
    // its tcp series go; orders-1's stay.
    assert_eq!(m.forget_pod("ecommerce", "frontend-1"), 3);
    let s = scrape(&m);
    assert_eq!(count(&s, "hubble_http_requests_total"), 1);
    assert_eq!(
        get(
            &s,
            "hubble_http_requests_total",
            &[
                ("source", "ecommerce/orders-1"),
                ("destination", "ecommerce/inventory-1"),
                ("method", "GET"),
                ("protocol", "HTTP/1.1"),
                ("status", "200"),
                ("reporter", "client"),
            ]
        ),
        Some(1.0)
    );
    assert_eq!(count(&s, "hubble_tcp_flags_total"), 1);
    assert_eq!(
        get(
            &s,
            "flowd_metrics_series_expired_total",
            &[("metric", "hubble_http_requests_total")]
        ),
        Some(1.0)
    );
    // Same name in another namespace: nothing to remove.
    assert_eq!(m.forget_pod("other", "orders-1"), 0);

    // Idle expiry: nothing is older than an hour; everything is older than
    // zero seconds once time has moved on.
    let later = Instant::now() + Duration::from_secs(2);
    assert_eq!(m.expire_older_than(later, Duration::from_secs(3600)), 0);
    assert_eq!(m.expire_older_than(later, Duration::from_secs(1)), 3);
    assert_eq!(m.series_count("hubble_http_requests_total"), Some(0));
}

#[test]
fn daemon_metrics() {
    let m = metrics("");
    let totals = |events, events_lost, program_runs, full_path_runs| DatapathTotals {
        events,
        events_lost,
        program_runs,
        full_path_runs,
        ..DatapathTotals::default()
    };
    // Before any HTTP/2: every walk start and loss reason is there, at 0.
    let s = scrape(&m);
    for start in ["client_preface", "server_settings", "resync"] {
        assert_eq!(
            get(&s, "flowd_datapath_http2_walks_total", &[("start", start)]),
            Some(0.0),
            "{start}"
        );
    }
    for reason in ["gap", "evicted", "ring_full", "step_limit"] {
        assert_eq!(
            get(
                &s,
                "flowd_datapath_http2_walks_lost_total",
                &[("reason", reason)]
            ),
            Some(0.0),
            "{reason}"
        );
    }
    m.set_datapath_totals(&totals(100, 3, 5000, 120));
    m.set_datapath_totals(&DatapathTotals {
        http2_events: 40,
        http2_walks: flowd::metrics::Http2Walks {
            client_preface: 2,
            server_settings: 3,
            resync: 4,
        },
        http2_lost: flowd::metrics::Http2Lost {
            gap: 5,
            evicted: 6,
            ring_full: 7,
            step_limit: 8,
        },
        http2_concurrent: 9,
        ..totals(250, 3, 9000, 130)
    });
    m.set_datapath_totals(&totals(10, 1, 20, 2)); // programs reloaded: ignored
    m.add_lost_events(LostEventSource::PerfEventRingBuffer, 3);
    m.add_lost_events(LostEventSource::HubbleRingBuffer, 7);
    m.add_lost_events(LostEventSource::HubbleRingBuffer, 1);
    m.set_attached_interfaces(flowd::options::interfaces::AttachMode::Tc, 4);
    m.set_attached_interfaces(flowd::options::interfaces::AttachMode::Xdp, 1);
    m.set_flow_map(1234, 65536);
    m.add_l7_pairing_evictions("http", "timeout", 2);
    m.refresh_process_metrics();
    let s = scrape(&m);
    assert_eq!(get(&s, "flowd_datapath_events_total", &[]), Some(250.0));
    assert_eq!(get(&s, "flowd_datapath_events_lost_total", &[]), Some(3.0));
    assert_eq!(
        get(&s, "flowd_datapath_program_runs_total", &[]),
        Some(9000.0)
    );
    assert_eq!(
        get(&s, "flowd_datapath_full_path_runs_total", &[]),
        Some(130.0)
    );
    assert_eq!(
        get(&s, "flowd_datapath_http2_events_total", &[]),
        Some(40.0)
    );
    for (start, n) in [
        ("client_preface", 2.0),
        ("server_settings", 3.0),
        ("resync", 4.0),
    ] {
        assert_eq!(
            get(&s, "flowd_datapath_http2_walks_total", &[("start", start)]),
            Some(n)
        );
    }
    for (reason, n) in [
        ("gap", 5.0),
        ("evicted", 6.0),
        ("ring_full", 7.0),
        ("step_limit", 8.0),
    ] {
        assert_eq!(
            get(
                &s,
                "flowd_datapath_http2_walks_lost_total",
                &[("reason", reason)]
            ),
            Some(n)
        );
    }
    assert_eq!(
        get(&s, "flowd_datapath_http2_concurrent_packets_total", &[]),
        Some(9.0)
    );
    assert_eq!(
        get(
            &s,
            "hubble_lost_events_total",
            &[("source", "perf_event_ring_buffer")]
        ),
        Some(3.0)
    );
    assert_eq!(
        get(
            &s,
            "hubble_lost_events_total",
            &[("source", "hubble_ring_buffer")]
        ),
        Some(8.0)
    );
    assert_eq!(
        get(&s, "flowd_attached_interfaces", &[("mode", "tc")]),
        Some(4.0)
    );
    assert_eq!(
        get(&s, "flowd_attached_interfaces", &[("mode", "xdp")]),
        Some(1.0)
    );
    assert_eq!(get(&s, "flowd_flow_map_entries", &[]), Some(1234.0));
    assert_eq!(get(&s, "flowd_flow_map_capacity", &[]), Some(65536.0));
    assert_eq!(
        get(
            &s,
            "flowd_l7_pairing_evictions_total",
            &[("protocol", "http"), ("reason", "timeout")]
        ),
        Some(2.0)
    );
    assert!(get(&s, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(get(&s, "process_open_fds", &[]).unwrap() >= 3.0);
    // No handler enabled: no Hubble flow metric.
    assert_eq!(count(&s, "hubble_flows_processed_total"), 0);
}

#[test]
fn packet_metrics_count_once_at_the_sender() {
    let a = pod("ecommerce", "frontend-1", "frontend", "frontend");
    let b = pod("ecommerce", "inventory-1", "inventory", "inventory");
    // One SYN from pod a to pod b, seen leaving a and entering b; one SYN
    // from the world entering b.
    let mut at_a = tcp(
        ("10.0.0.1", 40000),
        ("10.0.0.2", 8080),
        flags("SYN"),
        Verdict::Forwarded,
        Some(false),
    );
    at_a.source = Some(a.clone());
    at_a.destination = Some(b.clone());
    at_a.traffic_direction = Egress as i32;
    at_a.trace_observation_point = TraceObservationPoint::FromEndpoint as i32;
    let mut at_b = at_a.clone();
    at_b.traffic_direction = Ingress as i32;
    at_b.trace_observation_point = TraceObservationPoint::ToEndpoint as i32;
    let mut from_world = at_b.clone();
    from_world.source = Some(world());
    for (count_once, expect) in [(true, 2.0), (false, 3.0)] {
        let m = Metrics::new(&MetricsOptions {
            spec: MetricsSpec::parse("tcp port-distribution flow").unwrap(),
            count_once,
            ..MetricsOptions::default()
        });
        for f in [&at_a, &at_b, &from_world] {
            m.process(f);
        }
        let s = scrape(&m);
        assert_eq!(
            get(
                &s,
                "hubble_tcp_flags_total",
                &[("flag", "SYN"), ("family", "IPv4")]
            ),
            Some(expect),
            "count_once={count_once}"
        );
        assert_eq!(
            get(
                &s,
                "hubble_port_distribution_total",
                &[("protocol", "TCP"), ("port", "8080")]
            ),
            Some(expect)
        );
        // The flow handler keeps every observation.
        assert_eq!(sum(&s, "hubble_flows_processed_total"), 3.0);
    }
}

/// `flows-to-world` (Hubble's rules, Cilium `pkg/hubble/metrics/flows-to-world`):
/// non-reply flows whose destination is `reserved:world`; drops only when
/// POLICY_DENIED unless `any-drop`; `syn-only` counts connection attempts;
/// `port` adds the destination port; the counting rule applies.
#[test]
fn flows_to_world_follows_hubble_rules() {
    let m =
        metrics("flows-to-world:sourceContext=workload-name;labelsContext=source_namespace dns");
    let client = pod("ecommerce", "payment-5d8-x1", "payment-service", "payment");
    let server = pod("ecommerce", "frontend-7c4-x2", "frontend", "frontend");
    let fw = Verdict::Forwarded;
    let (p, w) = (("10.244.2.3", 41000), ("198.51.100.10", 80));
    let with = |mut f: flowd_proto::flow::Flow, s: &Endpoint, d: &Endpoint| {
        f.source = Some(s.clone());
        f.destination = Some(d.clone());
        f.trace_observation_point = TraceObservationPoint::FromEndpoint as i32;
        f
    };
    let world = world();
    // Counted: the request direction of a connection to the world (3 records).
    m.process(&with(
        tcp(p, w, flags("SYN"), fw, Some(false)),
        &client,
        &world,
    ));
    m.process(&with(
        tcp(p, w, flags("ACK|PSH"), fw, Some(false)),
        &client,
        &world,
    ));
    m.process(&with(
        udp(("10.244.2.3", 5353), ("198.51.100.10", 53), Some(false)),
        &client,
        &world,
    ));
    // Not counted: the world's replies (destination is a pod), a pod's reply
    // to a world client, a flow to a pod, a non-policy drop.
    m.process(&with(
        tcp(w, p, flags("SYN|ACK"), fw, Some(true)),
        &world,
        &client,
    ));
    m.process(&with(
        tcp(p, w, flags("ACK"), fw, Some(true)),
        &client,
        &world,
    ));
    m.process(&with(
        tcp(p, ("10.244.1.3", 8080), flags("SYN"), fw, Some(false)),
        &client,
        &server,
    ));
    let mut nosock = with(
        tcp(p, w, flags("SYN"), Verdict::Dropped, Some(false)),
        &client,
        &world,
    );
    nosock.kernel_drop_reason = "NO_SOCKET".into();
    nosock.drop_count = 3;
    m.process(&nosock);
    // Counted: a policy drop, even of a reply.
    let mut denied = with(
        tcp(p, w, flags("ACK"), Verdict::Dropped, Some(true)),
        &client,
        &world,
    );
    denied.drop_reason_desc = DropReason::PolicyDenied as i32;
    m.process(&denied);
    // The same SYN seen again on the uplink: the pod's veth counted it.
    let mut uplink = with(tcp(p, w, flags("SYN"), fw, Some(false)), &client, &world);
    uplink.trace_observation_point = TraceObservationPoint::ToNetwork as i32;
    m.process(&uplink);

    let s = scrape(&m);
    let tw = |proto: &'static str, verdict: &'static str| {
        get(
            &s,
            "hubble_flows_to_world_total",
            &[
                ("protocol", proto),
                ("verdict", verdict),
                ("source_namespace", "ecommerce"),
                ("source", "payment-service"),
            ],
        )
    };
    assert_eq!(tw("TCP", "FORWARDED"), Some(2.0));
    assert_eq!(tw("UDP", "FORWARDED"), Some(1.0));
    assert_eq!(tw("TCP", "DROPPED"), Some(1.0));
    assert_eq!(sum(&s, "hubble_flows_to_world_total"), 4.0);

    // any-drop, port and syn-only: one count per connection attempt.
    let m = metrics("flows-to-world:any-drop;port;syn-only");
    m.process(&with(
        tcp(p, w, flags("SYN"), fw, Some(false)),
        &client,
        &world,
    ));
    m.process(&with(
        tcp(p, ("198.51.100.10", 443), flags("SYN"), fw, Some(false)),
        &client,
        &world,
    ));
    m.process(&with(
        tcp(p, w, flags("ACK|PSH"), fw, Some(false)),
        &client,
        &world,
    ));
    m.process(&with(
        udp(("10.244.2.3", 5353), ("198.51.100.10", 53), Some(false)),
        &client,
        &world,
    ));
    m.process(&nosock);
    m.process(&denied); // a reply: not a connection attempt
    let s = scrape(&m);
    let tw = |verdict: &'static str, port: &'static str| {
        get(
            &s,
            "hubble_flows_to_world_total",
            &[("protocol", "TCP"), ("verdict", verdict), ("port", port)],
        )
    };
    assert_eq!(tw("FORWARDED", "80"), Some(1.0));
    assert_eq!(tw("FORWARDED", "443"), Some(1.0));
    // A kernel drop flow stands for drop_count drops.
    assert_eq!(tw("DROPPED", "80"), Some(3.0));
    assert_eq!(sum(&s, "hubble_flows_to_world_total"), 5.0);
}

/// `policy` and `kafka` (events flowd never has): accepted with Hubble's
/// options, their families are exported with Hubble's names and types and
/// no series, whatever the flows.
#[test]
fn eventless_handlers_export_empty_families() {
    let m = metrics(
        "policy:sourceContext=app|workload-name|pod|reserved-identity;destinationContext=app|workload-name|pod|dns|reserved-identity;labelsContext=source_namespace,destination_namespace \
         kafka:labelsContext=source_namespace,source_workload",
    );
    let client = pod("ecommerce", "loadgen-6d9f-abcde", "loadgen", "loadgen");
    let server = pod("ecommerce", "frontend-7c4b-xyz12", "frontend", "frontend");
    for dir in [Egress, Ingress] {
        for f in http_exchange(
            (&client, "10.0.0.1"),
            (&server, "10.0.0.2"),
            "GET",
            200,
            1_000_000,
            dir,
            None,
        ) {
            m.process(&f);
        }
    }
    let text = m.encode_prometheus();
    let open = m.encode_openmetrics();
    for (name, family, typ) in [
        (
            "hubble_policy_verdicts_total",
            "hubble_policy_verdicts",
            "counter",
        ),
        (
            "hubble_kafka_requests_total",
            "hubble_kafka_requests",
            "counter",
        ),
        (
            "hubble_kafka_request_duration_seconds",
            "hubble_kafka_request_duration_seconds",
            "histogram",
        ),
    ] {
        // Prometheus text names a counter family with its `_total`, OpenMetrics without.
        assert!(
            text.contains(&format!("# TYPE {name} {typ}\n")),
            "{name}: {text}"
        );
        assert!(
            open.contains(&format!("# TYPE {family} {typ}\n")),
            "{family}: {open}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with(family)),
            "{name}: {text}"
        );
        assert!(
            !open.lines().any(|l| l.starts_with(family)),
            "{family}: {open}"
        );
    }
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert_eq!(
        get(&parse(&text), "flowd_flows_processed_total", &[]),
        Some(4.0)
    );
}

/// One gRPC call of shop.inventory.v1.Inventory/`method` as the records of
/// an HTTP/2 stream, seen at the interface of `dir`'s pod: the REQUEST and
/// the RESPONSE with `status` and `typ`.
fn grpc_call(
    client: (&Endpoint, &str),
    server: (&Endpoint, &str),
    method: &str,
    status: Option<u32>,
    typ: GrpcType,
    latency_ms: u64,
    dir: TrafficDirection,
) -> [Flow; 2] {
    let mut records = http_exchange(
        client,
        server,
        "POST",
        200,
        latency_ms * 1_000_000,
        dir,
        Some("0af7651916cd43dd8448eb211c80319c"),
    );
    for (i, f) in records.iter_mut().enumerate() {
        let response = i == 1;
        if let Some(Record::Http(h)) = f.l7.as_mut().and_then(|l| l.record.as_mut()) {
            h.protocol = "HTTP/2".into();
            h.url = format!("http://inventory:50051/shop.inventory.v1.Inventory/{method}");
            h.grpc = Some(Grpc {
                service: "shop.inventory.v1.Inventory".into(),
                method: method.into(),
                status_code: status.filter(|_| response),
                r#type: if response { typ as i32 } else { 0 },
                ..Default::default()
            });
        }
    }
    records
}

/// The `grpc` handler with every option, next to `httpV2`, over calls seen
/// at both pods: each call counts once per reporter with
/// go-grpc-prometheus' labels (Go's code names, `unary`/`server_stream`,
/// `none` without a grpc-status, the number above 16), the duration per
/// service, method and type; an unpaired partial response is counted with
/// `unknown` names and not observed. httpV2 counts the same streams as
/// HTTP/2 requests with `protocol="HTTP/2"`.
#[test]
fn grpc_counts_each_call_once_per_reporter_with_go_grpc_prometheus_labels() {
    let m = metrics(
        "grpc:sourceContext=workload-name;destinationContext=workload-name;labelsContext=source_namespace,destination_namespace;exemplars=true httpV2",
    );
    let client = pod("ecommerce", "order-5d8f-abcde", "order", "order");
    let server = pod("ecommerce", "inventory-7c4b-xyz", "inventory", "inventory");
    let (cip, sip) = ("10.244.2.7", "10.244.1.5");
    // (method, status, type, latency ms)
    let calls = [
        ("Reserve", Some(0), GrpcType::Unary, 4),
        ("Reserve", Some(0), GrpcType::Unary, 30),
        ("Reserve", Some(0), GrpcType::Unary, 700),
        ("Reserve", Some(5), GrpcType::Unary, 2),
        ("Reserve", Some(5), GrpcType::Unary, 3),
        // A server-streaming call reset by the client: no grpc-status.
        ("Watch", None, GrpcType::ServerStreaming, 2_500),
        // A status code above 16, with message counts that were not exact.
        ("Release", Some(42), GrpcType::Unknown, 8),
    ];
    for (method, status, typ, ms) in calls {
        for dir in [Egress, Ingress] {
            for f in grpc_call((&client, cip), (&server, sip), method, status, typ, ms, dir) {
                m.process(&f);
            }
        }
    }
    // A response on a connection flowd saw from its middle: its path and
    // method were not decoded, its request never seen.
    let [_, mut partial] = grpc_call(
        (&client, cip),
        (&server, sip),
        "Reserve",
        Some(0),
        GrpcType::Unary,
        0,
        Ingress,
    );
    if let Some(l7) = partial.l7.as_mut() {
        l7.unpaired = true;
        if let Some(Record::Http(h)) = l7.record.as_mut() {
            h.partial = true;
            h.method.clear();
            h.url.clear();
            let g = h.grpc.as_mut().unwrap();
            g.service.clear();
            g.method.clear();
        }
    }
    m.process(&partial);

    let s = scrape(&m);
    let ctx = |reporter: &'static str| {
        vec![
            ("source_namespace", "ecommerce"),
            ("destination_namespace", "ecommerce"),
            ("source", "order"),
            ("destination", "inventory"),
            ("reporter", reporter),
        ]
    };
    let req = |reporter, service, method, code, typ| {
        let mut l = ctx(reporter);
        l.extend([
            ("grpc_service", service),
            ("grpc_method", method),
            ("grpc_code", code),
            ("grpc_type", typ),
        ]);
        get(&s, "hubble_grpc_requests_total", &l)
    };
    const SVC: &str = "shop.inventory.v1.Inventory";
    for reporter in ["client", "server"] {
        assert_eq!(req(reporter, SVC, "Reserve", "OK", "unary"), Some(3.0));
        assert_eq!(
            req(reporter, SVC, "Reserve", "NotFound", "unary"),
            Some(2.0)
        );
        assert_eq!(
            req(reporter, SVC, "Watch", "none", "server_stream"),
            Some(1.0)
        );
        assert_eq!(req(reporter, SVC, "Release", "42", "unknown"), Some(1.0));
    }
    assert_eq!(
        req("server", "unknown", "unknown", "OK", "unary"),
        Some(1.0)
    );
    assert_eq!(count(&s, "hubble_grpc_requests_total"), 9);
    assert_eq!(sum(&s, "hubble_grpc_requests_total"), 15.0);

    let dur = |reporter, method, typ, what: &str, le: Option<&'static str>| {
        let mut l = ctx(reporter);
        l.extend([
            ("grpc_service", SVC),
            ("grpc_method", method),
            ("grpc_type", typ),
        ]);
        if let Some(le) = le {
            l.push(("le", le));
        }
        get(
            &s,
            &format!("hubble_grpc_request_duration_seconds_{what}"),
            &l,
        )
    };
    for reporter in ["client", "server"] {
        // The five unary Reserve calls, whatever their status.
        assert_eq!(dur(reporter, "Reserve", "unary", "count", None), Some(5.0));
        let total = dur(reporter, "Reserve", "unary", "sum", None).unwrap();
        assert!((total - 0.739).abs() < 1e-9, "{total}");
        // Hubble's http buckets.
        for (le, n) in [
            ("0.005", 3.0),
            ("0.01", 3.0),
            ("0.05", 4.0),
            ("0.5", 4.0),
            ("1", 5.0),
            ("+Inf", 5.0),
        ] {
            assert_eq!(
                dur(reporter, "Reserve", "unary", "bucket", Some(le)),
                Some(n),
                "{reporter} le={le}"
            );
        }
        assert_eq!(
            dur(reporter, "Watch", "server_stream", "bucket", Some("2.5")),
            Some(1.0)
        );
        assert_eq!(
            dur(reporter, "Watch", "server_stream", "bucket", Some("1")),
            Some(0.0)
        );
    }
    // Every call observed once per reporter; the unpaired one not at all.
    assert_eq!(sum(&s, "hubble_grpc_request_duration_seconds_count"), 14.0);
    assert_eq!(count(&s, "hubble_grpc_request_duration_seconds_count"), 6);

    // httpV2: the same streams are HTTP/2 requests, status 200.
    for reporter in ["client", "server"] {
        assert_eq!(
            get(
                &s,
                "hubble_http_requests_total",
                &[
                    ("method", "POST"),
                    ("protocol", "HTTP/2"),
                    ("status", "200"),
                    ("reporter", reporter),
                ]
            ),
            Some(7.0),
            "{reporter}"
        );
    }
    assert_eq!(
        get(
            &s,
            "hubble_http_requests_total",
            &[
                ("method", "unknown"),
                ("protocol", "HTTP/2"),
                ("status", "200"),
                ("reporter", "server"),
            ]
        ),
        Some(1.0)
    );
    assert_eq!(sum(&s, "hubble_http_requests_total"), 15.0);

    // Trace-ID exemplars in OpenMetrics, on the gRPC counter too.
    let om = m.encode_openmetrics();
    assert!(
        om.lines()
            .any(|l| l.starts_with("hubble_grpc_requests_total{")
                && l.contains("# {traceID=\"0af7651916cd43dd8448eb211c80319c\"}")),
        "{om}"
    );
}

/// Requests, other protocols and records outside the counting rule are
/// not gRPC calls to count; bad options are refused naming them.
#[test]
fn grpc_counts_only_responses_of_grpc_calls() {
    let m = metrics("grpc");
    let client = pod("ecommerce", "order-1", "order", "order");
    let server = pod("ecommerce", "inventory-1", "inventory", "inventory");
    let [request, response] = grpc_call(
        (&client, "10.0.0.1"),
        (&server, "10.0.0.2"),
        "Reserve",
        Some(14),
        GrpcType::Unary,
        5,
        Egress,
    );
    m.process(&request);
    // Plain HTTP/1.1 and HTTP/2 exchanges carry no call.
    for f in http_exchange(
        (&client, "10.0.0.1"),
        (&server, "10.0.0.2"),
        "GET",
        503,
        5_000_000,
        Egress,
        None,
    ) {
        m.process(&f);
    }
    let s = scrape(&m);
    assert_eq!(count(&s, "hubble_grpc_requests_total"), 0);
    m.process(&response);
    // An uplink sighting between two pods is counted by the pods' veths.
    let mut uplink = response.clone();
    uplink.trace_observation_point = TraceObservationPoint::FromNetwork as i32;
    m.process(&uplink);
    let s = scrape(&m);
    assert_eq!(
        get(
            &s,
            "hubble_grpc_requests_total",
            &[
                ("grpc_service", "shop.inventory.v1.Inventory"),
                ("grpc_method", "Reserve"),
                ("grpc_code", "Unavailable"),
                ("grpc_type", "unary"),
                ("reporter", "client"),
            ]
        ),
        Some(1.0)
    );
    assert_eq!(sum(&s, "hubble_grpc_requests_total"), 1.0);
    assert_eq!(
        MetricsSpec::parse("grpc:query").unwrap_err().to_string(),
        "metrics handler \"grpc\": unknown option \"query\" (valid: sourceContext, destinationContext, sourceEgressContext, sourceIngressContext, destinationEgressContext, destinationIngressContext, labelsContext, exemplars)"
    );
    assert!(MetricsSpec::parse("grpc httpV2 http").is_err());
    assert!(MetricsSpec::parse("grpc httpV2").is_ok());
}
