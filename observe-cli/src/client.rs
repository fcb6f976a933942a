//! Connection to the relay or a flowd: address parsing, TLS (rustls via
//! tonic), timeouts.
use std::time::Duration;

use flowd_proto::observer::observer_client::ObserverClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::cli::ConnArgs;
use crate::error::{Error, chain};

/// Where to connect, from `--server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// host:port as the user wrote it (for messages).
    pub authority: String,
    pub host: String,
    pub tls: bool,
}

pub fn parse_server(s: &str) -> Result<Target, Error> {
    let (rest, tls) = if let Some(r) = s.strip_prefix("https://") {
        (r, true)
    } else if let Some(r) = s.strip_prefix("tls://") {
        (r, true)
    } else if let Some(r) = s.strip_prefix("http://") {
        (r, false)
    } else {
        (s, false)
    };
    let rest = rest.trim_end_matches('/');
    let bad = || {
        Error::Usage(format!(
            "invalid --server {s:?}: expected host:port (localhost:4245, 10.0.0.1:4244, [fd00::1]:4245), optionally with http://, https:// or tls://"
        ))
    };
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || rest.contains('/') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(Target {
        authority: rest.to_string(),
        host,
        tls,
    })
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Usage(format!("cannot read {what} {}: {e}", path.display())))
}

/// Connects eagerly so that an unreachable server is reported once, with
/// the address and the reason.
pub async fn connect(args: &ConnArgs) -> Result<(ObserverClient<Channel>, Target), Error> {
    let target = parse_server(&args.server)?;
    let tls = target.tls
        || args.tls
        || !args.tls_ca_cert_files.is_empty()
        || args.tls_client_cert_file.is_some();
    let scheme = if tls { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{}", target.authority))
        .map_err(|e| Error::Usage(format!("invalid --server {:?}: {}", args.server, chain(&e))))?
        .connect_timeout(args.request_timeout)
        .tcp_nodelay(true);
    if tls {
        let mut cfg = ClientTlsConfig::new().domain_name(
            args.tls_server_name
                .clone()
                .unwrap_or_else(|| target.host.clone()),
        );
        if args.tls_ca_cert_files.is_empty() {
            cfg = cfg.with_native_roots();
        } else {
            let mut certs = Vec::new();
            for f in &args.tls_ca_cert_files {
                certs.push(Certificate::from_pem(read(f, "CA certificate file")?));
            }
            cfg = cfg.ca_certificates(certs);
        }
        if let (Some(cert), Some(key)) = (&args.tls_client_cert_file, &args.tls_client_key_file) {
            cfg = cfg.identity(Identity::from_pem(
                read(cert, "client certificate file")?,
                read(key, "client key file")?,
            ));
        }
        ep = ep
            .tls_config(cfg)
            .map_err(|e| Error::Usage(format!("TLS configuration: {}", chain(&e))))?;
    }
    let channel = connect_with_timeout(ep, args.request_timeout, &target).await?;
    Ok((
        ObserverClient::new(channel).max_decoding_message_size(64 << 20),
        target,
    ))
}

async fn connect_with_timeout(
    ep: Endpoint,
    timeout: Duration,
    target: &Target,
) -> Result<Channel, Error> {
    let err = |reason: String| Error::Connect {
        addr: target.authority.clone(),
        reason,
    };
    match tokio::time::timeout(timeout, ep.connect()).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(err(chain(&e))),
        Err(_) => Err(err(format!(
            "timed out after {}",
            humantime::format_duration(timeout)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        let t = parse_server("localhost:4245").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority.as_str(), t.tls),
            ("localhost", "localhost:4245", false)
        );
        let t = parse_server("tls://relay.kube-system:443").unwrap();
        assert_eq!((t.host.as_str(), t.tls), ("relay.kube-system", true));
        let t = parse_server("[fd00::1]:4244").unwrap();
        assert_eq!(t.host, "fd00::1");
        for bad in ["localhost", "localhost:http", ":4245", "http://a:1/x"] {
            let e = parse_server(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("expected host:port"), "{e}");
        }
    }
}
