//! flowd-lab: a simulated multi-node Kubernetes-like cluster on one machine.
//!
//! Nodes and pods are network namespaces wired like a routed CNI (Calico
//! style: pod /32 behind a veth, default route via 169.254.1.1 answered by
//! proxy ARP), nodes share an underlay bridge, a router namespace leads to an
//! "outside world" server. dnsmasq serves the cluster names from a kube-system
//! pod; services in the `ecommerce` pods call each other over HTTP and gRPC
//! (order-service → inventory); a traffic
//! generator makes a fixed, known mix and reports it. The lab writes the
//! Kubernetes manifests flowd's manifest source reads.
//!
//! ```no_run
//! let lab = flowd_lab::Lab::up(flowd_lab::Spec::default_spec())?;
//! let report = lab.run_traffic()?;
//! assert_eq!(report.sent.http_total(), 36);
//! # Ok::<(), flowd_lab::Error>(())
//! ```

pub mod app;
pub mod browser;
pub mod cluster;
pub mod dns;
pub mod grpc;
pub mod lab;
pub mod manifests;
pub mod netns;
pub mod spec;
pub mod state;
pub mod traffic;

use std::path::PathBuf;

pub use app::Stats;
pub use lab::{Lab, Options, Servers};
pub use spec::Spec;
pub use state::{LabState, NodeState, PodState};
pub use traffic::{DnsCount, Exchanges, GrpcCount, HttpCount, TrafficReport};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lab spec {origin}: {reason}")]
    Spec { origin: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {reason}")]
    Command { what: String, reason: String },
    #[error("lab state {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("DNS query for {name}: {reason}")]
    Dns { name: String, reason: String },
    #[error("HTTP {target}: {reason}")]
    Http { target: String, reason: String },
    #[error("gRPC {target}: {reason}")]
    Grpc { target: String, reason: String },
    #[error("traffic generator: {0}")]
    Traffic(String),
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("{0}")]
    Lab(String),
}
