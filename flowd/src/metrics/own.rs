//! flowd's own metrics (`flowd_*`, `hubble_lost_events_total`, `process_*`):
//! the daemon sets them; nothing per flow.
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::context::LabelSet;

/// flowd's own metrics, set by the daemon.
pub(super) struct Own {
    pub(super) lost_events: Family<LabelSet, Counter>,
    pub(super) datapath_events: Counter,
    pub(super) datapath_events_lost: Counter,
    pub(super) datapath_program_runs: Counter,
    pub(super) datapath_full_path_runs: Counter,
    pub(super) datapath_http2_events: Counter,
    pub(super) datapath_http2_walks: Family<LabelSet, Counter>,
    pub(super) datapath_http2_lost: Family<LabelSet, Counter>,
    pub(super) datapath_http2_concurrent: Counter,
    pub(super) attached_interfaces: Family<LabelSet, Gauge>,
    pub(super) flow_map_entries: Gauge,
    pub(super) flow_map_capacity: Gauge,
    pub(super) l7_pairing_evictions: Family<LabelSet, Counter>,
    pub(super) http2_connections: Gauge,
    pub(super) http2_partial_messages: Counter,
    pub(super) http2_walk_losses: Family<LabelSet, Counter>,
    pub(super) http2_header_blocks_skipped: Family<LabelSet, Counter>,
    pub(super) http2_connections_evicted: Family<LabelSet, Counter>,
    pub(super) http2_streams_evicted: Counter,
    pub(super) dns_name_cache_entries: Gauge,
    pub(super) dns_name_cache_evictions: Counter,
    pub(super) events_skipped: Family<LabelSet, Counter>,
    pub(super) flows_processed: Counter,
    pub(super) refused: Family<LabelSet, Counter>,
    pub(super) expired: Family<LabelSet, Counter>,
    pub(super) process_rss: Gauge,
    pub(super) process_vsize: Gauge,
    pub(super) process_open_fds: Gauge,
    pub(super) process_start_time: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub(super) process_cpu: Counter<f64, std::sync::atomic::AtomicU64>,
}

pub(super) struct ProcSample {
    pub(super) rss_bytes: i64,
    pub(super) vsize_bytes: i64,
    pub(super) open_fds: i64,
    pub(super) start_time_s: f64,
    pub(super) cpu_s: f64,
}

/// Reads /proc/self/stat (fields after the command name, which may contain
/// spaces and parentheses) and counts /proc/self/fd.
pub(super) fn procfs_self() -> Option<ProcSample> {
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

impl Own {
    /// Creates the metrics and registers them in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Own {
        let own = Own {
            lost_events: Family::default(),
            datapath_events: Counter::default(),
            datapath_events_lost: Counter::default(),
            datapath_program_runs: Counter::default(),
            datapath_full_path_runs: Counter::default(),
            datapath_http2_events: Counter::default(),
            datapath_http2_walks: Family::default(),
            datapath_http2_lost: Family::default(),
            datapath_http2_concurrent: Counter::default(),
            attached_interfaces: Family::default(),
            flow_map_entries: Gauge::default(),
            flow_map_capacity: Gauge::default(),
            l7_pairing_evictions: Family::default(),
            http2_connections: Gauge::default(),
            http2_partial_messages: Counter::default(),
            http2_walk_losses: Family::default(),
            http2_header_blocks_skipped: Family::default(),
            http2_connections_evicted: Family::default(),
            http2_streams_evicted: Counter::default(),
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
        let r = registry;
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
            "flowd_datapath_http2_events",
            "HTTP/2 frame-walker records the TC programs sent (frame headers and the payloads \
             user space decodes)",
            own.datapath_http2_events.clone(),
        );
        r.register(
            "flowd_datapath_http2_walks",
            "HTTP/2 connection directions the kernel started to walk, by where: the client's \
             preface, the server's first SETTINGS, or a resync (a connection seen from the middle \
             on an HTTP/2 port, or a walk found again after a loss)",
            own.datapath_http2_walks.clone(),
        );
        r.register(
            "flowd_datapath_http2_walks_lost",
            "HTTP/2 walks lost, by reason (gap: a segment the hook did not see; evicted: the walk \
             table was full; ring_full: an event could not be sent; step_limit: a packet with more \
             frames than one run walks); each marks the connection's next record lost",
            own.datapath_http2_lost.clone(),
        );
        r.register(
            "flowd_datapath_http2_concurrent_packets",
            "HTTP/2 packets left unwalked because another CPU walked the same connection \
             direction for longer than the walker waits (new bytes among them are then counted \
             as a gap)",
            own.datapath_http2_concurrent.clone(),
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
            "flowd_http2_connections",
            "HTTP/2 connections whose frames the parser follows (flowd-l7-http2-connections bounds them)",
            own.http2_connections.clone(),
        );
        r.register(
            "flowd_http2_partial_messages",
            "HTTP/2 REQUEST and RESPONSE flows flagged partial: header fields referred to \
             compression-table entries flowd did not see (a connection joined in its middle, \
             bytes lost) and were left empty",
            own.http2_partial_messages.clone(),
        );
        r.register(
            "flowd_http2_walk_losses",
            "Times the HTTP/2 frame walk of a connection direction lost its place, by who \
             noticed (kernel: the datapath flagged it; parser: a frame out of place)",
            own.http2_walk_losses.clone(),
        );
        r.register(
            "flowd_http2_header_blocks_skipped",
            "HTTP/2 header blocks that gave no flow, by reason (oversized: longer than \
             flowd-l7-http2-header-bytes; hpack_error: undecodable; malformed: not a valid \
             request or response head; unclassified: nothing decodable told which it was)",
            own.http2_header_blocks_skipped.clone(),
        );
        r.register(
            "flowd_http2_connections_evicted",
            "HTTP/2 connections forgotten, by reason (capacity: flowd-l7-http2-connections was \
             reached; timeout: idle longer than flowd-l7-pairing-timeout)",
            own.http2_connections_evicted.clone(),
        );
        r.register(
            "flowd_http2_streams_evicted",
            "HTTP/2 streams forgotten before their response ended (flowd-l7-http2-streams \
             reached, or their connection forgotten): no RESPONSE flow",
            own.http2_streams_evicted.clone(),
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
        own
    }
}
