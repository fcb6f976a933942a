//! Flags of the relay binary, each shown to change what it does, with
//! `observe` as the client and in-test nodes (the library's behaviour
//! behind them is tested in relay.rs and tls.rs). Needs the `observe`
//! binary (`cargo build --workspace --bins --exclude flowd-ebpf`).
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{FakeNode, NodeData, now_ns};
use flowd_proto::flow::{Flow, LostEventSource};
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::{GetFlowsRequest, GetFlowsResponse, ServerStatusResponse};
// The fake node serves TLS with tonic's own configuration.
use flowd_proto::tls::ServerTls;
use flowd_tests::{ChildGuard, bins, flowd::TempDir, wait_until};
use serde_json::Value;
use tonic::Streaming;
use tonic::transport::Endpoint;

fn tls_file(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
        .display()
        .to_string()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn free_addr() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// The relay binary on a free port with `args`; its log goes to a file.
struct Relay {
    // Killed on drop.
    _child: ChildGuard,
    addr: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Relay {
    fn start(tag: &str, args: &[&str]) -> Result<Self> {
        Self::start_with(tag, args, |_| {})
    }

    /// As `start`, with `prepare` changing the command first.
    fn start_with(tag: &str, args: &[&str], prepare: impl FnOnce(&mut Command)) -> Result<Self> {
        let addr = free_addr()?;
        let dir = TempDir::new(tag)?;
        let log = dir.0.join("relay.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
        cmd.args(["--listen-address", &addr])
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log)?);
        prepare(&mut cmd);
        let mut child = ChildGuard::spawn("relay", &mut cmd)?;
        wait_until("the relay listening", Duration::from_secs(20), || {
            if let Some(st) = child.try_wait()? {
                bail!("relay exited ({st}): {}", read(&log));
            }
            Ok(read(&log)
                .contains("relay serving the Observer API")
                .then_some(()))
        })?;
        Ok(Self {
            _child: child,
            addr,
            log,
            _dir: dir,
        })
    }

    fn log_text(&self) -> String {
        read(&self.log)
    }

    /// Waits until the relay's log has a line with every one of `parts`.
    fn wait_log(&self, what: &str, timeout: Duration, parts: &[&str]) -> Result<String> {
        wait_until(what, timeout, || {
            Ok(self
                .log_text()
                .lines()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .map(str::to_string))
        })
        .with_context(|| self.log_text())
    }

    fn observe(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new(bins::path("observe")?)
            .args(["--server", &self.addr])
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("OBSERVE_SERVER")
            .output()?)
    }
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `--tls-relay-server-cert-file`, `--tls-relay-server-key-file`,
/// `--tls-relay-client-ca-files` (mTLS towards clients) and
/// `--tls-hubble-server-ca-files`, `--tls-hubble-client-cert-file`,
/// `--tls-hubble-client-key-file`, `--tls-hubble-server-name` (mTLS
/// towards a node that requires client certificates): `observe` with a
/// client certificate sees the node connected; without one it is refused.
#[test]
fn tls_flags_on_both_sides() -> Result<()> {
    let node_tls = ServerTls {
        cert_file: tls_file("server.pem").into(),
        key_file: tls_file("server-key.pem").into(),
        client_ca_files: vec![tls_file("ca.pem").into()],
    }
    .load()?;
    let node = FakeNode::start_at(
        NodeData::new("tls-node"),
        "127.0.0.1:0".parse()?,
        Some(node_tls),
    );
    let peer = format!("tls-node={}", node.addr);
    let (ca, cert, key) = (
        tls_file("ca.pem"),
        tls_file("client.pem"),
        tls_file("client-key.pem"),
    );
    let relay = Relay::start(
        "rtls",
        &[
            "--peer",
            &peer,
            "--retry-initial",
            "50ms",
            "--tls-relay-server-cert-file",
            &tls_file("server.pem"),
            "--tls-relay-server-key-file",
            &tls_file("server-key.pem"),
            "--tls-relay-client-ca-files",
            &ca,
            "--tls-hubble-server-ca-files",
            &ca,
            "--tls-hubble-client-cert-file",
            &cert,
            "--tls-hubble-client-key-file",
            &key,
            "--tls-hubble-server-name",
            "flowd.test",
        ],
    )?;
    let client = [
        "--tls-ca-cert-files",
        ca.as_str(),
        "--tls-client-cert-file",
        cert.as_str(),
        "--tls-client-key-file",
        key.as_str(),
        "--tls-server-name",
        "flowd.test",
    ];
    wait_until(
        "the node connected over mTLS, seen over mTLS",
        Duration::from_secs(20),
        || {
            let mut args = vec!["status", "-o", "json"];
            args.extend(client);
            let out = relay.observe(&args)?;
            let s: Option<ServerStatusResponse> = json_lines(&out)
                .first()
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            Ok(s.filter(|s| s.num_connected_nodes.map(|n| n.value) == Some(1)))
        },
    )?;
    // The relay requires a client certificate (--tls-relay-client-ca-files).
    let out = relay.observe(&[
        "status",
        "--tls-ca-cert-files",
        &ca,
        "--tls-server-name",
        "flowd.test",
    ])?;
    ensure!(
        !out.status.success(),
        "a client without certificate was served: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// `--peer-dns NAME:PORT`: every address the name resolves to is a node,
/// named `ip:port` (`localhost` resolves to 127.0.0.1 here).
#[test]
fn peer_dns_resolves_nodes() -> Result<()> {
    let node = FakeNode::start(NodeData::new("dns-node"));
    let port = node.addr.port();
    let relay = Relay::start(
        "rdns",
        &[
            "--peer-dns",
            &format!("localhost:{port}"),
            "--dns-interval",
            "1s",
            "--retry-initial",
            "50ms",
        ],
    )?;
    let name = format!("127.0.0.1:{port}");
    wait_until(
        "the resolved node connected",
        Duration::from_secs(20),
        || {
            let out = relay.observe(&["list", "nodes", "-o", "json"])?;
            let nodes = json_lines(&out)
                .first()
                .map(|v| v["nodes"].clone())
                .unwrap_or_default();
            Ok(nodes
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n["name"] == name.as_str() && n["state"] == "NODE_CONNECTED")
                .then_some(()))
        },
    )?;
    Ok(())
}

/// `--node-idle-timeout 1s`: a request for buffered flows abandons a node
/// that sends nothing after 1 s (NODE_ERROR naming it) and ends with the
/// other node's flows.
#[test]
fn node_idle_timeout_abandons_a_silent_node() -> Result<()> {
    let good = FakeNode::start(NodeData::new("good"));
    let hung = FakeNode::start(NodeData::with(
        "hung",
        vec![],
        ServerStatusResponse::default(),
        true,
    ));
    let t = now_ns();
    let uuids: Vec<String> = (0..3).map(|i| good.data.emit(t + i)).collect();
    let relay = Relay::start(
        "ridle",
        &[
            "--peer",
            &format!("good={}", good.addr),
            "--peer",
            &format!("hung={}", hung.addr),
            "--node-idle-timeout",
            "1s",
            "--retry-initial",
            "50ms",
        ],
    )?;
    relay.wait_log(
        "both nodes connected",
        Duration::from_secs(20),
        &["node connected", "hung"],
    )?;
    relay.wait_log(
        "both nodes connected",
        Duration::from_secs(20),
        &["node connected", "good"],
    )?;
    let out = relay.observe(&["--last", "5", "-o", "json", "--request-timeout", "10s"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let flows: Vec<&str> = lines
        .iter()
        .filter_map(|v| v["flow"]["uuid"].as_str())
        .collect();
    ensure!(flows == uuids, "flows {flows:?}, want {uuids:?}");
    let error = lines
        .iter()
        .find(|v| v["node_status"]["state_change"] == "NODE_ERROR")
        .context("no NODE_ERROR")?;
    ensure!(
        error["node_status"]["node_names"][0] == "hung"
            && error["node_status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("nothing received for 1s")),
        "{error}"
    );
    Ok(())
}

/// `--node-rpc-timeout 1s`: a node that accepts connections and never
/// answers fails its ServerStatus probe after 1 s.
#[test]
fn node_rpc_timeout_bounds_the_probe() -> Result<()> {
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = silent.local_addr()?.to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    let relay = Relay::start(
        "rrpc",
        &[
            "--peer",
            &format!("silent={addr}"),
            "--node-rpc-timeout",
            "1s",
        ],
    )?;
    relay.wait_log(
        "the probe timing out",
        Duration::from_secs(20),
        &[
            "node unavailable",
            "silent",
            "ServerStatus timed out after 1s",
        ],
    )?;
    Ok(())
}

/// `--dial-timeout 1s`: connecting to a node whose accept queue is full
/// (its SYNs are dropped) gives up after 1 s, and the log line does not
/// repeat the cause.
#[test]
fn dial_timeout_bounds_connecting() -> Result<()> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, connect, getsockname, listen,
        socket,
    };
    // A listener with a backlog of 0 that never accepts, its queue filled.
    let l = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )?;
    bind(l.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0))?;
    listen(&l, Backlog::new(0)?)?;
    let local: SockaddrIn = getsockname(l.as_raw_fd())?;
    let addr = format!("127.0.0.1:{}", local.port());
    let mut fillers = Vec::new();
    for _ in 0..2 {
        let s = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        let _ = connect(s.as_raw_fd(), &local);
        fillers.push(s);
    }
    let relay = Relay::start(
        "rdial",
        &["--peer", &format!("full={addr}"), "--dial-timeout", "1s"],
    )?;
    // The first attempt gives up after 1 s (the default would wait 5 s).
    let line = relay.wait_log(
        "the connection attempt timing out",
        Duration::from_secs(4),
        &["node unavailable", "full", &format!("connecting to {addr}")],
    )?;
    ensure!(
        line.contains("deadline has elapsed") || line.contains("timed out after 1s"),
        "{line}"
    );
    ensure!(
        !line.contains("tcp connect error: tcp connect error"),
        "repeated cause: {line}"
    );
    drop(relay);
    drop(fillers);
    Ok(())
}

/// A tokio runtime for the tests' own gRPC clients.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

/// A follow stream from the relay; `small_windows` keeps HTTP/2 from
/// buffering more than 64 KiB that the client has not read.
async fn follow(addr: &str, small_windows: bool) -> Result<Streaming<GetFlowsResponse>> {
    let mut ep = Endpoint::from_shared(format!("http://{addr}"))?;
    if small_windows {
        ep = ep
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535);
    }
    let mut c = ObserverClient::new(ep.connect().await?);
    Ok(c.get_flows(GetFlowsRequest {
        follow: true,
        ..Default::default()
    })
    .await?
    .into_inner())
}

/// What a stream delivered: flow UUIDs in order, and events announced lost
/// (with their sources).
#[derive(Default, Debug)]
struct Received {
    flows: Vec<String>,
    lost: u64,
    lost_sources: BTreeSet<i32>,
}

impl Received {
    /// Reads until `done` holds (within 20 s).
    async fn read_until(
        &mut self,
        s: &mut Streaming<GetFlowsResponse>,
        done: impl Fn(&Self) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(self) {
            let r = tokio::time::timeout_at(deadline, s.message())
                .await
                .with_context(|| format!("timed out; so far {self:?}"))??
                .context("stream ended")?;
            match r.response_types {
                Some(ResponseTypes::Flow(f)) => self.flows.push(f.uuid),
                Some(ResponseTypes::LostEvents(l)) => {
                    self.lost += l.num_events_lost;
                    self.lost_sources.insert(l.source);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Waits until the relay reports `n` nodes connected (its `status`).
fn wait_nodes_connected(relay: &Relay, n: u32) -> Result<()> {
    wait_until("nodes connected", Duration::from_secs(20), || {
        let out = relay.observe(&["status", "-o", "json"])?;
        let s: Option<ServerStatusResponse> = json_lines(&out)
            .first()
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        Ok(
            s.filter(|s| s.num_connected_nodes.map(|c| c.value) == Some(n))
                .map(|_| ()),
        )
    })
}

/// `--sort-buffer-len 4` (and a drain timeout too long to matter): node a
/// sends 10 flows while node b is silent; a holds at most 4 queued, so its
/// oldest 7 go out without b. b then sends 10 flows, each between two of
/// a's: the 6 older than a's last sent one come late, out of order; the
/// others are put in order with a's 3 held flows. With the default length
/// (100) a's 10 flows would wait for b and all 20 would be in order.
#[test]
fn sort_buffer_len_bounds_what_waits_for_a_slower_node() -> Result<()> {
    let a = FakeNode::start(NodeData::new("a"));
    let b = FakeNode::start(NodeData::new("b"));
    let relay = Relay::start(
        "rsort",
        &[
            "--peer",
            &format!("a={}", a.addr),
            "--peer",
            &format!("b={}", b.addr),
            "--sort-buffer-len",
            "4",
            "--sort-buffer-drain-timeout",
            "1h",
            "--retry-initial",
            "50ms",
        ],
    )?;
    wait_nodes_connected(&relay, 2)?;
    let rt = runtime()?;
    let addr = relay.addr.clone();
    let got = rt.block_on(async {
        let mut s = follow(&addr, false).await?;
        wait_until("both nodes followed", Duration::from_secs(20), || {
            Ok((a.followers() == 1 && b.followers() == 1).then_some(()))
        })?;
        // a's flows at t+2i, b's at t+2i+1 (i = 1..=10).
        let t = now_ns();
        for i in 1..=10 {
            a.data.emit(t + 2 * i);
        }
        let mut got = Received::default();
        got.read_until(&mut s, |r| r.flows.len() >= 7).await?;
        for i in 1..=10 {
            b.data.emit(t + 2 * i + 1);
        }
        // b's last flow waits for a (which has nothing queued) for the
        // hour: 19 flows come.
        got.read_until(&mut s, |r| r.flows.len() >= 19).await?;
        Ok::<_, anyhow::Error>(got)
    })?;
    let want: Vec<String> = ["a-1", "a-2", "a-3", "a-4", "a-5", "a-6", "a-7"]
        .into_iter()
        .chain(["b-1", "b-2", "b-3", "b-4", "b-5", "b-6", "b-7"])
        .chain(["a-8", "b-8", "a-9", "b-9", "a-10"])
        .map(String::from)
        .collect();
    assert_eq!(got.flows, want);
    // Out of order: b-1..b-6 (their times are before a-7's).
    let late = got.flows[7..13].to_vec();
    assert_eq!(late, ["b-1", "b-2", "b-3", "b-4", "b-5", "b-6"]);
    Ok(())
}

/// `--sort-buffer-drain-timeout 2s`: while node b is silent, node a's
/// flows wait 2 s for it before they are sent (the default waits 1 s).
#[test]
fn sort_buffer_drain_timeout_is_how_long_flows_wait_for_a_silent_node() -> Result<()> {
    let a = FakeNode::start(NodeData::new("a"));
    let b = FakeNode::start(NodeData::new("b"));
    let relay = Relay::start(
        "rdrain",
        &[
            "--peer",
            &format!("a={}", a.addr),
            "--peer",
            &format!("b={}", b.addr),
            "--sort-buffer-drain-timeout",
            "2s",
            "--retry-initial",
            "50ms",
        ],
    )?;
    wait_nodes_connected(&relay, 2)?;
    let rt = runtime()?;
    let addr = relay.addr.clone();
    let (got, waited) = rt.block_on(async {
        let mut s = follow(&addr, false).await?;
        wait_until("both nodes followed", Duration::from_secs(20), || {
            Ok((a.followers() == 1 && b.followers() == 1).then_some(()))
        })?;
        let t = now_ns();
        let sent = std::time::Instant::now();
        for i in 1..=3 {
            a.data.emit(t + i);
        }
        let mut got = Received::default();
        got.read_until(&mut s, |r| r.flows.len() >= 3).await?;
        Ok::<_, anyhow::Error>((got, sent.elapsed()))
    })?;
    assert_eq!(got.flows, ["a-1", "a-2", "a-3"]);
    ensure!(
        waited >= Duration::from_secs(2),
        "the flows came after {waited:?}, before the 2 s drain timeout"
    );
    eprintln!("flows held {waited:?} for the silent node");
    Ok(())
}

/// `--client-buffer 8`: a follow client that does not read loses what the
/// relay cannot hold for it, and is told how many (LostEvent
/// OBSERVER_EVENTS_QUEUE): of 300 flows of 4 KiB it gets at most 8 plus
/// what HTTP/2 holds (a 64 KiB window; 64 flows allowed), the rest are
/// announced lost. With `--client-buffer 400` it loses none. A client
/// that reads all along shows when the relay has handled every flow.
#[test]
fn client_buffer_is_what_a_slow_follower_is_kept() -> Result<()> {
    const N: usize = 300;
    let rt = runtime()?;
    for (buffer, lossy) in [("8", true), ("400", false)] {
        let node = FakeNode::start(NodeData::new("n"));
        let relay = Relay::start(
            "rcbuf",
            &[
                "--peer",
                &format!("n={}", node.addr),
                "--client-buffer",
                buffer,
                "--retry-initial",
                "50ms",
            ],
        )?;
        wait_nodes_connected(&relay, 1)?;
        let addr = relay.addr.clone();
        let slow = rt.block_on(async {
            let mut slow = follow(&addr, true).await?;
            let mut fast = follow(&addr, false).await?;
            wait_until("both clients followed", Duration::from_secs(20), || {
                Ok((node.followers() == 2).then_some(()))
            })?;
            let t = now_ns();
            for i in 0..N as u64 {
                node.data.emit_padded(t + i, 4096);
            }
            let mut f = Received::default();
            f.read_until(&mut fast, |r| r.flows.len() as u64 + r.lost == N as u64)
                .await?;
            let mut got = Received::default();
            got.read_until(&mut slow, |r| r.flows.len() as u64 + r.lost >= N as u64)
                .await?;
            Ok::<_, anyhow::Error>(got)
        })?;
        ensure!(
            slow.flows.len() as u64 + slow.lost == N as u64,
            "--client-buffer {buffer}: {} flows + {} lost",
            slow.flows.len(),
            slow.lost
        );
        if lossy {
            ensure!(
                slow.flows.len() <= 8 + 64 && slow.lost >= (N - 8 - 64) as u64,
                "--client-buffer 8: {} flows, {} lost",
                slow.flows.len(),
                slow.lost
            );
            assert_eq!(
                slow.lost_sources,
                BTreeSet::from([LostEventSource::ObserverEventsQueue as i32])
            );
        } else {
            assert_eq!((slow.flows.len(), slow.lost), (N, 0));
        }
        eprintln!(
            "--client-buffer {buffer}: the slow client got {} flows, {} announced lost",
            slow.flows.len(),
            slow.lost
        );
    }
    Ok(())
}

/// `--health-check-interval 200ms`: a connected node is probed
/// (ServerStatus) every 200 ms; 8 probes come within 20 s (the default
/// 5 s would take 35 s).
#[test]
fn health_check_interval_paces_the_probes() -> Result<()> {
    let node = FakeNode::start(NodeData::new("n"));
    let relay = Relay::start(
        "rhealth",
        &[
            "--peer",
            &format!("n={}", node.addr),
            "--health-check-interval",
            "200ms",
        ],
    )?;
    relay.wait_log("connected", Duration::from_secs(20), &["node connected"])?;
    let start = node.data.status_calls.load(Ordering::SeqCst);
    wait_until("8 more probes", Duration::from_secs(20), || {
        Ok((node.data.status_calls.load(Ordering::SeqCst) >= start + 8).then_some(()))
    })?;
    Ok(())
}

/// `--retry-initial 100ms --retry-max 400ms`: after its node is killed the
/// relay retries after 100, 200, 400, 400… ms (its log says so); restarted
/// after 8 failures, the node is connected again within 5 s (without the
/// cap the 9th attempt would come 25.6 s later).
#[test]
fn retry_initial_and_max_pace_reconnection() -> Result<()> {
    let mut node = FakeNode::start(NodeData::new("n"));
    let relay = Relay::start(
        "rretry",
        &[
            "--peer",
            &format!("n={}", node.addr),
            "--retry-initial",
            "100ms",
            "--retry-max",
            "400ms",
            // Notices the killed node at once.
            "--health-check-interval",
            "100ms",
        ],
    )?;
    relay.wait_log("connected", Duration::from_secs(20), &["node connected"])?;
    node.kill();
    let retries = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("node unavailable"))
            .filter_map(|l| l.split("retry_in=").nth(1))
            .filter_map(|r| r.split_whitespace().next())
            .map(String::from)
            .collect()
    };
    let seen = wait_until("8 failed attempts", Duration::from_secs(20), || {
        let r = retries(&relay.log_text());
        Ok((r.len() >= 8).then_some(r))
    })?;
    assert_eq!(
        seen[..8],
        [
            "100ms", "200ms", "400ms", "400ms", "400ms", "400ms", "400ms", "400ms"
        ]
    );
    node.restart();
    let restarted = std::time::Instant::now();
    wait_until("reconnected", Duration::from_secs(5), || {
        Ok((relay.log_text().matches("node connected").count() == 2).then_some(()))
    })
    .with_context(|| relay.log_text())?;
    eprintln!("reconnected {:?} after the restart", restarted.elapsed());
    Ok(())
}

/// `--dns-interval 500ms`: the relay re-resolves its `--peer-dns` name
/// twice a second: when the name moves from 127.0.0.1 to 127.0.0.2 (the
/// relay's own /etc/hosts, a file of the test bind-mounted in a private
/// mount namespace), the node there replaces the first within 10 s (the
/// default 30 s would not). Needs root (mount namespace).
#[test]
fn dns_interval_is_how_often_peer_dns_names_are_resolved() -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    // /proc/self belongs to the process's effective user.
    ensure!(
        std::fs::metadata("/proc/self")?.uid() == 0,
        "this test gives the relay its own /etc/hosts (a mount namespace): run it as root"
    );
    let first = FakeNode::start(NodeData::new("first"));
    let port = first.addr.port();
    let second = FakeNode::start_at(
        NodeData::new("second"),
        format!("127.0.0.2:{port}").parse()?,
        None,
    );
    let dir = TempDir::new("rdnsi")?;
    let hosts = dir.0.join("hosts");
    let name = "nodes.flowd-relay.test";
    std::fs::write(&hosts, format!("127.0.0.1 {name}\n"))?;
    let src = CString::new(hosts.display().to_string())?;
    let relay = Relay::start_with(
        "rdnsi",
        &[
            "--peer-dns",
            &format!("{name}:{port}"),
            "--dns-interval",
            "500ms",
            "--retry-initial",
            "50ms",
        ],
        |cmd| {
            // SAFETY: between fork and exec only system calls run; the
            // paths were made before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    use nix::mount::{MsFlags, mount};
                    use nix::sched::{CloneFlags, unshare};
                    unshare(CloneFlags::CLONE_NEWNS)?;
                    mount(
                        None::<&str>,
                        c"/",
                        None::<&str>,
                        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                        None::<&str>,
                    )?;
                    mount(
                        Some(src.as_c_str()),
                        c"/etc/hosts",
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )?;
                    Ok(())
                });
            }
        },
    )?;
    let connected = |want: &str| -> Result<()> {
        wait_until(want, Duration::from_secs(10), || {
            let out = relay.observe(&["list", "nodes", "-o", "json"])?;
            let nodes = json_lines(&out)
                .first()
                .map(|v| v["nodes"].clone())
                .unwrap_or_default();
            let names: Vec<String> = nodes
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| n["state"] == "NODE_CONNECTED")
                .filter_map(|n| n["name"].as_str().map(String::from))
                .collect();
            Ok((names == [want]).then_some(()))
        })
        .with_context(|| relay.log_text())
    };
    connected(&format!("127.0.0.1:{port}"))?;
    // Rewritten in place: the bind mount holds this inode.
    std::fs::write(&hosts, format!("127.0.0.2 {name}\n"))?;
    connected(&format!("127.0.0.2:{port}"))?;
    drop(second);
    Ok(())
}

/// `observe --since/--until` through the relay binary: both bounds reach
/// every node as sent, and the answer is exactly the nodes' flows inside
/// them, merged in time order.
#[test]
fn since_and_until_reach_every_node_and_bound_the_merge() -> Result<()> {
    let a = FakeNode::start(NodeData::new("a"));
    let b = FakeNode::start(NodeData::new("b"));
    // Whole seconds a minute ago: RFC 3339 without fractions names them exactly.
    let base = (now_ns() / 1_000_000_000 - 60) * 1_000_000_000;
    let (mut ua, mut ub) = (Vec::new(), Vec::new());
    for i in 0..10u64 {
        ua.push(a.data.emit(base + i * 1_000_000_000));
        ub.push(b.data.emit(base + i * 1_000_000_000 + 500_000_000));
    }
    let relay = Relay::start(
        "rsince",
        &[
            "--peer",
            &format!("a={}", a.addr),
            "--peer",
            &format!("b={}", b.addr),
        ],
    )?;
    wait_nodes_connected(&relay, 2)?;
    let at = |s: u64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_nanos(base + s * 1_000_000_000),
        )
        .to_string()
    };
    let out = relay.observe(&[
        "--since",
        &at(3),
        "--until",
        &at(5),
        "-o",
        "json",
        "--request-timeout",
        "10s",
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = json_lines(&out)
        .iter()
        .filter_map(|v| v["flow"]["uuid"].as_str().map(str::to_string))
        .collect();
    // a-3 (3.0 s), b-3 (3.5 s), a-4, b-4, a-5 (5.0 s); b-5 is at 5.5 s.
    let want = vec![
        ua[3].clone(),
        ub[3].clone(),
        ua[4].clone(),
        ub[4].clone(),
        ua[5].clone(),
    ];
    ensure!(got == want, "flows {got:?}, want {want:?}");
    for node in [&a, &b] {
        let req = node.data.last_request.lock().unwrap().clone();
        let req = req.context("the node got no request")?;
        ensure!(
            req.since.map(|t| t.as_unix_nanos()) == Some(i128::from(base + 3_000_000_000))
                && req.until.map(|t| t.as_unix_nanos()) == Some(i128::from(base + 5_000_000_000)),
            "{} got since {:?} until {:?}",
            node.data.name,
            req.since,
            req.until
        );
    }
    Ok(())
}

/// A gRPC record of `shop.inventory.v1.Inventory/<method>` at `time_ns`:
/// the request, or the response with `status`.
fn grpc_record(uuid: &str, time_ns: u64, method: &str, status: Option<u32>) -> Flow {
    use flowd_proto::flow::{Grpc, Http, L7FlowType, Layer7, layer7::Record};
    let response = status.is_some();
    Flow {
        uuid: uuid.into(),
        time: Some(common::ts(time_ns)),
        verdict: flowd_proto::flow::Verdict::Forwarded as i32,
        l7: Some(Layer7 {
            r#type: if response {
                L7FlowType::Response
            } else {
                L7FlowType::Request
            } as i32,
            latency_ns: if response { 12_000_000 } else { 0 },
            record: Some(Record::Http(Http {
                code: if response { 200 } else { 0 },
                method: "POST".into(),
                url: format!("http://inventory:50051/shop.inventory.v1.Inventory/{method}"),
                protocol: "HTTP/2".into(),
                grpc: Some(Grpc {
                    service: "shop.inventory.v1.Inventory".into(),
                    method: method.into(),
                    status_code: status,
                    status_name: status
                        .and_then(flowd_proto::names::grpc_status_name)
                        .unwrap_or_default()
                        .into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `observe --protocol grpc --grpc-status … --grpc-service … --not
/// --grpc-method …` through the relay binary: the gRPC fields (FlowFilter
/// 1001-1003) reach every node unchanged, in the whitelist and the
/// blacklist, and the nodes' gRPC records come back whole. A node that
/// refuses them (an older flowd: "does not evaluate gRPC filters") while
/// another accepts is a NODE_ERROR notice naming it, as for any filter.
#[test]
fn grpc_filters_reach_every_node_and_grpc_records_come_back() -> Result<()> {
    use flowd_proto::flow::FlowFilter;
    let a = FakeNode::start(NodeData::new("a"));
    let b = FakeNode::start(NodeData::new("b"));
    let base = (now_ns() / 1_000_000_000 - 60) * 1_000_000_000;
    a.data
        .emit_flow(grpc_record("a-req", base, "Reserve", None));
    a.data
        .emit_flow(grpc_record("a-resp", base + 12_000_000, "Reserve", Some(5)));
    b.data.emit_flow(grpc_record(
        "b-resp",
        base + 20_000_000,
        "Reserve",
        Some(14),
    ));
    let relay = Relay::start(
        "rgrpc",
        &[
            "--peer",
            &format!("a={}", a.addr),
            "--peer",
            &format!("b={}", b.addr),
        ],
    )?;
    wait_nodes_connected(&relay, 2)?;
    let args = [
        "--protocol",
        "grpc",
        "--grpc-status",
        "NOT_FOUND",
        "--grpc-status",
        "14",
        "--grpc-service",
        "shop.inventory.v1.Inventory",
        "--not",
        "--grpc-method",
        "Watch",
        "--request-timeout",
        "10s",
    ];
    let out = relay.observe(&args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{stderr}");
    // The fake nodes answer with everything they have: three records, in
    // time order, as observe prints gRPC calls.
    let summaries: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_once(": ").map_or(l, |(_, rest)| rest))
        .collect();
    ensure!(
        summaries
            == [
                "N/A -> N/A gRPC /shop.inventory.v1.Inventory/Reserve FORWARDED",
                "N/A -> N/A gRPC /shop.inventory.v1.Inventory/Reserve => NOT_FOUND (12ms) FORWARDED",
                "N/A -> N/A gRPC /shop.inventory.v1.Inventory/Reserve => UNAVAILABLE (12ms) FORWARDED",
            ],
        "{stdout}"
    );
    let want_white = vec![FlowFilter {
        protocol: vec!["grpc".into()],
        grpc_status: vec!["NOT_FOUND".into(), "14".into()],
        grpc_service: vec!["shop.inventory.v1.Inventory".into()],
        ..Default::default()
    }];
    let want_black = vec![FlowFilter {
        grpc_method: vec!["Watch".into()],
        ..Default::default()
    }];
    for node in [&a, &b] {
        let req = node.data.last_request.lock().unwrap().clone();
        let req = req.context("the node got no request")?;
        ensure!(
            req.whitelist == want_white && req.blacklist == want_black,
            "{} got {:?} / {:?}",
            node.data.name,
            req.whitelist,
            req.blacklist
        );
    }

    // Node b runs a flowd that refuses the gRPC fields: a's records, and a
    // notice naming b with its reason; the call succeeds.
    let reason = "invalid whitelist[0].grpc_status filter \"NOT_FOUND,14\": this flowd does not evaluate gRPC filters";
    *b.data.refuse.lock().unwrap() = Some((tonic::Code::InvalidArgument, reason.to_string()));
    let out = relay.observe(&args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{stderr}");
    ensure!(stdout.lines().count() == 2, "{stdout}");
    ensure!(
        stderr.contains(&format!("NODE_ERROR: b (InvalidArgument: {reason})")),
        "{stderr}"
    );
    // Every node refuses: the call fails with their reason (exit 1).
    *a.data.refuse.lock().unwrap() = Some((tonic::Code::InvalidArgument, reason.to_string()));
    let out = relay.observe(&args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && stderr.contains(reason),
        "{:?} {stderr}",
        out.status
    );
    Ok(())
}
