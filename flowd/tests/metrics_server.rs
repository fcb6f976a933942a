//! The /metrics server over loopback: content negotiation between the
//! Prometheus text format and OpenMetrics, errors, shutdown.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod metrics_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flowd::metrics::server::{ServerError, bind, serve};
use flowd::metrics::{Metrics, MetricsOptions, OPENMETRICS_TEXT, PROMETHEUS_TEXT};
use flowd::options::metrics::MetricsSpec;
use flowd_proto::flow::TrafficDirection;
use metrics_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The Accept header Prometheus 2.x/3.x sends when scraping.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

async fn request(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Reply {
        status,
        content_type,
        body: body.to_string(),
    }
}

fn demo_metrics(open_metrics: bool) -> Arc<Metrics> {
    let m = Metrics::new(&MetricsOptions {
        spec: MetricsSpec::parse("httpV2:exemplars=true;sourceContext=workload-name;destinationContext=workload-name flow")
            .unwrap(),
        open_metrics,
        ..MetricsOptions::default()
    });
    let client = pod("ecommerce", "loadgen-1", "loadgen", "loadgen");
    let server = pod("ecommerce", "frontend-1", "frontend", "frontend");
    for code in [200, 200, 503] {
        for f in http_exchange(
            (&client, "10.244.2.7"),
            (&server, "10.244.1.5"),
            "GET",
            code,
            20_000_000,
            TrafficDirection::Egress,
            Some("0af7651916cd43dd8448eb211c80319c"),
        ) {
            m.process(&f);
        }
    }
    Arc::new(m)
}

fn requests(samples: &[Sample], status: &str) -> Option<f64> {
    get(
        samples,
        "hubble_http_requests_total",
        &[
            ("source", "loadgen"),
            ("destination", "frontend"),
            ("method", "GET"),
            ("protocol", "HTTP/1.1"),
            ("status", status),
            ("reporter", "client"),
        ],
    )
}

#[tokio::test]
async fn scrape_over_loopback_with_both_formats() {
    let m = demo_metrics(true);
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(m.clone(), listener, async {
        let _ = stopped.await;
    }));

    // No Accept header, or a plain-text one: the Prometheus text format.
    for accept in [None, Some("text/plain;version=0.0.4")] {
        let r = request(addr, "GET", "/metrics", accept).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, PROMETHEUS_TEXT);
        assert!(!r.body.contains("# EOF"));
        assert!(!r.body.contains("traceID"));
        assert!(r.body.contains("# TYPE hubble_http_requests_total counter"));
        let s = parse(&r.body);
        assert_eq!(requests(&s, "200"), Some(2.0));
        assert_eq!(requests(&s, "503"), Some(1.0));
        assert_eq!(get(&s, "flowd_flows_processed_total", &[]), Some(6.0));
        assert!(get(&s, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
    }

    // What Prometheus sends: OpenMetrics, with exemplars.
    let r = request(addr, "GET", "/metrics", Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, OPENMETRICS_TEXT);
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    assert!(r.body.contains("# TYPE hubble_http_requests counter"));
    assert!(
        r.body
            .contains("traceID=\"0af7651916cd43dd8448eb211c80319c\"")
    );
    let s = parse(&r.body);
    assert_eq!(requests(&s, "200"), Some(2.0));
    assert_eq!(
        get(
            &s,
            "hubble_http_request_duration_seconds_count",
            &[
                ("source", "loadgen"),
                ("destination", "frontend"),
                ("method", "GET"),
                ("reporter", "client")
            ]
        ),
        Some(3.0)
    );

    // OpenMetrics explicitly refused (q=0): text.
    let r = request(
        addr,
        "GET",
        "/metrics",
        Some("application/openmetrics-text;q=0,text/plain"),
    )
    .await;
    assert_eq!(r.content_type, PROMETHEUS_TEXT);

    // HEAD: headers only.
    let r = request(addr, "HEAD", "/metrics", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));

    let r = request(addr, "GET", "/", None).await;
    assert_eq!(r.status, 404);
    let r = request(addr, "POST", "/metrics", None).await;
    assert_eq!(r.status, 405);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn open_metrics_can_be_disabled() {
    let m = demo_metrics(false);
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(m, listener, std::future::pending()));
    let r = request(addr, "GET", "/metrics", Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, PROMETHEUS_TEXT);
    assert_eq!(requests(&parse(&r.body), "200"), Some(2.0));
    server.abort();
}

#[tokio::test]
async fn busy_port_is_a_clear_error() {
    let first = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = first.local_addr().unwrap();
    let err = bind(addr).await.unwrap_err();
    let ServerError::Bind { addr: a, .. } = &err;
    assert_eq!(*a, addr);
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert!(err.to_string().contains("hubble-metrics-server"), "{err}");
}
