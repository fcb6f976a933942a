//! `Flow.Summary`, the one-line description Hubble's printers show (the
//! SUMMARY column of `hubble observe`), in the exact words of Cilium's agent:
//!
//! - L3/L4 (pkg/hubble/parser/threefour): `TCP Flags: SYN, ACK` (the flags
//!   of the packet the event is for, in Hubble's order), `UDP`, `SCTP`,
//!   `ICMPv4 EchoRequest`, `ICMPv6 DestinationUnreachable(PortUnreachable)`
//!   (gopacket's names for ICMP type and code), else the last layer decoded:
//!   `IPv4` / `IPv6` (other protocols, non-first fragments) or `Ethernet`;
//! - HTTP (seven/http.go): `HTTP/1.1 GET http://host/path`, and for a
//!   response `HTTP/1.1 200 12ms (GET http://host/path)`;
//! - DNS (seven/dns.go): `DNS Query example.com. A`, and for an answer
//!   `DNS Answer "1.2.3.4" TTL: 30 (Query example.com. A)` or
//!   `DNS Answer RCode: Non-Existent Domain TTL: 0 (Query x. A)`.
//!
//! Where flowd knows less than Cilium's agent, the summary says only what is
//! known: a kernel drop record aggregates packets and keeps no TCP flags, so
//! a dropped TCP flow reads `TCP`; a response whose request was never seen
//! has no `(method url)` part.
//!
//! Each summary is built once per flow, into one allocation sized up front.

use std::fmt::Write as _;

use flowd_common::{
    FAMILY_IPV4, FAMILY_IPV6, FlowKey, KEY_F_FRAGMENT, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP,
    PROTO_TCP, PROTO_UDP,
};
use flowd_proto::flow::{Dns, Http, TcpFlags};
use flowd_proto::names;

/// The summary of an L3/L4 flow of `key`; `flags` are the TCP flags of the
/// packet the event is for (None: not known, as for kernel drops).
pub fn l34(key: &FlowKey, flags: Option<&TcpFlags>) -> String {
    let ip = match key.family {
        FAMILY_IPV4 => "IPv4",
        FAMILY_IPV6 => "IPv6",
        _ => return "Ethernet".to_string(),
    };
    if key.flags & KEY_F_FRAGMENT != 0 {
        // A non-first fragment has no L4 header to decode.
        return ip.to_string();
    }
    // ICMP type and code are kept in the port fields (see FlowKey).
    let (t, c) = (
        u8::try_from(key.src_port).unwrap_or(u8::MAX),
        u8::try_from(key.dst_port).unwrap_or(u8::MAX),
    );
    match key.protocol {
        PROTO_TCP => match flags {
            Some(f) => tcp(f),
            None => "TCP".to_string(),
        },
        PROTO_UDP => "UDP".to_string(),
        PROTO_SCTP => "SCTP".to_string(),
        PROTO_ICMP if key.family == FAMILY_IPV4 => format!("ICMPv4 {}", names::icmpv4(t, c)),
        PROTO_ICMPV6 if key.family == FAMILY_IPV6 => format!("ICMPv6 {}", names::icmpv6(t, c)),
        _ => ip.to_string(),
    }
}

/// `TCP Flags: SYN, ACK`: the set flags in Hubble's order (SYN ACK RST FIN
/// PSH URG ECE CWR NS).
pub fn tcp(f: &TcpFlags) -> String {
    let mut s = String::with_capacity(32);
    s.push_str("TCP Flags: ");
    for (i, name) in names::tcp_flags(f).enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(name);
    }
    s
}

/// `HTTP/1.1 GET http://host/path`. A request line cut short by the
/// capture (`url_truncated`, flowd extension) has no version: `HTTP GET
/// /path…`.
pub fn http_request(h: &Http) -> String {
    let mut s = String::with_capacity(h.protocol.len() + h.method.len() + h.url.len() + 8);
    s.push_str(if h.protocol.is_empty() {
        "HTTP"
    } else {
        &h.protocol
    });
    s.push(' ');
    s.push_str(&h.method);
    s.push(' ');
    s.push_str(&h.url);
    if h.url_truncated {
        s.push('…');
    }
    s
}

/// `HTTP/1.1 200 12ms (GET http://host/path)`; the latency is truncated to
/// whole milliseconds. Without the request (`paired` false): `HTTP/1.1 200 0ms`.
pub fn http_response(h: &Http, latency_ns: u64, paired: bool) -> String {
    let mut s = String::with_capacity(h.protocol.len() + h.method.len() + h.url.len() + 24);
    let _ = write!(s, "{} {} {}ms", h.protocol, h.code, latency_ns / 1_000_000);
    if paired {
        let cut = if h.url_truncated { "…" } else { "" };
        let _ = write!(s, " ({} {}{cut})", h.method, h.url);
    }
    s
}

/// `DNS Query <name> <types>` or `DNS Answer <answer> TTL: <ttl> (Query
/// <name> <types>)`. Hubble writes `Proxy` instead of `Query` for answers its
/// DNS proxy saw; flowd's come from the datapath.
pub fn dns(d: &Dns, response: bool) -> String {
    let mut s = String::with_capacity(64 + d.query.len());
    if !response {
        s.push_str("DNS Query ");
        s.push_str(&d.query);
        s.push(' ');
        push_joined(&mut s, &d.qtypes);
        return s;
    }
    s.push_str("DNS Answer ");
    if d.rcode != 0 {
        s.push_str("RCode: ");
        s.push_str(names::dns_rcode(d.rcode));
    } else {
        if !d.ips.is_empty() {
            go_quote(&mut s, &d.ips.join(","));
        }
        if !d.cnames.is_empty() {
            if !d.ips.is_empty() {
                s.push(' ');
            }
            s.push_str("CNAMEs: ");
            go_quote(&mut s, &d.cnames.join(","));
        }
    }
    let source = if d.observation_source == "proxy" {
        "Proxy"
    } else {
        "Query"
    };
    let _ = write!(s, " TTL: {} ({source} {} ", d.ttl, d.query);
    push_joined(&mut s, &d.qtypes);
    s.push(')');
    s
}

fn push_joined(s: &mut String, items: &[String]) {
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(t);
    }
}

/// Go's `%q` of a string: double quotes, `"` and `\` escaped, control
/// characters as `\n`, `\t`, `\x7f`, `\u0085`-style escapes. (Go also escapes
/// a few non-control characters it deems unprintable; DNS names and
/// addresses do not contain them.)
fn go_quote(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_ascii() || !c.is_control() => out.push(c),
            c if (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(family: u8, protocol: u8, sport: u16, dport: u16) -> FlowKey {
        FlowKey {
            family,
            protocol,
            src_port: sport,
            dst_port: dport,
            ..FlowKey::default()
        }
    }

    fn flags(set: &str) -> TcpFlags {
        let has = |f| set.split(',').any(|s| s == f);
        TcpFlags {
            fin: has("FIN"),
            syn: has("SYN"),
            rst: has("RST"),
            psh: has("PSH"),
            ack: has("ACK"),
            urg: has("URG"),
            ece: has("ECE"),
            cwr: has("CWR"),
            ns: has("NS"),
        }
    }

    #[test]
    fn l34_summaries_are_hubbles() {
        let t = |f: &str| l34(&key(FAMILY_IPV4, PROTO_TCP, 1, 2), Some(&flags(f)));
        assert_eq!(t("SYN"), "TCP Flags: SYN");
        assert_eq!(t("ACK,SYN"), "TCP Flags: SYN, ACK");
        assert_eq!(t("FIN,PSH,ACK"), "TCP Flags: ACK, FIN, PSH");
        assert_eq!(t("RST,ACK"), "TCP Flags: ACK, RST");
        assert_eq!(
            t("NS,CWR,ECE,URG,PSH,FIN,RST,ACK,SYN"),
            "TCP Flags: SYN, ACK, RST, FIN, PSH, URG, ECE, CWR, NS"
        );
        assert_eq!(t(""), "TCP Flags: ");
        assert_eq!(l34(&key(FAMILY_IPV4, PROTO_TCP, 1, 2), None), "TCP");
        assert_eq!(l34(&key(FAMILY_IPV6, PROTO_UDP, 1, 2), None), "UDP");
        assert_eq!(l34(&key(FAMILY_IPV4, PROTO_SCTP, 1, 2), None), "SCTP");
        assert_eq!(l34(&key(FAMILY_IPV4, 47, 0, 0), None), "IPv4");
        assert_eq!(l34(&key(FAMILY_IPV6, 47, 0, 0), None), "IPv6");
        assert_eq!(l34(&key(0, 0, 0x0806, 0), None), "Ethernet");
        let mut frag = key(FAMILY_IPV4, PROTO_UDP, 0, 0);
        frag.flags = KEY_F_FRAGMENT;
        assert_eq!(l34(&frag, None), "IPv4");
    }

    #[test]
    fn icmp_names_follow_gopacket() {
        let v4 = |t, c| l34(&key(FAMILY_IPV4, PROTO_ICMP, t, c), None);
        let v6 = |t, c| l34(&key(FAMILY_IPV6, PROTO_ICMPV6, t, c), None);
        assert_eq!(v4(8, 0), "ICMPv4 EchoRequest");
        assert_eq!(v4(0, 0), "ICMPv4 EchoReply");
        assert_eq!(v4(3, 3), "ICMPv4 DestinationUnreachable(Port)");
        assert_eq!(v4(3, 1), "ICMPv4 DestinationUnreachable(Host)");
        assert_eq!(v4(3, 99), "ICMPv4 DestinationUnreachable(Code: 99)");
        assert_eq!(v4(5, 2), "ICMPv4 Redirect(TOS+Net)");
        assert_eq!(v4(11, 0), "ICMPv4 TimeExceeded(TTLExceeded)");
        assert_eq!(v4(8, 1), "ICMPv4 EchoRequest(Code: 1)");
        assert_eq!(v4(42, 7), "ICMPv4 42(7)");
        assert_eq!(v6(128, 0), "ICMPv6 EchoRequest");
        assert_eq!(v6(1, 4), "ICMPv6 DestinationUnreachable(PortUnreachable)");
        assert_eq!(v6(135, 0), "ICMPv6 NeighborSolicitation");
        assert_eq!(v6(2, 0), "ICMPv6 PacketTooBig");
        // MLD has no name in gopacket's table.
        assert_eq!(v6(143, 0), "ICMPv6 143(0)");
    }

    fn http(code: u32) -> Http {
        Http {
            code,
            method: "GET".into(),
            url: "http://frontend.ecommerce:8080/cart/7".into(),
            protocol: "HTTP/1.1".into(),
            headers: vec![],
            url_truncated: false,
            ..Default::default()
        }
    }

    #[test]
    fn truncated_request_line_summaries() {
        let cut = Http {
            protocol: String::new(),
            url: "/search/qqq".into(),
            url_truncated: true,
            ..http(0)
        };
        assert_eq!(http_request(&cut), "HTTP GET /search/qqq…");
        let resp = Http {
            code: 200,
            protocol: "HTTP/1.1".into(),
            ..cut
        };
        assert_eq!(
            http_response(&resp, 3_000_000, true),
            "HTTP/1.1 200 3ms (GET /search/qqq…)"
        );
    }

    #[test]
    fn http_summaries() {
        assert_eq!(
            http_request(&http(0)),
            "HTTP/1.1 GET http://frontend.ecommerce:8080/cart/7"
        );
        assert_eq!(
            http_response(&http(404), 12_999_999, true),
            "HTTP/1.1 404 12ms (GET http://frontend.ecommerce:8080/cart/7)"
        );
        assert_eq!(
            http_response(&http(200), 400_000, true).split(' ').nth(2),
            Some("0ms")
        );
        assert_eq!(http_response(&http(503), 0, false), "HTTP/1.1 503 0ms");
    }

    fn dns_rec(ips: &[&str], cnames: &[&str], rcode: u32) -> Dns {
        Dns {
            query: "payment-service.ecommerce.svc.cluster.local.".into(),
            ips: ips.iter().map(|s| s.to_string()).collect(),
            ttl: 30,
            cnames: cnames.iter().map(|s| s.to_string()).collect(),
            observation_source: "datapath".into(),
            rcode,
            qtypes: vec!["A".into()],
            rrtypes: vec![],
        }
    }

    #[test]
    fn dns_summaries() {
        let q = "payment-service.ecommerce.svc.cluster.local.";
        assert_eq!(
            dns(&dns_rec(&[], &[], 0), false),
            format!("DNS Query {q} A")
        );
        assert_eq!(
            dns(&dns_rec(&["10.244.2.3"], &[], 0), true),
            format!("DNS Answer \"10.244.2.3\" TTL: 30 (Query {q} A)")
        );
        assert_eq!(
            dns(
                &dns_rec(&["10.0.0.1", "10.0.0.2"], &["a.example."], 0),
                true
            ),
            format!(
                "DNS Answer \"10.0.0.1,10.0.0.2\" CNAMEs: \"a.example.\" TTL: 30 (Query {q} A)"
            )
        );
        assert_eq!(
            dns(&dns_rec(&[], &["a.", "b."], 0), true),
            format!("DNS Answer CNAMEs: \"a.,b.\" TTL: 30 (Query {q} A)")
        );
        assert_eq!(
            dns(&dns_rec(&[], &[], 0), true),
            format!("DNS Answer  TTL: 30 (Query {q} A)")
        );
        let mut nx = dns_rec(&[], &[], 3);
        nx.ttl = 0;
        assert_eq!(
            dns(&nx, true),
            format!("DNS Answer RCode: Non-Existent Domain TTL: 0 (Query {q} A)")
        );
        assert_eq!(
            dns(&dns_rec(&[], &[], 2), true),
            format!("DNS Answer RCode: Server Failure  TTL: 30 (Query {q} A)")
        );
        let mut proxy = dns_rec(&["1.2.3.4"], &[], 0);
        proxy.observation_source = "proxy".into();
        proxy.qtypes = vec!["A".into(), "AAAA".into()];
        assert_eq!(
            dns(&proxy, true),
            format!("DNS Answer \"1.2.3.4\" TTL: 30 (Proxy {q} A,AAAA)")
        );
    }

    #[test]
    fn quoting_is_gos() {
        let q = |s: &str| {
            let mut o = String::new();
            go_quote(&mut o, s);
            o
        };
        assert_eq!(q("a.b"), "\"a.b\"");
        assert_eq!(q("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(q("x\ny\u{0}\u{7f}"), "\"x\\ny\\x00\\x7f\"");
        assert_eq!(q("é\u{85}"), "\"é\\u0085\"");
    }
}
