//! The HTTP/2 frame walker on real GSO buffers: flowd's datapath (the
//! library the daemon runs) attached with TC to a veth, a real TCP
//! connection writing a large DATA frame and then thousands of small ones
//! in one write. TCP hands the TC egress hook GSO buffers of up to 64 KiB,
//! each holding hundreds of the small frames; every frame header and DATA
//! prefix must come out exactly once, nothing else, no loss.
//! (BPF_PROG_TEST_RUN gives TC programs at most a page of linear data, so
//! datapath_test_run cannot build such buffers.) Root.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use flowd::datapath::{Counters, Datapath, DatapathConfig, DatapathEvent, H2Record};
use flowd_common::{DIR_EGRESS, H2_F_PREFACE, H2_F_START};
use flowd_tests::{Pair, add_addr, link_up, wait_oper_up};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PORT: u16 = 50071;

fn frame(ty: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[ty, flags]);
    f.extend_from_slice(&sid.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// DATA frames of gRPC messages of `n` bytes (16 bytes each for n = 2).
fn grpc_data(sid: u32, n: usize) -> Vec<u8> {
    let mut p = vec![0];
    p.extend_from_slice(&(n as u32).to_be_bytes());
    p.extend(std::iter::repeat_n(0x5a, n));
    frame(0, 0, sid, &p)
}

/// The stream ranges the walker sends for whole frames from `seq`: every
/// header and the copied payload prefix (DATA: 6 bytes), adjacent ones joined.
fn kept(seq: u32, stream: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while at + 9 <= stream.len() {
        let len = u32::from_be_bytes([0, stream[at], stream[at + 1], stream[at + 2]]) as usize;
        let copy = match stream[at + 3] {
            1 | 3 | 5 | 9 => len,
            7 => len.min(8),
            0 => len.min(6),
            _ => 0,
        };
        let end = at + 9 + copy;
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

fn joined<'a>(records: impl IntoIterator<Item = &'a H2Record>) -> Vec<(u32, Vec<u8>)> {
    let mut out: Vec<(u32, Vec<u8>)> = Vec::new();
    for c in records.into_iter().flat_map(|r| &r.chunks) {
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

/// What the datapath thread returns: the HTTP/2 records it read and the
/// kernel counters.
type Seen = Result<Result<(Vec<H2Record>, Counters)>>;

/// Runs flowd's datapath on veth-a in `a` until told to stop.
fn datapath(
    pair: &Pair,
    ready: mpsc::Sender<()>,
    stop: mpsc::Receiver<()>,
) -> Result<std::thread::JoinHandle<Seen>> {
    pair.a
        .spawn_thread(move || -> Result<(Vec<H2Record>, Counters)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let cfg = DatapathConfig {
                    interfaces: vec!["veth-a=tc".parse()?],
                    watch_links: false,
                    drops: flowd::datapath::drops::DropsConfig {
                        enabled: false,
                        ..Default::default()
                    },
                    ..DatapathConfig::default()
                };
                let (mut dp, mut rx) = Datapath::start(cfg).await?;
                let _ = ready.send(());
                let mut out = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                loop {
                    tokio::select! {
                        ev = rx.recv() => match ev {
                            Some(DatapathEvent::H2(e)) => out.push(e.record),
                            Some(_) => {}
                            None => bail!("datapath channel closed"),
                        },
                        _ = tick.tick() => {
                            if stop.try_recv().is_ok() {
                                break;
                            }
                        }
                    }
                }
                // Detach, then read what is left in the ring.
                dp.shutdown().await;
                while let Ok(ev) = rx.try_recv() {
                    if let DatapathEvent::H2(e) = ev {
                        out.push(e.record);
                    }
                }
                let c = dp.counters()?;
                Ok((out, c))
            })
        })
}

#[test]
fn hundreds_of_small_frames_per_gso_buffer_are_walked_exactly() -> Result<()> {
    let pair = Pair::create("h2gso")?;
    let (ready_tx, ready) = mpsc::channel();
    let (stop, stop_rx) = mpsc::channel();
    let dp = datapath(&pair, ready_tx, stop_rx)?;
    ready
        .recv_timeout(Duration::from_secs(30))
        .context("datapath did not start")?;
    add_addr(&pair.a, "veth-a", &format!("{}/24", Pair::A4))?;
    add_addr(&pair.b, "veth-b", &format!("{}/24", Pair::B4))?;
    link_up(&pair.a, "veth-a")?;
    link_up(&pair.b, "veth-b")?;
    wait_oper_up(&pair.a, "veth-a")?;
    wait_oper_up(&pair.b, "veth-b")?;

    let listener = pair.b.run(|| TcpListener::bind((Pair::B4, PORT)))??;
    let mut client = pair.a.run(|| TcpStream::connect((Pair::B4, PORT)))??;
    let (mut server, _) = listener.accept()?;
    server.set_read_timeout(Some(Duration::from_secs(30)))?;
    let settings = frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
    // A 1 MiB DATA payload (skipped, across many buffers; it also opens
    // the congestion window), then 4096 small DATA frames in one write.
    let big = frame(0, 0, 1, &vec![0x77; 1 << 20]);
    let small: Vec<u8> = (0..4096u32).flat_map(|i| grpc_data(3 + 2 * i, 2)).collect();
    let stream = [settings, big, small.clone()].concat();
    let writer = std::thread::spawn(move || -> Result<()> {
        client.write_all(PREFACE)?;
        client.write_all(&stream[..stream.len() - small.len()])?;
        client.write_all(&small)?;
        client.flush()?;
        Ok(())
    });
    let total = PREFACE.len() + 15 + (9 + (1 << 20)) + 4096 * 16;
    let mut got = vec![0u8; total];
    server.read_exact(&mut got)?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    stop.send(())?;
    let (records, counters) = dp
        .join()
        .map_err(|_| anyhow::anyhow!("datapath thread panicked"))???;

    // The client's direction at veth-a's egress.
    let mine: Vec<&H2Record> = records
        .iter()
        .filter(|r| r.key.direction == DIR_EGRESS && r.key.dst_port == PORT)
        .collect();
    let first = mine.first().context("no HTTP/2 record")?;
    ensure!(
        first.flags == H2_F_START | H2_F_PREFACE,
        "flags {:#x}",
        first.flags
    );
    ensure!(mine.iter().skip(1).all(|r| r.flags == 0), "later flags");
    let seq = first.chunks[0].seq;
    let after_preface = &got[PREFACE.len()..];
    let want = kept(seq, after_preface);
    let have = joined(mine.iter().copied());
    ensure!(
        have == want,
        "{} ranges sent, {} expected (first difference at {:?})",
        have.len(),
        want.len(),
        have.iter().zip(&want).position(|(a, b)| a != b)
    );
    // One walker run stamps its records with one time: the runs' shares
    // of the small frames (15 bytes sent each) show buffers of hundreds.
    let mut per_run: std::collections::BTreeMap<u64, usize> = Default::default();
    for r in &mine {
        *per_run.entry(r.header.ts_ns).or_default() +=
            r.chunks.iter().map(|c| c.bytes.len()).sum::<usize>();
    }
    let most = per_run.values().max().copied().unwrap_or(0) / 15;
    ensure!(most >= 100, "at most {most} small frames in one buffer");
    ensure!(
        counters.http2_lost_gap
            + counters.http2_lost_evicted
            + counters.http2_lost_ring
            + counters.http2_lost_limit
            + counters.http2_concurrent
            == 0,
        "{counters:?}"
    );
    ensure!(counters.http2_starts_preface == 1, "{counters:?}");
    eprintln!(
        "{} records in {} walker runs; up to {most} small frames in one buffer",
        mine.len(),
        per_run.len()
    );
    Ok(())
}
