//! Fuzz cases of the HTTP/2 parser, each a pure function of its seed (run
//! in bulk by `cargo xtask fuzz-h2`, a few in the unit tests):
//!
//! * [`walk_case`]: the frame walk and everything after it over arbitrary
//!   records: random bytes and flags, frame-shaped garbage, and valid
//!   conversations mutated (bits flipped, pieces cut, moved, dropped,
//!   repeated). No panic, state within its bounds, only HTTP/2 records.
//! * [`hpack_case`]: flowd's HPACK decoder against loona-hpack's on encoded
//!   header lists (with size updates and evictions), on random and mutated
//!   blocks; a decoder that starts late reports every field as the truth or
//!   as unknown, never as something else.
//! * [`pairing_case`]: random calls on a connection (gRPC of every shape,
//!   plain HTTP/2, resets, big headers), framed and segmented at random:
//!   seen whole, every call is reported complete and right; joined in the
//!   middle, with a lost segment, or with every field indexed, no record
//!   says anything false.

use crate::parser::http2::hpack::HuffmanDecoder;

use super::verify;
use super::{Call, Conversation, Encoder, Framing, Rng, Segmenting, frame, keys, records};
use crate::datapath::{H2Chunk, H2Record};
use crate::parser::http2::H2Limits;
use crate::parser::http2::hpack::{Decoder, Field};
use crate::parser::{HttpConfig, Parser, ParserConfig, RedactConfig};

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len())]
}

fn printable(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b' ' + rng.below(95) as u8))
        .collect()
}

/// A random call, its path unique by `i`.
pub fn random_call(rng: &mut Rng, i: usize) -> Call {
    let path = format!("/fz.S{}/M{i}", rng.below(3));
    let sizes = |rng: &mut Rng, n: usize| -> Vec<usize> {
        (0..n)
            .map(|_| {
                if rng.chance(5) {
                    20_000 + rng.below(30_000)
                } else {
                    rng.below(3000)
                }
            })
            .collect()
    };
    let mut c = match rng.below(6) {
        0 => Call::unary(&path, 0),
        1 => Call::unary(&path, 1 + rng.below(16) as u32),
        2 => {
            let n = rng.below(8);
            Call {
                request_messages: sizes(rng, 1),
                response_messages: sizes(rng, n),
                grpc_message: None,
                ..Call::unary(&path, 0)
            }
        }
        3 => {
            let n = rng.below(8);
            Call {
                request_messages: sizes(rng, n),
                response_messages: sizes(rng, 1),
                ..Call::unary(&path, 0)
            }
        }
        4 => {
            let (q, r) = (rng.below(6), rng.below(6));
            let status = rng.below(17) as u32;
            Call {
                request_messages: sizes(rng, q),
                response_messages: sizes(rng, r),
                trailers_only: false,
                grpc_message: (status != 0).then(|| printable(rng, 30)),
                ..Call::unary(&path, status)
            }
        }
        _ => {
            let method = *pick(rng, &["GET", "POST", "PUT", "DELETE"]);
            let status = *pick(rng, &[200u16, 201, 204, 301, 404, 500, 503]);
            let mut c = Call::plain(method, &path, status, rng.below(5000));
            if method != "GET" && rng.chance(50) {
                c.request_messages = vec![rng.below(4000)];
            }
            c
        }
    };
    if rng.chance(3) {
        c.reset = Some(rng.below(14) as u32);
    }
    if rng.chance(20) {
        let n = rng.below(3000);
        c.request_headers
            .push((format!("x-big-{}", rng.below(3)), printable(rng, n)));
    }
    if rng.chance(20) {
        let n = rng.below(3000);
        c.response_headers
            .push((format!("x-big-{}", rng.below(3)), printable(rng, n)));
    }
    if rng.chance(30) {
        c.request_headers
            .push(("x-request-id".into(), format!("r{}", rng.below(5))));
    }
    c
}

pub fn random_framing(rng: &mut Rng) -> Framing {
    Framing {
        max_data_frame: *pick(rng, &[16_384, 16_384, 1000, 100, 7]),
        max_header_fragment: *pick(rng, &[16_384, 16_384, 200, 20]),
        pad: if rng.chance(20) {
            rng.below(256) as u8
        } else {
            0
        },
        pack_messages: rng.chance(20),
        interleave: rng.chance(50),
        control_frames: rng.chance(30),
        huffman: rng.chance(80),
        table_size: rng.chance(30).then(|| rng.below(8192)),
        server_first: rng.chance(50),
    }
}

pub fn random_segmenting(rng: &mut Rng) -> Segmenting {
    Segmenting {
        mss: *pick(rng, &[1448, 1448, 500, 100, 9, 1]),
        split_pieces: rng.chance(50),
        duplicate_percent: *pick(rng, &[0, 0, 10]),
    }
}

fn parser(capture: &[&str], limits: H2Limits) -> Result<Parser, String> {
    let h: Vec<String> = capture.iter().map(|s| s.to_string()).collect();
    Ok(Parser::new(ParserConfig {
        http: HttpConfig::new(&h, RedactConfig::default()).map_err(|e| e.to_string())?,
        http2: limits,
        ..ParserConfig::default()
    }))
}

/// Random calls through the parser, seen whole or not (see the module doc).
pub fn pairing_case(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let n = 1 + rng.below(10);
    let calls: Vec<Call> = (0..n).map(|i| random_call(&mut rng, i)).collect();
    let f = random_framing(&mut rng);
    let seg = random_segmenting(&mut rng);
    let scenario = seed % 4;
    let conv = if scenario == 3 {
        // An encoder that indexes every field (as Go's does).
        Conversation::new_with(&calls, &f, &mut rng, |e| e.no_index.clear())
    } else {
        Conversation::new(&calls, &f, &mut rng)
    };
    let mut p = parser(&["x-request-id", "x-big-0"], H2Limits::default())?;
    let sends = conv.wire.sends.len();
    let recs = match scenario {
        0 => {
            let (c, s) = keys(7, 40_000);
            let recs = records(&conv.wire, c, s, &seg, &mut rng);
            let flows = verify::run_records(&mut p, &recs)?;
            verify::complete(&conv, &flows).map_err(|e| format!("{e} (seed {seed})"))?;
            let st = p.stats().http2;
            check!(
                st.partial_messages == 0 && st.losses_parser == 0 && st.streams == 0,
                "seen whole: {st:?}"
            );
            return Ok(());
        }
        1 | 3 => {
            let join = 3 + rng.below(sends.saturating_sub(3).max(1));
            let flags = flowd_common::H2_F_START | flowd_common::H2_F_LOST;
            verify::joined_records(&conv, join, flags, &seg, &mut rng)
        }
        _ => {
            let victim = 3 + rng.below(sends.saturating_sub(3).max(1));
            verify::lossy_records(&conv, victim, rng.chance(50), &mut rng)
        }
    };
    let flows = verify::run_records(&mut p, &recs)?;
    verify::truthful(&calls, &flows).map_err(|e| format!("{e} (seed {seed})"))
}

/// Small limits, so that the walk cases reach every eviction.
fn small_limits() -> H2Limits {
    H2Limits {
        max_connections: 3,
        max_streams: 4,
        max_header_block: 2048,
        max_age_ns: 1_000_000_000,
    }
}

/// A frame-shaped piece of garbage: a plausible header, random payload.
fn frame_like(rng: &mut Rng) -> Vec<u8> {
    let kind = rng.below(11) as u8;
    let len = match kind {
        2 => 5,
        3 | 8 => 4,
        6 => 8,
        4 => 6 * rng.below(3),
        _ => rng.below(60),
    };
    let stream = if matches!(kind, 4 | 6 | 7) {
        0
    } else {
        1 + rng.below(9) as u32
    };
    let payload = rng.bytes(len);
    frame(kind, rng.below(256) as u8, stream, &payload)
}

/// Arbitrary records through the parser (see the module doc).
pub fn walk_case(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let limits = small_limits();
    let mut p = parser(&["x-request-id"], limits)?;
    let ports = [40_000u16, 40_001, 40_002, 40_003];
    let mut recs: Vec<H2Record> = Vec::new();
    match seed % 3 {
        0 => {
            // Random records of a few connections, random or frame-shaped bytes.
            for _ in 0..1 + rng.below(40) {
                let (c, s) = keys(1, *pick(&mut rng, &ports));
                let key = if rng.chance(50) { c } else { s };
                let mut chunks = Vec::new();
                let mut seq = 1000 + rng.below(64) as u32;
                for _ in 0..rng.below(9) {
                    let bytes = if rng.chance(50) {
                        frame_like(&mut rng)
                    } else {
                        let n = rng.below(120);
                        rng.bytes(n)
                    };
                    if rng.chance(30) {
                        seq = seq.wrapping_add(rng.below(40) as u32);
                    }
                    chunks.push(H2Chunk {
                        seq,
                        bytes: bytes.clone(),
                    });
                    seq = seq.wrapping_add(bytes.len() as u32);
                }
                recs.push(H2Record {
                    header: Default::default(),
                    key,
                    flags: rng.below(8) as u8,
                    chunks,
                });
            }
        }
        _ => {
            // Valid conversations, mutated.
            for port in &ports[..1 + rng.below(3)] {
                let n = 1 + rng.below(6);
                let calls: Vec<Call> = (0..n).map(|i| random_call(&mut rng, i)).collect();
                let f = random_framing(&mut rng);
                let conv = Conversation::new(&calls, &f, &mut rng);
                let seg = random_segmenting(&mut rng);
                let (c, s) = keys(2, *port);
                recs.extend(
                    records(&conv.wire, c, s, &seg, &mut rng)
                        .into_iter()
                        .map(|r| r.1),
                );
            }
            for _ in 0..1 + rng.below(6) {
                if recs.is_empty() {
                    break;
                }
                let i = rng.below(recs.len());
                match rng.below(7) {
                    0 => {
                        recs.remove(i);
                    }
                    1 => {
                        let r = recs[i].clone();
                        let j = rng.below(recs.len());
                        recs.insert(j, r);
                    }
                    2 => recs[i].flags = rng.below(8) as u8,
                    3 => {
                        if let Some(c) = recs[i].chunks.first_mut() {
                            c.seq = c.seq.wrapping_add(rng.below(20) as u32).wrapping_sub(10);
                        }
                    }
                    4 => {
                        if let Some(c) = recs[i].chunks.last_mut() {
                            let keep = rng.below(c.bytes.len() + 1);
                            c.bytes.truncate(keep);
                        }
                    }
                    _ => {
                        for c in &mut recs[i].chunks {
                            if !c.bytes.is_empty() && rng.chance(50) {
                                let at = rng.below(c.bytes.len());
                                c.bytes[at] ^= 1 << rng.below(8);
                            }
                        }
                    }
                }
            }
        }
    }
    let mut ts = 0u64;
    for r in &mut recs {
        ts += 1_000 + rng.below(100_000_000) as u64;
        r.header.ts_ns = ts;
        for (flow, _) in p.h2_flows(r, ts) {
            let Some(flowd_proto::flow::layer7::Record::Http(h)) =
                flow.l7.as_ref().and_then(|l| l.record.as_ref())
            else {
                return Err(format!("not an HTTP record: {flow:?}"));
            };
            check!(h.protocol == "HTTP/2", "protocol {:?}", h.protocol);
        }
        let st = p.stats().http2;
        check!(
            st.connections as usize <= limits.max_connections,
            "{} connections",
            st.connections
        );
        check!(
            st.streams as usize <= limits.max_connections * limits.max_streams,
            "{} streams",
            st.streams
        );
        if rng.chance(5) {
            p.expire(ts);
        }
    }
    Ok(())
}

type Fields = Vec<Option<(Vec<u8>, Vec<u8>)>>;

fn ours(d: &mut Decoder, block: &[u8], huff: &mut HuffmanDecoder) -> Result<Fields, String> {
    let mut out = Vec::new();
    d.decode(block, huff, |f| {
        out.push(match f {
            Field::Known { name, value } => Some((name.to_vec(), value.to_vec())),
            Field::Unknown => None,
        })
    })
    .map_err(|e| e.to_string())?;
    Ok(out)
}

/// flowd's HPACK decoder against loona-hpack's (see the module doc).
pub fn hpack_case(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let mut huff = HuffmanDecoder::new();
    let mut mine = Decoder::default();
    let mut theirs = loona_hpack::Decoder::new();
    let mut enc = Encoder::new(rng.chance(70));
    if rng.chance(50) {
        enc.no_index.clear();
    }
    // A decoder that starts late: every field it knows is the truth.
    let late_from = rng.below(6);
    let mut late = Decoder::new(false);
    let mode = seed % 3;
    let names = [
        ":method",
        ":path",
        ":authority",
        ":status",
        "content-type",
        "grpc-status",
        "x-big",
        "cookie",
        "authorization",
        "x-id",
    ];
    for block_no in 0..1 + rng.below(8) {
        let (block, truth) = match mode {
            0 | 1 => {
                if rng.chance(10) {
                    enc.set_max_size(rng.below(5000));
                }
                let headers: Vec<(String, String)> = (0..rng.below(10))
                    .map(|_| {
                        let name = pick(&mut rng, &names).to_string();
                        let len = if name == "x-big" {
                            rng.below(3000)
                        } else {
                            rng.below(3) * rng.below(12)
                        };
                        (name, printable(&mut rng, len))
                    })
                    .collect();
                let mut block = enc.encode(&headers);
                let truth: Option<Fields> = if mode == 1 && !block.is_empty() {
                    // Mutated: flowd may disagree with the truth but not
                    // with loona-hpack.
                    for _ in 0..1 + rng.below(3) {
                        let at = rng.below(block.len());
                        block[at] ^= 1 << rng.below(8);
                    }
                    None
                } else {
                    Some(
                        headers
                            .into_iter()
                            .map(|(n, v)| Some((n.into_bytes(), v.into_bytes())))
                            .collect(),
                    )
                };
                (block, truth)
            }
            _ => {
                let n = rng.below(64);
                (rng.bytes(n), None)
            }
        };
        let want = theirs.decode(&block);
        let got = ours(&mut mine, &block, &mut huff);
        if block_no >= late_from {
            let l = ours(&mut late, &block, &mut huff);
            if let (Some(t), Ok(l)) = (&truth, &l) {
                check!(l.len() == t.len(), "late decoder: {} fields", l.len());
                for (a, b) in l.iter().zip(t) {
                    check!(
                        a.is_none() || a == b,
                        "late decoder says {a:?}, the truth is {b:?}"
                    );
                }
            } else if truth.is_some() {
                return Err(format!("late decoder failed on a valid block: {l:?}"));
            }
        }
        let Ok(want) = want else {
            // loona-hpack refused the block (its table is no longer
            // comparable): flowd must not panic, that is all.
            return Ok(());
        };
        let want: Fields = want.into_iter().map(Some).collect();
        let got = got.map_err(|e| format!("loona-hpack decoded what flowd refused: {e}"))?;
        check!(got == want, "flowd {got:?} != loona-hpack {want:?}");
        if let Some(t) = truth {
            check!(got == t, "flowd {got:?} != the truth {t:?}");
        }
    }
    Ok(())
}
