//! Hubble's handler catalogue through the real flowd binary:
//! - a `hubble-metrics` value as Cilium's docs and dashboards give it, with
//!   `policy` and `kafka` (events flowd never has) and `flows-to-world`,
//!   starts flowd from a ConfigMap file; a scrape of the running daemon
//!   shows every family with Hubble's name and type (`policy` / `kafka`
//!   without samples), Debian's Prometheus scrapes it (OpenMetrics) and
//!   records those families' types, and the log says once which handlers
//!   stay at zero;
//! - a handler name outside Hubble's catalogue stops flowd with one line.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod metrics_support;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use flowd_tests::flowd::TempDir;
use flowd_tests::{ChildGuard, Netns, wait_until};
use metrics_support::prometheus::{get_json, prometheus_binary, url_encode};
use nix::sys::signal::Signal;

const BIN: &str = env!("CARGO_BIN_EXE_flowd");

/// Cilium's values for its dashboards and the policy-verdicts dashboard
/// (grafana.com 18015), with Kafka and flows-to-world as Cilium's docs list them.
const CILIUM_VALUES: &str = "dns:query;ignoreAAAA drop tcp flow port-distribution icmp \
    httpV2:exemplars=true;labelsContext=source_ip,source_namespace,source_workload,destination_ip,destination_namespace,destination_workload,traffic_direction \
    policy:sourceContext=app|workload-name|pod|reserved-identity;destinationContext=app|workload-name|pod|dns|reserved-identity;labelsContext=source_namespace,destination_namespace \
    kafka:labelsContext=source_namespace,source_workload,destination_namespace,destination_workload,traffic_direction \
    flows-to-world:any-drop;port;syn-only";

/// GET /metrics (Prometheus text) from inside the current namespace.
fn scrape(addr: SocketAddr) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no header end")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.to_string())
}

#[test]
fn cilium_values_with_policy_and_kafka_start_and_expose_every_family() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "needs root (a network namespace of its own for flowd's ports)"
    );
    let ns = Netns::new("catalogue")?;
    let dir = TempDir::new("catalogue")?;
    let config = dir.0.join("configmap.yaml");
    // A ConfigMap as a user writes it: the Hubble values in a folded block.
    let values = CILIUM_VALUES.split(' ').collect::<Vec<_>>().join("\n    ");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cilium-config\ndata:\n  \
             hubble-listen-address: \"127.0.0.1:4244\"\n  \
             hubble-metrics-server: \"127.0.0.1:9965\"\n  \
             hubble-metrics: >-\n    {values}\n  \
             flowd-interfaces: \"\"\n"
        ),
    )?;
    let log = dir.0.join("flowd.log");
    let mut cmd = ns.command(BIN);
    cmd.arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log)?);
    let mut flowd = ChildGuard::spawn("flowd", &mut cmd)?;
    let addr: SocketAddr = "127.0.0.1:9965".parse()?;
    let text = wait_until("flowd's /metrics", Duration::from_secs(30), || {
        if let Some(st) = flowd.try_wait()? {
            bail!(
                "flowd exited with {st}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(ns.run(move || scrape(addr))?.ok())
    })?;

    // (family as the Prometheus text format names it, type)
    let families = [
        ("hubble_policy_verdicts_total", "counter"),
        ("hubble_kafka_requests_total", "counter"),
        ("hubble_kafka_request_duration_seconds", "histogram"),
    ];
    for (name, typ) in families {
        ensure!(
            text.contains(&format!("# TYPE {name} {typ}\n")),
            "{name} is not exposed as a {typ}:\n{text}"
        );
        ensure!(
            !text.lines().any(|l| l.starts_with(name)),
            "{name} has samples although flowd has no such events:\n{text}"
        );
    }
    // The families with events exist once something is counted: their
    // handlers are configured (the series cap counter names each of them).
    for name in [
        "hubble_flows_to_world_total",
        "hubble_http_requests_total",
        "hubble_http_request_duration_seconds",
        "hubble_dns_queries_total",
        "hubble_flows_processed_total",
        "hubble_tcp_flags_total",
    ] {
        ensure!(
            text.contains(&format!(
                "flowd_metrics_series_refused_total{{metric=\"{name}\"}} 0"
            )),
            "{name} is not configured:\n{text}"
        );
    }

    // Prometheus (asking for OpenMetrics, as it does) scrapes the families
    // without samples and records their metadata.
    let prom_bin = prometheus_binary().map_err(anyhow::Error::msg)?;
    std::fs::write(
        dir.0.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: flowd\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )?;
    let mut cmd = ns.command(&prom_bin);
    cmd.arg(format!(
        "--config.file={}",
        dir.0.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.0.join("data").display()
    ))
    .arg("--web.listen-address=127.0.0.1:9090")
    .stderr(std::fs::File::create(dir.0.join("prometheus.log"))?);
    let _prometheus = ChildGuard::spawn("prometheus", &mut cmd)?;
    let prom: SocketAddr = "127.0.0.1:9090".parse()?;
    let api = |path: String| -> Result<Result<serde_json::Value, String>> {
        ns.run(move || -> Result<Result<serde_json::Value, String>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(get_json(prom, &path)))
        })?
    };
    let log_of = || std::fs::read_to_string(dir.0.join("prometheus.log")).unwrap_or_default();
    wait_until("Prometheus scraping flowd", Duration::from_secs(60), || {
        let up = api(format!("/api/v1/query?query={}", url_encode("up")))?;
        Ok(up
            .ok()
            .filter(|v| v["data"]["result"][0]["value"][1] == "1")
            .map(|_| ()))
    })
    .with_context(log_of)?;
    for (family, typ) in [
        ("hubble_policy_verdicts", "counter"),
        ("hubble_kafka_requests", "counter"),
        ("hubble_kafka_request_duration_seconds", "histogram"),
    ] {
        let meta = api(format!("/api/v1/metadata?metric={family}"))?.map_err(anyhow::Error::msg)?;
        ensure!(
            meta["data"][family][0]["type"] == typ,
            "Prometheus has no {typ} {family}: {meta}\n{}",
            log_of()
        );
    }

    let st = flowd.stop(Signal::SIGTERM, Duration::from_secs(20))?;
    ensure!(st.success(), "flowd exited with {st}");
    let log = std::fs::read_to_string(&log)?;
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("no events in flowd"))
        .collect();
    ensure!(said.len() == 1, "one start-up line expected:\n{log}");
    let want = "handlers=policy (hubble_policy_verdicts_total{direction,match,action,source_namespace,destination_namespace,source,destination}); \
                kafka (hubble_kafka_requests_total{source_namespace,source_workload,destination_namespace,destination_workload,traffic_direction,topic,api_key,error_code,reporter}, \
                hubble_kafka_request_duration_seconds{source_namespace,source_workload,destination_namespace,destination_workload,traffic_direction,topic,api_key,reporter})";
    ensure!(said[0].contains(want), "{}\nwant {want}", said[0]);
    Ok(())
}

/// A name outside Hubble's catalogue (here `nld`, a handler proposed to
/// Cilium but never merged) is refused with one line naming it and the
/// valid names; the rest of the value is fine.
#[test]
fn a_handler_outside_hubbles_catalogue_is_a_one_line_error() -> Result<()> {
    let out = std::process::Command::new(BIN)
        .args([
            "--set",
            "hubble-metrics=flow policy kafka flows-to-world:port nld:direction",
            "--set",
            "flowd-interfaces=",
        ])
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()?;
    ensure!(!out.status.success(), "flowd started: {:?}", out.status);
    let stderr = String::from_utf8(out.stderr)?;
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(lines.len() == 1, "one line expected:\n{stderr}");
    ensure!(
        lines[0].contains("hubble-metrics")
            && lines[0].contains(
                "unknown metrics handler \"nld\" (valid: flow, drop, tcp, icmp, port-distribution, dns, http, httpV2, grpc, flows-to-world, policy, kafka)"
            ),
        "{stderr}"
    );
    Ok(())
}

/// flowd's `grpc` handler with Hubble's context options and exemplars,
/// next to `httpV2`: flowd starts and configures both of its metrics (the
/// series cap counter names each, at 0; their values on real gRPC traffic
/// are checked end to end); an option the handler does not take stops flowd
/// with one line naming the valid ones.
#[test]
fn grpc_handler_takes_hubbles_options_and_refuses_others() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "needs root (a network namespace of its own for flowd's ports)"
    );
    let ns = Netns::new("grpcmet")?;
    let dir = TempDir::new("grpcmet")?;
    let log = dir.0.join("flowd.log");
    let mut cmd = ns.command(BIN);
    cmd.args([
        "--set",
        "hubble-listen-address=127.0.0.1:4244",
        "--set",
        "hubble-metrics-server=127.0.0.1:9965",
        "--set",
        "hubble-metrics=grpc:sourceContext=workload-name|pod;destinationContext=workload-name|pod;labelsContext=source_namespace,destination_namespace;exemplars=true httpV2",
        "--set",
        "flowd-interfaces=",
    ])
    .env("NO_COLOR", "1")
    .stderr(std::fs::File::create(&log)?);
    let mut flowd = ChildGuard::spawn("flowd", &mut cmd)?;
    let addr: SocketAddr = "127.0.0.1:9965".parse()?;
    let text = wait_until("flowd's /metrics", Duration::from_secs(30), || {
        if let Some(st) = flowd.try_wait()? {
            bail!(
                "flowd exited with {st}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(ns.run(move || scrape(addr))?.ok())
    })?;
    for name in [
        "hubble_grpc_requests_total",
        "hubble_grpc_request_duration_seconds",
        "hubble_http_requests_total",
    ] {
        ensure!(
            text.contains(&format!(
                "flowd_metrics_series_refused_total{{metric=\"{name}\"}} 0"
            )),
            "{name} is not configured:\n{text}"
        );
    }
    let st = flowd.stop(Signal::SIGTERM, Duration::from_secs(20))?;
    ensure!(st.success(), "flowd exited with {st}");

    let out = std::process::Command::new(BIN)
        .args([
            "--set",
            "hubble-metrics=httpV2 grpc:query",
            "--set",
            "flowd-interfaces=",
        ])
        .env_remove("RUST_BACKTRACE")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()?;
    ensure!(!out.status.success(), "flowd started: {:?}", out.status);
    let stderr = String::from_utf8(out.stderr)?;
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(
        lines.len() == 1
            && lines[0].contains(
                "metrics handler \"grpc\": unknown option \"query\" (valid: sourceContext, destinationContext, sourceEgressContext, sourceIngressContext, destinationEgressContext, destinationIngressContext, labelsContext, exemplars)"
            ),
        "{stderr}"
    );
    Ok(())
}
