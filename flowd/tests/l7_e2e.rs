//! L7 end to end: the flowd daemon (this package's binary) observes real HTTP
//! and DNS servers and clients in two network namespaces, and the test reads
//! the L7 flows back through the daemon's Observer API (gRPC), as users do.
//!
//! Topology: namespace `a` (client, flowd on veth-a, API on 127.0.0.1:4244)
//! ↔ namespace `b` (servers). Every request leaves through veth-a's egress
//! hook and every response enters through its ingress hook, so each message
//! is seen exactly once.
//!
//! Oracles are the clients: what they sent (method, path, query), what the
//! servers answered as the clients parsed it (status, rcode, addresses) and
//! the time each client measured from writing a request to reading its
//! answer, which bounds the latency the kernel timestamps give.
//!
//! "All flows are in" is an event, not a delay: after each workload a marker
//! exchange is made, and the ring buffer, the single pipeline task and the
//! flow buffer all keep order, so once the marker's response flow is visible
//! every earlier message's flow is too. Needs root, like flowd.
use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use flowd_proto::flow::{Flow, L7FlowType, layer4::Protocol};
use flowd_tests::{ChildGuard, Netns, wait_until};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    client::conn::http1::SendRequest,
    header::HOST,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    sync::oneshot,
};

mod l7_support;
use l7_support::*;

// ------------------------------------------------------------------- HTTP --

/// A hyper HTTP/1.1 server on `addr` in `ns`: the path `/<case>/<status>/<n>`
/// is answered with that status (keep-alive and pipelining as hyper does
/// them). Stopped on drop.
struct HttpServer {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

async fn respond(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let code = req
        .uri()
        .path()
        .split('/')
        .nth(2)
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    // Read the body so the connection stays usable for the next request.
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from(format!("status {code}\n"))));
    *resp.status_mut() = code;
    Ok(resp)
}

impl HttpServer {
    fn start(ns: &Netns, addr: SocketAddr) -> Result<Self> {
        let listener = ns.run(move || std::net::TcpListener::bind(addr))??;
        listener.set_nonblocking(true)?;
        let (tx, mut rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener)?;
                loop {
                    tokio::select! {
                        _ = &mut rx => return Ok(()),
                        a = l.accept() => {
                            let (s, _) = a?;
                            // One segment per response, as a latency-minded server sends them.
                            s.set_nodelay(true)?;
                            tokio::spawn(async move {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(s), service_fn(respond))
                                    .await;
                            });
                        }
                    }
                }
            })
        });
        Ok(Self {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a client sent and got back.
#[derive(Debug, Clone)]
struct Sent {
    method: Method,
    path: String,
    status: u16,
    /// From just before writing the request to reading the response head.
    elapsed_ns: u64,
}

/// The request mix: methods and the status the server is asked to answer.
const MIX: [(&str, u16); 8] = [
    ("GET", 200),
    ("POST", 201),
    ("GET", 404),
    ("DELETE", 503),
    ("PUT", 200),
    ("GET", 204),
    ("POST", 500),
    ("GET", 301),
];

fn server_addr() -> SocketAddr {
    SocketAddr::new(SERVER.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), 80)
}

fn request(method: &str, path: &str) -> Result<Request<Full<Bytes>>> {
    let body = if method == "POST" || method == "PUT" {
        Bytes::from_static(b"{\"item\":42}")
    } else {
        Bytes::new()
    };
    Ok(Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, SERVER)
        .body(Full::new(body))?)
}

async fn http_connect() -> Result<SendRequest<Full<Bytes>>> {
    let s = TcpStream::connect(server_addr()).await?;
    s.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn send(sender: &mut SendRequest<Full<Bytes>>, method: &str, path: &str) -> Result<Sent> {
    let req = request(method, path)?;
    let t = Instant::now();
    let resp = sender.send_request(req).await?;
    let elapsed_ns = u64::try_from(t.elapsed().as_nanos())?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(Sent {
        method: method.parse()?,
        path: path.to_owned(),
        status,
        elapsed_ns,
    })
}

/// Serialises a request head and body as HTTP/1.1 puts them on the wire.
fn wire(req: &Request<Full<Bytes>>, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{} {} {:?}\r\n", req.method(), req.uri(), req.version()).into_bytes();
    for (k, v) in req.headers() {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// Pipelining: every request written (one write each, TCP_NODELAY) before
/// any response is read; responses are then read in order.
async fn pipelined(reqs: Vec<(&'static str, String)>) -> Result<Vec<Sent>> {
    let mut s = TcpStream::connect(server_addr()).await?;
    s.set_nodelay(true)?;
    let mut starts = Vec::new();
    for (m, path) in &reqs {
        let req = request(m, path)?;
        let body = req.body().clone().collect().await?.to_bytes();
        let bytes = wire(&req, &body);
        starts.push(Instant::now());
        s.write_all(&bytes).await?;
    }
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < reqs.len() {
        // Take every complete response at the front of the buffer.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head) = r.parse(&buf)? else {
                break;
            };
            let len: usize = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap_or("x").trim().parse())
                .transpose()?
                .unwrap_or(0);
            if buf.len() < head + len {
                break;
            }
            let i = out.len();
            ensure!(i < reqs.len(), "more responses than requests");
            let (m, path) = &reqs[i];
            out.push(Sent {
                method: m.parse()?,
                path: path.clone(),
                status: r.code.context("no status")?,
                elapsed_ns: u64::try_from(starts[i].elapsed().as_nanos())?,
            });
            buf.drain(..head + len);
        }
        if out.len() == reqs.len() {
            break;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(&mut buf))
            .await
            .context("pipelined responses")??;
        ensure!(n > 0, "server closed after {} responses", out.len());
    }
    Ok(out)
}

fn paths(case: &str) -> Vec<(&'static str, String)> {
    MIX.iter()
        .enumerate()
        .map(|(i, (m, code))| (*m, format!("/{case}/{code}/{i}?user=alice")))
        .collect()
}

/// Exactly one request and one response flow per exchange of `sent`, and no
/// other flow under `/<case>/`.
fn check_http(flows: &[Flow], case: &str, sent: &[Sent]) -> Result<()> {
    let prefix = format!("/{case}/");
    let mine: Vec<&Flow> = flows
        .iter()
        .filter(|f| http_of(f).is_some_and(|h| path_of(&h.url).starts_with(&prefix)))
        .collect();
    ensure!(
        mine.len() == 2 * sent.len(),
        "{case}: {} L7 flows for {} exchanges: {mine:#?}",
        mine.len(),
        sent.len()
    );
    for s in sent {
        // The query string is redacted by default (Hubble's urlquery option).
        let path = s.path.split('?').next().unwrap_or_default();
        let of = |t: L7FlowType| -> Vec<&Flow> {
            mine.iter()
                .copied()
                .filter(|f| {
                    l7_type(f) == Some(t) && http_of(f).is_some_and(|h| path_of(&h.url) == path)
                })
                .collect()
        };
        let (req, resp) = (of(L7FlowType::Request), of(L7FlowType::Response));
        ensure!(
            req.len() == 1 && resp.len() == 1,
            "{case} {path}: {} request and {} response flows",
            req.len(),
            resp.len()
        );
        let (q, r) = (req[0], resp[0]);
        let (qh, rh) = (
            http_of(q).context("request")?,
            http_of(r).context("response")?,
        );
        assert_eq!(qh.method, s.method.as_str(), "{case} {path}");
        assert_eq!(qh.url, format!("http://{SERVER}{path}"), "{case}");
        assert_eq!(qh.protocol, "HTTP/1.1");
        assert_eq!(qh.code, 0);
        assert_eq!(rh.code, u32::from(s.status), "{case} {path}");
        assert_eq!(rh.method, s.method.as_str(), "{case} {path}");
        assert_eq!(rh.url, qh.url);
        let (qs, qd, qsp, qdp) = endpoints(q);
        assert_eq!((qs.as_str(), qd.as_str(), qdp), (CLIENT, SERVER, 80));
        assert_eq!(endpoints(r), (qd, qs, 80, qsp), "{case} {path}");
        assert!(!r.l7.as_ref().is_some_and(|l| l.unpaired));
        assert_eq!(exchange(r), exchange(q), "{case} {path}");
        let lat = latency(r);
        assert!(
            lat > 0 && lat <= s.elapsed_ns,
            "{case} {path}: latency {lat} ns, client measured {} ns",
            s.elapsed_ns
        );
    }
    Ok(())
}

#[test]
fn http_close_keepalive_and_pipelined_exact_flows() -> Result<()> {
    let mut lab = Lab::start("l7h", &[])?;
    let _server = HttpServer::start(&lab.pair.b, server_addr())?;
    let sent = block_on_in(&lab.pair.a, || async {
        // One connection per request.
        let mut close = Vec::new();
        for (m, p) in paths("close") {
            let mut c = http_connect().await?;
            close.push(send(&mut c, m, &p).await?);
        }
        // Keep-alive: every request on one connection, one after the other.
        let mut keep = Vec::new();
        let mut c = http_connect().await?;
        for (m, p) in paths("keep") {
            keep.push(send(&mut c, m, &p).await?);
        }
        drop(c);
        let pipe = pipelined(paths("pipe")).await?;
        // The marker: once its response flow is in, so is every flow above.
        let mut c = http_connect().await?;
        send(&mut c, "GET", "/marker/200/0").await?;
        anyhow::Ok([close, keep, pipe])
    })?;
    // The server answered what was asked (the oracle for the status codes).
    for s in sent.iter().flatten() {
        assert_eq!(
            s.path.split('/').nth(2),
            Some(s.status.to_string().as_str())
        );
    }
    let flows = lab.l7_flows_when("the marker's response flow", |f| {
        f.iter().any(|f| {
            l7_type(f) == Some(L7FlowType::Response)
                && http_of(f).is_some_and(|h| h.url.ends_with("/marker/200/0"))
        })
    })?;
    for (case, s) in ["close", "keep", "pipe"].iter().zip(&sent) {
        check_http(&flows, case, s)?;
    }
    // Nothing else: 3 × K exchanges plus the marker, two flows each.
    assert_eq!(flows.len(), 2 * (3 * MIX.len() + 1), "{flows:#?}");
    lab.alive()
}

// -------------------------------------------------------------------- DNS --

/// dnsmasq on `SERVER`:`port` (UDP and TCP) in `ns`, authoritative for `test.`.
fn start_dnsmasq(ns: &Netns, port: u16) -> Result<ChildGuard> {
    let mut cmd = ns.command("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--user=root",
        "--pid-file",
        "--log-facility=-",
        "--bind-interfaces",
        &format!("--listen-address={SERVER}"),
        &format!("--port={port}"),
        "--local=/test/",
        "--local-ttl=300",
        "--host-record=web.test,10.1.2.3,fd00::3",
        "--host-record=v4only.test,10.1.2.4",
        "--address=/multi.test/10.1.2.5",
        "--address=/multi.test/10.1.2.6",
    ]);
    let mut child = ChildGuard::spawn("dnsmasq", &mut cmd)?;
    // Ready when its TCP socket (bound with the UDP one) listens.
    let hex_port = format!(":{port:04X}");
    wait_until("dnsmasq listening", Duration::from_secs(10), || {
        if let Some(st) = child.try_wait()? {
            bail!("dnsmasq exited: {st}");
        }
        let out = ns.command("cat").arg("/proc/net/tcp").output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&hex_port) && f[3] == "0A"
            })
            .then_some(()))
    })?;
    Ok(child)
}

#[derive(Debug, Clone)]
struct DnsCase {
    name: &'static str,
    qtype: RecordType,
    tcp: bool,
    rcode: ResponseCode,
    ips: Vec<IpAddr>,
}

#[derive(Debug)]
struct DnsSent {
    case: DnsCase,
    client_port: u16,
    elapsed_ns: u64,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

async fn dns_exchange(case: DnsCase, id: u16, port: u16) -> Result<DnsSent> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(case.name)?, case.qtype));
    let msg = m.to_vec()?;
    let to = SocketAddr::new(ip(SERVER), port);
    let t;
    let (answer, client_port) = if case.tcp {
        let mut s = TcpStream::connect(to).await?;
        s.set_nodelay(true)?;
        let port = s.local_addr()?.port();
        // Length prefix and message in one write: one segment, as resolvers send it.
        let mut framed = u16::try_from(msg.len())?.to_be_bytes().to_vec();
        framed.extend_from_slice(&msg);
        t = Instant::now();
        s.write_all(&framed).await?;
        let len = usize::from(s.read_u16().await?);
        let mut b = vec![0u8; len];
        s.read_exact(&mut b).await?;
        (b, port)
    } else {
        let s = UdpSocket::bind(SocketAddr::new(ip(CLIENT), 0)).await?;
        let port = s.local_addr()?.port();
        let mut b = vec![0u8; 4096];
        t = Instant::now();
        s.send_to(&msg, to).await?;
        let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut b))
            .await
            .context("DNS answer")??;
        b.truncate(n);
        (b, port)
    };
    let elapsed_ns = u64::try_from(t.elapsed().as_nanos())?;
    let r = Message::from_vec(&answer)?;
    ensure!(r.id() == id, "answer id");
    // The server's own answer is the oracle; it must also be what we configured.
    let got: Vec<IpAddr> = r
        .answers()
        .iter()
        .filter_map(|a| match a.data() {
            RData::A(x) => Some(IpAddr::V4(x.0)),
            RData::AAAA(x) => Some(IpAddr::V6(x.0)),
            _ => None,
        })
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    ensure!(
        r.response_code() == case.rcode && sorted == case.ips,
        "dnsmasq answered {:?} {got:?} to {case:?}",
        r.response_code()
    );
    Ok(DnsSent {
        case,
        client_port,
        elapsed_ns,
    })
}

#[test]
fn dns_udp_and_tcp_queries_and_answers() -> Result<()> {
    let mut lab = Lab::start("l7d", &[])?;
    let _dnsmasq = start_dnsmasq(&lab.pair.b, 53)?;
    let c = |name, qtype, tcp, rcode, ips: &[&str]| DnsCase {
        name,
        qtype,
        tcp,
        rcode,
        ips: ips.iter().map(|s| ip(s)).collect(),
    };
    use RecordType::{A, AAAA};
    use ResponseCode::{NXDomain, NoError};
    let cases = vec![
        c("web.test.", A, false, NoError, &["10.1.2.3"]),
        c("web.test.", AAAA, false, NoError, &["fd00::3"]),
        c("multi.test.", A, false, NoError, &["10.1.2.5", "10.1.2.6"]),
        c("v4only.test.", AAAA, false, NoError, &[]),
        c("nothere.test.", A, false, NXDomain, &[]),
        c("nothere.test.", AAAA, false, NXDomain, &[]),
        c("web.test.", A, true, NoError, &["10.1.2.3"]),
        c("web.test.", AAAA, true, NoError, &["fd00::3"]),
        c("gone.test.", AAAA, true, NXDomain, &[]),
    ];
    let n = cases.len();
    let sent = block_on_in(&lab.pair.a, move || async move {
        let mut out = Vec::new();
        // One socket (UDP) or connection (TCP) per query: the client port
        // tells the exchanges apart.
        for (i, case) in cases.into_iter().enumerate() {
            out.push(dns_exchange(case, 0x1000 + i as u16, 53).await?);
        }
        dns_exchange(c("marker.test.", A, false, NXDomain, &[]), 0x2000, 53).await?;
        anyhow::Ok(out)
    })?;
    let flows = lab.l7_flows_when("the marker's response flow", |f| {
        f.iter().any(|f| {
            l7_type(f) == Some(L7FlowType::Response)
                && dns_of(f).is_some_and(|d| d.query == "marker.test.")
        })
    })?;
    assert_eq!(flows.len(), 2 * (n + 1), "{flows:#?}");
    for s in &sent {
        let cs = &s.case;
        let mine: Vec<&Flow> = flows
            .iter()
            .filter(|f| {
                let (src, dst, sp, dp) = endpoints(f);
                (src == CLIENT && sp == u32::from(s.client_port) && dp == 53)
                    || (dst == CLIENT && dp == u32::from(s.client_port) && sp == 53)
            })
            .collect();
        let one = |t: L7FlowType| -> Result<&Flow> {
            let v: Vec<&&Flow> = mine.iter().filter(|f| l7_type(f) == Some(t)).collect();
            ensure!(v.len() == 1, "{cs:?}: {} {t:?} flows: {mine:#?}", v.len());
            Ok(v[0])
        };
        let (q, r) = (one(L7FlowType::Request)?, one(L7FlowType::Response)?);
        let (qd, rd) = (dns_of(q).context("query")?, dns_of(r).context("answer")?);
        let qtype = cs.qtype.to_string();
        for d in [qd, rd] {
            assert_eq!(d.query, cs.name, "{cs:?}");
            assert_eq!(d.qtypes, std::slice::from_ref(&qtype), "{cs:?}");
            assert_eq!(d.observation_source, "datapath");
        }
        assert_eq!(rd.rcode, u32::from(u16::from(cs.rcode)), "{cs:?}");
        let mut ips: Vec<IpAddr> = rd.ips.iter().map(|s| ip(s)).collect();
        ips.sort();
        assert_eq!(ips, cs.ips, "{cs:?}");
        if !cs.ips.is_empty() {
            assert_eq!(rd.ttl, 300, "{cs:?}");
            assert!(rd.rrtypes.iter().all(|t| *t == qtype), "{cs:?} {rd:?}");
        }
        let proto = match r.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
            Some(Protocol::Tcp(_)) => "tcp",
            Some(Protocol::Udp(_)) => "udp",
            _ => "other",
        };
        assert_eq!(proto, if cs.tcp { "tcp" } else { "udp" }, "{cs:?}");
        assert_eq!(exchange(r), exchange(q), "{cs:?}");
        let lat = latency(r);
        assert!(
            lat > 0 && lat <= s.elapsed_ns,
            "{cs:?}: latency {lat} ns, client measured {} ns",
            s.elapsed_ns
        );
    }
    lab.alive()
}

/// `flowd-l7-dns-ports` adds ports to 53: DNS on 5353 (UDP and TCP) is
/// reported like DNS on 53.
#[test]
fn dns_on_a_configured_extra_port() -> Result<()> {
    const PORT: u16 = 5353;
    let mut lab = Lab::start("l7p", &["--set", "flowd-l7-dns-ports=53,5353"])?;
    let _dnsmasq = start_dnsmasq(&lab.pair.b, PORT)?;
    let case = |tcp| DnsCase {
        name: "web.test.",
        qtype: RecordType::A,
        tcp,
        rcode: ResponseCode::NoError,
        ips: vec![ip("10.1.2.3")],
    };
    let sent = block_on_in(&lab.pair.a, move || async move {
        let udp = dns_exchange(case(false), 7, PORT).await?;
        let tcp = dns_exchange(case(true), 8, PORT).await?;
        anyhow::Ok([udp, tcp])
    })?;
    let flows = lab.l7_flows_when("both answers", |f| {
        f.iter()
            .filter(|f| l7_type(f) == Some(L7FlowType::Response))
            .count()
            >= 2
    })?;
    assert_eq!(flows.len(), 4, "{flows:#?}");
    for s in &sent {
        let mine: Vec<&Flow> = flows
            .iter()
            .filter(|f| {
                let (_, _, sp, dp) = endpoints(f);
                (sp, dp) == (u32::from(s.client_port), u32::from(PORT))
                    || (sp, dp) == (u32::from(PORT), u32::from(s.client_port))
            })
            .collect();
        assert_eq!(mine.len(), 2, "{:?}: {mine:#?}", s.case);
        let r = mine
            .iter()
            .find(|f| l7_type(f) == Some(L7FlowType::Response))
            .context("no response flow")?;
        let d = dns_of(r).context("not DNS")?;
        assert_eq!((d.query.as_str(), d.rcode), ("web.test.", 0));
        assert_eq!(d.ips, ["10.1.2.3"]);
        let lat = latency(r);
        assert!(
            lat > 0 && lat <= s.elapsed_ns,
            "latency {lat} vs {}",
            s.elapsed_ns
        );
    }
    lab.alive()
}

// ---------------------------------------------------------------- garbage --

/// What a raw client sends on port 80 and what the raw server answers.
fn garbage_cases() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    // Deterministic pseudo-random bytes (xorshift), no extra dependency.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let mut get_noise = b"GET ".to_vec();
    get_noise.extend(noise(3000));
    let mut resp_noise = b"HTTP/1.1 ".to_vec();
    resp_noise.extend(noise(700));
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(700));
    vec![
        (
            "text",
            b"HELLO flowd, this is not HTTP\r\n".to_vec(),
            b"WELCOME\r\n".to_vec(),
        ),
        ("binary", noise(2000), noise(1500)),
        (
            "tls",
            [&[0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01][..], &noise(500)].concat(),
            [&[0x15u8, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28][..]].concat(),
        ),
        (
            "http2",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            b"\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec(),
        ),
        (
            "bad-tokens",
            b"GET \x01\x02\x03 HTTP/1.1\r\n\r\n".to_vec(),
            b"HTTP/1.1 abc\r\n\r\n".to_vec(),
        ),
        ("method-noise", get_noise, resp_noise),
        (
            "cut-line",
            b"PUT /only-part-of-the-line".to_vec(),
            b"HTTP/1.1 20".to_vec(),
        ),
        ("too-short", b"OPTIONS".to_vec(), b"HTTP/1.".to_vec()),
        (
            "bad-version",
            b"GET / HTTP/9.9\r\n\r\n".to_vec(),
            b"HTTP/1.x 200 OK\r\n\r\n".to_vec(),
        ),
        (
            "long-line",
            long_line.into_bytes(),
            b"HTTP/1.1 2000 Odd\r\n\r\n".to_vec(),
        ),
    ]
}

/// Garbage and non-HTTP on port 80 give no L7 flow, nor do invalid or cut
/// responses; a request line cut short (by the sender, or by the 512-byte
/// capture) is one REQUEST with the URL as far as it goes, flagged
/// `url_truncated`.
#[test]
fn garbage_gives_no_l7_flow_and_cut_request_lines_are_flagged() -> Result<()> {
    let mut lab = Lab::start("l7g", &[])?;
    let cases = garbage_cases();
    let replies: Vec<Vec<u8>> = cases
        .iter()
        .map(|c| c.2.clone())
        .chain([b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()])
        .collect();
    let total = replies.len();
    // A raw server: per connection, read to EOF, then answer the case's bytes.
    let listener = lab
        .pair
        .b
        .run(move || std::net::TcpListener::bind(server_addr()))??;
    let server = std::thread::spawn(move || -> Result<()> {
        use std::io::{Read, Write};
        for reply in replies {
            let (mut c, _) = listener.accept()?;
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut got = Vec::new();
            c.read_to_end(&mut got)?;
            c.write_all(&reply)?;
        }
        Ok(())
    });
    let requests: Vec<Vec<u8>> = cases.iter().map(|c| c.1.clone()).collect();
    let answered = block_on_in(&lab.pair.a, move || async move {
        let marker = request("GET", "/marker/200/0")?;
        let requests = requests.into_iter().chain([wire(&marker, b"")]);
        let mut n = 0;
        for req in requests {
            let mut s = TcpStream::connect(server_addr()).await?;
            s.write_all(&req).await?;
            s.shutdown().await?;
            let mut reply = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply))
                .await
                .context("raw server reply")??;
            n += usize::from(!reply.is_empty());
        }
        anyhow::Ok(n)
    })?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    assert_eq!(answered, total, "every connection got its reply");
    let flows = lab.l7_flows_when("the marker's response flow", |f| {
        f.iter().any(|f| {
            l7_type(f) == Some(L7FlowType::Response)
                && http_of(f).is_some_and(|h| h.url.ends_with("/marker/200/0"))
        })
    })?;
    // The two cut request lines (flagged, without a response: theirs are
    // invalid) and the marker exchange; no flow from any other case.
    let urls: Vec<(Option<L7FlowType>, String, String, u32, bool)> = flows
        .iter()
        .map(|f| {
            let h = http_of(f).cloned().unwrap_or_default();
            (l7_type(f), h.method, h.url, h.code, h.url_truncated)
        })
        .collect();
    let req = Some(L7FlowType::Request);
    // 512 captured bytes: "GET " and the target's first 508.
    let long = format!("/{}", "a".repeat(512 - "GET /".len()));
    assert_eq!(
        urls,
        [
            (req, "PUT".into(), "/only-part-of-the-line".into(), 0, true),
            (req, "GET".into(), long, 0, true),
            (
                req,
                "GET".into(),
                format!("http://{SERVER}/marker/200/0"),
                0,
                false
            ),
            (
                Some(L7FlowType::Response),
                "GET".into(),
                format!("http://{SERVER}/marker/200/0"),
                200,
                false
            ),
        ],
        "{flows:#?}"
    );
    lab.alive()
}
