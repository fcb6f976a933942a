//! The `flow` handler: `hubble_flows_processed_total{protocol,type,subtype,verdict}`.
use std::time::Instant;

use flowd_proto::flow::Flow;

use super::{
    Builder, CounterSeries, Counting, flow_protocol, new_counter, type_and_subtype, verdict_name,
};
use crate::metrics::context::{LabelSet, push_labels};
use crate::options::metrics::HandlerSpec;

/// `hubble_flows_processed`.
pub(super) fn series(b: &mut Builder) -> CounterSeries {
    b.make(
        "hubble_flows_processed",
        "Total number of flows processed",
        new_counter,
    )
}

pub(super) fn process(
    spec: &HandlerSpec,
    s: &CounterSeries,
    flow: &Flow,
    now: Instant,
    _rule: Counting,
    l: &mut LabelSet,
) {
    let (typ, sub) = type_and_subtype(flow);
    l.push(("protocol", flow_protocol(flow).to_string()));
    l.push(("type", typ.to_string()));
    l.push(("subtype", sub));
    l.push(("verdict", verdict_name(flow.verdict)));
    push_labels(&spec.context, flow, false, l);
    s.with(l, now, |c| {
        c.inc();
    });
}
