//! L7 capture: HTTP/1.x requests and responses, probing, bounds, DNS.
use super::*;

const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

#[test]
fn http_requests_and_responses() -> Result<()> {
    for_hooks(|dp| {
        for (i, m) in METHODS.iter().enumerate() {
            let req = http_request(m);
            // Any TCP port: HTTP is recognised by its first bytes.
            let port = if i % 2 == 0 { 80 } else { 8080 };
            let seq = 1000 + i as u32;
            dp.run(&tcp_pkt(
                i % 3 == 0,
                50000 + i as u16,
                port,
                TCP_ACK | TCP_PSH,
                seq,
                &req,
            ))?;
            let evs = dp.events()?;
            ensure!(evs.len() == 2, "{m}: {evs:?}");
            let Event::Flow(f) = &evs[0] else {
                bail!("{m}: first event not the flow")
            };
            ensure!(f.header.kind == EV_NEW_FLOW);
            let Event::L7(l) = &evs[1] else {
                bail!("{m}: no L7 event")
            };
            check_l7(l, L7_HTTP_REQUEST, 1, &req, req.len())?;
            ensure!(
                l.key == f.key && l.tcp_seq == seq && l._pad == [0; 4],
                "{m}: key/seq"
            );
            ensure!(
                l.header.ts_ns == f.header.ts_ns,
                "{m}: same packet, same time"
            );
        }
        let resp = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        dp.run(&tcp_pkt(false, 80, 50000, TCP_ACK | TCP_PSH, 9, resp))?;
        let l7 = dp.l7_events()?;
        ensure!(l7.len() == 1);
        check_l7(&l7[0], L7_HTTP_RESPONSE, 1, resp, resp.len())?;
        let c = dp.counters()?;
        ensure!(
            c[CNT_L7_EVENTS as usize] == 10 && c[CNT_EVENTS_SUBMITTED as usize] == 20,
            "{c:?}"
        );
        Ok(())
    })
}

/// A connection seen from its start is probed for HTTP/DNS on its first
/// payload only when that payload is neither (bulk transfers, TLS, … cost no
/// probe per packet); HTTP connections keep being probed (keep-alive), and
/// connections seen from the middle are probed on every payload.
#[test]
fn l7_probing_follows_the_first_payload_of_a_connection() -> Result<()> {
    for_hooks(|dp| {
        let req = http_request("GET");
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        // Starts with another protocol: a later HTTP-looking payload is not captured.
        dp.run(&tcp_pkt(false, 41000, 80, TCP_SYN, 1, &[]))?;
        dp.run(&tcp_pkt(
            false,
            41000,
            80,
            TCP_ACK | TCP_PSH,
            2,
            b"SSH-2.0-OpenSSH_9.6\r\n",
        ))?;
        dp.run(&tcp_pkt(false, 41000, 80, TCP_ACK | TCP_PSH, 23, &req))?;
        // Starts with HTTP: every request of the connection is captured, bodies are not.
        dp.run(&tcp_pkt(false, 41001, 80, TCP_SYN, 1, &[]))?;
        dp.run(&tcp_pkt(false, 41001, 80, TCP_ACK | TCP_PSH, 2, &req))?;
        dp.run(&tcp_pkt(
            false,
            41001,
            80,
            TCP_ACK | TCP_PSH,
            100,
            &[b'x'; 200],
        ))?;
        dp.run(&tcp_pkt(false, 41001, 80, TCP_ACK | TCP_PSH, 300, &req))?;
        // The server side starts with SYN-ACK and answers with HTTP.
        dp.run(&tcp_pkt(false, 80, 41001, TCP_SYN | TCP_ACK, 1, &[]))?;
        dp.run(&tcp_pkt(false, 80, 41001, TCP_ACK | TCP_PSH, 2, resp))?;
        // A first payload too short to tell decides nothing.
        dp.run(&tcp_pkt(false, 41003, 80, TCP_SYN, 1, &[]))?;
        dp.run(&tcp_pkt(
            false,
            41003,
            80,
            TCP_ACK | TCP_PSH,
            2,
            b"\x00\x2a",
        ))?;
        dp.run(&tcp_pkt(false, 41003, 80, TCP_ACK | TCP_PSH, 4, &req))?;
        // Seen from the middle: probed every time.
        dp.run(&tcp_pkt(
            false,
            41002,
            80,
            TCP_ACK | TCP_PSH,
            5,
            b"tail of a body",
        ))?;
        dp.run(&tcp_pkt(false, 41002, 80, TCP_ACK | TCP_PSH, 19, &req))?;

        let got: Vec<(u16, u16, u8)> = dp
            .l7_events()?
            .iter()
            .map(|l| (l.key.src_port, l.key.dst_port, l.l7_kind))
            .collect();
        ensure!(
            got == [
                (41001, 80, L7_HTTP_REQUEST),
                (41001, 80, L7_HTTP_REQUEST),
                (80, 41001, L7_HTTP_RESPONSE),
                (41003, 80, L7_HTTP_REQUEST),
                (41002, 80, L7_HTTP_REQUEST),
            ],
            "{got:?}"
        );
        let state = |sport, dport| -> Result<u8> {
            let want = dp.key4(PROTO_TCP, sport, dport);
            let flows = dp.flows()?;
            let (_, s) = flows
                .iter()
                .find(|(k, _)| *k == want)
                .with_context(|| format!("no flow {sport}->{dport}"))?;
            Ok(s.l7_state)
        };
        ensure!(state(41000, 80)? == FLOW_L7_PROBED | FLOW_L7_OFF);
        ensure!(state(41001, 80)? == FLOW_L7_PROBED);
        ensure!(state(80, 41001)? == FLOW_L7_PROBED);
        ensure!(state(41003, 80)? == FLOW_L7_PROBED);
        // TC also asked the HTTP/2 walker once: port 80 is no HTTP/2 port,
        // so it is not asked again (HTTP probing goes on, as seen above).
        let mid = if dp.hook == Hook::Xdp {
            0
        } else {
            flowd_common::FLOW_L7_NO_H2
        };
        ensure!(state(41002, 80)? == mid);
        Ok(())
    })
}

#[test]
fn non_http_payloads_give_no_l7_event() -> Result<()> {
    for_hooks(|dp| {
        for p in [
            &b"GETX / HTTP/1.1\r\n\r\n"[..],
            b"get / HTTP/1.1\r\n\r\n",
            b"HTTP/2.0 200\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET /",
            b"hello world, this is not http",
            b"GET\t/ HTTP/1.1\r\n",
        ] {
            dp.run(&tcp_pkt(false, 40001, 80, TCP_ACK | TCP_PSH, 1, p))?;
        }
        // HTTP over UDP is not HTTP/1.x.
        dp.run(&udp_pkt(false, 40001, 80, &http_request("GET")))?;
        // An HTTP-looking payload in a later IPv4 fragment is not looked at.
        let mut ip = ipv4_hdr(IpNumber::TCP);
        ip.fragment_offset = IpFragOffset::try_new(3)?;
        dp.run(&ip_raw_pkt(
            IpHeaders::Ipv4(ip, Default::default()),
            IpNumber::TCP,
            &http_request("GET"),
        ))?;
        ensure!(dp.l7_events()?.is_empty());
        ensure!(dp.counters()?[CNT_L7_EVENTS as usize] == 0);
        Ok(())
    })
}

#[test]
fn l7_copy_is_bounded_and_can_be_disabled() -> Result<()> {
    let mut body = http_request("POST");
    body.extend(std::iter::repeat_n(b'z', 1200));
    for_hooks(|dp| {
        for (max, want) in [
            (1u32, 1usize),
            (16, 16),
            (300, 300),
            (512, 512),
            (4096, L7_MAX_PAYLOAD),
        ] {
            dp.set_config(LONG, max)?;
            dp.run(&tcp_pkt(true, 1, 80, TCP_ACK, 1, &body))?;
            let l7 = dp.l7_events()?;
            ensure!(l7.len() == 1, "max {max}: {l7:?}");
            check_l7(&l7[0], L7_HTTP_REQUEST, 1, &body[..want], body.len())?;
        }
        // A payload shorter than the maximum is copied whole.
        let req = http_request("HEAD");
        dp.set_config(LONG, 512)?;
        dp.run(&tcp_pkt(false, 1, 80, TCP_ACK, 1, &req))?;
        check_l7(
            dp.l7_events()?.first().context("no L7 event")?,
            L7_HTTP_REQUEST,
            1,
            &req,
            req.len(),
        )?;
        // 0 disables L7 capture; the flow is still recorded.
        dp.reset()?;
        dp.set_config(LONG, 0)?;
        dp.run(&tcp_pkt(true, 1, 80, TCP_ACK, 1, &body))?;
        let evs = dp.events()?;
        ensure!(
            evs.len() == 1 && matches!(evs[0], Event::Flow(_)),
            "{evs:?}"
        );
        ensure!(dp.counters()?[CNT_L7_EVENTS as usize] == 0);
        Ok(())
    })
}

#[test]
fn dns_over_udp_and_tcp() -> Result<()> {
    let q = dns_query(
        0x1234,
        "inventory.ecommerce.svc.cluster.local.",
        RecordType::AAAA,
    );
    let r = dns_response(0x1234, "inventory.ecommerce.svc.cluster.local.");
    for_hooks(|dp| {
        // UDP on 53, query and response, IPv4 and IPv6.
        for v6 in [false, true] {
            dp.run(&udp_pkt(v6, 40000, 53, &q))?;
            dp.run(&udp_pkt(v6, 53, 40000, &r))?;
        }
        let l7 = dp.l7_events()?;
        ensure!(l7.len() == 4, "{l7:?}");
        for (i, ev) in l7.iter().enumerate() {
            let msg = if i % 2 == 0 { &q } else { &r };
            check_l7(ev, L7_DNS, 0, msg, msg.len())?;
            ensure!(ev.tcp_seq == 0);
        }
        // TCP on 53: the 2-byte length prefix is skipped.
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        dp.run(&tcp_pkt(false, 40001, 53, TCP_ACK | TCP_PSH, 77, &framed))?;
        let l7 = dp.l7_events()?;
        ensure!(l7.len() == 1);
        check_l7(&l7[0], L7_DNS, 1, &q, framed.len())?;
        ensure!(l7[0].tcp_seq == 77);
        ensure!(dp.counters()?[CNT_L7_EVENTS as usize] == 5);
        Ok(())
    })
}

#[test]
fn dns_on_extra_ports_only_when_configured() -> Result<()> {
    let q = dns_query(7, "example.org.", RecordType::A);
    for_hooks(|dp| {
        dp.run(&udp_pkt(false, 40000, 5353, &q))?;
        ensure!(dp.l7_events()?.is_empty(), "5353 before configuring");
        dp.set_dns_port(5353)?;
        dp.run(&udp_pkt(false, 40000, 5353, &q))?;
        dp.run(&udp_pkt(false, 5353, 40000, &q))?;
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        dp.run(&tcp_pkt(true, 40000, 5353, TCP_ACK, 1, &framed))?;
        let l7 = dp.l7_events()?;
        ensure!(l7.len() == 3, "{l7:?}");
        check_l7(&l7[0], L7_DNS, 0, &q, q.len())?;
        check_l7(&l7[1], L7_DNS, 0, &q, q.len())?;
        check_l7(&l7[2], L7_DNS, 1, &q, framed.len())?;
        // Other ports stay silent.
        dp.run(&udp_pkt(false, 40000, 5300, &q))?;
        ensure!(dp.l7_events()?.is_empty());
        Ok(())
    })
}

#[test]
fn garbage_on_dns_port_gives_no_l7_event() -> Result<()> {
    let q = dns_query(7, "example.org.", RecordType::A);
    for_hooks(|dp| {
        let mut bad_qd = q.clone();
        bad_qd[4..6].copy_from_slice(&0u16.to_be_bytes()); // QDCOUNT 0
        let mut many_qd = q.clone();
        many_qd[4..6].copy_from_slice(&5u16.to_be_bytes()); // QDCOUNT 5
        let mut bad_op = q.clone();
        bad_op[2] |= 0x3 << 3; // opcode 3 (unassigned)
        let mut bad_z = q.clone();
        bad_z[3] |= 0x40; // Z bit
        let mut huge_an = q.clone();
        huge_an[6..8].copy_from_slice(&0xffffu16.to_be_bytes());
        for p in [
            &bad_qd[..],
            &many_qd,
            &bad_op,
            &bad_z,
            &huge_an,
            &q[..16],
            &[0xffu8; 40][..],
        ] {
            dp.run(&udp_pkt(false, 40000, 53, p))?;
        }
        // DNS over TCP whose length prefix is too small for a message.
        let mut framed = 5u16.to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        dp.run(&tcp_pkt(false, 40000, 53, TCP_ACK, 1, &framed))?;
        ensure!(dp.l7_events()?.is_empty());
        Ok(())
    })
}
