//! flowd's configuration, read from a Kubernetes ConfigMap.
//!
//! Two sources, as a DaemonSet sees them: the YAML of a ConfigMap object
//! (`kind: ConfigMap`, `data: {key: "value"}`) or a mounted ConfigMap volume
//! (one file per key; the `..data` / `..2024_…` entries Kubernetes adds are
//! skipped). The Hubble part uses the key names of Cilium's `cilium-config`;
//! flowd's own keys start with `flowd-`. Command-line overrides
//! (`--set key=value`) are applied last.
//!
//! Every key is described once, in [`KEYS`]: name, default, what is expected
//! and how it is applied. Defaults are produced by parsing the documented
//! default strings, so the documentation cannot drift from the code.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::options::cluster::{absolute_node_name, valid_cluster_name};
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
    /// `flowd-l7-pairing-entries`: open requests kept for pairing.
    pub l7_pairing_entries: u32,
    /// `flowd-l7-pairing-timeout`: age after which an unanswered request is evicted.
    pub l7_pairing_timeout: Duration,
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

/// One configuration key.
pub struct KeyDef {
    pub name: &'static str,
    /// The default, as it would be written in the ConfigMap.
    pub default: &'static str,
    /// What a value must look like (used in errors and docs).
    pub expected: &'static str,
    /// Short description (docs).
    pub help: &'static str,
    apply: fn(&mut Config, &str) -> Result<(), String>,
}

impl fmt::Debug for KeyDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyDef")
            .field("name", &self.name)
            .field("default", &self.default)
            .finish()
    }
}

// ---------------------------------------------------------------- parsers

fn p_bool(v: &str) -> Result<bool, String> {
    // The spellings Go's strconv.ParseBool (Cilium) accepts.
    match v {
        "true" | "True" | "TRUE" | "t" | "T" | "1" => Ok(true),
        "false" | "False" | "FALSE" | "f" | "F" | "0" => Ok(false),
        _ => Err(String::new()),
    }
}

fn p_u32(v: &str, min: u32, max: u32) -> Result<u32, String> {
    let n: u32 = v.parse().map_err(|_| String::new())?;
    if n < min || n > max {
        return Err(String::new());
    }
    Ok(n)
}

/// `:port`, `ip:port` or `[v6]:port`; empty disables. `:port` binds all IPv4
/// addresses (works in network namespaces without IPv6).
fn p_addr(v: &str) -> Result<Option<SocketAddr>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    if let Some(port) = v.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| String::new())?;
        return Ok(Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port,
        )));
    }
    v.parse::<SocketAddr>().map(Some).map_err(|_| String::new())
}

/// Go-style durations as Cilium writes them (`5s`, `1m30s`, `500ms`, `1h`);
/// `0` is zero.
fn p_duration(v: &str) -> Result<Duration, String> {
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(v).map_err(|_| String::new())
}

/// Lists as Cilium's string slices accept them: commas and/or whitespace.
fn p_list(v: &str) -> Vec<String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Cilium's rule for `cluster-name`.
fn p_cluster_name(v: &str) -> Result<String, String> {
    if valid_cluster_name(v) {
        Ok(v.to_string())
    } else {
        Err(String::new())
    }
}

fn p_opt_string(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

/// A stream of JSON objects (Hubble's allow/deny list format), e.g.
/// `{"source_pod":["ns/"]}{"verdict":["DROPPED"]}`, optionally as a JSON array.
fn p_filters(v: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut out = Vec::new();
    for item in serde_json::Deserializer::from_str(v).into_iter::<serde_json::Value>() {
        match item.map_err(|e| format!(" ({e})"))? {
            serde_json::Value::Array(a) => out.extend(a),
            other => out.push(other),
        }
    }
    if out.iter().any(|f| !f.is_object()) {
        return Err(" (every filter must be a JSON object)".to_string());
    }
    Ok(out)
}

fn p_interfaces(v: &str) -> Result<Vec<InterfaceSpec>, String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<InterfaceSpec>()
                .map_err(|e| format!(" (entry {item:?}: {e})"))
        })
        .collect()
}

fn p_ports(v: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for p in p_list(v) {
        let n: u16 = p.parse().map_err(|_| format!(" ({p:?} is not a port)"))?;
        if n == 0 {
            return Err(" (port 0)".to_string());
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

fn default_queue_size() -> u32 {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cpus.saturating_mul(1024)).min(16384) as u32
}

fn host_name() -> String {
    if let Ok(n) = std::env::var("NODE_NAME")
        && !n.is_empty()
    {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

macro_rules! key {
    ($name:literal, $default:literal, $expected:literal, $help:literal, |$c:ident, $v:ident| $body:expr) => {
        KeyDef {
            name: $name,
            default: $default,
            expected: $expected,
            help: $help,
            apply: |$c: &mut Config, $v: &str| -> Result<(), String> {
                $body;
                #[allow(unreachable_code)]
                Ok(())
            },
        }
    };
}

/// Every key flowd understands, in documentation order.
pub static KEYS: &[KeyDef] = &[
    key!(
        "enable-hubble",
        "true",
        "a boolean (true|false)",
        "Serve the Observer API (Hubble-compatible gRPC). Cilium's default is false; flowd exists to serve it.",
        |c, v| c.enable_hubble = p_bool(v)?
    ),
    key!(
        "hubble-listen-address",
        ":4244",
        "[ip]:port, or empty to disable",
        "Address of the Observer API. `:port` listens on all IPv4 addresses; use `[::]:port` for IPv6.",
        |c, v| c.hubble_listen_address = p_addr(v)?
    ),
    key!(
        "hubble-disable-tls",
        "true",
        "a boolean",
        "Serve the Observer API without TLS. When false, hubble-tls-cert-file and hubble-tls-key-file are required.",
        |c, v| c.hubble_disable_tls = p_bool(v)?
    ),
    key!(
        "hubble-tls-cert-file",
        "",
        "a path to a PEM certificate, or empty",
        "Server certificate of the Observer API.",
        |c, v| c.hubble_tls_cert_file = p_opt_string(v).map(PathBuf::from)
    ),
    key!(
        "hubble-tls-key-file",
        "",
        "a path to a PEM private key, or empty",
        "Server private key of the Observer API.",
        |c, v| c.hubble_tls_key_file = p_opt_string(v).map(PathBuf::from)
    ),
    key!(
        "hubble-tls-client-ca-files",
        "",
        "paths separated by commas or spaces",
        "Client CA certificates; when set, clients must present a certificate (mTLS).",
        |c, v| c.hubble_tls_client_ca_files = p_list(v).into_iter().map(PathBuf::from).collect()
    ),
    key!(
        "hubble-metrics-server",
        ":9965",
        "[ip]:port, or empty to disable",
        "Address of the Prometheus endpoint (/metrics).",
        |c, v| c.hubble_metrics_server = p_addr(v)?
    ),
    key!(
        "hubble-metrics",
        "",
        "Hubble's handler list, e.g. \"flow drop dns:query;ignoreAAAA httpV2:exemplars=true\"",
        "Metrics handlers and their options (see the Metrics section).",
        |c, v| c.hubble_metrics = MetricsSpec::parse(v).map_err(|e| format!(" ({e})"))?
    ),
    key!(
        "enable-hubble-open-metrics",
        "true",
        "a boolean",
        "Serve OpenMetrics (with exemplars) to scrapers that ask for it with `Accept: application/openmetrics-text`; when false, always the Prometheus text format.",
        |c, v| c.enable_hubble_open_metrics = p_bool(v)?
    ),
    key!(
        "hubble-event-buffer-capacity",
        "4095",
        "one less than a power of two, from 1 to 65535 (1, 3, 7, …, 4095, …, 65535)",
        "Flows kept in memory for GetFlows.",
        |c, v| {
            let n = p_u32(v, 1, 65535)?;
            if !(n + 1).is_power_of_two() {
                return Err(String::new());
            }
            c.hubble_event_buffer_capacity = n
        }
    ),
    key!(
        "hubble-event-queue-size",
        "0",
        "an integer from 0 to 1048576 (0 = min(nCPU×1024, 16384))",
        "Queue between the event reader and the flow pipeline.",
        |c, v| {
            let n = p_u32(v, 0, 1 << 20)?;
            c.hubble_event_queue_size = if n == 0 { default_queue_size() } else { n }
        }
    ),
    key!(
        "hubble-export-file-path",
        "",
        "a file path, `stdout`, or empty to disable",
        "Write flows as JSON lines (Hubble's export format).",
        |c, v| c.hubble_export_file_path = p_opt_string(v)
    ),
    key!(
        "hubble-export-file-max-size-mb",
        "10",
        "an integer from 1 to 1048576",
        "Size at which the export file is rotated.",
        |c, v| c.hubble_export_file_max_size_mb = p_u32(v, 1, 1 << 20)?
    ),
    key!(
        "hubble-export-file-max-backups",
        "5",
        "an integer from 0 to 10000",
        "Rotated export files kept.",
        |c, v| c.hubble_export_file_max_backups = p_u32(v, 0, 10000)?
    ),
    key!(
        "hubble-export-file-compress",
        "false",
        "a boolean",
        "Gzip rotated export files.",
        |c, v| c.hubble_export_file_compress = p_bool(v)?
    ),
    key!(
        "hubble-export-allowlist",
        "",
        "JSON FlowFilter objects, e.g. {\"source_pod\":[\"ecommerce/\"]}",
        "Only flows matching one of these filters are exported.",
        |c, v| c.hubble_export_allowlist = p_filters(v)?
    ),
    key!(
        "hubble-export-denylist",
        "",
        "JSON FlowFilter objects",
        "Flows matching one of these filters are not exported.",
        |c, v| c.hubble_export_denylist = p_filters(v)?
    ),
    key!(
        "hubble-export-fieldmask",
        "",
        "Flow field paths separated by commas or spaces, e.g. \"time source.namespace l7\"",
        "Fields kept in exported flows (all when empty).",
        |c, v| c.hubble_export_fieldmask = p_list(v)
    ),
    key!(
        "hubble-relay-enabled",
        "false",
        "a boolean",
        "Informational (the relay is a separate Deployment); accepted for cilium-config compatibility.",
        |c, v| c.hubble_relay_enabled = p_bool(v)?
    ),
    key!(
        "hubble-ui-enabled",
        "false",
        "a boolean",
        "Informational; accepted for cilium-config compatibility.",
        |c, v| c.hubble_ui_enabled = p_bool(v)?
    ),
    key!(
        "hubble-redact-enabled",
        "true",
        "a boolean",
        "Master switch of the hubble-redact-* options. flowd redacts by default (Cilium's default is false).",
        |c, v| c.hubble_redact_enabled = p_bool(v)?
    ),
    key!(
        "hubble-redact-http-urlquery",
        "true",
        "a boolean",
        "Remove the query string of HTTP URLs.",
        |c, v| c.hubble_redact_http_urlquery = p_bool(v)?
    ),
    key!(
        "hubble-redact-http-userinfo",
        "true",
        "a boolean",
        "Remove user:password@ from HTTP URLs.",
        |c, v| c.hubble_redact_http_userinfo = p_bool(v)?
    ),
    key!(
        "hubble-redact-http-headers-allow",
        "",
        "header names separated by commas or spaces",
        "Only these HTTP headers keep their values (cannot be combined with the deny list).",
        |c, v| c.hubble_redact_http_headers_allow = p_list(v)
    ),
    key!(
        "hubble-redact-http-headers-deny",
        "",
        "header names separated by commas or spaces",
        "These HTTP headers lose their values (cannot be combined with the allow list).",
        |c, v| c.hubble_redact_http_headers_deny = p_list(v)
    ),
    key!(
        "cluster-name",
        "default",
        "at most 32 lower-case letters, digits and '-', starting and ending with a letter or digit",
        "Name of the cluster: in flows' endpoints (cluster_name, the io.cilium.k8s.policy.cluster label) and, unless it is default, in node names (<cluster>/<node>) as in Cilium.",
        |c, v| c.cluster_name = p_cluster_name(v)?
    ),
    key!(
        "monitor-aggregation",
        "medium",
        "none (or disabled), lowest, low, medium, max or maximum, or Cilium's level numbers 0 to 4",
        "How often the datapath reports a flow: none = every packet; every other level = new flows, TCP flag changes and at most one update per monitor-aggregation-interval (Cilium's medium and maximum behave the same; flowd has no receive-only traces, so lowest and low do too).",
        |c, v| c.monitor_aggregation = match v.to_ascii_lowercase().as_str() {
            "none" | "disabled" | "0" => MonitorAggregation::None,
            "lowest" | "1" | "low" | "2" => MonitorAggregation::Low,
            "medium" | "3" => MonitorAggregation::Medium,
            "maximum" | "max" | "4" => MonitorAggregation::Maximum,
            _ => return Err(String::new()),
        }
    ),
    key!(
        "monitor-aggregation-interval",
        "5s",
        "a duration such as 5s, 500ms or 1m",
        "Minimum time between two updates of the same flow.",
        |c, v| c.monitor_aggregation_interval = p_duration(v)?
    ),
    key!(
        "tofqdns-min-ttl",
        "0",
        "seconds (an integer from 0 to 604800)",
        "Lowest TTL for names learned from DNS answers: shorter TTLs are raised to it (0 keeps the answers' own TTLs).",
        |c, v| c.tofqdns_min_ttl = Duration::from_secs(u64::from(p_u32(v, 0, 604_800)?))
    ),
    key!(
        "flowd-interfaces",
        "",
        "entries `name-or-glob[=tc|xdp|xdp-generic]` separated by spaces or commas, e.g. \"veth*=tc eth1=xdp\"",
        "Interfaces to attach to (also those appearing later). Mode defaults to tc. Pod veths found through the endpoint source are attached in addition.",
        |c, v| c.interfaces = p_interfaces(v)?
    ),
    key!(
        "flowd-watch-links",
        "true",
        "a boolean",
        "Also attach to interfaces matching flowd-interfaces that appear after start (new pod veths), and forget those that go. false: only those present at start.",
        |c, v| c.watch_links = p_bool(v)?
    ),
    key!(
        "flowd-ring-buffer-bytes",
        "8388608",
        "a power of two from 4096 to 1073741824",
        "Size of the kernel→user ring buffer.",
        |c, v| {
            let n = p_u32(v, 4096, 1 << 30)?;
            if !n.is_power_of_two() {
                return Err(String::new());
            }
            c.ring_buffer_bytes = n
        }
    ),
    key!(
        "flowd-flow-map-entries",
        "65536",
        "an integer from 1024 to 16777216",
        "Entries of the kernel LRU flow table.",
        |c, v| c.flow_map_entries = p_u32(v, 1024, 1 << 24)?
    ),
    key!(
        "flowd-l7-max-bytes",
        "512",
        "an integer from 0 to 512 (0 disables L7)",
        "Bytes of HTTP/DNS payload the kernel copies per message.",
        |c, v| c.l7_max_bytes = p_u32(v, 0, L7_MAX_BYTES)?
    ),
    key!(
        "flowd-l7-dns-ports",
        "53",
        "ports separated by commas or spaces",
        "Ports whose UDP/TCP payloads are parsed as DNS.",
        |c, v| c.l7_dns_ports = p_ports(v)?
    ),
    key!(
        "flowd-l7-pairing-entries",
        "16384",
        "an integer from 16 to 4194304",
        "Unanswered HTTP requests / DNS queries kept for pairing with their response (evictions are counted).",
        |c, v| c.l7_pairing_entries = p_u32(v, 16, 1 << 22)?
    ),
    key!(
        "flowd-l7-pairing-timeout",
        "30s",
        "a duration",
        "Age after which an unanswered request is evicted.",
        |c, v| c.l7_pairing_timeout = p_duration(v)?
    ),
    key!(
        "flowd-http-headers-allow",
        "",
        "header names separated by commas or spaces",
        "HTTP headers captured into flows (none by default).",
        |c, v| c.http_headers_allow = p_list(v)
    ),
    key!(
        "flowd-dns-name-cache-entries",
        "32768",
        "an integer from 0 to 4194304 (0 disables the cache)",
        "IP → DNS name entries kept from observed DNS answers, for flows' source_names/destination_names (all pods together; the soonest to expire is evicted first, counted).",
        |c, v| c.dns_name_cache_entries = p_u32(v, 0, 1 << 22)?
    ),
    key!(
        "flowd-drops-enabled",
        "true",
        "a boolean",
        "Report packets the kernel drops (skb:kfree_skb) with their reason.",
        |c, v| c.drops_enabled = p_bool(v)?
    ),
    key!(
        "flowd-node-name",
        "",
        "a node name, or empty",
        "Node name in flows; empty = $NODE_NAME, else the host name.",
        |c, v| c.node_name = if v.is_empty() {
            host_name()
        } else {
            v.to_string()
        }
    ),
    key!(
        "flowd-kubernetes",
        "off",
        "off, node or all",
        "Watch pods and services in the Kubernetes API: off, pods of this node, or all pods.",
        |c, v| c.kubernetes = match v {
            "off" | "false" => KubernetesWatch::Off,
            "node" => KubernetesWatch::Node,
            "all" => KubernetesWatch::All,
            _ => return Err(String::new()),
        }
    ),
    key!(
        "flowd-manifests-dir",
        "",
        "a directory path, or empty",
        "Directory of Pod/Service manifests (YAML or JSON), watched for changes.",
        |c, v| c.manifests_dir = p_opt_string(v).map(PathBuf::from)
    ),
    key!(
        "flowd-max-streams",
        "256",
        "an integer from 1 to 65536",
        "Concurrent GetFlows streams; more are refused with RESOURCE_EXHAUSTED.",
        |c, v| c.max_streams = p_u32(v, 1, 65536)?
    ),
    key!(
        "flowd-stream-queue-size",
        "1024",
        "an integer from 1 to 1048576",
        "Flows queued per stream; a slower reader gets LostEvent notices instead of growing memory.",
        |c, v| c.stream_queue_size = p_u32(v, 1, 1 << 20)?
    ),
    key!(
        "flowd-metrics-max-series",
        "10000",
        "an integer from 1 to 10000000",
        "Series per metric; new label combinations beyond it are refused and counted in flowd_metrics_series_refused_total.",
        |c, v| c.metrics_max_series = p_u32(v, 1, 10_000_000)?
    ),
    key!(
        "flowd-metrics-series-ttl",
        "1h",
        "a duration, or 0 for never",
        "Series not updated for this long are removed (series of deleted pods go away).",
        |c, v| {
            let d = p_duration(v)?;
            c.metrics_series_ttl = (!d.is_zero()).then_some(d)
        }
    ),
    key!(
        "flowd-metrics-count-once",
        "true",
        "a boolean",
        "The counting rule (see Metrics): each event once per reporter cluster-wide — http/httpV2 once as client and once as server, dns/tcp/icmp/port-distribution at the packet's first observation point. false counts every record at every observation point, as Hubble does.",
        |c, v| c.metrics_count_once = p_bool(v)?
    ),
    key!(
        "flowd-export-otlp-endpoint",
        "",
        "an http://host:port URL (TLS to the collector is not supported yet), or empty to disable",
        "OpenTelemetry collector (OTLP/gRPC) receiving flows as log records.",
        |c, v| {
            if !(v.is_empty() || v.starts_with("http://")) {
                return Err(String::new());
            }
            c.export_otlp_endpoint = p_opt_string(v)
        }
    ),
    key!(
        "flowd-export-otlp-queue-size",
        "8192",
        "an integer from 1 to 1048576",
        "Records queued for the collector; beyond it records are dropped and counted.",
        |c, v| c.export_otlp_queue_size = p_u32(v, 1, 1 << 20)?
    ),
    key!(
        "flowd-export-otlp-l7-spans",
        "false",
        "a boolean",
        "Also export each L7 exchange as a span with its latency.",
        |c, v| c.export_otlp_l7_spans = p_bool(v)?
    ),
    key!(
        "flowd-export-file-max-size-bytes",
        "0",
        "an integer number of bytes, 0 to use hubble-export-file-max-size-mb",
        "Rotation size of the export file in bytes, finer than hubble-export-file-max-size-mb (small nodes, tests).",
        |c, v| c.export_file_max_size_bytes = v.parse::<u64>().map_err(|_| String::new())?
    ),
    key!(
        "flowd-export-file-queue-size",
        "8192",
        "an integer from 1 to 1048576",
        "Events queued for the export file; beyond it events are dropped and counted (flowd_export_events_dropped_total{reason=\"queue_full\"}).",
        |c, v| c.export_file_queue_size = p_u32(v, 1, 1 << 20)?
    ),
    key!(
        "flowd-shutdown-grace",
        "5s",
        "a duration from 100ms to 10m",
        "Longest time from SIGTERM/SIGINT to exit: follow streams end with UNAVAILABLE once the last observed flows are in, the export queues are flushed, and connections still open when it ends (idle clients, clients that do not read) are closed. Keep it below the pod's terminationGracePeriodSeconds.",
        |c, v| {
            let d = p_duration(v)?;
            if d < Duration::from_millis(100) || d > Duration::from_secs(600) {
                return Err(String::new());
            }
            c.shutdown_grace = d
        }
    ),
];

/// Finds a key definition by name.
pub fn key(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.name == name)
}

/// Checks one value of one key on its own, e.g. what a typed flag stands
/// for, so that an error can name the flag.
pub fn check_value(name: &str, value: &str) -> Result<(), ConfigError> {
    let def = key(name).ok_or_else(|| ConfigError::UnknownOverride {
        key: name.to_string(),
    })?;
    let mut c = Config::default();
    (def.apply)(&mut c, value.trim()).map_err(|detail| ConfigError::InvalidValue {
        key: name.to_string(),
        value: value.to_string(),
        expected: format!("{}{detail}", def.expected),
    })
}

impl Default for Config {
    /// The documented defaults ([`KEYS`]).
    fn default() -> Self {
        let mut c = Config {
            enable_hubble: false,
            hubble_listen_address: None,
            hubble_disable_tls: true,
            hubble_tls_cert_file: None,
            hubble_tls_key_file: None,
            hubble_tls_client_ca_files: Vec::new(),
            hubble_metrics_server: None,
            hubble_metrics: MetricsSpec::default(),
            enable_hubble_open_metrics: true,
            hubble_event_buffer_capacity: 0,
            hubble_event_queue_size: 0,
            hubble_export_file_path: None,
            hubble_export_file_max_size_mb: 0,
            hubble_export_file_max_backups: 0,
            hubble_export_file_compress: false,
            hubble_export_allowlist: Vec::new(),
            hubble_export_denylist: Vec::new(),
            hubble_export_fieldmask: Vec::new(),
            hubble_relay_enabled: false,
            hubble_ui_enabled: false,
            hubble_redact_enabled: false,
            hubble_redact_http_urlquery: false,
            hubble_redact_http_userinfo: false,
            hubble_redact_http_headers_allow: Vec::new(),
            hubble_redact_http_headers_deny: Vec::new(),
            monitor_aggregation: MonitorAggregation::Medium,
            monitor_aggregation_interval: Duration::ZERO,
            tofqdns_min_ttl: Duration::ZERO,
            cluster_name: String::new(),
            interfaces: Vec::new(),
            ring_buffer_bytes: 0,
            flow_map_entries: 0,
            l7_max_bytes: 0,
            l7_dns_ports: Vec::new(),
            l7_pairing_entries: 0,
            l7_pairing_timeout: Duration::ZERO,
            http_headers_allow: Vec::new(),
            dns_name_cache_entries: 0,
            drops_enabled: false,
            node_name: String::new(),
            kubernetes: KubernetesWatch::Off,
            manifests_dir: None,
            max_streams: 0,
            stream_queue_size: 0,
            metrics_max_series: 0,
            metrics_series_ttl: None,
            metrics_count_once: false,
            export_otlp_endpoint: None,
            export_otlp_queue_size: 0,
            export_otlp_l7_spans: false,
            export_file_max_size_bytes: 0,
            export_file_queue_size: 0,
            watch_links: true,
            shutdown_grace: Duration::ZERO,
        };
        for k in KEYS {
            // The defaults are constants of this file; `defaults_parse` tests them.
            if let Err(e) = (k.apply)(&mut c, k.default) {
                tracing::error!(key = k.name, error = %e, "built-in default does not parse");
            }
        }
        c
    }
}

impl Config {
    /// The node's name as Cilium writes it in flows, GetNodes and peer
    /// names: `<cluster-name>/<node>`, or the bare node name in the cluster
    /// named `default` (Cilium's `GetAbsoluteNodeName`).
    pub fn absolute_node_name(&self) -> String {
        absolute_node_name(&self.cluster_name, &self.node_name)
    }
}

#[derive(serde::Deserialize)]
struct ConfigMapDoc {
    kind: Option<String>,
    #[serde(default)]
    data: Option<BTreeMap<String, serde_yaml_ng::Value>>,
}

/// Reads the `data` of a ConfigMap YAML file.
pub fn read_configmap_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: ConfigMapDoc = serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::Yaml {
        path: path.to_path_buf(),
        source,
    })?;
    let not = |reason: String| ConfigError::NotConfigMap {
        path: path.to_path_buf(),
        reason,
    };
    match doc.kind.as_deref() {
        Some("ConfigMap") => {}
        Some(k) => return Err(not(format!("kind is {k:?}, expected \"ConfigMap\""))),
        None => return Err(not("no `kind: ConfigMap`".to_string())),
    }
    let mut out = BTreeMap::new();
    for (k, v) in doc.data.unwrap_or_default() {
        // Kubernetes requires strings; unquoted scalars are accepted since
        // their meaning is unambiguous, anything else is refused.
        let s = match v {
            serde_yaml_ng::Value::String(s) => s,
            serde_yaml_ng::Value::Bool(b) => b.to_string(),
            serde_yaml_ng::Value::Number(n) => n.to_string(),
            serde_yaml_ng::Value::Null => String::new(),
            _ => return Err(not(format!("data key {k:?} is not a string"))),
        };
        out.insert(k, s);
    }
    Ok(out)
}

/// Reads a mounted ConfigMap directory: one regular file (or symlink to
/// one) per key; dot entries (`..data`, `..2024_…`) are Kubernetes' own.
pub fn read_configmap_dir(dir: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let read_err = |path: &Path, source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
        let entry = entry.map_err(|e| read_err(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(ConfigError::NotConfigMap {
                path: entry.path(),
                reason: "file name is not UTF-8".to_string(),
            });
        };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // metadata() follows the symlinks a ConfigMap volume is made of.
        let meta = std::fs::metadata(&path).map_err(|e| read_err(&path, e))?;
        if !meta.is_file() {
            continue;
        }
        let value = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

/// Parses one `--set key=value` argument.
pub fn parse_override(arg: &str) -> Result<(String, String), ConfigError> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(ConfigError::OverrideSyntax {
            arg: arg.to_string(),
        }),
    }
}

/// The command-line side of the configuration, for the daemon's clap
/// parser (`#[command(flatten)] config: ConfigArgs`): `--config FILE|DIR`
/// (also `$FLOWD_CONFIG`) and repeatable `--set key=value`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// ConfigMap YAML file, or mounted ConfigMap directory (one file per key).
    #[arg(long = "config", value_name = "FILE|DIR", env = "FLOWD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override a configuration key (repeatable; see docs/configuration.md).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = override_arg)]
    pub set: Vec<(String, String)>,
}

fn override_arg(s: &str) -> Result<(String, String), String> {
    parse_override(s).map_err(|e| e.to_string())
}

impl ConfigArgs {
    pub fn source(&self) -> ConfigSource {
        match &self.config {
            Some(p) => ConfigSource::from_path(p),
            None => ConfigSource::Defaults,
        }
    }

    /// Loads the configuration; `typed` are overrides from the daemon's own
    /// typed flags (e.g. `-i veth*` as `("flowd-interfaces", "veth*")`),
    /// applied before the `--set` ones.
    pub fn load(&self, typed: &[(String, String)]) -> Result<Loaded, ConfigError> {
        let mut all = typed.to_vec();
        all.extend(self.set.iter().cloned());
        Config::load(&self.source(), &all)
    }
}

impl Config {
    /// Loads the ConfigMap from `source`, then applies `overrides` (from the
    /// command line, in order). Unknown ConfigMap keys are logged and
    /// returned; unknown override keys and bad values are errors.
    pub fn load(
        source: &ConfigSource,
        overrides: &[(String, String)],
    ) -> Result<Loaded, ConfigError> {
        let data = match source {
            ConfigSource::Defaults => BTreeMap::new(),
            ConfigSource::File(p) => read_configmap_file(p)?,
            ConfigSource::Directory(p) => read_configmap_dir(p)?,
        };
        for (k, _) in overrides {
            if key(k).is_none() {
                return Err(ConfigError::UnknownOverride { key: k.clone() });
            }
        }
        let mut merged = data;
        for (k, v) in overrides {
            merged.insert(k.clone(), v.clone());
        }
        let loaded = Self::from_map(&merged)?;
        if !loaded.unknown_keys.is_empty() {
            tracing::warn!(
                keys = %loaded.unknown_keys.join(", "),
                "ignoring unknown configuration keys"
            );
        }
        Ok(loaded)
    }

    /// Builds a configuration from key/value pairs (a ConfigMap's `data`).
    pub fn from_map(data: &BTreeMap<String, String>) -> Result<Loaded, ConfigError> {
        let mut config = Config::default();
        let mut unknown_keys = Vec::new();
        for (k, raw) in data {
            let Some(def) = key(k) else {
                unknown_keys.push(k.clone());
                continue;
            };
            let v = raw.trim();
            (def.apply)(&mut config, v).map_err(|detail| ConfigError::InvalidValue {
                key: k.clone(),
                value: v.to_string(),
                expected: format!("{}{detail}", def.expected),
            })?;
        }
        config.check()?;
        Ok(Loaded {
            config,
            unknown_keys,
        })
    }

    /// Rules that involve several keys.
    fn check(&self) -> Result<(), ConfigError> {
        if !self.hubble_disable_tls
            && (self.hubble_tls_cert_file.is_none() || self.hubble_tls_key_file.is_none())
        {
            return Err(ConfigError::InvalidValue {
                key: "hubble-disable-tls".to_string(),
                value: "false".to_string(),
                expected:
                    "hubble-tls-cert-file and hubble-tls-key-file to be set when TLS is enabled"
                        .to_string(),
            });
        }
        if !self.hubble_redact_http_headers_allow.is_empty()
            && !self.hubble_redact_http_headers_deny.is_empty()
        {
            return Err(ConfigError::InvalidValue {
                key: "hubble-redact-http-headers-allow".to_string(),
                value: self.hubble_redact_http_headers_allow.join(","),
                expected: "either hubble-redact-http-headers-allow or hubble-redact-http-headers-deny, not both".to_string(),
            });
        }
        Ok(())
    }

    /// Whether URL query strings are removed from HTTP flows.
    pub fn redact_url_query(&self) -> bool {
        self.hubble_redact_enabled && self.hubble_redact_http_urlquery
    }

    /// Whether URL userinfo is removed from HTTP flows.
    pub fn redact_url_userinfo(&self) -> bool {
        self.hubble_redact_enabled && self.hubble_redact_http_userinfo
    }
}
