//! The typed configuration: what the keys set, the errors of loading it and
//! where it comes from.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::options::cluster::absolute_node_name;
use crate::options::interfaces::InterfaceSpec;
use crate::options::metrics::MetricsSpec;

/// Largest L7 prefix the kernel programs can copy (the event's payload size).
pub const L7_MAX_BYTES: u32 = flowd_common::L7_MAX_PAYLOAD as u32;

/// Where the ConfigMap comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// No ConfigMap: defaults (and overrides) only.
    Defaults,
    /// A YAML file holding a ConfigMap object.
    File(PathBuf),
    /// A mounted ConfigMap directory (one file per key).
    Directory(PathBuf),
}

impl ConfigSource {
    /// A directory becomes [`ConfigSource::Directory`], anything else a file.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        if path.is_dir() {
            ConfigSource::Directory(path)
        } else {
            ConfigSource::File(path)
        }
    }
}

/// Why the configuration cannot be used. flowd must not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read ConfigMap {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse ConfigMap YAML {path}: {source}")]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{path} is not a usable ConfigMap: {reason}")]
    NotConfigMap { path: PathBuf, reason: String },
    #[error("invalid value {value:?} for key {key:?}: expected {expected}")]
    InvalidValue {
        key: String,
        value: String,
        expected: String,
    },
    #[error("unknown key {key:?} in command-line override (see docs/configuration.md)")]
    UnknownOverride { key: String },
    #[error("invalid override {arg:?}: expected key=value")]
    OverrideSyntax { arg: String },
}

/// Cilium's monitor aggregation level (`monitor-aggregation`, Cilium's
/// numbers 0–4): how often the datapath reports a flow.
///
/// Cilium's datapath knows three behaviours: level 0 traces every packet,
/// levels 1–2 hide receive-side traces, levels ≥ 3 trace a connection when
/// it starts, when it sees new TCP flags and at most once per
/// `monitor-aggregation-interval` (no datapath code tests for a level above
/// 3, so `maximum` behaves as `medium` there). flowd reports flows, not
/// per-hook traces: every level but `none` gives the medium behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorAggregation {
    /// Every packet (`none`, `disabled`, 0).
    None,
    /// `lowest` (1) and `low` (2).
    Low,
    /// `medium` (3): new flows, new TCP flags, then at most once per interval.
    Medium,
    /// `maximum`, `max` (4): as medium, as in Cilium.
    Maximum,
}

/// The typed configuration. Field docs name the ConfigMap key.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    // ---- Hubble keys (cilium-config names) ----
    /// `enable-hubble`: serve the Observer API.
    pub enable_hubble: bool,
    /// `hubble-listen-address`: Observer API address; `None` when empty.
    pub hubble_listen_address: Option<SocketAddr>,
    /// `hubble-disable-tls`.
    pub hubble_disable_tls: bool,
    /// `hubble-tls-cert-file`.
    pub hubble_tls_cert_file: Option<PathBuf>,
    /// `hubble-tls-key-file`.
    pub hubble_tls_key_file: Option<PathBuf>,
    /// `hubble-tls-client-ca-files`: enables mTLS when non-empty.
    pub hubble_tls_client_ca_files: Vec<PathBuf>,
    /// `hubble-metrics-server`: Prometheus endpoint; `None` when empty.
    pub hubble_metrics_server: Option<SocketAddr>,
    /// `hubble-metrics`: enabled handlers and their options.
    pub hubble_metrics: MetricsSpec,
    /// `enable-hubble-open-metrics`: allow OpenMetrics by content negotiation.
    pub enable_hubble_open_metrics: bool,
    /// `hubble-event-buffer-capacity`: flows kept in the ring (2^n − 1).
    pub hubble_event_buffer_capacity: u32,
    /// `hubble-event-queue-size`: resolved (0 in the ConfigMap = min(nCPU×1024, 16384)).
    pub hubble_event_queue_size: u32,
    /// `hubble-export-file-path`: `None` disables; `stdout` is allowed.
    pub hubble_export_file_path: Option<String>,
    /// `hubble-export-file-max-size-mb`.
    pub hubble_export_file_max_size_mb: u32,
    /// `hubble-export-file-max-backups`.
    pub hubble_export_file_max_backups: u32,
    /// `hubble-export-file-compress`.
    pub hubble_export_file_compress: bool,
    /// `hubble-export-allowlist`: JSON FlowFilter objects.
    pub hubble_export_allowlist: Vec<serde_json::Value>,
    /// `hubble-export-denylist`: JSON FlowFilter objects.
    pub hubble_export_denylist: Vec<serde_json::Value>,
    /// `hubble-export-fieldmask`: Flow field paths to keep.
    pub hubble_export_fieldmask: Vec<String>,
    /// `hubble-relay-enabled` (informational: the relay is deployed separately).
    pub hubble_relay_enabled: bool,
    /// `hubble-ui-enabled` (informational).
    pub hubble_ui_enabled: bool,
    /// `hubble-redact-enabled`: master switch of the redaction options.
    pub hubble_redact_enabled: bool,
    /// `hubble-redact-http-urlquery`.
    pub hubble_redact_http_urlquery: bool,
    /// `hubble-redact-http-userinfo`.
    pub hubble_redact_http_userinfo: bool,
    /// `hubble-redact-http-headers-allow`.
    pub hubble_redact_http_headers_allow: Vec<String>,
    /// `hubble-redact-http-headers-deny`.
    pub hubble_redact_http_headers_deny: Vec<String>,
    /// `monitor-aggregation`.
    pub monitor_aggregation: MonitorAggregation,
    /// `monitor-aggregation-interval`.
    pub monitor_aggregation_interval: Duration,
    /// `tofqdns-min-ttl`: lowest TTL the DNS name cache keeps a name for.
    pub tofqdns_min_ttl: Duration,
    /// `cluster-name`: in flows' endpoints, their labels and, unless it is
    /// `default`, in node names (`<cluster>/<node>`, see
    /// [`Config::absolute_node_name`]).
    pub cluster_name: String,

    // ---- flowd's own keys ----
    /// `flowd-interfaces`: interfaces (names or globs) and modes.
    pub interfaces: Vec<InterfaceSpec>,
    /// `flowd-ring-buffer-bytes`: kernel→user ring buffer size.
    pub ring_buffer_bytes: u32,
    /// `flowd-flow-map-entries`: kernel LRU flow table size.
    pub flow_map_entries: u32,
    /// `flowd-l7-max-bytes`: L7 payload prefix copied (0 disables L7).
    pub l7_max_bytes: u32,
    /// `flowd-l7-dns-ports`: UDP/TCP ports parsed as DNS.
    pub l7_dns_ports: Vec<u16>,
    /// `flowd-l7-http2-ports`: TCP ports whose connections seen from the
    /// middle are walked as HTTP/2.
    pub l7_http2_ports: Vec<u16>,
    /// `flowd-l7-http2-walk-entries`: kernel HTTP/2 walk table size.
    pub l7_http2_walk_entries: u32,
    /// `flowd-l7-pairing-entries`: open requests kept for pairing.
    pub l7_pairing_entries: u32,
    /// `flowd-l7-pairing-timeout`: age after which an unanswered request is evicted.
    pub l7_pairing_timeout: Duration,
    /// `flowd-l7-http2-connections`: HTTP/2 connections tracked.
    pub l7_http2_connections: u32,
    /// `flowd-l7-http2-streams`: open streams tracked per HTTP/2 connection.
    pub l7_http2_streams: u32,
    /// `flowd-l7-http2-header-bytes`: longest HTTP/2 header block decoded.
    pub l7_http2_header_bytes: u32,
    /// `flowd-http-headers-allow`: header names whose values appear in flows.
    pub http_headers_allow: Vec<String>,
    /// `flowd-dns-name-cache-entries`: bound of the per-pod IP → name cache.
    pub dns_name_cache_entries: u32,
    /// `flowd-drops-enabled`: kernel drop reasons (skb:kfree_skb).
    pub drops_enabled: bool,
    /// `flowd-node-name`: resolved (empty = $NODE_NAME, else the host name).
    pub node_name: String,
    /// `flowd-kubernetes`: watch the Kubernetes API (off|node|all).
    pub kubernetes: KubernetesWatch,
    /// `flowd-manifests-dir`: endpoint manifests when not using the API.
    pub manifests_dir: Option<PathBuf>,
    /// `flowd-max-streams`: concurrent GetFlows streams.
    pub max_streams: u32,
    /// `flowd-stream-queue-size`: per-stream queue before drops are reported.
    pub stream_queue_size: u32,
    /// `flowd-metrics-max-series`: series per metric before new ones are refused.
    pub metrics_max_series: u32,
    /// `flowd-metrics-series-ttl`: idle series expire after this; `None` = never.
    pub metrics_series_ttl: Option<Duration>,
    /// `flowd-metrics-count-once`: apply the counting rule of `metrics::counting`.
    pub metrics_count_once: bool,
    /// `flowd-export-otlp-endpoint`: OTLP/gRPC collector; `None` disables.
    pub export_otlp_endpoint: Option<String>,
    /// `flowd-export-otlp-queue-size`.
    pub export_otlp_queue_size: u32,
    /// `flowd-export-otlp-l7-spans`: also export L7 exchanges as spans.
    pub export_otlp_l7_spans: bool,
    /// `flowd-export-file-max-size-bytes`: overrides `hubble-export-file-max-size-mb` when > 0.
    pub export_file_max_size_bytes: u64,
    /// `flowd-export-file-queue-size`: events queued for the export file.
    pub export_file_queue_size: u32,
    /// `flowd-watch-links`: attach to matching interfaces that appear later.
    pub watch_links: bool,
    /// `flowd-shutdown-grace`: longest time from SIGTERM to exit.
    pub shutdown_grace: Duration,
}

/// Which pods the Kubernetes endpoint source watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubernetesWatch {
    Off,
    /// Pods of this node (field selector on spec.nodeName) and all services.
    Node,
    All,
}

/// A loaded configuration and what was noticed while loading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Keys of the ConfigMap flowd does not know (already logged as a warning).
    pub unknown_keys: Vec<String>,
}

impl Config {
    /// The node's name as Cilium writes it in flows, GetNodes and peer
    /// names: `<cluster-name>/<node>`, or the bare node name in the cluster
    /// named `default` (Cilium's `GetAbsoluteNodeName`).
    pub fn absolute_node_name(&self) -> String {
        absolute_node_name(&self.cluster_name, &self.node_name)
    }
}
