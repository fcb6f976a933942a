//! Enrichment of synthetic flows: same node, across nodes, world, host,
//! service IPs, deleted pods, observation points and the counting rule.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use flowd::endpoints::manifest::parse_manifest;
use flowd::endpoints::model::{Kind, ObjectKey};
use flowd::endpoints::{EndpointStore, Hook, Interface, InterfaceKind, StoreConfig, Update};
use flowd::metrics::counting::counts_once as counts_for_metrics;
use flowd_proto::flow::{
    Endpoint, Flow, Ip, NetworkInterface, TraceObservationPoint as Top, TrafficDirection as Dir,
    Workload,
};
use flowd_proto::pbjson_types::BoolValue;

const CLUSTER: &str = r#"
apiVersion: v1
kind: List
items:
- kind: Node
  metadata: {name: node-a}
  spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, "fd00:10:244:1::/64"]}
  status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
- kind: Node
  metadata: {name: node-b}
  spec: {podCIDR: 10.244.2.0/24}
  status: {addresses: [{type: InternalIP, address: 172.18.0.3}]}
- kind: Pod
  metadata:
    name: frontend-h7grtjcbz-l2fnx
    namespace: ecommerce
    uid: u-frontend
    labels: {app: frontend, pod-template-hash: h7grtjcbz}
    ownerReferences: [{kind: ReplicaSet, name: frontend-h7grtjcbz, controller: true}]
  spec: {nodeName: node-a}
  status: {podIPs: [{ip: 10.244.1.3}, {ip: "fd00:10:244:1::3"}]}
- kind: Pod
  metadata:
    name: order-service-5c9d7-abcde
    namespace: ecommerce
    uid: u-order
    labels: {app: order-service, pod-template-hash: 5c9d7}
    ownerReferences: [{kind: ReplicaSet, name: order-service-5c9d7, controller: true}]
  spec: {nodeName: node-a}
  status: {podIP: 10.244.1.4}
- kind: Pod
  metadata:
    name: inventory-7f8e9-zzzzz
    namespace: ecommerce
    uid: u-inventory
    labels: {app: inventory, pod-template-hash: 7f8e9}
    ownerReferences: [{kind: ReplicaSet, name: inventory-7f8e9, controller: true}]
  spec: {nodeName: node-b}
  status: {podIP: 10.244.2.2}
- kind: Service
  metadata: {name: frontend, namespace: ecommerce}
  spec: {clusterIP: 10.96.0.100}
- kind: Service
  metadata: {name: inventory, namespace: ecommerce}
  spec: {clusterIP: None}
"#;

const FE: &str = "10.244.1.3";
const ORDER: &str = "10.244.1.4";
const INV: &str = "10.244.2.2";
const FE_VETH: u32 = 10;
const ORDER_VETH: u32 = 11;
const UPLINK: u32 = 2;

fn store() -> Arc<EndpointStore> {
    let store = EndpointStore::new(StoreConfig {
        node_name: "node-a".into(),
        cluster_name: "default".into(),
        cluster_cidrs: vec!["10.96.0.0/16".parse().unwrap()],
        host_addresses: vec![],
    });
    let objects = parse_manifest(CLUSTER, false).unwrap();
    for kind in [Kind::Node, Kind::Pod, Kind::Service] {
        store.apply(Update::Replace {
            kind,
            objects: objects.clone(),
        });
    }
    let veth = |i, n: &str, pod: &str| Interface {
        ifindex: i,
        name: n.into(),
        kind: InterfaceKind::PodVeth {
            pod: ObjectKey::new("ecommerce", pod),
        },
    };
    store.set_pod_veths([
        veth(FE_VETH, "lxcfe", "frontend-h7grtjcbz-l2fnx"),
        veth(ORDER_VETH, "lxcorder", "order-service-5c9d7-abcde"),
    ]);
    store.set_uplinks([Interface {
        ifindex: UPLINK,
        name: "eth0".into(),
        kind: InterfaceKind::Uplink,
    }]);
    store
}

fn flow(src: &str, dst: &str, ifindex: u32, reply: bool) -> Flow {
    Flow {
        ip: Some(Ip {
            source: src.into(),
            destination: dst.into(),
            ..Default::default()
        }),
        interface: Some(NetworkInterface {
            index: ifindex,
            name: String::new(),
        }),
        is_reply: reply.then_some(BoolValue { value: true }),
        ..Default::default()
    }
}

fn enriched(
    s: &EndpointStore,
    src: &str,
    dst: &str,
    ifindex: u32,
    hook: Hook,
    reply: bool,
) -> Flow {
    let mut f = flow(src, dst, ifindex, reply);
    s.enrich(&mut f, Some(hook));
    f
}

fn pod_ep(name: &str, app: &str, deploy: &str, local_uid: Option<&str>) -> Endpoint {
    let labels = vec![
        format!("k8s:app={app}"),
        "k8s:io.cilium.k8s.policy.cluster=default".to_string(),
        "k8s:io.kubernetes.pod.namespace=ecommerce".to_string(),
    ];
    Endpoint {
        id: local_uid
            .map(flowd::endpoints::model::endpoint_id)
            .unwrap_or(0),
        identity: flowd::endpoints::model::identity_of(&labels),
        cluster_name: "default".into(),
        namespace: "ecommerce".into(),
        labels,
        pod_name: name.into(),
        workloads: vec![Workload {
            name: deploy.into(),
            kind: "Deployment".into(),
        }],
    }
}

fn reserved(identity: u32, label: &str) -> Endpoint {
    Endpoint {
        identity,
        labels: vec![label.into()],
        ..Default::default()
    }
}

fn point(f: &Flow) -> (Top, Dir) {
    (
        Top::try_from(f.trace_observation_point).unwrap(),
        Dir::try_from(f.traffic_direction).unwrap(),
    )
}

#[test]
fn same_node_exchange_two_sightings_counted_once_per_packet() {
    let s = store();
    let fe = pod_ep(
        "frontend-h7grtjcbz-l2fnx",
        "frontend",
        "frontend",
        Some("u-frontend"),
    );
    let order = pod_ep(
        "order-service-5c9d7-abcde",
        "order-service",
        "order-service",
        Some("u-order"),
    );

    // Request frontend → order-service: leaves frontend (its veth's ingress
    // hook), enters order-service (its veth's egress hook).
    let a = enriched(&s, FE, ORDER, FE_VETH, Hook::Ingress, false);
    let b = enriched(&s, FE, ORDER, ORDER_VETH, Hook::Egress, false);
    for f in [&a, &b] {
        assert_eq!(f.source.as_ref(), Some(&fe));
        assert_eq!(f.destination.as_ref(), Some(&order));
        assert_eq!(f.node_name, "node-a");
        assert_eq!(f.source_service, None);
        assert_eq!(f.destination_service, None);
    }
    assert_eq!(a.interface.as_ref().unwrap().name, "lxcfe");
    assert_eq!(b.interface.as_ref().unwrap().name, "lxcorder");
    assert_eq!(point(&a), (Top::FromEndpoint, Dir::Egress));
    assert_eq!(point(&b), (Top::ToEndpoint, Dir::Ingress));
    assert!(counts_for_metrics(&a));
    assert!(!counts_for_metrics(&b));

    // The reply: direction is the connection's (inverted), still counted once.
    let c = enriched(&s, ORDER, FE, ORDER_VETH, Hook::Ingress, true);
    let d = enriched(&s, ORDER, FE, FE_VETH, Hook::Egress, true);
    assert_eq!(point(&c), (Top::FromEndpoint, Dir::Ingress));
    assert_eq!(point(&d), (Top::ToEndpoint, Dir::Egress));
    assert_eq!(
        [&a, &b, &c, &d]
            .iter()
            .filter(|f| counts_for_metrics(f))
            .count(),
        2,
        "one request and one reply packet"
    );
    assert!(counts_for_metrics(&c));
}

#[test]
fn cross_node() {
    let s = store();
    let fe = pod_ep(
        "frontend-h7grtjcbz-l2fnx",
        "frontend",
        "frontend",
        Some("u-frontend"),
    );
    let inv = pod_ep("inventory-7f8e9-zzzzz", "inventory", "inventory", None);
    let out = enriched(&s, FE, INV, FE_VETH, Hook::Ingress, false);
    assert_eq!(out.source.as_ref(), Some(&fe));
    assert_eq!(
        out.destination.as_ref(),
        Some(&inv),
        "remote pods have no endpoint ID"
    );
    assert!(counts_for_metrics(&out));
    // The same packet leaving node-a's uplink is not counted again.
    let up = enriched(&s, FE, INV, UPLINK, Hook::Egress, false);
    assert_eq!(point(&up), (Top::ToNetwork, Dir::Unknown));
    assert!(!counts_for_metrics(&up));
    // Inbound from the remote pod: counted where it was sent (the remote
    // pod's veth, by node-b's flowd), not again here.
    let inb = enriched(&s, INV, FE, FE_VETH, Hook::Egress, true);
    assert_eq!(inb.source.as_ref(), Some(&inv));
    assert_eq!(point(&inb), (Top::ToEndpoint, Dir::Egress));
    assert!(!counts_for_metrics(&inb));
    let up_in = enriched(&s, INV, FE, UPLINK, Hook::Ingress, true);
    assert_eq!(point(&up_in), (Top::FromNetwork, Dir::Unknown));
    assert!(!counts_for_metrics(&up_in));
    // Traffic of the node itself on the uplink is counted there.
    let host = enriched(&s, "172.18.0.2", "172.18.0.3", UPLINK, Hook::Egress, false);
    assert_eq!(host.source, Some(reserved(1, "reserved:host")));
    assert_eq!(host.destination, Some(reserved(6, "reserved:remote-node")));
    assert!(counts_for_metrics(&host));
}

#[test]
fn world_unknown_service_and_ipv6() {
    let s = store();
    let w = enriched(&s, FE, "198.51.100.10", FE_VETH, Hook::Ingress, false);
    assert_eq!(w.destination, Some(reserved(2, "reserved:world")));
    let w6 = enriched(
        &s,
        "2001:db8::1",
        "fd00:10:244:1::3",
        FE_VETH,
        Hook::Egress,
        false,
    );
    assert_eq!(w6.source, Some(reserved(2, "reserved:world")));
    assert_eq!(w6.destination.unwrap().pod_name, "frontend-h7grtjcbz-l2fnx");
    // In the cluster's ranges but nobody's: unknown, not world.
    let u = enriched(&s, FE, "10.244.2.99", FE_VETH, Hook::Ingress, false);
    assert_eq!(u.destination, Some(reserved(0, "reserved:unknown")));
    // A ClusterIP: the service is named; the VIP itself is no pod.
    let svc = enriched(&s, ORDER, "10.96.0.100", ORDER_VETH, Hook::Ingress, false);
    assert_eq!(
        svc.destination_service,
        Some(flowd_proto::flow::Service {
            name: "frontend".into(),
            namespace: "ecommerce".into()
        })
    );
    assert_eq!(svc.destination, Some(reserved(0, "reserved:unknown")));
    assert_eq!(svc.source_service, None);
    // No interface information: endpoints only.
    let mut f = flow(FE, ORDER, 999, false);
    s.enrich(&mut f, Some(Hook::Ingress));
    assert_eq!(point(&f), (Top::UnknownPoint, Dir::Unknown));
    assert_eq!(f.destination.unwrap().pod_name, "order-service-5c9d7-abcde");
    assert!(counts_for_metrics(&flow(FE, ORDER, 999, false)));
    // A node name already set is kept.
    let mut f = flow(FE, ORDER, FE_VETH, false);
    f.node_name = "other".into();
    s.enrich(&mut f, None);
    assert_eq!(f.node_name, "other");
    assert_eq!(point(&f), (Top::UnknownPoint, Dir::Unknown));
}

#[test]
fn deleted_pod_is_no_longer_named() {
    let s = store();
    let before = enriched(&s, FE, ORDER, FE_VETH, Hook::Ingress, false);
    assert_eq!(
        before.destination.unwrap().pod_name,
        "order-service-5c9d7-abcde"
    );
    let v = s.snapshot().version;
    s.apply(Update::Delete {
        kind: Kind::Pod,
        key: ObjectKey::new("ecommerce", "order-service-5c9d7-abcde"),
    });
    assert_eq!(s.snapshot().version, v + 1);
    let after = enriched(&s, FE, ORDER, FE_VETH, Hook::Ingress, false);
    assert_eq!(after.destination, Some(reserved(0, "reserved:unknown")));
    assert_eq!(s.snapshot().local_pods().len(), 1);
    // A relist without inventory removes it too.
    s.apply(Update::Replace {
        kind: Kind::Pod,
        objects: vec![],
    });
    let inv = enriched(&s, FE, INV, FE_VETH, Hook::Ingress, false);
    assert_eq!(inv.destination, Some(reserved(0, "reserved:unknown")));
    assert_eq!(inv.source, Some(reserved(0, "reserved:unknown")));
}

/// XDP attachments add uplinks one by one; they never take a pod veth's
/// place, and removing one leaves pod veths alone.
#[test]
fn uplinks_added_and_removed_one_by_one() {
    let s = store();
    s.add_uplink(77, "eth1");
    let f = enriched(&s, "192.0.2.1", "10.244.1.2", 77, Hook::Ingress, false);
    assert_eq!(point(&f), (Top::FromNetwork, Dir::Unknown));
    assert_eq!(f.interface.unwrap().name, "eth1");
    // A pod veth stays a pod veth.
    s.add_uplink(FE_VETH, "lxcfe");
    let f = enriched(&s, "10.244.1.2", "192.0.2.1", FE_VETH, Hook::Ingress, false);
    assert_eq!(point(&f), (Top::FromEndpoint, Dir::Egress));
    s.remove_uplink(FE_VETH);
    let f = enriched(&s, "10.244.1.2", "192.0.2.1", FE_VETH, Hook::Ingress, false);
    assert_eq!(point(&f), (Top::FromEndpoint, Dir::Egress));
    s.remove_uplink(77);
    assert!(s.snapshot().interface(77).is_none());
    assert!(s.snapshot().interface(UPLINK).is_some(), "the others stay");
}
