//! Endpoint source watching the Kubernetes API with kube-rs (feature `kube`).
//!
//! Pods (all, or only this node's with the field selector
//! `spec.nodeName=<node>`), Services and Nodes are watched with
//! `kube::runtime::watcher`: it lists, then watches from the list's
//! resourceVersion; when the watch fails or the server answers 410 Gone
//! (expired resourceVersion) it lists again, and flowd replaces what it had
//! of that kind with the new list (so objects deleted while disconnected
//! disappear). Errors are reported and retried with kube's default backoff.
//!
//! RBAC (a ClusterRole bound to flowd's ServiceAccount):
//!
//! ```yaml
//! rules:
//! - apiGroups: [""]
//!   resources: ["pods", "services", "nodes"]
//!   verbs: ["get", "list", "watch"]
//! ```
//!
//! Nodes give the host and remote-node identities and the pod CIDRs; when
//! that permission is missing, only Nodes are reported as errors and pods
//! and services still work.

use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{Node as K8sNode, Pod as K8sPod, Service as K8sService};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::manifest::{node_from_value, pod_from_value, service_from_value};
use super::model::{Kind, Object, ObjectKey};
use super::{Error, Source, SourceError, Update};

/// Which pods to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodScope {
    All,
    /// Only pods with `spec.nodeName` equal to this (a field selector).
    Node(String),
}

/// The Kubernetes API source.
pub struct KubeSource {
    client: Client,
    pods: PodScope,
    watch_nodes: bool,
}

impl KubeSource {
    /// A client from the environment: in-cluster service account, else
    /// kubeconfig.
    pub async fn from_env(pods: PodScope) -> Result<Self, Error> {
        let client = Client::try_default()
            .await
            .map_err(|e| Error::Kube(e.to_string()))?;
        Ok(Self::new(client, pods))
    }

    pub fn new(client: Client, pods: PodScope) -> Self {
        KubeSource {
            client,
            pods,
            watch_nodes: true,
        }
    }

    /// Whether to watch Nodes (default yes).
    pub fn watch_nodes(mut self, yes: bool) -> Self {
        self.watch_nodes = yes;
        self
    }
}

fn to_object<K: Serialize>(kind: Kind, k: &K) -> Result<Object, String> {
    let v = serde_json::to_value(k).map_err(|e| e.to_string())?;
    Ok(match kind {
        Kind::Pod => Object::Pod(pod_from_value(&v)?.into()),
        Kind::Service => Object::Service(service_from_value(&v)?.into()),
        Kind::Node => Object::Node(node_from_value(&v)?.into()),
    })
}

fn key_of<K: Resource>(k: &K, namespaced: bool) -> ObjectKey {
    let m = k.meta();
    let ns = if namespaced {
        m.namespace.clone().unwrap_or_else(|| "default".into())
    } else {
        String::new()
    };
    ObjectKey::new(ns, m.name.clone().unwrap_or_default())
}

/// One kind's watch as updates: Init..InitDone buffered into one Replace.
fn watch_kind<K>(
    api: Api<K>,
    cfg: watcher::Config,
    kind: Kind,
    source: String,
) -> BoxStream<'static, Update>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let namespaced = kind != Kind::Node;
    let mut initial: Option<Vec<Object>> = None;
    watcher(api, cfg)
        .default_backoff()
        .map(move |ev| {
            let bad = |reason: String| {
                Update::Error(SourceError::Source {
                    origin: source.clone(),
                    reason,
                })
            };
            match ev {
                Err(e) => vec![bad(format!("watching {kind:?}s: {e}"))],
                Ok(Event::Init) => {
                    initial = Some(Vec::new());
                    vec![]
                }
                Ok(Event::InitApply(k)) => match to_object(kind, &k) {
                    Ok(o) => {
                        initial.get_or_insert_with(Vec::new).push(o);
                        vec![]
                    }
                    Err(e) => vec![bad(e)],
                },
                Ok(Event::InitDone) => vec![Update::Replace {
                    kind,
                    objects: initial.take().unwrap_or_default(),
                }],
                Ok(Event::Apply(k)) => match to_object(kind, &k) {
                    Ok(o) => vec![Update::Upsert(o)],
                    Err(e) => vec![bad(e)],
                },
                Ok(Event::Delete(k)) => vec![Update::Delete {
                    kind,
                    key: key_of(&k, namespaced),
                }],
            }
        })
        .flat_map(futures::stream::iter)
        .boxed()
}

impl Source for KubeSource {
    fn name(&self) -> String {
        match &self.pods {
            PodScope::All => "kubernetes API".into(),
            PodScope::Node(n) => format!("kubernetes API (pods of node {n})"),
        }
    }

    fn updates(self: Box<Self>) -> BoxStream<'static, Update> {
        let name = self.name();
        let pod_cfg = match &self.pods {
            PodScope::All => watcher::Config::default(),
            PodScope::Node(n) => watcher::Config::default().fields(&format!("spec.nodeName={n}")),
        };
        let mut streams = vec![
            watch_kind(
                Api::<K8sPod>::all(self.client.clone()),
                pod_cfg,
                Kind::Pod,
                name.clone(),
            ),
            watch_kind(
                Api::<K8sService>::all(self.client.clone()),
                watcher::Config::default(),
                Kind::Service,
                name.clone(),
            ),
        ];
        if self.watch_nodes {
            streams.push(watch_kind(
                Api::<K8sNode>::all(self.client.clone()),
                watcher::Config::default(),
                Kind::Node,
                name,
            ));
        }
        futures::stream::select_all(streams).boxed()
    }
}
