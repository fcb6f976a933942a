//! Prometheus metrics with Hubble's catalogue, names and labels.
//!
//! [`Metrics::new`] builds the handlers enabled by `hubble-metrics`
//! ([`crate::options::metrics`]); [`Metrics::process`] is the per-flow entry on the hot path;
//! the daemon reports its own state through the `set_*` / `add_*` methods;
//! [`server`] serves `/metrics` (Prometheus text or OpenMetrics).
//!
//! Every per-flow metric is a [`series::Series`]: at most
//! `flowd-metrics-max-series` series per metric, refused ones counted;
//! series idle for `flowd-metrics-series-ttl` and series naming a deleted
//! pod ([`Metrics::forget_pod`]) are removed.
//!
//! Double counting: a packet between two pods is seen at several
//! observation points, possibly on two nodes. [`counting`] holds the one rule
//! every handler follows (`flowd-metrics-count-once`): each event is counted
//! once per reporter — http/httpV2 once with `reporter="client"` and once with
//! `reporter="server"`, the other per-flow metrics once at the packet's first
//! observation point, `flow` and `drop` every record.

pub mod context;
pub mod counting;
pub mod eventless;
mod ring;
pub mod series;
pub mod server;
mod world;

use std::time::{Duration, Instant};

use flowd_proto::flow::{
    DropReason, Flow, FlowType, IpVersion, L7FlowType, LostEventSource, TraceReason, Verdict,
    layer4::Protocol, layer7::Record,
};
use flowd_proto::names;
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::{CounterWithExemplar, HistogramWithExemplars};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::options::interfaces::AttachMode;
use crate::options::metrics::{HandlerKind, HandlerSpec, MetricsSpec};
use context::{LabelSet, push_labels};
use counting::Reporter;
use series::Series;

/// Default cap of series per metric (`flowd-metrics-max-series`).
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// Buckets of `hubble_http_request_duration_seconds` (Prometheus' defaults,
/// which Hubble uses).
pub const HTTP_DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = prometheus_text::CONTENT_TYPE;
/// Content type of OpenMetrics text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Cilium monitor message types (`CiliumEventType.type`).
const MSG_DROP: i32 = 1;
const MSG_CAPTURE: i32 = 3;
const MSG_TRACE: i32 = 4;
const MSG_POLICY_VERDICT: i32 = 5;
const MSG_ACCESS_LOG: i32 = 129;

/// `reason` values of `flowd_events_skipped_total`.
pub const SKIP_REASONS: [&str; 4] = ["non_ip", "l7_incomplete", "l7_malformed", "l7_other"];

/// `hubble_lost_events_total`'s labels: the source in lower case, as Hubble
/// writes it (e.g. `perf_event_ring_buffer`).
fn lost_labels(source: LostEventSource) -> LabelSet {
    vec![("source", source.as_str_name().to_ascii_lowercase())]
}

/// Options of [`Metrics::new`].
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    pub spec: MetricsSpec,
    /// Series per metric before new ones are refused.
    pub max_series: usize,
    /// Idle series expire after this ([`Metrics::expire_idle`]).
    pub series_ttl: Option<Duration>,
    /// Serve OpenMetrics when asked (`enable-hubble-open-metrics`).
    pub open_metrics: bool,
    /// Apply the counting rule of [`counting`] (`flowd-metrics-count-once`);
    /// false counts every record at every observation point, as Hubble does.
    pub count_once: bool,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            spec: MetricsSpec::default(),
            max_series: DEFAULT_MAX_SERIES,
            series_ttl: None,
            open_metrics: true,
            count_once: true,
        }
    }
}

type Ex = LabelSet;
type CounterSeries = Series<Counter>;
type ExCounterSeries = Series<CounterWithExemplar<Ex>>;
type HistSeries = Series<HistogramWithExemplars<Ex>>;

enum Handler {
    Flow(HandlerSpec, CounterSeries),
    Drop(HandlerSpec, CounterSeries),
    Tcp(HandlerSpec, CounterSeries),
    Icmp(HandlerSpec, CounterSeries),
    PortDistribution(HandlerSpec, CounterSeries),
    Dns {
        spec: HandlerSpec,
        queries: CounterSeries,
        responses: CounterSeries,
        response_types: CounterSeries,
    },
    Http {
        spec: HandlerSpec,
        v2: bool,
        requests: ExCounterSeries,
        /// Only for the deprecated `http` handler.
        responses: Option<ExCounterSeries>,
        duration: HistSeries,
    },
    FlowsToWorld(HandlerSpec, CounterSeries),
    /// `policy` / `kafka`: families without samples ([`eventless`]).
    Eventless,
}

/// The kernel's cumulative datapath counters (see `datapath::Counters`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathTotals {
    pub events: u64,
    pub events_lost: u64,
    pub program_runs: u64,
    pub full_path_runs: u64,
}

/// flowd's own metrics, set by the daemon.
struct Own {
    lost_events: Family<LabelSet, Counter>,
    datapath_events: Counter,
    datapath_events_lost: Counter,
    datapath_program_runs: Counter,
    datapath_full_path_runs: Counter,
    attached_interfaces: Family<LabelSet, Gauge>,
    flow_map_entries: Gauge,
    flow_map_capacity: Gauge,
    l7_pairing_evictions: Family<LabelSet, Counter>,
    dns_name_cache_entries: Gauge,
    dns_name_cache_evictions: Counter,
    events_skipped: Family<LabelSet, Counter>,
    flows_processed: Counter,
    refused: Family<LabelSet, Counter>,
    expired: Family<LabelSet, Counter>,
    process_rss: Gauge,
    process_vsize: Gauge,
    process_open_fds: Gauge,
    process_start_time: Gauge<f64, std::sync::atomic::AtomicU64>,
    process_cpu: Counter<f64, std::sync::atomic::AtomicU64>,
}

/// The metrics registry and its handlers.
pub struct Metrics {
    registry: Registry,
    handlers: Vec<Handler>,
    own: Own,
    ring: ring::RingGauges,
    ttl: Option<Duration>,
    open_metrics: bool,
    count_once: bool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("handlers", &self.handlers.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

struct Builder<'a> {
    registry: &'a mut Registry,
    max: usize,
    refused: &'a Family<LabelSet, Counter>,
    expired: &'a Family<LabelSet, Counter>,
}

impl Builder<'_> {
    fn make<M>(&mut self, name: &'static str, help: &str, ctor: fn() -> M) -> Series<M>
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
fn series_metric_name<M: prometheus_client::metrics::TypedMetric>(name: &str) -> String {
    match M::TYPE {
        prometheus_client::metrics::MetricType::Counter => format!("{name}_total"),
        _ => name.to_string(),
    }
}

fn new_counter() -> Counter {
    Counter::default()
}
fn new_ex_counter() -> CounterWithExemplar<Ex> {
    CounterWithExemplar::default()
}
fn new_histogram() -> HistogramWithExemplars<Ex> {
    HistogramWithExemplars::new(HTTP_DURATION_BUCKETS.into_iter())
}

impl Metrics {
    pub fn new(opts: &MetricsOptions) -> Self {
        let mut registry = Registry::default();
        let own = Own {
            lost_events: Family::default(),
            datapath_events: Counter::default(),
            datapath_events_lost: Counter::default(),
            datapath_program_runs: Counter::default(),
            datapath_full_path_runs: Counter::default(),
            attached_interfaces: Family::default(),
            flow_map_entries: Gauge::default(),
            flow_map_capacity: Gauge::default(),
            l7_pairing_evictions: Family::default(),
            dns_name_cache_entries: Gauge::default(),
            dns_name_cache_evictions: Counter::default(),
            events_skipped: Family::default(),
            flows_processed: Counter::default(),
            refused: Family::default(),
            expired: Family::default(),
            process_rss: Gauge::default(),
            process_vsize: Gauge::default(),
            process_open_fds: Gauge::default(),
            process_start_time: Gauge::default(),
            process_cpu: Counter::default(),
        };
        let r = &mut registry;
        r.register(
            "hubble_lost_events",
            "Number of lost events",
            own.lost_events.clone(),
        );
        r.register(
            "flowd_datapath_events",
            "Events the eBPF programs submitted to the ring buffer",
            own.datapath_events.clone(),
        );
        r.register(
            "flowd_datapath_events_lost",
            "Events the eBPF programs could not submit (ring buffer full)",
            own.datapath_events_lost.clone(),
        );
        r.register(
            "flowd_datapath_program_runs",
            "Runs of the TC/XDP programs (one per packet or GSO buffer)",
            own.datapath_program_runs.clone(),
        );
        r.register(
            "flowd_datapath_full_path_runs",
            "Program runs the flow cache's hit path did not settle (new flows, TCP flag changes, \
             reports, L7 payloads, uncommon headers): the cache's misses",
            own.datapath_full_path_runs.clone(),
        );
        r.register(
            "flowd_attached_interfaces",
            "Interfaces flowd's programs are attached to, by mode",
            own.attached_interfaces.clone(),
        );
        r.register(
            "flowd_flow_map_entries",
            "Entries in the kernel flow table",
            own.flow_map_entries.clone(),
        );
        r.register(
            "flowd_flow_map_capacity",
            "Capacity of the kernel flow table",
            own.flow_map_capacity.clone(),
        );
        r.register(
            "flowd_l7_pairing_evictions",
            "Unanswered L7 requests evicted from the pairing table, by protocol and reason",
            own.l7_pairing_evictions.clone(),
        );
        r.register(
            "flowd_dns_name_cache_entries",
            "IP → DNS name entries learned from observed DNS answers (flowd-dns-name-cache-entries bounds them)",
            own.dns_name_cache_entries.clone(),
        );
        r.register(
            "flowd_dns_name_cache_evictions",
            "Unexpired DNS name cache entries evicted because the cache was full",
            own.dns_name_cache_evictions.clone(),
        );
        r.register(
            "flowd_events_skipped",
            "Datapath events that gave no flow, by reason (non_ip: frames that are not IP, \
             such as ARP; l7_incomplete, l7_malformed, l7_other: payloads that are no HTTP/DNS \
             message start, or TCP retransmissions of one already reported)",
            own.events_skipped.clone(),
        );
        r.register(
            "flowd_flows_processed",
            "Flows given to the metrics handlers",
            own.flows_processed.clone(),
        );
        r.register(
            "flowd_metrics_series_refused",
            "Updates refused because the metric reached flowd-metrics-max-series",
            own.refused.clone(),
        );
        r.register(
            "flowd_metrics_series_expired",
            "Series removed because they were idle or named a deleted pod",
            own.expired.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            own.process_rss.clone(),
        );
        r.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            own.process_vsize.clone(),
        );
        r.register(
            "process_open_fds",
            "Number of open file descriptors",
            own.process_open_fds.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            own.process_start_time.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            own.process_cpu.clone(),
        );

        let ring = ring::RingGauges::register(&mut registry);
        // The loss sources flowd has are present from the start (at 0), so
        // that rate() and alerts work before the first loss. flowd never
        // drops between its event reader and the pipeline (the reader waits
        // and the kernel ring absorbs or counts), so Hubble's
        // observer_events_queue never appears.
        for src in [
            LostEventSource::PerfEventRingBuffer,
            LostEventSource::HubbleRingBuffer,
        ] {
            let _ = own.lost_events.get_or_create(&lost_labels(src));
        }
        for mode in [AttachMode::Tc, AttachMode::Xdp, AttachMode::XdpGeneric] {
            let _ = own
                .attached_interfaces
                .get_or_create(&vec![("mode", mode.as_str().to_string())]);
        }
        for reason in SKIP_REASONS {
            let _ = own
                .events_skipped
                .get_or_create(&vec![("reason", reason.to_string())]);
        }
        let mut b = Builder {
            registry: &mut registry,
            max: opts.max_series.max(1),
            refused: &own.refused,
            expired: &own.expired,
        };
        let mut handlers = Vec::new();
        for h in &opts.spec.handlers {
            let spec = h.clone();
            handlers.push(match h.kind {
                HandlerKind::Flow => Handler::Flow(
                    spec,
                    b.make(
                        "hubble_flows_processed",
                        "Total number of flows processed",
                        new_counter,
                    ),
                ),
                HandlerKind::Drop => {
                    Handler::Drop(spec, b.make("hubble_drop", "Number of drops", new_counter))
                }
                HandlerKind::Tcp => Handler::Tcp(
                    spec,
                    b.make("hubble_tcp_flags", "TCP flag occurrences", new_counter),
                ),
                HandlerKind::Icmp => Handler::Icmp(
                    spec,
                    b.make("hubble_icmp", "Number of ICMP messages", new_counter),
                ),
                HandlerKind::PortDistribution => Handler::PortDistribution(
                    spec,
                    b.make(
                        "hubble_port_distribution",
                        "Numbers of packets distributed by destination port",
                        new_counter,
                    ),
                ),
                HandlerKind::Dns => Handler::Dns {
                    spec,
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
                },
                HandlerKind::Http | HandlerKind::HttpV2 => {
                    let v2 = h.kind == HandlerKind::HttpV2;
                    Handler::Http {
                        spec,
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
                HandlerKind::FlowsToWorld => Handler::FlowsToWorld(
                    spec,
                    b.make(
                        "hubble_flows_to_world",
                        "Total number of flows to reserved:world",
                        new_counter,
                    ),
                ),
                HandlerKind::Policy | HandlerKind::Kafka => {
                    eventless::register(b.registry, h);
                    Handler::Eventless
                }
            });
        }
        Metrics {
            registry,
            handlers,
            own,
            ring,
            ttl: opts.series_ttl,
            open_metrics: opts.open_metrics,
            count_once: opts.count_once,
        }
    }

    /// Updates the enabled handlers with one flow. Called for every flow.
    pub fn process(&self, flow: &Flow) {
        self.own.flows_processed.inc();
        if self.handlers.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut labels = LabelSet::with_capacity(12);
        let rule = if self.count_once {
            Counting {
                once: counting::counts_once(flow),
                reporter: counting::counting_reporter(flow),
            }
        } else {
            Counting {
                once: true,
                reporter: Some(Reporter::of_direction(flow)),
            }
        };
        for h in &self.handlers {
            labels.clear();
            h.process(flow, now, rule, &mut labels);
        }
    }

    /// The registry, for other modules' metrics (e.g. `export`) before the
    /// handle is shared.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Events lost at `source` (`hubble_lost_events_total{source}`, the
    /// source in lower case as Hubble writes it, e.g. `perf_event_ring_buffer`).
    pub fn add_lost_events(&self, source: LostEventSource, n: u64) {
        self.own
            .lost_events
            .get_or_create(&lost_labels(source))
            .inc_by(n);
    }

    /// Datapath events that gave no flow (`flowd_events_skipped_total`),
    /// `reason` one of [`SKIP_REASONS`].
    pub fn add_skipped_events(&self, reason: &str, n: u64) {
        self.own
            .events_skipped
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(n);
    }

    /// Advances the datapath counters to the kernel's cumulative totals
    /// (sums of the per-CPU counters); a total lower than the current value
    /// (programs reloaded) is ignored.
    pub fn set_datapath_totals(&self, t: &DatapathTotals) {
        let adv = |c: &Counter, total: u64| {
            let cur = c.get();
            if total > cur {
                c.inc_by(total - cur);
            }
        };
        adv(&self.own.datapath_events, t.events);
        adv(&self.own.datapath_events_lost, t.events_lost);
        adv(&self.own.datapath_program_runs, t.program_runs);
        adv(&self.own.datapath_full_path_runs, t.full_path_runs);
    }

    /// Number of interfaces attached in `mode`.
    pub fn set_attached_interfaces(&self, mode: AttachMode, n: u64) {
        self.own
            .attached_interfaces
            .get_or_create(&vec![("mode", mode.as_str().to_string())])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Entries in the kernel flow table and its capacity.
    pub fn set_flow_map(&self, entries: u64, capacity: u64) {
        self.own
            .flow_map_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.own
            .flow_map_capacity
            .set(i64::try_from(capacity).unwrap_or(i64::MAX));
    }

    /// The DNS name cache's size and its new evictions.
    pub fn set_dns_name_cache(&self, entries: usize, new_evictions: u64) {
        self.own
            .dns_name_cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.own.dns_name_cache_evictions.inc_by(new_evictions);
    }

    /// Pairing-table evictions (`protocol`: `http` or `dns`; `reason`: e.g.
    /// `timeout`, `capacity`).
    pub fn add_l7_pairing_evictions(&self, protocol: &str, reason: &str, n: u64) {
        self.own
            .l7_pairing_evictions
            .get_or_create(&vec![
                ("protocol", protocol.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc_by(n);
    }

    /// Removes every series that names the pod `namespace/pod` (pod labels
    /// and pod / pod-name contexts). Returns the number removed. Call when a
    /// pod is deleted (Hubble waits a minute first so that late flows of the
    /// pod do not re-create them; the caller chooses).
    pub fn forget_pod(&self, namespace: &str, pod: &str) -> usize {
        let qualified = format!("{namespace}/{pod}");
        let names_pod = |labels: &LabelSet| {
            let get = |n: &str| {
                labels
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.as_str())
            };
            let side = |pod_label: &str, ns_label: &str, ctx_label: &str| {
                let by_label =
                    get(pod_label) == Some(pod) && get(ns_label).is_none_or(|ns| ns == namespace);
                let by_ctx = get(ctx_label).is_some_and(|v| v == qualified || v == pod);
                by_label || by_ctx
            };
            side("source_pod", "source_namespace", "source")
                || side("destination_pod", "destination_namespace", "destination")
        };
        self.for_each_series(|s| s.remove_where_dyn(&mut |l, _| names_pod(l)))
    }

    /// Removes series not updated for the configured TTL; returns how many.
    /// The metrics server calls this before each scrape.
    pub fn expire_idle(&self) -> usize {
        match self.ttl {
            Some(ttl) => self.expire_older_than(Instant::now(), ttl),
            None => 0,
        }
    }

    /// Removes series last updated more than `age` before `now`.
    pub fn expire_older_than(&self, now: Instant, age: Duration) -> usize {
        self.for_each_series(|s| {
            s.remove_where_dyn(&mut |_, t| now.saturating_duration_since(t) > age)
        })
    }

    /// Live series of the per-flow metric `name` (as exposed, e.g.
    /// `hubble_http_requests_total`); `None` if no enabled handler has it.
    pub fn series_count(&self, name: &str) -> Option<usize> {
        let mut found = None;
        self.for_each_series(|s| {
            if s.exposed_name() == name {
                found = Some(s.live());
            }
            0
        });
        found
    }

    fn for_each_series(&self, mut f: impl FnMut(&dyn SeriesOps) -> usize) -> usize {
        let mut n = 0;
        for h in &self.handlers {
            match h {
                Handler::Flow(_, s)
                | Handler::Drop(_, s)
                | Handler::Tcp(_, s)
                | Handler::Icmp(_, s)
                | Handler::PortDistribution(_, s) => n += f(s),
                Handler::Dns {
                    queries,
                    responses,
                    response_types,
                    ..
                } => {
                    n += f(queries);
                    n += f(responses);
                    n += f(response_types);
                }
                Handler::Http {
                    requests,
                    responses,
                    duration,
                    ..
                } => {
                    n += f(requests);
                    if let Some(r) = responses {
                        n += f(r);
                    }
                    n += f(duration);
                }
                Handler::FlowsToWorld(_, s) => n += f(s),
                Handler::Eventless => {}
            }
        }
        n
    }

    /// Samples this process' memory, CPU and file descriptors (Linux /proc).
    pub fn refresh_process_metrics(&self) {
        let Some(p) = procfs_self() else {
            return;
        };
        self.own.process_rss.set(p.rss_bytes);
        self.own.process_vsize.set(p.vsize_bytes);
        self.own.process_open_fds.set(p.open_fds);
        self.own.process_start_time.set(p.start_time_s);
        let cur = self.own.process_cpu.get();
        if p.cpu_s > cur {
            self.own.process_cpu.inc_by(p.cpu_s - cur);
        }
    }

    /// Whether OpenMetrics may be served (`enable-hubble-open-metrics`).
    pub fn open_metrics_enabled(&self) -> bool {
        self.open_metrics
    }

    /// The registry in the Prometheus text format (0.0.4).
    pub fn encode_prometheus(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut s, &self.registry);
        s
    }

    /// The registry in OpenMetrics text (with exemplars and `# EOF`).
    pub fn encode_openmetrics(&self) -> String {
        let mut s = String::new();
        let _ = text::encode(&mut s, &self.registry);
        s
    }
}

/// What `for_each_series` needs of a series, independent of its type.
trait SeriesOps {
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

/// What the counting rule says of one record.
#[derive(Debug, Clone, Copy)]
struct Counting {
    /// Metrics without a reporter label count it.
    once: bool,
    /// The reporter http/httpV2 count it for, if any.
    reporter: Option<Reporter>,
}

impl Handler {
    fn process(&self, flow: &Flow, now: Instant, rule: Counting, l: &mut LabelSet) {
        match self {
            Handler::Flow(spec, s) => {
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
            Handler::Drop(spec, s) => {
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
            Handler::Tcp(spec, s) => {
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
            Handler::Icmp(spec, s) => {
                if !rule.once {
                    return;
                }
                let (family, typ) = match flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
                    // gopacket takes uint8(type), uint8(code): Go truncates.
                    Some(Protocol::IcmPv4(i)) => {
                        ("IPv4", names::icmpv4(i.r#type as u8, i.code as u8))
                    }
                    // Hubble labels ICMPv6 with family "IPv4" (a bug); flowd says IPv6.
                    Some(Protocol::IcmPv6(i)) => {
                        ("IPv6", names::icmpv6(i.r#type as u8, i.code as u8))
                    }
                    _ => return,
                };
                l.push(("family", family.to_string()));
                l.push(("type", typ));
                push_labels(&spec.context, flow, false, l);
                s.with(l, now, |c| {
                    c.inc();
                });
            }
            Handler::PortDistribution(spec, s) => {
                // Once per connection: the L3/L4 record that opens it (trace
                // reason NEW, the first record of the request direction's
                // entry). Replies are never counted (their destination port
                // is the client's ephemeral port), nor are the connection's
                // later records or its L7 messages.
                let opens = flow.trace_reason == TraceReason::New as i32;
                if !rule.once || !forwarded(flow) || !opens {
                    return;
                }
                let (proto, port) = match flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
                    Some(Protocol::Tcp(t)) => ("TCP", t.destination_port),
                    Some(Protocol::Udp(u)) => ("UDP", u.destination_port),
                    Some(Protocol::Sctp(s)) => ("SCTP", s.destination_port),
                    Some(Protocol::IcmPv4(_)) => ("ICMPv4", 0),
                    Some(Protocol::IcmPv6(_)) => ("ICMPv6", 0),
                    Some(Protocol::Vrrp(_)) => ("VRRP", 0),
                    Some(Protocol::Igmp(_)) => ("IGMP", 0),
                    None => return,
                };
                l.push(("protocol", proto.to_string()));
                l.push(("port", port.to_string()));
                push_labels(&spec.context, flow, false, l);
                s.with(l, now, |c| {
                    c.inc();
                });
            }
            Handler::Dns {
                spec,
                queries,
                responses,
                response_types,
            } => {
                let Some(Record::Dns(dns)) = flow.l7.as_ref().and_then(|l7| l7.record.as_ref())
                else {
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
            Handler::Http {
                spec,
                v2,
                requests,
                responses,
                duration,
            } => {
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
            Handler::FlowsToWorld(spec, s) => world::count(spec, s, flow, now, rule.once, l),
            Handler::Eventless => {}
        }
    }
}

/// The `method` label: a response whose request flowd did not see (started
/// mid-connection, or the request was evicted from the pairing table) has
/// no method; it is counted with `method="unknown"` rather than an empty
/// label value (Hubble's proxy always knows the method).
fn method_label(http: &flowd_proto::flow::Http) -> String {
    if http.method.is_empty() {
        UNKNOWN_METHOD.to_string()
    } else {
        http.method.clone()
    }
}

/// See [`method_label`].
pub const UNKNOWN_METHOD: &str = "unknown";

fn forwarded(flow: &Flow) -> bool {
    flow.verdict == Verdict::Forwarded as i32 || flow.verdict == Verdict::Redirected as i32
}

fn verdict_name(v: i32) -> String {
    Verdict::try_from(v)
        .map(|v| v.as_str_name().to_string())
        .unwrap_or_else(|_| v.to_string())
}

fn ip_version_name(v: i32) -> String {
    IpVersion::try_from(v)
        .map(|v| v.as_str_name().to_string())
        .unwrap_or_else(|_| v.to_string())
}

/// Hubble's drop reason name; the kernel's own reason when no Hubble reason
/// describes it (flowd extension).
fn drop_reason(flow: &Flow) -> String {
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
fn event_type(flow: &Flow) -> i32 {
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
fn flow_protocol(flow: &Flow) -> &'static str {
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
fn type_and_subtype(flow: &Flow) -> (&'static str, String) {
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
fn trace_point_name(sub: i32) -> &'static str {
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

struct ProcSample {
    rss_bytes: i64,
    vsize_bytes: i64,
    open_fds: i64,
    start_time_s: f64,
    cpu_s: f64,
}

/// Reads /proc/self/stat (fields after the command name, which may contain
/// spaces and parentheses) and counts /proc/self/fd.
fn procfs_self() -> Option<ProcSample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): field N is f[N - 3].
    let get = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if tick <= 0 || page <= 0 {
        return None;
    }
    let tick = tick as f64;
    let cpu_s = (get(14)? + get(15)?) as f64 / tick;
    let start_ticks = get(22)? as f64;
    let vsize = get(23)?;
    let rss_pages = get(24)?;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
    Some(ProcSample {
        rss_bytes: (rss_pages.saturating_mul(page as u64)) as i64,
        vsize_bytes: vsize as i64,
        open_fds,
        start_time_s: boot + start_ticks / tick,
        cpu_s,
    })
}
