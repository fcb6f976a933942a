//! The hit path: a packet of a flow already in this CPU's flow cache slot,
//! which is nearly every packet of a real flow, accounted with as little
//! work as possible. Anything it does not fully settle goes to the full path
//! (`observe`), untouched: the hit path writes nothing unless it accounts the
//! packet completely.
//!
//! Why a separate path rather than the full one's cache check: on live
//! traffic the cost of a run is dominated by the code it touches, not the
//! instructions it executes. The full path's hit check sits in ~4,500
//! instructions (~25 KiB of machine code) that also hold the general parser,
//! the flow map update, the events and the L7 capture; its blocks are spread
//! over the whole program. Here the whole hit path is a program of its own,
//! about 3 KiB of machine code (an IPv4 packet runs through about a third
//! of it), that tail-calls the full path.
//!
//! It handles the common layouts only: untagged Ethernet, IPv4 without
//! options and not fragmented or IPv6 without extension headers, TCP or
//! UDP, headers in the linear data. It reads each header field with one load
//! of the field's width (BPF inline assembly: without it the BPF backend
//! splits every unaligned read into byte loads) and computes the flow key's
//! six words directly, with no key struct to zero and fill.

use core::{
    arch::asm,
    hint::cold_path,
    ptr::{addr_of, read_volatile},
};

use aya_ebpf::helpers::generated::bpf_jiffies64;
use flowd_common::{
    CacheSlot, FAMILY_IPV4, FAMILY_IPV6, PROTO_TCP, PROTO_UDP, SLOT_F_L7_OFF, SLOT_F_L7_ON,
    TCP_FIN, TCP_RST, TCP_SYN,
};

use crate::{cache_index_words, cache_slot, coarse_ns, extra_dns_port, l7};

/// `*(uN *)(base + off)` as one BPF load. `base` must be a packet pointer
/// whose checked range covers `off` plus the width (the verifier enforces it).
/// x86-64 and arm64 have efficient unaligned access, so the verifier accepts
/// unaligned packet loads.
macro_rules! ld {
    ($w:literal, $base:expr, $off:expr) => {{
        let v: u64;
        // SAFETY: the caller checked `base + off + width <= data_end`.
        unsafe {
            asm!(
                concat!("{v} = *(", $w, " *)({b} + {o})"),
                v = lateout(reg) v,
                b = in(reg) $base,
                o = const $off,
                options(nostack, readonly, preserves_flags, pure),
            )
        };
        v
    }};
}

/// EtherTypes as they read in a little-endian 16-bit load.
const ETH_IP_LE: u64 = 0x0008;
const ETH_IPV6_LE: u64 = 0xdd86;
/// Headers through UDP's (the shortest L4 header the hit path takes); TCP
/// is checked for its flags on its own.
const V4_NEED: usize = 14 + 20 + 8;
const V6_NEED: usize = 14 + 40 + 8;
/// TCP header bytes the hit path reads (ports through flags).
const TCP_NEED: usize = 14;
/// DNS header bytes the check below reads (id, flags, question count).
const DNS_CHECK: usize = 6;

/// Where the IP header starts in the frames the hit path takes (untagged Ethernet).
pub const L3_OFF: usize = 14;

/// The run's buffer, as the hook provides it.
pub trait Frame {
    /// Length of the whole frame (all fragments), from the first L2 byte,
    /// given where its IP packet claims to end (XDP: a frame whose IP packet
    /// ends in the linear data has nothing beyond it, so no helper call).
    fn len(&self, ip_end: usize) -> usize;
    /// Wire packets the buffer stands for (a GSO/GRO aggregate is several),
    /// given where its L4 payload starts and how long it is. Asked only for
    /// packets with a payload: a packet without one is never segmented.
    fn segs(&self, payload_off: usize, payload_len: usize) -> u32;
}

/// Accounts the packet in its flow's cache slot if it is a plain hit.
/// Returns false (having changed nothing) when the full path must decide.
///
/// Laid out for the cold caches a packet meets during bulk transfers, where
/// the slot's cache line and this code are usually not in this CPU's caches
/// (together most of a run's cost there):
/// - the slot is found from the key words read at their fixed offsets and
///   its line is read first, so the miss overlaps the header checks (their
///   failure only means that read was wasted);
/// - the IPv4 path falls through from the top, IPv6 sits after it;
/// - header fields are loaded again where needed rather than kept across
///   helper calls (a call clobbers r1-r5; a hot packet line is cheaper to
///   read than a spill);
/// - the segment count (on TC `gso_segs`, in a line of its own) is asked
///   only for packets with a payload.
#[inline(always)]
pub fn hit(data: usize, data_end: usize, ifindex: u32, direction: u8, frame: &impl Frame) -> bool {
    if data + V4_NEED > data_end {
        return false;
    }
    let pkt = Pkt {
        data,
        data_end,
        ifindex,
        direction,
    };
    if ld!("u16", data, 12) == ETH_IP_LE {
        account::<V4>(&pkt, frame)
    } else if ld!("u16", data, 12) == ETH_IPV6_LE && data + V6_NEED <= data_end {
        cold_path();
        account::<V6>(&pkt, frame)
    } else {
        false
    }
}

/// The run's packet as the hit path needs it.
struct Pkt {
    data: usize,
    data_end: usize,
    ifindex: u32,
    direction: u8,
}

/// What differs between IPv4 and IPv6 for the hit path. The key words and
/// the protocol are read at fixed offsets before the header is checked: the
/// caller checked the buffer holds them.
trait Family {
    const FAMILY: u8;
    /// Where the L4 header starts when the header is one the hit path takes.
    const L4: usize;
    /// Key words 0-3.
    fn addrs(data: usize) -> [u64; 4];
    fn proto(data: usize) -> u8;
    /// Where the IP packet claims to end (its length field), or None for a
    /// header the full path must parse.
    fn ip_end(p: &Pkt) -> Option<usize>;
}

struct V4;

impl Family for V4 {
    const FAMILY: u8 = FAMILY_IPV4;
    const L4: usize = 34;

    #[inline(always)]
    fn addrs(data: usize) -> [u64; 4] {
        [ld!("u32", data, 26), 0, ld!("u32", data, 30), 0]
    }

    #[inline(always)]
    fn proto(data: usize) -> u8 {
        ld!("u8", data, 23) as u8
    }

    #[inline(always)]
    fn ip_end(p: &Pkt) -> Option<usize> {
        let w = ld!("u32", p.data, 14);
        let f = ld!("u16", p.data, 20);
        // Version 4 without options; MF or a fragment offset (big-endian
        // 0x3fff) goes to the general path.
        if w & 0xff != 0x45 || f & 0xff3f != 0 {
            return None;
        }
        let tot_len = ((w >> 16) as u16).swap_bytes() as usize;
        Some(14 + tot_len)
    }
}

/// IPv6 without extension headers (their next-header values are not TCP
/// or UDP, so they fail the protocol check).
struct V6;

impl Family for V6 {
    const FAMILY: u8 = FAMILY_IPV6;
    const L4: usize = 54;

    #[inline(always)]
    fn addrs(data: usize) -> [u64; 4] {
        [
            ld!("u64", data, 22),
            ld!("u64", data, 30),
            ld!("u64", data, 38),
            ld!("u64", data, 46),
        ]
    }

    #[inline(always)]
    fn proto(data: usize) -> u8 {
        ld!("u8", data, 20) as u8
    }

    #[inline(always)]
    fn ip_end(p: &Pkt) -> Option<usize> {
        let w = ld!("u32", p.data, 14);
        let plen = (ld!("u16", p.data, 18) as u16).swap_bytes() as usize;
        if w & 0xf0 != 0x60 || plen == 0 {
            return None;
        }
        Some(54 + plen)
    }
}

/// Ports in host order, source in the low half (FlowKey's layout).
#[inline(always)]
fn ports<F: Family>(data: usize) -> u32 {
    (ld!("u32", data, F::L4) as u32)
        .swap_bytes()
        .rotate_left(16)
}

/// The key's last two words: ports and ifindex; vlan 0, protocol, family,
/// direction, flags 0, padding 0.
#[inline(always)]
fn key_tail<F: Family>(p: &Pkt, proto: u8) -> (u64, u64) {
    (
        ports::<F>(p.data) as u64 | (p.ifindex as u64) << 32,
        (proto as u64) << 16 | (F::FAMILY as u64) << 24 | (p.direction as u64) << 32,
    )
}

#[inline(always)]
fn account<F: Family>(p: &Pkt, frame: &impl Frame) -> bool {
    let data = p.data;
    let [a0, a1, a2, a3] = F::addrs(data);
    let (k4, k5) = key_tail::<F>(p, F::proto(data));
    let Some(c) = cache_slot(cache_index_words(&[a0, a1, a2, a3, k4, k5])) else {
        return false;
    };
    // SAFETY: `c` is this CPU's slot, valid for this program run and written
    // by no other program run meanwhile. Volatile: the load must be issued
    // here, ahead of the checks, not where its value is first needed.
    let slot_tick = unsafe { read_volatile(addr_of!((*c).tick)) };

    let Some(claimed) = F::ip_end(p) else {
        return false;
    };
    let len = frame.len(claimed);
    let ip_end = claimed.min(len);
    let proto = F::proto(data);
    // The L4 header: ports within the linear data (checked by the caller),
    // the rest checked per protocol; all of it within the IP packet.
    let off = F::L4;
    let l4 = data + off;
    let (tcp_flags, payload_off) = if proto == PROTO_TCP {
        if off + 20 > ip_end || l4 + TCP_NEED > p.data_end {
            return false;
        }
        let w = ld!("u16", l4, 12);
        let flags = ((w & 1) << 8 | w >> 8) as u16;
        // SYN, FIN and RST are transitions the full path reports.
        if flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
            return false;
        }
        let doff = ((w as usize >> 4) & 0xf) * 4;
        (flags, if doff >= 20 { off + doff } else { ip_end })
    } else if proto == PROTO_UDP {
        if off + 8 > ip_end {
            return false;
        }
        (0, off + 8)
    } else {
        return false;
    };
    let payload_len = ip_end.saturating_sub(payload_off);

    // Loaded again (see `hit`).
    let [a0, a1, a2, a3] = F::addrs(data);
    let (k4, k5) = key_tail::<F>(p, proto);
    // SAFETY: as above.
    unsafe {
        // FlowKey is 48 bytes, 8-byte aligned: six words.
        let k = &*addr_of!((*c).key).cast::<[u64; 6]>();
        if k[0] != a0 || k[1] != a1 || k[2] != a2 || k[3] != a3 || k[4] != k4 || k[5] != k5 {
            return false;
        }
        let sf = (*c).flags;
        if tcp_flags & !sf & 0x1ff != 0 {
            return false;
        }
        let (packets, bytes) = if payload_len == 0 {
            (1, len as u64)
        } else {
            if sf & SLOT_F_L7_ON != 0
                && !l7_settled(p, proto, sf, k4 as u32, payload_off, payload_len)
            {
                return false;
            }
            let segs = frame.segs(payload_off, payload_len);
            if segs > 1 {
                (segs, len as u64 + (segs as u64 - 1) * payload_off as u64)
            } else {
                (1, len as u64)
            }
        };
        let new_bytes = (*c).pending_bytes as u64 + bytes;
        let new_runs = (*c).pending_runs as u32 + 1;
        if new_bytes >> 32 != 0 || new_runs >> 16 != 0 {
            return false;
        }
        // Helper without arguments (inlined by the verifier to one load).
        let tick = bpf_jiffies64() as u32;
        // The coarse clock only moves on a tick: a packet in the slot's tick
        // needs no clock read. On a new one, the time goes into the slot
        // unless a periodic report is due (the full path sends it, at most a
        // tick late).
        if slot_tick != tick {
            cold_path();
            let now = coarse_ns();
            if now >= (*c).due_ns {
                return false;
            }
            (*c).tick = tick;
            (*c).last_seen_ns = now;
        }
        update(c, new_runs as u16, packets, new_bytes as u32);
    }
    true
}

/// # Safety
/// `c` must point to this CPU's cache slot.
#[inline(always)]
unsafe fn update(c: *mut CacheSlot, runs: u16, packets: u32, bytes: u32) {
    // SAFETY: caller's contract.
    unsafe {
        (*c).pending_runs = runs;
        (*c).pending_packets += packets;
        (*c).pending_bytes = bytes;
    }
}

/// Whether L7 capture has nothing to do with this payload: the flow is a TCP
/// connection already known to carry another protocol, or a UDP payload
/// that cannot be a DNS message (l7::classify's checks of the flags, the
/// question count and, last, the ports). Anything else is the full path's.
#[inline(always)]
fn l7_settled(p: &Pkt, proto: u8, sf: u16, ports: u32, off: usize, len: usize) -> bool {
    if proto == PROTO_TCP {
        return sf & SLOT_F_L7_OFF != 0;
    }
    if len < l7::DNS_MIN_LEN {
        return true;
    }
    // `off` is 42 or 62 here (a UDP payload), so the verifier can follow it.
    let h = p.data + (off & 0x7f);
    if h + DNS_CHECK > p.data_end {
        return false;
    }
    let w = ld!("u32", h, 2);
    let flags = (w as u16).swap_bytes();
    let qdcount = ((w >> 16) as u16).swap_bytes();
    !l7::dns_flags_sane(flags)
        || !l7::dns_qdcount_sane(qdcount)
        || !l7::dns_ports(ports as u16, (ports >> 16) as u16, extra_dns_port)
}
