//! The `grpc` handler (flowd extension): one count per gRPC call and
//! reporter, `hubble_grpc_requests_total`, and its duration,
//! `hubble_grpc_request_duration_seconds`, with the labels of
//! go-grpc-prometheus (`grpc_service`, `grpc_method`, `grpc_code` in Go's
//! spelling, `grpc_type`) so that its dashboards' queries carry over, and
//! Hubble's `reporter` and context labels. Counted on RESPONSE records, as
//! `httpV2`: a call has its status only once it ended.
use std::time::Instant;

use flowd_proto::flow::{Flow, L7FlowType, grpc::Type as CallType, layer7::Record};
use flowd_proto::names;

use super::{Builder, Counting, ExCounterSeries, HistSeries, new_ex_counter, new_histogram};
use crate::metrics::context::{LabelSet, push_labels};
use crate::metrics::counting::Reporter;
use crate::options::metrics::HandlerSpec;

/// `grpc_code` of a call that ended without a grpc-status flowd could read:
/// reset (RST_STREAM), the connection closed before the trailers, or a
/// partial record whose trailers referred to header table entries flowd
/// never saw.
pub const NO_STATUS: &str = "none";

/// `grpc_service` / `grpc_method` of a call whose path flowd could not
/// decode (never guessed).
const UNKNOWN: &str = "unknown";

pub(crate) struct GrpcSeries {
    pub(super) requests: ExCounterSeries,
    pub(super) duration: HistSeries,
}

pub(super) fn series(b: &mut Builder) -> GrpcSeries {
    GrpcSeries {
        requests: b.make(
            "hubble_grpc_requests",
            "Count of gRPC calls by service, method, status code and type",
            new_ex_counter,
        ),
        duration: b.make(
            "hubble_grpc_request_duration_seconds",
            "Duration of gRPC calls in seconds, from the request headers to the end of the response",
            new_histogram,
        ),
    }
}

/// go-grpc-prometheus' `grpc_type` values; the frames' shape (see
/// `flow.GRPC.type`), `unknown` when the message counts were not exact.
fn type_label(t: i32) -> &'static str {
    match CallType::try_from(t) {
        Ok(CallType::Unary) => "unary",
        Ok(CallType::ClientStreaming) => "client_stream",
        Ok(CallType::ServerStreaming) => "server_stream",
        Ok(CallType::BidiStreaming) => "bidi_stream",
        Ok(CallType::Unknown) | Err(_) => UNKNOWN,
    }
}

/// Go's name of the status (`NotFound`), the number above 16, [`NO_STATUS`]
/// without one.
fn code_label(status: Option<u32>) -> String {
    match status {
        Some(c) => names::grpc_status_metric(c).map_or_else(|| c.to_string(), str::to_string),
        None => NO_STATUS.to_string(),
    }
}

fn name_label(s: &str) -> String {
    if s.is_empty() {
        UNKNOWN.to_string()
    } else {
        s.to_string()
    }
}

pub(super) fn process(
    spec: &HandlerSpec,
    series: &GrpcSeries,
    flow: &Flow,
    now: Instant,
    rule: Counting,
    l: &mut LabelSet,
) {
    let Some(l7) = flow.l7.as_ref() else {
        return;
    };
    let Some(Record::Http(http)) = l7.record.as_ref() else {
        return;
    };
    let Some(call) = http.grpc.as_ref() else {
        return;
    };
    if l7.r#type != L7FlowType::Response as i32 {
        return;
    }
    let Some(reporter) = rule.reporter.map(Reporter::as_str) else {
        return;
    };
    let exemplar = spec
        .exemplars
        .then(|| flow.trace_context.as_ref()?.parent.as_ref())
        .flatten()
        .map(|p| p.trace_id.as_str())
        .filter(|t| !t.is_empty())
        .map(|t| vec![("traceID", t.to_string())]);
    // Response records go server → client: invert so that source /
    // destination describe the call's client and server.
    push_labels(&spec.context, flow, true, l);
    let ctx_len = l.len();
    let service = name_label(&call.service);
    let method = name_label(&call.method);
    let typ = type_label(call.r#type);
    l.push(("grpc_service", service.clone()));
    l.push(("grpc_method", method.clone()));
    l.push(("grpc_code", code_label(call.status_code)));
    l.push(("grpc_type", typ.to_string()));
    l.push(("reporter", reporter.to_string()));
    series.requests.with(l, now, |c| {
        c.inc_by(1, exemplar.clone(), None);
    });
    // An unpaired response has no latency: counted, not observed (a false
    // 0 s would pull the quantiles down).
    if !l7.unpaired {
        l.truncate(ctx_len);
        l.push(("grpc_service", service));
        l.push(("grpc_method", method));
        l.push(("grpc_type", typ.to_string()));
        l.push(("reporter", reporter.to_string()));
        let seconds = l7.latency_ns as f64 / 1e9;
        series
            .duration
            .with(l, now, |h| h.observe(seconds, exemplar, None));
    }
}
