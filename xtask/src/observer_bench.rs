//! `cargo xtask bench-observer` — the Observer benchmark, against
//! the release flowd daemon (ConfigMap mode, Observer API on) observing a
//! veth pair:
//! (a) RSS of flowd idle and with its 65,535-flow buffer full of real L3/L4
//!     flows (UDP datagrams to distinct ports; the replies' ICMP errors add
//!     more), and the RSS growth per buffered flow;
//! (b) flows/s streamed by GetFlows (whole buffer, non-follow) without and
//!     with filters, next to a baseline measured in the same run: prost
//!     decoding of the same responses in memory (the floor of any gRPC
//!     delivery). Medians over `runs` replays.
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use flowd_proto::flow::FlowFilter;
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::{GetFlowsRequest, GetFlowsResponse, ServerStatusRequest};
use flowd_tests::{ChildGuard, Netns, Pair};
use prost::Message;

const CAPACITY: u64 = 65_535;
/// Resident and anonymous resident memory of `pid`, in bytes.
fn rss(pid: u32) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    Ok((
        kib("VmRSS:").context("no VmRSS")?,
        kib("RssAnon:").context("no RssAnon")?,
    ))
}

/// Runs `f` with a tokio runtime on a thread inside `ns`.
fn in_ns<T: Send + 'static, Fut: std::future::Future<Output = Result<T>>>(
    ns: &Netns,
    f: impl FnOnce() -> Fut + Send + 'static,
) -> Result<T> {
    ns.run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(f())
    })?
}

async fn client(addr: SocketAddr) -> Result<ObserverClient<tonic::transport::Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    Ok(ObserverClient::new(ch).max_decoding_message_size(16 << 20))
}

/// (num_flows, seen_flows) from ServerStatus.
fn status(ns: &Netns, addr: SocketAddr) -> Result<(u64, u64)> {
    in_ns(ns, move || async move {
        let s = client(addr)
            .await?
            .server_status(ServerStatusRequest {})
            .await?
            .into_inner();
        Ok((s.num_flows, s.seen_flows))
    })
}

/// One GetFlows replay: flows received, seconds, and (when `keep`) the
/// encoded responses.
async fn replay(
    c: &mut ObserverClient<tonic::transport::Channel>,
    req: GetFlowsRequest,
    keep: bool,
) -> Result<(u64, f64, Vec<Vec<u8>>)> {
    let t = Instant::now();
    let mut s = c.get_flows(req).await?.into_inner();
    let mut n = 0;
    let mut kept = Vec::new();
    while let Some(r) = s.message().await? {
        if let Some(ResponseTypes::Flow(_)) = &r.response_types {
            n += 1;
            if keep {
                kept.push(r.encode_to_vec());
            }
        }
    }
    Ok((n, t.elapsed().as_secs_f64(), kept))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Measured {
    idle: (u64, u64),
    full: (u64, u64),
    num_flows: u64,
    /// (case, flows per replay, flows/s median, flows/s of each run)
    rates: Vec<(String, u64, f64, Vec<f64>)>,
    baseline: f64,
    fill_secs: f64,
}

pub fn bench(runs: usize, out: &Path, flowd: Option<PathBuf>) -> Result<()> {
    ensure!(runs >= 1, "--runs must be at least 1");
    let bin = match flowd {
        Some(p) => p,
        None => crate::build_release()?,
    };
    let pair = Pair::create("bo")?;
    pair.up()?;
    let addr: SocketAddr = "127.0.0.1:4244".parse()?;
    pair.b.ip(&["link", "set", "lo", "up"])?;
    let sets = [
        "enable-hubble=true".to_string(),
        format!("hubble-listen-address={addr}"),
        "hubble-metrics-server=".to_string(),
        format!("hubble-event-buffer-capacity={CAPACITY}"),
        "flowd-interfaces=veth-b=tc".to_string(),
        "flowd-node-name=bench".to_string(),
    ];
    let mut cmd = pair.b.command(&bin);
    for s in &sets {
        cmd.args(["--set", s]);
    }
    let mut child = ChildGuard::spawn("flowd", &mut cmd)?;
    let pid = child.pid().context("flowd exited")?;
    flowd_tests::wait_until("flowd Observer API up", Duration::from_secs(30), || {
        if let Some(st) = child.try_wait()? {
            bail!("flowd exited with {st}");
        }
        Ok(status(&pair.b, addr).ok())
    })?;
    let idle = rss(pid)?;

    // Fill: datagrams from a to b, each (source port, destination port) a new
    // flow, in paced chunks so the kernel ring buffer keeps up.
    let t = Instant::now();
    let mut round = 0u16;
    loop {
        let (num, _) = status(&pair.b, addr)?;
        if num >= CAPACITY {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(300),
            "buffer not full after 5 minutes ({num} flows)"
        );
        let base = round;
        pair.a.run(move || -> Result<()> {
            let sock = UdpSocket::bind(("0.0.0.0", 20_000 + base))?;
            for port in 1..=8192u16 {
                let _ = sock.send_to(b"flowd", (Pair::B4, port));
                if port % 512 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Ok(())
        })??;
        round += 1;
    }
    // Let the last events arrive.
    let mut last = status(&pair.b, addr)?;
    flowd_tests::wait_until("seen_flows settles", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = status(&pair.b, addr)?;
        let done = now == last;
        last = now;
        Ok(done.then_some(()))
    })?;
    let fill_secs = t.elapsed().as_secs_f64();
    let full = rss(pid)?;
    let num_flows = last.0;

    let cases: Vec<(String, GetFlowsRequest)> = vec![
        ("no filter".into(), GetFlowsRequest::default()),
        (
            "whitelist protocol udp + destination_ip (the UDP flows match)".into(),
            GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    protocol: vec!["udp".into()],
                    destination_ip: vec![format!("{}/32", Pair::B4)],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ),
        (
            "whitelist destination_port 1-64 (1 in 128 match)".into(),
            GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    destination_port: (1..=64).map(|p: u16| p.to_string()).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ),
        (
            "blacklist source_ip a (only the ICMP errors pass)".into(),
            GetFlowsRequest {
                blacklist: vec![FlowFilter {
                    source_ip: vec![Pair::A4.to_string()],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ),
    ];
    let (rates, baseline) = in_ns(&pair.b, move || async move {
        // Rates count the flows scanned (the whole buffer), matched or not.
        let mut c = client(addr).await?;
        let (_, _, encoded) = replay(&mut c, GetFlowsRequest::default(), true).await?;
        let mut base = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let mut bytes = 0;
            for e in &encoded {
                bytes += GetFlowsResponse::decode(e.as_slice())?.encoded_len();
            }
            std::hint::black_box(bytes);
            base.push(encoded.len() as f64 / t.elapsed().as_secs_f64());
        }
        let mut rates = Vec::new();
        for (name, req) in cases {
            let mut per = Vec::new();
            let mut n = 0;
            for _ in 0..runs {
                let (got, secs, _) = replay(&mut c, req.clone(), false).await?;
                n = got;
                per.push(num_flows as f64 / secs);
            }
            rates.push((name, n, median(per.clone()), per));
        }
        Ok((rates, median(base)))
    })?;
    child.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;

    let m = Measured {
        idle,
        full,
        num_flows,
        rates,
        baseline,
        fill_secs,
    };
    let report = render(&m, runs)?;
    print!("{report}");
    crate::report::write_section(out, "observer", &report)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn render(m: &Measured, runs: usize) -> Result<String> {
    let mut s = String::new();
    writeln!(
        s,
        "### Observer — `cargo xtask bench-observer`\n\n\
         Release flowd daemon (`--set` keys: Observer API on 127.0.0.1, metrics server off, \
         `hubble-event-buffer-capacity={CAPACITY}`, TC on one veth), {} CPUs, \
         buffer filled with {} real L3/L4 flows (UDP to distinct ports + ICMP errors) in {:.0} s. \
         GetFlows over loopback gRPC, non-follow, whole buffer, median of {runs} replays.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        m.num_flows,
        m.fill_secs
    )?;
    let per_flow = (m.full.0.saturating_sub(m.idle.0)) as f64 / m.num_flows.max(1) as f64;
    let per_flow_anon = (m.full.1.saturating_sub(m.idle.1)) as f64 / m.num_flows.max(1) as f64;
    writeln!(s, "| memory | idle | buffer full | per buffered flow |")?;
    writeln!(s, "|---|---|---|---|")?;
    writeln!(
        s,
        "| VmRSS | {:.1} MiB | {:.1} MiB (target ≤ 64) | {per_flow:.0} B (target ≤ 1024) |",
        mib(m.idle.0),
        mib(m.full.0)
    )?;
    writeln!(
        s,
        "| RssAnon | {:.1} MiB | {:.1} MiB | {per_flow_anon:.0} B |\n",
        mib(m.idle.1),
        mib(m.full.1)
    )?;
    writeln!(
        s,
        "| GetFlows | flows sent per replay | buffered flows scanned/s (median) | ratio to baseline | runs |"
    )?;
    writeln!(s, "|---|---|---|---|---|")?;
    writeln!(
        s,
        "| baseline: prost decode of the same responses | {} | {:.0} | 1.000 | |",
        m.num_flows, m.baseline
    )?;
    for (name, n, rate, per) in &m.rates {
        writeln!(
            s,
            "| {name} | {n} | {rate:.0} | {:.3} | {} |",
            rate / m.baseline,
            per.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    Ok(s)
}
