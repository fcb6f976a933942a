//! Pod identity: who each address of a flow is.
//!
//! - [`model`]: pods, services, nodes, Hubble labels, workloads and reserved
//!   identities.
//! - Sources deliver objects as a stream of [`Update`]s behind one trait,
//!   [`Source`]: [`manifest::ManifestSource`] (a directory of manifests, the
//!   default without a cluster) and, with the `kube` feature,
//!   `kube::KubeSource` (the Kubernetes API).
//! - [`store::EndpointStore`] applies them and publishes an immutable
//!   snapshot indexed by IP; [`enrich`] fills flows from it without locks.
//! - [`pod_veths`]: which host-side veths belong to this node's pods, so the
//!   datapath can attach to them as pods come and go.
//! - [`hold`]: flows of an interface not matched yet wait for it (a new
//!   pod's first packets).
//! - [`names`]: the names each local pod resolved (from observed DNS
//!   answers), for flows' `source_names` / `destination_names`.

pub mod enrich;
pub mod hold;
#[cfg(feature = "kube")]
pub mod kube;
pub mod manifest;
pub mod model;
pub mod names;
pub mod pod_veths;
pub mod store;

pub use enrich::Hook;
pub use manifest::{ManifestError, ManifestSource};
pub use model::{Endpoint, Kind, Node, Object, ObjectKey, Pod, Service, Workload};
pub use store::{EndpointStore, Interface, InterfaceKind, Snapshot, StoreConfig};

use futures::stream::BoxStream;

/// A change from a source.
#[derive(Debug, Clone)]
pub enum Update {
    /// Added or changed.
    Upsert(Object),
    /// Gone.
    Delete { kind: Kind, key: ObjectKey },
    /// Every object of this kind the source knows, replacing what it said
    /// before (initial list, relist after an expired watch, rescan).
    Replace { kind: Kind, objects: Vec<Object> },
    /// Something the source could not read; the source goes on.
    Error(SourceError),
}

/// A problem reported by a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{origin}: {reason}")]
    Source { origin: String, reason: String },
}

/// Where endpoints come from. A source runs until its stream ends (never, for
/// watching sources); it reconnects and resyncs on its own.
pub trait Source: Send + 'static {
    /// For logs and errors.
    fn name(&self) -> String;
    /// The updates, starting with a full [`Update::Replace`] per kind.
    fn updates(self: Box<Self>) -> BoxStream<'static, Update>;
}

/// Errors of the endpoints module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("network namespace {name}: {reason}")]
    Netns { name: String, reason: String },
    #[cfg(feature = "kube")]
    #[error("kubernetes client: {0}")]
    Kube(String),
}
