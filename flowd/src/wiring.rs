//! Each part's options, built from the configuration: the parts take their
//! own option types and never read [`Config`]; this is the one place that
//! knows which ConfigMap key feeds which option.
use std::time::Duration;

use flowd_tls::{ServerFiles, ServerTls, TlsError};
use tracing::info;

use crate::config::{Config, MonitorAggregation};
use crate::datapath::{self, DatapathConfig};
use crate::endpoints::{StoreConfig, names::NameCacheConfig};
use crate::export::{
    ExportError, ExportStats, Exporters, Selection, file::FileOptions, otlp::OtlpOptions,
};
use crate::metrics::MetricsOptions;
use crate::observer::{ObserverConfig, default_version};
use crate::parser::{
    H2Limits, HttpConfig, HttpConfigError, PairingLimits, ParserConfig, RedactConfig,
};
use crate::peer::{DEFAULT_PORT, PeerConfig};

/// The Observer's buffer, streams and identity.
pub fn observer(c: &Config) -> ObserverConfig {
    ObserverConfig {
        capacity: c.hubble_event_buffer_capacity as usize,
        max_streams: c.max_streams as usize,
        stream_queue: (c.stream_queue_size as usize).max(1),
        node_name: c.absolute_node_name(),
        address: c
            .hubble_listen_address
            .map(|a| a.to_string())
            .unwrap_or_default(),
        version: default_version(),
    }
}

/// The Observer API's TLS from the `hubble-disable-tls` / `hubble-tls-*`
/// keys: None when TLS is disabled; with `hubble-tls-client-ca-files`,
/// clients must present a certificate issued by one of those CAs (mTLS).
/// The files are re-read when they change (see `flowd_tls`). Fails when a
/// file cannot be read, is not PEM, or the key does not match.
pub fn observer_tls(c: &Config) -> Result<Option<ServerTls>, TlsError> {
    if c.hubble_disable_tls {
        return Ok(None);
    }
    let missing = |what| TlsError {
        what,
        path: String::new(),
        reason: "not set (required when hubble-disable-tls is false)".into(),
    };
    ServerTls::load(ServerFiles {
        cert_file: c
            .hubble_tls_cert_file
            .clone()
            .ok_or_else(|| missing("hubble-tls-cert-file"))?,
        key_file: c
            .hubble_tls_key_file
            .clone()
            .ok_or_else(|| missing("hubble-tls-key-file"))?,
        client_ca_files: c.hubble_tls_client_ca_files.clone(),
    })
    .map(Some)
}

/// What the peer service announces about this node.
pub fn peer(c: &Config) -> PeerConfig {
    PeerConfig {
        port: c.hubble_listen_address.map_or(DEFAULT_PORT, |a| a.port()),
        tls: !c.hubble_disable_tls,
        cluster_name: c.cluster_name.clone(),
    }
}

/// The metrics handlers and their limits.
pub fn metrics(c: &Config) -> MetricsOptions {
    MetricsOptions {
        spec: c.hubble_metrics.clone(),
        max_series: c.metrics_max_series as usize,
        series_ttl: c.metrics_series_ttl,
        open_metrics: c.enable_hubble_open_metrics,
        count_once: c.metrics_count_once,
    }
}

/// The export file's rotation, selection and queue.
pub fn export_file(c: &Config, path: &str) -> Result<FileOptions, ExportError> {
    let max_bytes = if c.export_file_max_size_bytes > 0 {
        c.export_file_max_size_bytes
    } else {
        u64::from(c.hubble_export_file_max_size_mb) << 20
    };
    Ok(FileOptions {
        // flowd extension: `{node}` names the node, for nodes that share
        // a filesystem (one host running several flowds, tests).
        path: path.replace("{node}", &c.node_name),
        max_bytes,
        max_backups: c.hubble_export_file_max_backups,
        compress: c.hubble_export_file_compress,
        selection: Selection::new(
            &c.hubble_export_allowlist,
            &c.hubble_export_denylist,
            &c.hubble_export_fieldmask,
        )?,
        queue_size: c.export_file_queue_size as usize,
        node_name: c.absolute_node_name(),
        ..FileOptions::new(path)
    })
}

/// The OTLP exporter's queue and spans.
pub fn export_otlp(c: &Config, endpoint: &str) -> OtlpOptions {
    OtlpOptions {
        queue_size: c.export_otlp_queue_size as usize,
        l7_spans: c.export_otlp_l7_spans,
        node_name: c.node_name.clone(),
        cluster_name: c.cluster_name.clone(),
        ..OtlpOptions::new(endpoint)
    }
}

/// Starts the export sinks the configuration enables. Must run inside a
/// tokio runtime when OTLP export is enabled.
pub fn exporters(c: &Config, stats: ExportStats) -> Result<Exporters, ExportError> {
    let mut ex = Exporters::none(stats);
    if let Some(path) = &c.hubble_export_file_path {
        let opts = export_file(c, path)?;
        info!(path = %path, max_bytes = opts.max_bytes, "exporting flows to a file");
        ex.add_file(opts)?;
    }
    if let Some(endpoint) = &c.export_otlp_endpoint {
        let opts = export_otlp(c, endpoint);
        info!(%endpoint, "exporting flows to an OTLP collector");
        ex.add_otlp(opts)?;
    }
    Ok(ex)
}

/// The datapath settings the configuration asks for.
pub fn datapath(c: &Config) -> DatapathConfig {
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
        l7_http2_ports: c.l7_http2_ports.clone(),
        http2_walk_entries: c.l7_http2_walk_entries,
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
pub fn parser(c: &Config) -> Result<ParserConfig, HttpConfigError> {
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
        http2: H2Limits {
            max_connections: c.l7_http2_connections as usize,
            max_streams: c.l7_http2_streams as usize,
            max_header_block: c.l7_http2_header_bytes as usize,
            max_age_ns: u64::try_from(c.l7_pairing_timeout.as_nanos()).unwrap_or(u64::MAX),
        },
    })
}

/// The endpoint store's node and cluster.
pub fn endpoint_store(c: &Config) -> StoreConfig {
    StoreConfig {
        node_name: c.node_name.clone(),
        cluster_name: c.cluster_name.clone(),
        ..StoreConfig::default()
    }
}

/// The DNS name cache's bound and shortest TTL.
pub fn name_cache(c: &Config) -> NameCacheConfig {
    NameCacheConfig {
        max_entries: c.dns_name_cache_entries as usize,
        min_ttl: c.tofqdns_min_ttl,
    }
}
