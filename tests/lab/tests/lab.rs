//! The lab against the real kernel (needs root: network namespaces).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use flowd_lab::{Lab, LabState, Spec, TrafficReport, netns};

/// Named namespaces and /etc/netns entries whose name starts with `prefix`.
fn leftovers(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    if let Ok(d) = std::fs::read_dir("/etc/netns") {
        v.extend(
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .map(|n| format!("/etc/netns/{n}")),
        );
    }
    v
}

#[test]
fn default_spec_plans_unique_names_and_addresses() -> Result<()> {
    let spec = Spec::default_spec();
    let state = LabState::plan(&spec, "t", std::path::Path::new("/tmp/x"));
    assert_eq!(state.nodes.len(), 2);
    assert_eq!(state.pods.len(), 6); // coredns + 5 deployments
    let mut names = std::collections::HashSet::new();
    for ns in state.all_netns() {
        assert!(names.insert(ns.clone()), "duplicate netns {ns}");
    }
    let mut ips = std::collections::HashSet::new();
    for p in &state.pods {
        assert!(ips.insert(p.ip), "duplicate ip {}", p.ip);
        assert!(p.host_veth.len() <= 15, "{} exceeds IFNAMSIZ", p.host_veth);
        let cidr: flowd_lab::spec::Ipv4Net = state
            .node(&p.node)
            .context("node")?
            .pod_cidr
            .parse()
            .map_err(anyhow::Error::msg)?;
        assert!(cidr.contains(p.ip), "{} outside {cidr}", p.ip);
        // <deployment>-<9 char template hash>-<5 char suffix>, the ReplicaSet naming.
        let rest = p
            .name
            .strip_prefix(&format!("{}-", p.deployment))
            .context("prefix")?;
        let (hash, suffix) = rest.split_once('-').context("two parts")?;
        assert_eq!((hash.len(), suffix.len()), (9, 5), "{}", p.name);
        assert_eq!(p.replica_set, format!("{}-{hash}", p.deployment));
        assert_eq!(
            p.labels.get("pod-template-hash").map(String::as_str),
            Some(hash)
        );
    }
    let dns = state.pods.iter().find(|p| p.dns).context("dns pod")?;
    assert_eq!(dns.namespace, "kube-system");
    assert_eq!(state.dns_ip, dns.ip);
    // Same spec, same prefix: same plan.
    let again = LabState::plan(&spec, "t", std::path::Path::new("/tmp/x"));
    assert_eq!(
        serde_json::to_string(&state)?,
        serde_json::to_string(&again)?
    );
    Ok(())
}

#[test]
fn bad_specs_are_rejected_with_a_reason() {
    let unknown_node = flowd_lab::spec::DEFAULT_SPEC
        .replace("node: node-b, role: loadgen", "node: node-z, role: loadgen");
    let err = Spec::parse(&unknown_node, "t.yaml")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("unknown node \"node-z\""), "{err}");
    let err = Spec::parse("nodes: [", "t.yaml")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.starts_with("lab spec t.yaml:"), "{err}");
    let one_node =
        flowd_lab::spec::DEFAULT_SPEC.replace("  - name: node-b\n    podCidr: 10.244.2.0/24\n", "");
    let err = Spec::parse(&one_node, "t.yaml")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("at least 2 nodes"), "{err}");
}

#[test]
fn pods_talk_same_node_cross_node_and_to_the_world() -> Result<()> {
    let lab = Lab::up(Spec::default_spec())?;
    let frontend = lab.pod("ecommerce/frontend").context("frontend")?.clone();
    let order = lab.pod("ecommerce/order-service").context("order")?.clone();
    let inventory = lab.pod("ecommerce/inventory").context("inventory")?.clone();
    assert_eq!(frontend.node, order.node);
    assert_ne!(frontend.node, inventory.node);

    // Same node: frontend -> order-service, both answers of the rule.
    assert_eq!(
        lab.http("ecommerce/frontend", order.ip, 8080, "GET", "/carts/1")?,
        200
    );
    assert_eq!(
        lab.http("ecommerce/frontend", order.ip, 8080, "GET", "/carts/404")?,
        404
    );
    // Cross node: frontend -> inventory, and loadgen -> frontend (through the whole chain).
    assert_eq!(
        lab.http("ecommerce/frontend", inventory.ip, 8080, "GET", "/items")?,
        200
    );
    assert_eq!(
        lab.http(
            "ecommerce/loadgen",
            frontend.ip,
            8080,
            "POST",
            "/checkout/12"
        )?,
        201
    );
    assert_eq!(
        lab.http(
            "ecommerce/loadgen",
            frontend.ip,
            8080,
            "POST",
            "/checkout/25"
        )?,
        402
    );
    assert_eq!(
        lab.http(
            "ecommerce/loadgen",
            frontend.ip,
            8080,
            "POST",
            "/checkout/14"
        )?,
        503
    );
    // The outside world, through the router.
    assert_eq!(
        lab.http("ecommerce/inventory", lab.world_ip(), 80, "GET", "/")?,
        200
    );

    // DNS: names of the cluster and of the world, and names that do not exist.
    let a = lab.resolve("ecommerce/loadgen", "frontend.ecommerce.svc.cluster.local")?;
    assert_eq!(
        (a.rcode.as_str(), a.addrs.as_slice()),
        ("NOERROR", &[frontend.ip][..])
    );
    let a = lab.resolve(
        "ecommerce/loadgen",
        "kube-dns.kube-system.svc.cluster.local",
    )?;
    assert_eq!(
        (a.rcode.as_str(), a.addrs.as_slice()),
        ("NOERROR", &[lab.dns_ip()][..])
    );
    let a = lab.resolve("ecommerce/frontend", "psp.example.net")?;
    assert_eq!(
        (a.rcode.as_str(), a.addrs.as_slice()),
        ("NOERROR", &[lab.world_ip()][..])
    );
    for missing in ["nosuch.ecommerce.svc.cluster.local", "other.example.net"] {
        let a = lab.resolve("ecommerce/loadgen", missing)?;
        assert_eq!(
            (a.rcode.as_str(), a.addrs.len()),
            ("NXDOMAIN", 0),
            "{missing}"
        );
    }

    // The node sees each pod behind its own host-side veth.
    let out = lab
        .command_in_node(&frontend.node, "ip")?
        .args(["-o", "link", "show", &frontend.host_veth])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let routes = lab
        .command_in_node(&frontend.node, "ip")?
        .args(["route", "get", &frontend.ip.to_string()])
        .output()?;
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains(&format!("dev {}", frontend.host_veth)),
        "{routes}"
    );
    let veths = lab.host_veths(&frontend.node);
    assert!(
        veths.contains(&frontend.host_veth.as_str()) && veths.contains(&order.host_veth.as_str())
    );
    Ok(())
}

type Key = (Ipv4Addr, Ipv4Addr, String, String, u16);
/// (client ip, server ip, gRPC service, method, status code).
type GrpcKey = (Ipv4Addr, Ipv4Addr, String, String, Option<u32>);

/// Requests in the default mix.
fn mix_size() -> u32 {
    Spec::default_spec()
        .traffic
        .requests
        .iter()
        .map(|r| r.count)
        .sum()
}

/// Expected exchanges (`expected.http`) by (source ip, destination or backend ip, method, path, status).
fn expected_by_ips(r: &TrafficReport, backend: bool) -> BTreeMap<Key, u32> {
    let mut m = BTreeMap::new();
    for h in &r.expected.http {
        *m.entry((
            h.source_ip,
            if backend {
                h.backend_ip
            } else {
                h.destination_ip
            },
            h.method.clone(),
            h.path.clone(),
            h.status,
        ))
        .or_default() += h.count;
    }
    m
}

/// Expected gRPC calls (`expected.grpc`) by (client ip, destination or backend ip, service, method, code).
fn expected_grpc_by_ips(r: &TrafficReport, backend: bool) -> BTreeMap<GrpcKey, u32> {
    let mut m = BTreeMap::new();
    for g in &r.expected.grpc {
        *m.entry((
            g.source_ip,
            if backend {
                g.backend_ip
            } else {
                g.destination_ip
            },
            g.service.clone(),
            g.method.clone(),
            g.code,
        ))
        .or_default() += g.count;
    }
    m
}

#[test]
fn traffic_report_matches_what_servers_and_dns_saw() -> Result<()> {
    let lab = Lab::up(Spec::default_spec())?;
    let report = lab.run_traffic()?;
    check_report(&lab, &report)?;
    // Headless services: clients connect to the pods themselves.
    assert!(
        report
            .expected
            .http
            .iter()
            .all(|h| h.destination_ip == h.backend_ip)
    );
    assert!(
        report
            .expected
            .grpc
            .iter()
            .all(|g| g.destination_ip == g.backend_ip)
    );
    Ok(())
}

#[test]
fn dual_stack_pods_reach_each_other_and_the_world_over_ipv6() -> Result<()> {
    let mut spec = Spec::default_spec();
    spec.ipv6 = true;
    let lab = Lab::up(spec)?;
    // IPv4 keeps working exactly as in single stack.
    let report = lab.run_traffic()?;
    check_report(&lab, &report)?;

    let v6 = |key: &str| {
        lab.pod(key)
            .and_then(|p| p.ip6)
            .context(format!("{key} has IPv6"))
    };
    let frontend6 = v6("ecommerce/frontend")?;
    // Cross node (node-b -> node-a), same node (node-a -> node-a), to the world.
    assert_eq!(
        lab.http("ecommerce/loadgen", frontend6, 8080, "GET", "/")?,
        200
    );
    assert_eq!(
        lab.http(
            "ecommerce/frontend",
            v6("ecommerce/order-service")?,
            8080,
            "GET",
            "/carts/404"
        )?,
        404
    );
    let world6 = lab.state().world.ip6.context("world ip6")?;
    assert_eq!(
        lab.http("ecommerce/payment-service", world6, 80, "GET", "/")?,
        200
    );
    // The servers saw the clients' IPv6 addresses.
    let stats = lab.server_stats()?;
    let loadgen6 = v6("ecommerce/loadgen")?;
    let frontend = lab.pod("ecommerce/frontend").context("frontend")?.key();
    assert!(
        stats[&frontend]
            .inbound
            .iter()
            .any(|i| i.source_ip == std::net::IpAddr::V6(loadgen6))
    );

    let a = lab.resolve_type(
        "ecommerce/loadgen",
        "frontend.ecommerce.svc.cluster.local",
        flowd_lab::dns::RecordType::AAAA,
    )?;
    assert_eq!(
        (a.rcode.as_str(), a.addrs6.as_slice()),
        ("NOERROR", &[frontend6][..])
    );
    let manifest = std::fs::read_to_string(flowd_lab::manifests::pod_file(
        lab.dir(),
        lab.pod("ecommerce/frontend").context("frontend")?,
    ))?;
    assert!(manifest.contains(&format!("ip: {frontend6}")), "{manifest}");
    Ok(())
}

#[test]
fn traffic_rounds_add_up() -> Result<()> {
    let lab = Lab::up(Spec::default_spec())?;
    let one = flowd_lab::traffic::expected(lab.state())?;
    let report = lab.run_traffic_rounds(3, std::time::Duration::from_millis(10))?;
    assert_eq!(report.rounds, 3);
    assert_eq!(report.sent.http_total(), 3 * mix_size());
    assert_eq!(report.expected.http_total(), 3 * one.http_total());
    assert_eq!(report.expected.dns_total(), 3 * one.dns_total());
    assert_eq!(report.expected.grpc_total(), 3 * one.grpc_total());
    ensure!(one.grpc_total() > 0, "the mix makes gRPC calls");
    let mut thrice = one.clone();
    thrice.merge(&one);
    thrice.merge(&one);
    assert_eq!(report.expected, thrice);
    let stats = lab.server_stats()?;
    let frontend = lab.pod("ecommerce/frontend").context("frontend")?.key();
    let received: u32 = stats[&frontend].inbound.iter().map(|i| i.count).sum();
    assert_eq!(received, 3 * mix_size());
    let inventory = lab.pod("ecommerce/inventory").context("inventory")?.key();
    let calls: u32 = stats[&inventory].grpc_inbound.iter().map(|g| g.count).sum();
    assert_eq!(calls, report.expected.grpc_total());
    Ok(())
}

#[test]
fn cluster_ip_services_are_dnated_to_their_pods() -> Result<()> {
    let mut spec = Spec::default_spec();
    spec.service_mode = flowd_lab::spec::ServiceMode::ClusterIp;
    let lab = Lab::up(spec)?;
    assert_eq!(lab.dns_server(), Ipv4Addr::new(10, 96, 0, 10));
    let frontend = lab.pod("ecommerce/frontend").context("frontend")?.clone();
    let vip = frontend.service_ip.context("frontend has a ClusterIP")?;
    // Servers count the clients' pod IPs: DNAT only, no SNAT.
    let report = lab.run_traffic()?;
    check_report(&lab, &report)?;

    let a = lab.resolve("ecommerce/loadgen", "frontend.ecommerce.svc.cluster.local")?;
    assert_eq!(a.addrs, vec![vip]);
    assert_eq!(lab.http("ecommerce/loadgen", vip, 8080, "GET", "/")?, 200);
    let manifest =
        std::fs::read_to_string(lab.manifest_dir().join("ecommerce.service.frontend.yaml"))?;
    assert!(
        manifest.contains(&format!("clusterIP: {vip}")),
        "{manifest}"
    );
    let to_frontend = report
        .sent
        .http
        .iter()
        .find(|h| h.destination_service == "frontend")
        .context("row")?;
    assert_eq!(
        (to_frontend.destination_ip, to_frontend.backend_ip),
        (vip, frontend.ip)
    );
    assert!(
        report
            .expected
            .dns
            .iter()
            .all(|d| d.server_ip == lab.dns_server())
    );
    Ok(())
}

/// The report against the default mix, what every server counted and dnsmasq's log
/// (call before any other traffic in `lab`).
fn check_report(lab: &Lab, report: &TrafficReport) -> Result<()> {
    let spec = Spec::default_spec();
    let n: u32 = spec.traffic.requests.iter().map(|r| r.count).sum();
    assert_eq!(report.sent.http_total(), n);

    // The generator got exactly the statuses the rules predict.
    let loadgen = lab.pod("ecommerce/loadgen").context("loadgen")?;
    let expected_own: Vec<_> = report
        .expected
        .http
        .iter()
        .filter(|h| h.source_ip == loadgen.ip)
        .cloned()
        .collect();
    assert_eq!(report.sent.http, expected_own);
    let expected_own_dns: Vec<_> = report
        .expected
        .dns
        .iter()
        .filter(|d| d.source_ip == loadgen.ip)
        .cloned()
        .collect();
    assert_eq!(report.sent.dns, expected_own_dns);
    let statuses: BTreeMap<u16, u32> = report.sent.http.iter().fold(BTreeMap::new(), |mut m, h| {
        *m.entry(h.status).or_default() += h.count;
        m
    });
    // The rules on the default mix (tests/lab/README.md).
    assert_eq!(
        statuses,
        BTreeMap::from([
            (200, 20),
            (201, 4),
            (400, 1),
            (402, 2),
            (404, 4),
            (409, 3),
            (503, 2)
        ])
    );
    let codes: BTreeMap<&str, u32> =
        report
            .expected
            .grpc
            .iter()
            .fold(BTreeMap::new(), |mut m, g| {
                *m.entry(g.status_name().unwrap_or("none")).or_default() += g.count;
                m
            });
    assert_eq!(
        codes,
        BTreeMap::from([
            ("INVALID_ARGUMENT", 1),
            ("OK", 8),
            ("RESOURCE_EXHAUSTED", 3)
        ])
    );
    ensure!(
        report.sent.grpc.is_empty(),
        "the generator itself speaks HTTP"
    );
    assert_eq!(
        report
            .sent
            .dns
            .iter()
            .filter(|d| d.rcode == "NXDOMAIN")
            .count(),
        2
    );

    // Every server received exactly the expected requests, from the expected sources.
    let stats = lab.server_stats()?;
    let mut seen: BTreeMap<Key, u32> = BTreeMap::new();
    let mut seen_grpc: BTreeMap<GrpcKey, u32> = BTreeMap::new();
    for (key, s) in &stats {
        let ip = if key == "world" {
            lab.world_ip()
        } else {
            lab.pod_ip(key).context("pod ip")?
        };
        for i in &s.inbound {
            let std::net::IpAddr::V4(source_ip) = i.source_ip else {
                anyhow::bail!("{key} got a request over IPv6 from {}", i.source_ip);
            };
            *seen
                .entry((source_ip, ip, i.method.clone(), i.path.clone(), i.status))
                .or_default() += i.count;
        }
        for g in &s.grpc_inbound {
            let std::net::IpAddr::V4(source_ip) = g.source_ip else {
                anyhow::bail!("{key} got a gRPC call over IPv6 from {}", g.source_ip);
            };
            *seen_grpc
                .entry((
                    source_ip,
                    ip,
                    g.service.clone(),
                    g.method.clone(),
                    Some(g.code),
                ))
                .or_default() += g.count;
        }
        let made: BTreeMap<GrpcKey, u32> = s
            .grpc_outbound
            .iter()
            .map(|o| {
                (
                    (
                        ip,
                        o.destination_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                        o.service.clone(),
                        o.method.clone(),
                        o.code,
                    ),
                    o.count,
                )
            })
            .collect();
        let want_made: BTreeMap<GrpcKey, u32> = expected_grpc_by_ips(report, false)
            .into_iter()
            .filter(|(k, _)| k.0 == ip)
            .collect();
        assert_eq!(made, want_made, "gRPC calls made by {key}");
        // What each pod sent and resolved matches the expectation for that pod.
        let sent: BTreeMap<Key, u32> = s
            .outbound
            .iter()
            .map(|o| {
                (
                    (
                        ip,
                        o.destination_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                        o.method.clone(),
                        o.path.clone(),
                        o.status,
                    ),
                    o.count,
                )
            })
            .collect();
        let want: BTreeMap<Key, u32> = expected_by_ips(report, false)
            .into_iter()
            .filter(|(k, _)| k.0 == ip)
            .collect();
        assert_eq!(sent, want, "outbound of {key}");
        let dns: BTreeMap<(String, String), u32> = s
            .dns
            .iter()
            .map(|d| ((d.name.clone(), d.rcode.clone()), d.count))
            .collect();
        let want_dns: BTreeMap<(String, String), u32> = report
            .expected
            .dns
            .iter()
            .filter(|d| d.source_ip == ip)
            .map(|d| ((d.name.clone(), d.rcode.clone()), d.count))
            .collect();
        assert_eq!(dns, want_dns, "lookups of {key}");
    }
    assert_eq!(seen, expected_by_ips(report, true));
    assert_eq!(seen_grpc, expected_grpc_by_ips(report, true));
    assert!(
        report
            .expected
            .http
            .iter()
            .any(|h| h.destination_namespace.is_none() && h.destination_ip == lab.world_ip())
    );

    // The DNS server logged exactly the expected queries from pods (readiness probes use loopback).
    let log = std::fs::read_to_string(lab.dir().join("dnsmasq.log"))?;
    let from_pods = log
        .lines()
        .filter(|l| l.contains("query[A]") && !l.ends_with("from 127.0.0.1"))
        .count() as u32;
    assert_eq!(from_pods, report.expected.dns_total());
    Ok(())
}

#[test]
fn deleted_pod_is_gone_and_its_callers_see_errors() -> Result<()> {
    let mut lab = Lab::up(Spec::default_spec())?;
    let pay = lab
        .pod("ecommerce/payment-service")
        .context("payment")?
        .clone();
    let file = flowd_lab::manifests::pod_file(lab.dir(), &pay);
    assert!(file.exists());
    lab.delete_pod("ecommerce/payment-service")?;
    assert!(!file.exists());
    assert!(!netns::exists(&pay.netns));
    assert!(lab.pod("ecommerce/payment-service").is_none());
    let frontend = lab.pod_ip("ecommerce/frontend").context("frontend")?;
    // order-service cannot reach payment-service any more: 503 by the rule.
    assert_eq!(
        lab.http("ecommerce/loadgen", frontend, 8080, "POST", "/checkout/12")?,
        503
    );
    Ok(())
}

#[test]
fn pod_added_at_run_time_is_wired_named_and_served() -> Result<()> {
    let mut lab = Lab::up(Spec::default_spec())?;
    let pod = lab.add_pod(flowd_lab::spec::DeploymentSpec {
        namespace: "ecommerce".into(),
        name: "reviews".into(),
        node: "node-a".into(),
        role: Some(flowd_lab::spec::Role::Inventory),
        labels: [("tier".to_string(), "backend".to_string())].into(),
    })?;
    assert!(pod.name.starts_with("reviews-"));
    assert_eq!(pod.ip, Ipv4Addr::new(10, 244, 1, 5)); // next free address on node-a
    assert_eq!(lab.pod("ecommerce/reviews").map(|p| p.ip), Some(pod.ip));
    let manifest = std::fs::read_to_string(flowd_lab::manifests::pod_file(lab.dir(), &pod))?;
    assert!(
        manifest.contains("nodeName: node-a") && manifest.contains(&format!("podIP: {}", pod.ip)),
        "{manifest}"
    );
    assert!(
        lab.manifest_dir()
            .join("ecommerce.service.reviews.yaml")
            .exists()
    );
    assert!(lab.host_veths("node-a").contains(&pod.host_veth.as_str()));
    // The DNS learnt the name; the pod serves, across nodes.
    let a = lab.resolve("ecommerce/loadgen", "reviews.ecommerce.svc.cluster.local")?;
    assert_eq!(
        (a.rcode.as_str(), a.addrs.as_slice()),
        ("NOERROR", &[pod.ip][..])
    );
    assert_eq!(
        lab.http("ecommerce/loadgen", pod.ip, 8080, "GET", "/items")?,
        200
    );
    // Names are unique.
    let again = lab.add_pod(flowd_lab::spec::DeploymentSpec {
        namespace: "ecommerce".into(),
        name: "reviews".into(),
        node: "node-b".into(),
        role: None,
        labels: Default::default(),
    });
    assert!(again.is_err());
    let prefix = lab.prefix().to_string();
    drop(lab);
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
    Ok(())
}

#[test]
fn teardown_leaves_nothing_behind_even_on_panic() -> Result<()> {
    let seen = std::sync::Mutex::new(None);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::up(Spec::default_spec()).unwrap_or_else(|e| panic!("up: {e}"));
        let dnsmasq_pids = netns::pids(lab.pod_netns("kube-system/coredns").unwrap_or_default());
        *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((
            lab.prefix().to_string(),
            lab.dir().to_path_buf(),
            dnsmasq_pids,
        ));
        panic!("test panic while the lab is up");
    }));
    assert!(res.is_err());
    let (prefix, dir, pids) = seen
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .context("lab came up")?;
    assert_eq!(pids.len(), 1, "dnsmasq was running");
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        pids.iter().all(|&p| !netns::alive(p)),
        "dnsmasq left running"
    );
    Ok(())
}

fn lab_cli(args: &[&str]) -> Result<std::process::Output> {
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "lab {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Tears the CLI lab down even if the test fails half-way.
struct CliGuard(String);
impl Drop for CliGuard {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_lab"))
            .args(["down", "--dir", &self.0])
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn cli_up_traffic_exec_down() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("flowd-lab-cli-{}", std::process::id()));
    let d = dir.to_string_lossy().into_owned();
    let _guard = CliGuard(d.clone());
    let up = lab_cli(&["up", "--dir", &d])?;
    let summary = String::from_utf8_lossy(&up.stdout);
    assert!(summary.contains("ecommerce/frontend-"), "{summary}");
    let state = LabState::load(&dir)?;
    // One lab-app per serving pod plus the world, and dnsmasq; all detached and alive.
    assert_eq!(state.processes.len(), 6);
    assert!(state.processes.iter().all(|p| netns::alive(p.pid)));

    let out = lab_cli(&["traffic", "--dir", &d])?;
    let report: TrafficReport = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report.sent.http_total(), mix_size());
    assert_eq!(
        report.sent.http,
        report
            .expected
            .http
            .iter()
            .filter(|h| h.source_ip == report.source_ip)
            .cloned()
            .collect::<Vec<_>>()
    );

    let pod = state.pod("ecommerce/loadgen").context("loadgen")?;
    let out = lab_cli(&[
        "exec",
        "--dir",
        &d,
        "--pod",
        "ecommerce/loadgen",
        "--",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ])?;
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{}/32", pod.ip)));
    let out = lab_cli(&[
        "exec", "--dir", &d, "--node", &pod.node, "--", "ip", "-o", "link",
    ])?;
    assert!(String::from_utf8_lossy(&out.stdout).contains(&pod.host_veth));
    // The router reaches every node's underlay address and the pods (relay and observe run there).
    let node_ip = state
        .node(&pod.node)
        .context("node")?
        .underlay_ip
        .to_string();
    let out = lab_cli(&[
        "exec", "--dir", &d, "--router", "--", "ip", "-o", "route", "get", &node_ip,
    ])?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("dev br0"));
    let frontend = state.pod("ecommerce/frontend").context("frontend")?.ip;
    netns::run_in(&state.router_netns, move || {
        std::net::TcpStream::connect_timeout(
            &(frontend, 8080).into(),
            std::time::Duration::from_secs(3),
        )
        .map(|_| ())
        .map_err(|e| flowd_lab::Error::Lab(format!("router -> frontend: {e}")))
    })?;
    // The exit status of the command comes through.
    let st = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["exec", "--dir", &d, "--world", "--", "false"])
        .status()?;
    assert_eq!(st.code(), Some(1));

    let pay = state.pod("ecommerce/payment-service").context("payment")?;
    lab_cli(&["delete", "--dir", &d, "--pod", "ecommerce/payment-service"])?;
    assert!(!flowd_lab::manifests::pod_file(&dir, pay).exists());
    assert!(!netns::exists(&pay.netns));
    assert_eq!(LabState::load(&dir)?.pods.len(), state.pods.len() - 1);

    lab_cli(&[
        "add-pod",
        "--dir",
        &d,
        "--namespace",
        "ecommerce",
        "--name",
        "reviews",
        "--node",
        "node-b",
        "--role",
        "inventory",
        "--label",
        "tier=backend",
    ])?;
    let state = LabState::load(&dir)?;
    let reviews = state.pod("ecommerce/reviews").context("reviews added")?;
    assert_eq!(
        reviews.labels.get("tier").map(String::as_str),
        Some("backend")
    );
    // payment-service's process went with its pod, reviews' came.
    assert_eq!(state.processes.len(), 6);
    assert!(state.processes.iter().all(|p| netns::alive(p.pid)));
    assert!(state.processes.iter().any(|p| p.what == reviews.key()));
    let out = lab_cli(&[
        "exec",
        "--dir",
        &d,
        "--pod",
        "ecommerce/loadgen",
        "--",
        "getent",
        "hosts",
        "reviews",
    ])?;
    assert!(String::from_utf8_lossy(&out.stdout).contains(&reviews.ip.to_string()));

    lab_cli(&["down", "--dir", &d])?;
    assert_eq!(leftovers(&state.prefix), Vec::<String>::new());
    assert!(state.processes.iter().all(|p| !netns::alive(p.pid)));
    // Idempotent.
    lab_cli(&["down", "--dir", &d])?;
    Ok(())
}

#[test]
fn cli_down_cleans_up_after_a_crashed_up() -> Result<()> {
    // A state file written before anything was created, as `up` does first; then half a lab.
    let dir = std::env::temp_dir().join(format!("flowd-lab-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let d = dir.to_string_lossy().into_owned();
    let _guard = CliGuard(d.clone());
    let state = LabState::plan(&Spec::default_spec(), &flowd_lab::lab::new_prefix(), &dir);
    state.save()?;
    for ns in state.all_netns().iter().take(3) {
        netns::add(ns)?;
    }
    // A process left running inside one of them.
    let mut child = netns::command(&state.all_netns()[0], "sleep", &["30".into()]).spawn()?;
    // `ip netns exec` enters the namespace after it was spawned: wait until
    // it is there (same pid: it execs sleep), as a crashed lab's processes are.
    let pid = child.id() as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !netns::pids(&state.all_netns()[0]).contains(&pid) {
        ensure!(
            std::time::Instant::now() < deadline,
            "the process never entered its namespace"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    lab_cli(&["down", "--dir", &d])?;
    assert_eq!(leftovers(&state.prefix), Vec::<String>::new());
    let st = child.wait()?;
    assert!(!st.success(), "the process was killed");
    Ok(())
}
