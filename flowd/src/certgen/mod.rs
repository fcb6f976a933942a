//! `flowd certgen`: the CA and the certificates of the Observer API's mTLS
//! between the relay and the nodes, created at install and renewed before
//! they expire.
//!
//! Three objects, laid out as Kubernetes Secrets (one file per key):
//! - `flowd-ca` (`ca.crt`, `ca.key`): the CA; read only by certgen;
//! - `flowd-server-certs` (`ca.crt`, `tls.crt`, `tls.key`): every node's
//!   Observer API certificate, valid for `*.<cluster>.hubble-grpc.cilium.io`
//!   — the names flowd's peer service announces (`<node>.<cluster>.
//!   hubble-grpc.cilium.io`), as Cilium's are; `ca.crt` is the client CA;
//! - `flowd-relay-client-certs` (`ca.crt`, `tls.crt`, `tls.key`): the
//!   relay's client certificate; `ca.crt` verifies the nodes.
//!
//! Each run keeps what is still good and replaces only a certificate that
//! is missing, unreadable, not issued by the CA, for other names, or
//! within `--renew-before` of its expiry (every one with `--force-renew`),
//! with a new key. The CA is kept unless `--renew-ca` (then every
//! certificate is reissued). They are written as files
//! ([`store::FileStore`], the layout of a mounted Secret, updated
//! atomically as kubelet does) or as Secrets through the Kubernetes API
//! (feature `kube`).
pub mod issue;
#[cfg(feature = "kube")]
pub mod kube;
pub mod secret;
pub mod store;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use flowd_tls::cert::{CertInfo, rfc3339};
use tracing::warn;

use issue::{Ca, Leaf, LeafKind};
use secret::Secret;
use store::Store;

/// Errors of `flowd certgen`.
#[derive(Debug, thiserror::Error)]
pub enum CertgenError {
    #[error("{0}")]
    Usage(String),
    #[error("secret {name}: {reason}")]
    Secret { name: String, reason: String },
    #[error("generating {what}: {reason}")]
    Generate { what: String, reason: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Kubernetes API: {0}")]
    Kube(String),
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 8760h, 365d, 30d)"))
}

fn cluster_name(s: &str) -> Result<String, String> {
    if crate::options::cluster::valid_cluster_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "expected {}",
            crate::options::cluster::CLUSTER_NAME_RULE
        ))
    }
}

/// `flowd certgen` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CertgenArgs {
    /// Write the certificates as files: one directory per Secret under DIR
    /// (DIR/flowd-ca, DIR/flowd-server-certs, DIR/flowd-relay-client-certs),
    /// updated atomically as kubelet updates a mounted Secret.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "kubernetes_secrets"
    )]
    pub output_dir: Option<PathBuf>,
    /// Write the certificates as Secrets through the Kubernetes API
    /// (in-cluster service account or $KUBECONFIG; needs the `kube` feature).
    #[arg(long, conflicts_with = "output_dir")]
    pub kubernetes_secrets: bool,
    /// Namespace of the Secrets.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub namespace: String,
    /// Cluster name: the nodes' certificates are for
    /// `*.<cluster-name>.hubble-grpc.cilium.io` (flowd's peer service
    /// announces `<node>.<cluster-name>.hubble-grpc.cilium.io`): the
    /// ConfigMap's `cluster-name`.
    #[arg(long, env = "CLUSTER_NAME", default_value = "default", value_parser = cluster_name)]
    pub cluster_name: String,
    /// Another DNS name for the nodes' certificate (repeatable).
    #[arg(long = "server-dns-name", value_name = "NAME")]
    pub server_dns_names: Vec<String>,
    /// An IP address for the nodes' certificate (repeatable).
    #[arg(long = "server-ip", value_name = "IP")]
    pub server_ips: Vec<IpAddr>,
    /// Validity of a new CA.
    #[arg(long, default_value = "1095d", value_parser = duration)]
    pub ca_validity: Duration,
    /// Validity of new server and client certificates.
    #[arg(long, default_value = "365d", value_parser = duration)]
    pub cert_validity: Duration,
    /// Renew a certificate that expires within this time.
    #[arg(long, default_value = "30d", value_parser = duration)]
    pub renew_before: Duration,
    /// Renew every server and client certificate now (the CA is kept).
    #[arg(long)]
    pub force_renew: bool,
    /// Replace the CA (and so every certificate). Connections between pods
    /// that have loaded different CAs fail until all have reloaded.
    #[arg(long)]
    pub renew_ca: bool,
    /// Name of the CA Secret.
    #[arg(long, default_value = "flowd-ca")]
    pub ca_secret: String,
    /// Name of the nodes' certificate Secret.
    #[arg(long, default_value = "flowd-server-certs")]
    pub server_secret: String,
    /// Name of the relay's client certificate Secret.
    #[arg(long, default_value = "flowd-relay-client-certs")]
    pub relay_client_secret: String,
}

/// What a run did with one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: String,
    /// `created`, `renewed` or `kept`.
    pub action: &'static str,
    /// Why it was created or renewed.
    pub reason: Option<String>,
    pub serial: String,
    pub not_after: SystemTime,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.action)?;
        if let Some(r) = &self.reason {
            write!(f, " ({r})")?;
        }
        write!(
            f,
            ", serial {}, valid until {}",
            self.serial,
            rfc3339(self.not_after)
        )
    }
}

/// Runs `flowd certgen`: prints one line per object (created / renewed /
/// kept) on stdout.
pub async fn run(args: CertgenArgs) -> Result<(), CertgenError> {
    if args.cert_validity <= args.renew_before {
        return Err(CertgenError::Usage(format!(
            "--cert-validity ({}) must be longer than --renew-before ({}): every run would renew",
            humantime::format_duration(args.cert_validity),
            humantime::format_duration(args.renew_before)
        )));
    }
    let mut store = match (&args.output_dir, args.kubernetes_secrets) {
        (Some(dir), false) => Store::Files(store::FileStore::new(dir.clone())),
        #[cfg(feature = "kube")]
        (None, true) => Store::Kube(Box::new(kube::KubeStore::connect(&args.namespace).await?)),
        #[cfg(not(feature = "kube"))]
        (None, true) => {
            return Err(CertgenError::Usage(
                "--kubernetes-secrets: this flowd was built without the kube feature".into(),
            ));
        }
        _ => {
            return Err(CertgenError::Usage(
                "give exactly one of --output-dir or --kubernetes-secrets".into(),
            ));
        }
    };
    for o in reconcile(&args, &mut store, SystemTime::now()).await? {
        println!("{o}");
    }
    Ok(())
}

/// Brings the three objects of `store` to what `args` asks for at `now`.
pub async fn reconcile(
    args: &CertgenArgs,
    store: &mut Store,
    now: SystemTime,
) -> Result<Vec<Outcome>, CertgenError> {
    let mut out = Vec::new();
    let existing = store.load(&args.ca_secret).await?;
    let (ca, ca_outcome) = match (&existing, args.renew_ca) {
        (Some(s), false) => {
            let ca = Ca::from_secret(s).map_err(|reason| CertgenError::Secret {
                name: args.ca_secret.clone(),
                reason: format!("{reason}; fix it, or replace the CA with --renew-ca"),
            })?;
            let o = outcome(&args.ca_secret, "kept", None, ca.info());
            (ca, o)
        }
        (s, _) => {
            let ca = Ca::generate(&args.cluster_name, now, args.ca_validity)?;
            let (action, reason) = match s {
                Some(_) => ("renewed", "--renew-ca"),
                None => ("created", "missing"),
            };
            store
                .save(&args.ca_secret, ca.secret(), s.as_ref(), false)
                .await?;
            let o = outcome(&args.ca_secret, action, Some(reason.into()), ca.info());
            (ca, o)
        }
    };
    let ca_left = ca.info().remaining(now);
    if ca_left < args.renew_before {
        warn!(
            not_after = %rfc3339(ca.info().not_after),
            "the CA expires within --renew-before: certificates cannot outlive it; replace it with --renew-ca"
        );
    }
    out.push(ca_outcome);

    let server_names = issue::server_names(&args.cluster_name, &args.server_dns_names);
    let leaves = [
        (
            &args.server_secret,
            LeafKind::Server {
                dns_names: server_names,
                ips: args.server_ips.clone(),
            },
        ),
        (&args.relay_client_secret, LeafKind::RelayClient),
    ];
    for (name, kind) in leaves {
        let existing = store.load(name).await?;
        let reason = match &existing {
            None => Some(("created", "missing".to_string())),
            Some(s) => renewal_reason(args, &ca, &kind, s, now).map(|r| ("renewed", r)),
        };
        let o = match reason {
            None => {
                let cert = existing
                    .as_ref()
                    .and_then(|s| s.data.get("tls.crt"))
                    .and_then(|c| flowd_tls::cert::first_in_pem(c).ok())
                    .ok_or_else(|| CertgenError::Secret {
                        name: name.clone(),
                        reason: "tls.crt disappeared".into(),
                    })?;
                outcome(name, "kept", None, &cert)
            }
            Some((action, reason)) => {
                let leaf = Leaf::issue(&ca, &kind, now, args.cert_validity)?;
                store
                    .save(name, leaf.secret(&ca), existing.as_ref(), true)
                    .await?;
                outcome(name, action, Some(reason), leaf.info())
            }
        };
        out.push(o);
    }
    Ok(out)
}

fn outcome(name: &str, action: &'static str, reason: Option<String>, c: &CertInfo) -> Outcome {
    Outcome {
        name: name.to_string(),
        action,
        reason,
        serial: c.serial.clone(),
        not_after: c.not_after,
    }
}

/// Why the certificate in `s` must be replaced, or None to keep it.
fn renewal_reason(
    args: &CertgenArgs,
    ca: &Ca,
    kind: &LeafKind,
    s: &Secret,
    now: SystemTime,
) -> Option<String> {
    if args.renew_ca {
        return Some("new CA".into());
    }
    if args.force_renew {
        return Some("--force-renew".into());
    }
    let (Some(crt), Some(key)) = (s.data.get("tls.crt"), s.data.get("tls.key")) else {
        return Some("tls.crt or tls.key missing".into());
    };
    if s.data.get("ca.crt").map(Vec::as_slice) != Some(ca.pem().as_bytes()) {
        return Some("ca.crt is not the CA".into());
    }
    let info = match issue::check_leaf(ca, crt, key) {
        Ok(i) => i,
        Err(e) => return Some(e),
    };
    if !kind.names_match(&info) {
        return Some("names differ from the ones asked for".into());
    }
    let left = info.remaining(now);
    if left < args.renew_before {
        return Some(if left.is_zero() {
            "expired".into()
        } else {
            format!(
                "expires in {}, within --renew-before",
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            )
        });
    }
    if info.not_before > now {
        return Some("not valid yet".into());
    }
    None
}
