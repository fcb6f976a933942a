//! TLS for flowd's Observer API (:4244) and the relay (:4245 and its
//! connections to the nodes), from PEM files that are re-read when they
//! change.
//!
//! Certificates are short-lived and renewed by `flowd certgen` (a CronJob in
//! Kubernetes): a renewed Secret reaches the pods as new files (kubelet swaps
//! a `..data` symlink), and flowd and the relay must pick them up without a
//! restart. tonic's `ServerTlsConfig` is fixed once the server starts, so the
//! servers here terminate TLS themselves ([`server::incoming`]): every new
//! connection is accepted with the configuration current at that moment
//! ([`reload::Reloading`]), and established connections — with their running
//! GetFlows streams — are left alone.
//!
//! - [`server`]: certificate, key and client CAs (mTLS) of a server;
//! - [`client`]: CAs, client certificate and key of the relay towards the nodes;
//! - [`cert`]: what a certificate says (serial, validity, names), for logs,
//!   `flowd certgen` and tests.
pub mod cert;
pub mod client;
pub mod pem;
pub mod reload;
pub mod server;

pub use client::{ClientFiles, ClientMaterial, ClientTls};
pub use reload::{DEFAULT_RELOAD_INTERVAL, Reloading};
pub use server::{ServerFiles, ServerTls, incoming, incoming_with_plaintext};

/// A TLS file or setting that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {path}: {reason}")]
pub struct TlsError {
    /// Which setting the file came from ("server certificate", "client CA", ...).
    pub what: &'static str,
    /// The file (empty when the error is about the files together).
    pub path: String,
    /// Why it failed.
    pub reason: String,
}

impl TlsError {
    pub(crate) fn new(
        what: &'static str,
        path: &std::path::Path,
        reason: impl std::fmt::Display,
    ) -> Self {
        Self {
            what,
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The crypto provider of every configuration built here: ring, as tonic's
/// `tls-ring` feature uses (no process-wide default is installed or needed).
pub(crate) fn provider() -> std::sync::Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}
