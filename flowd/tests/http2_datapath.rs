//! The kernel's HTTP/2 frame walker on real TCP connections through the
//! flowd daemon (TC on veth-a): its counters as metrics, and the keys that
//! configure it (`flowd-l7-http2-ports`, `flowd-l7-http2-walk-entries`).
//!
//! The connections speak HTTP/2 frames written by the test over std
//! sockets with TCP_NODELAY, each write read whole by the peer before the
//! next, so that every write is one TCP segment: one segment of frames is
//! one EV_H2 record, and the expected counts are exact. veth-a carries the
//! client's segments out (egress) and the server's in (ingress): each
//! direction is walked once. Root, like flowd.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod daemon_netns;
mod metrics_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use daemon_netns::*;
use flowd_tests::Pair;
use metrics_support::Sample;

const WAIT: Duration = Duration::from_secs(30);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(ty: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[ty, flags]);
    f.extend_from_slice(&sid.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn settings(n: u8) -> Vec<u8> {
    let p: Vec<u8> = (0..n).flat_map(|i| [0, i + 1, 0, 0, 0x40, 0]).collect();
    frame(SETTINGS, 0, 0, &p)
}

fn settings_ack() -> Vec<u8> {
    frame(SETTINGS, 0x1, 0, &[])
}

fn headers(sid: u32, flags: u8) -> Vec<u8> {
    let block: Vec<u8> = (0..24).map(|i| 0x80 | i as u8).collect();
    frame(HEADERS, END_HEADERS | flags, sid, &block)
}

/// A DATA frame with one gRPC message of `n` bytes.
fn grpc_data(sid: u32, n: usize) -> Vec<u8> {
    let mut p = vec![0];
    p.extend_from_slice(&(n as u32).to_be_bytes());
    p.extend(std::iter::repeat_n(0x61, n));
    frame(0, 0, sid, &p)
}

/// A response: HEADERS, one DATA frame, trailers.
fn response(sid: u32) -> Vec<u8> {
    [
        headers(sid, 0),
        grpc_data(sid, 40),
        headers(sid, END_STREAM),
    ]
    .concat()
}

/// A TCP connection from `a` to `b`:`port`, both ends in this process.
struct Conn {
    client: TcpStream,
    server: TcpStream,
}

impl Conn {
    fn open(pair: &Pair, port: u16) -> Result<Self> {
        let listener = pair.b.run(move || TcpListener::bind((Pair::B4, port)))??;
        let client = pair.a.run(move || TcpStream::connect((Pair::B4, port)))??;
        let (server, _) = listener.accept()?;
        for s in [&client, &server] {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(WAIT))?;
        }
        Ok(Self { client, server })
    }

    /// The client writes `bytes` (one segment); the server reads them all.
    fn up(&mut self, bytes: &[u8]) -> Result<()> {
        self.client.write_all(bytes)?;
        let mut buf = vec![0; bytes.len()];
        self.server.read_exact(&mut buf).context("server read")?;
        ensure!(buf == bytes);
        Ok(())
    }

    /// The server writes each of `writes` (one segment each); then the
    /// client reads them all.
    fn down(&mut self, writes: &[&[u8]]) -> Result<()> {
        for w in writes {
            self.server.write_all(w)?;
        }
        let want = writes.concat();
        let mut buf = vec![0; want.len()];
        self.client.read_exact(&mut buf).context("client read")?;
        ensure!(buf == want);
        Ok(())
    }
}

/// The walker's metrics: (events, walks by start, walks lost by reason,
/// concurrent packets).
#[derive(Debug, PartialEq)]
struct Walker {
    events: f64,
    preface: f64,
    settings: f64,
    resync: f64,
    lost: [f64; 4],
    concurrent: f64,
}

fn walker(s: &[Sample]) -> Walker {
    let walks = |start| value(s, "flowd_datapath_http2_walks_total", &[("start", start)]);
    let lost = |reason| {
        value(
            s,
            "flowd_datapath_http2_walks_lost_total",
            &[("reason", reason)],
        )
    };
    Walker {
        events: value(s, "flowd_datapath_http2_events_total", &[]),
        preface: walks("client_preface"),
        settings: walks("server_settings"),
        resync: walks("resync"),
        lost: ["gap", "evicted", "ring_full", "step_limit"].map(lost),
        concurrent: value(s, "flowd_datapath_http2_concurrent_packets_total", &[]),
    }
}

/// Waits until the walker's metrics reach `want` (the counters only grow,
/// and every segment was delivered before), then checks they are exactly it.
fn expect_walker(pair: &Pair, want: Walker) -> Result<()> {
    let got = wait_metrics(&pair.a, "the walker's metrics", WAIT, |s| {
        let w = walker(s);
        (w.events >= want.events && w.preface >= want.preface && w.resync >= want.resync)
            .then_some(w)
    })?;
    ensure!(got == want, "got {got:?}\nwant {want:?}");
    Ok(())
}

fn start(pair: &Pair, node: &str, sets: &[&str]) -> Result<Daemon> {
    let mut args = vec!["-i", "veth-a", "--set", "monitor-aggregation-interval=1h"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let d = Daemon::start(&pair.a, node, &args)?;
    wait_metrics(&pair.a, "veth-a attached", WAIT, |s| {
        (value(s, "flowd_attached_interfaces", &[("mode", "tc")]) == 1.0).then_some(())
    })?;
    Ok(d)
}

/// A connection flowd sees from its start: each direction's walk starts
/// (`walks_total{start="client_preface"}` and `{start="server_settings"}`),
/// each segment of frames is one record (`events_total`), nothing is lost.
/// Then a reordered pair of server segments (the first held back in a
/// rate-limited qdisc class on veth-b, the second overtaking it): the walk
/// of the server's direction sees a gap (`walks_lost_total{reason="gap"}`)
/// and resynchronises on the second segment at once (`{start="resync"}`);
/// the late one is behind the walk and gives nothing.
#[test]
fn walks_on_real_connections_are_counted() -> Result<()> {
    let pair = Pair::create("h2w")?;
    let mut d = start(&pair, "h2-walk", &[])?;
    quiet_up(&pair, true)?;
    let mut c = Conn::open(&pair, 50051)?;
    c.up(&[PREFACE, &settings(1)].concat())?;
    c.down(&[&[settings(2), settings_ack()].concat()])?;
    c.up(&[settings_ack(), headers(1, END_STREAM)].concat())?;
    c.down(&[&response(1)])?;
    expect_walker(
        &pair,
        Walker {
            events: 4.0,
            preface: 1.0,
            settings: 1.0,
            resync: 0.0,
            lost: [0.0; 4],
            concurrent: 0.0,
        },
    )?;

    // A second connection without TCP timestamps (so its payload starts 40
    // bytes into the IP packet for the qdisc filter), started like the
    // first. Without autocorking, a write is sent while the socket's
    // previous segment still waits in the qdisc.
    pair.b.sysctl("net.ipv4.tcp_timestamps", "0")?;
    pair.b.sysctl("net.ipv4.tcp_autocorking", "0")?;
    let mut c = Conn::open(&pair, 50052)?;
    c.up(&[PREFACE, &settings(1)].concat())?;
    c.down(&[&settings(1)])?;
    c.up(&[headers(1, 0), headers(3, 0), headers(5, END_STREAM)].concat())?;
    // veth-b's egress: class 1:20 at 80 kbit/s takes the server's segment
    // that starts with stream 3's HEADERS, and UDP to port 9 (fillers that
    // take the class's 1500-byte bucket below zero first, so the segment
    // waits ~0.1 s); everything else passes at once.
    let tc = |args: &str| -> Result<()> {
        let out = pair
            .b
            .command("tc")
            .args(args.split_whitespace())
            .output()?;
        ensure!(
            out.status.success(),
            "tc {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    tc("qdisc add dev veth-b root handle 1: htb default 10")?;
    tc("class add dev veth-b parent 1: classid 1:10 htb rate 10gbit")?;
    tc(
        "class add dev veth-b parent 1: classid 1:20 htb rate 80kbit ceil 80kbit burst 1500b cburst 1500b",
    )?;
    tc("filter add dev veth-b parent 1: protocol ip prio 1 u32 \
        match ip sport 50052 0xffff match u8 0x01 0xff at 43 match u8 0x03 0xff at 48 flowid 1:20")?;
    tc("filter add dev veth-b parent 1: protocol ip prio 2 u32 \
        match ip protocol 17 0xff match ip dport 9 0xffff flowid 1:20")?;
    pair.b.run(|| -> Result<()> {
        let u = std::net::UdpSocket::bind((Pair::B4, 0))?;
        for _ in 0..2 {
            u.send_to(&[0; 1400], (Pair::A4, 9))?;
        }
        Ok(())
    })??;
    c.down(&[&response(3), &headers(5, END_STREAM)])?;
    expect_walker(
        &pair,
        Walker {
            // 4, the second connection's 3 segments, the one after the gap.
            events: 8.0,
            preface: 2.0,
            settings: 2.0,
            resync: 1.0,
            lost: [1.0, 0.0, 0.0, 0.0],
            concurrent: 0.0,
        },
    )?;
    d.alive()
}

/// `flowd-l7-http2-ports`: connections opened before flowd started (their
/// preface long gone) are walked from the middle on the configured port,
/// from their first segment of whole frames (`walks_total{start="resync"}`,
/// one per direction); a connection on another port is not walked.
#[test]
fn http2_ports_pick_up_connections_opened_before_flowd() -> Result<()> {
    let pair = Pair::create("h2p")?;
    quiet_up(&pair, true)?;
    let mut conns = Vec::new();
    for port in [50061, 50062] {
        let mut c = Conn::open(&pair, port)?;
        c.up(&[PREFACE, &settings(1)].concat())?;
        c.down(&[&[settings(1), settings_ack()].concat()])?;
        c.up(&settings_ack())?;
        conns.push(c);
    }
    let mut d = start(&pair, "h2-ports", &["flowd-l7-http2-ports=50061"])?;
    for c in &mut conns {
        c.up(&headers(1, END_STREAM))?;
        c.down(&[&response(1)])?;
    }
    expect_walker(
        &pair,
        Walker {
            events: 2.0,
            preface: 0.0,
            settings: 0.0,
            resync: 2.0,
            lost: [0.0; 4],
            concurrent: 0.0,
        },
    )?;
    d.alive()
}

/// max_entries of the map `name` that process `pid` holds.
fn map_max_entries(pid: u32, name: &str) -> Result<u32> {
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let text = std::fs::read_to_string(e?.path()).unwrap_or_default();
        let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let info = aya::maps::MapInfo::from_id(id)?;
        if info.name_as_str() == Some(name) {
            return Ok(info.max_entries());
        }
    }
    anyhow::bail!("no map {name} in process {pid}")
}

/// `flowd-l7-http2-walk-entries` sizes the kernel's walk table (read back
/// from the kernel); the default is 32768.
#[test]
fn http2_walk_entries_size_the_kernel_table() -> Result<()> {
    for (sets, want) in [
        (&[][..], 32768),
        (&["flowd-l7-http2-walk-entries=4096"][..], 4096),
    ] {
        let pair = Pair::create("h2e")?;
        let d = start(&pair, "h2-entries", sets)?;
        let pid = d.child.pid().context("flowd pid")?;
        let got = map_max_entries(pid, flowd_common::names::MAP_H2_WALK)?;
        ensure!(got == want, "{sets:?}: {got}");
    }
    Ok(())
}
