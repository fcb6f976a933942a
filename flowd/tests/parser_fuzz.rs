//! Property-based fuzzing of the L7 paths: HTTP heads, DNS messages and the
//! raw L7 record decoder. None may panic; well-formed inputs must parse exactly.
//!
//! `cargo test` runs 2,000 cases per target; `FLOWD_FUZZ_CASES=1000000 cargo
//! test --release -p flowd --test parser_fuzz -- --nocapture` runs a million
//! each and prints the counts and times.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

mod records;

use flowd::datapath::L7Record;
use flowd::parser::{
    DnsFraming, HttpConfig, NotL7, Parser, ParserConfig, RedactConfig, RequestHead, dns, http,
    parse_l7,
};
use flowd_common::{
    FAMILY_IPV4, FlowKey, L7_DNS, L7_HTTP_REQUEST, L7_HTTP_RESPONSE, L7_MAX_PAYLOAD, PROTO_TCP,
    PROTO_UDP,
};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("FLOWD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// Runs `check` on `cases()` values of `strategy`; reports count and time.
fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value)) {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let n = AtomicU64::new(0);
    let t = Instant::now();
    let r = runner.run(&strategy, |v| {
        check(v);
        n.fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    eprintln!(
        "fuzz {name}: {} cases in {:.1?}",
        n.load(Ordering::Relaxed),
        t.elapsed()
    );
    if let Err(e) = r {
        panic!("fuzz {name} failed: {e}");
    }
}

fn http_cfg() -> HttpConfig {
    let h: Vec<String> = ["host", "x-request-id", "content-type"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    HttpConfig::new(&h, RedactConfig::default()).unwrap()
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        Just("DELETE".to_string()),
        "[A-Z]{1,10}",
    ]
}

/// A well-formed request head and the facts it must parse to.
fn request() -> impl Strategy<Value = (Vec<u8>, String, String, u8)> {
    (
        token(),
        "(/[a-zA-Z0-9._~-]{0,12}){1,4}",
        proptest::option::of("[a-z0-9=&]{0,20}"),
        0u8..=1,
        proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,40}"), 0..12),
    )
        .prop_map(|(m, path, query, minor, headers)| {
            let target = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let mut s = format!("{m} {target} HTTP/1.{minor}\r\n");
            for (k, v) in &headers {
                s.push_str(&format!("{k}: {}\r\n", v.trim()));
            }
            s.push_str("\r\n");
            (s.into_bytes(), m, path, minor)
        })
}

#[test]
fn fuzz_http_arbitrary_bytes() {
    let cfg = http_cfg();
    fuzz(
        "http arbitrary bytes",
        proptest::collection::vec(any::<u8>(), 0..L7_MAX_PAYLOAD),
        |b| {
            if let Ok(RequestHead::Complete(r)) = http::parse_request(&b, &cfg) {
                assert!(!r.method.is_empty());
                assert!(!r.url.contains('?'), "query not redacted: {}", r.url);
            }
            if let Ok(r) = http::parse_response(&b, &cfg) {
                assert!((100..=999).contains(&r.code));
            }
        },
    );
}

#[test]
fn fuzz_http_requests_truncated_and_mutated() {
    let cfg = http_cfg();
    let strat = (
        request(),
        any::<prop::sample::Index>(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    );
    fuzz(
        "http requests cut/mutated",
        strat,
        |((buf, method, path, minor), cut, flips)| {
            // Every prefix: either the request line is complete and exact, or nothing bogus.
            let cut = cut.index(buf.len() + 1);
            let line_end = buf
                .windows(2)
                .position(|w| w == b"\r\n")
                .unwrap_or(buf.len());
            match http::parse_request(&buf[..cut], &cfg) {
                Ok(RequestHead::Complete(r)) => {
                    assert!(cut >= line_end, "complete before the line end");
                    assert_eq!(r.method, method);
                    assert_eq!(r.protocol, if minor == 0 { "HTTP/1.0" } else { "HTTP/1.1" });
                    assert!(r.url.ends_with(&path), "{} vs {path}", r.url);
                }
                Ok(RequestHead::LineCut { method: m, url }) => {
                    assert_eq!(m, method);
                    assert!(cut < line_end);
                    // The captured part of the path, never the query.
                    assert!(path.starts_with(&url), "{url} vs {path}");
                }
                Err(NotL7::Incomplete) => assert!(cut <= method.len()),
                Err(e) => panic!("valid prefix rejected: {e:?} at {cut}"),
            }
            if cut == buf.len() {
                assert!(
                    matches!(http::parse_request(&buf, &cfg), Ok(RequestHead::Complete(r)) if !r.truncated)
                );
            }
            let mut m = buf.clone();
            for (i, b) in flips {
                let i = i.index(m.len());
                m[i] = b;
            }
            let _ = http::parse_request(&m, &cfg);
            let _ = http::parse_response(&m, &cfg);
        },
    );
}

#[test]
fn fuzz_http_responses_truncated() {
    let cfg = http_cfg();
    let strat = (
        100u16..=599,
        "[ -~]{0,30}",
        0u8..=1,
        any::<prop::sample::Index>(),
    );
    fuzz("http responses cut", strat, |(code, reason, minor, cut)| {
        let buf = format!(
            "HTTP/1.{minor} {code} {}\r\nContent-Type: text/plain\r\n\r\n",
            reason.trim()
        );
        let buf = buf.as_bytes();
        let cut = cut.index(buf.len() + 1);
        match http::parse_response(&buf[..cut], &cfg) {
            Ok(r) => {
                assert_eq!(r.code, code);
                assert!(cut > 12, "status before its line was complete");
            }
            Err(NotL7::Incomplete) => assert!(cut < buf.len()),
            Err(e) => panic!("{e:?}"),
        }
    });
}

fn name() -> impl Strategy<Value = Name> {
    proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..5)
        .prop_map(|labels| Name::from_str(&format!("{}.", labels.join("."))).unwrap())
}

fn rdata() -> impl Strategy<Value = RData> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| RData::A(A(Ipv4Addr::from(a)))),
        any::<[u8; 16]>().prop_map(|a| RData::AAAA(AAAA(Ipv6Addr::from(a)))),
        name().prop_map(|n| RData::CNAME(CNAME(n))),
    ]
}

/// A real DNS message built with hickory-proto.
fn dns_message() -> impl Strategy<Value = (Vec<u8>, Message)> {
    (
        any::<u16>(),
        any::<bool>(),
        name(),
        prop::sample::select(vec![
            RecordType::A,
            RecordType::AAAA,
            RecordType::CNAME,
            RecordType::TXT,
            RecordType::SRV,
        ]),
        prop::sample::select(vec![
            ResponseCode::NoError,
            ResponseCode::NXDomain,
            ResponseCode::ServFail,
            ResponseCode::Refused,
        ]),
        proptest::collection::vec((name(), any::<u32>(), rdata()), 0..8),
    )
        .prop_map(|(id, resp, qname, qtype, rcode, answers)| {
            let mut m = Message::new();
            m.set_id(id)
                .set_message_type(if resp {
                    MessageType::Response
                } else {
                    MessageType::Query
                })
                .add_query(Query::query(qname, qtype));
            if resp {
                m.set_response_code(rcode);
                for (n, ttl, rd) in answers {
                    m.add_answer(Record::from_rdata(n, ttl, rd));
                }
            }
            (m.to_vec().unwrap(), m)
        })
}

#[test]
fn fuzz_dns_real_messages_cut_and_mutated() {
    let strat = (
        dns_message(),
        any::<prop::sample::Index>(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    );
    fuzz(
        "dns messages cut/mutated",
        strat,
        |((bytes, msg), cut, flips)| {
            let full = dns::parse_dns(&bytes, DnsFraming::Bare).expect("a real message parses");
            assert_eq!(full.id, msg.id());
            assert_eq!(full.query, msg.queries()[0].name().to_string());
            assert_eq!(full.rcode, u16::from(msg.response_code()));
            let want_ips: Vec<IpAddr> = msg
                .answers()
                .iter()
                .filter_map(|r| match r.data() {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect();
            assert_eq!(full.ips, want_ips);
            assert_eq!(full.rrtypes.len(), msg.answers().len());
            assert!(!full.partial);
            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            assert_eq!(
                dns::parse_dns(&framed, DnsFraming::TcpLengthPrefix).unwrap(),
                full
            );
            // A cut message gives the same question and a prefix of the answers, or nothing.
            let cut = cut.index(bytes.len() + 1);
            if let Ok(part) = dns::parse_dns(&bytes[..cut], DnsFraming::Bare) {
                assert_eq!((part.id, &part.query), (full.id, &full.query));
                assert!(full.ips.starts_with(&part.ips));
                assert!(full.rrtypes.starts_with(&part.rrtypes));
            }
            let _ = dns::parse_dns(&framed[..cut], DnsFraming::TcpLengthPrefix);
            let mut m = bytes.clone();
            for (i, b) in flips {
                let i = i.index(m.len());
                m[i] = b;
            }
            let _ = dns::parse_dns(&m, DnsFraming::Bare);
        },
    );
}

#[test]
fn fuzz_dns_arbitrary_bytes() {
    fuzz(
        "dns arbitrary bytes",
        proptest::collection::vec(any::<u8>(), 0..L7_MAX_PAYLOAD),
        |b| {
            if let Ok(d) = dns::parse_dns(&b, DnsFraming::Bare) {
                assert!(!d.qtypes.is_empty() && d.qtypes.len() <= 4);
            }
            let _ = dns::parse_dns(&b, DnsFraming::TcpLengthPrefix);
        },
    );
}

#[test]
fn fuzz_l7_record_decoder_and_parser() {
    let mut parser = Parser::new(ParserConfig::default());
    let cfg = http_cfg();
    // Raw records of any length, and real records with random fields and payloads.
    let raw = proptest::collection::vec(any::<u8>(), 0..700);
    let built = (
        prop::sample::select(vec![L7_HTTP_REQUEST, L7_HTTP_RESPONSE, L7_DNS, 0, 7]),
        prop::sample::select(vec![PROTO_TCP, PROTO_UDP, 1]),
        any::<u32>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..600),
        any::<u16>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(kind, proto, ifindex, port, payload, plen, cut)| {
            let mut k = FlowKey {
                ifindex,
                protocol: proto,
                family: FAMILY_IPV4,
                src_port: port,
                dst_port: 80,
                ..FlowKey::default()
            };
            k.src_addr[0] = 10;
            let mut b =
                records::encode_l7(&L7Record::captured(k, kind, u64::from(port), 0, &payload));
            // Sometimes lie about payload_len, sometimes cut the record.
            if plen % 3 == 0 {
                let at = std::mem::offset_of!(flowd_common::L7Event, payload_len);
                b[at..at + 2].copy_from_slice(&plen.to_ne_bytes());
            }
            if plen % 5 == 0 {
                let n = cut.index(b.len() + 1);
                b.truncate(n);
            }
            b
        });
    let cell = std::cell::RefCell::new(&mut parser);
    fuzz("l7 record decoder + parser", prop_oneof![raw, built], |b| {
        // The ring reader's decoder, whose records the daemon hands to
        // the parser as they are.
        if let Ok(flowd::datapath::decode::Record::L7(r)) = flowd::datapath::decode::decode(&b) {
            assert!(r.payload.len() <= L7_MAX_PAYLOAD);
            let _ = parse_l7(&r, &cfg);
            let _ = cell.borrow_mut().l7_flow(&r, 0);
        }
    });
}
