//! BPF_PROG_TEST_RUN tests of the datapath programs on crafted packets.
//!
//! Every test loads its own copy of the eBPF object (own maps, so tests run in
//! parallel without sharing state), runs one program on packets built with
//! etherparse, and checks the return value, the FLOWS map, the COUNTERS and
//! the EVENTS ring buffer exactly. The kernel's verifier checks the programs
//! on every load, so these tests also prove the object loads.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and a kernel with BTF.
//!
//! What BPF_PROG_TEST_RUN does with the input (found out here, asserted in
//! `short_inputs_are_refused_by_the_kernel`): TC and XDP refuse data shorter
//! than an Ethernet header (14 bytes) with EINVAL before our program runs.
//! The skb it builds has `ifindex` 1 (the loopback device of the caller's
//! namespace) and linear data; XDP gets `ingress_ifindex` 1 and, for an
//! `xdp.frags` program, puts data beyond the first page into fragments.
//!
//! Run: CARGO_TARGET_DIR=... cargo test -p flowd --test datapath_test_run
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{mem::size_of, net::Ipv6Addr, ptr};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use etherparse::{
    IpFragOffset, IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv6Extensions,
    Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions, PacketBuilder,
    PacketBuilderStep, TcpHeader, VlanId,
};
use flowd::datapath::{
    EBPF_OBJECT, FULL_PATHS_TC, FULL_PATHS_XDP, cache::FlowCache, install_full_paths,
};
use flowd_common::{
    CNT_EVENTS_LOST, CNT_EVENTS_SUBMITTED, CNT_FULL_PATH_MISSING, CNT_FULL_PATH_RUNS,
    CNT_L7_EVENTS, CNT_MAX, CNT_PACKETS, CNT_PACKETS_OTHER, CNT_PACKETS_TRUNCATED, CacheSlot,
    Config, DIR_EGRESS, DIR_INGRESS, EV_L7, EV_NEW_FLOW, EV_TCP_FLAGS, EV_UPDATE, EventHeader,
    FAMILY_IPV4, FAMILY_IPV6, FLOW_CACHE_SLOTS, FLOW_L7_OFF, FLOW_L7_PROBED, FlowEvent, FlowKey,
    FlowStats, KEY_F_FRAGMENT, KEY_F_VLAN, L7_DNS, L7_HTTP_REQUEST, L7_HTTP_RESPONSE,
    L7_MAX_PAYLOAD, L7Event, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, TCP_ACK,
    TCP_CWR, TCP_ECE, TCP_FIN, TCP_NS, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG, TRANSITION_FIN,
    TRANSITION_RST, TRANSITION_SYN, TRANSITION_SYN_ACK, names,
};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::A},
};

const TC_ACT_UNSPEC: u32 = -1i32 as u32;
const XDP_PASS: u32 = 2;
/// ifindex of the device BPF_PROG_TEST_RUN uses: the namespace's loopback.
const LO: u32 = 1;
/// Effectively "never report an update" within a test.
const LONG: u64 = 3_600_000_000_000;

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const V4_A: [u8; 4] = [10, 1, 0, 5];
const V4_B: [u8; 4] = [10, 1, 1, 9];

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().map(|a| a.octets()).unwrap_or([0; 16])
}

fn v6_a() -> [u8; 16] {
    v6("fd00::5")
}

fn v6_b() -> [u8; 16] {
    v6("fd00::1:9")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    TcIngress,
    TcEgress,
    Xdp,
}

const HOOKS: [Hook; 3] = [Hook::TcIngress, Hook::TcEgress, Hook::Xdp];

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::TcIngress => names::PROG_TC_INGRESS,
            Hook::TcEgress => names::PROG_TC_EGRESS,
            Hook::Xdp => names::PROG_XDP,
        }
    }

    fn pass(self) -> u32 {
        match self {
            Hook::Xdp => XDP_PASS,
            _ => TC_ACT_UNSPEC,
        }
    }

    fn direction(self) -> u8 {
        match self {
            Hook::TcEgress => DIR_EGRESS,
            _ => DIR_INGRESS,
        }
    }
}

#[derive(Debug, Clone)]
enum Event {
    Flow(FlowEvent),
    L7(Box<L7Event>),
}

/// One loaded copy of the object with one program ready for test runs.
struct Dp {
    hook: Hook,
    ebpf: Ebpf,
    events: RingBuf<MapData>,
}

impl Dp {
    fn new(hook: Hook, interval_ns: u64, l7_max_bytes: u32) -> Result<Self> {
        Self::with_ring(hook, interval_ns, l7_max_bytes, None)
    }

    fn with_ring(
        hook: Hook,
        interval_ns: u64,
        l7_max_bytes: u32,
        ring_bytes: Option<u32>,
    ) -> Result<Self> {
        ensure!(
            !EBPF_OBJECT.is_empty(),
            "flowd was built with FLOWD_SKIP_EBPF=1: no eBPF object to test"
        );
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(
            names::MAP_FLOW_CACHE,
            flowd::datapath::flow_cache_entries()?,
        );
        if let Some(size) = ring_bytes {
            loader.map_max_entries(names::MAP_EVENTS, size);
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading the eBPF object")?;
        {
            let prog = ebpf
                .program_mut(hook.name())
                .with_context(|| format!("program {} missing", hook.name()))?;
            match hook {
                Hook::Xdp => {
                    let p: &mut Xdp = prog.try_into()?;
                    p.load().context("verifier rejected flowd_xdp")?;
                }
                _ => {
                    let p: &mut SchedClassifier = prog.try_into()?;
                    p.load()
                        .with_context(|| format!("verifier rejected {}", hook.name()))?;
                }
            }
        }
        // The full path the hook's program tail-calls for anything but a cache hit.
        let full = match hook {
            Hook::Xdp => FULL_PATHS_XDP,
            _ => FULL_PATHS_TC,
        };
        install_full_paths(&mut ebpf, full).context("installing the full-path programs")?;
        let events = RingBuf::try_from(ebpf.take_map(names::MAP_EVENTS).context("no EVENTS")?)?;
        let mut dp = Self { hook, ebpf, events };
        dp.set_config(interval_ns, l7_max_bytes)?;
        Ok(dp)
    }

    fn run_raw(&self, data: &[u8], ctx: Option<&[u8]>) -> Result<u32, ProgramError> {
        self.run_repeat(data, ctx, 1)
    }

    /// Runs the program `repeat` times on the same packet (one syscall).
    fn run_repeat(
        &self,
        data: &[u8],
        ctx: Option<&[u8]>,
        repeat: u32,
    ) -> Result<u32, ProgramError> {
        let opts = TestRunOptions {
            data_in: Some(data),
            ctx_in: ctx,
            repeat,
            ..TestRunOptions::default()
        };
        let prog = self
            .ebpf
            .program(self.hook.name())
            .ok_or_else(|| ProgramError::NotLoaded)?;
        let res = match self.hook {
            Hook::Xdp => <&Xdp>::try_from(prog)?.test_run(opts)?,
            _ => <&SchedClassifier>::try_from(prog)?.test_run(opts)?,
        };
        Ok(res.return_value)
    }

    /// Runs the program and checks it let the packet pass.
    fn run(&self, data: &[u8]) -> Result<()> {
        let ret = self.run_raw(data, None)?;
        ensure!(ret == self.hook.pass(), "{:?} returned {ret:#x}", self.hook);
        Ok(())
    }

    fn run_ctx(&self, data: &[u8], ctx: &[u8]) -> Result<()> {
        let ret = self.run_raw(data, Some(ctx))?;
        ensure!(ret == self.hook.pass(), "{:?} returned {ret:#x}", self.hook);
        Ok(())
    }

    /// Every CPU's flow-cache slots.
    fn cache_slots(&self) -> Result<Vec<CacheSlot>> {
        let cache: Array<_, CacheSlot> = Array::try_from(
            self.ebpf
                .map(names::MAP_FLOW_CACHE)
                .context("no FLOW_CACHE")?,
        )?;
        Ok(cache.iter().collect::<Result<_, _>>()?)
    }

    /// Empties the flow cache, adding what it held to FLOWS and COUNTERS as
    /// the kernel's flush would (no program runs meanwhile).
    fn flush_cache(&mut self) -> Result<()> {
        let mut flows = self.flows_raw()?;
        let slots = self.cache_slots()?;
        let runs: u64 = slots.iter().map(|s| u64::from(s.pending_runs)).sum();
        flowd::datapath::add_pending(&mut flows, slots);
        let mut map: HashMap<_, FlowKey, FlowStats> =
            HashMap::try_from(self.ebpf.map_mut(names::MAP_FLOWS).context("no FLOWS")?)?;
        for (k, s) in flows {
            map.insert(k, s, 0)?;
        }
        let mut counters: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map_mut(names::MAP_COUNTERS)
                .context("no COUNTERS")?,
        )?;
        let mut per_cpu = counters.get(&CNT_PACKETS, 0)?.to_vec();
        per_cpu[0] += runs;
        counters.set(CNT_PACKETS, PerCpuValues::try_from(per_cpu)?, 0)?;
        let mut cache: Array<_, CacheSlot> = Array::try_from(
            self.ebpf
                .map_mut(names::MAP_FLOW_CACHE)
                .context("no FLOW_CACHE")?,
        )?;
        for i in 0..cache.len() {
            cache.set(i, CacheSlot::default(), 0)?;
        }
        Ok(())
    }

    /// FLOWS alone, without what waits in the flow cache.
    fn flows_raw(&self) -> Result<Vec<(FlowKey, FlowStats)>> {
        let map: HashMap<_, FlowKey, FlowStats> =
            HashMap::try_from(self.ebpf.map(names::MAP_FLOWS).context("no FLOWS")?)?;
        Ok(map.iter().collect::<Result<Vec<_>, _>>()?)
    }

    /// FLOWS plus the counts pending in the flow cache, as user space sees them.
    fn flows(&self) -> Result<Vec<(FlowKey, FlowStats)>> {
        let mut v = self.flows_raw()?;
        // Counts of a flow's later packets wait in the per-CPU slots of the flow cache until flushed.
        flowd::datapath::add_pending(&mut v, self.cache_slots()?);
        v.sort_by_key(|(k, _)| (k.src_port, k.dst_port, k.protocol, k.flags));
        Ok(v)
    }

    fn only_flow(&self) -> Result<(FlowKey, FlowStats)> {
        let flows = self.flows()?;
        match flows.as_slice() {
            [one] => Ok(*one),
            _ => bail!("expected exactly one flow, got {flows:?}"),
        }
    }

    /// Empties FLOWS, zeroes COUNTERS and drains EVENTS, so that one loaded
    /// object serves many cases (verification dominates the test time).
    fn reset(&mut self) -> Result<()> {
        let mut flows: HashMap<_, FlowKey, FlowStats> =
            HashMap::try_from(self.ebpf.map_mut(names::MAP_FLOWS).context("no FLOWS")?)?;
        let keys = flows.keys().collect::<Result<Vec<_>, _>>()?;
        for k in keys {
            flows.remove(&k)?;
        }
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        // The (empty) flows and cleared counters take whatever the cache held.
        self.flush_cache()?;
        let mut counters: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map_mut(names::MAP_COUNTERS)
                .context("no COUNTERS")?,
        )?;
        for i in 0..CNT_MAX {
            counters.set(i, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        }
        self.events()?;
        Ok(())
    }

    fn counters(&self) -> Result<[u64; CNT_MAX as usize]> {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(names::MAP_COUNTERS).context("no COUNTERS")?)?;
        let mut out = [0u64; CNT_MAX as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = map.get(&(i as u32), 0)?.iter().sum();
        }
        // Runs of cached flows are counted in their slots until flushed.
        out[CNT_PACKETS as usize] += self
            .cache_slots()?
            .iter()
            .map(|s| u64::from(s.pending_runs))
            .sum::<u64>();
        Ok(out)
    }

    /// Writes CONFIG. flowd writes it once before attaching; the slots of
    /// the flow cache copy it, so a test changing it mid-run flushes them.
    fn set_config(&mut self, interval_ns: u64, l7_max_bytes: u32) -> Result<()> {
        self.flush_cache()?;
        let mut config: Array<_, Config> = Array::try_from(
            self.ebpf
                .map_mut(names::MAP_CONFIG)
                .context("no CONFIG map")?,
        )?;
        config.set(
            0,
            Config {
                aggregation_interval_ns: interval_ns,
                l7_max_bytes,
                _pad: [0; 4],
            },
            0,
        )?;
        Ok(())
    }

    fn set_dns_port(&mut self, port: u16) -> Result<()> {
        let mut map: HashMap<_, u16, u8> = HashMap::try_from(
            self.ebpf
                .map_mut(names::MAP_L7_PORTS)
                .context("no L7_PORTS")?,
        )?;
        map.insert(port, L7_DNS, 0)?;
        Ok(())
    }

    /// Drains the ring buffer, decoding with length checks.
    fn events(&mut self) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            let bytes: &[u8] = &item;
            ensure!(bytes.len() >= size_of::<EventHeader>(), "short record");
            match bytes[0] {
                EV_L7 => {
                    ensure!(
                        bytes.len() == size_of::<L7Event>(),
                        "L7 record size {}",
                        bytes.len()
                    );
                    // SAFETY: length checked; L7Event is plain old data.
                    let ev = unsafe { ptr::read_unaligned(bytes.as_ptr().cast::<L7Event>()) };
                    out.push(Event::L7(Box::new(ev)));
                }
                EV_NEW_FLOW | EV_TCP_FLAGS | EV_UPDATE => {
                    ensure!(
                        bytes.len() == size_of::<FlowEvent>(),
                        "flow record size {}",
                        bytes.len()
                    );
                    // SAFETY: length checked; FlowEvent is plain old data.
                    let ev = unsafe { ptr::read_unaligned(bytes.as_ptr().cast::<FlowEvent>()) };
                    out.push(Event::Flow(ev));
                }
                k => bail!("unknown event kind {k}"),
            }
        }
        Ok(out)
    }

    fn flow_events(&mut self) -> Result<Vec<FlowEvent>> {
        Ok(self
            .events()?
            .into_iter()
            .filter_map(|e| match e {
                Event::Flow(f) => Some(f),
                Event::L7(_) => None,
            })
            .collect())
    }

    fn l7_events(&mut self) -> Result<Vec<L7Event>> {
        Ok(self
            .events()?
            .into_iter()
            .filter_map(|e| match e {
                Event::L7(l) => Some(*l),
                Event::Flow(_) => None,
            })
            .collect())
    }

    /// The key this hook should record for the given fields.
    fn key(
        &self,
        family: u8,
        src: &[u8],
        dst: &[u8],
        protocol: u8,
        sport: u16,
        dport: u16,
    ) -> FlowKey {
        let mut k = FlowKey {
            src_port: sport,
            dst_port: dport,
            ifindex: LO,
            protocol,
            family,
            direction: self.hook.direction(),
            ..FlowKey::default()
        };
        k.src_addr[..src.len()].copy_from_slice(src);
        k.dst_addr[..dst.len()].copy_from_slice(dst);
        k
    }

    fn key4(&self, protocol: u8, sport: u16, dport: u16) -> FlowKey {
        self.key(FAMILY_IPV4, &V4_A, &V4_B, protocol, sport, dport)
    }

    fn key6(&self, protocol: u8, sport: u16, dport: u16) -> FlowKey {
        self.key(FAMILY_IPV6, &v6_a(), &v6_b(), protocol, sport, dport)
    }
}

// ---------------------------------------------------------------- packets

fn eth() -> PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(MAC_A, MAC_B)
}

fn vid(v: u16) -> VlanId {
    VlanId::try_new(v).unwrap_or(VlanId::ZERO)
}

fn finish_tcp(b: PacketBuilderStep<TcpHeader>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload)
        .expect("etherparse writes into a Vec");
    out
}

/// A TCP packet with exactly the given flags (TCP_* bits, incl. NS).
fn tcp_pkt(v6: bool, sport: u16, dport: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut h = TcpHeader::new(sport, dport, seq, 65535);
    h.fin = flags & TCP_FIN != 0;
    h.syn = flags & TCP_SYN != 0;
    h.rst = flags & TCP_RST != 0;
    h.psh = flags & TCP_PSH != 0;
    h.ack = flags & TCP_ACK != 0;
    h.urg = flags & TCP_URG != 0;
    h.ece = flags & TCP_ECE != 0;
    h.cwr = flags & TCP_CWR != 0;
    h.ns = flags & TCP_NS != 0;
    if h.ack {
        h.acknowledgment_number = 1;
    }
    let b = if v6 {
        eth().ipv6(v6_a(), v6_b(), 64).tcp_header(h)
    } else {
        eth().ipv4(V4_A, V4_B, 64).tcp_header(h)
    };
    finish_tcp(b, payload)
}

fn udp_pkt(v6: bool, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = if v6 {
        eth().ipv6(v6_a(), v6_b(), 64).udp(sport, dport)
    } else {
        eth().ipv4(V4_A, V4_B, 64).udp(sport, dport)
    };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload)
        .expect("etherparse writes into a Vec");
    out
}

/// IP packet whose L4 etherparse cannot build (SCTP, GRE): headers by
/// etherparse, the L4 bytes given.
fn ip_raw_pkt(ip: IpHeaders, proto: IpNumber, l4: &[u8]) -> Vec<u8> {
    let b = eth().ip(ip);
    let mut out = Vec::with_capacity(b.size(l4.len()));
    b.write(&mut out, proto, l4)
        .expect("etherparse writes into a Vec");
    out
}

fn ipv4_hdr(proto: IpNumber) -> Ipv4Header {
    Ipv4Header::new(0, 64, proto, V4_A, V4_B).expect("valid IPv4 header")
}

fn ipv6_hdr() -> Ipv6Header {
    Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: 0,
        next_header: IpNumber::UDP,
        hop_limit: 64,
        source: v6_a(),
        destination: v6_b(),
    }
}

/// SCTP common header: ports, verification tag, checksum (not validated by us).
fn sctp_common(sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v
}

fn raw_ext(len8: usize) -> Ipv6RawExtHeader {
    // Payload sizes of 6 + 8n bytes; contents are padding options (PadN-like).
    Ipv6RawExtHeader::new_raw(IpNumber::UDP, &vec![0u8; 6 + 8 * len8]).expect("valid ext header")
}

fn dns_query(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(
        Name::from_ascii(name).expect("valid name"),
        rtype,
    ));
    m.to_vec().expect("encodable DNS message")
}

fn dns_response(id: u16, name: &str) -> Vec<u8> {
    let n = Name::from_ascii(name).expect("valid name");
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_response_code(ResponseCode::NoError);
    m.add_query(Query::query(n.clone(), RecordType::A));
    m.add_answer(Record::from_rdata(n, 30, RData::A(A::new(10, 1, 2, 3))));
    m.to_vec().expect("encodable DNS message")
}

// ---------------------------------------------------------------- helpers

/// Runs `f` once per program (TC ingress, TC egress, XDP), each on its own
/// freshly loaded object with interval LONG and L7 capture of 512 bytes.
fn for_hooks(f: impl Fn(&mut Dp) -> Result<()>) -> Result<()> {
    for hook in HOOKS {
        let mut dp = Dp::new(hook, LONG, 512)?;
        f(&mut dp).with_context(|| format!("hook {hook:?}"))?;
    }
    Ok(())
}

/// Restricts the calling thread to the CPU it runs on now.
fn pin_to_current_cpu() -> Result<()> {
    // SAFETY: plain syscalls on this thread with a zero-initialised cpu_set_t.
    unsafe {
        let cpu = libc::sched_getcpu();
        ensure!(
            cpu >= 0,
            "sched_getcpu: {}",
            std::io::Error::last_os_error()
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let r = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        ensure!(
            r == 0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Runs one packet on a reset object and returns the flows it left.
fn single(dp: &mut Dp, pkt: &[u8]) -> Result<Vec<(FlowKey, FlowStats)>> {
    dp.reset()?;
    dp.run(pkt)?;
    dp.flows()
}

/// Runs one packet on a reset object: exactly one flow with the wanted key,
/// counted once with the packet's length.
fn assert_one_flow(dp: &mut Dp, pkt: &[u8], want: FlowKey) -> Result<FlowStats> {
    let flows = single(dp, pkt)?;
    ensure!(flows.len() == 1, "want one flow {want:?}, got {flows:?}");
    let (k, s) = flows[0];
    ensure!(k == want, "key mismatch:\n got  {k:?}\n want {want:?}");
    ensure!(
        s.packets == 1 && s.bytes == pkt.len() as u64,
        "stats {s:?} for {} bytes",
        pkt.len()
    );
    ensure!(
        s.first_seen_ns > 0 && s.first_seen_ns == s.last_seen_ns,
        "times {s:?}"
    );
    Ok(s)
}

/// etherparse 0.19 writes the IPv6 fragment header's offset and M bits in
/// the wrong places (etherparse#150, fixed in 0.20). This rewrites bytes 2..4
/// of the fragment header at `at` as RFC 8200 section 4.5 lays them out.
fn fix_ipv6_frag(pkt: &mut [u8], at: usize, offset: u16, more: bool) {
    pkt[at + 2..at + 4].copy_from_slice(&((offset << 3) | more as u16).to_be_bytes());
}

fn with_vlan(mut k: FlowKey, vlan: u16) -> FlowKey {
    k.vlan = vlan;
    k.flags |= KEY_F_VLAN;
    k
}

fn fragment(mut k: FlowKey) -> FlowKey {
    k.flags |= KEY_F_FRAGMENT;
    k
}

fn kinds(evs: &[FlowEvent]) -> Vec<u8> {
    evs.iter().map(|e| e.header.kind).collect()
}

// ---------------------------------------------------------------- tests

#[test]
fn tcp_ipv4_and_ipv6_all_flags() -> Result<()> {
    let all =
        TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_ACK | TCP_URG | TCP_ECE | TCP_CWR | TCP_NS;
    for_hooks(|dp| {
        for v6 in [false, true] {
            for flags in [
                TCP_SYN,
                TCP_SYN | TCP_ACK,
                TCP_FIN,
                TCP_RST,
                TCP_NS,
                TCP_URG | TCP_ECE | TCP_CWR,
                all,
            ] {
                let pkt = tcp_pkt(v6, 40000, 80, flags, 7, &[]);
                let want = if v6 {
                    dp.key6(PROTO_TCP, 40000, 80)
                } else {
                    dp.key4(PROTO_TCP, 40000, 80)
                };
                let s = assert_one_flow(dp, &pkt, want)?;
                ensure!(
                    s.tcp_flags == flags,
                    "flags {:#x} want {flags:#x}",
                    s.tcp_flags
                );
            }
        }
        Ok(())
    })
}

#[test]
fn udp_ipv4_and_ipv6() -> Result<()> {
    for_hooks(|dp| {
        for v6 in [false, true] {
            let pkt = udp_pkt(v6, 5000, 6000, b"hello");
            let want = if v6 {
                dp.key6(PROTO_UDP, 5000, 6000)
            } else {
                dp.key4(PROTO_UDP, 5000, 6000)
            };
            let s = assert_one_flow(dp, &pkt, want)?;
            ensure!(s.tcp_flags == 0 && s.tcp_transitions == 0);
            let c = dp.counters()?;
            ensure!(
                c[CNT_PACKETS as usize] == 1 && c[CNT_PACKETS_OTHER as usize] == 0,
                "{c:?}"
            );
        }
        Ok(())
    })
}

#[test]
fn icmp_types_and_codes() -> Result<()> {
    use etherparse::{IcmpEchoHeader, Icmpv4Type, Icmpv6Type, icmpv4, icmpv6};
    let echo = IcmpEchoHeader { id: 1, seq: 2 };
    let v4: Vec<(Icmpv4Type, u16, u16)> = vec![
        (Icmpv4Type::EchoRequest(echo), 8, 0),
        (Icmpv4Type::EchoReply(echo), 0, 0),
        (
            Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port),
            3,
            3,
        ),
        (
            Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Host),
            3,
            1,
        ),
        (
            Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit),
            11,
            0,
        ),
        (
            Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::FragmentReassemblyTimeExceeded),
            11,
            1,
        ),
    ];
    let v6: Vec<(Icmpv6Type, u16, u16)> = vec![
        (Icmpv6Type::EchoRequest(echo), 128, 0),
        (Icmpv6Type::EchoReply(echo), 129, 0),
        (
            Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port),
            1,
            4,
        ),
        (Icmpv6Type::PacketTooBig { mtu: 1280 }, 2, 0),
        (
            Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded),
            3,
            0,
        ),
        (
            Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::FragmentReassemblyTimeExceeded),
            3,
            1,
        ),
    ];
    for_hooks(|dp| {
        for (t, ty, code) in &v4 {
            let mut pkt = Vec::new();
            eth()
                .ipv4(V4_A, V4_B, 64)
                .icmpv4(t.clone())
                .write(&mut pkt, &[0u8; 8])?;
            let want = dp.key4(PROTO_ICMP, *ty, *code);
            assert_one_flow(dp, &pkt, want)?;
        }
        for (t, ty, code) in &v6 {
            let mut pkt = Vec::new();
            eth()
                .ipv6(v6_a(), v6_b(), 64)
                .icmpv6(*t)
                .write(&mut pkt, &[0u8; 8])?;
            let want = dp.key6(PROTO_ICMPV6, *ty, *code);
            assert_one_flow(dp, &pkt, want)?;
        }
        Ok(())
    })
}

#[test]
fn sctp_ports() -> Result<()> {
    for_hooks(|dp| {
        let p4 = ip_raw_pkt(
            IpHeaders::Ipv4(ipv4_hdr(IpNumber::SCTP), Ipv4Extensions::default()),
            IpNumber::SCTP,
            &sctp_common(2905, 38412),
        );
        let want = dp.key4(PROTO_SCTP, 2905, 38412);
        assert_one_flow(dp, &p4, want)?;
        let p6 = ip_raw_pkt(
            IpHeaders::Ipv6(ipv6_hdr(), Ipv6Extensions::default()),
            IpNumber::SCTP,
            &sctp_common(2905, 38412),
        );
        let want = dp.key6(PROTO_SCTP, 2905, 38412);
        assert_one_flow(dp, &p6, want)?;
        Ok(())
    })
}

#[test]
fn other_protocols_are_counted() -> Result<()> {
    for_hooks(|dp| {
        // IP with a protocol without ports (GRE): key with the protocol, ports 0.
        let gre = ip_raw_pkt(
            IpHeaders::Ipv4(ipv4_hdr(IpNumber::GRE), Ipv4Extensions::default()),
            IpNumber::GRE,
            &[0, 0, 0x08, 0x00],
        );
        let want = dp.key4(47, 0, 0);
        assert_one_flow(dp, &gre, want)?;
        ensure!(dp.counters()?[CNT_PACKETS_OTHER as usize] == 1);

        // ARP: not IP, kept per EtherType with family 0.
        let arp = etherparse::ArpPacket::new(
            etherparse::ArpHardwareId::ETHERNET,
            etherparse::EtherType::IPV4,
            etherparse::ArpOperation::REQUEST,
            &MAC_A,
            &V4_A,
            &[0; 6],
            &V4_B,
        )?;
        let mut pkt = Vec::new();
        eth().arp(arp).write(&mut pkt)?;
        let want = FlowKey {
            src_port: 0x0806,
            ifindex: LO,
            direction: dp.hook.direction(),
            ..FlowKey::default()
        };
        assert_one_flow(dp, &pkt, want)?;
        let c = dp.counters()?;
        ensure!(
            c[CNT_PACKETS_OTHER as usize] == 1 && c[CNT_PACKETS as usize] == 1,
            "{c:?}"
        );

        // A bad IP version under the IPv4 EtherType: no key, counted as other.
        let mut bad = udp_pkt(false, 1, 2, b"x");
        bad[14] = 0x55;
        ensure!(single(dp, &bad)?.is_empty());
        ensure!(dp.counters()?[CNT_PACKETS_OTHER as usize] == 1);
        Ok(())
    })
}

#[test]
fn vlan_single_and_double() -> Result<()> {
    for_hooks(|dp| {
        for v6 in [false, true] {
            let base = if v6 {
                dp.key6(PROTO_UDP, 1, 2)
            } else {
                dp.key4(PROTO_UDP, 1, 2)
            };
            // 802.1Q
            let b = eth().single_vlan(vid(100));
            let b = if v6 {
                b.ipv6(v6_a(), v6_b(), 64).udp(1, 2)
            } else {
                b.ipv4(V4_A, V4_B, 64).udp(1, 2)
            };
            let mut pkt = Vec::new();
            b.write(&mut pkt, b"x")?;
            ensure!(pkt[12..14] == [0x81, 0x00]);
            assert_one_flow(dp, &pkt, with_vlan(base, 100))?;
            // 802.1ad outer + 802.1Q inner: the outer VLAN names the flow.
            let b = eth().double_vlan(vid(300), vid(42));
            let b = if v6 {
                b.ipv6(v6_a(), v6_b(), 64).udp(1, 2)
            } else {
                b.ipv4(V4_A, V4_B, 64).udp(1, 2)
            };
            let mut pkt = Vec::new();
            b.write(&mut pkt, b"x")?;
            ensure!(pkt[12..14] == [0x88, 0xa8] && pkt[16..18] == [0x81, 0x00]);
            assert_one_flow(dp, &pkt, with_vlan(base, 300))?;
            // The pre-standard 0x9100 outer tag is recognised as well.
            pkt[12..14].copy_from_slice(&[0x91, 0x00]);
            assert_one_flow(dp, &pkt, with_vlan(base, 300))?;
        }
        Ok(())
    })
}

#[test]
fn ipv4_options() -> Result<()> {
    for_hooks(|dp| {
        // IHL 6, 10 and 15 (the maximum: 40 bytes of options).
        for opts in [
            Ipv4Options::from([1u8, 1, 1, 0]),
            Ipv4Options::from([1u8; 20]),
            Ipv4Options::from([1u8; 40]),
        ] {
            let mut ip = ipv4_hdr(IpNumber::TCP);
            ip.options = opts;
            let b = eth()
                .ip(IpHeaders::Ipv4(ip, Default::default()))
                .tcp_header(TcpHeader::new(1234, 443, 1, 1000));
            let pkt = finish_tcp(b, b"data");
            let want = dp.key4(PROTO_TCP, 1234, 443);
            assert_one_flow(dp, &pkt, want)?;
        }
        // IHL below 5 is malformed: no key, counted as other.
        let mut bad = udp_pkt(false, 1, 2, b"x");
        bad[14] = 0x44;
        ensure!(single(dp, &bad)?.is_empty());
        ensure!(dp.counters()?[CNT_PACKETS_OTHER as usize] == 1);
        Ok(())
    })
}

#[test]
fn ipv4_fragments() -> Result<()> {
    for_hooks(|dp| {
        // First fragment: offset 0, MF set, carries the UDP header.
        let mut ip = ipv4_hdr(IpNumber::UDP);
        ip.more_fragments = true;
        ip.identification = 77;
        let mut first = Vec::new();
        eth()
            .ip(IpHeaders::Ipv4(ip, Default::default()))
            .udp(53, 33000)
            .write(&mut first, &[7u8; 64])?;
        let want = dp.key4(PROTO_UDP, 53, 33000);
        assert_one_flow(dp, &first, want)?;

        // A later fragment: no L4 header, so no ports.
        let mut ip = ipv4_hdr(IpNumber::UDP);
        ip.identification = 77;
        ip.fragment_offset = IpFragOffset::try_new(9)?;
        let later = ip_raw_pkt(
            IpHeaders::Ipv4(ip, Default::default()),
            IpNumber::UDP,
            &[0x35; 40],
        );
        let want = fragment(dp.key4(PROTO_UDP, 0, 0));
        assert_one_flow(dp, &later, want)?;
        let c = dp.counters()?;
        ensure!(
            c[CNT_PACKETS_OTHER as usize] == 0 && c[CNT_PACKETS_TRUNCATED as usize] == 0,
            "{c:?}"
        );
        Ok(())
    })
}

#[test]
fn ipv6_extension_header_chains() -> Result<()> {
    for_hooks(|dp| {
        // Hop-by-hop, destination options, routing (+ final destination
        // options), fragment (first: offset 0, M set). etherparse writes them
        // as hop, dest, routing, fragment, final dest.
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(raw_ext(0)),
            destination_options: Some(raw_ext(2)),
            routing: Some(Ipv6RoutingExtensions {
                routing: raw_ext(1),
                final_destination_options: Some(raw_ext(0)),
            }),
            fragment: Some(Ipv6FragmentHeader::new(
                IpNumber::UDP,
                IpFragOffset::ZERO,
                true,
                99,
            )),
            auth: None,
        };
        let mut pkt = Vec::new();
        eth()
            .ip(IpHeaders::Ipv6(ipv6_hdr(), exts))
            .udp(4000, 53)
            .write(&mut pkt, &[1u8; 16])?;
        let frag_at = 14 + 40 + 8 + 24 + 16;
        ensure!(
            pkt[frag_at - 16] == 44,
            "routing header's next is the fragment header"
        );
        fix_ipv6_frag(&mut pkt, frag_at, 0, true);
        let want = dp.key6(PROTO_UDP, 4000, 53);
        assert_one_flow(dp, &pkt, want)?;

        // Each extension alone, with TCP.
        for one in [
            Ipv6Extensions {
                hop_by_hop_options: Some(raw_ext(3)),
                ..Default::default()
            },
            Ipv6Extensions {
                destination_options: Some(raw_ext(0)),
                ..Default::default()
            },
            Ipv6Extensions {
                routing: Some(Ipv6RoutingExtensions {
                    routing: raw_ext(2),
                    final_destination_options: None,
                }),
                ..Default::default()
            },
        ] {
            let b = eth()
                .ip(IpHeaders::Ipv6(ipv6_hdr(), one))
                .tcp_header(TcpHeader::new(5555, 22, 1, 100));
            let pkt = finish_tcp(b, &[]);
            let want = dp.key6(PROTO_TCP, 5555, 22);
            assert_one_flow(dp, &pkt, want)?;
        }

        // A later fragment: no ports, the fragment flag, the upper protocol.
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(raw_ext(0)),
            fragment: Some(Ipv6FragmentHeader::new(
                IpNumber::TCP,
                IpFragOffset::try_new(100)?,
                false,
                99,
            )),
            ..Default::default()
        };
        let mut pkt = ip_raw_pkt(IpHeaders::Ipv6(ipv6_hdr(), exts), IpNumber::TCP, &[9u8; 32]);
        fix_ipv6_frag(&mut pkt, 14 + 40 + 8, 100, false);
        let want = fragment(dp.key6(PROTO_TCP, 0, 0));
        assert_one_flow(dp, &pkt, want)?;

        // Six destination-options headers are followed; a seventh is too many:
        // no key, counted as other.
        for (n, ok) in [(6usize, true), (7, false)] {
            let mut ip = ipv6_hdr();
            ip.next_header = IpNumber::IPV6_DESTINATION_OPTIONS;
            let mut chain = Vec::new();
            for i in 0..n {
                let mut e = raw_ext(0);
                e.next_header = if i + 1 == n {
                    IpNumber::UDP
                } else {
                    IpNumber::IPV6_DESTINATION_OPTIONS
                };
                chain.extend_from_slice(&e.to_bytes());
            }
            let udp = etherparse::UdpHeader {
                source_port: 7,
                destination_port: 8,
                length: 8,
                checksum: 0,
            };
            ip.payload_length = (chain.len() + 8) as u16;
            let mut pkt = Vec::new();
            etherparse::Ethernet2Header {
                source: MAC_A,
                destination: MAC_B,
                ether_type: etherparse::EtherType::IPV6,
            }
            .write(&mut pkt)?;
            ip.write(&mut pkt)?;
            pkt.extend_from_slice(&chain);
            pkt.extend_from_slice(&udp.to_bytes());
            if ok {
                let want = dp.key6(PROTO_UDP, 7, 8);
                assert_one_flow(dp, &pkt, want)?;
            } else {
                let flows = single(dp, &pkt)?;
                ensure!(flows.is_empty(), "{n} exts: {flows:?}");
                ensure!(dp.counters()?[CNT_PACKETS_OTHER as usize] == 1);
            }
        }
        Ok(())
    })
}

/// Shortest input BPF_PROG_TEST_RUN accepts (found out on Linux 6.18): 14
/// bytes (an Ethernet header) for XDP and for TC frames that are not IP; for
/// TC frames with the IPv4/IPv6 EtherType also the fixed IP header (34 and
/// 54 bytes). Shorter inputs fail with EINVAL before any program runs.
fn kernel_min_len(hook: Hook, pkt: &[u8]) -> usize {
    match (hook, pkt.get(12..14)) {
        (Hook::Xdp, _) => 14,
        (_, Some([0x08, 0x00])) => 14 + 20,
        (_, Some([0x86, 0xdd])) => 14 + 40,
        _ => 14,
    }
}

/// Cuts packets at every length from 0 up to the end of their headers (and
/// beyond): the kernel refuses what it refuses, the program passes every
/// packet it gets, and FLOWS holds nothing until the headers are complete,
/// then exactly the right key. Every cut packet is counted as truncated.
#[test]
fn truncated_at_every_length() -> Result<()> {
    let v6_tcp = tcp_pkt(true, 40000, 443, TCP_SYN, 1, &[]);
    let v4_tcp = tcp_pkt(false, 40000, 443, TCP_SYN, 1, &[]);
    let mut v4_opts_vlan = {
        let mut ip = ipv4_hdr(IpNumber::UDP);
        ip.options = Ipv4Options::from([1u8; 8]);
        let mut p = Vec::new();
        eth()
            .single_vlan(vid(7))
            .ip(IpHeaders::Ipv4(ip, Default::default()))
            .udp(9, 10)
            .write(&mut p, &[])?;
        p
    };
    // Ethernet padding (bytes beyond the IP length) must not matter.
    v4_opts_vlan.extend_from_slice(&[0u8; 6]);
    let v6_ext_qinq = {
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(raw_ext(1)),
            ..Default::default()
        };
        let mut p = Vec::new();
        eth()
            .double_vlan(vid(5), vid(6))
            .ip(IpHeaders::Ipv6(ipv6_hdr(), exts))
            .udp(11, 12)
            .write(&mut p, &[])?;
        p
    };
    let icmp6 = {
        let mut p = Vec::new();
        eth()
            .ipv6(v6_a(), v6_b(), 64)
            .icmpv6_echo_request(1, 1)
            .write(&mut p, &[])?;
        p
    };
    type KeyFn = fn(&Dp) -> FlowKey;
    let cases: [(&str, Vec<u8>, usize, KeyFn); 5] = [
        ("eth+ipv6+tcp", v6_tcp, 14 + 40 + 20, |dp| {
            dp.key6(PROTO_TCP, 40000, 443)
        }),
        ("eth+ipv4+tcp", v4_tcp, 14 + 20 + 20, |dp| {
            dp.key4(PROTO_TCP, 40000, 443)
        }),
        (
            "eth+vlan+ipv4(options)+udp",
            v4_opts_vlan,
            14 + 4 + 28 + 8,
            |dp| with_vlan(dp.key4(PROTO_UDP, 9, 10), 7),
        ),
        (
            "eth+qinq+ipv6+hbh+udp",
            v6_ext_qinq,
            14 + 8 + 40 + 16 + 8,
            |dp| with_vlan(dp.key6(PROTO_UDP, 11, 12), 5),
        ),
        ("eth+ipv6+icmpv6", icmp6, 14 + 40 + 8, |dp| {
            dp.key6(PROTO_ICMPV6, 128, 0)
        }),
    ];
    for_hooks(|dp| {
        for (name, pkt, hdr_len, key) in &cases {
            dp.reset()?;
            let want = key(dp);
            let min = kernel_min_len(dp.hook, pkt);
            let (mut ran, mut cut) = (0u64, 0u64);
            for len in 0..=pkt.len() {
                match dp.run_raw(&pkt[..len], None) {
                    Err(ProgramError::SyscallError(e)) if len < min => {
                        ensure!(
                            e.io_error.raw_os_error() == Some(libc::EINVAL),
                            "{name} cut at {len}: {e:?}"
                        );
                        continue;
                    }
                    Err(e) => bail!("{name} cut at {len}: {e:?}"),
                    Ok(ret) => {
                        ensure!(len >= min, "{name}: kernel accepted {len} bytes");
                        ensure!(
                            ret == dp.hook.pass(),
                            "{name} cut at {len}: returned {ret:#x}"
                        );
                    }
                }
                ran += 1;
                let flows = dp.flows()?;
                if len < *hdr_len {
                    cut += 1;
                    ensure!(flows.is_empty(), "{name} cut at {len}: {flows:?}");
                } else {
                    ensure!(
                        flows.len() == 1 && flows[0].0 == want,
                        "{name} cut at {len}: {flows:?}"
                    );
                }
            }
            let c = dp.counters()?;
            ensure!(c[CNT_PACKETS as usize] == ran, "{name}: {c:?}");
            ensure!(
                c[CNT_PACKETS_TRUNCATED as usize] == cut,
                "{name}: truncated {c:?}, want {cut}"
            );
            ensure!(c[CNT_PACKETS_OTHER as usize] == 0, "{name}: {c:?}");
        }
        Ok(())
    })
}

#[test]
fn counts_packets_bytes_and_flag_union() -> Result<()> {
    for_hooks(|dp| {
        let pkts = [
            tcp_pkt(false, 1000, 80, TCP_SYN, 1, &[]),
            tcp_pkt(false, 1000, 80, TCP_ACK, 2, &[]),
            tcp_pkt(false, 1000, 80, TCP_ACK | TCP_PSH, 2, &[b'x'; 300]),
            tcp_pkt(false, 1000, 80, TCP_ACK | TCP_FIN, 302, &[]),
        ];
        for p in &pkts {
            dp.run(p)?;
        }
        let (k, s) = dp.only_flow()?;
        ensure!(k == dp.key4(PROTO_TCP, 1000, 80));
        ensure!(s.packets == 4);
        ensure!(s.bytes == pkts.iter().map(|p| p.len() as u64).sum::<u64>());
        ensure!(s.tcp_flags == TCP_SYN | TCP_ACK | TCP_PSH | TCP_FIN);
        ensure!(s.tcp_transitions == TRANSITION_SYN | TRANSITION_FIN);
        // The first payload after the SYN was not HTTP/DNS: no more probing.
        ensure!(s.l7_state == FLOW_L7_PROBED | FLOW_L7_OFF && s.origin == 0 && s._pad == [0; 2]);
        ensure!(s.first_seen_ns <= s.last_seen_ns && s.first_seen_ns > 0);
        ensure!(dp.counters()?[CNT_PACKETS as usize] == 4);
        Ok(())
    })
}

/// `__sk_buff` as BPF_PROG_TEST_RUN takes it in ctx_in (192 bytes), with
/// only gso_segs (offset 164) set: the kernel refuses most other fields.
fn skb_ctx_gso(segs: u32) -> Vec<u8> {
    let mut ctx = vec![0u8; 192];
    ctx[164..168].copy_from_slice(&segs.to_ne_bytes());
    ctx
}

#[test]
fn gso_packets_count_their_segments() -> Result<()> {
    for hook in [Hook::TcIngress, Hook::TcEgress] {
        let dp = Dp::new(hook, LONG, 0)?;
        let pkt = tcp_pkt(true, 2000, 8080, TCP_ACK, 1, &[b'y'; 1400]);
        dp.run_ctx(&pkt, &skb_ctx_gso(3))?;
        let (_, s) = dp.only_flow()?;
        // Three segments, each with its own 14 + 40 + 20 bytes of headers.
        ensure!(s.packets == 3, "{s:?}");
        ensure!(s.bytes == pkt.len() as u64 + 2 * 74, "{s:?}");
        ensure!(dp.counters()?[CNT_PACKETS as usize] == 1);
    }
    Ok(())
}

#[test]
fn events_new_flow_and_tcp_transitions() -> Result<()> {
    for_hooks(|dp| {
        let seq = [
            (TCP_SYN, Some(EV_NEW_FLOW)),
            (TCP_ACK, None),
            (TCP_SYN | TCP_ACK, Some(EV_TCP_FLAGS)),
            (TCP_SYN | TCP_ACK, None),
            (TCP_ACK | TCP_PSH, None),
            (TCP_FIN | TCP_ACK, Some(EV_TCP_FLAGS)),
            (TCP_FIN | TCP_ACK, None),
            (TCP_SYN, None),
            (TCP_RST, Some(EV_TCP_FLAGS)),
            (TCP_RST | TCP_ACK, None),
        ];
        let want_key = dp.key4(PROTO_TCP, 3333, 443);
        let mut sent = 0u64;
        for (i, (flags, ev)) in seq.iter().enumerate() {
            dp.run(&tcp_pkt(false, 3333, 443, *flags, i as u32, &[]))?;
            let got = dp.flow_events()?;
            match ev {
                Some(kind) => {
                    sent += 1;
                    ensure!(
                        got.len() == 1 && got[0].header.kind == *kind,
                        "packet {i}: {got:?}"
                    );
                    let e = &got[0];
                    ensure!(
                        e.pkt_tcp_flags == *flags && e.key == want_key,
                        "packet {i}: {e:?}"
                    );
                    ensure!(e.stats.packets == i as u64 + 1, "snapshot {:?}", e.stats);
                    // Flow times are coarse (tick), the event time is full resolution.
                    ensure!(
                        e.stats.last_seen_ns <= e.header.ts_ns
                            && e.stats.last_report_ns == e.stats.last_seen_ns
                    );
                    ensure!(e.pkt_len == 54 && e._pad == [0; 2] && e.header._pad == [0; 3]);
                }
                None => ensure!(got.is_empty(), "packet {i}: unexpected {got:?}"),
            }
        }
        // SYN-ACK opens the reverse flow: its NEW_FLOW covers the SYN-ACK transition.
        let mut h = TcpHeader::new(443, 3333, 5, 100);
        h.syn = true;
        h.ack = true;
        dp.run(&finish_tcp(eth().ipv4(V4_B, V4_A, 64).tcp_header(h), &[]))?;
        let got = dp.flow_events()?;
        ensure!(kinds(&got) == [EV_NEW_FLOW] && got[0].stats.tcp_transitions == TRANSITION_SYN_ACK);
        ensure!(got[0].key == dp.key(FAMILY_IPV4, &V4_B, &V4_A, PROTO_TCP, 443, 3333));
        let c = dp.counters()?;
        ensure!(
            c[CNT_EVENTS_SUBMITTED as usize] == sent + 1 && c[CNT_EVENTS_LOST as usize] == 0,
            "{c:?}"
        );
        let flows = dp.flows()?;
        let (_, s) = flows.iter().find(|(k, _)| *k == want_key).context("flow")?;
        ensure!(
            s.tcp_transitions
                == TRANSITION_SYN | TRANSITION_SYN_ACK | TRANSITION_FIN | TRANSITION_RST
        );
        Ok(())
    })
}

#[test]
fn update_events_interval_zero_vs_large() -> Result<()> {
    for_hooks(|dp| {
        // Interval 0: one event for every packet.
        dp.set_config(0, 0)?;
        for i in 0..5 {
            dp.run(&udp_pkt(true, 10, 20, &[i]))?;
        }
        let evs = dp.flow_events()?;
        ensure!(
            kinds(&evs) == [EV_NEW_FLOW, EV_UPDATE, EV_UPDATE, EV_UPDATE, EV_UPDATE],
            "{evs:?}"
        );
        for (i, e) in evs.iter().enumerate() {
            ensure!(e.stats.packets == i as u64 + 1 && e.key == dp.key6(PROTO_UDP, 10, 20));
            ensure!(
                e.stats.last_seen_ns <= e.header.ts_ns && e.header.ts_ns > 0,
                "{e:?}"
            );
        }
        // A large interval: only the new-flow event.
        dp.reset()?;
        dp.set_config(LONG, 0)?;
        for i in 0..5 {
            dp.run(&udp_pkt(true, 10, 20, &[i]))?;
        }
        ensure!(kinds(&dp.flow_events()?) == [EV_NEW_FLOW]);
        let c = dp.counters()?;
        ensure!(
            c[CNT_EVENTS_SUBMITTED as usize] == 1 && c[CNT_PACKETS as usize] == 5,
            "{c:?}"
        );
        Ok(())
    })
}

/// The flow cache (per CPU): later packets of a flow wait in its slot; a new
/// TCP transition flushes them into FLOWS before its event, and so does
/// another flow taking the slot. FLOWS plus the cache is exact throughout.
#[test]
fn flow_cache_pending_counts_are_flushed_exactly() -> Result<()> {
    fn raw(dp: &Dp, k: &FlowKey) -> Result<FlowStats> {
        dp.flows_raw()?
            .into_iter()
            .find(|(f, _)| f == k)
            .map(|(_, s)| s)
            .context("flow not in FLOWS")
    }
    fn merged(dp: &Dp, k: &FlowKey) -> Result<FlowStats> {
        dp.flows()?
            .into_iter()
            .find(|(f, _)| f == k)
            .map(|(_, s)| s)
            .context("flow not in FLOWS")
    }
    // The cache is per CPU and BPF_PROG_TEST_RUN runs on the caller's CPU:
    // keep this thread on one CPU so that every run sees the same slots.
    pin_to_current_cpu()?;
    for_hooks(|dp| {
        dp.set_config(LONG, 0)?;
        // TCP: SYN creates the flow, three ACKs wait in the cache, FIN flushes.
        let k = dp.key4(PROTO_TCP, 1000, 2000);
        let syn = tcp_pkt(false, 1000, 2000, TCP_SYN, 1, &[]);
        let ack = tcp_pkt(false, 1000, 2000, TCP_ACK, 2, &[]);
        let fin = tcp_pkt(false, 1000, 2000, TCP_FIN | TCP_ACK, 2, &[]);
        dp.run(&syn)?;
        for _ in 0..3 {
            dp.run(&ack)?;
        }
        // ACK is a flag the flow had not seen: the first ACK took the full path.
        let (r, m) = (raw(dp, &k)?, merged(dp, &k)?);
        ensure!(r.packets == 2 && m.packets == 4, "raw {r:?} merged {m:?}");
        ensure!(m.bytes == (syn.len() + 3 * ack.len()) as u64, "{m:?}");
        dp.run(&fin)?;
        let r = raw(dp, &k)?;
        ensure!(r.packets == 5, "FIN did not flush the cache: {r:?}");
        let evs = dp.flow_events()?;
        // A new flag without a new transition (ACK) sends no event.
        ensure!(kinds(&evs) == [EV_NEW_FLOW, EV_TCP_FLAGS], "{evs:?}");
        ensure!(
            evs[1].stats.packets == 5,
            "FIN event snapshot {:?}",
            evs[1].stats
        );
        ensure!(merged(dp, &k)?.packets == 5);
        // Runs of cached packets are counted in the slot until flushed; the
        // total (COUNTERS + slots) is exact.
        let c = dp.counters()?;
        ensure!(c[CNT_PACKETS as usize] == 5, "{c:?}");

        // UDP flow A: 1 packet in FLOWS, 2 pending. New flows B_p until one
        // takes A's slot; FLOWS + cache stays exact for A at every step.
        dp.reset()?;
        let a = dp.key4(PROTO_UDP, 7, 7);
        let pa = udp_pkt(false, 7, 7, b"a");
        for _ in 0..3 {
            dp.run(&pa)?;
        }
        ensure!(raw(dp, &a)?.packets == 1 && merged(dp, &a)?.packets == 3);
        let mut evicted = false;
        for p in 1..=4 * FLOW_CACHE_SLOTS as u16 {
            dp.run(&udp_pkt(false, 8, p, b"b"))?;
            let (r, m) = (raw(dp, &a)?, merged(dp, &a)?);
            ensure!(
                m.packets == 3 && m.bytes == 3 * pa.len() as u64,
                "after B_{p}: {m:?}"
            );
            let c = dp.counters()?;
            ensure!(c[CNT_PACKETS as usize] == 3 + u64::from(p), "{c:?}");
            if r.packets == 3 {
                evicted = true;
                break;
            }
        }
        ensure!(evicted, "no new flow ever took A's cache slot");
        Ok(())
    })
}

/// The slot's pending counters are narrow (runs 16 bits, bytes 32 bits):
/// a packet that would overflow them takes the full path and flushes them.
#[test]
fn flow_cache_narrow_counters_never_overflow() -> Result<()> {
    pin_to_current_cpu()?;
    for_hooks(|dp| {
        // 70,000 runs of one cached UDP flow: more than 16 bits of runs.
        let k = dp.key4(PROTO_UDP, 11, 12);
        let p = udp_pkt(false, 11, 12, b"n");
        dp.run(&p)?;
        let n = 70_000u32;
        let ret = dp.run_repeat(&p, None, n)?;
        ensure!(ret == dp.hook.pass(), "returned {ret:#x}");
        let all = u64::from(n) + 1;
        let s = dp
            .flows()?
            .into_iter()
            .find(|(f, _)| *f == k)
            .map(|(_, s)| s)
            .context("flow missing")?;
        ensure!(s.packets == all && s.bytes == all * p.len() as u64, "{s:?}");
        let c = dp.counters()?;
        ensure!(c[CNT_PACKETS as usize] == all, "{c:?}");
        Ok(())
    })?;
    // GSO buffers of 60,000 segments: each run adds ~4.4 MB, so ~1,000 runs
    // exceed 32 bits of bytes (and 2,000 runs carry 1.2e8 packets).
    for hook in [Hook::TcIngress, Hook::TcEgress] {
        let dp = Dp::new(hook, LONG, 0)?;
        let pkt = tcp_pkt(true, 2000, 8080, TCP_ACK, 1, &[b'y'; 1400]);
        let ctx = skb_ctx_gso(60_000);
        dp.run_ctx(&pkt, &ctx)?;
        let (_, one) = dp.only_flow()?;
        ensure!(one.packets == 60_000, "{one:?}");
        let ret = dp.run_repeat(&pkt, Some(&ctx), 2000)?;
        ensure!(ret == hook.pass(), "{hook:?} returned {ret:#x}");
        let (_, s) = dp.only_flow()?;
        ensure!(
            s.packets == 2001 * one.packets && s.bytes == 2001 * one.bytes,
            "{hook:?}: one run {one:?}, 2001 runs {s:?}"
        );
        ensure!(s.bytes > u64::from(u32::MAX), "{s:?}");
        ensure!(dp.counters()?[CNT_PACKETS as usize] == 2001);
    }
    Ok(())
}

/// flowd reads FLOW_CACHE through a shared mapping (one memory copy per
/// daemon tick, not a syscall per slot): what it reads equals the lookups'
/// copy, slot by slot, while slots hold pending counts.
#[test]
fn flow_cache_mapping_reads_what_lookups_read() -> Result<()> {
    pin_to_current_cpu()?;
    for_hooks(|dp| {
        dp.reset()?;
        let flows = 5u16;
        let runs = 300u32;
        for port in 0..flows {
            let p = udp_pkt(false, 3000 + port, 53_000, &[1; 20]);
            dp.run(&p)?;
            ensure!(dp.run_repeat(&p, None, runs)? == dp.hook.pass());
        }
        let looked_up = dp.cache_slots()?;
        let map = dp
            .ebpf
            .map(names::MAP_FLOW_CACHE)
            .context("no FLOW_CACHE")?;
        let cache = FlowCache::new(Array::<_, CacheSlot>::try_from(map)?);
        ensure!(
            matches!(cache, FlowCache::Mapped(..)),
            "FLOW_CACHE is not mapped"
        );
        let mapped = cache.slots();
        ensure!(
            mapped.len() == looked_up.len(),
            "{} slots mapped, {} looked up",
            mapped.len(),
            looked_up.len()
        );
        for (i, (m, l)) in mapped.iter().zip(&looked_up).enumerate() {
            ensure!(m == l, "slot {i}: mapped {m:?}, looked up {l:?}");
        }
        // The hit runs of the flows still cached (at least the last one's;
        // flows sharing a slot flushed each other) wait in their slots.
        let pending: u64 = looked_up.iter().map(|s| u64::from(s.pending_runs)).sum();
        ensure!(pending >= u64::from(runs), "pending runs {pending}");
        ensure!(
            cache.pending_runs() == pending,
            "mapped pending runs {}, looked up {pending}",
            cache.pending_runs()
        );
        Ok(())
    })
}

/// CLOCK_MONOTONIC_COARSE, the clock of the flow times (bpf_ktime_get_coarse_ns).
fn coarse_now_ns() -> Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ensure!(r == 0, "clock_gettime: {}", std::io::Error::last_os_error());
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Polls the coarse clock until it reaches `t` (it moves once per tick).
fn wait_coarse_past(t: u64) -> Result<u64> {
    loop {
        let now = coarse_now_ns()?;
        if now > t {
            return Ok(now);
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// A cached flow's later packets keep its time current by themselves: on a
/// new tick the hit path stores the coarse time in the slot (no full-path
/// run), and once the aggregation interval is up it leaves the packet to the
/// full path, which sends the periodic report.
#[test]
fn hit_path_keeps_flow_time_and_periodic_reports() -> Result<()> {
    const INTERVAL: u64 = 30_000_000;
    pin_to_current_cpu()?;
    for_hooks(|dp| {
        dp.set_config(INTERVAL, 0)?;
        let pkt = udp_pkt(false, 31, 32, &[5; 64]);
        let key = dp.key4(PROTO_UDP, 31, 32);
        let stats = |dp: &Dp| -> Result<FlowStats> {
            dp.flows()?
                .into_iter()
                .find(|(k, _)| *k == key)
                .map(|(_, s)| s)
                .context("flow missing")
        };
        let full_runs =
            |dp: &Dp| -> Result<u64> { Ok(dp.counters()?[CNT_FULL_PATH_RUNS as usize]) };
        dp.run(&pkt)?;
        let first = dp.flow_events()?;
        ensure!(kinds(&first) == [EV_NEW_FLOW], "{first:?}");
        let created = first[0].stats.last_report_ns;
        let full = full_runs(dp)?;
        let mut sent = 1;
        // A few ticks, each with a packet: all hits, each moving last_seen.
        let mut t = stats(dp)?.last_seen_ns;
        for _ in 0..3 {
            let now = wait_coarse_past(t)?;
            if now >= created + INTERVAL {
                break;
            }
            dp.run(&pkt)?;
            sent += 1;
            let s = stats(dp)?;
            ensure!(
                s.last_seen_ns >= now && s.packets == sent,
                "after a tick: {s:?}, clock {now}"
            );
            t = s.last_seen_ns;
        }
        ensure!(full_runs(dp)? == full, "a new tick took the full path");
        ensure!(dp.flow_events()?.is_empty());
        // The interval is up: the next packet is reported.
        wait_coarse_past(created + INTERVAL)?;
        dp.run(&pkt)?;
        sent += 1;
        let evs = dp.flow_events()?;
        ensure!(
            kinds(&evs) == [EV_UPDATE] && evs[0].stats.packets == sent,
            "{evs:?}"
        );
        ensure!(full_runs(dp)? == full + 1);
        Ok(())
    })
}

/// Packets of a cached flow in the common layouts (IPv4/IPv6, UDP, TCP
/// ACKs, TCP data of a connection known not to carry HTTP/DNS) are accounted
/// by the attached program's hit path alone: the full path runs to create
/// the flow and fill its cache slot, and not again in 1,000 runs (ticks
/// included: see `hit_path_keeps_flow_time_and_periodic_reports`). Counts
/// stay exact.
#[test]
fn hit_path_accounts_cached_packets() -> Result<()> {
    const N: u32 = 1000;
    pin_to_current_cpu()?;
    for_hooks(|dp| {
        for v6 in [false, true] {
            let syn = |sport, dport| tcp_pkt(v6, sport, dport, TCP_SYN, 0, &[]);
            let cases = [
                (PROTO_UDP, 21, 22, vec![], udp_pkt(v6, 21, 22, &[7; 64])),
                (PROTO_UDP, 23, 24, vec![], udp_pkt(v6, 23, 24, b"short")),
                (
                    PROTO_TCP,
                    25,
                    26,
                    vec![syn(25, 26)],
                    tcp_pkt(v6, 25, 26, TCP_ACK, 1, &[]),
                ),
                (
                    PROTO_TCP,
                    27,
                    28,
                    // The connection's first payload decides: not HTTP/DNS.
                    vec![syn(27, 28), tcp_pkt(v6, 27, 28, TCP_ACK, 1, &[b'q'; 100])],
                    tcp_pkt(v6, 27, 28, TCP_ACK, 101, &[b'q'; 100]),
                ),
            ];
            for (proto, sport, dport, prime, pkt) in cases {
                let what = format!("v6={v6} proto={proto} port {dport}");
                dp.reset()?;
                for p in &prime {
                    dp.run(p)?;
                }
                dp.run(&pkt)?;
                let full_before = dp.counters()?[CNT_FULL_PATH_RUNS as usize];
                let ret = dp.run_repeat(&pkt, None, N)?;
                ensure!(ret == dp.hook.pass(), "{what}: returned {ret:#x}");
                let full = dp.counters()?[CNT_FULL_PATH_RUNS as usize] - full_before;
                ensure!(full == 0, "{what}: {full} of {N} runs took the full path");
                let key = if v6 {
                    dp.key6(proto, sport, dport)
                } else {
                    dp.key4(proto, sport, dport)
                };
                let s = dp
                    .flows()?
                    .into_iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, s)| s)
                    .with_context(|| format!("{what}: flow missing"))?;
                let primed: usize = prime.iter().map(Vec::len).sum();
                let runs = u64::from(N) + 1;
                ensure!(
                    s.packets == prime.len() as u64 + runs
                        && s.bytes == primed as u64 + runs * pkt.len() as u64,
                    "{what}: {s:?}"
                );
                let c = dp.counters()?;
                ensure!(c[CNT_FULL_PATH_MISSING as usize] == 0, "{what}: {c:?}");
            }
        }
        Ok(())
    })
}

/// The verifier walks at most 1M instructions per program; the TC programs
/// come close, and small changes to the hot path have pushed them over. Fail
/// here, with the numbers, before the headroom is gone.
#[test]
fn verifier_headroom() -> Result<()> {
    const LIMIT: u32 = 1_000_000;
    for hook in HOOKS {
        let dp = Dp::new(hook, LONG, 512)?;
        // The attached (hit-path) program and the full path it tail-calls.
        let full = match hook {
            Hook::Xdp => names::PROG_XDP_FULL,
            Hook::TcIngress => names::PROG_TC_INGRESS_FULL,
            Hook::TcEgress => names::PROG_TC_EGRESS_FULL,
        };
        for name in [hook.name(), full] {
            let info = dp.ebpf.program(name).context("program")?.info()?;
            let n = info
                .verified_instruction_count()
                .context("kernel reports no verified_insns")?;
            eprintln!(
                "{name}: {n} instructions verified, {} bytes of machine code",
                info.size_jitted()
            );
            ensure!(
                n < LIMIT / 10 * 8,
                "{name}: the verifier walked {n} instructions, within 20 % of its limit {LIMIT}"
            );
        }
    }
    Ok(())
}

/// Records do not wake the reader one by one (flowd drains on a timer): only
/// the records that fill the ring past a quarter, a half and three quarters
/// do, also while the reader lags. Seen through edge-triggered epoll, which
/// reports each wake-up once.
#[test]
fn records_wake_the_reader_at_quarter_marks_only() -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const RING: usize = 4096;
    // A record is the event plus the kernel's 8-byte header, 8-byte aligned.
    let rec = (size_of::<FlowEvent>() + 8).div_ceil(8) * 8;
    for hook in HOOKS {
        // Interval 0: an event for every packet.
        let dp = Dp::with_ring(hook, 0, 0, Some(RING as u32))?;
        // SAFETY: plain epoll syscalls on fds this test owns.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        ensure!(
            ep >= 0,
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new fd that nothing else owns.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        let fd = dp.events.as_raw_fd();
        // SAFETY: valid fds and event struct.
        let r = unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        ensure!(r == 0, "epoll_ctl: {}", std::io::Error::last_os_error());
        let woken = || -> Result<bool> {
            let mut out = [libc::epoll_event { events: 0, u64: 0 }];
            // SAFETY: valid epoll fd and output buffer of one event.
            let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), out.as_mut_ptr(), 1, 0) };
            ensure!(n >= 0, "epoll_wait: {}", std::io::Error::last_os_error());
            Ok(n == 1)
        };
        let pkt = udp_pkt(false, 21, 22, b"w");
        // Nobody reads: the ring fills up to three quarters.
        let n = RING * 3 / 4 / rec;
        let mut wakes = Vec::new();
        for i in 1..=n {
            dp.run(&pkt)?;
            if woken()? {
                wakes.push(i);
            }
        }
        let want: Vec<usize> = (1..=n)
            .filter(|i| (i * rec) / (RING / 4) != ((i - 1) * rec) / (RING / 4))
            .collect();
        ensure!(
            wakes == want,
            "{hook:?}: woken after records {wakes:?}, want {want:?} ({rec}-byte records)"
        );
        ensure!(dp.counters()?[CNT_EVENTS_SUBMITTED as usize] == n as u64);
    }
    Ok(())
}

#[test]
fn ring_buffer_losses_are_counted_exactly() -> Result<()> {
    for hook in HOOKS {
        // One page: records take 120 + 8 bytes, and the kernel refuses a
        // reservation that would fill the ring completely, so 31 fit.
        let mut dp = Dp::with_ring(hook, 0, 0, Some(4096))?;
        let n = 100u64;
        for i in 0..n {
            dp.run(&udp_pkt(false, 1, 2, &(i as u32).to_be_bytes()))?;
        }
        let c = dp.counters()?;
        let (sub, lost) = (
            c[CNT_EVENTS_SUBMITTED as usize],
            c[CNT_EVENTS_LOST as usize],
        );
        ensure!(
            sub == 4096 / 128 - 1 && lost == n - sub,
            "{hook:?}: submitted {sub} lost {lost}"
        );
        let got = dp.flow_events()?.len() as u64;
        ensure!(got == sub, "{hook:?}: read {got} events, submitted {sub}");
        // Room again after reading.
        dp.run(&udp_pkt(false, 1, 2, b"more"))?;
        ensure!(kinds(&dp.flow_events()?) == [EV_UPDATE]);
    }
    Ok(())
}

// ---------------------------------------------------------------- L7

const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

fn http_request(method: &str) -> Vec<u8> {
    format!("{method} /cart?id=7 HTTP/1.1\r\nHost: shop\r\nUser-Agent: t\r\n\r\n").into_bytes()
}

fn check_l7(ev: &L7Event, kind: u8, tcp: u8, want_payload: &[u8], l4_len: usize) -> Result<()> {
    ensure!(
        ev.header.kind == EV_L7 && ev.l7_kind == kind,
        "kind {} {}",
        ev.header.kind,
        ev.l7_kind
    );
    ensure!(
        ev.transport_tcp == tcp,
        "transport_tcp {}",
        ev.transport_tcp
    );
    let n = ev.payload_len as usize;
    ensure!(
        n == want_payload.len(),
        "payload_len {n} want {}",
        want_payload.len()
    );
    ensure!(&ev.payload[..n] == want_payload, "payload differs");
    ensure!(
        ev.l4_payload_len as usize == l4_len,
        "l4_payload_len {}",
        ev.l4_payload_len
    );
    Ok(())
}

#[test]
fn http_requests_and_responses() -> Result<()> {
    for_hooks(|dp| {
        for (i, m) in METHODS.iter().enumerate() {
            let req = http_request(m);
            // Any TCP port: HTTP is recognised by its first bytes.
            let port = if i % 2 == 0 { 80 } else { 8080 };
            let seq = 1000 + i as u32;
            dp.run(&tcp_pkt(
                i % 3 == 0,
                50000 + i as u16,
                port,
                TCP_ACK | TCP_PSH,
                seq,
                &req,
            ))?;
            let evs = dp.events()?;
            ensure!(evs.len() == 2, "{m}: {evs:?}");
            let Event::Flow(f) = &evs[0] else {
                bail!("{m}: first event not the flow")
            };
            ensure!(f.header.kind == EV_NEW_FLOW);
            let Event::L7(l) = &evs[1] else {
                bail!("{m}: no L7 event")
            };
            check_l7(l, L7_HTTP_REQUEST, 1, &req, req.len())?;
            ensure!(
                l.key == f.key && l.tcp_seq == seq && l._pad == [0; 4],
                "{m}: key/seq"
            );
            ensure!(
                l.header.ts_ns == f.header.ts_ns,
                "{m}: same packet, same time"
            );
        }
        let resp = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        dp.run(&tcp_pkt(false, 80, 50000, TCP_ACK | TCP_PSH, 9, resp))?;
        let l7 = dp.l7_events()?;
        ensure!(l7.len() == 1);
        check_l7(&l7[0], L7_HTTP_RESPONSE, 1, resp, resp.len())?;
        let c = dp.counters()?;
        ensure!(
            c[CNT_L7_EVENTS as usize] == 10 && c[CNT_EVENTS_SUBMITTED as usize] == 20,
            "{c:?}"
        );
        Ok(())
    })
}

/// A connection seen from its start is probed for HTTP/DNS on its first
/// payload only when that payload is neither (bulk transfers, TLS, … cost no
/// probe per packet); HTTP connections keep being probed (keep-alive), and
/// connections seen from the middle are probed on every payload.
#[test]
fn l7_probing_follows_the_first_payload_of_a_connection() -> Result<()> {
    for_hooks(|dp| {
        let req = http_request("GET");
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        // Starts with another protocol: a later HTTP-looking payload is not captured.
        dp.run(&tcp_pkt(false, 41000, 80, TCP_SYN, 1, &[]))?;
        dp.run(&tcp_pkt(
            false,
            41000,
            80,
            TCP_ACK | TCP_PSH,
            2,
            b"SSH-2.0-OpenSSH_9.6\r\n",
        ))?;
        dp.run(&tcp_pkt(false, 41000, 80, TCP_ACK | TCP_PSH, 23, &req))?;
        // Starts with HTTP: every request of the connection is captured, bodies are not.
        dp.run(&tcp_pkt(false, 41001, 80, TCP_SYN, 1, &[]))?;
        dp.run(&tcp_pkt(false, 41001, 80, TCP_ACK | TCP_PSH, 2, &req))?;
        dp.run(&tcp_pkt(
            false,
            41001,
            80,
            TCP_ACK | TCP_PSH,
            100,
            &[b'x'; 200],
        ))?;
        dp.run(&tcp_pkt(false, 41001, 80, TCP_ACK | TCP_PSH, 300, &req))?;
        // The server side starts with SYN-ACK and answers with HTTP.
        dp.run(&tcp_pkt(false, 80, 41001, TCP_SYN | TCP_ACK, 1, &[]))?;
        dp.run(&tcp_pkt(false, 80, 41001, TCP_ACK | TCP_PSH, 2, resp))?;
        // A first payload too short to tell decides nothing.
        dp.run(&tcp_pkt(false, 41003, 80, TCP_SYN, 1, &[]))?;
        dp.run(&tcp_pkt(
            false,
            41003,
            80,
            TCP_ACK | TCP_PSH,
            2,
            b"\x00\x2a",
        ))?;
        dp.run(&tcp_pkt(false, 41003, 80, TCP_ACK | TCP_PSH, 4, &req))?;
        // Seen from the middle: probed every time.
        dp.run(&tcp_pkt(
            false,
            41002,
            80,
            TCP_ACK | TCP_PSH,
            5,
            b"tail of a body",
        ))?;
        dp.run(&tcp_pkt(false, 41002, 80, TCP_ACK | TCP_PSH, 19, &req))?;

        let got: Vec<(u16, u16, u8)> = dp
            .l7_events()?
            .iter()
            .map(|l| (l.key.src_port, l.key.dst_port, l.l7_kind))
            .collect();
        ensure!(
            got == [
                (41001, 80, L7_HTTP_REQUEST),
                (41001, 80, L7_HTTP_REQUEST),
                (80, 41001, L7_HTTP_RESPONSE),
                (41003, 80, L7_HTTP_REQUEST),
                (41002, 80, L7_HTTP_REQUEST),
            ],
            "{got:?}"
        );
        let state = |sport, dport| -> Result<u8> {
            let want = dp.key4(PROTO_TCP, sport, dport);
            let flows = dp.flows()?;
            let (_, s) = flows
                .iter()
                .find(|(k, _)| *k == want)
                .with_context(|| format!("no flow {sport}->{dport}"))?;
            Ok(s.l7_state)
        };
        ensure!(state(41000, 80)? == FLOW_L7_PROBED | FLOW_L7_OFF);
        ensure!(state(41001, 80)? == FLOW_L7_PROBED);
        ensure!(state(80, 41001)? == FLOW_L7_PROBED);
        ensure!(state(41003, 80)? == FLOW_L7_PROBED);
        ensure!(state(41002, 80)? == 0);
        Ok(())
    })
}

#[test]
fn non_http_payloads_give_no_l7_event() -> Result<()> {
    for_hooks(|dp| {
        for p in [
            &b"GETX / HTTP/1.1\r\n\r\n"[..],
            b"get / HTTP/1.1\r\n\r\n",
            b"HTTP/2.0 200\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET /",
            b"hello world, this is not http",
            b"GET\t/ HTTP/1.1\r\n",
        ] {
            dp.run(&tcp_pkt(false, 40001, 80, TCP_ACK | TCP_PSH, 1, p))?;
        }
        // HTTP over UDP is not HTTP/1.x.
        dp.run(&udp_pkt(false, 40001, 80, &http_request("GET")))?;
        // An HTTP-looking payload in a later IPv4 fragment is not looked at.
        let mut ip = ipv4_hdr(IpNumber::TCP);
        ip.fragment_offset = IpFragOffset::try_new(3)?;
        dp.run(&ip_raw_pkt(
            IpHeaders::Ipv4(ip, Default::default()),
            IpNumber::TCP,
            &http_request("GET"),
        ))?;
        ensure!(dp.l7_events()?.is_empty());
        ensure!(dp.counters()?[CNT_L7_EVENTS as usize] == 0);
        Ok(())
    })
}

#[test]
fn l7_copy_is_bounded_and_can_be_disabled() -> Result<()> {
    let mut body = http_request("POST");
    body.extend(std::iter::repeat_n(b'z', 1200));
    for_hooks(|dp| {
        for (max, want) in [
            (1u32, 1usize),
            (16, 16),
            (300, 300),
            (512, 512),
            (4096, L7_MAX_PAYLOAD),
        ] {
            dp.set_config(LONG, max)?;
            dp.run(&tcp_pkt(true, 1, 80, TCP_ACK, 1, &body))?;
            let l7 = dp.l7_events()?;
            ensure!(l7.len() == 1, "max {max}: {l7:?}");
            check_l7(&l7[0], L7_HTTP_REQUEST, 1, &body[..want], body.len())?;
        }
        // A payload shorter than the maximum is copied whole.
        let req = http_request("HEAD");
        dp.set_config(LONG, 512)?;
        dp.run(&tcp_pkt(false, 1, 80, TCP_ACK, 1, &req))?;
        check_l7(
            dp.l7_events()?.first().context("no L7 event")?,
            L7_HTTP_REQUEST,
            1,
            &req,
            req.len(),
        )?;
        // 0 disables L7 capture; the flow is still recorded.
        dp.reset()?;
        dp.set_config(LONG, 0)?;
        dp.run(&tcp_pkt(true, 1, 80, TCP_ACK, 1, &body))?;
        let evs = dp.events()?;
        ensure!(
            evs.len() == 1 && matches!(evs[0], Event::Flow(_)),
            "{evs:?}"
        );
        ensure!(dp.counters()?[CNT_L7_EVENTS as usize] == 0);
        Ok(())
    })
}

#[test]
fn dns_over_udp_and_tcp() -> Result<()> {
    let q = dns_query(
        0x1234,
        "inventory.ecommerce.svc.cluster.local.",
        RecordType::AAAA,
    );
    let r = dns_response(0x1234, "inventory.ecommerce.svc.cluster.local.");
    for_hooks(|dp| {
        // UDP on 53, query and response, IPv4 and IPv6.
        for v6 in [false, true] {
            dp.run(&udp_pkt(v6, 40000, 53, &q))?;
            dp.run(&udp_pkt(v6, 53, 40000, &r))?;
        }
        let l7 = dp.l7_events()?;
        ensure!(l7.len() == 4, "{l7:?}");
        for (i, ev) in l7.iter().enumerate() {
            let msg = if i % 2 == 0 { &q } else { &r };
            check_l7(ev, L7_DNS, 0, msg, msg.len())?;
            ensure!(ev.tcp_seq == 0);
        }
        // TCP on 53: the 2-byte length prefix is skipped.
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        dp.run(&tcp_pkt(false, 40001, 53, TCP_ACK | TCP_PSH, 77, &framed))?;
        let l7 = dp.l7_events()?;
        ensure!(l7.len() == 1);
        check_l7(&l7[0], L7_DNS, 1, &q, framed.len())?;
        ensure!(l7[0].tcp_seq == 77);
        ensure!(dp.counters()?[CNT_L7_EVENTS as usize] == 5);
        Ok(())
    })
}

#[test]
fn dns_on_extra_ports_only_when_configured() -> Result<()> {
    let q = dns_query(7, "example.org.", RecordType::A);
    for_hooks(|dp| {
        dp.run(&udp_pkt(false, 40000, 5353, &q))?;
        ensure!(dp.l7_events()?.is_empty(), "5353 before configuring");
        dp.set_dns_port(5353)?;
        dp.run(&udp_pkt(false, 40000, 5353, &q))?;
        dp.run(&udp_pkt(false, 5353, 40000, &q))?;
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        dp.run(&tcp_pkt(true, 40000, 5353, TCP_ACK, 1, &framed))?;
        let l7 = dp.l7_events()?;
        ensure!(l7.len() == 3, "{l7:?}");
        check_l7(&l7[0], L7_DNS, 0, &q, q.len())?;
        check_l7(&l7[1], L7_DNS, 0, &q, q.len())?;
        check_l7(&l7[2], L7_DNS, 1, &q, framed.len())?;
        // Other ports stay silent.
        dp.run(&udp_pkt(false, 40000, 5300, &q))?;
        ensure!(dp.l7_events()?.is_empty());
        Ok(())
    })
}

#[test]
fn garbage_on_dns_port_gives_no_l7_event() -> Result<()> {
    let q = dns_query(7, "example.org.", RecordType::A);
    for_hooks(|dp| {
        let mut bad_qd = q.clone();
        bad_qd[4..6].copy_from_slice(&0u16.to_be_bytes()); // QDCOUNT 0
        let mut many_qd = q.clone();
        many_qd[4..6].copy_from_slice(&5u16.to_be_bytes()); // QDCOUNT 5
        let mut bad_op = q.clone();
        bad_op[2] |= 0x3 << 3; // opcode 3 (unassigned)
        let mut bad_z = q.clone();
        bad_z[3] |= 0x40; // Z bit
        let mut huge_an = q.clone();
        huge_an[6..8].copy_from_slice(&0xffffu16.to_be_bytes());
        for p in [
            &bad_qd[..],
            &many_qd,
            &bad_op,
            &bad_z,
            &huge_an,
            &q[..16],
            &[0xffu8; 40][..],
        ] {
            dp.run(&udp_pkt(false, 40000, 53, p))?;
        }
        // DNS over TCP whose length prefix is too small for a message.
        let mut framed = 5u16.to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        dp.run(&tcp_pkt(false, 40000, 53, TCP_ACK, 1, &framed))?;
        ensure!(dp.l7_events()?.is_empty());
        Ok(())
    })
}

/// XDP multi-buffer: with more than a page of data BPF_PROG_TEST_RUN puts
/// the tail in fragments. Large IPv6 extension headers push the TCP header
/// and the HTTP payload there, so parsing and the L7 copy go through
/// bpf_xdp_load_bytes across the fragment boundary.
#[test]
fn xdp_multi_buffer_headers_and_payload_in_fragments() -> Result<()> {
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(raw_ext(255)),
        destination_options: Some(raw_ext(255)),
        ..Default::default()
    };
    let req = http_request("GET");
    let b = eth()
        .ip(IpHeaders::Ipv6(ipv6_hdr(), exts))
        .tcp_header(TcpHeader::new(7000, 80, 5, 100));
    let pkt = finish_tcp(b, &req);
    ensure!(pkt.len() > 4096 + 54, "packet {} bytes", pkt.len());
    let mut dp = Dp::new(Hook::Xdp, LONG, 512)?;
    dp.run(&pkt)?;
    let (k, s) = dp.only_flow()?;
    ensure!(k == dp.key6(PROTO_TCP, 7000, 80));
    ensure!(
        s.bytes == pkt.len() as u64,
        "bytes {} want {}",
        s.bytes,
        pkt.len()
    );
    let l7 = dp.l7_events()?;
    ensure!(l7.len() == 1);
    check_l7(&l7[0], L7_HTTP_REQUEST, 1, &req, req.len())
}

/// Frames whose payload continues in fragments, as later packets of a cached
/// flow: the hit path counts the whole frame (it asks the buffer's length only
/// when the IP packet does not end in the linear part). The test device's MTU
/// (loopback's) is above the frame, so each counts as one packet.
#[test]
fn xdp_multi_buffer_hits_count_the_whole_frame() -> Result<()> {
    let mut dp = Dp::new(Hook::Xdp, LONG, 0)?;
    for v6 in [false, true] {
        dp.reset()?;
        let pkt = tcp_pkt(v6, 7100, 7200, TCP_ACK, 1, &[b'z'; 6000]);
        let runs = 3;
        for _ in 0..runs {
            dp.run(&pkt)?;
        }
        let (_, s) = dp.only_flow()?;
        ensure!(
            s.packets == runs && s.bytes == runs * pkt.len() as u64,
            "v6 {v6}: {s:?}, want {runs} × {} bytes",
            pkt.len()
        );
        let c = dp.counters()?;
        ensure!(
            c[CNT_FULL_PATH_RUNS as usize] == 1,
            "v6 {v6}: {} full-path runs, want 1 (then hits)",
            c[CNT_FULL_PATH_RUNS as usize]
        );
    }
    Ok(())
}

/// The benchmark baselines load and pass everything.
#[test]
fn empty_programs_pass() -> Result<()> {
    let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT)?;
    let pkt = udp_pkt(false, 1, 2, b"x");
    for name in [names::PROG_TC_EMPTY_INGRESS, names::PROG_TC_EMPTY_EGRESS] {
        let p: &mut SchedClassifier = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing"))?
            .try_into()?;
        p.load()?;
        let r = p.test_run(TestRunOptions {
            data_in: Some(&pkt),
            ..TestRunOptions::default()
        })?;
        ensure!(
            r.return_value == TC_ACT_UNSPEC,
            "{name}: {}",
            r.return_value
        );
    }
    let p: &mut Xdp = ebpf
        .program_mut(names::PROG_XDP_EMPTY)
        .context("xdp empty")?
        .try_into()?;
    p.load()?;
    let r = p.test_run(TestRunOptions {
        data_in: Some(&pkt),
        ..TestRunOptions::default()
    })?;
    ensure!(r.return_value == XDP_PASS);
    Ok(())
}
