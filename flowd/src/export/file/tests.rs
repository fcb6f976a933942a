use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flowd_proto::Timestamp;
use flowd_proto::flow::{
    Endpoint, Flow, Ip, Layer4, LostEventSource, Tcp, Verdict, layer4::Protocol,
};
use flowd_proto::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};

use super::*;
use crate::export::{Exporters, queue};

/// A directory removed on drop (also on panic).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "flowd-export-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn flow(i: u32, ns: &str, pad: usize) -> Flow {
    Flow {
        time: Some(Timestamp::from_unix_nanos(
            1_700_000_000_000_000_000 + u64::from(i),
        )),
        uuid: format!("uuid-{i}-{}", "x".repeat(pad)),
        verdict: Verdict::Forwarded as i32,
        node_name: "node-a".into(),
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            ip_version: 1,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(Protocol::Tcp(Tcp {
                source_port: 40000 + i,
                destination_port: 80,
                flags: None,
            })),
        }),
        source: Some(Endpoint {
            namespace: ns.into(),
            pod_name: format!("client-{i}"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn line_of(f: &Flow) -> Vec<u8> {
    let mut v = Vec::new();
    let ev = ExportEvent::Flow(Arc::new(f.clone()));
    assert!(encode_line(&ev, &Selection::default(), "", &mut v).unwrap());
    v
}

fn read_all(p: &Path) -> Vec<u8> {
    let mut data = Vec::new();
    let mut f = File::open(p).unwrap();
    if p.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(f)
            .read_to_end(&mut data)
            .unwrap();
    } else {
        f.read_to_end(&mut data).unwrap();
    }
    data
}

/// Backups (oldest first) then the live file.
fn files_in_order(path: &Path) -> Vec<PathBuf> {
    let mut all = backups(path).unwrap();
    if path.exists() {
        all.push(path.to_path_buf());
    }
    all
}

#[test]
fn line_is_hubble_export_json() {
    let f = flow(7, "shop", 0);
    let line = line_of(&f);
    let text = std::str::from_utf8(&line).unwrap();
    assert!(text.ends_with("}\n") && !text[..text.len() - 1].contains('\n'));
    // Key order as Hubble writes it.
    assert!(text.starts_with("{\"flow\":{"), "{text}");
    let tail = format!(
        ",\"node_name\":\"node-a\",\"time\":{}}}\n",
        serde_json::to_string(&f.time).unwrap()
    );
    assert!(text.ends_with(&tail), "{text}");
    // It reads back as a GetFlowsResponse holding the same flow.
    let resp: GetFlowsResponse = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(resp.node_name, "node-a");
    assert_eq!(resp.time, f.time);
    assert_eq!(resp.response_types, Some(ResponseTypes::Flow(f)));
}

#[test]
fn lost_events_line() {
    let ev = ExportEvent::Lost {
        source: LostEventSource::ObserverEventsQueue,
        count: 12,
        time: Timestamp::from_unix_nanos(1_700_000_000_000_000_000),
    };
    let mut v = Vec::new();
    assert!(encode_line(&ev, &Selection::default(), "node-b", &mut v).unwrap());
    assert_eq!(
        std::str::from_utf8(&v).unwrap(),
        "{\"lost_events\":{\"source\":\"OBSERVER_EVENTS_QUEUE\",\"num_events_lost\":\"12\"},\
         \"node_name\":\"node-b\",\"time\":\"2023-11-14T22:13:20Z\"}\n"
    );
}

#[test]
fn rotation_keeps_every_line_whole_and_in_order() {
    let dir = TempDir::new("rot");
    let path = dir.path("events.log");
    let max = 1500u64;
    let opts = FileOptions {
        max_bytes: max,
        max_backups: 0,
        ..FileOptions::new(path.to_string_lossy())
    };
    let stats = ExportStats::default();
    let mut out = Output::new(&opts, stats.clone());
    // Varied lengths, including one line longer than the rotation size.
    let lines: Vec<Vec<u8>> = (0..120)
        .map(|i| {
            line_of(&flow(
                i,
                "ns",
                (i as usize * 37) % 300 + if i == 50 { 2000 } else { 0 },
            ))
        })
        .collect();
    for l in &lines {
        out.write_line(l);
    }
    out.flush();

    // Expected files: greedy packing, a new file whenever the next line
    // would make the current one larger than `max`.
    let mut expected: Vec<Vec<u8>> = vec![Vec::new()];
    for l in &lines {
        let cur = expected.last_mut().unwrap();
        if !cur.is_empty() && (cur.len() + l.len()) as u64 > max {
            expected.push(Vec::new());
        }
        expected.last_mut().unwrap().extend_from_slice(l);
    }
    let files = files_in_order(&path);
    let got: Vec<Vec<u8>> = files.iter().map(|p| read_all(p)).collect();
    assert_eq!(got.len(), expected.len(), "files: {files:?}");
    assert_eq!(got, expected);
    assert!(expected.len() > 10);
    assert_eq!(stats.exported(SINK), lines.len() as u64);
    assert_eq!(stats.dropped(SINK, reason::WRITE_ERROR), 0);
}

#[test]
fn appends_to_an_existing_file_and_counts_its_size() {
    let dir = TempDir::new("append");
    let path = dir.path("events.log");
    let first = line_of(&flow(1, "ns", 0));
    std::fs::write(&path, &first).unwrap();
    let opts = FileOptions {
        max_bytes: first.len() as u64 + 10,
        max_backups: 0,
        ..FileOptions::new(path.to_string_lossy())
    };
    let mut out = Output::new(&opts, ExportStats::default());
    let second = line_of(&flow(2, "ns", 0));
    out.write_line(&second);
    out.flush();
    let files = files_in_order(&path);
    assert_eq!(files.len(), 2);
    assert_eq!(read_all(&files[0]), first);
    assert_eq!(read_all(&files[1]), second);
}

#[test]
fn backups_are_compressed_and_pruned() {
    let dir = TempDir::new("prune");
    let path = dir.path("flows.json");
    let opts = FileOptions {
        max_bytes: 800,
        max_backups: 3,
        compress: true,
        ..FileOptions::new(path.to_string_lossy())
    };
    let mut out = Output::new(&opts, ExportStats::default());
    let lines: Vec<Vec<u8>> = (0..60).map(|i| line_of(&flow(i, "ns", 100))).collect();
    for l in &lines {
        out.write_line(l);
    }
    out.flush();
    let b = backups(&path).unwrap();
    assert_eq!(b.len(), 3, "{b:?}");
    for p in &b {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("flows-") && name.ends_with(".json.gz"),
            "{name}"
        );
    }
    // What is kept is the newest lines, contiguous and whole, up to the last.
    let kept: Vec<u8> = files_in_order(&path)
        .iter()
        .flat_map(|p| read_all(p))
        .collect();
    let all: Vec<u8> = lines.concat();
    assert!(all.ends_with(&kept));
    assert!(kept.starts_with(b"{\"flow\":"));
    // No temporary or uncompressed backup left behind.
    let names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

#[test]
fn backup_name_skips_taken_names() {
    let dir = TempDir::new("names");
    let path = dir.path("events.log");
    let t = chrono::DateTime::from_timestamp(1_700_000_000, 5_000_000).unwrap();
    let a = backup_name(&path, t);
    assert_eq!(a, dir.path("events-2023-11-14T22-13-20.005.log"));
    std::fs::write(&a, b"").unwrap();
    std::fs::write(dir.path("events-2023-11-14T22-13-20.006.log.gz"), b"").unwrap();
    assert_eq!(
        backup_name(&path, t),
        dir.path("events-2023-11-14T22-13-20.007.log")
    );
}

#[test]
fn backup_name_is_newer_than_every_backup() {
    // Several rotations in one millisecond, then pruning freed the oldest
    // name: reusing it would sort the newest lines first and prune them next.
    let dir = TempDir::new("newer");
    let path = dir.path("events.log");
    std::fs::write(dir.path("events-2023-11-14T22-13-20.009.log.gz"), b"").unwrap();
    let t = chrono::DateTime::from_timestamp(1_700_000_000, 5_000_000).unwrap();
    assert_eq!(
        backup_name(&path, t),
        dir.path("events-2023-11-14T22-13-20.010.log")
    );
    // A later clock is used as is.
    let later = chrono::DateTime::from_timestamp(1_700_000_001, 0).unwrap();
    assert_eq!(
        backup_name(&path, later),
        dir.path("events-2023-11-14T22-13-21.000.log")
    );
}

#[test]
fn unwritable_path_is_counted_and_writing_resumes_when_it_is_fixed() {
    let dir = TempDir::new("unwritable");
    // A regular file where the directory should be: open fails (as root too).
    let blocker = dir.path("sub");
    std::fs::write(&blocker, b"").unwrap();
    let path = blocker.join("events.log");
    let opts = FileOptions {
        reopen_after: Duration::ZERO,
        ..FileOptions::new(path.to_string_lossy())
    };
    let stats = ExportStats::default();
    let mut out = Output::new(&opts, stats.clone());
    assert_eq!(stats.errors(SINK, "open"), 1);
    for i in 0..5 {
        out.write_line(&line_of(&flow(i, "ns", 0)));
    }
    out.flush();
    assert_eq!(stats.dropped(SINK, reason::WRITE_ERROR), 5);
    assert_eq!(stats.exported(SINK), 0);
    assert_eq!(stats.errors(SINK, "open"), 2);

    std::fs::remove_file(&blocker).unwrap();
    let good = line_of(&flow(9, "ns", 0));
    out.write_line(&good);
    out.flush();
    assert_eq!(std::fs::read(&path).unwrap(), good);
    assert_eq!(stats.exported(SINK), 1);
    assert_eq!(stats.dropped(SINK, reason::WRITE_ERROR), 5);
}

#[test]
fn full_disk_is_counted_and_nothing_stops() {
    // /dev/full fails every write with ENOSPC.
    let opts = FileOptions {
        reopen_after: Duration::ZERO,
        ..FileOptions::new("/dev/full")
    };
    let stats = ExportStats::default();
    let mut out = Output::new(&opts, stats.clone());
    for round in 1..=3u64 {
        for i in 0..4 {
            out.write_line(&line_of(&flow(i, "ns", 0)));
        }
        out.flush();
        assert_eq!(stats.dropped(SINK, reason::WRITE_ERROR), 4 * round);
        assert_eq!(stats.errors(SINK, "write"), round);
    }
    assert_eq!(stats.exported(SINK), 0);
}

fn run_sink(opts: FileOptions, flows: &[Flow]) -> ExportStats {
    let stats = ExportStats::default();
    let (tx, rx) = queue::bounded(SINK, flows.len() + 1, stats.clone());
    let h = spawn(opts, rx, stats.clone()).unwrap();
    for f in flows {
        tx.push(ExportEvent::Flow(Arc::new(f.clone())));
    }
    tx.close(Duration::ZERO);
    h.join().unwrap();
    stats
}

fn parse_lines(path: &Path) -> Vec<GetFlowsResponse> {
    String::from_utf8(std::fs::read(path).unwrap())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn flow_of(r: &GetFlowsResponse) -> &Flow {
    match &r.response_types {
        Some(ResponseTypes::Flow(f)) => f,
        other => panic!("not a flow: {other:?}"),
    }
}

#[test]
fn sink_thread_applies_allow_deny_lists_and_field_mask() {
    let dir = TempDir::new("select");
    let path = dir.path("events.log");
    let flows: Vec<Flow> = (0..30)
        .map(|i| flow(i, ["shop", "db", "kube-system"][i as usize % 3], 0))
        .collect();
    let allow = vec![serde_json::json!({"source_pod": ["shop/", "db/"]})];
    let deny = vec![serde_json::json!({"source_pod": ["db/client-1"]})];
    let mask = vec![
        "time".to_string(),
        "source.namespace".to_string(),
        "uuid".to_string(),
    ];
    let opts = FileOptions {
        selection: Selection::new(&allow, &deny, &mask).unwrap(),
        ..FileOptions::new(path.to_string_lossy())
    };
    let stats = run_sink(opts, &flows);

    let expected: Vec<&Flow> = flows
        .iter()
        .filter(|f| {
            let ep = f.source.as_ref().unwrap();
            let name = format!("{}/{}", ep.namespace, ep.pod_name);
            (ep.namespace == "shop" || ep.namespace == "db") && !name.starts_with("db/client-1")
        })
        .collect();
    let got = parse_lines(&path);
    assert_eq!(got.len(), expected.len());
    for (r, f) in got.iter().zip(&expected) {
        let masked = flow_of(r);
        let want = Flow {
            time: f.time,
            uuid: f.uuid.clone(),
            source: Some(Endpoint {
                namespace: f.source.as_ref().unwrap().namespace.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(masked, &want);
        // The envelope keeps the node and time of the unmasked flow.
        assert_eq!(r.node_name, "node-a");
        assert_eq!(r.time, f.time);
    }
    assert_eq!(stats.exported(SINK), expected.len() as u64);
    assert_eq!(stats.filtered(SINK), (flows.len() - expected.len()) as u64);
}

#[test]
fn invalid_filters_and_masks_are_refused() {
    let bad_json = vec![serde_json::json!({"source_pod": "not-a-list"})];
    assert!(matches!(
        Selection::new(&bad_json, &[], &[]),
        Err(ExportError::FilterJson {
            list: "allowlist",
            index: 0,
            ..
        })
    ));
    let bad_filter = vec![serde_json::json!({"source_ip": ["not-an-ip"]})];
    assert!(matches!(
        Selection::new(&[], &bad_filter, &[]),
        Err(ExportError::Filter(_))
    ));
    assert!(matches!(
        Selection::new(&[], &[], &["source.nope".to_string()]),
        Err(ExportError::FieldMask(_))
    ));
}

#[tokio::test]
async fn exporters_write_every_flow_and_lost_notice_in_order() {
    let dir = TempDir::new("exporters");
    let path = dir.path("events.log");
    let stats = ExportStats::default();
    let mut ex = Exporters::none(stats.clone());
    ex.add_file(FileOptions {
        max_bytes: 4096,
        max_backups: 0,
        ..FileOptions::new(path.to_string_lossy())
    })
    .unwrap();
    let flows: Vec<Flow> = (0..500).map(|i| flow(i, "shop", 0)).collect();
    for f in &flows {
        ex.push_flow(f.clone());
    }
    ex.report_lost(LostEventSource::PerfEventRingBuffer, 3);
    ex.shutdown(Duration::ZERO).await;

    let mut got = Vec::new();
    for p in files_in_order(&path) {
        let text = String::from_utf8(read_all(&p)).unwrap();
        for l in text.lines() {
            got.push(serde_json::from_str::<GetFlowsResponse>(l).unwrap());
        }
    }
    // The queue (8192) holds all of them: nothing dropped, all in order.
    assert_eq!(stats.dropped(SINK, reason::QUEUE_FULL), 0);
    assert_eq!(got.len(), flows.len() + 1);
    for (r, f) in got.iter().zip(&flows) {
        assert_eq!(flow_of(r), f);
    }
    match &got[flows.len()].response_types {
        Some(ResponseTypes::LostEvents(l)) => {
            assert_eq!(l.num_events_lost, 3);
            assert_eq!(l.source, LostEventSource::PerfEventRingBuffer as i32);
        }
        other => panic!("expected lost_events, got {other:?}"),
    }
    assert_eq!(stats.exported(SINK), flows.len() as u64 + 1);
}
