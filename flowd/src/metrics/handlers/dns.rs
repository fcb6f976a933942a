//! The `dns` handler: `hubble_dns_queries_total`, `hubble_dns_responses_total`
//! and `hubble_dns_response_types_total`, the rcode as Hubble's metrics
//! spell it ([`flowd_proto::names::dns_rcode_metric`]).
use std::time::Instant;

use flowd_proto::flow::{Flow, Verdict, layer7::Record};
use flowd_proto::names;

use super::{Builder, CounterSeries, Counting, new_counter};
use crate::metrics::context::{LabelSet, push_labels};
use crate::options::metrics::HandlerSpec;

/// The handler's three counters.
pub(crate) struct DnsSeries {
    pub(super) queries: CounterSeries,
    pub(super) responses: CounterSeries,
    pub(super) response_types: CounterSeries,
}

pub(super) fn series(b: &mut Builder) -> DnsSeries {
    DnsSeries {
        queries: b.make(
            "hubble_dns_queries",
            "Number of DNS queries observed",
            new_counter,
        ),
        responses: b.make(
            "hubble_dns_responses",
            "Number of DNS responses observed",
            new_counter,
        ),
        response_types: b.make(
            "hubble_dns_response_types",
            "Number of DNS response types",
            new_counter,
        ),
    }
}

pub(super) fn process(
    spec: &HandlerSpec,
    series: &DnsSeries,
    flow: &Flow,
    now: Instant,
    rule: Counting,
    l: &mut LabelSet,
) {
    let DnsSeries {
        queries,
        responses,
        response_types,
    } = series;
    let Some(Record::Dns(dns)) = flow.l7.as_ref().and_then(|l7| l7.record.as_ref()) else {
        return;
    };
    if spec.dns_ignore_aaaa && dns.qtypes.len() == 1 && dns.qtypes[0] == "AAAA" {
        return;
    }
    if !rule.once {
        return;
    }
    let is_reply = flow.is_reply.as_ref().is_some_and(|r| r.value);
    push_labels(&spec.context, flow, false, l);
    let ctx_len = l.len();
    let qtypes = dns.qtypes.join(",");
    let dropped = flow.verdict == Verdict::Dropped as i32;
    let rcode = if dropped {
        "Policy denied".to_string()
    } else if is_reply {
        names::dns_rcode_metric(dns.rcode).to_string()
    } else {
        String::new()
    };
    l.push(("rcode", rcode));
    l.push(("qtypes", qtypes.clone()));
    l.push(("ips_returned", dns.ips.len().to_string()));
    if spec.dns_query {
        l.push(("query", dns.query.clone()));
    }
    if dropped || !is_reply {
        queries.with(l, now, |c| {
            c.inc();
        });
        return;
    }
    responses.with(l, now, |c| {
        c.inc();
    });
    for rr in &dns.rrtypes {
        l.truncate(ctx_len);
        l.push(("type", rr.clone()));
        l.push(("qtypes", qtypes.clone()));
        if spec.dns_query {
            l.push(("query", dns.query.clone()));
        }
        response_types.with(l, now, |c| {
            c.inc();
        });
    }
}
