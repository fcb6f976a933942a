//! flowd's datapath: TC classifiers (ingress/egress) and an XDP program that
//! aggregate flows in `FLOWS` (behind a flow cache per CPU) and report to `EVENTS`.
//! Each attached program runs the hit path (hit.rs) and tail-calls its full
//! path (`*_full`: the general parser, the flow map, events, L7) for the rest.
//!
//! Fail-open: the programs never drop or modify a packet. The TC programs
//! return TC_ACT_UNSPEC (-1): with TCX that is TCX_NEXT, so programs attached
//! after ours (a CNI's) still decide; with clsact it continues the filter
//! chain. XDP returns XDP_PASS.
#![no_std]
#![no_main]
// The BPF target has no Rust atomic types (no CAS in its spec); the atomic
// intrinsics compile to BPF atomic instructions.
#![feature(core_intrinsics)]
#![allow(internal_features)]
// BPF inline assembly (hit.rs: one load per header field).
#![feature(asm_experimental_arch)]

mod drops;
mod h2;
mod hit;
mod l7;
mod packet;
mod parse;

use core::{
    intrinsics::{AtomicOrdering::Relaxed, atomic_cxchg, atomic_or, atomic_xadd},
    mem::{MaybeUninit, size_of},
    ptr::{NonNull, addr_of_mut, read_volatile, write_volatile},
};

use aya_ebpf::{
    EbpfContext,
    bindings::{
        __sk_buff, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
        BPF_RB_RING_SIZE, TC_ACT_UNSPEC, xdp_action::XDP_PASS, xdp_md,
    },
    helpers::generated::{
        bpf_get_smp_processor_id, bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns,
        bpf_xdp_get_buff_len,
    },
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use flowd_common::{
    CNT_EVENTS_LOST, CNT_EVENTS_SUBMITTED, CNT_FLOW_MAP_ERRORS, CNT_FULL_PATH_MISSING,
    CNT_FULL_PATH_RUNS, CNT_L7_EVENTS, CNT_MAX, CNT_PACKETS, CNT_PACKETS_OTHER,
    CNT_PACKETS_TRUNCATED, CacheSlot, Config, DIR_EGRESS, DIR_INGRESS, EV_L7, EV_NEW_FLOW,
    EV_TCP_FLAGS, EV_UPDATE, EventHeader, FLOW_CACHE_SLOTS, FLOW_L7_H2, FLOW_L7_OFF,
    FLOW_L7_PROBED, FLOW_ORIGIN_KNOWN, FLOW_ORIGIN_REPLY, FULL_PATH_TC_EGRESS, FULL_PATH_TC_H2,
    FULL_PATH_TC_INGRESS, FULL_PATH_XDP as FULL_PATH_XDP_IDX, FlowEvent, FlowKey, FlowStats,
    H2Walk, KEY_F_FRAGMENT, KEY_F_VLAN, L7_PORT_DNS, L7_PORTS_MAX, L7Event, PROTO_TCP, PROTO_UDP,
    SLOT_F_L7_OFF, SLOT_F_L7_ON, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TRANSITION_FIN,
    TRANSITION_RST, TRANSITION_SYN, TRANSITION_SYN_ACK, slot_flags,
};

use crate::{
    packet::{Packet, Skb, Xdp},
    parse::{L4, NoKey, parse},
};

/// Default sizes; the loader may change them with `set_max_entries`.
const FLOWS_MAX: u32 = 65536;
const EVENTS_BYTES: u32 = 256 * 1024;

const H2_WALK_MAX: u32 = 32768;

const EEXIST: i32 = 17;

#[map]
static FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(FLOWS_MAX, 0);

/// Every CPU's flow cache in front of FLOWS (see flowd_common::CacheSlot and
/// FLOW_CACHE_SLOTS); sized by the loader.
#[map]
static FLOW_CACHE: Array<CacheSlot> =
    Array::with_max_entries(FLOW_CACHE_SLOTS, flowd_common::FLOW_CACHE_MAP_FLAGS);

/// This CPU's slot `idx` (< FLOW_CACHE_SLOTS) of the flow cache. Programs
/// run with migration disabled and do not nest on one CPU (TC and XDP run
/// with bottom halves off), so the slot is this run's alone.
#[inline(always)]
fn cache_slot(idx: u32) -> Option<*mut CacheSlot> {
    // SAFETY: helper without arguments (inlined by the verifier to one load).
    let cpu = unsafe { bpf_get_smp_processor_id() };
    FLOW_CACHE.get_ptr_mut(cpu.wrapping_mul(FLOW_CACHE_SLOTS) | idx)
}

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CNT_MAX, 0);

/// Written by the loader before attaching. An all-zero entry means "an event
/// for every packet, L7 off"; the user side's default interval is 5 s.
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Ports configured for an L7 protocol: `L7_PORT_*` bits (extra DNS ports
/// besides 53; HTTP/2 ports where connections seen from the middle are walked).
#[map]
static L7_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(L7_PORTS_MAX, 0);

/// The HTTP/2 walk of each flow direction (h2.rs); sized by the loader.
#[map]
static H2_WALK: LruHashMap<FlowKey, H2Walk> = LruHashMap::with_max_entries(H2_WALK_MAX, 0);

/// The full path's request to the HTTP/2 walker and the walker's work area.
#[map]
static H2_SCRATCH: PerCpuArray<h2::Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The full-path programs (`*_full`), tail-called by the hit-path programs,
/// and the HTTP/2 walker the TC full paths tail-call (one array per program
/// type: the kernel ties a program array to one).
#[map]
static FULL_PATH_TC: ProgramArray = ProgramArray::with_max_entries(3, 0);
#[map]
static FULL_PATH_XDP: ProgramArray = ProgramArray::with_max_entries(1, 0);

// Each hook has two programs: the attached one runs the hit path (hit.rs)
// and tail-calls the full path for anything else. A tail call rather than
// a function call: the hit path stays under 2 KiB of contiguous code with
// no call on it (a BPF-to-BPF call and return measured ~17 ns per run on
// live traffic here), each program has its own 512-byte stack, and the
// verifier checks the full path once, on its own.

#[classifier]
pub fn flowd_tc_ingress(ctx: TcContext) -> i32 {
    if !tc_hit(&ctx, DIR_INGRESS) {
        full_path(&FULL_PATH_TC, &ctx, FULL_PATH_TC_INGRESS);
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn flowd_tc_egress(ctx: TcContext) -> i32 {
    if !tc_hit(&ctx, DIR_EGRESS) {
        full_path(&FULL_PATH_TC, &ctx, FULL_PATH_TC_EGRESS);
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn flowd_tc_ingress_full(ctx: TcContext) -> i32 {
    count(CNT_FULL_PATH_RUNS, 1);
    if tc(&ctx, DIR_INGRESS) {
        full_path(&FULL_PATH_TC, &ctx, FULL_PATH_TC_H2);
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn flowd_tc_egress_full(ctx: TcContext) -> i32 {
    count(CNT_FULL_PATH_RUNS, 1);
    if tc(&ctx, DIR_EGRESS) {
        full_path(&FULL_PATH_TC, &ctx, FULL_PATH_TC_H2);
    }
    TC_ACT_UNSPEC
}

/// The HTTP/2 frame walker (h2.rs), tail-called by the TC full paths with
/// the packet's request in `H2_SCRATCH`. TC only: XDP sees uplinks, where
/// pod-to-pod HTTP/2 is usually encrypted or encapsulated.
#[classifier]
pub fn flowd_tc_h2(ctx: TcContext) -> i32 {
    h2::walk(&ctx);
    TC_ACT_UNSPEC
}

/// Multi-buffer capable (`xdp.frags`), so it also attaches to jumbo-MTU
/// devices (and its full path must be too: tail calls need the same flag).
#[xdp(frags)]
pub fn flowd_xdp(ctx: XdpContext) -> u32 {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let ifindex = ctx.ingress_ifindex() as u32;
    let frame = XdpFrame {
        ctx: ctx.ctx,
        linear: data_end - data,
    };
    if !hit::hit(data, data_end, ifindex, DIR_INGRESS, &frame) {
        full_path(&FULL_PATH_XDP, &ctx, FULL_PATH_XDP_IDX);
    }
    XDP_PASS
}

/// The XDP buffer as the hit path sees it.
struct XdpFrame {
    ctx: *mut xdp_md,
    linear: usize,
}

impl hit::Frame for XdpFrame {
    #[inline(always)]
    fn len(&self, ip_end: usize) -> usize {
        // Fragments only ever continue a frame that does not fit the first
        // buffer: one whose IP packet ends within it has none.
        if ip_end <= self.linear {
            self.linear
        } else {
            // SAFETY: plain helper on our own context.
            unsafe { bpf_xdp_get_buff_len(self.ctx.cast()) as usize }
        }
    }

    #[inline(always)]
    fn segs(&self, payload_off: usize, payload_len: usize) -> u32 {
        packet::xdp_segs(self.ctx, hit::L3_OFF, payload_off, payload_len)
    }
}

#[xdp(frags)]
pub fn flowd_xdp_full(ctx: XdpContext) -> u32 {
    count(CNT_FULL_PATH_RUNS, 1);
    let pkt = Xdp::new(&ctx);
    let mut slot = MaybeUninit::<FlowKey>::uninit();
    let key = zeroed_key(&mut slot);
    key.ifindex = ctx.ingress_ifindex() as u32;
    key.direction = DIR_INGRESS;
    // XDP has no HTTP/2 walker (Xdp::H2 is false): nothing to tail-call.
    observe(&pkt, key);
    XDP_PASS
}

/// Continues in the full-path program `idx`; returns only if it is missing.
#[inline(always)]
fn full_path<C: EbpfContext>(array: &ProgramArray, ctx: &C, idx: u32) {
    // SAFETY: the full-path programs take the same context and return the
    // same pass verdict as the caller.
    unsafe { array.tail_call(ctx, idx) };
    // Only if the loader did not install the program: never silently.
    count(CNT_FULL_PATH_MISSING, 1);
}

#[inline(always)]
fn tc_hit(ctx: &TcContext, direction: u8) -> bool {
    let skb = ctx.skb.skb;
    // SAFETY: reads of __sk_buff context fields.
    let (ifindex, vlan_present) = unsafe { ((*skb).ifindex, (*skb).vlan_present) };
    // A tag in skb metadata is part of the key: the full path.
    vlan_present == 0
        && hit::hit(
            ctx.data(),
            ctx.data_end(),
            ifindex,
            direction,
            &TcFrame {
                skb,
                len: ctx.len() as usize,
            },
        )
}

/// The skb as the hit path sees it.
struct TcFrame {
    skb: *mut __sk_buff,
    len: usize,
}

impl hit::Frame for TcFrame {
    #[inline(always)]
    fn len(&self, _ip_end: usize) -> usize {
        self.len
    }

    #[inline(always)]
    fn segs(&self, _payload_off: usize, _payload_len: usize) -> u32 {
        // SAFETY: a read of an __sk_buff context field.
        unsafe { (*self.skb).gso_segs }
    }
}

/// Benchmark baseline: the cost of running any TC program at all, one
/// program per hook like flowd's (TC ingress; `bench_egr_empty` for egress).
#[classifier]
pub fn bench_ing_empty(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// Benchmark baseline on TC egress, see `bench_ing_empty`.
#[classifier]
pub fn bench_egr_empty(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// Benchmark baseline: the cost of running any XDP program at all.
#[xdp(frags)]
pub fn bench_xdp_empty(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// Returns whether the packet's payload goes to the HTTP/2 walker.
#[inline(always)]
fn tc(ctx: &TcContext, direction: u8) -> bool {
    let skb = ctx.skb.skb;
    // SAFETY: reads of __sk_buff context fields.
    let (ifindex, vlan_present, vlan_tci, gso_segs) = unsafe {
        (
            (*skb).ifindex,
            (*skb).vlan_present,
            (*skb).vlan_tci,
            (*skb).gso_segs,
        )
    };
    let pkt = Skb::new(ctx, gso_segs);
    let mut slot = MaybeUninit::<FlowKey>::uninit();
    let key = zeroed_key(&mut slot);
    key.ifindex = ifindex;
    key.direction = direction;
    // A tag offloaded to skb metadata is not in the data and is the outermost one.
    if vlan_present != 0 {
        key.vlan = (vlan_tci & 0x0fff) as u16;
        key.flags = KEY_F_VLAN;
    }
    // What the HTTP/2 walker is to do is noted in skb->cb (see h2::Note),
    // not returned: a value live across `observe` multiplies the states the
    // verifier explores, and the full paths are close to its budget.
    h2::write_cb(skb, [0; 5]);
    observe(&pkt, key);
    h2::wanted(skb) && h2::stash_key(key)
}

/// Zeroes the key in place with six 8-byte stores; the key is then only
/// used by reference. Zero-initialising or moving it the usual way becomes
/// a call to a byte-by-byte memset/memcpy subprogram (the BPF backend does
/// not inline them): ~180 instructions on every packet.
#[inline(always)]
fn zeroed_key(slot: &mut MaybeUninit<FlowKey>) -> &mut FlowKey {
    let p = slot.as_mut_ptr().cast::<u64>();
    for i in 0..size_of::<FlowKey>() / 8 {
        // SAFETY: FlowKey is 48 bytes, 8-byte aligned (asserted in flowd-common).
        unsafe { write_volatile(p.add(i), 0) };
    }
    // SAFETY: every byte was written; all-zero is a valid FlowKey.
    unsafe { slot.assume_init_mut() }
}

#[inline(always)]
fn count(idx: u32, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot; BPF programs do not migrate while running.
        unsafe { *p += n }
    }
}

/// FlowStats::tcp_transitions bits for one packet's TCP flags.
#[inline(always)]
fn transitions(flags: u16) -> u16 {
    let mut t = 0;
    if flags & TCP_SYN != 0 {
        t |= if flags & TCP_ACK != 0 {
            TRANSITION_SYN_ACK
        } else {
            TRANSITION_SYN
        };
    }
    if flags & TCP_FIN != 0 {
        t |= TRANSITION_FIN;
    }
    if flags & TCP_RST != 0 {
        t |= TRANSITION_RST;
    }
    t
}

/// The per-packet path shared by all programs.
#[inline(always)]
fn observe<P: Packet>(pkt: &P, key: &mut FlowKey) {
    // Packets that hit the flow cache are counted in their slot (flushed into
    // COUNTERS with the slot; user space adds what is pending), and the hit
    // path does not read CONFIG either: each cold line costs ~20 ns per run.
    let l4 = match parse(pkt, key) {
        Ok(l4) => l4,
        Err(NoKey::Truncated) => {
            count(CNT_PACKETS, 1);
            count(CNT_PACKETS_TRUNCATED, 1);
            return;
        }
        Err(NoKey::Malformed) => {
            count(CNT_PACKETS, 1);
            count(CNT_PACKETS_OTHER, 1);
            return;
        }
    };
    if l4.other {
        count(CNT_PACKETS_OTHER, 1);
    }
    let key: &FlowKey = key;
    // Flow times have tick resolution (bpf_ktime_get_coarse_ns; events carry
    // the full-resolution time, read only when an event is sent). Even the
    // coarse clock costs 50-90 ns per call on live traffic here, so a cached
    // flow reads it only once per tick: jiffies, which the verifier inlines
    // to one load, says whether the tick changed.
    // SAFETY: helper without arguments.
    let tick = unsafe { bpf_jiffies64() };
    let mut now = 0;
    let mut ts = EventTime(0);
    let len = pkt.len() as u64;
    // A GSO/GRO buffer stands for `segs` packets, each repeating the headers.
    let segs = pkt.segs(l4.l3_off, l4.payload_off, l4.payload_len);
    let (packets, bytes) = if segs > 1 {
        let hdr = if l4.payload_len > 0 {
            l4.payload_off as u64
        } else {
            0
        };
        (segs as u64, len + (segs as u64 - 1) * hdr)
    } else {
        (1, len)
    };
    let tcp = key.protocol == PROTO_TCP && key.flags & KEY_F_FRAGMENT == 0;
    let (word, pkt_flags) = if tcp {
        let t = transitions(l4.tcp_flags);
        (
            l4.tcp_flags as u64 | (t as u64) << 16,
            slot_flags(l4.tcp_flags, t),
        )
    } else {
        (0, 0)
    };
    let tick = tick as u32;
    let cache = cache_slot(cache_index(key));
    if let Some(c) = cache {
        // SAFETY: `c` is this CPU's slot, valid for this program run and
        // written by no other program run meanwhile.
        unsafe {
            // The narrow pending counters must not overflow. Packets need no
            // test: a run adds at most 65535 (gso_segs is 16 bits in the
            // kernel) and a slot holds at most 65535 runs. (Every extra test
            // here also multiplies the states the verifier explores: one more
            // took flowd_tc_egress past its 1M-instruction limit.)
            let new_bytes = (*c).pending_bytes as u64 + bytes;
            let new_runs = (*c).pending_runs as u32 + 1;
            let mut hit =
                cache_match(c, key, pkt_flags) && new_bytes >> 32 == 0 && new_runs >> 16 == 0;
            if hit && (*c).tick != tick {
                now = coarse_ns();
                // A report is due: the full path sends it (at most a tick late).
                hit = now < (*c).due_ns;
                if hit {
                    (*c).tick = tick;
                    (*c).last_seen_ns = now;
                }
            }
            if hit {
                pkt.note_h2_flags(l4.tcp_flags);
                (*c).pending_runs = new_runs as u16;
                (*c).pending_packets += packets as u32;
                (*c).pending_bytes = new_bytes as u32;
                let sf = (*c).flags;
                if l4.payload_len != 0 && sf & SLOT_F_L7_ON != 0 {
                    // CONFIG's L7 setting, copied into the slot when it was filled.
                    let l7_max = (*c).l7_max;
                    if key.protocol == PROTO_UDP {
                        capture_l7(pkt, key, &l4, l7_max, &mut ts);
                    } else if tcp && sf & SLOT_F_L7_OFF == 0 {
                        let flow = flow_entry(key);
                        l7_tcp(pkt, key, &l4, l7_max, &mut ts, flow);
                        if let Some(s) = flow {
                            (*c).flags =
                                cached_flags(read_volatile(flags_word(s.as_ptr())), l7_max);
                        }
                    }
                }
                return;
            }
            cache_flush(c);
        }
    }

    count(CNT_PACKETS, 1);
    // A missing entry cannot happen for an array.
    let (interval_ns, l7_max) = match CONFIG.get(0) {
        Some(c) => (c.aggregation_interval_ns, c.l7_max_bytes),
        None => (0, 0),
    };
    if now == 0 {
        now = coarse_ns();
    }
    let flow = track_flow(
        key,
        packets,
        bytes,
        word,
        now,
        &mut ts,
        interval_ns,
        len as u32,
        l4.tcp_flags,
        P::BOTH_HOOKS,
    );
    // A SYN starts a new connection, maybe on a 4-tuple whose flow entry
    // lives on: the HTTP/2 walker forgets what its predecessor's payloads
    // taught (TC; a plain store, whatever the packet).
    pkt.note_h2_flags(l4.tcp_flags);
    if l4.payload_len != 0 && l7_max != 0 {
        if key.protocol == PROTO_UDP {
            capture_l7(pkt, key, &l4, l7_max, &mut ts);
        } else if tcp {
            l7_tcp(pkt, key, &l4, l7_max, &mut ts, flow);
        }
    }
    if let (Some(c), Some(s)) = (cache, flow) {
        // SAFETY: as above; `s` points to the flow's map value.
        unsafe { cache_install(c, key, s.as_ptr(), now, tick, interval_ns, l7_max) };
    }
}

/// Slot of a key in this CPU's flow cache: two independent multiplies, one
/// over the source address, ports and ifindex, one over the destination
/// address and the rest (instead of a dependent chain of six). Different
/// constants keep A→B and B→A apart.
#[inline(always)]
fn cache_index(key: &FlowKey) -> u32 {
    let w = (key as *const FlowKey).cast::<u64>();
    // SAFETY: FlowKey is 48 bytes, 8-byte aligned: words 0-5.
    cache_index_words(&[0, 1, 2, 3, 4, 5].map(|i| unsafe { read_volatile(w.add(i)) }))
}

/// [`cache_index`] of a key given as its six 64-bit words (the hit path
/// builds them in registers).
#[inline(always)]
fn cache_index_words(&[a, b, c, d, e, f]: &[u64; 6]) -> u32 {
    let h = (a ^ b ^ e).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (c ^ d ^ f).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    (h >> 40) as u32 & (FLOW_CACHE_SLOTS - 1)
}

#[inline(always)]
fn coarse_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Whether the slot caches the packet's flow and the packet brings no TCP
/// flag or transition the flow has not seen (the caller checks the time).
///
/// # Safety
/// `c` must point to this CPU's cache slot.
#[inline(always)]
unsafe fn cache_match(c: *mut CacheSlot, key: &FlowKey, pkt_flags: u16) -> bool {
    // SAFETY: caller's contract; FlowKey is 48 bytes, 8-byte aligned.
    unsafe {
        if pkt_flags & !(*c).flags != 0 {
            return false;
        }
        let a = addr_of_mut!((*c).key).cast::<u64>();
        let b = (key as *const FlowKey).cast::<u64>();
        let mut diff = 0u64;
        for i in 0..size_of::<FlowKey>() / 8 {
            diff |= read_volatile(a.add(i)) ^ read_volatile(b.add(i));
        }
        diff == 0
    }
}

/// The slot's `flags` for a flow with FLOWS flags word `w`.
#[inline(always)]
fn cached_flags(w: u64, l7_max: u32) -> u16 {
    let mut f = slot_flags(w as u16, (w >> 16) as u16);
    if l7_max != 0 {
        f |= SLOT_F_L7_ON;
    }
    if (w >> 32) as u8 & FLOW_L7_OFF != 0 {
        f |= SLOT_F_L7_OFF;
    }
    f
}

/// Adds the slot's pending counters to its flow in FLOWS and empties the slot.
///
/// # Safety
/// `c` must point to this CPU's cache slot.
#[inline(always)]
unsafe fn cache_flush(c: *mut CacheSlot) {
    // SAFETY: caller's contract; `s` points to a FLOWS value.
    unsafe {
        let packets = (*c).pending_packets as u64;
        if packets != 0 {
            match FLOWS.get_ptr_mut((*c).key) {
                Some(s) => {
                    atomic_xadd::<u64, u64, { Relaxed }>(addr_of_mut!((*s).packets), packets);
                    atomic_xadd::<u64, u64, { Relaxed }>(
                        addr_of_mut!((*s).bytes),
                        (*c).pending_bytes as u64,
                    );
                    let last = addr_of_mut!((*s).last_seen_ns);
                    if (*c).last_seen_ns > read_volatile(last) {
                        write_volatile(last, (*c).last_seen_ns);
                    }
                }
                // Evicted from FLOWS (table full) meanwhile: the pending
                // counts have nowhere to go; never silently.
                None => count(CNT_FLOW_MAP_ERRORS, 1),
            }
        }
        if (*c).pending_runs != 0 {
            count(CNT_PACKETS, (*c).pending_runs as u64);
        }
        // No packet's key has a pad byte set: the slot matches nothing now.
        write_volatile(addr_of_mut!((*c).key._pad[0]), 0xff);
        (*c).pending_runs = 0;
        (*c).pending_packets = 0;
        (*c).pending_bytes = 0;
    }
}

/// Caches the flow `s` (just updated by the full path) in the slot. Not with
/// interval 0 ("an event for every packet"): then nothing may bypass the full path.
///
/// # Safety
/// `c` must point to this CPU's (flushed) cache slot, `s` to the flow's FLOWS value.
#[inline(always)]
unsafe fn cache_install(
    c: *mut CacheSlot,
    key: &FlowKey,
    s: *mut FlowStats,
    now: u64,
    tick: u32,
    interval_ns: u64,
    l7_max: u32,
) {
    if interval_ns == 0 {
        return;
    }
    // SAFETY: caller's contract.
    unsafe {
        let dst = addr_of_mut!((*c).key).cast::<u64>();
        let src = (key as *const FlowKey).cast::<u64>();
        for i in 0..size_of::<FlowKey>() / 8 {
            write_volatile(dst.add(i), read_volatile(src.add(i)));
        }
        (*c).flags = cached_flags(read_volatile(flags_word(s)), l7_max);
        (*c).due_ns = read_volatile(addr_of_mut!((*s).last_report_ns)).saturating_add(interval_ns);
        (*c).last_seen_ns = now;
        (*c).tick = tick;
        (*c).l7_max = l7_max;
    }
}

/// The 64-bit word of tcp_flags, tcp_transitions and l7_state (offset 40,
/// aligned; asserted in flowd-common), updated with atomic ORs.
#[inline(always)]
fn flags_word(s: *mut FlowStats) -> *mut u64 {
    // SAFETY: only computes the field address.
    unsafe { addr_of_mut!((*s).tcp_flags).cast::<u64>() }
}

/// L7 capture on a TCP payload, skipped for flows already known to carry
/// something else: probing costs a helper call per packet when the payload
/// is not in the linear data (GSO buffers), which bulk transfers are made of.
///
/// TC also leaves the HTTP/2 walker its note (`h2::Note`): a flow known as
/// HTTP/2 is walked and not probed; otherwise the note holds what the
/// walker decides from (flags word, recognised or not): a started
/// connection's first payload that is neither HTTP/1.x nor DNS is the
/// walker's to tell (HTTP/2, or FLOW_L7_OFF), and a connection seen from
/// the middle may be walked on an HTTP/2 port. Every decision is the
/// walker's, in its own program: the full paths are close to the
/// verifier's budget, so they only store.
#[inline(always)]
fn l7_tcp<P: Packet>(
    pkt: &P,
    key: &FlowKey,
    l4: &L4,
    l7_max: u32,
    ts: &mut EventTime,
    flow: Option<NonNull<FlowStats>>,
) {
    // Without a flow entry (map full) there is no state: probe every payload.
    let Some(s) = flow else {
        capture_l7(pkt, key, l4, l7_max, ts);
        return;
    };
    let fw = flags_word(s.as_ptr());
    // SAFETY: as above.
    let w = unsafe { read_volatile(fw) };
    let state = (w >> 32) as u8;
    if state & FLOW_L7_OFF != 0 {
        return;
    }
    if P::H2 && state & FLOW_L7_H2 != 0 {
        pkt.note_h2(h2::note(h2::NOTE_WALK, l4));
        return;
    }
    let recognised = capture_l7(pkt, key, l4, l7_max, ts);
    // Decide on the first payload of a connection whose start we saw: its
    // first bytes say which protocol it speaks.
    // A payload too short to tell (e.g. a DNS length prefix written on its
    // own) decides nothing.
    let started = (w >> 16) as u16 & (TRANSITION_SYN | TRANSITION_SYN_ACK) != 0;
    let undecided = state & FLOW_L7_PROBED == 0;
    if started && undecided && (recognised || l4.payload_len >= l7::DECIDE_LEN) {
        // TC: the walker tells HTTP/2 from the rest and sets OFF or H2.
        let bits = FLOW_L7_PROBED | if recognised || P::H2 { 0 } else { FLOW_L7_OFF };
        // SAFETY: as above.
        unsafe { atomic_or::<u64, u64, { Relaxed }>(fw, (bits as u64) << 32) };
    }
    if P::H2 {
        // Ingredients only (no branch here); the walker decides.
        let bits = h2::NOTE_SEEN
            | (recognised as u32) << h2::NOTE_RECOGNISED_SHIFT
            | (w >> 16) as u32 & (h2::NOTE_STATE_MASK | h2::NOTE_STARTED_MASK);
        pkt.note_h2(h2::note(bits, l4));
    }
}

/// The flow's FLOWS entry. NonNull rather than the map's raw pointer: an
/// `Option<*mut _>` that is None carries an undefined payload, which LLVM
/// may copy between registers, and the verifier refuses a read of a
/// register never written.
#[inline(always)]
fn flow_entry(key: &FlowKey) -> Option<NonNull<FlowStats>> {
    FLOWS.get_ptr_mut(key).and_then(NonNull::new)
}

/// Updates (or creates) the flow and sends the event the packet calls for.
/// Returns the flow's map value (valid for this program run), `None` when
/// the flow map had no room.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn track_flow(
    key: &FlowKey,
    packets: u64,
    bytes: u64,
    word: u64,
    now: u64,
    ts: &mut EventTime,
    interval_ns: u64,
    pkt_len: u32,
    pkt_flags: u16,
    both_hooks: bool,
) -> Option<NonNull<FlowStats>> {
    let mut stats = FLOWS.get_ptr_mut(key);
    if stats.is_none() {
        let origin = if both_hooks && key.protocol == PROTO_UDP && key.flags & KEY_F_FRAGMENT == 0 {
            udp_origin(key)
        } else {
            0
        };
        let new = FlowStats {
            packets,
            bytes,
            first_seen_ns: now,
            last_seen_ns: now,
            last_report_ns: now,
            tcp_flags: word as u16,
            tcp_transitions: (word >> 16) as u16,
            l7_state: 0,
            origin,
            _pad: [0; 2],
        };
        match FLOWS.insert(key, new, BPF_NOEXIST as u64) {
            Ok(()) => {
                emit_flow(EV_NEW_FLOW, key, &new, ts, pkt_len, pkt_flags);
                return flow_entry(key);
            }
            // Another CPU created it meanwhile: account on its entry.
            Err(e) if e == -EEXIST => stats = FLOWS.get_ptr_mut(key),
            Err(_) => {}
        }
    }
    let Some(s) = stats else {
        count(CNT_FLOW_MAP_ERRORS, 1);
        return None;
    };
    // SAFETY: `s` points to the map value, valid for this program run;
    // counters other CPUs also update are changed atomically.
    unsafe {
        atomic_xadd::<u64, u64, { Relaxed }>(addr_of_mut!((*s).packets), packets);
        atomic_xadd::<u64, u64, { Relaxed }>(addr_of_mut!((*s).bytes), bytes);
        write_volatile(addr_of_mut!((*s).last_seen_ns), now);

        let mut kind = 0;
        if word != 0 {
            let fw = flags_word(s);
            if read_volatile(fw) & word != word {
                let old = atomic_or::<u64, u64, { Relaxed }>(fw, word);
                // Only the CPU that set a transition bit reports it.
                if (word >> 16) & !(old >> 16) != 0 {
                    kind = EV_TCP_FLAGS;
                }
            }
        }
        let last_report = addr_of_mut!((*s).last_report_ns);
        if kind != 0 {
            write_volatile(last_report, now);
        } else if interval_ns == 0 {
            write_volatile(last_report, now);
            kind = EV_UPDATE;
        } else {
            let last = read_volatile(last_report);
            // One CPU per interval wins the compare-exchange and reports.
            if now >= last.saturating_add(interval_ns)
                && atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(last_report, last, now).1
            {
                kind = EV_UPDATE;
            }
        }
        if kind != 0 {
            let snapshot = read_volatile(s);
            emit_flow(kind, key, &snapshot, ts, pkt_len, pkt_flags);
        }
    }
    NonNull::new(s)
}

/// `FlowStats::origin` of a new UDP entry made by a TC program: a reply when
/// the reverse entry (addresses and ports swapped, the other hook of the same
/// interface) exists, i.e. the other side spoke first. Built word by word:
/// FlowKey is six little-endian u64s (addresses in 0-3, ports and ifindex in
/// 4, vlan/protocol/family/direction/flags in 5, direction in bits 32..40).
#[inline(always)]
fn udp_origin(key: &FlowKey) -> u8 {
    let mut slot = MaybeUninit::<FlowKey>::uninit();
    let w = (key as *const FlowKey).cast::<u64>();
    let r = slot.as_mut_ptr().cast::<u64>();
    // SAFETY: FlowKey is 48 bytes, 8-byte aligned (asserted in flowd-common):
    // words 0-5 of both keys; every word of `slot` is written.
    unsafe {
        let k = [0, 1, 2, 3, 4, 5].map(|i| read_volatile(w.add(i)));
        write_volatile(r, k[2]);
        write_volatile(r.add(1), k[3]);
        write_volatile(r.add(2), k[0]);
        write_volatile(r.add(3), k[1]);
        let p = k[4];
        write_volatile(
            r.add(4),
            (p & !0xffff_ffff) | (p & 0xffff) << 16 | (p >> 16) & 0xffff,
        );
        // DIR_INGRESS is 0, DIR_EGRESS 1: the other hook.
        write_volatile(r.add(5), k[5] ^ (1 << 32));
    }
    // SAFETY: every word was written just above.
    let rev = unsafe { slot.assume_init_ref() };
    if FLOWS.get_ptr(rev).is_some() {
        FLOW_ORIGIN_KNOWN | FLOW_ORIGIN_REPLY
    } else {
        FLOW_ORIGIN_KNOWN
    }
}

#[inline(always)]
fn emit_flow(
    kind: u8,
    key: &FlowKey,
    stats: &FlowStats,
    ts: &mut EventTime,
    pkt_len: u32,
    flags: u16,
) {
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        count(CNT_EVENTS_LOST, 1);
        return;
    };
    entry.write(FlowEvent {
        header: header(kind, ts.get()),
        key: *key,
        stats: *stats,
        pkt_len,
        pkt_tcp_flags: flags,
        _pad: [0; 2],
    });
    entry.submit(wake_flags::<FlowEvent>());
    count(CNT_EVENTS_SUBMITTED, 1);
}

/// Submit flags for a record of `T`. flowd drains the ring on a short timer
/// (`datapath::ring::DRAIN_INTERVAL`), so a record wakes the reader only when
/// it fills the ring past a quarter, a half or three quarters. A wake-up per
/// record (the default whenever the reader has caught up) costs an irq_work,
/// i.e. a self-IPI (microseconds in a VM), here plus a context switch in
/// flowd; forcing one for every record above a mark would cost the same
/// whenever the reader lags. Two CPUs crossing a mark at once can both miss
/// it: the next mark or the timer covers that.
#[inline(always)]
pub(crate) fn wake_flags<T>() -> u64 {
    wake_flags_len(size_of::<T>())
}

/// [`wake_flags`] for a record of `len` bytes.
#[inline(always)]
pub(crate) fn wake_flags_len(len: usize) -> u64 {
    // The ring's record header is 8 bytes; records are 8-byte aligned.
    let rec = ((len + 8 + 7) & !7) as u64;
    // Includes this record (reserved, not yet submitted).
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    // A power of two (the kernel's requirement), so a quarter is one too.
    let quarter = EVENTS.query(BPF_RB_RING_SIZE as u64) / 4;
    let mask = quarter.wrapping_neg();
    if avail & mask != avail.saturating_sub(rec) & mask {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Full-resolution time of the packet, read once and only if an event needs it.
struct EventTime(u64);

impl EventTime {
    #[inline(always)]
    fn get(&mut self) -> u64 {
        if self.0 == 0 {
            // SAFETY: helper without arguments.
            self.0 = unsafe { bpf_ktime_get_ns() };
        }
        self.0
    }
}

#[inline(always)]
fn header(kind: u8, now: u64) -> EventHeader {
    EventHeader {
        kind,
        _pad: [0; 3],
        // SAFETY: helper without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns: now,
    }
}

/// Whether `port` is one of the configured extra DNS ports (a hash lookup:
/// callers check it last).
#[inline(always)]
fn extra_dns_port(port: u16) -> bool {
    // SAFETY: a map value, valid for this run.
    L7_PORTS
        .get_ptr(port)
        .is_some_and(|v| unsafe { *v } & L7_PORT_DNS != 0)
}

/// Sends the first bytes of an HTTP/1.x or DNS payload as an L7Event.
#[inline(always)]
/// Returns whether the payload was recognised (whether or not the event got through).
fn capture_l7<P: Packet>(pkt: &P, key: &FlowKey, l4: &L4, l7_max: u32, ts: &mut EventTime) -> bool {
    let is_extra = extra_dns_port;
    let Some(cap) = l7::classify(pkt, key, l4, is_extra) else {
        return false;
    };
    count(CNT_L7_EVENTS, 1);
    let n = l7::copy_len(l7_max, cap.avail);
    let Some(mut entry) = EVENTS.reserve::<L7Event>(0) else {
        count(CNT_EVENTS_LOST, 1);
        return true;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is the reserved record, large enough for an L7Event; every
    // field but the payload tail beyond `payload_len` is written.
    let copied = unsafe {
        addr_of_mut!((*ev).header).write(header(EV_L7, ts.get()));
        addr_of_mut!((*ev).key).write(*key);
        addr_of_mut!((*ev).l7_kind).write(cap.kind);
        addr_of_mut!((*ev).transport_tcp).write(cap.transport_tcp);
        addr_of_mut!((*ev).payload_len).write(n as u16);
        addr_of_mut!((*ev).l4_payload_len).write(l4.payload_len as u32);
        addr_of_mut!((*ev).tcp_seq).write(l4.tcp_seq);
        addr_of_mut!((*ev)._pad).write([0; 4]);
        pkt.copy_out(cap.off, &mut *addr_of_mut!((*ev).payload), n)
    };
    if copied {
        entry.submit(wake_flags::<L7Event>());
        count(CNT_EVENTS_SUBMITTED, 1);
    } else {
        // Cannot happen with the bounds above; still never silent.
        entry.discard(0);
        count(CNT_EVENTS_LOST, 1);
    }
    true
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
