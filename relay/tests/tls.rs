//! TLS/mTLS on both sides of the relay, with the test-only certificates in
//! tests/tls/ (CA, server cert for 127.0.0.1 / flowd.test, client cert, and a
//! self-signed "rogue" client cert not issued by the CA).
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::path::PathBuf;

use common::*;
use flowd_proto::observer::ServerStatusRequest;
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::pbjson_types::UInt32Value;
use flowd_relay::tls::{ClientTls, ServerFiles, ServerTls};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

fn f(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(f(name)).unwrap()
}

fn files_requiring_clients() -> ServerFiles {
    ServerFiles {
        cert_file: f("server.pem"),
        key_file: f("server-key.pem"),
        client_ca_files: vec![f("ca.pem")],
    }
}

/// The fake node's TLS (tonic's own, as a Hubble-like node would serve).
fn server_tls_requiring_clients() -> tonic::transport::ServerTlsConfig {
    let f = files_requiring_clients();
    flowd_proto::tls::ServerTls {
        cert_file: f.cert_file,
        key_file: f.key_file,
        client_ca_files: f.client_ca_files,
    }
    .load()
    .unwrap()
}

async fn status_over_tls(
    addr: std::net::SocketAddr,
    identity: Option<(&str, &str)>,
) -> Result<u32, String> {
    let mut tls = ClientTlsConfig::new()
        .domain_name("flowd.test")
        .ca_certificate(Certificate::from_pem(pem("ca.pem")));
    if let Some((c, k)) = identity {
        tls = tls.identity(Identity::from_pem(pem(c), pem(k)));
    }
    let ch = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let r = ObserverClient::new(ch)
        .server_status(ServerStatusRequest {})
        .await
        .map_err(|s| format!("{s:?}"))?;
    Ok(r.into_inner().num_connected_nodes.map_or(0, |v| v.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_on_both_sides() {
    // The node requires a client certificate from the relay.
    let node = FakeNode::start_at(
        NodeData::new("tls-node"),
        "127.0.0.1:0".parse().unwrap(),
        Some(server_tls_requiring_clients()),
    );
    let mut cfg = test_config();
    cfg.peer_tls = Some(
        ClientTls::load(
            &[f("ca.pem")],
            Some(&f("client.pem")),
            Some(&f("client-key.pem")),
            Some("flowd.test".into()),
        )
        .unwrap(),
    );
    let registry = flowd_relay::PeerRegistry::new();
    let spec = flowd_relay::peers::parse_static_peer(&format!("tls-node={}", node.addr)).unwrap();
    registry.set_source("static", [(spec.name.clone(), spec)].into());
    // The relay requires a client certificate from its clients.
    let relay = start_relay(
        registry,
        cfg,
        Some(ServerTls::load(files_requiring_clients()).unwrap()),
    )
    .await;

    // With a certificate from the CA: works, and the relay reached the node
    // over mTLS.
    let mut connected = 0;
    for _ in 0..200 {
        connected = status_over_tls(relay.addr, Some(("client.pem", "client-key.pem")))
            .await
            .unwrap();
        if connected == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(connected, 1, "relay did not connect to the mTLS node");

    // Without a certificate, or with one the CA did not issue: refused.
    let e = status_over_tls(relay.addr, None).await.unwrap_err();
    assert!(!e.is_empty());
    let e = status_over_tls(
        relay.addr,
        Some(("rogue-client.pem", "rogue-client-key.pem")),
    )
    .await
    .unwrap_err();
    assert!(!e.is_empty());
    // Plain text: refused too.
    let plain = ObserverClient::connect(format!("http://{}", relay.addr)).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut c) => c.server_status(ServerStatusRequest {}).await.is_err(),
    };
    assert!(refused, "plain-text client accepted");
    let _ = UInt32Value { value: 0 };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_without_client_certificate_cannot_reach_an_mtls_node() {
    let node = FakeNode::start_at(
        NodeData::new("tls-node"),
        "127.0.0.1:0".parse().unwrap(),
        Some(server_tls_requiring_clients()),
    );
    let mut cfg = test_config();
    cfg.peer_tls =
        Some(ClientTls::load(&[f("ca.pem")], None, None, Some("flowd.test".into())).unwrap());
    let registry = flowd_relay::PeerRegistry::new();
    let spec = flowd_relay::peers::parse_static_peer(&format!("tls-node={}", node.addr)).unwrap();
    registry.set_source("static", [(spec.name.clone(), spec)].into());
    let relay = start_relay(registry, cfg, None).await;
    let mut c = client(relay.addr).await;
    let pool = relay.pool.clone();
    wait_for("the node to be marked unavailable", || {
        let p = pool.clone();
        async move {
            p.snapshot()
                .iter()
                .any(|n| n.state == flowd_relay::pool::PeerState::Unavailable)
        }
    })
    .await;
    let st = c
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.unavailable_nodes, vec!["tls-node".to_owned()]);
}

#[test]
fn bad_tls_files_are_named() {
    let e = ServerTls::load(ServerFiles {
        cert_file: f("missing.pem"),
        key_file: f("server-key.pem"),
        client_ca_files: vec![],
    })
    .err()
    .expect("a missing file is refused")
    .to_string();
    assert!(
        e.contains("server certificate") && e.contains("missing.pem"),
        "{e}"
    );
    let e = ClientTls::load(&[f("README.md")], None, None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a PEM file"), "{e}");
}
