//! The `icmp` handler: `hubble_icmp_total{family,type}`, the type as
//! gopacket names it ([`flowd_proto::names`]).
use std::time::Instant;

use flowd_proto::flow::{Flow, layer4::Protocol};
use flowd_proto::names;

use super::{Builder, CounterSeries, Counting, new_counter};
use crate::metrics::context::{LabelSet, push_labels};
use crate::options::metrics::HandlerSpec;

/// `hubble_icmp`.
pub(super) fn series(b: &mut Builder) -> CounterSeries {
    b.make("hubble_icmp", "Number of ICMP messages", new_counter)
}

pub(super) fn process(
    spec: &HandlerSpec,
    s: &CounterSeries,
    flow: &Flow,
    now: Instant,
    rule: Counting,
    l: &mut LabelSet,
) {
    if !rule.once {
        return;
    }
    let (family, typ) = match flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
        // gopacket takes uint8(type), uint8(code): Go truncates.
        Some(Protocol::IcmPv4(i)) => ("IPv4", names::icmpv4(i.r#type as u8, i.code as u8)),
        // Hubble labels ICMPv6 with family "IPv4" (a bug); flowd says IPv6.
        Some(Protocol::IcmPv6(i)) => ("IPv6", names::icmpv6(i.r#type as u8, i.code as u8)),
        _ => return,
    };
    l.push(("family", family.to_string()));
    l.push(("type", typ));
    push_labels(&spec.context, flow, false, l);
    s.with(l, now, |c| {
        c.inc();
    });
}
