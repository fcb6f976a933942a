//! L3/L4 kernel flow events → `flow::Flow` (type L3_L4).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowd_common::{
    EV_NEW_FLOW, FAMILY_IPV4, FAMILY_IPV6, FLOW_ORIGIN_KNOWN, FLOW_ORIGIN_REPLY, FlowEvent,
    FlowKey, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_CWR, TCP_ECE,
    TCP_FIN, TCP_NS, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG, TRANSITION_SYN, TRANSITION_SYN_ACK,
};
use flowd_proto::Timestamp;
use flowd_proto::flow::{
    self, CiliumEventType, Flow, FlowStats, FlowType, IcmPv4, IcmPv6, Ip, IpVersion, Layer4,
    NetworkInterface, Sctp, Tcp, TcpFlags, TraceReason, Udp, Verdict, layer4::Protocol,
};

/// Hubble's `CiliumEventType.type` for trace (forwarded packet) events.
pub const EVENT_TYPE_TRACE: i32 = 4;
/// Hubble's `CiliumEventType.type` for L7 access-log records.
pub const EVENT_TYPE_L7: i32 = 129;

/// What the parser adds to a kernel event: when it happened in wall-clock
/// time, where, and the record's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowMeta<'a> {
    /// Wall-clock time of the event (`header.ts_ns` converted), ns since the Unix epoch.
    pub time_unix_ns: u64,
    pub node_name: &'a str,
    /// Flow UUID (see [`super::new_uuid`]); passed in so that this stays a pure function.
    pub uuid: String,
}

/// Source and destination addresses of a key, or None for non-IP keys.
pub fn addresses(k: &FlowKey) -> Option<(IpAddr, IpAddr)> {
    match k.family {
        FAMILY_IPV4 => {
            let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
            Some((v4(&k.src_addr), v4(&k.dst_addr)))
        }
        FAMILY_IPV6 => Some((
            IpAddr::V6(Ipv6Addr::from(k.src_addr)),
            IpAddr::V6(Ipv6Addr::from(k.dst_addr)),
        )),
        _ => None,
    }
}

/// Hubble's IP record for a key.
pub fn ip(k: &FlowKey) -> Option<Ip> {
    let (src, dst) = addresses(k)?;
    Some(Ip {
        source: ip_string(src),
        destination: ip_string(dst),
        ip_version: if src.is_ipv4() {
            IpVersion::IPv4
        } else {
            IpVersion::IPv6
        } as i32,
        ..Ip::default()
    })
}

/// An address as Hubble writes it. IPv4 is written here: std's Display
/// goes through the formatting machinery, a noticeable part of each flow.
fn ip_string(a: IpAddr) -> String {
    let IpAddr::V4(v4) = a else {
        return a.to_string();
    };
    let mut s = String::with_capacity(15);
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if o >= 100 {
            s.push(char::from(b'0' + o / 100));
        }
        if o >= 10 {
            s.push(char::from(b'0' + o / 10 % 10));
        }
        s.push(char::from(b'0' + o % 10));
    }
    s
}

/// TCP flag bits (as in `flowd_common::TCP_*`) → Hubble's TCPFlags.
pub fn tcp_flags(bits: u16) -> TcpFlags {
    TcpFlags {
        fin: bits & TCP_FIN != 0,
        syn: bits & TCP_SYN != 0,
        rst: bits & TCP_RST != 0,
        psh: bits & TCP_PSH != 0,
        ack: bits & TCP_ACK != 0,
        urg: bits & TCP_URG != 0,
        ece: bits & TCP_ECE != 0,
        cwr: bits & TCP_CWR != 0,
        ns: bits & TCP_NS != 0,
    }
}

/// Hubble's Layer4 record for a key; `flags` only applies to TCP.
pub fn layer4(k: &FlowKey, flags: Option<TcpFlags>) -> Option<Layer4> {
    if k.family != FAMILY_IPV4 && k.family != FAMILY_IPV6 {
        return None;
    }
    let (sp, dp) = (u32::from(k.src_port), u32::from(k.dst_port));
    let p = match k.protocol {
        PROTO_TCP => Protocol::Tcp(Tcp {
            source_port: sp,
            destination_port: dp,
            flags,
        }),
        PROTO_UDP => Protocol::Udp(Udp {
            source_port: sp,
            destination_port: dp,
        }),
        PROTO_SCTP => Protocol::Sctp(Sctp {
            source_port: sp,
            destination_port: dp,
        }),
        // For ICMP the kernel stores type in src_port and code in dst_port.
        PROTO_ICMP if k.family == FAMILY_IPV4 => Protocol::IcmPv4(IcmPv4 {
            r#type: sp,
            code: dp,
        }),
        PROTO_ICMPV6 if k.family == FAMILY_IPV6 => Protocol::IcmPv6(IcmPv6 {
            r#type: sp,
            code: dp,
        }),
        _ => return None,
    };
    Some(Layer4 { protocol: Some(p) })
}

fn ns_before(time_unix_ns: u64, event_ktime: u64, then_ktime: u64) -> Timestamp {
    Timestamp::from_unix_nanos(time_unix_ns.saturating_sub(event_ktime.saturating_sub(then_ktime)))
}

/// Whether a TCP flow is the reply direction of its connection, from the
/// handshake packet it was seen with: SYN opens (request side), SYN-ACK
/// answers. `None` for a connection seen from the middle (no conntrack here).
fn tcp_is_reply(transitions: u16) -> Option<bool> {
    match (
        transitions & TRANSITION_SYN != 0,
        transitions & TRANSITION_SYN_ACK != 0,
    ) {
        (true, false) => Some(false),
        (false, true) => Some(true),
        _ => None,
    }
}

/// Whether a UDP entry is the reply side, from the kernel's `origin` bits
/// (set where both hooks of the interface run: the side whose entry came
/// second is the reply, as conntrack decides it).
fn udp_is_reply(origin: u8) -> Option<bool> {
    (origin & FLOW_ORIGIN_KNOWN != 0).then_some(origin & FLOW_ORIGIN_REPLY != 0)
}

/// Whether an ICMP message answers another (echo, timestamp, information,
/// address mask and ICMPv6 echo): the kernel key holds its type in src_port.
fn icmp_is_reply(family: u8, protocol: u8, icmp_type: u16) -> Option<bool> {
    match (family, protocol, icmp_type) {
        (FAMILY_IPV4, PROTO_ICMP, 8 | 13 | 15 | 17) => Some(false),
        (FAMILY_IPV4, PROTO_ICMP, 0 | 14 | 16 | 18) => Some(true),
        (FAMILY_IPV6, PROTO_ICMPV6, 128) => Some(false),
        (FAMILY_IPV6, PROTO_ICMPV6, 129) => Some(true),
        _ => None,
    }
}

/// Whether the record is in the reply direction of its connection; `None`
/// when that is not known (a TCP connection seen from the middle, UDP on an
/// XDP uplink, ICMP errors, other protocols).
pub fn is_reply(ev: &FlowEvent) -> Option<bool> {
    let k = &ev.key;
    match k.protocol {
        PROTO_TCP => tcp_is_reply(ev.stats.tcp_transitions),
        PROTO_UDP => udp_is_reply(ev.stats.origin),
        PROTO_ICMP | PROTO_ICMPV6 => icmp_is_reply(k.family, k.protocol, k.src_port),
        _ => None,
    }
}

/// Cilium's trace reason of a record: the record that creates the request
/// direction's entry opens the connection (NEW), later ones of that
/// direction are ESTABLISHED, the other direction's are REPLY.
pub fn trace_reason(kind: u8, is_reply: Option<bool>) -> TraceReason {
    match is_reply {
        Some(true) => TraceReason::Reply,
        Some(false) if kind == EV_NEW_FLOW => TraceReason::New,
        Some(false) => TraceReason::Established,
        None => TraceReason::Unknown,
    }
}

/// Converts an L3/L4 event. Traffic direction, trace observation point,
/// endpoints and the interface name are left to enrichment, which knows what
/// the interface is (pod veth, uplink). The hook direction stays in the event.
#[allow(deprecated)] // `Summary`: deprecated by Hubble, shown by its printers.
pub fn flow(ev: &FlowEvent, meta: FlowMeta<'_>) -> Flow {
    let k = &ev.key;
    let s = &ev.stats;
    let kt = ev.header.ts_ns;
    let is_tcp = k.protocol == PROTO_TCP;
    let pkt_flags = is_tcp.then(|| tcp_flags(ev.pkt_tcp_flags));
    let reply = is_reply(ev);
    Flow {
        time: Some(Timestamp::from_unix_nanos(meta.time_unix_ns)),
        uuid: meta.uuid,
        verdict: Verdict::Forwarded as i32,
        ip: ip(k),
        summary: super::summary::l34(k, pkt_flags.as_ref()),
        l4: layer4(k, pkt_flags),
        r#type: FlowType::L3L4 as i32,
        node_name: meta.node_name.to_string(),
        event_type: Some(CiliumEventType {
            r#type: EVENT_TYPE_TRACE,
            sub_type: 0,
        }),
        interface: Some(NetworkInterface {
            index: k.ifindex,
            name: String::new(),
        }),
        // Enrichment turns a reply's hook direction around, as Hubble does
        // with conntrack: a connection's packets share its direction.
        is_reply: reply.map(|value| flowd_proto::pbjson_types::BoolValue { value }),
        trace_reason: trace_reason(ev.header.kind, reply) as i32,
        stats: Some(FlowStats {
            packets: s.packets,
            bytes: s.bytes,
            first_seen: Some(ns_before(meta.time_unix_ns, kt, s.first_seen_ns)),
            last_seen: Some(ns_before(meta.time_unix_ns, kt, s.last_seen_ns)),
            tcp_flags_seen: is_tcp.then(|| tcp_flags(s.tcp_flags)),
        }),
        ..flow::Flow::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowd_common::{
        EV_NEW_FLOW, EventHeader, FlowStats as KStats, TRANSITION_FIN, TRANSITION_RST,
    };

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        for o in [0u8, 1, 9, 10, 99, 100, 199, 200, 255] {
            let a = IpAddr::V4(Ipv4Addr::new(o, 255 - o, o / 3, 7));
            assert_eq!(ip_string(a), a.to_string());
        }
        let v6: IpAddr = "fd00::1:2".parse().unwrap();
        assert_eq!(ip_string(v6), "fd00::1:2");
    }

    fn ev(family: u8, proto: u8, sport: u16, dport: u16) -> FlowEvent {
        let mut key = FlowKey {
            src_port: sport,
            dst_port: dport,
            ifindex: 12,
            protocol: proto,
            family,
            ..FlowKey::default()
        };
        if family == FAMILY_IPV4 {
            key.src_addr[..4].copy_from_slice(&[10, 1, 0, 5]);
            key.dst_addr[..4].copy_from_slice(&[10, 1, 1, 9]);
        } else {
            key.src_addr = "fd00::5".parse::<Ipv6Addr>().unwrap().octets();
            key.dst_addr = "fd00::1:9".parse::<Ipv6Addr>().unwrap().octets();
        }
        FlowEvent {
            header: EventHeader {
                kind: EV_NEW_FLOW,
                ts_ns: 5_000_000_000,
                ..EventHeader::default()
            },
            key,
            stats: KStats {
                packets: 3,
                bytes: 180,
                first_seen_ns: 4_000_000_000,
                last_seen_ns: 5_000_000_000,
                tcp_flags: TCP_SYN | TCP_ACK,
                ..KStats::default()
            },
            pkt_len: 60,
            pkt_tcp_flags: TCP_SYN | TCP_ACK,
            _pad: [0; 2],
        }
    }

    fn meta() -> FlowMeta<'static> {
        FlowMeta {
            time_unix_ns: 1_700_000_000_500_000_000,
            node_name: "node-a",
            uuid: "u-1".into(),
        }
    }

    #[test]
    fn tcp_v4() {
        let f = flow(&ev(FAMILY_IPV4, PROTO_TCP, 43210, 80), meta());
        assert_eq!(f.r#type, FlowType::L3L4 as i32);
        assert_eq!(f.verdict, Verdict::Forwarded as i32);
        assert_eq!(f.uuid, "u-1");
        assert_eq!(f.node_name, "node-a");
        let ip = f.ip.unwrap();
        assert_eq!(
            (ip.source.as_str(), ip.destination.as_str()),
            ("10.1.0.5", "10.1.1.9")
        );
        assert_eq!(ip.ip_version, IpVersion::IPv4 as i32);
        let Some(Protocol::Tcp(t)) = f.l4.unwrap().protocol else {
            panic!("not TCP")
        };
        assert_eq!((t.source_port, t.destination_port), (43210, 80));
        assert_eq!(
            t.flags,
            Some(TcpFlags {
                syn: true,
                ack: true,
                ..TcpFlags::default()
            })
        );
        assert_eq!(f.interface.unwrap().index, 12);
        let st = f.stats.unwrap();
        assert_eq!((st.packets, st.bytes), (3, 180));
        assert_eq!(
            st.first_seen.unwrap(),
            Timestamp::from_unix_nanos(1_699_999_999_500_000_000)
        );
        assert_eq!(
            st.last_seen.unwrap(),
            Timestamp::from_unix_nanos(1_700_000_000_500_000_000)
        );
        assert_eq!(
            f.time.unwrap(),
            Timestamp::from_unix_nanos(1_700_000_000_500_000_000)
        );
        assert_eq!(f.event_type.unwrap().r#type, EVENT_TYPE_TRACE);
        assert_eq!(f.is_reply, None);
    }

    #[test]
    fn tcp_reply_side_from_the_handshake() {
        let with = |t: u16| {
            let mut e = ev(FAMILY_IPV4, PROTO_TCP, 40000, 80);
            e.stats.tcp_transitions = t;
            flow(&e, meta()).is_reply.map(|b| b.value)
        };
        assert_eq!(with(TRANSITION_SYN), Some(false));
        assert_eq!(with(TRANSITION_SYN | TRANSITION_FIN), Some(false));
        assert_eq!(with(TRANSITION_SYN_ACK), Some(true));
        assert_eq!(with(TRANSITION_SYN_ACK | TRANSITION_RST), Some(true));
        // Seen from the middle, or a simultaneous open: unknown.
        assert_eq!(with(0), None);
        assert_eq!(with(TRANSITION_FIN), None);
        assert_eq!(with(TRANSITION_SYN | TRANSITION_SYN_ACK), None);
        // Not TCP: never.
        let mut u = ev(FAMILY_IPV4, PROTO_UDP, 40000, 53);
        u.stats.tcp_transitions = TRANSITION_SYN;
        assert_eq!(flow(&u, meta()).is_reply, None);
    }

    #[test]
    fn other_protocols() {
        let l4 = |e: FlowEvent| flow(&e, meta()).l4.and_then(|l| l.protocol);
        assert_eq!(
            l4(ev(FAMILY_IPV6, PROTO_UDP, 5353, 53)),
            Some(Protocol::Udp(Udp {
                source_port: 5353,
                destination_port: 53
            }))
        );
        assert_eq!(
            l4(ev(FAMILY_IPV4, PROTO_ICMP, 8, 0)),
            Some(Protocol::IcmPv4(IcmPv4 { r#type: 8, code: 0 }))
        );
        assert_eq!(
            l4(ev(FAMILY_IPV6, PROTO_ICMPV6, 128, 0)),
            Some(Protocol::IcmPv6(IcmPv6 {
                r#type: 128,
                code: 0
            }))
        );
        assert_eq!(
            l4(ev(FAMILY_IPV4, PROTO_SCTP, 1, 2)),
            Some(Protocol::Sctp(Sctp {
                source_port: 1,
                destination_port: 2
            }))
        );
        assert_eq!(l4(ev(FAMILY_IPV4, 47, 0, 0)), None); // GRE: IP only
        let f = flow(&ev(FAMILY_IPV6, PROTO_UDP, 1, 2), meta());
        assert_eq!(f.ip.unwrap().destination, "fd00::1:9");
        let mut non_ip = ev(FAMILY_IPV4, PROTO_TCP, 0x0806, 0);
        non_ip.key.family = 0;
        let f = flow(&non_ip, meta());
        assert!(f.ip.is_none() && f.l4.is_none());
    }
}
