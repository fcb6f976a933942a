//! Configuration from a ConfigMap file or directory, overrides, unknown keys
//! and every kind of bad value.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use clap::Parser;
use flowd::config::{
    Config, ConfigArgs, ConfigError, ConfigSource, KEYS, KubernetesWatch, MonitorAggregation,
    parse_override,
};
use flowd::options::interfaces::AttachMode;
use flowd::options::metrics::HandlerKind;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A directory removed on drop (also when the test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "flowd-config-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ov(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_parse_and_are_documented() {
    let c = Config::default();
    assert!(c.enable_hubble);
    assert_eq!(
        c.hubble_listen_address,
        Some("0.0.0.0:4244".parse().unwrap())
    );
    assert_eq!(
        c.hubble_metrics_server,
        Some("0.0.0.0:9965".parse().unwrap())
    );
    assert_eq!(c.hubble_event_buffer_capacity, 4095);
    assert!(c.hubble_event_queue_size >= 1024 && c.hubble_event_queue_size <= 16384);
    assert_eq!(c.hubble_export_file_max_size_mb, 10);
    assert_eq!(c.hubble_export_file_max_backups, 5);
    assert!(c.hubble_metrics.handlers.is_empty());
    assert_eq!(c.monitor_aggregation, MonitorAggregation::Medium);
    assert_eq!(c.monitor_aggregation_interval, Duration::from_secs(5));
    assert_eq!(c.l7_max_bytes, 512);
    assert_eq!(c.l7_dns_ports, vec![53]);
    assert_eq!(c.metrics_max_series, 10_000);
    assert_eq!(c.metrics_series_ttl, Some(Duration::from_secs(3600)));
    assert!(c.metrics_count_once);
    assert!(c.redact_url_query() && c.redact_url_userinfo());
    assert!(!c.node_name.is_empty(), "node name resolved from the host");

    // Every default string parses on its own (no cross-key dependency).
    for k in KEYS {
        let loaded = Config::from_map(&map(&[(k.name, k.default)]))
            .unwrap_or_else(|e| panic!("default of {} does not parse: {e}", k.name));
        assert!(loaded.unknown_keys.is_empty());
    }

    // The reference documents every key with its default.
    let doc = std::fs::read_to_string(repo_file("docs/configuration.md")).unwrap();
    for k in KEYS {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` ", k.name)))
            .unwrap_or_else(|| panic!("docs/configuration.md lacks a row for {}", k.name));
        let default = if k.default.is_empty() {
            "(empty)".to_string()
        } else {
            format!("`{}`", k.default)
        };
        assert!(
            row.contains(&default),
            "docs/configuration.md: default of {} should be {default}: {row}",
            k.name
        );
    }
}

#[test]
fn example_configmap_file() {
    let path = repo_file("examples/configmap.yaml");
    let loaded = Config::load(&ConfigSource::from_path(&path), &[]).unwrap();
    assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
    let c = loaded.config;
    assert!(c.enable_hubble);
    assert_eq!(
        c.hubble_listen_address,
        Some("0.0.0.0:4244".parse().unwrap())
    );
    assert_eq!(
        c.hubble_metrics_server,
        Some("0.0.0.0:9965".parse().unwrap())
    );
    // mTLS with the files the DaemonSet mounts from flowd-server-certs.
    assert!(!c.hubble_disable_tls);
    assert_eq!(
        c.hubble_tls_cert_file.as_deref(),
        Some(std::path::Path::new("/var/lib/flowd/tls/server.crt"))
    );
    assert_eq!(
        c.hubble_tls_key_file.as_deref(),
        Some(std::path::Path::new("/var/lib/flowd/tls/server.key"))
    );
    assert_eq!(
        c.hubble_tls_client_ca_files,
        [std::path::PathBuf::from("/var/lib/flowd/tls/client-ca.crt")]
    );
    assert!(c.hubble_relay_enabled);
    assert!(!c.hubble_ui_enabled);
    assert_eq!(c.hubble_event_buffer_capacity, 4095);
    assert_eq!(c.hubble_export_file_path, None);
    assert_eq!(c.interfaces.len(), 1);
    assert_eq!(c.interfaces[0].pattern.as_str(), "lxc*");
    assert_eq!(c.interfaces[0].mode, AttachMode::Tc);
    assert!(c.interfaces[0].matches("lxc0123456789ab"));
    assert!(!c.interfaces[0].matches("eth0"));
    assert_eq!(c.kubernetes, KubernetesWatch::Off);
    let kinds: Vec<HandlerKind> = c.hubble_metrics.handlers.iter().map(|h| h.kind).collect();
    assert_eq!(
        kinds,
        vec![
            HandlerKind::Dns,
            HandlerKind::Drop,
            HandlerKind::Tcp,
            HandlerKind::Flow,
            HandlerKind::PortDistribution,
            HandlerKind::Icmp,
            HandlerKind::FlowsToWorld,
            HandlerKind::HttpV2,
            HandlerKind::Grpc
        ]
    );
    let dns = c.hubble_metrics.get(HandlerKind::Dns).unwrap();
    assert!(dns.dns_query && dns.dns_ignore_aaaa);
    let http = c.hubble_metrics.get(HandlerKind::HttpV2).unwrap();
    assert!(http.exemplars);
    assert_eq!(http.context.label_names().len(), 7);
    let grpc = c.hubble_metrics.get(HandlerKind::Grpc).unwrap();
    assert!(grpc.exemplars);
    // source, destination, source_namespace, destination_namespace.
    assert_eq!(grpc.context.label_names().len(), 4);

    // The example shows every key flowd knows.
    let text = std::fs::read_to_string(&path).unwrap();
    for k in KEYS {
        assert!(
            text.contains(&format!("  {}:", k.name)),
            "examples/configmap.yaml lacks {}",
            k.name
        );
    }
}

#[test]
fn mounted_configmap_directory() {
    // The layout kubelet creates: a timestamped directory, `..data` pointing
    // at it, and one symlink per key.
    let dir = TempDir::new("dir");
    let ts = dir.0.join("..2026_11_25_18_00_00.123");
    std::fs::create_dir(&ts).unwrap();
    std::fs::write(ts.join("hubble-event-buffer-capacity"), "16383\n").unwrap();
    std::fs::write(ts.join("hubble-listen-address"), "127.0.0.1:14244").unwrap();
    std::fs::write(
        ts.join("flowd-interfaces"),
        "veth*=tc eth1=xdp lo=xdp-generic",
    )
    .unwrap();
    std::fs::write(ts.join("hubble-metrics"), "flow tcp").unwrap();
    std::fs::write(ts.join("some-cilium-key"), "x").unwrap();
    std::os::unix::fs::symlink(ts.file_name().unwrap(), dir.0.join("..data")).unwrap();
    for k in [
        "hubble-event-buffer-capacity",
        "hubble-listen-address",
        "flowd-interfaces",
        "hubble-metrics",
        "some-cilium-key",
    ] {
        std::os::unix::fs::symlink(format!("..data/{k}"), dir.0.join(k)).unwrap();
    }
    let src = ConfigSource::from_path(&dir.0);
    assert!(matches!(src, ConfigSource::Directory(_)));
    let loaded = Config::load(&src, &[]).unwrap();
    assert_eq!(loaded.unknown_keys, vec!["some-cilium-key".to_string()]);
    let c = loaded.config;
    assert_eq!(c.hubble_event_buffer_capacity, 16383);
    assert_eq!(
        c.hubble_listen_address,
        Some("127.0.0.1:14244".parse::<SocketAddr>().unwrap())
    );
    let modes: Vec<(&str, AttachMode)> = c
        .interfaces
        .iter()
        .map(|i| (i.pattern.as_str(), i.mode))
        .collect();
    assert_eq!(
        modes,
        vec![
            ("veth*", AttachMode::Tc),
            ("eth1", AttachMode::Xdp),
            ("lo", AttachMode::XdpGeneric)
        ]
    );
    assert_eq!(c.hubble_metrics.handlers.len(), 2);
}

#[test]
fn overrides_win_and_are_checked() {
    let path = repo_file("examples/configmap.yaml");
    let src = ConfigSource::File(path);
    let loaded = Config::load(
        &src,
        &ov(&[
            ("hubble-listen-address", "127.0.0.1:0"),
            ("hubble-metrics", "drop"),
            ("flowd-node-name", "node-a"),
            ("flowd-metrics-series-ttl", "0"),
        ]),
    )
    .unwrap();
    let c = loaded.config;
    assert_eq!(
        c.hubble_listen_address,
        Some("127.0.0.1:0".parse().unwrap())
    );
    assert_eq!(c.hubble_metrics.handlers.len(), 1);
    assert_eq!(c.node_name, "node-a");
    assert_eq!(c.metrics_series_ttl, None);

    // The last override of a key wins.
    let c = Config::load(
        &ConfigSource::Defaults,
        &ov(&[("flowd-max-streams", "5"), ("flowd-max-streams", "7")]),
    )
    .unwrap()
    .config;
    assert_eq!(c.max_streams, 7);

    // A typo on the command line is an error, not a warning.
    let err = Config::load(&src, &ov(&[("hubble-listen-adress", ":1")])).unwrap_err();
    assert!(
        matches!(err, ConfigError::UnknownOverride { ref key } if key == "hubble-listen-adress")
    );

    // An override is validated like a ConfigMap value.
    let err = Config::load(&src, &ov(&[("hubble-event-buffer-capacity", "5000")])).unwrap_err();
    assert!(
        matches!(err, ConfigError::InvalidValue { ref key, ref value, .. } if key == "hubble-event-buffer-capacity" && value == "5000")
    );

    assert_eq!(
        parse_override("flowd-interfaces=veth*=tc").unwrap(),
        ("flowd-interfaces".to_string(), "veth*=tc".to_string())
    );
    assert_eq!(
        parse_override("hubble-export-file-path=").unwrap(),
        ("hubble-export-file-path".to_string(), String::new())
    );
    assert!(matches!(
        parse_override("enable-hubble"),
        Err(ConfigError::OverrideSyntax { .. })
    ));
    assert!(matches!(
        parse_override("=x"),
        Err(ConfigError::OverrideSyntax { .. })
    ));
}

#[test]
fn unknown_keys_are_listed_not_fatal() {
    let loaded = Config::from_map(&map(&[
        ("enable-hubble", "true"),
        ("cluster-id", "3"),
        ("flowd-interface", "veth*"),
    ]))
    .unwrap();
    assert_eq!(
        loaded.unknown_keys,
        vec!["cluster-id".to_string(), "flowd-interface".to_string()]
    );
}

/// Loads one bad key and checks the error names the key, the value and what
/// is expected.
fn bad(key: &str, value: &str, expected_part: &str) {
    let err = Config::from_map(&map(&[(key, value)]))
        .err()
        .unwrap_or_else(|| panic!("{key}={value:?} was accepted"));
    let ConfigError::InvalidValue {
        key: k,
        value: v,
        expected,
    } = &err
    else {
        panic!("{key}={value:?}: unexpected error kind {err:?}");
    };
    assert_eq!(k, key);
    assert_eq!(v, value.trim());
    assert!(
        expected.contains(expected_part),
        "{key}={value:?}: expected {expected_part:?} in {expected:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(key) && msg.contains(&format!("{:?}", value.trim())),
        "{msg}"
    );
}

#[test]
fn each_bad_value_kind_is_refused() {
    bad("enable-hubble", "yes", "boolean");
    bad("hubble-listen-address", "localhost:4244", "[ip]:port");
    bad("hubble-listen-address", ":99999", "[ip]:port");
    bad("hubble-metrics-server", "9965", "[ip]:port");
    bad(
        "hubble-event-buffer-capacity",
        "4096",
        "one less than a power of two",
    );
    bad(
        "hubble-event-buffer-capacity",
        "0",
        "one less than a power of two",
    );
    bad("hubble-event-buffer-capacity", "131071", "from 1 to 65535");
    bad(
        "hubble-event-buffer-capacity",
        "-1",
        "one less than a power of two",
    );
    bad("hubble-export-file-max-size-mb", "0", "from 1");
    bad("hubble-export-file-max-backups", "many", "integer");
    bad(
        "hubble-export-allowlist",
        "{\"source_pod\": [",
        "JSON FlowFilter",
    );
    bad(
        "hubble-export-denylist",
        "[1,2]",
        "every filter must be a JSON object",
    );
    bad("monitor-aggregation", "high", "medium, max or maximum");
    bad("monitor-aggregation", "5", "level numbers 0 to 4");
    bad("cluster-name", "East", "lower-case letters");
    bad("cluster-name", "", "at most 32");
    bad("cluster-name", "-east", "starting and ending");
    bad("monitor-aggregation-interval", "5 parsecs", "duration");
    bad("flowd-interfaces", "veth*=ebpf", "\"ebpf\"");
    bad("flowd-interfaces", "veth[=tc", "veth[");
    bad("flowd-ring-buffer-bytes", "1000000", "power of two");
    bad("flowd-flow-map-entries", "10", "from 1024");
    bad("flowd-l7-max-bytes", "4096", "from 0 to 512");
    bad(
        "flowd-l7-dns-ports",
        "53 5353 70000",
        "\"70000\" is not a port",
    );
    bad(
        "flowd-l7-http2-ports",
        "50051 grpc",
        "\"grpc\" is not a port",
    );
    bad("flowd-l7-http2-walk-entries", "100", "from 1024");
    bad("flowd-kubernetes", "yes", "off, node or all");
    bad("flowd-export-otlp-endpoint", "collector:4317", "http");
    // hubble-metrics: the error names the handler and the option.
    bad(
        "hubble-metrics",
        "flow bogus",
        "unknown metrics handler \"bogus\"",
    );
    bad(
        "hubble-metrics",
        "dns:query;ignoreA",
        "metrics handler \"dns\": unknown option \"ignoreA\"",
    );
    bad(
        "hubble-metrics",
        "httpV2:sourceContext=workload-name|nodes",
        "metrics handler \"httpV2\": option \"sourceContext\" has invalid value \"workload-name|nodes\"",
    );
    bad(
        "hubble-metrics",
        "httpV2:labelsContext=source_ip,source_node",
        "option \"labelsContext\"",
    );
    bad(
        "hubble-metrics",
        "httpV2:exemplars=yes",
        "option \"exemplars\"",
    );
    bad(
        "hubble-metrics",
        "tcp:query",
        "metrics handler \"tcp\": unknown option \"query\"",
    );
    bad("hubble-metrics", "http httpV2", "cannot both be enabled");
    bad("hubble-metrics", "flow flow", "listed twice");
}

#[test]
fn cross_key_rules() {
    let err = Config::from_map(&map(&[("hubble-disable-tls", "false")])).unwrap_err();
    assert!(err.to_string().contains("hubble-tls-cert-file"), "{err}");
    let ok = Config::from_map(&map(&[
        ("hubble-disable-tls", "false"),
        ("hubble-tls-cert-file", "/etc/flowd/tls.crt"),
        ("hubble-tls-key-file", "/etc/flowd/tls.key"),
    ]))
    .unwrap();
    assert!(!ok.config.hubble_disable_tls);
    let err = Config::from_map(&map(&[
        ("hubble-redact-http-headers-allow", "content-type"),
        ("hubble-redact-http-headers-deny", "authorization"),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("not both"), "{err}");
    // DNS and HTTP/2 ports share one kernel map of 64 entries (53 aside).
    let dns: Vec<String> = (1000..1040).map(|p: u16| p.to_string()).collect();
    let h2: Vec<String> = (1030..1065).map(|p: u16| p.to_string()).collect();
    let (dns, h2) = (format!("53 {}", dns.join(" ")), h2.join(","));
    let err = Config::from_map(&map(&[
        ("flowd-l7-dns-ports", &dns),
        ("flowd-l7-http2-ports", &h2),
    ]))
    .unwrap_err();
    assert!(
        err.to_string().contains("at most 64 ports") && err.to_string().contains("not 65"),
        "{err}"
    );
    let ok = Config::from_map(&map(&[
        ("flowd-l7-dns-ports", &dns),
        ("flowd-l7-http2-ports", &h2[..h2.rfind(',').unwrap()]),
    ]))
    .unwrap();
    assert_eq!(ok.config.l7_http2_ports.len(), 34);
}

#[test]
fn unusable_files_are_refused_with_the_path() {
    let dir = TempDir::new("bad");
    let missing = dir.0.join("nope.yaml");
    let err = Config::load(&ConfigSource::File(missing.clone()), &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Read { ref path, .. } if *path == missing));

    let yaml = dir.0.join("bad.yaml");
    std::fs::write(&yaml, "kind: ConfigMap\ndata: [unterminated\n").unwrap();
    let err = Config::load(&ConfigSource::File(yaml.clone()), &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Yaml { .. }), "{err:?}");
    assert!(err.to_string().contains("bad.yaml"));

    let secret = dir.0.join("secret.yaml");
    std::fs::write(&secret, "kind: Secret\ndata: {}\n").unwrap();
    let err = Config::load(&ConfigSource::File(secret), &[]).unwrap_err();
    assert!(err.to_string().contains("\"Secret\""), "{err}");

    let nested = dir.0.join("nested.yaml");
    std::fs::write(
        &nested,
        "kind: ConfigMap\ndata:\n  hubble-metrics: [flow]\n",
    )
    .unwrap();
    let err = Config::load(&ConfigSource::File(nested), &[]).unwrap_err();
    assert!(err.to_string().contains("hubble-metrics"), "{err}");

    // Unquoted scalars are taken at their face value.
    let scalars = dir.0.join("scalars.yaml");
    std::fs::write(
        &scalars,
        "apiVersion: v1\nkind: ConfigMap\ndata:\n  enable-hubble: false\n  hubble-event-buffer-capacity: 1023\n",
    )
    .unwrap();
    let c = Config::load(&ConfigSource::File(scalars), &[])
        .unwrap()
        .config;
    assert!(!c.enable_hubble);
    assert_eq!(c.hubble_event_buffer_capacity, 1023);
}

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

#[test]
fn command_line_flags() {
    let example = repo_file("examples/configmap.yaml");
    let cli = Cli::try_parse_from([
        "flowd".as_ref(),
        "--config".as_ref(),
        example.as_os_str(),
        "--set".as_ref(),
        "hubble-metrics=flow".as_ref(),
        "--set".as_ref(),
        "flowd-node-name=node-b".as_ref(),
    ])
    .unwrap();
    assert!(matches!(cli.config.source(), ConfigSource::File(_)));
    let c = cli
        .config
        .load(&[
            ("flowd-node-name".to_string(), "from-typed-flag".to_string()),
            ("flowd-interfaces".to_string(), "veth*".to_string()),
        ])
        .unwrap()
        .config;
    // --set wins over the typed flags, which win over the ConfigMap.
    assert_eq!(c.node_name, "node-b");
    assert_eq!(c.interfaces[0].pattern.as_str(), "veth*");
    assert_eq!(c.hubble_metrics.handlers.len(), 1);

    let err = Cli::try_parse_from(["flowd", "--set", "no-equals-sign"]).unwrap_err();
    assert!(err.to_string().contains("expected key=value"), "{err}");
    let none = Cli::try_parse_from(["flowd"]).unwrap();
    assert_eq!(none.config.source(), ConfigSource::Defaults);
}

/// Runs the real flowd binary to completion (killed after a deadline: a
/// daemon that started instead of refusing is a failure, not a hang).
fn run_flowd(args: &[&std::ffi::OsStr]) -> (std::process::ExitStatus, String) {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowd"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flowd {args:?} did not exit: it started with a bad configuration");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

/// Issue 6: a bad `hubble-metrics` value stops flowd at start (exit status
/// non-zero) with an error naming the key, the handler and the option —
/// through the binary's own start path, from --set and from a ConfigMap file.
#[test]
fn bad_hubble_metrics_stop_the_binary_with_a_clear_error() {
    let example = repo_file("examples/configmap.yaml");
    let cases = [
        (
            "dns:query;ignoreA",
            "metrics handler \"dns\": unknown option \"ignoreA\"",
        ),
        (
            "httpV2:sourceContext=workload-name|nodes",
            "metrics handler \"httpV2\": option \"sourceContext\" has invalid value \"workload-name|nodes\"",
        ),
        ("httpV2:exemplars=yes", "metrics handler \"httpV2\""),
        ("flow bogus", "unknown metrics handler \"bogus\""),
    ];
    for (value, want) in cases {
        let set = format!("hubble-metrics={value}");
        let (status, stderr) = run_flowd(&[
            "--config".as_ref(),
            example.as_os_str(),
            "--set".as_ref(),
            set.as_ref(),
        ]);
        assert!(!status.success(), "{value}: {status}");
        assert!(
            stderr.contains("hubble-metrics") && stderr.contains(want),
            "{value}: {stderr}"
        );
        if value.starts_with("httpV2:exemplars") {
            assert!(stderr.contains("exemplars"), "{stderr}");
        }
    }
    // The same from a ConfigMap file.
    let dir = TempDir::new("badmetrics");
    let text = std::fs::read_to_string(&example).unwrap();
    let bad = text.replace("dns:query;ignoreAAAA", "dns:query;ignoreAAA");
    assert_ne!(bad, text, "the example enables dns:query;ignoreAAAA");
    let file = dir.0.join("configmap.yaml");
    std::fs::write(&file, bad).unwrap();
    let (status, stderr) = run_flowd(&["--config".as_ref(), file.as_os_str()]);
    assert!(!status.success(), "{status}");
    assert!(
        stderr.contains("metrics handler \"dns\": unknown option \"ignoreAAA\""),
        "{stderr}"
    );
}
