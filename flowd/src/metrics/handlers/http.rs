//! The `http` and `httpV2` handlers: `hubble_http_requests_total`,
//! `hubble_http_responses_total` (deprecated `http` only) and
//! `hubble_http_request_duration_seconds`, counted per reporter (client and
//! server) by the counting rule, with trace-ID exemplars when enabled.
use std::time::Instant;

use flowd_proto::flow::{Flow, L7FlowType, layer7::Record};

use super::{
    Builder, Counting, ExCounterSeries, HistSeries, method_label, new_ex_counter, new_histogram,
};
use crate::metrics::context::{LabelSet, push_labels};
use crate::metrics::counting::Reporter;
use crate::options::metrics::HandlerSpec;

/// The handler's series; `v2` for `httpV2`.
pub(crate) struct HttpSeries {
    pub(super) v2: bool,
    pub(super) requests: ExCounterSeries,
    /// Only for the deprecated `http` handler.
    pub(super) responses: Option<ExCounterSeries>,
    pub(super) duration: HistSeries,
}

pub(super) fn series(b: &mut Builder, v2: bool) -> HttpSeries {
    HttpSeries {
        v2,
        requests: b.make(
            "hubble_http_requests",
            "Count of HTTP requests",
            new_ex_counter,
        ),
        responses: (!v2).then(|| {
            b.make(
                "hubble_http_responses",
                "Count of HTTP responses",
                new_ex_counter,
            )
        }),
        duration: b.make(
            "hubble_http_request_duration_seconds",
            "Quantiles of HTTP request duration in seconds",
            new_histogram,
        ),
    }
}

pub(super) fn process(
    spec: &HandlerSpec,
    series: &HttpSeries,
    flow: &Flow,
    now: Instant,
    rule: Counting,
    l: &mut LabelSet,
) {
    let HttpSeries {
        v2,
        requests,
        responses,
        duration,
    } = series;
    let Some(l7) = flow.l7.as_ref() else {
        return;
    };
    let Some(Record::Http(http)) = l7.record.as_ref() else {
        return;
    };
    let Some(reporter) = rule.reporter.map(Reporter::as_str) else {
        return;
    };
    let typ = L7FlowType::try_from(l7.r#type).unwrap_or(L7FlowType::UnknownL7Type);
    let exemplar = spec
        .exemplars
        .then(|| flow.trace_context.as_ref()?.parent.as_ref())
        .flatten()
        .map(|p| p.trace_id.as_str())
        .filter(|t| !t.is_empty())
        .map(|t| vec![("traceID", t.to_string())]);
    let seconds = l7.latency_ns as f64 / 1e9;
    // Unpaired responses have no latency: they are counted but
    // not observed in the histogram (it would record a false 0).
    let observe = !l7.unpaired;
    if *v2 {
        if typ != L7FlowType::Response {
            return;
        }
        // Response records go server → client: invert so that
        // source / destination describe the request.
        push_labels(&spec.context, flow, true, l);
        let ctx_len = l.len();
        l.push(("method", method_label(http)));
        l.push(("protocol", http.protocol.clone()));
        l.push(("status", http.code.to_string()));
        l.push(("reporter", reporter.to_string()));
        requests.with(l, now, |c| {
            c.inc_by(1, exemplar.clone(), None);
        });
        if observe {
            l.truncate(ctx_len);
            l.push(("method", method_label(http)));
            l.push(("reporter", reporter.to_string()));
            duration.with(l, now, |h| h.observe(seconds, exemplar, None));
        }
        return;
    }
    push_labels(&spec.context, flow, false, l);
    let ctx_len = l.len();
    match typ {
        L7FlowType::Request => {
            l.push(("method", method_label(http)));
            l.push(("protocol", http.protocol.clone()));
            l.push(("reporter", reporter.to_string()));
            requests.with(l, now, |c| {
                c.inc_by(1, exemplar, None);
            });
        }
        L7FlowType::Response => {
            l.push(("method", method_label(http)));
            l.push(("protocol", http.protocol.clone()));
            l.push(("status", http.code.to_string()));
            l.push(("reporter", reporter.to_string()));
            if let Some(r) = responses {
                r.with(l, now, |c| {
                    c.inc_by(1, exemplar.clone(), None);
                });
            }
            if observe {
                l.truncate(ctx_len);
                l.push(("method", method_label(http)));
                l.push(("reporter", reporter.to_string()));
                duration.with(l, now, |h| h.observe(seconds, exemplar, None));
            }
        }
        _ => {}
    }
}
