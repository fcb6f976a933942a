//! The `tcp` handler: `hubble_tcp_flags_total{flag,family}` for SYN, SYN-ACK,
//! FIN and RST of forwarded flows.
use std::time::Instant;

use flowd_proto::flow::{Flow, layer4::Protocol};

use super::{Builder, CounterSeries, Counting, forwarded, ip_version_name, new_counter};
use crate::metrics::context::{LabelSet, push_labels};
use crate::options::metrics::HandlerSpec;

/// `hubble_tcp_flags`.
pub(super) fn series(b: &mut Builder) -> CounterSeries {
    b.make("hubble_tcp_flags", "TCP flag occurrences", new_counter)
}

pub(super) fn process(
    spec: &HandlerSpec,
    s: &CounterSeries,
    flow: &Flow,
    now: Instant,
    rule: Counting,
    l: &mut LabelSet,
) {
    if !rule.once || !forwarded(flow) {
        return;
    }
    let (Some(ip), Some(Protocol::Tcp(tcp))) = (
        flow.ip.as_ref(),
        flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()),
    ) else {
        return;
    };
    let Some(f) = tcp.flags.as_ref() else {
        return;
    };
    l.push(("flag", String::new()));
    l.push(("family", ip_version_name(ip.ip_version)));
    push_labels(&spec.context, flow, false, l);
    let mut count = |flag: &str| {
        l[0].1 = flag.to_string();
        s.with(l, now, |c| {
            c.inc();
        });
    };
    if f.fin {
        count("FIN");
    }
    if f.syn {
        count(if f.ack { "SYN-ACK" } else { "SYN" });
    }
    if f.rst {
        count("RST");
    }
}
