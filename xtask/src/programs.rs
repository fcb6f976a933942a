//! `cargo xtask bench-programs`: the per-packet cost of the datapath
//! programs on their hit path (a packet of a flow already in the per-CPU
//! flow cache, i.e. nearly every packet of a real flow), measured with
//! BPF_PROG_TEST_RUN instead of live traffic.
//!
//! Each case is one crafted packet that a program runs `repeat` times in one
//! syscall; the kernel reports the mean ns per run. The empty pass-through
//! program of the same hook runs the same packet in the same round, so the
//! difference is what flowd adds. Caches stay warm, so this isolates the
//! instructions of the path from the memory traffic of live runs
//! (`cargo xtask profile` measures those); it is also far less noisy, which
//! makes it the tool for comparing datapath variants (`--variant`).
//!
//! Before each case the flow is primed as live traffic would leave it: a TCP
//! flow has seen its handshake (and, with payload, its first data segment,
//! which decides L7 capture for the connection). Config as flowd's default:
//! 5 s aggregation interval, L7 capture on (512 bytes).
use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context, Result, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use etherparse::{PacketBuilder, PacketBuilderStep};
use flowd::datapath::{FULL_PATHS_TC, FULL_PATHS_XDP, install_full_paths};
use flowd_common::{CNT_FULL_PATH_RUNS, Config, names};

use crate::stats::median;

/// flowd's defaults (DatapathConfig).
const INTERVAL_NS: u64 = 5_000_000_000;
const L7_MAX_BYTES: u32 = 512;

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const V4_A: [u8; 4] = [10, 1, 0, 5];
const V4_B: [u8; 4] = [10, 1, 1, 9];
const V6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
const V6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 9];
const SPORT: u16 = 40000;
const DPORT: u16 = 5201;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Hook {
    TcIngress,
    TcEgress,
    Xdp,
}

impl Hook {
    const ALL: [Hook; 3] = [Hook::TcIngress, Hook::TcEgress, Hook::Xdp];

    fn program(self) -> &'static str {
        match self {
            Hook::TcIngress => names::PROG_TC_INGRESS,
            Hook::TcEgress => names::PROG_TC_EGRESS,
            Hook::Xdp => names::PROG_XDP,
        }
    }

    fn empty(self) -> &'static str {
        match self {
            Hook::TcIngress => names::PROG_TC_EMPTY_INGRESS,
            Hook::TcEgress => names::PROG_TC_EMPTY_EGRESS,
            Hook::Xdp => names::PROG_XDP_EMPTY,
        }
    }
}

/// One measured packet, with the packets that prime its flow first.
struct Case {
    name: &'static str,
    prime: Vec<Vec<u8>>,
    packet: Vec<u8>,
}

fn eth() -> PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(MAC_A, MAC_B)
}

/// An application payload that is neither HTTP nor DNS (bytes 0, 1, 2, …:
/// its "DNS header" fails the question-count check, after the opcode and Z-bit checks).
fn opaque(n: usize) -> Vec<u8> {
    (0..n).map(|i| i as u8).collect()
}

/// A payload whose first 12 bytes pass every DNS header check (a query
/// with one question): on a port that is not a DNS port, the worst case of
/// the UDP L7 probe.
fn dns_like(n: usize) -> Vec<u8> {
    let mut p = opaque(n);
    p[..12].copy_from_slice(&[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    p
}

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

fn udp(f: Family, payload: &[u8]) -> Result<Vec<u8>> {
    let b = match f {
        Family::V4 => eth().ipv4(V4_A, V4_B, 64),
        Family::V6 => eth().ipv6(V6_A, V6_B, 64),
    };
    let b = b.udp(SPORT, DPORT);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload)
        .context("building a UDP packet")?;
    Ok(out)
}

/// TCP segment with SYN / ACK as given, PSH when there is payload.
fn tcp(f: Family, syn: bool, ack: bool, seq: u32, payload: &[u8]) -> Result<Vec<u8>> {
    let b = match f {
        Family::V4 => eth().ipv4(V4_A, V4_B, 64),
        Family::V6 => eth().ipv6(V6_A, V6_B, 64),
    };
    let mut b = b.tcp(SPORT, DPORT, seq, 65535);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(1);
    }
    if !payload.is_empty() {
        b = b.psh();
    }
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload)
        .context("building a TCP packet")?;
    Ok(out)
}

fn cases() -> Result<Vec<Case>> {
    let mut v = Vec::new();
    for (f, fam) in [(Family::V4, "ipv4"), (Family::V6, "ipv6")] {
        let name = |s: &str| -> &'static str { format!("{fam} {s}").leak() };
        v.push(Case {
            name: name("UDP, 64-byte payload"),
            prime: vec![],
            packet: udp(f, &opaque(64))?,
        });
        v.push(Case {
            name: name("TCP ACK"),
            prime: vec![tcp(f, true, false, 0, &[])?],
            packet: tcp(f, false, true, 1, &[])?,
        });
        v.push(Case {
            name: name("TCP, 64-byte payload"),
            prime: vec![
                tcp(f, true, false, 0, &[])?,
                tcp(f, false, true, 1, &opaque(64))?,
            ],
            packet: tcp(f, false, true, 65, &opaque(64))?,
        });
    }
    v.push(Case {
        name: "ipv4 UDP, DNS-like payload, port 5201",
        prime: vec![],
        packet: udp(Family::V4, &dns_like(64))?,
    });
    Ok(v)
}

/// One loaded copy of an object: the three flowd programs and both empty ones.
struct Loaded {
    ebpf: Ebpf,
    /// Whether the object has full-path programs (and their run counter):
    /// objects from before the hit/full split do not.
    split: bool,
}

impl Loaded {
    fn new(object: &[u8]) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(
                names::MAP_FLOW_CACHE,
                flowd::datapath::flow_cache_entries()?,
            )
            .load(object)
            .context("loading the eBPF object")?;
        for name in [names::PROG_TC_INGRESS, names::PROG_TC_EGRESS] {
            let p: &mut SchedClassifier = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing"))?
                .try_into()?;
            p.load()
                .with_context(|| format!("verifier rejected {name}"))?;
        }
        // Only the first variant's empty programs are run (the baseline);
        // older objects have one empty TC program for both hooks.
        for name in [names::PROG_TC_EMPTY_INGRESS, names::PROG_TC_EMPTY_EGRESS] {
            if let Some(p) = ebpf.program_mut(name) {
                let p: &mut SchedClassifier = p.try_into()?;
                p.load()
                    .with_context(|| format!("verifier rejected {name}"))?;
            }
        }
        for name in [names::PROG_XDP, names::PROG_XDP_EMPTY] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing"))?
                .try_into()?;
            p.load()
                .with_context(|| format!("verifier rejected {name}"))?;
        }
        let split = ebpf.map(FULL_PATHS_TC.0).is_some();
        install_full_paths(&mut ebpf, FULL_PATHS_TC)?;
        install_full_paths(&mut ebpf, FULL_PATHS_XDP)?;
        let mut config: Array<_, Config> =
            Array::try_from(ebpf.map_mut(names::MAP_CONFIG).context("no CONFIG map")?)?;
        config.set(
            0,
            Config {
                aggregation_interval_ns: INTERVAL_NS,
                l7_max_bytes: L7_MAX_BYTES,
                _pad: [0; 4],
            },
            0,
        )?;
        Ok(Self { ebpf, split })
    }

    /// Full-path runs so far, summed over CPUs (objects without the
    /// counter report 0).
    fn full_path_runs(&self) -> Result<u64> {
        let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(names::MAP_COUNTERS)
                .context("no COUNTERS map")?,
        )?;
        Ok(counters.get(&CNT_FULL_PATH_RUNS, 0)?.iter().sum())
    }

    /// Mean ns per run of `program` over `repeat` runs on `data`.
    fn run(&self, program: &str, xdp: bool, data: &[u8], repeat: u32) -> Result<f64> {
        let opts = TestRunOptions {
            data_in: Some(data),
            repeat,
            ..TestRunOptions::default()
        };
        let prog = self
            .ebpf
            .program(program)
            .with_context(|| format!("program {program} missing"))?;
        let res = if xdp {
            <&Xdp>::try_from(prog)?.test_run(opts)
        } else {
            <&SchedClassifier>::try_from(prog)?.test_run(opts)
        }
        .with_context(|| format!("BPF_PROG_TEST_RUN of {program}"))?;
        // The kernel reports the mean over the repeats, in whole ns; the
        // total is not available, so sub-ns resolution comes from rounds.
        Ok(res.duration.as_nanos() as f64)
    }
}

/// (case, hook, variant) → one value per round.
type Table = BTreeMap<(usize, Hook, String), Vec<f64>>;

pub fn bench(variants: &[(String, Vec<u8>)], rounds: usize, repeat: u32) -> Result<String> {
    ensure!(rounds >= 1, "--rounds must be at least 1");
    ensure!(repeat >= 1, "--repeat must be at least 1");
    ensure!(!variants.is_empty(), "no eBPF object to measure");
    let cases = cases()?;
    let loaded = variants
        .iter()
        .map(|(n, o)| Loaded::new(o).with_context(|| format!("variant {n}")))
        .collect::<Result<Vec<_>>>()?;
    // ns/run, ns over the empty program, share of runs that took the full path.
    let mut ns: Table = BTreeMap::new();
    let mut over: Table = BTreeMap::new();
    let mut full: Table = BTreeMap::new();
    for round in 0..rounds {
        for (ci, case) in cases.iter().enumerate() {
            for hook in Hook::ALL {
                let xdp = hook == Hook::Xdp;
                // The baseline: the first variant's empty program.
                let mut this = Vec::new();
                for k in 0..=loaded.len() {
                    // Rotate the order so no variant always runs first.
                    let k = (k + round) % (loaded.len() + 1);
                    let (name, l, prog) = if k == loaded.len() {
                        ("empty", &loaded[0], hook.empty())
                    } else {
                        (variants[k].0.as_str(), &loaded[k], hook.program())
                    };
                    for p in &case.prime {
                        l.run(prog, xdp, p, 1)?;
                    }
                    // Warm-up (fills the flow cache slot), then the measured repeats.
                    l.run(prog, xdp, &case.packet, 16)?;
                    let before = l.full_path_runs()?;
                    let v = l.run(prog, xdp, &case.packet, repeat)?;
                    if name != "empty" && l.split {
                        let f = l.full_path_runs()?.saturating_sub(before);
                        full.entry((ci, hook, name.to_owned()))
                            .or_default()
                            .push(f as f64 / f64::from(repeat));
                    }
                    this.push((name.to_owned(), v));
                }
                let empty = this
                    .iter()
                    .find(|(n, _)| n == "empty")
                    .map(|(_, v)| *v)
                    .context("no baseline")?;
                for (n, v) in this {
                    if n != "empty" {
                        over.entry((ci, hook, n.clone()))
                            .or_default()
                            .push(v - empty);
                    }
                    ns.entry((ci, hook, n)).or_default().push(v);
                }
            }
        }
    }
    let mut out = String::new();
    writeln!(
        out,
        "### Datapath hit path — `cargo xtask bench-programs` (also run by `cargo xtask bench`)\n\n\
         BPF_PROG_TEST_RUN on crafted packets of a flow already in the flow cache (a TCP flow \
         after its handshake and, with payload, after the first data segment), {repeat} runs per \
         measurement, {rounds} rounds, medians; \"over empty\" is the median of per-round \
         differences to the empty program of the same hook; \"full path\" is the share of runs \
         that went on to the full path (here only on the odd jiffies tick; L7 payloads, new TCP \
         flags and reports take it in real traffic). Caches stay warm: this is \
         the cost of the instructions, not of the memory a live run touches (see `bench` above). \
         Config as flowd's default (5 s interval, L7 on, 512 bytes).\n"
    )?;
    let mut header = "| packet | hook | empty ns/run |".to_owned();
    let mut rule = "|---|---|---|".to_owned();
    for (n, _) in variants {
        write!(header, " {n} ns/run | {n} over empty | {n} full path |")?;
        rule.push_str("---|---|---|");
    }
    writeln!(out, "{header}\n{rule}")?;
    for (ci, case) in cases.iter().enumerate() {
        for hook in Hook::ALL {
            let empty = ns
                .get(&(ci, hook, "empty".to_owned()))
                .map_or(f64::NAN, |v| median(v.clone()));
            write!(out, "| {} | {hook:?} | {empty:.0} |", case.name)?;
            for (n, _) in variants {
                let k = (ci, hook, n.clone());
                let a = ns.get(&k).map_or(f64::NAN, |v| median(v.clone()));
                let o = over.get(&k).map_or(f64::NAN, |v| median(v.clone()));
                let f = full.get(&k).map_or_else(
                    || "-".to_owned(),
                    |v| format!("{:.1} %", 100.0 * median(v.clone())),
                );
                write!(out, " {a:.0} | {o:+.0} | {f} |")?;
            }
            writeln!(out)?;
        }
    }
    Ok(out)
}

/// `NAME=PATH` arguments, read.
pub fn read_variants(args: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
    args.iter()
        .map(|v| {
            let (name, path) = v
                .split_once('=')
                .with_context(|| format!("--variant {v}: expected NAME=PATH"))?;
            let obj = std::fs::read(Path::new(path))
                .with_context(|| format!("--variant {v}: reading {path}"))?;
            Ok((name.to_owned(), obj))
        })
        .collect()
}
