//! Loading and attaching the eBPF programs, and reading their events.
//!
//! ```text
//! Datapath::start(cfg) ─ loader: load object, size maps, write CONFIG, load programs
//!                      ├ attach: TCX / clsact / XDP per interface (names or globs)
//!                      ├ linkwatch: rtnetlink RTNLGRP_LINK → attach new / forget removed
//!                      └ ring: RingBuf via AsyncFd → decode → DatapathEvent channel
//! ```
//! All attachments are bpf_links owned by this process (TCX on kernels ≥ 6.6,
//! XDP links), so the kernel removes them when the process dies, even by
//! SIGKILL. Legacy clsact filters (older kernels) are reclaimed at start.
mod attach;
mod btf;
pub mod cache;
pub mod clock;
pub mod decode;
pub mod drops;
mod linkwatch;
mod loader;
pub use loader::{
    FULL_PATHS_TC, FULL_PATHS_XDP, FullPaths, flow_cache_entries, install_full_paths,
};
mod ring;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use flowd_common::{CacheSlot, FlowKey, FlowStats};
use tokio::{sync::mpsc, task::JoinHandle};

pub use attach::{AttachedInterface, Attacher};
pub use decode::{DecodeError, FlowEventKind, H2Chunk, H2Record, L7Record};

use crate::options::interfaces::{AttachMode, InterfaceSpec};

use clock::KernelClock;

/// The eBPF object built by flowd/build.rs (empty when built with FLOWD_SKIP_EBPF=1).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowd"));

/// Which programs of the object to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgramSet {
    /// flowd_tc_ingress / flowd_tc_egress / flowd_xdp.
    #[default]
    Flowd,
    /// The empty pass-through programs, the baseline of benchmarks.
    BenchEmpty,
}

/// Size of the kernel's L7_PORTS map: distinct extra DNS ports and HTTP/2
/// ports together.
pub const MAX_L7_PORTS: usize = flowd_common::L7_PORTS_MAX as usize;

#[derive(Debug, Clone)]
pub struct DatapathConfig {
    pub interfaces: Vec<InterfaceSpec>,
    /// Size of the EVENTS ring buffer: a power of two and a multiple of the page size.
    pub ring_buffer_bytes: u32,
    pub flow_map_entries: u32,
    /// Minimum time between two update events of one flow; zero = every packet.
    pub aggregation_interval: Duration,
    /// Most L7 payload bytes copied per event (0 disables L7 capture).
    pub l7_max_bytes: u32,
    /// Ports whose UDP/TCP payloads are parsed as DNS besides 53.
    pub l7_dns_ports: Vec<u16>,
    /// TCP ports whose connections seen from the middle are walked as
    /// HTTP/2 (with the DNS ports, at most [`MAX_L7_PORTS`] distinct ports).
    pub l7_http2_ports: Vec<u16>,
    /// Entries of the kernel's HTTP/2 walk table (`H2_WALK`): one per
    /// HTTP/2 connection direction and hook.
    pub http2_walk_entries: u32,
    pub programs: ProgramSet,
    /// Capacity of the event channel to the rest of the daemon. When it is
    /// full the reader waits and the kernel counts what it cannot submit.
    pub channel_capacity: usize,
    /// Watch rtnetlink for interfaces that appear or disappear later.
    pub watch_links: bool,
    /// The skb:kfree_skb drop program (see [`drops`]).
    pub drops: drops::DropsConfig,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            ring_buffer_bytes: 1 << 20,
            flow_map_entries: 65_536,
            aggregation_interval: Duration::from_secs(5),
            l7_max_bytes: 512,
            l7_dns_ports: Vec::new(),
            l7_http2_ports: Vec::new(),
            http2_walk_entries: 32_768,
            programs: ProgramSet::Flowd,
            channel_capacity: 8192,
            watch_links: true,
            drops: drops::DropsConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid datapath configuration: {0}")]
    InvalidConfig(String),
    #[error(
        "the embedded eBPF object is empty: flowd was built with FLOWD_SKIP_EBPF=1; rebuild without it"
    )]
    EmptyObject,
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("loading eBPF program {program} into the kernel: {source}")]
    ProgramLoad {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching {program} to interface {interface} ({mode}): {source}")]
    Attach {
        interface: String,
        program: &'static str,
        mode: AttachMode,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("rtnetlink: {0}")]
    Netlink(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the datapath hands to the rest of the daemon.
#[derive(Debug, Clone)]
pub enum DatapathEvent {
    Flow(FlowRecord),
    L7(L7Event),
    H2(H2Event),
    Drop(DropRecord),
    /// Programs were attached to an interface (at start or when it appeared).
    Attached(AttachedInterface),
    /// An interface went away or was detached.
    Detached {
        ifindex: u32,
        ifname: String,
    },
}

#[derive(Debug, Clone)]
pub struct FlowRecord {
    pub kind: FlowEventKind,
    /// Wall-clock time of `event.header.ts_ns`.
    pub time: SystemTime,
    /// The record as the kernel wrote it (length-checked).
    pub event: flowd_common::FlowEvent,
}

#[derive(Debug, Clone)]
pub struct L7Event {
    pub time: SystemTime,
    pub record: L7Record,
}

#[derive(Debug, Clone)]
pub struct H2Event {
    /// Wall-clock time of `record.header.ts_ns`.
    pub time: SystemTime,
    pub record: H2Record,
}

/// A kernel drop report: the running total of one flow and reason
/// ([`drops::DropCounter`] turns totals into counts).
#[derive(Debug, Clone)]
pub struct DropRecord {
    /// Wall-clock time of the report (ring) or of the last drop (sweep).
    pub time: SystemTime,
    /// Submitting CPU; u32::MAX for records of the user-space sweep.
    pub cpu: u32,
    pub key: FlowKey,
    /// enum skb_drop_reason value and its name on the running kernel.
    pub reason: u32,
    pub reason_name: String,
    pub total: u64,
    /// Generation of the kernel's map entry.
    pub first_seen_ns: u64,
    /// Name of skb->dev (possibly in a pod's network namespace); "" if none.
    pub ifname: String,
}

/// Sums over CPUs of the kernel's COUNTERS, plus the reader's own counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub events_submitted: u64,
    pub events_lost: u64,
    pub packets: u64,
    pub packets_other: u64,
    pub packets_truncated: u64,
    pub flow_map_errors: u64,
    pub l7_events: u64,
    pub drops_seen: u64,
    pub drop_map_errors: u64,
    /// Packets not accounted because a full-path program was not installed.
    pub full_path_missing: u64,
    /// Program runs that were not flow-cache hits (took the full path).
    pub full_path_runs: u64,
    /// HTTP/2 walker: EV_H2 records sent.
    pub http2_events: u64,
    /// HTTP/2 walks started at a connection's start (client preface,
    /// server SETTINGS) and in the middle (connections seen from the
    /// middle on an HTTP/2 port, walks found again after a loss).
    pub http2_starts_preface: u64,
    pub http2_starts_settings: u64,
    pub http2_resyncs: u64,
    /// HTTP/2 walks lost, by cause (see flowd_common::CNT_H2_LOST_GAP).
    pub http2_lost_gap: u64,
    pub http2_lost_evicted: u64,
    pub http2_lost_ring: u64,
    pub http2_lost_limit: u64,
    /// HTTP/2 packets left because another CPU was walking their direction.
    pub http2_concurrent: u64,
    /// Records read from the ring buffer by user space.
    pub records_read: u64,
    /// Records that were short or of an unknown kind (skipped).
    pub records_malformed: u64,
}

/// Adds the counts still pending in flow-cache slots (of every CPU) to the
/// flows they belong to. A slot whose flow is not in `flows` (evicted) is
/// ignored: the kernel counts it as a flow-map error when it flushes.
pub fn add_pending(flows: &mut [(FlowKey, FlowStats)], slots: impl IntoIterator<Item = CacheSlot>) {
    let index: std::collections::HashMap<FlowKey, usize> = flows
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (*k, i))
        .collect();
    for slot in slots {
        // An emptied slot keeps its key but has nothing pending.
        if slot.pending_packets == 0 {
            continue;
        }
        if let Some(&i) = index.get(&slot.key) {
            let s = &mut flows[i].1;
            s.packets = s.packets.wrapping_add(slot.pending_packets.into());
            s.bytes = s.bytes.wrapping_add(slot.pending_bytes.into());
            s.last_seen_ns = s.last_seen_ns.max(slot.last_seen_ns);
        }
    }
}

/// One entry of the FLOWS map, with times converted to wall-clock.
#[derive(Debug, Clone)]
pub struct FlowEntry {
    pub key: FlowKey,
    pub stats: FlowStats,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
}

#[derive(Debug, Default)]
pub(crate) struct ReaderStats {
    pub records_read: AtomicU64,
    pub records_malformed: AtomicU64,
    /// Most bytes found waiting in the ring since [`Datapath::ring_fill`].
    pub ring_used_peak: AtomicU64,
}

impl ReaderStats {
    pub fn note_ring_used(&self, bytes: u64) {
        self.ring_used_peak.fetch_max(bytes, Ordering::Relaxed);
    }
}

/// How full the kernel → user ring buffer got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFill {
    /// Most bytes waiting in the ring since the previous call (and now).
    pub peak_used: u64,
    /// The ring's size in bytes.
    pub capacity: u64,
}

pub(crate) struct Maps {
    pub flows: BpfHashMap<MapData, FlowKey, FlowStats>,
    pub counters: PerCpuArray<MapData, u64>,
    pub flow_cache: Option<cache::FlowCache>,
}

/// How long [`Datapath::shutdown`] waits for the reader's last records.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The loaded and attached datapath. Dropping it detaches everything.
pub struct Datapath {
    attacher: Arc<Mutex<Attacher>>,
    maps: Arc<Maps>,
    reader_stats: Arc<ReaderStats>,
    ring: Arc<ring::Positions>,
    ring_capacity: u64,
    clock: Arc<KernelClock>,
    /// The ring reader and what tells it to take the last records and stop.
    reader: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
    tasks: Vec<JoinHandle<()>>,
    drops: Option<Arc<Mutex<drops::DropMaps>>>,
    flow_map_capacity: u32,
    /// The queue to the consumer, without keeping it open.
    queue: mpsc::WeakSender<DatapathEvent>,
}

/// Reads how full the queue between the ring reader and the consumer of
/// [`Datapath::start`]'s receiver is, from any thread.
#[derive(Clone)]
pub struct EventQueueFill(mpsc::WeakSender<DatapathEvent>);

impl EventQueueFill {
    /// (events waiting now, the queue's size); `None` once the datapath
    /// has stopped sending.
    pub fn get(&self) -> Option<(usize, usize)> {
        let tx = self.0.upgrade()?;
        Some((tx.max_capacity() - tx.capacity(), tx.max_capacity()))
    }
}

/// Reads how full the kernel flow table is, from any thread.
#[derive(Clone)]
pub struct FlowMapFill {
    maps: Arc<Maps>,
    capacity: u32,
}

impl FlowMapFill {
    /// Entries in FLOWS now. The kernel keeps no count of an LRU hash map's
    /// entries, so this walks its keys: one syscall per entry (tens of ms for
    /// a full default table); call it from a blocking thread, not per event.
    /// Keys evicted during the walk can make the kernel restart it, so the
    /// count is capped at the capacity.
    pub fn entries(&self) -> u64 {
        let mut n = 0u64;
        for k in self.maps.flows.keys() {
            if k.is_ok() {
                n += 1;
            }
            if n >= u64::from(self.capacity) {
                break;
            }
        }
        n
    }

    /// The table's configured size (`flowd-flow-map-entries`).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }
}

impl Datapath {
    /// Loads the programs, attaches them to every interface that matches now,
    /// then watches for new ones and streams decoded events into the receiver.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn start(
        cfg: DatapathConfig,
    ) -> Result<(Self, mpsc::Receiver<DatapathEvent>), Error> {
        validate(&cfg)?;
        let mut loaded = loader::load(&cfg)?;
        // Drops are an addition to flows: without them flowd still observes.
        let drop_maps = match drops::setup(&mut loaded.ebpf, &cfg.drops, cfg.aggregation_interval) {
            Ok(m) => m.map(|m| Arc::new(Mutex::new(m))),
            Err(e) => {
                tracing::warn!(error = %e, "kernel drop reporting (skb:kfree_skb) unavailable");
                None
            }
        };
        let (tx, rx) = mpsc::channel(cfg.channel_capacity.max(1));
        let queue = tx.downgrade();
        let clock = Arc::new(KernelClock::new());
        let reader_stats = Arc::new(ReaderStats::default());
        let attacher = Arc::new(Mutex::new(Attacher::new(
            loaded.ebpf,
            cfg.programs,
            cfg.interfaces.clone(),
        )?));
        let mut tasks = Vec::new();
        let (stop_reader, stopped) = tokio::sync::oneshot::channel();
        let (reader, ring) = ring::spawn(
            loaded.events,
            tx.clone(),
            clock.clone(),
            reader_stats.clone(),
            stopped,
        )?;
        if let Some(m) = &drop_maps {
            tasks.push(drops::spawn_sweep(
                m.clone(),
                tx.clone(),
                clock.clone(),
                cfg.aggregation_interval,
            ));
        }
        // Subscribe before listing existing links so that none is missed in between.
        let nl = linkwatch::open(cfg.watch_links)?;
        let links = nl.list_links().await?;
        for (ifindex, ifname) in &links {
            let attached = lock(&attacher).attach_if_matching(*ifindex, ifname)?;
            if let Some(a) = attached {
                // The receiver is not polled yet; never block start on it.
                let _ = tx.try_send(DatapathEvent::Attached(a));
            }
        }
        report_absent(&cfg.interfaces, links.values(), cfg.watch_links);
        if cfg.watch_links {
            tasks.push(linkwatch::spawn(nl, attacher.clone(), tx));
        } else {
            drop(nl);
        }
        Ok((
            Self {
                attacher,
                maps: Arc::new(loaded.maps),
                reader_stats,
                ring,
                ring_capacity: u64::from(cfg.ring_buffer_bytes),
                clock,
                reader: Some((stop_reader, reader)),
                tasks,
                drops: drop_maps,
                flow_map_capacity: cfg.flow_map_entries,
                queue,
            },
            rx,
        ))
    }

    /// The most bytes that waited in the ring buffer since the previous call
    /// (the reader notes the fill before each read), and its size.
    pub fn ring_fill(&self) -> RingFill {
        let peak = self.reader_stats.ring_used_peak.swap(0, Ordering::Relaxed);
        RingFill {
            peak_used: peak.max(self.ring.used()),
            capacity: self.ring_capacity,
        }
    }

    /// The addresses (pod IPs) whose drops are reported; replaces the set.
    /// A no-op when the drop program is off.
    pub fn set_drop_addresses(&self, addrs: &[std::net::IpAddr]) -> Result<(), Error> {
        match &self.drops {
            Some(m) => m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_addresses(addrs),
            None => Ok(()),
        }
    }

    /// Interfaces with programs attached now.
    pub fn attached(&self) -> Vec<AttachedInterface> {
        lock(&self.attacher).attached()
    }

    /// A handle that tells how many events wait for the consumer.
    pub fn event_queue_fill(&self) -> EventQueueFill {
        EventQueueFill(self.queue.clone())
    }

    /// A handle that measures the kernel flow table's fill.
    pub fn flow_map_fill(&self) -> FlowMapFill {
        FlowMapFill {
            maps: self.maps.clone(),
            capacity: self.flow_map_capacity,
        }
    }

    /// Per-CPU kernel counters summed, plus the reader's counts.
    pub fn counters(&self) -> Result<Counters, Error> {
        let sum = |idx: u32| -> Result<u64, Error> {
            let v = self.maps.counters.get(&idx, 0).map_err(|e| Error::Map {
                map: flowd_common::names::MAP_COUNTERS,
                source: Box::new(e),
            })?;
            Ok(v.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
        };
        use flowd_common::*;
        Ok(Counters {
            events_submitted: sum(CNT_EVENTS_SUBMITTED)?,
            events_lost: sum(CNT_EVENTS_LOST)?,
            packets: sum(CNT_PACKETS)?.wrapping_add(self.pending_runs()),
            packets_other: sum(CNT_PACKETS_OTHER)?,
            packets_truncated: sum(CNT_PACKETS_TRUNCATED)?,
            flow_map_errors: sum(CNT_FLOW_MAP_ERRORS)?,
            l7_events: sum(CNT_L7_EVENTS)?,
            drops_seen: sum(CNT_DROPS_SEEN)?,
            drop_map_errors: sum(CNT_DROP_MAP_ERRORS)?,
            full_path_missing: sum(CNT_FULL_PATH_MISSING)?,
            full_path_runs: sum(CNT_FULL_PATH_RUNS)?,
            http2_events: sum(CNT_H2_EVENTS)?,
            http2_starts_preface: sum(CNT_H2_START_PREFACE)?,
            http2_starts_settings: sum(CNT_H2_START_SETTINGS)?,
            http2_resyncs: sum(CNT_H2_SYNCS)?,
            http2_lost_gap: sum(CNT_H2_LOST_GAP)?,
            http2_lost_evicted: sum(CNT_H2_LOST_EVICTED)?,
            http2_lost_ring: sum(CNT_H2_LOST_RING)?,
            http2_lost_limit: sum(CNT_H2_LOST_LIMIT)?,
            http2_concurrent: sum(CNT_H2_BUSY)?,
            records_read: self.reader_stats.records_read.load(Ordering::Relaxed),
            records_malformed: self.reader_stats.records_malformed.load(Ordering::Relaxed),
        })
    }

    /// Every CPU's flow-cache slots.
    fn cache_slots(&self) -> Vec<CacheSlot> {
        self.maps
            .flow_cache
            .as_ref()
            .map(cache::FlowCache::slots)
            .unwrap_or_default()
    }

    /// Program runs counted in flow-cache slots, not yet in COUNTERS.
    fn pending_runs(&self) -> u64 {
        self.maps
            .flow_cache
            .as_ref()
            .map_or(0, cache::FlowCache::pending_runs)
    }

    /// A snapshot of the FLOWS map plus the counts still pending in the
    /// flow cache. Entries that vanish while iterating (LRU eviction)
    /// are skipped. FLOWS is read before the cache: a flush in between makes
    /// a dump briefly undercount (the next dump has it), never count twice.
    pub fn dump_flows(&self) -> Vec<FlowEntry> {
        self.clock.refresh_if_stale();
        let mut flows: Vec<(FlowKey, FlowStats)> = self
            .maps
            .flows
            .iter()
            .filter_map(|r| match r {
                Ok(kv) => Some(kv),
                Err(e) => {
                    tracing::debug!(error = %e, "flow map entry vanished while dumping");
                    None
                }
            })
            .collect();
        add_pending(&mut flows, self.cache_slots());
        flows
            .into_iter()
            .map(|(key, stats)| FlowEntry {
                key,
                stats,
                first_seen: self.clock.to_system_time(stats.first_seen_ns),
                last_seen: self.clock.to_system_time(stats.last_seen_ns),
            })
            .collect()
    }

    /// Name of an interface flowd attached to (for display).
    pub fn ifname(&self, ifindex: u32) -> Option<String> {
        lock(&self.attacher).ifname(ifindex)
    }

    /// Shared ifindex → name view for printers that outlive a borrow.
    pub fn interface_names(&self) -> InterfaceNames {
        InterfaceNames(self.attacher.clone())
    }

    /// A handle that attaches to and detaches from single interfaces while
    /// the datapath runs (attachment that follows pods).
    pub fn attach_handle(&self) -> AttachHandle {
        AttachHandle(self.attacher.clone())
    }

    /// Stops watching and reading, and detaches every program. The maps stay
    /// readable (counters, dump_flows) until the Datapath is dropped.
    pub fn detach_all(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some((_, r)) = self.reader.take() {
            r.abort();
        }
        lock(&self.attacher).detach_all();
    }

    /// Detaches every program, then lets the reader send what is still in the
    /// ring (records wait there up to `ring::DRAIN_INTERVAL`) before it stops,
    /// so nothing observed is lost. The caller keeps receiving events while
    /// this runs (the channel is bounded).
    pub async fn shutdown(&mut self) {
        lock(&self.attacher).detach_all();
        if let Some((stop, reader)) = self.reader.take() {
            let _ = stop.send(());
            let abort = reader.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, reader).await.is_err() {
                tracing::warn!(
                    "the ring reader did not finish in time; records left in the ring are lost"
                );
                abort.abort();
            }
        }
        self.detach_all();
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Cheap clonable lookup of attached interface names.
#[derive(Clone)]
pub struct InterfaceNames(Arc<Mutex<Attacher>>);

impl InterfaceNames {
    pub fn get(&self, ifindex: u32) -> Option<String> {
        lock(&self.0).ifname(ifindex)
    }
}

/// Attaches to / detaches from one interface at a time, beside the
/// `flowd-interfaces` globs. Interfaces that disappear are forgotten by the
/// link watch as usual.
#[derive(Clone)]
pub struct AttachHandle(Arc<Mutex<Attacher>>);

impl AttachHandle {
    /// Attaches to the interface in `mode`; `Ok(None)` if already attached.
    pub fn attach(
        &self,
        ifindex: u32,
        ifname: &str,
        mode: AttachMode,
    ) -> Result<Option<AttachedInterface>, Error> {
        lock(&self.0).attach_interface(ifindex, ifname, mode)
    }

    /// Detaches from the interface; `None` if it was not attached.
    pub fn detach(&self, ifindex: u32) -> Option<AttachedInterface> {
        lock(&self.0).detach_interface(ifindex)
    }

    /// Whether `flowd-interfaces` selects the interface by name.
    pub fn is_configured(&self, ifname: &str) -> bool {
        lock(&self.0).is_configured(ifname)
    }

    /// Interfaces with programs attached now.
    pub fn attached(&self) -> Vec<AttachedInterface> {
        lock(&self.0).attached()
    }
}

/// One log line per configured interface (`flowd-interfaces`, `-i`) that
/// nothing matches at start: a name that does not exist yet, or a glob that
/// matches nothing yet. The link watch attaches them when they appear;
/// without it they are never attached.
fn report_absent<'a>(
    specs: &[InterfaceSpec],
    names: impl Iterator<Item = &'a String> + Clone,
    watch_links: bool,
) {
    for spec in specs {
        if names.clone().any(|n| spec.matches(n)) {
            continue;
        }
        let pattern = spec.pattern.as_str();
        let is_glob = pattern.contains(['*', '?', '[']);
        match (is_glob, watch_links) {
            (false, true) => tracing::warn!(
                interface = pattern,
                "configured interface does not exist yet; it will be attached when it appears"
            ),
            (true, true) => tracing::info!(
                interface = pattern,
                "no interface matches the configured glob yet; matching interfaces are attached when they appear"
            ),
            (false, false) => tracing::warn!(
                interface = pattern,
                "configured interface does not exist and is not attached: the link watch is off (flowd-watch-links, --no-watch-links)"
            ),
            (true, false) => tracing::warn!(
                interface = pattern,
                "no interface matches the configured glob and none will be attached later: the link watch is off (flowd-watch-links, --no-watch-links)"
            ),
        }
    }
}

/// The attacher's state stays consistent even if a holder panicked (every
/// mutation is a single insert/remove), so a poisoned lock is recovered.
fn lock(m: &Mutex<Attacher>) -> std::sync::MutexGuard<'_, Attacher> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn validate(cfg: &DatapathConfig) -> Result<(), Error> {
    // SAFETY: sysconf has no preconditions.
    let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let rb = cfg.ring_buffer_bytes;
    if !rb.is_power_of_two() || rb < page {
        return Err(Error::InvalidConfig(format!(
            "ring buffer size {rb} bytes: must be a power of two and at least the page size ({page})"
        )));
    }
    if cfg.flow_map_entries == 0 {
        return Err(Error::InvalidConfig(
            "flow map entries must be at least 1".into(),
        ));
    }
    if cfg.l7_max_bytes as usize > flowd_common::L7_MAX_PAYLOAD {
        return Err(Error::InvalidConfig(format!(
            "l7 max bytes {}: at most {}",
            cfg.l7_max_bytes,
            flowd_common::L7_MAX_PAYLOAD
        )));
    }
    let ports = l7_port_bits(cfg).len();
    if ports > MAX_L7_PORTS {
        return Err(Error::InvalidConfig(format!(
            "{ports} extra DNS and HTTP/2 ports: at most {MAX_L7_PORTS}"
        )));
    }
    if cfg.http2_walk_entries == 0 {
        return Err(Error::InvalidConfig(
            "HTTP/2 walk entries must be at least 1".into(),
        ));
    }
    if u64::try_from(cfg.aggregation_interval.as_nanos()).is_err() {
        return Err(Error::InvalidConfig(format!(
            "aggregation interval {:?} is too long",
            cfg.aggregation_interval
        )));
    }
    Ok(())
}

/// The kernel's `L7_PORTS` entries: each configured port with its
/// `L7_PORT_*` bits (53 is DNS without an entry).
pub(crate) fn l7_port_bits(cfg: &DatapathConfig) -> std::collections::BTreeMap<u16, u8> {
    let mut ports = std::collections::BTreeMap::new();
    for &p in cfg.l7_dns_ports.iter().filter(|&&p| p != 53) {
        *ports.entry(p).or_default() |= flowd_common::L7_PORT_DNS;
    }
    for &p in &cfg.l7_http2_ports {
        *ports.entry(p).or_default() |= flowd_common::L7_PORT_H2;
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_size_is_validated() {
        let cfg = DatapathConfig {
            ring_buffer_bytes: 5000,
            ..Default::default()
        };
        assert!(matches!(validate(&cfg), Err(Error::InvalidConfig(_))));
        let cfg = DatapathConfig {
            ring_buffer_bytes: 4096,
            ..Default::default()
        };
        assert!(validate(&cfg).is_ok());
    }
}
