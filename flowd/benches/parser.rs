//! User-space L7 parse throughput (messages per second per core).
//!
//! `cargo bench -p flowd --bench parser`. Each benchmark processes one
//! message per iteration (criterion reports elem/s). `baseline/decode_record`
//! (decoding one raw 592-byte L7 record into an `L7Record`, whose payload the
//! parser then reads in place) is the reference cost measured in the same run.
//! `pipeline/http2/grpc-unary` is the HTTP/2 parser on the kernel walker's
//! records of a keep-alive gRPC connection (100 unary calls per iteration,
//! 2 messages each): its elem/s over 2 is the decoder's RPCs per second per
//! core, next to `pipeline/http/request+response` for HTTP/1.1.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::str::FromStr;

#[path = "../tests/records/mod.rs"]
mod records;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowd::datapath::L7Record;
use flowd::datapath::decode::decode;
use flowd::parser::{DnsFraming, HttpConfig, Parser, ParserConfig, RedactConfig, dns, http};
use flowd_common::{FAMILY_IPV4, FlowKey, L7_HTTP_REQUEST, L7_HTTP_RESPONSE, PROTO_TCP};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};

const REQUEST: &[u8] = b"GET /api/v1/cart/items?session=abc123&limit=20 HTTP/1.1\r\nHost: cart.ecommerce.svc.cluster.local:8080\r\nUser-Agent: Go-http-client/1.1\r\nAccept: application/json\r\nX-Request-Id: 8d3f7c2a-1b44-4c1e-9a7e-2f0c9d1e5b6a\r\nAccept-Encoding: gzip\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1432\r\nDate: Wed, 25 Nov 2026 18:00:00 GMT\r\nX-Request-Id: 8d3f7c2a-1b44-4c1e-9a7e-2f0c9d1e5b6a\r\n\r\n{\"items\":[";

fn dns_response() -> Vec<u8> {
    let n = Name::from_str("cart.ecommerce.svc.cluster.local.").unwrap();
    let t = Name::from_str("cart-v2.ecommerce.svc.cluster.local.").unwrap();
    let mut m = Message::new();
    m.set_id(4242)
        .set_message_type(MessageType::Response)
        .set_response_code(ResponseCode::NoError)
        .add_query(Query::query(n.clone(), RecordType::A))
        .add_answer(Record::from_rdata(n, 30, RData::CNAME(CNAME(t.clone()))))
        .add_answer(Record::from_rdata(
            t.clone(),
            30,
            RData::A(A::new(10, 96, 0, 12)),
        ))
        .add_answer(Record::from_rdata(t, 30, RData::A(A::new(10, 96, 0, 13))));
    m.to_vec().unwrap()
}

fn dns_query() -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(4242)
        .set_message_type(MessageType::Query)
        .add_query(Query::query(
            Name::from_str("cart.ecommerce.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
    m.to_vec().unwrap()
}

fn key(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> FlowKey {
    let mut k = FlowKey {
        src_port: sp,
        dst_port: dp,
        ifindex: 3,
        protocol: PROTO_TCP,
        family: FAMILY_IPV4,
        ..FlowKey::default()
    };
    k.src_addr[..4].copy_from_slice(&src);
    k.dst_addr[..4].copy_from_slice(&dst);
    k
}

fn benches(c: &mut Criterion) {
    let cfg = HttpConfig::new(&["x-request-id".to_string()], RedactConfig::default()).unwrap();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    let raw = records::encode_l7(&L7Record::captured(
        key([10, 0, 0, 1], 40000, [10, 0, 0, 2], 80),
        L7_HTTP_REQUEST,
        1,
        1,
        REQUEST,
    ));
    g.bench_function("baseline/decode_record", |b| {
        b.iter(|| decode(black_box(&raw)).unwrap())
    });
    g.bench_function("http/request", |b| {
        b.iter(|| http::parse_request(black_box(REQUEST), &cfg).unwrap())
    });
    g.bench_function("http/response", |b| {
        b.iter(|| http::parse_response(black_box(RESPONSE), &cfg).unwrap())
    });
    let q = dns_query();
    let r = dns_response();
    g.bench_function("dns/query", |b| {
        b.iter(|| dns::parse_dns(black_box(&q), DnsFraming::Bare).unwrap())
    });
    g.bench_function("dns/response", |b| {
        b.iter(|| dns::parse_dns(black_box(&r), DnsFraming::Bare).unwrap())
    });
    g.finish();

    // The whole path: record → parse → pairing → flow::Flow, one request and
    // its response per iteration (2 messages), keep-alive connection.
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(2));
    let mut p = Parser::new(ParserConfig {
        node_name: "node-1".into(),
        http: cfg.clone(),
        ..ParserConfig::default()
    });
    let c2s = key([10, 0, 0, 1], 40000, [10, 0, 0, 2], 80);
    let s2c = key([10, 0, 0, 2], 80, [10, 0, 0, 1], 40000);
    let mut seq = 0u32;
    g.bench_function("http/request+response", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let q = L7Record::captured(c2s, L7_HTTP_REQUEST, u64::from(seq) * 10, seq, REQUEST);
            let r = L7Record::captured(
                s2c,
                L7_HTTP_RESPONSE,
                u64::from(seq) * 10 + 5,
                seq,
                RESPONSE,
            );
            let fq = p.l7_flow(&q, 1).unwrap();
            let fr = p.l7_flow(&r, 2).unwrap();
            black_box((fq, fr))
        })
    });
    // HTTP/2: the records the kernel walker sends for 100 unary gRPC calls
    // on one connection (tonic's headers), replayed whole per iteration
    // (the first record starts the connection over).
    use flowd::parser::http2::testkit::{
        Call, Conversation, Framing, Rng, Segmenting, keys, records,
    };
    const CALLS: usize = 100;
    let calls = vec![Call::unary("/shop.inventory.v1.Inventory/Reserve", 0); CALLS];
    let conv = Conversation::new(&calls, &Framing::default(), &mut Rng::new(1));
    let (ck, sk) = keys(3, 40000);
    let recs: Vec<_> = records(&conv.wire, ck, sk, &Segmenting::default(), &mut Rng::new(1))
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    g.throughput(Throughput::Elements(2 * CALLS as u64));
    g.bench_function("http2/grpc-unary", |b| {
        b.iter(|| {
            let mut n = 0;
            for r in &recs {
                n += p.h2_flows(black_box(r), 1).len();
            }
            assert_eq!(n, 2 * CALLS, "records per replay");
        })
    });
    g.finish();
}

criterion_group!(parser, benches);
criterion_main!(parser);
