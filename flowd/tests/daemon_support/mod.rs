//! The flowd daemon (`--config`) on veth-a of a namespace pair, queried
//! with the `observe` binary, for the tests of its command line
//! (cli_flags.rs) and of its shutdown (shutdown.rs).
//!
//! Namespace `a` runs flowd (Observer API on 127.0.0.1:4244, no metrics
//! server) and the clients; namespace `b` is the far end of veth-a. Every
//! run writes its own ConfigMap file, so the typed flags of a test are
//! applied over explicit ConfigMap values.
#![allow(dead_code)]

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use flowd_tests::{ChildGuard, Pair, bins, flowd::TempDir, wait_until};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_flowd");
pub const API: &str = "127.0.0.1:4244";

/// A ConfigMap YAML file with `data` (string values).
pub fn configmap(dir: &Path, data: &[(&str, &str)]) -> Result<PathBuf> {
    let mut text =
        String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: flowd\ndata:\n");
    for (k, v) in data {
        text.push_str(&format!("  {k}: {}\n", serde_json::to_string(v)?));
    }
    let p = dir.join("configmap.yaml");
    std::fs::write(&p, text)?;
    Ok(p)
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// flowd in daemon mode on veth-a.
pub struct Daemon {
    pub pair: Pair,
    pub flowd: ChildGuard,
    pub dir: TempDir,
    /// flowd's stderr (its log).
    pub log: PathBuf,
    /// Next UDP destination port: every datagram starts a new flow.
    next_port: u16,
}

impl Daemon {
    /// Starts `flowd --config <ConfigMap> ARGS…` in namespace `a`. The
    /// ConfigMap holds the API address, no metrics server, veth-a and
    /// `data` (later entries win; `{dir}` in a value is the run's own
    /// directory). Waits until veth-a is attached and the API listens, then
    /// brings the link up.
    pub fn start(tag: &str, data: &[(&str, &str)], args: &[&str]) -> Result<Self> {
        let pair = Pair::create(tag)?;
        let dir = TempDir::new(tag)?;
        let d = dir.0.display().to_string();
        let mut all: Vec<(&str, String)> = vec![
            ("hubble-listen-address", API.into()),
            ("hubble-metrics-server", String::new()),
            ("flowd-interfaces", "veth-a".into()),
            ("flowd-node-name", "daemon-test".into()),
        ];
        all.extend(data.iter().map(|(k, v)| (*k, v.replace("{dir}", &d))));
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let cm = configmap(&dir.0, &all)?;
        let log = dir.0.join("flowd.log");
        let mut cmd = pair.a.command(BIN);
        cmd.arg("--config")
            .arg(&cm)
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log)?);
        let mut flowd = ChildGuard::spawn("flowd", &mut cmd)?;
        wait_until("flowd attached to veth-a", Duration::from_secs(30), || {
            if let Some(st) = flowd.try_wait()? {
                bail!("flowd exited early ({st}): {}", read(&log));
            }
            let text = read(&log);
            Ok((text.contains("Observer API listening")
                && text
                    .lines()
                    .any(|l| l.contains(" attached") && l.contains("veth-a")))
            .then_some(()))
        })?;
        pair.up()?;
        Ok(Self {
            pair,
            flowd,
            dir,
            log,
            next_port: 20_000,
        })
    }

    pub fn log_text(&self) -> String {
        read(&self.log)
    }

    /// `observe ARGS…` against this flowd, to completion.
    pub fn observe(&self, args: &[&str]) -> Result<std::process::Output> {
        let out = self
            .pair
            .a
            .command(bins::path("observe")?)
            .args(["--server", API])
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("OBSERVE_SERVER")
            .output()?;
        ensure!(
            out.status.success(),
            "observe {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out)
    }

    /// Every buffered flow (GetFlows through `observe --all -o json`).
    pub fn flows(&self) -> Result<Vec<Value>> {
        let out = self.observe(&["--all", "-o", "json"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v.get("flow").cloned())
            .collect())
    }

    /// `observe --follow -o json` against this flowd, stderr collected.
    pub fn follower(&self) -> Result<ChildGuard> {
        let mut cmd = self.pair.a.command(bins::path("observe")?);
        cmd.args(["--server", API, "--follow", "-o", "json"])
            .env("NO_COLOR", "1")
            .env_remove("OBSERVE_SERVER");
        ChildGuard::spawn_capture("observe", &mut cmd)
    }

    /// An idle TCP connection to the Observer API (inside namespace `a`).
    pub fn idle_connection(&self) -> Result<TcpStream> {
        self.pair
            .a
            .run(|| TcpStream::connect(API))?
            .context("idle connection to the Observer API")
    }

    /// Sends one UDP datagram from a to b on a port not used before.
    pub fn new_flow(&mut self) -> Result<()> {
        let port = self.next_port;
        self.next_port += 1;
        self.pair.a.run(move || -> Result<()> {
            let s = UdpSocket::bind((Pair::A4, 0))?;
            s.send_to(b"flow", (Pair::B4, port))?;
            Ok(())
        })?
    }

    /// Makes new flows until every follower has printed at least one (so
    /// every stream is open and delivering).
    pub fn until_all_see_a_flow(&mut self, followers: &[&ChildGuard]) -> Result<()> {
        wait_until(
            "every follower to print a flow",
            Duration::from_secs(60),
            || {
                self.new_flow()?;
                Ok(followers
                    .iter()
                    .all(|f| !printed_flow_uuids(f).is_empty())
                    .then_some(()))
            },
        )
    }

    /// One HTTP/1.1 exchange from a (client) to b:8080 (server), the
    /// connection closed by both sides; then waits until flowd has the
    /// FIN flows of both directions, which follow every other record of
    /// the exchange in the ring. Returns every buffered flow.
    pub fn http_exchange(&self, path: &str) -> Result<Vec<Value>> {
        let listener = self.pair.b.run(|| TcpListener::bind((Pair::B4, 8080)))??;
        let server = std::thread::spawn(move || -> Result<()> {
            let (mut s, _) = listener.accept()?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk)?;
                ensure!(n > 0, "client closed before its request ended");
                buf.extend_from_slice(&chunk[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")?;
            Ok(())
        });
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", Pair::B4);
        let client_port = self.pair.a.run(move || -> Result<u16> {
            let mut s = TcpStream::connect((Pair::B4, 8080))?;
            s.write_all(req.as_bytes())?;
            let mut resp = Vec::new();
            s.read_to_end(&mut resp)?;
            ensure!(resp.starts_with(b"HTTP/1.1 200"), "response {resp:?}");
            Ok(s.local_addr()?.port())
        })??;
        server
            .join()
            .map_err(|_| anyhow::anyhow!("HTTP server panicked"))??;
        wait_until(
            "the FIN flows of both directions",
            Duration::from_secs(20),
            || {
                let flows = self.flows()?;
                let fin = |sp: u16, dp: u16| {
                    flows.iter().any(|f| {
                        let t = &f["l4"]["TCP"];
                        t["source_port"] == sp
                            && t["destination_port"] == dp
                            && t["flags"]["FIN"] == true
                    })
                };
                Ok((fin(client_port, 8080) && fin(8080, client_port)).then_some(flows))
            },
        )
    }
}

/// UUIDs of the flows a `observe -o json` follower printed.
pub fn printed_flow_uuids(f: &ChildGuard) -> BTreeSet<String> {
    f.stdout
        .snapshot()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["flow"]["uuid"].as_str().map(str::to_string))
        .collect()
}

/// L7 flows among `flows`.
pub fn l7(flows: &[Value]) -> Vec<&Value> {
    flows.iter().filter(|f| f["Type"] == "L7").collect()
}
