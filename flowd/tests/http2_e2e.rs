//! HTTP/2 and gRPC end to end: the flowd daemon observes a real tonic gRPC
//! server and client (every RPC kind, many statuses, concurrent streams,
//! new connections, HPACK dynamic-table evictions, bulk streams, a
//! connection opened before flowd, the parser's limits) and a real hyper h2c
//! server and client in two network namespaces, and the test reads the flows
//! back through the Observer API.
//!
//! The oracles are the clients (flowd_lab::grpc): each call's method, the
//! status it ended with, the messages each way and the time the client
//! measured. flowd observes veth-a (client side): every request leaves
//! through its egress hook and every response enters through its ingress
//! hook, so each RPC is one REQUEST and one RESPONSE flow. "All flows are
//! in" is an event: a marker call is made last on a connection whose earlier
//! calls are all answered, and once its RESPONSE flow is visible every
//! earlier flow is (the ring buffer, the pipeline and the buffer keep order).
//! Needs root, like flowd.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Result, ensure};
use flowd_lab::grpc::{self, Call, H2cOutcome, Kind, Outcome, SERVICE};
use flowd_proto::flow::{Flow, FlowFilter, Grpc, L7FlowType, grpc::Type as RpcType};
use flowd_tests::{Netns, Pair};
use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::oneshot,
};
use tonic::Code;

mod l7_support;
use l7_support::*;

const GRPC_PORT: u16 = 50051;
const H2C_PORT: u16 = 8080;
const RAW_PORT: u16 = 9000;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(SERVER.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), port)
}

/// The gRPC server, the h2c server and a raw TCP sink (reads and drops
/// whatever it is sent) in `ns`, stopped on drop.
struct Servers {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Servers {
    fn start(ns: &Netns) -> Result<Self> {
        let bind = |port| -> Result<std::net::TcpListener> {
            let l = ns.run(move || std::net::TcpListener::bind(addr(port)))??;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        let (grpc_l, h2c_l, raw_l) = (bind(GRPC_PORT)?, bind(H2C_PORT)?, bind(RAW_PORT)?);
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let grpc_l = tokio::net::TcpListener::from_std(grpc_l)?;
                let h2c_l = tokio::net::TcpListener::from_std(h2c_l)?;
                let raw_l = tokio::net::TcpListener::from_std(raw_l)?;
                let sink = async move {
                    loop {
                        let (mut s, _) = raw_l.accept().await?;
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65536];
                            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                        });
                    }
                    #[allow(unreachable_code)]
                    anyhow::Ok(())
                };
                tokio::select! {
                    _ = rx => Ok(()),
                    r = grpc::serve(grpc_l) => r,
                    r = grpc::serve_h2c(h2c_l) => r,
                    r = sink => r,
                }
            })
        });
        Ok(Self {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------- accessors --

fn grpc_of(f: &Flow) -> Option<&Grpc> {
    http_of(f)?.grpc.as_ref()
}

fn is_type(f: &Flow, t: L7FlowType) -> bool {
    l7_type(f) == Some(t)
}

/// The marker call: made last, answered DATA_LOSS (no other call ends so).
fn marker() -> Call {
    Call::new(Kind::Unary, Code::DataLoss, 1)
}

fn is_marker_response(f: &Flow) -> bool {
    is_type(f, L7FlowType::Response)
        && grpc_of(f).is_some_and(|g| g.status_code == Some(Code::DataLoss as u32))
}

/// `flows` without the marker's REQUEST and RESPONSE (one exchange id).
fn without_marker(flows: Vec<Flow>) -> Vec<Flow> {
    let id = flows
        .iter()
        .find(|f| is_marker_response(f))
        .map(exchange)
        .expect("the marker's response");
    flows.into_iter().filter(|f| exchange(f) != id).collect()
}

/// The shape flowd reports for a call with these message counts.
fn expected_type(requests: u32, responses: u32) -> RpcType {
    match (requests > 1, responses > 1) {
        (true, true) => RpcType::BidiStreaming,
        (true, false) => RpcType::ClientStreaming,
        (false, true) => RpcType::ServerStreaming,
        (false, false) => RpcType::Unary,
    }
}

/// Client-side local port of a flow (REQUESTs go out of it, RESPONSEs come in to it).
fn client_port(f: &Flow) -> u32 {
    let (_, _, sp, dp) = endpoints(f);
    if is_type(f, L7FlowType::Request) {
        sp
    } else {
        dp
    }
}

/// Checks the gRPC flows of `outcomes` exactly: per method one REQUEST per
/// call; per (method, status) one RESPONSE per call, with the status name,
/// the message counts and shape, a latency > 0 and ≤ the slowest such call
/// the client measured; nothing partial, every flow HTTP/2 to the service.
fn check_grpc(flows: &[Flow], outcomes: &[Outcome]) -> Result<()> {
    let mut want_req: BTreeMap<&str, usize> = BTreeMap::new();
    let mut want_resp: BTreeMap<(&str, u32), Vec<&Outcome>> = BTreeMap::new();
    for o in outcomes {
        *want_req.entry(o.kind.method()).or_default() += 1;
        want_resp
            .entry((o.kind.method(), o.code as u32))
            .or_default()
            .push(o);
    }
    let mut got_req: BTreeMap<&str, usize> = BTreeMap::new();
    let mut got_resp: BTreeMap<(&str, u32), usize> = BTreeMap::new();
    for f in flows.iter().filter(|f| grpc_of(f).is_some()) {
        let h = http_of(f).unwrap();
        let g = grpc_of(f).unwrap();
        ensure!(
            !h.partial,
            "partial flow on a connection seen from its start: {f:#?}"
        );
        ensure!(h.protocol == "HTTP/2", "{f:#?}");
        ensure!(h.method == "POST", "{f:#?}");
        ensure!(g.service == SERVICE, "{f:#?}");
        let kind = [
            Kind::Unary,
            Kind::ServerStreaming,
            Kind::ClientStreaming,
            Kind::Bidi,
        ]
        .into_iter()
        .find(|k| k.method() == g.method)
        .ok_or_else(|| anyhow::anyhow!("a method nobody called: {f:#?}"))?;
        ensure!(
            h.url == format!("http://{}{}", addr(GRPC_PORT), kind.path()),
            "url {:?}",
            h.url
        );
        if is_type(f, L7FlowType::Request) {
            ensure!(g.status_code.is_none(), "status on a request: {f:#?}");
            *got_req.entry(kind.method()).or_default() += 1;
            continue;
        }
        ensure!(is_type(f, L7FlowType::Response), "{f:#?}");
        let code = g
            .status_code
            .ok_or_else(|| anyhow::anyhow!("response without grpc-status: {f:#?}"))?;
        let key = (kind.method(), code);
        let Some(calls) = want_resp.get(&key) else {
            anyhow::bail!("a status no call ended with: {f:#?}");
        };
        ensure!(h.code == 200, "HTTP status of a gRPC response: {f:#?}");
        ensure!(
            g.status_name == canonical(Code::from(code as i32)),
            "status name {:?} for {code}",
            g.status_name
        );
        let slowest = calls.iter().map(|o| o.latency).max().unwrap_or_default();
        let lat = Duration::from_nanos(latency(f));
        ensure!(
            lat > Duration::ZERO && lat <= slowest,
            "latency {lat:?} not in (0, {slowest:?}]: {f:#?}"
        );
        // Every call of a group exchanged the same numbers of messages.
        // Counted where the frames show them (each DATA frame holds whole
        // messages): always for unary calls (one message per frame);
        // otherwise the counts are absent and the shape, when known, right.
        let o = calls[0];
        ensure!(
            g.messages_exact || kind != Kind::Unary || h.partial,
            "a unary call's messages not counted: {f:#?}"
        );
        if g.messages_exact {
            ensure!(
                (g.request_messages, g.response_messages) == (o.requests, o.responses),
                "messages ({}, {}) for {o:?}",
                g.request_messages,
                g.response_messages
            );
            ensure!(
                g.r#type == expected_type(o.requests, o.responses) as i32,
                "type {} for {o:?}",
                g.r#type
            );
        } else {
            // The shape may still be known (a side's bytes beyond its first
            // message); it is then the call's.
            ensure!(
                (g.request_messages, g.response_messages) == (0, 0)
                    && (g.r#type == RpcType::Unknown as i32
                        || g.r#type == expected_type(o.requests, o.responses) as i32),
                "counts, or a wrong shape, without exact counts: {f:#?}"
            );
        }
        *got_resp.entry(key).or_default() += 1;
    }
    let want_resp: BTreeMap<(&str, u32), usize> =
        want_resp.into_iter().map(|(k, v)| (k, v.len())).collect();
    ensure!(
        got_req == want_req,
        "REQUEST flows per method {got_req:?}, calls {want_req:?}"
    );
    ensure!(
        got_resp == want_resp,
        "RESPONSE flows per (method, status) {got_resp:?}, calls {want_resp:?}"
    );
    Ok(())
}

async fn run(
    client: &mut grpc::pb::inventory_client::InventoryClient<tonic::transport::Channel>,
    calls: &[Call],
) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for c in calls {
        out.push(grpc::make(client, c).await?);
    }
    Ok(out)
}

// ------------------------------------------------------------------ tests --

#[test]
fn grpc_every_kind_status_concurrency_and_evictions_exact_flows() -> Result<()> {
    let mut lab = Lab::start(
        "h2g",
        &[
            "--set",
            "hubble-metrics-server=127.0.0.1:9965",
            "--set",
            "hubble-metrics=grpc httpV2",
        ],
    )?;
    let _servers = Servers::start(&lab.pair.b)?;
    let outcomes = block_on_in(&lab.pair.a, || async {
        let mut out = Vec::new();
        let mut c1 = grpc::connect(addr(GRPC_PORT)).await?;
        // Every kind with four endings, one call after the other.
        let mut plan = Vec::new();
        for kind in [
            Kind::Unary,
            Kind::ServerStreaming,
            Kind::ClientStreaming,
            Kind::Bidi,
        ] {
            for code in [
                Code::Ok,
                Code::NotFound,
                Code::Internal,
                Code::PermissionDenied,
            ] {
                plan.push(Call::new(kind, code, 3));
            }
        }
        out.extend(run(&mut c1, &plan).await?);
        // 24 concurrent streams on the same connection.
        let concurrent: Vec<Call> = (0..24)
            .map(|i| {
                let code = [Code::Ok, Code::Unavailable, Code::AlreadyExists][i % 3];
                Call::new(Kind::Unary, code, 1)
            })
            .collect();
        let tasks: Vec<_> = concurrent
            .into_iter()
            .map(|call| {
                let mut c = c1.clone();
                tokio::spawn(async move { grpc::make(&mut c, &call).await })
            })
            .collect();
        for t in tasks {
            out.push(t.await??);
        }
        // New connections, two calls each.
        for _ in 0..5 {
            let mut c = grpc::connect(addr(GRPC_PORT)).await?;
            out.extend(
                run(
                    &mut c,
                    &[
                        Call::new(Kind::Unary, Code::Ok, 1),
                        Call::new(Kind::ServerStreaming, Code::NotFound, 2),
                    ],
                )
                .await?,
            );
        }
        // Large fresh headers both ways: each call evicts dynamic-table
        // entries (default table 4,096 bytes) of both HPACK encoders.
        let mut c = grpc::connect(addr(GRPC_PORT)).await?;
        let big: Vec<Call> = (0..12)
            .map(|i| {
                let mut call = Call::new(Kind::Unary, [Code::Ok, Code::Aborted][i % 2], 1);
                call.header_bytes = 3_000;
                call.behaviour.header_bytes = 3_000;
                call
            })
            .collect();
        out.extend(run(&mut c, &big).await?);
        grpc::make(&mut c1, &marker()).await?;
        anyhow::Ok(out)
    })?;
    assert_eq!(outcomes.len(), 16 + 24 + 10 + 12);
    let flows = lab.l7_flows_when("the marker's response", |f| {
        f.iter().any(is_marker_response)
    })?;
    let rest = without_marker(flows);
    check_grpc(&rest, &outcomes)?;
    // Nothing but the calls: two flows each.
    assert_eq!(rest.len(), 2 * outcomes.len(), "{rest:#?}");

    // The calls with the marker, as filters, observe and metrics see them.
    let mut all = outcomes.clone();
    all.push(Outcome {
        kind: Kind::Unary,
        code: Code::DataLoss,
        requests: 1,
        responses: 0,
        latency: Duration::MAX,
    });
    let count = |pred: &dyn Fn(&Outcome) -> bool| all.iter().filter(|o| pred(o)).count();
    let not_found = count(&|o| o.code == Code::NotFound);
    let failed = count(&|o| o.code != Code::Ok);
    let watch = count(&|o| o.kind == Kind::ServerStreaming);
    for (filter, want) in [
        (
            filter(|f| f.grpc_status = vec!["NOT_FOUND".into()]),
            not_found,
        ),
        (filter(|f| f.grpc_status = vec!["5".into()]), not_found),
        (filter(|f| f.grpc_status = vec!["1-16".into()]), failed),
        (
            filter(|f| f.grpc_status = vec!["OK".into()]),
            all.len() - failed,
        ),
        (
            filter(|f| f.grpc_service = vec![SERVICE.into()]),
            2 * all.len(),
        ),
        (filter(|f| f.grpc_method = vec!["Watch".into()]), 2 * watch),
        (
            filter(|f| f.http_path = vec![format!("^{}$", Kind::ServerStreaming.path())]),
            2 * watch,
        ),
        (filter(|f| f.protocol = vec!["grpc".into()]), 2 * all.len()),
    ] {
        let got = lab.flows_matching(vec![filter.clone()])?.len();
        assert_eq!(got, want, "{filter:?}");
    }
    // observe's compact lines for the NOT_FOUND calls.
    let observe = flowd_lab::cluster::bins::path("observe")?;
    let out = lab
        .pair
        .a
        .command(&observe)
        .args([
            "--server",
            "127.0.0.1:4244",
            "--all",
            "--grpc-status",
            "NOT_FOUND",
        ])
        .env("NO_COLOR", "1")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" => NOT_FOUND ("))
        .collect();
    assert_eq!(lines.len(), not_found, "{text}");
    for l in &lines {
        assert!(l.contains(&format!("gRPC /{SERVICE}/")), "{l}");
    }
    // Metrics: calls per (method, code) over the shapes, and per shape as the flows said.
    let m = scrape(&lab.pair.a)?;
    let mut by_call: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (labels, v) in m
        .iter()
        .filter(|(l, _)| l.starts_with("hubble_grpc_requests_total{"))
    {
        assert!(
            labels.contains(&format!("grpc_service=\"{SERVICE}\"")),
            "{labels}"
        );
        *by_call
            .entry((label(labels, "grpc_method"), label(labels, "grpc_code")))
            .or_default() += v;
    }
    let mut want_calls: BTreeMap<(String, String), f64> = BTreeMap::new();
    for o in &all {
        *want_calls
            .entry((o.kind.method().to_string(), go_code(o.code)))
            .or_default() += 1.0;
    }
    assert_eq!(by_call, want_calls);
    // Every response was paired: one duration observation per call and method.
    let mut durations: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, v) in m
        .iter()
        .filter(|(l, _)| l.starts_with("hubble_grpc_request_duration_seconds_count{"))
    {
        *durations.entry(label(labels, "grpc_method")).or_default() += v;
    }
    let mut want_durations: BTreeMap<String, f64> = BTreeMap::new();
    for o in &all {
        *want_durations
            .entry(o.kind.method().to_string())
            .or_default() += 1.0;
    }
    assert_eq!(durations, want_durations);
    let http2: f64 = m
        .iter()
        .filter(|(l, _)| {
            l.starts_with("hubble_http_requests_total{") && l.contains("protocol=\"HTTP/2\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(http2, all.len() as f64);
    lab.alive()
}

fn filter(set: impl FnOnce(&mut FlowFilter)) -> FlowFilter {
    let mut f = FlowFilter::default();
    set(&mut f);
    f
}

/// gRPC's canonical name of a status code (`NOT_FOUND`): tonic's names
/// in upper snake case.
fn canonical(c: Code) -> String {
    if c == Code::Ok {
        return "OK".into();
    }
    let mut out = String::new();
    for (i, ch) in format!("{c:?}").chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

/// go-grpc-prometheus's spelling of a status code (`grpc_code` label).
fn go_code(c: Code) -> String {
    match c {
        Code::Ok => "OK".into(),
        Code::Cancelled => "Canceled".into(),
        other => format!("{other:?}"),
    }
}

/// The value of `name` in a sample's `{…}` labels.
fn label(sample: &str, name: &str) -> String {
    let key = format!("{name}=\"");
    sample
        .split_once(&key)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default()
}

/// The daemon's metrics (inside `ns`): sample (name{labels}) → value.
fn scrape(ns: &Netns) -> Result<BTreeMap<String, f64>> {
    ns.run(scrape_here)?
}

/// [`scrape`] from the calling thread's namespace.
fn scrape_here() -> Result<BTreeMap<String, f64>> {
    use std::io::{Read, Write};
    let text = {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9965")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        out
    };
    let body = text.split_once("\r\n\r\n").map_or("", |b| b.1);
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect())
}

#[test]
fn bulk_streams_keep_the_walk_in_step() -> Result<()> {
    const MIB: u32 = 1 << 20;
    let mut lab = Lab::start("h2b", &["--set", "hubble-metrics-server=127.0.0.1:9965"])?;
    let _servers = Servers::start(&lab.pair.b)?;
    let (outcomes, bulk) = block_on_in(&lab.pair.a, || async {
        let mut c = grpc::connect(addr(GRPC_PORT)).await?;
        // 32 MiB from the server in 1 MiB messages, 16 MiB to it, then small calls.
        let mut watch = Call::new(Kind::ServerStreaming, Code::Ok, 32);
        watch.behaviour.reply_bytes = MIB;
        let mut restock = Call::new(Kind::ClientStreaming, Code::Ok, 16);
        restock.request_bytes = MIB;
        let mut plan = vec![watch, restock];
        for code in [Code::Ok, Code::NotFound, Code::ResourceExhausted] {
            plan.push(Call::new(Kind::Unary, code, 1));
        }
        let out = run(&mut c, &plan).await?;
        grpc::make(&mut c, &marker()).await?;
        anyhow::Ok((out, plan))
    })?;
    let flows = lab.l7_flows_when("the marker's response", |f| {
        f.iter().any(is_marker_response)
    })?;
    let rest = without_marker(flows);
    // The walk stays in step through 48 MiB of DATA: no record is partial
    // (a loss would leave the calls after it partial), the counts, methods
    // and statuses are exact. TCP sends the stream's segments from two CPUs
    // at once; the walker waits for the walk to reach each one.
    let partial = rest
        .iter()
        .filter(|f| http_of(f).is_some_and(|h| h.partial))
        .count();
    if partial > 0 {
        let counted =
            flowd_tests::wait_until("the loss in the metrics", Duration::from_secs(5), || {
                let m = scrape(&lab.pair.a)?;
                let sum = |prefix: &str| -> f64 {
                    m.iter()
                        .filter(|(k, _)| k.starts_with(prefix))
                        .map(|(_, v)| v)
                        .sum()
                };
                let losses = sum("flowd_http2_walk_losses_total");
                let flagged = sum("flowd_http2_walk_losses_total{detected_by=\"kernel\"}");
                // The kernel's reasons reach the metrics at the daemon's next
                // tick: wait for them when the kernel flagged the loss.
                let reasons = sum("flowd_datapath_http2_walks_lost_total");
                Ok((losses > 0.0 && (flagged == 0.0 || reasons > 0.0)).then_some(m))
            })?;
        let walk: Vec<String> = counted
            .into_iter()
            .filter(|(k, v)| k.contains("http2") && *v > 0.0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        panic!(
            "{partial} partial records, the walk lost its place:\n{}",
            walk.join("\n")
        );
    }
    check_grpc(&rest, &outcomes)?;
    assert_eq!(rest.len(), 2 * outcomes.len(), "{rest:#?}");
    // DATA bytes are exact: each message is its 5-byte prefix and its encoding.
    let event = grpc::pb::StockEvent {
        seq: 31,
        payload: vec![0; MIB as usize],
    };
    let watch_resp = rest
        .iter()
        .find(|f| is_type(f, L7FlowType::Response) && grpc_of(f).unwrap().method == "Watch")
        .unwrap();
    let per_msg: Vec<u64> = (0..32u64)
        .map(|seq| {
            5 + grpc::pb::StockEvent {
                seq,
                ..event.clone()
            }
            .encoded_len() as u64
        })
        .collect();
    assert_eq!(
        grpc_of(watch_resp).unwrap().response_bytes,
        per_msg.iter().sum::<u64>()
    );
    // The streams' shapes are known (their bytes exceed the first message).
    for (method, shape) in [
        ("Watch", RpcType::ServerStreaming),
        ("Restock", RpcType::ClientStreaming),
    ] {
        let resp = rest
            .iter()
            .find(|f| is_type(f, L7FlowType::Response) && grpc_of(f).unwrap().method == method)
            .unwrap();
        assert_eq!(grpc_of(resp).unwrap().r#type, shape as i32, "{resp:#?}");
    }
    assert_eq!(bulk.len(), 5);
    lab.alive()
}

#[test]
fn plain_http2_concurrent_requests_exact_flows() -> Result<()> {
    let mut lab = Lab::start("h2p", &[])?;
    let _servers = Servers::start(&lab.pair.b)?;
    let host = format!("web.test:{H2C_PORT}");
    let reqs: Vec<(&str, String)> = (0..12)
        .map(|i| match i % 4 {
            0 => ("GET", format!("/items/{i}")),
            1 => ("POST", "/status/201".to_string()),
            2 => ("GET", "/status/404".to_string()),
            _ => ("DELETE", format!("/status/503?i={i}")),
        })
        .collect();
    let h = host.clone();
    let (sent, _) = block_on_in(&lab.pair.a, move || async move {
        let sent = grpc::h2c_requests(addr(H2C_PORT), &h, &reqs).await?;
        let mut c = grpc::connect(addr(GRPC_PORT)).await?;
        grpc::make(&mut c, &marker()).await?;
        anyhow::Ok((sent, ()))
    })?;
    let flows = lab.l7_flows_when("the marker's response", |f| {
        f.iter().any(is_marker_response)
    })?;
    let h2: Vec<&Flow> = flows
        .iter()
        .filter(|f| http_of(f).is_some_and(|h| h.grpc.is_none()))
        .collect();
    assert_eq!(h2.len(), 2 * sent.len(), "{h2:#?}");
    let key = |method: &str, url: &str, code: u32| (method.to_string(), url.to_string(), code);
    let mut want: Vec<_> = sent
        .iter()
        .flat_map(|o: &H2cOutcome| {
            // The query is redacted by default (hubble-redact-http-urlquery).
            let path = o.path.split('?').next().unwrap_or_default();
            let url = format!("http://{host}{path}");
            [
                key(&o.method, &url, 0),
                key(&o.method, &url, u32::from(o.status)),
            ]
        })
        .collect();
    let mut got: Vec<_> = h2
        .iter()
        .map(|f| {
            let h = http_of(f).unwrap();
            assert_eq!(h.protocol, "HTTP/2");
            assert!(!h.partial);
            key(&h.method, &h.url, h.code)
        })
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let slowest = sent.iter().map(|o| o.latency).max().unwrap();
    for f in h2.iter().filter(|f| is_type(f, L7FlowType::Response)) {
        let lat = Duration::from_nanos(latency(f));
        assert!(lat > Duration::ZERO && lat <= slowest, "{f:#?}");
    }
    lab.alive()
}

#[test]
fn a_connection_opened_before_flowd_is_flagged_never_mislabelled() -> Result<()> {
    let pair = Pair::create("h2m")?;
    pair.up()?;
    let _servers = Servers::start(&pair.b)?;
    // The client connects and calls before flowd runs, then waits for it.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let client = pair
        .a
        .spawn_thread(move || -> Result<(Vec<Outcome>, Vec<Outcome>)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut old = grpc::connect(addr(GRPC_PORT)).await?;
                run(&mut old, &vec![Call::new(Kind::Unary, Code::Ok, 1); 3]).await?;
                ready_tx.send(())?;
                go_rx.recv()?;
                let plan: Vec<Call> = (0..10)
                    .map(|i| Call::new(Kind::Unary, [Code::Ok, Code::NotFound][i % 2], 1))
                    .collect();
                let on_old = run(&mut old, &plan).await?;
                let mut new = grpc::connect(addr(GRPC_PORT)).await?;
                let on_new = run(&mut new, &plan).await?;
                grpc::make(&mut new, &marker()).await?;
                anyhow::Ok((on_old, on_new))
            })
        })?;
    ready_rx.recv()?;
    let port = format!("flowd-l7-http2-ports={GRPC_PORT}");
    let mut lab = Lab::attach(
        pair,
        &[
            "--set",
            &port,
            "--set",
            "hubble-metrics-server=127.0.0.1:9965",
        ],
    )?;
    go_tx.send(())?;
    let (on_old, on_new) = client.join().expect("client thread")??;
    let flows = lab.l7_flows_when("the marker's response", |f| {
        f.iter().any(is_marker_response)
    })?;
    let marker_port = flows
        .iter()
        .find(|f| is_marker_response(f))
        .map(client_port)
        .unwrap();
    let (new, old): (Vec<Flow>, Vec<Flow>) = without_marker(flows)
        .into_iter()
        .partition(|f| client_port(f) == marker_port);
    // The new connection: exact.
    check_grpc(&new, &on_new)?;
    assert_eq!(new.len(), 2 * on_new.len());
    // The old one: one REQUEST and one RESPONSE per call; whatever is
    // known is right, what is not is empty and flagged.
    let codes: Vec<u32> = on_old.iter().map(|o| o.code as u32).collect();
    let requests: Vec<&Flow> = old
        .iter()
        .filter(|f| is_type(f, L7FlowType::Request))
        .collect();
    let responses: Vec<&Flow> = old
        .iter()
        .filter(|f| is_type(f, L7FlowType::Response))
        .collect();
    let walk: Vec<String> = scrape(&lab.pair.a)?
        .into_iter()
        .filter(|(k, _)| k.contains("http2"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    assert_eq!(
        (requests.len(), responses.len()),
        (10, 10),
        "{old:#?}\n{}",
        walk.join("\n")
    );
    let mut partial = 0;
    for (f, code) in responses.iter().zip(&codes) {
        let h = http_of(f).unwrap();
        partial += usize::from(h.partial);
        if let Some(g) = &h.grpc {
            assert!(g.method.is_empty() || g.method == "Reserve", "{f:#?}");
            assert!(g.service.is_empty() || g.service == SERVICE, "{f:#?}");
            if let Some(c) = g.status_code {
                assert_eq!(c, *code, "{f:#?}");
            }
            if g.method.is_empty() || g.status_code.is_none() {
                assert!(h.partial, "an unknown field without the flag: {f:#?}");
            }
        } else {
            assert!(h.partial, "gRPC not recognised without the flag: {f:#?}");
        }
    }
    // Every partial record is counted (requests and responses).
    let partial_records = old
        .iter()
        .filter(|f| http_of(f).is_some_and(|h| h.partial))
        .count();
    // The parser's counters reach the metrics on the daemon's tick.
    let m = flowd_tests::wait_until(
        "the partial records in the metrics",
        Duration::from_secs(5),
        || {
            let m = scrape(&lab.pair.a)?;
            Ok((m.get("flowd_http2_partial_messages_total").copied()
                == Some(partial_records as f64))
            .then_some(m))
        },
    )?;
    // Each direction of the old connection began in its middle: one loss
    // each, flagged by the kernel; none the parser had to find.
    assert_eq!(
        (
            m.get("flowd_http2_walk_losses_total{detected_by=\"kernel\"}")
                .copied(),
            m.get("flowd_http2_walk_losses_total{detected_by=\"parser\"}")
                .copied()
                .or(Some(0.0)),
        ),
        (Some(2.0), Some(0.0)),
        "{}",
        walk.join("\n")
    );
    eprintln!("{partial} of 10 responses on the old connection are partial");
    lab.alive()
}

#[test]
fn garbage_and_non_http2_payloads_give_no_flow() -> Result<()> {
    let mut lab = Lab::start("h2x", &[])?;
    let _servers = Servers::start(&lab.pair.b)?;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    block_on_in(&lab.pair.a, || async {
        let mut payloads: Vec<Vec<u8>> = vec![
            // The preface, then bytes that are no frames.
            [PREFACE, &[0xff; 200][..]].concat(),
            // A cut preface.
            PREFACE[..10].to_vec(),
            // A frame header announcing more than is ever sent.
            [PREFACE, &[0, 0x40, 0, 1, 4, 0, 0, 0, 1], &[0x82; 10]].concat(),
            // Not HTTP/2 at all.
            b"hello, this is not a protocol flowd knows\r\n".to_vec(),
        ];
        // Pseudo-random bytes (fixed seed).
        let mut x = 0x2545_f491_4f6c_dd1du64;
        payloads.push(
            (0..4096)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect(),
        );
        for p in payloads {
            let mut s = tokio::net::TcpStream::connect(addr(RAW_PORT)).await?;
            s.write_all(&p).await?;
            s.shutdown().await?;
        }
        let mut c = grpc::connect(addr(GRPC_PORT)).await?;
        grpc::make(&mut c, &marker()).await?;
        anyhow::Ok(())
    })?;
    let flows = lab.l7_flows_when("the marker's response", |f| {
        f.iter().any(is_marker_response)
    })?;
    // The marker's two flows and nothing else.
    assert_eq!(flows.len(), 2, "{flows:#?}");
    lab.alive()
}

#[test]
fn limits_are_kept_and_what_they_cost_is_counted() -> Result<()> {
    // flowd tracks 16 connections, 4 open streams per connection and header
    // blocks of up to 1024 bytes (each key's minimum or close to it).
    let mut lab = Lab::start(
        "h2l",
        &[
            "--set",
            "hubble-metrics-server=127.0.0.1:9965",
            "--set",
            "flowd-l7-http2-connections=16",
            "--set",
            "flowd-l7-http2-streams=4",
            "--set",
            "flowd-l7-http2-header-bytes=1024",
        ],
    )?;
    let _servers = Servers::start(&lab.pair.b)?;
    let (first_calls, sync_codes) = block_on_in(&lab.pair.a, || async {
        // 18 connections open at once, a call on each: the 17th and 18th
        // evict the least recently used (whose calls are over).
        let mut conns = Vec::new();
        let mut first_calls = Vec::new();
        for _ in 0..18 {
            let mut c = grpc::connect(addr(GRPC_PORT)).await?;
            first_calls.push(grpc::make(&mut c, &Call::new(Kind::Unary, Code::Ok, 1)).await?);
            conns.push(c);
        }
        // The tracked connections, as the daemon's next tick reports them.
        flowd_tests::wait_until("16 tracked connections", Duration::from_secs(5), || {
            let m = scrape_here()?;
            Ok((m.get("flowd_http2_connections") == Some(&16.0)).then_some(()))
        })?;
        let mut c = conns.pop().expect("18 connections");
        // 6 bidi streams open at once on the last connection, each echoed
        // once: the 5th and 6th request evict the two oldest streams.
        let mut open = Vec::new();
        for i in 0..6u64 {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(grpc::pb::SyncMessage {
                behaviour: None,
                seq: i,
                payload: vec![1; 16],
            })
            .await?;
            let mut replies = c
                .sync(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            ensure!(replies.message().await?.is_some(), "no echo");
            open.push((tx, replies));
        }
        // Ended newest first: the evicted streams' ends come last.
        let mut sync_codes = Vec::new();
        while let Some((tx, mut replies)) = open.pop() {
            drop(tx);
            let end = loop {
                match replies.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break Code::Ok,
                    Err(s) => break s.code(),
                }
            };
            sync_codes.push(end);
        }
        // A response head of 2,000 bytes of metadata, over the limit, on a
        // 19th connection (it evicts a third; its server side's table is
        // unknown after the block, so the marker stays on the 18th).
        let mut big = Call::new(Kind::Unary, Code::Ok, 1);
        big.behaviour.header_bytes = 2_000;
        let mut c19 = grpc::connect(addr(GRPC_PORT)).await?;
        grpc::make(&mut c19, &big).await?;
        grpc::make(&mut c, &marker()).await?;
        drop(conns);
        anyhow::Ok((first_calls, sync_codes))
    })?;
    assert!(first_calls.iter().all(|o| o.code == Code::Ok));
    assert_eq!(sync_codes, vec![Code::Ok; 6]);
    let flows = lab.l7_flows_when("the marker's response", |f| {
        f.iter().any(is_marker_response)
    })?;
    let rest = without_marker(flows);
    // What each limit cost, exactly: the records of evicted streams lack
    // their request (unpaired, no method), the call whose response head was
    // over the limit is flagged partial; nothing else is missing or partial.
    let count = |ty: L7FlowType, method: &str, pred: &dyn Fn(&Flow) -> bool| {
        rest.iter()
            .filter(|f| is_type(f, ty) && grpc_of(f).is_some_and(|g| g.method == method))
            .filter(|f| pred(f))
            .count()
    };
    let whole = |f: &Flow| !http_of(f).unwrap().partial && !f.l7.as_ref().unwrap().unpaired;
    let ok = |f: &Flow| grpc_of(f).unwrap().status_code == Some(0);
    assert_eq!(count(L7FlowType::Request, "Reserve", &whole), 19);
    assert_eq!(
        count(L7FlowType::Response, "Reserve", &|f| whole(f) && ok(f)),
        18
    );
    let big: Vec<&Flow> = rest
        .iter()
        .filter(|f| is_type(f, L7FlowType::Response) && http_of(f).unwrap().partial)
        .collect();
    assert_eq!(big.len(), 1, "{big:#?}");
    let g = grpc_of(big[0]).unwrap();
    assert!(g.method == "Reserve" && g.status_code.is_none_or(|c| c == 0));
    assert_eq!(count(L7FlowType::Request, "Sync", &whole), 6);
    assert_eq!(
        count(L7FlowType::Response, "Sync", &|f| whole(f) && ok(f)),
        4
    );
    let orphans: Vec<&Flow> = rest
        .iter()
        .filter(|f| f.l7.as_ref().unwrap().unpaired)
        .collect();
    assert_eq!(orphans.len(), 2, "{orphans:#?}");
    assert!(orphans.iter().all(|f| {
        let h = http_of(f).unwrap();
        is_type(f, L7FlowType::Response) && h.url.is_empty() && h.method.is_empty()
    }));
    assert_eq!(rest.len(), 2 * 19 + 6 + 4 + 2);
    let want = [
        (
            "flowd_http2_connections_evicted_total{reason=\"capacity\"}",
            3.0,
        ),
        ("flowd_http2_streams_evicted_total", 2.0),
        (
            "flowd_http2_header_blocks_skipped_total{reason=\"oversized\"}",
            1.0,
        ),
        ("flowd_http2_partial_messages_total", 1.0),
    ];
    let m = flowd_tests::wait_until("the limits' metrics", Duration::from_secs(5), || {
        let m = scrape(&lab.pair.a)?;
        Ok(want.iter().all(|(k, v)| m.get(*k) >= Some(v)).then_some(m))
    })?;
    for (k, v) in want {
        assert_eq!(m.get(k), Some(&v), "{k}");
    }
    lab.alive()
}
