//! The kernel ↔ user-space ABI of flowd.
//!
//! Every type here is `#[repr(C)]` with explicit padding so that the eBPF
//! programs (bpfel, built by nightly) and the daemon (x86_64/aarch64, stable)
//! agree byte for byte. Sizes are asserted at compile time: changing a layout
//! without updating both sides fails the build, not the datapath.
#![no_std]

/// Hook direction of the program that saw the packet.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

/// Address family stored in [`FlowKey::family`].
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// IP protocol numbers we classify. Anything else keeps its number but no ports.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// TCP flag bits as on the wire (byte 13 of the header) plus NS (bit 8).
pub const TCP_FIN: u16 = 0x01;
pub const TCP_SYN: u16 = 0x02;
pub const TCP_RST: u16 = 0x04;
pub const TCP_PSH: u16 = 0x08;
pub const TCP_ACK: u16 = 0x10;
pub const TCP_URG: u16 = 0x20;
pub const TCP_ECE: u16 = 0x40;
pub const TCP_CWR: u16 = 0x80;
pub const TCP_NS: u16 = 0x100;

/// [`FlowKey::flags`] bits.
/// The packet was an IPv4/IPv6 fragment other than the first: no L4 header, ports are 0.
pub const KEY_F_FRAGMENT: u8 = 0x01;
/// The packet carried an 802.1Q/802.1ad tag; `vlan` holds the outermost VLAN id.
pub const KEY_F_VLAN: u8 = 0x02;

/// Identifies one aggregated flow as seen at one hook.
///
/// Addresses are stored in 16 bytes; IPv4 uses the first 4 bytes and zeroes
/// the rest. For ICMP/ICMPv6, `src_port` holds the type and `dst_port` the code.
/// For protocols that are not IP (ARP, …) `family` is 0 and only `ether_type`
/// (in `src_port`) is kept.
/// 8-byte aligned so that the programs zero and copy it with 8-byte stores
/// (at alignment 4 the BPF backend calls a byte-by-byte memset per packet).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub ifindex: u32,
    pub vlan: u16,
    pub protocol: u8,
    pub family: u8,
    pub direction: u8,
    pub flags: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 48);
const _: () = assert!(core::mem::align_of::<FlowKey>() == 8);

/// Per-flow counters kept in the `FLOWS` LRU map. Counters are updated with
/// atomic adds because one flow can be hit from several CPUs at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowStats {
    pub packets: u64,
    pub bytes: u64,
    /// CLOCK_MONOTONIC of the first and last packet, at tick resolution
    /// (bpf_ktime_get_coarse_ns(): cheap per packet, up to one tick behind
    /// bpf_ktime_get_ns()). Event headers carry the full-resolution time.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// When an event for this flow was last handed to user space (same clock
    /// as last_seen_ns).
    pub last_report_ns: u64,
    /// Union of all TCP flags seen on this flow.
    pub tcp_flags: u16,
    /// `TRANSITION_*` bits already reported with EV_NEW_FLOW / EV_TCP_FLAGS.
    /// The kernel updates `tcp_flags`, this field and `l7_state` with atomic
    /// 64-bit ORs on the last 8 bytes (little-endian: `tcp_flags` is bits 0..16,
    /// this field bits 16..32, `l7_state` bits 32..40; `origin`, bits 40..48,
    /// is written once when the entry is created, `_pad` stays 0), so each
    /// transition is reported exactly once even when CPUs race.
    pub tcp_transitions: u16,
    /// `FLOW_L7_*` bits: whether the kernel still looks for HTTP/DNS in this
    /// TCP flow's payloads (kernel-internal; user space may ignore it).
    pub l7_state: u8,
    /// `FLOW_ORIGIN_*` bits: which side of a UDP conversation this entry is.
    pub origin: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowStats>() == 48);
// The 64-bit word at tcp_flags (flags + transitions + pad) is updated atomically: keep it aligned.
const _: () = assert!(core::mem::offset_of!(FlowStats, tcp_flags) == 40);

/// Slots per CPU of the flow cache (a power of two). `FLOW_CACHE` is one
/// plain array holding every CPU's slots, CPU `c`'s at
/// `c * FLOW_CACHE_SLOTS ..`: the loader sizes it with [`flow_cache_entries`].
/// (Not a per-CPU array: finding a per-CPU value costs a load from the map's
/// pointer table, a cold line of its own under bulk traffic; a plain array's
/// element address is arithmetic.)
pub const FLOW_CACHE_SLOTS: u32 = 256;

/// `FLOW_CACHE`'s map flags: BPF_F_MMAPABLE, so user space reads every
/// CPU's slots through a mapping instead of one syscall per slot.
pub const FLOW_CACHE_MAP_FLAGS: u32 = 1 << 10;

/// `FLOW_CACHE`'s entries for `cpus` possible CPUs. A CPU beyond the array
/// (a loader that did not size it) finds no slot and takes the full path.
pub const fn flow_cache_entries(cpus: u32) -> u32 {
    cpus.saturating_mul(FLOW_CACHE_SLOTS)
}

/// One slot of a CPU's flow cache in front of `FLOWS`.
///
/// Why: on live traffic the `FLOWS` lookup (hash, bucket, element, in a
/// vmalloc'd table) costs several cache and TLB misses per packet. A packet
/// of the flow cached in its slot (same key, no new TCP flag, no report due)
/// only adds to the slot's pending counters, and reads the clock only when
/// the tick changed; anything else first flushes the
/// pending counters into `FLOWS` and then takes the full path. Only the owning
/// CPU writes a slot (BPF programs do not migrate and TC/XDP do not nest on a
/// CPU), so no atomics are needed here.
///
/// User space sees `FLOWS` plus every slot's pending counters.
///
/// Layout: everything a hit reads or writes is in the first cache line (on
/// bulk traffic every run follows a 64 KiB copy, so each line a run touches
/// misses); the second line is read once per tick or with L7 capture on. The
/// pending counters are 32/16 bits to fit: a packet that would overflow them
/// takes the full path, which flushes them. An emptied slot's key has
/// `_pad[0]` set, which no packet's key has, so it matches nothing.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CacheSlot {
    pub key: FlowKey,
    /// Not yet added to the flow's `FLOWS` entry.
    pub pending_bytes: u32,
    pub pending_packets: u32,
    /// Low 32 bits of jiffies when `last_seen_ns` was last set: a packet in
    /// the same tick needs no clock read (the coarse clock only moves on ticks).
    pub tick: u32,
    /// Program runs (buffers) counted here instead of in COUNTERS'
    /// CNT_PACKETS; added to it when the slot is flushed.
    pub pending_runs: u16,
    /// The flow's TCP flags and transitions when cached, in the compact form
    /// of [`slot_flags`], plus `SLOT_F_*` bits: a packet with a flag outside
    /// them takes the full path.
    pub flags: u16,
    // Second cache line.
    /// Tick-resolution time of the last cached packet (see FlowStats::last_seen_ns).
    pub last_seen_ns: u64,
    /// The next packet at or after this time takes the full path (periodic report).
    pub due_ns: u64,
    /// CONFIG's l7_max_bytes when the slot was filled (the hit path reads no
    /// CONFIG; flowd writes CONFIG once, before attaching).
    pub l7_max: u32,
    pub _pad: [u32; 11],
}
const _: () = assert!(core::mem::offset_of!(CacheSlot, flags) == 62);
const _: () = assert!(core::mem::offset_of!(CacheSlot, last_seen_ns) == 64);
const _: () = assert!(core::mem::size_of::<CacheSlot>() == 128);

/// [`CacheSlot::flags`]: L7 capture is on for the flow (payloads are probed).
pub const SLOT_F_L7_ON: u16 = 1 << 13;
/// [`CacheSlot::flags`]: the TCP flow carries no HTTP/DNS (`FLOW_L7_OFF`).
pub const SLOT_F_L7_OFF: u16 = 1 << 14;

/// TCP flags (9 bits) and transitions (4 bits) in 16 bits, for the cache
/// slot: a packet's flags are new to the flow when `slot_flags(packet) & !slot.flags != 0`.
#[inline(always)]
pub const fn slot_flags(tcp_flags: u16, transitions: u16) -> u16 {
    (tcp_flags & 0x1ff) | (transitions & 0xf) << 9
}

/// [`FlowStats::l7_state`] bits. A TCP flow seen from its SYN/SYN-ACK has its
/// first payload (of at least 19 bytes, or recognised) probed for HTTP/1.x
/// and DNS (`FLOW_L7_PROBED`); when that payload is neither, the flow carries
/// another protocol and its later payloads are not probed (`FLOW_L7_OFF`).
/// Flows seen from the middle are probed on every payload.
pub const FLOW_L7_PROBED: u8 = 0x1;
pub const FLOW_L7_OFF: u8 = 0x2;
/// The flow is one direction of an HTTP/2 connection (TC only): every
/// payload goes to the frame walker (`flowd_tc_h2`), none to HTTP/DNS probing.
/// Set with FLOW_L7_PROBED when the connection's first payload was the
/// client preface or a server SETTINGS frame, alone when the walker found
/// its place in a connection seen from the middle (a port in `L7_PORTS`
/// with [`L7_PORT_H2`]).
pub const FLOW_L7_H2: u8 = 0x4;
/// A flow seen from the middle whose ports are no HTTP/2 port: the walker
/// is not asked about its payloads again (HTTP/DNS probing goes on).
pub const FLOW_L7_NO_H2: u8 = 0x8;

/// [`FlowStats::origin`] bits, set when a UDP entry is created by a TC
/// program (both hooks of the interface run, so a reply meets its request
/// on the same interface): `FLOW_ORIGIN_KNOWN`, plus `FLOW_ORIGIN_REPLY`
/// when the reverse entry (addresses and ports swapped, the other hook) was
/// already there, i.e. the other side spoke first. XDP (ingress only) and
/// other protocols leave it 0: unknown. (TCP's direction comes from its
/// handshake, in `tcp_transitions`.)
pub const FLOW_ORIGIN_KNOWN: u8 = 0x1;
pub const FLOW_ORIGIN_REPLY: u8 = 0x2;

/// [`FlowStats::tcp_transitions`] bits: a packet with SYN and no ACK, SYN+ACK, FIN, RST.
pub const TRANSITION_SYN: u16 = 0x1;
pub const TRANSITION_SYN_ACK: u16 = 0x2;
pub const TRANSITION_FIN: u16 = 0x4;
pub const TRANSITION_RST: u16 = 0x8;
// slot_flags keeps 9 TCP flag bits and 4 transition bits below the SLOT_F_* bits.
const _: () = assert!(TCP_NS < 0x200 && TRANSITION_RST < 0x10);
const _: () = assert!(slot_flags(0xffff, 0xffff) & (SLOT_F_L7_ON | SLOT_F_L7_OFF) == 0);

/// Why an event was emitted.
pub const EV_NEW_FLOW: u8 = 1;
pub const EV_TCP_FLAGS: u8 = 2;
pub const EV_UPDATE: u8 = 3;
/// An L7 payload (HTTP/1.x or DNS) follows the header: [`L7Event`].
pub const EV_L7: u8 = 4;
/// A kernel drop (skb:kfree_skb) of an observed flow: [`DropEvent`].
pub const EV_DROP: u8 = 5;

/// Header common to every ring-buffer record; `kind` selects the layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EventHeader {
    pub kind: u8,
    pub _pad: [u8; 3],
    /// bpf_get_smp_processor_id() of the submitting CPU.
    pub cpu: u32,
    /// bpf_ktime_get_ns() (CLOCK_MONOTONIC, full resolution) of the packet
    /// that caused the event; a flow event and an L7 event of one packet
    /// carry the same value.
    pub ts_ns: u64,
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 16);

/// An L3/L4 flow event (EV_NEW_FLOW, EV_TCP_FLAGS, EV_UPDATE).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEvent {
    pub header: EventHeader,
    pub key: FlowKey,
    /// Snapshot of the flow's counters after this packet.
    pub stats: FlowStats,
    /// Length of the packet that triggered the event.
    pub pkt_len: u32,
    /// TCP flags of the packet that triggered the event.
    pub pkt_tcp_flags: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowEvent>() == 120);

/// Largest L7 payload prefix the programs ever copy.
pub const L7_MAX_PAYLOAD: usize = 512;

/// What the kernel recognised in an L7 payload.
pub const L7_HTTP_REQUEST: u8 = 1;
pub const L7_HTTP_RESPONSE: u8 = 2;
pub const L7_DNS: u8 = 3;

/// The first bytes of an HTTP/1.x or DNS message (EV_L7).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L7Event {
    pub header: EventHeader,
    pub key: FlowKey,
    /// L7_HTTP_REQUEST, L7_HTTP_RESPONSE or L7_DNS.
    pub l7_kind: u8,
    /// 1 when DNS was carried over TCP (payload starts after the 2-byte length).
    pub transport_tcp: u8,
    /// Bytes of `payload` that are valid.
    pub payload_len: u16,
    /// Length of the whole L4 payload in the packet (may exceed payload_len).
    pub l4_payload_len: u32,
    /// TCP sequence number of the payload's first byte (0 for UDP).
    pub tcp_seq: u32,
    pub _pad: [u8; 4],
    pub payload: [u8; L7_MAX_PAYLOAD],
}
const _: () = assert!(core::mem::size_of::<L7Event>() == 16 + 48 + 16 + L7_MAX_PAYLOAD);

/// Frames of an HTTP/2 connection, one direction, as the kernel's frame
/// walker found them in one packet (EV_H2): [`H2Event`].
pub const EV_H2: u8 = 6;
/// Pieces and bytes one [`H2Event`] holds; a packet with more is sent as
/// several events, in stream order.
pub const H2_MAX_PIECES: usize = 8;
pub const H2_MAX_BYTES: usize = 512;
/// Most bytes of a GOAWAY payload the walker copies: the last stream id and
/// the error code (the debug data after them is skipped).
pub const H2_GOAWAY_COPY: u32 = 8;
/// Most bytes of a DATA payload the walker copies: the pad length (PADDED
/// frames) and the 5-byte gRPC message prefix (compressed flag, length),
/// from which user space counts gRPC messages of frames that hold whole ones.
pub const H2_DATA_COPY: u32 = 6;

/// Entries of `L7_PORTS`: extra DNS ports and HTTP/2 ports together.
pub const L7_PORTS_MAX: u32 = 64;

/// `L7_PORTS` values: bits saying what a port carries besides its defaults.
/// DNS: UDP/TCP payloads of the port are checked for DNS (53 always is).
pub const L7_PORT_DNS: u8 = 0x1;
/// HTTP/2 (prior-knowledge h2c): TCP connections of the port seen from the
/// middle (opened before flowd started) are walked once the walker finds a
/// segment whose frames it can follow. Connections seen from their start
/// are recognised on any port by their first bytes.
pub const L7_PORT_H2: u8 = 0x2;

/// Most frame-walk steps (a frame header, a payload piece to copy or to
/// skip) of one packet: a 64 KiB GSO buffer of the smallest frames needs
/// about 8,200. A packet that needs more loses the walk (CNT_H2_LOST_LIMIT).
pub const H2_MAX_STEPS: u32 = 1 << 15;

/// The walk of one HTTP/2 flow direction (FlowKey), the value of the
/// `H2_WALK` LRU map. Kernel-internal: user space only sizes the map.
/// 8-byte aligned: the walker copies it in words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct H2Walk {
    /// TCP sequence number of the next byte to walk.
    pub next_seq: u32,
    /// Payload bytes of the current frame still to copy, then to skip.
    pub copy: u32,
    pub skip: u32,
    pub hdr_len: u8,
    /// `H2W_*` bits.
    pub state: u8,
    /// `H2_F_*` bits for the next event.
    pub flags: u8,
    pub _pad: u8,
    /// The first `hdr_len` bytes of a frame header that a segment ended in.
    pub hdr: [u8; 9],
    pub _pad2: [u8; 7],
    /// Non-zero while a program run walks this direction (a lock taken with
    /// compare-and-exchange: a CPU that finds it taken waits a bounded
    /// time, then leaves the packet). 64 bits: the BPF target's atomics.
    pub busy: u64,
}
const _: () = assert!(core::mem::size_of::<H2Walk>() == 40);

/// [`H2Walk::state`]: the walk knows where the next frame starts.
pub const H2W_SYNCED: u8 = 0x1;
/// [`H2Walk::state`]: an event was lost: payload bytes are skipped until the
/// next frame header, which starts an event with H2_F_START | H2_F_LOST.
pub const H2W_RESTART: u8 = 0x2;

/// [`H2Event::flags`]: the walk of this direction starts at `piece[0]`, a
/// frame header (after the client's preface, at the server's first SETTINGS,
/// or where the walker resynchronised in the middle of a connection).
/// Whatever user space knew of this direction before is void.
pub const H2_F_START: u8 = 0x1;
/// The walk began in the middle of a connection (flowd started after it),
/// or the walker lost bytes it needed before this event (a sequence gap, a
/// failed ring reservation, its state evicted, a packet with more frames than
/// it walks): the HPACK state of this direction is unknown from here on.
/// Set together with H2_F_START when it found its place again.
pub const H2_F_LOST: u8 = 0x2;
/// The client connection preface (`PRI * HTTP/2.0…`) preceded `piece[0]`:
/// this direction is the client's.
pub const H2_F_PREFACE: u8 = 0x4;

/// One piece of an HTTP/2 frame stream: `len` bytes starting at TCP
/// sequence number `seq`, stored in [`H2Event::bytes`] right after the
/// previous piece's bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct H2Piece {
    pub seq: u32,
    pub len: u16,
    pub _pad: u16,
}

/// What the HTTP/2 frame walker hands user space (EV_H2). It sends the
/// 9-byte header of every frame, the payload of HEADERS, CONTINUATION,
/// PUSH_PROMISE and RST_STREAM frames, the first [`H2_GOAWAY_COPY`] bytes of
/// GOAWAY payloads and the first [`H2_DATA_COPY`] bytes of DATA payloads;
/// the rest of DATA and every other payload (SETTINGS, PING, …) is skipped,
/// never copied. Pieces that continue each other in the stream are one
/// piece: a piece can hold a frame header and the start of its payload, or
/// the end of one frame and the next frames (small DATA frames whose copied
/// prefix is their whole payload). Because every frame header is sent, user space
/// follows the walk itself and checks each piece's sequence number against
/// it: a piece the kernel did not send where user space expects one is a
/// loss it detects, even without H2_F_LOST.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2Event {
    pub header: EventHeader,
    pub key: FlowKey,
    /// `H2_F_*` bits.
    pub flags: u8,
    /// Pieces of `piece` that are valid (≤ H2_MAX_PIECES).
    pub pieces: u8,
    /// Bytes of `bytes` that are valid: the sum of the pieces' lengths.
    pub bytes_len: u16,
    pub _pad: u32,
    pub piece: [H2Piece; H2_MAX_PIECES],
    pub bytes: [u8; H2_MAX_BYTES],
}
const _: () = assert!(core::mem::size_of::<H2Event>() == 16 + 48 + 8 + 8 * 8 + H2_MAX_BYTES);

/// A packet the kernel dropped (EV_DROP): the running total of one
/// [`DropKey`] (flow and reason), sent on its first drop and then at most once
/// per aggregation interval; user space also sweeps the `DROPS` map to report
/// tails. Totals (not deltas) make the reports idempotent: user space counts
/// `total` minus what it already counted for the same entry generation
/// (`first_seen_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DropEvent {
    pub header: EventHeader,
    pub key: FlowKey,
    /// enum skb_drop_reason value.
    pub reason: u32,
    pub _pad: u32,
    /// Drops of this key and reason since the map entry was created.
    pub total: u64,
    /// When the map entry was created (CLOCK_MONOTONIC, tick resolution):
    /// a different value for the same key means a new entry, counted from 0.
    pub first_seen_ns: u64,
    /// `net_device.name` of skb->dev (may be in another network namespace
    /// than flowd: the ifindex alone is ambiguous), NUL-padded.
    pub ifname: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<DropEvent>() == 104);

/// The key of the `DROPS` map: a flow (`direction` unused, 0) and the reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DropKey {
    pub key: FlowKey,
    pub reason: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<DropKey>() == 56);

/// Value of the `DROPS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DropStats {
    pub total: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub last_report_ns: u64,
    pub ifname: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<DropStats>() == 48);

/// `enum skb_drop_reason` values the drop program treats as "not a drop":
/// SKB_NOT_DROPPED_YET (0), SKB_CONSUMED (1) and SKB_DROP_REASON_NOT_SPECIFIED
/// (2, plain kfree_skb() calls: mostly frees that are not packet drops).
pub const DROP_REASON_MAX_IGNORED: u32 = 2;

/// Offsets in the `skb:kfree_skb` tracepoint record the program is built
/// for; user space checks them against the running kernel's format file.
pub const TP_KFREE_SKB_SKBADDR: usize = 8;
pub const TP_KFREE_SKB_PROTOCOL: usize = 32;
pub const TP_KFREE_SKB_REASON: usize = 36;

/// [`DropConfig::flags`]: the offsets are filled in; without it the program reports nothing.
pub const DROP_F_READY: u32 = 0x1;
/// Report drops of every packet, not only of packets to/from `DROP_ADDRS`.
pub const DROP_F_ALL: u32 = 0x2;

/// Run-time configuration of the drop program, one entry in `DROP_CONFIG`.
/// Rust eBPF has no CO-RE: user space reads member offsets from the kernel's
/// BTF and writes them here.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DropConfig {
    /// Minimum time between two EV_DROP events of one DropKey.
    pub interval_ns: u64,
    pub flags: u32,
    /// Byte offsets of sk_buff.head, .network_header, .transport_header, .dev.
    pub skb_head: u16,
    pub skb_network_header: u16,
    pub skb_transport_header: u16,
    pub skb_dev: u16,
    /// Byte offsets of net_device.ifindex and .name.
    pub dev_ifindex: u16,
    pub dev_name: u16,
    /// Bitmap of further reasons (< DROP_IGNORE_BITS) that are not reported,
    /// e.g. QUEUE_PURGE (a socket's queues freed when it is destroyed).
    /// Set by user space from reason names: the numbers differ by kernel.
    pub ignore: [u64; 4],
}
const _: () = assert!(core::mem::size_of::<DropConfig>() == 56);

/// Reasons covered by [`DropConfig::ignore`].
pub const DROP_IGNORE_BITS: u32 = 256;

/// Indices of the `FULL_PATH_TC` / `FULL_PATH_XDP` program arrays.
pub const FULL_PATH_TC_INGRESS: u32 = 0;
pub const FULL_PATH_TC_EGRESS: u32 = 1;
/// The HTTP/2 frame walker, tail-called by both TC full paths.
pub const FULL_PATH_TC_H2: u32 = 2;
pub const FULL_PATH_XDP: u32 = 0;

/// Indices of the per-CPU `COUNTERS` array.
pub const CNT_EVENTS_SUBMITTED: u32 = 0;
/// ring-buffer reserve failed: the event was lost (never silent).
pub const CNT_EVENTS_LOST: u32 = 1;
/// Packets seen by any program.
pub const CNT_PACKETS: u32 = 2;
/// Packets that were not IPv4/IPv6 (ARP, LLDP, …) or that we could not parse.
pub const CNT_PACKETS_OTHER: u32 = 3;
/// Packets cut short before the headers we needed (counted, passed).
pub const CNT_PACKETS_TRUNCATED: u32 = 4;
/// The flow map was full and the update failed.
pub const CNT_FLOW_MAP_ERRORS: u32 = 5;
pub const CNT_L7_EVENTS: u32 = 6;
/// Kernel drops (reason above DROP_REASON_MAX_IGNORED) of observed packets.
pub const CNT_DROPS_SEEN: u32 = 7;
/// The DROPS map was full and an insert failed: those drops were not counted.
pub const CNT_DROP_MAP_ERRORS: u32 = 8;
/// A hit-path program's tail call into its full-path program failed (the
/// loader did not install it): the packet was not accounted.
pub const CNT_FULL_PATH_MISSING: u32 = 9;
/// Runs of a full-path program: packets that were not flow-cache hits
/// (new flows, new TCP flags, reports due, L7 payloads, uncommon layouts).
pub const CNT_FULL_PATH_RUNS: u32 = 10;
/// EV_H2 records submitted (also counted in CNT_EVENTS_SUBMITTED).
pub const CNT_H2_EVENTS: u32 = 11;
/// HTTP/2 walks started at a connection's start: the client preface, the
/// server's first SETTINGS frame.
pub const CNT_H2_START_PREFACE: u32 = 12;
pub const CNT_H2_START_SETTINGS: u32 = 13;
/// HTTP/2 walks started in the middle of a connection: connections seen from
/// the middle on a configured port, and walks found again after a loss.
pub const CNT_H2_SYNCS: u32 = 14;
/// Walks lost (H2_F_LOST on the next event), by cause: a sequence gap (a
/// segment the hook did not see, or reordering), the walk state evicted
/// from `H2_WALK` (table too small), a full ring buffer (the record is also
/// in CNT_EVENTS_LOST), a packet with more frame steps than one run walks
/// (`H2_MAX_STEPS`).
pub const CNT_H2_LOST_GAP: u32 = 15;
pub const CNT_H2_LOST_EVICTED: u32 = 16;
pub const CNT_H2_LOST_RING: u32 = 17;
pub const CNT_H2_LOST_LIMIT: u32 = 18;
/// Packets of an HTTP/2 flow direction not walked because another CPU was
/// walking the same direction at that moment (if the packet held new bytes,
/// the next one is a gap, counted there).
pub const CNT_H2_BUSY: u32 = 19;
pub const CNT_MAX: u32 = 20;

/// Run-time configuration, a single entry in the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// Minimum time between two EV_UPDATE events of one flow; 0 = every packet.
    pub aggregation_interval_ns: u64,
    /// 0 disables L7 payload capture; otherwise the most bytes copied (≤ L7_MAX_PAYLOAD).
    pub l7_max_bytes: u32,
    pub _pad: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<Config>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) and Copy, explicit padding, no pointers: any bytes are a valid FlowKey.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: repr(C) and Copy, explicit padding, no pointers: any bytes are a valid FlowStats.
    unsafe impl aya::Pod for super::FlowStats {}
    // SAFETY: repr(C) and Copy, explicit padding, no pointers: any bytes are a valid CacheSlot.
    unsafe impl aya::Pod for super::CacheSlot {}
    // SAFETY: repr(C) and Copy, explicit padding, no pointers: any bytes are a valid Config.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: repr(C) and Copy, explicit padding, no pointers: any bytes are a valid DropKey.
    unsafe impl aya::Pod for super::DropKey {}
    // SAFETY: repr(C) and Copy, explicit padding, no pointers: any bytes are a valid DropStats.
    unsafe impl aya::Pod for super::DropStats {}
    // SAFETY: repr(C) and Copy, explicit padding, no pointers: any bytes are a valid DropConfig.
    unsafe impl aya::Pod for super::DropConfig {}
    // SAFETY: repr(C) and Copy, explicit padding, no pointers: any bytes are a valid H2Walk.
    unsafe impl aya::Pod for super::H2Walk {}
}

/// Program and map names in the eBPF object (the loader and tests use these).
pub mod names {
    pub const PROG_TC_INGRESS: &str = "flowd_tc_ingress";
    pub const PROG_TC_EGRESS: &str = "flowd_tc_egress";
    pub const PROG_XDP: &str = "flowd_xdp";
    /// The full paths the programs above tail-call into when a packet is not
    /// a flow-cache hit; the loader puts them into `MAP_FULL_PATH_TC` / `_XDP`.
    pub const PROG_TC_INGRESS_FULL: &str = "flowd_tc_ingress_full";
    pub const PROG_TC_EGRESS_FULL: &str = "flowd_tc_egress_full";
    pub const PROG_XDP_FULL: &str = "flowd_xdp_full";
    /// The HTTP/2 frame walker, tail-called by the TC full paths.
    pub const PROG_TC_H2: &str = "flowd_tc_h2";
    /// Empty pass-through programs, attached only by benchmarks as the baseline.
    /// One per TC hook, like flowd's: one program for both would mix the
    /// costs of both hooks' runs (in bulk TCP, ACKs after the receiver's copy
    /// and data in softirq) into one baseline and warm its code for both.
    /// Names stay within the kernel's 15 characters, so stats can tell them apart.
    pub const PROG_TC_EMPTY_INGRESS: &str = "bench_ing_empty";
    pub const PROG_TC_EMPTY_EGRESS: &str = "bench_egr_empty";
    pub const PROG_XDP_EMPTY: &str = "bench_xdp_empty";
    pub const MAP_FLOWS: &str = "FLOWS";
    pub const MAP_EVENTS: &str = "EVENTS";
    pub const MAP_COUNTERS: &str = "COUNTERS";
    pub const MAP_CONFIG: &str = "CONFIG";
    /// Array<CacheSlot> with flow_cache_entries(possible CPUs) entries.
    pub const MAP_FLOW_CACHE: &str = "FLOW_CACHE";
    /// HashMap<u16 port, u8 `L7_PORT_*` bits>: extra DNS ports, HTTP/2 ports.
    pub const MAP_L7_PORTS: &str = "L7_PORTS";
    /// LruHashMap<FlowKey, H2Walk>: the HTTP/2 walk of each flow direction.
    pub const MAP_H2_WALK: &str = "H2_WALK";
    /// ProgramArrays of the full-path programs, indexed by `FULL_PATH_*`
    /// (one per program type: the kernel ties a program array to one).
    pub const MAP_FULL_PATH_TC: &str = "FULL_PATH_TC";
    pub const MAP_FULL_PATH_XDP: &str = "FULL_PATH_XDP";
    /// The skb:kfree_skb tracepoint program and its empty benchmark baseline.
    pub const PROG_KFREE_SKB: &str = "flowd_kfree_skb";
    pub const PROG_TP_EMPTY: &str = "bench_tp_empty";
    /// LruHashMap<DropKey, DropStats>.
    pub const MAP_DROPS: &str = "DROPS";
    /// Array<DropConfig> with one entry.
    pub const MAP_DROP_CONFIG: &str = "DROP_CONFIG";
    /// HashMap<[u8; 16] address, u8>: pod addresses whose drops are reported.
    pub const MAP_DROP_ADDRS: &str = "DROP_ADDRS";
}
