//! TLS and mTLS on flowd's own Observer API, configured through the Hubble
//! ConfigMap keys (hubble-disable-tls, hubble-tls-cert-file,
//! hubble-tls-key-file, hubble-tls-client-ca-files) and served by the
//! daemon itself. Certificates: tests/tls/ (test-only CA, server certificate
//! for flowd.test / 127.0.0.1, a client certificate it issued, and a
//! self-signed "rogue" client certificate).
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flowd::config::Config;
use flowd_proto::observer::ServerStatusRequest;
use flowd_proto::observer::observer_client::ObserverClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(cert(name)).unwrap()
}

/// A daemon serving only the Observer API (no interfaces, no metrics).
struct Daemon {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), flowd::daemon::DaemonError>>,
}

impl Daemon {
    async fn start(tls_keys: &[(&str, String)]) -> Self {
        // A free port: bind :0, read it back, release it for the daemon.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut map: BTreeMap<String, String> = [
            ("enable-hubble", "true".to_string()),
            ("hubble-listen-address", addr.to_string()),
            ("hubble-metrics-server", String::new()),
            ("flowd-interfaces", String::new()),
        ]
        .into_iter()
        .chain(tls_keys.iter().cloned())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        map.entry("hubble-disable-tls".into())
            .or_insert_with(|| "false".into());
        let config = Config::from_map(&map).unwrap().config;
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(flowd::daemon::run(config, rx));
        // Listening = a TCP connect succeeds (bounded wait).
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(!task.is_finished(), "daemon exited early");
            assert!(Instant::now() < deadline, "daemon not listening on {addr}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { addr, stop, task }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("daemon stops")
            .unwrap()
            .unwrap();
    }
}

fn tls_keys(mtls: bool) -> Vec<(&'static str, String)> {
    let mut v = vec![
        (
            "hubble-tls-cert-file",
            cert("server.pem").display().to_string(),
        ),
        (
            "hubble-tls-key-file",
            cert("server-key.pem").display().to_string(),
        ),
    ];
    if mtls {
        v.push((
            "hubble-tls-client-ca-files",
            cert("ca.pem").display().to_string(),
        ));
    }
    v
}

/// ServerStatus over TLS (trusting the test CA) with an optional client
/// certificate; Err describes where it failed.
async fn status_tls(addr: SocketAddr, identity: Option<(&str, &str)>) -> Result<u64, String> {
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
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    status(ch).await
}

async fn status_plain(addr: SocketAddr) -> Result<u64, String> {
    let ch = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    status(ch).await
}

async fn status(ch: Channel) -> Result<u64, String> {
    let r = ObserverClient::new(ch)
        .server_status(ServerStatusRequest {})
        .await
        .map_err(|s| format!("{s:?}"))?;
    Ok(r.into_inner().max_flows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_client_certificate_from_the_ca() {
    let d = Daemon::start(&tls_keys(true)).await;
    let max = status_tls(d.addr, Some(("client.pem", "client-key.pem")))
        .await
        .expect("client certificate issued by the CA is accepted");
    assert_eq!(max, Config::default().hubble_event_buffer_capacity as u64);

    let no_cert = status_tls(d.addr, None).await;
    assert!(no_cert.is_err(), "no client certificate: {no_cert:?}");
    let rogue = status_tls(d.addr, Some(("rogue-client.pem", "rogue-client-key.pem"))).await;
    assert!(rogue.is_err(), "self-signed client certificate: {rogue:?}");
    // Plain text on the TLS port reaches gRPC health only (kubelet's probe).
    let plain = status_plain(d.addr).await;
    assert!(
        plain.as_ref().is_err_and(|e| e.contains("Unimplemented")),
        "plaintext against TLS: {plain:?}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_client_cas_accepts_any_client() {
    let d = Daemon::start(&tls_keys(false)).await;
    status_tls(d.addr, None)
        .await
        .expect("TLS without client certificate");
    let plain = status_plain(d.addr).await;
    assert!(plain.is_err(), "plaintext against TLS: {plain:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_when_tls_disabled() {
    let d = Daemon::start(&[("hubble-disable-tls", "true".into())]).await;
    status_plain(d.addr).await.expect("plaintext");
    let tls = status_tls(d.addr, None).await;
    assert!(tls.is_err(), "TLS against plaintext: {tls:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_or_non_pem_tls_files_stop_the_start_naming_the_file() {
    let (_stop, rx) = watch::channel(false);
    let not_pem = cert("README.md");
    let cases = [
        ("hubble-tls-cert-file", cert("missing.pem")),
        ("hubble-tls-key-file", not_pem.clone()),
        ("hubble-tls-client-ca-files", not_pem),
    ];
    for (key, file) in cases {
        let mut keys = tls_keys(true);
        keys.retain(|(k, _)| *k != key);
        keys.push((key, file.display().to_string()));
        let mut map: BTreeMap<String, String> =
            keys.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        map.insert("hubble-disable-tls".into(), "false".into());
        map.insert("hubble-listen-address".into(), "127.0.0.1:0".into());
        map.insert("hubble-metrics-server".into(), String::new());
        let config = Config::from_map(&map).unwrap().config;
        let err = flowd::daemon::run(config, rx.clone())
            .await
            .expect_err(key)
            .to_string();
        assert!(
            err.contains(&file.display().to_string()) && err.contains("hubble-tls"),
            "{key}: {err}"
        );
    }
}
