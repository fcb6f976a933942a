//! Recognition of HTTP/1.x and DNS payloads, and their copy into an L7Event.
//!
//! Only packets with an L4 payload get here. The checks are ordered so that
//! the common case (a TCP segment that is neither) costs one 8-byte load, a
//! few compares and, for non-DNS ports, one 14-byte load and header checks:
//! the `L7_PORTS` map is only consulted for payloads that already look like a
//! DNS header.

use flowd_common::{
    FlowKey, L7_DNS, L7_HTTP_REQUEST, L7_HTTP_RESPONSE, L7_MAX_PAYLOAD, PROTO_TCP, PROTO_UDP,
};

use crate::{
    packet::{Packet, direct},
    parse::L4,
};

const DNS_PORT: u16 = 53;
/// DNS header (12) + the shortest question (root name 1, type 2, class 2).
pub const DNS_MIN_LEN: usize = 17;
/// Shortest first payload of a connection that decides it is neither HTTP
/// nor DNS (the longest prefix any check needs: DNS over TCP).
pub const DECIDE_LEN: usize = 2 + DNS_MIN_LEN;
/// More questions than this in one message: not DNS as resolvers send it.
const DNS_MAX_QDCOUNT: u16 = 4;
/// Upper bound for answer/authority/additional counts (a 64 KiB message holds fewer).
const DNS_MAX_RRCOUNT: u16 = 4096;

/// What to copy into the event.
pub struct Capture {
    pub kind: u8,
    pub transport_tcp: u8,
    /// Packet offset of the first byte to copy.
    pub off: usize,
    /// Bytes available from `off` to the end of the L4 payload.
    pub avail: usize,
}

/// Little-endian word of the first `N` bytes of `s` (prefix match on a u64 load).
const fn word<const N: usize>(s: &[u8; N]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < N {
        w |= (s[i] as u64) << (8 * i);
        i += 1;
    }
    w
}

const fn mask(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// (pattern, mask) for each prefix: the nine HTTP/1.x methods followed by a
/// space, and the response status line "HTTP/1.".
const HTTP_REQ: [(u64, u64); 9] = [
    (word(b"GET "), mask(4)),
    (word(b"POST "), mask(5)),
    (word(b"PUT "), mask(4)),
    (word(b"DELETE "), mask(7)),
    (word(b"HEAD "), mask(5)),
    (word(b"OPTIONS "), mask(8)),
    (word(b"PATCH "), mask(6)),
    (word(b"CONNECT "), mask(8)),
    (word(b"TRACE "), mask(6)),
];
const HTTP_RESP: (u64, u64) = (word(b"HTTP/1."), mask(7));

/// Bytes needed to tell HTTP apart: the longest prefix we match.
const HTTP_PROBE: usize = 8;

#[repr(C)]
#[derive(Clone, Copy)]
struct DnsHdr {
    _id: [u8; 2],
    flags: [u8; 2],
    qdcount: [u8; 2],
    ancount: [u8; 2],
    nscount: [u8; 2],
    arcount: [u8; 2],
}

/// DNS over TCP: the 2-byte length prefix, then the header.
#[repr(C)]
#[derive(Clone, Copy)]
struct DnsTcpHdr {
    len: [u8; 2],
    hdr: DnsHdr,
}

#[inline(always)]
fn http_kind(w: u64) -> u8 {
    if w & HTTP_RESP.1 == HTTP_RESP.0 {
        return L7_HTTP_RESPONSE;
    }
    let mut i = 0;
    while i < HTTP_REQ.len() {
        let (pat, m) = HTTP_REQ[i];
        if w & m == pat {
            return L7_HTTP_REQUEST;
        }
        i += 1;
    }
    0
}

/// The flags checks of [`dns_header_sane`] (also the hit path's pre-check).
#[inline(always)]
pub fn dns_flags_sane(flags: u16) -> bool {
    let opcode = (flags >> 11) & 0xf;
    // QUERY, STATUS, NOTIFY, UPDATE; IQUERY (1) is obsolete, 3 unassigned.
    // The Z bit is reserved and must be zero.
    matches!(opcode, 0 | 2 | 4 | 5) && flags & 0x0040 == 0
}

/// The question-count check of [`dns_header_sane`] (also the hit path's pre-check).
#[inline(always)]
pub fn dns_qdcount_sane(qdcount: u16) -> bool {
    (1..=DNS_MAX_QDCOUNT).contains(&qdcount)
}

/// Header checks that real DNS messages pass and random payloads rarely do.
#[inline(always)]
fn dns_header_sane(h: &DnsHdr) -> bool {
    dns_flags_sane(u16::from_be_bytes(h.flags))
        && dns_qdcount_sane(u16::from_be_bytes(h.qdcount))
        && u16::from_be_bytes(h.ancount) <= DNS_MAX_RRCOUNT
        && u16::from_be_bytes(h.nscount) <= DNS_MAX_RRCOUNT
        && u16::from_be_bytes(h.arcount) <= DNS_MAX_RRCOUNT
}

#[inline(always)]
fn dns_port(key: &FlowKey, is_extra: impl Fn(u16) -> bool) -> bool {
    dns_ports(key.src_port, key.dst_port, is_extra)
}

/// Whether either port is 53 or a configured extra DNS port.
#[inline(always)]
pub fn dns_ports(src: u16, dst: u16, is_extra: impl Fn(u16) -> bool) -> bool {
    src == DNS_PORT || dst == DNS_PORT || is_extra(dst) || is_extra(src)
}

/// Reads the first payload bytes: directly when the fast path parsed the
/// packet (its payload offset is small and bounded, which the verifier can
/// follow) and they are linear, else through the load-bytes helper.
#[inline(always)]
fn probe<T: Copy, P: Packet>(pkt: &P, l4: &L4, off: usize) -> Option<T> {
    if l4.fast
        && let Some(v) = direct(pkt.linear(), off)
    {
        return Some(v);
    }
    pkt.load(off)
}

/// Decides whether the payload is HTTP/1.x or DNS. `is_extra` says whether a
/// port is one of the configured extra DNS ports (a map lookup, done last).
#[inline(always)]
pub fn classify<P: Packet>(
    pkt: &P,
    key: &FlowKey,
    l4: &L4,
    is_extra: impl Fn(u16) -> bool,
) -> Option<Capture> {
    let off = l4.payload_off;
    let len = l4.payload_len;
    if key.protocol == PROTO_TCP {
        if len >= HTTP_PROBE {
            let w = u64::from_le_bytes(probe::<[u8; 8], P>(pkt, l4, off)?);
            let kind = http_kind(w);
            if kind != 0 {
                return Some(Capture {
                    kind,
                    transport_tcp: 1,
                    off,
                    avail: len,
                });
            }
        }
        if len < 2 + DNS_MIN_LEN {
            return None;
        }
        let h: DnsTcpHdr = probe(pkt, l4, off)?;
        let msg_len = u16::from_be_bytes(h.len) as usize;
        if msg_len < DNS_MIN_LEN || !dns_header_sane(&h.hdr) || !dns_port(key, is_extra) {
            return None;
        }
        return Some(Capture {
            kind: L7_DNS,
            transport_tcp: 1,
            off: off + 2,
            avail: len - 2,
        });
    }
    if key.protocol == PROTO_UDP {
        if len < DNS_MIN_LEN {
            return None;
        }
        let h: DnsHdr = probe(pkt, l4, off)?;
        if !dns_header_sane(&h) || !dns_port(key, is_extra) {
            return None;
        }
        return Some(Capture {
            kind: L7_DNS,
            transport_tcp: 0,
            off,
            avail: len,
        });
    }
    None
}

/// Bytes to copy: the configured maximum, bounded by L7_MAX_PAYLOAD and the payload.
#[inline(always)]
pub fn copy_len(max_bytes: u32, avail: usize) -> usize {
    let n = (max_bytes as usize).min(L7_MAX_PAYLOAD).min(avail);
    // Keeps the verifier's range for the helper's size argument at 0..=1023.
    n & 0x3ff
}
