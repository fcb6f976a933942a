//! TLS for the Observer API servers (flowd :4244, relay :4245) from PEM
//! files: rustls through tonic. With client CAs the server requires a client
//! certificate chaining to one of them (mTLS).
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// A TLS file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {reason}")]
pub struct TlsError {
    /// Which setting the file came from ("server certificate", "client CA", ...).
    pub what: &'static str,
    /// The file.
    pub path: String,
    /// Why it failed.
    pub reason: String,
}

/// Reads a PEM file, refusing files without a `-----BEGIN` line (a DER file
/// or a wrong path would otherwise fail later, far from its cause).
pub fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let err = |reason: String| TlsError {
        what,
        path: path.display().to_string(),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if !data.windows(10).any(|w| w == b"-----BEGIN") {
        return Err(err("not a PEM file (no -----BEGIN line)".into()));
    }
    Ok(data)
}

/// The listening side: certificate and key; with client CAs, clients must
/// present a certificate signed by one of them (mTLS).
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// PEM certificate (chain) of the server.
    pub cert_file: PathBuf,
    /// PEM private key of the server.
    pub key_file: PathBuf,
    /// PEM CA certificates clients must chain to; empty = no client auth.
    pub client_ca_files: Vec<PathBuf>,
}

impl ServerTls {
    /// Reads the files into a tonic server TLS configuration.
    pub fn load(&self) -> Result<ServerTlsConfig, TlsError> {
        let cert = read_pem("server certificate", &self.cert_file)?;
        let key = read_pem("server key", &self.key_file)?;
        let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if !self.client_ca_files.is_empty() {
            let mut bundle = Vec::new();
            for f in &self.client_ca_files {
                bundle.extend(read_pem("client CA", f)?);
                bundle.push(b'\n');
            }
            cfg = cfg.client_ca_root(Certificate::from_pem(bundle));
        }
        Ok(cfg)
    }
}
