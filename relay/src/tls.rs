//! TLS settings for both sides, loaded from PEM files (rustls via tonic).
//! The listening side is shared with flowd (`flowd_proto::tls`).
use std::path::{Path, PathBuf};

pub use flowd_proto::tls::ServerTls;
use flowd_proto::tls::read_pem as read;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::Error;

/// The connecting side (relay → nodes and the peer service).
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// CA certificates (PEM) the nodes' certificates must chain to.
    pub ca_pems: Vec<Vec<u8>>,
    /// Client certificate and key (PEM) for mTLS to the nodes.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
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
        let ca_pems = ca_files
            .iter()
            .map(|f| read("node CA", f))
            .collect::<Result<Vec<_>, _>>()?;
        let identity = match (cert_file, key_file) {
            (Some(c), Some(k)) => Some((read("client certificate", c)?, read("client key", k)?)),
            (None, None) => None,
            (Some(c), None) | (None, Some(c)) => {
                return Err(Error::Tls {
                    what: "client certificate/key",
                    path: c.display().to_string(),
                    reason: "certificate and key must be given together".into(),
                });
            }
        };
        Ok(Self {
            ca_pems,
            identity,
            server_name,
        })
    }

    /// The tonic configuration for one node; `peer_name` is the name the
    /// peer source asked for, `host` the host part of its address.
    pub fn for_peer(&self, peer_name: Option<&str>, host: &str) -> ClientTlsConfig {
        let name = peer_name
            .map(str::to_owned)
            .or_else(|| self.server_name.clone())
            .unwrap_or_else(|| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            });
        let mut cfg = ClientTlsConfig::new().domain_name(name);
        for ca in &self.ca_pems {
            cfg = cfg.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((c, k)) = &self.identity {
            cfg = cfg.identity(Identity::from_pem(c, k));
        }
        cfg
    }
}
