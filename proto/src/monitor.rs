//! Cilium monitor event types, as carried in `Flow.event_type`
//! (`CiliumEventType{type, sub_type}`) and selected by `EventTypeFilter`.
//!
//! flowd produces: [`MESSAGE_TYPE_TRACE`] for L3/L4 flows (sub type = the
//! observation point, see [`TRACE_TO_ENDPOINT`]...), [`MESSAGE_TYPE_DROP`] for
//! kernel drops, [`MESSAGE_TYPE_ACCESS_LOG`] for L7 records. Numbers and names
//! are Cilium's (pkg/monitor/api), so `hubble observe --type l7` and metric
//! labels work unchanged.

pub const MESSAGE_TYPE_UNSPEC: i32 = 0;
pub const MESSAGE_TYPE_DROP: i32 = 1;
pub const MESSAGE_TYPE_DEBUG: i32 = 2;
pub const MESSAGE_TYPE_CAPTURE: i32 = 3;
pub const MESSAGE_TYPE_TRACE: i32 = 4;
pub const MESSAGE_TYPE_POLICY_VERDICT: i32 = 5;
pub const MESSAGE_TYPE_REC_CAPTURE: i32 = 6;
pub const MESSAGE_TYPE_ACCESS_LOG: i32 = 129;
pub const MESSAGE_TYPE_AGENT: i32 = 130;

/// Names used by `hubble observe --type` and the metrics' `type` label.
pub const MESSAGE_TYPE_NAMES: &[(&str, i32)] = &[
    ("drop", MESSAGE_TYPE_DROP),
    ("debug", MESSAGE_TYPE_DEBUG),
    ("capture", MESSAGE_TYPE_CAPTURE),
    ("trace", MESSAGE_TYPE_TRACE),
    ("policy-verdict", MESSAGE_TYPE_POLICY_VERDICT),
    ("l7", MESSAGE_TYPE_ACCESS_LOG),
    ("agent", MESSAGE_TYPE_AGENT),
];

// Trace sub types (observation points, Cilium's pkg/monitor/api
// TraceToLxc…TraceToCrypto); the same numbers as flow::TraceObservationPoint
// except that TO_ENDPOINT is 0 here.
pub const TRACE_TO_ENDPOINT: i32 = 0;
pub const TRACE_TO_PROXY: i32 = 1;
pub const TRACE_TO_HOST: i32 = 2;
pub const TRACE_TO_STACK: i32 = 3;
pub const TRACE_TO_OVERLAY: i32 = 4;
pub const TRACE_FROM_ENDPOINT: i32 = 5;
pub const TRACE_FROM_PROXY: i32 = 6;
pub const TRACE_FROM_HOST: i32 = 7;
pub const TRACE_FROM_STACK: i32 = 8;
pub const TRACE_FROM_OVERLAY: i32 = 9;
pub const TRACE_FROM_NETWORK: i32 = 10;
pub const TRACE_TO_NETWORK: i32 = 11;
pub const TRACE_FROM_CRYPTO: i32 = 12;
pub const TRACE_TO_CRYPTO: i32 = 13;

/// Trace sub-type names (Hubble's metric `subtype` label).
pub const TRACE_SUB_TYPE_NAMES: &[(&str, i32)] = &[
    ("to-endpoint", TRACE_TO_ENDPOINT),
    ("to-proxy", TRACE_TO_PROXY),
    ("to-host", TRACE_TO_HOST),
    ("to-stack", TRACE_TO_STACK),
    ("to-overlay", TRACE_TO_OVERLAY),
    ("from-endpoint", TRACE_FROM_ENDPOINT),
    ("from-proxy", TRACE_FROM_PROXY),
    ("from-host", TRACE_FROM_HOST),
    ("from-stack", TRACE_FROM_STACK),
    ("from-overlay", TRACE_FROM_OVERLAY),
    ("from-network", TRACE_FROM_NETWORK),
    ("to-network", TRACE_TO_NETWORK),
    ("from-crypto", TRACE_FROM_CRYPTO),
    ("to-crypto", TRACE_TO_CRYPTO),
];

/// Monitor type for a `--type` name such as `l7`.
pub fn message_type_by_name(name: &str) -> Option<i32> {
    MESSAGE_TYPE_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
}

/// Name of a monitor type, if it has one.
pub fn message_type_name(t: i32) -> Option<&'static str> {
    MESSAGE_TYPE_NAMES
        .iter()
        .find(|(_, v)| *v == t)
        .map(|(n, _)| *n)
}

/// Name of a trace sub type (observation point), if known.
pub fn trace_sub_type_name(sub: i32) -> Option<&'static str> {
    TRACE_SUB_TYPE_NAMES
        .iter()
        .find(|(_, v)| *v == sub)
        .map(|(n, _)| *n)
}

/// The trace sub type that corresponds to a flow's observation point.
pub fn trace_sub_type(point: crate::flow::TraceObservationPoint) -> Option<i32> {
    use crate::flow::TraceObservationPoint as P;
    match point {
        P::UnknownPoint => None,
        P::ToEndpoint => Some(TRACE_TO_ENDPOINT),
        other => Some(other as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::TraceObservationPoint as P;

    #[test]
    fn names_roundtrip() {
        assert_eq!(message_type_by_name("l7"), Some(129));
        assert_eq!(message_type_by_name("drop"), Some(1));
        assert_eq!(message_type_by_name("nope"), None);
        assert_eq!(message_type_name(4), Some("trace"));
        assert_eq!(trace_sub_type_name(0), Some("to-endpoint"));
        assert_eq!(trace_sub_type_name(10), Some("from-network"));
    }

    #[test]
    fn observation_points_map_to_sub_types() {
        assert_eq!(trace_sub_type(P::ToEndpoint), Some(TRACE_TO_ENDPOINT));
        assert_eq!(trace_sub_type(P::FromEndpoint), Some(TRACE_FROM_ENDPOINT));
        assert_eq!(trace_sub_type(P::ToNetwork), Some(TRACE_TO_NETWORK));
        assert_eq!(trace_sub_type(P::FromNetwork), Some(TRACE_FROM_NETWORK));
        assert_eq!(trace_sub_type(P::ToStack), Some(TRACE_TO_STACK));
        assert_eq!(trace_sub_type(P::FromCrypto), Some(TRACE_FROM_CRYPTO));
        assert_eq!(trace_sub_type(P::ToCrypto), Some(TRACE_TO_CRYPTO));
        assert_eq!(trace_sub_type(P::UnknownPoint), None);
    }
}
