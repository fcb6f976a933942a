//! The `flows-to-world` handler: `hubble_flows_to_world_total{protocol,
//! verdict[,port]}` plus the context labels, for flows whose destination
//! carries the `reserved:world` label — Hubble's rules (Cilium
//! `pkg/hubble/metrics/flows-to-world`):
//! - replies are not counted (their destination port is a client's
//!   ephemeral port), except dropped ones;
//! - a dropped flow counts only with `any-drop` or when its reason is
//!   POLICY_DENIED;
//! - `syn-only` counts only TCP SYNs that are not replies: one per connection
//!   attempt;
//! - `port` adds the destination port (TCP, UDP, SCTP; empty otherwise).
//!
//! Unlike Hubble, a record counts under the counting rule of [`crate::metrics::counting`]
//! (the packet's first observation point) unless `flowd-metrics-count-once`
//! is false, so a packet seen at a pod's veth and an uplink is one flow.

use std::time::Instant;

use flowd_proto::flow::{DropReason, Flow, Verdict, layer4::Protocol};
use prometheus_client::metrics::counter::Counter;

use super::{Builder, flow_protocol, new_counter, verdict_name};
use crate::endpoints::model::RESERVED_WORLD;
use crate::metrics::context::{LabelSet, push_labels};
use crate::metrics::series::Series;
use crate::options::metrics::HandlerSpec;

/// `hubble_flows_to_world`.
pub(super) fn series(b: &mut Builder) -> Series<Counter> {
    b.make(
        "hubble_flows_to_world",
        "Total number of flows to reserved:world",
        new_counter,
    )
}

/// Counts `flow` in `series` if it goes to the world. `once`: the counting
/// rule's verdict for this record.
pub(super) fn count(
    spec: &HandlerSpec,
    series: &Series<Counter>,
    flow: &Flow,
    now: Instant,
    once: bool,
    l: &mut LabelSet,
) {
    if !once || !to_world(flow) {
        return;
    }
    let Some(l4) = flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) else {
        return;
    };
    let dropped = flow.verdict == Verdict::Dropped as i32;
    if dropped && !spec.any_drop && flow.drop_reason_desc != DropReason::PolicyDenied as i32 {
        return;
    }
    let is_reply = flow.is_reply.as_ref().is_some_and(|r| r.value);
    if is_reply && !dropped {
        return;
    }
    if spec.syn_only {
        let syn = matches!(l4, Protocol::Tcp(t) if t.flags.as_ref().is_some_and(|f| f.syn));
        if !syn || is_reply {
            return;
        }
    }
    l.push(("protocol", flow_protocol(flow).to_string()));
    l.push(("verdict", verdict_name(flow.verdict)));
    if spec.port {
        let port = match l4 {
            Protocol::Tcp(t) => t.destination_port.to_string(),
            Protocol::Udp(u) => u.destination_port.to_string(),
            Protocol::Sctp(s) => s.destination_port.to_string(),
            _ => String::new(),
        };
        l.push(("port", port));
    }
    push_labels(&spec.context, flow, false, l);
    // A kernel drop flow stands for drop_count drops (aggregated).
    let n = if dropped { flow.drop_count.max(1) } else { 1 };
    series.with(l, now, |c| {
        c.inc_by(n);
    });
}

fn to_world(flow: &Flow) -> bool {
    flow.destination
        .as_ref()
        .is_some_and(|d| d.labels.iter().any(|l| l == RESERVED_WORLD))
}
