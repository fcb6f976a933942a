//! The event path of the daemon: one task owns the parser (its pairing
//! tables need no lock) and turns every datapath event into flows —
//! parser → enrichment (held until the interface is known) → published to
//! the metrics, the flow buffer and the exporters side by side — and keeps
//! the periodic work: kernel counters and losses into the streams and the
//! metrics, pairing and name-cache expiry, the drop program's pod addresses.
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use flowd_proto::flow::{Flow, LostEventSource, TrafficDirection};
use tracing::{info, warn};

use crate::{
    datapath::{self, Datapath, DatapathEvent},
    endpoints::{
        EndpointStore, Hook,
        enrich::enrich_with,
        hold::Holding,
        names::{NameCache, NameCacheConfig},
    },
    export::{ExportStats, Exporters},
    metrics::{DatapathTotals, Http2Lost, Http2Walks, Metrics},
    observer::FlowWriter,
    options::interfaces::AttachMode,
    parser::Parser,
};

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
    /// HTTP/2 parser counters already added to the metrics.
    http2_reported: crate::parser::H2Stats,
    /// Pods the metrics may have series of, and the snapshot they are from:
    /// a pod that leaves the store has its series removed.
    pods: std::collections::BTreeSet<(String, String)>,
    pods_version: Option<u64>,
}

/// When a batch of events is handled: the clocks are read once per batch
/// (the ring reader hands over up to 1,024 records at a time), not per flow.
#[derive(Clone, Copy)]
struct Now {
    instant: Instant,
    wall: SystemTime,
}

impl Now {
    fn read() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }
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
            http2_reported: crate::parser::H2Stats::default(),
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

    /// Handles one datapath event (see [`Pipeline::on_events`]).
    pub fn on_event(&mut self, ev: DatapathEvent) {
        self.on_events(std::iter::once(ev));
    }

    /// Handles a batch of datapath events, in order, as one unit: one clock
    /// read, and the follow streams woken once when all of its flows are in
    /// the buffer. Never fails: input that gives no flow is counted by the
    /// parser and skipped, so one bad record loses nothing else.
    pub fn on_events(&mut self, events: impl IntoIterator<Item = DatapathEvent>) {
        let now = Now::read();
        self.release_held_at(false, now);
        for ev in events {
            self.handle(ev, now);
        }
        self.writer.wake_readers();
    }

    fn handle(&mut self, ev: DatapathEvent, now: Now) {
        match ev {
            DatapathEvent::Flow(r) => {
                if let Some(flow) = self.parser.l34_flow(&r.event, unix_ns(r.time)) {
                    self.emit(flow, r.event.key.direction, now);
                }
            }
            DatapathEvent::L7(e) => {
                if let Ok(flow) = self.parser.l7_flow(&e.record, unix_ns(e.time)) {
                    self.emit(flow, e.record.key.direction, now);
                }
            }
            DatapathEvent::H2(e) => {
                for (flow, direction) in self.parser.h2_flows(&e.record, unix_ns(e.time)) {
                    self.emit(flow, direction, now);
                }
            }
            DatapathEvent::Drop(r) => self.on_drop(&r, now),
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
    fn on_drop(&mut self, r: &datapath::DropRecord, now: Now) {
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
        self.publish(flow, now);
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

    fn emit(&mut self, mut flow: Flow, direction: u8, now: Now) {
        let hook = Hook::from_kernel(direction);
        if let Some(e) = &self.endpoints {
            let snap = e.snapshot();
            match self.held.offer(&snap, flow, hook, || now.instant) {
                Some(f) => flow = f,
                None => return,
            }
            enrich_with(&snap, &mut flow, hook);
            self.names.observe_and_fill(&snap, &mut flow);
        }
        self.publish(flow, now);
    }

    /// Sends the held flows that may go (`all`: every one, at shutdown).
    pub fn release_held(&mut self, all: bool) {
        self.release_held_at(all, Now::read());
        self.writer.wake_readers();
    }

    /// [`Pipeline::release_held`] without waking the streams (the caller does).
    fn release_held_at(&mut self, all: bool, now: Now) {
        if self.held.is_empty() {
            return;
        }
        let Some(e) = &self.endpoints else { return };
        let snap = e.snapshot();
        let mut ready = self.held.release(&snap, now.instant, all);
        for (flow, hook) in &mut ready {
            enrich_with(&snap, flow, *hook);
            self.names.observe_and_fill(&snap, flow);
        }
        drop(snap);
        for (flow, _) in ready {
            self.publish(flow, now);
        }
    }

    /// An enriched flow to the metrics, the flow buffer and the exporters.
    /// The streams are woken by the caller, once per batch.
    fn publish(&mut self, flow: Flow, now: Now) {
        if let Some(m) = &self.metrics {
            m.process_at(&flow, now.instant);
        }
        self.writer.append(&flow, now.instant, now.wall);
        self.exporters.push_flow(flow);
    }

    /// Periodic housekeeping: kernel counters to metrics and lost events into
    /// the streams, and expiry of the pairing tables.
    pub fn tick(&mut self, dp: Option<&Datapath>) {
        self.release_held(false);
        let ended = self.parser.h2_ended(ktime_now_ns());
        if !ended.is_empty() {
            let now = Now::read();
            for (flow, direction) in ended {
                self.emit(flow, direction, now);
            }
            self.writer.wake_readers();
        }
        self.parser.expire(ktime_now_ns());
        self.report_evictions();
        self.maintain_names();
        self.report_skipped();
        self.report_http2();
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
                        http2_events: c.http2_events,
                        http2_walks: Http2Walks {
                            client_preface: c.http2_starts_preface,
                            server_settings: c.http2_starts_settings,
                            resync: c.http2_resyncs,
                        },
                        http2_lost: Http2Lost {
                            gap: c.http2_lost_gap,
                            evicted: c.http2_lost_evicted,
                            ring_full: c.http2_lost_ring,
                            step_limit: c.http2_lost_limit,
                        },
                        http2_concurrent: c.http2_concurrent,
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

    /// The HTTP/2 parser's new partial messages, losses, skips and
    /// evictions to `flowd_http2_*`.
    fn report_http2(&mut self) {
        let Some(m) = &self.metrics else { return };
        let now = self.parser.stats().http2;
        m.report_http2(&now, &self.http2_reported);
        self.http2_reported = now;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::L7Record;
    use crate::endpoints::StoreConfig;
    use crate::metrics::MetricsOptions;
    use crate::observer::Observer;
    use crate::observer::ObserverConfig;
    use crate::parser::{PairingLimits, ParserConfig};
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

    /// A gRPC connection joined after its first call: the three calls after
    /// it refer to compression-table entries flowd never saw (six partial
    /// messages), and the kernel flagged the join on both directions.
    #[test]
    fn http2_partial_messages_and_losses_reach_the_metrics() {
        use crate::parser::http2::testkit::{Call, Conversation, Framing, Rng, Segmenting};
        let (_obs, writer) = Observer::new(ObserverConfig::default()).expect("observer");
        let metrics = Arc::new(Metrics::new(&MetricsOptions::default()));
        let mut p = Pipeline::new(
            Parser::new(ParserConfig::default()),
            writer,
            Some(metrics.clone()),
            None,
        );
        let calls: Vec<Call> = (0..4)
            .map(|i| Call::unary(&format!("/shop.Inventory/Reserve{i}"), 0))
            .collect();
        let conv = Conversation::new(&calls, &Framing::default(), &mut Rng::new(1));
        let join = conv.expected[1].request_send;
        let (c, s) = crate::parser::http2::testkit::keys(4, 40_000);
        let recs = crate::parser::http2::testkit::records(
            &conv.wire,
            c,
            s,
            &Segmenting::default(),
            &mut Rng::new(1),
        );
        let mut started = [false; 2];
        for (i, mut r) in recs {
            if i < join {
                continue;
            }
            let side = usize::from(r.key.src_port != 40_000);
            if !started[side] {
                r.flags = flowd_common::H2_F_START | flowd_common::H2_F_LOST;
                started[side] = true;
            }
            p.on_event(DatapathEvent::H2(datapath::H2Event {
                time: SystemTime::now(),
                record: r,
            }));
        }
        p.tick(None);
        p.tick(None); // reported once, not again
        let text = metrics.encode_prometheus();
        let value = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(value("flowd_http2_partial_messages_total "), "6", "{text}");
        assert_eq!(
            value("flowd_http2_walk_losses_total{detected_by=\"kernel\"}"),
            "2",
            "{text}"
        );
        // The records' kernel times are made up (a second after boot): the
        // connection is idle past flowd-l7-pairing-timeout at the tick.
        assert_eq!(value("flowd_http2_connections "), "0", "{text}");
        assert_eq!(
            value("flowd_http2_connections_evicted_total{reason=\"timeout\"}"),
            "1",
            "{text}"
        );
        assert_eq!(value("flowd_http2_streams_evicted_total "), "0", "{text}");
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
