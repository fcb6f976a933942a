//! What a certificate says: serial, validity, names.
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The parts of an X.509 certificate flowd looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, upper-case hex without separators (as `openssl x509 -serial`).
    pub serial: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// DNS names of the subjectAltName extension.
    pub dns_names: Vec<String>,
    /// IP addresses of the subjectAltName extension.
    pub ip_addresses: Vec<IpAddr>,
    /// A CA certificate (basicConstraints CA:TRUE).
    pub is_ca: bool,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, x) = X509Certificate::from_der(der).map_err(|e| format!("not X.509: {e}"))?;
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => dns_names.push((*d).to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => ip_addresses.push(IpAddr::from(
                            <[u8; 4]>::try_from(*b)
                                .map_err(|_| "bad IPv4 subjectAltName".to_string())?,
                        )),
                        16 => ip_addresses.push(IpAddr::from(
                            <[u8; 16]>::try_from(*b)
                                .map_err(|_| "bad IPv6 subjectAltName".to_string())?,
                        )),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        let time = |t: x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            if secs >= 0 {
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
            } else {
                SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            }
        };
        Ok(Self {
            serial: x
                .tbs_certificate
                .raw_serial()
                .iter()
                .skip_while(|b| **b == 0)
                .map(|b| format!("{b:02X}"))
                .collect(),
            subject: x.subject().to_string(),
            issuer: x.issuer().to_string(),
            not_before: time(x.validity().not_before),
            not_after: time(x.validity().not_after),
            dns_names,
            ip_addresses,
            is_ca: x.is_ca(),
        })
    }

    /// Time left until it expires at `now` (zero when expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }

    /// Valid at `now` (between notBefore and notAfter).
    pub fn valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// The first certificate of a PEM text, parsed.
pub fn first_in_pem(pem: &[u8]) -> Result<CertInfo, String> {
    CertInfo::from_der(&first_der(pem)?)
}

/// The DER of the first certificate of a PEM text.
pub fn first_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or("no CERTIFICATE")?
        .map(|c| c.to_vec())
        .map_err(|e| format!("bad PEM: {e}"))
}

/// RFC 3339 time, seconds precision, for logs.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
