//! The cluster harness end to end (root): flowd on every node and the relay;
//! the traffic mix gives flows on every node, and the relay merges them.

use std::time::Duration;

use anyhow::{Result, ensure};
use flowd_lab::cluster::{Cluster, ClusterOptions};
use flowd_proto::observer::GetFlowsRequest;

#[test]
fn cluster_with_relay_sees_flows_on_every_node() -> Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "cluster_smoke needs root (network namespaces, eBPF)"
    );
    let c = Cluster::start(ClusterOptions {
        relay: true,
        ..Default::default()
    })?;
    let nodes = c.node_names();
    ensure!(nodes.len() >= 2, "the default lab has two nodes: {nodes:?}");
    // Every pod veth of every node is attached.
    for n in &nodes {
        let mut want: Vec<String> = c
            .lab()
            .host_veths(n)
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut got = c.attached_interfaces(n)?;
        want.sort();
        got.sort();
        assert_eq!(got, want, "attached interfaces on {n}");
    }

    let report = c.run_traffic()?;
    let mix: u32 = c
        .options()
        .spec
        .traffic
        .requests
        .iter()
        .map(|r| r.count)
        .sum();
    assert_eq!(report.sent.http_total(), mix, "the default mix");

    // The mix crosses pods on both nodes (loadgen on node-b calls frontend on
    // node-a), so every node's flowd has flows naming its own node.
    let all = GetFlowsRequest {
        number: 0,
        ..Default::default()
    };
    for n in &nodes {
        let addr = c.flowd_addr(n)?;
        let flows = c.wait_flows(addr, all.clone(), Duration::from_secs(30), |f| {
            f.iter().any(|f| f.node_name.ends_with(n.as_str()))
        })?;
        assert!(
            flows.iter().all(|f| f.node_name.ends_with(n.as_str())),
            "flowd on {n} reports only its own node"
        );
    }
    // The relay merges all nodes.
    let merged = c.wait_flows(c.relay_addr(), all, Duration::from_secs(30), |f| {
        nodes
            .iter()
            .all(|n| f.iter().any(|f| f.node_name.ends_with(n.as_str())))
    })?;
    assert!(!merged.is_empty());
    Ok(())
}
