//! PEM files: read, and decoded into the DER items rustls takes.
use std::path::Path;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// Reads a PEM file, refusing files without a `-----BEGIN` line (a DER file
/// or a wrong path would otherwise fail later, far from its cause).
pub fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let data = std::fs::read(path).map_err(|e| TlsError::new(what, path, e))?;
    if !data.windows(10).any(|w| w == b"-----BEGIN") {
        return Err(TlsError::new(
            what,
            path,
            "not a PEM file (no -----BEGIN line)",
        ));
    }
    Ok(data)
}

/// Every certificate of a PEM file (a chain or a CA bundle); at least one.
pub fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(what, path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(what, path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| TlsError::new(what, path, format!("no usable private key: {e}")))
}
