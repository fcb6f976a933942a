//! Dialling a node or a peer service: addresses, TLS towards the nodes,
//! connect timeout. Shared by peer discovery ([`crate::peers`]) and the
//! connection pool ([`crate::pool`]).
use std::net::{IpAddr, SocketAddr};

use tonic::transport::{Channel, Endpoint};

use crate::config::RelayConfig;

/// Connects to `address` (plain text, or TLS when configured).
pub async fn connect(
    address: &str,
    tls_server_name: Option<&str>,
    cfg: &RelayConfig,
) -> Result<Channel, String> {
    let (host, _) = split_host_port(address, None)?;
    let scheme = if cfg.peer_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| format!("bad address {address:?}: {e}"))?
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true)
        // No HTTP/2 keep-alive pings: Go gRPC servers (Hubble) answer
        // frequent pings with GOAWAY too_many_pings. Dead nodes are found by
        // the periodic ServerStatus probe instead.
        .tcp_keepalive(Some(std::time::Duration::from_secs(30)));
    if let Some(tls) = &cfg.peer_tls {
        ep = ep
            .tls_config(tls.for_peer(tls_server_name, &host))
            .map_err(|e| format!("TLS towards {address}: {e}"))?;
    }
    match tokio::time::timeout(cfg.connect_timeout, ep.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("connecting to {address}: {}", error_chain(&e))),
        Err(_) => Err(format!(
            "connecting to {address}: timed out after {:?}",
            cfg.connect_timeout
        )),
    }
}

/// An error with its sources (tonic's transport errors hide the cause),
/// leaving out a source whose text the message already holds (they often
/// repeat it: "tcp connect error: tcp connect error: …").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// Splits `host:port` (IPv6 as `[addr]:port`); no port gives `default_port`.
pub fn split_host_port(s: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    if s.is_empty() {
        return Err("empty address".into());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return default_port
            .map(|p| (ip.to_string(), p))
            .ok_or_else(|| "missing :port".to_owned());
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.contains(':') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("port {p:?} is not a number in 1..=65535"))?;
            if port == 0 {
                return Err("port 0 is not allowed".into());
            }
            Ok((h.to_owned(), port))
        }
        Some(_) => Err("expected host:port, [ipv6]:port".into()),
        None => default_port
            .map(|p| (s.to_owned(), p))
            .ok_or_else(|| "missing :port".to_owned()),
    }
}

/// `host:port` with IPv6 hosts bracketed.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
