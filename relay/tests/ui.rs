//! `--ui-listen` through the relay binary: the page and its JSON endpoints
//! over in-test nodes, and the relay's TLS on the UI's address too. The
//! browser tests of the UI are in tests/lab/tests/ui.rs (the lab cluster).
//! HTTP through `curl` (scripts/setup.sh installs it).
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{FakeNode, NodeData, now_ns, ts};
use flowd_proto::flow::layer4::Protocol;
use flowd_proto::flow::layer7::Record;
use flowd_proto::flow::{
    Endpoint, Flow, FlowType, Http, Ip, L7FlowType, Layer4, Layer7, Tcp, TraceObservationPoint,
    Workload,
};
use flowd_tests::{ChildGuard, flowd::TempDir, wait_until};
use serde_json::Value;

fn tls_file(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
        .display()
        .to_string()
}

fn free_addr() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

struct Relay {
    _child: ChildGuard,
    ui: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Relay {
    fn start(tag: &str, args: &[&str]) -> Result<Self> {
        let (addr, ui) = (free_addr()?, free_addr()?);
        let dir = TempDir::new(tag)?;
        let log = dir.0.join("relay.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
        cmd.args(["--listen-address", &addr, "--ui-listen", &ui])
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log)?);
        let mut child = ChildGuard::spawn("relay", &mut cmd)?;
        wait_until("the relay serving the UI", Duration::from_secs(20), || {
            if let Some(st) = child.try_wait()? {
                bail!("relay exited ({st}): {}", std::fs::read_to_string(&log)?);
            }
            Ok(std::fs::read_to_string(&log)?
                .contains("relay serving the web UI")
                .then_some(()))
        })?;
        Ok(Self {
            _child: child,
            ui,
            log,
            _dir: dir,
        })
    }
}

/// (status, headers, body) of `curl ARGS URL`.
fn curl(args: &[&str], url: &str) -> Result<(u16, String, String)> {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "10", "-D", "/dev/stderr"])
        .args(args)
        .arg(url)
        .output()
        .context("running curl (scripts/setup.sh installs it)")?;
    let headers = String::from_utf8_lossy(&out.stderr).to_string();
    let status = headers
        .lines()
        .find(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((
        status,
        headers,
        String::from_utf8_lossy(&out.stdout).to_string(),
    ))
}

fn get(url: &str) -> Result<(u16, String, String)> {
    curl(&[], url)
}

fn endpoint(ns: &str, name: &str) -> Endpoint {
    Endpoint {
        namespace: ns.into(),
        pod_name: format!("{name}-1"),
        workloads: vec![Workload {
            name: name.into(),
            kind: "Deployment".into(),
        }],
        ..Default::default()
    }
}

/// An HTTP response from shop/api to shop/web, seen at the server's veth.
fn response(uuid: &str, code: u32, latency_ms: u64) -> Flow {
    response_at(uuid, code, latency_ms, now_ns())
}

/// The same, observed at `time_ns`.
fn response_at(uuid: &str, code: u32, latency_ms: u64, time_ns: u64) -> Flow {
    Flow {
        time: Some(ts(time_ns)),
        uuid: uuid.into(),
        r#type: FlowType::L7 as i32,
        ip: Some(Ip {
            source: "10.0.0.2".into(),
            destination: "10.0.0.1".into(),
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(Protocol::Tcp(Tcp {
                source_port: 8080,
                destination_port: 40000,
                flags: None,
            })),
        }),
        source: Some(endpoint("shop", "api")),
        destination: Some(endpoint("shop", "web")),
        trace_observation_point: TraceObservationPoint::FromEndpoint as i32,
        l7: Some(Layer7 {
            r#type: L7FlowType::Response as i32,
            latency_ns: latency_ms * 1_000_000,
            record: Some(Record::Http(Http {
                code,
                method: "GET".into(),
                url: "http://api:8080/items".into(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn ui_listen_serves_the_page_map_flows_and_status() -> Result<()> {
    let node = FakeNode::start(NodeData::new("node-1"));
    let relay = Relay::start("relay-ui", &["--peer", &format!("node-1={}", node.addr)])?;
    let base = format!("http://{}", relay.ui);
    wait_until("node-1 connected", Duration::from_secs(20), || {
        let (_, _, body) = get(&format!("{base}/api/status"))?;
        let v: Value = serde_json::from_str(&body)?;
        Ok((v["nodes"][0]["connected"] == true).then_some(v))
    })?;
    for (i, code) in [200, 200, 503].into_iter().enumerate() {
        node.data
            .emit_flow(response(&format!("r{i}"), code, 2 + i as u64));
    }

    // The map: one edge web -> api, 3 requests, 1 error.
    let map = wait_until("the edge on the map", Duration::from_secs(20), || {
        let (st, _, body) = get(&format!("{base}/api/map?window=5m"))?;
        ensure!(st == 200, "map: {st} {body}");
        let v: Value = serde_json::from_str(&body)?;
        Ok((v["edges"][0]["stats"]["requests"] == 3).then_some(v))
    })?;
    let e = &map["edges"][0];
    ensure!(
        map["edges"].as_array().map(Vec::len) == Some(1)
            && e["source"] == "shop/web"
            && e["target"] == "shop/api"
            && e["protocol"] == "HTTP"
            && e["port"] == 8080
            && e["stats"]["errors"] == 1,
        "map: {map}"
    );
    let rate = e["stats"]["error_rate"].as_f64().unwrap_or(0.0);
    ensure!((rate - 1.0 / 3.0).abs() < 1e-9, "error rate {rate}");
    ensure!(map["namespaces"] == serde_json::json!(["shop"]), "{map}");

    // Flows: observe's flags in the query, NDJSON out.
    let (st, headers, body) = get(&format!(
        "{base}/api/flows?namespace=shop&http-status=500-599&last=10"
    ))?;
    ensure!(
        st == 200 && headers.contains("application/x-ndjson"),
        "{st} {headers}"
    );
    let uuids: Vec<String> = body
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["flow"]["uuid"].as_str().map(str::to_string))
        .collect();
    // The nodes filter: the fake node got observe's request and answers
    // with everything it has, which the relay streams as it came.
    ensure!(uuids == ["r0", "r1", "r2"], "flows: {uuids:?} ({body})");
    let req = node
        .data
        .last_request
        .lock()
        .unwrap()
        .clone()
        .context("no request reached the node")?;
    ensure!(
        req.number == 10
            && req.whitelist.len() == 2
            && req
                .whitelist
                .iter()
                .all(|f| f.http_status_code == ["500-599"])
            && req.whitelist[0].source_pod == ["shop/"]
            && req.whitelist[1].destination_pod == ["shop/"],
        "the request for namespace=shop&http-status=500-599&last=10: {req:?}"
    );

    // What observe would refuse is refused, in one line.
    let (st, _, body) = get(&format!("{base}/api/flows?server=evil:1"))?;
    ensure!(
        st == 400 && body.contains("unknown filter \\\"server\\\""),
        "{st} {body}"
    );
    let (st, _, body) = get(&format!("{base}/api/flows?verdict=MAYBE"))?;
    ensure!(st == 400 && body.contains("MAYBE"), "{st} {body}");
    let (st, _, body) = get(&format!("{base}/api/map?window=2h"))?;
    ensure!(st == 400 && body.contains("2h"), "{st} {body}");

    // The page and its assets, from the binary, with a same-origin-only policy.
    for path in ["/", "/map", "/flows?namespace=shop"] {
        let (st, headers, body) = get(&format!("{base}{path}"))?;
        ensure!(
            st == 200
                && headers.contains("text/html")
                && headers.contains("default-src 'self'")
                && body.contains("<title>"),
            "{path}: {st} {headers}"
        );
    }
    let (_, _, page) = get(&format!("{base}/"))?;
    let js = page
        .split('"')
        .find(|s| s.starts_with("/assets/") && s.ends_with(".js"))
        .context("no script in the page")?;
    let (st, headers, body) = get(&format!("{base}{js}"))?;
    ensure!(
        st == 200 && headers.contains("text/javascript") && body.contains("/api/map"),
        "{js}: {st} {headers}"
    );
    ensure!(
        !page.contains("http://") && !page.contains("https://"),
        "external URL in the page"
    );
    let (st, _, _) = get(&format!("{base}/nope"))?;
    ensure!(st == 404);
    ensure!(
        std::fs::read_to_string(&relay.log)?.contains(&format!("url=http://{}/", relay.ui)),
        "the relay logs the UI's URL"
    );
    Ok(())
}

/// The map's windows (live = 30 s, 5, 15, 60 min) over flows the node
/// observed before the relay started (its buffer, asked with `since` = an
/// hour ago) and live ones: requests, errors and the latency p50/p95 of
/// each window. Latencies are histogram bins about 9 % wide: a quantile is
/// the upper bound of its bin, at most 10 % above the exact value.
#[test]
fn ui_map_windows_from_the_nodes_buffers_with_latency_quantiles() -> Result<()> {
    const MIN: u64 = 60_000_000_000;
    let node = FakeNode::start(NodeData::new("node-1"));
    let now = now_ns();
    // (minutes ago, status, latency ms), buffered at the node.
    for (i, (ago, code, ms)) in [(50, 200, 100), (10, 503, 50), (3, 200, 8)]
        .into_iter()
        .enumerate()
    {
        node.data
            .emit_flow(response_at(&format!("old{i}"), code, ms, now - ago * MIN));
    }
    let relay = Relay::start(
        "relay-ui-win",
        &["--peer", &format!("node-1={}", node.addr)],
    )?;
    let base = format!("http://{}", relay.ui);
    let stats = |window: &str| -> Result<Value> {
        let (st, _, body) = get(&format!("{base}/api/map?window={window}"))?;
        ensure!(st == 200, "{window}: {st} {body}");
        let v: Value = serde_json::from_str(&body)?;
        Ok(v["edges"][0]["stats"].clone())
    };
    wait_until(
        "the buffered flows on the 60 min map",
        Duration::from_secs(20),
        || Ok((stats("60m")?["requests"] == 3).then_some(())),
    )?;
    // Two live responses, 1 and 2 ms.
    for (i, ms) in [1, 2].into_iter().enumerate() {
        node.data.emit_flow(response(&format!("live{i}"), 200, ms));
    }
    wait_until("the live flows on the map", Duration::from_secs(20), || {
        Ok((stats("live")?["requests"] == 2).then_some(()))
    })?;
    let near = |v: &Value, exact: f64| v.as_f64().is_some_and(|x| x >= exact && x < exact * 1.1);
    // window: (requests, errors, p50 ms, p95 ms)
    for (window, requests, errors, p50, p95) in [
        ("live", 2, 0, 1.0, 2.0),
        ("5m", 3, 0, 2.0, 8.0),
        ("15m", 4, 1, 2.0, 50.0),
        ("60m", 5, 1, 8.0, 100.0),
    ] {
        let s = stats(window)?;
        eprintln!("{window}: {s}");
        ensure!(
            s["requests"] == requests
                && s["errors"] == errors
                && near(&s["p50_ms"], p50)
                && near(&s["p95_ms"], p95),
            "{window}: want {requests} requests, {errors} errors, p50 {p50} ms, p95 {p95} ms; got {s}"
        );
    }
    Ok(())
}

/// The UI uses the relay's TLS options: HTTPS with the server certificate,
/// client certificates required with --tls-relay-client-ca-files.
#[test]
fn ui_listen_uses_the_relays_tls_and_mtls() -> Result<()> {
    let node = FakeNode::start(NodeData::new("node-1"));
    let relay = Relay::start(
        "relay-ui-tls",
        &[
            "--peer",
            &format!("node-1={}", node.addr),
            "--tls-relay-server-cert-file",
            &tls_file("server.pem"),
            "--tls-relay-server-key-file",
            &tls_file("server-key.pem"),
            "--tls-relay-client-ca-files",
            &tls_file("ca.pem"),
        ],
    )?;
    let port = relay.ui.rsplit(':').next().unwrap_or_default().to_string();
    let url = format!("https://flowd.test:{port}/api/status");
    let resolve = format!("flowd.test:{port}:127.0.0.1");
    let ca = tls_file("ca.pem");
    let (st, _, body) = curl(
        &[
            "--resolve",
            &resolve,
            "--cacert",
            &ca,
            "--cert",
            &tls_file("client.pem"),
            "--key",
            &tls_file("client-key.pem"),
        ],
        &url,
    )?;
    ensure!(
        st == 200 && body.contains("\"nodes\""),
        "with a client certificate: {st} {body}"
    );
    let (st, _, _) = curl(&["--resolve", &resolve, "--cacert", &ca], &url)?;
    ensure!(st == 0, "without a client certificate the UI answered {st}");
    let (st, _, _) = get(&format!("http://{}/api/status", relay.ui))?;
    ensure!(st == 0, "plain HTTP on the TLS UI answered {st}");
    Ok(())
}

/// The UI follows the relay's certificate files as its Observer API does
/// (new connections get the renewed certificate, no restart), and speaks
/// HTTP/1.1 as well as HTTP/2 over TLS (ALPN offers both).
#[test]
fn ui_listen_serves_renewed_certificates_over_http1_and_h2() -> Result<()> {
    let certs = TempDir::new("relay-ui-certs")?;
    let (cert, key) = (certs.0.join("tls.crt"), certs.0.join("tls.key"));
    std::fs::copy(tls_file("server.pem"), &cert)?;
    std::fs::copy(tls_file("server-key.pem"), &key)?;
    let node = FakeNode::start(NodeData::new("node-1"));
    let relay = Relay::start(
        "relay-ui-reload",
        &[
            "--peer",
            &format!("node-1={}", node.addr),
            "--tls-relay-server-cert-file",
            &cert.display().to_string(),
            "--tls-relay-server-key-file",
            &key.display().to_string(),
        ],
    )?;
    let port = relay.ui.rsplit(':').next().unwrap_or_default().to_string();
    let url = format!("https://flowd.test:{port}/api/status");
    let resolve = format!("flowd.test:{port}:127.0.0.1");
    let ca = tls_file("ca.pem");
    for (version, want) in [("--http1.1", "HTTP/1.1 200"), ("--http2", "HTTP/2 200")] {
        let (st, headers, body) = curl(&["--resolve", &resolve, "--cacert", &ca, version], &url)?;
        ensure!(
            st == 200 && headers.starts_with(want) && body.contains("\"nodes\""),
            "{version}: {st} {headers} {body}"
        );
    }

    // A renewal: a new key and certificate (self-signed here) replace the
    // files, each written aside and renamed over the old one.
    let (new_cert, new_key) = (certs.0.join("new.crt"), certs.0.join("new.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=flowd.test",
            "-addext",
            "subjectAltName=DNS:flowd.test",
        ])
        .arg("-keyout")
        .arg(&new_key)
        .arg("-out")
        .arg(&new_cert)
        .output()
        .context("running openssl (scripts/setup.sh installs it)")?;
    ensure!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let renewed = certs.0.join("renewed-ca.crt");
    std::fs::copy(&new_cert, &renewed)?;
    std::fs::rename(&new_key, &key)?;
    std::fs::rename(&new_cert, &cert)?;
    let renewed = renewed.display().to_string();
    wait_until(
        "the UI serving the renewed certificate",
        Duration::from_secs(20),
        || {
            let (st, _, _) = curl(&["--resolve", &resolve, "--cacert", &renewed], &url)?;
            Ok((st == 200).then_some(()))
        },
    )?;
    let (st, _, _) = curl(&["--resolve", &resolve, "--cacert", &ca], &url)?;
    ensure!(st == 0, "the replaced certificate is still served ({st})");
    Ok(())
}

#[test]
fn a_bad_ui_listen_address_is_one_line() -> Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--peer", "127.0.0.1:1", "--ui-listen", "nonsense"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "exit {:?}: {err}", out.status);
    ensure!(
        err.trim().lines().last()
            == Some(
                "relay: --ui-listen \"nonsense\": expected host:port or :port: invalid socket address syntax"
            ),
        "{err}"
    );
    Ok(())
}

/// gRPC calls on the map: the edge web -> inventory is labelled gRPC, and
/// its errors are the calls that did not end OK — NOT_FOUND and a reset
/// without a grpc-status — although every one is HTTP 200.
#[test]
fn ui_map_counts_failed_grpc_calls_as_errors() -> Result<()> {
    use flowd_proto::flow::Grpc;
    let node = FakeNode::start(NodeData::new("node-1"));
    let relay = Relay::start(
        "relay-ui-grpc",
        &["--peer", &format!("node-1={}", node.addr)],
    )?;
    let base = format!("http://{}", relay.ui);
    for (i, status) in [Some(0), Some(0), Some(5), None].into_iter().enumerate() {
        let mut f = response(&format!("g{i}"), 200, 3);
        f.source = Some(endpoint("shop", "inventory"));
        if let Some(Protocol::Tcp(t)) = f.l4.as_mut().and_then(|l| l.protocol.as_mut()) {
            t.source_port = 50051;
        }
        if let Some(Record::Http(h)) = f.l7.as_mut().and_then(|l| l.record.as_mut()) {
            h.protocol = "HTTP/2".into();
            h.method = "POST".into();
            h.url = "http://inventory:50051/shop.inventory.v1.Inventory/Reserve".into();
            h.grpc = Some(Grpc {
                service: "shop.inventory.v1.Inventory".into(),
                method: "Reserve".into(),
                status_code: status,
                reset: if status.is_none() {
                    "CANCEL".into()
                } else {
                    String::new()
                },
                ..Default::default()
            });
        }
        node.data.emit_flow(f);
    }
    let map = wait_until("the gRPC edge on the map", Duration::from_secs(20), || {
        let (st, _, body) = get(&format!("{base}/api/map?window=5m"))?;
        ensure!(st == 200, "map: {st} {body}");
        let v: Value = serde_json::from_str(&body)?;
        Ok((v["edges"][0]["stats"]["requests"] == 4).then_some(v))
    })?;
    let e = &map["edges"][0];
    ensure!(
        map["edges"].as_array().map(Vec::len) == Some(1)
            && e["source"] == "shop/web"
            && e["target"] == "shop/inventory"
            && e["protocol"] == "gRPC"
            && e["port"] == 50051
            && e["stats"]["errors"] == 2,
        "map: {map}"
    );
    Ok(())
}
