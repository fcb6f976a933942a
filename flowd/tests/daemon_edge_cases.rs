//! Edge cases of flows on real traffic, through the running daemon: ARP is
//! no flow; a request line longer than the capture is one REQUEST flagged
//! truncated; a response without its request is counted with
//! `method="unknown"`; `monitor-aggregation` levels as in Cilium;
//! port-distribution counts connections; UDP replies are replies; and
//! `cluster-name` names the nodes (flowd, its peer service, the relay).
//!
//! Topology: namespace `a` (client, flowd on veth-a, API and metrics on its
//! loopback) ↔ `b` (servers), IPv4 only; static neighbours unless the test
//! is about ARP, so each test knows every packet on the link. Root.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod daemon_netns;
mod metrics_support;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use daemon_netns::*;
use flowd_proto::flow::{
    Flow, FlowFilter, FlowType, L7FlowType, TraceReason, layer4::Protocol, layer7::Record,
};
use flowd_proto::observer::{GetFlowsRequest, GetNodesRequest, get_flows_response::ResponseTypes};
use flowd_tests::flowd::TempDir;
use flowd_tests::{ChildGuard, Pair, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// Starts the daemon on veth-a with `args` and waits for the attachment.
fn daemon(pair: &Pair, node: &str, args: &[&str]) -> Result<Daemon> {
    let mut all = vec!["-i", "veth-a"];
    all.extend_from_slice(args);
    let d = Daemon::start(&pair.a, node, &all)?;
    wait_until("flowd attached to veth-a", WAIT, || {
        Ok((tcx_programs(&pair.a, "veth-a")? == (1, 1)).then_some(()))
    })?;
    Ok(d)
}

fn l7_type(f: &Flow) -> Option<L7FlowType> {
    f.l7.as_ref()
        .and_then(|l| L7FlowType::try_from(l.r#type).ok())
}

fn http(f: &Flow) -> Option<&flowd_proto::flow::Http> {
    match f.l7.as_ref()?.record.as_ref()? {
        Record::Http(h) => Some(h),
        _ => None,
    }
}

fn is_dns(f: &Flow) -> bool {
    matches!(
        f.l7.as_ref().and_then(|l| l.record.as_ref()),
        Some(Record::Dns(_))
    )
}

fn is_reply(f: &Flow) -> Option<bool> {
    f.is_reply.as_ref().map(|b| b.value)
}

fn l34(flows: &[Flow]) -> Vec<&Flow> {
    flows
        .iter()
        .filter(|f| f.r#type == FlowType::L3L4 as i32)
        .collect()
}

/// ARP is no flow: one ping over a link without neighbour entries gives an
/// ARP exchange and an echo exchange; GetFlows returns exactly the two ICMP
/// flows, none without addresses (`N/A -> N/A`), and the two ARP records
/// (one per hook) are counted in `flowd_events_skipped_total{reason="non_ip"}`.
#[test]
fn arp_frames_make_no_flows() -> Result<()> {
    let pair = Pair::create("eearp")?;
    let mut d = daemon(
        &pair,
        "ee-arp",
        // No periodic updates: each kernel entry reports once.
        &["--set", "monitor-aggregation-interval=1h"],
    )?;
    quiet_up(&pair, false)?;
    let got = pair
        .a
        .run(|| flowd_tests::net::ping("10.200.0.2".parse()?, 1, 16))??;
    assert_eq!(got, 1);
    let flows = flows_when(&pair.a, "the echo reply flow", |f| {
        f.iter().any(|f| {
            matches!(
                f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                Some(Protocol::IcmPv4(i)) if i.r#type == 0
            )
        })
    })?;
    assert!(
        flows.iter().all(|f| f.ip.is_some()),
        "flows without IP: {flows:#?}"
    );
    let l34 = l34(&flows);
    assert_eq!(l34.len(), 2, "{l34:#?}");
    let s = wait_metrics(&pair.a, "the ARP records counted", WAIT, |s| {
        let n = value(s, "flowd_events_skipped_total", &[("reason", "non_ip")]);
        (n >= 2.0).then(|| s.to_vec())
    })?;
    assert_eq!(
        value(&s, "flowd_events_skipped_total", &[("reason", "non_ip")]),
        2.0
    );
    d.alive()
}

/// A URL longer than the capture (512 bytes): exactly one REQUEST flow with
/// the captured start of the URL, flagged, and its RESPONSE paired with it.
#[test]
fn long_url_gives_one_truncated_request() -> Result<()> {
    let pair = Pair::create("eeurl")?;
    let mut d = daemon(&pair, "ee-url", &[])?;
    quiet_up(&pair, true)?;
    let server = http_server(&pair, 1, None)?;
    let path = format!("/search/{}", "q".repeat(2000));
    let resp = http_get(&pair.a, path.clone())?;
    ensure!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))???;
    let flows = flows_when(&pair.a, "the HTTP response flow", |f| {
        f.iter().any(|f| l7_type(f) == Some(L7FlowType::Response))
    })?;
    let reqs: Vec<&Flow> = flows
        .iter()
        .filter(|f| l7_type(f) == Some(L7FlowType::Request))
        .collect();
    assert_eq!(reqs.len(), 1, "{flows:#?}");
    let h = http(reqs[0]).context("not HTTP")?;
    // The kernel copies 512 bytes: "GET " and the path's first 508.
    let captured = &path[..512 - "GET ".len()];
    assert_eq!(
        (
            h.method.as_str(),
            h.url.as_str(),
            h.protocol.as_str(),
            h.url_truncated
        ),
        ("GET", captured, "", true)
    );
    let resps: Vec<&Flow> = flows
        .iter()
        .filter(|f| l7_type(f) == Some(L7FlowType::Response))
        .collect();
    assert_eq!(resps.len(), 1);
    let r = http(resps[0]).context("not HTTP")?;
    assert_eq!(
        (r.code, r.method.as_str(), r.url.as_str(), r.url_truncated),
        (200, "GET", captured, true)
    );
    let (q, a) = (reqs[0].l7.as_ref(), resps[0].l7.as_ref());
    assert_eq!(
        q.map(|l| l.exchange_id),
        a.map(|l| l.exchange_id),
        "paired with its request"
    );
    d.alive()
}

/// A response whose request flowd never saw (the request went out before
/// flowd started) is counted in hubble_http_requests_total with
/// `method="unknown"`; no series has an empty method. A whole exchange after
/// it counts with its method.
#[test]
fn unpaired_response_is_counted_with_method_unknown() -> Result<()> {
    let pair = Pair::create("eeunp")?;
    quiet_up(&pair, true)?;
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    let (gate_tx, gate_rx) = std::sync::mpsc::channel();
    let server = http_server(&pair, 2, Some((got_tx, gate_rx)))?;
    // The request goes out (and arrives) before flowd runs; its response waits.
    let pending = pair.a.spawn_thread(|| http_get_blocking("/before"))?;
    got_rx.recv_timeout(WAIT)?;
    let mut d = daemon(&pair, "ee-unp", &["--set", "hubble-metrics=httpV2"])?;
    gate_tx.send(())?;
    let first = pending
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))??;
    ensure!(first?.starts_with("HTTP/1.1 200"));
    // The second exchange: its request arrives, then its go.
    let after = pair.a.spawn_thread(|| http_get_blocking("/after"))?;
    got_rx.recv_timeout(WAIT)?;
    gate_tx.send(())?;
    ensure!(
        after
            .join()
            .map_err(|_| anyhow::anyhow!("client panicked"))???
            .starts_with("HTTP/1.1 200")
    );
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))???;
    flows_when(&pair.a, "two HTTP responses", |f| {
        f.iter()
            .filter(|f| l7_type(f) == Some(L7FlowType::Response))
            .count()
            == 2
    })?;
    let series = |s: &[metrics_support::Sample]| -> BTreeMap<String, f64> {
        s.iter()
            .filter(|x| x.name == "hubble_http_requests_total")
            .map(|x| (x.labels.get("method").cloned().unwrap_or_default(), x.value))
            .collect()
    };
    let s = wait_metrics(&pair.a, "both responses counted", WAIT, |s| {
        (series(s).values().sum::<f64>() >= 2.0).then(|| s.to_vec())
    })?;
    let m = series(&s);
    assert_eq!(
        m,
        BTreeMap::from([("GET".to_string(), 1.0), ("unknown".to_string(), 1.0)]),
        "{s:#?}"
    );
    d.alive()
}

/// L3/L4 records of `c` TCP connections (SYN, data, FIN both ways): with
/// aggregation each of the two entries (request and reply direction)
/// reports its start and its FIN; without, every packet.
fn aggregation_records(level: &str, c: usize) -> Result<(usize, u64)> {
    let pair = Pair::create("eeagg")?;
    let mut d = daemon(
        &pair,
        "ee-agg",
        &[
            "--set",
            &format!("monitor-aggregation={level}"),
            "--set",
            "monitor-aggregation-interval=1h",
            "--set",
            "flowd-l7-max-bytes=0",
        ],
    )?;
    quiet_up(&pair, true)?;
    let server = http_server(&pair, c, None)?;
    for i in 0..c {
        http_get(&pair.a, format!("/{i}"))?;
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))???;
    // Every client socket is closed or in TIME-WAIT (it sent the last
    // ACK): every packet of the connections has passed veth-a's hooks.
    let mut open = String::new();
    wait_until("connections closed", WAIT, || {
        let out = pair
            .a
            .command("ss")
            .args([
                "-Htan",
                "state",
                "all",
                "exclude",
                "time-wait",
                "dst",
                "10.200.0.2",
            ])
            .output()?;
        open = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(open.is_empty().then_some(()))
    })
    .with_context(|| format!("sockets: {open}"))?;
    let (rx, _, tx, _) = pair.a.link_stats("veth-a")?;
    let packets = rx + tx;
    let want_none = usize::try_from(packets)?;
    let flows = flows_when(&pair.a, "the records of every connection", |f| {
        let n = l34(f).len();
        n >= if level == "none" || level == "0" {
            want_none
        } else {
            4 * c
        }
    })?;
    d.alive()?;
    Ok((l34(&flows).len(), packets))
}

/// `monitor-aggregation` as in Cilium: `medium` (3) and `maximum` (4)
/// behave the same (Cilium's datapath tests no level above 3): two records
/// per direction of each connection (its start, its FIN); `none` (0) one
/// record per packet on the interface. Cilium's level numbers are accepted.
#[test]
fn aggregation_levels() -> Result<()> {
    const C: usize = 3;
    for level in ["medium", "3", "maximum", "4", "max"] {
        let (records, _) = aggregation_records(level, C)?;
        assert_eq!(records, 4 * C, "monitor-aggregation={level}");
    }
    for level in ["none", "0"] {
        let (records, packets) = aggregation_records(level, C)?;
        assert_eq!(records as u64, packets, "monitor-aggregation={level}");
    }
    // Not a level: refused with the key, the value and what is expected.
    let out = std::process::Command::new(BIN)
        .args(["--set", "monitor-aggregation=5"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "level 5 accepted");
    ensure!(
        err.contains("monitor-aggregation") && err.contains("\"5\""),
        "{err}"
    );
    Ok(())
}

/// port-distribution counts a connection once: K HTTP exchanges (each its
/// own TCP connection) count K for TCP/8080, M DNS exchanges M for UDP/53,
/// and no client port is ever counted.
#[test]
fn port_distribution_counts_once_per_connection() -> Result<()> {
    const K: usize = 4;
    const M: u16 = 5;
    let pair = Pair::create("eeport")?;
    let mut d = daemon(
        &pair,
        "ee-port",
        &["--set", "hubble-metrics=port-distribution"],
    )?;
    quiet_up(&pair, true)?;
    let server = http_server(&pair, K, None)?;
    let dns = dns_server(&pair, usize::from(M))?;
    for i in 0..K {
        http_get(&pair.a, format!("/p{i}"))?;
    }
    dns_queries(&pair.a, M)?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))???;
    dns.join().map_err(|_| anyhow::anyhow!("dns panicked"))??;
    flows_when(&pair.a, "every L7 response", |f| {
        let r = |dns: bool| {
            f.iter()
                .filter(|f| l7_type(f) == Some(L7FlowType::Response) && is_dns(f) == dns)
                .count()
        };
        r(false) == K && r(true) == usize::from(M)
    })?;
    let ports = |s: &[metrics_support::Sample]| -> BTreeMap<(String, String), f64> {
        s.iter()
            .filter(|x| x.name == "hubble_port_distribution_total")
            .map(|x| {
                (
                    (
                        x.labels.get("protocol").cloned().unwrap_or_default(),
                        x.labels.get("port").cloned().unwrap_or_default(),
                    ),
                    x.value,
                )
            })
            .collect()
    };
    let s = wait_metrics(&pair.a, "the exchanges counted", WAIT, |s| {
        let p = ports(s);
        (p.get(&("TCP".into(), "8080".into()))
            .copied()
            .unwrap_or(0.0)
            >= K as f64
            && p.get(&("UDP".into(), "53".into())).copied().unwrap_or(0.0) >= f64::from(M))
        .then(|| s.to_vec())
    })?;
    assert_eq!(
        ports(&s),
        BTreeMap::from([
            (("TCP".to_string(), "8080".to_string()), K as f64),
            (("UDP".to_string(), "53".to_string()), f64::from(M)),
        ])
    );
    d.alive()
}

/// UDP replies are replies: the L3/L4 records of a DNS response (server →
/// client) have is_reply true and trace_reason REPLY, like the response's
/// L7 record; the query's have is_reply false and NEW.
#[test]
fn udp_replies_are_replies() -> Result<()> {
    const M: u16 = 3;
    let pair = Pair::create("eeudp")?;
    let mut d = daemon(
        &pair,
        "ee-udp",
        &["--set", "monitor-aggregation-interval=1h"],
    )?;
    quiet_up(&pair, true)?;
    let dns = dns_server(&pair, usize::from(M))?;
    dns_queries(&pair.a, M)?;
    dns.join().map_err(|_| anyhow::anyhow!("dns panicked"))??;
    let flows = flows_when(&pair.a, "every DNS response", |f| {
        f.iter()
            .filter(|f| l7_type(f) == Some(L7FlowType::Response))
            .count()
            == usize::from(M)
    })?;
    let udp: Vec<&Flow> = l34(&flows)
        .into_iter()
        .filter(|f| {
            matches!(
                f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                Some(Protocol::Udp(_))
            )
        })
        .collect();
    assert_eq!(udp.len(), 2 * usize::from(M), "{udp:#?}");
    for f in &udp {
        let (_, dport) = ports(f);
        let reply = dport != u32::from(DNS_PORT);
        assert_eq!(is_reply(f), Some(reply), "{f:#?}");
        let reason = if reply {
            TraceReason::Reply
        } else {
            TraceReason::New
        };
        assert_eq!(f.trace_reason, reason as i32, "{f:#?}");
    }
    for f in flows.iter().filter(|f| is_dns(f)) {
        let response = l7_type(f) == Some(L7FlowType::Response);
        assert_eq!(is_reply(f), Some(response));
    }
    d.alive()
}

const NODE_AND_POD: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 127.0.0.1}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: cart-7
  namespace: shop
  labels: {app: cart}
spec: {nodeName: elsewhere, containers: [{name: app, image: x}]}
status: {podIP: 10.200.0.2, podIPs: [{ip: 10.200.0.2}]}
"#;

fn node_filter(pattern: &str) -> GetFlowsRequest {
    GetFlowsRequest {
        number: 1000,
        whitelist: vec![FlowFilter {
            node_name: vec![pattern.to_string()],
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn count_flows(
    c: &mut flowd_proto::observer::observer_client::ObserverClient<tonic::transport::Channel>,
    req: GetFlowsRequest,
) -> Result<Vec<Flow>> {
    Ok(get_all(c, req)
        .await?
        .into_iter()
        .filter_map(|r| match r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(f),
            _ => None,
        })
        .collect())
}

/// `cluster-name: east` names the node `east/n1` in flows, GetNodes, the
/// peer service and therefore the relay; node-name filters select by it;
/// pods' endpoints carry the cluster, and the cluster-name filters
/// (Hubble's `--from-cluster` / `--to-cluster`) select by that.
#[test]
fn cluster_name_names_nodes_and_endpoints() -> Result<()> {
    let dir = TempDir::new("ee-cluster")?;
    std::fs::write(dir.0.join("objects.yaml"), NODE_AND_POD)?;
    let pair = Pair::create("eeclu")?;
    let mut d = daemon(
        &pair,
        "n1",
        &[
            "--set",
            "cluster-name=east",
            "--set",
            &format!("flowd-manifests-dir={}", dir.0.display()),
            "--set",
            "monitor-aggregation-interval=1h",
        ],
    )?;
    quiet_up(&pair, true)?;
    let _sink = pair.b.run(|| UdpSocket::bind(b_addr(9000)))??;
    udp_from_ports(&pair.a, vec![23_000, 23_001, 23_002], b_addr(9000))?;
    let flows = flows_when(&pair.a, "three flows to the pod", |f| {
        f.iter().filter(|f| ports(f).1 == 9000).count() == 3
    })?;
    for f in flows.iter().filter(|f| ports(f).1 == 9000) {
        assert_eq!(f.node_name, "east/n1");
        let dst = f.destination.as_ref().context("no destination")?;
        assert_eq!(
            (dst.cluster_name.as_str(), dst.pod_name.as_str()),
            ("east", "cart-7")
        );
        assert!(
            dst.labels
                .contains(&"k8s:io.cilium.k8s.policy.cluster=east".to_string()),
            "{:?}",
            dst.labels
        );
    }
    let n = flows.len();
    let (nodes, by_pattern) = block_on_in(&pair.a, move || async move {
        let mut c = client().await?;
        let nodes: Vec<String> = c
            .get_nodes(GetNodesRequest {})
            .await?
            .into_inner()
            .nodes
            .into_iter()
            .map(|n| n.name)
            .collect();
        let mut by = BTreeMap::new();
        for p in ["east/", "east/n1", "n1", "west/", "default/"] {
            by.insert(p, count_flows(&mut c, node_filter(p)).await?.len());
        }
        // Endpoints' clusters: the pod is in east, the other end is no pod.
        let cluster = |src: bool, name: &str| GetFlowsRequest {
            number: 1000,
            whitelist: vec![FlowFilter {
                source_cluster_name: if src { vec![name.into()] } else { vec![] },
                destination_cluster_name: if src { vec![] } else { vec![name.into()] },
                ..Default::default()
            }],
            ..Default::default()
        };
        for (key, src, name) in [
            ("to east", false, "east"),
            ("to west", false, "west"),
            ("from east", true, "east"),
        ] {
            by.insert(key, count_flows(&mut c, cluster(src, name)).await?.len());
        }
        Ok((nodes, by))
    })?;
    assert_eq!(nodes, ["east/n1"]);
    assert_eq!(
        by_pattern,
        BTreeMap::from([
            ("east/", n),
            ("east/n1", n),
            ("n1", n),
            ("west/", 0),
            ("default/", 0),
            ("to east", 3),
            ("to west", 0),
            ("from east", 0),
        ])
    );

    // The relay learns the node from flowd's peer service, by that name.
    let relay_bin = flowd_lab::cluster::bins::path("relay")?;
    let mut cmd = pair.a.command(relay_bin);
    cmd.args([
        "--listen-address",
        "127.0.0.1:4245",
        "--peer-service",
        "127.0.0.1:4244",
    ]);
    let _relay = ChildGuard::spawn("relay", &mut cmd)?;
    let relayed = block_on_in(&pair.a, || async {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let attempt = async {
                let mut c = flowd_proto::observer::observer_client::ObserverClient::connect(
                    "http://127.0.0.1:4245",
                )
                .await?;
                let nodes = c.get_nodes(GetNodesRequest {}).await?.into_inner().nodes;
                let connected: Vec<String> = nodes
                    .iter()
                    .filter(|n| n.state == flowd_proto::relay::NodeState::NodeConnected as i32)
                    .map(|n| n.name.clone())
                    .collect();
                if connected != ["east/n1"] {
                    bail!("relay nodes: {nodes:?}");
                }
                count_flows(&mut c, node_filter("east/n1")).await
            };
            match attempt.await {
                Ok(f) if !f.is_empty() => return Ok(f),
                Ok(_) | Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Ok(_) => bail!("the relay returned no flows of east/n1"),
                Err(e) => return Err(e),
            }
        }
    })?;
    assert!(relayed.iter().all(|f| f.node_name == "east/n1"));
    assert_eq!(
        relayed.iter().filter(|f| ports(f).1 == 9000).count(),
        3,
        "{relayed:#?}"
    );
    d.alive()
}

/// The cluster name is in the TLS names too, as Hubble's: certificates
/// from `flowd certgen --cluster-name east` serve a flowd with
/// `cluster-name: east`; its peer service announces the node as
/// `n1.east.hubble-grpc.cilium.io`, which the relay verifies (mTLS) and
/// connects; a relay expecting the `default` cluster's names is refused by
/// the certificate.
#[test]
fn cluster_name_sets_the_tls_names_the_relay_verifies() -> Result<()> {
    let dir = TempDir::new("ee-clutls")?;
    std::fs::write(dir.0.join("objects.yaml"), NODE_AND_POD)?;
    let certs = dir.0.join("certs");
    let out = std::process::Command::new(BIN)
        .args(["certgen", "--cluster-name", "east", "--output-dir"])
        .arg(&certs)
        .output()?;
    ensure!(
        out.status.success(),
        "certgen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = |secret: &str, key: &str| certs.join(secret).join(key).display().to_string();
    let pair = Pair::create("eeclt")?;
    let mut d = daemon(
        &pair,
        "n1",
        &[
            "--set",
            "cluster-name=east",
            "--set",
            &format!("flowd-manifests-dir={}", dir.0.display()),
            "--set",
            "hubble-disable-tls=false",
            "--set",
            &format!(
                "hubble-tls-cert-file={}",
                file("flowd-server-certs", "tls.crt")
            ),
            "--set",
            &format!(
                "hubble-tls-key-file={}",
                file("flowd-server-certs", "tls.key")
            ),
            "--set",
            &format!(
                "hubble-tls-client-ca-files={}",
                file("flowd-server-certs", "ca.crt")
            ),
        ],
    )?;
    let relay = |port: u16, server_name: &str, log: &str| -> Result<ChildGuard> {
        let mut cmd = pair.a.command(flowd_lab::cluster::bins::path("relay")?);
        cmd.args([
            "--listen-address",
            &format!("127.0.0.1:{port}"),
            "--peer-service",
            "127.0.0.1:4244",
            "--retry-initial",
            "100ms",
            "--tls-hubble-server-ca-files",
            &file("flowd-relay-client-certs", "ca.crt"),
            "--tls-hubble-client-cert-file",
            &file("flowd-relay-client-certs", "tls.crt"),
            "--tls-hubble-client-key-file",
            &file("flowd-relay-client-certs", "tls.key"),
            "--tls-hubble-server-name",
            server_name,
        ])
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(dir.0.join(log))?);
        ChildGuard::spawn("relay", &mut cmd)
    };
    let _east = relay(4245, "hubble-peer.east.hubble-grpc.cilium.io", "east.log")?;
    let observe = flowd_lab::cluster::bins::path("observe")?;
    let node = wait_until("the relay connected to east/n1 over mTLS", WAIT, || {
        let out = pair
            .a
            .command(&observe)
            .args(["--server", "127.0.0.1:4245", "list", "nodes", "-o", "json"])
            .output()?;
        let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        };
        Ok(v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["name"] == "east/n1" && n["state"] == "NODE_CONNECTED")
            .cloned())
    })
    .with_context(|| std::fs::read_to_string(dir.0.join("east.log")).unwrap_or_default())?;
    let tls = &node["tls"];
    let name = tls.get("server_name").or_else(|| tls.get("serverName"));
    assert_eq!(
        name.and_then(|v| v.as_str()),
        Some("n1.east.hubble-grpc.cilium.io"),
        "{node}"
    );

    // Expecting the default cluster's names: the certificate does not match.
    let _default = relay(
        4246,
        "hubble-peer.default.hubble-grpc.cilium.io",
        "default.log",
    )?;
    let line = wait_until("the default-named relay refused", WAIT, || {
        let log = std::fs::read_to_string(dir.0.join("default.log")).unwrap_or_default();
        Ok(log
            .lines()
            .find(|l| l.contains("peer service unavailable"))
            .map(str::to_string))
    })?;
    ensure!(
        line.contains("NotValidForName") || line.contains("not valid for name"),
        "{line}"
    );
    d.alive()
}
