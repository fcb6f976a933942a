//! TLS settings for both sides, from PEM files that are re-read when they
//! change (`flowd_tls`): the listening side is shared with flowd; towards the
//! nodes, every new connection uses the CAs and client certificate current
//! when it is opened.
use std::path::{Path, PathBuf};

pub use flowd_tls::{ServerFiles, ServerTls};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::Error;

/// The connecting side (relay → nodes and the peer service).
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// CAs of the nodes' certificates and the relay's client certificate.
    material: flowd_tls::ClientTls,
    /// Name to verify the nodes' certificates against when the peer source
    /// gives none; default: the host part of the node's address.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Loads the files; `ca_files` must not be empty.
    pub fn load(
        ca_files: &[PathBuf],
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
        server_name: Option<String>,
    ) -> Result<Self, Error> {
        let identity = match (cert_file, key_file) {
            (Some(c), Some(k)) => Some((c.to_path_buf(), k.to_path_buf())),
            (None, None) => None,
            (Some(c), None) | (None, Some(c)) => {
                return Err(Error::Tls {
                    what: "client certificate/key",
                    path: c.display().to_string(),
                    reason: "certificate and key must be given together".into(),
                });
            }
        };
        let material = flowd_tls::ClientTls::load(flowd_tls::ClientFiles {
            ca_files: ca_files.to_vec(),
            identity,
        })?;
        Ok(Self {
            material,
            server_name,
        })
    }

    /// Re-reads the files every `interval` while the relay runs.
    pub fn watch(&self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        self.material.watch(interval)
    }

    /// The tonic configuration for one node, with the material current now;
    /// `peer_name` is the name the peer source asked for, `host` the host
    /// part of its address.
    pub fn for_peer(&self, peer_name: Option<&str>, host: &str) -> ClientTlsConfig {
        let name = peer_name
            .map(str::to_owned)
            .or_else(|| self.server_name.clone())
            .unwrap_or_else(|| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            });
        let m = self.material.current();
        let mut cfg = ClientTlsConfig::new().domain_name(name);
        for ca in &m.ca_pems {
            cfg = cfg.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((c, k)) = &m.identity {
            cfg = cfg.identity(Identity::from_pem(c, k));
        }
        cfg
    }
}
