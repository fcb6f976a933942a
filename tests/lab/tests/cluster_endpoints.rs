//! Issue 4 end to end (root): flowd on every lab node enriches flows with the
//! pods, namespaces, labels and workloads of both sides, reports a same-node
//! exchange once per observation point, names the world `reserved:world`,
//! forgets deleted pods, and attaches to pod veths as pods come and go.
//! Expected values come from the lab's state (what it wrote to the manifests).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use flowd_lab::PodState;
use flowd_lab::cluster::{Cluster, ClusterOptions};
use flowd_lab::spec::{DeploymentSpec, Role};
use flowd_proto::flow::{
    Endpoint, Flow, FlowType, TraceObservationPoint as Obs, TrafficDirection as Dir, Workload,
    layer4::Protocol,
};
use flowd_proto::observer::GetFlowsRequest;

const WAIT: Duration = Duration::from_secs(30);

/// Root-only: a run without root fails rather than passing untested.
fn need_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root (network namespaces, eBPF)"
    );
}

fn all_flows() -> GetFlowsRequest {
    GetFlowsRequest {
        number: 0,
        ..Default::default()
    }
}

fn ips(f: &Flow) -> Option<(IpAddr, IpAddr)> {
    let ip = f.ip.as_ref()?;
    Some((ip.source.parse().ok()?, ip.destination.parse().ok()?))
}

/// A TCP connection's first packet (SYN without ACK) of an L3/L4 flow event.
fn is_syn(f: &Flow) -> bool {
    f.r#type == FlowType::L3L4 as i32
        && matches!(
            f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
            Some(Protocol::Tcp(t)) if t.flags.as_ref().is_some_and(|fl| fl.syn && !fl.ack)
        )
}

fn dport(f: &Flow) -> u32 {
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => t.destination_port,
        Some(Protocol::Udp(u)) => u.destination_port,
        _ => 0,
    }
}

/// A flow in one line, for messages.
fn desc(f: &Flow) -> String {
    format!(
        "{:?} {:?} at {} (point {}, direction {})",
        ips(f),
        dport(f),
        ifname(f),
        f.trace_observation_point,
        f.traffic_direction
    )
}

fn ifname(f: &Flow) -> String {
    f.interface
        .as_ref()
        .map(|i| i.name.clone())
        .unwrap_or_default()
}

/// What the lab says a pod's endpoint must carry: its namespace and name, its
/// Deployment, and its Kubernetes labels (`k8s:` prefix, Cilium's filter drops
/// pod-template-hash) plus the namespace label. Cilium's own policy labels
/// (cluster, service account) may come on top.
fn check_pod_endpoint(ep: Option<&Endpoint>, p: &PodState, what: &str) {
    let ep = ep.unwrap_or_else(|| panic!("{what}: no endpoint, want pod {}", p.key()));
    assert_eq!(
        (ep.namespace.as_str(), ep.pod_name.as_str()),
        (p.namespace.as_str(), p.name.as_str()),
        "{what}"
    );
    assert_eq!(
        ep.workloads,
        vec![Workload {
            name: p.deployment.clone(),
            kind: "Deployment".into()
        }],
        "{what}: workload of {}",
        p.key()
    );
    let mut want: BTreeSet<String> = p
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != "pod-template-hash")
        .map(|(k, v)| format!("k8s:{k}={v}"))
        .collect();
    want.insert(format!("k8s:io.kubernetes.pod.namespace={}", p.namespace));
    let got: BTreeSet<String> = ep
        .labels
        .iter()
        .filter(|l| !l.starts_with("k8s:io.cilium.k8s.policy."))
        .cloned()
        .collect();
    assert_eq!(got, want, "{what}: labels of {}", p.key());
}

fn check_world(ep: Option<&Endpoint>, what: &str) {
    let ep = ep.unwrap_or_else(|| panic!("{what}: no endpoint, want the world"));
    assert_eq!(ep.labels, vec!["reserved:world".to_string()], "{what}");
    assert!(
        ep.pod_name.is_empty() && ep.namespace.is_empty(),
        "{what}: {ep:?}"
    );
}

/// Every side of every flow that is a lab pod or the world carries exactly
/// what the lab says. Returns how many sides were checked.
fn check_enrichment(c: &Cluster, node: &str, flows: &[Flow]) -> usize {
    let state = c.lab().state();
    let world = IpAddr::V4(c.lab().world_ip());
    let mut checked = 0;
    for f in flows {
        let Some((src, dst)) = ips(f) else { continue };
        for (ip, ep, side) in [
            (src, &f.source, "source"),
            (dst, &f.destination, "destination"),
        ] {
            let what = format!("{node}: {side} {ip} of {}", desc(f));
            if ip == world {
                check_world(ep.as_ref(), &what);
                checked += 1;
            } else if let IpAddr::V4(v4) = ip
                && let Some(p) = state.pod_by_ip(v4)
            {
                check_pod_endpoint(ep.as_ref(), p, &what);
                checked += 1;
            }
        }
    }
    checked
}

/// (observation point, direction, interface, source, destination, port) of a SYN sighting.
type Sighting = (i32, i32, String, IpAddr, IpAddr, u32);

fn syn_sightings(flows: &[Flow]) -> BTreeMap<Sighting, u32> {
    let mut m = BTreeMap::new();
    for f in flows.iter().filter(|f| is_syn(f)) {
        let Some((s, d)) = ips(f) else { continue };
        *m.entry((
            f.trace_observation_point,
            f.traffic_direction,
            ifname(f),
            s,
            d,
            dport(f),
        ))
        .or_default() += 1;
    }
    m
}

#[test]
fn flows_carry_pods_namespaces_labels_and_workloads_on_both_sides() -> Result<()> {
    need_root();
    let mut c = Cluster::start(ClusterOptions::default())?;
    let report = c.run_traffic()?;
    let state = c.lab().state().clone();
    let pod_by_name = |ns: &str, name: &str| {
        state
            .pods
            .iter()
            .find(|p| p.namespace == ns && p.name == name)
            .cloned()
    };

    // Every TCP connection the mix makes, seen at each observation point: a
    // connection leaves its client pod's veth (FROM_ENDPOINT, EGRESS) on the
    // client's node and enters the server pod's veth (TO_ENDPOINT, INGRESS)
    // on the server's node. A same-node exchange (frontend → order-service)
    // is one sighting per veth, both on node-a. The loadgen's requests share
    // the report's keep-alive connections; every other call (HTTP or gRPC)
    // has its own.
    let mut want: BTreeMap<String, BTreeMap<Sighting, u32>> = BTreeMap::new();
    let world = IpAddr::V4(c.lab().world_ip());
    let grpc_calls: Vec<_> = report.expected.grpc.iter().map(|g| g.as_http()).collect();
    ensure!(!grpc_calls.is_empty(), "the mix makes gRPC calls");
    for h in report.expected.http.iter().chain(&grpc_calls) {
        let client = pod_by_name(&h.source_namespace, &h.source_pod)
            .with_context(|| format!("client {}/{}", h.source_namespace, h.source_pod))?;
        let conns = if client.key() == format!("{}/{}", report.source_namespace, report.source_pod)
        {
            0 // counted once below
        } else {
            h.count
        };
        let server = match (&h.destination_namespace, &h.destination_pod) {
            (Some(ns), Some(pod)) => Some(pod_by_name(ns, pod).context("server pod")?),
            _ => None,
        };
        let dst = server.as_ref().map_or(world, |p| IpAddr::V4(p.ip));
        ensure!(
            h.backend_ip.to_string() == dst.to_string(),
            "headless lab: {h:?}"
        );
        let port = u32::from(h.destination_port);
        let mut add = |node: &str, k: Sighting, n: u32| {
            if n > 0 {
                *want.entry(node.into()).or_default().entry(k).or_default() += n;
            }
        };
        add(
            &client.node,
            (
                Obs::FromEndpoint as i32,
                Dir::Egress as i32,
                client.host_veth.clone(),
                IpAddr::V4(client.ip),
                dst,
                port,
            ),
            conns,
        );
        if let Some(s) = &server {
            add(
                &s.node,
                (
                    Obs::ToEndpoint as i32,
                    Dir::Ingress as i32,
                    s.host_veth.clone(),
                    IpAddr::V4(client.ip),
                    dst,
                    port,
                ),
                conns,
            );
        }
    }
    // The loadgen's keep-alive connections to the target.
    let lg = c
        .lab()
        .pod(&format!(
            "{}/{}",
            report.source_namespace, report.source_pod
        ))
        .context("loadgen")?
        .clone();
    let target = report
        .sent
        .http
        .first()
        .and_then(|h| {
            pod_by_name(
                h.destination_namespace.as_deref()?,
                h.destination_pod.as_deref()?,
            )
        })
        .context("the mix's target pod")?;
    for (node, obs, dir, veth) in [
        (&lg.node, Obs::FromEndpoint, Dir::Egress, &lg.host_veth),
        (
            &target.node,
            Obs::ToEndpoint,
            Dir::Ingress,
            &target.host_veth,
        ),
    ] {
        *want
            .entry(node.clone())
            .or_default()
            .entry((
                obs as i32,
                dir as i32,
                veth.clone(),
                IpAddr::V4(lg.ip),
                IpAddr::V4(target.ip),
                u32::from(c.lab().state().spec.app_port),
            ))
            .or_default() += report.connections;
    }
    // The mix has both kinds of exchange.
    let same_node = report.expected.http.iter().any(|h| {
        let a = pod_by_name(&h.source_namespace, &h.source_pod);
        let b = h
            .destination_pod
            .as_deref()
            .and_then(|p| pod_by_name(h.destination_namespace.as_deref()?, p));
        matches!((a, b), (Some(a), Some(b)) if a.node == b.node)
    });
    ensure!(same_node, "the mix has a same-node exchange");

    for node in c.node_names() {
        let addr = c.flowd_addr(&node)?;
        let want_here = want.get(&node).cloned().unwrap_or_default();
        let flows = c.wait_flows(addr, all_flows(), WAIT, |f| {
            let got = syn_sightings(f);
            want_here
                .iter()
                .all(|(k, n)| got.get(k).copied().unwrap_or(0) >= *n)
        })?;
        // Exactly: N connections → N sightings per observation point, no others.
        assert_eq!(syn_sightings(&flows), want_here, "SYN sightings on {node}");
        let checked = check_enrichment(&c, &node, &flows);
        assert!(checked > 0, "{node}: no pod flows checked");
        eprintln!(
            "{node}: {} flows, {checked} pod/world sides checked",
            flows.len()
        );
    }

    // A deleted pod (manifest removed, netns gone) is no longer named: probes
    // to its address from both nodes give reserved:unknown (inside the pod
    // CIDRs nodes.yaml declares), and no flow after that names it.
    let gone = c
        .lab()
        .pod("ecommerce/payment-service")
        .context("payment-service")?
        .clone();
    c.lab_mut().delete_pod("ecommerce/payment-service")?;
    let probers = ["ecommerce/order-service", "ecommerce/inventory"];
    let probe = |c: &Cluster| -> Result<()> {
        for p in probers {
            let to = (gone.ip, c.lab().state().spec.app_port);
            c.lab().run_in_pod(p, move || async move {
                let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                    .map_err(|e| flowd_lab::Error::Lab(e.to_string()))?;
                s.send_to(b"probe", to)
                    .map_err(|e| flowd_lab::Error::Lab(e.to_string()))?;
                Ok(())
            })?;
        }
        Ok(())
    };
    let names_gone = |f: &Flow| {
        [&f.source, &f.destination]
            .iter()
            .any(|e| e.as_ref().is_some_and(|e| e.pod_name == gone.name))
    };
    let mut before: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for node in c.node_names() {
        let addr = c.flowd_addr(&node)?;
        let flows = c.wait_flows(addr, all_flows(), WAIT, |f| {
            // Probe until the probe's flow names nothing (the manifest reload is polled).
            let _ = probe(&c);
            f.iter().any(|f| {
                ips(f).is_some_and(|(_, d)| d == IpAddr::V4(gone.ip))
                    && f.destination
                        .as_ref()
                        .is_some_and(|e| e.labels == vec!["reserved:unknown".to_string()])
            })
        })?;
        before.insert(node, flows.iter().map(|f| f.uuid.clone()).collect());
    }
    probe(&c)?;
    for node in c.node_names() {
        let addr = c.flowd_addr(&node)?;
        let seen = &before[&node];
        let later = c.wait_flows(addr, all_flows(), WAIT, |f| {
            f.iter().any(|f| {
                !seen.contains(&f.uuid) && ips(f).is_some_and(|(_, d)| d == IpAddr::V4(gone.ip))
            })
        })?;
        let later: Vec<&Flow> = later.iter().filter(|f| !seen.contains(&f.uuid)).collect();
        assert!(later.iter().all(|f| !f.uuid.is_empty()));
        let stale: Vec<String> = later
            .iter()
            .filter(|f| names_gone(f))
            .map(|f| desc(f))
            .collect();
        assert!(
            stale.is_empty(),
            "{node}: flows after the deletion name {}: {stale:?}",
            gone.key()
        );
    }
    Ok(())
}

/// TCX links flowd holds (its bpf_link fds), by ifindex.
fn tcx_links(pid: u32) -> Result<BTreeMap<u32, u32>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let e = e?;
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:bpf_link" {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        )) else {
            continue;
        };
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        if field("link_type:").as_deref() != Some("tcx") {
            continue;
        }
        if let Some(i) = field("ifindex:").and_then(|v| v.parse().ok()) {
            *m.entry(i).or_default() += 1;
        }
    }
    Ok(m)
}

fn ifindex(netns: &str, dev: &str) -> Result<u32> {
    let out = flowd_lab::netns::ip(&["-n", netns, "-o", "link", "show", "dev", dev])?;
    out.split(':')
        .next()
        .and_then(|i| i.trim().parse().ok())
        .with_context(|| format!("ifindex of {dev}: {out}"))
}

/// An HTTP GET from loadgen to `ip` on the app port; the status code.
fn loadgen_get(c: &Cluster, ip: Ipv4Addr, path: &str) -> Result<u16> {
    Ok(c.lab().http(
        "ecommerce/loadgen",
        ip,
        c.lab().state().spec.app_port,
        "GET",
        path,
    )?)
}

#[test]
fn attachment_follows_pods_without_interface_globs() -> Result<()> {
    need_root();
    // No `flowd-interfaces`: only pod following attaches (Cluster::start
    // waits until every pod veth of every node is attached).
    let mut c = Cluster::start(ClusterOptions {
        set: vec![("flowd-interfaces".into(), String::new())],
        ..Default::default()
    })?;
    let node = "node-a";
    let node_ns = c.lab().node_netns(node).context("node-a")?.to_string();
    let pid = c.flowd_pid(node).context("flowd pid")?;
    let links_for = |veths: &[&str]| -> Result<BTreeMap<u32, u32>> {
        veths
            .iter()
            .map(|v| Ok((ifindex(&node_ns, v)?, 2)))
            .collect()
    };
    let veths: Vec<String> = c
        .lab()
        .host_veths(node)
        .iter()
        .map(|s| s.to_string())
        .collect();
    let refs: Vec<&str> = veths.iter().map(String::as_str).collect();
    // One ingress and one egress link per pod veth, nothing else.
    assert_eq!(tcx_links(pid)?, links_for(&refs)?);

    // A pod added after flowd started: attached, and its flows appear.
    let pod = c.lab_mut().add_pod(DeploymentSpec {
        namespace: "ecommerce".into(),
        name: "reviews".into(),
        node: node.into(),
        role: Some(Role::Inventory),
        labels: [("tier".to_string(), "backend".to_string())].into(),
    })?;
    flowd_tests::wait_until("flowd attaches to the new pod's veth", WAIT, || {
        Ok(c.attached_interfaces(node)?
            .contains(&pod.host_veth)
            .then_some(()))
    })?;
    let mut with_new = refs.clone();
    with_new.push(&pod.host_veth);
    assert_eq!(tcx_links(pid)?, links_for(&with_new)?);
    let status = loadgen_get(&c, pod.ip, "/items")?;
    assert_eq!(status, 200);
    let addr = c.flowd_addr(node)?;
    let at_new = |f: &Flow| ifname(f) == pod.host_veth;
    let flows = c.wait_flows(addr, all_flows(), WAIT, |f| {
        f.iter().any(|f| at_new(f) && is_syn(f))
    })?;
    let syn: Vec<&Flow> = flows.iter().filter(|f| at_new(f) && is_syn(f)).collect();
    assert_eq!(syn.len(), 1, "one connection, one SYN sighting at its veth");
    assert_eq!(syn[0].trace_observation_point, Obs::ToEndpoint as i32);
    check_pod_endpoint(syn[0].destination.as_ref(), &pod, "new pod");

    // Its pod object goes away while the veth stays: flowd detaches (its two
    // links are released), and requests to it are no longer observed there.
    let new_idx = ifindex(&node_ns, &pod.host_veth)?;
    std::fs::remove_file(flowd_lab::manifests::pod_file(c.lab().dir(), &pod))?;
    flowd_tests::wait_until("flowd detaches from the removed pod's veth", WAIT, || {
        Ok((!c.attached_interfaces(node)?.contains(&pod.host_veth)).then_some(()))
    })?;
    let links = tcx_links(pid)?;
    assert_eq!(links, links_for(&refs)?);
    assert!(!links.contains_key(&new_idx));
    // A request to frontend is a marker: once its SYN is in, every record
    // the kernel wrote before it is in too (one ring, in order; records may
    // wait up to the reader's drain interval).
    let fe = c
        .lab()
        .pod("ecommerce/frontend")
        .context("frontend")?
        .clone();
    let marker = |c: &Cluster, seen: &[Flow]| -> Result<Vec<Flow>> {
        let fe_syns = |f: &[Flow]| {
            f.iter()
                .filter(|f| ifname(f) == fe.host_veth && is_syn(f))
                .count()
        };
        let n = fe_syns(seen);
        let status = loadgen_get(c, fe.ip, "/")?;
        ensure!(status == 200, "frontend answered {status}");
        c.wait_flows(addr, all_flows(), WAIT, |f| fe_syns(f) > n)
    };
    let flows = marker(&c, &flows)?;
    let before = flows.iter().filter(|f| at_new(f)).count();
    assert_eq!(loadgen_get(&c, pod.ip, "/items")?, 200);
    // Once the next marker is in, an observed request to the detached veth
    // would be too.
    let flows = marker(&c, &flows)?;
    assert_eq!(flows.iter().filter(|f| at_new(f)).count(), before);

    // Pods deleted outright (netns and veth gone): nothing is left attached.
    c.lab_mut().delete_pod("ecommerce/reviews")?;
    let order = c
        .lab()
        .pod("ecommerce/order-service")
        .context("order")?
        .clone();
    c.lab_mut().delete_pod("ecommerce/order-service")?;
    flowd_tests::wait_until("flowd forgets the deleted pod's veth", WAIT, || {
        Ok((!c.attached_interfaces(node)?.contains(&order.host_veth)).then_some(()))
    })?;
    let left: Vec<&str> = refs
        .iter()
        .copied()
        .filter(|v| *v != order.host_veth)
        .collect();
    assert_eq!(tcx_links(pid)?, links_for(&left)?);
    Ok(())
}
