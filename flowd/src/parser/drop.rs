//! Kernel drops (skb:kfree_skb) → `flow::Flow` with verdict DROPPED.
//!
//! Hubble reports drops as event type 1 (`MessageTypeDrop`) with the drop
//! reason as sub-type; flowd does the same, sets Hubble's `drop_reason_desc`
//! where a Hubble reason describes the kernel's, and always the kernel's own
//! reason in `kernel_drop_reason` / `kernel_drop_reason_code`.
use flowd_proto::Timestamp;
use flowd_proto::flow::{CiliumEventType, DropReason, Flow, FlowType, NetworkInterface, Verdict};

use crate::datapath::DropRecord;

use super::l34::{ip, layer4};

/// Hubble's `CiliumEventType.type` for drop events.
pub const EVENT_TYPE_DROP: i32 = 1;

/// The Hubble reason that describes a kernel reason (by name: the numbers
/// change between kernels). Unmapped reasons (NO_SOCKET, QDISC_DROP, …)
/// have no Cilium equivalent; their name is in `kernel_drop_reason`.
pub fn hubble_reason(kernel: &str) -> DropReason {
    match kernel {
        // A netfilter rule (network policy in most clusters) denied it.
        "NETFILTER_DROP" => DropReason::PolicyDenied,
        "IP_CSUM" | "IP_INHDR" | "TCP_CSUM" | "UDP_CSUM" | "ICMP_CSUM" | "SKB_CSUM"
        | "PKT_TOO_SMALL" | "HDR_TRUNC" | "INVALID_PROTO" => DropReason::InvalidPacketDropped,
        "IP_INVALID_SOURCE" | "IP_LOCAL_SOURCE" | "IP_RPFILTER" => DropReason::InvalidSourceIp,
        "IP_INNOROUTES" | "IP_OUTNOROUTES" => DropReason::FibLookupFailed,
        "IP_NOPROTO" => DropReason::UnknownL4Protocol,
        "UNHANDLED_PROTO" => DropReason::UnsupportedL3Protocol,
        "IPV6_BAD_EXTHDR" => DropReason::InvalidIpv6ExtensionHeader,
        "MAC_INVALID_SOURCE" => DropReason::InvalidSourceMac,
        _ => DropReason::Unknown,
    }
}

/// A flow for `count` drops reported by `r` (count ≥ 1, from
/// [`crate::datapath::drops::DropCounter`]).
#[allow(deprecated)] // `drop_reason` and `Summary`: deprecated by Hubble, read by its clients.
pub fn flow(r: &DropRecord, count: u64, time_unix_ns: u64, node_name: &str, uuid: String) -> Flow {
    let hubble = hubble_reason(&r.reason_name);
    Flow {
        time: Some(Timestamp::from_unix_nanos(time_unix_ns)),
        uuid,
        verdict: Verdict::Dropped as i32,
        drop_reason_desc: hubble as i32,
        // Deprecated numeric field, Hubble sets it to the same code.
        drop_reason: hubble as u32,
        ip: ip(&r.key),
        l4: layer4(&r.key, None),
        r#type: FlowType::L3L4 as i32,
        node_name: node_name.to_string(),
        event_type: Some(CiliumEventType {
            r#type: EVENT_TYPE_DROP,
            sub_type: hubble as i32,
        }),
        interface: Some(NetworkInterface {
            index: r.key.ifindex,
            name: r.ifname.clone(),
        }),
        kernel_drop_reason: r.reason_name.clone(),
        kernel_drop_reason_code: r.reason,
        drop_count: count,
        // The kernel's drop record keeps no TCP flags (see summary).
        summary: super::summary::l34(&r.key, None),
        ..Flow::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowd_common::{FAMILY_IPV4, FlowKey, PROTO_UDP};
    use flowd_proto::flow::layer4::Protocol;

    #[test]
    fn drop_record_to_flow() {
        let mut key = FlowKey {
            src_port: 40000,
            dst_port: 9,
            ifindex: 2,
            protocol: PROTO_UDP,
            family: FAMILY_IPV4,
            ..FlowKey::default()
        };
        key.src_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        key.dst_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let r = DropRecord {
            time: std::time::SystemTime::UNIX_EPOCH,
            cpu: 0,
            key,
            reason: 12,
            reason_name: "NETFILTER_DROP".into(),
            total: 7,
            first_seen_ns: 1,
            ifname: "eth0".into(),
        };
        let f = flow(&r, 3, 1_000, "node1", "u".into());
        assert_eq!(f.verdict, Verdict::Dropped as i32);
        assert_eq!(f.drop_reason_desc, DropReason::PolicyDenied as i32);
        assert_eq!(f.kernel_drop_reason, "NETFILTER_DROP");
        assert_eq!(f.kernel_drop_reason_code, 12);
        assert_eq!(f.drop_count, 3);
        assert_eq!(f.event_type.as_ref().map(|e| e.r#type), Some(1));
        let ipr = f.ip.unwrap();
        assert_eq!(
            (ipr.source.as_str(), ipr.destination.as_str()),
            ("10.0.0.1", "10.0.0.2")
        );
        let Some(Protocol::Udp(u)) = f.l4.and_then(|l| l.protocol) else {
            panic!("no UDP")
        };
        assert_eq!((u.source_port, u.destination_port), (40000, 9));
        assert_eq!(f.interface.unwrap().name, "eth0");
        assert_eq!(hubble_reason("NO_SOCKET"), DropReason::Unknown);
    }
}
