//! certgen's objects as Secrets through the Kubernetes API (feature `kube`).
//!
//! Needs, in the Secrets' namespace: `create` on secrets (RBAC cannot limit
//! `create` to names), and `get` / `update` on the three named Secrets.
//! Updates carry the resourceVersion read, so two runs at once cannot
//! overwrite each other's certificates unnoticed (the second fails, and its
//! Job retries).
use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;

use super::CertgenError;
use super::secret::Secret;

/// Secrets of one namespace.
pub struct KubeStore {
    api: Api<KubeSecret>,
}

fn err(e: impl std::fmt::Display) -> CertgenError {
    CertgenError::Kube(e.to_string())
}

impl KubeStore {
    /// Connects with the in-cluster service account or $KUBECONFIG.
    pub async fn connect(namespace: &str) -> Result<Self, CertgenError> {
        let client = kube::Client::try_default().await.map_err(err)?;
        Ok(Self {
            api: Api::namespaced(client, namespace),
        })
    }

    pub async fn load(&self, name: &str) -> Result<Option<Secret>, CertgenError> {
        let s = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| CertgenError::Kube(format!("reading Secret {name}: {e}")))?;
        Ok(s.map(|s| Secret {
            data: s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
            version: s.metadata.resource_version,
        }))
    }

    pub async fn save(
        &mut self,
        name: &str,
        data: BTreeMap<String, Vec<u8>>,
        existing: Option<&Secret>,
        tls: bool,
    ) -> Result<(), CertgenError> {
        let secret = KubeSecret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/name".to_string(), "flowd".to_string()),
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        "flowd-certgen".to_string(),
                    ),
                ])),
                resource_version: existing.and_then(|e| e.version.clone()),
                ..ObjectMeta::default()
            },
            type_: Some(if tls { "kubernetes.io/tls" } else { "Opaque" }.to_string()),
            data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            ..KubeSecret::default()
        };
        let pp = PostParams::default();
        let res = match existing {
            None => self.api.create(&pp, &secret).await,
            Some(_) => self.api.replace(name, &pp, &secret).await,
        };
        res.map(|_| ()).map_err(|e| {
            let verb = if existing.is_some() {
                "updating"
            } else {
                "creating"
            };
            CertgenError::Kube(format!("{verb} Secret {name}: {e}"))
        })
    }
}
