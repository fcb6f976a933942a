//! The flowd daemon (`flowd --set …`, this package's binary) in a network
//! namespace, as an operator runs it: its Observer API and /metrics on the
//! namespace's loopback, read the way clients read them (gRPC, HTTP).
//!
//! Shared by daemon_metrics, daemon_edge_cases and export_disk_full (the
//! metrics endpoint, gRPC from inside the namespace, traffic helpers);
//! `daemon_support` is the `--config` / `observe` harness of cli_flags and
//! shutdown. Everything is removed on drop, also on failure.
#![allow(dead_code)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use flowd_proto::flow::Flow;
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::{GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes};
use flowd_tests::flowd::TempDir;
use flowd_tests::{ChildGuard, Netns, Pair, wait_until};
use tonic::transport::Channel;

use crate::metrics_support::{Sample, parse};

pub const BIN: &str = env!("CARGO_BIN_EXE_flowd");
/// Observer API and metrics inside the daemon's namespace.
pub const API: &str = "http://127.0.0.1:4244";
pub const METRICS: &str = "127.0.0.1:9965";

/// Runs the future made by `f` on a current-thread runtime, on a thread that
/// has entered `ns`: every socket it opens belongs to `ns`.
pub fn block_on_in<F, Fut, R>(ns: &Netns, f: F) -> Result<R>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<R>>,
    R: Send + 'static,
{
    ns.run(move || -> Result<R> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(f())
    })?
}

/// TCX programs attached to `ifname` in `ns` (ingress, egress).
pub fn tcx_programs(ns: &Netns, ifname: &str) -> Result<(usize, usize)> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let ifname = ifname.to_string();
    ns.run(move || -> Result<(usize, usize)> {
        let n = |t| -> Result<usize> { Ok(SchedClassifier::query_tcx(&ifname, t)?.1.len()) };
        Ok((n(TcAttachType::Ingress)?, n(TcAttachType::Egress)?))
    })?
}

/// The flowd daemon in a namespace; stderr (its log) goes to a file.
pub struct Daemon {
    pub child: ChildGuard,
    pub ns_name: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Daemon {
    /// Starts `flowd` in `ns` with the API and metrics on loopback, node
    /// name `node`, then `args` (more `--set`s, `-i …`). Returns once the
    /// metrics endpoint answers.
    pub fn start(ns: &Netns, node: &str, args: &[&str]) -> Result<Self> {
        Self::start_wrapped(ns, &[], node, args)
    }

    /// [`Daemon::start`] through `wrapper` (a command that ends by exec'ing
    /// its arguments, e.g. `unshare --mount … sh -c '…; exec "$@"' sh`), so
    /// the daemon's pid stays the child's.
    pub fn start_wrapped(ns: &Netns, wrapper: &[&str], node: &str, args: &[&str]) -> Result<Self> {
        let dir = TempDir::new("daemon")?;
        let log = dir.0.join("flowd.log");
        let stderr = std::fs::File::create(&log)?;
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = ns.command(first);
                c.args(rest).arg(BIN);
                c
            }
            None => ns.command(BIN),
        };
        // Plain log lines (no colour codes) to read back.
        cmd.env("NO_COLOR", "1");
        cmd.args([
            "--set",
            "hubble-listen-address=127.0.0.1:4244",
            "--set",
            &format!("hubble-metrics-server={METRICS}"),
            "--set",
            &format!("flowd-node-name={node}"),
        ])
        .args(args)
        .stderr(Stdio::from(stderr));
        let child = ChildGuard::spawn("flowd daemon", &mut cmd)?;
        let mut d = Self {
            child,
            ns_name: ns.name().to_string(),
            log,
            _dir: dir,
        };
        wait_until("flowd's /metrics", Duration::from_secs(30), || {
            d.alive()?;
            Ok(scrape(ns).ok())
        })?;
        Ok(d)
    }

    /// Fails if the daemon has exited.
    pub fn alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(st) => bail!("flowd exited: {st}; log:\n{}", self.log_text()),
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

/// `GET /metrics` on the daemon in `ns`, parsed.
pub fn scrape(ns: &Netns) -> Result<Vec<Sample>> {
    let text = ns.run(|| -> Result<String> {
        let mut s = std::net::TcpStream::connect(METRICS)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: flowd\r\n\r\n")?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, body) = raw.split_once("\r\n\r\n").context("no HTTP head")?;
        ensure!(
            head.starts_with("HTTP/1.") && head.contains(" 200 "),
            "{head}"
        );
        Ok(body.to_string())
    })??;
    Ok(parse(&text))
}

/// The value of one sample, or 0 when absent.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    crate::metrics_support::get(samples, name, labels).unwrap_or(0.0)
}

/// Scrapes until `f` returns Some (bounded).
pub fn wait_metrics<T>(
    ns: &Netns,
    what: &str,
    timeout: Duration,
    mut f: impl FnMut(&[Sample]) -> Option<T>,
) -> Result<T> {
    let mut last = Vec::new();
    let r = wait_until(what, timeout, || {
        last = scrape(ns)?;
        Ok(f(&last))
    });
    r.with_context(|| {
        let own: Vec<String> = last
            .iter()
            .filter(|s| s.name.starts_with("flowd_") || s.name.starts_with("hubble_"))
            .map(|s| format!("{} {:?} {}", s.name, s.labels, s.value))
            .collect();
        format!("last scrape:\n{}", own.join("\n"))
    })
}

/// A GetFlows client on the daemon of `ns` (connects with retries).
pub async fn client() -> Result<ObserverClient<Channel>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ObserverClient::connect(API).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => bail!("Observer API at {API}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Every response of a non-follow GetFlows request.
pub async fn get_all(
    c: &mut ObserverClient<Channel>,
    req: GetFlowsRequest,
) -> Result<Vec<GetFlowsResponse>> {
    let mut s = c.get_flows(req).await?.into_inner();
    let mut v = Vec::new();
    while let Some(r) = s.message().await? {
        v.push(r);
    }
    Ok(v)
}

/// The flows the daemon of `ns` has buffered (GetFlows, all of them).
pub fn flows(ns: &Netns) -> Result<Vec<Flow>> {
    block_on_in(ns, || async {
        let mut c = client().await?;
        let all = get_all(
            &mut c,
            GetFlowsRequest {
                number: 65_535,
                ..Default::default()
            },
        )
        .await?;
        Ok(all
            .into_iter()
            .filter_map(|r| match r.response_types {
                Some(ResponseTypes::Flow(f)) => Some(f),
                _ => None,
            })
            .collect())
    })
}

/// Waits until the buffered flows satisfy `done`; returns them.
pub fn flows_when(ns: &Netns, what: &str, done: impl Fn(&[Flow]) -> bool) -> Result<Vec<Flow>> {
    let mut last = Vec::new();
    let r = wait_until(what, Duration::from_secs(20), || {
        last = flows(ns)?;
        Ok(done(&last).then(|| last.clone()))
    });
    r.with_context(|| format!("{} flows buffered: {last:#?}", last.len()))
}

/// Sets a sysctl in every namespace of `nss`.
pub fn sysctl_all(nss: &[&Netns], key: &str, value: &str) -> Result<()> {
    for ns in nss {
        ns.sysctl(key, value)?;
    }
    Ok(())
}

/// MAC address of `dev` in `ns`.
pub fn mac(ns: &Netns, dev: &str) -> Result<String> {
    let out = ns.ip(&["-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["address"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no MAC for {dev}: {out}"))
}

/// Brings the pair up with IPv4 only, no IPv6 (no router/neighbour
/// solicitations, no MLD) and, with `static_neigh`, permanent neighbour
/// entries (no ARP): the only packets on the link are the test's.
pub fn quiet_up(pair: &Pair, static_neigh: bool) -> Result<()> {
    for (ns, dev) in [(&pair.a, &pair.veth.a), (&pair.b, &pair.veth.b)] {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        ns.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "1")?;
    }
    flowd_tests::add_addr(&pair.a, &pair.veth.a, &format!("{}/24", Pair::A4))?;
    flowd_tests::add_addr(&pair.b, &pair.veth.b, &format!("{}/24", Pair::B4))?;
    if static_neigh {
        let (ma, mb) = (mac(&pair.a, &pair.veth.a)?, mac(&pair.b, &pair.veth.b)?);
        pair.a.ip(&[
            "neigh",
            "replace",
            Pair::B4,
            "lladdr",
            &mb,
            "dev",
            &pair.veth.a,
            "nud",
            "permanent",
        ])?;
        pair.b.ip(&[
            "neigh",
            "replace",
            Pair::A4,
            "lladdr",
            &ma,
            "dev",
            &pair.veth.b,
            "nud",
            "permanent",
        ])?;
    }
    flowd_tests::link_up(&pair.a, &pair.veth.a)?;
    flowd_tests::link_up(&pair.b, &pair.veth.b)?;
    flowd_tests::wait_oper_up(&pair.a, &pair.veth.a)?;
    flowd_tests::wait_oper_up(&pair.b, &pair.veth.b)
}

/// Sends one UDP datagram from each of `sports` (in `ns`, to `dst`).
pub fn udp_from_ports(ns: &Netns, sports: Vec<u16>, dst: std::net::SocketAddr) -> Result<()> {
    ns.run(move || -> Result<()> {
        for p in sports {
            let s = std::net::UdpSocket::bind(("0.0.0.0", p))?;
            s.send_to(b"flowd-test", dst)?;
        }
        Ok(())
    })?
}

/// L3/L4 source and destination ports of a flow (0, 0 when it has none).
pub fn ports(f: &Flow) -> (u32, u32) {
    use flowd_proto::flow::layer4::Protocol;
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => (t.source_port, t.destination_port),
        Some(Protocol::Udp(u)) => (u.source_port, u.destination_port),
        _ => (0, 0),
    }
}

// ---------------------------------------------------------------- traffic --

pub const HTTP_PORT: u16 = 8080;
pub const DNS_PORT: u16 = 53;

/// An address of namespace `b` of a [`Pair`].
pub fn b_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 200, 0, 2], port))
}

/// Tells the test a request arrived, then waits for its go.
pub type Gate = (std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>);

/// An HTTP/1.1 server in `b` on HTTP_PORT answering `connections`
/// connections (one request each, `200 OK`, then close). With a gate, each
/// response waits for the test's go.
pub fn http_server(
    pair: &Pair,
    connections: usize,
    gate: Option<Gate>,
) -> Result<std::thread::JoinHandle<Result<Result<()>>>> {
    let l = pair
        .b
        .run(|| TcpListener::bind(b_addr(HTTP_PORT)))?
        .context("binding the HTTP server")?;
    Ok(std::thread::spawn(move || -> Result<Result<()>> {
        Ok((|| -> Result<()> {
            for _ in 0..connections {
                let (mut s, _) = l.accept()?;
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf)?;
                    ensure!(n > 0, "client closed before its request ended");
                    head.extend_from_slice(&buf[..n]);
                }
                if let Some((got, go)) = &gate {
                    got.send(())?;
                    go.recv()?;
                }
                s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                )?;
            }
            Ok(())
        })())
    }))
}

/// One HTTP exchange from `a` on a new connection: `GET path`, read to EOF.
pub fn http_get(ns: &Netns, path: String) -> Result<String> {
    ns.run(move || -> Result<String> {
        let mut s = TcpStream::connect(b_addr(HTTP_PORT))?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes(),
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?
}

/// The address every DNS response of [`dns_message`] answers.
pub const DNS_ANSWER: [u8; 4] = [10, 1, 2, 3];

/// A DNS query for `x.example.` type A with id `id`, or its NOERROR
/// response with one A record ([`DNS_ANSWER`], TTL 30) (RFC 1035 wire format).
pub fn dns_message(id: u16, response: bool) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(if response {
        &[0x81, 0x80]
    } else {
        &[0x01, 0x00]
    });
    // 1 question, 1 answer in responses, no other records.
    m.extend_from_slice(&[0, 1, 0, u8::from(response), 0, 0, 0, 0]);
    m.extend_from_slice(b"\x01x\x07example\x00");
    m.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    if response {
        // Name: pointer to the question's; A, IN, TTL 30, 4 bytes.
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        m.extend_from_slice(&DNS_ANSWER);
    }
    m
}

/// A DNS responder in `b` answering `n` queries (NOERROR, no answers).
pub fn dns_server(pair: &Pair, n: usize) -> Result<std::thread::JoinHandle<Result<()>>> {
    let s = pair
        .b
        .run(|| UdpSocket::bind(b_addr(DNS_PORT)))?
        .context("binding the DNS responder")?;
    Ok(std::thread::spawn(move || -> Result<()> {
        let mut buf = [0u8; 512];
        for _ in 0..n {
            let (len, from) = s.recv_from(&mut buf)?;
            ensure!(len >= 2);
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            s.send_to(&dns_message(id, true), from)?;
        }
        Ok(())
    }))
}

/// `n` DNS exchanges from `a`, each from its own socket (port).
pub fn dns_queries(ns: &Netns, n: u16) -> Result<()> {
    ns.run(move || -> Result<()> {
        for i in 0..n {
            let s = UdpSocket::bind(("10.200.0.1", 0))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.send_to(&dns_message(100 + i, false), b_addr(DNS_PORT))?;
            let mut buf = [0u8; 512];
            let (len, _) = s.recv_from(&mut buf)?;
            ensure!(len > 12 && buf[2] & 0x80 != 0, "no DNS response");
        }
        Ok(())
    })?
}

/// [`http_get`] on the calling thread (already in the client namespace).
pub fn http_get_blocking(path: &'static str) -> Result<String> {
    let mut s = TcpStream::connect(b_addr(HTTP_PORT))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
