//! Kernel packet drops from the `skb:kfree_skb` tracepoint.
//!
//! Every kfree_skb() of the node runs this program, so the common case (a
//! free that is not a drop: reason NOT_SPECIFIED or below) is one context
//! load and a compare. For real drops it reads the flow key from the skb's
//! headers with bpf_probe_read_kernel (offsets of sk_buff / net_device
//! members come from user space, read from BTF: Rust eBPF has no CO-RE),
//! keeps only packets to or from an address in `DROP_ADDRS` (pod IPs user
//! space provides; ifindexes do not work here because the drop usually
//! happens inside the pod's network namespace, whose ifindexes overlap the
//! host's), and aggregates per flow and reason in `DROPS`: one event on the
//! first drop, then at most one per interval, so a drop storm costs a
//! bounded number of events. User space sweeps `DROPS` for the tails.
use core::{
    intrinsics::{AtomicOrdering::Relaxed, atomic_cxchg, atomic_xadd},
    ptr::{addr_of_mut, read_volatile, write_volatile},
};

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf, generated::bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{Array, HashMap, LruHashMap},
    programs::TracePointContext,
};
use flowd_common::{
    CNT_DROP_MAP_ERRORS, CNT_DROPS_SEEN, CNT_EVENTS_LOST, CNT_EVENTS_SUBMITTED, DROP_F_ALL,
    DROP_F_READY, DROP_IGNORE_BITS, DROP_REASON_MAX_IGNORED, DropConfig, DropEvent, DropKey,
    DropStats, EV_DROP, FAMILY_IPV4, FAMILY_IPV6, FlowKey, KEY_F_FRAGMENT, PROTO_ICMP,
    PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, TP_KFREE_SKB_PROTOCOL, TP_KFREE_SKB_REASON,
    TP_KFREE_SKB_SKBADDR,
};

use crate::{EVENTS, EventTime, count, header, wake_flags};

const DROPS_MAX: u32 = 16384;
const DROP_ADDRS_MAX: u32 = 65536;
const EEXIST: i32 = 17;
/// sk_buff header offsets are u16 with ~0 meaning "not set".
const HDR_UNSET: u16 = 0xffff;

#[map]
static DROPS: LruHashMap<DropKey, DropStats> = LruHashMap::with_max_entries(DROPS_MAX, 0);

#[map]
static DROP_CONFIG: Array<DropConfig> = Array::with_max_entries(1, 0);

#[map]
static DROP_ADDRS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(DROP_ADDRS_MAX, 0);

#[tracepoint]
pub fn flowd_kfree_skb(ctx: TracePointContext) -> u32 {
    // SAFETY: a constant offset inside the tracepoint record (user space
    // checked the running kernel's format before attaching).
    let reason = unsafe {
        read_volatile(
            ctx.as_ptr()
                .cast::<u8>()
                .add(TP_KFREE_SKB_REASON)
                .cast::<u32>(),
        )
    };
    if reason > DROP_REASON_MAX_IGNORED {
        on_drop(&ctx, reason);
    }
    0
}

/// Benchmark baseline: the cost of running any program on the tracepoint.
#[tracepoint]
pub fn bench_tp_empty(_ctx: TracePointContext) -> u32 {
    0
}

#[inline(always)]
fn on_drop(ctx: &TracePointContext, reason: u32) {
    let Some(cfg) = DROP_CONFIG.get(0) else {
        return;
    };
    if cfg.flags & DROP_F_READY == 0 {
        return;
    }
    if reason < DROP_IGNORE_BITS {
        let word = cfg.ignore[(reason / 64) as usize & 3];
        if word & (1u64 << (reason % 64)) != 0 {
            return;
        }
    }
    let base = ctx.as_ptr().cast::<u8>();
    // SAFETY: constant offsets inside the tracepoint record.
    // The tracepoint stores ntohs(skb->protocol): host order already.
    let (skb, ether_type) = unsafe {
        (
            read_volatile(base.add(TP_KFREE_SKB_SKBADDR).cast::<u64>()),
            read_volatile(base.add(TP_KFREE_SKB_PROTOCOL).cast::<u16>()),
        )
    };
    if skb == 0 {
        return;
    }
    let mut ifname = [0u8; 16];
    let Some(key) = read_key(skb as *const u8, ether_type, cfg, &mut ifname) else {
        return;
    };
    if cfg.flags & DROP_F_ALL == 0 && !observed(&key) {
        return;
    }
    count(CNT_DROPS_SEEN, 1);
    aggregate(
        &DropKey {
            key,
            reason,
            _pad: 0,
        },
        &ifname,
        cfg.interval_ns,
    );
}

#[inline(always)]
fn observed(key: &FlowKey) -> bool {
    key.family != 0
        && (DROP_ADDRS.get_ptr(key.src_addr).is_some()
            || DROP_ADDRS.get_ptr(key.dst_addr).is_some())
}

/// Reads a kernel value; faults give `None` (never a crash: probe_read).
#[inline(always)]
fn rd<T>(p: *const u8, off: usize) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { bpf_probe_read_kernel(p.wrapping_add(off).cast::<T>()).ok() }
}

/// The flow key from the skb's headers, the device's ifindex and name.
/// `None` only when the skb itself cannot be read.
#[inline(always)]
fn read_key(
    skb: *const u8,
    ether_type: u16,
    cfg: &DropConfig,
    ifname: &mut [u8; 16],
) -> Option<FlowKey> {
    let head: u64 = rd(skb, cfg.skb_head as usize)?;
    let nh: u16 = rd(skb, cfg.skb_network_header as usize)?;
    let dev: u64 = rd(skb, cfg.skb_dev as usize)?;
    let mut key = FlowKey::default();
    if dev != 0 {
        let dev = dev as *const u8;
        key.ifindex = rd::<u32>(dev, cfg.dev_ifindex as usize).unwrap_or(0);
        // SAFETY: bpf_probe_read_kernel checks the address; on a fault the
        // name stays zeroed.
        let _ =
            unsafe { bpf_probe_read_kernel_buf(dev.wrapping_add(cfg.dev_name as usize), ifname) };
    }
    if head == 0 || nh == HDR_UNSET {
        key.src_port = ether_type;
        return Some(key);
    }
    let l3 = (head as *const u8).wrapping_add(nh as usize);
    let l4 = match ether_type {
        0x0800 => {
            let Some(ip) = rd::<[u8; 20]>(l3, 0) else {
                key.src_port = ether_type;
                return Some(key);
            };
            if ip[0] >> 4 != 4 {
                key.src_port = ether_type;
                return Some(key);
            }
            key.family = FAMILY_IPV4;
            key.protocol = ip[9];
            key.src_addr[..4].copy_from_slice(&ip[12..16]);
            key.dst_addr[..4].copy_from_slice(&ip[16..20]);
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
                key.flags |= KEY_F_FRAGMENT;
                return Some(key);
            }
            l3.wrapping_add(((ip[0] & 0x0f) as usize) * 4)
        }
        0x86dd => {
            let Some(ip) = rd::<[u8; 40]>(l3, 0) else {
                key.src_port = ether_type;
                return Some(key);
            };
            key.family = FAMILY_IPV6;
            // Extension headers are not walked: their protocol stays, no ports.
            key.protocol = ip[6];
            key.src_addr.copy_from_slice(&ip[8..24]);
            key.dst_addr.copy_from_slice(&ip[24..40]);
            l3.wrapping_add(40)
        }
        other => {
            key.src_port = other;
            return Some(key);
        }
    };
    match key.protocol {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            if let Some(p) = rd::<[u8; 4]>(l4, 0) {
                key.src_port = u16::from_be_bytes([p[0], p[1]]);
                key.dst_port = u16::from_be_bytes([p[2], p[3]]);
            }
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            if let Some(p) = rd::<[u8; 2]>(l4, 0) {
                key.src_port = p[0] as u16;
                key.dst_port = p[1] as u16;
            }
        }
        _ => {}
    }
    Some(key)
}

/// Counts the drop and sends the event the aggregation calls for.
#[inline(always)]
fn aggregate(dk: &DropKey, ifname: &[u8; 16], interval_ns: u64) {
    // Tracepoint programs may not call bpf_ktime_get_coarse_ns; this path
    // runs only for drops, so the full-resolution clock is affordable.
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut ts = EventTime(now);
    let mut stats = DROPS.get_ptr_mut(dk);
    if stats.is_none() {
        let new = DropStats {
            total: 1,
            first_seen_ns: now,
            last_seen_ns: now,
            last_report_ns: now,
            ifname: *ifname,
        };
        match DROPS.insert(dk, new, BPF_NOEXIST as u64) {
            Ok(()) => {
                emit(dk, &new, &mut ts);
                return;
            }
            Err(e) if e == -EEXIST => stats = DROPS.get_ptr_mut(dk),
            Err(_) => {}
        }
    }
    let Some(s) = stats else {
        count(CNT_DROP_MAP_ERRORS, 1);
        return;
    };
    // SAFETY: `s` points to the map value for this run; fields other CPUs
    // update are changed atomically.
    unsafe {
        atomic_xadd::<u64, u64, { Relaxed }>(addr_of_mut!((*s).total), 1);
        write_volatile(addr_of_mut!((*s).last_seen_ns), now);
        let last_report = addr_of_mut!((*s).last_report_ns);
        let last = read_volatile(last_report);
        if now >= last.saturating_add(interval_ns)
            && atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(last_report, last, now).1
        {
            let snapshot = read_volatile(s);
            emit(dk, &snapshot, &mut ts);
        }
    }
}

#[inline(always)]
fn emit(dk: &DropKey, s: &DropStats, ts: &mut EventTime) {
    let Some(mut entry) = EVENTS.reserve::<DropEvent>(0) else {
        count(CNT_EVENTS_LOST, 1);
        return;
    };
    entry.write(DropEvent {
        header: header(EV_DROP, ts.get()),
        key: dk.key,
        reason: dk.reason,
        _pad: 0,
        total: s.total,
        first_seen_ns: s.first_seen_ns,
        ifname: s.ifname,
    });
    entry.submit(wake_flags::<DropEvent>());
    count(CNT_EVENTS_SUBMITTED, 1);
}
