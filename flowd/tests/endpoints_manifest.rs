//! Manifest source: valid and invalid files, and watching the directory.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use flowd::endpoints::manifest::{ManifestError, ManifestSource, load_dir};
use flowd::endpoints::model::{Object, ObjectKey};
use flowd::endpoints::{EndpointStore, SourceError, StoreConfig};

fn tmpdir(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("flowd-ep-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const GOOD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: ecommerce}
---
apiVersion: v1
kind: Pod
metadata:
  name: frontend-h7grtjcbz-l2fnx
  namespace: ecommerce
  uid: 11111111-0000-4000-9000-000000000001
  labels: {app: frontend, pod-template-hash: h7grtjcbz}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: frontend-h7grtjcbz, uid: x, controller: true}
spec: {nodeName: node-a, containers: [{name: app, image: x}]}
status: {podIP: 10.244.1.3, podIPs: [{ip: 10.244.1.3}]}
---
apiVersion: v1
kind: Service
metadata: {name: frontend, namespace: ecommerce}
spec: {clusterIP: 10.96.0.100, clusterIPs: [10.96.0.100], ports: [{port: 8080}]}
---
"#;

const LIST_JSON: &str = r#"{"apiVersion":"v1","kind":"PodList","items":[
 {"apiVersion":"v1","kind":"Pod","metadata":{"name":"inventory-abc12-xyz","namespace":"ecommerce","labels":{"app":"inventory"}},
  "spec":{"nodeName":"node-b"},"status":{"podIP":"10.244.2.2","podIPs":[{"ip":"10.244.2.2"},{"ip":"fd00:10:244:2::2"}]}}]}"#;

const NODES: &str = r#"
apiVersion: v1
kind: NodeList
items:
- apiVersion: v1
  kind: Node
  metadata: {name: node-a}
  spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24]}
  status: {addresses: [{type: InternalIP, address: 172.18.0.2}, {type: Hostname, address: node-a}]}
"#;

fn keys(objs: &[Object]) -> Vec<String> {
    let mut k: Vec<String> = objs
        .iter()
        .map(|o| format!("{:?} {}", o.kind(), o.key()))
        .collect();
    k.sort();
    k
}

#[test]
fn valid_files_load_and_invalid_ones_are_reported_and_skipped() {
    let d = Dir(tmpdir("load"));
    let dir = &d.0;
    write(dir, "good.yaml", GOOD);
    write(dir, "list.json", LIST_JSON);
    write(dir, "nodes.yml", NODES);
    write(dir, "bad-yaml.yaml", "kind: Pod\nmetadata: [unclosed\n");
    write(
        dir,
        "no-name.yaml",
        "kind: Pod\nmetadata: {name: ok, namespace: a}\n---\nkind: Pod\nmetadata: {namespace: a}\n",
    );
    write(
        dir,
        "bad-ip.yaml",
        "kind: Pod\nmetadata: {name: x, namespace: ecommerce}\nstatus: {podIP: 10.0.0.999}\n",
    );
    write(dir, "no-kind.json", r#"{"metadata": {"name": "x"}}"#);
    write(dir, "bad-json.json", r#"{"kind": "Pod", "#);
    write(
        dir,
        "label.yaml",
        "kind: Pod\nmetadata: {name: y, labels: {replicas: 3}}\n",
    );
    write(
        dir,
        "bad-list.yaml",
        "kind: List\nitems:\n- {kind: Service, metadata: {name: ok, namespace: ns}}\n- {kind: Service, metadata: {name: s, namespace: ns}, spec: {clusterIP: abc}}\n",
    );
    write(dir, "scalar.yaml", "just a string\n");
    // Not manifests: hidden (a writer's temporary file) and other extensions.
    write(dir, ".frontend.yaml.tmp", "garbage: [");
    write(dir, ".hidden.yaml", "garbage: [");
    write(dir, "README.md", "not yaml: [");

    let load = load_dir(dir).unwrap();
    assert_eq!(
        keys(&load.objects),
        vec![
            "Node node-a",
            "Pod ecommerce/frontend-h7grtjcbz-l2fnx",
            "Pod ecommerce/inventory-abc12-xyz",
            "Service ecommerce/frontend",
        ]
    );
    let errors: Vec<String> = load.errors.iter().map(|e| e.to_string()).collect();
    let p = |f: &str| dir.join(f).display().to_string();
    // The exact texts, sorted by file name (the load order).
    let expected = vec![
        format!(
            "manifest {}: document 1: Pod ecommerce/x: status.podIP \"10.0.0.999\" is not an IP address",
            p("bad-ip.yaml")
        ),
        format!(
            "manifest {}: invalid JSON: EOF while parsing a value at line 1 column 16",
            p("bad-json.json")
        ),
        format!(
            "manifest {}: document 1: items[1]: Service ns/s: spec.clusterIP \"abc\" is not an IP address",
            p("bad-list.yaml")
        ),
        format!(
            "manifest {}: invalid YAML: {}",
            p("bad-yaml.yaml"),
            yaml_error("kind: Pod\nmetadata: [unclosed\n")
        ),
        format!(
            "manifest {}: document 1: Pod default/y: metadata.labels.replicas is not a string: 3",
            p("label.yaml")
        ),
        format!("manifest {}: no kind", p("no-kind.json")),
        format!(
            "manifest {}: document 2: Pod has no metadata.name",
            p("no-name.yaml")
        ),
        format!(
            "manifest {}: document 1: not a Kubernetes object: \"just a string\"",
            p("scalar.yaml")
        ),
    ];
    assert_eq!(errors, expected);

    // The parsed pod, as the model holds it.
    let Some(Object::Pod(fe)) = load
        .objects
        .iter()
        .find(|o| o.key().name.starts_with("frontend-"))
    else {
        panic!("no frontend pod")
    };
    assert_eq!(fe.node_name, "node-a");
    assert_eq!(
        fe.ips,
        vec!["10.244.1.3".parse::<std::net::IpAddr>().unwrap()]
    );
    let w = fe.workload().unwrap();
    assert_eq!(
        (w.kind.as_str(), w.name.as_str()),
        ("Deployment", "frontend")
    );
    let Some(Object::Pod(inv)) = load
        .objects
        .iter()
        .find(|o| o.key().name.starts_with("inventory-"))
    else {
        panic!("no inventory pod")
    };
    assert_eq!(inv.ips.len(), 2);
    assert!(inv.workload().is_none());
}

/// serde_yaml_ng's own text for a parse error (the reason flowd passes on).
fn yaml_error(text: &str) -> String {
    use serde::Deserialize;
    let doc = serde_yaml_ng::Deserializer::from_str(text).next().unwrap();
    serde_json::Value::deserialize(doc).unwrap_err().to_string()
}

async fn wait_for(store: &EndpointStore, what: &str, cond: impl Fn(&EndpointStore) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rx = store.subscribe();
    while !cond(store) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
    }
}

fn pod_names(store: &EndpointStore) -> Vec<String> {
    let snap = store.snapshot();
    ["10.244.1.3", "10.244.1.4", "10.244.2.2"]
        .iter()
        .map(|ip| snap.endpoint(ip.parse().unwrap()).pod_name.clone())
        .collect()
}

#[tokio::test]
async fn directory_is_watched() {
    let d = Dir(tmpdir("watch"));
    let dir = d.0.clone();
    write(&dir, "good.yaml", GOOD);
    write(&dir, "broken.yaml", "kind: Pod\nmetadata: {namespace: a}\n");
    let store = EndpointStore::new(StoreConfig {
        node_name: "node-a".into(),
        ..Default::default()
    });
    let src = ManifestSource {
        dir: dir.clone(),
        interval: Duration::from_millis(50),
    };
    let task = tokio::spawn(store.clone().run(Box::new(src)));
    wait_for(&store, "frontend", |s| {
        pod_names(s)[0] == "frontend-h7grtjcbz-l2fnx"
    })
    .await;
    assert_eq!(
        store.errors(),
        vec![SourceError::Manifest(ManifestError {
            file: dir.join("broken.yaml"),
            reason: "document 1: Pod has no metadata.name".into()
        })]
    );
    assert_eq!(pod_names(&store), vec!["frontend-h7grtjcbz-l2fnx", "", ""]);

    // A pod appears (written atomically, as the lab and kubectl do).
    let order = GOOD
        .replace("frontend-h7grtjcbz-l2fnx", "order-service-5c9d7-abcde")
        .replace("frontend-h7grtjcbz", "order-service-5c9d7")
        .replace("h7grtjcbz", "5c9d7")
        .replace("10.244.1.3", "10.244.1.4")
        .replace("name: frontend", "name: order-service")
        .replace("10.96.0.100", "10.96.0.101");
    write(&dir, ".order.tmp", &order);
    std::fs::rename(dir.join(".order.tmp"), dir.join("order.yaml")).unwrap();
    wait_for(&store, "order-service", |s| {
        pod_names(s)[1] == "order-service-5c9d7-abcde"
    })
    .await;
    let snap = store.snapshot();
    assert_eq!(
        snap.service("10.96.0.101".parse().unwrap()),
        Some(&ObjectKey::new("ecommerce", "order-service"))
    );
    drop(snap);

    // Fixing the broken file loads it; deleting a file removes its objects.
    write(&dir, "list.json", LIST_JSON);
    std::fs::remove_file(dir.join("good.yaml")).unwrap();
    wait_for(&store, "frontend gone, inventory there", |s| {
        pod_names(s) == vec!["", "order-service-5c9d7-abcde", "inventory-abc12-xyz"]
    })
    .await;
    assert_eq!(
        store.snapshot().service("10.96.0.100".parse().unwrap()),
        None
    );
    task.abort();
}
