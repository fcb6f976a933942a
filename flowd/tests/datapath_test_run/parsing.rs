//! Header parsing: protocols, VLANs, IP options, fragments, IPv6 extension
//! chains, and packets cut at every length.
use super::*;

#[test]
fn tcp_ipv4_and_ipv6_all_flags() -> Result<()> {
    let all =
        TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_ACK | TCP_URG | TCP_ECE | TCP_CWR | TCP_NS;
    for_hooks(|dp| {
        for v6 in [false, true] {
            for flags in [
                TCP_SYN,
                TCP_SYN | TCP_ACK,
                TCP_FIN,
                TCP_RST,
                TCP_NS,
                TCP_URG | TCP_ECE | TCP_CWR,
                all,
            ] {
                let pkt = tcp_pkt(v6, 40000, 80, flags, 7, &[]);
                let want = if v6 {
                    dp.key6(PROTO_TCP, 40000, 80)
                } else {
                    dp.key4(PROTO_TCP, 40000, 80)
                };
                let s = assert_one_flow(dp, &pkt, want)?;
                ensure!(
                    s.tcp_flags == flags,
                    "flags {:#x} want {flags:#x}",
                    s.tcp_flags
                );
            }
        }
        Ok(())
    })
}

#[test]
fn udp_ipv4_and_ipv6() -> Result<()> {
    for_hooks(|dp| {
        for v6 in [false, true] {
            let pkt = udp_pkt(v6, 5000, 6000, b"hello");
            let want = if v6 {
                dp.key6(PROTO_UDP, 5000, 6000)
            } else {
                dp.key4(PROTO_UDP, 5000, 6000)
            };
            let s = assert_one_flow(dp, &pkt, want)?;
            ensure!(s.tcp_flags == 0 && s.tcp_transitions == 0);
            let c = dp.counters()?;
            ensure!(
                c[CNT_PACKETS as usize] == 1 && c[CNT_PACKETS_OTHER as usize] == 0,
                "{c:?}"
            );
        }
        Ok(())
    })
}

#[test]
fn icmp_types_and_codes() -> Result<()> {
    use etherparse::{IcmpEchoHeader, Icmpv4Type, Icmpv6Type, icmpv4, icmpv6};
    let echo = IcmpEchoHeader { id: 1, seq: 2 };
    let v4: Vec<(Icmpv4Type, u16, u16)> = vec![
        (Icmpv4Type::EchoRequest(echo), 8, 0),
        (Icmpv4Type::EchoReply(echo), 0, 0),
        (
            Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port),
            3,
            3,
        ),
        (
            Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Host),
            3,
            1,
        ),
        (
            Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit),
            11,
            0,
        ),
        (
            Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::FragmentReassemblyTimeExceeded),
            11,
            1,
        ),
    ];
    let v6: Vec<(Icmpv6Type, u16, u16)> = vec![
        (Icmpv6Type::EchoRequest(echo), 128, 0),
        (Icmpv6Type::EchoReply(echo), 129, 0),
        (
            Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port),
            1,
            4,
        ),
        (Icmpv6Type::PacketTooBig { mtu: 1280 }, 2, 0),
        (
            Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded),
            3,
            0,
        ),
        (
            Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::FragmentReassemblyTimeExceeded),
            3,
            1,
        ),
    ];
    for_hooks(|dp| {
        for (t, ty, code) in &v4 {
            let mut pkt = Vec::new();
            eth()
                .ipv4(V4_A, V4_B, 64)
                .icmpv4(t.clone())
                .write(&mut pkt, &[0u8; 8])?;
            let want = dp.key4(PROTO_ICMP, *ty, *code);
            assert_one_flow(dp, &pkt, want)?;
        }
        for (t, ty, code) in &v6 {
            let mut pkt = Vec::new();
            eth()
                .ipv6(v6_a(), v6_b(), 64)
                .icmpv6(*t)
                .write(&mut pkt, &[0u8; 8])?;
            let want = dp.key6(PROTO_ICMPV6, *ty, *code);
            assert_one_flow(dp, &pkt, want)?;
        }
        Ok(())
    })
}

#[test]
fn sctp_ports() -> Result<()> {
    for_hooks(|dp| {
        let p4 = ip_raw_pkt(
            IpHeaders::Ipv4(ipv4_hdr(IpNumber::SCTP), Ipv4Extensions::default()),
            IpNumber::SCTP,
            &sctp_common(2905, 38412),
        );
        let want = dp.key4(PROTO_SCTP, 2905, 38412);
        assert_one_flow(dp, &p4, want)?;
        let p6 = ip_raw_pkt(
            IpHeaders::Ipv6(ipv6_hdr(), Ipv6Extensions::default()),
            IpNumber::SCTP,
            &sctp_common(2905, 38412),
        );
        let want = dp.key6(PROTO_SCTP, 2905, 38412);
        assert_one_flow(dp, &p6, want)?;
        Ok(())
    })
}

#[test]
fn other_protocols_are_counted() -> Result<()> {
    for_hooks(|dp| {
        // IP with a protocol without ports (GRE): key with the protocol, ports 0.
        let gre = ip_raw_pkt(
            IpHeaders::Ipv4(ipv4_hdr(IpNumber::GRE), Ipv4Extensions::default()),
            IpNumber::GRE,
            &[0, 0, 0x08, 0x00],
        );
        let want = dp.key4(47, 0, 0);
        assert_one_flow(dp, &gre, want)?;
        ensure!(dp.counters()?[CNT_PACKETS_OTHER as usize] == 1);

        // ARP: not IP, kept per EtherType with family 0.
        let arp = etherparse::ArpPacket::new(
            etherparse::ArpHardwareId::ETHERNET,
            etherparse::EtherType::IPV4,
            etherparse::ArpOperation::REQUEST,
            &MAC_A,
            &V4_A,
            &[0; 6],
            &V4_B,
        )?;
        let mut pkt = Vec::new();
        eth().arp(arp).write(&mut pkt)?;
        let want = FlowKey {
            src_port: 0x0806,
            ifindex: LO,
            direction: dp.hook.direction(),
            ..FlowKey::default()
        };
        assert_one_flow(dp, &pkt, want)?;
        let c = dp.counters()?;
        ensure!(
            c[CNT_PACKETS_OTHER as usize] == 1 && c[CNT_PACKETS as usize] == 1,
            "{c:?}"
        );

        // A bad IP version under the IPv4 EtherType: no key, counted as other.
        let mut bad = udp_pkt(false, 1, 2, b"x");
        bad[14] = 0x55;
        ensure!(single(dp, &bad)?.is_empty());
        ensure!(dp.counters()?[CNT_PACKETS_OTHER as usize] == 1);
        Ok(())
    })
}

#[test]
fn vlan_single_and_double() -> Result<()> {
    for_hooks(|dp| {
        for v6 in [false, true] {
            let base = if v6 {
                dp.key6(PROTO_UDP, 1, 2)
            } else {
                dp.key4(PROTO_UDP, 1, 2)
            };
            // 802.1Q
            let b = eth().single_vlan(vid(100));
            let b = if v6 {
                b.ipv6(v6_a(), v6_b(), 64).udp(1, 2)
            } else {
                b.ipv4(V4_A, V4_B, 64).udp(1, 2)
            };
            let mut pkt = Vec::new();
            b.write(&mut pkt, b"x")?;
            ensure!(pkt[12..14] == [0x81, 0x00]);
            assert_one_flow(dp, &pkt, with_vlan(base, 100))?;
            // 802.1ad outer + 802.1Q inner: the outer VLAN names the flow.
            let b = eth().double_vlan(vid(300), vid(42));
            let b = if v6 {
                b.ipv6(v6_a(), v6_b(), 64).udp(1, 2)
            } else {
                b.ipv4(V4_A, V4_B, 64).udp(1, 2)
            };
            let mut pkt = Vec::new();
            b.write(&mut pkt, b"x")?;
            ensure!(pkt[12..14] == [0x88, 0xa8] && pkt[16..18] == [0x81, 0x00]);
            assert_one_flow(dp, &pkt, with_vlan(base, 300))?;
            // The pre-standard 0x9100 outer tag is recognised as well.
            pkt[12..14].copy_from_slice(&[0x91, 0x00]);
            assert_one_flow(dp, &pkt, with_vlan(base, 300))?;
        }
        Ok(())
    })
}

#[test]
fn ipv4_options() -> Result<()> {
    for_hooks(|dp| {
        // IHL 6, 10 and 15 (the maximum: 40 bytes of options).
        for opts in [
            Ipv4Options::from([1u8, 1, 1, 0]),
            Ipv4Options::from([1u8; 20]),
            Ipv4Options::from([1u8; 40]),
        ] {
            let mut ip = ipv4_hdr(IpNumber::TCP);
            ip.options = opts;
            let b = eth()
                .ip(IpHeaders::Ipv4(ip, Default::default()))
                .tcp_header(TcpHeader::new(1234, 443, 1, 1000));
            let pkt = finish_tcp(b, b"data");
            let want = dp.key4(PROTO_TCP, 1234, 443);
            assert_one_flow(dp, &pkt, want)?;
        }
        // IHL below 5 is malformed: no key, counted as other.
        let mut bad = udp_pkt(false, 1, 2, b"x");
        bad[14] = 0x44;
        ensure!(single(dp, &bad)?.is_empty());
        ensure!(dp.counters()?[CNT_PACKETS_OTHER as usize] == 1);
        Ok(())
    })
}

#[test]
fn ipv4_fragments() -> Result<()> {
    for_hooks(|dp| {
        // First fragment: offset 0, MF set, carries the UDP header.
        let mut ip = ipv4_hdr(IpNumber::UDP);
        ip.more_fragments = true;
        ip.identification = 77;
        let mut first = Vec::new();
        eth()
            .ip(IpHeaders::Ipv4(ip, Default::default()))
            .udp(53, 33000)
            .write(&mut first, &[7u8; 64])?;
        let want = dp.key4(PROTO_UDP, 53, 33000);
        assert_one_flow(dp, &first, want)?;

        // A later fragment: no L4 header, so no ports.
        let mut ip = ipv4_hdr(IpNumber::UDP);
        ip.identification = 77;
        ip.fragment_offset = IpFragOffset::try_new(9)?;
        let later = ip_raw_pkt(
            IpHeaders::Ipv4(ip, Default::default()),
            IpNumber::UDP,
            &[0x35; 40],
        );
        let want = fragment(dp.key4(PROTO_UDP, 0, 0));
        assert_one_flow(dp, &later, want)?;
        let c = dp.counters()?;
        ensure!(
            c[CNT_PACKETS_OTHER as usize] == 0 && c[CNT_PACKETS_TRUNCATED as usize] == 0,
            "{c:?}"
        );
        Ok(())
    })
}

#[test]
fn ipv6_extension_header_chains() -> Result<()> {
    for_hooks(|dp| {
        // Hop-by-hop, destination options, routing (+ final destination
        // options), fragment (first: offset 0, M set). etherparse writes them
        // as hop, dest, routing, fragment, final dest.
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(raw_ext(0)),
            destination_options: Some(raw_ext(2)),
            routing: Some(Ipv6RoutingExtensions {
                routing: raw_ext(1),
                final_destination_options: Some(raw_ext(0)),
            }),
            fragment: Some(Ipv6FragmentHeader::new(
                IpNumber::UDP,
                IpFragOffset::ZERO,
                true,
                99,
            )),
            auth: None,
        };
        let mut pkt = Vec::new();
        eth()
            .ip(IpHeaders::Ipv6(ipv6_hdr(), exts))
            .udp(4000, 53)
            .write(&mut pkt, &[1u8; 16])?;
        let frag_at = 14 + 40 + 8 + 24 + 16;
        ensure!(
            pkt[frag_at - 16] == 44,
            "routing header's next is the fragment header"
        );
        fix_ipv6_frag(&mut pkt, frag_at, 0, true);
        let want = dp.key6(PROTO_UDP, 4000, 53);
        assert_one_flow(dp, &pkt, want)?;

        // Each extension alone, with TCP.
        for one in [
            Ipv6Extensions {
                hop_by_hop_options: Some(raw_ext(3)),
                ..Default::default()
            },
            Ipv6Extensions {
                destination_options: Some(raw_ext(0)),
                ..Default::default()
            },
            Ipv6Extensions {
                routing: Some(Ipv6RoutingExtensions {
                    routing: raw_ext(2),
                    final_destination_options: None,
                }),
                ..Default::default()
            },
        ] {
            let b = eth()
                .ip(IpHeaders::Ipv6(ipv6_hdr(), one))
                .tcp_header(TcpHeader::new(5555, 22, 1, 100));
            let pkt = finish_tcp(b, &[]);
            let want = dp.key6(PROTO_TCP, 5555, 22);
            assert_one_flow(dp, &pkt, want)?;
        }

        // A later fragment: no ports, the fragment flag, the upper protocol.
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(raw_ext(0)),
            fragment: Some(Ipv6FragmentHeader::new(
                IpNumber::TCP,
                IpFragOffset::try_new(100)?,
                false,
                99,
            )),
            ..Default::default()
        };
        let mut pkt = ip_raw_pkt(IpHeaders::Ipv6(ipv6_hdr(), exts), IpNumber::TCP, &[9u8; 32]);
        fix_ipv6_frag(&mut pkt, 14 + 40 + 8, 100, false);
        let want = fragment(dp.key6(PROTO_TCP, 0, 0));
        assert_one_flow(dp, &pkt, want)?;

        // Six destination-options headers are followed; a seventh is too many:
        // no key, counted as other.
        for (n, ok) in [(6usize, true), (7, false)] {
            let mut ip = ipv6_hdr();
            ip.next_header = IpNumber::IPV6_DESTINATION_OPTIONS;
            let mut chain = Vec::new();
            for i in 0..n {
                let mut e = raw_ext(0);
                e.next_header = if i + 1 == n {
                    IpNumber::UDP
                } else {
                    IpNumber::IPV6_DESTINATION_OPTIONS
                };
                chain.extend_from_slice(&e.to_bytes());
            }
            let udp = etherparse::UdpHeader {
                source_port: 7,
                destination_port: 8,
                length: 8,
                checksum: 0,
            };
            ip.payload_length = (chain.len() + 8) as u16;
            let mut pkt = Vec::new();
            etherparse::Ethernet2Header {
                source: MAC_A,
                destination: MAC_B,
                ether_type: etherparse::EtherType::IPV6,
            }
            .write(&mut pkt)?;
            ip.write(&mut pkt)?;
            pkt.extend_from_slice(&chain);
            pkt.extend_from_slice(&udp.to_bytes());
            if ok {
                let want = dp.key6(PROTO_UDP, 7, 8);
                assert_one_flow(dp, &pkt, want)?;
            } else {
                let flows = single(dp, &pkt)?;
                ensure!(flows.is_empty(), "{n} exts: {flows:?}");
                ensure!(dp.counters()?[CNT_PACKETS_OTHER as usize] == 1);
            }
        }
        Ok(())
    })
}

/// Shortest input BPF_PROG_TEST_RUN accepts (found out on Linux 6.18): 14
/// bytes (an Ethernet header) for XDP and for TC frames that are not IP; for
/// TC frames with the IPv4/IPv6 EtherType also the fixed IP header (34 and
/// 54 bytes). Shorter inputs fail with EINVAL before any program runs.
fn kernel_min_len(hook: Hook, pkt: &[u8]) -> usize {
    match (hook, pkt.get(12..14)) {
        (Hook::Xdp, _) => 14,
        (_, Some([0x08, 0x00])) => 14 + 20,
        (_, Some([0x86, 0xdd])) => 14 + 40,
        _ => 14,
    }
}

/// Cuts packets at every length from 0 up to the end of their headers (and
/// beyond): the kernel refuses what it refuses, the program passes every
/// packet it gets, and FLOWS holds nothing until the headers are complete,
/// then exactly the right key. Every cut packet is counted as truncated.
#[test]
fn truncated_at_every_length() -> Result<()> {
    let v6_tcp = tcp_pkt(true, 40000, 443, TCP_SYN, 1, &[]);
    let v4_tcp = tcp_pkt(false, 40000, 443, TCP_SYN, 1, &[]);
    let mut v4_opts_vlan = {
        let mut ip = ipv4_hdr(IpNumber::UDP);
        ip.options = Ipv4Options::from([1u8; 8]);
        let mut p = Vec::new();
        eth()
            .single_vlan(vid(7))
            .ip(IpHeaders::Ipv4(ip, Default::default()))
            .udp(9, 10)
            .write(&mut p, &[])?;
        p
    };
    // Ethernet padding (bytes beyond the IP length) must not matter.
    v4_opts_vlan.extend_from_slice(&[0u8; 6]);
    let v6_ext_qinq = {
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(raw_ext(1)),
            ..Default::default()
        };
        let mut p = Vec::new();
        eth()
            .double_vlan(vid(5), vid(6))
            .ip(IpHeaders::Ipv6(ipv6_hdr(), exts))
            .udp(11, 12)
            .write(&mut p, &[])?;
        p
    };
    let icmp6 = {
        let mut p = Vec::new();
        eth()
            .ipv6(v6_a(), v6_b(), 64)
            .icmpv6_echo_request(1, 1)
            .write(&mut p, &[])?;
        p
    };
    type KeyFn = fn(&Dp) -> FlowKey;
    let cases: [(&str, Vec<u8>, usize, KeyFn); 5] = [
        ("eth+ipv6+tcp", v6_tcp, 14 + 40 + 20, |dp| {
            dp.key6(PROTO_TCP, 40000, 443)
        }),
        ("eth+ipv4+tcp", v4_tcp, 14 + 20 + 20, |dp| {
            dp.key4(PROTO_TCP, 40000, 443)
        }),
        (
            "eth+vlan+ipv4(options)+udp",
            v4_opts_vlan,
            14 + 4 + 28 + 8,
            |dp| with_vlan(dp.key4(PROTO_UDP, 9, 10), 7),
        ),
        (
            "eth+qinq+ipv6+hbh+udp",
            v6_ext_qinq,
            14 + 8 + 40 + 16 + 8,
            |dp| with_vlan(dp.key6(PROTO_UDP, 11, 12), 5),
        ),
        ("eth+ipv6+icmpv6", icmp6, 14 + 40 + 8, |dp| {
            dp.key6(PROTO_ICMPV6, 128, 0)
        }),
    ];
    for_hooks(|dp| {
        for (name, pkt, hdr_len, key) in &cases {
            dp.reset()?;
            let want = key(dp);
            let min = kernel_min_len(dp.hook, pkt);
            let (mut ran, mut cut) = (0u64, 0u64);
            for len in 0..=pkt.len() {
                match dp.run_raw(&pkt[..len], None) {
                    Err(ProgramError::SyscallError(e)) if len < min => {
                        ensure!(
                            e.io_error.raw_os_error() == Some(libc::EINVAL),
                            "{name} cut at {len}: {e:?}"
                        );
                        continue;
                    }
                    Err(e) => bail!("{name} cut at {len}: {e:?}"),
                    Ok(ret) => {
                        ensure!(len >= min, "{name}: kernel accepted {len} bytes");
                        ensure!(
                            ret == dp.hook.pass(),
                            "{name} cut at {len}: returned {ret:#x}"
                        );
                    }
                }
                ran += 1;
                let flows = dp.flows()?;
                if len < *hdr_len {
                    cut += 1;
                    ensure!(flows.is_empty(), "{name} cut at {len}: {flows:?}");
                } else {
                    ensure!(
                        flows.len() == 1 && flows[0].0 == want,
                        "{name} cut at {len}: {flows:?}"
                    );
                }
            }
            let c = dp.counters()?;
            ensure!(c[CNT_PACKETS as usize] == ran, "{name}: {c:?}");
            ensure!(
                c[CNT_PACKETS_TRUNCATED as usize] == cut,
                "{name}: truncated {c:?}, want {cut}"
            );
            ensure!(c[CNT_PACKETS_OTHER as usize] == 0, "{name}: {c:?}");
        }
        Ok(())
    })
}
