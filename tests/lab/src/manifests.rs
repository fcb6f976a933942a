//! Kubernetes objects for the lab, as flowd's manifest source reads them.
//!
//! - `DIR/manifests/`: one YAML file per Pod and Service (`<ns>.pod.<name>.yaml`,
//!   `<ns>.service.<name>.yaml`), so deleting a pod is deleting its file.
//! - `DIR/workloads.yaml`: a List of the Namespaces, Deployments and ReplicaSets
//!   the pods' ownerReferences point to.
//! - `DIR/manifests/nodes.yaml`: a NodeList (name, podCIDR, InternalIP on the
//!   underlay), in the manifest directory so flowd learns the node identities
//!   (`reserved:host` / `reserved:remote-node`) and the cluster's pod CIDRs.
//!
//! With `serviceMode: headless` (default) Services are headless (`clusterIP:
//! None`) and the cluster DNS answers a service name with its pod's IP, as
//! Kubernetes does for headless services. With `serviceMode: clusterIP` they get
//! a ClusterIP from `serviceCidr`, which nftables DNAT in each node turns into
//! the pod's IP (kube-proxy's job).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::Error;
use crate::state::{LabState, PodState};

pub const MANIFEST_DIR: &str = "manifests";

fn owner(api: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!({"apiVersion": api, "kind": kind, "name": name, "uid": uid,
           "controller": true, "blockOwnerDeletion": true})
}

fn uid_of(parts: &[&str]) -> String {
    let h = crate::state::fnv(parts);
    format!(
        "{:08x}-{:04x}-4{:03x}-9{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 20) & 0xfff,
        h & 0xffff_ffff_ffff
    )
}

pub fn pod(state: &LabState, p: &PodState) -> Value {
    let node_ip = state
        .node(&p.node)
        .map(|n| n.underlay_ip.to_string())
        .unwrap_or_default();
    let container = if p.dns {
        json!({"name": "dnsmasq", "image": "debian:bookworm (dnsmasq)",
               "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                         {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]})
    } else if p.role.serves() {
        let mut ports =
            vec![json!({"name": "http", "containerPort": state.spec.app_port, "protocol": "TCP"})];
        if p.role.serves_grpc() {
            ports.push(
                json!({"name": "grpc", "containerPort": state.spec.grpc_port, "protocol": "TCP"}),
            );
        }
        json!({"name": "app", "image": format!("flowd-lab/{}:dev", p.role.as_str()),
               "ports": ports})
    } else {
        json!({"name": "app", "image": format!("flowd-lab/{}:dev", p.role.as_str())})
    };
    let mut pod_ips = vec![json!({"ip": p.ip.to_string()})];
    if let Some(ip6) = p.ip6 {
        pod_ips.push(json!({"ip": ip6.to_string()}));
    }
    let mut host_ips = vec![json!({"ip": node_ip})];
    if let Some(n6) = state.node(&p.node).and_then(|n| n.underlay_ip6) {
        host_ips.push(json!({"ip": n6.to_string()}));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": p.name,
            "namespace": p.namespace,
            "uid": p.uid,
            "labels": p.labels,
            "ownerReferences": [owner("apps/v1", "ReplicaSet", &p.replica_set,
                                      &uid_of(&[&p.namespace, &p.replica_set]))],
        },
        "spec": {"nodeName": p.node, "containers": [container]},
        "status": {
            "phase": "Running",
            "hostIP": node_ip,
            "hostIPs": host_ips,
            "podIP": p.ip.to_string(),
            "podIPs": pod_ips,
        },
    })
}

pub fn service(state: &LabState, p: &PodState) -> Option<Value> {
    let (name, selector, ports) = if p.dns {
        (
            state.spec.dns.service.clone(),
            json!({"k8s-app": state.spec.dns.service}),
            json!([{"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"}]),
        )
    } else if p.role.serves() {
        let mut ports = vec![json!({"name": "http", "port": state.spec.app_port,
                                    "targetPort": state.spec.app_port, "protocol": "TCP"})];
        if p.role.serves_grpc() {
            // gRPC without TLS: HTTP/2 with prior knowledge (Kubernetes' h2c).
            ports.push(json!({"name": "grpc", "port": state.spec.grpc_port,
                              "targetPort": state.spec.grpc_port, "protocol": "TCP",
                              "appProtocol": "kubernetes.io/h2c"}));
        }
        (
            p.deployment.clone(),
            json!({"app": p.deployment}),
            json!(ports),
        )
    } else {
        return None;
    };
    let cluster_ip = p
        .service_ip
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "None".into());
    Some(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": p.namespace,
                     "uid": uid_of(&[&p.namespace, "service", &name]),
                     "labels": {"app": name}},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "type": "ClusterIP",
                 "selector": selector, "ports": ports},
    }))
}

fn workloads(state: &LabState) -> Value {
    let mut items = Vec::new();
    let mut namespaces: Vec<&str> = state.pods.iter().map(|p| p.namespace.as_str()).collect();
    namespaces.sort();
    namespaces.dedup();
    for ns in namespaces {
        items.push(json!({"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": ns, "uid": uid_of(&["namespace", ns])}}));
    }
    for p in &state.pods {
        let dep_uid = uid_of(&[&p.namespace, "deployment", &p.deployment]);
        let selector = json!({"matchLabels": p.labels.iter()
            .filter(|(k, _)| k.as_str() != "pod-template-hash")
            .collect::<std::collections::BTreeMap<_, _>>()});
        items.push(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": p.deployment, "namespace": p.namespace, "uid": dep_uid},
            "spec": {"replicas": 1, "selector": selector,
                     "template": {"metadata": {"labels": p.labels}}},
        }));
        items.push(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": p.replica_set, "namespace": p.namespace,
                         "uid": uid_of(&[&p.namespace, &p.replica_set]),
                         "labels": p.labels,
                         "ownerReferences": [owner("apps/v1", "Deployment", &p.deployment, &dep_uid)]},
            "spec": {"replicas": 1, "selector": {"matchLabels": p.labels},
                     "template": {"metadata": {"labels": p.labels}}},
        }));
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

fn nodes(state: &LabState) -> Value {
    let items: Vec<Value> = state
        .nodes
        .iter()
        .map(|n| {
            let mut cidrs = vec![n.pod_cidr.clone()];
            cidrs.extend(n.pod_cidr6.clone());
            let mut addresses =
                vec![json!({"type": "InternalIP", "address": n.underlay_ip.to_string()})];
            if let Some(u6) = n.underlay_ip6 {
                addresses.push(json!({"type": "InternalIP", "address": u6.to_string()}));
            }
            addresses.push(json!({"type": "Hostname", "address": n.name}));
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n.name, "labels": {"kubernetes.io/hostname": n.name,
                             "kubernetes.io/os": "linux"},
                             "annotations": {"flowd.io/netns": n.netns}},
                "spec": {"podCIDR": n.pod_cidr, "podCIDRs": cidrs},
                "status": {"addresses": addresses},
            })
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "NodeList", "items": items})
}

fn write_yaml(path: &Path, v: &Value) -> Result<(), Error> {
    let text = serde_yaml_ng::to_string(v).map_err(|e| Error::State {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // Atomically, so a directory watcher never reads half a file; the temporary
    // name does not end in .yaml, so it is not taken for a manifest.
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::Io {
            what: format!("writing {}", path.display()),
            source: e,
        })
}

/// The NodeList, in the manifest directory (flowd reads it with the pods).
pub fn nodes_file(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_DIR).join("nodes.yaml")
}

pub fn pod_file(dir: &Path, p: &PodState) -> PathBuf {
    dir.join(MANIFEST_DIR)
        .join(format!("{}.pod.{}.yaml", p.namespace, p.name))
}

/// Writes one pod's manifest and its Service's.
pub fn write_pod(state: &LabState, p: &PodState) -> Result<(), Error> {
    let dir = state.dir.join(MANIFEST_DIR);
    if let Some(s) = service(state, p) {
        let name = s["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        write_yaml(
            &dir.join(format!("{}.service.{name}.yaml", p.namespace)),
            &s,
        )?;
    }
    // The pod last: a watcher sees the Service before the pod that backs it.
    write_yaml(&pod_file(&state.dir, p), &pod(state, p))
}

/// Writes every manifest; returns the manifest directory.
pub fn write_all(state: &LabState) -> Result<PathBuf, Error> {
    let dir = state.dir.join(MANIFEST_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
        what: format!("creating {}", dir.display()),
        source: e,
    })?;
    for p in &state.pods {
        write_yaml(&pod_file(&state.dir, p), &pod(state, p))?;
        if let Some(s) = service(state, p) {
            let name = s["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            write_yaml(
                &dir.join(format!("{}.service.{name}.yaml", p.namespace)),
                &s,
            )?;
        }
    }
    write_yaml(&state.dir.join("workloads.yaml"), &workloads(state))?;
    write_yaml(&nodes_file(&state.dir), &nodes(state))?;
    Ok(dir)
}
