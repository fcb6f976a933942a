//! A node with two pods, as a routed CNI (Calico, Cilium) builds it: pod
//! namespaces `a` and `b` each reach the node namespace through a veth
//! (`lxc-a`, `lxc-b` on the node's side), the node routes between them with
//! a host route per pod, and the flowd daemon runs in the node namespace as
//! the DaemonSet does, finding the pod veths from those routes and a
//! manifest of the two pods. Neighbours are static (no ARP in the figures).
//! Also the daemon's metrics, read the way Prometheus reads them.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use flowd_tests::{ChildGuard, Netns, VethPair, flowd::TempDir, link_up, wait_oper_up};

pub(crate) struct Node {
    pub(crate) node: Netns,
    pub(crate) a: Netns,
    pub(crate) b: Netns,
    pub(crate) a_ip: String,
    pub(crate) b_ip: String,
}

/// Where the daemon serves its metrics, inside the node namespace.
pub(crate) const METRICS: &str = "127.0.0.1:9965";
/// The pods' default gateway (Calico's link-local next hop).
const GATEWAY: &str = "169.254.1.1";

fn mac(ns: &Netns, dev: &str) -> Result<String> {
    let out = ns.ip(&["-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["address"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no MAC address of {dev} in {}", ns.name()))
}

impl Node {
    pub(crate) fn create(tag: &str) -> Result<Self> {
        let node = Netns::new(&format!("{tag}n"))?;
        let a = Netns::new(&format!("{tag}a"))?;
        let b = Netns::new(&format!("{tag}b"))?;
        // The drop program sees every namespace: pod addresses of its own.
        let net = 10 + std::process::id() % 240;
        let (a_ip, b_ip) = (format!("10.211.{net}.10"), format!("10.211.{net}.11"));
        node.sysctl("net.ipv4.ip_forward", "1")?;
        for (pod, veth, ip) in [(&a, "lxc-a", &a_ip), (&b, "lxc-b", &b_ip)] {
            VethPair::create(&node, veth, pod, "eth0")?;
            pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
            link_up(&node, veth)?;
            link_up(pod, "eth0")?;
            wait_oper_up(&node, veth)?;
            wait_oper_up(pod, "eth0")?;
            pod.ip(&["route", "add", GATEWAY, "dev", "eth0", "scope", "link"])?;
            pod.ip(&["route", "add", "default", "via", GATEWAY, "dev", "eth0"])?;
            let node_mac = mac(&node, veth)?;
            pod.ip(&[
                "neigh",
                "add",
                GATEWAY,
                "lladdr",
                &node_mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
            node.ip(&["route", "add", &format!("{ip}/32"), "dev", veth])?;
            let pod_mac = mac(pod, "eth0")?;
            node.ip(&[
                "neigh",
                "add",
                ip,
                "lladdr",
                &pod_mac,
                "dev",
                veth,
                "nud",
                "permanent",
            ])?;
        }
        Ok(Self {
            node,
            a,
            b,
            a_ip,
            b_ip,
        })
    }

    /// Writes the two pods' manifest (node `n1`) into `dir`.
    fn manifests(&self, dir: &Path) -> Result<()> {
        let pod = |name: &str, ip: &str| {
            format!(
                "kind: Pod\nmetadata: {{name: {name}, namespace: bench, uid: u-{name}, labels: {{app: {name}}}}}\n\
                 spec: {{nodeName: n1, containers: [{{name: app, image: x}}]}}\n\
                 status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n"
            )
        };
        std::fs::write(
            dir.join("pods.yaml"),
            format!(
                "{}---\n{}",
                pod("client", &self.a_ip),
                pod("server", &self.b_ip)
            ),
        )?;
        Ok(())
    }

    /// Starts the flowd daemon in the node namespace (ConfigMap keys `sets`
    /// on top of the pods' manifest, the Observer API and the metrics) and
    /// waits until it has attached to both pod veths.
    pub(crate) fn start_flowd(&self, bin: &Path, sets: &[&str]) -> Result<Daemon> {
        let dir = TempDir::new("node")?;
        self.manifests(&dir.0)?;
        let mut cmd = self.node.command(bin);
        cmd.env("RUST_LOG", "warn");
        let mut all = vec![
            "flowd-node-name=n1".to_string(),
            format!("flowd-manifests-dir={}", dir.0.display()),
            "hubble-listen-address=127.0.0.1:4244".into(),
            "hubble-disable-tls=true".into(),
            format!("hubble-metrics-server={METRICS}"),
        ];
        all.extend(sets.iter().map(|s| (*s).to_owned()));
        for kv in &all {
            cmd.args(["--set", kv]);
        }
        let mut child = ChildGuard::spawn("flowd", &mut cmd)?;
        flowd_tests::wait_until(
            "flowd attached to both pod veths",
            Duration::from_secs(30),
            || {
                if let Some(st) = child.try_wait()? {
                    bail!("flowd exited early: {st}");
                }
                let Ok(m) = self.metrics() else {
                    return Ok(None);
                };
                Ok((sum(&m, "flowd_attached_interfaces", &["mode=\"tc\""]) == 2.0).then_some(()))
            },
        )?;
        Ok(Daemon { child, _dir: dir })
    }

    /// The daemon's metrics (Prometheus text), fetched over loopback in the
    /// node namespace (not through the observed veths).
    pub(crate) fn metrics(&self) -> Result<String> {
        self.node.run(|| -> Result<String> {
            let addr: SocketAddr = METRICS.parse()?;
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                s,
                "GET /metrics HTTP/1.1\r\nHost: {METRICS}\r\nConnection: close\r\n\r\n"
            )?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            let body = text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .context("metrics: no HTTP body")?;
            Ok(body)
        })?
    }
}

/// The daemon, stopped with SIGTERM on [`Daemon::stop`] (killed on drop).
pub(crate) struct Daemon {
    pub(crate) child: ChildGuard,
    _dir: TempDir,
}

impl Daemon {
    pub(crate) fn pid(&self) -> Result<u32> {
        self.child.pid().context("flowd exited early")
    }

    pub(crate) fn stop(mut self) -> Result<()> {
        let st = self
            .child
            .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
        if !st.success() {
            bail!("flowd exited with {st}");
        }
        Ok(())
    }
}

/// Sum of the samples of `name` (the `_total` suffix included in `name` for
/// counters) whose labels contain every one of `labels`.
pub(crate) fn sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|x| rest.contains(x)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_adds_matching_series() {
        let m = "# HELP x\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"1\",b=\"3\"} 4\nx_total{a=\"2\"} 5\nxy_total 7\n";
        assert_eq!(sum(m, "x_total", &["a=\"1\""]), 7.0);
        assert_eq!(sum(m, "x_total", &[]), 12.0);
        assert_eq!(sum(m, "xy_total", &[]), 7.0);
    }
}
