//! HTTP/2 byte streams, cut into TCP segments and turned into the kernel
//! walker's records by the testkit's model, through the parser.

#![allow(deprecated)] // Flow.summary: Hubble deprecated it; its clients read it.

use flowd_proto::flow::grpc::Type as GrpcType;

use super::testkit::verify::{self, Got};
use super::testkit::{Call, Conversation, Framing, Rng, Segmenting, Side, keys, records, send_ts};
use crate::datapath::{H2Chunk, H2Record};
use crate::parser::{HttpConfig, Parser, ParserConfig, RedactConfig};
use flowd_common::{H2_F_LOST, H2_F_START};

fn parser(capture: &[&str]) -> Parser {
    let h: Vec<String> = capture.iter().map(|s| s.to_string()).collect();
    Parser::new(ParserConfig {
        http: HttpConfig::new(&h, RedactConfig::default()).unwrap(),
        ..ParserConfig::default()
    })
}

fn run_records(p: &mut Parser, recs: &[(usize, H2Record)]) -> Vec<Got> {
    verify::run_records(p, recs).unwrap()
}

fn run(conv: &Conversation, seg: &Segmenting, seed: u64) -> (Vec<Got>, Parser) {
    let mut p = parser(&["x-request-id", "x-big-0", "x-big-1", "x-big-2"]);
    let (c, s) = keys(7, 40_000);
    let recs = records(&conv.wire, c, s, seg, &mut Rng::new(seed));
    let flows = run_records(&mut p, &recs);
    (flows, p)
}

fn check_complete(conv: &Conversation, flows: &[Got]) {
    verify::complete(conv, flows).unwrap()
}

fn check_truthful(calls: &[Call], flows: &[Got]) {
    verify::truthful(calls, flows).unwrap()
}

fn unary_calls(n: usize, status: impl Fn(usize) -> u32) -> Vec<Call> {
    (0..n)
        .map(|i| {
            Call::unary(
                &format!("/shop.inventory.v1.Inventory/Reserve{i}"),
                status(i),
            )
        })
        .collect()
}

#[test]
fn unary_grpc_with_every_status() {
    // Non-zero statuses as trailers-only responses, and the same after a
    // response message (trailers after DATA).
    let mut calls = unary_calls(17, |i| i as u32);
    for i in 1..17u32 {
        let mut c = Call::unary(&format!("/shop.Orders/Place{i}"), i);
        c.trailers_only = false;
        c.response_messages = vec![3];
        calls.push(c);
    }
    let conv = Conversation::new(&calls, &Framing::default(), &mut Rng::new(1));
    let (flows, p) = run(&conv, &Segmenting::default(), 1);
    check_complete(&conv, &flows);
    let s = p.stats().http2;
    assert_eq!((s.requests, s.responses, s.partial_messages), (33, 33, 0));
    assert_eq!((s.losses_kernel, s.losses_parser), (0, 0));
    let nf = flows
        .iter()
        .find(|g| g.response && g.http.url.ends_with("/Reserve5"))
        .unwrap();
    let g = nf.http.grpc.as_ref().unwrap();
    assert_eq!(
        (g.status_code, g.status_name.as_str()),
        (Some(5), "NOT_FOUND")
    );
    assert_eq!(g.message, "item not found");
    assert_eq!(g.r#type, GrpcType::Unary as i32);
}

#[test]
fn streaming_kinds_have_exact_counts() {
    let mk = |path: &str, q: Vec<usize>, r: Vec<usize>| Call {
        request_messages: q,
        response_messages: r,
        grpc_message: None,
        ..Call::unary(path, 0)
    };
    let calls = vec![
        mk("/s.S/Unary", vec![10], vec![20]),
        mk("/s.S/ServerStream", vec![10], vec![100; 7]),
        mk("/s.S/ClientStream", vec![40_000; 5], vec![8]),
        mk("/s.S/Bidi", vec![3, 70_000, 5], vec![1, 2, 3, 4]),
        mk("/s.S/Empty", vec![0], vec![0]),
        mk("/s.S/NoReply", vec![1], vec![]),
    ];
    // Messages larger than a frame span several frames: still exact.
    let f = Framing {
        max_data_frame: 16_384,
        ..Framing::default()
    };
    let conv = Conversation::new(&calls, &f, &mut Rng::new(2));
    let (flows, _) = run(&conv, &Segmenting::default(), 2);
    check_complete(&conv, &flows);

    // Several messages in one frame: the second's prefix is not seen.
    let packed = Framing {
        pack_messages: true,
        max_data_frame: 1000,
        ..Framing::default()
    };
    let conv = Conversation::new(&calls, &packed, &mut Rng::new(3));
    assert!(conv.expected.iter().any(|e| !e.messages_exact));
    let (flows, _) = run(&conv, &Segmenting::default(), 3);
    check_complete(&conv, &flows);
}

#[test]
fn many_interleaved_streams_in_small_segments() {
    let mut calls = unary_calls(120, |i| [0, 5, 14, 0, 3][i % 5]);
    for (i, c) in calls.iter_mut().enumerate() {
        if i % 7 == 0 {
            c.request_messages = vec![700; 1 + i % 4];
            c.response_messages = vec![900; 1 + i % 3];
            c.trailers_only = false;
        }
    }
    for seed in 0..6 {
        let f = Framing {
            interleave: true,
            control_frames: true,
            max_data_frame: 512,
            pad: if seed % 2 == 0 { 0 } else { 7 },
            huffman: seed % 3 != 0,
            ..Framing::default()
        };
        let conv = Conversation::new(&calls, &f, &mut Rng::new(seed));
        let seg = Segmenting {
            mss: 1 + seed as usize * 97,
            split_pieces: true,
            duplicate_percent: 10,
        };
        let (flows, p) = run(&conv, &seg, seed);
        check_complete(&conv, &flows);
        let s = p.stats().http2;
        assert_eq!((s.losses_parser, s.partial_messages), (0, 0), "seed {seed}");
        assert!(s.duplicate_pieces > 0);
        assert_eq!((s.connections, s.streams), (1, 0));
    }
}

#[test]
fn continuation_frames_and_big_headers() {
    let mut calls = unary_calls(5, |_| 0);
    for (i, c) in calls.iter_mut().enumerate() {
        c.request_headers = vec![("x-big-0".into(), "v".repeat(3000 + i))];
        c.response_headers = vec![("x-big-1".into(), "w".repeat(5000 + i))];
    }
    let f = Framing {
        max_header_fragment: 100,
        ..Framing::default()
    };
    let conv = Conversation::new(&calls, &f, &mut Rng::new(4));
    assert!(
        conv.wire
            .client
            .windows(4)
            .any(|w| w[3] == 0x9 && w[0] == 0)
    );
    let (flows, _) = run(&conv, &Segmenting::default(), 4);
    check_complete(&conv, &flows);
    let r = flows.iter().find(|g| !g.response).unwrap();
    assert_eq!(r.http.headers[0].key, "x-big-0");
    assert_eq!(r.http.headers[0].value.len(), 3000);
}

#[test]
fn dynamic_table_evictions_from_large_custom_headers() {
    // Distinct ~1.3 KB values each call: every block evicts older entries
    // from the 4 KiB tables, and later calls reuse what is still there.
    let mut calls = unary_calls(40, |i| (i % 3) as u32);
    for (i, c) in calls.iter_mut().enumerate() {
        let v = |k: usize| format!("{k}-{}", "z".repeat(1300));
        c.request_headers = vec![
            ("x-big-0".into(), v(i % 5)),
            ("x-big-2".into(), v(i)),
            ("x-request-id".into(), format!("req-{}", i % 4)),
        ];
        c.response_headers = vec![("x-big-1".into(), v(i % 6))];
    }
    for (seed, table_size) in [(5, None), (6, Some(2048)), (7, Some(0))] {
        let f = Framing {
            table_size,
            interleave: true,
            ..Framing::default()
        };
        let conv = Conversation::new(&calls, &f, &mut Rng::new(seed));
        let (flows, _) = run(&conv, &Segmenting::default(), seed);
        check_complete(&conv, &flows);
        for g in flows.iter().filter(|g| !g.response) {
            let i: usize = g
                .http
                .url
                .rsplit("Reserve")
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let hv: Vec<(&str, &str)> = g
                .http
                .headers
                .iter()
                .map(|h| (h.key.as_str(), h.value.as_str()))
                .collect();
            let want = &calls[i].request_headers;
            assert_eq!(hv.len(), 3);
            for ((k, v), (wk, wv)) in hv.iter().zip(want) {
                assert_eq!((*k, *v), (wk.as_str(), wv.as_str()));
            }
        }
    }
}

#[test]
fn reset_and_goaway_end_responses_without_status() {
    let mut calls = unary_calls(4, |_| 0);
    calls[1].reset = Some(8); // CANCEL
    calls[1].response_messages = vec![5, 5];
    let mut conv = Conversation::new(&calls, &Framing::default(), &mut Rng::new(8));
    let (flows, _) = run(&conv, &Segmenting::default(), 8);
    check_complete(&conv, &flows);
    let r = flows
        .iter()
        .find(|g| g.response && g.http.url.ends_with("Reserve1"))
        .unwrap();
    assert_eq!(r.http.grpc.as_ref().unwrap().reset, "CANCEL");

    // Two more requests the server never answers, then GOAWAY(last = 9):
    // stream 11 ends without a status, stream 9 stays open.
    let more = unary_calls(6, |_| 0);
    let mut c2 = Conversation::new(&more, &Framing::default(), &mut Rng::new(9));
    // Drop the server's frames of streams 9 and 11 (the last two calls).
    conv = trim_unanswered(&mut c2, 2);
    conv.goaway(9);
    let (flows, p) = run(&conv, &Segmenting::default(), 9);
    let reqs = flows.iter().filter(|g| !g.response).count();
    let resps: Vec<&Got> = flows.iter().filter(|g| g.response).collect();
    assert_eq!((reqs, resps.len()), (6, 5));
    let gone = resps
        .iter()
        .find(|g| g.http.url.ends_with("Reserve5"))
        .unwrap();
    assert_eq!(gone.http.code, 0);
    let g = gone.http.grpc.as_ref().unwrap();
    assert_eq!((g.status_code, g.messages_exact), (None, false));
    assert_eq!(gone.flow.summary.split(' ').nth(1), Some("0"));
    assert_eq!(p.stats().http2.streams, 1, "stream 9 still open");
}

/// Rebuilds `c` without the server's sends for its last `n` calls.
fn trim_unanswered(c: &mut Conversation, n: usize) -> Conversation {
    let calls: Vec<Call> = c.expected.iter().map(|e| e.call.clone()).collect();
    let keep = calls.len() - n;
    // The answered calls, then the unanswered ones as requests only: frame
    // them separately and append the client bytes.
    let answered = Conversation::new(&calls[..keep], &Framing::default(), &mut Rng::new(1));
    let mut wire = answered.wire.clone();
    let mut enc_conv = Conversation::new(&calls, &Framing::default(), &mut Rng::new(1));
    // The full conversation's client stream has every request; its first
    // bytes equal `answered`'s client stream (same encoders, same order).
    let extra = enc_conv.wire.client.split_off(wire.client.len());
    wire.client.extend_from_slice(&extra);
    wire.sends.push((Side::Client, wire.client.len()));
    Conversation {
        wire,
        expected: answered.expected,
    }
}

#[test]
fn plain_http2_has_no_grpc() {
    let calls = vec![
        Call::plain("GET", "/api/cart", 200, 1234),
        Call::plain("GET", "/", 404, 0),
        Call::plain("POST", "/checkout?token=secret", 503, 20),
        Call::plain("DELETE", "/item/9", 204, 0),
    ];
    let conv = Conversation::new(&calls, &Framing::default(), &mut Rng::new(10));
    let (flows, _) = run(&conv, &Segmenting::default(), 10);
    assert_eq!(flows.len(), 8);
    let urls: Vec<&str> = flows
        .iter()
        .filter(|g| !g.response)
        .map(|g| g.http.url.as_str())
        .collect();
    // The query string is redacted as for HTTP/1.
    assert_eq!(
        urls,
        [
            "http://frontend:8080/api/cart",
            "http://frontend:8080/",
            "http://frontend:8080/checkout",
            "http://frontend:8080/item/9"
        ]
    );
    let codes: Vec<u32> = flows
        .iter()
        .filter(|g| g.response)
        .map(|g| g.http.code)
        .collect();
    assert_eq!(codes, [200, 404, 503, 204]);
    assert!(
        flows
            .iter()
            .all(|g| g.http.grpc.is_none() && !g.http.partial)
    );
}

#[test]
fn connection_joined_in_the_middle_is_partial_never_wrong() {
    let mut calls = unary_calls(30, |i| [0, 5, 0][i % 3]);
    for (i, c) in calls.iter_mut().enumerate() {
        c.request_headers = vec![("x-request-id".into(), format!("r{}", i % 3))];
    }
    for seed in 0..20u64 {
        let f = Framing {
            interleave: seed % 2 == 0,
            ..Framing::default()
        };
        let conv = Conversation::new(&calls, &f, &mut Rng::new(seed));
        let mut rng = Rng::new(seed);
        let join = 6 + rng.below(conv.wire.sends.len() / 3);
        // Whole sends are frame-aligned: the kernel syncs at a header, for
        // a connection open before flowd started as after a loss it noticed
        // (H2_F_START|H2_F_LOST).
        let flags = H2_F_START | H2_F_LOST;
        let recs = verify::joined_records(&conv, join, flags, &Segmenting::default(), &mut rng);
        let mut p = parser(&["x-request-id"]);
        let flows = run_records(&mut p, &recs);
        check_truthful(&calls, &flows);
        let s = p.stats().http2;
        // Content-type and authority were indexed before the join: the
        // requests after it are partial (their paths are literals).
        let reqs: Vec<&Got> = flows.iter().filter(|g| !g.response).collect();
        assert!(!reqs.is_empty(), "seed {seed}");
        assert!(
            reqs.iter()
                .all(|g| g.http.partial && g.http.url.starts_with("/shop"))
        );
        assert!(
            reqs.iter()
                .all(|g| g.http.method == "POST" && g.http.grpc.is_none())
        );
        assert!(s.partial_messages > 0);
        assert_eq!(s.losses_kernel, 2);
        assert_eq!(s.losses_parser, 0);
    }
}

#[test]
fn joined_with_every_field_indexed_still_never_wrong() {
    // An encoder that indexes :path too (as Go's does): after the join,
    // requests for paths first used before it have no URL at all.
    let calls: Vec<Call> = (0..40)
        .map(|i| Call::unary(&format!("/shop.Svc/M{}", i % 6), (i % 4) as u32))
        .collect();
    for seed in 0..10u64 {
        let conv = Conversation::new_with(&calls, &Framing::default(), &mut Rng::new(seed), |e| {
            e.no_index.clear()
        });
        let mut rng = Rng::new(seed);
        let join = 10 + rng.below(conv.wire.sends.len() - 20);
        let recs = verify::joined_records(
            &conv,
            join,
            H2_F_START | H2_F_LOST,
            &Segmenting::default(),
            &mut rng,
        );
        let mut p = parser(&[]);
        let flows = run_records(&mut p, &recs);
        check_truthful(&calls, &flows);
    }
}

#[test]
fn lost_pieces_are_detected_and_nothing_after_is_wrong() {
    let mut calls = unary_calls(40, |i| [0, 5, 13][i % 3]);
    for (i, c) in calls.iter_mut().enumerate() {
        c.request_headers = vec![("x-request-id".into(), format!("r{}", i % 5))];
    }
    for seed in 0..30u64 {
        let noticed = seed % 2 == 0;
        let conv = Conversation::new(&calls, &Framing::default(), &mut Rng::new(seed));
        let mut rng = Rng::new(seed);
        let victim = 8 + rng.below(conv.wire.sends.len() - 16);
        let recs = verify::lossy_records(&conv, victim, noticed, &mut rng);
        let mut p = parser(&["x-request-id"]);
        let flows = run_records(&mut p, &recs);
        check_truthful(&calls, &flows);
        let st = p.stats().http2;
        if noticed {
            assert_eq!(st.losses_kernel, 1, "seed {seed}");
        } else {
            assert_eq!(st.losses_parser, 1, "seed {seed}");
        }
        // Everything before the loss was reported whole.
        let before = conv
            .expected
            .iter()
            .filter(|e| e.response_send < victim)
            .count();
        let complete = flows
            .iter()
            .filter(|g| g.response && !g.http.partial && !g.unpaired)
            .count();
        assert!(complete >= before, "seed {seed}: {complete} < {before}");
    }
}

#[test]
fn garbage_and_other_protocols_give_no_flow() {
    let (c, _) = keys(5, 43_000);
    let rec = |flags: u8, seq: u32, bytes: &[u8]| H2Record {
        header: flowd_common::EventHeader::default(),
        key: c,
        flags,
        chunks: vec![H2Chunk {
            seq,
            bytes: bytes.to_vec(),
        }],
    };
    let start = flowd_common::H2_F_START | flowd_common::H2_F_PREFACE;
    let mut p = parser(&[]);
    let inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        vec![0; 64],
        vec![0xff; 64],
        b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
        Vec::new(),
    ];
    for (i, b) in inputs.iter().enumerate() {
        for flags in [start, flowd_common::H2_F_START, 0, flowd_common::H2_F_LOST] {
            assert!(p.h2_flows(&rec(flags, i as u32, b), 0).is_empty());
        }
    }
    // Random records, random flags: no flow, no panic.
    let mut rng = Rng::new(11);
    for _ in 0..20_000 {
        let n = rng.below(40);
        let r = rec(rng.below(8) as u8, rng.below(64) as u32, &rng.bytes(n));
        assert!(p.h2_flows(&r, 0).is_empty());
    }
    // A valid conversation cut short at every byte: no panic, and only
    // records for calls it really holds.
    let calls = unary_calls(3, |i| i as u32);
    let conv = Conversation::new(&calls, &Framing::default(), &mut Rng::new(12));
    for cut in (0..conv.wire.client.len()).step_by(7) {
        let mut w = conv.wire.clone();
        w.client.truncate(cut);
        w.sends
            .retain(|&(side, end)| side == Side::Server || end <= cut);
        w.sends.push((Side::Client, cut));
        let (c, s) = keys(6, 44_000);
        let recs = records(&w, c, s, &Segmenting::default(), &mut Rng::new(cut as u64));
        let mut p = parser(&[]);
        let flows = run_records(&mut p, &recs);
        check_truthful(&calls, &flows);
    }
}

#[test]
fn limits_evict_and_count() {
    let calls = unary_calls(10, |_| 0);
    let conv = Conversation::new(&calls, &Framing::default(), &mut Rng::new(13));
    let mut p = Parser::new(ParserConfig {
        http2: super::H2Limits {
            max_connections: 2,
            max_streams: 1,
            max_header_block: 1024,
            max_age_ns: 1_000,
        },
        ..ParserConfig::default()
    });
    // Three connections: the first is evicted by the third.
    for port in [1, 2, 3] {
        let (c, s) = keys(1, port);
        let recs = records(&conv.wire, c, s, &Segmenting::default(), &mut Rng::new(1));
        // Stop before the first response: requests are open.
        for (i, r) in &recs {
            if *i < conv.expected[0].response_send {
                p.h2_flows(r, 0);
            }
        }
    }
    let s = p.stats().http2;
    assert_eq!(s.connections_evicted_capacity, 1);
    assert_eq!(s.connections, 2);
    p.expire(send_ts(10_000));
    let s = p.stats().http2;
    assert_eq!((s.connections_evicted_timeout, s.connections), (2, 0));

    // One stream per connection: a second open stream evicts the first.
    let mut interleaved = Vec::new();
    for c in &calls[..2] {
        interleaved.push(c.clone());
    }
    let f = Framing::default();
    let conv = Conversation::new(&interleaved, &f, &mut Rng::new(14));
    let (c, s) = keys(1, 9);
    let recs = records(&conv.wire, c, s, &Segmenting::default(), &mut Rng::new(1));
    let flows = run_records(&mut p, &recs);
    assert_eq!(flows.len(), 4, "sequential calls fit one stream");

    // A header block over the limit: counted, that message partial.
    let mut big = unary_calls(2, |_| 0);
    big[0].request_headers = vec![("x-big-0".into(), "b".repeat(3000))];
    let conv = Conversation::new(&big, &f, &mut Rng::new(15));
    let (c, s) = keys(1, 10);
    let recs = records(&conv.wire, c, s, &Segmenting::default(), &mut Rng::new(1));
    let flows = run_records(&mut p, &recs);
    let s = p.stats().http2;
    assert_eq!(s.blocks_oversized, 1);
    // The oversized request gave no record; its response is unpaired.
    assert!(flows.iter().filter(|g| !g.response).count() <= 1);
    assert!(flows.iter().any(|g| g.response && g.unpaired));
}

/// A few hundred cases of each fuzz target (the bulk runs through
/// `cargo xtask fuzz-h2`).
#[test]
fn fuzz_targets_hold_on_a_sample() {
    use super::testkit::fuzz;
    for seed in 0..300 {
        fuzz::walk_case(seed).unwrap();
        fuzz::hpack_case(seed).unwrap();
    }
    for seed in 0..120 {
        fuzz::pairing_case(seed).unwrap();
    }
}

#[test]
fn connection_end_ends_open_streams_without_status() {
    let calls = unary_calls(4, |_| 0);
    let mut c = Conversation::new(&calls, &Framing::default(), &mut Rng::new(16));
    let conv = trim_unanswered(&mut c, 2);
    let mut p = parser(&[]);
    let (ck, sk) = keys(7, 40_000);
    let recs = records(&conv.wire, ck, sk, &Segmenting::default(), &mut Rng::new(1));
    let flows = run_records(&mut p, &recs);
    assert_eq!(
        (
            flows.iter().filter(|g| !g.response).count(),
            flows.iter().filter(|g| g.response).count()
        ),
        (4, 2)
    );
    let last_req_ts = send_ts(conv.wire.sends.len() - 1);
    let fin_ts = last_req_ts + 7_000_000;
    let fin = flowd_common::FlowEvent {
        header: flowd_common::EventHeader {
            kind: flowd_common::EV_TCP_FLAGS,
            ts_ns: fin_ts,
            ..Default::default()
        },
        key: sk,
        pkt_tcp_flags: flowd_common::TCP_FIN | flowd_common::TCP_ACK,
        ..Default::default()
    };
    assert!(p.l34_flow(&fin, 42).is_some());
    // Records of packets before the FIN may still come: nothing yet.
    assert!(p.h2_ended(fin_ts + super::CLOSE_GRACE_NS - 1).is_empty());
    let ended = p.h2_ended(fin_ts + super::CLOSE_GRACE_NS);
    let ended: Vec<Got> = ended
        .into_iter()
        .map(|(flow, dir)| {
            assert_eq!(dir, sk.direction);
            let l7 = flow.l7.clone().unwrap();
            let Some(flowd_proto::flow::layer7::Record::Http(http)) = l7.record.clone() else {
                panic!()
            };
            assert_eq!(
                flow.time.unwrap(),
                flowd_proto::Timestamp::from_unix_nanos(42)
            );
            Got {
                response: true,
                http,
                exchange_id: l7.exchange_id,
                latency_ns: l7.latency_ns,
                unpaired: l7.unpaired,
                flow,
            }
        })
        .collect();
    assert_eq!(ended.len(), 2);
    for g in &ended {
        let req = flows
            .iter()
            .find(|r| !r.response && r.exchange_id == g.exchange_id)
            .unwrap();
        assert_eq!(g.http.url, req.http.url);
        assert_eq!(g.http.code, 0);
        let gr = g.http.grpc.as_ref().unwrap();
        assert_eq!((gr.status_code, gr.messages_exact), (None, false));
        // Both requests went out in the last send: request to FIN.
        assert_eq!(g.latency_ns, fin_ts - last_req_ts);
    }
    assert_eq!(p.stats().http2.connections, 0);
    assert!(p.h2_ended(u64::MAX).is_empty());
}

/// Tens of MB of DATA in large messages (GSO-sized segments, 16 KiB
/// frames): the walk stays in step and the call after it is decoded.
#[test]
fn bulk_streaming_keeps_the_walk_in_step() {
    let bulk = Call {
        request_messages: vec![100],
        response_messages: vec![3 << 20; 8],
        grpc_message: None,
        ..Call::unary("/shop.Catalog/Export", 0)
    };
    let upload = Call {
        request_messages: vec![1 << 20; 12],
        response_messages: vec![10],
        grpc_message: None,
        ..Call::unary("/shop.Catalog/Import", 0)
    };
    let calls = vec![bulk, upload, Call::unary("/shop.Catalog/Get", 5)];
    let conv = Conversation::new(&calls, &Framing::default(), &mut Rng::new(17));
    assert!(conv.wire.server.len() > 24 << 20 && conv.wire.client.len() > 12 << 20);
    let seg = Segmenting {
        mss: 65_000,
        ..Segmenting::default()
    };
    let (flows, p) = run(&conv, &seg, 17);
    check_complete(&conv, &flows);
    assert_eq!(p.stats().http2.losses_parser, 0);
}

#[test]
fn a_new_connection_on_old_ports_whose_server_speaks_first_is_exact() {
    // The same 4-tuple twice (a client reusing its port): the second time
    // the server's first SETTINGS reaches the hook before the client's
    // preface, as it can when the server writes it right after accept.
    let calls = unary_calls(6, |i| [0, 5, 13][i % 3]);
    let conv = Conversation::new(&calls, &Framing::default(), &mut Rng::new(4));
    let (c, s) = keys(7, 40_001);
    let recs = records(&conv.wire, c, s, &Segmenting::default(), &mut Rng::new(4));
    let server_first = recs
        .iter()
        .position(|(_, r)| r.key == s)
        .expect("the server sends");
    let mut reordered = recs.clone();
    let settings = reordered.remove(server_first);
    reordered.insert(0, settings);
    let mut p = parser(&[]);
    check_complete(&conv, &run_records(&mut p, &recs));
    check_complete(&conv, &run_records(&mut p, &reordered));
    let st = p.stats().http2;
    assert_eq!((st.partial_messages, st.losses_parser), (0, 0), "{st:?}");
}
