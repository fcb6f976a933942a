//! Bringing a lab up and down.
//!
//! Topology (default spec; every name carries the instance prefix):
//!
//! ```text
//!  world netns  eth0 198.51.100.10/24 ── wan0 198.51.100.1/24 ┐
//!                                                            router netns (ip_forward, routes to pod CIDRs via nodes)
//!  node-a netns eth0 172.18.0.2/24 ── ul0 ┐                  │
//!  node-b netns eth0 172.18.0.3/24 ── ul1 ┴ br0 172.18.0.1/24 ┘
//!  node netns:  default via 172.18.0.1; other nodes' pod CIDRs via their eth0 address;
//!               lxcXXXXXXXXXXXX (proxy_arp) + route POD_IP/32 per pod
//!  pod netns:   eth0 POD_IP/32; 169.254.1.1 dev eth0 scope link; default via 169.254.1.1
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use tokio::sync::watch;

use crate::Error;
use crate::app::{self, AppConfig, Kind, Stats};
use crate::dns;
use crate::manifests;
use crate::netns;
use crate::spec::{DeploymentSpec, ServiceMode, Spec};
use crate::state::{
    ADMIN_PORT, LabState, POD_GATEWAY, POD_GATEWAY6, PodState, ProcState, UPLINK, WORLD_PORT,
};
use crate::traffic::{self, TrafficReport};

/// How long `up` waits for a server or the DNS to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique prefix for a lab instance in this process.
pub fn new_prefix() -> String {
    format!(
        "flowdlab-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where the servers run.
#[derive(Clone, Debug)]
pub enum Servers {
    /// Threads of this process that entered the pods' namespaces (library default).
    InProcess,
    /// One detached `lab-app` process per pod (the CLI: the lab outlives `lab up`).
    Processes { program: PathBuf, args: Vec<String> },
}

pub struct Options {
    /// Directory for manifests, state and logs; a temporary one (removed on teardown) if `None`.
    pub dir: Option<PathBuf>,
    pub servers: Servers,
    /// Called with one line per step.
    pub progress: Box<dyn Fn(&str) + Send + Sync>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dir: None,
            servers: Servers::InProcess,
            progress: Box::new(|s| tracing::info!("{s}")),
        }
    }
}

struct ServerThread {
    stop: watch::Sender<bool>,
    thread: JoinHandle<Result<(), Error>>,
}

/// A running lab. Dropping it tears everything down (also while panicking).
pub struct Lab {
    state: LabState,
    owned_dir: bool,
    servers: BTreeMap<String, ServerThread>,
    dnsmasq: Option<Child>,
    down: bool,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

fn app_config(state: &LabState, p: &PodState) -> AppConfig {
    AppConfig {
        kind: Kind::Pod(p.role),
        namespace: p.namespace.clone(),
        pod: p.name.clone(),
        port: state.spec.app_port,
        app_port: state.spec.app_port,
        grpc_port: state.spec.grpc_port,
        dns: state.dns_server,
        cluster_domain: state.spec.cluster_domain.clone(),
        world_name: state.spec.world.names.first().cloned(),
        ipv6: state.spec.ipv6,
    }
}

fn world_config(state: &LabState) -> AppConfig {
    AppConfig {
        kind: Kind::World,
        namespace: String::new(),
        pod: "world".into(),
        port: WORLD_PORT,
        app_port: state.spec.app_port,
        grpc_port: state.spec.grpc_port,
        dns: state.dns_server,
        cluster_domain: state.spec.cluster_domain.clone(),
        world_name: None,
        ipv6: state.spec.ipv6,
    }
}

/// The servers to run: (key, netns, config). Key is `ns/pod` or `world`.
fn server_list(state: &LabState) -> Vec<(String, String, AppConfig)> {
    let mut v = vec![(
        "world".to_string(),
        state.world.netns.clone(),
        world_config(state),
    )];
    for p in state.pods.iter().filter(|p| p.role.serves() && !p.dns) {
        v.push((p.key(), p.netns.clone(), app_config(state, p)));
    }
    v
}

/// Creates a namespace with the lab's IPv6 policy applied before any link exists.
fn create_netns(state: &LabState, ns: &str) -> Result<(), Error> {
    netns::add(ns)?;
    // IPv4 only: without this every new link sends IPv6 DAD/RS/MLD packets, noise in
    // the flows tests count. Set before any link exists so `default` covers them all.
    let v6: Vec<(String, String)> = if state.spec.ipv6 {
        // Dual stack, but quiet and immediate: no DAD (addresses usable at once),
        // no router solicitations or autoconfiguration.
        ["all", "default"]
            .iter()
            .flat_map(|c| {
                [
                    (format!("net/ipv6/conf/{c}/accept_dad"), "0".to_string()),
                    (format!("net/ipv6/conf/{c}/dad_transmits"), "0".to_string()),
                    (
                        format!("net/ipv6/conf/{c}/router_solicitations"),
                        "0".to_string(),
                    ),
                    (format!("net/ipv6/conf/{c}/accept_ra"), "0".to_string()),
                    (format!("net/ipv6/conf/{c}/forwarding"), "1".to_string()),
                ]
            })
            .collect()
    } else {
        vec![
            ("net/ipv6/conf/all/disable_ipv6".into(), "1".into()),
            ("net/ipv6/conf/default/disable_ipv6".into(), "1".into()),
        ]
    };
    let mut sysctls = v6;
    // No tail loss probes: with the lab's sub-millisecond RTTs a probe fires
    // after a few milliseconds without an ACK, so on a busy machine it
    // resends segments that were only late, and the receiver drops the
    // copies (TCP_OLD_DATA): drop flows that depend on timing, in counts that
    // must be exact. Real losses are still recovered (fast retransmit, RTO).
    sysctls.push(("net/ipv4/tcp_early_retrans".into(), "0".into()));
    netns::sysctls(ns, sysctls)
}

/// Wires a pod (its namespace exists) to its node: veth pair, /32 (and /128)
/// routes, proxy ARP, the pod's addresses and default routes, its resolv.conf.
fn wire_pod(state: &LabState, p: &PodState) -> Result<(), Error> {
    let node = state
        .node(&p.node)
        .ok_or_else(|| Error::Lab(format!("pod {} is on unknown node {}", p.key(), p.node)))?;
    let mut cmds = Vec::new();
    let mut sysctls = Vec::new();

    cmds.push(format!(
        "link add {} type veth peer name {UPLINK} netns {}",
        p.host_veth, p.netns
    ));
    cmds.push(format!("link set {} up", p.host_veth));
    cmds.push(format!(
        "route add {}/32 dev {} scope link",
        p.ip, p.host_veth
    ));
    if let Some(ip6) = p.ip6 {
        // The pods' IPv6 gateway, the same link-local address on every host veth.
        cmds.push(format!(
            "addr add {POD_GATEWAY6}/64 dev {} nodad",
            p.host_veth
        ));
        cmds.push(format!("route add {ip6}/128 dev {}", p.host_veth));
    }
    sysctls.push((
        format!("net/ipv4/conf/{}/proxy_arp", p.host_veth),
        "1".into(),
    ));
    // Proxy ARP answers after a random delay of up to 0.8s by default (Calico sets 0 too).
    sysctls.push((
        format!("net/ipv4/neigh/{}/proxy_delay", p.host_veth),
        "0".into(),
    ));
    netns::ip_batch(&node.netns, &cmds)?;
    netns::sysctls(&node.netns, sysctls)?;
    netns::ip_batch(
        &p.netns,
        &[
            "link set lo up".into(),
            format!("addr add {}/32 dev {UPLINK}", p.ip),
            format!("link set {UPLINK} up"),
            format!("route add {POD_GATEWAY} dev {UPLINK} scope link"),
            format!("route add default via {POD_GATEWAY} dev {UPLINK}"),
        ],
    )?;
    if let Some(ip6) = p.ip6 {
        netns::ip_batch(
            &p.netns,
            &[
                format!("addr add {ip6}/128 dev {UPLINK} nodad"),
                format!("route add default via {POD_GATEWAY6} dev {UPLINK}"),
            ],
        )?;
    }
    // `ip netns exec` bind-mounts this over /etc/resolv.conf, as the kubelet would write it.
    let etc = PathBuf::from("/etc/netns").join(&p.netns);
    std::fs::create_dir_all(&etc).map_err(io(format!("creating {}", etc.display())))?;
    let domain = &state.spec.cluster_domain;
    std::fs::write(
        etc.join("resolv.conf"),
        format!(
            "nameserver {}\nsearch {ns}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n",
            state.dns_server,
            ns = p.namespace
        ),
    )
    .map_err(io("writing resolv.conf"))?;
    Ok(())
}

fn build_topology(state: &LabState, progress: &dyn Fn(&str)) -> Result<(), Error> {
    progress(&format!(
        "creating {} network namespaces ({} nodes, {} pods, router, world)",
        state.all_netns().len(),
        state.nodes.len(),
        state.pods.len()
    ));
    for ns in state.all_netns() {
        create_netns(state, &ns)?;
    }
    let prefix_len = state.spec.underlay.prefix;

    progress("wiring the underlay (router netns, bridge br0) and the outside world");
    let mut router = vec![
        "link set lo up".to_string(),
        "link add br0 type bridge".into(),
        format!("addr add {}/{prefix_len} dev br0", state.router_ip),
        "link set br0 up".into(),
        format!(
            "link add wan0 type veth peer name {UPLINK} netns {}",
            state.world.netns
        ),
        format!("addr add {}/24 dev wan0", state.world.gateway),
        "link set wan0 up".into(),
    ];
    // IPv6 addresses before the routes through them (a gateway must be on-link).
    if let (Some(r6), Some(g6)) = (state.router_ip6, state.world.gateway6) {
        router.push(format!("addr add {r6}/64 dev br0 nodad"));
        router.push(format!("addr add {g6}/64 dev wan0 nodad"));
    }
    for (i, n) in state.nodes.iter().enumerate() {
        router.push(format!(
            "link add ul{i} type veth peer name {UPLINK} netns {}",
            n.netns
        ));
        router.push(format!("link set ul{i} master br0"));
        router.push(format!("link set ul{i} up"));
        router.push(format!("route add {} via {}", n.pod_cidr, n.underlay_ip));
        if let (Some(c6), Some(u6)) = (&n.pod_cidr6, n.underlay_ip6) {
            router.push(format!("route add {c6} via {u6}"));
        }
    }

    netns::ip_batch(&state.router_netns, &router)?;
    netns::sysctls(
        &state.router_netns,
        vec![("net/ipv4/ip_forward".into(), "1".into())],
    )?;
    netns::ip_batch(
        &state.world.netns,
        &[
            "link set lo up".into(),
            format!("addr add {}/24 dev {UPLINK}", state.world.ip),
            format!("link set {UPLINK} up"),
            format!("route add default via {}", state.world.gateway),
        ],
    )?;
    if let (Some(w6), Some(g6)) = (state.world.ip6, state.world.gateway6) {
        netns::ip_batch(
            &state.world.netns,
            &[
                format!("addr add {w6}/64 dev {UPLINK} nodad"),
                format!("route add default via {g6}"),
            ],
        )?;
    }

    for n in &state.nodes {
        progress(&format!(
            "node {}: {} on the underlay, pods {}",
            n.name, n.underlay_ip, n.pod_cidr
        ));
        let mut cmds = vec![
            "link set lo up".to_string(),
            format!("addr add {}/{prefix_len} dev {UPLINK}", n.underlay_ip),
            format!("link set {UPLINK} up"),
            format!("route add default via {}", state.router_ip),
        ];
        if let (Some(u6), Some(r6)) = (n.underlay_ip6, state.router_ip6) {
            cmds.push(format!("addr add {u6}/64 dev {UPLINK} nodad"));
            cmds.push(format!("route add default via {r6}"));
        }
        for other in state.nodes.iter().filter(|o| o.name != n.name) {
            cmds.push(format!(
                "route add {} via {}",
                other.pod_cidr, other.underlay_ip
            ));
            if let (Some(c6), Some(u6)) = (&other.pod_cidr6, other.underlay_ip6) {
                cmds.push(format!("route add {c6} via {u6}"));
            }
        }

        let sysctls = vec![
            ("net/ipv4/ip_forward".to_string(), "1".to_string()),
            ("net/ipv4/conf/all/rp_filter".into(), "0".into()),
            ("net/ipv4/conf/default/rp_filter".into(), "0".into()),
        ];
        netns::ip_batch(&n.netns, &cmds)?;
        netns::sysctls(&n.netns, sysctls)?;
    }

    if state.spec.service_mode == ServiceMode::ClusterIp {
        progress("programming ClusterIP DNAT (nftables) in every node");
        let rules = cluster_ip_rules(state);
        for n in &state.nodes {
            netns::nft(&n.netns, &rules)?;
        }
    }

    progress(&format!(
        "configuring {} pods (/32 address, default via {POD_GATEWAY})",
        state.pods.len()
    ));
    for p in &state.pods {
        wire_pod(state, p)?;
    }
    Ok(())
}

const DNS_HOSTS: &str = "cluster.hosts";

/// Writes the cluster DNS records (hosts-file format) for dnsmasq.
fn write_dns_hosts(state: &LabState) -> Result<PathBuf, Error> {
    let mut text = String::new();
    for (name, ip) in state.dns_records() {
        text.push_str(&format!("{ip} {name}\n"));
    }
    for (name, ip) in state.dns_records6() {
        text.push_str(&format!("{ip} {name}\n"));
    }
    let path = state.dir.join(DNS_HOSTS);
    std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
    Ok(path)
}

/// Rewrites the DNS records, makes dnsmasq re-read them and waits until it
/// answers `name` (asked over the DNS pod's loopback, invisible to flowd).
fn reload_dns(state: &LabState, name: &str) -> Result<(), Error> {
    write_dns_hosts(state)?;
    let pid_file = state.dir.join("dnsmasq.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .map_err(io(format!("reading {}", pid_file.display())))?
        .trim()
        .parse()
        .map_err(|e| Error::Lab(format!("{}: {e}", pid_file.display())))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|e| Error::Lab(format!("signalling dnsmasq ({pid}): {e}")))?;
    let dns_pod = state
        .pods
        .iter()
        .find(|p| p.dns)
        .ok_or_else(|| Error::Lab("the lab has no DNS pod".into()))?;
    let name = name.to_string();
    run_async_in(&dns_pod.netns, move || async move {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let a = dns::query(
                SocketAddr::from((Ipv4Addr::LOCALHOST, 53)),
                &name,
                RecordType::A,
                Duration::from_millis(300),
            )
            .await;
            if matches!(&a, Ok(a) if !a.addrs.is_empty()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("dnsmasq to answer {name}"),
                    secs: READY_TIMEOUT.as_secs(),
                });
            }
            // Polling for the reload, with a deadline.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Adds a pod (as a new one-replica deployment) to a running lab: namespace,
/// veth and routes, manifest files, DNS name, ClusterIP rule. The caller starts
/// its server ([`Lab::add_pod`] does).
pub fn add_pod(state: &mut LabState, d: DeploymentSpec) -> Result<PodState, Error> {
    let pod = add_pod_unlisted(state, d)?;
    list_pod(state, &pod)?;
    Ok(pod)
}

/// A new pod wired (namespace, veth, route) but not yet in the manifests, as
/// a pod whose object the cluster's API has not delivered yet: its veth
/// exists and carries traffic. [`list_pod`] completes it.
pub fn add_pod_unlisted(state: &mut LabState, d: DeploymentSpec) -> Result<PodState, Error> {
    let mut spec = state.spec.clone();
    spec.deployments.push(d.clone());
    spec.check().map_err(|reason| Error::Spec {
        origin: format!("new pod {}/{}", d.namespace, d.name),
        reason,
    })?;
    // Planning the extended spec keeps every existing name and address.
    let planned = LabState::plan(&spec, &state.prefix, &state.dir);
    let pod = planned
        .pods
        .last()
        .cloned()
        .ok_or_else(|| Error::Lab("planning the new pod failed".into()))?;
    state.spec = spec;
    state.pods.push(pod.clone());
    // Saved first: a failure below leaves nothing `down` does not know about.
    state.save()?;
    create_netns(state, &pod.netns)?;
    wire_pod(state, &pod)?;
    if state.spec.service_mode == ServiceMode::ClusterIp {
        let rules = format!(
            "table ip flowd-lab\ndelete table ip flowd-lab\n{}",
            cluster_ip_rules(state)
        );
        for n in &state.nodes {
            netns::nft(&n.netns, &rules)?;
        }
    }
    Ok(pod)
}

/// Writes the pod's manifest (and its DNS name when it serves).
pub fn list_pod(state: &LabState, pod: &PodState) -> Result<(), Error> {
    manifests::write_pod(state, pod)?;
    if pod.role.serves() {
        reload_dns(state, &state.service_fqdn(&pod.deployment, &pod.namespace))?;
    }
    Ok(())
}

/// kube-proxy's job: each ClusterIP:port DNATed to its pod, for pods (prerouting) and the node (output).
fn cluster_ip_rules(state: &LabState) -> String {
    let mut rules = String::new();
    for p in &state.pods {
        let Some(vip) = p.service_ip else { continue };
        let ports: Vec<(&str, u16)> = if p.dns {
            vec![("udp", 53), ("tcp", 53)]
        } else if p.role.serves_grpc() {
            vec![("tcp", state.spec.app_port), ("tcp", state.spec.grpc_port)]
        } else {
            vec![("tcp", state.spec.app_port)]
        };
        for (proto, port) in ports {
            rules.push_str(&format!(
                "  ip daddr {vip} {proto} dport {port} dnat to {}:{port}\n",
                p.ip
            ));
        }
    }
    format!(
        "table ip flowd-lab {{\n chain prerouting {{\n  type nat hook prerouting priority -100; policy accept;\n{rules} }}\n chain output {{\n  type nat hook output priority -100; policy accept;\n{rules} }}\n}}\n"
    )
}

fn dnsmasq_command(state: &LabState) -> Result<Command, Error> {
    let dns_pod = state
        .pods
        .iter()
        .find(|p| p.dns)
        .ok_or_else(|| Error::Lab("the spec has no DNS pod".into()))?;
    let mut args = vec![
        "--keep-in-foreground".to_string(),
        "--conf-file=/dev/null".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--no-poll".into(),
        "--user=root".into(),
        "--bind-interfaces".into(),
        format!("--listen-address={}", dns_pod.ip),
        "--listen-address=127.0.0.1".into(),
        "--port=53".into(),
        format!("--pid-file={}", state.dir.join("dnsmasq.pid").display()),
        "--log-queries".into(),
        format!("--log-facility={}", state.dir.join("dnsmasq.log").display()),
        // Unknown names in these domains are NXDOMAIN, not forwarded.
        format!("--local=/{}/", state.spec.cluster_domain),
        // The TTL of kubeadm's CoreDNS (`ttl 30`); dnsmasq's default is 0.
        format!("--local-ttl={DNS_TTL_SECS}"),
    ];
    for n in &state.spec.world.names {
        if let Some((_, parent)) = n.split_once('.') {
            args.push(format!("--local=/{parent}/"));
        }
    }
    // Records live in a hosts file, re-read on SIGHUP when pods come and go.
    args.push(format!(
        "--addn-hosts={}",
        write_dns_hosts(state)?.display()
    ));
    Ok(netns::command(&dns_pod.netns, "dnsmasq", &args))
}

/// TTL of the cluster DNS's answers, seconds.
pub const DNS_TTL_SECS: u32 = 30;

/// Polls `check` inside `netns` until it succeeds or `READY_TIMEOUT` passes.
fn wait_ready(netns_name: &str, what: &str, check: fn() -> bool) -> Result<(), Error> {
    let what_s = what.to_string();
    netns::run_in(netns_name, move || {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if check() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20)); // polling a condition, with a deadline
        }
        Err(Error::Timeout {
            what: what_s,
            secs: READY_TIMEOUT.as_secs(),
        })
    })
}

fn admin_port_open() -> bool {
    std::net::TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn dns_answers() -> bool {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    rt.block_on(dns::query(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 53)),
        "ready.invalid",
        RecordType::A,
        Duration::from_millis(300),
    ))
    .is_ok()
}

/// Starts `cmd` detached (own process group, logs to `log`), records it in `state`.
fn spawn_detached(
    state: &mut LabState,
    mut cmd: Command,
    what: &str,
    log: &Path,
) -> Result<(), Error> {
    let out = std::fs::File::create(log).map_err(io(format!("creating {}", log.display())))?;
    let err = out.try_clone().map_err(io("dup log fd"))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(io(format!("starting {what}")))?;
    let pid = child.id() as i32;
    state.processes.push(ProcState {
        pid,
        start_time: netns::start_time(pid).unwrap_or(0),
        what: what.to_string(),
    });
    state.save()
}

fn sanitize(key: &str) -> String {
    key.replace('/', "_")
}

impl Lab {
    /// Brings `spec` up with in-process servers and a temporary directory.
    pub fn up(spec: Spec) -> Result<Lab, Error> {
        Lab::up_with(spec, Options::default())
    }

    pub fn up_with(spec: Spec, opts: Options) -> Result<Lab, Error> {
        preflight(&spec)?;
        let prefix = new_prefix();
        let (dir, owned_dir) = match &opts.dir {
            Some(d) => (d.clone(), false),
            None => (std::env::temp_dir().join(&prefix), true),
        };
        std::fs::create_dir_all(dir.join("logs"))
            .map_err(io(format!("creating {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(io(format!("resolving {}", dir.display())))?;
        if !owned_dir && LabState::load(&dir).is_ok() {
            return Err(Error::Lab(format!(
                "{} already holds a lab; run `lab down --dir {}` first",
                dir.display(),
                dir.display()
            )));
        }
        let state = LabState::plan(&spec, &prefix, &dir);
        // Never adopt (and later delete) a namespace this lab did not create.
        if let Some(taken) = state.all_netns().iter().find(|n| netns::exists(n)) {
            if owned_dir {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(Error::Lab(format!(
                "network namespace {taken} already exists (a lab left over from an earlier \
                 process with the same pid? `ip netns del` it or `lab down` its directory)"
            )));
        }
        // Saved before anything exists, so a crash at any point can be cleaned up from it.
        state.save()?;
        let mut lab = Lab {
            state,
            owned_dir,
            servers: BTreeMap::new(),
            dnsmasq: None,
            down: false,
        };
        // On error, `lab` drops here and tears down whatever was created.
        lab.start(&opts)?;
        Ok(lab)
    }

    fn start(&mut self, opts: &Options) -> Result<(), Error> {
        let progress = opts.progress.as_ref();
        let started = Instant::now();
        build_topology(&self.state, progress)?;
        let mdir = manifests::write_all(&self.state)?;
        progress(&format!("wrote manifests to {}", mdir.display()));

        let dns_pod = self
            .state
            .pods
            .iter()
            .find(|p| p.dns)
            .cloned()
            .ok_or_else(|| Error::Lab("the spec has no DNS pod".into()))?;
        progress(&format!(
            "starting dnsmasq in {} ({})",
            dns_pod.key(),
            dns_pod.ip
        ));
        let cmd = dnsmasq_command(&self.state)?;
        match &opts.servers {
            Servers::InProcess => {
                let mut cmd = cmd;
                let log = self.state.dir.join("logs").join("dnsmasq.out");
                let out = std::fs::File::create(&log).map_err(io("creating dnsmasq log"))?;
                let err = out.try_clone().map_err(io("dup log fd"))?;
                let child = cmd
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .map_err(io("starting dnsmasq (is dnsmasq-base installed? scripts/setup.sh installs it)"))?;
                self.dnsmasq = Some(child);
            }
            Servers::Processes { .. } => {
                let log = self.state.dir.join("logs").join("dnsmasq.out");
                spawn_detached(&mut self.state, cmd, "dnsmasq", &log)?;
            }
        }
        wait_ready(&dns_pod.netns, "dnsmasq to answer", dns_answers).map_err(|e| {
            let log = std::fs::read_to_string(self.state.dir.join("logs").join("dnsmasq.out"))
                .unwrap_or_default();
            Error::Lab(format!("{e}; dnsmasq said: {}", log.trim()))
        })?;

        let servers = server_list(&self.state);
        progress(&format!("starting {} servers", servers.len()));
        for (key, ns, cfg) in servers {
            match &opts.servers {
                Servers::InProcess => {
                    let handle = spawn_server_thread(&key, &ns, cfg)?;
                    self.servers.insert(key, handle);
                }
                Servers::Processes { program, args } => {
                    let config =
                        serde_json::to_string(&cfg).map_err(|e| Error::Lab(e.to_string()))?;
                    let mut a = args.clone();
                    a.push("--config".into());
                    a.push(config);
                    let cmd = netns::command(&ns, &program.to_string_lossy(), &a);
                    let log = self
                        .state
                        .dir
                        .join("logs")
                        .join(format!("{}.log", sanitize(&key)));
                    spawn_detached(&mut self.state, cmd, &key, &log)?;
                }
            }
        }
        for (key, ns, _) in server_list(&self.state) {
            wait_ready(&ns, &format!("{key} to listen"), admin_port_open).map_err(|e| {
                let log = self
                    .state
                    .dir
                    .join("logs")
                    .join(format!("{}.log", sanitize(&key)));
                match std::fs::read_to_string(&log) {
                    Ok(text) if !text.trim().is_empty() => {
                        Error::Lab(format!("{e}; {} says: {}", log.display(), text.trim()))
                    }
                    _ => e,
                }
            })?;
        }
        self.state.save()?;
        progress(&format!(
            "lab {} is up in {:.1}s",
            self.state.prefix,
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Leaves the lab running when this value is dropped (CLI `up`: `lab down` cleans it later).
    /// Only meaningful with [`Servers::Processes`].
    pub fn detach(mut self) -> LabState {
        self.down = true;
        self.state.clone()
    }

    pub fn state(&self) -> &LabState {
        &self.state
    }
    pub fn dir(&self) -> &Path {
        &self.state.dir
    }
    pub fn manifest_dir(&self) -> PathBuf {
        self.state.dir.join(manifests::MANIFEST_DIR)
    }
    pub fn prefix(&self) -> &str {
        &self.state.prefix
    }
    pub fn nodes(&self) -> &[crate::state::NodeState] {
        &self.state.nodes
    }
    pub fn pods(&self) -> &[PodState] {
        &self.state.pods
    }
    /// A pod by `namespace/name` or `namespace/deployment`.
    pub fn pod(&self, key: &str) -> Option<&PodState> {
        self.state.pod(key)
    }
    pub fn node_netns(&self, node: &str) -> Option<&str> {
        self.state.node(node).map(|n| n.netns.as_str())
    }
    pub fn pod_netns(&self, key: &str) -> Option<&str> {
        self.pod(key).map(|p| p.netns.as_str())
    }
    pub fn pod_ip(&self, key: &str) -> Option<Ipv4Addr> {
        self.pod(key).map(|p| p.ip)
    }
    /// The pod's veth end in its node's namespace.
    pub fn host_veth(&self, key: &str) -> Option<&str> {
        self.pod(key).map(|p| p.host_veth.as_str())
    }
    /// All pod veths of `node` (in its namespace).
    pub fn host_veths(&self, node: &str) -> Vec<&str> {
        self.state
            .pods
            .iter()
            .filter(|p| p.node == node)
            .map(|p| p.host_veth.as_str())
            .collect()
    }
    pub fn world_ip(&self) -> Ipv4Addr {
        self.state.world.ip
    }
    /// The DNS pod's IP.
    pub fn dns_ip(&self) -> Ipv4Addr {
        self.state.dns_ip
    }
    /// Where pods send DNS queries (the kube-dns ClusterIP, or the DNS pod when headless).
    pub fn dns_server(&self) -> Ipv4Addr {
        self.state.dns_server
    }

    /// `program` to be run in `node`'s namespace (`ip netns exec …`).
    pub fn command_in_node(&self, node: &str, program: &str) -> Result<Command, Error> {
        let ns = self
            .node_netns(node)
            .ok_or_else(|| Error::Lab(format!("no node {node:?}")))?;
        Ok(netns::command(ns, program, &[]))
    }

    /// The router namespace: it reaches every node (underlay) and pod address
    /// without crossing a pod veth, so a relay or client run here adds no pod flows.
    pub fn router_netns(&self) -> &str {
        &self.state.router_netns
    }

    /// `program` to be run in the router namespace (`ip netns exec …`).
    pub fn command_in_router(&self, program: &str) -> Command {
        netns::command(&self.state.router_netns, program, &[])
    }

    /// `program` to be run in a pod's namespace (`ip netns exec …`, with its resolv.conf).
    pub fn command_in_pod(&self, key: &str, program: &str) -> Result<Command, Error> {
        let ns = self
            .pod_netns(key)
            .ok_or_else(|| Error::Lab(format!("no pod {key:?}")))?;
        Ok(netns::command(ns, program, &[]))
    }

    /// Runs an async block on a thread inside the pod's namespace.
    pub fn run_in_pod<T, F, Fut>(&self, key: &str, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let ns = self
            .pod_netns(key)
            .ok_or_else(|| Error::Lab(format!("no pod {key:?}")))?
            .to_string();
        run_async_in(&ns, f)
    }

    /// Resolves `name` (type A) through the cluster DNS from a pod.
    pub fn resolve(&self, from: &str, name: &str) -> Result<dns::Answer, Error> {
        self.resolve_type(from, name, RecordType::A)
    }

    /// Resolves `name` with query type `qtype` (A, AAAA, …) from a pod.
    pub fn resolve_type(
        &self,
        from: &str,
        name: &str,
        qtype: RecordType,
    ) -> Result<dns::Answer, Error> {
        let server = SocketAddr::from((self.state.dns_server, 53));
        let name = name.to_string();
        self.run_in_pod(from, move || async move {
            dns::query(server, &name, qtype, Duration::from_secs(3)).await
        })
    }

    /// One HTTP request from a pod to `ip:port` over a fresh connection; returns the status.
    pub fn http(
        &self,
        from: &str,
        ip: impl Into<std::net::IpAddr>,
        port: u16,
        method: &str,
        path: &str,
    ) -> Result<u16, Error> {
        let (method, path) = (method.to_string(), path.to_string());
        let ip: std::net::IpAddr = ip.into();
        self.run_in_pod(from, move || async move {
            app::request_once(
                SocketAddr::from((ip, port)),
                &ip.to_string(),
                &method,
                &path,
                String::new(),
            )
            .await
        })
    }

    /// Runs the traffic generator in the spec's source pod.
    pub fn run_traffic(&self) -> Result<TrafficReport, Error> {
        run_traffic(&self.state)
    }

    /// Runs the mix `rounds` times, `interval` apart; the report sums them.
    pub fn run_traffic_rounds(
        &self,
        rounds: u32,
        interval: Duration,
    ) -> Result<TrafficReport, Error> {
        run_traffic_rounds(&self.state, rounds, interval)
    }

    /// What each server counted, by `namespace/pod` (and `world`).
    pub fn server_stats(&self) -> Result<BTreeMap<String, Stats>, Error> {
        server_stats(&self.state)
    }

    /// Adds a pod at run time (a new one-replica deployment) and starts its server.
    pub fn add_pod(&mut self, d: DeploymentSpec) -> Result<PodState, Error> {
        let pod = self.add_pod_unlisted(d)?;
        self.list_pod(&pod)?;
        Ok(pod)
    }

    /// [`Lab::add_pod`] without its manifest: the pod runs, its object is not
    /// delivered yet. [`Lab::list_pod`] delivers it.
    pub fn add_pod_unlisted(&mut self, d: DeploymentSpec) -> Result<PodState, Error> {
        let pod = add_pod_unlisted(&mut self.state, d)?;
        if pod.role.serves() {
            let cfg = app_config(&self.state, &pod);
            let handle = spawn_server_thread(&pod.key(), &pod.netns, cfg)?;
            self.servers.insert(pod.key(), handle);
        }
        Ok(pod)
    }

    /// Delivers a pod added with [`Lab::add_pod_unlisted`] (its manifest).
    pub fn list_pod(&self, pod: &PodState) -> Result<(), Error> {
        list_pod(&self.state, pod)
    }

    /// Deletes a pod: stops its server, removes its namespace, veth, route and manifest file.
    pub fn delete_pod(&mut self, key: &str) -> Result<(), Error> {
        let pod = self
            .pod(key)
            .cloned()
            .ok_or_else(|| Error::Lab(format!("no pod {key:?}")))?;
        if let Some(s) = self.servers.remove(&pod.key()) {
            let _ = s.stop.send(true);
            let _ = s.thread.join();
        }
        delete_pod(&mut self.state, key).map(|_| ())
    }

    /// Tears the lab down now, reporting errors (dropping does the same, silently).
    pub fn down(mut self) -> Result<(), Error> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), Error> {
        if self.down {
            return Ok(());
        }
        self.down = true;
        for (_, s) in std::mem::take(&mut self.servers) {
            let _ = s.stop.send(true);
            let _ = s.thread.join();
        }
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let res = teardown_state(&self.state);
        if self.owned_dir {
            let _ = std::fs::remove_dir_all(&self.state.dir);
        }
        res
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!("lab teardown: {e}");
        }
    }
}

fn run_async_in<T, F, Fut>(ns: &str, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    netns::run_in(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("building a tokio runtime"))?;
        rt.block_on(f())
    })
}

fn spawn_server_thread(key: &str, ns: &str, cfg: AppConfig) -> Result<ServerThread, Error> {
    let (stop, mut stopped) = watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let thread = netns::spawn_in(ns, format!("lab-{key}"), move || {
        let bound = match app::bind(cfg) {
            Ok(b) => {
                let _ = ready_tx.send(Ok(()));
                b
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return Err(e);
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("building a tokio runtime"))?;
        rt.block_on(bound.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        }))
    })?;
    match ready_rx.recv_timeout(READY_TIMEOUT) {
        Ok(Ok(())) => Ok(ServerThread { stop, thread }),
        Ok(Err(e)) => Err(Error::Lab(format!("server {key}: {e}"))),
        Err(_) => Err(Error::Timeout {
            what: format!("server {key} to bind"),
            secs: READY_TIMEOUT.as_secs(),
        }),
    }
}

/// Runs the traffic generator of `state`'s spec in its source pod.
pub fn run_traffic(state: &LabState) -> Result<TrafficReport, Error> {
    run_traffic_rounds(state, 1, Duration::ZERO)
}

/// Runs the mix `rounds` times (at least once), `interval` apart, in the source pod.
pub fn run_traffic_rounds(
    state: &LabState,
    rounds: u32,
    interval: Duration,
) -> Result<TrafficReport, Error> {
    let src = state
        .pod(&state.spec.traffic.source)
        .ok_or_else(|| Error::Traffic(format!("no pod {}", state.spec.traffic.source)))?;
    let st = state.clone();
    run_async_in(&src.netns, move || async move {
        traffic::generate_rounds(&st, rounds.max(1), interval).await
    })
}

/// Reads every server's counters over its loopback admin port.
pub fn server_stats(state: &LabState) -> Result<BTreeMap<String, Stats>, Error> {
    let mut out = BTreeMap::new();
    for (key, ns, _) in server_list(state) {
        let stats = run_async_in(&ns, app::fetch_stats)?;
        out.insert(key, stats);
    }
    Ok(out)
}

/// Deletes a pod (not the DNS one): its manifest file first (as the API server
/// would announce it), then its processes, namespace, veth and route. Its
/// Service and DNS name stay, now without a backend.
pub fn delete_pod(state: &mut LabState, key: &str) -> Result<PodState, Error> {
    let pod = state
        .pod(key)
        .cloned()
        .ok_or_else(|| Error::Lab(format!("no pod {key:?}")))?;
    if pod.dns {
        return Err(Error::Lab("the DNS pod cannot be deleted".into()));
    }
    let _ = std::fs::remove_file(manifests::pod_file(&state.dir, &pod));
    netns::destroy(&pod.netns)?;
    let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&pod.netns));
    // Deleting the namespace deleted the veth pair, and the route with it.
    state.pods.retain(|p| p.key() != pod.key());
    state.processes.retain(|p| p.what != pod.key());
    state.save()?;
    Ok(pod)
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// What `up` needs from the machine, checked before anything is created.
pub fn preflight(spec: &Spec) -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Lab(
            "the lab must run as root (it creates network namespaces)".into(),
        ));
    }
    let mut tools = vec![("ip", "iproute2"), ("dnsmasq", "dnsmasq-base")];
    if spec.service_mode == ServiceMode::ClusterIp {
        tools.push(("nft", "nftables"));
    }
    for (tool, package) in tools {
        if !in_path(tool) {
            return Err(Error::Lab(format!(
                "`{tool}` not found in PATH: install the {package} package (scripts/setup.sh does)"
            )));
        }
    }
    if !Path::new("/proc/self/ns/net").exists() {
        return Err(Error::Lab("this kernel has no network namespaces".into()));
    }
    Ok(())
}

/// Starts a pod's server as a detached `program` (lab-app) process and waits
/// until it listens (CLI `add-pod`).
pub fn start_pod_process(
    state: &mut LabState,
    pod: &PodState,
    program: &Path,
) -> Result<(), Error> {
    if !pod.role.serves() {
        return Ok(());
    }
    let cfg = app_config(state, pod);
    let config = serde_json::to_string(&cfg).map_err(|e| Error::Lab(e.to_string()))?;
    let cmd = netns::command(
        &pod.netns,
        &program.to_string_lossy(),
        &["--config".into(), config],
    );
    let log = state
        .dir
        .join("logs")
        .join(format!("{}.log", sanitize(&pod.key())));
    spawn_detached(state, cmd, &pod.key(), &log)?;
    wait_ready(
        &pod.netns,
        &format!("{} to listen", pod.key()),
        admin_port_open,
    )
}

/// Kills what the lab started and deletes its namespaces; safe to repeat.
pub fn teardown_state(state: &LabState) -> Result<(), Error> {
    let own: Vec<i32> = state
        .processes
        .iter()
        .filter(|p| netns::alive(p.pid) && netns::start_time(p.pid) == Some(p.start_time))
        .map(|p| p.pid)
        .collect();
    netns::terminate(&own, Duration::from_secs(3));
    let mut first_err = None;
    for ns in state.all_netns() {
        if let Err(e) = netns::destroy(&ns) {
            first_err.get_or_insert(e);
        }
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&ns));
    }
    match first_err {
        // The state file stays, so `down` can be retried.
        Some(e) => Err(e),
        None => {
            let _ = std::fs::remove_file(state.dir.join(crate::state::STATE_FILE));
            Ok(())
        }
    }
}
