//! A real Prometheus server (Debian's `prometheus` package) scrapes flowd's
//! /metrics over loopback, and PromQL queries through its HTTP API return
//! the values the synthetic flows produced.
//!
//! Needs Debian's `prometheus` binary (PATH or /usr/bin), which
//! `scripts/setup.sh` installs; without it the test fails.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod metrics_support;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowd::metrics::server::{bind, serve};
use flowd::metrics::{Metrics, MetricsOptions};
use flowd::options::metrics::MetricsSpec;
use flowd_proto::flow::TrafficDirection;
use metrics_support::prometheus::{api_get, prometheus_binary, url_encode, wait_for};
use metrics_support::*;

/// A child process killed on drop (also when the test panics).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn prometheus_scrapes_and_queries() {
    let bin = prometheus_binary().unwrap_or_else(|why| panic!("{why}"));

    // flowd's side: synthetic exchanges with a known mix.
    let m = Metrics::new(&MetricsOptions {
        spec: MetricsSpec::parse(
            "httpV2:exemplars=true;sourceContext=workload-name;destinationContext=workload-name dns:query",
        )
        .unwrap(),
        ..MetricsOptions::default()
    });
    let client = pod("ecommerce", "loadgen-1", "loadgen", "loadgen");
    let server = pod("ecommerce", "frontend-1", "frontend", "frontend");
    for (code, n) in [(200, 7), (404, 3), (503, 2)] {
        for _ in 0..n {
            for dir in [TrafficDirection::Egress, TrafficDirection::Ingress] {
                for f in http_exchange(
                    (&client, "10.244.2.7"),
                    (&server, "10.244.1.5"),
                    "GET",
                    code,
                    15_000_000,
                    dir,
                    Some("4bf92f3577b34da6a3ce929d0e0e4736"),
                ) {
                    m.process(&f);
                }
            }
        }
    }
    let m = Arc::new(m);
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let target = listener.local_addr().unwrap();
    let server_task = tokio::spawn(serve(m.clone(), listener, std::future::pending()));

    // Prometheus' side.
    let dir =
        TempDir(std::env::temp_dir().join(format!("flowd-prometheus-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    let cfg = dir.0.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: flowd\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let prom: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
    let _proc = Proc(
        Command::new(&bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let show_log = |p: &Path| std::fs::read_to_string(p.join("prometheus.log")).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(90);
    let up = wait_for(prom, "up{job=\"flowd\"} == 1", deadline).await;
    assert_eq!(
        up,
        Some(1.0),
        "Prometheus never scraped flowd:\n{}",
        show_log(&dir.0)
    );

    let q = |promql: &'static str| async move {
        wait_for(prom, promql, Instant::now() + Duration::from_secs(30)).await
    };
    assert_eq!(
        q("hubble_http_requests_total{source=\"loadgen\",destination=\"frontend\",status=\"200\",reporter=\"client\"}").await,
        Some(7.0)
    );
    assert_eq!(
        q("sum(hubble_http_requests_total{status=~\"4..|5..\"})").await,
        Some(10.0)
    );
    assert_eq!(
        q("sum by (reporter) (hubble_http_requests_total{reporter=\"server\"})").await,
        Some(12.0)
    );
    assert_eq!(
        q("sum(hubble_http_request_duration_seconds_count)").await,
        Some(24.0)
    );
    // Exemplars went through OpenMetrics into Prometheus' exemplar storage.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ex = api_get(
        prom,
        &format!(
            "/api/v1/query_exemplars?query={}&start={}&end={}",
            url_encode("hubble_http_requests_total"),
            now - 600,
            now + 60
        ),
    )
    .await
    .expect("exemplar query");
    assert!(
        ex.to_string().contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "no exemplar: {ex}"
    );
    server_task.abort();
}
