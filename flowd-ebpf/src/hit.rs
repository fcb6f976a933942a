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
//! under 2 KiB of machine code, that tail-calls the full path.
//!
//! It handles the common layouts only: untagged Ethernet, IPv4 without
//! options and not fragmented or IPv6 without extension headers, TCP or
//! UDP, headers in the linear data. It reads each header field with one load
//! of the field's width (BPF inline assembly: without it the BPF backend
//! splits every unaligned read into byte loads) and computes the flow key's
//! six words directly, with no key struct to zero and fill.

use core::{
    arch::asm,
    ptr::{addr_of_mut, read_volatile},
};

use aya_ebpf::helpers::generated::bpf_jiffies64;
use flowd_common::{
    CacheSlot, FAMILY_IPV4, FAMILY_IPV6, PROTO_TCP, PROTO_UDP, SLOT_F_L7_OFF, SLOT_F_L7_ON,
    slot_flags,
};

use crate::{FLOW_CACHE, cache_index_words, extra_dns_port, l7, transitions};

/// `*(uN *)(base + off)` as one BPF load. `base` must be a packet pointer
/// whose checked range covers `off` plus the width (the verifier enforces it).
/// x86-64 and arm64 have efficient unaligned access, so the verifier accepts
/// unaligned packet loads.
macro_rules! ld {
    ($w:literal, $base:expr, $off:literal) => {{
        let v: u64;
        // SAFETY: the caller checked `base + off + width <= data_end`.
        unsafe {
            asm!(
                concat!("{v} = *(", $w, " *)({b} + ", stringify!($off), ")"),
                v = lateout(reg) v,
                b = in(reg) $base,
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

/// Accounts the packet in its flow's cache slot if it is a plain hit.
/// Returns false (having changed nothing) when the full path must decide.
#[inline(always)]
pub fn hit(
    data: usize,
    data_end: usize,
    len: usize,
    ifindex: u32,
    direction: u8,
    segs: u32,
) -> bool {
    if data + V4_NEED > data_end {
        return false;
    }
    let ethertype = ld!("u16", data, 12);
    // Key words 0-3 (addresses), protocol, L4 offset, end of the IP packet.
    let (a0, a1, a2, a3, proto, family, l4off, ip_end);
    if ethertype == ETH_IP_LE {
        let w = ld!("u32", data, 14);
        // Version 4, no options.
        if w & 0xff != 0x45 {
            return false;
        }
        let tot_len = ((w >> 16) as u16).swap_bytes() as usize;
        let f = ld!("u32", data, 20);
        // MF or a fragment offset (big-endian 0x3fff): the general path.
        if f & 0xff3f != 0 || tot_len < 20 {
            return false;
        }
        proto = (f >> 24) as u8;
        a0 = ld!("u32", data, 26);
        a1 = 0;
        a2 = ld!("u32", data, 30);
        a3 = 0;
        family = FAMILY_IPV4;
        l4off = 34;
        ip_end = (14 + tot_len).min(len);
    } else if ethertype == ETH_IPV6_LE {
        if data + V6_NEED > data_end {
            return false;
        }
        let w = ld!("u32", data, 14);
        let p = ld!("u32", data, 18);
        let plen = (p as u16).swap_bytes() as usize;
        if w & 0xf0 != 0x60 || plen == 0 {
            return false;
        }
        // Extension headers are not TCP or UDP: the general path.
        proto = (p >> 16) as u8;
        a0 = ld!("u64", data, 22);
        a1 = ld!("u64", data, 30);
        a2 = ld!("u64", data, 38);
        a3 = ld!("u64", data, 46);
        family = FAMILY_IPV6;
        l4off = 54;
        ip_end = (54 + plen).min(len);
    } else {
        return false;
    }
    // The L4 header: ports within the linear data (checked above), the rest
    // checked per protocol; all of it within the IP packet.
    let l4 = data + l4off;
    let (tcp_flags, payload_off) = match proto {
        PROTO_TCP => {
            if l4off + 20 > ip_end || l4 + TCP_NEED > data_end {
                return false;
            }
            let w = ld!("u16", l4, 12);
            let flags = ((w & 1) << 8 | w >> 8) as u16;
            let doff = ((w as usize >> 4) & 0xf) * 4;
            (flags, if doff >= 20 { l4off + doff } else { ip_end })
        }
        PROTO_UDP => {
            if l4off + 8 > ip_end {
                return false;
            }
            (0, l4off + 8)
        }
        _ => return false,
    };
    let payload_len = ip_end.saturating_sub(payload_off);
    // Ports in host order, source in the low half (FlowKey's layout).
    let ports = (ld!("u32", l4, 0) as u32).swap_bytes().rotate_left(16);

    let k4 = ports as u64 | (ifindex as u64) << 32;
    // vlan 0, protocol, family, direction, flags 0, padding 0.
    let k5 = (proto as u64) << 16 | (family as u64) << 24 | (direction as u64) << 32;
    let words = [a0, a1, a2, a3, k4, k5];
    let Some(c) = FLOW_CACHE.get_ptr_mut(cache_index_words(&words)) else {
        return false;
    };
    // SAFETY: helper without arguments (inlined by the verifier to one load).
    let tick = unsafe { bpf_jiffies64() } as u32;
    // SAFETY: `c` is this CPU's slot, valid for this program run and written
    // by no other program run meanwhile.
    unsafe {
        let key = addr_of_mut!((*c).key).cast::<u64>();
        let mut diff = 0;
        for (i, w) in words.iter().enumerate() {
            diff |= read_volatile(key.add(i)) ^ w;
        }
        // A new tick means a clock read and perhaps a report: the full path.
        if diff != 0 || (*c).tick != tick {
            return false;
        }
        let sf = (*c).flags;
        if proto == PROTO_TCP && slot_flags(tcp_flags, transitions(tcp_flags)) & !sf != 0 {
            return false;
        }
        if payload_len != 0
            && sf & SLOT_F_L7_ON != 0
            && !l7_settled(data, data_end, proto, sf, ports, payload_off, payload_len)
        {
            return false;
        }
        let (packets, bytes) = if segs > 1 {
            let hdr = if payload_len > 0 { payload_off } else { 0 };
            (segs, len as u64 + (segs as u64 - 1) * hdr as u64)
        } else {
            (1, len as u64)
        };
        let new_bytes = (*c).pending_bytes as u64 + bytes;
        let new_runs = (*c).pending_runs as u32 + 1;
        if new_bytes >> 32 != 0 || new_runs >> 16 != 0 {
            return false;
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
fn l7_settled(
    data: usize,
    data_end: usize,
    proto: u8,
    sf: u16,
    ports: u32,
    off: usize,
    len: usize,
) -> bool {
    if proto == PROTO_TCP {
        return sf & SLOT_F_L7_OFF != 0;
    }
    if len < l7::DNS_MIN_LEN {
        return true;
    }
    // `off` is 42 or 62 here (a UDP payload), so the verifier can follow it.
    let p = data + (off & 0x7f);
    if p + DNS_CHECK > data_end {
        return false;
    }
    let w = ld!("u32", p, 2);
    let flags = (w as u16).swap_bytes();
    let qdcount = ((w >> 16) as u16).swap_bytes();
    !l7::dns_flags_sane(flags)
        || !l7::dns_qdcount_sane(qdcount)
        || !l7::dns_ports(ports as u16, (ports >> 16) as u16, extra_dns_port)
}
