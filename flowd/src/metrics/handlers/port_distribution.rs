//! The `port-distribution` handler: `hubble_port_distribution_total{protocol,port}`,
//! once per connection.
use std::time::Instant;

use flowd_proto::flow::{Flow, TraceReason, layer4::Protocol};

use super::{Builder, CounterSeries, Counting, forwarded, new_counter};
use crate::metrics::context::{LabelSet, push_labels};
use crate::options::metrics::HandlerSpec;

/// `hubble_port_distribution`.
pub(super) fn series(b: &mut Builder) -> CounterSeries {
    b.make(
        "hubble_port_distribution",
        "Numbers of packets distributed by destination port",
        new_counter,
    )
}

pub(super) fn process(
    spec: &HandlerSpec,
    s: &CounterSeries,
    flow: &Flow,
    now: Instant,
    rule: Counting,
    l: &mut LabelSet,
) {
    // Once per connection: the L3/L4 record that opens it (trace
    // reason NEW, the first record of the request direction's
    // entry). Replies are never counted (their destination port
    // is the client's ephemeral port), nor are the connection's
    // later records or its L7 messages.
    let opens = flow.trace_reason == TraceReason::New as i32;
    if !rule.once || !forwarded(flow) || !opens {
        return;
    }
    let (proto, port) = match flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => ("TCP", t.destination_port),
        Some(Protocol::Udp(u)) => ("UDP", u.destination_port),
        Some(Protocol::Sctp(s)) => ("SCTP", s.destination_port),
        Some(Protocol::IcmPv4(_)) => ("ICMPv4", 0),
        Some(Protocol::IcmPv6(_)) => ("ICMPv6", 0),
        Some(Protocol::Vrrp(_)) => ("VRRP", 0),
        Some(Protocol::Igmp(_)) => ("IGMP", 0),
        None => return,
    };
    l.push(("protocol", proto.to_string()));
    l.push(("port", port.to_string()));
    push_labels(&spec.context, flow, false, l);
    s.with(l, now, |c| {
        c.inc();
    });
}
