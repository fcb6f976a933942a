//! Issue 10 end to end: file export on the lab cluster's real traffic (root).
//!
//! Phase 1, everything, rotated and gzipped: flowd on every node writes
//! `<dir>/<node>/all/events.log` (`{node}` in hubble-export-file-path),
//! rotated at 16 KiB, backups gzipped and all kept. After the traffic mix:
//! - every line of every file (backups oldest first, then the live file) is
//!   one whole JSON object in Hubble's export format: `flow` (or
//!   `lost_events`) first, then `node_name` (this node) and `time` (the flow's);
//! - the flows of those lines are exactly the node's Observer buffer, in
//!   order (the buffer is large enough not to wrap), and the L7 ones are
//!   exactly what the traffic report implies: a REQUEST and a RESPONSE flow
//!   per HTTP exchange / DNS query on the node of each pod taking part;
//! - the file sizes are what packing those whole lines into 16 KiB gives;
//! - flowd_export_events_total{sink="file"} = the lines, nothing dropped.
//!
//! Phase 2, selection: flowd restarts on every node with an allowlist (L7
//! events), a denylist (DNS) and a field mask, writing a new file rotated at
//! 4 KiB, and the mix runs again. The file holds exactly the HTTP flows the
//! report implies, each the buffer's flow reduced to the mask's fields, and
//! flowd_export_flows_filtered_total = seen flows − exported lines.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod metrics_support;

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use flowd::export::file::backups;
use flowd_lab::cluster::{Cluster, ClusterOptions};
use flowd_lab::state::LabState;
use flowd_lab::traffic::TrafficReport;
use flowd_proto::flow::{Endpoint, Flow, layer7::Record};
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::{GetFlowsRequest, GetFlowsResponse};
use flowd_tests::wait_until;
use metrics_support::{Sample, parse, scrape};

/// Hubble's event type of L7 flows (MessageTypeAccessLog).
const L7: i32 = 129;
const ALL_MAX_BYTES: usize = 16 * 1024;
const SELECTED_MAX_BYTES: usize = 4 * 1024;
const MASK: &[&str] = &[
    "time",
    "uuid",
    "node_name",
    "traffic_direction",
    "is_reply",
    "source.namespace",
    "source.pod_name",
    "destination.pod_name",
    "l7",
];

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (HTTP, DNS) L7 flows the report implies on `node`: per exchange (gRPC
/// calls are HTTP/2 exchanges), a request and a response flow on the node
/// of each pod taking part (the outside world is no pod and reports nothing).
fn l7_expected(state: &LabState, report: &TrafficReport, node: &str) -> (u64, u64) {
    let sides = |client: Ipv4Addr, server: Ipv4Addr| -> u64 {
        [client, server]
            .into_iter()
            .filter(|ip| state.pod_by_ip(*ip).is_some_and(|p| p.node == node))
            .count() as u64
    };
    let http = report
        .expected
        .http
        .iter()
        .map(|h| (h.source_ip, h.backend_ip, h.count))
        .chain(
            report
                .expected
                .grpc
                .iter()
                .map(|g| (g.source_ip, g.backend_ip, g.count)),
        )
        .map(|(client, server, n)| 2 * sides(client, server) * u64::from(n))
        .sum();
    let dns = report
        .expected
        .dns
        .iter()
        .map(|d| 2 * sides(d.source_ip, d.server_ip) * u64::from(d.count))
        .sum();
    (http, dns)
}

fn record(f: &Flow) -> Option<&Record> {
    f.l7.as_ref().and_then(|l| l.record.as_ref())
}

/// The file sizes packing whole lines (with their newline) gives: a line
/// starts a new file when it would take a non-empty one past `max`.
fn packed(lines: &[String], max: usize) -> Vec<usize> {
    let mut sizes = vec![0];
    for l in lines {
        let n = l.len() + 1;
        let cur = sizes.last_mut().expect("one file");
        if *cur > 0 && *cur + n > max {
            sizes.push(n);
        } else {
            *cur += n;
        }
    }
    sizes
}

/// What a node exported: its files (backups oldest first, then the live
/// file), their uncompressed sizes, and all their lines in order.
struct Export {
    files: Vec<PathBuf>,
    sizes: Vec<usize>,
    lines: Vec<String>,
}

fn read_export(path: &Path) -> Result<Export> {
    let mut files =
        backups(path).with_context(|| format!("listing the backups of {}", path.display()))?;
    files.push(path.to_path_buf());
    let mut sizes = Vec::new();
    let mut lines = Vec::new();
    for f in &files {
        let raw = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let text = if f.extension().is_some_and(|e| e == "gz") {
            let mut s = String::new();
            flate2::read::GzDecoder::new(raw.as_slice())
                .read_to_string(&mut s)
                .with_context(|| format!("gunzipping {}", f.display()))?;
            s
        } else {
            String::from_utf8(raw).with_context(|| format!("{} is not UTF-8", f.display()))?
        };
        ensure!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends within a line",
            f.display()
        );
        sizes.push(text.len());
        lines.extend(text.lines().map(str::to_string));
    }
    Ok(Export {
        files,
        sizes,
        lines,
    })
}

enum Line {
    Flow(Box<Flow>),
    Lost,
}

/// One export line in Hubble's format: an object with `flow` or
/// `lost_events` first, then `node_name` and `time`, nothing else.
fn parse_line(node: &str, line: &str) -> Result<Line> {
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
    let mut keys: Vec<&str> = v
        .as_object()
        .with_context(|| format!("not a JSON object: {line}"))?
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let resp: GetFlowsResponse =
        serde_json::from_str(line).with_context(|| format!("not an export event: {line}"))?;
    ensure!(resp.node_name == node, "node_name is not {node}: {line}");
    match resp.response_types {
        Some(ResponseTypes::Flow(f)) => {
            ensure!(line.starts_with("{\"flow\":{"), "flow first: {line}");
            ensure!(
                keys == ["flow", "node_name", "time"],
                "keys {keys:?}: {line}"
            );
            ensure!(
                resp.time.is_some() && resp.time == f.time,
                "time is not the flow's: {line}"
            );
            Ok(Line::Flow(Box::new(f)))
        }
        Some(ResponseTypes::LostEvents(_)) => {
            ensure!(line.starts_with("{\"lost_events\":{"), "first: {line}");
            ensure!(
                keys == ["lost_events", "node_name", "time"],
                "keys {keys:?}: {line}"
            );
            Ok(Line::Lost)
        }
        _ => bail!("not a flow or lost_events line: {line}"),
    }
}

/// Sum of the file sink's samples of `name` (all other labels).
fn file_sink(samples: &[Sample], name: &str) -> u64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.labels.get("sink").map(String::as_str) == Some("file"))
        .map(|s| s.value as u64)
        .sum()
}

/// Once `node`'s flows have settled and its file sink has handled every
/// one of them (written or filtered): (seen flows, the whole buffer, the
/// export). The sink rotates before it writes, so once its counter covers
/// every flow the files are complete and stay as they are.
fn settled(c: &Cluster, node: &str, path: &Path) -> Result<(u64, Vec<Flow>, Export)> {
    let addr = c.flowd_addr(node)?;
    let seen = c.wait_seen_flows_settled(addr, Duration::from_secs(2), Duration::from_secs(60))?;
    let metrics = c.metrics_addr(node)?;
    let mut last = (0, 0);
    let samples = wait_until(
        &format!("{node}: the file sink handling {seen} flows"),
        Duration::from_secs(30),
        || {
            let samples = parse(&c.in_router(move || scrape(metrics))??);
            last = (
                file_sink(&samples, "flowd_export_events_total"),
                file_sink(&samples, "flowd_export_flows_filtered_total"),
            );
            Ok((last.0 + last.1 >= seen).then_some(samples))
        },
    )
    .with_context(|| format!("{node}: exported, filtered: {last:?}"))?;
    assert_eq!(
        file_sink(&samples, "flowd_export_events_dropped_total"),
        0,
        "{node}: dropped"
    );
    assert_eq!(
        file_sink(&samples, "flowd_export_errors_total"),
        0,
        "{node}: errors"
    );
    let export = read_export(path)?;
    assert_eq!(
        export.lines.len() as u64,
        file_sink(&samples, "flowd_export_events_total"),
        "{node}: lines vs flowd_export_events_total"
    );
    let buffer = c.get_flows(addr, GetFlowsRequest::default())?;
    assert_eq!(
        buffer.len() as u64,
        seen,
        "{node}: the buffer holds every flow"
    );
    Ok((seen, buffer, export))
}

/// `f` reduced to [`MASK`]: a kept sub-message stays present with only its
/// masked fields (protobuf field mask semantics).
fn masked(f: &Flow) -> Flow {
    let ep = |e: &Endpoint, ns: bool| Endpoint {
        namespace: if ns {
            e.namespace.clone()
        } else {
            String::new()
        },
        pod_name: e.pod_name.clone(),
        ..Default::default()
    };
    Flow {
        time: f.time,
        uuid: f.uuid.clone(),
        node_name: f.node_name.clone(),
        traffic_direction: f.traffic_direction,
        is_reply: f.is_reply,
        source: f.source.as_ref().map(|e| ep(e, true)),
        destination: f.destination.as_ref().map(|e| ep(e, false)),
        l7: f.l7.clone(),
        ..Default::default()
    }
}

fn check_all(c: &Cluster, report: &TrafficReport, node: &str, path: &Path) -> Result<()> {
    let (http, dns) = l7_expected(c.lab().state(), report, node);
    ensure!(http > 0 && dns > 0, "{node}: the mix has HTTP and DNS here");
    let (seen, buffer, export) = settled(c, node, path)?;
    let mut flows = Vec::new();
    for l in &export.lines {
        if let Line::Flow(f) = parse_line(node, l)? {
            flows.push(*f);
        }
    }
    assert_eq!(flows.len() as u64, seen, "{node}: exported flows");
    for (i, (got, want)) in flows.iter().zip(&buffer).enumerate() {
        assert_eq!(got, want, "{node}: exported flow {i} vs the buffer's");
    }
    let count = |pred: fn(Option<&Record>) -> bool| {
        flows
            .iter()
            .filter(|f| f.event_type.as_ref().is_some_and(|t| t.r#type == L7) && pred(record(f)))
            .count() as u64
    };
    assert_eq!(
        count(|r| matches!(r, Some(Record::Http(_)))),
        http,
        "{node}: HTTP"
    );
    assert_eq!(
        count(|r| matches!(r, Some(Record::Dns(_)))),
        dns,
        "{node}: DNS"
    );
    assert_eq!(
        export.sizes,
        packed(&export.lines, ALL_MAX_BYTES),
        "{node}: file sizes"
    );
    assert!(export.files.len() > 2, "{node}: rotated more than once");
    let (live, rotated) = export.files.split_last().expect("the live file");
    assert!(
        rotated
            .iter()
            .all(|f| f.to_string_lossy().ends_with(".log.gz")),
        "{node}: gzipped backups: {rotated:?}"
    );
    assert!(live.ends_with("events.log"));
    eprintln!(
        "export_lab: {node}: all {seen} flows ({http} HTTP, {dns} DNS) in {} files",
        export.files.len()
    );
    Ok(())
}

fn check_selected(c: &Cluster, report: &TrafficReport, node: &str, path: &Path) -> Result<()> {
    let (http, _) = l7_expected(c.lab().state(), report, node);
    let (seen, buffer, export) = settled(c, node, path)?;
    assert_eq!(export.lines.len() as u64, http, "{node}: exported lines");
    // Allowlist L7, denylist DNS: the buffer's HTTP flows, in order.
    let want: Vec<Flow> = buffer
        .iter()
        .filter(|f| f.event_type.as_ref().is_some_and(|t| t.r#type == L7))
        .filter(|f| !matches!(record(f), Some(Record::Dns(_))))
        .map(masked)
        .collect();
    assert_eq!(want.len() as u64, http, "{node}: HTTP flows in the buffer");
    for (i, (line, want)) in export.lines.iter().zip(&want).enumerate() {
        let Line::Flow(got) = parse_line(node, line)? else {
            panic!("{node}: line {i} is not a flow: {line}");
        };
        assert_eq!(*got, *want, "{node}: exported flow {i}");
        assert!(matches!(record(&got), Some(Record::Http(_))), "{line}");
    }
    let metrics = c.metrics_addr(node)?;
    let samples = parse(&c.in_router(move || scrape(metrics))??);
    assert_eq!(
        file_sink(&samples, "flowd_export_flows_filtered_total"),
        seen - http,
        "{node}: filtered"
    );
    assert_eq!(
        export.sizes,
        packed(&export.lines, SELECTED_MAX_BYTES),
        "{node}: file sizes"
    );
    assert!(export.files.len() > 2, "{node}: rotated more than once");
    eprintln!(
        "export_lab: {node}: {http} of {seen} flows selected and masked, in {} files",
        export.files.len()
    );
    Ok(())
}

#[test]
fn file_export_on_real_cluster_traffic() -> Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "export_lab needs root (network namespaces, eBPF)"
    );
    let t0 = Instant::now();
    let dir =
        TempDir(std::env::temp_dir().join(format!("flowd-export-lab-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let template = |phase: &str| dir.0.join("{node}").join(phase).join("events.log");
    let path = |node: &str, phase: &str| dir.0.join(node).join(phase).join("events.log");
    let set = |phase: &str, max: usize| {
        vec![
            // Room for every flow of the run, so the buffer can be compared.
            ("hubble-event-buffer-capacity".to_string(), "65535".into()),
            (
                "hubble-export-file-path".into(),
                template(phase).display().to_string(),
            ),
            ("flowd-export-file-max-size-bytes".into(), max.to_string()),
            // Keep every backup, so every line can be counted.
            ("hubble-export-file-max-backups".into(), "0".into()),
        ]
    };

    let mut all = set("all", ALL_MAX_BYTES);
    all.push(("hubble-export-file-compress".into(), "true".into()));
    let mut c = Cluster::start(ClusterOptions {
        set: all,
        ..Default::default()
    })?;
    let nodes = c.node_names();
    let report = c.run_traffic()?;
    for node in &nodes {
        check_all(&c, &report, node, &path(node, "all"))?;
    }
    eprintln!(
        "export_lab: phase 1 done at {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    let mut selected = set("selected", SELECTED_MAX_BYTES);
    selected.extend([
        (
            "hubble-export-allowlist".to_string(),
            format!(r#"{{"event_type":[{{"type":{L7}}}]}}"#),
        ),
        (
            "hubble-export-denylist".into(),
            r#"{"protocol":["dns"]}"#.into(),
        ),
        ("hubble-export-fieldmask".into(), MASK.join(",")),
    ]);
    c.options_mut().set = selected;
    for node in &nodes {
        let status = c.stop_flowd(node)?;
        assert!(status.success(), "{node}: flowd stopped with {status}");
    }
    for node in &nodes {
        c.start_flowd(node)?;
    }
    let report = c.run_traffic()?;
    for node in &nodes {
        check_selected(&c, &report, node, &path(node, "selected"))?;
    }
    drop(c);
    eprintln!("export_lab: done in {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}
