//! End-to-end tests of the datapath: the real flowd binary (built by cargo
//! for this package, hence these tests live in flowd/tests and use
//! CARGO_BIN_EXE_flowd — always the binary of the current sources) observes
//! real traffic between two network namespaces.
//!
//! Oracles are independent of flowd: the kernel's own TCP segment counters
//! (/proc/net/snmp) of each namespace, the veth's interface statistics, and
//! the exact sizes of packets whose headers the test pins down (TCP options
//! reduced to MSS by sysctl). Needs root, like flowd itself.
use std::{
    io::{Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use aya::{
    Ebpf,
    programs::{LinkOrder, SchedClassifier, TcAttachType, tc::TcAttachOptions},
};
use flowd_tests::{
    Netns, Pair, VethPair, add_addr, flowd::Flowd, link_up, net, wait_oper_up, wait_until,
};
use nix::sys::signal::Signal;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_flowd");
const ETH: u64 = 14;
const TCP_HDR: u64 = 20;
const UDP_HDR: u64 = 8;
const ICMP_HDR: u64 = 8;
/// MSS option: the only TCP option left on SYN / SYN-ACK by `pin_tcp_options`.
const MSS_OPT: u64 = 4;

fn bin() -> &'static Path {
    Path::new(BIN)
}

/// Turns off timestamps, SACK and window scaling so every TCP header is 20
/// bytes except SYN/SYN-ACK (20 + MSS). Per namespace sysctls.
fn pin_tcp_options(ns: &Netns) -> Result<()> {
    for k in [
        "net.ipv4.tcp_timestamps",
        "net.ipv4.tcp_sack",
        "net.ipv4.tcp_window_scaling",
    ] {
        ns.sysctl(k, "0")?;
    }
    Ok(())
}

fn s(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(u64::MAX)
}

fn flags(v: &Value, k: &str) -> Vec<String> {
    v[k].as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The single flow matching the 5-tuple and direction on `ifname`.
fn flow<'a>(
    flows: &'a [Value],
    ifname: &str,
    dir: &str,
    proto: &str,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
) -> Result<&'a Value> {
    let m: Vec<&Value> = flows
        .iter()
        .filter(|f| {
            s(f, "ifname") == ifname
                && s(f, "direction") == dir
                && s(f, "protocol") == proto
                && s(f, "src_addr") == src.0.to_string()
                && u(f, "src_port") == u64::from(src.1)
                && s(f, "dst_addr") == dst.0.to_string()
                && u(f, "dst_port") == u64::from(dst.1)
        })
        .collect();
    ensure!(
        m.len() == 1,
        "expected exactly one {dir} {proto} flow {src:?} -> {dst:?} on {ifname}, found {}: {flows:#?}",
        m.len()
    );
    Ok(m[0])
}

struct Tcp {
    client: SocketAddr,
    server: SocketAddr,
}

/// A TCP connection from `pair.a` to `pair.b` with `n` request/response
/// exchanges, ended by FIN (or by RST when `rst`).
fn tcp_exchanges(
    pair: &Pair,
    server_ip: IpAddr,
    n: usize,
    req: usize,
    resp: usize,
    rst: bool,
) -> Result<Tcp> {
    let server_addr = SocketAddr::new(server_ip, 5000);
    let listener = pair.b.run(move || TcpListener::bind(server_addr))??;
    let server = std::thread::spawn(move || -> Result<()> {
        let (mut c, _) = listener.accept()?;
        let mut buf = vec![0u8; req];
        for _ in 0..n {
            c.read_exact(&mut buf)?;
            c.write_all(&vec![b'r'; resp])?;
        }
        if !rst {
            let mut rest = Vec::new();
            c.read_to_end(&mut rest)?;
            ensure!(
                rest.is_empty(),
                "server got {} unexpected bytes",
                rest.len()
            );
        } else {
            let mut b = [0u8; 1];
            // The client's RST ends the connection with an error or EOF.
            let _ = c.read(&mut b);
        }
        Ok(())
    });
    let mut c = pair
        .a
        .run(move || TcpStream::connect_timeout(&server_addr, Duration::from_secs(5)))??;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let client = c.local_addr()?;
    let mut buf = vec![0u8; resp];
    for _ in 0..n {
        c.write_all(&vec![b'q'; req])?;
        c.read_exact(&mut buf)?;
    }
    if rst {
        net::set_linger_zero(&c)?;
        drop(c);
    } else {
        c.shutdown(Shutdown::Write)?;
        let mut rest = Vec::new();
        c.read_to_end(&mut rest)?;
        drop(c);
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    Ok(Tcp {
        client,
        server: server_addr,
    })
}

/// A `Tcp` counter from [`Netns::snmp`]'s table.
fn tcp_counter(snmp: &std::collections::BTreeMap<(String, String), i64>, key: &str) -> Option<i64> {
    snmp.get(&("Tcp".to_owned(), key.to_owned())).copied()
}

/// Waits until each namespace's kernel counted every segment the other sent.
fn tcp_segments_settled(pair: &Pair) -> Result<(i64, i64)> {
    wait_until(
        "TCP segment counters of both namespaces to agree",
        Duration::from_secs(10),
        || {
            let a = pair.a.snmp()?;
            let b = pair.b.snmp()?;
            let g = |m, k| tcp_counter(m, k).unwrap_or(-1);
            let (a_out, a_in, b_out, b_in) = (
                g(&a, "OutSegs"),
                g(&a, "InSegs"),
                g(&b, "OutSegs"),
                g(&b, "InSegs"),
            );
            Ok((a_out == b_in && b_out == a_in && a_out > 0).then_some((a_out, b_out)))
        },
    )
}

/// Waits until `ns` has no TCP socket left (every close finished).
fn tcp_sockets_gone(ns: &Netns) -> Result<()> {
    wait_until(
        "the namespace's TCP sockets to close",
        Duration::from_secs(10),
        || {
            let out = ns
                .command("cat")
                .args(["/proc/net/tcp", "/proc/net/tcp6"])
                .output()?;
            ensure!(
                out.status.success(),
                "reading /proc/net/tcp in {}",
                ns.name()
            );
            let text = String::from_utf8_lossy(&out.stdout);
            // Each file starts with a header line ("  sl  local_address ...").
            let sockets = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("sl"))
                .count();
            Ok((sockets == 0).then_some(()))
        },
    )
}

/// UDP: `m` datagrams of `len` bytes from a to b, each echoed back.
fn udp_echo(
    pair: &Pair,
    a_ip: IpAddr,
    b_ip: IpAddr,
    m: usize,
    len: usize,
) -> Result<(SocketAddr, SocketAddr)> {
    let server_addr = SocketAddr::new(b_ip, 6000);
    let srv = pair.b.run(move || UdpSocket::bind(server_addr))??;
    let cli = pair
        .a
        .run(move || UdpSocket::bind(SocketAddr::new(a_ip, 0)))??;
    srv.set_read_timeout(Some(Duration::from_secs(5)))?;
    cli.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 2048];
    for _ in 0..m {
        cli.send_to(&vec![b'u'; len], server_addr)?;
        let (k, from) = srv.recv_from(&mut buf)?;
        srv.send_to(&buf[..k], from)?;
        let k = cli.recv(&mut buf)?;
        ensure!(k == len, "echo of {k} bytes");
    }
    Ok((cli.local_addr()?, server_addr))
}

fn l3l4_exact_counts(v6: bool) -> Result<()> {
    const N: usize = 7; // TCP request/response exchanges
    const REQ: usize = 100;
    const RESP: usize = 300;
    const M: usize = 5; // UDP datagrams (each echoed)
    const ULEN: usize = 50;
    const K: u16 = 4; // pings
    const PLEN: usize = 56;
    let pair = Pair::create(if v6 { "l6" } else { "l4" })?;
    pin_tcp_options(&pair.a)?;
    pin_tcp_options(&pair.b)?;
    // Attach before the link is up: every packet the veth ever carries is seen.
    let mut flowd = Flowd::start(bin(), &pair.a, &["-i", "veth-a"])?;
    pair.up()?;
    let (a_ip, b_ip, ip_hdr): (IpAddr, IpAddr, u64) = if v6 {
        (Pair::A6.parse()?, Pair::B6.parse()?, 40)
    } else {
        (Pair::A4.parse()?, Pair::B4.parse()?, 20)
    };

    let tcp = tcp_exchanges(&pair, b_ip, N, REQ, RESP, false)?;
    let (a_segs, b_segs) = tcp_segments_settled(&pair)?;
    let (ucli, usrv) = udp_echo(&pair, a_ip, b_ip, M, ULEN)?;
    let replies = pair.a.run(move || net::ping(b_ip, K, PLEN))??;
    ensure!(replies == K, "{replies} of {K} ping replies");

    let (rx_p, rx_b, tx_p, tx_b) = pair.a.link_stats("veth-a")?;
    let dump = flowd.stop()?;
    let (rx_p2, rx_b2, tx_p2, tx_b2) = pair.a.link_stats("veth-a")?;
    let flows = dump["flows"]
        .as_array()
        .context("no flows in dump")?
        .clone();
    let events = flowd.events();

    // TCP: 5-tuples, directions, packets = the kernel's segment counts,
    // bytes = exact header sizes + payload.
    let out = flow(
        &flows,
        "veth-a",
        "egress",
        "TCP",
        (tcp.client.ip(), tcp.client.port()),
        (tcp.server.ip(), 5000),
    )?;
    let back = flow(
        &flows,
        "veth-a",
        "ingress",
        "TCP",
        (tcp.server.ip(), 5000),
        (tcp.client.ip(), tcp.client.port()),
    )?;
    let per_pkt = ETH + ip_hdr + TCP_HDR;
    assert_eq!(u(out, "packets"), a_segs as u64, "client→server segments");
    assert_eq!(u(back, "packets"), b_segs as u64, "server→client segments");
    assert_eq!(
        u(out, "bytes"),
        a_segs as u64 * per_pkt + MSS_OPT + (N * REQ) as u64
    );
    assert_eq!(
        u(back, "bytes"),
        b_segs as u64 * per_pkt + MSS_OPT + (N * RESP) as u64
    );
    for f in [out, back] {
        let fl = flags(f, "tcp_flags");
        for want in ["SYN", "ACK", "PSH", "FIN"] {
            assert!(fl.iter().any(|x| x == want), "{want} missing in {fl:?}");
        }
        assert!(!fl.iter().any(|x| x == "RST"), "unexpected RST: {fl:?}");
    }

    // TCP transitions as events: SYN, SYN-ACK, FIN on both directions.
    let tcp_events = |dir: &str, sport: u16| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| {
                s(e, "direction") == dir
                    && s(e, "protocol") == "TCP"
                    && u(e, "src_port") == u64::from(sport)
            })
            .collect()
    };
    let ev_out = tcp_events("egress", tcp.client.port());
    let ev_back = tcp_events("ingress", 5000);
    assert!(
        ev_out
            .iter()
            .any(|e| s(e, "event") == "new_flow" && flags(e, "pkt_tcp_flags") == ["SYN"]),
        "no SYN new_flow event: {ev_out:#?}"
    );
    assert!(
        ev_back
            .iter()
            .any(|e| s(e, "event") == "new_flow" && flags(e, "pkt_tcp_flags") == ["SYN", "ACK"]),
        "no SYN-ACK new_flow event: {ev_back:#?}"
    );
    for ev in [&ev_out, &ev_back] {
        assert!(
            ev.iter()
                .any(|e| flags(e, "pkt_tcp_flags").iter().any(|f| f == "FIN")),
            "no FIN event: {ev:#?}"
        );
    }

    // UDP.
    let bytes = |l4: u64, payload: usize, n: usize| n as u64 * (ETH + ip_hdr + l4 + payload as u64);
    let uo = flow(
        &flows,
        "veth-a",
        "egress",
        "UDP",
        (ucli.ip(), ucli.port()),
        (usrv.ip(), 6000),
    )?;
    let ub = flow(
        &flows,
        "veth-a",
        "ingress",
        "UDP",
        (usrv.ip(), 6000),
        (ucli.ip(), ucli.port()),
    )?;
    assert_eq!(
        (u(uo, "packets"), u(uo, "bytes")),
        (M as u64, bytes(UDP_HDR, ULEN, M))
    );
    assert_eq!(
        (u(ub, "packets"), u(ub, "bytes")),
        (M as u64, bytes(UDP_HDR, ULEN, M))
    );

    // ICMP echo: the key carries type (src_port) and code (dst_port).
    let (proto, req_t, rep_t) = if v6 {
        ("ICMPv6", 128, 129)
    } else {
        ("ICMPv4", 8, 0)
    };
    let io = flow(&flows, "veth-a", "egress", proto, (a_ip, req_t), (b_ip, 0))?;
    let ib = flow(&flows, "veth-a", "ingress", proto, (b_ip, rep_t), (a_ip, 0))?;
    let k = usize::from(K);
    assert_eq!(
        (u(io, "packets"), u(io, "bytes")),
        (u64::from(K), bytes(ICMP_HDR, PLEN, k))
    );
    assert_eq!(
        (u(ib, "packets"), u(ib, "bytes")),
        (u64::from(K), bytes(ICMP_HDR, PLEN, k))
    );

    // Everything the veth carried (ARP, ND, MLD included) is in the flow map:
    // the sums equal the interface statistics (bounded by the two reads
    // around the stop, equal when nothing moved in between).
    let sum = |dir: &str, k: &str| -> u64 {
        flows
            .iter()
            .filter(|f| s(f, "ifname") == "veth-a" && s(f, "direction") == dir)
            .map(|f| u(f, k))
            .sum()
    };
    for (what, got, lo, hi) in [
        ("egress packets", sum("egress", "packets"), tx_p, tx_p2),
        ("egress bytes", sum("egress", "bytes"), tx_b, tx_b2),
        ("ingress packets", sum("ingress", "packets"), rx_p, rx_p2),
        ("ingress bytes", sum("ingress", "bytes"), rx_b, rx_b2),
    ] {
        assert!(
            lo <= got && got <= hi,
            "{what}: flows say {got}, interface {lo}..={hi}"
        );
    }
    let c = &dump["counters"];
    assert_eq!(u(c, "events_lost"), 0, "{c}");
    assert_eq!(u(c, "records_malformed"), 0, "{c}");
    Ok(())
}

#[test]
fn ipv4_tcp_udp_icmp_exact_counts() -> Result<()> {
    l3l4_exact_counts(false)
}

#[test]
fn ipv6_tcp_udp_icmp_exact_counts() -> Result<()> {
    l3l4_exact_counts(true)
}

#[test]
fn tcp_reset_is_reported() -> Result<()> {
    for v6 in [false, true] {
        let pair = Pair::create("rst")?;
        let mut flowd = Flowd::start(bin(), &pair.a, &["-i", "veth-a"])?;
        pair.up()?;
        let b_ip: IpAddr = if v6 {
            Pair::B6.parse()?
        } else {
            Pair::B4.parse()?
        };
        let tcp = tcp_exchanges(&pair, b_ip, 2, 10, 10, true)?;
        tcp_segments_settled(&pair)?;
        let dump = flowd.stop()?;
        let flows = dump["flows"].as_array().context("no flows")?.clone();
        let out = flow(
            &flows,
            "veth-a",
            "egress",
            "TCP",
            (tcp.client.ip(), tcp.client.port()),
            (b_ip, 5000),
        )?;
        let fl = flags(out, "tcp_flags");
        assert!(fl.iter().any(|f| f == "RST"), "no RST in {fl:?}");
        assert!(!fl.iter().any(|f| f == "FIN"), "FIN in {fl:?}");
        let rst_events = flowd
            .events()
            .iter()
            .filter(|e| {
                s(e, "direction") == "egress"
                    && u(e, "src_port") == u64::from(tcp.client.port())
                    && flags(e, "pkt_tcp_flags").iter().any(|f| f == "RST")
            })
            .count();
        assert_eq!(rst_events, 1, "RST events (v6={v6})");
    }
    Ok(())
}

/// Records wait in the ring for the reader's timer (no wake-up per record);
/// at shutdown flowd detaches, then reads and prints every one of them.
#[test]
fn records_in_the_ring_at_shutdown_are_not_lost() -> Result<()> {
    const FLOWS: usize = 50;
    let pair = Pair::create("drain")?;
    let mut flowd = Flowd::start(bin(), &pair.a, &["-i", "veth-a"])?;
    pair.up()?;
    let dst = SocketAddr::new(Pair::B4.parse()?, 7001);
    let _sink = pair.b.run(move || UdpSocket::bind(dst))??;
    // One datagram from each of FLOWS sockets: FLOWS new flows, then stop at once.
    // The sockets stay open until all have sent: a closed socket's port may
    // be handed out again, and a reused port is the same flow.
    pair.a.run(move || -> Result<()> {
        let mut open = Vec::with_capacity(FLOWS);
        for _ in 0..FLOWS {
            let sock = UdpSocket::bind("10.200.0.1:0")?;
            sock.send_to(b"x", dst)?;
            open.push(sock);
        }
        Ok(())
    })??;
    let dump = flowd.stop()?;
    let c = &dump["counters"];
    assert_eq!(u(c, "events_lost"), 0, "{c}");
    assert_eq!(u(c, "records_read"), u(c, "events_submitted"), "{c}");
    let new_flows = flowd
        .events()
        .iter()
        .filter(|e| {
            s(e, "event") == "new_flow"
                && s(e, "direction") == "egress"
                && s(e, "protocol") == "UDP"
                && u(e, "dst_port") == 7001
        })
        .count();
    assert_eq!(new_flows, FLOWS);
    Ok(())
}

#[test]
fn ring_buffer_losses_are_counted() -> Result<()> {
    const FLOOD: usize = 20_000;
    let pair = Pair::create("loss")?;
    let mut flowd = Flowd::start(
        bin(),
        &pair.a,
        &[
            "-i",
            "veth-a",
            "--ring-buffer-bytes",
            "4096",
            "--aggregation-interval",
            "none",
        ],
    )?;
    pair.up()?;
    let dst = SocketAddr::new(Pair::B4.parse()?, 7000);
    let _sink = pair.b.run(move || UdpSocket::bind(dst))??;
    let src = pair.a.run(move || -> Result<SocketAddr> {
        let s = UdpSocket::bind("10.200.0.1:0")?;
        for _ in 0..FLOOD {
            s.send_to(&[0u8; 16], dst)?;
        }
        Ok(s.local_addr()?)
    })??;
    let dump = flowd.stop()?;
    let c = &dump["counters"];
    let (submitted, lost, packets) = (
        u(c, "events_submitted"),
        u(c, "events_lost"),
        u(c, "packets"),
    );
    let flows = dump["flows"].as_array().context("no flows")?;
    let f = flow(
        flows,
        "veth-a",
        "egress",
        "UDP",
        (src.ip(), src.port()),
        (dst.ip(), 7000),
    )?;
    assert_eq!(
        u(f, "packets"),
        FLOOD as u64,
        "flood packets in the flow map"
    );
    assert!(
        lost > 0,
        "no loss with a 4 KiB ring and {FLOOD} events: {c}"
    );
    // Aggregation none: one event attempt per parsed packet.
    assert_eq!(submitted + lost, packets - u(c, "packets_truncated"), "{c}");
    assert!(u(c, "records_read") <= submitted, "{c}");
    assert_eq!(u(c, "records_malformed"), 0, "{c}");
    Ok(())
}

/// flowd programs attached (TCX ingress/egress, XDP) on an interface of `ns`.
fn attached_programs(ns: &Netns, ifname: &'static str) -> Result<Vec<String>> {
    let mut names = ns.run(move || -> Result<Vec<String>> {
        let mut v = Vec::new();
        for t in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, progs) = SchedClassifier::query_tcx(ifname, t)?;
            v.extend(
                progs
                    .iter()
                    .map(|p| format!("tcx:{}", String::from_utf8_lossy(p.name()))),
            );
        }
        Ok(v)
    })??;
    let link: Value = serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", ifname])?)?;
    if let Some(x) = link[0].get("xdp") {
        names.push(format!("xdp:{x}"));
    }
    let tc = ns
        .command("tc")
        .args(["filter", "show", "dev", ifname, "ingress"])
        .output()?;
    let tc = String::from_utf8_lossy(&tc.stdout);
    if tc.contains("flowd") {
        names.push(format!("clsact:{tc}"));
    }
    Ok(names)
}

#[test]
fn nothing_stays_attached_after_sigkill() -> Result<()> {
    let pair = Pair::create("kill")?;
    let x = VethPair::create(&pair.a, "veth-x", &pair.b, "veth-y")?;
    let mut flowd = Flowd::start(
        bin(),
        &pair.a,
        &["-i", "veth-a", "-i", "veth-x=xdp-generic"],
    )?;
    pair.up()?;
    link_up(&pair.a, &x.a)?;
    let on_a = attached_programs(&pair.a, "veth-a")?;
    assert_eq!(on_a.len(), 2, "TC ingress + egress on veth-a: {on_a:?}");
    assert!(
        on_a.iter().all(|p| p.starts_with("tcx:flowd_tc_")),
        "{on_a:?}"
    );
    assert_eq!(
        attached_programs(&pair.a, "veth-x")?.len(),
        1,
        "XDP on veth-x"
    );
    flowd.child.stop(Signal::SIGKILL, Duration::from_secs(10))?;
    for dev in ["veth-a", "veth-x"] {
        wait_until(
            &format!("no program on {dev} after SIGKILL"),
            Duration::from_secs(10),
            || Ok(attached_programs(&pair.a, dev)?.is_empty().then_some(())),
        )?;
    }
    Ok(())
}

/// Attaches the object's empty TC programs (pass-through, TCX_NEXT) to both
/// hooks of `ifname`, first or last in their chains, standing in for another
/// tool's programs (a CNI's, say). They stay attached while the returned
/// `Ebpf` lives.
fn other_tool(ns: &Netns, ifname: &'static str, first: bool) -> Result<Ebpf> {
    ns.run(move || -> Result<Ebpf> {
        let order = || {
            if first {
                LinkOrder::first()
            } else {
                LinkOrder::last()
            }
        };
        let mut ebpf = Ebpf::load(flowd::datapath::EBPF_OBJECT)?;
        for (name, hook) in [
            ("bench_ing_empty", TcAttachType::Ingress),
            ("bench_egr_empty", TcAttachType::Egress),
        ] {
            let p: &mut SchedClassifier = ebpf.program_mut(name).context(name)?.try_into()?;
            p.load()?;
            p.attach_with_options(ifname, hook, TcAttachOptions::TcxOrder(order()))?;
        }
        Ok(ebpf)
    })?
}

/// flowd next to other TCX programs on the same hooks, as beside a CNI that
/// uses TCX: flowd appends after a program that was there first, a program
/// attached later after it still runs on every packet (flowd's programs
/// return TCX_NEXT), flowd counts exactly, and stopping flowd leaves the
/// other programs attached. With run-time statistics on from before the link
/// comes up until after it goes down, all three programs of a hook count the
/// same runs.
#[test]
fn flowd_coexists_with_other_tcx_programs() -> Result<()> {
    const PINGS: u16 = 7;
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let pair = Pair::create("chain")?;
    let _before = other_tool(&pair.a, "veth-a", true)?;
    let mut flowd = Flowd::start(bin(), &pair.a, &["-i", "veth-a"])?;
    let _after = other_tool(&pair.a, "veth-a", false)?;
    pair.up()?;
    let b: IpAddr = Pair::B4.parse()?;
    let got = pair.a.run(move || net::ping(b, PINGS, 32))??;
    ensure!(got == PINGS, "ping replies {got} of {PINGS}");
    // No packet (IPv6 router solicitations, say) may run between the reads
    // of the three programs' counters.
    pair.a.ip(&["link", "set", "dev", "veth-a", "down"])?;
    let chains = || {
        pair.a.run(|| -> Result<Vec<Vec<(String, u64)>>> {
            [TcAttachType::Ingress, TcAttachType::Egress]
                .into_iter()
                .map(|t| {
                    let (_, progs) = SchedClassifier::query_tcx("veth-a", t)?;
                    Ok(progs
                        .iter()
                        .map(|p| {
                            (
                                String::from_utf8_lossy(p.name()).into_owned(),
                                p.run_count(),
                            )
                        })
                        .collect())
                })
                .collect()
        })?
    };
    let running = chains()?;
    let dump = flowd.stop()?;
    // The kernel keeps 15 characters of a program's name.
    for (chain, (other, ours)) in running.iter().zip([
        ("bench_ing_empty", "flowd_tc_ingres"),
        ("bench_egr_empty", "flowd_tc_egress"),
    ]) {
        let names: Vec<&str> = chain.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [other, ours, other], "TCX chain");
        assert!(
            chain.iter().all(|(_, c)| *c == chain[0].1) && chain[0].1 >= u64::from(PINGS),
            "every program runs on every packet: {chain:?}"
        );
    }
    let icmp: Vec<&Value> = dump["flows"]
        .as_array()
        .context("flows")?
        .iter()
        .filter(|f| f["protocol"] == "ICMPv4")
        .collect();
    assert_eq!(icmp.len(), 2, "{icmp:?}");
    for f in icmp {
        assert_eq!(f["packets"], u64::from(PINGS), "{f}");
    }
    for (chain, other) in chains()?.iter().zip(["bench_ing_empty", "bench_egr_empty"]) {
        let names: Vec<&str> = chain.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [other, other], "after flowd stopped");
    }
    Ok(())
}

/// Names of the TC filters on a clsact hook of `ifname` ("ingress"/"egress").
fn clsact_filters(ns: &Netns, ifname: &str, hook: &str) -> Result<Vec<String>> {
    let out = ns
        .command("tc")
        .args(["-j", "filter", "show", "dev", ifname, hook])
        .output()?;
    ensure!(out.status.success(), "tc filter show: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // No clsact qdisc at all: tc prints nothing.
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(&text).with_context(|| format!("tc -j output {text}"))?;
    // One entry per filter with options (the chain head has none).
    Ok(v.as_array()
        .context("tc -j: not an array")?
        .iter()
        .filter_map(|f| f["options"]["bpf_name"].as_str())
        .map(|n| n.split(':').next().unwrap_or(n).to_owned())
        .collect())
}

fn clsact_both(ns: &Netns) -> Result<(Vec<String>, Vec<String>)> {
    Ok((
        clsact_filters(ns, "veth-a", "ingress")?,
        clsact_filters(ns, "veth-a", "egress")?,
    ))
}

/// The legacy TC path (kernels without TCX), forced by FLOWD_TC_MECHANISM:
/// flows are seen, SIGTERM removes the filters, and the filters a SIGKILL
/// leaves behind are reclaimed by the next start (exactly one per hook).
#[test]
fn clsact_fallback_attaches_detaches_and_reclaims_after_sigkill() -> Result<()> {
    let pair = Pair::create("cls")?;
    let env = [("FLOWD_TC_MECHANISM", "clsact")];
    let start = || Flowd::start_env(bin(), &pair.a, &["-i", "veth-a"], &env);
    let ours = || {
        (
            vec!["flowd_tc_ingress".to_owned()],
            vec!["flowd_tc_egress".to_owned()],
        )
    };
    let (a, b): (IpAddr, IpAddr) = (Pair::A4.parse()?, Pair::B4.parse()?);
    let pings = |n: u16| -> Result<()> {
        let got = pair.a.run(move || net::ping(b, n, 32))??;
        ensure!(got == n, "ping replies {got} of {n}");
        Ok(())
    };
    let check_flows = |dump: &Value, n: u64| -> Result<()> {
        let flows = dump["flows"].as_array().context("no flows")?;
        let req = flow(flows, "veth-a", "egress", "ICMPv4", (a, 8), (b, 0))?;
        let rep = flow(flows, "veth-a", "ingress", "ICMPv4", (b, 0), (a, 0))?;
        for f in [req, rep] {
            ensure!(u(f, "packets") == n, "{f}");
            ensure!(u(f, "bytes") == n * (ETH + 20 + ICMP_HDR + 32), "{f}");
        }
        Ok(())
    };

    let mut flowd = start()?;
    ensure!(
        flowd
            .events()
            .iter()
            // The "ready" line lists what is attached; a separate "attached"
            // line may still be on its way (ordering between them is not fixed).
            .any(|e| matches!(s(e, "event").as_str(), "attached" | "ready")
                && e.to_string().contains("\"mechanism\":\"clsact\"")),
        "no clsact attach event: {:?}",
        flowd.events()
    );
    pair.up()?;
    ensure!(
        clsact_both(&pair.a)? == ours(),
        "{:?}",
        clsact_both(&pair.a)?
    );
    pings(3)?;
    check_flows(&flowd.stop()?, 3)?;
    ensure!(
        clsact_both(&pair.a)? == (vec![], vec![]),
        "filters left after SIGTERM: {:?}",
        clsact_both(&pair.a)?
    );

    // SIGKILL: netlink filters outlive the process ...
    let mut killed = start()?;
    killed
        .child
        .stop(Signal::SIGKILL, Duration::from_secs(10))?;
    ensure!(
        clsact_both(&pair.a)? == ours(),
        "{:?}",
        clsact_both(&pair.a)?
    );
    // ... and the next start replaces them instead of adding its own.
    let mut flowd = start()?;
    ensure!(
        clsact_both(&pair.a)? == ours(),
        "{:?}",
        clsact_both(&pair.a)?
    );
    pings(2)?;
    check_flows(&flowd.stop()?, 2)?;
    ensure!(
        clsact_both(&pair.a)? == (vec![], vec![]),
        "filters left after SIGTERM: {:?}",
        clsact_both(&pair.a)?
    );
    Ok(())
}

#[test]
fn interfaces_created_later_are_attached_by_glob() -> Result<()> {
    let a = Netns::new("hot")?;
    let b = Netns::new("hotb")?;
    let mut flowd = Flowd::start(bin(), &a, &["-i", "hv*"])?;
    let v = VethPair::create(&a, "hv0", &b, "peer0")?;
    flowd
        .child
        .stdout
        .wait_for("attach to hv0", Duration::from_secs(10), |l| {
            l.contains("\"event\":\"attached\"") && l.contains("\"hv0\"")
        })?;
    ensure!(
        attached_programs(&a, "hv0")?.len() == 2,
        "TC programs on hv0"
    );
    a.ip(&["link", "del", &v.a])?;
    flowd
        .child
        .stdout
        .wait_for("hv0 forgotten", Duration::from_secs(10), |l| {
            l.contains("\"event\":\"detached\"") && l.contains("\"hv0\"")
        })?;
    flowd.stop()?;
    Ok(())
}

/// `ip -j link` reports XDP mode 1 (driver) or 2 (generic/SKB).
fn xdp_smoke(mode: &str, ip_mode: u64) -> Result<()> {
    let pair = Pair::create("xdp")?;
    let spec = format!("veth-a={mode}");
    let mut flowd = Flowd::start(bin(), &pair.a, &["-i", &spec])?;
    pair.up()?;
    let link: Value = serde_json::from_str(&pair.a.ip(&["-j", "link", "show", "dev", "veth-a"])?)?;
    let xdp = &link[0]["xdp"];
    ensure!(
        xdp["mode"].as_u64() == Some(ip_mode) && s(&xdp["prog"], "name") == "flowd_xdp",
        "flowd_xdp not attached in mode {ip_mode}: {link}"
    );
    let b: IpAddr = Pair::B4.parse()?;
    let a: IpAddr = Pair::A4.parse()?;
    let got = pair.a.run(move || net::ping(b, 3, 32))??;
    ensure!(got == 3, "ping replies {got}");
    let dump = flowd.stop()?;
    let flows = dump["flows"].as_array().context("no flows")?;
    // XDP sees ingress only: the three echo replies.
    let f = flow(flows, "veth-a", "ingress", "ICMPv4", (b, 0), (a, 0))?;
    assert_eq!(u(f, "packets"), 3);
    assert_eq!(u(f, "bytes"), 3 * (ETH + 20 + ICMP_HDR + 32));
    let link: Value = serde_json::from_str(&pair.a.ip(&["-j", "link", "show", "dev", "veth-a"])?)?;
    ensure!(
        link[0].get("xdp").is_none(),
        "XDP still attached after SIGTERM: {link}"
    );
    Ok(())
}

#[test]
fn xdp_native_attach_detach() -> Result<()> {
    xdp_smoke("xdp", 1)
}

#[test]
fn xdp_generic_attach_detach() -> Result<()> {
    xdp_smoke("xdp-generic", 2)
}

/// A bulk TCP transfer into the observed veth: the data direction's packets
/// are the sender's segments, whatever the hook saw them as. TC sees GSO
/// buffers and generic XDP GSO/GRO aggregates (tens of segments per run);
/// native XDP on a veth sees wire packets.
fn bulk_counts_wire_segments(mode: Option<&str>) -> Result<()> {
    const TOTAL: usize = 8 << 20;
    let pair = Pair::create("bk")?;
    pin_tcp_options(&pair.a)?;
    pin_tcp_options(&pair.b)?;
    let spec = match mode {
        Some(m) => format!("veth-a={m}"),
        None => "veth-a".to_owned(),
    };
    let mut flowd = Flowd::start(bin(), &pair.a, &["-i", &spec])?;
    pair.up()?;
    let server_addr = SocketAddr::new(Pair::A4.parse()?, 5001);
    let listener = pair.a.run(move || TcpListener::bind(server_addr))??;
    let server = std::thread::spawn(move || -> Result<usize> {
        let (mut c, _) = listener.accept()?;
        let mut rest = Vec::new();
        Ok(c.read_to_end(&mut rest)?)
    });
    let mut c = pair
        .b
        .run(move || TcpStream::connect_timeout(&server_addr, Duration::from_secs(5)))??;
    let client = c.local_addr()?;
    let chunk = vec![b'd'; 256 << 10];
    for _ in 0..TOTAL / chunk.len() {
        c.write_all(&chunk)?;
    }
    c.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)?;
    drop(c);
    let got = server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    ensure!(got == TOTAL, "server read {got} of {TOTAL} bytes");
    // The receiver counts GSO/GRO aggregates as one InSeg, so the two sides'
    // counters do not agree here; the sender's OutSegs are wire segments.
    // Once the server's socket is gone, the client's last ACK has arrived.
    tcp_sockets_gone(&pair.a)?;
    let out_segs = |ns: &Netns| -> Result<i64> {
        tcp_counter(&ns.snmp()?, "OutSegs").context("no Tcp OutSegs")
    };
    let (a_segs, b_segs) = (out_segs(&pair.a)?, out_segs(&pair.b)?);

    let dump = flowd.stop()?;
    let flows = dump["flows"].as_array().context("no flows in dump")?;
    let per_pkt = ETH + 20 + TCP_HDR;
    let data = flow(
        flows,
        "veth-a",
        "ingress",
        "TCP",
        (client.ip(), client.port()),
        (server_addr.ip(), 5001),
    )?;
    assert_eq!(u(data, "packets"), b_segs as u64, "{spec}: data segments");
    assert_eq!(
        u(data, "bytes"),
        b_segs as u64 * per_pkt + MSS_OPT + TOTAL as u64,
        "{spec}: data bytes"
    );
    if mode.is_none() {
        let acks = flow(
            flows,
            "veth-a",
            "egress",
            "TCP",
            (server_addr.ip(), 5001),
            (client.ip(), client.port()),
        )?;
        assert_eq!(u(acks, "packets"), a_segs as u64, "{spec}: ACK segments");
        assert_eq!(u(acks, "bytes"), a_segs as u64 * per_pkt + MSS_OPT);
    }
    // The runs that carried them: fewer than the packets wherever the hook
    // sees aggregates, so the test exercised the segment count.
    let runs = u(&dump["counters"], "packets");
    let packets: u64 = flows.iter().map(|f| u(f, "packets")).sum();
    if mode != Some("xdp") {
        ensure!(
            runs * 4 < packets,
            "{spec}: {runs} runs for {packets} packets: no aggregates seen"
        );
    }
    Ok(())
}

#[test]
fn bulk_tcp_counts_wire_segments_tc() -> Result<()> {
    bulk_counts_wire_segments(None)
}

#[test]
fn bulk_tcp_counts_wire_segments_xdp_generic() -> Result<()> {
    bulk_counts_wire_segments(Some("xdp-generic"))
}

#[test]
fn bulk_tcp_counts_wire_segments_xdp_native() -> Result<()> {
    bulk_counts_wire_segments(Some("xdp"))
}

#[test]
fn bad_arguments_are_refused_with_a_clear_error() -> Result<()> {
    for (args, want) in [
        (vec!["-i", "veth0=bogus"], "attach mode"),
        (
            vec!["-i", "v", "--ring-buffer-bytes", "5000"],
            "power of two",
        ),
        (
            vec!["-i", "v", "--aggregation-interval", "soon"],
            "duration",
        ),
        (vec![], "no interface"),
    ] {
        let out = std::process::Command::new(bin()).args(&args).output()?;
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    Ok(())
}

// Silence an unused-import warning when building with a subset of tests.
#[allow(dead_code)]
fn _uses(_: &dyn Fn(&Netns, &str) -> Result<()>) {
    let _ = add_addr;
    let _ = wait_oper_up;
}
