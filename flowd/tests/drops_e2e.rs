//! End-to-end tests of kernel drop reporting: the real flowd daemon (Observer
//! API + metrics, endpoints from a manifest directory) runs in a "node"
//! namespace attached to its veth; the peer namespace is the pod (its IP is
//! in the manifest, so the drop program reports drops to/from it). Real drops
//! are provoked with known reasons, and the counts are checked against the
//! kernel's own counters (UdpNoPorts, the nft rule's counter, InHdrErrors for
//! TTL expiry, InCsumErrors for frames with a bad IP checksum sent with AF_PACKET):
//! flows (gRPC GetFlows, filtered like `observe --verdict DROPPED --type
//! drop`) and `hubble_drop_total` must both give exactly those numbers.
//! Needs root, like flowd itself.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use flowd_proto::flow::{DropReason, EventTypeFilter, Flow, FlowFilter, Verdict, layer4};
use flowd_proto::observer::{
    GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes,
    observer_client::ObserverClient,
};
use flowd_tests::{
    ChildGuard, Netns, Pair, add_addr, flowd::TempDir, link_up, wait_oper_up, wait_until,
};
use nix::sys::signal::Signal;

const BIN: &str = env!("CARGO_BIN_EXE_flowd");
const API: &str = "127.0.0.1:4245";
const METRICS: &str = "127.0.0.1:9965";

/// Node and pod namespaces joined by a veth, with addresses of their own:
/// the drop program sees every namespace of the machine, so tests running at
/// the same time (here or in other test binaries) must not share pod IPs.
struct Topo {
    p: Pair,
    node_ip: String,
    pod_ip: String,
}

impl Topo {
    fn create(tag: &str, idx: u32) -> Result<Self> {
        let p = Pair::create(tag)?;
        let net = 10 + (std::process::id() * 2 + idx) % 240;
        let (node_ip, pod_ip) = (format!("10.87.{net}.1"), format!("10.87.{net}.2"));
        add_addr(&p.a, &p.veth.a, &format!("{node_ip}/24"))?;
        add_addr(&p.b, &p.veth.b, &format!("{pod_ip}/24"))?;
        link_up(&p.a, &p.veth.a)?;
        link_up(&p.b, &p.veth.b)?;
        wait_oper_up(&p.a, &p.veth.a)?;
        wait_oper_up(&p.b, &p.veth.b)?;
        Ok(Self { p, node_ip, pod_ip })
    }

    fn pod_addr(&self, port: u16) -> String {
        format!("{}:{port}", self.pod_ip)
    }
}

/// The pod of the manifest: namespace `demo`, pod `server`, on node `n1`.
fn manifests(dir: &Path, pod_ip: &str) -> Result<()> {
    std::fs::write(
        dir.join("pod.yaml"),
        format!(
            "kind: Pod\nmetadata: {{name: server, namespace: demo, uid: u1, labels: {{app: server}}}}\n\
             spec: {{nodeName: n1, containers: [{{name: app, image: x}}]}}\n\
             status: {{podIP: {pod_ip}, podIPs: [{{ip: {pod_ip}}}]}}\n"
        ),
    )?;
    Ok(())
}

struct Daemon {
    child: ChildGuard,
    dir: TempDir,
}

/// The export file of a daemon started with `export`: its drop flows only.
const EXPORT_FILE: &str = "drops.log";

impl Daemon {
    /// flowd as the node daemon in `node`, watching `veth-a`, reporting drops
    /// of the manifest's pod with a 1 s aggregation interval; with `export`,
    /// exporting its drop flows to [`EXPORT_FILE`] in its directory.
    fn start(node: &Netns, pod_ip: &str, export: bool) -> Result<Self> {
        let dir = TempDir::new("drops")?;
        manifests(&dir.0, pod_ip)?;
        let mut cmd = node.command(BIN);
        cmd.env("RUST_LOG", "warn");
        for kv in [
            "flowd-interfaces=veth-a".to_string(),
            "flowd-node-name=n1".into(),
            format!("flowd-manifests-dir={}", dir.0.display()),
            format!("hubble-listen-address={API}"),
            "hubble-disable-tls=true".into(),
            format!("hubble-metrics-server={METRICS}"),
            "hubble-metrics=drop".into(),
            "monitor-aggregation-interval=1s".into(),
            "flowd-drops-enabled=true".into(),
        ] {
            cmd.args(["--set", &kv]);
        }
        if export {
            for kv in [
                format!(
                    "hubble-export-file-path={}",
                    dir.0.join(EXPORT_FILE).display()
                ),
                r#"hubble-export-allowlist={"verdict":["DROPPED"],"event_type":[{"type":1}]}"#
                    .into(),
            ] {
                cmd.args(["--set", &kv]);
            }
        }
        let child = ChildGuard::spawn("flowd", &mut cmd)?;
        let d = Self { child, dir };
        wait_until("flowd metrics server", Duration::from_secs(30), || {
            Ok(metrics(node).ok())
        })?;
        Ok(d)
    }

    /// The flows of the export file's lines.
    fn exported_flows(&self) -> Result<Vec<Flow>> {
        let path = self.dir.0.join(EXPORT_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut out = Vec::new();
        // Whole lines only: the sink may be writing.
        let whole = text.rfind('\n').map_or("", |i| &text[..=i]);
        for line in whole.lines() {
            let r: GetFlowsResponse =
                serde_json::from_str(line).with_context(|| format!("export line {line}"))?;
            if let Some(ResponseTypes::Flow(f)) = r.response_types {
                out.push(f);
            }
        }
        Ok(out)
    }

    fn cpu_ticks(&self) -> Result<u64> {
        let pid = self.child.pid().context("flowd gone")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name: utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').context("stat format")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Ok(f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
    }

    fn stop(mut self) -> Result<()> {
        let st = self.child.stop(Signal::SIGTERM, Duration::from_secs(20))?;
        ensure!(st.success(), "flowd exited with {st}");
        Ok(())
    }
}

/// `GET /metrics` inside `ns`: every sample as (name{labels}, value).
fn metrics(ns: &Netns) -> Result<BTreeMap<String, f64>> {
    let text = ns.run(|| -> Result<String> {
        let mut s = TcpStream::connect(METRICS)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })??;
    let body = text.split_once("\r\n\r\n").map_or("", |b| b.1);
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect())
}

fn drop_metric(m: &BTreeMap<String, f64>, reason: &str, proto: &str) -> u64 {
    m.get(&format!(
        "hubble_drop_total{{reason=\"{reason}\",protocol=\"{proto}\"}}"
    ))
    .copied()
    .unwrap_or(0.0) as u64
}

/// Every buffered DROPPED flow of type drop (what `observe --verdict DROPPED
/// --type drop` asks for), over gRPC inside `ns`.
fn dropped_flows(ns: &Netns) -> Result<Vec<Flow>> {
    ns.run(|| -> Result<Vec<Flow>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut c = ObserverClient::connect(format!("http://{API}")).await?;
            let req = GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    verdict: vec![Verdict::Dropped as i32],
                    event_type: vec![EventTypeFilter {
                        r#type: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            let mut stream = c.get_flows(req).await?.into_inner();
            let mut out = Vec::new();
            while let Some(r) = stream.message().await? {
                if let Some(ResponseTypes::Flow(f)) = r.response_types {
                    out.push(f);
                }
            }
            Ok(out)
        })
    })?
}

fn udp_ports(f: &Flow) -> Option<(u32, u32)> {
    match f.l4.as_ref()?.protocol.as_ref()? {
        layer4::Protocol::Udp(u) => Some((u.source_port, u.destination_port)),
        _ => None,
    }
}

/// Sum of drop counts of the flows with this kernel reason and UDP destination port.
fn drops_of(flows: &[Flow], reason: &str, dport: u32) -> (u64, usize) {
    let m: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.kernel_drop_reason == reason && udp_ports(f).map(|p| p.1) == Some(dport))
        .collect();
    (m.iter().map(|f| f.drop_count.max(1)).sum(), m.len())
}

/// A kernel counter of `nstat -az` inside `ns`.
fn nstat(ns: &Netns, name: &str) -> Result<u64> {
    let out = ns.command("nstat").args(["-az", name]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
        })
        .with_context(|| format!("nstat {name}: {text}"))
}

fn send_udp(ns: &Netns, dst: &str, n: usize, ttl: Option<u32>, sports: u16) -> Result<()> {
    let dst: SocketAddr = dst.parse()?;
    ns.run(move || -> Result<()> {
        let socks: Vec<UdpSocket> = (0..sports.max(1))
            .map(|_| UdpSocket::bind("0.0.0.0:0"))
            .collect::<Result<_, _>>()?;
        for s in &socks {
            if let Some(t) = ttl {
                s.set_ttl(t)?;
            }
        }
        for i in 0..n {
            socks[i % socks.len()].send_to(b"drop me", dst)?;
        }
        Ok(())
    })?
}

/// Waits until the drop program knows the pod's address: TCP connects to a
/// closed port of the pod (each dropped as NO_SOCKET/TCP) until one is
/// reported. UDP counts, asserted later, are not touched.
fn wait_pod_observed(node: &Netns, pod: SocketAddr) -> Result<()> {
    wait_until(
        "pod address in the drop program",
        Duration::from_secs(20),
        || {
            let _ = node
                .run(move || TcpStream::connect_timeout(&pod, Duration::from_millis(200)).ok())?;
            Ok((drop_metric(&metrics(node)?, "NO_SOCKET", "TCP") > 0).then_some(()))
        },
    )
}

/// MAC address of `dev` in `ns`.
fn mac(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
    let v: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", dev])?)?;
    let text = v[0]["address"].as_str().context("no MAC address")?;
    let mut m = [0u8; 6];
    for (i, b) in text.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(b, 16)?;
    }
    Ok(m)
}

/// Sends `n` Ethernet frames on `dev` of `ns` (AF_PACKET) carrying UDP to
/// `dst:port` whose IPv4 header checksum is wrong: the receiver drops them
/// (IP_CSUM) before any socket lookup.
fn send_bad_ip_checksum(
    ns: &Netns,
    dev: &str,
    dst_mac: [u8; 6],
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    port: u16,
    n: usize,
) -> Result<()> {
    let ifindex = ns.ifindex(dev)?;
    let src_mac = mac(ns, dev)?;
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let payload = b"bad checksum";
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let csum = !(((folded & 0xffff) + (folded >> 16)) as u16);
    // Off by one: a checksum the receiver must reject.
    ip[10..12].copy_from_slice(&csum.wrapping_add(1).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    f.extend_from_slice(payload);
    ns.run(move || -> Result<()> {
        // SAFETY: plain socket(2); the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        ensure!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = ifindex as i32;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&dst_mac);
        let mut res = Ok(());
        for _ in 0..n {
            // SAFETY: `f` and `sa` outlive the call; lengths are theirs.
            let r = unsafe {
                libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&sa as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if r < 0 {
                res = Err(anyhow::anyhow!(
                    "sendto: {}",
                    std::io::Error::last_os_error()
                ));
                break;
            }
        }
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        res
    })?
}

/// `n` TCP connections node → pod:7100, 64 bytes each way, then closed.
fn tcp_exchanges(node: &Netns, pod: &Netns, pod_ip: &str, n: usize) -> Result<()> {
    let listener = pod.run(|| std::net::TcpListener::bind("0.0.0.0:7100"))??;
    let server = std::thread::spawn(move || -> Result<()> {
        let mut buf = [0u8; 64];
        for _ in 0..n {
            let (mut c, _) = listener.accept()?;
            c.read_exact(&mut buf)?;
            c.write_all(&buf)?;
        }
        Ok(())
    });
    let addr: SocketAddr = format!("{pod_ip}:7100").parse()?;
    node.run(move || -> Result<()> {
        let mut buf = [0u8; 64];
        for _ in 0..n {
            let mut c = TcpStream::connect(addr)?;
            c.write_all(&[1u8; 64])?;
            c.read_exact(&mut buf)?;
        }
        Ok(())
    })??;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("TCP server panicked"))?
}

fn nft(ns: &Netns, script: &str) -> Result<()> {
    let mut child = ns
        .command("nft")
        .arg("-f")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running nft (install nftables)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    ensure!(child.wait()?.success(), "nft -f failed for:\n{script}");
    Ok(())
}

/// Packets counted by the first `counter` of the nft ruleset of `ns`.
fn nft_counter(ns: &Netns) -> Result<u64> {
    let out = ns.command("nft").args(["-j", "list", "ruleset"]).output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let items = v["nftables"].as_array().context("nft json")?;
    for it in items {
        if let Some(exprs) = it["rule"]["expr"].as_array() {
            for e in exprs {
                if let Some(p) = e["counter"]["packets"].as_u64() {
                    return Ok(p);
                }
            }
        }
    }
    bail!("no nft counter in {v}")
}

#[test]
fn kernel_drops_have_reasons_and_exact_counts() -> Result<()> {
    let started = Instant::now();
    let t = Topo::create("drp", 0)?;
    let (node, pod) = (&t.p.a, &t.p.b);
    // The pod drops UDP to port 7777 with a netfilter rule (counted by nft).
    nft(
        pod,
        "table inet flowdtest {\n chain input {\n  type filter hook input priority 0; policy accept;\n  udp dport 7777 counter drop\n }\n}\n",
    )?;
    // TTL expiry: the node routes 10.201.0.0/24 (a veth of its own) for the pod;
    // packets arriving with TTL 1 cannot be forwarded.
    node.sysctl("net.ipv4.ip_forward", "1")?;
    node.ip(&["link", "add", "rt0", "type", "veth", "peer", "name", "rt1"])?;
    add_addr(node, "rt0", "10.201.0.1/24")?;
    link_up(node, "rt0")?;
    link_up(node, "rt1")?;
    pod.ip(&["route", "add", "10.201.0.0/24", "via", &t.node_ip])?;

    let daemon = Daemon::start(node, &t.pod_ip, true)?;
    wait_pod_observed(node, t.pod_addr(9).parse()?)?;

    let no_ports0 = nstat(pod, "UdpNoPorts")?;
    let hdr_err0 = nstat(node, "IpInHdrErrors")?;
    let csum_err0 = nstat(pod, "IpExtInCsumErrors")?;
    const N_NOSOCK: usize = 57;
    const N_NFT: usize = 23;
    const N_TTL: usize = 11;
    const N_CSUM: usize = 13;
    send_udp(node, &t.pod_addr(9999), N_NOSOCK, None, 1)?;
    send_udp(node, &t.pod_addr(7777), N_NFT, None, 1)?;
    send_udp(pod, "10.201.0.5:5000", N_TTL, Some(1), 1)?;
    send_bad_ip_checksum(
        node,
        &t.p.veth.a,
        mac(pod, &t.p.veth.b)?,
        t.node_ip.parse()?,
        t.pod_ip.parse()?,
        6666,
        N_CSUM,
    )?;
    // Not drops: TCP exchanges with the pod, whose closes free the sockets'
    // queues (kfree_skb reason QUEUE_PURGE).
    tcp_exchanges(node, pod, &t.pod_ip, 5)?;

    // Independent oracles: the kernel's counters.
    let no_ports = nstat(pod, "UdpNoPorts")? - no_ports0;
    let hdr_err = nstat(node, "IpInHdrErrors")? - hdr_err0;
    let nft_drops = nft_counter(pod)?;
    let csum_err = nstat(pod, "IpExtInCsumErrors")? - csum_err0;
    assert_eq!(csum_err, N_CSUM as u64, "kernel IpExtInCsumErrors");
    assert_eq!(no_ports, N_NOSOCK as u64, "kernel UdpNoPorts");
    assert_eq!(nft_drops, N_NFT as u64, "nft counter");
    assert_eq!(hdr_err, N_TTL as u64, "kernel IpInHdrErrors");

    // Aggregated reports arrive within an interval (+ the sweep).
    let m = wait_until("drop metrics", Duration::from_secs(15), || {
        let m = metrics(node)?;
        let done = drop_metric(&m, "NO_SOCKET", "UDP") >= no_ports
            && drop_metric(&m, "POLICY_DENIED", "UDP") >= nft_drops
            && drop_metric(&m, "INVALID_PACKET_DROPPED", "UDP") >= hdr_err + csum_err;
        Ok(done.then_some(m))
    })?;
    // One more interval: nothing may be counted twice.
    std::thread::sleep(Duration::from_millis(2500));
    let m2 = metrics(node)?;
    for (reason, want) in [
        ("NO_SOCKET", no_ports),
        ("POLICY_DENIED", nft_drops),
        // TTL expiry (IP_INHDR) and bad checksums (IP_CSUM) share the Hubble reason.
        ("INVALID_PACKET_DROPPED", hdr_err + csum_err),
    ] {
        assert_eq!(drop_metric(&m, reason, "UDP"), want, "metric {reason}");
        assert_eq!(
            drop_metric(&m2, reason, "UDP"),
            want,
            "metric {reason} later"
        );
    }

    let flows = dropped_flows(node)?;
    assert!(
        flows.iter().all(|f| f.verdict == Verdict::Dropped as i32),
        "verdict filter"
    );
    let (n, reports) = drops_of(&flows, "NO_SOCKET", 9999);
    assert_eq!(n, no_ports, "NO_SOCKET drops in flows");
    assert!(reports <= 3, "{reports} flows for one aggregated flow");
    let (n, _) = drops_of(&flows, "NETFILTER_DROP", 7777);
    assert_eq!(n, nft_drops, "NETFILTER_DROP drops in flows");
    let (n, _) = drops_of(&flows, "IP_INHDR", 5000);
    assert_eq!(n, hdr_err, "IP_INHDR (TTL expired) drops in flows");
    let (n, _) = drops_of(&flows, "IP_CSUM", 6666);
    assert_eq!(n, csum_err, "IP_CSUM drops in flows");

    // Reasons, endpoints, interface and direction of one flow of each.
    let f = flows
        .iter()
        .find(|f| f.kernel_drop_reason == "NO_SOCKET" && udp_ports(f).map(|p| p.1) == Some(9999))
        .context("NO_SOCKET flow")?;
    assert_eq!(f.drop_reason_desc, DropReason::Unknown as i32);
    assert!(f.kernel_drop_reason_code > 2);
    assert_eq!(
        f.ip.as_ref().map(|i| i.destination.as_str()),
        Some(t.pod_ip.as_str())
    );
    let dst = f.destination.as_ref().context("destination endpoint")?;
    assert_eq!(
        (dst.namespace.as_str(), dst.pod_name.as_str()),
        ("demo", "server")
    );
    assert_eq!(
        f.interface.as_ref().map(|i| i.name.as_str()),
        Some("veth-b")
    );
    assert_eq!(f.traffic_direction, 1, "INGRESS");
    assert_eq!(f.event_type.as_ref().map(|e| e.r#type), Some(1));
    let f = flows
        .iter()
        .find(|f| f.kernel_drop_reason == "NETFILTER_DROP")
        .context("NETFILTER_DROP flow")?;
    assert_eq!(f.drop_reason_desc, DropReason::PolicyDenied as i32);
    let f = flows
        .iter()
        .find(|f| f.kernel_drop_reason == "IP_INHDR")
        .context("IP_INHDR flow")?;
    assert_eq!(f.drop_reason_desc, DropReason::InvalidPacketDropped as i32);
    assert_eq!(
        f.ip.as_ref().map(|i| i.source.as_str()),
        Some(t.pod_ip.as_str())
    );
    assert_eq!(
        f.interface.as_ref().map(|i| i.name.as_str()),
        Some("veth-a")
    );
    assert_eq!(f.traffic_direction, 2, "EGRESS");
    // Frees that are not drops (plain kfree_skb, sockets' queues purged on
    // close) give no DROPPED flow.
    ensure!(
        !flows.iter().any(|f| f.kernel_drop_reason.is_empty()
            || f.kernel_drop_reason == "NOT_SPECIFIED"
            || f.kernel_drop_reason == "QUEUE_PURGE"),
        "non-drops reported"
    );
    // Drop flows are exported like any other: the file (allowlist: drops)
    // holds exactly the flows GetFlows returned, in the same order.
    let exported = wait_until("drop flows exported", Duration::from_secs(15), || {
        let got = daemon.exported_flows()?;
        Ok((got.len() >= flows.len()).then_some(got))
    })?;
    assert_eq!(exported, flows, "exported drop flows");

    daemon.stop()?;
    eprintln!(
        "kernel_drops_have_reasons_and_exact_counts: {:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn drop_flood_costs_bounded_events() -> Result<()> {
    let started = Instant::now();
    let t = Topo::create("drf", 1)?;
    let (node, pod) = (&t.p.a, &t.p.b);
    let daemon = Daemon::start(node, &t.pod_ip, false)?;
    wait_pod_observed(node, t.pod_addr(9).parse()?)?;

    let m0 = metrics(node)?;
    let events0 = m0
        .get("flowd_datapath_events_total")
        .copied()
        .unwrap_or(0.0) as u64;
    let runs0 = m0
        .get("flowd_datapath_program_runs_total")
        .copied()
        .unwrap_or(0.0) as u64;
    let no_ports0 = nstat(pod, "UdpNoPorts")?;
    let cpu0 = daemon.cpu_ticks()?;
    // 16 flows (source ports), as fast as one sender thread goes.
    const N: usize = 120_000;
    const FLOWS: u16 = 16;
    let t0 = Instant::now();
    send_udp(node, &t.pod_addr(9999), N, None, FLOWS)?;
    let send_time = t0.elapsed();
    let dropped = nstat(pod, "UdpNoPorts")? - no_ports0;

    let m = wait_until("flood counted", Duration::from_secs(15), || {
        let m = metrics(node)?;
        let lost = m
            .get("flowd_datapath_events_lost_total")
            .copied()
            .unwrap_or(0.0) as u64;
        Ok((drop_metric(&m, "NO_SOCKET", "UDP") + lost >= dropped).then_some(m))
    })?;
    let cpu = daemon.cpu_ticks()? - cpu0;
    let counted = drop_metric(&m, "NO_SOCKET", "UDP");
    let lost = m
        .get("flowd_datapath_events_lost_total")
        .copied()
        .unwrap_or(0.0) as u64;
    let events = m.get("flowd_datapath_events_total").copied().unwrap_or(0.0) as u64 - events0;
    let flows = dropped_flows(node)?;
    let (in_flows, reports) = drops_of(&flows, "NO_SOCKET", 9999);
    let rate = dropped as f64 / send_time.as_secs_f64();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    eprintln!(
        "drop flood: {dropped} drops in {send_time:?} ({rate:.0}/s), {reports} drop flows, \
         {events} datapath events, {lost} lost, flowd CPU {:.2} s",
        cpu as f64 / hz
    );
    assert_eq!(dropped, N as u64, "kernel UdpNoPorts");
    assert!(
        rate > 10_000.0,
        "flood too slow to mean anything: {rate:.0}/s"
    );
    // Every drop counted (sweep reports the tails; nothing is lost at this size).
    assert_eq!(lost, 0, "events lost");
    assert_eq!(counted, dropped, "hubble_drop_total");
    assert_eq!(in_flows, dropped, "drops in flows");
    // Bounded: per flow the first drop and at most one report per interval,
    // whatever the packet count (TC flow events of the same packets included).
    let intervals = send_time.as_secs() + 3;
    let bound = u64::from(FLOWS) * (intervals + 2);
    assert!(reports as u64 <= bound, "{reports} drop flows > {bound}");
    assert!(events <= 2 * bound + 16, "{events} datapath events");
    // Every datagram ran the TC program on its way to the pod; the flow
    // cache settled nearly all of them.
    let m = wait_until("program runs counted", Duration::from_secs(15), || {
        let m = metrics(node)?;
        let runs = m
            .get("flowd_datapath_program_runs_total")
            .copied()
            .unwrap_or(0.0) as u64;
        Ok((runs.saturating_sub(runs0) >= N as u64).then_some(m))
    })?;
    let full = m
        .get("flowd_datapath_full_path_runs_total")
        .copied()
        .context("no flowd_datapath_full_path_runs_total")? as u64;
    assert!(full > 0, "the new flows took the full path");
    let events = m.get("flowd_datapath_events_total").copied().unwrap_or(0.0) as u64 - events0;
    assert!(
        events >= u64::from(FLOWS),
        "{events} datapath events for {FLOWS} new flows"
    );
    daemon.stop()?;
    eprintln!("drop_flood_costs_bounded_events: {:?}", started.elapsed());
    Ok(())
}
