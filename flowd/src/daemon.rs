//! The daemon: one pipeline from kernel events to the API, metrics and exports.
//!
//! `datapath` → [`Pipeline::on_event`] (parser → enrichment → metrics and the
//! flow buffer) → `observer` (gRPC) / `metrics` (HTTP). The pipeline runs on a
//! single task and owns the parser's pairing state, so nothing on the event
//! path takes a lock.
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flowd_proto::flow::{Flow, LostEventSource, TrafficDirection};
use flowd_proto::health::HealthStatus;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::{
    config::{Config, MonitorAggregation},
    datapath::{self, Datapath, DatapathConfig, DatapathEvent},
    endpoints::{
        EndpointStore, Hook, ManifestSource, StoreConfig,
        enrich::enrich_with,
        hold::Holding,
        names::{NameCache, NameCacheConfig},
    },
    export::{ExportError, ExportStats, Exporters},
    metrics::{DatapathTotals, Metrics},
    observer::{FlowWriter, Observer},
    options::interfaces::AttachMode,
    parser::{HttpConfig, PairingLimits, Parser, ParserConfig, RedactConfig},
    wiring,
};

/// What the daemon writes besides its API, metrics and exports (the
/// `--print` and `--dump-flows-on-exit` flags).
pub use crate::cli::Outputs;

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Datapath(#[from] datapath::Error),
    #[error("observer: {0}")]
    Observer(#[from] crate::observer::ObserverError),
    #[error("HTTP parser configuration: {0}")]
    Http(#[from] crate::parser::HttpConfigError),
    #[error("hubble-metrics-server {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: crate::metrics::server::ServerError,
    },
    #[error("hubble-listen-address {addr}: cannot listen for the Observer API: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("endpoints: {0}")]
    Endpoints(String),
    #[error("Observer API TLS (hubble-tls-*): {0}")]
    Tls(#[from] flowd_tls::TlsError),
    #[error("export: {0}")]
    Export(#[from] ExportError),
    /// `--dump-flows-on-exit` could not be written.
    #[error("{0}")]
    Dump(String),
}

/// Everything between the datapath and the consumers of flows.
pub struct Pipeline {
    parser: Parser,
    writer: FlowWriter,
    metrics: Option<Arc<Metrics>>,
    endpoints: Option<Arc<EndpointStore>>,
    /// File/OTLP sinks, fed through bounded queues (never blocking).
    exporters: Exporters,
    /// Kernel-side lost events already reported downstream.
    kernel_lost_reported: u64,
    /// COUNTERS' full_path_missing when last warned about.
    full_path_missing_warned: u64,
    /// Pairing-table evictions already added to the metrics.
    evictions_reported: [u64; 4],
    /// Running kernel drop totals → counts.
    drops: datapath::drops::DropCounter,
    /// Endpoint snapshot version whose pod IPs the drop program has.
    drop_addrs_version: Option<u64>,
    /// Flows waiting for the store to know their interface.
    held: Holding,
    /// Names each local pod resolved (from the DNS answers seen).
    names: NameCache,
    /// Name cache evictions already added to the metrics.
    name_evictions_reported: u64,
    /// Endpoint snapshot version whose pods the name cache was pruned to.
    names_pods_version: Option<u64>,
    /// Flow-buffer losses (HUBBLE_RING_BUFFER) already added to the metrics.
    ring_lost_reported: u64,
    /// Parser skips (non-IP, L7 reasons) already added to the metrics.
    skipped_reported: [u64; 4],
    /// Pods the metrics may have series of, and the snapshot they are from:
    /// a pod that leaves the store has its series removed.
    pods: std::collections::BTreeSet<(String, String)>,
    pods_version: Option<u64>,
}

/// How far behind now flows may arrive (held flows wait up to 5 s): name
/// cache entries are dropped only when expired for longer.
const NAME_EXPIRY_GRACE: Duration = Duration::from_secs(10);

impl Pipeline {
    pub fn new(
        parser: Parser,
        writer: FlowWriter,
        metrics: Option<Arc<Metrics>>,
        endpoints: Option<Arc<EndpointStore>>,
    ) -> Self {
        Self {
            parser,
            writer,
            metrics,
            endpoints,
            exporters: Exporters::none(ExportStats::default()),
            kernel_lost_reported: 0,
            full_path_missing_warned: 0,
            evictions_reported: [0; 4],
            drops: datapath::drops::DropCounter::default(),
            drop_addrs_version: None,
            held: Holding::default(),
            names: NameCache::new(NameCacheConfig::default()),
            name_evictions_reported: 0,
            names_pods_version: None,
            ring_lost_reported: 0,
            skipped_reported: [0; 4],
            pods: Default::default(),
            pods_version: None,
        }
    }

    /// Sets the DNS name cache's bounds (`flowd-dns-name-cache-entries`,
    /// `tofqdns-min-ttl`).
    pub fn with_name_cache(mut self, cfg: NameCacheConfig) -> Self {
        self.names = NameCache::new(cfg);
        self
    }

    /// Feeds `exporters` with every flow and lost-events notice.
    pub fn with_exporters(mut self, exporters: Exporters) -> Self {
        self.exporters = exporters;
        self
    }

    /// No more flows: follow streams end after the last ones (see
    /// [`FlowWriter::close`]).
    pub fn close_streams(&mut self) {
        self.writer.close();
    }

    /// Takes the exporters out (to shut them down), leaving none.
    pub fn take_exporters(&mut self) -> Exporters {
        let stats = self.exporters.stats().clone();
        std::mem::replace(&mut self.exporters, Exporters::none(stats))
    }

    /// Handles one datapath event. Never fails: input that gives no flow is
    /// counted by the parser and skipped, so one bad record loses nothing else.
    pub fn on_event(&mut self, ev: DatapathEvent) {
        self.release_held(false);
        match ev {
            DatapathEvent::Flow(r) => {
                if let Some(flow) = self.parser.l34_flow(&r.event, unix_ns(r.time)) {
                    self.emit(flow, r.event.key.direction);
                }
            }
            DatapathEvent::L7(e) => {
                if let Ok(flow) = self.parser.l7_flow(&e.record, unix_ns(e.time)) {
                    self.emit(flow, e.record.key.direction);
                }
            }
            DatapathEvent::Drop(r) => self.on_drop(&r),
            DatapathEvent::Attached(a) => {
                // XDP runs on the node's uplinks (docs/architecture.md): their
                // flows are FROM_NETWORK, not waiting for a pod.
                if matches!(a.mode, AttachMode::Xdp | AttachMode::XdpGeneric)
                    && let Some(e) = &self.endpoints
                {
                    e.add_uplink(a.ifindex, &a.ifname);
                }
                info!(ifname = %a.ifname, ifindex = a.ifindex, mechanism = a.mechanism, "attached");
            }
            DatapathEvent::Detached { ifindex, ifname } => {
                if let Some(e) = &self.endpoints {
                    e.remove_uplink(ifindex);
                }
                info!(%ifname, ifindex, "detached");
            }
        }
    }

    /// A kernel drop report → one DROPPED flow for the drops it adds.
    fn on_drop(&mut self, r: &datapath::DropRecord) {
        let count = self.drops.delta(r);
        if count == 0 {
            return;
        }
        let mut flow = self.parser.drop_flow(r, count, unix_ns(r.time));
        if let Some(e) = &self.endpoints {
            // No hook: the drop happened wherever the kernel freed the skb.
            let snap = e.snapshot();
            enrich_with(&snap, &mut flow, None);
            flow.traffic_direction = drop_direction(&snap, &flow) as i32;
            self.names.observe_and_fill(&snap, &mut flow);
        }
        // Drops are flows like any other, for the exporters too (Hubble exports them).
        self.publish(flow);
    }

    /// Gives the drop program the addresses of this node's pods when they change.
    pub fn sync_drop_addresses(&mut self, dp: &Datapath) {
        let Some(e) = &self.endpoints else { return };
        let snap = e.snapshot();
        if self.drop_addrs_version == Some(snap.version) {
            return;
        }
        let addrs: Vec<std::net::IpAddr> = snap
            .local_pods()
            .iter()
            .flat_map(|p| p.ips.iter().copied())
            .collect();
        match dp.set_drop_addresses(&addrs) {
            Ok(()) => self.drop_addrs_version = Some(snap.version),
            Err(e) => warn!(error = %e, "updating the drop program's pod addresses"),
        }
    }

    fn emit(&mut self, mut flow: Flow, direction: u8) {
        let hook = Hook::from_kernel(direction);
        if let Some(e) = &self.endpoints {
            let snap = e.snapshot();
            match self.held.offer(&snap, flow, hook, std::time::Instant::now) {
                Some(f) => flow = f,
                None => return,
            }
            enrich_with(&snap, &mut flow, hook);
            self.names.observe_and_fill(&snap, &mut flow);
        }
        self.publish(flow);
    }

    /// Sends the held flows that may go (`all`: every one, at shutdown).
    pub fn release_held(&mut self, all: bool) {
        if self.held.is_empty() {
            return;
        }
        let Some(e) = &self.endpoints else { return };
        let snap = e.snapshot();
        let mut ready = self.held.release(&snap, std::time::Instant::now(), all);
        for (flow, hook) in &mut ready {
            enrich_with(&snap, flow, *hook);
            self.names.observe_and_fill(&snap, flow);
        }
        drop(snap);
        for (flow, _) in ready {
            self.publish(flow);
        }
    }

    /// An enriched flow to the metrics, the flow buffer and the exporters.
    fn publish(&mut self, flow: Flow) {
        if let Some(m) = &self.metrics {
            m.process(&flow);
        }
        self.writer.push(&flow);
        self.exporters.push_flow(flow);
    }

    /// Periodic housekeeping: kernel counters to metrics and lost events into
    /// the streams, and expiry of the pairing tables.
    pub fn tick(&mut self, dp: Option<&Datapath>) {
        self.release_held(false);
        self.parser.expire(ktime_now_ns());
        self.report_evictions();
        self.maintain_names();
        self.report_skipped();
        self.report_ring_lost();
        self.forget_deleted_pods();
        // Well past the kernel's idle deletion of drop entries.
        if let Some(t) = SystemTime::now().checked_sub(Duration::from_secs(600)) {
            self.drops.expire(t);
        }
        let Some(dp) = dp else { return };
        self.sync_drop_addresses(dp);
        if let Some(m) = &self.metrics {
            let attached = dp.attached();
            for mode in [AttachMode::Tc, AttachMode::Xdp, AttachMode::XdpGeneric] {
                let n = attached.iter().filter(|a| a.mode == mode).count();
                m.set_attached_interfaces(mode, n as u64);
            }
        }
        match dp.counters() {
            Ok(c) => {
                let delta = c.events_lost.saturating_sub(self.kernel_lost_reported);
                if delta > 0 {
                    self.kernel_lost_reported = c.events_lost;
                    self.writer.report_kernel_lost(delta, None);
                    self.exporters
                        .report_lost(LostEventSource::PerfEventRingBuffer, delta);
                    if let Some(m) = &self.metrics {
                        m.add_lost_events(LostEventSource::PerfEventRingBuffer, delta);
                    }
                }
                if let Some(m) = &self.metrics {
                    let ring = dp.ring_fill();
                    m.set_ring_fill(ring.peak_used, ring.capacity);
                    m.set_datapath_totals(&DatapathTotals {
                        events: c.events_submitted,
                        events_lost: c.events_lost,
                        program_runs: c.packets,
                        full_path_runs: c.full_path_runs,
                    });
                }
                if c.full_path_missing > self.full_path_missing_warned {
                    self.full_path_missing_warned = c.full_path_missing;
                    warn!(
                        packets = c.full_path_missing,
                        "packets not accounted: a full-path program is not installed"
                    );
                }
            }
            Err(e) => warn!(error = %e, "reading datapath counters"),
        }
    }
}

impl Pipeline {
    /// Expires DNS names, forgets pods that left, updates the metrics.
    fn maintain_names(&mut self) {
        let now = SystemTime::now()
            .checked_sub(NAME_EXPIRY_GRACE)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
        self.names.expire(now);
        if let Some(e) = &self.endpoints {
            let snap = e.snapshot();
            if self.names_pods_version != Some(snap.version) {
                let keys: Vec<String> = snap
                    .local_pods()
                    .iter()
                    .map(|p| crate::endpoints::names::pod_key(p))
                    .collect();
                self.names
                    .retain_pods(&keys.iter().map(String::as_str).collect());
                self.names_pods_version = Some(snap.version);
            }
        }
        let stats = self.names.stats();
        if let Some(m) = &self.metrics {
            m.set_dns_name_cache(
                stats.entries,
                stats.evictions.saturating_sub(self.name_evictions_reported),
            );
        }
        self.name_evictions_reported = stats.evictions;
    }

    /// Adds the parser's new skips to `flowd_events_skipped_total`.
    fn report_skipped(&mut self) {
        let Some(m) = &self.metrics else { return };
        let s = self.parser.stats();
        let now = [
            s.non_ip,
            s.not_l7_incomplete,
            s.not_l7_malformed,
            s.not_l7_other,
        ];
        for ((n, seen), reason) in now
            .iter()
            .zip(self.skipped_reported.iter_mut())
            .zip(crate::metrics::SKIP_REASONS)
        {
            if *n > *seen {
                m.add_skipped_events(reason, *n - *seen);
                *seen = *n;
            }
        }
    }

    /// Adds what GetFlows readers lost in the flow buffer to
    /// `hubble_lost_events_total{source="hubble_ring_buffer"}`.
    fn report_ring_lost(&mut self) {
        let Some(m) = &self.metrics else { return };
        let total = self.writer.observer().stats().lost_ring_buffer_events;
        if total > self.ring_lost_reported {
            m.add_lost_events(
                LostEventSource::HubbleRingBuffer,
                total - self.ring_lost_reported,
            );
            self.ring_lost_reported = total;
        }
    }

    /// Removes the metric series of pods the endpoint store no longer has
    /// (deleted pods), at the first tick after the store saw the deletion.
    fn forget_deleted_pods(&mut self) {
        let (Some(m), Some(e)) = (&self.metrics, &self.endpoints) else {
            return;
        };
        let snap = e.snapshot();
        if self.pods_version == Some(snap.version) {
            return;
        }
        self.pods_version = Some(snap.version);
        let now = snap.pod_keys();
        drop(snap);
        for (ns, pod) in self.pods.difference(&now) {
            let removed = m.forget_pod(ns, pod);
            tracing::debug!(namespace = %ns, pod = %pod, series = removed, "pod deleted: its metric series are removed");
        }
        self.pods = now;
    }

    /// Adds the pairing tables' new evictions to `flowd_l7_pairing_evictions`.
    fn report_evictions(&mut self) {
        let Some(m) = &self.metrics else { return };
        let p = self.parser.stats().pairing;
        let now = [
            p.http_evicted_size,
            p.http_evicted_age,
            p.dns_evicted_size,
            p.dns_evicted_age,
        ];
        let labels = [
            ("http", "capacity"),
            ("http", "timeout"),
            ("dns", "capacity"),
            ("dns", "timeout"),
        ];
        for ((n, seen), (protocol, reason)) in now
            .iter()
            .zip(self.evictions_reported.iter_mut())
            .zip(labels)
        {
            if *n > *seen {
                m.add_l7_pairing_evictions(protocol, reason, *n - *seen);
                *seen = *n;
            }
        }
    }
}

/// Direction of a dropped packet: INGRESS when it was going to a pod of this
/// node, EGRESS when it came from one, unknown otherwise.
fn drop_direction(snap: &crate::endpoints::store::Snapshot, flow: &Flow) -> TrafficDirection {
    let local = |a: Option<&String>| {
        a.and_then(|s| s.parse().ok())
            .is_some_and(|ip| snap.is_local_pod(ip))
    };
    let ip = flow.ip.as_ref();
    if local(ip.map(|i| &i.destination)) {
        TrafficDirection::Ingress
    } else if local(ip.map(|i| &i.source)) {
        TrafficDirection::Egress
    } else {
        TrafficDirection::Unknown
    }
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// CLOCK_MONOTONIC in ns, the clock of bpf_ktime_get_ns().
fn ktime_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec()).unwrap_or(0)
    })
}

/// The datapath settings the configuration asks for.
pub fn datapath_config(c: &Config) -> DatapathConfig {
    DatapathConfig {
        interfaces: c.interfaces.clone(),
        ring_buffer_bytes: c.ring_buffer_bytes,
        flow_map_entries: c.flow_map_entries,
        aggregation_interval: aggregation_interval(c),
        l7_max_bytes: c.l7_max_bytes,
        drops: datapath::drops::DropsConfig {
            enabled: c.drops_enabled,
            ..Default::default()
        },
        l7_dns_ports: c.l7_dns_ports.clone(),
        watch_links: c.watch_links,
        // Hubble's events queue. Unlike Hubble's, it never drops: when it is
        // full the reader waits and the kernel ring buffer absorbs the
        // burst, or counts what it cannot take (perf_event_ring_buffer).
        channel_capacity: c.hubble_event_queue_size as usize,
        ..DatapathConfig::default()
    }
}

/// `monitor-aggregation` none reports every packet; the other levels report
/// new flows, flag changes and one update per `monitor-aggregation-interval`.
fn aggregation_interval(c: &Config) -> Duration {
    match c.monitor_aggregation {
        MonitorAggregation::None => Duration::ZERO,
        _ => c.monitor_aggregation_interval,
    }
}

/// The parser settings the configuration asks for.
pub fn parser_config(c: &Config) -> Result<ParserConfig, DaemonError> {
    let redact = RedactConfig {
        enabled: c.hubble_redact_enabled,
        http_url_query: c.hubble_redact_http_urlquery,
        http_userinfo: c.hubble_redact_http_userinfo,
        http_headers_allow: c.hubble_redact_http_headers_allow.clone(),
        http_headers_deny: c.hubble_redact_http_headers_deny.clone(),
    };
    Ok(ParserConfig {
        node_name: c.absolute_node_name(),
        http: HttpConfig::new(&c.http_headers_allow, redact)?,
        pairing: PairingLimits {
            max_connections: c.l7_pairing_entries as usize,
            max_age_ns: u64::try_from(c.l7_pairing_timeout.as_nanos()).unwrap_or(u64::MAX),
            ..PairingLimits::default()
        },
    })
}

/// Starts the endpoint store, its sources and the discovery of pod veths
/// (which tells enrichment which pod each observed interface belongs to).
fn start_endpoints(
    config: &Config,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Arc<EndpointStore>, DaemonError> {
    let store = EndpointStore::new(StoreConfig {
        node_name: config.node_name.clone(),
        cluster_name: config.cluster_name.clone(),
        ..StoreConfig::default()
    });
    if let Some(dir) = &config.manifests_dir {
        info!(dir = %dir.display(), "endpoints from manifests");
        tasks.push(tokio::spawn(
            store
                .clone()
                .run(Box::new(ManifestSource::new(dir.clone()))),
        ));
    }
    #[cfg(feature = "kube")]
    if config.kubernetes != crate::config::KubernetesWatch::Off {
        let scope = match config.kubernetes {
            crate::config::KubernetesWatch::All => crate::endpoints::kube::PodScope::All,
            _ => crate::endpoints::kube::PodScope::Node(config.node_name.clone()),
        };
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            match crate::endpoints::kube::KubeSource::from_env(scope).await {
                Ok(src) => store.run(Box::new(src)).await,
                Err(e) => warn!(error = %e, "Kubernetes endpoint source unavailable"),
            }
        }));
    }
    Ok(store)
}

/// Whether an endpoint source runs (then pod veths are attached as pods come
/// and go, even with no `flowd-interfaces`).
fn has_endpoint_source(config: &Config) -> bool {
    #[cfg(feature = "kube")]
    if config.kubernetes != crate::config::KubernetesWatch::Off {
        return true;
    }
    config.manifests_dir.is_some()
}

/// Attachment follows pods: discovers this node's pod veths (which also tells
/// enrichment which pod each observed interface belongs to) and, with a
/// datapath, attaches to new ones and detaches from those whose pod went
/// away, unless `flowd-interfaces` selects them anyway.
/// The returned receiver completes once the plan made after the sources'
/// first pod list is applied: the store knows those pods' veths and they are
/// attached.
fn follow_pods(
    store: Arc<EndpointStore>,
    attach: Option<datapath::AttachHandle>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<tokio::sync::oneshot::Receiver<()>, DaemonError> {
    let (conn, handle, _) = rtnetlink::new_connection()
        .map_err(|e| DaemonError::Endpoints(format!("opening rtnetlink: {e}")))?;
    let (listed_tx, listed) = tokio::sync::oneshot::channel();
    tasks.push(tokio::spawn(conn));
    tasks.push(tokio::spawn(async move {
        let mut listed_tx = Some(listed_tx);
        let mut plans = crate::endpoints::pod_veths::follow(store, handle, Duration::from_secs(5));
        while let Some(plan) = futures::StreamExt::next(&mut plans).await {
            let plan = match plan {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "discovering pod veths");
                    continue;
                }
            };
            if !plan.is_empty() {
                info!(
                    attach = plan.attach.len(),
                    detach = plan.detach.len(),
                    "pod veths changed"
                );
            }
            if let Some(h) = &attach {
                apply_attach_plan(h, &plan);
            }
            if plan.listing
                && let Some(tx) = listed_tx.take()
            {
                let _ = tx.send(());
            }
        }
    }));
    Ok(listed)
}

/// Applies one plan; failures are logged (the next resync or pod change
/// does not retry a veth the plan already counted as attached).
fn apply_attach_plan(h: &datapath::AttachHandle, plan: &crate::endpoints::pod_veths::AttachPlan) {
    for v in &plan.detach {
        if h.is_configured(&v.ifname) {
            continue;
        }
        if let Some(a) = h.detach(v.ifindex) {
            info!(ifname = %a.ifname, ifindex = a.ifindex, pod = %v.pod, "detached");
        }
    }
    for v in &plan.attach {
        match h.attach(v.ifindex, &v.ifname, AttachMode::Tc) {
            Ok(Some(a)) => info!(
                ifname = %a.ifname,
                ifindex = a.ifindex,
                mechanism = a.mechanism,
                pod = %v.pod,
                "attached"
            ),
            Ok(None) => {}
            Err(e) => warn!(error = %e, pod = %v.pod, "attaching to a pod veth"),
        }
    }
}

/// How often `flowd_flow_map_entries` is measured (a walk of the table).
const FLOW_MAP_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Keeps `flowd_flow_map_entries` / `_capacity` current. The walk runs on a
/// blocking thread so that the event pipeline never waits for it.
async fn sample_flow_map(fill: datapath::FlowMapFill, metrics: Arc<Metrics>) {
    let capacity = u64::from(fill.capacity());
    metrics.set_flow_map(0, capacity);
    let mut every = tokio::time::interval(FLOW_MAP_SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let f = fill.clone();
        match tokio::task::spawn_blocking(move || f.entries()).await {
            Ok(n) => metrics.set_flow_map(n, capacity),
            Err(e) => warn!(error = %e, "measuring the flow table"),
        }
    }
}

/// How long the daemon waits at start for the first pod list before it
/// processes events anyway (a Kubernetes API that does not answer).
const PODS_LISTED_WAIT: Duration = Duration::from_secs(10);

/// Runs the whole daemon until `shutdown` flips to true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), DaemonError> {
    run_with(config, Outputs::default(), shutdown).await
}

/// [`run`] with the `--print` / `--dump-flows-on-exit` outputs.
///
/// Shutdown, once `shutdown` flips, takes at most `flowd-shutdown-grace`:
/// the programs are detached and what is left in the ring goes through the
/// pipeline as usual; then the flow buffer is closed, so every follow stream
/// sends what it has not sent yet and ends with UNAVAILABLE "flowd is
/// shutting down"; the exporters flush; the servers finish their
/// connections. Whatever is still running when the grace period ends
/// (a collector that does not answer, a client that does not read, an idle
/// connection) is abandoned and the process exits.
pub async fn run_with(
    config: Config,
    outputs: Outputs,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let (observer, writer) = Observer::new(wiring::observer(&config))?;
    // NOT_SERVING until the datapath is attached and the first pod list is
    // in, and again from the moment shutdown begins.
    let (health, health_service) = HealthStatus::new().await;
    // The Observer API stays up while the datapath drains at shutdown (a
    // client can read the last flows, and health says NOT_SERVING); it stops
    // when this flips.
    let (api_stop, api_stopped) = watch::channel(false);
    let export_stats = ExportStats::default();
    let metrics = config.hubble_metrics_server.map(|_| {
        if let Some(handlers) = crate::metrics::eventless::describe(&config.hubble_metrics) {
            info!(
                %handlers,
                "hubble-metrics handlers with no events in flowd: their metrics exist and stay at zero"
            );
        }
        let mut m = Metrics::new(&wiring::metrics(&config));
        export_stats.register(m.registry_mut());
        Arc::new(m)
    });
    let exporters = wiring::exporters(&config, export_stats)?;
    let parser = Parser::new(parser_config(&config)?);
    // Servers stop gracefully on `shutdown`; background tasks are aborted.
    let mut tasks = Vec::new();
    let mut background = Vec::new();
    let endpoints = start_endpoints(&config, &mut background)?;
    let peers = crate::peer::PeerService::new(endpoints.clone(), wiring::peer(&config));
    let follow_store = endpoints.clone();
    let mut pipeline = Pipeline::new(parser, writer, metrics.clone(), Some(endpoints))
        .with_exporters(exporters)
        .with_name_cache(NameCacheConfig {
            max_entries: config.dns_name_cache_entries as usize,
            min_ttl: config.tofqdns_min_ttl,
        });

    if let (Some(addr), Some(m)) = (config.hubble_metrics_server, metrics.clone()) {
        let listener = crate::metrics::server::bind(addr)
            .await
            .map_err(|source| DaemonError::Metrics { addr, source })?;
        info!(%addr, "metrics server listening");
        let mut stop = shutdown.clone();
        tasks.push(tokio::spawn(crate::metrics::server::serve(
            m,
            listener,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
    }
    if config.enable_hubble
        && let Some(addr) = config.hubble_listen_address
    {
        let tls = wiring::observer_tls(&config)?;
        if tls.is_none() && !config.hubble_tls_client_ca_files.is_empty() {
            warn!("hubble-tls-client-ca-files is ignored: hubble-disable-tls is true");
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind { addr, source })?;
        info!(%addr, tls = tls.is_some(), mtls = tls.is_some() && !config.hubble_tls_client_ca_files.is_empty(), "Observer API listening");
        let mut stop = api_stopped.clone();
        let obs = observer.clone();
        // The peer service and gRPC health share the Observer API's server,
        // as in Cilium.
        let routes = tonic::service::Routes::new(obs.into_service())
            .add_service(peers.into_service())
            .add_service(health_service.clone());
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tasks.push(tokio::spawn(async move {
            let res = match tls {
                // Plain-text connections on the TLS port get health only
                // (kubelet's gRPC readiness probe).
                Some(tls) => {
                    let plain = tonic::service::Routes::new(health_service);
                    crate::observer::serve_routes_tls_and_plain(
                        routes, plain, listener, tls, stopped,
                    )
                    .await
                }
                None => crate::observer::serve_routes(routes, listener, None, stopped).await,
            };
            if let Err(e) = res {
                warn!(error = %e, "Observer API stopped");
            }
        }));
    }

    let (mut dp, mut events): (Option<Datapath>, mpsc::Receiver<DatapathEvent>) = if config
        .interfaces
        .is_empty()
        && !has_endpoint_source(&config)
    {
        warn!(
            "no interfaces configured (flowd-interfaces) and no endpoint source: observing nothing"
        );
        (None, mpsc::channel(1).1)
    } else {
        let (dp, rx) = Datapath::start(datapath_config(&config)).await?;
        (Some(dp), rx)
    };
    let printer = outputs.print.map(|format| {
        let names = dp.as_ref().map(Datapath::interface_names);
        let p = crate::print_mode::Printer::new(format, names);
        p.ready(&dp.as_ref().map(Datapath::attached).unwrap_or_default());
        p
    });
    let on_event = |pipeline: &mut Pipeline, ev: DatapathEvent| {
        if let Some(p) = &printer {
            p.event(&ev);
        }
        pipeline.on_event(ev);
    };

    if let (Some(dp), Some(m)) = (dp.as_ref(), metrics.clone()) {
        background.push(tokio::spawn(sample_flow_map(dp.flow_map_fill(), m)));
    }
    let mut pods_listed = Some(follow_pods(
        follow_store,
        dp.as_ref().map(Datapath::attach_handle),
        &mut background,
    )?);
    // Events wait (in the channel and the ring) until enrichment knows which
    // interfaces are pod veths: a flow enriched before that has no
    // direction or observation point, and the attachments of configured
    // globs (done by now) are reported only after it.
    if has_endpoint_source(&config) {
        tokio::select! {
            r = tokio::time::timeout(PODS_LISTED_WAIT, wait_listed(&mut pods_listed)) => {
                match r {
                    Ok(()) => {
                        info!("first pod list attached: serving");
                        health.set(true).await;
                    }
                    Err(_) => warn!(
                        waited = ?PODS_LISTED_WAIT,
                        "no pod list from the endpoint sources yet: flows on pod veths have no direction until it comes"
                    ),
                }
            }
            () = shutting_down(&mut shutdown) => {}
        }
    } else {
        // Nothing to wait for: the configured interfaces are attached.
        pods_listed = None;
        health.set(true).await;
    }

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => on_event(&mut pipeline, ev),
                None if dp.is_some() => break,
                None => {}
            },
            _ = tick.tick() => pipeline.tick(dp.as_ref()),
            () = wait_listed(&mut pods_listed), if pods_listed.is_some() => {
                info!("first pod list attached: serving");
                health.set(true).await;
            }
            () = shutting_down(&mut shutdown) => break,
        }
    }
    health.set(false).await;
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    // Detach, let the reader take what is left in the ring, and keep taking
    // events meanwhile: nothing observed is lost at shutdown.
    if let Some(dp) = dp.as_mut() {
        let mut done = std::pin::pin!(tokio::time::timeout_at(deadline, dp.shutdown()));
        loop {
            tokio::select! {
                r = &mut done => {
                    if r.is_err() {
                        warn!("the datapath did not drain within flowd-shutdown-grace; the rest of the ring is lost");
                    }
                    break;
                }
                Some(ev) = events.recv() => on_event(&mut pipeline, ev),
            }
        }
    }
    while let Ok(ev) = events.try_recv() {
        on_event(&mut pipeline, ev);
    }
    pipeline.release_held(true);
    pipeline.tick(dp.as_ref());
    // Every observed flow is in the buffer: follow streams can end.
    pipeline.close_streams();
    let dumped = match &outputs.dump_flows_on_exit {
        Some(path) => crate::print_mode::write_dump(dp.as_ref(), path)
            .map_err(|e| DaemonError::Dump(crate::cli::error_line(&e))),
        None => Ok(()),
    };
    drop(dp);
    // Everything observed is in the buffer and the follow streams are
    // ending: end the health Watch streams and stop the API (it stayed up
    // while the datapath drained, answering NOT_SERVING).
    health.close().await;
    let _ = api_stop.send(true);
    for t in background {
        t.abort();
    }
    // Write out what the exporters hold; a collector that is down gets the
    // rest of the grace period, then what is left is counted as dropped.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let flushed = tokio::time::timeout_at(deadline, pipeline.take_exporters().shutdown(left));
    if flushed.await.is_err() {
        warn!("export queues not flushed within flowd-shutdown-grace; the rest is lost");
    }
    let servers = futures::future::join_all(tasks.iter_mut());
    if tokio::time::timeout_at(deadline, servers).await.is_err() {
        warn!(
            grace = %humantime::format_duration(config.shutdown_grace),
            "connections still open at the end of flowd-shutdown-grace (idle clients or clients that do not read); closing them"
        );
        for t in &tasks {
            t.abort();
        }
    }
    info!("flowd stopped");
    dumped
}

/// Completes when `shutdown` is (or becomes) true; holds no watch borrow
/// (a select arm that awaits must not keep one alive).
async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Completes when the daemon's first pod list is attached, and then sets
/// `listed` to None; pending while it is None or when the discovery task
/// ended without one (flowd then stays NOT_SERVING: its pods are not
/// observed).
async fn wait_listed(listed: &mut Option<tokio::sync::oneshot::Receiver<()>>) {
    let Some(rx) = listed.as_mut() else {
        return std::future::pending().await;
    };
    let r = rx.await;
    *listed = None;
    if r.is_err() {
        warn!("pod veth discovery ended before the first pod list: staying NOT_SERVING");
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::L7Record;
    use crate::metrics::MetricsOptions;
    use crate::observer::ObserverConfig;
    use flowd_common::{FAMILY_IPV4, FlowKey, L7_HTTP_REQUEST, PROTO_TCP};

    #[test]
    fn pairing_evictions_reach_the_metrics() {
        let (_obs, writer) = Observer::new(ObserverConfig::default()).expect("observer");
        let metrics = Arc::new(Metrics::new(&MetricsOptions::default()));
        let parser = Parser::new(ParserConfig {
            pairing: PairingLimits {
                max_connections: 1,
                ..PairingLimits::default()
            },
            ..ParserConfig::default()
        });
        let mut p = Pipeline::new(parser, writer, Some(metrics.clone()), None);
        // Three unanswered requests on three connections, room for one:
        // the first two are evicted for capacity.
        for port in [40_001u16, 40_002, 40_003] {
            let key = FlowKey {
                family: FAMILY_IPV4,
                protocol: PROTO_TCP,
                src_port: port,
                dst_port: 80,
                ..FlowKey::default()
            };
            let rec = L7Record::captured(key, L7_HTTP_REQUEST, 1, 1, b"GET / HTTP/1.1\r\n\r\n");
            p.on_event(DatapathEvent::L7(datapath::L7Event {
                time: SystemTime::now(),
                record: rec,
            }));
        }
        p.tick(None);
        p.tick(None); // reported once, not again
        let text = metrics.encode_prometheus();
        // The last request also expires by age at tick (its kernel time is
        // made up): series order is not fixed, so pick the capacity one.
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("flowd_l7_pairing_evictions") && l.contains("reason=\"capacity\"")
            })
            .unwrap_or_default();
        assert!(
            line.contains("protocol=\"http\"") && line.contains("reason=\"capacity\""),
            "{text}"
        );
        assert!(line.ends_with(" 2"), "{line}");
    }

    fn flow_record(ifindex: u32, direction: u8) -> DatapathEvent {
        let mut event = flowd_common::FlowEvent::default();
        event.key.family = FAMILY_IPV4;
        event.key.protocol = flowd_common::PROTO_UDP;
        event.key.ifindex = ifindex;
        event.key.direction = direction;
        event.header.kind = flowd_common::EV_NEW_FLOW;
        DatapathEvent::Flow(datapath::FlowRecord {
            kind: datapath::FlowEventKind::NewFlow,
            time: SystemTime::now(),
            event,
        })
    }

    /// Flows of an interface the store does not know wait; an XDP
    /// attachment makes its interface an uplink, whose flows do not.
    #[test]
    fn unknown_interfaces_wait_uplinks_do_not() {
        let (obs, writer) = Observer::new(ObserverConfig::default()).expect("observer");
        let store = EndpointStore::new(StoreConfig::default());
        store.apply(crate::endpoints::Update::Replace {
            kind: crate::endpoints::Kind::Pod,
            objects: vec![],
        });
        let mut p = Pipeline::new(
            Parser::new(ParserConfig::default()),
            writer,
            None,
            Some(store),
        );
        let seen = || obs.stats().seen_flows;
        p.on_event(flow_record(7, flowd_common::DIR_INGRESS));
        assert_eq!(seen(), 0, "held: interface 7 is unknown");
        p.on_event(DatapathEvent::Attached(datapath::AttachedInterface {
            ifindex: 9,
            ifname: "eth9".into(),
            mode: AttachMode::Xdp,
            programs: vec![],
            mechanism: "xdp-link",
        }));
        p.on_event(flow_record(9, flowd_common::DIR_INGRESS));
        assert_eq!(seen(), 1, "the uplink's flow passes");
        p.release_held(true);
        assert_eq!(seen(), 2, "released at shutdown");
    }
}
