//! The `drop` handler: `hubble_drop_total{reason,protocol}`; a kernel drop
//! flow counts the drops it stands for (`drop_count`).
use std::time::Instant;

use flowd_proto::flow::{Flow, Verdict};

use super::{Builder, CounterSeries, Counting, drop_reason, flow_protocol, new_counter};
use crate::metrics::context::{LabelSet, push_labels};
use crate::options::metrics::HandlerSpec;

/// `hubble_drop`.
pub(super) fn series(b: &mut Builder) -> CounterSeries {
    b.make("hubble_drop", "Number of drops", new_counter)
}

pub(super) fn process(
    spec: &HandlerSpec,
    s: &CounterSeries,
    flow: &Flow,
    now: Instant,
    _rule: Counting,
    l: &mut LabelSet,
) {
    if flow.verdict != Verdict::Dropped as i32 {
        return;
    }
    push_labels(&spec.context, flow, false, l);
    l.push(("reason", drop_reason(flow)));
    l.push(("protocol", flow_protocol(flow).to_string()));
    // A kernel drop flow stands for drop_count drops (aggregated).
    let n = flow.drop_count.max(1);
    s.with(l, now, |c| {
        c.inc_by(n);
    });
}
