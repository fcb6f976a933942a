//! The per-flow handlers of `hubble-metrics`, one module each as Cilium's
//! (`pkg/hubble/metrics/<handler>`): each names its series and counts one
//! flow into them. What they share is here: the series builder, the
//! counting rule's verdict for a record, and the label values Hubble derives
//! from a flow (protocol, type/subtype, verdict, drop reason, method).
mod dns;
mod drop;
pub mod eventless;
mod flow;
mod flows_to_world;
mod grpc;
mod http;
mod icmp;
mod port_distribution;
mod tcp;

use std::time::Instant;

use flowd_proto::flow::{
    DropReason, Flow, FlowType, IpVersion, Verdict, layer4::Protocol, layer7::Record,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::{CounterWithExemplar, HistogramWithExemplars};
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::HTTP_DURATION_BUCKETS;
use super::context::LabelSet;
use super::counting::Reporter;
use super::series::Series;
use crate::options::metrics::{HandlerKind, HandlerSpec};

/// One enabled handler and its series.
pub(super) enum Handler {
    Flow(HandlerSpec, CounterSeries),
    Drop(HandlerSpec, CounterSeries),
    Tcp(HandlerSpec, CounterSeries),
    Icmp(HandlerSpec, CounterSeries),
    PortDistribution(HandlerSpec, CounterSeries),
    Dns(HandlerSpec, dns::DnsSeries),
    Http(HandlerSpec, http::HttpSeries),
    Grpc(HandlerSpec, grpc::GrpcSeries),
    FlowsToWorld(HandlerSpec, CounterSeries),
    /// `policy` / `kafka`: families without samples ([`eventless`]).
    Eventless,
}

impl Handler {
    /// The handler `spec` asks for, its series registered through `b`.
    pub(super) fn build(spec: &HandlerSpec, b: &mut Builder) -> Handler {
        let s = spec.clone();
        match spec.kind {
            HandlerKind::Flow => Handler::Flow(s, flow::series(b)),
            HandlerKind::Drop => Handler::Drop(s, drop::series(b)),
            HandlerKind::Tcp => Handler::Tcp(s, tcp::series(b)),
            HandlerKind::Icmp => Handler::Icmp(s, icmp::series(b)),
            HandlerKind::PortDistribution => {
                Handler::PortDistribution(s, port_distribution::series(b))
            }
            HandlerKind::Dns => Handler::Dns(s, dns::series(b)),
            HandlerKind::Http => Handler::Http(s, http::series(b, false)),
            HandlerKind::HttpV2 => Handler::Http(s, http::series(b, true)),
            HandlerKind::Grpc => Handler::Grpc(s, grpc::series(b)),
            HandlerKind::FlowsToWorld => Handler::FlowsToWorld(s, flows_to_world::series(b)),
            HandlerKind::Policy | HandlerKind::Kafka => {
                eventless::register(b.registry, spec);
                Handler::Eventless
            }
        }
    }

    /// Counts one flow; `l` is an empty scratch label set.
    pub(super) fn process(&self, flow: &Flow, now: Instant, rule: Counting, l: &mut LabelSet) {
        match self {
            Handler::Flow(spec, s) => flow::process(spec, s, flow, now, rule, l),
            Handler::Drop(spec, s) => drop::process(spec, s, flow, now, rule, l),
            Handler::Tcp(spec, s) => tcp::process(spec, s, flow, now, rule, l),
            Handler::Icmp(spec, s) => icmp::process(spec, s, flow, now, rule, l),
            Handler::PortDistribution(spec, s) => {
                port_distribution::process(spec, s, flow, now, rule, l)
            }
            Handler::Dns(spec, s) => dns::process(spec, s, flow, now, rule, l),
            Handler::Http(spec, s) => http::process(spec, s, flow, now, rule, l),
            Handler::Grpc(spec, s) => grpc::process(spec, s, flow, now, rule, l),
            Handler::FlowsToWorld(spec, s) => {
                flows_to_world::count(spec, s, flow, now, rule.once, l)
            }
            Handler::Eventless => {}
        }
    }

    /// Calls `f` on each of the handler's series; the sum of what it returns.
    pub(super) fn for_each_series(&self, f: &mut dyn FnMut(&dyn SeriesOps) -> usize) -> usize {
        match self {
            Handler::Flow(_, s)
            | Handler::Drop(_, s)
            | Handler::Tcp(_, s)
            | Handler::Icmp(_, s)
            | Handler::PortDistribution(_, s)
            | Handler::FlowsToWorld(_, s) => f(s),
            Handler::Dns(_, d) => f(&d.queries) + f(&d.responses) + f(&d.response_types),
            Handler::Http(_, h) => {
                f(&h.requests) + h.responses.as_ref().map_or(0, |r| f(r)) + f(&h.duration)
            }
            Handler::Grpc(_, g) => f(&g.requests) + f(&g.duration),
            Handler::Eventless => 0,
        }
    }
}

/// What expiry and counting need of a series, independent of its type.
pub(super) trait SeriesOps {
    fn exposed_name(&self) -> String;
    fn live(&self) -> usize;
    fn remove_where_dyn(&self, f: &mut dyn FnMut(&LabelSet, Instant) -> bool) -> usize;
}

impl<M: prometheus_client::metrics::TypedMetric> SeriesOps for Series<M> {
    fn exposed_name(&self) -> String {
        series_metric_name::<M>(self.name)
    }
    fn live(&self) -> usize {
        self.len()
    }
    fn remove_where_dyn(&self, f: &mut dyn FnMut(&LabelSet, Instant) -> bool) -> usize {
        self.remove_where(f)
    }
}

/// Cilium monitor message types (`CiliumEventType.type`).
const MSG_DROP: i32 = 1;

const MSG_CAPTURE: i32 = 3;

const MSG_TRACE: i32 = 4;

const MSG_POLICY_VERDICT: i32 = 5;

const MSG_ACCESS_LOG: i32 = 129;

pub(super) type Ex = LabelSet;

pub(super) type CounterSeries = Series<Counter>;

pub(super) type ExCounterSeries = Series<CounterWithExemplar<Ex>>;

pub(super) type HistSeries = Series<HistogramWithExemplars<Ex>>;

pub(super) struct Builder<'a> {
    pub(super) registry: &'a mut Registry,
    pub(super) max: usize,
    pub(super) refused: &'a Family<LabelSet, Counter>,
    pub(super) expired: &'a Family<LabelSet, Counter>,
}

impl Builder<'_> {
    pub(super) fn make<M>(&mut self, name: &'static str, help: &str, ctor: fn() -> M) -> Series<M>
    where
        M: prometheus_client::metrics::TypedMetric
            + prometheus_client::encoding::EncodeMetric
            + Send
            + Sync
            + std::fmt::Debug
            + 'static,
    {
        let family: Family<LabelSet, M, fn() -> M> = Family::new_with_constructor(ctor);
        self.registry.register(name, help, family.clone());
        let key = vec![("metric", series_metric_name::<M>(name))];
        Series::new(
            name,
            family,
            self.max,
            self.refused.get_or_create(&key).clone(),
            self.expired.get_or_create(&key).clone(),
        )
    }
}

/// The exposed name (counters get `_total`).
pub(super) fn series_metric_name<M: prometheus_client::metrics::TypedMetric>(name: &str) -> String {
    match M::TYPE {
        prometheus_client::metrics::MetricType::Counter => format!("{name}_total"),
        _ => name.to_string(),
    }
}

pub(super) fn new_counter() -> Counter {
    Counter::default()
}

pub(super) fn new_ex_counter() -> CounterWithExemplar<Ex> {
    CounterWithExemplar::default()
}

pub(super) fn new_histogram() -> HistogramWithExemplars<Ex> {
    HistogramWithExemplars::new(HTTP_DURATION_BUCKETS.into_iter())
}

/// What the counting rule says of one record.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counting {
    /// Metrics without a reporter label count it.
    pub(super) once: bool,
    /// The reporter http/httpV2/grpc count it for, if any.
    pub(super) reporter: Option<Reporter>,
}

/// The `method` label: a response whose request flowd did not see (started
/// mid-connection, or the request was evicted from the pairing table) has
/// no method; it is counted with `method="unknown"` rather than an empty
/// label value (Hubble's proxy always knows the method).
pub(super) fn method_label(http: &flowd_proto::flow::Http) -> String {
    if http.method.is_empty() {
        UNKNOWN_METHOD.to_string()
    } else {
        http.method.clone()
    }
}

/// See [`method_label`].
pub const UNKNOWN_METHOD: &str = "unknown";

pub(super) fn forwarded(flow: &Flow) -> bool {
    flow.verdict == Verdict::Forwarded as i32 || flow.verdict == Verdict::Redirected as i32
}

pub(super) fn verdict_name(v: i32) -> String {
    Verdict::try_from(v)
        .map(|v| v.as_str_name().to_string())
        .unwrap_or_else(|_| v.to_string())
}

pub(super) fn ip_version_name(v: i32) -> String {
    IpVersion::try_from(v)
        .map(|v| v.as_str_name().to_string())
        .unwrap_or_else(|_| v.to_string())
}

/// Hubble's drop reason name; the kernel's own reason when no Hubble reason
/// describes it (flowd extension).
pub(super) fn drop_reason(flow: &Flow) -> String {
    if flow.drop_reason_desc != 0
        && let Ok(r) = DropReason::try_from(flow.drop_reason_desc)
    {
        return r.as_str_name().to_string();
    }
    if !flow.kernel_drop_reason.is_empty() {
        return flow.kernel_drop_reason.clone();
    }
    DropReason::Unknown.as_str_name().to_string()
}

/// The flow's monitor message type, derived from the flow when the record
/// carries no event_type.
pub(super) fn event_type(flow: &Flow) -> i32 {
    if let Some(et) = &flow.event_type {
        return et.r#type;
    }
    if flow.l7.is_some() || flow.r#type == FlowType::L7 as i32 {
        MSG_ACCESS_LOG
    } else if flow.verdict == Verdict::Dropped as i32 {
        MSG_DROP
    } else if flow.r#type == FlowType::L3L4 as i32 {
        MSG_TRACE
    } else {
        0
    }
}

/// Hubble's `FlowProtocol`: the L7 protocol, else the L4 one.
pub(super) fn flow_protocol(flow: &Flow) -> &'static str {
    match event_type(flow) {
        MSG_ACCESS_LOG => match flow.l7.as_ref().and_then(|l| l.record.as_ref()) {
            Some(Record::Dns(_)) => "DNS",
            Some(Record::Http(_)) => "HTTP",
            Some(Record::Kafka(_)) => "Kafka",
            None => "Unknown L7",
        },
        MSG_DROP | MSG_TRACE | MSG_POLICY_VERDICT | MSG_CAPTURE => {
            match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
                Some(Protocol::Tcp(_)) => "TCP",
                Some(Protocol::Udp(_)) => "UDP",
                Some(Protocol::IcmPv4(_)) => "ICMPv4",
                Some(Protocol::IcmPv6(_)) => "ICMPv6",
                Some(Protocol::Sctp(_)) => "SCTP",
                Some(Protocol::Vrrp(_)) => "VRRP",
                Some(Protocol::Igmp(_)) => "IGMP",
                None => "Unknown L4",
            }
        }
        _ => "Unknown flow",
    }
}

/// `type` and `subtype` labels of hubble_flows_processed_total.
pub(super) fn type_and_subtype(flow: &Flow) -> (&'static str, String) {
    match event_type(flow) {
        MSG_ACCESS_LOG => {
            let sub = match flow.l7.as_ref().and_then(|l| l.record.as_ref()) {
                Some(Record::Dns(_)) => "DNS",
                Some(Record::Http(_)) => "HTTP",
                Some(Record::Kafka(_)) => "Kafka",
                None => "",
            };
            ("L7", sub.to_string())
        }
        MSG_DROP => ("Drop", String::new()),
        MSG_CAPTURE => ("Capture", String::new()),
        MSG_TRACE => {
            // flowd sets trace_observation_point (an enum numbered like
            // Cilium's trace points, except TO_ENDPOINT = 101); fall back to
            // the event's sub_type as Hubble reads it.
            let point = match flow.trace_observation_point {
                0 => flow.event_type.as_ref().map_or(0, |e| e.sub_type),
                101 => 0,
                p => p,
            };
            ("Trace", trace_point_name(point).to_string())
        }
        MSG_POLICY_VERDICT => ("PolicyVerdict", String::new()),
        other => ("Unknown", other.to_string()),
    }
}

/// Cilium's monitor trace observation point names (TraceToLxc = 0, …).
pub(super) fn trace_point_name(sub: i32) -> &'static str {
    match sub {
        0 => "to-endpoint",
        1 => "to-proxy",
        2 => "to-host",
        3 => "to-stack",
        4 => "to-overlay",
        5 => "from-endpoint",
        6 => "from-proxy",
        7 => "from-host",
        8 => "from-stack",
        9 => "from-overlay",
        10 => "from-network",
        11 => "to-network",
        12 => "from-crypto",
        13 => "to-crypto",
        _ => "",
    }
}
