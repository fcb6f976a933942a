//! The relay's web UI under load: 5,000 flows/s from synthetic nodes, 200
//! workloads on the map, in headless Chromium; the relay's CPU serving the
//! UI next to its CPU for the same stream over gRPC.
//!
//! ```text
//! cargo build --release -p flowd-relay
//! cargo bench -p flowd-lab --bench ui_load        # UI_BENCH_SECS=20 UI_BENCH_RATE=5000
//! ```
//!
//! Two fake nodes (in this process, on loopback) serve the Observer API and
//! stream synthetic flows: HTTP responses between 200 workloads in 10
//! namespaces (each workload calls 2 others: 400 edges), 2 % of them 503s,
//! plus a TCP flow per exchange. The real `relay` binary merges them, with
//! `--ui-listen`. Phases, each UI_BENCH_SECS long:
//!
//! 1. `relay-idle`: the UI's map aggregation only (no client);
//! 2. `grpc-follow`: one gRPC client follows every flow (GetFlows follow);
//! 3. `ui-map`: the browser shows the service map (200 workloads, refreshed every 2 s);
//! 4. `ui-flows`: the browser follows every flow in the flows view (the same stream as 2).
//!
//! For each: relay CPU (% of one core, from /proc/PID/stat), Chromium's CPU
//! (all its processes), and in the browser the frame intervals
//! (requestAnimationFrame) and long tasks (PerformanceObserver). Figures go
//! to docs/benchmarks.md; they mean something only on an otherwise idle machine.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use flowd_lab::browser::{Browser, WAIT};
use flowd_lab::cluster::bins;
use flowd_proto::Timestamp;
use flowd_proto::flow::layer4::Protocol;
use flowd_proto::flow::layer7::Record;
use flowd_proto::flow::{
    Endpoint, Flow, FlowType, Http, Ip, L7FlowType, Layer4, Layer7, Tcp, TcpFlags,
    TraceObservationPoint, Verdict, Workload,
};
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::observer_server::{Observer, ObserverServer};
use flowd_proto::observer::*;
use flowd_tests::ChildGuard;
use futures::StreamExt as _;
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::sync::broadcast;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

const NAMESPACES: usize = 10;
const PER_NS: usize = 20;
const NODES: usize = 2;

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// Workload `i` of 200: (namespace, name, ip).
fn workload(i: usize) -> (String, String, String) {
    let ns = i / PER_NS;
    let n = i % PER_NS;
    (
        format!("team-{ns}"),
        format!("svc-{n:02}"),
        format!("10.{}.{}.{}", 100 + ns, n / 200, 10 + n),
    )
}

fn endpoint(i: usize) -> Endpoint {
    let (ns, name, _) = workload(i);
    Endpoint {
        namespace: ns,
        pod_name: format!("{name}-7d4b9c-x{i}"),
        workloads: vec![Workload {
            name,
            kind: "Deployment".into(),
        }],
        ..Default::default()
    }
}

/// One exchange: the server's HTTP response and a TCP segment, as seen at
/// the server's veth.
fn exchange(seq: u64, node: &str) -> [Flow; 2] {
    let total = NAMESPACES * PER_NS;
    // Two exchanges per client in turn: 400 edges over 200 workloads.
    let client = ((seq / 2) as usize * 7) % total;
    // Each workload calls the next one and one in the next namespace.
    let server = if seq.is_multiple_of(2) {
        (client / PER_NS) * PER_NS + (client % PER_NS + 1) % PER_NS
    } else {
        (client + PER_NS) % total
    };
    let (_, _, cip) = workload(client);
    let (_, _, sip) = workload(server);
    let now = Timestamp::from(SystemTime::now());
    let cport = 40_000 + (seq % 20_000) as u32;
    let base = Flow {
        time: Some(now),
        uuid: format!("{node}-{seq}"),
        node_name: node.to_string(),
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: sip.clone(),
            destination: cip.clone(),
            ..Default::default()
        }),
        source: Some(endpoint(server)),
        destination: Some(endpoint(client)),
        trace_observation_point: TraceObservationPoint::FromEndpoint as i32,
        ..Default::default()
    };
    let code = if seq.is_multiple_of(50) { 503 } else { 200 };
    let l7 = Flow {
        r#type: FlowType::L7 as i32,
        l4: Some(Layer4 {
            protocol: Some(Protocol::Tcp(Tcp {
                source_port: 8080,
                destination_port: cport,
                flags: None,
            })),
        }),
        l7: Some(Layer7 {
            r#type: L7FlowType::Response as i32,
            latency_ns: 1_000_000 + (seq % 17) * 350_000,
            record: Some(Record::Http(Http {
                code,
                method: "GET".into(),
                url: format!("http://svc:8080/items/{}", seq % 100),
                protocol: "HTTP/1.1".into(),
                headers: Vec::new(),
                url_truncated: false,
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..base.clone()
    };
    let l4 = Flow {
        uuid: format!("{node}-{seq}-tcp"),
        r#type: FlowType::L3L4 as i32,
        is_reply: Some(flowd_proto::pbjson_types::BoolValue { value: true }),
        l4: Some(Layer4 {
            protocol: Some(Protocol::Tcp(Tcp {
                source_port: 8080,
                destination_port: cport,
                flags: Some(TcpFlags {
                    ack: true,
                    psh: true,
                    ..Default::default()
                }),
            })),
        }),
        ..base
    };
    [l7, l4]
}

/// A node: streams what the generator broadcasts to every follower.
#[derive(Clone)]
struct FakeNode {
    name: String,
    tx: broadcast::Sender<Arc<Vec<Flow>>>,
    seen: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl Observer for FakeNode {
    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<BoxStream<GetFlowsResponse>>, Status> {
        if !request.get_ref().follow {
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        }
        let rx = tokio_stream::wrappers::BroadcastStream::new(self.tx.subscribe());
        let s = rx.filter_map(|b| async move { b.ok() }).flat_map(|batch| {
            let items: Vec<Result<GetFlowsResponse, Status>> = batch
                .iter()
                .map(|f| {
                    Ok(GetFlowsResponse {
                        time: f.time,
                        node_name: f.node_name.clone(),
                        response_types: Some(ResponseTypes::Flow(f.clone())),
                    })
                })
                .collect();
            futures::stream::iter(items)
        });
        Ok(Response::new(Box::pin(s)))
    }
    async fn get_agent_events(
        &self,
        _r: Request<GetAgentEventsRequest>,
    ) -> Result<Response<BoxStream<GetAgentEventsResponse>>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn get_debug_events(
        &self,
        _r: Request<GetDebugEventsRequest>,
    ) -> Result<Response<BoxStream<GetDebugEventsResponse>>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn get_nodes(
        &self,
        _r: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn get_namespaces(
        &self,
        _r: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse::default()))
    }
    async fn server_status(
        &self,
        _r: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(ServerStatusResponse {
            seen_flows: self.seen.load(Ordering::Relaxed),
            version: format!("fake {}", self.name),
            ..Default::default()
        }))
    }
}

/// CPU time (user + system) of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, rest)) = s.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are 11 and 12 after the state field.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Pids of the Chromium processes of a profile.
fn chromium_pids(profile_marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains(profile_marker))
                        .unwrap_or(false)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Percent of one core used by each group of processes over `secs` seconds.
fn measure(groups: &[&dyn Fn() -> Vec<i32>], secs: u64) -> Vec<f64> {
    let hz = 100.0; // USER_HZ on Linux
    let ticks = |g: &dyn Fn() -> Vec<i32>| -> u64 { g().iter().map(|p| cpu_ticks(*p)).sum() };
    let before: Vec<u64> = groups.iter().map(|g| ticks(*g)).collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let el = t.elapsed().as_secs_f64();
    groups
        .iter()
        .zip(before)
        .map(|(g, b)| ticks(*g).saturating_sub(b) as f64 / hz / el * 100.0)
        .collect()
}

const START_PERF: &str = r#"
window.__perf = { frames: [], long: [] };
let last = performance.now();
const tick = (t) => { window.__perf.frames.push(t - last); last = t; requestAnimationFrame(tick); };
requestAnimationFrame(tick);
new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__perf.long.push(e.duration); })
  .observe({ type: 'longtask', buffered: false });
return true;"#;

const READ_PERF: &str = r#"
const f = window.__perf.frames.slice(1).sort((a, b) => a - b);
const q = (p) => f.length ? f[Math.min(f.length - 1, Math.floor(p * f.length))] : null;
const long = window.__perf.long;
return { frames: f.length, p50: q(0.5), p95: q(0.95), p99: q(0.99), max: f.length ? f[f.length - 1] : null,
  over50: f.filter((x) => x > 50).length, long_tasks: long.length, long_ms: long.reduce((a, b) => a + b, 0),
  received: Number(document.getElementById('flows-state')?.dataset.received ?? 0),
  lost: Number(document.getElementById('status-lost')?.dataset.value ?? 0) };"#;

fn report(
    name: &str,
    relay_cpu: f64,
    browser_cpu: Option<f64>,
    perf: Option<&Value>,
    secs: u64,
    extra: &str,
) {
    let b = browser_cpu.map_or("-".into(), |c| format!("{c:.1}"));
    match perf {
        Some(p) => println!(
            "{name:<12} relay CPU {relay_cpu:>5.1} %  chromium CPU {b:>5} %  frames {} (p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms, >50 ms: {})  long tasks {} ({:.0} ms in {secs} s){extra}",
            p["frames"],
            p["p50"].as_f64().unwrap_or(f64::NAN),
            p["p95"].as_f64().unwrap_or(f64::NAN),
            p["p99"].as_f64().unwrap_or(f64::NAN),
            p["max"].as_f64().unwrap_or(f64::NAN),
            p["over50"],
            p["long_tasks"],
            p["long_ms"].as_f64().unwrap_or(0.0)
        ),
        None => println!("{name:<12} relay CPU {relay_cpu:>5.1} %  chromium CPU {b:>5} %{extra}"),
    }
}

fn main() -> Result<()> {
    // `cargo bench` passes --bench; nothing else is taken.
    let secs = env_u64("UI_BENCH_SECS", 20);
    let rate = env_u64("UI_BENCH_RATE", 5000);
    let relay_bin = bins::path("relay")?;
    let out = std::env::temp_dir().join(format!("flowd-ui-bench-{}", std::process::id()));
    std::fs::create_dir_all(&out)?;

    // The nodes and the generator, on their own runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let node = FakeNode {
            name: format!("node-{i}"),
            tx: broadcast::channel(4096).0,
            seen: Arc::new(AtomicU64::new(0)),
        };
        let l = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        addrs.push(l.local_addr()?);
        let svc = ObserverServer::new(node.clone());
        rt.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await
        });
        nodes.push(node);
    }
    // Every 10 ms, rate/100 flows (two per exchange), spread over the nodes.
    let gen_nodes = nodes.clone();
    rt.spawn(async move {
        let mut seq = 0u64;
        let per_tick = (rate / 100 / 2).max(1);
        let mut iv = tokio::time::interval(Duration::from_millis(10));
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            iv.tick().await;
            for n in &gen_nodes {
                let mut batch = Vec::new();
                for _ in 0..per_tick / NODES as u64 {
                    seq += 1;
                    batch.extend(exchange(seq, &n.name));
                }
                n.seen.fetch_add(batch.len() as u64, Ordering::Relaxed);
                let _ = n.tx.send(Arc::new(batch));
            }
        }
    });

    let grpc_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let ui_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = std::process::Command::new(&relay_bin);
    cmd.args(["--listen-address", &format!("127.0.0.1:{grpc_port}")])
        .args(["--ui-listen", &format!("127.0.0.1:{ui_port}")])
        .args(["--sort-buffer-drain-timeout", "300ms"])
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(out.join("relay.log"))?);
    for (i, a) in addrs.iter().enumerate() {
        cmd.args(["--peer", &format!("node-{i}={a}")]);
    }
    let mut relay = ChildGuard::spawn("relay", &mut cmd)?;
    let relay_pid = relay.pid().context("relay pid")? as i32;
    let relay_pids = move || vec![relay_pid];
    let grpc: SocketAddr = format!("127.0.0.1:{grpc_port}").parse()?;
    let ui = format!("http://127.0.0.1:{ui_port}");

    // Wait until the relay streams: a status with both nodes connected.
    let deadline = Instant::now() + WAIT;
    loop {
        let st = rt.block_on(async {
            let mut c = ObserverClient::connect(format!("http://{grpc}")).await?;
            anyhow::Ok(c.server_status(ServerStatusRequest {}).await?.into_inner())
        });
        if st
            .as_ref()
            .is_ok_and(|s| s.num_connected_nodes.as_ref().map(|v| v.value) == Some(NODES as u32))
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the relay did not connect to the fake nodes: {st:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "ui_load: {rate} flows/s from {NODES} fake nodes, {} workloads, {secs} s per phase; load average before: {}",
        NAMESPACES * PER_NS,
        load.trim()
    );

    // 1. The relay with the UI's aggregation, no client.
    let cpu = measure(&[&relay_pids], secs);
    report("relay-idle", cpu[0], None, None, secs, "");

    // 2. The same stream over gRPC.
    let received = Arc::new(AtomicU64::new(0));
    let r2 = received.clone();
    let follow = rt.spawn(async move {
        let mut c = ObserverClient::connect(format!("http://{grpc}"))
            .await?
            .max_decoding_message_size(16 << 20);
        let mut s = c
            .get_flows(GetFlowsRequest {
                follow: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        while let Some(m) = s.message().await? {
            if matches!(m.response_types, Some(ResponseTypes::Flow(_))) {
                r2.fetch_add(1, Ordering::Relaxed);
            }
        }
        anyhow::Ok(())
    });
    let before = received.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let cpu = measure(&[&relay_pids], secs);
    let got = (received.load(Ordering::Relaxed) - before) as f64 / t0.elapsed().as_secs_f64();
    follow.abort();
    report(
        "grpc-follow",
        cpu[0],
        None,
        None,
        secs,
        &format!("  client received {got:.0} flows/s"),
    );

    // 3. and 4. In the browser.
    let b = Browser::start(None, &out, 1280, 800)?;
    let marker = format!("--user-data-dir={}", out.display());
    let browser_pids = move || chromium_pids(&marker);

    b.goto(&format!("{ui}/map?window=live"))?;
    b.wait_js(
        "200 workloads on the map",
        &format!(
            "return document.querySelectorAll('#map-svg g.node').length >= {};",
            NAMESPACES * PER_NS
        ),
        WAIT,
    )?;
    b.eval(START_PERF, Vec::new())?;
    let cpu = measure(&[&relay_pids, &browser_pids], secs);
    let perf = b.eval(READ_PERF, Vec::new())?;
    let edges = b.eval(
        "return document.querySelectorAll('#map-svg g.edge').length;",
        Vec::new(),
    )?;
    b.screenshot(&out.join("map-200.png"))?;
    report(
        "ui-map",
        cpu[0],
        Some(cpu[1]),
        Some(&perf),
        secs,
        &format!("  workloads {} edges {edges}", NAMESPACES * PER_NS),
    );

    b.goto(&format!("{ui}/flows"))?;
    b.wait_js(
        "flows arriving",
        "return Number(document.getElementById('flows-state')?.dataset.received ?? 0) > 1000;",
        WAIT,
    )?;
    b.eval(START_PERF, Vec::new())?;
    let r0 = b.eval(
        "return Number(document.getElementById('flows-state').dataset.received);",
        Vec::new(),
    )?;
    let t0 = Instant::now();
    let cpu = measure(&[&relay_pids, &browser_pids], secs);
    let el = t0.elapsed().as_secs_f64();
    let perf = b.eval(READ_PERF, Vec::new())?;
    b.screenshot(&out.join("flows-5000.png"))?;
    let got = perf["received"].as_f64().unwrap_or(0.0) - r0.as_f64().unwrap_or(0.0);
    report(
        "ui-flows",
        cpu[0],
        Some(cpu[1]),
        Some(&perf),
        secs,
        &format!(
            "  page received {:.0} flows/s, lost events shown {}",
            got / el,
            perf["lost"]
        ),
    );
    drop(b);
    relay.stop(Signal::SIGTERM, Duration::from_secs(10))?;
    println!("screenshots and logs: {}", out.display());
    Ok(())
}
