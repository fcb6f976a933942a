//! The README's demo command, run as a user would (non-interactively, ended
//! by FLOWD_DEMO_SECONDS), with the workspace's built binaries: it must exit
//! cleanly; its `observe --namespace ecommerce --http-status 400-599` view
//! must show exactly the kinds of 4xx/5xx exchanges the traffic generator's
//! first round caused (client, server, path, status), every one of them, and
//! nothing else; and its `observe --namespace ecommerce --protocol grpc
//! --grpc-status 1-16` view exactly the kinds of gRPC calls that did not end
//! OK (client, server, method path, gRPC status). It runs with mTLS between
//! the relay and the nodes, as the deployment does.
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use flowd_lab::cluster::bins;
use flowd_lab::traffic::TrafficReport;

/// (client pod, server pod or address, path, status)
type Exchange = (String, String, String, u16);
/// (client pod, server pod, method path, gRPC status name)
type Call = (String, String, String, String);

const SECTION: &str = "observe --namespace ecommerce --http-status 400-599";
const GRPC_SECTION: &str = "observe --namespace ecommerce --protocol grpc --grpc-status 1-16";

/// The flow lines of the demo's `section` step.
fn section<'a>(out: &'a str, section: &str) -> Result<Vec<&'a str>> {
    let mut lines = out.lines().skip_while(|l| !l.contains(section));
    lines
        .next()
        .with_context(|| format!("the demo printed no {section:?} step"))?;
    Ok(lines
        .take_while(|l| !l.contains("==>"))
        .filter(|l| l.contains(" <- ") || l.contains(" -> "))
        .collect())
}

/// `ns/pod:port` → pod, `ip:port` → ip.
fn endpoint(s: &str) -> String {
    let host = s.rsplit_once(':').map_or(s, |(h, _)| h);
    host.rsplit_once('/').map_or(host, |(_, p)| p).to_string()
}

/// A compact line: `TIME: CLIENT <- SERVER HTTP/1.1 METHOD URL => STATUS (LAT) VERDICT`.
fn parse_line(line: &str) -> Result<Exchange> {
    let (_, rest) = line.split_once(": ").context("no timestamp")?;
    let t: Vec<&str> = rest.split_whitespace().collect();
    ensure!(t.len() >= 8 && t[1] == "<-", "not an HTTP response line");
    let arrow = t.iter().position(|x| *x == "=>").context("no status")?;
    ensure!(arrow == 6, "response without its request (no method/URL)");
    let url = t[5];
    let path = url
        .strip_prefix("http://")
        .and_then(|u| u.find('/').map(|i| &u[i..]))
        .unwrap_or(url)
        .to_string();
    let status: u16 = t[7].parse().context("status")?;
    Ok((endpoint(t[0]), endpoint(t[2]), path, status))
}

/// A compact gRPC line: `TIME: CLIENT <- SERVER gRPC PATH => STATUS (LAT) VERDICT`.
fn parse_grpc_line(line: &str) -> Result<Call> {
    let (_, rest) = line.split_once(": ").context("no timestamp")?;
    let t: Vec<&str> = rest.split_whitespace().collect();
    ensure!(
        t.len() == 9 && t[1] == "<-" && t[3] == "gRPC" && t[5] == "=>",
        "not a gRPC response line"
    );
    Ok((
        endpoint(t[0]),
        endpoint(t[2]),
        t[4].to_string(),
        t[6].to_string(),
    ))
}

fn expected_calls(report: &TrafficReport) -> BTreeSet<Call> {
    report
        .expected
        .grpc
        .iter()
        .filter(|g| g.code != Some(0))
        .filter(|g| g.source_namespace == "ecommerce")
        .map(|g| {
            (
                g.source_pod.clone(),
                g.destination_pod.clone().unwrap_or_default(),
                g.path(),
                g.status_name().unwrap_or("none").to_string(),
            )
        })
        .collect()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn expected(report: &TrafficReport) -> BTreeSet<Exchange> {
    report
        .expected
        .http
        .iter()
        .filter(|h| (400..=599).contains(&h.status))
        .filter(|h| {
            h.source_namespace == "ecommerce"
                || h.destination_namespace.as_deref() == Some("ecommerce")
        })
        .map(|h| {
            // The world has no pod: observe names it by the DNS name the
            // client resolved it with (flowd's name cache), as Hubble does.
            let server = h
                .destination_pod
                .clone()
                .unwrap_or_else(|| h.destination_service.clone());
            (h.source_pod.clone(), server, h.path.clone(), h.status)
        })
        .collect()
}

#[test]
fn demo_shows_the_generators_http_errors_and_failing_grpc_calls() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin_dir = bins::dir()?;
    for b in ["flowd", "relay", "observe", "lab"] {
        bins::path(b)?;
    }
    let dir = std::env::temp_dir().join(format!("flowd-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    struct Cleanup<'a>(&'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _cleanup = Cleanup(&dir);

    // A free port for the web UI's forward (other tests may run demos too).
    let ui_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .env("FLOWD_DEMO_SECONDS", "2")
        .env("FLOWD_DEMO_DIR", &dir)
        .env("FLOWD_DEMO_BIN_DIR", &bin_dir)
        .env("FLOWD_DEMO_UI_PORT", ui_port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running scripts/demo.sh")?;
    // Its output (hundreds of KB of flows) is read while it runs: a full
    // pipe would stop the demo.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    // The demo ends by itself; a hung demo is stopped with SIGTERM, so that
    // its trap tears the lab down (SIGKILL only if that hangs too).
    let deadline = started + Duration::from_secs(240);
    let mut stopping: Option<Instant> = None;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        match stopping {
            None if Instant::now() > deadline => {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                stopping = Some(Instant::now());
            }
            Some(t) if t.elapsed() > Duration::from_secs(30) => {
                let _ = child.kill();
                break child.wait()?;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = stdout
        .join()
        .map_err(|_| anyhow::anyhow!("reading the demo's output"))?;
    let err = stderr
        .join()
        .map_err(|_| anyhow::anyhow!("reading the demo's errors"))?;
    ensure!(
        stopping.is_none(),
        "the demo did not end within 240 s:\n{}\n{err}",
        tail(&out, 60)
    );
    ensure!(
        status.success(),
        "the demo failed ({status}):\n{out}\n{err}"
    );
    eprintln!("demo ran in {:?}", started.elapsed());

    let report: TrafficReport = serde_json::from_str(
        &std::fs::read_to_string(dir.join("traffic-first-round.json"))
            .context("the demo wrote no traffic-first-round.json")?,
    )?;
    let want = expected(&report);
    ensure!(
        !want.is_empty(),
        "the generator's mix has no 4xx/5xx exchange"
    );

    let lines = section(&out, SECTION)?;
    let mut got = BTreeSet::new();
    for l in &lines {
        got.insert(
            parse_line(l).with_context(|| format!("unexpected line in the error view: {l}"))?,
        );
    }
    for e in &got {
        ensure!(
            (400..=599).contains(&e.3),
            "status {} in the 4xx/5xx view",
            e.3
        );
    }
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    ensure!(
        missing.is_empty() && extra.is_empty(),
        "the demo's error view differs from the generator's report\nmissing: {missing:#?}\nunexpected: {extra:#?}\noutput:\n{out}"
    );
    // The failing gRPC calls, next to the HTTP errors: each kind the
    // report predicts, and nothing else (the calls order-service makes end
    // RESOURCE_EXHAUSTED or INVALID_ARGUMENT; their HTTP status is 200).
    let want = expected_calls(&report);
    ensure!(
        !want.is_empty(),
        "the generator's mix has no failing gRPC call"
    );
    let mut got = BTreeSet::new();
    for l in section(&out, GRPC_SECTION)? {
        got.insert(
            parse_grpc_line(l)
                .with_context(|| format!("unexpected line in the gRPC error view: {l}"))?,
        );
    }
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    ensure!(
        missing.is_empty() && extra.is_empty(),
        "the demo's failing gRPC calls differ from the generator's report\nmissing: {missing:#?}\nunexpected: {extra:#?}\noutput:\n{out}"
    );
    // Every node served the Observer API over mTLS (the relay, which
    // reached them all, presented its certificate).
    let mut logs = 0;
    for e in std::fs::read_dir(&dir)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("flowd-") && name.ends_with(".log") {
            let log = std::fs::read_to_string(&p)?;
            ensure!(
                log.lines()
                    .any(|l| l.contains("Observer API listening") && l.contains("mtls=true")),
                "{name}: flowd did not serve with mTLS:\n{log}"
            );
            logs += 1;
        }
    }
    ensure!(
        logs == 2,
        "{logs} flowd logs in the demo's directory, want 2"
    );
    // The demo checked that the web UI answers through the forward; it prints its URL.
    let url = format!("Web UI (service map, flows, node status): http://127.0.0.1:{ui_port}/");
    ensure!(out.contains(&url), "the demo does not print {url:?}");
    // The DNS view and the metrics sample are there too.
    ensure!(
        out.contains("NXDOMAIN"),
        "the DNS view shows no NXDOMAIN answer"
    );
    for m in ["hubble_http_requests_total", "hubble_grpc_requests_total"] {
        ensure!(
            out.lines().any(|l| l.starts_with(m)),
            "the metrics sample shows no {m}"
        );
    }
    Ok(())
}
