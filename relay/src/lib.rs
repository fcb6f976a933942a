//! flowd relay: one time-ordered flow stream across all nodes.
//!
//! The relay learns its peers ([`peers`]), keeps a connection to each with
//! retries ([`pool`], dialling with [`dial`]), and serves the Observer API
//! plus gRPC health ([`server`]), optionally over TLS/mTLS ([`tls`]), and,
//! with `--ui-listen`, a web UI ([`ui`]) over the same service. The service
//! hands each GetFlows to the fan-out (`fanout`), which runs one stream per
//! connected node (`node_stream`) and merges their answers by timestamp
//! ([`merge`]).

pub mod config;
pub mod dial;
mod fanout;
pub mod merge;
mod node_stream;
pub mod peers;
pub mod pool;
pub mod server;
pub mod tls;
pub mod ui;

pub use config::RelayConfig;
pub use peers::{PeerRegistry, PeerSpec};
pub use pool::Pool;

/// Largest gRPC message the relay decodes, from a client or from a node.
const MAX_MESSAGE: usize = 16 << 20;

/// Errors of the relay library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--peer` / `--peer-dns` / `--peer-service` value could not be parsed.
    #[error("invalid peer {value:?}: {reason}")]
    InvalidPeer {
        /// The value as given.
        value: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A TLS file could not be read or used.
    #[error("{what} {path}: {reason}")]
    Tls {
        /// Which option the file came from.
        what: &'static str,
        /// The file.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// Serving failed (bind, TLS setup, transport).
    #[error("serving the Observer API: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl From<flowd_proto::tls::TlsError> for Error {
    fn from(e: flowd_proto::tls::TlsError) -> Self {
        Self::Tls {
            what: e.what,
            path: e.path,
            reason: e.reason,
        }
    }
}

impl From<flowd_tls::TlsError> for Error {
    fn from(e: flowd_tls::TlsError) -> Self {
        Self::Tls {
            what: e.what,
            path: e.path,
            reason: e.reason,
        }
    }
}
