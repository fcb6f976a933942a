//! Named network namespaces and veth pairs, removed on drop.
use std::{
    fs::File,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

use crate::wait::wait_until;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS…`, failing with its stderr.
pub fn run_ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace `/run/netns/<name>`, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `fd-<tag>-<pid>-<n>` with loopback up. `tag` helps reading `ip netns`.
    pub fn new(tag: &str) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("fd-{tag}-{}-{n}", std::process::id());
        run_ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ARGS…`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ip(&full)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`,
    /// which also mounts a matching /sys). The pid is the program's own pid:
    /// `ip netns exec` execs it, so signals reach it directly.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Sets a sysctl inside the namespace (e.g. `net.ipv4.tcp_timestamps`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let out = self
            .command("sysctl")
            .args(["-q", "-w", &format!("{key}={value}")])
            .output()?;
        if !out.status.success() {
            bail!(
                "sysctl {key}={value} in {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Runs `f` on a thread that has entered the namespace and returns its
    /// result. Sockets created there belong to the namespace.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        self.spawn_thread(f)?
            .join()
            .map_err(|_| anyhow::anyhow!("closure in namespace {} panicked", self.name))?
    }

    /// Like [`Netns::run`] but returns at once; join the handle for the result.
    pub fn spawn_thread<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<thread::JoinHandle<Result<R>>> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let name = self.name.clone();
        Ok(thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into {name}"))?;
            Ok(f())
        }))
    }

    /// ifindex of an interface in this namespace.
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let out = self.ip(&["-j", "link", "show", "dev", ifname])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v.get(0)
            .and_then(|l| l.get("ifindex"))
            .and_then(serde_json::Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .with_context(|| format!("no ifindex for {ifname} in {}: {out}", self.name))
    }

    /// Interface statistics (`ip -s`): (rx_packets, rx_bytes, tx_packets, tx_bytes).
    pub fn link_stats(&self, ifname: &str) -> Result<(u64, u64, u64, u64)> {
        let out = self.ip(&["-j", "-s", "link", "show", "dev", ifname])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let s = &v[0]["stats64"];
        let g = |dir: &str, k: &str| {
            s[dir][k]
                .as_u64()
                .with_context(|| format!("no {dir}.{k} in stats of {ifname}: {out}"))
        };
        Ok((
            g("rx", "packets")?,
            g("rx", "bytes")?,
            g("tx", "packets")?,
            g("tx", "bytes")?,
        ))
    }

    /// Lines of `/proc/net/snmp` ("Tcp", "Udp", "Icmp", …) of this namespace,
    /// as (protocol, field) → value.
    pub fn snmp(&self) -> Result<std::collections::BTreeMap<(String, String), i64>> {
        let out = self.command("cat").arg("/proc/net/snmp").output()?;
        if !out.status.success() {
            bail!("reading snmp in {}", self.name);
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        let mut m = std::collections::BTreeMap::new();
        for pair in lines.chunks(2) {
            let [head, vals] = pair else { continue };
            let mut h = head.split_whitespace();
            let mut v = vals.split_whitespace();
            let (Some(proto), Some(_)) = (h.next(), v.next()) else {
                continue;
            };
            let proto = proto.trim_end_matches(':').to_owned();
            for (k, val) in h.zip(v) {
                m.insert((proto.clone(), k.to_owned()), val.parse().unwrap_or(-1));
            }
        }
        Ok(m)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_ip(&["netns", "del", &self.name]) {
            eprintln!("warning: removing namespace {}: {e}", self.name);
        }
    }
}

/// A veth pair with one end in each namespace (names are per namespace, so
/// fixed names like `veth-a` never collide across tests).
#[derive(Debug, Clone)]
pub struct VethPair {
    pub a: String,
    pub b: String,
}

impl VethPair {
    /// Creates `a_name` in `a` and its peer `b_name` in `b`, both down.
    pub fn create(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> Result<Self> {
        a.ip(&[
            "link",
            "add",
            a_name,
            "type",
            "veth",
            "peer",
            "name",
            b_name,
            "netns",
            b.name(),
        ])?;
        Ok(Self {
            a: a_name.to_owned(),
            b: b_name.to_owned(),
        })
    }
}

/// Adds an address (CIDR). IPv6 addresses get `nodad` so they are usable at once.
pub fn add_addr(ns: &Netns, dev: &str, cidr: &str) -> Result<()> {
    if cidr.contains(':') {
        ns.ip(&["addr", "add", cidr, "dev", dev, "nodad"])?;
    } else {
        ns.ip(&["addr", "add", cidr, "dev", dev])?;
    }
    Ok(())
}

/// Sets the interface up and waits until its carrier is up (veth: both ends up).
pub fn link_up(ns: &Netns, dev: &str) -> Result<()> {
    ns.ip(&["link", "set", dev, "up"])?;
    Ok(())
}

/// Waits until `dev` in `ns` reports operstate UP.
pub fn wait_oper_up(ns: &Netns, dev: &str) -> Result<()> {
    wait_until(
        &format!("{dev} up in {}", ns.name()),
        Duration::from_secs(10),
        || {
            let out = ns.ip(&["-j", "link", "show", "dev", dev])?;
            Ok(out.contains("\"operstate\":\"UP\"").then_some(()))
        },
    )
}

/// Two namespaces joined by a veth pair, the usual test topology:
/// `a` (veth-a, 10.200.0.1/24, fd00:200::1/64) ↔ `b` (veth-b, .2, ::2).
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
    pub veth: VethPair,
}

impl Pair {
    pub const A4: &str = "10.200.0.1";
    pub const B4: &str = "10.200.0.2";
    pub const A6: &str = "fd00:200::1";
    pub const B6: &str = "fd00:200::2";

    /// Creates the namespaces and the veth pair, links still down and
    /// without addresses (so a test can attach before any packet flows).
    pub fn create(tag: &str) -> Result<Self> {
        let a = Netns::new(&format!("{tag}a"))?;
        let b = Netns::new(&format!("{tag}b"))?;
        let veth = VethPair::create(&a, "veth-a", &b, "veth-b")?;
        Ok(Self { a, b, veth })
    }

    /// Addresses both ends, brings them up and waits for the carrier.
    pub fn up(&self) -> Result<()> {
        add_addr(&self.a, &self.veth.a, &format!("{}/24", Self::A4))?;
        add_addr(&self.a, &self.veth.a, &format!("{}/64", Self::A6))?;
        add_addr(&self.b, &self.veth.b, &format!("{}/24", Self::B4))?;
        add_addr(&self.b, &self.veth.b, &format!("{}/64", Self::B6))?;
        link_up(&self.a, &self.veth.a)?;
        link_up(&self.b, &self.veth.b)?;
        wait_oper_up(&self.a, &self.veth.a)?;
        wait_oper_up(&self.b, &self.veth.b)
    }
}
