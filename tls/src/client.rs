//! The connecting side (the relay towards the nodes and their peer service):
//! the CAs the servers' certificates must chain to and, for mTLS, a client
//! certificate and key. Connections are made by tonic with the material
//! current when each connection is opened.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::sign::CertifiedKey;

use crate::reload::{Built, Reloading};
use crate::{TlsError, pem, provider};

/// The client's PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFiles {
    /// CA certificates the servers' certificates must chain to (not empty).
    pub ca_files: Vec<PathBuf>,
    /// Client certificate and key, for servers that require one (mTLS).
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Checked PEM contents, as tonic's `ClientTlsConfig` takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientMaterial {
    /// One PEM text per CA file.
    pub ca_pems: Vec<Vec<u8>>,
    /// Client certificate and key (PEM).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Client TLS material that follows its files. Clone freely.
#[derive(Clone)]
pub struct ClientTls {
    inner: Arc<Reloading<ClientMaterial>>,
}

impl ClientTls {
    /// Loads the files; fails if one cannot be read, holds no certificate,
    /// or the key does not match the certificate.
    pub fn load(files: ClientFiles) -> Result<Self, TlsError> {
        if files.ca_files.is_empty() {
            return Err(TlsError {
                what: "server CA",
                path: String::new(),
                reason: "no CA file given".into(),
            });
        }
        let mut list: Vec<(&'static str, PathBuf)> = files
            .ca_files
            .iter()
            .map(|f| ("server CA", f.clone()))
            .collect();
        if let Some((c, k)) = &files.identity {
            list.push(("client certificate", c.clone()));
            list.push(("client key", k.clone()));
        }
        let inner = Reloading::load("client", list, move |c| build(&files, c))?;
        Ok(Self { inner })
    }

    /// The material new connections use now.
    pub fn current(&self) -> Arc<ClientMaterial> {
        self.inner.current()
    }

    /// Polls the files every `interval` (see [`Reloading::watch`]).
    pub fn watch(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        self.inner.watch(interval)
    }

    /// The underlying reloader.
    pub fn reloader(&self) -> &Arc<Reloading<ClientMaterial>> {
        &self.inner
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.inner.paths())
            .finish()
    }
}

fn build(files: &ClientFiles, c: &[Vec<u8>]) -> Result<Built<ClientMaterial>, TlsError> {
    let n = files.ca_files.len();
    for (path, pem) in files.ca_files.iter().zip(&c[..n]) {
        pem::certificates("server CA", path, pem)?;
    }
    let (identity, leaf) = match &files.identity {
        None => (None, None),
        Some((cert_file, key_file)) => {
            let (cert, key) = (&c[n], &c[n + 1]);
            let chain = pem::certificates("client certificate", cert_file, cert)?;
            let leaf = crate::cert::CertInfo::from_der(&chain[0])
                .map_err(|e| TlsError::new("client certificate", cert_file, e))?;
            let der = pem::private_key("client key", key_file, key)?;
            CertifiedKey::from_der(chain, der, &provider()).map_err(|e| {
                TlsError::new(
                    "client certificate",
                    cert_file,
                    format!("with key {}: {e}", key_file.display()),
                )
            })?;
            (Some((cert.clone(), key.clone())), Some(leaf))
        }
    };
    Ok(Built {
        value: ClientMaterial {
            ca_pems: c[..n].to_vec(),
            identity,
        },
        leaf,
    })
}
