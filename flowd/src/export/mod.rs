//! Flow export: JSON-lines files (Hubble's exporter) and OpenTelemetry (OTLP).
//!
//! Exporters run off the event path. The pipeline hands each flow to
//! [`Exporters::push_flow`], which moves it into an `Arc` and offers it to
//! every sink's bounded [`queue`]: a sink whose queue is full loses that
//! event and counts it (`flowd_export_events_dropped_total{reason="queue_full"}`);
//! the pipeline never waits. Each sink drains its queue on its own thread
//! ([`file`]) or task ([`otlp`]).
//!
//! Filters (`hubble-export-allowlist/-denylist`) and the field mask apply to
//! flows only; lost-event notices are always exported, as Hubble does.

pub mod file;
pub mod otlp;
pub mod queue;

use std::sync::Arc;
use std::time::SystemTime;

use flowd_proto::Timestamp;
use flowd_proto::fieldmask::{FieldMaskError, FlowFieldMask};
use flowd_proto::flow::{Flow, FlowFilter, LostEventSource};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::filters::{FilterError, FlowMatcher};

/// Why an exporter cannot start. flowd refuses the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("hubble-export-{list}[{index}]: not a FlowFilter: {reason}")]
    FilterJson {
        list: &'static str,
        index: usize,
        reason: String,
    },
    #[error("export filters: {0}")]
    Filter(#[from] FilterError),
    #[error("hubble-export-fieldmask: {0}")]
    FieldMask(#[from] FieldMaskError),
    #[error("flowd-export-otlp-endpoint {endpoint:?}: {reason}")]
    OtlpEndpoint { endpoint: String, reason: String },
    #[error("starting the {sink} export thread: {source}")]
    Spawn {
        sink: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// One exported event. Cheap to clone (flows are shared).
#[derive(Debug, Clone)]
pub enum ExportEvent {
    Flow(Arc<Flow>),
    /// `count` events lost at `source` before they could be exported.
    Lost {
        source: LostEventSource,
        count: u64,
        time: Timestamp,
    },
}

/// Label set of the export metrics.
type Labels = Vec<(&'static str, String)>;

/// Export counters, shared by all sinks; registered in flowd's /metrics by
/// [`ExportStats::register`]. Values are readable directly (tests, benches).
#[derive(Debug, Clone, Default)]
pub struct ExportStats {
    exported: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    filtered: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    queued: Family<Labels, Gauge>,
}

/// Reasons an event is dropped (`reason` label).
pub mod reason {
    /// The sink's queue was full when the pipeline offered the event.
    pub const QUEUE_FULL: &str = "queue_full";
    /// Writing the export file failed (disk full, unwritable path, …).
    pub const WRITE_ERROR: &str = "write_error";
    /// The collector refused the records (non-retryable status or partial success).
    pub const REJECTED: &str = "rejected";
    /// The sink stopped (flowd shutting down) before it could deliver them.
    pub const SHUTDOWN: &str = "shutdown";
}

impl ExportStats {
    /// Adds the export metrics to a Prometheus registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "flowd_export_events",
            "Events written to an export sink (file) or accepted by the collector (otlp)",
            self.exported.clone(),
        );
        registry.register(
            "flowd_export_events_dropped",
            "Events an export sink lost, by reason (queue_full, write_error, rejected, shutdown)",
            self.dropped.clone(),
        );
        registry.register(
            "flowd_export_flows_filtered",
            "Flows not exported because of hubble-export-allowlist/-denylist",
            self.filtered.clone(),
        );
        registry.register(
            "flowd_export_errors",
            "Export errors (file open/write/rotate/compress, collector RPC failures), by kind",
            self.errors.clone(),
        );
        registry.register(
            "flowd_export_queue_length",
            "Events waiting in an export sink's queue (including a batch being retried)",
            self.queued.clone(),
        );
    }

    fn sink(sink: &'static str) -> Labels {
        vec![("sink", sink.to_string())]
    }

    fn with(sink: &'static str, k: &'static str, v: &str) -> Labels {
        vec![("sink", sink.to_string()), (k, v.to_string())]
    }

    pub fn add_exported(&self, sink: &'static str, n: u64) {
        self.exported.get_or_create(&Self::sink(sink)).inc_by(n);
    }
    pub fn add_dropped(&self, sink: &'static str, reason: &str, n: u64) {
        self.dropped
            .get_or_create(&Self::with(sink, "reason", reason))
            .inc_by(n);
    }
    pub fn add_filtered(&self, sink: &'static str, n: u64) {
        self.filtered.get_or_create(&Self::sink(sink)).inc_by(n);
    }
    pub fn add_error(&self, sink: &'static str, kind: &str) {
        self.errors
            .get_or_create(&Self::with(sink, "kind", kind))
            .inc();
    }
    pub fn set_queued(&self, sink: &'static str, n: usize) {
        self.queued
            .get_or_create(&Self::sink(sink))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn exported(&self, sink: &'static str) -> u64 {
        self.exported.get_or_create(&Self::sink(sink)).get()
    }
    pub fn dropped(&self, sink: &'static str, reason: &str) -> u64 {
        self.dropped
            .get_or_create(&Self::with(sink, "reason", reason))
            .get()
    }
    /// Events held by the sink (queued or being retried).
    pub fn queued(&self, sink: &'static str) -> i64 {
        self.queued.get_or_create(&Self::sink(sink)).get()
    }
    pub fn filtered(&self, sink: &'static str) -> u64 {
        self.filtered.get_or_create(&Self::sink(sink)).get()
    }
    pub fn errors(&self, sink: &'static str, kind: &str) -> u64 {
        self.errors
            .get_or_create(&Self::with(sink, "kind", kind))
            .get()
    }
}

/// What a sink exports: allow/deny lists and a field mask, applied in the
/// sink's worker.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub matcher: FlowMatcher,
    pub mask: FlowFieldMask,
}

impl Selection {
    /// From the `hubble-export-allowlist`, `-denylist` and `-fieldmask` values.
    pub fn new(
        allow: &[serde_json::Value],
        deny: &[serde_json::Value],
        mask: &[String],
    ) -> Result<Self, ExportError> {
        let allow = parse_filters("allowlist", allow)?;
        let deny = parse_filters("denylist", deny)?;
        Ok(Self {
            matcher: FlowMatcher::new(&allow, &deny)?,
            mask: FlowFieldMask::new(mask)?,
        })
    }

    /// The flow to export, or `None` when the lists exclude it.
    pub fn select<'a>(&self, flow: &'a Flow) -> Option<std::borrow::Cow<'a, Flow>> {
        if !self.matcher.is_match_all() && !self.matcher.matches(flow) {
            return None;
        }
        if self.mask.is_empty() {
            return Some(std::borrow::Cow::Borrowed(flow));
        }
        // Paths were checked against the descriptor; a transcode failure
        // would be a bug, and exporting the unmasked flow could leak fields
        // the operator removed, so the flow is skipped instead.
        match self.mask.apply(flow) {
            Ok(f) => Some(std::borrow::Cow::Owned(f)),
            Err(e) => {
                tracing::error!(error = %e, "applying the export field mask");
                None
            }
        }
    }
}

fn parse_filters(
    list: &'static str,
    values: &[serde_json::Value],
) -> Result<Vec<FlowFilter>, ExportError> {
    values
        .iter()
        .enumerate()
        .map(|(index, v)| {
            serde_json::from_value::<FlowFilter>(v.clone()).map_err(|e| ExportError::FilterJson {
                list,
                index,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// The pipeline's handle on every enabled sink.
pub struct Exporters {
    queues: Vec<queue::Sender>,
    stats: ExportStats,
    workers: Vec<Worker>,
}

enum Worker {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

impl std::fmt::Debug for Exporters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporters")
            .field("sinks", &self.queues.len())
            .finish()
    }
}

impl Exporters {
    /// No sink: pushes are no-ops.
    pub fn none(stats: ExportStats) -> Self {
        Self {
            queues: Vec::new(),
            stats,
            workers: Vec::new(),
        }
    }

    /// Adds a file sink (its own thread: file I/O blocks).
    pub fn add_file(&mut self, opts: file::FileOptions) -> Result<(), ExportError> {
        let (tx, rx) = queue::bounded(file::SINK, opts.queue_size, self.stats.clone());
        let handle = file::spawn(opts, rx, self.stats.clone())?;
        self.queues.push(tx);
        self.workers.push(Worker::Thread(handle));
        Ok(())
    }

    /// Adds an OTLP sink (a tokio task).
    pub fn add_otlp(&mut self, opts: otlp::OtlpOptions) -> Result<(), ExportError> {
        let (tx, rx) = queue::bounded(otlp::SINK, opts.queue_size, self.stats.clone());
        let handle = otlp::spawn(opts, rx, self.stats.clone())?;
        self.queues.push(tx);
        self.workers.push(Worker::Task(handle));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }

    /// Offers a flow to every sink; never blocks.
    pub fn push_flow(&self, flow: Flow) {
        match self.queues.as_slice() {
            [] => {}
            [one] => one.push(ExportEvent::Flow(Arc::new(flow))),
            many => {
                let ev = ExportEvent::Flow(Arc::new(flow));
                for q in many {
                    q.push(ev.clone());
                }
            }
        }
    }

    /// Offers a lost-events notice to every sink.
    pub fn report_lost(&self, source: LostEventSource, count: u64) {
        if count == 0 {
            return;
        }
        let ev = ExportEvent::Lost {
            source,
            count,
            time: Timestamp::from(SystemTime::now()),
        };
        for q in &self.queues {
            q.push(ev.clone());
        }
    }

    /// Closes the queues and waits until every sink has written (or given up
    /// on) what was queued. OTLP sinks retry for at most `otlp_grace`.
    pub async fn shutdown(self, otlp_grace: std::time::Duration) {
        let Self {
            queues, workers, ..
        } = self;
        for q in &queues {
            q.close(otlp_grace);
        }
        drop(queues);
        for w in workers {
            match w {
                Worker::Thread(h) => {
                    let _ = tokio::task::spawn_blocking(move || h.join()).await;
                }
                Worker::Task(h) => {
                    let _ = h.await;
                }
            }
        }
    }
}
