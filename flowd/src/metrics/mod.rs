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
//! once per reporter — http/httpV2/grpc once with `reporter="client"` and once with
//! `reporter="server"`, the other per-flow metrics once at the packet's first
//! observation point, `flow` and `drop` every record.

pub mod context;
pub mod counting;
mod handlers;
mod own;
mod queue;
mod ring;
pub mod series;
pub mod server;

pub use handlers::{UNKNOWN_METHOD, eventless};

use std::time::{Duration, Instant};

use flowd_proto::flow::{Flow, LostEventSource};
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::options::interfaces::AttachMode;
use crate::options::metrics::MetricsSpec;
use context::LabelSet;
use counting::Reporter;
use handlers::{Builder, Counting, Handler, SeriesOps};
use own::{Own, procfs_self};

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

/// The kernel's cumulative datapath counters (see `datapath::Counters`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathTotals {
    pub events: u64,
    pub events_lost: u64,
    pub program_runs: u64,
    pub full_path_runs: u64,
    /// The HTTP/2 walker's counters (`datapath::Counters::http2_*`).
    pub http2_events: u64,
    pub http2_walks: Http2Walks,
    pub http2_lost: Http2Lost,
    pub http2_concurrent: u64,
}

/// HTTP/2 walks started, by where they started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http2Walks {
    pub client_preface: u64,
    pub server_settings: u64,
    pub resync: u64,
}

/// HTTP/2 walks lost, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http2Lost {
    pub gap: u64,
    pub evicted: u64,
    pub ring_full: u64,
    pub step_limit: u64,
}

/// `start` label values of `flowd_datapath_http2_walks_total`.
const HTTP2_WALK_STARTS: [&str; 3] = ["client_preface", "server_settings", "resync"];
/// `reason` label values of `flowd_datapath_http2_walks_lost_total`.
const HTTP2_LOST_REASONS: [&str; 4] = ["gap", "evicted", "ring_full", "step_limit"];

/// The metrics registry and its handlers.
pub struct Metrics {
    registry: Registry,
    handlers: Vec<Handler>,
    own: Own,
    ring: ring::RingGauges,
    queue: queue::QueueGauges,
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

impl Metrics {
    pub fn new(opts: &MetricsOptions) -> Self {
        let mut registry = Registry::default();
        let own = Own::register(&mut registry);
        let ring = ring::RingGauges::register(&mut registry);
        let queue = queue::QueueGauges::register(&mut registry);
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
        for start in HTTP2_WALK_STARTS {
            let _ = own
                .datapath_http2_walks
                .get_or_create(&vec![("start", start.to_string())]);
        }
        for reason in HTTP2_LOST_REASONS {
            let _ = own
                .datapath_http2_lost
                .get_or_create(&vec![("reason", reason.to_string())]);
        }
        let mut b = Builder {
            registry: &mut registry,
            max: opts.max_series.max(1),
            refused: &own.refused,
            expired: &own.expired,
        };
        let handlers = opts
            .spec
            .handlers
            .iter()
            .map(|h| Handler::build(h, &mut b))
            .collect();
        Metrics {
            registry,
            handlers,
            own,
            ring,
            queue,
            ttl: opts.series_ttl,
            open_metrics: opts.open_metrics,
            count_once: opts.count_once,
        }
    }

    /// Updates the enabled handlers with one flow. Called for every flow.
    pub fn process(&self, flow: &Flow) {
        self.process_at(flow, Instant::now());
    }

    /// [`Metrics::process`] with the time the series are marked updated (for
    /// idle expiry): the pipeline reads the clock once per batch of flows.
    pub fn process_at(&self, flow: &Flow, now: Instant) {
        self.own.flows_processed.inc();
        if self.handlers.is_empty() {
            return;
        }
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
        adv(&self.own.datapath_http2_events, t.http2_events);
        adv(&self.own.datapath_http2_concurrent, t.http2_concurrent);
        let w = &t.http2_walks;
        for (start, total) in
            HTTP2_WALK_STARTS
                .into_iter()
                .zip([w.client_preface, w.server_settings, w.resync])
        {
            adv(
                &self
                    .own
                    .datapath_http2_walks
                    .get_or_create(&vec![("start", start.to_string())]),
                total,
            );
        }
        let l = &t.http2_lost;
        for (reason, total) in
            HTTP2_LOST_REASONS
                .into_iter()
                .zip([l.gap, l.evicted, l.ring_full, l.step_limit])
        {
            adv(
                &self
                    .own
                    .datapath_http2_lost
                    .get_or_create(&vec![("reason", reason.to_string())]),
                total,
            );
        }
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

    /// The HTTP/2 parser's counters: what grew from `old` to `new`, and the
    /// connections it follows now.
    pub fn report_http2(&self, new: &crate::parser::H2Stats, old: &crate::parser::H2Stats) {
        let o = &self.own;
        o.http2_connections
            .set(i64::try_from(new.connections).unwrap_or(i64::MAX));
        o.http2_partial_messages
            .inc_by(new.partial_messages.saturating_sub(old.partial_messages));
        o.http2_streams_evicted
            .inc_by(new.streams_evicted.saturating_sub(old.streams_evicted));
        let labelled =
            |f: &Family<LabelSet, Counter>, label: &'static str, v: &str, n: u64, p: u64| {
                if n > p {
                    f.get_or_create(&vec![(label, v.to_string())]).inc_by(n - p);
                }
            };
        labelled(
            &o.http2_walk_losses,
            "detected_by",
            "kernel",
            new.losses_kernel,
            old.losses_kernel,
        );
        labelled(
            &o.http2_walk_losses,
            "detected_by",
            "parser",
            new.losses_parser,
            old.losses_parser,
        );
        for (reason, n, p) in [
            ("oversized", new.blocks_oversized, old.blocks_oversized),
            (
                "hpack_error",
                new.blocks_hpack_error,
                old.blocks_hpack_error,
            ),
            ("malformed", new.blocks_malformed, old.blocks_malformed),
            (
                "unclassified",
                new.blocks_unclassified,
                old.blocks_unclassified,
            ),
        ] {
            labelled(&o.http2_header_blocks_skipped, "reason", reason, n, p);
        }
        for (reason, n, p) in [
            (
                "capacity",
                new.connections_evicted_capacity,
                old.connections_evicted_capacity,
            ),
            (
                "timeout",
                new.connections_evicted_timeout,
                old.connections_evicted_timeout,
            ),
        ] {
            labelled(&o.http2_connections_evicted, "reason", reason, n, p);
        }
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
        self.handlers
            .iter()
            .map(|h| h.for_each_series(&mut f))
            .sum()
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
