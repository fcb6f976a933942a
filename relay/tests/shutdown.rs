//! Stopping the relay binary while clients are connected: `observe
//! --follow` processes, an idle TCP connection and a client that never
//! reads (a stopped `observe`), over an in-test node.
//!
//! At SIGTERM every follow stream ends with UNAVAILABLE "the relay is
//! shutting down" (`observe` prints it as one line and exits 1), the relay
//! closes its streams and connections to the node at once, and exits 0
//! within --shutdown-grace whatever the clients do; a second signal exits
//! at once. The web UI (`--ui-listen`) stops within the same grace: its
//! flow streams end with the same status. Needs the `observe` binary next
//! to this test
//! (`cargo build --workspace --bins --exclude flowd-ebpf`).
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{FakeNode, NodeData, now_ns};
use flowd_tests::{ChildGuard, bins, flowd::TempDir, wait_until};
use nix::sys::signal::Signal;

struct Setup {
    node: FakeNode,
    relay: ChildGuard,
    addr: String,
    log: PathBuf,
    _dir: TempDir,
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn start(tag: &str, grace: &str) -> Result<Setup> {
    start_with(tag, grace, &[])
}

fn start_with(tag: &str, grace: &str, extra: &[&str]) -> Result<Setup> {
    let node = FakeNode::start(NodeData::new("node-1"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = TempDir::new(tag)?;
    let log = dir.0.join("relay.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
    cmd.args([
        "--listen-address",
        &addr,
        "--peer",
        &format!("node-1={}", node.addr),
        "--retry-initial",
        "50ms",
        "--shutdown-grace",
        grace,
    ])
    .args(extra)
    .env("RUST_LOG", "info")
    .stderr(std::fs::File::create(&log)?);
    let mut relay = ChildGuard::spawn("relay", &mut cmd)?;
    wait_until(
        "the relay connected to node-1",
        Duration::from_secs(30),
        || {
            if let Some(st) = relay.try_wait()? {
                anyhow::bail!("relay exited early ({st}): {}", read(&log));
            }
            Ok(read(&log).contains("node connected").then_some(()))
        },
    )?;
    Ok(Setup {
        node,
        relay,
        addr,
        log,
        _dir: dir,
    })
}

impl Setup {
    fn follower(&self) -> Result<ChildGuard> {
        let mut cmd = Command::new(bins::path("observe")?);
        cmd.args(["--server", &self.addr, "--follow", "-o", "json"])
            .env("NO_COLOR", "1")
            .env_remove("OBSERVE_SERVER");
        ChildGuard::spawn_capture("observe", &mut cmd)
    }

    /// Emits flows at the node until every follower has printed one.
    fn until_all_see_a_flow(&self, followers: &[&ChildGuard]) -> Result<()> {
        wait_until(
            "every follower to print a flow",
            Duration::from_secs(60),
            || {
                self.node.data.emit(now_ns());
                Ok(followers
                    .iter()
                    .all(|f| !flow_uuids(f).is_empty())
                    .then_some(()))
            },
        )
    }

    fn stream_end(&self) -> String {
        format!(
            "observe: {}: GetFlows failed: Unavailable: the relay is shutting down",
            self.addr
        )
    }
}

fn flow_uuids(f: &ChildGuard) -> BTreeSet<String> {
    f.stdout
        .snapshot()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["flow"]["uuid"].as_str().map(str::to_string))
        .collect()
}

/// TCP connections of process `pid` established to local port `port`
/// (from /proc: the process's sockets and its namespace's TCP table).
fn established_to(pid: u32, port: u16) -> Result<usize> {
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let target = std::fs::read_link(fd?.path()).unwrap_or_default();
        if let Some(i) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(i.to_string());
        }
    }
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
            .with_context(|| format!("/proc/{pid}/net/{table}"))?;
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (Some(rem), Some(st), Some(inode)) = (f.get(2), f.get(3), f.get(9)) else {
                continue;
            };
            let rem_port = rem
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if rem_port == Some(port) && *st == "01" && inodes.contains(*inode) {
                n += 1;
            }
        }
    }
    Ok(n)
}

fn assert_saw_the_end(f: &mut ChildGuard, want: &str, within: Duration) -> Result<()> {
    let st = f.wait_exit(within)?;
    let err = f.stderr.wait_end(Duration::from_secs(5))?;
    ensure!(
        st.code() == Some(1) && err == [want],
        "follower exited with {st}, stderr {err:?}"
    );
    Ok(())
}

fn sigterm_ends_streams_and_exits_within_grace(tag: &str, followers: usize) -> Result<()> {
    let grace = Duration::from_secs(6);
    let mut s = start(tag, "6s")?;
    let mut fs = (0..followers)
        .map(|_| s.follower())
        .collect::<Result<Vec<_>>>()?;
    let _idle = TcpStream::connect(&s.addr)?;
    s.until_all_see_a_flow(&fs.iter().collect::<Vec<_>>())?;
    let stopped = s.follower()?;
    s.until_all_see_a_flow(&[&stopped])?;
    stopped.signal(Signal::SIGSTOP)?;
    let pid = s.relay.pid().context("relay pid")?;
    let node_port = s.node.addr.port();
    ensure!(
        s.node.followers() == followers + 1,
        "{} node streams",
        s.node.followers()
    );
    ensure!(
        established_to(pid, node_port)? >= 1,
        "no connection to the node"
    );

    let t0 = Instant::now();
    s.relay.signal(Signal::SIGTERM)?;
    let want = s.stream_end();
    for f in &mut fs {
        assert_saw_the_end(f, &want, grace)?;
    }
    // The node streams and connections are closed at once, while the idle
    // client still holds the relay in its grace period.
    // (The fake node notices a closed stream when it next sends a flow.)
    wait_until(
        "the relay to close its node streams and connections",
        Duration::from_secs(3),
        || {
            s.node.data.emit(now_ns());
            let (streams, conns) = (s.node.followers(), established_to(pid, node_port)?);
            Ok((streams == 0 && conns == 0).then_some(()))
        },
    )?;
    ensure!(
        s.relay.try_wait()?.is_none(),
        "the relay exited before closing its node connections was checked: {}",
        read(&s.log)
    );
    let st = s.relay.wait_exit(grace + Duration::from_secs(5))?;
    let took = t0.elapsed();
    eprintln!(
        "{followers} followers saw the end of their stream; the relay exited {took:?} after SIGTERM (grace {grace:?}, held by the idle and the stopped client)"
    );
    ensure!(st.success(), "relay exited with {st}: {}", read(&s.log));
    ensure!(
        took < grace + Duration::from_secs(1),
        "the relay took {took:?} to exit (grace {grace:?})"
    );
    // The stopped client, resumed, finds the end of its stream too.
    stopped.signal(Signal::SIGCONT)?;
    let mut stopped = stopped;
    assert_saw_the_end(&mut stopped, &want, Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn sigterm_with_one_follower_ends_its_stream_and_exits_within_grace() -> Result<()> {
    sigterm_ends_streams_and_exits_within_grace("rsd1", 1)
}

#[test]
fn sigterm_with_fifty_followers_ends_their_streams_and_exits_within_grace() -> Result<()> {
    sigterm_ends_streams_and_exits_within_grace("rsd50", 50)
}

#[test]
fn second_signal_during_the_grace_period_exits_at_once() -> Result<()> {
    for (second, code) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 130)] {
        let mut s = start("rsd2", "60s")?;
        let mut f = s.follower()?;
        let _idle = TcpStream::connect(&s.addr)?;
        s.until_all_see_a_flow(&[&f])?;
        s.relay.signal(Signal::SIGTERM)?;
        let want = s.stream_end();
        assert_saw_the_end(&mut f, &want, Duration::from_secs(30))?;
        ensure!(s.relay.try_wait()?.is_none(), "{}", read(&s.log));
        s.relay.signal(second)?;
        let st = s.relay.wait_exit(Duration::from_secs(10))?;
        ensure!(st.code() == Some(code), "after a second {second}: {st}");
    }
    Ok(())
}

/// Bytes the relay (`pid`) has queued and not yet had acknowledged on its
/// established connections whose local port is `port` (the peer does not
/// read: its receive window is full).
fn send_queue_on(pid: u32, port: u16) -> Result<u64> {
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let target = std::fs::read_link(fd?.path()).unwrap_or_default();
        if let Some(i) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(i.to_string());
        }
    }
    let mut queued = 0;
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (Some(local), Some(st), Some(q), Some(inode)) =
                (f.get(1), f.get(3), f.get(4), f.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let tx = q
                .split(':')
                .next()
                .and_then(|t| u64::from_str_radix(t, 16).ok())
                .unwrap_or(0);
            if local_port == Some(port) && *st == "01" && inodes.contains(*inode) {
                queued += tx;
            }
        }
    }
    Ok(queued)
}

/// `--ui-listen` with `--shutdown-grace`: at SIGTERM a browser's follow
/// stream (`/api/flows?follow`) ends with the relay's UNAVAILABLE as its
/// last line, and neither an idle connection to the UI nor a browser that
/// stopped reading its flow stream (the relay cannot finish writing to it)
/// holds the relay past the grace: it exits 0 (the graceful path, not the
/// backstop that exits 1 a second after the grace) within the grace.
/// (curl reads the NDJSON stream as the page does; scripts/setup.sh
/// installs it.)
#[test]
fn sigterm_ends_the_web_uis_streams_and_exits_within_grace() -> Result<()> {
    let grace = Duration::from_secs(4);
    let ui = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let ui_port: u16 = ui.rsplit(':').next().unwrap_or_default().parse()?;
    let mut s = start_with("rsdui", "4s", &["--ui-listen", &ui])?;
    wait_until(
        "the relay serving the web UI",
        Duration::from_secs(10),
        || {
            Ok(read(&s.log)
                .contains("relay serving the web UI")
                .then_some(()))
        },
    )?;
    let mut cmd = Command::new("curl");
    cmd.args(["-sSN", "--max-time", "60"])
        .arg(format!("http://{ui}/api/flows?follow"));
    let mut browser = ChildGuard::spawn_capture("curl", &mut cmd)?;
    let _idle = TcpStream::connect(&ui)?;
    let mut stalled = TcpStream::connect(&ui)?;
    std::io::Write::write_all(
        &mut stalled,
        format!("GET /api/flows?follow HTTP/1.1\r\nHost: {ui}\r\n\r\n").as_bytes(),
    )?;
    wait_until(
        "the UI's follow stream to carry a flow",
        Duration::from_secs(30),
        || {
            s.node.data.emit(now_ns());
            Ok(browser
                .stdout
                .snapshot()
                .iter()
                .any(|l| l.contains("\"flow\""))
                .then_some(()))
        },
    )?;
    let pid = s.relay.pid().context("relay pid")?;
    wait_until(
        "the stalled browser's connection to fill up",
        Duration::from_secs(60),
        || {
            for _ in 0..2000 {
                s.node.data.emit(now_ns());
            }
            Ok((send_queue_on(pid, ui_port)? > 0).then_some(()))
        },
    )?;

    let t0 = Instant::now();
    s.relay.signal(Signal::SIGTERM)?;
    let st = browser.wait_exit(grace)?;
    let lines = browser.stdout.wait_end(Duration::from_secs(5))?;
    ensure!(
        st.success()
            && lines.last().map(String::as_str)
                == Some(r#"{"error":"Unavailable: the relay is shutting down"}"#),
        "the UI's follow stream: curl {st}, last lines {:?}",
        &lines[lines.len().saturating_sub(3)..]
    );
    let st = s.relay.wait_exit(grace + Duration::from_secs(5))?;
    let took = t0.elapsed();
    eprintln!(
        "the UI's stream ended; the relay exited {took:?} after SIGTERM (grace {grace:?}; an idle and a stalled browser connection open)"
    );
    ensure!(st.success(), "relay exited with {st}: {}", read(&s.log));
    ensure!(
        took < grace,
        "the relay took {took:?} to exit (grace {grace:?}): {}",
        read(&s.log)
    );
    drop(stalled);
    Ok(())
}
