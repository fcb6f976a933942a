//! OTLP/gRPC export to an OpenTelemetry Collector.
//!
//! Every flow becomes a log record (`event_name` `flowd.flow`; body: the
//! flow's Hubble JSON; attributes after the OpenTelemetry semantic
//! conventions, flowd's own under `flowd.*`). Lost-event notices become
//! `flowd.lost_events` records. With `flowd-export-otlp-l7-spans`, each L7
//! response with a latency also becomes a span covering the exchange
//! (request time → response time).
//!
//! Delivery: events are batched (up to [`OtlpOptions::batch_size`], or
//! whatever arrived within [`OtlpOptions::flush_interval`]); a batch is
//! retried with exponential backoff while the collector is unavailable
//! (retryable gRPC codes per the OTLP spec) and dropped as `rejected` on a
//! non-retryable status. The queue bound ([`super::queue`]) covers the batch
//! being retried: while the collector is down at most `queue_size` events
//! are kept and every later one is counted as `queue_full`.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowd_proto::flow::{
    Flow, TrafficDirection, Verdict,
    layer4::Protocol as L4,
    layer7::Record as L7,
    {IpVersion, L7FlowType},
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, logs_service_client::LogsServiceClient,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, trace_service_client::TraceServiceClient,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode,
};
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use super::queue::{Msg, Receiver};
use super::{ExportError, ExportEvent, ExportStats, reason};

/// The `sink` label of this exporter's metrics.
pub const SINK: &str = "otlp";
/// Instrumentation scope of the records.
pub const SCOPE: &str = "flowd";

/// Collector, queue, batching and retry settings.
#[derive(Debug, Clone)]
pub struct OtlpOptions {
    /// `http://host:port` of the collector's OTLP/gRPC receiver.
    pub endpoint: String,
    /// Events kept (queued or being retried) before new ones are dropped.
    pub queue_size: usize,
    /// Records per export request.
    pub batch_size: usize,
    /// A partial batch is sent after waiting this long for more.
    pub flush_interval: Duration,
    /// Also export L7 exchanges as spans.
    pub l7_spans: bool,
    /// `k8s.node.name` / `host.name` of the resource (the bare node name).
    pub node_name: String,
    /// `k8s.cluster.name` of the resource (`cluster-name`); empty = none.
    pub cluster_name: String,
    /// First retry delay; doubled up to `backoff_max` (with jitter).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Deadline of one export RPC.
    pub timeout: Duration,
}

impl OtlpOptions {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            queue_size: 8192,
            // The OpenTelemetry SDKs' batch processor defaults.
            batch_size: 512,
            flush_interval: Duration::from_secs(1),
            l7_spans: false,
            node_name: String::new(),
            cluster_name: String::new(),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Starts the exporter task (on the current tokio runtime).
pub fn spawn(
    opts: OtlpOptions,
    rx: Receiver,
    stats: ExportStats,
) -> Result<tokio::task::JoinHandle<()>, ExportError> {
    let bad = |reason: &str| ExportError::OtlpEndpoint {
        endpoint: opts.endpoint.clone(),
        reason: reason.to_string(),
    };
    if opts.endpoint.starts_with("https://") {
        return Err(bad(
            "TLS to the collector is not supported yet; use http:// (e.g. a collector agent on the node)",
        ));
    }
    let endpoint = Endpoint::from_shared(opts.endpoint.clone())
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(opts.timeout)
        .tcp_nodelay(true);
    // Lazy: flowd starts (and queues) while the collector is not up yet; the
    // channel reconnects by itself after the collector restarts.
    let channel = endpoint.connect_lazy();
    Ok(tokio::spawn(run(opts, channel, rx, stats)))
}

struct Clients {
    logs: LogsServiceClient<Channel>,
    traces: TraceServiceClient<Channel>,
}

async fn run(opts: OtlpOptions, channel: Channel, mut rx: Receiver, stats: ExportStats) {
    let mut clients = Clients {
        logs: LogsServiceClient::new(channel.clone()),
        traces: TraceServiceClient::new(channel),
    };
    let resource = resource(&opts.node_name, &opts.cluster_name);
    let batch_size = opts.batch_size.clamp(1, rx.capacity());
    let mut batch: Vec<ExportEvent> = Vec::with_capacity(batch_size);
    let mut closed = false;
    while !closed {
        // Wait for the first event of a batch, then for more until it is
        // full or the flush interval has passed.
        match rx.recv().await {
            Some(Msg::Event(ev)) => batch.push(ev),
            Some(Msg::Close(_)) | None => closed = true,
        }
        let deadline = tokio::time::Instant::now() + opts.flush_interval;
        while !closed && !batch.is_empty() && batch.len() < batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => break,
                Ok(Some(Msg::Event(ev))) => batch.push(ev),
                Ok(Some(Msg::Close(_)) | None) => closed = true,
            }
        }
        if batch.is_empty() {
            continue;
        }
        deliver(&opts, &resource, &mut clients, &batch, &rx, &stats).await;
        let n = batch.len();
        batch.clear();
        rx.release(n);
    }
}

enum Outcome {
    Done,
    Retry(tonic::Status),
    Rejected(tonic::Status),
}

fn classify(status: tonic::Status) -> Outcome {
    use tonic::Code;
    // Retryable per the OTLP specification (ResourceExhausted too: the
    // collector's memory limiter uses it for back-pressure).
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss
        | Code::ResourceExhausted
        | Code::Unknown => Outcome::Retry(status),
        _ => Outcome::Rejected(status),
    }
}

/// Sends one batch (logs, then spans), retrying with backoff until it is
/// accepted, refused for good, or the shutdown grace period has passed.
async fn deliver(
    opts: &OtlpOptions,
    resource: &Resource,
    clients: &mut Clients,
    batch: &[ExportEvent],
    rx: &Receiver,
    stats: &ExportStats,
) {
    let logs = logs_request(resource, batch);
    let spans = if opts.l7_spans {
        spans_request(resource, batch)
    } else {
        None
    };
    let n_logs = batch.len() as u64;
    let mut logs_pending = true;
    let mut spans_pending = spans.is_some();
    let mut delay = opts.backoff_initial;
    let mut failing = false;
    while logs_pending || spans_pending {
        if let Some(t) = rx.close_deadline()
            && Instant::now() >= t
        {
            if logs_pending {
                stats.add_dropped(SINK, reason::SHUTDOWN, n_logs);
            }
            warn!("collector unavailable at shutdown; queued flow records dropped");
            return;
        }
        if logs_pending {
            let outcome = match clients.logs.export(logs.clone()).await {
                Ok(resp) => {
                    let rejected = resp
                        .into_inner()
                        .partial_success
                        .map_or(0, |p| u64::try_from(p.rejected_log_records).unwrap_or(0))
                        .min(n_logs);
                    stats.add_exported(SINK, n_logs - rejected);
                    if rejected > 0 {
                        stats.add_dropped(SINK, reason::REJECTED, rejected);
                    }
                    Outcome::Done
                }
                Err(s) => classify(s),
            };
            match outcome {
                Outcome::Done => logs_pending = false,
                Outcome::Rejected(s) => {
                    stats.add_error(SINK, "rejected");
                    stats.add_dropped(SINK, reason::REJECTED, n_logs);
                    warn!(code = ?s.code(), message = s.message(), "collector refused flow records");
                    logs_pending = false;
                }
                Outcome::Retry(s) => {
                    stats.add_error(SINK, "unavailable");
                    if !failing {
                        warn!(code = ?s.code(), message = s.message(), "collector unavailable; retrying (events beyond the queue bound are dropped)");
                        failing = true;
                    }
                }
            }
        }
        if !logs_pending
            && spans_pending
            && let Some(req) = &spans
        {
            match clients.traces.export(req.clone()).await.map_err(classify) {
                Ok(_) | Err(Outcome::Done) => spans_pending = false,
                Err(Outcome::Rejected(s)) => {
                    stats.add_error(SINK, "spans_rejected");
                    warn!(code = ?s.code(), message = s.message(), "collector refused L7 spans");
                    spans_pending = false;
                }
                Err(Outcome::Retry(_)) => stats.add_error(SINK, "unavailable"),
            }
        }
        if !(logs_pending || spans_pending) {
            break;
        }
        let mut pause = jitter(delay);
        if let Some(t) = rx.close_deadline() {
            pause = pause.min(t.saturating_duration_since(Instant::now()));
        }
        tokio::time::sleep(pause).await;
        delay = (delay * 2).min(opts.backoff_max);
    }
    if failing {
        info!("collector reachable again");
    }
}

/// `d` ± 20 %, so that many nodes do not retry in lock-step.
fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let f = 0.8 + f64::from(nanos % 1000) / 2500.0;
    d.mul_f64(f)
}

// ------------------------------------------------------------ mapping

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.to_string()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}

fn strs(key: &str, v: &[String]) -> KeyValue {
    kv(
        key,
        Value::ArrayValue(ArrayValue {
            values: v
                .iter()
                .map(|x| AnyValue {
                    value: Some(Value::StringValue(x.clone())),
                })
                .collect(),
        }),
    )
}

/// The resource every record shares: flowd on this node of this cluster.
pub fn resource(node_name: &str, cluster_name: &str) -> Resource {
    let mut attributes = vec![
        s("service.name", "flowd"),
        s("service.version", env!("CARGO_PKG_VERSION")),
    ];
    if !node_name.is_empty() {
        attributes.push(s("k8s.node.name", node_name));
        attributes.push(s("host.name", node_name));
    }
    if !cluster_name.is_empty() {
        attributes.push(s("k8s.cluster.name", cluster_name));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn flow_ns(flow: &Flow) -> u64 {
    flow.time
        .as_ref()
        .map_or(0, |t| u64::try_from(t.as_unix_nanos()).unwrap_or(0))
}

/// One export request for a batch.
pub fn logs_request(resource: &Resource, batch: &[ExportEvent]) -> ExportLogsServiceRequest {
    let observed = now_ns();
    let log_records = batch.iter().map(|ev| log_record(ev, observed)).collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The log record of one event.
pub fn log_record(ev: &ExportEvent, observed_ns: u64) -> LogRecord {
    match ev {
        ExportEvent::Flow(flow) => {
            let verdict = Verdict::try_from(flow.verdict).unwrap_or(Verdict::Unknown);
            let (sev, sev_text) = match verdict {
                Verdict::Dropped => (SeverityNumber::Warn, "WARN"),
                Verdict::Error => (SeverityNumber::Error, "ERROR"),
                _ => (SeverityNumber::Info, "INFO"),
            };
            LogRecord {
                time_unix_nano: flow_ns(flow),
                observed_time_unix_nano: observed_ns,
                severity_number: sev as i32,
                severity_text: sev_text.to_string(),
                event_name: "flowd.flow".to_string(),
                body: Some(AnyValue {
                    value: Some(Value::StringValue(
                        serde_json::to_string(flow.as_ref()).unwrap_or_default(),
                    )),
                }),
                attributes: flow_attributes(flow),
                trace_id: trace_id(flow).map(|t| t.to_vec()).unwrap_or_default(),
                ..Default::default()
            }
        }
        ExportEvent::Lost {
            source,
            count,
            time,
        } => LogRecord {
            time_unix_nano: u64::try_from(time.as_unix_nanos()).unwrap_or(0),
            observed_time_unix_nano: observed_ns,
            severity_number: SeverityNumber::Warn as i32,
            severity_text: "WARN".to_string(),
            event_name: "flowd.lost_events".to_string(),
            body: Some(AnyValue {
                value: Some(Value::StringValue(format!(
                    "{count} events lost at {}",
                    source.as_str_name()
                ))),
            }),
            attributes: vec![
                s("flowd.lost_events.source", source.as_str_name()),
                i(
                    "flowd.lost_events.count",
                    i64::try_from(*count).unwrap_or(i64::MAX),
                ),
            ],
            ..Default::default()
        },
    }
}

fn name_of<T, E>(v: Result<T, E>, f: fn(&T) -> &'static str) -> Option<&'static str> {
    v.ok().map(|x| f(&x))
}

/// Attributes of a flow. Semantic-convention names where they exist
/// (`network.*`, `source.*`, `destination.*`, `k8s.*`, `http.*`, `url.*`,
/// `rpc.*`, `dns.*`); the rest under `flowd.*`.
pub fn flow_attributes(flow: &Flow) -> Vec<KeyValue> {
    let mut a = Vec::with_capacity(24);
    if let Some(ip) = &flow.ip {
        a.push(s("source.address", &ip.source));
        a.push(s("destination.address", &ip.destination));
        match IpVersion::try_from(ip.ip_version) {
            Ok(IpVersion::IPv4) => a.push(s("network.type", "ipv4")),
            Ok(IpVersion::IPv6) => a.push(s("network.type", "ipv6")),
            _ => {}
        }
    }
    if let Some(l4) = flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        let (t, ports) = match l4 {
            L4::Tcp(t) => ("tcp", Some((t.source_port, t.destination_port))),
            L4::Udp(u) => ("udp", Some((u.source_port, u.destination_port))),
            L4::Sctp(x) => ("sctp", Some((x.source_port, x.destination_port))),
            L4::IcmPv4(_) => ("icmp", None),
            L4::IcmPv6(_) => ("icmpv6", None),
            L4::Vrrp(_) => ("vrrp", None),
            L4::Igmp(_) => ("igmp", None),
        };
        a.push(s("network.transport", t));
        if let Some((sp, dp)) = ports {
            a.push(i("source.port", i64::from(sp)));
            a.push(i("destination.port", i64::from(dp)));
        }
        if let L4::Tcp(t) = l4
            && let Some(f) = &t.flags
        {
            let names: Vec<String> = flowd_proto::names::tcp_flags(f)
                .map(str::to_string)
                .collect();
            if !names.is_empty() {
                a.push(strs("flowd.tcp.flags", &names));
            }
        }
    }
    for (side, ep) in [("source", &flow.source), ("destination", &flow.destination)] {
        let Some(ep) = ep else { continue };
        if !ep.pod_name.is_empty() {
            a.push(s(&format!("{side}.k8s.pod.name"), &ep.pod_name));
        }
        if !ep.namespace.is_empty() {
            a.push(s(&format!("{side}.k8s.namespace.name"), &ep.namespace));
        }
        if let Some(w) = ep.workloads.first() {
            a.push(s(&format!("{side}.flowd.workload.name"), &w.name));
            a.push(s(&format!("{side}.flowd.workload.kind"), &w.kind));
        }
        if ep.identity != 0 {
            a.push(i(&format!("{side}.flowd.identity"), i64::from(ep.identity)));
        }
    }
    // The pod where the flow was observed: the sender for egress, the
    // receiver for ingress (the plain k8s.* attributes describe it).
    let local = match TrafficDirection::try_from(flow.traffic_direction) {
        Ok(TrafficDirection::Egress) => flow.source.as_ref(),
        Ok(TrafficDirection::Ingress) => flow.destination.as_ref(),
        _ => None,
    };
    if let Some(ep) = local
        && !ep.pod_name.is_empty()
    {
        a.push(s("k8s.pod.name", &ep.pod_name));
        a.push(s("k8s.namespace.name", &ep.namespace));
    }
    if !flow.node_name.is_empty() {
        // Flows name nodes `<cluster>/<node>` outside the `default` cluster;
        // the semantic convention wants the Kubernetes node name.
        let node = flow
            .node_name
            .rsplit_once('/')
            .map_or(flow.node_name.as_str(), |(_, n)| n);
        a.push(s("k8s.node.name", node));
    }
    if let Some(v) = name_of(Verdict::try_from(flow.verdict), Verdict::as_str_name) {
        a.push(s("flowd.verdict", v));
    }
    if let Some(d) = name_of(
        TrafficDirection::try_from(flow.traffic_direction),
        TrafficDirection::as_str_name,
    ) {
        a.push(s("flowd.traffic_direction", d));
    }
    if let Some(r) = &flow.is_reply {
        a.push(kv("flowd.is_reply", Value::BoolValue(r.value)));
    }
    if !flow.uuid.is_empty() {
        a.push(s("flowd.flow.uuid", &flow.uuid));
    }
    if !flow.kernel_drop_reason.is_empty() {
        a.push(s("flowd.drop_reason", &flow.kernel_drop_reason));
    }
    if let Some(l7) = &flow.l7 {
        if let Some(t) = name_of(L7FlowType::try_from(l7.r#type), L7FlowType::as_str_name) {
            a.push(s("flowd.l7.type", t));
        }
        if l7.latency_ns > 0 {
            a.push(i(
                "flowd.l7.latency_ns",
                i64::try_from(l7.latency_ns).unwrap_or(i64::MAX),
            ));
        }
        match &l7.record {
            Some(L7::Http(h)) => {
                a.push(s("network.protocol.name", "http"));
                if let Some(v) = h.protocol.strip_prefix("HTTP/") {
                    a.push(s("network.protocol.version", v));
                }
                if !h.method.is_empty() {
                    a.push(s("http.request.method", &h.method));
                }
                if h.code != 0 {
                    a.push(i("http.response.status_code", i64::from(h.code)));
                }
                if !h.url.is_empty() {
                    a.push(s("url.full", &h.url));
                }
                if let Some(g) = &h.grpc {
                    a.push(s("rpc.system", "grpc"));
                    if !g.service.is_empty() {
                        a.push(s("rpc.service", &g.service));
                    }
                    if !g.method.is_empty() {
                        a.push(s("rpc.method", &g.method));
                    }
                    if let Some(code) = g.status_code {
                        a.push(i("rpc.grpc.status_code", i64::from(code)));
                    }
                }
            }
            Some(L7::Dns(d)) => {
                a.push(s("network.protocol.name", "dns"));
                if !d.query.is_empty() {
                    a.push(s("dns.question.name", d.query.trim_end_matches('.')));
                }
                if !d.ips.is_empty() {
                    a.push(strs("dns.answers", &d.ips));
                }
                if l7.r#type == L7FlowType::Response as i32 {
                    a.push(s(
                        "flowd.dns.rcode",
                        flowd_proto::names::dns_rcode_metric(d.rcode),
                    ));
                }
                if !d.qtypes.is_empty() {
                    a.push(strs("flowd.dns.qtypes", &d.qtypes));
                }
            }
            Some(L7::Kafka(_)) => a.push(s("network.protocol.name", "kafka")),
            None => {}
        }
    }
    a
}

/// The W3C trace id carried by the flow (HTTP `traceparent`), if any.
fn trace_id(flow: &Flow) -> Option<[u8; 16]> {
    let hex = &flow.trace_context.as_ref()?.parent.as_ref()?.trace_id;
    parse_hex16(hex)
}

fn parse_hex16(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (k, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * k..2 * k + 2)?, 16).ok()?;
    }
    (out != [0; 16]).then_some(out)
}

/// Spans of the L7 responses in a batch that carry a latency; `None` when
/// there are none.
pub fn spans_request(
    resource: &Resource,
    batch: &[ExportEvent],
) -> Option<ExportTraceServiceRequest> {
    let spans: Vec<Span> = batch
        .iter()
        .filter_map(|ev| match ev {
            ExportEvent::Flow(f) => l7_span(f),
            ExportEvent::Lost { .. } => None,
        })
        .collect();
    if spans.is_empty() {
        return None;
    }
    Some(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// The span of one L7 exchange, from its response flow.
pub fn l7_span(flow: &Flow) -> Option<Span> {
    let l7 = flow.l7.as_ref()?;
    if l7.r#type != L7FlowType::Response as i32 || l7.latency_ns == 0 {
        return None;
    }
    let end = flow_ns(flow);
    let start = end.saturating_sub(l7.latency_ns);
    // Ids: the request's W3C trace id when it had one; otherwise derived
    // from the flow's UUID so that re-sending a batch gives the same span.
    let uuid = uuid::Uuid::parse_str(&flow.uuid)
        .map(|u| *u.as_bytes())
        .unwrap_or_else(|_| *uuid::Uuid::new_v4().as_bytes());
    let trace = trace_id(flow).unwrap_or(uuid);
    let mut span_id = [0u8; 8];
    for (k, b) in span_id.iter_mut().enumerate() {
        *b = uuid[k] ^ uuid[k + 8];
    }
    if span_id == [0; 8] {
        span_id[7] = 1;
    }
    // Observed at the client (request leaving it) → CLIENT, else SERVER.
    let client = flow.traffic_direction == TrafficDirection::Egress as i32;
    let (name, error) = match &l7.record {
        Some(L7::Http(h)) => match &h.grpc {
            // OpenTelemetry's RPC conventions: `service/method`; a client
            // fails on any status but OK, a server on the codes that say
            // it failed (and a stream reset fails either).
            Some(g) if !g.service.is_empty() => (
                format!("{}/{}", g.service, g.method),
                !g.reset.is_empty()
                    || g.status_code.is_some_and(|c| {
                        if client {
                            c != 0
                        } else {
                            matches!(c, 2 | 4 | 12 | 13 | 14 | 15)
                        }
                    }),
            ),
            _ => (h.method.clone(), h.code >= 500 || (client && h.code >= 400)),
        },
        Some(L7::Dns(d)) => (
            format!("DNS {}", d.qtypes.first().map_or("query", String::as_str)),
            d.rcode != 0,
        ),
        Some(L7::Kafka(_)) => ("kafka".to_string(), false),
        None => return None,
    };
    Some(Span {
        trace_id: trace.to_vec(),
        span_id: span_id.to_vec(),
        name,
        kind: if client {
            SpanKind::Client as i32
        } else {
            SpanKind::Server as i32
        },
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: flow_attributes(flow),
        status: Some(Status {
            code: if error {
                StatusCode::Error as i32
            } else {
                StatusCode::Unset as i32
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
