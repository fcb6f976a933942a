//! Every key flowd understands, described once ([`KEYS`]): name, default,
//! what is expected and how it is applied. The defaults are produced by
//! parsing the documented default strings ([`Config::default`]), so the
//! documentation cannot drift from the code.
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::model::{Config, ConfigError, KubernetesWatch, L7_MAX_BYTES, MonitorAggregation};
use super::values::*;
use crate::options::metrics::MetricsSpec;

/// One configuration key.
pub struct KeyDef {
    pub name: &'static str,
    /// The default, as it would be written in the ConfigMap.
    pub default: &'static str,
    /// What a value must look like (used in errors and docs).
    pub expected: &'static str,
    /// Short description (docs).
    pub help: &'static str,
    pub(super) apply: fn(&mut Config, &str) -> Result<(), String>,
}

impl fmt::Debug for KeyDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyDef")
            .field("name", &self.name)
            .field("default", &self.default)
            .finish()
    }
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
        "flowd-l7-http2-ports",
        "",
        "TCP ports separated by commas or spaces (with flowd-l7-dns-ports, at most 64 besides 53)",
        "Ports of HTTP/2 servers (prior-knowledge h2c, such as gRPC) whose connections flowd first sees in the middle (opened before it started) are walked too: the kernel starts at a segment of whole frames. Connections seen from their start are recognised on any port (the client preface, the server's SETTINGS).",
        |c, v| c.l7_http2_ports = p_ports(v)?
    ),
    key!(
        "flowd-l7-http2-walk-entries",
        "32768",
        "an integer from 1024 to 16777216",
        "Entries of the kernel's HTTP/2 walk table: one per HTTP/2 connection direction at each hook that sees it (4 for a connection between two pods of the node). When full, the least recently used walk is evicted and counted (flowd_datapath_http2_walks_lost_total{reason=\"evicted\"}).",
        |c, v| c.l7_http2_walk_entries = p_u32(v, 1024, 1 << 24)?
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
        "flowd-l7-http2-connections",
        "8192",
        "an integer from 16 to 1048576",
        "HTTP/2 connections whose header compression state and open streams are tracked (the least recently used is evicted; evictions are counted).",
        |c, v| c.l7_http2_connections = p_u32(v, 16, 1 << 20)?
    ),
    key!(
        "flowd-l7-http2-streams",
        "256",
        "an integer from 1 to 65536",
        "Open streams tracked per HTTP/2 connection (the oldest is evicted and its response not reported; evictions are counted).",
        |c, v| c.l7_http2_streams = p_u32(v, 1, 1 << 16)?
    ),
    key!(
        "flowd-l7-http2-header-bytes",
        "65536",
        "an integer from 1024 to 16777216",
        "Longest HTTP/2 header block (HEADERS and CONTINUATION frames) decoded; a longer one is counted and makes the messages after it on that direction partial until the decoder is in step again.",
        |c, v| c.l7_http2_header_bytes = p_u32(v, 1024, 1 << 24)?
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
            l7_http2_ports: Vec::new(),
            l7_http2_walk_entries: 0,
            l7_pairing_entries: 0,
            l7_pairing_timeout: Duration::ZERO,
            l7_http2_connections: 0,
            l7_http2_streams: 0,
            l7_http2_header_bytes: 0,
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
