//! The docs promise nothing that no test checks on the running binaries:
//! every metric name and every command-line flag in README.md and docs/
//! (configuration.md, operations.md, api.md) is mapped below to the tests
//! that run flowd, the relay or observe and check it (`file::fn`, paths from
//! the repository root). The tests fail when a documented metric or flag has
//! no entry, when an entry names a test function that does not exist, when
//! a binary's `--help` has a flag the docs lack (or the docs one it lacks),
//! and when a running flowd serves a metric the docs do not name.
//!
//! Flags and metrics that no binary-level test exercises yet are listed in
//! `UNTESTED_FLAGS` and `UNTESTED_METRICS`, in the open: an entry there must
//! not also be covered (move it to `FLAGS` / `METRICS` when a test comes).
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use flowd_lab::cluster::bins;
use flowd_tests::{ChildGuard, Netns, wait_until};

const DOCS: [&str; 4] = [
    "README.md",
    "docs/configuration.md",
    "docs/operations.md",
    "docs/api.md",
];

const CLUSTER_METRICS: &str =
    "flowd/tests/metrics_cluster.rs::metrics_on_real_traffic_match_the_report";
const GRPC_CLUSTER: &str =
    "flowd/tests/grpc_cluster.rs::grpc_calls_agree_between_the_generator_the_servers_and_flowd";
const DNS_NAMES_ENTRIES: &str =
    "flowd/tests/daemon_dns_names.rs::entries_count_each_local_pod_address_and_name";
const DNS_NAMES_BOUND: &str =
    "flowd/tests/daemon_dns_names.rs::a_full_cache_keeps_its_bound_and_counts_evictions";
const EVENT_QUEUE_STALL: &str = "flowd/tests/daemon_event_queue.rs::a_stalled_pipeline_fills_exactly_the_configured_queue_and_loses_nothing";
const DISK_FULL: &str = "flowd/tests/export_disk_full.rs::full_disk_logs_at_most_twice_a_minute";
const H2_WALKS: &str = "flowd/tests/http2_datapath.rs::walks_on_real_connections_are_counted";
const H2_PORTS: &str =
    "flowd/tests/http2_datapath.rs::http2_ports_pick_up_connections_opened_before_flowd";

const GRPC_E2E: &str =
    "flowd/tests/http2_e2e.rs::grpc_every_kind_status_concurrency_and_evictions_exact_flows";
const H2_MIDDLE: &str =
    "flowd/tests/http2_e2e.rs::a_connection_opened_before_flowd_is_flagged_never_mislabelled";
const H2_LIMITS: &str = "flowd/tests/http2_e2e.rs::limits_are_kept_and_what_they_cost_is_counted";

/// Metric (as exposed) → tests that check its value on a running flowd.
const METRICS: &[(&str, &[&str])] = &[
    ("hubble_grpc_requests_total", &[GRPC_E2E, GRPC_CLUSTER]),
    (
        "hubble_grpc_request_duration_seconds",
        &[GRPC_E2E, GRPC_CLUSTER],
    ),
    (
        "flowd_http2_partial_messages_total",
        &[H2_MIDDLE, GRPC_CLUSTER],
    ),
    ("flowd_http2_walk_losses_total", &[H2_MIDDLE, GRPC_CLUSTER]),
    ("flowd_http2_connections", &[H2_LIMITS]),
    ("flowd_http2_header_blocks_skipped_total", &[H2_LIMITS]),
    ("flowd_http2_connections_evicted_total", &[H2_LIMITS]),
    ("flowd_http2_streams_evicted_total", &[H2_LIMITS]),
    (
        "hubble_flows_processed_total",
        &[
            CLUSTER_METRICS,
            "flowd/tests/daemon_metrics.rs::deleted_pod_series_are_removed",
        ],
    ),
    (
        "hubble_drop_total",
        &["flowd/tests/drops_e2e.rs::kernel_drops_have_reasons_and_exact_counts"],
    ),
    ("hubble_tcp_flags_total", &[CLUSTER_METRICS]),
    (
        "hubble_icmp_total",
        &["flowd/tests/daemon_metrics.rs::handlers_on_real_traffic"],
    ),
    (
        "hubble_port_distribution_total",
        &[
            "flowd/tests/daemon_edge_cases.rs::port_distribution_counts_once_per_connection",
            "flowd/tests/daemon_metrics.rs::series_cap_refuses_and_counts",
        ],
    ),
    (
        "hubble_dns_queries_total",
        &[
            CLUSTER_METRICS,
            "flowd/tests/daemon_metrics.rs::handlers_on_real_traffic",
        ],
    ),
    (
        "hubble_dns_responses_total",
        &[
            CLUSTER_METRICS,
            "flowd/tests/daemon_metrics.rs::handlers_on_real_traffic",
        ],
    ),
    (
        "hubble_dns_response_types_total",
        &["flowd/tests/daemon_metrics.rs::handlers_on_real_traffic"],
    ),
    (
        "hubble_http_requests_total",
        &[
            CLUSTER_METRICS,
            "flowd/tests/daemon_edge_cases.rs::unpaired_response_is_counted_with_method_unknown",
            "flowd/tests/daemon_metrics.rs::handlers_on_real_traffic",
        ],
    ),
    (
        "hubble_http_responses_total",
        &["flowd/tests/daemon_metrics.rs::handlers_on_real_traffic"],
    ),
    (
        "hubble_http_request_duration_seconds",
        &[
            CLUSTER_METRICS,
            "flowd/tests/daemon_metrics.rs::handlers_on_real_traffic",
        ],
    ),
    (
        "hubble_lost_events_total",
        &["flowd/tests/daemon_metrics.rs::lost_events_by_source"],
    ),
    (
        "flowd_datapath_events_total",
        &["flowd/tests/drops_e2e.rs::drop_flood_costs_bounded_events"],
    ),
    (
        "flowd_datapath_events_lost_total",
        &[
            "flowd/tests/drops_e2e.rs::drop_flood_costs_bounded_events",
            "flowd/tests/daemon_metrics.rs::lost_events_by_source",
        ],
    ),
    (
        "flowd_datapath_program_runs_total",
        &["flowd/tests/drops_e2e.rs::drop_flood_costs_bounded_events"],
    ),
    (
        "flowd_datapath_full_path_runs_total",
        &["flowd/tests/drops_e2e.rs::drop_flood_costs_bounded_events"],
    ),
    ("flowd_datapath_http2_events_total", &[H2_WALKS, H2_PORTS]),
    ("flowd_datapath_http2_walks_total", &[H2_WALKS, H2_PORTS]),
    ("flowd_datapath_http2_walks_lost_total", &[H2_WALKS]),
    (
        "flowd_datapath_http2_concurrent_packets_total",
        &[H2_WALKS, H2_PORTS],
    ),
    (
        "flowd_attached_interfaces",
        &["flowd/tests/daemon_metrics.rs::flow_map_fill_and_attached_interfaces_by_mode"],
    ),
    (
        "flowd_flow_map_entries",
        &["flowd/tests/daemon_metrics.rs::flow_map_fill_and_attached_interfaces_by_mode"],
    ),
    (
        "flowd_flow_map_capacity",
        &["flowd/tests/daemon_metrics.rs::flow_map_fill_and_attached_interfaces_by_mode"],
    ),
    (
        "flowd_l7_pairing_evictions_total",
        &["flowd/tests/daemon_metrics.rs::handlers_on_real_traffic"],
    ),
    (
        "flowd_dns_name_cache_entries",
        &[DNS_NAMES_ENTRIES, DNS_NAMES_BOUND],
    ),
    ("flowd_dns_name_cache_evictions_total", &[DNS_NAMES_BOUND]),
    (
        "flowd_flows_processed_total",
        &["flowd/tests/daemon_metrics.rs::export_queue_drops_are_counted"],
    ),
    (
        "flowd_metrics_series_refused_total",
        &["flowd/tests/daemon_metrics.rs::series_cap_refuses_and_counts"],
    ),
    (
        "flowd_metrics_series_expired_total",
        &["flowd/tests/daemon_metrics.rs::deleted_pod_series_are_removed"],
    ),
    (
        "flowd_events_skipped_total",
        &["flowd/tests/daemon_edge_cases.rs::arp_frames_make_no_flows"],
    ),
    (
        "flowd_export_events_total",
        &[
            "flowd/tests/export_lab.rs::file_export_on_real_cluster_traffic",
            "flowd/tests/daemon_metrics.rs::export_queue_drops_are_counted",
            DISK_FULL,
        ],
    ),
    (
        "flowd_export_events_dropped_total",
        &[
            "flowd/tests/daemon_metrics.rs::export_queue_drops_are_counted",
            DISK_FULL,
        ],
    ),
    (
        "flowd_export_flows_filtered_total",
        &["flowd/tests/export_lab.rs::file_export_on_real_cluster_traffic"],
    ),
    ("flowd_export_errors_total", &[DISK_FULL]),
    (
        "flowd_export_queue_length",
        &["flowd/tests/daemon_metrics.rs::export_queue_drops_are_counted"],
    ),
    (
        "process_resident_memory_bytes",
        &["flowd/tests/daemon_metrics.rs::process_metrics_describe_the_daemon"],
    ),
    (
        "process_virtual_memory_bytes",
        &["flowd/tests/daemon_metrics.rs::process_metrics_describe_the_daemon"],
    ),
    (
        "process_open_fds",
        &["flowd/tests/daemon_metrics.rs::process_metrics_describe_the_daemon"],
    ),
    (
        "process_start_time_seconds",
        &["flowd/tests/daemon_metrics.rs::process_metrics_describe_the_daemon"],
    ),
    ("hubble_flows_to_world_total", &[DASHBOARDS, CATALOGUE]),
    ("hubble_policy_verdicts_total", &[CATALOGUE]),
    ("hubble_kafka_requests_total", &[CATALOGUE]),
    ("hubble_kafka_request_duration_seconds", &[CATALOGUE]),
    ("flowd_ring_buffer_used_bytes", &[DASHBOARDS]),
    ("flowd_ring_buffer_capacity_bytes", &[DASHBOARDS]),
    ("flowd_event_queue_used_events", &[EVENT_QUEUE_STALL]),
    (
        "flowd_event_queue_capacity_events",
        &[
            EVENT_QUEUE_STALL,
            "flowd/tests/daemon_event_queue.rs::default_size_follows_the_cpus",
        ],
    ),
    (
        "process_cpu_seconds_total",
        &["flowd/tests/daemon_metrics.rs::process_metrics_describe_the_daemon"],
    ),
];

/// Documented metrics no test checks on a running flowd yet (the policy and
/// kafka families are only checked to be served: flowd has no such events).
const UNTESTED_METRICS: &[&str] = &[];

const DASHBOARDS: &str =
    "flowd/tests/metrics_dashboards.rs::cilium_and_flowd_dashboards_show_the_lab_traffic";
const CATALOGUE: &str = "flowd/tests/metrics_catalogue.rs::cilium_values_with_policy_and_kafka_start_and_expose_every_family";
const LAB_FILTERS: &str = "tests/lab/tests/hubble_filters.rs::every_flow_filter_field_on_lab_traffic_through_flowd_and_the_relay";

/// Words of the docs shaped like metric names that are label values or
/// test binaries.
const NOT_METRICS: &[&str] = &["hubble_ring_buffer", "hubble_compat", "hubble_filters"];

const FILTERS: &str =
    "observe-cli/tests/e2e.rs::every_filter_and_selection_flag_reaches_the_request";
const OUTPUT: &str = "observe-cli/tests/e2e.rs::output_flags_through_the_binary";
const GRPC_CLI: &str = "observe-cli/tests/e2e.rs::grpc_filters_and_compact_output";
const RELAY_TLS: &str = "relay/tests/flags.rs::tls_flags_on_both_sides";
const RELAY_MERGE: &str = "tests/lab/tests/relay_e2e.rs::relay_merges_every_node_survives_a_killed_node_and_observe_shows_http_errors";
const RELAY_PEERS: &str =
    "tests/lab/tests/relay_e2e.rs::relay_finds_a_node_added_later_through_the_peer_service";
const DATAPATH: &str = "flowd/tests/datapath_e2e.rs::ipv4_tcp_udp_icmp_exact_counts";
const CLUSTER_TLS: &str =
    "flowd/tests/daemon_edge_cases.rs::cluster_name_sets_the_tls_names_the_relay_verifies";
const RELAY_RETRY: &str = "relay/tests/flags.rs::retry_initial_and_max_pace_reconnection";
const CERTGEN: &str =
    "flowd/tests/certgen.rs::certificates_verify_with_openssl_and_renewal_keeps_the_ca";
const CERTGEN_NAMES: &str =
    "flowd/tests/certgen.rs::secret_names_ca_validity_and_cluster_name_from_the_environment";
const CERTGEN_BAD: &str = "flowd/tests/certgen.rs::bad_input_is_refused_with_the_reason";
const CERTGEN_KUBE: &str =
    "flowd/tests/certgen_kube.rs::secrets_are_created_kept_and_updated_with_their_resource_version";

/// (binary, long flag) → tests that run the binary with it and check what
/// it does.
const FLAGS: &[(&str, &str, &[&str])] = &[
    (
        "flowd",
        "--config",
        &[
            "flowd/tests/cli_flags.rs::flags_without_meaning_are_refused_naming_them",
            "flowd/tests/deploy_manifests.rs::daemonset_capabilities_are_exactly_what_flowd_needs",
            "tests/lab/tests/cluster_smoke.rs::cluster_with_relay_sees_flows_on_every_node",
        ],
    ),
    (
        "flowd",
        "--set",
        &[
            "flowd/tests/daemon_metrics.rs::flow_map_fill_and_attached_interfaces_by_mode",
            "flowd/tests/daemon_edge_cases.rs::aggregation_levels",
        ],
    ),
    (
        "flowd",
        "--interface",
        &[
            DATAPATH,
            "flowd/tests/cli_flags.rs::absent_interface_is_logged_and_attached_when_it_appears",
            "flowd/tests/daemon_metrics.rs::flow_map_fill_and_attached_interfaces_by_mode",
        ],
    ),
    (
        "flowd",
        "--ring-buffer-bytes",
        &[
            "flowd/tests/datapath_e2e.rs::ring_buffer_losses_are_counted",
            "flowd/tests/cli_flags.rs::flow_map_entries_and_ring_buffer_bytes_size_the_kernel_maps",
        ],
    ),
    (
        "flowd",
        "--flow-map-entries",
        &[
            "flowd/tests/cli_flags.rs::flow_map_entries_and_ring_buffer_bytes_size_the_kernel_maps",
            "flowd/tests/cli_flags.rs::alone_flow_map_entries_and_ring_buffer_bytes",
        ],
    ),
    (
        "flowd",
        "--aggregation-interval",
        &[
            "flowd/tests/datapath_e2e.rs::ring_buffer_losses_are_counted",
            "flowd/tests/cli_flags.rs::aggregation_interval_wins_over_the_configmap",
        ],
    ),
    (
        "flowd",
        "--l7-max-bytes",
        &[
            "flowd/tests/cli_flags.rs::l7_max_bytes_zero_captures_no_url_with_config",
            "flowd/tests/cli_flags.rs::alone_l7_max_bytes_zero",
        ],
    ),
    (
        "flowd",
        "--print",
        &[
            DATAPATH,
            "flowd/tests/cli_flags.rs::print_and_dump_flows_on_exit_with_config",
        ],
    ),
    (
        "flowd",
        "--print-format",
        &[
            DATAPATH,
            "flowd/tests/cli_flags.rs::print_and_dump_flows_on_exit_with_config",
        ],
    ),
    (
        "flowd",
        "--dump-flows-on-exit",
        &[
            DATAPATH,
            "flowd/tests/cli_flags.rs::print_and_dump_flows_on_exit_with_config",
        ],
    ),
    (
        "flowd",
        "--no-watch-links",
        &[
            "flowd/tests/cli_flags.rs::no_watch_links_with_config",
            "flowd/tests/cli_flags.rs::alone_no_watch_links",
        ],
    ),
    (
        "flowd",
        "--drops-all",
        &[
            "flowd/tests/cli_flags.rs::alone_drops_all",
            "flowd/tests/cli_flags.rs::flags_without_meaning_are_refused_naming_them",
        ],
    ),
    ("flowd certgen", "--output-dir", &[CERTGEN, CERTGEN_BAD]),
    ("flowd certgen", "--kubernetes-secrets", &[CERTGEN_KUBE]),
    ("flowd certgen", "--namespace", &[CERTGEN_KUBE]),
    (
        "flowd certgen",
        "--cluster-name",
        &[CERTGEN, CERTGEN_NAMES, CLUSTER_TLS],
    ),
    ("flowd certgen", "--server-dns-name", &[CERTGEN]),
    ("flowd certgen", "--server-ip", &[CERTGEN]),
    ("flowd certgen", "--ca-validity", &[CERTGEN_NAMES]),
    ("flowd certgen", "--cert-validity", &[CERTGEN, CERTGEN_BAD]),
    ("flowd certgen", "--renew-before", &[CERTGEN, CERTGEN_BAD]),
    ("flowd certgen", "--force-renew", &[CERTGEN, CERTGEN_KUBE]),
    ("flowd certgen", "--renew-ca", &[CERTGEN]),
    ("flowd certgen", "--ca-secret", &[CERTGEN_NAMES]),
    ("flowd certgen", "--server-secret", &[CERTGEN_NAMES]),
    ("flowd certgen", "--relay-client-secret", &[CERTGEN_NAMES]),
    (
        "relay",
        "--listen-address",
        &["relay/tests/cli.rs::binary_serves_the_relay", RELAY_PEERS],
    ),
    (
        "relay",
        "--peer",
        &["relay/tests/cli.rs::binary_serves_the_relay", RELAY_MERGE],
    ),
    (
        "relay",
        "--peer-dns",
        &["relay/tests/flags.rs::peer_dns_resolves_nodes"],
    ),
    (
        "relay",
        "--dns-interval",
        &["relay/tests/flags.rs::dns_interval_is_how_often_peer_dns_names_are_resolved"],
    ),
    (
        "relay",
        "--peer-service",
        &[
            RELAY_PEERS,
            "flowd/tests/daemon_edge_cases.rs::cluster_name_names_nodes_and_endpoints",
            CLUSTER_TLS,
        ],
    ),
    (
        "relay",
        "--sort-buffer-len",
        &["relay/tests/flags.rs::sort_buffer_len_bounds_what_waits_for_a_slower_node"],
    ),
    (
        "relay",
        "--sort-buffer-drain-timeout",
        &[
            "relay/tests/flags.rs::sort_buffer_drain_timeout_is_how_long_flows_wait_for_a_silent_node",
            "relay/tests/flags.rs::sort_buffer_len_bounds_what_waits_for_a_slower_node",
            RELAY_MERGE,
        ],
    ),
    (
        "relay",
        "--client-buffer",
        &["relay/tests/flags.rs::client_buffer_is_what_a_slow_follower_is_kept"],
    ),
    (
        "relay",
        "--node-idle-timeout",
        &["relay/tests/flags.rs::node_idle_timeout_abandons_a_silent_node"],
    ),
    (
        "relay",
        "--dial-timeout",
        &["relay/tests/flags.rs::dial_timeout_bounds_connecting"],
    ),
    (
        "relay",
        "--node-rpc-timeout",
        &["relay/tests/flags.rs::node_rpc_timeout_bounds_the_probe"],
    ),
    (
        "relay",
        "--health-check-interval",
        &["relay/tests/flags.rs::health_check_interval_paces_the_probes"],
    ),
    ("relay", "--retry-initial", &[RELAY_RETRY]),
    ("relay", "--retry-max", &[RELAY_RETRY]),
    (
        "relay",
        "--ui-listen",
        &[
            "relay/tests/ui.rs::ui_listen_serves_the_page_map_flows_and_status",
            "relay/tests/ui.rs::ui_listen_uses_the_relays_tls_and_mtls",
        ],
    ),
    (
        "relay",
        "--shutdown-grace",
        &["relay/tests/shutdown.rs::second_signal_during_the_grace_period_exits_at_once"],
    ),
    ("relay", "--tls-relay-server-cert-file", &[RELAY_TLS]),
    ("relay", "--tls-relay-server-key-file", &[RELAY_TLS]),
    ("relay", "--tls-relay-client-ca-files", &[RELAY_TLS]),
    ("relay", "--tls-hubble-server-ca-files", &[RELAY_TLS]),
    ("relay", "--tls-hubble-client-cert-file", &[RELAY_TLS]),
    ("relay", "--tls-hubble-client-key-file", &[RELAY_TLS]),
    ("relay", "--tls-hubble-server-name", &[RELAY_TLS]),
    (
        "observe",
        "--server",
        &["observe-cli/tests/e2e.rs::flows_json_and_table"],
    ),
    (
        "observe",
        "--tls",
        &["observe-cli/tests/e2e.rs::tls_flag_makes_observe_speak_tls"],
    ),
    (
        "observe",
        "--tls-ca-cert-files",
        &["observe-cli/tests/e2e.rs::mutual_tls"],
    ),
    (
        "observe",
        "--tls-client-cert-file",
        &["observe-cli/tests/e2e.rs::mutual_tls"],
    ),
    (
        "observe",
        "--tls-client-key-file",
        &["observe-cli/tests/e2e.rs::mutual_tls"],
    ),
    (
        "observe",
        "--tls-server-name",
        &["observe-cli/tests/e2e.rs::mutual_tls"],
    ),
    (
        "observe",
        "--request-timeout",
        &[
            "observe-cli/tests/e2e.rs::silent_server_times_out_with_exit_3",
            "observe-cli/tests/e2e.rs::mutual_tls",
        ],
    ),
    (
        "observe",
        "--last",
        &["observe-cli/tests/e2e.rs::flows_json_and_table"],
    ),
    (
        "observe",
        "--first",
        &["observe-cli/tests/e2e.rs::flows_json_and_table"],
    ),
    ("observe", "--all", &[FILTERS, RELAY_MERGE]),
    (
        "observe",
        "--follow",
        &["observe-cli/tests/e2e.rs::follow_prints_flows_as_they_arrive"],
    ),
    ("observe", "--since", &[FILTERS]),
    ("observe", "--until", &[FILTERS]),
    (
        "observe",
        "--not",
        &[
            "observe-cli/tests/e2e.rs::flows_with_filters_compact",
            FILTERS,
        ],
    ),
    ("observe", "--uuid", &[FILTERS]),
    ("observe", "--ip", &[FILTERS]),
    ("observe", "--from-ip", &[FILTERS]),
    ("observe", "--to-ip", &[FILTERS]),
    ("observe", "--fqdn", &[FILTERS, LAB_FILTERS]),
    ("observe", "--from-fqdn", &[FILTERS, LAB_FILTERS]),
    ("observe", "--to-fqdn", &[FILTERS, LAB_FILTERS]),
    (
        "observe",
        "--pod",
        &[FILTERS, "observe-cli/tests/e2e.rs::mutual_tls"],
    ),
    ("observe", "--from-pod", &[FILTERS]),
    ("observe", "--to-pod", &[FILTERS]),
    (
        "observe",
        "--namespace",
        &[
            "observe-cli/tests/e2e.rs::flows_with_filters_compact",
            FILTERS,
        ],
    ),
    ("observe", "--from-namespace", &[FILTERS]),
    ("observe", "--to-namespace", &[FILTERS]),
    ("observe", "--all-namespaces", &[FILTERS]),
    ("observe", "--from-all-namespaces", &[FILTERS]),
    ("observe", "--to-all-namespaces", &[FILTERS]),
    ("observe", "--label", &[FILTERS]),
    ("observe", "--from-label", &[FILTERS]),
    ("observe", "--to-label", &[FILTERS, LAB_FILTERS]),
    ("observe", "--service", &[FILTERS]),
    ("observe", "--from-service", &[FILTERS]),
    ("observe", "--to-service", &[FILTERS]),
    ("observe", "--workload", &[FILTERS]),
    ("observe", "--from-workload", &[FILTERS]),
    ("observe", "--to-workload", &[FILTERS]),
    ("observe", "--port", &[FILTERS]),
    ("observe", "--from-port", &[FILTERS]),
    ("observe", "--to-port", &[FILTERS]),
    ("observe", "--protocol", &[FILTERS, GRPC_CLI]),
    ("observe", "--ip-version", &[FILTERS]),
    (
        "observe",
        "--verdict",
        &[
            "observe-cli/tests/e2e.rs::flows_with_filters_compact",
            FILTERS,
        ],
    ),
    ("observe", "--type", &[FILTERS]),
    (
        "observe",
        "--http-status",
        &[
            "observe-cli/tests/e2e.rs::flows_with_filters_compact",
            RELAY_MERGE,
        ],
    ),
    (
        "observe",
        "--grpc-status",
        &[FILTERS, GRPC_CLI, GRPC_CLUSTER],
    ),
    ("observe", "--grpc-service", &[FILTERS, GRPC_CLI]),
    ("observe", "--grpc-method", &[FILTERS, GRPC_CLI]),
    ("observe", "--http-method", &[FILTERS]),
    ("observe", "--http-path", &[FILTERS]),
    ("observe", "--dns-query", &[FILTERS]),
    ("observe", "--tcp-flags", &[FILTERS]),
    ("observe", "--node-name", &[FILTERS]),
    ("observe", "--traffic-direction", &[FILTERS, LAB_FILTERS]),
    ("observe", "--cluster", &[FILTERS, LAB_FILTERS]),
    ("observe", "--from-cluster", &[FILTERS, LAB_FILTERS]),
    ("observe", "--to-cluster", &[FILTERS, LAB_FILTERS]),
    ("observe", "--interface", &[LAB_FILTERS]),
    ("observe", "--http-url", &[LAB_FILTERS]),
    ("observe", "--http-header", &[LAB_FILTERS]),
    ("observe", "--node-label", &[LAB_FILTERS]),
    ("observe", "--cel-expression", &[LAB_FILTERS]),
    ("observe", "--ip-trace-id", &[LAB_FILTERS]),
    ("observe", "--encrypted", &[LAB_FILTERS]),
    ("observe", "--unencrypted", &[LAB_FILTERS]),
    (
        "observe",
        "--output",
        &["observe-cli/tests/e2e.rs::flows_json_and_table", OUTPUT],
    ),
    ("observe", "--color", &[OUTPUT]),
    ("observe", "--print-node-name", &[OUTPUT]),
    ("observe", "--time-format", &[OUTPUT]),
];

/// Documented flags no test runs a binary with yet (beyond refusing a bad
/// value): none; a new flag goes into `FLAGS` with its test.
const UNTESTED_FLAGS: &[(&str, &str)] = &[];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> Result<String> {
    std::fs::read_to_string(repo().join(rel)).with_context(|| format!("reading {rel}"))
}

/// Whether `file::fn` names a test function (`#[test]` or `#[tokio::test]`
/// just above `fn name(`).
fn test_exists(reference: &str) -> Result<bool> {
    let (file, name) = reference
        .split_once("::")
        .with_context(|| format!("{reference}: expected file::fn"))?;
    let text = read(file)?;
    let lines: Vec<&str> = text.lines().collect();
    let decl = format!("fn {name}(");
    Ok(lines.iter().enumerate().any(|(i, l)| {
        l.trim_start()
            .trim_start_matches("pub ")
            .trim_start_matches("async ")
            .starts_with(&decl)
            && lines[i.saturating_sub(3)..i]
                .iter()
                .any(|a| a.contains("#[test]") || a.contains("#[tokio::test"))
    }))
}

/// Metric-shaped words of the docs (`hubble_…`, `flowd_…`, `process_…`).
fn documented_metrics() -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for doc in DOCS {
        let text = read(doc)?;
        let bytes = text.as_bytes();
        for prefix in ["hubble_", "flowd_", "process_"] {
            for (i, _) in text.match_indices(prefix) {
                // Part of a longer word, of a path (`tests/…/hubble_filters.rs`)
                // or of a test's name (`hubble_compat::…`).
                if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || b"_/:".contains(&bytes[i - 1]))
                {
                    continue;
                }
                let end = text[i..]
                    .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                    .map_or(text.len(), |e| i + e);
                if text[end..].starts_with("::") || text[end..].starts_with(".rs") {
                    continue;
                }
                let word = &text[i..end];
                if word.len() > prefix.len() && !NOT_METRICS.contains(&word) {
                    out.insert(word.to_string());
                }
            }
        }
    }
    Ok(out)
}

#[test]
fn every_documented_metric_has_a_daemon_test() -> Result<()> {
    let documented = documented_metrics()?;
    let table: BTreeSet<String> = METRICS.iter().map(|(m, _)| m.to_string()).collect();
    let untested: BTreeSet<String> = UNTESTED_METRICS.iter().map(|m| m.to_string()).collect();
    let both: Vec<_> = table.intersection(&untested).collect();
    ensure!(both.is_empty(), "in METRICS and UNTESTED_METRICS: {both:?}");
    let known: BTreeSet<String> = table.union(&untested).cloned().collect();
    let missing: Vec<_> = documented.difference(&known).collect();
    ensure!(
        missing.is_empty(),
        "documented metrics without a test in METRICS: {missing:?}"
    );
    let stale: Vec<_> = known.difference(&documented).collect();
    ensure!(
        stale.is_empty(),
        "METRICS lists metrics the docs do not name: {stale:?}"
    );
    let mut bad = Vec::new();
    for (m, tests) in METRICS {
        ensure!(!tests.is_empty(), "{m}: no test");
        for t in *tests {
            if !test_exists(t)? {
                bad.push(format!("{m}: {t}"));
            }
        }
    }
    ensure!(bad.is_empty(), "test functions that do not exist: {bad:#?}");
    Ok(())
}

/// Long flags of a clap `--help` text: the first `--name` of each option line.
fn long_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| {
            l.split([' ', ','])
                .find(|t| t.starts_with("--"))
                .map(|t| t.split(['=', '<', '[']).next().unwrap_or(t).to_string())
        })
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

/// The flags of each binary's table in docs/configuration.md (section
/// "Command-line flags", one `### \`binary\`` table each).
fn documented_flags() -> Result<BTreeMap<String, BTreeSet<String>>> {
    let text = read("docs/configuration.md")?;
    let section = text
        .split("## Command-line flags")
        .nth(1)
        .context("no Command-line flags section")?;
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in section.lines() {
        if let Some(b) = line.strip_prefix("### `").and_then(|l| l.strip_suffix('`')) {
            current = Some(b.to_string());
            continue;
        }
        let (Some(b), Some(cell)) = (&current, line.strip_prefix("| `")) else {
            continue;
        };
        let cell = cell.split(" |").next().unwrap_or(cell);
        if let Some(f) = cell
            .split('`')
            .find(|t| t.starts_with("--"))
            .map(|t| t.split([' ', '<', '=']).next().unwrap_or(t).to_string())
        {
            out.entry(b.clone()).or_default().insert(f);
        }
    }
    Ok(out)
}

#[test]
fn every_documented_flag_has_a_binary_test_and_help_agrees() -> Result<()> {
    let documented = documented_flags()?;
    ensure!(
        documented.keys().map(String::as_str).collect::<Vec<_>>()
            == ["flowd", "flowd certgen", "observe", "relay"],
        "binaries documented: {:?}",
        documented.keys()
    );
    let mut problems = Vec::new();
    let mut help_flags: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for bin in ["flowd", "flowd certgen", "relay", "observe"] {
        // `flowd certgen` is a subcommand with its own flags.
        let mut words = bin.split(' ');
        let exe = words.next().context("empty binary name")?;
        let out = Command::new(bins::path(exe)?)
            .args(words)
            .arg("--help")
            .output()?;
        ensure!(out.status.success(), "{bin} --help failed");
        let help = long_flags(&String::from_utf8_lossy(&out.stdout));
        ensure!(help.len() >= 5, "{bin} --help lists only {help:?}");
        let docs = &documented[bin];
        for f in help.difference(docs) {
            problems.push(format!("{bin} --help has {f}, the docs do not"));
        }
        for f in docs.difference(&help) {
            problems.push(format!("the docs list {bin} {f}, its --help does not"));
        }
        help_flags.insert(bin, help);
    }
    let covered: BTreeSet<(&str, &str)> = FLAGS.iter().map(|(b, f, _)| (*b, *f)).collect();
    let untested: BTreeSet<(&str, &str)> = UNTESTED_FLAGS.iter().copied().collect();
    for (bin, flags) in &documented {
        for f in flags {
            let key = (bin.as_str(), f.as_str());
            match (covered.contains(&key), untested.contains(&key)) {
                (true, true) => problems.push(format!("{bin} {f} is in FLAGS and UNTESTED_FLAGS")),
                (false, false) => problems.push(format!("{bin} {f}: documented, in neither table")),
                _ => {}
            }
        }
    }
    for (bin, f) in covered.iter().chain(&untested) {
        if !documented.get(*bin).is_some_and(|d| d.contains(*f)) {
            problems.push(format!("{bin} {f}: in a table, not documented"));
        }
    }
    for (bin, f, tests) in FLAGS {
        if tests.is_empty() {
            problems.push(format!("{bin} {f}: no test"));
        }
        for t in *tests {
            if !test_exists(t)? {
                problems.push(format!("{bin} {f}: no test function {t}"));
            }
        }
    }
    // Flags named elsewhere in the docs are some binary's, and in the tables.
    let all: BTreeSet<&String> = help_flags.values().flatten().collect();
    for doc in DOCS {
        let text = read(doc)?;
        for (i, _) in text.match_indices("--") {
            let word: String = text[i..]
                .chars()
                .skip(2)
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
                .collect();
            let flag = format!("--{word}");
            if all.contains(&flag) && !documented.values().any(|d| d.contains(&flag)) {
                problems.push(format!("{doc} names {flag}, no binary table has it"));
            }
        }
    }
    ensure!(problems.is_empty(), "{problems:#?}");
    eprintln!(
        "{} documented flags have binary-level tests; {} do not yet: {:?}",
        FLAGS.len(),
        UNTESTED_FLAGS.len(),
        UNTESTED_FLAGS
    );
    Ok(())
}

/// What `--help` lists, documented and covered: a running flowd (every
/// handler enabled) serves no metric the docs and METRICS do not name.
#[test]
fn every_served_metric_is_documented() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "this test runs flowd in a network namespace: run it as root"
    );
    let ns = Netns::new("docscov")?;
    let mut cmd = ns.command(bins::path("flowd")?);
    cmd.args([
        "--set",
        "hubble-listen-address=127.0.0.1:4244",
        "--set",
        "hubble-metrics-server=127.0.0.1:9965",
        "--set",
        "hubble-metrics=flow drop tcp icmp port-distribution dns:query http",
    ]);
    let mut flowd = ChildGuard::spawn("flowd", &mut cmd)?;
    let text = wait_until("flowd's /metrics", Duration::from_secs(30), || {
        if let Some(st) = flowd.try_wait()? {
            bail!("flowd exited: {st}");
        }
        Ok(ns
            .run(|| -> Result<String> {
                let mut s = std::net::TcpStream::connect("127.0.0.1:9965")?;
                s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
                let mut raw = String::new();
                s.read_to_string(&mut raw)?;
                Ok(raw)
            })?
            .ok())
    })?;
    let mut served = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        // The Prometheus text format names counters with their `_total`.
        if let Some(name) = rest.split_whitespace().next() {
            served.insert(name.to_string());
        }
    }
    // flowd's own metrics are always there; a per-flow metric only once it
    // has a series (the other tests give them theirs).
    ensure!(served.len() >= 15, "too few metrics: {text}");
    let table: BTreeSet<String> = METRICS
        .iter()
        .map(|(m, _)| *m)
        .chain(UNTESTED_METRICS.iter().copied())
        .map(str::to_string)
        .collect();
    let undocumented: Vec<_> = served.difference(&table).collect();
    ensure!(
        undocumented.is_empty(),
        "flowd serves metrics the docs do not name: {undocumented:?}"
    );
    Ok(())
}
