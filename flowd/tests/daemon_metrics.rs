//! flowd's own metrics (docs/configuration.md, "flowd's own metrics") on a
//! running daemon, each with the value the test can compute from what it
//! did: the flow table's fill after N flows and its configured capacity, the
//! attached interfaces by mode, the events GetFlows readers lost (a follow
//! stream that does not read, a `--all` reader lapped by the writer) against
//! what the streams announced, export queue drops, and a deleted pod's
//! series. Root, like flowd.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod daemon_netns;
mod metrics_support;

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use daemon_netns::*;
use flowd_proto::flow::LostEventSource;
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::{
    GetFlowsRequest, ServerStatusRequest, get_flows_response::ResponseTypes,
};
use flowd_tests::flowd::TempDir;
use flowd_tests::{Pair, wait_until};
use metrics_support::Sample;

const WAIT: Duration = Duration::from_secs(30);

/// A UDP socket in `b` on `port` that never answers (so no ICMP errors).
fn udp_sink(pair: &Pair, port: u16) -> Result<std::net::UdpSocket> {
    pair.b
        .run(move || std::net::UdpSocket::bind(("10.200.0.2", port)))?
        .context("binding the UDP sink")
}

/// `flowd_flow_map_entries` counts the kernel table's entries: N distinct
/// UDP flows on a link that carries nothing else (IPv4 only, static
/// neighbours) give exactly N; the capacity is `flowd-flow-map-entries`.
/// `flowd_attached_interfaces{mode}` counts the interfaces of each mode and
/// follows an interface that goes away.
#[test]
fn flow_map_fill_and_attached_interfaces_by_mode() -> Result<()> {
    const N: u16 = 200;
    let pair = Pair::create("dmfm")?;
    pair.a
        .ip(&["link", "add", "xn0", "type", "veth", "peer", "name", "xn1"])?;
    pair.a
        .ip(&["link", "add", "xg0", "type", "veth", "peer", "name", "xg1"])?;
    let mut d = Daemon::start(
        &pair.a,
        "dm-fm",
        &[
            "-i",
            "veth-a",
            "-i",
            "xn0=xdp",
            "-i",
            "xg0=xdp-generic",
            "--set",
            "flowd-flow-map-entries=4096",
            "--set",
            "monitor-aggregation-interval=1h",
        ],
    )?;
    let modes = |s: &[Sample]| {
        ["tc", "xdp", "xdp-generic"]
            .map(|m| value(s, "flowd_attached_interfaces", &[("mode", m)]) as u64)
    };
    wait_metrics(&pair.a, "one interface per mode", WAIT, |s| {
        (modes(s) == [1, 1, 1]).then_some(())
    })?;

    quiet_up(&pair, true)?;
    let _sink = udp_sink(&pair, 9000)?;
    udp_from_ports(&pair.a, (20_000..20_000 + N).collect(), b_addr(9000))?;
    let s = wait_metrics(&pair.a, "N entries in the flow table", WAIT, |s| {
        (value(s, "flowd_flow_map_entries", &[]) as u64 == u64::from(N)).then(|| s.to_vec())
    })?;
    assert_eq!(value(&s, "flowd_flow_map_capacity", &[]), 4096.0);
    // The daemon reported them as flows too (one per entry).
    let f = flows(&pair.a)?;
    let udp: BTreeSet<u32> = f
        .iter()
        .filter(|f| ports(f).1 == 9000)
        .map(|f| ports(f).0)
        .collect();
    assert_eq!(udp.len(), usize::from(N), "{f:#?}");

    // An interface that goes away is no longer counted.
    pair.a.ip(&["link", "del", "xg0"])?;
    wait_metrics(&pair.a, "xdp-generic back to 0", WAIT, |s| {
        (modes(s) == [1, 1, 0]).then_some(())
    })?;
    d.alive()
}

/// Reads a follow or non-follow stream to its end or until `until` holds
/// for (flows read, events announced lost with HUBBLE_RING_BUFFER), which
/// it returns.
async fn drain(
    s: &mut tonic::Streaming<flowd_proto::observer::GetFlowsResponse>,
    until: impl Fn(u64, u64) -> bool,
) -> Result<(u64, u64)> {
    let (mut flows, mut lost) = (0u64, 0u64);
    while !until(flows, lost) {
        let Some(r) = tokio::time::timeout(WAIT, s.message())
            .await
            .context("stream silent")??
        else {
            break;
        };
        match r.response_types {
            Some(ResponseTypes::Flow(_)) => flows += 1,
            Some(ResponseTypes::LostEvents(l)) => {
                ensure!(
                    l.source == LostEventSource::HubbleRingBuffer as i32,
                    "unexpected loss source: {l:?}"
                );
                lost += l.num_events_lost;
            }
            other => anyhow::bail!("unexpected response {other:?}"),
        }
    }
    Ok((flows, lost))
}

/// A channel whose HTTP/2 stream window is tiny: what the client does not
/// read stays behind in the server, not in transit.
async fn slow_channel() -> Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(API.to_string())?
        .initial_stream_window_size(1024)
        .connect()
        .await?)
}

async fn seen_flows(c: &mut ObserverClient<tonic::transport::Channel>) -> Result<u64> {
    Ok(c.server_status(ServerStatusRequest {})
        .await?
        .into_inner()
        .seen_flows)
}

/// `hubble_lost_events_total{source}`: a follow stream that does not read
/// and a `--all` reader that the writer laps both lose flows in the flow
/// buffer; each is told how many (LostEvent HUBBLE_RING_BUFFER) and the
/// metric adds exactly what they were told. The kernel-ring source is
/// present from the start and equals the datapath's own loss counter;
/// Hubble's observer_events_queue source never appears (flowd's event queue
/// does not drop).
#[test]
fn lost_events_by_source() -> Result<()> {
    // Every packet is a flow event: many flows from little traffic.
    const BURST: u16 = 4000;
    let pair = Pair::create("dmlost")?;
    let mut d = Daemon::start(
        &pair.a,
        "dm-lost",
        &[
            "-i",
            "veth-a",
            "--set",
            "monitor-aggregation=none",
            "--set",
            "hubble-event-buffer-capacity=1023",
            "--set",
            "flowd-stream-queue-size=1",
        ],
    )?;
    let lost_metric = |s: &[Sample], src: &str| {
        metrics_support::get(s, "hubble_lost_events_total", &[("source", src)])
    };
    let s = scrape(&pair.a)?;
    assert_eq!(lost_metric(&s, "hubble_ring_buffer"), Some(0.0));
    assert_eq!(lost_metric(&s, "perf_event_ring_buffer"), Some(0.0));
    assert_eq!(lost_metric(&s, "observer_events_queue"), None);
    wait_until("flowd attached", WAIT, || {
        Ok((tcx_programs(&pair.a, "veth-a")? == (1, 1)).then_some(()))
    })?;
    quiet_up(&pair, true)?;
    let _sink = udp_sink(&pair, 9000)?;
    let send_burst = |port: u16| -> Result<()> {
        pair.a.run(move || -> Result<()> {
            let s = std::net::UdpSocket::bind(("10.200.0.1", port))?;
            for _ in 0..BURST {
                s.send_to(b"x", b_addr(9000))?;
            }
            Ok(())
        })?
    };

    // 1. A follow stream that does not read while BURST flows arrive.
    let ns = pair.a.name().to_string();
    let follow_lost = {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let reader = pair.a.spawn_thread(move || -> Result<(u64, u64)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut c = ObserverClient::new(slow_channel().await?);
                let mut s = c
                    .get_flows(GetFlowsRequest {
                        follow: true,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                ready_tx.send(())?;
                // Not reading until the burst is in the buffer.
                rx.recv()?;
                // Flows read + flows lost = what the stream had to deliver.
                let (f, l) = drain(&mut s, |f, l| f + l >= u64::from(BURST)).await?;
                Ok((f + l, l))
            })
        })?;
        ready_rx.recv_timeout(WAIT)?;
        let before = block_on_in(&pair.a, || async { seen_flows(&mut client().await?).await })?;
        send_burst(30_000)?;
        wait_until("the burst in the buffer", WAIT, || {
            let n = block_on_in(&pair.a, || async { seen_flows(&mut client().await?).await })?;
            Ok((n >= before + u64::from(BURST)).then_some(()))
        })?;
        tx.send(())?;
        let (total, lost) = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))???;
        assert_eq!(total, u64::from(BURST), "flows read + announced lost");
        assert!(lost > 0, "the slow follow stream lost nothing");
        lost
    };
    let s = wait_metrics(&pair.a, "the follow stream's losses", WAIT, |s| {
        (lost_metric(s, "hubble_ring_buffer")? as u64 >= follow_lost).then(|| s.to_vec())
    })?;
    assert_eq!(
        lost_metric(&s, "hubble_ring_buffer"),
        Some(follow_lost as f64),
        "the metric adds what the stream was told ({ns})"
    );

    // 2. A `--all` request (the whole buffer, 1023 flows) read one flow,
    // then the writer laps it with another burst.
    let lapped_lost = {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let reader = pair.a.spawn_thread(move || -> Result<(u64, u64)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut c = ObserverClient::new(slow_channel().await?);
                let mut s = c.get_flows(GetFlowsRequest::default()).await?.into_inner();
                let first = drain(&mut s, |f, _| f >= 1).await?;
                ready_tx.send(())?;
                rx.recv()?;
                let rest = drain(&mut s, |_, _| false).await?;
                Ok((first.0 + rest.0 + rest.1, rest.1))
            })
        })?;
        ready_rx.recv_timeout(WAIT)?;
        let before = block_on_in(&pair.a, || async { seen_flows(&mut client().await?).await })?;
        send_burst(30_001)?;
        wait_until("the second burst in the buffer", WAIT, || {
            let n = block_on_in(&pair.a, || async { seen_flows(&mut client().await?).await })?;
            Ok((n >= before + u64::from(BURST)).then_some(()))
        })?;
        tx.send(())?;
        let (total, lost) = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))???;
        assert_eq!(
            total, 1023,
            "the buffer it asked for: read + announced lost"
        );
        assert!(lost > 0, "the lapped reader lost nothing");
        lost
    };
    let s = wait_metrics(&pair.a, "the lapped reader's losses", WAIT, |s| {
        (lost_metric(s, "hubble_ring_buffer")? as u64 >= follow_lost + lapped_lost)
            .then(|| s.to_vec())
    })?;
    assert_eq!(
        lost_metric(&s, "hubble_ring_buffer"),
        Some((follow_lost + lapped_lost) as f64)
    );
    // The kernel ring (8 MiB) lost nothing, and says so in both metrics.
    assert_eq!(
        lost_metric(&s, "perf_event_ring_buffer"),
        Some(value(&s, "flowd_datapath_events_lost_total", &[]))
    );
    assert_eq!(lost_metric(&s, "observer_events_queue"), None);
    d.alive()
}

/// `flowd_export_events_dropped_total{reason="queue_full"}`: the export file
/// is a FIFO nobody reads yet, so the writer waits in open() and the queue
/// (`flowd-export-file-queue-size` 8) keeps the first 8 events: every later
/// flow is dropped and counted. Once a reader opens the FIFO, exactly those
/// 8 lines come out.
#[test]
fn export_queue_drops_are_counted() -> Result<()> {
    const N: u16 = 50;
    const QUEUE: u64 = 8;
    let dir = TempDir::new("dm-fifo")?;
    let fifo = dir.0.join("export.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    let pair = Pair::create("dmexp")?;
    let mut d = Daemon::start(
        &pair.a,
        "dm-exp",
        &[
            "-i",
            "veth-a",
            "--set",
            &format!("hubble-export-file-path={}", fifo.display()),
            "--set",
            &format!("flowd-export-file-queue-size={QUEUE}"),
            "--set",
            "monitor-aggregation-interval=1h",
        ],
    )?;
    wait_until("flowd attached", WAIT, || {
        Ok((tcx_programs(&pair.a, "veth-a")? == (1, 1)).then_some(()))
    })?;
    quiet_up(&pair, true)?;
    let _sink = udp_sink(&pair, 9000)?;
    udp_from_ports(&pair.a, (21_000..21_000 + N).collect(), b_addr(9000))?;
    let dropped = |s: &[Sample]| {
        value(
            s,
            "flowd_export_events_dropped_total",
            &[("sink", "file"), ("reason", "queue_full")],
        ) as u64
    };
    let s = wait_metrics(&pair.a, "N flows processed", WAIT, |s| {
        let processed = value(s, "flowd_flows_processed_total", &[]) as u64;
        (processed >= u64::from(N) && dropped(s) + QUEUE == processed).then(|| s.to_vec())
    })?;
    assert_eq!(
        dropped(&s),
        u64::from(N) - QUEUE,
        "the link carried only the test's flows"
    );
    assert_eq!(
        value(&s, "flowd_export_queue_length", &[("sink", "file")]) as u64,
        QUEUE
    );

    // A reader: the writer opens the FIFO and writes what was queued.
    let fifo2 = fifo.clone();
    let reader = std::thread::spawn(move || -> Result<String> {
        let mut f = std::fs::File::open(&fifo2)?;
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        Ok(text)
    });
    wait_metrics(&pair.a, "the queued events written", WAIT, |s| {
        (value(s, "flowd_export_events_total", &[("sink", "file")]) as u64 == QUEUE).then_some(())
    })?;
    d.alive()?;
    d.child
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(30))?;
    let text = reader
        .join()
        .map_err(|_| anyhow::anyhow!("FIFO reader panicked"))??;
    assert_eq!(text.lines().count() as u64, QUEUE, "{text}");
    Ok(())
}

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: cart-7
  namespace: shop
  uid: 22222222-0000-4000-9000-000000000007
  labels: {app: cart}
spec: {nodeName: elsewhere, containers: [{name: app, image: x}]}
status: {podIP: 10.200.0.2, podIPs: [{ip: 10.200.0.2}]}
"#;

/// A deleted pod's series go with the pod: the flows to pod shop/cart-7
/// (known from a manifest) make series naming it; removing the manifest
/// removes exactly those series (counted as expired), well before the
/// series TTL (1h).
#[test]
fn deleted_pod_series_are_removed() -> Result<()> {
    let dir = TempDir::new("dm-pods")?;
    let pod_file = dir.0.join("cart.yaml");
    std::fs::write(&pod_file, POD)?;
    let pair = Pair::create("dmpod")?;
    let mut d = Daemon::start(
        &pair.a,
        "dm-pod",
        &[
            "-i",
            "veth-a",
            "--set",
            &format!("flowd-manifests-dir={}", dir.0.display()),
            "--set",
            "hubble-metrics=flow:destinationContext=pod",
            "--set",
            "monitor-aggregation-interval=1h",
        ],
    )?;
    wait_until("flowd attached", WAIT, || {
        Ok((tcx_programs(&pair.a, "veth-a")? == (1, 1)).then_some(()))
    })?;
    quiet_up(&pair, true)?;
    let _sink = udp_sink(&pair, 9000)?;
    udp_from_ports(&pair.a, vec![22_000, 22_001], b_addr(9000))?;
    let naming = |s: &[Sample]| -> usize {
        s.iter()
            .filter(|x| x.labels.get("destination").map(String::as_str) == Some("shop/cart-7"))
            .count()
    };
    let s = wait_metrics(&pair.a, "series naming the pod", WAIT, |s| {
        (naming(s) > 0).then(|| s.to_vec())
    })?;
    let before = naming(&s);
    let expired_before = value(
        &s,
        "flowd_metrics_series_expired_total",
        &[("metric", "hubble_flows_processed_total")],
    );

    std::fs::remove_file(&pod_file)?;
    let s = wait_metrics(&pair.a, "the pod's series gone", WAIT, |s| {
        (naming(s) == 0).then(|| s.to_vec())
    })?;
    let expired = value(
        &s,
        "flowd_metrics_series_expired_total",
        &[("metric", "hubble_flows_processed_total")],
    ) - expired_before;
    assert_eq!(expired as usize, before, "removed series are counted");
    d.alive()
}

/// Sum of the samples of `name` whose label `label` is `value`.
fn sum_where(s: &[Sample], name: &str, label: &str, value: &str) -> f64 {
    s.iter()
        .filter(|x| x.name == name && x.labels.get(label).map(String::as_str) == Some(value))
        .map(|x| x.value)
        .sum()
}

/// The per-flow handlers the other daemon tests leave out, on real traffic,
/// with the values the traffic implies: icmp (one ping: one EchoRequest, one
/// EchoReply), the deprecated http handler (K exchanges and one request
/// never answered: K+1 requests counted on the REQUEST records, K responses
/// and K durations), dns (M exchanges, each answered with one A record:
/// M queries, M responses, M A response types), and the pairing table's
/// eviction of the unanswered request (`flowd-l7-pairing-timeout` 1s).
#[test]
fn handlers_on_real_traffic() -> Result<()> {
    const K: usize = 3;
    const M: u16 = 2;
    let pair = Pair::create("dmhdl")?;
    let mut d = Daemon::start(
        &pair.a,
        "dm-hdl",
        &[
            "-i",
            "veth-a",
            "--set",
            "hubble-metrics=icmp http dns:query",
            "--set",
            "flowd-l7-pairing-timeout=1s",
        ],
    )?;
    wait_until("flowd attached", WAIT, || {
        Ok((tcx_programs(&pair.a, "veth-a")? == (1, 1)).then_some(()))
    })?;
    quiet_up(&pair, true)?;
    assert_eq!(
        pair.a
            .run(|| flowd_tests::net::ping("10.200.0.2".parse()?, 1, 16))??,
        1
    );
    let server = http_server(&pair, K, None)?;
    for i in 0..K {
        ensure!(http_get(&pair.a, format!("/h{i}"))?.starts_with("HTTP/1.1 200"));
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))???;
    // A request nobody answers: the server reads it and keeps the socket.
    let silent = pair.b.run(|| std::net::TcpListener::bind(b_addr(8081)))??;
    let held = pair.a.run(|| -> Result<std::net::TcpStream> {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(b_addr(8081))?;
        s.write_all(b"GET /never HTTP/1.1\r\nHost: b\r\n\r\n")?;
        Ok(s)
    })??;
    let (_accepted, _) = silent.accept()?;
    let dns = dns_server(&pair, usize::from(M))?;
    dns_queries(&pair.a, M)?;
    dns.join().map_err(|_| anyhow::anyhow!("dns panicked"))??;

    let want = |s: &[Sample]| {
        let ic = |t: &str| value(s, "hubble_icmp_total", &[("family", "IPv4"), ("type", t)]);
        [
            ic("EchoRequest"),
            ic("EchoReply"),
            sum_where(s, "hubble_http_requests_total", "method", "GET"),
            sum_where(s, "hubble_http_responses_total", "status", "200"),
            metrics_support::sum(s, "hubble_http_request_duration_seconds_count"),
            metrics_support::sum(s, "hubble_dns_queries_total"),
            metrics_support::sum(s, "hubble_dns_responses_total"),
            sum_where(s, "hubble_dns_response_types_total", "type", "A"),
            value(
                s,
                "flowd_l7_pairing_evictions_total",
                &[("protocol", "http"), ("reason", "timeout")],
            ),
        ]
    };
    let (k, m) = (K as f64, f64::from(M));
    let expected = [1.0, 1.0, k + 1.0, k, k, m, m, m, 1.0];
    let s = wait_metrics(&pair.a, "every handler's count", WAIT, |s| {
        want(s)
            .iter()
            .zip(expected)
            .all(|(got, w)| *got >= w)
            .then(|| s.to_vec())
    })?;
    assert_eq!(want(&s), expected);
    // The response types carry the query and its qtypes (dns:query).
    assert_eq!(
        value(
            &s,
            "hubble_dns_response_types_total",
            &[("type", "A"), ("qtypes", "A"), ("query", "x.example.")]
        ),
        m
    );
    drop(held);
    d.alive()
}

/// `flowd-metrics-max-series` 2: UDP flows to three ports make two
/// port-distribution series; the third is refused and counted in
/// `flowd_metrics_series_refused_total{metric}`.
#[test]
fn series_cap_refuses_and_counts() -> Result<()> {
    let pair = Pair::create("dmcap")?;
    let mut d = Daemon::start(
        &pair.a,
        "dm-cap",
        &[
            "-i",
            "veth-a",
            "--set",
            "hubble-metrics=port-distribution",
            "--set",
            "flowd-metrics-max-series=2",
            "--set",
            "monitor-aggregation-interval=1h",
        ],
    )?;
    wait_until("flowd attached", WAIT, || {
        Ok((tcx_programs(&pair.a, "veth-a")? == (1, 1)).then_some(()))
    })?;
    quiet_up(&pair, true)?;
    let mut sinks = Vec::new();
    for (i, port) in [9001u16, 9002, 9003].into_iter().enumerate() {
        sinks.push(udp_sink(&pair, port)?);
        udp_from_ports(&pair.a, vec![24_000 + i as u16], b_addr(port))?;
    }
    let refused = |s: &[Sample]| {
        value(
            s,
            "flowd_metrics_series_refused_total",
            &[("metric", "hubble_port_distribution_total")],
        )
    };
    let s = wait_metrics(&pair.a, "a series refused", WAIT, |s| {
        (refused(s) >= 1.0).then(|| s.to_vec())
    })?;
    assert_eq!(refused(&s), 1.0);
    assert_eq!(
        metrics_support::count(&s, "hubble_port_distribution_total"),
        2
    );
    assert_eq!(
        metrics_support::sum(&s, "hubble_port_distribution_total"),
        2.0
    );
    d.alive()
}

/// What /proc says about a process: (start time s, vsize B, rss B, open
/// fds, cpu s).
fn proc_sample(pid: u32) -> Result<(f64, f64, f64, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("bad stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |n: usize| -> Result<f64> { Ok(f.get(n - 3).context("short stat")?.parse()?) };
    // SAFETY: sysconf has no preconditions.
    let (tck, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
        )
    };
    let btime: f64 = std::fs::read_to_string("/proc/stat")?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
        .context("no btime")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as f64;
    Ok((
        btime + get(22)? / tck,
        get(23)?,
        get(24)? * page,
        fds,
        (get(14)? + get(15)?) / tck,
    ))
}

/// The process_* metrics describe the flowd process itself: its start time
/// exactly as /proc gives it, and memory, file descriptors and CPU time
/// between what /proc says just before and just after the scrape.
#[test]
fn process_metrics_describe_the_daemon() -> Result<()> {
    let pair = Pair::create("dmproc")?;
    let mut d = Daemon::start(&pair.a, "dm-proc", &["-i", "veth-a"])?;
    let pid = d.child.pid().context("no pid")?;
    let before = proc_sample(pid)?;
    let s = scrape(&pair.a)?;
    let after = proc_sample(pid)?;
    let m = |n: &str| value(&s, n, &[]);
    let start = m("process_start_time_seconds");
    ensure!((start - before.0).abs() < 0.01, "{start} vs {}", before.0);
    let within = |name: &str, got: f64, a: f64, b: f64, slack: f64| -> Result<()> {
        let (lo, hi) = (a.min(b) * (1.0 - slack), a.max(b) * (1.0 + slack));
        ensure!(lo <= got && got <= hi, "{name} {got} not in {lo}..={hi}");
        Ok(())
    };
    within(
        "process_virtual_memory_bytes",
        m("process_virtual_memory_bytes"),
        before.1,
        after.1,
        0.05,
    )?;
    within(
        "process_resident_memory_bytes",
        m("process_resident_memory_bytes"),
        before.2,
        after.2,
        0.05,
    )?;
    // While the scrape runs, its connection and the listing of /proc/self/fd
    // are two more descriptors (the Go client's count has the same two),
    // and one of the daemon's periodic tasks may hold a transient one (a
    // /proc read, a map sample) at that instant.
    within(
        "process_open_fds",
        m("process_open_fds"),
        before.3,
        after.3 + 3.0,
        0.0,
    )?;
    within(
        "process_cpu_seconds_total",
        m("process_cpu_seconds_total"),
        before.4,
        after.4,
        0.0,
    )?;
    d.alive()
}
