//! Making and checking the certificates (rcgen; ECDSA P-256 keys).
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use flowd_tls::cert::CertInfo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::CertgenError;

/// Certificates start this long before they are made, so that a node whose
/// clock is a little behind accepts them at once.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The relay's client certificate name (Cilium's `hubble-relay-client-certs`).
pub const RELAY_CLIENT_NAME: &str = "*.hubble-relay.cilium.io";

/// The nodes' certificate names: `*.<cluster>.hubble-grpc.cilium.io` first.
pub fn server_names(cluster: &str, extra: &[String]) -> Vec<String> {
    let mut v = vec![format!("*.{cluster}.hubble-grpc.cilium.io")];
    v.extend(
        extra
            .iter()
            .filter(|n| !v.contains(n))
            .cloned()
            .collect::<Vec<_>>(),
    );
    v
}

fn gen_err(what: &str, e: impl std::fmt::Display) -> CertgenError {
    CertgenError::Generate {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

/// A random positive 128-bit serial (RFC 5280: unique per CA, ≤ 20 bytes).
fn serial() -> SerialNumber {
    let mut b = *uuid::Uuid::new_v4().as_bytes();
    b[0] = (b[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&b)
}

/// The CA: certificate, key and its parsed details.
pub struct Ca {
    pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    info: CertInfo,
}

impl Ca {
    /// A new self-signed CA valid for `validity` from `now`.
    pub fn generate(
        cluster: &str,
        now: SystemTime,
        validity: Duration,
    ) -> Result<Self, CertgenError> {
        let key = KeyPair::generate().map_err(|e| gen_err("the CA key", e))?;
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::OrganizationName, "flowd");
        p.distinguished_name
            .push(DnType::CommonName, format!("flowd CA ({cluster})"));
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.not_before = offset(now - BACKDATE);
        p.not_after = offset(now + validity);
        p.serial_number = Some(serial());
        let cert = p.self_signed(&key).map_err(|e| gen_err("the CA", e))?;
        let info = CertInfo::from_der(cert.der()).map_err(|e| gen_err("the CA", e))?;
        Ok(Self {
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(p, key),
            info,
        })
    }

    /// The CA of a `flowd-ca` Secret (`ca.crt`, `ca.key`).
    pub fn from_secret(s: &super::Secret) -> Result<Self, String> {
        let text = |k: &str| {
            let v = s.data.get(k).ok_or(format!("no {k}"))?;
            String::from_utf8(v.clone()).map_err(|_| format!("{k} is not PEM text"))
        };
        let (pem, key_pem) = (text("ca.crt")?, text("ca.key")?);
        let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("ca.key: {e}"))?;
        let der = pem_der(&pem).map_err(|e| format!("ca.crt: {e}"))?;
        let (_, x) = X509Certificate::from_der(&der).map_err(|e| format!("ca.crt: {e}"))?;
        if x.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err("ca.key is not the key of ca.crt".into());
        }
        if !x.is_ca() {
            return Err("ca.crt is not a CA certificate".into());
        }
        let info = CertInfo::from_der(&der)?;
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)
            .map_err(|e| format!("ca.crt: {e}"))?;
        Ok(Self {
            pem,
            key_pem,
            issuer,
            info,
        })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// The `flowd-ca` Secret's data.
    pub fn secret(&self) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("ca.crt".to_string(), self.pem.clone().into_bytes()),
            ("ca.key".to_string(), self.key_pem.clone().into_bytes()),
        ])
    }
}

fn pem_der(pem: &str) -> Result<Vec<u8>, String> {
    flowd_tls::cert::first_der(pem.as_bytes())
}

/// Which certificate, and what it is for.
#[derive(Debug, Clone)]
pub enum LeafKind {
    /// Every node's Observer API (TLS server).
    Server {
        dns_names: Vec<String>,
        ips: Vec<IpAddr>,
    },
    /// The relay towards the nodes (TLS client).
    RelayClient,
}

impl LeafKind {
    fn dns_names(&self) -> Vec<String> {
        match self {
            Self::Server { dns_names, .. } => dns_names.clone(),
            Self::RelayClient => vec![RELAY_CLIENT_NAME.to_string()],
        }
    }

    fn ips(&self) -> Vec<IpAddr> {
        match self {
            Self::Server { ips, .. } => ips.clone(),
            Self::RelayClient => Vec::new(),
        }
    }

    /// The certificate is for exactly the names asked for.
    pub fn names_match(&self, c: &CertInfo) -> bool {
        let want: BTreeSet<String> = self.dns_names().into_iter().collect();
        let have: BTreeSet<String> = c.dns_names.iter().cloned().collect();
        let want_ip: BTreeSet<IpAddr> = self.ips().into_iter().collect();
        let have_ip: BTreeSet<IpAddr> = c.ip_addresses.iter().copied().collect();
        want == have && want_ip == have_ip
    }
}

/// A newly issued certificate and its key.
pub struct Leaf {
    pem: String,
    key_pem: String,
    info: CertInfo,
}

impl Leaf {
    /// Issues a certificate of `kind` from `ca`, valid for `validity` from
    /// `now` but never beyond the CA.
    pub fn issue(
        ca: &Ca,
        kind: &LeafKind,
        now: SystemTime,
        validity: Duration,
    ) -> Result<Self, CertgenError> {
        let what = match kind {
            LeafKind::Server { .. } => "the server certificate",
            LeafKind::RelayClient => "the relay client certificate",
        };
        let key = KeyPair::generate().map_err(|e| gen_err(what, e))?;
        let names = kind.dns_names();
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::OrganizationName, "flowd");
        p.distinguished_name
            .push(DnType::CommonName, names[0].clone());
        p.subject_alt_names = names
            .iter()
            .map(|n| {
                n.clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| gen_err(what, format!("DNS name {n:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        p.subject_alt_names
            .extend(kind.ips().into_iter().map(SanType::IpAddress));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![match kind {
            LeafKind::Server { .. } => ExtendedKeyUsagePurpose::ServerAuth,
            LeafKind::RelayClient => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        p.use_authority_key_identifier_extension = true;
        p.not_before = offset(now - BACKDATE);
        let mut not_after = now + validity;
        if not_after > ca.info.not_after {
            tracing::warn!(
                certificate = what,
                "the CA expires before the certificate would: it is valid only until the CA expires"
            );
            not_after = ca.info.not_after;
        }
        p.not_after = offset(not_after);
        p.serial_number = Some(serial());
        let cert = p
            .signed_by(&key, &ca.issuer)
            .map_err(|e| gen_err(what, e))?;
        let info = CertInfo::from_der(cert.der()).map_err(|e| gen_err(what, e))?;
        Ok(Self {
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            info,
        })
    }

    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// The Secret's data: `ca.crt`, `tls.crt`, `tls.key` (kubernetes.io/tls).
    pub fn secret(&self, ca: &Ca) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("ca.crt".to_string(), ca.pem.clone().into_bytes()),
            ("tls.crt".to_string(), self.pem.clone().into_bytes()),
            ("tls.key".to_string(), self.key_pem.clone().into_bytes()),
        ])
    }
}

/// Checks a stored certificate and key against `ca`: readable, issued
/// (signed) by it, and the key is the certificate's. Err says what is wrong.
pub fn check_leaf(ca: &Ca, crt: &[u8], key: &[u8]) -> Result<CertInfo, String> {
    let crt = std::str::from_utf8(crt).map_err(|_| "tls.crt is not PEM text".to_string())?;
    let der = pem_der(crt).map_err(|e| format!("tls.crt unreadable: {e}"))?;
    let (_, x) = X509Certificate::from_der(&der).map_err(|e| format!("tls.crt unreadable: {e}"))?;
    let ca_der = pem_der(&ca.pem)?;
    let (_, ca_x) = X509Certificate::from_der(&ca_der).map_err(|e| e.to_string())?;
    if x.verify_signature(Some(ca_x.public_key())).is_err() {
        return Err("tls.crt is not issued by the CA".into());
    }
    let key = std::str::from_utf8(key)
        .ok()
        .and_then(|k| KeyPair::from_pem(k).ok())
        .ok_or_else(|| "tls.key unreadable".to_string())?;
    if x.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
        return Err("tls.key is not the key of tls.crt".into());
    }
    CertInfo::from_der(&der).map_err(|e| format!("tls.crt unreadable: {e}"))
}
