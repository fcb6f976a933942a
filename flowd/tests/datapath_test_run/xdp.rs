//! XDP multi-buffer frames, and the empty programs the benchmarks compare with.
use super::*;

/// XDP multi-buffer: with more than a page of data BPF_PROG_TEST_RUN puts
/// the tail in fragments. Large IPv6 extension headers push the TCP header
/// and the HTTP payload there, so parsing and the L7 copy go through
/// bpf_xdp_load_bytes across the fragment boundary.
#[test]
fn xdp_multi_buffer_headers_and_payload_in_fragments() -> Result<()> {
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(raw_ext(255)),
        destination_options: Some(raw_ext(255)),
        ..Default::default()
    };
    let req = http_request("GET");
    let b = eth()
        .ip(IpHeaders::Ipv6(ipv6_hdr(), exts))
        .tcp_header(TcpHeader::new(7000, 80, 5, 100));
    let pkt = finish_tcp(b, &req);
    ensure!(pkt.len() > 4096 + 54, "packet {} bytes", pkt.len());
    let mut dp = Dp::new(Hook::Xdp, LONG, 512)?;
    dp.run(&pkt)?;
    let (k, s) = dp.only_flow()?;
    ensure!(k == dp.key6(PROTO_TCP, 7000, 80));
    ensure!(
        s.bytes == pkt.len() as u64,
        "bytes {} want {}",
        s.bytes,
        pkt.len()
    );
    let l7 = dp.l7_events()?;
    ensure!(l7.len() == 1);
    check_l7(&l7[0], L7_HTTP_REQUEST, 1, &req, req.len())
}

/// Frames whose payload continues in fragments, as later packets of a cached
/// flow: the hit path counts the whole frame (it asks the buffer's length only
/// when the IP packet does not end in the linear part). The test device's MTU
/// (loopback's) is above the frame, so each counts as one packet.
#[test]
fn xdp_multi_buffer_hits_count_the_whole_frame() -> Result<()> {
    let mut dp = Dp::new(Hook::Xdp, LONG, 0)?;
    for v6 in [false, true] {
        dp.reset()?;
        let pkt = tcp_pkt(v6, 7100, 7200, TCP_ACK, 1, &[b'z'; 6000]);
        let runs = 3;
        for _ in 0..runs {
            dp.run(&pkt)?;
        }
        let (_, s) = dp.only_flow()?;
        ensure!(
            s.packets == runs && s.bytes == runs * pkt.len() as u64,
            "v6 {v6}: {s:?}, want {runs} × {} bytes",
            pkt.len()
        );
        let c = dp.counters()?;
        ensure!(
            c[CNT_FULL_PATH_RUNS as usize] == 1,
            "v6 {v6}: {} full-path runs, want 1 (then hits)",
            c[CNT_FULL_PATH_RUNS as usize]
        );
    }
    Ok(())
}

/// The benchmark baselines load and pass everything.
#[test]
fn empty_programs_pass() -> Result<()> {
    let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT)?;
    let pkt = udp_pkt(false, 1, 2, b"x");
    for name in [names::PROG_TC_EMPTY_INGRESS, names::PROG_TC_EMPTY_EGRESS] {
        let p: &mut SchedClassifier = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing"))?
            .try_into()?;
        p.load()?;
        let r = p.test_run(TestRunOptions {
            data_in: Some(&pkt),
            ..TestRunOptions::default()
        })?;
        ensure!(
            r.return_value == TC_ACT_UNSPEC,
            "{name}: {}",
            r.return_value
        );
    }
    let p: &mut Xdp = ebpf
        .program_mut(names::PROG_XDP_EMPTY)
        .context("xdp empty")?
        .try_into()?;
    p.load()?;
    let r = p.test_run(TestRunOptions {
        data_in: Some(&pkt),
        ..TestRunOptions::default()
    })?;
    ensure!(r.return_value == XDP_PASS);
    Ok(())
}
