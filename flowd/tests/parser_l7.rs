//! The L7 path end to end in user space: L7 events as the kernel builds them
//! → Parser → flow::Flow records, with pairing.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use flowd::datapath::L7Record;
use flowd::parser::{NotL7, Parser, ParserConfig, RedactConfig};
use flowd_common::{
    FAMILY_IPV4, FAMILY_IPV6, FlowKey, L7_DNS, L7_HTTP_REQUEST, L7_HTTP_RESPONSE, PROTO_TCP,
    PROTO_UDP,
};
use flowd_proto::flow::layer4::Protocol;
use flowd_proto::flow::layer7::Record;
use flowd_proto::flow::{Dns, Flow, FlowType, Http, L7FlowType, Layer7, Verdict};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record as DnsRecord, RecordType};

const CLIENT: [u8; 4] = [10, 244, 1, 10];
const SERVER: [u8; 4] = [10, 244, 2, 20];

fn key4(ifindex: u32, proto: u8, src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> FlowKey {
    let mut k = FlowKey {
        src_port: sp,
        dst_port: dp,
        ifindex,
        protocol: proto,
        family: FAMILY_IPV4,
        ..FlowKey::default()
    };
    k.src_addr[..4].copy_from_slice(&src);
    k.dst_addr[..4].copy_from_slice(&dst);
    k
}

fn c2s(ifindex: u32) -> FlowKey {
    key4(ifindex, PROTO_TCP, CLIENT, 51000, SERVER, 8080)
}
fn s2c(ifindex: u32) -> FlowKey {
    key4(ifindex, PROTO_TCP, SERVER, 8080, CLIENT, 51000)
}

fn parser() -> Parser {
    Parser::new(ParserConfig {
        node_name: "node-1".into(),
        ..ParserConfig::default()
    })
}

fn l7(f: &Flow) -> &Layer7 {
    f.l7.as_ref().expect("an L7 record")
}
fn http(f: &Flow) -> &Http {
    match l7(f).record.as_ref() {
        Some(Record::Http(h)) => h,
        other => panic!("not HTTP: {other:?}"),
    }
}
fn dns(f: &Flow) -> &Dns {
    match l7(f).record.as_ref() {
        Some(Record::Dns(d)) => d,
        other => panic!("not DNS: {other:?}"),
    }
}

fn request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: inventory.ecommerce:8080\r\nUser-Agent: test\r\n\r\n")
        .into_bytes()
}
fn response(code: u16) -> Vec<u8> {
    format!("HTTP/1.1 {code} Whatever\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

#[test]
fn pipelined_three_requests_then_three_responses() {
    let mut p = parser();
    let paths = ["/items/1", "/items/2?secret=x", "/cart"];
    let req_ts = [1_000_000u64, 1_050_000, 1_200_000];
    let resp = [(2_000_000u64, 200u16), (2_500_000, 404), (2_600_000, 503)];
    let mut reqs = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let ev = L7Record::captured(
            c2s(3),
            L7_HTTP_REQUEST,
            req_ts[i],
            1000 + i as u32,
            &request(path),
        );
        reqs.push(
            p.l7_flow(&ev, 1_700_000_000_000_000_000 + req_ts[i])
                .unwrap(),
        );
    }
    let mut resps = Vec::new();
    for (i, (ts, code)) in resp.iter().enumerate() {
        let ev = L7Record::captured(
            s2c(3),
            L7_HTTP_RESPONSE,
            *ts,
            9000 + i as u32,
            &response(*code),
        );
        resps.push(p.l7_flow(&ev, 1_700_000_000_000_000_000 + ts).unwrap());
    }
    let urls = [
        "http://inventory.ecommerce:8080/items/1",
        "http://inventory.ecommerce:8080/items/2",
        "http://inventory.ecommerce:8080/cart",
    ];
    for i in 0..3 {
        let (q, r) = (&reqs[i], &resps[i]);
        assert_eq!(q.r#type, FlowType::L7 as i32);
        assert_eq!(l7(q).r#type, L7FlowType::Request as i32);
        assert_eq!(l7(r).r#type, L7FlowType::Response as i32);
        assert_eq!(http(q).method, "GET");
        assert_eq!(http(q).url, urls[i]);
        assert_eq!(http(q).protocol, "HTTP/1.1");
        assert_eq!(http(q).code, 0);
        assert_eq!(http(r).code, u32::from(resp[i].1));
        assert_eq!(
            (http(r).method.as_str(), http(r).url.as_str()),
            ("GET", urls[i])
        );
        assert_eq!(l7(r).latency_ns, resp[i].0 - req_ts[i]);
        assert!(!l7(r).unpaired);
        assert_ne!(l7(q).exchange_id, 0);
        assert_eq!(l7(q).exchange_id, l7(r).exchange_id);
        assert_eq!(q.is_reply.map(|b| b.value), Some(false));
        assert_eq!(r.is_reply.map(|b| b.value), Some(true));
    }
    let lat: Vec<u64> = resps.iter().map(|r| l7(r).latency_ns).collect();
    assert_eq!(lat, vec![1_000_000, 1_450_000, 1_400_000]);
    let s = p.stats();
    assert_eq!(
        (s.http_requests, s.http_responses, s.pairing.http_paired),
        (3, 3, 3)
    );
    assert_eq!(s.pairing.http_pending, 0);
}

#[test]
fn flow_fields_of_an_l7_record() {
    let mut p = parser();
    let ev = L7Record::captured(c2s(17), L7_HTTP_REQUEST, 5, 1, &request("/"));
    let f = p.l7_flow(&ev, 1_700_000_000_123_456_789).unwrap();
    assert_eq!(f.verdict, Verdict::Forwarded as i32);
    assert_eq!(f.node_name, "node-1");
    assert_eq!(f.uuid.len(), 36);
    let t = f.time.unwrap();
    assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_456_789));
    let ip = f.ip.as_ref().unwrap();
    assert_eq!(
        (ip.source.as_str(), ip.destination.as_str()),
        ("10.244.1.10", "10.244.2.20")
    );
    match f.l4.as_ref().and_then(|l| l.protocol.clone()) {
        Some(Protocol::Tcp(t)) => {
            assert_eq!(
                (t.source_port, t.destination_port, t.flags),
                (51000, 8080, None)
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.interface.as_ref().unwrap().index, 17);
    assert_eq!(f.event_type.unwrap().r#type, 129);
    let g = p
        .l7_flow(
            &L7Record::captured(c2s(17), L7_HTTP_REQUEST, 6, 2, &request("/")),
            0,
        )
        .unwrap();
    assert_ne!(f.uuid, g.uuid);
}

#[test]
fn keep_alive_mix_of_status_codes() {
    let mut p = parser();
    let codes = [200u16, 404, 503, 200, 500, 301, 204];
    let mut got = Vec::new();
    for (i, code) in codes.iter().enumerate() {
        let t0 = 10_000 * i as u64;
        let q = p
            .l7_flow(
                &L7Record::captured(
                    c2s(3),
                    L7_HTTP_REQUEST,
                    t0,
                    i as u32 * 2,
                    &request(&format!("/r{i}")),
                ),
                0,
            )
            .unwrap();
        let r = p
            .l7_flow(
                &L7Record::captured(
                    s2c(3),
                    L7_HTTP_RESPONSE,
                    t0 + 100 + i as u64,
                    i as u32 * 3,
                    &response(*code),
                ),
                0,
            )
            .unwrap();
        assert_eq!(
            http(&q).url,
            format!("http://inventory.ecommerce:8080/r{i}")
        );
        got.push((http(&r).code as u16, l7(&r).latency_ns));
    }
    let want: Vec<(u16, u64)> = codes
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, 100 + i as u64))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn response_without_request_is_reported_unpaired() {
    let mut p = parser();
    let f = p
        .l7_flow(
            &L7Record::captured(s2c(3), L7_HTTP_RESPONSE, 50, 1, &response(200)),
            0,
        )
        .unwrap();
    assert_eq!(http(&f).code, 200);
    assert_eq!(http(&f).method, "");
    assert_eq!(l7(&f).latency_ns, 0);
    assert!(l7(&f).unpaired);
    assert_eq!(l7(&f).exchange_id, 0);
    assert_eq!(p.stats().pairing.http_unpaired_responses, 1);
}

#[test]
fn same_exchange_at_two_observation_points_pairs_per_point() {
    let mut p = parser();
    // client veth (if 3) sees the request first and the response last.
    let q3 = p
        .l7_flow(
            &L7Record::captured(c2s(3), L7_HTTP_REQUEST, 1_000, 1, &request("/a")),
            0,
        )
        .unwrap();
    let q9 = p
        .l7_flow(
            &L7Record::captured(c2s(9), L7_HTTP_REQUEST, 1_020, 1, &request("/a")),
            0,
        )
        .unwrap();
    let r9 = p
        .l7_flow(
            &L7Record::captured(s2c(9), L7_HTTP_RESPONSE, 5_020, 7, &response(200)),
            0,
        )
        .unwrap();
    let r3 = p
        .l7_flow(
            &L7Record::captured(s2c(3), L7_HTTP_RESPONSE, 5_050, 7, &response(200)),
            0,
        )
        .unwrap();
    assert_eq!(l7(&r9).latency_ns, 4_000);
    assert_eq!(l7(&r3).latency_ns, 4_050);
    assert_eq!(l7(&r9).exchange_id, l7(&q9).exchange_id);
    assert_eq!(l7(&r3).exchange_id, l7(&q3).exchange_id);
    assert_ne!(l7(&q3).exchange_id, l7(&q9).exchange_id);
}

#[test]
fn retransmitted_request_and_response_are_not_reported_twice() {
    let mut p = parser();
    let req = L7Record::captured(c2s(3), L7_HTTP_REQUEST, 10, 77, &request("/x"));
    p.l7_flow(&req, 0).unwrap();
    assert_eq!(p.l7_flow(&req, 0).unwrap_err(), NotL7::Retransmission);
    let resp = L7Record::captured(s2c(3), L7_HTTP_RESPONSE, 30, 5, &response(200));
    assert_eq!(l7(&p.l7_flow(&resp, 0).unwrap()).latency_ns, 20);
    assert_eq!(p.l7_flow(&resp, 0).unwrap_err(), NotL7::Retransmission);
}

#[test]
fn head_cut_at_512_bytes_still_gives_method_and_url() {
    let mut p = parser();
    let mut req = b"POST /api/orders?id=9 HTTP/1.1\r\nHost: orders\r\n".to_vec();
    for i in 0..40 {
        req.extend_from_slice(format!("X-Padding-{i}: {}\r\n", "v".repeat(20)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    assert!(req.len() > 512);
    let ev = L7Record::captured(c2s(3), L7_HTTP_REQUEST, 1, 1, &req);
    assert_eq!(ev.payload.len(), 512);
    let f = p.l7_flow(&ev, 0).unwrap();
    assert_eq!(
        (http(&f).method.as_str(), http(&f).url.as_str()),
        ("POST", "http://orders/api/orders")
    );
}

#[test]
fn pipelined_request_with_cut_line_keeps_fifo_order() {
    let mut p = parser();
    let long = format!("/{}", "a".repeat(600));
    let cut = L7Record::captured(c2s(3), L7_HTTP_REQUEST, 100, 1, &request(&long));
    // Reported with the URL as far as it was captured (512 bytes of
    // payload: "GET " and 508 bytes of the target), flagged truncated.
    let q = p.l7_flow(&cut, 0).unwrap();
    let cut_url = &long[..512 - "GET ".len()];
    assert_eq!(
        (
            http(&q).method.as_str(),
            http(&q).url.as_str(),
            http(&q).protocol.as_str(),
            http(&q).url_truncated
        ),
        ("GET", cut_url, "", true)
    );
    p.l7_flow(
        &L7Record::captured(c2s(3), L7_HTTP_REQUEST, 200, 2, &request("/short")),
        0,
    )
    .unwrap();
    let r1 = p
        .l7_flow(
            &L7Record::captured(s2c(3), L7_HTTP_RESPONSE, 1_100, 1, &response(414)),
            0,
        )
        .unwrap();
    let r2 = p
        .l7_flow(
            &L7Record::captured(s2c(3), L7_HTTP_RESPONSE, 1_300, 2, &response(200)),
            0,
        )
        .unwrap();
    assert_eq!(
        (
            http(&r1).method.as_str(),
            http(&r1).url.as_str(),
            http(&r1).url_truncated,
            l7(&r1).latency_ns
        ),
        ("GET", cut_url, true, 1_000)
    );
    assert_eq!(http(&r2).url, "http://inventory.ecommerce:8080/short");
    assert_eq!(l7(&r2).latency_ns, 1_100);
}

#[test]
fn redaction_is_configurable() {
    let cfg = |redact: RedactConfig, hdrs: &[&str]| ParserConfig {
        node_name: "n".into(),
        http: flowd::parser::HttpConfig::new(
            &hdrs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            redact,
        )
        .unwrap(),
        ..ParserConfig::default()
    };
    let body = b"GET /login?user=bob&pw=1 HTTP/1.1\r\nHost: auth\r\nUser-Agent: curl/8\r\nCookie: s=1\r\n\r\n";
    let mut p = Parser::new(cfg(RedactConfig::default(), &[]));
    let f = p
        .l7_flow(&L7Record::captured(c2s(3), L7_HTTP_REQUEST, 1, 1, body), 0)
        .unwrap();
    assert_eq!(http(&f).url, "http://auth/login");
    assert!(http(&f).headers.is_empty());
    let off = RedactConfig {
        http_url_query: false,
        http_headers_deny: vec!["cookie".into()],
        ..RedactConfig::default()
    };
    let mut p = Parser::new(cfg(off, &["user-agent", "cookie"]));
    let f = p
        .l7_flow(&L7Record::captured(c2s(3), L7_HTTP_REQUEST, 1, 1, body), 0)
        .unwrap();
    assert_eq!(http(&f).url, "http://auth/login?user=bob&pw=1");
    let h: Vec<(&str, &str)> = http(&f)
        .headers
        .iter()
        .map(|h| (h.key.as_str(), h.value.as_str()))
        .collect();
    assert_eq!(
        h,
        vec![("User-Agent", "curl/8"), ("Cookie", "HUBBLE_REDACTED")]
    );
}

#[test]
fn garbage_and_non_http_on_port_80_give_no_flow() {
    let mut p = parser();
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        b"G".to_vec(),
        b"GET".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // TLS ClientHello
        b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
        b"GET / SPDY/3\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        (0..=255u8).collect(),
        b"\0\0\0\0\0\0\0\0".to_vec(),
    ];
    let mut n = 0;
    for (i, j) in junk.iter().enumerate() {
        for kind in [L7_HTTP_REQUEST, L7_HTTP_RESPONSE] {
            let k = if kind == L7_HTTP_REQUEST {
                c2s(3)
            } else {
                s2c(3)
            };
            let r = p.l7_flow(&L7Record::captured(k, kind, i as u64, i as u32, j), 0);
            assert!(r.is_err(), "payload {i} kind {kind} gave a flow: {r:?}");
            n += 1;
        }
    }
    let s = p.stats();
    assert_eq!(s.http_requests + s.http_responses, 0);
    assert_eq!(s.not_l7_incomplete + s.not_l7_malformed + s.not_l7_other, n);
    // Kernel said HTTP but the transport is UDP: refused.
    let udp = key4(3, PROTO_UDP, CLIENT, 1, SERVER, 80);
    assert_eq!(
        p.l7_flow(
            &L7Record::captured(udp, L7_HTTP_REQUEST, 1, 0, &request("/")),
            0
        )
        .unwrap_err(),
        NotL7::WrongTransport(PROTO_UDP)
    );
}

fn dns_query(id: u16, name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str(name).unwrap(), t));
    m.to_vec().unwrap()
}

fn dns_response(
    id: u16,
    name: &str,
    t: RecordType,
    rcode: ResponseCode,
    answers: Vec<DnsRecord>,
) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Response)
        .set_response_code(rcode)
        .add_query(Query::query(Name::from_str(name).unwrap(), t))
        .add_answers(answers);
    m.to_vec().unwrap()
}

#[test]
fn dns_a_and_aaaa_noerror_and_nxdomain_with_latency() {
    let mut p = parser();
    let q = key4(4, PROTO_UDP, CLIENT, 40001, [10, 96, 0, 10], 53);
    let r = key4(4, PROTO_UDP, [10, 96, 0, 10], 53, CLIENT, 40001);
    let name = "inventory.ecommerce.svc.cluster.local.";
    let n = Name::from_str(name).unwrap();
    let fa = p
        .l7_flow(
            &L7Record::captured(q, L7_DNS, 1_000, 0, &dns_query(11, name, RecordType::A)),
            0,
        )
        .unwrap();
    let f6 = p
        .l7_flow(
            &L7Record::captured(q, L7_DNS, 1_010, 0, &dns_query(12, name, RecordType::AAAA)),
            0,
        )
        .unwrap();
    let fx = p
        .l7_flow(
            &L7Record::captured(
                q,
                L7_DNS,
                1_020,
                0,
                &dns_query(13, "nope.ecommerce.svc.cluster.local.", RecordType::A),
            ),
            0,
        )
        .unwrap();
    assert_eq!(l7(&fa).r#type, L7FlowType::Request as i32);
    assert_eq!(
        (dns(&fa).query.as_str(), dns(&fa).qtypes.as_slice()),
        (name, &["A".to_string()][..])
    );
    assert_eq!(dns(&f6).qtypes, vec!["AAAA"]);
    assert_eq!(dns(&fx).query, "nope.ecommerce.svc.cluster.local.");
    // Responses out of order: matched by message ID.
    let rx = p
        .l7_flow(
            &L7Record::captured(
                r,
                L7_DNS,
                1_520,
                0,
                &dns_response(
                    13,
                    "nope.ecommerce.svc.cluster.local.",
                    RecordType::A,
                    ResponseCode::NXDomain,
                    vec![],
                ),
            ),
            0,
        )
        .unwrap();
    let ra = p
        .l7_flow(
            &L7Record::captured(
                r,
                L7_DNS,
                1_300,
                0,
                &dns_response(
                    11,
                    name,
                    RecordType::A,
                    ResponseCode::NoError,
                    vec![
                        DnsRecord::from_rdata(
                            n.clone(),
                            30,
                            RData::A(A(Ipv4Addr::new(10, 96, 3, 3))),
                        ),
                        DnsRecord::from_rdata(
                            n.clone(),
                            20,
                            RData::A(A(Ipv4Addr::new(10, 96, 3, 4))),
                        ),
                    ],
                ),
            ),
            0,
        )
        .unwrap();
    let r6 = p
        .l7_flow(
            &L7Record::captured(
                r,
                L7_DNS,
                1_400,
                0,
                &dns_response(
                    12,
                    name,
                    RecordType::AAAA,
                    ResponseCode::NoError,
                    vec![
                        DnsRecord::from_rdata(
                            n.clone(),
                            30,
                            RData::CNAME(CNAME(
                                Name::from_str("inv-v2.ecommerce.svc.cluster.local.").unwrap(),
                            )),
                        ),
                        DnsRecord::from_rdata(
                            Name::from_str("inv-v2.ecommerce.svc.cluster.local.").unwrap(),
                            15,
                            RData::AAAA(AAAA(Ipv6Addr::from_str("fd00::33").unwrap())),
                        ),
                    ],
                ),
            ),
            0,
        )
        .unwrap();
    assert_eq!(l7(&ra).r#type, L7FlowType::Response as i32);
    assert_eq!(ra.is_reply.map(|b| b.value), Some(true));
    assert_eq!(dns(&ra).ips, vec!["10.96.3.3", "10.96.3.4"]);
    assert_eq!((dns(&ra).rcode, dns(&ra).ttl), (0, 20));
    assert_eq!(dns(&ra).rrtypes, vec!["A", "A"]);
    assert_eq!(l7(&ra).latency_ns, 300);
    assert_eq!(l7(&ra).exchange_id, l7(&fa).exchange_id);
    assert_eq!(dns(&r6).ips, vec!["fd00::33"]);
    assert_eq!(dns(&r6).cnames, vec!["inv-v2.ecommerce.svc.cluster.local."]);
    assert_eq!(l7(&r6).latency_ns, 390);
    assert_eq!(
        (dns(&rx).rcode, dns(&rx).ips.len(), l7(&rx).latency_ns),
        (3, 0, 500)
    );
    assert_eq!(l7(&rx).exchange_id, l7(&fx).exchange_id);
    let s = p.stats();
    assert_eq!(
        (
            s.dns_queries,
            s.dns_responses,
            s.pairing.dns_paired,
            s.pairing.dns_pending
        ),
        (3, 3, 3, 0)
    );
}

#[test]
fn dns_over_tcp_and_ipv6() {
    let mut p = parser();
    let mut q = FlowKey {
        src_port: 40002,
        dst_port: 53,
        ifindex: 5,
        protocol: PROTO_TCP,
        family: FAMILY_IPV6,
        ..FlowKey::default()
    };
    q.src_addr = Ipv6Addr::from_str("fd00::a").unwrap().octets();
    q.dst_addr = Ipv6Addr::from_str("fd00::53").unwrap().octets();
    let r = FlowKey {
        src_addr: q.dst_addr,
        dst_addr: q.src_addr,
        src_port: 53,
        dst_port: 40002,
        ..q
    };
    let name = "big.example.";
    let n = Name::from_str(name).unwrap();
    let answers: Vec<DnsRecord> = (0..60u8)
        .map(|i| {
            DnsRecord::from_rdata(
                n.clone(),
                100 + u32::from(i),
                RData::A(A(Ipv4Addr::new(192, 0, 2, i))),
            )
        })
        .collect();
    let resp = dns_response(99, name, RecordType::A, ResponseCode::NoError, answers);
    assert!(resp.len() > 512);
    // Per the ABI the kernel copies DNS-over-TCP from after the length prefix.
    let fq = p
        .l7_flow(
            &L7Record::captured(q, L7_DNS, 10, 1, &dns_query(99, name, RecordType::A)),
            0,
        )
        .unwrap();
    let fr = p
        .l7_flow(&L7Record::captured(r, L7_DNS, 60, 1, &resp), 0)
        .unwrap();
    assert_eq!(dns(&fq).query, name);
    assert_eq!(l7(&fr).latency_ns, 50);
    let ips = &dns(&fr).ips;
    // Only the answers within the first 512 bytes: a cut message still reports them.
    let whole = (512 - (12 + name.len() + 1 + 4)) / 16;
    assert_eq!(ips.len(), whole);
    assert_eq!(ips[0], "192.0.2.0");
    assert_eq!(dns(&fr).ttl, 100);
    assert_eq!(fr.ip.as_ref().unwrap().source, "fd00::53");
}

#[test]
fn pairing_state_is_bounded_and_evictions_counted() {
    let mut p = Parser::new(ParserConfig {
        node_name: "n".into(),
        pairing: flowd::parser::PairingLimits {
            max_connections: 100,
            max_pending_per_connection: 4,
            max_dns_pending: 50,
            max_age_ns: 1_000_000,
        },
        ..ParserConfig::default()
    });
    for i in 0..1_000u32 {
        let k = key4(3, PROTO_TCP, CLIENT, 10_000 + (i % 300) as u16, SERVER, 80);
        p.l7_flow(
            &L7Record::captured(k, L7_HTTP_REQUEST, u64::from(i), i, &request("/")),
            0,
        )
        .unwrap();
        let u = key4(3, PROTO_UDP, CLIENT, 20_000, SERVER, 53);
        p.l7_flow(
            &L7Record::captured(
                u,
                L7_DNS,
                u64::from(i),
                0,
                &dns_query(i as u16, "a.b.", RecordType::A),
            ),
            0,
        )
        .unwrap();
    }
    let s = p.stats().pairing;
    assert_eq!(
        (s.http_connections, s.http_pending, s.dns_pending),
        (100, 100, 50)
    );
    assert_eq!(s.http_evicted_size, 900);
    assert_eq!(s.dns_evicted_size, 950);
    p.expire(10_000_000);
    let s = p.stats().pairing;
    assert_eq!(
        (s.http_connections, s.http_pending, s.dns_pending),
        (0, 0, 0)
    );
    assert_eq!((s.http_evicted_age, s.dns_evicted_age), (100, 50));
}
