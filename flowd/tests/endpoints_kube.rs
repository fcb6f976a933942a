//! The Kubernetes API source against a local fake API server speaking the
//! list/watch protocol: an initial list, watch events, a 410 Gone (expired
//! resourceVersion) that forces a relist, and a watch that stays open. The
//! store must converge to exactly what the server last said.
#![cfg(feature = "kube")]
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowd::endpoints::kube::{KubeSource, PodScope};
use flowd::endpoints::{EndpointStore, StoreConfig};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

type Body = BoxBody<Bytes, Infallible>;

fn pod(name: &str, ip: &str, rv: &str, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "ecommerce", "uid": format!("uid-{name}"),
                        "resourceVersion": rv, "labels": {"app": app}},
           "spec": {"nodeName": "node-a", "containers": [{"name": "app"}]},
           "status": {"podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn list(kind: &str, rv: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": rv}, "items": items})
}

fn event(t: &str, obj: Value) -> String {
    format!("{}\n", json!({"type": t, "object": obj}))
}

#[derive(Default)]
struct Fake {
    requests: Mutex<Vec<String>>,
    pod_lists: Mutex<u32>,
    pod_watches: Mutex<u32>,
}

fn full(v: String) -> Body {
    Full::new(Bytes::from(v)).boxed()
}

/// A watch response: these lines, then the connection stays open.
fn open_stream(lines: Vec<String>) -> Body {
    let s = futures::stream::iter(
        lines
            .into_iter()
            .map(|l| Ok::<_, Infallible>(Frame::data(Bytes::from(l)))),
    )
    .chain(futures::stream::pending());
    BodyExt::boxed(StreamBody::new(s))
}

use futures::StreamExt;

async fn handle(
    fake: Arc<Fake>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    fake.requests
        .lock()
        .unwrap()
        .push(format!("{path}?{query}"));
    let watch = query.split('&').any(|kv| kv == "watch=true");
    let body = match (path.as_str(), watch) {
        ("/api/v1/pods", false) => {
            let n = {
                let mut n = fake.pod_lists.lock().unwrap();
                *n += 1;
                *n
            };
            if n == 1 {
                full(
                    list(
                        "PodList",
                        "10",
                        vec![
                            pod("a", "10.244.1.10", "5", "a"),
                            pod("b", "10.244.1.11", "6", "b"),
                        ],
                    )
                    .to_string(),
                )
            } else {
                // The relist after 410: c was deleted and d created meanwhile.
                full(
                    list(
                        "PodList",
                        "20",
                        vec![
                            pod("b", "10.244.1.11", "12", "b2"),
                            pod("d", "10.244.1.13", "19", "d"),
                        ],
                    )
                    .to_string(),
                )
            }
        }
        ("/api/v1/pods", true) => {
            let n = {
                let mut n = fake.pod_watches.lock().unwrap();
                *n += 1;
                *n
            };
            if n == 1 {
                // Events, then the resourceVersion has expired.
                let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": "too old resource version: 13 (20)",
                    "reason": "Expired", "code": 410});
                full(
                    [
                        event("ADDED", pod("c", "10.244.1.12", "11", "c")),
                        event("MODIFIED", pod("b", "10.244.1.11", "12", "b2")),
                        event("DELETED", pod("a", "10.244.1.10", "13", "a")),
                        event("ERROR", gone),
                    ]
                    .concat(),
                )
            } else if n == 2 {
                open_stream(vec![event("ADDED", pod("e", "10.244.1.14", "21", "e"))])
            } else {
                open_stream(vec![])
            }
        }
        ("/api/v1/services", false) => full(
            list(
                "ServiceList",
                "3",
                vec![json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "frontend", "namespace": "ecommerce", "resourceVersion": "3"},
            "spec": {"clusterIP": "10.96.0.100", "clusterIPs": ["10.96.0.100"]}})],
            )
            .to_string(),
        ),
        ("/api/v1/nodes", false) => full(
            list(
                "NodeList",
                "4",
                vec![json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-a", "resourceVersion": "4"},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}]}})],
            )
            .to_string(),
        ),
        (_, true) => open_stream(vec![]),
        _ => {
            return Ok(Response::builder()
                .status(404)
                .body(full(String::new()))
                .unwrap());
        }
    };
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap())
}

async fn serve(fake: Arc<Fake>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let fake = fake.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |r| handle(fake.clone(), r));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn pods(store: &EndpointStore) -> Vec<(String, Vec<String>)> {
    let snap = store.snapshot();
    let mut v: Vec<(String, Vec<String>)> = (10..=14)
        .map(|i| {
            snap.endpoint(format!("10.244.1.{i}").parse().unwrap())
                .clone()
        })
        .filter(|e| e.is_pod())
        .map(|e| (e.pod_name.clone(), e.labels.clone()))
        .collect();
    v.sort();
    v
}

fn labels(app: &str) -> Vec<String> {
    vec![
        format!("k8s:app={app}"),
        "k8s:io.kubernetes.pod.namespace=ecommerce".into(),
    ]
}

#[tokio::test]
async fn watch_relists_after_410_and_converges() {
    let fake = Arc::new(Fake::default());
    let addr = serve(fake.clone()).await;
    let cfg = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(cfg).unwrap();
    let store = EndpointStore::new(StoreConfig {
        node_name: "node-a".into(),
        ..Default::default()
    });
    let src = KubeSource::new(client, PodScope::Node("node-a".into()));
    let task = tokio::spawn(store.clone().run(Box::new(src)));

    let want = vec![
        ("b".to_string(), labels("b2")),
        ("d".to_string(), labels("d")),
        ("e".to_string(), labels("e")),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rx = store.subscribe();
    while pods(&store) != want {
        assert!(
            Instant::now() < deadline,
            "store has {:?}, requests {:?}",
            pods(&store),
            fake.requests.lock().unwrap()
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
    }
    assert_eq!(
        *fake.pod_lists.lock().unwrap(),
        2,
        "one list, one relist after 410"
    );
    let reqs = fake.requests.lock().unwrap().clone();
    let pod_reqs: Vec<&String> = reqs
        .iter()
        .filter(|r| r.starts_with("/api/v1/pods"))
        .collect();
    assert!(
        pod_reqs
            .iter()
            .all(|r| r.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "{pod_reqs:?}"
    );
    assert!(
        pod_reqs
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("resourceVersion=20")),
        "{pod_reqs:?}"
    );
    let snap = store.snapshot();
    assert_eq!(
        snap.service("10.96.0.100".parse().unwrap())
            .map(|k| k.to_string()),
        Some("ecommerce/frontend".into())
    );
    assert_eq!(
        snap.endpoint("172.18.0.2".parse().unwrap()).labels,
        vec!["reserved:host"]
    );
    // Deleted pods (a by event, c while disconnected) are unknown now, in the node's pod CIDR.
    assert_eq!(
        snap.endpoint("10.244.1.10".parse().unwrap()).labels,
        vec!["reserved:unknown"]
    );
    assert_eq!(
        snap.endpoint("10.244.1.12".parse().unwrap()).labels,
        vec!["reserved:unknown"]
    );
    assert_eq!(snap.local_pods().len(), 3);
    drop(snap);
    let errors = store.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "kubernetes API (pods of node node-a): watching Pods: error returned by apiserver during watch: too old resource version: 13 (20): Expired"
    );
    task.abort();
}
