//! Flags of the relay binary, each shown to change what it does, with
//! `observe` as the client and in-test nodes (the library's behaviour
//! behind them is tested in relay.rs and tls.rs). Needs the `observe`
//! binary (`cargo build --workspace --bins --exclude flowd-ebpf`).
mod common;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{FakeNode, NodeData, now_ns};
use flowd_proto::observer::ServerStatusResponse;
// The fake node serves TLS with tonic's own configuration.
use flowd_proto::tls::ServerTls;
use flowd_tests::{ChildGuard, bins, flowd::TempDir, wait_until};
use serde_json::Value;

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
        let addr = free_addr()?;
        let dir = TempDir::new(tag)?;
        let log = dir.0.join("relay.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
        cmd.args(["--listen-address", &addr])
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log)?);
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
