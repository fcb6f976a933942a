//! End-to-end on the lab (root): the host-side veths of a node's pods are
//! found from the pods' addresses, and attachment follows pods that are
//! deleted and added.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::Arc;

use futures::StreamExt;

use flowd::endpoints::manifest::load_dir;
use flowd::endpoints::model::{Kind, ObjectKey, Pod};
use flowd::endpoints::pod_veths::{PodVeth, PodVethTracker, discover_pod_veths};
use flowd::endpoints::{EndpointStore, InterfaceKind, StoreConfig, Update};
use flowd_lab::{Lab, Spec};

/// Runs `f` on a thread inside the network namespace `/run/netns/<ns>`, with
/// its own current-thread runtime (the netlink socket opens there).
fn in_netns<T: Send, Fut: std::future::Future<Output = T>>(
    ns: &str,
    f: impl FnOnce(rtnetlink::Handle) -> Fut + Send,
) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection().unwrap();
                let task = tokio::spawn(conn);
                let r = f(handle).await;
                task.abort();
                r
            })
        })
        .join()
        .unwrap()
    })
}

/// ifindex of an interface in a namespace, from `ip -o link`.
fn ifindex(ns: &str, dev: &str) -> u32 {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", dev])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip link show {dev} in {ns}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split(':').next().unwrap().trim().parse().unwrap()
}

fn reload(store: &EndpointStore, lab: &Lab) {
    let load = load_dir(&lab.manifest_dir()).unwrap();
    assert!(load.errors.is_empty(), "lab manifests: {:?}", load.errors);
    store.apply(Update::Replace {
        kind: Kind::Pod,
        objects: load.objects.clone(),
    });
    store.apply(Update::Replace {
        kind: Kind::Service,
        objects: load.objects,
    });
}

fn expected(lab: &Lab, node: &str, keys: &[&str]) -> Vec<PodVeth> {
    let ns = lab.node_netns(node).unwrap();
    let mut v: Vec<PodVeth> = keys
        .iter()
        .map(|k| {
            let p = lab.pod(k).unwrap_or_else(|| panic!("lab pod {k}"));
            PodVeth {
                pod: ObjectKey::new(p.namespace.clone(), p.name.clone()),
                ip: p.ip.into(),
                ifname: p.host_veth.clone(),
                ifindex: ifindex(ns, &p.host_veth),
            }
        })
        .collect();
    v.sort_by(|a, b| a.pod.cmp(&b.pod));
    v
}

#[test]
fn veths_follow_the_pods_of_each_node() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "endpoints_lab needs root (network namespaces)"
    );
    let mut lab = Lab::up(Spec::default_spec()).expect("lab up");
    let node_a = lab.node_netns("node-a").unwrap().to_string();
    let node_b = lab.node_netns("node-b").unwrap().to_string();

    let store = EndpointStore::new(StoreConfig {
        node_name: "node-a".into(),
        ..Default::default()
    });
    reload(&store, &lab);
    let local: Vec<String> = store
        .snapshot()
        .local_pods()
        .iter()
        .map(|p| p.key.to_string())
        .collect();
    let mut want_local: Vec<String> = lab
        .pods()
        .iter()
        .filter(|p| p.node == "node-a")
        .map(|p| p.key())
        .collect();
    want_local.sort();
    assert_eq!(local, want_local);
    assert_eq!(local.len(), 3, "coredns, frontend, order-service");

    // Given every pod of the cluster, node-a's routes lead only to its own.
    let all: Vec<Arc<Pod>> = {
        let load = load_dir(&lab.manifest_dir()).unwrap();
        load.objects
            .into_iter()
            .filter_map(|o| match o {
                flowd::endpoints::Object::Pod(p) => Some(p),
                _ => None,
            })
            .collect()
    };
    assert_eq!(all.len(), 6);
    let found = in_netns(&node_a, |h| async move {
        discover_pod_veths(&h, &all).await.unwrap()
    });
    let a_pods = [
        "kube-system/coredns",
        "ecommerce/frontend",
        "ecommerce/order-service",
    ];
    assert_eq!(found, expected(&lab, "node-a", &a_pods));

    // The tracker: everything to attach first, then nothing, then a delete.
    let mut tracker = PodVethTracker::new();
    let (tracker_back, plan) = in_netns(&node_a, |h| {
        let store = store.clone();
        async move {
            let p = tracker.reconcile(&h, &store).await.unwrap();
            (tracker, p)
        }
    });
    tracker = tracker_back;
    assert_eq!(plan.attach, expected(&lab, "node-a", &a_pods));
    assert!(plan.detach.is_empty());
    // The store now knows which ifindex is which pod.
    let snap = store.snapshot();
    for v in &plan.attach {
        let i = snap.interface(v.ifindex).unwrap();
        assert_eq!(i.kind, InterfaceKind::PodVeth { pod: v.pod.clone() });
        assert_eq!(i.name, v.ifname);
    }
    drop(snap);

    let order = expected(&lab, "node-a", &["ecommerce/order-service"]);
    lab.delete_pod("ecommerce/order-service").unwrap();
    reload(&store, &lab);
    lab.add_pod(flowd_lab::spec::DeploymentSpec {
        namespace: "ecommerce".into(),
        name: "reviews".into(),
        node: "node-a".into(),
        role: None,
        labels: BTreeMap::new(),
    })
    .unwrap();
    reload(&store, &lab);
    let (tracker_back, plan) = in_netns(&node_a, |h| {
        let store = store.clone();
        async move {
            let p = tracker.reconcile(&h, &store).await.unwrap();
            (tracker, p)
        }
    });
    assert_eq!(plan.detach, order);
    assert_eq!(
        plan.attach,
        expected(&lab, "node-a", &["ecommerce/reviews"])
    );
    assert_eq!(
        tracker_back.current().len(),
        3,
        "coredns, frontend, reviews: {:?}",
        tracker_back.current()
    );
    assert!(store.snapshot().interface(order[0].ifindex).is_none());

    // node-b, from its own namespace.
    let store_b = EndpointStore::new(StoreConfig {
        node_name: "node-b".into(),
        ..Default::default()
    });
    reload(&store_b, &lab);
    let plan_b = in_netns(&node_b, |h| {
        let store = store_b.clone();
        async move { PodVethTracker::new().reconcile(&h, &store).await.unwrap() }
    });
    assert_eq!(
        plan_b.attach,
        expected(
            &lab,
            "node-b",
            &[
                "ecommerce/inventory",
                "ecommerce/payment-service",
                "ecommerce/loadgen"
            ]
        )
    );
    lab.down().unwrap();
}

/// The daemon holds datapath events (and reports NOT_SERVING) until it has
/// applied `follow`'s listing plan, the first made after the first pod list
/// (flows enriched earlier would have no direction): that plan attaches every
/// local pod, and by then every local pod's veth is in the interface table.
#[test]
fn follow_marks_the_plan_of_the_first_pod_list() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "endpoints_lab needs root (network namespaces)"
    );
    let lab = Lab::up(Spec::default_spec()).expect("lab up");
    let node_b = lab.node_netns("node-b").unwrap().to_string();
    let store = EndpointStore::new(StoreConfig {
        node_name: "node-b".into(),
        ..Default::default()
    });
    assert!(!store.snapshot().pods_listed);
    let want = expected(
        &lab,
        "node-b",
        &[
            "ecommerce/inventory",
            "ecommerce/payment-service",
            "ecommerce/loadgen",
        ],
    );
    let s = store.clone();
    let manifests = lab.manifest_dir();
    in_netns(&node_b, |h| async move {
        let mut plans =
            flowd::endpoints::pod_veths::follow(s.clone(), h, std::time::Duration::from_secs(3600));
        // Services alone are no pod list.
        let load = load_dir(&manifests).unwrap();
        s.apply(Update::Replace {
            kind: Kind::Service,
            objects: load.objects.clone(),
        });
        s.apply(Update::Replace {
            kind: Kind::Pod,
            objects: load.objects,
        });
        // Plans up to the listing one (applied in order, as the daemon
        // does) attach every listed pod.
        let mut attached: Vec<String> = Vec::new();
        loop {
            let p = tokio::time::timeout(std::time::Duration::from_secs(30), plans.next())
                .await
                .expect("the listing plan within 30 s")
                .expect("follow ended")
                .expect("discovery");
            attached.extend(p.attach.iter().map(|v| v.ifname.clone()));
            if p.listing {
                break;
            }
        }
        attached.sort_unstable();
        let mut want_names: Vec<String> = want.iter().map(|v| v.ifname.clone()).collect();
        want_names.sort_unstable();
        assert_eq!(attached, want_names, "attached by the listing plan");
        let snap = s.snapshot();
        assert!(snap.pods_listed);
        for v in &want {
            let i = snap
                .interface(v.ifindex)
                .unwrap_or_else(|| panic!("{} unknown when signalled", v.ifname));
            assert_eq!(i.kind, InterfaceKind::PodVeth { pod: v.pod.clone() });
        }
    });
    lab.down().unwrap();
}
