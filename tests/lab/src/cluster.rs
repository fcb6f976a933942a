//! The cluster end-to-end harness: a lab with flowd running on every node
//! (as `scripts/demo.sh` does by hand) and, when asked, the relay in the
//! router namespace.
//!
//! ```no_run
//! use flowd_lab::cluster::{Cluster, ClusterOptions};
//! let c = Cluster::start(ClusterOptions { relay: true, ..Default::default() })?;
//! let report = c.run_traffic()?;
//! let status = c.server_status(c.flowd_addr("node-a")?)?;
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Every address the harness hands out is reachable from the router
//! namespace (`in_router`, `observe`), whose traffic crosses no pod veth, so
//! querying flowd adds no pod flows. Dropping a [`Cluster`] kills every
//! process it started and tears the lab down, also while panicking.
//!
//! As the shipped deployment, the cluster runs with mTLS between the relay
//! and the nodes unless `tls: false` (plain text, for debugging):
//! `flowd certgen` writes the CA and certificates into `DIR/tls` (laid out
//! as the Secrets kubelet mounts), flowd serves with the nodes' certificate
//! and requires a client certificate of the CA, and the relay dials with
//! its client certificate. The harness's own clients connect to flowd as
//! the relay does; the relay serves its clients in plain text on the
//! router's loopback, as Cilium's relay does by default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flowd_proto::flow::Flow;
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::{GetFlowsRequest, ServerStatusRequest, ServerStatusResponse};
use flowd_tests::{ChildGuard, wait_until};
use nix::sys::signal::Signal;

use crate::spec::Spec;
use crate::traffic::TrafficReport;
use crate::{Lab, netns};

/// flowd's Observer API port (`hubble-listen-address` in examples/configmap.yaml).
pub const FLOWD_PORT: u16 = 4244;
/// flowd's metrics port (`hubble-metrics-server`).
pub const METRICS_PORT: u16 = 9965;
/// The relay's port (its default `--listen-address`).
pub const RELAY_PORT: u16 = 4245;
/// How long `start` waits for each flowd / the relay to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The cluster name in the nodes' certificates and TLS server names.
pub const CLUSTER_NAME: &str = "default";
/// The name the relay and the harness verify nodes' certificates against
/// when no peer service names the node (static `--peer`s): any name under
/// the certificate's `*.<cluster>.hubble-grpc.cilium.io` (Cilium's relay
/// uses this one for the peer service).
pub const TLS_SERVER_NAME: &str = "hubble-peer.default.hubble-grpc.cilium.io";

/// The TLS server name of a node (what flowd's peer service announces).
pub fn node_tls_server_name(node: &str) -> String {
    format!(
        "{}.{CLUSTER_NAME}.hubble-grpc.cilium.io",
        node.replace('.', "-")
    )
}

/// Client TLS files (the relay's, which the harness uses too), read at
/// every connection so that renewed files are used as soon as they exist.
#[derive(Clone, Debug)]
pub struct ClientTlsFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub server_name: String,
}

impl ClientTlsFiles {
    /// The relay's files in a `flowd certgen --output-dir DIR`.
    pub fn relay_client(dir: &Path) -> Self {
        let d = dir.join("flowd-relay-client-certs");
        Self {
            ca_file: d.join("ca.crt"),
            cert_file: d.join("tls.crt"),
            key_file: d.join("tls.key"),
            server_name: TLS_SERVER_NAME.to_string(),
        }
    }

    /// tonic's configuration from the files as they are now.
    pub fn config(&self) -> Result<tonic::transport::ClientTlsConfig> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(tonic::transport::ClientTlsConfig::new()
            .domain_name(&self.server_name)
            .ca_certificate(tonic::transport::Certificate::from_pem(read(
                &self.ca_file,
            )?))
            .identity(tonic::transport::Identity::from_pem(
                read(&self.cert_file)?,
                read(&self.key_file)?,
            )))
    }

    /// The relay's flags for these files (`--tls-hubble-*`).
    pub fn relay_args(&self) -> Vec<String> {
        vec![
            "--tls-hubble-server-ca-files".into(),
            self.ca_file.display().to_string(),
            "--tls-hubble-client-cert-file".into(),
            self.cert_file.display().to_string(),
            "--tls-hubble-client-key-file".into(),
            self.key_file.display().to_string(),
            "--tls-hubble-server-name".into(),
            self.server_name.clone(),
        ]
    }
}

/// Built workspace binaries (the shared harness's).
pub use flowd_tests::bins;

/// What [`Cluster::start`] runs.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The lab (default: the embedded default spec, two nodes).
    pub spec: Spec,
    /// flowd `--set key=value` overrides, after the harness's own.
    pub set: Vec<(String, String)>,
    /// Start the relay in the router namespace.
    pub relay: bool,
    /// Extra relay arguments (after the `--peer`s and the TLS flags).
    pub relay_args: Vec<String>,
    /// mTLS between the relay (and the harness) and the nodes (default);
    /// false: plain text, for debugging.
    pub tls: bool,
    /// Extra `flowd certgen` arguments for the certificates made at start
    /// (e.g. `--cert-validity`).
    pub certgen_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            spec: Spec::default_spec(),
            set: Vec::new(),
            relay: false,
            relay_args: Vec::new(),
            tls: true,
            certgen_args: Vec::new(),
        }
    }
}

/// A running flowd: its process and its log (stderr) file.
struct FlowdProc {
    child: ChildGuard,
    log: PathBuf,
}

/// A lab with flowd on every node and optionally the relay.
pub struct Cluster {
    opts: ClusterOptions,
    flowd_bin: PathBuf,
    flowd: BTreeMap<String, FlowdProc>,
    /// How many times flowd was started per node (names its log files).
    starts: BTreeMap<String, u32>,
    relay: Option<ChildGuard>,
    /// The relay's client TLS files when the cluster runs with mTLS.
    tls: Option<ClientTlsFiles>,
    // Last: dropped after the processes above are killed.
    lab: Lab,
}

/// examples/configmap.yaml of this workspace.
pub fn configmap_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/configmap.yaml")
}

impl Cluster {
    /// Lab up, flowd on every node, the relay if asked; waits until all are ready.
    pub fn start(opts: ClusterOptions) -> Result<Cluster> {
        let flowd_bin = bins::path("flowd")?;
        let relay_bin = if opts.relay {
            Some(bins::path("relay")?)
        } else {
            None
        };
        let lab = Lab::up(opts.spec.clone()).context("lab up")?;
        let mut c = Cluster {
            opts,
            flowd_bin,
            flowd: BTreeMap::new(),
            starts: BTreeMap::new(),
            relay: None,
            tls: None,
            lab,
        };
        if c.opts.tls {
            let args = c.opts.certgen_args.clone();
            let out = c.certgen(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
            if !out.status.success() {
                bail!(
                    "flowd certgen failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            c.tls = Some(ClientTlsFiles::relay_client(&c.tls_dir()));
        }
        for node in c.node_names() {
            c.spawn_flowd(&node)?;
        }
        for node in c.node_names() {
            c.wait_flowd_ready(&node)?;
        }
        if let Some(bin) = relay_bin {
            c.start_relay(&bin)?;
        }
        Ok(c)
    }

    pub fn lab(&self) -> &Lab {
        &self.lab
    }
    pub fn lab_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }
    /// Changes take effect when flowd (re)starts (`start_flowd`): e.g. other
    /// `set` overrides for a second phase on the same lab. `spec` and the
    /// relay options are used by `start` only.
    pub fn options_mut(&mut self) -> &mut ClusterOptions {
        &mut self.opts
    }

    /// Where `flowd certgen` keeps the cluster's CA and certificates.
    pub fn tls_dir(&self) -> PathBuf {
        self.lab.dir().join("tls")
    }

    /// The relay's client TLS files (None when running in plain text).
    pub fn client_tls(&self) -> Option<&ClientTlsFiles> {
        self.tls.as_ref()
    }

    /// The TLS to use towards `addr`: the client files for a node's flowd,
    /// None for the relay (plain text towards its clients) or without TLS.
    fn tls_for(&self, addr: SocketAddr) -> Option<ClientTlsFiles> {
        (addr != self.relay_addr())
            .then(|| self.tls.clone())
            .flatten()
    }

    /// Runs `flowd certgen --output-dir <tls_dir> ARGS` (the real binary:
    /// creates, or renews what is within its window).
    pub fn certgen(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.flowd_bin)
            .arg("certgen")
            .arg("--output-dir")
            .arg(self.tls_dir())
            .args(["--cluster-name", CLUSTER_NAME])
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .context("running flowd certgen")
    }

    pub fn node_names(&self) -> Vec<String> {
        self.lab.nodes().iter().map(|n| n.name.clone()).collect()
    }

    fn node(&self, node: &str) -> Result<&crate::NodeState> {
        self.lab
            .nodes()
            .iter()
            .find(|n| n.name == node)
            .with_context(|| format!("no node {node:?} in the lab"))
    }

    /// flowd's Observer API on `node` (underlay address, from the router namespace).
    pub fn flowd_addr(&self, node: &str) -> Result<SocketAddr> {
        Ok(SocketAddr::from((self.node(node)?.underlay_ip, FLOWD_PORT)))
    }
    /// flowd's metrics server on `node`.
    pub fn metrics_addr(&self, node: &str) -> Result<SocketAddr> {
        Ok(SocketAddr::from((
            self.node(node)?.underlay_ip,
            METRICS_PORT,
        )))
    }
    /// The relay (inside the router namespace).
    pub fn relay_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], RELAY_PORT))
    }
    /// The pid of flowd on `node` (`ip netns exec` execs it: the pid is flowd's).
    pub fn flowd_pid(&self, node: &str) -> Option<u32> {
        self.flowd.get(node).and_then(|f| f.child.pid())
    }
    /// flowd's log (stderr) on `node`, of its latest start.
    pub fn flowd_log(&self, node: &str) -> Option<&Path> {
        self.flowd.get(node).map(|f| f.log.as_path())
    }

    fn flowd_args(&self, node: &str) -> Vec<String> {
        let mut sets = vec![
            ("flowd-node-name".to_string(), node.to_string()),
            (
                "flowd-manifests-dir".to_string(),
                self.lab.manifest_dir().display().to_string(),
            ),
        ];
        if self.opts.tls {
            let d = self.tls_dir().join("flowd-server-certs");
            let f = |k: &str| d.join(k).display().to_string();
            sets.extend([
                ("hubble-disable-tls".to_string(), "false".to_string()),
                ("hubble-tls-cert-file".to_string(), f("tls.crt")),
                ("hubble-tls-key-file".to_string(), f("tls.key")),
                ("hubble-tls-client-ca-files".to_string(), f("ca.crt")),
            ]);
        } else {
            sets.push(("hubble-disable-tls".to_string(), "true".to_string()));
        }
        sets.extend(self.opts.set.iter().cloned());
        let mut args = vec![
            "--config".to_string(),
            configmap_path().display().to_string(),
        ];
        for (k, v) in sets {
            args.push("--set".into());
            args.push(format!("{k}={v}"));
        }
        args
    }

    fn spawn_flowd(&mut self, node: &str) -> Result<()> {
        if self.flowd.contains_key(node) {
            bail!("flowd already runs on {node}");
        }
        let n = self.starts.entry(node.to_string()).or_default();
        *n += 1;
        let log = self
            .lab
            .dir()
            .join("logs")
            .join(format!("flowd-{node}.{n}.log"));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = self
            .lab
            .command_in_node(node, &self.flowd_bin.to_string_lossy())?;
        // Plain log lines: the harness reads "attached ifname=…" from them.
        cmd.args(self.flowd_args(node))
            .env("NO_COLOR", "1")
            .stderr(file);
        let child = ChildGuard::spawn(&format!("flowd on {node}"), &mut cmd)?;
        self.flowd
            .insert(node.to_string(), FlowdProc { child, log });
        Ok(())
    }

    /// Interfaces flowd on `node` reports attached (and not detached since), from its log.
    pub fn attached_interfaces(&self, node: &str) -> Result<Vec<String>> {
        let f = self
            .flowd
            .get(node)
            .with_context(|| format!("flowd is not running on {node}"))?;
        let text = std::fs::read_to_string(&f.log)
            .with_context(|| format!("reading {}", f.log.display()))?;
        Ok(attached_from_log(&text))
    }

    fn wait_flowd_ready(&mut self, node: &str) -> Result<()> {
        let addr = self.flowd_addr(node)?;
        let veths: Vec<String> = self
            .lab
            .host_veths(node)
            .into_iter()
            .map(str::to_string)
            .collect();
        let started = Instant::now();
        let res = wait_until(&format!("flowd on {node} ready"), READY_TIMEOUT, || {
            if let Some(f) = self.flowd.get_mut(node)
                && let Some(st) = f.child.try_wait()?
            {
                bail!("flowd on {node} exited with {st}");
            }
            let attached = self.attached_interfaces(node)?;
            if !veths.iter().all(|v| attached.contains(v)) {
                return Ok(None);
            }
            Ok(self.server_status(addr).ok().map(|_| ()))
        });
        if let Err(e) = res {
            let log = self
                .flowd_log(node)
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default();
            bail!("{e:#}\n--- flowd log ({node}) ---\n{}", tail(&log, 40));
        }
        tracing::info!(
            node,
            secs = started.elapsed().as_secs_f64(),
            "flowd is ready"
        );
        Ok(())
    }

    fn start_relay(&mut self, bin: &Path) -> Result<()> {
        let mut args = Vec::new();
        for n in self.lab.nodes() {
            args.push("--peer".to_string());
            args.push(format!("{}={}:{FLOWD_PORT}", n.name, n.underlay_ip));
        }
        if let Some(tls) = &self.tls {
            args.extend(tls.relay_args());
        }
        args.extend(self.opts.relay_args.iter().cloned());
        let log = self.lab.dir().join("logs").join("relay.log");
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = netns::command(self.lab.router_netns(), &bin.to_string_lossy(), &args);
        cmd.env("NO_COLOR", "1").stderr(file);
        self.relay = Some(ChildGuard::spawn("relay", &mut cmd)?);
        let want = self.lab.nodes().len() as u32;
        let addr = self.relay_addr();
        let res = wait_until("relay: all nodes connected", READY_TIMEOUT, || {
            if let Some(r) = self.relay.as_mut()
                && let Some(st) = r.try_wait()?
            {
                bail!("relay exited with {st}");
            }
            Ok(self
                .server_status(addr)
                .ok()
                .filter(|s| s.num_connected_nodes.as_ref().map(|v| v.value) == Some(want))
                .map(|_| ()))
        });
        if let Err(e) = res {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("{e:#}\n--- relay log ---\n{}", tail(&text, 40));
        }
        Ok(())
    }

    /// SIGKILL flowd on `node` (no cleanup: its TC/TCX links go with the process).
    pub fn kill_flowd(&mut self, node: &str) -> Result<()> {
        let mut f = self
            .flowd
            .remove(node)
            .with_context(|| format!("flowd is not running on {node}"))?;
        f.child.stop(Signal::SIGKILL, Duration::from_secs(10))?;
        Ok(())
    }

    /// SIGTERM flowd on `node` and wait for it to exit (bounded); returns its status.
    pub fn stop_flowd(&mut self, node: &str) -> Result<std::process::ExitStatus> {
        let mut f = self
            .flowd
            .remove(node)
            .with_context(|| format!("flowd is not running on {node}"))?;
        f.child.stop(Signal::SIGTERM, Duration::from_secs(20))
    }

    /// Starts flowd on `node` again (same arguments) and waits until it is ready.
    pub fn start_flowd(&mut self, node: &str) -> Result<()> {
        self.spawn_flowd(node)?;
        self.wait_flowd_ready(node)
    }

    /// Runs `f` on a thread inside the router namespace with its own tokio runtime.
    pub fn in_router<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        in_netns(self.lab.router_netns(), f)
    }

    /// Runs the `observe` binary in the router namespace; with the relay on,
    /// `--server <relay>` comes first (a later `--server` in `args` overrides it).
    pub fn observe(&self, args: &[&str]) -> Result<Output> {
        let bin = bins::path("observe")?;
        let mut a: Vec<String> = Vec::new();
        if self.relay.is_some() {
            a.push("--server".into());
            a.push(self.relay_addr().to_string());
        }
        a.extend(args.iter().map(|s| s.to_string()));
        netns::command(self.lab.router_netns(), &bin.to_string_lossy(), &a)
            .stdin(std::process::Stdio::null())
            .output()
            .context("running observe")
    }

    /// Runs the lab's traffic mix (see [`Lab::run_traffic`]).
    pub fn run_traffic(&self) -> Result<TrafficReport> {
        Ok(self.lab.run_traffic()?)
    }

    /// ServerStatus of flowd or the relay at `addr` (from the router namespace).
    pub fn server_status(&self, addr: SocketAddr) -> Result<ServerStatusResponse> {
        let tls = self.tls_for(addr);
        self.in_router(move || server_status(addr, tls))?
    }

    /// The last `number` flows (all when 0) at `addr` matching `req` otherwise.
    pub fn get_flows(&self, addr: SocketAddr, req: GetFlowsRequest) -> Result<Vec<Flow>> {
        let tls = self.tls_for(addr);
        self.in_router(move || get_flows(addr, req, tls))?
    }

    /// An Observer API client of flowd or the relay at `addr`, as the
    /// harness connects (call inside the router namespace, e.g. in
    /// `in_router`): returns what to connect with.
    pub fn connector(&self, addr: SocketAddr) -> Connector {
        Connector {
            addr,
            tls: self.tls_for(addr),
        }
    }

    /// Polls ServerStatus at `addr` until seen_flows has not changed for
    /// `quiet` (and is non-zero), bounded by `timeout`; returns it.
    pub fn wait_seen_flows_settled(
        &self,
        addr: SocketAddr,
        quiet: Duration,
        timeout: Duration,
    ) -> Result<u64> {
        let mut last: Option<(u64, Instant)> = None;
        wait_until(&format!("seen_flows at {addr} to settle"), timeout, || {
            let seen = self.server_status(addr)?.seen_flows;
            match last {
                Some((n, since)) if n == seen => {
                    if seen > 0 && since.elapsed() >= quiet {
                        return Ok(Some(seen));
                    }
                }
                _ => last = Some((seen, Instant::now())),
            }
            Ok(None)
        })
    }

    /// Polls GetFlows(`req`) at `addr` until `pred` holds over the flows
    /// (bounded by `timeout`); returns those flows.
    pub fn wait_flows(
        &self,
        addr: SocketAddr,
        req: GetFlowsRequest,
        timeout: Duration,
        mut pred: impl FnMut(&[Flow]) -> bool,
    ) -> Result<Vec<Flow>> {
        let mut seen = 0;
        wait_until(&format!("flows at {addr}"), timeout, || {
            let flows = self.get_flows(addr, req.clone())?;
            seen = flows.len();
            Ok(pred(&flows).then_some(flows))
        })
        .with_context(|| format!("the last poll returned {seen} flows"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Processes first (ChildGuard kills on drop); the lab field drops after this.
        self.relay.take();
        self.flowd.clear();
    }
}

/// Runs `f` on a thread inside network namespace `ns` with a current-thread runtime.
pub fn in_netns<T, F, Fut>(ns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    Ok(netns::run_in(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| crate::Error::Lab(format!("building a tokio runtime: {e}")))?;
        Ok(rt.block_on(f()))
    })?)
}

/// How to reach flowd or the relay from the router namespace
/// ([`Cluster::connector`]).
#[derive(Clone, Debug)]
pub struct Connector {
    pub addr: SocketAddr,
    pub tls: Option<ClientTlsFiles>,
}

impl Connector {
    /// Connects (inside the router namespace), over mTLS when the cluster
    /// uses it; the files are read now.
    pub async fn channel(&self) -> Result<tonic::transport::Channel> {
        self.channel_with_timeout(Duration::from_secs(10)).await
    }

    /// Like [`Connector::channel`], with `timeout` for every call.
    pub async fn channel_with_timeout(
        &self,
        timeout: Duration,
    ) -> Result<tonic::transport::Channel> {
        let addr = self.addr;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut ep = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout);
        if let Some(tls) = &self.tls {
            ep = ep.tls_config(tls.config()?)?;
        }
        ep.connect()
            .await
            .with_context(|| format!("connecting to {addr}"))
    }

    /// An Observer API client.
    pub async fn observer(&self) -> Result<ObserverClient<tonic::transport::Channel>> {
        Ok(ObserverClient::new(self.channel().await?))
    }
}

async fn connect(
    addr: SocketAddr,
    tls: Option<ClientTlsFiles>,
) -> Result<ObserverClient<tonic::transport::Channel>> {
    Connector { addr, tls }.observer().await
}

/// ServerStatus at `addr` (call inside the right namespace, e.g. via
/// `in_router`), over `tls` if given.
pub async fn server_status(
    addr: SocketAddr,
    tls: Option<ClientTlsFiles>,
) -> Result<ServerStatusResponse> {
    let mut c = connect(addr, tls).await?;
    Ok(c.server_status(ServerStatusRequest {})
        .await
        .with_context(|| format!("ServerStatus at {addr}"))?
        .into_inner())
}

/// GetFlows(`req`) at `addr` until the server ends the stream (use a
/// non-follow request); the flows only (node status and lost events skipped).
pub async fn get_flows(
    addr: SocketAddr,
    req: GetFlowsRequest,
    tls: Option<ClientTlsFiles>,
) -> Result<Vec<Flow>> {
    let mut c = connect(addr, tls).await?;
    let mut stream = c
        .get_flows(req)
        .await
        .with_context(|| format!("GetFlows at {addr}"))?
        .into_inner();
    let mut flows = Vec::new();
    while let Some(r) = stream
        .message()
        .await
        .with_context(|| format!("GetFlows stream from {addr}"))?
    {
        if let Some(ResponseTypes::Flow(f)) = r.response_types {
            flows.push(f);
        }
    }
    Ok(flows)
}

/// The interfaces a flowd log says are attached: "attached ifname=X" (or
/// `interface=X`) lines minus later "detached ifname=X" lines.
pub fn attached_from_log(text: &str) -> Vec<String> {
    let mut set: Vec<String> = Vec::new();
    for line in text.lines() {
        let attached = line.contains(" attached ");
        let detached = line.contains(" detached ");
        if !attached && !detached {
            continue;
        }
        let Some(name) = line
            .split_whitespace()
            .find_map(|w| {
                w.strip_prefix("ifname=")
                    .or_else(|| w.strip_prefix("interface="))
            })
            .map(|n| n.trim_matches('"').to_string())
        else {
            continue;
        };
        set.retain(|n| *n != name);
        if attached {
            set.push(name);
        }
    }
    set
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attached_interfaces_follow_attach_and_detach_lines() {
        let log = "\
2025-01-01T00:00:00Z  INFO flowd::daemon: attached ifname=lxcaaa ifindex=3 mechanism=tcx
2025-01-01T00:00:00Z  INFO flowd::daemon: attached ifname=lxcbbb ifindex=4 mechanism=tcx
2025-01-01T00:00:00Z  INFO flowd::daemon: pod veths changed attach=2 detach=0
2025-01-01T00:00:01Z  INFO flowd::daemon: detached ifname=lxcaaa ifindex=3
";
        assert_eq!(attached_from_log(log), vec!["lxcbbb".to_string()]);
    }
}
