//! L2/L3/L4 header parsing into a [`FlowKey`], generic over [`Packet`].
//!
//! Two paths produce the same keys: a fast path for the common layouts
//! (untagged Ethernet, IPv4 without options and not fragmented, IPv6 without
//! extension headers, TCP/UDP/ICMP/SCTP) that reads the linear data directly
//! at constant offsets, and the general path for everything else (VLAN tags,
//! options, extension headers, fragments, non-linear data, short packets),
//! which reads through the load-bytes helper.
//!
//! Policy for short packets: if any header needed for the key is cut short
//! (by the end of the packet or by the IP length fields), the packet yields
//! no key at all and is counted as truncated. A key is therefore either
//! complete and right, or absent.

use flowd_common::{
    FAMILY_IPV4, FAMILY_IPV6, FlowKey, KEY_F_FRAGMENT, KEY_F_VLAN, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};

use crate::packet::{Packet, direct};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ outer tag, still emitted by some switches.
const ETH_P_QINQ1: u16 = 0x9100;
/// Tags parsed in the packet data (802.1ad outer + 802.1Q inner).
const MAX_VLAN_TAGS: usize = 2;

const IPV6_HLEN: usize = 40;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
/// Extension headers skipped before giving up on an IPv6 packet.
const MAX_IPV6_EXT: usize = 6;

const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const ICMP_HLEN: usize = 8;
const SCTP_HLEN: usize = 12;

/// Why a packet produced no key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum NoKey {
    /// A needed header is cut short by the packet end or the IP length fields.
    Truncated,
    /// Inconsistent headers (bad IP version or header length, endless IPv6
    /// extension chain): counted as "other".
    Malformed,
}

/// What the parser learned beyond the key.
pub struct L4 {
    /// Not an IP packet, or an IP protocol without ports we know: counted as "other".
    pub other: bool,
    /// TCP flags of this packet (incl. NS), 0 for other protocols.
    pub tcp_flags: u16,
    /// TCP sequence number (0 unless TCP).
    pub tcp_seq: u32,
    /// Offset of the IP header (after any VLAN tags in the data).
    pub l3_off: usize,
    /// Offset of the first L4 payload byte (valid when payload_len > 0).
    pub payload_off: usize,
    /// L4 payload bytes in this packet, bounded by the IP length and the packet end.
    pub payload_len: usize,
    /// Parsed by the fast path: `payload_off` is a small constant-bounded
    /// offset, so the L7 probe may read the linear data directly.
    pub fast: bool,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct EthHdr {
    _dst: [u8; 6],
    _src: [u8; 6],
    proto: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct VlanHdr {
    tci: [u8; 2],
    proto: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    ver_ihl: u8,
    _tos: u8,
    tot_len: [u8; 2],
    _id: [u8; 2],
    frag_off: [u8; 2],
    _ttl: u8,
    proto: u8,
    _csum: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Hdr {
    ver_tc_flow: [u8; 4],
    payload_len: [u8; 2],
    next_hdr: u8,
    _hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

/// First two bytes of every skippable IPv6 extension header, and the
/// fragment header's offset field right after them.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Ext {
    next_hdr: u8,
    hdr_len: u8,
    frag_off: [u8; 2],
}

/// The part of the TCP header we use (ports, seq, ack, offset/flags).
#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHdr {
    sport: [u8; 2],
    dport: [u8; 2],
    seq: [u8; 4],
    _ack: [u8; 4],
    doff_ns: u8,
    flags: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ports {
    a: [u8; 2],
    b: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IcmpHdr {
    ty: u8,
    code: u8,
}

#[inline(always)]
fn is_ipv6_ext(nh: u8) -> bool {
    matches!(
        nh,
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_FRAGMENT
    )
}

/// Copies an IPv6 address into the key with four 4-byte stores: a plain
/// assignment becomes a call to a byte-by-byte memcpy subprogram.
#[inline(always)]
fn copy_addr(dst: &mut [u8; 16], src: &[u8; 16]) {
    let d = dst.as_mut_ptr().cast::<u32>();
    for i in 0..4 {
        let w = u32::from_ne_bytes([src[4 * i], src[4 * i + 1], src[4 * i + 2], src[4 * i + 3]]);
        // SAFETY: the key's address fields are 4-byte aligned (FlowKey is 8-aligned, they sit at 0 and 16).
        unsafe { core::ptr::write_volatile(d.add(i), w) };
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Parses `pkt` into `key` (which must come zeroed, with ifindex and direction set).
#[inline(always)]
pub fn parse<P: Packet>(pkt: &P, key: &mut FlowKey) -> Result<L4, NoKey> {
    if let Some(l4) = parse_fast(pkt.linear(), pkt.len(), key) {
        return Ok(l4);
    }
    parse_general(pkt, key)
}

/// Ports and what else the L4 header gave, before they go into the key.
struct Fast {
    sport: u16,
    dport: u16,
    l4: L4,
}

/// The common layouts, read directly at constant offsets. `None` means "not
/// one of them, or not all in the linear data": the general path decides.
/// Touches `key` only on success.
#[inline(always)]
fn parse_fast(lin: (usize, usize), pkt_len: usize, key: &mut FlowKey) -> Option<L4> {
    let eth: EthHdr = direct(lin, 0)?;
    match be16(eth.proto) {
        ETH_P_IP => {
            let ip: Ipv4Hdr = direct(lin, ETH_HLEN)?;
            // No options; neither MF nor an offset (fragments go the general way).
            if ip.ver_ihl != 0x45 || be16(ip.frag_off) & 0x3fff != 0 {
                return None;
            }
            let tot_len = be16(ip.tot_len) as usize;
            if tot_len < 20 {
                return None;
            }
            let ip_end = (ETH_HLEN + tot_len).min(pkt_len);
            let f = fast_l4(lin, ETH_HLEN + 20, ip_end, ip.proto)?;
            key.family = FAMILY_IPV4;
            key.src_addr[..4].copy_from_slice(&ip.src);
            key.dst_addr[..4].copy_from_slice(&ip.dst);
            key.protocol = ip.proto;
            key.src_port = f.sport;
            key.dst_port = f.dport;
            Some(f.l4)
        }
        ETH_P_IPV6 => {
            let ip: Ipv6Hdr = direct(lin, ETH_HLEN)?;
            let plen = be16(ip.payload_len) as usize;
            if ip.ver_tc_flow[0] >> 4 != 6 || plen == 0 {
                return None;
            }
            let ip_end = (ETH_HLEN + IPV6_HLEN + plen).min(pkt_len);
            // Extension headers make fast_l4 decline.
            let f = fast_l4(lin, ETH_HLEN + IPV6_HLEN, ip_end, ip.next_hdr)?;
            key.family = FAMILY_IPV6;
            copy_addr(&mut key.src_addr, &ip.src);
            copy_addr(&mut key.dst_addr, &ip.dst);
            key.protocol = ip.next_hdr;
            key.src_port = f.sport;
            key.dst_port = f.dport;
            Some(f.l4)
        }
        _ => None,
    }
}

#[inline(always)]
fn fast_l4(lin: (usize, usize), off: usize, ip_end: usize, proto: u8) -> Option<Fast> {
    let mut l4 = L4 {
        other: false,
        tcp_flags: 0,
        tcp_seq: 0,
        l3_off: ETH_HLEN,
        payload_off: 0,
        payload_len: 0,
        fast: true,
    };
    match proto {
        PROTO_TCP => {
            if off + TCP_HLEN > ip_end {
                return None;
            }
            let tcp: TcpHdr = direct(lin, off)?;
            l4.tcp_flags = (((tcp.doff_ns & 1) as u16) << 8) | tcp.flags as u16;
            l4.tcp_seq = u32::from_be_bytes(tcp.seq);
            let doff = ((tcp.doff_ns >> 4) as usize) * 4;
            if doff >= TCP_HLEN && off + doff < ip_end {
                l4.payload_off = off + doff;
                l4.payload_len = ip_end - (off + doff);
            }
            Some(Fast {
                sport: be16(tcp.sport),
                dport: be16(tcp.dport),
                l4,
            })
        }
        PROTO_UDP => {
            if off + UDP_HLEN > ip_end {
                return None;
            }
            let p: Ports = direct(lin, off)?;
            if off + UDP_HLEN < ip_end {
                l4.payload_off = off + UDP_HLEN;
                l4.payload_len = ip_end - (off + UDP_HLEN);
            }
            Some(Fast {
                sport: be16(p.a),
                dport: be16(p.b),
                l4,
            })
        }
        PROTO_SCTP => {
            if off + SCTP_HLEN > ip_end {
                return None;
            }
            let p: Ports = direct(lin, off)?;
            Some(Fast {
                sport: be16(p.a),
                dport: be16(p.b),
                l4,
            })
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            if off + ICMP_HLEN > ip_end {
                return None;
            }
            let icmp: IcmpHdr = direct(lin, off)?;
            Some(Fast {
                sport: icmp.ty as u16,
                dport: icmp.code as u16,
                l4,
            })
        }
        _ => None,
    }
}

/// Every layout we understand, through the load-bytes helper.
#[inline(always)]
fn parse_general<P: Packet>(pkt: &P, key: &mut FlowKey) -> Result<L4, NoKey> {
    let pkt_len = pkt.len();
    let eth: EthHdr = pkt.load(0).ok_or(NoKey::Truncated)?;
    let mut proto = be16(eth.proto);
    let mut off = ETH_HLEN;

    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD && proto != ETH_P_QINQ1 {
            break;
        }
        let tag: VlanHdr = pkt.load(off).ok_or(NoKey::Truncated)?;
        // The outermost tag names the VLAN (it may already come from skb metadata).
        if key.flags & KEY_F_VLAN == 0 {
            key.vlan = be16(tag.tci) & 0x0fff;
            key.flags |= KEY_F_VLAN;
        }
        proto = be16(tag.proto);
        off += 4;
    }

    let mut l4 = L4 {
        other: false,
        tcp_flags: 0,
        tcp_seq: 0,
        l3_off: off,
        payload_off: 0,
        payload_len: 0,
        fast: false,
    };

    // End of the IP packet: IP length field bounded by the packet end.
    let ip_end;
    let ip_proto;
    match proto {
        ETH_P_IP => {
            let ip: Ipv4Hdr = pkt.load(off).ok_or(NoKey::Truncated)?;
            if ip.ver_ihl >> 4 != 4 {
                return Err(NoKey::Malformed);
            }
            let ihl = ((ip.ver_ihl & 0x0f) as usize) * 4;
            if ihl < 20 {
                return Err(NoKey::Malformed);
            }
            let tot_len = be16(ip.tot_len) as usize;
            // tot_len 0: a GSO/BIG TCP packet, the length is the skb's.
            let end = if tot_len == 0 {
                pkt_len
            } else if tot_len < ihl {
                return Err(NoKey::Malformed);
            } else {
                (off + tot_len).min(pkt_len)
            };
            // Options must be present for the L4 offset to mean anything.
            if off + ihl > end {
                return Err(NoKey::Truncated);
            }
            key.family = FAMILY_IPV4;
            key.src_addr[..4].copy_from_slice(&ip.src);
            key.dst_addr[..4].copy_from_slice(&ip.dst);
            key.protocol = ip.proto;
            ip_end = end;
            ip_proto = ip.proto;
            off += ihl;
            if be16(ip.frag_off) & 0x1fff != 0 {
                key.flags |= KEY_F_FRAGMENT;
                return Ok(l4);
            }
        }
        ETH_P_IPV6 => {
            let ip: Ipv6Hdr = pkt.load(off).ok_or(NoKey::Truncated)?;
            if ip.ver_tc_flow[0] >> 4 != 6 {
                return Err(NoKey::Malformed);
            }
            let plen = be16(ip.payload_len) as usize;
            // payload_len 0: jumbogram or BIG TCP, the length is the skb's.
            let end = if plen == 0 {
                pkt_len
            } else {
                (off + IPV6_HLEN + plen).min(pkt_len)
            };
            off += IPV6_HLEN;
            let mut nh = ip.next_hdr;
            for _ in 0..MAX_IPV6_EXT {
                match nh {
                    NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                        let ext: Ipv6Ext = pkt.load(off).ok_or(NoKey::Truncated)?;
                        nh = ext.next_hdr;
                        off += (ext.hdr_len as usize + 1) * 8;
                    }
                    NEXTHDR_FRAGMENT => {
                        let ext: Ipv6Ext = pkt.load(off).ok_or(NoKey::Truncated)?;
                        nh = ext.next_hdr;
                        off += 8;
                        if be16(ext.frag_off) & 0xfff8 != 0 {
                            key.flags |= KEY_F_FRAGMENT;
                        }
                    }
                    _ => break,
                }
                if off > end {
                    return Err(NoKey::Truncated);
                }
                if key.flags & KEY_F_FRAGMENT != 0 {
                    break;
                }
            }
            if key.flags & KEY_F_FRAGMENT == 0 && is_ipv6_ext(nh) {
                // Longer chain than we follow: the L4 header is out of reach.
                return Err(NoKey::Malformed);
            }
            key.family = FAMILY_IPV6;
            copy_addr(&mut key.src_addr, &ip.src);
            copy_addr(&mut key.dst_addr, &ip.dst);
            key.protocol = nh;
            ip_end = end;
            ip_proto = nh;
            if key.flags & KEY_F_FRAGMENT != 0 {
                return Ok(l4);
            }
        }
        _ => {
            // Not IP: the flow is kept per EtherType (in src_port).
            key.src_port = proto;
            l4.other = true;
            return Ok(l4);
        }
    }

    let need = match ip_proto {
        PROTO_TCP => TCP_HLEN,
        PROTO_UDP => UDP_HLEN,
        PROTO_ICMP | PROTO_ICMPV6 => ICMP_HLEN,
        PROTO_SCTP => SCTP_HLEN,
        _ => {
            l4.other = true;
            return Ok(l4);
        }
    };
    if off + need > ip_end {
        return Err(NoKey::Truncated);
    }
    match ip_proto {
        PROTO_TCP => {
            let tcp: TcpHdr = pkt.load(off).ok_or(NoKey::Truncated)?;
            key.src_port = be16(tcp.sport);
            key.dst_port = be16(tcp.dport);
            l4.tcp_flags = (((tcp.doff_ns & 1) as u16) << 8) | tcp.flags as u16;
            l4.tcp_seq = u32::from_be_bytes(tcp.seq);
            let doff = ((tcp.doff_ns >> 4) as usize) * 4;
            if doff >= TCP_HLEN && off + doff < ip_end {
                l4.payload_off = off + doff;
                l4.payload_len = ip_end - (off + doff);
            }
        }
        PROTO_UDP => {
            let p: Ports = pkt.load(off).ok_or(NoKey::Truncated)?;
            key.src_port = be16(p.a);
            key.dst_port = be16(p.b);
            if off + UDP_HLEN < ip_end {
                l4.payload_off = off + UDP_HLEN;
                l4.payload_len = ip_end - (off + UDP_HLEN);
            }
        }
        PROTO_SCTP => {
            let p: Ports = pkt.load(off).ok_or(NoKey::Truncated)?;
            key.src_port = be16(p.a);
            key.dst_port = be16(p.b);
        }
        _ => {
            // ICMPv4 / ICMPv6: type and code in the port fields.
            let icmp: IcmpHdr = pkt.load(off).ok_or(NoKey::Truncated)?;
            key.src_port = icmp.ty as u16;
            key.dst_port = icmp.code as u16;
        }
    }
    Ok(l4)
}
