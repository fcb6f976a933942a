//! The HTTP/2 frame walker (TC only): recognition of a connection's start,
//! the pieces it sends (every frame header, HEADERS/CONTINUATION/
//! PUSH_PROMISE/RST_STREAM payloads, GOAWAY's first 8 and DATA's first 6
//! payload bytes, nothing else), frames split across packets, many frames
//! in one packet, retransmissions, losses and resynchronisation.
//!
//! Expected pieces are written out for the small cases; the cases with many
//! frames compare with [`kept`], the ranges the contract says are sent,
//! computed from the frames the test built.
use super::*;
use flowd_common::{
    CNT_H2_BUSY, CNT_H2_EVENTS, CNT_H2_LOST_EVICTED, CNT_H2_LOST_GAP, CNT_H2_LOST_LIMIT,
    CNT_H2_LOST_RING, CNT_H2_START_PREFACE, CNT_H2_START_SETTINGS, CNT_H2_SYNCS, FLOW_L7_H2,
    H2_F_LOST, H2_F_PREFACE, H2_F_START, H2W_SYNCED, H2Walk,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const CLIENT: u16 = 41000;
const SERVER: u16 = 50051;
const ISN: u32 = 1_000_000;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One HTTP/2 frame.
fn frame(ty: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&sid.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A SETTINGS frame with `n` parameters.
fn settings(n: u8) -> Vec<u8> {
    let p: Vec<u8> = (0..n).flat_map(|i| [0, i + 1, 0, 0, 0x40, i]).collect();
    frame(SETTINGS, 0, 0, &p)
}

/// A header block of `n` recognisable bytes.
fn block(n: usize, tag: u8) -> Vec<u8> {
    (0..n).map(|i| tag.wrapping_add(i as u8)).collect()
}

/// A DATA frame holding one gRPC message of `n` bytes.
fn grpc_data(sid: u32, n: usize, flags: u8) -> Vec<u8> {
    let mut p = vec![0];
    p.extend_from_slice(&(n as u32).to_be_bytes());
    p.extend(block(n, 0xa0));
    frame(DATA, flags, sid, &p)
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Client → server packet of the test connection (ACK|PSH) at `seq`.
fn c2s(seq: u32, payload: &[u8]) -> Vec<u8> {
    tcp_pkt(false, CLIENT, SERVER, TCP_ACK | TCP_PSH, seq, payload)
}

fn s2c(seq: u32, payload: &[u8]) -> Vec<u8> {
    tcp_pkt(false, SERVER, CLIENT, TCP_ACK | TCP_PSH, seq, payload)
}

/// The client's SYN: the connection's start is seen.
fn syn(dp: &Dp) -> Result<()> {
    dp.run(&tcp_pkt(false, CLIENT, SERVER, TCP_SYN, ISN - 1, &[]))
}

/// Pieces as (seq, bytes).
type Pieces = Vec<(u32, Vec<u8>)>;

fn pieces(r: &H2Record) -> Pieces {
    r.chunks.iter().map(|c| (c.seq, c.bytes.clone())).collect()
}

/// Adjacent pieces joined (across events): the byte ranges sent.
fn joined(evs: &[H2Record]) -> Pieces {
    let mut out: Pieces = Vec::new();
    for c in evs.iter().flat_map(|r| &r.chunks) {
        if let Some((seq, bytes)) = out.last_mut()
            && seq.wrapping_add(bytes.len() as u32) == c.seq
        {
            bytes.extend_from_slice(&c.bytes);
            continue;
        }
        out.push((c.seq, c.bytes.clone()));
    }
    out
}

/// The byte ranges the contract says are sent for a stream of whole frames
/// starting at `seq`: every header and the copied payload prefix, joined
/// when adjacent.
fn kept(seq: u32, stream: &[u8]) -> Pieces {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while at + 9 <= stream.len() {
        let len = u32::from_be_bytes([0, stream[at], stream[at + 1], stream[at + 2]]) as usize;
        let copy = match stream[at + 3] {
            HEADERS | CONTINUATION | PUSH_PROMISE | RST_STREAM => len,
            GOAWAY => len.min(8),
            DATA => len.min(6),
            _ => 0,
        };
        let end = (at + 9 + copy).min(stream.len());
        match ranges.last_mut() {
            Some(r) if r.1 == at => r.1 = end,
            _ => ranges.push((at, end)),
        }
        at += 9 + len;
    }
    ranges
        .into_iter()
        .map(|(a, b)| (seq.wrapping_add(a as u32), stream[a..b].to_vec()))
        .collect()
}

/// Every event of the walker respects the record's bounds and holds
/// pieces that do not continue each other (they would be one piece).
fn check_shape(evs: &[H2Record]) -> Result<()> {
    for r in evs {
        ensure!(
            !r.chunks.is_empty() && r.chunks.len() <= flowd_common::H2_MAX_PIECES,
            "{} pieces",
            r.chunks.len()
        );
        let n: usize = r.chunks.iter().map(|c| c.bytes.len()).sum();
        ensure!(n <= flowd_common::H2_MAX_BYTES, "{n} bytes");
        for w in r.chunks.windows(2) {
            ensure!(
                w[0].seq.wrapping_add(w[0].bytes.len() as u32) != w[1].seq,
                "adjacent pieces not joined: {:?}",
                r.chunks
            );
        }
    }
    Ok(())
}

fn l7_state(dp: &Dp, key: FlowKey) -> Result<u8> {
    let flows = dp.flows()?;
    let (_, s) = flows
        .iter()
        .find(|(k, _)| *k == key)
        .with_context(|| format!("no flow {key:?}"))?;
    Ok(s.l7_state)
}

/// Runs `f` on a fresh object for each TC hook (the walker is TC only).
fn for_tc_hooks(f: impl Fn(&mut Dp) -> Result<()>) -> Result<()> {
    for hook in [Hook::TcIngress, Hook::TcEgress] {
        let mut dp = Dp::new(hook, LONG, 512)?;
        f(&mut dp).with_context(|| format!("hook {hook:?}"))?;
    }
    Ok(())
}

/// The direction's entry in H2_WALK.
fn walk_state(dp: &Dp, key: &FlowKey) -> Result<Option<H2Walk>> {
    let map: HashMap<_, FlowKey, H2Walk> =
        HashMap::try_from(dp.ebpf.map(names::MAP_H2_WALK).context("no H2_WALK")?)?;
    match map.get(key, 0) {
        Ok(w) => Ok(Some(w)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn set_walk_state(dp: &mut Dp, key: &FlowKey, w: Option<H2Walk>) -> Result<()> {
    let mut map: HashMap<_, FlowKey, H2Walk> =
        HashMap::try_from(dp.ebpf.map_mut(names::MAP_H2_WALK).context("no H2_WALK")?)?;
    match w {
        Some(w) => map.insert(key, w, 0)?,
        None => map.remove(key)?,
    }
    Ok(())
}

/// A client connection with its preface and SETTINGS walked: returns the
/// sequence number of the next byte.
fn client_started(dp: &mut Dp) -> Result<u32> {
    syn(dp)?;
    dp.run(&c2s(ISN, &concat(&[PREFACE.to_vec(), settings(1)])))?;
    let evs = dp.h2_events()?;
    ensure!(
        evs.len() == 1 && evs[0].flags == H2_F_START | H2_F_PREFACE,
        "{evs:#?}"
    );
    Ok(ISN + 24 + 15)
}

/// The client preface and the first frames in one packet: one event,
/// flagged START | PREFACE, from the first frame after the preface; the
/// SETTINGS and WINDOW_UPDATE payloads are skipped, HEADERS sent whole,
/// DATA with its 6-byte prefix.
#[test]
fn preface_and_frames_in_one_packet() -> Result<()> {
    for_tc_hooks(|dp| {
        syn(dp)?;
        let hdrs = frame(HEADERS, END_HEADERS, 1, &block(20, 0x10));
        let data = grpc_data(1, 10, END_STREAM);
        let wu = frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0x10, 0]);
        let payload = concat(&[
            PREFACE.to_vec(),
            settings(2),
            wu.clone(),
            hdrs.clone(),
            data.clone(),
        ]);
        dp.run(&c2s(ISN, &payload))?;
        let evs = dp.h2_events()?;
        ensure!(evs.len() == 1, "{evs:#?}");
        let r = &evs[0];
        ensure!(r.flags == H2_F_START | H2_F_PREFACE, "flags {:#x}", r.flags);
        ensure!(
            r.key == dp.key4(PROTO_TCP, CLIENT, SERVER),
            "key {:?}",
            r.key
        );
        let s = ISN + 24;
        let mut third = hdrs.clone();
        third.extend_from_slice(&data[..15]);
        ensure!(
            pieces(r)
                == vec![
                    (s, settings(2)[..9].to_vec()),
                    (s + 21, wu[..9].to_vec()),
                    (s + 34, third),
                ],
            "{:#?}",
            pieces(r)
        );
        ensure!(dp.l7_events()?.is_empty());
        let key = dp.key4(PROTO_TCP, CLIENT, SERVER);
        ensure!(l7_state(dp, key)? == FLOW_L7_PROBED | FLOW_L7_H2);
        let c = dp.counters()?;
        ensure!(
            c[CNT_H2_START_PREFACE as usize] == 1
                && c[CNT_H2_EVENTS as usize] == 1
                && c[CNT_H2_START_SETTINGS as usize] == 0
                && c[CNT_H2_SYNCS as usize] == 0,
            "{c:?}"
        );
        Ok(())
    })
}

/// The preface alone in the connection's first segment sends nothing (there
/// is no frame yet) but starts the walk: the next segment's first event is
/// flagged START | PREFACE and starts at the byte after the preface.
#[test]
fn preface_alone_then_frames() -> Result<()> {
    for_tc_hooks(|dp| {
        syn(dp)?;
        dp.run(&c2s(ISN, PREFACE))?;
        ensure!(dp.h2_events()?.is_empty());
        let key = dp.key4(PROTO_TCP, CLIENT, SERVER);
        ensure!(l7_state(dp, key)? == FLOW_L7_PROBED | FLOW_L7_H2);
        let hdrs = frame(HEADERS, END_HEADERS, 1, &block(30, 0x40));
        dp.run(&c2s(ISN + 24, &concat(&[settings(1), hdrs.clone()])))?;
        let evs = dp.h2_events()?;
        ensure!(evs.len() == 1, "{evs:#?}");
        ensure!(
            evs[0].flags == H2_F_START | H2_F_PREFACE,
            "{:#x}",
            evs[0].flags
        );
        ensure!(
            pieces(&evs[0]) == vec![(ISN + 24, settings(1)[..9].to_vec()), (ISN + 39, hdrs)],
            "{:#?}",
            pieces(&evs[0])
        );
        let c = dp.counters()?;
        ensure!(
            c[CNT_H2_START_PREFACE as usize] == 1 && c[CNT_H2_EVENTS as usize] == 1,
            "{c:?}"
        );
        Ok(())
    })
}

/// The server's direction starts at its first SETTINGS frame (no preface):
/// START without PREFACE; the SETTINGS payload is skipped, the ACK's header sent.
#[test]
fn server_settings_first() -> Result<()> {
    for_tc_hooks(|dp| {
        const SISN: u32 = 7_000_000;
        dp.run(&tcp_pkt(
            false,
            SERVER,
            CLIENT,
            TCP_SYN | TCP_ACK,
            SISN - 1,
            &[],
        ))?;
        let ack = frame(SETTINGS, 0x1, 0, &[]);
        let hdrs = frame(HEADERS, END_HEADERS, 1, &block(12, 0x80));
        dp.run(&s2c(
            SISN,
            &concat(&[settings(3), ack.clone(), hdrs.clone()]),
        ))?;
        let evs = dp.h2_events()?;
        ensure!(evs.len() == 1, "{evs:#?}");
        ensure!(evs[0].flags == H2_F_START, "{:#x}", evs[0].flags);
        let mut second = ack.clone();
        second.extend_from_slice(&hdrs);
        ensure!(
            pieces(&evs[0]) == vec![(SISN, settings(3)[..9].to_vec()), (SISN + 27, second)],
            "{:#?}",
            pieces(&evs[0])
        );
        let key = dp.key4(PROTO_TCP, SERVER, CLIENT);
        ensure!(l7_state(dp, key)? == FLOW_L7_PROBED | FLOW_L7_H2);
        let c = dp.counters()?;
        ensure!(
            c[CNT_H2_START_SETTINGS as usize] == 1 && c[CNT_H2_START_PREFACE as usize] == 0,
            "{c:?}"
        );
        Ok(())
    })
}

/// Hundreds of small frames in one packet (streamed small gRPC messages):
/// every header and every 6-byte DATA prefix, nothing else, in events of at
/// most 8 pieces and 512 bytes. 200 DATA frames whose payload is longer
/// than the prefix give 200 pieces of 15 bytes (25 events); 240 frames
/// whose payload is the prefix give one run of adjacent bytes.
#[test]
fn hundreds_of_small_frames_in_one_packet() -> Result<()> {
    for_tc_hooks(|dp| {
        let mut seq = client_started(dp)?;
        let stream: Vec<u8> = (0..200).flat_map(|i| grpc_data(1 + 2 * i, 2, 0)).collect();
        ensure!(stream.len() == 200 * 16);
        dp.run(&c2s(seq, &stream))?;
        let evs = dp.h2_events()?;
        check_shape(&evs)?;
        ensure!(evs.len() == 25, "{} events", evs.len());
        ensure!(evs.iter().all(|r| r.flags == 0 && r.chunks.len() == 8));
        let got: Pieces = evs.iter().flat_map(pieces).collect();
        let want: Pieces = (0..200u32)
            .map(|i| {
                let at = (i * 16) as usize;
                (seq + i * 16, stream[at..at + 15].to_vec())
            })
            .collect();
        ensure!(got == want, "pieces differ");
        ensure!(joined(&evs) == kept(seq, &stream));
        seq += stream.len() as u32;

        // gRPC messages of 1 byte: the 6-byte prefix is the whole payload,
        // so every byte of the segment is sent, as adjacent pieces.
        let stream: Vec<u8> = (0..240)
            .flat_map(|i| grpc_data(401 + 2 * i, 1, 0))
            .collect();
        ensure!(stream.len() == 240 * 15);
        dp.run(&c2s(seq, &stream))?;
        let evs = dp.h2_events()?;
        check_shape(&evs)?;
        ensure!(evs.iter().all(|r| r.chunks.len() == 1), "{evs:#?}");
        ensure!(joined(&evs) == vec![(seq, stream.clone())]);
        let c = dp.counters()?;
        ensure!(
            c[CNT_H2_EVENTS as usize] == 1 + 25 + evs.len() as u64
                && c[CNT_H2_LOST_LIMIT as usize] == 0
                && c[CNT_H2_LOST_RING as usize] == 0,
            "{c:?}"
        );
        Ok(())
    })
}

/// A frame header split 4 + 5 across segments, and one split 2 + 3 + 4
/// across three: each segment sends the header bytes it holds, and the walk
/// goes on from the reassembled header.
#[test]
fn frame_header_split_across_segments() -> Result<()> {
    for_tc_hooks(|dp| {
        let mut seq = client_started(dp)?;
        let hdrs = frame(HEADERS, END_HEADERS, 1, &block(10, 0x20));
        let data = grpc_data(1, 40, END_STREAM);
        let stream = concat(&[hdrs.clone(), data.clone(), hdrs.clone()]);
        // Splits: HEADERS and 4 bytes of the DATA header | the other 5 and
        // its payload and 2 bytes of the next header | 3 | the rest.
        let cuts = [
            hdrs.len() + 4,
            hdrs.len() + data.len() + 2,
            hdrs.len() + data.len() + 5,
        ];
        let mut prev = 0;
        let mut all = Vec::new();
        for (i, &cut) in cuts.iter().chain([stream.len()].iter()).enumerate() {
            dp.run(&c2s(seq + prev as u32, &stream[prev..cut]))?;
            let evs = dp.h2_events()?;
            check_shape(&evs)?;
            let want: Pieces = match i {
                0 => vec![(seq, stream[..cut].to_vec())],
                // The rest of the DATA header and its 6-byte prefix; then
                // the first 2 bytes of the last header.
                1 => vec![
                    (seq + prev as u32, stream[prev..prev + 5 + 6].to_vec()),
                    (seq + cut as u32 - 2, stream[cut - 2..cut].to_vec()),
                ],
                2 => vec![(seq + prev as u32, stream[prev..cut].to_vec())],
                _ => vec![(seq + prev as u32, stream[prev..].to_vec())],
            };
            ensure!(joined(&evs) == want, "segment {i}: {evs:#?}");
            all.extend(evs);
            prev = cut;
        }
        ensure!(joined(&all) == kept(seq, &stream));
        seq += stream.len() as u32;
        // In step after the splits: a whole frame.
        let ping = frame(PING, 0, 0, &[7; 8]);
        dp.run(&c2s(seq, &ping))?;
        ensure!(joined(&dp.h2_events()?) == vec![(seq, ping[..9].to_vec())]);
        Ok(())
    })
}

/// A header block spanning three segments is sent from each segment
/// (in events of at most 512 bytes); a DATA payload spanning segments is
/// skipped: the segment holding only DATA payload gives no event.
#[test]
fn frames_spanning_segments() -> Result<()> {
    for_tc_hooks(|dp| {
        let seq = client_started(dp)?;
        let big = frame(HEADERS, 0, 1, &block(2000, 0x11));
        let cont = frame(CONTINUATION, END_HEADERS, 1, &block(100, 0x33));
        let data = grpc_data(1, 2995, 0);
        let trailers = frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(7, 0x55));
        let stream = concat(&[big, cont, data, trailers]);
        let data_at = 2009 + 109;
        let cuts = [700, 1400, data_at + 500, data_at + 2000, stream.len()];
        let mut prev = 0;
        let mut all = Vec::new();
        for (i, &cut) in cuts.iter().enumerate() {
            dp.run(&c2s(seq + prev as u32, &stream[prev..cut]))?;
            let evs = dp.h2_events()?;
            check_shape(&evs)?;
            let s = |a: usize, b: usize| (seq + a as u32, stream[a..b].to_vec());
            let want: Pieces = match i {
                0 => vec![s(0, 700)],
                1 => vec![s(700, 1400)],
                // The rest of the block, CONTINUATION, DATA's header and prefix.
                2 => vec![s(1400, data_at + 15)],
                // Only DATA payload: nothing.
                3 => vec![],
                _ => vec![s(data_at + 9 + 3000, stream.len())],
            };
            ensure!(joined(&evs) == want, "segment {i}: {evs:#?}");
            if i == 3 {
                ensure!(evs.is_empty(), "{evs:#?}");
            }
            all.extend(evs);
            prev = cut;
        }
        ensure!(joined(&all) == kept(seq, &stream));
        Ok(())
    })
}

/// Retransmissions give no piece twice: a segment already walked gives no
/// event; one that overlaps the walk position (repacketised) gives only the
/// bytes after it.
#[test]
fn retransmissions_give_no_duplicate_pieces() -> Result<()> {
    for_tc_hooks(|dp| {
        let seq = client_started(dp)?;
        let a = frame(HEADERS, END_HEADERS, 1, &block(20, 1));
        let b = grpc_data(1, 30, END_STREAM);
        let c = frame(HEADERS, END_HEADERS, 3, &block(20, 2));
        let d = frame(RST_STREAM, 0, 3, &[0, 0, 0, 8]);
        let ab = concat(&[a.clone(), b.clone()]);
        dp.run(&c2s(seq, &ab))?;
        ensure!(dp.h2_events()?.len() == 1);
        // The same segment again, and its first half.
        dp.run(&c2s(seq, &ab))?;
        dp.run(&c2s(seq, &ab[..20]))?;
        ensure!(dp.h2_events()?.is_empty());
        // Old and new bytes in one segment: only the new ones.
        let abc = concat(&[ab.clone(), c.clone()]);
        dp.run(&c2s(seq + 10, &abc[10..]))?;
        let evs = dp.h2_events()?;
        ensure!(
            joined(&evs) == vec![(seq + ab.len() as u32, c.clone())],
            "{evs:#?}"
        );
        // A retransmission that ends inside a frame header the walk has
        // passed, then the next frame.
        let next = seq + abc.len() as u32;
        dp.run(&c2s(
            next - 3,
            &concat(&[c[c.len() - 3..].to_vec(), d.clone()]),
        ))?;
        let evs = dp.h2_events()?;
        ensure!(joined(&evs) == vec![(next, d.clone())], "{evs:#?}");
        let cnt = dp.counters()?;
        ensure!(
            cnt[CNT_H2_LOST_GAP as usize] == 0 && cnt[CNT_H2_SYNCS as usize] == 0,
            "{cnt:?}"
        );
        Ok(())
    })
}

/// A sequence gap (a segment the hook did not see) loses the walk, counted;
/// a segment that starts at a frame header and whose frames end with it
/// resynchronises at once (START | LOST); one that starts inside a frame
/// does not, and the walk waits for a segment that does.
#[test]
fn gaps_are_counted_and_resynchronised() -> Result<()> {
    for_tc_hooks(|dp| {
        let mut seq = client_started(dp)?;
        let key = dp.key4(PROTO_TCP, CLIENT, SERVER);
        let h = |sid: u32| frame(HEADERS, END_HEADERS, sid, &block(25, sid as u8));
        // Missed: a whole segment.
        seq += h(1).len() as u32;
        let two = concat(&[h(3), grpc_data(3, 9, END_STREAM)]);
        dp.run(&c2s(seq, &two))?;
        let evs = dp.h2_events()?;
        ensure!(
            evs.len() == 1 && evs[0].flags == H2_F_START | H2_F_LOST,
            "{evs:#?}"
        );
        ensure!(joined(&evs) == kept(seq, &two));
        seq += two.len() as u32;
        let c = dp.counters()?;
        ensure!(
            c[CNT_H2_LOST_GAP as usize] == 1 && c[CNT_H2_SYNCS as usize] == 1,
            "{c:?}"
        );
        // In step again: no flag.
        dp.run(&c2s(seq, &h(5)))?;
        let evs = dp.h2_events()?;
        ensure!(evs.len() == 1 && evs[0].flags == 0, "{evs:#?}");
        seq += h(5).len() as u32;

        // Missed: the start of a DATA frame. The next segment starts in its
        // payload: no event, nothing taken for a frame.
        let data = grpc_data(7, 200, 0);
        let after = concat(&[data[100..].to_vec(), h(9)]);
        dp.run(&c2s(seq + 100, &after))?;
        ensure!(dp.h2_events()?.is_empty());
        ensure!(walk_state(dp, &key)?.is_some_and(|w| w.state & H2W_SYNCED == 0));
        seq += (data.len() + h(9).len()) as u32;
        // Nor a segment with one frame that goes on past its end.
        let long = frame(HEADERS, END_HEADERS, 11, &block(300, 3));
        dp.run(&c2s(seq, &long[..100]))?;
        ensure!(dp.h2_events()?.is_empty());
        dp.run(&c2s(seq + 100, &long[100..]))?;
        ensure!(dp.h2_events()?.is_empty());
        seq += long.len() as u32;
        // A segment of whole frames: found again, still flagged LOST.
        dp.run(&c2s(seq, &h(13)))?;
        let evs = dp.h2_events()?;
        ensure!(
            evs.len() == 1 && evs[0].flags == H2_F_START | H2_F_LOST,
            "{evs:#?}"
        );
        ensure!(joined(&evs) == vec![(seq, h(13))]);
        let c = dp.counters()?;
        ensure!(
            c[CNT_H2_LOST_GAP as usize] == 2 && c[CNT_H2_SYNCS as usize] == 2,
            "{c:?}"
        );
        Ok(())
    })
}

/// A connection seen from the middle (no SYN) is walked only on a
/// configured HTTP/2 port, from a segment whose frames it can follow: one
/// that walks exactly to its end, or holds a whole frame before one that
/// goes on. The first event is flagged START (no loss: nothing was known).
#[test]
fn connections_seen_from_the_middle_on_http2_ports() -> Result<()> {
    for_tc_hooks(|dp| {
        let frames = concat(&[
            frame(HEADERS, END_HEADERS, 21, &block(40, 9)),
            grpc_data(21, 30, END_STREAM),
        ]);
        // Not a configured port: nothing, and the walker is not asked again.
        dp.run(&c2s(5000, &frames))?;
        ensure!(dp.h2_events()?.is_empty());
        let key = dp.key4(PROTO_TCP, CLIENT, SERVER);
        ensure!(l7_state(dp, key)? == flowd_common::FLOW_L7_NO_H2);
        ensure!(walk_state(dp, &key)?.is_none());

        // On a configured port (as the server's and as the client's port).
        dp.set_h2_port(50052)?;
        let up = |seq, p: &[u8]| tcp_pkt(false, 41001, 50052, TCP_ACK | TCP_PSH, seq, p);
        let key = dp.key4(PROTO_TCP, 41001, 50052);
        // Inside a DATA payload: not a place to start.
        dp.run(&up(100, &[0x42; 300]))?;
        // A plausible header whose frame does not end with the segment.
        dp.run(&up(400, &frames[..45]))?;
        ensure!(dp.h2_events()?.is_empty());
        ensure!(walk_state(dp, &key)?.is_none());
        // Frames that end with the segment.
        dp.run(&up(1000, &frames))?;
        let evs = dp.h2_events()?;
        // Begun in the middle: LOST too (the HPACK state before is unknown).
        ensure!(
            evs.len() == 1 && evs[0].flags == H2_F_START | H2_F_LOST,
            "{evs:#?}"
        );
        ensure!(joined(&evs) == kept(1000, &frames));
        ensure!(l7_state(dp, key)? == FLOW_L7_H2);
        // Then in step.
        let next = 1000 + frames.len() as u32;
        dp.run(&up(next, &frames))?;
        let evs = dp.h2_events()?;
        ensure!(evs.len() == 1 && evs[0].flags == 0, "{evs:#?}");

        // The server's side of another connection: a whole HEADERS frame and
        // a DATA frame that goes on in the next segment.
        let resp = concat(&[
            frame(HEADERS, END_HEADERS, 1, &block(10, 4)),
            grpc_data(1, 100, 0),
        ]);
        let down = |seq, p: &[u8]| tcp_pkt(false, 50052, 41002, TCP_ACK | TCP_PSH, seq, p);
        dp.run(&down(9000, &resp[..60]))?;
        dp.run(&down(9060, &resp[60..]))?;
        let evs = dp.h2_events()?;
        ensure!(
            evs.len() == 1 && evs[0].flags == H2_F_START | H2_F_LOST,
            "{evs:#?}"
        );
        ensure!(joined(&evs) == kept(9000, &resp));
        let c = dp.counters()?;
        ensure!(
            c[CNT_H2_SYNCS as usize] == 2
                && c[CNT_H2_LOST_GAP as usize] == 0
                && c[CNT_H2_START_PREFACE as usize] == 0,
            "{c:?}"
        );
        Ok(())
    })
}

/// TCP payloads that are not HTTP/2 give no EV_H2: first payloads that
/// resemble the preface or a SETTINGS frame but are not, other protocols,
/// and (on an HTTP/2 port, seen from the middle) bytes that are no frames.
/// Their flows end FLOW_L7_OFF as before. XDP has no walker: a real
/// HTTP/2 connection gives no EV_H2 there.
#[test]
fn non_http2_payloads_give_no_h2_events() -> Result<()> {
    let tls_hello = {
        let mut v = vec![
            0x16, 0x03, 0x01, 0x00, 0xa0, 0x01, 0x00, 0x00, 0x9c, 0x03, 0x03,
        ];
        v.extend(block(60, 0x61));
        v
    };
    // ACK flag, odd length, stream 1, too many parameters.
    let bad_settings = [
        frame(SETTINGS, 0x1, 0, &[0; 12]),
        frame(SETTINGS, 0, 0, &[0; 13]),
        frame(SETTINGS, 0, 1, &[0; 12]),
        frame(SETTINGS, 0, 0, &[0; 246]),
    ];
    let mut firsts: Vec<Vec<u8>> = vec![
        b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n".to_vec(),
        tls_hello,
        b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
        block(100, 0),
    ];
    for s in &bad_settings {
        let mut p = s.clone();
        p.extend(block(20, 7));
        firsts.push(p);
    }
    for_tc_hooks(|dp| {
        for (i, p) in firsts.iter().enumerate() {
            let port = 42000 + i as u16;
            dp.run(&tcp_pkt(false, port, SERVER, TCP_SYN, 1, &[]))?;
            dp.run(&tcp_pkt(false, port, SERVER, TCP_ACK | TCP_PSH, 2, p))?;
            // A later segment that would be a fine frame is not looked at.
            let f = frame(HEADERS, END_HEADERS, 1, &block(5, 1));
            dp.run(&tcp_pkt(
                false,
                port,
                SERVER,
                TCP_ACK | TCP_PSH,
                2 + p.len() as u32,
                &f,
            ))?;
            let key = dp.key4(PROTO_TCP, port, SERVER);
            ensure!(
                l7_state(dp, key)? == FLOW_L7_PROBED | FLOW_L7_OFF,
                "payload {i}: {:#x}",
                l7_state(dp, key)?
            );
        }
        // Seen from the middle on an HTTP/2 port: TLS records, text, zeros.
        dp.set_h2_port(50053)?;
        for (i, p) in [&firsts[2], &firsts[3], &vec![0u8; 400]].iter().enumerate() {
            let port = 43000 + i as u16;
            dp.run(&tcp_pkt(false, port, 50053, TCP_ACK | TCP_PSH, 1, p))?;
            dp.run(&tcp_pkt(false, 50053, port, TCP_ACK | TCP_PSH, 1, p))?;
        }
        ensure!(dp.h2_events()?.is_empty());
        let c = dp.counters()?;
        for idx in CNT_H2_EVENTS..=CNT_H2_BUSY {
            ensure!(c[idx as usize] == 0, "counter {idx}: {c:?}");
        }
        Ok(())
    })?;
    let mut dp = Dp::new(Hook::Xdp, LONG, 512)?;
    syn(&dp)?;
    dp.run(&c2s(ISN, &concat(&[PREFACE.to_vec(), settings(1)])))?;
    dp.run(&c2s(
        ISN + 39,
        &frame(HEADERS, END_HEADERS, 1, &block(5, 1)),
    ))?;
    ensure!(dp.h2_events()?.is_empty());
    ensure!(dp.counters()?[CNT_H2_START_PREFACE as usize] == 0);
    Ok(())
}

/// HTTP/1.x on an HTTP/2 port and DNS on a port that is both: captured as
/// before, and no EV_H2.
#[test]
fn http1_and_dns_on_http2_ports_are_unchanged() -> Result<()> {
    let q = dns_query(9, "example.org.", RecordType::A);
    for_tc_hooks(|dp| {
        dp.set_h2_port(8080)?;
        dp.set_h2_port(5353)?;
        dp.set_dns_port(5353)?;
        let req = http_request("GET");
        // Seen from the middle and from the start.
        dp.run(&tcp_pkt(false, 44000, 8080, TCP_ACK | TCP_PSH, 10, &req))?;
        dp.run(&tcp_pkt(false, 44001, 8080, TCP_SYN, 1, &[]))?;
        dp.run(&tcp_pkt(false, 44001, 8080, TCP_ACK | TCP_PSH, 2, &req))?;
        dp.run(&udp_pkt(false, 44002, 5353, &q))?;
        let evs = dp.events()?;
        let l7: Vec<u8> = evs
            .iter()
            .filter_map(|e| match e {
                Event::L7(l) => Some(l.l7_kind),
                _ => None,
            })
            .collect();
        ensure!(l7 == [L7_HTTP_REQUEST, L7_HTTP_REQUEST, L7_DNS], "{l7:?}");
        ensure!(!evs.iter().any(|e| matches!(e, Event::H2(_))));
        // A port that is only an HTTP/2 port is no DNS port.
        dp.run(&udp_pkt(false, 44003, 8080, &q))?;
        ensure!(dp.l7_events()?.is_empty());
        Ok(())
    })
}

/// Every frame type: the header of each; the payloads of HEADERS,
/// CONTINUATION, PUSH_PROMISE and RST_STREAM; the first 8 bytes of GOAWAY
/// and 6 of DATA (also padded, and shorter ones whole); nothing of PRIORITY,
/// SETTINGS, PING, WINDOW_UPDATE or unknown types.
#[test]
fn every_frame_type_sends_what_the_contract_says() -> Result<()> {
    for_tc_hooks(|dp| {
        let seq = client_started(dp)?;
        let stream = concat(&[
            frame(PRIORITY, 0, 1, &[0, 0, 0, 3, 15]),
            frame(HEADERS, 0x20 | END_HEADERS, 1, &block(33, 1)),
            frame(CONTINUATION, END_HEADERS, 1, &block(12, 2)),
            frame(PUSH_PROMISE, END_HEADERS, 1, &block(16, 3)),
            frame(DATA, 0x8, 1, &block(40, 4)),
            frame(DATA, 0, 1, &[1, 2, 3]),
            frame(DATA, END_STREAM, 1, &[]),
            frame(RST_STREAM, 0, 1, &[0, 0, 0, 2]),
            frame(SETTINGS, 0, 0, &block(24, 5)),
            frame(PING, 0x1, 0, &block(8, 6)),
            frame(WINDOW_UPDATE, 0, 1, &[0, 1, 0, 0]),
            frame(0x20, 0xff, 7, &block(50, 7)),
            frame(GOAWAY, 0, 0, &block(30, 8)),
            frame(GOAWAY, 0, 0, &block(8, 9)),
        ]);
        dp.run(&c2s(seq, &stream))?;
        let evs = dp.h2_events()?;
        check_shape(&evs)?;
        let want = kept(seq, &stream);
        ensure!(joined(&evs) == want, "{:#?}\nwant {want:#?}", joined(&evs));
        // kept() and the walker agree on the sizes written out here.
        let sent: usize = want.iter().map(|(_, b)| b.len()).sum();
        ensure!(
            sent == 14 * 9 + 33 + 12 + 16 + 6 + 3 + 4 + 8 + 8,
            "{sent} bytes"
        );
        Ok(())
    })
}

/// A full ring buffer loses events, counted (CNT_EVENTS_LOST and
/// CNT_H2_LOST_RING); the walk keeps its place, and the next event that
/// gets through starts at a frame header flagged START | LOST.
#[test]
fn ring_full_loses_events_counted_and_flags_the_next() -> Result<()> {
    for hook in [Hook::TcIngress, Hook::TcEgress] {
        let mut dp = Dp::with_ring(hook, LONG, 512, Some(4096))?;
        let mut seq = client_started(&mut dp)?;
        dp.events()?;
        // 25 events of 8 pieces of 15 bytes: records of 136 + 120 bytes
        // plus the ring's 8-byte header; 4096 bytes hold 15.
        let stream: Vec<u8> = (0..200).flat_map(|i| grpc_data(1 + 2 * i, 2, 0)).collect();
        dp.run(&c2s(seq, &stream))?;
        let evs = dp.h2_events()?;
        ensure!(evs.len() == 15, "{hook:?}: {} events", evs.len());
        ensure!(
            joined(&evs) == kept(seq, &stream[..15 * 8 * 16]),
            "{hook:?}"
        );
        let c = dp.counters()?;
        ensure!(
            c[CNT_H2_LOST_RING as usize] == 10
                && c[CNT_EVENTS_LOST as usize] == 10
                && c[CNT_H2_EVENTS as usize] == 1 + 15,
            "{hook:?}: {c:?}"
        );
        seq += stream.len() as u32;
        let h = frame(HEADERS, END_HEADERS, 501, &block(20, 1));
        dp.run(&c2s(seq, &h))?;
        let evs = dp.h2_events()?;
        ensure!(
            evs.len() == 1 && evs[0].flags == H2_F_START | H2_F_LOST,
            "{hook:?}: {evs:#?}"
        );
        ensure!(joined(&evs) == vec![(seq, h)], "{hook:?}");
        ensure!(dp.counters()?[CNT_H2_LOST_GAP as usize] == 0);
    }
    Ok(())
}

/// A walk state evicted from H2_WALK (here removed from user space) is a
/// counted loss; the walk resumes at the next segment of whole frames.
/// A direction another CPU is walking (its entry held) leaves the packet,
/// counted; the bytes it held are then a gap.
#[test]
fn evicted_and_busy_walks_are_counted() -> Result<()> {
    for_tc_hooks(|dp| {
        let mut seq = client_started(dp)?;
        let key = dp.key4(PROTO_TCP, CLIENT, SERVER);
        set_walk_state(dp, &key, None)?;
        let h = |sid: u32| frame(HEADERS, END_HEADERS, sid, &block(10, sid as u8));
        dp.run(&c2s(seq, &h(1)))?;
        let evs = dp.h2_events()?;
        ensure!(
            evs.len() == 1 && evs[0].flags == H2_F_START | H2_F_LOST,
            "{evs:#?}"
        );
        seq += h(1).len() as u32;
        let c = dp.counters()?;
        ensure!(
            c[CNT_H2_LOST_EVICTED as usize] == 1 && c[CNT_H2_SYNCS as usize] == 1,
            "{c:?}"
        );

        let mut w = walk_state(dp, &key)?.context("no walk state")?;
        ensure!(w.next_seq == seq && w.state == H2W_SYNCED, "{w:?}");
        w.busy = 1;
        set_walk_state(dp, &key, Some(w))?;
        dp.run(&c2s(seq, &h(3)))?;
        ensure!(dp.h2_events()?.is_empty());
        ensure!(dp.counters()?[CNT_H2_BUSY as usize] == 1);
        w.busy = 0;
        set_walk_state(dp, &key, Some(w))?;
        seq += h(3).len() as u32;
        dp.run(&c2s(seq, &h(5)))?;
        let evs = dp.h2_events()?;
        ensure!(
            evs.len() == 1 && evs[0].flags == H2_F_START | H2_F_LOST,
            "{evs:#?}"
        );
        ensure!(dp.counters()?[CNT_H2_LOST_GAP as usize] == 1);
        Ok(())
    })
}

/// A new connection on the 4-tuple of an earlier one (its flow entry still
/// there): the SYN makes the walker forget the earlier connection's state,
/// so its first payload decides anew, whatever its sequence numbers.
#[test]
fn a_new_connection_on_the_same_four_tuple_starts_over() -> Result<()> {
    for_tc_hooks(|dp| {
        let seq = client_started(dp)?;
        let key = dp.key4(PROTO_TCP, CLIENT, SERVER);
        // Not HTTP/2 this time, at a sequence number behind the old walk.
        dp.run(&tcp_pkt(false, CLIENT, SERVER, TCP_SYN, 10, &[]))?;
        ensure!(walk_state(dp, &key)?.is_none());
        dp.run(&c2s(11, b"SSH-2.0-OpenSSH_9.6\r\n"))?;
        ensure!(l7_state(dp, key)? == FLOW_L7_PROBED | FLOW_L7_OFF);
        // HTTP/2 again, behind and ahead of the first walk.
        for isn in [seq - 5000, seq + 5000] {
            dp.run(&tcp_pkt(false, CLIENT, SERVER, TCP_SYN, isn - 1, &[]))?;
            let p = concat(&[PREFACE.to_vec(), settings(1)]);
            dp.run(&c2s(isn, &p))?;
            let evs = dp.h2_events()?;
            ensure!(
                evs.len() == 1 && evs[0].flags == H2_F_START | H2_F_PREFACE,
                "{evs:#?}"
            );
            ensure!(joined(&evs) == vec![(isn + 24, settings(1)[..9].to_vec())]);
        }
        let c = dp.counters()?;
        ensure!(
            c[CNT_H2_START_PREFACE as usize] == 3 && c[CNT_H2_LOST_GAP as usize] == 0,
            "{c:?}"
        );
        Ok(())
    })
}
